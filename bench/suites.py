"""The five benchmarks of issue 6. Each returns a dict of rows (lists of dicts) and scalar results."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Callable
from pathlib import Path

import httpx

from harness.clients import StreamResult, usp_stream, vosk_stream

from .clients import InProcess
from .common import (
    CHUNK,
    ROOT,
    Audio,
    InProcessWorker,
    Sampler,
    ab_row,
    ab_runs,
    cpu_seconds,
    loadavg,
    make_recordings,
    make_voices,
    percentile,
    pool_counts,
    server,
    thread_cpu,
)

ROUTES = {"vosk": vosk_stream, "usp": usp_stream}
#: Passes of the audio each recognizer decodes before throughput is measured, on both sides. A recognizer
#: replaying the same audio keeps getting cheaper for a few passes (its graph cache fills in: in-process
#: 0.15, then 0.09 CPU s per audio s on its second and third pass), which made consecutive measurements
#: differ by up to 2x; after three they agree to about 10 % (bench/notes.md).
WARM_PASSES = 3


def _agg(results: list[StreamResult]) -> dict[str, object]:
    lat = [x for r in results for x in r.latencies]
    ok = [r for r in results if r.ok]
    return {
        "streams": len(results), "completed": len(ok),
        "p50_ms": round(1000 * percentile(lat, 50), 1), "p95_ms": round(1000 * percentile(lat, 95), 1),
        "max_ms": round(1000 * max(lat, default=0.0), 1),
        **({"p95_changed_ms": round(1000 * percentile(changed, 95), 1)} if (changed := [x for r in results for x in r.changed_latencies]) else {}),
        "final_p95_ms": round(1000 * percentile([r.final_latency for r in ok], 95), 1),
        "max_lag_ms": round(1000 * max((r.max_lag for r in ok), default=0.0), 1),
        "rtf_max": round(max((r.wall_s / r.audio_s for r in ok), default=float("nan")), 3),
        "strict": len(ok) == len(results) and all(r.strict for r in results),
    }


def _p95_over_vosk(row: dict[str, object], base_row: dict[str, object]) -> float:
    """A server row's p95 latency beyond in-process Vosk's: /vosk replies to every chunk, USP sends a
    hypothesis only when the text changed (compared with the in-process p95 of those chunks)."""
    vosk_p95 = base_row["p95_changed_ms"] if row["route"] == "usp" and "p95_changed_ms" in base_row else base_row["p95_ms"]
    return round(float(row["p95_ms"]) - float(vosk_p95), 1)  # type: ignore[arg-type]


async def _gather(route: str, ws: str, audio: Audio | list[Audio], n: int, *, paced: bool, stagger: float) -> tuple[list[StreamResult], float]:
    """``n`` streams of ``route`` at once (stream ``i`` speaks ``audio[i]``, cycling, when given a list); results and wall time."""
    each = audio if isinstance(audio, list) else [audio] * n
    t0 = time.monotonic()
    results = await asyncio.gather(*(ROUTES[route](ws, each[i % len(each)], paced=paced, delay=i * stagger) for i in range(n)))
    return list(results), time.monotonic() - t0


#: Labels of the paced rows' audio.
DIFFERENT, IDENTICAL = "a recording per stream", "the same recording (extra)"


def _paced_row(route: str, n: int, start: str, audio: str, results: list[StreamResult], load_before: list[float],
               sampler: Sampler | None = None, built: float | None = None) -> dict[str, object]:
    row: dict[str, object] = {"route": route, "n": n, "start": start, "audio": audio, **_agg(results)}
    if sampler is not None:
        row.update(sampler.summary())
    if built is not None:
        row["recognizers_built"] = int(built)
    row["loadavg_before"], row["loadavg_after"] = load_before, loadavg()
    print("  ", row, flush=True)
    return row


def streams(audio: Audio, model: object, ns: list[int], *, cold_n: int, rounds: int, pairs: int = 3,
            identical_ns: list[int] | None = None) -> dict[str, object]:
    """Paced real-time streams over both WebSocket routes and in-process Vosk, each stream speaking a recording
    of its own (:func:`~bench.common.make_recordings`: voices, speeds, 8/16/44.1 kHz); then unpaced throughput.

    1. A freshly started server, ``cold_n`` streams started together as soon as ``/ready`` says 200 (without
       and with the start-up warm-up).
    2. For each N of ``ns``: N streams started together, in-process, then on each route, all three on the same
       N recordings, which no recognizer of that side has decoded before (rows take the next recordings of
       the list in turn, and each route has a server of its own). Every side starts warmed by one unpaced
       pass of the bench audio on max(ns) streams.
    3. A labelled extra: the bench audio on every stream (the best case: every recognizer has decoded it).
    """
    recordings = make_recordings(audio.path.parent / "recordings")
    rows: list[dict[str, object]] = []
    lag_over_time: dict[str, list] = {}
    cap = max(max(ns), cold_n) + 2
    for label, args in (("no warm-up", ("Warmup:Count=0",)), ("start-up warm-up", ())):
        t0 = time.monotonic()
        with server(f"DecoderMaxCount={cap}", *args) as srv:
            ready_s = round(time.monotonic() - t0, 1)
            load, built = loadavg(), pool_counts(srv)["built"]
            with Sampler(srv.pid) as smp:
                res, _ = asyncio.run(_gather("vosk", srv.ws, recordings[:cold_n], cold_n, paced=True, stagger=0.0))
            rows.append(_paced_row("vosk", cold_n, f"together, fresh server, {label}, ready in {ready_s} s", DIFFERENT, res, load,
                                   smp, pool_counts(srv)["built"] - built))
    inproc = InProcess(model)
    with contextlib.ExitStack() as stack:
        servers = {route: stack.enter_context(server(f"DecoderMaxCount={cap}")) for route in ROUTES}
        for srv in servers.values():
            asyncio.run(_gather("vosk", srv.ws, audio, max(ns), paced=False, stagger=0.0))
        inproc.warm(audio, max(ns))
        taken = 0
        for n in ns:
            each = [recordings[(taken + i) % len(recordings)] for i in range(n)]
            taken += n
            load = loadavg()
            base, _ = inproc.run(each, n, paced=True)
            base_row = _paced_row("in-process", n, "together", DIFFERENT, base, load)
            rows.append(base_row)
            for route, srv in servers.items():
                load, built = loadavg(), pool_counts(srv)["built"]
                with Sampler(srv.pid) as smp:
                    res, _ = asyncio.run(_gather(route, srv.ws, each, n, paced=True, stagger=0.0))
                row = _paced_row(route, n, "together", DIFFERENT, res, load, smp, pool_counts(srv)["built"] - built)
                row["p95_over_vosk_ms"] = _p95_over_vosk(row, base_row)
                rows.append(row)
                worst = max(res, key=lambda r: r.max_lag)
                lag_over_time[f"{route}-n{n}"] = [(t, round(1000 * v, 1)) for t, v in worst.lag]
        for n in identical_ns if identical_ns is not None else ns:
            load = loadavg()
            base, _ = inproc.run(audio, n, paced=True)
            base_row = _paced_row("in-process", n, "together", IDENTICAL, base, load)
            rows.append(base_row)
            for route, srv in servers.items():
                load = loadavg()
                with Sampler(srv.pid) as smp:
                    res, _ = asyncio.run(_gather(route, srv.ws, audio, n, paced=True, stagger=0.0))
                row = _paced_row(route, n, "together", IDENTICAL, res, load, smp)
                row["p95_over_vosk_ms"] = _p95_over_vosk(row, base_row)
                rows.append(row)
    strict: dict[str, int] = {}
    for side in ("in-process", *ROUTES):
        mine = [r for r in rows if r["route"] == side and r["audio"] == DIFFERENT and r["start"] == "together"]
        bad = [r["n"] for r in mine if not r["strict"]]
        strict[side] = max((r["n"] for r in mine if r["strict"] and all(b > r["n"] for b in bad)), default=0)  # type: ignore[operator]
    return {"paced": rows, "throughput": throughput_rounds(recordings[:8], ns, rounds, pairs), "largest_strict_n": strict,
            "recordings": [{"path": r.path.name, "rate": r.rate, "seconds": round(r.seconds, 2)} for r in recordings],
            "lag_over_time_ms": lag_over_time}


def throughput_rounds(recordings: list[Audio], ns: list[int], rounds: int, pairs: int = 3) -> dict[str, object]:
    """Unpaced streams (sent as fast as the server takes them) vs in-process Vosk at equal concurrency; stream ``i``
    speaks ``recordings[i]`` (cycling) on both sides.

    Each of ``rounds`` rounds starts a fresh server and a fresh in-process worker (the same code
    can run at a different speed in another process), both warmed with :data:`WARM_PASSES`
    passes of the audio. For each N and route the two sides then take ``pairs`` turns, the
    in-process run right before the server run, so each pair shares the machine's conditions
    (on these shared VMs one pass can run 15 % slower than the next). Ratios are medians of the
    per-pair ratios; absolute values are medians too. The routes alternate in going first. The server's CPU is split by thread: the
    event loop (``loop``: protocol, HTTP, JSON, sockets) and the decoder threads (Vosk and our
    per-chunk code).
    """
    got: dict[int, dict[str, list[tuple[dict[str, float], dict[str, float]]]]] = {n: {r: [] for r in ROUTES} for n in ns}
    for k in range(rounds):
        with server(f"DecoderMaxCount={max(ns) + 2}") as srv, InProcessWorker(recordings, max(ns), WARM_PASSES) as worker:
            for _ in range(WARM_PASSES):  # warm, as the worker is
                asyncio.run(_gather("vosk", srv.ws, recordings, max(ns), paced=False, stagger=0.0))
            for n in ns:
                for j in range(pairs):
                    # the routes take turns going first: the first run at a new N meets the pool as the runs
                    # before left it (e.g. a recognizer that retired there, replaced in the background)
                    for route in list(ROUTES)[:: 1 if (k + j) % 2 == 0 else -1]:
                        load = loadavg()
                        base = worker.run(n)
                        inproc = {"audio_s_per_s": base["audio"] / base["wall"], "cpu_s_per_audio_s": base["cpu"] / base["audio"]}
                        p0 = pool_counts(srv)
                        c0, l0 = cpu_seconds(srv.pid), thread_cpu(srv.pid)[srv.pid]
                        res, wall = asyncio.run(_gather(route, srv.ws, recordings, n, paced=False, stagger=0.0))
                        total, loop = cpu_seconds(srv.pid) - c0, thread_cpu(srv.pid)[srv.pid] - l0  # the main thread runs the event loop
                        pool = {name: v - p0[name] for name, v in pool_counts(srv).items()}
                        done = sum(r.audio_s for r in res if r.ok) or float("nan")
                        got[n][route].append((inproc, {"audio_s_per_s": done / wall, "cpu_s_per_audio_s": total / done,
                                                       "loop_cpu_s_per_audio_s": loop / done, "decoder_cpu_s_per_audio_s": (total - loop) / done,
                                                       "recognizers_built": pool["built"], "recognizers_retired": pool["retired"],
                                                       "loadavg_before": load, "loadavg_after": loadavg()}))
            print(f"   round {k + 1}/{rounds} done, load {loadavg()}", flush=True)

    rows = []
    for n in ns:
        every = [ip for route in ROUTES for ip, _ in got[n][route]]
        row: dict[str, object] = {"n": n, "rounds": rounds, "pairs": rounds * pairs,
                                  "in_process_audio_s_per_s": round(statistics.median(x["audio_s_per_s"] for x in every), 2),
                                  "in_process_cpu_s_per_audio_s": round(statistics.median(x["cpu_s_per_audio_s"] for x in every), 4)}
        for route in ROUTES:
            ps = got[n][route]
            row[f"{route}_audio_s_per_s"] = round(statistics.median(sv["audio_s_per_s"] for _, sv in ps), 2)
            row[f"{route}_ratio"] = round(statistics.median(sv["audio_s_per_s"] / ip["audio_s_per_s"] for ip, sv in ps), 3)
            row[f"{route}_cpu_s_per_audio_s"] = round(statistics.median(sv["cpu_s_per_audio_s"] for _, sv in ps), 4)
            row[f"{route}_cpu_ratio"] = round(statistics.median(ip["cpu_s_per_audio_s"] / sv["cpu_s_per_audio_s"] for ip, sv in ps), 3)
            row[f"{route}_loop_cpu_pct_of_decoders"] = round(statistics.median(100 * sv["loop_cpu_s_per_audio_s"] / sv["decoder_cpu_s_per_audio_s"] for _, sv in ps), 1)
            row[f"{route}_decoder_cpu_ratio"] = round(statistics.median(ip["cpu_s_per_audio_s"] / sv["decoder_cpu_s_per_audio_s"] for ip, sv in ps), 3)
            row[f"{route}_recognizers_built"] = int(sum(sv["recognizers_built"] for _, sv in ps))
        loads = [sv["loadavg_before"][0] for route in ROUTES for _, sv in got[n][route]]
        row["loadavg_1min_min_max"] = [min(loads), max(loads)]
        rows.append(row)
        print("  ", row, flush=True)
    spread = [round(ip["cpu_s_per_audio_s"], 4) for route in ROUTES for ip, _ in got[ns[0]][route]]
    samples = {str(n): {route: [{"in_process": ip, "server": sv} for ip, sv in got[n][route]] for route in ROUTES} for n in ns}
    return {"rows": rows, "samples": samples, "in_process_cpu_n1_by_round": spread}


def files(audio: Audio, cores: int, requests_per_level: int, rounds: int) -> dict[str, object]:
    """Recorded files through the REST route at 1..cores concurrency vs in-process Vosk on the same files.

    Like :func:`throughput_rounds`, each of ``rounds`` rounds is a fresh server and a fresh
    in-process worker, and the rows are medians. Both sides warm: ``cores`` recognizers each, :data:`WARM_PASSES` passes of the audio. In-process feeds the same 100 ms pieces and, like
    the REST route, asks for no intermediate results. Two ratios: ``rest_ratio`` (wall-clock
    throughput) and ``rest_cpu_ratio`` (in-process CPU seconds per audio second / the server's;
    1.0 = the server adds nothing).
    """
    body = audio.path.read_bytes()
    url = "/speech/recognition/conversation/cognitiveservices/v1?language=ko-KR&format=detailed"
    headers = {"Content-Type": "audio/wav; codecs=audio/pcm; samplerate=16000"}
    levels = list(range(1, cores + 1))
    samples: dict[int, dict[str, list[dict[str, float]]]] = {n: {"in_process": [], "rest": []} for n in levels}
    for k in range(rounds):
        with server(f"DecoderMaxCount={cores * 4}") as srv, InProcessWorker(audio, cores, WARM_PASSES, partials=False) as worker:

            async def warm() -> None:  # as the worker's recognizers are
                async with httpx.AsyncClient(base_url=srv.http, timeout=300) as client:
                    for _ in range(WARM_PASSES):
                        await asyncio.gather(*(client.post(url, content=body, headers=headers) for _ in range(cores)))

            async def post_all(n: int) -> tuple[float, float]:
                async with httpx.AsyncClient(base_url=srv.http, timeout=300) as client:
                    queue = list(range(requests_per_level))
                    t0, c0 = time.monotonic(), cpu_seconds(srv.pid)

                    async def one() -> None:
                        while queue:
                            queue.pop()
                            r = await client.post(url, content=body, headers=headers)
                            assert r.status_code == 200, r.text
                    await asyncio.gather(*(one() for _ in range(n)))
                    return time.monotonic() - t0, cpu_seconds(srv.pid) - c0

            asyncio.run(warm())
            for n in levels:
                base = worker.files(n, requests_per_level)
                samples[n]["in_process"].append({"audio_s_per_s": base["audio"] / base["wall"], "cpu_s_per_audio_s": base["cpu"] / base["audio"]})
                wall, cpu = asyncio.run(post_all(n))
                done = requests_per_level * audio.seconds
                samples[n]["rest"].append({"audio_s_per_s": done / wall, "cpu_s_per_audio_s": cpu / done})
        print(f"   round {k + 1}/{rounds} done, load {loadavg()}", flush=True)

    def med(items: list[dict[str, float]], key: str) -> float:
        return statistics.median(x[key] for x in items)

    rows = []
    for n in levels:
        side = samples[n]
        tp, tp_in = med(side["rest"], "audio_s_per_s"), med(side["in_process"], "audio_s_per_s")
        cpu, cpu_in = med(side["rest"], "cpu_s_per_audio_s"), med(side["in_process"], "cpu_s_per_audio_s")
        rows.append({"concurrency": n, "rounds": rounds, "rest_audio_s_per_s": round(tp, 2), "in_process_audio_s_per_s": round(tp_in, 2),
                     "rest_ratio": round(tp / tp_in, 3), "rest_cpu_s_per_audio_s": round(cpu, 4),
                     "in_process_cpu_s_per_audio_s": round(cpu_in, 4), "rest_cpu_ratio": round(cpu_in / cpu, 3)})
        print("  ", rows[-1], flush=True)
    return {"rows": rows, "samples": {str(n): v for n, v in samples.items()},
            "baseline": "warm on both sides; in-process without intermediate results, as the REST route; "
                        f"medians over {rounds} rounds of a fresh server and a fresh in-process worker"}


async def long_stream(ws: str, audio: Audio, minutes: float, rss_mib: Callable[[], float],
                      say: Callable[[tuple[float, float]], None] = lambda point: None) -> list[tuple[float, float]]:
    """One ``/vosk`` stream of ``minutes`` of ``audio`` (repeated) in lock step, each chunk's reply awaited: the
    server's RSS at every minute of audio sent, ``(minute, MiB)`` (also given to ``say`` as it comes)."""
    import json

    from websockets.asyncio.client import connect

    points: list[tuple[float, float]] = []
    total, sent, next_mark = minutes * 60, 0.0, 60.0
    async with connect(f"{ws}/vosk?language=ko-KR", max_size=1 << 20) as conn:
        await conn.send(json.dumps({"config": {"sample_rate": audio.rate}}))
        while sent < total:
            for chunk in audio.chunks():
                await conn.send(chunk)
                await conn.recv()
                sent += len(chunk) / 2 / audio.rate
                if sent >= next_mark:
                    points.append((round(sent / 60, 1), round(rss_mib(), 1)))
                    say(points[-1])
                    next_mark += 60.0
                if sent >= total:
                    break
        await conn.send('{"eof" : 1}')
        await conn.recv()
    return points


