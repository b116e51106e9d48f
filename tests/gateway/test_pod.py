"""Run what deploy/ emits for the gateway: its pod (tests/gateway_pod.py) with this checkout as the
operator image (tests/kubelet.py's host image: its Python and the worktree, read-only; the image's
ENTRYPOINT ``speech-operator`` and ENV ``HOME=/tmp`` as the Dockerfile sets them). The built image
runs the same pod in tests/ship/test_images.py (test_operator_image_runs_the_gateway): a run that builds the
images runs it there only (``in_image``, tests/conftest.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tests.gateway_pod import run_gateway_pod
from tests.kubelet import host_image


@pytest.mark.in_image
def test_the_gateway_pod_runs_as_a_kubelet_runs_it(tmp_path: Path) -> None:
    image = host_image(entrypoint=("speech-operator",))
    image = dataclasses.replace(image, env={**image.env, "HOME": "/tmp"})
    print(run_gateway_pod(image, tmp_path))
