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
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from harness.usp import client_text_frame
from speech_operator.gateway import GatewayConfig, create_app, serving
from speech_operator.gateway_directory import Directory
from speech_operator.gateway_wake import HOLD_BUFFER_BYTES
from speech_recognizer import errors
from speech_recognizer.usp.frames import READING_END_PATH, parse_text

from .conftest import ServiceDNS, speech_to_text
from .test_relay import REST, USP, Rig, Upstream, upstream_behind_a_gateway

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
        return await self.answer()

    async def begin_post(self) -> None:
        """A chunked REST ``POST`` whose body has begun and is not over: a request in progress (relayed)."""
        self.writer.write(f"POST {REST} HTTP/1.1\r\nHost: gateway\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nRIFF\r\n".encode())
        await self.writer.drain()

    async def end_post(self) -> tuple[int, dict[str, str], bytes]:
        """The end of :meth:`begin_post`'s body, and the answer."""
        self.writer.write(b"0\r\n\r\n")
        return await self.answer()

    async def answer(self) -> tuple[int, dict[str, str], bytes]:
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
    """``CAP`` connections each with a request in progress (a REST body begun and not over: :meth:`Connection.begin_post`);
    idle ones would make room for a new one (:func:`test_idle_kept_alive_connections_make_room_the_longest_idle_first`)."""
    kept = [await Connection.open(rig) for _ in range(CAP)]
    for c in kept:
        await c.begin_post()
    for _ in range(100):  # each body has reached the recognizer: each request is in progress
        if len(rig.upstream.headers) == CAP:
            break
        await asyncio.sleep(0.02)
    assert len(rig.upstream.headers) == CAP
    return kept


async def served_and_closed(kept: list[Connection]) -> None:
    """Each of ``kept`` (:func:`at_the_cap`) ends its body and is answered, then closes."""
    for c in kept:
        assert (await c.end_post())[0] == 200
        c.close()


async def refused_usp(client: aiohttp.ClientSession, rig: Rig) -> aiohttp.WSMessage:
    """A Speech SDK connection past the cap, which begins its request as the SDKs do at once: told first by a message
    that names the kind, then closed 4429 with the reason (``TooManyRequests`` to the Python SDK, asked once:
    errors.CORE_CLOSES; as a recognizer at its MaxConnections); that close."""
    async with client.ws_connect(f"ws://{rig.gateway}{USP}", protocols=("USP",)) as ws:
        request_id = uuid.uuid4().hex
        await ws.send_str(client_text_frame("speech.context", request_id, {}))
        said = []
        while (msg := await asyncio.wait_for(ws.receive(), 5)).type is aiohttp.WSMsgType.TEXT:
            said.append(parse_text(msg.data))
    assert [(m.path, m.headers.get(errors.FAILURE_HEADER.lower())) for m in said] == [(READING_END_PATH, "too_many_connections")], said
    return msg


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
        async with aiohttp.ClientSession() as client:
            msg = await refused_usp(client, rig)
            assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == errors.TOO_MANY_REQUESTS_CLOSE, msg
            assert "too many connections" in msg.extra and "SPEECH_GATEWAY_MAX_CONNECTIONS" in msg.extra, msg.extra
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "MAX_CONNECTIONS" in r.getMessage()]
    assert len(warnings) == 1, "one line per interval, not one per refusal"
    text = await metrics(rig)
    assert 'speech_gateway_failures_total{locale="-",reason="too_many_connections"} 2.0' in text
    assert "speech_gateway_connections 3.0" in text and "speech_gateway_connections_max 3.0" in text
    assert len(rig.upstream.headers) == CAP, "nothing past the cap reached the recognizer"
    await served_and_closed(kept)  # those within the cap are still served


async def test_probes_and_scrapes_are_answered_at_the_cap_then_closed(rig: Rig) -> None:
    kept = await at_the_cap(rig)
    for path in ("/ready", "/status", "/metrics"):
        c = await Connection.open(rig)
        status, headers, _ = await c.get(path)
        assert status == 200 and headers["connection"] == "close", (path, status, headers)
        assert await c.closed_by_the_gateway(), f"{path}: a connection past the cap is closed after its answer"
    refused = await Connection.open(rig)
    assert (await refused.get("/"))[0] == 503
    await served_and_closed(kept)


