"""Which client the recognizer names behind a proxy (``Http:TrustedProxies``): the one a trusted proxy's
``X-Forwarded-For`` names, and the connection's peer when the peer is no trusted proxy (a client that sends the
header itself cannot name itself). A real uvicorn server on loopback with the recognizer's app and options; clients
bind other loopback addresses (127.0.0.2, 127.0.0.3: Linux routes all of 127.0.0.0/8 to ``lo``) to be a proxy that
is trusted or one that is not."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from speech_recognizer import contract
from speech_recognizer.addresses import client, proxies
from speech_recognizer.app import create_app
from speech_recognizer.logs import ACCESS_LOGGER
from speech_recognizer.models import ModelRegistry
from speech_recognizer.settings import Settings, SettingsError, parse
from tests.conftest import make_settings
from tests.support import ServerThread


class AccessLog:
    """A recognizer's access log, caught while in its ``with``: uvicorn's own handler does not propagate, and uvicorn
    configures the logger (its level, its handlers) when a server is made, so caplog's handler and level are set
    after that."""

    def __init__(self, caplog: pytest.LogCaptureFixture, registry: ModelRegistry) -> None:
        self.caplog, self.registry = caplog, registry

    def __enter__(self) -> AccessLog:
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger(ACCESS_LOGGER).removeHandler(self.caplog.handler)

    def serving(self, settings: Settings) -> ServerThread:
        """The recognizer's app with ``settings``, its access lines caught."""
        srv = ServerThread(create_app(settings, self.registry))
        self.caplog.set_level(logging.INFO, ACCESS_LOGGER)
        logging.getLogger(ACCESS_LOGGER).addHandler(self.caplog.handler)
        return srv

    def clients(self) -> list[str]:
        """The client each access line names (``host:port`` less its port)."""
        return [r.getMessage().split(" ", 1)[0].rsplit(":", 1)[0] for r in self.caplog.records if r.name == ACCESS_LOGGER]


def _get(srv: ServerThread, source: str, forwarded_for: str) -> None:
    """One request to ``srv`` from the loopback address ``source`` with ``X-Forwarded-For: forwarded_for``; the
    access log has written its line when it is answered (uvicorn logs before it sends the answer's end)."""
    with httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=10) as http:
        assert http.get(f"{srv.http}{contract.ROUTE_DEMO}", headers={"X-Forwarded-For": forwarded_for}).status_code == 200


def test_the_access_log_names_the_client_a_trusted_proxy_names(tmp_path: Path, registry: ModelRegistry,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """``Http:TrustedProxies=127.0.0.2,127.0.0.5`` (a proxy, and one beyond it): a request from 127.0.0.2 is logged as
    from the right-most address of its ``X-Forwarded-For`` that is no trusted proxy, past 127.0.0.5 and past an
    IPv4-mapped 127.0.0.5 (a proxy listening on both families writes its IPv4 peers so); one from 127.0.0.3, not
    trusted, as from 127.0.0.3 whatever it says. Before the setting, uvicorn trusted 127.0.0.1 and ::1 only: the
    first was logged as 127.0.0.2 (and the unknown key warned of)."""
    settings = make_settings(tmp_path, "Http:TrustedProxies=127.0.0.2, 127.0.0.5")
    with AccessLog(caplog, registry) as access_log, access_log.serving(settings) as srv:
        _get(srv, "127.0.0.2", "198.51.100.1, 203.0.113.7, ::ffff:127.0.0.5, 127.0.0.5")
        _get(srv, "127.0.0.3", "203.0.113.9")
    assert access_log.clients() == ["203.0.113.7", "127.0.0.3"]


def test_a_client_cannot_name_itself_where_loopback_is_not_trusted(tmp_path: Path, registry: ModelRegistry,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """``Http:TrustedProxies=10.0.0.0/8`` (a pod network, loopback not in it): a client over 127.0.0.1 that sends
    ``X-Forwarded-For`` is logged as 127.0.0.1. Before, 127.0.0.1 was always trusted: logged as the address it chose."""
    settings = make_settings(tmp_path, "Http:TrustedProxies=10.0.0.0/8")
    with AccessLog(caplog, registry) as access_log, access_log.serving(settings) as srv:
        _get(srv, "127.0.0.1", "203.0.113.7")
    assert access_log.clients() == ["127.0.0.1"]


def test_trusted_proxies_read_as_addresses_and_networks() -> None:
    """The default trusts loopback, as uvicorn did (``FORWARDED_ALLOW_IPS`` still sets it); a list reads with spaces,
    IPv4-mapped items as IPv4; an item that is no address or CIDR is refused naming it (uvicorn took it as a name no
    peer matches: nothing was trusted, silently)."""
    assert [str(n) for n in parse([], environ={}).http_trusted_proxies] == ["127.0.0.1/32", "::1/128"]
    assert [str(n) for n in parse([], environ={"FORWARDED_ALLOW_IPS": "10.0.0.0/8"}).http_trusted_proxies] == ["10.0.0.0/8"]
    assert [str(n) for n in proxies(" 10.244.0.0/16 , fd00::/8,::ffff:10.1.2.3,")] == ["10.244.0.0/16", "fd00::/8", "10.1.2.3/32"]
    assert proxies("") == ()
    for bad, said in (("10.0.0.0/33", "'10.0.0.0/33' is not an address or a CIDR"),
                      ("10.0.0.5/8", "has host bits set"), ("gateway.svc", "'gateway.svc' is not an address")):
        with pytest.raises(SettingsError, match=f"Http:TrustedProxies={bad!r}: .*{said}"):
            parse([f"Http:TrustedProxies={bad}"], environ={})


def test_the_client_is_the_right_most_address_no_trusted_proxy_wrote() -> None:
    """The one algorithm the gateway's access log uses too (:func:`~speech_recognizer.addresses.client`)."""
    pods = proxies("10.244.0.0/16")
    assert client("198.51.100.1", ["203.0.113.7"], pods) == "198.51.100.1", "an untrusted peer's header is ignored"
    assert client("::ffff:10.244.1.5", ["198.51.100.1, 203.0.113.7"], pods) == "203.0.113.7", "a mapped peer is trusted"
    assert client("10.244.1.5", ["198.51.100.1", "203.0.113.7:5555, 10.244.3.3"], pods) == "203.0.113.7"
    assert client("10.244.1.5", ["[2001:db8::7]:443"], pods) == "2001:db8::7"
    assert client("10.244.1.5", ["10.244.9.9, 10.244.3.3"], pods) == "10.244.9.9", "all trusted: the left-most"
    assert client("10.244.1.5", ["unknown, 10.244.3.3"], pods) == "10.244.3.3", "no address: the last one seen"
    assert client("10.244.1.5", [], pods) == "10.244.1.5" and client("10.244.1.5", [" , "], pods) == "10.244.1.5"
