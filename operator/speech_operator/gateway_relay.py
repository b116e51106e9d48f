"""Forwarding one request or stream to a recognizer, unchanged, as it arrives.

- REST: the body goes upstream as the client sends it (chunked stays chunked, a declared length
  is kept) and the answer comes back the same way; nothing is read whole. A body that turns out
  malformed on the way (a bad chunk), or a client that leaves before the answer, aborts the
  request to the recognizer, which then gives its decoder back
  (:func:`~speech_operator.gateway_http_limits.client_failure`).
- WebSocket (Speech SDK, vosk): the gateway connects to the recognizer first, with the client's
  path, query, subprotocols and headers (the key headers, ``X-ConnectionId``, ``User-Agent``…),
  and only then accepts the client with the subprotocol the recognizer chose. A recognizer that
  refuses the upgrade (401 wrong key, 403 missing key) refuses the client with the same status, reason text (its
  body, of which at most :data:`REFUSAL_MAX_BYTES` are read, within :data:`REFUSAL_READ_SECONDS`) and headers
  (:func:`read_refusals`); a client held while its locale woke gets that text as the reason of its close, whose code
  is the one the failure tables give that status (:func:`~speech_operator.gateway_failures.refusal_close`).
  Then every frame is relayed as it comes, text, binary, ping and pong alike, in both
  directions. Backpressure holds end to end: a frame is read from one side only once the last
  one was handed to the other side's socket, so a slow reader slows its sender down (through
  aiohttp's bounded read queue and the kernel's buffers) and nothing piles up in the gateway.
  A client that takes in nothing so holds its recognizer's replies back until the recognizer resets the stream
  (its ``AudioIdleSeconds``: ``not_reading``): the gateway then resets the client's connection too, and counts
  no ``backend_lost`` (:func:`_not_taking_in`). The gateway bounds its own sends alike: a client that takes in none
  of what waits for it for ``SPEECH_GATEWAY_SEND_STALL_SECONDS`` is reset (:meth:`HeadGuard._watch
  <speech_operator.gateway_http_limits.HeadGuard._watch>`), whether or not it still sends, the recognizer's side closed
  1001, and that is counted and logged once (``not_reading``: :func:`_relay`, and the caller of :func:`relay_http`).
  A client that closes while the relay's send to its recognizer waits (a recognizer taking in nothing, or less than
  its client sends) is answered then, not once that recognizer has read what came before the close: its close, among
  what was read ahead of it (aiohttp's private ``_reader._buffer``), passed on, or its end of the connection in the TCP
  state, and what it sent before them and the relay still holds dropped (:func:`_while_sends_wait`).
  The recognizer's keepalive pings reach the client and its pongs come back (the gateway does
  not answer for either side), so a client held back behind its own audio is not cut off here
  either. A close from either side is passed on with its code and reason; a recognizer whose
  connection breaks without one (its pod stopped or crashed) closes the client with 1011 and a
  reason that says so, never a hang. When the gateway stops, the relay closes both sides itself
  once the stream is idle (1000), or when time is up (:mod:`speech_operator.gateway_shutdown`).
  Every close the gateway sends the client is a close handshake: its close reply is read (within
  :data:`~speech_operator.gateway_shutdown.CLOSE_REPLY_SECONDS`) before its connection ends (:func:`_stopped`), as the
  recognizer's side's is (aiohttp's client reads it, within ``SPEECH_GATEWAY_SEND_STALL_SECONDS``, the stream no longer
  counted as its client's once that client is gone: :meth:`~speech_operator.gateway_shutdown.Progress.leave`; a recognizer busy
  decoding reads its close late; one that has taken in none of what waits unsent to it and sent nothing for that long,
  or not taken it all in that long after the close, has that connection reset: :func:`_close_within`). A recognizer
  that takes in none of a stream and says nothing for ``SPEECH_GATEWAY_SEND_STALL_SECONDS`` while the relay's send to it
  waits is stuck: its connection reset, the client closed 1011 with the reason (``backend_not_reading``), whether it
  still streams or closed behind audio still unsent, its close unread (:func:`_while_sends_wait`).
  A close that ends with bytes still unsent
  (a client not reading, or reading slowly) ends its connection once the client has taken them in, or resets it once it
  has taken in none of them for ``SPEECH_GATEWAY_SEND_STALL_SECONDS``, as an open connection (:meth:`HeadGuard.close_after_unsent
  <speech_operator.gateway_http_limits.HeadGuard.close_after_unsent>`). At the stop, a client that takes in
  nothing has its connection reset once that bound passed (:meth:`_ClientSide.stop`): nothing is left to the kernel.

What the gateway counts as its own failure of a relay, the relay tells its caller (``failed``: the gateway logs and
counts it, :data:`Failed`): the recognizer's connection that broke (no close frame, a send or a REST answer that
failed mid-way: ``backend_lost``), one that could not be made once a held client's locale woke
(``backend_unavailable``), a stream still in progress when the gateway's stop ran out of time (``gateway_stopped``), and
each connection of a stream the gateway resets: the client's for taking in nothing, open (the guard's watch) or after
its close (the guard, told the relay's ``failed``: :class:`_ClientSide`), ``not_reading`` (the recognizer's kind for
its own clients: the client's doing), and the recognizer's for taking in none of the stream while the relay's send
waits (:func:`_while_sends_wait`) or not taking in its close (:func:`_close_within`), ``backend_not_reading`` (a fault:
it pages); the recognizer's let go for taking in the whole stream and its close and not answering that close
(:func:`_close_within`), ``backend_close_unanswered`` (a fault: it pages); the recognizer's the stop resets with bytes
still unsent, ``gateway_stopped``, or ``client_gone`` once its client had gone (what it left, not what the stop cut:
:func:`_close_within`); the client's still closing when the stop ends, ``gateway_stopped``, or ``client_gone`` once
that client had gone (its own close sent, the close reply behind replies it never read: :attr:`_ClientSide.progress`,
:meth:`~speech_operator.gateway_http_limits.HeadGuard.reset_unsent`); each under the stream's locale, and one
failure of a request or stream only, the first met (the caller counts no other). What a recognizer or a client says itself is passed on and is not the gateway's failure: a
close with its own code (a recognizer's 1011 for its internal error, counted by the recognizer's own metrics), a REST
answer of 500, a refused upgrade (a held client's close, 1011 for a 500 or 502, has one INFO line saying so).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import sys
from collections.abc import AsyncIterable, AsyncIterator, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
from aiohttp import WebSocketError, WSCloseCode, WSMessage, WSMsgType, web, web_ws
from multidict import CIMultiDict, MultiMapping
from yarl import URL

from speech_operator import gateway_failures as failures
from speech_operator.gateway_directory import Backend
from speech_operator.gateway_http_limits import STALL_SECONDS, HeadGuard, client_failure, client_leaves, drop_what_follows, not_reading
from speech_operator.gateway_shutdown import CLOSE_REPLY_SECONDS, STOPPED_MIDSTREAM, STOPPED_UNANSWERED, Progress, Shutdown, unless
from speech_recognizer.addresses import Network, trusted_peer, unmapped
from speech_recognizer.connection_cap import Intake, peer_gone, received_bytes, reset, unread_bytes, unsent_bytes
from speech_recognizer.contract import MAX_HEADERS
from speech_recognizer.errors import FAILURE_HEADER, HEADER_TOO_LARGE, Failure, close_reason, one_line
from speech_recognizer.serving import SERVER_OPTIONS
from speech_recognizer.usp import refusal as usp_refusal

log = logging.getLogger("speech_operator.gateway")

#: Headers of one hop only (RFC 9110 7.6.1), the WebSocket handshake's own, and ``Host``: never forwarded.
HOP_HEADERS = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te",
    "trailer", "transfer-encoding", "upgrade", "host", "sec-websocket-key", "sec-websocket-version",
    "sec-websocket-extensions", "sec-websocket-accept", "sec-websocket-protocol",
})
#: Largest WebSocket message a recognizer takes: more than the gateway ever takes from a client.
MAX_MESSAGE_BYTES: int = SERVER_OPTIONS["ws_max_size"]
#: ``SPEECH_GATEWAY_READ_BUFFER_BYTES``' default: bytes read ahead of a client before its connection is no longer read.
DEFAULT_READ_AHEAD_BYTES = 16 * 1024
#: Close codes an endpoint may send (RFC 6455 7.4); any other received is passed on as 1000.
_SENDABLE = frozenset({1000, 1001, 1002, 1003, *range(1007, 1015)}) | frozenset(range(3000, 5000))


#: aiohttp's automatic request headers, which the relay's session does not add: the recognizer gets the client's own (or
#: none), not aiohttp's ``Accept: */*``, ``Accept-Encoding: gzip, deflate``, ``Content-Type: application/octet-stream``
#: and ``User-Agent``; and what aiohttp writes on a relayed request is the headers given it and those below.
SKIPPED_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")
#: What aiohttp writes of its own on a relayed REST request beyond the headers given it, at the longest: its framing
#: (``Transfer-Encoding: chunked``, or ``Content-Length: 0`` without a body; a declared length is among those given) and
#: ``Connection: close``.
REST_FRAMING = {"Transfer-Encoding": "chunked", "Connection": "close"}
#: What aiohttp writes of its own on a relayed WebSocket's upgrade beyond the headers given it: the handshake (the
#: client's own is of one hop, not forwarded), and ``Sec-WebSocket-Protocol`` when subprotocols are offered.
WEBSOCKET_HANDSHAKE = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
                       "Sec-WebSocket-Key": "x" * 24}


def upstream_request(request: web.Request, backend: Backend, trusted: tuple[Network, ...],
                     websocket: bool = False) -> tuple[URL, CIMultiDict[str]]:
    """Where the relay sends ``request`` (the recognizer's URL: a WebSocket's with ``ws://``), and its headers there
    (:func:`forwarded_headers`, its ``Host`` the recognizer's, as aiohttp would write it; ``trusted``: the gateway's
    trusted proxies)."""
    base = backend.url.replace("http://", "ws://", 1).replace("https://", "wss://", 1) if websocket else backend.url
    url = URL(base + request.path_qs)
    return url, forwarded_headers(request, url.host_port_subcomponent or "", trusted)


def head_over(request: web.Request, backend: Backend, max_bytes: int, trusted: tuple[Network, ...],
              protocols: tuple[str, ...] | None = None) -> Failure | None:
    """Why the head the relay would send ``backend`` for ``request`` is over a recognizer's bounds, if it is: over
    ``max_bytes`` (SPEECH_GATEWAY_MAX_HEADER_BYTES, a recognizer's Http:MaxHeaderBytes by default), or over
    :data:`~speech_recognizer.contract.MAX_HEADERS` headers, once the gateway's own are in (``Host``, ``X-Forwarded-*``,
    the framing or, ``protocols`` given, a WebSocket's handshake offering them). A head the gateway took within both may
    grow past them so (``X-Forwarded-Host`` repeats the client's ``Host``, ``X-Forwarded-For`` adds its address): the
    recognizer's 431 would name its setting for a head the gateway had taken. Measured as the guard measures the
    client's head (:mod:`speech_operator.gateway_http_limits`): every byte, request line and the blank line included."""
    url, written = upstream_request(request, backend, trusted, websocket=protocols is not None)
    if protocols is None:
        written.update({"Connection": "close"} if "Content-Length" in written else REST_FRAMING)
    else:
        written.update({**WEBSOCKET_HANDSHAKE, **({"Sec-WebSocket-Protocol": ", ".join(protocols)} if protocols else {})})
    if len(written) > MAX_HEADERS:  # every line: a repeated header is written as many times as it came
        return Failure(f"the request's head has over {MAX_HEADERS} headers once the gateway adds its own (Host, "
                       f"X-Forwarded-*): {len(written)}", HEADER_TOO_LARGE)
    line = f"{request.method if protocols is None else 'GET'} {url.raw_path_qs} HTTP/1.1\r\n"
    size = _length(line) + sum(_length(name) + _length(value) + 4 for name, value in written.items()) + 2
    if size > max_bytes:
        return Failure(f"the request's head is over {max_bytes} bytes once the gateway adds its own headers (Host, "
                       f"X-Forwarded-*): {size} (SPEECH_GATEWAY_MAX_HEADER_BYTES)", HEADER_TOO_LARGE)
    return None


def _length(text: str) -> int:
    """Bytes of ``text`` as aiohttp writes it (UTF-8; a client's byte that was not is given back as it came)."""
    return len(text.encode("utf-8", "surrogateescape"))


def forwarded_headers(request: web.Request, host: str, trusted: tuple[Network, ...]) -> CIMultiDict[str]:
    """The client's headers as the recognizer should see them, ``Host`` the recognizer's.

    Each line the client sent goes on as it came, in order: a header sent more than once (two ``Cookie`` lines, a
    repeated ``Accept-Language``, a doubled key header) is a list whose order counts (RFC 9110 5.3), and the recognizer
    judges it as it would directly. ``X-Forwarded-For`` is one line: every address of the client's lines, then the
    client's own (the recognizer takes the right-most address no proxy of its own list wrote). ``X-Forwarded-Proto``
    and ``-Host`` are the client's lines when the client is one of the gateway's ``trusted`` proxies (an ingress
    controller: the scheme and host it was asked for) and sent them, else the gateway's own (the scheme it was reached
    by, the client's ``Host``): the recognizer, which trusts the gateway, believes the last ``X-Forwarded-Proto``
    line it gets, and a client of any other address would choose the scheme it believes.
    A name is spelled as its first line spelled it: aiohttp's client session keeps the lines of a name only when they
    are spelled alike (it compares names case-sensitively), and a later line spelled otherwise
    (``ocp-apim-subscription-key`` after ``Ocp-Apim-Subscription-Key``) replaced the ones before it."""
    out: CIMultiDict[str] = CIMultiDict(Host=host)
    spelled: dict[str, str] = {}
    for name, value in request.headers.items():
        if name.lower() not in HOP_HEADERS and name.lower() not in ("content-length", "x-forwarded-for"):
            out.add(spelled.setdefault(name.lower(), name), value)
    peer = unmapped(request.remote or "")  # an IPv4 client of the gateway's socket on both families: ::ffff:10.0.0.1
    out["X-Forwarded-For"] = ", ".join([*(v for v in request.headers.getall("X-Forwarded-For", ()) if v.strip()), peer])
    vouched = trusted_peer(peer, trusted)
    for name, own in (("X-Forwarded-Proto", request.scheme), ("X-Forwarded-Host", request.host)):
        if not vouched:
            out.popall(name, None)
        if name not in out:
            out[name] = own
    if request.content_length is not None:
        out["Content-Length"] = str(request.content_length)
    return out


def returned_headers(headers: MultiMapping[str]) -> CIMultiDict[str]:
    """The recognizer's response headers the client gets, each line as it came and in order (two ``Set-Cookie``
    lines stay two); the gateway writes its own framing."""
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in HOP_HEADERS and k.lower() not in ("date", "server"))


def _uncounted(_: int) -> None:
    pass


#: What a relay of a WebSocket calls once the recognizer answered its upgrade: with the status (101, or a refusal's)
#: and the kind of failure its :data:`~speech_recognizer.errors.FAILURE_HEADER` names (None: none named; with a 101,
#: a stream accepted only to be closed with that failure: :data:`ACCEPTED_TO_CLOSE`).
Connected = Callable[[int, str | None], None]


def _unheard(status: int, named: str | None) -> None:
    pass


#: What a relay of a WebSocket tells of how the recognizer answers the stream it accepted, until told it knows (True):
#: each message of the recognizer's (a text one's bytes; None for a binary one), then its close ``(code, reason)`` when
#: it closed the stream before (a stream refused once accepted: a model it cannot load, every decoder busy at the first
#: audio); no more once the stream ended otherwise (the client's close, a connection lost, the gateway's stop).
Answered = Callable[[bytes | None | tuple[int, bytes]], bool]


def _unanswered(told: bytes | None | tuple[int, bytes]) -> bool:
    return True


#: Where a relay reports a failure of the gateway's own that ends it, as it happens (the gateway logs and counts it:
#: ``speech_gateway_failures_total{reason,locale}``).
Failed = Callable[[Failure], None]


def lost(backend: Backend, what: str) -> Failure:
    """``backend_lost``: the connection to ``backend``'s recognizer broke (``what``: when, and how)."""
    return Failure(f"the recognizer of {backend.locale} ({backend.namespace}/{backend.name}) {what}", failures.BACKEND_LOST)


@dataclass(frozen=True)
class Traffic:
    """Where a relay reports the bytes it carries (the gateway's metrics)."""

    to_recognizer: Callable[[int], None] = _uncounted
    to_client: Callable[[int], None] = _uncounted


# ---- REST -----------------------------------------------------------------------------------------
#: Why a relayed request whose client left before the recognizer answered ends (``client_gone``: 499).
GONE_UNANSWERED = "the client left before it had its answer; its request to the recognizer was aborted"


async def relay_http(request: web.Request, backend: Backend, session: aiohttp.ClientSession,
                     traffic: Traffic | None = None, body: AsyncIterable[bytes] | None = None,
                     shutdown: Shutdown | None = None, *, trusted: tuple[Network, ...], failed: Failed) -> web.StreamResponse:
    """Forward ``request`` to ``backend`` and stream its answer back (``body``: the request's body,
    when part of it has been read already; it must be the whole body, unchanged; ``trusted``: the gateway's trusted
    proxies, :func:`forwarded_headers`).

    Raises :class:`~speech_operator.gateway_failures.Failure` when the recognizer cannot be
    reached, or (``shutdown``) the gateway's stop ran out of time before the recognizer began its
    answer, or the client's side failed first: its body was refused (400) or it left (499) (nothing
    was sent to the client yet; the request to the recognizer is aborted). A client that leaves once its whole request is
    sent, while the recognizer decodes, is seen gone at once (its connection lost, or reset:
    :func:`~speech_operator.gateway_http_limits.client_leaves`; one that only half-closed is answered), and its request's
    connection to the recognizer closed then, so that the recognizer gives its decoder back as for a client of its own:
    the gateway waited for the answer, a decoder spent decoding to the end for nobody. Once the answer has
    started, a broken recognizer connection, or a refused body, aborts the client's connection: a cut
    answer must not look whole (the recognizer's is ``failed``, ``backend_lost``; the caller reports a failure of the
    client's side: :func:`~speech_operator.gateway_http_limits.client_failure`).
    """
    traffic = traffic or Traffic()
    url, headers = upstream_request(request, backend, trusted)
    if body is None and request.body_exists:
        body = request.content.iter_any()  # as it arrives (iterating the stream itself would give lines)
    upstream: aiohttp.ClientResponse | None = None

    async def uploaded(chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
        """``chunks``; if they fail once the recognizer is answering, that answer ends too (the upload's failure alone
        would not end it, and the recognizer would wait for the rest of the body)."""
        try:
            async for chunk in chunks:
                yield chunk
        except Exception:
            if upstream is not None:
                upstream.close()
            raise

    try:
        asking = session.request(request.method, url, data=None if body is None else uploaded(body),
                                 headers=headers, allow_redirects=False)
        upstream = await unless(client_leaves(request),
                                shutdown.unless_over(asking, STOPPED_UNANSWERED) if shutdown else asking, lambda: _gone(request))
    except (TimeoutError, aiohttp.ClientConnectorError) as exc:
        raise failures.Failure(unreachable(backend, exc), failures.UNAVAILABLE) from None
    except aiohttp.ClientError as exc:
        if (failure := client_failure(request)) is not None:  # its body failed to upload: the client's fault
            raise failure from None
        raise lost(backend, f"went away before it answered: {exc or type(exc).__name__}") from None
    async with upstream:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason,
                                      headers=returned_headers(upstream.headers))
        if upstream.content_length is not None:
            response.content_length = upstream.content_length
        try:
            await response.prepare(request)
        except ConnectionResetError:  # the client left while the recognizer decoded: nothing was sent to it
            raise failures.Failure("the client left before it had its answer", failures.CLIENT_GONE) from None
        closed = _closing(upstream)
        try:
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
                traffic.to_client(len(chunk))
            if closed is not None and closed.done() and (broken := closed.exception()) is not None:
                raise broken
        except aiohttp.ClientError as exc:
            if client_failure(request) is None:  # the recognizer's connection broke, not the client's upload
                failed(lost(backend, f"broke off its answer mid-body: {exc or type(exc).__name__}"))
            if request.transport is not None:
                request.transport.abort()
            return response
        except ConnectionError:  # a write that waited failed: the client left, or took in nothing (the caller reports it)
            if not_reading(request) is None:
                raise
            return response
        finally:
            if closed is not None and closed.done() and not closed.cancelled():
                closed.exception()  # retrieved, whatever ended the relay (else asyncio logs it as never retrieved)
        await response.write_eof()
    return response


def _gone(request: web.Request) -> failures.Failure:
    """Why a relayed request ends whose client left before its answer began: its body refused on the way (400), if it
    was, else :data:`GONE_UNANSWERED` (``client_gone``)."""
    failure = client_failure(request)
    return failure if failure is not None and failure.kind is not failures.CLIENT_GONE else failures.Failure(
        GONE_UNANSWERED, failures.CLIENT_GONE)


def _closing(upstream: aiohttp.ClientResponse) -> asyncio.Future[None] | None:
    """How the connection of an answer without framing (neither ``Content-Length`` nor chunked: its body ends where the
    connection closes, RFC 9112, 6.3) closes: aiohttp ends such a body at the close whether it was a FIN or a reset, so
    that a body a reset cut short read as whole, and went to the client whole-looking (its chunked end written). A reset
    makes it a cut answer, as a framed body broken off is (nginx cuts its client's answer alike). None for a framed answer."""
    framed = upstream.content_length is not None or "chunked" in upstream.headers.get("Transfer-Encoding", "").lower()
    connection = upstream.connection
    if framed or connection is None or connection.protocol is None:
        return None
    return connection.protocol.closed


def unreachable(backend: Backend, exc: BaseException) -> str:
    what = str(exc) or type(exc).__name__
    return f"no recognizer of {backend.locale} answers ({backend.namespace}/{backend.name} at {backend.url}): {what}"


# ---- WebSocket ------------------------------------------------------------------------------------
def offered_protocols(request: web.Request) -> tuple[str, ...]:
    raw = request.headers.get("Sec-WebSocket-Protocol", "")
    return tuple(p.strip() for p in raw.split(",") if p.strip())


#: Largest message a refused WebSocket is read for (a Speech SDK's first messages are a few KiB: ``speech.config``,
#: ``speech.context``, an audio chunk); a larger one ends the refusal (aiohttp closes it 1009).
REFUSED_MESSAGE_BYTES = 64 * 1024


async def refuse(request: web.Request, failure: failures.Failure, protocols: tuple[str, ...] = (),
                 close_wait: float = CLOSE_REPLY_SECONDS, *, usp: bool = False, refusals: usp_refusal.Waiting) -> web.WebSocketResponse:
    """Accept, then close with the failure's code and reason (a close before the handshake would
    lose the reason: the client would see a bare HTTP error); the client's close is awaited ``close_wait`` seconds
    (0: a connection past the cap, whose close lingers, what follows it dropped).

    ``usp`` (the Speech SDK's route): answered as the recognizer answers its own refusals
    (:func:`speech_recognizer.usp.refusal.answer`): once the client's request begins, a turn that fails with the
    kind's status, then the close with the kind's code on that route, counted in the gateway's ``refusals``. The
    JavaScript SDK, closed at once, failed with its own "websocket send error: Websocket not ready" and a stack trace,
    or (closed 1013 once its request began) connected again and waited for ever. Another route's refusal (/vosk) is
    closed at once, counted in ``refusals`` too until its close ends: the gateway's drain waits for both
    (:attr:`~speech_operator.gateway_shutdown.Shutdown.refusals`), or aiohttp's shutdown would drop the close reply."""
    ws = web.WebSocketResponse(protocols=protocols, compress=False, autoping=False, timeout=close_wait,
                               max_msg_size=REFUSED_MESSAGE_BYTES)
    await ws.prepare(request)

    async def close(code: int, reason: str) -> None:
        if close_wait <= 0:
            drop_what_follows(request)
        await ws.close(code=code, message=reason.encode())

    if usp:
        await usp_refusal.answer(_messages(ws), ws.send_str, close, failure, refusals)
    else:
        with refusals.answer():
            code, reason = failures.close_args(failure)
            await close(code, reason.decode())
    return ws


async def refuse_accepted(client: web.WebSocketResponse, failure: failures.Failure, sent: list[WSMessage], *,
                          usp: bool, refusals: usp_refusal.Waiting) -> None:
    """Refuse a client accepted already (held while its locale woke), which ``sent`` these messages meanwhile: on the
    Speech SDK's route (``usp``) as :func:`refuse` does, its request found among them first; else the close."""
    if usp:
        await usp_refusal.answer(_messages(client, sent), client.send_str, lambda code, reason: _close(client, code, reason.encode()),
                                 failure, refusals)
    else:
        await _close(client, *failures.close_args(failure))


def _messages(ws: web.WebSocketResponse, sent: list[WSMessage] | None = None) -> usp_refusal.Read:
    """The client's messages as :func:`speech_recognizer.usp.refusal.answer` reads them: those it ``sent`` already,
    then what it sends (pings answered); None once it closes or breaks off."""
    pending = list(sent or ())

    async def read() -> str | bytes | None:
        while True:
            msg = pending.pop(0) if pending else await ws.receive()
            if msg.type is WSMsgType.TEXT:
                return msg.data if isinstance(msg.data, str) else bytes(msg.data).decode(errors="replace")
            if msg.type is WSMsgType.BINARY:
                return bytes(msg.data)
            if msg.type is WSMsgType.PING:
                await ws.pong(msg.data)
            elif msg.type is not WSMsgType.PONG:
                return None

    return read


class _ClientSide(web.WebSocketResponse):
    """The client's side of a relayed WebSocket, whose close for a message over its limit says why, as a recognizer's
    does, and which keeps the close code the client was sent (:func:`client_got`).

    aiohttp closes it 1009 with no reason (it calls :meth:`close` while it handles the reader's error); a recognizer
    (websockets) says ``frame with 1048577 bytes exceeds limit of 1048576 bytes``. The same words here, with the
    gateway's limit, and its setting when that is under the recognizers' (then the same message sent direct is taken)."""

    def __init__(self, max_message_bytes: int, read_ahead_bytes: int = DEFAULT_READ_AHEAD_BYTES,
                 failed: Failed | None = None, **options: Any) -> None:
        super().__init__(max_msg_size=max_message_bytes + 1, writer_limit=read_ahead_bytes, **options)  # aiohttp refuses a message of max_msg_size
        self.max_message_bytes = max_message_bytes
        #: Told of its connection's reset once its close ended with bytes unsent (:meth:`_close_transport`): the relay's
        #: (counted under its locale); None: the server's (of no locale).
        self.failed = failed
        #: Bytes of the client's messages held unrelayed before its connection is no longer read (:meth:`_post_start`).
        self.read_ahead_bytes = read_ahead_bytes
        #: The code of the close frame sent to the client (None: none reached it). aiohttp's ``close_code`` is, once
        #: the gateway closed first, the code the client answered with (aiohttp's client answers 1000 to any).
        self.sent_code: int | None = None
        #: The code of the close sent at the gateway's stop (:meth:`stop`), once sent.
        self._stopping: int | None = None
        #: Its stream's account, once relayed (:func:`_relay`): whether its client had gone (``left``: it closed, or its
        #: connection ended) when the stop resets its connection still closing after unsent bytes (its guard's).
        self.progress: Progress | None = None

    async def close(self, *, code: int = 1000, message: bytes = b"", drain: bool = True) -> bool:
        error = sys.exc_info()[1]  # aiohttp's refusal of the message, which it is handling
        if code == WSCloseCode.MESSAGE_TOO_BIG and not message and isinstance(error, WebSocketError):
            message = message_too_big(error, self.max_message_bytes).encode()
        first = not self.closed
        closed = await super().close(code=code, message=message, drain=drain)
        if first and not isinstance(self.exception(), ConnectionError):  # written (a connection gone fails the write)
            self.sent_code = code
        return closed

    async def stop(self, code: int, reason: bytes) -> None:
        """Close at the gateway's stop, its close frame written and the client's reply read within
        :data:`~speech_operator.gateway_shutdown.CLOSE_REPLY_SECONDS` in all; when that time is up with bytes still unsent
        (the close among them), the connection ends once the client took them in, or is reset once it took in none for
        ``SPEECH_GATEWAY_SEND_STALL_SECONDS`` (:meth:`HeadGuard.close_after_unsent
        <speech_operator.gateway_http_limits.HeadGuard.close_after_unsent>`), the drain waiting for it; what is left when
        the stop ends is reset (:meth:`~speech_operator.gateway_http_limits.GuardedSite.reset_unsent`). A slow reader so
        gets its last replies and the close; a close's FIN would wait behind bytes a client takes none of until the
        kernel gave the connection up (``TCP_USER_TIMEOUT``, 60 s), long past the gateway's exit."""
        self._stopping = code
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_REPLY_SECONDS):
                await _close(self, code, reason)

    def _post_start(self, request: web.BaseRequest, protocol: str | None, writer: Any) -> None:
        """aiohttp's start of the WebSocket, its queue of messages read and not yet relayed made with a bound of
        ``read_ahead_bytes``: aiohttp's own is twice its ``DEFAULT_CHUNK_SIZE`` (512 KiB), which a client streaming faster
        than its recognizer takes fills on every stream (the relay waits for the recognizer), whatever
        ``SPEECH_GATEWAY_READ_BUFFER_BYTES`` says. aiohttp takes no bound for it (its queue, compiled, lets none be set
        after), so its module's constant is the bound while it makes the queue (at once, on the loop's thread). Past the
        bound the connection is no longer read (a message always goes in whole: up to its size more)."""
        chunk = web_ws.DEFAULT_CHUNK_SIZE
        web_ws.DEFAULT_CHUNK_SIZE = max(1, self.read_ahead_bytes // 2)  # the queue's bound is twice it
        try:
            super()._post_start(request, protocol, writer)
        finally:
            web_ws.DEFAULT_CHUNK_SIZE = chunk

    def _left(self) -> bool:
        """Whether its client had gone (:attr:`progress`'s ``left``)."""
        return self.progress is not None and self.progress.left

    def _close_transport(self) -> None:
        """aiohttp's end of the connection once its close ended (the reply read, not come in time, or the write failed):
        bytes still unsent, the connection ends after them, or is reset once its client takes none of them in
        (:meth:`HeadGuard.close_after_unsent <speech_operator.gateway_http_limits.HeadGuard.close_after_unsent>`): its FIN
        would wait behind them until the kernel gave the connection up. The close's code is what the client got, its reply
        come or not (at the stop, :meth:`stop`'s, though it may still wait among those bytes)."""
        transport = self._req.transport if self._req is not None else None
        if self._stopping is not None and self.sent_code is None:
            self.sent_code = self._stopping
        guard = transport.get_protocol() if transport is not None else None
        if isinstance(guard, HeadGuard) and guard.close_after_unsent(self.failed, self._left):  # bytes wait for a client not reading yet
            return
        super()._close_transport()


def client_got(response: web.StreamResponse) -> int:
    """What the client of a relayed WebSocket got, for ``speech_gateway_requests_total{code}``: the code of the close
    the gateway sent it (the client's own, echoed, when it closed first), else (it left without one) aiohttp's close
    code (1006); the HTTP status of a refused upgrade."""
    if isinstance(response, _ClientSide) and response.sent_code is not None:
        return response.sent_code
    if isinstance(response, web.WebSocketResponse) and response.close_code is not None:
        return response.close_code
    return response.status


def message_too_big(error: WebSocketError, limit: int) -> str:
    """The reason of a close 1009 for a message over ``limit`` bytes (``error``: aiohttp's, which says the message's size)."""
    said = re.search(r"Message size (\d+)", str(error))
    reason = f"frame {f'with {said[1]} bytes ' if said else ''}exceeds limit of {limit} bytes"
    return reason if limit >= MAX_MESSAGE_BYTES else f"{reason} (SPEECH_GATEWAY_MAX_MESSAGE_BYTES)"


def accepting(protocol: str | None, max_message_bytes: int = MAX_MESSAGE_BYTES,
              read_ahead_bytes: int = DEFAULT_READ_AHEAD_BYTES, failed: Failed | None = None) -> web.WebSocketResponse:
    """The client's side of a relayed WebSocket (``protocol``: the subprotocol to select, if offered), taking messages of
    up to ``max_message_bytes`` (aiohttp holds each one whole before the relay sends it on; a larger one is closed 1009
    with the reason: :class:`_ClientSide`), and holding at most ``read_ahead_bytes`` of them read and not yet relayed
    (``SPEECH_GATEWAY_READ_BUFFER_BYTES``), and as much unsent to the client; its close reply, once the gateway closed
    it, is read for up to :data:`~speech_operator.gateway_shutdown.CLOSE_REPLY_SECONDS`; ``failed``: told of a reset of
    its connection once the relay is done with it (its close's last bytes not taken in: :meth:`_ClientSide._close_transport`)."""
    return _ClientSide(max_message_bytes, read_ahead_bytes, failed, protocols=(protocol,) if protocol else (), autoclose=False, autoping=False,
                       compress=False, decode_text=False, timeout=CLOSE_REPLY_SECONDS)


#: Bytes of a refused upgrade's body (the recognizer's reason) the gateway reads and passes on; the rest is dropped.
REFUSAL_MAX_BYTES = 4096
#: Seconds the gateway waits for a refused upgrade's body once its head has come (a recognizer sends both at once).
REFUSAL_READ_SECONDS = 2.0


class RefusedUpgrade(Exception):
    """A recognizer answered a WebSocket upgrade with another status than 101: what the client gets in its place."""

    def __init__(self, status: int, reason: str | None, headers: CIMultiDict[str], body: bytes) -> None:
        super().__init__(f"HTTP {status}")
        self.status, self.reason, self.headers, self.body = status, reason, headers, body

    def response(self) -> web.Response:
        """The refusal as the client gets it: the recognizer's status, body and headers (:func:`returned_headers`)."""
        return web.Response(status=self.status, reason=self.reason, body=self.body, headers=self.headers)

    def close_args(self, backend: Backend) -> tuple[int, bytes]:
        """The close of a client accepted already (held while its locale woke): the code of the kind answered with its
        status, and its reason (:func:`~speech_operator.gateway_failures.refusal_close`: 1008 for a key, 1007 a bad
        request, 1013 a busy recognizer, with its ``Retry-After``, ...); the gateway's words, naming the status, when
        the recognizer gave none."""
        said = self.said() or f"the recognizer of {backend.locale} refused the connection: HTTP {self.status}"
        return failures.refusal_close(self.status, said, self.headers.get("Retry-After"))

    def said(self) -> str:
        """The refusal's reason: its body on one line, or the ``message`` of a body in the recognizer's JSON error shape
        (``{"error": {"code", "message"}}``: what it refuses before any route, such as a head over its bounds, 431)."""
        text = self.body.decode(errors="replace")
        with contextlib.suppress(ValueError, TypeError, KeyError):  # not JSON, or not in that shape: the text as it came
            message = json.loads(text)["error"]["message"]
            text = message if isinstance(message, str) else text
        return one_line(text)


#: The kind of failure a recognizer's 101 names (:data:`~speech_recognizer.errors.FAILURE_HEADER`): a stream it accepted
#: only to close it at once (a drain, its ``MaxConnections``), None for one it serves. Set by :func:`read_refusals`, in
#: the task of the ``ws_connect`` that made the request (aiohttp gives no other public way to a WebSocket's 101).
ACCEPTED_TO_CLOSE: ContextVar[str | None] = ContextVar("accepted_to_close", default=None)


async def read_refusals(request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType) -> aiohttp.ClientResponse:
    """The relay session's middleware: a WebSocket upgrade the recognizer answers with another status than 101 raises
    :class:`RefusedUpgrade`, its body read first (at most :data:`REFUSAL_MAX_BYTES`, for at most
    :data:`REFUSAL_READ_SECONDS`: a huge or endless body neither holds nor grows the gateway), and its connection
    closed (a 101 that names a failure: :data:`ACCEPTED_TO_CLOSE`). ``ws_connect`` would raise :class:`aiohttp.WSServerHandshakeError`, the body unread and lost: aiohttp has no
    other public way to it. Other requests pass untouched (a relayed REST request carries no ``Upgrade``).

    A body with no framing (neither ``Content-Length`` nor chunked: it ends where the connection closes) is not read:
    ``ws_connect`` asks aiohttp's parser not to read a body to the close, which then drops its bytes (only aiohttp's
    private connection protocol could say otherwise). Such a refusal reaches the client with its status and headers and
    no body (held: the gateway's words naming the status). A recognizer frames every refusal (uvicorn's denial
    responses and :func:`~speech_recognizer.errors.http_response_bytes` both carry ``Content-Length``)."""
    response = await handler(request)
    if request.headers.get("Upgrade", "").lower() != "websocket":
        return response
    if response.status == 101:
        ACCEPTED_TO_CLOSE.set(response.headers.get(FAILURE_HEADER))
        return response
    body = b""
    try:
        async with asyncio.timeout(REFUSAL_READ_SECONDS):
            while len(body) < REFUSAL_MAX_BYTES and (chunk := await response.content.read(REFUSAL_MAX_BYTES - len(body))):
                body += chunk
    except (TimeoutError, aiohttp.ClientError):
        pass  # what came is the reason: a cut body, or none
    finally:
        response.close()
    headers = returned_headers(response.headers)
    headers.popall("Content-Length", None)  # the body passed on may be cut: the gateway frames it
    raise RefusedUpgrade(response.status, response.reason, headers, body)


async def connect_upstream(request: web.Request, backend: Backend, session: aiohttp.ClientSession,
                           protocols: tuple[str, ...], trusted: tuple[Network, ...],
                           read_ahead_bytes: int = DEFAULT_READ_AHEAD_BYTES) -> aiohttp.ClientWebSocketResponse[Literal[False]]:
    """The recognizer's side: the client's path, query and headers (:func:`forwarded_headers`, ``trusted`` the
    gateway's trusted proxies), offering ``protocols``; at most ``read_ahead_bytes`` of the client's messages wait unsent
    to the recognizer before the relay waits for it (:func:`_bound_writes`).

    Raises :class:`RefusedUpgrade` when the recognizer refuses the upgrade (``session`` reads refusals:
    :func:`read_refusals`), and :class:`~speech_operator.gateway_failures.Failure` when it cannot be reached or
    answers 101 with a broken handshake.
    """
    url, headers = upstream_request(request, backend, trusted, websocket=True)
    ACCEPTED_TO_CLOSE.set(None)
    try:
        return _bound_writes(await session.ws_connect(
            url, protocols=protocols, headers=headers, autoclose=False, autoping=False,
            compress=0, max_msg_size=0, decode_text=False,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=None)), read_ahead_bytes)  # closed by _close_within
    except aiohttp.WSServerHandshakeError as exc:  # a 101 that is no WebSocket's (a refusal is RefusedUpgrade)
        raise failures.Failure(f"the recognizer of {backend.locale} ({backend.namespace}/{backend.name}) answered the "
                               f"upgrade with a broken handshake: {exc.message}", failures.UNAVAILABLE) from None
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise failures.Failure(unreachable(backend, exc), failures.UNAVAILABLE) from None


def _bound_writes(upstream: aiohttp.ClientWebSocketResponse[Literal[False]],
                  limit: int) -> aiohttp.ClientWebSocketResponse[Literal[False]]:
    """``upstream`` with at most about ``limit`` bytes waiting unsent before a send waits for the recognizer: aiohttp's
    client writer waits only once it wrote 256 KiB (its ``DEFAULT_CHUNK_SIZE``; ``ws_connect`` takes no ``writer_limit``)
    and its transport only past 64 KiB unsent, so a recognizer behind its client held that much of every stream."""
    writer = upstream._writer
    writer._limit = limit
    writer.transport.set_write_buffer_limits(high=limit)
    return upstream


async def relay_websocket(request: web.Request, backend: Backend, session: aiohttp.ClientSession,
                          traffic: Traffic, progress: Progress, max_message_bytes: int = MAX_MESSAGE_BYTES, *,
                          trusted: tuple[Network, ...], failed: Failed, read_ahead_bytes: int = DEFAULT_READ_AHEAD_BYTES,
                          connected: Connected = _unheard, answered: Answered = _unanswered) -> web.StreamResponse:
    """Relay one WebSocket between the client and ``backend`` until either side closes, or until the
    gateway stops and ``progress`` says it is idle (then both sides are closed with 1000) or out of time; ``connected``
    is called with the status the recognizer answered the upgrade with (101: accepted) and the kind its refusal names
    (:data:`Connected`), once the client has it; ``answered`` with the recognizer's messages, or its close, until it knows
    how the recognizer answers the stream (:data:`Answered`).

    The recognizer is connected first, so that its refusal of the upgrade (401, 403) refuses the
    client alike. Returns the response the client got: the accepted WebSocket (its ``close_code``
    says how it ended), or that refusal. Raises :class:`~speech_operator.gateway_failures.Failure`
    when the recognizer cannot be reached; a recognizer lost mid-stream is ``failed``.
    """
    try:
        upstream = await connect_upstream(request, backend, session, offered_protocols(request), trusted, read_ahead_bytes)
    except RefusedUpgrade as refused:  # the recognizer refused the upgrade: the client is refused alike
        connected(refused.status, refused.headers.get(FAILURE_HEADER))
        return refused.response()
    client = accepting(upstream.protocol, max_message_bytes, read_ahead_bytes, failed)
    try:
        await client.prepare(request)
    except BaseException:
        progress.leave()
        await _close_within(upstream, 1001, b"the client left during the handshake", backend, failed,
                            bound=_stall_seconds(request), progress=progress)
        raise
    connected(101, ACCEPTED_TO_CLOSE.get())
    await _relay(client, upstream, backend, traffic, progress, failed, request, answered)
    return client


async def relay_accepted(client: web.WebSocketResponse, request: web.Request, backend: Backend,
                         session: aiohttp.ClientSession, traffic: Traffic, progress: Progress, sent: list[WSMessage], *,
                         trusted: tuple[Network, ...], failed: Failed, usp: bool = False,
                         refusals: usp_refusal.Waiting, connected: Connected = _unheard,
                         answered: Answered = _unanswered) -> None:
    """Relay a WebSocket the gateway accepted before the recognizer was there (held while its
    locale woke): what the client ``sent`` meanwhile goes first, in order. A refusal of the upgrade
    closes the client with the close code of its status and the recognizer's reason (:meth:`RefusedUpgrade.close_args`),
    one INFO line: the recognizer's answer, not the gateway's failure (a recognizer that cannot be reached, or is lost,
    is ``failed``; one that cannot be reached is answered as the gateway refuses, :func:`refuse_accepted`, ``usp``: on
    the Speech SDK's route). ``connected``, ``answered``: as :func:`relay_websocket`'s."""
    protocols = (client.ws_protocol,) if client.ws_protocol else ()
    try:
        upstream = await connect_upstream(request, backend, session, protocols, trusted,
                                          client.read_ahead_bytes if isinstance(client, _ClientSide) else DEFAULT_READ_AHEAD_BYTES)
    except RefusedUpgrade as refused:
        connected(refused.status, refused.headers.get(FAILURE_HEADER))
        code, reason = refused.close_args(backend)
        log.info("the recognizer of %s refused a held stream's upgrade: HTTP %d; closed %d %s", backend.locale,
                 refused.status, code, reason.decode(errors="replace"))
        await _close(client, code, reason)
        return
    except failures.Failure as failure:
        failed(failure)
        await refuse_accepted(client, failure, sent, usp=usp, refusals=refusals)
        return
    connected(101, ACCEPTED_TO_CLOSE.get())
    try:
        for msg in sent:
            progress.from_client(msg.data, msg.type is WSMsgType.BINARY)
            await upstream.send_frame(msg.data, msg.type)
            traffic.to_recognizer(len(msg.data))
    except Exception as exc:  # noqa: BLE001 - the recognizer went away at once
        gone = lost(backend, f"went away: {exc or type(exc).__name__}")
        failed(gone)
        await _close_within(upstream, 1001, b"", backend, failed, bound=_stall_seconds(request), progress=progress)
        await _close(client, *failures.close_args(gone))
        return
    await _relay(client, upstream, backend, traffic, progress, failed, request, answered)


Socket = web.WebSocketResponse[Any] | aiohttp.ClientWebSocketResponse[Any]  # text as str or as bytes (decode_text=False)


#: The most a WebSocket frame's head adds to its message on the wire (a 64-bit length and a client's mask).
FRAME_HEAD_MAX_BYTES = 14


class _Sends:
    """How a pump's sends go: how many began, whether one is waiting, and ``may_wait``, set when one began that may
    wait for its peer (:func:`_may_wait`), which :func:`_while_sends_wait` waits for: a relay idle, or sending to a
    recognizer that reads, wakes nothing. ``transport``: the connection sent on (None: every send may wait)."""

    def __init__(self, transport: asyncio.BaseTransport | None = None) -> None:
        self.began = 0
        self.waiting = False
        self.may_wait = asyncio.Event()
        self._transport = transport

    def begin(self, size: int) -> None:
        """A send of a message of ``size`` bytes begins."""
        self.began += 1
        self.waiting = True
        if _may_wait(self._transport, size):
            self.may_wait.set()


def _may_wait(transport: asyncio.BaseTransport | None, size: int) -> bool:
    """Whether a send of a message of ``size`` bytes on ``transport`` may wait for its peer to read. aiohttp's send waits
    only while the event loop has paused the transport's writer, which it does once more than the transport's high-water
    mark waits unsent after a write, and undoes once no more than its low-water mark does (asyncio's flow control): so a
    send that leaves no more than the high-water mark unsent, on a transport with no more than the low-water mark unsent
    before it, never waits."""
    if not isinstance(transport, asyncio.WriteTransport):
        return True
    low, high = transport.get_write_buffer_limits()
    unsent = transport.get_write_buffer_size()
    return unsent > low or unsent + size + FRAME_HEAD_MAX_BYTES > high


class _Stalled:
    """How long a recognizer has taken in none of what waits unsent to it (:class:`~speech_recognizer.connection_cap.Intake`:
    bytes taken in restart the clock) and sent nothing (:func:`~speech_recognizer.connection_cap.received_bytes`: bytes
    that came restart it too; a stopped process sends nothing, its kernel only acknowledges), from looks now and then on
    ``transport``, the connection to it. One clock a stream, from a send that waits on through its close
    (:func:`_close_within`): a recognizer stuck before the close is judged from when it stuck, not from the close."""

    def __init__(self, transport: asyncio.WriteTransport) -> None:
        self.transport = transport
        self._intake: Intake | None = None
        self._heard: int | None = None

    def look(self, now: float, *, held: bool = False) -> float:
        """Seconds it has taken in nothing and sent nothing at ``now`` (0 at the first look since :meth:`restart`). While
        the gateway has not read all it sent (bytes of it wait unread in the connection's receive queue), or ``held``
        (the relay's send of its replies to the client waits: its client takes in none of them), it may be waiting on
        its own sends: the clock restarts."""
        unsent = unsent_bytes(self.transport)
        said = received_bytes(self.transport)
        if self._intake is None or held or unread_bytes(self.transport):
            self._intake = Intake(unsent, now)
        stalled = self._intake.look(unsent, now)
        if said is not None and self._heard is not None and said > self._heard:
            stalled = self._intake.heard(now)  # it still answers the stream: decoding what it read ahead, not stuck
        self._heard = said
        return stalled

    @property
    def unsent(self) -> int:
        """Bytes waiting unsent to it at the last look."""
        return self._intake.unsent if self._intake is not None else 0

    def restart(self) -> None:
        """No send waits for it (nothing it could be behind on): the clock restarts at the next look."""
        self._intake = None


def stuck(backend: Backend, unsent: int, stalled: float, bound: float, what: str = "the stream's") -> Failure:
    """``backend_not_reading``: ``backend``'s recognizer took in none of ``unsent`` bytes and sent nothing for ``stalled``
    seconds, over ``bound`` (``SPEECH_GATEWAY_SEND_STALL_SECONDS``); its connection was reset."""
    return Failure(f"the recognizer of {backend.locale} ({backend.namespace}/{backend.name}) took in none of {what} "
                   f"{unsent} bytes waiting unsent to it and sent nothing for {stalled:.1f} s (over {bound:g} s, "
                   "SPEECH_GATEWAY_SEND_STALL_SECONDS): its connection was reset", failures.BACKEND_NOT_READING)


async def _pump(src: Socket, dst: Socket, count: Callable[[int], None],
                seen: Callable[[bytes, bool], None], sends: _Sends | None = None, *,
                seen_when_read: bool = False) -> tuple[int, bytes] | None:
    """Copy frames from ``src`` to ``dst`` until ``src`` closes: its close code and reason, or
    ``None`` when its connection was lost without a close. A failed send raises. Each message
    relayed is counted (its size) and ``seen`` (its bytes, whether binary) once sent, or ``seen_when_read`` as soon as
    read (a client's audio is a stream in progress from then on, its send to a busy recognizer waiting or not);
    ``sends``, told of each send."""
    sends = sends or _Sends()
    while True:
        msg = await src.receive()
        kind = msg.type
        if kind is WSMsgType.BINARY or kind is WSMsgType.TEXT:
            if seen_when_read:
                seen(msg.data, kind is WSMsgType.BINARY)
            sends.begin(len(msg.data))
            await dst.send_frame(msg.data, kind)
            sends.waiting = False
            count(len(msg.data))
            if not seen_when_read:
                seen(msg.data, kind is WSMsgType.BINARY)
        elif kind is WSMsgType.PING:
            await dst.ping(msg.data)
        elif kind is WSMsgType.PONG:
            await dst.pong(msg.data)
        elif kind is WSMsgType.CLOSE:
            code = int(msg.data or 1000)
            return (code if code in _SENDABLE else 1000), (msg.extra or "").encode()
        else:  # CLOSING (we are closing it), CLOSED, ERROR
            return None


async def _relay(client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse[Literal[False]], backend: Backend,
                 traffic: Traffic, progress: Progress, failed: Failed, request: web.Request,
                 answered: Answered = _unanswered) -> None:
    """Relay frames both ways until one side closes (its close passed on: not the gateway's failure, whatever its code),
    the recognizer's connection breaks (``failed``: ``backend_lost``, the client closed 1011; unless the client's
    doing: :func:`_not_taking_in`), the client's connection is lost (the recognizer's closed 1001; ``failed``,
    ``not_reading``, when it was reset for taking in nothing: :func:`~speech_operator.gateway_http_limits.not_reading`),
    or the gateway stops (both closed 1000 once idle; ``failed``, ``gateway_stopped``, when its time ran out first:
    1001). ``request``: the client's upgrade; ``answered``: told the recognizer's messages until it knows, or its close before
    (:data:`Answered`)."""
    transport = request.transport
    unanswered = [answered]  # emptied once it knows
    if isinstance(client, _ClientSide):  # its guard asks whether its client had gone, at the stop's end
        client.progress = progress

    def from_recognizer(data: bytes, binary: bool) -> None:
        if unanswered and unanswered[0](None if binary else data):
            unanswered.clear()
        progress.from_recognizer(data, binary)

    told: list[Failure] = []
    stall_seconds = _stall_seconds(request)

    def client_stalled() -> None:
        """A client reset for taking in nothing (the guard's watch: ``not_reading``), told once."""
        if not told and (stalled := not_reading(request)) is not None:
            told.append(stalled)
            failed(stalled)

    async def close_client(code: int, reason: bytes) -> None:
        """Close the client's side (its close answered, or the gateway's own sent): then the client is gone, and the
        stream no longer its (:meth:`~speech_operator.gateway_shutdown.Progress.leave`), whatever its recognizer's side
        still waits for."""
        await _close(client, code, reason)
        progress.leave()

    async def close_upstream(code: int, reason: bytes) -> None:
        """Close the recognizer's side (:func:`_close_within`), a client reset for taking in nothing told first: that is
        the stream's failure, counted before its recognizer's, held back behind it, may take in none of the close either
        (``backend_not_reading``: the gateway counts one failure a stream)."""
        client_stalled()
        await _close_within(upstream, code, reason, backend=backend, failed=failed, bound=stall_seconds,
                            progress=progress, stalled=stalled)

    sends, replies = _Sends(upstream._writer.transport), _Sends()
    stalled = _Stalled(upstream._writer.transport)
    # the client's messages are seen as read: a stream whose first audio waits on a busy recognizer is in progress (seen
    # once sent, it was idle to the stop, closed 1000 "closed while idle" and its audio dropped)
    to_upstream = asyncio.ensure_future(_pump(client, upstream, traffic.to_recognizer, progress.from_client, sends,
                                              seen_when_read=True))
    to_client = asyncio.ensure_future(_pump(upstream, client, traffic.to_client, from_recognizer, replies))
    idle = asyncio.ensure_future(progress.closable())
    leaving = asyncio.ensure_future(_while_sends_wait(client, transport, sends, _Watch(stalled, replies, stall_seconds, backend)))
    try:
        done, _ = await asyncio.wait({to_upstream, to_client, idle, leaving}, return_when=asyncio.FIRST_COMPLETED)
        if leaving in done and isinstance(said := leaving.result(), Failure):  # the recognizer stuck: backend_not_reading
            client_stalled()
            failed(said)
            reset(upstream._writer.transport)
            await _stopped(to_upstream)
            await _close(client, *failures.close_args(said))
        elif leaving in done:  # its close (or its end) came while a send to a recognizer taking nothing in waited
            await _stopped(to_upstream)
            code, reason = said if isinstance(said, tuple) else (1001, b"the client went away")
            log.debug("a client of %s closed while its recognizer took in none of its stream: closed %d", backend.locale, code)
            await asyncio.gather(close_client(code, reason), close_upstream(code, reason))
        elif to_client in done:
            try:
                closed = to_client.result()
            except Exception as exc:  # noqa: BLE001 - the send to the client failed: it is gone (or was reset: not_reading)
                if not_reading(request) is None:
                    log.debug("a client of %s left mid-stream: %r", backend.locale, exc)
                progress.leave()
                await close_upstream(1001, b"the client went away")
            else:
                if closed is not None:
                    if unanswered:  # closed before it told: the stream was refused once accepted, or let go idle
                        unanswered.pop()(closed)
                    await _stopped(to_upstream)  # the client's close reply is its close's to read (_stopped)
                    await asyncio.gather(_close(client, *closed), close_upstream(*closed))
                elif not _not_taking_in(transport, backend):
                    gone = lost(backend, "went away mid-stream without closing: its pod stopped or failed")
                    failed(gone)
                    await _stopped(to_upstream)
                    await _close(client, *failures.close_args(gone))
        elif to_upstream in done:
            try:
                closed = to_upstream.result()
            except Exception as exc:  # noqa: BLE001 - the send upstream failed: the recognizer is gone
                if not _not_taking_in(transport, backend):
                    gone = lost(backend, f"went away mid-stream: {exc or type(exc).__name__}")
                    failed(gone)
                    await _close(client, *failures.close_args(gone))
            else:
                if closed is None:
                    progress.leave()
                    await close_upstream(1001, b"the client went away")
                else:
                    await asyncio.gather(close_upstream(*closed), close_client(*closed))
        else:  # the gateway stops: idle (1000, the client connects again, to another gateway), or out of time
            closed = idle.result()
            if closed == failures.close_args(STOPPED_MIDSTREAM):  # a stream cut: the failure table's gateway_stopped
                failed(STOPPED_MIDSTREAM)
            else:
                log.debug("a relayed WebSocket of %s closed while idle as the gateway stops", backend.locale)
            await _stopped(to_upstream)
            stopping = client.stop(*closed) if isinstance(client, _ClientSide) else _close(client, *closed)
            await asyncio.gather(stopping, close_upstream(*closed))
    finally:
        idle.cancel()
        leaving.cancel()
        for pump in (to_upstream, to_client):
            if not pump.done():
                with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError, Exception):
                    await asyncio.wait_for(pump, 1)
            if not pump.done():
                pump.cancel()
        await asyncio.gather(to_upstream, to_client, idle, leaving, return_exceptions=True)
        await asyncio.gather(close_upstream(1001, b""), _close(client, 1001, b""), return_exceptions=True)
        client_stalled()


