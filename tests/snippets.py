"""The commands and snippets of README.md and of the recognizer's home page, and how each is checked.

README.md's fenced blocks run as written, in order, in one working folder, against a recognizer started
with the README's own settings (``localhost:5000`` is pointed at it: the one word changed). A block that
cannot run here says so in an HTML comment on the line above it, which this module honours and
tests/test_snippets.py lists:

    <!-- not run here: PREFIX, PREFIX: REASON -->   its commands that start with a PREFIX ("*": all)
                                                    get a static check instead (below)
    <!-- output: KIND -->                           sample output or a fragment, checked against what
                                                    it shows (OUTPUT_KINDS)

Every command that is not run has a static check (STATIC: helm commands render with ``helm template``
and the same arguments, manifests validate, kubectl verbs accept their flags and name objects that
exist, CLIs parse their arguments...); a command with none fails the test, so none is skipped silently.
"""

from __future__ import annotations

import html
import json
import os
import re
import shlex
import subprocess
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.M | re.S)
MARKER = re.compile(r"<!--\s*(not run here|output):\s*(.*?)\s*-->", re.S)


@dataclass
class Block:
    """A fenced block of a markdown file."""

    line: int
    lang: str
    text: str
    #: ("not run here", "PREFIX, PREFIX: REASON") or ("output", "KIND") from the comment above it
    marker: tuple[str, str] | None = None

    @property
    def not_run(self) -> tuple[list[str], str]:
        """The command prefixes not run here, and why."""
        if not self.marker or self.marker[0] != "not run here":
            return [], ""
        prefixes, _, reason = self.marker[1].partition(":")
        return [p.strip() for p in prefixes.split(",") if p.strip()], reason.strip()


def blocks(markdown: str) -> list[Block]:
    """Every fenced block, with the marker on the line above it (blank lines between allowed)."""
    found = []
    for match in FENCE.finditer(markdown):
        before = markdown[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = MARKER.fullmatch(before.strip())
        found.append(Block(markdown[: match.start()].count("\n") + 2, match.group(1), match.group(2),
                           (marker.group(1), marker.group(2)) if marker else None))
    return found


# ---- shell commands -------------------------------------------------------------------------------
@dataclass
class Command:
    """One shell command of a block: its text (a heredoc's body included) and its words."""

    text: str
    heredoc: str | None = None

    @property
    def words(self) -> list[str]:
        return shlex.split(self.text.split("<<", 1)[0] if self.heredoc is not None else self.text, comments=True)

    def starts_with(self, prefix: str) -> bool:
        return prefix == "*" or self.words[: len(prefix.split())] == prefix.split()


def split_and(line: str) -> list[str]:
    """``a && b`` -> ``[a, b]``, outside quotes."""
    parts, current, quote = [], "", ""
    i = 0
    while i < len(line):
        ch = line[i]
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif line.startswith("&&", i):
            parts.append(current.strip())
            current, i = "", i + 2
            continue
        current += ch
        i += 1
    return [p for p in [*parts, current.strip()] if p]


def commands(text: str) -> list[Command]:
    """The commands of a shell block: continuation lines joined, heredocs kept with their command,
    ``&&`` chains split, comment lines dropped."""
    lines = text.splitlines()
    out: list[Command] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        while line.endswith("\\") and i + 1 < len(lines):
            i += 1
            line = line[:-1] + " " + lines[i].strip()
        i += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        heredoc = re.search(r"<<-?\s*'?(\w+)'?", line)
        if heredoc:
            body = []
            while i < len(lines) and lines[i].strip() != heredoc.group(1):
                body.append(lines[i])
                i += 1
            i += 1
            out.append(Command(line + "\n" + "\n".join(body) + "\n" + heredoc.group(1), "\n".join(body) + "\n"))
        else:
            out.extend(Command(part) for part in split_and(line))
    return out


def is_server_start(command: Command) -> bool:
    """A command that starts the recognizer (and serves until stopped)."""
    words = command.words
    program = words[:3] == ["python", "-m", "speech_recognizer"] or words[:1] == ["speech-recognizer"]
    args = words[3:] if words[:1] == ["python"] else words[1:]
    return program and not (args and args[0] == "transcribe") and "DownloadModel=True" not in args


# ---- a user's shell ---------------------------------------------------------------------------------
#: Where the README's server listens; the runner points it at the test's server instead.
README_ADDRESS = "localhost:5000"


def server_args(command: Command) -> list[str]:
    """The settings a command that starts the recognizer passes (``python -m speech_recognizer ARGS``)."""
    words = command.words
    return words[3:] if words[:1] == ["python"] else words[1:]


@dataclass
class Shell:
    """A user's shell, for the snippets: one working folder (a file a block makes is there for the next)
    and ``localhost:5000`` meaning the test's server on ``address``, the only word of a snippet the
    runner changes. The server is the session's (tests/conftest.py: its model is loaded once), started
    with the settings of the README's own command (tests/test_snippets.py checks they are the same)."""

    workdir: Path
    address: str
    env: dict[str, str] = field(default_factory=dict)

    def local(self, text: str) -> str:
        return text.replace(README_ADDRESS, self.address)

    def run(self, argv: list[str], *, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.local(a) for a in argv], cwd=self.workdir, input=None if stdin is None else self.local(stdin),
                              capture_output=True, text=True, timeout=timeout, env={**os.environ, **self.env})

    def shell(self, script: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return self.run(["bash", "-e", "-o", "pipefail", "-c", script], timeout=timeout)


# ---- what a command's output must show --------------------------------------------------------------
def check_output(command: str, proc: subprocess.CompletedProcess[str]) -> None:
    """Exit 0; and an answer of the recognizer is no error: JSON with ``error`` fails (a 401/403 that
    curl -s prints quietly), a recognition must be a Success."""
    assert proc.returncode == 0, f"$ {command}\nexit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    for line in proc.stdout.splitlines() or [proc.stdout]:
        with suppress(ValueError):
            answer = json.loads(line)
            if isinstance(answer, dict):
                assert "error" not in answer, f"$ {command}\n{proc.stdout}"
                if "RecognitionStatus" in answer:
                    assert answer["RecognitionStatus"] == "Success", f"$ {command}\n{proc.stdout}"


# ---- the home page's snippets -----------------------------------------------------------------------
def home_page_snippets(page: str) -> list[str]:
    """The text of every ``<pre>`` on the home page, as a browser shows it."""
    return [html.unescape(re.sub(r"<[^>]+>", "", m)) for m in re.findall(r"<pre>(.*?)</pre>", page, re.S)]


StaticCheck = Callable[[Command, "Context"], None]


@dataclass
class Context:
    """What a static check may need: the block it is in, and objects created earlier in it."""

    block: Block
    created: dict[str, dict[str, Any]] = field(default_factory=dict)
    done: list[str] = field(default_factory=list)
