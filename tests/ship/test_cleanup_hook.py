"""The chart's pre-delete hook: its rendered objects, and the Job's command run as the kubelet
would run it (the operator image's entrypoint ``speech-operator`` with the Job's args) against
kmock with the real operator releasing the SpeechToTexts."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from speech_operator.kube import USER_AGENT
from tests import rbac
from tests.operator.conftest import Cluster, apiserver, cluster, exported, namespaces, relist_settle_seconds, watch_seconds  # noqa: F401  (fixtures: kmock + the operator)

from .conftest import CHART, ROOT, by_kind, helm_template, one, validate_manifests

FULL_VALUES = CHART / "ci" / "full-values.yaml"
NAMES = ["en-us", "korean", "de-de"]  # what full-values.yaml lists


def hook(helm: Path, *args: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The hook's Job container and its Role, rendered with full-values.yaml in namespace speech."""
    docs = helm_template(helm, "--values", str(FULL_VALUES), *args, namespace="speech")
    validate_manifests(docs)
    job = one(docs, "Job")
    (role,) = [r for r in by_kind(docs, "Role") if r["metadata"]["name"].endswith("-cleanup")]
    return job["spec"]["template"]["spec"]["containers"][0], role


def test_hook_renders_only_with_recognizers(helm: Path) -> None:
    assert not by_kind(helm_template(helm), "Job")
    assert not by_kind(helm_template(helm, "--values", str(FULL_VALUES), "--set", "cleanupOnUninstall.enabled=false",
                                     namespace="speech"), "Job")
    docs = helm_template(helm, "--values", str(FULL_VALUES), namespace="speech")
    job = one(docs, "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-delete"
    container, role = hook(helm)
    assert "command" not in container  # the operator image's entrypoint: speech-operator
    assert container["args"] == ["cleanup", "--namespace=speech", "--timeout=300", *NAMES]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert role["rules"] == [{"apiGroups": ["speech-operator.io"], "resources": ["speechtotexts"],
                              "resourceNames": NAMES, "verbs": ["get", "delete"]}]
    for doc in docs:
        if doc["metadata"]["name"].endswith("-cleanup"):
            assert doc["metadata"]["annotations"]["helm.sh/hook"] == "pre-delete", doc["kind"]


def bind(role: dict[str, Any]) -> None:
    """The hook's requests are judged (tests/conftest.py) by its rendered Role, bound in its namespace, as the chart binds it."""
    meta = role["metadata"]
    rbac.BOUND[f"{USER_AGENT} cleanup"] = rbac.Identity(meta["name"], (rbac.Binding(
        tuple(role["rules"]), meta["namespace"], f"Role {meta['name']} by a RoleBinding in {meta['namespace']}"),))


def entrypoint() -> str:
    """The operator image's entrypoint: the ``speech-operator`` console script of this install."""
    found = shutil.which("speech-operator", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    assert found, "speech-operator is not installed (pip install -e '.[operator]')"
    return found


async def run_hook(args: list[str]) -> tuple[int, str]:
    """The Job's container as a kubelet starts it; credentials from KUBECONFIG (kmock), as no
    service account exists here."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'operator'}{os.pathsep}{ROOT / 'recognizer'}"}
    proc = await asyncio.create_subprocess_exec(entrypoint(), *args, env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


def stt(name: str, **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "speech-operator.io/v1alpha1", "kind": "SpeechToText",
            "metadata": {"name": name, "namespace": "speech", **meta},
            "spec": {"locale": "en-US", "eula": "accept", "replicas": 1}}


async def finalized(cluster: Cluster, name: str) -> bool:
    body = await cluster.api.get(cluster.stt_url(name)) or {}
    return bool(body.get("metadata", {}).get("finalizers"))


async def test_the_hook_deletes_and_waits_until_the_operator_released_them(cluster: Cluster, helm3: Path) -> None:
    container, role = hook(helm3)
    bind(role)
    for name in NAMES[:2]:  # the third was deleted by hand before the uninstall
        await cluster.api.create(cluster.stt_url(), stt(name))
        await cluster.eventually(lambda name=name: finalized(cluster, name))
        await cluster.eventually(lambda name=name: cluster.api.get(cluster.url("apps/v1", "deployments", name)))

    code, out = await run_hook(container["args"])
    assert code == 0, out
    assert "speechtotext/de-de is already gone" in out and "speechtotext/korean is gone" in out
    for name in NAMES:
        assert await cluster.api.get(cluster.stt_url(name)) is None
        assert await cluster.api.get(cluster.url("apps/v1", "deployments", name)) is None  # the operator ran
    # What the hook sent is what its Role grants: get and delete of those names, nothing else.
    (rule,) = role["rules"]
    sent = [r for r in list(cluster.emulator) if r.headers.get("User-Agent") == f"{USER_AGENT} cleanup"]
    assert sent
    for r in sent:
        assert (r.method.lower(), r.resource.plural, r.name) in {
            (v, p, n) for v in ("get", "delete") for p in rule["resources"] for n in rule["resourceNames"]}


async def test_the_hook_fails_when_a_finalizer_never_goes(cluster: Cluster, helm3: Path) -> None:
    container, role = hook(helm3, "--set", "cleanupOnUninstall.timeoutSeconds=10")  # the least the chart takes
    assert "--timeout=10" in container["args"]
    bind(role)
    await cluster.api.create(cluster.stt_url(), stt("korean", finalizers=["example.test/hold"]))
    # Run with 1 s, not the chart's least: what is checked is that the command gives up and says so.
    code, out = await run_hook(["--timeout=1" if arg == "--timeout=10" else arg for arg in container["args"]])
    assert code == 1 and "still there after 1 s" in out and "korean" in out, out
