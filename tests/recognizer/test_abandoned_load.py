"""A client that leaves while its locale's model loads on demand costs no decode, and what it sent is counted once.

Audio a streaming client sent meanwhile (read ahead by the server, :meth:`Inbox.model`) and left behind is counted as
abandoned (``speech_audio_abandoned_seconds_total``), as a session's undecoded audio is, at the rate its audio is in,
under its route and the served locale. A REST or OpenAI client's leaving is seen during the load (its 499 counted
then), and nothing of its upload is decoded once the load ends. Real clients against a real server on loopback.
"""

from __future__ import annotations

import gc
import io
import json
import socket
import struct
import time
import uuid
import wave
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from harness.usp import client_audio_frame, client_text_frame
from speech_recognizer.app import create_app
from speech_recognizer.connection_cap import CONTINUE
from speech_recognizer.models import LoadedModel, ModelRegistry

from ..conftest import CHUNK, make_settings, shared_reference
from ..support import ServerThread, read_wav, scrape_metrics, within
from ..usp.sdk import display_text
from .on_demand import ON_DEMAND, GatedRegistry

REST = "/speech/recognition/conversation/cognitiveservices/v1"
OPENAI = "/v1/audio/transcriptions"
#: Seconds of the REST and OpenAI clients' recordings: 640 KB, more than uvicorn reads of a body the app has not asked
#: for (64 KiB, and a read of 256 KiB at most), so that the client's end waits unread behind the rest on the REST route.
BODY_SECONDS = 20
#: Seconds, in time the server did not wait for a CPU (:func:`~tests.support.within`), within which a client gone during
#: the load is counted; what this is measured against counted it only once the load ended (here: never, the gate shut).
LOAD_BOUND = 5.0


def wav(pcm: bytes, rate: int) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return out.getvalue()


@pytest.fixture
def gated_app(registry: ModelRegistry, tmp_path: Path) -> Iterator[Callable[..., tuple[Any, GatedRegistry]]]:
    """Makes the test's app, its registry serving :data:`ON_DEMAND` behind a shut gate (``settings`` beside); at the end
    the gate is opened, and the app and its models freed (reference cycles, 350 MB an app, that Python's collector, run
    by Python allocations alone, left for many tests: a worker of this file grew to 5 GB)."""
    made: list[GatedRegistry] = []

    def make(*settings: str) -> tuple[Any, GatedRegistry]:
        models = tmp_path / "models"
        models.mkdir()
        (models / ON_DEMAND).symlink_to(registry.sources["ko-KR"])
        made.append(GatedRegistry(models))
        return create_app(make_settings(tmp_path, *settings), made[-1]), made[-1]

    yield make
    for gated in made:
        gated.gate.set()
    made.clear()
    gc.collect()


def abandoned(samples: dict, route: str) -> float | None:
    return samples.get(("speech_audio_abandoned_seconds_total", (("locale", ON_DEMAND), ("route", route))))


def gone_counted(samples: dict, route: str) -> float:
    return samples.get(("speech_requests_total", (("route", route), ("status", "499"))), 0.0)


@pytest.mark.parametrize("rate", [None, 8000], ids=["model-rate", "config-8kHz"])
def test_audio_left_behind_during_a_model_load_is_counted_as_abandoned(
        gated_app: Callable[..., tuple[Any, GatedRegistry]], rate: int | None) -> None:
    """A /vosk client sends 1.5 s of PCM while its model loads (the server reads it ahead, :meth:`Inbox.model`) and
    leaves: those 1.5 s are counted abandoned under the route and the served locale (before: not at all, the stream
    having no session yet). ``rate``: its config's ``sample_rate``, sent first (before: the 8 kHz audio counted at the
    model's 16 kHz, 0.75 s; no config: the model's rate)."""
    app, gated = gated_app()
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
        gated_app: Callable[..., tuple[Any, GatedRegistry]], audio_first: bool) -> None:
    """A Speech SDK client begins a turn (its ``speech.context``, or its first audio without one: the model loads at
    either), sends a RIFF header of 8 kHz and 1.5 s of audio while the model loads, and leaves: 1.5 s (its header's
    rate, not the model's 16 kHz; the header no audio) counted abandoned under ``usp/conversation`` and the served
    locale, once (before: not at all, the turn having no session yet)."""
    app, gated = gated_app()
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


