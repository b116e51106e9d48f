"""A namespace holding a SpeechToText is deleted (kubectl delete namespace), with the real kopf operator on kmock.

The API server marks the Namespace Terminating and refuses every create in it (harness/kube.py emulates its
NamespaceLifecycle admission plugin, Status body and all); the namespace controller then deletes what it holds, in no
set order (a Go map of the discovered resources). kmock runs no namespace controller: the test deletes as it does, the
children first (the order that made the operator write them again), then the SpeechToText, which its finalizer holds.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import pytest
from conftest import NAMESPACE, quiet

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


async def test_a_create_in_a_namespace_being_deleted_is_refused_as_the_api_server_refuses_it(cluster: Cluster) -> None:
    """The emulator's part, pinned to the API server's words (admission.go's NamespaceLifecycle, apimachinery's
    NewForbidden): a POST and an apply that would create are 403 with the NamespaceTerminating cause; an update and a
    delete are served; the Namespace reads Terminating until the namespace controller lets it go."""
    marked = await cluster.api.delete(NAMESPACE_URL)
    assert marked
    namespace = await cluster.api.get(NAMESPACE_URL) or {}
    assert namespace["status"]["phase"] == "Terminating" and namespace["metadata"]["deletionTimestamp"], namespace
    with pytest.raises(KubeError) as refused:
        await cluster.api.create(cluster.url("v1", "events"), {"apiVersion": "v1", "kind": "Event", "metadata": {
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
        await cluster.api.apply(cluster.url("apps/v1", "deployments", "en-us"), {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "en-us", "namespace": NAMESPACE}})
    assert applied.value.message == ('deployments.apps "en-us" is forbidden: unable to create new content in '
                                     "namespace speech because it is being terminated")
    assert applied.value.namespace_terminating
    assert await cluster.api.patch(cluster.url("v1", "services", "en-us"), {"metadata": {"labels": {"a": "b"}}}) is None
    assert await cluster.api.delete(NAMESPACE_URL), "deleted again: still there, Terminating"
    await cluster.emulator.finalize_namespace(NAMESPACE)
    assert await cluster.api.get(NAMESPACE_URL) is None


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
    assert await cluster.api.delete(cluster.stt_url("en-us"))  # then the SpeechToText, its Deployment still there

    async def gone() -> bool:
        return await cluster.api.get(cluster.stt_url("en-us")) is None
    await cluster.eventually(gone)  # the finalizer removed
    assert await cluster.api.get(cluster.url("apps/v1", "deployments", "en-us")) is None
    await cluster.eventually(lambda: quiet(cluster))

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
    and that is one INFO line, no other Event, the finalizer removed. Before, kopf posted each "Deleted" Event and
    tried it again 8 times over 54 s, an ERROR line each time."""
    before, logged = await made_then_namespace_deleted(cluster, caplog)
    assert await cluster.api.delete(cluster.stt_url("en-us"))  # the namespace controller, in its order

    async def gone() -> bool:
        return await cluster.api.get(cluster.stt_url("en-us")) is None
    await cluster.eventually(gone)  # the finalizer removed
    for plural in ("deployments", "services"):
        assert await cluster.api.get(cluster.url("apps/v1" if plural == "deployments" else "v1", plural, "en-us")) is None
    await cluster.eventually(lambda: quiet(cluster))

    since = list(cluster.emulator)[before:]
    posted = [r for r in since if r.method == "POST" and r.resource is not None and r.resource.plural == "events"]
    assert len(posted) == 1, [(r.headers.get("User-Agent"), r.data) for r in posted]
    assert (posted[0].data["reason"], posted[0].data["involvedObject"]["name"]) == ("Deleted", "en-us")
    lines = caplog.records[logged:]
    assert not [r.getMessage() for r in lines if r.levelno >= logging.WARNING], "no WARNING, no ERROR"
    said = [r.getMessage() for r in lines if r.name.startswith("speech_operator")]
    assert said == ["SpeechToText speech/en-us: its namespace is being deleted: its children are deleted without "
                    "Events (Deployment en-us, Service en-us)"], said
