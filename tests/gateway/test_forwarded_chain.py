"""What a recognizer behind the gateway is told about its client: the scheme and host (``X-Forwarded-Proto``,
``X-Forwarded-Host``) only a trusted proxy may choose, and the client's address through the whole chain an Ingress
makes (ingress-nginx, the gateway, the recognizer).

Real servers on loopback: the gateway (its app, in this test's loop) routing a SpeechToText to a port; clients bind
other loopback addresses (127.0.0.2, 127.0.0.3: Linux routes all of 127.0.0.0/8 to ``lo``) to be a trusted proxy or
not; the gateway reaches what is behind it from 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from starlette.types import Receive, Scope, Send

from harness.hostile_inputs import response_complete
from speech_operator.gateway import GatewayConfig, create_app, serving
from speech_operator.gateway_directory import Directory
from speech_recognizer.addresses import proxies
from speech_recognizer.forwarded import ForwardedClient
from speech_recognizer.models import ModelRegistry
from tests.conftest import make_settings
from tests.ingress_nginx import ingress_nginx, render_ingress
from tests.recognizer.test_client_address import AccessLog
from tests.support import ServerThread

from .conftest import ServiceDNS, speech_to_text
from .test_client_address import GATEWAY_ACCESS
from .test_ingress_nginx import ON_LOOPBACK

REST = "/speech/recognition/conversation/cognitiveservices/v1?language=ko-KR"
#: What a client straight at the gateway sends to choose the scheme and host a recognizer is told.
FORGED = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "speech.example.com", "X-Forwarded-For": "203.0.113.7"}


async def _told(scope: Scope, receive: Receive, send: Send) -> None:
    """What the recognizer's app is told of its client, once its ``Http:TrustedProxies`` reading is done
    (``scope``'s client and scheme, and the ``X-Forwarded-Host`` lines it got), over HTTP or a WebSocket."""
    hosts = [value.decode("latin-1") for name, value in scope["headers"] if name == b"x-forwarded-host"]
    told = json.dumps({"client": scope["client"][0], "scheme": scope["scheme"], "hosts": hosts})
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": told})
        await send({"type": "websocket.close", "code": 1000})
    elif scope["type"] == "http":
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": told.encode()})


@contextlib.asynccontextmanager
async def told_behind_the_gateway() -> AsyncIterator[int]:
    """The gateway's port: a gateway trusting 127.0.0.2 (the "ingress controller"), in front of :func:`_told` behind
    the recognizer's own ``X-Forwarded-*`` reading (:class:`~speech_recognizer.forwarded.ForwardedClient`, trusting the
    gateway's and the controller's addresses, as the README says to set ``Http:TrustedProxies``). No recognizer route
    shows the scheme through the gateway (its home page, which builds its examples' URLs from it, is not relayed), so
    an app that echoes it stands in for the recognizer's routes; what reads the headers is the recognizer's."""
    with ServerThread(ForwardedClient(_told, proxies("127.0.0.1, 127.0.0.2"))) as recognizer:
        directory = Directory()
        directory.upsert({**speech_to_text("ko-kr", "ko-KR", recognizer.port), "status": {"readyReplicas": 1}})
        directory.synced = True
        config = GatewayConfig(host="127.0.0.1", port=0, trusted_proxies="127.0.0.2")
        async with serving(create_app(directory, config, resolver=ServiceDNS()), "127.0.0.1", 0, 1) as port:
            yield port


async def _told_through(port: int, source: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """What the recognizer is told of a REST request and of a WebSocket from ``source``, each with :data:`FORGED`."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(source, 0))) as client:
        async with client.post(f"http://127.0.0.1:{port}{REST}", data=b"RIFF", headers=FORGED) as resp:
            assert resp.status == 200, await resp.text()
            rest = await resp.json()
        async with client.ws_connect(f"ws://127.0.0.1:{port}{REST}", headers=FORGED) as ws:
            websocket = json.loads((await ws.receive(timeout=10)).data)
    return rest, websocket


async def test_only_a_trusted_proxy_chooses_the_scheme_and_host_a_recognizer_is_told() -> None:
    """A client the gateway does not trust (127.0.0.3) saying ``X-Forwarded-Proto: https`` and ``X-Forwarded-Host:
    speech.example.com``: the recognizer is told the gateway's own view, ``http`` (``ws``) and the ``Host`` the client
    reached the gateway by. The same request from the trusted controller (127.0.0.2) keeps its lines: ``https``
    (``wss``), ``speech.example.com``. Before, the gateway passed on anyone's lines, so the untrusted client was
    ``https`` at the recognizer too (it trusts the gateway, and takes its last ``X-Forwarded-Proto`` line)."""
    async with told_behind_the_gateway() as port:
        untrusted = await _told_through(port, "127.0.0.3")
        trusted = await _told_through(port, "127.0.0.2")
    own_host = f"127.0.0.1:{port}"
    rest, websocket = untrusted
    assert rest == {"client": "127.0.0.3", "scheme": "http", "hosts": [own_host]}
    assert websocket == {"client": "127.0.0.3", "scheme": "ws", "hosts": [own_host]}
    rest, websocket = trusted
    assert rest == {"client": "203.0.113.7", "scheme": "https", "hosts": ["speech.example.com"]}
    assert websocket == {"client": "203.0.113.7", "scheme": "wss", "hosts": ["speech.example.com"]}


#: The logger of the recognizer's (uvicorn's) ``"WebSocket /vosk?…" [accepted]`` lines, which name the client.
UVICORN_ERROR = "uvicorn.error"


async def test_the_client_is_named_alike_through_ingress_nginx_the_gateway_and_the_recognizer(
        tmp_path: Path, registry: ModelRegistry, caplog: pytest.LogCaptureFixture) -> None:
    """The chain an Ingress makes: real nginx configured as ingress-nginx configures it for the chart's Ingress
    (tests/ingress_nginx.py), the gateway trusting nginx (its address, 127.0.0.1: the controller's pods), a real
    recognizer (its app and uvicorn options, the session's model) trusting the gateway and the controller
    (``Http:TrustedProxies=127.0.0.1``: both are 127.0.0.1 here, as both are the pod CIDR on a cluster; the operator
    sets none, the README says to set it in ``spec.settings``). A client of 127.0.0.2 forging ``X-Forwarded-For``,
    ``X-Real-IP`` and ``Forwarded`` (203.0.113.7) on a REST request, a /vosk WebSocket and an upload that pauses past
    ``Http:BodyTimeoutSeconds``: nginx's, the gateway's and the recognizer's access lines, the recognizer's
    ``[accepted]`` line of the WebSocket and its refusal of the paused body all name 127.0.0.2, and no log record names
    203.0.113.7 (nginx drops the client's ``X-Forwarded-For``, keeping it in ``X-Original-Forwarded-For``, which
    nothing behind it reads). Before, the refusal named only its connection's peer, the gateway (``from
    127.0.0.1:<port>``): behind the gateway, always the gateway's pod."""
    settings = make_settings(tmp_path, "Http:TrustedProxies=127.0.0.1", "Http:BodyTimeoutSeconds=1")
    caplog.set_level(logging.INFO)
    forged = {"X-Forwarded-For": "203.0.113.7", "X-Real-IP": "203.0.113.7", "Forwarded": "for=203.0.113.7"}
    uvicorn_error = logging.getLogger(UVICORN_ERROR)  # uvicorn's own handler, not propagated: caplog's added
    with AccessLog(caplog, registry) as access_log, access_log.serving(settings) as recognizer:
        caplog.set_level(logging.INFO, UVICORN_ERROR)  # uvicorn set its level when the server was made
        uvicorn_error.addHandler(caplog.handler)
        try:
            directory = Directory()
            directory.upsert({**speech_to_text("ko-kr", "ko-KR", recognizer.port), "status": {"readyReplicas": 1}})
            directory.synced = True
            config = GatewayConfig(host="127.0.0.1", port=0, trusted_proxies="127.0.0.1")
            async with serving(create_app(directory, config, resolver=ServiceDNS()), "127.0.0.1", 0, 1) as port, \
                    aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))) as client:
                with ingress_nginx(render_ingress(*ON_LOOPBACK), port, tmp_path / "nginx") as nginx:
                    async with client.post(f"{nginx.http}{REST}", data=b"RIFF", headers={**forged, "Content-Type": "audio/wav"}) as resp:
                        assert resp.status == 400, await resp.text()  # the recognizer's: no WAV; what matters is who is named
                    async with client.ws_connect(f"{nginx.ws}/vosk?language=ko-KR", headers=forged) as ws:
                        await ws.send_str('{"eof" : 1}')
                        assert "text" in json.loads((await ws.receive(timeout=10)).data)  # its final result
                        await ws.close()
                    assert (await _paused_upload(nginx.port, forged)).startswith(b"HTTP/1.1 408 ")
                    # each writes its line once the request or the WebSocket is over, nginx's after its client has it
                    await _until(lambda: len(nginx.access_log().splitlines()) == 3 and len(_named(caplog, GATEWAY_ACCESS)) == 3)
                    nginx_lines = nginx.access_log().splitlines()
        finally:
            uvicorn_error.removeHandler(caplog.handler)
    accepted = [r.getMessage().split(" ", 1)[0].rsplit(":", 1)[0] for r in caplog.records
                if r.name == UVICORN_ERROR and "[accepted]" in r.getMessage()]
    paused = [r.getMessage() for r in caplog.records if "paused" in r.getMessage()]
    assert ([line.split(" ", 1)[0] for line in nginx_lines], _named(caplog, GATEWAY_ACCESS), access_log.clients(), accepted) == (
        ["127.0.0.2"] * 3, ["127.0.0.2"] * 3, ["127.0.0.2"], ["127.0.0.2"])
    assert len(paused) == 1 and re.search(r"; from 127\.0\.0\.2 by way of 127\.0\.0\.1:\d+$", paused[0]), paused
    assert not [r.getMessage() for r in caplog.records if "203.0.113.7" in r.getMessage()]
    assert not [line for line in nginx_lines if "203.0.113.7" in line]


async def _paused_upload(port: int, headers: dict[str, str]) -> bytes:
    """A REST upload from 127.0.0.2 to ``port`` that sends 4 of its 64 bytes and pauses: the answer it gets."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.2", 0))
    try:
        lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        writer.write(f"POST {REST} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: audio/wav\r\nContent-Length: 64\r\n"
                     f"{lines}\r\nRIFF".encode())
        answer = b""
        while not response_complete(answer) and (chunk := await asyncio.wait_for(reader.read(65536), 10)):
            answer += chunk
        return answer
    finally:
        writer.close()


async def _until(check: Callable[[], bool], timeout: float = 5) -> None:
    """Wait, on this loop (the gateway's), until ``check`` holds: a log line is written after its client has the end."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout} s"
        await asyncio.sleep(0.01)


def _named(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    """The client each line of ``logger`` names (its first word)."""
    return [r.getMessage().split(" ", 1)[0] for r in caplog.records if r.name == logger]
