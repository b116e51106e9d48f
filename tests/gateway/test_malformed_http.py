"""A request head the gateway's parser refuses gets the recognizer's answer to it (speech_operator.gateway_http_limits):
400 with the JSON error and the parser's reason, ``Connection: close``, one log line and a count, then a lingering close.

Before, aiohttp answered these itself: ``HTTP/1.0 400`` in plain text quoting the request (with a caret under the
fault; 256 KiB of it for bytes after an HTTP/2 preface), a traceback in the log for each (``Error handling request``),
no count, and a close at once, so that a client that wrote 256 KiB more before reading sometimes got a reset.
The upstream is the stand-in recognizer of test_relay.py; raw sockets from a thread.

A body that breaks off once it is being relayed (a bad chunk after the head, the client gone) gets the same answer
at once, or ends at once, and the request to the recognizer is ended. Before: aiohttp's parser dropped such a body
without ending it, so the relay waited (the client got nothing for as long as it waited; a real recognizer answered
408 after 10 s), and a client that left was reported as the recognizer lost (``backend_lost``, counted).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Iterator

import aiohttp
import pytest
import pytest_asyncio

from harness.hostile_inputs import (
    BAD_CHUNK,
    BAD_CHUNK_REASON,
    MALFORMED_REQUESTS,
    Broken,
    break_mid_body,
    post_head,
    responses,
    write_then_read,
)
from speech_operator.gateway import GatewayConfig, create_app, serving
from speech_operator.gateway_directory import Directory

from .conftest import ServiceDNS, speech_to_text
from .test_relay import REST, Rig, upstream_behind_a_gateway

OPENAI = "/v1/audio/transcriptions"

pytestmark = pytest.mark.unit  # no model, server, operator or browser: the quick run (README, Tests)

#: What a client that writes everything before it reads still sends after its bad request.
MORE = b"x" * (256 << 10)
#: What "at once" may take: far below the 5 s a client here waits for an answer that never comes (break_mid_body's
#: timeout; what each bug these tests guard gave, or the hold's end, 5 s), leaving a loaded machine time.
AT_ONCE_S = 3.0


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
    assert 'speech_gateway_failures_total{locale="-",reason="malformed_request"} 1.0' in text
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


# ---- a body that breaks off while it is relayed ---------------------------------------------------------------------
@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every log record at DEBUG, aiohttp's own included (its loggers propagate nowhere the fixture sees otherwise)."""
    aiohttp_logs = logging.getLogger("aiohttp")
    aiohttp_logs.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.DEBUG):
            yield caplog
    finally:
        aiohttp_logs.removeHandler(caplog.handler)


def ours(logs: pytest.LogCaptureFixture) -> list[str]:
    """The gateway's own lines (not its access lines)."""
    return [r.getMessage() for r in logs.records if r.name == "speech_operator.gateway"]


def assert_no_traceback(logs: pytest.LogCaptureFixture) -> None:
    assert all(r.exc_info is None for r in logs.records), [r.getMessage() for r in logs.records if r.exc_info]
    assert not [r for r in logs.records if r.name.startswith("aiohttp")], [r.getMessage() for r in logs.records]


async def eventually(check: Callable[[], bool], what: str, timeout: float = 5) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.02)


async def break_off(rig: Rig, start: bytes, then: bytes = b"", **how: object) -> Broken:
    """:func:`break_mid_body` against the gateway, once the stand-in recognizer has the body's first bytes."""
    host, port = rig.gateway.split(":")
    started = rig.upstream.first_chunk.is_set
    return await asyncio.get_running_loop().run_in_executor(
        None, lambda: break_mid_body(host, int(port), start, then, wait=started, **how))  # type: ignore[arg-type]


def started_upload(path: str = REST) -> bytes:
    """A chunked POST's head and its first chunk, in one write."""
    return post_head(path) + b"5\r\nRIFF!\r\n"


async def assert_serves_on(rig: Rig) -> None:
    async with aiohttp.ClientSession() as client, client.post(f"http://{rig.gateway}{REST}", data=b"RIFF") as resp:
        assert resp.status == 200, "the gateway serves the next connection"


