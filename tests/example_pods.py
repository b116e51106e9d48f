"""The pod of every SpeechToText in deploy/examples, as the builders emit it, run the way a kubelet runs it.

:func:`run_example` is the whole life of one such pod (tests/kubelet.py): its init
containers in order, each to a successful end; the recognizer with exactly the emitted args
and env (Secret values filled in from the example's Secret), as uid 65532 with fsGroup 65532
(or, through a cluster's admission such as OpenShift's, as the uid, gid and fsGroup it assigns),
a read-only root and the volumes the spec mounts; every probe exactly as a kubelet sends it
(path, port, no headers): startup, readiness, liveness; the API reference (/swagger, its
document and Swagger UI's files, served from the image itself); a transcript through the REST route;
then deletion as a kubelet deletes a pod: the preStop hook, SIGTERM, and an exit of its own,
with status 0, within terminationGracePeriodSeconds.

tests/operator/test_pods_run.py runs two of them with this checkout as the image, tests/ship/test_images.py
with the built image. What differs from a cluster, and why:

- the model download init container runs as emitted where the image has the locale's model
  (ko-KR: it finds it and downloads nothing); for another locale it cannot reach Vosk's
  catalog (no Internet here), and a local mirror of it cannot serve Vosk's own zips, which the
  download checks against the sizes and MD5s Vosk publishes; so it downloads the one model this
  machine has (ko-KR) from a file server inside the pod's network instead: the SpeechToText is
  given that server's zip as its ``spec.model.url`` and ``sha256``, and its pod is the one the
  operator emits for that (its models folder sized for a model of the user's own: a catalog
  model's is sized for that model's own zip, which the ko-KR one would not fit). An
  en-US pod then serves Korean, which is all a probe or a transcript can tell;
- PVCs are empty host directories owned by root (a volume type without fsGroup support, like
  NFS: the case the chown init container exists for); a PVC the example declares to hold the
  model is filled with that model first;
- no kube-proxy, Service or scheduler: probes and requests go to the pod's loopback.
"""

from __future__ import annotations

import base64
import copy
import functools
import hashlib
import http.client
import json
import os
import shutil
import tempfile
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from speech_operator import api, builders
from speech_operator.config import OperatorConfig
from speech_recognizer import contract

from .kubelet import Image, Pod, Running, file_server
from .pods_at_once import stopping
from .support import av_encode, free_port, mp3_encode

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "deploy" / "examples").glob("*.yaml"))


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def stt_of(doc: dict[str, Any]) -> api.SpeechToText:
    return api.SpeechToText.model_validate({**doc, "metadata": {**doc["metadata"], "namespace": "speech", "uid": "u-1"}})


def pod_spec(stt: api.SpeechToText, config: OperatorConfig) -> dict[str, Any]:
    return builders.deployment(stt, config)["spec"]["template"]["spec"]


#: The locale whose model the image carries (and the only model this machine has: see the module doc).
IMAGE_LOCALE = "ko-KR"


def locale_free(stt: api.SpeechToText, config: OperatorConfig) -> str:
    """``stt``'s pod spec with its locale and name (the names made of them: args, labels) written as placeholders,
    and whether the image carries its model: what a run of it can tell apart from another's (see :func:`cases`)."""
    spec = json.dumps(pod_spec(stt, config), sort_keys=True)
    for word, placeholder in ((stt.spec.locale, "<locale>"), (stt.name, "<name>")):
        spec = spec.replace(word, placeholder)
    return f"{stt.spec.locale == IMAGE_LOCALE} {spec}"


def cases(config: OperatorConfig) -> dict[str, tuple[Path, str]]:
    """id -> (example, SpeechToText name): one per pod spec a run can tell apart, the first SpeechToText of each.

    Pods whose specs are the same but for the locale (and the name made of it) run once (their ids joined by ``=``):
    a run serves the one model this machine has whatever the locale (module doc), so the locale is only the name of
    the folder the download step unpacks it into and the recognizer loads it from; the pod of the locale the image
    carries (:data:`IMAGE_LOCALE`, no download) is told apart. :func:`locale_free` is the key; a spec that differs in
    anything else runs on its own."""
    found: dict[str, tuple[Path, str]] = {}
    ids: dict[str, str] = {}
    for path in EXAMPLES:
        for doc in docs(path):
            if doc["kind"] != api.KIND:
                continue
            stt = stt_of(doc)
            key = locale_free(stt, config)
            case = f"{path.stem}:{stt.name}"
            if key in ids:
                found[f"{ids[key]}={case}"] = found.pop(ids[key])
                ids[key] = f"{ids[key]}={case}"
            else:
                ids[key] = case
                found[case] = (path, stt.name)
    return found


