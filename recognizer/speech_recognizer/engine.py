"""The recognition session every protocol drives: PCM in, partial and final results out.

:class:`Recognition` wraps one ``KaldiRecognizer`` and is synchronous;
:class:`Engine` admits sessions up to the decoder cap, runs their decoding off
the event loop (a :class:`Session` queues its jobs, and its own decoder thread,
a lane of :class:`Lanes`, takes the queued ones back to back), and records usage
and metrics when a session ends. Every
protocol adapter goes through :meth:`Engine.session`, so the same audio gives
the same words and timings on every route.

Warm recognizers. A new ``KaldiRecognizer`` over a small (lookahead) model
composes its decoding graph lazily, per recognizer: its first utterance costs
about four times the CPU of later ones (measured: 6.8 s vs 1.6 s of CPU for
the same 14 s of speech) and stalls the first decoder advance for seconds
under load. A :class:`WarmPool` keeps the recognizers of finished sessions,
finalized, so the next session of the same model and sample rate starts with
the graph already expanded. A finalized recognizer restarts its feature
pipeline and decoder on the next audio (Vosk's own restart), so it decodes as
a fresh one does; only its clock runs on, which :class:`Recognition`
subtracts (results equal a fresh recognizer's to the microsecond).

Bounded memory. The lazily composed graph also keeps growing with the audio a
recognizer decodes, and Vosk cannot shrink it: a long stream moves to another
recognizer at the first utterance end after :data:`RECYCLE_CLOCK_SECONDS`, and
every dropped recognizer's memory is handed back to the OS (:mod:`.heap`). Pooled
recognizers retire after :data:`MAX_WARM_CLOCK_SECONDS`; each that retires (or is
left at a handover) is replaced by one warmed with the start-up warm-up audio, in
the background at a lower CPU priority (:meth:`Engine._replenish`). A
session decodes on one thread from start to end (:class:`Lanes`), so that its
recognizers grow and are freed in one malloc arena and each reuses the memory
of the one before.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Sequence, TypeVar, Union

from . import heap
from .audio import Audio, chunks, mono
from .models import LoadedModel, ModelRegistry

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How many chunks a stream may have queued for decoding before the adapter stops reading its audio.
READ_AHEAD = 8

#: How much audio a file (REST) recognition feeds the decoder at a time.
FILE_CHUNK_SECONDS = 0.1


@dataclass(frozen=True)
class Word:
    """A recognized word; times in seconds from the start of the stream."""

    text: str
    start: float
    end: float
    confidence: float


@dataclass(frozen=True)
class Alternative:
    """One entry of an n-best list."""

    text: str
    confidence: float
    words: tuple[Word, ...]


@dataclass(frozen=True)
class Phrase:
    """A final result: the best alternative first."""

    alternatives: tuple[Alternative, ...]
    start: float
    end: float

    @property
    def text(self) -> str:
        return self.alternatives[0].text

    @property
    def words(self) -> tuple[Word, ...]:
        return self.alternatives[0].words

    @property
    def confidence(self) -> float:
        return self.alternatives[0].confidence


@dataclass(frozen=True)
class Partial:
    """An intermediate result (hypothesis) of the utterance in progress."""

    text: str
    start: float
    end: float
    words: tuple[Word, ...] = ()


Event = Union[Partial, Phrase]


def _words(items: Sequence[dict], offset: float, shift: float = 0.0) -> tuple[Word, ...]:
    """Words with ``offset`` added; ``shift`` (a reused recognizer's clock) is taken off, rounded to 1 µs."""
    if shift:
        return tuple(
            Word(
                text=str(w.get("word", "")),
                start=round(float(w.get("start", 0.0)) - shift, 6) + offset,
                end=round(float(w.get("end", 0.0)) - shift, 6) + offset,
                confidence=float(w.get("conf", 1.0)),
            )
            for w in items
        )
    return tuple(
        Word(
            text=str(w.get("word", "")),
            start=float(w.get("start", 0.0)) + offset,
            end=float(w.get("end", 0.0)) + offset,
            confidence=float(w.get("conf", 1.0)),
        )
        for w in items
    )


def parse_final(raw: str, offset: float = 0.0, shift: float = 0.0) -> Phrase | None:
    """A :class:`Phrase` from Vosk's final JSON, or None when nothing was said."""
    data = json.loads(raw)
    alternatives: list[Alternative] = []
    if "alternatives" in data:
        for alt in data["alternatives"]:
            words = _words(alt.get("result", []), offset, shift)
            alternatives.append(Alternative(str(alt.get("text", "")).strip(), float(alt.get("confidence", 0.0)), words))
    else:
        words = _words(data.get("result", []), offset, shift)
        confidence = sum(w.confidence for w in words) / len(words) if words else 0.0
        alternatives.append(Alternative(str(data.get("text", "")).strip(), confidence, words))
    alternatives = [a for a in alternatives if a.text]
    if not alternatives:
        return None
    best = alternatives[0].words
    start = best[0].start if best else offset
    end = best[-1].end if best else offset
    return Phrase(tuple(alternatives), start, end)


#: Vosk recognizer states, as far as reuse needs to know them.
_FRESH, _RUNNING, _ENDPOINT, _FINALIZED = "fresh", "running", "endpoint", "finalized"


#: A pooled recognizer retires once its clock passes this: Vosk reports times as 32-bit floats
#: on that clock (60 µs resolution at 600 s), and its memory grows with the audio it has seen.
MAX_WARM_CLOCK_SECONDS = 600

#: A stream moves to another recognizer at the first utterance end after its recognizer's
#: clock passes this. A recognizer's lazily composed graph keeps growing with the audio it
#: decodes (+126 MiB over 30 minutes of one stream, measured in bench/notes.md); Vosk's API
#: has no way to shrink it, so the grown one is dropped and its memory given back. The same
#: limit as a pooled recognizer's: every recognizer dropped is replaced by a new one, whose
#: first utterance costs ~4x the CPU (at 300 s a 30-minute stream peaked +36 MiB over its
#: first minute, at 600 s +59 MiB, and recognizers were built twice as often).
RECYCLE_CLOCK_SECONDS = MAX_WARM_CLOCK_SECONDS


@dataclass
class Pooled:
    """An idle recognizer in the pool."""

    rec: object
    #: Samples it has been fed in all: where its clock stands.
    samples: int
    #: Seconds of session audio it has decoded (start-up warm-up not counted): how warm it is.
    experience: float = 0.0


class WarmPool:
    """Finalized recognizers of finished sessions, per (model, sample rate), for the next session.

    Holds at most ``capacity`` recognizers in all (0 turns reuse off). A session
    gets the most experienced idle one: a recognizer that has decoded speech is
    about 2.5x cheaper on the next utterance than one warmed at start-up only
    (bench/notes.md). Thread-safe.
    """

    #: How long :meth:`take` waits for a release in flight before settling for a less warm recognizer.
    RELEASE_WAIT_SECONDS = 2.0

    def __init__(self, capacity: int) -> None:
        self.capacity = max(0, capacity)
        self._idle: dict[tuple[int, int], list[Pooled]] = {}
        self._count = 0
        self._lock = threading.Lock()
        self._returned = threading.Condition(self._lock)
        #: Releases submitted but not finished (:meth:`expect` .. :meth:`done`), and finished in all.
        self._pending = 0
        self._finished = 0
        #: Recognizers taken warm, and takes that found none idle (a new one was built), by sessions and handovers.
        self.hits = 0
        self.misses = 0
        #: Recognizers let go because their clock had run long (:data:`RECYCLE_CLOCK_SECONDS`, :data:`MAX_WARM_CLOCK_SECONDS`).
        self.retired = 0
        #: Streams moved to another recognizer at an utterance end (:meth:`Recognition._recycle`).
        self.handovers = 0
        #: Retired recognizers replaced by one warmed in the background (:meth:`Engine.warm`).
        self.replaced = 0
        #: Called (model, sample rate) after a recognizer retired, on the thread that let it go.
        self.on_retired: Callable[[LoadedModel, int], None] | None = None

    def __len__(self) -> int:
        return self._count

    @staticmethod
    def _key(model: LoadedModel, sample_rate: int) -> tuple[int, int]:
        return (id(model.model), sample_rate)

    def take(self, model: LoadedModel, sample_rate: int, *, wait: bool = True) -> Pooled | None:
        """The most experienced idle recognizer, or None.

        When none idle has decoded a session yet but a finished session's recognizer is
        still being released (a session that starts right after another ended: the release
        runs after the response), waits for the releases in flight, up to
        :attr:`RELEASE_WAIT_SECONDS`: the wait is one release (~0.05 s), a recognizer that
        has not decoded speech costs 2.5-4x the CPU on its first utterance. ``wait=False``
        never waits (a stream in progress).
        """
        key = self._key(model, sample_rate)
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

    def give(self, model: LoadedModel, sample_rate: int, rec: object, samples: int, experience: float = 0.0) -> bool:
        """Keep a finalized recognizer; False (and it is dropped) when the pool is full."""
        with self._lock:
            if self._count >= self.capacity:
                return False
            self._idle.setdefault(self._key(model, sample_rate), []).append(Pooled(rec, samples, experience))
            self._count += 1
            self._returned.notify_all()
            return True

    def retire(self, model: LoadedModel, sample_rate: int, *, handover: bool) -> None:
        """Count a recognizer let go for its long clock, and tell :attr:`on_retired` (a replacement may be due)."""
        with self._lock:
            self.retired += 1
            self.handovers += handover
        if self.on_retired is not None:
            self.on_retired(model, sample_rate)

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


class Recognition:
    """One stream through one ``KaldiRecognizer``. Synchronous: call from one thread at a time.

    Accepts 16-bit little-endian PCM at ``sample_rate`` with ``channels``
    interleaved channels (down-mixed to mono); Vosk resamples to the model's
    rate. ``offset`` (seconds) shifts every time reported, for streams that
    resume part-way. With a ``pool`` (and no phrase list) the recognizer may be a
    warm one from an earlier session; :meth:`release` hands it back. A ``warmup``
    recognition (start-up warm-up) never takes one and its audio does not count
    as experience.
    """

    def __init__(
        self,
        model: LoadedModel,
        sample_rate: int,
        channels: int = 1,
        *,
        offset: float = 0.0,
        words: bool = True,
        partial_words: bool = True,
        max_alternatives: int = 0,
        phrase_list: Sequence[str] | None = None,
        pool: WarmPool | None = None,
        partials: bool = True,
        warmup: bool = False,
    ) -> None:
        if sample_rate < 4000 or sample_rate > 192000:
            raise ValueError(f"sample rate {sample_rate} Hz is outside 4000..192000")
        if channels < 1 or channels > 32:
            raise ValueError(f"{channels} channels is not supported (1..32)")
        self.model = model
        self.sample_rate = sample_rate
        self.channels = channels
        self.offset = offset
        #: Where the decoder pool keeps this recognizer after the session (None: not reusable).
        self._pool = None if phrase_list else pool
        self._grammar = json.dumps([*phrase_list, "[unk]"], ensure_ascii=False) if phrase_list else None
        self._words, self._partial_words, self._max_alternatives = words, partial_words, max_alternatives
        self._lock = threading.Lock()
        self._warmup = warmup
        #: Stream frames fed before the current recognizer took over (it changes at :meth:`_recycle`).
        self._origin = 0
        #: Recognizers this stream moved off because their memory had grown.
        self.recycled = 0
        self._frames = 0
        self._acquire(wait=True)
        #: Whether :meth:`accept` computes intermediate results (files need none: they cost decode time).
        self.partials = partials
        self._pending = b""
        self._last_partial = ""
        self.decode_seconds = 0.0
        #: Whether the last :meth:`accept` ended an utterance (even one with no words).
        self.endpoint = False

    def _acquire(self, *, wait: bool) -> None:
        """Take the most experienced idle recognizer from the pool, or build a new one.

        Sets the clock it starts on: samples it had been fed before (its times are
        reported less those) and seconds of session audio it had decoded.
        """
        import vosk

        warm = self._pool.take(self.model, self.sample_rate, wait=wait) if self._pool is not None and not self._warmup else None
        if warm is not None:
            self._rec, self._base_samples, self._experience = warm.rec, warm.samples, warm.experience
            self._state = _FINALIZED
        else:
            args = (self._grammar,) if self._grammar else ()
            self._rec = vosk.KaldiRecognizer(self.model.model, float(self.sample_rate), *args)
            self._base_samples, self._experience, self._state = 0, 0.0, _FRESH
        if warm is not None or self._max_alternatives:
            self._rec.SetMaxAlternatives(self._max_alternatives)
        self._rec.SetWords(self._words)
        self._rec.SetPartialWords(self._partial_words)

    @property
    def _fed(self) -> int:
        """Frames the current recognizer has been fed by this stream."""
        return self._frames - self._origin

    @property
    def _time_offset(self) -> float:
        """Stream time of the current recognizer's first sample of this stream."""
        return self.offset + self._origin / self.sample_rate

    @property
    def audio_seconds(self) -> float:
        """Seconds of audio accepted so far."""
        return self._frames / self.sample_rate

    @property
    def warm(self) -> bool:
        """Whether this stream got a reused (warm) recognizer."""
        return self._base_samples > 0

    @property
    def _shift(self) -> float:
        return self._base_samples / self.sample_rate

    def _mono(self, pcm: bytes) -> bytes:
        data = self._pending + pcm
        frame_bytes = 2 * self.channels
        usable = len(data) - len(data) % frame_bytes
        self._pending = data[usable:]
        data = data[:usable]
        self._frames += usable // frame_bytes
        return mono(data, self.channels)

    def accept(self, pcm: bytes) -> list[Event]:
        """Feed audio; returns a final phrase when an utterance ended, else a changed partial."""
        mono = self._mono(pcm)
        self.endpoint = False
        if not mono:
            return []
        with self._lock:
            started = time.perf_counter()
            final = self._rec.AcceptWaveform(mono)
            self._state = _ENDPOINT if final else _RUNNING
            self.endpoint = bool(final)
            events: list[Event] = []
            if final:
                phrase = parse_final(self._rec.Result(), self._time_offset, self._shift)
                self._last_partial = ""
                if phrase is not None:
                    events.append(phrase)
                if self._base_samples + self._fed >= RECYCLE_CLOCK_SECONDS * self.sample_rate:
                    self._recycle()
            elif self.partials:
                partial = self._partial()
                if partial is not None:
                    events.append(partial)
            self.decode_seconds += time.perf_counter() - started
        return events

    def _recycle(self) -> None:
        """At an utterance end: go on with another recognizer and drop this grown one.

        The next utterance starts on the new recognizer's clock at the current stream
        position (Vosk restarts there too after an endpoint; only the few undecoded
        frames of trailing silence in its feature pipeline are not carried over).
        """
        self._origin = self._frames
        if self._pool is not None and not self._warmup:
            self._pool.retire(self.model, self.sample_rate, handover=True)
        self._drop()
        self._acquire(wait=False)
        self.recycled += 1
        log.debug("stream moved to another recognizer at %.2f s (%d so far)", self._time_offset, self.recycled)

    def _drop(self) -> None:
        """Let go of the recognizer (it is freed now) and have the heap trimmed soon."""
        self._rec = None
        heap.TRIMMER.request()

    @property
    def partial_text(self) -> str:
        """The current hypothesis (empty right after an utterance ended)."""
        return self._last_partial

    def _partial(self) -> Partial | None:
        data = json.loads(self._rec.PartialResult())
        text = str(data.get("partial", "")).strip()
        if not text or text == self._last_partial:
            return None
        self._last_partial = text
        words = _words(data.get("partial_result", []), self._time_offset, self._shift)
        start = words[0].start if words else self.offset
        end = words[-1].end if words else self.offset + self.audio_seconds
        return Partial(text, start, end, words)

    def finish(self) -> list[Event]:
        """End of audio: the last phrase, if anything was said since the previous one."""
        with self._lock:
            started = time.perf_counter()
            phrase = parse_final(self._rec.FinalResult(), self._time_offset, self._shift)
            if self._state == _RUNNING:
                self._state = _FINALIZED
            self.decode_seconds += time.perf_counter() - started
        self._last_partial = ""
        return [phrase] if phrase is not None else []

    def release(self) -> bool:
        """After the stream: finalize the recognizer and hand it to the pool; True when kept.

        Blocking (it may flush the decoder); call off the event loop, once. Vosk
        restarts its feature pipeline and decoder only from the finalized state,
        and its clock then runs on from the samples fed so far; the recognizer is
        fed silence up to a whole :func:`clock_unit` (so that taking the clock off
        leaves Vosk's printed times exact, to the tick) and finalized. A recognizer
        not kept is dropped, and the heap trimmed.
        """
        pool, self._pool = self._pool, None
        with self._lock:
            kept = pool is not None and pool.capacity > 0 and self._finalize_into(pool)
            if not kept:
                self._drop()
            return kept

    def _finalize_into(self, pool: WarmPool) -> bool:
        samples = self._base_samples + self._fed
        if samples >= MAX_WARM_CLOCK_SECONDS * self.sample_rate:
            if not self._warmup:  # a warm-up this long is not kept, nor replaced (by another as long)
                pool.retire(self.model, self.sample_rate, handover=False)
            return False
        experience = self._experience + (0.0 if self._warmup else self._fed / self.sample_rate)
        if self._state == _FRESH and samples == 0:
            return pool.give(self.model, self.sample_rate, self._rec, 0, experience)
        try:
            unit = clock_unit(self.sample_rate)
            pad = -samples % unit or (unit if self._state == _ENDPOINT else 0)
            for _ in range(3):
                if pad:
                    if self._rec.AcceptWaveform(bytes(2 * pad)):
                        self._rec.Result()
                        self._state = _ENDPOINT
                    else:
                        self._state = _RUNNING
                    samples += pad
                if self._state == _RUNNING:
                    self._rec.FinalResult()
                    self._state = _FINALIZED
                if self._state == _FINALIZED:
                    break
                pad = self.sample_rate
        except Exception:  # a recognizer in doubt is not reused
            log.exception("finalizing a recognizer for reuse failed")
            return False
        if self._state != _FINALIZED:
            return False
        return pool.give(self.model, self.sample_rate, self._rec, samples, experience)


def clock_unit(sample_rate: int) -> int:
    """Samples a reused recognizer's clock is padded to a multiple of.

    1/16 s when that is whole samples (1000 at 16 kHz), else the largest of 1/8, 1/4,
    1/2 s that is, else 1 s: multiples of 1/16 s are exact in float32 and in Vosk's
    six-decimal times, so subtracting the clock leaves every time as a fresh
    recognizer prints it. (Padding to whole seconds cost up to a second of decoding
    per session, about 3.5 % of a 14 s stream's CPU.)
    """
    for parts in (16, 8, 4, 2):
        if sample_rate % parts == 0:
            return sample_rate // parts
    return sample_rate


class Busy(Exception):
    """Every decoder is in use; retry after :attr:`retry_after` seconds."""

    def __init__(self, limit: int, retry_after: int = 1) -> None:
        super().__init__(f"all {limit} decoders are busy; retry in {retry_after} s")
        self.limit = limit
        self.retry_after = retry_after


@dataclass
class SessionRecord:
    """What a finished session leaves for usage records and metrics."""

    route: str
    locale: str
    audio_seconds: float
    decode_seconds: float
    phrases: int
    started: float = field(default_factory=time.time)


def _settle(future: asyncio.Future[Any], result: object, error: BaseException | None) -> None:
    if future.done():  # cancelled while it ran
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class Lanes:
    """One single-thread executor (a lane) per decoder; a session decodes on one lane from start to end.

    glibc gives each thread a malloc arena of its own. On a shared thread pool a stream's chunks ran on
    whichever thread was idle, so its recognizer's lazily grown graph was spread over every decoder
    thread's arena, and a recycled recognizer's successor did not reuse what it freed: a 30-minute
    stream's RSS rose from one recognizer to the next (+95 to +109 MiB over its first minute). On one
    lane a recognizer grows and is freed in one arena and the next one reuses that memory (+35.6 MiB,
    bench/notes.md). Taken and given back on the event loop only.
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

    Jobs (:meth:`feed`, :meth:`feed_ahead`, :meth:`finish`, :meth:`decode`) go to the
    session's own queue; its lane's thread takes them back to back while any are
    queued, so a client that sends audio ahead of the decoding keeps the decoder busy
    without a round trip through the event loop per chunk (in one process that round
    trip cost 18 % more CPU per audio second with intermediate results, 24 % without:
    bench/notes.md). The queue holds what a protocol adapter let in (it bounds its
    read-ahead, :data:`READ_AHEAD`).
    """

    def __init__(self, recognition: Recognition, route: str, lane: ThreadPoolExecutor) -> None:
        self._lane = lane
        self.recognition = recognition
        self.route = route
        self.phrases = 0
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
            try:
                result, error = job(), None
            except Exception as exc:  # noqa: BLE001 - handed to whoever awaits the job
                result, error = None, exc
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
        self.phrases += sum(isinstance(e, Phrase) for e in events)
        return events

    def feed_ahead(self, pcm: bytes, reply: Callable[[list[Event]], T]) -> asyncio.Future[T]:
        """Queue a chunk of PCM; ``reply(events)`` runs on the decoder thread right after it.

        ``reply`` sees the recognition as this chunk left it (its ``endpoint``, its
        ``partial_text``), however many chunks are queued behind.
        """
        return self.submit(lambda: reply(self._counted(self.recognition.accept(pcm))))

    async def feed(self, pcm: bytes) -> list[Event]:
        """Decode a chunk of PCM."""
        return await self.feed_ahead(pcm, lambda events: events)

    async def finish(self) -> list[Event]:
        """Flush the decoder at end of audio."""
        return await self.submit(lambda: self._counted(self.recognition.finish()))

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
                    return events
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


def _lower_priority() -> None:
    """Run the calling thread at nice 10: it takes only the CPU that decoding leaves (Linux: per thread)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):  # another platform, or not allowed: the default priority
        pass


class Engine:
    """Admits sessions up to the decoder cap and runs each one's decoding on a thread of its own (:class:`Lanes`)."""

    def __init__(
        self,
        registry: ModelRegistry,
        decoder_max_count: int,
        on_session_end: Callable[[SessionRecord], None] | None = None,
        *,
        warm_pool: int | None = None,
    ) -> None:
        self.registry = registry
        self.decoder_max_count = decoder_max_count
        #: For work outside sessions (the start-up warm-up).
        self.executor = ThreadPoolExecutor(max_workers=decoder_max_count, thread_name_prefix="warm")
        #: Warms replacements of retired recognizers, one at a time, at a lower CPU priority than decoding.
        self.replenisher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="replenish", initializer=_lower_priority)
        self.lanes = Lanes(decoder_max_count)
        self.active = 0
        self._on_end = on_session_end
        #: Recognizers of finished sessions kept warm (default: as many as may decode at once).
        self.pool = WarmPool(decoder_max_count if warm_pool is None else warm_pool)
        self.pool.on_retired = self._replenish
        #: The warm-up audio per pool key: what a retired recognizer's replacement decodes.
        self._warmup_pcm: dict[tuple[int, int], bytes] = {}

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.replenisher.shutdown(wait=False, cancel_futures=True)
        self.lanes.shutdown()
        self.pool.clear()

    def warm(self, model: LoadedModel, pcm: bytes, sample_rate: int) -> bool:
        """Decode ``pcm`` on a new recognizer and leave it warm in the pool; True when kept.

        Blocking: run it on :attr:`executor`. Start-up warm-up (:mod:`.warmup`) calls it
        once per recognizer to keep, so it never takes one from the pool. The audio is
        kept to warm the replacements of recognizers that retire later.
        """
        self._warmup_pcm[WarmPool._key(model, sample_rate)] = pcm
        recognition = Recognition(model, sample_rate, pool=self.pool, warmup=True)
        for piece in chunks(Audio(pcm, sample_rate, 1), FILE_CHUNK_SECONDS):
            recognition.accept(piece)
        recognition.finish()
        return recognition.release()

    def _replenish(self, model: LoadedModel, sample_rate: int) -> None:
        """A recognizer retired: warm a replacement in the background, as at start-up.

        Without it the pool shrinks by one at every retirement (each recognizer retires
        after 10 minutes of clock), and after an hour of light traffic a burst of streams
        finds it nearly empty: every stream then builds a new recognizer, whose first
        utterance costs ~4x the CPU of a warm one's. Only for models warmed at start-up
        (their warm-up audio), and only while the pool and the sessions' recognizers
        together are short of the pool's capacity.
        """
        pcm = self._warmup_pcm.get(WarmPool._key(model, sample_rate))
        if pcm is None:
            return
        try:
            self.replenisher.submit(self._replace, model, pcm, sample_rate)
        except RuntimeError:  # shut down
            pass

    def _replace(self, model: LoadedModel, pcm: bytes, sample_rate: int) -> None:
        if len(self.pool) + self.active >= self.pool.capacity:
            return
        try:
            if self.warm(model, pcm, sample_rate):
                self.pool.replaced += 1
        except Exception:  # an optimisation: sessions build recognizers of their own instead
            log.exception("warming a replacement recognizer failed")

    def _release(self, recognition: Recognition) -> None:
        try:
            recognition.release()
        finally:
            self.pool.done()

    def _admit(self) -> None:
        if self.active >= self.decoder_max_count:
            raise Busy(self.decoder_max_count)
        self.active += 1

    @asynccontextmanager
    async def session(
        self,
        locale: str,
        sample_rate: int,
        channels: int = 1,
        *,
        route: str,
        offset: float = 0.0,
        **options: object,
    ) -> AsyncIterator[Session]:
        """Admit a stream (or raise :class:`Busy`), resolve its model, and account for it at the end.

        Raises :class:`~speech_recognizer.models.UnknownLocale` or
        :class:`~speech_recognizer.models.ModelError` for the locale.
        """
        self._admit()
        lane = self.lanes.take()
        session: Session | None = None
        try:
            model = await self.registry.aload(locale)
            loop = asyncio.get_running_loop()
            recognition = await loop.run_in_executor(
                lane,
                lambda: Recognition(model, sample_rate, channels, offset=offset, pool=self.pool, **options),  # type: ignore[arg-type]
            )
            session = Session(recognition, route, lane)
            yield session
        finally:
            self.lanes.give(lane)
            self.active -= 1
            if session is not None:
                self.pool.expect()
                recognition = session.recognition
                try:  # back to the pool off the event loop, after the session's job still running
                    session.close(lambda: self._release(recognition))
                except RuntimeError:  # the executor is shut down
                    self.pool.done()
            if session is not None and self._on_end is not None:
                rec = session.recognition
                try:
                    self._on_end(SessionRecord(route, session.locale, rec.audio_seconds, rec.decode_seconds, session.phrases))
                except Exception:  # accounting must never break a response
                    log.exception("recording usage failed")