@pytest.mark.parametrize(("more", "keep_sending"), [(b"", 0.0), (MORE, 0.0), (MORE, 0.5)], ids=["alone", "then 256 KiB", "then 0.5 s more"])
async def test_a_bad_chunk_mid_relay_gets_the_400_at_once_and_ends_the_recognizers_request(
        rig: Rig, logs: pytest.LogCaptureFixture, more: bytes, keep_sending: float) -> None:
    """The head and a first chunk, relayed; then a chunk size that is not hex (and more after it, unread): the 400 with
    the parser's reason at once (:data:`AT_ONCE_S`), ``Connection: close``, then EOF (no reset: the close lingers while the client still
    sends); the request to the recognizer ends; one line, counted once, no traceback. Before: nothing came (5 s here)."""
    broken = await break_off(rig, started_upload(), BAD_CHUNK + more, keep_sending=keep_sending)
    assert broken.end == "EOF", f"{broken.end} after {broken.answer[:300]!r}"
    assert broken.first < AT_ONCE_S + keep_sending, f"the answer took {broken.first:.2f} s"
    [(status, headers, body)] = responses(broken.answer)
    assert status == 400 and headers["connection"] == "close" and headers["content-type"] == "application/json", broken.answer[:300]
    error = json.loads(body)["error"]
    assert error["code"] == "BadRequest" and BAD_CHUNK_REASON in error["message"], error
    await eventually(lambda: rig.upstream.bodies == ["cut"], "the recognizer's request ended mid-body")
    assert [line for line in ours(logs) if "malformed_request" in line] == ours(logs), ours(logs)
    assert len(ours(logs)) == 1 and BAD_CHUNK_REASON in ours(logs)[0] and ours(logs)[0].startswith("rest ko-KR:"), ours(logs)
    assert_no_traceback(logs)
    text = await metrics(rig)
    assert 'speech_gateway_failures_total{locale="ko-KR",reason="malformed_request"} 1.0' in text
    assert 'speech_gateway_requests_total{code="400",locale="ko-KR",route="rest"} 1.0' in text
    assert "backend_lost" not in text
    await assert_serves_on(rig)


async def test_a_bad_chunk_after_the_answer_began_cuts_the_answer(rig: Rig, logs: pytest.LogCaptureFixture) -> None:
    """A recognizer that answers before the body is whole has begun its answer when the bad chunk comes: the client's
    connection is cut (a cut answer must not look whole), the recognizer's request ends, one line says why."""
    rig.upstream.answer_first = b"the answer so far"
    host, port = rig.gateway.split(":")
    broken = await asyncio.get_running_loop().run_in_executor(
        None, lambda: break_mid_body(host, int(port), started_upload(), BAD_CHUNK, wait=1.0))
    assert b"the answer so far" in broken.answer, broken.answer
    assert b"and the rest" not in broken.answer and not broken.answer.endswith(b"0\r\n\r\n"), "no end of the chunked answer"
    assert broken.last < AT_ONCE_S, f"the connection ended {broken.last:.2f} s after the bad chunk"
    await eventually(lambda: rig.upstream.bodies == ["cut"], "the recognizer's request ended mid-body")
    assert len(ours(logs)) == 1 and "malformed_request" in ours(logs)[0] and BAD_CHUNK_REASON in ours(logs)[0], ours(logs)
    assert_no_traceback(logs)
    text = await metrics(rig)
    assert 'speech_gateway_failures_total{locale="ko-KR",reason="malformed_request"} 1.0' in text and "backend_lost" not in text
    await assert_serves_on(rig)


async def test_a_bad_chunk_in_an_openai_form_being_read_gets_openais_400(rig: Rig, logs: pytest.LogCaptureFixture) -> None:
    """The gateway reads an OpenAI form for its language field: a bad chunk there is the same 400, in OpenAI's shape."""
    host, port = rig.gateway.split(":")
    form = b"--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhis"
    start = post_head(OPENAI, content_type="multipart/form-data; boundary=b") + b"%x\r\n" % len(form) + form + b"\r\n"
    broken = await asyncio.get_running_loop().run_in_executor(None, lambda: break_mid_body(host, int(port), start, BAD_CHUNK + MORE))
    assert broken.end == "EOF" and broken.first < AT_ONCE_S, (broken.end, broken.first, broken.answer[:300])
    [(status, headers, body)] = responses(broken.answer)
    assert status == 400 and headers["connection"] == "close", broken.answer[:300]
    error = json.loads(body)["error"]
    assert error["code"] == "malformed_request" and error["type"] == "invalid_request_error" and BAD_CHUNK_REASON in error["message"]
    assert len(ours(logs)) == 1 and ours(logs)[0].startswith("openai"), ours(logs)
    assert_no_traceback(logs)
    assert not rig.upstream.headers, "nothing reached the recognizer"


