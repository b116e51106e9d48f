"""What a clumsy or hostile platform team does to a SpeechToText's children and bookkeeping, on a real cluster.

A Deployment or Service of its name that the operator did not make (a team's own, another controller's): left alone,
said in the status, never deleted with the SpeechToText, never routed to by the gateway. Its own children edited by
hand (an owner reference or an owner label removed), an object carrying the operator's labels with an empty owner, a
status cleared by hand, a copy made with another's annotations, an empty value the API server does not store.
The real kopf operator against kmock (harness/kube.py); where the API server's semantics matter that kmock lacks (what
it stores), the test writes what the API server would have stored and asserts on the requests the operator sent.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any

import pytest
from conftest import NAMESPACE, condition, one_pod_ready, quiet, settled_looks, watched

from speech_operator import api

if TYPE_CHECKING:
    from conftest import Cluster


def stt(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": "en-us", "namespace": NAMESPACE},
            "spec": {"locale": "en-US", "eula": "accept", "replicas": 1, **spec}}


#: A Deployment of the name "en-us" that another controller made (an Argo Rollout's, a Helm operator's).
THEIRS: dict[str, Any] = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "en-us", "namespace": NAMESPACE, "labels": {"app": "web"}, "ownerReferences": [{
        "apiVersion": "example.com/v1", "kind": "WebApp", "name": "web", "uid": "0f0f0f0f-0000-0000-0000-000000000001",
        "controller": True}]},
    "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": {
        "metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}},
}
#: The same, a Service.
THEIR_SERVICE: dict[str, Any] = {
    "apiVersion": "v1", "kind": "Service", "metadata": THEIRS["metadata"],
    "spec": {"type": "ClusterIP", "selector": {"app": "web"}, "ports": [{"name": "web", "port": 80, "targetPort": 8080}]},
}
#: A Service of the name "en-us" that a team made by hand: no owner at all.
HANDMADE: dict[str, Any] = {
    "apiVersion": "v1", "kind": "Service",
    "metadata": {"name": "en-us", "namespace": NAMESPACE, "labels": {"app": "web"}},
    "spec": {"type": "ClusterIP", "selector": {"app": "web"}, "ports": [{"name": "web", "port": 80, "targetPort": 8080}]},
}


async def _finalized(cluster: Cluster) -> bool:
    body = await cluster.api.get(cluster.stt_url("en-us")) or {}
    return f"{api.GROUP}/cleanup" in (body.get("metadata", {}).get("finalizers") or [])


async def _conflict(cluster: Cluster) -> dict[str, Any] | None:
    c = await condition(cluster, "Degraded")
    return c if c.get("reason") == "NameConflict" else None


def _lines(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= level]


async def test_deleting_a_speechtotext_leaves_a_service_of_its_name_that_another_controller_owns(
        cluster: Cluster) -> None:
    """Before, the SpeechToText's deletion deleted a Deployment, Service and PodDisruptionBudget of its name whoever
    owned them: another controller's Service that happened to bear the name went with it."""
    await cluster.api.create(cluster.url("v1", "services"), THEIR_SERVICE)
    await cluster.api.create(cluster.stt_url(), stt())
    await cluster.eventually(lambda: _finalized(cluster))
    await cluster.eventually(lambda: cluster.api.get(cluster.url("apps/v1", "deployments", "en-us")))
    assert await cluster.api.delete(cluster.stt_url("en-us"))

    async def gone() -> bool:
        return await cluster.api.get(cluster.stt_url("en-us")) is None
    await cluster.eventually(gone)
    assert await cluster.api.get(cluster.url("apps/v1", "deployments", "en-us")) is None, "its own is deleted"
    left = await cluster.api.get(cluster.url("v1", "services", "en-us"))
    assert left is not None and left["metadata"]["ownerReferences"] == THEIRS["metadata"]["ownerReferences"], left
    assert not cluster.sent("DELETE", "services", "en-us")


