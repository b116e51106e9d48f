"""The operator's own Prometheus metrics: each SpeechToText's conditions and replicas, as the operator sees them.

    speech-operator run --all-namespaces --metrics 'http://*:8081/metrics'

What no recognizer can say is whether its SpeechToText is Ready or Degraded: when every pod of a
locale is down, nothing of it is scraped at all. The operator knows. kopf keeps an index of every
SpeechToText it watches (:func:`summary` of each, updated on every watch event, its entry dropped
when the object is deleted, rebuilt from the listing at start); :class:`Exporter` reads it at each
scrape, so the series are those of the SpeechToTexts that exist now, with nothing to clean up.

Conditions follow kube-state-metrics' convention: ``speech_operator_speechtotext_condition{namespace,
name, locale, type, status, reason} 1``, one series per condition. With peering, only the active
replica exports SpeechToTexts: a standby's watching is paused, and what its index holds is what it
saw when it was last active (if ever). ``speech_operator_active`` says which replica is which. When a
standby resumes, kopf lists the SpeechToTexts again, but its index keeps the entries of those deleted
meanwhile (it drops one on a deletion it watches): each entry carries the resumption it was made in,
and only those of the current one are exported. The index also keeps the entry of a SpeechToText deleted while kopf's
watch of them was away (no deletion it watched: its finalizer taken off by hand), as its listing made again lacks it:
the operator tells those (:meth:`speech_operator.reconcile.Runtime.gone`) once that listing is over, and they are not
exported. kopf also handles, after a resumption, the events it
received before the pause (an object's events wait for its handlers): such an event may be of a
SpeechToText deleted meanwhile, so the first event of each object in a resumption reads the live object
(:meth:`Exporter.unsure`), and one gone makes no entry.
"""

from __future__ import annotations

import contextlib
import dataclasses
import urllib.parse
from collections.abc import Awaitable, Callable, Container, Iterator, Mapping
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from speech_operator import api
from speech_operator import conditions as c
from speech_operator.conditions import reported_replicas
from speech_operator.kube import KubeError, UnreadableAnswer
from speech_recognizer.serving import listening_socket

PREFIX = "speech_operator_speechtotext"

#: Reasons of a failed reconcile that its SpeechToText's status gives too (Degraded: alert SpeechToTextDegraded): a write
#: the API server refused, an object of a child's name that is someone else's.
IN_STATUS = (c.WRITE_REFUSED, c.NAME_CONFLICT)
#: What ended a reconcile or a status refresh early: an API server that refused a request (RBAC, ...), could not serve
#: it (5xx, throttled, or an answer that is no JSON object: a proxy's page in front of it), did not answer in time, or
#: could not be reached (the connection refused, reset or lost), or an error of the operator's own (logged with its
#: traceback).
EARLY_ENDS = ("ApiRefused", "ApiUnavailable", "ApiTimeout", "ApiUnreachable", "Internal")
#: Why a reconcile failed (``speech_operator_reconcile_errors_total{scope="reconcile", reason}``).
RECONCILE_ERRORS = (*IN_STATUS, *EARLY_ENDS)
#: What failed (its ``scope``): a whole reconcile (the children brought in line with the spec, then the status); a
#: status made again alone (:func:`speech_operator.reconcile.refresh_status`: the re-check of pods not all ready, a
#: change of the Deployment's status; the autoscaler's look that changes only what it saw; a change of the installed
#: CRD; the read that tells a status removed by someone else), which leaves the children as they are and the status as
#: last written; or the autoscaler's look itself (its list of the pods), which leaves it blind: no decision, the
#: replicas not following the load, a locale at zero not woken for a request the gateway holds. Only what ends it early
#: fails a refresh or a look.
RECONCILE, STATUS, AUTOSCALER = "reconcile", "status", "autoscaler"
SCOPES = {RECONCILE: RECONCILE_ERRORS, STATUS: EARLY_ENDS, AUTOSCALER: EARLY_ENDS}
#: Reconciles, status refreshes and autoscaler's looks that failed, by scope and reason; one operator runs in a process
#: (its :class:`Exporter` exports them).
RECONCILE_FAILURES = Counter("speech_operator_reconcile_errors", "Reconciles of SpeechToTexts (scope reconcile), "
                             "refreshes of their status alone (scope status) and the autoscaler's looks at their pods "
                             f"(scope autoscaler) that failed, by reason: {', '.join(RECONCILE_ERRORS)}",
                             ["scope", "reason"], registry=None)
