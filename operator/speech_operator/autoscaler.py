"""The autoscaler's look at one SpeechToText: its pods, each ready pod's sessions, the gateway's demand.

Every ``SPEECH_OPERATOR_AUTOSCALE_SECONDS`` (and at once when the gateway asks for a locale at zero
pods) the operator lists the SpeechToText's pods from the API, asks each running one
``GET /sessions`` on its pod IP (so the operator needs network reach to the recognizer pods, port
5000: a NetworkPolicy must let it in): the ready ones' sessions and connections (against the
connection cap each reports, ``maxConnections``) are the load, and a pod with sessions
or clients connected (``connections``: before their first audio, or between recognitions) is busy; a
pod not ready that is busy or does not answer stops any scale-down (the ReplicaSet would remove it
first). It hands what it saw to :func:`speech_operator.scaling.decide`.
The decision becomes ``status.autoscaling`` and the Deployment's replicas in one reconcile
(:func:`speech_operator.reconcile.reconcile`), one Event per change; a look that changes only what it saw (the
sessions, connections, since when fewer pods would do) writes the status alone. Before fewer replicas are
applied each ready pod gets ``controller.kubernetes.io/pod-deletion-cost`` = its sessions and
connections, so the Deployment removes idle pods first; a pod removed with streams still drains
them (its preStop hook and ``spec.drainSeconds``). While an HPA scales the Deployment instead of the SpeechToText
(:mod:`speech_operator.foreign_autoscalers`) there is no look: the HPA's replicas are applied, not a decision.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Mapping
from typing import Any

import aiohttp

from speech_operator import api, builders, metrics, scaling
from speech_operator.conditions import is_ready
from speech_operator.kube import KubeError, path
from speech_operator.reconcile import Runtime, autoscaled, pods_of
from speech_recognizer import contract
from speech_recognizer.addresses import host_port

log = logging.getLogger(__name__)

#: How long one pod may take to answer ``GET /sessions``.
SESSIONS_TIMEOUT_SECONDS = 2.0
#: Pods with a lower cost are removed first when a ReplicaSet scales down.
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"


def _time(value: str | None) -> float | None:
    if not value:
        return None
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _stamp(seconds: float) -> str:
    """RFC 3339 to the millisecond (whole seconds would cut up to a second off scaleDownDelaySeconds)."""
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def is_running(pod: Mapping[str, Any]) -> bool:
    """A pod with an IP that is not being deleted (ready or not)."""
    return not (pod.get("metadata") or {}).get("deletionTimestamp") and bool((pod.get("status") or {}).get("podIP"))


def sessions_url(pod: Mapping[str, Any]) -> str:
    """``GET /sessions`` of a pod: its IP (either family) and the recognizer container's ``http`` port."""
    port = contract.PORT
    for container in (pod.get("spec") or {}).get("containers") or []:
        if container.get("name") == builders.CONTAINER:
            port = next((p["containerPort"] for p in container.get("ports") or [] if p.get("name") == builders.PORT_NAME), port)
    # an IPv6 pod IP (an IPv6-only or IPv6-first cluster) goes in brackets in a URL
    return f"http://{host_port(pod['status']['podIP'], port)}{contract.ROUTE_SESSIONS}"


async def _read(http: aiohttp.ClientSession, pod: Mapping[str, Any]) -> scaling.PodLoad:
    async with http.get(sessions_url(pod), timeout=aiohttp.ClientTimeout(total=SESSIONS_TIMEOUT_SECONDS)) as resp:
        body = await resp.json()
    if not isinstance(body, dict):  # JSON, but not a recognizer's: something else listens at the pod's IP and port
        raise ValueError(f"answered {type(body).__name__} JSON, no object")
    # ``connections``: 0 from a recognizer older than the field (its idleSeconds ran with clients connected);
    # ``maxConnections``: None from one older than that (its connections then count for busy pods only).
    cap = body.get("maxConnections")
    return scaling.PodLoad(pod["metadata"]["name"], int(body["sessions"]), int(body["decoders"]),
                           float(body["idleSeconds"]), int(body["admitted"]), int(body.get("connections", 0)),
                           None if cap is None else int(cap))


