"""Check objects the way the API server would: defaults, then the structural schema, then CEL."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import yaml

from speech_operator import crd

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / "speechtotexts.speech-operator.io.yaml"


def crd_schema(crd: dict[str, Any] | None = None) -> dict[str, Any]:
    crd = crd or yaml.safe_load(CRD_PATH.read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def with_defaults(schema: dict[str, Any], value: Any) -> Any:
    """``value`` with the schema's defaults filled in, as the API server does before validating."""
    value = copy.deepcopy(value)
    if isinstance(value, dict):
        for name, sub in (schema.get("properties") or {}).items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                value[name] = with_defaults(sub, value[name])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            value = {k: with_defaults(extra, v) for k, v in value.items()}
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        value = [with_defaults(schema["items"], v) for v in value]
    return value


def cel_failures(schema: dict[str, Any], value: Any, where: str = "") -> list[str]:
    """Messages of the ``x-kubernetes-validations`` rules that ``value`` breaks, evaluated for real."""
    failures: list[str] = []
    env = celpy.Environment()
    for rule in schema.get("x-kubernetes-validations") or []:
        program = env.program(env.compile(rule["rule"]))
        result = program.evaluate({"self": celpy.json_to_cel(value)})
        if isinstance(result, Exception) or not bool(result):
            failures.append(f"{where or '<root>'}: {rule['message']}")
    if isinstance(value, dict):
        for name, sub in (schema.get("properties") or {}).items():
            if name in value:
                failures += cel_failures(sub, value[name], f"{where}.{name}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            failures += cel_failures(schema["items"], item, f"{where}[{i}]")
    return failures


def problems(obj: dict[str, Any], schema: dict[str, Any] | None = None) -> list[str]:
    """Everything the API server would refuse in a SpeechToText (empty when it is accepted)."""
    schema = schema or crd_schema()
    obj = with_defaults(schema, obj)
    errors = [f"{'.'.join(map(str, e.path))}: {e.message}"
              for e in jsonschema.Draft7Validator(schema).iter_errors(obj)]
    return errors or cel_failures(schema, obj)


# ---- the CRD as an older operator made it (tests/operator/test_crd_check.py, test_crd_watch.py) ----
def generated() -> dict[str, Any]:
    """This operator's CRD, as it generates it."""
    return crd.custom_resource_definition()


def schema(definition: dict[str, Any]) -> dict[str, Any]:
    return definition["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def older() -> dict[str, Any]:
    """This operator's CRD before spec.model.caBundle, status.autoscaling, the name rule, the Reason column
    and the scale subresource: what a cluster keeps when the CRDs were not applied before an upgrade."""
    old = generated()
    fields = schema(old)["properties"]
    del fields["spec"]["properties"]["model"]["properties"]["caBundle"]
    del fields["status"]["properties"]["autoscaling"]
    del schema(old)["x-kubernetes-validations"]
    fields["spec"]["properties"]["replicas"].pop("minimum")
    version = old["spec"]["versions"][0]
    version["additionalPrinterColumns"] = version["additionalPrinterColumns"][:-1]
    del version["subresources"]["scale"]
    return old
