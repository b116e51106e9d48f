"""A Grafana dashboard for the recognizers, the gateway and the SpeechToTexts, built from the metrics they export.

    speech-operator dashboard > deploy/monitoring/grafana-dashboard.json   # import it, or the chart's grafanaDashboard

One source, as the alerts (:mod:`speech_operator.alerts`): the failures are shown in the classes of the failure
tables (:attr:`speech_recognizer.errors.Kind.alert`: capacity, fault, or neither: the client's doing, a drain), so a
kind added there lands in its panel by its own line. Template variables: ``datasource`` (a Prometheus),
``namespace`` and ``locale`` (the SpeechToTexts'; both multi-valued, "All" by default).

The recognizers' requests, refusals, decoders and connections carry no ``locale`` label (a recognizer serves one
locale): each pod's are given its own locale by its ``namespace``, ``service`` and ``pod`` (the labels a ServiceMonitor
gives a target, the chart's ``serviceMonitor.enabled``) from ``speech_locale_loaded{locale}``, which each recognizer
exports from its start (0 while its model loads): a SpeechToText appears once one of its pods is scraped. By pod, not
by Service: while a SpeechToText whose ``spec.locale`` changed rolls out, its Service has pods of either locale, and
a join by Service would match two locales (Prometheus refuses it: many-to-many). A recognizer started with several
locales (``Locale=ko-KR,en-US``, not the operator's: a SpeechToText's pods serve its one locale) has no one locale for
those metrics: the panels that join it fail while it is scraped. The gateway's panels are filtered by locale where its
metric has one, not by namespace (the gateway runs in the operator's). The operator's panels read its own metrics (the chart's ``metrics.enabled``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import Any

from speech_operator import alerts
from speech_recognizer.errors import CAPACITY, FAULT, Kind

#: The dashboard's uid (its URL, and what an import replaces) and title.
UID = "speech-operator"
TITLE = "Speech operator"
#: The dashboard JSON model's version: Grafana 10.3 and later read it as it is (and migrate it when newer).
SCHEMA_VERSION = 39
#: Where every panel and variable reads: the ``datasource`` variable.
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
#: Grafana's rate window: four scrape intervals at least (the rate of a counter needs two samples).
RATE = "$__rate_interval"
#: The selectors of the SpeechToTexts chosen (the template variables' regexes).
WHERE = 'namespace=~"$namespace"'
#: Each recognizer pod's SpeechToText and its locale, for the metrics of a recognizer that have no ``locale``.
LOCALES = f'group by (namespace, service, pod, locale) (speech_locale_loaded{{{WHERE}, locale=~"$locale"}})'
#: What a recognizer's series and its locale are matched on: its pod (:data:`LOCALES`).
ON = "on (namespace, service, pod) group_left (locale)"


def of_locale(expr: str, by: str) -> str:
    """``expr`` (series of recognizers, by ``namespace``, ``service`` and ``pod``) given their locale, summed by ``by``."""
    return f"sum by ({by}) (\n  {expr}\n  * {ON} {LOCALES}\n)"


def per_locale_max(expr: str) -> str:
    """A per-pod ratio given its pod's locale: the most of each locale (its busiest pod)."""
    return f"max by (locale) (\n  ({expr})\n  * {ON} {LOCALES}\n)"


def rate(selector: str) -> str:
    return f"rate({selector}[{RATE}])"


def target(expr: str, legend: str, ref: str = "A") -> dict[str, Any]:
    return {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "range": True, "refId": ref}


def panel(title: str, description: str, unit: str, *targets: tuple[str, str], stack: bool = False) -> dict[str, Any]:
    """A time series panel of ``targets`` (expression, legend); its place is given by :func:`laid_out`."""
    custom: dict[str, Any] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never",
                              "spanNulls": False}
    if stack:
        custom["stacking"] = {"group": "A", "mode": "normal"}
    return {"type": "timeseries", "title": title, "description": description, "datasource": DATASOURCE,
            "fieldConfig": {"defaults": {"unit": unit, "min": 0, "custom": custom}, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                        "tooltip": {"mode": "multi", "sort": "desc"}},
            "targets": [target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(targets)]}