#: How often a relay whose send to its recognizer waits looks whether its client closed meanwhile, and whether its
#: recognizer is stuck (:func:`_while_sends_wait`).
CLOSING_POLL_SECONDS = 0.5


@dataclass(frozen=True)
class _Watch:
    """What :func:`_while_sends_wait` judges a recognizer by: its ``stalled`` clock, the relay's sends of its ``replies``
    to the client (while one waits, the gateway reads none of the recognizer's), ``bound``
    (``SPEECH_GATEWAY_SEND_STALL_SECONDS``) and its ``backend``."""

    stalled: _Stalled
    replies: _Sends
    bound: float
    backend: Backend


async def _while_sends_wait(client: web.WebSocketResponse, transport: asyncio.Transport | None, sends: _Sends,
                            watch: _Watch) -> tuple[int, bytes] | None | Failure:
    """Looks, every :data:`CLOSING_POLL_SECONDS` while a send of the stream to the recognizer waits, at both ends: returns
    the recognizer's failure, ``backend_not_reading``, once it has taken in none of what waits unsent to it and sent
    nothing for ``watch.bound`` (``SPEECH_GATEWAY_SEND_STALL_SECONDS``, the bound on a client taking in none of its
    replies: :class:`_Stalled`; not while the gateway reads none of its replies, its client taking in none of them, when
    it may wait on its own sends); or the client's close, once it closed while one send waited for a whole look (its
    close (code, reason) if it is among its messages read and not yet relayed, None if its connection ended: its FIN or
    reset, in the TCP state, or read by the event loop, which then closed the connection: aiohttp's ``eof_received`` asks
    it to). The relay would see that close only once the recognizer took the messages before it in, or never: the
    connection held its place under the cap meanwhile, and the client waited for its close reply.

    A stuck recognizer (a stopped process) is so found while its client still streams, or closed behind audio still
    unsent (its close not read: below), where nothing else would end the stream: the relay resets the recognizer's
    connection and closes the client with the failure's code and reason; and a close that comes before the bound keeps
    the clock (:func:`_close_within` goes on with it): the recognizer gets the bound from when it stopped taking in,
    not that and the bound again from the close.

    A recognizer still reading, however slowly, is cut at the client's close: what the client sent before its close
    and the relay still holds is dropped, and the relay's close of the recognizer's side resets it if it takes in none
    of the rest and sends nothing for ``SPEECH_GATEWAY_SEND_STALL_SECONDS``, or has not taken it all in that long after
    the close (:func:`_close_within`). Nothing is lost to the client: once it closed it takes no more results (RFC 6455
    5.5.1 asks for its close reply as soon as practical; a browser drops what comes after its close), and a recognizer
    that reads the client's close behind audio it has not decoded drops that audio itself (:mod:`speech_recognizer.inbox`):
    relayed, it would be read to be dropped, the decoder held meanwhile. Sends that each end within
    :data:`CLOSING_POLL_SECONDS` go on as they are: the close comes after them. It looks only while a send that may wait
    (``sends.may_wait``) has not ended: an idle relay's wakes nothing.

    A close behind more than ``SPEECH_GATEWAY_READ_BUFFER_BYTES`` of the client's messages is not read (the bound on
    what the gateway holds): only its end of the connection is seen then."""
    loop = asyncio.get_running_loop()
    while True:
        await sends.may_wait.wait()
        sends.may_wait.clear()
        send = sends.began
        watch.stalled.look(loop.time(), held=watch.replies.waiting)  # the clock from the send that may wait on
        while True:
            await asyncio.sleep(CLOSING_POLL_SECONDS)
            if not sends.waiting or sends.began != send:
                watch.stalled.restart()  # it took the send in
                break  # it went on: until a send may wait again
            if (stalled := watch.stalled.look(loop.time(), held=watch.replies.waiting)) >= watch.bound:
                return stuck(watch.backend, watch.stalled.unsent, stalled, watch.bound)
            if (close := _close_read(client)) is not None:
                return close
            if transport is None or transport.is_closing() or peer_gone(transport):
                return None


