"""Run what we emit as a kubelet would, with this checkout as the image: the operator's own pod, and
the pods of two SpeechToTexts of deploy/examples (an ApiKey from a Secret; license and output on
PVCs, given to the recognizer's user by the init container). tests/ship/test_images.py runs the pod
of every example in the built images, in the full run (`slow`); these two are the quick check of the
same path without an image build (running all of them here too cost about 100 s more per run).

What runs, what is checked and what differs from a cluster: tests/example_pods.py, tests/operator_pod.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from speech_recognizer.models import installed_packages

from speech_operator.config import OperatorConfig
from tests.example_pods import cases, run_example, zip_model
from tests.kubelet import host_image
from tests.operator_pod import run_operator_pod

CONFIG = OperatorConfig()
CASES = {case: where for case, where in cases(CONFIG).items() if case in ("api-key-secret:en-us", "disconnected:en-us-offline")}
assert len(CASES) == 2, "an example these tests run was renamed: pick it again"


@pytest.fixture(scope="module")
def ko_model() -> Path:
    return installed_packages()["ko-KR"]


@pytest.fixture(scope="module")
def catalog_zip(ko_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return zip_model(ko_model, tmp_path_factory.mktemp("catalog") / "model.zip")


@pytest.mark.parametrize(("path", "name"), list(CASES.values()), ids=list(CASES))
def test_emitted_pod_runs_and_passes_every_probe(path: Path, name: str, tmp_path: Path, ko_model: Path,
                                                 catalog_zip: Path, speech_wav: Path) -> None:
    print(run_example(path, name, host_image(), CONFIG, tmp_path, ko_model, catalog_zip, speech_wav))


def test_operator_pod_runs_and_works_a_speechtotext(tmp_path: Path) -> None:
    """deploy/base's operator pod, this checkout as the image, as uid 65532 without a passwd entry
    (this machine has none for it) and without HOME: it crashed at once with both
    ('Could not determine home directory', then kopf's 'getpwuid(): uid not found: 65532')."""
    print(run_operator_pod(host_image(("python", "-m", "speech_operator")), "speech-operator:checkout", tmp_path))


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
