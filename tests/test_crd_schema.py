"""tests/crd_schema.py, what a real API server does with a write to a SpeechToText as the tests judge kmock's
requests by: it finds a field the CRD's structural schema would prune, a value it would refuse, what a
subresource ignores, and leaves alone what a preserve-unknown-fields node keeps. Unit tests: the judge runs on every test's kmock requests
(tests/conftest.py), and the last test here sends its requests through a kmock emulator to it."""

from __future__ import annotations

from typing import Any

import kmock
import pytest

from speech_operator.kube import USER_AGENT

from . import crd_schema
from .crd_schema import as_created, judge
from .rbac import Sent

pytestmark = pytest.mark.unit  # no model, server, operator or browser: the quick run (README, Tests)

STT = "/apis/speech-operator.io/v1alpha1/namespaces/speech/speechtotexts"
VALID: dict[str, Any] = {"apiVersion": "speech-operator.io/v1alpha1", "kind": "SpeechToText",
                         "metadata": {"name": "en-us", "namespace": "speech"}, "spec": {"locale": "en-US", "eula": "accept"}}
MERGE, JSON_PATCH, APPLY = crd_schema.MERGE_PATCH, crd_schema.JSON_PATCH, crd_schema.APPLY_PATCH


def write(method: str, path: str, body: Any, content_type: str = MERGE, agent: str = USER_AGENT) -> list[str]:
    return judge([Sent(method=method, path=path, query={}, user_agent=agent, body=body, content_type=content_type)])


def test_a_field_the_schema_does_not_declare_is_found_and_named_with_its_request() -> None:
    found = write("PATCH", f"{STT}/en-us/status", {"status": {"readyReplicas": 1, "kopf": {"progress": {}}}})
    assert found == [f"PATCH {STT}/en-us/status ({USER_AGENT}, {MERGE}): .status.kopf: pruned (the CRD's schema does not declare it)"]
    assert write("POST", STT, {**VALID, "spec": {**VALID["spec"], "replica": 2}}, "application/json") == [
        f"POST {STT} ({USER_AGENT}, application/json): .spec.replica: pruned (the CRD's schema does not declare it)"]
    # metadata keeps ObjectMeta's fields only; an item of a list is judged by its items' schema
    assert [f.split(": ", 1)[1] for f in write("PATCH", f"{STT}/en-us", {"metadata": {"annotation": {"a": "b"}}})] == [
        ".metadata.annotation: pruned (the CRD's schema does not declare it)"]
    condition = {"type": "Ready", "status": "True", "reason": "Ok", "lastTransitionTime": "2026-01-01T00:00:00Z", "since": "x"}
    assert [f.split(": ", 1)[1] for f in write("PATCH", f"{STT}/en-us/status", {"status": {"conditions": [condition]}})] == [
        ".status.conditions[0].since: pruned (the CRD's schema does not declare it)"]


def test_a_value_the_schema_refuses_is_found() -> None:
    assert write("PATCH", f"{STT}/en-us/status", {"status": {"readyReplicas": -1}}) == [
        f"PATCH {STT}/en-us/status ({USER_AGENT}, {MERGE}): refused (422): .status.readyReplicas: -1 is less than the minimum of 0"]
    found = write("PATCH", f"{STT}/en-us/status", {"status": {"demand": {"requestedAt": "yesterday"}}})
    assert found and "refused (422): .status.demand.requestedAt: 'yesterday' is not a 'date-time'" in found[0]
    # a list is written whole: its items' required fields are asked for
    assert "is a required property" in write("PATCH", f"{STT}/en-us/status", {"status": {"conditions": [{"type": "Ready"}]}})[0]
    # an object is created whole: required fields, enums and CEL rules
    assert "'eula' is a required property" in as_created({**VALID, "spec": {"locale": "en-US"}})[0]
    assert "is not one of ['accept']" in as_created({**VALID, "spec": {"locale": "en-US", "eula": "yes"}})[0]
    assert as_created({**VALID, "metadata": {"name": "En_us"}}) == [
        "refused (422): <root>: metadata.name must be a DNS-1035 label of at most 63 characters (it names the Service)"]