async def test_a_connection_that_leaves_frees_its_place(rig: Rig) -> None:
    kept = await at_the_cap(rig)
    refused = await Connection.open(rig)
    assert (await refused.get("/"))[0] == 503
    kept.pop().close()
    await asyncio.sleep(0.1)  # the gateway sees the close on its next turn
    again = await Connection.open(rig)
    await again.begin_post()
    status, headers, _ = await again.end_post()
    assert status == 200 and headers.get("connection") != "close"
    await again.begin_post()  # in progress again
    async with aiohttp.ClientSession() as client:  # now full again: a WebSocket is refused; after a leave, relayed
        assert (await refused_usp(client, rig)).data == errors.TOO_MANY_REQUESTS_CLOSE
        again.close()
        await asyncio.sleep(0.1)
        async with client.ws_connect(f"ws://{rig.gateway}{USP}", protocols=("USP",)) as ws:
            await ws.send_str("hello")
            assert (await asyncio.wait_for(ws.receive(), 5)).data == "hello"
    await served_and_closed(kept)


async def test_past_the_cap_at_most_as_many_again_are_read_the_one_open_longest_closed_first(rig: Rig) -> None:
    """Connections past the cap are read for their one answer. A flood of them each sending a head of almost 16 KiB and
    never ending it held the gateway's memory for 10 s each, as many as came (bench/notes.md: 2000 took 70 MiB). Now at
    most CAP are open past the cap: a newer one closes the one open longest, without an answer; a probe, whose head
    comes at once, is still answered."""
    kept = await at_the_cap(rig)
    past = []
    for _ in range(CAP + 2):
        c = await Connection.open(rig)
        c.writer.write(b"GET /status HTTP/1.1\r\nX-Slow: " + b"a" * 4000)  # a head begun, never ended
        past.append(c)
        await asyncio.sleep(0.05)  # each open from a later moment
    assert await gone(past[0]) and await gone(past[1]), "the two open longest past the cap were closed"
    past[-1].writer.write(b"\r\nHost: gateway\r\n\r\n")
    status, headers, _ = await past[-1].answer()
    assert status == 200 and headers["connection"] == "close", (status, headers)  # a probe past the cap: answered
    text = await metrics(rig)  # past the cap too, where the probe's place is free again: nothing closed for it
    assert "speech_gateway_connections_closed_past_cap_total 2.0" in text, text
    assert not await gone(past[2]) and not await gone(past[3]), "the newer ones are kept (until their head is due)"
    for c in past:
        c.close()
    await served_and_closed(kept)


async def test_a_burst_of_new_connections_each_gets_an_answer(rig: Rig) -> None:
    """Connections accepted together (one turn of the event loop: a burst of clients, or every client coming back after a
    restart) have had nothing read yet, though their requests have come: they are not idle ones to close for a newer one.
    Before, each past the cap closed one of those before it: CAP + 2 clients sending a request at once, the first two
    were closed without an answer (a reset: their requests unread), the others served; now the two past the cap get 503
    with the reason, the others are served."""
    host, port = rig.gateway.split(":")
    burst = []
    for _ in range(CAP + 2):  # connected and sent before the gateway's loop runs: accepted in one turn
        sock = socket.create_connection((host, int(port)))
        sock.sendall(b"GET / HTTP/1.1\r\nHost: gateway\r\n\r\n")
        burst.append(sock)
    answers = []
    for sock in burst:
        c = Connection(*await asyncio.open_connection(sock=sock))
        try:
            answers.append((await c.answer())[0])
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            answers.append(type(exc).__name__)
        c.close()
    assert sorted(answers, key=str) == [200] * CAP + [503] * 2, answers


async def gone(c: Connection) -> bool:
    """Whether the gateway has closed ``c`` (at once: nothing to read, no linger), with a FIN or, an idle one, a reset."""
    try:
        return await asyncio.wait_for(c.reader.read(), 1) == b""
    except ConnectionResetError:
        return True
    except (TimeoutError, ConnectionError):
        return False


