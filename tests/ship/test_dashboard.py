"""The Grafana dashboard (speech_operator/dashboard.py): committed as deploy/monitoring/grafana-dashboard.json, put in a
ConfigMap for Grafana's sidecar by the chart, reading only what the recognizer, the gateway and the operator export,
its failures in the classes of the failure tables, its every expression valid PromQL (promtool). Its expressions run
in a real Prometheus in tests/gateway/test_dashboard.py and tests/operator/test_metrics.py.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from speech_operator import alerts, dashboard
from speech_recognizer.errors import Kind
from tests.prometheus import as_grafana_sends, dashboard_queries
from tests.test_docs_metrics import exported, registries

from . import tools
from .conftest import ROOT, by_kind, helm_template, one, validate_manifests

pytestmark = pytest.mark.unit  # no model, server, operator or browser: the quick run (README, Tests)

COMMITTED = ROOT / "deploy" / "monitoring" / "grafana-dashboard.json"
#: The labels Prometheus gives every series of a target (a ServiceMonitor's), beside those the process exports.
TARGET_LABELS = {"namespace", "service", "pod"}
ALL = {"namespace": ".*", "locale": ".*"}


def test_committed_dashboard_matches_the_generator() -> None:
    assert COMMITTED.read_text() == dashboard.render(), "regenerate: speech-operator dashboard > deploy/monitoring/grafana-dashboard.json"
    shown = subprocess.run([sys.executable, "-m", "speech_operator.cli", "dashboard"], capture_output=True, text=True, check=True)
    assert shown.stdout == dashboard.render()


def test_every_metric_it_reads_is_exported_with_the_labels_it_selects() -> None:
    metrics = exported()
    used = {}
    for name, expr, _ in dashboard_queries():
        for metric, selector in re.findall(r"\b(speech_\w+)(\{[^}]*\})?", expr):
            assert metric in metrics, f"{name} reads {metric}, which nothing exports"
            assert set(re.findall(r'(\w+)\s*(?:=~|!~|!=|=)"', selector)) <= metrics[metric] | TARGET_LABELS, f"{name}: {metric}{selector}"
            used.setdefault(metric.split("_")[1], set()).add(metric)
    assert {"refused", "gateway", "operator"} <= set(used), used  # the three processes
    for variable in dashboard.dashboard()["templating"]["list"][1:]:
        metric = re.search(r"label_values\((speech_\w+)", variable["query"]).group(1)  # type: ignore[union-attr]
        assert metric in metrics and metric in ("speech_connections", "speech_locale_loaded"), variable


def test_each_gauge_of_the_gateway_is_on_a_panel() -> None:
    """What the gateway holds now (its gauges: streams, held requests, connections, ready pods) is each read by a
    panel, so that a gauge added to it is shown too. Before: ``speech_gateway_streams_closing`` (a gone client's stream,
    its recognizer's close reply awaited: 7a6c2e0 moved such streams out of ``speech_gateway_streams``) was on no panel,
    and the "Gateway streams" panel showed them vanish while their recognizer connections were still held."""
    read = {metric for _, expr, _ in dashboard_queries() for metric in re.findall(r"\b(speech_gateway_\w+)", expr)}
    gauges = {family.name for family in registries()[1].collect() if family.type == "gauge"}
    assert "speech_gateway_streams" in gauges and len(gauges) > 4, gauges
    assert gauges <= read, f"gauges of the gateway on no panel: {sorted(gauges - read)}"


def failure_matchers(metric: str) -> dict[str, str]:
    """The reason matcher (``=~`` or ``!~`` a regex) of each failure panel reading ``metric``, by title."""
    found = {}
    for panel in dashboard.dashboard()["panels"]:
        for t in panel.get("targets", []):
            match = re.search(rf'{metric}\{{[^}}]*reason(=~|!~)"([^"]+)"', t["expr"])
            if match and "Decoders" not in panel["title"]:
                found[panel["title"]] = match.group(1) + match.group(2)
    return found


def test_each_failure_is_in_one_panel_of_its_class() -> None:
    """Each kind of a process's table is selected by exactly one of its three failure panels; the capacity and fault
    panels select what the alerts of that class do, the third every other reason (one added later too)."""
    for metric, kinds in (("speech_refused_total", alerts.RECOGNIZER_KINDS),
                          ("speech_gateway_failures_total", alerts.RECOGNIZER_KINDS + alerts.GATEWAY_KINDS)):
        matchers = failure_matchers(metric)
        assert len(matchers) == 3, matchers

        def selected(kind: Kind, matcher: str) -> bool:
            return bool(re.fullmatch(matcher[2:], kind.name)) == (matcher[:2] == "=~")
        for kind in [*kinds, Kind("a_new_kind", 400, 1007, None, 20)]:
            panels = [title for title, m in matchers.items() if selected(kind, m)]
            assert len(panels) == 1, f"{metric}{{reason={kind.name!r}}} is in {panels}"
        alerted = {r["expr"] for g in alerts.rule_groups() for r in g["rules"] if metric in r["expr"]}
        for title, matcher in matchers.items():
            if matcher.startswith("=~"):
                assert any(f'reason=~"{matcher[2:]}"' in e for e in alerted), f"{title}: not an alert's class"


def test_the_model_is_one_grafana_imports() -> None:
    """The shape Grafana's import reads: a current schemaVersion, the datasource variable every panel and variable
    reads through, namespace and locale variables, panels with unique ids placed on the 24-column grid without
    overlapping, each target with its own refId."""
    model = json.loads(COMMITTED.read_text())
    assert model["schemaVersion"] >= 39 and model["uid"] == dashboard.UID
    variables = {v["name"]: v for v in model["templating"]["list"]}
    assert list(variables) == ["datasource", "namespace", "locale"]
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for name in ("namespace", "locale"):
        assert variables[name]["type"] == "query" and variables[name]["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert variables[name]["query"].startswith("label_values(") and variables[name]["allValue"] == ".*"
    ids = [p["id"] for p in model["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in model["panels"]:
        pos = p["gridPos"]
        assert pos["x"] + pos["w"] <= 24
        mine = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not mine & cells, f"{p['title']} overlaps another panel"
        cells |= mine
        if p["type"] == "row":
            continue
        assert p["type"] == "timeseries" and p["datasource"]["uid"] == "${datasource}"
        refs = [t["refId"] for t in p["targets"]]
        assert refs and len(refs) == len(set(refs)) and all(t["datasource"]["uid"] == "${datasource}" for t in p["targets"])
        assert p["description"]


def test_every_expression_is_promql(tmp_path: Path) -> None:
    """``promtool check rules`` on each expression (its variables replaced as Grafana does) as a recording rule."""
    rules = [{"record": f"dashboard:expr_{i}", "expr": as_grafana_sends(expr, ALL)} for i, (_, expr, _) in enumerate(dashboard_queries())]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = subprocess.run([str(tools.promtool()), "check", "rules", "rules.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_chart_renders_the_dashboard_for_grafanas_sidecar(helm: Path) -> None:
    """``grafanaDashboard.enabled``: one ConfigMap with the committed dashboard and the sidecar's label (its key and
    value as given), in the namespace given (default: the release's), with the annotations given; off by default."""
    cm = one(helm_template(helm, "--set", "grafanaDashboard.enabled=true"), "ConfigMap")
    assert cm["metadata"]["name"] == "speech-operator-dashboard" and cm["metadata"]["namespace"] == "speech-operator"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    assert cm["data"] == {"speech-operator.json": COMMITTED.read_text()}
    validate_manifests([cm])
    cm = one(helm_template(helm, "--set", "grafanaDashboard.enabled=true", "--set", "grafanaDashboard.label=dashboards",
                           "--set", "grafanaDashboard.labelValue=speech", "--set", "grafanaDashboard.namespace=monitoring",
                           "--set", "grafanaDashboard.annotations.grafana_folder=Speech"), "ConfigMap")
    assert cm["metadata"]["namespace"] == "monitoring" and cm["metadata"]["annotations"] == {"grafana_folder": "Speech"}
    assert cm["metadata"]["labels"]["dashboards"] == "speech" and "grafana_dashboard" not in cm["metadata"]["labels"]
    validate_manifests([cm])
    assert not [d for d in by_kind(helm_template(helm), "ConfigMap") if d["metadata"]["name"].endswith("-dashboard")]


def test_the_reconcile_errors_panel_says_when_its_alert_fires() -> None:
    """The panel of ``speech_operator_reconcile_errors_total`` says its alert as the alert is: one per install, scope
    and reason (its ``sum by``), never for the reasons a status says (its ``reason!~``), after its ``for``. Before, it
    named the alert alone, as when the alert summed by namespace and reason."""
    described = next(p["description"] for p in json.loads(dashboard.render())["panels"] if p["title"] == "Reconcile errors")
    rule = next(r for g in alerts.rule_groups() for r in g["rules"] if r.get("alert") == "SpeechOperatorReconcileErrors")
    by = re.search(r"sum by \(([^)]*)\)", rule["expr"])
    excluded = re.search(r'reason!~"([^"]*)"', rule["expr"])
    assert by and excluded, rule["expr"]
    labels = ["install" if label == "namespace" else label for label in by.group(1).split(", ")]
    assert f"one per {', '.join(labels[:-1])} and {labels[-1]}" in described, described
    assert f"but {' and '.join(excluded.group(1).split('|'))} (SpeechToTextDegraded says those)" in described, described
    assert f"keep coming for {rule['for'][:-1]} minutes" in described, described
