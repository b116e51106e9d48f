"""Fixtures for the shipping checks: helm v3/v4, kubectl, rendering and validation of manifests."""

from __future__ import annotations

import copy
import functools
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from .. import crd_schema
from . import tools

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "speech-operator"
CRD_DIR = ROOT / "crds"
CRD_FILE = CRD_DIR / "speechtotexts.speech-operator.io.yaml"
RBAC_FILE = ROOT / "deploy" / "base" / "rbac.yaml"
#: Oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest the validator knows.
KUBE_VERSIONS = ("1.25.0", kubernetes_validate.latest_version())


@pytest.fixture(scope="session", params=[3, 4], ids=["helm3", "helm4"])
def helm(request: pytest.FixtureRequest) -> Path:
    try:
        return tools.helm(request.param)
    except tools.ToolMissing as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def helm3() -> Path:
    return tools.helm(3)


@pytest.fixture(scope="session")
def kubectl() -> Path:
    try:
        return tools.kubectl()
    except tools.ToolMissing as exc:
        pytest.fail(str(exc))


def run(cmd: Iterable[str | Path], **kw: Any) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure the assertion shows its output."""
    cmd = [str(c) for c in cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=kw.pop("cwd", ROOT), **kw)
    assert proc.returncode == 0, f"$ {' '.join(cmd)}\nexit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def load_docs(text: str) -> list[dict[str, Any]]:
    """The documents of ``text``, read as ``yaml.safe_load_all`` reads them, by libyaml's parser (PyYAML's own, in
    Python, took most of this folder's tests' CPU: a render of the chart is thousands of lines, read again by each test)."""
    return [d for d in yaml.load_all(text, Loader=yaml.CSafeLoader) if d]


#: What ``helm template`` printed, by helm, namespace and arguments (with the content of each file an argument names):
#: many tests read the same render (the default values, ci/full-values.yaml), each render a helm process of its own.
_RENDERED: dict[tuple[Any, ...], str] = {}


def helm_template(helm: Path, *args: str, namespace: str = "speech-operator") -> list[dict[str, Any]]:
    key = (str(helm), namespace, *((a, Path(a).read_bytes() if Path(a).is_file() else None) for a in args))
    if key not in _RENDERED:
        _RENDERED[key] = run([helm, "template", "speech-operator", CHART, "--namespace", namespace, *args]).stdout
    return load_docs(_RENDERED[key])


# ---- validation ------------------------------------------------------------
# kubernetes-validate reads and parses its JSON schemas at each call (its _definitions.json is megabytes: most of the
# time of a validation); they are files of the installed package, the same at every call: read once per process.
kubernetes_validate.utils.schema_contents = functools.cache(kubernetes_validate.utils.schema_contents)


def strict_crd_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The CRD's openAPIV3Schema as a JSON schema that, like `kubectl apply` with strict
    field validation, rejects unknown fields (the API server would prune them silently)."""
    schema = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if (
                node.get("type") == "object"
                and "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    # apiVersion, kind and metadata are allowed on every object, whatever the schema lists
    for implicit in ("apiVersion", "kind"):
        schema.setdefault("properties", {}).setdefault(implicit, {"type": "string"})
    schema["properties"].setdefault("metadata", {"type": "object"})
    walk(schema)
    return schema


def crd_docs() -> list[dict[str, Any]]:
    """Every CustomResourceDefinition in crds/ (the single source of CRDs)."""
    return [d for f in sorted(CRD_DIR.glob("*.yaml")) for d in load_docs(f.read_text())
            if d.get("kind") == "CustomResourceDefinition"]


def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> strict JSON schema for every served version of every CRD in crds/."""
    schemas = {}
    for crd in crd_docs():
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for v in crd["spec"]["versions"]:
            if v.get("served", True):
                schemas[(f"{group}/{v['name']}", kind)] = strict_crd_schema(v["schema"]["openAPIV3Schema"])
    return schemas


def check_service_monitor(doc: dict[str, Any]) -> None:
    """kubernetes-validate knows only built-in kinds; the ServiceMonitor fields we use, by hand."""
    assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(doc) <= {"apiVersion", "kind", "metadata", "spec"}
    spec = doc["spec"]
    assert set(spec) <= {"selector", "namespaceSelector", "endpoints", "jobLabel", "targetLabels"}
    assert spec["selector"]["matchLabels"], "a ServiceMonitor that selects every Service"
    ns = spec.get("namespaceSelector", {})
    assert set(ns) <= {"any", "matchNames"} and (ns.get("any") is True or ns.get("matchNames"))
    for ep in spec["endpoints"]:
        assert set(ep) <= {"port", "path", "interval", "scheme", "scrapeTimeout", "honorLabels"}
        assert ep["port"] and ep["path"].startswith("/") and isinstance(ep.get("honorLabels", False), bool)


def check_prometheus_rule(doc: dict[str, Any]) -> None:
    """kubernetes-validate knows no PrometheusRule: its shape by hand, and its rules through Prometheus' own
    checker (``promtool check rules``: each expression parses, each template renders)."""
    assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(doc) <= {"apiVersion", "kind", "metadata", "spec"} and set(doc["spec"]) == {"groups"}
    with tempfile.TemporaryDirectory() as tmp:
        rules = Path(tmp) / "rules.yaml"
        rules.write_text(yaml.safe_dump({"groups": doc["spec"]["groups"]}))
        proc = subprocess.run([str(tools.promtool()), "check", "rules", str(rules)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def validate_manifests(docs: list[dict[str, Any]]) -> None:
    """Every document must be a valid object: built-in kinds through kubernetes-validate --strict
    (at the oldest and newest Kubernetes), SpeechToText as the API server would create it (tests/crd_schema.py:
    no field pruned, the schema and its CEL rules met), other custom resources against their CRD's schema."""
    assert docs, "nothing rendered"
    schemas = crd_schemas()
    problems: list[str] = []
    for doc in docs:
        name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        key = (doc.get("apiVersion"), doc.get("kind"))
        try:
            if key == (f"{crd_schema.GROUP}/v1alpha1", "SpeechToText"):  # pruning, CEL rules and formats too
                problems += [f"{name}: {p}" for p in crd_schema.as_created(doc)]
            elif key in schemas:
                jsonschema.validate(doc, schemas[key])
            elif doc.get("kind") == "ServiceMonitor":
                check_service_monitor(doc)
            elif doc.get("kind") == "PrometheusRule":
                check_prometheus_rule(doc)
            else:
                for version in KUBE_VERSIONS:
                    kubernetes_validate.validate(doc, version, strict=True)
        except (jsonschema.ValidationError, kubernetes_validate.ValidationError, AssertionError) as exc:
            problems.append(f"{name}: {getattr(exc, 'message', exc)}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            problems.append(f"{name}: no schema for {key}: {exc}")
    assert not problems, "invalid manifests:\n" + "\n".join(problems)


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d.get("kind") == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def rbac_rules(role: str = "speech-operator") -> list[dict[str, Any]]:
    """The rules of the ClusterRole ``role`` in deploy/base/rbac.yaml (the single source): the
    operator's, or the gateway's (``speech-gateway``)."""
    assert RBAC_FILE.is_file(), f"{RBAC_FILE.relative_to(ROOT)} is missing (written by the operator engineer)"
    roles = [d for d in load_docs(RBAC_FILE.read_text()) if d.get("kind") == "ClusterRole" and d["metadata"]["name"] == role]
    assert roles, f"{RBAC_FILE.relative_to(ROOT)} holds no ClusterRole {role}"
    return [rule for r in roles for rule in r.get("rules", [])]


def is_gateway(doc: dict[str, Any]) -> bool:
    """Whether a rendered object is the gateway's (its Deployment, Service, ServiceAccount, RBAC)."""
    return "gateway" in doc.get("metadata", {}).get("name", "")


def operator_docs(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if not is_gateway(d)]


def gateway_docs(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if is_gateway(d)]
