"""The recognizer pods on OpenShift's default security (restricted-v2), held against its admission as written out in
tests/openshift_scc.py (no OpenShift here: its admission plugin is emulated there, from its documentation and the SCC
it ships). With the operator's default (uid/gid/fsGroup 65532) every pod is refused; with
``SPEECH_OPERATOR_POD_IDENTITY=platform`` every pod it emits is admitted and given the namespace's ids.
tests/operator/test_pods_run.py runs the admitted pods as a kubelet would."""

from __future__ import annotations

import pytest

from speech_operator import api, builders
from speech_operator.config import OperatorConfig
from tests import openshift_scc as scc
from tests.example_pods import EXAMPLES, docs, pod_spec, stt_of
from tests.pod_security import violations

pytestmark = pytest.mark.unit  # no model, server, operator or browser: the quick run (README, Tests)

FIXED = OperatorConfig()
PLATFORM = OperatorConfig(pod_identity="platform")
NAMESPACE = scc.Namespace(uid_range="1000680000/10000", supplemental_groups="1000680000/10000")
META = {"name": "en-us", "namespace": "speech", "uid": "u-1"}
CLAIMS = {"model": {"download": False, "volume": {"persistentVolumeClaim": {"claimName": "models"}}},
          "license": {"persistentVolumeClaim": {"claimName": "license"}}}


def _spec(spec: dict) -> api.SpeechToText:
    return api.SpeechToText.model_validate({"metadata": META, "spec": {"locale": "en-US", "eula": "accept", **spec}})


#: Every kind of SpeechToText: each of deploy/examples, and what tests/example_pods.py varies (the chown step on and
#: off, a download that trusts a ConfigMap's CA, claims for every volume).
KINDS = {f"{path.stem}:{doc['metadata']['name']}": stt_of(doc)
         for path in EXAMPLES for doc in docs(path) if doc["kind"] == api.KIND}
KINDS.update({
    "claims, chownVolumes": _spec({**CLAIMS, "output": {"persistentVolumeClaim": {"claimName": "out"}}}),
    "claims, chownVolumes false": _spec({**CLAIMS, "chownVolumes": False}),
    "ca bundle": _spec({"model": {"caBundle": {"configMap": {"name": "trusted-ca", "key": "ca-bundle.crt"}}}}),
})
assert len(KINDS) > 8 and any(builders.needs_chown(stt.spec) for stt in KINDS.values())


def test_the_emulation_refuses_what_restricted_v2_refuses() -> None:
    """Each rule of restricted-v2 written out refuses what it should, in the plugin's words, all at once."""
    pod = {"hostNetwork": True, "securityContext": {"fsGroup": 65532, "runAsUser": 1000680001},
           "volumes": [{"name": "h", "hostPath": {"path": "/srv"}}, {"name": "c", "persistentVolumeClaim": {"claimName": "c"}}],
           "containers": [{"name": "a", "securityContext": {"runAsUser": 0, "privileged": True, "allowPrivilegeEscalation": True,
                                                            "capabilities": {"add": ["CHOWN", "NET_BIND_SERVICE"]}},
                           "ports": [{"containerPort": 80, "hostPort": 80}]}]}
    with pytest.raises(scc.Refused) as refused:
        scc.admit(pod, NAMESPACE)
    assert refused.value.reasons == [
        "spec.securityContext.hostNetwork: Invalid value: true: hostNetwork is not allowed to be used",
        'spec.volumes[0]: Invalid value: "hostPath": hostPath volumes are not allowed to be used',
        "fsGroup: Invalid value: []int64{65532}: 65532 is not an allowed group",
        "spec.containers[0].securityContext.privileged: Invalid value: true: Privileged containers are not allowed",
        "spec.containers[0].ports: Invalid value: host ports are not allowed to be used",
        "spec.containers[0].securityContext.allowPrivilegeEscalation: Invalid value: true: Allowing privilege escalation for containers is not allowed",
        'spec.containers[0].securityContext.capabilities.add: Invalid value: "CHOWN": capability may not be added',
        "spec.containers[0].securityContext.runAsUser: Invalid value: 0: must be in the ranges: [1000680000, 1000689999]"]
    assert str(refused.value).startswith('unable to validate against any security context constraint: [provider "restricted-v2": ')


