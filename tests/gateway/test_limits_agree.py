"""The same input sent to a recognizer directly and through the gateway gets the same answer: what the recognizer takes,
the gateway relays; what it refuses, the gateway refuses alike (status or close code, and reason), or, where the gateway
is stricter on purpose (a WebSocket message: SPEECH_GATEWAY_MAX_MESSAGE_BYTES), with the same close code and words and
its setting named. Real recognizer processes behind a real gateway (tests/gateway/conftest.py); README's table of both
sides' limits ("What the gateway allows a connection") is generated from where each is declared.
"""


from __future__ import annotations

import dataclasses
import json
import socket
from collections.abc import Iterator

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from speech_operator.gateway import GATEWAY, Gateway, GatewayConfig
from speech_operator.gateway_http_limits import HeadLimits
from speech_operator.gateway_openai import UNCOUNTED_BYTES
from speech_operator.gateway_relay import MAX_MESSAGE_BYTES
from speech_recognizer import contract
from speech_recognizer.audio import MAX_BYTES_PER_SECOND
from speech_recognizer.serving import KEEPALIVE_SECONDS, PING_INTERVAL_SECONDS
from speech_recognizer.settings import declared
from tests.doc_tables import README, assert_generated

from .conftest import Locales

REST = contract.RECOGNITION_PATHS[1] + "?language=ko-KR"


def exchange(port: int, head: str, timeout: float = 10) -> bytes:
    """``head`` sent whole on a new connection (it asks to close), and all that comes back."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head.encode())
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def answer(raw: bytes) -> tuple[str, bytes]:
    """The status line's code and the body of one answer."""
    head, _, body = raw.partition(b"\r\n\r\n")
    return head.split(b" ", 2)[1].decode(), body


def request(path: str, *headers: str) -> str:
    """A REST recognition with an empty body (the recognizer answers 400, naming it), closing its connection."""
    return "".join(f"{line}\r\n" for line in (f"POST {path} HTTP/1.1", "Host: speech", *headers, "Content-Length: 0",
                                               "Connection: close")) + "\r\n"


def headers(count: int) -> str:
    """A request with ``count`` headers (its Host, Content-Length and Connection among them)."""
    return request(REST, *(f"X-Trace-{i}: {i}" for i in range(count - 3)))


#: Heads a recognizer takes whole (under Http:MaxHeaderBytes, 16 KiB) that aiohttp's bound of 8190 bytes a line refused at
#: the gateway with 400 "Got more than 8190 bytes when reading"; and as many headers as the gateway takes.
HEADS = {
    "a query string over 8 KiB": request(REST + "&x=" + "a" * 9000),
    "a header over 8 KiB (a long token)": request(REST, "Authorization: Bearer " + "t" * 9000),
    f"{HeadLimits.max_headers} headers": headers(HeadLimits.max_headers),
}


@pytest.mark.parametrize("what", HEADS)
def test_a_head_the_recognizer_takes_is_relayed_too(locales: Locales, what: str) -> None:
    ko, gateway = locales.recognizers["ko-KR"], locales.stack
    direct = answer(exchange(ko.port, HEADS[what]))
    assert direct[0] == "400" and b"empty" in direct[1], direct  # the recognizer read the head, and judged the body
    assert answer(exchange(gateway.port, HEADS[what])) == direct


@pytest.mark.parametrize("where", ["in one piece", "as it arrives"])
def test_a_head_over_the_limit_gets_431_from_both_each_naming_its_setting(locales: Locales, where: str) -> None:
    """The same default on both sides (Http:MaxHeaderBytes, SPEECH_GATEWAY_MAX_HEADER_BYTES): the same 431, each reason
    naming the setting that bounds it (the gateway's named none)."""
    ko, gateway = locales.recognizers["ko-KR"], locales.stack
    head = request(REST, "X-Pad: " + "p" * declared("http_max_header_bytes").default)
    said = {}
    for name, port in (("recognizer", ko.port), ("gateway", gateway.port)):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            if where == "in one piece":
                s.sendall(head.encode())
            else:  # a piece at a time: refused once past the limit, before the head ends
                for at in range(0, len(head) - 100, 4096):
                    s.sendall(head[at:at + 4096].encode())
            status, body = answer(s.recv(65536))
        said[name] = (status, json.loads(body)["error"]["message"])
    limit = declared("http_max_header_bytes").default
    assert said == {"recognizer": ("431", f"the request's head is over {limit} bytes (Http:MaxHeaderBytes)"),
                    "gateway": ("431", f"the request's head is over {limit} bytes (SPEECH_GATEWAY_MAX_HEADER_BYTES)")}


