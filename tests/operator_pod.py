"""The operator's own pod (deploy/base/deployment.yaml) run as a kubelet runs it, against kmock.

:func:`run_operator_pod` runs deploy/base's pod spec (args, env, uid 65532, read-only root
with its /tmp emptyDir, no TTY, no HOME from the runtime, the service links of the Services
deploy/ makes in its namespace unless the spec turns them off) with tests/kubelet.py and one change:
it logs in with a kubeconfig (a file volume and ``KUBECONFIG``) naming kmock, which listens in
the pod's network, instead of a service account (kmock speaks plain HTTP; in-cluster login
needs TLS). The operator must pass its liveness probe, create the Deployment of a SpeechToText
made in kmock (its watch loop works), serve that SpeechToText's conditions at the ``--metrics`` URL
it was given (on the container port its Service targets), and stop on SIGTERM.

tests/operator/test_pods_run.py runs it with this checkout as the image, tests/ship/test_images.py
with the built image.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import http.client
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from speech_operator import api

from .kubelet import Image, Pod

ROOT = Path(__file__).resolve().parents[1]


def deploy_base() -> list[dict[str, Any]]:
    """deploy/base's objects: every document of the files its kustomization.yaml lists (what ``kubectl apply -k deploy``
    creates, without kustomize's added labels)."""
    base = ROOT / "deploy/base"
    return [d for name in yaml.safe_load((base / "kustomization.yaml").read_text())["resources"]
            for d in yaml.safe_load_all((base / name).read_text()) if d]


