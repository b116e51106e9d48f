"""Hostile clients against what landed with multi-channel processing, repeated key headers and trusted proxies: each
attack gets its clear answer (a close or a status with the reason, one log line, no traceback), and the access log
names an address. Real recognizers on loopback (the session's, no key; one trusting loopback proxies) and real
WebSocket and HTTP clients.
"""

from __future__ import annotations

import json
import logging
import socket
import time
import uuid
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from harness.hostile_inputs import response_complete, responses
from harness.usp import client_audio_frame, timestamp
from speech_recognizer.addresses import client, proxies
from speech_recognizer.app import create_app
from speech_recognizer.models import ModelRegistry
from speech_recognizer.results import TICKS_PER_SECOND
from speech_recognizer.usp.connection import CONTINUATION_OFFSET
from speech_recognizer.usp.frames import parse_text

from ..conftest import TEST_KEY, make_settings
from ..gateway.test_connections import skmem
from ..support import ServerThread
from .test_client_address import AccessLog

USP = "/speech/recognition/conversation/cognitiveservices/v1?language=ko-KR"
#: JSON nested deeper than the interpreter's recursion limit (1000), well within a WebSocket message (1 MiB).
DEEP = {"an array": "[" * 100_000, "an object": '{"a":' * 50_000}


def _usp_text(path: str, body: str, request_id: str | None) -> str:
    """A USP text frame with ``body`` as written (no JSON encoding: it may be none)."""
    head = f"X-Timestamp:{timestamp()}\r\nPath:{path}\r\n" + (f"X-RequestId:{request_id}\r\n" if request_id else "")
    return f"{head}\r\n{body}"


def _close(url: str, message: str) -> tuple[int, str]:
    """The close code and reason the server answers ``message`` with."""
    with connect(url, subprotocols=["USP"] if "cognitiveservices" in url else None, max_size=1 << 20) as ws:  # type: ignore[list-item]
        ws.send(message)
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=10)
    assert closed.value.rcvd is not None, "closed without a close frame"
    return closed.value.rcvd.code, closed.value.rcvd.reason


@pytest.mark.parametrize("nesting", DEEP)
@pytest.mark.parametrize("where", ["speech.config", "speech.context", "/vosk"])
def test_json_nested_past_the_parsers_depth_is_a_bad_value(server: ServerThread, caplog: pytest.LogCaptureFixture,
                                                           where: str, nesting: str) -> None:
    """A ``speech.config`` or ``speech.context`` (the Speech SDK's route) or a ``/vosk`` text message of JSON nested
    100000 deep (100 KB): close 1007 saying it is nested too deeply, one INFO line. Before, json.loads' RecursionError
    was the server's fault: close 1011 "internal error (RecursionError)" and an ERROR line with its traceback."""
    body = DEEP[nesting]
    if where == "/vosk":
        url, message = f"{server.ws}/vosk?language=ko-KR", body
    else:
        url, message = server.ws + USP, _usp_text(where, body, None if where == "speech.config" else uuid.uuid4().hex)
    with caplog.at_level(logging.INFO, logger="speech_recognizer"):
        code, reason = _close(url, message)
    assert code == 1007 and "nested too deeply" in reason, (code, reason)
    lines = [r for r in caplog.records if r.name == "speech_recognizer.failures"]
    assert [(r.levelno, r.exc_info) for r in lines] == [(logging.INFO, None)], [r.getMessage() for r in lines]


#: ``X-Forwarded-For`` lines a client behind a trusted proxy wrote (the proxy appends 127.0.0.2, its peer, trusted
#: too), and the address each should be logged as: the right-most address no trusted proxy wrote, an entry that is
#: no address stopping the walk at the address right of it, an IPv6 zone (any text but ``%`` and ``/``) dropped.
SPOOFED = {
    'x" 200 "GET /admin': "127.0.0.2",
    "unknown": "127.0.0.2",
    "for=192.0.2.60;proto=https": "127.0.0.2",
    "_hidden, 127.0.0.9": "127.0.0.9",
    "203.0.113.7,": "203.0.113.7",
    "203.0.113.7, unknown": "127.0.0.2",
    "[2001:db8::7]:443": "2001:db8::7",
    'fe80::1%x" 200 "GET': "fe80::1",
    "[fe80::1%eth0]:80": "fe80::1",
}


@pytest.mark.unit
def test_what_a_trusted_chain_says_is_logged_as_an_address_or_not_at_all() -> None:
    """The one algorithm of the gateway's and the recognizer's access logs (:func:`~speech_recognizer.addresses.client`)
    on :data:`SPOOFED`. Before, an IPv6 zone came through as written: ``fe80::1%x" 200 "GET`` in the access line."""
    trusted = proxies("127.0.0.0/8")
    assert {line: client("127.0.0.1", [line, "127.0.0.2"], trusted) for line in SPOOFED} == SPOOFED


