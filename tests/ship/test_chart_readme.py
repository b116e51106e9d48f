"""The chart README's table of values, checked against values.yaml and values.schema.json both ways.

Its words are prose, so it is checked rather than generated: every value a row names exists; every value
of values.yaml has a row or is one :data:`LEFT_TO_VALUES_YAML` leaves to its comment; each default the row
writes as code is values.yaml's; every value the table mentions elsewhere exists in the schema.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml

from tests.doc_tables import CHART_README, code_spans, table

from .conftest import CHART

pytestmark = pytest.mark.unit  # no model, server, operator or browser: the quick run (README, Tests)

HEADER = "| value | default | what |"
#: Values the table leaves to their comment in values.yaml (the README says every value is commented there).
LEFT_TO_VALUES_YAML = frozenset({
    "image.pullPolicy", "nameOverride", "fullnameOverride", "peering.name",
    "serviceAccount.create", "serviceAccount.name", "serviceAccount.annotations", "rbac.create", "extraArgs", "extraEnv",
    "livenessPort", "podAnnotations", "podLabels", "nodeSelector", "tolerations", "affinity", "priorityClassName",
    "gateway.service.port", "gateway.extraArgs", "serviceMonitor.interval", "serviceMonitor.labels",
    "serviceMonitor.namespaces", "cleanupOnUninstall.timeoutSeconds",
})
#: A default the table writes in words, and the value it stands for.
WORDS = {"appVersion": ""}  # an empty tag: the chart's appVersion


def values() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    """Every value of values.yaml by its dotted path: a mapping's keys, down to what is no mapping or is empty."""
    if not isinstance(node, dict) or not node:
        return {prefix: node}
    out: dict[str, Any] = {}
    for key, child in node.items():
        out |= leaves(child, f"{prefix}.{key}" if prefix else key)
    return out


def lookup(path: str) -> Any:
    node: Any = values()
    for part in path.split("."):
        assert isinstance(node, dict) and part in node, f"{path} is no value of values.yaml"
        node = node[part]
    return node


def schema_allows(path: str) -> bool:
    """The schema takes a value at ``path`` (below an object without declared properties, any)."""
    node = json.loads((CHART / "values.schema.json").read_text())
    for part in path.split("."):
        props = node.get("properties")
        if props is None:
            return node.get("type") == "object"
        if part not in props:
            return False
        node = props[part]
    return True


def names(cell: str) -> list[str]:
    """The values a row names: `a.b`, `.c` (a sibling of the name before), `d`, in order."""
    assert not re.sub(r"`[^`]*`", "", cell).strip(" ,;"), f"{cell}: only value names, separated by , or ;"
    out: list[str] = []
    for name in code_spans(cell):
        out.append(out[-1].rsplit(".", 1)[0] + name if name.startswith(".") else name)
    return out


def items(cell: str) -> list[str]:
    """A defaults cell split at its top-level ``, `` and ``; `` (not inside code or parentheses)."""
    out, depth, code, start = [], 0, False, 0
    for i, ch in enumerate(cell):
        code = not code if ch == "`" else code
        depth += (ch == "(") - (ch == ")") if not code else 0
        if ch in ",;" and not code and depth == 0 and cell[i + 1:i + 2] == " ":
            out.append(cell[start:i].strip())
            start = i + 1
    return [*out, cell[start:].strip()]


def leaf_texts(node: Any) -> set[str]:
    """What a value holds, as text: its scalars, however deep."""
    if isinstance(node, dict):
        return set().union(*(leaf_texts(v) for v in node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*(leaf_texts(v) for v in node)) if node else set()
    return {str(node)}


def same(code: str, value: Any) -> bool:
    """A default written as code is the value (YAML's reading of it; a string as written)."""
    return yaml.safe_load(code) == value or (isinstance(value, str) and code == value)


def check_default(name: str, item: str) -> None:
    value = lookup(name)
    literal = re.fullmatch(r"`([^`]*)`(?: \(.*\))?", item)
    if literal:
        assert same(literal.group(1), value), f"{name}: the table says {item}, values.yaml {value!r}"
    elif not code_spans(item):
        assert item in WORDS and WORDS[item] == value, f"{name}: the table says {item!r}, values.yaml {value!r}"
    else:  # a value described by what it holds (hosts: `speech.example.com` `/`)
        for code in code_spans(item):
            assert code in leaf_texts(value), f"{name}: the table says {code!r}, which values.yaml's {value!r} does not hold"


def test_chart_readme_values_table_is_values_yaml() -> None:
    rows = table(CHART_README.read_text(), HEADER)
    named = [n for row in rows for n in names(row[0])]
    assert len(named) == len(set(named)), f"a value with two rows: {sorted(n for n in named if named.count(n) > 1)}"
    for name in named:
        lookup(name)
        assert schema_allows(name), f"{name} is not in values.schema.json"
    every = set(leaves(values()))
    covered = {v for v in every if any(v == n or v.startswith(n + ".") for n in named)}
    missing = sorted(every - covered - LEFT_TO_VALUES_YAML)
    assert not missing, f"values of values.yaml without a row in the chart README (or in LEFT_TO_VALUES_YAML): {missing}"
    stale = sorted(LEFT_TO_VALUES_YAML - (every - covered))
    assert not stale, f"LEFT_TO_VALUES_YAML names values that do not exist, or have a row: {stale}"
    for row in rows:
        row_names, defaults = names(row[0]), items(row[1])
        if len(defaults) == len(row_names):
            for name, item in zip(row_names, defaults, strict=True):
                check_default(name, item)
        else:  # one description of them all (restricted profile; timeouts `3600`, body `23m`, ...)
            held = set().union(*(leaf_texts(lookup(n)) for n in row_names))
            assert set(code_spans(row[1])) <= held, f"{row[0]}: the table says {row[1]!r}, values.yaml has {sorted(held)}"


def test_values_the_chart_readme_mentions_exist() -> None:
    """A value named anywhere in the table (`gateway.service.port`, `metrics.enabled=false`) is one the schema
    takes; one followed by a number (`gateway.service.port` 5000) has it as its default."""
    text = CHART_README.read_text()
    top = set(values())
    rows = table(text, HEADER)
    for cell in (c for row in rows for c in row[1:]):
        for code in code_spans(cell):
            path = re.split(r"=|: ", code)[0]
            if re.fullmatch(r"[a-z][A-Za-z]*(\.[A-Za-z]+)*", path) and path.split(".")[0] in top:
                assert schema_allows(path), f"the table names {path}, which values.schema.json does not take"
        for path, number in re.findall(r"`([a-z][A-Za-z.]+)` (\d+)\b", cell):
            if path.split(".")[0] in top:
                assert lookup(path) == int(number), f"the table says {path} {number}, values.yaml {lookup(path)!r}"
