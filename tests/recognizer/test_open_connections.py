"""A client connected before its first audio keeps the server from looking idle (``GET /sessions``).

A stream takes its decoder at its first audio (after vosk's optional config; a Speech SDK turn at
its first audio frame), so ``sessions`` did not count a client that had connected and not spoken
yet, and ``idleSeconds`` ran on: the operator's autoscaling could take the pod for idle and scale it
away (to zero) under a client about to speak. ``connections`` counts the recognition WebSockets
open, and the idle clock stands still while any is. Each test runs a real server on loopback, with
a key, so that a refused key can be tried too; a client leaving without a close frame, or refused
(bad key, every decoder busy), must not leave the count raised.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import azure.cognitiveservices.speech as speechsdk
import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from harness.usp import client_audio_frame, client_text_frame
from speech_operator import autoscaler, builders
from speech_recognizer import contract as c
from speech_recognizer import errors
from speech_recognizer.app import create_app
from speech_recognizer.models import ModelRegistry

from ..conftest import TEST_KEY, make_settings
from ..support import ServerThread, read_wav
from ..usp.sdk import config

USP = "/speech/recognition/conversation/cognitiveservices/v1"
#: The routes that accept a WebSocket before they take a decoder: vosk's two and the Speech SDK's.
PATHS = {"vosk": "/vosk", "vosk at /": "/", "speech sdk": USP}
KEY = {c.KEY_HEADER: TEST_KEY}
#: Seconds within which a connection that ended must be off the count.
BOUND = 2.0


@pytest.fixture(scope="module")
def srv(registry: ModelRegistry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """A keyed server with one decoder (a second stream is refused as busy)."""
    app = create_app(make_settings(tmp_path_factory.mktemp("connections"), f"ApiKey={TEST_KEY}", "DecoderMaxCount=1"), registry)
    with ServerThread(app, host=c.EVERY_ADDRESS) as server:  # IPv6 and IPv4, as a pod's recognizer listens
        yield server


def sessions(srv: ServerThread) -> dict:
    r = httpx.get(f"{srv.http}{c.ROUTE_SESSIONS}", timeout=10)
    assert r.status_code == 200
    return r.json()


def until(srv: ServerThread, connections: int, within: float = BOUND) -> dict:
    """``/sessions`` once it reports ``connections``; fails after ``within`` seconds."""
    deadline = time.monotonic() + within
    while (now := sessions(srv))["connections"] != connections:
        assert time.monotonic() < deadline, f"/sessions still reports {now} after {within} s, not {connections} connections"
        time.sleep(0.02)
    return now


def open_ws(srv: ServerThread, path: str, **headers: str) -> ClientConnection:
    return connect(f"{srv.ws}{path}?language=ko-KR", additional_headers={**KEY, **headers},
                   subprotocols=["USP"] if path == USP else None, max_size=1 << 20, open_timeout=10)  # type: ignore[list-item]


def say_hello(ws: ClientConnection, path: str) -> None:
    """What a client sends before its audio: vosk's config, the Speech SDK's ``speech.config``."""
    if path == USP:
        ws.send(client_text_frame("speech.config", None, {"context": {"system": {"name": "test"}}}))
    else:
        ws.send('{"config": {"sample_rate": 16000}}')


def start_audio(ws: ClientConnection, path: str, pcm: bytes) -> None:
    """A stream's first audio (it takes a decoder): answered on vosk, a ``turn.start`` on the Speech SDK route."""
    if path == USP:
        rid = uuid.uuid4().hex
        ws.send(client_text_frame("speech.context", rid, {"phraseDetection": {"language": "ko-KR"}}))
        header = b"RIFF" + struct.pack("<I", 36) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16) + b"data" + struct.pack("<I", 0)
        ws.send(client_audio_frame(rid, header))
        ws.send(client_audio_frame(rid, pcm))
    else:
        ws.send(pcm)
    ws.recv(timeout=30)


def vanish(ws: ClientConnection, how: str) -> None:
    """The client goes without a close frame: its TCP connection closed (FIN) or reset (SO_LINGER 0)."""
    if how == "reset":
        ws.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    ws.socket.close()


@pytest.mark.parametrize("route", PATHS)
def test_a_client_connected_before_its_first_audio_keeps_the_server_from_idle(srv: ServerThread, route: str) -> None:
    path = PATHS[route]
    until(srv, 0)
    time.sleep(0.3)
    assert sessions(srv)["idleSeconds"] >= 0.2, "idle with nothing open"
    with open_ws(srv, path) as ws:
        say_hello(ws, path)
        first = until(srv, 1)
        assert (first["sessions"], first["idleSeconds"]) == (0, 0), first
        time.sleep(0.5)
        later = sessions(srv)
        assert (later["connections"], later["sessions"], later["idleSeconds"]) == (1, 0, 0), "not idle while it is connected"
    closed_at = time.monotonic()
    after = until(srv, 0)
    assert after["idleSeconds"] <= time.monotonic() - closed_at + 0.1, "the idle clock starts again at the close"
    time.sleep(0.3)
    assert sessions(srv)["idleSeconds"] >= after["idleSeconds"] + 0.2, "and runs"