def failure_panels(process: str, metric: str, kinds: Iterable[Kind], by_locale: bool, own_locale: bool = False) -> list[dict[str, Any]]:
    """Three panels of ``metric{reason}`` per second: the kinds of want of capacity and the faults of ``kinds`` (those
    the alerts select), and every other reason (the client's doing, drains, idle clients: normal operation); per locale
    (``by_locale``: a recognizer's, given its pod's locale; ``own_locale``: the metric's own ``locale`` label, the
    gateway's, its ``-`` shown whatever the locales picked: refusals before a locale was known, its connection cap's
    among them), else per reason alone."""
    kinds = list(kinds)
    alerted = alerts.names(kinds, CAPACITY) + alerts.names(kinds, FAULT)
    panels = []
    for title, says, matcher in (
            ("refused for want of capacity", "more pods, decoders or connections would have taken them",
             f'reason=~"{alerts.matching(alerts.names(kinds, CAPACITY))}"'),
            ("failed", "the service failed them: a bug, a model it cannot load, a recognizer gone",
             f'reason=~"{alerts.matching(alerts.names(kinds, FAULT))}"'),
            ("refused: the client's doing or a drain", "bad requests, idle clients, clients gone, drains: no alert",
             f'reason!~"{alerts.matching(alerted)}"')):
        if own_locale:
            selector = f'{metric}{{locale=~"$locale|-", {matcher}}}'
            expr = f"sum by (locale, reason) ({rate(selector)})"
        else:
            selector = f"{metric}{{{WHERE}, {matcher}}}" if by_locale else f"{metric}{{{matcher}}}"
            expr = of_locale(rate(selector), "locale, reason") if by_locale else f"sum by (reason) ({rate(selector)})"
        legend = "{{locale}} {{reason}}" if by_locale or own_locale else "{{reason}}"
        panels.append(panel(f"{process}: {title}", f"{says} (`{metric}`: {matcher})", "reqps", (expr, legend), stack=True))
    return panels


