"""Stopping without breaking clients: relayed WebSockets are closed with 1000 once idle, streams end first.

A Speech SDK app keeps its WebSocket open between recognitions. Closed with 1000, it connects
again at its next recognition (to another gateway pod behind the Service); closed with 1001 or
1012, or dropped, that recognizer object fails every later recognition at once
(``SPXERR_START_RECOGNIZING_INVALID_STATE_TRANSITION``) until the app makes a new one. So when
the gateway stops (SIGTERM), :meth:`Shutdown.drain` runs once it has stopped listening: streams in
progress go on, every relayed WebSocket that is idle, now or once its stream ends, is closed on
both sides with 1000 and :data:`IDLE_REASON`, and the gateway exits as soon as none is left.
What still runs after ``shutdown_seconds`` is closed with 1001 (:data:`~speech_operator.gateway_failures.STOPPED`).

This runs before aiohttp's own shutdown (the runner's ``cleanup``), not in its ``on_shutdown``
hook: aiohttp first marks every connection closing, and from then on it drops what arrives on it,
a WebSocket's frames too, so a stream would get no more audio (and was held, deaf, until the
runner's timeout cut it without a close frame).

What is in progress, read from the frames as they pass (only their headers):

- Speech SDK (USP): a turn, from its first audio under a new ``X-RequestId`` (the SDK sends its
  ``speech.context`` and the audio's RIFF header at once) to the recognizer's ``turn.end``.
  ``speech.config`` and ``telemetry`` open none, nor does audio still in flight for a turn that
  ended (interactive turns end at their first phrase); a ``speech.context`` with no audio after it
  is idle, as the recognizer's own stop counts it (its turn not begun: a connection idle, closed by
  its drain), and was held for the whole ``shutdown_seconds`` then cut 1001 (the recognizer,
  keeping such a connection up to ``ConnectionIdleSeconds``, did not end it first). Turns rather
  than a quiet window: a turn may pass seconds without a frame (an app waiting on its source, the
  last result of a long utterance) and a close then loses it.
- vosk: a stream, from its first audio until the recognizer closes it (after ``{"eof" : 1}``);
  a connection that has sent no audio is idle.

An idle WebSocket is closed once nothing has passed either way for :data:`SETTLE_SECONDS` (at once
for one idle before the stop); a client that starts its next turn within that time keeps it busy.

A recognition request (REST, OpenAI) in flight is waited for too (:meth:`Shutdown.requesting`): its
upload may still be arriving, and after aiohttp's shutdown began the rest of its body would never
come (the recognizer then answered 408 once its body had paused for ``Http:BodyTimeoutSeconds``).
One still waiting for its recognizer's answer when ``shutdown_seconds`` run out gets 503 and
:data:`STOPPED_UNANSWERED` (:meth:`Shutdown.unless_over`); one whose upload is still arriving then
gets the same, which a client still sending does not read (it sees its connection closed).
A kept-alive connection still brings requests during the drain; each answer then closes it
(``Gateway.close_when_stopping``), so its client's next request goes to another gateway pod.

A request or WebSocket held while its locale wakes (:mod:`speech_operator.gateway_wake`) is not
waited for: a wake takes longer than a stop may (a pod's start, up to ``hold_seconds``). At the stop
it is answered at once (:meth:`Shutdown.unless_stopping`): 503 + ``Retry-After`` or close 1013 with
the reason (:data:`~speech_operator.gateway_failures.STOPPED_HOLDING`), so the client tries again at
another gateway pod, which holds it while the wake already asked for goes on.

A Speech SDK connection the gateway refuses (:func:`~speech_operator.gateway_relay.refuse`) is read for its request
before its close, up to :data:`~speech_recognizer.usp.refusal.REQUEST_WAIT_SECONDS` for a client that sends nothing.
At the stop it is answered at once (:meth:`~speech_recognizer.usp.refusal.Waiting.end`): its turn when its request
had begun, its close with the refusal's code and reason; the drain waits until every refusal has been answered, its
close handshake included (:attr:`Shutdown.refusals`; a client that never answers its close is cut after
:data:`CLOSE_REPLY_SECONDS`): aiohttp's shutdown would drop the close reply, and the connection end only when cut.
Not ended, such a wait held the stop until it ran out. A /vosk connection the gateway refuses is closed at once,
and counted alike until its close handshake ends. An upgrade refused once the drain has ended gets the refusal as an
HTTP answer (its status and reason, then the connection's end): no close reply could be read any more
(:meth:`Shutdown.refusing`). So does a stream's upgrade that comes then on a kept-alive connection, refused with
:data:`STOPPED_DRAINED` (503, ``draining``): accepted, nothing would wait for it, and aiohttp's shutdown cut it
without a close.

Every relayed WebSocket closed at the stop gets a close handshake on both sides: its close, the close reply read
(each side's within :data:`CLOSE_REPLY_SECONDS`), then the end of its connection. A client whose close still waits
unsent then, behind its last replies, is watched as an open connection is (``SPEECH_GATEWAY_SEND_STALL_SECONDS``,
:meth:`~speech_operator.gateway_http_limits.HeadGuard.close_after_unsent`), and the drain waits for it: a slow reader
gets its last replies and the close, and one that takes in nothing is reset (a FIN would wait behind what it does not
take in until the kernel gave the connection up, long after the gateway's exit); whatever is left so when the stop ends
is reset. Those closed at the deadline end theirs still in the drain: from aiohttp's shutdown on, a close reply would
be dropped unread.

The whole stop is bounded: the drain takes at most ``shutdown_seconds`` and, for the relays closed at its deadline,
:data:`CLOSE_REPLY_SECONDS`; then aiohttp's own shutdown (the runner's ``cleanup``) gives what is left (a request to
another route, a recognizer's answer still being passed on) the rest of :data:`AFTER_DRAIN_SECONDS`, then cuts it.
The pod's ``terminationGracePeriodSeconds`` (the chart's ``gateway.yaml``) leaves room for the preStop pause, both
and a margin.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterator
from typing import TypeVar

from speech_operator import gateway_failures as failures
from speech_recognizer.usp.frames import FrameError, Message, RequestIds, parse_binary, parse_text
from speech_recognizer.usp.refusal import Waiting

log = logging.getLogger("speech_operator.gateway")

T = TypeVar("T")

#: What the client (and the recognizer) of a relayed WebSocket closed while idle is told, with 1000.
IDLE_REASON = "closed while idle: this gateway is shutting down; connect again"
#: What a stream still in progress when ``shutdown_seconds`` ran out is closed with.
STOPPED_MIDSTREAM = failures.Failure("this gateway stopped before the stream ended; connect again", failures.STOPPED)
#: What a recognition request whose recognizer had not begun its answer when ``shutdown_seconds`` ran out gets.
STOPPED_UNANSWERED = failures.Failure("this gateway stopped before the recognizer answered; try again", failures.STOPPED)
#: What a stream's upgrade that comes once the drain has ended gets, over HTTP (:meth:`Shutdown.refusing`).
STOPPED_DRAINED = failures.Failure("this gateway is shutting down and takes no new stream; connect again (another gateway "
                                   "pod takes it)", failures.DRAINING)
#: How long nothing must have passed either way before an idle WebSocket is closed: a Speech SDK app
#: is still taking in its turn's end (and sends its telemetry) when the turn is over for the recognizer,
#: and a close then cancels its continuous recognition (as the recognizer's drain found).
SETTLE_SECONDS = 2.0
#: How often a stream in progress is looked at again once the gateway stops.
POLL_SECONDS = 0.05
#: How long, after the drain, what is left gets before it is cut: the relays closed at the drain's deadline finish
#: their close handshakes (within :data:`CLOSE_REPLY_SECONDS`, still in the drain), then aiohttp's own shutdown gives
#: other routes the rest for their answers.
AFTER_DRAIN_SECONDS = 3.0
#: How long the gateway waits for a client's close reply once it closed the client's WebSocket, before it ends the
#: connection (RFC 6455 5.5.1: the TCP connection ends once both closes passed): a client that never answers is cut then.
CLOSE_REPLY_SECONDS = 1.0


class Progress:
    """Whether one relayed WebSocket has a stream in progress (``route``: ``usp`` or ``vosk``), and
    when the relay is to close it."""

    def __init__(self, route: str, shutdown: Shutdown, left: Callable[[], None] = lambda: None) -> None:
        self.usp = route == "usp"
        self.shutdown = shutdown
        #: Whether its client is gone (its close answered, or its connection ended): what is left is the recognizer's
        #: side closing, bounded on its own (``SPEECH_GATEWAY_SEND_STALL_SECONDS``).
        self.left = False
        self._left = left
        #: The open turn's ``X-RequestId`` (USP: begun by its ``speech.context`` or its audio); ``""`` once a vosk stream
        #: has had audio; ``None``: none.
        self.open: str | None = None
        #: Whether the open turn has had audio (a vosk stream's: always): a turn with none is idle.
        self.heard = False
        #: When the last message passed, either way.
        self.last = time.monotonic()
        self._ended = RequestIds()

    @property
    def idle(self) -> bool:
        return self.open is None or not self.heard

    def leave(self) -> None:
        """Its client is gone: ``left`` is called, once (the gateway counts the stream as closing, no longer as a
        client's: ``speech_gateway_streams_closing``, not ``speech_gateway_streams``)."""
        if not self.left:
            self.left = True
            self._left()

    def from_client(self, data: bytes, binary: bool) -> None:
        """A frame the client sent (text as UTF-8 bytes)."""
        self.last = time.monotonic()
        if not self.usp:
            if binary:
                self.open, self.heard = "", True
            return
        frame = _usp(data, binary)
        path = frame.path.lower() if frame is not None else ""
        if frame is None or path not in ("speech.context", "audio") or not frame.request_id or self._ended.finished(frame.request_id):
            return
        if frame.request_id != self.open:
            self.open, self.heard = frame.request_id, False
        if path == "audio":
            self.heard = True

    def from_recognizer(self, data: bytes, binary: bool) -> None:
        """A frame the recognizer sent: ``turn.end`` ends its turn."""
        self.last = time.monotonic()
        if not self.usp or binary or self.open is None:
            return
        frame = _usp(data, binary)
        if frame is not None and frame.path.lower() == "turn.end" and frame.request_id in (None, self.open):
            self._ended.retire(self.open)
            self.open, self.heard = None, False

    async def closable(self) -> tuple[int, bytes]:
        """Once the gateway stops: the close for both sides when this WebSocket is idle and has been quiet
        for :data:`SETTLE_SECONDS` (1000), or when ``shutdown_seconds`` ran out first (1001)."""
        await self.shutdown.begun.wait()
        while not self.shutdown.over.is_set():
            if self.idle and time.monotonic() - self.last >= SETTLE_SECONDS:
                return 1000, IDLE_REASON.encode()
            await asyncio.sleep(POLL_SECONDS)
        return failures.close_args(STOPPED_MIDSTREAM)


async def _unless(event: asyncio.Event, waiting: Awaitable[T], failure: failures.Failure) -> T:
    """What ``waiting`` gives, unless ``event`` is set first (or already): then ``waiting`` is cancelled and
    ``failure`` raised."""
    if event.is_set():  # not even begun: a wake not asked for, a recognizer not called
        if asyncio.iscoroutine(waiting):
            waiting.close()
        raise failure
    return await unless(event.wait(), waiting, lambda: failure)


async def unless(ending: Awaitable[object], waiting: Awaitable[T], failure: Callable[[], failures.Failure]) -> T:
    """What ``waiting`` gives, unless ``ending`` ends first: then ``waiting`` is cancelled (a relayed request's connection
    to its recognizer closed with it) and ``failure()`` raised (what it is, said once it is known)."""
    task = asyncio.ensure_future(waiting)
    end = asyncio.ensure_future(ending)
    try:
        await asyncio.wait((task, end), return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        raise failure()
    finally:
        end.cancel()
        if not task.done():
            task.cancel()
        await asyncio.gather(task, end, return_exceptions=True)


def _usp(data: bytes, binary: bool) -> Message | None:
    """The frame's headers, or ``None`` when it is no USP frame (the recognizer answers that itself)."""
    try:
        return parse_binary(data) if binary else parse_text(data.decode("utf-8", "replace"))
    except FrameError:
        return None


class Shutdown:
    """The gateway's stop as its relays see it."""

    def __init__(self, refusals: Waiting | None = None) -> None:
        #: Set when the gateway stops: idle relays close.
        self.begun = asyncio.Event()
        #: Set when ``shutdown_seconds`` ran out: the relays left close.
        self.over = asyncio.Event()
        #: Relayed WebSockets open now, with what each has in progress.
        self.relays: set[Progress] = set()
        #: Recognition requests (REST, OpenAI) in flight, their upload included.
        self.requests = 0
        #: Requests and WebSockets held now while their locale wakes (answered at once at the stop).
        self.held = 0
        #: The WebSockets refused now, until their close ends (the Speech SDK's read for their request are answered at
        #: once at the stop).
        self.refusals = refusals or Waiting()
        #: The gateway's refusals of a WebSocket upgrade in progress (:meth:`refusing`), from before the upgrade's acceptance
        #: to the end of its close.
        self.refused = 0
        #: Set once the drain has ended: from then on aiohttp's shutdown drops what arrives, a close reply too, so no
        #: refusal begins a WebSocket (:meth:`refusing`).
        self.drained = False
        #: Client connections closing after their last bytes (the server's: its site's
        #: :attr:`~speech_operator.gateway_http_limits.GuardedSite.finishing`), which the drain waits for too.
        self.finishing: Collection[object] = ()

    async def drain(self, seconds: float) -> None:
        """Close the relays as they become idle, and return once none is left; after ``seconds``, close
        the rest. Call it once the gateway no longer listens."""
        running = sum(not p.idle for p in self.relays)
        log.info("gateway stopping: %d idle WebSocket(s) are closed with 1000, %d held for a wake answered at once, %d "
                 "refused WebSocket(s) end their close, %d Speech SDK refusal(s) read for their request (held streams' "
                 "refusals included) answered at once; %d stream(s) and %d request(s) in progress get up to %g s to end",
                 len(self.relays) - running, self.held, self.refused, self.refusals.reading, running, self.requests, seconds)
        self.begun.set()
        self.refusals.end()
        deadline = time.monotonic() + seconds
        while (self.relays or self.requests or self.refused or self.refusals.answering or self.finishing) and time.monotonic() < deadline:
            await asyncio.sleep(POLL_SECONDS)
        if self.requests:
            log.warning("gateway stopping: %d request(s) still in progress after %g s get 503 when their recognizer "
                        "has not answered yet, else are cut in %g s", self.requests, seconds, AFTER_DRAIN_SECONDS)
        if self.relays:
            log.warning("gateway stopping: %d stream(s) still in progress after %g s are closed with 1001",
                        len(self.relays), seconds)
        if self.requests or self.relays:
            self.over.set()
        # aiohttp's shutdown, next, drops whatever arrives on its connections: the close replies of the relays closed
        # now (and of refusals still closing) are read first, or their clients would see the close and no handshake.
        deadline = time.monotonic() + CLOSE_REPLY_SECONDS
        while (self.relays or self.refused or self.refusals.answering) and time.monotonic() < deadline:
            await asyncio.sleep(POLL_SECONDS)
        self.drained = True  # at once after the last look: a refusal that begins later is no WebSocket (refusing)

    async def unless_stopping(self, waiting: Awaitable[T], failure: failures.Failure) -> T:
        """What ``waiting`` (a hold while a locale wakes) gives, unless the gateway stops first: then it is
        cancelled and ``failure`` raised, at once (a stop does not wait for a wake)."""
        self.held += 1
        try:
            return await _unless(self.begun, waiting, failure)
        finally:
            self.held -= 1

    async def unless_over(self, waiting: Awaitable[T], failure: failures.Failure) -> T:
        """What ``waiting`` (a recognizer's answer not begun yet) gives, unless ``shutdown_seconds`` run out
        first: then it is cancelled and ``failure`` raised (the client gets it, not a cut connection)."""
        return await _unless(self.over, waiting, failure)

    @contextlib.contextmanager
    def refusing(self) -> Iterator[bool]:
        """A refusal of a WebSocket upgrade for the time of the block, which the drain waits for: True, or False once the
        drain has ended (then the refusal is to be an HTTP answer: a close's reply would be dropped unread by aiohttp's
        shutdown, and its connection end only when that shutdown cut it). Enter it before the upgrade's first await."""
        if self.drained:
            yield False
            return
        self.refused += 1
        try:
            yield True
        finally:
            self.refused -= 1

    @contextlib.contextmanager
    def requesting(self) -> Iterator[None]:
        """A recognition request in flight for the time of the block."""
        self.requests += 1
        try:
            yield
        finally:
            self.requests -= 1

    @contextlib.contextmanager
    def relaying(self, route: str, left: Callable[[], None] = lambda: None) -> Iterator[Progress]:
        """The :class:`Progress` of a WebSocket relayed for the time of the block (``left``: called once its client is
        gone, :meth:`Progress.leave`)."""
        progress = Progress(route, self, left)
        self.relays.add(progress)
        try:
            yield progress
        finally:
            self.relays.discard(progress)
