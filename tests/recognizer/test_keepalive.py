"""A client that sends audio faster than it is decoded is held back, not cut off by the keepalive.

The server's real keepalive (:data:`speech_recognizer.serving.SERVER_OPTIONS`) pings every
20 s; here it runs :data:`SCALE` times faster (a 0.5 s ping, and the pong deadline, if the
options set one, scaled the same), so that audio sent ahead takes longer to decode than a
keepalive period. With a pong deadline, the pong waits behind that audio and the server
closed the connection with 1011 "keepalive ping timeout": the Speech SDK then reported no
result; it connected again and ended each recognition canceled with ``TooManyRequests``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from speech_recognizer.app import create_app
from speech_recognizer.frame_budget import CONTROL_BURST, CONTROL_PER_SECOND
from speech_recognizer.inbox import READ_AHEAD_BYTES
from speech_recognizer.models import LoadedModel, ModelRegistry
from speech_recognizer.serving import (
    DEAD_PEER_SECONDS,
    SERVER_OPTIONS,
    listening_socket,
)

from ..conftest import make_settings, reference
from ..support import Reference, ServerThread, concat, read_wav
from ..usp.sdk import config, continuous, display_text, recognizer
from ..ws_frames import pieces
from .on_demand import ON_DEMAND, GatedRegistry
from .test_held_back_gone import BUDGET, MESSAGE, SOCKET_BUFFER, held_back

#: How much faster than the real keepalive the test server pings.
SCALE = 40
#: Times the test audio repeats the three utterances.
REPEATS = 2


def scaled(value: object) -> object:
    return None if value is None else float(value) / SCALE  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def pinging_server(registry: ModelRegistry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    settings = make_settings(tmp_path_factory.mktemp("keepalive"))
    keepalive = {key: scaled(SERVER_OPTIONS[key]) for key in ("ws_ping_interval", "ws_ping_timeout")}
    assert keepalive["ws_ping_interval"] == 0.5
    with ServerThread(create_app(settings, registry), **keepalive) as srv:
        yield srv


@pytest.fixture(scope="module")
def long_wav(utterances_wav: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The three utterances, :data:`REPEATS` times (about 20 s)."""
    return concat([utterances_wav] * REPEATS, tmp_path_factory.mktemp("keepalive-audio") / "long.wav", gap=1.0)


@pytest.fixture(scope="module")
def long_ref(model: LoadedModel, long_wav: Path) -> Reference:
    return reference(model, long_wav)


def test_speech_sdk_clients_sending_files_ahead_get_every_result(pinging_server: ServerThread, long_wav: Path, long_ref: Reference) -> None:
    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda _: continuous(recognizer(config(pinging_server.ws), long_wav), timeout=120), range(2)))
    for events in runs:
        assert [c.error_details for c in events.canceled] == []
        assert [r.text for r in events.recognized] == [display_text(p) for p in long_ref.phrases]


async def sent_at_once(server: ServerThread, wav: Path, chunk: int, **keepalive: Any) -> tuple[list[bytes], list[dict]]:
    """``wav``'s audio in chunks of ``chunk`` bytes, sent to /vosk at once, then eof, the replies read as they come
    (the client's own ``keepalive``: websockets' ``ping_interval``, ``ping_timeout``), until the server's close 1000."""
    pcm, rate, _ = read_wav(wav)
    chunks = [pcm[i : i + chunk] for i in range(0, len(pcm), chunk)]
    async with connect(f"{server.ws}/vosk?language=ko-KR", max_size=1 << 20, **keepalive) as ws:
        await ws.send(json.dumps({"config": {"sample_rate": rate}}))

        async def send_all() -> None:
            for piece in chunks:
                await ws.send(piece)
            await ws.send('{"eof" : 1}')

        sender = asyncio.create_task(send_all())
        replies = [json.loads(message) async for message in ws]
        await sender
        assert (ws.close_code, ws.close_reason) == (1000, "")
    return chunks, replies


async def test_vosk_client_sending_everything_at_once_gets_every_reply(pinging_server: ServerThread, long_wav: Path, long_ref: Reference) -> None:
    chunks, replies = await sent_at_once(pinging_server, long_wav, 3200, ping_interval=None)
    assert len(replies) == len(chunks) + 1  # one per chunk, and the last phrase at the end
    finals = [r["text"] for r in replies if r.get("text")]
    assert finals == long_ref.texts


#: How late (a share of the server's ping interval) the client of
#: :func:`test_a_client_whose_pongs_come_late_is_pinged_once_an_interval` answers each ping.
LATE = 0.8
#: Seconds that client listens to the server's pings.
LISTENED_S = 4.0