def recognizer_panels() -> list[dict[str, Any]]:
    own = f'{WHERE}, locale=~"$locale"'  # the metrics of a recognizer that have its locale
    sessions = of_locale(f"speech_active_sessions{{{WHERE}}}", "locale")
    capacity = of_locale(f"speech_decoders_max{{{WHERE}}}", "locale")
    busy = of_locale(rate(f'speech_refused_total{{{WHERE}, reason="busy"}}'), "locale")
    latency = of_locale(rate(f'speech_request_seconds_bucket{{{WHERE}, outcome="ok"}}'), "locale, route, le")
    return [
        panel("Decoders in use", "Recognitions decoding now (`speech_active_sessions`) of the decoders of the pods "
              "(`speech_decoders_max`: DecoderMaxCount, what /sessions reports), and those refused because every decoder "
              "of their pod was in use (`busy`)", "short",
              (sessions, "{{locale}} decoding"), (capacity, "{{locale}} decoders"), (busy, "{{locale}} refused busy /s")),
        panel("Requests by route and status", "Recognitions by route and outcome (`speech_requests_total{route,status}`; "
              "a WebSocket's is the HTTP status of its failure kind)", "reqps",
              (of_locale(rate(f"speech_requests_total{{{WHERE}}}"), "locale, route, status"), "{{locale}} {{route}} {{status}}"),
              stack=True),
        *failure_panels("Recognizers", "speech_refused_total", alerts.RECOGNIZER_KINDS, by_locale=True),
        panel("Audio recognized", "Seconds of audio recognized per second, by route (`speech_audio_seconds_total`)", "short",
              (f'sum by (locale, route) ({rate(f"speech_audio_seconds_total{{{own}}}")})',
               "{{locale}} {{route}}"), stack=True),
        panel("Real-time factor (decoder CPU per second of audio)",
              "Decoder CPU seconds spent per second of audio recognized (`speech_decoder_cpu_seconds_sum` / "
              "`speech_audio_seconds_total`): below 1, a decoder keeps up with a live stream", "short",
              (f'sum by (locale) ({rate(f"speech_decoder_cpu_seconds_sum{{{own}}}")})\n/\n'
               f'sum by (locale) ({rate(f"speech_audio_seconds_total{{{own}}}")})', "{{locale}}")),
        panel("Time to the final result", "Median and 95th percentile by route of the recognitions that succeeded "
              "(`speech_request_seconds{outcome=\"ok\"}`): rest and openai from the request to its answer (it grows with "
              "the audio uploaded); usp (Speech SDK turns) and vosk (streams) from the audio that completed the final "
              "result to that result, the wait after speaking (alert SpeechRecognizerSlowResults)", "s",
              *((f"histogram_quantile({q}, {latency})", f"{{{{locale}}}} {{{{route}}}} p{int(q * 100)}") for q in (0.5, 0.95))),
        panel("Audio dropped undecoded", "Seconds of audio per second received from clients that left before it was "
              "decoded, by route (`speech_audio_abandoned_seconds_total`): dropped, not recognized; the requests are "
              "`client_gone` refusals", "short",
              (f'sum by (locale, route) ({rate(f"speech_audio_abandoned_seconds_total{{{own}}}")})', "{{locale}} {{route}}"),
              stack=True),
        panel("Warm recognizers reused and built", "Recognitions per second that started on a warm recognizer of the pool "
              "(`speech_recognizers_reused_total`) and those that found none idle and built one, whose first utterance "
              "costs 2.5-4x the CPU (`speech_recognizers_built_total`)", "reqps",
              (of_locale(rate(f"speech_recognizers_reused_total{{{WHERE}}}"), "locale"), "{{locale}} reused"),
              (of_locale(rate(f"speech_recognizers_built_total{{{WHERE}}}"), "locale"), "{{locale}} built")),
        panel("Decoder CPU per recognition", "Decoder CPU time of a recognition, median and 95th percentile "
              "(`speech_decoder_cpu_seconds`; thread CPU time, not wall time)", "s",
              *((f'histogram_quantile({q}, sum by (locale, le) ({rate(f"speech_decoder_cpu_seconds_bucket{{{own}}}")}))',
                 f"{{{{locale}}}} p{int(q * 100)}") for q in (0.5, 0.95))),
        panel("WebSocket connections of the cap", "Recognition WebSockets open of MaxConnections, the busiest pod of each "
              "SpeechToText (`speech_connections` / `speech_connections_max`; past the cap: `too_many_connections`)",
              "percentunit", (per_locale_max("speech_connections / speech_connections_max"), "{{locale}}")),
        panel("HTTP connections of the cap", "Plain HTTP connections with a request under way of Http:MaxConnections "
              "(`speech_http_connections` - `speech_http_idle_connections`, / `speech_http_connections_max`), and the "
              "idle kept-alive ones, which give way at the cap; the busiest pod of each SpeechToText", "percentunit",
              (per_locale_max("(speech_http_connections - speech_http_idle_connections) / speech_http_connections_max"),
               "{{locale}} busy"),
              (per_locale_max("speech_http_idle_connections / speech_http_connections_max"), "{{locale}} idle")),
    ]


