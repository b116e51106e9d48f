"""A bench command a person starts by hand answers ``--help``, and a wrong command line with argparse's usage and one
line saying why, never a traceback (``python -m bench.gateway_host --help`` ended in an IndexError: it read sys.argv by
hand, as bench.gateway_bench, its only caller, passes it)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.doc_tables import ROOT

pytestmark = pytest.mark.unit  # no model, server, operator or browser: the quick run (README, Tests)


def gateway_host(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'recognizer'}:{ROOT / 'operator'}:{ROOT}"}
    return subprocess.run([sys.executable, "-m", "bench.gateway_host", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)


def test_gateway_host_answers_help() -> None:
    r = gateway_host("--help")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert r.stdout.startswith("usage: python -m bench.gateway_host") and "{ready,asleep}" in r.stdout, r.stdout


def test_gateway_host_refuses_a_wrong_command_line_in_one_line() -> None:
    r = gateway_host("5000", "five", "ready")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert [line for line in r.stderr.splitlines() if not line.startswith(("usage:", " "))] == [
        "python -m bench.gateway_host: error: argument recognizer_port: invalid int value: 'five'"], r.stderr
