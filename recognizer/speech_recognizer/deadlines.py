"""How long a WebSocket client may hold the server without sending audio, a session in all, and its connection unused.

A client that connects, sends a few bytes and then nothing held a decoder for as long as
it stayed connected: six such clients took every decoder of a default pod. Every WebSocket
route waits for its client's next message through :meth:`Deadlines.receive`, which ends the
wait with a :class:`~speech_recognizer.errors.Failure` once a session holding a decoder has
had no audio for ``AudioIdleSeconds`` (:data:`~speech_recognizer.errors.IDLE`) or has held
it for ``MaxSessionSeconds`` (:data:`~speech_recognizer.errors.SESSION_TOO_LONG`); the route
then answers what it decoded so far and closes as the failure policy says.

A connection without a session (before its first audio, or a Speech SDK app's between its
recognitions) holds no decoder, but it keeps its pod from idling (the operator neither scales it
away nor to zero) and takes one of ``MaxConnections``. Once it has sent nothing for
``ConnectionIdleSeconds`` (counted from its last message, or from its last stream's last reply)
the wait ends with :data:`~speech_recognizer.errors.CONNECTION_IDLE`, a close 1000 with the
reason: after a 1000 the Speech SDK connects again at its next recognition, where after any other
close it fails that recognizer's every later one.

Only time the server owes the client nothing counts as idle: the clock stops while a reply is
owed (:meth:`Deadlines.owe` .. :meth:`Deadlines.paid`) and starts again at every audio message
taken in and at the last reply sent, so a client waiting for the replies to audio it sent ahead
(or for a new recognizer's slow first utterance) is never idle.
A reply its client takes none of is owed no longer than ``AudioIdleSeconds`` either: the send that
waits on it resets the connection then (:data:`~speech_recognizer.errors.NOT_READING`,
:meth:`~speech_recognizer.http_limits.UnmappedWebSockets.send`). Replies too few to stall a send (they fit the
server's buffers) wait unsent for a client that reads nothing all the same: one whose idle time ends with what
waited unsent early in it still unsent (the server's :class:`Backlog` says) took in nothing for ``AudioIdleSeconds``
either, and ends the same way (``NOT_READING``, its connection reset, nothing more sent), not as an idle client whose
final result and close would wait behind its replies until the kernel gave the connection up. What waits is looked at
once the client has been quiet, nothing owed, for :data:`LOOK_AFTER` of its idle time (and again at the deadline), not
each time the idle clock starts: a stream in progress (a chunk, its reply, the next chunk) asks the kernel nothing.
Bytes, not the kernel's times, tell: the kernel goes on sending data to a peer whose window is shut (it retransmits
into it, probes it), but sends nothing new past it: the bytes unsent fall only as the client takes some in.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import CONNECTION_IDLE, IDLE, SESSION_TOO_LONG, Failure, not_reading
from .settings import Settings

T = TypeVar("T")

#: The ASGI scope extension under which the server's WebSocket protocol gives the app its connection's :class:`Backlog`.
BACKLOG = "speech.backlog"
#: The key of the disconnect the server's protocol gives the app when its client half-closed (its FIN, read, and the
#: probe after it not reset: it reads on): the end of what it sends, not of the connection, so the messages before it
#: are still handled and answered (:class:`~speech_recognizer.inbox.Inbox`).
HALF_CLOSED = "speech.half_closed"
#: The part of ``AudioIdleSeconds`` a stream's client is quiet, nothing owed, before what waits unsent to it is looked
#: at (:meth:`Deadlines._look`): longer than the gap between a live stream's chunks, short beside the idle time.
LOOK_AFTER = 0.1


@dataclass(frozen=True)
class Backlog:
    """What waits unsent to a WebSocket's client, as the server's protocol tells it
    (:class:`~speech_recognizer.http_limits.UnmappedWebSockets`)."""

    #: Bytes written to the client that it has not taken in (:func:`~speech_recognizer.connection_cap.unsent_bytes`).
    unsent: Callable[[], int]
    #: Reset the connection: what waits unsent is dropped, nothing more reaches the client.
    cut: Callable[[], None]
    #: Whether the client's end of the connection has come and nobody is there to answer (a reset, or a FIN whose probe a
    #: closed socket answered with a reset), though what it sent before may still wait unread behind the read-ahead; a
    #: FIN of a client that half-closed and reads on is not (what it sent is answered, then its end).
    ended: Callable[[], bool] = lambda: False


class Deadlines:
    """The idle, session and connection deadlines of one WebSocket connection."""

    def __init__(self, idle_seconds: float, session_seconds: float, connection_idle_seconds: float = math.inf,
                 clock: Callable[[], float] = time.monotonic, backlog: Backlog | None = None) -> None:
        """``backlog``: the connection's, to tell a client that reads nothing from an idle one (None: not told)."""
        self.idle_seconds = idle_seconds
        self.session_seconds = session_seconds
        self.connection_idle_seconds = connection_idle_seconds
        self._clock = clock
        #: When the wait for audio began: the last audio taken in or reply sent, or the connection's start.
        self._waiting_since = clock()
        #: When the client's last message of any kind was taken in (the connection's start before any).
        self._heard_from_since = self._waiting_since
        #: When the session holding a decoder began (None: none holds one).
        self._session_since: float | None = None
        #: Replies the server owes the client (decoding or not sent yet): the idle clock stands still.
        self._owed = 0
        #: Set when the session ends during a wait: its deadlines give way to the connection's, which may be nearer.
        self._session_over: asyncio.Future[None] | None = None
        #: What the kernel says of the connection (None: not told): looked at by the idle deadline here, and by the
        #: route's :class:`~speech_recognizer.inbox.Inbox` for an end of the connection come behind what it does not read.
        self.backlog = backlog
        #: Bytes waiting unsent to the client :data:`LOOK_AFTER` into the idle time (None: not looked at yet in it).
        self._unsent_since_waiting: int | None = None

    @classmethod
    def of(cls, settings: Settings, scope: Mapping[str, Any] | None = None) -> Deadlines:
        """A connection's deadlines as the server's settings say; ``scope``: its ASGI scope, whose :data:`BACKLOG` the
        server's protocol gives."""
        backlog = (scope or {}).get("extensions", {}).get(BACKLOG)
        return cls(settings.audio_idle_seconds, settings.max_session_seconds, settings.connection_idle_seconds, backlog=backlog)

    def ended_unread(self, kept: Callable[[], bool] = lambda: False) -> Callable[[], bool] | None:
        """The route's :class:`~speech_recognizer.inbox.Inbox`'s ``ended``: whether the client's end of the connection
        (a reset, a closed socket's FIN) has come behind messages the inbox does not read (:attr:`Backlog.ended`), so
        that its stream ends as the client's at once, what is left dropped undecoded; None without a :class:`Backlog`.
        ``kept``: whether that end is not to be looked at now (a Speech SDK turn its client may continue elsewhere)."""
        backlog = self.backlog
        if backlog is None:
            return None
        return lambda: not kept() and backlog.ended()

    def _idle_from_now(self) -> None:
        """The idle clock starts again: now (what waits unsent is looked at later in it, if it lasts: :meth:`_look`)."""
        self._waiting_since = self._clock()
        self._unsent_since_waiting = None

    def _look_in(self, now: float) -> float | None:
        """Seconds until what waits unsent is to be looked at in this idle time (<= 0: now); None: not to be (looked at
        already, a reply owed, no decoder held, or no :class:`Backlog`)."""
        if self.backlog is None or self._owed or self._session_since is None or self._unsent_since_waiting is not None:
            return None
        return self._waiting_since + LOOK_AFTER * self.idle_seconds - now

    def _look(self) -> None:
        """Note what waits unsent to the client, once it has been quiet for :data:`LOOK_AFTER` of its idle time."""
        look_in = self._look_in(self._clock())
        if look_in is not None and look_in <= 0 and self.backlog is not None:
            self._unsent_since_waiting = self.backlog.unsent()

    def heard(self) -> None:
        """Audio arrived and was taken in: the idle clock starts again."""
        self._idle_from_now()

    def owe(self) -> None:
        """A reply to the client is due (its audio is queued for decoding): the idle clock stands still until it is paid."""
        self._owed += 1

    def paid(self) -> None:
        """A reply went to the client (or was dropped); after the last one owed, the idle clock starts again."""
        self._owed = max(0, self._owed - 1)
        if not self._owed:
            self._idle_from_now()

    def session_started(self) -> None:
        self._idle_from_now()
        self._session_since = self._waiting_since

    def session_ended(self) -> None:
        self._session_since = None
        if self._session_over is not None and not self._session_over.done():
            self._session_over.set_result(None)

    def settled(self) -> None:
        """Nothing is owed any more (a turn was closed with replies still queued): the idle clock starts now."""
        self._owed = 0
        self._idle_from_now()

    def _next(self) -> tuple[float, Failure | None]:
        """Seconds until the nearer deadline, and the failure it is (None: look again then, a reply is owed)."""
        now = self._clock()
        if self._session_since is None:  # no decoder held: only the connection's own clock runs
            if self._owed:
                return self.connection_idle_seconds, None
            quiet_since = max(self._waiting_since, self._heard_from_since)
            seconds = self.connection_idle_seconds
            return quiet_since + seconds - now, Failure(
                f"closed while idle: no recognition for {seconds:g} s (ConnectionIdleSeconds); connect again", CONNECTION_IDLE
            )
        if self._owed:
            idle_left, idle = self.idle_seconds, None
        else:
            idle_left = self._waiting_since + self.idle_seconds - now
            idle = Failure(f"no audio for {self.idle_seconds:g} s (AudioIdleSeconds): the stream ended to free its decoder", IDLE)
            if (look_in := self._look_in(now)) is not None and look_in < idle_left:  # woken then to look (:meth:`_look`)
                idle_left, idle = look_in, None
        session_left = self._session_since + self.session_seconds - now
        if session_left < idle_left:
            return session_left, Failure(
                f"the stream reached {self.session_seconds:g} s (MaxSessionSeconds); open a new one to go on", SESSION_TOO_LONG
            )
        return idle_left, idle

    async def receive(self, receive: Callable[[], Awaitable[T]]) -> T:
        """The client's next message, or the failure of the deadline that passes first.

        The deadline moves while this waits (the last reply owed starts the idle clock again),
        so it is looked at again each time it seemed to pass, and when the session ends.
        """
        task = asyncio.ensure_future(receive())
        try:
            while True:
                self._look()
                left, failure = self._next()
                if left <= 0 and failure is not None:
                    raise self._not_reading(failure)
                waits: tuple[asyncio.Future[Any], ...] = (task,)
                if self._session_since is not None:
                    self._session_over = asyncio.get_running_loop().create_future()
                    waits = (task, self._session_over)
                timeout = max(left, 0.0) if math.isfinite(left) else None
                await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                self._session_over = None
                if task.done():
                    self._heard_from_since = self._clock()
                    return task.result()
        finally:
            self._session_over = None
            if not task.done():
                task.cancel()

    def _not_reading(self, failure: Failure) -> Failure:
        """``failure``, or :data:`~speech_recognizer.errors.NOT_READING` (the connection reset) when it is the idle one
        and what waited unsent to the client early in its idle time (:meth:`_look`) waits unsent still: it took in none
        of its replies all that time, in which the server wrote it nothing more (a keepalive ping at most)."""
        if failure.kind is not IDLE or self.backlog is None or not self._unsent_since_waiting:
            return failure
        unsent = self.backlog.unsent()
        if unsent < self._unsent_since_waiting:  # it took some in: a client that reads, idle
            return failure
        self.backlog.cut()
        return not_reading(self.idle_seconds, unsent)
