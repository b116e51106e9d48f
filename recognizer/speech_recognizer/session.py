"""Decoder threads and the job queue of an admitted stream.

Each admitted stream (a :class:`Session`) decodes on one thread of its own, a lane
of :class:`Lanes`, from start to end: its recognizers then grow and are freed in one
malloc arena, and the next one reuses that memory. Its jobs queue up, and the lane
takes them back to back while any are queued, so a client sending audio ahead keeps
the decoder busy without a round trip through the event loop per chunk. Measurements
behind both: docs/engine.md.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from .recognition import Recognition
from .transcript import Event, Phrase

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How many chunks a stream may have queued for decoding before the adapter stops reading its audio.
READ_AHEAD = 8

#: How much audio a file (REST) recognition feeds the decoder at a time.
FILE_CHUNK_SECONDS = 0.1


@dataclass(frozen=True)
class Snapshot:
    """What one chunk produced, and the recognition as that chunk left it (however many are queued behind)."""

    events: list[Event]
    #: Whether the chunk ended an utterance (even one with no words).
    endpoint: bool
    #: The hypothesis after the chunk (empty right after an utterance ended).
    partial_text: str
    #: Seconds of the stream's audio accepted up to the end of the chunk.
    audio_seconds: float
    #: How loud the chunk was (:func:`~speech_recognizer.audio.rms`; for several chunks, the loudest).
    level: float = 0.0


def _settle(future: asyncio.Future[Any], result: object, error: BaseException | None) -> None:
    if future.done():  # cancelled while it ran
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _run(job: Callable[[], T]) -> tuple[T | None, Exception | None]:
    """``(result, None)`` of ``job``, or ``(None, the exception it raised)``. Caught here, not in the loop of
    :meth:`Session._drain`: the exception's traceback holds the frame that caught it, and that frame's locals (the
    error, the future it was handed to) would hold the exception in turn, a cycle that kept the session."""
    try:
        return job(), None
    except Exception as exc:  # noqa: BLE001 - handed to whoever awaits the job
        return None, exc


class Lanes:
    """One single-thread executor (a lane) per decoder; a session decodes on one lane from start to end.

    Taken and given back on the event loop only.
    """

    def __init__(self, count: int) -> None:
        self._all = [ThreadPoolExecutor(1, thread_name_prefix=f"decoder-{i}") for i in range(max(1, count))]
        #: Free lanes; the most recently used is taken first (its thread's caches are the warmest).
        self._free = self._all[::-1]

    def take(self) -> ThreadPoolExecutor:
        """A free lane (admission keeps one free for every admitted session)."""
        return self._free.pop()

    def give(self, lane: ThreadPoolExecutor) -> None:
        """Back after the session; jobs still queued on it run before the next session's."""
        self._free.append(lane)

    def shutdown(self) -> None:
        for lane in self._all:
            lane.shutdown(wait=False, cancel_futures=True)


