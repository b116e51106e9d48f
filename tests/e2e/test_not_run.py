"""The e2e runner's "not run" path (always collected; needs no cluster)."""

from __future__ import annotations

import shutil

import pytest

from . import __main__ as e2e


def test_missing_tools_mean_not_run_with_reasons(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(e2e.ROOT)  # main() chdirs there; monkeypatch restores the cwd
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    with pytest.raises(e2e.NotRun) as exc:
        e2e.preflight()
    assert "no `docker` command" in str(exc.value) and "no `kind` command" in str(exc.value)
    assert e2e.main([]) == e2e.NOT_RUN == 77
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1].startswith("e2e: NOT RUN: ")
    assert "PASSED" not in out
