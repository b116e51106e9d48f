"""The committed CRD is what the models generate, and it is a valid structural schema."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import kubernetes_validate
import pytest
import yaml
from stt_schema import CRD_PATH, ROOT

from speech_operator import crd

pytestmark = pytest.mark.unit  # no model, server, operator or browser: the quick run (README, Tests)


def test_committed_crd_matches_the_generator() -> None:
    assert CRD_PATH.read_text() == crd.render(), (
        "crds/ drifted from speech_operator/api.py; run: python -m speech_operator.crd > " + str(CRD_PATH))


def test_generator_command_prints_the_crd() -> None:
    out = subprocess.run([sys.executable, "-m", "speech_operator.crd"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    assert out == crd.render()


def test_crd_validates_against_kubernetes() -> None:
    kubernetes_validate.validate(yaml.safe_load(crd.render()), kubernetes_validate.utils.latest_version(),
                                 strict=True)


def _nodes(schema: dict[str, Any], where: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(where, schema)]
    for name, sub in (schema.get("properties") or {}).items():
        found += _nodes(sub, f"{where}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            found += _nodes(schema[key], f"{where}[{key}]")
    return found


def test_schema_is_structural() -> None:
    """Every node is typed (or int-or-string / preserve-unknown); no refs, no nullable unions."""
    schema = crd.custom_resource_definition()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for where, node in _nodes(schema):
        assert "$ref" not in node and "title" not in node, where
        assert node.get("type") or node.get("x-kubernetes-int-or-string"), where
        if node.get("type") == "object":
            assert "properties" in node or "additionalProperties" in node or node.get(
                "x-kubernetes-preserve-unknown-fields") or where.endswith(".metadata"), where
        if "anyOf" in node:
            assert node.get("x-kubernetes-int-or-string"), where
    spec = schema["properties"]["spec"]
    assert spec["required"] == ["locale", "eula"]
    assert spec["properties"]["eula"]["enum"] == ["accept"]
    assert spec["properties"]["replicas"]["minimum"] == 0
    assert spec["properties"]["resources"]["default"]["requests"] == {"cpu": "500m", "memory": "1Gi"}
    undocumented = [w for w, node in _nodes(spec) if "[" not in w and w and not node.get("description")]
    assert not undocumented


def test_subresources_and_columns() -> None:
    version = crd.custom_resource_definition()["spec"]["versions"][0]
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector"}
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert ["Locale", "Replicas", "Ready", "Age"] == [c["name"] for c in version["additionalPrinterColumns"]
                                                     if not c.get("priority")]
    assert columns["Endpoint"]["priority"] == 1
    # what the operator wants running (conditions.observe writes it always), not spec.replicas, which under
    # spec.autoscaling is only where the autoscaler starts; READY counts the ready pods
    assert columns["Replicas"]["jsonPath"] == ".status.desiredReplicas"
    assert columns["Ready"]["jsonPath"] == ".status.readyReplicas"
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert status["desiredReplicas"]["type"] == "integer"
