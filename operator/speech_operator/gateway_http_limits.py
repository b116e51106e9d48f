"""Limits on request heads at the gateway: the size and the time of each, which aiohttp's server lacks.

aiohttp's server keeps a connection that sends nothing, or sends its request head a byte at a time,
for its keep-alive timeout (an hour unless told), and buffers a head of up to 128 headers of 8 KiB
each (about 2 MiB of memory per connection once parsed). The gateway is every locale's front door,
in a pod with a memory limit: a few hundred such connections would get it killed, and every client
with it. So, as the recognizer does for its own server (:mod:`speech_recognizer.http_limits`, the
same settings' defaults), each connection here:

- must send a complete request head within ``header_seconds`` of its first byte (of its opening,
  for its first request), else gets 408;
- gets 431 once its head passes ``max_header_bytes``, before the rest is read or parsed;
- between requests, is closed after :data:`~speech_recognizer.serving.KEEPALIVE_SECONDS` idle
  (aiohttp's own timer; the recognizer's too, and why);
- whose client takes in none of what the gateway sends it for ``stall_seconds`` (``SPEECH_GATEWAY_SEND_STALL_SECONDS``)
  while those sends wait, is reset (:meth:`HeadGuard._watch`: ``not_reading``, which the relay reports), and so is one
  closed with bytes still unsent (a relayed WebSocket's close: :meth:`HeadGuard.close_after_unsent`), else closed once
  they are all sent;
- is not read while a request whose body is all in is handled (:meth:`HeadGuard._hold`): what came after it is
  held unparsed until the handler waits for a head, then counted and timed as a first head (aiohttp parsed it
  meanwhile, with no deadline: up to 128 lines of ``max_header_bytes``, 6 MiB a connection, or 32 whole requests).

A request head the parser refuses (a bad request line, header or ``Content-Length``, a bad chunk
sent with its head, the HTTP/2 preface) is refused here too, with 400 and the parser's reason:
aiohttp answered it itself with a plain-text 400 that quoted the request, logged a traceback, and
closed at once, so that a client still sending got a reset. One pipelined behind requests the handler
still has to answer (a head, or a bad chunk in the body of a request not taken up yet) is answered
the same way after their answers, in order: aiohttp answered it with the same plain text and traceback
(and a request whose body broke off before it was taken up got no answer at all). So is one that came in
the same read as the request before it (the guard hands the parser a read's first head alone, then the
rest: aiohttp's parser raised without the requests it had completed, and only the refusal was answered),
and a pipelined head over ``max_header_bytes`` (measured once parsed: the guard sees only the first head
of a read begin) or :attr:`HeadLimits.max_headers` headers: 431.

A client that half-closes after its requests (``shutdown(SHUT_WR)``: ``nc -N``, a proxy passing its client's
half-close on) still reads: what it sent whole is answered, in order, then the connection closes
(:meth:`HeadGuard.eof_received`; aiohttp closed it at the client's FIN, and nothing was answered). A client that closes
its socket sends the same FIN: one whose request with content is still unanswered is asked with an interim
``100 Continue``, which a closed socket answers with a reset, and the connection is lost then, as at the FIN before
(:meth:`HeadGuard._probe`).

Each refusal is a kind of the failure policy (:data:`~speech_recognizer.errors.UPLOAD_TIMEOUT`,
:data:`~speech_recognizer.errors.HEADER_TOO_LARGE`, :data:`~speech_recognizer.errors.MALFORMED_REQUEST`): its JSON answer with ``Connection: close``, one
log line and a count (route ``http``: no route is known before the head is read); the connection is
then closed the way nginx does, reading and dropping what the client still sends for a moment, so
that its answer is not lost to a reset. With ``SPEECH_GATEWAY_CORS_ORIGINS``, a refused head's answer carries the
CORS headers of the gateway's other answers for that head's ``Origin`` (:mod:`speech_operator.gateway_cors`), so that a
page of an allowed origin reads it. Bodies need no limit here: what the gateway relays, the
recognizer bounds; what it reads itself (OpenAI forms) has its own budget, deadline and pause limit
(:mod:`speech_operator.gateway_openai`), and is refused with the same lingering close (:func:`drop_the_rest`).

A body the parser refuses once its request is being handled (a bad chunk that comes after the head,
while the gateway relays what came before) fails the reading of that body with :class:`MalformedBody`
at once: the relay aborts its request to the recognizer (whose decoder is given back) and answers the
same 400, or, if the recognizer's answer had begun, cuts the client's connection
(:func:`client_failure` says which). What the client still sends is dropped, and the connection is
closed after the answer with the same lingering close. aiohttp 3.14's C parser drops such a body
without ending it, and queues the error as a request of its own for after the one in flight: the
relay waited for the rest of the body (for ever here; a recognizer answered 408 after its
``Http:BodyTimeoutSeconds``, 10 s, having held a decoder all that time).

aiohttp has no hook for this, so :class:`HeadGuard` sits between the event loop and aiohttp's
:class:`~aiohttp.web_protocol.RequestHandler`, passing everything on; it reads one private attribute,
the handler's ``_waiter`` (pending while the handler waits for a request head), and wraps another, its
``_parser`` (:class:`_HeadParser`: aiohttp 3.14's ``RequestHandler.data_received`` turns the parser's
error into a request of its own, answered by ``handle_error``, which logs the traceback, and closed at
once; no hook changes that answer or that close). Once a body is refused it reads a third, the handler's
``_current_request`` (set while a request's handler runs: only then may reading the body fail; after it,
aiohttp reads the rest itself and would log a traceback for that failure), and gives the handler another
transport (:class:`_LingeringClose`: the handler's ``transport`` attribute, which aiohttp 3.14 reads for
each write and for its close), so that the handler's close of the connection is a lingering one. When a
connection is lost it reads the handler's ``_current_request`` again and the body's ``_waiter`` (pending
while aiohttp reads the rest of a body its handler answered without, for up to 10 s): that body is
ended, so that the read, which nothing else ends, does not outlive the connection. To know when a
pipelined refusal's turn comes it counts the requests the parser gives the handler and those the handler
takes up (the parser's ``message_consumed``, which aiohttp 3.14's handler calls for each). For the gateway's cap on
connections it says how long a connection has waited for a head of which nothing came (:meth:`HeadGuard.idle_since`,
from the handler's ``_request_count`` and ``_next_keepalive_close_time``, the end of its last answer plus the
keep-alive timeout; and whether anything waits in its socket's receive queue, :meth:`HeadGuard.unread`), and closes such a connection with the handler's ``force_close``, as aiohttp's keep-alive timer
does (a reset, not a FIN: :func:`~speech_recognizer.connection_cap.reset_on_close`). To hold what follows a request it reads the handler's ``_upgraded`` and ``_payload_parser`` (a WebSocket's
frames are never held) and replaces its ``_messages`` queue with one that says when the handler finds it empty
(:class:`_Requests`: aiohttp 3.14 looks just before it waits for a head). To ask a client that ended what it sends
whether it still reads (:meth:`HeadGuard._probe`) it reads the handler's ``_current_request`` and that request's
writer's ``_headers_buf`` (an answer's head written, not yet sent: no interim answer may follow it). To say why it
reset a connection whose client takes in nothing, it reads the handler's ``_current_request`` (:meth:`HeadGuard._watch`);
it learns that sends wait from the event loop's ``pause_writing``, which it passes on. Tests cover each.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import HttpVersion11, web
from aiohttp.http_exceptions import HttpProcessingError, InvalidURLError, LineTooLong
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware

from speech_operator.gateway_connections import ConnectionCap
from speech_operator.gateway_failures import STOPPED
from speech_recognizer import cors
from speech_recognizer.addresses import peer
from speech_recognizer.connection_cap import (
    CONTINUE,
    PRESENCE_POLL_SECONDS,
    Intake,
    peer_gone,
    reset,
    reset_by_peer,
    reset_on_close,
    unacknowledged_bytes,
    unread_bytes,
    unsent_bytes,
)
from speech_recognizer.contract import MAX_HEADERS
from speech_recognizer.errors import (
    CLIENT_GONE,
    HEADER_TOO_LARGE,
    MALFORMED_REQUEST,
    NOT_READING,
    UPLOAD_TIMEOUT,
    Failure,
    Kind,
    http_response_bytes,
    malformed_reason,
)
from speech_recognizer.settings import declared

log = logging.getLogger("speech_operator.gateway")

#: The route label of refusals made before any route is known (as the recognizer counts them).
ROUTE = "http"
_END_OF_HEAD = b"\r\n\r\n"
#: The longest a client may take in none of what the gateway has for it, by default: a recognizer's own bound on its
#: WebSocket sends (``AudioIdleSeconds``), so that a client is held through the gateway no longer than without it.
STALL_SECONDS: float = declared("audio_idle_seconds").default
#: How often a connection its client takes nothing of is looked at while its sends wait (:meth:`HeadGuard._watch`).
STALL_POLL_SECONDS = 0.5
#: Most bytes handed to the parser at once after a head: of a read that ends a request's body and brings the next
#: request's first bytes, the parser sees at most this much before the rest is held (:meth:`HeadGuard._hold`).
PIECE_BYTES = 16 << 10


@dataclass(frozen=True)
class HeadLimits:
    """What one request head may hold and take: the recognizer's ``Http:`` settings' defaults."""

    #: Largest request head (request line and headers), in bytes.
    max_header_bytes: int = declared("http_max_header_bytes").default
    #: Seconds a request head may take from its first byte (a new connection's: from its opening).
    header_seconds: float = declared("http_header_timeout_seconds").default
    #: Longest a refused connection is read and dropped after its answer, in seconds.
    linger_seconds: float = 2.0
    #: That lingering ends once the client has sent nothing for this long.
    linger_pause_seconds: float = 1.0
    #: Most headers in one request head: a recognizer's bound (:data:`~speech_recognizer.contract.MAX_HEADERS`, aiohttp's
    #: default): each costs memory for as long as its request or stream lasts (a head of 16 KiB holds 2400 headers, 670
    #: KiB parsed; one of 128 22 KiB). More gets 431 saying so (aiohttp said 400 "not a valid HTTP/1.1 request: Too many
    #: headers received"); so does a head within it that would be over it with the gateway's own headers
    #: (:func:`speech_operator.gateway_relay.head_over`).
    max_headers: int = MAX_HEADERS

    def too_large(self) -> str:
        """Why a head over :attr:`max_header_bytes` is refused."""
        return f"the request's head is over {self.max_header_bytes} bytes (SPEECH_GATEWAY_MAX_HEADER_BYTES)"

    def parser_options(self) -> dict[str, int]:
        """aiohttp's own bounds on a head: one line (the request line, a header) may be the whole head, as on a recognizer,
        whose only bound is the head's size (aiohttp's 8190 bytes a line refused with 400 a query string or a token over
        8 KiB that a recognizer takes); :attr:`max_headers` headers."""
        return {"max_line_size": self.max_header_bytes, "max_field_size": self.max_header_bytes,
                "max_headers": self.max_headers}


class MalformedBody(Exception):
    """What reading a request's body raises once the parser refused the rest of it (a bad chunk after the head)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        #: How it is answered: the recognizer's 400 with the parser's reason.
        self.failure = Failure(reason, MALFORMED_REQUEST)


