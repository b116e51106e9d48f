"""The e2e runner's "not run" path (always collected; needs no cluster)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from . import suite as e2e
from .manifests import ROOT


def test_missing_tools_mean_not_run_with_reasons(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    with pytest.raises(e2e.NotRun) as exc:
        e2e.preflight(e2e.parse_args([]))
    assert "no `docker` command" in str(exc.value) and "no `kind` command" in str(exc.value)
    assert e2e.main([]) == e2e.NOT_RUN == 77
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1].startswith("e2e: NOT RUN: ")
    assert "PASSED" not in out


def test_without_docker_or_kubeconfig_the_command_says_not_run(tmp_path: Path) -> None:
    """`python -m tests.e2e` on a machine without Docker or kind (PATH holds neither, even where
    the test machine has them): exit 77, whatever else it finds."""
    env = {**os.environ, "PATH": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "tests.e2e"], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 77, proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines()[-1].startswith("e2e: NOT RUN: ")
    assert "PASSED" not in proc.stdout
