"""The server on glibc's malloc (its own tuning: fastbins off, malloc_trim after drops) against jemalloc, fresh servers alternating.

``python -m bench.allocator_ab [PAIRS] [LONG_MINUTES]`` (3, 11.5): PAIRS pairs of servers, the order alternating
(glibc first, then jemalloc first, ...), jemalloc as the image runs it (``LD_PRELOAD=libjemalloc.so.2``,
``MALLOC_CONF=background_thread:true``; apt libjemalloc2). Each server (``DecoderMaxCount=8``,
``Warmup:Count=2``) gives one JSON line: RSS at ``/ready``; the server's CPU per audio second of unpaced
``/vosk`` streams at N=1 and N=2 (two recordings, after a warm pass; the mean of the middle two of 4 passes:
the first pass at a new N is always the dearest); RSS with 8 sessions open (6 on new recognizers); RSS along
one lock-step stream of LONG_MINUTES (its recognizer handed over at 10 minutes of clock: one dropped), its
wall time, and RSS 2 s and 15 s after it ended. bench/notes.md, "jemalloc", has the figures.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from websockets.asyncio.client import connect

from . import common
from .common import CHUNK, cpu_seconds, loadavg, pool_counts, server
from .suites import _gather, long_stream

JEMALLOC = {"LD_PRELOAD": "libjemalloc.so.2", "MALLOC_CONF": "background_thread:true"}


def one(arm: str, audio: common.Audio, recordings: list[common.Audio], long_minutes: float) -> dict[str, object]:
    out: dict[str, object] = {"arm": arm, "load_before": loadavg()}
    saved = {k: os.environ.get(k) for k in JEMALLOC}
    if arm == "jemalloc":
        os.environ.update(JEMALLOC)
    else:
        for k in JEMALLOC:
            os.environ.pop(k, None)
    try:
        with server("DecoderMaxCount=8", "Warmup:Count=2") as srv:
            out["jemalloc_mapped"] = "libjemalloc" in Path(f"/proc/{srv.pid}/maps").read_text()
            time.sleep(1.0)
            out["rss_ready"] = round(srv.rss_mib(), 1)
            asyncio.run(_gather("vosk", srv.ws, recordings, 2, paced=False, stagger=0.0))
            for n in (1, 2):
                costs = []
                for _ in range(4):
                    c0 = cpu_seconds(srv.pid)
                    res, _wall = asyncio.run(_gather("vosk", srv.ws, recordings, n, paced=False, stagger=0.0))
                    costs.append((cpu_seconds(srv.pid) - c0) / sum(r.audio_s for r in res if r.ok))
                costs.sort()
                out[f"cpu_n{n}"] = round((costs[1] + costs[2]) / 2, 4)
                out[f"cpu_n{n}_all"] = [round(c, 4) for c in costs]
            out["rss_after_streams"] = round(srv.rss_mib(), 1)

            async def sessions() -> float:
                socks = []
                try:
                    while len(socks) < 8:
                        ws = await connect(f"{srv.ws}/vosk?language=ko-KR")
                        await ws.send(json.dumps({"config": {"sample_rate": audio.rate}}))
                        await ws.send(bytes(CHUNK))
                        await ws.recv()
                        socks.append(ws)
                    await asyncio.sleep(1.0)
                    return round(srv.rss_mib(), 1)
                finally:
                    for ws in socks:
                        await ws.close()

            out["rss_8_sessions"] = asyncio.run(sessions())
            time.sleep(1.0)

            t0 = time.monotonic()
            points = [rss for _, rss in asyncio.run(long_stream(srv.ws, audio, long_minutes, srv.rss_mib))]
            out["long_wall"] = round(time.monotonic() - t0, 1)
            out["long_rss_by_minute"] = points
            out["long_peak_growth"] = round(max(points) - points[0], 1)
            time.sleep(2.0)
            out["rss_end_2s"] = round(srv.rss_mib(), 1)
            time.sleep(13.0)
            out["rss_idle_15s"] = round(srv.rss_mib(), 1)
            out["pool"] = pool_counts(srv)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    out["load_after"] = loadavg()
    return out


def main(argv: list[str]) -> None:
    import uvloop

    pairs = int(argv[0]) if argv else 3
    long_minutes = float(argv[1]) if len(argv) > 1 else 11.5
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    work = Path(tempfile.mkdtemp(prefix="bench-alloc-"))
    audio = common.make_audio(work)
    recordings = common.make_voices(work, 2)
    for i in range(pairs):
        for arm in ("glibc", "jemalloc") if i % 2 == 0 else ("jemalloc", "glibc"):
            print(json.dumps(one(arm, audio, recordings, long_minutes)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
