"""The kopf privates the operator wraps for its exit (operator/speech_operator/kopf_exit.py, kopf_scanning.py), pinned
with the installed kopf: they exist with the shape the wraps rely on, and with the wraps kopf's exit wakes a worker
asleep as a standby replica's peering worker sleeps, the depletion says the operator is stopping only as kopf's
orchestration of its watches is cancelled (its stop; not a watch ended as its resource went), and a stop ends kopf's
lookup of the API server's resources with its requests. A kopf that renames or reshapes them fails here, in one test
naming what depends on them, not as standby replicas that take the whole grace (HANDLER_GRACE_SECONDS) to stop again, or
as a stop during kopf's start-up that takes 5 s more and logs an ERROR. kopf's own worker, peering processor, depletion
and lookup, on a loop of this test; no API server (the peering event is handed to the worker as kopf's watch would; the
lookup's requests reach a socket that never answers, as an API server slow to answer).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import importlib.metadata
import inspect
import logging
import ssl
import time
import types
from typing import Any

import aiohttp
import certifi
import kopf
import pytest
from kopf._cogs.aiokits import aiotasks
from kopf._cogs.clients import auth, scanning
from kopf._cogs.structs import credentials, references
from kopf._core.engines import peering
from kopf._core.reactor import observation, orchestration, queueing, running

from speech_operator import kopf_exit, kopf_scanning, kube
from speech_operator.handlers import HANDLER_GRACE_SECONDS

pytestmark = pytest.mark.unit  # no model, server, operator or browser: the quick run (README, Tests)

WRAP = "operator/speech_operator/kopf_exit.py"
SCANNING = "operator/speech_operator/kopf_scanning.py"
NAMESPACE = references.NamespaceName("speech")
PEERINGS = kopf.Resource("kopf.dev", "v1", "kopfpeerings", namespaced=True)
#: Seconds within which kopf's exit ends a worker that was asleep (it has nothing to finish).
WOKEN_WITHIN = 1.0


def test_the_kopf_private_the_exit_wraps_exists_with_its_shape() -> None:
    kopf_exit.install()
    kopf_exit.install()  # once per process, however many operators start in it
    wrapped = queueing._wait_for_depletion
    assert getattr(wrapped, kopf_exit.WAKES, False), f"{WRAP} install() did not wrap kopf's depletion"
    original = inspect.unwrap(wrapped)
    assert not getattr(original, kopf_exit.WAKES, False), "wrapped twice"
    version = importlib.metadata.version("kopf")
    params = inspect.signature(original).parameters
    assert list(params) == ["signaller", "scheduler", "settings", "streams"] and all(
        p.kind is inspect.Parameter.KEYWORD_ONLY for p in params.values()), (
        f"kopf {version}: kopf._core.reactor.queueing._wait_for_depletion takes other parameters; {WRAP} passes "
        "streams= to it")
    assert "_wait_for_depletion" in queueing.watcher.__code__.co_names, (
        f"kopf {version}: queueing.watcher no longer calls _wait_for_depletion by its module's name at exit; {WRAP} "
        "replaces it there")
    assert queueing.Stream._fields == ("backlog", "pressure"), (
        f"kopf {version}: queueing.Stream is {queueing.Stream._fields}; {WRAP} sets each stream's pressure")


def test_the_kopf_task_whose_cancellation_is_the_stop_exists_by_its_name() -> None:
    version = importlib.metadata.version("kopf")
    source = inspect.getsource(running.spawn_tasks)
    at = source.find(f'name="{kopf_exit.ORCHESTRATION}"')
    assert at >= 0 and "coro=orchestration.orchestrator(" in source[at:at + 200], (
        f"kopf {version}: kopf._core.reactor.running.spawn_tasks no longer runs its orchestration of the watches in a root "
        f"task named {kopf_exit.ORCHESTRATION!r}; {WRAP} tells the operator's stop by that task's cancellation")
    assert "aiotasks.stop(tasks" in inspect.getsource(orchestration.orchestrator), (
        f"kopf {version}: kopf's orchestrator no longer stops its watches as it is cancelled; {WRAP} tells the stop then")


async def _depleted_in(name: str, cancelled: bool) -> bool:
    """Whether kopf's depletion (wrapped) said the operator is stopping, run in a task ``name`` as kopf's orchestration
    ends a watch: as that task is cancelled (the operator's stop), or as it runs on (a watch of a resource gone)."""
    assert not kopf_exit.stopping()

    async def orchestrating() -> None:
        try:
            if cancelled:
                await asyncio.Event().wait()
        finally:
            await queueing._wait_for_depletion(signaller=asyncio.Condition(), scheduler=aiotasks.Scheduler(),
                                               settings=kopf.OperatorSettings(), streams={})
    task = asyncio.create_task(orchestrating(), name=name)
    await asyncio.sleep(0)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return kopf_exit.stopping()


@pytest.mark.parametrize(("name", "cancelled", "stopping"), [
    (kopf_exit.ORCHESTRATION, False, False), ("another task", True, False), (kopf_exit.ORCHESTRATION, True, True)],
    ids=["a-watch-ended-as-the-operator-runs", "another-task-cancelled", "the-operators-stop"])
def test_the_exit_says_stopping_only_as_kopfs_orchestration_is_cancelled(name: str, cancelled: bool,
                                                                          stopping: bool) -> None:
    kopf_exit.install()
    assert asyncio.run(_depleted_in(name, cancelled)) is stopping  # a loop of its own, as each operator has


async def test_kopfs_exit_wakes_a_standby_replicas_peering_worker_at_once(caplog: pytest.LogCaptureFixture) -> None:
    """A live peer ranks above this replica: kopf's peering processor sleeps in the peering object's worker until that
    peer's keep-alive lapses (60 s). kopf's exit (its depletion, as the peering watch ends) ends that worker at once,
    with no WARNING; unwrapped it waited ``exit_timeout`` (the operator's HANDLER_GRACE_SECONDS), then said "Unprocessed
    streams left"."""
    kopf_exit.install()
    settings = kopf.OperatorSettings()
    settings.peering.name, settings.peering.priority = "speech-operator", 1
    settings.queueing.exit_timeout = HANDLER_GRACE_SECONDS
    called = asyncio.Event()

    async def processor(**kwargs: Any) -> None:
        called.set()
        await peering.process_peering_event(
            namespace=NAMESPACE, resource=PEERINGS, identity=peering.Identity("this-replica"), settings=settings,
            autoclean=False, **kwargs)  # no API server: nothing is written (no peer is dead), nothing read

    now = datetime.datetime.now(datetime.UTC).isoformat()
    event = {"type": "MODIFIED", "object": {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {
        "name": "speech-operator", "namespace": "speech", "uid": "peering-uid"},
        "status": {"other-replica": {"priority": 100, "lifetime": 60, "lastseen": now}}}}
    signaller = asyncio.Condition()
    scheduler = aiotasks.Scheduler()
    key = (PEERINGS, queueing.ObjectUid("peering-uid"))
    streams: dict[Any, queueing.Stream] = {key: queueing.Stream(backlog=asyncio.Queue(), pressure=asyncio.Event())}
    await streams[key].backlog.put(event)  # type: ignore[arg-type]
    await scheduler.spawn(queueing.worker(signaller=signaller, settings=settings, processor=processor,
                                          streams=streams, key=key))
    try:
        await asyncio.wait_for(called.wait(), 5)
        await asyncio.sleep(0.2)  # the processor asleep until the peer's keep-alive lapses
        assert streams, "the peering worker did not sleep"
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="kopf"):
            await queueing._wait_for_depletion(signaller=signaller, scheduler=scheduler, settings=settings, streams=streams)
        took = time.monotonic() - started
    finally:
        await scheduler.close()
    assert not streams and not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert took < WOKEN_WITHIN, f"kopf's exit took {took:.1f} s to end a sleeping peering worker"


