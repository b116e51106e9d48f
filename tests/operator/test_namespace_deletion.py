"""A namespace holding a SpeechToText is deleted (kubectl delete namespace), with the real kopf operator on kmock.

The API server marks the Namespace Terminating and refuses every create in it (harness/kube.py emulates its
NamespaceLifecycle admission plugin, Status body and all); the namespace controller then deletes what it holds, in no
set order (a Go map of the discovered resources). kmock runs no namespace controller: the test deletes as it does, the
children first (the order that made the operator write them again), then the SpeechToText, which its finalizer holds.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

import pytest
from conftest import NAMESPACE, TEST_AGENT, deployment, one_pod_ready, quiet

from speech_operator import api
from speech_operator.kube import KubeError, path

if TYPE_CHECKING:
    from conftest import Cluster

NAMESPACE_URL = path("v1", "namespaces", name=NAMESPACE)


def stt() -> dict[str, Any]:
    return {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": "en-us", "namespace": NAMESPACE},
            "spec": {"locale": "en-US", "eula": "accept", "replicas": 1}}


async def made_then_namespace_deleted(cluster: Cluster, caplog: pytest.LogCaptureFixture) -> tuple[int, int]:
    """en-us made and done with, then its namespace marked for deletion: the requests and log records before that."""
    caplog.set_level(logging.INFO)
    await cluster.api.create(cluster.stt_url(), stt())
    await cluster.eventually(lambda: cluster.api.get(cluster.url("v1", "services", "en-us")))
    await cluster.eventually(lambda: quiet(cluster))
    before, logged = len(list(cluster.emulator)), len(caplog.records)
    assert await cluster.api.delete(NAMESPACE_URL)
    return before, logged


async def speechtotext_deleted(cluster: Cluster, *children: tuple[str, str]) -> None:
    """The namespace controller deletes en-us: wait until the operator lets it go (its finalizer removed), with its
    ``children`` (API version, plural) deleted, and is quiet."""
    assert await cluster.api.delete(cluster.stt_url("en-us"))

    async def gone() -> bool:
        return await cluster.api.get(cluster.stt_url("en-us")) is None
    await cluster.eventually(gone)
    for api_version, plural in children:
        assert await cluster.api.get(cluster.url(api_version, plural, "en-us")) is None
    await cluster.eventually(lambda: quiet(cluster))


async def test_a_create_in_a_namespace_being_deleted_is_refused_as_the_api_server_refuses_it(apiserver: Cluster) -> None:
    """The emulator's part, pinned to the API server's words (admission.go's NamespaceLifecycle, apimachinery's
    NewForbidden): a POST and an apply that would create are 403 with the NamespaceTerminating cause; an update and a
    delete are served; the Namespace reads Terminating until the namespace controller lets it go."""
    marked = await apiserver.api.delete(NAMESPACE_URL)
    assert marked
    namespace = await apiserver.api.get(NAMESPACE_URL) or {}
    assert namespace["status"]["phase"] == "Terminating" and namespace["metadata"]["deletionTimestamp"], namespace
    with pytest.raises(KubeError) as refused:
        await apiserver.api.create(apiserver.url("v1", "events"), {"apiVersion": "v1", "kind": "Event", "metadata": {
            "generateName": "kopf-event-", "namespace": NAMESPACE}})
    assert (refused.value.status, refused.value.namespace_terminating) == (403, True)
    assert json.loads(str(refused.value).split(": ", 1)[1]) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'events "kopf-event-" is forbidden: unable to create new content in namespace speech because it '
                   "is being terminated",
        "reason": "Forbidden", "details": {"name": "kopf-event-", "kind": "events", "causes": [{
            "reason": "NamespaceTerminating", "message": "namespace speech is being terminated",
            "field": "metadata.namespace"}]}, "code": 403}
    with pytest.raises(KubeError) as applied:
        await apiserver.api.apply(apiserver.url("apps/v1", "deployments", "en-us"), {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "en-us", "namespace": NAMESPACE}})
    assert applied.value.message == ('deployments.apps "en-us" is forbidden: unable to create new content in '
                                     "namespace speech because it is being terminated")
    assert applied.value.namespace_terminating
    assert await apiserver.api.patch(apiserver.url("v1", "services", "en-us"), {"metadata": {"labels": {"a": "b"}}}) is None
    assert await apiserver.api.delete(NAMESPACE_URL), "deleted again: still there, Terminating"
    await apiserver.emulator.finalize_namespace(NAMESPACE)
    assert await apiserver.api.get(NAMESPACE_URL) is None


async def test_a_child_deleted_with_its_namespace_is_not_written_again_and_the_speechtotext_goes(
        cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    """The namespace controller deletes the Service first: the operator's one try at making it again is refused for
    the namespace, and that is all: one INFO line, no status written, no Event (the API server would refuse it, and
    kopf tries an Event 9 times in 54 s, an ERROR line each). Then the SpeechToText: its deletion deletes the
    Deployment still there, without its "Deleted" Event, and removes the finalizer, so the namespace can go. Before,
    the SpeechToText said Degraded WriteRefused (its status, a WARNING line, a Warning Event refused in turn) and the
    re-check tried the Service again every recheck_seconds (0.2 s here) until the SpeechToText went."""
    before, logged = await made_then_namespace_deleted(cluster, caplog)

    assert await cluster.api.delete(cluster.url("v1", "services", "en-us"))  # the namespace controller, in its order

    async def tried() -> bool:
        return any(r in list(cluster.emulator)[before:] for r in cluster.sent("PATCH", "services", "en-us"))
    await cluster.eventually(tried)
    await cluster.eventually(lambda: quiet(cluster))
    await speechtotext_deleted(cluster, ("apps/v1", "deployments"))  # then the SpeechToText, its Deployment still there

    since = list(cluster.emulator)[before:]
    writes = [(r.method, r.resource.plural if r.resource else None, r.subresource) for r in since
              if r.method in ("POST", "PATCH", "PUT", "DELETE") and r.headers.get("User-Agent", "").startswith(
                  "speech-operator")]
    assert writes == [("PATCH", "services", None), ("DELETE", "deployments", None)], "no status, no Event"
    assert not [r for r in since if r.method == "POST" and r.resource is not None and r.resource.plural == "events"]
    lines = caplog.records[logged:]
    assert not [r.getMessage() for r in lines if r.levelno >= logging.WARNING], "no WARNING, no ERROR"
    said = [r.getMessage() for r in lines if r.name.startswith("speech_operator")]
    assert said == ["SpeechToText speech/en-us: its namespace is being deleted: nothing more is created in it "
                    "(Service en-us is gone)"], said


async def test_a_speechtotext_deleted_with_its_namespace_before_its_children_goes_with_one_line(
        cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    """The namespace controller deletes the SpeechToText first, its children still there and no reconcile having met
    the namespace's refusal: its deletion deletes them, its first "Deleted" Event is refused (NamespaceTerminating),
    and that is one INFO line, no other Event (the second is dropped unposted), the finalizer removed. Before, kopf posted each "Deleted" Event and
    tried it again 8 times over 54 s, an ERROR line each time."""
    before, logged = await made_then_namespace_deleted(cluster, caplog)
    await speechtotext_deleted(cluster, ("apps/v1", "deployments"), ("v1", "services"))  # first, in its order

    since = list(cluster.emulator)[before:]
    posted = [r for r in since if r.method == "POST" and r.resource is not None and r.resource.plural == "events"]
    assert len(posted) == 1, [(r.headers.get("User-Agent"), r.data) for r in posted]
    assert (posted[0].data["reason"], posted[0].data["involvedObject"]["name"]) == ("Deleted", "en-us")
    lines = caplog.records[logged:]
    assert not [r.getMessage() for r in lines if r.levelno >= logging.WARNING], "no WARNING, no ERROR"
    said = [r.getMessage() for r in lines if r.name.startswith("speech_operator")]
    assert said == ["SpeechToText speech/en-us: its namespace is being deleted: nothing more is created in it, Events "
                    "included (its Normal Event Deleted was refused)"], said


#: What the Deployment's controller says once the namespace controller has deleted its pod: its ReplicaSet cannot make
#: another (the API server's words for a pod, as for any create in a namespace being deleted).
POD_REFUSED = ('pods "en-us-6d5f7c9b8-x2kqz" is forbidden: unable to create new content in namespace speech because it '
               "is being terminated")


def events_posted(cluster: Cluster, since: int) -> list[Any]:
    """The Event POSTs anyone but the test made since request ``since``: the operator's, kopf's (its poster) alike."""
    return [r for r in list(cluster.emulator)[since:] if r.method == "POST" and r.resource is not None
            and r.resource.plural == "events" and r.headers.get("User-Agent") != TEST_AGENT]


async def no_writes(cluster: Cluster, settle: float = 1.0) -> bool:
    """True once no one but the test has written for ``settle`` seconds (poll it with ``eventually``): a Degraded
    SpeechToText's re-check may read on meanwhile."""
    def writes() -> int:
        return len([r for r in list(cluster.emulator) if r.method in ("POST", "PATCH", "PUT", "DELETE")
                    and r.headers.get("User-Agent") != TEST_AGENT])
    before = writes()
    await asyncio.sleep(settle)
    return writes() == before


