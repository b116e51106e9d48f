"""``python -m bench.inprocess``: in-process Vosk in its own process, driven over stdin/stdout.

The throughput baseline runs here rather than in the bench process, so that
each round of the suite compares a fresh server with a fresh baseline process,
and the bench's own client work never shares a process with it. Commands, one per line:
``<n>`` runs n unpaced streams at once on n threads and prints
``{"wall": s, "cpu": s, "audio": s}``; ``files <n> <count>`` decodes ``count`` files on n
threads without intermediate results (as the REST route does) and prints the same; ``fastbins on|off``
sets glibc's fastbins (the server turns them off) and prints ``{}``; ``quit`` ends. Fastbins are on
(glibc's default, as in any program using Vosk) unless told otherwise.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path


def main() -> None:
    if __package__ in (None, ""):
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import vosk

    vosk.SetLogLevel(-1)
    from bench import common
    from bench.clients import InProcess
    from speech_recognizer import heap
    from speech_recognizer.models import ModelRegistry

    wav, warm = Path(sys.argv[1]), int(sys.argv[2])
    passes = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    partials = sys.argv[4] != "no-partials" if len(sys.argv) > 4 else True
    pcm, rate, _ = common.read_wav(wav)
    audio = common.Audio(pcm, rate, wav)
    model = ModelRegistry(Path(tempfile.mkdtemp(prefix="bench-inproc-")), ("ko-KR",)).load("ko-KR").model
    inproc = InProcess(model, rate)
    inproc.warm(audio, warm, passes, partials=partials)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "quit":
            break
        if cmd.startswith("fastbins "):
            heap.set_fastbin_limit(heap.GLIBC_DEFAULT_FASTBIN_LIMIT if cmd.split()[1] == "on" else 0)
            print("{}", flush=True)
            continue
        c0 = common.cpu_seconds()
        if cmd.startswith("files "):
            n, count = (int(x) for x in cmd.split()[1:])
            wall = inproc.files(audio, n, count)
            done = count
        else:
            done = n = int(cmd)
            _, wall = inproc.run(audio, n, paced=False)
        print(json.dumps({"wall": wall, "cpu": common.cpu_seconds() - c0, "audio": done * audio.seconds}), flush=True)


if __name__ == "__main__":
    main()