async def test_idle_kept_alive_connections_make_room_the_longest_idle_first(rig: Rig) -> None:
    """One client holding the cap's worth of kept-alive connections, each answered once and then silent, does not lock
    others out: a new one closes the one idle longest and is served (before: 503 until the 75 s keep-alive ran out)."""
    idle = []
    for _ in range(CAP):
        c = await Connection.open(rig)
        assert (await c.get("/status"))[0] == 200
        idle.append(c)
        await asyncio.sleep(0.05)  # each idle from a later moment: the first is idle longest
    assert (await idle[0].get("/status"))[0] == 200  # answered again: now the second is idle longest
    extra = await Connection.open(rig)
    status, headers, _ = await extra.get("/")
    assert status == 200 and headers.get("connection") != "close", (status, headers)
    assert await gone(idle[1]), "the connection idle longest was closed"
    for c in (idle[0], idle[2], extra):  # the others are still served, kept alive
        status, headers, _ = await c.get("/status")
        assert status == 200 and headers.get("connection") != "close"
    text = await metrics(rig)  # its connection made room too
    assert "speech_gateway_idle_connections_closed_total 2.0" in text and "speech_gateway_connections 3.0" in text, text
    # of the three, the scrape's own is busy; the two others kept alive idle give way (no near-cap alert for them)
    assert "speech_gateway_idle_connections 2.0" in text, text
    assert 'reason="too_many_connections"' not in text
    for c in (*idle, extra):
        c.close()


async def test_an_idle_connection_closed_to_make_room_is_reset_unless_its_answers_are_still_on_their_way(rig: Rig) -> None:
    """An idle connection closed to make room is reset, not closed with a FIN: a proxy that pools connections (nginx)
    finds a reset connection failed before it sends a request on it and tries a new one, where after a FIN it sent a
    POST and answered 502 (test_ingress_nginx.py). One whose answers its client has not all taken yet (a slow reader's:
    here 10 pipelined scrapes, its receive buffer 4 KiB, read by none) is closed with a FIN after them, as before: a
    reset would have destroyed what was not yet acknowledged."""
    host, port = rig.gateway.split(":")
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect((host, int(port)))
    slow.sendall(b"GET /metrics HTTP/1.1\r\nHost: gateway\r\n\r\n" * 10)
    for _ in range(100):  # all 10 answered: what the client's buffer has no room for waits in the gateway's send queue
        (queue,) = skmem(f"sport = :{port} and dport = :{slow.getsockname()[1]}")
        if queue["w"] > 10_000:
            break
        await asyncio.sleep(0.05)
    assert queue["w"] > 10_000, queue
    await asyncio.sleep(0.1)  # its handler waits for the next head: idle
    idle = []
    for _ in range(CAP - 1):
        c = await Connection.open(rig)
        assert (await c.get("/status"))[0] == 200
        idle.append(c)
    extra = await Connection.open(rig)  # closes the slow reader's (idle longest, and its answers unread)
    assert (await extra.get("/status"))[0] == 200
    reader = Connection(*await asyncio.open_connection(sock=slow))
    answers = await asyncio.wait_for(reader.reader.read(), 5)  # every answer, then the FIN
    assert answers.count(b"HTTP/1.1 200 OK") == 10 and answers.endswith(b"\n"), answers[-200:]
    newer = await Connection.open(rig)  # closes the next idle longest, which has nothing on its way: a reset
    assert (await newer.get("/status"))[0] == 200
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(idle[0].reader.read(), 5)
    for c in (reader, *idle, extra, newer):
        c.close()