def test_more_headers_than_the_gateway_takes_get_431_saying_so(locales: Locales) -> None:
    """The gateway's own bound, stricter than a recognizer's (which counts only the head's bytes): 431 with the count,
    where aiohttp's parser said 400 "not a valid HTTP/1.1 request: Too many headers received" of a valid request."""
    ko, gateway = locales.recognizers["ko-KR"], locales.stack
    head = headers(HeadLimits.max_headers + 1)
    assert answer(exchange(ko.port, head))[0] == "400"  # taken: its empty body refused
    status, body = answer(exchange(gateway.port, head))
    assert (status, json.loads(body)["error"]["message"]) == ("431", f"the request's head has over {HeadLimits.max_headers} headers")


@pytest.fixture
def message_limit(locales: Locales) -> Iterator[Gateway]:
    """The gateway of ``locales``, its SPEECH_GATEWAY_MAX_MESSAGE_BYTES restored after the test (which may set it)."""
    gateway = locales.stack.app[GATEWAY]
    config = gateway.config
    try:
        yield gateway
    finally:
        gateway.config = config


def vosk(url: str, message: bytes) -> tuple[str, ...]:
    """A /vosk stream whose audio is ``message`` in one WebSocket message: its final result, or the close it got."""
    try:
        with connect(url, max_size=None, open_timeout=10, close_timeout=5) as ws:
            ws.send(json.dumps({"config": {"sample_rate": 16000}}))
            ws.send(message)
            ws.recv(timeout=20)
            ws.send(json.dumps({"eof": 1}))
            return ("result", json.loads(ws.recv(timeout=20))["text"])
    except ConnectionClosed as closed:
        assert closed.rcvd is not None, closed
        return ("closed", str(closed.rcvd.code), closed.rcvd.reason)


def test_websocket_messages_up_to_the_recognizers_limit_pass_when_the_gateway_takes_as_much(
        locales: Locales, message_limit: Gateway) -> None:
    """SPEECH_GATEWAY_MAX_MESSAGE_BYTES at its most, the recognizers' 1 MiB: a message of that size is recognized directly
    and through the gateway, and one a byte larger is closed 1009 with the same reason by both (aiohttp's close had none)."""
    message_limit.config = dataclasses.replace(message_limit.config, max_message_bytes=MAX_MESSAGE_BYTES)
    ko, gateway = locales.recognizers["ko-KR"], locales.stack
    for size in (MAX_MESSAGE_BYTES, MAX_MESSAGE_BYTES + 1):
        direct = vosk(f"{ko.ws}/vosk", b"\0" * size)
        assert direct[0] == ("result" if size == MAX_MESSAGE_BYTES else "closed"), direct
        assert vosk(f"{gateway.ws}/vosk?language=ko-KR", b"\0" * size) == direct
    assert direct == ("closed", "1009", f"frame with {MAX_MESSAGE_BYTES + 1} bytes exceeds limit of {MAX_MESSAGE_BYTES} bytes")


def test_a_message_over_the_gateways_stricter_default_is_closed_in_the_recognizers_words(locales: Locales) -> None:
    """By default the gateway takes messages of up to 64 KiB, a recognizer 1 MiB (why: README, "What the gateway allows a
    connection"): one larger is taken directly, and closed 1009 by the gateway with the recognizer's words and its setting."""
    ko, gateway = locales.recognizers["ko-KR"], locales.stack
    size = GatewayConfig.max_message_bytes + 1
    assert vosk(f"{ko.ws}/vosk", b"\0" * size)[0] == "result"
    assert vosk(f"{gateway.ws}/vosk?language=ko-KR", b"\0" * size) == (
        "closed", "1009", f"frame with {size} bytes exceeds limit of {size - 1} bytes (SPEECH_GATEWAY_MAX_MESSAGE_BYTES)")


