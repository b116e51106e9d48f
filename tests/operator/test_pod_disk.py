"""The pod's disk, run as a kubelet runs it: what the operator emits for its emptyDirs holds what is written there.

tests/kubelet.py gives an emptyDir with a ``sizeLimit`` a tmpfs of that size, so a write past it fails where a kubelet
would evict the pod (its docstring says the difference); the emitted /tmp is run so by every pod test.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

import pytest

from speech_operator import api, builders
from speech_operator.config import OperatorConfig
from speech_operator.quantities import quantity
from speech_recognizer import cli, scratch, settings
from speech_recognizer import models as m
from tests.example_pods import zip_model
from tests.kubelet import CFS_PERIOD_US, Pod, cfs_quota, environment, file_server, host_image, resource_field
from tests.recognizer.test_models import Files, fake_model, serving
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


def emitted_download(locale: str, **update: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The emitted pod spec of a SpeechToText of ``locale`` (and ``update`` to its spec), and its download container."""
    stt = api.SpeechToText.model_validate({"metadata": {"name": "stt", "namespace": "speech", "uid": "u-1"}, "spec": {
        "locale": locale, "eula": "accept", "warmup": {"count": 0}, **update}})
    spec = builders.deployment(stt, CONFIG)["spec"]["template"]["spec"]
    return spec, next(c for c in spec["initContainers"] if c["name"] == builders.DOWNLOAD_CONTAINER)


def held_to(download: dict[str, Any]) -> scratch.DownloadBound:
    """The bound the run of the emitted ``download`` container holds itself to: its arguments parsed as the
    recognizer parses them, given to models.download_bound as its ``DownloadModel=True`` run gives them (cli.main)."""
    parsed = settings.parse(download["args"], environ={})
    return m.download_bound(parsed.locales[0], parsed.model_url, parsed.model_max_size_mb, "model_max_size_mb" in parsed.given)


def mib(amount: int) -> str:
    return f"{-(-amount // 2**20)}Mi"


def disk_of(spec: dict[str, Any]) -> tuple[str, str, str]:
    """An emitted pod's /tmp and models sizeLimits and its recognizer's ephemeral-storage request."""
    sizes = {v["name"]: v["emptyDir"].get("sizeLimit") for v in spec["volumes"] if "emptyDir" in v}
    recognizer = next(c for c in spec["containers"] if c["name"] == builders.CONTAINER)
    return sizes["tmp"], sizes["models"], recognizer["resources"]["requests"]["ephemeral-storage"]


#: A model.volume of the user's own: an emptyDir without a sizeLimit.
OWN_EMPTYDIR = {"model": {"volume": {"emptyDir": {}}}}

#: Ways a SpeechToText downloads its model besides the default: what each keeps of the models folder's size.
NOT_THE_CATALOGS = {"ModelMaxSizeMB": {"settings": {"ModelMaxSizeMB": "300"}},
                    "model url": {"model": {"url": "https://models.example.test/m.zip", "sha256": "ab" * 32}}}


