"""The command-line entry points as a user runs them, output piped into a reader that stops early.

``speech-recognizer --help | head -1`` ended in a BrokenPipeError traceback: the program
wrote on after ``head`` had gone. Each entry point must end quietly instead, as ``cat`` does.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit  # no model, server, operator or browser: the quick run (README, Tests)

#: Every way a user starts the programs, with a command that writes more than one line.
COMMANDS = {
    "speech-recognizer --help": ["speech-recognizer", "--help"],
    "python -m speech_recognizer --help": [sys.executable, "-m", "speech_recognizer", "--help"],
    "speech-operator --help": ["speech-operator", "--help"],
    "speech-operator crd": ["speech-operator", "crd"],
    "python -m speech_operator crd": [sys.executable, "-m", "speech_operator", "crd"],
}
#: What a shell reports for a program killed by SIGPIPE, as ``cat`` is.
SIGPIPE_STATUS = 141


def command(name: str) -> list[str]:
    """The command line, with a console script resolved next to this Python (where pip put it)."""
    argv = list(COMMANDS[name])
    if argv[0] != sys.executable:
        script = Path(sys.executable).parent / argv[0]
        found = str(script) if script.exists() else shutil.which(argv[0])
        assert found, f"the console script {argv[0]} is not installed: pip install -e '.[recognizer,operator]'"
        argv[0] = found
    return argv


def environment(unbuffered: bool) -> dict[str, str]:
    """This environment, with stdout block-buffered (Python's default on a pipe) or unbuffered."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    return env


def assert_quiet(stderr: str) -> None:
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr and "Exception ignored" not in stderr, stderr
    assert stderr == "", stderr


@pytest.mark.parametrize("unbuffered", [False, True], ids=["buffered", "unbuffered"])
@pytest.mark.parametrize("name", COMMANDS)
def test_piped_into_head_ends_quietly(name: str, unbuffered: bool) -> None:
    """``<command> | head -1``, exactly as a user types it (unbuffered: the print's second write,
    its newline, comes after ``head`` has gone)."""
    line = f"{shlex.join(command(name))} | head -1"
    r = subprocess.run(["sh", "-c", line], capture_output=True, text=True, timeout=120, env=environment(unbuffered))
    assert_quiet(r.stderr)
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 1 and r.stdout.strip(), r.stdout


@pytest.mark.parametrize("unbuffered", [False, True], ids=["buffered", "unbuffered"])
@pytest.mark.parametrize("name", COMMANDS)
def test_a_reader_that_is_gone_ends_it_quietly(name: str, unbuffered: bool) -> None:
    """The reader is gone before the first write (what ``| head`` leaves when it wins the race):
    every write fails, at the print (unbuffered) or at the flush on exit (buffered)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        r = subprocess.run(command(name), stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120,
                           env=environment(unbuffered))
    finally:
        os.close(write_end)
    assert_quiet(r.stderr)
    assert r.returncode in (SIGPIPE_STATUS, 0), "0: argparse's --help drops its own write errors"