async def test_a_slow_reader_makes_room_before_a_connection_idle_longer_that_read_its_answer(rig: Rig) -> None:
    """A kept-alive client answered and done reading (idle longest), a slow reader with 10 pipelined scrapes read by none
    (its receive buffer 4 KiB: idle, its answers waiting unsent in the gateway's buffers), and a scraper with a head begun
    (busy). A new connection closes the slow reader's (speech_recognizer.connection_cap's rule: one whose answers its
    client is not taking in first): it gets its 10 answers, then a FIN; the kept-alive client is still served. Before, the
    one idle longest was closed (a reset), the slow reader kept its place. The recognizer's twin is
    tests/recognizer/test_http_connection_cap.py."""
    host, port = rig.gateway.split(":")
    kept, scraper = await Connection.open(rig), await Connection.open(rig)
    assert (await kept.get("/status"))[0] == 200
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect((host, int(port)))
    slow.sendall(b"GET /metrics HTTP/1.1\r\nHost: gateway\r\n\r\n" * 10)
    for _ in range(100):  # answers wait in its send queue (its requests were read), then it is idle with kept: all answered
        if skmem(f"sport = :{port} and dport = :{slow.getsockname()[1]}")[0]["w"] and \
                "speech_gateway_idle_connections 2.0" in (await scraper.get("/metrics"))[2].decode():
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the slow reader's 10 answers were never all written")
    scraper.writer.write(b"GET /status HTTP/1.1\r\n")  # busy: a head begun
    await scraper.writer.drain()
    extra = await Connection.open(rig)
    assert (await extra.get("/status"))[0] == 200
    status, headers, _ = await kept.get("/status")  # before: reset
    assert status == 200 and headers.get("connection") != "close", (status, headers)
    reader = Connection(*await asyncio.open_connection(sock=slow))
    answers = await asyncio.wait_for(reader.reader.read(), 5)  # every answer, then the FIN (a reset raises)
    assert answers.count(b"HTTP/1.1 200 OK") == 10 and answers.endswith(b"\n"), answers[-200:]
    scraper.writer.write(b"Host: gateway\r\n\r\n")
    assert (await scraper.answer())[0] == 200
    assert "speech_gateway_idle_connections_closed_total 1.0" in (await scraper.get("/metrics"))[2].decode()
    for c in (kept, scraper, reader, extra):
        c.close()


async def test_connections_that_sent_nothing_make_room_but_not_one_midway_through_its_head(rig: Rig) -> None:
    """Connections opened and left empty (a stream of them, each kept 10 s) do not lock others out; one whose head has
    begun to arrive is no idle one, even open longest."""
    begun = await Connection.open(rig)
    begun.writer.write(b"GET /status HT")
    await asyncio.sleep(0.05)
    empty = []
    for _ in range(CAP - 1):
        empty.append(await Connection.open(rig))
        await asyncio.sleep(0.05)
    for _ in range(CAP):  # a new connection each time: each closes the empty one open longest, then itself is
        extra = await Connection.open(rig)
        status, headers, _ = await extra.get("/")
        assert status == 200 and headers.get("connection") != "close", (status, headers)
        empty.append(extra)
    for c in empty[:CAP]:
        assert await gone(c)
    begun.writer.write(b"TP/1.1\r\nHost: gateway\r\n\r\n")
    assert (await begun.answer())[0] == 200, "its head's first bytes had come: it was kept"
    for c in (begun, *empty):
        c.close()


async def test_relayed_websockets_are_never_idle(rig: Rig) -> None:
    """Two relayed WebSockets and an idle kept-alive connection at the cap: a third WebSocket makes room by closing the
    idle one and is relayed (before: 1013); a fourth, with every connection a relayed WebSocket, is refused as
    before (close 4429: :func:`refused_usp`), and a probe is still answered."""
    idle = await Connection.open(rig)
    async with aiohttp.ClientSession() as client:
        streams = [await client.ws_connect(f"ws://{rig.gateway}{USP}", protocols=("USP",)) for _ in range(CAP - 1)]
        assert (await idle.get("/status"))[0] == 200
        streams.append(await client.ws_connect(f"ws://{rig.gateway}{USP}", protocols=("USP",)))
        assert await gone(idle)
        for ws in streams:
            await ws.send_str("hello")
            assert (await asyncio.wait_for(ws.receive(), 5)).data == "hello"
        assert (await refused_usp(client, rig)).data == errors.TOO_MANY_REQUESTS_CLOSE
        probe = await Connection.open(rig)
        status, headers, _ = await probe.get("/ready")
        assert status == 200 and headers["connection"] == "close"
        probe.close()
        for ws in streams:
            await ws.close()


