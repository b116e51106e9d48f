"""Recognition options of a USP turn, from the upgrade query and the turn's ``speech.context``."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping

TICKS_PER_SECOND = 10_000_000

#: Modes: ``interactive`` recognizes once; the others are continuous.
CONTINUOUS_MODES = ("conversation", "dictation")
PROFANITY = ("masked", "removed", "raw")
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
    profanity: str = "masked"
    initial_silence: float = DEFAULT_INITIAL_SILENCE
    #: Seconds of stream already acknowledged (``continuation`` of a previous turn).
    resume_at: float = 0.0

    @property
    def continuous(self) -> bool:
        return self.mode in CONTINUOUS_MODES

    @classmethod
    def from_query(cls, mode: str, query: Mapping[str, str]) -> "Options":
        """Options from the upgrade URL (``language``, ``format``, ``profanity``, word levels, timeouts)."""
        q = {k.lower(): v for k, v in query.items()}
        profanity = q.get("profanity", "masked").lower()
        silence = DEFAULT_INITIAL_SILENCE
        if q.get("initialsilencetimeoutms", "").isdigit():
            silence = int(q["initialsilencetimeoutms"]) / 1000 or DEFAULT_INITIAL_SILENCE
        return cls(
            mode=mode,
            language=q.get("language") or "en-US",
            detailed=q.get("format", "").lower() == "detailed",
            word_timings=_true(q.get("wordleveltimestamps")),
            word_confidence=_true(q.get("wordlevelconfidence")),
            profanity=profanity if profanity in PROFANITY else "masked",
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
            profanity = str(enrichment.get("profanity", "")).lower() if isinstance(enrichment, dict) else ""
            if profanity in PROFANITY:
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


def ticks(seconds: float) -> int:
    """Seconds -> 100-ns ticks (never negative)."""
    return max(0, int(round(seconds * TICKS_PER_SECOND)))