#: The pods the operator emits with the ids left to the platform (SPEECH_OPERATOR_POD_IDENTITY=platform, OpenShift)
#: that tests/ship/test_images.py runs in the built image: one of each way a pod gets its model and keeps its files,
#: which is what the uid OpenShift assigns meets in the image (the model baked in; downloaded into an emptyDir, with
#: an API key from a Secret; PVCs for the model, the license and the output). The other examples differ from these in
#: locale, replicas or autoscaling only; every one runs in the image with the fixed ids, and OpenShift's admission of
#: every one is checked in tests/operator/test_openshift.py.
PLATFORM_KINDS = ("multi-locale:ko-kr", "api-key-secret:en-us", "disconnected:en-us-offline")


def secrets_of(objects: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for doc in objects:
        if doc["kind"] == "Secret":
            values = {k: base64.b64decode(v).decode() for k, v in (doc.get("data") or {}).items()}
            out[doc["metadata"]["name"]] = {**values, **(doc.get("stringData") or {})}
    return out


def zip_model(model: Path, out: Path) -> Path:
    """A model zipped as Vosk's catalog zips are (one top folder); stored, not deflated."""
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for path in sorted(model.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".py":
                archive.write(path, f"vosk-model/{path.relative_to(model)}")
    return out


def host_volumes(stt: api.SpeechToText, spec: dict[str, Any], where: Path, model: Path,
                 owner: tuple[int, int] = (0, 0)) -> dict[str, Path]:
    """A host directory owned by ``owner`` (root: what the chown step is for) for every volume that is not an
    emptyDir; the model volume of ``download: false`` is filled with the model for the locale."""
    out = {}
    for volume in spec["volumes"]:
        if "emptyDir" in volume:
            continue
        path = where / volume["name"]
        path.mkdir(parents=True)
        out[volume["name"]] = path
        if volume["name"] == "models" and not stt.spec.model.download:
            shutil.copytree(model, path / stt.spec.locale, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
        for item in [path, *path.rglob("*")]:
            os.lchown(item, *owner)
    return out


def transcribe(pod: Pod, wav: Path, key: str | None, content_type: str = "audio/wav") -> dict[str, Any]:
    """POST a WAV (or audio of ``content_type``) to the REST route inside the pod's network, as a client of its Service would."""
    def post() -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", contract.PORT, timeout=120)
        try:
            headers = {"Content-Type": content_type, **({contract.KEY_HEADER: key} if key else {})}
            conn.request("POST", contract.RECOGNITION_PATHS[1] + "?language=ko-KR", body=wav.read_bytes(), headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read().decode(errors="replace")
        finally:
            conn.close()
    status, body = pod.in_network(post)
    assert status == 200, f"REST recognition: HTTP {status} {body}"
    return json.loads(body)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


#: The one encoding of a WAV at a time (:func:`uploads`): the pods of a pool may ask at once.
_ENCODING = threading.Lock()


def uploads(wav: Path, where: Path) -> list[tuple[Path, str]]:
    """``wav`` as the other uploads :func:`run_example` posts, written into ``where``, each with its Content-Type: WebM
    (Opus) and M4A (AAC), encoded by PyAV, and MP3, by libsndfile. Every pod posts the same audio, so each version of
    the WAV is encoded once in a worker, not once a pod (the three encodings cost about 6 CPU s)."""
    with _ENCODING:
        encoded = _encoded(wav, wav.stat().st_mtime_ns, wav.stat().st_size)
    out = []
    for name, content_type, data in encoded:
        (where / name).write_bytes(data)
        out.append((where / name, content_type))
    return out


@functools.cache
def _encoded(wav: Path, _mtime_ns: int, _size: int) -> tuple[tuple[str, str, bytes], ...]:
    with tempfile.TemporaryDirectory() as tmp:
        made = ((av_encode(wav, Path(tmp) / "speech.webm", "webm", "libopus", 48000, 32000), "audio/webm"),
                (av_encode(wav, Path(tmp) / "speech.m4a", "ipod", "aac", 16000, 48000), "audio/mp4"),
                (mp3_encode(wav, Path(tmp) / "speech.mp3"), "audio/mpeg"))
        return tuple((path.name, content_type, path.read_bytes()) for path, content_type in made)


def run_example(path: Path, name: str, image: Image, config: OperatorConfig, where: Path, model: Path,
                catalog_zip: Path, wav: Path, model_locale: str = "ko-KR", *, spec_update: dict[str, Any] | None = None,
                volume_owner: tuple[int, int] = (0, 0), admit: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                fs_group_claims: bool = False, on_ready: Callable[[Pod, Running], None] | None = None) -> str:
    """Run the pod of SpeechToText ``name`` of example ``path`` (see the module doc); a line saying how it went.

    ``model`` is the folder of the ``model_locale`` model (the image has it too), ``catalog_zip`` that model zipped;
    ``spec_update`` changes top-level fields of the example's spec, ``volume_owner`` owns its PVCs and hostPaths.
    ``admit`` is the cluster's admission (the pod spec as admitted, e.g. with the ids it assigns: tests/openshift_scc.py);
    ``fs_group_claims``: the PVCs are on storage that supports fsGroup (tests/kubelet.py); ``on_ready`` looks at the
    running recognizer once it has transcribed.
    """
    objects = docs(path)
    doc = copy.deepcopy(next(d for d in objects if d["kind"] == api.KIND and d["metadata"]["name"] == name))
    doc["spec"].update(spec_update or {})
    port = free_port()  # the file server's, in the pod's network
    if doc["spec"]["locale"] != model_locale and doc["spec"].get("model", {}).get("download", True):  # see the module doc
        doc["spec"]["model"] = {**doc["spec"].get("model", {}), "url": f"http://127.0.0.1:{port}/model.zip",
                                "sha256": sha256_of(catalog_zip)}
    stt = stt_of(doc)
    spec = copy.deepcopy(pod_spec(stt, config))
    if admit is not None:
        spec = admit(spec)
    volumes = host_volumes(stt, spec, where / "volumes", model, volume_owner)
    secrets = secrets_of(objects)
    with Pod(spec, image, secrets=secrets, volumes=volumes, name=name, fs_group_claims=fs_group_claims) as pod:
        with file_server(pod, {"model.zip": catalog_zip}, port=port):
            for init in pod.init_containers():
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
            # the API reference's page, its document and its Swagger UI files come from the image itself
            for route in ("/swagger", "/openapi.json", "/swagger/ui/swagger-ui-bundle.js"):
                status, body = pod.http_get(contract.PORT, route)
                assert status == 200, (route, status, body[:300])
            key = secrets[stt.spec.apiKeySecretRef.name][stt.spec.apiKeySecretRef.key] if stt.spec.apiKeySecretRef else None
            answer = transcribe(pod, wav, key)
            assert answer["RecognitionStatus"] == "Success" and answer["DisplayText"].strip(), answer
            # WebM and M4A: FFmpeg's child process starts, within its limits, as the pod's user on its read-only root;
            # MP3: the system's libmpg123 (the image installs it), not the wheel's libsndfile fallback (speech_recognizer.audio)
            for encoded, content_type in uploads(wav, where):
                heard = transcribe(pod, encoded, key, content_type)
                assert heard["RecognitionStatus"] == "Success" and heard["DisplayText"].strip(), (encoded.name, heard)
            assert "libsndfile instead" not in running.log(), running.log()[-3000:]
            assert running.process.poll() is None, running.log()
            if on_ready is not None:
                on_ready(pod, running)
            # deleted as a kubelet deletes a pod: the preStop hook, SIGTERM, the drain, an exit within the grace period;
            # waiting, all of it, so the pool's next pod starts meanwhile (tests/pods_at_once.py)
            stopping()
            code, took = pod.terminate(running)
        finally:
            pod.stop(running, grace=0)
        # 0 only after a drain (uvicorn's own SIGTERM handling ends in -15; the end of the grace period in -9)
        assert code == 0, f"exit {code}:\n{running.log()[-3000:]}"
    chowned = any(c["name"] == "chown" for c in spec.get("initContainers", []))
    fs_group = spec["securityContext"].get("fsGroup")
    for volume, where_ in volumes.items():
        owner = where_.stat().st_uid, where_.stat().st_gid
        if chowned:  # the chown step gave the root-owned volumes to the recognizer's user
            assert owner == (contract.RUN_AS_USER, contract.RUN_AS_GROUP), volume
        elif fs_group_claims:  # the kubelet gave them to the pod's fsGroup
            assert owner[1] == fs_group and where_.stat().st_mode & 0o2070 == 0o2070, (volume, owner)
        else:  # they were the recognizer's already
            assert owner == volume_owner, volume
    if "output" in volumes:  # the transcript's usage record reached the output volume (not kept in memory only)
        assert list((volumes["output"] / "usage").glob("*.jsonl")), sorted(volumes["output"].rglob("*"))
    return (f"{path.name}:{name}: started after {started:.1f} s, ready {ready:.1f} s later, transcript "
            f"{answer['DisplayText']!r}; stopped in {took:.1f} s of {spec['terminationGracePeriodSeconds']}")
