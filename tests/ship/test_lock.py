"""The locks (requirements/*.txt, tests/ship/lock.py) hold what pyproject.toml asks for, and only
that; every pin carries its hashes; the images' locks pin what the tests ran with; and every
third-party module the code imports comes from a declared dependency."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from . import lock
from .conftest import ROOT

pytestmark = pytest.mark.unit  # no model, server, operator or browser: the quick run (README, Tests)

PROJECT = "speech-operator"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)(?:\s*;\s*([^\\]+?))?\s*\\?$")


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def direct_requirements(extras: tuple[str, ...]) -> list[Requirement]:
    """The requirements ``extras`` bring, the project's own extras they name expanded."""
    declared = pyproject()["project"]["optional-dependencies"]
    out: list[Requirement] = []
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for line in declared[extra]:
            req = Requirement(line)
            if canonicalize_name(req.name) == PROJECT:
                todo.extend(req.extras)
            else:
                out.append(req)
    return out


class Lock:
    """A parsed lock file: pins, their hashes, and who asked for each (uv's ``# via`` lines)."""

    def __init__(self, text: str) -> None:
        self.pins: dict[str, str] = {}
        self.hashes: dict[str, int] = {}
        self.via: dict[str, set[str]] = {}
        current = None
        in_via = False
        for line in text.splitlines():
            if match := PIN.match(line):
                current = canonicalize_name(match.group(1))
                assert current not in self.pins, f"{current} pinned twice"
                self.pins[current], self.hashes[current], self.via[current] = match.group(2), 0, set()
                in_via = False
            elif "--hash=sha256:" in line and current:
                self.hashes[current] += 1
            elif line.strip().startswith("# via") and current:
                in_via = True
                rest = line.strip().removeprefix("# via").strip()
                if rest:
                    self.via[current].add(rest)
            elif in_via and line.strip().startswith("#   ") and current:
                self.via[current].add(line.strip().removeprefix("#").strip())
            elif line and not line.startswith((" ", "#")):
                raise AssertionError(f"unexpected line in a lock: {line!r}")


def read_lock(name: str) -> Lock:
    path = lock.lock_file(name)
    assert path.is_file(), f"{path.relative_to(ROOT)} is missing: run {lock.COMMAND}"
    return Lock(path.read_text())


@pytest.mark.parametrize("name", list(lock.LOCKS))
def test_lock_pins_every_requirement_with_hashes(name: str) -> None:
    """Each requirement of the lock's extras is pinned at a version it allows, every pin has a hash."""
    locked = read_lock(name)
    problems = []
    for req in direct_requirements(lock.LOCKS[name]):
        pin = locked.pins.get(canonicalize_name(req.name))
        if pin is None:
            problems.append(f"{req} is not in the lock")
        elif not req.specifier.contains(pin, prereleases=True):
            problems.append(f"{req} but the lock pins {pin}")
    assert not problems, f"requirements/{name}.txt drifted from pyproject.toml ({lock.COMMAND}):\n" + "\n".join(problems)
    assert all(locked.hashes.values()) and locked.pins, "a pin without a hash"
    header = lock.lock_file(name).read_text().splitlines()[:2]
    assert header[1].strip("# ") == lock.COMMAND, "the lock says how to regenerate it"


@pytest.mark.parametrize("name", list(lock.LOCKS))
def test_lock_holds_nothing_left_over(name: str) -> None:
    """Every locked package is asked for by the project's extras or by another locked package: a
    dependency dropped from pyproject.toml leaves the lock too."""
    locked = read_lock(name)
    direct = {canonicalize_name(r.name) for r in direct_requirements(lock.LOCKS[name])}
    orphans = []
    for package, parents in locked.via.items():
        askers = {canonicalize_name(p.split(" ")[0]) for p in parents if not p.startswith("-c ")}
        from_project = PROJECT in askers and package in direct
        from_locked = bool((askers - {PROJECT}) & set(locked.pins))
        if not (from_project or from_locked):
            orphans.append(f"{package} (via {sorted(parents)})")
    assert not orphans, f"requirements/{name}.txt holds what nothing asks for ({lock.COMMAND}): {orphans}"


def test_images_ship_what_the_tests_ran_with() -> None:
    test = read_lock("test")
    for name in lock.LOCKS:
        for package, version in read_lock(name).pins.items():
            assert test.pins.get(package, version) == version, f"{name}: {package}=={version}, the tests ran {test.pins.get(package)}"


def test_the_lock_parser_sees_drift() -> None:
    """The checks above on a lock that lost a requirement and one that kept a dropped one."""
    text = ("# header\n#    python -m tests.ship.lock\n"
            "kopf==1.45.2 \\\n    --hash=sha256:aa\n    # via speech-operator (pyproject.toml)\n"
            "oldlib==1.0 \\\n    --hash=sha256:bb\n    # via speech-operator (pyproject.toml)\n"
            "six==1.0 ; python_version < '4' \\\n    --hash=sha256:cc\n    # via\n    #   kopf\n    #   -c requirements/test.txt\n")
    parsed = Lock(text)
    assert parsed.pins == {"kopf": "1.45.2", "oldlib": "1.0", "six": "1.0"}
    assert parsed.via["six"] == {"kopf", "-c requirements/test.txt"} and parsed.hashes["six"] == 1
    assert not SpecifierSet(">=1.46").contains(parsed.pins["kopf"])


