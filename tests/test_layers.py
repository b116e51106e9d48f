"""Dependencies point one way: the tests and the benchmarks import ``harness`` (what they share)
and the production packages, never each other; ``harness`` imports neither; production code
imports none of them, and neither the wheel nor the images carry them."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit  # no model, server, operator or browser: the quick run (README, Tests)

ROOT = Path(__file__).resolve().parents[1]
PRODUCTION = (ROOT / "recognizer" / "speech_recognizer", ROOT / "operator" / "speech_operator")
DEV_ONLY = {"tests", "bench", "harness"}


def top_level_imports(folder: Path, package: str) -> dict[str, set[str]]:
    """module file (relative to ``folder``'s parent) -> top-level packages it imports, relative imports
    resolved against ``package`` (the folder's package name), also imports inside functions."""
    found: dict[str, set[str]] = {}
    for path in sorted(folder.rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                names.add(package if node.level else (node.module or "").split(".")[0])
        found[str(path.relative_to(folder.parent))] = names
    return found


def offenders(folder: Path, package: str, forbidden: set[str]) -> dict[str, set[str]]:
    return {module: bad for module, names in top_level_imports(folder, package).items() if (bad := names & forbidden)}


def test_production_imports_no_test_or_bench_code() -> None:
    for folder in PRODUCTION:
        assert offenders(folder, folder.name, DEV_ONLY) == {}


def test_bench_does_not_import_the_tests() -> None:
    assert offenders(ROOT / "bench", "bench", {"tests"}) == {}


def test_the_tests_do_not_import_bench() -> None:
    """What the tests share with the benchmarks is in ``harness``: the tests stand without the benchmarks."""
    assert offenders(ROOT / "tests", "tests", {"bench"}) == {}


def test_harness_imports_neither_tests_nor_bench() -> None:
    assert offenders(ROOT / "harness", "harness", {"tests", "bench"}) == {}


def test_the_check_sees_imports(tmp_path: Path) -> None:
    """The checker itself: absolute, dotted, relative and function-level imports are all seen."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "a.py").write_text("import tests.support\nfrom bench.common import Audio\n")
    (pkg / "b.py").write_text("from . import x\n\ndef f():\n    import harness.speech\n")
    (pkg / "c.py").write_text("from .tests import y\nimport speech_recognizer\n")
    assert offenders(pkg, "pkg", DEV_ONLY) == {"pkg/a.py": {"tests", "bench"}, "pkg/b.py": {"harness"}}


def test_harness_is_not_shipped() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert not any(p.split(".")[0] in DEV_ONLY for p in setuptools["packages"])
    allowed = [line[1:].strip("/") for line in (ROOT / ".dockerignore").read_text().splitlines() if line.startswith("!")]
    assert not set(allowed) & DEV_ONLY, "the images' build context allows only the package sources"
