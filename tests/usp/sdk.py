"""Driving the real Azure Speech SDK against a test server, and what it must report."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import azure.cognitiveservices.speech as speechsdk

from speech_recognizer.results import Profanity, apply_profanity, display, span, written

from ..support import READING_SECONDS, RefPhrase, Starved, Unstarved, near_confidence


def config(ws_base: str, *, key: str | None = None, language: str = "ko-KR", endpoint_mode: str | None = None) -> speechsdk.SpeechConfig:
    """``SpeechConfig(host=...)``, or ``endpoint=`` the given mode's full URL."""
    if endpoint_mode:
        url = f"{ws_base}/speech/recognition/{endpoint_mode}/cognitiveservices/v1"
        cfg = speechsdk.SpeechConfig(endpoint=url, subscription=key or "unused-key")
    elif key:
        cfg = speechsdk.SpeechConfig(host=ws_base, subscription=key)
    else:
        cfg = speechsdk.SpeechConfig(host=ws_base)
    cfg.speech_recognition_language = language
    return cfg


def detailed(cfg: speechsdk.SpeechConfig) -> speechsdk.SpeechConfig:
    """``cfg`` asking for Azure's detailed results with each word's times and confidence (``NBest[0].Words``)."""
    cfg.output_format = speechsdk.OutputFormat.Detailed
    cfg.request_word_level_timestamps()
    cfg.set_service_property("wordLevelConfidence", "true", speechsdk.ServicePropertyChannel.UriQueryParameter)
    return cfg


def recognizer(cfg: speechsdk.SpeechConfig, wav: Path) -> speechsdk.SpeechRecognizer:
    return speechsdk.SpeechRecognizer(cfg, audio_config=speechsdk.audio.AudioConfig(filename=str(wav)))


def once(cfg: speechsdk.SpeechConfig, wav: Path) -> speechsdk.SpeechRecognitionResult:
    return recognizer(cfg, wav).recognize_once()


@dataclass
class Events:
    """What a continuous recognition reported, with wall-clock times."""

    recognized: list[speechsdk.SpeechRecognitionResult] = field(default_factory=list)
    recognizing: list[tuple[float, str]] = field(default_factory=list)
    recognized_at: list[float] = field(default_factory=list)
    canceled: list[speechsdk.CancellationDetails] = field(default_factory=list)
    stopped: threading.Event = field(default_factory=threading.Event)
    #: What the handlers raised: the SDK calls them on its own thread and drops what they raise.
    handler_errors: list[BaseException] = field(default_factory=list)

    def handler(self, fn: Callable[[Any], None]) -> Callable[[Any], None]:
        """``fn``, keeping what it raises in :attr:`handler_errors` (the SDK would drop it silently)."""

        def handle(e: Any) -> None:
            try:
                fn(e)
            except BaseException as exc:
                self.handler_errors.append(exc)
                raise

        return handle