def test_a_merge_patch_is_judged_by_what_it_writes() -> None:
    # fields it leaves as they were are not asked for (required, CEL rules over siblings); null removes a field
    assert write("PATCH", f"{STT}/en-us", {"spec": {"replicas": 3}}) == []
    assert write("PATCH", f"{STT}/en-us", {"spec": {"autoscaling": {"minReplicas": 5}}}) == []
    assert write("PATCH", f"{STT}/en-us", {"spec": {"typo": None}, "metadata": {"annotations": {"a": None}}}) == []
    assert write("PATCH", f"{STT}/en-us", {"spec": {"replicas": 1001}})[0].endswith(
        "refused (422): .spec.replicas: 1001 is greater than the maximum of 1000")


def test_a_preserve_unknown_fields_node_keeps_what_is_below_it() -> None:
    spec = {**VALID["spec"], "affinity": {"nodeAffinity": {"anything": [{"at": "all"}]}},
            "tolerations": [{"key": "k", "operator": "Exists", "whatever": 1}], "nodeSelector": {"any-label": "x"}}
    assert as_created({**VALID, "spec": spec}) == []
    # but a node with no such mark beside it still prunes
    assert as_created({**VALID, "spec": {**spec, "podAnnotations": {"a": "b"}, "affinityy": {}}}) == [
        ".spec.affinityy: pruned (the CRD's schema does not declare it)"]


def test_what_a_subresource_ignores_is_found() -> None:
    assert [f.split(": ", 1)[1] for f in write("PATCH", f"{STT}/en-us", {"status": {"readyReplicas": 1}})] == [
        ".status: ignored (the main resource takes no status: it has a status subresource)"]
    assert [f.split(": ", 1)[1] for f in write("PATCH", f"{STT}/en-us/status",
                                               {"metadata": {"annotations": {"a": "b"}}, "spec": {"replicas": 2}})] == [
        "ignored: .spec (the status subresource takes .status only)",
        "ignored: .metadata.annotations (the status subresource takes .status only)"]
    # an apply of the status names its object: not a finding
    assert write("PATCH", f"{STT}/en-us/status", {**{k: VALID[k] for k in ("apiVersion", "kind", "metadata")},
                                                  "status": {"replicas": 1}}, APPLY) == []


def test_the_scale_subresource_takes_a_scale_whose_replicas_the_spec_must_take() -> None:
    assert write("PATCH", f"{STT}/en-us/scale", {"spec": {"replicas": 3}}) == []
    assert write("PATCH", f"{STT}/en-us/scale", {"spec": {"replicas": 1001}})[0].endswith(
        "refused (422): .spec.replicas: 1001 is greater than the maximum of 1000")
    assert "not an autoscaling/v1 Scale" in write("PATCH", f"{STT}/en-us/scale", {"spec": {"replica": 3}})[0]