# Each series from the start, at 0: a series born at its first failure has no earlier sample, so rate() and increase()
# would not see a failure that happened once.
for _scope, _reasons in SCOPES.items():
    for _reason in _reasons:
        RECONCILE_FAILURES.labels(_scope, _reason)


def reconcile_failed(reason: str | BaseException, scope: str = RECONCILE) -> None:
    """Count a reconcile (or, by ``scope``, a status refresh or an autoscaler's look) that failed: a reason of
    :data:`SCOPES`, or the exception that ended it."""
    if isinstance(reason, BaseException):
        if isinstance(reason, KubeError):
            reason = "ApiRefused" if reason.refused else "ApiUnavailable"
        else:
            reason = ("ApiUnavailable" if isinstance(reason, UnreadableAnswer) else
                      "ApiTimeout" if isinstance(reason, TimeoutError) else
                      "ApiUnreachable" if isinstance(reason, aiohttp.ClientError | ConnectionError) else "Internal")
    RECONCILE_FAILURES.labels(scope, reason).inc()


@contextlib.contextmanager
def counted(scope: str) -> Iterator[None]:
    """Count the exception that ends the work in it (:func:`reconcile_failed`), raised on."""
    try:
        yield
    except Exception as exc:
        reconcile_failed(exc, scope)
        raise


@dataclasses.dataclass(frozen=True)
class Summary:
    """What the metrics say of one SpeechToText (kopf compares these to skip updates that change nothing)."""

    namespace: str
    name: str
    locale: str
    conditions: tuple[tuple[str, str, str], ...]  # (type, status, reason)
    desired: int | None  # None: a spec the operator cannot take (its conditions say so)
    ready: int
    resumed: int = 0  # the resumption of watching it was seen in (:attr:`Exporter.resumed`)
    uid: str = ""


def summary(body: Mapping[str, Any], resumed: int = 0) -> Summary:
    """The metrics' view of a SpeechToText's body (the index kopf keeps of them), seen in resumption ``resumed``."""
    meta, spec, status = body.get("metadata") or {}, body.get("spec") or {}, body.get("status") or {}
    try:
        desired: int | None = reported_replicas(api.SpeechToText.model_validate(dict(body)))
    except ValueError:
        desired = None
    conditions = tuple((str(c.get("type")), str(c.get("status")), str(c.get("reason") or ""))
                       for c in status.get("conditions") or [] if isinstance(c, Mapping))
    return Summary(namespace=str(meta.get("namespace")), name=str(meta.get("name")), locale=str(spec.get("locale") or ""),
                   conditions=conditions, desired=desired, ready=int(status.get("readyReplicas") or 0), resumed=resumed,
                   uid=str(meta.get("uid") or ""))


def address(url: str, path: str = "/metrics") -> tuple[str, int, str]:
    """Host, port and path of ``http://HOST:PORT/PATH`` (the path defaults to ``path``), as ``--metrics`` and
    ``--liveness`` are given; :class:`ValueError` saying what is wrong. HOST ``*``: every address, IPv6 and IPv4
    (:func:`speech_recognizer.serving.listening_socket`)."""
    where = urllib.parse.urlsplit(url)
    try:
        port = where.port
    except ValueError:
        port = None
    if where.scheme != "http" or not where.hostname or port is None:
        raise ValueError(f"{url!r} is no http://HOST:PORT/PATH URL, e.g. http://*:8081/metrics")
    return where.hostname, port, where.path or path