def test_the_kopf_lookup_of_resources_the_exit_ends_uses_as_completed_by_its_modules_asyncio() -> None:
    kopf_scanning.install()
    kopf_scanning.install()
    version = importlib.metadata.version("kopf")
    assert isinstance(scanning.asyncio, kopf_scanning._EndingWithTheLookup), f"{SCANNING} install() did not reach kopf's lookup"
    assert scanning.asyncio.as_completed is kopf_scanning.as_completed and scanning.asyncio.sleep is asyncio.sleep
    for fn in (scanning.scan_resources, scanning._read_old_api, scanning._read_new_apis):
        names = fn.__code__.co_names
        assert "asyncio" in names and "as_completed" in names, (
            f"kopf {version}: kopf._cogs.clients.scanning.{fn.__name__} no longer calls asyncio.as_completed by its "
            f"module's asyncio; {SCANNING} replaces that for the stop to end the lookup's requests")
    assert "scan_resources" in observation.resource_observer.__code__.co_names, (
        f"kopf {version}: kopf's resource observer no longer looks up resources with scanning.scan_resources; see {SCANNING}")


async def test_a_stop_ends_kopfs_lookup_of_resources_with_its_requests(caplog: pytest.LogCaptureFixture) -> None:
    """kopf's lookup of the API server's resources (as the operator starts), cancelled as a stop cancels it while the
    API server has not answered: its requests end with it. Unwrapped they went on (kopf waits 5 s for such tasks at
    exit, after its cleanup closed their session: an ERROR "Request attempt #1/9 failed ... Connector is closed")."""
    kopf_scanning.install()
    asked: list[str] = []

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        asked.append((await reader.readline()).decode())
        await reader.read()  # until the client goes
        writer.close()

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    vault = credentials.Vault()
    await vault.populate({"test": kopf.ConnectionInfo(server=f"http://127.0.0.1:{port}")})
    auth.vault_var.set(vault)
    this = asyncio.current_task()
    before = asyncio.all_tasks()
    try:
        with caplog.at_level(logging.DEBUG, logger="kopf"):
            scan = asyncio.create_task(scanning.scan_resources(settings=kopf.OperatorSettings(), logger=logging.getLogger("kopf.test")))
            started = time.monotonic()
            while len(asked) < 2:  # /api and /apis, unanswered
                assert time.monotonic() - started < 5, f"kopf's lookup asked for {asked} only"
                await asyncio.sleep(0.01)
            scan.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await scan
            left = asyncio.all_tasks() - before - {scan}
            _, going_on = await asyncio.wait(left, timeout=WOKEN_WITHIN) if left else (set(), set())
    finally:
        for task in asyncio.all_tasks() - before - {this}:
            task.cancel()
        await vault.close()
        server.close()
    assert sorted(line.split()[1] for line in asked) == ["/api", "/apis"], asked
    assert not going_on, f"kopf's lookup, cancelled, left {sorted(t.get_coro().__qualname__ for t in going_on)} running"
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