def memory(audio: Audio, long_minutes: float) -> dict[str, object]:
    """RSS with the model loaded (and after the default start-up warm-up), with 1/10/50 idle sessions,
    and along one long stream pushed unpaced."""
    import json
    import urllib.request

    from websockets.asyncio.client import connect

    out: dict[str, object] = {}
    with server() as srv:  # the defaults: recognizers warmed at start-up wait in the pool
        time.sleep(1.0)
        out["warmed_at_startup"] = json.loads(urllib.request.urlopen(f"{srv.http}/ready").read())["warmup"]["warmed"]
        out["model_loaded_and_warmed_mib"] = round(srv.rss_mib(), 1)
        print("   model loaded, start-up warm-up done", out["warmed_at_startup"], out["model_loaded_and_warmed_mib"])
    # sessions below get new recognizers: no warm-up, and a cap that admits 50 idle sessions
    with server("DecoderMaxCount=64", "Warmup:Count=0") as srv:
        time.sleep(1.0)
        out["model_loaded_mib"] = round(srv.rss_mib(), 1)
        print("   model loaded", out["model_loaded_mib"])

        async def idle() -> dict[str, float]:
            socks = []
            got: dict[str, float] = {}
            silence = bytes(CHUNK)
            try:
                for target in (1, 10, 50):
                    while len(socks) < target:
                        ws = await connect(f"{srv.ws}/vosk?language=ko-KR")
                        await ws.send(json.dumps({"config": {"sample_rate": audio.rate}}))
                        await ws.send(silence)  # the session (and its recognizer) starts with the first audio
                        await ws.recv()
                        socks.append(ws)
                    await asyncio.sleep(1.0)
                    got[str(target)] = round(srv.rss_mib(), 1)
                    print(f"   {target} idle sessions", got[str(target)])
            finally:
                for ws in socks:
                    await ws.close()
            return got

        idle_rss = asyncio.run(idle())
        base = out["model_loaded_mib"]
        out["idle_sessions_mib"] = idle_rss
        out["idle_session_mib_each"] = round((idle_rss["50"] - base) / 50, 2)  # type: ignore[operator]

        t0 = time.monotonic()
        points = asyncio.run(long_stream(srv.ws, audio, long_minutes, srv.rss_mib, lambda point: print("   long stream", point)))
        out["long_stream_minutes"] = long_minutes
        out["long_stream_wall_s"] = round(time.monotonic() - t0, 1)
        out["long_stream_rss_by_minute"] = points
        out["long_stream_growth_mib"] = round(points[-1][1] - points[0][1], 1) if points else None
        #: What the target is about: the highest minute, not only the last one.
        out["long_stream_peak_growth_mib"] = round(max(p[1] for p in points) - points[0][1], 1) if points else None
    return out


