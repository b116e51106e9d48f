"""One stream through Vosk: PCM in, transcript events out, on the stream's clock.

A :class:`Recognition` converts the stream to its model's rate (down-mix, then
:mod:`.resampling`) and feeds one ``KaldiRecognizer`` at a time. It may start on a
warm one from the pool, whose clock has run on: every time it reports is taken
back to the stream's clock (:func:`clock_unit` keeps that exact). A recognizer's
lazily composed graph grows with the audio it decodes, so a long stream moves to
another recognizer at an utterance end (a handover) and a pooled one retires once
its clock runs long. Why and how much: docs/engine.md.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from enum import Enum
from typing import Any

from . import heap
from .audio import dither_zeros, mono, rms
from .errors import BadValue
from .models import LoadedModel
from .pool import WarmPool
from .resampling import Resampler
from .transcript import Event, Partial, parse_final, parse_partial

log = logging.getLogger(__name__)

#: A pooled recognizer retires at its release once its clock passes this: its memory grows with the audio it
#: has decoded (the lazily composed graph), and a stream that takes it adds up to :data:`RECYCLE_AUDIO_SECONDS`
#: of its own and an utterance, so its clock stays under 1024 s (Vosk's times are 32-bit floats on it: 61 µs
#: resolution up to there).
MAX_WARM_CLOCK_SECONDS = 300

#: A stream moves to another recognizer at the first utterance end after this much of ITS OWN audio on the
#: recognizer (about where Vosk restarts a recognizer's feature pipeline itself: 20000 frames), and drops the
#: grown one: the graph cannot be shrunk, only dropped. Counted from what the stream fed, not from the
#: recognizer's clock: one from the pool brings the audio of earlier sessions (other clients'), and a move is
#: not seamless (the next recognizer starts a new feature pipeline), so a stream moved early for that decoded
#: differently from there on, and a client's words depended on what others had said before.
RECYCLE_AUDIO_SECONDS = 600


def retire_clock(longest: float | None) -> float:
    """The clock (seconds) a pooled recognizer retires at when no stream that takes it is longer than ``longest``
    seconds (None: not known, the server's case).

    A stream adds at most :data:`RECYCLE_AUDIO_SECONDS` and an utterance to the clock it took, so retiring at
    :data:`MAX_WARM_CLOCK_SECONDS` keeps every clock under their sum and an utterance; streams known to be shorter
    (a batch of files whose lengths their headers give: the transcriber) leave the rest of that room to the clock
    they take, and a recognizer is kept that much longer instead of a new one built (and its graph composed again)
    for the next file. The bound on every clock is the same.
    """
    if longest is None:
        return MAX_WARM_CLOCK_SECONDS
    return MAX_WARM_CLOCK_SECONDS + max(0.0, RECYCLE_AUDIO_SECONDS - longest)

#: Vosk recognizer states, as far as reuse needs to know them.
_FRESH, _RUNNING, _ENDPOINT, _FINALIZED = "fresh", "running", "endpoint", "finalized"


class Release(Enum):
    """What became of a recognizer at :meth:`Recognition.release`."""

    #: Finalized and idle in the pool.
    KEPT = "kept"
    #: Its clock had run past :data:`MAX_WARM_CLOCK_SECONDS` (or its pool's :attr:`~.pool.WarmPool.retire_clock`): dropped (a replacement may be due).
    RETIRED = "retired"
    #: Not reusable (no pool, a phrase list, the pool full, finalizing failed, released before): dropped.
    DROPPED = "dropped"


def clock_unit(sample_rate: int) -> int:
    """Samples a reused recognizer's clock is padded to a multiple of.

    1/16 s when that is whole samples (1000 at 16 kHz), else the largest of 1/8, 1/4,
    1/2 s that is, else 1 s: multiples of 1/16 s are exact in float32 and in Vosk's
    six-decimal times, so subtracting the clock leaves every time as a fresh
    recognizer prints it.
    """
    for parts in (16, 8, 4, 2):
        if sample_rate % parts == 0:
            return sample_rate // parts
    return sample_rate


class Recognition:
    """One stream through one ``KaldiRecognizer`` at a time. Synchronous: call from one thread at a time.

    Accepts 16-bit little-endian PCM at ``sample_rate`` with ``channels``
    interleaved channels, down-mixed to mono and converted to the model's rate
    (one recognizer, and one pool, for every input rate). ``offset`` (seconds) shifts every time reported, for streams that
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
            raise BadValue(f"sample rate {sample_rate} Hz is outside 4000..192000")
        if channels < 1 or channels > 32:
            raise BadValue(f"{channels} channels is not supported (1..32)")
        self.model = model
        self.sample_rate = sample_rate
        self.channels = channels
        #: The rate Vosk decodes at (the model's): every clock below counts its samples.
        self.rate = model.sample_rate
        self._resample = Resampler(sample_rate, self.rate)
        self.offset = offset
        #: Where the recognizer goes after the session (None: not reusable).
        self._pool = None if phrase_list else pool
        self._grammar = json.dumps([*phrase_list, "[unk]"], ensure_ascii=False) if phrase_list else None
        self._words, self._partial_words, self._max_alternatives = words, partial_words, max_alternatives
        self._lock = threading.Lock()
        self._rec: Any = None  # a vosk.KaldiRecognizer once started (vosk ships no type hints)
        self._warmup = warmup
        #: Samples (at the model's rate) fed before the current recognizer took over (it changes at a handover).
        self._origin = 0
        #: Samples (at the model's rate) fed to Vosk by this stream.
        self._samples = 0
        #: Recognizers this stream moved off at an utterance end because their clock had run long.
        self.recycled = 0
        self._frames = 0
        self._acquire(wait=True)
        #: Whether :meth:`accept` computes intermediate results (files need none: they cost decode time).
        self.partials = partials
        self._pending = b""
        self._last_partial = ""
        #: CPU seconds the decoding of this stream took on its decoder thread (not wall time: the thread may wait for a CPU).
        self.decoder_cpu_seconds = 0.0
        #: Whether the last :meth:`accept` ended an utterance (even one with no words).
        self.endpoint = False
        #: The loudness of the audio the last :meth:`accept` took (:func:`~.audio.rms`, as fed to the decoder), with partials.
        self.level = 0.0

    def _acquire(self, *, wait: bool) -> None:
        """Take the most experienced idle recognizer from the pool, or build a new one.

        Sets the clock it starts on: samples it had been fed before (its times are
        reported less those) and seconds of session audio it had decoded.
        """
        import vosk

        warm = self._pool.take(self.model, wait=wait) if self._pool is not None and not self._warmup else None
        if warm is not None:
            self._rec, self._base_samples, self._experience = warm.rec, warm.samples, warm.experience
            self._state = _FINALIZED
        else:
            args = (self._grammar,) if self._grammar else ()
            self._rec = vosk.KaldiRecognizer(self.model.model, float(self.rate), *args)
            self._base_samples, self._experience, self._state = 0, 0.0, _FRESH
        if warm is not None or self._max_alternatives:
            self._rec.SetMaxAlternatives(self._max_alternatives)
        self._rec.SetWords(self._words)
        self._rec.SetPartialWords(self._partial_words)

    @property
    def _stream_position(self) -> int:
        """The stream's index (at the model's rate) of the next sample fed: a continuation starts at its offset."""
        return round(self.offset * self.rate) + self._samples

    @property
    def _fed(self) -> int:
        """Samples the current recognizer has been fed by this stream."""
        return self._samples - self._origin

    @property
    def _time_offset(self) -> float:
        """Stream time of the current recognizer's first sample of this stream."""
        return self.offset + self._origin / self.rate

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
        return self._base_samples / self.rate

    def _convert(self, pcm: bytes) -> bytes:
        """Whole frames of ``pcm`` (the rest waits for the next chunk), down-mixed and at the model's rate."""
        data = self._pending + pcm
        frame_bytes = 2 * self.channels
        usable = len(data) - len(data) % frame_bytes
        self._pending = data[usable:]
        data = data[:usable]
        self._frames += usable // frame_bytes
        return self._resample(mono(data, self.channels)) if data else b""

    def accept(self, pcm: bytes) -> list[Event]:
        """Feed audio; returns a final phrase when an utterance ended, else a changed partial."""
        samples = self._convert(pcm)
        self.endpoint = False
        self.level = rms(samples) if self.partials else 0.0  # streams read it (usp.connection); files need none
        if not samples:
            return []
        with self._lock:
            started = time.thread_time()
            samples = dither_zeros(samples, self._stream_position)
            self._samples += len(samples) // 2
            final = self._rec.AcceptWaveform(samples)
            self._state = _ENDPOINT if final else _RUNNING
            self.endpoint = bool(final)
            events: list[Event] = []
            if final:
                phrase = parse_final(self._rec.Result(), self._time_offset, self._shift)
                self._last_partial = ""
                if phrase is not None:
                    events.append(phrase)
                if self._fed >= RECYCLE_AUDIO_SECONDS * self.rate:
                    self._recycle()
            elif self.partials:
                partial = self._partial()
                if partial is not None:
                    events.append(partial)
            self.decoder_cpu_seconds += time.thread_time() - started
        return events

    def _recycle(self) -> None:
        """At an utterance end: go on with another recognizer and drop this grown one.

        The next utterance starts on the new recognizer's clock at the current stream
        position (Vosk restarts there too after an endpoint; only the few undecoded
        frames of trailing silence in its feature pipeline are not carried over).
        """
        self._origin = self._samples
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
        partial = parse_partial(self._rec.PartialResult(), self._last_partial, self._time_offset, self._shift,
                                self.offset, self.offset + self.audio_seconds)
        if partial is not None:
            self._last_partial = partial.text
        return partial

    def finish(self) -> list[Event]:
        """End of audio: the last phrase, if anything was said since the previous one.

        The audio the resampler still holds goes to the decoder first; any phrase it
        ends comes before the last one.
        """
        events: list[Event] = []
        tail = self._resample(b"", last=True)
        if tail:
            events += self._accept_tail(tail)
        with self._lock:
            started = time.thread_time()
            phrase = parse_final(self._rec.FinalResult(), self._time_offset, self._shift)
            if self._state == _RUNNING:
                self._state = _FINALIZED
            self.decoder_cpu_seconds += time.thread_time() - started
        self._last_partial = ""
        return events + ([phrase] if phrase is not None else [])

    def _accept_tail(self, samples: bytes) -> list[Event]:
        """The resampler's last samples: decoded, an utterance they end reported, no partial."""
        with self._lock:
            started = time.thread_time()
            samples = dither_zeros(samples, self._stream_position)
            self._samples += len(samples) // 2
            events: list[Event] = []
            if self._rec.AcceptWaveform(samples):
                self._state = _ENDPOINT
                phrase = parse_final(self._rec.Result(), self._time_offset, self._shift)
                if phrase is not None:
                    events.append(phrase)
            else:
                self._state = _RUNNING
            self.decoder_cpu_seconds += time.thread_time() - started
        return events

    def release(self) -> Release:
        """After the stream: finalize the recognizer and hand it to the pool; says what became of it.

        Blocking (it may flush the decoder); call off the event loop, once. Vosk
        restarts its feature pipeline and decoder only from the finalized state,
        and its clock then runs on from the samples fed so far; the recognizer is
        fed silence up to a whole :func:`clock_unit` (so that taking the clock off
        leaves Vosk's printed times exact, to the tick) and finalized. A recognizer
        not kept is dropped, and the heap trimmed. Either way this recognition holds
        it no more.
        """
        pool, self._pool = self._pool, None
        with self._lock:
            outcome = self._finalize_into(pool) if pool is not None and pool.capacity > 0 else Release.DROPPED
            if outcome is Release.KEPT:
                # The pool's now. A finished session's objects wait in a reference cycle for Python's collector,
                # and this reference would keep the recognizer alive after the stream that takes it next drops it.
                self._rec = None
            else:
                self._drop()
            return outcome

    def _finalize_into(self, pool: WarmPool) -> Release:
        samples = self._base_samples + self._fed
        limit = MAX_WARM_CLOCK_SECONDS if pool.retire_clock is None else pool.retire_clock
        if samples >= limit * self.rate:
            return Release.RETIRED
        experience = self._experience + (0.0 if self._warmup else self._fed / self.rate)
        if self._state == _FRESH and samples == 0:
            return Release.KEPT if pool.give(self.model, self._rec, 0, experience) else Release.DROPPED
        try:
            unit = clock_unit(self.rate)
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
                pad = self.rate
        except Exception:  # a recognizer in doubt is not reused
            log.exception("finalizing a recognizer for reuse failed")
            return Release.DROPPED
        if self._state != _FINALIZED:
            return Release.DROPPED
        return Release.KEPT if pool.give(self.model, self._rec, samples, experience) else Release.DROPPED
