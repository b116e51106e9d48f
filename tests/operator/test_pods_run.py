"""Run what the builders emit: the pod of every SpeechToText in deploy/examples, run as a kubelet would.

For each example the Deployment's pod spec is run by tests/kubelet.py with this checkout as
the image (the image itself: tests/ship/test_images.py): its init containers in order,
each to a successful end, then the recognizer with exactly the emitted args and env
(Secret values filled in from the example's Secret), as uid 65532 with fsGroup 65532, a
read-only root and the emptyDirs, PVCs and hostPaths the spec mounts; then every probe
exactly as a kubelet sends it (path, port, no headers): startup, readiness, liveness.

What differs from a cluster, and why:
- the model download init container reaches the catalog at a file server inside the
  pod's network (``ModelCatalogUrl`` added to its env: there is no Internet here); the
  catalog file of every locale is the one model this machine has (ko-KR), so an en-US
  pod serves Korean, which is all a probe can tell;
- PVCs are empty host directories owned by root (a volume type without fsGroup
  support, like NFS: the case the chown init container exists for); a PVC the example
  declares to hold the model is filled with that model first;
- no kube-proxy, Service or scheduler: probes go to the pod's loopback.
"""

from __future__ import annotations

import base64
import copy
import json
import shutil
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from speech_recognizer import contract
from speech_recognizer.models import CATALOG, installed_packages

from speech_operator import api, builders
from speech_operator.config import OperatorConfig

from tests.kubelet import Pod, file_server, host_image

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "deploy" / "examples").glob("*.yaml"))
CONFIG = OperatorConfig()


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _pod_cases() -> dict[str, tuple[Path, str]]:
    """One case per distinct pod spec (the same spec twice, e.g. en-US in two examples, runs once)."""
    cases: dict[str, tuple[Path, str]] = {}
    seen: dict[str, str] = {}
    for path in EXAMPLES:
        for doc in _docs(path):
            if doc["kind"] == api.KIND:
                stt = _stt(doc)
                key = json.dumps(pod_of(stt), sort_keys=True)
                case = f"{path.stem}:{stt.name}"
                if key in seen:
                    cases[f"{seen[key]}={case}"] = cases.pop(seen[key])
                    seen[key] = f"{seen[key]}={case}"
                else:
                    seen[key] = case
                    cases[case] = (path, stt.name)
    return cases


def secrets_of(docs: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for doc in docs:
        if doc["kind"] == "Secret":
            values = {k: base64.b64decode(v).decode() for k, v in (doc.get("data") or {}).items()}
            out[doc["metadata"]["name"]] = {**values, **(doc.get("stringData") or {})}
    return out


@pytest.fixture(scope="module")
def ko_model() -> Path:
    return installed_packages()["ko-KR"]


@pytest.fixture(scope="module")
def catalog_zip(ko_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ko-KR model zipped as Vosk's catalog zips are (one top folder), stored, not deflated."""
    out = tmp_path_factory.mktemp("catalog") / "model.zip"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for path in sorted(ko_model.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".py":
                archive.write(path, f"vosk-model/{path.relative_to(ko_model)}")
    return out


def _stt(doc: dict[str, Any]) -> api.SpeechToText:
    return api.SpeechToText.model_validate({**doc, "metadata": {**doc["metadata"], "namespace": "speech", "uid": "u-1"}})


def pod_of(stt: api.SpeechToText) -> dict[str, Any]:
    return builders.deployment(stt, CONFIG)["spec"]["template"]["spec"]


CASES = _pod_cases()


def host_volumes(stt: api.SpeechToText, pod: dict[str, Any], where: Path, ko_model: Path) -> dict[str, Path]:
    """A root-owned host directory for every volume that is not an emptyDir; the model volume of
    ``download: false`` is filled with the model for the locale."""
    out = {}
    for volume in pod["volumes"]:
        if "emptyDir" in volume:
            continue
        path = where / volume["name"]
        path.mkdir(parents=True)
        out[volume["name"]] = path
        if volume["name"] == "models" and not stt.spec.model.download:
            shutil.copytree(ko_model, path / stt.spec.locale, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    return out


@pytest.mark.parametrize(("path", "name"), list(CASES.values()), ids=list(CASES))
def test_emitted_pod_runs_and_passes_every_probe(path: Path, name: str, tmp_path: Path, ko_model: Path,
                                                 catalog_zip: Path) -> None:
    docs = _docs(path)
    doc = next(d for d in docs if d["kind"] == api.KIND and d["metadata"]["name"] == name)
    stt = _stt(doc)
    spec = copy.deepcopy(pod_of(stt))
    image = host_image()
    volumes = host_volumes(stt, spec, tmp_path / "volumes", ko_model)
    with Pod(spec, image, secrets=secrets_of(docs), volumes=volumes, name=name) as pod:
        catalog = {CATALOG[stt.spec.locale]: catalog_zip}
        with file_server(pod, catalog) as catalog_url:
            for init in pod.init_containers():
                container = pod.container(init)
                if init == "download-model":  # the one change: the catalog is local (see the module doc)
                    container.setdefault("env", []).append({"name": contract.MODEL_CATALOG_URL.replace(":", "__"),
                                                            "value": catalog_url})
                done = pod.run_init(init)
                assert done.returncode == 0, f"init container {init} failed:\n{done.log}"
        recognizer = pod.container(builders.CONTAINER)
        assert {"startupProbe", "readinessProbe", "livenessProbe"} <= set(recognizer)
        running = pod.start()
        try:
            started = pod.wait_probe(running, "startupProbe")
            ready = pod.wait_probe(running, "readinessProbe", budget=300)
            for _ in range(3):  # liveness keeps passing once ready (it failed with 403 under an ApiKey)
                passed, status, body = pod.probe(recognizer, "livenessProbe")
                assert passed, f"liveness: HTTP {status} {body}\n{running.log()[-3000:]}"
            assert running.process.poll() is None, running.log()
            print(f"{path.name}:{name}: started after {started:.1f} s, ready {ready:.1f} s later")
        finally:
            code = pod.stop(running, grace=60)
        assert code == 0 or code == -15, f"exit {code}:\n{running.log()[-3000:]}"
        for name_, where in volumes.items():  # the chown step gave the root-owned volumes to the recognizer's user
            assert (where.stat().st_uid, where.stat().st_gid) == (contract.RUN_AS_USER, contract.RUN_AS_GROUP), name_
