"""The gateway: throughput and reply latency through it against the same recognizer directly, and
the time a held connection waits for its first result while its locale wakes from zero.

- Throughput: unpaced streams (sent as fast as the server takes them) on the vosk and USP routes,
  directly and through the gateway (``bench/gateway_host.py``, a process of its own, as its pod
  would be), in pairs on one warm recognizer, the order alternating; ``*_ratio`` is the median of
  the pairs' (through / direct) audio seconds per second. The gateway's CPU per audio second is
  reported beside (on this machine it shares the two cores with the recognizer and the client).
- Reply latency: paced (1x real time) streams, directly and through the gateway, taking turns;
  ``*_p95_over_direct_ms`` is the p95 of the replies' latency through the gateway less directly.
- Wake from zero: the gateway holds a stream for a locale with no pod; the bench, standing in for
  the operator and kubelet, starts a recognizer on the Service's port once the gateway holds it
  (the gateway's ``speech_gateway_held``), and tells the gateway the pod is ready once ``/ready``
  answers 200 (what the operator's status then says). Reported: the seconds from the connection to
  its first result, and the recognizer's own start and warm-up within them.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psutil
from websockets.asyncio.client import connect

from harness.clients import USP_PATH, StreamResult
from harness.loopback import Loopback
from harness.usp import client_audio_frame, client_text_frame
from speech_recognizer.usp.frames import parse_text

from .common import CHUNK_S, LOCALE, Audio, child_on_a_port, cpu_seconds, free_port, loadavg, percentile, server
from .suites import ROUTES, WARM_PASSES, _gather


@dataclass
class Gateway(Loopback):
    port: int
    proc: subprocess.Popen[str]

    def held(self) -> int:
        with urllib.request.urlopen(f"{self.http}/metrics", timeout=5) as r:
            lines = r.read().decode().splitlines()
        return int(float(next(line.split()[-1] for line in lines if line.startswith("speech_gateway_held "))))

    def ready(self) -> None:
        urllib.request.urlopen(urllib.request.Request(f"{self.http}/_bench/ready", method="POST"), timeout=5).close()


@contextmanager
def gateway(recognizer_port: int, state: str = "ready") -> Iterator[Gateway]:
    with child_on_a_port(["bench.gateway_host", str(free_port()), str(recognizer_port), state]) as (proc, said):
        yield Gateway(said["port"], proc)


def _speed(results: list[StreamResult], wall: float) -> float:
    return sum(r.audio_s for r in results if r.ok) / wall


def throughput(audio: Audio, srv: object, gw: Gateway, ns: list[int], pairs: int) -> list[dict[str, object]]:
    rows = []
    for n in ns:
        row: dict[str, object] = {"n": n, "pairs": pairs}
        for route in ROUTES:
            ratios, direct, through, gw_cpu = [], [], [], []
            for j in range(pairs):
                order = ("direct", "gateway") if j % 2 == 0 else ("gateway", "direct")
                speeds = {}
                for side in order:
                    base = srv.ws if side == "direct" else gw.ws  # type: ignore[attr-defined]
                    c0 = cpu_seconds(gw.proc.pid)
                    res, wall = asyncio.run(_gather(route, base, audio, n, paced=False, stagger=0.0))
                    assert all(r.ok for r in res), [r.message for r in res if not r.ok]
                    speeds[side] = _speed(res, wall)
                    if side == "gateway":
                        gw_cpu.append((cpu_seconds(gw.proc.pid) - c0) / sum(r.audio_s for r in res))
                ratios.append(speeds["gateway"] / speeds["direct"])
                direct.append(speeds["direct"])
                through.append(speeds["gateway"])
            row[f"{route}_direct_audio_s_per_s"] = round(statistics.median(direct), 2)
            row[f"{route}_gateway_audio_s_per_s"] = round(statistics.median(through), 2)
            row[f"{route}_ratio"] = round(statistics.median(ratios), 3)
            row[f"{route}_gateway_cpu_s_per_audio_s"] = round(statistics.median(gw_cpu), 5)
        rows.append(row)
        print("  ", row, flush=True)
    return rows


def latency(audio: Audio, srv: object, gw: Gateway, n: int, rounds: int) -> list[dict[str, object]]:
    rows = []
    for route in ROUTES:
        lat: dict[str, list[float]] = {"direct": [], "gateway": []}
        for k in range(rounds):
            for side in (("direct", "gateway") if k % 2 == 0 else ("gateway", "direct")):
                base = srv.ws if side == "direct" else gw.ws  # type: ignore[attr-defined]
                res, _ = asyncio.run(_gather(route, base, audio, n, paced=True, stagger=0.0))
                lat[side].extend(x for r in res for x in r.latencies)
        d95, g95 = percentile(lat["direct"], 95), percentile(lat["gateway"], 95)
        row = {"route": route, "n": n, "rounds": rounds, "direct_p50_ms": round(1000 * percentile(lat["direct"], 50), 1),
               "gateway_p50_ms": round(1000 * percentile(lat["gateway"], 50), 1), "direct_p95_ms": round(1000 * d95, 1),
               "gateway_p95_ms": round(1000 * g95, 1), f"{route}_p95_over_direct_ms": round(1000 * (g95 - d95), 1)}
        rows.append(row)
        print("  ", row, flush=True)
    return rows


async def _first_result(route: str, ws_base: str, audio: Audio) -> float:
    """Connect, speak, and return the seconds until the first reply (vosk: any; USP: the first hypothesis);
    the rest of the audio is then sent and answered, as a client would."""
    t0 = time.monotonic()
    chunks = audio.chunks()
    if route == "vosk":
        async with connect(f"{ws_base}/vosk?language={LOCALE}", max_size=1 << 20, open_timeout=30) as ws:
            await ws.send(json.dumps({"config": {"sample_rate": audio.rate}}))
            await ws.send(chunks[0])
            await ws.recv()
            first = time.monotonic() - t0
            for chunk in chunks[1:]:
                await ws.send(chunk)
                await ws.recv()
            return first
    rid = "0" * 31 + "1"
    async with connect(ws_base + USP_PATH, subprotocols=["USP"], max_size=1 << 20, open_timeout=30) as ws:  # type: ignore[list-item]
        source = {"type": "Stream", "samplerate": str(audio.rate), "bitspersample": "16", "channelcount": "1"}
        await ws.send(client_text_frame("speech.config", None, {"context": {"audio": {"source": source}}}))
        await ws.send(client_text_frame("speech.context", rid, {"phraseDetection": {"language": LOCALE}}))
        first = float("nan")

        async def read() -> None:
            nonlocal first
            async for raw in ws:
                if isinstance(raw, str):
                    path = parse_text(raw).path.lower()
                    if path in ("speech.hypothesis", "speech.phrase") and first != first:
                        first = time.monotonic() - t0
                    if path == "turn.end":
                        return

        reader = asyncio.create_task(read())
        for chunk in chunks:  # paced: a microphone
            await ws.send(client_audio_frame(rid, chunk))
            await asyncio.sleep(CHUNK_S)
        await ws.send(client_audio_frame(rid, b""))
        await asyncio.wait_for(reader, 60)
        return first


def wake(audio: Audio, route: str, *server_args: str) -> dict[str, object]:
    """One wake from zero: a held ``route`` stream, a recognizer started once it is held."""
    port = free_port()
    with gateway(port, "asleep") as gw:
        async def run() -> tuple[float, float, float]:
            client = asyncio.create_task(_first_result(route, gw.ws, audio))
            while not await asyncio.to_thread(gw.held):
                await asyncio.sleep(0.02)
            held = time.monotonic()

            def start() -> float:
                t0 = time.monotonic()
                with server(*server_args, port=port, ready_timeout=300):
                    ready = time.monotonic() - t0
                    gw.ready()
                    while not client.done():
                        time.sleep(0.05)
                return ready

            started = asyncio.to_thread(start)
            ready_s = await started
            return await client, ready_s, held

        first_s, ready_s, _ = asyncio.run(run())
    row = {"route": route, "recognizer": " ".join(server_args) or "defaults", "first_result_s": round(first_s, 2),
           "recognizer_start_to_ready_s": round(ready_s, 2), "gateway_and_rest_s": round(first_s - ready_s, 2)}
    print("  ", row, flush=True)
    return row


def suite(audio: Audio, ns: list[int], pairs: int, paced_n: int, rounds: int, quick: bool) -> dict[str, object]:
    with server(f"DecoderMaxCount={max(ns + [paced_n]) + 2}") as srv, gateway(srv.port) as gw:
        for _ in range(WARM_PASSES):  # warm recognizers, as in the other suites
            asyncio.run(_gather("vosk", srv.ws, audio, max(ns), paced=False, stagger=0.0))
        gw_rss = psutil.Process(gw.proc.pid).memory_info().rss / 2**20
        tp = throughput(audio, srv, gw, ns, pairs)
        lat = latency(audio, srv, gw, paced_n, rounds)
        gw_rss_after = psutil.Process(gw.proc.pid).memory_info().rss / 2**20
    wakes = [wake(audio, "vosk")]
    if not quick:
        wakes += [wake(audio, "usp"), wake(audio, "vosk", "Warmup:Count=0")]
    return {"throughput": tp, "latency": lat, "wake": wakes, "gateway_rss_mib": [round(gw_rss, 1), round(gw_rss_after, 1)],
            "loadavg_after": loadavg()}
