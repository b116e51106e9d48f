"""A header sent more than once crosses the gateway as it came, each line in order (RFC 9110 5.3: a repeated field is a
list, its order significant), both ways: two ``Cookie`` lines, a repeated ``Accept-Language``, a doubled key header
reach the recognizer as two lines; several ``X-Forwarded-For`` lines (a chain of proxies) become one, every address in
order and then the client's; the recognizer's repeated response headers (two ``Set-Cookie``) reach the client. Before,
the gateway kept a header's last line only, and ``X-Forwarded-For`` its first.

Behind the real gateway (its directory fed by kmock: tests/gateway/conftest.py's :class:`Stack`) is a stand-in
recognizer that keeps each head it gets byte for byte and answers with repeated headers: a recognizer shows neither
what head it got nor sends such headers. What a recognizer does with a doubled key, directly and through the gateway,
is tests/gateway/test_limits_agree.py (real recognizer processes).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.hostile_inputs import response_complete
from speech_operator.gateway import GatewayConfig
from speech_recognizer import contract

from ..support import TcpServerThread
from .conftest import Stack, speech_to_text

LOCALE = "de-DE"
PATH = f"{contract.RECOGNITION_PATHS[1]}?language={LOCALE}"
#: What the stand-in answers a recognition: headers sent twice or more, each line its own.
ANSWER_FIELDS = [("Set-Cookie", "a=1; Path=/"), ("Link", "<https://example.invalid/1>; rel=help"),
                 ("Set-Cookie", "b=2; Path=/"), ("Link", "<https://example.invalid/2>; rel=help"), ("Vary", "Accept"),
                 ("Vary", "Accept-Language")]


class Echo(TcpServerThread):
    """A stand-in recognizer: keeps each head it gets, byte for byte; reads a request's body to its end and answers
    :data:`ANSWER_FIELDS`; refuses an upgrade (403)."""

    def __init__(self) -> None:
        self.port = 0
        self.heads: list[bytes] = []

    async def relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.heads.append(head)
            lines = dict(fields(head))  # the framing's names are sent once
            if head.startswith(b"GET "):
                writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            else:
                if "chunked" in lines.get("transfer-encoding", ""):
                    await reader.readuntil(b"0\r\n\r\n")
                else:
                    await reader.readexactly(int(lines.get("content-length", "0")))
                writer.write(b"HTTP/1.1 200 OK\r\n" + b"".join(f"{n}: {v}\r\n".encode() for n, v in ANSWER_FIELDS)
                             + b"Content-Length: 2\r\nConnection: close\r\n\r\nok")
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()


def fields(head: bytes) -> list[tuple[str, str]]:
    """A head's header lines, in order: (name in lower case, value)."""
    out = []
    for line in head.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.decode().partition(":")
        out.append((name.strip().lower(), value.strip()))
    return out


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Echo]]:
    """The gateway, routing :data:`LOCALE` to an :class:`Echo`, its clients (127.0.0.1) trusted proxies as an ingress
    controller is (``SPEECH_GATEWAY_TRUSTED_PROXIES``): their ``X-Forwarded-Proto`` lines go on."""
    config = GatewayConfig(host="127.0.0.1", port=0, trusted_proxies="127.0.0.1")
    with Echo() as echo, Stack(Path(tmp_path_factory.mktemp("repeated")), config) as stack:
        stack.create(speech_to_text("echo", LOCALE, echo.port))
        stack.routes(LOCALE)
        yield stack, echo