def markdown_table() -> str:
    """README's table of the limits on both sides ("What the gateway allows a connection"), each value from where it is
    declared: the recognizer's settings and serving options, the gateway's settings."""
    def said(value: float, unit: str) -> str:
        return f"{value:g}{unit}" if isinstance(value, float) else f"{value}{unit}"

    def recognizer(name: str, unit: str = "") -> str:
        d = declared(name)
        return f"`{d.key}` ({said(d.default, unit)})"

    def gateway(name: str, unit: str = "") -> str:
        return f"`SPEECH_GATEWAY_{name.upper()}` ({said(getattr(GatewayConfig, name), unit)})"

    audio, pause = declared("max_audio_seconds"), declared("http_body_timeout_seconds")
    rows = [
        ("request head (request line and headers)", recognizer("http_max_header_bytes", " bytes"),
         gateway("max_header_bytes", " bytes"), "431"),
        ("one line of a head (a query string, a token)", "none but the head's", "none but the head's", "431"),
        ("headers in a head", "none but the head's", f"{HeadLimits.max_headers}", "431"),
        ("time for a request head, from its first byte", recognizer("http_header_timeout_seconds", " s"),
         gateway("header_seconds", " s"), "408"),
        ("a REST body: longest pause, whole body's time",
         f"{recognizer('http_body_timeout_seconds', ' s')} of pause, `{audio.key}` + it ({audio.default + pause.default:g} s)",
         "the recognizer's (relayed as it comes)", "408"),
        ("a REST body's size", f"`{audio.key}` ({audio.default:g} s) of audio", "the recognizer's (relayed as it comes)",
         "413"),
        ("an OpenAI form whose file comes before its `language` field",
         f"its body, as a REST body's (`{audio.key}` of the widest audio: "
         f"{int(audio.default * MAX_BYTES_PER_SECOND) // 10**6} MB)",
         f"read ahead to find the field: {gateway('form_buffer_bytes', ' bytes')}, a pause of {gateway('form_pause_seconds', ' s')}, "
         f"{gateway('form_read_seconds', ' s')} in all, {gateway('form_budget_bytes', ' bytes')} of all forms at once "
         f"(each one's first {UNCOUNTED_BYTES} bytes not counted); a form whose `language` comes first, or "
         "`?language=`, is relayed as it comes", "413 / 408 / 503"),
        ("a WebSocket message from a client", f"{MAX_MESSAGE_BYTES} bytes",
         f"{gateway('max_message_bytes', ' bytes')}, at most {MAX_MESSAGE_BYTES}",
         "close 1009 `frame with N bytes exceeds limit of M bytes` (the gateway's names its setting when it is the lower)"),
        ("a WebSocket message to a client", "none (its own results)", "none (relayed as it comes)", "—"),
        ("an idle kept-alive HTTP connection", f"{KEEPALIVE_SECONDS:g} s", f"{KEEPALIVE_SECONDS:g} s", "closed"),
        ("connections open at once", f"{recognizer('http_max_connections')} HTTP, {recognizer('max_connections')} "
         "recognition WebSockets", gateway("max_connections") + ", every kind", "503 + `Retry-After` / close 1013"),
        ("a WebSocket without a message", f"{recognizer('audio_idle_seconds', ' s')} in a stream, "
         f"{recognizer('connection_idle_seconds', ' s')} between streams", "the recognizer's (its close relayed)",
         "close 1008 / 1000"),
        ("keepalive pings", f"every {PING_INTERVAL_SECONDS:g} s, no pong deadline",
         "none of its own: the recognizer's pings reach the client and its pongs come back", "—"),
    ]
    lines = ["| limit | recognizer | gateway | answer |", "| --- | --- | --- | --- |"]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    return "\n".join(lines) + "\n"


@pytest.mark.unit
def test_readme_says_each_limit_on_both_sides() -> None:
    assert_generated(markdown_table(), README, "table of the gateway's and the recognizer's limits")
