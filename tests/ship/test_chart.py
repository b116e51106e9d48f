"""The Helm chart: lint, render, validate, package; with helm v3 and v4."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import tarfile
import textwrap
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest
import yaml

from .conftest import (
    CHART,
    CRD_DIR,
    ROOT,
    by_kind,
    crd_docs,
    gateway_docs,
    helm_template,
    load_docs,
    one,
    operator_docs,
    rbac_rules,
    run,
    validate_manifests,
)

pytestmark = pytest.mark.unit  # no model, server, operator or browser: the quick run (README, Tests)

FULL_VALUES = CHART / "ci" / "full-values.yaml"
RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
}


def test_lint_strict(helm: Path) -> None:
    run([helm, "lint", "--strict", CHART])
    run([helm, "lint", "--strict", CHART, "--values", FULL_VALUES])


def test_default_render_is_valid(helm: Path) -> None:
    docs = helm_template(helm)
    validate_manifests(docs)
    kinds = sorted(d["kind"] for d in operator_docs(docs))
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "Deployment", "Service", "ServiceAccount"], "the metrics' Service, on by default"
    kinds = sorted(d["kind"] for d in gateway_docs(docs))
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "Deployment", "PodDisruptionBudget", "Service", "ServiceAccount"], "the gateway, on by default"
    deployment = one(operator_docs(docs), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "ghcr.io/speech-operator/speech-operator:0.1.0"
    assert container["args"] == ["run", "--all-namespaces", "--liveness=http://*:8080/healthz",
                                 "--metrics=http://*:8081/metrics", "--standalone"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert {"name": "healthz", "containerPort": 8080, "protocol": "TCP"} in container["ports"]
    assert {"name": "metrics", "containerPort": 8081, "protocol": "TCP"} in container["ports"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SPEECH_OPERATOR_IMAGE"] == "ghcr.io/speech-operator/speech-recognizer"
    assert env["SPEECH_OPERATOR_VERSION"] == "0.1.0"
    # policy: by default the operator's own recognizer repository, and no hostPath
    assert env["SPEECH_OPERATOR_ALLOWED_IMAGES"] == "ghcr.io/speech-operator/speech-recognizer"
    assert env["SPEECH_OPERATOR_ALLOWED_HOST_PATHS"] == ""
    assert env["SPEECH_OPERATOR_ALLOWED_PRIORITY_CLASSES"] == ""  # no PriorityClass
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    assert pod["serviceAccountName"] == one(operator_docs(docs), "ServiceAccount")["metadata"]["name"]
    assert_grace_covers_the_operators_stop(pod)


def assert_grace_covers_the_operators_stop(pod: dict) -> None:
    """The operator's pod's grace holds its whole stop with seconds to spare: a reconcile under way finishing (a
    daemon's, or an event's; HANDLER_GRACE_SECONDS, then kopf's cancellation_timeout of 1 s), the Events left posted
    (EXIT_GRACE_SECONDS), and kopf's fixed 5 s wait for tasks left over; tests/operator/test_reconciler.py checks that a
    stop takes no longer than the grace. Before, the pods had the default 30 s, unsaid."""
    from speech_operator.events import EXIT_GRACE_SECONDS
    from speech_operator.handlers import HANDLER_GRACE_SECONDS

    stop = HANDLER_GRACE_SECONDS + 1 + EXIT_GRACE_SECONDS + 5
    assert pod["terminationGracePeriodSeconds"] >= stop + 5, (pod["terminationGracePeriodSeconds"], stop)


def test_every_pod_of_the_chart_meets_the_restricted_profile(helm: Path) -> None:
    """Every pod the chart runs (the operator, the gateway, the uninstall clean-up Job) passes the "restricted" Pod
    Security Standard's checks (tests/pod_security.py): the chart installs into a namespace that enforces it."""
    from tests.pod_security import violations

    for args in ((), ("--values", str(FULL_VALUES)), ("--set", "recognizers[0].locale=ko-KR")):
        workloads = [d for d in helm_template(helm, *args, namespace="speech") if d["kind"] in ("Deployment", "Job")]
        assert {d["kind"] for d in workloads} >= {"Deployment"} and len(workloads) >= 2, args
        for doc in workloads:
            assert violations(doc["spec"]["template"]["spec"]) == [], (args, doc["kind"], doc["metadata"]["name"])
    assert any(d["kind"] == "Job" for d in helm_template(helm, "--set", "recognizers[0].locale=ko-KR")), "the clean-up Job was checked"


def test_every_pod_of_the_chart_starts_with_the_environment_a_kubelet_gives_it(helm: Path) -> None:
    """The kubelet puts Docker-link variables of every Service of a pod's namespace in its containers' environment unless
    the pod spec sets ``enableServiceLinks: false`` (tests/kubelet.py, ``environment``). With ``fullnameOverride=speech``
    the gateway's Service is speech-gateway, whose SPEECH_GATEWAY_PORT=tcp://IP:5000 the gateway read as its port: it
    exited at start, on every restart. The operator's and the gateway's settings read from the environment a kubelet
    gives them, beside every Service the chart makes; and every pod of the chart turns service links off."""
    from speech_operator.config import OperatorConfig
    from speech_operator.gateway import GatewayConfig
    from tests.kubelet import environment

    for args in (("--set", "fullnameOverride=speech"), ("--values", str(FULL_VALUES), "--set", "fullnameOverride=speech"),
                 ("--set", "recognizers[0].locale=ko-KR")):
        docs = helm_template(helm, *args, namespace="speech")
        services = by_kind(docs, "Service")
        assert services and all(s["metadata"]["namespace"] == "speech" for s in services), args
        pods = {d["metadata"]["name"]: d["spec"]["template"]["spec"] for d in docs if d["kind"] in ("Deployment", "Job")}
        for pod in pods.values():
            (container,) = pod["containers"]
            given = {**container, "env": [e for e in container.get("env", []) if "value" in e]}  # not the fieldRefs
            read = {"gateway": GatewayConfig.from_env, "operator": OperatorConfig.from_env}.get(container["name"])
            if read is not None:
                read(environment(pod, given, services))
        assert {name: pod.get("enableServiceLinks") for name, pod in pods.items()} == dict.fromkeys(pods, False), args
    assert "speech-gateway" in {s["metadata"]["name"] for s in by_kind(helm_template(helm, "--set", "fullnameOverride=speech"), "Service")}


def test_restricted_pod_security(helm: Path) -> None:
    """The operator pod meets the Kubernetes "restricted" Pod Security Standard."""
    for args in ((), ("--values", str(FULL_VALUES))):
        pod = one(operator_docs(helm_template(helm, *args, namespace="speech")), "Deployment")["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in pod["containers"]:
            assert container["securityContext"] == RESTRICTED_CONTAINER
        assert not pod.get("hostNetwork") and not pod.get("hostPID")


def test_rbac_rules_come_from_deploy_base(helm: Path) -> None:
    rules = rbac_rules()
    cluster = helm_template(helm)
    assert one(operator_docs(cluster), "ClusterRole")["rules"] == rules
    binding = one(operator_docs(cluster), "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == one(operator_docs(cluster), "ClusterRole")["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": one(operator_docs(cluster), "ServiceAccount")["metadata"]["name"], "namespace": "speech-operator"}
    ]


#: The kinds the chart makes that live in no namespace (CRDs aside: Helm installs those once, from crds/).
CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering"}


def object_keys(docs: list[dict], namespace: str) -> set[tuple[str, str, str]]:
    """(kind, namespace, name) of each object: "" for a cluster-scoped one, the release's when a template sets none."""
    return {(d["kind"], "" if d["kind"] in CLUSTER_SCOPED else d["metadata"].get("namespace", namespace),
             d["metadata"]["name"]) for d in docs}


def test_releases_of_one_name_in_two_namespaces_own_different_objects(helm: Path) -> None:
    """`helm install speech-operator -n team-a` and `-n team-b` in cluster mode: the second failed while the ClusterRoles
    and their bindings were named by the release alone (the object "exists and cannot be imported into the current
    release"). Every object of each is its own; each binding names its own render's role and ServiceAccount.
    (Namespaced mode makes no cluster-scoped object: its Roles live in the namespaces each release watches.)"""
    extra = ("--set", "serviceMonitor.enabled=true", "--set", "prometheusRule.enabled=true",
             "--set", "gateway.ingress.enabled=true", "--set", "gateway.ingress.hosts[0].host=speech.example.com",
             "--set", "peering.enabled=true", "--set", "replicaCount=2")
    renders = {ns: helm_template(helm, *extra, namespace=ns) for ns in ("team-a", "team-b")}
    a, b = (object_keys(docs, ns) for ns, docs in renders.items())
    # but one: the ClusterKopfPeering is named peering.name, which the operator's --peering names too, on purpose. Two
    # cluster-mode operators reconcile the same SpeechToTexts; one peering keeps one of them active (chart README).
    assert a and a & b == {("ClusterKopfPeering", "", "speech-operator")}, sorted(a & b)
    for ns, docs in renders.items():
        validate_manifests(docs)
        roles = by_kind(docs, "ClusterRole") + by_kind(docs, "ClusterRoleBinding")
        assert len(roles) == 4 and all(d["metadata"]["name"].endswith(f"-{ns}") for d in roles), roles
        names = object_keys(docs, ns)
        for binding in by_kind(docs, "ClusterRoleBinding") + by_kind(docs, "RoleBinding"):
            ref = binding["roleRef"]
            role_ns = "" if ref["kind"] == "ClusterRole" else binding["metadata"]["namespace"]
            assert (ref["kind"], role_ns, ref["name"]) in names, binding
            assert all(("ServiceAccount", s["namespace"], s["name"]) in names for s in binding["subjects"]), binding
    # the operator's and the gateway's, each with its rules from deploy/base/rbac.yaml
    roles = {r["metadata"]["name"]: r["rules"] for r in by_kind(renders["team-a"], "ClusterRole")}
    assert roles == {"speech-operator-team-a": rbac_rules(), "speech-operator-gateway-team-a": rbac_rules("speech-gateway")}


def test_cluster_scoped_names_stay_unique_past_63_characters(helm: Path) -> None:
    """A long release name in two long namespaces that differ at their ends: each name is cut to 63 characters and
    ends in a hash of the whole, so the two releases' names still differ."""
    release = "speech-operator-for-the-contact-centre"
    names = {}
    for namespace in ("a-namespace-of-a-platform-team-with-a-long-name-a", "a-namespace-of-a-platform-team-with-a-long-name-b"):
        docs = helm_template(helm, "--set", f"fullnameOverride={release}", namespace=namespace)
        names[namespace] = {d["metadata"]["name"] for d in docs if d["kind"] in CLUSTER_SCOPED}
        assert len(names[namespace]) == 2 and all(len(n) <= 63 for n in names[namespace]), names
        for binding in by_kind(docs, "ClusterRoleBinding"):
            assert binding["roleRef"]["name"] == binding["metadata"]["name"] in names[namespace]
    first, second = names.values()
    assert not first & second, names


def test_namespaced_mode(helm: Path) -> None:
    docs = helm_template(helm, "--set", "watch.mode=namespaced", namespace="speech")
    validate_manifests(docs)
    assert not by_kind(docs, "ClusterRole") and not by_kind(docs, "ClusterRoleBinding")
    assert one(operator_docs(docs), "Role")["metadata"]["namespace"] == "speech"
    assert one(operator_docs(docs), "Role")["rules"] == rbac_rules()
    assert one(operator_docs(docs), "RoleBinding")["metadata"]["namespace"] == "speech"
    args = one(operator_docs(docs), "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=speech" in args and "--all-namespaces" not in args

    docs = helm_template(helm, "--set", "watch.mode=namespaced", "--set", "watch.namespaces={a,b}", namespace="ops")
    validate_manifests(docs)
    assert sorted(r["metadata"]["namespace"] for r in by_kind(operator_docs(docs), "Role")) == ["a", "b"]
    for binding in by_kind(operator_docs(docs), "RoleBinding"):
        assert binding["subjects"][0]["namespace"] == "ops"
    args = one(operator_docs(docs), "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [a for a in args if a.startswith("--namespace")] == ["--namespace=a", "--namespace=b"]


def test_full_values_render_is_valid(helm: Path) -> None:
    docs = helm_template(helm, "--values", str(FULL_VALUES), namespace="speech")
    validate_manifests(docs)
    stts = {d["metadata"]["name"]: d for d in by_kind(docs, "SpeechToText")}
    assert sorted(stts) == ["de-de", "en-us", "korean"], "named as README and deploy/examples name them"
    # commonLabels, and imagePullSecrets (the release namespace's, which the recognizers' is)
    common = {"labels": {"example.com/cost-center": "cc-42"}, "imagePullSecrets": [{"name": "registry-credentials"}]}
    assert stts["en-us"]["spec"] == {"locale": "en-US", "eula": "accept", "replicas": 2, **common}
    assert stts["korean"]["spec"] == {"locale": "ko-KR", "eula": "accept", "logLevel": "Debug", "decoderMaxCount": 2, **common,
                                      "priorityClassName": "speech-realtime", "topologySpreadConstraints": [{
                                          "maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                                          "whenUnsatisfiable": "DoNotSchedule", "matchLabelKeys": ["pod-template-hash"]}]}
    assert stts["de-de"]["spec"]["replicas"] == 0
    for stt in stts.values():
        assert stt["apiVersion"] == "speech-operator.io/v1alpha1"
        assert stt["metadata"]["namespace"] == "speech"
    monitor = recognizers_monitor(docs)
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["speech"]}
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    deployment = one(operator_docs(docs), "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--peering=speech-operator" in args and "--standalone" not in args and "--verbose" in args
    assert "--liveness=http://*:8081/healthz" in args and "--metrics=http://*:9090/metrics" in args


def test_render_refuses_two_replicas_without_peering(helm: Path) -> None:
    proc = run_fail([helm, "template", "x", CHART, "--set", "replicaCount=2"])
    assert "peering.enabled" in proc


def test_recognizers_namespace_is_watched(helm: Path) -> None:
    """The release's SpeechToTexts live in its namespace: namespaced mode watches it too."""
    docs = helm_template(helm, "--set", "watch.mode=namespaced", "--set", "watch.namespaces={speech}",
                         "--set", "recognizers[0].locale=en-US", namespace="ops")
    validate_manifests(docs)
    watching = [r for r in by_kind(operator_docs(docs), "Role") if not r["metadata"]["name"].endswith("-cleanup")]
    assert sorted(r["metadata"]["namespace"] for r in watching) == ["ops", "speech"]
    args = one(operator_docs(docs), "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [a for a in args if a.startswith("--namespace")] == ["--namespace=speech", "--namespace=ops"]
    assert one(docs, "SpeechToText")["metadata"] == {"name": "en-us", "namespace": "ops",
                                                     "labels": one(docs, "SpeechToText")["metadata"]["labels"]}
    # without recognizers, only what watch.namespaces names
    docs = helm_template(helm, "--set", "watch.mode=namespaced", "--set", "watch.namespaces={speech}", namespace="ops")
    assert [r["metadata"]["namespace"] for r in by_kind(operator_docs(docs), "Role")] == ["speech"]


@pytest.mark.parametrize("namespace", ["default", "speech", "ci-3f9a"])
def test_full_values_render_in_any_namespace(helm: Path, namespace: str) -> None:
    """ci/full-values.yaml is what chart-testing renders, in a namespace of its own choosing."""
    docs = helm_template(helm, "--values", str(FULL_VALUES), namespace=namespace)
    validate_manifests(docs)
    assert {d["metadata"]["namespace"] for d in by_kind(docs, "SpeechToText")} == {namespace}
    watched = {r["metadata"]["namespace"] for r in by_kind(operator_docs(docs), "Role")
               if not r["metadata"]["name"].endswith("-cleanup")}
    assert watched == {namespace, "speech", "speech-staging"}
    run([helm, "lint", "--strict", CHART, "--values", FULL_VALUES, "--namespace", namespace])


def test_common_labels_and_pull_secrets_reach_every_object_every_pod_and_each_recognizers_spec(helm: Path) -> None:
    """commonLabels (what a policy engine requires of every object) reach each object the chart renders, each pod
    template (podLabels over them, selectors untouched), and the spec.labels of each SpeechToText of `recognizers`
    (its own win), from which the operator labels what it makes for it (test_builders); imagePullSecrets become each
    recognizer's spec.imagePullSecrets unless it sets its own (they live in the release namespace, as its Secrets)."""
    docs = helm_template(helm, "--set", "commonLabels.team=speech", "--set", "commonLabels.tier=web",
                         "--set", "podLabels.tier=pods", "--set", "gateway.enabled=true",
                         "--set", "metrics.enabled=true", "--set", "peering.enabled=true", "--set", "replicaCount=2",
                         "--set", "recognizers[0].locale=en-US", "--set", "recognizers[1].locale=ko-KR",
                         "--set", "recognizers[1].spec.labels.team=korean", "--set", "imagePullSecrets[0].name=registry",
                         "--set", "recognizers[1].spec.imagePullSecrets[0].name=korean-registry", namespace="speech")
    validate_manifests(docs)
    for doc in docs:
        labels = doc["metadata"].get("labels") or {}
        assert labels.get("team") == "speech" and labels.get("tier") == "web", (doc["kind"], doc["metadata"]["name"])
        template = (doc.get("spec") or {}).get("template")
        if template is not None:
            assert template["metadata"]["labels"]["team"] == "speech", doc["metadata"]["name"]
            assert template["metadata"]["labels"]["tier"] == "pods", "podLabels win"
            selector = doc["spec"].get("selector", {}).get("matchLabels", {})
            assert "team" not in selector and "tier" not in selector
    stts = {d["metadata"]["name"]: d["spec"] for d in by_kind(docs, "SpeechToText")}
    assert stts["en-us"]["labels"] == {"team": "speech", "tier": "web"}
    assert stts["ko-kr"]["labels"] == {"team": "korean", "tier": "web"}, "a recognizer's own spec.labels win"
    assert stts["en-us"]["imagePullSecrets"] == [{"name": "registry"}], "the release's pull secrets"
    assert stts["ko-kr"]["imagePullSecrets"] == [{"name": "korean-registry"}], "unless its spec sets its own"


def test_schema_rejects_bad_values(helm: Path) -> None:
    for bad in ("watch.mode=everywhere", "unknownKey=1", "recognizers[0].replicas=2", "livenessPort=80",
                "gateway.ingress.hosts[0].paths[0].path=speech", "gateway.ingress.hosts[0].paths[0].pathType=Any",
                "gateway.ingress.tls[0].secret=x", "commonLabels.app\\.kubernetes\\.io/instance=x",
                "commonLabels.speech-operator\\.io/locale=x", "commonLabels.team=two words"):
        out = run_fail([helm, "template", "x", CHART, "--set", bad])
        assert "schema" in out.lower() or "values don't meet" in out.lower() or "validation" in out.lower(), out


def run_fail(cmd: list) -> str:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode != 0, f"expected {' '.join(map(str, cmd))} to fail:\n{proc.stdout}"
    return proc.stdout + proc.stderr


def number_values(schema: dict, prefix: str = "") -> dict[str, dict]:
    """Every value the schema types a number, by its name as --set spells it, with its schema."""
    found = {}
    for key, node in schema.get("properties", {}).items():
        kinds = node.get("type", [])
        if "number" in ([kinds] if isinstance(kinds, str) else kinds):
            found[prefix + key] = node
        found |= number_values(node, f"{prefix}{key}.")
    return found


def test_set_gives_a_number_value_as_a_decimal(helm: Path, tmp_path: Path) -> None:
    # helm's --set passes 2.5 as a string (a whole number as an int): the chart takes a decimal, renders it as it
    # renders a values file's number, and bounds it as the schema bounds a number; anything else is refused
    numbers = number_values(json.loads((CHART / "values.schema.json").read_text()))
    # every value whose setting takes decimal seconds (the gateway's are floats, as is `cleanup --timeout`); holdSeconds,
    # shutdownSeconds and cleanupOnUninstall.timeoutSeconds were integers, and --set gateway.holdSeconds=2.5 was refused
    assert {"gateway.headerSeconds", "gateway.formReadSeconds", "gateway.formPauseSeconds", "gateway.holdSeconds",
            "gateway.shutdownSeconds", "cleanupOnUninstall.timeoutSeconds"} <= set(numbers), numbers
    values: dict = {}
    for name, bounds in numbers.items():
        *parents, last = name.split(".")
        node = values
        for parent in parents:
            node = node.setdefault(parent, {})
        node[last] = bounds["minimum"] + 0.25
    values_file = tmp_path / "numbers.yaml"
    values_file.write_text(yaml.safe_dump(values))
    inside = [a for name, bounds in numbers.items() for a in ("--set", f"{name}={bounds['minimum'] + 0.25}")]
    docs = helm_template(helm, *inside)
    assert docs == helm_template(helm, "--values", str(values_file))
    env = {e["name"]: e["value"] for e in one(gateway_docs(docs), "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["SPEECH_GATEWAY_HEADER_SECONDS"] == "1.25", env
    assert (env["SPEECH_GATEWAY_HOLD_SECONDS"], env["SPEECH_GATEWAY_SHUTDOWN_SECONDS"]) == ("0.25", "0.25"), env
    decimal = helm_template(helm, "--set", "gateway.shutdownSeconds=2.5", "--set", "recognizers[0].name=a",
                            "--set", "recognizers[0].locale=ko-KR", "--set", "cleanupOnUninstall.timeoutSeconds=12.5")
    pod = gateway_pod(decimal)
    assert pod["terminationGracePeriodSeconds"] == 18, "5 + 2.5 + 3 + 7, up to a whole second"
    assert_grace_covers_the_stop(pod, 2.5)
    job = one(decimal, "Job")["spec"]
    assert job["activeDeadlineSeconds"] == 73 and "--timeout=12.5" in job["template"]["spec"]["containers"][0]["args"], job
    # the bounds themselves are taken ("1.0": a string, as "1" would be an int)
    helm_template(helm, *(a for name, bounds in numbers.items() for a in ("--set", f"{name}={bounds['minimum']:.1f}")))
    helm_template(helm, *(a for name, bounds in numbers.items() if "maximum" in bounds
                          for a in ("--set", f"{name}={bounds['maximum']:.1f}")))
    for name, bounds in numbers.items():
        below = run_fail([helm, "template", "x", CHART, "--set", f"{name}={bounds['minimum'] - 0.5}"])
        assert f"{name} must be at least {bounds['minimum']}, not {bounds['minimum'] - 0.5}" in below, below
        if "maximum" in bounds:
            above = run_fail([helm, "template", "x", CHART, "--set", f"{name}={bounds['maximum'] + 0.5}"])
            assert f"{name} must be at most {bounds['maximum']}, not {bounds['maximum'] + 0.5}" in above, above
        word = run_fail([helm, "template", "x", CHART, "--set", f"{name}=abc"])
        assert name.split(".")[-1] in word and "pattern" in word, word
        assert "goroutine" not in word + below, "a refusal, not a crash"


def test_values_match_schema() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    for values_file in (CHART / "values.yaml", FULL_VALUES):
        jsonschema.validate(yaml.safe_load(values_file.read_text()), schema)
    # every top-level key in values.yaml is documented by a comment right above it
    lines = (CHART / "values.yaml").read_text().splitlines()
    for i, line in enumerate(lines):
        if line and not line.startswith((" ", "#")) and ":" in line:
            assert any(lines[j].startswith("#") for j in range(max(0, i - 12), i) if lines[j].strip()), line


def test_crds_ship_in_crds_folder(helm: Path) -> None:
    """Helm installs crds/ before the templates, so SpeechToText (and kopf peering) objects can be
    in the same release; crds/ holds exactly the repo's crds/."""
    expected = sorted(crd_docs(), key=lambda d: d["metadata"]["name"])
    # helm 3.17's `helm show crds` joins files without a `---`, so NOTES and README use
    # `helm pull --untar` + `kubectl apply -f crds/` instead; here only the names.
    shown = run([helm, "show", "crds", CHART]).stdout
    for crd in expected:
        assert f"name: {crd['metadata']['name']}" in shown
    rendered = by_kind(helm_template(helm, "--include-crds"), "CustomResourceDefinition")
    assert sorted(rendered, key=lambda d: d["metadata"]["name"]) == expected
    assert {p.name for p in (CHART / "crds").iterdir()} == {p.name for p in CRD_DIR.glob("*.yaml")}


def test_peering(helm: Path) -> None:
    cluster = helm_template(helm, "--set", "peering.enabled=true", "--set", "replicaCount=2")
    validate_manifests(cluster)
    assert one(cluster, "ClusterKopfPeering")["metadata"]["name"] == "speech-operator"
    args = one(operator_docs(cluster), "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--peering=speech-operator" in args and "--standalone" not in args
    namespaced = helm_template(helm, "--values", str(FULL_VALUES), namespace="speech")
    assert sorted(p["metadata"]["namespace"] for p in by_kind(namespaced, "KopfPeering")) == ["speech", "speech-staging"]
    assert not by_kind(helm_template(helm), "ClusterKopfPeering")


def quiet(proc: subprocess.CompletedProcess[str]) -> str:
    """A command's stdout, once it printed nothing on stderr (no INFO or WARNING line)."""
    assert proc.stderr == "", f"$ {' '.join(map(str, proc.args))} said on stderr:\n{proc.stderr}"
    return proc.stdout


def test_package_holds_real_files(helm: Path, tmp_path: Path) -> None:
    """`helm package` stores the chart's own files: the CRDs and RBAC rules as their sources say
    (the generated copies, tests.ship.sync); the package and the source chart render the same
    with nothing on stderr (helm prints an INFO line for every symlink it follows)."""
    quiet(run([helm, "package", CHART, "--destination", tmp_path]))
    (archive,) = tmp_path.glob("speech-operator-*.tgz")
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        assert not any(m.issym() or m.islnk() for m in tar.getmembers())
        for source in CRD_DIR.glob("*.yaml"):  # what `kubectl apply -f <untarred chart>/crds/` applies
            crd = tar.extractfile(f"speech-operator/crds/{source.name}")
            assert crd is not None
            assert load_docs(crd.read().decode()) == load_docs(source.read_text()), source.name
        rbac = tar.extractfile("speech-operator/files/rbac.yaml")
        assert rbac is not None and load_docs(rbac.read().decode()) == load_docs((ROOT / "deploy/base/rbac.yaml").read_text())
    assert not any("/ci/" in n for n in names), "ci/ values belong to the repo, not the package"
    for values in ((), ("--values", str(FULL_VALUES))):
        packaged = quiet(run([helm, "template", "speech-operator", archive, "--namespace", "speech-operator",
                              "--include-crds", *values]))
        source = quiet(run([helm, "template", "speech-operator", CHART, "--namespace", "speech-operator",
                            "--include-crds", *values]))
        assert load_docs(packaged) == load_docs(source)
    quiet(run([helm, "lint", "--strict", archive]))
    quiet(run([helm, "show", "crds", archive]))


def notes_renderer(helm: Path, tmp_path: Path) -> Callable[..., str]:
    """NOTES.txt as ``helm install`` prints it, rendered through a test-only template (helm install --dry-run needs a
    cluster, and helm template --show-only does not render NOTES): a function of the namespace and helm's arguments."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    shutil.copy(chart / "templates" / "NOTES.txt", chart / "files" / "notes.txt")
    (chart / "templates" / "zz-notes.yaml").write_text(
        'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\n'
        'data:\n  notes: {{ tpl (.Files.Get "files/notes.txt") . | quote }}\n'
    )

    def notes(namespace: str, *args: str | Path) -> str:
        out = run([helm, "template", "speech-operator", chart, "--namespace", namespace, *args,
                   "--show-only", "templates/zz-notes.yaml"]).stdout
        return yaml.safe_load(out)["data"]["notes"]
    return notes


def test_notes_explain_first_speechtotext(helm: Path, tmp_path: Path) -> None:
    render = notes_renderer(helm, tmp_path)
    notes = render("speech", "--values", FULL_VALUES)
    assert "korean (ko-KR)" in notes and "en-us (en-US)" in notes and "de-de (de-DE)" in notes
    assert "kubectl -n speech wait speechtotext/en-us --for=condition=Ready" in notes
    assert "kubectl -n speech port-forward service/en-us 5000:5000" in notes
    assert "?language=en-US'" in notes
    assert "It watches SpeechToText resources in: speech, speech-staging." in notes
    # Helm's field manager owns the CRDs it created: an apply without --force-conflicts stops at the conflict
    assert "kubectl apply --server-side --force-conflicts -f /tmp/speech-operator-chart/speech-operator/crds/" in notes
    assert "kind: SpeechToText" not in notes, "the release created them"
    # without recognizers: how to create one, named as the README names it
    notes = render("speech")
    created = yaml.safe_load(textwrap.dedent(notes.split("<<'YAML'\n")[1].split("  YAML\n")[0]))
    assert created == {"apiVersion": "speech-operator.io/v1alpha1", "kind": "SpeechToText",
                       "metadata": {"name": "en-us"}, "spec": {"locale": "en-US", "eula": "accept", "replicas": 1}}
    assert "kubectl -n speech scale speechtotext/en-us --replicas=2" in notes
    assert "kubectl -n speech delete speechtotext/en-us" in notes
    assert "kubectl -n speech port-forward service/en-us 5000:5000" in notes
    # namespaced, the release namespace not watched: the one to create in is one the operator watches (before, the
    # release's, where the SpeechToText was never reconciled and `kubectl wait` ran out after 10 minutes)
    notes = render("ops", "--set", "watch.mode=namespaced", "--set", "watch.namespaces={speech,b}")
    assert "kubectl apply -n speech -f - <<'YAML'" in notes
    assert "kubectl -n speech wait speechtotext/en-us --for=condition=Ready" in notes
    assert "kubectl -n speech port-forward service/en-us 5000:5000" in notes
    assert "-n ops scale" not in notes and "-n ops delete" not in notes and "-n ops wait" not in notes


def test_notes_say_the_ingress_url(helm: Path, tmp_path: Path) -> None:
    """With gateway.ingress.enabled, NOTES say the URL clients outside the cluster use, for each host and path: https
    where gateway.ingress.tls names the host, as the Ingress serves it (before, NOTES named only a port-forward)."""
    render = notes_renderer(helm, tmp_path)
    values = tmp_path / "ingress.yaml"
    values.write_text(yaml.safe_dump({"gateway": {"ingress": {
        "enabled": True,
        "hosts": [{"host": "speech.example.com"}, {"host": "speech.internal", "paths": [{"path": "/speech"}]},
                  {"host": "one.internal", "paths": [{"path": "/stt"}, {"path": "/vosk", "pathType": "Exact"},
                                                     {"path": "/v1/"}]},
                  {"host": "stt.example.org"}, {"host": "a.stt.example.org"}, {"host": "example.org"}],
        "tls": [{"secretName": "speech-example-com-tls", "hosts": ["speech.example.com"]},
                {"secretName": "wildcard-example-org-tls", "hosts": ["*.example.org"]}]}}}))
    notes = render("speech", "--values", values)
    assert "through the Ingress speech-operator-gateway, point clients at:" in notes
    assert '  https://speech.example.com/   (an Azure Speech SDK: SpeechConfig(host="wss://speech.example.com"))' in notes
    # a path other than "/" reaches only the gateway's routes below it (the Ingress passes paths on as they are): NOTES
    # said every path served the SDK, and printed /stt as the URL to use, which routed nothing
    assert ('  http://speech.internal/speech   (reaches the gateway\'s /speech/recognition/ only: an Azure Speech SDK: '
            'SpeechConfig(host="ws://speech.internal"); the Ingress passes paths on as they are, so '
            '/v1/audio/transcriptions, /vosk, /demo need a path of their own, or "/")') in notes
    assert ('  http://one.internal/stt   (reaches none of the gateway\'s routes (/speech/recognition/, '
            '/v1/audio/transcriptions, /vosk, /demo): the Ingress passes paths on as they are; use "/")') in notes
    assert ('  http://one.internal/vosk   (reaches the gateway\'s /vosk only; the Ingress passes paths on as they are, '
            'so /speech/recognition/, /v1/audio/transcriptions, /demo need a path of their own, or "/")') in notes
    assert "  http://one.internal/v1/   (reaches the gateway's /v1/audio/transcriptions only;" in notes
    # the routes NOTES name are the gateway's client routes
    from speech_recognizer import contract
    assert all(p.startswith("/speech/recognition/") for p in contract.RECOGNITION_PATHS)
    for route in (contract.ROUTE_OPENAI_TRANSCRIPTIONS, contract.ROUTE_VOSK_WS, contract.ROUTE_DEMO):
        assert route + "," in notes or route + " " in notes or route + ")" in notes
    # a wildcard TLS host covers exactly one label more, as an Ingress (and a certificate) matches it
    assert '  https://stt.example.org/   (an Azure Speech SDK: SpeechConfig(host="wss://stt.example.org"))' in notes
    assert '  http://a.stt.example.org/   (an Azure Speech SDK: SpeechConfig(host="ws://a.stt.example.org"))' in notes
    assert '  http://example.org/   (an Azure Speech SDK: SpeechConfig(host="ws://example.org"))' in notes
    ingress = gateway_ingress(helm_template(helm, "--values", str(values), namespace="speech"))
    assert [r["host"] for r in ingress["spec"]["rules"]] == ["speech.example.com", "speech.internal", "one.internal",
                                                            "stt.example.org",
                                                            "a.stt.example.org", "example.org"]  # what NOTES name
    assert "Ingress" not in render("speech"), "no Ingress: no URL"
    assert "Ingress" not in render("speech", "--values", values, "--set", "gateway.enabled=false")


@pytest.mark.parametrize("values", [None, FULL_VALUES], ids=["default", "full"])
def test_helm3_and_helm4_render_the_same(helm3: Path, values: Path | None) -> None:
    from . import tools

    args = ("--values", str(values)) if values else ()
    assert helm_template(helm3, *args, namespace="speech") == helm_template(tools.helm(4), *args, namespace="speech")


def test_policy_values_reach_the_operator(helm: Path) -> None:
    docs = helm_template(helm, "--values", str(FULL_VALUES), namespace="speech")
    env = {e["name"]: e.get("value") for e in one(operator_docs(docs), "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["SPEECH_OPERATOR_ALLOWED_IMAGES"] == "registry.example.com/speech/speech-recognizer,registry.example.com/speech-mirror/"
    assert env["SPEECH_OPERATOR_ALLOWED_HOST_PATHS"] == "/srv/speech"
    assert env["SPEECH_OPERATOR_ALLOWED_PRIORITY_CLASSES"] == "speech-realtime,speech-batch"
    from speech_operator.config import OperatorConfig
    from speech_operator.policy import violations
    config = OperatorConfig.from_env({k: v for k, v in env.items() if v is not None})
    assert config.allowed_host_paths == ("/srv/speech",)
    assert config.allowed_priority_classes == ("speech-realtime", "speech-batch")
    # the release's own SpeechToText that asks for a PriorityClass gets it from the same values
    from speech_operator import api
    korean = next(d for d in docs if d["kind"] == api.KIND and d["spec"].get("priorityClassName"))
    assert violations(api.SpeechToText.model_validate(korean).spec, config) == []
    assert config.allowed_image_repositories == ("registry.example.com/speech/speech-recognizer",
                                                 "registry.example.com/speech-mirror/")


def test_platform_pod_identity_lets_openshift_admit_every_pod_of_the_chart(helm: Path) -> None:
    """OpenShift's default SCC, restricted-v2 (emulated in tests/openshift_scc.py: no OpenShift here), refuses every
    pod of the chart as it was (uid and fsGroup 65532, in no namespace's range: the operator would never start).
    With ``podIdentity=platform`` it admits each (the operator, the gateway, the uninstall clean-up Job), which ask for
    no ids (a runAsUser set in podSecurityContext or securityContext too is left out) and keep the restricted profile;
    and the operator gets ``SPEECH_OPERATOR_POD_IDENTITY=platform`` for the recognizer pods it makes."""
    from speech_operator.config import OperatorConfig
    from tests import openshift_scc as scc
    from tests.pod_security import violations

    for args in ((), ("--values", str(FULL_VALUES)), ("--set", "recognizers[0].locale=ko-KR")):
        for identity in ("fixed", "platform"):
            docs = helm_template(helm, *args, "--set", f"podIdentity={identity}", "--set", "securityContext.runAsUser=65532",
                                 namespace="speech")
            workloads = [d for d in docs if d["kind"] in ("Deployment", "Job")]
            assert len(workloads) >= 2
            for doc in workloads:
                pod = doc["spec"]["template"]["spec"]
                if identity == "fixed":
                    with pytest.raises(scc.Refused, match=r"runAsUser: Invalid value: 65532: must be in the ranges"):
                        scc.admit(pod)
                    continue
                assert not {"runAsUser", "runAsGroup", "fsGroup"} & set(pod["securityContext"]), doc["metadata"]["name"]
                assert pod["containers"][0]["securityContext"] == RESTRICTED_CONTAINER
                assert violations(pod) == [], doc["metadata"]["name"]
                admitted = scc.admit(pod)
                assert scc.identity(admitted, pod["containers"][0]["name"]) == (1000680000, 0, [0, 1000680000])
            env = {e["name"]: e.get("value") for e in one(operator_docs(docs), "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]}
            assert OperatorConfig.from_env({k: v for k, v in env.items() if v is not None}).pod_identity == identity
    assert any(d["kind"] == "Job" for d in helm_template(helm, "--set", "recognizers[0].locale=ko-KR")), "the clean-up Job was checked"
    assert "podIdentity" in run_fail([helm, "template", "x", CHART, "--set", "podIdentity=openshift"])


# ---- the gateway --------------------------------------------------------------------------------
def gateway_pod(docs: list[dict]) -> dict:
    return one(gateway_docs(docs), "Deployment")["spec"]["template"]["spec"]


def test_gateway_trusted_proxies_pass_through(helm: Path) -> None:
    """``gateway.trustedProxies`` (empty by default: the gateway trusts none) becomes SPEECH_GATEWAY_TRUSTED_PROXIES
    as given, commas and all, and the gateway reads it."""
    from speech_operator.gateway import GatewayConfig
    docs = helm_template(helm, "--set", r"gateway.trustedProxies=10.244.0.0/16\,fd00:10:244::/56")
    (container,) = one(gateway_docs(docs), "Deployment")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["SPEECH_GATEWAY_TRUSTED_PROXIES"] == "10.244.0.0/16,fd00:10:244::/56", env
    assert [str(n) for n in GatewayConfig.from_env(env).trusted] == ["10.244.0.0/16", "fd00:10:244::/56"]


def test_gateway_default_render(helm: Path) -> None:
    """Its own Deployment, Service and ServiceAccount; pods the operator's selector does not select."""
    docs = helm_template(helm)
    deployment, service = one(gateway_docs(docs), "Deployment"), one(gateway_docs(docs), "Service")
    assert "ipFamilyPolicy" not in service["spec"], "unset: the cluster's default"
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == one(operator_docs(docs), "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert container["args"] == ["gateway", "--all-namespaces"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/status", "port": "http"}
    assert container["lifecycle"]["preStop"]["httpGet"] == {"path": "/pre-stop", "port": "http"}
    assert container["ports"] == [{"name": "http", "containerPort": 5000, "protocol": "TCP"}]
    assert container["securityContext"] == RESTRICTED_CONTAINER
    assert pod["terminationGracePeriodSeconds"] == 45
    assert_grace_covers_the_stop(pod, 30)
    assert {e["name"]: e["value"] for e in container["env"]} == {
        "SPEECH_GATEWAY_SHUTDOWN_SECONDS": "30", "SPEECH_GATEWAY_HOLD_SECONDS": "120", "SPEECH_GATEWAY_MAX_HELD": "100",
        "SPEECH_GATEWAY_MAX_HEADER_BYTES": "16384", "SPEECH_GATEWAY_HEADER_SECONDS": "10",
        "SPEECH_GATEWAY_FORM_BUFFER_BYTES": "16777216", "SPEECH_GATEWAY_FORM_BUDGET_BYTES": "67108864",
        "SPEECH_GATEWAY_FORM_READ_SECONDS": "60", "SPEECH_GATEWAY_FORM_PAUSE_SECONDS": "10",
        "SPEECH_GATEWAY_MAX_CONNECTIONS": "200", "SPEECH_GATEWAY_READ_BUFFER_BYTES": "16384", "SPEECH_GATEWAY_MAX_MESSAGE_BYTES": "65536",
        "SPEECH_GATEWAY_SEND_STALL_SECONDS": "30", "SPEECH_GATEWAY_TRUSTED_PROXIES": "", "SPEECH_GATEWAY_CORS_ORIGINS": ""}
    from speech_operator.gateway import GatewayConfig
    config = GatewayConfig.from_env({e["name"]: e["value"] for e in container["env"]})
    assert (config.shutdown_seconds, config.hold_seconds, config.max_held) == (30, 120, 100)
    assert config.head_limits == GatewayConfig().head_limits, "the chart's defaults are the gateway's (the recognizer's)"
    assert config.form_limits == GatewayConfig().form_limits, "the chart's defaults are the gateway's"
    assert config == GatewayConfig(host=config.host, port=config.port), "every default the chart sets is the gateway's"
    assert pod["serviceAccountName"] == one(gateway_docs(docs), "ServiceAccount")["metadata"]["name"] == "speech-operator-gateway"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"] == [{"name": "http", "port": 5000, "targetPort": "http", "protocol": "TCP"}]
    operator_selector = one(operator_docs(docs), "Deployment")["spec"]["selector"]["matchLabels"]
    assert not operator_selector.items() <= labels.items(), "the operator's Deployment would select the gateway's pods"
    assert deployment["spec"]["replicas"] == 2, "a gateway left when one stops"
    budget = one(gateway_docs(docs), "PodDisruptionBudget")
    assert budget["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": deployment["spec"]["selector"]["matchLabels"]}}
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (spread,) = pod["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname" and spread["whenUnsatisfiable"] == "ScheduleAnyway"
    assert spread["labelSelector"]["matchLabels"].items() <= labels.items()
    assert not operator_selector.items() <= budget["spec"]["selector"]["matchLabels"].items()
    alone = helm_template(helm, "--set", "gateway.podDisruptionBudget.enabled=false", "--set", "gateway.spreadOverNodes=false")
    assert not by_kind(gateway_docs(alone), "PodDisruptionBudget")
    assert "topologySpreadConstraints" not in gateway_pod(alone)


def assert_grace_covers_the_stop(pod: dict, shutdown_seconds: float) -> None:
    """The grace (counted from the preStop hook's start) holds the whole stop with seconds to spare: the
    preStop pause, the drain's shutdown_seconds, then aiohttp's shutdown (AFTER_DRAIN_SECONDS);
    tests/gateway/test_shutdown.py checks that a stop takes no longer."""
    from speech_operator.gateway_shutdown import AFTER_DRAIN_SECONDS
    from speech_recognizer import contract

    stop = contract.PRE_STOP_SECONDS + shutdown_seconds + AFTER_DRAIN_SECONDS
    assert pod["terminationGracePeriodSeconds"] >= stop + 5, (pod["terminationGracePeriodSeconds"], stop)


def test_gateway_rbac_is_its_own_reading_and_asking_for_pods(helm: Path) -> None:
    cluster = helm_template(helm)
    role, binding = one(gateway_docs(cluster), "ClusterRole"), one(gateway_docs(cluster), "ClusterRoleBinding")
    assert role["rules"] == rbac_rules("speech-gateway")
    assert rbac_rules("speech-gateway") == [
        {"apiGroups": ["speech-operator.io"], "resources": ["speechtotexts"], "verbs": ["list", "watch"]},
        {"apiGroups": ["speech-operator.io"], "resources": ["speechtotexts/status"], "verbs": ["patch"]}]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "speech-operator-gateway", "namespace": "speech-operator"}]
    namespaced = helm_template(helm, "--set", "watch.mode=namespaced", "--set", "watch.namespaces={a,b}", namespace="ops")
    validate_manifests(namespaced)
    roles = by_kind(gateway_docs(namespaced), "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["a", "b"]
    assert all(r["rules"] == rbac_rules("speech-gateway") for r in roles)
    assert not by_kind(gateway_docs(namespaced), "ClusterRole")
    assert gateway_pod(namespaced)["containers"][0]["args"] == ["gateway", "--namespace=a", "--namespace=b"]


def test_gateway_values(helm: Path) -> None:
    docs = helm_template(helm, "--values", str(FULL_VALUES), namespace="speech")
    deployment, service = one(gateway_docs(docs), "Deployment"), one(gateway_docs(docs), "Service")
    assert deployment["spec"]["replicas"] == 2
    assert service["spec"]["type"] == "LoadBalancer" and service["spec"]["ports"][0]["port"] == 443
    assert service["metadata"]["annotations"] == {"example.com/lb": "internal"}
    assert service["spec"]["ipFamilyPolicy"] == "PreferDualStack"
    pod = deployment["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 75
    assert_grace_covers_the_stop(pod, 60)
    assert pod["containers"][0]["args"][-1] == "--verbose"
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert env == {"SPEECH_GATEWAY_SHUTDOWN_SECONDS": "60", "SPEECH_GATEWAY_HOLD_SECONDS": "90", "SPEECH_GATEWAY_MAX_HELD": "20",
                   "SPEECH_GATEWAY_MAX_HEADER_BYTES": "32768", "SPEECH_GATEWAY_HEADER_SECONDS": "5",
                   "SPEECH_GATEWAY_FORM_BUFFER_BYTES": "8388608", "SPEECH_GATEWAY_FORM_BUDGET_BYTES": "134217728",
                   "SPEECH_GATEWAY_FORM_READ_SECONDS": "30", "SPEECH_GATEWAY_FORM_PAUSE_SECONDS": "5",
                   "SPEECH_GATEWAY_MAX_CONNECTIONS": "400", "SPEECH_GATEWAY_READ_BUFFER_BYTES": "32768",
                   "SPEECH_GATEWAY_MAX_MESSAGE_BYTES": "131072", "SPEECH_GATEWAY_SEND_STALL_SECONDS": "20",
                   "SPEECH_GATEWAY_TRUSTED_PROXIES": "10.244.0.0/16,fd00:10:244::/56",
                   "SPEECH_GATEWAY_CORS_ORIGINS": "https://app.example.com,https://admin.example.com"}
    from speech_operator.gateway import GatewayConfig
    from speech_operator.gateway_openai import FormLimits
    from speech_recognizer.settings import declared
    config = GatewayConfig.from_env(env)
    limits = config.head_limits
    assert (limits.max_header_bytes, limits.header_seconds) == (32768, 5)
    assert config.form_limits == FormLimits(buffer_bytes=8 * 2**20, budget_bytes=128 * 2**20, read_seconds=30, pause_seconds=5)
    assert (config.max_connections, config.read_buffer_bytes, config.max_message_bytes) == (400, 32768, 131072)
    assert config.cors == ("https://app.example.com", "https://admin.example.com")
    assert config.send_stall_seconds == 20
    from speech_operator.gateway import MIN_BUFFER_BYTES
    from speech_operator.gateway_relay import MAX_MESSAGE_BYTES
    gateway_schema = json.loads((CHART / "values.schema.json").read_text())["properties"]["gateway"]["properties"]
    assert [gateway_schema[v]["minimum"] for v in ("maxConnections", "readBufferBytes", "maxMessageBytes")] == [1, MIN_BUFFER_BYTES, MIN_BUFFER_BYTES]
    assert gateway_schema["maxMessageBytes"]["maximum"] == MAX_MESSAGE_BYTES
    schema = json.loads((CHART / "values.schema.json").read_text())["properties"]["gateway"]["properties"]
    for value, setting in (("maxHeaderBytes", "http_max_header_bytes"), ("headerSeconds", "http_header_timeout_seconds"),
                           ("formPauseSeconds", "http_body_timeout_seconds")):
        bounds = declared(setting)
        assert (schema[value]["minimum"], schema[value]["maximum"]) == (bounds.minimum, bounds.maximum), value
    for value, limit in (("formBufferBytes", "buffer_bytes"), ("formBudgetBytes", "budget_bytes"), ("formReadSeconds", "read_seconds"),
                         ("formPauseSeconds", "pause_seconds")):
        assert schema[value]["minimum"] == FormLimits.MINIMUMS[limit], value
    off = helm_template(helm, "--set", "gateway.enabled=false")
    assert not gateway_docs(off)


def test_a_form_buffer_past_the_form_budget_is_refused_as_the_gateway_refuses_it(helm: Path) -> None:
    """The schema cannot compare two values: the template refuses gateway.formBufferBytes above gateway.formBudgetBytes
    and the 64 KiB each form reads ahead uncounted, in the gateway's words with the chart's names (it rendered, and the
    gateway answered such a form alone 503 every time where its bound said 413); at that sum it renders."""
    from speech_operator.gateway import GatewayConfig
    from speech_operator.gateway_openai import UNCOUNTED_BYTES
    budget = 2**20
    fits = helm_template(helm, "--set", f"gateway.formBufferBytes={budget + UNCOUNTED_BYTES}", "--set", f"gateway.formBudgetBytes={budget}")
    GatewayConfig.from_env({e["name"]: e["value"] for e in gateway_pod(fits)["containers"][0]["env"]})
    too_large = {"SPEECH_GATEWAY_FORM_BUFFER_BYTES": str(budget + UNCOUNTED_BYTES + 1), "SPEECH_GATEWAY_FORM_BUDGET_BYTES": str(budget)}
    with pytest.raises(ValueError) as refused:
        GatewayConfig.from_env(too_large)
    said = str(refused.value).replace("SPEECH_GATEWAY_FORM_BUFFER_BYTES", "gateway.formBufferBytes").replace(
        "SPEECH_GATEWAY_FORM_BUDGET_BYTES", "gateway.formBudgetBytes")
    out = run_fail([helm, "template", "x", CHART, "--set", f"gateway.formBufferBytes={budget + UNCOUNTED_BYTES + 1}",
                    "--set", f"gateway.formBudgetBytes={budget}"])
    assert said in out, out


def test_gateway_metrics_are_scraped_with_the_recognizers(helm: Path) -> None:
    """With ``serviceMonitor.enabled``, a ServiceMonitor of its own selects the gateway's Service (and no
    recognizer's), on its port, at the route the gateway serves its metrics on."""
    from speech_operator.gateway import create_app
    from speech_operator.gateway_directory import Directory

    docs = helm_template(helm, "--values", str(FULL_VALUES), namespace="speech")
    validate_manifests(docs)
    monitor, service = one(gateway_docs(docs), "ServiceMonitor"), one(gateway_docs(docs), "Service")
    recognizers = recognizers_monitor(docs)
    assert monitor["metadata"]["namespace"] == "speech" and monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert not recognizers["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [service["metadata"]["namespace"]]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["interval"] == recognizers["spec"]["endpoints"][0]["interval"] == "15s"
    served = {r.resource.canonical for r in create_app(Directory()).router.routes() if r.method == "GET"}
    assert endpoint["path"] == recognizers["spec"]["endpoints"][0]["path"] and endpoint["path"] in served
    without = by_kind(helm_template(helm, "--values", str(FULL_VALUES), "--set", "gateway.enabled=false"), "ServiceMonitor")
    assert not [m for m in without if m["metadata"]["name"] == monitor["metadata"]["name"]]
    assert not by_kind(helm_template(helm), "ServiceMonitor"), "off by default, as the recognizers' is"


def recognizers_monitor(docs: list[dict]) -> dict:
    (monitor,) = [m for m in by_kind(docs, "ServiceMonitor") if m["metadata"]["name"].endswith("-recognizers")]
    return monitor


def test_operator_metrics_are_served_and_scraped(helm: Path) -> None:
    """``metrics.enabled`` (the default): the operator serves /metrics on ``metrics.port`` (``--metrics``, a container
    port of that name), a Service selects the operator's pods only, and with ``serviceMonitor.enabled`` a ServiceMonitor
    selects that Service, honouring the labels the operator exports (each SpeechToText's ``namespace``: the alerts group
    by it). Off: none of them. The port must differ from the liveness probe's."""
    from speech_operator.metrics import address

    docs = helm_template(helm, "--values", str(FULL_VALUES), namespace="speech")
    validate_manifests(docs)
    operator, gateway = one(operator_docs(docs), "Deployment"), one(gateway_docs(docs), "Deployment")
    container = operator["spec"]["template"]["spec"]["containers"][0]
    (flag,) = [a.removeprefix("--metrics=") for a in container["args"] if a.startswith("--metrics=")]
    host, port, path = address(flag)
    assert host == "*" and {"name": "metrics", "containerPort": port, "protocol": "TCP"} in container["ports"]
    service = one(operator_docs(docs), "Service")
    assert service["spec"]["selector"].items() <= operator["spec"]["template"]["metadata"]["labels"].items()
    assert not service["spec"]["selector"].items() <= gateway["spec"]["template"]["metadata"]["labels"].items()
    assert service["spec"]["ports"] == [{"name": "metrics", "port": port, "targetPort": "metrics", "protocol": "TCP"}]
    (monitor,) = [m for m in by_kind(docs, "ServiceMonitor") if m is not recognizers_monitor(docs)
                  and m["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()]
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["speech"]}
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": path, "interval": "15s", "honorLabels": True}]
    assert not recognizers_monitor(docs)["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()

    off = helm_template(helm, "--values", str(FULL_VALUES), "--set", "metrics.enabled=false", namespace="speech")
    container = one(operator_docs(off), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert not [a for a in container["args"] if a.startswith("--metrics")] and "metrics" not in {p["name"] for p in container["ports"]}
    assert not by_kind(operator_docs(off), "Service") and not [m for m in by_kind(off, "ServiceMonitor") if m["metadata"]["name"] == monitor["metadata"]["name"]]
    assert "metrics.port and livenessPort must differ" in run_fail([helm, "template", "x", CHART, "--set", "metrics.port=8080"])


# ---- the gateway's Ingress ----------------------------------------------------------------------
NGINX = "nginx.ingress.kubernetes.io/"
INGRESS_ON = ("--set", "gateway.ingress.enabled=true")


def gateway_ingress(docs: list[dict]) -> dict:
    return one(gateway_docs(docs), "Ingress")


def test_gateway_ingress_is_off_by_default(helm: Path) -> None:
    assert not by_kind(helm_template(helm), "Ingress")
    assert not by_kind(helm_template(helm, *INGRESS_ON, "--set", "gateway.enabled=false"), "Ingress"), "no gateway, no Ingress"


def test_gateway_ingress_routes_to_the_gateway_service(helm: Path) -> None:
    """The Ingress sends every path of its hosts to the gateway's Service, on its port, with the TLS and class asked for."""
    docs = helm_template(helm, *INGRESS_ON, "--set", "gateway.ingress.className=nginx",
                         "--set", "gateway.ingress.tls[0].secretName=speech-tls",
                         "--set", "gateway.ingress.tls[0].hosts[0]=speech.example.com", namespace="speech")
    validate_manifests(docs)
    ingress, service = gateway_ingress(docs), one(gateway_docs(docs), "Service")
    assert ingress["metadata"]["namespace"] == service["metadata"]["namespace"] == "speech"
    assert ingress["metadata"]["labels"] == service["metadata"]["labels"]
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"hosts": ["speech.example.com"], "secretName": "speech-tls"}]
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "speech.example.com"
    assert rule["http"]["paths"] == [{"path": "/", "pathType": "Prefix", "backend": {
        "service": {"name": service["metadata"]["name"], "port": {"number": service["spec"]["ports"][0]["port"]}}}}]

    # a host set with --set alone (a list given replaces the default one, paths and all): "/" still goes to the
    # gateway, on the port its Service has; no class, no TLS, no annotations (nginx's are for nginx)
    docs = helm_template(helm, *INGRESS_ON, "--set", "gateway.ingress.hosts[0].host=stt.internal", "--set", "gateway.service.port=8080")
    validate_manifests(docs)
    ingress, service = gateway_ingress(docs), one(gateway_docs(docs), "Service")
    assert "ingressClassName" not in ingress["spec"] and "tls" not in ingress["spec"] and "annotations" not in ingress["metadata"]
    assert ingress["spec"]["rules"] == [{"host": "stt.internal", "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {
        "service": {"name": "speech-operator-gateway", "port": {"number": 8080}}}}]}}]
    assert service["metadata"]["name"] == "speech-operator-gateway" and service["spec"]["ports"][0]["port"] == 8080


def test_gateway_ingress_nginx_defaults_come_from_the_recognizer(helm: Path) -> None:
    """With an nginx class, the Ingress gets annotations derived from the recognizer's and the gateway's defaults:

    - timeouts longer than anything that may pass with nothing on the wire: an idle Speech SDK connection until
      the recognizer closes it with 1000 (``ConnectionIdleSeconds``; a proxy that cut it first, without a close
      frame, would fail the app's recognizer object for good: tests/usp/test_idle_proxy.py), a request held while
      its locale wakes (``gateway.holdSeconds``), a kept-alive connection (``KEEPALIVE_SECONDS``);
    - the largest body the recognizer takes at its defaults (REST or OpenAI, ``MaxAudioSeconds`` of the widest
      audio), rounded up to the MiB, and not one MiB more;
    - uploads passed on as they arrive (the recognizer refuses before it reads a body).

    What ``annotations`` sets wins; another class gets none of them; ``nginxAnnotations`` null adds none."""
    from speech_recognizer.audio import body_limit
    from speech_recognizer.scratch import upload_bytes
    from speech_recognizer.serving import KEEPALIVE_SECONDS, PING_INTERVAL_SECONDS
    from speech_recognizer.settings import declared

    values = yaml.safe_load((CHART / "values.yaml").read_text())["gateway"]
    seconds = declared("max_audio_seconds").default
    largest = max(body_limit("", seconds)[0], body_limit("audio/wav", seconds)[0],
                  upload_bytes(seconds))  # OpenAI's upload: its file and form fields
    quiet_for = max(declared("connection_idle_seconds").default, values["holdSeconds"], KEEPALIVE_SECONDS, PING_INTERVAL_SECONDS)

    docs = helm_template(helm, *INGRESS_ON, "--set", "gateway.ingress.className=nginx")
    validate_manifests(docs)
    annotations = gateway_ingress(docs)["metadata"]["annotations"]
    assert annotations == values["ingress"]["nginxAnnotations"]
    assert annotations[NGINX + "proxy-body-size"] == f"{math.ceil(largest / 2**20)}m", largest
    for timeout in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(annotations[NGINX + timeout]) > quiet_for, (timeout, quiet_for)
    assert annotations[NGINX + "proxy-request-buffering"] == "off"

    own = helm_template(helm, *INGRESS_ON, "--set", "gateway.ingress.className=nginx-internal",
                        "--set", "gateway.ingress.annotations.nginx\\.ingress\\.kubernetes\\.io/proxy-body-size=100m",
                        "--set", "gateway.ingress.annotations.cert-manager\\.io/cluster-issuer=letsencrypt")
    annotations = gateway_ingress(own)["metadata"]["annotations"]
    assert annotations[NGINX + "proxy-body-size"] == "100m" and annotations["cert-manager.io/cluster-issuer"] == "letsencrypt"
    assert annotations[NGINX + "proxy-read-timeout"] == values["ingress"]["nginxAnnotations"][NGINX + "proxy-read-timeout"]
    other = helm_template(helm, *INGRESS_ON, "--set", "gateway.ingress.className=traefik",
                          "--set", "gateway.ingress.annotations.example\\.com/team=speech")
    assert gateway_ingress(other)["metadata"]["annotations"] == {"example.com/team": "speech"}
    none = helm_template(helm, *INGRESS_ON, "--set", "gateway.ingress.className=nginx", "--set", "gateway.ingress.nginxAnnotations=null")
    assert "annotations" not in gateway_ingress(none)["metadata"]


def test_gateway_ingress_full_values(helm: Path) -> None:
    """ci/full-values.yaml turns the Ingress on: two hosts, TLS, an annotation of its own over nginx's default."""
    docs = helm_template(helm, "--values", str(FULL_VALUES), namespace="speech")
    validate_manifests(docs)
    ingress, service = gateway_ingress(docs), one(gateway_docs(docs), "Service")
    assert [r["host"] for r in ingress["spec"]["rules"]] == ["speech.example.com", "speech-staging.example.com"]
    for rule in ingress["spec"]["rules"]:
        assert [p["backend"]["service"] for p in rule["http"]["paths"]] == [{"name": service["metadata"]["name"], "port": {"number": 443}}]
    assert ingress["spec"]["tls"][0]["hosts"] == ["speech.example.com", "speech-staging.example.com"]
    assert ingress["metadata"]["annotations"][NGINX + "proxy-body-size"] == "64m"
    assert ingress["metadata"]["annotations"][NGINX + "proxy-read-timeout"] == "3600"