def _close_read(client: web.WebSocketResponse) -> tuple[int, bytes] | None:
    """The client's close, if aiohttp has read it and it waits behind messages not yet relayed (aiohttp's queue of
    messages read, ``_reader._buffer``: there is no public way to it)."""
    queue = getattr(client, "_reader", None)
    for msg, _ in getattr(queue, "_buffer", ()):
        if msg.type is WSMsgType.CLOSE:
            code = int(msg.data or 1000)
            return (code if code in _SENDABLE else 1000), (msg.extra or "").encode()
    return None


#: How often :func:`_close_within` looks at what still waits unsent to a recognizer it closes.
CLOSE_LOOK_SECONDS = 0.05


async def _close_within(upstream: aiohttp.ClientWebSocketResponse[Any], code: int, reason: bytes, backend: Backend,
                        failed: Failed, *, bound: float = STALL_SECONDS, progress: Progress | None = None,
                        stalled: _Stalled | None = None) -> None:
    """Close the recognizer's side (:func:`_close`) with a close handshake: its close reply read, then the end of the
    connection; looked at every :data:`CLOSE_LOOK_SECONDS`. A close frame to a recognizer that takes nothing in waits
    for it to, for ever, and aiohttp's close of it would leave what waits unsent and a FIN behind them to the kernel,
    which keeps them (FIN-WAIT-1) until it gives the connection up, minutes against a shut window.

    A recognizer busy decoding takes in nothing for seconds once its read-ahead is full (on the /vosk route, its
    temporary files' too: :data:`~speech_recognizer.scratch.SPILL_BYTES`): it reads its socket again only once it handled
    the messages of its last read (uvicorn's, up to 256 KiB), and it may say nothing meanwhile (the Speech SDK's route in a
    long silence; one reply per message decoded), so a second, or any time short of the bound a healthy one always
    meets, cannot tell it from a stuck one. It gets up to ``bound`` (the gateway's bound on a peer taking in none of its
    sends, ``SPEECH_GATEWAY_SEND_STALL_SECONDS``, the live relay's on the recognizer too, :func:`_while_sends_wait`: the
    recognizers' own ``AudioIdleSeconds`` default), and its close comes once it reads there: it reads a stream's audio
    at its decoding's pace once its read-ahead (:data:`~speech_recognizer.inbox.READ_AHEAD_BYTES`) is full, a client that
    sent a file faster than real time and left included. One that took in none of what waits unsent and sent nothing
    (``stalled``: the stream's clock, kept from the live relay when its send waited, else begun at the close) for that
    long is stuck (a stopped process), one that has not taken them all in ``bound`` after the close decodes slower than
    the audio came (what waits unsent is at most the relay's buffers and one message, a few seconds of audio with the
    defaults): its connection is reset, ``failed`` told (``backend_not_reading``, of ``backend``'s locale, which pages; a
    client that takes in nothing is ``not_reading``). Not reset sooner and left uncounted (or of a kind that pages nobody):
    that would give a busy recognizer its decoder back sooner (at a reset it drops what it read ahead,
    :mod:`speech_recognizer.inbox`; waited on, it decodes about as much audio as waited unsent before the end of the
    connection reaches it) but count a stuck one whose clients all leave within the bound nowhere.

    Once nothing waits unsent (its kernel has the close), its close reply is awaited up to ``bound`` from the close, what
    it says meanwhile read and dropped: a busy one reads the close only once it handled its last read. Ended sooner, the
    connection lost the close: the gateway's socket, holding replies unread, reset it, and the recognizer's kernel
    dropped the close unread (to the recognizer, a client gone without one). One that has not answered within ``bound``
    (its kernel takes what its process no longer reads: stuck) has its connection ended then, ``failed`` told
    (``backend_close_unanswered``, which pages: an operator sees a stuck recognizer its clients all left).

    The gateway's stop (``progress.shutdown``) holds for it no longer than CLOSE_REPLY_SECONDS from the close once the
    stop began and it has taken in nothing and said nothing for as long, nor past its time (``over``): a recognizer left
    so by a client that was done held the stop up to ``shutdown_seconds``. With bytes still unsent then it is reset; it
    is not known stuck: the stop's failure (``gateway_stopped``) when the stop closed the stream, and its client's
    (``client_gone``, the failure table's DEBUG line, no alert) when that client had gone (``progress.left``: it closed, or
    its connection ended), the stop cutting only what a gone client left to the recognizer; else its connection ends. aiohttp's own wait for the reply is unbounded
    (:func:`connect_upstream`): its bound, ended, would close the connection, and what the kernel still held unsent could
    no longer be looked at."""
    transport = upstream._writer.transport  # aiohttp's close lets go of the connection's own reference
    loop = asyncio.get_running_loop()
    began = loop.time()
    stalled = stalled or _Stalled(transport)
    stalled.look(began)
    closing = asyncio.ensure_future(_close(upstream, code, reason))
    failure: Failure | None = None
    try:
        while True:
            await asyncio.wait((closing,), timeout=CLOSE_LOOK_SECONDS)
            now = loop.time()
            idle = stalled.look(now)
            unsent = stalled.unsent
            if not unsent and closing.done():
                return
            if now - began < CLOSE_REPLY_SECONDS:
                continue
            # the stop holds for it no longer: out of time, or begun and it has taken in nothing and said nothing since
            shutdown = progress.shutdown if progress is not None else None
            stopping = shutdown is not None and (shutdown.over.is_set() or shutdown.begun.is_set() and idle >= CLOSE_REPLY_SECONDS)
            where = f"the recognizer of {backend.locale} ({backend.namespace}/{backend.name})"
            if not unsent:  # it has the close, unread yet (busy decoding) or never to be read (stuck)
                if stopping:  # the stop's bound, not its: it is not known stuck
                    log.debug("%s had not answered the stream's close %.1f s after it: its connection ended", where, now - began)
                    return
                if now - began >= bound:  # a busy one reads the close once it decoded what it read ahead, well within
                    failed(Failure(f"{where} had taken in the whole stream and its close and not answered that close "
                                   f"{now - began:.1f} s after it (over {bound:g} s, SPEECH_GATEWAY_SEND_STALL_SECONDS): "
                                   "its connection was ended", failures.CLOSE_UNANSWERED))
                    return
                continue
            if idle >= bound:
                failure = stuck(backend, unsent, idle, bound, "the stream's last")
            elif stopping and progress is not None and progress.left:  # what a gone client left: not the stop's failure
                failure = Failure(f"the client had left; the gateway stopped before {where} took in the stream's last "
                                  f"{unsent} bytes (its close behind them): its connection was reset", failures.CLIENT_GONE)
            elif stopping:
                failure = Failure(f"the gateway stopped before {where} took in the stream's last {unsent} bytes (its "
                                  "close behind them): its connection was reset", failures.STOPPED)
            elif now - began >= bound:
                failure = Failure(f"{where} had still not taken in the stream's last {unsent} bytes (its close behind "
                                  f"them) {bound:g} s after the close, taking them in slower than the audio came: its "
                                  "connection was reset", failures.BACKEND_NOT_READING)
            if failure is not None:
                return
    finally:
        if failure is not None:  # reset before the close is cancelled: aiohttp's close of it would close the socket
            failed(failure)
            reset(transport)
        closing.cancel()
        await asyncio.gather(closing, return_exceptions=True)


