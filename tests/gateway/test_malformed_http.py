"""A request head the gateway's parser refuses gets the recognizer's answer to it (speech_operator.gateway_http_limits):
400 with the JSON error and the parser's reason, ``Connection: close``, one log line and a count, then a lingering close.

Before, aiohttp answered these itself: ``HTTP/1.0 400`` in plain text quoting the request (with a caret under the
fault; 256 KiB of it for bytes after an HTTP/2 preface), a traceback in the log for each (``Error handling request``),
no count, and a close at once, so that a client that wrote 256 KiB more before reading sometimes got a reset.
The upstream is the stand-in recognizer of test_relay.py; raw sockets from a thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
from harness.hostile_inputs import MALFORMED_REQUESTS, responses, write_then_read

from speech_operator.gateway import GatewayConfig

from .test_relay import REST, Rig, upstream_behind_a_gateway

pytestmark = pytest.mark.unit  # no model, server, operator or browser: the quick run (README, Tests)

#: What a client that writes everything before it reads still sends after its bad request.
MORE = b"x" * (256 << 10)


@pytest_asyncio.fixture(loop_scope="function")
async def rig() -> AsyncIterator[Rig]:
    async with upstream_behind_a_gateway(GatewayConfig()) as rig:
        yield rig


async def talk(rig: Rig, data: bytes) -> tuple[bytes, str]:
    host, port = rig.gateway.split(":")
    return await asyncio.get_running_loop().run_in_executor(None, lambda: write_then_read(host, int(port), data))


async def metrics(rig: Rig) -> str:
    async with aiohttp.ClientSession() as client, client.get(f"http://{rig.gateway}/metrics") as resp:
        return await resp.text()


#: Each case alone, and followed by 256 KiB; but a bare LF, which never ends a head in CRLFs: with 256 KiB after
#: it in one read, the guard's cap on a head's size (431) rightly comes before the parser's refusal.
REQUESTS = {**MALFORMED_REQUESTS, "bad URL": (b"GET http://[::1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", "invalid URL http://[::1")}
CASES = [pytest.param(case, more, id=f"{case}-{label}") for case in sorted(REQUESTS)
         for more, label in ((b"", "alone"), (MORE, "then 256 KiB")) if not (case == "bare LF" and more)]


@pytest.mark.parametrize(("case", "more"), CASES)
async def test_a_head_the_parser_refuses_gets_the_recognizers_400_and_a_clean_close(rig: Rig, caplog: pytest.LogCaptureFixture,
                                                                                    case: str, more: bytes) -> None:
    request, reason = REQUESTS[case]
    aiohttp_logs = logging.getLogger("aiohttp")
    aiohttp_logs.addHandler(caplog.handler)  # aiohttp's own log, which propagates nowhere the fixture sees otherwise
    try:
        with caplog.at_level(logging.DEBUG):
            answer, end = await talk(rig, request + more)
    finally:
        aiohttp_logs.removeHandler(caplog.handler)
    assert end == "EOF", f"{end} after {answer[:200]!r}"
    [(status, headers, body)] = responses(answer)
    assert status == 400 and headers["connection"] == "close" and headers["content-type"] == "application/json", answer[:300]
    error = json.loads(body)["error"]
    assert error["code"] == "BadRequest" and reason in error["message"] and "\n" not in error["message"], error
    assert b"^" not in body, "the request is not quoted back"
    logged = [r.getMessage() for r in caplog.records if r.name == "speech_operator.gateway" and "malformed_request" in r.getMessage()]
    assert len(logged) == 1 and reason in logged[0] and "from 127.0.0.1:" in logged[0], logged
    assert all(r.exc_info is None for r in caplog.records), [r.getMessage() for r in caplog.records if r.exc_info]
    assert not [r for r in caplog.records if r.name.startswith("aiohttp")], [r.getMessage() for r in caplog.records]
    text = await metrics(rig)
    assert 'speech_gateway_failures_total{reason="malformed_request"} 1.0' in text
    assert 'speech_gateway_requests_total{code="400",locale="-",route="http"} 1.0' in text
    assert not rig.upstream.headers, "nothing reached the recognizer"
    async with aiohttp.ClientSession() as client, client.post(f"http://{rig.gateway}{REST}", data=b"RIFF") as resp:
        assert resp.status == 200, "the gateway serves the next connection"


async def test_a_long_reason_is_cut(rig: Rig) -> None:
    """aiohttp's words may be the request's URL: the reason keeps at most 200 characters of them."""
    answer, end = await talk(rig, b"GET http://[" + b"a" * 5000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    [(status, _, body)] = responses(answer)
    message = json.loads(body)["error"]["message"]
    assert status == 400 and end == "EOF" and len(message) <= 250 and message.endswith("..."), message
