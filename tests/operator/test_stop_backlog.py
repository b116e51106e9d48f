"""The operator's stop with changes of its children still queued in kopf (operator/speech_operator/kopf_exit.py's
``stopping``, :func:`speech_operator.handlers.child_changed`), and with a follow-up of its own falling due (a retry,
a status refresh, the look after a listing made again: :func:`speech_operator.reconcile.left_at_stop`): the real kopf
operator against kmock. And a stop as kopf starts:
its startup activity is over before kopf listens for the stop."""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import kopf
import pytest
from conftest import NAMESPACE, deployment, held_by_an_hpa_at_three, hpa_scales_at_each_write, operators, quiet
from kopf._core.actions import lifecycles
from kopf._core.engines import activities, indexing
from kopf._core.intents import causes

from speech_operator import api, kopf_exit
from speech_operator.config import OperatorConfig
from speech_operator.handlers import HANDLER_GRACE_SECONDS
from speech_operator.reconcile import STALE_WRITES_RETRIED, Runtime
from tests.support import Unstarved

if TYPE_CHECKING:
    from conftest import Cluster

NAMES = {"en-us": "en-US", "de-de": "de-DE", "fr-fr": "fr-FR"}
#: The edits of each Deployment made before the stop: each a change the operator puts back (its replicas).
EDITS = 6
#: How late kmock answers each of the operator's requests: a reconcile takes a second or more, so the edits' events are
#: still queued when the operator stops.
LATE_SECONDS = 0.25


def stt(name: str, locale: str) -> dict[str, Any]:
    return {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"locale": locale, "eula": "accept", "replicas": 1}}


async def test_changes_of_children_queued_at_the_stop_are_left_to_the_next_start(
        cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    """Three SpeechToTexts, each Deployment edited six times (a change the operator puts back) on a slow API server,
    then the stop (as SIGTERM): the reconcile under way of each finishes, and no other begins; the events still queued
    are left (the next replica's start resumes each SpeechToText). Before, each queued event was a whole reconcile at
    the stop (its reads, its writes), and the stop took most of the grace (HANDLER_GRACE_SECONDS)."""
    caplog.set_level(logging.DEBUG, logger="kopf.objects")
    for name, locale in NAMES.items():
        await cluster.api.create(cluster.stt_url(), stt(name, locale))

    async def reconciled() -> bool:
        for name in NAMES:
            body = await cluster.api.get(cluster.stt_url(name)) or {}
            if (body.get("status") or {}).get("observedGeneration") != 1 or await deployment(cluster, name) is None:
                return False
        return True
    await cluster.eventually(reconciled)
    await cluster.eventually(lambda: quiet(cluster, counted=operators))
    cluster.emulator.late = LATE_SECONDS
    edited = len(list(cluster.emulator))
    for replicas in range(2, 2 + EDITS):
        for name in NAMES:
            await cluster.api.patch(cluster.url("apps/v1", "deployments", name), {"spec": {"replicas": replicas}})

    async def reconciling() -> bool:
        return any(operators(r) and r.method == "GET" and r.resource.plural == api.PLURAL
                   for r in list(cluster.emulator)[edited:])
    await cluster.eventually(reconciling)
    stopped = len(list(cluster.emulator))
    assert cluster.stop_operator is not None
    stopwatch = Unstarved()  # the operator's thread is this process': a loaded machine stretches its stop by the clock
    try:
        took = await cluster.stop_operator()
        unstarved = stopwatch.read()
    finally:
        stopwatch.close()
    after = [r for r in list(cluster.emulator)[stopped:] if operators(r)]
    begun = collections.Counter(r.name for r in after if r.method == "GET" and r.resource.plural == api.PLURAL)
    writes = collections.Counter(f"{r.method.name} {r.resource.plural}" for r in after if r.method in ("POST", "PATCH", "PUT"))
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("kopf")]
    left = [r for r in caplog.records if r.getMessage() == "left: the operator is stopping"]
    print(f"stop {took:.2f} s ({unstarved:.2f} s not waiting for a CPU); reconciles begun after it {dict(begun)}; writes {dict(writes)}; left {len(left)}")
    assert not warnings, warnings
    # at most one reconcile per SpeechToText begun as the stop was sent (the operator sees it a moment later)
    assert all(count <= 1 for count in begun.values()), begun
    assert left, "no event was left"
    assert unstarved < HANDLER_GRACE_SECONDS / 2, (took, unstarved)


