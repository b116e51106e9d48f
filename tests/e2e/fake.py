"""An in-memory cluster for the suite's unit tests.

A real cluster cannot run on the test machine (no Docker, no kubelet), and kmock cannot stand in
for the API server behind the real kubectl and helm (it does not serve Namespace objects, lists
without ``kind``, no OpenAPI, no protobuf bodies). So the suite's logic is driven against this
fake of :class:`tests.e2e.kube.Kube`: it keeps objects as the API server would (a namespace
deletion takes its objects, helm install creates the chart's CRDs only when absent), journals every
call, and lets a test make an operation fail or hang the way a real cluster does.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from . import manifests as m
from .kube import CommandFailed

Manifest = dict[str, Any]
CLUSTER_SCOPED = {"namespace", "customresourcedefinition"}


def canonical(kind: str) -> str:
    """kubectl's kind spellings the suite uses -> one name (pods/pod -> pod)."""
    kind = kind.lower()
    return kind[:-1] if kind.endswith("s") else kind


def matches(labels: dict[str, str], selector: str | None) -> bool:
    if not selector:
        return True
    pairs = (term.split("=", 1) for term in selector.split(","))
    return all(labels.get(k) == v for k, v in pairs)


class FakeCluster:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str | None, str], Manifest] = {}
        self.journal: list[tuple[Any, ...]] = []
        self.releases: dict[tuple[str, str], Manifest] = {}
        #: operation name -> what it does instead (raise, block, ...), called with the arguments
        self.hooks: dict[str, Callable[..., Any]] = {}
        #: pods that appear when the chart is installed (the operator's), as a test writes them
        self.operator_pods: list[Manifest] = []
        self.uid = 0

    # ---- helpers for tests ---------------------------------------------------------------
    def put(self, kind: str, manifest: Manifest) -> None:
        meta = manifest.setdefault("metadata", {})
        self.uid += 1
        meta.setdefault("uid", f"uid-{self.uid}")
        kind = canonical(kind)
        ns = None if kind in CLUSTER_SCOPED else meta.get("namespace")
        self.objects[(kind, ns, meta["name"])] = manifest

    def names(self, kind: str, namespace: str | None = None) -> list[str]:
        return sorted(n for (k, ns, n) in self.objects if k == canonical(kind) and ns == namespace)

    def _hook(self, op: str, *args: Any) -> None:
        self.journal.append((op, *args))
        if op in self.hooks:
            self.hooks[op](*args)

    # ---- the Kube interface --------------------------------------------------------------
    def server_version(self) -> str:
        self._hook("server_version")
        return "v1.31.0-fake"

    def get(self, kind: str, namespace: str | None = None, selector: str | None = None) -> list[Manifest]:
        self._hook("get", canonical(kind), namespace, selector)
        k = canonical(kind)
        return [copy.deepcopy(o) for (ok, ns, _), o in sorted(self.objects.items(), key=lambda i: i[0][2])
                if ok == k and (namespace is None or ns == namespace)
                and matches(o["metadata"].get("labels") or {}, selector)]

    def get_one(self, kind: str, name: str, namespace: str | None = None) -> Manifest | None:
        self._hook("get_one", canonical(kind), name, namespace)
        k = canonical(kind)
        found = self.objects.get((k, None if k in CLUSTER_SCOPED else namespace, name))
        return copy.deepcopy(found) if found else None

    def logs(self, namespace: str, pod: str, *, previous: bool = False, tail: int = 40) -> str:
        return f"log of {pod}{' (previous)' if previous else ''}"

    def create(self, manifest: Manifest) -> None:
        kind = canonical(manifest["kind"])
        self._hook("create", kind, manifest["metadata"]["name"])
        key = (kind, None if kind in CLUSTER_SCOPED else manifest["metadata"].get("namespace"), manifest["metadata"]["name"])
        if key in self.objects:
            raise CommandFailed(f"{kind} {key[2]} already exists")
        self.put(kind, copy.deepcopy(manifest))

    def apply(self, manifest: Manifest) -> None:
        kind = canonical(manifest["kind"])
        self._hook("apply", kind, manifest["metadata"]["name"])
        ns = manifest["metadata"].get("namespace")
        if kind not in CLUSTER_SCOPED and ("namespace", None, ns) not in self.objects:
            raise CommandFailed(f'namespaces "{ns}" not found')
        self.put(kind, copy.deepcopy(manifest))

    def delete(self, kind: str, names: list[str], namespace: str | None = None, *, timeout: float = 300) -> None:
        k = canonical(kind)
        self._hook("delete", k, tuple(names), namespace)
        for name in names:
            key = (k, None if k in CLUSTER_SCOPED else namespace, name)
            obj = self.objects.get(key)
            if obj is None:
                continue
            if obj["metadata"].get("finalizers"):
                obj["metadata"]["deletionTimestamp"] = "2025-01-01T00:00:00Z"
                raise CommandFailed(f"timed out waiting for the condition on {k}/{name}")
            del self.objects[key]
            if k == "namespace":
                for other in [o for o in self.objects if o[1] == name]:
                    del self.objects[other]
            if k == "customresourcedefinition":
                for other in [o for o in self.objects if o[0] == "speechtotext"]:
                    del self.objects[other]

    def delete_now(self, kind: str, name: str, namespace: str) -> None:
        self._hook("delete_now", canonical(kind), name, namespace)
        self.objects.pop((canonical(kind), namespace, name), None)

    def patch(self, kind: str, name: str, namespace: str, patch: Manifest) -> None:
        k = canonical(kind)
        self._hook("patch", k, name, namespace, patch)
        obj = self.objects[(k, namespace, name)]
        if "spec" in patch:  # a merge patch of the spec (the only kind the suite sends besides finalizers)
            obj.setdefault("spec", {}).update(patch["spec"])
        if patch.get("metadata", {}).get("finalizers", ...) is None:
            obj["metadata"].pop("finalizers", None)
            if obj["metadata"].get("deletionTimestamp"):
                del self.objects[(k, namespace, name)]

    def scale(self, kind: str, name: str, namespace: str, replicas: int) -> None:
        self._hook("scale", canonical(kind), name, namespace, replicas)
        self.objects[(canonical(kind), namespace, name)]["spec"]["replicas"] = replicas

    def helm_install(self, release: str, namespace: str, chart: Path, values: Manifest) -> None:
        self._hook("helm_install", release, namespace, values)
        if ("namespace", None, namespace) not in self.objects:
            raise CommandFailed(f'create: failed to create: namespaces "{namespace}" not found')
        for crd in m.chart_crds(chart):
            if ("customresourcedefinition", None, crd) not in self.objects:
                self.put("customresourcedefinition", {"metadata": {"name": crd}})
        self.releases[(release, namespace)] = values
        self.put("deployment", {"metadata": {"name": f"{release}-speech-operator", "namespace": namespace,
                                             "labels": {"app.kubernetes.io/instance": release}}})
        for pod in self.operator_pods:
            pod = copy.deepcopy(pod)
            pod["metadata"]["namespace"] = namespace
            pod["metadata"].setdefault("labels", {}).update(
                {"app.kubernetes.io/instance": release, "app.kubernetes.io/component": "operator"})
            self.put("pod", pod)

    def helm_uninstall(self, release: str, namespace: str) -> None:
        self._hook("helm_uninstall", release, namespace)
        if self.releases.pop((release, namespace), None) is not None:
            for key in [k for k, o in self.objects.items()
                        if k[1] == namespace and (o["metadata"].get("labels") or {}).get("app.kubernetes.io/instance") == release]:
                del self.objects[key]

    @contextlib.contextmanager
    def port_forward(self, namespace: str, target: str, remote: int) -> Iterator[int]:
        self._hook("port_forward", namespace, target, remote)
        raise CommandFailed("the fake cluster forwards no ports")
        yield 0  # pragma: no cover


def pod(name: str, *, ready: bool = True, restarts: int = 0, uid: str | None = None, waiting: str | None = None,
        labels: dict[str, str] | None = None, last_exit: tuple[str, int] | None = None) -> Manifest:
    """A pod as ``kubectl get pod -o json`` shows it (the fields the suite reads)."""
    state: Manifest = {"waiting": {"reason": waiting, "message": f"{waiting} detail"}} if waiting else {"running": {}}
    status: Manifest = {"name": "c", "ready": ready, "restartCount": restarts, "state": state}
    if last_exit:
        status["lastState"] = {"terminated": {"reason": last_exit[0], "exitCode": last_exit[1]}}
    return {"metadata": {"name": name, "uid": uid or f"uid-{name}", "labels": dict(labels or {})},
            "status": {"phase": "Running" if not waiting else "Pending",
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                       "containerStatuses": [status]}}
