"""pytest wrapper of ``python -m tests.e2e`` (selected only with ``-m e2e``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .__main__ import NOT_RUN

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.e2e
def test_kind_end_to_end() -> None:
    proc = subprocess.run([sys.executable, "-m", "tests.e2e"], cwd=ROOT, capture_output=True, text=True, timeout=3600)
    last = (proc.stdout.strip().splitlines() or [""])[-1]
    if proc.returncode == NOT_RUN:
        pytest.skip(last)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]
