"""The checks' judgements on objects as ``kubectl get -o json`` returns them, and the checks
against the in-memory cluster (tests/e2e/fake.py: a real cluster cannot run here)."""

from __future__ import annotations

import pytest

from . import checks as c
from . import manifests as m
from .fake import FakeCluster, pod

pytestmark = pytest.mark.unit  # no model, server, operator or browser: the quick run (README, Tests)

RUN = m.Run("abc123")
NS = RUN.namespace


def context(cluster: FakeCluster, **timeouts: float) -> c.Context:
    t = c.Timeouts(operator=0.05, ready=0.05, stay_up=0.05, poll=0.01, scale=0.05, delete=0.05, refused=0.05)
    for k, v in timeouts.items():
        setattr(t, k, v)
    cluster.put("namespace", {"metadata": {"name": NS}})
    return c.Context(kube=cluster, run=RUN, timeouts=t, audio=lambda: None, log=lambda _: None)


def test_pod_state_says_why_a_pod_is_not_running() -> None:
    assert c.pod_state(pod("p", ready=False, waiting="ErrImageNeverPull")) == (
        "pod p: Pending, c waiting: ErrImageNeverPull (ErrImageNeverPull detail)"
        " - is the image loaded on every node (--load-image) or pullable from it?")
    assert c.pod_state(pod("p", restarts=2, last_exit=("OOMKilled", 137))) == (
        "pod p: Running, c restarted 2x, last: OOMKilled exit 137, ready")
    unscheduled = pod("p", ready=False)
    unscheduled["status"]["conditions"].append({"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                                "message": "0/1 nodes are available: 1 Insufficient cpu."})
    assert "not scheduled: Unschedulable: 0/1 nodes are available: 1 Insufficient cpu." in c.pod_state(unscheduled)


def test_restarted_finds_restarts_replacements_and_lost_readiness_only() -> None:
    before = [pod("a"), pod("b"), pod("d")]
    assert c.restarted(before, [pod("a"), pod("b"), pod("d"), pod("new")]) == []
    problems = c.restarted(before, [pod("a", restarts=1, last_exit=("Error", 1)), pod("b", uid="other"), pod("d", ready=False)])
    assert problems == ["pod a: Running, c restarted 1x, last: Error exit 1, ready",
                        "pod b was replaced or deleted",
                        "pod d: Running, c running, not ready (no longer ready)"]


def test_warnings_about_picks_the_named_objects_warnings_oldest_first() -> None:
    events = [
        {"type": "Warning", "reason": "Unhealthy", "message": "Liveness probe failed: HTTP probe failed with statuscode: 403",
         "count": 4, "lastTimestamp": "2025-01-01T00:02:00Z", "involvedObject": {"kind": "Pod", "name": "keyed-1"}},
        {"type": "Warning", "reason": "BackOff", "message": "Back-off restarting failed container",
         "lastTimestamp": "2025-01-01T00:01:00Z", "involvedObject": {"kind": "Pod", "name": "keyed-1"}},
        {"type": "Normal", "reason": "Pulled", "involvedObject": {"kind": "Pod", "name": "keyed-1"}},
        {"type": "Warning", "reason": "Unhealthy", "involvedObject": {"kind": "Pod", "name": "someone-else"}},
    ]
    assert c.warnings_about(events, {"keyed-1"}) == [
        "Pod/keyed-1: BackOff: Back-off restarting failed container",
        "Pod/keyed-1: Unhealthy: Liveness probe failed: HTTP probe failed with statuscode: 403 (x4)"]


def test_stt_state_and_leftovers() -> None:
    stt = {"metadata": {"name": "keyed", "namespace": NS}, "status": {"conditions": [
        {"type": "Ready", "status": "False", "reason": "MissingDependency", "message": 'Secret "k" not found'}]}}
    assert c.stt_state(stt) == 'keyed: Ready=False MissingDependency: Secret "k" not found'
    assert "is the operator watching namespace speech-e2e-abc123?" in c.stt_state({"metadata": {"name": "x", "namespace": NS}})
    assert c.leftovers({"services": [{"metadata": {"name": "plain", "deletionTimestamp": "t"}}], "pods": []}) == [
        "services/plain (terminating)"]


def test_stay_up_fails_on_a_restart_with_the_probe_warning_and_the_log() -> None:
    cluster = FakeCluster()
    ctx = context(cluster, stay_up=0.3)
    keyed = pod("keyed-1", labels={"app.kubernetes.io/name": "speech-recognizer", "app.kubernetes.io/instance": "keyed"})
    keyed["metadata"]["namespace"] = NS
    cluster.put("pod", keyed)
    cluster.put("event", {"metadata": {"name": "e1", "namespace": NS}, "type": "Warning", "reason": "Unhealthy",
                          "message": "Liveness probe failed: HTTP probe failed with statuscode: 403",
                          "involvedObject": {"kind": "Pod", "name": "keyed-1"}})

    def restart(*args) -> None:
        if args[0] == "pod" and len([j for j in cluster.journal if j[0] == "get"]) > 8:
            cluster.objects[("pod", NS, "keyed-1")]["status"]["containerStatuses"][0]["restartCount"] = 1

    cluster.hooks["get"] = restart
    with pytest.raises(c.CheckFailed) as exc:
        c.check_stay_up(ctx)
    message = str(exc.value)
    assert message.startswith("within 0 s of being ready: pod keyed-1: Running, c restarted 1x")
    assert "Pod/keyed-1: Unhealthy: Liveness probe failed: HTTP probe failed with statuscode: 403" in message
    assert "log of keyed-1 (previous)" in message


def test_stay_up_passes_when_nothing_changes() -> None:
    cluster = FakeCluster()
    ctx = context(cluster, stay_up=0.05)
    p = pod("op", labels={"app.kubernetes.io/instance": RUN.release, "app.kubernetes.io/component": "operator"})
    p["metadata"]["namespace"] = NS
    cluster.put("pod", p)
    assert c.check_stay_up(ctx) == "1 pods up for 0 s, no restarts"


def test_delete_check_names_the_children_left() -> None:
    cluster = FakeCluster()
    ctx = context(cluster)
    cluster.put("service", {"metadata": {"name": m.PLAIN, "namespace": NS, "labels": {"speech-operator.io/speechtotext": m.PLAIN}}})
    with pytest.raises(c.CheckFailed, match=r"children of the deleted SpeechToTexts gone not within 0 s: left: services/plain"):
        c.check_delete(ctx)
    del cluster.objects[("service", NS, m.PLAIN)]
    assert c.check_delete(ctx) == "Deployments, Services and pods gone"
    assert ("delete", "speechtotext", (m.PLAIN, m.KEYED), NS) in cluster.journal


def test_ready_check_creates_both_and_reports_their_conditions_when_they_do_not_become_ready() -> None:
    cluster = FakeCluster()
    ctx = context(cluster)
    with pytest.raises(c.CheckFailed) as exc:
        c.check_speech_to_texts_ready(ctx)
    assert "both SpeechToTexts Ready not within 0 s: plain: no status yet" in str(exc.value)
    secret = cluster.objects[("secret", NS, m.KEY_SECRET)]
    assert secret["stringData"][m.KEY_FIELD] == ctx.api_key and len(ctx.api_key) == 32
    keyed = cluster.objects[("speechtotext", NS, m.KEYED)]
    assert keyed["spec"]["apiKeySecretRef"] == {"name": m.KEY_SECRET, "key": m.KEY_FIELD}
    assert "apiKeySecretRef" not in cluster.objects[("speechtotext", NS, m.PLAIN)]["spec"]


def test_mismatch_names_the_words_or_the_times_that_differ() -> None:
    from .speech import mismatch

    want = (("오늘 날씨가 좋습니다.", 2_700_000, 18_600_000), ("반갑습니다.", 48_300_000, 10_800_000))
    assert mismatch(list(want), want) is None
    assert mismatch([("오늘 날씨가 좋습니다.", 2_705_000, 18_600_000), want[1]], want) is None  # clock rounding
    assert mismatch([want[0]], want) == ("the Speech SDK got ['오늘 날씨가 좋습니다.'], "
                                         "in-process Vosk says ['오늘 날씨가 좋습니다.', '반갑습니다.']")
    assert mismatch([want[0], ("반갑습니다.", 48_600_000, 10_800_000)], want) == (
        "'반갑습니다.' spans 48600000+10800000 ticks, in-process Vosk says 48300000+10800000 "
        "(same words, other times: not the same decoding)")


def test_the_gateway_checks_say_when_its_pod_is_not_ready() -> None:
    cluster = FakeCluster()
    ctx = context(cluster)
    gateway = pod("gw-1", ready=False, waiting="ImagePullBackOff",
                  labels={"app.kubernetes.io/name": "speech-gateway", "app.kubernetes.io/instance": RUN.release})
    gateway["metadata"]["namespace"] = NS
    cluster.put("pod", gateway)
    for check in (c.check_gateway, c.check_gateway_unknown_locale):
        with pytest.raises(c.CheckFailed) as exc:
            check(ctx)
        assert str(exc.value).startswith("the gateway pod ready not within 0 s: pod gw-1: Pending, c waiting: ImagePullBackOff")
    assert not [j for j in cluster.journal if j[0] == "port_forward"], "no port-forward to a gateway with no ready pod"


REFUSAL = ('the Deployment cannot create pods: pods "claimed-6d5f7c9b8-x2kqz" is forbidden: violates PodSecurity '
           '"restricted:latest": runAsNonRoot != true (container "chown" must not set securityContext.runAsNonRoot=false); '
           'the chown init container runs as root ...: set spec.chownVolumes to false ...')


def operator_of_the_claimed(cluster: FakeCluster, refusal: str = REFUSAL, runs: bool = True) -> None:
    """What the operator and the API server make of the SpeechToText on a PVC, as the suite reads it."""
    def answer(kind: str, name: str, namespace: str | None) -> None:
        stt = cluster.objects.get(("speechtotext", NS, m.ON_A_CLAIM))
        if kind != "speechtotext" or name != m.ON_A_CLAIM or stt is None:
            return
        if stt["spec"].get("chownVolumes") is False:
            conditions = [{"type": "Ready", "status": "True" if runs else "False", "reason": "ReplicasReady" if runs else "ReplicasNotReady",
                           "message": "1/1 replicas ready" if runs else "0/1 replicas ready"}]
        else:
            conditions = [{"type": "Ready", "status": "False", "reason": "PodsNotCreated", "message": refusal},
                          {"type": "Degraded", "status": "True", "reason": "PodsNotCreated", "message": refusal}]
        stt["status"] = {"conditions": conditions}
    cluster.hooks["get_one"] = answer


def test_the_restricted_namespace_check_waits_for_the_refusal_then_turns_chown_off() -> None:
    cluster = FakeCluster()
    ctx = context(cluster)
    operator_of_the_claimed(cluster)
    assert c.check_restricted_namespace(ctx).startswith("refused with the chown step (the Deployment cannot create pods")
    claim = [j for j in cluster.journal if j[:2] == ("apply", "persistentvolumeclaim")]
    assert claim == [("apply", "persistentvolumeclaim", m.OUTPUT_CLAIM)]
    assert ("patch", "speechtotext", m.ON_A_CLAIM, NS, {"spec": {"chownVolumes": False}}) in cluster.journal
    assert ("delete", "speechtotext", (m.ON_A_CLAIM,), NS) in cluster.journal
    assert m.speech_to_text(RUN, m.ON_A_CLAIM, output_claim=m.OUTPUT_CLAIM)["spec"]["output"] == {
        "persistentVolumeClaim": {"claimName": m.OUTPUT_CLAIM}}


def test_the_restricted_namespace_check_fails_saying_what_it_saw() -> None:
    cluster = FakeCluster()
    operator_of_the_claimed(cluster, refusal="the Deployment cannot create pods: violates PodSecurity (no hint)")
    with pytest.raises(c.CheckFailed, match="the refusal does not say what to set: claimed: Ready=False PodsNotCreated"):
        c.check_restricted_namespace(context(cluster))
    cluster = FakeCluster()
    operator_of_the_claimed(cluster, runs=False)
    with pytest.raises(c.CheckFailed, match="claimed Ready with chownVolumes: false not within 0 s: claimed: Ready=False"):
        c.check_restricted_namespace(context(cluster, refused=0.05))
    cluster = FakeCluster()  # an operator that never says why: the wait says what the status was
    with pytest.raises(c.CheckFailed, match="claimed: Degraded, its pods refused by Pod Security not within 0 s"):
        c.check_restricted_namespace(context(cluster, refused=0.05))
