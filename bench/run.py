"""``python -m bench [--quick] [--only streams,files,memory,overload,operator,colocation,allocator,gateway,transcriber,hostile]``: run, print, write docs/."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # python bench/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from bench import common, report
from bench.common import ROOT

SUITES = ("streams", "files", "memory", "overload", "operator", "colocation", "allocator", "gateway", "transcriber", "hostile")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer sizes, shorter audio (~5 minutes)")
    ap.add_argument("--only", default=",".join(SUITES), help="comma-separated suites")
    ap.add_argument("--out", default=str(ROOT / "docs"), help="where benchmarks.md/.json go")
    ap.add_argument("--report-only", action="store_true", help="rewrite benchmarks.md from benchmarks.json, run nothing")
    ap.add_argument("--transcriber-large", type=int, default=0, metavar="N",
                    help="the transcriber suite also compares the two on a batch of N further recordings (transcriber_ratio only)")
    ap.add_argument("--merge", action="store_true", help="keep the other suites' results already in benchmarks.json")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.report_only:
        (out / "benchmarks.md").write_text(report.markdown(json.loads((out / "benchmarks.json").read_text())))
        return
    only = [s for s in args.only.split(",") if s]
    # The bench's clients share the CPUs with the server they measure, so they run on uvloop, as the
    # server does: less of the machine goes to measuring (bench/notes.md, "The bench client's share").
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    quick = args.quick
    import vosk

    vosk.SetLogLevel(-1)
    from speech_recognizer.models import ModelRegistry

    work = Path(tempfile.mkdtemp(prefix="bench-"))
    audio = common.make_audio(work)
    cores = os.cpu_count() or 1
    result: dict[str, object] = {"mode": "quick" if quick else "full", "machine": common.machine(),
                                 "audio_seconds": round(audio.seconds, 2), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    if args.merge and (out / "benchmarks.json").exists():
        old = json.loads((out / "benchmarks.json").read_text())
        for key in (*SUITES, "durations_s", "loadavg_by_suite", "suite_started"):
            if key in old and key not in result:
                result[key] = old[key]
        result["merged_from"] = {"started": old.get("started"), "machine": old.get("machine"), "suites": [k for k in SUITES if k in old]}
    model = None
    if "streams" in only:
        model = ModelRegistry(work / "models", ("ko-KR",)).load("ko-KR").model

    out.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after every suite, so a later failure loses nothing
        (out / "benchmarks.json").write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")

    t_all = time.monotonic()
    for name in only:
        t0 = time.monotonic()
        print(f"== {name} (load average {common.loadavg()})", flush=True)
        result.setdefault("loadavg_by_suite", {})[name] = {"before": common.loadavg()}  # type: ignore[index]
        result.setdefault("suite_started", {})[name] = f"{time.strftime('%Y-%m-%d %H:%M')} (code {common.code_version()})"  # type: ignore[index]
        try:
            run_suite(name, quick, result, audio, model, cores, args.transcriber_large)
        except Exception as exc:  # noqa: BLE001 - reported, the other suites still run
            import traceback

            traceback.print_exc()
            result[name] = {"error": f"{type(exc).__name__}: {exc}"}
        result["loadavg_by_suite"][name]["after"] = common.loadavg()  # type: ignore[index]
        result.setdefault("durations_s", {})[name] = round(time.monotonic() - t0, 1)  # type: ignore[index]
        save()
    result["durations_s"]["total" if not args.merge else "total_last_invocation"] = round(time.monotonic() - t_all, 1)  # type: ignore[index]
    result["machine"]["loadavg_at_end"] = common.loadavg()  # type: ignore[index]
    save()
    md = report.markdown(result)
    (out / "benchmarks.md").write_text(md)
    print(md)


def run_suite(name: str, quick: bool, result: dict, audio: object, model: object, cores: int,
              transcriber_large: int = 0) -> None:
    from bench import suites

    if name == "streams":
        ns = [1, 2, 4, 8]  # the targets' N
        result["streams"] = suites.streams(audio, model, ns, cold_n=6, rounds=1 if quick else 3, pairs=1 if quick else 3,
                                           identical_ns=[max(ns)] if quick else ns)
    elif name == "files":
        result["files"] = suites.files(audio, cores, 4 if quick else 8, rounds=2 if quick else 4)
    elif name == "transcriber":
        result["transcriber"] = suites.transcriber(cores, 4 if quick else 24, rounds=2 if quick else 3,
                                                   large_n=transcriber_large)
    elif name == "memory":
        result["memory"] = suites.memory(audio, 3.0 if quick else 30.0)
    elif name == "overload":
        held = 6
        streams = result.get("streams")
        if isinstance(streams, dict):
            held = max(1, min(v for k, v in streams["largest_strict_n"].items() if k != "in-process") or 1)
        result["overload"] = suites.overload(audio, held)
    elif name == "operator":
        from bench import operator_bench

        result["operator"] = operator_bench.operator(200, 3.0)
    elif name == "colocation":
        from bench import colocation

        result["colocation"] = colocation.suite(audio, [1, 2], pairs=6 if quick else 15, warm_passes=suites.WARM_PASSES)
    elif name == "hostile":
        from bench import hostile

        result["hostile"] = hostile.suite(audio)
    elif name == "allocator":
        result["allocator"] = suites.allocator(audio, [1, 2], pairs=6 if quick else 15)
    elif name == "gateway":
        from bench import gateway_bench

        result["gateway"] = gateway_bench.suite(audio, [1, 4] if quick else [1, 2, 4, 6], pairs=2 if quick else 4,
                                                paced_n=4, rounds=2 if quick else 4, quick=quick)


if __name__ == "__main__":
    main()
