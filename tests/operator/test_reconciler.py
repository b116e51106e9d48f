"""The real kopf operator against kmock: create, update, scale, drift repair, Degraded, delete."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from speech_recognizer import contract

from speech_operator import api

if TYPE_CHECKING:
    from conftest import Cluster

NAMESPACE = "speech"

BASE: dict[str, Any] = {
    "apiVersion": "speech-operator.io/v1alpha1",
    "kind": "SpeechToText",
    "metadata": {"name": "en-us", "namespace": NAMESPACE},
    "spec": {"locale": "en-US", "eula": "accept", "replicas": 1},
}


def stt(**spec: Any) -> dict[str, Any]:
    body = copy.deepcopy(BASE)
    body["spec"].update(spec)
    return body


async def deployment(cluster: Cluster) -> dict[str, Any] | None:
    return await cluster.api.get(cluster.url("apps/v1", "deployments", "en-us"))


async def service(cluster: Cluster) -> dict[str, Any] | None:
    return await cluster.api.get(cluster.url("v1", "services", "en-us"))


async def condition(cluster: Cluster, type_: str) -> dict[str, Any]:
    body = await cluster.api.get(cluster.stt_url("en-us")) or {}
    return next((c for c in (body.get("status") or {}).get("conditions") or [] if c["type"] == type_), {})


async def test_create_makes_deployment_and_service(cluster: Cluster) -> None:
    created = await cluster.api.create(cluster.stt_url(), stt())
    dep = await cluster.eventually(lambda: deployment(cluster))
    svc = await cluster.eventually(lambda: service(cluster))

    owner = dep["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "SpeechToText" and owner["uid"] == created["metadata"]["uid"] and owner["controller"]
    assert svc["metadata"]["ownerReferences"][0]["uid"] == created["metadata"]["uid"]
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "example.test/recognizer:1.2.3"
    assert "Eula=accept" in container["args"] and "Locale=en-US" in container["args"]
    assert container["readinessProbe"]["httpGet"]["path"] == contract.ROUTE_READY
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert svc["spec"]["ports"][0]["port"] == contract.PORT

    status = await cluster.eventually(lambda: _status(cluster))
    assert status["selector"] == "app.kubernetes.io/name=speech-recognizer,app.kubernetes.io/instance=en-us"
    assert status["endpoint"] == f"http://en-us.{NAMESPACE}.svc:5000"
    assert (await condition(cluster, "Degraded"))["status"] == "False"
    await cluster.event("Created")


async def _status(cluster: Cluster) -> dict[str, Any] | None:
    body = await cluster.api.get(cluster.stt_url("en-us")) or {}
    return body.get("status") if (body.get("status") or {}).get("conditions") else None


async def test_status_mirrors_ready_replicas(cluster: Cluster) -> None:
    await cluster.api.create(cluster.stt_url(), stt(replicas=2))
    await cluster.eventually(lambda: deployment(cluster))
    assert (await cluster.eventually(lambda: condition(cluster, "Ready")))["status"] == "False"

    # What the Deployment controller would report once both pods pass /ready.
    await cluster.api.patch(cluster.url("apps/v1", "deployments", "en-us", "status"),
                            {"status": {"replicas": 2, "updatedReplicas": 2, "readyReplicas": 2}})

    async def ready() -> bool:
        return (await condition(cluster, "Ready")).get("status") == "True"
    await cluster.eventually(ready)
    body = await cluster.api.get(cluster.stt_url("en-us")) or {}
    assert body["status"]["readyReplicas"] == 2 and body["status"]["replicas"] == 2
    assert (await condition(cluster, "Progressing"))["status"] == "False"
    await cluster.event("Ready")


async def test_spec_update_rolls_the_deployment(cluster: Cluster) -> None:
    await cluster.api.create(cluster.stt_url(), stt())
    await cluster.eventually(lambda: deployment(cluster))
    await cluster.api.patch(cluster.stt_url("en-us"), {"spec": {"version": "2.0.0", "logLevel": "Debug"}})

    async def rolled() -> bool:
        dep = await deployment(cluster) or {}
        container = dep["spec"]["template"]["spec"]["containers"][0]
        return container["image"].endswith(":2.0.0") and f"{contract.LOG_LEVEL}=Debug" in container["args"]
    await cluster.eventually(rolled)
    await cluster.event("Updated")


async def test_scale_changes_replicas(cluster: Cluster) -> None:
    await cluster.api.create(cluster.stt_url(), stt())
    await cluster.eventually(lambda: deployment(cluster))
    await cluster.api.patch(cluster.stt_url("en-us", "scale"), {"spec": {"replicas": 3}})

    async def scaled() -> bool:
        return ((await deployment(cluster)) or {}).get("spec", {}).get("replicas") == 3
    await cluster.eventually(scaled)


async def test_deleted_deployment_is_put_back(cluster: Cluster) -> None:
    await cluster.api.create(cluster.stt_url(), stt())
    first = await cluster.eventually(lambda: deployment(cluster))
    assert await cluster.api.delete(cluster.url("apps/v1", "deployments", "en-us"))

    async def recreated() -> dict[str, Any] | None:
        dep = await deployment(cluster)
        return dep if dep and dep["metadata"]["uid"] != first["metadata"]["uid"] else None
    await cluster.eventually(recreated)


async def test_edited_deployment_and_service_are_put_back(cluster: Cluster) -> None:
    await cluster.api.create(cluster.stt_url(), stt())
    await cluster.eventually(lambda: service(cluster))
    await cluster.eventually(lambda: deployment(cluster))
    await cluster.api.patch(cluster.url("apps/v1", "deployments", "en-us"),
                            {"spec": {"replicas": 7, "template": {"spec": {"containers": [
                                {"name": "recognizer", "image": "evil:latest"}]}}}})
    await cluster.api.patch(cluster.url("v1", "services", "en-us"), {"spec": {"type": "NodePort"}})

    async def restored() -> bool:
        dep, svc = await deployment(cluster) or {}, await service(cluster) or {}
        container = dep["spec"]["template"]["spec"]["containers"][0]
        return (dep["spec"]["replicas"] == 1 and container["image"] == "example.test/recognizer:1.2.3"
                and container["securityContext"]["runAsNonRoot"] is True and svc["spec"]["type"] == "ClusterIP")
    await cluster.eventually(restored)


async def test_missing_secret_degrades_then_recovers(cluster: Cluster) -> None:
    ref = {"name": "speech-key", "key": "apiKey"}
    await cluster.api.create(cluster.stt_url(), stt(billing="https://billing.example.test", apiKeySecretRef=ref))

    async def degraded() -> dict[str, Any] | None:
        c = await condition(cluster, "Degraded")
        return c if c.get("status") == "True" else None
    c = await cluster.eventually(degraded)
    assert c["reason"] == "MissingDependency" and 'Secret "speech-key"' in c["message"]
    assert (await condition(cluster, "Ready"))["status"] == "False"
    await cluster.event("MissingDependency")
    env = (await deployment(cluster) or {})["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "ApiKey", "valueFrom": {"secretKeyRef": ref}} in env

    await cluster.api.create(cluster.url("v1", "secrets"), {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "speech-key", "namespace": NAMESPACE},
        "data": {"apiKey": "c2VjcmV0"}})

    async def recovered() -> bool:
        return (await condition(cluster, "Degraded")).get("status") == "False"
    await cluster.eventually(recovered)
    await cluster.event("Recovered")


async def test_missing_pvc_degrades_then_recovers(cluster: Cluster) -> None:
    await cluster.api.create(cluster.stt_url(), stt(license={"persistentVolumeClaim": {"claimName": "lic"}}))

    async def degraded() -> dict[str, Any] | None:
        c = await condition(cluster, "Degraded")
        return c if c.get("status") == "True" else None
    assert 'PersistentVolumeClaim "lic"' in (await cluster.eventually(degraded))["message"]

    await cluster.api.create(cluster.url("v1", "persistentvolumeclaims"), {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "lic", "namespace": NAMESPACE},
        "spec": {"accessModes": ["ReadOnlyMany"], "resources": {"requests": {"storage": "1Mi"}}}})

    async def recovered() -> bool:
        return (await condition(cluster, "Degraded")).get("status") == "False"
    await cluster.eventually(recovered)


async def test_delete_removes_children(cluster: Cluster) -> None:
    await cluster.api.create(cluster.stt_url(), stt())
    await cluster.eventually(lambda: deployment(cluster))
    await cluster.eventually(lambda: service(cluster))
    await cluster.eventually(lambda: _finalized(cluster))
    assert await cluster.api.delete(cluster.stt_url("en-us"))

    async def gone() -> bool:
        return (await deployment(cluster) is None and await service(cluster) is None
                and await cluster.api.get(cluster.stt_url("en-us")) is None)
    await cluster.eventually(gone)
    await cluster.event("Deleted")


async def _finalized(cluster: Cluster) -> bool:
    body = await cluster.api.get(cluster.stt_url("en-us")) or {}
    return f"{api.GROUP}/cleanup" in (body.get("metadata", {}).get("finalizers") or [])


async def test_image_outside_the_policy_is_refused_and_nothing_is_created(cluster: Cluster) -> None:
    await cluster.api.create(cluster.stt_url(), stt(image="attacker.example/root-shell"))
    degraded = await cluster.eventually(lambda: _condition_with(cluster, "Degraded", "PolicyViolation"))
    assert degraded["status"] == "True"
    assert 'image "attacker.example/root-shell" is not an allowed repository' in degraded["message"]
    assert "example.test/recognizer" in degraded["message"]
    assert (await condition(cluster, "Ready"))["status"] == "False"
    event = await cluster.event("PolicyViolation")
    assert event["type"] == "Warning" and "attacker.example/root-shell" in event["message"]
    assert await deployment(cluster) is None and await service(cluster) is None


async def test_policy_change_to_a_running_resource_changes_nothing(cluster: Cluster) -> None:
    await cluster.api.create(cluster.stt_url(), stt(output={"emptyDir": {}}))
    before = await cluster.eventually(lambda: deployment(cluster))
    await cluster.api.patch(cluster.stt_url("en-us"), {"spec": {"output": {"emptyDir": None, "hostPath": {"path": "/srv/speech/output"}}}})
    degraded = await cluster.eventually(lambda: _condition_with(cluster, "Degraded", "PolicyViolation"))
    assert 'output hostPath "/srv/speech/output" is not under an allowed prefix (allowed: none' in degraded["message"]
    after = await deployment(cluster)
    assert after is not None and after["spec"] == before["spec"], "a refused spec changed the Deployment"


async def _condition_with(cluster: Cluster, type_: str, reason: str) -> dict[str, Any] | None:
    found = await condition(cluster, type_)
    return found if found.get("reason") == reason else None
