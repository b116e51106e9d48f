"""Plain manifests: `kubectl kustomize deploy/` and the examples, validated like the chart."""

from __future__ import annotations

from pathlib import Path

import pytest

from . import sync
from .conftest import ROOT, by_kind, gateway_docs, load_docs, one, operator_docs, rbac_rules, run, validate_manifests

pytestmark = pytest.mark.unit  # no model, server, operator or browser: the quick run (README, Tests)

EXAMPLES = ROOT / "deploy" / "examples"


def kustomize(kubectl: Path, path: Path) -> list[dict]:
    return load_docs(run([kubectl, "kustomize", path]).stdout)


def test_deploy_builds_and_validates(kubectl: Path) -> None:
    docs = kustomize(kubectl, ROOT / "deploy")
    validate_manifests(docs)
    kinds = sorted(d["kind"] for d in operator_docs(docs))
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "Deployment", "Namespace",
                     "Service", "ServiceAccount"], kinds
    kinds = sorted(d["kind"] for d in gateway_docs(docs))
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "Deployment", "PodDisruptionBudget", "Service", "ServiceAccount"], kinds
    namespace = one(docs, "Namespace")["metadata"]["name"]
    for doc in docs:
        if doc["kind"] in ("Deployment", "ServiceAccount", "Service"):
            assert doc["metadata"]["namespace"] == namespace


def test_the_namespace_enforces_the_restricted_profile_and_its_pods_meet_it(kubectl: Path) -> None:
    """deploy/base labels its namespace ``enforce: restricted``: the operator's and the gateway's pods pass the
    profile's checks (tests/pod_security.py), or the API server would refuse to create them there."""
    from tests.pod_security import violations

    docs = kustomize(kubectl, ROOT / "deploy")
    assert one(docs, "Namespace")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    deployments = by_kind(docs, "Deployment")
    assert len(deployments) == 2
    for doc in deployments:
        assert violations(doc["spec"]["template"]["spec"]) == [], doc["metadata"]["name"]


def test_binding_grants_rbac_yaml_to_the_operator(kubectl: Path) -> None:
    docs = kustomize(kubectl, ROOT / "deploy")
    role, binding, sa = one(operator_docs(docs), "ClusterRole"), one(operator_docs(docs), "ClusterRoleBinding"), one(operator_docs(docs), "ServiceAccount")
    assert role["rules"] == rbac_rules()
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"],
                                    "namespace": sa["metadata"]["namespace"]}]
    pod = one(operator_docs(docs), "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == sa["metadata"]["name"]


def test_binding_grants_the_gateway_its_own_rules(kubectl: Path) -> None:
    docs = gateway_docs(kustomize(kubectl, ROOT / "deploy"))
    role, binding, sa = one(docs, "ClusterRole"), one(docs, "ClusterRoleBinding"), one(docs, "ServiceAccount")
    assert role["rules"] == rbac_rules("speech-gateway")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"],
                                    "namespace": sa["metadata"]["namespace"]}]
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]


def test_deploy_matches_the_chart_defaults(kubectl: Path, helm3: Path) -> None:
    """deploy/ and the chart's default render run the same operator container."""
    from .conftest import helm_template

    plain = one(operator_docs(kustomize(kubectl, ROOT / "deploy")), "Deployment")["spec"]["template"]["spec"]
    chart = one(operator_docs(helm_template(helm3)), "Deployment")["spec"]["template"]["spec"]
    for key in ("image", "args", "env", "ports", "livenessProbe", "resources", "securityContext", "volumeMounts"):
        assert plain["containers"][0][key] == chart["containers"][0][key], key
    assert plain["securityContext"] == chart["securityContext"]
    plain = one(gateway_docs(kustomize(kubectl, ROOT / "deploy")), "Deployment")["spec"]["template"]["spec"]
    chart = one(gateway_docs(helm_template(helm3)), "Deployment")["spec"]["template"]["spec"]
    for key in ("image", "args", "env", "ports", "readinessProbe", "livenessProbe", "lifecycle", "resources",
                "securityContext", "volumeMounts"):
        assert plain["containers"][0][key] == chart["containers"][0][key], key
    for key in ("securityContext", "terminationGracePeriodSeconds", "volumes"):
        assert plain[key] == chart[key], key
    plain = one(operator_docs(kustomize(kubectl, ROOT / "deploy")), "Service")
    chart = one(operator_docs(helm_template(helm3)), "Service")
    assert plain["spec"]["ports"] == chart["spec"]["ports"], "the operator's metrics Service"


def test_crd_copy_has_not_drifted() -> None:
    assert sync.drifted() == [], "run: python -m tests.ship.sync"


def example_targets() -> list[Path]:
    if not EXAMPLES.is_dir():
        return []
    if (EXAMPLES / "kustomization.yaml").is_file():
        return [EXAMPLES]
    return sorted(p for p in EXAMPLES.iterdir() if p.suffix in (".yaml", ".yml") or (p / "kustomization.yaml").is_file())


def test_examples_are_valid(kubectl: Path) -> None:
    targets = example_targets()
    assert targets, "deploy/examples/ holds no example (written by the operator engineer)"
    for target in targets:
        docs = kustomize(kubectl, target) if target.is_dir() else load_docs(target.read_text())
        validate_manifests(docs)
        assert by_kind(docs, "SpeechToText"), f"{target.relative_to(ROOT)} creates no SpeechToText"