#: How long the reconcile of another SpeechToText under way at the stop is held (its Deployment's read): the stop
#: waits for it (kopf's depletion), past the retry's delay (the re-check interval, 0.2 s here).
HELD_SECONDS = 1.0


async def test_a_retry_falling_due_at_the_stop_does_not_begin(cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    """A reconcile whose Deployment write found it changed at each of its tries (an HPA scaling it between each read
    and write: 409 Conflict) asks for a retry in the re-check interval; the operator is stopped (as SIGTERM) as its
    last try is refused, while another SpeechToText's reconcile is under way on a stalled read (which the stop waits
    for): the retry falls due during the stop and does not begin (a DEBUG line). Before, it was a whole reconcile,
    reads and writes, in the pod's grace, until the cleanup cancelled it."""
    caplog.set_level(logging.DEBUG, logger="speech_operator.reconcile")
    await cluster.api.create(cluster.stt_url(), stt("de-de", "de-DE"))
    await cluster.eventually(lambda: deployment(cluster, "de-de"))
    await held_by_an_hpa_at_three(cluster)
    stalled = cluster.emulator.held[("deployments", "de-de")] = asyncio.Event()
    reads = len(cluster.sent("GET", "deployments", "de-de"))
    await cluster.api.patch(cluster.stt_url("de-de"), {"spec": {"logLevel": "Debug"}})
    await cluster.eventually(lambda: asyncio.sleep(0, len(cluster.sent("GET", "deployments", "de-de")) > reads))
    hpa_scales_at_each_write(cluster, STALE_WRITES_RETRIED + 1)  # the reconcile's every try: it asks for a retry
    scales = cluster.emulator.meddlers[("deployments", "en-us")]
    assert cluster.stop_operator is not None
    stop = cluster.stop_operator
    stopped: list[tuple[int, Unstarved, asyncio.Task[float]]] = []

    async def stops_at_the_last_try(request: Any) -> None:
        await scales(request)
        if request.method == "PATCH" and len(cluster.sent("PATCH", "deployments", "en-us")) - before == STALE_WRITES_RETRIED + 1:
            stopped.append((len(list(cluster.emulator)), Unstarved(), asyncio.ensure_future(stop())))
            asyncio.get_running_loop().call_later(HELD_SECONDS, stalled.set)
    before = len(cluster.sent("PATCH", "deployments", "en-us"))
    cluster.emulator.meddlers[("deployments", "en-us")] = stops_at_the_last_try
    await cluster.api.patch(cluster.stt_url("en-us"), {"spec": {"logLevel": "Debug"}})
    await cluster.eventually(lambda: asyncio.sleep(0, bool(stopped)))
    at, stopwatch, stopping = stopped[0]
    try:
        took = await stopping
        unstarved = stopwatch.read()
    finally:
        stopwatch.close()
    after = [r for r in list(cluster.emulator)[at:] if operators(r)]
    begun = collections.Counter(r.name for r in after if r.method == "GET" and r.resource.plural == api.PLURAL)
    asked = [r.getMessage() for r in caplog.records if "tried again in" in r.getMessage()]
    left = [r.getMessage() for r in caplog.records if r.getMessage().endswith("left: the operator is stopping")
            and r.name == "speech_operator.reconcile"]
    print(f"stop {took:.2f} s ({unstarved:.2f} s not waiting for a CPU); reconciles begun after it {dict(begun)}; "
          f"after it {[f'{r.method.name} {r.resource.plural} {r.name}' for r in after]}; left {left}")
    assert asked, "no retry was asked for"
    assert not begun, begun
    assert "its reconcile again of speech/en-us left: the operator is stopping" in left, left
    assert unstarved < HANDLER_GRACE_SECONDS / 2, (took, unstarved)


async def stalled_beside(cluster: Cluster) -> asyncio.Event:
    """en-us and de-de made, the operator quiet, then de-de's reconcile (a spec change) under way on its Deployment's
    read, held until the event returned is set: a stop then waits for it (kopf's depletion)."""
    for name, locale in (("en-us", "en-US"), ("de-de", "de-DE")):
        await cluster.api.create(cluster.stt_url(), stt(name, locale))
        await cluster.eventually(lambda name=name: deployment(cluster, name))
    await cluster.eventually(lambda: quiet(cluster, counted=operators))
    stalled = cluster.emulator.held[("deployments", "de-de")] = asyncio.Event()
    reads = len(cluster.sent("GET", "deployments", "de-de"))
    await cluster.api.patch(cluster.stt_url("de-de"), {"spec": {"logLevel": "Debug"}})
    await cluster.eventually(lambda: asyncio.sleep(0, len(cluster.sent("GET", "deployments", "de-de")) > reads))
    return stalled


async def stopping_loop() -> asyncio.AbstractEventLoop | None:
    """The loop of the operator (the `cluster` fixture's thread) once it began stopping
    (:func:`speech_operator.kopf_exit.stopping`), else None: the one running loop kopf_exit marked so."""
    return next((loop for loop in list(kopf_exit._STOPPING) if loop.is_running()), None)


async def stopped_stalled(cluster: Cluster, caplog: pytest.LogCaptureFixture, stalled: asyncio.Event,
                          meanwhile: Callable[[asyncio.AbstractEventLoop], Awaitable[None]]) -> tuple[list[str], list[str]]:
    """The operator stopped (as SIGTERM) while :func:`stalled_beside`'s reconcile is held; once it is stopping,
    ``meanwhile`` (given the operator's loop), then ``stalled`` set: the operator's and kopf's requests from the stop
    on, and the DEBUG lines of what speech_operator.reconcile left. Its stop within half the grace, in time not waiting
    for a CPU."""
    assert cluster.stop_operator is not None
    at = len(list(cluster.emulator))
    stopwatch = Unstarved()
    stopping = asyncio.ensure_future(cluster.stop_operator())
    try:
        await meanwhile(await cluster.eventually(stopping_loop))
        stalled.set()
        took = await stopping
        unstarved = stopwatch.read()
    finally:
        stopwatch.close()
        stalled.set()
        await asyncio.gather(stopping, return_exceptions=True)
    after = [f"{r.method.name} {r.resource.plural} {r.name}" for r in list(cluster.emulator)[at:]
             if operators(r) and r.resource is not None]
    left = [r.getMessage() for r in caplog.records if r.getMessage().endswith("left: the operator is stopping")
            and r.name == "speech_operator.reconcile"]
    print(f"stop {took:.2f} s ({unstarved:.2f} s not waiting for a CPU); after it {after}; left {left}")
    assert unstarved < HANDLER_GRACE_SECONDS / 2, (took, unstarved)
    return after, left


async def test_a_status_refresh_falling_due_at_the_stop_does_not_begin(
        cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    """A status refresh of en-us (a change of its Deployment's status) under way, its Deployment's read held, and asked
    for again meanwhile (:meth:`speech_operator.reconcile.Runtime.refresh`: once more when the refresh gap is over).
    The operator is stopped (as SIGTERM) while another SpeechToText's reconcile is under way on a stalled read (which
    the stop waits for); the held read is let go once the operator is stopping: that refresh finishes, and the one
    asked for, falling due during the stop, does not begin (a DEBUG line). Before (its guard, b5c6231), it read the
    Deployment and wrote the status again in the pod's grace.

    The second ask is :meth:`~speech_operator.reconcile.Runtime.refresh` called in the operator's loop, as
    :func:`speech_operator.handlers.child_changed` calls it: a second status change's event waits for the refresh
    under way (its lock) and, handled once the operator is stopping, is left; one handled in the gap after the refresh
    asked for it only if it came within that gap (0.5 s by the clock), which a loaded machine missed. Each step here
    waits for the operator's state, not for a time."""
    caplog.set_level(logging.DEBUG, logger="speech_operator.reconcile")
    stalled = await stalled_beside(cluster)
    assert cluster.runtime is not None
    runtime, key = cluster.runtime, (NAMESPACE, "en-us")
    refreshing = cluster.emulator.held[("deployments", "en-us")] = asyncio.Event()
    reads = len(cluster.sent("GET", "deployments", "en-us"))
    status = cluster.url("apps/v1", "deployments", "en-us", "status")
    await cluster.api.patch(status, {"status": {"replicas": 1, "updatedReplicas": 1, "readyReplicas": 1}})
    await cluster.eventually(lambda: asyncio.sleep(0, key in runtime.refreshing
                                                    and len(cluster.sent("GET", "deployments", "en-us")) > reads))
    runtime.refreshing[key].get_loop().call_soon_threadsafe(runtime.refresh, *key)
    await cluster.eventually(lambda: asyncio.sleep(0, key in runtime._refresh_again))

    async def refreshed(_: asyncio.AbstractEventLoop) -> None:
        refreshing.set()
        await cluster.eventually(lambda: asyncio.sleep(0, key not in runtime.refreshing))  # left, or refreshed again
    try:
        after, left = await stopped_stalled(cluster, caplog, stalled, refreshed)
    finally:
        refreshing.set()
    assert "GET deployments en-us" not in after, after  # the held read was sent before the stop
    assert "its status refresh of speech/en-us left: the operator is stopping" in left, left


@pytest.mark.parametrize("relist_settle_seconds", [0.2])
async def test_the_look_after_a_listing_falling_due_at_the_stop_does_not_begin(
        cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    """kopf passes en-us from a listing of the SpeechToTexts it made again (a watch that could not go on) once the
    operator is stopping (kopf handles a SpeechToText's events still queued then), while another SpeechToText's
    reconcile is under way on a stalled read (which the stop waits for): the look due once that listing is over
    (:meth:`speech_operator.reconcile.Runtime.relisted`, after relist_settle_seconds) falls due during the stop and
    does not begin (a DEBUG line), and the listing is forgotten then. Before (its guard, b5c6231), it listed the
    children's kinds and looked for the SpeechToTexts not listed in the pod's grace.

    The listing's object is :meth:`~speech_operator.reconcile.Runtime.relisted` called in the operator's loop once it
    is stopping, as :func:`speech_operator.handlers.status_changed` calls it: a listing made again at the stop by
    kmock's watches is a matter of time. Each step here waits for the operator's state, not for a time."""
    caplog.set_level(logging.DEBUG, logger="speech_operator.reconcile")
    stalled = await stalled_beside(cluster)
    assert cluster.runtime is not None
    runtime = cluster.runtime
    scope = "" if runtime.clusterwide else NAMESPACE
    key, before = (api.KIND, scope), runtime.relisted_at.get((api.KIND, scope))

    async def listed(loop: asyncio.AbstractEventLoop) -> None:
        loop.call_soon_threadsafe(runtime.relisted, api.KIND, NAMESPACE, "en-us")
        await cluster.eventually(lambda: asyncio.sleep(0, runtime.relisted_at.get(key) != before and (
            key not in runtime.relistings or runtime.relistings[key].looking)))  # left, or the look begun
    after, left = await stopped_stalled(cluster, caplog, stalled, listed)
    assert not [r for r in after if r.endswith(" None") and r.startswith("GET")], after  # the look's lists
    assert f"the look after kopf's {api.KIND}s listed again of {scope or 'every namespace'} left: the operator is stopping" in left, left


async def test_kopfs_retry_of_a_reconcile_falling_due_at_the_stop_does_not_begin(
        cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    """A SpeechToText's reconcile failed on an API server away (503): kopf retries it after the re-check interval, at
    the next event of it. The operator is stopped (as SIGTERM) while kopf still writes that failure down (its PATCH
    held), with an event of that SpeechToText queued behind (a label added), the interval over: kopf handles that event
    at the stop, and its retry does not begin (a DEBUG line); kopf counts it handled, and the next start resumes that
    SpeechToText. Before, it was a whole reconcile (reads, the Deployment's creation, a status write) in the pod's
    grace."""
    caplog.set_level(logging.DEBUG, logger="speech_operator.reconcile")
    held, release = asyncio.Event(), asyncio.Event()

    async def holds_the_failure_written(request: Any) -> None:  # no answer: kmock's own once released
        cluster.emulator[f"patch {cluster.stt_url('en-us')}"] << holds_the_failure_written  # kmock's: one request each
        sent = request.data if isinstance(request.data, dict) else {}  # kopf's finalizer: a JSON patch (a list)
        annotations = (sent.get("metadata") or {}).get("annotations") or {}
        if request.headers.get("User-Agent", "").startswith("kopf/") and f"{api.GROUP}/reconcile_stt" in annotations:
            if not held.is_set():
                held.set()
                await release.wait()
    cluster.emulator[f"patch {cluster.stt_url('en-us')}"] << holds_the_failure_written
    cluster.emulator.failing[("deployments", "en-us", None)] = (503, "ServiceUnavailable", "the API server is away")
    await cluster.api.create(cluster.stt_url(), stt("en-us", "en-US"))
    await asyncio.wait_for(held.wait(), 20)
    await cluster.api.patch(cluster.stt_url("en-us"), {"metadata": {"labels": {"team": "speech"}}})
    await asyncio.sleep(1.0)  # the label's event queued in kopf (its watch), the retry's delay (0.2 s) over
    del cluster.emulator.failing[("deployments", "en-us", None)]

    async def nothing(_: asyncio.AbstractEventLoop) -> None:
        pass
    after, left = await stopped_stalled(cluster, caplog, release, nothing)  # kopf's PATCH let go once it is stopping
    assert not [r for r in after if r.endswith(" en-us") and not r.startswith("PATCH speechtotexts")], after
    assert "its reconcile of speech/en-us left: the operator is stopping" in left, left


async def test_the_startup_activity_is_over_at_its_first_step(apiserver: Cluster) -> None:
    """kopf's startup activity of the operator's handlers (kopf 1.45.2's own runner of it, as its operator calls it) is
    over at its first step: kopf begins it (its task's first step) before it listens for SIGTERM, so that a stop cannot
    land in it. A plain function among those handlers (kopf runs one in a thread) made it wait there: a stop then (a pod
    stopped just after it started) cancelled it, with the WARNINGs "Activity 'export' is cancelled. Will escalate." and
    "Startup activity is only partially executed due to cancellation.", no cleanup (``close``), and a stop of 5.2 s
    (kopf's fixed wait for the CRD's watch it had started)."""
    registry = kopf.get_default_registry()  # the operator's handlers: speech_operator.handlers registered them
    indexers = indexing.OperatorIndexers()
    indexers.ensure(registry._indexing.get_all_handlers())
    runtime = Runtime(config=OperatorConfig(image="example.test/recognizer", version="1.2.3"))
    memo = kopf.Memo(runtime=runtime)
    activity = activities.run_activity(lifecycle=lifecycles.all_at_once, registry=registry, settings=kopf.OperatorSettings(),
                                       activity=causes.Activity.STARTUP, indices=indexers.indices, memo=memo)
    try:
        with pytest.raises(StopIteration):
            waits_for = activity.send(None)
            activity.close()
            pytest.fail(f"kopf's startup activity waits for {waits_for!r}")
    finally:
        watch = memo.get("crd_watch")
        if watch is not None:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
        await runtime.kube.close()
    assert watch is not None, "the startup activity did not start the CRD's watch"
