"""kube-apiserver takes our CRD: its CEL rules are within the estimated cost budget (tests/crd_cost.py).

The estimator is checked first on cases whose cost Kubernetes' own tests state (k8s.io/apiextensions-apiserver
v0.25.0: pkg/apiserver/schema/cel/compilation_test.go's TestCostEstimation, one evaluation's cost, and
pkg/apis/apiextensions/validation/validation_test.go, a CRD taken or refused; cel-go's checker/cost_test.go for
constant expressions), then on every rule of each CRD in
crds/, for each Kubernetes release whose estimator it models. No API server runs here: that is what it stands in for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from speech_operator import api

from .crd_cost import CRD_LIMIT, RELEASES, RULE_LIMIT, Release, Unsupported, decl_of, judge, rule_cost, schema_costs

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]


def _string(max_length: int | None = None, rule: str | None = None, format: str | None = None) -> dict[str, Any]:
    return {"type": "string", **({} if max_length is None else {"maxLength": max_length}),
            **({} if rule is None else {"x-kubernetes-validations": [{"rule": rule}]}),
            **({} if format is None else {"format": format})}


def _array(items: dict[str, Any], max_items: int | None) -> dict[str, Any]:
    return {"type": "array", "items": items, **({} if max_items is None else {"maxItems": max_items})}


def _map(values: dict[str, Any], max_properties: int | None) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": values,
            **({} if max_properties is None else {"maxProperties": max_properties})}


_OBJECT = {"type": "object", "required": ["required"],
           "properties": {"required": _string(), "optional": _string()}}

#: (name, schema of the rule's node given the test's max (None: unset), rule, max set, cost unset, cost set):
#: rows of TestCostEstimation (v0.25.0), unchanged through v0.28.0's.
COMPILATION_ROWS = [
    ("string array with all", lambda m: _array(_string(), m), "self.all(x, true)", 20, 3145727, 62),
    ("array of objects with all", lambda m: _array(_OBJECT, m), "self.all(x, true)", 50, 555128, 152),
    ("map of strings with all", lambda m: _map(_string(), m), "self.all(x, true)", 3, 1179647, 11),
    ("string with contains", lambda m: _string(m), "self.contains('test')", 10, 314574, 5),
    ("string with startsWith", lambda m: _string(m), "self.startsWith('test')", 15, 2, 2),
    ("concat string", lambda m: _string(m), 'size(self + "hello") > size("hello")', 4, 314578, 7),
    ("index of array with strings", lambda m: _array(_string(), m), "self[1] == self[1]", 8, 314577, 314577),
    ("O(n^2) loop with numbers", lambda m: _array({"type": "number"}, m), "self.all(x, self.all(y, true))", 10,
     None, 352),
    ("regex matches simple", lambda m: _string(m), 'self.matches("x")', 50, 314574, 22),
    ("regex matches empty string", lambda m: _string(m), '"".matches("(((((((((())))))))))[0-9]")', 10, 7, 7),
    ("map of strings with value length", lambda m: {**_map(_string(m), m)}, "self.all(x, x.contains(self[x]))",
     10, 2752507, 72),
    ("set string maxLength to zero", lambda m: _string(m), 'self == "x"', 0, 2, 1),
    ("set array maxLength to zero", lambda m: _array({"type": "number"}, m), "self[3] == 0.0", 0, 2, 2),
    ("index of array of number maps", lambda m: _array(_map({"type": "number"}, m), m), "self[0].x > 2.0", 3000,
     4, 4),
    ("nested types with root rule with all supporting maxLength",
     lambda m: _array({**_map({**_OBJECT, **({} if m is None else {"maxProperties": m})}, m)}, m),
     'self.all(x, x["y"].required == "z")', 10, 7340027, 72),
    # rows v0.25.16 added (and keeps through v0.28.0)
    ("check cost of timestamp comparison", lambda m: _map(_string(format="date-time"), m), 'self["a"] == self["b"]',
     7, 8, 8),
    ("check cost of duration comparison", lambda m: _map(_string(format="duration"), m), 'self["c"] == self["d"]',
     42, 8, 8),
]


@pytest.mark.parametrize("release", RELEASES, ids=lambda r: r.name.split()[0])
@pytest.mark.parametrize(("name", "schema", "rule", "limit", "unset", "given"), COMPILATION_ROWS,
                         ids=[row[0] for row in COMPILATION_ROWS])
def test_estimates_as_kubernetes_own_tests_state(release: Release, name: str, schema: Any, rule: str, limit: int,
                                                 unset: int | None, given: int) -> None:
    decl_unset, decl_given = decl_of(schema(None)), decl_of(schema(limit))
    assert decl_unset and decl_given
    if unset is None:  # the row says only that it exceeds the limit
        assert rule_cost(rule, decl_unset, release) > RULE_LIMIT
    else:
        assert rule_cost(rule, decl_unset, release) == unset
    assert rule_cost(rule, decl_given, release) == given


#: cel-go's own checker/cost_test.go (v0.12.4), the rows with no variable: what no schema changes.
CEL_GO_ROWS = [("[1, 2, 3]", 10), ("[1, 2, 3].all(x, true)", 20), ("'123'.matches('[0-9]')", 2),
               ("2 in [1, 2, 3]", 13)]


@pytest.mark.parametrize("release", RELEASES, ids=lambda r: r.name.split()[0])
@pytest.mark.parametrize(("rule", "cost"), CEL_GO_ROWS)
def test_estimates_as_cel_go_own_tests_state(release: Release, rule: str, cost: int) -> None:
    node = decl_of(_string())
    assert node is not None
    assert rule_cost(rule, node, release) == cost


def test_has_costs_as_cel_go_own_tests_state() -> None:
    """has() of a field and of a nested one: nothing in v0.12.4's cost_test ("zeroCost"), 2 and 3 in v0.16.0's
    (its default: 1 for the test plus the operand's selects)."""
    node = decl_of({"type": "object", "properties": {"a": {"type": "object", "properties": {"b": _string()}}}})
    assert node is not None
    assert [rule_cost("has(self.a)", node, r) for r in RELEASES] == [0, 0, 2]
    assert [rule_cost("has(self.a.b)", node, r) for r in RELEASES] == [0, 0, 3]


def _crd_schema(value: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": {"value": value}}


_DOUBLE_NESTED = {"x-kubernetes-validations": [{"rule": "self.all(x, x.all(y, x[y].key == x[y].key))"}]}


def _nested(key: dict[str, Any], max_items: int | None, max_properties: int | None) -> dict[str, Any]:
    inner = {"type": "object", "required": ["key"], "properties": {"key": key}}
    return {**_array(_map(inner, max_properties), max_items), **_DOUBLE_NESTED}


#: validation_test.go's CRDs (v0.25.0), and the paths it expects Forbidden at (empty: the CRD is taken).
_RULE = ".x-kubernetes-validations[0].rule"
VALIDATION_ROWS = [
    ("forbid double-nested rule with no limit set", _crd_schema(_nested({"type": "string"}, None, None)),
     ["openAPIV3Schema.properties[value]" + _RULE] * 2 + ["openAPIV3Schema"]),
    ("forbid double-nested rule with one limit set", _crd_schema(_nested(_string(10), None, None)),
     ["openAPIV3Schema.properties[value]" + _RULE] * 2 + ["openAPIV3Schema"]),
    ("allow double-nested rule with three limits set", _crd_schema(_nested(_string(10), 10, 10)), []),
    ("allow double-nested rule with one limit set on outermost array",
     _crd_schema(_nested({"type": "number"}, 4, None)), []),
    ("check for cardinality of 1 under root object",
     _crd_schema({"type": "integer", "x-kubernetes-validations": [{"rule": "self < 1024"}]}), []),
    ("forbid validation rules where cost total exceeds total limit", {"type": "object", "properties": {
        "list": _array(_string(5000, "self.contains('keyword')"), 100000),
        "map": _map(_string(5000, "self.contains('keyword')"), 1000),
        "field": {"type": "integer", "x-kubernetes-validations": [{"rule": "self > 50 && self < 100"}]}}},
     ["openAPIV3Schema.properties[list].items" + _RULE] * 2
     + ["openAPIV3Schema.properties[map].additionalProperties" + _RULE, "openAPIV3Schema"]),
]


@pytest.mark.parametrize("release", RELEASES, ids=lambda r: r.name.split()[0])
@pytest.mark.parametrize(("name", "schema", "forbidden"), VALIDATION_ROWS, ids=[row[0] for row in VALIDATION_ROWS])
def test_takes_and_refuses_crds_as_kubernetes_own_tests_state(release: Release, name: str, schema: dict[str, Any],
                                                             forbidden: list[str]) -> None:
    crd = {"spec": {"versions": [{"name": "v1", "schema": {"openAPIV3Schema": schema}}]}}
    (verdict,) = [v for v in judge(crd) if v.release == release]
    assert sorted(r.split(": ")[0].removesuffix(".rule") for r in verdict.refusals) == sorted(
        f.removesuffix(".rule") for f in forbidden), verdict.report()


def test_refusal_says_what_the_api_server_says() -> None:
    """getCostErrorMessage's words and factor, for a rule about twice the budget."""
    rule = "self.matches('" + "a" * 240 + "')"
    schema = {"type": "object", "properties": {"s": _string(rule=rule)}}
    crd = {"spec": {"versions": [{"name": "v1", "schema": {"openAPIV3Schema": schema}}]}}
    verdict = judge(crd)[0]
    # ((3 MiB - 2) + 1) / 10 rounded up, times 240 / 4, plus self: 314573 * 60 + 1
    assert verdict.costs[0].cost == 18874381
    assert verdict.refusals == [
        "openAPIV3Schema.properties[s].x-kubernetes-validations[0].rule: estimated rule cost exceeds budget by "
        "factor of 1.9x"]


def test_what_it_does_not_model_it_refuses_to_guess() -> None:
    node = decl_of(_string(10))
    assert node is not None
    for rule in ("self.lowerAscii() == 'a'", "self.map(x, x)", "[1].filter(x, x > 0).size() == 1"):
        with pytest.raises(Unsupported):
            rule_cost(rule, node, RELEASES[0])


def test_equality_of_sizes_as_kubernetes_1_25_16_tests_state() -> None:
    """TestCostEstimation's "check cost of size call" (v0.25.16 to v0.28.0: 5, with or without maxProperties);
    1.25.0's cel-go counted an int of unknown size (size()'s) as 2^64 - 1 there."""
    for max_properties in (None, 10):
        node = decl_of(_map({"type": "integer"}, max_properties))
        assert node is not None
        costs = [rule_cost("oldSelf.size() == self.size()", node, r) for r in RELEASES]
        assert costs[0] > RULE_LIMIT
        assert costs[1:] == [5, 5]


def test_has_equality_costs_what_each_release_estimates() -> None:
    """The releases differ where the docstring says: 1.25.0 counts a bool of unknown size as 2^64 - 1 in ==."""
    node = decl_of({"type": "object", "properties": {"a": _string(), "b": _string()}})
    assert node is not None
    costs = [rule_cost("has(self.a) == has(self.b)", node, r) for r in RELEASES]
    assert costs[0] > RULE_LIMIT
    assert costs[1:] == [1, 1 + 2 * (1 + 1)]  # 1.28: each has() is 1 plus its operand (self) 1


CRDS = sorted((ROOT / "crds").glob("*.yaml"))


@pytest.mark.parametrize("path", CRDS, ids=[p.name for p in CRDS])
def test_kube_apiserver_takes_our_crd(path: Path) -> None:
    """Every rule of our CRDs within the per-rule budget with room to spare (half of it), and all of them within
    half the CRD's: each release's estimate of each rule is printed when one is not."""
    verdicts = [v for crd in yaml.safe_load_all(path.read_text()) if crd for v in judge(crd)]
    report = "\n".join(v.report() for v in verdicts)
    for verdict in verdicts:
        assert not verdict.refusals, report
        assert all(c.cost <= RULE_LIMIT // 2 for c in verdict.costs), report
        assert verdict.total <= CRD_LIMIT // 2, report


def test_our_crd_has_rules_to_judge() -> None:
    """The judge above sees the rules api.py declares (a CRD it read nothing from would pass it)."""
    crd = yaml.safe_load((ROOT / "crds" / "speechtotexts.speech-operator.io.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    costs = schema_costs(schema, RELEASES[0])
    assert len(costs) >= 15
    assert {c.cardinality for c in costs} >= {1, api.MAX_SPREAD_CONSTRAINTS}  # spec's, topologySpreadConstraints' items'
