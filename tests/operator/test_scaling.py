"""The autoscaler's decision (speech_operator.scaling.decide), pure: a table of the cases that matter,
then properties that hold for every policy, look, memory and time hypothesis can find."""

from __future__ import annotations

import math
import re

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from speech_operator.api import AutoscalingSpec
from speech_operator.scaling import DEFAULT_TARGET_SHARE, Look, PodLoad, connections_target, decide, target_of
from speech_recognizer.settings import KNOWN
from tests.doc_tables import README, code_spans, table
from tests.snippets import blocks

pytestmark = pytest.mark.unit  # no model, server, operator or browser: the quick run (README, Tests)


def policy(**kw: int) -> AutoscalingSpec:
    return AutoscalingSpec(**{"minReplicas": 1, "maxReplicas": 10, "targetSessionsPerReplica": 2,
                              "scaleDownDelaySeconds": 60, "idleSecondsToZero": 300, **kw})


def pods(*sessions: int, decoders: int = 6, idle: float = 0.0) -> tuple[PodLoad, ...]:
    return tuple(PodLoad(f"p{i}", s, decoders, 0.0 if s else idle) for i, s in enumerate(sessions))


T0 = 1_000_000.0


def test_more_pods_at_once() -> None:
    d = decide(policy(), Look(1, pods(5)), None, T0)
    assert (d.replicas, d.lower_since, d.sessions, d.target) == (3, None, 5, 2)
    assert d.reason == "5 sessions on 1 pod (target 2 per pod): 1 → 3"


def test_more_pods_up_to_max() -> None:
    assert decide(policy(maxReplicas=4), Look(2, pods(9, 9)), None, T0).replicas == 4


def test_steady_forgets_a_lower_spell() -> None:
    d = decide(policy(), Look(2, pods(2, 2)), T0 - 30, T0)
    assert (d.replicas, d.lower_since) == (2, None)
    assert d.reason == "4 sessions on 2 pods (target 2 per pod): 2 pods enough"


def test_fewer_pods_only_after_the_delay_without_a_break() -> None:
    p = policy(scaleDownDelaySeconds=60)
    first = decide(p, Look(3, pods(1, 0, 0)), None, T0)
    assert (first.replicas, first.lower_since) == (3, T0)
    assert "scaling down in 60 s if that lasts" in first.reason
    later = decide(p, Look(3, pods(1, 0, 0)), first.lower_since, T0 + 59)
    assert (later.replicas, later.lower_since) == (3, T0)
    due = decide(p, Look(3, pods(1, 0, 0)), later.lower_since, T0 + 60)
    assert (due.replicas, due.lower_since) == (1, None)
    assert due.reason == "1 session on 3 pods (target 2 per pod), 1 pod enough for 60 s (scaleDownDelaySeconds 60): 3 → 1"
    broken = decide(p, Look(3, pods(2, 2, 2)), first.lower_since, T0 + 30)
    assert broken.lower_since is None
    again = decide(p, Look(3, pods(1, 0, 0)), broken.lower_since, T0 + 40)
    assert again.lower_since == T0 + 40, "the delay starts over after a break"


def test_never_below_the_pods_holding_sessions() -> None:
    """Three pods each with a session need one pod by the target, but removing any would end its stream."""
    d = decide(policy(targetSessionsPerReplica=4, scaleDownDelaySeconds=0), Look(3, pods(1, 1, 1)), None, T0)
    assert d.replicas == 3
    d = decide(policy(targetSessionsPerReplica=4, scaleDownDelaySeconds=0), Look(4, pods(1, 1, 1, 0)), None, T0)
    assert d.replicas == 3


def test_a_silent_pod_stops_scale_down_not_scale_up() -> None:
    p = policy(scaleDownDelaySeconds=0)
    down = decide(p, Look(3, pods(0, 0), silent=1), T0 - 600, T0)
    assert down.replicas == 3 and "1 pod did not report their sessions: no scale-down" in down.reason
    assert decide(p, Look(3, pods(8, 0), silent=1), None, T0).replicas == 4


