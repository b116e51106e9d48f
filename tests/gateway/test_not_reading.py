"""A client of the gateway that never reads: its recognizer resets the stream (``not_reading``), and the gateway takes
that for the client's doing, not for a recognizer lost.

The gateway relays with backpressure: once its client takes in nothing, it stops reading the recognizer's replies,
whose sends then stall, and after ``AudioIdleSeconds`` the recognizer resets the connection (nothing can reach the
client: tests/recognizer/test_not_reading.py). The gateway, still sending the client's audio on, saw its send fail and
counted ``backend_lost`` (WARNING, and the fault alert SpeechGatewayFailing pages on it), and queued a close 1011 for a
client that takes in nothing, its connection held until the kernel gave it up (60 s).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.recognizer.test_not_reading import USP, Server, deaf_websocket, send_all, stalling, usp_frames  # noqa: F401 - stalling: a fixture

from .conftest import Stack, speech_to_text

#: Seconds within which the recognizer must have reset the stream, from the client's first audio: its replies fill the
#: gateway's buffers too before the recognizer's sends stall (18-25 s here).
BOUND = 60.0
#: Seconds within which the gateway's end of the client's connection must be gone once the recognizer has reset the
#: stream. Before: until the kernel gave it up, about 60 s after the client's window shut.
AFTER = 3.0


@pytest.fixture(scope="module")
def gateway(stalling: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:  # noqa: F811 - the fixture imported
    """The gateway, routing ko-KR to :func:`~tests.recognizer.test_not_reading.stalling`'s recognizer."""
    with Stack(tmp_path_factory.mktemp("gateway-not-reading")) as stack:
        stack.create(speech_to_text("ko-kr", "ko-KR", stalling.srv.port))
        stack.routes("ko-KR")
        yield stack


def failures(stack: Stack) -> dict[str, float]:
    """``speech_gateway_failures_total`` by reason."""
    text = httpx.get(f"http://127.0.0.1:{stack.port}/metrics", timeout=10).text
    return {s.labels["reason"]: s.value for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == "speech_gateway_failures_total"}


def gateway_side(stack: Stack, port: int) -> str:
    """The state of the gateway's end of the client's connection from ``port`` ("" once gone)."""
    out = subprocess.run(["ss", "-tnH", "state", "all", f"( sport = :{stack.port} and dport = :{port} )"],
                         capture_output=True, text=True, check=True).stdout
    return out.split()[0] if out.strip() else ""


def test_a_client_of_the_gateway_that_never_reads_is_no_recognizer_lost(
        gateway: Stack, stalling: Server) -> None:  # noqa: F811 - stalling: the fixture imported
    """Speech SDK turns sent back to back through the gateway, never read, the client sending on: the recognizer resets
    the stream (``not_reading``); the gateway counts no ``backend_lost`` and resets its client's connection at once."""
    before, refused = failures(gateway), stalling.refused("usp/conversation")
    sock, protocol = deaf_websocket(gateway.port, USP)
    port = sock.getsockname()[1]
    with sock:
        frames = usp_frames(protocol, 20000)  # still being sent when the recognizer gives up
        started = time.monotonic()
        send_all(sock, frames)
        while stalling.refused("usp/conversation") == refused:
            assert time.monotonic() - started < BOUND, "the recognizer never reset the stream"
            time.sleep(0.1)
        reset_at = time.monotonic()
        while side := gateway_side(gateway, port):
            assert time.monotonic() - reset_at < AFTER, f"the gateway's end of the client's connection still {side}"
            time.sleep(0.05)
    after = failures(gateway)
    assert after.get("backend_lost", 0) == before.get("backend_lost", 0), after
    print(f"stream reset {reset_at - started:.2f} s after the first audio, the client's connection gone "
          f"{time.monotonic() - reset_at:.2f} s after")

