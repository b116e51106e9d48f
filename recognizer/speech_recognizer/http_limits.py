"""uvicorn's HTTP/1.1 protocol with limits on what a request may hold and how long it may take.

uvicorn reads a request's head and body for as long as the client cares to send
them: with httptools (what ``uvicorn[standard]`` runs) a 64 MiB header stalled
every other request for 6-11 s, a head sent a byte a second and a body whose
last byte never comes held their connections (and the body's memory) forever.
This protocol (:func:`protocol`, the server's ``http`` option) adds:

- a cap on the head (request line and headers): 431 as soon as it is passed,
  before the rest is read or parsed;
- a cap on the number of its headers (:data:`~speech_recognizer.contract.MAX_HEADERS`, the gateway's too): 431 at
  the first one past it, before the rest is parsed (httptools, like uvicorn, keeps every header of a head: 2000
  tiny ones within 16 KiB were 230 KiB of Python objects, held while the request lasted);
- a deadline for the head, from its first byte (from the connection's opening,
  for its first request; from the read that brought it, for one pipelined in the
  read that ended the request before it): 408;
- for a body, a longest pause between two pieces and a deadline for the whole
  (``MaxAudioSeconds`` plus that pause: a client streaming its audio as it
  records it needs the audio's length): 408. Both count the client's time only: while the server itself reads
  no more of the body (its app has not asked for what was read ahead, 64 KiB: a recognition waiting for its model's
  load on demand; a request pipelined behind one being answered), neither runs, and the pause's starts again, whole,
  once the app asks (:meth:`LimitedHttpTools._reading_paused`). A body timed so was cut off with a 408 "paused" for
  the server's own pause: an upload over what is read ahead whose model took longer than the pause to load.

A request the parser refuses (a bad request line, header, ``Content-Length`` or chunk;
an HTTP/2 preface) is refused here too: uvicorn answered it with a plain-text 400 of its
own, logged its own warning and closed at once, so that a client still sending got a reset.
An upgrade other than to a WebSocket (``Upgrade: h2c``, from ``curl --http2``) is ignored, as
RFC 9110 allows: the request is served as HTTP/1.1, its body read, and the requests pipelined
after it too (uvicorn logged a warning and dropped both: the app got an empty body).

Each refusal is a failure of the server's policy (:mod:`.errors`:
:data:`~speech_recognizer.errors.HEADER_TOO_LARGE`,
:data:`~speech_recognizer.errors.UPLOAD_TIMEOUT`,
:data:`~speech_recognizer.errors.MALFORMED_REQUEST`), answered with its JSON error and
``Connection: close``, logged and counted (route ``http``: no route is known before
the head is read); then the connection is closed. With ``Http:CorsOrigins``, it carries the CORS headers the app's
answers do (:func:`~speech_recognizer.cors.headers`, for the ``Origin`` of the head as far as it came:
:class:`~speech_recognizer.cors.HeadOrigin`, as the gateway finds it), so that
a page of an allowed origin reads it. The server always runs this
protocol, so the limits hold whichever parser uvicorn would have picked.

A connection closed with the client's bytes unread is reset by the kernel, and a
client still writing its body (write everything, then read: Python's http.client,
many SDKs) gets that reset instead of the answer. So a request answered before its
body is all in (a refusal here, or the app's 413 or 503 before reading it) is
answered with ``Connection: close`` and then closed the way nginx does ("lingering
close"): the answer is sent, the sending side shut down, and what the client still
sends is read and dropped until it stops (:attr:`HttpLimits.linger_pause_seconds`
without a byte, or its end of stream), or for :attr:`HttpLimits.linger_seconds` at
most, whatever it sends; then the connection is closed. So is any answer that closes its connection
(``Connection: close`` asked by the client or given by the app): what the client pipelined after that
request (another request, junk) is read and dropped, not answered, and does not reset the answer away.

Pipelined requests are parsed :attr:`HttpLimits.max_pipelined` at a time. httptools parses every
request of what it is fed, and uvicorn queues each as a cycle (a scope, its headers, an event) until
its turn: a read of pipelined requests held thousands of them, for as long as their client kept from
reading the answers (bench/notes.md, "Pipelined requests"). So the bytes of a read are fed a piece at a time,
each piece ending where the request being read may end: a head just after a ``CRLF CRLF``, a ``Content-Length``
body where its length says, a chunked body where its last chunk and trailers do (:class:`ChunkedBody`), so that
no piece completes more than one request; once that many requests wait for their answers, the rest of the read
waits unparsed, and reading pauses, until an answer is done (as h11's ``PAUSED`` state and nginx keep the next
request unparsed in their buffer). httptools has no way to stop its parser mid-buffer (llhttp's pause is not
exposed) nor says where in a buffer a message ended, hence the pieces.

A client that half-closes after its requests (``shutdown(SHUT_WR)``: ``nc -N``, a proxy passing its client's
half-close on) still reads: what it sent whole is answered, in order, then the connection closes
(:meth:`LimitedHttpTools.eof_received`; uvicorn closed it at the client's FIN, and at most the answer on its way
went out). A client that closes its socket sends the same FIN: one whose request with content is still unanswered
then (a recognition decoding) is asked with an interim ``100 Continue``, which a closed socket answers with a reset,
and its request learns at once that its client is gone (:meth:`LimitedHttpTools._probe`).

The connections are counted against ``Http:MaxConnections`` (:mod:`.connection_cap`, the gateway's cap too),
from their opening to their close or their upgrade to a WebSocket (counted by ``MaxConnections`` from
there). Past it, a new connection closes one waiting for a request of which it has sent nothing (one whose
answers its client is not reading first, else the one waiting longest: :mod:`.connection_cap`'s rule); if every one has a request in progress, the new one's first request is read: a probe or scrape
(:data:`PASSED_AT_CAP`: the kubelet's, Prometheus', the operator's ``/sessions``) or a WebSocket upgrade is
served, and so is a browser's CORS preflight with ``Http:CorsOrigins`` (:mod:`.cors` says why), anything else refused
(:data:`~speech_recognizer.errors.TOO_MANY_CONNECTIONS`: 503, ``Retry-After`` and the reason; one warning line per 10 s), and either way the connection is closed after that answer.
uvicorn's ``limit_concurrency`` does not fit: it refuses probes as well (a kubelet restarts the pod), gives way
to no idle connection, and logs a warning per refusal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import httptools
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from . import cors
from .addresses import peer, unmapped
from .connection_cap import (
    CLIENT_ENDED,
    CONTINUE,
    PRESENCE_POLL_SECONDS,
    ConnectionCap,
    Intake,
    peer_end,
    reset,
    reset_by_peer,
    reset_on_close,
    unacknowledged_bytes,
    unread_bytes,
    unsent_bytes,
)
from .contract import MAX_HEADERS, ROUTE_OPENAI_TRANSCRIPTIONS, ROUTE_PRE_STOP
from .deadlines import BACKLOG, HALF_CLOSED, Backlog
from .errors import (
    FRAME_FLOOD,
    HEADER_TOO_LARGE,
    INTERNAL,
    MALFORMED_REQUEST,
    NOT_READING,
    REFUSED_BODY,
    UPLOAD_TIMEOUT,
    Counters,
    Failure,
    Kind,
    close_args,
    http_response_bytes,
    malformed_reason,
    not_reading,
    observe,
    one_line,
)
from .frame_budget import CUT_OFF, FEED_BYTES, MAX_FRAGMENTS, ControlBudget, over_budget, too_many_fragments
from .logs import PROBE_ROUTES
from .settings import declared

log = logging.getLogger(__name__)
_Port = TypeVar("_Port")

#: How often a send waiting on a client that takes in nothing looks whether it took in some (:meth:`UnmappedWebSockets.send`).
STALL_POLL_SECONDS = 0.5
#: Longest a WebSocket client may take in nothing of what waits unsent once the server stops (its drain over):
#: then its connection is reset (:meth:`UnmappedWebSockets.shutdown`).
SHUTDOWN_STALL_SECONDS = 1.0
#: Longest the server waits for a WebSocket client to answer its close (:meth:`UnmappedWebSockets._unanswered`), in
#: place of uvicorn's fixed 10 s: a client replies at once (RFC 6455 5.5.1; the gateway within its own
#: ``CLOSE_REPLY_SECONDS``, 1 s), so a hostile or hung one holds its socket this long, not 10 s. The rest is room for
#: a client on a loaded node or a slow link.
CLOSE_REPLY_SECONDS = 5.0
#: Seconds between two probes (an unsolicited pong) of a client held back behind what is not read, with no end of its
#: connection seen (:meth:`UnmappedWebSockets._ended_unread`): 2 bytes each, a closed socket answers with a reset.
HELD_PROBE_SECONDS = 1.0
#: Routes served on a connection past ``Http:MaxConnections`` (then closed): what kubelets, load balancers and Prometheus
#: poll, the operator's ``/sessions``, and the pod's preStop hook.
PASSED_AT_CAP = PROBE_ROUTES | {ROUTE_PRE_STOP}


@dataclass(frozen=True)
class HttpLimits:
    """What one request may hold and take."""

    #: Largest request head (request line and headers), in bytes (``Http:MaxHeaderBytes``' default).
    max_header_bytes: int = declared("http_max_header_bytes").default
    #: Seconds a request head may take from its first byte (``Http:HeaderTimeoutSeconds``' default).
    header_seconds: float = declared("http_header_timeout_seconds").default
    #: Longest pause between two pieces of a body, in seconds (``Http:BodyTimeoutSeconds``' default).
    body_pause_seconds: float = declared("http_body_timeout_seconds").default
    #: Seconds a whole body may take from the end of its head (``MaxAudioSeconds`` plus the pause, as the server sets it).
    body_seconds: float = declared("max_audio_seconds").default + declared("http_body_timeout_seconds").default
    #: Longest a refused request's connection is read and dropped after its answer (lingering close), in seconds.
    linger_seconds: float = 2.0
    #: A lingering close ends once the client has sent nothing for this long.
    linger_pause_seconds: float = 1.0
    #: Most requests of one connection parsed and not yet answered (the one being answered included): the one being
    #: answered and the next, ready to start once it is; what the client pipelined after them waits unparsed.
    max_pipelined: int = 2
    #: Most headers in a request head.
    max_headers: int = MAX_HEADERS


class LimitedHttpTools(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` that refuses heads over :attr:`limits` and reads that take too long."""

    limits: ClassVar[HttpLimits] = HttpLimits()
    #: Where refusals are counted (the app's metrics), if anywhere.
    metrics: ClassVar[Counters | None] = None
    #: The server's cap on open connections (``Http:MaxConnections``), if any.
    cap: ClassVar[ConnectionCap | None] = None
    #: The app's CORS policy (``Http:CorsOrigins``: :func:`~speech_recognizer.cors.instance`), if any: its refusals' headers.
    cors: ClassVar[CORSMiddleware | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timer: asyncio.TimerHandle | None = None
        #: "head" (waiting for or reading a request head), "body" (reading a body), "waiting" (a refused request's
        #: answer waits for the answers of the requests before it: dropping what comes), "linger" (answered
        #: before the body was in: reading and dropping what comes until the close), or "done" (closed, upgraded).
        self._phase = "head"
        self._head_bytes = 0
        #: Headers of the head being parsed.
        self._headers_seen = 0
        #: Whether the parser has begun the next request (its bytes may have come in the read that ended the one before:
        #: pipelined, they are not in ``_head_bytes``).
        self._head_begun = False
        #: When the body must have arrived (the loop's clock), and whether the timer is armed for that.
        self._body_deadline = 0.0
        self._until_deadline = False
        #: Since when (the loop's clock) the server has read no more of the body, its app not asking (None: reading).
        self._unasked_since: float | None = None
        #: Whether the request's connection stays open after its answer, once its body is all in.
        self._keep_alive = False
        #: A refusal (kind, message, cause) answered once the requests before it are ("waiting" phase).
        self._waiting: tuple[Kind, str, BaseException | None] | None = None
        #: When a lingering close ends at the latest (the loop's clock).
        self._linger_deadline = 0.0
        #: The head of a request whose upgrade is ignored, to be parsed again without it (:meth:`_unupgraded`).
        self._unupgraded_head: bytes | None = None
        #: Bytes read and not parsed yet, from an offset: the requests pipelined behind :attr:`HttpLimits.max_pipelined`
        #: others waiting for their answers (reading is paused meanwhile).
        self._held: tuple[bytes, int] | None = None
        #: The last bytes fed to the parser (up to 3): a ``CRLF CRLF`` may straddle two pieces.
        self._tail = b""
        #: Bytes of the body being read still to come, when its ``Content-Length`` says (None: chunked, or none).
        self._body_left: int | None = None
        #: Where the chunked body being read ends (None: not chunked, or its framing could not be followed).
        self._chunks: ChunkedBody | None = None
        #: The pieces of body the parser gave during one read, handed to the request at once (:meth:`_flush_body`).
        self._body_parts: list[bytes] = []
        #: Opened past ``Http:MaxConnections``: one request read, a probe or upgrade served, anything else refused.
        self.over_cap = False
        #: When (the loop's clock) it began waiting for a request (its opening, or the end of its last answer).
        self._waiting_since = 0.0
        #: The client has ended what it sends (its FIN: a half-close, or a close): the requests it sent whole are
        #: answered, then the connection closes (:meth:`eof_received`).
        self._client_done = False
        #: Polls whether a client that ended what it sends is still there to read (:meth:`_still_there`).
        self._presence: asyncio.TimerHandle | None = None
        #: Whether it was asked whether it is still there (:meth:`_probe`: once).
        self._probed = False
        #: When a client whose request waits unread, no end seen, is to be probed next (:meth:`_gone_unread`: the loop's time).
        self._probe_at = 0.0
        #: The request being answered (uvicorn's ``cycle`` is the last one parsed: a pipelined one may wait behind it).
        self._answering: RequestResponseCycle | None = None
        #: The ``Origin`` of the head being read, once its line came (read with :attr:`cors` only): a refused head's.
        self._origin = cors.HeadOrigin()

    # ---- timers

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._timer = self.loop.call_later(max(0.0, seconds), self._expired)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        if self._phase == "linger":
            self._phase = "done"
            self.transport.close()
        elif self._phase == "head":
            self._refuse(UPLOAD_TIMEOUT, f"the request's head did not arrive within {self.limits.header_seconds:g} s (Http:HeaderTimeoutSeconds)")
        elif self._phase == "body" and self._until_deadline:
            self._refuse(UPLOAD_TIMEOUT, f"the request's body did not arrive within {self.limits.body_seconds:g} s "
                                         "(MaxAudioSeconds plus Http:BodyTimeoutSeconds)")
        elif self._phase == "body":
            self._refuse(UPLOAD_TIMEOUT, f"the request's body paused for {self.limits.body_pause_seconds:g} s (Http:BodyTimeoutSeconds)")

    def _body_timer(self) -> None:
        """Armed for the longest pause, or for the whole body's deadline when that comes first; not while the server
        reads no more of the body (:meth:`_reading_paused`)."""
        if self._unasked_since is not None:
            self._disarm()
            return
        left = self._body_deadline - self.loop.time()
        self._until_deadline = left <= self.limits.body_pause_seconds
        self._arm(min(self.limits.body_pause_seconds, left))

    def _reading_paused(self) -> None:
        """The server reads no more of the connection (:class:`_HeldFlow`): in a body, until its app asks for what
        was read ahead (uvicorn pauses past 64 KiB unasked-for) or the request before it is answered (pipelined). The
        client can send no more meanwhile (what it sends waits in the kernels' buffers): the body's timers stop, not to
        blame it for the server's pause (a recognition's model loading on demand for longer than the pause)."""
        if self._phase == "body" and self._unasked_since is None:
            self._disarm()
            self._unasked_since = self.loop.time()

    def _reading_resumed(self) -> None:
        """The server reads again (the app asked for the body): the longest pause is the client's again, from now,
        and the whole body's deadline moves by the time the server did not read."""
        since, self._unasked_since = self._unasked_since, None
        if self._phase == "body" and since is not None:
            self._body_deadline += self.loop.time() - since
            self._body_timer()

    def _refuse(self, kind: Kind, message: str, cause: BaseException | None = None) -> None:
        """Answer a failure of ``kind`` (unless a response has begun), close the connection, and tell the app it is gone.

        A refused head that follows requests still being answered on its connection (pipelined) is answered after
        them (:meth:`on_response_complete`): what the client sends meanwhile is dropped."""
        if self._phase == "head" and self.cycle is not None and not self.cycle.response_complete:
            self._disarm()
            self._phase, self._waiting = "waiting", (kind, message, cause)
            return
        phase, self._phase = self._phase, "done"
        self._disarm()
        self._body_parts.clear()
        self._held = None
        if self.transport.is_closing():
            return
        failure = Failure(f"{message}; from {self._peer(phase == 'body')}", kind)
        failure.__cause__ = cause
        observe(failure, "http", self.metrics)
        cycle = self.cycle
        if cycle is None or phase == "head" or not cycle.response_started:
            # a body refused on OpenAI's route gets OpenAI's error shape, as the route's own refusals do
            openai = phase == "body" and cycle is not None and cycle.scope.get("path") == ROUTE_OPENAI_TRANSCRIPTIONS
            extra = cors.headers(self.cors, self._refused_head(phase), kind.http)
            self.transport.write(http_response_bytes(Failure(message, kind), openai=openai, extra=extra))
        if cycle is not None and not cycle.response_complete:
            if phase == "body":  # the app hears its client gone: this refusal, counted here (errors.refused_by_server)
                extensions: dict[str, Any] = cycle.scope.setdefault("extensions", {})
                extensions[REFUSED_BODY] = failure
            cycle.disconnected = True  # the app's receive() now says http.disconnect; its send() writes nothing
            cycle.message_event.set()
        self._close_after_answer(linger=phase in ("head", "body"))

    def _refused_head(self, phase: str) -> Headers:
        """The header lines of the request a refusal in ``phase`` answers: the head of the request whose body is refused,
        or the ``Origin`` of the head being read, as far as it came."""
        if phase == "body" and self.cycle is not None:
            return Headers(raw=list(self.cycle.scope["headers"]))
        return self._origin.request()

    def _close_after_answer(self, *, linger: bool) -> None:
        """Close the connection after an answer: a lingering close if the client may still be sending."""
        if not linger or self._client_done or self.transport.is_closing():
            self._phase = "done"
            self.transport.close()
            return
        self._phase = "linger"
        self._held = None  # what was pipelined after a closing answer is read and dropped
        self._disarm()
        self._linger_deadline = self.loop.time() + self.limits.linger_seconds
        self._linger_timer()
        self.flow.resume_reading()  # a body the app did not read may have paused reading
        if self.transport.can_write_eof():
            self.transport.write_eof()  # the answer is all: the client reads it to its end

    def _linger_timer(self) -> None:
        self._arm(min(self.limits.linger_pause_seconds, self._linger_deadline - self.loop.time()))

    def _peer(self, head_in: bool = False) -> str:
        """Whom a refusal names: the connection's other end; with ``head_in`` (the request's head is in, its app
        started) and a client a trusted proxy named (``scope["client"]``: :class:`~.forwarded.ForwardedClient`), that
        client first, as the access log names it: behind the gateway, its peer is always the gateway's pod."""
        named = self.cycle.scope.get("client") if head_in and self.cycle is not None else None
        if named and tuple(named) != tuple(self.client or ()):
            return f"{named[0]} by way of {peer(self.client)}"
        return peer(self.client)

    # ---- the connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.client, self.server = _unmapped(self.client), _unmapped(self.server)
        self.flow = _HeldFlow(transport, self)
        self._waiting_since = self.loop.time()
        self._arm(self.limits.header_seconds)  # a connection that sends nothing is closed too
        if self.cap is not None:
            self.over_cap = not self.cap.admit(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._phase = "done"
        self._held = None
        self._disarm()
        if self._presence is not None:
            self._presence.cancel()
            self._presence = None
        if self.cap is not None:
            self.cap.release(self)
        super().connection_lost(exc)

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        """uvicorn's (0.54), which starts answering ``cycle``: the one :meth:`_probe` may ask about."""
        self._answering = cycle
        super()._start_asgi_task(cycle, app)

    def handle_websocket_upgrade(self) -> None:
        """uvicorn's; the connection leaves ``Http:MaxConnections`` (a recognition WebSocket is ``MaxConnections``')."""
        if self.cap is not None:
            self.cap.release(self)
        super().handle_websocket_upgrade()

    # ---- as Http:MaxConnections sees it (connection_cap.Reusable)

    def idle_since(self) -> float | None:
        """When it began waiting for a request of which no byte has come (its opening, or its last answer's end); None
        while it is busy: a head or body arriving, a request being answered, requests held, closing."""
        if self._phase != "head" or self._head_begun or self._head_bytes or self._held is not None or self._ahead():
            return None
        return None if self.transport.is_closing() else self._waiting_since

    def unread(self) -> int:
        return unread_bytes(self.transport)

    def unsent(self) -> int:
        return unsent_bytes(self.transport)

    def close_idle(self) -> None:
        """Closed at once, as the keep-alive timer closes it but, idle, with a reset unless an answer is still on its way
        (:func:`~speech_recognizer.connection_cap.reset_on_close`: a proxy taking it from its pool just then tries another
        connection): the cap needs its place (past the cap, whatever it does)."""
        if self.idle_since() is not None:
            reset_on_close(self.transport)
        self._phase = "done"
        self._held = None
        self._disarm()
        if not self.transport.is_closing():
            self.transport.close()

    def shutdown(self) -> None:
        """uvicorn's (the server stops: an idle connection closed at once, one whose request is in progress closed after
        its answer), except that a body completing after it does not bring keep-alive back (:meth:`on_message_complete`)."""
        self._keep_alive = False
        super().shutdown()

    def end_keep_alive(self) -> None:
        """The server drains (:class:`~speech_recognizer.drain.DrainingServer`): keep-alive ends as in :meth:`shutdown`,
        except that a connection already closing (lingering, or waiting to refuse) closes as it does, and one whose
        request is coming (its head arriving, or a new connection that has sent nothing yet: its client connected to
        send one) is answered, not cut; the answers say ``Connection: close`` then
        (:class:`~speech_recognizer.drain.DrainMiddleware`), and the head's deadline holds."""
        if self._phase in ("linger", "done", "waiting") or (
                self._phase == "head" and (self._head_bytes or self._head_begun or self._held or self.cycle is None)):
            self._keep_alive = False
            return
        self.shutdown()

    def data_received(self, data: bytes) -> None:
        if self._phase == "done":
            return
        if self._phase == "linger":  # dropped, unparsed
            self._linger_timer()
            return
        if self._phase == "waiting":  # dropped, unparsed
            return
        if self._held is not None:  # behind the requests held: after them (reading is paused; a read under way)
            held, at = self._held
            self._held = None
            data = held[at:] + data
        self._parse(data)

    def eof_received(self) -> bool | None:  # type: ignore[override]  # asyncio.Protocol's: True keeps the connection
        """The client's end of stream (its FIN). uvicorn closed the connection then (its ``eof_received`` returns None,
        and the event loop closes the transport): a client that pipelined requests and half-closed (``shutdown(SHUT_WR)``,
        ``nc -N``) had the answer already on its way or none, never the rest. A half-close ends what the client sends,
        not what it reads: the requests it sent whole are answered, in order (RFC 9112, 9.3.2), then the connection
        closes (:meth:`_end_if_answered`). One it left unfinished (a head or body cut off) is not answered: the
        connection closes after the answers before it, at once when there are none (a client gone mid-upload). A client
        whose socket is closed sent the same FIN: :meth:`_probe` tells it apart while a request is in progress."""
        if self._phase not in ("head", "body", "waiting") or (self._ahead() <= (self._phase == "body") and self._held is None):
            return None  # nothing to answer (idle, a head or body cut off), or lingering (it ends at the client's end)
        self._client_done = True
        self._probe()
        return True

    def _end_if_answered(self) -> None:
        """After the client's end of stream: the connection closes once every request it sent whole is answered (a
        request whose body was cut off by that end never is)."""
        if (self._client_done and self._phase in ("head", "body") and self._held is None
                and self._ahead() <= (self._phase == "body") and not self.transport.is_closing()):
            self._phase = "done"
            self._disarm()
            self.transport.close()

    def _probe(self) -> None:
        """Whether a client that ended what it sends still reads: after a half-close it does, after a close it does not,
        and both send the same FIN. An answer tells them apart by its writes (a closed socket answers them with a
        reset); a request with content whose answer has not begun (a recognition decoding) is told by an interim
        ``100 Continue`` first, once, which an HTTP/1.1 client takes before the final answer whether it expected one or
        not (RFC 9110, 15.2). A closed socket resets the connection then, and it is lost at once (:meth:`_still_there`),
        as when the client resets it: the app's ``receive()`` says ``http.disconnect``, and a recognition gives its
        decoder back without decoding the rest for nobody. Requests without content get none (their answers are quick);
        an HTTP/1.0 client gets no 1xx (RFC 9110, 15.2): it is answered, whichever it did."""
        cycle = self._answering
        if (not self._client_done or self._probed or cycle is None or cycle.response_started or cycle.response_complete
                or cycle.scope.get("http_version") != "1.1" or self.transport.is_closing()):
            return
        if not any(name in (b"transfer-encoding", b"content-length") and value.strip() not in (b"", b"0")
                   for name, value in cycle.scope["headers"]):
            return
        self._probed = True
        self.transport.write(CONTINUE)
        self._presence = self.loop.call_later(PRESENCE_POLL_SECONDS, self._still_there)

    def _gone_unread(self, cycle: RequestResponseCycle | None) -> bool:
        """:data:`~.connection_cap.CLIENT_ENDED`: whether the client of ``cycle`` (a request being answered) has gone,
        though what it sent may wait unread: the app reads a body only once it can use it (a recognition once its
        model is loaded), and uvicorn reads no more than 64 KiB ahead of the app, so the client's end of the
        connection, behind the rest, was seen only once the app read on. Gone: uvicorn's disconnect; a reset (the
        connection then lost, as :meth:`_still_there` loses it); or a FIN, or no end seen, whose probe (an interim
        ``100 Continue``, as :meth:`_probe`'s: at the first look that finds the FIN, and every
        :data:`HELD_PROBE_SECONDS` with no end seen) a closed socket answered with a reset. A socket closed with its
        body still in its own kernel, behind the server's shut window, had its FIN queued behind it, unseen. A client
        that half-closed after its request, or is still sending, takes the probes in (an HTTP/1.1 client takes any
        1xx before the final answer, RFC 9110 15.2), and is answered. An HTTP/1.0 client is never probed. Asked by the
        app only (:func:`~speech_recognizer.rest.client_gone`), while it waits for a model."""
        if cycle is None or cycle.disconnected:
            return True
        if cycle.response_started or self._phase == "done" or self.transport.is_closing():
            return False
        end = peer_end(self.transport)
        if end == "reset":
            self.transport.abort()  # uvicorn's connection_lost: the request is told its client is gone
            return True
        if cycle.scope.get("http_version") != "1.1":
            return False
        if (end == "fin" and not self._probed) or (end is None and self.loop.time() >= self._probe_at):
            self._probed = self._probed or end == "fin"
            self._probe_at = self.loop.time() + HELD_PROBE_SECONDS
            cycle.waiting_for_100_continue = False  # sent here: not again at the app's first read
            self.transport.write(CONTINUE)
        return False

    def _still_there(self) -> None:
        """After :meth:`_probe`: the connection is lost if the client reset it, else looked at again until what was sent
        to it is acknowledged (then it reads: it half-closed)."""
        self._presence = None
        if self._phase == "done" or self.transport.is_closing():
            return
        if reset_by_peer(self.transport):
            self.transport.abort()  # uvicorn's connection_lost: the request in progress is told its client is gone
        elif unacknowledged_bytes(self.transport):
            self._presence = self.loop.call_later(PRESENCE_POLL_SECONDS, self._still_there)

    def _ahead(self) -> int:
        """Requests parsed and not answered yet: the one being answered and those queued behind it."""
        if self.pipeline:
            return len(self.pipeline) + 1
        return int(self.cycle is not None and not self.cycle.response_complete)

    def _parse(self, data: bytes, at: int = 0) -> None:
        """Feed ``data`` from ``at`` to the parser a piece at a time (:meth:`_piece_end`), until it is all parsed, the connection
        is refused or upgraded, or :attr:`HttpLimits.max_pipelined` requests wait for their answers with the next
        not begun: then the rest is held, and reading paused, until an answer is done (:meth:`on_response_complete`)."""
        while at < len(data) and self._phase in ("head", "body"):
            if self._phase == "head" and not self._head_begun and self._ahead() >= self.limits.max_pipelined:
                self._held = (data, at)
                self.flow.pause_reading()
                break
            end = self._piece_end(data, at)
            if self._phase == "head":
                if self._timer is None:  # the first byte of a request after the previous one
                    self._arm(self.limits.header_seconds)
                self._head_bytes += end - at
                if self.cors is not None:
                    self._origin.see(data[at:end])
            again = self._feed(memoryview(data)[at:end])
            if again is not None:  # an ignored upgrade: its head again without it, then what followed it
                self._head_bytes -= end - at  # counted once, as parsed again
                data, at = again + data[end:], 0
                continue
            at = end
            if self._phase == "head" and self._head_bytes > self.limits.max_header_bytes:
                self._too_large()
        self._flush_body()
        if self._phase == "body":
            self._body_timer()

    def _piece_end(self, data: bytes, at: int) -> int:
        """Where the next piece of ``data`` from ``at`` ends: a ``Content-Length`` body's end, a chunked body's
        (:class:`ChunkedBody`), else just after the next ``CRLF CRLF`` (a head's end; also a chunked body's whose
        framing could not be followed: no message ends elsewhere), else the end of ``data``."""
        if self._phase == "body" and self._body_left is not None:
            return min(len(data), at + max(1, self._body_left))
        if self._phase == "body" and self._chunks is not None:
            try:
                end = self._chunks.end(data, at)
            except _Unfollowed:  # the parser will refuse it (ChunkedBody.end): the old rule for the rest of it
                self._chunks = None
            else:
                return len(data) if end is None else end
        end = _crlfcrlf_end(data, at, self._tail)
        return len(data) if end is None else end

    def _feed(self, piece: memoryview) -> bytes | None:
        """uvicorn's ``HttpToolsProtocol.data_received`` (uvicorn 0.54) for one piece, except that a request the parser
        refuses is :meth:`_malformed`, and that an upgrade other than to a WebSocket is ignored (:meth:`_unupgraded`):
        then what to parse in place of the piece's rest is returned (the request's head without the upgrade, then
        what followed it), for a new parser. uvicorn has no hook for that answer: its ``data_received`` logs a
        warning of its own, then ``send_400_response`` writes a plain-text 400 and closes at once; overriding that
        method alone would keep the warning and lose the parser's reason. The WebSocket upgrade is uvicorn's, unchanged."""
        self._unset_keepalive_if_required()
        self._tail = (self._tail + bytes(piece[-3:]))[-3:]
        try:
            self.parser.feed_data(piece)
        except httptools.HttpParserError as exc:
            self._malformed(exc)
        except httptools.HttpParserUpgrade as upgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            elif self._unupgraded_head is not None:  # the same request again, without its Upgrade, then what follows it
                again, self._unupgraded_head = self._unupgraded_head + bytes(piece[upgrade.args[0]:]), None
                self.parser = httptools.HttpRequestParser(self)  # as uvicorn 0.54 makes it: this one may have seen
                self.parser.set_dangerous_leniencies(lenient_data_after_close=True)  # Connection: close, and drop the rest
                self._tail = b""
                return again
        return None

    def _malformed(self, exc: httptools.HttpParserError) -> None:
        """A request the parser refused: 400 with its reason (:func:`~speech_recognizer.errors.malformed_reason`).
        A callback of ours that failed on something other than the client's bytes is a bug of ours: 500, logged
        with its traceback."""
        inner = exc.__context__ if isinstance(exc, httptools.HttpParserCallbackError) else exc
        if inner is None or isinstance(inner, httptools.HttpParserError):
            self._refuse(MALFORMED_REQUEST, malformed_reason(str(inner or exc)))
        else:
            self._refuse(INTERNAL, f"internal error ({type(inner).__name__}) reading the request; the server logged the details", inner)

    def _too_large(self) -> None:
        self._refuse(HEADER_TOO_LARGE, f"the request's head is over {self.limits.max_header_bytes} bytes (Http:MaxHeaderBytes)")

    # ---- parser callbacks

    def on_message_begin(self) -> None:
        if self._phase == "head":
            self._head_begun = True
            self._headers_seen = 0
            if self._timer is None:  # pipelined: its first bytes came in the read that ended the request before it
                self._arm(self.limits.header_seconds)
            super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        if self._phase == "head":
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._phase != "head":
            return
        self._headers_seen += 1
        if self._headers_seen > self.limits.max_headers:  # refused before it is kept: the parser's other calls are ignored
            self._refuse(HEADER_TOO_LARGE, f"the request's head has over {self.limits.max_headers} headers")
            return
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._phase != "head":
            return
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.limits.max_header_bytes:  # the whole head came in one read
            self._too_large()
            return
        self._disarm()
        upgrading = self.parser.should_upgrade() and self._should_upgrade()
        if self.parser.should_upgrade() and not upgrading and any(name == b"upgrade" for name, _ in self.headers):
            self._unupgraded_head = self._unupgraded()
            return
        if (self.over_cap and self.cap is not None and not upgrading
                and httptools.parse_url(self.url).path.decode("latin-1") not in PASSED_AT_CAP and not self._preflight()):
            failure = self.cap.refusal()
            self._refuse(failure.kind, failure.message)
            return
        self._phase = "done" if upgrading else "body"
        self._origin.clear()
        self._body_left, chunked = self._framing()
        self._chunks = ChunkedBody() if chunked and not upgrading else None
        if not upgrading:
            self._body_deadline = self.loop.time() + self.limits.body_seconds
            self._unasked_since = self.loop.time() if self.flow.read_paused else None  # held for the requests before it
            self._body_timer()
        super().on_headers_complete()
        cycle = self.cycle
        if not upgrading and cycle is not None and not cycle.response_complete:
            # An answer before the body is all in closes the connection (on_message_complete restores
            # keep-alive once it is in), lingering: the cycle closes through _AnswerClose.
            self._keep_alive, cycle.keep_alive = cycle.keep_alive and not self.over_cap, False  # past the cap: one answer
            cycle.transport = _AnswerClose(self, cycle)  # type: ignore[assignment]
            this, asked = weakref.proxy(self), weakref.ref(cycle)  # held weakly: no cycle for the collector to find
            extensions: dict[str, Any] = cycle.scope.setdefault("extensions", {})
            extensions[CLIENT_ENDED] = lambda: this._gone_unread(asked())

    def _preflight(self) -> bool:
        """The head just read is a browser's CORS preflight, which the app answers (``Http:CorsOrigins``)."""
        return self.cors is not None and cors.is_preflight(self.parser.get_method().decode("latin-1"), Headers(raw=self.headers))

    def _unupgraded(self) -> bytes:
        """The request's head without its ``Upgrade`` (``h2c`` from ``curl --http2``, say): what :meth:`_feed` parses
        in its place. An upgrade the server does not take is ignored (RFC 9110, 7.8), but httptools parses no body after
        an ``Upgrade`` and stops at the end of its head; uvicorn 0.54 dropped what followed, so that its body and any
        request pipelined after it were never read (the connection waited for its keep-alive to end)."""
        lines = [b"%s %s HTTP/%s" % (self.parser.get_method(), self.url, self.parser.get_http_version().encode())]
        for name, value in self.headers:
            if name == b"connection":
                value = b",".join(token for token in value.split(b",") if token.strip().lower() != b"upgrade")
            if name != b"upgrade" and value.strip():
                lines.append(name + b": " + value)
        return b"\r\n".join(lines) + b"\r\n\r\n"

    def _framing(self) -> tuple[int | None, bool]:
        """The request's ``Content-Length`` (the parser has checked it) unless its body is chunked, and whether it is (the
        parser took its ``Transfer-Encoding: chunked`` last, as a request's must be: RFC 9112, 6.3); one pass over the headers."""
        lengths = [(name, value) for name, value in self.headers if name in (b"content-length", b"transfer-encoding")]
        chunked = any(name == b"transfer-encoding" for name, _ in lengths)
        if len(lengths) == 1 and not chunked and lengths[0][1].strip().isdigit():
            return int(lengths[0][1]), False
        return None, chunked

    def on_body(self, body: bytes) -> None:
        if self._phase == "body":
            self._body_parts.append(body)  # a chunked body may come in many small pieces: joined once (_flush_body)
            if self._body_left is not None:
                self._body_left -= len(body)

    def _flush_body(self) -> None:
        """The body the pieces of this read gave, to the request: one ``bytes +=`` in uvicorn, not one per piece."""
        if self._body_parts:
            body = b"".join(self._body_parts)
            self._body_parts.clear()
            if self._phase == "body":
                super().on_body(body)

    def on_message_complete(self) -> None:
        if self._phase != "body":
            return
        self._flush_body()
        self._disarm()
        self._chunks = None
        self._phase = "head"  # the next request's deadline starts at its first byte
        self._head_bytes = 0
        self._head_begun = False
        if self.cycle is not None and not self.cycle.response_started:
            self.cycle.keep_alive = self._keep_alive
        super().on_message_complete()

    def on_response_complete(self) -> None:
        if self._phase in ("linger", "done"):  # no next request: the connection is closing
            return
        super().on_response_complete()
        self._waiting_since = self.loop.time()
        if self._held is not None and self._phase == "head" and not self.transport.is_closing():
            held, at = self._held  # the requests pipelined behind the ones answered: their turn to be parsed
            self._held = None
            self._parse(held, at)
            if self._held is None:  # all parsed: reading goes on (uvicorn's resume above came while it was held)
                self.flow.resume_reading()
        if self._phase == "head" and self._head_begun:  # a pipelined head is arriving: its deadline bounds it, not keep-alive
            self._unset_keepalive_if_required()
        if self._phase == "waiting" and not self._ahead() and self._waiting is not None:  # every answer before it is done
            self._unset_keepalive_if_required()
            (kind, message, cause), self._waiting = self._waiting, None
            self._phase = "head"
            self._refuse(kind, message, cause)
        self._end_if_answered()
        self._probe()  # the next request's turn (its cycle has started)


def _crlfcrlf_end(data: bytes, at: int, tail: bytes) -> int | None:
    """Just after the first ``CRLF CRLF`` of ``data`` from ``at``, counting one that begins in ``tail`` (up to 3 bytes
    that came just before ``at``); None if there is none."""
    straddling = (tail + data[at:at + 3]).find(b"\r\n\r\n")
    if straddling >= 0:
        return at + straddling + 4 - len(tail)
    found = data.find(b"\r\n\r\n", at)
    return None if found < 0 else found + 4


class _Unfollowed(Exception):
    """A chunked body's framing that :class:`ChunkedBody` cannot follow: one that httptools refuses."""


class ChunkedBody:
    """Where a chunked body ends (RFC 9112, 7.1), followed as it comes, a read at a time: each chunk's size line is
    read, its data and the ``CRLF`` after it skipped by that size, then after the last chunk (size 0) the trailers
    end at the first empty line. The cost is per chunk, not per byte: so a body's pieces (:meth:`LimitedHttpTools._piece_end`)
    end where it does, not at every ``CRLF CRLF`` in its data (a body made of them was fed 2 bytes at a time, each piece
    a parser call on the event loop).

    Hand-written because httptools (llhttp) says neither where in a buffer a message ended nor lets its parser stop
    there: it is the parser that validates, this only says where a piece ends. It follows every body llhttp takes the
    way llhttp does (hex digits, ``;`` extensions up to the line's ``CRLF``, no bare ``LF``, no whitespace); what
    llhttp refuses it may follow another way or give up on (:class:`_Unfollowed`), which is harmless either way: the
    parser stops at the fault, so nothing after it is parsed, and no piece completes more than one request."""

    __slots__ = ("_line", "_left", "_trail", "_ended")

    def __init__(self) -> None:
        #: The start of a size line a read ended in, as much as its end needs (:meth:`_begun`); b"" at a chunk's start.
        self._line = b""
        #: Bytes still to skip: the rest of a chunk's data and its ``CRLF``.
        self._left = 0
        #: After the last chunk: the last bytes (up to 3) before the read, for a ``CRLF CRLF`` that straddles two.
        self._trail: bytes | None = None
        self._ended = False

    def end(self, data: bytes, at: int) -> int | None:
        """Just after the body's end in ``data`` from ``at`` (where the previous call's piece ended), or None if it
        goes on past ``data``; raises :class:`_Unfollowed` when its framing cannot be followed (or it has ended)."""
        if self._ended:
            raise _Unfollowed("the body ended before")
        if self._trail is not None:
            return self._trailers(data, at, self._trail)
        n = len(data)
        p = at + self._left
        if self._line:  # a size line begun in an earlier read
            line = self._line
            if line.endswith(b"\r") and data.startswith(b"\n", at):
                line, p = line[:-1], at + 1
            else:
                eol = data.find(b"\r\n", at)
                if eol < 0:
                    self._line = self._begun(line + data[at:])
                    return None
                line, p = line + data[at:eol], eol + 2
            self._line = b""
            size = self._size(line)
            if not size:
                return self._trailers(data, p, b"\r\n")
            p += size + 2
        find = data.find
        while p < n:  # the common case, a whole size line in this read: one find and one int() per chunk
            eol = find(b"\r\n", p)
            if eol < 0:
                self._line, self._left = self._begun(data[p:]), 0
                return None
            try:
                size = int(data[p:eol], 16)
            except ValueError:  # an extension (or a fault)
                size = self._size(data[p:eol])
            if size <= 0:
                if size:
                    raise _Unfollowed("a negative chunk size")
                self._left = 0
                return self._trailers(data, eol + 2, b"\r\n")
            p = eol + size + 4  # the line's CRLF, the data, its CRLF
        self._left = p - n
        return None

    def _trailers(self, data: bytes, at: int, tail: bytes) -> int | None:
        """After the last chunk's size line (``tail``: the bytes before ``at``): the body ends at the first empty line."""
        end = _crlfcrlf_end(data, at, tail)
        if end is None:
            self._trail = (tail + data[at:])[-3:] if len(data) - at < 3 else data[-3:]
        else:
            self._trail, self._ended = None, True
        return end

    @staticmethod
    def _size(line: bytes) -> int:
        """The chunk size a size line (without its ``CRLF``) gives: its hex digits, before any ``;`` extension."""
        digits = line.partition(b";")[0]
        if not digits or not digits.isalnum():  # int() takes signs, spaces and underscores, llhttp does not
            raise _Unfollowed("no chunk size")
        try:
            return int(digits, 16)
        except ValueError:
            raise _Unfollowed("a chunk size that is not hex") from None

    @staticmethod
    def _begun(start: bytes) -> bytes:
        """What of a size line's start its end needs: its digits without their leading zeros (a valid size has 16 at
        most), whether an extension has begun (its text is llhttp's to check), whether a ``CR`` came last."""
        cr = start.endswith(b"\r")
        digits, semicolon, _ = (start[:-1] if cr else start).partition(b";")
        significant = digits.lstrip(b"0")
        if len(significant) > 16:
            raise _Unfollowed("a chunk size over 16 hex digits")
        return (significant or digits[:1]) + semicolon + (b"\r" if cr else b"")


class _HeldFlow(FlowControl):
    """uvicorn's flow control, except that reading stays paused while requests are held unparsed: uvicorn resumes it
    whenever an app asks for its request's body (``receive``), and each read then came in behind those held (a read per
    recognition pipelined among other requests: the held bytes grew to all a client sent). Its protocol is told when
    reading pauses and resumes (:meth:`LimitedHttpTools._reading_paused`: a body's timers do not run meanwhile)."""

    def __init__(self, transport: asyncio.Transport, protocol: LimitedHttpTools) -> None:
        super().__init__(transport)
        self._protocol = protocol

    def pause_reading(self) -> None:
        if not self.read_paused:
            super().pause_reading()
            self._protocol._reading_paused()

    def resume_reading(self) -> None:
        if self._protocol._held is None and self.read_paused:
            super().resume_reading()
            self._protocol._reading_resumed()


class _AnswerClose:
    """The transport a request's cycle writes its answer on: the connection's own, except that the
    cycle's close is a lingering close if the client may still be sending: after an answer with
    ``Connection: close`` (what it pipelined behind that request is not read: uvicorn 0.54 sets the cycle's
    ``response_complete`` before this close), or while its body is not all in. A close of a cut answer (the
    app failed after it had begun) is at once."""

    def __init__(self, protocol: LimitedHttpTools, cycle: RequestResponseCycle) -> None:
        self._protocol = protocol
        self._transport = protocol.transport
        self._cycle = cycle

    def close(self) -> None:
        if self._protocol._phase not in ("linger", "done"):
            self._protocol._close_after_answer(linger=self._protocol._phase in ("body", "waiting") or self._cycle.response_complete)

    def is_closing(self) -> bool:
        return self._protocol._phase in ("linger", "done") or self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _unmapped(address: tuple[str, _Port] | None) -> tuple[str, _Port] | None:
    """A connection's address as the app and the access log see it (``scope["client"]``, ``scope["server"]``): an IPv4
    one as IPv4 on a socket listening on both families (:func:`~speech_recognizer.addresses.unmapped`). The trust of
    ``X-Forwarded-For`` (:class:`~speech_recognizer.forwarded.ForwardedClient`) compares it too: uvicorn's did not
    trust ``::ffff:127.0.0.1``."""
    return (unmapped(address[0]), address[1]) if address else address


class UnmappedWebSockets(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol (the one it picks), with the connection's addresses as :class:`LimitedHttpTools`
    gives them (:func:`_unmapped`): an upgraded connection's protocol reads them from the socket again.

    websockets parses the upgrade's head again, with bounds of its own (:func:`websocket_head_bounds` makes them the
    head's), and may refuse a head httptools took: a body on the upgrade (``Content-Length``), say. Its refusal is then
    queued where uvicorn 0.54 never writes it, and the client waited for an answer for ever, on a connection no longer
    counted by ``Http:MaxConnections``; it is answered here, 400 with websockets' reason (``malformed_request``), logged
    and counted as :class:`LimitedHttpTools` refuses a head, and closed.

    What it reads is parsed :data:`~.frame_budget.FEED_BYTES` at a time, a turn of the event loop each, and a client
    whose frames pass :mod:`.frame_budget`'s bounds is closed (:meth:`_cut_off`)."""

    #: Where its refusals are counted (:func:`~speech_recognizer.serving.server_options` sets it).
    metrics: ClassVar[Counters | None] = None
    #: Longest a send waits while the client takes in nothing of what waits unsent (``AudioIdleSeconds``:
    #: :func:`~speech_recognizer.serving.server_options` sets it; :meth:`send`).
    stall_seconds: ClassVar[float] = math.inf

    #: Why :meth:`_reset_unless_taken_in` reset the connection, raised by the send that waited on it.
    _cut: Failure | None = None
    _cutter: asyncio.Task[None] | None = None
    #: The client has ended what it sends (its FIN, read: a half-close, or a close): :meth:`eof_received`.
    _client_done = False
    #: Polls whether a client that ended what it sends is still there to read (:meth:`_still_there`).
    _presence: asyncio.TimerHandle | None = None
    #: Whether its FIN, come behind what is not read yet, was probed (:meth:`_ended_unread`).
    _probed_unread = False
    #: When a client with no end seen, asked about, is to be probed next (:meth:`_ended_unread`: the event loop's time).
    _probe_at = 0.0
    #: What was read and is not parsed yet (:meth:`_parse_some`), and the parse of it scheduled.
    _unparsed: bytearray | None = None
    _parsing: asyncio.Handle | None = None
    #: Its control frames (:meth:`handle_ping`, :meth:`handle_pong`), from its connection (:meth:`connection_made`).
    _controls: ControlBudget
    #: Why it was closed for its frames (:meth:`_cut_off`): nothing it sends after is parsed.
    _flooded: Failure | None = None
    #: Reading is paused for what is not parsed yet, or for good after :meth:`_cut_off` (:meth:`_settle_reading`).
    _held = False

    def eof_received(self) -> bool | None:  # type: ignore[override]  # asyncio.Protocol's: True keeps the connection
        """The client's end of stream (its FIN), read after every message before it. uvicorn closed the connection then
        (its ``eof_received`` returns None): a /vosk client that sent its audio and ``{"eof" : 1}`` and half-closed
        (``shutdown(SHUT_WR)``, reading on) got none of the replies not yet on their way, never its final result. A
        half-close ends what the client sends, not what it reads: its messages are handled and answered, then the app
        hears the end (a disconnect with :data:`~.deadlines.HALF_CLOSED`), and its close goes without waiting for an
        answer that cannot come. A client whose socket is closed sent the same FIN: an unsolicited pong (a heartbeat no
        client answers, RFC 6455 5.5.3) tells it apart, as a closed socket answers it with a reset (:meth:`_still_there`):
        the connection is lost then, what its route read ahead dropped undecoded, as after a reset."""
        if not self.handshake_complete or self.close_sent or self.transport.is_closing():
            return None
        self._client_done = True
        self._probe()
        self._presence = self.loop.call_later(PRESENCE_POLL_SECONDS, self._still_there)
        return True

    def _probe(self) -> None:
        """An unsolicited pong: a client whose socket is closed answers it with a reset, one that half-closed takes it in."""
        self.conn.send_pong(b"")
        self.transport.write(b"".join(self.conn.data_to_send()))

    def _ended_unread(self) -> bool:
        """:attr:`~.deadlines.Backlog.ended`: whether the client's end of the connection has come behind what is not
        read yet and nobody is left to answer: a reset, or a FIN whose probe (:meth:`_probe`, sent at the first look
        that finds the FIN) a closed socket answered with a reset. A FIN alone was taken for a client gone: one that
        half-closed after its audio and reads on (its FIN behind more than the read-ahead) got nothing, not its final
        result, its audio dropped undecoded; it is read on now, its end heard when reached (:meth:`eof_received`).
        A connection lost since the probe (a reply's write met its reset first: the transport closed, its TCP state
        no longer said) is gone as well. With no end seen, the client is probed so every :data:`HELD_PROBE_SECONDS`:
        one whose socket closed behind what the server does not read (a close frame behind its audio, then its close
        timeout; its process gone) had its FIN wait in its own kernel behind that audio, unseen, until the server read
        it all (a model's load over, minutes of audio decoded for nobody)."""
        if self.disconnected:
            return self._probed_unread or bool(self._probe_at)
        end = peer_end(self.transport)
        if end == "fin" and not self._probed_unread and not self.close_sent and not self.transport.is_closing():
            self._probed_unread = True
            self._probe()
        elif end is None and not self.close_sent and not self.transport.is_closing() and self.loop.time() >= self._probe_at:
            # no end seen: a client whose socket closed with what it sent still unread (its close frame's timeout, its
            # process gone) has its FIN queued behind what the server's shut window keeps out; a probe reaching that
            # closed socket is answered with a reset
            self._probe_at = self.loop.time() + HELD_PROBE_SECONDS
            self._probe()
        return end == "reset"

    def _still_there(self) -> None:
        """After :meth:`eof_received`'s probe: the connection is lost if the client reset it, else looked at again until
        what was sent to it is acknowledged; then it reads (it half-closed), and the app hears the end of what it sends."""
        self._presence = None
        if self.disconnected or self.transport.is_closing():
            return
        if reset_by_peer(self.transport):
            self.transport.abort()  # connection_lost: the app's disconnect (1006)
        elif unacknowledged_bytes(self.transport):
            self._presence = self.loop.call_later(PRESENCE_POLL_SECONDS, self._still_there)
        else:
            end: Any = {"type": "websocket.disconnect", "code": 1006, HALF_CLOSED: True}  # a key beside ASGI's
            self.queue.put_nowait(end)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._presence is not None:
            self._presence.cancel()
            self._presence = None
        if self._parsing is not None:
            self._parsing.cancel()
            self._parsing = None
        self._unparsed = None
        super().connection_lost(exc)

    async def receive(self) -> Any:
        """uvicorn's, which resumes reading once its queue is empty: held still while what was read is not all parsed."""
        message = await super().receive()
        self._settle_reading()
        return message

    async def send(self, message: Any) -> None:
        """uvicorn's send, whose wait for a client to take in what waits unsent (its transport paused) had no bound: a
        client that never reads (its window shut, its kernel still acknowledging) held its stream's decoder, and a
        close, until the kernel gave the connection up (``TCP_USER_TIMEOUT``, 60 s of a shut window). Once it has taken
        in nothing for :attr:`stall_seconds` its connection is reset (nothing sent can reach it, a close frame neither)
        and :data:`~speech_recognizer.errors.NOT_READING` raised: the route ends as for a client gone."""
        if not self.writable.is_set() and not self.disconnected:
            await self._taken_in()
        await super().send(message)
        self._settle_reading()  # uvicorn's close resumes reading
        if message["type"] == "websocket.close" and self.close_timer is not None and self._client_done:
            self.close_timer.cancel()  # a client that half-closed cannot answer the close: the FIN follows it at once
            self.close_timer = None
            self.transport.close()
        elif message["type"] == "websocket.close" and self.close_timer is not None:  # its answer awaited
            self.close_timer.cancel()
            self.close_timer = self.loop.call_later(CLOSE_REPLY_SECONDS, self._unanswered, unsent_bytes(self.transport))

    def _unanswered(self, unsent: int) -> None:
        """In place of uvicorn's close timer (its ``close_timeout``, 10 s, fixed): the client has not answered the close
        for :data:`CLOSE_REPLY_SECONDS`, ``unsent`` bytes waiting unsent when it was sent. uvicorn closed the transport
        then: a FIN, queued behind what waits unsent. A client that takes nothing in held the connection until the kernel
        gave it up (``TCP_USER_TIMEOUT``), and one that had taken everything in and answers nothing (its kernel
        acknowledging the FIN) left the server's end in ``FIN_WAIT2`` for the kernel's ``tcp_fin_timeout`` (60 s). Both
        are reset now, gone at once; a client still taking in what waits (fewer bytes unsent than at the close) gets it,
        and the FIN, as before."""
        self.close_timer = None
        left = unsent_bytes(self.transport)
        if left and left < unsent:
            self.transport.close()
        else:
            reset(self.transport)

    async def _taken_in(self) -> None:
        """Wait until the transport takes writes again; raise :data:`~speech_recognizer.errors.NOT_READING` (the
        connection reset) once :attr:`stall_seconds` have passed in which the client took in none of what waits unsent
        (:meth:`_stalled`)."""
        unsent = await self._stalled(self.stall_seconds, lambda: not self.writable.is_set())
        if unsent is not None:
            reset(self.transport)
            raise not_reading(self.stall_seconds, unsent)
        if self._cut is not None:  # reset as the server stopped (shutdown)
            raise self._cut

    async def _stalled(self, seconds: float, waiting: Callable[[], bool]) -> int | None:
        """While ``waiting()``, look every :data:`STALL_POLL_SECONDS` whether the client took in any of what waits
        unsent: the bytes still unsent once it has taken in none for ``seconds``; None once ``waiting()`` no longer holds.

        What waits unsent is :func:`~speech_recognizer.connection_cap.unsent_bytes`, the kernel's send queue not yet
        sent with the transport's buffer. The transport's buffer alone moves only once the socket polls writable again,
        when about a third of its send buffer is free (Linux wakes a writer once the free space is half what is
        queued): a client reading slowly but steadily took longer than that to free it, and was cut although it read.
        What was written since the last look counts from then on."""
        loop = asyncio.get_running_loop()
        intake = Intake(unsent_bytes(self.transport), loop.time())
        while waiting():
            left = intake.since + seconds - loop.time()
            if left <= 0:
                return intake.unsent
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, STALL_POLL_SECONDS)):
                    # paused: woken as soon as the transport takes writes again; else (the stop's) a plain look
                    await (asyncio.sleep(STALL_POLL_SECONDS) if self.writable.is_set() else self.writable.wait())
            intake.look(unsent_bytes(self.transport), loop.time())
        return None

    def shutdown(self) -> None:
        """uvicorn's, when the server stops (the drain over, or at once): a close 1012 queued, the transport closed once
        what waits unsent is sent. A client that takes none of it in held the connection, and so the server's exit, for
        as long as a send waited on it (:attr:`stall_seconds`) or, with none waiting, until the kernel gave it up
        (``TCP_USER_TIMEOUT``, 60 s): past the drain's deadline and the pod's grace. Its connection is reset once it
        took in nothing for :data:`SHUTDOWN_STALL_SECONDS` (a client that reads gets what waits)."""
        super().shutdown()
        if self.transport.get_write_buffer_size() and self._cutter is None:
            self._cutter = asyncio.get_running_loop().create_task(self._reset_unless_taken_in())

    async def _reset_unless_taken_in(self) -> None:
        """Reset the connection once its client took in none of what waits unsent for :data:`SHUTDOWN_STALL_SECONDS`
        (:meth:`_stalled`; :data:`~speech_recognizer.errors.NOT_READING`: raised by a send waiting on it, else logged)."""
        unsent = await self._stalled(SHUTDOWN_STALL_SECONDS, lambda: not self.disconnected and bool(self.transport.get_write_buffer_size()))
        if unsent is None:
            return
        self._cut = Failure(f"the server stopped and the client took in none of its replies for "
                            f"{SHUTDOWN_STALL_SECONDS:g} s, {unsent} bytes waiting unsent: its connection was reset", NOT_READING)
        waiting = not self.writable.is_set()
        reset(self.transport)
        if not waiting:  # no send of its route raises it: said here
            log.info("%s: %s", peer(self.client), self._cut)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.client, self.server = _unmapped(self.client), _unmapped(self.server)
        self._controls = ControlBudget(self.loop.time())

    def handle_connect(self, event: Any) -> None:
        """uvicorn's, the app then told what waits unsent to its client (the scope's :data:`~.deadlines.BACKLOG`): a
        client whose replies fit the buffers, and so stall no send, is told from an idle one by it (:mod:`.deadlines`);
        and whether its end of the connection has come, unread (/vosk stops decoding what is left then)."""
        super().handle_connect(event)
        if (scope := getattr(self, "scope", None)) is not None:  # an upgrade taken: the app runs
            this = weakref.proxy(self)  # the scope's own protocol held weakly: no cycle for the collector to find
            scope["extensions"][BACKLOG] = Backlog(lambda: unsent_bytes(this.transport), lambda: reset(this.transport),
                                                   lambda: this._ended_unread())

    def data_received(self, data: bytes) -> None:
        """Parsed :data:`~.frame_budget.FEED_BYTES` at a time (:meth:`_parse_some`): websockets parses every frame of
        what it is fed, and uvicorn fed it every read whole, a turn of the event loop (up to 32 reads of 256 KiB, as
        libuv reads while it can) in which nothing else on the pod ran."""
        if self._flooded is not None:
            return  # closed for its frames: what it sends now is dropped unparsed
        if self._unparsed is None:
            self._unparsed = bytearray()
        self._unparsed += data
        self._parse_some()

    def _parse_some(self) -> None:
        """Parse the next :data:`~.frame_budget.FEED_BYTES` of what was read; reading is held while any is left, whose
        parse is scheduled for the event loop's next turn. Parsed on while uvicorn holds reading (a message waits for
        the app), as uvicorn parsed a read whole: a close frame read behind messages the app has not taken yet is
        answered, and the connection closed, as it comes, not once the app has taken every message before it (what is
        parsed so is at most what one read brought)."""
        self._parsing = None
        if self._unparsed and not self.transport.is_closing():
            piece = bytes(self._unparsed[:FEED_BYTES])
            del self._unparsed[:FEED_BYTES]
            self._parse(piece)
        self._settle_reading()

    def _settle_reading(self) -> None:
        """Hold reading while what was read is not all parsed (its parse scheduled) or the client was closed for its
        frames; else leave it as uvicorn has it. Every change of whether the client is read (uvicorn's hold too: a message
        waiting for the app) comes before one of these: its :class:`~.frame_budget.ControlBudget` is told."""
        self._hold_or_resume()
        self._controls.reading(self.loop.time(), self._held or self.read_paused)

    def _hold_or_resume(self) -> None:
        if self.disconnected or self.transport.is_closing():
            self._unparsed = None
            return
        if self._flooded is None and not self._unparsed:
            if self._parsing is not None:  # all parsed: the transport reads again, unless uvicorn holds it
                self._parsing.cancel()
                self._parsing = None
            if self._held and not self.read_paused:
                self.transport.resume_reading()
            self._held = False
            return
        self.transport.pause_reading()
        self._held = True
        if self._unparsed and self._flooded is None and self._parsing is None:
            self._parsing = self.loop.call_soon(self._parse_some)

    def handle_ping(self) -> None:
        """uvicorn's (the pong websockets queued written), within the client's :class:`~.frame_budget.ControlBudget`."""
        if self._within_budget():
            super().handle_ping()

    def handle_pong(self, event: Any) -> None:
        if self._within_budget():
            super().handle_pong(event)

    def handle_cont(self, event: Any) -> None:
        """uvicorn's, which holds every fragment of a message until its last: at most :data:`~.frame_budget.MAX_FRAGMENTS`."""
        if self._flooded is None and len(self.frames) >= MAX_FRAGMENTS:
            self._cut_off(too_many_fragments())
        if self._flooded is None:
            super().handle_cont(event)

    def send_keepalive_ping(self) -> None:
        """uvicorn's, the client's pong to it owed beside its :class:`~.frame_budget.ControlBudget`."""
        self._controls.asked()
        super().send_keepalive_ping()

    def schedule_ping(self) -> None:
        """The next keepalive ping, one ping interval after the last (after the upgrade, for the first). uvicorn's
        scheduled it the interval less the last answered pong's delay after the ping it has just sent (with no pong
        deadline, the server's: :data:`~.serving.SERVER_OPTIONS`): once a pong came nearly an interval late, the server
        pinged every few milliseconds until one came at once, which a client held back behind its audio, or on a slow
        link, never sends: a burst of pings at the clients least able to take them."""
        assert self.ping_interval is not None
        last = self.ping_sent_at or self.loop.time()  # uvicorn's 0.0: none sent yet
        self.ping_timer = self.loop.call_at(last + self.ping_interval, self.send_keepalive_ping)

    def _within_budget(self) -> bool:
        """Take a control frame from the client's budget; past it, the client is closed (:meth:`_cut_off`)."""
        if self._flooded is None and not self._controls.spend(self.loop.time()):
            self._cut_off(over_budget())
        if self._flooded is not None:
            self.conn.data_to_send()  # its pong, not sent
            return False
        return True

    def _cut_off(self, reason: str) -> None:
        """Close the client for its frames (:data:`~.errors.FRAME_FLOOD`: 1008 and ``reason``), whatever its route is
        doing: nothing it sent after is parsed, nor read (a client that does not answer the close is reset after
        :data:`CLOSE_REPLY_SECONDS`, :meth:`_unanswered`). The app hears a disconnect that carries the failure
        (:data:`~.frame_budget.CUT_OFF`), which its route raises: counted and logged once. A client already sent the
        server's close is reset."""
        self._flooded = Failure(f"{reason}; from {peer(self.client)}", FRAME_FLOOD)
        self._unparsed = None
        if self.close_sent or not self.handshake_complete or self.transport.is_closing():
            reset(self.transport)
            return
        code, said = close_args(Failure(reason, FRAME_FLOOD))
        self.conn.send_close(code, said)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        end: Any = {"type": "websocket.disconnect", "code": code, "reason": said, CUT_OFF: self._flooded}  # a key beside ASGI's
        self.queue.put_nowait(end)
        self.close_timer = self.loop.call_later(CLOSE_REPLY_SECONDS, self._unanswered, unsent_bytes(self.transport))
        self._settle_reading()

    def _parse(self, data: bytes) -> None:
        super().data_received(data)
        refused = self.conn.handshake_exc
        if refused is None or self.handshake_initiated or self.transport.is_closing():
            return  # no refusal, or one uvicorn answers (the app's, or websockets' of a head it parsed)
        said = f"{refused}: {refused.__cause__}" if refused.__cause__ is not None else str(refused)
        reason = one_line(f"not a WebSocket upgrade this server takes: {said}")
        observe(Failure(f"{reason}; from {peer(self.client)}", MALFORMED_REQUEST), "http", self.metrics)
        self.handshake_initiated = self.handshake_complete = self.close_sent = True
        self.transport.write(http_response_bytes(Failure(reason, MALFORMED_REQUEST)))
        self.transport.close()


def websocket_head_bounds(max_header_bytes: int) -> None:
    """websockets' bounds on the upgrade's head it parses again, raised to the head's (``Http:MaxHeaderBytes``,
    :data:`~speech_recognizer.contract.MAX_HEADERS`), which :class:`LimitedHttpTools` has applied already: its own, 8192
    bytes a line, refused a header line over 8 KiB (a long ``Authorization`` token, a proxy's header; a query string)
    that the head's bound takes on every other request, with a 431 that uvicorn never wrote (the client waited for ever).
    websockets reads them from its module when it parses (``websockets.http11``); they are only raised, never lowered
    (servers of one process may differ)."""
    from websockets import http11

    http11.MAX_LINE_LENGTH = max(http11.MAX_LINE_LENGTH, max_header_bytes)
    http11.MAX_NUM_HEADERS = max(http11.MAX_NUM_HEADERS, MAX_HEADERS)


def protocol(limits: HttpLimits, metrics: Counters | None = None, cap: ConnectionCap | None = None,
             answerer: CORSMiddleware | None = None) -> type[LimitedHttpTools]:
    """The server's ``http`` protocol class with ``limits``, ``cap`` and the CORS policy ``answerer``
    (:func:`~speech_recognizer.cors.instance`), counting refusals on ``metrics``."""
    return type("LimitedHttpTools", (LimitedHttpTools,), {"limits": limits, "metrics": metrics, "cap": cap, "cors": answerer})