def test_a_pod_not_ready_that_may_hold_sessions_stops_scale_down() -> None:
    p = policy(minReplicas=0, idleSecondsToZero=0, scaleDownDelaySeconds=0)
    down = decide(p, Look(2, pods(0, idle=999), unready=1), T0 - 600, T0)
    assert down.replicas == 2 and "1 pod not ready may hold sessions" in down.reason
    assert decide(p, Look(2, pods(9), unready=1), None, T0).replicas == 5, "up as ever"


def test_bounds_apply_at_once() -> None:
    up = decide(policy(minReplicas=3), Look(1, pods(0)), None, T0)
    assert (up.replicas, up.reason) == (3, "minReplicas is 3: 1 → 3")
    down = decide(policy(maxReplicas=2), Look(5, pods(4, 4, 0, 0, 0)), None, T0)
    assert (down.replicas, down.reason) == (2, "maxReplicas is 2: 5 → 2")


def test_to_zero_after_idle_seconds_on_every_pod() -> None:
    p = policy(minReplicas=0, idleSecondsToZero=300, scaleDownDelaySeconds=60)
    rest = decide(p, Look(2, pods(0, 0, idle=400)), None, T0)
    assert (rest.replicas, rest.reason) == (0, "no session for 400 s (idleSecondsToZero 300): 2 → 0")
    one = decide(p, Look(1, pods(0, idle=299)), None, T0)
    assert one.replicas == 1 and "zero pods after 300 s without one" in one.reason
    two = decide(p, Look(2, pods(0, 0, idle=100)), None, T0)
    assert (two.replicas, two.lower_since) == (2, T0), "down to one pod only after the delay"
    assert decide(p, Look(2, pods(0, 0, idle=100)), T0, T0 + 60).replicas == 1


def test_to_zero_waits_for_every_pod_to_report() -> None:
    p = policy(minReplicas=0, idleSecondsToZero=0)
    d = decide(p, Look(2, pods(0, idle=999)), None, T0)
    assert d.replicas == 2 and "waiting for every pod to report" in d.reason
    d = decide(p, Look(1, ()), None, T0)
    assert d.replicas == 1, "a pod woken and still starting is not sent back to zero"


def test_from_zero_on_demand_only() -> None:
    p = policy(minReplicas=0)
    assert decide(p, Look(0), None, T0).replicas == 0
    d = decide(p, Look(0, demand=True), None, T0)
    assert (d.replicas, d.reason) == (1, "a request waits at the gateway: waking, 0 → 1")


def test_a_session_keeps_a_pod() -> None:
    assert decide(policy(minReplicas=0, idleSecondsToZero=0, scaleDownDelaySeconds=0), Look(1, pods(1)), None, T0).replicas == 1


def test_a_client_connected_before_its_first_audio_keeps_its_pod() -> None:
    """A stream takes its decoder at its first audio, a Speech SDK app keeps its connection between
    recognitions: a pod with a client connected and no session is busy, whatever its idle time says
    (a recognizer older than ``connections`` let it run)."""
    p = policy(minReplicas=0, idleSecondsToZero=0, scaleDownDelaySeconds=0)
    connected = PodLoad("p0", 0, 6, 999.0, connections=1)
    kept = decide(p, Look(1, (connected,)), None, T0)
    assert (kept.replicas, kept.reason) == (1, "0 sessions, 1 connection on 1 pod (target 2 per pod): 1 pod enough")
    two = decide(p, Look(3, (PodLoad("p0", 0, 6, 999.0), connected, PodLoad("p2", 0, 6, 0.0, connections=2))), None, T0)
    assert (two.replicas, two.reason) == (2, "0 sessions, 3 connections on 3 pods (target 2 per pod), 2 pods enough for 0 s "
                                              "(scaleDownDelaySeconds 0): 3 → 2"), "never below the pods with clients"
    assert decide(p, Look(1, (PodLoad("p0", 0, 6, 999.0),)), None, T0).replicas == 0, "once they are gone: zero"


