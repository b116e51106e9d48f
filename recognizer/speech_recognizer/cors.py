"""Browsers on another origin (CORS): which web pages may call the HTTP routes, and how, said once for the recognizer
(``Http:CorsOrigins``) and the gateway (``SPEECH_GATEWAY_CORS_ORIGINS``).

A page of ``https://app.example.com`` that calls the REST or OpenAI route of ``https://speech.example.com`` with
``fetch()`` and its key is refused by the browser unless the server says that origin may: the browser first asks with a
preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-*``, no key), and reads the answer only when it
carries ``Access-Control-Allow-Origin``. Starlette's :class:`~starlette.middleware.cors.CORSMiddleware` answers
both; :func:`policy` is what it is given, :func:`middleware` the recognizer's, and the gateway (aiohttp) asks an
instance of it for the same headers (:mod:`speech_operator.gateway_cors`).

- Origins: those listed, or ``*`` (any page). No credentials either way: the key travels in a header the page sets,
  never in a cookie, so no page is let read an answer with the browser's cookies.
- Request headers: any the browser asks for, named back as it asked (``*`` would not cover ``Authorization``): the
  key's (``Ocp-Apim-Subscription-Key``, ``Authorization``), ``Content-Type``, and what clients add of their own (the
  OpenAI JavaScript client's ``X-Stainless-*``, which change between its versions); a header is no permission here:
  the origin and the key are.
- Exposed: ``Retry-After`` (a busy server's 503) and ``X-Speech-Failure`` (the failure's name: a busy server, a
  drain, a model that cannot be loaded, all 503), beside the headers every page reads (``Content-Type``...).
- ``Vary: Origin`` on every answer, one to a request without ``Origin`` too (its only CORS header), as the Fetch
  standard asks of a server whose answers depend on the ``Origin``: a cache never gives a page an answer kept for
  another client.

The servers' own refusals, written below the app (the HTTP layers': a busy server's 503 past ``Http:MaxConnections``
or ``SPEECH_GATEWAY_MAX_CONNECTIONS``, 408, 431, 400; the recognizer's answer to an exception of the app, outside its
middleware), carry the same headers (:func:`headers`; a head refused before it is whole, for its ``Origin`` as far as
it came: :class:`HeadOrigin`), so that a page reads them (a 503's ``Retry-After``, to back
off) rather than a browser's "Failed to fetch". A preflight is answered even on a connection past either cap (as a
probe is): it costs no decoder, and a browser refuses any other answer to it, 503 or not, without showing it to the
page; the request that follows it then gets the 503 the page can read.

WebSocket upgrades are no CORS requests: a browser opens one from any page and sends its ``Origin``, which neither
server checks; the key (in the URL's query, from a browser) is what guards them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.types import Message

from .errors import FAILURE_HEADER

#: Methods a preflight may ask for: the recognition routes' POST, the other routes' GET.
METHODS = ("GET", "POST")
#: Headers of an answer a page may read beyond the safelisted ones.
EXPOSED = ("Retry-After", FAILURE_HEADER)
#: Every origin.
ANY = "*"
_DEFAULT_PORTS = {"http": 80, "https": 443}
#: An ``Origin`` line of a request head, from the line break before it, and its value (:class:`HeadOrigin`).
_ORIGIN_LINE = re.compile(rb"\norigin:[ \t]*([^\r\n]*?)[ \t]*\r\n", re.IGNORECASE)
#: Longest start of a line kept from one read to the next to find an ``Origin`` line in (an origin is far shorter).
_ORIGIN_LINE_BYTES = 1024


def origins(text: str) -> tuple[str, ...]:
    """The origins of a comma-separated list (``https://app.example.com, http://localhost:3000``), each as a browser
    writes its ``Origin`` (scheme and host in lower case, a default port left out); ``*`` alone: any; empty: none.
    Raises :class:`ValueError` naming an item that is no origin: with a path (``https://app.example.com/``, a
    browser's ``Origin`` has none), a pattern (``https://*.example.com``) or no scheme, it would match no page and
    leave every browser refused, silently."""
    items = [part.strip() for part in text.split(",") if part.strip()]
    if ANY in items:
        if len(items) > 1:
            raise ValueError("'*' allows every origin: give it alone, or list the origins")
        return (ANY,)
    return tuple(dict.fromkeys(_origin(item) for item in items))


def _origin(item: str) -> str:
    hint = "an origin is scheme://host[:port], as a browser's Origin header writes it (https://app.example.com)"
    try:
        parts = urlsplit(item)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{item!r} is not an origin ({exc}): {hint}") from None
    if not parts.scheme or not parts.hostname or "*" in item or parts.username is not None or parts.password is not None:
        raise ValueError(f"{item!r} is not an origin: {hint}")
    if parts.path or parts.query or parts.fragment or item.endswith(("?", "#")):
        raise ValueError(f"{item!r} is not an origin: it has a path or more after its host, which a browser's Origin "
                         f"never has: {hint}")
    scheme, host = parts.scheme.lower(), parts.hostname.lower()
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}" if port is None or _DEFAULT_PORTS.get(scheme) == port else f"{scheme}://{host}:{port}"


def policy(allowed: Sequence[str]) -> dict[str, Any]:
    """:class:`CORSMiddleware`'s arguments for the ``allowed`` origins (:func:`origins`)."""
    return {"allow_origins": tuple(allowed), "allow_methods": METHODS, "allow_headers": (ANY,), "allow_credentials": False,
            "expose_headers": EXPOSED}


def instance(allowed: Sequence[str]) -> CORSMiddleware | None:
    """A :class:`CORSMiddleware` of :func:`policy` for the ``allowed`` origins, asked for headers (never called as an
    app): for answers written outside a Starlette app; None without any."""
    return CORSMiddleware(app=None, **policy(allowed)) if allowed else None  # type: ignore[arg-type]  # never called


def is_preflight(method: str, request: Headers) -> bool:
    """A browser's CORS preflight, as :class:`CORSMiddleware` tells one: ``OPTIONS`` with ``Origin`` and
    ``Access-Control-Request-Method``."""
    return method == "OPTIONS" and "origin" in request and "access-control-request-method" in request


def headers(answerer: CORSMiddleware | None, request: Headers, status: int = 200) -> list[tuple[str, str]]:
    """The headers ``answerer`` (:func:`instance`) gives an answer of ``status`` to a request with the header lines
    ``request`` (none without ``answerer``; ``Vary: Origin`` alone without ``Origin``, as on the recognizer's other
    answers: a cache keeps a browser's answer and another's apart): :meth:`CORSMiddleware.send` itself, run to its
    end at once, for answers written where no coroutine can be awaited (a protocol's callbacks). It awaits nothing
    but the ``send`` it is given, which returns at once; raises :class:`RuntimeError` if a later Starlette waits."""
    if answerer is None:
        return []
    start: Message = {"type": "http.response.start", "status": status, "headers": []}

    async def sent(message: Message) -> None:
        pass

    step = answerer.send(start, sent, request)
    try:
        step.send(None)
    except StopIteration:
        return [(name.decode("latin-1"), value.decode("latin-1")) for name, value in start["headers"]]
    step.close()
    raise RuntimeError("CORSMiddleware.send waited: its headers cannot be had outside an event loop's task")


class HeadOrigin:
    """The ``Origin`` line of a request head, read from its bytes as they come (:meth:`see`), for the answer of a head
    refused before it is whole or as a parser refuses it (431, 408, 400: the recognizer's
    :class:`~speech_recognizer.http_limits.LimitedHttpTools`, the gateway's ``HeadGuard``): so that both servers find
    it alike, as far as the head came. Their parsers cannot say it: aiohttp's gives no header before the head is whole,
    and httptools gives one only once the next one's name is in (a head that stops, or breaks, just after its
    ``Origin`` line gave none)."""

    def __init__(self) -> None:
        #: The last ``Origin`` line's value, once its line break came.
        self.value: bytes | None = None
        #: The start of the line the last read ended in (up to :data:`_ORIGIN_LINE_BYTES`): a line may straddle reads.
        self._line_start = b""

    def see(self, data: bytes) -> None:
        """The head's next bytes."""
        seen = self._line_start + data
        for found in _ORIGIN_LINE.finditer(seen):
            self.value = found.group(1)
        start = seen[seen.rfind(b"\n"):] if b"\n" in seen else b""  # from a line's start (a head's first is no Origin)
        self._line_start = start if len(start) <= _ORIGIN_LINE_BYTES else b""

    def clear(self) -> None:
        """The head is whole (the next bytes are another's)."""
        self.value, self._line_start = None, b""

    def request(self) -> Headers:
        """The head's header lines as :func:`headers` reads them: its ``Origin``, if it came."""
        return Headers(raw=[(b"origin", self.value)] if self.value is not None else [])


def middleware(allowed: Sequence[str]) -> list[Middleware]:
    """The recognizer's CORS middleware for the ``allowed`` origins; none without any (no CORS headers at all)."""
    return [Middleware(CORSMiddleware, **policy(allowed))] if allowed else []
