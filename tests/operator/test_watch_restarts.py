"""The operator across the ends of its watches: the API server ends every watch (at its ``timeoutSeconds``, else after
30-60 minutes), and kopf watches again from the last resourceVersion it saw. Here its watches last 1 s."""

from __future__ import annotations

import collections
import copy
import itertools
from typing import TYPE_CHECKING, Any

import pytest
from conftest import NAMESPACE, deployment

from speech_operator import api

if TYPE_CHECKING:
    import kmock
    from conftest import Cluster

BASE: dict[str, Any] = {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": "en-us", "namespace": NAMESPACE},
                        "spec": {"locale": "en-US", "eula": "accept", "replicas": 1}}


@pytest.mark.parametrize("watch_seconds", [1])
async def test_what_changes_after_a_watch_ended_is_handled_once_and_nothing_is_lost(cluster: Cluster) -> None:
    """A SpeechToText created after kopf's first watch of them ended, changed after the next ended and deleted after
    the one after: its Deployment appears, changes and goes. What kopf's watches were sent, one after the other, is
    every event after its list's version exactly once, in order (what a watch from that version replays now), each
    watch starting from the last version the one before sent (kopf resumes; it does not list again), and the
    operator's Events say each write once. Before, the emulator's watches never ended, so this path never ran."""
    def watches() -> list[kmock.Request]:
        return [r for r in cluster.sent("GET", api.PLURAL) if r.params.get("watch") == "true"]

    async def restarted(after: int) -> bool:
        return len(watches()) > after

    async def until_restarted() -> None:
        now = len(watches())
        await cluster.eventually(lambda: restarted(now))

    await cluster.eventually(lambda: restarted(1))  # the first watch ended, kopf watches again
    await cluster.api.create(cluster.stt_url(), copy.deepcopy(BASE))
    await cluster.eventually(lambda: deployment(cluster))
    await until_restarted()
    await cluster.api.patch(cluster.stt_url("en-us"), {"spec": {"version": "2.0.0"}})

    async def rolled() -> bool:
        dep = await deployment(cluster) or {}
        return dep["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":2.0.0")
    await cluster.eventually(rolled)
    await until_restarted()
    assert await cluster.api.delete(cluster.stt_url("en-us"))

    async def gone() -> bool:
        return await deployment(cluster) is None and await cluster.api.get(cluster.stt_url("en-us")) is None
    await cluster.eventually(gone)

    first = watches()[0].params["resourceVersion"]
    everything = [(e["type"], e["object"]["metadata"]["name"], e["object"]["metadata"]["resourceVersion"])
                  async for e in cluster.api.watch(cluster.stt_url(), {"resourceVersion": first}, 1)]
    assert ("ADDED", "en-us") == everything[0][:2] and ("DELETED", "en-us") == everything[-1][:2], everything

    def sent() -> list[tuple[str, str, str]]:
        return [(kind, name, version) for r in watches() for kind, _, name, version in cluster.emulator.streamed.get(r.id, [])]

    async def all_sent() -> bool:
        return sent() == everything
    try:
        await cluster.eventually(all_sent)
    except AssertionError:
        raise AssertionError(f"kopf's watches were sent {sent()}, not {everything}") from None
    runs = watches()
    assert len(runs) >= 4, f"{len(runs)} watches"
    for before, after in itertools.pairwise(runs):
        last = [version for *_, version in cluster.emulator.streamed[before.id]]
        assert after.params.get("resourceVersion") == (last[-1] if last else before.params["resourceVersion"]), (
            before.params, cluster.emulator.streamed[before.id], after.params)

    said = collections.Counter((e["reason"], e["message"]) for e in await cluster.events()
                               if e["reason"] in ("Created", "Updated", "Deleted"))
    assert said and max(said.values()) == 1, said
    assert ("Created", "Created Deployment en-us") in said and any(r == "Updated" for r, _ in said), said
