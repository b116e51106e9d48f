"""Issue 16 items 5, 6 and 7 as its acceptance asks of every item: fed the hostile input, the server gives its
clear answer while a normal stream, paced at 1x beside it, stays strictly real time.

Item 5: 32- and 64-bit float WAV heard as the words of the 16-bit original; item 6: a million usage records
summed by three concurrent GETs; item 7: thousands of Speech SDK turns with 8 KB request ids on one
connection. Each on a real server process (``python -m speech_recognizer``), its peak RSS read from /proc.
(tests/recognizer/test_encodings.py, test_usage.py and tests/usp/test_frames.py check every encoding, the
totals and the bounded id set themselves.)
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from harness.clients import USP_PATH
from harness.server import Server
from harness.speech import Audio, make_audio, require_tool
from harness.usp import client_audio_frame, client_text_frame
from speech_recognizer.usp.frames import parse_text

from ..hostile import RSS_ALLOWANCE_MB, PeakRss, assert_strict, paced_stream, real_server_for
from .test_usage import meters, write_records

RECORDS = 1_000_000
TURNS = 3000
ID_BYTES = 8000


@pytest.fixture(scope="module")
def stream_audio(tmp_path_factory: pytest.TempPathFactory) -> Audio:
    return make_audio(tmp_path_factory.mktemp("paced"))


@pytest.fixture(scope="module")
def real_server(stream_audio: Audio) -> Iterator[Server]:
    """The server of items 5 and 7 (item 6 has its own, over a folder of a million records): neither changes
    what the other sees (turns end with no audio and leave no state; REST requests are answered and done)."""
    with real_server_for(stream_audio) as srv:
        yield srv


def test_a_million_usage_records_beside_a_stream(stream_audio: Audio, tmp_path: Path) -> None:
    output = tmp_path / "output"
    write_records(output / "usage", RECORDS)
    with real_server_for(stream_audio, f"Mounts:Output={output}") as srv, httpx.Client(timeout=120) as client:
        with paced_stream(srv, stream_audio) as stream:
            with PeakRss(srv.pid) as rss, ThreadPoolExecutor(3) as pool:
                summaries = list(pool.map(lambda _: client.get(f"{srv.http}/records/usage-logs/").json(), range(3)))
        assert all(meters(s)["speech-to-text.requests"] >= RECORDS for s in summaries), summaries
        assert rss.growth_mb < 50, f"the server grew {rss.growth_mb:.0f} MB summing {RECORDS} records"
        assert_strict(stream, stream_audio.seconds)


def test_thousands_of_turns_with_long_ids_on_one_connection_beside_a_stream(real_server: Server, stream_audio: Audio) -> None:
    async def turns(ws_base: str) -> int:
        ended = 0
        async with connect(ws_base + USP_PATH, subprotocols=["USP"], max_size=1 << 20) as ws:  # type: ignore[list-item]
            for n in range(TURNS):
                rid = f"{n:08d}" + "x" * ID_BYTES
                await ws.send(client_text_frame("speech.context", rid, {"phraseDetection": {"language": "ko-KR"}}))
                await ws.send(client_audio_frame(rid, b""))
                while parse_text(await ws.recv()).path != "turn.end":
                    pass
                ended += 1
        return ended

    with paced_stream(real_server, stream_audio) as stream:
        with PeakRss(real_server.pid) as rss:
            started = time.monotonic()
            ended = asyncio.run(turns(real_server.ws))
            took = time.monotonic() - started
    assert ended == TURNS, ended
    sent_mb = TURNS * ID_BYTES * 2 / 1e6
    assert rss.growth_mb < RSS_ALLOWANCE_MB, f"+{rss.growth_mb:.0f} MB over {TURNS} turns ({sent_mb:.0f} MB of ids sent, {took:.1f} s)"
    assert_strict(stream, stream_audio.seconds)


@pytest.mark.parametrize("bits", [32, 64])
def test_float_wav_beside_a_stream(real_server: Server, stream_audio: Audio, speech_wav: Path, tmp_path: Path, bits: int) -> None:
    """Item 5: 32- and 64-bit IEEE float WAV (sox) give the 16-bit original's words, not InitialSilenceTimeout."""
    floats = tmp_path / f"float{bits}.wav"
    subprocess.run([require_tool("sox"), "-R", str(speech_wav), "-e", "floating-point", "-b", str(bits), str(floats)], check=True)
    rest = "/speech/recognition/conversation/cognitiveservices/v1?language=ko-KR"
    wav = {"Content-Type": "audio/wav"}
    original = httpx.post(f"{real_server.http}{rest}", content=speech_wav.read_bytes(), headers=wav, timeout=60).json()
    with paced_stream(real_server, stream_audio) as stream:
        r = httpx.post(f"{real_server.http}{rest}", content=floats.read_bytes(), headers=wav, timeout=60)
    assert r.status_code == 200, r.text
    assert (r.json()["RecognitionStatus"], r.json()["DisplayText"]) == ("Success", original["DisplayText"])
    assert_strict(stream, stream_audio.seconds)