def test_the_lock_command_rewrites_nothing_on_help_or_a_typo() -> None:
    """``python -m tests.ship.lock --help`` (and ``--upgarde``) ran the whole lock: the index queried, every
    requirements/*.txt rewritten. Now argparse answers first; the locks' bytes and times are untouched."""
    before = {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in lock.LOCK_DIR.glob("*.txt")}
    helped = subprocess.run([sys.executable, "-m", "tests.ship.lock", "--help"], cwd=lock.ROOT, capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and "--upgrade" in helped.stdout and "wrote" not in helped.stdout, helped
    typo = subprocess.run([sys.executable, "-m", "tests.ship.lock", "--upgarde"], cwd=lock.ROOT, capture_output=True, text=True, timeout=60)
    assert typo.returncode == 2 and "unrecognized arguments: --upgarde" in typo.stderr, typo
    assert {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in lock.LOCK_DIR.glob("*.txt")} == before


# ---- what the code imports comes from what its extra declares --------------------------------
def import_nodes(tree: ast.AST, *, at_import: bool = False) -> list[ast.Import | ast.ImportFrom]:
    """The import statements in ``tree``; with ``at_import``, only those run when the module is
    imported (not those inside functions, which run when they are called)."""
    out: list[ast.Import | ast.ImportFrom] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.append(node)
        if at_import and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        todo.extend(ast.iter_child_nodes(node))
    return out


def imported_modules(paths: list[Path], *, at_import: bool = False) -> dict[str, set[str]]:
    """top-level module -> the files importing it (absolute imports only)."""
    found: dict[str, set[str]] = {}
    for path in paths:
        for node in import_nodes(ast.parse(path.read_text(), str(path)), at_import=at_import):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


def closure(requirements: list[Requirement]) -> set[str]:
    """The distributions ``requirements`` install here (markers for this interpreter)."""
    out: set[str] = set()
    todo = [(r.name, tuple(r.extras)) for r in requirements if r.marker is None or r.marker.evaluate()]
    while todo:
        name, extras = todo.pop()
        key = canonicalize_name(name)
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        if key in out and not extras:
            continue
        out.add(key)
        for line in dist.requires or []:
            req = Requirement(line)
            envs = [{"extra": e} for e in ("", *extras)]
            if req.marker is None or any(req.marker.evaluate(env) for env in envs):
                todo.append((req.name, tuple(req.extras)))
    return out


OWN = {"speech_recognizer", "speech_operator", "tests", "harness", "bench", "conftest", "stt_schema", "__future__"}


def undeclared(paths: list[Path], extras: tuple[str, ...], *, at_import: bool = False) -> dict[str, set[str]]:
    provides = importlib.metadata.packages_distributions()
    allowed = closure(direct_requirements(extras))
    missing = {}
    for module, where in imported_modules(paths, at_import=at_import).items():
        if module in sys.stdlib_module_names or module in OWN:
            continue
        dists = {canonicalize_name(d) for d in provides.get(module, [])}
        if not dists & allowed:
            missing[module] = where
    return missing


def recognizer_modules_of(paths: list[Path]) -> list[Path]:
    """The speech_recognizer modules ``paths`` import (anywhere), and those these import when they
    are imported, in turn."""
    package = ROOT / "recognizer" / "speech_recognizer"
    seen: set[Path] = set()
    todo = list(paths)
    while todo:
        path = todo.pop()
        shared = path.is_relative_to(package)
        for node in import_nodes(ast.parse(path.read_text()), at_import=shared):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.level and path.is_relative_to(package):
                    base = path.parent
                    for _ in range(node.level - 1):
                        base = base.parent
                    names = [".".join([*base.relative_to(package.parent).parts, *node.module.split(".")])]
                elif node.module.startswith("speech_recognizer"):
                    names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.startswith("speech_recognizer")]
            for name in names:
                parts = name.split(".")
                for candidate in (package.parent.joinpath(*parts).with_suffix(".py"), package.parent.joinpath(*parts, "__init__.py")):
                    if candidate.is_file() and candidate not in seen:
                        seen.add(candidate)
                        todo.append(candidate)
    return sorted(seen)


def test_recognizer_imports_only_what_its_extra_installs() -> None:
    paths = sorted((ROOT / "recognizer").rglob("*.py"))
    assert undeclared(paths, ("recognizer",)) == {}


def test_operator_imports_only_what_its_extra_installs() -> None:
    """The operator image has the operator extra only, and imports some recognizer modules: what
    those import when imported must be there too (their function-level imports are not run)."""
    own = sorted((ROOT / "operator").rglob("*.py"))
    shared = recognizer_modules_of(own)
    assert ROOT / "recognizer/speech_recognizer/errors.py" in shared
    assert undeclared(own, ("operator",)) == {}
    assert undeclared(shared, ("operator",), at_import=True) == {}


def test_tests_import_only_what_the_test_extra_installs() -> None:
    paths = sorted([*(ROOT / "tests").rglob("*.py"), *(ROOT / "harness").rglob("*.py")])
    assert undeclared(paths, ("test",)) == {}