#: Where a request whose client took in nothing keeps why its connection was reset (:meth:`HeadGuard._watch`).
NOT_READING_KEY = web.RequestKey("not_reading", Failure)


def client_failure(request: web.BaseRequest) -> Failure | None:
    """Why the client's side of ``request`` failed while it was handled, if it did: its body was refused
    (:class:`MalformedBody`: 400), it took in nothing of what was sent to it (:func:`not_reading`), or the client left
    (499). ``None``: nothing failed on the client's side."""
    if (stalled := not_reading(request)) is not None:
        return stalled
    exc = request.content.exception()
    if isinstance(exc, MalformedBody):
        return exc.failure
    if isinstance(exc, ConnectionError) or request.transport is None:
        return Failure("the client left before it had its answer", CLIENT_GONE)
    return None


def not_reading(request: web.BaseRequest) -> Failure | None:
    """Why ``request``'s connection was reset, if it was because its client took in nothing (:meth:`HeadGuard._watch`)."""
    return request.get(NOT_READING_KEY)


#: How often :func:`client_leaves` looks at the connection's TCP state.
LEAVING_POLL_SECONDS = 0.5


async def client_leaves(request: web.BaseRequest) -> None:
    """Returns once ``request``'s client has left, its body all in or not: its connection lost, or reset (the kernel's
    TCP state, Linux's ``TCP_INFO``, looked at every :data:`LEAVING_POLL_SECONDS`: a body not read yet, as aiohttp stops
    reading a connection past twice its read buffer, hides the end of the connection from the event loop, and aiohttp
    says a connection is lost only to a body still being read; its handler runs on: the gateway has aiohttp cancel none).
    Never returns while the client is there: one that half-closed (``shutdown(SHUT_WR)``, ``nc -N``) is answered, held
    while its locale wakes or relayed.

    A FIN alone is not leaving: a client that closed its socket and one that half-closed send the same. The guard tells
    them apart by an interim answer (:meth:`HeadGuard._probe`), which a closed socket answers with a reset, and loses the
    connection then; asked at the FIN the event loop reads (:meth:`HeadGuard.eof_received`), or here at one only the TCP
    state shows (:meth:`HeadGuard.ask_whether_reading`). An HTTP/1.0 client, which gets no interim answer, is answered."""
    transport = request.transport
    guard = transport.get_protocol() if transport is not None else None
    while transport is not None and not transport.is_closing() and not (isinstance(guard, HeadGuard) and guard.lost.done()):
        if reset_by_peer(transport):
            return
        if isinstance(guard, HeadGuard):
            if peer_gone(transport):  # its FIN, unread behind its body
                guard.ask_whether_reading()
            await asyncio.wait((guard.lost,), timeout=LEAVING_POLL_SECONDS)
        else:
            await asyncio.sleep(LEAVING_POLL_SECONDS)


