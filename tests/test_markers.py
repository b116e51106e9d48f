"""The quick run (``python -m pytest -m unit``) stays quick: a test marked ``unit`` that uses the
model, the operator on kmock or a browser is refused at collection, with its name."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest

from . import conftest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.unit  # no model, server, operator or browser: the quick run (README, Tests)


@dataclass
class Item:
    nodeid: str
    fixturenames: list[str]
    markers: set[str] = field(default_factory=set)

    def get_closest_marker(self, name: str) -> object | None:
        return name if name in self.markers else None


def test_a_unit_test_using_the_model_or_the_operator_is_refused() -> None:
    items = [Item("t.py::pure", ["tmp_path"], {"unit"}),
             Item("t.py::served", ["server", "registry", "tmp_path"], {"unit"}),
             Item("t.py::operated", ["cluster", "apiserver"], {"unit"}),
             Item("t.py::integration", ["server", "registry"])]
    with pytest.raises(pytest.UsageError) as refused:
        conftest.pytest_collection_modifyitems(None, items)  # type: ignore[arg-type]
    assert "t.py::served uses ['registry']" in str(refused.value)
    assert "t.py::operated uses ['apiserver']" in str(refused.value)
    assert "pure" not in str(refused.value) and "t.py::integration" not in str(refused.value)
    conftest.pytest_collection_modifyitems(None, [items[0], items[3]])  # type: ignore[arg-type]


def test_a_run_that_builds_the_images_runs_their_pods_there_only() -> None:
    """``in_image`` tests run their pods with this checkout unless the run builds the images (selects a ``slow``
    test): then they are deselected, as pytest reports deselections, and those pods run in the images."""
    deselected: list[Item] = []
    config = SimpleNamespace(hook=SimpleNamespace(pytest_deselected=lambda items: deselected.extend(items)))
    pod, image, other = Item("a.py::pod", [], {"in_image"}), Item("b.py::image", [], {"slow"}), Item("c.py::other", [])
    items = [pod, image, other]
    conftest.pytest_collection_modifyitems(config, items)  # type: ignore[arg-type]
    assert items == [image, other] and deselected == [pod]
    items = [pod, other]
    conftest.pytest_collection_modifyitems(config, items)  # type: ignore[arg-type]
    assert items == [pod, other] and deselected == [pod]


@pytest.mark.parametrize(("marks", "runs"), [("not slow", True), ("", False)])
def test_in_image_tests_run_unless_the_images_are_built_in_that_run(marks: str, runs: bool) -> None:
    """What pytest itself collects: ``-m 'not slow'`` keeps the gateway's pod run with this checkout (the image
    tests are deselected by -m before the check), a run selecting test_images.py's tests leaves it to them."""
    args = ["--collect-only", "-q", "-p", "no:cacheprovider", "tests/gateway/test_pod.py", "tests/ship/test_images.py",
            *(["-m", marks] if marks else [])]
    out = subprocess.run([sys.executable, "-m", "pytest", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert ("tests/gateway/test_pod.py::test_the_gateway_pod_runs_as_a_kubelet_runs_it" in out.stdout) is runs, out.stdout


def test_readme_tests_table_names_the_markers_and_the_parts() -> None:
    """README, What the test command costs: every marker a command selects (`-m unit`, `-m 'not slow'`, `slow`) is
    one pyproject declares, and the parts listed (`tests/recognizer`, or ...) are the folders of tests/, all of them."""
    import tomllib

    from tests.doc_tables import README, code_spans, table
    declared = {m.split(":", 1)[0] for m in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["markers"]}
    rows = table(README.read_text(), "| command | what runs | what it needs |")
    selected = {word for row in rows for code in code_spans(row[0]) for quoted, bare in re.findall(r"pytest -m (?:'([^']+)'|(\S+))", code)
                for word in re.findall(r"\w+", quoted or bare) if word not in ("not", "and", "or")}
    named = {code for row in rows for code in code_spans(row[1]) if code in declared}
    assert selected and selected | named <= declared, f"README selects markers {sorted(selected | named)}; pyproject declares {sorted(declared)}"
    parts = {c.removeprefix("python -m pytest ") for row in rows for c in code_spans(row[0]) if "tests/" in c}
    folders = {f"tests/{p.parent.name}" for p in (ROOT / "tests").glob("*/test_*.py")}
    assert parts == folders, f"README lists the parts {sorted(parts)}; tests/ has {sorted(folders)}"
