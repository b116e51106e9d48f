"""Drain instead of cut: on SIGTERM the server finishes what it started, refuses what is new, then exits.

A kubelet sends SIGTERM when a pod is deleted (scale-down, rollout, node drain) and SIGKILL
at the end of ``terminationGracePeriodSeconds``. uvicorn's own handling of SIGTERM closes
every WebSocket at once (close 1012), which cut live streams mid-sentence. So the server
takes SIGTERM first (:class:`DrainingServer`):

1. it stops taking new work: ``/ready`` answers 503 (the pod leaves its Service's
   endpoints), a new recognition WebSocket is accepted and closed with 1013 and a reason
   that says it is draining, a REST or OpenAI recognition gets 503 with ``Retry-After`` (OpenAI's in its error shape)
   (:class:`DrainMiddleware`); health, metrics and the other routes go on answering;
   HTTP keep-alive ends: idle kept-alive connections are closed at once, and every HTTP answer
   from then on says ``Connection: close`` and closes its connection (a request in flight is
   answered whole first). A client that keeps connections alive (the gateway, an ingress
   controller's upstream pool, an app's HTTP client) would otherwise go on sending its requests
   here, to be refused, while other pods are ready: its next connection goes to one of them;
2. recognitions already running go on until they end by themselves, for at most
   ``Drain:Seconds`` (:data:`~speech_recognizer.contract.DRAIN_SECONDS`);
3. when the last one has ended, clients get up to :data:`LINGER_SECONDS` to close their
   connections themselves: a Speech SDK app ending a continuous recognition is still taking in
   its last turn's end when the recognition is over for the server, and a close then reaches
   it as a canceled recognition ("Connection was closed by the remote host. Error code: 1012");
4. the recognition WebSockets still open then are idle (a Speech SDK app keeps its connection
   between recognitions): each is closed with 1000 and :data:`IDLE_REASON`. The Speech SDK
   connects again at its next recognition only after a 1000: after a 1001 or 1012 (uvicorn's)
   every later recognition of that recognizer object fails at once
   (``SPXERR_START_RECOGNIZING_INVALID_STATE_TRANSITION``), so a rollout broke every idle app;
5. a Speech SDK connection refused (a drain's, a cap's) and still read for its request (:mod:`.usp.refusal`, up to
   5 s for a client that sends nothing) is answered at once: its close with the refusal's code and reason
   (:meth:`Drain.end_refusals`; uvicorn's shutdown closed it with 1012 and no reason);
6. then uvicorn's usual shutdown runs (what is still open at the deadline, streams that did not
   end, is closed with 1012, a Speech SDK turn after the phrase it holds for the app's segmentation
   silence: :meth:`Drain.before_cut`) and the process exits 0.

A second SIGTERM or SIGINT (Ctrl-C again) skips the rest of the drain. ``Drain:Seconds=0``
keeps uvicorn's own behaviour.

What runs is a REST or OpenAI recognition in flight (its upload included, and its answer) and a stream with audio in
progress (an open decoding session: a Speech SDK turn, a vosk stream from its first audio to its
end). A connection with nothing in progress (a Speech SDK app keeps its connection open
between recognitions) does not hold the drain: it is closed at the end (1000), and the SDK
connects again, to another server, at its next recognition.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Awaitable, Callable, MutableMapping
from contextlib import suppress
from types import FrameType
from typing import Any

import uvicorn

from . import contract as c
from .admission import Admission, TooManyConnections
from .errors import DRAINING, HEAD, Failure, accept_headers, close_args, http_response, observe, openai_response
from .http_limits import LimitedHttpTools
from .openai_compat import ROUTE as OPENAI_ROUTE
from .serving import REFUSED
from .usp import refusal as usp_refusal

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

#: What a client refused while the server drains is told (answered as :data:`~speech_recognizer.errors.DRAINING`), by
#: what it asked for: what the server takes no more of, and what the client does to reach another.
_REFUSED = "draining: this server is shutting down and takes no new {}; {} to reach another"
#: ... a stream (a WebSocket, accepted and closed with 1013) ...
REASON = _REFUSED.format("streams", "connect again")
#: ... or a request (REST, OpenAI: 503 with ``Retry-After``).
REQUEST_REASON = _REFUSED.format("requests", "send it again")
#: What an idle recognition WebSocket is told when the drain closes it (with 1000: see the module doc).
IDLE_REASON = "closed while idle: this server is shutting down; connect again to reach another"

_WEBSOCKET_PATHS = frozenset({*c.RECOGNITION_PATHS, c.ROUTE_VOSK_WS, c.ROUTE_HOME})
#: The HTTP recognitions (POST): the REST modes' and OpenAI's transcriptions.
_HTTP_PATHS = frozenset({*c.RECOGNITION_PATHS, c.ROUTE_OPENAI_TRANSCRIPTIONS})
#: How long, once every recognition has ended, the server waits for recognition WebSockets to be closed
#: by their clients before it closes them (within the drain's deadline).
LINGER_SECONDS = 2.0
#: How long, at the drain's deadline, the streams still running get to send what they hold before they are closed
#: (a few messages each; within the pod's margin after the drain, builders.SHUTDOWN_MARGIN_SECONDS).
CUT_SECONDS = 1.0


class Drain:
    """Whether new work is refused, and how much is still running."""

    def __init__(self, seconds: float, admission: Admission, refusals: usp_refusal.Waiting | None = None) -> None:
        self.seconds = seconds
        #: HTTP recognitions (REST, OpenAI) in flight, from their head to their answer's end (their upload included).
        self.requests = 0
        #: The engine's: its open decoding sessions (a stream with audio in progress), and the
        #: recognition WebSockets open, with or without a recognition running.
        self.admission = admission
        self.started_at: float | None = None
        #: The recognition WebSockets open (accepted or not yet), for :meth:`close_idle`.
        self.sockets: set[Socket] = set()
        #: What each open Speech SDK connection sends before the deadline's close (:meth:`before_cut`).
        self.cut_hooks: set[Callable[[], Awaitable[None]]] = set()
        #: The Speech SDK connections this server refuses now, read for their request (:mod:`.usp.refusal`).
        self.refusals = refusals or usp_refusal.Waiting()

    @property
    def draining(self) -> bool:
        return self.started_at is not None

    @property
    def running(self) -> int:
        """Recognitions running: HTTP ones (REST, OpenAI) in flight and streams with a decoding session open (the
        decoders held but those of HTTP requests, counted already)."""
        return self.requests + self.admission.active - self.admission.held_by_requests

    @property
    def connections(self) -> int:
        """Recognition WebSockets open, with or without a recognition running."""
        return self.admission.connections

    def begin(self) -> None:
        """Refuse new work from now on (only sets a flag: it runs in a signal handler)."""
        if self.started_at is None:
            self.started_at = time.monotonic()

    async def settle(self, poll: float = 0.1) -> int:
        """Wait until no recognition runs, or until the deadline; the number still running then."""
        assert self.started_at is not None, "begin() first"
        deadline = self.started_at + self.seconds
        while self.running and time.monotonic() < deadline:
            await asyncio.sleep(min(poll, max(0.0, deadline - time.monotonic())))
        return self.running

    async def linger(self, seconds: float = LINGER_SECONDS, poll: float = 0.05) -> int:
        """Wait until clients have closed their recognition WebSockets, for at most ``seconds`` (and not
        past the deadline); the number still open then."""
        assert self.started_at is not None, "begin() first"
        until = min(time.monotonic() + seconds, self.started_at + self.seconds)
        while self.connections and time.monotonic() < until:
            await asyncio.sleep(poll)
        return self.connections

    async def before_cut(self, seconds: float = CUT_SECONDS) -> None:
        """At the deadline, with recognitions still running, before uvicorn's shutdown closes them (1012): each
        Speech SDK connection sends what it can still send (a phrase it holds for the app's segmentation silence:
        :meth:`~speech_recognizer.usp.connection.Connection.before_cut`), for at most ``seconds`` in all."""
        hooks = list(self.cut_hooks)
        if hooks:
            with suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await asyncio.gather(*(hook() for hook in hooks), return_exceptions=True)

    async def end_refusals(self, seconds: float = CUT_SECONDS, poll: float = 0.05) -> int:
        """Once the drain is over, just before the server stops: the refused Speech SDK connections still read for
        their request are answered at once, and those being answered get up to ``seconds`` to send their close
        (uvicorn's stop closed them with 1012 and no reason, after up to :data:`~.usp.refusal.REQUEST_WAIT_SECONDS`
        of waiting for a client that sends nothing); how many were being answered."""
        answering = self.refusals.answering
        self.refusals.end()
        until = time.monotonic() + seconds
        while self.refusals.answering and time.monotonic() < until:
            await asyncio.sleep(poll)
        return answering

    async def close_idle(self, seconds: float = LINGER_SECONDS, poll: float = 0.05) -> int:
        """Close every recognition WebSocket still open with 1000 and :data:`IDLE_REASON` (call it once
        nothing runs: they are idle), then wait for their handlers to end, up to ``seconds`` in all; how many it closed.
        A close its client takes none of in that time (its replies unread) is left to the server's stop, which resets
        that connection (:meth:`~speech_recognizer.http_limits.UnmappedWebSockets.shutdown`): its send would wait
        ``AudioIdleSeconds``."""
        sockets = [s for s in self.sockets if s.accepted and not s.closed]
        until = time.monotonic() + seconds
        with suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await asyncio.gather(*(s.close(1000, IDLE_REASON) for s in sockets), return_exceptions=True)
        while self.connections and time.monotonic() < until:
            await asyncio.sleep(poll)
        return len(sockets)


class Socket:
    """One recognition WebSocket as :class:`DrainMiddleware` passes it on: the app's messages go through
    :meth:`send`, and :meth:`close` closes it from outside the app (the drain, when it is idle)."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.accepted = False
        self.closed = False

    async def send(self, message: MutableMapping[str, Any]) -> None:
        """The app's message; none after the close (the app learns of it at its next receive, the client's close)."""
        if self.closed:
            return
        kind = message["type"]
        if kind == "websocket.close":
            self.closed = True
        await self._send(message)
        if kind == "websocket.accept":
            self.accepted = True

    async def close(self, code: int, reason: str) -> None:
        if not self.closed:
            self.closed = True
            await self._send({"type": "websocket.close", "code": code, "reason": reason})