def drop_the_rest(request: web.BaseRequest) -> None:
    """``request`` is answered before its body is all in (a refusal of what was read so far): what its client
    still sends is dropped, and its connection is closed after the answer the way the guard closes its own
    refusals' (lingering), not kept for a next request. The answer should say ``Connection: close``."""
    transport = request.transport
    guard = transport.get_protocol() if transport is not None else None
    if isinstance(guard, HeadGuard) and not request.content.is_eof():
        guard._refuse_rest(request.content)


def drop_what_follows(request: web.BaseRequest) -> None:
    """What the client sends on ``request``'s connection from now on is dropped, neither parsed nor buffered, and the
    connection's close is the guard's lingering one (a WebSocket refused at once: its client may send a whole message
    before it reads the close, and the close need not wait for its answer)."""
    transport = request.transport
    guard = transport.get_protocol() if transport is not None else None
    if isinstance(guard, HeadGuard) and not guard._dropping:
        guard._drop_the_rest()


def unreported(failure: Failure) -> None:
    """What a guard tells of a connection that failed once its handler was done with it when no one counts that (a
    server with no gateway: :func:`speech_operator.gateway.serving`'s ``failed``): one DEBUG line."""
    log.debug("%s", failure.message)


def _never() -> bool:
    """A connection's client is not known gone (:meth:`HeadGuard.close_after_unsent` told nothing of it)."""
    return False


