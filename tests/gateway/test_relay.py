"""The relay's mechanics, against an upstream that shows what arrived: headers, frames in order,
pings and pongs, close codes and reasons, backpressure, bodies streamed.

The upstream here is a small aiohttp server that records and echoes, not a recognizer: these
are properties of the relay whatever is behind it, and a recognizer cannot show them (it does
not report the headers it got, never stops reading on command). The gateway in front of real
recognizers is tests/gateway/test_routes.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import socket
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import WSMsgType, web

from harness.hostile_inputs import responses
from speech_operator.gateway import GatewayConfig, create_app, serving
from speech_operator.gateway_directory import Directory
from speech_operator.gateway_relay import CLOSING_POLL_SECONDS, GONE_UNANSWERED

from .conftest import ServiceDNS, speech_to_text

pytestmark = pytest.mark.unit  # no model, server, operator or browser: the quick run (README, Tests)

USP = "/speech/recognition/conversation/cognitiveservices/v1?language=ko-KR"
REST = "/speech/recognition/conversation/cognitiveservices/v1?language=ko-KR&format=simple"


@dataclass
class Upstream:
    """What the stand-in recognizer saw, and knobs for what it does."""

    headers: list[dict[str, str]] = field(default_factory=list)
    #: The connection (the gateway's address and port) each request or upgrade came on, in order.
    connections: list[tuple[str, int]] = field(default_factory=list)
    received: list[tuple[str, Any]] = field(default_factory=list)
    first_chunk: asyncio.Event = field(default_factory=asyncio.Event)
    reading: asyncio.Event = field(default_factory=asyncio.Event)
    ws: web.WebSocketResponse | None = None
    port: int = 0
    #: How each REST body ended here: ``whole``, or ``cut`` (its request ended before its body did).
    bodies: list[str] = field(default_factory=list)
    #: REST: answer before reading the body (a head and this much of a chunked answer), as a recognizer may.
    answer_first: bytes = b""
    #: REST: a whole body's answer waits for this (set: at once), as a recognition in progress does.
    answering: asyncio.Event = field(default_factory=asyncio.Event)
    #: REST: whole bodies whose request ended while their answer waited (a recognizer stops decoding then).
    abandoned: int = 0

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        self.headers.append(dict(request.headers))
        self.connections.append(request.transport.get_extra_info("peername") if request.transport else None)
        if request.headers.get("Ocp-Apim-Subscription-Key") == "wrong":
            return web.Response(status=401, text="wrong key")
        ws = web.WebSocketResponse(protocols=("USP",), autoping=False)
        await ws.prepare(request)
        self.ws = ws
        while True:
            await self.reading.wait()
            msg = await ws.receive()
            if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                self.received.append((msg.type.name, msg.data))
                if msg.type is WSMsgType.TEXT and msg.data.startswith("close:"):
                    _, code, reason = msg.data.split(":", 2)
                    await ws.close(code=int(code), message=reason.encode())
                    return ws
                if msg.type is WSMsgType.TEXT and msg.data == "ping me":
                    await ws.ping(b"from-upstream")
                    continue
                await (ws.send_str(msg.data) if msg.type is WSMsgType.TEXT else ws.send_bytes(msg.data))
            elif msg.type is WSMsgType.PONG:
                self.received.append(("PONG", msg.data))
            elif msg.type is WSMsgType.PING:
                self.received.append(("PING", msg.data))
                await ws.pong(msg.data)
            elif msg.type is WSMsgType.CLOSE:
                self.received.append(("CLOSE", (msg.data, msg.extra)))
                await ws.close()
                return ws
            else:
                return ws

    async def rest(self, request: web.Request) -> web.StreamResponse:
        self.headers.append(dict(request.headers))
        self.connections.append(request.transport.get_extra_info("peername") if request.transport else None)
        early = None
        if self.answer_first:
            early = web.StreamResponse(headers={"Content-Type": "text/plain"})
            await early.prepare(request)
            await early.write(self.answer_first)
        total = 0
        try:
            async for chunk in request.content.iter_any():
                if not self.first_chunk.is_set():
                    self.first_chunk.set()
                total += len(chunk)
        except ConnectionResetError:  # its request ended mid-body: a recognizer gives its decoder back, says nothing
            self.bodies.append("cut")
            return early or web.Response(status=499)  # nothing reaches a connection that is gone
        self.bodies.append("whole")
        while not self.answering.is_set():  # "decoding", until its request ends (the gateway closed its connection)
            if request.transport is None or request.transport.is_closing():
                self.abandoned += 1
                return web.Response(status=499)  # nothing reaches a connection that is gone
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.answering.wait(), 0.02)
        if early is not None:
            await early.write_eof(b" and the rest")
            return early
        return web.json_response({"bytes": total, "chunked": "chunked" in request.headers.get("Transfer-Encoding", "")},
                                 headers={"Retry-After": "3"})


@dataclass
class Rig:
    upstream: Upstream
    gateway: str
    dns: ServiceDNS


@contextlib.asynccontextmanager
async def upstream_behind_a_gateway(config: GatewayConfig) -> AsyncIterator[Rig]:
    """An :class:`Upstream` serving ko-KR, and a gateway with ``config`` in front of it, on ``config.host`` (``*`` unless
    a test says otherwise: IPv6 and IPv4, as its pod listens); the rig's clients call it over IPv4."""
    upstream = Upstream()
    upstream.reading.set()
    upstream.answering.set()
    app = web.Application()
    app.router.add_get("/speech/recognition/{mode}/cognitiveservices/v1", upstream.websocket)
    app.router.add_post("/speech/recognition/{mode}/cognitiveservices/v1", upstream.rest)
    async with serving(app, "127.0.0.1", 0, 1) as upstream.port:
        directory = Directory()
        directory.upsert({**speech_to_text("ko-kr", "ko-KR", upstream.port), "status": {"readyReplicas": 1}})
        directory.synced = True
        dns = ServiceDNS()
        async with serving(create_app(directory, config, resolver=dns), config.host, 0, 1) as port:
            try:
                yield Rig(upstream, f"127.0.0.1:{port}", dns)
            finally:
                upstream.reading.set()
                upstream.answering.set()