@pytest.mark.parametrize("declared", [False, True], ids=["chunked", "Content-Length"])
async def test_a_client_that_leaves_mid_upload_is_one_line_and_ends_the_recognizers_request(
        rig: Rig, logs: pytest.LogCaptureFixture, declared: bool) -> None:
    """The head and half a body, then the client closes: the request to the recognizer ends, the gateway says so in one
    line (``client_gone``, the failure table's level), no traceback. Before: ``backend_lost`` (a warning blaming the
    recognizer, counted as its failure)."""
    start = post_head(REST, content_length=100_000) + b"RIFF" * 1000 if declared else started_upload()
    broken = await break_off(rig, start, leave=True)
    assert broken.end == "left" and math.isnan(broken.first)
    await eventually(lambda: rig.upstream.bodies == ["cut"], "the recognizer's request ended mid-body")
    await eventually(lambda: bool(ours(logs)), "the gateway's line")
    await asyncio.sleep(0.2)
    assert len(ours(logs)) == 1 and ours(logs)[0].startswith("rest ko-KR: client_gone:"), ours(logs)
    assert_no_traceback(logs)
    text = await metrics(rig)
    assert 'speech_gateway_failures_total{locale="ko-KR",reason="client_gone"} 1.0' in text and "backend_lost" not in text
    await assert_serves_on(rig)


async def test_a_bad_chunk_after_an_answer_given_unread_closes_the_connection(rig: Rig, logs: pytest.LogCaptureFixture) -> None:
    """An answer given without reading the body (an unknown language), then a bad chunk: the answer stands, and the
    connection is closed with the lingering close at once (before: after aiohttp's 10 s of reading the rest)."""
    host, port = rig.gateway.split(":")
    start = post_head(REST.replace("ko-KR", "xx-XX")) + b"5\r\nRIFF!\r\n"
    broken = await asyncio.get_running_loop().run_in_executor(
        None, lambda: break_mid_body(host, int(port), start, BAD_CHUNK + MORE, wait=0.3, timeout=5))
    assert broken.end == "EOF" and broken.last < AT_ONCE_S, (broken.end, broken.last, broken.answer[:300])
    [(status, _, body)] = responses(broken.answer)
    assert status == 400 and "xx-XX" in json.loads(body)["error"]["message"]
    assert len(ours(logs)) == 1 and "unknown_locale" in ours(logs)[0], ours(logs)
    assert_no_traceback(logs)
    await assert_serves_on(rig)




@pytest.mark.parametrize("leave", [False, True], ids=["bad chunk", "client leaves"])
async def test_a_body_that_breaks_off_while_its_locale_wakes_is_answered_at_once(logs: pytest.LogCaptureFixture, leave: bool) -> None:
    """A request held for a locale at zero pods (nobody wakes it here), its body failing meanwhile: the 400 at once
    (or, the client gone, its one line at once), not the hold's 503 once the hold ends (5 s here, 120 s by default),
    and the hold is given back."""
    directory = Directory()
    asleep = speech_to_text("ko-kr", "ko-KR", 1, replicas=0, autoscaling={"minReplicas": 0, "maxReplicas": 1})
    directory.upsert({**asleep, "status": {"readyReplicas": 0, "replicas": 0}})
    directory.synced = True
    async with serving(create_app(directory, GatewayConfig(hold_seconds=5), resolver=ServiceDNS()), "127.0.0.1", 0, 1) as port:
        gateway = f"127.0.0.1:{port}"

        async def held() -> str:
            async with aiohttp.ClientSession() as client, client.get(f"http://{gateway}/metrics") as resp:
                return next(line for line in (await resp.text()).splitlines() if line.startswith("speech_gateway_held "))

        broken = await asyncio.get_running_loop().run_in_executor(
            None, lambda: break_mid_body("127.0.0.1", port, started_upload(), BAD_CHUNK + MORE, wait=0.5, leave=leave))
        if not leave:
            assert broken.end == "EOF" and broken.first < AT_ONCE_S, (broken.end, broken.first, broken.answer[:300])
            [(status, _, body)] = responses(broken.answer)
            assert status == 400 and BAD_CHUNK_REASON in json.loads(body)["error"]["message"], broken.answer[:300]
        await eventually(lambda: bool(ours(logs)), "the gateway's line", timeout=AT_ONCE_S)
        assert await held() == "speech_gateway_held 0.0"
        kind = "client_gone" if leave else "malformed_request"
        assert len(ours(logs)) == 1 and ours(logs)[0].startswith(f"rest ko-KR: {kind}:"), ours(logs)
    assert_no_traceback(logs)


