"""Listening on IPv6 and IPv4 (``Host=*``, the default) and IPv4 clients read as IPv4 on such a socket.

A pod's IP is IPv6 alone on an IPv6-only cluster, and a kubelet probes that IP: a server on ``0.0.0.0`` there was
never ready. ``*`` listens on ``::`` with ``IPV6_V6ONLY`` off, or on ``0.0.0.0`` where the kernel has no IPv6. An
IPv4 client of that socket arrives as ``::ffff:127.0.0.1``: uvicorn's trust of ``X-Forwarded-For`` (from 127.0.0.1
by default) no longer held, and the logs read ``::ffff:`` addresses. The recognizer's CLI with no ``Host`` is run by
tests/recognizer/test_running.py (``polled``), its pods by tests/kubelet.py (liveness over ``::1``).
"""

from __future__ import annotations

import errno
import json
import logging
import socket
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from speech_recognizer import contract
from speech_recognizer.addresses import host_port, peer, unmapped
from speech_recognizer.forwarded import ForwardedClient
from speech_recognizer.serving import listening_on, listening_socket, server_options
from speech_recognizer.settings import Settings, parse

from ..support import ServerThread

pytestmark = pytest.mark.unit  # no model, server, operator or browser: the quick run (README, Tests)


def accepts_from(server: socket.socket, host: str) -> bool:
    """Whether a client connecting from ``host`` (a loopback address) reaches ``server``."""
    try:
        with socket.create_connection((host, server.getsockname()[1]), timeout=2):
            server.accept()[0].close()
            return True
    except ConnectionRefusedError:
        return False


def test_the_default_host_listens_on_ipv6_and_ipv4() -> None:
    assert parse([], environ={}).host == contract.EVERY_ADDRESS == "*"
    with listening_socket(contract.EVERY_ADDRESS, 0) as server:
        assert accepts_from(server, "127.0.0.1") and accepts_from(server, "::1")
        assert listening_on(server) == f"[::]:{server.getsockname()[1]} (IPv6 and IPv4)"
    with listening_socket("0.0.0.0", 0) as server:  # as asked: IPv4 alone
        assert accepts_from(server, "127.0.0.1") and not accepts_from(server, "::1")
        assert listening_on(server) == f"0.0.0.0:{server.getsockname()[1]}"
    with listening_socket("::", 0) as server:
        assert accepts_from(server, "127.0.0.1") and accepts_from(server, "::1")


class _NoIPv6(socket.socket):
    """A socket of a kernel without IPv6: ``AF_INET6`` fails with ``errno`` at ``at`` (creation or bind)."""

    errno = errno.EAFNOSUPPORT
    at = "socket"

    def __init__(self, family: int = -1, *args: Any, **kwargs: Any) -> None:
        if family == socket.AF_INET6 and self.at == "socket":
            raise OSError(self.errno, "Address family not supported by protocol")
        super().__init__(family, *args, **kwargs)

    def bind(self, address: Any) -> None:
        if self.family == socket.AF_INET6 and self.at == "bind":
            raise OSError(self.errno, "Cannot assign requested address")
        super().bind(address)


@pytest.mark.parametrize(("at", "error"), [("socket", errno.EAFNOSUPPORT), ("bind", errno.EADDRNOTAVAIL)])
def test_without_ipv6_the_default_host_listens_on_ipv4_and_says_so(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
                                                                   at: str, error: int) -> None:
    """A mock: this machine has IPv6, so ``socket.socket`` is replaced by one whose ``AF_INET6`` sockets fail as a
    kernel's without IPv6 do (no such family at creation, ``ipv6.disable=1``; no such address at bind, IPv6 disabled).
    ``*`` then listens on 0.0.0.0 with one INFO line; ``::`` asked for fails as it did; any other error is raised."""
    monkeypatch.setattr(_NoIPv6, "at", at)
    monkeypatch.setattr(_NoIPv6, "errno", error)
    monkeypatch.setattr(socket, "socket", _NoIPv6)
    with caplog.at_level(logging.INFO, "speech_recognizer.serving"), listening_socket("*", 0) as server:
        assert server.family == socket.AF_INET and listening_on(server) == f"0.0.0.0:{server.getsockname()[1]}"
        assert accepts_from(server, "127.0.0.1")
    (line,) = [r for r in caplog.records if r.name == "speech_recognizer.serving"]
    assert line.levelno == logging.INFO and line.getMessage().startswith("no IPv6 here (")
    assert line.getMessage().endswith("): listening on IPv4 only, 0.0.0.0:0"), line.getMessage()
    with pytest.raises(OSError) as failed:
        listening_socket("::", 0)
    assert failed.value.errno == error
    monkeypatch.setattr(_NoIPv6, "errno", errno.EACCES)
    with pytest.raises(OSError) as failed:
        listening_socket("*", 0)
    assert failed.value.errno == errno.EACCES


