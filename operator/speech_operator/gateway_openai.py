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
  :data:`FORM_BUFFER_BYTES`, to find the field after the file; past that bound, 413 saying to send
  ``language`` before the file or in the query.

What is read ahead is bounded for the whole gateway too (:class:`FormBudget`, :data:`FORM_BUDGET_BYTES`):
a form whose reading would pass it gets 503 + ``Retry-After``, so that many such uploads at once
cannot take the pod's memory.

A body that is not a multipart form is routed by the query (or the only locale); the recognizer
answers it with its own 415 or 400.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import web
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from speech_operator import gateway_failures as failures
from speech_operator.gateway_http_limits import MalformedBody, client_failure
from speech_recognizer.errors import TOO_LARGE, UPLOAD_TIMEOUT, Failure

#: How much of a form the gateway keeps while it looks for a ``language`` field after the file.
FORM_BUFFER_BYTES = 16 * 1024 * 1024
#: Bytes of forms read ahead (and not yet relayed) that the gateway holds at once, all requests together.
FORM_BUDGET_BYTES = 64 * 1024 * 1024
#: How long the form may take to reach the point where its locale is known.
FORM_READ_SECONDS = 60.0
#: A ``language`` value longer than this is not a locale: the rest is not kept.
_MAX_LANGUAGE_BYTES = 256


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
    """The bytes of forms read ahead that the gateway holds, all requests together, at most ``limit``."""

    limit: int = FORM_BUDGET_BYTES
    used: int = 0

    def take(self, size: int) -> None:
        """Count ``size`` more bytes held; raises :class:`Failure` (503) when that would pass the limit."""
        if self.used + size > self.limit:
            raise Failure(f"the gateway already holds {self.used // 2**20} MiB of forms read ahead for their language "
                          f"field (at most {self.limit // 2**20} MiB); try again shortly, or send the field language "
                          "before the file, or ?language=<locale> in the URL", failures.FORMS_HELD)
        self.used += size

    def give(self, size: int) -> None:
        self.used -= size


@dataclass
class Scanned:
    """What :func:`scan` found: the form's ``language`` (``None``: none found) and the body read so far,
    counted in ``budget`` until it is relayed or dropped (:meth:`release`)."""

    language: str | None
    budget: FormBudget
    read: list[bytes] = field(default_factory=list)
    held: int = 0

    def keep(self, chunk: bytes) -> None:
        self.budget.take(len(chunk))
        self.held += len(chunk)
        self.read.append(chunk)

    def release(self) -> None:
        """Drop what was read (relayed, or the request refused) and give its bytes back."""
        self.read = []
        self.budget.give(self.held)
        self.held = 0

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


async def scan(request: web.Request, fallback_known: bool, budget: FormBudget) -> Scanned:
    """Read ``request``'s form until its ``language`` field is known, or no longer needed.

    ``fallback_known``: the request has ``?language=`` or a single locale is routed, so a form
    whose file comes first is streamed from there. Raises :class:`Failure` (413, 408, 503) past the
    bounds, having given back what it read. What it returns is counted in ``budget`` until the
    caller relays it or calls :meth:`Scanned.release`.
    """
    boundary = boundary_of(request)
    scanned = Scanned(None, budget)
    if boundary is None or not request.body_exists:
        return scanned
    try:
        return await _scan(request, boundary, fallback_known, scanned)
    except BaseException:
        scanned.release()
        raise


async def _scan(request: web.Request, boundary: bytes, fallback_known: bool, scanned: Scanned) -> Scanned:
    scanner = FormScanner(boundary)
    size = 0
    try:
        async with asyncio.timeout(FORM_READ_SECONDS):
            async for chunk in request.content.iter_any():
                scanned.keep(chunk)
                size += len(chunk)
                try:
                    scanner.feed(chunk)
                except MultipartParseError:
                    return scanned  # not a form the recognizer will read either: it says why
                if scanner.language is not None or scanner.ended or (scanner.file_begun and fallback_known):
                    break
                if size > FORM_BUFFER_BYTES:
                    raise Failure(f"the form's file comes before its language field and the form is over "
                                  f"{FORM_BUFFER_BYTES // 2**20} MiB: send the field language before the file, or "
                                  "?language=<locale> in the URL", TOO_LARGE)
    except TimeoutError:
        raise Failure(f"the form did not arrive within {FORM_READ_SECONDS:g} s", UPLOAD_TIMEOUT) from None
    except (MalformedBody, ConnectionError):  # a bad chunk, or the client left
        failure = client_failure(request)
        if failure is None:
            raise
        raise failure from None
    scanned.language = scanner.language
    return scanned
