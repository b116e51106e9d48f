"""Conditions, drift detection, settings and the command line, without a cluster."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import inspect
import json
import re
from typing import Any

import kubernetes_validate
import pytest
import yaml
from stt_schema import ROOT, older

from speech_operator import api, builders, cli, conditions, reconcile
from speech_operator.config import OperatorConfig
from speech_operator.gateway import GatewayConfig
from speech_operator.quantities import quantity
from speech_operator.reconcile import APPLIED, differences, fingerprinted, pending

pytestmark = pytest.mark.unit  # no model, server, operator or browser: the quick run (README, Tests)

STT = api.SpeechToText.model_validate({
    "metadata": {"name": "en-us", "namespace": "speech", "uid": "u", "generation": 3},
    "spec": {"locale": "en-US", "eula": "accept", "replicas": 2}})


def deployment(ready: int, updated: int = 2, replicas: int = 2) -> dict[str, Any]:
    return {"status": {"replicas": replicas, "readyReplicas": ready, "updatedReplicas": updated}}


def by_type(status: api.SpeechToTextStatus) -> dict[str, api.Condition]:
    return {c.type: c for c in status.conditions}


def test_all_ready() -> None:
    status = conditions.observe(STT, deployment(2), [], "2026-01-01T00:00:00Z")
    c = by_type(status)
    assert (c["Ready"].status, c["Ready"].reason) == ("True", "ReplicasReady")
    assert (c["Progressing"].status, c["Degraded"].status) == ("False", "False")
    assert status.readyReplicas == 2 and status.observedGeneration == 3
    assert all(x.observedGeneration == 3 for x in status.conditions)


def test_rolling_out() -> None:
    c = by_type(conditions.observe(STT, deployment(1, updated=1), [], "t"))
    assert (c["Ready"].status, c["Progressing"].status, c["Progressing"].reason) == ("False", "True", "RollingOut")
    assert c["Ready"].message == "1/2 replicas ready"


def test_missing_dependency_names_it() -> None:
    c = by_type(conditions.observe(STT, deployment(0), ['Secret "k"', 'PersistentVolumeClaim "p"'], "t"))
    assert (c["Degraded"].status, c["Degraded"].reason) == ("True", "MissingDependency")
    assert c["Degraded"].message == 'Secret "k"; PersistentVolumeClaim "p" not found'
    assert c["Ready"].status == "False"


#: The Deployment controller's words, as a cluster writes them (kube-controller-manager 1.30).
POD_SECURITY_REFUSAL = (
    'pods "en-us-6d5f7c9b8-x2kqz" is forbidden: violates PodSecurity "restricted:latest": runAsNonRoot != true '
    '(container "chown" must not set securityContext.runAsNonRoot=false), runAsUser=0 (container "chown" must not '
    'set runAsUser=0)')
QUOTA_REFUSAL = ('pods "en-us-6d5f7c9b8-x2kqz" is forbidden: exceeded quota: compute, requested: requests.memory=1Gi, '
                 'used: requests.memory=4Gi, limited: requests.memory=4Gi')


def troubled(*found: dict[str, str], observed: int = 2, generation: int = 2) -> dict[str, Any]:
    """A Deployment of 2 replicas, none ready, with the conditions ``found``."""
    out = deployment(0, updated=0, replicas=0)
    out["metadata"] = {"generation": generation}
    out["status"].update(observedGeneration=observed, conditions=[
        {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable",
         "message": "Deployment does not have minimum availability."}, *found])
    return out


def failed_create(message: str) -> dict[str, str]:
    return {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": message}


WITH_PVC = api.SpeechToText.model_validate({**STT.model_dump(), "spec": {
    **STT.spec.model_dump(exclude_defaults=True), "output": {"persistentVolumeClaim": {"claimName": "out"}}}})


def test_pods_the_cluster_refuses_are_degraded_with_its_words() -> None:
    """A Deployment whose ReplicaSet cannot create pods (Pod Security, a quota) makes the SpeechToText Degraded and
    not Ready with the API server's reason, instead of "0/2 replicas ready" for ever."""
    c = by_type(conditions.observe(STT, troubled(failed_create(QUOTA_REFUSAL)), [], "t"))
    assert (c["Degraded"].status, c["Degraded"].reason) == ("True", "PodsNotCreated")
    assert c["Degraded"].message == f"the Deployment cannot create pods: {QUOTA_REFUSAL}"
    assert (c["Ready"].status, c["Ready"].reason) == ("False", "PodsNotCreated")
    assert c["Ready"].message == f"0/2 replicas ready: {c['Degraded'].message}"
    # the chown step is what the restricted profile refuses: the message says what to set
    hinted = by_type(conditions.observe(WITH_PVC, troubled(failed_create(POD_SECURITY_REFUSAL)), [], "t"))
    assert hinted["Degraded"].message.startswith(f"the Deployment cannot create pods: {POD_SECURITY_REFUSAL}; ")
    assert "set spec.chownVolumes to false" in hinted["Degraded"].message
    assert "whoever owns them" not in hinted["Degraded"].message  # no hostPath in this spec
    unhinted = by_type(conditions.observe(STT, troubled(failed_create(POD_SECURITY_REFUSAL)), [], "t"))
    assert "chownVolumes" not in unhinted["Degraded"].message  # no chown step: something else broke the profile
    on_the_node = api.SpeechToText.model_validate({**STT.model_dump(), "spec": {
        **STT.spec.model_dump(exclude_defaults=True), "chownVolumes": False, "license": {"hostPath": {"path": "/srv/lic"}}}})
    c = by_type(conditions.observe(on_the_node, troubled(failed_create(POD_SECURITY_REFUSAL)), [], "t"))
    assert "chownVolumes" not in c["Degraded"].message and c["Degraded"].message.endswith(
        "; hostPath volumes are refused there whoever owns them: use a PersistentVolumeClaim")


def test_a_message_past_the_condition_bound_is_cut_not_fatal() -> None:
    """A Deployment's refusal is quoted (and then hinted, and quoted again in Ready's message): one longer than a
    condition's 32768 characters would make every status write fail."""
    refusal = "pods \"x\" is forbidden: " + "violates PodSecurity; " * 2000
    c = by_type(conditions.observe(WITH_PVC, troubled(failed_create(refusal)), [], "t"))
    for type_ in ("Ready", "Degraded"):
        message = c[type_].message
        assert len(message) == api.CONDITION_MESSAGE_MAX and message.endswith(" characters, cut)"), type_
    assert c["Degraded"].message.startswith(f"the Deployment cannot create pods: {refusal[:1000]}")
    api.SpeechToTextStatus.model_validate(conditions.invalid({"metadata": {"generation": 2}}, "x" * 40000, "t").model_dump())


