"""Request heads and bodies: capped in size, read within deadlines, and a decoder held before a body is read.

A real server process, with the head and body deadlines at 2 s so that the
tests are short (the defaults are 10 s). Each attack runs while a normal
stream is paced at 1x real time over /vosk, which must stay strictly real time.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from websockets.sync.client import connect

from harness.server import Server, cpu_seconds
from harness.speech import Audio, make_audio
from harness.hostile_inputs import big_header_head, post_head, raw_request, send_until_answered, trickle, wav_header
from speech_recognizer.http_limits import HttpLimits, LimitedHttpTools
from speech_recognizer.serving import server_options
from speech_recognizer.settings import SettingsError, parse

from ..hostile import RSS_ALLOWANCE_MB, PeakRss, assert_strict, paced_stream, real_server_for

REST = "/speech/recognition/conversation/cognitiveservices/v1?language=ko-KR"
DEADLINE_S = 2


@pytest.fixture(scope="module")
def stream_audio(tmp_path_factory: pytest.TempPathFactory) -> Audio:
    return make_audio(tmp_path_factory.mktemp("paced"))


@pytest.fixture(scope="module")
def real_server(stream_audio: Audio) -> Iterator[Server]:
    with real_server_for(stream_audio, f"Http:HeaderTimeoutSeconds={DEADLINE_S}", f"Http:BodyTimeoutSeconds={DEADLINE_S}") as srv:
        yield srv


def status(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer[9:12])


def ready_latencies(srv: Server, count: int) -> list[float]:
    """Seconds each of ``count`` GET /ready took, one after another."""
    out = []
    with httpx.Client(timeout=30) as client:
        for _ in range(count):
            started = time.monotonic()
            assert client.get(f"{srv.http}/ready").status_code == 200
            out.append(time.monotonic() - started)
            time.sleep(0.05)
    return out


# ---- heads ------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [64 << 10, 64 << 20])
def test_a_head_over_the_cap_gets_431_at_once(real_server: Server, stream_audio: Audio, size: int) -> None:
    """64 KiB, and 64 MiB (which stalled every request 6-11 s): refused once the head passes 16 KiB."""
    head = big_header_head("/ready", size)
    with paced_stream(real_server, stream_audio) as stream:
        time.sleep(1.0)
        with PeakRss(real_server.pid) as rss:
            got: list[tuple[bytes, float]] = []
            sender = threading.Thread(target=lambda: got.append(send_until_answered("127.0.0.1", real_server.port, head)))
            sender.start()
            latencies = ready_latencies(real_server, 10)
            sender.join(60)
    answer, took = got[0]
    assert status(answer) == 431 and b"Http:MaxHeaderBytes" in answer, answer[:300]
    assert took < 2, took
    assert max(latencies) < 1.0, latencies  # the 64 MiB head stalled every request 6-11 s
    assert rss.growth_mb < RSS_ALLOWANCE_MB, rss.growth_mb
    assert_strict(stream, stream_audio.seconds)


def test_a_websocket_upgrade_with_a_huge_head_gets_431(real_server: Server) -> None:
    head = (b"GET /vosk?language=ko-KR HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nX-Pad: " + b"a" * (1 << 20) + b"\r\n\r\n")
    answer, _ = send_until_answered("127.0.0.1", real_server.port, head)
    assert status(answer) == 431, answer[:300]


def test_a_head_trickled_a_byte_a_second_is_cut_off(real_server: Server, stream_audio: Audio) -> None:
    with paced_stream(real_server, stream_audio) as stream:
        time.sleep(1.0)
        with ThreadPoolExecutor(10) as pool:
            runs = list(pool.map(lambda _: trickle("127.0.0.1", real_server.port, big_header_head("/ready", 100), interval=1.0, timeout=30), range(10)))
    for answer, took, sent in runs:
        assert status(answer) == 408 and b"Http:HeaderTimeoutSeconds" in answer, answer
        assert DEADLINE_S - 0.5 < took < DEADLINE_S + 2, took
        assert sent <= DEADLINE_S + 2
    assert_strict(stream, stream_audio.seconds)


def test_a_connection_that_sends_nothing_is_closed(real_server: Server) -> None:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", real_server.port), timeout=30) as sock:
        answer = sock.recv(65536)
    assert status(answer) == 408 and DEADLINE_S - 0.5 < time.monotonic() - started < DEADLINE_S + 2


def test_a_keepalive_connection_serves_request_after_request(real_server: Server, speech_wav: Path) -> None:
    """The limits are per request: one connection, requests one after another, each on time."""
    with httpx.Client(base_url=real_server.http, timeout=30) as client:
        for _ in range(3):
            assert client.get("/ready").status_code == 200
            r = client.post(REST, content=speech_wav.read_bytes(), headers={"Content-Type": "audio/wav"})
            assert r.status_code == 200 and r.json()["RecognitionStatus"] == "Success", r.text
            time.sleep(DEADLINE_S / 2)


# ---- bodies -----------------------------------------------------------------------------------


def test_a_body_trickled_slower_than_real_time_is_cut_off() -> None:
    """A byte every second never pauses long enough, but the whole body must arrive within
    MaxAudioSeconds plus the longest pause (3 + 2 s here): cut off there, not never."""
    with real_server_for(None, "MaxAudioSeconds=3", f"Http:BodyTimeoutSeconds={DEADLINE_S}") as srv:
        answer, took, sent = _trickle_body(srv.port, post_head(REST, content_length=1000), interval=1.0, timeout=30)
    assert status(answer) == 408 and b"MaxAudioSeconds plus Http:BodyTimeoutSeconds" in answer, answer
    assert 3 + DEADLINE_S - 0.5 < took < 3 + DEADLINE_S + 2, took


def _trickle_body(port: int, head: bytes, *, interval: float, timeout: float) -> tuple[bytes, float, int]:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head)
        sock.settimeout(interval)
        sent = 0
        while time.monotonic() - started < timeout:
            try:
                got = sock.recv(65536)
                return got, time.monotonic() - started, sent
            except socket.timeout:
                sock.sendall(b"\0")
                sent += 1
        return b"", time.monotonic() - started, sent


def test_withheld_bodies_hold_no_memory_and_no_decoder_for_long(real_server: Server, stream_audio: Audio) -> None:
    """40 uploads of 60 s of audio, each withholding its last byte (they added 880 MB and were never
    closed): the decoders free (5 beside the stream) take a body each and give it up after the pause;
    the others are refused (503) before their bodies are read."""
    audio = wav_header(data_bytes=60 * 32000) + b"\1\0" * (60 * 16000)
    head = post_head(REST, content_length=len(audio))

    def withhold(_: int) -> tuple[bytes, float]:
        return send_until_answered("127.0.0.1", real_server.port, head + audio[:-1], timeout=30)

    with paced_stream(real_server, stream_audio) as stream:
        time.sleep(1.0)
        with PeakRss(real_server.pid) as rss, ThreadPoolExecutor(40) as pool:
            runs = list(pool.map(withhold, range(40)))
    statuses = sorted(status(answer) for answer, _ in runs)
    assert set(statuses) == {408, 503} and statuses.count(408) <= 5, statuses
    for answer, took in runs:
        if status(answer) == 503:
            assert b"busy" in answer
        else:
            assert b"Http:BodyTimeoutSeconds" in answer and took < DEADLINE_S + 3, (answer, took)
    assert rss.growth_mb < RSS_ALLOWANCE_MB + 5 * len(audio) / 1e6, rss.growth_mb
    assert_strict(stream, stream_audio.seconds)
    r = httpx.post(f"{real_server.http}{REST}", content=audio, headers={"Content-Type": "audio/wav"}, timeout=60)
    assert r.status_code == 200, "every decoder is free again"


def test_a_content_length_over_the_limit_gets_413_unread(real_server: Server) -> None:
    """Over 60 s of the widest audio (23 MB), or over 60 s of what the WAV header says (1.9 MB of
    16 kHz mono 16-bit): 413 before the body is read."""
    for length, first in ((3_000_000, wav_header(data_bytes=3_000_000)), (30_000_000, b"")):
        answer, took = raw_request("127.0.0.1", real_server.port, post_head(REST, content_length=length), first, timeout=10)
        assert status(answer) == 413 and b"MaxAudioSeconds" in answer, answer
        assert took < 1, took  # the rest of the body was never sent


def test_a_busy_server_refuses_a_body_before_reading_it() -> None:
    """14 uploads of 22 MB to a server whose one decoder is taken (each cost 5-7 s of CPU before its
    503): each is answered 503 before its body is sent, and the server spends almost no CPU."""
    body = wav_header(rate=48000, channels=2, bits=32, tag=3, data_bytes=22_000_000) + b"\0" * 22_000_000
    head = post_head(REST, content_length=len(body))
    with real_server_for(None, "DecoderMaxCount=1") as srv, connect(f"{srv.ws}/vosk?language=ko-KR") as holder:
        holder.send(b"\0" * 3200)
        holder.recv()
        before = cpu_seconds(srv.pid)
        with ThreadPoolExecutor(14) as pool:
            got = list(pool.map(lambda _: raw_request("127.0.0.1", srv.port, head, body[:44], timeout=30), range(14)))
        spent = cpu_seconds(srv.pid) - before
    for answer, took in got:
        assert status(answer) == 503 and b"busy" in answer, answer
        assert took < 2, took  # answered with only the WAV header sent
    assert spent < 2, spent


# ---- refused before the body is in: a lingering close ------------------------------------------


def plain_post(port: int, path: str, body: bytes, headers: dict[str, str]) -> int | str:
    """POST as a plain client does (Python's http.client: write the whole request, then read the
    answer): its status, or the error that ended it (a reset while writing ends it unanswered)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    except OSError as exc:
        return type(exc).__name__
    finally:
        conn.close()