@pytest_asyncio.fixture(loop_scope="function")
async def rig() -> AsyncIterator[Rig]:
    async with upstream_behind_a_gateway(GatewayConfig()) as rig:
        yield rig


async def test_headers_that_matter_reach_the_recognizer(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    """Key headers, X-ConnectionId and User-Agent pass; hop-by-hop headers do not; the Service's name is asked of DNS.
    The gateway listens on IPv6 and IPv4 (its default host): its IPv4 clients are forwarded (``X-Forwarded-For``) and
    logged as IPv4 (``127.0.0.1``, not ``::ffff:127.0.0.1``), its IPv6 ones as IPv6."""
    sent = {"Ocp-Apim-Subscription-Key": "k1", "Authorization": "Bearer t1", "X-ConnectionId": "c0ffee",
            "User-Agent": "SpeechSDK-Python/1.53.0", "Proxy-Authorization": "secret", "Keep-Alive": "timeout=5"}
    caplog.set_level(logging.INFO, "speech_operator.gateway.access")
    async with aiohttp.ClientSession() as client:
        async with client.ws_connect(f"ws://{rig.gateway}{USP}", protocols=("USP",), headers=sent) as ws:
            assert ws.protocol == "USP", "the subprotocol the recognizer chose"
            await ws.close()
        async with client.post(f"http://{rig.gateway}{REST}", data=b"RIFF", headers=sent) as resp:
            assert resp.status == 200
            assert resp.headers["Retry-After"] == "3", "the recognizer's response headers come back"
        async with client.post(f"http://[::1]:{rig.gateway.rsplit(':', 1)[1]}{REST}", data=b"RIFF", headers=sent) as resp:
            assert resp.status == 200
    *over_ipv4, over_ipv6 = rig.upstream.headers
    assert over_ipv6["X-Forwarded-For"] == "::1"
    logged = [r.getMessage() for r in caplog.records if r.name == "speech_operator.gateway.access"]  # the upstream's too
    assert {line.split(" ", 1)[0] for line in logged} == {"127.0.0.1", "::1"}, logged
    for seen in over_ipv4:
        for name in ("Ocp-Apim-Subscription-Key", "Authorization", "X-ConnectionId", "User-Agent"):
            assert seen.get(name) == sent[name], (name, seen)
        assert "Proxy-Authorization" not in seen and "Keep-Alive" not in seen
        assert seen["X-Forwarded-For"] == "127.0.0.1"
        assert seen["Host"].startswith("ko-kr.speech.svc:")
    assert rig.dns.asked and set(rig.dns.asked) == {"ko-kr.speech.svc"}


async def test_frames_pings_and_closes_pass_both_ways(rig: Rig) -> None:
    async with aiohttp.ClientSession() as client:
        ws = await client.ws_connect(f"ws://{rig.gateway}{USP}", protocols=("USP",), autoping=False)
        for i in range(50):
            await ws.send_bytes(bytes([i]) * 3200)
            await ws.send_str(f"text {i} 한국어")
        for i in range(50):
            assert (await ws.receive()).data == bytes([i]) * 3200
            assert (await ws.receive()).data == f"text {i} 한국어"
        await ws.send_str("ping me")
        ping = await ws.receive()
        assert (ping.type, ping.data) == (WSMsgType.PING, b"from-upstream"), "the recognizer's ping reaches the client"
        await ws.pong(b"from-upstream")
        await ws.ping(b"from-client")
        pong = await ws.receive()
        assert (pong.type, pong.data) == (WSMsgType.PONG, b"from-client"), "the recognizer answers the client's ping"
        reason = "Unsupported language:  한국어 " + "가" * 30  # 123 bytes: the most a close frame holds
        assert len(reason.encode()) == 123
        await ws.send_str(f"close:1007:{reason}")
        closed = await ws.receive()
        assert (closed.type, closed.data, closed.extra) == (WSMsgType.CLOSE, 1007, reason)
        await ws.close()
    assert ("PONG", b"from-upstream") in rig.upstream.received
    assert ("PING", b"from-client") in rig.upstream.received


async def test_the_clients_close_reaches_the_recognizer(rig: Rig) -> None:
    async with aiohttp.ClientSession() as client:
        ws = await client.ws_connect(f"ws://{rig.gateway}{USP}", protocols=("USP",))
        await ws.send_str("hello")
        assert (await ws.receive()).data == "hello"
        await ws.close(code=4001, message=b"done here")
    await asyncio.sleep(0.2)
    assert rig.upstream.received[-1] == ("CLOSE", (4001, "done here"))


async def test_idle_relayed_websockets_keep_no_timer(rig: Rig) -> None:
    """Relayed WebSockets that have each sent and got back messages (some larger than the relay's read-ahead bound), then
    are idle, keep no timer pending on the gateway's event loop: an idle relay wakes nothing. Before: each relay's look for
    a client closing while a send to its recognizer waits slept CLOSING_POLL_SECONDS at a time for the relay's whole life.
    The timers are asyncio's heap of them (the loop's private ``_scheduled``: no public way to it)."""
    loop = asyncio.get_running_loop()

    def timers() -> int:
        return sum(not timer.cancelled() for timer in loop._scheduled)  # type: ignore[attr-defined]

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout()) as client:  # its own 300 s timer per request: none
        before = timers()
        sockets = [await client.ws_connect(f"ws://{rig.gateway}{USP}", protocols=("USP",)) for _ in range(20)]
        for ws in sockets:
            for size in (3200, 64 * 1024):
                await ws.send_bytes(b"\0" * size)
                assert len((await ws.receive()).data) == size
        await asyncio.sleep(2 * CLOSING_POLL_SECONDS)  # a look after a send of more than the read-ahead bound is over
        pending = timers() - before
        for ws in sockets:
            await ws.close()
    assert pending <= 0, f"{pending} more timers pending with 20 idle relays"


