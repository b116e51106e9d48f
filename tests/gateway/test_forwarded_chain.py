"""What a recognizer behind the gateway is told about its client: the scheme and host (``X-Forwarded-Proto``,
``X-Forwarded-Host``) only a trusted proxy may choose, and the client's address through the whole chain an Ingress
makes (ingress-nginx, the gateway, the recognizer).

Real servers on loopback: the gateway (its app, in this test's loop) routing a SpeechToText to a port; clients bind
other loopback addresses (127.0.0.2, 127.0.0.3: Linux routes all of 127.0.0.0/8 to ``lo``) to be a trusted proxy or
not; the gateway reaches what is behind it from 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from starlette.types import Receive, Scope, Send

from speech_operator.gateway import GatewayConfig, create_app, serving
from speech_operator.gateway_directory import Directory
from speech_recognizer.addresses import proxies
from speech_recognizer.forwarded import ForwardedClient
from tests.support import ServerThread

from .conftest import ServiceDNS, speech_to_text

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
