"""Run what the builders emit: the pod of every SpeechToText in deploy/examples, run as a kubelet would,
with this checkout as the image (the built image: tests/ship/test_images.py).

What runs, what is checked and what differs from a cluster: tests/example_pods.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from speech_recognizer.models import installed_packages

from speech_operator.config import OperatorConfig
from tests.example_pods import cases, run_example, zip_model
from tests.kubelet import host_image

CONFIG = OperatorConfig()
CASES = cases(CONFIG)


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