def connected(*connections: int, sessions: int = 0, cap: int | None = 500) -> tuple[PodLoad, ...]:
    """Pods with clients connected, each reporting its connection cap (None: a recognizer older than the field)."""
    return tuple(PodLoad(f"p{i}", sessions, 6, 0.0, connections=n, max_connections=cap) for i, n in enumerate(connections))


def test_more_pods_before_the_connections_reach_the_cap() -> None:
    """A pod at MaxConnections closes the next client with 1013 whatever its sessions: with few sessions
    and many idle Speech SDK apps connected, pods are added once the connections on them pass four fifths
    of the cap (500: 400 per pod), and the reason says so."""
    up = decide(policy(), Look(1, connected(450, sessions=1)), None, T0)
    assert (up.replicas, up.max_connections, up.connections) == (2, 500, 450)
    assert up.reason == "1 session, 450 connections on 1 pod (target 400 connections per pod, cap 500): 1 → 2"
    assert decide(policy(), Look(2, connected(400, 400)), None, T0).replicas == 2, "at the target: enough"
    assert decide(policy(), Look(2, connected(401, 400)), None, T0).replicas == 3
    assert decide(policy(maxReplicas=3), Look(2, connected(500, 500)), None, T0).replicas == 3, "bounded by maxReplicas"
    sessions = decide(policy(), Look(1, connected(10, sessions=5)), None, T0)
    assert (sessions.replicas, sessions.reason) == (3, "5 sessions, 10 connections on 1 pod (target 2 per pod): 1 → 3"), \
        "where the sessions need more pods, the reason names their target"


def test_fewer_pods_only_down_to_what_the_connections_need() -> None:
    """900 clients on one pod of three (cap 1000: 800 per pod): the two idle pods are not both removed,
    as the sessions and the busy pods alone would have it."""
    p = policy(scaleDownDelaySeconds=0)
    down = decide(p, Look(3, connected(900, 0, 0, cap=1000)), None, T0)
    assert (down.replicas, down.reason) == (2, "0 sessions, 900 connections on 3 pods (target 800 connections per pod, cap 1000), "
                                               "2 pods enough for 0 s (scaleDownDelaySeconds 0): 3 → 2")
    assert decide(p, Look(2, connected(800, 0, cap=1000)), None, T0).replicas == 1, "at the target: one pod"


def test_the_least_cap_reported_counts_and_older_recognizers_report_none() -> None:
    mixed = (PodLoad("p0", 0, 6, 0.0, connections=90, max_connections=100),
             PodLoad("p1", 0, 6, 0.0, connections=90, max_connections=1000))
    assert decide(policy(), Look(2, mixed), None, T0).replicas == 3, "180 connections, at most 80 per pod"
    old = decide(policy(), Look(1, connected(450, cap=None)), None, T0)
    assert (old.replicas, old.max_connections) == (1, None), "no cap reported: the connections keep their pod, no more"


@pytest.mark.parametrize(("cap", "per_pod"), [(1, 1), (2, 1), (5, 4), (500, 400), (100000, 80000), (None, None)])
def test_the_connection_target_is_four_fifths_of_the_cap(cap: int | None, per_pod: int | None) -> None:
    assert connections_target(cap) == per_pod


@pytest.mark.parametrize(("decoders", "target"), [(1, 1), (2, 1), (3, 2), (5, 4), (6, 4), (12, 9), (None, None)])
def test_the_default_target_is_four_fifths_of_the_decoders(decoders: int | None, target: int | None) -> None:
    assert target_of(policy(targetSessionsPerReplica=None), decoders) == target
    assert target_of(policy(targetSessionsPerReplica=7), decoders) == 7