class HeadGuard(asyncio.Protocol):
    """One connection: aiohttp's handler behind a guard on the size and time of its request heads.

    ``refused`` is told each refusal (to count and log it), with the client's address in its message; ``answerer`` is
    the gateway's CORS policy (:func:`speech_recognizer.cors.instance`), if any: a refused head's answer carries its
    headers for the head's ``Origin`` (:class:`speech_recognizer.cors.HeadOrigin`)."""

    def __init__(self, handler: RequestHandler, limits: HeadLimits, refused: Callable[[Failure], None],
                 cap: ConnectionCap | None = None, stall_seconds: float = STALL_SECONDS,
                 answerer: CORSMiddleware | None = None, finishing: set[HeadGuard] | None = None,
                 failed: Callable[[Failure], None] = unreported) -> None:
        self.handler = handler
        self.limits = limits
        self.refused = refused
        #: Told of a connection reset once its handler was done with it (closing after its last bytes: :meth:`_watch`,
        #: :meth:`reset_unsent`), which no request counts any more: the server's (of no locale), or the one its last
        #: request's handler gave (:meth:`close_after_unsent`: a relayed WebSocket's, of its locale).
        self.failed = failed
        self.answerer = answerer
        #: The ``Origin`` of the head being received, once its line came (read with :attr:`answerer` only).
        self._origin = cors.HeadOrigin()
        #: The longest its client may take in none of what waits unsent (``SPEECH_GATEWAY_SEND_STALL_SECONDS``: :meth:`_watch`).
        self.stall_seconds = stall_seconds
        #: While its sends wait (the transport paused): the next look at them, and how long its client took in nothing.
        self._stall: asyncio.TimerHandle | None = None
        self._intake = Intake(0, 0.0)
        #: How the connection is lost once it was reset for a client that took in nothing (:meth:`_watch`).
        self._not_reading: ConnectionResetError | None = None
        #: Its last bytes are on their way, its end follows them (:meth:`close_after_unsent`); and where the guards doing
        #: so are kept until their connection ends (their server's: :meth:`GuardedSite.reset_unsent`).
        self._finishing = False
        self._finishers = finishing if finishing is not None else set()
        #: Whether its client had gone (its close sent, or its connection ended: what the relay knows) when the stop ends
        #: while it still closes after its last bytes (:meth:`reset_unsent`): given by :meth:`close_after_unsent`.
        self._left: Callable[[], bool] = _never
        #: The gateway's cap on connections (:mod:`speech_operator.gateway_connections`), and whether this one is past
        #: it (then only a probe is answered on it, and it is closed after its first answer).
        self.cap = cap
        self.over_cap = False
        #: When it was opened (event loop time): how long it has been idle, before its first request.
        self._opened = 0.0
        self.transport: asyncio.Transport | None = None
        #: Bytes of the head being received, and its last 3 (an end of head may straddle two reads).
        self._head_bytes = 0
        self._tail = b""
        self._timer: asyncio.TimerHandle | None = None
        #: Refused: what comes is dropped until the lingering close ends.
        self._lingering = False
        self._linger_deadline = 0.0
        #: The body of the request being received (as the parser gave it), while it arrives.
        self._body: StreamReader | None = None
        #: A body was refused: what comes is dropped, until the handler has answered and closes (lingering).
        self._dropping = False
        #: Requests the parser has given the handler, and those it has taken up (the rest wait: pipelined).
        self._parsed = 0
        self._taken = 0
        #: A request refused behind requests still to be answered (pipelined): answered when the handler closes, once
        #: the first :attr:`_answer_first` requests are (:meth:`_refuse_after`).
        self._after: Failure | None = None
        self._answer_first = 0
        #: Where in the read being handed to the handler the head it brings ends (:meth:`_HeadParser.feed_data`).
        self._head_end: int | None = None
        #: What came after a request whose body is all in, while the handler has it in progress (:meth:`_hold`), and
        #: whether its release is due (:meth:`_release`).
        self._held = bytearray()
        self._releasing = False
        self._resume_when_taken = False
        #: The client has ended what it sends (its FIN): what it sent whole is answered, then the connection closes.
        self._client_done = False
        #: Polls whether a client that ended what it sends is still there to read (:meth:`_probe`), and whether it was asked.
        self._presence: asyncio.TimerHandle | None = None
        self._probed = False
        #: Done once the connection is lost (:func:`client_leaves`).
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        handler._parser = _HeadParser(handler._parser, self)  # type: ignore[assignment]
        handler._messages = _Requests(self._waits)

    # ---- what the handler is doing

    def _awaiting_head(self) -> bool:
        """The handler waits for a request head (and is not reading a body, handling a request or relaying a WebSocket)."""
        waiter = self.handler._waiter
        if waiter is not None:
            return not waiter.done()
        return self.handler._request_count == 0  # its task has not started yet

    def idle_since(self) -> float | None:
        """When it began waiting for a request head of which no byte has come yet (event loop time: its opening, or the
        end of its last answer); None while it is busy (a head or body arriving, a request handled, a WebSocket relayed
        or held, an answer lingering): what its :class:`ConnectionCap` may close to make room."""
        if (self._lingering or self._dropping or self._head_bytes or self._held or self.transport is None
                or not self._awaiting_head()):
            return None
        handler = self.handler
        if handler._request_count == 0:
            return self._opened
        # aiohttp 3.14 sets it after each answer on a kept-alive connection: the end of that answer plus the timeout.
        return max(self._opened, handler._next_keepalive_close_time - handler.keepalive_timeout)

    def unread(self) -> int:
        """Bytes the client has sent that the event loop has not read yet (the socket's receive queue, ``FIONREAD``): a
        connection :meth:`idle_since` says is idle may have its request in there (those accepted in one turn of the
        event loop have had nothing read yet), and is then no idle one."""
        return unread_bytes(self.transport)

    def unsent(self) -> int:
        """Bytes of its answers its client is not taking in (:func:`~speech_recognizer.connection_cap.unsent_bytes`): a
        slow reader, the first an at-the-cap new connection closes (:mod:`speech_recognizer.connection_cap`)."""
        return unsent_bytes(self.transport)

    def close_idle(self) -> None:
        """Close it while it waits for a request head (as aiohttp's keep-alive timer does, but with a reset unless an answer
        is still on its way: :func:`~speech_recognizer.connection_cap.reset_on_close`, so that a proxy taking it from its
        pool just then tries another), or past the cap whatever it is doing (its head arriving, its answer lingering):
        its cap needs its place."""
        if self.idle_since() is not None:
            reset_on_close(self.transport)
        self.handler.force_close()  # lingering, the handler's transport is the guard's: its close would linger on
        self._disarm()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def close_after_unsent(self, failed: Callable[[Failure], None] | None = None,
                           left: Callable[[], bool] | None = None) -> bool:
        """Close the connection once its client has taken in what waits unsent for it, as a slow reader does, or reset it
        once it has taken in none of it for :attr:`stall_seconds` (:meth:`_watch`), as an open connection is: false when
        nothing waits (the caller closes it). What the client sends meanwhile is dropped; its end of stream (its FIN)
        comes after the last byte (a half-close), and the handler's close of the connection waits for it. ``failed``:
        told of its reset instead of :attr:`failed` (the relay of a WebSocket: counted under its locale); ``left``: whether
        its client had gone, asked at the stop's end (:meth:`reset_unsent`; the relay of a WebSocket: its client's close).

        A close (its FIN) behind bytes the client takes none of waited for them until the kernel gave the connection up
        (``TCP_USER_TIMEOUT``, 60 s of a shut window), long after the gateway was done with it; and a reset at the close
        would have cut a slow reader still taking its backlog in. The watch already running while the sends waited
        (the transport paused) goes on, its count of seconds kept: the same bound as on an open connection."""
        transport = self.transport
        if self._finishing or transport is None or transport.is_closing() or not unsent_bytes(transport) or not self._drop_the_rest():
            return False
        self._finishing = True
        self._finishers.add(self)
        self.failed = failed or self.failed
        self._left = left or self._left
        if transport.can_write_eof():
            transport.write_eof()  # the FIN once the event loop's buffer is written, after the kernel's queue
        if self._stall is None:  # not paused: the kernel holds what waits; the look begins now
            self._intake = Intake(unsent_bytes(transport), asyncio.get_running_loop().time())
            self._watch()
        return True

    def reset_unsent(self) -> None:
        """Its server stops: the connection still closing after its last bytes is reset (nothing outlives the server),
        and :attr:`failed` told: ``gateway_stopped``, its client did not get them; or, once that client had gone before
        (``left``: a WebSocket client that sent its own close and reads nothing, the close reply behind what it did not
        read), ``client_gone``, as the failure table counts a client that left (a DEBUG line, no alert): what the stop
        cut was no longer any client's. Before: ``gateway_stopped`` for it too, a WARNING line."""
        transport = self.transport
        if self._finishing and transport is not None and not transport.is_closing():
            unsent = unsent_bytes(transport)
            if self._left():
                self.failed(Failure(f"the client had left; the gateway stopped before it took in the last {unsent} bytes "
                                    "sent to it (the close reply among them): its connection was reset", CLIENT_GONE))
            else:
                self.failed(Failure(f"the gateway stopped before the client took in the last {unsent} bytes sent to it (a "
                                    "close among them): its connection was reset", STOPPED))
            reset(transport)

    # ---- timers

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._timer = asyncio.get_running_loop().call_later(max(0.0, seconds), self._expired)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        if self._lingering:
            self._close()
        elif self._awaiting_head():
            self._refuse(UPLOAD_TIMEOUT, f"the request's head did not arrive within {self.limits.header_seconds:g} s "
                                         "(SPEECH_GATEWAY_HEADER_SECONDS)", self._origin)

    # ---- refusing

    def _refuse(self, kind: Kind, message: str, origin: cors.HeadOrigin | None = None) -> None:
        """Answer ``kind`` with ``message`` (and the CORS headers for ``origin``, the refused head's), then close the
        connection after a lingering read."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        where = transport.get_extra_info("peername")
        self.refused(Failure(f"{message}; from {peer(where)}" if where else message, kind))
        extra = cors.headers(self.answerer, origin.request() if origin is not None else Headers(), kind.http)
        transport.write(http_response_bytes(Failure(message, kind), extra=extra))
        self._close_lingering()

    def _close_lingering(self) -> None:
        """Close after what was written: half-close (the answer is all: the client reads it to its end), then read and
        drop what the client still sends until it pauses or time is up, so that no reset destroys the answer."""
        transport = self.transport
        if self._lingering or transport is None or transport.is_closing():
            return
        self._lingering = True
        self._held = bytearray()
        transport.resume_reading()  # the handler (or :meth:`_hold`) may have paused it
        if transport.can_write_eof():
            transport.write_eof()
        self._linger_deadline = asyncio.get_running_loop().time() + self.limits.linger_seconds
        self._linger()

    def _refuse_body(self, body: StreamReader, reason: str) -> None:
        """The parser refused the rest of ``body``, whose request is in flight. While its handler runs, reading the body
        fails at once with :class:`MalformedBody` (the relay answers or cuts, and says so); once it has answered (without
        reading it all), the body just ends: aiohttp's own reading of the rest ends, nobody else reads it. Either way what
        the client still sends is dropped, and the handler closes the connection after its answer, lingering."""
        if not self._drop_the_rest():
            return
        if self.handler._current_request is not None:  # aiohttp 3.14: set while the request's handler runs
            body.set_exception(MalformedBody(reason))  # first: a reader waiting now gets it, not an end
        body.feed_eof()
        self.handler.close()  # no next request on this connection: the handler closes it after this one

    def _refuse_rest(self, body: StreamReader) -> None:
        """The handler refuses its request before ``body`` is all in (:func:`drop_the_rest`): the body just ends (no
        one reads it: aiohttp would read the rest, for up to 10 s, before the next request), what the client still
        sends is dropped, and the handler closes the connection after its answer, lingering."""
        if not self._dropping and self._drop_the_rest():
            body.feed_eof()
            self.handler.close()

    def _refuse_after(self, reason: str, answer_first: int, kind: Kind = MALFORMED_REQUEST) -> None:
        """The parser refused a request pipelined behind requests the handler still has to answer (a head, or the body of
        a request it has not taken up yet): the same 400 (``kind``: 431 for a head of too many headers), once the first
        ``answer_first`` requests are answered, in order (aiohttp answered it itself, with a plain-text 400 and a
        traceback). What the client still sends is dropped; the handler takes up no request after those, and its close of
        the connection writes the refusal and lingers."""
        if not self._drop_the_rest():
            return
        self._after, self._answer_first = Failure(reason, kind), answer_first
        self._close_when_answered()

    def _taken_up(self) -> None:
        """The handler took up the next request the parser gave it (aiohttp 3.14: ``message_consumed``)."""
        self._taken += 1
        if self._resume_when_taken:  # a request that was held: its handler starts before what follows is read
            self._resume_when_taken = False
            if not self._held and self.transport is not None and not self.transport.is_closing():
                self.transport.resume_reading()
        if self._after is not None:
            self._close_when_answered()
        self._close_when_done()

    def _close_when_answered(self) -> None:
        if self._taken >= self._answer_first:  # the last request to answer is taken up: the handler closes after it
            self.handler.close()

    def _drop_the_rest(self) -> bool:
        """Drop what the client sends from now on, and make the handler's close of the connection lingering. False: the
        connection is closing already."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return False
        self._dropping = True
        self._body = None
        self._held = bytearray()
        self.handler.transport = _LingeringClose(transport, self)
        transport.resume_reading()  # the handler may have paused it
        return True

    def _handler_closed(self) -> None:
        """The handler closes the connection after its last answer: the refusal waiting for it, if any, then lingering
        (unless its last bytes are already on their way: :meth:`close_after_unsent` closes it)."""
        if self._finishing:
            return
        after, self._after = self._after, None
        if after is not None:
            self._refuse(after.kind, after.message)
        self._close_lingering()

    def _linger(self) -> None:
        left = self._linger_deadline - asyncio.get_running_loop().time()
        self._arm(min(self.limits.linger_pause_seconds, left))

    def _close(self) -> None:
        """End the connection (a refusal's lingering close, or the last bytes of one closing after them sent): with bytes
        still unsent, once its client took them in, or reset once it took in none for :attr:`stall_seconds`
        (:meth:`close_after_unsent`); its FIN would wait behind them until the kernel gave the connection up."""
        self._disarm()
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self._finishing:
            if unsent_bytes(transport):  # the watch ends it (:meth:`_watch`)
                return
        elif self.close_after_unsent():
            return
        transport.close()

    # ---- the connection (asyncio.Protocol), passed on to the handler

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._opened = asyncio.get_running_loop().time()
        if self.cap is not None:
            self.over_cap = not self.cap.admit(self)
        self.handler.connection_made(transport)
        self._arm(self.limits.header_seconds)  # a connection that sends nothing is closed too

    def data_received(self, data: bytes) -> None:
        if self._lingering:  # read and dropped
            self._linger()
            return
        if self._dropping:  # after a refused body: the parser is done with this connection
            return
        if self._held:  # a request is in progress, with what came after it held: so is this
            self._hold(data)
            return
        if not self._awaiting_head():
            if self._relaying_frames():  # a relayed WebSocket's frames
                self.handler.data_received(data)
            elif self._request_in():  # what follows a request whose body is all in
                self._hold(data)
            else:  # a body
                self._pass(data)
            return
        if self._timer is None:  # the first byte of a request after the previous one
            self._arm(self.limits.header_seconds)
        seen = self._tail + data
        end = seen.find(_END_OF_HEAD)
        size = self._head_bytes + (len(data) if end < 0 else end + len(_END_OF_HEAD) - len(self._tail))
        if self.answerer is not None:  # the guard refuses a head before aiohttp has parsed it (431, 408), or as its parser does (400)
            self._origin.see(data if end < 0 else data[:end + len(_END_OF_HEAD) - len(self._tail)])
        if size > self.limits.max_header_bytes:
            self._refuse(HEADER_TOO_LARGE, self.limits.too_large(), self._origin)
            return
        # where this head ends in ``data``, for the parser (_HeadParser.feed_data): it, then what follows it
        head_end = len(data) if end < 0 else end + len(_END_OF_HEAD) - len(self._tail)
        self._pass(data, head_end)
        if self._lingering:  # the parser refused the head (_HeadParser)
            return
        if self._awaiting_head():  # still no whole head (blank lines before a request line end nothing)
            self._head_bytes += len(data)
            self._tail = seen[-(len(_END_OF_HEAD) - 1):]
        else:
            self._head_bytes, self._tail = 0, b""
            self._origin.clear()
            self._disarm()

    # ---- what follows a request, held while it is in progress

    def _request_in(self) -> bool:
        """The last request the parser gave has all its body (or has none): what comes next is another request."""
        return self._body is not None and self._body.is_eof()

    def _relaying_frames(self) -> bool:
        """The connection was upgraded (a WebSocket): what comes is frames, not requests."""
        return bool(self.handler._upgraded or self.handler._payload_parser is not None)

    def _pass(self, data: bytes, head_end: int | None = None) -> None:
        """Hand ``data`` to the handler (its parser), in pieces of :data:`PIECE_BYTES` after the head ending at
        ``head_end``: once the last request's body is all in, the rest is held (:meth:`_hold`), not parsed."""
        at, end = 0, PIECE_BYTES if head_end is None else head_end + PIECE_BYTES
        while at < len(data):
            self._head_end = None if head_end is None or at else head_end
            self.handler.data_received(data[at:end] if at or end < len(data) else data)
            self._head_end = None
            at, end = end, end + PIECE_BYTES
            if at >= len(data) or self._lingering or self._dropping or self._relaying_frames():
                if at < len(data) and not (self._lingering or self._dropping):  # upgraded: frames follow, as they come
                    self.handler.data_received(data[at:])
                return
            if self._request_in():
                self._hold(data[at:])
                return

    def _hold(self, data: bytes) -> None:
        """Keep ``data`` (what came after a request whose body is all in, while it is handled) unparsed, and read no more
        of the connection until the handler waits for a head (:meth:`_release`): a head pipelined behind a request in
        progress is then counted and timed as it arrives, as the first head is, and the parser never holds more of it than
        a piece. aiohttp parsed it at once, with no deadline, up to 128 header lines of ``max_header_bytes`` each: 6 MiB
        of memory a connection while the head never ended (bench/notes.md, "Heads pipelined behind a request")."""
        if self.transport is None or self.transport.is_closing():
            return
        self._held += data
        self.transport.pause_reading()

    def _waits(self) -> None:
        """The handler found no request waiting (:class:`_Requests`): it is about to wait for a head."""
        if self._held and not self._releasing:
            self._releasing = True
            asyncio.get_running_loop().call_soon(self._release)

    def _release(self) -> None:
        """The handler waits for a head: what was held comes to it now, as if it had just arrived. Reading resumes once
        the handler has taken up the request it brings (:meth:`_taken_up`), so that what comes next (the rest of its body,
        a bad chunk) finds it being handled; at once if it brings no whole head."""
        self._releasing = False
        if not self._held or not self._awaiting_head() or self.transport is None or self.transport.is_closing():
            return
        held, self._held = bytes(self._held), bytearray()
        self.data_received(held)
        if self._held or self._lingering or self._dropping or self.transport.is_closing():  # held again, or refused
            return
        self._close_when_done()
        if self.transport.is_closing():
            return
        if self._awaiting_head():
            self.transport.resume_reading()
        else:
            self._resume_when_taken = True

    def eof_received(self) -> bool | None:
        """The client's end of stream (its FIN). A half-close (``shutdown(SHUT_WR)``, ``nc -N``, a proxy passing its
        client's on) ends what the client sends, not what it reads: the requests it sent whole are answered, in order
        (RFC 9112, 9.3.2), then the connection closes (:meth:`_close_when_done`). aiohttp closed it then (its
        ``eof_received`` returns None, and the event loop closes the transport): not even a lone ``GET /ready`` so sent
        was answered. With nothing to answer (idle, a head cut off, the body of the request in progress cut off) or a
        WebSocket relayed, it closes then, as before."""
        if self._lingering:
            self._close()
            return None
        if self._dropping:  # the client has sent all; the handler's answer is still to be written
            return True
        cut = self._body is not None and not self._body.is_eof()
        if self._relaying_frames() or (not self._held and self._taken == self._parsed and (cut or self._awaiting_head())):
            self.handler.eof_received()
            return None
        if not self._client_done:  # (again, once reading resumes after a hold)
            self._client_done = True
            self._probe()
        self._close_when_done()
        return True

    def ask_whether_reading(self) -> None:
        """The client's FIN is in the connection's TCP state, not yet read by the event loop (behind a body not read
        yet): it is asked whether it still reads (:meth:`_probe`), as at a FIN read, unless it was already."""
        if not self._probed and self._presence is None:
            self._probe()

    def _probe(self) -> None:
        """Whether a client that ended what it sends still reads: after a half-close it does, after a close it does not,
        and both send the same FIN. The first request with content whose answer has not begun (a recognition relayed)
        is told by an interim ``100 Continue``, which an HTTP/1.1 client takes before the final answer whether it
        expected one or not (RFC 9110, 15.2): a closed socket resets the connection then, and it is lost at once, as
        aiohttp lost it at the FIN before: the answer, when it comes, finds its client gone (499, ``client_gone``). Looked
        at every :data:`PRESENCE_POLL_SECONDS` until then (the handler may not have taken up that request yet), and until
        that answer is acknowledged (then the client reads: it half-closed). An answer on its way tells them apart by its
        own writes; an HTTP/1.0 client gets no 1xx: it is answered, whichever it did."""
        self._presence = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self._probed:
            if reset_by_peer(transport):
                transport.abort()
                return
            if not unacknowledged_bytes(transport):
                return
        elif (request := self.handler._current_request) is not None and request.body_exists and not (
                request.writer.output_size or getattr(request.writer, "_headers_buf", None)):
            if request.version != HttpVersion11:
                return
            transport.write(CONTINUE)
            self._probed = True
        self._presence = asyncio.get_running_loop().call_later(PRESENCE_POLL_SECONDS, self._probe)

    def _close_when_done(self) -> None:
        """After the client's end of stream, once the handler has taken up the last request it sent whole and nothing is
        held: the handler closes the connection after answering it (aiohttp's ``close``: no next request); it closes at
        once if that request's body was cut off by that end (it can never end), or if the handler waits for a head
        (what was held brought none whole)."""
        if not self._client_done or self._held or self._taken < self._parsed or self.transport is None or self.transport.is_closing():
            return
        if (self._body is not None and not self._body.is_eof()) or self._awaiting_head():
            self._close()
        else:
            self.handler.close()

    def connection_lost(self, exc: Exception | None) -> None:
        """Passed on; and a body its handler answered without reading all of it ends: aiohttp reads the rest after the
        answer (its lingering read, up to 10 s), and nothing ends that read once the connection is gone, nor can a
        shutdown cancel it (the handler's task is no longer known): it waited out its 10 s, and a gateway stopped
        meanwhile left it pending ("Task was destroyed but it is pending"). That read is the one waiting on the body
        while no handler runs (the body's ``_waiter``: a body not yet taken up by its handler has none)."""
        self._disarm()
        self._held = bytearray()
        if self._presence is not None:
            self._presence.cancel()
            self._presence = None
        if not self.lost.done():
            self.lost.set_result(None)
        if self.cap is not None:
            self.cap.release(self)
        body = self._body
        lingering = body is not None and self.handler._current_request is None and getattr(body, "_waiter", None) is not None
        self._unwatch()
        self._finishers.discard(self)
        self.handler.connection_lost(self._not_reading or exc)
        if lingering and body is not None:
            body.feed_eof()

    def pause_writing(self) -> None:
        """Passed on; and what waits unsent is watched (:meth:`_watch`; closing after its last bytes, it is already)."""
        self.handler.pause_writing()
        if self.transport is not None and not self._finishing:
            self._intake = Intake(unsent_bytes(self.transport), asyncio.get_running_loop().time())
            self._watch()

    def resume_writing(self) -> None:
        if not self._finishing:
            self._unwatch()
        self.handler.resume_writing()

    # ---- a client that takes in nothing

    def _watch(self) -> None:
        """While the transport is paused (what the gateway sends its client waits: aiohttp's sends wait on it, a
        relayed stream's or answer's, a close's), look every :data:`STALL_POLL_SECONDS` whether the client took in any of
        what waits unsent; once it has taken in none for :attr:`stall_seconds`, reset the connection.

        A client that never reads (its window shut, its kernel still acknowledging) was held until the kernel gave the
        connection up (``TCP_USER_TIMEOUT``, 60 s of a shut window): its place under the cap, its buffers, and the
        relay's connection to the recognizer, whose replies the relay no longer read. A slow reader takes some in
        between two looks and is never cut. The reset (``SO_LINGER`` 0: a FIN would wait behind the unsent bytes) loses
        the connection, a send that waited fails, and the request in progress keeps why (:func:`not_reading`): the
        relay reports it (``not_reading``) and closes the recognizer's side. Closing after its last bytes
        (:meth:`close_after_unsent`), it is watched until they are all sent, then closed (its FIN sent after them)."""
        self._stall = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        unsent = unsent_bytes(transport)
        if self._finishing and not unsent:
            self._close()
            return
        if (stalled := self._intake.look(unsent, asyncio.get_running_loop().time())) < self.stall_seconds:
            self._stall = asyncio.get_running_loop().call_later(min(STALL_POLL_SECONDS, self.stall_seconds - stalled), self._watch)
            return
        failure = Failure(f"the client took in none of what was sent to it for {self.stall_seconds:g} s "
                          f"(SPEECH_GATEWAY_SEND_STALL_SECONDS), {unsent} bytes waiting unsent: its connection was reset", NOT_READING)
        if self._finishing:  # its handler closed it: none of its requests tells this any more (not_reading)
            self.failed(failure)
        elif (request := self.handler._current_request) is not None:
            request[NOT_READING_KEY] = failure
        self._not_reading = ConnectionResetError(failure.message)
        reset(transport)

    def _unwatch(self) -> None:
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None


