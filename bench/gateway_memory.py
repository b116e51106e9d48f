"""``python -m bench.gateway_memory``: the gateway's memory per connection, by kind of connection, on loopback.

The gateway runs in a process of its own (``--serve``, as ``speech-operator gateway`` runs: the default
asyncio loop, the same app, its settings from ``SPEECH_GATEWAY_*``), routing two locales to a stand-in
recognizer in this process: an aiohttp server that accepts each request and WebSocket and then reads
nothing more of a request's body (a recognizer busy elsewhere: aiohttp buffers what comes up to its
own bound, then the kernel's buffers fill, then the gateway's writes wait) and reads every WebSocket
message (an honest recognizer). Each kind of connection is opened ``--counts`` at a time (cumulative:
100, then 200 more, ...), raw sockets, against a fresh gateway; after each step the gateway's RSS,
its open files and the machine's TCP buffer pages (``/proc/net/sockstat``: kernel memory, charged to
a pod's memory cgroup too) are printed, one JSON line per step; with ``--idle-seconds``, also the CPU the gateway spent
in that many seconds with nothing sent (``idle_cpu_percent``, of one core: what connections cost it while they wait).

Kinds:

Each row says how many requests or WebSockets the stand-in has in progress (``relayed``).

- ``idle``: one ``GET /status`` answered, the connection kept alive;
- ``rest``: a REST recognition's head (``Content-Length`` 64 MiB) and ``--body`` bytes of it, then a stall;
- ``form``: an OpenAI form with its file first and no ``language`` (two locales routed: the gateway reads it
  ahead), ``--form-body`` bytes of it, then a stall;
- ``ws``: a relayed ``/vosk`` WebSocket, idle;
- ``wsheld``: a ``/vosk`` WebSocket for a locale at zero (held while it wakes, here for ever) that sends 3 MiB of
  ``--message`` byte messages (8 KiB), then stalls;
- ``wsflood``: a relayed ``/vosk`` WebSocket whose client sends ``--flood`` bytes (4 MiB) of ``--message`` byte messages at
  once, as fast as it can (a Speech SDK app transcribing a file), while the stand-in reads none of them (a recognizer
  behind): what the gateway holds of a stream faster than its recognizer;
- ``wsframe``: a relayed ``/vosk`` WebSocket that sends a binary frame's header saying ``--frame`` bytes less one (the
  largest message the gateway takes) and all of it but one byte, then stalls;
- ``unread``: ``--pipelined`` ``GET /metrics`` requests sent at once (about 3 KB answered each), no answer ever read:
  the answers wait in the gateway's send buffer (kernel memory, ``gateway_socket_mib``);
- ``pipelined``: a REST recognition whose body is all in (4 bytes; the stand-in holds it: a request in progress),
  then a second head pipelined behind it, unfinished: 127 headers of just under ``SPEECH_GATEWAY_MAX_HEADER_BYTES``
  (16 KiB) each, 2 MiB, each line within aiohttp's bound on one and the head never ended;
- ``queued``: the same request, then ``--pipelined`` whole requests pipelined behind it (at most 32 waiting are parsed),
  each with a head just under ``SPEECH_GATEWAY_MAX_HEADER_BYTES`` (16 KiB).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import resource
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
from aiohttp import web

from .common import child_on_a_port

LOCALES = ("ko-KR", "ja-JP")
KINDS = ("idle", "rest", "form", "ws", "wsflood", "wsframe", "wsheld", "unread", "pipelined", "queued")
#: A locale autoscaled to zero: what is sent for it is held while it wakes (never, here).
ASLEEP = "de-DE"
BOUNDARY = "bench-boundary"


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# ---- the gateway's process ------------------------------------------------------------------------
async def _serve(upstream_port: int) -> None:
    from speech_operator.gateway import GatewayConfig, create_app, serving
    from speech_operator.gateway_directory import Directory

    from .gateway_host import Loopback  # Service names resolve to 127.0.0.1, as gateway_bench's gateway has them

    _raise_nofile()
    directory = Directory()
    for locale in LOCALES:
        directory.upsert({"apiVersion": "speech-operator.io/v1alpha1", "kind": "SpeechToText",
                          "metadata": {"name": locale.lower(), "namespace": "bench"},
                          "spec": {"locale": locale, "eula": "accept", "service": {"port": upstream_port}},
                          "status": {"readyReplicas": 1}})
    directory.upsert({"apiVersion": "speech-operator.io/v1alpha1", "kind": "SpeechToText",
                      "metadata": {"name": ASLEEP.lower(), "namespace": "bench"},
                      "spec": {"locale": ASLEEP, "eula": "accept", "service": {"port": upstream_port},
                               "autoscaling": {"minReplicas": 0, "maxReplicas": 1}},
                      "status": {"readyReplicas": 0}})
    directory.synced = True
    config = dataclasses.replace(GatewayConfig.from_env(), host="127.0.0.1", port=0)
    async with serving(create_app(directory, config, resolver=Loopback()), "127.0.0.1", 0, 1) as port:
        print(json.dumps({"port": port}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the bench closes stdin


# ---- the stand-in recognizer ----------------------------------------------------------------------
#: Requests and WebSockets the stand-in has in progress: what the gateway relays now.
RELAYED = [0]
#: Whether the stand-in reads the WebSockets' messages (``wsflood``: it reads none).
READS = [True]


async def _slow_rest(request: web.Request) -> web.Response:
    RELAYED[0] += 1
    try:
        await asyncio.sleep(3600)  # reads nothing of the body: aiohttp buffers its first part, then stops reading
    finally:
        RELAYED[0] -= 1
    return web.Response()


async def _ws(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    RELAYED[0] += 1
    try:
        if not READS[0]:
            await asyncio.sleep(3600)
        async for _ in ws:
            pass
    finally:
        RELAYED[0] -= 1
    return ws


@contextlib.asynccontextmanager
async def stand_in() -> AsyncIterator[int]:
    app = web.Application()
    app.router.add_post("/{tail:.*}", _slow_rest)
    app.router.add_get("/{tail:.*}", _ws)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
    await site.start()
    try:
        yield site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


@contextlib.contextmanager
def gateway(upstream_port: int, env: dict[str, str]) -> Any:
    with child_on_a_port(["bench.gateway_memory", "--serve", str(upstream_port)], env) as (proc, said):
        yield proc, said["port"]


# ---- the clients ----------------------------------------------------------------------------------
def _masked_frame_head(length: int) -> bytes:
    return bytes([0x82, 0x80 | 127]) + struct.pack("!Q", length) + b"\0\0\0\0"  # binary, FIN; mask of zeros


async def _upgrade(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int, locale: str = "ko-KR") -> None:
    writer.write((f"GET /vosk?language={locale} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(head.decode(errors="replace").splitlines()[0])


async def open_one(kind: str, port: int, body: int, form_body: int, frame: int, message: int = 8192,
                   pipelined: int = 300, flood: int = 4 << 20) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if kind == "unread":
        writer.write(f"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode() * pipelined)
    elif kind == "idle":
        writer.write(f"GET /status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
        await reader.readexactly(length)
    elif kind == "rest":
        writer.write((f"POST /speech/recognition/conversation/cognitiveservices/v1?language=ko-KR HTTP/1.1\r\n"
                      f"Host: 127.0.0.1:{port}\r\nContent-Type: audio/wav\r\nContent-Length: {64 << 20}\r\n\r\n").encode())
        writer.write(b"\0" * body)
    elif kind == "form":
        part = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
                "Content-Type: audio/wav\r\n\r\n").encode()
        writer.write((f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                      f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {64 << 20}\r\n\r\n").encode())
        writer.write(part + b"\0" * (form_body - len(part)))
    elif kind in ("ws", "wsframe"):
        await _upgrade(reader, writer, port)
        if kind == "wsframe":
            writer.write(_masked_frame_head(frame - 1) + b"\0" * (frame - 2))
    elif kind in ("pipelined", "queued"):
        rest = (f"POST /speech/recognition/conversation/cognitiveservices/v1?language=ko-KR HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{port}\r\nContent-Type: audio/wav\r\n").encode()
        writer.write(rest + b"Content-Length: 4\r\n\r\nRIFF")  # in progress: the stand-in never answers it
        line = 16384 - 64  # one header line just under the head's bound (and aiohttp's on one line)
        if kind == "pipelined":
            writer.write(rest + b"".join(b"X-%03d: %s\r\n" % (i, b"a" * (line - 9)) for i in range(127)))  # never ended
        else:
            writer.write((rest + b"Content-Length: 0\r\nX-Pad: " + b"a" * (line - len(rest) - 200) + b"\r\n\r\n") * pipelined)
    elif kind == "wsflood":
        await _upgrade(reader, writer, port)
        writer.write((_masked_frame_head(message) + b"\0" * message) * -(-flood // message))
    elif kind == "wsheld":
        await _upgrade(reader, writer, port, ASLEEP)
        writer.write((_masked_frame_head(message) + b"\0" * message) * -(-(3 << 20) // message))  # 3 MiB of them
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(writer.drain(), 2)
    return reader, writer


def sockstat_pages() -> int:
    """TCP buffer pages in use on the machine (``/proc/net/sockstat``'s ``TCP: ... mem``)."""
    for line in Path("/proc/net/sockstat").read_text().splitlines():
        if line.startswith("TCP:"):
            fields = line.split()
            return int(fields[fields.index("mem") + 1])
    return 0


def socket_bytes(pid: int) -> int:
    """Kernel memory of ``pid``'s TCP sockets (``ss -tmp``: each one's receive and send queues and reserve, ``r``,
    ``w``, ``f`` of ``skmem``), what a cgroup-v2 memory limit charges to the pod besides its RSS."""
    out = subprocess.run(["ss", "-tmnpH"], capture_output=True, text=True).stdout.splitlines()
    total, mine = 0, False
    for line in out:
        if "users:(" in line:
            mine = f"pid={pid}," in line
        if mine and "skmem:(" in line:
            fields = dict((f[0], int(f[1:])) for f in line.split("skmem:(")[1].split(")")[0].split(",") if f[:1] in "rwf" and f[1:].isdigit())
            total += fields.get("r", 0) + fields.get("w", 0) + fields.get("f", 0)
            mine = False
    return total


async def idle_cpu_percent(process: psutil.Process, seconds: float) -> float:
    """The CPU ``process`` spends in ``seconds`` (user and system, all its threads), in percent of one core."""
    before, started = process.cpu_times(), time.monotonic()
    await asyncio.sleep(seconds)
    after = process.cpu_times()
    spent = (after.user - before.user) + (after.system - before.system)
    return round(100 * spent / (time.monotonic() - started), 2)


async def measure(kind: str, counts: list[int], env: dict[str, str], body: int, form_body: int, frame: int,
                  message: int = 8192, pipelined: int = 300, flood: int = 4 << 20,
                  idle_seconds: float = 0) -> list[dict[str, Any]]:
    rows = []
    READS[0] = kind != "wsflood"
    async with stand_in() as upstream:
        with gateway(upstream, env) as (proc, port):
            gw = psutil.Process(proc.pid)
            await asyncio.sleep(1)
            base_rss, base_pages = gw.memory_info().rss, sockstat_pages()
            held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
            refused = 0
            for n in counts:
                while len(held) + refused < n:
                    batch = min(50, n - len(held) - refused)
                    got = await asyncio.gather(*(open_one(kind, port, body, form_body, frame, message, pipelined, flood) for _ in range(batch)), return_exceptions=True)
                    held += [g for g in got if not isinstance(g, BaseException)]
                    refused += sum(isinstance(g, BaseException) for g in got)
                await asyncio.sleep(1.5)
                rss, pages = gw.memory_info().rss, sockstat_pages()
                row = {"kind": kind, "connections": n, "relayed": RELAYED[0], "refused": refused,
                       "rss_mib": round(rss / 2**20, 1), "rss_over_idle_mib": round((rss - base_rss) / 2**20, 1),
                       "kib_per_connection": round((rss - base_rss) / 1024 / max(1, n), 1),
                       "gateway_fds": gw.num_fds(), "gateway_socket_mib": round(socket_bytes(proc.pid) / 2**20, 2),
                       "tcp_buffer_mib": round((pages - base_pages) * 4096 / 2**20, 1),
                       "env": env}
                if idle_seconds:
                    row["idle_cpu_percent"] = await idle_cpu_percent(gw, idle_seconds)
                print(json.dumps(row), flush=True)
                rows.append(row)
            for _, w in held:
                w.close()
            await asyncio.sleep(2)
            print(json.dumps({"kind": kind, "closed_all": True, "rss_mib": round(gw.memory_info().rss / 2**20, 1),
                              "gateway_fds": gw.num_fds()}), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", type=int, metavar="UPSTREAM_PORT", help=argparse.SUPPRESS)
    parser.add_argument("--kinds", default=",".join(KINDS), help="kinds of connection, comma-separated (default: all)")
    parser.add_argument("--counts", default="100,300,1000", help="connections held after each step (cumulative)")
    parser.add_argument("--body", type=int, default=2 << 20, help="bytes of a REST body sent before the stall (2 MiB)")
    parser.add_argument("--form-body", type=int, default=60 << 10, help="bytes of an OpenAI form sent before the stall (60 KiB)")
    parser.add_argument("--frame", type=int, default=1 << 20,
                        help="wsframe: the largest message the gateway takes (SPEECH_GATEWAY_MAX_MESSAGE_BYTES; 1 MiB before it)")
    parser.add_argument("--message", type=int, default=8192,
                        help="wsheld, wsflood: bytes of each message sent (8 KiB; at most SPEECH_GATEWAY_MAX_MESSAGE_BYTES)")
    parser.add_argument("--flood", type=int, default=4 << 20, help="wsflood: bytes of messages each client sends (4 MiB)")
    parser.add_argument("--pipelined", type=int, default=300, help="unread: GET /metrics requests sent on each connection (300)")
    parser.add_argument("--idle-seconds", type=float, default=0,
                        help="after each step, the gateway's CPU over this many seconds with nothing sent (0: not measured)")
    parser.add_argument("--env", action="append", default=[], metavar="SPEECH_GATEWAY_X=V", help="a gateway setting")
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve(args.serve))
        return
    _raise_nofile()
    env = dict(item.split("=", 1) for item in args.env)
    counts = [int(c) for c in args.counts.split(",")]
    started = time.monotonic()
    for kind in args.kinds.split(","):
        asyncio.run(measure(kind, counts, env, args.body, args.form_body, args.frame, args.message, args.pipelined, args.flood,
                            args.idle_seconds))
    print(json.dumps({"seconds": round(time.monotonic() - started, 1)}), flush=True)


if __name__ == "__main__":
    main()