def continuous(rec: speechsdk.SpeechRecognizer, timeout: float = 60.0, started: threading.Event | None = None) -> Events:
    """Run continuous recognition until the session stops (end of audio, or an error: then in
    :attr:`Events.canceled`); a handler that raised fails the caller. ``timeout`` is judged in time in which this
    process (the SDK's threads, a server's in this process) and its children did not wait for a CPU, or by the clock
    after :func:`~tests.support.starved_clock` of it, however starved (:meth:`~tests.support.Unstarved.beyond`): a
    bound by the clock alone failed recognitions that were only slow on a machine shared by many."""
    ev = Events()
    rec.recognizing.connect(ev.handler(lambda e: ev.recognizing.append((time.monotonic(), e.result.text))))

    def on_recognized(e: speechsdk.SpeechRecognitionEventArgs) -> None:
        if e.result.reason == speechsdk.ResultReason.RecognizedSpeech:
            ev.recognized.append(e.result)
            ev.recognized_at.append(time.monotonic())

    def on_canceled(e: speechsdk.SpeechRecognitionCanceledEventArgs) -> None:
        # The event's reason is in its details: the event has no ``reason`` (reading it raised, and the
        # SDK dropped the AttributeError, so no cancellation was ever recorded).
        if e.cancellation_details.reason == speechsdk.CancellationReason.Error:
            ev.canceled.append(e.cancellation_details)

    rec.recognized.connect(ev.handler(on_recognized))
    rec.canceled.connect(ev.handler(on_canceled))
    rec.session_stopped.connect(ev.handler(lambda e: ev.stopped.set()))
    rec.start_continuous_recognition()
    if started is not None:
        started.set()
    stopwatch = Unstarved()
    try:
        while not (stopped := ev.stopped.wait(READING_SECONDS)) and not stopwatch.beyond(timeout):
            pass
    finally:
        stopwatch.close()
    rec.stop_continuous_recognition()
    assert not ev.handler_errors, f"an event handler raised: {ev.handler_errors!r}"
    assert stopped, (f"the recognition session did not stop within {timeout:g} s ({stopwatch}): {len(ev.recognized)} "
                     f"phrases, canceled: {[c.error_details for c in ev.canceled]}")
    return ev


#: How far the server's times may be from in-process Vosk's, in ticks. Vosk's times are on
#: its 10 ms frame grid, so any decoding difference moves a time by 10 ms or more; what this
#: allows is only clock rounding: a reused (warm) recognizer's clock has run on, and
#: ``recognition.Recognition`` takes it off float32 times and rounds to 1 µs, which leaves
#: microseconds of error (seen: 3000010 for 3000000). 0 once the engine rounds to its grid.
CLOCK_TOLERANCE = 10_000  # 1 ms

Span = tuple[str, int, int]


def display_text(phrase: RefPhrase) -> str:
    """The ``DisplayText`` Azure's formatting gives a phrase of in-process Vosk."""
    return display(apply_profanity(written(phrase.text), Profanity.MASKED))


def expected(phrase: RefPhrase) -> Span:
    """``(text, Offset, Duration)`` the server must report for a phrase of in-process Vosk."""
    return (display_text(phrase), *span(phrase.words[0].start, phrase.words[-1].end))


def expected_words(phrase: RefPhrase) -> list[Span]:
    """``(Word, Offset, Duration)`` of each word of a phrase of in-process Vosk."""
    return [(w.word, *span(w.start, w.end)) for w in phrase.words]


def reported(result: speechsdk.SpeechRecognitionResult) -> Span:
    return result.text, result.offset, result.duration


def spans(items: list[dict]) -> list[Span]:
    """``(Word|DisplayText, Offset, Duration)`` of JSON results or words."""
    return [(i.get("Word", i.get("DisplayText")), i["Offset"], i["Duration"]) for i in items]


def assert_same(got: list[Span], want: list[Span]) -> None:
    """The same texts in the same order, each starting and ending where in-process Vosk says."""
    assert [g[0] for g in got] == [w[0] for w in want], (got, want)
    for (text, offset, duration), (_, w_offset, w_duration) in zip(got, want, strict=True):
        assert abs(offset - w_offset) <= CLOCK_TOLERANCE, (text, offset, w_offset)
        assert abs(offset + duration - w_offset - w_duration) <= CLOCK_TOLERANCE, (text, offset + duration, w_offset + w_duration)


