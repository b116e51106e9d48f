"""Run the real kopf operator over HTTP against kmock's Kubernetes emulator (``harness.kube``)."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import kmock
import kopf
import pytest
import pytest_asyncio
import yaml

import speech_operator.handlers  # noqa: F401  (registers the handlers on kopf's default registry)
from harness.kube import NAMESPACE, Emulator, declare, kubeconfig_for  # tests import some of them from here too
from speech_operator import api, metrics
from speech_operator.config import OperatorConfig
from speech_operator.kube import Kube, load_configuration
from speech_operator.reconcile import Runtime
from tests import rbac
from tests.support import Unstarved

ROOT = Path(__file__).resolve().parents[2]
TEST_AGENT = "test-client"  # the User-Agent of the test's own client (kubectl's part)


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 5.0) -> Any:
    """Poll ``check`` until it returns something truthy (and return it), or fail after ``timeout`` seconds in which
    this process (the test, kmock, the `cluster` fixture's operator) and its children (an operator of its own process)
    did not wait for a CPU, or by the clock after :func:`~tests.support.starved_clock` of it, however starved
    (:meth:`~tests.support.Unstarved.beyond`). On a quiet machine that is ``timeout`` by the clock; on one shared by
    many, where a test gets a few % of a CPU, a Deployment the operator makes in 1-2 s of work came after 7 s of clock,
    and a bound by the clock alone failed the test."""
    stopwatch = Unstarved()
    try:
        while True:
            result = await check()
            if result:
                return result
            if stopwatch.beyond(timeout):
                raise AssertionError(f"not true within {timeout}s ({stopwatch}): {check.__qualname__} -> {result!r}")
            await asyncio.sleep(0.05)
    finally:
        stopwatch.close()


class Cluster:
    """What a test needs: the emulator, a client (our own, as kubectl would be), and helpers."""

    namespace = NAMESPACE
    eventually = staticmethod(eventually)

    def __init__(self, emulator: Emulator, client: Kube, config: OperatorConfig) -> None:
        self.emulator = emulator
        self.api = client
        self.config = config  # the operator's
        self.runtime: Runtime | None = None  # the operator's, with the `cluster` fixture
        #: With the `cluster` fixture and ``exported``: the operator's metrics (its index kopf's, as the CLI's).
        self.exporter: metrics.Exporter | None = None
        #: With the `cluster` fixture: stop the operator now (as SIGTERM does); the seconds it took.
        self.stop_operator: Callable[[], Awaitable[float]] | None = None
        #: With the `cluster` fixture: the operator's settings, which kopf reads as it runs (a test may change some).
        self.settings: kopf.OperatorSettings | None = None
        #: With the `cluster` fixture: when (time.monotonic()) the operator's thread ended, once it did.
        self.operator_ended: float | None = None

    def sent(self, method: str, plural: str, name: str | None = None, sub: str | None = None) -> list[kmock.Request]:
        """Requests the operator (not this test's client) sent for ``plural``/``name``/``sub``."""
        return [r for r in list(self.emulator) if r.method == method and r.resource is not None
                and r.resource.plural == plural and r.name == name and r.subresource == sub
                and r.headers.get("User-Agent") != TEST_AGENT]

    def stt_url(self, name: str = "", sub: str | None = None, namespace: str = NAMESPACE) -> str:
        from speech_operator.kube import path
        return path(api.API_VERSION, api.PLURAL, namespace, name or None, sub)

    def url(self, api_version: str, plural: str, name: str = "", sub: str | None = None,
            namespace: str = NAMESPACE) -> str:
        from speech_operator.kube import path
        return path(api_version, plural, namespace, name or None, sub)

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


@pytest_asyncio.fixture(loop_scope="function")
async def apiserver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Cluster]:
    """kmock serving the operator's resources, a kubeconfig for it in ``KUBECONFIG``, no operator."""
    async with Emulator() as emulator, kmock.Server(emulator):
        declare(emulator)
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump(kubeconfig_for(str(emulator.url).rstrip("/"), {"token": "test-token"})))
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)  # never the host's service account
        client = Kube(await load_configuration(), user_agent=TEST_AGENT)
        await client.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
        try:
            yield Cluster(emulator, client, OperatorConfig())
        finally:
            await client.close()


@pytest.fixture
def watch_seconds() -> int | None:
    """The ``timeoutSeconds`` kopf asks its watches to end after (``settings.watching.server_timeout``; None: it asks
    for none, and the emulator ends them after 30-60 minutes, as the API server does). A test parametrizes it to see
    its watches end and start again."""
    return None


