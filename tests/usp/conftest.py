"""USP fixtures: in-process Vosk references for the shared audio (same model, the SDK's 3,200-byte chunks)."""

from __future__ import annotations

from pathlib import Path

import pytest

import subprocess

from speech_recognizer.models import LoadedModel

import json

from ..support import RefPhrase, RefWord, read_wav, require_tool

#: The SDK sends 100 ms chunks: 3,200 bytes at 16 kHz mono.
SDK_CHUNK = 3200


def reference(model: LoadedModel, wav: Path) -> list[RefPhrase]:
    """Every non-empty phrase of an in-process ``KaldiRecognizer`` fed the SDK's chunks."""
    import vosk

    pcm, rate, channels = read_wav(wav)
    assert (rate, channels) == (16000, 1)
    rec = vosk.KaldiRecognizer(model.model, float(rate))
    rec.SetWords(True)
    rec.SetPartialWords(True)
    raw = [rec.Result() for i in range(0, len(pcm), SDK_CHUNK) if rec.AcceptWaveform(pcm[i : i + SDK_CHUNK])]
    raw.append(rec.FinalResult())
    phrases = []
    for item in map(json.loads, raw):
        if item.get("text", "").strip():
            words = tuple(RefWord(w["word"], w["start"], w["end"]) for w in item["result"])
            phrases.append(RefPhrase(item["text"].strip(), words))
    return phrases


def with_noise_floor(wav: Path, out: Path) -> Path:
    """``wav`` mixed with faint white noise (about -50 dBFS).

    Kaldi dithers every frame from the process-wide ``rand()``, so stretches of
    digital silence decode differently from one stream to the next; a noise
    floor far above the dither makes decoding reproducible, which comparing
    the server with in-process Vosk needs.
    """
    sox = require_tool("sox")
    seconds = subprocess.run(["soxi", "-D", str(wav)], check=True, capture_output=True, text=True).stdout.strip()
    noise = out.with_name(out.stem + ".noise.wav")
    subprocess.run([sox, "-n", "-r", "16000", "-c", "1", "-b", "16", str(noise), "synth", seconds, "whitenoise", "vol", "0.003"], check=True)
    subprocess.run([sox, "-m", "-v", "1", str(wav), "-v", "1", str(noise), "-b", "16", str(out)], check=True)
    return out


@pytest.fixture(scope="session")
def speech_audio(speech_wav: Path) -> Path:
    """One utterance (the shared fixture) over a noise floor."""
    return with_noise_floor(speech_wav, speech_wav.with_name("usp-speech.wav"))


@pytest.fixture(scope="session")
def utterances_audio(utterances_wav: Path) -> Path:
    """Three utterances with silence between them (the shared fixture) over a noise floor."""
    return with_noise_floor(utterances_wav, utterances_wav.with_name("usp-utterances.wav"))


@pytest.fixture(scope="session")
def speech_ref(model: LoadedModel, speech_audio: Path) -> list[RefPhrase]:
    ref = reference(model, speech_audio)
    assert len(ref) == 1, ref
    return ref


@pytest.fixture(scope="session")
def utterances_ref(model: LoadedModel, utterances_audio: Path) -> list[RefPhrase]:
    ref = reference(model, utterances_audio)
    assert len(ref) == 3, ref
    return ref
