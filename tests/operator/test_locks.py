"""One SpeechToText's reconciles run in turn (:meth:`Runtime.lock`: its own handlers, its children's, the operator's
retries and its deletion), and its lock is not kept past them. Before, each (namespace, name) ever reconciled kept an
asyncio.Lock for the process' life, its deletion too. Nor is the rest the operator keeps of it kept past its deletion."""

from __future__ import annotations

import asyncio
import copy
import random
from typing import TYPE_CHECKING

import pytest
from conftest import NAMESPACE, TEST_AGENT, deployment, operators, quiet

from speech_operator import api
from speech_operator.config import OperatorConfig
from speech_operator.reconcile import Runtime

if TYPE_CHECKING:
    from conftest import Cluster

BASE = {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"namespace": NAMESPACE},
        "spec": {"locale": "en-US", "eula": "accept", "replicas": 1}}


async def made_and_deleted(cluster: Cluster, names: list[str]) -> None:
    """The SpeechToTexts ``names``, each made (its Deployment made) and deleted (its finalizer gone: the operator's
    deletion ran) in turn, then the operator quiet."""
    for name in names:
        await cluster.api.create(cluster.stt_url(), {**copy.deepcopy(BASE), "metadata": {"name": name, "namespace": NAMESPACE}})
        await cluster.eventually(lambda name=name: deployment(cluster, name))
        assert await cluster.api.delete(cluster.stt_url(name))

        async def gone(name: str = name) -> bool:
            return await cluster.api.get(cluster.stt_url(name)) is None
        await cluster.eventually(gone)
    await cluster.eventually(lambda: quiet(cluster, counted=operators), 10)


async def test_speechtotexts_made_and_deleted_leave_no_lock_behind(cluster: Cluster) -> None:
    """Four SpeechToTexts made and deleted: no lock is left of any."""
    assert cluster.runtime is not None
    names = [f"stt-{i}" for i in range(4)]
    await made_and_deleted(cluster, names)
    assert sorted(cluster.runtime.locks) == [], f"{len(cluster.runtime.locks)} locks left of {len(names)} deleted"


async def test_speechtotexts_made_and_deleted_leave_nothing_of_the_installed_crd_behind(cluster: Cluster) -> None:
    """Four SpeechToTexts made and deleted: the CRD generation each last showed is not kept (:class:`InstalledCRD`;
    its deletion forgets it, and the reconcile its children's deletion calls for finds it going and keeps nothing of
    it). Before, that reconcile noted it again: one entry per SpeechToText ever deleted, for the process' life. The Runtime's other per-SpeechToText state is left empty."""
    assert cluster.runtime is not None
    rt = cluster.runtime
    names = [f"stt-{i}" for i in range(4)]
    await made_and_deleted(cluster, names)
    left = rt.crd._used  # what the installed CRD's watch keeps per SpeechToText: no API tells it
    assert sorted(left) == [], f"{len(left)} left of {len(names)} deleted: {sorted(left)}"
    assert not (rt.observed or rt.amiss or rt.reported or rt.contended or rt.retries or rt.refreshing or rt.daemons
                or rt.autoscalers._used), vars(rt)


@pytest.mark.unit
async def test_reconciles_of_one_speechtotext_never_overlap_across_its_deletion_and_its_making_again() -> None:
    """A reconcile of en-us holds its lock, its deletion waits; the reconcile lets it go and, before the deletion's
    turn came, the first reconcile of en-us made again asks for it: it waits for the deletion (a lock dropped at the
    release, the deletion's wait not counted, gave it a new one: both at once). Then 200 rounds of reconciles of a
    few names, each holding a while, some cancelled as they wait or hold: never two of one name at once, and no lock left."""
    runtime = Runtime(config=OperatorConfig(image="example.test/recognizer", version="1.2.3"))
    inside: dict[str, list[str]] = {}
    overlaps: list[list[str]] = []

    async def reconcile(name: str, who: str, hold: float = 0.01) -> None:
        async with runtime.lock(NAMESPACE, name):
            holders = inside.setdefault(name, [])
            holders.append(who)
            if len(holders) > 1:
                overlaps.append(list(holders))
            try:
                await asyncio.sleep(hold)
            finally:
                holders.remove(who)

    loop = asyncio.get_running_loop()
    made_again: list[asyncio.Task[None]] = []

    async def reconciled_then_made_again() -> None:
        await reconcile("en-us", "reconcile")
        made_again.append(loop.create_task(reconcile("en-us", "made again")))  # no await since the release

    first = loop.create_task(reconciled_then_made_again())
    await asyncio.sleep(0)  # it holds the lock
    deletion = loop.create_task(reconcile("en-us", "deletion"))
    await asyncio.gather(first, deletion)
    await asyncio.gather(*made_again)
    assert not overlaps, overlaps
    assert runtime.locks == {}

    rng = random.Random(7)
    for _ in range(200):
        tasks = [loop.create_task(reconcile(rng.choice("abc"), str(i), rng.uniform(0, 0.002))) for i in range(6)]
        await asyncio.sleep(rng.uniform(0, 0.003))
        for task in rng.sample(tasks, 2):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert not overlaps, overlaps[:3]
    assert runtime.locks == {}