@pytest.fixture
def namespaces() -> list[str] | None:
    """The namespaces the operator watches (the CLI's ``--namespace``); None: every namespace (``--all-namespaces``:
    kopf's ``clusterwide``, :attr:`Runtime.clusterwide`). :data:`NAMESPACE` alone unless a test parametrizes it."""
    return [NAMESPACE]


@pytest.fixture
def exported() -> bool:
    """Whether the operator is given a metrics exporter (:class:`metrics.Exporter`, the CLI's ``--metrics``; its
    :attr:`Cluster.exporter`). No unless a test parametrizes it."""
    return False


@pytest.fixture
def relist_settle_seconds() -> float:
    """The operator's :attr:`~speech_operator.config.OperatorConfig.relist_settle_seconds`: its default unless a test
    module of listings made again gives a shorter one."""
    return OperatorConfig.relist_settle_seconds


def _not_off_the_main_thread(record: logging.LogRecord) -> bool:
    """Not kopf's WARNING that it listens for no signal, run off the main thread: :func:`cluster` runs it so on purpose
    (its stop is kopf's ``stop_flag``). It may come once the operator is ready, in a test's own records: kopf's startup
    activity is over before kopf logs it (:func:`speech_operator.handlers.configure`)."""
    return record.getMessage() != "OS signals are ignored: running not in the main thread."


@pytest_asyncio.fixture(loop_scope="function")  # the operator and the test share one loop
async def cluster(apiserver: Cluster, watch_seconds: int | None, namespaces: list[str] | None,
                  exported: bool, relist_settle_seconds: float) -> AsyncIterator[Cluster]:
    """:func:`apiserver` with the real operator (kopf's runner) watching it."""
    settings = kopf.OperatorSettings()
    settings.scanning.disabled = True
    settings.watching.server_timeout = watch_seconds
    settings.watching.reconnect_backoff = 0.1
    settings.networking.request_timeout = 5
    apiserver.settings = settings
    runtime = Runtime(config=OperatorConfig(image="example.test/recognizer", version="1.2.3", recheck_seconds=0.2,
                                            autoscale_seconds=0.2, demand_seconds=30,
                                            relist_settle_seconds=relist_settle_seconds), clusterwide=namespaces is None)
    apiserver.config = runtime.config
    apiserver.runtime = runtime
    apiserver.exporter = metrics.Exporter() if exported else None
    if namespaces != [NAMESPACE]:
        rbac.SCOPE["namespaces"] = namespaces  # the RBAC the chart would bind it by (tests/conftest.py judges by it)
    # The operator gets a loop of its own in a thread (as KopfRunner does): kopf cancels
    # tasks it did not start when it stops, and it reaches kmock over HTTP only anyway.
    stop, ready = threading.Event(), threading.Event()
    main = kopf.operator(settings=settings, standalone=True, clusterwide=namespaces is None, namespaces=namespaces or [],
                         memo=kopf.Memo(runtime=runtime, metrics=apiserver.exporter),
                         stop_flag=stop, ready_flag=ready)

    def run() -> None:
        try:
            asyncio.run(main)
        finally:
            apiserver.operator_ended = time.monotonic()
    operator = threading.Thread(target=run, name="operator")

    async def stop_operator() -> float:
        started = time.monotonic()
        stop.set()
        await asyncio.to_thread(operator.join, 15)
        assert not operator.is_alive(), "the operator did not stop"
        return time.monotonic() - started

    apiserver.stop_operator = stop_operator
    running = logging.getLogger("kopf._core.reactor.running")
    running.addFilter(_not_off_the_main_thread)
    operator.start()
    try:
        assert await asyncio.to_thread(ready.wait, 10), "the operator did not start"
        yield apiserver
    finally:
        if operator.is_alive():
            await stop_operator()
        running.removeFilter(_not_off_the_main_thread)


# ---- the console script in a process of its own (tests/operator/test_cli.py, test_metrics.py) ----------------------
PEERINGS = "kopf.dev/v1/kopfpeerings"
ENV = {"PYTHONPATH": f"{ROOT / 'operator'}{os.pathsep}{ROOT / 'recognizer'}"}  # this checkout's code


