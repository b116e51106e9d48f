"""Packaging: wheels carry every subpackage; the recognizer and operator extras stay apart."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit  # no model, server, operator or browser: the quick run (README, Tests)

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_folder_is_packaged() -> None:
    config = _pyproject()["tool"]["setuptools"]
    listed = set(config["packages"])
    dirs = config["package-dir"]
    found = set()
    for top, folder in dirs.items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base)
            found.add(".".join([top, *rel.parts]))
    assert found == listed, f"pyproject [tool.setuptools] packages must list {sorted(found)}"


def test_extras_keep_recognizer_and_operator_apart() -> None:
    extras = _pyproject()["project"]["optional-dependencies"]
    assert not any(d.startswith("kopf") for d in extras["recognizer"])
    assert not any(d.startswith("vosk") for d in extras["operator"])
    assert _pyproject()["project"]["dependencies"] == []