def exchange(port: int, request: bytes) -> bytes:
    """``request`` sent on a new connection, and the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        out = b""
        while not response_complete(out) and (chunk := s.recv(65536)):
            out += chunk
    return out


#: A client's header lines, some of them repeated (the names differ in case as clients' do), behind two proxies.
SENT = [("Cookie", "a=1"), ("Accept-Language", "ko-KR"), ("X-Forwarded-For", "203.0.113.7"), ("Cookie", "b=2"),
        ("Ocp-Apim-Subscription-Key", "first"), ("x-forwarded-for", "198.51.100.1, 10.0.0.2"),
        ("accept-language", "en;q=0.5"), ("X-Forwarded-Proto", "https"), ("ocp-apim-subscription-key", "second"),
        ("X-Forwarded-Proto", "http")]
#: Requests as clients send them, :data:`SENT` among their headers: the relay builds each one's head its own way.
REQUESTS = {
    "REST, its length declared": b"POST %s HTTP/1.1\r\nHost: speech\r\nContent-Length: 4\r\n%s\r\nRIFF",
    "REST, chunked": b"POST %s HTTP/1.1\r\nHost: speech\r\nTransfer-Encoding: chunked\r\n%s\r\n4\r\nRIFF\r\n0\r\n\r\n",
    "a Speech SDK upgrade": b"GET %s HTTP/1.1\r\nHost: speech\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                            b"Sec-WebSocket-Protocol: USP\r\n%s\r\n",
}


@pytest.mark.parametrize("what", REQUESTS)
def test_a_clients_repeated_headers_reach_the_recognizer_each_in_order(gateway: tuple[Stack, Echo], what: str) -> None:
    """Every line of :data:`SENT` but ``X-Forwarded-For`` arrives, in the order sent; ``X-Forwarded-For`` is one line:
    both proxies' addresses in order, then the client's; ``X-Forwarded-Proto`` is the client's two lines (a trusted
    proxy's: the gateway adds its own only when there is none; an untrusted client's are replaced:
    test_forwarded_chain.py), ``X-Forwarded-Host`` the gateway's one. The key header's second line is
    spelled in lower case: before, aiohttp's client session (which compares names case-sensitively) let it replace the
    first, and the recognizer got the second key alone (names aiohttp knows, ``Accept-Language``, its parser spells
    alike: those were kept)."""
    stack, echo = gateway
    lines = "".join(f"{name}: {value}\r\n" for name, value in SENT).encode()
    answer = exchange(stack.port, REQUESTS[what] % (PATH.encode(), lines))
    assert answer.startswith(b"HTTP/1.1 403 " if what == "a Speech SDK upgrade" else b"HTTP/1.1 200 "), answer
    got = fields(echo.heads[-1])
    client_names = {name.lower() for name, _ in SENT} - {"x-forwarded-for"}
    assert [line for line in got if line[0] in client_names] == [
        (name.lower(), value) for name, value in SENT if name.lower() in client_names], got
    assert [value for name, value in got if name == "x-forwarded-for"] == ["203.0.113.7, 198.51.100.1, 10.0.0.2, 127.0.0.1"]
    assert [value for name, value in got if name == "x-forwarded-host"] == ["speech"], got


def test_the_recognizers_repeated_headers_reach_the_client_each_in_order(gateway: tuple[Stack, Echo]) -> None:
    stack, _ = gateway
    answer = exchange(stack.port, REQUESTS["REST, its length declared"] % (PATH.encode(), b""))
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"\r\n\r\nok"), answer
    names = {name.lower() for name, _ in ANSWER_FIELDS}
    assert [line for line in fields(answer) if line[0] in names] == [(n.lower(), v) for n, v in ANSWER_FIELDS], answer


def test_the_gateway_keeps_no_cookie_a_recognizer_sets(gateway: tuple[Stack, Echo]) -> None:
    """A ``Set-Cookie`` of the recognizer is for the client that got it: the next client's request (another client's,
    without cookies, or with its own two ``Cookie`` lines) reaches the recognizer with its own lines only. Before, the
    gateway's client kept cookies (aiohttp's jar) and sent them on every later request to that recognizer, merged into
    one ``Cookie`` line with the first of the client's own."""
    stack, echo = gateway
    set_cookie = exchange(stack.port, REQUESTS["REST, its length declared"] % (PATH.encode(), b""))
    assert b"Set-Cookie: " in set_cookie, set_cookie
    for own in ([], [("Cookie", "c=3"), ("Cookie", "d=4")]):
        lines = "".join(f"{name}: {value}\r\n" for name, value in own).encode()
        exchange(stack.port, REQUESTS["REST, its length declared"] % (PATH.encode(), lines))
        assert [line for line in fields(echo.heads[-1]) if line[0] == "cookie"] == [("cookie", v) for _, v in own]
