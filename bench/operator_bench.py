"""The real kopf operator against kmock: 200 SpeechToText objects, convergence time and API writes.

Writes are every create/update/delete request the operator sends to the emulated API server
(POST/PATCH/PUT/DELETE), counted by resource; every request is also counted by verb and resource
(``GET deployments``; a collection's list or watch as ``LIST pods``; an event with its reason), to tell where a change in the
counts comes from. Phases: create (200 objects); their Deployments made ready (kmock runs no
Deployment controller: the bench writes each one's status as it would, with its one pod ready,
so what follows is a working fleet's: a reconcile lists a SpeechToText's pods only while they are
not all ready); a no-op resync (every object delivered again unchanged); a label on every
SpeechToText; and an operator restart with nothing changed (the resume handlers run for every object).
"""

from __future__ import annotations

import asyncio
import collections
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import kmock
import kopf
import yaml

import speech_operator.handlers  # noqa: F401  (registers the handlers)
from harness.kube import NAMESPACE, Emulator, declare
from speech_operator import api
from speech_operator.config import OperatorConfig
from speech_operator.kube import Kube, load_configuration, path
from speech_operator.reconcile import Runtime

WRITES = {"POST", "PATCH", "PUT", "DELETE"}
BENCH_AGENT = "bench"


class CountingEmulator(Emulator):
    """Counts requests by method and write requests by resource plural (``…/status`` for status).

    kmock records every request it has served and, to route each new one, scans that whole
    record (``request in payload._source`` in ``RawHandler._handle``): quadratic in the number of
    requests. With 200 objects (thousands of requests) that alone made kmock answer after the
    clients' 10-30 s timeouts. The record is only needed to find the request being routed, so
    it is cut down to the requests still in flight.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.writes: collections.Counter[str] = collections.Counter()
        self.methods: collections.Counter[str] = collections.Counter()
        #: requests by verb and resource: ``GET speechtotexts`` (one object), ``LIST pods`` (a list or a watch)
        self.by_resource: collections.Counter[str] = collections.Counter()
        #: the first few writes of each resource since the last reset: (method, path, body)
        self.samples: dict[str, list[Any]] = {}
        self.counting = True
        self._inflight: dict[int, kmock.Request] = {}

    async def _handle(self, request: kmock.Request) -> Any:
        method = request.method.upper()
        if self.counting and request.headers.get("User-Agent") != BENCH_AGENT:
            self.methods[method] += 1
            plural = getattr(request.resource, "plural", None) or request.url.path  # discovery: its path
            key = f"{plural}{'/' + request.subresource if request.subresource else ''}"
            reason = f" {request.data.get('reason')}" if key == "events" and isinstance(request.data, dict) else ""
            self.by_resource[f"{'LIST' if method == 'GET' and not request.name else method} {key}{reason}"] += 1
            if method in WRITES:
                self.writes[key] += 1
                seen = self.samples.setdefault(key, [])
                if len(seen) < 2:
                    seen.append([method, str(getattr(request, "url", "")), request.data])
        self._inflight[id(request)] = request
        self._requests[:] = list(self._inflight.values())
        try:
            return await super()._handle(request)
        finally:
            self._inflight.pop(id(request), None)


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


def _jsonable(x: Any) -> Any:
    import json

    return json.loads(json.dumps(x, default=str))


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
        os.environ.pop("KUBERNETES_SERVICE_HOST", None)  # never the host's service account
        # The benchmark's own client (kubectl's part): its requests carry User-Agent: bench and are not counted.
        client = Kube(await load_configuration(), user_agent=BENCH_AGENT)
        stt_url = path(api.API_VERSION, api.PLURAL, NAMESPACE, None, None)
        dep_url = path("apps/v1", "deployments", NAMESPACE, None, None)

        def phase(prefix: str) -> dict[str, Any]:
            """What the operator sent since the last reset, under ``prefix``."""
            w = dict(emulator.writes)
            return {f"writes_{prefix}": sum(w.values()), f"writes_{prefix}_by_resource": w,
                    f"requests_{prefix}_by_method": dict(emulator.methods),
                    f"requests_{prefix}_by_resource": dict(sorted(emulator.by_resource.items())),
                    f"write_samples_{prefix}": _jsonable(emulator.samples)}

        def reset() -> None:
            emulator.writes.clear()
            emulator.methods.clear()
            emulator.by_resource.clear()
            emulator.samples = {}

        async def converged() -> tuple[int, int]:
            deps = (await client.get(dep_url) or {}).get("items", [])
            stts = (await client.get(stt_url) or {}).get("items", [])
            with_status = sum(1 for o in stts if (o.get("status") or {}).get("conditions"))
            return len(deps), with_status

        async def quiet(limit: float) -> float:
            """Wait until the operator has sent nothing for ``settle`` s (or ``limit`` s passed)."""
            t = time.monotonic()
            last, since = -1, time.monotonic()
            while time.monotonic() - t < limit:
                n = sum(emulator.methods.values())
                if n != last:
                    last, since = n, time.monotonic()
                elif time.monotonic() - since >= settle:
                    break
                await asyncio.sleep(0.2)
            return round(time.monotonic() - t, 1)

        stop, ready = threading.Event(), threading.Event()
        op = _operator(stop, ready)
        assert await asyncio.to_thread(ready.wait, 20), "the operator did not start"
        reset()
        out: dict[str, Any] = {"objects": count}
        t0 = time.monotonic()
        gate = asyncio.Semaphore(10)

        async def create(i: int) -> None:
            async with gate:
                for _ in range(5):
                    try:
                        await client.create(stt_url, _stt(i))
                        return
                    except TimeoutError:  # retried: kmock is busy; a duplicate create is a 409 we ignore
                        continue

        await asyncio.gather(*(create(i) for i in range(count)))
        created = time.monotonic() - t0
        deadline = time.monotonic() + 180
        deps_at = status_at = None
        while time.monotonic() < deadline:
            try:
                deps, statuses = await converged()
            except TimeoutError:  # the emulator is busy with the operator's requests
                continue
            now = time.monotonic() - t0
            if deps >= count and deps_at is None:
                deps_at = now
            if statuses >= count and status_at is None:
                status_at = now
            if deps_at and status_at:
                break
            await asyncio.sleep(0.2)
        await quiet(60)  # let trailing writes (events, status) land
        out.update({
            "create_requests_s": round(created, 2),
            "all_deployments_s": round(deps_at, 2) if deps_at else None,
            "all_statuses_s": round(status_at, 2) if status_at else None,
            **phase("on_create"),
        })
        out["writes_per_object"] = round(out["writes_on_create"] / count, 2)
        print("  ", {k: v for k, v in out.items() if not k.endswith("_by_resource") and not k.startswith("write_samples")}, flush=True)

        # the Deployments ready, as their controller would write them with their one pod ready
        reset()
        objs = [path(api.API_VERSION, api.PLURAL, NAMESPACE, f"stt-{i:03d}") for i in range(count)]
        objs += [path("apps/v1", "deployments", NAMESPACE, f"stt-{i:03d}") for i in range(count)]
        ready_status = {"status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1,
                                   "availableReplicas": 1, "conditions": []}}
        for k in range(count, 2 * count, 20):
            await asyncio.gather(*(client.patch(u + "/status", ready_status) for u in objs[k:k + 20]))
        await quiet(60)
        out.update(phase("on_deployments_ready"))
        print("   deployments ready", out["writes_on_deployments_ready_by_resource"], flush=True)

        # no-op resync: every SpeechToText and every Deployment delivered again unchanged (a MODIFIED
        # watch event with the same content and resourceVersion: Emulator.resend; a write that
        # changes nothing sends no event, as on a real API server)
        reset()
        for plural in (api.PLURAL, "deployments"):
            await emulator.resend(plural)
        out["noop_resync_quiet_after_s"] = await quiet(60)
        out.update(phase("on_noop_resync"))
        print("   no-op resync", out["writes_on_noop_resync_by_resource"], flush=True)

        # a metadata-only change: a label on every SpeechToText (kopf counts labels as part of the
        # object's essence, so its update handler runs; reported, not a target)
        reset()
        for k in range(0, count, 20):
            await asyncio.gather(*(client.patch(u, {"metadata": {"labels": {"bench/touched": "yes"}}}) for u in objs[k:min(k + 20, count)]))
        await quiet(60)
        out.update(phase("on_label_change"))
        print("   label change", out["writes_on_label_change_by_resource"], flush=True)

        # restart with nothing changed
        stop.set()
        await asyncio.to_thread(op.join, 30)
        reset()
        stop, ready = threading.Event(), threading.Event()
        t1 = time.monotonic()
        op = _operator(stop, ready)
        assert await asyncio.to_thread(ready.wait, 20), "the operator did not restart"
        # its resume handlers first (a GET of a SpeechToText): under load kopf may start them after the settle time
        started = time.monotonic()
        while not emulator.by_resource[f"GET {api.PLURAL}"] and time.monotonic() - started < 60:
            await asyncio.sleep(0.2)
        await quiet(120)
        out.update(phase("on_restart"))
        out["restart_quiet_after_s"] = round(time.monotonic() - t1, 1)
        print("   restart", out["writes_on_restart_by_resource"], flush=True)
        stop.set()
        await asyncio.to_thread(op.join, 30)
        await client.close()
        return out


def operator(count: int = 200, settle: float = 3.0) -> dict[str, Any]:
    return asyncio.run(_bench(count, settle))
