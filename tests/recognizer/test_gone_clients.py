"""A client that leaves mid-recognition gives its decoder back at once, not after the audio it left behind.

A client that sends 50 s of audio as fast as it can and then goes away held its decoder until the
server had decoded everything it had received (3-7 s here; more on a busy pod), for nobody: a
client reconnecting at once found the server full (503, 1013, ``TooManyRequests``). Each test
leaves mid-decoding on a server with one decoder, checks that decoder is free within
:data:`BOUND`, and that a new request gets it.
"""

from __future__ import annotations

import io
import socket
import struct
import time
import wave
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from speech_recognizer.app import create_app
from speech_recognizer.models import ModelRegistry

from ..conftest import make_settings
from ..support import ServerThread, read_wav, scrape_metrics

REST = "/speech/recognition/conversation/cognitiveservices/v1"
#: Seconds within which a gone client's decoder must be free (decoding what it left takes several).
BOUND = 1.0


class Gone:
    """A server with one decoder, and its app (to watch its engine)."""

    def __init__(self, srv: ServerThread, app: object) -> None:
        self.srv, self.app = srv, app

    @property
    def active(self) -> int:
        return self.app.state.engine.active  # type: ignore[attr-defined]

    def wait_until_held(self, within: float = 30) -> None:
        started = time.monotonic()
        while not self.active:
            assert time.monotonic() - started < within, "the recognition never took its decoder"
            time.sleep(0.005)

    def seconds_until_free(self, within: float = 60) -> float:
        started = time.monotonic()
        while self.active:
            assert time.monotonic() - started < within, f"the decoder is still held after {within} s"
            time.sleep(0.01)
        return time.monotonic() - started

    def refusals(self, route: str) -> float:
        return scrape_metrics(self.srv.http).get(("speech_refused_total", (("reason", "client_gone"), ("route", route))), 0.0)


@pytest.fixture(scope="module")
def gone(registry: ModelRegistry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gone]:
    app = create_app(make_settings(tmp_path_factory.mktemp("gone"), "DecoderMaxCount=1"), registry)
    with ServerThread(app) as srv:
        yield Gone(srv, app)


@pytest.fixture(scope="module")
def long_pcm(utterances_wav: Path) -> bytes:
    """About 50 s of speech (the three utterances four times), 16 kHz mono: seconds of decoding."""
    return read_wav(utterances_wav)[0] * 4


def wav_bytes(pcm: bytes) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm)
    return out.getvalue()


def leave(sock: socket.socket, how: str) -> None:
    """Close the TCP connection: a FIN (``close``), or a reset (``reset``: SO_LINGER 0), with no WebSocket close frame."""
    if how == "reset":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@pytest.mark.parametrize("how", ["close", "reset"])
def test_a_rest_client_leaving_mid_decoding_frees_its_decoder(gone: Gone, long_pcm: bytes, speech_wav: Path, how: str) -> None:
    body = wav_bytes(long_pcm)
    head = (f"POST {REST}?language=ko-KR HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: audio/wav\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    before = gone.refusals("rest-conversation")
    sock = socket.create_connection(("127.0.0.1", gone.srv.port))
    sock.sendall(head + body)
    gone.wait_until_held()
    time.sleep(0.5)  # decoding its 50 s
    assert gone.active == 1
    leave(sock, how)
    took = gone.seconds_until_free()
    assert took < BOUND, f"the decoder was held {took:.2f} s after the client left"
    again = httpx.post(f"{gone.srv.http}{REST}?language=ko-KR", content=speech_wav.read_bytes(),
                       headers={"Content-Type": "audio/wav"}, timeout=60)
    assert again.status_code == 200 and again.json()["RecognitionStatus"] == "Success", again.text
    assert gone.refusals("rest-conversation") == before + 1, "the request is counted as one whose client left"