def overload(audio: Audio, holdable: int, *, stream_deadline: float | None = None) -> dict[str, object]:
    """4x more paced streams than the machine holds, half per route, all started together.

    First with the default decoder cap (admission control refuses the excess), then with the
    cap raised so every stream is admitted (what happens without admission control).

    Bounded: every stream has a hard deadline (``stream_deadline``, default 2x the audio + 20 s)
    and is cancelled there and counted as ``stalled``; the whole run has a hard deadline of the
    stream deadline + 15 s, after which anything left (probe included) is cancelled too.
    Three runs: the default cap on a freshly started server (recognizers warmed at start-up only), the default
    cap after ``default_cap`` streams warmed the server's pool, and the cap raised to all streams
    (same warm-up). Outcomes per stream, exactly one of: ``completed`` (final result received), ``refused_cleanly``
    (1013 close with a reason / USP ``TooManyRequests`` with a message), ``dropped`` (closed or
    failed otherwise; ``dropped_without_message`` when no reason reached the client), ``stalled``.
    """
    from harness.clients import bounded

    n = 4 * holdable
    per = stream_deadline or 2 * audio.seconds + 20
    total = per + 15
    out: dict[str, object] = {"holdable": holdable, "streams": n, "stream_deadline_s": round(per, 1),
                              "total_deadline_s": round(total, 1), "runs": []}
    from speech_recognizer.settings import parse

    default_cap = parse([], environ={}).decoder_max_count  # the server's default DecoderMaxCount
    out["default_cap"] = default_cap
    runs = (("default cap, fresh server (start-up warm-up only)", (), 0),
            ("default cap, warm server (after traffic)", (), default_cap),
            ("cap raised to all, warm server", (f"DecoderMaxCount={n}",), default_cap))
    for label, args, warm in runs:
        with server(*args) as srv:
            if warm:  # as after any traffic: `warm` recognizers in the server's pool (fresh ones cost ~4x CPU)
                asyncio.run(_gather("vosk", srv.ws, audio, warm, paced=False, stagger=0.0))
            load_before = [round(x, 2) for x in os.getloadavg()]
            probes: list[float] = []
            probe_failures = 0

            async def probe(stop: asyncio.Event) -> None:
                nonlocal probe_failures
                async with httpx.AsyncClient(timeout=5) as client:
                    while not stop.is_set():
                        t = time.monotonic()
                        try:
                            r = await client.get(f"{srv.http}/ready")
                            probes.append(time.monotonic() - t)  # noqa: B023 - run in this iteration (asyncio.run below)
                            probe_failures += r.status_code != 200
                        except httpx.HTTPError:
                            probes.append(time.monotonic() - t)  # noqa: B023 - run in this iteration (asyncio.run below)
                            probe_failures += 1
                        await asyncio.sleep(0.25)

            async def main() -> tuple[list[StreamResult], float]:
                stop = asyncio.Event()
                prober = asyncio.create_task(probe(stop))
                t0 = time.monotonic()
                tasks = [asyncio.create_task(bounded(
                    "vosk" if i % 2 == 0 else "usp",
                    (vosk_stream if i % 2 == 0 else usp_stream)(srv.ws, audio, paced=True, timeout=per),
                    audio.seconds, per)) for i in range(n)]
                done, pending = await asyncio.wait(tasks, timeout=total)
                for t in pending:  # cannot happen unless a cancellation itself hangs; counted as stalled
                    t.cancel()
                stop.set()
                prober.cancel()
                await asyncio.gather(prober, *pending, return_exceptions=True)
                res = [t.result() if t in done and not t.cancelled() else
                       StreamResult("?", audio.seconds, stalled=True, message="cancelled at the run's deadline") for t in tasks]
                return res, time.monotonic() - t0

            with Sampler(srv.pid) as smp:
                res, wall = asyncio.run(main())
            served = [r for r in res if r.ok]
            row = {
                "run": label, "streams": n, "completed": len(served),
                "refused_cleanly": sum(r.refused for r in res),
                "dropped": sum(r.dropped for r in res),
                "dropped_without_message": sum(r.unexplained for r in res),
                "stalled": sum(r.stalled for r in res),
                "completed_late": sum(1 for r in served if not r.strict),
                "served_max_lag_ms": round(1000 * max((r.max_lag for r in served), default=0.0), 1),
                "served_final_p95_ms": round(1000 * percentile([r.final_latency for r in served], 95), 1),
                "ready_probes": len(probes), "ready_probe_failures": probe_failures,
                "ready_probe_p50_ms": round(1000 * percentile(probes, 50), 1),
                "ready_probe_p95_ms": round(1000 * percentile(probes, 95), 1),
                "ready_probe_max_ms": round(1000 * max(probes, default=0.0), 1),
                "wall_s": round(wall, 1),
                "loadavg_before": load_before, "loadavg_after": [round(x, 2) for x in os.getloadavg()],
                "refusal_messages": sorted({r.message for r in res if r.refused})[:2],
                "drop_messages": sorted({r.message for r in res if r.dropped})[:3],
                **smp.summary(),
            }
            out["runs"].append(row)  # type: ignore[union-attr]
            print("  ", row, flush=True)
    return out


