"""The CRD bounds the spec's free-form maps and lists (speech_operator/api.py), so that kopf's record of any spec the API
server takes (speech_operator.record) fits in the 256 KiB an object's annotations may take.

The CRD's schema (crds/) is read as the API server reads it: the largest spec it admits is measured from its bounds,
and specs one past a bound are refused by tests/crd_schema.py's judge (jsonschema and the CEL rules, evaluated); the
models refuse the same (the operator's reading of a spec a CRD older than it let through).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pydantic
import pytest

from speech_operator import api, record

from .crd_schema import as_created, crd_schema

pytestmark = pytest.mark.unit  # no model, server, operator or browser: the quick run (README, Tests)

VALID: dict[str, Any] = {"apiVersion": "speech-operator.io/v1alpha1", "kind": "SpeechToText",
                         "metadata": {"name": "en-us", "namespace": "speech"}, "spec": {"locale": "en-US", "eula": "accept"}}
#: The nodes kept as the pods take them (core/v1 types whose fields grow with Kubernetes): bounded in count only.
AS_THE_PODS_TAKE_THEM = [".spec.tolerations[]", ".spec.affinity"]


def _key_max(schema: dict[str, Any]) -> int | None:
    """The longest key a map's CEL rules let through: ``size(k) <= N``, or the longest of the keys ``k in [...]``."""
    for rule in schema.get("x-kubernetes-validations") or []:
        if m := re.fullmatch(r"self\.all\(k, size\(k\) <= (\d+)\)", rule["rule"]):
            return int(m.group(1))
        if m := re.fullmatch(r"self\.all\(k, k in (\[.*\])\)", rule["rule"]):
            return max(len(k) for k in json.loads(m.group(1).replace("'", '"')))
    return None


def largest(schema: dict[str, Any], where: str = "") -> tuple[int, list[str]]:
    """The most bytes of compact JSON a value of ``schema`` may take in ASCII (each character one byte, no escapes),
    and the nodes with no bound (a string with no maxLength, a list with no maxItems, a map with no maxProperties or
    no bound on its keys, a preserve-unknown-fields node), which count as nothing."""
    if "enum" in schema:
        return max(len(json.dumps(v)) for v in schema["enum"]), []
    kind = schema.get("type")
    if schema.get("x-kubernetes-int-or-string") or kind == "string":
        if schema.get("format") == "date-time":
            return len('"2026-01-01T00:00:00.000000000+00:00"'), []
        return (schema["maxLength"] + 2, []) if "maxLength" in schema else (0, [where])
    if kind in ("integer", "number", "boolean"):
        return len(str(-2**63)), []
    if kind == "array":
        size, free = largest(schema["items"], f"{where}[]")
        return (2 + schema["maxItems"] * (size + 1), free) if "maxItems" in schema else (0, [where, *free])
    if kind == "object" and "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
        total, free = 2, []
        for name, sub in schema["properties"].items():
            size, more = largest(sub, f"{where}.{name}")
            total, free = total + len(json.dumps(name)) + 2 + size, free + more
        return total, free
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        size, free = largest(schema["additionalProperties"], f"{where}{{}}")
        count, key = schema.get("maxProperties"), _key_max(schema)
        return (2 + count * (key + 4 + size), free) if count is not None and key is not None else (0, [where, *free])
    return 0, [where]


def test_the_largest_spec_the_crd_admits_leaves_room_in_the_annotations_beside_kopfs_record() -> None:
    """Every node of the spec is bounded but those kept as the pods take them, and a spec at every bound at once takes
    about 189 KiB: kopf's record of it fits in the 256 KiB of an object's annotations with 67 KiB to spare (kubectl
    apply's copy of a spec that large does not fit beside it: that rare spec is Degraded, SpecTooLarge, and changes
    nothing: tests/operator/test_spec_bounds.py). Before, nodeSelector, podAnnotations, service.annotations, the
    spread constraints' selectors, the labels' keys, the quantities and sha256 had no bound (the spec none)."""
    size, free = largest(crd_schema()["properties"]["spec"], ".spec")
    assert free == AS_THE_PODS_TAKE_THEM, free
    assert 184 * 1024 < size < 192 * 1024, size  # each key of spec.settings takes about 4 KiB of it (Http:CorsOrigins)
    assert size + 64 * 1024 < record.ANNOTATIONS_MAX_BYTES, "room for the object's own annotations beside the record"


def _spec(**fields: Any) -> dict[str, Any]:
    return {**VALID, "spec": {**VALID["spec"], **fields}}


def _key(i: int, length: int) -> str:
    """A valid key of ``length`` characters: a name of at most 63 and a DNS prefix (at most 253 in a valid key)."""
    name = f"k{i:03d}".ljust(min(63, length - 2), "k")
    return f"{'p' * (length - len(name) - 1)}/{name}"


def _annotations(count: int, value: int = 1, key: int = 20) -> dict[str, str]:
    return {_key(i, key): "v" * value for i in range(count)}


def _selector(**fields: Any) -> list[dict[str, Any]]:
    return [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
             "labelSelector": fields}]


def _expressions(count: int, values: int = 1) -> list[dict[str, Any]]:
    return [{"key": f"k{i}", "operator": "In", "values": [f"v{j}" for j in range(values)]} for i in range(count)]


def _tolerations(count: int, **extra: Any) -> list[dict[str, Any]]:
    return [{"key": f"k{i}", "operator": "Exists", "effect": "NoSchedule", **extra} for i in range(count)]


