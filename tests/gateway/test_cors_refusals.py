"""The gateway's own refusals (its connection cap's 503, its head guard's 431 and 408:
:mod:`speech_operator.gateway_http_limits`) read by a page of an allowed origin (``SPEECH_GATEWAY_CORS_ORIGINS``), with
the real client: headless Chromium on another loopback port (tests/recognizer/test_cors.py's page and calls). No
recognizer is behind the gateway: each is refused before one would be reached.

Before, the preflight on a connection past ``SPEECH_GATEWAY_MAX_CONNECTIONS`` got the 503 without any
``Access-Control-*`` header (the browser refuses any answer to a preflight but a 2xx, and so the page got "TypeError:
Failed to fetch" instead of the 503 and its ``Retry-After``), and the 431 the guard writes itself carried none either.
Without the setting these answers are as before.

Both servers find a refused head's ``Origin`` alike, in its bytes as they come
(:class:`speech_recognizer.cors.HeadOrigin`): before, the recognizer took it from its parser, which gives a header only
once the next one's name is in, so that a head that stopped (408) or broke (400) just after its ``Origin`` line got its
refusal without any ``Access-Control-*`` header from the recognizer and with them from the gateway. To a request without
``Origin`` (no browser's call), both say ``Vary: Origin`` and no ``Access-Control-*`` header, whatever answers it:
before, the recognizer's routes said it (Starlette's middleware) and its own refusals and every answer of the gateway
did not, so that a cache could give a page the answer kept for another client, without the header it needs.
"""

from __future__ import annotations

import socket
import time
from contextlib import AbstractContextManager
from pathlib import Path

from playwright.sync_api import Browser

from harness.hostile_inputs import responses, write_then_read
from harness.loopback import free_port
from speech_operator.gateway import GatewayConfig
from speech_recognizer import contract
from speech_recognizer.models import ModelRegistry
from tests.recognizer.test_cors import CALL, EXPOSED, FAILED, WebApp
from tests.recognizer.test_cors_refusals import BIG, apps, busy, cors_lines, server  # noqa: F401 - fixture: the two web apps
from tests.support import scrape_metrics

from .conftest import KEY, OTHER_LOCALE, Stack, speech_to_text

REST = f"/speech/recognition/conversation/cognitiveservices/v1?language={OTHER_LOCALE}"
CAP = 2


def config(*origins: str, **more: object) -> GatewayConfig:
    return GatewayConfig(host="127.0.0.1", port=0, max_connections=CAP, cors_origins=",".join(origins), **more)  # type: ignore[arg-type]


def rest(page_base: str, **more: str) -> list:
    return [page_base + REST, {contract.KEY_HEADER: KEY, "Content-Type": "audio/wav", **more}, None]


def at_the_cap(gateway: Stack) -> AbstractContextManager[None]:
    return busy(gateway.port, lambda: scrape_metrics(gateway.http).get(("speech_gateway_connections", ()), 0) >= CAP, CAP)


def raw(gateway: Stack, head: str) -> tuple[int, dict[str, str]]:
    status, headers, _ = responses(write_then_read("127.0.0.1", gateway.port, head.encode())[0])[0]
    return status, {name: value for name, value in headers.items() if name.startswith("access-control-")}


def test_a_page_reads_the_gateways_own_refusals(browser: Browser, apps: tuple[WebApp, WebApp],  # noqa: F811
                                                tmp_path: Path) -> None:
    allowed, other = apps
    with Stack(tmp_path, config(allowed.origin)) as gateway:
        got = allowed.page(browser).evaluate(CALL, rest(gateway.http, **{"X-Big": BIG}))
        assert got.get("status") == 431 and "SPEECH_GATEWAY_MAX_HEADER_BYTES" in got["text"], got
        assert other.page(browser).evaluate(CALL, rest(gateway.http, **{"X-Big": BIG})) == {"error": FAILED}

        with at_the_cap(gateway):
            got = allowed.page(browser).evaluate(CALL, rest(gateway.http))
            assert got.get("status") == 503 and got["retryAfter"] and "SPEECH_GATEWAY_MAX_CONNECTIONS" in got["text"], got
            assert got["failure"] == "too_many_connections", got  # which 503 it is
            assert other.page(browser).evaluate(CALL, rest(gateway.http)) == {"error": FAILED}

    # 408: a head that stops after its Origin line (its value split across two reads)
    (tmp_path / "408").mkdir()
    with Stack(tmp_path / "408", config(allowed.origin, header_seconds=1)) as gateway:
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
            sock.sendall(f"POST {REST} HTTP/1.1\r\nHost: gateway\r\nOrigin: {allowed.origin[:10]}".encode())
            time.sleep(0.1)
            sock.sendall(f"{allowed.origin[10:]}\r\nX-Slow: ".encode())
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        status, headers, _ = responses(answer)[0]
        assert status == 408 and headers["access-control-allow-origin"] == allowed.origin, headers


