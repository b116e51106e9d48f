"""What the gateway counts in ``speech_gateway_failures_total{reason}`` and logs, for each way a relay ends.

The chart's alert SpeechGatewayFailing pages on ``backend_lost`` and ``backend_unavailable``: each must count what
happened to the gateway's connection to a recognizer, not a close code it relayed. A stand-in recognizer (a small
aiohttp server on loopback: no recognizer closes with 1011, drops its connection or cuts an answer on command) ends
each stream or request one way; a real gateway in front of it relays; ``/metrics`` is read as Prometheus reads it
(prometheus_client's parser) and the gateway's log lines are taken from its logger. The clients are aiohttp's.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import WSMsgType, web
from prometheus_client.parser import text_string_to_metric_families

from harness.loopback import free_port
from speech_operator.gateway import GATEWAY, GatewayConfig, create_app, serving
from speech_operator.gateway_directory import Directory
from speech_operator.gateway_shutdown import STOPPED_MIDSTREAM

from .conftest import ServiceDNS, speech_to_text
from .test_wake import AT_ZERO

pytestmark = pytest.mark.unit  # no model, server, operator or browser: the quick run (README, Tests)

REST = "/speech/recognition/conversation/cognitiveservices/v1?format=simple"
#: Awake (one ready pod), held while it wakes (at zero pods), and held, then at an address nothing listens on.
AWAKE, HELD, UNREACHABLE = "ko-KR", "ja-JP", "de-DE"
INTERNAL = "internal error (RuntimeError); the server logged the details"
#: Set by the stand-in once a stream that never ends has had its first message.
RECEIVED = web.AppKey("received", asyncio.Event)


async def _stream(request: web.Request) -> web.StreamResponse:
    """A recognizer's WebSocket that ends as ``?end=`` asks once the client's first message has come: ``close1011``
    (its own internal error), ``drop`` (its connection closed without a close frame: a pod stopped), ``refuse500`` /
    ``refuse502`` (the upgrade refused), ``never`` (it reads on until it is closed, ``app[RECEIVED]`` set once it has
    had a message); any other: the client's close is answered."""
    end = request.query["end"]
    if end.startswith("refuse"):
        return web.Response(status=int(end[-3:]), text=INTERNAL)
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    msg = await ws.receive()
    if end == "never":
        request.app[RECEIVED].set()
        async for _ in ws:
            pass
    if end == "close1011":
        await ws.close(code=1011, message=INTERNAL.encode())
    elif end == "drop" and request.transport is not None:
        request.transport.close()
    elif msg.type is WSMsgType.CLOSE:
        await ws.close()
    return ws


async def _answer(request: web.Request) -> web.StreamResponse:
    """A recognizer's REST answer, as ``?end=`` asks: ``500`` (its internal error, in its JSON shape), ``cut`` (10 of
    the 1000 bytes its head declares, then its connection closed), ``gone`` (its connection closed before any answer)."""
    await request.read()
    end = request.query["end"]
    if end == "500":
        return web.json_response({"error": {"code": "InternalServerError", "message": INTERNAL}}, status=500)
    if end == "cut":
        answer = web.StreamResponse(headers={"Content-Length": "1000", "Content-Type": "application/json"})
        await answer.prepare(request)
        await answer.write(b'{"Recogni')
    if request.transport is not None:
        request.transport.close()
    return web.Response()


@dataclass
class Rig:
    gateway: str
    directory: Directory
    upstream: int

    def route(self, locale: str, ready: int, port: int | None = None) -> None:
        """``locale``'s SpeechToText (autoscaled to zero: a stream to it is held while it has no ready pod) at ``port``
        (the stand-in's unless said)."""
        self.directory.upsert({**speech_to_text(locale.lower(), locale, port or self.upstream, autoscaling=AT_ZERO),
                               "status": {"readyReplicas": ready}})


@contextlib.asynccontextmanager
async def rigged(app: web.Application) -> AsyncIterator[Rig]:
    """A real gateway in front of the stand-in recognizer ``app``, :data:`AWAKE` routed to it with one ready pod."""
    async with serving(app, "127.0.0.1", 0, 1) as upstream:
        directory = Directory()
        directory.synced = True
        async with serving(create_app(directory, GatewayConfig(host="127.0.0.1", hold_seconds=30), resolver=ServiceDNS()),
                           "127.0.0.1", 0, 1) as port:
            rig = Rig(f"127.0.0.1:{port}", directory, upstream)
            rig.route(AWAKE, 1)
            yield rig