# ---- a malformed request pipelined behind one in flight ------------------------------------------------------------
#: What follows the request in flight, piece by piece; (part of) the reason; how many requests are answered before the 400.
PIPELINED = {
    "garbage": ([b"GARBAGE\r\n\r\n"], "Invalid method encountered", 1),
    "a bad chunk": ([post_head(REST) + BAD_CHUNK], BAD_CHUNK_REASON, 1),
    "a bad chunk after its head": ([started_upload(), BAD_CHUNK], BAD_CHUNK_REASON, 1),
    "garbage after a whole request": ([post_head(REST, content_length=4) + b"RIFF", b"GARBAGE\r\n\r\n"], "Invalid method encountered", 2),
}
#: Cases whose malformed request has a whole head and a body begun in the first piece: the gateway reads no more of the
#: connection while the request before it is in progress (gateway_http_limits.HeadGuard._hold), so that request is
#: taken up once its turn comes and its bad chunk read then, refused as one after its head when it is not pipelined
#: (by the relay, aborting the recognizer's request if it had begun: 400, its route's line and count). Before, the
#: gateway read ahead and refused it before it was taken up.
RELAYED_THEN_REFUSED = {"a bad chunk after its head"}


@pytest.mark.parametrize("case", sorted(PIPELINED))
async def test_a_malformed_request_pipelined_behind_one_in_flight_is_answered_after_it(
        rig: Rig, logs: pytest.LogCaptureFixture, case: str) -> None:
    """A whole POST whose relay waits for the recognizer's answer, then on the same connection a malformed request (a head,
    or the body of a request not taken up yet: it never reaches the recognizer), and 256 KiB: the POST's answer intact,
    then (a request whole before it answered too) the 400 with the reason, ``Connection: close``, EOF; one line, counted,
    no traceback. Before: aiohttp's plain-text ``HTTP/1.0 400`` and an ERROR line with a traceback, uncounted."""
    pieces, reason, whole = PIPELINED[case]
    rig.upstream.answering.clear()
    host, port = rig.gateway.split(":")
    first = post_head(REST, content_length=4) + b"RIFF"

    def between() -> None:  # the first request reached the recognizer; then 0.1 s between pieces
        while not rig.upstream.bodies:
            time.sleep(0.01)
        time.sleep(0.1)

    talking = asyncio.get_running_loop().run_in_executor(
        None, lambda: write_then_read(host, int(port), first, *pieces, MORE, timeout=5, between=between))
    await eventually(lambda: bool(rig.upstream.bodies), "the first request's body at the recognizer")
    await asyncio.sleep(0.2 + 0.1 * len(pieces))  # the malformed request arrives while the relay waits
    rig.upstream.answering.set()
    answer, end = await talking
    assert end == "EOF", f"{end} after {answer[:300]!r}"
    *answered, (status, headers, body) = responses(answer)
    assert [(s, json.loads(b)) for s, _, b in answered] == [(200, {"bytes": 4, "chunked": False})] * whole, answer[:600]
    assert status == 400 and headers["connection"] == "close" and headers["content-type"] == "application/json", answer[:600]
    error = json.loads(body)["error"]
    assert error["code"] == "BadRequest" and reason in error["message"], error
    refusals = [line for line in ours(logs) if "malformed_request" in line]
    relayed = case in RELAYED_THEN_REFUSED
    assert len(refusals) == 1 and reason in refusals[0], ours(logs)
    assert refusals[0].startswith("rest ko-KR: ") if relayed else "from 127.0.0.1:" in refusals[0], ours(logs)
    assert_no_traceback(logs)
    text = await metrics(rig)
    assert f'speech_gateway_failures_total{{locale="{"ko-KR" if relayed else "-"}",reason="malformed_request"}} 1.0' in text, text
    counted = 'locale="ko-KR",route="rest"' if relayed else 'locale="-",route="http"'
    assert f'speech_gateway_requests_total{{code="400",{counted}}} 1.0' in text, text
    if relayed:  # its head may have reached the recognizer (as the relay got there first or not), never a whole body
        assert len(rig.upstream.headers) in (whole, whole + 1) and rig.upstream.bodies.count("whole") == whole, rig.upstream
    else:
        assert len(rig.upstream.headers) == whole and rig.upstream.bodies == ["whole"] * whole, "nothing malformed reached the recognizer"
    await assert_serves_on(rig)
