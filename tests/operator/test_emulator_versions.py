"""The emulator's resourceVersion and generation (harness/kube.py), as a real API server keeps them: what kopf's
consistency wait, its optimistic JSON patches and the operator's observedGeneration are tested against.

No operator runs: the test's own client writes, as kubectl would, and reads the API server's answers and its watch.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import pytest
from conftest import NAMESPACE

from speech_operator import api
from speech_operator.kube import KubeError

if TYPE_CHECKING:
    from conftest import Cluster

JSON_PATCH = "application/json-patch+json"


def stt(name: str) -> dict[str, Any]:
    return {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"locale": "en-US", "eula": "accept", "replicas": 1}}


def deployment(replicas: int, labels: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "en-us", "namespace": NAMESPACE, "labels": labels}, "spec": {"replicas": replicas}}


def version(obj: dict[str, Any] | None) -> int:
    return int((obj or {})["metadata"]["resourceVersion"])


def generation(obj: dict[str, Any] | None) -> int:
    return int((obj or {})["metadata"]["generation"])


async def watching(cluster: Cluster) -> AsyncIterator[dict[str, Any]]:
    """A watch of the SpeechToTexts, its first listing read (one ADDED each for en-us and de-de): what follows."""
    events = cluster.api.watch(cluster.stt_url(), {}, 30)
    assert [(await anext(events))["type"] for _ in range(2)] == ["ADDED", "ADDED"]
    return events


async def test_every_stored_change_gets_a_new_resource_version_from_one_counter_and_its_event_carries_it(
        apiserver: Cluster) -> None:
    """A create, a label, a spec, a status (the /status subresource), an apply of a Deployment, an update of another
    object: each stored change a resourceVersion above every earlier one, whichever object it was, and the watch's
    event of it carries that version. A JSON patch whose ``test`` names an older version (kopf's optimistic lock) is
    422, as the API server answers it, and stores nothing. Before, every object kept its create's version."""
    cluster = apiserver
    first = await cluster.api.create(cluster.stt_url(), stt("en-us"))
    other = await cluster.api.create(cluster.stt_url(), stt("de-de"))
    events = await watching(cluster)
    writes = [
        lambda: cluster.api.patch(cluster.stt_url("en-us"), {"metadata": {"labels": {"team": "a"}}}),
        lambda: cluster.api.patch(cluster.stt_url("en-us"), {"spec": {"replicas": 2}}),
        lambda: cluster.api.patch(cluster.stt_url("en-us", "status"), {"status": {"observedGeneration": 1}}),
        lambda: cluster.api.patch(cluster.stt_url("de-de"), {"metadata": {"labels": {"team": "b"}}}),
        lambda: cluster.api.patch(cluster.stt_url("en-us"), {"metadata": {"labels": {"team": None}}}),
    ]
    versions = [version(first), version(other)]
    for write in writes:
        answer = await write()
        versions.append(version(answer))
        event = await anext(events)
        assert (event["type"], version(event["object"])) == ("MODIFIED", versions[-1]), event
    applied = [await cluster.api.apply(cluster.url("apps/v1", "deployments", "en-us"), deployment(n, {"a": "b"}))
               for n in (1, 2)]
    versions += [version(a) for a in applied]
    assert versions == sorted(set(versions)), versions
    live = await cluster.api.get(cluster.stt_url("en-us"))
    assert version(live) == versions[-3]
    with pytest.raises(KubeError) as stale:
        await cluster.api.request("PATCH", cluster.stt_url("en-us"), [
            {"op": "test", "path": "/metadata/resourceVersion", "value": str(version(first))},
            {"op": "add", "path": "/metadata/finalizers", "value": ["speech-operator.io/cleanup"]}],
            content_type=JSON_PATCH)
    assert stale.value.status == 422, stale.value
    assert await cluster.api.get(cluster.stt_url("en-us")) == live
    current = await cluster.api.request("PATCH", cluster.stt_url("en-us"), [
        {"op": "test", "path": "/metadata/resourceVersion", "value": str(version(live))},
        {"op": "add", "path": "/metadata/finalizers", "value": ["speech-operator.io/cleanup"]}], content_type=JSON_PATCH)
    assert current["metadata"]["finalizers"] == ["speech-operator.io/cleanup"] and version(current) > versions[-1]
    await events.aclose()


async def test_a_write_that_changes_nothing_stores_nothing_and_sends_no_event(apiserver: Cluster) -> None:
    """The same labels again (a merge patch), the same status again (/status), the same apply again: the answer is
    the object as it was, resourceVersion and all, and the watch sends nothing for them: the next event it sends is
    the change that follows. Before, each brought a MODIFIED event (kopf's update handlers woke for nothing)."""
    cluster = apiserver
    await cluster.api.create(cluster.stt_url(), stt("en-us"))
    await cluster.api.create(cluster.stt_url(), stt("de-de"))
    labelled = await cluster.api.patch(cluster.stt_url("en-us"), {"metadata": {"labels": {"team": "a"}}})
    reported = await cluster.api.patch(cluster.stt_url("en-us", "status"), {"status": {"observedGeneration": 1}})
    applied = await cluster.api.apply(cluster.url("apps/v1", "deployments", "en-us"), deployment(1, {"a": "b"}))
    events = await watching(cluster)
    assert await cluster.api.patch(cluster.stt_url("en-us"), {"metadata": {"labels": {"team": "a"}}}) == reported
    assert await cluster.api.patch(cluster.stt_url("en-us", "status"), {"status": {"observedGeneration": 1}}) == reported
    assert version(labelled) < version(reported)
    again = await cluster.api.apply(cluster.url("apps/v1", "deployments", "en-us"), deployment(1, {"a": "b"}))
    assert version(again) == version(applied)
    changed = await cluster.api.patch(cluster.stt_url("de-de"), {"metadata": {"labels": {"team": "b"}}})
    event = await anext(events)
    assert (event["type"], event["object"]["metadata"]["name"], version(event["object"])) == (
        "MODIFIED", "de-de", version(changed)), event
    await events.aclose()


async def test_generation_counts_spec_changes_only(apiserver: Cluster) -> None:
    """A SpeechToText (a CRD with the status subresource) and a Deployment: generation 1 at the create, one up for
    each spec change, unchanged by labels, annotations, a /status write; one up when a deletion is marked (the
    object's finalizer holds it), as the registry counts; a Deployment's annotations count as its spec does (its
    registry's PrepareForUpdate: they are copied to its ReplicaSets). Before, it stayed 1 whatever changed."""
    cluster = apiserver
    created = await cluster.api.create(cluster.stt_url(), stt("en-us"))
    steps = [
        (lambda: cluster.api.patch(cluster.stt_url("en-us"), {"metadata": {"labels": {"team": "a"}}}), 1),
        (lambda: cluster.api.patch(cluster.stt_url("en-us", "status"), {"status": {"observedGeneration": 1}}), 1),
        (lambda: cluster.api.patch(cluster.stt_url("en-us"), {"spec": {"replicas": 2}}), 2),
        (lambda: cluster.api.patch(cluster.stt_url("en-us"), {"metadata": {"annotations": {"a": "b"}}}), 2),
        (lambda: cluster.api.patch(cluster.stt_url("en-us"), {"spec": {"locale": "de-DE"}}), 3),
        (lambda: cluster.api.patch(cluster.stt_url("en-us", "status"), {"status": {"observedGeneration": 3}}), 3),
        (lambda: cluster.api.patch(cluster.stt_url("en-us"), {"metadata": {"finalizers": ["x.io/hold"]}}), 3),
    ]
    assert generation(created) == 1
    for write, expected in steps:
        assert generation(await write()) == expected
    assert await cluster.api.delete(cluster.stt_url("en-us"))
    assert generation(await cluster.api.get(cluster.stt_url("en-us"))) == 4
    url = cluster.url("apps/v1", "deployments", "en-us")
    made = await cluster.api.apply(url, deployment(1, {"a": "b"}))
    relabelled = await cluster.api.apply(url, deployment(1, {"a": "c"}))
    scaled = await cluster.api.apply(url, deployment(3, {"a": "c"}))
    annotated = await cluster.api.patch(url, {"metadata": {"annotations": {"a": "b"}}})
    assert [generation(d) for d in (made, relabelled, scaled, annotated)] == [1, 1, 2, 3]


async def test_a_watch_from_its_lists_version_sends_only_what_changed_after_it(apiserver: Cluster) -> None:
    """kopf lists, then watches from the list's resourceVersion: the watch sends the changes after the list, not the
    objects the list had again. Before, the list's version was ``...`` and every watch began with an ADDED of each
    object: kopf had each twice, the second stale once versions move."""
    cluster = apiserver
    await cluster.api.create(cluster.stt_url(), stt("en-us"))
    listed = await cluster.api.get(cluster.stt_url()) or {}
    assert [i["metadata"]["name"] for i in listed["items"]] == ["en-us"]
    events = cluster.api.watch(cluster.stt_url(), {"resourceVersion": listed["metadata"]["resourceVersion"]}, 30)
    made = await cluster.api.create(cluster.stt_url(), stt("de-de"))
    event = await anext(events)
    assert (event["type"], event["object"]["metadata"]["name"], version(event["object"])) == (
        "ADDED", "de-de", version(made)), event
    await events.aclose()