def test_the_default_target_from_what_pods_report_or_the_spec() -> None:
    p = policy(targetSessionsPerReplica=None)
    assert decide(p, Look(1, pods(9, decoders=6)), None, T0).replicas == 3  # target 4
    assert decide(p, Look(0, demand=True), None, T0, decoders_hint=3).target == 2


# ---- properties -------------------------------------------------------------------------------
policies = st.builds(
    lambda lo, span, target, delay, idle: AutoscalingSpec(minReplicas=lo, maxReplicas=max(1, lo + span),
                                                          targetSessionsPerReplica=target,
                                                          scaleDownDelaySeconds=delay, idleSecondsToZero=idle),
    st.integers(0, 5), st.integers(0, 6), st.none() | st.integers(1, 8), st.integers(0, 600), st.integers(0, 900))
loads = st.lists(st.builds(PodLoad, st.just("p"), st.integers(0, 12), st.integers(1, 12), st.floats(0, 2000), st.integers(0, 20),
                           st.sampled_from((0, 0, 1, 3, 9, 30)), st.none() | st.integers(1, 12)), max_size=8)
looks = st.builds(lambda replicas, ps, silent, demand, unready: Look(replicas, tuple(ps), silent, demand, unready),
                  st.integers(0, 12), loads, st.integers(0, 2), st.booleans(), st.integers(0, 2))
times = st.floats(0, 1000)


@settings(max_examples=3000, deadline=None)
@given(policies, looks, st.none() | times, times)
def test_every_decision_keeps_the_rules(p: AutoscalingSpec, look: Look, since: float | None, ago: float) -> None:
    now = 10_000.0
    lower_since = None if since is None else now - since
    d = decide(p, look, lower_since, now)
    sessions = sum(x.sessions for x in look.pods)
    busy = sum(1 for x in look.pods if x.sessions or x.connections)
    assert d == decide(p, look, lower_since, now), "deterministic"
    assert p.minReplicas <= d.replicas <= p.maxReplicas or (d.replicas == look.replicas and look.replicas <= p.maxReplicas
                                                            and look.replicas >= p.minReplicas)
    assert d.replicas <= p.maxReplicas
    assert d.replicas >= min(p.maxReplicas, max(p.minReplicas, busy)), "never below the pods holding sessions or clients"
    if sessions:
        assert d.replicas >= 1
    connections = sum(x.connections for x in look.pods)
    cap = min((x.max_connections for x in look.pods if x.max_connections), default=None)
    per_pod = max(1, math.floor(cap * 0.8)) if cap else None
    if per_pod and connections:
        assert d.replicas >= min(p.maxReplicas, math.ceil(connections / per_pod)) or (
            d.replicas == look.replicas and look.replicas > p.maxReplicas), "connections kept below four fifths of the cap"
    if d.replicas > look.replicas:
        need = max(math.ceil(sessions / d.target) if sessions and d.target else busy,
                   math.ceil(connections / per_pod) if connections and per_pod else 0)
        floor = max(p.minReplicas, busy, 1 if sessions or look.demand else 0)
        assert d.replicas == min(p.maxReplicas, max(need, floor)), "up: straight to what is needed"
    if d.replicas < look.replicas and look.replicas <= p.maxReplicas:
        assert not look.silent, "no scale-down while a pod's sessions are unknown"
        assert not look.unready, "no scale-down while a pod not ready may hold sessions"
        if d.replicas == 0:
            assert look.pods and len(look.pods) >= look.replicas and not look.demand
            assert min(x.idle_seconds for x in look.pods) >= p.idleSecondsToZero and not sessions
            assert not any(x.connections for x in look.pods), "never to zero under a client connected"
        else:
            assert lower_since is not None and now - lower_since >= p.scaleDownDelaySeconds or p.scaleDownDelaySeconds == 0
    if d.replicas != look.replicas:
        assert d.lower_since is None
        assert f"{look.replicas} → {d.replicas}" in d.reason
    assert d.lower_since is None or d.lower_since <= now
    if look.replicas == 0 and look.demand:
        assert d.replicas >= 1, "a request at the gateway wakes a locale at zero"


