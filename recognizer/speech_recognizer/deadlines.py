"""How long a WebSocket client may hold the server without sending audio, and a session in all.

A client that connects, sends a few bytes and then nothing held a decoder for as long as
it stayed connected: six such clients took every decoder of a default pod. Every WebSocket
route waits for its client's next message through :meth:`Deadlines.receive`, which ends the
wait with a :class:`~speech_recognizer.errors.Failure` once a session holding a decoder has
had no audio for ``AudioIdleSeconds`` (:data:`~speech_recognizer.errors.IDLE`) or has held
it for ``MaxSessionSeconds`` (:data:`~speech_recognizer.errors.SESSION_TOO_LONG`); the route
then answers what it decoded so far and closes as the failure policy says. A connection
without a session holds no decoder and is left open: a Speech SDK app keeps its connection
between recognitions and does not expect the server to close it (it reports the next
recognition as failed instead of connecting again).

Only time the server owes the client nothing counts as idle: the clock stops while a reply is
owed (:meth:`Deadlines.owe` .. :meth:`Deadlines.paid`) and starts again at every audio message
taken in and at the last reply sent, so a client waiting for the replies to audio it sent ahead
(or for a new recognizer's slow first utterance) is never idle.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from .errors import IDLE, SESSION_TOO_LONG, Failure

T = TypeVar("T")


class Deadlines:
    """The idle and session deadlines of one WebSocket connection."""

    def __init__(self, idle_seconds: float, session_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.idle_seconds = idle_seconds
        self.session_seconds = session_seconds
        self._clock = clock
        #: When the wait for audio began: the last audio taken in, or the connection's start.
        self._waiting_since = clock()
        #: When the session holding a decoder began (None: none holds one).
        self._session_since: float | None = None
        #: Replies the server owes the client (decoding or not sent yet): the idle clock stands still.
        self._owed = 0

    def heard(self) -> None:
        """Audio arrived and was taken in: the idle clock starts again."""
        self._waiting_since = self._clock()

    def owe(self) -> None:
        """A reply to the client is due (its audio is queued for decoding): the idle clock stands still until it is paid."""
        self._owed += 1

    def paid(self) -> None:
        """A reply went to the client (or was dropped); after the last one owed, the idle clock starts again."""
        self._owed = max(0, self._owed - 1)
        if not self._owed:
            self._waiting_since = self._clock()

    def session_started(self) -> None:
        self._session_since = self._waiting_since = self._clock()

    def session_ended(self) -> None:
        self._session_since = None

    def settled(self) -> None:
        """Nothing is owed any more (a turn was closed with replies still queued): the idle clock starts now."""
        self._owed = 0
        self._waiting_since = self._clock()

    def _next(self) -> tuple[float, Failure | None]:
        """Seconds until the nearer deadline, and the failure it is (None: look again then, a reply is owed)."""
        now = self._clock()
        if self._session_since is None:
            return math.inf, None  # no decoder held: nothing to wait for
        if self._owed:
            idle_left, idle = self.idle_seconds, None
        else:
            idle_left = self._waiting_since + self.idle_seconds - now
            idle = Failure(f"no audio for {self.idle_seconds:g} s (AudioIdleSeconds): the stream ended to free its decoder", IDLE)
        session_left = self._session_since + self.session_seconds - now
        if session_left < idle_left:
            return session_left, Failure(
                f"the stream reached {self.session_seconds:g} s (MaxSessionSeconds); open a new one to go on", SESSION_TOO_LONG
            )
        return idle_left, idle

    async def receive(self, receive: Callable[[], Awaitable[T]]) -> T:
        """The client's next message, or the failure of the deadline that passes first.

        The deadline moves while this waits (the last reply owed starts the idle clock again),
        so it is looked at again each time it seemed to pass.
        """
        task = asyncio.ensure_future(receive())
        try:
            while True:
                left, failure = self._next()
                if left <= 0 and failure is not None:
                    raise failure
                done, _ = await asyncio.wait((task,), timeout=max(left, 0.0) if math.isfinite(left) else None)
                if done:
                    return task.result()
        finally:
            if not task.done():
                task.cancel()
