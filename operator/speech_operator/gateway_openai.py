"""Which locale an OpenAI ``POST /v1/audio/transcriptions`` asks for, read off its multipart form as it arrives.

OpenAI's clients send the language as a form field, not in the query. The gateway's rule: the
form field ``language``, else ``?language=``, else the only locale routed (as the recognizer does).

The form is read only as far as the rule needs, and what was read is sent on unchanged, followed
by the rest of the body as it comes (:func:`scan`):

- the fields before the file (OpenAI's clients send ``language`` there): read until ``language``
  or the file part begins, then streamed;
- the file first (``curl -F file=@a.wav -F language=ko``): with ``?language=`` or a single locale
  routed, streamed from there (the recognizer still checks a later ``language`` field against its
  own locale and answers 400 naming it); otherwise the form is read on, up to
  :attr:`FormLimits.buffer_bytes`, to find the field after the file; past that bound, 413 saying to send
  ``language`` before the file or in the query.

What is read ahead is bounded for the whole gateway too (:class:`FormBudget`, :attr:`FormLimits.budget_bytes`):
a form whose reading would pass it gets 503 + ``Retry-After``, so that many such uploads at once
cannot take the pod's memory. And in time: the form must reach the point where its locale is known
within :attr:`FormLimits.read_seconds`, pausing no longer than :attr:`FormLimits.pause_seconds` between
two pieces (by default the recognizer's ``Http:BodyTimeoutSeconds``), else 408. Each of these refusals
comes before the body is all in: its answer says ``Connection: close``, and what the client still sends
is read and dropped for a moment before the close, as for the gateway's other refusals
(:func:`~speech_operator.gateway_http_limits.drop_the_rest`).

What the budget counts. It is shared, so it can be starved: a few clients sending forms with their file first and no
``language``, then a byte now and then, held the whole budget until the deadline, and a form with its ``language`` first
got 503 (``forms_held``) meanwhile. The pause limit ends those that pause longer than it; but a client that sends a
byte just within it keeps its bytes until the deadline, and neither a minimum rate nor a shorter deadline tells it from
a slow honest client without refusing those too: what a client holds is what it sent, so holding the whole budget
costs the budget's size of upload per deadline, and a minimum rate lowers that hold time only once it is one that many
mobile uploads do not reach. A share per client would need to know the client, and behind an Ingress every request
comes from the Ingress. So the budget counts only what a read-ahead holds beyond its first :data:`UNCOUNTED_BYTES`
(less than aiohttp 3.14 itself buffers of any connection's body before it stops reading it, twice its read buffer:
what every connection may hold whatever the gateway does). A form whose locale is known within its first
:data:`UNCOUNTED_BYTES` (the fields before the file, as OpenAI's Python client sends them; or ``?language=``, or one
locale routed) is then never refused for what others hold (nor is the piece that brings its locale: it is relayed at
once); only forms whose file comes first, with no ``?language=``, compete for the budget, and their 503 says how not
to (bench/notes.md, "Gateway: the OpenAI forms' shared budget, starved", has the measurements).

A body that is not a multipart form is routed by the query (or the only locale); the recognizer
answers it with its own 415 or 400.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import ClassVar

from aiohttp import web
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from speech_operator import gateway_failures as failures
from speech_operator.gateway_http_limits import MalformedBody, client_failure
from speech_recognizer.errors import TOO_LARGE, UPLOAD_TIMEOUT, Failure
from speech_recognizer.settings import declared

#: The recognizer's ``Http:BodyTimeoutSeconds``: the pause limit's default and bounds.
_BODY_PAUSE = declared("http_body_timeout_seconds")
assert _BODY_PAUSE.minimum is not None
_PAUSE_MINIMUM: float = _BODY_PAUSE.minimum
#: What each form may read ahead before :class:`FormBudget` counts it (aiohttp's buffer of a connection's body).
UNCOUNTED_BYTES = 64 * 1024
#: A ``language`` value longer than this is not a locale: the rest is not kept.
_MAX_LANGUAGE_BYTES = 256


@dataclass(frozen=True)
class FormLimits:
    """What the gateway reads of OpenAI forms ahead, before it knows their locale (the gateway's
    ``SPEECH_GATEWAY_FORM_*`` settings)."""

    #: How much of a form is kept while the gateway looks for a ``language`` field after the file (413 past it).
    buffer_bytes: int = 16 * 1024 * 1024
    #: Bytes of forms read ahead (and not yet relayed) held at once, all requests together, beyond each one's
    #: :data:`UNCOUNTED_BYTES` (503 past it).
    budget_bytes: int = 64 * 1024 * 1024
    #: Seconds the form may take to reach the point where its locale is known (408 after).
    read_seconds: float = 60.0
    #: Longest pause between two pieces of the form while it is read ahead, in seconds (408 after).
    pause_seconds: float = _BODY_PAUSE.default

    #: Each one's least value (a smaller one is refused, naming its variable; the chart's schema says the same).
    MINIMUMS: ClassVar[dict[str, float]] = {
        "buffer_bytes": UNCOUNTED_BYTES, "budget_bytes": UNCOUNTED_BYTES, "read_seconds": 1.0, "pause_seconds": _PAUSE_MINIMUM}

    def buffer_fits_the_budget(self) -> bool:
        """Whether one form alone, read ahead up to :attr:`buffer_bytes`, fits :attr:`budget_bytes` (its first
        :data:`UNCOUNTED_BYTES` not counted). One that did not would be refused 503 (``forms_held``, "try again
        shortly") whenever it came, where its own bound says 413."""
        return self.buffer_bytes <= self.budget_bytes + UNCOUNTED_BYTES


class FormScanner:
    """Fed a multipart body chunk by chunk (python-multipart's push parser): the ``language`` field's
    value once it has been read whole, and whether the file part has begun."""

    def __init__(self, boundary: bytes) -> None:
        self.language: str | None = None
        self.file_begun = False
        self.ended = False
        self._name = b""
        self._header_field = b""
        self._header_value = b""
        self._disposition = b""
        self._value = bytearray()
        self._parser = MultipartParser(boundary, {
            "on_part_begin": self._part_begin, "on_header_field": self._header_field_data,
            "on_header_value": self._header_value_data, "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished, "on_part_data": self._part_data,
            "on_part_end": self._part_end, "on_end": self._end,
        })

    def feed(self, chunk: bytes) -> None:
        """Parse ``chunk``; raises :class:`MultipartParseError` on a body that is not a form."""
        self._parser.write(chunk)

    def _part_begin(self) -> None:
        self._name, self._disposition, self._value = b"", b"", bytearray()

    def _header_field_data(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        if self._header_field.strip().lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_field, self._header_value = b"", b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        self._name = options.get(b"name", b"")
        if b"filename" in options or self._name == b"file":
            self.file_begun = True

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._name == b"language" and len(self._value) <= _MAX_LANGUAGE_BYTES:
            self._value += data[start:end]

    def _part_end(self) -> None:
        if self._name == b"language" and self.language is None:
            self.language = self._value[:_MAX_LANGUAGE_BYTES].decode(errors="replace").strip() or None

    def _end(self) -> None:
        self.ended = True


@dataclass
class FormBudget:
    """The bytes of forms read ahead that the gateway holds (each beyond its :data:`UNCOUNTED_BYTES`), all
    requests together, at most ``limit``."""

    limit: int = FormLimits.budget_bytes
    used: int = 0

    def take(self, size: int) -> None:
        """Count ``size`` more bytes held; raises :class:`Failure` (503) when that would pass the limit."""
        if self.used + size > self.limit:
            raise Failure(f"the gateway already holds {self.used / 2**20:.1f} MiB of forms read ahead for their language "
                          f"field (at most {self.limit / 2**20:.1f} MiB); try again shortly, or send the field language "
                          "before the file, or ?language=<locale> in the URL", failures.FORMS_HELD)
        self.used += size

    def give(self, size: int) -> None:
        self.used -= size


@dataclass
class Scanned:
    """What :func:`scan` found: the form's ``language`` (``None``: none found) and the body read so far,
    counted in ``budget`` (beyond its first :data:`UNCOUNTED_BYTES`) until it is relayed or dropped
    (:meth:`release`)."""

    language: str | None
    budget: FormBudget
    read: list[bytes] = field(default_factory=list)
    #: Bytes read, and those of them counted in ``budget``.
    size: int = 0
    counted: int = 0

    def keep(self, chunk: bytes, waiting: bool) -> None:
        """Hold ``chunk``; ``waiting``: while the rest of the form is waited for, so counted in the budget (beyond the
        form's first :data:`UNCOUNTED_BYTES`; the chunk that ends the reading is relayed at once)."""
        if waiting:
            counted = max(0, self.size + len(chunk) - UNCOUNTED_BYTES) - self.counted
            self.budget.take(counted)
            self.counted += counted
        self.size += len(chunk)
        self.read.append(chunk)

    def release(self) -> None:
        """Drop what was read (relayed, or the request refused) and give its bytes back."""
        self.read = []
        self.budget.give(self.counted)
        self.size = self.counted = 0

    async def body(self, request: web.Request) -> AsyncIterator[bytes]:
        """The whole body, unchanged: what was read, then the rest as it arrives."""
        read = self.read
        for chunk in read:
            yield chunk
        self.release()
        async for chunk in request.content.iter_any():
            yield chunk


def boundary_of(request: web.Request) -> bytes | None:
    media, options = parse_options_header(request.headers.get("Content-Type", ""))
    boundary = options.get(b"boundary")
    return boundary if media == b"multipart/form-data" and boundary else None


async def scan(request: web.Request, fallback_known: bool, budget: FormBudget, limits: FormLimits) -> Scanned:
    """Read ``request``'s form until its ``language`` field is known, or no longer needed.

    ``fallback_known``: the request has ``?language=`` or a single locale is routed, so a form
    whose file comes first is streamed from there. Raises :class:`Failure` (413, 408, 503) past
    ``limits``, having given back what it read. What it returns is counted in ``budget`` until the
    caller relays it or calls :meth:`Scanned.release`.
    """
    boundary = boundary_of(request)
    scanned = Scanned(None, budget)
    if boundary is None or not request.body_exists:
        return scanned
    try:
        return await _scan(request, boundary, fallback_known, scanned, limits)
    except BaseException:
        scanned.release()
        raise


async def _scan(request: web.Request, boundary: bytes, fallback_known: bool, scanned: Scanned, limits: FormLimits) -> Scanned:
    scanner = FormScanner(boundary)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limits.read_seconds
    try:
        while True:
            left = deadline - loop.time()
            try:
                async with asyncio.timeout(min(limits.pause_seconds, left)):
                    chunk = await request.content.readany()
            except TimeoutError:
                if left <= limits.pause_seconds:
                    raise Failure(f"the form did not reach its language field within {limits.read_seconds:g} s "
                                  "(send the field language before the file, or ?language=<locale> in the URL)",
                                  UPLOAD_TIMEOUT) from None
                raise Failure(f"the form paused for {limits.pause_seconds:g} s", UPLOAD_TIMEOUT) from None
            if not chunk:
                break
            try:
                scanner.feed(chunk)
            except MultipartParseError:
                scanned.keep(chunk, waiting=False)
                return scanned  # not a form the recognizer will read either: it says why
            done = scanner.language is not None or scanner.ended or (scanner.file_begun and fallback_known)
            if not done and scanned.size + len(chunk) > limits.buffer_bytes:  # before the budget is asked for it
                raise Failure(f"the form's file comes before its language field and the form is over "
                              f"{limits.buffer_bytes / 2**20:g} MiB: send the field language before the file, or "
                              "?language=<locale> in the URL", TOO_LARGE)
            scanned.keep(chunk, waiting=not done)
            if done:
                break
    except (MalformedBody, ConnectionError):  # a bad chunk, or the client left
        failure = client_failure(request)
        if failure is None:
            raise
        raise failure from None
    scanned.language = scanner.language
    return scanned
