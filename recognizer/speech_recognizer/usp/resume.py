"""Turns cut after the client sent all of their audio, kept for the client's continuation.

The SDK for JavaScript with its reliable-reconnect contract (:func:`.options.stream_offsets`) that loses its
connection once it has sent its end of audio connects again and sends the continuation's ``speech.context``
(``continuation.previousServiceTag``, the cut turn's ``turn.start`` tag, and the offset it had acknowledged) and a
RIFF header, and no audio: it replays audio only while it still sends some (its ``sendAudio`` loop, over once it sent
the end), and waits for the turn's ``turn.end``, whose end of stream it reports. A server that took the cut turn's
audio, the end with it, decodes it to its end and keeps what the turn sent last and would have sent since
(:class:`Parked`) under its service tag; the continuation is answered with it (``usp.connection``): the phrases
after the acknowledged offset, the end of speech, ``EndOfDictation`` and ``turn.end``.

A server that does not have the cut turn (another pod behind the Service had it; the SDK may reach any) cannot tell
from the continuation alone that no audio will come: it names the turn, the acknowledged offset and the server's
continuation token, nothing of how far the SDK sent; one cut mid-stream whose audio was all acknowledged looks the
same and sends its next audio when the app has some. So once a turn has received the end of the client's audio, each
message it sends carries a token that says so (:func:`ended_token`, in ``X-Continuation-Token``), which the SDK keeps
and sends back in its continuation; a continuation that carries it for the turn it names, and finds no such turn
here, is ended at once (:func:`lost`: the phrases after its offset are lost) rather than after ``AudioIdleSeconds``.
One cut before any such message reached the SDK still waits ``AudioIdleSeconds``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import CONTINUATION_LOST, Failure
from .frames import previous_service_tag

#: How long a cut turn's results, once decoded, wait for the continuation (the SDK connects again at once).
KEEP_SECONDS = 60.0
#: How many of the messages :data:`RESENT_PATHS` a turn sent last it keeps for a continuation: those the cut lost in
#: flight are sent again.
RESENT = 16
#: The messages of a turn a continuation may send again: its results, and its end.
RESENT_PATHS = ("speech.phrase", "speech.endDetected", "turn.end")

Sent = tuple[str, dict[str, Any]]

#: The header of the server's continuation token, which the SDK for JavaScript keeps from any message of its turn and
#: sends back as ``continuation.token`` (its ``ReconnectContinuationState``).
TOKEN_HEADER = "X-Continuation-Token"


def ended_token(tag: str) -> str:
    """The continuation token of the turn of service tag ``tag`` once it has received the end of the client's audio."""
    return f"audio-ended:{tag}"


def audio_ended(context: dict[str, Any]) -> bool:
    """Whether a ``speech.context``'s continuation says that the turn it names had received the end of the client's
    audio (its token is :func:`ended_token` of that turn): the client sends no more audio."""
    continuation = context.get("continuation")
    token = continuation.get("token") if isinstance(continuation, dict) else None
    tag = previous_service_tag(context)
    return bool(tag) and token == ended_token(tag)


def lost(acknowledged: float) -> Failure:
    """The failure that ends a continuation of a turn cut after its end of audio that this server does not have, the
    client's audio acknowledged up to ``acknowledged`` seconds."""
    return Failure(f"the turn cut after its end of audio is not on this server: its phrases after {acknowledged:.2f} s are lost",
                   CONTINUATION_LOST)


@dataclass
class Parked:
    """A turn of a client with the reliable-reconnect contract as a continuation finds it: once its connection was cut
    after its end of audio, what it sent last and what it would have sent since (``(path, body)``, offsets in stream
    time). The SDK connects again at once, often before the server has seen the cut: a continuation waits until the
    turn's connection has decided whether it is kept (:meth:`keep`), and then until it is over (:meth:`Parking.settle`)."""

    frames: list[Sent] = field(default_factory=list)
    #: Whether it is kept for a continuation (its connection was cut after its end of audio).
    kept: bool = False
    decided: asyncio.Event = field(default_factory=asyncio.Event)
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    #: ``time.monotonic()`` after which nobody claims it (set when settled).
    until: float = float("inf")

    @property
    def complete(self) -> bool:
        """Whether it is kept and ended (with its ``turn.end``), rather than closed unfinished (a server stopping)."""
        return self.kept and bool(self.frames) and self.frames[-1][0] == "turn.end"

    def keep(self) -> None:
        """Keep it for the continuation: its connection was cut after its end of audio."""
        self.kept = True
        self.decided.set()


class Parking:
    """The turns of a server's clients with the reliable-reconnect contract, by service tag, while they go on and,
    kept, for :data:`KEEP_SECONDS` after.

    One per server (its app's state): the SDK connects again to the same server, or a gateway in front routes it by
    its own rules, and a continuation on another server finds nothing here (it is ended at once when its token says
    its audio had ended, :func:`lost`, and else waits for audio as any continuation)."""

    def __init__(self) -> None:
        self._turns: dict[str, Parked] = {}
        self._lock = threading.Lock()  # the turns of one server's connections; a lock costs nothing beside them

    def open(self, tag: str) -> Parked:
        """The record of a new turn of service tag ``tag``."""
        parked = Parked()
        with self._lock:
            self._prune()
            self._turns[tag] = parked
        return parked

    def settle(self, tag: str, parked: Parked) -> None:
        """The turn's connection is over, or its turn replaced: ``parked`` waits for its continuation if kept, and is
        dropped if not."""
        with self._lock:
            if parked.kept:
                parked.until = time.monotonic() + KEEP_SECONDS
            elif self._turns.get(tag) is parked:
                del self._turns[tag]
        parked.decided.set()
        parked.settled.set()

    def claim(self, tag: str) -> Parked | None:
        """The record of the turn of service tag ``tag`` (once: a continuation takes it), if any."""
        with self._lock:
            self._prune()
            return self._turns.pop(tag, None) if tag else None

    def _prune(self) -> None:
        now = time.monotonic()
        for tag in [tag for tag, parked in self._turns.items() if parked.until < now]:
            del self._turns[tag]