#: (field, a spec at its bound, one past it, what the API server says of the latter)
BOUNDS = [
    ("podAnnotations: entries", _spec(podAnnotations=_annotations(api.MAX_ANNOTATIONS)),
     _spec(podAnnotations=_annotations(api.MAX_ANNOTATIONS + 1)), "spec.podAnnotations: .* has too many properties"),
    ("podAnnotations: a value", _spec(podAnnotations=_annotations(1, api.ANNOTATION_VALUE_MAX)),
     _spec(podAnnotations=_annotations(1, api.ANNOTATION_VALUE_MAX + 1)), r"spec.podAnnotations.p/k000.*: .* is too long"),
    ("podAnnotations: a key", _spec(podAnnotations=_annotations(1, key=api.KEY_MAX)),
     _spec(podAnnotations=_annotations(1, key=api.KEY_MAX + 1)), r"\.spec\.podAnnotations: each key at most 317 characters"),
    ("service.annotations", _spec(service={"annotations": _annotations(api.MAX_SERVICE_ANNOTATIONS)}),
     _spec(service={"annotations": _annotations(api.MAX_SERVICE_ANNOTATIONS + 1)}), "spec.service.annotations: .* has too many properties"),
    ("nodeSelector: entries", _spec(nodeSelector=_annotations(api.MAX_NODE_SELECTOR)),
     _spec(nodeSelector=_annotations(api.MAX_NODE_SELECTOR + 1)), "spec.nodeSelector: .* has too many properties"),
    ("nodeSelector: a key", _spec(nodeSelector=_annotations(1, key=api.KEY_MAX)),
     _spec(nodeSelector=_annotations(1, key=api.KEY_MAX + 1)), r"\.spec\.nodeSelector: each key at most 317 characters"),
    ("nodeSelector: a value", _spec(nodeSelector=_annotations(1, api.LABEL_VALUE_MAX)),
     _spec(nodeSelector=_annotations(1, api.LABEL_VALUE_MAX + 1)), "spec.nodeSelector.p/k000.*: .* is too long"),
    ("labels: a key", _spec(labels=_annotations(1, key=api.KEY_MAX)),
     _spec(labels=_annotations(1, key=api.KEY_MAX + 1)), r"\.spec\.labels: each key at most 317 characters"),
    ("tolerations", _spec(tolerations=_tolerations(api.MAX_TOLERATIONS)),
     _spec(tolerations=_tolerations(api.MAX_TOLERATIONS + 1)), "spec.tolerations: .* is too long"),
    ("a toleration's fields", _spec(tolerations=_tolerations(1, value="", tolerationSeconds=60)),
     _spec(tolerations=_tolerations(1, value="", tolerationSeconds=60, extra=1)), "spec.tolerations.0: .* has too many properties"),
    ("affinity's fields", _spec(affinity={"nodeAffinity": {}, "podAffinity": {}, "podAntiAffinity": {}}),
     _spec(affinity={"nodeAffinity": {}, "podAffinity": {}, "podAntiAffinity": {}, "other": {}}),
     "spec.affinity: .* has too many properties"),
    ("topologySpreadConstraints", _spec(topologySpreadConstraints=[
        {"maxSkew": 1, "topologyKey": f"example.com/t{i}", "whenUnsatisfiable": "ScheduleAnyway"}
        for i in range(api.MAX_SPREAD_CONSTRAINTS)]), _spec(topologySpreadConstraints=[
            {"maxSkew": 1, "topologyKey": f"example.com/t{i}", "whenUnsatisfiable": "ScheduleAnyway"}
            for i in range(api.MAX_SPREAD_CONSTRAINTS + 1)]), "spec.topologySpreadConstraints: .* is too long"),
    ("a selector's matchLabels", _spec(topologySpreadConstraints=_selector(matchLabels=_annotations(api.MAX_SELECTOR_TERMS))),
     _spec(topologySpreadConstraints=_selector(matchLabels=_annotations(api.MAX_SELECTOR_TERMS + 1))),
     "labelSelector.matchLabels: .* has too many properties"),
    ("a selector's matchExpressions", _spec(topologySpreadConstraints=_selector(
        matchExpressions=_expressions(api.MAX_SELECTOR_TERMS))),
     _spec(topologySpreadConstraints=_selector(matchExpressions=_expressions(api.MAX_SELECTOR_TERMS + 1))),
     "labelSelector.matchExpressions: .* is too long"),
    ("an expression's values", _spec(topologySpreadConstraints=_selector(
        matchExpressions=_expressions(1, api.MAX_SELECTOR_VALUES))),
     _spec(topologySpreadConstraints=_selector(matchExpressions=_expressions(1, api.MAX_SELECTOR_VALUES + 1))),
     "matchExpressions.0.values: .* is too long"),
    ("a quantity", _spec(resources={"requests": {"memory": "1" * 62 + "Mi"}}),
     _spec(resources={"requests": {"memory": "1" * 63 + "Mi"}}),
     "spec.resources.requests.memory: .* is too long"),
]


@pytest.mark.parametrize(("at", "past", "said"), [b[1:] for b in BOUNDS], ids=[b[0] for b in BOUNDS])
def test_a_spec_past_a_bound_is_refused_by_the_crd_and_the_models(at: dict[str, Any], past: dict[str, Any],
                                                                   said: str) -> None:
    """At its bound a spec is taken (by the CRD and by the models); one past it, refused by both, the CRD naming the
    field. Before, every spec past these bounds was taken: nothing bounded them."""
    assert as_created(at) == []
    api.SpeechToText.model_validate(at)
    found = as_created(past)
    assert len(found) == 1 and re.search(said, found[0]), found
    with pytest.raises(pydantic.ValidationError):
        api.SpeechToText.model_validate(past)