def speechtotext_panels() -> list[dict[str, Any]]:
    stt = f'{WHERE}, locale=~"$locale"'
    return [
        panel("Pods ready and desired", "Each SpeechToText's ready pods and the pods it should have "
              "(`speech_operator_speechtotext_replicas_ready`, `_desired`: spec.replicas, its autoscaler's or an HPA's choice)",
              "short",
              (f"max by (namespace, name) (speech_operator_speechtotext_replicas_ready{{{stt}}})", "{{namespace}}/{{name}} ready"),
              (f"max by (namespace, name) (speech_operator_speechtotext_replicas_desired{{{stt}}})", "{{namespace}}/{{name}} desired")),
        panel("Not Ready or Degraded", "SpeechToTexts the operator cannot run as asked, by the condition's reason "
              "(`speech_operator_speechtotext_condition`): a missing Secret or PVC, a spec refused, writes refused by the "
              "API server, pods failing or unschedulable, a rollout past its deadline, a foreign autoscaler, an old CRD. "
              "`kubectl describe speechtotext` says more; alerts SpeechToTextNotReady and SpeechToTextDegraded", "short",
              (f'max by (namespace, name, type, reason) (\n  speech_operator_speechtotext_condition{{{stt}, type="Ready", status="False"}}\n'
               f'  or speech_operator_speechtotext_condition{{{stt}, type="Degraded", status="True"}}\n)',
               "{{namespace}}/{{name}} {{type}}: {{reason}}")),
        panel("Reconcile errors", "Reconciles of SpeechToTexts (reconcile), refreshes of their status alone (status) "
              "and the autoscaler's looks at their pods (autoscaler) that failed per second, by reason (`speech_operator_reconcile_errors_total`): writes the API server "
              "refused (WriteRefused) or children's names taken by others (NameConflict), both in the SpeechToText's "
              "status; an API server that refused a request (ApiRefused: RBAC), could not serve it (ApiUnavailable), did "
              "not answer in time (ApiTimeout) or could not be reached (ApiUnreachable): tried again; Internal: the "
              "operator's log has the traceback. Alert SpeechOperatorReconcileErrors: one per install, scope and reason "
              "but WriteRefused and NameConflict (SpeechToTextDegraded says those), once its failures keep coming for "
              f"{alerts.RECONCILE_ERRORS_FOR[:-1]} minutes",
              "reqps", (f"sum by (scope, reason) ({rate('speech_operator_reconcile_errors_total')})", "{{scope}} {{reason}}"),
              stack=True),
        panel("Operator replicas active", "Operator replicas handling SpeechToTexts (`speech_operator_active`): 1 in each "
              "install; 0 means nothing reconciles, wakes or scales them (alert SpeechOperatorInactive)", "short",
              ("sum by (namespace) (speech_operator_active)", "{{namespace}}")),
    ]


def gateway_panels() -> list[dict[str, Any]]:
    locale = 'locale=~"$locale"'
    relayed_ok = rate(f'speech_gateway_request_seconds_bucket{{{locale}, outcome="ok"}}')
    return [
        panel("Gateway requests by locale and outcome", "Requests and streams by route, locale and outcome: the HTTP "
              "status, or a WebSocket's close code (`speech_gateway_requests_total`)", "reqps",
              (f"sum by (locale, route, code) ({rate(f'speech_gateway_requests_total{{{locale}}}')})", "{{locale}} {{route}} {{code}}"),
              stack=True),
        panel("Gateway time to the answer", "Median and 95th percentile by locale and route of the requests the gateway "
              "relayed and its recognizer answered ok (`speech_gateway_request_seconds{outcome=\"ok\"}`): rest "
              "and openai from the request's head to its answer relayed, as the client sees it (its upload, a wake, the "
              "recognizer's decoding; the recognizer's own share: Time to the final result); usp and vosk from the "
              "upgrade to the recognizer's acceptance of the connection (a wake when its locale had no ready pod), not "
              "the stream's length", "s",
              *((f"histogram_quantile({q}, sum by (locale, route, le) ({relayed_ok}))", f"{{{{locale}}}} {{{{route}}}} p{int(q * 100)}")
                for q in (0.5, 0.95))),
        panel("Gateway streams", "WebSocket streams being relayed, by route: those whose client is still there "
              "(`speech_gateway_streams`, the live load), and those whose client is gone while the gateway still closes "
              "the recognizer's side, its close reply awaited for at most SPEECH_GATEWAY_SEND_STALL_SECONDS "
              "(`speech_gateway_streams_closing`: a recognizer busy decoding what a gone client sent, or stuck)", "short",
              ("sum by (route) (speech_gateway_streams)", "{{route}}"),
              ("sum by (route) (speech_gateway_streams_closing)", "{{route}} closing"), stack=True),
        *failure_panels("Gateway", "speech_gateway_failures_total", alerts.GATEWAY_KINDS, by_locale=False, own_locale=True),
        panel("Gateway relay throughput", "Bytes relayed per second, each way (`speech_gateway_relayed_bytes_total`)", "Bps",
              (f"sum by (direction) ({rate('speech_gateway_relayed_bytes_total')})", "{{direction}}")),
        panel("Gateway connections of the cap", "Client connections with a request or stream under way of "
              "SPEECH_GATEWAY_MAX_CONNECTIONS (`speech_gateway_connections` - `speech_gateway_idle_connections`, / "
              "`speech_gateway_connections_max`), and the idle kept-alive ones, by gateway pod", "percentunit",
              ("max by (pod) (\n  (speech_gateway_connections - speech_gateway_idle_connections) / speech_gateway_connections_max\n)",
               "{{pod}} busy"),
              ("max by (pod) (speech_gateway_idle_connections / speech_gateway_connections_max)", "{{pod}} idle")),
        panel("Requests held for waking locales", "Requests held now for a locale with no ready pod (`speech_gateway_held`), "
              "and how long those forwarded were held, 95th percentile (`speech_gateway_held_seconds`)", "short",
              ("sum (speech_gateway_held)", "held now"),
              (f"histogram_quantile(0.95, sum by (locale, le) ({rate(f'speech_gateway_held_seconds_bucket{{{locale}}}')}))",
               "{{locale}} p95 held (s)")),
        panel("Ready pods the gateway routes to", "Ready pods of each SpeechToText as the gateway sees them "
              "(`speech_gateway_backend_ready_pods`)", "short",
              (f"max by (locale, namespace, name) (speech_gateway_backend_ready_pods{{{locale}}})", "{{locale}} {{namespace}}/{{name}}")),
    ]


