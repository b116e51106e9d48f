"""The gateway's own pod (deploy/base/gateway.yaml) run as a kubelet runs it, against kmock.

:func:`run_gateway_pod` runs deploy/base's gateway pod spec (the chart's default renders the same
container: tests/ship/test_kustomize.py) with tests/kubelet.py: its exact args and env (with the service links of
the Services deploy/ makes in its namespace, its own speech-gateway among them, unless the spec turns them off), uid 65532,
a read-only root with its /tmp emptyDir, its probes as a kubelet sends them (no headers), its
preStop hook, then SIGTERM. One change, as for the operator's pod (tests/operator_pod.py): it logs
in with a kubeconfig (a file volume and ``KUBECONFIG``) naming kmock, which listens in the pod's
network, instead of its ServiceAccount (kmock speaks plain HTTP; in-cluster login needs TLS).
The gateway must turn ready once it has listed the SpeechToTexts, route the locale of one made in
kmock (``GET /``), hold the pod ~5 s in its preStop hook, and exit 0 on SIGTERM.

tests/gateway/test_pod.py runs it with this checkout as the image, tests/ship/test_images.py with
the built operator image.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from speech_operator import api

from .kubelet import Image, Pod
from .operator_pod import kmock_in, kube_request, pod_of


def gateway_pod_spec(image_ref: str | None = None, manifests: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """deploy/base's gateway pod (or that of ``manifests``, e.g. an overlay's) with the kubeconfig change (see the
    module doc)."""
    spec, _ = pod_of("speech-gateway", manifests)
    container = spec["containers"][0]
    if image_ref:
        container["image"] = image_ref
    container["env"].append({"name": "KUBECONFIG", "value": "/var/run/kubeconfig/config"})
    container["volumeMounts"].append({"name": "kubeconfig", "mountPath": "/var/run/kubeconfig", "readOnly": True})
    spec["volumes"].append({"name": "kubeconfig", "secret": {"secretName": "kubeconfig"}})
    return spec


def run_gateway_pod(image: Image, where: Path, image_ref: str | None = None, manifests: list[dict[str, Any]] | None = None,
                    admit: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> str:
    """Run the gateway's pod (see the module doc); a line saying how it went. ``manifests``: where its Deployment is
    (deploy/base's by default); ``admit``: the cluster's admission (tests/openshift_scc.py)."""
    spec = gateway_pod_spec(image_ref, manifests)
    if admit is not None:
        spec = admit(spec)
    (container,) = spec["containers"]
    kubeconfig = where / "kubeconfig"
    kubeconfig.mkdir()
    services = pod_of("speech-gateway", manifests)[1]
    with (Pod(spec, image, volumes={"kubeconfig": kubeconfig}, name="speech-gateway", services=services) as pod,
          kmock_in(pod) as url):
        (kubeconfig / "config").write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
            "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "kmock"}}],
            "clusters": [{"name": "kmock", "cluster": {"server": url}}],
            "users": [{"name": "kmock", "user": {"token": "gateway-token"}}]}))
        os.chmod(kubeconfig / "config", 0o644)
        running = pod.start()
        try:
            ready = pod.wait_probe(running, "readinessProbe", budget=60)
            assert pod.probe(container, "livenessProbe")[0], running.log()
            stt = {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": "ko-kr", "namespace": "speech"},
                   "spec": {"locale": "ko-KR", "eula": "accept"}}
            status, body = kube_request(pod, url, "POST", f"/apis/{api.API_VERSION}/namespaces/speech/{api.PLURAL}", stt)
            assert status in (200, 201), body
            deadline = time.monotonic() + 10
            while json.loads(pod.http_get(5000, "/")[1] or "{}").get("locales") != ["ko-KR"]:
                assert running.process.poll() is None, f"the gateway exited with {running.process.returncode}:\n{running.log()}"
                assert time.monotonic() < deadline, f"ko-KR not routed 10 s after its SpeechToText was made:\n{running.log()[-3000:]}"
                time.sleep(0.2)
            status, body = pod.http_get(5000, "/speech/recognition/conversation/cognitiveservices/v1?language=xx-YY")
            assert status == 405, "a GET on a recognition path is not a recognition"
            hook = container["lifecycle"]["preStop"]["httpGet"]
            started = time.monotonic()
            status, _ = pod.http_get(pod.port(container, hook["port"]), hook["path"], timeout=30)
            held = time.monotonic() - started
            assert status == 200 and held >= 4.5, f"preStop answered {status} after {held:.1f} s"
        finally:
            exit_code = pod.stop(running, grace=float(spec["terminationGracePeriodSeconds"]))
        log = running.log()
        assert "Traceback" not in log, log
        assert exit_code == 0, f"exit {exit_code} after SIGTERM:\n{log[-3000:]}"
    return f"gateway: ready after {ready:.1f} s, a new SpeechToText's locale routed, preStop {held:.1f} s; exit 0 on SIGTERM"