class Session:
    """An admitted stream: its decoding runs off the event loop, one job at a time, in order.

    Jobs (:meth:`feed_ahead`, :meth:`finish`, :meth:`decode`) go to the
    session's own queue, which holds what a protocol adapter let in (it bounds its
    read-ahead, :data:`READ_AHEAD`). ``on_handover`` is called on the decoder thread
    after a job in which the stream moved to another recognizer.
    """

    def __init__(self, recognition: Recognition, route: str, lane: ThreadPoolExecutor,
                 on_handover: Callable[[Recognition], None] | None = None) -> None:
        self._lane = lane
        self.recognition = recognition
        self.route = route
        self.phrases = 0
        #: Seconds of audio received for this stream and dropped undecoded because its client left (set by the route).
        self.abandoned_seconds = 0.0
        self._on_handover = on_handover
        self._handovers = recognition.recycled
        self._jobs: deque[tuple[Callable[[], Any], asyncio.Future[Any] | None]] = deque()
        self._draining = False
        self._lock = threading.Lock()

    @property
    def locale(self) -> str:
        return self.recognition.model.locale

    def _queue(self, job: Callable[[], T], future: asyncio.Future[T] | None) -> None:
        with self._lock:
            self._jobs.append((job, future))
            if self._draining:
                return
            self._draining = True
        try:
            self._lane.submit(self._drain, asyncio.get_running_loop())
        except RuntimeError:  # the engine is closed
            with self._lock:
                self._jobs.clear()
                self._draining = False
            raise

    def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        """On a decoder thread: run the queued jobs in order until none is left."""
        while True:
            with self._lock:
                if not self._jobs:
                    self._draining = False
                    return
                job, future = self._jobs.popleft()
            if future is not None and future.cancelled():
                continue
            result, error = _run(job)
            if future is None:
                if error is not None:
                    log.error("decoder job failed: %s", error, exc_info=error)
                continue
            try:
                loop.call_soon_threadsafe(_settle, future, result, error)
            except RuntimeError:  # the event loop is closed: nobody waits any more
                pass

    def submit(self, job: Callable[[], T]) -> asyncio.Future[T]:
        """Run ``job`` on a decoder thread after every job submitted before it; returns at once."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue(job, future)
        return future

    def _counted(self, events: list[Event]) -> list[Event]:
        """On the decoder thread, after each decoding job: phrases counted, handovers reported."""
        self.phrases += sum(isinstance(e, Phrase) for e in events)
        if self.recognition.recycled != self._handovers:
            self._handovers = self.recognition.recycled
            if self._on_handover is not None:
                self._on_handover(self.recognition)
        return events

    def _step(self, pcm: bytes) -> Snapshot:
        rec = self.recognition
        events = self._counted(rec.accept(pcm))
        return Snapshot(events, rec.endpoint, rec.partial_text, rec.audio_seconds, rec.level)

    def feed_ahead(self, pcm: bytes) -> asyncio.Future[Snapshot]:
        """Queue a chunk of PCM; the future gives what it produced (:class:`Snapshot`)."""
        return self.submit(lambda: self._step(pcm))

    def feed_many_ahead(self, pieces: Sequence[bytes]) -> asyncio.Future[Snapshot]:
        """Queue chunks that need no reply each (a file's) as one job: the decoder takes them one by one,
        as :meth:`feed_ahead` would, without a hand-off through the event loop per chunk. The future
        gives what they produced together, and the recognition as the last left it."""

        def run() -> Snapshot:
            rec = self.recognition
            events: list[Event] = []
            level = 0.0
            for pcm in pieces:
                events += rec.accept(pcm)
                level = max(level, rec.level)
            return Snapshot(self._counted(events), rec.endpoint, rec.partial_text, rec.audio_seconds, level)

        return self.submit(run)

    def finish_ahead(self) -> asyncio.Future[list[Event]]:
        """Queue a flush of the decoder (the client ends an utterance: end of audio, vosk's reset), after the
        chunks queued before it; returns at once. Audio fed after it goes on in the same stream."""
        return self.submit(lambda: self._counted(self.recognition.finish()))

    async def finish(self) -> list[Event]:
        """Flush the decoder at end of audio."""
        return await self.finish_ahead()

    async def decode(self, pieces: Sequence[bytes]) -> list[Event]:
        """Decode a whole recording and flush the decoder, in one job.

        For files, which need no reply per piece. If the caller is cancelled, the
        decoder thread stops at the next piece.
        """
        stop = threading.Event()

        def run() -> list[Event]:
            events: list[Event] = []
            for piece in pieces:
                if stop.is_set():
                    return self._counted(events)
                events += self.recognition.accept(piece)
            return self._counted(events + self.recognition.finish())

        try:
            return await self.submit(run)
        finally:
            stop.set()

    def close(self, release: Callable[[], None]) -> None:
        """The stream is over: drop the jobs not started and run ``release`` after the one running, if any."""
        with self._lock:
            dropped = [future for _, future in self._jobs if future is not None]
            self._jobs.clear()
        for future in dropped:
            future.cancel()
        self._queue(release, None)
