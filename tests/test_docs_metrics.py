"""Every metric the docs name is one the recognizer, the gateway or the operator exports, with the labels they give it.

The READMEs and docs/ name metrics in prose and in tables (`speech_refused_total{route,reason}`,
`speech_gateway_held`, `speech_operator_active`); the registries are their source. A metric renamed, or a label
dropped, leaves no doc naming the old one.
"""

from __future__ import annotations

import re

import pytest
from prometheus_client import CollectorRegistry

from speech_operator import api
from speech_operator.gateway import GatewayMetrics, Waker
from speech_operator.gateway_connections import ConnectionCap
from speech_operator.gateway_directory import Directory
from speech_operator.metrics import Exporter, Summary
from speech_recognizer.admission import Admission
from speech_recognizer.connection_cap import ConnectionCap as RecognizerCap
from speech_recognizer.errors import TOO_MANY_CONNECTIONS
from speech_recognizer.inbox import SpillBudget
from speech_recognizer.metrics import Metrics
from speech_recognizer.models import ModelRegistry
from speech_recognizer.pool import WarmPool
from speech_recognizer.scratch import spill_budget
from tests.doc_tables import ROOT, code_spans

pytestmark = pytest.mark.unit  # no model, server, operator or browser: the quick run (README, Tests)

DOCS = [ROOT / "README.md", ROOT / "charts" / "speech-operator" / "README.md", ROOT / "deploy" / "README.md",
        *sorted((ROOT / "docs").glob("*.md"))]
#: Names in the docs' code that are the packages, not metrics (`speech_recognizer`, `speech_operator.gateway`).
PACKAGES = {p.parent.name for p in (*(ROOT / "recognizer").glob("*/__init__.py"), *(ROOT / "operator").glob("*/__init__.py"))}
#: The sample names a family of each type exports besides its own name.
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}


def registries() -> list[CollectorRegistry]:
    """The recognizer's (its pool, connections, decoders, locale and HTTP connections watched), the gateway's and the
    operator's (one SpeechToText each)."""
    recognizer = Metrics()
    recognizer.watch_pool(WarmPool(1))
    admission = Admission(1, max_connections=10)
    recognizer.watch_connections(admission)
    recognizer.watch_decoders(admission, ModelRegistry(ROOT / "no-models", ("ko-KR",)))
    recognizer.watch_spills(SpillBudget(lambda: spill_budget(1)))
    recognizer.watch_http_connections(RecognizerCap(10, setting="Http:MaxConnections", kind=TOO_MANY_CONNECTIONS))
    directory = Directory()
    directory.upsert({"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": "en-us", "namespace": "default"},
                      "spec": {"locale": "en-US", "eula": "accept"}})
    gateway = GatewayMetrics(directory, Waker(directory, None), ConnectionCap(10))
    operator = Exporter()
    operator.index = {"k": [Summary("default", "en-us", "en-US", (("Ready", "True", "ReplicasReady"),), 1, 1)]}
    return [recognizer.registry, gateway.registry, operator.registry]


def exported() -> dict[str, set[str]]:
    """Every sample name exported, with the label names of its family (a labelled metric with no sample yet: its
    declared label names)."""
    out: dict[str, set[str]] = {}
    for registry in registries():
        declared: dict[str, set[str]] = {}
        for collector in list(registry._collector_to_names):  # the metric objects, whose label names are declared
            for name in registry._collector_to_names[collector]:
                declared[name] = set(getattr(collector, "_labelnames", ()))
        for family in registry.collect():
            labels = {k for s in family.samples for k in s.labels} | declared.get(family.name, set()) | declared.get(family.name + "_total", set())
            for name in (family.name, *(family.name + s for s in SUFFIXES.get(family.type, ()))):
                out[name] = labels
    return out


def mentions() -> list[tuple[str, str, str]]:
    """(doc, metric, label names or selector) of every metric in the docs' inline code (fenced blocks left out)."""
    out = []
    for doc in DOCS:
        text = re.sub(r"^\s*```.*?^\s*```", "", doc.read_text(), flags=re.M | re.S)
        for code in code_spans(text):
            for name, labels in re.findall(r"\b(speech_[a-z_]+)(\{[^}]*\})?", code):
                if name not in PACKAGES:
                    out.append((doc.relative_to(ROOT).as_posix(), name, labels))
    return out


def label_names(labels: str) -> set[str]:
    """``{route,reason}``, ``{reason=~"busy|..."}`` or ``{reason!~"..."}`` -> the label names."""
    return {re.split(r"=~|!~|!=|=", part)[0].strip() for part in labels.strip("{}").split(",") if part.strip()} if labels else set()


def test_every_metric_the_docs_name_is_exported_with_those_labels() -> None:
    metrics = exported()
    found = mentions()
    assert {name for _, name, _ in found} >= {"speech_refused_total", "speech_gateway_held", "speech_operator_active"}
    for doc, name, labels in found:
        assert name in metrics, f"{doc} names {name}, which nothing exports"
        assert label_names(labels) <= metrics[name], f"{doc} names {name}{labels}; its labels are {sorted(metrics[name])}"


def test_a_selector_names_its_labels() -> None:
    assert label_names('{reason=~"busy|x",status="False"}') == {"reason", "status"} and label_names("{route,locale}") == {"route", "locale"}
    assert label_names('{reason!~"WriteRefused|x",scope!="status"}') == {"reason", "scope"}
