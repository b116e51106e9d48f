"""The same input sent to a recognizer directly and through the gateway gets the same answer: what the recognizer takes,
the gateway relays. Real recognizer processes behind a real gateway (tests/gateway/conftest.py).
"""

from __future__ import annotations

import json
import socket

import pytest

from speech_operator.gateway_http_limits import HeadLimits
from speech_recognizer import contract

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


def test_more_headers_than_the_gateway_takes_get_431_saying_so(locales: Locales) -> None:
    """The gateway's own bound, stricter than a recognizer's (which counts only the head's bytes): 431 with the count,
    where aiohttp's parser said 400 "not a valid HTTP/1.1 request: Too many headers received" of a valid request."""
    ko, gateway = locales.recognizers["ko-KR"], locales.stack
    head = headers(HeadLimits.max_headers + 1)
    assert answer(exchange(ko.port, head))[0] == "400"  # taken: its empty body refused
    status, body = answer(exchange(gateway.port, head))
    assert (status, json.loads(body)["error"]["message"]) == ("431", f"the request's head has over {HeadLimits.max_headers} headers")
