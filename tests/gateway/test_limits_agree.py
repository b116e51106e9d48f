"""The same input sent to a recognizer directly and through the gateway gets the same answer: what the recognizer takes,
the gateway relays; what it refuses, the gateway refuses alike (status or close code, and reason), or, where the gateway
is stricter on purpose (a WebSocket message: SPEECH_GATEWAY_MAX_MESSAGE_BYTES), with the same close code and words and
its setting named. Real recognizer processes behind a real gateway (tests/gateway/conftest.py); README's table of both
sides' limits ("What the gateway allows a connection") is generated from where each is declared.
"""


from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
from collections.abc import Callable, Iterator

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect
from websockets.typing import Subprotocol

from harness.hostile_inputs import response_complete
from speech_operator.gateway import GATEWAY, Gateway, GatewayConfig
from speech_operator.gateway_http_limits import HeadLimits
from speech_operator.gateway_openai import UNCOUNTED_BYTES
from speech_operator.gateway_relay import MAX_MESSAGE_BYTES
from speech_recognizer import contract
from speech_recognizer.audio import MAX_BYTES_PER_SECOND
from speech_recognizer.contract import MAX_HEADERS
from speech_recognizer.http_limits import HttpLimits
from speech_recognizer.serving import DEAD_PEER_SECONDS, KEEPALIVE_SECONDS, PING_INTERVAL_SECONDS
from speech_recognizer.settings import declared
from tests.doc_tables import README, assert_generated

from ..support import TcpServerThread
from .conftest import KEY, OTHER_LOCALE, Locales, speech_to_text

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
#: the gateway with 400 "Got more than 8190 bytes when reading" (as many headers as the gateway takes: below).
HEADS = {
    "a query string over 8 KiB": request(REST + "&x=" + "a" * 9000),
    "a header over 8 KiB (a long token)": request(REST, "Authorization: Bearer " + "t" * 9000),
}


@pytest.mark.parametrize("what", HEADS)
def test_a_head_the_recognizer_takes_is_relayed_too(locales: Locales, what: str) -> None:
    ko, gateway = locales.recognizers["ko-KR"], locales.stack
    direct = answer(exchange(ko.port, HEADS[what]))
    assert direct[0] == "400" and b"empty" in direct[1], direct  # the recognizer read the head, and judged the body
    assert answer(exchange(gateway.port, HEADS[what])) == direct


def test_a_websocket_upgrade_with_a_token_over_8_kib_is_served_by_both(locales: Locales) -> None:
    """A Speech SDK upgrade with an ``Authorization`` header of 9 KB (an Entra ID token is 1.5-4 KiB; proxies add
    more), as a REST request with it is: 101 from the recognizer, directly and through the gateway. Before, the
    recognizer's websockets (which parses an upgrade's head again) refused a line over its own 8192 bytes with a 431 that
    uvicorn never wrote: no answer either way, until the client gave up."""
    ko, gateway = locales.recognizers["ko-KR"], locales.stack
    token = {"Authorization": "Bearer " + "t" * 9000}
    for port in (ko.port, gateway.port):
        with connect(f"ws://127.0.0.1:{port}{contract.RECOGNITION_PATHS[1]}?language=ko-KR", additional_headers=token,
                     subprotocols=["USP"], open_timeout=10, close_timeout=2) as ws:
            assert ws.response.status_code == 101, (port, ws.response.status_code)


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


def test_more_headers_than_max_headers_get_the_same_431_from_both(locales: Locales) -> None:
    """One bound on both sides (speech_recognizer.contract.MAX_HEADERS): 431 with the count. Before, a recognizer counted
    only the head's bytes and took the head; aiohttp's parser at the gateway said 400 "not a valid HTTP/1.1 request: Too
    many headers received" of a valid request."""
    assert HeadLimits.max_headers == MAX_HEADERS
    ko, gateway = locales.recognizers["ko-KR"], locales.stack
    head = headers(MAX_HEADERS + 1)
    for port in (ko.port, gateway.port):
        status, body = answer(exchange(port, head))
        assert (status, json.loads(body)["error"]["message"]) == ("431", f"the request's head has over {MAX_HEADERS} headers")


