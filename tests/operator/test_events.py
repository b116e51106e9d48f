"""The operator's Events (speech_operator.events) when the API server takes them slower than they come: each object's
queue is bounded, its oldest waiting dropped and said in one line; at the operator's exit, those not yet posted get a
short grace. The API server stalls as ``harness.kube.Emulator.held`` makes it: the operator's Event POSTs wait for a gate.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import pytest
from conftest import NAMESPACE, TEST_AGENT, deployment, eventually

from speech_operator import api, events
from speech_operator.events import Events, Going
from speech_operator.kube import Kube, load_configuration

if TYPE_CHECKING:
    from conftest import Cluster

#: The operator's Event POSTs, as the emulator holds them (a POST names no object).
POSTS = ("events", "")


def stt() -> dict[str, Any]:
    return {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": "en-us", "namespace": NAMESPACE},
            "spec": {"locale": "en-US", "eula": "accept", "replicas": 1}}


def posts(cluster: Cluster) -> list[dict[str, Any]]:
    """The Event POSTs the operator sent (held or answered), in order."""
    return [r.data for r in list(cluster.emulator) if r.method == "POST" and r.resource is not None
            and r.resource.plural == "events" and r.headers.get("User-Agent") != TEST_AGENT]


async def in_flight(cluster: Cluster) -> bool:
    """True once the operator has sent an Event POST (poll it with ``eventually``; held, it waits in flight)."""
    return bool(posts(cluster))


async def messages(cluster: Cluster) -> list[str]:
    return [e["message"] for e in await cluster.events()]


async def test_a_flapping_objects_events_wait_in_a_bounded_queue_its_oldest_dropped_in_one_line(
        apiserver: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    """40 Events of one SpeechToText come while its first is in flight (Degraded and Recovered in turn, as a pod that
    crashes and restarts says them) and the API server takes none: 32 wait, the 8 oldest waiting are dropped, and the
    newest, which say what holds now, are posted once the API server answers, in order, with one WARNING line for the
    8. Before, every one of them waited, without bound."""
    obj = await apiserver.api.create(apiserver.stt_url(), stt())
    kube = Kube(await load_configuration())  # the operator's client and User-Agent: the emulator holds its POSTs
    posting = Events(kube, Going())
    gate = apiserver.emulator.held[POSTS] = asyncio.Event()
    try:
        posting.post(obj, "Warning", "PodsFailing", "flap 0")
        await eventually(lambda: in_flight(apiserver))  # held
        for i in range(1, 41):
            posting.post(obj, "Warning" if i % 2 == 0 else "Normal", "PodsFailing" if i % 2 == 0 else "Recovered",
                         f"flap {i}")
        gate.set()
        wanted = ["flap 0", *(f"flap {i}" for i in range(9, 41))]

        async def posted() -> bool:
            return await messages(apiserver) == wanted
        try:
            await eventually(posted)
        except AssertionError:
            raise AssertionError(f"posted: {await messages(apiserver)}") from None
        warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name == events.__name__]
        assert warned == [f"SpeechToText {NAMESPACE}/en-us: 8 of its Events were dropped unposted, the oldest waiting "
                          f"(at most {events.QUEUED_MAX} wait): they came faster than the API server took them"], warned
    finally:
        gate.set()
        await posting.close()
        await kube.close()


async def until_exiting(cluster: Cluster) -> None:
    """Wait until the operator's cleanup has begun (kopf's own poster has stopped by then)."""
    async def exiting() -> bool:
        return cluster.runtime is not None and cluster.runtime.exiting
    await eventually(exiting, 10)


async def test_the_events_not_yet_posted_at_exit_are_posted_within_a_short_grace(
        cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    """The operator stops (SIGTERM) while the Events of a creation wait for the API server: they are posted once it
    answers, within the grace, and the operator then exits at once. Before, they were dropped at the cleanup."""
    gate = cluster.emulator.held[POSTS] = asyncio.Event()
    try:
        await cluster.api.create(cluster.stt_url(), stt())
        await cluster.eventually(lambda: cluster.api.get(cluster.url("v1", "services", "en-us")))
        await cluster.eventually(lambda: in_flight(cluster))  # the first, held
        assert cluster.stop_operator is not None
        stopping = asyncio.create_task(cluster.stop_operator())
        await until_exiting(cluster)
        gate.set()
        took = await stopping
    finally:
        gate.set()
    assert sorted(await messages(cluster)) == ["Created Deployment en-us", "Created Service en-us"]
    assert took < 4, f"the operator took {took:.1f} s to stop"
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


async def test_the_exit_waits_a_few_seconds_at_most_for_events_the_api_server_does_not_take(
        cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    """An API server that takes no Event at the operator's exit delays it by the grace at most, and the Events left
    are one line."""
    gate = cluster.emulator.held[POSTS] = asyncio.Event()
    try:
        await cluster.api.create(cluster.stt_url(), stt())
        await cluster.eventually(lambda: deployment(cluster))
        await cluster.eventually(lambda: cluster.api.get(cluster.url("v1", "services", "en-us")))
        await cluster.eventually(lambda: in_flight(cluster))
        assert cluster.stop_operator is not None
        took = await cluster.stop_operator()
    finally:
        gate.set()
    assert took < events.EXIT_GRACE_SECONDS + 4, f"the operator took {took:.1f} s to stop"
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warned == [f"2 Events were not posted at the operator's exit: the API server did not take them within "
                      f"{events.EXIT_GRACE_SECONDS:g} s"], warned


def test_a_long_message_is_cut_where_a_word_ends_keeping_its_start() -> None:
    """An Event's message over events.MAX_MESSAGE keeps its start up to a word's end (a single word too long: where
    the room ends), "…" and where it is whole; a short one is kept as it is. Before, kopf's cut: start and end, the
    middle gone wherever it fell."""
    assert events.cut("short words", "en-us") == "short words"
    words = " ".join(f"word{i}" for i in range(400))
    said = events.cut(words, "en-us")
    head, _, tail = said.partition(" … ")
    assert len(said) <= events.MAX_MESSAGE and words.startswith(head) and words[len(head)] == " "
    assert tail == f"(cut from {len(words)} characters: kubectl get stt en-us -o yaml has it whole)"
    unbroken = events.cut("x" * 3000, "en-us")
    assert len(unbroken) == events.MAX_MESSAGE and unbroken.startswith("x" * 900)
