"""What a recognizer writes to the pod's /tmp stays within the figure the pod's /tmp is sized by (speech_recognizer.scratch).

/vosk streams read their clients' audio ahead into temporary files; a stream whose model is loading reads ahead holding
no decoder, so the decoders alone did not bound how many spill at once. Real clients against a real server on loopback.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from contextlib import closing
from pathlib import Path

from websockets.asyncio.client import connect

from speech_recognizer import inbox
from speech_recognizer.app import create_app
from speech_recognizer.inbox import READ_AHEAD_BYTES
from speech_recognizer.models import ModelRegistry
from speech_recognizer.scratch import SPILL_BYTES

from ..conftest import make_settings
from ..support import ServerThread, Unstarved, scrape_metrics, within
from .on_demand import ON_DEMAND, GatedRegistry

#: Clients of the locale whose model loads, and what each sends meanwhile: together far more than one decoder's share
#: of temporary files (SPILL_BYTES), each less than its own spill's limit.
CLIENTS = 3
SENT = READ_AHEAD_BYTES + SPILL_BYTES * 5 // 8
#: 1 s of 16 kHz mono PCM a message.
MESSAGE = bytes(32000)


async def send(url: str, sent: list[int]) -> None:
    """Send :data:`SENT` bytes of audio to ``url``, counted in ``sent``, and hold the connection open; cancelled, reset
    it (its audio unread behind a close frame would be decoded for nobody)."""
    async with connect(url, max_size=1 << 20) as ws:
        try:
            while sent[-1] < SENT:
                await ws.send(MESSAGE)
                sent[-1] += len(MESSAGE)
            await asyncio.Future()
        except asyncio.CancelledError:
            ws.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            ws.transport.abort()
            raise


async def until_still(seconds: float, least: int, hang: float) -> int:
    """The bytes spilled once they are ``least`` or more and have not changed for ``seconds`` of time this process (the
    server) did not wait for a CPU (the clients held back: by the clock, a server starved for that long looked held
    back too); a failure saying how many were spilled once ``hang`` seconds passed in that time
    (:meth:`~tests.support.Unstarved.beyond`)."""
    last = -1
    with closing(Unstarved()) as stopwatch:
        since = stopwatch.read()
        while True:
            now, quiet = inbox.spilled_bytes(), stopwatch.read()
            if now != last:
                last, since = now, quiet
            elif now >= least and quiet - since >= seconds:
                return now
            assert not stopwatch.beyond(hang), f"{now} bytes spilled, not {least} or more still for {seconds:g} s: {stopwatch}"
            await asyncio.sleep(0.05)


def test_streams_reading_ahead_while_their_model_loads_keep_to_the_servers_spill_budget(registry: ModelRegistry, tmp_path: Path) -> None:
    """Three /vosk clients of a locale whose model is loading each send 42 MiB at once (DecoderMaxCount=1: a budget of
    64 MiB of temporary files): the server takes no more than 64 MiB of them onto disk, and holds the clients back
    (counted in /metrics, one log line), their connections open (that a stream held so is read on as room is freed,
    nothing lost: test_inbox.py). Before, each stream spilled its own 40 MiB: 120 MiB on the pod's /tmp, whatever its decoders, 500
    (MaxConnections) such clients up to 32 GiB."""
    models = tmp_path / "models"
    models.mkdir()
    (models / ON_DEMAND).symlink_to(registry.sources["ko-KR"])
    gated = GatedRegistry(models)
    app = create_app(make_settings(tmp_path, "DecoderMaxCount=1"), gated)
    budget = 1 * SPILL_BYTES

    async def run(ws_url: str) -> tuple[int, list[int], float]:
        sent: list[list[int]] = []
        tasks = []
        started = time.monotonic()
        for _ in range(CLIENTS):
            sent.append([0])
            tasks.append(asyncio.ensure_future(send(f"{ws_url}/vosk?language={ON_DEMAND}", sent[-1])))
        held = await until_still(2.0, budget - (1 << 20), 60)  # within a message of it
        took = time.monotonic() - started
        assert all(not t.done() for t in tasks), [t.exception() for t in tasks if t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return held, [s[-1] for s in sent], took

    with ServerThread(app) as srv:
        within(60, lambda: gated.ready, "ko-KR's load")  # a hang guard, in unstarved time
        try:
            held, sent_then, took = asyncio.run(run(srv.ws))
            metrics = scrape_metrics(srv.http)
        finally:
            gated.gate.set()
        # the server stops once the load is over and the clients' streams let go (a hang guard, in unstarved time)
        admission = app.state.engine.admission
        within(120, lambda: gated.get_loaded(ON_DEMAND) is not None and not admission.connections,
               lambda: f"the load over ({gated.get_loaded(ON_DEMAND) is not None}) and every stream let go ({admission.connections} open)")
    print(f"spilled {held / 2**20:.1f} MiB with {[s // 2**20 for s in sent_then]} MiB sent, still after {took:.1f} s")
    wanted = CLIENTS * (SENT - READ_AHEAD_BYTES)
    assert held <= budget, (f"{CLIENTS} streams reading ahead while their model loads spilled {held / 2**20:.1f} MiB to "
                            f"/tmp, more than the server's budget of {budget / 2**20:g} MiB (DecoderMaxCount=1)")
    assert wanted > budget + SPILL_BYTES // 2, (held, wanted)
    assert min(sent_then) < SENT, "a client is held back"
    assert metrics[("speech_read_ahead_spill_held_total", ())] >= 1
    assert metrics[("speech_read_ahead_spill_budget_bytes", ())] == budget
