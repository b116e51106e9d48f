"""The e2e runner's "not run" path (always collected; needs no cluster)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from . import suite as e2e
from .manifests import ROOT

pytestmark = pytest.mark.unit  # no model, server, operator or browser: the quick run (README, Tests)


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


def test_a_cluster_that_does_not_answer_is_a_failure_not_a_pass_nor_not_run(tmp_path: Path) -> None:
    """The command as a person runs it, with the real kubectl, against a kubeconfig whose API server
    is not there: the first step fails with kubectl's reason, nothing is created, exit 1."""
    from tests.support import free_port

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "gone",
        "contexts": [{"name": "gone", "context": {"cluster": "gone", "user": "gone"}}],
        "clusters": [{"name": "gone", "cluster": {"server": f"https://127.0.0.1:{free_port()}"}}],
        "users": [{"name": "gone", "user": {"token": "t"}}]}))
    proc = subprocess.run([sys.executable, "-m", "tests.e2e", "--kubeconfig", str(kubeconfig),
                           "--operator-image", "localhost/speech-operator:e2e-x",
                           "--recognizer-image", "localhost/speech-recognizer:e2e-x"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert lines[-1] == "e2e: FAILED: 1 of 1 steps did not pass"
    assert lines[-2].startswith("FAIL    the cluster answers: `") and "was refused" in lines[-2]
    assert not [line for line in lines if "clean-up" in line], "nothing was created, so nothing is cleaned up"
