"""Run the real kopf operator over HTTP against kmock's Kubernetes emulator."""

from __future__ import annotations

import asyncio
import itertools
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import kmock
import kopf
import pytest
import pytest_asyncio
import yaml

import speech_operator.handlers  # noqa: F401  (registers the handlers on kopf's default registry)
from speech_operator import api
from speech_operator.config import OperatorConfig
from speech_operator.kube import Kube
from speech_operator.reconcile import Runtime

NAMESPACE = "speech"
STT_RESOURCE = f"{api.GROUP}/{api.VERSION}/{api.PLURAL}"


class Emulator(kmock.KubernetesEmulator):
    """kmock's emulator plus what the API server fills in on create: name from generateName, uid,
    generation and a resourceVersion (kopf's JSON patches test it)."""

    _serial = itertools.count(1)

    async def _handle(self, request: kmock.Request) -> Any:
        if request.action == kmock.action.CREATE and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = f"{meta['generateName']}{next(self._serial)}"
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("generation", 1)
            meta.setdefault("resourceVersion", str(next(self._serial)))
        return await super()._handle(request)


def declare(emulator: kmock.KubernetesEmulator) -> None:
    emulator.resources[STT_RESOURCE] = kmock.ResourceInfo(
        kind=api.KIND, singular=api.SINGULAR, namespaced=True, shortnames=set(api.SHORT_NAMES),
        subresources={"status", "scale"}, verbs={"get", "list", "watch", "create", "patch", "delete"})
    for res, kind in [("apps/v1/deployments", "Deployment"), ("v1/services", "Service"),
                      ("v1/secrets", "Secret"), ("v1/persistentvolumeclaims", "PersistentVolumeClaim"),
                      ("v1/events", "Event")]:
        emulator.resources[res] = kmock.ResourceInfo(
            kind=kind, namespaced=True, verbs={"get", "list", "watch", "create", "patch", "delete"})
    # kopf waits for these to be discoverable even with scanning disabled.
    emulator.resources["v1/namespaces"] = kmock.ResourceInfo(kind="Namespace", namespaced=False)
    emulator.resources["apiextensions.k8s.io/v1/customresourcedefinitions"] = kmock.ResourceInfo(
        kind="CustomResourceDefinition", namespaced=False)


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 5.0) -> Any:
    """Poll ``check`` until it returns something truthy (and return it), or fail after ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not true within {timeout}s: {check.__qualname__} -> {result!r}")
        await asyncio.sleep(0.05)


class Cluster:
    """What a test needs: the emulator, a client (our own, as kubectl would be), and helpers."""

    namespace = NAMESPACE
    eventually = staticmethod(eventually)

    def __init__(self, emulator: Emulator, client: Kube) -> None:
        self.emulator = emulator
        self.api = client

    def stt_url(self, name: str = "", sub: str | None = None) -> str:
        from speech_operator.kube import path
        return path(api.API_VERSION, api.PLURAL, NAMESPACE, name or None, sub)

    def url(self, api_version: str, plural: str, name: str = "", sub: str | None = None) -> str:
        from speech_operator.kube import path
        return path(api_version, plural, NAMESPACE, name or None, sub)

    async def events(self) -> list[dict[str, Any]]:
        listing = await self.api.get(self.url("v1", "events"))
        return (listing or {}).get("items", [])

    async def reasons(self) -> list[str]:
        return [e["reason"] for e in await self.events()]

    async def event(self, reason: str) -> dict[str, Any]:
        """Wait for an Event with this reason about a SpeechToText and return it."""
        async def find() -> dict[str, Any] | None:
            return next((e for e in await self.events() if e["reason"] == reason), None)
        found = await eventually(find)
        assert found["involvedObject"]["kind"] == api.KIND
        return found


@pytest_asyncio.fixture(loop_scope="function")  # the operator and the test share one loop
async def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Cluster]:
    async with Emulator() as emulator, kmock.Server(emulator):
        declare(emulator)
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump({
            "current-context": "kmock",
            "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "kmock"}}],
            "clusters": [{"name": "kmock", "cluster": {"server": str(emulator.url).rstrip("/")}}],
            "users": [{"name": "kmock", "user": {"token": "test-token"}}],
        }))
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        monkeypatch.setattr(kopf, "login_with_service_account", lambda **_: None)  # never the host's

        settings = kopf.OperatorSettings()
        settings.scanning.disabled = True
        settings.watching.reconnect_backoff = 0.1
        settings.networking.request_timeout = 5
        runtime = Runtime(config=OperatorConfig(image="example.test/recognizer", version="1.2.3",
                                                recheck_seconds=0.2))
        # The operator gets a loop of its own in a thread (as KopfRunner does): kopf cancels
        # tasks it did not start when it stops, and it reaches kmock over HTTP only anyway.
        stop, ready = threading.Event(), threading.Event()
        operator = threading.Thread(target=asyncio.run, name="operator", args=(kopf.operator(
            settings=settings, standalone=True, namespaces=[NAMESPACE],
            memo=kopf.Memo(runtime=runtime), stop_flag=stop, ready_flag=ready),))
        operator.start()
        client = Kube()
        await client.use(kopf.login_with_kubeconfig(settings=settings))
        try:
            assert await asyncio.to_thread(ready.wait, 10), "the operator did not start"
            yield Cluster(emulator, client)
        finally:
            stop.set()
            await asyncio.to_thread(operator.join, 15)
            await client.close()
            assert not operator.is_alive(), "the operator did not stop"