def test_a_rollout_past_its_deadline_is_degraded_and_not_progressing() -> None:
    stuck = {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
             "message": 'ReplicaSet "en-us-6d5f7c9b8" has timed out progressing.'}
    c = by_type(conditions.observe(STT, troubled(stuck), [], "t"))
    assert (c["Degraded"].status, c["Degraded"].reason) == ("True", "ProgressDeadlineExceeded")
    assert c["Degraded"].message == ('ReplicaSet "en-us-6d5f7c9b8" has timed out progressing: its pods did not become '
                                     'ready (kubectl describe pods -l app.kubernetes.io/name=speech-recognizer,'
                                     'app.kubernetes.io/instance=en-us)')
    assert (c["Progressing"].status, c["Progressing"].reason) == ("False", "ProgressDeadlineExceeded")
    assert (c["Ready"].status, c["Ready"].reason) == ("False", "ProgressDeadlineExceeded")


def test_deployment_conditions_of_an_older_spec_say_nothing() -> None:
    """Once the spec changed, the controller's conditions of the old one (not yet observed) are not reported."""
    c = by_type(conditions.observe(STT, troubled(failed_create(QUOTA_REFUSAL), observed=1), [], "t"))
    assert (c["Degraded"].status, c["Ready"].reason, c["Progressing"].reason) == ("False", "ReplicasNotReady", "RollingOut")
    # and a missing Secret still comes first
    c = by_type(conditions.observe(STT, troubled(failed_create(QUOTA_REFUSAL)), ['Secret "k"'], "t"))
    assert c["Degraded"].reason == "MissingDependency"


def test_transition_time_moves_only_on_flips() -> None:
    first = conditions.observe(STT, deployment(2), [], "2026-01-01T00:00:00Z")
    seen = STT.model_copy(update={"status": first})
    same = by_type(conditions.observe(seen, deployment(2), [], "2026-01-02T00:00:00Z"))
    assert same["Ready"].lastTransitionTime == "2026-01-01T00:00:00Z"
    flipped = by_type(conditions.observe(seen, deployment(1), [], "2026-01-03T00:00:00Z"))
    assert flipped["Ready"].lastTransitionTime == "2026-01-03T00:00:00Z"
    assert flipped["Degraded"].lastTransitionTime == "2026-01-01T00:00:00Z"


def _pod(name: str, *, ready: bool = False, deleting: bool = False, **status: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, **({"deletionTimestamp": "2026-01-01T00:00:00Z"} if deleting else {})}
    return {"metadata": meta, "status": {"podIP": "10.0.0.1", "conditions": [{"type": "Ready", "status": str(ready)}],
                                         **status}}


UNSCHEDULABLE = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                 "message": "0/3 nodes are available: 3 Insufficient memory."}


def _waiting(name: str, reason: str) -> dict[str, Any]:
    return {"name": name, "state": {"waiting": {"reason": reason, "message": f"{reason} words"}}}


def test_pods_trouble_puts_the_spec_before_a_crash_before_the_scheduler_and_ignores_ready_and_leaving_pods() -> None:
    """The most telling of the pods' troubles: a cause the spec holds (an image, a container config), then a crash,
    then a pod the scheduler cannot place; ready pods and pods being deleted (a rollout's old ones) say nothing."""
    crash = {"name": "recognizer", "state": {"waiting": {"reason": "CrashLoopBackOff"}},
             "lastState": {"terminated": {"reason": "Error", "exitCode": 2, "message": "noise\n" * 100 + "the error\n"}}}
    unplaced = _pod("c", conditions=[UNSCHEDULABLE])
    crashing = _pod("b", containerStatuses=[crash])
    pulling = _pod("a", initContainerStatuses=[_waiting("download-model", "ImagePullBackOff")])
    reason, message = conditions.pods_trouble([unplaced, crashing, pulling], STT) or ("", "")
    assert reason == conditions.PODS_FAILING and message.startswith(
        'pod a: init container "download-model" ImagePullBackOff: ImagePullBackOff words; check spec.image'), message
    assert message.endswith("(and 2 more pods not running)"), message
    assert conditions.pods_trouble([unplaced, crashing], STT) == (conditions.PODS_FAILING, (
        'pod b: container "recognizer" CrashLoopBackOff (Error, exit code 2: the error) (and 1 more pod not running)'))
    assert conditions.pods_trouble([unplaced], STT) == (conditions.PODS_UNSCHEDULABLE, (
        "pod c cannot be scheduled: 0/3 nodes are available: 3 Insufficient memory; check spec.resources.requests, "
        "spec.nodeSelector, spec.tolerations, spec.affinity"))
    config = _pod("d", containerStatuses=[_waiting("recognizer", "CreateContainerConfigError")])
    assert conditions.pods_trouble([crashing, config], STT)[1].startswith('pod d: container "recognizer" CreateContainerConfigError')
    gone = [_pod("a", ready=True, containerStatuses=[crash]), _pod("b", deleting=True, containerStatuses=[crash]),
            _pod("c", containerStatuses=[_waiting("recognizer", "ContainerCreating")])]
    assert conditions.pods_trouble(gone, STT) is None


def test_a_containers_last_words_are_its_last_line_cut_from_its_end() -> None:
    long = "x" * 1000 + " the end"
    crash = {"name": "download-model", "state": {"terminated": {"reason": "Error", "exitCode": 1, "message": f"a\n{long}\n"}}}
    _, message = conditions.pods_trouble([_pod("a", initContainerStatuses=[crash])], STT) or ("", "")
    quoted = message.split("exit code 1: ")[1].split(")")[0]
    assert len(quoted) == conditions.QUOTED_MAX and quoted.startswith("...") and quoted.endswith(" the end"), quoted
    assert "ModelCatalogUrl" in message