def test_the_models_emptydir_is_sized_by_the_bound_its_download_holds_itself_to() -> None:
    """For every catalog locale, by default, with ModelMaxSizeMB given and with a model URL of the user's own: the
    emitted models emptyDir's sizeLimit is what the emitted download container holds itself to (its arguments parsed
    by the recognizer, the bound its run computes: speech_recognizer.models.download_bound, which the operator
    sized it by), and the recognizer's ephemeral-storage request is /tmp's and that. A catalog model whose zip size
    the catalog knows asks for that zip and 8 times it (sv-SE's 303.5 MB zip the most: 2607Mi), one it does not
    know, a ModelMaxSizeMB or a URL for twice ModelMaxSizeMB; an emptyDir of model.volume without a sizeLimit as the
    default one. Before: every default pod asked 8332Mi (2 x 4096 MB of models), two on a node of 20 GiB; then a
    model.volume emptyDir still asked 7814Mi of models for every catalog model."""
    seen = {}
    for locale, entry in m.CATALOG.items():
        for case, update in {"default": {}, "model.volume emptyDir": OWN_EMPTYDIR, **NOT_THE_CATALOGS}.items():
            spec, download = emitted_download(locale, **update)
            bound = held_to(download)
            tmp, models, asked = disk_of(spec)
            assert models == mib(bound.folder_bytes), (locale, case)
            assert asked == f"{int(tmp[:-2]) + int(models[:-2])}Mi", (locale, case)
            mb = float(update.get("settings", {}).get("ModelMaxSizeMB", "4096"))
            if case in ("default", "model.volume emptyDir") and entry.size is not None:
                assert bound == scratch.DownloadBound(entry.size, 8 * entry.size, entry.file), locale
            else:
                assert bound == scratch.model_bound(mb), (locale, case)
            seen[locale, case] = models, asked
        assert seen[locale, "model.volume emptyDir"] == seen[locale, "default"], locale
    helps = {s.key: s.help for s in settings.KNOWN}  # --help and README's settings table say the rule
    assert f"catalog knows is held to its zip and {m.CATALOG_UNPACK_RATIO} times it" in helps["ModelMaxSizeMB"]
    assert seen["ko-KR", "default"] == ("747Mi", "1265Mi") and seen["en-US", "default"] == ("355Mi", "873Mi")
    assert max((int(a[:-2]), loc) for (loc, case), (_, a) in seen.items() if case == "default" and m.CATALOG[loc].size) \
        == (3125, "sv-SE")
    assert {seen[loc, "default"] for loc in ("uk-UA", "kk-KZ", "tg-TJ")} == {("7814Mi", "8332Mi")}  # no size known
    assert {seen[loc, "model url"] for loc in m.CATALOG} == {("7814Mi", "8332Mi")}
    assert {seen[loc, "ModelMaxSizeMB"] for loc in m.CATALOG} == {("574Mi", "1092Mi")}  # 2 x 300 MB and 1 MiB


def test_a_model_volume_emptydirs_own_size_limit_is_taken_when_it_holds_the_bound_its_download_holds_itself_to() -> None:
    """For every catalog locale, by default and with ModelMaxSizeMB given: a model.volume emptyDir whose own sizeLimit
    is the bound the emitted download holds itself to is taken, emitted as given; one a MiB less is refused
    (InvalidSpec), saying the size to raise it to. Before: a sizeLimit of 747Mi for ko-KR, which holds its catalog
    model's download, was refused for want of 7814Mi (2 x ModelMaxSizeMB's default)."""
    for locale in m.CATALOG:
        for case, settings_ in {"default": {}, "ModelMaxSizeMB": {"ModelMaxSizeMB": "300"}}.items():
            default_spec, download = emitted_download(locale, settings=settings_)
            need = mib(held_to(download).folder_bytes)
            assert disk_of(default_spec)[1] == need, (locale, case)
            spec, _ = emitted_download(locale, settings=settings_, model={"volume": {"emptyDir": {"sizeLimit": need}}})
            assert disk_of(spec)[1] == need, (locale, case)
            less = f"{int(need[:-2]) - 1}Mi"
            with pytest.raises(ValueError, match=f"sizeLimit {less} cannot hold the model download") as refused:
                emitted_download(locale, settings=settings_, model={"volume": {"emptyDir": {"sizeLimit": less}}})
            assert f"raise sizeLimit to {need}" in str(refused.value), (locale, case, str(refused.value))
    ko = emitted_download("ko-KR", model={"volume": {"emptyDir": {"sizeLimit": "747Mi"}}})[0]
    assert disk_of(ko) == ("518Mi", "747Mi", "1265Mi")