#: What a pod that does not answer ``GET /sessions`` as a recognizer does raises.
_UNANSWERED = (TimeoutError, aiohttp.ClientError, ValueError, KeyError, TypeError)


async def load_of(http: aiohttp.ClientSession, pod: Mapping[str, Any]) -> scaling.PodLoad | None:
    """What a ready pod reports, or ``None`` when it does not answer as a recognizer does."""
    try:
        return await _read(http, pod)
    except _UNANSWERED as exc:
        log.warning("pod %s did not report its sessions: %s", pod["metadata"]["name"], str(exc) or type(exc).__name__)
        return None


async def may_hold_sessions(http: aiohttp.ClientSession, pod: Mapping[str, Any]) -> bool:
    """Whether a running pod that is not ready may hold sessions: it reports some (or clients
    connected), or it does not answer (slow or odd: unknown is not idle). A refused connection
    means nothing runs there (a pod still starting, or restarting): no session."""
    try:
        return (await _read(http, pod)).busy
    except aiohttp.ClientConnectorError:
        return False
    except _UNANSWERED as exc:
        log.warning("pod %s (not ready) did not report its sessions: %s", pod["metadata"]["name"], str(exc) or type(exc).__name__)
        return True


def waiting(stt: api.SpeechToText, current: int, loads: tuple[scaling.PodLoad, ...], now: float,
            demand_seconds: float) -> bool:
    """A request waits at the gateway for this locale: the gateway asked (``status.demand``) within
    ``demand_seconds``, and the request has not reached a pod yet.

    At zero pods: asked after the autoscaler last went to zero (an older request was served, or
    will be asked for again: the gateway asks again while it holds one). With pods: no pod has
    worked since it asked (a session or a client connected now, or one that ended after the ask). A
    pod just woken for a held request has served nothing yet and reports a long idle time (its idle
    clock runs while it loads its model), so without this its first look could send it back to zero
    while the gateway forwards the request to it. Silent pods have not worked, as far as anyone knows.
    """
    status = stt.status
    if status is None or status.demand is None:
        return False
    asked = _time(status.demand.requestedAt)
    if asked is None or now - asked > demand_seconds:
        return False
    if current == 0:
        last = status.autoscaling.lastDecision if status.autoscaling else None
        went_to_zero = _time(last.time) if last is not None and last.replicas == 0 else None
        return went_to_zero is None or asked > went_to_zero
    return not any(load.busy or (load.admitted > 0 and now - load.idle_seconds >= asked) for load in loads)


