"""What a USP client asks for: turn options from the upgrade query and ``speech.context``,
the audio format from ``speech.config``."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping

from ..audio import PCM, WavFormat
from ..results import TICKS_PER_SECOND, OutputFormat, Profanity

#: Modes: ``interactive`` recognizes once; the others are continuous.
CONTINUOUS_MODES = ("conversation", "dictation")
#: Azure's default initial-silence timeout for recognize-once.
DEFAULT_INITIAL_SILENCE = 5.0


def _true(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class Options:
    """What a turn asks for."""

    mode: str = "conversation"
    language: str = "en-US"
    detailed: bool = False
    word_timings: bool = False
    word_confidence: bool = False
    profanity: Profanity = Profanity.MASKED
    initial_silence: float = DEFAULT_INITIAL_SILENCE
    #: Seconds of stream already acknowledged (``continuation`` of a previous turn).
    resume_at: float = 0.0

    @property
    def continuous(self) -> bool:
        return self.mode in CONTINUOUS_MODES

    @property
    def output_format(self) -> OutputFormat:
        return OutputFormat.DETAILED if self.detailed else OutputFormat.SIMPLE

    @classmethod
    def from_query(cls, mode: str, query: Mapping[str, str]) -> "Options":
        """Options from the upgrade URL (``language``, ``format``, ``profanity``, word levels, timeouts)."""
        q = {k.lower(): v for k, v in query.items()}
        silence = DEFAULT_INITIAL_SILENCE
        if q.get("initialsilencetimeoutms", "").isdigit():
            silence = int(q["initialsilencetimeoutms"]) / 1000 or DEFAULT_INITIAL_SILENCE
        return cls(
            mode=mode,
            language=q.get("language") or "en-US",
            detailed=q.get("format", "").lower() == "detailed",
            word_timings=_true(q.get("wordleveltimestamps")),
            word_confidence=_true(q.get("wordlevelconfidence")),
            profanity=Profanity.lenient(q.get("profanity")) or Profanity.MASKED,
            initial_silence=silence,
        )

    def with_context(self, context: Mapping[str, Any]) -> "Options":
        """These options updated by a ``speech.context`` body (its values win over the query)."""
        changes: dict[str, Any] = {}
        detection = context.get("phraseDetection") or {}
        if isinstance(detection, dict):
            if isinstance(detection.get("language"), str) and detection["language"]:
                changes["language"] = detection["language"]
            enrichment = detection.get("enrichment") or {}
            profanity = Profanity.lenient(enrichment.get("profanity")) if isinstance(enrichment, dict) else None
            if profanity is not None:
                changes["profanity"] = profanity
        output = context.get("phraseOutput") or {}
        if isinstance(output, dict) and str(output.get("format", "")).lower() == "detailed":
            changes["detailed"] = True
            wanted = {str(o).lower() for o in ((output.get("detailed") or {}).get("options") or [])}
            if "wordtimings" in wanted:
                changes["word_timings"] = True
            if "wordconfidence" in wanted:
                changes["word_confidence"] = True
        changes["resume_at"] = continuation_offset(context)
        return replace(self, **changes)


def continuation_offset(context: Mapping[str, Any]) -> float:
    """Seconds given by ``continuation.audio.streams.1.offset`` (100-ns ticks, a string), else 0."""
    try:
        streams = context["continuation"]["audio"]["streams"]
        stream = streams.get("1") or next(iter(streams.values()))
        return max(0, int(stream["offset"])) / TICKS_PER_SECOND
    except (KeyError, TypeError, ValueError, AttributeError, StopIteration):
        return 0.0


#: What a stream is when neither ``speech.config`` nor a RIFF header says otherwise.
DEFAULT_FORMAT = WavFormat(PCM, 1, 16000, 16)


def audio_format(config: Mapping[str, Any]) -> WavFormat:
    """The 16-bit PCM format ``speech.config`` announces (``context.audio.source``), default 16 kHz mono."""
    source = ((config.get("context") or {}).get("audio") or {}).get("source") or {}
    try:
        rate = int(source.get("samplerate") or DEFAULT_FORMAT.sample_rate)
        channels = int(source.get("channelcount") or DEFAULT_FORMAT.channels)
    except (TypeError, ValueError, AttributeError):
        return DEFAULT_FORMAT
    if rate <= 0 or channels <= 0:
        return DEFAULT_FORMAT
    return WavFormat(PCM, channels, rate, 16)
