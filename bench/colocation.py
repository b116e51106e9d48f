"""What a server run's neighbours cost the decoding: in-process Vosk alone vs beside a WebSocket echo.

During a server run the other CPU is not idle: the bench client sends chunks and reads replies, and the
server's event loop frames them. During an in-process run nothing runs beside the decoder threads.
This suite measures what that difference alone costs Vosk, with no server code involved: the
in-process worker (:class:`bench.common.InProcessWorker`) decodes the audio while a neighbour process
exchanges the same WebSocket traffic with itself (3200-byte chunks in, a partial-result-sized JSON
reply out, at the rate a server run of that speed would), and right before, with the neighbour
stopped (SIGSTOP). Ratios are medians of the pairs' ratios, as in the throughput suite.

``python -m bench.colocation <chunks per second>`` runs the neighbour on its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from .common import CHUNK, Audio, InProcessWorker, ab_row, ab_runs, cpu_seconds, speed

#: One reply as big as a /vosk partial result with three words.
REPLY = json.dumps({"partial": "안녕하세요 만나서 반갑습니다", "partial_result": [
    {"conf": 1.0, "end": 1.23 + i, "start": 0.81 + i, "word": "반갑습니다"} for i in range(3)]}, ensure_ascii=False)


async def _neighbour(rate: float) -> None:
    """An echo WebSocket server and a client sending ``rate`` chunks per second to it, in one process."""
    import uvicorn
    import websockets
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket

    async def echo(ws: WebSocket) -> None:
        await ws.accept()
        while True:
            await ws.receive_bytes()
            await ws.send_text(REPLY)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = Starlette(routes=[WebSocketRoute("/", echo)])
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", ws_per_message_deflate=False))
    background = {asyncio.create_task(srv.serve())}  # referenced, so the tasks are not collected
    while not srv.started:
        await asyncio.sleep(0.05)
    async with websockets.connect(f"ws://127.0.0.1:{port}/", compression=None, max_size=None) as ws:
        async def read() -> None:
            async for _ in ws:
                pass

        background.add(asyncio.create_task(read()))
        print("ready", flush=True)
        chunk, t0, k = bytes(CHUNK), time.monotonic(), 0
        while True:
            k += 1
            await ws.send(chunk)
            if (wait := t0 + k / rate - time.monotonic()) > 0:
                await asyncio.sleep(wait)  # runs until the bench kills the process (with reader and serving)


class Neighbour:
    """The neighbour process; :meth:`pause` and :meth:`resume` stop and continue it.

    ``cpu`` sums the CPU seconds it used between each :meth:`resume` and the next :meth:`pause`.
    """

    def __init__(self, rate: float) -> None:
        root = Path(__file__).resolve().parent.parent
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.colocation", str(rate)], cwd=root, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"
        self.cpu = 0.0
        self._since: float | None = None

    def pause(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)
        if self._since is not None:
            self.cpu += cpu_seconds(self.proc.pid) - self._since
            self._since = None

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)
        time.sleep(0.2)  # back to its rate before anything is measured
        self._since = cpu_seconds(self.proc.pid)

    def close(self) -> None:
        self.resume()
        self.proc.kill()
        self.proc.wait()


def suite(audio: Audio, ns: list[int], pairs: int, warm_passes: int) -> dict[str, object]:
    """Per N: in-process decoding alone and beside the neighbour, ``pairs`` times, alone first."""
    rows = []
    with InProcessWorker(audio, max(ns), warm_passes) as worker:
        for n in ns:
            rate = round(speed(worker.run(n)) / (CHUNK / 2 / audio.rate), 1)  # chunks/s a server run of this speed exchanges
            nb = Neighbour(rate)
            try:
                got = ab_runs(worker, n, pairs, nb.pause, nb.resume)
                nb.pause()  # ends the last run's CPU interval
            finally:
                nb.close()
            rows.append({"n": n, "neighbour_chunks_per_s": rate,
                         "neighbour_cpu_pct": round(100 * nb.cpu / sum(b["wall"] for _, b in got), 1),
                         **ab_row(got, "alone", "beside", "beside")})
            print("  ", rows[-1], flush=True)
    return {"rows": rows}


if __name__ == "__main__":
    asyncio.run(_neighbour(float(sys.argv[1])))
