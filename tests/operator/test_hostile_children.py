"""A Deployment or Service of a SpeechToText's name that the operator did not make: already in the namespace (a team's
own app, a Helm release's), or another controller's. Deleting the SpeechToText deletes only what it owns. The real kopf
operator against kmock (harness/kube.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from conftest import NAMESPACE

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