def test_a_plain_client_writing_its_whole_body_reads_the_refusal() -> None:
    """20 MB uploads refused before they are read, by a client that writes all it has before reading:
    431 for a 1 MiB head, 413 for 16 kHz WAV (625 s: over MaxAudioSeconds by its header), 503 for
    52 s of 48 kHz stereo float with the one decoder busy. The client reads the answer, 20 times out
    of 20; the connection closed at once was reset under it (431: ConnectionResetError 20 of 20)."""
    wav = {"Content-Type": "audio/wav"}
    too_long = wav_header(data_bytes=20_000_000) + b"\0" * 20_000_000
    wide = wav_header(rate=48000, channels=2, bits=32, tag=3, data_bytes=20_000_000) + b"\0" * 20_000_000
    with real_server_for(None, "DecoderMaxCount=1") as srv:
        big_head = [plain_post(srv.port, REST, too_long, {**wav, "X-Pad": "a" * (1 << 20)}) for _ in range(20)]
        over = [plain_post(srv.port, REST, too_long, wav) for _ in range(20)]
        with connect(f"{srv.ws}/vosk?language=ko-KR") as holder:
            holder.send(b"\0" * 3200)
            holder.recv()
            busy = [plain_post(srv.port, REST, wide, wav) for _ in range(20)]
    assert big_head == [431] * 20, big_head
    assert over == [413] * 20, over
    assert busy == [503] * 20, busy