def upload(route: str, body: bytes) -> bytes:
    """A whole request of ``body`` (a 16 kHz WAV) on ``route``: the REST route's, or OpenAI's multipart form."""
    if route == "openai":
        boundary = "b0undary"
        form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"language\"\r\n\r\n{ON_DEMAND}\r\n"
                f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
                "Content-Type: audio/wav\r\n\r\n").encode() + body + f"\r\n--{boundary}--\r\n".encode()
        return (f"POST {OPENAI} HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
                f"Content-Length: {len(form)}\r\n\r\n").encode() + form
    return (f"POST {REST}?language={ON_DEMAND} HTTP/1.1\r\nHost: x\r\nContent-Type: audio/wav\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


@pytest.mark.parametrize("how", ["close", "reset"])
@pytest.mark.parametrize("route", ["rest-conversation", "openai"])
def test_an_upload_whose_client_leaves_during_the_model_load_is_never_decoded(
        gated_app: Callable[..., tuple[Any, GatedRegistry]], route: str, how: str) -> None:
    """A REST or OpenAI client uploads a recording (:data:`BODY_SECONDS`: most of it left unread in the socket on the
    REST route, which reads a body only once its model is loaded) of a locale whose model loads, and
    leaves (its socket closed: a FIN; or a reset) while it loads: its leaving is counted (499, ``client_gone``) during
    the load, once, and once the load ends nothing of its upload is decoded: no recognition, no decoder CPU (before:
    seen only once the load ended, then its audio decoded and a recognition begun for nobody)."""
    app, gated = gated_app("DecoderMaxCount=1")
    body = wav(bytes(BODY_SECONDS * 32000), 16000)
    try:
        with ServerThread(app) as srv:
            within(60, lambda: gated.ready, "ko-KR's load")  # a hang guard, in unstarved time
            client = socket.create_connection(("127.0.0.1", srv.port))
            client.sendall(upload(route, body))
            time.sleep(0.5)  # the request read (its head, and OpenAI's form) and waiting for the load
            if how == "reset":
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
            within(LOAD_BOUND, lambda: gone_counted(scrape_metrics(srv.http), route),
                   f"a client that left ({how}) during its model's load counted as gone while it loads")
            assert gated.get_loaded(ON_DEMAND) is None, "still loading"
            gated.gate.set()
            within(120, lambda: gated.get_loaded(ON_DEMAND) is not None, "the load's end")
            time.sleep(1.0)  # what the route would do with the upload once loaded
            samples = scrape_metrics(srv.http)
            decoded = {k: v for k, v in samples.items()
                       if k[0] in ("speech_audio_seconds_total", "speech_decoder_cpu_seconds_count", "speech_recognizers_built_total",
                                   "speech_recognizers_reused_total") and v}
            assert not decoded, f"decoded for nobody: {decoded}"
            assert gone_counted(samples, route) == 1, "counted once"
            assert samples.get(("speech_refused_total", (("reason", "client_gone"), ("route", route)))) == 1
    finally:
        gated.gate.set()


#: ``Http:BodyTimeoutSeconds`` of :func:`test_an_upload_waiting_for_its_model_is_not_cut_off_as_paused`: its load takes
#: several times longer (the gate shut), as a big model's load takes tens of seconds beside the default 10 s.
PAUSE_SECONDS = 1


def test_an_upload_waiting_for_its_model_is_not_cut_off_as_paused(
        gated_app: Callable[..., tuple[Any, GatedRegistry]], model: LoadedModel, speech_wav: Path, run_dir: Path) -> None:
    """An honest REST client uploads a recording (:data:`BODY_SECONDS`, more than the server reads ahead of its app)
    of a locale whose model loads on demand for longer than ``Http:BodyTimeoutSeconds``: the server reads no more of
    the body until the model is loaded (the route reads it only then), and that pause is the server's, not the
    client's: once the load ends the client gets its 200 with the words in-process Vosk hears, counted once (before: a
    408 "the request's body paused", counted under ``http``, and the route's 499 beside it). A client that withholds
    the end of its body beside it is still cut off for its own pause, once the route asks for the body: 408 with
    its reason, not before the load ends."""
    app, gated = gated_app(f"Http:BodyTimeoutSeconds={PAUSE_SECONDS}")
    speech, rate, _ = read_wav(speech_wav)
    pcm = speech + bytes(BODY_SECONDS * 2 * rate - len(speech))
    ref = shared_reference(run_dir, model, pcm, rate, CHUNK)
    body = wav(pcm, rate)
    withheld = upload("rest-conversation", body)[:-1]

    def withhold(port: int) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=300) as sock:
            sock.sendall(withheld)
            answer = bytearray()
            while got := sock.recv(65536):
                answer += got
            return bytes(answer)

    try:
        with ServerThread(app) as srv, ThreadPoolExecutor(2) as pool:
            within(60, lambda: gated.ready, "ko-KR's load")  # a hang guard, in unstarved time
            honest = pool.submit(httpx.post, f"{srv.http}{REST}?language={ON_DEMAND}", content=body,
                                 headers={"Content-Type": "audio/wav"}, timeout=300)
            cut = pool.submit(withhold, srv.port)
            time.sleep(4 * PAUSE_SECONDS)  # the load outlasts the pause: both bodies wait unread behind it
            assert not honest.done() and not cut.done(), (honest.result() if honest.done() else None,
                                                          cut.result() if cut.done() else None)
            assert gated.get_loaded(ON_DEMAND) is None, "still loading"
            gated.gate.set()
            answer = honest.result(timeout=300)
            assert answer.status_code == 200, answer.text
            assert answer.json()["DisplayText"] == display_text(ref.phrases[0]), (answer.json(), ref.texts)
            said = cut.result(timeout=300)
            while said.startswith(CONTINUE):  # the server's probes whether its client is still there, during the load
                said = said[len(CONTINUE):]
            assert said.startswith(b"HTTP/1.1 408 ") and (
                f"the request's body paused for {PAUSE_SECONDS:g} s (Http:BodyTimeoutSeconds)".encode() in said), said
            samples = scrape_metrics(srv.http)
            counted = {k: v for k, v in samples.items() if k[0] in ("speech_requests_total", "speech_refused_total") and v}
            assert samples.get(("speech_requests_total", (("route", "rest-conversation"), ("status", "200")))) == 1, counted
            assert samples.get(("speech_refused_total", (("reason", "upload_timeout"), ("route", "http")))) == 1, counted
    finally:
        gated.gate.set()