#: How the README writes a share of the decoders.
FRACTIONS = {0.8: "⅘"}


def test_readme_autoscaling_table_is_the_api() -> None:
    """README, Autoscaling on sessions: a row for each field of ``spec.autoscaling`` (AutoscalingSpec), in its
    order, none for a field that does not exist, each default the API's; the default of an unset target is
    the share of the decoders :func:`target_of` keeps, at least 1; a recognizer setting a meaning quotes
    (`ConnectionIdleSeconds`, 300 s) has that default."""
    rows = table(README.read_text(), "| field | default | meaning |")
    fields = AutoscalingSpec.model_fields
    assert [code_spans(field) for field, _, _ in rows] == [[name] for name in fields], "a row for each field of AutoscalingSpec, in its order"
    for field, default, meaning in rows:
        name = code_spans(field)[0]
        if fields[name].default is None:
            assert default == f"{FRACTIONS[DEFAULT_TARGET_SHARE]} of the decoders a pod reports, at least 1", name
            assert target_of(AutoscalingSpec(), 1) == 1 and target_of(AutoscalingSpec(), 10) == math.floor(10 * DEFAULT_TARGET_SHARE)
        else:
            assert default == str(fields[name].default), f"{name}: README says {default}, AutoscalingSpec {fields[name].default}"
        shown = {s.key: s.shown.strip("`") for s in KNOWN}
        for key, seconds in re.findall(r"`([A-Za-z:]+)`, (\d+) s\b", meaning):
            assert shown[key] == seconds, f"{name}: README says {key} is {seconds} s, the recognizer declares {shown[key]}"


def readme_output(kind: str, holding: str) -> str:
    """The README's sample output of ``kind`` (its ``<!-- output: KIND -->`` marker) that holds ``holding``."""
    return next(b.text for b in blocks(README.read_text()) if b.marker == ("output", kind) and holding in b.text)


def test_readme_autoscaling_samples_are_the_deciders_words() -> None:
    """README, Autoscaling on sessions: its sample status and its ScaledUp, ScaledDown, ScaledToZero and WokenUp
    events are what :func:`decide` says for the looks they describe, word for word (tests/test_snippets.py checks
    only that the status fits the CRD and that each event's reason is one the operator posts)."""
    target3 = AutoscalingSpec(targetSessionsPerReplica=3)
    one = PodLoad("p0", 7, 4, 0.0, connections=8, max_connections=500)
    up = decide(target3, Look(1, (one,)), None, T0)
    said = {
        ("ScaledUp", up.reason),
        ("ScaledUp", decide(target3, Look(1, (PodLoad("p0", 0, 4, 0.0, connections=450, max_connections=500),)), None, T0).reason),
        ("ScaledDown", decide(target3, Look(3, pods(1, 0, 0, decoders=4)), T0 - 301, T0).reason),
        ("ScaledToZero", decide(AutoscalingSpec(minReplicas=0), Look(1, pods(0, idle=605)), None, T0).reason),
        ("WokenUp", decide(AutoscalingSpec(), Look(0, demand=True), None, T0).reason),
    }
    events = {tuple(line.split(None, 2)[1:]) for line in readme_output("events", "ScaledUp").splitlines()}
    assert said == events, f"README shows {sorted(events - said)}; decide says {sorted(said - events)}"
    status = yaml.safe_load(readme_output("SpeechToText status", "autoscaling:"))["status"]["autoscaling"]
    assert {k: v for k, v in status.items() if k != "lastDecision"} == {
        "replicas": up.replicas, "sessions": up.sessions, "connections": up.connections, "maxConnections": up.max_connections,
        "decoders": up.decoders, "targetSessionsPerReplica": up.target}
    assert {k: v for k, v in status["lastDecision"].items() if k != "time"} == {"previous": 1, "replicas": up.replicas, "reason": up.reason}