def test_a_page_reads_the_refusal_of_a_request_for_a_locale_still_starting(browser: Browser, apps: tuple[WebApp, WebApp],  # noqa: F811
                                                                          tmp_path: Path) -> None:
    """A locale with no ready pod: the request held for it until its hold runs out, or refused at once when the gateway
    holds as many as it may (``SPEECH_GATEWAY_MAX_HELD``), gets a 503 with ``Retry-After`` that the page reads."""
    allowed, other = apps
    for name, more in (("held", {"hold_seconds": 0.5}), ("none held", {"max_held": 0})):
        (tmp_path / name).mkdir()
        with Stack(tmp_path / name, config(allowed.origin, **more)) as gateway:
            gateway.create(speech_to_text(OTHER_LOCALE.lower(), OTHER_LOCALE, free_port()), ready=0)
            gateway.routes(OTHER_LOCALE)
            got = allowed.page(browser).evaluate(CALL, rest(gateway.http))
            assert got.get("status") == 503 and got["retryAfter"] and OTHER_LOCALE in got["text"], (name, got)
            assert other.page(browser).evaluate(CALL, rest(gateway.http)) == {"error": FAILED}, name


#: Heads refused just after their ``Origin`` line (sent in one write, but the second's split across two), and their status.
CUT_AFTER_ORIGIN = {
    "408, a head that stops after its Origin line": ([f"GET {contract.ROUTE_STATUS} HTTP/1.1\r\nHost: x\r\nOrigin: {{}}\r\n"], 408),
    "408, its Origin line in two reads": ([f"GET {contract.ROUTE_STATUS} HTTP/1.1\r\nHost: x\r\nOrigin: https://app.", "example.com\r\n"], 408),
    "400, a malformed line after it": ([f"GET {contract.ROUTE_STATUS} HTTP/1.1\r\nHost: x\r\nOrigin: {{}}\r\nBad Line: x\r\n\r\n"], 400),
}


def sent_in_pieces(port: int, pieces: list[str]) -> tuple[int, dict[str, str]]:
    """The answer to ``pieces`` sent one by one (0.2 s apart), and its ``Access-Control-*`` lines."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for piece in pieces:
            sock.sendall(piece.format("https://app.example.com").encode())
            time.sleep(0.2)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status, headers, _ = responses(answer)[0]
    return status, cors_lines(headers)


def test_both_servers_find_the_origin_of_a_head_refused_just_after_it(registry: ModelRegistry, tmp_path: Path) -> None:
    origin = "https://app.example.com"
    (tmp_path / "gateway").mkdir()
    with server(registry, tmp_path, f"Http:CorsOrigins={origin}", "Http:HeaderTimeoutSeconds=1") as recognizer, \
            Stack(tmp_path / "gateway", config(origin, header_seconds=1)) as gateway:
        for case, (pieces, status) in CUT_AFTER_ORIGIN.items():
            for name, port in (("recognizer", recognizer.port), ("gateway", gateway.port)):
                got = sent_in_pieces(port, pieces)
                assert got == (status, {"access-control-allow-origin": origin, "access-control-expose-headers": EXPOSED}), (case, name, got)


def test_both_servers_say_vary_origin_to_a_request_without_one(registry: ModelRegistry, tmp_path: Path) -> None:
    heads = {"an answer": (f"GET {contract.ROUTE_STATUS} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 200),
             "431": (f"GET {contract.ROUTE_STATUS} HTTP/1.1\r\nHost: x\r\nX-Big: {BIG}\r\n\r\n", 431),
             "400": (f"GET {contract.ROUTE_STATUS} HTTP/1.1\r\nHost: x\r\nBad Line: x\r\n\r\n", 400)}
    (tmp_path / "gateway").mkdir()
    with server(registry, tmp_path, "Http:CorsOrigins=https://app.example.com") as recognizer, \
            Stack(tmp_path / "gateway", config("https://app.example.com")) as gateway:
        for case, (head, status) in heads.items():
            for name, port in (("recognizer", recognizer.port), ("gateway", gateway.port)):
                got, headers, _ = responses(write_then_read("127.0.0.1", port, head.encode())[0])[0]
                assert (got, headers.get("vary"), cors_lines(headers)) == (status, "Origin", {}), (case, name, headers)


def test_without_the_setting_the_gateways_refusals_are_as_before(browser: Browser, apps: tuple[WebApp, WebApp],  # noqa: F811
                                                                 tmp_path: Path) -> None:
    allowed, _ = apps
    with Stack(tmp_path, config()) as gateway:
        assert raw(gateway, f"GET {contract.ROUTE_STATUS} HTTP/1.1\r\nHost: gateway\r\nOrigin: {allowed.origin}\r\n"
                            f"X-Big: {BIG}\r\n\r\n") == (431, {})
        with at_the_cap(gateway):
            assert allowed.page(browser).evaluate(CALL, rest(gateway.http)) == {"error": FAILED}
            assert raw(gateway, f"OPTIONS {REST} HTTP/1.1\r\nHost: gateway\r\nOrigin: {allowed.origin}\r\n"
                                "Access-Control-Request-Method: POST\r\n\r\n") == (503, {})
