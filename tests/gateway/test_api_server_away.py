"""The gateway when the API server goes silent or away: its watch and its wake-up asks give up in
bounded time instead of waiting for ever.

A watch's ``timeoutSeconds`` is the API server's promise to end the stream; a connection lost without
a reset (an API server replaced behind a load balancer, a NAT entry expired) never ends, and the gateway
then routed by a directory that no longer changed. The stand-in API server here is a small aiohttp
app that can hang a request on purpose (kmock cannot).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import pytest_asyncio
from aiohttp import web
from kubernetes_asyncio import client as k8s

from speech_operator import api, gateway_directory, gateway_wake
from speech_operator import gateway_failures as failures
from speech_operator.gateway_directory import Directory, SpeechToTextWatch
from speech_operator.gateway_wake import Waker

from .conftest import speech_to_text

pytestmark = pytest.mark.unit  # no model, server, operator or browser: the quick run (README, Tests)

COLLECTION = f"/apis/{api.GROUP}/{api.VERSION}/{api.PLURAL}"
STATUS = f"/apis/{api.GROUP}/{api.VERSION}/namespaces/{{namespace}}/{api.PLURAL}/{{name}}/status"


@dataclass
class ApiServer:
    """Lists nothing; its first watch hangs (headers sent, then silence), later ones send ``added``;
    status patches hang while ``hang_patches``."""

    added: dict
    watches: int = 0
    patches: int = 0
    hang_patches: bool = True
    requests: list[str] = field(default_factory=list)

    async def collection(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.path_qs)
        if request.query.get("watch") not in ("true", "True", "1"):
            return web.json_response({"apiVersion": api.API_VERSION, "kind": f"{api.KIND}List", "items": [],
                                      "metadata": {"resourceVersion": "1"}})
        self.watches += 1
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        if self.watches > 1:
            await response.write(json.dumps({"type": "ADDED", "object": self.added}).encode() + b"\n")
        await asyncio.sleep(3600)  # silent, never ended: as a stream whose connection was lost
        return response

    async def status(self, request: web.Request) -> web.StreamResponse:
        self.patches += 1
        if self.hang_patches:
            await asyncio.sleep(3600)
        return web.json_response(await request.json())


@dataclass
class Rig:
    server: ApiServer
    client: k8s.ApiClient


@pytest_asyncio.fixture(loop_scope="function")
async def rig() -> AsyncIterator[Rig]:
    added = {**speech_to_text("de-de", "de-DE", 5002), "status": {"readyReplicas": 1}}
    added["metadata"]["resourceVersion"] = "2"
    server = ApiServer(added)
    app = web.Application()
    app.router.add_get(COLLECTION, server.collection)
    app.router.add_patch(STATUS, server.status)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    client = k8s.ApiClient(k8s.Configuration(host=f"http://127.0.0.1:{port}"))
    try:
        yield Rig(server, client)
    finally:
        await client.close()
        await runner.cleanup()


async def test_a_watch_gone_silent_is_given_up_and_the_directory_follows_again(
        rig: Rig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """With the watch asked for 1 s and 1 s of margin, a stream that never ends is dropped after 2 s; the
    list and watch that follow bring the SpeechToText created meanwhile."""
    monkeypatch.setattr(gateway_directory, "WATCH_SECONDS", 1)
    monkeypatch.setattr(gateway_directory, "WATCH_MARGIN_SECONDS", 1.0)
    directory = Directory()
    follow = asyncio.create_task(SpeechToTextWatch(rig.client, directory, None).run())
    started = time.monotonic()
    try:
        with caplog.at_level(logging.WARNING, "speech_operator"):
            while "de-DE" not in directory.locales:
                assert time.monotonic() - started < 10, f"the gateway still waits on its first watch: {rig.server.requests}"
                await asyncio.sleep(0.1)
    finally:
        follow.cancel()
        await asyncio.gather(follow, return_exceptions=True)
    assert 2 <= time.monotonic() - started < 6
    assert rig.server.watches == 2 and "timeoutSeconds=1" in rig.server.requests[1]
    assert any("watching SpeechToTexts in every namespace failed" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("away", ["silent", "gone"])
async def test_a_request_held_for_a_wake_ends_at_its_hold_time_with_the_api_server_away(
        rig: Rig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, away: str) -> None:
    """The ask (a status patch) hangs, or cannot connect: the held request still gets its 503 at the hold
    time plus one ask at most, and a warning says why the pod was not asked for."""
    monkeypatch.setattr(gateway_wake, "ASK_SECONDS", 1.0)
    client = rig.client
    if away == "gone":
        client = k8s.ApiClient(k8s.Configuration(host="http://127.0.0.1:9"))  # the discard port: nothing listens
    directory = Directory()
    directory.upsert({**speech_to_text("ko-kr", "ko-KR", 5001, autoscaling={"minReplicas": 0}), "status": {"readyReplicas": 0}})
    waker = Waker(directory, client, hold_seconds=1.5)
    started = time.monotonic()
    try:
        with caplog.at_level(logging.WARNING, "speech_operator"), pytest.raises(failures.Failure) as refused:
            await asyncio.wait_for(waker.ready(directory.lookup("ko-KR")), 10)
    finally:
        if client is not rig.client:
            await client.close()
    assert refused.value.kind is failures.WAKE_TIMEOUT
    assert time.monotonic() - started < 1.5 + 1.0 + 1.0
    assert any("could not ask for a pod of speech/ko-kr: the API server did not answer" in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]
    if away == "silent":
        assert rig.server.patches >= 1