class _Requests(collections.deque):
    """The handler's queue of parsed requests (aiohttp 3.14's ``_messages``), telling ``empty`` when the handler finds it
    empty: its loop looks (``if not self._messages``) just before it waits for the next head."""

    def __init__(self, empty: Callable[[], None]) -> None:
        super().__init__()
        self._empty = empty

    def __len__(self) -> int:
        size = super().__len__()
        if not size:
            self._empty()
        return size


class _HeadParser:
    """The handler's request parser, except that what it refuses is refused by the guard, with the parser's
    reason, and the handler sees nothing of the error: a request head (answered by the guard), the rest of
    a body whose request is being handled (:meth:`HeadGuard._refuse_body`), or a request pipelined behind
    requests still to answer (:meth:`HeadGuard._refuse_after`)."""

    def __init__(self, parser: Any, guard: HeadGuard) -> None:
        self._parser = parser
        self._guard = guard

    def feed_data(self, data: bytes) -> Any:
        """What the parser gives of ``data``; when a head the guard saw end in it is followed by more (its body, requests
        pipelined after it), that head is parsed first, then the rest: a refusal in the rest is answered after that
        request, in order (aiohttp's parser raised without the requests it had completed: only the refusal was answered),
        unless it is that request's own body (a bad chunk), refused in its place at once, as when it came alone."""
        guard = self._guard
        if guard._dropping:  # refused already: nothing more is parsed
            return (), False, b""
        cut, guard._head_end = guard._head_end, None
        if cut is None or not 0 < cut < len(data):
            return self._parsed(data)
        messages, upgraded, tail = self._parsed(data[:cut])
        if upgraded:
            return messages, upgraded, tail + data[cut:]
        if guard._dropping or guard._lingering:
            return messages, upgraded, tail
        try:
            more = self._parser.feed_data(data[cut:])
        except HttpProcessingError as exc:
            if messages and not messages[-1][1].is_eof():  # that request's own body: refused in its place
                guard._parsed -= len(messages)
                guard._body = None
                messages = []
            self._refused(exc)
            return messages, False, b""
        rest = self._taken(more)
        return [*messages, *rest[0]], rest[1], rest[2]

    def _parsed(self, data: bytes) -> Any:
        try:
            result = self._parser.feed_data(data)
        except HttpProcessingError as exc:
            self._refused(exc)
            return (), False, b""
        return self._taken(result)

    def _refused(self, exc: HttpProcessingError) -> None:
        guard = self._guard
        body, reason, kind = guard._body, malformed_reason(_said(exc)), MALFORMED_REQUEST
        if _said(exc) == _TOO_MANY_HEADERS:  # a valid head, over a bound of the gateway's own
            reason, kind = f"the request's head has over {guard.limits.max_headers} headers", HEADER_TOO_LARGE
        elif isinstance(exc, LineTooLong):  # a line over the head's bound: in a head pipelined behind a request's
            reason, kind = guard.limits.too_large(), HEADER_TOO_LARGE
        unended = body is not None and not body.is_eof()  # the last request's body, broken off
        if guard._awaiting_head() and guard._parsed == guard._taken:  # none parsed waits to be taken up: its own head
            guard._refuse(kind, reason, guard._origin)
        elif unended and guard._taken == guard._parsed:  # the body of the request being handled
            guard._refuse_body(body, reason)  # type: ignore[arg-type]
        else:  # pipelined: a head behind requests still to answer, or the body of one not taken up yet
            guard._refuse_after(reason, guard._parsed - int(unended), kind)

    def _taken(self, result: Any) -> Any:
        """``result`` counted; a head over the guard's bound in it (pipelined behind another in a read, which the
        guard did not see begin) is refused after the requests before it, and it and what follows are not given."""
        guard = self._guard
        messages = result[0]
        for at, (message, _) in enumerate(messages):
            if _head_size(message) > guard.limits.max_header_bytes:
                guard._parsed += at
                guard._refuse_after(guard.limits.too_large(), guard._parsed, HEADER_TOO_LARGE)
                return messages[:at], False, b""
        if messages:  # the last one's body is what comes next (an earlier one's is whole)
            guard._body = messages[-1][1]
            guard._parsed += len(messages)
        return result

    def message_consumed(self) -> None:
        self._parser.message_consumed()
        self._guard._taken_up()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._parser, name)


