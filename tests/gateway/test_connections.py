"""The gateway's cap on client connections (speech_operator.gateway_connections), from raw sockets.

Before it the gateway served every connection it was given: each stalled one holds memory (a relayed
WebSocket stalled within a message about 1.1 MiB, bench/notes.md), so a few hundred took the pod past its
memory limit, and every client of every locale went with it. The upstream is the stand-in recognizer of
test_relay.py; the memory test runs the gateway in a process of its own (bench/gateway_memory.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from speech_operator.gateway import GatewayConfig, create_app, serving
from speech_operator.gateway_directory import Directory
from speech_operator.gateway_wake import HOLD_BUFFER_BYTES

from .conftest import ServiceDNS, speech_to_text
from .test_relay import USP, Rig, Upstream, upstream_behind_a_gateway

pytestmark = pytest.mark.unit  # no model, server, operator or browser: the quick run (README, Tests)

CAP = 3
ROOT = Path(__file__).resolve().parents[2]


@pytest_asyncio.fixture(loop_scope="function")
async def rig() -> AsyncIterator[Rig]:
    async with upstream_behind_a_gateway(GatewayConfig(max_connections=CAP)) as rig:
        yield rig


class Connection:
    """A raw connection to the gateway, sending plain ``GET``\\ s and reading their answers."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, rig: Rig) -> Connection:
        host, port = rig.gateway.split(":")
        return cls(*await asyncio.open_connection(host, int(port)))

    async def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        """The status, headers (lower-case names) and body of ``GET path`` on this connection."""
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: gateway\r\n\r\n".encode())
        head = (await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 5)).decode()
        lines = head.split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        body = await asyncio.wait_for(self.reader.readexactly(int(headers.get("content-length", "0"))), 5)
        return int(lines[0].split()[1]), headers, body

    async def closed_by_the_gateway(self) -> bool:
        """Whether the gateway closes this connection (within 3 s: it lingers up to 2 s after a refusal)."""
        try:
            return await asyncio.wait_for(self.reader.read(), 3) == b""
        except (TimeoutError, ConnectionError):
            return False

    def close(self) -> None:
        self.writer.close()


async def at_the_cap(rig: Rig) -> list[Connection]:
    """``CAP`` kept-alive connections, each served (``GET /``, the gateway's home page)."""
    kept = [await Connection.open(rig) for _ in range(CAP)]
    for c in kept:
        assert (await c.get("/"))[0] == 200
    return kept


async def metrics(rig: Rig) -> str:
    c = await Connection.open(rig)
    try:
        status, _, body = await c.get("/metrics")
        assert status == 200
        return body.decode()
    finally:
        c.close()


async def test_past_the_cap_a_request_or_websocket_is_refused_with_its_reason(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    kept = await at_the_cap(rig)
    extra = await Connection.open(rig)
    with caplog.at_level(logging.DEBUG, "speech_operator.gateway"):
        status, headers, body = await extra.get("/")
        assert status == 503 and headers["retry-after"] == "1" and headers["connection"] == "close", (status, headers)
        error = json.loads(body)["error"]
        assert error["code"] == "ServiceUnavailable" and "at most 3 open" in error["message"], error
        assert await extra.closed_by_the_gateway()
        async with aiohttp.ClientSession() as client, client.ws_connect(f"ws://{rig.gateway}{USP}", protocols=("USP",)) as ws:
            msg = await asyncio.wait_for(ws.receive(), 5)
            assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 1013, msg
            assert "too many connections" in msg.extra and "SPEECH_GATEWAY_MAX_CONNECTIONS" in msg.extra, msg.extra
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "MAX_CONNECTIONS" in r.getMessage()]
    assert len(warnings) == 1, "one line per interval, not one per refusal"
    text = await metrics(rig)
    assert 'speech_gateway_failures_total{reason="too_many_connections"} 2.0' in text
    assert "speech_gateway_connections 3.0" in text and "speech_gateway_connections_max 3.0" in text
    assert rig.upstream.headers == [], "nothing past the cap reached the recognizer"
    for c in kept:  # those within the cap are still served
        assert (await c.get("/"))[0] == 200
        c.close()


async def test_probes_and_scrapes_are_answered_at_the_cap_then_closed(rig: Rig) -> None:
    kept = await at_the_cap(rig)
    for path in ("/ready", "/status", "/metrics"):
        c = await Connection.open(rig)
        status, headers, _ = await c.get(path)
        assert status == 200 and headers["connection"] == "close", (path, status, headers)
        assert await c.closed_by_the_gateway(), f"{path}: a connection past the cap is closed after its answer"
    refused = await Connection.open(rig)
    assert (await refused.get("/"))[0] == 503
    for c in kept:
        c.close()


