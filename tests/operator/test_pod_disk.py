"""The pod's disk, run as a kubelet runs it: what the operator emits for its emptyDirs holds what is written there.

tests/kubelet.py gives an emptyDir with a ``sizeLimit`` a tmpfs of that size, so a write past it fails where a kubelet
would evict the pod (its docstring says the difference); the emitted /tmp is run so by every pod test.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import pytest

from speech_operator import api, builders
from speech_operator.config import OperatorConfig
from speech_operator.quantities import quantity
from speech_recognizer import models as m
from speech_recognizer import scratch, settings
from tests.example_pods import zip_model
from tests.kubelet import CFS_PERIOD_US, Pod, cfs_quota, environment, file_server, host_image, resource_field
from tests.recognizer.test_models import fake_model
from tests.support import free_port

CONFIG = OperatorConfig()

WRITE = """
for path, size in (("/sized/a", 1 << 20), ("/sized/b", 2 << 20), ("/plain/c", 3 << 20)):
    try:
        with open(path, "wb") as out:
            out.write(b"x" * size)
        print(path, "written")
    except OSError as exc:
        print(path, exc.strerror)
"""


def test_an_emptydir_with_a_size_limit_takes_no_more_than_it() -> None:
    """A container writes 1 MiB, then 2 MiB more into an emptyDir of 2Mi: the second write fails (No space left on
    device), as the pod would be evicted; an emptyDir without a size takes 3 MiB. Before: all three written."""
    container = {"name": "write", "command": ["python", "-c", WRITE],
                 "securityContext": {"runAsUser": 65532, "runAsGroup": 65532, "runAsNonRoot": True},
                 "volumeMounts": [{"name": "sized", "mountPath": "/sized"}, {"name": "plain", "mountPath": "/plain"}]}
    spec = {"securityContext": {"fsGroup": 65532}, "initContainers": [container], "containers": [container],
            "volumes": [{"name": "sized", "emptyDir": {"sizeLimit": "2Mi"}}, {"name": "plain", "emptyDir": {}}]}
    with Pod(spec, host_image(), name="disk") as pod:
        done = pod.run_init("write")
    assert done.returncode == 0, done.log
    assert done.log.split("\n")[:3] == ["/sized/a written", "/sized/b No space left on device", "/plain/c written"], done.log


def test_the_emitted_models_emptydir_holds_the_download_it_allows(tmp_path: Path) -> None:
    """The download init container the operator emits, run as a kubelet runs it with its models emptyDir's sizeLimit
    (ModelMaxSizeMB 49: 95Mi), downloads, unpacks and slims a model of 48.5 MB (the ko-KR model's grammar, whose
    rewrite copies 37 MB of it): the zip is gone before that copy is made, so the folder never holds more than the
    zip and the model. The same download in a folder of 3/4 of that size is refused before unpacking, in one line
    (the models folder's free space). Before: no sizeLimit emitted; and with the zip kept through the grammar's
    rewrite the folder would have held 134 MB at once: the rewrite failed (No space left on device), the grammar
    left as it was, 11 MB larger in every pod's memory."""
    port = free_port()
    model = fake_model(tmp_path / "model")
    (model / "graph").mkdir()
    shutil.copy(m.installed_packages()["ko-KR"] / "graph" / "Gr.fst", model / "graph" / "Gr.fst")
    zipped = zip_model(model, tmp_path / "model.zip")
    mb = -(-zipped.stat().st_size // 10**6)
    settings = {"ModelCatalogUrl": f"http://127.0.0.1:{port}/vosk", "ModelMaxSizeMB": str(mb)}
    stt = api.SpeechToText.model_validate({"metadata": {"name": "uk-ua", "namespace": "speech", "uid": "u-1"}, "spec": {
        "locale": "uk-UA", "eula": "accept", "settings": settings, "warmup": {"count": 0}}})
    spec = builders.deployment(stt, CONFIG)["spec"]["template"]["spec"]
    size = next(v["emptyDir"]["sizeLimit"] for v in spec["volumes"] if v["name"] == "models")
    assert (mb, size) == (49, f"{-(-scratch.download_bytes(mb) // 2**20)}Mi") == (49, "95Mi")
    served = {f"vosk/{m.CATALOG['uk-UA'].file}": zipped}
    with Pod(spec, host_image(), name="uk-ua") as pod, file_server(pod, served, port=port):
        done = pod.run_init("download-model")
        unpacked = sorted(p.relative_to(pod.volume_dir("models")).as_posix()
                          for p in pod.volume_dir("models").rglob("*") if p.is_file())
    assert done.returncode == 0 and "model for uk-UA is at /models/uk-UA" in done.log, done.log
    assert "dropped the grammar FST's input word table" in done.log and "as it is" not in done.log, done.log
    assert unpacked == ["uk-UA/am/final.mdl", "uk-UA/conf/mfcc.conf", "uk-UA/conf/model.conf", "uk-UA/graph/Gr.fst"]
    smaller = {**spec, "volumes": [{"name": v["name"], "emptyDir": {"sizeLimit": f"{95 * 3 // 4}Mi"}}
                                   if v["name"] == "models" else v for v in spec["volumes"]]}
    with Pod(smaller, host_image(), name="uk-ua") as pod, file_server(pod, served, port=port):
        done = pod.run_init("download-model")
    assert done.returncode == 1 and "the models folder has" in done.log, done.log


#: CPUs of the nodes a pod may land on: the recognizer counts those it may run on (its affinity), capped by the CFS
#: quota the kubelet makes of its CPU limit. A machine of 192 cores cannot be had here: the count is given to the
#: recognizer's own reading of it (settings.container_resources(...).decoders()), the cgroup it reads written as the kubelet writes it.
NODE_CORES = (1, 2, 8, 21, 22, 32, 96, 192)


#: Limits of SpeechToTexts: none, one of each alone, the default, a fractional CPU, more memory than the CPUs need, and
#: more CPUs than the memory holds decoders for.
LIMITS = {"no limits": {}, "memory only": {"memory": "32Gi"}, "cpu only": {"cpu": "48"},
          "defaults": {"cpu": "2", "memory": "3Gi"}, "fractional cpu": {"cpu": "1500m", "memory": "8Gi"},
          "2 cpus in 8Gi": {"cpu": "2", "memory": "8Gi"}, "8 cpus in 3Gi": {"cpu": "8", "memory": "3Gi"}}


@pytest.mark.parametrize("limits", LIMITS.values(), ids=LIMITS)
def test_the_tmp_emptydir_holds_what_the_recognizer_writes_there_on_a_node_of_any_size(
        limits: dict[str, Any], tmp_path: Path) -> None:
    """The recognizer of the emitted pod, its settings parsed from the emitted arguments and its default decoders
    from the cgroup the kubelet makes of the emitted limits (cgroup v2's cpu.max and memory.max) on a node of each of
    :data:`NODE_CORES` CPUs, may write to /tmp (its decoders' read-ahead spills, an upload per decoder, a model's
    view: speech_recognizer.scratch) no more than the emitted /tmp sizeLimit, and runs no more decoders than the
    operator sized it for: past the sizeLimit the kubelet evicts the pod, every stream on it lost. Before: the
    default was 3 per CPU uncapped, the operator's sizing capped at 64: on 22 CPUs or more without a CPU limit (or one
    above 21 CPUs, or a memory limit holding more than 64) the recognizer ran up to 576 decoders (192 CPUs x 3) in a
    /tmp sized for 64."""
    stt = api.SpeechToText.model_validate({"metadata": {"name": "ko-kr", "namespace": "speech", "uid": "u-1"}, "spec": {
        "locale": "ko-KR", "eula": "accept", "resources": {"limits": limits}}})
    spec = builders.deployment(stt, CONFIG)["spec"]["template"]["spec"]
    size = quantity(next(v["emptyDir"]["sizeLimit"] for v in spec["volumes"] if v["name"] == "tmp"))
    recognizer = next(c for c in spec["containers"] if c["name"] == builders.CONTAINER)
    emitted = recognizer["resources"].get("limits", {})
    assert {k: str(v) for k, v in emitted.items()} == limits
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    cpu = quantity(emitted["cpu"]) if "cpu" in emitted else None
    (cgroup / "cpu.max").write_text(f"{'max' if cpu is None else cfs_quota(float(cpu))} {CFS_PERIOD_US}\n")
    (cgroup / "memory.max").write_text(f"{int(quantity(emitted['memory']) or 0) if 'memory' in emitted else 'max'}\n")
    parsed = settings.parse(recognizer["args"], environ={})
    assert "decoder_max_count" not in parsed.given  # the recognizer's default, made where it runs
    decoders = {cores: settings.container_resources(root=cgroup, affinity=cores).decoders() for cores in NODE_CORES}
    written = {cores: scratch.tmp_bytes(n, parsed.max_audio_seconds) for cores, n in decoders.items()}
    sized = builders.pod_decoders(stt.spec)
    assert max(decoders.values()) <= sized, (decoders, sized)
    assert size is not None and max(written.values()) <= size, ({k: v >> 20 for k, v in written.items()}, size / 2**20)


def emitted_recognizer(limits: dict[str, Any]) -> tuple[api.SpeechToText, dict[str, Any], dict[str, Any]]:
    """A ko-KR SpeechToText of ``limits``, its emitted pod spec and that spec's recognizer container."""
    stt = api.SpeechToText.model_validate({"metadata": {"name": "ko-kr", "namespace": "speech", "uid": "u-1"}, "spec": {
        "locale": "ko-KR", "eula": "accept", "warmup": {"count": 0}, "resources": {"limits": limits}}})
    spec = builders.deployment(stt, CONFIG)["spec"]["template"]["spec"]
    return stt, spec, next(c for c in spec["containers"] if c["name"] == builders.CONTAINER)


@pytest.mark.parametrize("limits", LIMITS.values(), ids=LIMITS)
def test_the_recognizer_runs_the_decoders_its_tmp_is_sized_for_where_its_cgroup_does_not_say_its_limits(
        limits: dict[str, Any], tmp_path: Path) -> None:
    """On a node of each of :data:`NODE_CORES` CPUs (its allocatable: those CPUs and 4 GiB each), where the kubelet
    does not enforce CPU limits (``--cpu-cfs-quota=false``: the cgroup has no CPU quota) or where the container cannot
    read its memory cgroup, the recognizer of the emitted pod, its settings parsed from the emitted arguments and the
    environment the kubelet gives the emitted container (tests/kubelet.environment: its limits by the downward API,
    the node's allocatable for one unset), runs no more decoders than the operator sized /tmp for (exactly as many
    with limits the node holds), and writes no more than its sizeLimit. Before: no limits passed; with limits cpu 2,
    memory 8Gi on 32 CPUs without a quota the recognizer counted 32 CPUs: 19 decoders in a /tmp sized for 6 (the
    kubelet evicts the pod, every stream on it, once they fill it)."""
    stt, spec, recognizer = emitted_recognizer(limits)
    size = quantity(next(v["emptyDir"]["sizeLimit"] for v in spec["volumes"] if v["name"] == "tmp"))
    assert size is not None
    sized = builders.pod_decoders(stt.spec)
    cpu, memory = quantity(limits.get("cpu")), quantity(limits.get("memory"))
    seen = {}
    for cores in NODE_CORES:
        node = {"cpu": str(cores), "memory": f"{4 * cores}Gi", "ephemeral-storage": "100Gi"}
        parsed = settings.parse(recognizer["args"], environ=environment(spec, recognizer, [], allocatable=node))
        for mode in ("no CPU quota", "memory cgroup unread"):
            cgroup = tmp_path / f"{cores}-{mode.replace(' ', '-')}"
            cgroup.mkdir()
            enforced = cpu is not None and mode != "no CPU quota"
            (cgroup / "cpu.max").write_text(f"{cfs_quota(float(cpu)) if enforced else 'max'} {CFS_PERIOD_US}\n")  # type: ignore[arg-type]
            if mode != "memory cgroup unread":
                (cgroup / "memory.max").write_text(f"{int(memory) if memory is not None else 'max'}\n")
            held = parsed.resources(cgroup, affinity=cores)
            seen[cores, mode] = settings.default_decoders(held.cores, held.memory_limit)
            if cpu is not None and cores >= math.ceil(cpu):
                assert seen[cores, mode] == sized, (cores, mode, seen[cores, mode], sized, held)
    assert max(seen.values()) <= sized, (seen, sized)
    assert scratch.tmp_bytes(max(seen.values()), settings.parse(recognizer["args"], environ={}).max_audio_seconds) <= size


def test_the_kubelet_gives_a_containers_resources_by_the_downward_api() -> None:
    """tests/kubelet.resource_field gives ``env[].valueFrom.resourceFieldRef`` as the kubelet does: the amount over
    the divisor rounded UP (cpu in whole millicores first), a limit unset (or 0) the node's allocatable, a request
    unset its limit (the API server's defaulting) else 0; a resource or divisor the API server refuses is refused."""
    node = {"cpu": "32", "memory": "128Gi", "ephemeral-storage": "100Gi"}
    container = {"name": "recognizer", "resources": {"requests": {"cpu": "500m"}, "limits": {"cpu": "1500m", "memory": "3Gi"}}}

    def given(resource: str, divisor: str | None = None, of: dict[str, Any] = container) -> str:
        return resource_field(of, {"resource": resource, **({"divisor": divisor} if divisor else {})}, node)

    assert (given("limits.cpu", "1m"), given("limits.cpu"), given("limits.cpu", "1")) == ("1500", "2", "2")
    assert (given("limits.memory"), given("limits.memory", "1Mi"), given("limits.memory", "1G")) == (str(3 * 2**30), "3072", "4")
    assert (given("requests.cpu", "1m"), given("requests.cpu"), given("requests.memory", "1Mi")) == ("500", "1", "3072")
    assert (given("limits.ephemeral-storage", "1Gi"), given("requests.ephemeral-storage")) == ("100", "0")
    bare = {"name": "recognizer"}
    assert (given("limits.cpu", "1m", bare), given("limits.memory", "1Gi", bare), given("requests.cpu", "1m", bare)) == ("32000", "128", "0")
    zero = {"name": "recognizer", "resources": {"limits": {"cpu": "0"}}}
    assert given("limits.cpu", "1m", zero) == "32000"
    odd = {"name": "recognizer", "resources": {"limits": {"cpu": "0.0001", "memory": "100m"}}}
    assert (given("limits.cpu", "1m", odd), given("limits.memory", None, odd)) == ("1", "1")
    for resource, divisor in (("limits.cpu", "1Mi"), ("limits.memory", "1m"), ("limits.gpu", "1"), ("cpu", "1")):
        with pytest.raises(ValueError, match="resourceFieldRef"):
            given(resource, divisor)
    env = environment({}, {**container, "env": [{"name": "CPU", "valueFrom": {"resourceFieldRef": {
        "resource": "limits.cpu", "divisor": "1m"}}}]}, [], allocatable=node)
    assert env["CPU"] == "1500"

