"""Decoding stays off the event loop; the decoder cap refuses cleanly; concurrent requests keep their own results."""

from __future__ import annotations

import json
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from speech_recognizer.app import create_app
from speech_recognizer.models import ModelRegistry

from ..conftest import make_settings
from ..support import ServerThread, read_wav, require_tool

REST = "/speech/recognition/conversation/cognitiveservices/v1"


def post(base: str, wav: bytes) -> httpx.Response:
    return httpx.post(f"{base}{REST}?language=ko-KR", content=wav, headers={"Content-Type": "audio/wav"}, timeout=120)


@pytest.fixture(scope="module")
def single(registry: ModelRegistry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """A server with ``DecoderMaxCount=1``."""
    settings = make_settings(tmp_path_factory.mktemp("single"), "DecoderMaxCount=1")
    assert settings.decoder_max_count == 1
    with ServerThread(create_app(settings, registry)) as srv:
        yield srv


def test_decoding_never_blocks_the_event_loop(server, utterances_wav: Path, audio_dir: Path) -> None:
    long_wav = audio_dir / "long.wav"
    subprocess.run([require_tool("sox"), *[str(utterances_wav)] * 2, str(long_wav)], check=True)  # 25 s: seconds of decoding
    result: list[httpx.Response] = []
    worker = threading.Thread(target=lambda: result.append(post(server.http, long_wav.read_bytes())))
    worker.start()
    time.sleep(0.5)  # the body is sent and decoding has begun
    latencies = []
    with httpx.Client() as client:
        # Only polls that end while the recognition is still running count: a fast machine decodes
        # quickly, a slow one slowly, and neither may turn this into a test of the machine's speed.
        while worker.is_alive() and len(latencies) < 7:
            started = time.perf_counter()
            assert client.get(f"{server.http}/ready").status_code == 200
            elapsed = time.perf_counter() - started
            if worker.is_alive():
                latencies.append(elapsed)
            time.sleep(0.05)
    worker.join()
    assert len(latencies) >= 3, f"the recognition ended after {len(latencies)} /ready polls; use longer audio"
    assert statistics.median(latencies) < 0.2, latencies
    assert result[0].status_code == 200 and result[0].json()["RecognitionStatus"] == "Success"


def test_decoder_cap_refuses_rest_and_websocket_then_recovers(single: ServerThread, speech_wav: Path) -> None:
    pcm, rate, _ = read_wav(speech_wav)
    wav = speech_wav.read_bytes()
    with connect(f"{single.ws}/vosk?language=ko-KR") as holder:
        holder.send(pcm[:3200])
        holder.recv()  # the session holds the only decoder now

        busy = post(single.http, wav)
        assert busy.status_code == 503, busy.text
        assert busy.headers["Retry-After"].isdigit()
        assert "busy" in busy.json()["error"]["message"]

        with connect(f"{single.ws}/vosk?language=ko-KR") as second:
            with pytest.raises(ConnectionClosed) as closed:
                second.send(pcm[:3200])
                second.recv(timeout=30)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1013 and "busy" in closed.value.rcvd.reason

        for i in range(3200, len(pcm), 16000):
            holder.send(pcm[i : i + 16000])
            holder.recv()
        holder.send('{"eof" : 1}')
        assert "text" in json.loads(holder.recv())

    deadline = time.monotonic() + 10
    while (r := post(single.http, wav)).status_code == 503:  # the holder's session ends as its socket closes
        assert time.monotonic() < deadline, r.text
        time.sleep(0.1)
    assert r.status_code == 200 and r.json()["RecognitionStatus"] == "Success"
    with connect(f"{single.ws}/vosk?language=ko-KR") as ws:
        ws.send(pcm)
        ws.recv()
        ws.send('{"eof" : 1}')
        reply = json.loads(ws.recv())
    assert reply.get("text") or r.json()["DisplayText"]


def test_concurrent_requests_get_their_own_results(server, speech_wav: Path, utterances_wav: Path, silence_wav: Path) -> None:
    expected_speech = post(server.http, speech_wav.read_bytes()).json()
    expected_long = post(server.http, utterances_wav.read_bytes()).json()
    bodies = [utterances_wav, speech_wav, silence_wav, speech_wav]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda p: post(server.http, p.read_bytes()), bodies))
    assert all(r.status_code == 200 for r in got), [r.text for r in got]
    # Same words; times within 1 ms (the engine's warm recognizers shift times by float rounding, ~1 us).
    for r, want in ((got[0], expected_long), (got[1], expected_speech), (got[3], expected_speech)):
        body = r.json()
        assert (body["RecognitionStatus"], body["DisplayText"]) == (want["RecognitionStatus"], want["DisplayText"])
        assert abs(body["Offset"] - want["Offset"]) <= 10_000 and abs(body["Duration"] - want["Duration"]) <= 10_000
    assert got[2].json()["RecognitionStatus"] == "InitialSilenceTimeout"
    assert expected_speech["DisplayText"] != expected_long["DisplayText"]