KEYED = f"{contract.RECOGNITION_PATHS[1]}?language={OTHER_LOCALE}"
#: A key header sent twice: the keys in the order sent.
DOUBLED = {"right, then wrong": (KEY, "wrong"), "wrong, then right": ("wrong", KEY), "right, twice": (KEY, KEY)}


def upgrade_status(url: str, headers: list[tuple[str, str]]) -> int:
    """The status a Speech SDK upgrade to ``url`` with ``headers`` gets (101: accepted)."""
    try:
        with connect(url, additional_headers=headers, subprotocols=[Subprotocol("USP")], open_timeout=10,
                     close_timeout=2) as ws:
            assert ws.response is not None
            return ws.response.status_code
    except InvalidStatus as refused:
        return refused.response.status_code


@pytest.mark.parametrize("spelling", ["alike", "second in lower case"])
@pytest.mark.parametrize("header", ["Ocp-Apim-Subscription-Key", "Authorization"])
@pytest.mark.parametrize("keys", DOUBLED)
def test_a_key_header_sent_twice_gets_the_same_answer_from_both(locales: Locales, keys: str, header: str,
                                                               spelling: str) -> None:
    """Two different keys in one key header are ambiguous: the recognizer answers 401 saying so, whichever comes first,
    and the gateway, which relays both, gets the client the same answer; the same key twice is taken (400 here: the
    body is empty). On a Speech SDK upgrade, the same status from both. Before, the recognizer took the first key and
    the gateway relayed the last only: "right, then wrong" got 400 directly and 401 through the gateway, "wrong, then
    right" the other way round. Then, with the second line's name in lower case, the gateway still relayed the second
    key alone (aiohttp's client session compares names case-sensitively): "wrong, then right" was taken through it."""
    recognizer, gateway = locales.recognizers[OTHER_LOCALE], locales.stack
    names = [header, header if spelling == "alike" else header.lower()]
    sent = [(name, f"Bearer {key}" if header == "Authorization" else key) for name, key in zip(names, DOUBLED[keys], strict=True)]
    said = {}
    for name, port in (("recognizer", recognizer.port), ("gateway", gateway.port)):
        status, body = answer(exchange(port, request(KEYED, *(f"{n}: {v}" for n, v in sent))))
        said[name] = (status, json.loads(body)["error"]["message"])
    where = "Authorization: Bearer" if header == "Authorization" else header
    assert said["recognizer"] == (("400", said["recognizer"][1]) if keys == "right, twice" else
                                  ("401", f"ambiguous key: {where} came 2 times with 2 different keys; send one")), said
    assert said["gateway"] == said["recognizer"]
    statuses = {upgrade_status(f"{where_}{KEYED}", sent) for where_ in (recognizer.ws, gateway.ws)}
    assert statuses == {101 if keys == "right, twice" else 401}, statuses


def largest(taken: Callable[[int], bool], low: int, high: int) -> int:
    """The largest ``n`` from ``low`` (taken) below ``high`` (not) that is ``taken``, by halves."""
    assert taken(low) and not taken(high), (low, high)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if taken(middle) else (low, middle)
    return low


def padded(pad: int) -> str:
    """:func:`request` with a header ``X-Pad`` of ``pad`` bytes in all."""
    return request(REST, "X-Pad: " + "p" * (pad - len("X-Pad: \r\n")))


