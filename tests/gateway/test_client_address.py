"""Which client the gateway's access log names (``SPEECH_GATEWAY_TRUSTED_PROXIES``), and the recognizer's behind it
(``Http:TrustedProxies``): the address an ingress controller (a trusted proxy) says it served, carried on through
the gateway, not the controller's pod nor the gateway's. A real recognizer (its app and uvicorn options, the
session's model) and the real gateway on loopback; the client binds 127.0.0.2, the "ingress controller" here
(Linux routes all of 127.0.0.0/8 to ``lo``); the gateway reaches the recognizer from 127.0.0.1."""

from __future__ import annotations

import logging
from pathlib import Path

import aiohttp
import pytest

from speech_operator.gateway import GatewayConfig, create_app, serving
from speech_operator.gateway_directory import Directory
from speech_recognizer.models import ModelRegistry
from tests.conftest import make_settings
from tests.recognizer.test_client_address import AccessLog

from .conftest import ServiceDNS, speech_to_text

GATEWAY_ACCESS = "speech_operator.gateway.access"
REST = "/speech/recognition/conversation/cognitiveservices/v1?language=ko-KR"


async def _through_the_gateway(config: GatewayConfig, recognizer_trusts: str, tmp_path: Path, registry: ModelRegistry,
                               caplog: pytest.LogCaptureFixture) -> tuple[list[str], list[str]]:
    """One REST request from 127.0.0.2 saying ``X-Forwarded-For: 203.0.113.7`` to a gateway with ``config`` in front
    of a recognizer with ``Http:TrustedProxies=recognizer_trusts``: the clients the gateway's and the recognizer's
    access lines name. Each line is written before its answer goes out, so both are in once the client has it."""
    settings = make_settings(tmp_path, f"Http:TrustedProxies={recognizer_trusts}")
    caplog.set_level(logging.INFO, GATEWAY_ACCESS)
    with AccessLog(caplog, registry) as access_log, access_log.serving(settings) as recognizer:
        directory = Directory()
        directory.upsert({**speech_to_text("ko-kr", "ko-KR", recognizer.port), "status": {"readyReplicas": 1}})
        directory.synced = True
        async with serving(create_app(directory, config, resolver=ServiceDNS()), "127.0.0.1", 0, 1) as port, \
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))) as client:
            async with client.post(f"http://127.0.0.1:{port}{REST}", data=b"RIFF",
                                   headers={"X-Forwarded-For": "203.0.113.7", "Content-Type": "audio/wav"}) as resp:
                assert resp.status == 400, await resp.text()  # the recognizer's: no WAV; what matters is who it logs
    gateway = [r.getMessage().split(" ", 1)[0] for r in caplog.records if r.name == GATEWAY_ACCESS]
    return gateway, access_log.clients()


async def test_the_client_an_ingress_controller_names_is_logged_at_both(tmp_path: Path, registry: ModelRegistry,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    """The gateway trusting 127.0.0.0/8 (the controller's pods) and the recognizer 127.0.0.0/8 (the gateway's and
    the controller's): both log 203.0.113.7, the client the controller served. Before, the gateway logged its peer
    (127.0.0.2, the controller) and the recognizer the address right of the client's in ``X-Forwarded-For``
    (127.0.0.2: uvicorn trusted 127.0.0.1 alone); GatewayConfig had no ``trusted_proxies``."""
    config = GatewayConfig(host="127.0.0.1", port=0, trusted_proxies="127.0.0.0/8")
    assert await _through_the_gateway(config, "127.0.0.0/8", tmp_path, registry, caplog) == (["203.0.113.7"], ["203.0.113.7"])


async def test_a_client_the_gateway_does_not_trust_cannot_name_itself(tmp_path: Path, registry: ModelRegistry,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    """The gateway trusting a pod network the client is not in, and the recognizer the gateway alone (127.0.0.1): a
    client of 127.0.0.2 that sends ``X-Forwarded-For: 203.0.113.7`` is logged as 127.0.0.2 at both (the recognizer
    takes the address the gateway appended, not the client's own line)."""
    config = GatewayConfig(host="127.0.0.1", port=0, trusted_proxies="10.0.0.0/8")
    assert await _through_the_gateway(config, "127.0.0.1", tmp_path, registry, caplog) == (["127.0.0.2"], ["127.0.0.2"])


def test_a_bad_trusted_proxies_variable_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match=r"SPEECH_GATEWAY_TRUSTED_PROXIES='10\.0\.0\.0/33': '10\.0\.0\.0/33' is not an address"):
        GatewayConfig.from_env({"SPEECH_GATEWAY_TRUSTED_PROXIES": "10.0.0.0/33"})
    assert GatewayConfig.from_env({"SPEECH_GATEWAY_TRUSTED_PROXIES": "10.244.0.0/16, fd00::/8"}).trusted_proxies == "10.244.0.0/16, fd00::/8"