def console_script() -> str:
    found = shutil.which("speech-operator", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    assert found, "speech-operator is not installed (pip install -e '.[operator]')"
    return found


class Operator:
    """``speech-operator ARGS`` in a process of its own; its log lines are collected as they come."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.args, self.env = args, {**os.environ, **ENV, **(env or {})}
        self.lines: list[str] = []

    async def __aenter__(self) -> Operator:
        self.proc = await asyncio.create_subprocess_exec(
            console_script(), *self.args, env=self.env, stdin=subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            self.lines.append(line.decode().rstrip())

    async def line(self, pattern: str, timeout: float = 20) -> str:
        """Wait for a log line matching ``pattern``."""
        async def seen() -> str | None:
            return next((x for x in self.lines if re.search(pattern, x)), None)
        try:
            return await eventually(seen, timeout)
        except AssertionError:
            raise AssertionError(f"no line matching {pattern!r} in:\n" + "\n".join(self.lines)) from None

    async def __aexit__(self, *_: Any) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)  # as the kubelet stops it
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        await self._reader
        print(f"$ speech-operator {' '.join(self.args)}", *self.lines, sep="\n")  # shown when a test fails


async def deployment(cluster: Cluster, name: str = "en-us", namespace: str = NAMESPACE) -> dict[str, Any] | None:
    return await cluster.api.get(cluster.url("apps/v1", "deployments", name, namespace=namespace))


async def condition(cluster: Cluster, type_: str, name: str = "en-us", namespace: str = NAMESPACE) -> dict[str, Any]:
    """The SpeechToText ``name``'s condition ``type_`` as stored ({} when it has none)."""
    body = await cluster.api.get(cluster.stt_url(name, namespace=namespace)) or {}
    return next((c for c in (body.get("status") or {}).get("conditions") or [] if c["type"] == type_), {})


async def one_pod_ready(cluster: Cluster, dep: dict[str, Any], name: str = "en-us", namespace: str = NAMESPACE) -> None:
    """Write the Deployment ``dep``'s status as its controller would with its one pod ready (kmock runs no controller),
    and wait until the SpeechToText says Ready."""
    await cluster.api.patch(cluster.url("apps/v1", "deployments", name, "status", namespace=namespace), {"status": {
        "observedGeneration": dep["metadata"].get("generation", 0), "replicas": 1, "updatedReplicas": 1,
        "readyReplicas": 1, "conditions": []}})

    async def ready() -> bool:
        return (await condition(cluster, "Ready", name, namespace)).get("status") == "True"
    await cluster.eventually(ready)


async def watched(cluster: Cluster, plural: str) -> bool:
    """True once kopf's watch of ``plural`` reached the API server (poll it with ``eventually``): kopf lists, then
    watches from the list's resourceVersion, so what a test makes from then on is an event kopf's handlers see as a
    change, not part of its first listing (``type`` None, which :func:`~speech_operator.handlers.child_changed` leaves)."""
    return any(r.resource is not None and r.resource.plural == plural and r.params.get("watch") == "true"
               and r.headers.get("User-Agent") != TEST_AGENT for r in list(cluster.emulator))


async def quiet(cluster: Cluster, settle: float = 1.0, counted: Callable[[kmock.Request], bool] | None = None) -> bool:
    """True once no request came for ``settle`` seconds (poll it with ``eventually``); with ``counted``, none of those
    it counts (:func:`operators`, the operator's own or kopf's writes, its reads of one object)."""
    before = len(list(cluster.emulator))
    await asyncio.sleep(settle)
    return not any(counted is None or counted(r) for r in list(cluster.emulator)[before:])


def operators(request: kmock.Request) -> bool:
    """Whether ``request`` is one :func:`operator_requests` counts: the operator's or kopf's (not the test's), no watch."""
    return (request.headers.get("User-Agent") != TEST_AGENT and request.params.get("watch") != "true"
            and request.resource is not None)


def operator_requests(cluster: Cluster, since: int = 0, until: int | None = None) -> dict[str, int]:
    """The operator's requests (not the test's, no watch) from the emulator's ``since``-th on (to the ``until``-th,
    not included), by verb and resource."""
    counts: dict[str, int] = {}
    for r in list(cluster.emulator)[since:until]:
        if not operators(r):
            continue
        key = " ".join(filter(None, (r.method, r.resource.plural, r.subresource)))
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def last_looks(cluster: Cluster, looks: int, method: str, plural: str, name: str) -> dict[str, int]:
    """The operator's requests (as :func:`operator_requests` counts them) in its last ``looks`` looks, each ending at
    its request ``method`` ``plural``/``name`` (a re-check's last, or only, read or write): from just after the one that
    ended the look before them to the last one; {} before so many."""
    ends = [i for i, r in enumerate(list(cluster.emulator)) if r.method == method and r.resource is not None
            and r.resource.plural == plural and r.name == name and r.subresource is None
            and r.headers.get("User-Agent") != TEST_AGENT]
    return operator_requests(cluster, ends[-looks - 1] + 1, ends[-1] + 1) if len(ends) > looks else {}


async def settled_looks(cluster: Cluster, looks: int, method: str, plural: str, name: str, only: set[str]) -> dict[str, int]:
    """The operator's requests in its last ``looks`` looks (:func:`last_looks`) once they are ``only`` these (the
    events of a creation's children handled), waited for up to 10 s; else fail with those counted."""
    async def settled() -> dict[str, int] | None:
        sent = last_looks(cluster, looks, method, plural, name)
        return sent if set(sent) == only else None
    try:
        found: dict[str, int] = await eventually(settled, 10)
    except AssertionError:
        raise AssertionError(f"the last {looks} looks: {last_looks(cluster, looks, method, plural, name)}") from None
    return found


def reconcile_errors() -> dict[tuple[str, str], float]:
    """``speech_operator_reconcile_errors_total`` of this process (the `cluster` fixture's operator runs in it; other
    tests' counts in it too: compare two readings) by scope and reason."""
    return {(s.labels.get("scope", "reconcile"), s.labels["reason"]): s.value
            for family in metrics.RECONCILE_FAILURES.collect() for s in family.samples if s.name.endswith("_total")}


def declare_peerings(cluster: Cluster) -> None:
    cluster.emulator.resources[PEERINGS] = kmock.ResourceInfo(
        kind="KopfPeering", namespaced=True, verbs={"get", "list", "watch", "create", "patch", "delete"})


# An HPA on en-us's Deployment: what tests/operator/test_foreign_autoscalers.py and test_stop_backlog.py share.

HPAS = "horizontalpodautoscalers"


def stt(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": "en-us", "namespace": NAMESPACE},
            "spec": {"locale": "en-US", "eula": "accept", "replicas": 1, **spec}}


def hpa(name: str, api_version: str = "apps/v1", kind: str = "Deployment", **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": name, "namespace": NAMESPACE, **meta},
            "spec": {"scaleTargetRef": {"apiVersion": api_version, "kind": kind, "name": "en-us"},
                     "minReplicas": 1, "maxReplicas": 5,
                     "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                         "type": "Utilization", "averageUtilization": 70}}}]}}


async def ready_stt(cluster: Cluster) -> None:
    """A SpeechToText of one replica, Ready, the operator done with it."""
    await cluster.api.create(cluster.stt_url(), stt())
    dep = await cluster.eventually(lambda: cluster.api.get(cluster.url("apps/v1", "deployments", "en-us")))
    await one_pod_ready(cluster, dep)
    await cluster.eventually(lambda: quiet(cluster))


async def scale_deployment(cluster: Cluster, replicas: int) -> None:
    """What the HPA controller does (its /scale write), and the Deployment controller then (all pods ready)."""
    await cluster.api.patch(cluster.url("apps/v1", "deployments", "en-us"), {"spec": {"replicas": replicas}})
    await cluster.api.patch(cluster.url("apps/v1", "deployments", "en-us", "status"), {"status": {
        "replicas": replicas, "updatedReplicas": replicas, "readyReplicas": replicas}})


async def held_by_an_hpa_at_three(cluster: Cluster) -> None:
    """A ready SpeechToText whose Deployment an HPA holds at 3 replicas, the operator done with it."""
    await ready_stt(cluster)
    await cluster.api.create(cluster.url("autoscaling/v2", HPAS), hpa("web"))
    await cluster.eventually(lambda: condition(cluster, "Degraded"))
    await scale_deployment(cluster, 3)
    await cluster.eventually(lambda: quiet(cluster))


def hpa_scales_at_each_write(cluster: Cluster, times: int | None) -> list[int]:
    """The HPA scales the Deployment (4, 5, 4, ...) between the operator's read and each of its next ``times`` writes
    of it (each write then 409 Conflict), or each of them (None); the replicas it scaled to, in order."""
    scaled: list[int] = []

    async def scales(request: Any) -> None:
        if request.method == "PATCH" and (times is None or len(scaled) < times):
            scaled.append(4 + len(scaled) % 2)
            await scale_deployment(cluster, scaled[-1])
    cluster.emulator.meddlers[("deployments", "en-us")] = scales
    return scaled
