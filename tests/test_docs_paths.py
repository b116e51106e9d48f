"""Every file or folder of this repository the READMEs name (a link, or inline code starting at a folder the README's
own folder or the repository's root holds: `deploy/base/rbac.yaml`, `base/gateway.yaml`, `values.schema.json`) exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.doc_tables import ROOT, code_spans

pytestmark = pytest.mark.unit  # no model, server, operator or browser: the quick run (README, Tests)

DOCS = [ROOT / "README.md", ROOT / "charts" / "speech-operator" / "README.md", ROOT / "deploy" / "README.md"]


def named_paths(doc: Path) -> list[str]:
    """What ``doc`` names as a path of the repository, its fenced blocks left out (commands: tests/test_snippets.py)."""
    text = re.sub(r"^\s*```.*?^\s*```", "", doc.read_text(), flags=re.M | re.S)
    links = [link for link in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text) if not re.match(r"\w+:", link)]
    roots = {p.name for p in (*doc.parent.iterdir(), *ROOT.iterdir())}
    spans = [c for c in code_spans(text) if re.fullmatch(r"[\w.-]+(/[\w.-]+)*/?", c) and c.split("/")[0] in roots]
    return links + spans


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: str(d.relative_to(ROOT)))
def test_every_path_a_readme_names_exists(doc: Path) -> None:
    paths = named_paths(doc)
    assert paths, f"{doc} names no path: the pattern broke"
    missing = [p for p in paths if not ((doc.parent / p).exists() or (ROOT / p).exists())]
    assert not missing, f"{doc.relative_to(ROOT)} names paths that do not exist: {missing}"
