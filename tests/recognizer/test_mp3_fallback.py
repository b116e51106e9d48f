"""Where the system has no libmpg123 (a source install on a machine without Debian's libmpg123-0; the image has it),
MP3 is still decoded: by the ``soundfile`` wheel's libsndfile, whose own mpg123 gives the same samples, with one
WARNING line saying that damaged frames will then write to stderr. Before, such a machine answered every MP3 with a 415
("MP3 is not decoded here"), where it had decoded them through libsndfile until the system's libmpg123 was used."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

import speech_recognizer
from harness.hostile_inputs import random_frame_bodies
from speech_recognizer import audio

pytestmark = pytest.mark.unit  # no model, server, operator or browser: the quick run (README, Tests)


def mp3(path: Path, seconds: float, rate: int, channels: int) -> bytes:
    """A tone (and noise) of ``seconds`` as an MP3 by libsndfile (LAME, variable bit rate, a Xing header)."""
    t = np.arange(int(seconds * rate)) / rate
    mono = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * np.random.default_rng(7).standard_normal(t.size)
    soundfile.write(path, np.repeat(mono[:, None], channels, axis=1), rate, format="MP3")
    return path.read_bytes()


def test_without_the_systems_libmpg123_an_mp3_decodes_to_the_same_samples_and_says_so_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clean = [mp3(tmp_path / "a.mp3", 6.0, 16000, 1), mp3(tmp_path / "b.mp3", 4.0, 44100, 2)]
    files = [*clean, random_frame_bodies(clean[0], np.random.default_rng(3))]
    with_library = [audio.decode(data, max_seconds=60) for data in files]
    monkeypatch.setitem(sys.modules, "speech_recognizer.mpg123", None)  # `from . import mpg123` raises ImportError
    monkeypatch.delattr(speech_recognizer, "mpg123")  # (which takes the package's attribute first)
    audio._mp3_fallback.cache_clear()
    with caplog.at_level(logging.WARNING, logger="speech_recognizer.audio"):
        without = [audio.decode(data, max_seconds=60) for data in files]
    assert [a.pcm for a in without] == [a.pcm for a in with_library]
    assert [(a.sample_rate, round(a.seconds, 2)) for a in without] == [(16000, 6.0), (44100, 4.0), (16000, 6.0)]
    [line] = [r.getMessage() for r in caplog.records if r.name == "speech_recognizer.audio"]
    assert line.endswith("MP3 is decoded by the soundfile wheel's libsndfile instead, the same samples, but its mpg123 "
                         "writes a line to stderr for each damaged frame of an upload"), line
    with pytest.raises(audio.AudioError, match="MP3") as refused:
        audio.decode(files[0][: len(files[0]) // 2] + b"\0" * 4000, max_seconds=60)
    assert refused.value.kind is not audio.UNSUPPORTED_MEDIA
