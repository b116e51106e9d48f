"""What a USP client asks for: turn options from the upgrade query and ``speech.context``,
the audio format and the offsets' time base from ``speech.config``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from ..audio import PCM, WavFormat
from ..errors import NOT_SERVED, BadValue, Failure
from ..results import TICKS_PER_SECOND, OutputFormat, Profanity
from ..settings import flag

#: Modes: ``interactive`` recognizes once; the others are continuous.
CONTINUOUS_MODES = ("conversation", "dictation")
#: Azure's default initial-silence timeout for recognize-once.
DEFAULT_INITIAL_SILENCE = 5.0


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
    #: The languages of the app's ``AutoDetectSourceLanguageConfig`` (query ``lidEnabled``, ``speech.context``
    #: ``languageId.languages``): one is recognized in (its phrases name it); several are refused (:meth:`checked`).
    candidates: tuple[str, ...] = ()
    #: Seconds of silence after which a phrase ends (``Speech_SegmentationSilenceTimeoutMs``, or in interactive mode
    #: ``SpeechServiceConnection_EndSilenceTimeoutMs``), when the app set one: phrases are cut at pauses that long, and
    #: joined across shorter ones (:meth:`~.connection.Turn._emit`).
    segmentation_silence: float | None = None

    @property
    def continuous(self) -> bool:
        return self.mode in CONTINUOUS_MODES

    @property
    def output_format(self) -> OutputFormat:
        return OutputFormat.DETAILED if self.detailed else OutputFormat.SIMPLE

    @classmethod
    def from_query(cls, mode: str, query: Mapping[str, str]) -> Options:
        """Options from the upgrade URL (``language``, ``format``, ``profanity``, word levels, timeouts)."""
        q = {k.lower(): v for k, v in query.items()}
        silence = DEFAULT_INITIAL_SILENCE
        millis = q.get("initialsilencetimeoutms", "")
        if millis.isascii() and millis.isdigit() and len(millis) <= 9:
            silence = int(millis) / 1000 or DEFAULT_INITIAL_SILENCE
        candidates = tuple(c.strip() for c in q.get("lidenabled", "").split(",") if c.strip())
        return cls(
            mode=mode,
            language=candidates[0] if len(candidates) == 1 else q.get("language") or "en-US",
            candidates=candidates,
            detailed=q.get("format", "").lower() == "detailed",
            word_timings=flag(q, "wordleveltimestamps"),
            word_confidence=flag(q, "wordlevelconfidence"),
            profanity=Profanity.lenient(q.get("profanity")) or Profanity.MASKED,
            initial_silence=silence,
        )

    def with_context(self, context: Mapping[str, Any]) -> Options:
        """These options updated by a ``speech.context`` body (its values win over the query).

        Raises :class:`~speech_recognizer.errors.BadValue` naming the member that has the wrong shape or value, and
        :class:`~speech_recognizer.errors.Failure` for what is not served (:meth:`checked`).
        """
        changes: dict[str, Any] = {}
        identification = _member(context, "languageId", dict) or {}
        candidates = _member(identification, "languages", list, "languageId.")
        if candidates:
            changes["candidates"] = tuple(str(c) for c in candidates)
            changes["language"] = changes["candidates"][0]
        detection = _member(context, "phraseDetection", dict) or {}
        language = _member(detection, "language", str, "phraseDetection.")
        if language:
            changes["language"] = language
        enrichment = _member(detection, "enrichment", dict, "phraseDetection.") or {}
        profanity = Profanity.lenient(enrichment.get("profanity"))
        if profanity is not None:
            changes["profanity"] = profanity
        output = _member(context, "phraseOutput", dict) or {}
        if str(output.get("format", "")).lower() == "detailed":
            changes["detailed"] = True
            detailed = _member(output, "detailed", dict, "phraseOutput.") or {}
            wanted = {str(o).lower() for o in _member(detailed, "options", list, "phraseOutput.detailed.") or ()}
            if "wordtimings" in wanted:
                changes["word_timings"] = True
            if "wordconfidence" in wanted:
                changes["word_confidence"] = True
        diarization = _member(detection, "speakerDiarization", dict, "phraseDetection.")
        if diarization and str(diarization.get("mode", "")).lower() not in ("", "none"):
            # the SDK for JavaScript's ConversationTranscriber asks for speaker ids on the recognition route (the Python
            # SDK's has a route of its own, refused as not served); recognizing without them would be a silent lack
            raise Failure("speaker diarization (ConversationTranscriber) is not served here: this server recognizes "
                          "speech without telling speakers apart (SpeechRecognizer)", NOT_SERVED)
        pause = segmentation_silence(detection, interactive=not self.continuous)
        if pause is not None:
            changes["segmentation_silence"] = pause
        changes["resume_at"] = continuation_offset(context)
        return replace(self, **changes).checked()

    def checked(self) -> Options:
        """These options, when this server can serve them.

        Raises :class:`~speech_recognizer.errors.Failure` (:data:`~speech_recognizer.errors.NOT_SERVED`) for language
        identification among several languages: no model here tells languages apart (nor does Azure's speech-to-text
        container: language identification is a container of its own), and recognizing in one of them would be a
        silent wrong answer for speech in another.
        """
        if len(self.candidates) > 1:
            raise Failure(f"language identification among {', '.join(self.candidates)[:40]} is not served: "
                          "recognize in one language (speech_recognition_language)", NOT_SERVED)
        return self

    @property
    def identified(self) -> dict[str, str] | None:
        """``PrimaryLanguage`` of the turn's results when the app asked for language identification (with one
        language): the SDK's ``AutoDetectSourceLanguageResult``. ``Confidence`` is ``Unknown``: nothing was detected."""
        return {"Language": self.language, "Confidence": "Unknown"} if self.candidates else None


