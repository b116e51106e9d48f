"""Run what we emit as a kubelet would, with this checkout as the image: the operator's own pod, and
the pods of two SpeechToTexts of deploy/examples (an ApiKey from a Secret; license and output on
PVCs, given to the recognizer's user by the init container). tests/ship/test_images.py runs the pod
of every example in the built images, in the full run (`slow`); these two are the quick check of the
same path without an image build (running all of them here too cost about 100 s more per run). The
tests marked ``in_image`` run pods that test_images.py runs again in the built images: a run that
builds them (selects a `slow` test, as `bash .ci/run` does) deselects these (tests/conftest.py), so that
each of those pods runs once, in the image (about 170 s less on this 2-core VM).

What runs, what is checked and what differs from a cluster: tests/example_pods.py, tests/operator_pod.py.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from speech_operator import api, builders
from speech_operator.config import OperatorConfig
from speech_operator.quantities import quantity
from speech_recognizer import contract, scratch
from speech_recognizer import models as m
from speech_recognizer.models import installed_packages
from speech_recognizer.settings import declared
from tests.example_pods import PLATFORM_KINDS, cases, docs, pod_spec, run_example, stt_of, zip_model
from tests.kubelet import Image, Pod, Running, file_server, host_image
from tests.operator_pod import run_operator_pod
from tests.pods_at_once import runs_pod
from tests.recognizer.test_models import fake_model
from tests.support import free_port, widest_wav
from tests.tls import make_ca

CONFIG = OperatorConfig()
CASES = {case: where for case, where in cases(CONFIG).items() if case in ("api-key-secret:en-us", "disconnected:en-us-offline")}
assert len(CASES) == 2, "an example these tests run was renamed: pick it again"
# test_images.py runs every case in the built image with the fixed ids, and those of PLATFORM_KINDS as OpenShift's uid
assert set(CASES) <= set(PLATFORM_KINDS), "test_images.py no longer runs a pod the in_image tests leave to it"


@pytest.fixture(scope="module")
def ko_model() -> Path:
    return installed_packages()["ko-KR"]


@pytest.fixture(scope="module")
def catalog_zip(ko_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return zip_model(ko_model, tmp_path_factory.mktemp("catalog") / "model.zip")


# The recognizer pods of the tests below these two run a few at a time (tests/pods_at_once.py), each test taking its
# own pod's outcome. The operator's and the gateway's pods run in their tests (the requests their kmock serves are
# judged by RBAC as each test ends: tests/conftest.py), which come first and ask for the pool, so that the
# recognizer pods run while they do.


@pytest.mark.usefixtures("pod_pool")
def test_operator_pod_runs_and_works_a_speechtotext(tmp_path: Path) -> None:
    """deploy/base's operator pod, this checkout as the image, as uid 65532 without a passwd entry
    (this machine has none for it) and without HOME: it crashed at once with both
    ('Could not determine home directory', then kopf's 'getpwuid(): uid not found: 65532')."""
    print(run_operator_pod(host_image(("python", "-m", "speech_operator")), "speech-operator:checkout", tmp_path))


@pytest.mark.in_image  # test_images.py: test_operator_image_runs_the_openshift_overlay_as_the_uid_openshift_assigns
@pytest.mark.usefixtures("pod_pool")
def test_operator_and_gateway_pods_of_the_openshift_overlay_run_as_the_uid_openshift_assigns(tmp_path: Path) -> None:
    """deploy/openshift's operator and gateway pods as restricted-v2 admits them (uid 1000680000 with no passwd entry,
    gid 0; no HOME, USER or LOGNAME from the runtime), this checkout as the image: the operator works a SpeechToText on
    kmock and emits its Deployment without ids, the gateway routes a locale; both exit 0 on SIGTERM."""
    import dataclasses

    from tests import openshift_scc as scc
    from tests.gateway_pod import run_gateway_pod
    from tests.ship.conftest import load_docs, run
    from tests.ship.tools import kubectl

    overlay = load_docs(run([kubectl(), "kustomize", Path(__file__).resolve().parents[2] / "deploy" / "openshift"]).stdout)
    (tmp_path / "operator").mkdir()
    (tmp_path / "gateway").mkdir()
    print(run_operator_pod(host_image(("python", "-m", "speech_operator")), "speech-operator:checkout", tmp_path / "operator",
                           overlay, scc.admit))
    image = host_image(entrypoint=("speech-operator",))
    print(run_gateway_pod(dataclasses.replace(image, env={**image.env, "HOME": "/tmp"}), tmp_path / "gateway",
                          manifests=overlay, admit=scc.admit))


def emitted_pod(path: Path, name: str, tmp_path: Path, ko_model: Path, catalog_zip: Path, speech_wav: Path) -> str:
    return run_example(path, name, host_image(), CONFIG, tmp_path, ko_model, catalog_zip, speech_wav)


@pytest.mark.in_image  # test_images.py: test_emitted_pods_run_in_the_image
@runs_pod(emitted_pod)
@pytest.mark.parametrize(("path", "name"), list(CASES.values()), ids=list(CASES))
def test_emitted_pod_runs_and_passes_every_probe(path: Path, name: str, pod_run: Future[str]) -> None:
    print(pod_run.result())


def pod_without_chown(tmp_path: Path, ko_model: Path, catalog_zip: Path, speech_wav: Path) -> str:
    """The disconnected example's pod with ``chownVolumes: false``, its PVCs given to 65532 beforehand."""
    path, name = CASES["disconnected:en-us-offline"]
    return run_example(path, name, host_image(), CONFIG, tmp_path, ko_model, catalog_zip, speech_wav,
                       spec_update={"chownVolumes": False}, volume_owner=(contract.RUN_AS_USER, contract.RUN_AS_GROUP))


@runs_pod(pod_without_chown)
def test_pod_without_the_chown_step_runs_on_volumes_its_user_owns(pod_run: Future[str]) -> None:
    """``chownVolumes: false`` (namespaces enforcing the restricted Pod Security Standard) on the disconnected example
    (model, license and output on PVCs without fsGroup support, given to 65532 beforehand, as its admin would): no
    container runs as root, and the pod starts, passes its probes, transcribes and stops as the example's does."""
    path, _ = CASES["disconnected:en-us-offline"]
    doc = next(d for d in docs(path) if d["kind"] == api.KIND)
    stt = stt_of({**doc, "spec": {**doc["spec"], "chownVolumes": False}})
    spec = builders.deployment(stt, CONFIG)["spec"]["template"]["spec"]
    every = spec.get("initContainers", []) + spec["containers"]
    assert every and all(c["securityContext"]["runAsNonRoot"] is True and c["securityContext"]["runAsUser"] != 0
                         for c in every)
    print(pod_run.result())


def test_pod_with_a_priority_class_and_its_own_spread_is_the_one_that_runs_without_them() -> None:
    """``spec.priorityClassName`` and ``spec.topologySpreadConstraints`` are the scheduler's: a kubelet gets the pod
    once it is placed, and runs it as without them (tests/kubelet.py reads neither). The API-key example's pod with
    both is valid at the chart's oldest and the newest Kubernetes, and is, but for those two fields, the pod of that
    example that test_emitted_pod_runs_and_passes_every_probe runs (and test_images.py in the built image)."""
    import kubernetes_validate

    from tests.ship.conftest import KUBE_VERSIONS

    update = {"priorityClassName": "speech-realtime", "topologySpreadConstraints": [
        {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
         "matchLabelKeys": ["pod-template-hash"]}]}
    path, name = CASES["api-key-secret:en-us"]
    doc = next(d for d in docs(path) if d["kind"] == api.KIND and d["metadata"]["name"] == name)
    deployment = builders.deployment(stt_of({**doc, "spec": {**doc["spec"], **update}}), CONFIG)
    spec = deployment["spec"]["template"]["spec"]
    assert spec["priorityClassName"] == "speech-realtime"
    assert spec["topologySpreadConstraints"] == [{**update["topologySpreadConstraints"][0],
                                                  "labelSelector": deployment["spec"]["selector"]}]
    for version in KUBE_VERSIONS:
        kubernetes_validate.validate(deployment, version, strict=True)
    without = {k: v for k, v in spec.items() if k not in update}
    assert without == {k: v for k, v in pod_spec(stt_of(doc), CONFIG).items() if k != "topologySpreadConstraints"}


#: The operator with the recognizer pods' ids left to the platform (OpenShift), and OpenShift's admission of them
#: (tests/openshift_scc.py: restricted-v2, emulated; no OpenShift here).
PLATFORM = OperatorConfig(pod_identity="platform")


def platform_pod(case: str, tmp_path: Path, ko_model: Path, catalog_zip: Path, speech_wav: Path) -> str:
    from tests import openshift_scc as scc

    path, name = CASES[case]
    return run_example(path, name, host_image(), PLATFORM, tmp_path, ko_model, catalog_zip, speech_wav,
                       admit=scc.admit, fs_group_claims=True)


@pytest.mark.in_image  # test_images.py: test_emitted_pods_run_in_the_image_as_the_uid_openshift_assigns
@runs_pod(platform_pod)
@pytest.mark.parametrize("case", list(CASES))
def test_pods_openshift_admits_run_as_the_uid_it_assigns(case: str, pod_run: Future[str]) -> None:
    """``SPEECH_OPERATOR_POD_IDENTITY=platform``: the pods of the two examples, as OpenShift's restricted-v2 admits them
    (uid 1000680000, no passwd entry for it, gid 0, fsGroup 1000680000), run their init containers, pass their probes,
    transcribe and stop as the others do. The disconnected example's PVCs are root-owned on storage that supports
    fsGroup (the kubelet gives them to the pod's fsGroup, tests/kubelet.py): with the ids left to the platform there is
    no chown step, and the recognizer reads the model and license there and writes its usage records to the output
    volume through that group. Before the setting, OpenShift refused these pods (tests/operator/test_openshift.py)."""
    print(pod_run.result())


#: A SpeechToText that sets every connection field far from the recognizer's defaults (500 connections, 300 s
#: idle, 30 s without audio), so that each is seen to take effect; no warm-up, to start at once.
CONNECTION_SPEC = {"locale": "ko-KR", "eula": "accept", "warmup": {"count": 0},
                   "connections": {"max": 1, "idleSeconds": 2}, "audioIdleSeconds": 1,
                   "settings": {"Http:MaxHeaderBytes": "2048"}}
#: How late after its setting a close may come on this shared machine.
LATE = 3.0


def _closed(ws: ClientConnection, wait: float) -> tuple[int | None, str, float]:
    """Read ``ws`` until it is closed: the close code and reason, and the seconds it took (None: open after ``wait``)."""
    started = time.monotonic()
    try:
        while True:
            ws.recv(timeout=max(0.01, wait - (time.monotonic() - started)))
    except ConnectionClosed as closed:
        took = time.monotonic() - started
        return (closed.rcvd.code, closed.rcvd.reason, took) if closed.rcvd else (None, "no close frame", took)
    except TimeoutError:
        return None, "open", time.monotonic() - started


def _connect() -> ClientConnection:
    return connect(f"ws://127.0.0.1:{contract.PORT}{contract.ROUTE_VOSK_WS}?language=ko-KR", open_timeout=10)


def _connection_limits() -> dict[str, tuple[int | None, str, float]]:
    """Inside the pod's network: a second /vosk WebSocket beside an open one, the open one left idle, then a
    stream that stops sending audio; what each got."""
    seen = {}
    with _connect() as first:
        with _connect() as second:
            seen["second connection"] = _closed(second, 10)
        seen["idle connection"] = _closed(first, 2 + 10)
    with _connect() as stream:
        stream.send('{"config": {"sample_rate": 16000}}')
        stream.send(bytes(3200))  # 100 ms of silence: the stream takes its decoder, then sends nothing more
        seen["stream without audio"] = _closed(stream, 1 + 10)
    return seen


def emitted_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The pod spec the operator emits for a ko-KR SpeechToText with ``spec``."""
    stt = api.SpeechToText.model_validate({"metadata": {"name": "ko-kr", "namespace": "speech", "uid": "u-1"},
                                           "spec": spec})
    return builders.deployment(stt, CONFIG)["spec"]["template"]["spec"]


@contextlib.contextmanager
def ready_recognizer(spec: dict[str, Any], **kubelet: Any) -> Iterator[tuple[Pod, Running]]:
    """The recognizer pod of ``spec`` (an emitted pod spec), run as a kubelet runs it (``kubelet``: :class:`Pod`'s
    options, such as ``cpu_cfs_quota``): its init containers, each to success, then its container to ready (startup,
    then readiness probe); stopped at once on leaving."""
    with Pod(spec, host_image(), name="ko-kr", **kubelet) as pod:
        for init in pod.init_containers():
            done = pod.run_init(init)
            assert done.returncode == 0, f"init container {init} failed:\n{done.log}"
        running = pod.start()
        try:
            pod.wait_probe(running, "startupProbe")
            pod.wait_probe(running, "readinessProbe", budget=300)
            yield pod, running
        finally:
            pod.stop(running, grace=0)


def connection_pod() -> tuple[dict[str, tuple[int | None, str, float]], tuple[int, str]]:
    """:data:`CONNECTION_SPEC`'s pod, run as a kubelet runs it to ready: what :func:`_connection_limits` saw, and the
    answer to a 3000-byte request head."""
    with ready_recognizer(emitted_spec(CONNECTION_SPEC)) as (pod, _):
        return pod.in_network(_connection_limits), pod.http_get(contract.PORT, "/status", headers={"X-Padding": "x" * 3000})


@runs_pod(connection_pod)
def test_emitted_connection_settings_take_effect(
        pod_run: Future[tuple[dict[str, tuple[int | None, str, float]], tuple[int, str]]]) -> None:
    """``spec.connections``, ``spec.audioIdleSeconds`` and ``spec.settings`` reach the recognizer: the pod a ko-KR
    SpeechToText setting them gets, run as a kubelet runs it (its init container, the recognizer with exactly the
    emitted args as uid 65532, its probes), keeps one /vosk WebSocket (the second is closed at once with 1013), closes
    one idle for 2 s with 1000, ends a stream without audio for 1 s with 1008, and answers a 3000-byte request head
    with 431 (Http:MaxHeaderBytes 2048). Without the fields (or with arguments the recognizer ignored) the second
    connection would stay open, the others wait 300 s and 30 s, and the head pass (its default is 16384)."""
    args = next(c for c in emitted_spec(CONNECTION_SPEC)["containers"] if c["name"] == builders.CONTAINER)["args"]
    assert {"MaxConnections=1", "ConnectionIdleSeconds=2", "AudioIdleSeconds=1", "Http:MaxHeaderBytes=2048"} <= set(args), args
    seen, big_head = pod_run.result()
    print(seen)
    code, reason, took = seen["second connection"]
    assert code == 1013 and reason.startswith("too many connections: this server keeps at most 1 open (MaxConnections)"), seen
    assert took < LATE, seen
    code, reason, took = seen["idle connection"]
    assert code == 1000 and "2 s (ConnectionIdleSeconds)" in reason and 2 - 0.5 <= took < 2 + LATE, seen
    code, reason, took = seen["stream without audio"]
    assert code == 1008 and "no audio for 1 s (AudioIdleSeconds)" in reason and took < 1 + LATE, seen
    assert big_head[0] == 431 and "2048" in big_head[1], big_head


def test_emitted_download_step_trusts_the_ca_bundle(tmp_path: Path) -> None:
    """``model.caBundle`` behind a mirror signed by a private CA (a TLS-intercepting proxy's CA alike): the download
    init container the operator emits, run as a kubelet runs it (exact args and env, uid 65532, read-only root, the
    ConfigMap's key as a file at the emitted mount and path), downloads and unpacks the model from the HTTPS mirror;
    the same spec without caBundle fails with one line naming ModelCaFile (nothing could trust the CA before)."""
    port = free_port()  # any port is free in the pod's own network; the mirror's URL is in the spec before it starts
    ca = make_ca(tmp_path / "ca")
    zipped = zip_model(fake_model(tmp_path / "model"), tmp_path / "model.zip")
    catalog = {"settings": {"ModelCatalogUrl": f"https://127.0.0.1:{port}/vosk"}, "warmup": {"count": 0}}
    trusting = {"locale": "uk-UA", "eula": "accept", "model": {"caBundle": {"configMap": {"name": "corp-ca"}}}, **catalog}
    seen = {}
    for case, spec_in in (("caBundle", trusting), ("no caBundle", {"locale": "uk-UA", "eula": "accept", **catalog})):
        stt = api.SpeechToText.model_validate({"metadata": {"name": "uk-ua", "namespace": "speech", "uid": "u-1"}, "spec": spec_in})
        spec = builders.deployment(stt, CONFIG)["spec"]["template"]["spec"]
        volumes = {}
        for volume in spec["volumes"]:
            if "configMap" in volume:  # the kubelet's projection of the ConfigMap's key: a file named by its item's path
                volumes[volume["name"]] = folder = tmp_path / case / volume["name"]
                folder.mkdir(parents=True)
                shutil.copy(ca.ca_file, folder / volume["configMap"]["items"][0]["path"])
                for item in (folder, *folder.iterdir()):
                    item.chmod(0o755 if item.is_dir() else 0o644)
        assert [c["name"] for c in spec["initContainers"]] == ["download-model"]
        with Pod(spec, host_image(), volumes=volumes, name="uk-ua") as pod:
            with file_server(pod, {f"vosk/{m.CATALOG['uk-UA'].file}": zipped}, port=port, context=ca.server_context()):
                done = pod.run_init("download-model")
            seen[case] = done.returncode, done.log, (pod.volume_dir("models") / "uk-UA" / "conf" / "model.conf").is_file()
    code, log, unpacked = seen["caBundle"]
    assert code == 0 and "model for uk-UA is at /models/uk-UA" in log and unpacked, log
    code, log, unpacked = seen["no caBundle"]
    assert code == 1 and not unpacked, log
    assert "certificate is not trusted" in log and "give that CA's certificate (PEM) in ModelCaFile=" in log, log


def test_mount_targets_stay_inside_the_image(tmp_path: Path) -> None:
    """The harness resolves a mount target inside the image, as runtimes do: an image's /var/run -> /run
    (absolute) or a ../ must never lead a bind mount to the host's own directories."""
    import os

    from tests.kubelet import inside
    (tmp_path / "var").mkdir()
    (tmp_path / "run").mkdir()
    os.symlink("/run", tmp_path / "var" / "run")
    os.symlink("../../..", tmp_path / "var" / "up")
    assert inside(tmp_path, "/var/run/kubeconfig") == tmp_path / "run" / "kubeconfig"
    assert inside(tmp_path, "/var/up/etc") == tmp_path / "etc"
    assert inside(tmp_path, "/../../etc/passwd") == tmp_path / "etc" / "passwd"


def test_a_shared_image_filesystem_is_never_a_writable_root(tmp_path: Path) -> None:
    """A mounted image's filesystem is shared by every pod that runs it (tests/ship/test_images.py runs several at
    once: tests/pods_at_once.py): the kubelet refuses a container of such an image whose root is not read-only (a
    runtime would give it a copy of its own), rather than let it write into every other pod's image."""
    image = Image(entrypoint=("true",), env={}, rootfs=tmp_path / "rootfs")
    spec = {"containers": [{"name": "reads", "securityContext": {"readOnlyRootFilesystem": True}},
                           {"name": "writes", "securityContext": {"readOnlyRootFilesystem": False}},
                           {"name": "unset"}]}
    with Pod(spec, image) as pod:
        assert pod.plan(pod.container("reads"))["readOnlyRootFilesystem"] is True
        for name in ("writes", "unset"):
            with pytest.raises(ValueError, match=f"^{name}: a root that is not read-only .* shared by every pod that runs the image"):
                pod.plan(pod.container(name))


def test_service_links_are_the_ones_a_kubelet_makes() -> None:
    """The harness gives a container the variables a kubelet makes of its namespace's Services (Kubernetes'
    envvars.FromServices; the example of Kubernetes' Service docs, a Service redis-primary at 10.0.0.11 on port 6379), and
    those of the master Service ``kubernetes`` even with ``enableServiceLinks: false``; the container's own ``env`` wins."""
    from tests.kubelet import environment

    redis = {"kind": "Service", "metadata": {"name": "redis-primary"}, "spec": {"clusterIP": "10.0.0.11", "ports": [{"port": 6379}]}}
    headless = {"kind": "Service", "metadata": {"name": "peers"}, "spec": {"clusterIP": "None", "ports": [{"port": 7000}]}}
    master = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443", "KUBERNETES_SERVICE_PORT_HTTPS": "443",
              "KUBERNETES_PORT": "tcp://10.96.0.1:443", "KUBERNETES_PORT_443_TCP": "tcp://10.96.0.1:443",
              "KUBERNETES_PORT_443_TCP_PROTO": "tcp", "KUBERNETES_PORT_443_TCP_PORT": "443", "KUBERNETES_PORT_443_TCP_ADDR": "10.96.0.1"}
    container = {"name": "app", "env": [{"name": "REDIS_PRIMARY_SERVICE_PORT", "value": "7"}]}
    assert environment({}, container, [redis, headless]) == {
        "REDIS_PRIMARY_SERVICE_HOST": "10.0.0.11", "REDIS_PRIMARY_SERVICE_PORT": "7", "REDIS_PRIMARY_PORT": "tcp://10.0.0.11:6379",
        "REDIS_PRIMARY_PORT_6379_TCP": "tcp://10.0.0.11:6379", "REDIS_PRIMARY_PORT_6379_TCP_PROTO": "tcp",
        "REDIS_PRIMARY_PORT_6379_TCP_PORT": "6379", "REDIS_PRIMARY_PORT_6379_TCP_ADDR": "10.0.0.11", **master}
    assert environment({"enableServiceLinks": False}, {"name": "app"}, [redis, headless]) == master


#: The pod of a ko-KR SpeechToText with every resource, probe and limit as emitted (no warm-up, to start at once:
#: what a pod costs at its cap does not depend on it, the recognizers of the load are built as it comes).
SATURATED_SPEC = {"locale": "ko-KR", "eula": "accept", "warmup": {"count": 0}}
#: Seconds of speech in each upload, silence after it to its 60 s: what keeps the test's cost near 25 CPU s (the
#: decoder pays about three times for speech what it pays for silence); all 60 s of speech add the recognizers'
#: growth over 30 s more of it (bench/notes.md, "A pod at its decoder cap").
SPEECH_SECONDS = 30
#: How often the probes are sent while the pod is at its cap: more often than the kubelet does (its periodSeconds
#: are 5 and 10), to see the distribution of their latency, not two or three samples.
PROBE_EVERY = 0.25


@dataclass
class AtCap:
    """What a recognizer pod did at its decoder cap (:func:`saturated_pod`)."""

    cap: int
    #: Bytes the /vosk streams' spills may take together, as the pod's ``/metrics`` says (its decoders' share each).
    spill_budget: int
    answers: list[tuple[int, str]]
    #: Probe kind -> (seconds each took, passed, status) while the load ran.
    probes: dict[str, list[tuple[float, bool, int]]]
    state: dict[str, Any]
    peak: int
    limit: int
    throttled: tuple[int, float]
    #: CPU seconds the pod's recognizer spent on the load.
    cpu_seconds: float
    log: str

    def latencies(self, kind: str) -> str:
        took = sorted(t for t, _, _ in self.probes[kind])
        return (f"{kind}: {len(took)} probes, median {took[len(took) // 2] * 1000:.0f} ms, p90 "
                f"{took[int(len(took) * 0.9)] * 1000:.0f} ms, max {took[-1] * 1000:.0f} ms")


def saturated_spec() -> dict[str, Any]:
    """The pod spec the operator emits for :data:`SATURATED_SPEC`."""
    return emitted_spec(SATURATED_SPEC)


def saturated_pod(utterances_wav: Path) -> AtCap:
    """:data:`SATURATED_SPEC`'s pod, run as a kubelet runs it (its cgroup with the emitted CPU quota and memory limit)
    to ready; then as many OpenAI uploads at once as it has decoders (``/sessions``' ``decoders``: DecoderMaxCount, 3
    per CPU of its limit, at most what its memory limit holds: 6 in the default 2 CPUs and 3Gi), each the largest its limits allow (:func:`widest_wav`: :data:`SPEECH_SECONDS` of it speech), while its readiness and liveness
    probes are sent as the kubelet sends them (timeoutSeconds as emitted) every :data:`PROBE_EVERY` s."""
    import httpx

    body = widest_wav(utterances_wav, SPEECH_SECONDS)
    with ready_recognizer(saturated_spec()) as (pod, running):
        container = pod.container(running.name)
        cap = int(json.loads(pod.http_get(contract.PORT, contract.ROUTE_SESSIONS)[1])["decoders"])
        metrics = pod.http_get(contract.PORT, contract.ROUTE_METRICS)[1]
        budget = re.search(r"^speech_read_ahead_spill_budget_bytes (\S+)$", metrics, re.M)
        answers: list[tuple[int, str]] = []
        probes: dict[str, list[tuple[float, bool, int]]] = {"readinessProbe": [], "livenessProbe": []}
        loaded = threading.Event()

        def upload() -> None:
            def post() -> None:
                answer = httpx.post(f"http://127.0.0.1:{contract.PORT}{contract.ROUTE_OPENAI_TRANSCRIPTIONS}",
                                    files={"file": ("widest.wav", body, "audio/wav")}, data={"model": "whisper-1"},
                                    timeout=600)
                answers.append((answer.status_code, answer.text[:300]))
            pod.in_network(post)

        def probe(kind: str) -> None:
            while not loaded.is_set():
                started = time.monotonic()
                passed, status, _ = pod.probe(container, kind)
                probes[kind].append((time.monotonic() - started, passed, status))
                loaded.wait(PROBE_EVERY)

        cpu_before = running.cpu_seconds()
        threads = [threading.Thread(target=upload) for _ in range(cap)]
        probers = [threading.Thread(target=probe, args=(kind,)) for kind in probes]
        for thread in probers + threads:
            thread.start()
        for thread in threads:
            thread.join()
        loaded.set()
        for thread in probers:
            thread.join()
        return AtCap(cap, int(float(budget.group(1))) if budget else -1, answers, probes, running.state(),
                     running.cgroup.memory_peak(), int(running.cgroup.memory_limit or 0), running.cgroup.cpu_throttled(),
                     running.cpu_seconds() - cpu_before, running.log())


@runs_pod(saturated_pod)
def test_probes_answer_in_time_at_the_decoder_cap(pod_run: Future[AtCap]) -> None:
    """A recognizer pod at its decoder cap under its CPU quota (tests/kubelet.py puts it in a cgroup with the emitted
    limits), every decoder busy with the largest upload its limits allow: every readiness and liveness probe, sent as
    the kubelet sends it, is answered 200 within its emitted timeoutSeconds, so the kubelet neither takes a busy pod
    out of its Service nor restarts it mid-stream; and the pod is still running. A server whose event loop waited on a
    decode, or a probe handler that did, would miss them (a probe waits behind a whole 60 s upload's decoding)."""
    seen = pod_run.result()
    print(f"decoders {seen.cap}; " + "; ".join(seen.latencies(kind) for kind in seen.probes)
          + f"; CPU throttled in {seen.throttled[0]} periods ({seen.throttled[1]:.1f} s); the load cost "
          f"{seen.cpu_seconds:.1f} CPU s")
    assert seen.cap >= 3 and len(seen.answers) == seen.cap, seen.answers
    assert all(status == 200 for status, _ in seen.answers), seen.answers  # each upload had a decoder: all at once
    assert seen.state == {"running": {}}, seen.log[-3000:]
    # all it may write to /tmp, by its own figures (the spills' budget it reports, the uploads of its decoders), fits
    # the emitted sizeLimit (tests/operator/test_pod_disk.py: on nodes of any size)
    tmp = next(v["emptyDir"]["sizeLimit"] for v in saturated_spec()["volumes"] if v["name"] == "tmp")
    assert seen.spill_budget == scratch.spill_budget(seen.cap), (seen.spill_budget, seen.cap)
    assert scratch.tmp_bytes(seen.cap, declared("max_audio_seconds").default) <= (quantity(tmp) or 0), (seen.cap, tmp)
    spec = next(c for c in saturated_spec()["containers"] if c["name"] == builders.CONTAINER)
    for kind, sent in seen.probes.items():
        assert len(sent) >= 5, (kind, sent)
        late = [(round(took, 2), status) for took, passed, status in sent if not passed or took >= spec[kind]["timeoutSeconds"]]
        assert not late, f"{kind} (timeoutSeconds {spec[kind]['timeoutSeconds']}) failed or late: {late}\n{seen.log[-3000:]}"


@runs_pod(saturated_pod)
def test_a_pod_without_an_output_volume_says_so_once_at_start_and_not_as_a_fault(pod_run: Future[AtCap]) -> None:
    """The default pod (no ``spec.output``: its read-only root holds ``/output``) says once, at INFO and before it
    serves, that usage records are kept in memory and where to mount a volume to keep them; its recognitions log no
    WARNING about it. Before, every default pod logged a WARNING ("cannot write /output/usage: Read-only file system")
    at its first recognition: a fault to whoever reads the logs, in the pod every SpeechToText gets by default."""
    seen = pod_run.result()
    lines = [line for line in seen.log.splitlines() if "usage records kept in memory only" in line]
    assert len(lines) == 1 and " INFO " in lines[0], seen.log[-3000:]
    assert "cannot write /output/usage: [Errno 30] Read-only file system" in lines[0], lines
    assert "mount a volume at Mounts:Output to keep them (a SpeechToText's spec.output)" in lines[0], lines
    assert seen.log.index(lines[0]) < seen.log.index("ready to recognize"), seen.log[-3000:]
    assert all(status == 200 for status, _ in seen.answers) and seen.answers, seen.answers  # it recognized, and kept quiet


#: What the first burst at the cap must leave under the memory limit: later bursts on a busy pod peak higher, its
#: recognizers having grown (their graphs) and its heap fragmented; over 4 to 6 bursts of 60 s uploads at the cap
#: (glibc's malloc, this checkout as the image) +436 to +456 MiB above the first (bench/notes.md, "A pod at its
#: decoder cap"), until the recognizers retire after 10 minutes of clock (docs/engine.md).
LATER_BURSTS = 512 * 2**20


@runs_pod(saturated_pod)
def test_memory_at_the_decoder_cap_stays_under_the_limit(pod_run: Future[AtCap]) -> None:
    """The same pod's peak memory (its cgroup's high-water mark, what the kernel holds against its limit) with every
    decoder busy with the largest upload the limits allow leaves :data:`LATER_BURSTS` under the emitted memory limit:
    past the limit the kernel OOM-kills the container, and every stream on it with it."""
    seen = pod_run.result()
    print(f"peak {seen.peak / 2**20:.0f} MiB of the {seen.limit / 2**20:.0f} MiB limit at {seen.cap} decoders")
    assert seen.limit == 3 * 2**30  # the emitted default (api.Resources): the margin below is measured against it
    assert seen.state == {"running": {}}, seen.log[-3000:]
    assert seen.peak < seen.limit - LATER_BURSTS, f"peak {seen.peak / 2**20:.0f} MiB of {seen.limit / 2**20:.0f} MiB"


#: A SpeechToText stored before 99f538a: the API server defaulted its memory limit to 2Gi, with the default 2 CPUs.
#: Its warm-up decodes 1 s per recognizer (the default 6 s would cost ~10 CPU s more and show nothing more).
TWO_GIB_SPEC = {"locale": "ko-KR", "eula": "accept", "warmup": {"seconds": 1},
                "resources": {"limits": {"cpu": "2", "memory": "2Gi"}}}


@dataclass
class Started:
    """What a recognizer pod said of its decoders once ready (:func:`two_gib_pod`)."""

    decoders: int
    log: str


def two_gib_pod() -> Started:
    """:data:`TWO_GIB_SPEC`'s pod, run as a kubelet runs it (its cgroup with the emitted 2 CPUs and 2Gi) to ready."""
    with ready_recognizer(emitted_spec(TWO_GIB_SPEC)) as (pod, running):
        return Started(int(json.loads(pod.http_get(contract.PORT, contract.ROUTE_SESSIONS)[1])["decoders"]), running.log())


@runs_pod(two_gib_pod)
def test_a_pod_with_more_cores_than_its_memory_holds_decoders_for_runs_what_the_memory_holds(pod_run: Future[Started]) -> None:
    """A recognizer pod whose memory limit holds fewer decoders than its CPUs would (3 per CPU: 6) runs as many as the
    memory holds: 3 in 2Gi, read from the cgroup the kubelet put it in; ``/sessions`` (what the operator's autoscaling
    reads), the start-up log line and the warm-up (one recognizer per decoder) all say 3. Before, it ran 6 in 2Gi,
    which six long meetings of varied speech take past 2.4 GiB: OOM-killed, every stream on the pod lost."""
    seen = pod_run.result()
    assert seen.decoders == 3, seen.log[-3000:]
    assert "with 3 decoders (3 × 2 cores: 6; the 2048 MiB memory limit holds 3 at 400 MiB each beyond 576 MiB; " in seen.log
    assert "warm-up done: 3 ko-KR recognizers" in seen.log, seen.log[-3000:]
    assert "is more than the" not in seen.log  # the default never warns


#: A pod of one CPU (its limit) in 3Gi, without a warm-up (what it counts is said before).
ONE_CPU_SPEC = {"locale": "ko-KR", "eula": "accept", "warmup": {"count": 0},
                "resources": {"limits": {"cpu": "1", "memory": "3Gi"}}}


def unenforced_cpu_pod() -> Started:
    """:data:`ONE_CPU_SPEC`'s pod, run to ready as a kubelet run with ``--cpu-cfs-quota=false`` runs it: no CPU quota in
    its cgroup (its memory limit set), its limits in its environment by the downward API all the same."""
    with ready_recognizer(emitted_spec(ONE_CPU_SPEC), cpu_cfs_quota=False) as (pod, running):
        assert (running.cgroup.cpu_limit, running.cgroup.memory_limit) == (None, 3 * 2**30), "no CPU quota"
        return Started(int(json.loads(pod.http_get(contract.PORT, contract.ROUTE_SESSIONS)[1])["decoders"]), running.log())


@runs_pod(unenforced_cpu_pod)
def test_a_pod_on_a_kubelet_enforcing_no_cpu_limit_runs_the_decoders_its_tmp_is_sized_for(pod_run: Future[Started]) -> None:
    """The emitted pod of ``limits.cpu: 1`` (3Gi) where the kubelet enforces no CPU limit, on this machine of 2 CPUs or
    more: ``/sessions`` says the 3 decoders the operator sized its /tmp for (builders.pod_decoders), and the start-up
    line says the cores came from ``Container:CpuLimitMillicores`` (the limit the pod passes by the downward API), the
    cgroup having no quota. Before: 3 per CPU it may run on, 6 here (3 x the node's CPUs on a larger node, up to 64)
    in a /tmp sized for 3."""
    seen = pod_run.result()
    line = next((line for line in seen.log.splitlines() if "serving with" in line), "no start-up line")
    print(line)
    stt = api.SpeechToText.model_validate({"metadata": {"name": "ko-kr", "namespace": "speech"}, "spec": ONE_CPU_SPEC})
    assert seen.decoders == builders.pod_decoders(stt.spec) == 3, seen.log[-3000:]
    assert "serving with 3 decoders (3 × 1 cores: 3; the 3072 MiB memory limit holds 6 " in line, line
    assert "cores: Container:CpuLimitMillicores=1000 (CPUs to run on: " in line and "no CPU quota in the cgroup" in line


def test_containers_run_under_their_limits_and_past_the_memory_limit_are_oom_killed() -> None:
    """The harness runs each container in a cgroup with its ``resources.limits``, as the kubelet has the runtime do:
    a container (an init container too) that allocates past its memory limit is killed by the kernel and ends as
    the kubelet reports it, exit code 137 and reason ``OOMKilled``; one under a CPU limit of 250m gets a quarter of a
    CPU (a busy loop of 1.5 s gets about 0.4 s of CPU time; the loop's own, not the interpreter's start, which runs
    under the quota too but for as long as it takes), and sees its own limit where a runtime's container does (the
    recognizer's container_resources reads it: 1); the cgroups are gone once the pod is."""
    allocate = ["python", "-c", "x = bytearray(256 << 20); print('allocated', flush=True)"]
    busy = ("import time; from speech_recognizer.settings import container_resources\n"
            "start, cpu = time.monotonic(), time.process_time()\n"
            "while time.monotonic() - start < 1.5: pass\n"
            "print(container_resources().cores, time.process_time() - cpu)")
    spec = {"initContainers": [{"name": "init", "command": allocate, "resources": {"limits": {"memory": "64Mi"}}}],
            "containers": [{"name": "main", "command": allocate, "resources": {"limits": {"cpu": "1", "memory": "64Mi"}}},
                           {"name": "busy", "command": ["python", "-c", busy], "resources": {"limits": {"cpu": "250m"}}},
                           {"name": "fits", "command": allocate, "resources": {"limits": {"memory": "512Mi"}}}]}
    with Pod(spec, host_image()) as pod:
        init = pod.run_init("init")
        assert (init.returncode, init.reason) == (-9, "OOMKilled"), init
        ran = {name: pod.start(name) for name in ("main", "busy", "fits")}
        for running in ran.values():
            running.process.wait(60)
        assert ran["main"].state() == {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}, ran["main"].log()
        assert "allocated" not in ran["main"].log()
        assert ran["fits"].state() == {"terminated": {"exitCode": 0, "reason": "Completed"}}, ran["fits"].log()
        assert 256 << 20 < ran["fits"].cgroup.memory_peak() < 512 << 20
        assert ran["busy"].state() == {"terminated": {"exitCode": 0, "reason": "Completed"}}, ran["busy"].log()
        cpus, cpu_seconds = ran["busy"].log().split()
        assert cpus == "1" and 0.2 < float(cpu_seconds) < 0.55, ran["busy"].log()  # 0.375 s of quota in 1.5 s
        assert ran["busy"].cgroup.cpu_throttled()[0] > 0
        cgroups = [path for running in ran.values() for path in running.cgroup.dirs.values()]
    assert cgroups and not [path for path in cgroups if path.exists() or path.parent.exists()]


def test_a_probe_is_waited_for_until_it_passes_and_no_longer_than_the_kubelet_waits() -> None:
    """The harness's wait for a probe goes on as soon as the probe passes, not at the kubelet's next period (a
    container answering 1 s in, under a period of 30 s, is on within a few seconds; waiting out the periods cost
    each pod run up to one: 5 s for the recognizer's readiness, 20 s for the operator's liveness), and fails where
    the kubelet gives up: not passed by ``initialDelaySeconds + (failureThreshold - 1) * periodSeconds`` (3 s
    here), not before."""
    serve = ["sh", "-c", "sleep 1; exec python -m http.server 8000 --bind 127.0.0.1 --directory /"]
    late = {"httpGet": {"path": "/", "port": 8000}, "periodSeconds": 30, "failureThreshold": 3, "timeoutSeconds": 1}
    never = {"httpGet": {"path": "/", "port": 8001}, "initialDelaySeconds": 1, "periodSeconds": 2, "failureThreshold": 2,
             "timeoutSeconds": 1}
    spec = {"containers": [{"name": "main", "command": serve, "startupProbe": late, "livenessProbe": never}]}
    with Pod(spec, host_image()) as pod:
        running = pod.start()
        try:
            took = pod.wait_probe(running, "startupProbe")
            assert 1 <= took < 5, f"passed {took:.1f} s in: waited for the next period, not for the probe"
            started = time.monotonic()
            with pytest.raises(AssertionError, match=r"^livenessProbe of main failed for"):
                pod.wait_probe(running, "livenessProbe")
            assert 3 <= time.monotonic() - started < 4.5, "the kubelet gives up after 3 s, one period less than 5"
        finally:
            pod.stop(running, grace=0)


def test_a_machine_without_writable_cgroups_fails_the_pod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where no cgroup filesystem with the cpu and memory controllers is mounted, or it cannot be written, a pod does
    not run (it would run without its limits, and every test of it pass for a pod a kubelet would run otherwise): it
    fails saying why, never skips."""
    from tests import kubelet

    spec = {"containers": [{"name": "main", "command": ["true"], "resources": {"limits": {"memory": "64Mi"}}}]}
    monkeypatch.setattr(kubelet, "CGROUPS", tmp_path)
    with pytest.raises(kubelet.CgroupError, match=r"^neither cgroup v2 \(.*cgroup.controllers\) nor v1's cpu controller"):
        Pod(spec, host_image()).__enter__()
    for controller in ("cpu", "memory"):  # mounted, as far as a look can tell, but not a cgroup filesystem
        (tmp_path / controller).mkdir()
        (tmp_path / controller / "cgroup.procs").write_text("")
    monkeypatch.setattr(kubelet, "_own_cgroup", lambda controller: "/tests")
    (tmp_path / "memory" / "tests").write_text("a file where this process's memory cgroup goes")
    with Pod(spec, host_image()) as pod:
        with pytest.raises(kubelet.CgroupError, match=r"^cannot make the cgroup .*/memory/tests/kubelet-pod-0-\w+/main: "
                           "Not a directory"):
            pod.start()
