"""``python -m bench [--quick] [--only streams,files,memory,overload,operator]``: run, print, write docs/."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # python bench/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from bench import common, report  # noqa: E402
from bench.common import ROOT  # noqa: E402

SUITES = ("streams", "files", "memory", "overload", "operator")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer sizes, shorter audio (~5 minutes)")
    ap.add_argument("--only", default=",".join(SUITES), help="comma-separated suites")
    ap.add_argument("--out", default=str(ROOT / "docs"), help="where benchmarks.md/.json go")
    args = ap.parse_args(argv)
    only = [s for s in args.only.split(",") if s]
    import vosk

    vosk.SetLogLevel(-1)
    from speech_recognizer.models import ModelRegistry

    work = Path(tempfile.mkdtemp(prefix="bench-"))
    audio = common.make_audio(work)
    cores = os.cpu_count() or 1
    result: dict[str, object] = {"mode": "quick" if args.quick else "full", "machine": common.machine(),
                                 "audio_seconds": round(audio.seconds, 2), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    model = None
    if {"streams", "files"} & set(only):
        model = ModelRegistry(work / "models", ("ko-KR",)).load("ko-KR").model
    from bench import suites

    t_all = time.monotonic()
    for name in only:
        t0 = time.monotonic()
        print(f"== {name}", flush=True)
        if name == "streams":
            ns = [1, 2, 6] if args.quick else [1, 2, 4, 6, 8]
            result["streams"] = suites.streams(audio, model, ns, stagger_ns=[6] if args.quick else [2, 6, 8], cold_n=6)
        elif name == "files":
            result["files"] = suites.files(audio, model, cores, 4 if args.quick else 8)
        elif name == "memory":
            result["memory"] = suites.memory(audio, 3.0 if args.quick else 30.0)
        elif name == "overload":
            held = 6
            streams = result.get("streams")
            if isinstance(streams, dict):
                held = max(1, min(streams["largest_strict_n"].values()) or 1)
            result["overload"] = suites.overload(audio, held)
        elif name == "operator":
            from bench import operator_bench

            result["operator"] = operator_bench.operator(200, 3.0 if args.quick else 5.0)
        result.setdefault("durations_s", {})[name] = round(time.monotonic() - t0, 1)  # type: ignore[index]
    result["durations_s"]["total"] = round(time.monotonic() - t_all, 1)  # type: ignore[index]
    result["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]  # type: ignore[index]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmarks.json").write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    md = report.markdown(result)
    (out / "benchmarks.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
