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
base, CI's machine); each pin lists the hashes of all its files. The images' locks are then resolved again for
linux aarch64 (Graviton nodes; podman or docker on an Apple-silicon Mac builds linux/arm64), their pins
preferred: that must give the same file, byte for byte (every pin has a wheel or an sdist there, and its hashes are
already in the lock), or the command fails and says what differs.
tests/ship/test_lock.py fails when pyproject.toml and the locks disagree.
"""

from __future__ import annotations

import argparse
import difflib
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOCK_DIR = ROOT / "requirements"
COMMAND = "python -m tests.ship.lock"
PYTHON_VERSION = "3.11"
PLATFORM = "x86_64-unknown-linux-gnu"
#: Where the images are built too, from the same locks (README, Build the images)
OTHER_PLATFORMS = ("aarch64-unknown-linux-gnu",)

#: lock name -> the extras it installs; the first is the one the others are constrained by
LOCKS: dict[str, tuple[str, ...]] = {
    "test": ("test",),
    "recognizer": ("recognizer",),
    "model-ko": ("model-ko",),
    "operator": ("operator",),
}
#: the others: the locks the Dockerfile installs
IMAGE_LOCKS = tuple(LOCKS)[1:]


def lock_file(name: str) -> Path:
    return LOCK_DIR / f"{name}.txt"


def compile_lock(name: str, extras: tuple[str, ...], *, constraints: Path | None, upgrade: bool,
                 platform: str = PLATFORM, output: Path | None = None) -> None:
    """Resolve ``extras`` into the lock ``name`` (or ``output``); the pins already in that file are kept where they fit."""
    target = output or lock_file(name).relative_to(ROOT)
    cmd = [sys.executable, "-m", "uv", "pip", "compile", "pyproject.toml", "--quiet", "--generate-hashes",
           "--python-platform", platform, "--python-version", PYTHON_VERSION, "--custom-compile-command", COMMAND,
           "--output-file", str(target)]
    cmd += [arg for extra in extras for arg in ("--extra", extra)]
    if constraints is not None:
        cmd += ["--constraint", str(constraints.relative_to(ROOT))]
    if upgrade:
        cmd.append("--upgrade")
    subprocess.run(cmd, cwd=ROOT, check=True)


def platform_drift(name: str, platform: str) -> str:
    """How the lock ``name`` differs when resolved for ``platform`` from its own pins: a diff, or uv's reason it cannot
    resolve there (a pin without a wheel for it, and no sdist); empty when the lock serves that platform as it is.
    uv is given the pins without their hashes: it keeps the hashes of the file it rewrites, so a pin whose wheel for
    ``platform`` came out after the lock was written would pass without it (pip on that platform then refuses it)."""
    with tempfile.TemporaryDirectory() as tmp:
        again = Path(tmp) / lock_file(name).name
        pins = [line.removesuffix("\\").strip() for line in lock_file(name).read_text().splitlines() if line[:1].isalnum()]
        again.write_text("".join(f"{pin}\n" for pin in pins))
        try:
            compile_lock(name, LOCKS[name], constraints=lock_file(next(iter(LOCKS))), upgrade=False, platform=platform,
                         output=again)
        except subprocess.CalledProcessError:
            return f"uv cannot resolve it for {platform} (its error above)"
        ours, theirs = lock_file(name).read_text().splitlines(), again.read_text().splitlines()
    return "\n".join(difflib.unified_diff(ours, theirs, f"requirements/{name}.txt", platform, lineterm=""))


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
    failed = 0
    for platform in OTHER_PLATFORMS:
        for name in IMAGE_LOCKS:
            if drift := platform_drift(name, platform):
                print(f"requirements/{name}.txt does not serve {platform} as it is (a hash it lacks: delete that pin "
                      f"and run {COMMAND} again):\n{drift}", file=sys.stderr)
                failed = 1
            else:
                print(f"{lock_file(name).relative_to(ROOT)} serves {platform} as it is")
    return failed


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