def test_the_recognizer_names_the_client_as_the_gateway_does(tmp_path: Path, registry: ModelRegistry,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """``Http:TrustedProxies=127.0.0.0/8``; each request of :data:`SPOOFED` from 127.0.0.2 (a trusted proxy) with its
    line and then the proxy's entry: the access log names the address :func:`~speech_recognizer.addresses.client`
    names, and ``X-Forwarded-Proto`` from it is still the scheme the app sees (the service page's URLs). Before,
    uvicorn's reading of the header named any text as the client (``x" 200 "GET /admin:0 - "GET / HTTP/1.1" 200``, a
    forged access line; ``unknown``; ``for=192.0.2.60;proto=https``), and after an empty entry (``203.0.113.7,``) the
    proxy's peer (127.0.0.1)."""
    settings = make_settings(tmp_path, "Http:TrustedProxies=127.0.0.0/8")
    with AccessLog(caplog, registry) as access_log, access_log.serving(settings) as srv, \
            httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=10) as http:
        for line in SPOOFED:
            http.get(f"{srv.http}/", headers=[("X-Forwarded-For", line), ("X-Forwarded-For", "127.0.0.2")]).raise_for_status()
        page = http.get(f"{srv.http}/", headers={"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}).text
    assert access_log.clients() == [*SPOOFED.values(), "203.0.113.7"]
    assert f'base_url="https://127.0.0.1:{srv.port}/v1"' in page


def _idle_gauge(sock: socket.socket) -> float:
    """``speech_http_idle_connections`` scraped on ``sock``, kept alive (busy while asked, idle after)."""
    sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    answer = b""
    while not response_complete(answer):
        answer += sock.recv(65536)
    (status, _, body), = responses(answer)
    assert status == 200
    return next(float(line.split()[1]) for line in body.decode().splitlines() if line.startswith("speech_http_idle_connections "))


def test_an_idle_connection_whose_answers_are_still_on_their_way_gets_them_all_then_a_fin(
        registry: ModelRegistry, tmp_path: Path) -> None:
    """``Http:MaxConnections=2``; a client pipelines 28 ``GET /metrics`` (108 KB of answers: more than its kernel takes
    in, less than the server's send buffer holds) and reads none (its receive buffer 4 KiB): the answers wait in the
    server's send queue while its connection waits for the next head (idle), as a scraper's kept-alive connection
    sees. A new connection: the cap closes the slow reader's (its answers not being read), and it still gets all 28
    answers and then a FIN, not a reset (``reset_on_close`` only when nothing is unsent: a reset would destroy them). That an idle
    connection with nothing on its way is reset is test_http_connection_cap's; the gateway's twin of this is
    tests/gateway/test_connections.py. Checked by making ``reset_on_close`` ignore what is unsent: the slow reader's
    answers were cut by a reset."""
    settings = make_settings(tmp_path, "Http:MaxConnections=2")
    with ServerThread(create_app(settings, registry)) as srv, \
            socket.create_connection(("127.0.0.1", srv.port), timeout=10) as scraper, socket.socket() as slow:
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect(("127.0.0.1", srv.port))
        slow.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * 28)
        deadline = time.monotonic() + 10
        server_side = f"sport = :{srv.port} and dport = :{slow.getsockname()[1]}"
        # All 28 read (nothing in its receive queue), then idle (the gauge; the scraper's own is busy): all answered.
        while skmem(server_side)[0]["r"] or _idle_gauge(scraper) != 1:
            assert time.monotonic() < deadline, "the slow reader's 28 answers were never all written"
            time.sleep(0.02)
        # Its queues once all are answered (read before the gauge, they may show the requests read and no answer yet)
        queue = skmem(server_side)[0]
        assert queue["w"] > 0, queue  # what the client's buffer has no room for waits in the server's send queue
        # the scraper busy again (a head begun), so that the slow reader is the one idle connection the cap may close
        scraper.sendall(b"GET /status HTTP/1.1\r\n")
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as extra:  # the cap: the slow reader's closed
            extra.sendall(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert extra.recv(65536).startswith(b"HTTP/1.1 200")
            slow.settimeout(10)
            answers = b""
            while chunk := slow.recv(65536):  # every answer, then the FIN (a reset raises)
                answers += chunk
            assert [status for status, _, _ in responses(answers)] == [200] * 28


#: ``SeparateChannelProcessing`` values and whether each turns stream offsets on: the SDK for JavaScript's ``true``
#: (as JSON or a string, in any case) does; no other value, whatever its type, does or fails the turn.
SEPARATE_CHANNELS = [(True, True), ("TRUE", True), ("yes", False), ([True], False), ({"true": True}, False)]


def test_odd_separate_channel_processing_values_turn_nothing_on_and_break_nothing(server: ServerThread) -> None:
    """A turn of 0.3 s of silence after a ``speech.config`` with each value of :data:`SEPARATE_CHANNELS`: it ends
    normally (``EndOfDictation``), its phrase carrying ``X-Continuation-Audio-Streams-1-Offset`` exactly when the value
    turns multi-channel processing on; its offsets then are the stream's (a continuation offset of 1 s added)."""
    seen = []
    with connect(server.ws + USP, subprotocols=["USP"]) as ws:  # type: ignore[list-item]
        for value, _ in SEPARATE_CHANNELS:
            rid = uuid.uuid4().hex
            config = {"context": {"audio": {"source": {"samplerate": "16000", "channelcount": "1",
                                                       "SeparateChannelProcessing": value}}}}
            ws.send(_usp_text("speech.config", json.dumps(config), None))
            context = {"phraseDetection": {"language": "ko-KR"},
                       "continuation": {"audio": {"streams": {"1": {"offset": str(TICKS_PER_SECOND)}}}}}
            ws.send(_usp_text("speech.context", json.dumps(context), rid))
            for _ in range(3):  # 0.3 s, in the SDK's chunks
                ws.send(client_audio_frame(rid, bytes(3200)))
            ws.send(client_audio_frame(rid, b""))
            while (frame := parse_text(str(ws.recv(timeout=10)))).path != "speech.phrase":
                pass
            body = frame.json()
            assert body["RecognitionStatus"] == "EndOfDictation", body
            seen.append((CONTINUATION_OFFSET.lower() in frame.headers, body["Offset"] >= TICKS_PER_SECOND))
            while parse_text(str(ws.recv(timeout=10))).path != "turn.end":
                pass
    assert seen == [(on, on) for _, on in SEPARATE_CHANNELS]


#: Upgrade URLs' key parameters, and what each gets: one key, however many times, is taken; two different keys are
#: ambiguous, whichever comes first and under whichever names.
AMBIGUOUS = "ambiguous key: the URL's key came 2 times with 2 different keys; send one"
URL_KEYS = {
    f"subscription-key=wrong&subscription-key={TEST_KEY}": AMBIGUOUS,
    f"subscription-key={TEST_KEY}&subscription-key=wrong": AMBIGUOUS,
    f"Ocp-Apim-Subscription-Key=wrong&Authorization=Bearer%20{TEST_KEY}": AMBIGUOUS,
    f"subscription-key={TEST_KEY}&Authorization=Bearer%20{TEST_KEY}": "taken",
}


def _upgrade(url: str, usp: bool) -> str:
    """"taken", or the reason a WebSocket upgrade to ``url`` is refused with: the Speech SDK's route answers the upgrade
    with it (401), ``/vosk`` accepts and closes with it (1008); one it takes ends at ``{"eof" : 1}`` (1000)."""
    try:
        with connect(url, subprotocols=["USP"] if usp else None, open_timeout=10, close_timeout=2) as ws:  # type: ignore[list-item]
            if usp:
                return "taken"
            with pytest.raises(ConnectionClosed) as closed:
                ws.send('{"eof" : 1}')  # refused: the close may come first
                while True:
                    ws.recv(timeout=10)
    except InvalidStatus as refused:
        assert refused.response.status_code == 401
        return refused.response.body.decode()
    assert closed.value.rcvd is not None
    return "taken" if closed.value.rcvd.code == 1000 else closed.value.rcvd.reason


@pytest.mark.parametrize("route", [USP, "/vosk?language=ko-KR"])
def test_an_upgrade_url_with_two_different_keys_is_refused_as_ambiguous(keyed_server: ServerThread, route: str) -> None:
    """A WebSocket upgrade (the Speech SDK's route, ``/vosk``) whose URL gives the key twice: :data:`URL_KEYS`, refused
    saying "ambiguous key" (401) as a key header sent twice is (3b23d15). Before, the routes read the query as a dict,
    its last value per name, and the names in order: "wrong, then right" under one name was taken, "right, then wrong"
    refused as a wrong key, and under two names the first counted."""
    assert {query: _upgrade(f"{keyed_server.ws}{route}&{query}", route == USP) for query in URL_KEYS} == URL_KEYS
