"""A request the HTTP parser refuses gets the server's own 400: the JSON error with the parser's reason,
``Connection: close``, one log line and a count (route ``http``), then a lingering close (speech_recognizer.http_limits).

Before, uvicorn answered these itself: a plain-text ``Invalid HTTP request received.``, its own warning,
no count, and a close at once, so that a client still sending (256 KiB after a bad head, or a body after
it) often got a reset (ConnectionResetError) instead of EOF; a valid request pipelined before a refused
one lost its answer to the 400. Raw sockets against the session's real server on loopback.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from harness.hostile_inputs import MALFORMED_REQUESTS, responses, wav_header, write_then_read
from speech_recognizer.errors import MAX_REASON_CHARS, one_line

from ..support import ServerThread, scrape_metrics

#: Each request, and (part of) the reason its answer must give: what httptools (llhttp) says of it.
CASES = {**MALFORMED_REQUESTS, "bad URL": (b"GET http://[::1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", "invalid url")}
HOST = b"Host: 127.0.0.1\r\n"
#: What a client that writes everything before it reads still sends after its bad request.
MORE = b"x" * (256 << 10)


def talk(port: int, data: bytes) -> tuple[bytes, str]:
    return write_then_read("127.0.0.1", port, data)


def refused(srv: ServerThread) -> float:
    return scrape_metrics(srv.http).get(("speech_refused_total", (("reason", "malformed_request"), ("route", "http"))), 0.0)


@pytest.fixture
def lines(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """The server's log: ours (speech_recognizer) and uvicorn's own (which does not propagate to the root)."""
    uvicorn = logging.getLogger("uvicorn")
    uvicorn.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, "speech_recognizer"):
            yield caplog
    finally:
        uvicorn.removeHandler(caplog.handler)


@pytest.mark.parametrize("more", [b"", MORE], ids=["alone", "then 256 KiB"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_request_the_parser_refuses_gets_our_400_and_a_clean_close(server: ServerThread, lines: pytest.LogCaptureFixture,
                                                                     case: str, more: bytes) -> None:
    request, reason = CASES[case]
    before = refused(server)
    answer, end = talk(server.port, request + more)
    assert end == "EOF", f"{end} after {answer[:200]!r}"
    [(status, headers, body)] = responses(answer)
    assert status == 400 and headers["connection"] == "close" and headers["content-type"] == "application/json", answer[:300]
    error = json.loads(body)["error"]
    assert error["code"] == "BadRequest" and reason in error["message"], error
    assert refused(server) == before + 1
    logged = [r.getMessage() for r in lines.records if r.name == "speech_recognizer.failures" and "malformed_request" in r.getMessage()]
    assert len(logged) == 1 and reason in logged[0] and "from 127.0.0.1:" in logged[0], logged
    assert not [r for r in lines.records if r.name.startswith("uvicorn")], [r.getMessage() for r in lines.records]
    assert all(r.exc_info is None for r in lines.records), "no traceback"
    assert httpx.get(f"{server.http}/ready", timeout=10).status_code == 200, "the server serves the next connection"


def test_a_request_pipelined_before_a_refused_one_is_answered_first(server: ServerThread) -> None:
    """Two valid requests, then garbage and 256 KiB, in one write: 200, 200, then the 400, then EOF (before:
    the 400 alone, and a reset)."""
    ready = b"GET /ready HTTP/1.1\r\n" + HOST + b"\r\n"
    answer, end = talk(server.port, ready + ready + b"GARBAGE\r\n\r\n" + MORE)
    assert end == "EOF", f"{end} after {answer[:300]!r}"
    got = responses(answer)
    assert [status for status, _, _ in got] == [200, 200, 400], answer[:600]
    assert b"Invalid method encountered" in got[2][2] and got[2][1]["connection"] == "close"


def test_a_bad_chunk_in_a_body_being_recognized_ends_it_with_the_400(server: ServerThread) -> None:
    """The head and a first chunk of WAV, then (the recognition under way) a chunk size that is not hex and 256 KiB:
    400 with the reason and EOF (before: uvicorn's text 400, then a reset), and the recognizer serves on."""
    before = refused(server)
    wav = wav_header(data_bytes=32000) + b"\0" * 3200
    head = (b"POST /speech/recognition/conversation/cognitiveservices/v1?language=ko-KR HTTP/1.1\r\n" + HOST
            + b"Content-Type: audio/wav\r\nTransfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % len(wav) + wav + b"\r\n")
    answer = bytearray()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head)
        time.sleep(0.5)
        sock.sendall(b"ZZ\r\n" + MORE)
        while got := sock.recv(65536):  # a reset raises here
            answer += got
    [(status, headers, body)] = responses(bytes(answer))
    assert status == 400 and headers["connection"] == "close", answer[:300]
    assert "Invalid character in chunk size" in json.loads(body)["error"]["message"]
    assert refused(server) == before + 1
    assert httpx.get(f"{server.http}/ready", timeout=10).status_code == 200


@pytest.mark.parametrize(("path", "after", "small"), [("/ready", b"GET /ready HTTP/1.1\r\n" + HOST + b"\r\n", False), ("/ready", MORE, False),
                                                     ("/openapi.json", MORE, True)],
                         ids=["a pipelined request", "256 KiB", "a large answer read late"])
def test_an_answer_that_closes_the_connection_is_read_whole_whatever_came_after_it(server: ServerThread, path: str,
                                                                                  after: bytes, small: bool) -> None:
    """A request with ``Connection: close``, then more bytes on the connection (a request pipelined after it, or 256 KiB):
    the answer whole, then EOF; what came after is not answered. Before: the close left the bytes unread, so the kernel reset
    the connection: ConnectionResetError after the 200, and a client with a 4 KiB receive buffer that read 0.5 s late got
    2 KiB of openapi.json's 43 KB, then the reset (the rest still unsent was dropped)."""
    request = b"GET " + path.encode() + b" HTTP/1.1\r\n" + HOST + b"Connection: close\r\n\r\n"
    answer, end = write_then_read("127.0.0.1", server.port, request + after, read_after=0.5 if small else 0.0,
                                  receive_buffer=4096 if small else 0)
    assert end == "EOF", f"{end} after {len(answer)} bytes: {answer[:200]!r}"
    [(status, headers, body)] = responses(answer)
    assert status == 200 and headers["connection"] == "close" and len(body) == int(headers["content-length"]), answer[:300]
    json.loads(body)


#: What ``curl --http2 http://...`` adds to each request: an upgrade to HTTP/2 in clear text, which the server does not take.
H2C = b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n"
CLOSE = b"Connection: close\r\n"


def test_a_request_pipelined_after_an_ignored_upgrade_is_answered(server: ServerThread, lines: pytest.LogCaptureFixture) -> None:
    """GET with ``Upgrade: h2c``, then a GET pipelined after it (with ``Connection: close``): both answered, in order, then
    EOF; no log line. Before: the first 200 and uvicorn's warning "Unsupported upgrade request.", then nothing (the second
    request was dropped unread; the connection stayed open for its keep-alive, 75 s)."""
    ready = b"GET /ready HTTP/1.1\r\n" + HOST
    answer, end = write_then_read("127.0.0.1", server.port, ready + H2C + b"\r\n" + ready + CLOSE + b"\r\n", timeout=5)
    assert end == "EOF", f"{end} after {answer[:300]!r}"
    assert [status for status, _, _ in responses(answer)] == [200, 200], answer[:600]
    assert not lines.records, [r.getMessage() for r in lines.records]


def test_a_body_sent_with_an_ignored_upgrade_is_read(server: ServerThread) -> None:
    """A REST recognition with ``Upgrade: h2c`` (what ``curl --http2 --data-binary @audio.wav`` sends): recognized, as
    without it. Before: httptools reads no body after an ``Upgrade``, so the app got none: 400 "the request body is empty"."""
    wav = wav_header(data_bytes=32000) + b"\0" * 32000
    head = (b"POST /speech/recognition/conversation/cognitiveservices/v1?language=ko-KR&format=simple HTTP/1.1\r\n" + HOST
            + H2C + CLOSE + b"Content-Type: audio/wav\r\nContent-Length: %d\r\n\r\n" % len(wav))
    answer, end = write_then_read("127.0.0.1", server.port, head + wav, timeout=30)
    [(status, _, body)] = responses(answer)
    assert (status, end) == (200, "EOF"), answer[:300]
    assert json.loads(body)["RecognitionStatus"] == "InitialSilenceTimeout", body


def test_a_long_reason_is_cut_and_kept_on_one_line(server: ServerThread) -> None:
    """The parser's words may quote the request (a URL it cannot parse): the reason keeps at most 200 characters."""
    answer, end = talk(server.port, b"GET http://[" + b"a" * 5000 + b" HTTP/1.1\r\n" + HOST + b"\r\n")
    [(status, _, body)] = responses(answer)
    message = json.loads(body)["error"]["message"]
    assert status == 400 and end == "EOF" and len(message) <= 250 and message.endswith("..."), message


@pytest.mark.unit
def test_a_reason_from_client_bytes_is_one_printable_line_of_bounded_length() -> None:
    assert one_line("Invalid header token") == "Invalid header token"
    assert one_line("a\r\nb\tc\x00d\x1be") == "a b c?d?e"
    cut = one_line("x" * 10_000)
    assert len(cut) == MAX_REASON_CHARS and cut.endswith("...")
