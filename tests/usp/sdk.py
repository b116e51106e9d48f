"""Driving the real Azure Speech SDK against a test server."""

from __future__ import annotations

import difflib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import azure.cognitiveservices.speech as speechsdk

from ..support import RefPhrase

TICKS = 10_000_000


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


def continuous(rec: speechsdk.SpeechRecognizer, timeout: float = 60.0, started: threading.Event | None = None) -> Events:
    """Run continuous recognition until the session stops (end of audio)."""
    ev = Events()
    rec.recognizing.connect(lambda e: ev.recognizing.append((time.monotonic(), e.result.text)))

    def on_recognized(e: speechsdk.SpeechRecognitionEventArgs) -> None:
        if e.result.reason == speechsdk.ResultReason.RecognizedSpeech:
            ev.recognized.append(e.result)
            ev.recognized_at.append(time.monotonic())

    rec.recognized.connect(on_recognized)
    rec.canceled.connect(lambda e: ev.canceled.append(e.cancellation_details) if e.reason == speechsdk.CancellationReason.Error else None)
    rec.session_stopped.connect(lambda e: ev.stopped.set())
    rec.start_continuous_recognition()
    if started is not None:
        started.set()
    assert ev.stopped.wait(timeout), "the recognition session did not stop"
    rec.stop_continuous_recognition()
    return ev


def ticks(seconds: float) -> int:
    return int(round(seconds * TICKS))


#: How far the server may drift from in-process Vosk. Vosk is not bit-reproducible from one
#: stream to the next even in one process with one model and the same chunks (marginal words
#: and word edges vary), so words are compared by similarity and times within two frames.
MIN_WORD_SIMILARITY = 0.6
TIME_TOLERANCE = ticks(0.07)


def similarity(a: str, b: str) -> float:
    """Word-level similarity in [0, 1]."""
    return difflib.SequenceMatcher(None, a.split(), b.split()).ratio()


def assert_close(text: str, offset: int, duration: int, ref: RefPhrase) -> None:
    """A result matches a reference phrase: similar words, same span within the tolerance."""
    start, length = expected_span(ref)
    assert similarity(text, ref.text) >= MIN_WORD_SIMILARITY, (text, ref.text)
    assert abs(offset - start) <= TIME_TOLERANCE, (offset, start)
    assert abs(offset + duration - start - length) <= TIME_TOLERANCE, (offset + duration, start + length)


def expected_span(phrase: RefPhrase) -> tuple[int, int]:
    """(Offset, Duration) in ticks of a reference phrase: first word start to last word end."""
    start = ticks(phrase.words[0].start)
    return start, ticks(phrase.words[-1].end) - start