async def test_a_refused_upgrade_is_refused_alike(rig: Rig) -> None:
    async with aiohttp.ClientSession() as client:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect(f"ws://{rig.gateway}{USP}", headers={"Ocp-Apim-Subscription-Key": "wrong"})
    assert refused.value.status == 401


async def test_backpressure_holds_a_fast_sender_back(rig: Rig) -> None:
    """While the recognizer reads nothing, a client sending as fast as it can gets only as far through
    the gateway as the sockets' buffers allow (compared with the same client connected directly:
    the gateway adds one more pair of kernel buffers and bounded queues, not the stream); once the
    recognizer reads again every frame arrives, in order."""
    frames, size = 1600, 64 * 1024  # 100 MiB in all

    async def sendable(url: str) -> int:
        rig.upstream.reading.clear()
        sent = 0
        async with aiohttp.ClientSession() as client:
            ws = await client.ws_connect(url, protocols=("USP",))

            async def send_all() -> None:
                nonlocal sent
                for i in range(frames):
                    await ws.send_bytes(i.to_bytes(4, "big") * (size // 4))
                    sent += 1

            sender = asyncio.create_task(send_all())
            await asyncio.sleep(1.5)
            held_at = sent
            rig.upstream.reading.set()
            echoes = []
            while len(echoes) < frames:
                echoes.append(int.from_bytes((await ws.receive()).data[:4], "big"))
            await sender
            assert echoes == list(range(frames)), "every frame, in order"
            await ws.close()
        return held_at

    direct = await sendable(f"ws://127.0.0.1:{rig.upstream.port}{USP}")
    through = await sendable(f"ws://{rig.gateway}{USP}")
    assert through <= 2 * direct + 32, (
        f"{through * size >> 20} MiB went through the gateway while nothing was read "
        f"({direct * size >> 20} MiB directly): the gateway buffers instead of holding the sender back")
    assert through < frames / 4


async def test_a_rest_body_is_streamed_not_read_whole(rig: Rig) -> None:
    """The recognizer gets the body's first chunk while the client still holds the rest back (a
    proxy that reads the body whole would wait for the rest forever); chunked stays chunked."""
    async def body() -> AsyncIterator[bytes]:
        yield b"RIFF" * 1000
        await asyncio.wait_for(rig.upstream.first_chunk.wait(), 10)
        for _ in range(100):
            yield b"\0" * 4000

    async with aiohttp.ClientSession() as client:
        async with client.post(f"http://{rig.gateway}{REST}", data=body()) as resp:
            assert resp.status == 200
            assert await resp.json() == {"bytes": 404_000, "chunked": True}
        async with client.post(f"http://{rig.gateway}{REST}", data=b"x" * 1000) as resp:
            assert await resp.json() == {"bytes": 1000, "chunked": False}, "a declared length is kept"


async def test_a_compressed_body_reaches_the_recognizer_unchanged(rig: Rig) -> None:
    """``Content-Encoding: gzip``: the recognizer gets the bytes the client sent, under that header (as it would
    directly; it decodes nothing either). Before: the gateway decoded them, and sent the decoded bytes under the gzip
    header, cut to the compressed length (the stand-in failed to decode them: 500)."""
    body = gzip.compress(b"RIFF" + b"\0" * 100_000)
    async with aiohttp.ClientSession(auto_decompress=False) as client:
        async with client.post(f"http://{rig.gateway}{REST}", data=body, headers={"Content-Encoding": "gzip"}) as resp:
            assert resp.status == 200, await resp.text()
            assert await resp.json() == {"bytes": len(body), "chunked": False}
    assert rig.upstream.headers[-1]["Content-Encoding"] == "gzip"


async def test_each_recognition_goes_out_on_a_new_connection(rig: Rig) -> None:
    """A recognition is never sent on a connection kept from before: its recognizer may be draining (its pod left the
    Service's endpoints; each request on such a connection got 503 draining) or closing it (a POST sent as it closes
    fails: aiohttp retries none, the client got 502 backend_lost; on loopback, 916 of 19916 relayed POSTs to a server
    closing its idle connections every 2 to 20 ms). A new connection goes through the Service to a ready pod.
    The REST request says Connection: close, so that the recognizer closes first (the TIME_WAIT is its, not the
    gateway's, whose ports to one Service address are fewer)."""
    async with aiohttp.ClientSession() as client:
        for _ in range(3):
            async with client.post(f"http://{rig.gateway}{REST}", data=b"RIFF") as resp:
                assert resp.status == 200, await resp.text()
        for _ in range(2):
            async with client.ws_connect(f"ws://{rig.gateway}{USP}", protocols=("USP",)) as ws:
                await ws.send_str("hello")
                assert (await ws.receive()).data == "hello"
                await ws.close()
    assert len(rig.upstream.connections) == 5 and len(set(rig.upstream.connections)) == 5, rig.upstream.connections
    assert [h.get("Connection") for h in rig.upstream.headers[:3]] == ["close"] * 3, rig.upstream.headers


async def test_a_recognizer_that_cannot_be_reached_is_a_clear_refusal(rig: Rig) -> None:
    directory = Directory()
    with contextlib.closing(__import__("socket").socket()) as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # bound, never listening: connections are refused
        directory.upsert({**speech_to_text("ko-kr", "ko-KR", dead), "status": {"readyReplicas": 1}})
        async with serving(create_app(directory, GatewayConfig(), resolver=ServiceDNS()), "127.0.0.1", 0) as port:
            async with aiohttp.ClientSession() as client:
                async with client.post(f"http://127.0.0.1:{port}{REST}", data=b"RIFF") as resp:
                    assert resp.status == 503 and resp.headers["Retry-After"] == "5"
                    message = (await resp.json())["error"]["message"]
                    assert "no recognizer of ko-KR answers" in message, message
                ws = await client.ws_connect(f"ws://127.0.0.1:{port}/vosk?language=ko-kr")
                closed = await ws.receive()
                assert closed.data == 1013 and "no recognizer of ko-KR answers" in closed.extra
                assert json.loads(await (await client.get(f"http://127.0.0.1:{port}/ready")).text())["ready"] is False


@pytest.mark.parametrize("how", ["close", "reset"])
async def test_a_client_gone_before_the_answer_ends_the_recognizers_request_in_one_line(
        rig: Rig, caplog: pytest.LogCaptureFixture, how: str) -> None:
    """A REST client that sends its whole request and leaves (closes its socket: a FIN, which the gateway tells from a
    half-close by an interim 100 Continue that a closed socket resets; or a reset) while its recognizer decodes: the
    gateway aborts its request to the recognizer then, whose decoder is given back, and says so in one line
    (``client_gone``, the failure table's level, its count, the access line's 499), no traceback. Before, the relay
    waited for the answer (a recognizer decoded to the end for nobody, its decoder held: 3 to 13 s for 50 s of audio
    here), whose write then raised ("Cannot write to closing transport": an ERROR with a traceback until that became
    the 499, a client gone)."""
    rig.upstream.answering.clear()
    host, port = rig.gateway.split(":")
    _, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"POST {REST} HTTP/1.1\r\nHost: test\r\nContent-Length: 4\r\n\r\nRIFF".encode())
    await writer.drain()
    for _ in range(200):  # the recognizer has the whole body and is "decoding"
        if rig.upstream.bodies:
            break
        await asyncio.sleep(0.05)
    assert rig.upstream.bodies == ["whole"]
    with caplog.at_level(logging.DEBUG, "speech_operator.gateway"):
        if how == "reset":
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.close()
        await writer.wait_closed()
        for _ in range(40):
            if rig.upstream.abandoned:
                break
            await asyncio.sleep(0.05)
        assert rig.upstream.abandoned == 1, "the recognizer's request goes on after its client left"
        for _ in range(40):
            if any('" 499 ' in r.getMessage() for r in caplog.records if r.name == "speech_operator.gateway.access"):
                break
            await asyncio.sleep(0.05)
    bad = [(r.name, r.getMessage()) for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, bad
    ours = [r.getMessage() for r in caplog.records if r.name == "speech_operator.gateway"]
    assert ours == [f"rest ko-KR: client_gone: {GONE_UNANSWERED}"], ours
    lines = [r.getMessage() for r in caplog.records if r.name == "speech_operator.gateway.access"]
    assert any('" 499 ' in line for line in lines), lines  # the access line: the client left (CLIENT_GONE)
    async with aiohttp.ClientSession() as client, client.get(f"http://{rig.gateway}/metrics") as resp:
        assert 'speech_gateway_failures_total{locale="ko-KR",reason="client_gone"} 1.0' in await resp.text()


# ---- an answer whose body ends where its connection closes ------------------------------------------

#: The body of an answer without framing (neither ``Content-Length`` nor chunked: RFC 9112, 6.3, its end is the close of
#: its connection), written in pieces of 64 KiB: more than one read.
UNFRAMED = b'{"RecognitionStatus": "Success", "Pad": "' + b"p" * 300_000 + b'"}'


@contextlib.asynccontextmanager
async def unframed_upstream_behind_a_gateway(cut_at: int | None = None) -> AsyncIterator[str]:
    """A gateway (its address) in front of an upstream that answers each REST request 200 with :data:`UNFRAMED`, then
    closes its connection; with ``cut_at``, the body's first ``cut_at`` bytes, then a reset (``SO_LINGER`` 0)."""
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0]))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n")
        body = UNFRAMED[:cut_at]
        for at in range(0, len(body), 64 << 10):
            writer.write(body[at:at + (64 << 10)])
            await writer.drain()
            await asyncio.sleep(0.02)
        if cut_at is not None:
            await asyncio.sleep(0.2)  # what was written reaches the gateway before the reset, which would discard it
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.close()

    upstream = await asyncio.start_server(answer, "127.0.0.1", 0)
    async with upstream:
        directory = Directory()
        directory.upsert({**speech_to_text("ko-kr", "ko-KR", upstream.sockets[0].getsockname()[1]), "status": {"readyReplicas": 1}})
        directory.synced = True
        async with serving(create_app(directory, GatewayConfig(host="127.0.0.1"), resolver=ServiceDNS()), "127.0.0.1", 0, 1) as port:
            yield f"127.0.0.1:{port}"


