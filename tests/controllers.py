"""What a cluster's Deployment and ReplicaSet controllers and its kubelet do, for kmock (which only stores objects).

:class:`Replicas` keeps one Deployment's pods in kmock: as many Pod objects as the Deployment's
``spec.replicas``, each backed by something that listens on loopback (what ``start`` returns: a
scripted ``/sessions`` server, or a real recognizer process), with ``status.podIP`` 127.0.0.1 and
the ``http`` container port where it listens (no pod network here: every pod is on loopback, on
a port of its own). A pod turns Ready once what backs it answers ``/ready`` (its readiness probe);
the Deployment's ``status`` counts them. On scale-down the pods with the lowest
``controller.kubernetes.io/pod-deletion-cost`` go first, then the newest, as the ReplicaSet
controller ranks them; their backing is stopped (a kubelet's SIGTERM).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

from speech_operator import builders
from speech_operator.kube import Kube, path
from speech_recognizer import contract

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"


class Backing(Protocol):
    """What runs behind one pod."""

    port: int

    async def stop(self) -> None: ...


@dataclass
class _Pod:
    name: str
    serial: int
    backing: Backing
    ready: bool = False


@dataclass
class Replicas:
    """The pods of Deployment ``name`` in ``namespace``, kept by :meth:`run` (cancel it to stop)."""

    kube: Kube
    namespace: str
    name: str
    start: Callable[[str], Awaitable[Backing]]
    pods: dict[str, _Pod] = field(default_factory=dict)
    #: Every pod ever started, by name, in order.
    started: list[str] = field(default_factory=list)
    #: Pods removed, in order.
    removed: list[str] = field(default_factory=list)
    #: What happened when (monotonic seconds): ``(time, "started" | "ready" | "removed", pod)``.
    history: list[tuple[float, str, str]] = field(default_factory=list)
    _serial: Any = field(default_factory=lambda: itertools.count())

    async def run(self, period: float = 0.05) -> None:
        async with aiohttp.ClientSession() as http:
            try:
                while True:
                    await self._step(http)
                    await asyncio.sleep(period)
            finally:
                for pod in list(self.pods.values()):
                    await pod.backing.stop()

    async def _step(self, http: aiohttp.ClientSession) -> None:
        deployment = await self.kube.get(path("apps/v1", "deployments", self.namespace, self.name))
        if deployment is None:
            return
        want = int(deployment["spec"].get("replicas", 1))
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        while len(self.pods) < want:
            await self._add(labels)
        if len(self.pods) > want:
            costs = await self._costs()
            doomed = sorted(self.pods.values(), key=lambda p: (costs.get(p.name, 0), -p.serial))[: len(self.pods) - want]
            for pod in doomed:
                await self._remove(pod)
        for pod in self.pods.values():
            if not pod.ready and await self._answers(http, pod):
                await self.kube.patch(path("v1", "pods", self.namespace, pod.name, "status"), {"status": {
                    "phase": "Running", "podIP": "127.0.0.1",
                    "conditions": [{"type": "Ready", "status": "True"}]}})
                # ready once the API says so: a test that counts ready pods and then marks one not ready must not
                # have this patch land after its own (it did on a loaded machine: the pod was Ready again)
                pod.ready = True
                self.history.append((time.monotonic(), "ready", pod.name))
        ready = sum(p.ready for p in self.pods.values())
        status = {"replicas": len(self.pods), "updatedReplicas": len(self.pods), "readyReplicas": ready,
                  "availableReplicas": ready, "observedGeneration": deployment["metadata"].get("generation", 1)}
        if {k: (deployment.get("status") or {}).get(k) for k in status} != status:
            await self.kube.patch(path("apps/v1", "deployments", self.namespace, self.name, "status"), {"status": status})

    async def _add(self, labels: dict[str, str]) -> None:
        serial = next(self._serial)
        name = f"{self.name}-{serial}"
        started = time.monotonic()
        backing = await self.start(name)
        created = datetime.datetime.now(datetime.UTC).isoformat()
        await self.kube.create(path("v1", "pods", self.namespace), {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": self.namespace, "labels": dict(labels), "creationTimestamp": created},
            "spec": {"containers": [{"name": builders.CONTAINER, "image": "example.test/recognizer",
                                     "ports": [{"name": builders.PORT_NAME, "containerPort": backing.port}]}]},
        })
        # the API server makes a create's status Pending and nothing more; the kubelet writes the pod's IP (/status)
        await self.kube.patch(path("v1", "pods", self.namespace, name, "status"), {"status": {
            "phase": "Pending", "podIP": "127.0.0.1", "conditions": [{"type": "Ready", "status": "False"}]}})
        self.pods[name] = _Pod(name, serial, backing)
        self.started.append(name)
        self.history.append((started, "started", name))

    async def _remove(self, pod: _Pod) -> None:
        del self.pods[pod.name]
        self.removed.append(pod.name)
        self.history.append((time.monotonic(), "removed", pod.name))
        await self.kube.delete(path("v1", "pods", self.namespace, pod.name))
        await pod.backing.stop()

    async def _costs(self) -> dict[str, int]:
        costs = {}
        for name in self.pods:
            pod = await self.kube.get(path("v1", "pods", self.namespace, name)) or {}
            costs[name] = int(((pod.get("metadata") or {}).get("annotations") or {}).get(DELETION_COST, 0))
        return costs

    @staticmethod
    async def _answers(http: aiohttp.ClientSession, pod: _Pod) -> bool:
        """The readiness probe: ``GET /ready`` answers 200."""
        with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
            async with http.get(f"http://127.0.0.1:{pod.backing.port}{contract.ROUTE_READY}",
                                timeout=aiohttp.ClientTimeout(total=2)) as resp:
                return resp.status == 200
        return False