def _shape(value: Any) -> Any:
    """What two sessions (or connectors) built alike have alike: scalars, classes and functions as they are, a TLS
    context by its settings and CAs, empty containers as such, any other object by its type."""
    if isinstance(value, ssl.SSLContext):
        return ("SSLContext", value.verify_mode, value.check_hostname, value.options, value.minimum_version,
                value.maximum_version, value.get_ca_certs())
    if value is None or isinstance(value, (int, float, str, bytes, type, types.FunctionType, types.BuiltinFunctionType)):
        return value
    if isinstance(value, (tuple, list, frozenset)) and not value:
        return value
    return type(value).__qualname__


def _attributes(session: aiohttp.ClientSession) -> dict[str, Any]:
    """The session's attributes (aiohttp's ClientSession.ATTRS) and its connector's, each as :func:`_shape` sees it."""
    shown = {name: _shape(getattr(session, name)) for name in sorted(aiohttp.ClientSession.ATTRS)}
    shown.update({f"connector.{name}": _shape(value) for name, value in sorted(vars(session.connector).items())})
    return shown


@pytest.mark.parametrize("info", [
    kopf.ConnectionInfo(server="https://api.example:6443", scheme="Bearer", token="t", default_namespace="speech"),
    kopf.ConnectionInfo(server="https://api.example:6443", token="t", proxy_url="http://proxy.example:3128", trust_env=True),
    kopf.ConnectionInfo(server="https://api.example:6443", username="u", password="p", ca_path=certifi.where()),
    kopf.ConnectionInfo(server="https://api.example:6443", insecure=True),
], ids=["token", "proxy-trust-env", "basic-ca", "insecure"])
async def test_kopf_session_is_the_session_kopf_makes_of_the_same_credentials(info: kopf.ConnectionInfo) -> None:
    """kube.kopf_session builds kopf's session by hand (as kopf/_cogs/clients/auth.py's APIContext builds its own of a
    ConnectionInfo) to add its trace of kopf's listings. Built from the same credentials, as kopf uses each (its
    APIContext, which adds its User-Agent to both), the two have the same attributes, connector and TLS settings but
    for that trace: a kopf that builds its session otherwise (another connector limit, TLS, header, proxy, timeout,
    any argument more) fails here, naming the attribute, not as an operator whose watches differ from kopf's own."""
    listed: list[str] = []
    theirs = auth.APIContext(info).session
    ours = auth.APIContext(kube.kopf_session(info, listed.append)).session
    try:
        mine, kopfs = _attributes(ours), _attributes(theirs)
        assert len(ours.trace_configs) == 1 and not theirs.trace_configs, "kopf_session adds one trace: of listings"
        del mine["_trace_configs"], kopfs["_trace_configs"]
        version = importlib.metadata.version("kopf")
        assert mine == kopfs, (f"kopf {version} builds its session of a ConnectionInfo otherwise than "
                               "speech_operator.kube.kopf_session: " + ", ".join(
                                   f"{name}: kopf's {kopfs.get(name)!r}, ours {mine.get(name)!r}"
                                   for name in sorted(mine.keys() | kopfs.keys()) if mine.get(name) != kopfs.get(name)))
        assert ours.headers == theirs.headers and ours.headers.get("Authorization") == info.as_http_headers().get("Authorization")
    finally:
        await ours.close()
        await theirs.close()
