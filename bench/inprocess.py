"""``python -m bench.inprocess``: in-process Vosk in its own process, driven over stdin/stdout.

The throughput baseline runs here rather than in the bench process, so that
each round of the suite compares a fresh server with a fresh baseline process,
and the bench's own client work never shares a process with it. Its first argument
is one WAV or several, comma-separated: stream ``i`` of a run speaks the ``i``-th
(cycling). Commands, one per line:
``<n>`` runs n unpaced streams at once on n threads and prints
``{"wall": s, "cpu": s, "audio": s}``; ``files <n> <count>`` decodes ``count`` files on n
threads without intermediate results (as the REST route does) and prints the same; ``fastbins on|off``
sets glibc's fastbins (the server turns them off) and prints ``{}``; ``quit`` ends. Fastbins are on
(glibc's default, as in any program using Vosk) unless told otherwise.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import sys
import tempfile
from pathlib import Path

#: glibc's default fastbin limit on 64-bit systems, in bytes.
GLIBC_DEFAULT_FASTBIN_LIMIT = 128


def set_fastbin_limit(limit: int) -> None:
    """Serve requests up to ``limit`` bytes from glibc's fastbins (0: none), process-wide, as
    ``speech_recognizer.heap.disable_fastbins`` does with 0: the baseline measures both."""
    from speech_recognizer.heap import M_MXFAST

    mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    if not mallopt(M_MXFAST, limit):
        raise OSError(f"mallopt(M_MXFAST, {limit}) failed")


def main() -> None:
    if __package__ in (None, ""):
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import vosk

    vosk.SetLogLevel(-1)
    from bench import common
    from bench.clients import InProcess
    from speech_recognizer.models import ModelRegistry

    wavs, warm = [Path(p) for p in sys.argv[1].split(",")], int(sys.argv[2])
    passes = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    partials = sys.argv[4] != "no-partials" if len(sys.argv) > 4 else True
    recordings = []
    for wav in wavs:
        pcm, rate, _ = common.read_wav(wav)
        recordings.append(common.Audio(pcm, rate, wav))
    audio = recordings[0]
    loaded = ModelRegistry(Path(tempfile.mkdtemp(prefix="bench-inproc-")), ("ko-KR",)).load("ko-KR")
    inproc = InProcess(loaded.model, loaded.sample_rate)
    inproc.warm(recordings, warm, passes, partials=partials)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "quit":
            break
        if cmd.startswith("fastbins "):
            set_fastbin_limit(GLIBC_DEFAULT_FASTBIN_LIMIT if cmd.split()[1] == "on" else 0)
            print("{}", flush=True)
            continue
        c0 = common.cpu_seconds()
        if cmd.startswith("files "):
            n, count = (int(x) for x in cmd.split()[1:])
            wall = inproc.files(audio, n, count)
            done = count * audio.seconds
        else:
            n = int(cmd)
            _, wall = inproc.run(recordings, n, paced=False)
            done = sum(recordings[i % len(recordings)].seconds for i in range(n))
        print(json.dumps({"wall": wall, "cpu": common.cpu_seconds() - c0, "audio": done}), flush=True)


if __name__ == "__main__":
    main()
