"""The CRD and the operator's RBAC rules exist once; the chart and deploy/ reuse them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from . import sync
from .conftest import CHART, CRD_FILE, RBAC_FILE, ROOT


def repo_yaml_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [ROOT / p for p in out.split("\0") if p.endswith((".yaml", ".yml", ".tpl", ".txt", ".json"))]


def test_chart_links_to_the_sources() -> None:
    links = {CHART / "crds" / CRD_FILE.name: CRD_FILE, CHART / "files" / "rbac.yaml": RBAC_FILE}
    for link, source in links.items():
        assert link.is_symlink(), f"{link.relative_to(ROOT)} must be a symlink to {source.relative_to(ROOT)}"
        assert not Path(link.readlink()).is_absolute(), "relative, so it works in any checkout"
        assert link.resolve() == source.resolve()


def test_one_crd() -> None:
    holders = []
    for path in repo_yaml_files():
        if path.is_symlink() or not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if "kind: CustomResourceDefinition" in text and "speechtotexts.speech-operator.io" in text:
            holders.append(path)
    allowed = {CRD_FILE, *sync.COPIES}
    assert set(holders) <= allowed, f"CRD copies outside crds/: {sorted(map(str, set(holders) - allowed))}"
    assert CRD_FILE in holders
    assert sync.drifted() == [], "run: python -m tests.ship.sync"


def test_one_set_of_rbac_rules() -> None:
    """No file but deploy/base/rbac.yaml spells out rules (verbs)."""
    spelled = []
    for path in repo_yaml_files():
        if path.is_symlink() or not path.is_file() or path.resolve() == RBAC_FILE.resolve():
            continue
        if path.is_relative_to(ROOT / "tests") or path.is_relative_to(ROOT / "operator"):
            continue
        text = path.read_text(errors="replace")
        if "verbs:" in text or '"verbs"' in text:
            spelled.append(str(path.relative_to(ROOT)))
    assert not spelled, f"RBAC rules outside deploy/base/rbac.yaml: {spelled}"
    docs = [d for d in yaml.safe_load_all(RBAC_FILE.read_text()) if d]
    assert any(d.get("kind") == "ClusterRole" and d.get("rules") for d in docs)
