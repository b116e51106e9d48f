"""Session-based autoscaling, decided: what the pods report, the policy, memory and the time in,
replicas and why out. Pure: the operator's autoscaler (:mod:`speech_operator.autoscaler`) does the I/O.

The rules, in order:

- the pods needed are the live sessions over the target per pod (``targetSessionsPerReplica``,
  else four fifths of the decoders a pod reports, at least 1), rounded up; and at least the clients
  connected over four fifths of the connections a pod keeps (``MaxConnections``, the least any pod
  reports), rounded up: a pod at its cap closes the next client with 1013 whatever its sessions;
- never fewer than ``minReplicas``, than the pods busy (holding sessions, or clients connected
  before or between their sessions: removing one would end its streams or cut its clients off), or
  than one while a session runs or a request waits at the gateway (``demand``); never more than
  ``maxReplicas``;
- more pods: at once;
- fewer pods: only once fewer have been enough for ``scaleDownDelaySeconds`` without a break, and
  never while a ready pod did not report (its sessions are unknown), nor while a pod that is not
  ready is busy or does not answer (the ReplicaSet removes not-ready pods first);
- zero pods (``minReplicas: 0``): only once every pod has reported, none is busy, and none has had
  a session or a client connected for ``idleSecondsToZero``; with no request waiting (one the
  gateway asked for and no pod has served yet: a pod just woken for it is not sent back to zero
  before it arrives);
- from zero: one pod as soon as a request waits at the gateway.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from speech_operator.api import AutoscalingSpec

#: The share of a pod's decoders the default target keeps busy: the rest takes the sessions that
#: arrive while a new pod starts (tens of seconds: its model loads and warms up). The same share of
#: a pod's connection cap (``MaxConnections``) is the most connections per pod the autoscaler keeps,
#: for the clients that connect meanwhile.
DEFAULT_TARGET_SHARE = 0.8


@dataclass(frozen=True)
class PodLoad:
    """What one ready pod reported (``GET /sessions``)."""

    name: str
    sessions: int
    decoders: int
    idle_seconds: float
    #: Recognitions it admitted since it started (0: it has served nothing yet).
    admitted: int = 0
    #: Clients connected to it (recognition WebSockets open), with or without a session: a stream
    #: takes its decoder only at its first audio, a Speech SDK app keeps its connection between them.
    connections: int = 0
    #: Connections it keeps at most (``MaxConnections``); None from a recognizer older than the field.
    max_connections: int | None = None

    @property
    def busy(self) -> bool:
        """It holds sessions or clients: removing it would end its streams or cut its clients off."""
        return self.sessions > 0 or self.connections > 0


@dataclass(frozen=True)
class Look:
    """One look at a SpeechToText's pods."""

    #: Replicas in force (what the autoscaler set last).
    replicas: int
    #: Ready pods that reported.
    pods: tuple[PodLoad, ...] = ()
    #: Ready pods that did not answer.
    silent: int = 0
    #: A request for this locale waits at the gateway.
    demand: bool = False
    #: Pods not ready that hold sessions or did not say (the ReplicaSet removes not-ready pods first).
    unready: int = 0


@dataclass(frozen=True)
class Decision:
    """Replicas, why, and what the next look must remember."""

    replicas: int
    reason: str
    #: Since when fewer replicas would have been enough (``None``: not so at this look).
    lower_since: float | None
    sessions: int
    decoders: int | None
    target: int | None
    #: Clients connected to the ready pods, with or without a session (they keep a pod busy).
    connections: int = 0
    #: The connection cap per pod the pods report (the least; None when none reports one).
    max_connections: int | None = None


def target_of(policy: AutoscalingSpec, decoders: int | None) -> int | None:
    """Sessions per pod to keep near: the policy's, else derived from the decoders per pod."""
    if policy.targetSessionsPerReplica is not None:
        return policy.targetSessionsPerReplica
    if decoders:
        return max(1, math.floor(decoders * DEFAULT_TARGET_SHARE))
    return None


