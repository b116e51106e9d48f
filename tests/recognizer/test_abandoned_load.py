"""Audio a client sent while its locale's model loaded on demand, and left behind by leaving before the load ended, is
counted as abandoned (``speech_audio_abandoned_seconds_total``), as a session's undecoded audio is."""

from __future__ import annotations

import time
from pathlib import Path

from websockets.sync.client import connect

from speech_recognizer.app import create_app
from speech_recognizer.models import ModelRegistry

from ..conftest import CHUNK, make_settings
from ..support import ServerThread, scrape_metrics, within
from .on_demand import ON_DEMAND, GatedRegistry


def test_audio_left_behind_during_a_model_load_is_counted_as_abandoned(registry: ModelRegistry, tmp_path: Path) -> None:
    """A /vosk client sends 1.5 s of 16 kHz PCM while its model loads (the server reads it ahead, :meth:`Inbox.model`)
    and leaves: those 1.5 s are counted abandoned under the route and the served locale (before: not at all, the
    stream having no session yet)."""
    models = tmp_path / "models"
    models.mkdir()
    (models / ON_DEMAND).symlink_to(registry.sources["ko-KR"])
    gated = GatedRegistry(models)
    app = create_app(make_settings(tmp_path), gated)
    pcm = b"\x01\x00" * 24000  # 1.5 s at the model's 16 kHz
    try:
        with ServerThread(app) as srv:
            within(60, lambda: gated.ready, "ko-KR's load")  # a hang guard, in unstarved time
            admission = app.state.engine.admission
            with connect(f"{srv.ws}/vosk?language={ON_DEMAND}", max_size=1 << 20) as leaving:
                for i in range(0, len(pcm), CHUNK):
                    leaving.send(pcm[i : i + CHUNK])
                within(30, lambda: admission.connections == 1, "the connection admitted")
                time.sleep(0.5)  # read ahead by the server while the model loads (the gate shut)
            key = ("speech_audio_abandoned_seconds_total", (("locale", ON_DEMAND), ("route", "vosk")))
            within(10, lambda: ("speech_requests_total", (("route", "vosk"), ("status", "499"))) in scrape_metrics(srv.http),
                   "the client's leaving counted")
            samples = scrape_metrics(srv.http)
            assert gated.get_loaded(ON_DEMAND) is None, "still loading"
            assert samples.get(key) == 1.5, {k: v for k, v in samples.items() if "abandoned" in k[0] or "requests" in k[0]}
    finally:
        gated.gate.set()