async def test_a_connection_that_leaves_frees_its_place(rig: Rig) -> None:
    kept = await at_the_cap(rig)
    refused = await Connection.open(rig)
    assert (await refused.get("/"))[0] == 503
    kept.pop().close()
    for _ in range(100):  # the gateway sees the close on its next turn
        if "speech_gateway_connections 1.0" in await metrics(rig):  # two kept, and the scrape's own
            break
        await asyncio.sleep(0.02)
    again = await Connection.open(rig)
    status, headers, _ = await again.get("/")
    assert status == 200 and headers.get("connection") != "close"
    async with aiohttp.ClientSession() as client:  # now full again: a WebSocket is refused; after a leave, relayed
        async with client.ws_connect(f"ws://{rig.gateway}{USP}", protocols=("USP",)) as ws:
            assert (await asyncio.wait_for(ws.receive(), 5)).data == 1013
        again.close()
        await asyncio.sleep(0.1)
        async with client.ws_connect(f"ws://{rig.gateway}{USP}", protocols=("USP",)) as ws:
            await ws.send_str("hello")
            assert (await asyncio.wait_for(ws.receive(), 5)).data == "hello"
    for c in kept:
        c.close()


def test_stalled_websockets_at_the_cap_stay_within_its_memory() -> None:
    """The hostile pattern: relayed WebSockets each stalled within a message of the largest size the gateway takes (its
    default), 60 of them against a cap of 20. The gateway (a process of its own) relays 20, and its RSS grows by about
    their messages (96 KiB each, bench/notes.md); before the cap it relayed all 60, and took messages of 1 MiB
    (1.1 MiB each)."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'recognizer'}:{ROOT / 'operator'}:{ROOT}"}
    out = subprocess.run([sys.executable, "-m", "bench.gateway_memory", "--kinds", "wsframe", "--counts", "60",
                          "--frame", str(GatewayConfig.max_message_bytes), "--env", "SPEECH_GATEWAY_MAX_CONNECTIONS=20"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    row = next(r for r in map(json.loads, out.stdout.splitlines()) if r.get("connections") == 60)
    assert row["relayed"] == 20, row
    assert row["rss_over_idle_mib"] < 20 * 0.2 + 6, row


async def test_a_websocket_message_over_the_limit_is_refused_1009() -> None:
    async with upstream_behind_a_gateway(GatewayConfig(max_message_bytes=4096)) as rig, aiohttp.ClientSession() as client:
        async with client.ws_connect(f"ws://{rig.gateway}{USP}", protocols=("USP",)) as ws:
            await ws.send_bytes(b"x" * 4096)  # the largest taken
            assert (await asyncio.wait_for(ws.receive(), 5)).data == b"x" * 4096
            await ws.send_bytes(b"x" * 4097)
            msg = await asyncio.wait_for(ws.receive(), 5)
            assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 1009, msg


def test_a_held_websocket_is_not_read_past_what_it_keeps() -> None:
    """30 WebSockets held for a locale at zero, each sending 3 MiB of 8 KiB messages: the gateway keeps 512 KiB of each
    (HOLD_BUFFER_BYTES) and then reads no more of it. Before, aiohttp read on into its own queue, 512 KiB more: 1.14-1.17
    MiB of RSS per held WebSocket (bench/notes.md), now 0.6-0.8."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'recognizer'}:{ROOT / 'operator'}:{ROOT}"}
    out = subprocess.run([sys.executable, "-m", "bench.gateway_memory", "--kinds", "wsheld", "--counts", "30"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    row = next(r for r in map(json.loads, out.stdout.splitlines()) if r.get("connections") == 30)
    assert row["kib_per_connection"] < 950, row


async def test_a_held_websocket_that_sent_more_than_it_keeps_is_relayed_whole_once_its_locale_wakes() -> None:
    """Its reading paused once it kept HOLD_BUFFER_BYTES, then resumed for the relay: every message reaches the
    recognizer, in order, and comes back (the stand-in echoes)."""
    upstream = Upstream()
    upstream.reading.set()
    app = web.Application()
    app.router.add_get("/speech/recognition/{mode}/cognitiveservices/v1", upstream.websocket)
    async with serving(app, "127.0.0.1", 0, 1) as upstream.port:
        directory = Directory()
        asleep = {**speech_to_text("ko-kr", "ko-KR", upstream.port, autoscaling={"minReplicas": 0, "maxReplicas": 1}),
                  "status": {"readyReplicas": 0}}
        directory.upsert(asleep)
        directory.synced = True
        async with serving(create_app(directory, GatewayConfig(), resolver=ServiceDNS()), "127.0.0.1", 0, 1) as port, \
                aiohttp.ClientSession() as client, client.ws_connect(f"ws://127.0.0.1:{port}{USP}", protocols=("USP",)) as ws:
            count, size = 2 * HOLD_BUFFER_BYTES // 8192, 8192
            for i in range(count):
                await ws.send_bytes(i.to_bytes(4, "big") * (size // 4))
            await asyncio.sleep(0.5)  # held: the gateway has kept its part and stopped reading
            directory.upsert({**asleep, "status": {"readyReplicas": 1}})
            for i in range(count):
                msg = await asyncio.wait_for(ws.receive(), 10)
                assert msg.data == i.to_bytes(4, "big") * (size // 4), (i, msg.type)