def is_recognition(scope: Scope) -> bool:
    """Whether a request starts a recognition (what a drain lets finish and refuses when new)."""
    if scope["type"] == "websocket":
        return scope["path"] in _WEBSOCKET_PATHS
    return scope["type"] == "http" and scope.get("method") == "POST" and scope["path"] in _HTTP_PATHS


class DrainMiddleware:
    """Counts recognitions in flight and recognition WebSockets open; refuses new ones while the server drains,
    and a WebSocket past ``MaxConnections``."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            HEAD.set(time.monotonic())  # a refusal's time runs from here (errors.observe)
        if scope["type"] == "http":
            send = self._closing(send)
        if scope["type"] not in ("http", "websocket") or not is_recognition(scope):
            await self.app(scope, receive, send)
            return
        if self.drain.draining:
            await refuse(scope, receive, send, Failure(REASON if scope["type"] == "websocket" else REQUEST_REASON, DRAINING),
                         self.drain.refusals)
            return
        if scope["type"] == "websocket":  # a connection counts from its upgrade to its end, however it ends
            try:
                connection = self.drain.admission.connection()
            except TooManyConnections as refused:
                await refuse(scope, receive, send, refused, self.drain.refusals)
                return
            socket = Socket(send)
            self.drain.sockets.add(socket)
            try:
                with connection:
                    await self.app(scope, receive, socket.send)
            finally:
                self.drain.sockets.discard(socket)
            return
        self.drain.requests += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.drain.requests -= 1


    def _closing(self, send: Send) -> Send:
        """``send``, except that an HTTP answer that starts while the server drains says ``Connection: close``
        (uvicorn then closes the connection after it)."""
        drain = self.drain

        async def sending(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start" and drain.draining:
                kept = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"connection"]
                message = {**message, "headers": [*kept, (b"connection", b"close")]}
            await send(message)
        return sending


def route_of(scope: Scope) -> str:
    """The route label a recognition request is counted under (as its adapter names it)."""
    path = scope["path"]
    if path == c.ROUTE_OPENAI_TRANSCRIPTIONS:
        return OPENAI_ROUTE
    if path in c.RECOGNITION_PATHS:
        mode = path.split("/")[3]
        return f"usp/{mode}" if scope["type"] == "websocket" else f"rest-{mode}"
    return "vosk"


async def refuse(scope: Scope, receive: Receive, send: Send, failure: Failure, refusals: usp_refusal.Waiting) -> None:
    """The failure policy's answer to a recognition refused before it starts (:data:`~speech_recognizer.errors.DRAINING`,
    :data:`~speech_recognizer.errors.TOO_MANY_CONNECTIONS`): a WebSocket accepted and closed with its code and
    reason (a Speech SDK connection once its request begins, after a turn that fails: :mod:`.usp.refusal`, counted in
    the server's ``refusals``), or an HTTP error with ``Retry-After`` (OpenAI's route's in OpenAI's error shape, as its
    other failures); counted and logged: a Speech SDK connection once its request is read, as a repeat when it asks
    again for a refusal this server told it (the server's ``failed_turns``: the SDK's core asks 5 times after a drain's
    refusal, each of which may reach another pod; here, one app recognition is one refusal)."""
    state = getattr(scope.get("app"), "state", None)
    route, metrics = route_of(scope), getattr(state, "metrics", None)
    usp = scope["type"] == "websocket" and route.startswith("usp/")

    def count(again: bool = False) -> None:
        observe(failure, route, metrics, again=again)

    if not usp:
        count()
    if scope["type"] == "websocket":
        if (await receive())["type"] != "websocket.connect":
            if usp:
                count()
            return
        REFUSED.set(True)
        offered = scope.get("subprotocols") or []
        code, reason = close_args(failure)
        # Accepted first: a close before the handshake reaches the client as a bare HTTP 403, without the reason. The 101
        # names the failure (a proxy in front, the gateway, tells a drain from a full server before the close comes).
        await send({"type": "websocket.accept", "subprotocol": offered[0] if offered else None, "headers": accept_headers(failure)})
        if usp:  # the Speech SDK's: told as a failed turn once its request begins
            await usp_refusal.refuse(receive, send, failure, refusals, count, getattr(state, "failed_turns", None))
            return
        await send({"type": "websocket.close", "code": code, "reason": reason})
        return
    answer = openai_response if route_of(scope) == OPENAI_ROUTE else http_response
    await answer(failure)(scope, receive, send)


class DrainingServer(uvicorn.Server):
    """uvicorn's server that drains on the first SIGTERM/SIGINT instead of closing every connection."""

    def __init__(self, config: uvicorn.Config, drain: Drain) -> None:
        super().__init__(config)
        self.drain = drain
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drainer: asyncio.Task[None] | None = None

    async def serve(self, sockets: list[Any] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Called in the signal handler: the first SIGTERM/SIGINT starts the drain; the next one is uvicorn's."""
        first = sig in (signal.SIGTERM, signal.SIGINT) and not self.drain.draining and not self.should_exit
        if first and self.drain.seconds > 0 and self._loop is not None:
            self.drain.begin()
            self._loop.call_soon_threadsafe(self._start_drain)
            return
        # Stopping at once (a second signal, Drain:Seconds=0): uvicorn closes every WebSocket with 1012 and nothing
        # more is sent, not even a phrase a Speech SDK turn holds for the segmentation silence (its audio was not
        # acknowledged: the SDK sends it again to another server).
        super().handle_exit(sig, frame)

    def _start_drain(self) -> None:
        self._end_keep_alive()
        log.info("draining: %d recognition(s) running; new ones are refused; exiting when they end, "
                 "at most in %g s (%s)", self.drain.running, self.drain.seconds, c.DRAIN_SECONDS)
        self._drainer = asyncio.get_running_loop().create_task(self._drain_then_exit())

    def _end_keep_alive(self) -> None:
        """Close the idle kept-alive HTTP connections, and let those with a request in progress close after its
        answer (:meth:`~speech_recognizer.http_limits.LimitedHttpTools.end_keep_alive`, on uvicorn's open connections;
        the WebSocket ones are left alone: uvicorn's ``shutdown()`` of those closes with 1012, the drain closes them
        itself). Connections opened later are answered with ``Connection: close`` (:class:`DrainMiddleware`)."""
        for connection in list(self.server_state.connections):
            if isinstance(connection, LimitedHttpTools):
                connection.end_keep_alive()

    async def _drain_then_exit(self) -> None:
        left = await self.drain.settle()
        if left:
            log.warning("drain deadline (%g s) reached with %d recognition(s) still running: closing them",
                        self.drain.seconds, left)
            await self.drain.before_cut()
        else:
            open_ = await self.drain.linger() and await self.drain.close_idle()
            log.info("drained: every recognition ended; exiting%s",
                     f" ({open_} idle connection(s) closed with 1000: their clients connect again)" if open_ else "")
        await self.drain.end_refusals()
        self.should_exit = True