async def test_another_controllers_deployment_is_left_alone_said_in_the_status_once_and_taken_when_gone(
        cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    """Before, kopf's handler failed "temporarily" with an ERROR line a minute and no status at all, and the Service
    was never made. Now: Degraded, Progressing and Ready say NameConflict and whose it is, with one Warning event and
    one WARNING line however often it is looked at again; the Deployment is neither written nor mirrored in the
    status (its 2 ready pods are not the SpeechToText's). Once its owner deletes it, the operator makes its own."""
    await cluster.api.create(cluster.url("apps/v1", "deployments"), THEIRS)
    await cluster.api.patch(cluster.url("apps/v1", "deployments", "en-us", "status"),
                            {"status": {"replicas": 2, "readyReplicas": 2, "updatedReplicas": 2}})
    await cluster.api.create(cluster.stt_url(), stt())
    degraded = await cluster.eventually(lambda: _conflict(cluster))
    assert degraded["status"] == "True" and degraded["message"] == (
        "Deployment en-us exists and is not this SpeechToText's (controlled by WebApp web); it is left as it is: "
        "delete or rename it, or give the SpeechToText another name"), degraded
    ready, progressing = await condition(cluster, "Ready"), await condition(cluster, "Progressing")
    assert (ready["status"], ready["reason"]) == ("False", "NameConflict") and "WebApp web" in ready["message"]
    assert (progressing["status"], progressing["reason"]) == ("False", "NameConflict")
    body = await cluster.api.get(cluster.stt_url("en-us")) or {}
    assert (body["status"]["replicas"], body["status"]["readyReplicas"]) == (0, 0), "their pods are not its pods"
    assert await cluster.api.get(cluster.url("v1", "services", "en-us")) is not None, "the other children are made"

    async def looked_again() -> bool:  # the re-check (every 0.2 s here) reads the Deployment each time
        return len(cluster.sent("GET", "deployments", "en-us")) >= 4
    await cluster.eventually(looked_again)
    assert not cluster.sent("PATCH", "deployments", "en-us"), "theirs is never written"
    warned = [r.getMessage() for r in _lines(caplog, logging.WARNING) if "NameConflict" in r.getMessage()]
    assert len(warned) == 1 and "WebApp web" in warned[0], warned
    assert not _lines(caplog, logging.ERROR) and not any(r.exc_info for r in caplog.records), caplog.text
    assert [e["type"] for e in await cluster.events() if e["reason"] == "NameConflict"] == ["Warning"]

    assert await cluster.api.delete(cluster.url("apps/v1", "deployments", "en-us"))  # its owner lets the name go

    async def ours() -> bool:
        dep = await cluster.api.get(cluster.url("apps/v1", "deployments", "en-us")) or {}
        return (dep.get("metadata", {}).get("ownerReferences") or [{}])[0].get("uid") == body["metadata"]["uid"]
    await cluster.eventually(ours)

    async def recovered() -> bool:
        return (await condition(cluster, "Degraded")).get("status") == "False"
    await cluster.eventually(recovered)


#: How many re-checks :func:`test_the_recheck_of_a_name_taken_reads_the_object_holding_it_alone` counts.
RECHECKS = 5


async def test_the_recheck_of_a_name_taken_reads_the_object_holding_it_alone(cluster: Cluster) -> None:
    """While another controller's Deployment holds its name, each re-check (every recheck_seconds) reads that Deployment
    and nothing else: neither the SpeechToText (its changes are events) nor its own children (theirs too), and writes
    nothing. Held by another controller since, the status says whose at the next re-check (a whole reconcile then).
    Before, each re-check was a whole reconcile: the SpeechToText, the Deployment, Service and PodDisruptionBudget read
    (4 GETs a look)."""
    await cluster.api.create(cluster.url("apps/v1", "deployments"), THEIRS)
    await cluster.api.create(cluster.stt_url(), stt())
    assert "controlled by WebApp web" in (await cluster.eventually(lambda: _conflict(cluster)))["message"]

    sent = await settled_looks(cluster, RECHECKS, "GET", "deployments", "en-us", {"GET deployments"})
    print(f"the operator's requests for {RECHECKS} re-checks of a name taken:", sent)
    assert sent == {"GET deployments": RECHECKS}, sent
    assert not cluster.sent("PATCH", "deployments", "en-us"), "theirs is never written"

    other = [{**THEIRS["metadata"]["ownerReferences"][0], "kind": "Rollout", "name": "web-rollout"}]
    await cluster.api.patch(cluster.url("apps/v1", "deployments", "en-us"), {"metadata": {"ownerReferences": other}})

    async def moved() -> dict[str, Any] | None:
        c = await _conflict(cluster)
        return c if c and "controlled by Rollout web-rollout" in c["message"] else None
    await cluster.eventually(moved, 10)


async def test_a_service_made_by_hand_is_not_taken_over(cluster: Cluster) -> None:
    """Before, the operator server-side applied its Service over one a team had made by hand (force: it took the
    team's fields over, its selector among them, and its app lost its traffic)."""
    await cluster.api.create(cluster.url("v1", "services"), HANDMADE)
    await cluster.api.create(cluster.stt_url(), stt())
    degraded = await cluster.eventually(lambda: _conflict(cluster))
    assert "Service en-us exists and is not this SpeechToText's (made by someone else" in degraded["message"], degraded
    assert await cluster.api.get(cluster.url("apps/v1", "deployments", "en-us")) is not None
    assert not cluster.sent("PATCH", "services", "en-us")
    left = await cluster.api.get(cluster.url("v1", "services", "en-us")) or {}
    assert left["spec"]["selector"] == {"app": "web"} and "ownerReferences" not in left["metadata"], left


async def test_an_owned_deployment_whose_owner_reference_was_removed_by_hand_is_taken_back(cluster: Cluster) -> None:
    """Pins what the rule above keeps: a child with the operator's labels for this SpeechToText and no controller is
    its own, edited by hand; its owner reference is put back, with no conflict."""
    created = await cluster.api.create(cluster.stt_url(), stt())
    await cluster.eventually(lambda: cluster.api.get(cluster.url("apps/v1", "deployments", "en-us")))
    await cluster.api.patch(cluster.url("apps/v1", "deployments", "en-us"), {"metadata": {"ownerReferences": None}})

    async def taken_back() -> bool:
        dep = await cluster.api.get(cluster.url("apps/v1", "deployments", "en-us")) or {}
        refs = dep.get("metadata", {}).get("ownerReferences") or []
        return [r.get("uid") for r in refs] == [created["metadata"]["uid"]]
    await cluster.eventually(taken_back)
    assert (await condition(cluster, "Degraded")).get("reason") != "NameConflict"


async def test_an_object_with_the_operators_labels_and_an_empty_owner_is_one_line(
        cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    """A Service made by hand with the operator's labels, its owner label empty (a copy of one of the operator's,
    edited) is ignored in one INFO line. Before, each of its changes reconciled the SpeechToText named "" (a GET of the
    whole collection, taken for one) and kopf logged an ERROR with two tracebacks (a ValidationError, then a KeyError)."""
    caplog.set_level(logging.INFO, logger="kopf.objects")
    stray = {**HANDMADE, "metadata": {"name": "stray", "namespace": NAMESPACE, "labels": {
        "app.kubernetes.io/managed-by": "speech-operator", f"{api.GROUP}/speechtotext": ""}}}
    await cluster.eventually(lambda: watched(cluster, "services"))  # made before it, it is in kopf's first listing
    await cluster.api.create(cluster.url("v1", "services"), stray)

    async def said() -> list[str]:
        return [r.getMessage() for r in caplog.records if "names no possible SpeechToText" in r.getMessage()]
    assert await cluster.eventually(said) == ["ignored: it names no possible SpeechToText ('')"]
    assert not _lines(caplog, logging.ERROR), caplog.text
    assert not any(r.exc_info for r in caplog.records)


async def test_an_owned_deployment_edited_with_its_owner_label_removed_is_put_back(cluster: Cluster) -> None:
    """Someone scales the Deployment to 5 by hand and takes its speech-operator.io/speechtotext label off in the same
    edit: the operator still sees the change (by its owner reference) and puts both back. Before, its children were
    followed by that label only: the edit went unseen, 5 pods ran until the SpeechToText changed or the operator
    restarted."""
    await cluster.api.create(cluster.stt_url(), stt())
    dep = await cluster.eventually(lambda: cluster.api.get(cluster.url("apps/v1", "deployments", "en-us")))
    await one_pod_ready(cluster, dep)  # Ready: no re-check runs, only the Deployment's own events tell
    await cluster.eventually(lambda: quiet(cluster))  # and kopf's own last touches of the SpeechToText are done
    await cluster.api.patch(cluster.url("apps/v1", "deployments", "en-us"),
                            {"metadata": {"labels": {f"{api.GROUP}/speechtotext": None}}, "spec": {"replicas": 5}})

    async def put_back() -> bool:
        dep = await cluster.api.get(cluster.url("apps/v1", "deployments", "en-us")) or {}
        return dep["spec"]["replicas"] == 1 and dep["metadata"]["labels"].get(f"{api.GROUP}/speechtotext") == "en-us"
    await cluster.eventually(put_back)


async def test_a_deployment_scaled_by_hand_is_put_back_with_a_warning_that_says_to_scale_the_speechtotext(
        cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    """kubectl scale deployment/en-us --replicas=3 (the first day's mistake; an HPA pointed at the Deployment does the
    same): the operator puts 1 back, as before, and now says why and what to scale instead, in one Warning event on
    the SpeechToText and one WARNING line. Before, only a Normal "Updated Deployment en-us: .spec.replicas" event
    said anything. Scaling the SpeechToText itself (a new spec: another fingerprint) warns of nothing."""
    await cluster.api.create(cluster.stt_url(), stt())
    dep = await cluster.eventually(lambda: cluster.api.get(cluster.url("apps/v1", "deployments", "en-us")))
    await one_pod_ready(cluster, dep)
    await cluster.eventually(lambda: quiet(cluster))
    await cluster.api.patch(cluster.url("apps/v1", "deployments", "en-us"), {"spec": {"replicas": 3}})  # the "user"

    async def put_back() -> bool:
        return ((await cluster.api.get(cluster.url("apps/v1", "deployments", "en-us")) or {})["spec"]["replicas"]) == 1
    await cluster.eventually(put_back)
    said = ("Deployment en-us was scaled to 3 by hand (or by an autoscaler): put back to 1; scale the SpeechToText "
            "instead: kubectl scale speechtotext/en-us -n speech --replicas=3, or set spec.autoscaling")
    warned = await cluster.event("ScaledByHand")
    assert (warned["type"], warned["message"], warned["involvedObject"]["name"]) == ("Warning", said, "en-us"), warned

    await cluster.api.patch(cluster.stt_url("en-us"), {"spec": {"replicas": 2}})  # kubectl scale stt/en-us --replicas=2

    async def scaled() -> bool:
        return ((await cluster.api.get(cluster.url("apps/v1", "deployments", "en-us")) or {})["spec"]["replicas"]) == 2
    await cluster.eventually(scaled)
    await cluster.api.patch(cluster.url("apps/v1", "deployments", "en-us", "status"), {"status": {
        "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2}})  # its two pods ready: Ready, no re-checks
    await cluster.eventually(lambda: quiet(cluster))
    assert [e["message"] for e in await cluster.events() if e["reason"] == "ScaledByHand"] == [said]
    assert [r.getMessage() for r in _lines(caplog, logging.WARNING) if r.name.startswith("speech_operator")] == [
        f"SpeechToText speech/en-us: {said}"]


def test_a_deployment_scaled_by_hand_under_autoscaling_names_the_autoscaling_bounds() -> None:
    """With spec.autoscaling the replicas are the autoscaler's: the warning points at its bounds, not at kubectl scale."""
    from speech_operator import reconcile
    owner = stt(autoscaling={"minReplicas": 1, "maxReplicas": 4})
    desired = reconcile.fingerprinted({"apiVersion": "apps/v1", "kind": "Deployment",
                                       "metadata": {"name": "en-us", "namespace": NAMESPACE}, "spec": {"replicas": 2}})
    live = {**desired, "spec": {"replicas": 5}}
    assert reconcile.scaled_by_hand(desired, live, owner) == (
        "Deployment en-us was scaled to 5 by hand (or by an autoscaler): put back to 2; its replicas are the "
        "SpeechToText's autoscaler's choice (spec.autoscaling): change spec.autoscaling.minReplicas or maxReplicas instead")
    assert reconcile.scaled_by_hand(desired, desired, owner) is None
    assert reconcile.scaled_by_hand(reconcile.fingerprinted({**desired, "spec": {"replicas": 3}}), live, owner) is None


def test_the_gateway_routes_nothing_to_a_speechtotext_whose_name_is_someone_elses(
        caplog: pytest.LogCaptureFixture) -> None:
    """Its URL (http://en-us.speech.svc:5000) reaches the team's own Service: before, the gateway sent clients' audio
    and keys there. Now it is not routed, in one line, and routed again once the name is its own."""
    from speech_operator.gateway_directory import Directory
    body: dict[str, Any] = {**stt(), "status": {"readyReplicas": 1, "conditions": [{
        "type": "Degraded", "status": "True", "reason": "NameConflict", "lastTransitionTime": "2026-12-04T21:00:00Z",
        "message": "Service en-us exists and is not this SpeechToText's (made by someone else ...)"}]}}
    directory = Directory()
    with caplog.at_level(logging.WARNING):
        directory.upsert(body)
    assert directory.locales == []
    assert [r.getMessage() for r in caplog.records] == [
        "SpeechToText speech/en-us is not routed: Service en-us exists and is not this SpeechToText's (made by someone "
        "else ...)"]
    body["status"]["conditions"][0].update(status="False", reason="AsExpected", message="")
    directory.upsert(body)
    assert directory.lookup("en-US").url == "http://en-us.speech.svc:5000"


async def test_a_speechtotext_created_with_the_annotations_of_one_handled_before_is_reconciled(cluster: Cluster) -> None:
    """A copy of a SpeechToText with its metadata.annotations (kubectl get -o yaml of one, renamed and applied; a
    backup restored): kopf's last-handled-configuration among them says its spec was handled, so kopf called no
    handler. Before, it got the finalizer and nothing else: no Deployment, no status, no line."""
    await cluster.api.create(cluster.stt_url(), stt())
    await cluster.eventually(lambda: _finalized(cluster))

    async def handled() -> dict[str, str] | None:
        body = await cluster.api.get(cluster.stt_url("en-us")) or {}
        annotations = body["metadata"].get("annotations") or {}
        return annotations if f"{api.GROUP}/last-handled-configuration" in annotations else None
    copy = {**stt(), "metadata": {"name": "copy", "namespace": NAMESPACE, "annotations": await cluster.eventually(handled)}}
    await cluster.api.create(cluster.stt_url(), copy)
    assert await cluster.eventually(lambda: cluster.api.get(cluster.url("apps/v1", "deployments", "copy")))

    async def reported() -> bool:
        return (await condition(cluster, "Degraded", "copy")).get("status") == "False"
    await cluster.eventually(reported)


@pytest.mark.parametrize(("written", "said"), [
    ({"conditions": []}, "its status was written by someone else: written again"),
    (None, "its status was removed by someone else: written again")], ids=["cleared", "removed"])
async def test_a_status_cleared_or_removed_by_someone_else_is_written_again(
        cluster: Cluster, caplog: pytest.LogCaptureFixture, written: dict[str, Any] | None, said: str) -> None:
    """Someone clears the conditions of a SpeechToText Degraded by a NameConflict (kubectl patch --subresource=status,
    to "reset" it), or removes its whole status (the same with '{"status":null}', or a tool that replaces it): it is
    written again at once, in one line. Before, nothing wrote it again: the re-checks stopped (their filter reads the
    status; kopf cancels a daemon 1 s after its filter turns false, before its next look at the default 30 s), the
    status stayed empty, and when the other Deployment went the operator never made its own. A removed status looks
    like the late events of a creation (no status, no observedGeneration), which the operator ignores: one read of
    the live object tells them apart (the creation's own late events read as nothing removed, checked here)."""
    caplog.set_level(logging.INFO, logger="kopf.objects")
    assert cluster.runtime is not None
    cluster.runtime.config = dataclasses.replace(cluster.runtime.config, recheck_seconds=30)  # the default
    await cluster.api.create(cluster.url("apps/v1", "deployments"), THEIRS)
    await cluster.api.create(cluster.stt_url(), stt())
    await cluster.eventually(lambda: _conflict(cluster))
    await cluster.eventually(lambda: quiet(cluster))  # kopf's handling of the creation is over
    assert "by someone else: written again" not in caplog.text, "a late event of the creation taken for it"
    await cluster.api.patch(cluster.stt_url("en-us", "status"), {"status": written})
    assert await cluster.eventually(lambda: _conflict(cluster), timeout=3), "written again"
    assert caplog.text.count("by someone else: written again") == caplog.text.count(said) == 1


async def test_an_empty_value_in_the_spec_the_api_server_does_not_store_is_not_written_again_and_again(
        cluster: Cluster) -> None:
    """A toleration copied with its empty value ({key: gpu, operator: Exists, value: "", effect: NoSchedule}): the API
    server stores it without the value (its Go field is omitempty), which kmock does not do, so the test writes the
    Deployment as the API server would have stored it. Before, the operator found the value missing at each reconcile
    and applied the Deployment again, with an "Updated" Event each time ("writes nothing" with nothing changed held
    for no such spec)."""
    toleration = {"key": "gpu", "operator": "Exists", "value": "", "effect": "NoSchedule"}
    await cluster.api.create(cluster.stt_url(), stt(tolerations=[toleration]))
    dep = await cluster.eventually(lambda: cluster.api.get(cluster.url("apps/v1", "deployments", "en-us")))
    await cluster.eventually(lambda: quiet(cluster))
    stored = {k: v for k, v in toleration.items() if v}
    assert dep["spec"]["template"]["spec"]["tolerations"][-1] == toleration
    before = len(cluster.sent("PATCH", "deployments", "en-us"))
    await cluster.api.patch(cluster.url("apps/v1", "deployments", "en-us"), {"spec": {"template": {"spec": {
        "tolerations": [*dep["spec"]["template"]["spec"]["tolerations"][:-1], stored]}}}})  # an event: a reconcile
    await cluster.eventually(lambda: quiet(cluster))
    assert len(cluster.sent("PATCH", "deployments", "en-us")) == before, "applied again"
    assert not [e for e in await cluster.events() if e["reason"] == "Updated"]


async def test_an_env_var_a_mutating_webhook_adds_to_the_deployment_is_not_fought(cluster: Cluster) -> None:
    """A platform's mutating webhook (a Kyverno policy) adds HTTP_PROXY to every Deployment's containers. Server-side
    apply keeps an item another manager added to a list merged by name, so applying again removes nothing and the
    webhook adds it again anyway; before, the operator saw the list's length differ and applied the Deployment at each
    reconcile, with an "Updated" Event each time. kmock runs no webhook: the test writes what it would have stored."""
    await cluster.api.create(cluster.stt_url(), stt())
    dep = await cluster.eventually(lambda: cluster.api.get(cluster.url("apps/v1", "deployments", "en-us")))
    await cluster.eventually(lambda: quiet(cluster))
    before = len(cluster.sent("PATCH", "deployments", "en-us"))
    containers = dep["spec"]["template"]["spec"]["containers"]
    mutated = [{**c, "env": [*(c.get("env") or []), {"name": "HTTP_PROXY", "value": "http://proxy.corp:3128"}]}
               for c in containers]
    await cluster.api.patch(cluster.url("apps/v1", "deployments", "en-us"),
                            {"spec": {"template": {"spec": {"containers": mutated}}}})  # an event: a reconcile
    await cluster.eventually(lambda: quiet(cluster))
    assert len(cluster.sent("PATCH", "deployments", "en-us")) == before, "applied again"
    assert not [e for e in await cluster.events() if e["reason"] == "Updated"]


async def test_a_speechtotext_deleted_with_its_dependents_orphaned_leaves_them_and_its_successor_takes_them(
        cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    """kubectl delete stt en-us --cascade=orphan (to make it again without its pods going, as with any workload):
    before, the operator deleted its Deployment and Service all the same. kmock does not do what the API server does
    on such a deletion: the test puts the API server's "orphan" finalizer on it, and takes the children's owner
    references off as the garbage collector would, before the SpeechToText is made again."""
    caplog.set_level(logging.INFO, logger="speech_operator.reconcile")
    first = await cluster.api.create(cluster.stt_url(), stt())
    await cluster.eventually(lambda: cluster.api.get(cluster.url("v1", "services", "en-us")))
    await cluster.eventually(lambda: _finalized(cluster))
    body = await cluster.api.get(cluster.stt_url("en-us")) or {}
    await cluster.api.patch(cluster.stt_url("en-us"), {"metadata": {"finalizers": [
        "orphan", *body["metadata"]["finalizers"]]}})
    assert await cluster.api.delete(cluster.stt_url("en-us"))

    async def released() -> bool:
        return not await _finalized(cluster)
    await cluster.eventually(released)
    assert not cluster.sent("DELETE", "deployments", "en-us") and not cluster.sent("DELETE", "services", "en-us")
    assert "SpeechToText speech/en-us is deleted with its dependents orphaned: its children are left" in caplog.text

    await cluster.api.patch(cluster.stt_url("en-us"), {"metadata": {"finalizers": []}})  # the garbage collector's part
    for plural, version in (("deployments", "apps/v1"), ("services", "v1")):
        await cluster.api.patch(cluster.url(version, plural, "en-us"), {"metadata": {"ownerReferences": None}})
    again = await cluster.api.create(cluster.stt_url(), stt())
    assert again["metadata"]["uid"] != first["metadata"]["uid"]

    async def taken_back() -> bool:
        dep = await cluster.api.get(cluster.url("apps/v1", "deployments", "en-us")) or {}
        return [r.get("uid") for r in dep.get("metadata", {}).get("ownerReferences") or []] == [again["metadata"]["uid"]]
    await cluster.eventually(taken_back)
    assert (await condition(cluster, "Degraded")).get("reason") != "NameConflict"