async def ask(gateway: str, version: str) -> bytes:
    """A REST request over HTTP/``version`` that closes its connection after the answer: everything the gateway sent."""
    reader, writer = await asyncio.open_connection(*gateway.split(":"))
    try:
        writer.write(f"POST {REST} HTTP/{version}\r\nHost: test\r\nConnection: close\r\nContent-Length: 4\r\n\r\nRIFF".encode())
        return await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()


async def test_an_answer_delimited_by_its_connections_close_reaches_the_client_whole() -> None:
    """The body comes in pieces, its end the upstream's close: an HTTP/1.1 client gets it whole and chunked (so that its
    end is marked), an HTTP/1.0 client whole, then the gateway's close."""
    async with unframed_upstream_behind_a_gateway() as gateway:
        one_one = await ask(gateway, "1.1")
        one_zero = await ask(gateway, "1.0")
    ((status, headers, body),) = responses(one_one)
    assert status == 200 and headers["transfer-encoding"] == "chunked" and body == UNFRAMED, one_one[:300]
    head, _, body = one_zero.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 ") and body == UNFRAMED, one_zero[:300]


async def test_an_answer_delimited_by_its_connections_close_cut_by_a_reset_is_cut_for_the_client(caplog: pytest.LogCaptureFixture) -> None:
    """The upstream resets its connection two thirds into the body: the client's answer is cut (no last chunk), and
    the gateway says the recognizer broke it off (``backend_lost``). Before, aiohttp ended such a body at the reset as
    at a close, and the client got the two thirds as a whole answer, its last chunk written."""
    cut_at = len(UNFRAMED) * 2 // 3
    with caplog.at_level(logging.INFO, "speech_operator"):
        async with unframed_upstream_behind_a_gateway(cut_at) as gateway:
            answer = await ask(gateway, "1.1")
    head, _, chunked = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"transfer-encoding: chunked" in head.lower(), answer[:300]
    assert not chunked.endswith(b"0\r\n\r\n"), "the cut answer ends as a whole one"
    assert UNFRAMED[cut_at - 100:cut_at] in chunked, "what came before the reset is relayed"
    assert any("backend_lost" in r.getMessage() and "broke off its answer mid-body" in r.getMessage() for r in caplog.records), \
        [r.getMessage() for r in caplog.records]
