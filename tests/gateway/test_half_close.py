"""A client that writes its requests, then half-closes (``shutdown(SHUT_WR)``: ``nc -N``, simple clients, proxies that
pass a client's half-close on) still reads: the gateway answers each request it sent whole, in order, its own
(``/ready``) and relayed ones, then closes the connection. Before, aiohttp closed the connection at the client's FIN:
0 answers of 1, 2 or 3 requests, either kind. A client that closes its socket sends the same FIN: one whose recognition
is relayed is told apart by an interim ``100 Continue`` that a closed socket answers with a reset (``HeadGuard._probe``;
tests/gateway/test_relay.py, a client gone before the answer). The upstream is the stand-in recognizer of test_relay.py.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from harness.hostile_inputs import responses
from speech_operator.gateway import GatewayConfig

from .test_relay import REST, Rig, upstream_behind_a_gateway

pytestmark = pytest.mark.unit  # no model, server, operator or browser: the quick run (README, Tests)

READY = b"GET /ready HTTP/1.1\r\nHost: gateway\r\n\r\n"
RECOGNITION = b"POST " + REST.encode() + b" HTTP/1.1\r\nHost: gateway\r\nContent-Type: audio/wav\r\nContent-Length: 4\r\n\r\nRIFF"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
#: Seconds within which the connection must close once answered (its keep-alive is 75 s).
CLOSED_WITHIN = 10


async def half_close(rig: Rig, data: bytes) -> tuple[bytes, float]:
    """Write ``data`` to the ``rig``'s gateway, half-close, read until it closes: what it answered, and the seconds that
    took."""
    reader, writer = await asyncio.open_connection(*rig.gateway.split(":"))
    started = time.monotonic()
    try:
        writer.write(data)
        writer.write_eof()
        answer = await asyncio.wait_for(reader.read(), CLOSED_WITHIN)
    finally:
        writer.close()
    return answer, time.monotonic() - started


@pytest.mark.parametrize("count", [1, 2, 3])
@pytest.mark.parametrize("kind", ["ready", "recognition"])
async def test_requests_written_then_half_closed_are_all_answered_then_closed(kind: str, count: int) -> None:
    async with upstream_behind_a_gateway(GatewayConfig()) as rig:
        answer, took = await half_close(rig, (READY if kind == "ready" else RECOGNITION) * count)
    assert answer.count(CONTINUE) <= (kind == "recognition"), answer[:600]  # asked whether it still reads, at most once
    got = responses(answer.replace(CONTINUE, b""))
    assert [code for code, _, _ in got] == [200] * count, answer[:600]
    if kind == "recognition":
        assert rig.upstream.bodies == ["whole"] * count
        assert [body for _, _, body in got] == [b'{"bytes": 4, "chunked": false}'] * count, got
    assert took < CLOSED_WITHIN / 2, f"closed {took:.1f} s after the half-close"


async def test_a_request_cut_off_by_the_half_close_is_not_answered_but_those_before_it_are() -> None:
    """Two whole requests and the start of a third (a head, or a body cut short): the two answered, then the close (the
    third can never end). One cut off with nothing before it: the close at once, as before."""
    async with upstream_behind_a_gateway(GatewayConfig()) as rig:
        for cut in (b"GET /ready HTTP/1.1\r\nHo", RECOGNITION[:-2]):
            answer, took = await half_close(rig, READY + RECOGNITION + cut)
            assert [code for code, _, _ in responses(answer.replace(CONTINUE, b""))] == [200, 200], answer[:600]
            assert took < CLOSED_WITHIN / 2, f"closed {took:.1f} s after the half-close"
            alone, took = await half_close(rig, cut)
            assert alone == b"" and took < 2, (took, alone[:300])


@pytest.mark.parametrize("kind", ["ready", "recognition"])
async def test_an_http_1_0_request_half_closed_is_answered_without_an_interim_answer(kind: str) -> None:
    """``printf 'GET /ready HTTP/1.0\\r\\n\\r\\n' | nc -N``: answered; an HTTP/1.0 client gets no 1xx (RFC 9110, 15.2)."""
    request = (READY if kind == "ready" else RECOGNITION).replace(b" HTTP/1.1\r\n", b" HTTP/1.0\r\n", 1)
    async with upstream_behind_a_gateway(GatewayConfig()) as rig:
        answer, took = await half_close(rig, request)
    assert answer.startswith(b"HTTP/1.0 200 "), answer[:300]
    assert CONTINUE not in answer and took < CLOSED_WITHIN / 2, (took, answer[:300])


@pytest.mark.parametrize("version", ["1.1", "1.0"])
async def test_a_half_closed_recognition_answered_seconds_later_is_answered(version: str) -> None:
    """The recognizer answers 2 s after the half-close (it decodes meanwhile): the client gets that answer. The relay
    aborts the request of a client that leaves before its answer (tests/gateway/test_relay.py): a half-close, whose FIN
    a close sends too, is not leaving, for an HTTP/1.1 client that acknowledged the 100 Continue or an HTTP/1.0 one."""
    request = RECOGNITION.replace(b" HTTP/1.1\r\n", f" HTTP/{version}\r\n".encode(), 1)
    async with upstream_behind_a_gateway(GatewayConfig()) as rig:
        rig.upstream.answering.clear()
        scheduled = time.monotonic()  # the answer's 2 s count from here, the half-close's from after the connect
        asyncio.get_running_loop().call_later(2, rig.upstream.answering.set)
        answer, _ = await half_close(rig, request)
        took = time.monotonic() - scheduled
    assert answer.replace(CONTINUE, b"").startswith(f"HTTP/{version} 200 ".encode()), answer[:600]
    assert rig.upstream.abandoned == 0 and took >= 2, (took, rig.upstream)