def pod_of(name: str, manifests: list[dict[str, Any]] | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The pod spec of the Deployment ``name`` in ``manifests`` (deploy/base's by default), a copy, and the Services
    made beside it in its namespace (whose links a kubelet gives the pod unless it turns them off: tests/kubelet.py)."""
    docs = manifests or deploy_base()
    deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == name)
    namespace = deployment["metadata"].get("namespace")
    services = [d for d in docs if d["kind"] == "Service" and d["metadata"].get("namespace") == namespace]
    return copy.deepcopy(deployment["spec"]["template"]["spec"]), services


def operator_pod_spec(image_ref: str, manifests: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """deploy/base's operator pod (or that of ``manifests``, e.g. an overlay's) with the kubeconfig change (see the
    module doc)."""
    spec, _ = pod_of("speech-operator", manifests)
    container = spec["containers"][0]
    container["image"] = image_ref
    container["env"] = [e for e in container["env"] if "valueFrom" not in e] + [
        {"name": "POD_NAMESPACE", "value": "speech-operator"},  # a fieldRef, filled in as the kubelet would
        {"name": "KUBECONFIG", "value": "/var/run/kubeconfig/config"}]
    container["volumeMounts"].append({"name": "kubeconfig", "mountPath": "/var/run/kubeconfig", "readOnly": True})
    spec["volumes"].append({"name": "kubeconfig", "secret": {"secretName": "kubeconfig"}})
    return spec


def run_operator_pod(image: Image, image_ref: str, where: Path, manifests: list[dict[str, Any]] | None = None,
                     admit: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> str:
    """Run the operator's pod (see the module doc); a line saying how it went. ``manifests``: where its Deployment
    is (deploy/base's by default); ``admit``: the cluster's admission (tests/openshift_scc.py)."""
    spec = operator_pod_spec(image_ref, manifests)
    if admit is not None:
        spec = admit(spec)
    kubeconfig = where / "kubeconfig"
    kubeconfig.mkdir()
    services = pod_of("speech-operator", manifests)[1]
    with (Pod(spec, image, volumes={"kubeconfig": kubeconfig}, name="speech-operator", services=services) as pod,
          kmock_in(pod) as url):
        (kubeconfig / "config").write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
            "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "kmock"}}],
            "clusters": [{"name": "kmock", "cluster": {"server": url}}],
            "users": [{"name": "kmock", "user": {"token": "test-token"}}]}))
        os.chmod(kubeconfig / "config", 0o644)
        running = pod.start()
        started = time.monotonic()
        try:
            live = pod.wait_probe(running, "livenessProbe", budget=60)
            stt = {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": "ko-kr", "namespace": "speech"},
                   "spec": {"locale": "ko-KR", "eula": "accept"}}
            status, body = kube_request(pod, url, "POST", f"/apis/{api.API_VERSION}/namespaces/speech/{api.PLURAL}", stt)
            assert status in (200, 201), body
            deadline = time.monotonic() + 60
            while (found := kube_request(pod, url, "GET", "/apis/apps/v1/namespaces/speech/deployments/ko-kr"))[0] != 200:
                assert running.process.poll() is None, f"the operator exited with {running.process.returncode}:\n{running.log()}"
                assert time.monotonic() < deadline, f"no Deployment after 60 s:\n{running.log()[-5000:]}"
                time.sleep(0.5)
            worked = time.monotonic() - started
            emitted = json.loads(found[1])["spec"]["template"]["spec"]
            image_of = emitted["containers"][0]["image"]
            assert image_of.startswith("ghcr.io/speech-operator/speech-recognizer:"), image_of
            # the recognizer pods ask for the ids as the operator's setting says (SPEECH_OPERATOR_POD_IDENTITY)
            env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
            platform = env.get("SPEECH_OPERATOR_POD_IDENTITY") == "platform"
            assert ("fsGroup" in emitted["securityContext"]) is not platform, emitted["securityContext"]
            passed, code, text = pod.probe(pod.container("operator"), "livenessProbe")
            assert passed, (code, text)
            exported = scrape_metrics(pod, running.log)
        finally:
            exit_code = pod.stop(running, grace=float(spec.get("terminationGracePeriodSeconds", 30)))
        log = running.log()
        assert "uid not found" not in log and "home directory" not in log, log
        assert exit_code == 0, f"exit {exit_code} after SIGTERM:\n{log[-3000:]}"
    return (f"operator: live after {live:.1f} s, Deployment of a new SpeechToText {worked:.1f} s after start; "
            f"/metrics: {exported}; exit 0 on SIGTERM")


def scrape_metrics(pod: Pod, log: Callable[[], str]) -> str:
    """The operator's ``/metrics`` as Prometheus reaches it: the path of its ``--metrics`` argument, on the container
    port named ``metrics`` (what deploy/base's Service targets), over IPv6 as on an IPv6-only cluster, and over IPv4 (its
    liveness probe came over IPv6 too, :meth:`~tests.kubelet.Pod.probe`). It must show the SpeechToText's Ready condition."""
    from speech_operator.metrics import address

    container = pod.container("operator")
    (url,) = [a.removeprefix("--metrics=") for a in container["args"] if a.startswith("--metrics=")]
    port, path = pod.port(container, "metrics"), address(url)[2]
    assert address(url)[1] == port, (url, container["ports"])
    deadline = time.monotonic() + 30
    while True:
        status, text = pod.http_get(port, path, host="::1")
        lines = [x for x in text.splitlines() if x.startswith("speech_operator_speechtotext_condition{") and 'name="ko-kr"' in x
                 and 'type="Ready"' in x]
        if status == 200 and lines and "speech_operator_active 1.0" in text:
            assert pod.http_get(port, path)[0] == 200, "no /metrics over IPv4"
            return lines[0]
        assert time.monotonic() < deadline, f"no Ready condition of ko-kr at {path} after 30 s: {status} {text[-2000:]}\n{log()[-3000:]}"
        time.sleep(0.5)


def kube_request(pod: Pod, url: str, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, str]:
    """A call to kmock from inside the pod's network, as kubectl there would make it."""
    def call() -> tuple[int, str]:
        conn = http.client.HTTPConnection(url.split("//", 1)[1], timeout=10)
        try:
            conn.request(method, path, body=json.dumps(body) if body is not None else None,
                         headers={"Content-Type": "application/json", "User-Agent": "test-client"})  # kubectl's part
            resp = conn.getresponse()
            return resp.status, resp.read().decode(errors="replace")
        finally:
            conn.close()
    return pod.in_network(call)


@contextlib.contextmanager
def kmock_in(pod: Pod) -> Iterator[str]:
    """kmock's Kubernetes emulator listening in the pod's network (what an API server would be); yields its URL."""
    import kmock

    from tests.operator.conftest import Emulator, declare

    box: dict[str, Any] = {}

    def start() -> Callable[[], None]:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)

        async def up() -> str:
            emulator = Emulator()
            await emulator.__aenter__()
            declare(emulator)
            server = kmock.Server(emulator)
            await server.__aenter__()
            box.update(emulator=emulator, server=server)
            return str(emulator.url).rstrip("/")

        box["url"] = loop.run_until_complete(up())
        box["loop"] = loop
        return loop.run_forever

    pod.serve_in_network(start)
    loop = box["loop"]
    try:
        yield str(box["url"])
    finally:
        async def down() -> None:
            await box["server"].__aexit__(None, None, None)
            await box["emulator"].__aexit__(None, None, None)
        asyncio.run_coroutine_threadsafe(down(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