def model_zip(files: dict[str, bytes]) -> bytes:
    """A model zipped as Vosk's catalog zips are (one top folder), deflated."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("vosk-model/conf/model.conf", b"--min-active=200\n")
        for name, data in files.items():
            archive.writestr(f"vosk-model/{name}", data)
    return out.getvalue()


def test_a_catalog_model_past_its_bound_is_refused_in_one_line_naming_the_setting_to_raise(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The emitted download container's run (its arguments, in this process: the catalog here says what it would of
    a de-DE zip this test serves, its size and MD5) downloads a catalog model that unpacks to 5.9 times its zip into
    the folder the operator sized for it (9 times the zip; a model.volume emptyDir without a sizeLimit alike); one
    that unpacks to 10.9 times is refused before anything is unpacked, in one line naming ModelMaxSizeMB and the
    value that takes it, and nothing is left; given that value, the operator sizes the folder for twice it and the
    download takes the zip. Before: a folder of 7814Mi for every catalog model, and the zip taken into it; then
    still 7814Mi for a model.volume emptyDir."""
    noise = os.urandom(1 << 20)
    fits = model_zip({"am/final.mdl": noise, **{f"graph/part{i}": bytes(1 << 20) for i in range(5)}})
    past = model_zip({"am/final.mdl": noise, **{f"graph/part{i}": bytes(1 << 20) for i in range(10)}})
    for name in ("EULA", "Eula", "Locale", "LOCALE", "ModelUrl", "ModelMaxSizeMB", "ModelCatalogUrl", "DownloadModel"):
        monkeypatch.delenv(name, raising=False)
    root = logging.getLogger()  # cli.main configures the process's logging: as it was after the test
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    served = Files()
    with serving(served) as base:
        def download(body: bytes, models: Path, update: dict[str, Any] | None = None,
                     **more: str) -> tuple[int, str, str, scratch.DownloadBound]:
            file = m.CATALOG["de-DE"].file
            monkeypatch.setitem(m.CATALOG, "de-DE", m.CatalogModel(file, len(body), hashlib.md5(body).hexdigest()))
            served.routes[f"/vosk/{file}"] = body
            spec, container = emitted_download("de-DE", settings={"ModelCatalogUrl": f"{base}/vosk", **more}, **(update or {}))
            args = [a for a in container["args"] if not a.startswith("Mounts:Models=")] + [f"Mounts:Models={models}"]
            capsys.readouterr()
            code = cli.main(args)
            return code, capsys.readouterr().err, disk_of(spec)[1], held_to(container)

        code, err, size, bound = download(fits, tmp_path / "fits")
        unpacked = sum(p.stat().st_size for p in (tmp_path / "fits" / "de-DE").rglob("*"))
        assert code == 0, err
        assert size == mib(9 * len(fits) + scratch.MODEL_FOLDER_BYTES) == mib(bound.folder_bytes)
        assert len(fits) + unpacked <= bound.folder_bytes and 5.8 < unpacked / len(fits) < 6
        code, err, own, bound = download(fits, tmp_path / "own", OWN_EMPTYDIR)  # model.volume's emptyDir: the same
        assert code == 0 and own == size == mib(bound.folder_bytes), (err, own, size)

        code, err, size, bound = download(past, tmp_path / "past")
        lines = [line for line in err.splitlines() if line.startswith("speech-recognizer:")]
        assert code == 1 and len(lines) == 1 and "Traceback" not in err, err
        assert (f"unpacks to {11 * 2**20 + 17} bytes, more than its models folder is sized for (8 times the "
                f"catalog's {m.CATALOG['de-DE'].file} of {len(past)} bytes, besides the zip); set ModelMaxSizeMB=12 or "
                "more to download it") in lines[0], lines[0]
        assert not (tmp_path / "past").exists() or list((tmp_path / "past").iterdir()) == []

        code, err, size, bound = download(past, tmp_path / "raised", ModelMaxSizeMB="12")
        assert code == 0, err
        assert size == mib(scratch.download_bytes(12)) == mib(bound.folder_bytes) == "24Mi"


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

