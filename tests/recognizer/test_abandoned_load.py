"""Audio a streaming client sent while its locale's model loaded on demand (read ahead by the server,
:meth:`Inbox.model`) and left behind by leaving before the load ended is counted as abandoned
(``speech_audio_abandoned_seconds_total``), as a session's undecoded audio is, at the rate its audio is in, once,
under its route and the served locale. Real clients against a real server on loopback.
"""

from __future__ import annotations

import io
import json
import time
import uuid
import wave
from pathlib import Path

import pytest
from websockets.sync.client import connect

from harness.usp import client_audio_frame, client_text_frame
from speech_recognizer.app import create_app
from speech_recognizer.models import ModelRegistry

from ..conftest import CHUNK, make_settings
from ..support import ServerThread, scrape_metrics, within
from .on_demand import ON_DEMAND, GatedRegistry

REST = "/speech/recognition/conversation/cognitiveservices/v1"



def wav(pcm: bytes, rate: int) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return out.getvalue()


def gated_app(registry: ModelRegistry, tmp_path: Path, *settings: str) -> tuple[object, GatedRegistry]:
    models = tmp_path / "models"
    models.mkdir()
    (models / ON_DEMAND).symlink_to(registry.sources["ko-KR"])
    gated = GatedRegistry(models)
    return create_app(make_settings(tmp_path, *settings), gated), gated


def abandoned(samples: dict, route: str) -> float | None:
    return samples.get(("speech_audio_abandoned_seconds_total", (("locale", ON_DEMAND), ("route", route))))


def gone_counted(samples: dict, route: str) -> float:
    return samples.get(("speech_requests_total", (("route", route), ("status", "499"))), 0.0)


@pytest.mark.parametrize("rate", [None, 8000], ids=["model-rate", "config-8kHz"])
def test_audio_left_behind_during_a_model_load_is_counted_as_abandoned(
        registry: ModelRegistry, tmp_path: Path, rate: int | None) -> None:
    """A /vosk client sends 1.5 s of PCM while its model loads (the server reads it ahead, :meth:`Inbox.model`) and
    leaves: those 1.5 s are counted abandoned under the route and the served locale (before: not at all, the stream
    having no session yet). ``rate``: its config's ``sample_rate``, sent first (before: the 8 kHz audio counted at the
    model's 16 kHz, 0.75 s; no config: the model's rate)."""
    app, gated = gated_app(registry, tmp_path)
    pcm = b"\x01\x00" * int(1.5 * (rate or 16000))  # 1.5 s
    try:
        with ServerThread(app) as srv:
            within(60, lambda: gated.ready, "ko-KR's load")  # a hang guard, in unstarved time
            admission = app.state.engine.admission
            with connect(f"{srv.ws}/vosk?language={ON_DEMAND}", max_size=1 << 20) as leaving:
                if rate is not None:
                    leaving.send(json.dumps({"config": {"sample_rate": rate}}))
                for i in range(0, len(pcm), CHUNK):
                    leaving.send(pcm[i : i + CHUNK])
                within(30, lambda: admission.connections == 1, "the connection admitted")
                time.sleep(0.5)  # read ahead by the server while the model loads (the gate shut)
            within(10, lambda: gone_counted(scrape_metrics(srv.http), "vosk"), "the client's leaving counted")
            samples = scrape_metrics(srv.http)
            assert gated.get_loaded(ON_DEMAND) is None, "still loading"
            assert abandoned(samples, "vosk") == 1.5, {k: v for k, v in samples.items() if "abandoned" in k[0] or "requests" in k[0]}
    finally:
        gated.gate.set()


@pytest.mark.parametrize("audio_first", [False, True], ids=["speech.context", "audio-first"])
def test_a_speech_sdk_turns_audio_left_behind_during_a_model_load_is_counted_as_abandoned(
        registry: ModelRegistry, tmp_path: Path, audio_first: bool) -> None:
    """A Speech SDK client begins a turn (its ``speech.context``, or its first audio without one: the model loads at
    either), sends a RIFF header of 8 kHz and 1.5 s of audio while the model loads, and leaves: 1.5 s (its header's
    rate, not the model's 16 kHz; the header no audio) counted abandoned under ``usp/conversation`` and the served
    locale, once (before: not at all, the turn having no session yet)."""
    app, gated = gated_app(registry, tmp_path)
    route = "usp/conversation"
    pcm = b"\x01\x00" * 12000  # 1.5 s at 8 kHz
    try:
        with ServerThread(app) as srv:
            within(60, lambda: gated.ready, "ko-KR's load")  # a hang guard, in unstarved time
            admission = app.state.engine.admission
            with connect(f"{srv.ws}{REST}?language={ON_DEMAND}", max_size=1 << 20) as leaving:
                rid = uuid.uuid4().hex
                if not audio_first:
                    leaving.send(client_text_frame("speech.context", rid, {"phraseDetection": {"language": ON_DEMAND}}))
                leaving.send(client_audio_frame(rid, wav(b"", 8000)))
                for i in range(0, len(pcm), CHUNK):
                    leaving.send(client_audio_frame(rid, pcm[i : i + CHUNK]))
                within(30, lambda: admission.connections == 1, "the connection admitted")
                time.sleep(0.5)  # read ahead by the server while the model loads (the gate shut)
            within(10, lambda: gone_counted(scrape_metrics(srv.http), route), "the client's leaving counted")
            time.sleep(0.2)
            samples = scrape_metrics(srv.http)
            assert gated.get_loaded(ON_DEMAND) is None, "still loading"
            assert gone_counted(samples, route) == 1, "counted once"
            assert abandoned(samples, route) == 1.5, {k: v for k, v in samples.items() if "abandoned" in k[0] or "requests" in k[0]}
    finally:
        gated.gate.set()