@pytest_asyncio.fixture(loop_scope="function")
async def rig() -> AsyncIterator[Rig]:
    app = web.Application()
    app[RECEIVED] = asyncio.Event()
    app.router.add_get("/vosk", _stream)
    app.router.add_post("/speech/recognition/{mode}/cognitiveservices/v1", _answer)
    async with rigged(app) as rig:
        yield rig


async def samples(session: aiohttp.ClientSession, rig: Rig, metric: str) -> Counter[tuple[tuple[str, str], ...]]:
    """The counter ``metric``'s samples on the gateway's /metrics, by their labels, read as Prometheus reads them."""
    async with session.get(f"http://{rig.gateway}/metrics") as response:
        text = await response.text()
    return Counter({tuple(sorted(s.labels.items())): s.value for family in text_string_to_metric_families(text)
                    if family.name == metric for s in family.samples if s.name == f"{metric}_total"})


async def ended(session: aiohttp.ClientSession, rig: Rig, caplog: pytest.LogCaptureFixture,
                act: Callable[[], Awaitable[object]]) -> tuple[object, str, dict[str, float], list[str]]:
    """What the client got from ``act`` (one stream or request), the ``code`` the gateway counted it with in
    ``speech_gateway_requests_total`` (its handler's last step), what it counted in its failures meanwhile, and its log
    lines (``LEVEL message``; not the access log)."""
    requests = await samples(session, rig, "speech_gateway_requests")
    before = await samples(session, rig, "speech_gateway_failures")
    caplog.clear()
    got = await act()
    async with asyncio.timeout(5):  # no event of the handler's last step reaches the client
        while (counted := await samples(session, rig, "speech_gateway_requests")) == requests:
            await asyncio.sleep(0.02)
    counted.subtract(requests)
    [code] = [dict(labels)["code"] for labels, n in counted.items() if n]
    failed = await samples(session, rig, "speech_gateway_failures")
    failed.subtract(before)
    lines = [f"{r.levelname} {r.getMessage()}" for r in caplog.records if r.name == "speech_operator.gateway"]
    return got, code, {dict(labels)["reason"]: n for labels, n in failed.items() if n}, lines


def begun(lines: list[str], *beginnings: str) -> list[str]:
    """Each line as the first of ``beginnings`` it begins with (what follows names addresses and errors), else whole."""
    return [next((b for b in beginnings if line.startswith(b)), line) for line in lines]


