"""pytest wrapper of ``python -m tests.e2e`` (selected only with ``-m e2e``).

``SPEECH_E2E_ARGS`` holds the suite's arguments, e.g. ``--kubeconfig ~/.kube/staging --load-image
'kind load image-archive {tarball}'``; without it the suite makes its own kind cluster.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

import pytest

from .manifests import ROOT
from .suite import NOT_RUN


@pytest.mark.e2e
def test_end_to_end() -> None:
    args = shlex.split(os.environ.get("SPEECH_E2E_ARGS", ""))
    proc = subprocess.run([sys.executable, "-m", "tests.e2e", *args], cwd=ROOT, capture_output=True, text=True, timeout=3600)
    last = (proc.stdout.strip().splitlines() or [""])[-1]
    if proc.returncode == NOT_RUN:
        pytest.skip(last)
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-3000:]
