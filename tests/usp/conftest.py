"""USP fixtures: in-process Vosk references for the shared audio (same model, the SDK's 3,200-byte chunks)."""

from __future__ import annotations

from pathlib import Path

import pytest

from speech_recognizer.models import LoadedModel

from ..support import RefPhrase, read_wav, vosk_reference

#: The SDK sends 100 ms chunks: 3,200 bytes at 16 kHz mono.
SDK_CHUNK = 3200


def reference(model: LoadedModel, wav: Path) -> list[RefPhrase]:
    pcm, rate, channels = read_wav(wav)
    assert (rate, channels) == (16000, 1)
    return vosk_reference(model.model, pcm, rate, SDK_CHUNK)


@pytest.fixture(scope="session")
def speech_ref(model: LoadedModel, speech_wav: Path) -> list[RefPhrase]:
    ref = reference(model, speech_wav)
    assert len(ref) == 1, ref
    return ref


@pytest.fixture(scope="session")
def utterances_ref(model: LoadedModel, utterances_wav: Path) -> list[RefPhrase]:
    ref = reference(model, utterances_wav)
    assert len(ref) == 3, ref
    return ref