class Autoscaler:
    """Looks at SpeechToTexts with ``spec.autoscaling`` and applies the decisions."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._http: aiohttp.ClientSession | None = None
        self._wakes: dict[tuple[str, str], asyncio.Event] = {}
        self._demands: dict[tuple[str, str], str] = {}

    def wake(self, namespace: str, name: str) -> asyncio.Event:
        """Set when the next look at ``namespace/name`` should not wait for its time."""
        return self._wakes.setdefault((namespace, name), asyncio.Event())

    def notice(self, namespace: str, name: str, status: Mapping[str, Any] | None) -> None:
        """A new ``status.demand`` (the gateway holds a request): look now."""
        asked = ((status or {}).get("demand") or {}).get("requestedAt")
        if asked and self._demands.get((namespace, name)) != asked:
            self._demands[(namespace, name)] = asked
            self.wake(namespace, name).set()

    def forget(self, namespace: str, name: str) -> None:
        self._wakes.pop((namespace, name), None)
        self._demands.pop((namespace, name), None)

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(headers={"User-Agent": "speech-operator autoscaler"})
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def look(self, namespace: str, name: str, body: Mapping[str, Any]) -> None:
        """One look at ``namespace/name`` (``body``: kopf's latest copy of it): its pods' sessions and a
        decision; when the decision or what it saw changed, its status written (what it saw: the sessions,
        connections, ``lowerSince``) or a reconcile (which decides again on a fresh copy, under the lock: new replicas)
        (:func:`speech_operator.reconcile.autoscaled`). A steady look costs the API server one list of pods. A look that
        fails is counted (``speech_operator_reconcile_errors_total{scope="autoscaler"}``) and raised on."""
        try:
            stt = api.SpeechToText.model_validate(body)
        except ValueError:
            return  # the reconcile says why (InvalidSpec)
        if stt.spec.autoscaling is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            return
        # a foreign one holds the Deployment: nothing to decide (as known once the namespace's HPAs are listed: before,
        # the first look at a SpeechToText created under an HPA decided, and called for a reconcile that decided nothing)
        await self.runtime.autoscalers.listed(self.runtime.kube, namespace)
        if self.runtime.autoscalers.known(namespace, name):
            return
        before = stt.status.autoscaling if stt.status else None
        with metrics.counted(metrics.AUTOSCALER):  # the look alone: what it leads to counts as a refresh or reconcile
            decided = await self.decide(stt, act=False)
        if decided != before:
            await autoscaled(self.runtime, namespace, name, before, decided, self.decide)

    async def decide(self, stt: api.SpeechToText, act: bool = True) -> api.AutoscalingStatus:
        """The new ``status.autoscaling`` of ``stt`` (under its lock, on a fresh copy, when ``act``:
        then pods to be removed first are marked)."""
        policy = stt.spec.autoscaling
        assert policy is not None
        now = datetime.datetime.now(datetime.UTC).timestamp()
        before = stt.status.autoscaling if stt.status else None
        current = builders.replicas(stt)
        pods = await pods_of(self.runtime, stt)
        ready = [p for p in pods if is_ready(p)]
        unready = [p for p in pods if not is_ready(p) and is_running(p)]
        loads = await asyncio.gather(*(load_of(self.http, p) for p in ready))
        holding = await asyncio.gather(*(may_hold_sessions(self.http, p) for p in unready))
        reported = tuple(load for load in loads if load is not None)
        look = scaling.Look(replicas=current, pods=reported, silent=len(loads) - len(reported),
                            demand=waiting(stt, current, reported, now, self.runtime.config.demand_seconds),
                            unready=sum(holding))
        decision = scaling.decide(policy, look, _time(before.lowerSince) if before else None, now, stt.spec.decoderMaxCount)
        last = before.lastDecision if before else None
        if decision.replicas != current:
            last = api.ScaleDecision(time=_stamp(now), replicas=decision.replicas, previous=current, reason=decision.reason)
            if decision.replicas < current and act:
                await self.mark_deletion_costs(ready, reported)
        log.debug("%s/%s: %s", stt.namespace, stt.name, decision.reason)
        return api.AutoscalingStatus(
            replicas=decision.replicas, sessions=decision.sessions, connections=decision.connections,
            maxConnections=decision.max_connections, decoders=decision.decoders,
            targetSessionsPerReplica=decision.target,
            lowerSince=_stamp(decision.lower_since) if decision.lower_since is not None else None, lastDecision=last)

    async def mark_deletion_costs(self, pods: list[dict[str, Any]], loads: tuple[scaling.PodLoad, ...]) -> None:
        """Each ready pod's deletion cost is its sessions and connections: the ReplicaSet removes idle pods first."""
        held = {load.name: load.sessions + load.connections for load in loads}
        for pod in pods:
            meta = pod["metadata"]
            cost = str(held.get(meta["name"], 0))
            if (meta.get("annotations") or {}).get(DELETION_COST) == cost:
                continue
            try:
                await self.runtime.kube.patch(path("v1", "pods", meta["namespace"], meta["name"]),
                                              {"metadata": {"annotations": {DELETION_COST: cost}}})
            except KubeError as exc:  # the pod went away meanwhile: nothing to protect
                log.debug("pod %s: deletion cost not set: %s", meta["name"], exc)
