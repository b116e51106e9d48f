"""The kopf private the operator wraps at exit (operator/speech_operator/kopf_exit.py), pinned with the installed kopf: it
exists with the shape the wrap relies on, and with the wrap kopf's exit wakes a worker asleep as a standby replica's
peering worker sleeps. A kopf that renames or reshapes it fails here, in one test naming what depends on it, not as
standby replicas that take the whole grace (HANDLER_GRACE_SECONDS) to stop again. kopf's own worker, peering processor
and depletion, on a loop of this test; no API server (the peering event is handed to the worker as kopf's watch would).
"""

from __future__ import annotations

import asyncio
import datetime
import importlib.metadata
import inspect
import logging
import time
from typing import Any

import kopf
import pytest
from kopf._cogs.aiokits import aiotasks
from kopf._cogs.structs import references
from kopf._core.engines import peering
from kopf._core.reactor import queueing

from speech_operator import kopf_exit
from speech_operator.handlers import HANDLER_GRACE_SECONDS

pytestmark = pytest.mark.unit  # no model, server, operator or browser: the quick run (README, Tests)

WRAP = "operator/speech_operator/kopf_exit.py"
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
