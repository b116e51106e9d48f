"""The emulator (harness/kube.py) where a real API server is stricter than kmock: the status subresource, what a
create may carry, what a watch replays. Each is what the operator's tests would otherwise pass on and a cluster would
not; the reference in kube-apiserver's source is in each test's docstring (and the emulator's).

No operator runs: the test's own client writes, as kubectl or a controller would, and reads the answers.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import kmock
from conftest import NAMESPACE

from harness.kube import OPTIMISTIC_LOCK
from speech_operator import api
from speech_operator.kube import APPLY_PATCH, JSON, MERGE_PATCH, KubeError

if TYPE_CHECKING:
    from conftest import Cluster


JSON_PATCH, STRATEGIC_PATCH = "application/json-patch+json", "application/strategic-merge-patch+json"


def stt(name: str, **extra: Any) -> dict[str, Any]:
    return {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"locale": "en-US", "eula": "accept", "replicas": 1}, **extra}


#: A custom resource with the status and scale subresources, as SpeechToTexts are; its own, so that what this file
#: writes wrongly on purpose is not judged as a SpeechToText's write (tests/crd_schema.py fails a test on those).
WIDGETS = "example.com/v1/widgets"


def widgets(cluster: Cluster, name: str = "", sub: str | None = None) -> str:
    cluster.emulator.resources[WIDGETS] = kmock.ResourceInfo(
        kind="Widget", namespaced=True, subresources={"status", "scale"}, verbs={"get", "list", "watch", "create", "patch"})
    return cluster.url("example.com/v1", "widgets", name, sub)


def widget(name: str, **extra: Any) -> dict[str, Any]:
    return {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"replicas": 1}, **extra}


def deployment(**extra: Any) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "en-us", "namespace": NAMESPACE, "labels": {"a": "b"}}, "spec": {"replicas": 1}, **extra}


async def test_status_is_written_through_status_only_and_the_rest_through_the_main_resource(apiserver: Cluster) -> None:
    """A resource with the status subresource (a custom resource as a SpeechToText is, a Deployment, a Pod): a create's status is not kept
    (a Pod's is Pending), a status written to the main resource is ignored, and ``/status`` ignores all but the
    status (a Deployment's labels too; a custom resource's metadata too). The registries' strategies:
    apiextensions-apiserver customresource/strategy.go (PrepareForCreate drops status, PrepareForUpdate keeps the
    old) and status_strategy.go (the old object but its status); pkg/registry/apps/deployment/strategy.go
    (``Status = DeploymentStatus{}``, ``newDeployment.Status = oldDeployment.Status``; its status strategy keeps the
    old spec and labels). A /scale write is a spec change: generation one up. Before, the emulator stored
    whatever was written wherever it was written."""
    cluster = apiserver
    made = await cluster.api.create(widgets(cluster), widget("w", status={"readyReplicas": 3}))
    assert made is not None and "status" not in made
    main = await cluster.api.patch(widgets(cluster, "w"), {"spec": {"replicas": 2}, "status": {"readyReplicas": 3}})
    assert main is not None and "status" not in main and main["spec"]["replicas"] == 2 and main["metadata"]["generation"] == 2
    status = await cluster.api.patch(widgets(cluster, "w", "status"), {
        "metadata": {"labels": {"x": "y"}}, "spec": {"replicas": 5}, "status": {"readyReplicas": 1}})
    assert status is not None and status["status"] == {"readyReplicas": 1}
    assert status["spec"]["replicas"] == 2 and "labels" not in status["metadata"] and status["metadata"]["generation"] == 2
    same = await cluster.api.patch(widgets(cluster, "w"), {"status": {"readyReplicas": 7}})
    assert same == status, "a status written to the main resource changes nothing: no new resourceVersion"
    scaled = await cluster.api.patch(widgets(cluster, "w", "scale"), {"spec": {"replicas": 3}})
    assert scaled is not None and scaled["spec"]["replicas"] == 3 and scaled["metadata"]["generation"] == 3

    url = cluster.url("apps/v1", "deployments", "en-us")
    applied = await cluster.api.apply(url, deployment(status={"readyReplicas": 1}))
    assert applied is not None and not applied.get("status")
    reported = await cluster.api.patch(cluster.url("apps/v1", "deployments", "en-us", "status"), {
        "metadata": {"labels": {"a": "c"}, "annotations": {"n": "m"}}, "spec": {"replicas": 4}, "status": {"readyReplicas": 1}})
    assert reported is not None and reported["status"] == {"readyReplicas": 1} and reported["spec"]["replicas"] == 1
    assert reported["metadata"]["labels"] == {"a": "b"} and reported["metadata"]["annotations"] == {"n": "m"}
    overwritten = await cluster.api.patch(url, {"spec": {"replicas": 2}, "status": {"readyReplicas": 0}})
    assert overwritten is not None and overwritten["status"] == {"readyReplicas": 1} and overwritten["spec"]["replicas"] == 2

    pod = await cluster.api.create(cluster.url("v1", "pods"), {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": NAMESPACE},
        "spec": {"containers": [{"name": "c", "image": "i"}]}, "status": {"phase": "Running", "podIP": "10.0.0.1"}})
    assert pod is not None and pod["status"] == {"phase": "Pending"}
    secret = await cluster.api.create(cluster.url("v1", "secrets"), {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": NAMESPACE}, "data": {}})
    assert secret is not None and "status" not in secret


async def test_a_create_that_names_a_resource_version_is_refused_and_the_system_fields_are_the_servers(
        apiserver: Cluster) -> None:
    """A POST, or a server-side apply of an object that does not exist, with metadata.resourceVersion set (an object
    read back and sent again as new) is refused: 500 "resourceVersion should not be set on objects to be created"
    (apiserver's storage/etcd3/store.go, Create; the handler answers an error that is no API status as 500 with an
    unknown reason: endpoints/handlers/responsewriters/status.go). Nothing is stored. The uid and creationTimestamp
    are the server's whatever was sent (registry/rest/meta.go, FillObjectMetaSystemFields). Before, the emulator kept
    the version, and the uid, that the client sent."""
    cluster = apiserver
    url = widgets(cluster)
    for refused in (cluster.api.create(url, widget("w", metadata={"name": "w", "namespace": NAMESPACE,
                                                                   "resourceVersion": "42"})),
                    cluster.api.apply(widgets(cluster, "w"), widget("w", metadata={
                        "name": "w", "namespace": NAMESPACE, "resourceVersion": "42"}))):
        try:
            await refused
        except KubeError as e:
            assert e.status == 500 and "resourceVersion should not be set on objects to be created" in str(e), e
        else:
            raise AssertionError("a create with a resourceVersion was taken")
    assert await cluster.api.get(widgets(cluster, "w")) is None
    made = await cluster.api.create(url, widget("w", metadata={"name": "w", "namespace": NAMESPACE, "uid": "mine",
                                                                "creationTimestamp": "2020-01-01T00:00:00Z"}))
    assert made is not None and made["metadata"]["uid"] != "mine"
    assert made["metadata"]["creationTimestamp"] > "2026" and int(made["metadata"]["resourceVersion"]) > 0


async def _events(watch: Any, n: int) -> list[tuple[str, str, int]]:
    out = []
    for _ in range(n):
        event = await asyncio.wait_for(anext(watch), 5)
        out.append((event["type"], event["object"]["metadata"]["name"], int(event["object"]["metadata"]["resourceVersion"])))
    return out


async def test_a_deletion_is_one_deleted_event_with_a_version_of_its_own(apiserver: Cluster) -> None:
    """A DELETED event carries the object as it was last stored with the deletion's own new resourceVersion
    (apiserver's storage/etcd3/watcher.go, prepareObjs: "this sends the *old* object with the etcd revision for the
    time at which it gets deleted"), above every version before it. Removing the last finalizer of an object being
    deleted deletes it: one DELETED, no MODIFIED first (registry/generic/registry/store.go, Update:
    ShouldDeleteDuringUpdate, deleteWithoutFinalizers); the answer is the object as written. Before, DELETED carried
    the object's last version, and the finalizer's removal was stored and sent as MODIFIED, then DELETED."""
    cluster = apiserver
    url = widgets(cluster)
    watch = cluster.api.watch(url, {}, 30)
    plain = await cluster.api.create(url, widget("plain"))
    held = await cluster.api.create(url, widget("held", metadata={"name": "held", "namespace": NAMESPACE,
                                                                    "finalizers": ["example.com/hold"]}))
    assert plain is not None and held is not None
    assert [e[:2] for e in await _events(watch, 2)] == [("ADDED", "plain"), ("ADDED", "held")]
    await cluster.api.delete(widgets(cluster, "plain"))
    ((kind, name, version),) = await _events(watch, 1)
    assert (kind, name) == ("DELETED", "plain") and version > int(held["metadata"]["resourceVersion"])
    await cluster.api.delete(widgets(cluster, "held"))
    ((kind, name, marked),) = await _events(watch, 1)
    assert (kind, name) == ("MODIFIED", "held") and marked > version
    released = await cluster.api.patch(widgets(cluster, "held"), {"metadata": {"finalizers": None}})
    assert released is not None and not released["metadata"].get("finalizers")
    event = await asyncio.wait_for(anext(watch), 5)
    assert (event["type"], event["object"]["metadata"]["name"]) == ("DELETED", "held"), event
    assert int(event["object"]["metadata"]["resourceVersion"]) > marked
    assert event["object"]["metadata"]["finalizers"] == ["example.com/hold"], "the object as it was stored"
    assert await cluster.api.get(widgets(cluster, "held")) is None
    await watch.aclose()


async def test_a_watch_from_a_version_replays_what_happened_since_as_it_happened(apiserver: Cluster) -> None:
    """A watch from a list's resourceVersion gets every event after it, as it happened: MODIFIED for an object the
    list had and that changed since, DELETED for one deleted since, ADDED for one made since; a watch from a version
    older than the history kept (:meth:`Emulator.compact` of its resource) gets one ERROR, 410 Expired
    (apiserver's storage/cacher/watch_cache.go, getAllEventsSinceLocked: "too old resource version"); another
    resource's compacted, it replays as before. Before, a watch began with an
    ADDED of each object newer than the version: a change since the list came as ADDED, and a deletion not at all."""
    cluster = apiserver
    url = widgets(cluster)
    for name in ("kept", "changed", "gone"):
        await cluster.api.create(url, widget(name))
    listed = await cluster.api.get(url) or {}
    since = listed["metadata"]["resourceVersion"]
    assert sorted(i["metadata"]["name"] for i in listed["items"]) == ["changed", "gone", "kept"]
    await cluster.api.patch(widgets(cluster, "changed"), {"spec": {"replicas": 2}})
    await cluster.api.patch(widgets(cluster, "changed"), {"spec": {"replicas": 3}})
    await cluster.api.delete(widgets(cluster, "gone"))
    await cluster.api.create(url, widget("new"))
    watch = cluster.api.watch(url, {"resourceVersion": since}, 30)
    replayed = await _events(watch, 4)
    assert [e[:2] for e in replayed] == [("MODIFIED", "changed"), ("MODIFIED", "changed"), ("DELETED", "gone"),
                                         ("ADDED", "new")], replayed
    assert [e[2] for e in replayed] == sorted(e[2] for e in replayed) and replayed[0][2] > int(since)
    await cluster.api.patch(widgets(cluster, "kept"), {"spec": {"replicas": 2}})
    assert [e[:2] for e in await _events(watch, 1)] == [("MODIFIED", "kept")], "then what happens next"
    await watch.aclose()

    await cluster.emulator.compact("deployments")  # another resource's history: this one's is kept
    kept = cluster.api.watch(url, {"resourceVersion": since}, 30)
    assert [e[:2] for e in await _events(kept, 5)] == [e[:2] for e in replayed] + [("MODIFIED", "kept")]
    await kept.aclose()
    await cluster.emulator.compact("widgets")
    expired = cluster.api.watch(url, {"resourceVersion": since}, 30)
    event = await asyncio.wait_for(anext(expired), 5)
    assert event["type"] == "ERROR" and event["object"]["code"] == 410 and event["object"]["reason"] == "Expired", event
    assert event["object"]["message"].startswith(f"too old resource version: {since} (")
    await expired.aclose()


async def test_only_the_kinds_whose_registry_counts_a_generation_have_one(apiserver: Cluster) -> None:
    """A custom resource, a Deployment, a PodDisruptionBudget: generation 1 at the create, whatever was sent (their
    strategies' PrepareForCreate); a Namespace, a Service, a Pod: none, then or after a spec change (their
    strategies never set it: pkg/registry/core/namespace/strategy.go sets the phase Active and the finalizer
    "kubernetes" in spec.finalizers, nothing else). Before, every object got generation 1."""
    cluster = apiserver
    namespace = await cluster.api.get(f"/api/v1/namespaces/{NAMESPACE}")
    assert namespace is not None and "generation" not in namespace["metadata"], namespace
    assert namespace["spec"]["finalizers"] == ["kubernetes"] and namespace["status"] == {"phase": "Active"}
    sent = {"name": "w", "namespace": NAMESPACE, "generation": 7}
    assert (await cluster.api.create(widgets(cluster), widget("w", metadata=sent)))["metadata"]["generation"] == 1
    pdb = await cluster.api.create(cluster.url("policy/v1", "poddisruptionbudgets"), {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "p", "namespace": NAMESPACE},
        "spec": {"maxUnavailable": 1}})
    assert pdb["metadata"]["generation"] == 1
    service = await cluster.api.create(cluster.url("v1", "services"), {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": NAMESPACE},
        "spec": {"ports": [{"port": 80}]}})
    assert "generation" not in service["metadata"]
    changed = await cluster.api.patch(cluster.url("v1", "services", "s"), {"spec": {"ports": [{"port": 81}]}})
    assert changed is not None and "generation" not in changed["metadata"]


async def test_a_list_and_a_watch_select_by_labels_and_fields(apiserver: Cluster) -> None:
    """``labelSelector`` (``k=v``, ``k!=v``, ``k in (...)``, ``k notin (...)``, ``k``, ``!k``) and ``fieldSelector``
    (``metadata.name=...``) choose what a list answers and a watch sends, as the API server's storage predicate does
    (apimachinery labels.Parse, fields.ParseSelector; a custom resource's fields are metadata.name and
    metadata.namespace only, another is 400: apiextensions-apiserver customresource/strategy.go, GetAttrs). kmock read
    neither and answered every object: the operator's pod list by its SpeechToText's selector got every pod there."""
    cluster = apiserver
    url = widgets(cluster)
    for name, labels in (("a", {"app": "x", "tier": "1"}), ("b", {"app": "x"}), ("c", {"app": "y"})):
        await cluster.api.create(url, widget(name, metadata={"name": name, "namespace": NAMESPACE, "labels": labels}))

    async def names(**query: str) -> list[str]:
        listing = await cluster.api.request("GET", url, query=query) or {}
        return sorted(i["metadata"]["name"] for i in listing["items"])
    assert await names(labelSelector="app=x") == ["a", "b"]
    assert await names(labelSelector="app=x,!tier") == ["b"]
    assert await names(labelSelector="app in (x, y),tier") == ["a"]
    assert await names(labelSelector="app notin (x)") == ["c"]
    assert await names(labelSelector="app!=x") == ["c"]
    assert await names(fieldSelector="metadata.name=b") == ["b"]
    assert await names() == ["a", "b", "c"]
    try:
        await names(fieldSelector="spec.replicas=1")
    except KubeError as e:
        assert e.status == 400, e
    else:
        raise AssertionError("a custom resource's field selector on spec was taken")
    watch = cluster.api.watch(url, {"labelSelector": "app=y"}, 30)
    first = await asyncio.wait_for(anext(watch), 5)
    assert (first["type"], first["object"]["metadata"]["name"]) == ("ADDED", "c")
    await cluster.api.patch(widgets(cluster, "a"), {"spec": {"replicas": 2}})
    await cluster.api.patch(widgets(cluster, "c"), {"spec": {"replicas": 2}})
    event = await asyncio.wait_for(anext(watch), 5)
    assert (event["type"], event["object"]["metadata"]["name"]) == ("MODIFIED", "c"), "a's change is not sent"
    await watch.aclose()


async def test_a_watch_ends_at_its_timeout_seconds_or_else_after_the_servers_own_limit(apiserver: Cluster) -> None:
    """A watch ends when its ``timeoutSeconds`` have passed, else after between the API server's
    ``--min-request-timeout`` and twice it (apiserver's endpoints/request GetTimeoutForWatch: ``minRequestTimeout *
    (1 + rand)``; a ``timeoutSeconds`` of 0 is none), its chunked answer simply ending: no ERROR, nothing after what
    it had sent (endpoints/handlers/watch.go, HandleHTTP: ``case <-timeoutCh: return``). A watch again from the last
    version seen gets what happened in between. Before, the emulator's watches never ended."""
    cluster = apiserver
    url = widgets(cluster)
    made = await cluster.api.create(url, widget("w"))
    loop = asyncio.get_running_loop()

    async def whole(seconds: int, query: dict[str, str]) -> tuple[list[tuple[str, str]], float]:
        started = loop.time()
        events = [(e["type"], e["object"]["metadata"]["resourceVersion"])
                  async for e in cluster.api.watch(url, query, seconds)]
        return events, loop.time() - started
    events, took = await asyncio.wait_for(whole(1, {}), 5)
    assert events == [("ADDED", made["metadata"]["resourceVersion"])] and 1 <= took < 2.5, (events, took)
    changed = await cluster.api.patch(widgets(cluster, "w"), {"spec": {"replicas": 2}})
    assert changed is not None
    cluster.emulator.min_request_timeout = 0.5
    events, took = await asyncio.wait_for(whole(0, {"resourceVersion": events[-1][1]}), 5)
    assert events == [("MODIFIED", changed["metadata"]["resourceVersion"])] and 0.5 <= took < 1.5, (events, took)


async def test_a_write_with_a_stale_resource_version_is_a_conflict_and_is_not_stored(apiserver: Cluster) -> None:
    """An update whose object carries a resourceVersion other than the stored one, by PUT, merge patch, JSON patch,
    strategic merge patch, server-side apply, to /status or /scale, is 409 Conflict ("the object has been modified;
    please apply your changes to the latest version and try again", reason Conflict) and nothing is stored
    (apiserver's registry/generic/registry/store.go, Update: ``newResourceVersion != existingResourceVersion`` ->
    NewConflict(qualifiedResource, name, OptimisticLockErrorMsg)). With the stored version, or with none, it is
    taken; but a custom resource PUT with none is 422, its strategy allowing no unconditional update
    (apiextensions-apiserver customresource/strategy.go). Before, the emulator stored each of them (and served no
    PUT at all: a 404)."""
    cluster = apiserver
    made = await cluster.api.create(widgets(cluster), widget("w"))
    url = widgets(cluster, "w")
    now = await cluster.api.patch(url, {"spec": {"replicas": 2}})
    assert now is not None
    old, current = made["metadata"]["resourceVersion"], now["metadata"]["resourceVersion"]

    async def refused(status: int, method: str, url: str, body: Any, content_type: str = JSON, **query: str) -> str:
        try:
            await cluster.api.request(method, url, body, content_type=content_type, query=query)
        except KubeError as e:
            assert e.status == status, e
            return str(e)
        raise AssertionError(f"{method} {url} {body} was taken")
    conflict = f'Operation cannot be fulfilled on widgets.example.com \\"w\\": {OPTIMISTIC_LOCK}'
    stale = {"name": "w", "namespace": NAMESPACE, "resourceVersion": old}
    for method, target, body, kind in [
            ("PUT", url, widget("w", metadata=stale, spec={"replicas": 5}), JSON),
            ("PATCH", url, {"metadata": {"resourceVersion": old}, "spec": {"replicas": 5}}, MERGE_PATCH),
            ("PATCH", url, [{"op": "replace", "path": "/metadata/resourceVersion", "value": old},
                            {"op": "replace", "path": "/spec/replicas", "value": 5}], JSON_PATCH),
            ("PATCH", widgets(cluster, "w", "status"), {"metadata": {"resourceVersion": old}, "status": {"ready": 5}},
             MERGE_PATCH),
            ("PUT", widgets(cluster, "w", "scale"), {"metadata": {"resourceVersion": old}, "spec": {"replicas": 5}}, JSON),
            ("PATCH", url, widget("w", metadata=stale, spec={"replicas": 5}), APPLY_PATCH)]:
        query = {"fieldManager": "test", "force": "true"} if kind == APPLY_PATCH else {}
        said = await refused(409, method, target, body, kind, **query)
        assert conflict in said and '"reason": "Conflict"' in said and '"kind": "widgets"' in said, said
    assert await cluster.api.get(url) == now, "nothing stored"

    taken = await cluster.api.request("PUT", url, widget("w", metadata={"name": "w", "resourceVersion": current},
                                                          spec={"replicas": 3}))
    assert taken is not None and taken["spec"] == {"replicas": 3} and taken["metadata"]["generation"] == 3
    assert taken["metadata"]["uid"] == made["metadata"]["uid"] and int(taken["metadata"]["resourceVersion"]) > int(current)
    said = await refused(422, "PUT", url, widget("w", spec={"replicas": 4}))
    assert "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update" in said, said

    dep = await cluster.api.create(cluster.url("apps/v1", "deployments"), deployment())
    dep_url = cluster.url("apps/v1", "deployments", "en-us")
    said = await refused(409, "PATCH", dep_url, {"metadata": {"resourceVersion": old}, "spec": {"replicas": 2}},
                         STRATEGIC_PATCH)
    assert 'Operation cannot be fulfilled on deployments.apps \\"en-us\\"' in said and '"group": "apps"' in said, said
    replaced = await cluster.api.request("PUT", dep_url, deployment(spec={"replicas": 2}))
    assert replaced is not None and replaced["spec"]["replicas"] == 2, "a Deployment's update may name no version"
    assert int(replaced["metadata"]["resourceVersion"]) > int(dep["metadata"]["resourceVersion"])


async def test_a_refused_apply_owns_no_fields_and_the_next_apply_removes_what_the_last_taken_one_sent(
        apiserver: Cluster) -> None:
    """A field manager's server-side apply refused (409 Conflict: the resourceVersion it names is stale) stores nothing,
    its managedFields included, so the manager's next apply still removes the fields its last taken apply sent and
    this one leaves out (apiserver's fieldmanager runs within the update the version check refuses). Before, the
    emulator recorded the refused apply's fields as the manager's: a label it left out stayed for good, and a test
    could pass on an apply that never landed."""
    cluster = apiserver
    url = cluster.url("apps/v1", "deployments", "en-us")
    query = {"fieldManager": "test", "force": "true"}
    made = await cluster.api.request("PATCH", url, deployment(metadata={"name": "en-us", "namespace": NAMESPACE,
                                                                        "labels": {"a": "b", "c": "d"}}),
                                     content_type=APPLY_PATCH, query=query)
    assert made is not None and made["metadata"]["labels"] == {"a": "b", "c": "d"}
    await cluster.api.patch(url, {"spec": {"replicas": 2}})  # someone else's write: made's version is stale
    try:
        await cluster.api.request("PATCH", url, deployment(metadata={
            "name": "en-us", "namespace": NAMESPACE, "labels": {"a": "b"},
            "resourceVersion": made["metadata"]["resourceVersion"]}), content_type=APPLY_PATCH, query=query)
    except KubeError as e:
        assert e.status == 409, e
    else:
        raise AssertionError("a stale apply was taken")
    again = await cluster.api.request("PATCH", url, deployment(metadata={"name": "en-us", "namespace": NAMESPACE,
                                                                         "labels": {"a": "b"}}),
                                      content_type=APPLY_PATCH, query=query)
    assert again is not None and again["metadata"]["labels"] == {"a": "b"}, "c, applied before and left out, is removed"
