"""The audio the suite speaks, what in-process Vosk says of it, and the unmodified Speech SDK.

The SDK runs on the machine running the suite and reaches a Service or a pod through
``kubectl port-forward``: the images carry no SDK, and a port-forward is what a user tries first.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.support import SENTENCES, Reference, concat, read_wav, speak, vosk_reference

from .manifests import LOCALE

#: 100 ms of 16 kHz mono 16-bit PCM: what the SDK sends per chunk, and the pace of a live stream.
CHUNK = 3200
CHUNK_SECONDS = 0.1
#: Offsets are 100-ns ticks; decoding is deterministic, so only clock rounding may differ (1 ms).
CLOCK_TOLERANCE = 10_000

Span = tuple[str, int, int]  # (DisplayText, Offset, Duration)


@dataclass(frozen=True)
class Audio:
    """Three Korean utterances separated by silence, and what in-process Vosk says of them."""

    wav: Path
    expected: tuple[Span, ...]

    @property
    def seconds(self) -> float:
        pcm, rate, _ = read_wav(self.wav)
        return len(pcm) / 2 / rate


def prepare(folder: Path, model: object | None = None) -> Audio:
    """espeak-ng speaks, sox joins, in-process Vosk transcribes (``model``, or the ko-KR model
    installed here: the one baked into the recognizer image)."""
    from speech_recognizer.models import ModelRegistry
    from tests.usp.sdk import expected

    parts = [speak(s, folder / f"u{i}.wav") for i, s in enumerate(SENTENCES[:3])]
    wav = concat(parts, folder / "utterances.wav")
    if model is None:
        registry = ModelRegistry(folder / "models", ("ko-KR",))
        registry.check()
        model = registry.load("ko-KR").model
    pcm, rate, _ = read_wav(wav)
    reference: Reference = vosk_reference(model, pcm, rate, CHUNK, runs=1)
    return Audio(wav, tuple(expected(p) for p in reference.phrases))


def mismatch(got: list[Span], want: tuple[Span, ...]) -> str | None:
    """Why the SDK's results are not in-process Vosk's (texts in order; times within 1 ms), or None."""
    if [g[0] for g in got] != [w[0] for w in want]:
        return f"the Speech SDK got {[g[0] for g in got]}, in-process Vosk says {[w[0] for w in want]}"
    for (text, offset, duration), (_, w_offset, w_duration) in zip(got, want, strict=True):
        if abs(offset - w_offset) > CLOCK_TOLERANCE or abs(offset + duration - w_offset - w_duration) > CLOCK_TOLERANCE:
            return (f"{text!r} spans {offset}+{duration} ticks, in-process Vosk says {w_offset}+{w_duration} "
                    f"(same words, other times: not the same decoding)")
    return None


@dataclass
class Outcome:
    """What one continuous recognition reported."""

    recognized: list[Span]
    errors: list[str]
    stopped: bool


def recognize(port: int, audio: Audio, *, key: str | None = None, paced: bool = False, pace: float = 1.0,
              on_audio: Callable[[float], None] | None = None, timeout: float = 120, language: str = LOCALE) -> Outcome:
    """Continuous recognition of ``language`` through ``ws://127.0.0.1:PORT`` with ``SpeechConfig(host=...)``.

    ``paced``: the audio goes out in real time from a push stream, as from a microphone, and
    ``on_audio(seconds_sent)`` is called after each chunk (the drain check deletes the pod from it;
    ``pace`` > 1 speeds the stream up, for the suite's own tests);
    otherwise the SDK reads the file (and sends it ahead of real time, as it does).
    """
    import azure.cognitiveservices.speech as speechsdk

    config = (speechsdk.SpeechConfig(host=f"ws://127.0.0.1:{port}", subscription=key) if key
              else speechsdk.SpeechConfig(host=f"ws://127.0.0.1:{port}"))
    config.speech_recognition_language = language
    pusher: threading.Thread | None = None
    if paced:
        stream = speechsdk.audio.PushAudioInputStream(speechsdk.audio.AudioStreamFormat(16000, 16, 1))
        audio_config = speechsdk.audio.AudioConfig(stream=stream)
        pcm, _, _ = read_wav(audio.wav)

        def push() -> None:
            start = time.monotonic()
            for i in range(0, len(pcm), CHUNK):
                stream.write(pcm[i:i + CHUNK])
                sent = (i + CHUNK) / 2 / 16000
                if on_audio:
                    on_audio(sent)
                time.sleep(max(0.0, start + sent / pace - time.monotonic()))
            stream.close()

        pusher = threading.Thread(target=push, name="e2e-audio", daemon=True)
    else:
        audio_config = speechsdk.audio.AudioConfig(filename=str(audio.wav))
    recognizer = speechsdk.SpeechRecognizer(config, audio_config=audio_config)
    outcome = Outcome([], [], False)
    stopped = threading.Event()

    def on_recognized(e: speechsdk.SpeechRecognitionEventArgs) -> None:
        if e.result.reason == speechsdk.ResultReason.RecognizedSpeech:
            outcome.recognized.append((e.result.text, e.result.offset, e.result.duration))

    def on_canceled(e: speechsdk.SpeechRecognitionCanceledEventArgs) -> None:
        d = e.cancellation_details  # the event has no ``reason`` of its own: it is in the details
        if d.reason == speechsdk.CancellationReason.Error:
            outcome.errors.append(f"{d.code.name}: {d.error_details}")

    recognizer.recognized.connect(on_recognized)
    recognizer.canceled.connect(on_canceled)
    recognizer.session_stopped.connect(lambda e: stopped.set())
    recognizer.start_continuous_recognition()
    if pusher:
        pusher.start()
    outcome.stopped = stopped.wait(timeout)
    recognizer.stop_continuous_recognition()
    if pusher:
        pusher.join(timeout=audio.seconds + 5)
    return outcome