async def late_pongs(server: ServerThread, late: float, seconds: float) -> list[float]:
    """When each of the server's pings came, from the upgrade: a raw client of /vosk that sends nothing but a pong to
    each ping, ``late`` seconds after it, for ``seconds`` (websockets answers at once; a client held back behind its
    audio, or on a slow link, answers late)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write((f"GET /vosk?language=ko-KR HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    frames = pieces(reader)
    head = await anext(frames)
    assert head.startswith(b"HTTP/1.1 101"), head
    loop = asyncio.get_running_loop()
    started, pings = loop.time(), []

    def pong(payload: bytes) -> None:  # masked with zeros: the payload as it is
        if not writer.is_closing():
            writer.write(bytes([0x8A, 0x80 | len(payload)]) + bytes(4) + payload)

    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            async for got in frames:
                assert got[0] & 0x0F == 0x9, f"the server sent {got!r}, not a ping"
                pings.append(loop.time() - started)
                loop.call_later(late, pong, got[2:])
    writer.transport.abort()
    return pings


def test_a_client_whose_pongs_come_late_is_pinged_once_an_interval(pinging_server: ServerThread) -> None:
    """uvicorn scheduled its next ping its interval less the last pong's delay after a ping: once a pong came nearly an
    interval late, the server pinged every few milliseconds (here every 0.1 s: 10 a second, for a ping every 0.5 s)
    until a pong came at once, which a client held back behind its audio or on a slow link never sends. Pings come one
    interval apart, however late their pongs."""
    interval = float(SERVER_OPTIONS["ws_ping_interval"]) / SCALE  # type: ignore[arg-type]
    pings = asyncio.run(late_pongs(pinging_server, LATE * interval, LISTENED_S))
    print(f"{len(pings)} pings in {LISTENED_S:g} s ({len(pings) / LISTENED_S:.1f} a second), pongs {LATE * interval:g} s late")
    assert len(pings) >= 2, pings  # a pong came late, and the server pinged on
    gaps = [later - earlier for earlier, later in zip(pings, pings[1:], strict=False)]
    # counted, not timed: a ping read late (this client shares the server's process) is no ping sent early
    assert len(pings) <= LISTENED_S / interval + 1, f"{len(pings)} pings in {LISTENED_S:g} s, {min(gaps):.3f} s apart at least"


#: Times :func:`sent_ahead_wav` repeats the three utterances: past the inbox's read-ahead in memory (2 MiB) and what
#: the kernel buffers hold on loopback, whatever the decoding's speed.
AHEAD_REPEATS = 16


@pytest.fixture(scope="module")
def sent_ahead_wav(utterances_wav: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The three utterances, :data:`AHEAD_REPEATS` times: past 4 MiB of 16 kHz PCM."""
    wav = concat([utterances_wav] * AHEAD_REPEATS, tmp_path_factory.mktemp("sent-ahead") / "ahead.wav", gap=1.0)
    assert len(read_wav(wav)[0]) > READ_AHEAD_BYTES * 2
    return wav


async def test_a_pinging_vosk_client_sending_a_recording_ahead_gets_its_pongs_and_every_reply(
    pinging_server: ServerThread, sent_ahead_wav: Path
) -> None:
    """vosk-server's usual Python client (websockets, its keepalive on: here a ping every 0.5 s, 3 s for its pong,
    where its defaults are 20 and 20) sends a recording at once, then eof, and waits for its results. Its pings came
    behind its audio, unread while the server held back what it had not decoded yet (2 MiB read ahead, the rest in the
    kernel's buffers): it closed the connection itself with 1011 "keepalive ping timeout", its results lost."""
    # 0.2 s chunks, as vosk-server's examples send
    chunks, replies = await sent_at_once(pinging_server, sent_ahead_wav, 6400, ping_interval=0.5, ping_timeout=3)
    assert len(replies) == len(chunks) + 1 and "text" in replies[-1]


def test_a_vosk_client_answering_the_servers_pings_however_fast_gets_every_reply(registry: ModelRegistry, tmp_path: Path,
                                                                                 long_wav: Path, long_ref: Reference) -> None:
    """uvicorn pings a client its ping interval less the last pong's delay after its last ping: a pong that came late
    (behind audio the server held back) has the server ping faster than the control frame budget's rate. A client's
    pongs to the server's own pings are owed it, not taken from its budget: here the server pings every 10 ms, the
    client answering each while its recording is decoded; before, it was closed 1008 "more than 50 control frames"."""
    with ServerThread(create_app(make_settings(tmp_path), registry), ws_ping_interval=0.01) as srv:
        chunks, replies = asyncio.run(sent_at_once(srv, long_wav, 3200, ping_interval=None))
    assert len(replies) == len(chunks) + 1
    assert [r["text"] for r in replies if r.get("text")] == long_ref.texts


