"""``python -m bench.chunked_bodies``: what a chunked REST body costs the recognizer's event loop, by what its chunks hold.

A server with a pod's defaults (``python -m speech_recognizer``, a process of its own) gets REST recognitions
(``POST /speech/recognition/conversation/cognitiveservices/v1?language=ko-KR``) with ``Transfer-Encoding: chunked``
bodies of each kind below, one at a time on a fresh connection, each sent whole by a raw socket and its answer read.
For each, the CPU seconds (user + system) of the server's main thread (the event loop: what parses the body, between
the decoders' turns) and of the whole process, over the request; the median of ``--runs``.

Kinds (``--mib`` MiB of body data each, the REST route's limit for a body that is not WAV being MaxAudioSeconds of
the widest audio, 60 s x 384000 bytes, about 23 MB; a WAV body's, 60 s of its own format):

- ``crlf``: 64 KiB chunks of ``CRLF CRLF`` repeated (not audio: answered 400 once read);
- ``wav``: WAV audio (16 kHz mono, the bench sentences repeated, at most 55 s: 1.7 MiB) in 64 KiB chunks, recognized;
- ``onebyte``: 1-byte chunks (``1 CRLF X CRLF``), 6 bytes sent per byte of body (400 once read);
- ``length``: the ``crlf`` data with a ``Content-Length`` instead (for comparison).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import statistics
import time
import wave
from pathlib import Path
from tempfile import mkdtemp

from .common import Server, cpu_seconds, make_audio, server

REST = "/speech/recognition/conversation/cognitiveservices/v1?language=ko-KR"
CHUNK = 64 << 10
_TICK = os.sysconf("SC_CLK_TCK")


def thread_cpu_seconds(pid: int, tid: int | None = None) -> float:
    """CPU seconds (user + system) of one thread of ``pid`` (its main thread by default), from /proc."""
    fields = Path(f"/proc/{pid}/task/{tid or pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def chunked(data: bytes, size: int) -> bytes:
    """``data`` as a chunked body of ``size``-byte chunks, its last chunk and the empty trailer."""
    return b"".join(b"%x\r\n" % len(data[at:at + size]) + data[at:at + size] + b"\r\n" for at in range(0, len(data), size)) + b"0\r\n\r\n"


def head(*, content_length: int | None = None) -> bytes:
    framing = b"Transfer-Encoding: chunked" if content_length is None else b"Content-Length: %d" % content_length
    return (b"POST " + REST.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: audio/wav\r\nConnection: close\r\n"
            + framing + b"\r\n\r\n")


def wav_audio(mib: float, seconds: float = 55.0) -> bytes:
    """The bench sentences as a WAV, repeated to ``mib`` MiB or ``seconds`` (under MaxAudioSeconds), whichever is less."""
    audio = make_audio(Path(mkdtemp(prefix="chunked-bodies-")))
    want = min(int(mib * 2**20), int(seconds * audio.rate) * 2)
    pcm = (audio.pcm * (want // len(audio.pcm) + 1))[:want]
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(audio.rate)
        w.writeframes(pcm)
    return out.getvalue()


def requests(mib: float) -> dict[str, bytes]:
    crlf = b"\r\n\r\n" * int(mib * 2**18)
    return {
        "crlf": head() + chunked(crlf, CHUNK),
        "wav": head() + chunked(wav_audio(mib), CHUNK),
        "onebyte": head() + chunked(b"X" * int(mib * 2**20), 1),
        "length": head(content_length=len(crlf)) + crlf,
    }


def post(srv: Server, data: bytes) -> tuple[int, float]:
    """Send ``data`` whole, read the answer to the close: its status and the seconds it took."""
    started = time.monotonic()
    answer = bytearray()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=120) as sock:
        sock.sendall(data)
        while got := sock.recv(1 << 16):
            answer += got
    return int(answer[9:12]), time.monotonic() - started


def measure(srv: Server, data: bytes, runs: int) -> dict[str, object]:
    loop_cpu, process_cpu, seconds, answers = [], [], [], set()
    for _ in range(runs):
        loop0, proc0 = thread_cpu_seconds(srv.pid), cpu_seconds(srv.pid)
        status, took = post(srv, data)
        time.sleep(0.2)  # the answer's last callbacks
        loop_cpu.append(thread_cpu_seconds(srv.pid) - loop0)
        process_cpu.append(cpu_seconds(srv.pid) - proc0)
        seconds.append(took)
        answers.add(status)
    return {"sent_mib": round(len(data) / 2**20, 2), "status": sorted(answers),
            "loop_cpu_s": round(statistics.median(loop_cpu), 3), "process_cpu_s": round(statistics.median(process_cpu), 3),
            "seconds": round(statistics.median(seconds), 2), "loop_cpu_runs": [round(c, 2) for c in loop_cpu]}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.chunked_bodies", description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=float, nargs="+", default=[1.0, 4.0], help="MiB of body data per request")
    parser.add_argument("--kinds", nargs="+", default=["crlf", "wav", "onebyte", "length"])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with server() as srv:
        for mib in args.mib:
            made = requests(mib)
            for kind in args.kinds:
                print(json.dumps({"kind": kind, "mib": mib, **measure(srv, made[kind], args.runs)}), flush=True)


if __name__ == "__main__":
    main()
