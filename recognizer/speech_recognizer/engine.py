"""The recognition session every protocol drives: PCM in, partial and final results out.

:class:`Recognition` wraps one ``KaldiRecognizer`` and is synchronous;
:class:`Engine` admits sessions up to the decoder cap, runs their decoding off
the event loop, and records usage and metrics when a session ends. Every
protocol adapter goes through :meth:`Engine.session`, so the same audio gives
the same words and timings on every route.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable, Sequence, Union

import numpy as np

from .models import LoadedModel, ModelRegistry

log = logging.getLogger(__name__)

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


def _words(items: Sequence[dict], offset: float) -> tuple[Word, ...]:
    return tuple(
        Word(
            text=str(w.get("word", "")),
            start=float(w.get("start", 0.0)) + offset,
            end=float(w.get("end", 0.0)) + offset,
            confidence=float(w.get("conf", 1.0)),
        )
        for w in items
    )


def parse_final(raw: str, offset: float = 0.0) -> Phrase | None:
    """A :class:`Phrase` from Vosk's final JSON, or None when nothing was said."""
    data = json.loads(raw)
    alternatives: list[Alternative] = []
    if "alternatives" in data:
        for alt in data["alternatives"]:
            words = _words(alt.get("result", []), offset)
            alternatives.append(Alternative(str(alt.get("text", "")).strip(), float(alt.get("confidence", 0.0)), words))
    else:
        words = _words(data.get("result", []), offset)
        confidence = sum(w.confidence for w in words) / len(words) if words else 0.0
        alternatives.append(Alternative(str(data.get("text", "")).strip(), confidence, words))
    alternatives = [a for a in alternatives if a.text]
    if not alternatives:
        return None
    best = alternatives[0].words
    start = best[0].start if best else offset
    end = best[-1].end if best else offset
    return Phrase(tuple(alternatives), start, end)


class Recognition:
    """One stream through one ``KaldiRecognizer``. Synchronous: call from one thread at a time.

    Accepts 16-bit little-endian PCM at ``sample_rate`` with ``channels``
    interleaved channels (down-mixed to mono); Vosk resamples to the model's
    rate. ``offset`` (seconds) shifts every time reported, for streams that
    resume part-way.
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
    ) -> None:
        import vosk

        if sample_rate < 4000 or sample_rate > 192000:
            raise ValueError(f"sample rate {sample_rate} Hz is outside 4000..192000")
        if channels < 1 or channels > 32:
            raise ValueError(f"{channels} channels is not supported (1..32)")
        self.model = model
        self.sample_rate = sample_rate
        self.channels = channels
        self.offset = offset
        if phrase_list:
            grammar = json.dumps([*phrase_list, "[unk]"], ensure_ascii=False)
            self._rec = vosk.KaldiRecognizer(model.model, float(sample_rate), grammar)
        else:
            self._rec = vosk.KaldiRecognizer(model.model, float(sample_rate))
        self._rec.SetWords(words)
        self._rec.SetPartialWords(partial_words)
        if max_alternatives:
            self._rec.SetMaxAlternatives(max_alternatives)
        self._pending = b""
        self._frames = 0
        self._last_partial = ""
        self.decode_seconds = 0.0
        #: Whether the last :meth:`accept` ended an utterance (even one with no words).
        self.endpoint = False

    @property
    def audio_seconds(self) -> float:
        """Seconds of audio accepted so far."""
        return self._frames / self.sample_rate

    def _mono(self, pcm: bytes) -> bytes:
        data = self._pending + pcm
        frame_bytes = 2 * self.channels
        usable = len(data) - len(data) % frame_bytes
        self._pending = data[usable:]
        data = data[:usable]
        self._frames += usable // frame_bytes
        if self.channels == 1 or not data:
            return data
        samples = np.frombuffer(data, dtype="<i2").reshape(-1, self.channels)
        return samples.mean(axis=1).round().astype("<i2").tobytes()

    def accept(self, pcm: bytes) -> list[Event]:
        """Feed audio; returns a final phrase when an utterance ended, else a changed partial."""
        mono = self._mono(pcm)
        self.endpoint = False
        if not mono:
            return []
        started = time.perf_counter()
        final = self._rec.AcceptWaveform(mono)
        self.endpoint = bool(final)
        events: list[Event] = []
        if final:
            phrase = parse_final(self._rec.Result(), self.offset)
            self._last_partial = ""
            if phrase is not None:
                events.append(phrase)
        else:
            partial = self._partial()
            if partial is not None:
                events.append(partial)
        self.decode_seconds += time.perf_counter() - started
        return events

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
        words = _words(data.get("partial_result", []), self.offset)
        start = words[0].start if words else self.offset
        end = words[-1].end if words else self.offset + self.audio_seconds
        return Partial(text, start, end, words)

    def finish(self) -> list[Event]:
        """End of audio: the last phrase, if anything was said since the previous one."""
        started = time.perf_counter()
        phrase = parse_final(self._rec.FinalResult(), self.offset)
        self.decode_seconds += time.perf_counter() - started
        self._last_partial = ""
        return [phrase] if phrase is not None else []


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


class Session:
    """An admitted stream: :meth:`feed` and :meth:`finish` run the decoder off the event loop."""

    def __init__(self, engine: "Engine", recognition: Recognition, route: str) -> None:
        self._engine = engine
        self.recognition = recognition
        self.route = route
        self.phrases = 0

    @property
    def locale(self) -> str:
        return self.recognition.model.locale

    async def _run(self, fn: Callable[..., list[Event]], *args: bytes) -> list[Event]:
        loop = asyncio.get_running_loop()
        events = await loop.run_in_executor(self._engine.executor, fn, *args)
        self.phrases += sum(isinstance(e, Phrase) for e in events)
        return events

    async def feed(self, pcm: bytes) -> list[Event]:
        """Decode a chunk of PCM."""
        return await self._run(self.recognition.accept, pcm)

    async def finish(self) -> list[Event]:
        """Flush the decoder at end of audio."""
        return await self._run(self.recognition.finish)


class Engine:
    """Admits sessions up to the decoder cap and runs decoding on a shared thread pool."""

    def __init__(
        self,
        registry: ModelRegistry,
        decoder_max_count: int,
        on_session_end: Callable[[SessionRecord], None] | None = None,
    ) -> None:
        self.registry = registry
        self.decoder_max_count = decoder_max_count
        self.executor = ThreadPoolExecutor(max_workers=decoder_max_count, thread_name_prefix="decoder")
        self.active = 0
        self._on_end = on_session_end

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

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
        session: Session | None = None
        try:
            model = await self.registry.aload(locale)
            loop = asyncio.get_running_loop()
            recognition = await loop.run_in_executor(
                self.executor,
                lambda: Recognition(model, sample_rate, channels, offset=offset, **options),  # type: ignore[arg-type]
            )
            session = Session(self, recognition, route)
            yield session
        finally:
            self.active -= 1
            if session is not None and self._on_end is not None:
                rec = session.recognition
                try:
                    self._on_end(SessionRecord(route, session.locale, rec.audio_seconds, rec.decode_seconds, session.phrases))
                except Exception:  # accounting must never break a response
                    log.exception("recording usage failed")