def test_pods_trouble_makes_it_degraded_and_not_ready_before_a_progress_deadline() -> None:
    """The pods' words win over the Deployment's progress deadline (which names no cause); a Deployment that cannot
    create pods has none to ask."""
    stuck = {"status": {"replicas": 2, "readyReplicas": 0, "updatedReplicas": 2, "conditions": [
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "timed out"}]}}
    pods = [_pod("a", conditions=[UNSCHEDULABLE])]
    c = by_type(conditions.observe(STT, stuck, [], "t", pods=pods))
    assert (c["Degraded"].reason, c["Ready"].reason, c["Progressing"].reason) == (
        conditions.PODS_UNSCHEDULABLE, conditions.PODS_UNSCHEDULABLE, "ProgressDeadlineExceeded")
    assert c["Ready"].message.startswith("0/2 replicas ready: pod a cannot be scheduled: "), c["Ready"].message
    refused = {"status": {"replicas": 0, "conditions": [{"type": "ReplicaFailure", "status": "True", "message": "forbidden"}]}}
    assert by_type(conditions.observe(STT, refused, [], "t", pods=pods))["Degraded"].reason == "PodsNotCreated"
    assert by_type(conditions.observe(STT, deployment(0), ['Secret "k"'], "t", pods=pods))["Degraded"].reason == "MissingDependency"


def test_pods_are_asked_only_while_not_all_ready_and_rechecked_while_they_exist_unready() -> None:
    assert not conditions.pods_matter(STT, deployment(2)) and not conditions.pods_matter(STT, None)
    assert conditions.pods_matter(STT, deployment(1)) and conditions.pods_matter(STT, deployment(2, updated=1))
    assert not conditions.pods_matter(STT, deployment(0, replicas=0)), "a Deployment that made no pods yet has none to ask"
    assert not conditions.pods_matter(STT, {"metadata": {"name": "en-us"}}), "nor one its controller has not seen yet"
    starting = conditions.observe(STT, deployment(0), [], "t").model_dump(mode="json")
    assert conditions.needs_recheck(starting), "pods that exist and are not ready are looked at again"
    assert not conditions.needs_recheck(conditions.observe(STT, deployment(0, replicas=0), [], "t").model_dump(mode="json"))
    assert not conditions.needs_recheck(conditions.observe(STT, deployment(2), [], "t").model_dump(mode="json"))


def test_a_refused_spec_is_one_of_the_status_that_observed_its_generation() -> None:
    """What stops the autoscaler's daemon (:func:`speech_operator.handlers._autoscaled`): InvalidSpec, SpecTooLarge or
    PolicyViolation of this generation; not of an older one (the spec changed since), nor any other trouble."""
    body = STT.model_dump(mode="json", exclude_none=True)
    for reason in (conditions.INVALID_SPEC, conditions.SPEC_TOO_LARGE):
        status = conditions.invalid(body, "why", "t", reason=reason).model_dump(mode="json")
        assert conditions.refused(status, 3) and not conditions.refused(status, 4), reason
    policy = conditions.observe(STT, deployment(2), [], "t", refused=["image"]).model_dump(mode="json")
    assert conditions.refused(policy, 3) and not conditions.refused(policy, 4)
    missing = conditions.observe(STT, deployment(0), ['Secret "k"'], "t").model_dump(mode="json")
    assert not conditions.refused(missing, 3) and not conditions.refused(None, 3)
    assert not conditions.refused(conditions.observe(STT, deployment(2), [], "t").model_dump(mode="json"), 3)


def test_status_validates_against_the_crd() -> None:
    import jsonschema
    from stt_schema import crd_schema
    status = conditions.observe(STT, deployment(1), ['Secret "k"'], "2026-01-01T00:00:00Z")
    jsonschema.validate(status.model_dump(mode="json", exclude_none=True),
                        crd_schema()["properties"]["status"])


def test_differences_ignore_server_defaults() -> None:
    desired = {"spec": {"replicas": 1, "template": {"containers": [{"name": "a", "ports": [{"containerPort": 5000}]}]},
                        "resources": {"cpu": 1}}}
    actual = {"spec": {"replicas": 1, "progressDeadlineSeconds": 600, "resources": {"cpu": "1"},
                       "template": {"containers": [{"name": "a", "terminationMessagePath": "/dev/x",
                                                    "ports": [{"containerPort": 5000, "protocol": "TCP"}]}]}}}
    assert differences(desired, actual) == []
    actual["spec"]["replicas"] = 7
    # an item someone else added to a list merged by name: server-side apply keeps it, applying again would not help
    actual["spec"]["template"]["containers"].append({"name": "sidecar"})
    assert differences(desired, actual) == [".spec.replicas"]
    actual["spec"]["template"]["containers"][0]["name"] = "b"  # ours gone
    assert differences(desired, actual) == [".spec.replicas", ".spec.template.containers[a]"]


@pytest.mark.parametrize(("written", "stored"), [
    ("0.5", "500m"), (2, "2"), ("1024Mi", "1Gi"), ("1.5Gi", "1536Mi"), ("1000m", "1"), ("1e3", "1k"), ("0.1", "100m")])
def test_quantities_compare_by_amount(written: Any, stored: str) -> None:
    """The API server stores quantities in canonical form: that is no drift."""
    assert quantity(written) == quantity(stored)
    desired = {"resources": {"requests": {"cpu": written}}, "emptyDir": {"sizeLimit": written}}
    assert differences(desired, {"resources": {"requests": {"cpu": stored}}, "emptyDir": {"sizeLimit": stored}}) == []


def test_quantities_differ_by_amount_and_only_where_quantities_live() -> None:
    assert differences({"resources": {"limits": {"cpu": "0.5"}}}, {"resources": {"limits": {"cpu": "501m"}}}) \
        == [".resources.limits.cpu"]
    assert differences({"env": [{"value": "0.5"}]}, {"env": [{"value": "500m"}]}) == [".env[0].value"]
    assert quantity("lots") is None and quantity(True) is None


def _stt(**spec: Any) -> api.SpeechToText:
    return api.SpeechToText.model_validate({
        "metadata": {"name": "en-us", "namespace": "speech", "uid": "u-1", "generation": 1},
        "spec": {"locale": "en-US", "eula": "accept", "replicas": 1, **spec}})


