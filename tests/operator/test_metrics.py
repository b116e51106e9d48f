"""The operator's ``/metrics`` (``speech-operator run --metrics URL``, speech_operator/metrics.py): the console script
against kmock, with SpeechToTexts in different states; then a real Prometheus scraping it with the generated alerts.

What stands in for a cluster: kmock stores objects and runs no controller, so the test plays the Deployment
controller for the ready SpeechToText (its Deployment's status: 1 of 1 ready), and nothing creates pods.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import socket
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import yaml
from conftest import ENV, NAMESPACE, ROOT, Operator, condition, console_script, declare_peerings, deployment, quiet, reconcile_errors
from prometheus_client.parser import text_string_to_metric_families
from stt_schema import older

from harness.kube import PROXY_PAGE
from harness.loopback import free_port
from speech_operator import api, crd_watch, metrics
from speech_operator.kube import USER_AGENT
from speech_operator.metrics import SCOPES, address
from tests.prometheus import Prometheus, as_grafana_sends, check_dashboard, dashboard_queries

if TYPE_CHECKING:
    from conftest import Cluster

#: The labels a ServiceMonitor gives the operator's target in a cluster. Its ``namespace`` is the operator's: the
#: chart's ServiceMonitor honours the labels the operator exports (``honorLabels``), each SpeechToText's namespace.
TARGET = {"namespace": "speech-operator", "service": "speech-operator", "pod": "speech-operator-7d9f8-abcde"}


def stt(name: str, locale: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"locale": locale, "eula": "accept", "replicas": 1, **spec}}


def scrape(url: str) -> dict[str, set[tuple[tuple[str, str], ...]]]:
    """The samples of ``/metrics`` by metric: each sample's labels (sorted) and value (not a counter's ``_created``,
    the time it was made)."""
    found: dict[str, set[tuple[tuple[str, str], ...]]] = {}
    for family in text_string_to_metric_families(httpx.get(url, timeout=5).text):
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            found.setdefault(sample.name, set()).add((*sorted(sample.labels.items()), ("value", str(sample.value))))
    return found


def series(name: str, locale: str, value: float, **labels: str) -> tuple[tuple[str, str], ...]:
    return (*sorted({"namespace": NAMESPACE, "name": name, "locale": locale, **labels}.items()), ("value", str(float(value))))


async def ready_deployment(cluster: Cluster, name: str) -> None:
    """What the Deployment controller writes once the pod of a 1-replica Deployment is ready."""
    dep = await cluster.eventually(lambda: deployment(cluster, name), timeout=30)
    await cluster.api.patch(cluster.url("apps/v1", "deployments", name, "status"), {"status": {
        "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1,
        "observedGeneration": dep["metadata"].get("generation", 1)}})


async def states(cluster: Cluster, before_delete: Callable[[], Awaitable[Any]] | None = None) -> None:
    """en-us ready, de-de Degraded (its API-key Secret is missing), fr-fr created and (after ``before_delete``) deleted."""
    ref = {"name": "speech-key", "key": "apiKey"}
    await cluster.api.create(cluster.stt_url(), stt("en-us", "en-US"))
    await cluster.api.create(cluster.stt_url(), stt("de-de", "de-DE", billing="https://billing.example.test", apiKeySecretRef=ref))
    await cluster.api.create(cluster.stt_url(), stt("fr-fr", "fr-FR", replicas=2))
    await ready_deployment(cluster, "en-us")
    await cluster.eventually(lambda: deployment(cluster, "fr-fr"), timeout=30)
    if before_delete is not None:
        await before_delete()
    assert await cluster.api.delete(cluster.stt_url("fr-fr"))
    await cluster.eventually(lambda: gone(cluster, "fr-fr"), timeout=30)


async def gone(cluster: Cluster, name: str) -> bool:
    return await cluster.api.get(cluster.stt_url(name)) is None


#: Each series of speech_operator_reconcile_errors_total: (scope, reason).
ERROR_SERIES = {(scope, reason) for scope, reasons in SCOPES.items() for reason in reasons}
#: speech_operator_reconcile_errors_total while no reconcile failed: every series, at 0.
NO_ERRORS = {"speech_operator_reconcile_errors_total": {(("reason", r), ("scope", scope), ("value", "0.0")) for scope, r in ERROR_SERIES}}
EXPECTED = {
    "speech_operator_active": {(("value", "1.0"),)},
    **NO_ERRORS,
    "speech_operator_speechtotext_condition": {
        series("en-us", "en-US", 1, type="Ready", status="True", reason="ReplicasReady"),
        series("en-us", "en-US", 1, type="Progressing", status="False", reason="Complete"),
        series("en-us", "en-US", 1, type="Degraded", status="False", reason="AsExpected"),
        series("de-de", "de-DE", 1, type="Ready", status="False", reason="MissingDependency"),
        series("de-de", "de-DE", 1, type="Progressing", status="True", reason="RollingOut"),
        series("de-de", "de-DE", 1, type="Degraded", status="True", reason="MissingDependency"),
    },
    "speech_operator_speechtotext_replicas_desired": {series("en-us", "en-US", 1), series("de-de", "de-DE", 1)},
    "speech_operator_speechtotext_replicas_ready": {series("en-us", "en-US", 1), series("de-de", "de-DE", 0)},
}


def shipped(flag: str, port: int) -> str:
    """The URL deploy/base's operator is given with ``flag`` (the chart's is the same: tests/ship/test_chart.py), on
    ``port``."""
    docs = [d for d in yaml.safe_load_all((ROOT / "deploy/base/deployment.yaml").read_text()) if d and d["kind"] == "Deployment"]
    (url,) = [a.removeprefix(f"{flag}=") for a in docs[0]["spec"]["template"]["spec"]["containers"][0]["args"]
              if a.startswith(f"{flag}=")]
    host, _, path = address(url)
    return f"http://{host}:{port}{path}"


async def test_metrics_show_each_speechtotext_as_it_is_and_forget_the_deleted(apiserver: Cluster) -> None:
    """Exactly these series: the ready one's conditions, the Degraded one's with its reason, the desired and ready
    replicas of both, and nothing of the SpeechToText deleted (it had series while it existed). The operator is
    given ``--metrics`` and ``--liveness`` as its pod is (their host ``*``): both answer over IPv4 and over IPv6, as
    Prometheus and a kubelet reach a pod's IP of either family (on http://0.0.0.0:..., kopf's liveness and the
    metrics took IPv4 alone, and on an IPv6-only cluster the operator never passed its liveness probe)."""
    port, live = free_port(), free_port()
    url, url6 = f"http://127.0.0.1:{port}/metrics", f"http://[::1]:{port}/metrics"
    async with Operator("run", "--namespace", NAMESPACE, "--metrics", shipped("--metrics", port),
                        "--liveness", shipped("--liveness", live)):
        await apiserver.eventually(lambda: asyncio.to_thread(_answers, url), timeout=30)
        for alive in (f"http://127.0.0.1:{live}/healthz", f"http://[::1]:{live}/healthz"):
            answer = await asyncio.to_thread(httpx.get, alive, timeout=5)
            assert (answer.status_code, answer.json()) == (200, {}), alive

        async def fr_seen() -> bool:
            found = await asyncio.to_thread(scrape, url)
            return series("fr-fr", "fr-FR", 2) in found.get("speech_operator_speechtotext_replicas_desired", set())
        await states(apiserver, lambda: apiserver.eventually(fr_seen, timeout=30))

        async def as_expected() -> bool:
            return await asyncio.to_thread(scrape, url) == EXPECTED
        try:
            await apiserver.eventually(as_expected, timeout=30)
        except AssertionError:
            found = await asyncio.to_thread(scrape, url)
            differ = {m: (sorted(found.get(m, set()) - EXPECTED.get(m, set())), sorted(EXPECTED.get(m, set()) - found.get(m, set())))
                      for m in set(found) | set(EXPECTED) if found.get(m) != EXPECTED.get(m)}
            raise AssertionError(f"metric: (unexpected, missing): {differ}") from None
        assert await asyncio.to_thread(scrape, url6) == EXPECTED, "over IPv6"


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


async def test_a_replica_that_stands_by_exports_no_speechtotext(apiserver: Cluster) -> None:
    """With peering, the active replica exports its SpeechToTexts; once a live peer outranks it, kopf pauses its
    watching and it stands by: it says so (``speech_operator_active 0``) and exports nothing of the SpeechToTexts,
    whose conditions it no longer follows (its index still holds what it saw when it was active)."""
    declare_peerings(apiserver)
    peering = apiserver.url("kopf.dev/v1", "kopfpeerings", "speech-operator")
    await apiserver.api.create(apiserver.url("kopf.dev/v1", "kopfpeerings"), {
        "apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "speech-operator", "namespace": NAMESPACE}})
    await apiserver.api.create(apiserver.stt_url(), stt("en-us", "en-US"))
    url = f"http://127.0.0.1:{free_port()}/metrics"
    async with Operator("run", "--namespace", NAMESPACE, "--peering", "speech-operator", "--priority", "1", "--metrics", url) as op:
        async def exported() -> bool:
            found = await asyncio.to_thread(scrape, url) if await asyncio.to_thread(_answers, url) else {}
            return (found.get("speech_operator_active") == {(("value", "1.0"),)}
                    and series("en-us", "en-US", 1) in found.get("speech_operator_speechtotext_replicas_desired", set()))
        await apiserver.eventually(exported, timeout=30)
        now = datetime.datetime.now(datetime.UTC).isoformat()
        await apiserver.api.patch(peering, {"status": {"other-replica": {"priority": 100, "lifetime": 60, "lastseen": now}}})
        await op.line("watching is paused")

        async def standing_by() -> bool:
            return await asyncio.to_thread(scrape, url) == {"speech_operator_active": {(("value", "0.0"),)}, **NO_ERRORS}
        await apiserver.eventually(standing_by, timeout=10)


async def test_prometheus_alerts_on_the_degraded_speechtotext_only(apiserver: Cluster, tmp_path: Path) -> None:
    """A real Prometheus scraping the operator's /metrics with the generated rules: SpeechToTextDegraded and
    SpeechToTextNotReady go pending for the Degraded SpeechToText (their ``for`` is minutes), naming it and its
    reason, and nothing for the ready one."""
    port = free_port()
    async with Operator("run", "--namespace", NAMESPACE, "--metrics", f"http://127.0.0.1:{port}/metrics"):
        await states(apiserver)
        prometheus = Prometheus(tmp_path / "prometheus", {"operator": (port, TARGET)}, honor_labels=frozenset({"operator"}))
        try:
            def pending() -> dict[str, dict[str, Any]] | None:
                found = {a["labels"]["alertname"]: a for a in prometheus.alerts()}
                return found if set(found) == {"SpeechToTextDegraded", "SpeechToTextNotReady"} else None
            found = await asyncio.to_thread(prometheus.wait_until, "SpeechToTextDegraded and NotReady pending", pending)
            await asyncio.sleep(3)  # a few more evaluations: still these two only
            assert {a["labels"]["alertname"] for a in await asyncio.to_thread(prometheus.alerts)} == set(found)
        finally:
            prometheus.stop()
    for name, said in (("SpeechToTextDegraded", "is Degraded"), ("SpeechToTextNotReady", "is not Ready")):
        alert = found[name]
        assert alert["state"] == "pending", alert
        assert alert["labels"] == {"alertname": name, "severity": "warning", "namespace": NAMESPACE, "name": "de-de"}
        assert alert["annotations"]["summary"] == f"SpeechToText {NAMESPACE}/de-de {said}: MissingDependency", alert
        assert f"kubectl describe speechtotext -n {NAMESPACE} de-de" in alert["annotations"]["description"]


async def test_the_dashboards_panels_of_the_speechtotexts_show_them(apiserver: Cluster, tmp_path: Path) -> None:
    """The Grafana dashboard's panels that read the operator's metrics (speech-operator dashboard; the recognizers'
    and the gateway's: tests/gateway/test_dashboard.py), as Grafana sends them, in a real Prometheus scraping the
    operator: each returns series with the labels its legend shows, for every locale and for the Degraded one's."""
    port = free_port()
    panels = [q for q in dashboard_queries() if "speech_operator_" in q[1]]
    assert len(panels) == 5
    async with Operator("run", "--namespace", NAMESPACE, "--metrics", f"http://127.0.0.1:{port}/metrics"):
        await states(apiserver)
        prometheus = Prometheus(tmp_path / "prometheus", {"operator": (port, TARGET)}, honor_labels=frozenset({"operator"}))
        try:
            def degraded_seen() -> bool:
                return bool(prometheus.query('speech_operator_speechtotext_condition{name="de-de",type="Degraded",status="True"}'))
            await asyncio.to_thread(prometheus.wait_until, "de-de's Degraded condition scraped", degraded_seen)
            def zeros_shown() -> bool:  # each series at 0 (rate() has two scrapes of them)
                (query,) = [q for name, q, _ in panels if name in RECONCILED]
                result = prometheus.query(as_grafana_sends(query, {"namespace": NAMESPACE, "locale": ".*"}))
                return {(r["metric"]["scope"], r["metric"]["reason"]) for r in result if float(r["value"][1]) == 0} == ERROR_SERIES
            await asyncio.to_thread(prometheus.wait_until, "the reconcile errors panel's zeros", zeros_shown)
            for locale in (".*", "de-DE"):
                await asyncio.to_thread(check_dashboard, prometheus, panels, {"namespace": NAMESPACE, "locale": locale}, {})
        finally:
            prometheus.stop()


#: The operator's panel that draws each reason at 0 while every reconcile succeeds (a missing Secret is no reconcile
#: error: the SpeechToText's status says it); test_each_failed_reconcile_is_counted_by_its_reason shows it rise.
RECONCILED = {"Reconcile errors / {{scope}} {{reason}}": "no reconcile fails here"}
#: What an admission webhook answers to a write it refuses, and an API server whose etcd lost its leader.
DENIED = 'admission webhook "validation.gatekeeper.sh" denied the request: [required-labels] you must provide labels: {"team"}'
UNAVAILABLE = "etcdserver: leader changed"


def scraped_errors(url: str) -> dict[tuple[str, str], float]:
    """``speech_operator_reconcile_errors_total`` by scope and reason, as scraped."""
    return {(dict(labels)["scope"], dict(labels)["reason"]): float(dict(labels)["value"])
            for labels in scrape(url).get("speech_operator_reconcile_errors_total", set())}


async def test_each_failed_reconcile_is_counted_by_its_reason(apiserver: Cluster, tmp_path: Path) -> None:
    """A webhook refuses en-us's Deployment (its status: WriteRefused) and the API server cannot serve the writes of
    de-de's Service (503: tried again): each reconcile of theirs is counted as failed by its reason, again at each
    try (a re-check each second here), and nothing else; the dashboard's panel shows both reasons in a real
    Prometheus. Before, nothing counted them: a failing reconcile showed in the operator's log alone (and in the
    status, for a refused write)."""
    apiserver.emulator.refusals[("deployments", "en-us")] = (400, "BadRequest", DENIED)
    apiserver.emulator.refusals[("services", "de-de")] = (503, "ServiceUnavailable", UNAVAILABLE)
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    panels = [q for q in dashboard_queries() if q[0] in RECONCILED]
    assert len(panels) == 1
    async with Operator("run", "--namespace", NAMESPACE, "--metrics", url, env={"SPEECH_OPERATOR_RECHECK_SECONDS": "1"}):
        await apiserver.eventually(lambda: asyncio.to_thread(_answers, url), timeout=30)
        prometheus = Prometheus(tmp_path / "prometheus", {"operator": (port, TARGET)}, honor_labels=frozenset({"operator"}))
        try:
            await apiserver.api.create(apiserver.stt_url(), stt("en-us", "en-US"))
            await apiserver.api.create(apiserver.stt_url(), stt("de-de", "de-DE"))

            failed = {("reconcile", "WriteRefused"), ("reconcile", "ApiUnavailable")}

            async def tried_again() -> dict[tuple[str, str], float] | None:
                found = await asyncio.to_thread(scraped_errors, url)
                return found if all(found.get(key, 0) >= 3 for key in failed) else None
            found = await apiserver.eventually(tried_again, timeout=60)
            assert {key for key, n in found.items() if n} == failed, found
            assert set(found) == ERROR_SERIES, found  # the others' series too, at 0

            def both_shown() -> bool:
                result = prometheus.query(as_grafana_sends(panels[0][1], {"namespace": NAMESPACE, "locale": ".*"}))
                return {(r["metric"]["scope"], r["metric"]["reason"]) for r in result if float(r["value"][1]) > 0} == failed
            await asyncio.to_thread(prometheus.wait_until, "both reasons' rates in the panel", both_shown)
            await asyncio.to_thread(check_dashboard, prometheus, panels, {"namespace": NAMESPACE, "locale": ".*"}, {})
        finally:
            prometheus.stop()


#: What the API server answers a read that no rule of the operator's RBAC allows.
FORBIDDEN = ('speechtotexts.speech-operator.io "en-us" is forbidden: User "system:serviceaccount:speech-operator:'
             'speech-operator" cannot get resource "speechtotexts" in API group "speech-operator.io" in the namespace "speech"')


async def ready_and_quiet(cluster: Cluster) -> Callable[[dict[tuple[str, str], float]], Awaitable[None]]:
    """en-us made, its Deployment's pod ready, the SpeechToText Ready and nothing under way; then what waits until the
    failures counted since (by scope and reason) are those expected, and half a second later still are."""
    await cluster.api.create(cluster.stt_url(), stt("en-us", "en-US"))
    await ready_deployment(cluster, "en-us")

    async def ready() -> bool:
        return (await condition(cluster, "Ready")).get("status") == "True"
    await cluster.eventually(ready, timeout=30)
    await cluster.eventually(lambda: quiet(cluster), timeout=30)
    before = reconcile_errors()

    def counted() -> dict[tuple[str, str], float]:
        return {key: n - before.get(key, 0) for key, n in reconcile_errors().items() if n != before.get(key, 0)}

    async def count(expected: dict[tuple[str, str], float]) -> None:
        async def reached() -> bool:
            return counted() == expected
        await cluster.eventually(reached, timeout=30)
        await asyncio.sleep(0.5)  # nothing more (a re-check every 0.2 s here: none while the status says Ready)
        assert counted() == expected, counted()
    return count


async def test_failed_status_refreshes_are_counted_by_their_reason(cluster: Cluster) -> None:
    """The status-only paths count their failures as a reconcile does, with ``scope="status"``: a status refresh after
    a change of the Deployment's status whose write the API server cannot serve (503: ApiUnavailable), then the read of
    the SpeechToText after a change of the installed CRD that RBAC forbids (403: ApiRefused). One failure each, no
    reconcile counted (nothing else ran). Before, each was a WARNING line alone: the counter counted reconcile() only."""
    count = await ready_and_quiet(cluster)
    cluster.emulator.failing[("speechtotexts", "en-us", "status")] = (503, "ServiceUnavailable", UNAVAILABLE)
    dep = await deployment(cluster, "en-us") or {}
    await cluster.api.patch(cluster.url("apps/v1", "deployments", "en-us", "status"), {"status": {
        "replicas": 1, "updatedReplicas": 1, "readyReplicas": 0, "availableReplicas": 0,
        "observedGeneration": dep["metadata"].get("generation", 1)}})
    await count({("status", "ApiUnavailable"): 1})

    del cluster.emulator.failing[("speechtotexts", "en-us", "status")]
    cluster.emulator.failing[("speechtotexts", "en-us", None)] = (403, "Forbidden", FORBIDDEN)
    reads = len(cluster.sent("GET", "speechtotexts", "en-us"))
    await cluster.api.create(crd_watch.URL, older())  # an older CRD applied over none: each SpeechToText's status again
    await count({("status", "ApiUnavailable"): 1, ("status", "ApiRefused"): 1})
    assert len(cluster.sent("GET", "speechtotexts", "en-us")) == reads + 1


@pytest.mark.parametrize("exported", [True])
async def test_a_deleted_speechtotext_is_not_kept_as_read_live_in_the_resumption(cluster: Cluster) -> None:
    """In a resumption but the first (peering: this replica active again after standing by), the first event of each
    SpeechToText reads it live and the ``/metrics`` exporter keeps its uid (:meth:`metrics.Exporter.unsure`); fr-fr's
    deletion forgets it, and the exporter keeps the uids of the SpeechToTexts there are. Before, it kept each uid
    read live in the resumption until the next one: under peering, one per SpeechToText made and deleted, for as long
    as the replica stays active. (The operator here runs standalone, with no peering: the exporter is told it is in
    its second resumption, as the CLI's PauseExplainer would count it.)"""
    exporter = cluster.exporter
    assert exporter is not None
    exporter.resumed = lambda: 2
    await states(cluster)

    async def live_ones() -> set[str]:
        return {item["metadata"]["uid"] for item in (await cluster.api.get(cluster.stt_url()) or {}).get("items", [])}

    async def as_there_are() -> bool:
        return exporter._alive[1] == await live_ones()  # what the exporter keeps of each: no API tells it
    try:
        await cluster.eventually(as_there_are, timeout=10)
    except AssertionError:
        raise AssertionError(f"kept as read live: {len(exporter._alive[1])} uids for {len(await live_ones())} "
                             f"SpeechToTexts there are") from None
    assert [s.name for s in exporter.summaries()] == ["de-de", "en-us"]


async def test_a_failed_read_of_a_status_removed_by_someone_else_is_counted(cluster: Cluster) -> None:
    """Someone removes the SpeechToText's status (``status: null``); the read of the live object that tells it from the
    late event of a creation (handlers._status_removed) is answered 503: counted as a status refresh's failure
    (``scope="status"``, ApiUnavailable), once, no reconcile counted: the status stays removed until its next change or
    event. Before, a WARNING line alone."""
    count = await ready_and_quiet(cluster)
    reads = len(cluster.sent("GET", "speechtotexts", "en-us"))
    cluster.emulator.failing[("speechtotexts", "en-us", None)] = (503, "ServiceUnavailable", UNAVAILABLE)
    await cluster.api.patch(cluster.stt_url("en-us", "status"), {"status": None})
    await count({("status", "ApiUnavailable"): 1})
    assert len(cluster.sent("GET", "speechtotexts", "en-us")) == reads + 1


async def test_a_status_refresh_answered_by_a_proxys_page_is_counted_as_the_api_unavailable(
        cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    """A change of the Deployment's status refreshes the SpeechToText's status; its read of the Deployment is answered
    by a proxy in front of the API server with a page of its own (200 text/html): counted as a refresh the API server
    could not serve (``scope="status"``, ApiUnavailable), once, a WARNING line naming it, no traceback. Before, the
    page was read as a Deployment: counted Internal (a bug's reason), with its traceback."""
    count = await ready_and_quiet(cluster)
    cluster.emulator.garbled[("deployments", "en-us", None)] = PROXY_PAGE
    dep = await deployment(cluster, "en-us") or {}
    await cluster.api.patch(cluster.url("apps/v1", "deployments", "en-us", "status"), {"status": {
        "replicas": 1, "updatedReplicas": 1, "readyReplicas": 0, "availableReplicas": 0,
        "observedGeneration": dep["metadata"].get("generation", 1)}})
    await count({("status", "ApiUnavailable"): 1})
    assert not [r.getMessage() for r in caplog.records if r.exc_info], "no traceback"
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "reconciling speech/en-us" in r.getMessage()]
    assert len(said) == 1 and "UnreadableAnswer" in said[0] and "no JSON object: '<html>" in said[0], said


def test_a_connection_lost_mid_request_is_counted_as_the_api_unreachable() -> None:
    """aiohttp raises the connection lost while it sends a request's body as a bare ConnectionError (not one of its
    ClientErrors): counted ApiUnreachable, as a reset it wraps is. Before, Internal."""
    before = reconcile_errors()
    metrics.reconcile_failed(ConnectionError("Connection lost"), metrics.STATUS)
    after = reconcile_errors()
    assert {k: n - before.get(k, 0) for k, n in after.items() if n != before.get(k, 0)} == {("status", "ApiUnreachable"): 1}


async def test_a_bad_metrics_url_or_a_port_in_use_is_one_line(apiserver: Cluster, tmp_path: Path) -> None:
    """``--metrics`` or ``--liveness`` (or SPEECH_OPERATOR_METRICS, _LIVENESS) that is no http://HOST:PORT/PATH URL,
    or both on one port (kopf's liveness server then failed to bind with a traceback): argparse's usage and exit
    status 2, before anything starts (a bad ``--liveness`` URL went to kopf as it was); a port another process holds
    (on either family: the host ``*`` takes both): one line and exit status 1, not a traceback."""
    shared = f"http://127.0.0.1:{free_port()}"
    for args, env, flag, says in (
            ((("--metrics", "0.0.0.0:8081"),), {}, "--metrics", "is no http://HOST:PORT/PATH URL"),
            ((), {"SPEECH_OPERATOR_METRICS": "http://0.0.0.0/metrics"}, "--metrics", "is no http://HOST:PORT/PATH URL"),
            ((("--liveness", "http://:8080/healthz"),), {}, "--liveness", "is no http://HOST:PORT/PATH URL"),
            ((("--metrics", f"{shared}/metrics"), ("--liveness", f"{shared}/healthz")), {}, "--metrics", "the port of --liveness"),
            ((("--metrics", f"{shared}/metrics"),), {"SPEECH_OPERATOR_LIVENESS": f"{shared}/healthz"}, "--metrics",
             "the port of --liveness")):
        flags = [a for pair in args for a in pair]
        proc = await asyncio.to_thread(subprocess.run, [console_script(), "run", "--namespace", NAMESPACE, *flags],
                                       env={**os.environ, **ENV, **env}, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert f"{flag}:" in proc.stderr and says in proc.stderr, proc.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        for flag, path in (("--metrics", "/metrics"), ("--liveness", "/healthz")):
            url = f"http://*:{taken.getsockname()[1]}{path}"
            async with Operator("run", "--namespace", NAMESPACE, flag, url) as op:
                await asyncio.wait_for(op.proc.wait(), 30)
            assert op.proc.returncode == 1, op.lines
            (line,) = op.lines
            assert line == f"speech-operator: cannot serve {flag} {url}: Address already in use", line


async def test_a_speechtotext_deleted_while_this_replica_stood_by_is_not_exported_once_it_is_active_again(apiserver: Cluster) -> None:
    """Two replicas: this one exports en-us and fr-fr, then stands by while the other one (higher ranked) deletes fr-fr;
    once the other one is gone, this one is active again and exports en-us and it-it (made before the pause) only.
    kopf lists the SpeechToTexts again when it resumes, but its index keeps what it held (it drops an entry on a
    deletion it watches, and this one watched none), so fr-fr stayed exported, with its last conditions, for as long
    as the replica ran. kopf also handles after a pause the events it received before it: here an event of fr-fr
    waits behind its handler, whose reads of fr-fr the API server holds until this replica is active again (a pause
    of well under a second, as a test makes it); indexed in the new resumption, it kept fr-fr exported all the same."""
    declare_peerings(apiserver)
    peering = apiserver.url("kopf.dev/v1", "kopfpeerings", "speech-operator")
    await apiserver.api.create(apiserver.url("kopf.dev/v1", "kopfpeerings"), {
        "apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "speech-operator", "namespace": NAMESPACE}})
    await apiserver.api.create(apiserver.stt_url(), stt("en-us", "en-US"))
    await apiserver.api.create(apiserver.stt_url(), stt("fr-fr", "fr-FR", replicas=2))
    url = f"http://127.0.0.1:{free_port()}/metrics"
    async with Operator("run", "--namespace", NAMESPACE, "--peering", "speech-operator", "--priority", "1", "--metrics", url) as op:
        async def desired() -> set[tuple[tuple[str, str], ...]] | None:
            found = await asyncio.to_thread(scrape, url) if await asyncio.to_thread(_answers, url) else {}
            if found.get("speech_operator_active") != {(("value", "1.0"),)}:
                return None
            return found.get("speech_operator_speechtotext_replicas_desired", set()) or None
        async def both() -> bool:
            return await desired() == {series("en-us", "en-US", 1), series("fr-fr", "fr-FR", 2)}
        await apiserver.eventually(both, timeout=30)

        # fr-fr's next handling waits for the API server, and an event of fr-fr waits behind it; it-it is made after
        # that event: once it-it is exported, the watch has brought this replica fr-fr's event (in order)
        gate = apiserver.emulator.held[(api.PLURAL, "fr-fr")] = asyncio.Event()
        since = len(list(apiserver.emulator))
        await apiserver.api.patch(apiserver.stt_url("fr-fr"), {"spec": {"replicas": 3}})

        async def holding() -> bool:
            return any(r.resource is not None and r.resource.plural == api.PLURAL and r.name == "fr-fr"
                       and r.headers.get("User-Agent", "").startswith(USER_AGENT) for r in list(apiserver.emulator)[since:])
        await apiserver.eventually(holding, timeout=10)
        await apiserver.api.patch(apiserver.stt_url("fr-fr"), {"metadata": {"labels": {"queued": "behind-its-handler"}}})
        await apiserver.api.create(apiserver.stt_url(), stt("it-it", "it-IT"))

        async def it_it_seen() -> bool:
            return series("it-it", "it-IT", 1) in (await desired() or set())
        await apiserver.eventually(it_it_seen, timeout=30)
        now = datetime.datetime.now(datetime.UTC).isoformat()
        await apiserver.api.patch(peering, {"status": {"other-replica": {"priority": 100, "lifetime": 60, "lastseen": now}}})
        await op.line("watching is paused")

        # The other replica deletes fr-fr (its finalizer released, as that replica's kopf does); then it stops.
        assert await apiserver.api.delete(apiserver.stt_url("fr-fr"))
        await apiserver.api.patch(apiserver.stt_url("fr-fr"), {"metadata": {"finalizers": []}})
        await apiserver.eventually(lambda: gone(apiserver, "fr-fr"), timeout=10)
        await apiserver.api.patch(peering, {"status": {"other-replica": None}})
        await op.line("Resuming operations")
        del apiserver.emulator.held[(api.PLURAL, "fr-fr")]
        gate.set()
        await apiserver.eventually(lambda: quiet(apiserver, 0.5), timeout=30)  # done with fr-fr's held handler and event

        async def the_others_only() -> bool:
            return await desired() == {series("en-us", "en-US", 1), series("it-it", "it-IT", 1)}
        try:
            await apiserver.eventually(the_others_only, timeout=10)
        except AssertionError:
            raise AssertionError(f"exported: {await desired()}") from None
