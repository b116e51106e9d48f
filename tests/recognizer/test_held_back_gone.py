"""A client held back (its read-ahead full, its model still loading) that leaves is let go at once, not at the load's end.

While a stream's model loads on demand, its inbox reads the client's messages ahead (in memory, then /vosk's temporary
files, within their budgets); past that the client is held back, its messages left unread in the socket. Its leaving
(a reset, a FIN, a close frame) waits there behind them: the server looked for it only when woken by its own progress,
and a stream waiting for its model makes none. The client's stream stayed until the load ended, then took a decoder and
decoded, for nobody, what it had sent. Real clients (websockets) against a real server on loopback.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from harness.usp import client_audio_frame, client_text_frame
from speech_recognizer.app import create_app
from speech_recognizer.connection_cap import unacknowledged_bytes
from speech_recognizer.inbox import READ_AHEAD_BYTES
from speech_recognizer.models import ModelRegistry

from ..conftest import make_settings
from ..support import ServerThread, Unstarved, scrape_metrics
from .on_demand import ON_DEMAND, GatedRegistry
from .test_gone_clients import REST, wav_bytes

#: 1 s of 16 kHz mono PCM a message.
MESSAGE = bytes(32000)
#: The server-wide budget of /vosk's temporary files left to the test's stream (the rest taken by others, say).
BUDGET = 1 << 20
#: The kernel buffers of the test's connection, the server's receive buffer and the client's send buffer (``SO_RCVBUF``,
#: ``SO_SNDBUF``; the kernel doubles them): held back, a client fills them with a few seconds of audio, not the 6.7 MiB
#: Linux lets them grow to on loopback, which the server then decodes (tens of CPU seconds a test).
SOCKET_BUFFER = 64 << 10
#: The client's close timeout: how long it waits for the server's answer to its close frame before closing its socket.
CLOSE_TIMEOUT = 2.0
#: Seconds, not waiting for a CPU, within which a client that left is let go (its connection given back, counted).
BOUND = 3.0


async def held_back(url: str, route: str, *, room: bool = False, **options: Any) -> tuple[ClientConnection, int]:
    """A client of ``url`` (websockets' ``options`` beside) that sent audio until the server stopped reading it (no send
    taken for 1 s); what it sent. With ``room``, each message is sent once the one before has reached the server's kernel
    (:func:`~speech_recognizer.connection_cap.unacknowledged_bytes` 0), and the client stops when that does not come
    within 1 s: its own buffers keep a message at most, room left in its kernel for what it sends next (a close frame)."""
    ws = await connect(url, max_size=1 << 20, close_timeout=CLOSE_TIMEOUT, **options)
    ws.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
    rid = uuid.uuid4().hex
    if route != "vosk":
        await ws.send(client_text_frame("speech.context", rid, {"phraseDetection": {"language": ON_DEMAND}}))
        await ws.send(client_audio_frame(rid, wav_bytes(b"")))
    sent = [0]

    async def send() -> None:
        while True:
            if room:
                while unacknowledged_bytes(ws.transport):
                    await asyncio.sleep(0.005)
            await ws.send(MESSAGE if route == "vosk" else client_audio_frame(rid, MESSAGE))
            sent[0] += len(MESSAGE)

    sender = asyncio.ensure_future(send())
    last, since = -1, time.monotonic()
    while sent[0] != last or time.monotonic() - since < 1.0 or sent[0] < READ_AHEAD_BYTES:
        if sent[0] != last:
            last, since = sent[0], time.monotonic()
        assert time.monotonic() - since < 60, "the client is never held back"
        await asyncio.sleep(0.02)
    sender.cancel()
    await asyncio.gather(sender, return_exceptions=True)
    return ws, sent[0]


async def leave(ws: ClientConnection, how: str) -> None:
    """Leave: a reset (``SO_LINGER`` 0), or a close frame behind the audio not read (written to the client's kernel,
    which has room for it: :func:`held_back`'s ``room``), then the socket closed once the client's close timeout passes
    without the server's answer (websockets' own way: its FIN queued behind that audio and the close frame)."""
    if how == "reset":
        ws.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        ws.transport.abort()
        return
    started = time.monotonic()
    closing = asyncio.ensure_future(ws.close())
    await asyncio.sleep(0.1)
    assert not ws.transport.get_write_buffer_size() and not closing.done(), "the close frame is in the client's kernel"
    await closing
    assert time.monotonic() - started >= CLOSE_TIMEOUT * 0.9, "the server answered the close: it read it"
    assert isinstance(ws.close_exc.__cause__, TimeoutError), f"closed at its close timeout: {ws.close_exc!r}"


@pytest.mark.parametrize("how", ["reset", "close frame"])
@pytest.mark.parametrize("route", ["vosk", "usp/conversation"])
def test_a_client_held_back_while_its_model_loads_is_let_go_when_it_leaves(
        registry: ModelRegistry, tmp_path: Path, route: str, how: str) -> None:
    """A client of a locale whose model loads sends audio until it is held back (/vosk: its spill past the server's
    budget, the Speech SDK route: its 2 MiB read-ahead), then leaves: a reset, or a close frame and, its close timeout
    past, its socket closed (its FIN queued behind its unread audio). Its connection is given back and counted once as a
    client gone within :data:`BOUND` of its leaving, the load still going (before: at the load's end, its audio then
    decoded on the one decoder for nobody). Its close frame itself is never seen: TCP gives it after the audio before it."""
    models = tmp_path / "models"
    models.mkdir()
    (models / ON_DEMAND).symlink_to(registry.sources["ko-KR"])
    gated = GatedRegistry(models)
    app = create_app(make_settings(tmp_path, "DecoderMaxCount=1"), gated)
    engine = app.state.engine
    engine.spills.limit = lambda: BUDGET  # the rest taken by other streams
    url = f"/vosk?language={ON_DEMAND}" if route == "vosk" else f"{REST}?language={ON_DEMAND}"
    key = (("reason", "client_gone"), ("route", route))

    async def run(base: str) -> tuple[int, float | None, str]:
        ws, sent = await held_back(f"{base}{url}", route, room=how == "close frame")
        assert engine.admission.connections == 1 and not engine.active
        before = scrape_metrics(srv.http).get(("speech_refused_total", key), 0.0)
        await leave(ws, how)
        watch = Unstarved()
        try:
            while engine.admission.connections or scrape_metrics(srv.http).get(("speech_refused_total", key), 0.0) == before:
                if watch.beyond(BOUND * 4):
                    return sent, None, str(watch)
                await asyncio.sleep(0.02)
            watch.read()
            assert scrape_metrics(srv.http)[("speech_refused_total", key)] == before + 1, "counted once, as a client gone"
            return sent, watch.seconds, str(watch)
        finally:
            watch.close()

    with ServerThread(app, receive_buffer=SOCKET_BUFFER) as srv:
        gated.wait_ready()
        try:
            sent, took, watched = asyncio.run(run(srv.ws))
        finally:
            gated.gate.set()
        after = ""
        if took is None:  # what the load's end then did with it, for the failure's message
            decoded = ("speech_audio_seconds_total", (("locale", ON_DEMAND), ("route", route)))
            started, cpu = time.monotonic(), time.process_time()
            while engine.admission.connections and time.monotonic() - started < 120:
                time.sleep(0.05)
            after = (f"; once the load ended, its stream took the decoder and was let go {time.monotonic() - started:.1f} s "
                     f"later ({time.process_time() - cpu:.1f} s of CPU), "
                     f"{scrape_metrics(srv.http).get(decoded, 0.0):.0f} s of its audio decoded for nobody")
    print(f"{route} {how}: {sent / 2**20:.1f} MiB sent, let go {watched} after it left{after}")
    assert took is not None and took < BOUND, (f"a client held back while its model loads ({sent / 2**20:.1f} MiB sent) "
                                              f"left ({how}) and was not let go within {watched}{after}")