async def serve(url: str, path: str, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.AppRunner:
    """Serve ``handler`` to GETs at ``url`` (:func:`address`; ``path`` when it names none) on a socket of the
    recognizer's kind: ``*`` listens on IPv6 and IPv4 (asyncio's own servers cannot: an IPv6 socket of theirs takes
    IPv6 clients only). :class:`OSError` when it cannot listen there."""
    host, port, path = address(url, path)
    app = web.Application()
    app.router.add_get(path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        sock = listening_socket(host, port)
    except OSError:
        await runner.cleanup()
        raise
    try:
        await web.SockSite(runner, sock).start()
    except OSError:
        sock.close()
        await runner.cleanup()
        raise
    return runner


async def alive(_: web.Request) -> web.Response:
    """The operator's liveness (``--liveness``): served in the operator's loop, which kopf's tasks run in (when they
    end, the process does), as kopf's own endpoint was; it answers what kopf's did (the results of probe handlers: this
    operator has none). kopf's cannot listen on IPv6 and IPv4 at once (its URL's host goes to asyncio: ``::`` takes
    IPv6 clients only), and a pod's IP may be of either family, IPv6 alone on an IPv6-only cluster."""
    return web.json_response({})


class Exporter:
    """The operator's registry and its ``/metrics`` server (in the operator's own loop: the index is read
    where kopf writes it). ``index`` is kopf's index of :func:`summary` values, handed over at startup.
    ``active`` says whether this replica is at work, ``resumed`` how many times its watching resumed (with peering:
    :class:`~speech_operator.peering.PauseExplainer`); ``gone``, also handed over at startup, the uids of those found
    deleted though kopf saw no deletion, whose entries kopf's index keeps (:attr:`speech_operator.reconcile.Runtime.gone`)."""

    def __init__(self, active: Callable[[], bool] = lambda: True, resumed: Callable[[], int] = lambda: 0) -> None:
        self.active = active
        self.resumed = resumed
        self.index: Mapping[Any, Any] | None = None
        self.gone: Container[str] = frozenset()
        self.registry = CollectorRegistry()
        self.registry.register(self)
        self.registry.register(RECONCILE_FAILURES)
        self._alive: tuple[int, set[str]] = (0, set())  # a resumption, the uids read live in it

    def unsure(self, uid: str) -> bool:
        """Whether an event of the object ``uid`` handled now may be one kopf received before a pause (in a resumption
        but the first, none of its events read live yet: :meth:`alive`); the first resumption follows no pause, and
        without peering there is none."""
        return self.resumed() > 1 and uid not in self._seen()

    def alive(self, uid: str) -> None:
        """The object ``uid`` was read live in the current resumption: its later events there are its own."""
        self._seen().add(uid)

    def forget(self, uid: str) -> None:
        """The object ``uid`` is deleted (kopf's index dropped its entry at its deletion): nothing kept of it. Kept, each
        uid read live in a resumption lasted until the next one, which may never come: under peering, with
        SpeechToTexts made and deleted all the time, one uid each for the replica's life."""
        self._alive[1].discard(uid)

    def _seen(self) -> set[str]:
        now = self.resumed()
        if self._alive[0] != now:
            self._alive = (now, set())
        return self._alive[1]

    def summaries(self) -> list[Summary]:
        if self.index is None or not self.active():
            return []
        now = self.resumed()
        return sorted((s for key in list(self.index) for s in self.index[key]
                       if s.resumed == now and s.uid not in self.gone),
                      key=lambda s: (s.namespace, s.name))

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("speech_operator_active", "1 when this replica handles SpeechToTexts (standalone, or the "
                                "active one of its peers), 0 while it stands by (it then exports no SpeechToText)",
                                value=1 if self.active() else 0)
        condition = GaugeMetricFamily(f"{PREFIX}_condition", "A condition of a SpeechToText's status: 1 for the "
                                      "status and reason it has now", labels=["namespace", "name", "locale", "type", "status", "reason"])
        desired = GaugeMetricFamily(f"{PREFIX}_replicas_desired", "Pods a SpeechToText should have "
                                    "(status.desiredReplicas: spec.replicas, the autoscaler's choice, or that of an HPA "
                                    "scaling its Deployment)", labels=["namespace", "name", "locale"])
        ready = GaugeMetricFamily(f"{PREFIX}_replicas_ready", "Ready pods of a SpeechToText (status.readyReplicas)",
                                  labels=["namespace", "name", "locale"])
        for s in self.summaries():
            for type_, status, reason in s.conditions:
                condition.add_metric([s.namespace, s.name, s.locale, type_, status, reason], 1)
            if s.desired is not None:
                desired.add_metric([s.namespace, s.name, s.locale], s.desired)
            ready.add_metric([s.namespace, s.name, s.locale], s.ready)
        yield from (condition, desired, ready)

    async def metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def start(self, url: str) -> web.AppRunner:
        """Serve ``/metrics`` at ``url`` (see :func:`serve`); :class:`OSError` when it cannot listen there."""
        return await serve(url, "/metrics", self.metrics)