def variable(name: str, label: str, metric: str) -> dict[str, Any]:
    """A query variable of ``label``'s values of ``metric`` (multi-valued, All by default: any value, ``.*``)."""
    query = f"label_values({metric}, {label})"
    return {"name": name, "label": name.capitalize(), "type": "query", "datasource": DATASOURCE, "query": query,
            "definition": query, "refresh": 2, "multi": True, "includeAll": True, "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "sort": 1, "regex": "", "hide": 0,
            "options": []}


def laid_out(rows: list[tuple[str, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """Rows of panels, two panels a line, each given its id and place."""
    panels: list[dict[str, Any]] = []
    y = 0
    for title, row in rows:
        panels.append({"type": "row", "title": title, "collapsed": False, "panels": [],
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "id": len(panels) + 1})
        y += 1
        for i, p in enumerate(row):
            panels.append({**p, "id": len(panels) + 1, "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": y + 8 * (i // 2)}})
        y += 8 * ((len(row) + 1) // 2)
    return panels


def dashboard() -> dict[str, Any]:
    """The dashboard's JSON model."""
    return {
        "uid": UID, "title": TITLE, "tags": ["speech-operator"], "timezone": "browser", "editable": True,
        "schemaVersion": SCHEMA_VERSION, "version": 1, "refresh": "30s", "time": {"from": "now-6h", "to": "now"},
        "graphTooltip": 1, "fiscalYearStartMonth": 0, "liveNow": False, "links": [],
        "annotations": {"list": [{"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True,
                                  "hide": True, "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts",
                                  "type": "dashboard"}]},
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus", "refresh": 1,
             "current": {}, "hide": 0, "includeAll": False, "multi": False, "options": [], "regex": ""},
            variable("namespace", "namespace", "speech_connections"),
            variable("locale", "locale", f'speech_locale_loaded{{{WHERE}}}'),
        ]},
        "panels": laid_out([("Recognizers", recognizer_panels()), ("SpeechToTexts (the operator)", speechtotext_panels()),
                            ("Gateway", gateway_panels())]),
    }


def render() -> str:
    """The dashboard as JSON (deploy/monitoring/grafana-dashboard.json)."""
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
