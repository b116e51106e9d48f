"""The recognizer's own refusals, written below the app by its HTTP layer (:mod:`speech_recognizer.http_limits`), read
by a page of an allowed origin (``Http:CorsOrigins``), with the real client: headless Chromium on another loopback port
(tests/recognizer/test_cors.py's page and calls).

Before, those answers carried no ``Access-Control-*`` header: the page got "TypeError: Failed to fetch" for the 503 of
a server at its ``Http:MaxConnections`` (whose ``Retry-After`` says when to try again) and for a 431, and the preflight
itself, on a connection past the cap, got that 503, which the browser refuses whatever it says. Without the setting
these answers are as before: no ``Access-Control-*`` header.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser
from starlette.requests import Request
from starlette.responses import Response

from harness.hostile_inputs import responses, write_then_read
from speech_recognizer import contract
from speech_recognizer.app import create_app
from speech_recognizer.models import ModelRegistry

from ..conftest import TEST_KEY, make_settings
from ..support import ServerThread, Starved, within
from .test_cors import CALL, EXPOSED, FAILED, REST, WebApp, rest
from .test_demo_page import browser, microphone_wav  # noqa: F401 - fixtures: the demo page's Chromium (and its fake microphone)
from .test_http_connection_cap import PARTIAL, server_side

CAP = 2
#: A header over the default ``Http:MaxHeaderBytes`` (16 KiB), which a page may set (after its preflight asked for it).
BIG = "x" * 20000


@pytest.fixture(scope="module")
def apps(speech_wav: Path) -> Iterator[tuple[WebApp, WebApp]]:
    with WebApp(speech_wav) as allowed, WebApp(speech_wav) as other:
        yield allowed, other


def server(registry: ModelRegistry, root: Path, *more: str) -> ServerThread:
    return ServerThread(create_app(make_settings(root, f"ApiKey={TEST_KEY}", "Billing=https://example.invalid",
                                                 f"Http:MaxConnections={CAP}", "Http:HeaderTimeoutSeconds=30", *more), registry))


@contextmanager
def busy(port: int, full: Callable[[], bool], count: int = CAP) -> Iterator[None]:
    """``count`` connections to ``port``, each with a head arriving (busy: none gives way to a new one), once ``full()``
    says the server counts them: the next connection is past its cap."""
    with ExitStack() as stack:
        for _ in range(count):
            sock = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=10))
            sock.sendall(PARTIAL)
        # the server counting connections it accepted, in time it and this process did not wait for a CPU
        within(5, full, "the cap filled")
        yield


def at_the_cap(srv: ServerThread) -> AbstractContextManager[None]:
    return busy(srv.port, lambda: server_side(srv) == CAP)


def big(page_base: str) -> list:
    """The page's REST call with a header over ``Http:MaxHeaderBytes``."""
    return [page_base + REST, {contract.KEY_HEADER: TEST_KEY, "Content-Type": "audio/wav", "X-Big": BIG}, None]


def cors_lines(headers: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in headers.items() if name.startswith("access-control-")}


def test_a_page_reads_the_refusals_of_the_http_layer(browser: Browser, apps: tuple[WebApp, WebApp],  # noqa: F811
                                                      registry: ModelRegistry, tmp_path: Path) -> None:
    allowed, other = apps
    with server(registry, tmp_path, f"Http:CorsOrigins={allowed.origin}") as srv:
        # 431: the preflight asks for X-Big (answered by the app), the request's head is refused by the HTTP layer
        got = allowed.page(browser).evaluate(CALL, big(srv.http))
        assert got.get("status") == 431 and "Http:MaxHeaderBytes" in got["text"], got
        assert other.page(browser).evaluate(CALL, big(srv.http)) == {"error": FAILED}

        # at the cap: the preflight is answered (on its connection past the cap, then closed), the request gets the
        # 503 with its Retry-After, readable (a fresh page: no preflight kept from before)
        with at_the_cap(srv):
            got = rest(allowed.page(browser), srv.http)
            assert got.get("status") == 503 and got["retryAfter"] == "1" and "Http:MaxConnections" in got["text"], got
            assert got["failure"] == "too_many_connections", got  # which 503 it is (a drain's, a busy server's...)
            assert rest(other.page(browser), srv.http) == {"error": FAILED}

            # what the 503 says, to an allowed origin and another (the header is the policy's: the app's answers')
            ask = f"POST {REST} HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: {{}}\r\nContent-Length: 0\r\n\r\n"
            status, headers, _ = responses(write_then_read("127.0.0.1", srv.port, ask.format(allowed.origin).encode())[0])[0]
            assert status == 503 and cors_lines(headers) == {"access-control-allow-origin": allowed.origin,
                                                             "access-control-expose-headers": EXPOSED}, headers
            status, headers, _ = responses(write_then_read("127.0.0.1", srv.port, ask.format(other.origin).encode())[0])[0]
            assert status == 503 and "access-control-allow-origin" not in headers, headers

        # 408: a head that stops after its Origin line
        slow = f"POST {REST} HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: {allowed.origin}\r\nX-Slow: ".encode()
    with server(registry, tmp_path / "408", f"Http:CorsOrigins={allowed.origin}", "Http:HeaderTimeoutSeconds=1") as srv:
        with Starved() as starved:  # the deadline and the answer's latency, in time the server and this process did not wait for a CPU
            status, headers, _ = responses(write_then_read("127.0.0.1", srv.port, slow)[0])[0]
        assert status == 408 and headers["access-control-allow-origin"] == allowed.origin, headers
        assert starved.seconds < 5, str(starved)


def test_without_the_setting_the_refusals_are_as_before(browser: Browser, apps: tuple[WebApp, WebApp],  # noqa: F811
                                                         registry: ModelRegistry, tmp_path: Path) -> None:
    allowed, _ = apps
    with server(registry, tmp_path) as srv:
        head = f"GET {contract.ROUTE_STATUS} HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: {allowed.origin}\r\nX-Big: {BIG}\r\n\r\n"
        status, headers, _ = responses(write_then_read("127.0.0.1", srv.port, head.encode())[0])[0]
        assert status == 431 and not cors_lines(headers), headers
        with at_the_cap(srv):
            assert rest(allowed.page(browser), srv.http) == {"error": FAILED}
            preflight = (f"OPTIONS {REST} HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: {allowed.origin}\r\n"
                         "Access-Control-Request-Method: POST\r\n\r\n")
            status, headers, _ = responses(write_then_read("127.0.0.1", srv.port, preflight.encode())[0])[0]
            assert status == 503 and not cors_lines(headers), headers


def test_an_exception_of_the_app_is_answered_with_the_cors_headers(registry: ModelRegistry, tmp_path: Path) -> None:
    """Starlette's outermost handler answers an exception outside the CORS middleware: its 500 said nothing a page could
    read. Now it carries the policy's headers (none without ``Origin``)."""
    def boom(request: Request) -> Response:
        raise RuntimeError("a bug (injected)")

    app = create_app(make_settings(tmp_path, "Http:CorsOrigins=https://app.example.com"), registry)
    app.add_route("/boom", boom)
    with ServerThread(app) as srv:
        answer = httpx.get(srv.http + "/boom", headers={"Origin": "https://app.example.com"})
        assert answer.status_code == 500 and answer.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
        assert answer.headers["Access-Control-Expose-Headers"] == EXPOSED
        assert "internal error (RuntimeError)" in answer.json()["error"]["message"], answer.text
        assert "Access-Control-Allow-Origin" not in httpx.get(srv.http + "/boom").headers
