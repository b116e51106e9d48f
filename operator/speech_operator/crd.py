"""Generate the SpeechToText CustomResourceDefinition from the typed models.

    python -m speech_operator.crd > crds/speechtotexts.speech-operator.io.yaml
    speech-operator crd > crds/speechtotexts.speech-operator.io.yaml

Pydantic's JSON schema is turned into a Kubernetes *structural* schema: references
inlined, ``Optional`` unwrapped, ``int | str`` marked int-or-string, free-form objects
marked preserve-unknown-fields, ``null`` defaults dropped, a string enum bounded by its longest value (maxLength).
"""

from __future__ import annotations

import copy
import sys
from typing import Any

import yaml

from speech_operator import api

_DROP = {"title", "additionalProperties", "$defs"}


def _strip_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_strip_none(v) for v in value]
    return value


def _structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """One pydantic JSON-schema node as a structural-schema node."""
    node = dict(node)
    if "$ref" in node:
        target = copy.deepcopy(defs[node.pop("$ref").rsplit("/", 1)[-1]])
        node = {**target, **node}  # the field's own description/default win
    branches = [b for b in node.pop("anyOf", []) if b.get("type") != "null"]
    if len(branches) == 1:
        node = {**_structural(branches[0], defs), **node}
    elif {b.get("type") for b in branches} == {"integer", "string"}:
        node.update({"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]})
        string = next(b for b in branches if b.get("type") == "string")
        node.update({k: string[k] for k in ("pattern", "maxLength") if k in string})  # checked on strings only
    elif branches:
        raise ValueError(f"no structural form for anyOf {branches}")
    if "const" in node:
        node["enum"] = [node.pop("const")]
    free_form = node.get("type") == "object" and "properties" not in node and node.get("additionalProperties") in (True, None)
    typed_map = node.get("type") == "object" and isinstance(node.get("additionalProperties"), dict)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "properties":
            out[key] = {name: _structural(sub, defs) for name, sub in value.items()}
        elif key == "items":
            out[key] = _structural(value, defs)
        elif key == "default":
            if value is not None:
                out[key] = _strip_none(value)
        else:
            out[key] = value
    if out.get("type") == "string" and out.get("enum") and "maxLength" not in out:
        # The longest value: kube-apiserver before 1.29 takes an enum's size from maxLength only (else 3 MiB),
        # and estimates a CEL rule comparing it by that (tests/test_crd_cost.py).
        out["maxLength"] = max(len(v) for v in out["enum"])
    if typed_map:
        out["additionalProperties"] = _structural(node["additionalProperties"], defs)
    elif free_form:
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def schema_of(model: type[api.BaseModel]) -> dict[str, Any]:
    """The structural openAPIV3Schema of one pydantic model."""
    raw = model.model_json_schema(mode="validation")
    return _structural(raw, raw.get("$defs", {}))


def printer_columns() -> list[dict[str, Any]]:
    """``kubectl get stt`` columns; Sessions (with autoscaling), Endpoint and Reason show with ``-o wide``. Replicas
    is what the operator wants running (with autoscaling the autoscaler's choice, which spec.replicas is not)."""
    return [
        {"name": "Locale", "type": "string", "jsonPath": ".spec.locale"},
        {"name": "Replicas", "type": "integer", "jsonPath": ".status.desiredReplicas"},
        {"name": "Ready", "type": "integer", "jsonPath": ".status.readyReplicas"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        {"name": "Sessions", "type": "integer", "jsonPath": ".status.autoscaling.sessions", "priority": 1},
        {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint", "priority": 1},
        {"name": "Reason", "type": "string", "priority": 1,
         "jsonPath": '.status.conditions[?(@.type=="Ready")].reason'},
    ]


def custom_resource_definition() -> dict[str, Any]:
    """The whole SpeechToText CRD as a dict."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{api.PLURAL}.{api.GROUP}",
            "labels": {"app.kubernetes.io/part-of": "speech-operator"},
        },
        "spec": {
            "group": api.GROUP,
            "names": {
                "kind": api.KIND,
                "listKind": f"{api.KIND}List",
                "plural": api.PLURAL,
                "singular": api.SINGULAR,
                "shortNames": list(api.SHORT_NAMES),
                "categories": ["speech"],
            },
            "scope": "Namespaced",
            "versions": [{
                "name": api.VERSION,
                "served": True,
                "storage": True,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": (api.SpeechToText.__doc__ or "").strip(),
                    "required": ["spec"],
                    "x-kubernetes-validations": [api.NAME_RULE],
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "metadata": {"type": "object"},
                        "spec": schema_of(api.SpeechToTextSpec),
                        "status": schema_of(api.SpeechToTextStatus),
                    },
                }},
                "subresources": {
                    "status": {},
                    "scale": {
                        "specReplicasPath": ".spec.replicas",
                        "statusReplicasPath": ".status.replicas",
                        "labelSelectorPath": ".status.selector",
                    },
                },
                "additionalPrinterColumns": printer_columns(),
            }],
        },
    }


def render() -> str:
    """The CRD as the YAML committed under ``crds/``."""
    header = "# Generated by `python -m speech_operator.crd` from speech_operator/api.py. Do not edit.\n"
    return header + yaml.safe_dump(custom_resource_definition(), sort_keys=False, width=100)


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