#: The segmentation silences Azure takes, in ms (the SDK's documentation: 100 to 5000).
SEGMENTATION_SILENCE_MS = (100, 5000)


def segmentation_silence(detection: Mapping[str, Any], *, interactive: bool) -> float | None:
    """Seconds of ``phraseDetection.<MODE>.segmentation.segmentationSilenceTimeoutMs`` (the SDK writes its mode's
    name in capitals) or, in interactive mode, of ``trailingSilenceTimeout`` (end silence); None when neither is set.

    Raises :class:`~speech_recognizer.errors.BadValue` for a value that is not a whole number of ms from 100 to 5000.
    """
    found: list[tuple[str, Any]] = []
    for member in detection.values():
        segmentation = member.get("segmentation") if isinstance(member, dict) else None
        if isinstance(segmentation, dict) and segmentation.get("segmentationSilenceTimeoutMs") is not None:
            found.append(("segmentationSilenceTimeoutMs", segmentation["segmentationSilenceTimeoutMs"]))
    if not found and interactive and detection.get("trailingSilenceTimeout") is not None:
        found.append(("trailingSilenceTimeout", detection["trailingSilenceTimeout"]))
    if not found:
        return None
    where, value = found[0]
    low, high = SEGMENTATION_SILENCE_MS
    text = str(value).strip()
    if isinstance(value, bool) or not (text.isascii() and text.isdigit() and len(text) <= 9) or not low <= int(text) <= high:
        raise BadValue(f"speech.context phraseDetection {where} {text[:20]!r} is not a number of ms from {low} to {high}")
    return int(text) / 1000


def _member(parent: Mapping[str, Any], name: str, kind: type, where: str = "") -> Any:
    """``parent[name]`` when it is a ``kind`` (None when absent or null); a :class:`BadValue` when it is something else."""
    value = parent.get(name)
    if value is None or isinstance(value, kind):
        return value
    raise BadValue(f"speech.context {where}{name} must be {_NAMES[kind]}, not {type(value).__name__}")


_NAMES: dict[type, str] = {dict: "an object", list: "a list", str: "a string"}

#: Largest continuation offset taken: a day of audio in 100-ns ticks.
MAX_OFFSET_TICKS = 24 * 3600 * TICKS_PER_SECOND


def continuation_offset(context: Mapping[str, Any]) -> float:
    """Seconds given by ``continuation.audio.streams.1.offset`` (100-ns ticks, a string), 0 when there is none.

    Raises :class:`~speech_recognizer.errors.BadValue` for an offset that is not a whole number of ticks
    from 0 to a day.
    """
    try:
        streams = context["continuation"]["audio"]["streams"]
        stream = streams.get("1") or next(iter(streams.values()))
        raw = stream["offset"]
    except (KeyError, TypeError, AttributeError, StopIteration):
        return 0.0
    text = str(raw).strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 18) or int(text) > MAX_OFFSET_TICKS:
        raise BadValue(f"speech.context continuation offset {text[:40]!r} is not a number of 100-ns ticks from 0 to a day")
    return int(text) / TICKS_PER_SECOND


#: What a stream is when neither ``speech.config`` nor a RIFF header says otherwise.
DEFAULT_FORMAT = WavFormat(PCM, 1, 16000, 16)


def audio_source(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """``speech.config``'s ``context.audio.source`` (the client's audio), empty when absent.

    Raises :class:`~speech_recognizer.errors.BadValue` when one of those members is not an object.
    """
    source: Any = config
    for name in ("context", "audio", "source"):
        source = source.get(name) or {}
        if not isinstance(source, dict):
            raise BadValue(f"speech.config member {name} must be an object, not {type(source).__name__}")
    return source


def stream_offsets(config: Mapping[str, Any]) -> bool:
    """Whether the client takes the offsets it is sent as times of its whole stream, not of the turn: the SDK for
    JavaScript with multi-channel processing on (``Speech_EnableMultiChannelProcessing``), which says so with
    ``SeparateChannelProcessing`` in ``speech.config``'s audio source (its reliable-reconnect contract, in which it
    adds no turn start of its own and learns the acknowledged offset from a header: ``usp.connection``).

    Raises :class:`~speech_recognizer.errors.BadValue` as :func:`audio_source` does.
    """
    return str(audio_source(config).get("SeparateChannelProcessing", "")).lower() == "true"


def audio_format(config: Mapping[str, Any]) -> WavFormat:
    """The 16-bit PCM format ``speech.config`` announces (``context.audio.source``), default 16 kHz mono.

    Raises :class:`~speech_recognizer.errors.BadValue` as :func:`audio_source` does.
    """
    source = audio_source(config)
    try:
        rate = int(source.get("samplerate") or DEFAULT_FORMAT.sample_rate)
        channels = int(source.get("channelcount") or DEFAULT_FORMAT.channels)
    except (TypeError, ValueError, OverflowError):
        return DEFAULT_FORMAT
    if rate <= 0 or channels <= 0:
        return DEFAULT_FORMAT
    return WavFormat(PCM, channels, rate, 16)
