"""The warm pool: finalized recognizers of finished sessions, kept for the next session of their model.

A new recognizer over a lookahead model expands its decoding graph as it decodes, so
its first utterance costs several times the CPU of later ones; a pooled recognizer has
that behind it (docs/engine.md). The pool only stores and hands out: what to keep,
retire or replace is decided by the recognition that releases and by the engine.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from .models import LoadedModel


@dataclass
class Pooled:
    """An idle recognizer in the pool."""

    rec: Any  # a vosk.KaldiRecognizer (vosk ships no type hints)
    #: Samples it has been fed in all: where its clock stands.
    samples: int
    #: Seconds of session audio it has decoded (start-up warm-up not counted): how warm it is.
    experience: float = 0.0


class WarmPool:
    """Idle recognizers per model, at most ``capacity`` in all (0 turns reuse off). Thread-safe.

    A session gets the most experienced idle one: a recognizer that has decoded speech
    is cheaper on its next utterance than one warmed at start-up only.
    """

    #: How long :meth:`take` waits for a release in flight before settling for a less warm recognizer.
    RELEASE_WAIT_SECONDS = 2.0

    def __init__(self, capacity: int) -> None:
        self.capacity = max(0, capacity)
        #: The clock (seconds) a recognizer retires at, when its users know how long their streams are at most
        #: (:func:`~.recognition.retire_clock`); None: :data:`~.recognition.MAX_WARM_CLOCK_SECONDS`.
        self.retire_clock: float | None = None
        self._idle: dict[int, list[Pooled]] = {}
        self._count = 0
        self._lock = threading.Lock()
        self._returned = threading.Condition(self._lock)
        #: Releases submitted but not finished (:meth:`expect` .. :meth:`done`), and finished in all.
        self._pending = 0
        self._finished = 0
        #: Recognizers taken warm, and takes that found none idle (a new one was built), by sessions and handovers.
        self.hits = 0
        self.misses = 0
        #: Recognizers let go for their long clock; of those, streams moved on at an utterance end;
        #: retired ones replaced by one warmed in the background. Counted by the engine (:meth:`count`).
        self.retired = 0
        self.handovers = 0
        self.replaced = 0

    def __len__(self) -> int:
        return self._count

    @staticmethod
    def key(model: LoadedModel) -> int:
        return id(model.model)

    def take(self, model: LoadedModel, *, wait: bool = True) -> Pooled | None:
        """The most experienced idle recognizer, or None.

        When none idle has decoded a session yet but a finished session's recognizer is
        still being released (a session that starts right after another ended: the release
        runs after the response), waits for the releases in flight, up to
        :attr:`RELEASE_WAIT_SECONDS`: the wait is one release, much less than what a
        recognizer new to speech costs on its first utterance. ``wait=False`` never waits
        (a stream in progress).
        """
        key = self.key(model)
        with self._lock:
            idle = self._idle.get(key)
            if wait and self.capacity and self._pending and not any(p.experience for p in idle or ()):
                target = self._finished + self._pending
                self._returned.wait_for(lambda: self._finished >= target, self.RELEASE_WAIT_SECONDS)
                idle = self._idle.get(key)
            if idle:
                best = max(range(len(idle)), key=lambda i: idle[i].experience)
                self._count -= 1
                self.hits += 1
                return idle.pop(best)
            self.misses += 1
            return None

    def give(self, model: LoadedModel, rec: Any, samples: int, experience: float = 0.0) -> bool:
        """Keep a finalized recognizer; False (and it is dropped) when the pool is full."""
        with self._lock:
            if self._count >= self.capacity:
                return False
            self._idle.setdefault(self.key(model), []).append(Pooled(rec, samples, experience))
            self._count += 1
            self._returned.notify_all()
            return True

    def count(self, *, retired: int = 0, handovers: int = 0, replaced: int = 0) -> None:
        """Add to the retirement counters (read by /metrics)."""
        with self._lock:
            self.retired += retired
            self.handovers += handovers
            self.replaced += replaced

    def expect(self) -> None:
        """A release is on its way (call :meth:`done` when it finished, kept or not)."""
        with self._lock:
            self._pending += 1

    def done(self) -> None:
        with self._lock:
            self._pending = max(0, self._pending - 1)
            self._finished += 1
            self._returned.notify_all()

    def clear(self) -> None:
        with self._lock:
            self._idle.clear()
            self._count = 0
