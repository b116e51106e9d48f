"""The Prometheus alerts (speech_operator/alerts.py): generated from the failure tables, committed as
deploy/monitoring/prometheusrule.yaml, rendered by the chart, and checked by Prometheus' own promtool:
the rules parse, and its rule unit tests show each alert firing on the failures of its class and on
no other. tests/gateway/test_alerts.py runs them in a real Prometheus against real recognizers.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from speech_operator import alerts, metrics
from speech_recognizer.errors import CAPACITY, FAULT, Kind
from speech_recognizer.metrics import LATENCY_BUCKETS
from tests.doc_tables import README, assert_generated

from . import tools
from .conftest import ROOT, by_kind, helm_template, one, validate_manifests

pytestmark = pytest.mark.unit  # no model, server, operator or browser: the quick run (README, Tests)

COMMITTED = ROOT / "deploy" / "monitoring" / "prometheusrule.yaml"
KINDS = alerts.RECOGNIZER_KINDS + alerts.GATEWAY_KINDS
#: Failures that answer 5xx and page nobody, on purpose: a pod or gateway stopping as asked (a rollout, a scale-down).
#: A new 5xx kind must be classified in its table (Kind.alert) or added here. held_at_zero: a locale an HPA or KEDA
#: holds at zero pods, as it was told to; its SpeechToText is Degraded (ForeignAutoscaler), which SpeechToTextDegraded says.
LIFECYCLE = {"draining", "gateway_stopped", "stopped_while_held", "held_at_zero"}


def rules() -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in alerts.rule_groups() for r in g["rules"]}


def test_committed_rule_matches_the_generator() -> None:
    assert COMMITTED.read_text() == alerts.render(), "regenerate: speech-operator alerts > deploy/monitoring/prometheusrule.yaml"
    shown = subprocess.run([sys.executable, "-m", "speech_operator.cli", "alerts"], capture_output=True, text=True, check=True)
    assert shown.stdout == alerts.render()
    plain = subprocess.run([sys.executable, "-m", "speech_operator.cli", "alerts", "--rules"], capture_output=True, text=True, check=True)
    assert yaml.safe_load(plain.stdout) == {"groups": alerts.rule_groups()}


def test_the_committed_rule_is_a_valid_prometheus_rule() -> None:
    """Its shape, and ``promtool check rules`` on its groups (conftest.check_prometheus_rule)."""
    validate_manifests(yaml.safe_load_all(COMMITTED.read_text()))


def test_every_kind_that_fails_the_service_is_alerted_on() -> None:
    """Each kind the tables mark CAPACITY or FAULT is selected by exactly one alert of its process; no other kind
    is; and every 5xx kind is marked, but for a stop that was asked for."""
    selected: dict[str, list[str]] = {}
    for name, rule in rules().items():
        found = re.search(r'(speech_\w+)\{reason=~"([^"]+)"\}', rule["expr"])
        if found:
            metric, regex = found.groups()
            for reason in regex.split("|"):
                selected.setdefault(f"{metric}/{reason}", []).append(name)
    expected = {}
    for k in KINDS:
        if k.alert is not None:
            metric = "speech_refused_total" if k in alerts.RECOGNIZER_KINDS else "speech_gateway_failures_total"
            expected[f"{metric}/{k.name}"] = 1
    assert {key: len(names) for key, names in selected.items()} == expected
    unmarked = {k.name for k in KINDS if k.http >= 500 and k.alert is None}
    assert unmarked == LIFECYCLE, "a 5xx kind without Kind.alert: classify it (capacity or fault) in its table"
    assert {k.alert for k in KINDS} == {CAPACITY, FAULT, None}


def chosen(match: re.Match[str], labels: dict[str, str]) -> str:
    """The branch of ``{{ if eq $labels.x "v" }}A{{ else if eq $labels.x "w" }}B{{ else }}C{{ end }}`` that ``labels``
    take."""
    *branches, otherwise = match.group(0).removeprefix("{{ if ").removesuffix("{{ end }}").split("{{ else ")
    for branch in branches:
        test = re.match(r'(?:if )?eq \$labels\.(\w+) "([^"]*)" \}\}(.*)', branch, re.S)
        assert test, branch
        if labels.get(test.group(1), "") == test.group(2):
            return test.group(3)
    return otherwise.removeprefix("}}")


def expanded(template: str, labels: dict[str, str]) -> str:
    """An annotation as Prometheus renders it for an alert with ``labels`` (the only template variable used, alone, in
    ``{{ with $labels.x }}...{{ . }}...{{ end }}``, or compared in ``{{ if eq $labels.x "v" }}...{{ end }}``)."""
    assert "$value" not in template
    template = re.sub(r"\{\{ if eq .*?\{\{ end \}\}", lambda m: chosen(m, labels), template)
    template = re.sub(r"\{\{ with \$labels\.(\w+) \}\}(.*?)\{\{ end \}\}",
                      lambda m: m.group(2).replace("{{ . }}", labels[m.group(1)]) if labels.get(m.group(1)) else "", template)
    return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m.group(1), ""), template)


def counter_case(rule: dict[str, Any], metric: str, kinds: list[Kind], per_reason: bool,
                 locales: tuple[str, ...] = ()) -> dict[str, Any]:
    """A promtool test: ``kinds`` failing once a minute for 20 minutes in two Services (and, given ``locales``, for
    each of them: the gateway's ``locale`` label); the alert of each (and of each locale)."""
    series, expected = [], []
    for service in ("en-us", "de-de"):
        for locale in locales or (None,):
            for k in kinds:
                labels = {"namespace": "speech", "service": service, "reason": k.name, **({"locale": locale} if locale else {})}
                selector = ",".join(f'{n}="{v}"' for n, v in {**labels, "route": "rest-conversation"}.items())
                series.append({"series": f"{metric}{{{selector}}}", "values": "0+1x30"})
                if not per_reason and k is not kinds[0]:
                    continue
                alert_labels = {"severity": "warning", **{n: v for n, v in labels.items() if per_reason or n != "reason"}}
                expected.append({"exp_labels": alert_labels,
                                 "exp_annotations": {n: expanded(t, alert_labels) for n, t in rule["annotations"].items()}})
    return {"interval": "1m", "input_series": series,
            "alert_rule_test": [{"eval_time": "20m", "alertname": rule["alert"], "exp_alerts": expected}]}


def test_the_gateways_alerts_name_the_locale() -> None:
    """The gateway counts its failures by locale (``-``: refused before its locale was known, past its connection
    cap): its alerts fire per locale (tests below) and their summary names it."""
    by_name = rules()
    capacity, failing = by_name["SpeechGatewayAtCapacity"]["annotations"], by_name["SpeechGatewayFailing"]["annotations"]
    labels = {"namespace": "speech-operator", "service": "gw", "reason": "backend_lost"}
    assert [expanded(capacity["summary"], {**labels, "locale": locale}) for locale in ("ja-JP", "-")] == [
        "the gateway speech-operator/gw refuses requests for ja-JP for want of room",
        "the gateway speech-operator/gw refuses requests before their locale is known for want of room"]
    assert expanded(failing["summary"], {**labels, "locale": "ja-JP"}) == "the gateway speech-operator/gw cannot serve ja-JP: backend_lost"
    assert "ja-JP" in expanded(failing["description"], {**labels, "locale": "ja-JP"})


def quiet_case(names: list[str]) -> dict[str, Any]:
    """Every kind no alert is for (bad requests, drains, idle clients, clients gone) failing all the time,
    connections and decoders below 90 % of their caps, SpeechToTexts Ready (one scaled to zero) and not Degraded,
    reconciles failing only for what a status says (WriteRefused, NameConflict: SpeechToTextDegraded's),
    streams answered in 0.4 s (and REST requests in 60 s): no alert at all."""
    series = [{"series": f'{metric}{{namespace="speech",service="en-us",route="vosk",reason="{k.name}"}}', "values": "0+10x30"}
              for k in KINDS if k.alert is None
              for metric in ("speech_refused_total", "speech_gateway_failures_total")]
    series += [*HEALTHY, *ACTIVE, *RECONCILING, *latency_series("en-us", "usp", 0.4), *latency_series("en-us", "rest", 60)]
    for connections, idle, service in (("speech_connections", None, "en-us"), ("speech_http_connections", "speech_http_idle_connections", "en-us"),
                                       ("speech_gateway_connections", "speech_gateway_idle_connections", "speech-gateway")):
        where = f'{{namespace="speech",service="{service}",pod="{service}-1"}}'
        series += [{"series": connections + where, "values": "80x30"}, {"series": f"{connections}_max{where}", "values": "100x30"}]
        if idle is not None:  # none of them idle: 80 % busy
            series.append({"series": idle + where, "values": "0x30"})
    where = '{namespace="speech",service="en-us",pod="en-us-1"}'  # 5 of 6 decoders busy: 83 %
    series += [{"series": f"speech_active_sessions{where}", "values": "5x30"}, {"series": f"speech_decoders_max{where}", "values": "6x30"}]
    return {"interval": "1m", "input_series": series,
            "alert_rule_test": [{"eval_time": "25m", "alertname": name, "exp_alerts": []} for name in names]}


def near_cap_case(rule: dict[str, Any], metric: str = "speech_connections", service: str = "en-us",
                  idle: str | None = None) -> dict[str, Any]:
    """95 of 100 connections for 30 minutes: the alert after 15. ``idle``: the gauge of those that give way at the cap
    (the gateway's, the recognizer's plain HTTP ones), 2 of them, and a second pod with all 95 idle (an Ingress' keep-alive pool): no alert for it."""
    labels = {"namespace": "speech", "service": service, "pod": f"{service}-1"}
    selector = ",".join(f'{n}="{v}"' for n, v in labels.items())
    alert_labels = {"severity": "warning", **labels}
    series = [{"series": f"{metric}{{{selector}}}", "values": "95x30"}, {"series": f"{metric}_max{{{selector}}}", "values": "100x30"}]
    if idle is not None:
        pooled = selector.replace(f'{service}-1"', f'{service}-2"')
        series += [{"series": f"{idle}{{{selector}}}", "values": "2x30"},
                   *({"series": f"{name}{{{pooled}}}", "values": values}
                     for name, values in ((metric, "95x30"), (f"{metric}_max", "100x30"), (idle, "95x30")))]
    return {"interval": "1m",
            "input_series": series,
            "alert_rule_test": [
                {"eval_time": "10m", "alertname": rule["alert"], "exp_alerts": []},  # not yet: 15 minutes
                {"eval_time": "20m", "alertname": rule["alert"], "exp_alerts": [
                    {"exp_labels": alert_labels, "exp_annotations": {n: expanded(t, alert_labels) for n, t in rule["annotations"].items()}}]}]}


def decoders_case(rule: dict[str, Any]) -> dict[str, Any]:
    """``en-us``'s two pods hold 6 of 6 and 5 of 6 decoders (92 %) for 20 minutes: its alert after 10, not before;
    ``de-de``'s one pod all 6 and its other none (50 %: the Service's balance, not capacity): none."""
    def pod(service: str, name: str, busy: int) -> list[dict[str, str]]:
        where = f'{{namespace="speech",service="{service}",pod="{name}"}}'
        return [{"series": f"speech_active_sessions{where}", "values": f"{busy}x20"},
                {"series": f"speech_decoders_max{where}", "values": "6x20"}]
    labels = {"severity": "warning", "namespace": "speech", "service": "en-us"}
    return {"interval": "1m",
            "input_series": [*pod("en-us", "en-us-1", 6), *pod("en-us", "en-us-2", 5), *pod("de-de", "de-de-1", 6),
                             *pod("de-de", "de-de-2", 0)],
            "alert_rule_test": [
                {"eval_time": "9m", "alertname": rule["alert"], "exp_alerts": []},
                {"eval_time": "12m", "alertname": rule["alert"], "exp_alerts": [
                    {"exp_labels": labels, "exp_annotations": {n: expanded(t, labels) for n, t in rule["annotations"].items()}}]}]}


def latency_series(service: str, route: str, seconds: float) -> list[dict[str, str]]:
    """``speech_request_seconds`` of successes on ``route`` of ``service``, 10 a minute, each taking ``seconds``."""
    where = f'namespace="speech",service="{service}",pod="{service}-1",route="{route}",outcome="ok"'
    bounds = [*(str(b) for b in LATENCY_BUCKETS), "+Inf"]
    return [{"series": f'speech_request_seconds_bucket{{{where},le="{le}"}}',
             "values": "0+10x30" if le == "+Inf" or float(le) >= seconds else "0x30"} for le in bounds]


def slow_results_case(rule: dict[str, Any]) -> dict[str, Any]:
    """``en-us``'s Speech SDK turns take 3 s to their final result (its decoders fall behind) and its /vosk streams
    0.2 s: its alert after 10 minutes, not before; ``de-de``'s streams take 0.2 s and its REST answers 20 s (a long
    upload: not a live stream's wait): none."""
    labels = {"severity": "warning", "namespace": "speech", "service": "en-us"}
    series = [*latency_series("en-us", "usp", 3), *latency_series("en-us", "vosk", 0.2),
              *latency_series("de-de", "usp", 0.2), *latency_series("de-de", "vosk", 0.2), *latency_series("de-de", "rest", 20)]
    return {"interval": "1m", "input_series": series, "alert_rule_test": [
        {"eval_time": "8m", "alertname": rule["alert"], "exp_alerts": []},
        {"eval_time": "25m", "alertname": rule["alert"], "exp_alerts": [
            {"exp_labels": labels, "exp_annotations": {n: expanded(t, labels) for n, t in rule["annotations"].items()}}]}]}


def condition_series(name: str, type_: str, status: str, reason: str, values: str, instance: str = "operator-a") -> dict[str, str]:
    """A SpeechToText's condition as an operator replica exports it (speech_operator/metrics.py)."""
    return {"series": f'speech_operator_speechtotext_condition{{namespace="speech",name="{name}",locale="de-DE",type="{type_}",'
                      f'status="{status}",reason="{reason}",instance="{instance}"}}', "values": values}


#: SpeechToTexts as they should be: serving, and scaled to zero by its autoscaler (Ready, reason ScaledToZero).
HEALTHY = [condition_series(name, type_, status, reason, "1x30")
           for name, ready in (("en-us", "ReplicasReady"), ("fr-fr", "ScaledToZero"))
           for type_, status, reason in (("Ready", "True", ready), ("Degraded", "False", "AsExpected"))]


#: Two operator replicas, one active.
ACTIVE = [{"series": 'speech_operator_active{namespace="speech-operator",instance="operator-a"}', "values": "1x30"},
          {"series": 'speech_operator_active{namespace="speech-operator",instance="operator-b"}', "values": "0x30"}]


def reconcile_errors(install: str, scope: str, reason: str, values: str, replica: str = "operator-a") -> dict[str, str]:
    """``speech_operator_reconcile_errors_total`` of one replica of the operator installed in namespace ``install``."""
    return {"series": f'speech_operator_reconcile_errors_total{{namespace="{install}",instance="{replica}",scope="{scope}",'
                      f'reason="{reason}"}}', "values": values}


def reconciling(values: dict[tuple[str, str], str]) -> list[dict[str, str]]:
    """Each series of ``speech_operator_reconcile_errors_total`` of the install in ``speech-operator``: those of
    ``values`` ((scope, reason) -> values) as given; WriteRefused and NameConflict (the status says them:
    SpeechToTextDegraded) once a minute, the others never."""
    return [reconcile_errors("speech-operator", scope, reason,
                             values.get((scope, reason), "0+1x30" if reason in metrics.IN_STATUS else "0x30"))
            for scope, reasons in metrics.SCOPES.items() for reason in reasons]


#: An operator whose reconciles fail only for reasons the SpeechToTexts' status gives.
RECONCILING = reconciling({})


def reconcile_errors_case(rule: dict[str, Any]) -> dict[str, Any]:
    """The install in ``speech-operator``: ApiRefused at each reconcile (a minute apart: its RBAC lacks a verb), its
    alert after 15 minutes, not before; WriteRefused and NameConflict as often (SpeechToTextDegraded's), one ApiTimeout,
    and a burst of ApiUnavailable over 3 minutes (an API server restarting): none; its standby counts nothing. The
    install in ``speech-b``: a status refresh that times out every 4 minutes: its alert too, as the install in
    ``speech-c``'s autoscaler that cannot reach the API server; each summary says what keeps failing (its scope), and
    one of an operator older than the scope label says a reconcile."""
    series = [*reconciling({("reconcile", "ApiRefused"): "0+1x30", ("status", "ApiTimeout"): "0x5 1x25",
                            ("status", "ApiUnavailable"): "0x3 2 4 6 6x26"}),
              reconcile_errors("speech-operator", "reconcile", "ApiRefused", "0x30", replica="operator-b"),
              reconcile_errors("speech-b", "status", "ApiTimeout", " ".join(f"{n}x3" for n in range(8))),
              reconcile_errors("speech-c", "autoscaler", "ApiUnreachable", "0+2x30"),
              {"series": 'speech_operator_reconcile_errors_total{namespace="speech-d",reason="Internal"}', "values": "0+1x30"}]

    def fired(install: str, scope: str, reason: str) -> dict[str, Any]:
        labels = {"severity": "warning", "namespace": install, "reason": reason, **({"scope": scope} if scope else {})}
        return {"exp_labels": labels, "exp_annotations": {n: expanded(t, labels) for n, t in rule["annotations"].items()}}
    expected = [fired("speech-operator", "reconcile", "ApiRefused"), fired("speech-b", "status", "ApiTimeout"),
              fired("speech-c", "autoscaler", "ApiUnreachable"), fired("speech-d", "", "Internal")]
    summaries = [a["exp_annotations"]["summary"] for a in expected]
    assert summaries == [
        "the speech-operator in speech-operator keeps failing to reconcile SpeechToTexts: ApiRefused",
        "the speech-operator in speech-b keeps failing to refresh the status of SpeechToTexts: ApiTimeout",
        "the speech-operator in speech-c keeps failing to list the pods of autoscaled SpeechToTexts: ApiUnreachable",
        "the speech-operator in speech-d keeps failing to reconcile SpeechToTexts: Internal"], summaries
    described = expected[2]["exp_annotations"]["description"]
    assert ("(speech_operator_reconcile_errors_total, scope autoscaler: " in described
            and "Meanwhile their replicas do not follow the load and a locale at zero is not woken." in described), described
    return {"interval": "1m", "input_series": series, "alert_rule_test": [
        {"eval_time": "14m", "alertname": rule["alert"], "exp_alerts": []},
        {"eval_time": "20m", "alertname": rule["alert"], "exp_alerts": expected}]}


def active(install: str, replica: str, values: str) -> dict[str, str]:
    """``speech_operator_active`` of one replica of the operator installed in namespace ``install``."""
    return {"series": f'speech_operator_active{{namespace="{install}",instance="{replica}"}}', "values": values}


def inactive_cases(rule: dict[str, Any]) -> list[dict[str, Any]]:
    """The active replica of the install in ``speech-b`` stops at 5 minutes and its standby stays standing by, while
    the install in ``speech-a`` goes on: the alert for ``speech-b`` 10 minutes later, not before; its standby takes
    over at 6 minutes: none; no replica scraped at all: the alert too."""
    def fired(labels: dict[str, str]) -> list[dict[str, Any]]:
        return [{"exp_labels": {"severity": "warning", **labels},
                 "exp_annotations": {n: expanded(t, labels) for n, t in rule["annotations"].items()}}]
    other = [active("speech-a", "a-1", "1x30"), active("speech-a", "a-2", "0x30")]
    stops = active("speech-b", "b-1", "1x5 stale")
    assert fired({"namespace": "speech-b"})[0]["exp_annotations"]["summary"].startswith("no speech-operator replica in speech-b ")
    return [
        {"interval": "1m", "input_series": [*other, stops, active("speech-b", "b-2", "0x30")],
         "alert_rule_test": [{"eval_time": "14m", "alertname": rule["alert"], "exp_alerts": []},
                             {"eval_time": "18m", "alertname": rule["alert"], "exp_alerts": fired({"namespace": "speech-b"})}]},
        {"interval": "1m", "input_series": [*other, stops, active("speech-b", "b-2", "0x5 1x25")],
         "alert_rule_test": [{"eval_time": "25m", "alertname": rule["alert"], "exp_alerts": []}]},
        {"interval": "1m", "input_series": [{"series": 'speech_connections{pod="x"}', "values": "1x30"}],
         "alert_rule_test": [{"eval_time": "5m", "alertname": rule["alert"], "exp_alerts": []},
                             {"eval_time": "15m", "alertname": rule["alert"], "exp_alerts": fired({})}]},
    ]


def condition_case(rule: dict[str, Any], type_: str, status: str) -> dict[str, Any]:
    """``de-de`` has condition ``type_`` at ``status`` from the start, its reason changing at 6 minutes (a rollout that
    made no progress is later past its deadline), exported by two replicas for a moment (a standby taking over):
    one alert for it, none before its ``for``, the reason it has now in the summary; none for the healthy ones."""
    first, then = ("MissingDependency", "ProgressDeadlineExceeded")
    series = [*HEALTHY, condition_series("de-de", type_, status, first, "1x5 stale"),
              condition_series("de-de", type_, status, then, "_x5 1x25"),
              condition_series("de-de", type_, status, then, "_x5 1x2 stale", instance="operator-b")]
    wait = int(rule["for"].removesuffix("m"))
    labels = {"severity": "warning", "namespace": "speech", "name": "de-de"}
    said = "is not Ready" if type_ == "Ready" else "is Degraded"
    annotations = {"summary": f"SpeechToText speech/de-de {said}: {then}", "description": expanded(rule["annotations"]["description"], labels)}
    assert "kubectl describe speechtotext -n speech de-de" in annotations["description"]
    return {"interval": "1m", "input_series": series, "alert_rule_test": [
        {"eval_time": f"{wait - 1}m", "alertname": rule["alert"], "exp_alerts": []},
        {"eval_time": f"{wait + 2}m", "alertname": rule["alert"], "exp_alerts": [{"exp_labels": labels, "exp_annotations": annotations}]}]}


def test_promtool_unit_tests_fire_each_alert_on_its_failures_only(tmp_path: Path) -> None:
    by_name = rules()
    recognizer = {c: [k for k in alerts.RECOGNIZER_KINDS if k.alert == c] for c in (CAPACITY, FAULT)}
    gateway = {c: [k for k in alerts.GATEWAY_KINDS if k.alert == c] for c in (CAPACITY, FAULT)}
    cases = [
        counter_case(by_name["SpeechRecognizerAtCapacity"], "speech_refused_total", recognizer[CAPACITY], per_reason=False),
        counter_case(by_name["SpeechRecognizerFailing"], "speech_refused_total", recognizer[FAULT], per_reason=True),
        counter_case(by_name["SpeechGatewayAtCapacity"], "speech_gateway_failures_total", gateway[CAPACITY], per_reason=False,
                     locales=("ja-JP", "-")),
        counter_case(by_name["SpeechGatewayFailing"], "speech_gateway_failures_total", gateway[FAULT], per_reason=True,
                     locales=("ja-JP", "de-DE")),
        decoders_case(by_name["SpeechRecognizerDecodersNearCapacity"]),
        near_cap_case(by_name["SpeechRecognizerConnectionsNearCap"]),
        near_cap_case(by_name["SpeechGatewayConnectionsNearCap"], "speech_gateway_connections", "speech-gateway",
                      idle="speech_gateway_idle_connections"),
        near_cap_case(by_name["SpeechRecognizerHttpConnectionsNearCap"], "speech_http_connections",
                      idle="speech_http_idle_connections"),
        slow_results_case(by_name["SpeechRecognizerSlowResults"]),
        condition_case(by_name["SpeechToTextNotReady"], "Ready", "False"),
        condition_case(by_name["SpeechToTextDegraded"], "Degraded", "True"),
        *inactive_cases(by_name["SpeechOperatorInactive"]),
        reconcile_errors_case(by_name["SpeechOperatorReconcileErrors"]),
        quiet_case(sorted(by_name)),
    ]
    (tmp_path / "rules.yaml").write_text(alerts.render(rules_file=True))
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump({"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": cases}))
    proc = subprocess.run([str(tools.promtool()), "test", "rules", "tests.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_the_chart_renders_the_same_rules(helm: Path) -> None:
    """``prometheusRule.enabled``: one PrometheusRule named for the release, with the chart's labels and the ones
    given (a Prometheus' ruleSelector), its groups those of deploy/monitoring; off by default."""
    docs = helm_template(helm, "--set", "prometheusRule.enabled=true", "--set", "prometheusRule.labels.release=prometheus")
    rule = one(docs, "PrometheusRule")
    assert rule["metadata"]["name"] == "speech-operator" and rule["metadata"]["namespace"] == "speech-operator"
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    assert rule["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    assert rule["spec"] == yaml.safe_load(COMMITTED.read_text())["spec"]
    validate_manifests([rule])
    assert not by_kind(helm_template(helm), "PrometheusRule")


def test_without_the_operators_metrics_the_chart_leaves_out_the_alerts_that_read_them(helm: Path) -> None:
    """``metrics.enabled=false``: the PrometheusRule has every group but the operator's, whose alerts are exactly
    those reading the operator's metrics (else SpeechOperatorInactive would fire for ever on an absent metric)."""
    groups = yaml.safe_load(COMMITTED.read_text())["spec"]["groups"]
    reads_operator = {g["name"] for g in groups if any("speech_operator_" in r["expr"] for r in g["rules"])}
    assert reads_operator == {alerts.OPERATOR_GROUP}
    assert all("speech_operator_" in r["expr"] for g in groups if g["name"] == alerts.OPERATOR_GROUP for r in g["rules"])
    docs = helm_template(helm, "--set", "prometheusRule.enabled=true", "--set", "metrics.enabled=false")
    rule = one(docs, "PrometheusRule")
    assert rule["spec"]["groups"] == [g for g in groups if g["name"] != alerts.OPERATOR_GROUP]
    validate_manifests([rule])


def one_line(expr: str) -> str:
    """An expression on one line, its ``|`` escaped for a table cell (GitHub's tables split cells at it, even in code)."""
    return " ".join(expr.split()).replace("( ", "(").replace(" )", ")").replace("|", "\\|")


def markdown_table() -> str:
    """README's table of the alerts."""
    rows = ["| alert | expression | for |", "| --- | --- | --- |"]
    rows += [f"| `{r['alert']}` | `{one_line(r['expr'])}` | {r['for']} |" for r in rules().values()]
    return "\n".join(rows)


def test_readme_lists_every_alert() -> None:
    assert_generated(markdown_table(), README, "table of alerts (speech_operator.alerts)")


def test_readme_names_the_gateways_alerted_failures() -> None:
    """README, Alerts: "`too_many_held` and `forms_held` for want of room; `backend_unavailable`, `backend_lost` and
    `wake_timeout` when it cannot serve a locale" are the gateway's kinds marked capacity, then fault, no other."""
    text = " ".join(README.read_text().split())
    found = re.search(r"\(`speech_gateway_failures_total`: (.*?) for want of room; (.*?) when it cannot serve a locale\)", text)
    assert found, "README, Alerts, no longer says which failures of the gateway alert"
    room, serve = (set(re.findall(r"`(\w+)`", part)) for part in found.groups())
    assert room == {k.name for k in alerts.GATEWAY_KINDS if k.alert == CAPACITY}, f"README says {sorted(room)} for want of room"
    assert serve == {k.name for k in alerts.GATEWAY_KINDS if k.alert == FAULT}, f"README says {sorted(serve)} when it cannot serve"


def test_readmes_install_of_the_alerts_gives_its_servicemonitors_the_rules_labels() -> None:
    """README, Alerts: the `helm install` that sets `prometheusRule.labels` (what kube-prometheus-stack's
    `ruleSelector` asks for) sets the same `serviceMonitor.labels` (what its `serviceMonitorSelector` asks for, the
    same `release` label): else the rules load, nothing of speech is scraped, and `SpeechOperatorInactive` fires
    (before, the README set the rules' label alone)."""
    text = README.read_text().replace("\\\n", " ")
    (command,) = [line for line in text.splitlines()
                  if line.startswith("helm install") and "prometheusRule.labels." in line]
    rule = set(re.findall(r"prometheusRule\.labels\.(\S+)", command))
    monitor = set(re.findall(r"serviceMonitor\.labels\.(\S+)", command))
    assert rule and monitor == rule, command