def _stall_seconds(request: web.BaseRequest) -> float:
    """``SPEECH_GATEWAY_SEND_STALL_SECONDS`` as the guard of ``request``'s connection has it (its default without one)."""
    guard = request.transport.get_protocol() if request.transport is not None else None
    return guard.stall_seconds if isinstance(guard, HeadGuard) else STALL_SECONDS


def _not_taking_in(transport: asyncio.Transport | None, backend: Backend) -> bool:
    """Whether the recognizer's connection broke because the client takes in nothing: what the gateway sent it waits
    unsent (its window shut), so the gateway read no more of the recognizer's replies, and the recognizer reset a
    stream whose replies were not taken in for its ``AudioIdleSeconds`` (its ``not_reading``, which it counts). That
    is no failure of the recognizer's (no ``backend_lost``, whose alert is a fault's): the client's connection is reset
    too (nothing more can reach it, a close neither; the kernel would have kept it 60 s), one DEBUG line."""
    if transport is None or transport.is_closing() or not unsent_bytes(transport):
        return False
    log.debug("a client of %s took in none of its stream's replies (%d bytes unsent): its recognizer reset the stream, "
              "and the gateway its connection", backend.locale, unsent_bytes(transport))
    reset(transport)
    return True


async def _stopped(pump: asyncio.Future[Any]) -> None:
    """Stop ``pump`` before the side it reads is closed: aiohttp's ``close`` of a socket another task receives on drops
    its connection as soon as its close frame is written, without reading the peer's close reply (RFC 6455 5.5.1);
    stopped, that ``close`` reads it (the client's side: for up to
    :data:`~speech_operator.gateway_shutdown.CLOSE_REPLY_SECONDS`). The Speech SDK for JavaScript (the ``ws`` package)
    told a close and the end of the connection at once, before the audio it is about to send, reports that close to no
    one: its recognition waited for its own time out. A frame the pump had read is sent on whole first (a send
    only waits once its frame is written)."""
    pump.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await pump


async def _close(ws: Socket, code: int, reason: bytes) -> None:
    """Close ``ws`` with ``code`` and ``reason`` (cut to fit a close frame); quiet when it is gone already."""
    reason = close_reason(reason.decode(errors="replace")).encode()
    with contextlib.suppress(Exception):
        await ws.close(code=code, message=reason)