def test_a_head_the_gateway_relays_is_one_the_recognizer_takes(locales: Locales) -> None:
    """The gateway adds headers of its own to what it relays (``Host``, ``X-Forwarded-For``, ``-Proto``, ``-Host``, the
    framing): the largest head it relays, by bytes and by headers, is answered by the recognizer (400: its empty body,
    not 431), and one a byte or a header more gets the gateway's 431, naming its setting, though a recognizer takes it
    directly. Before, a head within 150 to 200 bytes of the limit (or 3 headers of it) passed the gateway and got the
    recognizer's 431 naming Http:MaxHeaderBytes, a setting of a pod the client does not know."""
    ko, gateway = locales.recognizers["ko-KR"], locales.stack
    limit = declared("http_max_header_bytes").default
    for make, low, high, said in (
            (padded, 20, limit, (f"the request's head is over {limit} bytes once the gateway adds its own headers (Host, "
                                 "X-Forwarded-*): ", " (SPEECH_GATEWAY_MAX_HEADER_BYTES)")),
            (headers, 4, MAX_HEADERS + 1, (f"the request's head has over {MAX_HEADERS} headers once the gateway adds its "
                                           "own (Host, X-Forwarded-*): ", ""))):
        most = largest(lambda n: answer(exchange(gateway.port, make(n)))[0] != "431", low, high)  # noqa: B023
        relayed = answer(exchange(gateway.port, make(most)))
        assert relayed[0] == "400" and b"empty" in relayed[1], relayed  # the recognizer read the head, and judged the body
        status, body = answer(exchange(gateway.port, make(most + 1)))
        message = json.loads(body)["error"]["message"]
        prefix, suffix = said
        assert status == "431" and message.startswith(prefix) and message.endswith(suffix), message
        assert int(message[len(prefix):len(message) - len(suffix)]) == (limit if make is padded else MAX_HEADERS) + 1, message
        direct = answer(exchange(ko.port, make(most + 1)))
        assert direct[0] == "400" and b"empty" in direct[1], direct


class HeadCatcher(TcpServerThread):
    """A stand-in recognizer that keeps each head the gateway sends it, byte for byte (a recognizer shows none), and
    answers it 403, closing."""

    def __init__(self) -> None:
        self.port = 0
        self.heads: list[bytes] = []

    async def relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            self.heads.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()


CAUGHT_LOCALE = "de-DE"
CAUGHT_PATH = f"{contract.RECOGNITION_PATHS[1]}?language={CAUGHT_LOCALE}"
#: Requests as clients send them, ``extra`` header lines added: what the gateway writes of its own differs for each.
CAUGHT: dict[str, Callable[[str], bytes]] = {
    "REST, its length declared": lambda extra: (f"POST {CAUGHT_PATH} HTTP/1.1\r\nHost: speech\r\nContent-Length: 4\r\n"
                                                f"Connection: close\r\n{extra}\r\nRIFF").encode(),
    "REST, chunked": lambda extra: (f"POST {CAUGHT_PATH} HTTP/1.1\r\nHost: speech\r\nTransfer-Encoding: chunked\r\n"
                                    f"Connection: close\r\n{extra}\r\n4\r\nRIFF\r\n0\r\n\r\n").encode(),
    "a Speech SDK upgrade": lambda extra: (f"GET {CAUGHT_PATH} HTTP/1.1\r\nHost: speech\r\nUpgrade: websocket\r\n"
                                           "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                           f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: USP\r\n{extra}\r\n").encode(),
}


@pytest.fixture(scope="module")
def catcher(locales: Locales) -> Iterator[HeadCatcher]:
    """A :class:`HeadCatcher` the gateway of ``locales`` routes :data:`CAUGHT_LOCALE` to."""
    with HeadCatcher() as caught:
        locales.stack.create(speech_to_text("caught", CAUGHT_LOCALE, caught.port))
        locales.stack.routes(CAUGHT_LOCALE)
        try:
            yield caught
        finally:
            locales.stack.delete("caught")


#: Header lines a client may send more than once, each relayed (``X-Forwarded-For``'s joined in one line): written, and
#: counted, as many times as they came.
REPEATED = "Cookie: a=1\r\nX-Forwarded-For: 203.0.113.7\r\nCookie: b=2\r\nX-Forwarded-For: 198.51.100.1\r\n"


