"""A real Prometheus on loopback with the generated alerts loaded, scraping static targets: what a platform
team's Prometheus does with them (tests/gateway/test_alerts.py, tests/operator/test_metrics.py); and the
dashboard's queries run in it as Grafana sends them (tests/gateway/test_dashboard.py, tests/operator/test_metrics.py)."""

from __future__ import annotations

import datetime
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from harness.loopback import Loopback, free_port
from speech_operator import alerts, dashboard
from tests.ship import tools


class Prometheus(Loopback):
    """``prometheus`` on a free loopback port, scraping ``targets`` every second with the alerts loaded; the jobs
    named in ``honor_labels`` keep the labels their targets expose over the target's own (a ServiceMonitor's
    ``honorLabels: true``); ``groups``: the rule groups to load (default: all of them), those of what is scraped."""

    def __init__(self, work: Path, targets: dict[str, tuple[int, dict[str, str]]], honor_labels: frozenset[str] = frozenset(),
                 groups: frozenset[str] | None = None) -> None:
        self.port = free_port()
        work.mkdir(parents=True, exist_ok=True)
        rules = [g for g in alerts.rule_groups() if groups is None or g["name"] in groups]
        (work / "rules.yaml").write_text(yaml.safe_dump({"groups": rules}))
        #: The rule groups loaded, by name.
        self.groups = [g["name"] for g in rules]
        config = {"global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
                  "rule_files": [str(work / "rules.yaml")],
                  "scrape_configs": [{"job_name": job, "honor_labels": job in honor_labels,
                                      "static_configs": [{"targets": [f"127.0.0.1:{port}"], "labels": labels}]}
                                     for job, (port, labels) in targets.items()]}
        (work / "prometheus.yaml").write_text(yaml.safe_dump(config))
        self.log = work / "prometheus.log"
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [str(tools.prometheus()), f"--config.file={work / 'prometheus.yaml'}", f"--storage.tsdb.path={work / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                stdout=out, stderr=subprocess.STDOUT)

    def get(self, path: str, **params: str) -> Any:
        answer = httpx.get(f"{self.http}{path}", params=params, timeout=10)
        answer.raise_for_status()
        return answer.json()["data"]

    def wait_until(self, what: str, check: Any, budget: float = 60) -> Any:
        deadline = time.monotonic() + budget
        while True:
            assert self.process.poll() is None, f"prometheus exited: {self.log.read_text()}"
            try:
                found = check()
            except httpx.HTTPError:
                found = None
            if found:
                return found
            assert time.monotonic() < deadline, f"not within {budget} s: {what}; alerts: {self.get('/api/v1/alerts')}"
            time.sleep(0.25)

    def scraped_after(self, moment: float) -> None:
        """Wait until every target has been scraped by a scrape that began after ``moment`` (``time.time()``): what the
        targets exposed at ``moment`` is in Prometheus."""
        def scraped() -> bool:
            targets = self.get("/api/v1/targets")["activeTargets"]
            return bool(targets) and all(_epoch(t["lastScrape"]) > moment for t in targets)
        self.wait_until("every target scraped again", scraped)

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The series of an instant query; an expression Prometheus refuses (bad PromQL) fails with its error. While it
        starts (its storage not open yet) it answers 503 "Service Unavailable": an httpx.HTTPStatusError, which
        :meth:`wait_until` asks again after (CI trial 99: a query right after the start failed the test)."""
        answer = httpx.get(f"{self.http}/api/v1/query", params={"query": expr}, timeout=10)
        if answer.status_code == httpx.codes.SERVICE_UNAVAILABLE:
            answer.raise_for_status()
        assert answer.status_code == 200, f"{expr}\n{answer.text}"
        return answer.json()["data"]["result"]

    def label_values(self, query: str) -> list[str]:
        """A Grafana variable's ``label_values(SELECTOR, LABEL)``, asked as Grafana asks it."""
        found = re.fullmatch(r"label_values\((.+), (\w+)\)", query)
        assert found, query
        selector, label = found.groups()
        return self.get(f"/api/v1/label/{label}/values", **{"match[]": selector})

    def alerts(self) -> list[dict[str, Any]]:
        return self.get("/api/v1/alerts")["alerts"]

    def evaluated(self) -> int:
        """How many rule groups have been evaluated at least once."""
        return sum(1 for g in self.get("/api/v1/rules")["groups"] if g.get("lastEvaluation", "").startswith("2"))

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def as_grafana_sends(expr: str, variables: dict[str, str]) -> str:
    """A dashboard's expression with its template variables replaced as Grafana replaces them: ``$__rate_interval``
    by a window (1m: four scrapes of a 15 s interval), a multi-valued variable in ``=~"$name"`` by its value (All:
    the variable's ``allValue``, ``.*``)."""
    expr = expr.replace("$__rate_interval", "1m")
    for name, value in variables.items():
        expr = expr.replace(f"${name}", value)
    assert "$" not in expr, expr
    return expr


def dashboard_queries() -> list[tuple[str, str, str]]:
    """Every expression of the dashboard's panels, as (``panel title / legend``, expression, legend)."""
    return [(f"{p['title']} / {t['legendFormat']}", t["expr"], t["legendFormat"])
            for p in dashboard.dashboard()["panels"] for t in p.get("targets", [])]


def check_dashboard(prometheus: Prometheus, panels: list[tuple[str, str, str]], variables: dict[str, str],
                    empty: dict[str, str]) -> None:
    """Each (name, expression, legend) of :func:`dashboard_queries`, as Grafana sends it, parses in
    ``prometheus`` and returns at least one series that has every label its legend shows; but those named in
    ``empty`` (name: why nothing can be there), which parse and return nothing (else they belong with the others)."""
    problems = []
    for name, expr, legend in panels:
        result = prometheus.query(as_grafana_sends(expr, variables))
        if name in empty:
            if result:
                problems.append(f"{name!r} was to be empty ({empty[name]}): {result}")
            continue
        if not result:
            problems.append(f"{name!r}: no series for {as_grafana_sends(expr, variables)}")
        for series in result:
            missing = set(re.findall(r"\{\{(\w+)\}\}", legend)) - set(series["metric"])
            if missing:
                problems.append(f"{name!r}: its legend {legend!r} shows {sorted(missing)}, which {series['metric']} lacks")
    assert not problems, "\n".join(problems)


def _epoch(stamp: str) -> float:
    """Prometheus' RFC 3339 time (nanoseconds, ``Z`` or an offset) as seconds since the epoch."""
    found = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", stamp)
    assert found, f"not a Prometheus time: {stamp!r}"
    whole, fraction, zone = found.groups()
    moment = datetime.datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone))
    return moment.timestamp() + float(f"0.{fraction or 0}")
