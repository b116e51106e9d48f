"""deploy/examples are accepted by the generated CRD (schema + CEL) and by Kubernetes; bad specs are not."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pydantic
import pytest
import yaml
from stt_schema import ROOT, cel_failures, crd_schema, problems, with_defaults

from speech_operator import api
from tests.crd_schema import as_created

pytestmark = pytest.mark.unit  # no model, server, operator or browser: the quick run (README, Tests)

EXAMPLES = sorted((ROOT / "deploy" / "examples").glob("*.yaml"))
VALID: dict[str, Any] = {
    "apiVersion": api.API_VERSION, "kind": api.KIND,
    "metadata": {"name": "en-us"},
    "spec": {"locale": "en-US", "eula": "accept"},
}


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_the_four_examples_exist() -> None:
    assert {p.name for p in EXAMPLES} >= {
        "single-locale.yaml", "multi-locale.yaml", "disconnected.yaml", "api-key-secret.yaml"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_accepted(path: Path) -> None:
    stts = 0
    for doc in docs(path):
        if doc["kind"] == api.KIND:
            stts += 1
            assert as_created(doc) == []  # nothing pruned, nothing refused
            api.SpeechToText.model_validate(doc)
        else:
            kubernetes_validate.validate(doc, kubernetes_validate.utils.latest_version(), strict=True)
    assert stts >= 1


def test_multi_locale_example_has_different_replicas() -> None:
    stts = [d for d in docs(ROOT / "deploy/examples/multi-locale.yaml") if d["kind"] == api.KIND]
    assert len({d["spec"]["locale"] for d in stts}) >= 2
    assert len({d["spec"].get("replicas", 1) for d in stts}) >= 2


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_a_claim_for_several_replicas_can_be_filled_and_shared(path: Path) -> None:
    """A PVC an example's SpeechToText mounts is one its replicas on several nodes share, and one a user can write
    (the model and license folders are put there by hand): ReadWriteMany. ReadOnlyMany alone fits only a volume
    provisioned already filled; a dynamic one stays Pending where the provisioner has no such mode (EBS, Azure Disk)."""
    claims = {d["metadata"]["name"]: d["spec"]["accessModes"] for d in docs(path) if d["kind"] == "PersistentVolumeClaim"}
    for stt in (d for d in docs(path) if d["kind"] == api.KIND):
        spec = stt["spec"]
        mounted = [v["persistentVolumeClaim"]["claimName"] for v in (spec.get("model", {}).get("volume"), spec.get("license"),
                                                                     spec.get("output")) if v and "persistentVolumeClaim" in v]
        for name in mounted:
            assert "ReadWriteMany" in claims[name], f"{path.name}: PVC {name} is {claims[name]}"


def _with(path: str, value: Any) -> dict[str, Any]:
    """VALID with ``value`` set at the dotted ``path`` (``None`` removes the key)."""
    obj = copy.deepcopy(VALID)
    *parents, leaf = path.split(".")
    node = obj
    for key in parents:
        node = node.setdefault(key, {})
    if value is None:
        node.pop(leaf, None)
    else:
        node[leaf] = value
    return obj


@pytest.mark.parametrize(("case", "said"), [
    (_with("spec.replica", 2), ".spec.replica: pruned"),  # a typo: the API server drops it, silently
    (_with("metadata.label", {"a": "b"}), ".metadata.label: pruned"),  # not a field of ObjectMeta
    (_with("metadata.name", "EN-US"), "metadata.name must be a DNS-1035 label"),  # a CEL rule
], ids=["spec typo", "metadata typo", "CEL rule"])
def test_manifests_are_checked_as_the_api_server_creates_them(case: dict[str, Any], said: str) -> None:
    """What tests/ship's validate_manifests (the chart's renders, deploy/ and this README's `kubectl apply`s) says
    of a SpeechToText: what tests/crd_schema.py says the API server prunes or refuses of it created."""
    from tests.ship.conftest import validate_manifests

    with pytest.raises(AssertionError, match=re.escape(said)):
        validate_manifests([case])


#: A spread constraint the CRD takes.
SPREAD: dict[str, Any] = {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway"}


#: hostPaths that would hand the node to whoever may create a SpeechToText: the CRD refuses them.
DANGEROUS_HOST_PATHS = ("/", "//", "/etc", "/etc/kubernetes/pki", "//etc", "/proc", "/proc/1/root", "/sys",
                        "/dev", "/root", "/boot", "/run/containerd", "/var/run", "/var/run/docker.sock",
                        "/var//run", "/var", "/var/lib", "/var/lib/kubelet/pods", "/var/lib/containerd",
                        "/usr/bin", "/srv/../etc", "/srv/./x", "/..")
SAFE_HOST_PATHS = ("/srv/speech/license", "/var/lib/speech-models", "/mnt/models", "/etcetera", "/srv/..x")


@pytest.mark.parametrize("path", SAFE_HOST_PATHS)
def test_ordinary_host_paths_pass_the_crd(path: str) -> None:
    obj = _with("spec.output", {"hostPath": {"path": path}})
    assert problems(obj) == []
    api.SpeechToText.model_validate(obj)


# Each case is refused by the schema or a CEL rule, and (the same rule, twice) by the models.
INVALID = {
    "no eula": _with("spec.eula", None),
    "eula not accepted": _with("spec.eula", "decline"),
    "replicas -1": _with("spec.replicas", -1),
    "bad locale": _with("spec.locale", "english"),
    "lower-case region": _with("spec.locale", "en-us"),
    "name not a DNS-1035 label": _with("metadata.name", "1-en.us"),
    "billing without key": _with("spec.billing", "https://billing.example.test"),
    "key without billing": _with("spec.apiKeySecretRef", {"name": "k", "key": "apiKey"}),
    "url without sha256": _with("spec.model", {"url": "https://models.example.test/m.zip"}),
    "url with download false": _with("spec.model", {"url": "https://m.example.test/m.zip", "sha256": "a" * 64,
                                                    "download": False}),
    "download false on emptyDir": _with("spec.model", {"download": False, "volume": {"emptyDir": {}}}),
    "caBundle with download false": _with("spec.model", {"download": False, "caBundle": {"configMap": {"name": "corp-ca"}},
                                                         "volume": {"persistentVolumeClaim": {"claimName": "m"}}}),
    "caBundle without a ConfigMap": _with("spec.model", {"caBundle": {}}),
    "caBundle key not a key": _with("spec.model", {"caBundle": {"configMap": {"name": "corp-ca", "key": "ca/crt"}}}),
    "settings: ModelCaFile (model.caBundle sets it)": _with("spec.settings", {"ModelCaFile": "/etc/ssl/corp.pem"}),
    "two volume sources": _with("spec.license", {"emptyDir": {}, "hostPath": {"path": "/srv/license"}}),
    "no volume source": _with("spec.output", {}),
    "nodePort on ClusterIP": _with("spec.service", {"type": "ClusterIP", "nodePort": 30080}),
    "autoscaling min above max": _with("spec.autoscaling", {"minReplicas": 5, "maxReplicas": 2}),
    "autoscaling min above the default max": _with("spec.autoscaling", {"minReplicas": 12}),
    "autoscaling min -1": _with("spec.autoscaling", {"minReplicas": -1}),
    "autoscaling target 0": _with("spec.autoscaling", {"targetSessionsPerReplica": 0}),
    "connections.max 0": _with("spec.connections", {"max": 0}),
    "connections.max above MaxConnections' bound": _with("spec.connections", {"max": 100001}),
    "connections.idleSeconds 0": _with("spec.connections", {"idleSeconds": 0}),
    "connections.idleSeconds above ConnectionIdleSeconds' bound": _with("spec.connections", {"idleSeconds": 86401}),
    "audioIdleSeconds 0": _with("spec.audioIdleSeconds", 0),
    "audioIdleSeconds over an hour": _with("spec.audioIdleSeconds", 3601),
    **{f"hostPath {path}": _with("spec.output", {"hostPath": {"path": path}}) for path in DANGEROUS_HOST_PATHS},
    "settings: a key a field sets": _with("spec.settings", {"Locale": "ko-KR"}),
    "settings: a key the pods' contract fixes": _with("spec.settings", {"Port": "8080"}),
    "settings: an unknown key": _with("spec.settings", {"MaxAudioSecond": "120"}),
    "settings: a value not a string": _with("spec.settings", {"MaxAudioSeconds": 120}),
    "settings: an empty value": _with("spec.settings", {"MaxAudioSeconds": ""}),
    "spread: no topologyKey": _with("spec.topologySpreadConstraints", [{"maxSkew": 1, "whenUnsatisfiable": "ScheduleAnyway"}]),
    "spread: maxSkew 0": _with("spec.topologySpreadConstraints", [{**SPREAD, "maxSkew": 0}]),
    "spread: whenUnsatisfiable unknown": _with("spec.topologySpreadConstraints", [{**SPREAD, "whenUnsatisfiable": "Never"}]),
    "spread: topologyKey not a label key": _with("spec.topologySpreadConstraints", [{**SPREAD, "topologyKey": "zone/"}]),
    "spread: minDomains with ScheduleAnyway": _with("spec.topologySpreadConstraints", [{**SPREAD, "minDomains": 2}]),
    "spread: one topology and policy twice": _with("spec.topologySpreadConstraints", [SPREAD, {**SPREAD, "maxSkew": 2}]),
    "spread: more than 8": _with("spec.topologySpreadConstraints", [{**SPREAD, "topologyKey": f"k{i}"} for i in range(9)]),
    "priorityClassName not a name": _with("spec.priorityClassName", "Real Time"),
    "labels: a key the operator sets": _with("spec.labels", {"app.kubernetes.io/instance": "other"}),
    "labels: a key under the operator's group": _with("spec.labels", {"speech-operator.io/locale": "ko-KR"}),
    "labels: a value too long": _with("spec.labels", {"team": "a" * 64}),
    "labels: a value not a label value": _with("spec.labels", {"team": "speech team"}),
    "labels: more than 32": _with("spec.labels", {f"k{i}": "v" for i in range(33)}),
    "imagePullSecrets: a name not a name": _with("spec.imagePullSecrets", [{"name": "Registry Credentials"}]),
    "imagePullSecrets: no name": _with("spec.imagePullSecrets", [{}]),
    "imagePullSecrets: more than 8": _with("spec.imagePullSecrets", [{"name": f"s{i}"} for i in range(9)]),
}
#: The API server prunes unknown fields, so only the models can refuse these.
MODELS_ONLY = {
    "inline api key": _with("spec.apiKeySecretRef", {"name": "k", "key": "apiKey", "value": "secret"}),
    "connections.maxConnections (the field is max)": _with("spec.connections", {"maxConnections": 10}),
    # the CRD takes any key (a regular expression over keys of any length is past its rules' cost budget); the API
    # server would refuse the children; the models refuse it first (InvalidSpec, nothing changed)
    "labels: a key not a label key": _with("spec.labels", {"cost center": "42"}),
    "labels: a key's name past 63 characters": _with("spec.labels", {"example.com/" + "n" * 64: "42"}),
}
CEL_ONLY = {*(f"hostPath {path}" for path in DANGEROUS_HOST_PATHS), "name not a DNS-1035 label", "billing without key", "key without billing", "url without sha256",
            "url with download false", "download false on emptyDir", "caBundle with download false",
            "settings: ModelCaFile (model.caBundle sets it)", "two volume sources", "no volume source",
            "nodePort on ClusterIP", "autoscaling min above max", "autoscaling min above the default max",
            "settings: a key a field sets", "settings: a key the pods' contract fixes", "settings: an unknown key",
            "spread: minDomains with ScheduleAnyway", "spread: one topology and policy twice",
            "labels: a key the operator sets", "labels: a key under the operator's group"}


@pytest.mark.parametrize("case", INVALID, ids=str)
def test_invalid_spec_is_refused_by_the_crd(case: str) -> None:
    obj = INVALID[case]
    assert problems(obj), f"{case} was accepted"
    schema = crd_schema()
    schema_errors = list(jsonschema.Draft7Validator(schema).iter_errors(with_defaults(schema, obj)))
    # Cross-field cases pass the structural schema: a CEL rule, evaluated for real, refuses them.
    assert bool(schema_errors) == (case not in CEL_ONLY)
    if case in CEL_ONLY:
        assert cel_failures(schema, with_defaults(schema, obj))


@pytest.mark.parametrize("case", {**INVALID, **MODELS_ONLY}, ids=str)
def test_invalid_spec_is_refused_by_the_models(case: str) -> None:
    with pytest.raises(pydantic.ValidationError):
        api.SpeechToText.model_validate({**INVALID, **MODELS_ONLY}[case])


#: Values of spec.settings the CRD takes (a string of the allowed length) and the recognizer would refuse: the models
#: refuse them with the recognizer's own words (the operator then reports InvalidSpec and changes nothing).
REFUSED_SETTING_VALUES = {
    "MaxAudioSeconds": ("abc", "MaxAudioSeconds='abc' is not a number"),
    "Http:MaxHeaderBytes": ("10", "Http:MaxHeaderBytes='10' must be 1024 or more"),
    "Logging:Disk:Format": ("xml", "Logging:Disk:Format='xml': use json"),
}


@pytest.mark.parametrize("key", REFUSED_SETTING_VALUES)
def test_setting_values_are_refused_in_the_recognizers_words(key: str) -> None:
    value, words = REFUSED_SETTING_VALUES[key]
    obj = _with("spec.settings", {key: value})
    assert problems(obj) == []
    with pytest.raises(pydantic.ValidationError, match=re.escape(words)):
        api.SpeechToText.model_validate(obj)
    good = _with("spec.settings", {"MaxAudioSeconds": "120", "Http:MaxHeaderBytes": "32768",
                                   "HTTP_PROXY": "http://proxy.example.test:3128", "Logging:Disk:Format": "json"})
    assert problems(good) == []
    assert api.SpeechToText.model_validate(good).spec.settings["Http:MaxHeaderBytes"] == "32768"


def test_valid_minimal_spec_gets_documented_defaults() -> None:
    assert problems(VALID) == []
    spec = api.SpeechToText.model_validate(VALID).spec
    assert spec.replicas == 1 and spec.model.download and spec.service.port == 5000
    assert spec.resources.requests.cpu == "500m" and spec.resources.limits.memory == "3Gi"


def test_spread_constraints_and_a_priority_class_pass_the_crd() -> None:
    """Both topologies and policies, every field of core/v1 TopologySpreadConstraint; an empty list (no spreading)."""
    given = [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
              "minDomains": 3, "matchLabelKeys": ["pod-template-hash"], "nodeAffinityPolicy": "Ignore",
              "nodeTaintsPolicy": "Honor", "labelSelector": {"matchLabels": {"app.kubernetes.io/instance": "en-us"},
                                                             "matchExpressions": [{"key": "tier", "operator": "Exists"}]}},
             {**SPREAD, "topologyKey": "kubernetes.io/hostname"}, {**SPREAD, "topologyKey": "kubernetes.io/hostname",
                                                                    "whenUnsatisfiable": "DoNotSchedule"}]
    for obj in (_with("spec.topologySpreadConstraints", given), _with("spec.topologySpreadConstraints", []),
                _with("spec.priorityClassName", "speech-realtime")):
        assert problems(obj) == []
        api.SpeechToText.model_validate(obj)