def connections_target(max_connections: int | None) -> int | None:
    """Connections per pod to keep at most: :data:`DEFAULT_TARGET_SHARE` of the cap, at least 1."""
    return max(1, math.floor(max_connections * DEFAULT_TARGET_SHARE)) if max_connections else None


def _pods(n: int) -> str:
    return f"{n} pod" if n == 1 else f"{n} pods"


def _sessions(n: int) -> str:
    return f"{n} session" if n == 1 else f"{n} sessions"


def _connections(n: int) -> str:
    return f"{n} connection" if n == 1 else f"{n} connections"


def decide(policy: AutoscalingSpec, look: Look, lower_since: float | None, now: float,
           decoders_hint: int | None = None) -> Decision:
    """The replicas for this look (``now`` and ``lower_since`` in seconds on one clock).

    ``decoders_hint`` (``spec.decoderMaxCount``) stands in for the decoders per pod while no pod reports.
    """
    pods = look.pods
    sessions = sum(p.sessions for p in pods)
    connections = sum(p.connections for p in pods)
    busy = sum(1 for p in pods if p.busy)
    decoders = max((p.decoders for p in pods), default=None) or decoders_hint
    target = target_of(policy, decoders)
    cap = min((p.max_connections for p in pods if p.max_connections), default=None)
    per_pod = connections_target(cap)
    current = look.replicas
    for_sessions = math.ceil(sessions / target) if sessions and target else busy
    for_connections = math.ceil(connections / per_pod) if connections and per_pod else 0
    seen = f"{_sessions(sessions)}{f', {_connections(connections)}' if connections else ''} on {_pods(len(pods))}"
    if for_connections > for_sessions:
        seen += f" (target {per_pod} connections per pod, cap {cap})"
    elif target:
        seen += f" (target {target} per pod)"

    def decision(replicas: int, reason: str, since: float | None = None) -> Decision:
        return Decision(replicas, reason, since, sessions, decoders, target, connections, cap)

    need = max(for_sessions, for_connections)
    floor = max(policy.minReplicas, busy, 1 if sessions or look.demand else 0)
    want = min(policy.maxReplicas, max(need, floor))

    if current > policy.maxReplicas:
        return decision(want, f"maxReplicas is {policy.maxReplicas}: {current} → {want}")
    if want > current:
        if current == 0 and look.demand and not sessions:
            return decision(want, f"a request waits at the gateway: waking, 0 → {want}")
        if current < policy.minReplicas:
            return decision(want, f"minReplicas is {policy.minReplicas}: {current} → {want}")
        return decision(want, f"{seen}: {current} → {want}")
    if want == current:
        if look.demand and not sessions:
            return decision(current, f"{seen}; a request waits at the gateway: {_pods(current)} kept")
        return decision(current, f"{seen}: {_pods(current)} enough")

    # Fewer would do.
    if look.silent:
        return decision(current, f"{seen}; {_pods(look.silent)} did not report their sessions: no scale-down", lower_since)
    if look.unready:
        return decision(current, f"{seen}; {_pods(look.unready)} not ready may hold sessions (a scale-down would remove "
                                 "it first): no scale-down", lower_since)
    if want == 0:
        if len(pods) < current:
            return decision(current, f"{seen}; waiting for every pod to report before going to zero")
        idle = min(p.idle_seconds for p in pods)
        if idle >= policy.idleSecondsToZero:
            return decision(0, f"no session for {idle:.0f} s (idleSecondsToZero {policy.idleSecondsToZero}): {current} → 0")
        if current == 1:
            return decision(1, f"no session for {idle:.0f} s; zero pods after {policy.idleSecondsToZero} s without one")
        want = 1
    since = now if lower_since is None else lower_since
    waited = now - since
    if waited >= policy.scaleDownDelaySeconds:
        return decision(want, f"{seen}, {_pods(want)} enough for {waited:.0f} s "
                              f"(scaleDownDelaySeconds {policy.scaleDownDelaySeconds}): {current} → {want}")
    return decision(current, f"{seen}: {_pods(want)} would be enough; scaling down in "
                             f"{policy.scaleDownDelaySeconds - waited:.0f} s if that lasts", since)