async def test_an_event_refused_for_the_namespace_is_one_line_and_nothing_more_is_said_or_created(
        cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    """The namespace controller deletes the pod of a Ready SpeechToText first: its Deployment's controller cannot make
    another (ReplicaFailure, the namespace's refusal in its words), so the SpeechToText turns Degraded PodsNotCreated
    (its status is an update: served), and the API server refuses that Warning Event in turn. That is one POST and one
    INFO line; the re-check of the Degraded SpeechToText ends, the Deployment deleted next is not tried again, and the
    SpeechToText's deletion posts no "Deleted" Event. Before, kopf's poster posted the Warning and tried it again 8
    times over 54 s, an ERROR line each; the re-check read the SpeechToText every recheck_seconds until it went."""
    caplog.set_level(logging.INFO)
    await cluster.api.create(cluster.stt_url(), stt())
    await one_pod_ready(cluster, await cluster.eventually(lambda: deployment(cluster)))
    await cluster.eventually(lambda: quiet(cluster))
    before, logged = len(list(cluster.emulator)), len(caplog.records)
    assert await cluster.api.delete(NAMESPACE_URL)

    generation = (await deployment(cluster) or {})["metadata"].get("generation", 0)
    failure = {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": POD_REFUSED}
    await cluster.api.patch(cluster.url("apps/v1", "deployments", "en-us", "status"), {"status": {
        "observedGeneration": generation, "replicas": 0, "updatedReplicas": 0, "readyReplicas": 0,
        "conditions": [failure]}})

    async def refused() -> bool:
        return bool(events_posted(cluster, before))
    await cluster.eventually(refused)
    await cluster.eventually(lambda: no_writes(cluster))  # kopf's tries, on the old code: 1 s, 1 s, then 2 s apart
    degraded = next(c for c in ((await cluster.api.get(cluster.stt_url("en-us"))) or {})["status"]["conditions"]
                    if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "PodsNotCreated"), degraded
    posted = events_posted(cluster, before)
    assert len(posted) == 1, [(r.headers.get("User-Agent"), r.data.get("reason")) for r in posted]
    sent = posted[0].data
    assert (sent["type"], sent["reason"], sent["source"], sent["reportingComponent"]) == (
        "Warning", "PodsNotCreated", {"component": "speech-operator"}, "speech-operator"), sent
    assert POD_REFUSED in sent["message"]
    assert {k: v for k, v in sent["involvedObject"].items() if k != "uid"} == {
        "apiVersion": api.API_VERSION, "kind": api.KIND, "name": "en-us", "namespace": NAMESPACE}
    assert not [r.getMessage() for r in caplog.records[logged:] if r.levelno >= logging.WARNING and not r.name.startswith(
        "speech_operator")], "no WARNING or ERROR from kopf (its poster's retries)"
    await cluster.eventually(lambda: quiet(cluster))  # the re-check is over: no more reads

    assert await cluster.api.delete(cluster.url("apps/v1", "deployments", "en-us"))  # the namespace controller, in its order
    await cluster.eventually(lambda: quiet(cluster))
    await speechtotext_deleted(cluster, ("v1", "services"))  # then the SpeechToText, its Service still there

    assert len(events_posted(cluster, before)) == 1
    since = list(cluster.emulator)[before:]
    writes = sorted((r.method, r.resource.plural if r.resource else "", r.subresource or "") for r in since
                    if r.method in ("POST", "PATCH", "PUT", "DELETE") and r.headers.get("User-Agent", "").startswith(
                        "speech-operator"))
    assert writes == [("DELETE", "services", ""), ("PATCH", "speechtotexts", "status"), ("POST", "events", "")], (
        "the status, the refused Event, the Service: no Deployment made again, no Deleted Event")
    lines = caplog.records[logged:]
    warned = [r.getMessage() for r in lines if r.levelno >= logging.WARNING]
    assert len(warned) == 1 and warned[0].startswith("SpeechToText speech/en-us is degraded (PodsNotCreated)"), warned
    said = [r.getMessage() for r in lines if r.name.startswith("speech_operator") and r.levelno == logging.INFO]
    assert said == ["SpeechToText speech/en-us: its namespace is being deleted: nothing more is created in it, Events "
                    "included (its Warning Event PodsNotCreated was refused)"], said


async def test_an_event_the_api_server_fails_otherwise_is_handed_to_kopfs_poster(cluster: Cluster) -> None:
    """Any other failure of the operator's POST (a 5xx here) hands the Event to kopf's poster, which tries it again
    until the API server takes it, as before: the Events of a creation are posted all the same, each as it was."""
    cluster.emulator.refusals[("events", "")] = (500, "InternalError", "etcdserver: request timed out")
    await cluster.api.create(cluster.stt_url(), stt())

    async def handed() -> bool:
        return any(not r.headers.get("User-Agent", "").startswith("speech-operator") for r in events_posted(cluster, 0))
    await cluster.eventually(handed)  # kopf's first try, refused too
    del cluster.emulator.refusals[("events", "")]

    async def created() -> bool:
        return sorted(e["message"] for e in await cluster.events() if e["reason"] == "Created") == [
            "Created Deployment en-us", "Created Service en-us"]
    await cluster.eventually(created, timeout=10)  # kopf's next tries, a second later
    for event in await cluster.events():
        assert (event["type"], event["source"], event["involvedObject"]["name"]) == (
            "Normal", {"component": "speech-operator"}, "en-us"), event
    agents = [r.headers.get("User-Agent", "").split("/")[0] for r in events_posted(cluster, 0)]
    assert agents.count("speech-operator") == 2 and set(agents) == {"speech-operator", "kopf"}, agents
