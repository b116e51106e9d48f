"""Keep the generated copies of single-source files in step.

Each fact is written once (the CRDs in ``crds/``, the RBAC rules in ``deploy/base/rbac.yaml``), but
two consumers can read no file outside their own folder: kustomize loads nothing outside its root,
and a packaged Helm chart carries only its own files (helm follows symlinks only with an INFO line
on every render, and a chart in a repository or an OCI registry has no ``../``). So each holds a
generated copy, with a header naming its source:

    python -m tests.ship.sync           # write the copies
    python -m tests.ship.sync --check   # exit 1 if a copy drifted (CI; tests/ship/test_single_source.py)
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: generated copy -> single source, relative to the repository's root
COPIES: dict[str, str] = {
    "deploy/base/speechtotexts.speech-operator.io.yaml": "crds/speechtotexts.speech-operator.io.yaml",
    "charts/speech-operator/crds/speechtotexts.speech-operator.io.yaml": "crds/speechtotexts.speech-operator.io.yaml",
    "charts/speech-operator/crds/kopf-peering.yaml": "crds/kopf-peering.yaml",
    "charts/speech-operator/files/rbac.yaml": "deploy/base/rbac.yaml",
    "charts/speech-operator/files/prometheusrule.yaml": "deploy/monitoring/prometheusrule.yaml",
    "charts/speech-operator/files/grafana-dashboard.json": "deploy/monitoring/grafana-dashboard.json",
}

#: who reads each copy's folder, for its header
READERS = {"deploy/": "kustomize", "charts/": "the Helm chart"}


def header(copy: str, source: str) -> str:
    """The comment that opens a copy; none in JSON, which has no comments (the copy is its source's bytes)."""
    if copy.endswith(".json"):
        return ""
    reader = next(who for prefix, who in READERS.items() if copy.startswith(prefix))
    return f"# Copy of {source} for {reader}. Do not edit.\n# Refresh with: python -m tests.ship.sync\n"


def expected(copy: str, root: Path = ROOT) -> str:
    source = COPIES[copy]
    return header(copy, source) + (root / source).read_text()


def drifted(root: Path = ROOT) -> list[str]:
    """The copies under ``root`` that are missing, not regular files (a symlink) or not what
    their source gives."""
    bad = []
    for copy in COPIES:
        path = root / copy
        if path.is_symlink() or not path.is_file() or path.read_text() != expected(copy, root):
            bad.append(copy)
    return bad


def write(root: Path = ROOT) -> list[str]:
    """Write every drifted copy under ``root`` (a symlink is replaced by a file); the ones written."""
    written = drifted(root)
    for copy in written:
        text = expected(copy, root)
        path = root / copy
        path.unlink(missing_ok=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return written


def main(argv: list[str]) -> int:
    if "--check" in argv:
        bad = drifted()
        for copy in bad:
            print(f"{copy} is out of date: run python -m tests.ship.sync", file=sys.stderr)
        return 1 if bad else 0
    for copy in write():
        print(f"wrote {copy}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