#: Pings the client of :func:`test_a_client_pinging_behind_its_held_back_audio_gets_every_pong_and_reply` sends while
#: held back, at the control frame budget's own rate: more than its burst.
HELD_PINGS = CONTROL_BURST + 5


def test_a_client_pinging_behind_its_held_back_audio_gets_every_pong_and_reply(registry: ModelRegistry, tmp_path: Path) -> None:
    """A /vosk client sends audio until the server holds it back (its model still loading, its read-ahead and spill
    full), then pings at :data:`~speech_recognizer.frame_budget.CONTROL_PER_SECOND`, each ping written as it comes (an
    app's own keepalive, not waiting for its pongs), its pings queued behind its unread audio; the load ends, it sends
    eof. Its pings come at once when the server reads on: a budget capped at
    :data:`~speech_recognizer.frame_budget.CONTROL_BURST` however long the server held reading closed it 1008 "more
    than 50 control frames", its results lost. It gets every pong, a reply to each message, its final result, close 1000."""
    models = tmp_path / "models"
    models.mkdir()
    (models / ON_DEMAND).symlink_to(registry.sources["ko-KR"])
    gated = GatedRegistry(models)
    app = create_app(make_settings(tmp_path), gated)
    app.state.engine.spills.limit = lambda: BUDGET  # held back past a little spill, not 64 MiB

    async def run(base: str) -> tuple[int, list[dict], list[float], tuple[int | None, str | None]]:
        ws, sent = await held_back(f"{base}/vosk?language={ON_DEMAND}", "vosk", ping_interval=None)  # its own pings below
        pings = []
        for _ in range(HELD_PINGS):  # written now, behind the audio: the task waits for the server to read it
            pings.append(asyncio.ensure_future(ws.ping()))
            await asyncio.sleep(1 / CONTROL_PER_SECOND)
        gated.gate.set()
        opened = time.monotonic()
        eof = asyncio.ensure_future(ws.send('{"eof" : 1}'))
        replies = [json.loads(message) async for message in ws]
        print(f"{sent / 2**20:.1f} MiB sent, {len(pings)} pings held back; closed {ws.close_code} {ws.close_reason!r} "
              f"{time.monotonic() - opened:.1f} s after the load began")
        await asyncio.gather(eof, return_exceptions=True)
        pongs = await asyncio.gather(*pings, return_exceptions=True)
        answered = [pong.result() for pong in pongs
                    if isinstance(pong, asyncio.Future) and pong.done() and not pong.cancelled() and pong.exception() is None]
        return sent, replies, answered, (ws.close_code, ws.close_reason)

    with ServerThread(app, receive_buffer=SOCKET_BUFFER) as srv:
        gated.wait_ready()
        try:
            sent, replies, answered, closed = asyncio.run(run(srv.ws))
        finally:
            gated.gate.set()
    assert closed == (1000, ""), closed
    assert len(answered) == HELD_PINGS, f"{len(answered)} of {HELD_PINGS} pings answered"
    messages = sent // len(MESSAGE)  # and maybe the one whose send was waiting when the client stopped sending
    assert messages <= len(replies) - 1 <= messages + 1 and "text" in replies[-1], (messages, replies[-3:])


def test_connections_give_up_on_a_dead_peer() -> None:
    """A peer whose kernel no longer acknowledges (the pings, say) is dropped after DEAD_PEER_SECONDS (Linux)."""
    with listening_socket("127.0.0.1", 0) as server, socket.create_connection(server.getsockname()) as client:
        accepted, _ = server.accept()
        with accepted:
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == DEAD_PEER_SECONDS * 1000
        assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 0  # only the server's side


@pytest.mark.parametrize(("host", "says"), [("127.0.0.1", "127.0.0.1"), ("::1", "[::1]")])
def test_a_port_in_use_stops_the_server_with_one_line(tmp_path: Path, host: str, says: str) -> None:
    """An IPv6 address in the line goes in brackets: ``[::1]:5000``, not ``::1:5000``."""
    with listening_socket(host, 0) as taken:
        port = taken.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "speech_recognizer", "Eula=accept", f"Host={host}", f"Port={port}",
                            f"Mounts:Output={tmp_path / 'out'}"], capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0 and f"cannot listen on {says}:{port}: " in r.stderr, r.stderr