def allocator(audio: Audio, ns: list[int], pairs: int) -> dict[str, object]:
    """In-process Vosk with glibc's fastbins on (the default) and off (as the server runs), alternating in one process.

    The same worker and the same warm recognizers take turns, fastbins on right before off, so the
    pairs share the process and the machine's conditions; ``fastbins_off_cpu_ratio`` is CPU per audio
    second on / off (above 1: off is cheaper), ``fastbins_off_ratio`` throughput off / on.
    """
    rows = []
    with InProcessWorker(audio, max(ns), WARM_PASSES) as worker:
        for n in ns:
            got = ab_runs(worker, n, pairs, lambda: worker.fastbins(True), lambda: worker.fastbins(False))
            rows.append({"n": n, **ab_row(got, "on", "off", "fastbins_off")})
            print("  ", rows[-1], flush=True)
    return {"rows": rows}


def transcriber(cores: int, files_n: int, rounds: int, large_n: int = 0) -> dict[str, object]:
    """``speech-recognizer transcribe`` (in-process, ``--jobs cores``) vs the REST route on the same ``files_n`` files (A).

    The files are different recordings (:func:`make_voices`: other sentences, voices and speeds
    than the warm-up's), so neither side has decoded them before. The REST side posts every file
    in the order given to a running server (started and warmed as by default), ``cores`` at a
    time as the transcriber's jobs; the transcriber side is the whole command as a user runs it,
    its start (Python, the model's load) and its recognizers' first utterances included:
    ``transcriber_ratio``. Three more comparisons, one per starting point a user may be at:

    - a server is running: the user gives the transcriber ``--server`` (``remote_ratio``: REST
      over that command on A, its start included);
    - both started (warm against warm): a second batch of as many other recordings (B) goes to
      the same server, and the transcriber runs A and B together; what B adds to its time is its
      throughput once started (``warm_ratio``: REST on B over that);
    - nothing running (cold against cold): the server's start to ``/ready`` (start-up warm-up
      included) plus REST on A, over the transcriber on A (``cold_ratio``).

    The sides take turns going first; medians over ``rounds`` rounds, each with a fresh server.

    With ``large_n``, a second row: ``transcriber_ratio`` alone on a batch of ``large_n`` further
    recordings (REST on a running, warm server against the whole in-process command), to show how
    the transcriber's one-off start weighs on a bigger batch.
    """
    work = Path(tempfile.mkdtemp(prefix="bench-transcriber-"))
    recordings = [a.path for a in make_voices(work, 2 * files_n + large_n)]
    files, more, large = recordings[:files_n], recordings[files_n:2 * files_n], recordings[2 * files_n:]

    def seconds(paths: list[Path]) -> float:
        total = 0.0
        for path in paths:
            with wave.open(str(path)) as w:
                total += w.getnframes() / w.getframerate()
        return total

    total, more_total = seconds(files), seconds(more)
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'recognizer'}:{os.environ.get('PYTHONPATH', '')}"}

    def transcribe(paths: list[Path], *options: str) -> float:
        shutil.rmtree(work / "out", ignore_errors=True)
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-m", "speech_recognizer", "transcribe", "--jobs", str(cores), "--output-dir",
                        str(work / "out"), *options, *map(str, paths)], check=True, env=env, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.monotonic() - t0

    url = "/speech/recognition/conversation/cognitiveservices/v1?language=ko-KR"

    async def post_all(base: str, batch: list[Path]) -> float:
        async with httpx.AsyncClient(base_url=base, timeout=600) as client:
            queue = list(batch)
            t0 = time.monotonic()

            async def one() -> None:
                while queue:
                    r = await client.post(url, content=queue.pop(0).read_bytes(), headers={"Content-Type": "audio/wav"})
                    assert r.status_code == 200, r.text
            await asyncio.gather(*(one() for _ in range(cores)))
            return time.monotonic() - t0

    def rest_large() -> dict[str, float]:
        with server(f"DecoderMaxCount={cores * 4}") as srv:
            return {"rest_large_s": asyncio.run(post_all(srv.http, large))}

    def in_process_large() -> dict[str, float]:
        return {"transcriber_large_s": transcribe(large)}

    def rest() -> dict[str, float]:
        t0 = time.monotonic()
        with server(f"DecoderMaxCount={cores * 4}") as srv:
            start_s = time.monotonic() - t0
            return {"server_start_s": start_s, "rest_s": asyncio.run(post_all(srv.http, files)),
                    "rest_more_s": asyncio.run(post_all(srv.http, more))}

    def remote() -> dict[str, float]:  # a server of its own: one that decoded these files already would flatter it
        with server(f"DecoderMaxCount={cores * 4}") as srv:
            return {"remote_s": transcribe(files, "--server", srv.http, "--language", "ko-KR")}

    def in_process() -> dict[str, float]:
        return {"transcriber_s": transcribe(files), "transcriber_both_s": transcribe(files + more)}

    runs: list[dict[str, float]] = []
    for k in range(rounds):
        sides = (rest, remote, in_process) if k % 2 == 0 else (in_process, remote, rest)
        runs.append({key: round(value, 3) for side in sides for key, value in side().items()})
        print(f"   round {k + 1}/{rounds}: {runs[-1]}, load {loadavg()}", flush=True)

    def median(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    rest_s, cli_s, start_s = median("rest_s"), median("transcriber_s"), median("server_start_s")
    warm = [r["rest_more_s"] / (r["transcriber_both_s"] - r["transcriber_s"]) for r in runs]
    added = median("transcriber_both_s") - cli_s
    row = {"files": files_n, "audio_s": round(total, 1), "jobs": cores, "rounds": rounds,
           "rest_audio_s_per_s": round(total / rest_s, 2), "transcriber_audio_s_per_s": round(total / cli_s, 2),
           "transcriber_ratio": round(rest_s / cli_s, 3),
           "transcriber_ratio_rounds": [round(r["rest_s"] / r["transcriber_s"], 3) for r in runs],
           "more_audio_s": round(more_total, 1), "rest_more_audio_s_per_s": round(more_total / median("rest_more_s"), 2),
           "transcriber_added_audio_s_per_s": round(more_total / added, 2), "warm_ratio": round(statistics.median(warm), 3),
           "server_start_s": round(start_s, 2), "cold_ratio": round((start_s + rest_s) / cli_s, 3),
           "remote_ratio": round(rest_s / median("remote_s"), 3)}
    print("  ", row, flush=True)
    rows = [row]
    if large:
        big: list[dict[str, float]] = []
        for k in range(rounds):
            sides = (rest_large, in_process_large) if k % 2 == 0 else (in_process_large, rest_large)
            big.append({key: round(value, 3) for side in sides for key, value in side().items()})
            print(f"   large batch round {k + 1}/{rounds}: {big[-1]}, load {loadavg()}", flush=True)
        runs += big
        large_rest = statistics.median(r["rest_large_s"] for r in big)
        large_cli = statistics.median(r["transcriber_large_s"] for r in big)
        large_total = seconds(large)
        rows.append({"files": len(large), "audio_s": round(large_total, 1), "jobs": cores, "rounds": rounds,
                     "rest_audio_s_per_s": round(large_total / large_rest, 2),
                     "transcriber_audio_s_per_s": round(large_total / large_cli, 2),
                     "transcriber_ratio": round(large_rest / large_cli, 3),
                     "transcriber_ratio_rounds": [round(r["rest_large_s"] / r["transcriber_large_s"], 3) for r in big]})
        print("  ", rows[-1], flush=True)
    shutil.rmtree(work, ignore_errors=True)
    return {"rows": rows, "runs": runs,
            "baseline": "different recordings neither side decoded before; the REST route on a running server (default start-up "
                        "warm-up), as many requests at once as the transcriber's --jobs; the transcriber as a user runs it "
                        "(start-up and its recognizers' first utterances included). warm: what a second batch of as many other "
                        "recordings adds to the transcriber's time, against REST on that batch; cold: the server's start to "
                        "/ready plus REST, against the transcriber; remote: REST against the transcriber with --server "
                        "on a server of its own, started alike"}