def test_a_speech_sdk_app_that_opened_its_connection_keeps_the_server_from_idle(srv: ServerThread, speech_wav: Path) -> None:
    """The real Speech SDK: ``Connection.open`` (what an app does to connect ahead of its first
    recognition) connects and sends no audio; the server is not idle until the app closes it."""
    recognizer = speechsdk.SpeechRecognizer(config(srv.ws, key=TEST_KEY),
                                            audio_config=speechsdk.audio.AudioConfig(filename=str(speech_wav)))
    connection = speechsdk.Connection.from_recognizer(recognizer)
    until(srv, 0)
    connection.open(True)
    try:
        first = until(srv, 1, within=10)
        assert (first["sessions"], first["idleSeconds"]) == (0, 0), first
        time.sleep(0.5)
        assert (sessions(srv)["connections"], sessions(srv)["idleSeconds"]) == (1, 0)
    finally:
        connection.close()
    assert until(srv, 0, within=10)["sessions"] == 0


@pytest.mark.parametrize("pod_ip", ["127.0.0.1", "::1"])
def test_the_operator_reads_a_connected_client_as_a_busy_pod(srv: ServerThread, pod_ip: str) -> None:
    """What the operator's autoscaler makes of a real recognizer's answer (the field names on both
    sides): a pod whose client has not spoken yet is busy, not idle; idle again once it has gone. A pod's IP of
    either family (IPv6 on an IPv6-only cluster: in brackets in the URL, where it read as no pod at all)."""
    pod = {"metadata": {"name": "recognizer-0"}, "status": {"podIP": pod_ip},
           "spec": {"containers": [{"name": builders.CONTAINER, "ports": [{"name": builders.PORT_NAME, "containerPort": srv.port}]}]}}

    async def load() -> autoscaler.scaling.PodLoad | None:
        async with aiohttp.ClientSession() as http:
            return await autoscaler.load_of(http, pod)

    until(srv, 0)
    with open_ws(srv, "/vosk") as ws:
        say_hello(ws, "/vosk")
        until(srv, 1)
        time.sleep(0.2)
        connected = asyncio.run(load())
        assert connected is not None and (connected.sessions, connected.connections, connected.idle_seconds) == (0, 1, 0)
        assert connected.busy
    until(srv, 0)
    time.sleep(0.2)
    gone = asyncio.run(load())
    assert gone is not None and (gone.connections, gone.busy) == (0, False) and gone.idle_seconds > 0


@pytest.mark.parametrize("how", ["close", "reset"])
@pytest.mark.parametrize("route", ["vosk", "speech sdk"])
def test_a_client_that_vanishes_is_off_the_count(srv: ServerThread, route: str, how: str) -> None:
    """Before its first audio, and with a stream running: no close frame, the count still goes down."""
    path = PATHS[route]
    until(srv, 0)
    with open_ws(srv, path) as ws:
        say_hello(ws, path)
        until(srv, 1)
        vanish(ws, how)
        assert until(srv, 0)["sessions"] == 0

    with open_ws(srv, path) as ws:
        start_audio(ws, path, b"\0" * 3200)
        assert (sessions(srv)["connections"], sessions(srv)["sessions"]) == (1, 1)
        vanish(ws, how)
        after = until(srv, 0)
    deadline = time.monotonic() + BOUND
    while after["sessions"]:
        assert time.monotonic() < deadline, after
        after = sessions(srv)
    assert after["idleSeconds"] < BOUND + 1


@pytest.mark.parametrize("route", ["vosk", "speech sdk"])
def test_a_refused_key_is_not_counted_after_the_refusal(srv: ServerThread, route: str) -> None:
    path = PATHS[route]
    until(srv, 0)
    if path == USP:  # refused at the upgrade, as HTTP
        with pytest.raises(InvalidStatus) as refused:
            open_ws(srv, path, **{c.KEY_HEADER: "wrong"})
        assert refused.value.response.status_code in (401, 403)
    else:  # accepted, then closed with 1008 and the reason
        with open_ws(srv, path, **{c.KEY_HEADER: "wrong"}) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert until(srv, 0)["sessions"] == 0


@pytest.mark.parametrize("route", ["vosk", "speech sdk"])
def test_a_stream_refused_as_busy_is_off_the_count(srv: ServerThread, speech_wav: Path, route: str) -> None:
    """One decoder: a second stream's first audio is refused (1013; on the Speech SDK route 4429, errors.CORE_CLOSES);
    only the first client stays counted."""
    path = PATHS[route]
    pcm = read_wav(speech_wav)[0][:3200]
    until(srv, 0)
    with open_ws(srv, path) as holder:
        start_audio(holder, path, pcm)
        with open_ws(srv, path) as late:
            assert until(srv, 2)["sessions"] == 1
            with pytest.raises(ConnectionClosed) as closed:
                start_audio(late, path, pcm)
                while True:  # the Speech SDK route names the kind, then closes
                    late.recv(timeout=10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == (errors.TOO_MANY_REQUESTS_CLOSE if path == USP else 1013)
            now = until(srv, 1)
            assert (now["sessions"], now["idleSeconds"]) == (1, 0)
    assert until(srv, 0)["connections"] == 0
