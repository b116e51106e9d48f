"""``speech_gateway_request_seconds{route,outcome}``: how long the gateway takes to answer, as its clients see it.

A REST request is timed from its head to its answer relayed (the recognizer's time to answer included); a WebSocket
from its upgrade to the recognizer's acceptance of its connection (a wake included when its locale had no ready pod),
not the stream's length; a refusal from its head to the refusal, under its class (a recognizer's 500 a fault, an
unknown locale the client's). Every request and stream counted in ``speech_gateway_requests_total`` is timed once. A
stand-in recognizer (a small aiohttp server on loopback) answers or accepts after ``?wait=`` seconds; a real gateway
relays; ``/metrics`` is read as Prometheus reads it (prometheus_client's parser).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from .test_failure_counts import AWAKE, HELD, Rig, rigged

pytestmark = pytest.mark.unit  # no model, server, operator or browser: the quick run (README, Tests)

REST = "/speech/recognition/conversation/cognitiveservices/v1"
#: Seconds the stand-in waits before it answers or accepts, and a stream is kept open once accepted.
WAIT, STREAM = 0.3, 1.5


async def _answer(request: web.Request) -> web.Response:
    """A recognizer's REST answer after ``?wait=`` seconds, with the status ``?status=`` (200 by default)."""
    await request.read()
    await asyncio.sleep(float(request.query.get("wait", "0")))
    status = int(request.query.get("status", "200"))
    body = {"RecognitionStatus": "Success"} if status == 200 else {"error": {"code": "InternalServerError", "message": "x"}}
    return web.json_response(body, status=status)


async def _accept(request: web.Request) -> web.WebSocketResponse:
    """A recognizer's WebSocket accepted after ``?wait=`` seconds, echoing each text message until the client closes."""
    await asyncio.sleep(float(request.query.get("wait", "0")))
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for msg in ws:
        await ws.send_str(msg.data)
    return ws


@pytest_asyncio.fixture(loop_scope="function")
async def rig() -> AsyncIterator[Rig]:
    app = web.Application()
    app.router.add_get("/vosk", _accept)
    app.router.add_post(REST, _answer)
    async with rigged(app) as rig:
        yield rig


async def scraped(session: aiohttp.ClientSession, rig: Rig) -> dict[tuple[str, ...], float]:
    """``speech_gateway_request_seconds``' count and sum by (sample, route, outcome) (every locale's together; by
    locale: tests/gateway/test_refusal_outcomes.py), and the requests counted by
    ``speech_gateway_requests_total`` by route (as ``("requests", route)``)."""
    async with session.get(f"http://{rig.gateway}/metrics") as response:
        text = await response.text()
    found: dict[tuple[str, ...], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name in ("speech_gateway_request_seconds_count", "speech_gateway_request_seconds_sum"):
                key = (s.name.rsplit("_", 1)[1], s.labels["route"], s.labels["outcome"])  # every locale's
                found[key] = found.get(key, 0.0) + s.value
            elif s.name == "speech_gateway_requests_total":
                key = ("requests", s.labels["route"])
                found[key] = found.get(key, 0.0) + s.value
    return found


async def timed(session: aiohttp.ClientSession, rig: Rig, act: Awaitable[object], **expected: int) -> dict[tuple[str, ...], float]:
    """What was added to :func:`scraped` by ``act``, once the ``expected`` requests (by route) are counted."""
    before = await scraped(session, rig)
    await act
    async with asyncio.timeout(5):
        while True:
            after = await scraped(session, rig)
            added = {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}
            if all(added.get(("requests", route), 0) >= n for route, n in expected.items()):
                return added
            await asyncio.sleep(0.02)


async def test_rest_requests_are_timed_from_head_to_answer_under_their_class(rig: Rig) -> None:
    async with aiohttp.ClientSession() as session:
        async def post(query: str) -> int:
            async with session.post(f"http://{rig.gateway}{REST}?{query}", data=b"RIFF" + bytes(400)) as r:
                await r.read()
                return r.status

        started = time.monotonic()
        ok = await timed(session, rig, post(f"language={AWAKE}&wait={WAIT}"), rest=1)
        took = time.monotonic() - started
        assert ok[("count", "rest", "ok")] == 1 and WAIT <= ok[("sum", "rest", "ok")] <= took, ok
        fault = await timed(session, rig, post(f"language={AWAKE}&status=500"), rest=1)
        assert fault[("count", "rest", "fault")] == 1, "a recognizer's 500: its internal error, a fault"
        client = await timed(session, rig, post("language=xx-XX"), rest=1)
        assert client[("count", "rest", "client")] == 1, "an unknown locale: the client's doing"


async def test_a_stream_is_timed_to_its_recognizers_acceptance_not_its_length(rig: Rig) -> None:
    """Accepted after ``WAIT`` s and kept ``STREAM`` s: timed about ``WAIT``. Held while its locale wakes (a ready pod
    after ``WAIT`` s): timed from its upgrade to its recognizer's acceptance, the wake included."""
    async with aiohttp.ClientSession() as session:
        async def stream(locale: str, wake: bool = False) -> None:
            async with session.ws_connect(f"ws://{rig.gateway}/vosk?language={locale}&wait={0 if wake else WAIT}") as ws:
                await ws.send_str("{}")
                if wake:  # accepted by the gateway at once, held: its locale gets a ready pod
                    await asyncio.sleep(WAIT)
                    rig.route(locale, 1)
                assert (await ws.receive(timeout=10)).data == "{}"
                await asyncio.sleep(STREAM)

        relayed = await timed(session, rig, stream(AWAKE), vosk=1)
        assert relayed[("count", "vosk", "ok")] == 1 and WAIT <= relayed[("sum", "vosk", "ok")] < STREAM, relayed
        rig.route(HELD, 0)
        held = await timed(session, rig, stream(HELD, wake=True), vosk=1)
        assert held[("count", "vosk", "ok")] == 1 and WAIT <= held[("sum", "vosk", "ok")] < STREAM, held


async def test_every_request_counted_is_timed_once(rig: Rig) -> None:
    """Relayed, refused by the gateway (an unknown locale, a mode not served), refused by the recognizer: as many
    timed as counted, route by route."""
    async with aiohttp.ClientSession() as session:
        async def act() -> None:
            for query in (f"language={AWAKE}", f"language={AWAKE}&status=500", "language=xx-XX"):
                async with session.post(f"http://{rig.gateway}{REST}?{query}", data=b"RIFF") as r:
                    await r.read()
            async with session.post(f"http://{rig.gateway}/speech/recognition/nomode/cognitiveservices/v1?language={AWAKE}",
                                    data=b"RIFF") as r:
                assert r.status == 404
            for locale in (AWAKE, "xx-XX"):
                async with session.ws_connect(f"ws://{rig.gateway}/vosk?language={locale}") as ws:
                    await ws.close()

        added = await timed(session, rig, act(), rest=4, vosk=2)
    counted = {route: added.get(("requests", route), 0.0) for route in ("rest", "vosk")}
    timed_ = {route: sum(v for k, v in added.items() if k[:2] == ("count", route)) for route in ("rest", "vosk")}
    assert counted == {"rest": 4, "vosk": 2} and timed_ == counted, (counted, timed_)