def _head_size(message: Any) -> int:
    """The bytes of a parsed request head (aiohttp's ``RawRequestMessage``), as it came but for the spaces around values
    (which the parser drops): the guard's measure of a head that came in a read after another request's, which it
    does not see begin (a body may come between them)."""
    line = len(message.method) + len(message.path) + len(" HTTP/1.1\r\n") + 1
    return line + sum(len(name) + len(value) + 4 for name, value in message.raw_headers) + 2



#: What aiohttp's parser says of a head with more than its ``max_headers`` (a :class:`BadHttpMessage`, as a malformed one).
_TOO_MANY_HEADERS = "Too many headers received"


def _said(exc: HttpProcessingError) -> str:
    """The parser's words, without the request it quotes after a blank line (with a caret under the fault)."""
    said = exc.message.split("\n\n")[0].replace(":\n", ": ").rstrip(":")
    if isinstance(exc, InvalidURLError) and "url" not in said.lower():  # yarl's refusal: the URL alone
        said = f"invalid URL {said}"
    return said


class _LingeringClose(asyncio.Transport):
    """The connection's transport as the handler sees it once a body was refused: the same, except that its
    close is the guard's lingering close, and that the handler no longer pauses its reading (what comes is
    dropped). aiohttp 3.14 writes an answer, and closes the connection after it, through the handler's
    ``transport`` attribute, which is this."""

    def __init__(self, transport: asyncio.Transport, guard: HeadGuard) -> None:
        super().__init__()
        self._transport = transport
        self._guard = guard
        self._closed = False

    def close(self) -> None:
        self._closed = True
        self._guard._handler_closed()

    def is_closing(self) -> bool:
        return self._closed or self._transport.is_closing()

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._transport.write(data)

    def writelines(self, list_of_data: Any) -> None:
        self._transport.writelines(list_of_data)

    def write_eof(self) -> None:
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def abort(self) -> None:
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)