def send_until_closed(port: int, head: bytes, *, piece: bytes, interval: float, timeout: float = 30) -> tuple[bytes, float, float]:
    """Send ``head``, then ``piece`` after ``piece`` every ``interval`` seconds (0: as fast as it is taken)
    whatever the server answers, until the server closes the connection (a send fails) or ``timeout``:
    (the answer, seconds until its first byte, seconds until the close)."""
    started = time.monotonic()
    answer = bytearray()
    answered = closed = float("nan")
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head)
        sock.setblocking(False)
        while time.monotonic() - started < timeout:
            try:
                got = sock.recv(65536)
                if got and not answer:
                    answered = time.monotonic() - started
                answer += got
            except BlockingIOError:
                pass
            except OSError:
                closed = time.monotonic() - started
                break
            try:
                sock.send(piece)
            except BlockingIOError:
                time.sleep(0.001)
            except OSError:
                closed = time.monotonic() - started
                break
            if interval:
                time.sleep(interval)
    return bytes(answer), answered, closed


@pytest.mark.parametrize("attack", ["body-fast", "body-trickle", "head-fast"])
def test_a_refused_client_that_keeps_sending_is_cut_off_at_the_bound(real_server: Server, attack: str) -> None:
    """After its answer, a refused connection is read and dropped for 2 s at most (HttpLimits.linger_seconds),
    however its client keeps sending: as fast as it can, a byte every 0.2 s (under the 1 s pause that
    ends a lingering close early), or a head that never ends."""
    if attack.startswith("body"):
        head = post_head(REST, content_length=10**10)  # 413 by its Content-Length
        expected = 413
    else:
        head = b"GET /ready HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: "  # 431 once past 16 KiB
        expected = 431
    piece, interval = (b"\0", 0.2) if attack == "body-trickle" else (b"a" * 65536, 0.0)
    answer, answered, closed = send_until_closed(real_server.port, head, piece=piece, interval=interval)
    assert status(answer) == expected, answer[:300]
    limit = LimitedHttpTools.limits.linger_seconds
    assert limit - 0.2 < closed - answered < limit + 1, (answered, closed)


