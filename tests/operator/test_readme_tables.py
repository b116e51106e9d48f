"""README's tables of the operator's facts, checked against their sources both ways: the conditions and their
reasons (conditions.py), the operator's own metrics (metrics.py), the policy's variables (config.py, the chart).

Their cells are prose, so they are checked rather than generated: a row for every condition type, metric or
policy variable, none for one that does not exist, and what each row says of it (reasons, labels, chart value,
default) as its source has it.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import re
import typing
from typing import Any

import pytest
import yaml

from speech_operator import alerts, api, conditions
from speech_operator.config import OperatorConfig
from speech_operator.metrics import RECONCILE_FAILURES, Exporter, Summary
from tests.doc_tables import README, ROOT, code_spans, one_line, table

pytestmark = pytest.mark.unit  # no model, server, operator or browser: the quick run (README, Tests)

CHART = ROOT / "charts" / "speech-operator"


def stt(replicas: int) -> api.SpeechToText:
    return api.SpeechToText.model_validate({"apiVersion": api.API_VERSION, "kind": api.KIND,
                                            "metadata": {"name": "en-us", "namespace": "default", "generation": 2},
                                            "spec": {"locale": "en-US", "eula": "accept", "replicas": replicas}})


def deployments(replicas: int) -> list[dict[str, Any] | None]:
    """The Deployments the operator may find: none yet, rolled out, rolling, refused its pods, past its deadline."""
    def dep(ready: int, updated: int, *conds: dict[str, str]) -> dict[str, Any]:
        return {"metadata": {"generation": 1}, "status": {"observedGeneration": 1, "replicas": replicas,
                                                           "readyReplicas": ready, "updatedReplicas": updated,
                                                           "conditions": list(conds)}}
    return [None, dep(replicas, replicas), dep(0, 0), dep(0, 0, {"type": "ReplicaFailure", "status": "True", "message": "forbidden"}),
            dep(0, replicas, {"type": "Progressing", "status": "False", "reason": conditions.PROGRESS_DEADLINE_EXCEEDED})]


def pods() -> list[list[dict[str, Any]] | None]:
    """The pods the operator may find not ready: none listed, one whose container cannot pull its image (a kubelet's
    words), one the scheduler cannot place."""
    def pod(**status: Any) -> dict[str, Any]:
        return {"metadata": {"name": "p"}, "status": status}
    pulling = {"name": "recognizer", "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off"}}}
    unplaced = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/1 nodes"}
    return [None, [pod(containerStatuses=[pulling])], [pod(conditions=[unplaced])]]


def reasons_seen() -> set[tuple[str, str, str]]:
    """(type, status, reason) of every condition conditions.observe and conditions.invalid give, over every case
    of what the operator sees (replicas or zero, each Deployment, a missing Secret, a policy refusal, an older CRD,
    a write the API server refused, pods that are not ready and why, a child's name someone else's object holds, an
    HPA that scales the Deployment)."""
    seen = set()
    now = "2026-12-01T00:00:00Z"
    for replicas in (1, 0):
        for dep, missing, refused, outdated, write_refused, listed, conflicts, foreign in itertools.product(
                deployments(replicas), ([], ['Secret "k"']), (None, ["no"]), (None, "old"), (None, ["Service x: no"]), pods(),
                (None, ["Service x: theirs"]), ((), (api.ForeignAutoscaler(kind="HorizontalPodAutoscaler", name="x"),))):
            status = conditions.observe(stt(replicas), dep, missing, now, refused=refused, outdated_crd=outdated,
                                        write_refused=write_refused, pods=listed, conflicts=conflicts, foreign=foreign,
                                        held=replicas if foreign else None)
            seen |= {(c.type, c.status, c.reason) for c in status.conditions or []}
    for outdated, reason in itertools.product((None, "old"), (conditions.INVALID_SPEC, conditions.SPEC_TOO_LARGE)):
        status = conditions.invalid(stt(1).model_dump(mode="json"), "bad", now, outdated, reason)
        seen |= {(c.type, c.status, c.reason) for c in status.conditions or []}
    return seen


def test_readme_conditions_table_is_what_the_operator_sets() -> None:
    """A row for each condition type, in the API's order; its reasons, True ones before the ``/`` and False ones
    after, are those the operator sets, no more, no fewer."""
    rows = table(README.read_text(), "| condition | True means | reasons |")
    assert [code_spans(r[0]) for r in rows] == [[t] for t in typing.get_args(api.ConditionType)]
    seen = reasons_seen()
    for condition, _, reasons in rows:
        (type_,) = code_spans(condition)
        true, false = reasons.split(" / ")
        for status, cell in (("True", true), ("False", false)):
            said = set(code_spans(cell))
            given = {r for t, s, r in seen if t == type_ and s == status}
            assert said == given, f"{type_} {status}: README says {sorted(said)}, the operator sets {sorted(given)}"


def test_readme_operator_metrics_table_is_what_it_exports() -> None:
    """A row for each metric the operator exports, with its labels, and none for another."""
    exporter = Exporter()
    exporter.index = {"k": [Summary("default", "en-us", "en-US", (("Ready", "True", "ReplicasReady"),), 1, 1)]}
    exported = [(f.name, sorted({k for s in f.samples for k in s.labels})) for f in exporter.collect()]
    # A counter the exporter's registry holds beside it: its series (each at 0 from the start) as scraped, one row per
    # name; any other family of the registry would be missing from this list
    counters = [f for c in (RECONCILE_FAILURES,) for f in c.collect()]
    assert {f.name for f in exporter.registry.collect()} == {f.name for f in exporter.collect()} | {f.name for f in counters}
    exported += sorted({(s.name, tuple(sorted(s.labels))) for f in counters for s in f.samples if s.name.endswith("_total")})
    exported = [(name, sorted(labels)) for name, labels in exported]
    rows = table(README.read_text(), "| metric | labels | value |")
    said = [(code_spans(metric)[0], sorted(code_spans(labels))) for metric, labels, _ in rows]
    assert sorted(said) == sorted(exported), f"README says {said}, the operator exports {exported}"


def chart_env() -> dict[str, str]:
    """The operator's environment variables the chart sets from a value: name -> the value's path."""
    text = (CHART / "templates" / "deployment.yaml").read_text()
    return dict(re.findall(r"- name: (SPEECH_OPERATOR_\w+)\s+value: \{\{ \.Values\.([\w.]+)", text))


def lookup(path: str) -> Any:
    node = yaml.safe_load((CHART / "values.yaml").read_text())
    for part in path.split("."):
        node = node[part]
    return node


def test_readme_policy_table_is_the_operators_and_the_charts() -> None:
    """A row for each policy variable the operator reads (SPEECH_OPERATOR_ALLOWED_*), the chart value that sets
    it, and its default: ``none`` an empty list, else the variable and chart value it names."""
    read = re.findall(r"SPEECH_OPERATOR_ALLOWED_\w+", inspect.getsource(OperatorConfig.from_env))
    rows = table(README.read_text(), "| operator env | chart value | default | meaning |")
    assert sorted(code_spans(r[0])[0] for r in rows) == sorted(set(read)), "a row for each SPEECH_OPERATOR_ALLOWED_* the operator reads"
    sets = chart_env()
    unset = OperatorConfig.from_env({})
    for env, value, default, _ in rows:
        (name,), (path,) = code_spans(env), code_spans(value)
        assert sets.get(name) == path, f"README says chart {path} sets {name}; the chart sets it from {sets.get(name)}"
        assert lookup(path) == [], f"{path}: values.yaml has {lookup(path)!r}"
        field = name.removeprefix("SPEECH_OPERATOR_").lower()
        if default == "none":
            assert getattr(unset, field) == (), f"{name} unset: the operator allows {getattr(unset, field)}"
        else:  # what the operator falls back on: the variable and the chart value the cell names
            fallback_env, fallback_value = code_spans(default)
            assert getattr(unset, field) == () and unset.allowed_image_repositories == (unset.image,)
            assert OperatorConfig.from_env({fallback_env: "r"}).allowed_image_repositories == ("r",), default
            assert sets.get(fallback_env) == fallback_value, f"README says chart {fallback_value} sets {fallback_env}"


#: How the README writes a number of bytes.
UNITS = {"": 1, "KiB": 1024, "MiB": 1024 * 1024}


def test_readme_gateway_variables_are_its_settings() -> None:
    """Each `SPEECH_GATEWAY_*` the README names is a gateway setting; where it says `SPEECH_GATEWAY_X` (N; chart
    `gateway.y`), N is the setting's default, the chart sets the variable from `gateway.y`, whose default in
    values.yaml is N too; and each variable the chart sets is given so, with its default."""
    from speech_operator.gateway import GatewayConfig
    text = one_line(README.read_text())
    variables = GatewayConfig.variables()
    template = (CHART / "templates" / "gateway.yaml").read_text()
    # `{{ .Values.gateway.y | ... }}`, or through the chart's number helper: `{{ include "..." (dict ... "value" .Values.gateway.y ...`
    sets = dict(re.findall(r'- name: (SPEECH_GATEWAY_\w+)\s+value: \{\{ (?:include "[\w.-]+" \(dict [^)]*?"value" )?\.Values\.([\w.]+)',
                           template))
    assert sets, "the chart's gateway sets no SPEECH_GATEWAY_* from a value"
    unknown = set(re.findall(r"`(SPEECH_GATEWAY_\w+)`", text)) - set(variables)
    assert not unknown, f"README names gateway variables the gateway does not read: {sorted(unknown)}"
    said = re.findall(r"`(SPEECH_GATEWAY_\w+)` \((\d+)(?: (KiB|MiB))?([,;][^)]*)?\)", text)
    # a list's default, none: `SPEECH_GATEWAY_X` (empty, ...; chart `gateway.y`)
    empty = re.findall(r"`(SPEECH_GATEWAY_\w+)` \(empty([,;][^)]*)?\)", text)
    given = {name for name, *_ in said} | {name for name, _ in empty}
    assert set(sets) <= given, f"README gives no default of {sorted(set(sets) - given)}"
    for name, rest in empty:
        assert variables[name].default == "", f"README says {name} is empty by default; the gateway's default is {variables[name].default!r}"
        for value in (c for c in code_spans(rest) if c.startswith("gateway.")):
            assert sets.get(name) == value and lookup(value) == "", (name, value, sets.get(name), lookup(value))
    for name, number, unit, rest in said:
        default = variables[name].default
        assert int(number) * UNITS[unit] == default, f"README says {name} ({number} {unit}), the gateway's default is {default}"
        for value in (c for c in code_spans(rest or "") if c.startswith("gateway.")):
            assert sets.get(name) == value, f"README says chart {value} sets {name}; the chart sets it from {sets.get(name)}"
            assert lookup(value) == default, f"{value}: values.yaml has {lookup(value)}, the gateway's default is {default}"


def test_readme_operator_timings_are_its_defaults() -> None:
    """"every 30 s (`SPEECH_OPERATOR_RECHECK_SECONDS`)", "`SPEECH_OPERATOR_DEMAND_SECONDS`, 120": the defaults of
    OperatorConfig; each of its timings is given so."""
    text = one_line(README.read_text())
    said = re.findall(r"(\d+) s \(`(SPEECH_OPERATOR_\w+)`\)", text) + [(n, v) for v, n in re.findall(r"`(SPEECH_OPERATOR_\w+)`, (\d+)\)", text)]
    timings = {f"SPEECH_OPERATOR_{name.upper()}" for name in inspect.signature(OperatorConfig).parameters if name.endswith("_seconds")}
    assert {name for _, name in said} == timings, f"README gives {sorted(n for _, n in said)}; the operator's timings are {sorted(timings)}"
    for number, name in said:
        default = getattr(OperatorConfig(), name.removeprefix("SPEECH_OPERATOR_").lower())
        assert float(number) == default, f"README says {name} {number}, the operator's default is {default}"


def test_the_degraded_alert_names_every_reason_of_degraded() -> None:
    """The SpeechToTextDegraded alert's description names each reason the operator sets Degraded True with (before,
    it named three of nine causes and no reason)."""
    given = {r for t, s, r in reasons_seen() if t == "Degraded" and s == "True"}
    rule = next(r for g in alerts.rule_groups() for r in g["rules"] if r["alert"] == "SpeechToTextDegraded")
    missing = {r for r in given if f"({r}" not in rule["annotations"]["description"]}
    assert not missing, f"the alert's description does not name {sorted(missing)}"


def test_readme_gives_the_gateways_verbs_as_its_cluster_role_grants_them() -> None:
    """README, the gateway: "a ServiceAccount of its own that may only `list`/`watch` them and patch their `status`"
    names the verbs of ClusterRole speech-gateway in deploy/base/rbac.yaml on speechtotexts and their status, no
    more (before, it said `get` too, which the role does not grant)."""
    text = one_line(README.read_text())
    found = re.search(r"ServiceAccount of its own that may only (.*?) them and (\w+) their `status`", text)
    assert found, "README no longer says what the gateway's ServiceAccount may do"
    role = next(d for d in yaml.safe_load_all((ROOT / "deploy/base/rbac.yaml").read_text())
                if d and d["kind"] == "ClusterRole" and d["metadata"]["name"] == "speech-gateway")
    verbs = {r: set(rule["verbs"]) for rule in role["rules"] for r in rule["resources"]}
    assert set(code_spans(found.group(1))) == verbs.pop("speechtotexts")
    assert {found.group(2)} == verbs.pop("speechtotexts/status") and not verbs, verbs


def test_the_removal_instructions_name_the_operators_finalizer() -> None:
    """README (Install with Helm), the chart README and deploy/README say to delete one's SpeechToTexts before the
    operator, naming the finalizer that otherwise keeps them (and their namespace, and the CRD) from going: the one
    the operator sets (before, none of them said so, and the chart README said every SpeechToText stays)."""
    import kopf

    from speech_operator import handlers

    settings = kopf.OperatorSettings()
    asyncio.run(handlers.configure(settings=settings))
    for doc in (README, CHART / "README.md", ROOT / "deploy/README.md"):
        assert f"`{settings.persistence.finalizer}`" in doc.read_text(), doc


#: README, Create, scale and delete a locale: what it says of the pods and children the operator emits by default,
#: each phrase with the values it states (checked against the builders below).
POD_PHRASES = {
    "resources": r"by default (\S+) and (\S+) requested, at most (\S+) CPUs and (\S+?):",
    "probes": r"probes \(startup and liveness on `(/\w+)`, readiness on `(/\w+)`",
    "ids": r"the restricted security profile \(uid/gid (\d+),",
    "grace": r"`terminationGracePeriodSeconds` is (\d+) \+ `drainSeconds` \+ (\d+) s",
    "pdb": r"also owns a PodDisruptionBudget \(`maxUnavailable: (\d+)`\)",
    "rollout": r"beside a surge pod \(`maxSurge: (\d+)`, `maxUnavailable: (\d+)`\)",
    "spread": r"by default they carry two `topologySpreadConstraints`, on `(\S+)` and `(\S+)`, `maxSkew: (\d+)`, "
              r"`whenUnsatisfiable: (\w+)`",
}


def test_readme_describes_the_pods_as_the_operator_emits_them() -> None:
    """The defaults README gives in prose for a SpeechToText's pods (requests and limits, probes, ids, grace period,
    PodDisruptionBudget, rollout, spreading) are what the builders emit for a spec that sets none of them: a default
    changed in the code leaves no sentence stating the old one."""
    from speech_operator import builders
    from speech_recognizer import contract

    text = one_line(README.read_text())
    said: dict[str, tuple[str, ...]] = {}
    for name, phrase in POD_PHRASES.items():
        found = re.search(phrase, text)
        assert found, f"README no longer says {phrase!r}: update POD_PHRASES with what it says now"
        said[name] = found.groups()
    spec = api.SpeechToText.model_validate({**stt(3).model_dump(mode="json"), "metadata": {
        "name": "en-us", "namespace": "default", "uid": "0b6f5b0c-1d2e-4f3a-8b9c-0d1e2f3a4b5c"}})
    config = OperatorConfig()
    pod = builders.deployment(spec, config)["spec"]["template"]["spec"]
    container = next(c for c in pod["containers"] if c["name"] == builders.CONTAINER)
    resources = container["resources"]
    assert said["resources"] == (resources["requests"]["cpu"], resources["requests"]["memory"],
                                 resources["limits"]["cpu"], resources["limits"]["memory"]), resources
    assert said["probes"] == (container["startupProbe"]["httpGet"]["path"], container["readinessProbe"]["httpGet"]["path"])
    assert container["livenessProbe"]["httpGet"]["path"] == said["probes"][0]
    assert said["ids"] == (str(pod["securityContext"]["runAsUser"]),) == (str(pod["securityContext"]["runAsGroup"]),)
    pause, margin = map(int, said["grace"])
    drain = spec.spec.drainSeconds
    assert pause == contract.PRE_STOP_SECONDS and pod["terminationGracePeriodSeconds"] == pause + drain + margin, (
        f"README says {pause} + drainSeconds + {margin}; the pod's is {pod['terminationGracePeriodSeconds']} "
        f"with drainSeconds {drain}")
    pdb = next(c for c in builders.children(spec, config) if c["kind"] == "PodDisruptionBudget")
    assert said["pdb"] == (str(pdb["spec"]["maxUnavailable"]),)
    rolling = builders.deployment(spec, config)["spec"]["strategy"]["rollingUpdate"]
    assert said["rollout"] == (str(rolling["maxSurge"]), str(rolling["maxUnavailable"])), rolling
    spread = pod["topologySpreadConstraints"]
    assert [c["topologyKey"] for c in spread] == list(said["spread"][:2]), spread
    assert {(str(c["maxSkew"]), c["whenUnsatisfiable"]) for c in spread} == {said["spread"][2:]}, spread