async def test_a_stream_counts_the_gateways_failures_not_the_close_codes_it_relays(
        rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    """A recognizer's own close 1011 (its internal error: its own metrics count it) and a client's 1011 are relayed
    as they came and count no failure; a held client whose recognizer refuses the upgrade with 500 or 502 is closed
    1011 and counts none either (one INFO line names the refusal); a recognizer whose connection ends without a close
    frame is ``backend_lost`` (WARNING), one that cannot be reached once a held client's locale woke
    ``backend_unavailable`` (WARNING); a held client that leaves is ``client_gone`` (DEBUG, the table's level), as a
    held REST request that leaves is. Each is counted with the close code the client was sent. Before: backend_lost
    was counted by the close code the client ANSWERED with (aiohttp's client answers 1000: here the client's own 1011
    counted it, the dropped connection did not), and so was the requests' code; the unreachable and the leaving held
    clients counted nothing; the lines said ``websocket``, not the route."""
    caplog.set_level(logging.DEBUG, logger="speech_operator.gateway")
    vosk = f"ws://{rig.gateway}/vosk"

    async def stream(locale: str, end: str, client_close: int | None = None, wake: str | None = None) -> tuple[object, str]:
        if wake:
            rig.route(locale, 0)
        async with session.ws_connect(f"{vosk}?language={locale}&end={end}") as ws:
            if wake and wake != "never":  # accepted and held: the locale now has a ready pod, where ``wake`` says
                rig.route(locale, 1, free_port() if wake == "nowhere" else None)
            await (ws.close(code=client_close, message=b"the app failed") if client_close else ws.send_str("{}"))
            msg = await ws.receive(timeout=5) if not client_close else None
        return ws.close_code, (msg.extra or "")[:24] if msg is not None and msg.type is WSMsgType.CLOSE else ""

    async def leave(locale: str) -> tuple[object, str]:
        """A client that leaves without a close frame, once accepted (a raw upgrade, then its connection closed)."""
        host, port = rig.gateway.rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(f"GET /vosk?language={locale}&end=echo HTTP/1.1\r\nHost: {rig.gateway}\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode())
        status = (await reader.readuntil(b"\r\n\r\n")).split(b" ")[1]
        writer.close()
        await writer.wait_closed()
        return int(status), ""

    cases = {
        "client leaves without a close": lambda: leave(AWAKE),
        "recognizer closes 1011": lambda: stream(AWAKE, "close1011"),
        "client closes 1011": lambda: stream(AWAKE, "echo", client_close=1011),
        "recognizer drops its connection": lambda: stream(AWAKE, "drop"),
        "held, then refused 500": lambda: stream(HELD, "refuse500", wake="upstream"),
        "held, then refused 502": lambda: stream(HELD, "refuse502", wake="upstream"),
        "held, then unreachable": lambda: stream(UNREACHABLE, "-", wake="nowhere"),
        "held, then the client leaves": lambda: stream(HELD, "-", client_close=1000, wake="never"),
    }
    async with aiohttp.ClientSession() as session:
        got = {name: await ended(session, rig, caplog, act) for name, act in cases.items()}
    lost = f"WARNING vosk {AWAKE}: backend_lost: the recognizer of {AWAKE} (speech/ko-kr) went away mid-stream without closing"
    refused = f"INFO the recognizer of {HELD} refused a held stream's upgrade: HTTP %d; closed 1011 {INTERNAL}"
    unreachable = f"WARNING vosk {UNREACHABLE}: backend_unavailable: no recognizer of {UNREACHABLE} answers"
    gone = f"DEBUG vosk {HELD}: client_gone: the client left while its locale woke, before its stream was relayed"
    assert {name: (closed, code, counted, begun(lines, lost, refused % 500, refused % 502, unreachable))
            for name, (closed, code, counted, lines) in got.items()} == {
        "client leaves without a close": ((101, ""), "1006", {}, []),
        "recognizer closes 1011": ((1011, INTERNAL[:24]), "1011", {}, []),
        "client closes 1011": ((1011, ""), "1011", {}, []),
        "recognizer drops its connection": ((1011, "the recognizer of ko-KR "), "1011", {"backend_lost": 1.0}, [lost]),
        "held, then refused 500": ((1011, INTERNAL[:24]), "1011", {}, [refused % 500]),
        "held, then refused 502": ((1011, INTERNAL[:24]), "1011", {}, [refused % 502]),
        "held, then unreachable": ((1013, f"no recognizer of {UNREACHABLE} a"), "1013", {"backend_unavailable": 1.0}, [unreachable]),
        "held, then the client leaves": ((1001, ""), "1001", {"client_gone": 1.0}, [gone]),
    }


async def test_a_rest_request_counts_a_cut_answer_not_the_recognizers_500(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    """A recognizer's 500 is its answer, relayed whole: no failure, no line of the gateway's. An answer cut mid-body
    (its connection closed at 10 of its 1000 bytes) aborts the client's connection and is ``backend_lost``, one
    WARNING; a connection closed before any answer is ``backend_lost`` too (502). Before: the cut answer counted
    nothing (a WARNING of its own words, not the failure table's line), so no alert could see it."""
    caplog.set_level(logging.INFO, logger="speech_operator.gateway")

    async def post(end: str) -> tuple[int, str]:
        try:
            async with session.post(f"http://{rig.gateway}{REST}&language={AWAKE}&end={end}", data=b"RIFF" + bytes(400)) as r:
                return r.status, (await r.json())["error"]["code"]
        except aiohttp.ClientPayloadError as exc:
            return r.status, type(exc).__name__

    async with aiohttp.ClientSession() as session:
        got = {end: await ended(session, rig, caplog, functools.partial(post, end)) for end in ("500", "cut", "gone")}
    lost = f"WARNING rest {AWAKE}: backend_lost: the recognizer of {AWAKE} (speech/ko-kr)"
    cut, gone = f"{lost} broke off its answer mid-body", f"{lost} went away before it answered"
    assert {end: (answer, code, counted, begun(lines, cut, gone)) for end, (answer, code, counted, lines) in got.items()} == {
        "500": ((500, "InternalServerError"), "500", {}, []),
        "cut": ((200, "ClientPayloadError"), "200", {"backend_lost": 1.0}, [cut]),
        "gone": ((502, "BadGateway"), "502", {"backend_lost": 1.0}, [gone]),
    }


async def test_a_stream_the_stop_cuts_is_counted_gateway_stopped(caplog: pytest.LogCaptureFixture) -> None:
    """A /vosk stream with audio under way when the gateway's stop runs out of time (SPEECH_GATEWAY_SHUTDOWN_SECONDS,
    0.5 s here) is closed 1001 and is what the failure table says: ``gateway_stopped``, counted, a WARNING naming its
    route and locale (after the stop's own two lines), code 1001 in the requests counted: as a REST request the stop
    cuts before its answer is. Before: nothing counted, one DEBUG line. The metrics are the stopped gateway's exposition
    (its /metrics no longer answers), read with prometheus_client's parser."""
    caplog.set_level(logging.DEBUG, logger="speech_operator.gateway")
    upstream_app = web.Application()
    upstream_app[RECEIVED] = received = asyncio.Event()
    upstream_app.router.add_get("/vosk", _stream)
    async with serving(upstream_app, "127.0.0.1", 0, 1) as upstream, aiohttp.ClientSession() as session:
        directory = Directory()
        directory.synced = True
        directory.upsert({**speech_to_text(AWAKE.lower(), AWAKE, upstream), "status": {"readyReplicas": 1}})
        app = create_app(directory, GatewayConfig(host="127.0.0.1", shutdown_seconds=0.5), resolver=ServiceDNS())
        async with serving(app, "127.0.0.1", 0, 0.5) as port:
            ws = await session.ws_connect(f"ws://127.0.0.1:{port}/vosk?language={AWAKE}&end=never")
            await ws.send_bytes(bytes(3200))  # audio: a stream in progress, never idle
            async with asyncio.timeout(5):
                await received.wait()
            closing = asyncio.ensure_future(ws.receive(timeout=10))  # read on: the client answers the close
        closed = await closing
        await ws.close()
    text = app[GATEWAY].metrics.exposition().decode()
    counted = {f"{s.name}{sorted(s.labels.values())}": s.value for family in text_string_to_metric_families(text)
               for s in family.samples if s.name in ("speech_gateway_failures_total", "speech_gateway_requests_total")}
    lines = [f"{r.levelname} {r.getMessage()}" for r in caplog.records if r.name == "speech_operator.gateway"]
    stop, cut = "INFO gateway stopping: 0 idle", "WARNING gateway stopping: 1 stream(s) still in progress after 0.5 s"
    assert ((closed.type, closed.data, closed.extra), counted, begun(lines, stop, cut)) == (
        (WSMsgType.CLOSE, 1001, STOPPED_MIDSTREAM.message),
        {f"speech_gateway_failures_total['gateway_stopped', '{AWAKE}']": 1.0,
         f"speech_gateway_requests_total['1001', '{AWAKE}', 'vosk']": 1.0},
        [stop, cut, f"WARNING vosk {AWAKE}: gateway_stopped: {STOPPED_MIDSTREAM.message}"])  # the stop's lines, then the stream's


async def test_the_gateways_failures_are_counted_per_locale(rig: Rig) -> None:
    """``speech_gateway_failures_total{reason,locale}``: the locale routed to (a recognizer whose connection drops
    mid-stream: ``backend_lost`` of ko-KR; one that cannot be reached: ``backend_unavailable`` of de-DE), ``-`` for a
    request refused before its locale was known (an unknown one). Before, the counter had the reason alone: which
    locale's recognizers fail could not be told."""
    rig.route(UNREACHABLE, 1, free_port())
    async with aiohttp.ClientSession() as session:
        for locale, end in ((AWAKE, "drop"), (UNREACHABLE, "-"), ("xx-XX", "-")):
            async with session.ws_connect(f"ws://{rig.gateway}/vosk?language={locale}&end={end}") as ws:
                await ws.send_str("{}")
                await ws.receive(timeout=5)
        failed = await samples(session, rig, "speech_gateway_failures")
    assert {tuple(value for _, value in labels): n for labels, n in failed.items() if n} == {
        (AWAKE, "backend_lost"): 1, (UNREACHABLE, "backend_unavailable"): 1, ("-", "unknown_locale"): 1}, failed