@pytest.mark.parametrize("repeated", [False, True], ids=["distinct names", "repeated names"])
@pytest.mark.parametrize("what", CAUGHT)
def test_the_largest_head_the_gateway_relays_is_the_recognizers_largest_byte_for_byte(
        locales: Locales, catcher: HeadCatcher, what: str, repeated: bool) -> None:
    """What the gateway reckons it would write (its 431 when over) is what it writes: the largest head it relays arrives
    exactly Http:MaxHeaderBytes long (request line and blank line included: a recognizer counts every byte of a head
    that comes in pieces), the largest by headers with exactly MAX_HEADERS of them; a byte or a header more is refused
    and reaches nothing. None of aiohttp's own headers is added (``Accept``, ``Accept-Encoding``, ``Content-Type``,
    ``User-Agent``): the recognizer sees the client's headers, the Service's ``Host``, ``X-Forwarded-*`` and the framing.
    The same with headers sent more than once (``repeated``: :data:`REPEATED`, and the headers counted all of one name),
    each line relayed and counted; before, the gateway wrote and counted a repeated header's last line only."""
    make, port, limit = CAUGHT[what], locales.stack.port, declared("http_max_header_bytes").default

    def caught(extra: str) -> bytes | None:
        before = len(catcher.heads)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:  # a refused upgrade's connection stays open
            s.sendall(make(extra))
            out = b""
            while not response_complete(out) and (chunk := s.recv(65536)):
                out += chunk
        status = answer(out)[0]
        assert (status == "431") == (len(catcher.heads) == before), (status, catcher.heads[before:])
        return None if status == "431" else catcher.heads[-1]

    def pad(n: int) -> str:
        return (REPEATED if repeated else "") + "X-Pad: " + "p" * n + "\r\n"

    def lines(n: int) -> str:
        return "".join(f"X-{0 if repeated else i}: 1\r\n" for i in range(n))

    most = largest(lambda n: caught(pad(n)) is not None, 1, limit)
    head = caught(pad(most))
    assert head is not None and len(head) == limit, (most, None if head is None else len(head))
    if repeated:
        assert b"\r\nCookie: a=1\r\nCookie: b=2\r\n" in head, head[:300]
        assert b"\r\nX-Forwarded-For: 203.0.113.7, 198.51.100.1, 127.0.0.1\r\n" in head, head[:300]
    names = {line.split(b":")[0].lower() for line in head.split(b"\r\n")[1:] if line}
    assert not names & {b"accept", b"accept-encoding", b"content-type", b"user-agent"}, names
    assert caught(pad(most + 1)) is None
    most = largest(lambda n: caught(lines(n)) is not None, 1, MAX_HEADERS)
    head = caught(lines(most))
    assert head is not None and head.count(b"\r\n") - 2 == MAX_HEADERS, head[:300]  # not the request line's, nor the blank line's
    assert not repeated or head.count(b"\nX-0: 1\r") == most, head[:300]
    assert caught(lines(most + 1)) is None


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
         f"{gateway('max_header_bytes', ' bytes')}, its own (`Host`, `X-Forwarded-*`) counted", "431"),
        ("one line of a head (a query string, a token)", "none but the head's", "none but the head's", "431"),
        ("headers in a head", f"{MAX_HEADERS}", f"{MAX_HEADERS}, its own (`Host`, `X-Forwarded-*`) counted", "431"),
        ("time for a request head, from its first byte", recognizer("http_header_timeout_seconds", " s"),
         gateway("header_seconds", " s"), "408"),
        ("a request pipelined behind one in progress", f"parsed {HttpLimits.max_pipelined} at a time (the one answered and "
         "the next); the rest unread until an answer is done",
         "unread until the one in progress is answered; then its head bounded and timed as a first head", "431 / 408"),
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
        ("what a client takes in none of, sent to it", f"{recognizer('audio_idle_seconds', ' s')} on a WebSocket; the kernel's "
         f"{DEAD_PEER_SECONDS} s (`TCP_USER_TIMEOUT`) on HTTP", f"{gateway('send_stall_seconds', ' s')}, every kind; a client "
         "that takes some in, however slowly, is not cut", "connection reset (`not_reading`)"),
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