def _as_stored(desired: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """What a real API server (v1.3x) returns for an applied Deployment: quantities in canonical
    form, defaults filled in, managedFields, resourceVersion, status (kmock keeps none of that)."""
    live = copy.deepcopy(desired)
    live["metadata"].update(uid="d-1", resourceVersion="4711", generation=1, creationTimestamp="2026-01-01T00:00:00Z",
                            managedFields=[{"manager": "speech-operator", "operation": "Apply", "fieldsType": "FieldsV1",
                                            "fieldsV1": {"f:spec": {}}}])
    live["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "1"
    spec = live["spec"]
    spec.update(progressDeadlineSeconds=600)
    pod = spec["template"]["spec"]
    pod.update(dnsPolicy="ClusterFirst", restartPolicy="Always", schedulerName="default-scheduler",
               terminationGracePeriodSeconds=pod.get("terminationGracePeriodSeconds", 30))
    for c in pod["containers"]:
        c.update(terminationMessagePath="/dev/termination-log")
        c.setdefault("terminationMessagePolicy", "File")
        for probe in ("readinessProbe", "livenessProbe"):
            if probe in c:
                c[probe].setdefault("successThreshold", 1)
                c[probe]["httpGet"].setdefault("scheme", "HTTP")
        for part in c.get("resources", {}).values():
            for k, v in part.items():
                part[k] = {"0.5": "500m", "1024Mi": "1Gi", "2048Mi": "2Gi"}.get(str(v), str(v))
    live["status"] = {"replicas": 1, "readyReplicas": 1, "updatedReplicas": 1, "observedGeneration": 1}
    for k, v in changes.items():
        spec[k] = v
    return live


CONFIG = OperatorConfig(image="example.test/recognizer", version="1")


def test_nothing_to_apply_when_the_server_kept_what_was_applied() -> None:
    """A resync or a restart: the same spec gives the same desired object and no write, though the
    server rewrote 0.5 CPU as 500m and added its defaults."""
    stt = _stt(resources={"requests": {"cpu": "0.5", "memory": "1024Mi"}, "limits": {"cpu": "2", "memory": "2048Mi"}})
    desired = fingerprinted(builders.deployment(stt, CONFIG))
    live = _as_stored(desired)
    assert live["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"] == {"cpu": "500m", "memory": "1Gi",
                                                                                   "ephemeral-storage": "615Mi"}
    assert pending(desired, live) == []
    assert pending(fingerprinted(builders.deployment(stt, CONFIG)), live) == []  # built again, as after a restart


@pytest.mark.parametrize("removed", ["podAnnotations", "nodeSelector", "affinity", "tolerations", "priorityClassName"])
def test_a_field_removed_from_the_spec_is_applied(removed: str) -> None:
    """Today's child still carries the field (the server keeps it until we apply): the
    fingerprint tells it is not what the spec asks for any more, so the child is applied."""
    values = {"podAnnotations": {"a": "b"}, "nodeSelector": {"disk": "ssd"},
              "affinity": {"nodeAffinity": {}}, "tolerations": [{"key": "k", "operator": "Exists"}],
              "priorityClassName": "speech-realtime"}
    before = fingerprinted(builders.deployment(_stt(**{removed: values[removed]}), CONFIG))
    live = _as_stored(before)
    after = fingerprinted(builders.deployment(_stt(), CONFIG))
    assert json.dumps(values[removed]) not in json.dumps(after)
    assert pending(after, live) == [f".metadata.annotations.{APPLIED}"]
    assert pending(before, live) == []


def test_spreading_turned_off_is_applied() -> None:
    """``topologySpreadConstraints: []`` takes the default constraints off the live Deployment."""
    before = fingerprinted(builders.deployment(_stt(), CONFIG))
    live = _as_stored(before)
    after = fingerprinted(builders.deployment(_stt(topologySpreadConstraints=[]), CONFIG))
    assert "topologySpreadConstraints" in live["spec"]["template"]["spec"]
    assert "topologySpreadConstraints" not in after["spec"]["template"]["spec"]
    assert pending(after, live) == [f".metadata.annotations.{APPLIED}"]


def test_an_edit_of_a_field_we_set_is_applied_and_others_fields_are_left() -> None:
    desired = fingerprinted(builders.deployment(_stt(), CONFIG))
    assert pending(desired, _as_stored(desired, replicas=5)) == [".spec.replicas"]
    assert pending(desired, _as_stored(desired, paused=True)) == []  # not ours: SSA leaves it too
    assert pending(desired, None) == ["."]


def test_config_from_env() -> None:
    config = OperatorConfig.from_env({"SPEECH_OPERATOR_IMAGE": "r/x", "SPEECH_OPERATOR_VERSION": "2",
                                      "SPEECH_OPERATOR_RECHECK_SECONDS": "5", "SPEECH_OPERATOR_RELIST_SETTLE_SECONDS": "0.5"})
    assert (config.image, config.version, config.recheck_seconds, config.relist_settle_seconds) == ("r/x", "2", 5.0, 0.5)
    assert OperatorConfig.from_env({}).image == OperatorConfig().image
    with pytest.raises(ValueError, match=r"^SPEECH_OPERATOR_RELIST_SETTLE_SECONDS='0' must be at least 0.001$"):
        OperatorConfig.from_env({"SPEECH_OPERATOR_RELIST_SETTLE_SECONDS": "0"})


def number_settings() -> list[Any]:
    """Every number setting as declared, with the config that reads it: the operator's (OperatorConfig's number fields,
    each read from SPEECH_OPERATOR_<FIELD>) and the gateway's (GatewayConfig.variables())."""
    operator = [(OperatorConfig, f"SPEECH_OPERATOR_{f.name.upper()}", f.type) for f in dataclasses.fields(OperatorConfig)]
    gateway = [(GatewayConfig, name, f.type) for name, f in GatewayConfig.variables().items()]
    return [pytest.param(*setting, id=setting[1]) for setting in operator + gateway if setting[2] in ("int", "float")]


@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
@pytest.mark.parametrize(("config", "variable", "kind"), number_settings())
def test_a_number_setting_given_no_finite_number_says_so(config: Any, variable: str, kind: str, value: str) -> None:
    """Python's float() takes "inf" and "nan": the setting refused them, but as "must be at least 0.001" (or at least
    0), which no number could mend. A whole number's setting never took them."""
    says = "is not a whole number" if kind == "int" else "is not a finite number"
    with pytest.raises(ValueError, match=f"^{re.escape(f'{variable}={value!r} {says}')}$"):
        config.from_env({variable: value})


def test_cli_scope(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPEECH_OPERATOR_NAMESPACE", raising=False)
    assert cli.parse(["run", "-n", "a", "-n", "b"]).namespace == ["a", "b"]
    assert cli.parse(["run", "--all-namespaces"]).all_namespaces
    with pytest.raises(SystemExit):
        cli.parse(["run"])
    with pytest.raises(SystemExit):
        cli.parse(["run", "-n", "a", "-A"])
    monkeypatch.setenv("SPEECH_OPERATOR_NAMESPACE", "x, y")
    args = cli.parse(["run", "--liveness", "http://0.0.0.0:8080/healthz"])
    assert args.namespace == ["x", "y"] and args.liveness == "http://0.0.0.0:8080/healthz"
    assert args.peering is None  # no peering unless asked for: kopf would pause until a peering object exists
    assert cli.parse(["run", "-A", "--peering", "speech-operator"]).peering == "speech-operator"
    monkeypatch.setenv("SPEECH_OPERATOR_PEERING", "p")
    assert cli.parse(["run", "-A"]).peering == "p" and cli.parse(["run", "-A", "--standalone"]).peering is None


def test_cli_help_names_every_environment_variable_it_reads(capsys: pytest.CaptureFixture[str]) -> None:
    """Each variable ``cli.parse`` takes a default from is named in ``--help`` (SPEECH_OPERATOR_LIVENESS was not)."""
    read = set(re.findall(r'os\.environ\.get\("(\w+)"', inspect.getsource(cli.parse)))
    assert {"SPEECH_OPERATOR_LIVENESS", "SPEECH_OPERATOR_METRICS", "POD_NAMESPACE"} <= read, read
    shown = ""
    for command in ("run", "gateway", "cleanup", "crd", "alerts"):
        with pytest.raises(SystemExit):
            cli.parse([command, "--help"])
        shown += capsys.readouterr().out
    assert not {name for name in read if name not in " ".join(shown.split())}


def test_gateway_help_lists_every_setting_and_each_is_read(capsys: pytest.CaptureFixture[str]) -> None:
    """``speech-operator gateway --help`` showed host and port only: the other settings (the ones the chart and
    deploy/ set among them) were nowhere but the code and the README. Now each, with its default and bound,
    from the one place they are declared; and each variable listed is the one from_env reads."""
    with pytest.raises(SystemExit):
        cli.parse(["gateway", "--help"])
    shown = capsys.readouterr().out
    listed = set(re.findall(r"^  (SPEECH_GATEWAY_\w+)  \(default ", shown, re.M))
    set_by_manifests = {name for path in ("charts/speech-operator/templates/gateway.yaml", "deploy/base/gateway.yaml")
                        for name in re.findall(r"- name: (SPEECH_GATEWAY_\w+)", (ROOT / path).read_text())}
    assert set_by_manifests and set_by_manifests <= listed, set_by_manifests - listed
    assert listed == set(GatewayConfig.variables())
    assert f"SPEECH_GATEWAY_MAX_HEADER_BYTES  (default {GatewayConfig.max_header_bytes}, at least 1024, at most 524288)" in shown
    small_forms = {"SPEECH_GATEWAY_FORM_BUFFER_BYTES": "65536"}  # a form's buffer must fit the forms' budget (any budget)
    for name, f in GatewayConfig.variables().items():
        if f.type == "str":
            value = "http://127.0.0.2" if name == "SPEECH_GATEWAY_CORS_ORIGINS" else "127.0.0.2"  # an origin, else an address
            assert getattr(GatewayConfig.from_env({name: value}), f.name) == value
            continue
        largest = GatewayConfig.bounds(f)[1] or 70000
        assert getattr(GatewayConfig.from_env({**small_forms, name: str(largest)}), f.name) == largest, name
        if GatewayConfig.bounds(f)[1] is not None:
            with pytest.raises(ValueError, match=f"^{name}='{largest + 1}' must be at most {largest}$"):
                GatewayConfig.from_env({name: str(largest + 1)})
        with pytest.raises(ValueError, match=f"^{name}='-1' must be at least"):  # every number has its bound
            GatewayConfig.from_env({name: "-1"})


def test_gateway_help_gives_the_flags_their_settings_declared_default(capsys: pytest.CaptureFixture[str],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """``--host`` and ``--port`` are settings too: their help and their default come from GatewayConfig's declaration,
    where cli.py typed them again ("default 0.0.0.0", "default 5000", and a default of its own for --host). Moved
    here, the declaration moves the help and what the gateway listens on."""
    from dataclasses import fields

    declared = {f.name: f for f in fields(GatewayConfig)}
    monkeypatch.setattr(declared["host"], "default", "127.0.0.9")
    monkeypatch.setattr(GatewayConfig, "host", "127.0.0.9")
    monkeypatch.setattr(declared["port"], "default", 5099)
    monkeypatch.setattr(declared["port"], "metadata", {**declared["port"].metadata, "help": "port for 100% of clients"})
    monkeypatch.delenv("SPEECH_GATEWAY_HOST", raising=False)
    with pytest.raises(SystemExit):
        cli.parse(["gateway", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    said = " ".join(declared["host"].metadata["help"].split())
    assert f"--host HOST {said} (env SPEECH_GATEWAY_HOST; default 127.0.0.9)" in shown, shown
    assert "--port PORT port for 100% of clients (env SPEECH_GATEWAY_PORT; default 5099)" in shown, shown
    args = cli.parse(["gateway", "-A"])
    assert args.host is None and args.port is None, "unset, the variable's or the declared default: GatewayConfig's"
    assert cli.parse(["gateway", "-A", "--host", "::1"]).host == "::1"


def test_a_gateway_config_made_directly_keeps_each_number_within_its_declared_bounds() -> None:
    """Made directly (as tests, bench and the flags' dataclasses.replace do), a GatewayConfig took any number: 660 s
    for SPEECH_GATEWAY_SEND_STALL_SECONDS, declared at most 60, was built silently. Now each number is checked against
    its one declaration, and the error names its variable and the bound, as from_env's does."""
    for name, f in GatewayConfig.variables().items():
        if f.type == "str":
            continue
        minimum, maximum = GatewayConfig.bounds(f)
        if maximum is not None:
            above = maximum + 600
            with pytest.raises(ValueError, match=f"^{name}={above!r} must be at most {maximum}$"):
                GatewayConfig(**{f.name: above})
        assert minimum is not None, name
        below = minimum - 1
        with pytest.raises(ValueError, match=f"^{name}={below!r} must be at least {minimum:g}$"):
            GatewayConfig(**{f.name: below})
        with pytest.raises(ValueError, match=f"^{name}=nan must be at least"):
            GatewayConfig(**{f.name: float("nan")})


def test_the_gateways_send_stall_bound_is_the_kernels_as_it_is_when_checked(monkeypatch: pytest.MonkeyPatch,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """SPEECH_GATEWAY_SEND_STALL_SECONDS is at most the kernel's bound on a peer that takes in nothing
    (speech_recognizer.serving.DEAD_PEER_SECONDS, which the gateway's listening socket takes as it is made): that bound is
    read when a config is checked, made directly or from the environment, and listed by --help, not frozen when the
    module was imported (a test that raised it for its gateway's socket had to patch the field's declaration as well); the
    setting's help sentence names no number for it (before, it said "at most 60" as the listing said "at most 600")."""
    from speech_recognizer import serving
    monkeypatch.setattr(serving, "DEAD_PEER_SECONDS", 600)
    assert GatewayConfig(send_stall_seconds=600).send_stall_seconds == 600
    assert GatewayConfig.from_env({"SPEECH_GATEWAY_SEND_STALL_SECONDS": "600"}).send_stall_seconds == 600
    with pytest.raises(ValueError, match=r"^SPEECH_GATEWAY_SEND_STALL_SECONDS=601 must be at most 600$"):
        GatewayConfig(send_stall_seconds=601)
    with pytest.raises(SystemExit):
        cli.parse(["gateway", "--help"])
    listed = capsys.readouterr().out.split("SPEECH_GATEWAY_SEND_STALL_SECONDS  ", 1)[1].split("\n  SPEECH_GATEWAY_")[0]
    head, sentence = listed.split("\n", 1)
    assert head == "(default 30, at least 1, at most 600)"
    assert re.findall(r"\bat most \d+", sentence) == [], sentence


def test_the_chart_bounds_each_gateway_value_as_the_gateway_bounds_its_variable() -> None:
    """A value the chart's schema (or its number helper) takes is one the gateway takes from its variable, and the other
    way round: SPEECH_GATEWAY_HEADER_SECONDS took 0.001 and any number of seconds, _MAX_HEADER_BYTES and
    _FORM_PAUSE_SECONDS any size, _SHUTDOWN_SECONDS and _HOLD_SECONDS any time, where the chart said 1-600, at most
    524288, 600 and 3600 (deploy/base's manifests, and anyone running the gateway, had no bound)."""
    template = (ROOT / "charts/speech-operator/templates/gateway.yaml").read_text()
    schema = json.loads((ROOT / "charts/speech-operator/values.schema.json").read_text())["properties"]["gateway"]["properties"]
    entries = re.findall(r'- name: (SPEECH_GATEWAY_\w+)\s+value: \{\{ (include "[\w.-]+" \(dict [^)]*?"value" )?\.Values\.gateway\.(\w+)([^}]*)',
                         template)
    assert len(entries) >= 12, entries
    variables = GatewayConfig.variables()
    for name, helper, value, rest in entries:
        code = GatewayConfig.bounds(variables[name])
        assert (schema[value].get("minimum"), schema[value].get("maximum")) == code, (name, value, schema[value], code)
        if helper:  # the chart's number helper checks a --set string against its own copy of the bounds
            said = dict(re.findall(r'"(minimum|maximum)" ([\d.]+)', rest))
            assert (float(said["minimum"]), float(said["maximum"]) if "maximum" in said else None) == code, (name, said, code)


def test_kopf_scans_namespaces_and_crds_only_for_patterns_or_every_namespace() -> None:
    """Named namespaces need no listing (a Role cannot grant it); globs and negations, and -A, keep kopf's scanning."""
    assert cli.named_namespaces_only(["speech"], False) and cli.named_namespaces_only(["a", "b-2"], False)
    for patterns in (["speech-*"], ["a", "b?"], ["!kube-system"], ["a,b"]):
        assert not cli.named_namespaces_only(patterns, False), patterns
    assert not cli.named_namespaces_only([], True)


def test_cli_prints_the_crd(capsys: pytest.CaptureFixture[str]) -> None:
    cli.main(["crd"])
    assert yaml.safe_load(capsys.readouterr().out)["metadata"]["name"] == "speechtotexts.speech-operator.io"


@pytest.mark.parametrize("path", ["deploy/base/rbac.yaml", "crds/kopf-peering.yaml"])
def test_static_manifests_validate(path: str) -> None:
    docs = [d for d in yaml.safe_load_all((ROOT / path).read_text()) if d]
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, kubernetes_validate.utils.latest_version(), strict=True)


def test_rbac_grants_the_operator_and_the_gateway_what_each_uses_and_nothing_more() -> None:
    """Two ClusterRoles: the operator's, and the gateway's (it reads SpeechToTexts, and patches their status.demand).

    This is the "nothing more" half, what the code is believed to need, by hand. The other half is not by hand:
    every request the operator, the gateway and the cleanup hook send to a test's kmock is judged by these rules
    when the test ends (tests/conftest.py, tests/rbac.py), and a run lists the grants below that no request used."""
    roles = {d["metadata"]["name"]: d for d in yaml.safe_load_all((ROOT / "deploy/base/rbac.yaml").read_text()) if d}
    assert sorted(roles) == ["speech-gateway", "speech-operator"]
    assert {r["kind"] for r in roles.values()} == {"ClusterRole"}
    gateway = {(g, r, v) for rule in roles["speech-gateway"]["rules"] for g in rule["apiGroups"]
               for r in rule["resources"] for v in rule["verbs"]}
    assert gateway == {*(("speech-operator.io", "speechtotexts", v) for v in ("list", "watch")),  # never one alone (c95ecb2)
                       ("speech-operator.io", "speechtotexts/status", "patch")}  # status.demand: wake a locale at zero
    role = roles["speech-operator"]
    granted = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"]
               for r in rule["resources"] for v in rule["verbs"]}
    needed = {
        # kopf lists, watches and patches (finalizer, annotations); reconcile reads it afresh
        *(("speech-operator.io", "speechtotexts", v) for v in ("get", "list", "watch", "patch")),
        ("speech-operator.io", "speechtotexts/status", "patch"),  # server-side apply of the status
        # children's blockOwnerDeletion: true, where OwnerReferencesPermissionEnforcement admits (OpenShift)
        ("speech-operator.io", "speechtotexts/finalizers", "update"),
        ("", "secrets", "get"), ("", "configmaps", "get"), ("", "persistentvolumeclaims", "get"),  # missing ones set Degraded
        ("", "events", "create"),
        ("", "pods", "list"), ("", "pods", "patch"),  # autoscaling: each pod's sessions, its deletion cost
        # kopf peering (observer, keep-alive) and the operator's check that the object exists
        *(("kopf.dev", r, v) for r in ("clusterkopfpeerings", "kopfpeerings") for v in ("get", "list", "watch", "patch")),
        ("apiextensions.k8s.io", "customresourcedefinitions", "list"), ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
        ("", "namespaces", "list"), ("", "namespaces", "watch"),
        # HPAs pointed at a SpeechToText's Deployment (speech_operator.foreign_autoscalers): listed, then watched
        ("autoscaling", "horizontalpodautoscalers", "list"), ("autoscaling", "horizontalpodautoscalers", "watch"),
    }
    for api_version, plural, _ in builders.OWNED_KINDS:
        group = api_version.rpartition("/")[0]
        # server-side apply is a patch, and a create when the child is missing; get to compare,
        # delete with the SpeechToText or when no longer built
        needed |= {(group, plural, v) for v in ("get", "create", "patch", "delete")}
    for group, plural in [("apps", "deployments"), ("", "services"), ("policy", "poddisruptionbudgets")]:  # kopf watches them (handlers.child_changed)
        needed |= {(group, plural, "list"), (group, plural, "watch")}
    assert granted == needed, (sorted(granted - needed), sorted(needed - granted))
    assert not any(r == "secrets" and v in {"list", "watch"} for _, r, v in granted)  # get only


def test_operator_never_imports_vosk() -> None:
    """The operator extra has no Vosk: importing every operator module must not pull it in."""
    import subprocess
    import sys
    code = ("import sys, speech_operator.cli, speech_operator.handlers, speech_operator.crd; "
            "sys.exit('vosk' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_every_operator_module_needs_only_the_operator_extra() -> None:
    """The operator image installs the operator extra only: with the recognizer extra's packages made
    unimportable, every module of speech_operator (the gateway's and the autoscaler's too) imports,
    and so do the recognizer modules they use (contract, serving, errors, models)."""
    import pkgutil
    import subprocess
    import sys
    import tomllib

    import speech_operator
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    only_recognizer = {d.split("[")[0].split(">")[0].split("=")[0].strip().replace("-", "_").lower()
                       for d in extras["recognizer"]} - {d.split("[")[0].split(">")[0].split("=")[0].strip().replace("-", "_").lower()
                                                         for d in extras["operator"]}
    blocked = sorted(only_recognizer | {"soundfile", "multipart", "soxr", "uvloop", "httptools"})
    modules = sorted(f"speech_operator.{m.name}" for m in pkgutil.iter_modules(speech_operator.__path__) if m.name != "__main__")
    assert {"speech_operator.gateway", "speech_operator.gateway_wake", "speech_operator.autoscaler"} <= set(modules)
    code = (
        "import importlib, importlib.abc, sys\n"
        f"BLOCKED = {blocked!r}\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in BLOCKED:\n"
        "            raise ModuleNotFoundError(f'{name} is not in the operator image')\n"
        "sys.meta_path.insert(0, Block())\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module(m)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "vosk" in blocked and "numpy" in blocked and "uvicorn" in blocked


def test_policy_images() -> None:
    from speech_operator.policy import image_allowed
    allowed = ("ghcr.io/speech-operator/speech-recognizer", "registry.example/speech/")
    assert image_allowed("ghcr.io/speech-operator/speech-recognizer", allowed)
    assert image_allowed("registry.example/speech/recognizer-ko", allowed)
    for refused in ("ghcr.io/speech-operator/speech-recognizer-evil", "ghcr.io/speech-operator/speech-recognizer:x",
                    "registry.example/speechless", "registry.example/other/x", "docker.io/library/python"):
        assert not image_allowed(refused, allowed), refused


def test_policy_host_paths() -> None:
    from speech_operator.policy import host_path_allowed
    allowed = ("/srv/speech", "/mnt/models/")
    for ok in ("/srv/speech", "/srv/speech/", "/srv/speech/license", "//srv//speech/x", "/mnt/models", "/mnt/models/ko"):
        assert host_path_allowed(ok, allowed), ok
    for refused in ("/srv/speechx", "/srv", "/srv/speech/../../etc", "/mnt", "srv/speech", "/"):
        assert not host_path_allowed(refused, allowed), refused
    assert not host_path_allowed("/srv/speech", ())


def test_policy_violations_say_why() -> None:
    from speech_operator.policy import violations
    config = OperatorConfig(image="ghcr.io/x/recognizer", allowed_host_paths=("/srv/speech",))
    spec = api.SpeechToTextSpec.model_validate({
        "locale": "en-US", "eula": "accept", "image": "evil.example/x",
        "license": {"hostPath": {"path": "/srv/speech/license"}}, "output": {"hostPath": {"path": "/home/x"}}})
    found = violations(spec, config)
    assert len(found) == 2
    assert found[0].startswith('image "evil.example/x" is not an allowed repository (allowed: ghcr.io/x/recognizer;')
    assert found[1].startswith('output hostPath "/home/x" is not under an allowed prefix (allowed: /srv/speech;')
    assert violations(api.SpeechToTextSpec(locale="en-US", eula="accept"), config) == []


def test_only_a_priority_class_the_policy_allows() -> None:
    """A class high enough would let one team's recognizers preempt other teams' pods: none unless listed."""
    from speech_operator.policy import violations
    spec = api.SpeechToTextSpec(locale="en-US", eula="accept", priorityClassName="speech-realtime")
    assert violations(spec, OperatorConfig()) == [
        'priorityClassName "speech-realtime" is not an allowed priority class (allowed: none; '
        "the operator's SPEECH_OPERATOR_ALLOWED_PRIORITY_CLASSES)"]
    assert violations(spec, OperatorConfig(allowed_priority_classes=("speech-realtime", "batch"))) == []
    assert violations(spec.model_copy(update={"priorityClassName": "system-cluster-critical"}),
                      OperatorConfig(allowed_priority_classes=("speech-realtime",)))[0].startswith(
        'priorityClassName "system-cluster-critical" is not an allowed priority class (allowed: speech-realtime;')


def test_policy_config_from_env() -> None:
    config = OperatorConfig.from_env({"SPEECH_OPERATOR_IMAGE": "r/x", "SPEECH_OPERATOR_ALLOWED_IMAGES": "a/b, c/ d/e",
                                      "SPEECH_OPERATOR_ALLOWED_HOST_PATHS": "/srv/a,/mnt/b",
                                      "SPEECH_OPERATOR_ALLOWED_PRIORITY_CLASSES": "speech-realtime, batch"})
    assert config.allowed_image_repositories == ("a/b", "c/", "d/e")
    assert config.allowed_host_paths == ("/srv/a", "/mnt/b")
    assert config.allowed_priority_classes == ("speech-realtime", "batch")
    default = OperatorConfig.from_env({"SPEECH_OPERATOR_IMAGE": "r/x", "SPEECH_OPERATOR_VERSION": "2"})
    assert default.allowed_image_repositories == ("r/x",) and default.allowed_host_paths == () == default.allowed_priority_classes
    assert default.trusted_image == "r/x:2"


def test_kopf_pause_messages_become_warnings_that_say_what_to_do() -> None:
    """kopf logs a pause in favour of a higher-ranked peer at INFO; the operator's filter on kopf's
    peering logger raises it to WARNING with the reason and the way out."""
    import logging

    from speech_operator import peering
    records: list[logging.LogRecord] = []
    kopf_logger = logging.getLogger("kopf._core.engines.peering")
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    explainer = peering.PauseExplainer("speech-operator", 60)
    kopf_logger.addHandler(handler)
    level = kopf_logger.level
    kopf_logger.setLevel(logging.INFO)  # as kopf.configure() sets it for the CLI
    explainer.install()
    try:
        kopf_logger.info("Pausing operations in favour of %s.", "[<Peer other: priority=9>]")
        kopf_logger.info("Keep-alive in 'speech-operator' in 'speech': ok.")
    finally:
        kopf_logger.removeFilter(explainer)
        kopf_logger.removeHandler(handler)
        kopf_logger.setLevel(level)
    paused, other = records
    assert paused.levelno == logging.WARNING and other.levelno == logging.INFO
    assert paused.getMessage().startswith("watching is paused: another replica under peering 'speech-operator'")
    assert "without --peering" in paused.getMessage() and "<Peer other: priority=9>" in paused.getMessage()


def observed(body: dict[str, Any], config: OperatorConfig) -> reconcile.Observed:
    """What a clean reconcile of ``body`` keeps (no foreign autoscaler, a current CRD, no Deployment yet)."""
    stt = api.SpeechToText.model_validate(body)
    return reconcile.Observed(body, stt, builders.children(stt, config), None, (), None, reconcile.seen(None))


async def test_a_look_at_a_childs_change_leaves_the_installed_crds_change_to_its_daemon() -> None:
    """A child's change looked at (:func:`reconcile.follow`, as its event or a status refresh does) shows nothing of
    the installed CRD, and notes nothing of it: the note goes with the SpeechToText's read alone
    (:func:`reconcile.read_noted`), so the daemon's wait for the CRD's change (:meth:`InstalledCRD.changed_for`,
    handlers.follow_crd) still ends. Before, the look noted the CRD's generation as shown: a child's event right after
    the CRD changed took that wake, and when the reconcile the event called for failed (a 503), the status did not say
    what the CRD lacks until the SpeechToText's next event."""
    config = OperatorConfig(image="r/x", version="2")
    runtime = reconcile.Runtime(config=config)
    key = ("speech", "en-us")
    last = runtime.observed[key] = observed(copy.deepcopy(AUTOSCALED), config)
    assert runtime.crd.problem_for(key) is None  # its last reconcile's note (reconcile.read_noted): a current CRD
    runtime.crd.see(older())  # the watch sees an older CRD applied
    deployment = fingerprinted(next(c for c in last.children if c["kind"] == "Deployment"))
    assert reconcile.follow(runtime, *key, "Deployment", deployment) is reconcile.Follow.RECONCILE
    await asyncio.wait_for(runtime.crd.changed_for(key), 1)


AUTOSCALED: dict[str, Any] = {
    "apiVersion": api.API_VERSION, "kind": api.KIND,
    "metadata": {"name": "en-us", "namespace": "speech", "uid": "u", "generation": 3},
    "spec": {"locale": "en-US", "eula": "accept", "replicas": 1, "autoscaling": {"minReplicas": 1, "maxReplicas": 4}},
    "status": {"observedGeneration": 3, "autoscaling": {"replicas": 2, "sessions": 3}}}


def test_a_speechtotext_read_again_is_its_status_alone_only_while_it_makes_the_same_children() -> None:
    """A new CRD's defaults and pruning apply as a SpeechToText is read, with no new generation: read again after the
    CRD changed, it is a whole reconcile when it makes other children, a new status only when it makes the same."""
    config = OperatorConfig(image="r/x", version="2")
    last = observed(copy.deepcopy(AUTOSCALED), config)
    assert reconcile.unchanged_by(config, last, copy.deepcopy(AUTOSCALED))
    defaulted = copy.deepcopy(AUTOSCALED)
    defaulted["spec"]["nodeSelector"] = {"pool": "speech"}  # a default the new CRD gives
    assert not reconcile.unchanged_by(config, last, defaulted)
    assert not reconcile.unchanged_by(config, last, {**AUTOSCALED, "metadata": {**AUTOSCALED["metadata"], "generation": 4}})
    assert not reconcile.unchanged_by(config, last, {**AUTOSCALED, "spec": {**AUTOSCALED["spec"], "locale": "xx"}})
    # the event of the operator's own status write may come late: the replicas it decided are what is compared
    assert reconcile.unchanged_by(config, last, {**AUTOSCALED, "status": {}})


def test_an_autoscaler_decision_is_the_status_alone_only_while_it_changes_no_child() -> None:
    """What the autoscaler saw changed (the sessions), not the replicas: its status alone, the rest as last written. A
    change of replicas, a status written since the one decided over, a foreign autoscaler, no clean reconcile kept:
    a whole reconcile (None)."""
    config = OperatorConfig(image="r/x", version="2")
    last = observed(copy.deepcopy(AUTOSCALED), config)
    written = [{"observedGeneration": 3, "desiredReplicas": 2, "autoscaling": {"replicas": 2, "sessions": 3}}]
    before = api.AutoscalingStatus(replicas=2, sessions=3)
    seen_more = api.AutoscalingStatus(replicas=2, sessions=4)
    status = reconcile.rescaled(config, last, written, before, seen_more)
    assert status is not None and status.autoscaling == seen_more and status.desiredReplicas == 2
    more = api.AutoscalingStatus(replicas=3, sessions=5, lastDecision=api.ScaleDecision(
        time="2026-01-01T00:00:00.000Z", replicas=3, previous=2, reason="5 sessions"))
    assert reconcile.rescaled(config, last, written, before, more) is None
    assert reconcile.rescaled(config, last, written, before, seen_more.model_copy(update={"replicas": 3})) is None
    assert reconcile.rescaled(config, last, written, api.AutoscalingStatus(replicas=2, sessions=1), seen_more) is None
    assert reconcile.rescaled(config, None, written, before, seen_more) is None
    assert reconcile.rescaled(config, last, [], before, seen_more) is None
    held = dataclasses.replace(last, scalers=(api.ForeignAutoscaler(kind="HorizontalPodAutoscaler", name="web"),))
    assert reconcile.rescaled(config, held, written, before, seen_more) is None