# ---- settings ---------------------------------------------------------------------------------


def test_the_limits_are_settings_with_bounds() -> None:
    settings = parse(["Eula=accept", "Http:MaxHeaderBytes=2048", "Http:HeaderTimeoutSeconds=3", "Http:BodyTimeoutSeconds=4", "MaxAudioSeconds=30"], environ={})
    http = server_options(settings)["http"]
    assert issubclass(http, LimitedHttpTools)
    assert http.limits == HttpLimits(max_header_bytes=2048, header_seconds=3, body_pause_seconds=4, body_seconds=34)
    assert server_options(parse(["Eula=accept"], environ={}))["http"].limits == HttpLimits(16384, 10, 10, 70)
    for bad in ("Http:MaxHeaderBytes=100", "Http:HeaderTimeoutSeconds=0", "Http:BodyTimeoutSeconds=1e9", "Http:BodyTimeoutSeconds=soon"):
        with pytest.raises(SettingsError, match=bad.split("=")[0]):
            parse(["Eula=accept", bad], environ={})


# ---- keep-alive -------------------------------------------------------------------------------


def test_an_idle_kept_alive_connection_outlives_the_clients_pools(real_server: Server) -> None:
    """A connection idle between two requests is kept longer than pooling clients keep theirs (ingress
    controllers and load balancers: 60 s), so that they close it, not the server under their next request.
    With uvicorn's default (5 s), 3 of 200 REST requests through the gateway (which then pooled its
    connections for 15 s) sent about that long after the previous one got 502 (measured with the timeout
    scaled to 1 s); here the second request, 6 s later, is answered."""
    from speech_recognizer.serving import KEEPALIVE_SECONDS

    assert KEEPALIVE_SECONDS > 60
    connection = http.client.HTTPConnection("127.0.0.1", real_server.port, timeout=10)
    try:
        connection.request("GET", "/ready")
        assert connection.getresponse().read() and connection.sock is not None
        first = connection.sock
        time.sleep(6)
        connection.request("GET", "/ready")
        response = connection.getresponse()
        assert response.status == 200 and connection.sock is first, "answered on the same connection"
        response.read()
    finally:
        connection.close()
