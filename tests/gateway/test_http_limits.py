"""The gateway's limits on request heads (speech_operator.gateway_http_limits), from a raw socket
as a hostile or broken client sends them, and what they must leave alone: bodies, relayed
WebSockets, keep-alive requests.

Before them the gateway (aiohttp's server) kept a connection that sent nothing, or sent its head a
byte at a time, for an hour, and buffered heads of up to 128 headers of 8 KiB: 200 such connections
took 377 MiB, above the gateway pod's memory limit (256 MiB in the chart).
The upstream is the stand-in recognizer of test_relay.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio

from harness.hostile_inputs import responses, write_then_read
from speech_operator import gateway
from speech_operator.gateway import GatewayConfig, create_app, serving
from speech_operator.gateway_directory import Directory

from .test_relay import REST, USP, Rig, upstream_behind_a_gateway

pytestmark = pytest.mark.unit  # no model, server, operator or browser: the quick run (README, Tests)

HEADER_SECONDS = 1.0
MAX_HEADER_BYTES = 4096
HEAD = b"POST " + REST.encode() + b" HTTP/1.1\r\nHost: gateway\r\n"


@pytest_asyncio.fixture(loop_scope="function")
async def rig() -> AsyncIterator[Rig]:
    config = GatewayConfig(header_seconds=HEADER_SECONDS, max_header_bytes=MAX_HEADER_BYTES)
    async with upstream_behind_a_gateway(config) as rig:
        yield rig


async def answer(reader: asyncio.StreamReader, within: float) -> tuple[bytes, bytes]:
    """The status line and body of what the gateway sends until it closes the connection."""
    data = await asyncio.wait_for(reader.read(), within)
    head, _, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0], body


async def metrics(gateway: str) -> str:
    async with aiohttp.ClientSession() as client, client.get(f"http://{gateway}/metrics") as resp:
        return await resp.text()


async def test_a_head_sent_a_byte_at_a_time_gets_408_with_its_reason(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    reader, writer = await asyncio.open_connection(*rig.gateway.split(":"))
    started = time.monotonic()
    writer.write(HEAD)

    async def trickle() -> None:
        for _ in range(40):
            await asyncio.sleep(0.2)
            writer.write(b"x")

    dripping = asyncio.create_task(trickle())
    try:
        with caplog.at_level(logging.INFO, "speech_operator.gateway"):
            status, body = await answer(reader, 5 * HEADER_SECONDS)
    finally:
        dripping.cancel()
        writer.close()
    took = time.monotonic() - started
    assert status == b"HTTP/1.1 408 Request Timeout", status
    assert b"the request's head did not arrive within 1 s (SPEECH_GATEWAY_HEADER_SECONDS)" in body, body
    assert HEADER_SECONDS <= took < HEADER_SECONDS + 1, f"answered {took:.2f} s after the head's first byte"
    assert not rig.upstream.headers, "nothing reached the recognizer"
    lines = [r for r in caplog.records if "upload_timeout" in r.getMessage()]
    assert len(lines) == 1 and "from 127.0.0.1:" in lines[0].getMessage(), [r.getMessage() for r in caplog.records]
    text = await metrics(rig.gateway)
    assert 'speech_gateway_failures_total{locale="-",reason="upload_timeout"} 1.0' in text
    assert 'speech_gateway_requests_total{code="408",locale="-",route="http"} 1.0' in text


async def test_a_connection_that_sends_nothing_is_answered_and_closed(rig: Rig) -> None:
    reader, writer = await asyncio.open_connection(*rig.gateway.split(":"))
    try:
        status, _ = await answer(reader, 5 * HEADER_SECONDS)
    finally:
        writer.close()
    assert status == b"HTTP/1.1 408 Request Timeout"


async def test_a_head_over_the_limit_gets_431_before_it_ends(rig: Rig) -> None:
    """Headers keep coming and never end: the answer comes once they pass the limit, not at the deadline."""
    reader, writer = await asyncio.open_connection(*rig.gateway.split(":"))
    started = time.monotonic()
    writer.write(HEAD)
    for i in range(MAX_HEADER_BYTES // 100 + 1):
        writer.write(b"X-Filler-%d: %s\r\n" % (i, b"a" * 90))
    try:
        status, body = await answer(reader, 5 * HEADER_SECONDS)
    finally:
        writer.close()
    assert status == b"HTTP/1.1 431 Request Header Fields Too Large", status
    assert b"the request's head is over 4096 bytes (SPEECH_GATEWAY_MAX_HEADER_BYTES)" in body
    assert time.monotonic() - started < HEADER_SECONDS
    assert not rig.upstream.headers


async def test_a_whole_head_over_the_limit_in_one_piece_is_refused_too(rig: Rig) -> None:
    reader, writer = await asyncio.open_connection(*rig.gateway.split(":"))
    writer.write(HEAD + b"X-Big: " + b"a" * MAX_HEADER_BYTES + b"\r\nContent-Length: 4\r\n\r\nRIFF")
    try:
        status, _ = await answer(reader, 5 * HEADER_SECONDS)
    finally:
        writer.close()
    assert status == b"HTTP/1.1 431 Request Header Fields Too Large"
    assert not rig.upstream.headers


@pytest.mark.parametrize("room", [0, 300], ids=["at the limit", "with room for the gateway's own headers"])
async def test_a_head_just_under_the_limit_and_its_body_pass(rig: Rig, room: int) -> None:
    """The head ends within the limit; the body that comes in the same piece is not counted as head. A head at the
    limit passes the guard, but would not be within it once relayed, the gateway's own headers in (``Host``,
    ``X-Forwarded-*``): the gateway's 431 saying so (gateway_relay.head_over), not the recognizer's; with room for
    them it is relayed, its body whole."""
    filler = MAX_HEADER_BYTES - room - len(HEAD) - len(b"Content-Length: 9000\r\nX-Fill: \r\n\r\n")
    head = HEAD + b"Content-Length: 9000\r\nX-Fill: " + b"a" * filler + b"\r\n\r\n"
    assert len(head) == MAX_HEADER_BYTES - room
    reader, writer = await asyncio.open_connection(*rig.gateway.split(":"))
    writer.write(head + b"\0" * 9000)
    try:
        data = await asyncio.wait_for(reader.readuntil(b"}"), 5)
    finally:
        writer.close()
    if not room:
        assert data.startswith(b"HTTP/1.1 431 "), data[:80]
        assert b"over 4096 bytes once the gateway adds its own headers" in data and not rig.upstream.headers, data
        return
    assert data.startswith(b"HTTP/1.1 200 OK"), data[:80]
    assert b'"bytes": 9000' in data


READY = b"GET /ready HTTP/1.1\r\nHost: gateway\r\n\r\n"
#: Heads refused behind a request in the same write: (the head, its status, its reason).
REFUSED_BEHIND = {
    "a line over the limit": (b"GET /ready HTTP/1.1\r\nHost: gateway\r\nX-Pad: " + b"a" * MAX_HEADER_BYTES + b"\r\n\r\n", 431,
                              f"the request's head is over {MAX_HEADER_BYTES} bytes (SPEECH_GATEWAY_MAX_HEADER_BYTES)"),
    "lines over the limit": (b"GET /ready HTTP/1.1\r\nHost: gateway\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"a" * 100) for i in range(45)) + b"\r\n",
                             431, f"the request's head is over {MAX_HEADER_BYTES} bytes (SPEECH_GATEWAY_MAX_HEADER_BYTES)"),
    "too many headers": (b"GET /ready HTTP/1.1\r\nHost: gateway\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(200)) + b"\r\n", 431,
                         "the request's head has over 128 headers"),
    "not HTTP/1.1": (b"GET /ready HTTP/1.1\r\nHost gateway\r\n\r\n", 400, "not a valid HTTP/1.1 request: Invalid header token"),
}


@pytest.mark.parametrize("first", ["GET /ready", "a REST recognition"])
@pytest.mark.parametrize("case", sorted(REFUSED_BEHIND))
async def test_a_request_and_a_refused_one_in_one_write_both_get_their_answers(
        rig: Rig, caplog: pytest.LogCaptureFixture, case: str, first: str) -> None:
    """A whole request, then in the same write a head the gateway refuses: the request's answer, then the refusal, in
    order, one line and a count, the close (as a recognizer does, and nginx). Before, aiohttp's parser raised for the
    second head without the first request, which it had parsed: only the refusal was answered (the request lost); a
    head of many lines over the limit was answered 200 (the guard measured only the first head of a read), and one line
    over it got 400 "Got more than 4096 bytes when reading"."""
    head, status, reason = REFUSED_BEHIND[case]
    request = READY if first == "GET /ready" else HEAD + b"Content-Length: 4\r\n\r\nRIFF"
    caplog.set_level(logging.INFO, "speech_operator.gateway")
    host, port = rig.gateway.split(":")
    answer, end = await asyncio.get_running_loop().run_in_executor(
        None, lambda: write_then_read(host, int(port), request + head, timeout=5))
    assert end == "EOF", answer[:600]
    got = responses(answer)
    assert [code for code, _, _ in got] == [200, status], answer[:600]
    assert json.loads(got[1][2])["error"]["message"] == reason and got[1][1]["connection"] == "close", got[1]
    logged = [r.getMessage() for r in caplog.records if r.name == "speech_operator.gateway" and reason in r.getMessage()]
    assert len(logged) == 1, logged
    assert f'speech_gateway_requests_total{{code="{status}",locale="-",route="http"}} 1.0' in await metrics(rig.gateway)
    assert len(rig.upstream.headers) == (first != "GET /ready"), "the refused head reached nothing"


#: A head pipelined behind a request in progress: ever more lines, each within aiohttp's bound on one, never ended
#: (2 MiB); or its first bytes, and nothing more.
PIPELINED = {
    "large": HEAD + b"".join(b"X-%04d: %s\r\n" % (i, b"a" * 3990) for i in range(512)),
    "slow": HEAD + b"X-Slow: 1",
}


@pytest.mark.parametrize("case", sorted(PIPELINED))
async def test_a_head_pipelined_behind_a_request_in_progress_is_bounded_and_timed_as_it_arrives(rig: Rig, case: str) -> None:
    """A REST request whose body is all in, held by the recognizer (a recognition in progress), and a second head
    pipelined behind it: the gateway reads no more of the connection until the first is answered (the client's 2 MiB
    stay in its own buffer), then the second head is bounded and timed as a first head is: 431 once past the limit, 408
    ``header_seconds`` after it began to be read. Before, aiohttp parsed all that came while the request was in
    progress, up to 128 lines of ``max_header_bytes`` each (6 MiB of memory a connection at the default 16 KiB, bench/
    notes.md), and a head begun then had no deadline: the 75 s keep-alive closed it, without an answer."""
    rig.upstream.answering.clear()
    reader, writer = await asyncio.open_connection(*rig.gateway.split(":"))
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 << 10)  # the kernel's is no buffer
    try:
        writer.write(HEAD + b"Content-Length: 4\r\n\r\nRIFF")
        for _ in range(100):
            if rig.upstream.bodies:
                break
            await asyncio.sleep(0.05)
        assert rig.upstream.bodies == ["whole"], "the first request is in progress"
        writer.write(PIPELINED[case])
        await asyncio.sleep(1)
        unsent = writer.transport.get_write_buffer_size()
        if case == "large":  # the kernel's buffers (both ends') hold some ten KiB; the gateway read none of it
            assert unsent > len(PIPELINED[case]) // 2, f"the gateway read {len(PIPELINED[case]) - unsent} bytes of it"
        rig.upstream.answering.set()
        answered = time.monotonic()
        data = await asyncio.wait_for(reader.read(), 3 * HEADER_SECONDS)
        took = time.monotonic() - answered
    finally:
        writer.close()
    got = responses(data)
    assert [code for code, _, _ in got] == [200, 431 if case == "large" else 408], data[:600]
    said = json.loads(got[1][2])["error"]["message"]
    if case == "large":
        assert said == f"the request's head is over {MAX_HEADER_BYTES} bytes (SPEECH_GATEWAY_MAX_HEADER_BYTES)", said
        assert took < HEADER_SECONDS, took
    else:
        assert said == f"the request's head did not arrive within {HEADER_SECONDS:g} s (SPEECH_GATEWAY_HEADER_SECONDS)"
        assert HEADER_SECONDS <= took < HEADER_SECONDS + 1, took
    assert len(rig.upstream.headers) == 1, "the pipelined head reached nothing"


async def test_bodies_websockets_and_keep_alive_are_not_bound_by_the_head_deadline(rig: Rig) -> None:
    """A body sent slowly, a relayed WebSocket quiet for longer than the deadline, and a second request
    on a kept-alive connection after more than the deadline all go through."""
    async def slow_body() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b"\0" * 1000
            await asyncio.sleep(HEADER_SECONDS / 2)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as client:
        async with client.post(f"http://{rig.gateway}{REST}", data=slow_body()) as resp:
            assert resp.status == 200 and (await resp.json())["bytes"] == 5000
        await asyncio.sleep(1.5 * HEADER_SECONDS)
        async with client.post(f"http://{rig.gateway}{REST}", data=b"RIFF") as resp:
            assert resp.status == 200, "a second request on the kept-alive connection, after more than the deadline"
        async with client.ws_connect(f"ws://{rig.gateway}{USP}", protocols=("USP",)) as ws:
            await asyncio.sleep(2 * HEADER_SECONDS)
            await ws.send_str("still here")
            reply = await ws.receive(timeout=5)
            assert reply.data == "still here", reply


async def test_an_idle_kept_alive_connection_is_closed_after_the_keep_alive_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Between requests aiohttp's own keep-alive timer closes an idle connection (75 s; 1 s here)."""
    monkeypatch.setattr(gateway, "KEEPALIVE_SECONDS", 1.0)
    directory = Directory()
    directory.synced = True
    async with serving(create_app(directory, GatewayConfig()), "127.0.0.1", 0, 1) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /status HTTP/1.1\r\nHost: gateway\r\n\r\n")
        first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert first.startswith(b"HTTP/1.1 200"), first
        started = time.monotonic()
        try:
            await asyncio.wait_for(reader.read(), 10)  # the body, then the end of the connection
        finally:
            writer.close()
        assert 0.5 < time.monotonic() - started < 3
