"""Start-up warm-up: recognizers decode speech-like audio before /ready says 200, and change no result."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from websockets.sync.client import connect

from speech_recognizer import contract as c
from speech_recognizer.app import create_app
from speech_recognizer.models import ModelRegistry
from speech_recognizer.settings import SettingsError, container_resources, parse
from speech_recognizer.warmup import synthetic_speech, warmup_audio

from ..conftest import CHUNK, make_settings
from ..support import Reference, ServerThread, read_wav, speak


def test_warmup_settings() -> None:
    default = parse([], environ={})
    assert default.warmup_count is None and default.warmup_recognizers == default.decoder_max_count == 3 * container_resources().cores
    assert parse(["DecoderMaxCount=64"], environ={}).warmup_recognizers == 3 * container_resources().cores, "no more than 3 per CPU by default"
    assert parse(["DecoderMaxCount=1"], environ={}).warmup_recognizers == 1
    assert default.warmup_seconds == 6.0 and default.warmup_audio is None
    s = parse(["Warmup:Count=0", "Warmup:Seconds=2.5", "Warmup:Audio=/warm/clip.wav"], environ={})
    assert (s.warmup_recognizers, s.warmup_seconds, s.warmup_audio) == (0, 2.5, Path("/warm/clip.wav"))
    assert parse([], environ={"Warmup__Count": "3"}).warmup_recognizers == 3
    for bad, reason in (("Warmup:Count=-1", "0 or more"), ("Warmup:Count=some", "not a number"), ("Warmup:Seconds=0", "greater than 0")):
        with pytest.raises(SettingsError, match=reason):
            parse([bad], environ={})


def test_synthetic_speech_is_repeatable_speech_like_pcm() -> None:
    pcm = synthetic_speech(2.0, 16000)
    assert pcm == synthetic_speech(2.0, 16000), "the same warm-up every start"
    assert len(pcm) == 2 * 32000
    samples = np.frombuffer(pcm, dtype="<i2").astype(float)
    frames = samples[: len(samples) // 160 * 160].reshape(-1, 160)
    energy = np.sqrt((frames**2).mean(axis=1))
    assert energy.max() > 2000, "loud voiced segments"
    assert (energy < 50).any(), "pauses"
    assert len(synthetic_speech(1.0, 8000)) == 2 * 8000


def test_warmup_audio_from_a_file_is_mono_at_the_model_rate(tmp_path: Path) -> None:
    stereo = speak("반갑습니다", tmp_path / "stereo.wav", rate=44100, channels=2)
    pcm = warmup_audio(stereo, 60.0, 16000)
    src, rate, channels = read_wav(stereo)
    assert (rate, channels) == (44100, 2)
    assert abs(len(pcm) / 2 / 16000 - len(src) / 4 / 44100) < 0.01
    assert len(warmup_audio(stereo, 0.5, 16000)) == 2 * 8000, "cut to Warmup:Seconds"
    with pytest.raises(ValueError, match="cannot read"):
        warmup_audio(tmp_path / "missing.wav", 6, 16000)
    (tmp_path / "text.wav").write_text("not audio")
    with pytest.raises(ValueError, match="Warmup:Audio="):
        warmup_audio(tmp_path / "text.wav", 6, 16000)


def test_a_bad_warmup_file_stops_the_server_with_one_line(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "speech_recognizer", "Eula=accept", f"Warmup:Audio={tmp_path / 'nope.wav'}",
                        f"Mounts:Output={tmp_path / 'out'}"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0 and "Warmup:Audio=" in r.stderr and "cannot read" in r.stderr, r.stderr


def _stream_words(url: str, pcm: bytes) -> list[tuple[str, float, float, float]]:
    """``(word, start, end, conf)`` of each word /vosk gives for ``pcm`` (16 kHz) in 100 ms messages."""
    finals = []
    with connect(url) as ws:
        ws.send(json.dumps({"config": {"sample_rate": 16000, "words": 1}}))
        for i in range(0, len(pcm), CHUNK):
            ws.send(pcm[i : i + CHUNK])
            reply = json.loads(ws.recv())
            if "text" in reply:
                finals.append(reply)
        ws.send('{"eof" : 1}')
        finals.append(json.loads(ws.recv()))
    return [(w["word"], w["start"], w["end"], w["conf"]) for f in finals for w in f.get("result", [])]


def test_ready_waits_for_the_warmup_and_warm_recognizers_match_vosk(
    registry: ModelRegistry, tmp_path: Path, utterances_ref: Reference, utterances_wav: Path
) -> None:
    settings = make_settings(tmp_path, "Warmup:Count=2", "Warmup:Seconds=2", "DecoderMaxCount=4")
    app = create_app(settings, registry)
    with ServerThread(app) as srv:
        first = httpx.get(f"{srv.http}/ready")
        assert first.status_code == 503, "the model is loaded but not warm yet"
        assert first.json()["warmup"]["done"] is False
        readiness = httpx.get(f"{srv.http}/ContainerReadiness")
        assert (readiness.status_code, readiness.text) == (503, "Warming up")
        deadline = time.monotonic() + 120
        while (r := httpx.get(f"{srv.http}/ready")).status_code != 200:
            assert time.monotonic() < deadline, f"never warmed: {r.text}"
            time.sleep(0.2)
        assert r.json()["warmup"] == {"done": True, "wanted": {"ko-KR": 2}, "warmed": {"ko-KR": 2}}
        pool = app.state.engine.pool
        assert len(pool) == 2, "two distinct recognizers wait warm"
        hits = pool.hits
        pcm, _, _ = read_wav(utterances_wav)
        words = _stream_words(f"{srv.ws}/vosk?language=ko-KR", pcm)
        assert pool.hits == hits + 1, "the stream got a warmed recognizer"
        utterances_ref.assert_words_match(words)


def test_warmup_count_is_capped_by_the_pool_and_a_failure_still_serves(registry: ModelRegistry, tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path, "Warmup:Count=5", "Warmup:Seconds=0.5", "DecoderMaxCount=1"), registry)

    def broken(*args: object) -> bool:
        raise RuntimeError("decoder exploded")

    app.state.engine.warm = broken
    with ServerThread(app) as srv:
        deadline = time.monotonic() + 60
        while (r := httpx.get(f"{srv.http}/ready")).status_code != 200:
            assert time.monotonic() < deadline, r.text
            time.sleep(0.1)
        warm = r.json()["warmup"]
        assert warm["wanted"] == {"ko-KR": 1}, "no more than the pool keeps"
        assert warm["done"] is True and "decoder exploded" in warm["error"]
        assert httpx.get(f"{srv.http}{c.ROUTE_READY}").json()["ready"] is True


def test_without_reuse_every_stream_decodes_on_a_new_recognizer_exactly_as_in_process_vosk(
    registry: ModelRegistry, tmp_path: Path, utterances_ref: Reference, utterances_wav: Path, speech_wav: Path
) -> None:
    """``ReuseRecognizers=False``: nothing is warmed or kept, so a stream's answer does not depend on what the server
    decoded before (a pooled recognizer's can differ a little: docs/engine.md), and equals a new in-process recognizer's
    to the last digit, confidences included, after other audio as at first."""
    settings = make_settings(tmp_path, "ReuseRecognizers=False")
    assert settings.warmup_recognizers == 0, "nothing could keep a warmed recognizer"
    app = create_app(settings, registry)
    want = [(w.word, w.start, w.end, w.confidence) for p in utterances_ref.phrases for w in p.words]
    pcm, _, _ = read_wav(utterances_wav)
    other, _, _ = read_wav(speech_wav)
    with ServerThread(app) as srv:
        url = f"{srv.ws}/vosk?language=ko-KR"
        assert httpx.get(f"{srv.http}/ready").json()["warmup"]["wanted"] == {}, "nothing is warmed"
        answers = [_stream_words(url, pcm)]
        _stream_words(url, other)
        answers += [_stream_words(url, pcm), _stream_words(url, pcm)]
        pool = app.state.engine.pool
        assert (len(pool), pool.hits) == (0, 0), "no recognizer was kept or reused"
    assert answers == [want] * 3
