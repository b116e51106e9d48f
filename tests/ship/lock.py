"""The locks on what ships: ``requirements/*.txt``, every package pinned, each with its hashes.

    python -m tests.ship.lock              # regenerate them from pyproject.toml (keeps the pins it can)
    python -m tests.ship.lock --upgrade    # and move every pin to the newest version allowed

One lock per set of extras that is installed somewhere: ``test`` (what ``.ci/run`` installs),
``recognizer`` and ``model-ko`` (the recognizer image; the model only when it is baked in) and
``operator`` (the operator image). The test lock is compiled first; the images' locks take its pins
as constraints, so an image holds the versions the tests ran with. Installed with
``pip install --require-hashes -r requirements/<name>.txt`` and then the project itself with
``--no-deps`` (the Dockerfile, ``.ci/run``). uv resolves them (``pip install uv``, in the ``test``
extra) from the package index for where they are installed: Python 3.11 on linux x86_64 (the images'
base, CI's machine); each pin lists the hashes of all its files.
tests/ship/test_lock.py fails when pyproject.toml and the locks disagree.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOCK_DIR = ROOT / "requirements"
COMMAND = "python -m tests.ship.lock"
PYTHON_VERSION = "3.11"
PLATFORM = "x86_64-unknown-linux-gnu"

#: lock name -> the extras it installs; the first is the one the others are constrained by
LOCKS: dict[str, tuple[str, ...]] = {
    "test": ("test",),
    "recognizer": ("recognizer",),
    "model-ko": ("model-ko",),
    "operator": ("operator",),
}


def lock_file(name: str) -> Path:
    return LOCK_DIR / f"{name}.txt"


def compile_lock(name: str, extras: tuple[str, ...], *, constraints: Path | None, upgrade: bool) -> None:
    cmd = [sys.executable, "-m", "uv", "pip", "compile", "pyproject.toml", "--quiet", "--generate-hashes",
           "--python-platform", PLATFORM, "--python-version", PYTHON_VERSION, "--custom-compile-command", COMMAND,
           "--output-file", str(lock_file(name).relative_to(ROOT))]
    cmd += [arg for extra in extras for arg in ("--extra", extra)]
    if constraints is not None:
        cmd += ["--constraint", str(constraints.relative_to(ROOT))]
    if upgrade:
        cmd.append("--upgrade")
    subprocess.run(cmd, cwd=ROOT, check=True)


def parse(argv: list[str]) -> argparse.Namespace:
    """The command's options: ``--help`` or a mistyped option stops here, before any lock is rewritten."""
    parser = argparse.ArgumentParser(prog=COMMAND, description="Regenerate requirements/*.txt from pyproject.toml "
                                     "(every pin with its hashes; the pins it can are kept).")
    parser.add_argument("--upgrade", action="store_true", help="move every pin to the newest version pyproject.toml allows")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    upgrade = parse(argv).upgrade
    LOCK_DIR.mkdir(exist_ok=True)
    names = list(LOCKS)
    first = names[0]
    compile_lock(first, LOCKS[first], constraints=None, upgrade=upgrade)
    for name in names[1:]:
        compile_lock(name, LOCKS[name], constraints=lock_file(first), upgrade=upgrade)
    for name in names:
        print(f"wrote {lock_file(name).relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
