"""The CRD and the operator's RBAC rules exist once; the chart and deploy/ reuse them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from . import sync
from .conftest import CHART, CRD_DIR, RBAC_FILE, ROOT, crd_docs


def repo_yaml_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [ROOT / p for p in out.split("\0") if p.endswith((".yaml", ".yml", ".tpl", ".txt", ".json"))]


def test_chart_links_to_the_sources() -> None:
    links = {CHART / "crds" / f.name: f for f in CRD_DIR.glob("*.yaml")}
    links[CHART / "files" / "rbac.yaml"] = RBAC_FILE
    for link, source in links.items():
        assert link.is_symlink(), f"{link.relative_to(ROOT)} must be a symlink to {source.relative_to(ROOT)}"
        assert not Path(link.readlink()).is_absolute(), "relative, so it works in any checkout"
        assert link.resolve() == source.resolve()


def test_one_copy_of_each_crd() -> None:
    names = {d["metadata"]["name"] for d in crd_docs()}
    assert "speechtotexts.speech-operator.io" in names
    holders: dict[str, list[Path]] = {n: [] for n in names}
    for path in repo_yaml_files():
        if path.is_symlink() or not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if "kind: CustomResourceDefinition" in text:
            for name in names:
                if f"name: {name}" in text:
                    holders[name].append(path)
    for name, paths in holders.items():
        extra = set(paths) - {p for p in CRD_DIR.glob("*.yaml")} - set(sync.COPIES)
        assert not extra, f"{name} is defined outside crds/: {sorted(map(str, extra))}"
    assert sync.drifted() == [], "run: python -m tests.ship.sync"


def test_one_set_of_rbac_rules() -> None:
    """No file but deploy/base/rbac.yaml spells out rules (verbs)."""
    spelled = []
    for path in repo_yaml_files():
        if path.is_symlink() or not path.is_file() or path.resolve() == RBAC_FILE.resolve():
            continue
        if path.is_relative_to(ROOT / "tests") or path.is_relative_to(ROOT / "operator"):
            continue
        if path == CHART / "templates" / "cleanup-hook.yaml":  # the uninstall hook's own Role (test_cleanup_hook)
            continue
        text = path.read_text(errors="replace")
        if "verbs:" in text or '"verbs"' in text:
            spelled.append(str(path.relative_to(ROOT)))
    assert not spelled, f"RBAC rules outside deploy/base/rbac.yaml: {spelled}"
    docs = [d for d in yaml.safe_load_all(RBAC_FILE.read_text()) if d]
    assert any(d.get("kind") == "ClusterRole" and d.get("rules") for d in docs)