def bench_row(kind: str, count: int, *options: str) -> dict[str, Any]:
    """The row of ``count`` connections of ``kind`` from ``python -m bench.gateway_memory`` (its gateway a process of
    its own), with its ``options``."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'recognizer'}:{ROOT / 'operator'}:{ROOT}"}
    out = subprocess.run([sys.executable, "-m", "bench.gateway_memory", "--kinds", kind, "--counts", str(count), *options],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    row: dict[str, Any] = next(r for r in map(json.loads, out.stdout.splitlines()) if r.get("connections") == count)
    return row


def test_stalled_websockets_at_the_cap_stay_within_its_memory() -> None:
    """The hostile pattern: relayed WebSockets each stalled within a message of the largest size the gateway takes (its
    default), 60 of them against a cap of 20. The gateway (a process of its own) relays 20, and its RSS grows by about
    their messages (96 KiB each, bench/notes.md); before the cap it relayed all 60, and took messages of 1 MiB
    (1.1 MiB each)."""
    row = bench_row("wsframe", 60, "--frame", str(GatewayConfig.max_message_bytes), "--env", "SPEECH_GATEWAY_MAX_CONNECTIONS=20")
    assert row["relayed"] == 20, row
    assert row["rss_over_idle_mib"] < 20 * 0.2 + 6, row


def test_websockets_streaming_faster_than_their_recognizer_hold_a_read_buffer() -> None:
    """The pattern of a Speech SDK app transcribing a file: 30 relayed WebSockets whose clients send 4 MiB of 8 KiB
    messages at once while the recognizer reads none. The gateway (a process of its own, its default limits) holds of
    each about ``SPEECH_GATEWAY_READ_BUFFER_BYTES`` read and as much unsent to the recognizer (aiohttp's queue bounded by
    ``_ClientSide._post_start``, its client writer by ``_bound_writes``). Before, aiohttp's own buffers held about
    0.8 MiB of each stream (a 512 KiB read queue, 256 KiB unsent; bench/notes.md, "Streams faster than their
    recognizer"), 200 of them 160 MiB besides the gateway's 92."""
    row = bench_row("wsflood", 30)
    assert row["relayed"] == 30, row
    assert row["rss_over_idle_mib"] < 30 * 0.15 + 4, row


def test_a_head_pipelined_behind_a_request_in_progress_is_not_read_past_a_read() -> None:
    """The hostile pattern: 20 connections each with a REST request in progress (its body all in, held by the
    recognizer) and a second head pipelined behind it that never ends, 127 lines of almost 16 KiB (2 MiB). The gateway
    (a process of its own, its default limits) reads no more of a connection once its request is in: what it holds of
    each is at most a read. Before, aiohttp parsed all of it while the request was in progress: 6 MiB of RSS a
    connection (bench/notes.md, "Heads pipelined behind a request"), 200 of them 1.2 GiB, far over the pod's 256 MiB."""
    row = bench_row("pipelined", 20)
    assert row["relayed"] == 20, row
    assert row["kib_per_connection"] < 300, row


def skmem(selector: str) -> list[dict[str, int]]:
    """Each established TCP socket's kernel memory matching ``selector`` (``ss``'s filter, e.g. ``dport = :5000``):
    ``skmem``'s fields, ``r``/``rb`` its receive queue and buffer, ``w``/``tb`` its send queue and buffer."""
    out = subprocess.run(["ss", "-tmnH", "state", "established", f"( {selector} )"], capture_output=True, text=True, check=True).stdout
    return [{k: int(v) for k, v in (re.fullmatch(r"([a-z_]+)(\d+)", f).groups() for f in line.split("skmem:(")[1].split(")")[0].split(","))}
            for line in out.splitlines() if "skmem:(" in line]


async def test_answers_a_client_never_reads_wait_in_a_bounded_send_buffer(rig: Rig) -> None:
    """The hostile pattern: connections each sending 600 ``GET /metrics`` at once and reading none of the answers (3 KB
    each). The answers wait in the kernel's send buffer of each connection, kernel memory that a cgroup-v2 limit charges
    to the pod: before, the kernel grew it while they flowed, up to its ``tcp_wmem`` maximum (4 MiB here and on common
    nodes: 4.1 MiB per connection, bench/notes.md), 0.8 GiB at the cap; now it is fixed at ``read_buffer_bytes``
    (which the kernel doubles), as the receive buffer was, and the gateway waits for the client to read."""
    limit = 2 * GatewayConfig.read_buffer_bytes  # each buffer, as the kernel doubles it
    clients = [await Connection.open(rig) for _ in range(CAP)]
    try:
        for c in clients:
            c.writer.write(b"GET /metrics HTTP/1.1\r\nHost: gateway\r\n\r\n" * 600)
        port = rig.gateway.split(":")[1]
        for _ in range(100):  # answers wait in each connection's send buffer: the pattern took
            sockets = skmem(f"sport = :{port}")
            if len(sockets) == CAP and all(sock["w"] >= limit / 2 for sock in sockets):
                break
            await asyncio.sleep(0.05)
        assert len(sockets) == CAP and all(sock["w"] >= limit / 2 for sock in sockets), sockets
        # A write may take the queue past the buffer by one segment (GSO: up to 64 KiB): Linux 6.18 queued 66315 bytes
        # against a buffer of 32768.
        overshoot = 64 << 10
        for _ in range(20):  # and stay there while the gateway has more to answer (before: 1-4 MiB each within 2 s)
            await asyncio.sleep(0.1)
            sockets = skmem(f"sport = :{port}")
            assert all(sock["w"] + sock["r"] <= 2 * limit + overshoot and sock["tb"] <= limit for sock in sockets), sockets
    finally:
        for c in clients:
            c.close()


async def test_connections_to_the_recognizer_have_bounded_buffers(rig: Rig) -> None:
    """The gateway's connections to the recognizer have fixed buffers as its clients' connections do: the send buffer holds
    what a slow recognizer has not read yet, the receive buffer its answers while the client does not read them (before,
    the kernel's default of 128 KiB, grown to megabytes while answers flow fast)."""
    kept = await at_the_cap(rig)
    try:
        upstream = skmem(f"dport = :{rig.upstream.port}")
        assert len(upstream) == CAP, upstream
        for sock in upstream:
            assert sock["rb"] <= 2 * GatewayConfig.read_buffer_bytes and sock["tb"] <= 2 * GatewayConfig.read_buffer_bytes, sock
    finally:
        await served_and_closed(kept)


async def test_a_websocket_message_over_the_limit_is_refused_1009() -> None:
    async with upstream_behind_a_gateway(GatewayConfig(max_message_bytes=4096)) as rig, aiohttp.ClientSession() as client:
        async with client.ws_connect(f"ws://{rig.gateway}{USP}", protocols=("USP",)) as ws:
            await ws.send_bytes(b"x" * 4096)  # the largest taken
            assert (await asyncio.wait_for(ws.receive(), 5)).data == b"x" * 4096
            await ws.send_bytes(b"x" * 4097)
            msg = await asyncio.wait_for(ws.receive(), 5)
            assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 1009, msg


def test_a_held_websocket_is_not_read_past_what_it_keeps() -> None:
    """30 WebSockets held for a locale at zero, each sending 3 MiB of 8 KiB messages: the gateway keeps 256 KiB of each
    (HOLD_BUFFER_BYTES) and then reads no more of it. Before the pause, aiohttp read on into its own queue, 512 KiB
    more: 1.14-1.17 MiB of RSS per held WebSocket; with 512 KiB kept 0.6-0.8; with 256 KiB 0.42 (bench/notes.md)."""
    row = bench_row("wsheld", 30)
    assert row["kib_per_connection"] < 600, row


@pytest.mark.parametrize("size", [8192, 65535])
async def test_a_held_websocket_keeps_its_messages_until_the_hold_buffer_is_full_and_no_more(size: int) -> None:
    """What hold_websocket keeps of a client sending faster than it is relayed: messages until HOLD_BUFFER_BYTES are
    kept, the last one whole (aiohttp reads messages whole), so at most HOLD_BUFFER_BYTES and one message less a byte.
    It read on while it kept no more than HOLD_BUFFER_BYTES, one message past it: 264 KiB of 8 KiB messages."""
    from speech_operator.gateway_wake import hold_websocket
    kept: list[list[aiohttp.WSMessage] | None] = []
    waiting: asyncio.Future[object] = asyncio.get_running_loop().create_future()

    async def held(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=1 << 20)
        await ws.prepare(request)
        kept.append(await hold_websocket(ws, waiting, request.transport))  # type: ignore[arg-type]
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/", held)
    async with serving(app, "127.0.0.1", 0, 1) as port, aiohttp.ClientSession() as client, \
            client.ws_connect(f"ws://127.0.0.1:{port}/") as ws:
        for _ in range(2 * HOLD_BUFFER_BYTES // size + 2):
            await ws.send_bytes(b"x" * size)
        await asyncio.sleep(0.5)  # the holder has read what it keeps, and paused
        waiting.set_result(None)
        await asyncio.wait_for(ws.receive(), 5)
    assert kept and kept[0] is not None
    sizes = [len(m.data) for m in kept[0]]
    assert sum(sizes[:-1]) < HOLD_BUFFER_BYTES <= sum(sizes), sizes
    assert sum(sizes) < HOLD_BUFFER_BYTES + size, sizes


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
