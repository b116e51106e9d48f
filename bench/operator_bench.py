"""The real kopf operator against kmock: 200 SpeechToText objects, convergence time and API writes.

Writes are every create/update/delete request the operator sends to the emulated API server
(POST/PATCH/PUT/DELETE), counted by resource. Three phases:
create (200 objects), a no-op resync (every object touched without a spec change: a label
only, so an update event arrives with nothing to do), and an operator restart with nothing
changed (the resume handlers run for every object).
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from pathlib import Path
import tempfile
from typing import Any

import kmock
import kopf
import yaml

from tests.operator.conftest import NAMESPACE, Emulator, declare

import speech_operator.handlers  # noqa: F401  (registers the handlers)
from speech_operator import api
from speech_operator.config import OperatorConfig
from speech_operator.kube import Kube, path
from speech_operator.reconcile import Runtime

WRITES = {"POST", "PATCH", "PUT", "DELETE"}


class CountingEmulator(Emulator):
    """Counts write requests, by resource plural (``…/status`` for status)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.writes: collections.Counter[str] = collections.Counter()
        self.counting = True

    async def _handle(self, request: kmock.Request) -> Any:
        if self.counting and request.method.upper() in WRITES:
            plural = getattr(request.resource, "plural", None) or str(request.resource)
            self.writes[f"{plural}{'/' + request.subresource if request.subresource else ''}"] += 1
        return await super()._handle(request)


def _operator(stop: threading.Event, ready: threading.Event) -> threading.Thread:
    settings = kopf.OperatorSettings()
    settings.scanning.disabled = True
    settings.watching.reconnect_backoff = 0.1
    settings.networking.request_timeout = 10
    settings.posting.enabled = True
    runtime = Runtime(config=OperatorConfig(image="example.test/recognizer", version="1.2.3", recheck_seconds=5))
    thread = threading.Thread(target=asyncio.run, name="operator", daemon=True, args=(kopf.operator(
        settings=settings, standalone=True, namespaces=[NAMESPACE],
        memo=kopf.Memo(runtime=runtime), stop_flag=stop, ready_flag=ready),))
    thread.start()
    return thread


def _stt(i: int) -> dict[str, Any]:
    return {"apiVersion": api.API_VERSION, "kind": api.KIND,
            "metadata": {"name": f"stt-{i:03d}", "namespace": NAMESPACE},
            "spec": {"locale": "ko-KR", "eula": "accept", "replicas": 1}}


async def _bench(count: int, settle: float) -> dict[str, Any]:
    import os

    async with CountingEmulator() as emulator, kmock.Server(emulator):
        declare(emulator)
        tmp = Path(tempfile.mkdtemp(prefix="bench-kmock-"))
        kubeconfig = tmp / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump({
            "current-context": "kmock",
            "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "kmock"}}],
            "clusters": [{"name": "kmock", "cluster": {"server": str(emulator.url).rstrip("/")}}],
            "users": [{"name": "kmock", "user": {"token": "bench-token"}}],
        }))
        os.environ["KUBECONFIG"] = str(kubeconfig)
        kopf.login_with_service_account = lambda **_: None  # never the host's
        client = Kube()
        await client.use(kopf.login_with_kubeconfig(settings=kopf.OperatorSettings()))
        stt_url = path(api.API_VERSION, api.PLURAL, NAMESPACE, None, None)

        def ours() -> dict[str, int]:
            return dict(emulator.writes)

        async def converged() -> tuple[int, int]:
            deps = (await client.get(path("apps/v1", "deployments", NAMESPACE, None, None)) or {}).get("items", [])
            stts = (await client.get(stt_url) or {}).get("items", [])
            with_status = sum(1 for o in stts if (o.get("status") or {}).get("conditions"))
            return len(deps), with_status

        stop, ready = threading.Event(), threading.Event()
        op = _operator(stop, ready)
        assert await asyncio.to_thread(ready.wait, 20), "the operator did not start"
        emulator.writes.clear()
        out: dict[str, Any] = {"objects": count}
        t0 = time.monotonic()
        emulator.counting = False  # our own creates are not the operator's writes
        gate = asyncio.Semaphore(10)

        async def create(i: int) -> None:
            async with gate:
                for _ in range(5):
                    try:
                        await client.create(stt_url, _stt(i))
                        return
                    except asyncio.TimeoutError:  # retried: kmock is busy; a duplicate create is a 409 we ignore
                        continue

        await asyncio.gather(*(create(i) for i in range(count)))
        emulator.counting = True
        created = time.monotonic() - t0
        deadline = time.monotonic() + 180
        deps_at = status_at = None
        while time.monotonic() < deadline:
            try:
                deps, statuses = await converged()
            except asyncio.TimeoutError:  # the emulator is busy with the operator's requests
                continue
            now = time.monotonic() - t0
            if deps >= count and deps_at is None:
                deps_at = now
            if statuses >= count and status_at is None:
                status_at = now
            if deps_at and status_at:
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(settle)  # let trailing writes (events, status) land
        writes = ours()
        out.update({
            "create_requests_s": round(created, 2),
            "all_deployments_s": round(deps_at, 2) if deps_at else None,
            "all_statuses_s": round(status_at, 2) if status_at else None,
            "writes_on_create": sum(writes.values()),
            "writes_per_object": round(sum(writes.values()) / count, 2),
            "writes_on_create_by_resource": writes,
        })
        print("  ", {k: v for k, v in out.items() if k != "writes_on_create_by_resource"}, writes)

        # no-op resync: every object gets a label (no spec change)
        emulator.writes.clear()
        emulator.counting = False
        await asyncio.gather(*(client.patch(path(api.API_VERSION, api.PLURAL, NAMESPACE, f"stt-{i:03d}", None),
                                            {"metadata": {"labels": {"bench/touched": "yes"}}}) for i in range(count)))
        emulator.counting = True
        await asyncio.sleep(settle)
        out["writes_on_noop_resync"] = sum(ours().values())
        out["writes_on_noop_resync_by_resource"] = ours()
        print("   no-op resync writes", ours())

        # restart with nothing changed
        stop.set()
        await asyncio.to_thread(op.join, 30)
        emulator.writes.clear()
        stop, ready = threading.Event(), threading.Event()
        t1 = time.monotonic()
        op = _operator(stop, ready)
        assert await asyncio.to_thread(ready.wait, 20), "the operator did not restart"
        await asyncio.sleep(settle)
        out["writes_on_restart"] = sum(ours().values())
        out["writes_on_restart_by_resource"] = ours()
        out["restart_observed_s"] = round(time.monotonic() - t1, 1)
        print("   restart writes", ours())
        stop.set()
        await asyncio.to_thread(op.join, 30)
        await client.close()
        return out


def operator(count: int = 200, settle: float = 5.0) -> dict[str, Any]:
    return asyncio.run(_bench(count, settle))
