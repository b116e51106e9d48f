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


def test_the_openshift_overlay_is_deploy_with_the_ids_left_to_the_platform(kubectl: Path) -> None:
    """deploy/openshift is deploy/ but for the ids: OpenShift's default SCC, restricted-v2 (emulated in
    tests/openshift_scc.py: no OpenShift here), refuses deploy/'s operator and gateway pods (65532 is in no namespace's
    range) and admits the overlay's, which ask for no uid, gid or fsGroup and keep the restricted profile; its operator
    leaves the recognizer pods' ids to the platform too (SPEECH_OPERATOR_POD_IDENTITY=platform)."""
    from speech_operator.config import OperatorConfig
    from tests import openshift_scc as scc
    from tests.pod_security import violations

    base, overlay = kustomize(kubectl, ROOT / "deploy"), kustomize(kubectl, ROOT / "deploy" / "openshift")
    validate_manifests(overlay)
    assert [(d["kind"], d["metadata"]["name"]) for d in base] == [(d["kind"], d["metadata"]["name"]) for d in overlay]
    for mine, theirs in zip(overlay, base, strict=True):
        if mine["kind"] != "Deployment":
            assert mine == theirs
            continue
        pod, base_pod = mine["spec"]["template"]["spec"], theirs["spec"]["template"]["spec"]
        with pytest.raises(scc.Refused, match="must be in the ranges"):
            scc.admit(base_pod)
        assert pod["securityContext"] == {k: v for k, v in base_pod["securityContext"].items()
                                          if k not in ("runAsUser", "runAsGroup", "fsGroup")}
        assert violations(pod) == []
        admitted = scc.admit(pod)
        assert scc.identity(admitted, pod["containers"][0]["name"]) == (1000680000, 0, [0, 1000680000])
        env = {e["name"]: e.get("value") for e in pod["containers"][0].get("env", [])}
        base_env = {e["name"]: e.get("value") for e in base_pod["containers"][0].get("env", [])}
        if "SPEECH_OPERATOR_POD_IDENTITY" in base_env:
            assert OperatorConfig.from_env({k: v for k, v in base_env.items() if v}).pod_identity == "fixed"
            assert OperatorConfig.from_env({k: v for k, v in env.items() if v}).pod_identity == "platform"
            env.pop("SPEECH_OPERATOR_POD_IDENTITY"), base_env.pop("SPEECH_OPERATOR_POD_IDENTITY")
        assert env == base_env
        rest = {k: v for k, v in pod["containers"][0].items() if k != "env"}
        assert rest == {k: v for k, v in base_pod["containers"][0].items() if k != "env"}
    assert sum(1 for d in overlay if d["kind"] == "Deployment") == 2


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
    for key in ("securityContext", "enableServiceLinks", "terminationGracePeriodSeconds"):
        assert plain.get(key) == chart.get(key), key
    plain = one(gateway_docs(kustomize(kubectl, ROOT / "deploy")), "Deployment")["spec"]["template"]["spec"]
    chart = one(gateway_docs(helm_template(helm3)), "Deployment")["spec"]["template"]["spec"]
    for key in ("image", "args", "env", "ports", "readinessProbe", "livenessProbe", "lifecycle", "resources",
                "securityContext", "volumeMounts"):
        assert plain["containers"][0][key] == chart["containers"][0][key], key
    for key in ("securityContext", "terminationGracePeriodSeconds", "volumes", "enableServiceLinks"):
        assert plain[key] == chart[key], key
    plain = one(operator_docs(kustomize(kubectl, ROOT / "deploy")), "Service")
    chart = one(operator_docs(helm_template(helm3)), "Service")
    assert plain["spec"]["ports"] == chart["spec"]["ports"], "the operator's metrics Service"


def test_the_openshift_overlay_matches_the_chart_with_platform_ids(kubectl: Path, helm3: Path) -> None:
    """deploy/openshift and the chart with ``podIdentity=platform`` run the same operator and gateway pods (what
    tests/operator/test_pods_run.py runs of the overlay, as OpenShift admits it, holds for the chart's)."""
    from .conftest import helm_template

    overlay = kustomize(kubectl, ROOT / "deploy" / "openshift")
    chart = helm_template(helm3, "--set", "podIdentity=platform")
    for docs_of in (operator_docs, gateway_docs):
        plain = one(docs_of(overlay), "Deployment")["spec"]["template"]["spec"]
        rendered = one(docs_of(chart), "Deployment")["spec"]["template"]["spec"]
        for key in ("image", "args", "securityContext"):
            assert plain["containers"][0].get(key) == rendered["containers"][0].get(key), key
        # the same variables (the patch puts the one it sets first: order means nothing without $(VAR) references)
        env = {e["name"]: e for e in plain["containers"][0].get("env", [])}
        assert len(env) == len(plain["containers"][0].get("env", []))
        assert env == {e["name"]: e for e in rendered["containers"][0].get("env", [])}
        assert plain["securityContext"] == rendered["securityContext"]


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