def test_a_json_patch_is_judged_by_its_operations_and_must_be_a_list() -> None:
    ops = [{"op": "test", "path": "/metadata/resourceVersion", "value": "7"},
           {"op": "add", "path": "/metadata/finalizers/-", "value": "speech-operator.io/cleanup"}]
    assert write("PATCH", f"{STT}/en-us", ops, JSON_PATCH) == []
    assert [f.split(": ", 1)[1] for f in write("PATCH", f"{STT}/en-us/status",
                                               [{"op": "replace", "path": "/status/ready", "value": 1}], JSON_PATCH)] == [
        ".status.ready: pruned (the CRD's schema does not declare it)"]
    # one field of a list's item: the item's other fields are not asked for, the field's own rules are
    reason = [{"op": "replace", "path": "/status/conditions/0/reason", "value": "Ok"}]
    assert write("PATCH", f"{STT}/en-us/status", reason, JSON_PATCH) == []
    assert "does not match" in write("PATCH", f"{STT}/en-us/status", [{**reason[0], "value": "not ok"}], JSON_PATCH)[0]
    # what a client sends when it leaves the Content-Type to kubernetes' generated client: a dict as a JSON patch
    assert write("PATCH", f"{STT}/en-us/status", {"status": {"replicas": 1}}, JSON_PATCH) == [
        f"PATCH {STT}/en-us/status ({USER_AGENT}, {JSON_PATCH}): refused (400): a JSON patch that is not a list:"
        " {'status': {'replicas': 1}}"]
    for other in ("application/strategic-merge-patch+json", "application/json"):
        assert write("PATCH", f"{STT}/en-us", {"spec": {}}, other)[0].endswith(
            "refused (415): a custom resource takes a PATCH as one of application/merge-patch+json,"
            " application/json-patch+json, application/apply-patch+yaml")


def test_only_writes_to_speechtotexts_are_judged() -> None:
    assert judge([Sent(method="PATCH", path="/apis/apps/v1/namespaces/speech/deployments/en-us", query={},
                       user_agent=USER_AGENT, body={"spec": {"anything": 1}}, content_type=MERGE),
                  Sent(method="GET", path=f"{STT}/en-us", query={}, user_agent=USER_AGENT),
                  Sent(method="DELETE", path=f"{STT}/en-us", query={}, user_agent=USER_AGENT)]) == []


async def test_the_recorded_requests_reach_the_judge_with_their_content_type() -> None:
    """Through tests/conftest.py's recording of a kmock emulator: kubernetes' generated client, given a dict to
    patch a custom object's status with and no Content-Type, sends it as a JSON patch (the first type its
    patch methods list), which a real API server refuses (400: not a list) and kmock merged; named, it is a
    merge patch and passes. A server-side apply sent as YAML is read as YAML."""
    from kubernetes_asyncio import client as k8s

    from harness.kube import Emulator, declare

    from . import conftest

    conftest.unjudged()  # what earlier tests of this worker left is theirs
    async with Emulator() as emulator, kmock.Server(emulator) as server:
        declare(emulator)
        emulator.objects["speech-operator.io/v1alpha1/speechtotexts", "speech", "en-us"] = VALID
        async with k8s.ApiClient(k8s.Configuration(host=str(server.url).rstrip("/"))) as api_client:
            api_client.user_agent = "test-client"
            objects = k8s.CustomObjectsApi(api_client)
            args = ("speech-operator.io", "v1alpha1", "speech", "speechtotexts", "en-us", {"status": {"replicas": 1}})
            await objects.patch_namespaced_custom_object_status(*args)
            await objects.patch_namespaced_custom_object_status(*args, _content_type=MERGE)  # type: ignore[call-arg]
        applied = "apiVersion: speech-operator.io/v1alpha1\nkind: SpeechToText\nmetadata: {name: en-us}\nstatus: {ready: 1}\n"
        async with server.client.patch(f"{STT}/en-us/status", data=applied, params={"fieldManager": "m"},
                                       headers={"Content-Type": APPLY, "User-Agent": USER_AGENT}) as response:
            await response.read()
    default, named, yaml_apply = sent = conftest.unjudged()
    assert (default.content_type, named.content_type, yaml_apply.content_type) == (JSON_PATCH, MERGE, APPLY)
    assert yaml_apply.body == {"apiVersion": "speech-operator.io/v1alpha1", "kind": "SpeechToText",
                               "metadata": {"name": "en-us"}, "status": {"ready": 1}}
    assert [f.split("): ", 1)[1] for f in judge(sent)] == [
        "refused (400): a JSON patch that is not a list: {'status': {'replicas': 1}}",
        ".status.ready: pruned (the CRD's schema does not declare it)"]