def _kept_of(rt: Runtime, key: tuple[str, str]) -> dict[str, object]:
    """What the operator keeps of the SpeechToText ``key`` (namespace, name), by where: empty once it is deleted."""
    where = {"observed": rt.observed, "amiss": rt.amiss, "reported": rt.reported, "contended": rt.contended,
             "retries": rt.retries, "refreshing": rt.refreshing, "locks": rt.locks,
             "crd": rt.crd._used, "autoscalers": rt.autoscalers._used}  # no API tells these two
    return {name: kept[key] for name, kept in where.items() if key in kept}


@pytest.mark.parametrize("orphaned", [True, False], ids=["orphaned", "cascading"])
async def test_a_reconcile_under_way_at_the_deletion_keeps_nothing_of_the_speechtotext_once_it_ends(
        cluster: Cluster, orphaned: bool) -> None:
    """A reconcile of en-us (its Deployment scaled by hand) waits for the API server's answer for its Deployment while
    en-us is deleted (``kubectl delete --cascade=orphan``: the API server's "orphan" finalizer, and the garbage
    collector's part done by the test as in tests/operator/test_hostile_children.py; or deleted with its children):
    once it is gone and the operator quiet, nothing of it is kept. Before, the deletion forgot it before the reconcile
    under way ended, which then kept what it found and the status it wrote, for the process' life (orphaned: no child's
    deletion reconciles it afterwards)."""
    rt, key = cluster.runtime, (NAMESPACE, "en-us")
    assert rt is not None
    await cluster.api.create(cluster.stt_url(), {**copy.deepcopy(BASE), "metadata": {"name": "en-us", "namespace": NAMESPACE}})
    await cluster.eventually(lambda: deployment(cluster))
    await cluster.eventually(lambda: quiet(cluster, counted=operators), 10)
    assert key in rt.reported and key in rt.observed
    if orphaned:
        body = await cluster.api.get(cluster.stt_url("en-us")) or {}
        await cluster.api.patch(cluster.stt_url("en-us"), {"metadata": {"finalizers": [
            "orphan", *body["metadata"]["finalizers"]]}})
    gate = cluster.emulator.held[("deployments", "en-us")] = asyncio.Event()
    try:
        since = len(list(cluster.emulator))
        await cluster.api.patch(cluster.url("apps/v1", "deployments", "en-us"), {"spec": {"replicas": 3}})

        async def holding() -> bool:  # the reconcile the scale calls for reads its Deployment: held
            return any(r.method == "GET" and r.resource is not None and r.resource.plural == "deployments" and r.name == "en-us"
                and r.headers.get("User-Agent") != TEST_AGENT for r in list(cluster.emulator)[since:])
        await cluster.eventually(holding)
        assert await cluster.api.delete(cluster.stt_url("en-us"))

        async def forgotten() -> bool:  # the deletion's handler has begun (it forgets the statuses given first)
            return key not in rt.reported
        await cluster.eventually(forgotten)
    finally:
        gate.set()
    if orphaned:
        async def released() -> bool:  # the operator's finalizer taken off: its deletion's handler is done
            live = await cluster.api.get(cluster.stt_url("en-us")) or {}
            return live.get("metadata", {}).get("finalizers") == ["orphan"]
        await cluster.eventually(released)
        await cluster.api.patch(cluster.stt_url("en-us"), {"metadata": {"finalizers": []}})  # the garbage collector's part
        for plural, version in (("deployments", "apps/v1"), ("services", "v1"), ("poddisruptionbudgets", "policy/v1")):
            if await cluster.api.get(cluster.url(version, plural, "en-us")) is not None:
                await cluster.api.patch(cluster.url(version, plural, "en-us"), {"metadata": {"ownerReferences": None}})

    async def gone() -> bool:
        return await cluster.api.get(cluster.stt_url("en-us")) is None
    await cluster.eventually(gone)
    await cluster.eventually(lambda: quiet(cluster, counted=operators), 10)
    assert (await deployment(cluster) is not None) is orphaned
    kept = _kept_of(rt, key)
    assert not kept, f"kept of en-us after its deletion: {sorted(kept)}"