def test_an_ipv6_host_may_come_in_brackets_as_in_a_url() -> None:
    """``Host=[::]`` or ``--host [::1]``, as a URL writes them (the operator's ``--liveness http://[::]:8080/healthz``
    takes that form): they were "Name or service not known", an error that does not say the brackets were the matter."""
    with listening_socket("[::]", 0) as server:
        assert accepts_from(server, "127.0.0.1") and accepts_from(server, "::1")
    with listening_socket("[::1]", 0) as server:
        assert accepts_from(server, "::1") and not accepts_from(server, "127.0.0.1")


def test_a_host_and_a_port_join_as_in_a_url() -> None:
    """What the error of a port in use names, and the autoscaler's URL of a pod's /sessions: an IPv6 address in
    brackets (``:::5000`` read as nothing), any other host as it is."""
    assert host_port("::", 5000) == "[::]:5000" and host_port("fd00::5", "5000") == "[fd00::5]:5000"
    assert host_port("[::1]", 5000) == "[::1]:5000"
    assert host_port("10.0.0.5", 5000) == "10.0.0.5:5000" and host_port("*", 5000) == "*:5000"
    assert host_port("en-us.speech.svc", 5000) == "en-us.speech.svc:5000"


def test_a_port_taken_on_either_family_is_no_reason_to_fall_back() -> None:
    with listening_socket("127.0.0.1", 0) as taken, pytest.raises(OSError) as failed:
        listening_socket("*", taken.getsockname()[1])
    assert failed.value.errno == errno.EADDRINUSE


def test_client_addresses_read_as_their_family() -> None:
    assert unmapped("::ffff:10.0.0.1") == "10.0.0.1" and unmapped("::FFFF:127.0.0.1") == "127.0.0.1"
    assert unmapped("::1") == "::1" and unmapped("10.0.0.1") == "10.0.0.1" and unmapped("::ffff:zz") == "::ffff:zz"
    assert unmapped("fd00::ffff:a00:1") == "fd00::ffff:a00:1"
    assert peer(("::ffff:10.0.0.1", 5000)) == "10.0.0.1:5000" and peer(("::1", 5000)) == "[::1]:5000"
    assert peer(None) == "a client"


async def _whoami(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The client and server addresses the app is given (``scope``), over HTTP or a WebSocket."""
    seen = json.dumps({"client": scope["client"][0], "server": scope["server"][0]})
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": seen})
        await send({"type": "websocket.close", "code": 1000})
    elif scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": seen.encode()})


def test_the_app_and_the_access_log_see_ipv4_clients_as_ipv4(caplog: pytest.LogCaptureFixture) -> None:
    """On a socket of ``Host=*``, with the recognizer's uvicorn options (its HTTP and WebSocket protocols): a client
    over 127.0.0.1 is ``127.0.0.1`` to the app, over HTTP and once upgraded to a WebSocket, and in the access log;
    the app's reading of ``X-Forwarded-For`` trusts it (it trusts 127.0.0.1 and ::1 by default: ``::ffff:127.0.0.1``
    uvicorn's did not trust, and a proxy beside the server lost its clients' addresses). A client over ::1 is ``::1``."""
    app = ForwardedClient(_whoami, Settings().http_trusted_proxies)  # as the recognizer's app reads it
    server = ServerThread(app, host=contract.EVERY_ADDRESS, **server_options(Settings()))
    access = logging.getLogger("uvicorn.access")  # uvicorn's own handler, not propagated: caplog's added
    caplog.set_level(logging.INFO, access.name)
    access.addHandler(caplog.handler)
    try:
        with server:
            ipv4 = httpx.get(f"{server.http}/", timeout=10).json()
            assert ipv4 == {"client": "127.0.0.1", "server": "127.0.0.1"}
            forwarded = httpx.get(f"{server.http}/", headers={"X-Forwarded-For": "203.0.113.7"}, timeout=10).json()
            assert forwarded["client"] == "203.0.113.7"
            ipv6 = httpx.get(f"http://[::1]:{server.port}/", timeout=10).json()
            assert ipv6 == {"client": "::1", "server": "::1"}
            with connect(f"{server.ws}/", open_timeout=10) as ws:
                assert json.loads(ws.recv(timeout=10)) == {"client": "127.0.0.1", "server": "127.0.0.1"}
    finally:
        access.removeHandler(caplog.handler)
    logged = [r.getMessage() for r in caplog.records if r.name == "uvicorn.access"]
    assert logged and not [line for line in logged if "::ffff:" in line], logged
    assert any(line.startswith("127.0.0.1:") for line in logged), logged