def test_the_emulation_assigns_what_restricted_v2_assigns() -> None:
    """A pod that asks for no ids gets the range's first uid on each container, the groups' first as fsGroup, the
    namespace's SELinux level, drop ALL and no privilege escalation; it runs with gid 0. Ids in range are kept."""
    pod = {"containers": [{"name": "a"}, {"name": "b", "securityContext": {"runAsUser": 1000680007}}]}
    admitted = scc.admit(pod, NAMESPACE)
    assert admitted["securityContext"] == {"fsGroup": 1000680000, "seLinuxOptions": {"level": "s0:c26,c15"},
                                           "seccompProfile": {"type": "RuntimeDefault"}}
    assert admitted["containers"][0]["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                                                            "runAsUser": 1000680000}
    assert scc.identity(admitted, "a") == (1000680000, 0, [0, 1000680000])
    assert scc.identity(admitted, "b") == (1000680007, 0, [0, 1000680000])
    assert pod == {"containers": [{"name": "a"}, {"name": "b", "securityContext": {"runAsUser": 1000680007}}]}, "not changed"


@pytest.mark.parametrize("kind", list(KINDS))
def test_with_fixed_ids_restricted_v2_refuses_every_pod(kind: str) -> None:
    """The operator's default: 65532 is in no namespace's range, so OpenShift creates no recognizer pod at all (the
    SpeechToText turns Degraded, PodsNotCreated, with these words); with the chown step, root and its capabilities too."""
    spec = pod_spec(KINDS[kind], FIXED)
    with pytest.raises(scc.Refused) as refused:
        scc.admit(spec, NAMESPACE)
    assert "fsGroup: Invalid value: []int64{65532}: 65532 is not an allowed group" in refused.value.reasons
    assert "spec.containers[0].securityContext.runAsUser: Invalid value: 65532: must be in the ranges: [1000680000, 1000689999]" in refused.value.reasons
    if builders.needs_chown(KINDS[kind].spec):
        assert "spec.initContainers[0].securityContext.runAsUser: Invalid value: 0: must be in the ranges: [1000680000, 1000689999]" in refused.value.reasons


@pytest.mark.parametrize("kind", list(KINDS))
def test_with_platform_ids_restricted_v2_admits_every_pod(kind: str) -> None:
    """``SPEECH_OPERATOR_POD_IDENTITY=platform``: the pod asks for no uid, gid or fsGroup and runs nothing as root (no
    chown step), keeps the rest of the restricted profile, and is admitted as it is but for the ids assigned: every
    container as the range's first uid with gid 0, the fsGroup the groups' first."""
    stt = KINDS[kind]
    spec = pod_spec(stt, PLATFORM)
    every = spec.get("initContainers", []) + spec["containers"]
    assert "chown" not in [c["name"] for c in every]
    assert not {"runAsUser", "runAsGroup", "fsGroup"} & set(spec["securityContext"])
    for c in every:
        assert c["securityContext"] == {"runAsNonRoot": True, "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
                                        "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}
    assert violations(spec) == [], "the Pod Security Standards' restricted profile holds too"
    admitted = scc.admit(spec, NAMESPACE)
    for c in every:
        assert scc.identity(admitted, c["name"]) == (1000680000, 0, [0, 1000680000]), c["name"]
    assert admitted["containers"][0]["securityContext"] == {**spec["containers"][0]["securityContext"], "runAsUser": 1000680000}
    assert {k: v for k, v in admitted.items() if k not in ("securityContext", "initContainers", "containers")} == \
        {k: v for k, v in spec.items() if k not in ("securityContext", "initContainers", "containers")}
    # what differs from the default is the ids and the chown step alone
    fixed = pod_spec(stt, FIXED)
    fixed_inits = [c for c in fixed.get("initContainers", []) if c["name"] != "chown"]
    assert [c["name"] for c in fixed_inits] == [c["name"] for c in spec.get("initContainers", [])]
    for mine, theirs in zip(spec.get("initContainers", []) + spec["containers"], fixed_inits + fixed["containers"], strict=True):
        assert {k: v for k, v in mine.items() if k != "securityContext"} == {k: v for k, v in theirs.items() if k != "securityContext"}


def test_a_hostpath_is_refused_whatever_the_ids() -> None:
    """restricted-v2 allows no hostPath volume: the setting cannot help a SpeechToText that mounts one (the README says
    to use a PVC); OpenShift's words reach its status as PodsNotCreated."""
    stt = _spec({"license": {"hostPath": {"path": "/srv/license"}}})
    with pytest.raises(scc.Refused) as refused:
        scc.admit(pod_spec(stt, PLATFORM), NAMESPACE)
    assert refused.value.reasons == ['spec.volumes[2]: Invalid value: "hostPath": hostPath volumes are not allowed to be used']


def test_pod_identity_from_env() -> None:
    assert OperatorConfig.from_env({}).pod_identity == "fixed" and not OperatorConfig.from_env({}).platform_identity
    assert OperatorConfig.from_env({"SPEECH_OPERATOR_POD_IDENTITY": " Platform "}).platform_identity
    assert OperatorConfig.from_env({"SPEECH_OPERATOR_POD_IDENTITY": ""}).pod_identity == "fixed"
    with pytest.raises(ValueError, match=r"^SPEECH_OPERATOR_POD_IDENTITY='openshift' is not one of fixed, platform$"):
        OperatorConfig.from_env({"SPEECH_OPERATOR_POD_IDENTITY": "openshift"})


def test_chown_volumes_is_not_applied_and_the_status_says_so() -> None:
    """With the ids left to the platform, ``spec.chownVolumes`` (true by default) is not applied rather than refused: the
    step would run as root (restricted-v2 refuses it) and could not know the uid the platform assigns, while OpenShift
    gives a PVC the fsGroup it assigns where its storage supports fsGroup; a SpeechToText that worked elsewhere runs
    unchanged. Its status says which volumes and why (the Degraded condition, False, AsExpected)."""
    from speech_operator import conditions

    stt = KINDS["claims, chownVolumes"]
    note = builders.chown_not_applied(stt.spec, PLATFORM)
    assert note is not None and note.startswith("spec.chownVolumes is not applied to models, license, output: the platform "
                                                "assigns the pods' uid and fsGroup (the operator's SPEECH_OPERATOR_POD_IDENTITY=platform)")
    status = conditions.observe(stt, None, [], "2026-01-01T00:00:00Z", not_applied=note)
    degraded = next(c for c in status.conditions if c.type == conditions.DEGRADED)
    assert (degraded.status, degraded.reason) == ("False", "AsExpected") and degraded.message.endswith(note)
    assert builders.chown_not_applied(stt.spec, FIXED) is None, "with fixed ids the chown step runs"
    assert builders.chown_not_applied(KINDS["claims, chownVolumes false"].spec, PLATFORM) is None, "nothing asked for"
    assert builders.chown_not_applied(_spec({}).spec, PLATFORM) is None, "no volume to give"


def test_openshift_refusing_fixed_ids_is_said_with_what_to_set() -> None:
    """OpenShift's refusal of the pods with fixed ids reaches the status (PodsNotCreated) with the setting that makes
    them admissible; a refusal of pods that ask for no ids (a hostPath) gets no such advice, but the PVC to use."""
    from speech_operator import conditions

    for config, stt in ((FIXED, KINDS["single-locale:en-us"]), (PLATFORM, _spec({"license": {"hostPath": {"path": "/srv/l"}}}))):
        try:
            scc.admit(pod_spec(stt, config), NAMESPACE)
        except scc.Refused as refused:
            words = f'pods "en-us-6d4cf56db6-" is forbidden: {refused}'
        deployment = {"metadata": {"generation": 1}, "spec": {"template": {"spec": pod_spec(stt, config)}},
                      "status": {"observedGeneration": 1, "conditions": [
                          {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": words}]}}
        reason, message = conditions.deployment_trouble(deployment, stt)  # type: ignore[misc]
        assert reason == conditions.PODS_NOT_CREATED and words in message
        assert ("SPEECH_OPERATOR_POD_IDENTITY=platform" in message) is (config is FIXED), message
        assert message.endswith("; hostPath volumes are refused there whoever owns them: use a PersistentVolumeClaim") \
            is (config is PLATFORM), message