class GuardedSite(web.SockSite):
    """:class:`aiohttp.web.SockSite` whose connections are :class:`HeadGuard`\\ s over the runner's handlers."""

    def __init__(self, runner: web.BaseRunner, sock: Any, limits: HeadLimits,
                 refused: Callable[[Failure], None], cap: ConnectionCap | None = None, stall_seconds: float = STALL_SECONDS,
                 answerer: CORSMiddleware | None = None, failed: Callable[[Failure], None] = unreported) -> None:
        super().__init__(runner, sock)
        self.limits = limits
        self.refused = refused
        self.failed = failed
        self.cap = cap
        self.stall_seconds = stall_seconds
        self.answerer = answerer
        #: Its connections closing after their last bytes (:meth:`HeadGuard.close_after_unsent`).
        self.finishing: set[HeadGuard] = set()

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner, as SockSite.start does first
        server = self._runner.server
        assert server is not None

        def connection() -> HeadGuard:
            return HeadGuard(server(), self.limits, self.refused, self.cap, self.stall_seconds, self.answerer, self.finishing,
                             self.failed)

        self._server = await asyncio.get_running_loop().create_server(connection, sock=self._sock)

    def reset_unsent(self) -> None:
        """Its server has stopped: reset its connections still closing after their last bytes (a socket left to the
        kernel with bytes its client takes none of would stay open until the kernel gave it up)."""
        for guard in list(self.finishing):
            guard.reset_unsent()
