"""One SpeechToText's reconciles run in turn (:meth:`Runtime.lock`: its own handlers, its children's, the operator's
retries and its deletion), and its lock is not kept past them. Before, each (namespace, name) ever reconciled kept an
asyncio.Lock for the process' life, its deletion too. Nor is the rest the operator keeps of it kept past its deletion."""

from __future__ import annotations

import asyncio
import copy
import random
from typing import TYPE_CHECKING

import pytest
from conftest import NAMESPACE, deployment, operators, quiet

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
