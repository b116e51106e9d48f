"""Run what deploy/ emits for the gateway: its pod (deploy/base/gateway.yaml; the chart's default
renders the same container, tests/ship/test_kustomize.py) run as a kubelet runs it (tests/kubelet.py,
this checkout as the operator image): its exact args and env, uid 65532, a read-only root, its
probes as a kubelet sends them (no headers), its preStop hook, then SIGTERM.

What differs from a cluster, and why: the API server is kmock, inside the pod's network; a cluster
gives every pod its ServiceAccount's token and ``KUBERNETES_SERVICE_HOST``, and the official
client's in-cluster login then speaks TLS, which kmock does not. So the pod gets what ``kubectl``
would use instead: a kubeconfig for kmock, mounted read-only, named by ``KUBECONFIG`` (the
gateway's credentials are the operator's: the service account first, else the kubeconfig).
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path

import kmock
import yaml

from speech_operator import api

from tests.kubelet import Pod, host_image

from .conftest import NAMESPACE, Emulator, declare, kubeconfig_for, speech_to_text

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "deploy" / "base" / "gateway.yaml"


def gateway_pod_spec() -> dict:
    docs = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    return copy.deepcopy(deployment["spec"]["template"]["spec"])


def apiserver(box: dict) -> Callable[[], Callable[[], None]]:
    """kmock holding one SpeechToText (ko-KR), started on the calling thread (inside the pod's network)."""
    def start() -> Callable[[], None]:
        loop = asyncio.new_event_loop()

        async def up() -> None:
            emulator = await Emulator().__aenter__()
            server = await kmock.Server(emulator).__aenter__()
            declare(emulator)
            box["url"] = str(emulator.url).rstrip("/")
            box["emulator"], box["server"] = emulator, server
            await server.client.post(f"/apis/{api.API_VERSION}/namespaces/{NAMESPACE}/{api.PLURAL}",
                                     json=speech_to_text("ko-kr", "ko-KR", 5000))

        loop.run_until_complete(up())
        box["loop"] = loop
        return loop.run_forever
    return start


def test_the_gateway_pod_runs_as_a_kubelet_runs_it(tmp_path: Path) -> None:
    spec = gateway_pod_spec()
    (container,) = spec["containers"]
    kube = tmp_path / "kube"
    kube.mkdir()
    spec["volumes"].append({"name": "kube-api", "hostPath": {"path": str(kube)}})
    container["volumeMounts"].append({"name": "kube-api", "mountPath": "/var/run/kmock", "readOnly": True})
    container["env"].append({"name": "KUBECONFIG", "value": "/var/run/kmock/kubeconfig"})
    image = host_image(entrypoint=("speech-operator",))  # the operator image's ENTRYPOINT ...
    image = dataclasses.replace(image, env={**image.env, "HOME": "/tmp"})  # ... and its ENV HOME=/tmp (Dockerfile)
    with Pod(spec, image, volumes={"kube-api": kube}, name="gateway-0") as pod:
        box: dict = {}
        thread = pod.serve_in_network(apiserver(box))
        (kube / "kubeconfig").write_text(yaml.safe_dump(kubeconfig_for(box["url"], {"token": "gateway-token"})))
        (kube / "kubeconfig").chmod(0o644)
        running = pod.start()
        pod.wait_probe(running, "readinessProbe", budget=60)
        assert pod.probe(container, "livenessProbe")[0], running.log()
        status, body = pod.http_get(5000, "/")
        assert status == 200 and json.loads(body)["locales"] == ["ko-KR"], body
        status, body = pod.http_get(5000, "/speech/recognition/conversation/cognitiveservices/v1?language=xx-YY")
        assert status == 405, "a GET on a recognition path is not a recognition"
        hook = container["lifecycle"]["preStop"]["httpGet"]
        started = time.monotonic()
        status, _ = pod.http_get(pod.port(container, hook["port"]), hook["path"], timeout=30)
        assert status == 200 and time.monotonic() - started >= 4.5, "the preStop hook holds the pod ~5 s"
        code = pod.stop(running, grace=spec["terminationGracePeriodSeconds"])
        assert code == 0, running.log()
        assert "Traceback" not in running.log(), running.log()
        loop = box["loop"]

        async def down() -> None:
            await box["server"].__aexit__(None, None, None)
            await box["emulator"].__aexit__(None, None, None)
            for task in asyncio.all_tasks() - {asyncio.current_task()}:
                task.cancel()

        asyncio.run_coroutine_threadsafe(down(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
