"""Compressed-audio bombs: refused by their header, or as soon as decoding passes MaxAudioSeconds.

A real server process (default settings but the warm-up, so its RSS is its own);
each bomb goes to the REST route while a normal stream is paced at 1x real
time beside it. The answer must be a 413 naming the limit, within seconds, the
server's peak RSS must rise less than 100 MB above the body, and the stream must
stay strictly real time.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness.hostile_inputs import flac_bomb, mp3_bomb, ogg_opus_bomb, webm_opus_bomb
from harness.server import Server
from harness.speech import Audio, make_audio

from ..hostile import RSS_ALLOWANCE_MB, PeakRss, assert_strict, paced_stream, real_server_for

REST = "/speech/recognition/conversation/cognitiveservices/v1?language=ko-KR"


@pytest.fixture(scope="module")
def stream_audio(tmp_path_factory: pytest.TempPathFactory) -> Audio:
    return make_audio(tmp_path_factory.mktemp("paced"))


@pytest.fixture(scope="module")
def real_server(stream_audio: Audio) -> Iterator[Server]:
    with real_server_for(stream_audio) as srv:
        yield srv


BOMBS = {
    # 35 KB; STREAMINFO says 65.5 M frames x 8 channels (4,096 s): refused from the header.
    "flac": (lambda: flac_bomb(), "is 4095.9 s long"),
    # The same frames with the total "unknown" (0, which FLAC allows): refused once 60 s are decoded.
    "flac of unknown length": (lambda: flac_bomb(total_samples=0), "is longer than 60 s"),
    # 93 KB of Ogg/Opus that decodes to an hour of 48 kHz stereo (690 MB as 16-bit PCM).
    "ogg/opus": (lambda: ogg_opus_bomb(3600, channels=2), "is 3600.1 s long"),
    # 3.6 MB of silent MP3 frames (8 kbit/s, 8 kHz), an hour; its Xing header counts them: refused from the header.
    "mp3": (lambda: mp3_bomb(3600), "is 3600.0 s long"),
    # The same frames without a Xing header: an MP3 has no other length but a guess, so refused once 60 s are decoded.
    "mp3 without a length": (lambda: mp3_bomb(3600, xing=False), "is longer than 60 s"),
    # 263 KB of WebM/Opus, an hour: FFmpeg's child decodes it, and stops (refused) once 60 s are decoded.
    "webm/opus": (lambda: webm_opus_bomb(3600), "is longer than 60 s"),
}


@pytest.mark.parametrize("name", list(BOMBS))
def test_bomb_is_refused_with_bounded_memory_and_time(real_server: Server, stream_audio: Audio, name: str) -> None:
    make, says = BOMBS[name]
    body = make()
    with paced_stream(real_server, stream_audio) as stream:
        with PeakRss(real_server.pid) as rss:
            started = time.monotonic()
            r = httpx.post(f"{real_server.http}{REST}", content=body, headers={"Content-Type": "audio/flac"}, timeout=60)
            took = time.monotonic() - started
    assert r.status_code == 413, r.text
    message = r.json()["error"]["message"]
    assert says in message and "MaxAudioSeconds" in message, message
    assert took < 5, took
    assert rss.growth_mb < RSS_ALLOWANCE_MB + len(body) / 1e6, rss.growth_mb
    assert_strict(stream, stream_audio.seconds)


def test_wav_claiming_4_gb_is_read_for_what_it_holds(real_server: Server, speech_wav: Path) -> None:
    """A streamed WAV whose header claims nearly 4 GB: its data is what the body holds."""
    wav = bytearray(speech_wav.read_bytes())
    wav[40:44] = (0xFFFFFFF0).to_bytes(4, "little")
    r = httpx.post(f"{real_server.http}{REST}", content=bytes(wav), headers={"Content-Type": "audio/wav"}, timeout=60)
    assert r.status_code == 200 and r.json()["RecognitionStatus"] == "Success", r.text
