"""Keep the generated copies of single-source files in step.

kustomize reads no file outside its root, so ``deploy/`` cannot reference
``crds/`` directly; it holds a generated copy of the CRD instead:

    python -m tests.ship.sync           # write the copies
    python -m tests.ship.sync --check   # exit 1 if a copy drifted (CI)

The Helm chart needs no copy: its ``crds/`` and ``files/rbac.yaml`` are
symlinks that helm follows (checked by tests/ship/test_single_source.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: generated copy -> single source
COPIES: dict[Path, Path] = {
    ROOT / "deploy/base/speechtotexts.speech-operator.io.yaml": ROOT / "crds/speechtotexts.speech-operator.io.yaml",
}


def header(source: Path) -> str:
    rel = source.relative_to(ROOT)
    return f"# Copy of {rel} for kustomize. Do not edit.\n# Refresh with: python -m tests.ship.sync\n"


def expected(copy: Path) -> str:
    source = COPIES[copy]
    return header(source) + source.read_text()


def drifted() -> list[Path]:
    return [copy for copy in COPIES if not copy.is_file() or copy.read_text() != expected(copy)]


def main(argv: list[str]) -> int:
    if "--check" in argv:
        bad = drifted()
        for copy in bad:
            print(f"{copy.relative_to(ROOT)} is out of date: run python -m tests.ship.sync", file=sys.stderr)
        return 1 if bad else 0
    for copy in COPIES:
        text = expected(copy)
        if not copy.is_file() or copy.read_text() != text:
            copy.write_text(text)
            print(f"wrote {copy.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
