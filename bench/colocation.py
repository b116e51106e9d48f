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
import statistics
import subprocess
import sys
import time
from pathlib import Path

from .common import CHUNK, Audio, InProcessWorker, cpu_seconds

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
    serving = asyncio.create_task(srv.serve())
    while not srv.started:
        await asyncio.sleep(0.05)
    async with websockets.connect(f"ws://127.0.0.1:{port}/", compression=None, max_size=None) as ws:
        async def read() -> None:
            async for _ in ws:
                pass

        reader = asyncio.create_task(read())
        print("ready", flush=True)
        chunk, t0, k = bytes(CHUNK), time.monotonic(), 0
        while True:
            k += 1
            await ws.send(chunk)
            if (wait := t0 + k / rate - time.monotonic()) > 0:
                await asyncio.sleep(wait)
    reader.cancel()
    serving.cancel()


class Neighbour:
    """The neighbour process; :meth:`pause` and :meth:`resume` stop and continue it."""

    def __init__(self, rate: float) -> None:
        root = Path(__file__).resolve().parent.parent
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.colocation", str(rate)], cwd=root, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def pause(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)
        time.sleep(0.2)  # back to its rate before anything is measured

    def close(self) -> None:
        self.resume()
        self.proc.kill()
        self.proc.wait()


def suite(audio: Audio, ns: list[int], pairs: int, warm_passes: int) -> dict[str, object]:
    """Per N: in-process decoding alone and beside the neighbour, ``pairs`` times, alone first."""
    rows = []
    with InProcessWorker(audio, max(ns), warm_passes) as worker:
        for n in ns:
            speed = worker.run(n)
            rate = round(speed["audio"] / speed["wall"] / (CHUNK / 2 / audio.rate), 1)  # chunks/s a server run of this speed exchanges
            nb = Neighbour(rate)
            alone, beside, nb_cpu = [], [], 0.0
            try:
                for _ in range(pairs):
                    nb.pause()
                    alone.append(worker.run(n))
                    nb.resume()
                    c0 = cpu_seconds(nb.proc.pid)
                    beside.append(worker.run(n))
                    nb_cpu += cpu_seconds(nb.proc.pid) - c0
            finally:
                nb.close()
            row = {"n": n, "pairs": pairs, "neighbour_chunks_per_s": rate,
                   "neighbour_cpu_pct": round(100 * nb_cpu / sum(b["wall"] for b in beside), 1),
                   "alone_cpu_s_per_audio_s": round(statistics.median(a["cpu"] / a["audio"] for a in alone), 4),
                   "beside_cpu_s_per_audio_s": round(statistics.median(b["cpu"] / b["audio"] for b in beside), 4),
                   "beside_cpu_ratio": round(statistics.median((a["cpu"] / a["audio"]) / (b["cpu"] / b["audio"]) for a, b in zip(alone, beside)), 3),
                   "beside_ratio": round(statistics.median((b["audio"] / b["wall"]) / (a["audio"] / a["wall"]) for a, b in zip(alone, beside)), 3)}
            rows.append(row)
            print("  ", row, flush=True)
    return {"rows": rows}


if __name__ == "__main__":
    asyncio.run(_neighbour(float(sys.argv[1])))