def assert_confidences(body: dict, phrase: RefPhrase) -> None:
    """A detailed result's (``NBest``) confidences are in-process Vosk's at Azure's 6 decimals: the phrase's
    (the mean of its words') and, where the words carry one (``wordLevelConfidence``), each word's, within
    :data:`~tests.support.CONFIDENCE_TOLERANCE` (a pooled recognizer's lattice is not always a new one's). A
    simple result carries none."""
    if "NBest" not in body:
        return
    best = body["NBest"][0]
    assert best["Confidence"] == round(best["Confidence"], 6), best["Confidence"]
    assert near_confidence(best["Confidence"], phrase.confidence), (best["Confidence"], phrase)
    words = best.get("Words", [])
    if words and "Confidence" in words[0]:
        assert [w["Word"] for w in words] == [w.word for w in phrase.words], (words, phrase)
        assert all(w["Confidence"] == round(w["Confidence"], 6) for w in words), words
        far = [(w["Word"], w["Confidence"], ref.confidence) for w, ref in zip(words, phrase.words, strict=True)
               if not near_confidence(w["Confidence"], ref.confidence)]
        assert not far, (far, phrase)


def assert_matches(result: speechsdk.SpeechRecognitionResult, phrase: RefPhrase) -> None:
    """The SDK recognized exactly what in-process Vosk did: same text, same times, and in a detailed
    result the same confidences (:func:`assert_confidences`)."""
    assert result.reason == speechsdk.ResultReason.RecognizedSpeech, result
    assert_same([reported(result)], [expected(phrase)])
    assert_confidences(json.loads(result.json), phrase)


# ---- the SDK's services the recognizer does not serve: what each client reports, and how soon -----------------------


def _refused(details: Any, code: Any) -> str:
    return f"{code} {details.error_details}"


def translate_once(ws_base: str, wav: Path) -> tuple[str, float]:
    """A ``TranslationRecognizer``'s ``recognize_once``: ``(its CancellationErrorCode and error details, seconds)``; the
    seconds of each client here are those but the time this process and its children (the SDK, the servers) waited for a
    CPU (:class:`~tests.support.Starved`)."""
    cfg = speechsdk.translation.SpeechTranslationConfig(host=ws_base)
    cfg.speech_recognition_language = "ko-KR"
    cfg.add_target_language("en")
    rec = speechsdk.translation.TranslationRecognizer(cfg, audio_config=speechsdk.audio.AudioConfig(filename=str(wav)))
    with Starved() as starved:
        result = rec.recognize_once()
    assert result.reason == speechsdk.ResultReason.Canceled, result
    return _refused(result.cancellation_details, result.cancellation_details.code), starved.seconds


def transcribe(ws_base: str, wav: Path) -> tuple[str, float]:
    """A ``ConversationTranscriber`` until its ``canceled`` event: ``(its code and error details, seconds)``."""
    rec = speechsdk.transcription.ConversationTranscriber(config(ws_base), audio_config=speechsdk.audio.AudioConfig(filename=str(wav)))
    canceled: list[tuple[str, float]] = []
    done = threading.Event()
    with Starved() as starved:
        rec.canceled.connect(lambda e: (canceled.append((_refused(e.cancellation_details, e.cancellation_details.code),
                                                         time.monotonic())), done.set()))
        rec.start_transcribing_async().get()
        assert done.wait(10), "no canceled event"
    # not stopped: the app has its answer (a stop after the canceled event returns at once: README, Using the Azure Speech SDK)
    said, at = canceled[0]
    return said, starved.unstarved(starved.entered, at)


def synthesize(ws_base: str, wav: Path) -> tuple[str, float]:
    """A ``SpeechSynthesizer``'s ``speak_text_async``: ``(its error code and details, seconds)`` (``wav`` unused)."""
    synthesizer = speechsdk.SpeechSynthesizer(speechsdk.SpeechConfig(host=ws_base), audio_config=None)
    with Starved() as starved:
        result = synthesizer.speak_text_async("안녕하세요").get()
    assert result.reason == speechsdk.ResultReason.Canceled, result
    return _refused(result.cancellation_details, result.cancellation_details.error_code), starved.seconds


#: ``(client, the service's name in the refusal)`` of each service not served.
UNSERVED_CLIENTS = [(translate_once, "speech translation (TranslationRecognizer)"),
                    (transcribe, "conversation transcription (ConversationTranscriber)"),
                    (synthesize, "speech synthesis (SpeechSynthesizer)")]
