"""The suite's own logic: the step list, what it installs and removes, clean-up on failure and on
an interrupt. Driven against an in-memory cluster (tests/e2e/fake.py says why: a real cluster
cannot run here)."""

from __future__ import annotations

import os
import signal

import pytest

from . import manifests as m
from .checks import CHECKS, Check, CheckFailed, Timeouts
from .cleanup import Cleanup
from .fake import FakeCluster, pod
from .kube import CommandFailed
from .suite import FAIL, INTERRUPTED, PASS, SKIP, Suite

pytestmark = pytest.mark.unit  # no model, server, operator or browser: the quick run (README, Tests)

IMAGES = m.Images(operator="registry.test/speech-operator:e2e-1", recognizer="registry.test/speech-recognizer:e2e-1")
CRDS = m.chart_crds()


def suite(cluster: FakeCluster, checks: tuple[Check, ...], **kw) -> Suite:
    logs: list[str] = kw.pop("logs", [])
    return Suite(connect=lambda cleanup: cluster, deliver=lambda kube: IMAGES, audio=lambda: None,
                 run=m.Run("abc123"), timeouts=Timeouts(operator=0.2, ready=0.2, stay_up=0, poll=0.01, scale=0.2, delete=0.2),
                 checks=checks, log=logs.append, **kw)


def leftover(cluster: FakeCluster) -> list[tuple]:
    """Everything in the cluster apart from what was there before the run (the CRDs a test put)."""
    return [k for k in cluster.objects if k[0] != "customresourcedefinition"] + list(cluster.releases)


def ok(ctx) -> str:
    return "fine"


def creates_speech_to_texts(ctx) -> str:
    for name in (m.PLAIN, m.KEYED):
        ctx.kube.apply(m.speech_to_text(ctx.run, name, keyed=name == m.KEYED))
    return "created"


def test_passing_run_installs_into_its_namespace_and_removes_everything() -> None:
    cluster = FakeCluster()
    report = suite(cluster, (Check("creates", creates_speech_to_texts), Check("then", ok, ("creates",)))).execute()
    assert [(r.name, r.status) for r in report.results] == [
        ("the cluster answers", PASS), ("both images are on the cluster", PASS),
        ("the chart installs into a namespace of its own", PASS), ("creates", PASS), ("then", PASS)]
    assert report.passed and report.exit_status() == 0 and report.lines()[-1].startswith("e2e: PASSED")
    install = next(j for j in cluster.journal if j[0] == "helm_install")
    assert install[1:3] == ("e2e-abc123", "speech-e2e-abc123")
    assert install[3]["image"]["pullPolicy"] == "IfNotPresent"
    assert install[3]["watch"] == {"mode": "namespaced", "namespaces": ["speech-e2e-abc123"]}
    assert not cluster.objects and not cluster.releases, "the run left objects behind"
    # undone last first: the SpeechToTexts while the operator runs, then the release, its CRDs, the namespace
    undo = [j[:2] for j in cluster.journal if j[0] in ("helm_uninstall", "delete")]
    assert undo == [("delete", "speechtotext"), ("helm_uninstall", "e2e-abc123"),
                    ("delete", "customresourcedefinition"), ("delete", "namespace")]


def test_crds_that_were_there_before_are_kept() -> None:
    cluster = FakeCluster()
    for crd in CRDS:
        cluster.put("customresourcedefinition", {"metadata": {"name": crd}})
    report = suite(cluster, (Check("creates", creates_speech_to_texts),)).execute()
    assert report.passed
    assert cluster.names("customresourcedefinition") == sorted(CRDS)
    assert not leftover(cluster)
    chart_step = report.results[2]
    assert "CRDs already installed, used as they are and kept" in chart_step.detail


def test_only_the_crds_the_run_installed_are_removed() -> None:
    cluster = FakeCluster()
    cluster.put("customresourcedefinition", {"metadata": {"name": CRDS[0]}})
    suite(cluster, (Check("ok", ok),)).execute()
    assert cluster.names("customresourcedefinition") == [CRDS[0]]


def test_a_failing_check_skips_what_needs_it_runs_the_rest_and_cleans_up() -> None:
    def fails(ctx) -> str:
        raise CheckFailed("the operator pod is in CrashLoopBackOff")

    cluster = FakeCluster()
    checks = (Check("a", creates_speech_to_texts), Check("b", fails, ("a",)), Check("c", ok, ("b",)),
              Check("d", ok, ("a",)))
    report = suite(cluster, checks).execute()
    assert [(r.name, r.status) for r in report.results[3:]] == [("a", PASS), ("b", FAIL), ("c", SKIP), ("d", PASS)]
    assert report.results[4].detail == "the operator pod is in CrashLoopBackOff"
    assert report.results[5].detail == "needs: b"
    assert report.exit_status() == 1
    assert report.lines()[-1] == "e2e: FAILED: 2 of 7 steps did not pass"
    assert "FAIL    b: the operator pod is in CrashLoopBackOff" in report.lines()
    assert not cluster.objects and not cluster.releases


def test_a_bug_in_a_check_is_that_checks_failure_and_the_rest_go_on() -> None:
    cluster = FakeCluster()
    report = suite(cluster, (Check("buggy", lambda ctx: {}["x"]), Check("next", ok))).execute()
    assert [(r.status, r.detail) for r in report.results[3:]] == [(FAIL, "KeyError: 'x'"), (PASS, "fine")]
    assert not cluster.objects


def test_a_failed_install_is_undone_and_no_check_runs() -> None:
    cluster = FakeCluster()

    def broken_install(*args) -> None:
        # helm created the CRDs, then failed on the operator's objects
        for crd in CRDS:
            cluster.put("customresourcedefinition", {"metadata": {"name": crd}})
        raise CommandFailed("`helm install` exited 1: Deployment.apps is invalid")

    cluster.hooks["helm_install"] = broken_install
    report = suite(cluster, (Check("never", ok),)).execute()
    assert [r.status for r in report.results] == [PASS, PASS, FAIL]
    assert "Deployment.apps is invalid" in report.results[2].detail
    assert not cluster.objects, "the namespace or CRDs of a failed install were left"
    assert ("helm_uninstall", "e2e-abc123", "speech-e2e-abc123") in cluster.journal


def test_images_that_cannot_be_loaded_stop_the_run_before_anything_is_created() -> None:
    cluster = FakeCluster()

    def deliver(kube) -> m.Images:
        raise CommandFailed("`kind load image-archive /tmp/x.tar` exited 1: no nodes found")

    s = suite(cluster, (Check("never", ok),))
    s.deliver = deliver
    report = s.execute()
    assert [r.status for r in report.results] == [PASS, FAIL] and "no nodes found" in report.results[1].detail
    assert not [j for j in cluster.journal if j[0] in ("create", "helm_install")]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_mid_check_cleans_up_and_says_interrupted(signum: int) -> None:
    """Ctrl-C (SIGINT) or a cancelled CI job (SIGTERM) in the middle of a check: everything the run
    created goes, the report says INTERRUPTED (exit 130), never PASSED."""
    def interrupted(ctx) -> str:
        creates_speech_to_texts(ctx)
        os.kill(os.getpid(), signum)  # delivered to this (main) thread before kill() returns
        raise AssertionError("the signal did not interrupt the check")

    cluster = FakeCluster()
    before = signal.getsignal(signal.SIGTERM)
    # Ctrl-C reaches a program only where SIGINT is not ignored: a shell ignores it in what it starts in the
    # background without job control (pytest run as `... &` from a script), and Python then installs no
    # KeyboardInterrupt handler. Give this test the terminal's case whatever started pytest.
    ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    if ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        report = suite(cluster, (Check("streams", interrupted), Check("after", ok))).execute()
    finally:
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    assert report.interrupted and report.exit_status() == INTERRUPTED == 130
    assert report.lines()[-1] == "e2e: INTERRUPTED"
    assert [r.name for r in report.results][-1] == "streams" and report.results[-1].status == FAIL
    assert not cluster.objects and not cluster.releases
    assert signal.getsignal(signal.SIGTERM) is before, "the suite's signal handlers outlived it"


def test_one_interrupt_during_clean_up_does_not_stop_it_and_a_second_one_does() -> None:
    logs: list[str] = []
    cleanup = Cleanup(logs.append)
    done: list[str] = []
    cleanup.push("first", lambda: done.append("first"), "undo first by hand")
    cleanup.push("second", lambda: (os.kill(os.getpid(), signal.SIGINT), done.append("second")), "undo second by hand")
    assert cleanup.run() == [] and done == ["second", "first"]
    assert any("interrupt again" in line for line in logs)

    done.clear()
    cleanup.push("first", lambda: done.append("first"), "undo first by hand")
    cleanup.push("second", lambda: [os.kill(os.getpid(), signal.SIGINT) for _ in range(2)], "undo second by hand")
    failures = cleanup.run()
    assert done == [] and failures == ["not cleaned up (interrupted): second", "not cleaned up (interrupted): first"]
    assert "undo second by hand\n  undo first by hand" in logs[-1]


def test_speech_to_texts_the_operator_does_not_release_lose_their_finalizer() -> None:
    """A crash-looping operator never removes its finalizer; the namespace must still go."""
    cluster = FakeCluster()

    def stuck(ctx) -> str:
        stt = m.speech_to_text(ctx.run, m.PLAIN)
        stt["metadata"]["finalizers"] = ["kopf.zalando.org/KopfFinalizerMarker"]
        ctx.kube.apply(stt)
        return "created"

    logs: list[str] = []
    report = suite(cluster, (Check("stuck", stuck),), logs=logs).execute()
    assert report.passed, report.lines()
    assert ("patch", "speechtotext", m.PLAIN, "speech-e2e-abc123", {"metadata": {"finalizers": None}}) in cluster.journal
    assert any("did not release ['plain']" in line for line in logs)
    assert not cluster.objects


def test_a_clean_up_failure_fails_the_run_and_says_what_to_remove() -> None:
    cluster = FakeCluster()

    def refuse(kind, names, namespace) -> None:
        if kind == "namespace":
            raise CommandFailed("`kubectl delete namespace` exited 1: forbidden")

    cluster.hooks["delete"] = refuse
    report = suite(cluster, (Check("ok", ok),)).execute()
    assert all(r.status == PASS for r in report.results) and not report.passed and report.exit_status() == 1
    assert report.cleanup_failures == ["delete namespace speech-e2e-abc123: `kubectl delete namespace` exited 1: forbidden"]
    assert report.lines()[-1] == "e2e: FAILED: 0 of 4 steps did not pass, clean-up incomplete"


def test_keep_leaves_everything_and_prints_how_to_remove_it() -> None:
    cluster = FakeCluster()
    logs: list[str] = []
    report = suite(cluster, (Check("creates", creates_speech_to_texts),), keep=True, logs=logs).execute()
    assert report.passed
    assert cluster.names("namespace") == ["speech-e2e-abc123"] and cluster.releases
    removal = logs[-1]
    assert removal.splitlines()[1:] == [
        "  kubectl delete speechtotexts --all -n speech-e2e-abc123",
        "  helm uninstall e2e-abc123 --namespace speech-e2e-abc123",
        f"  kubectl delete customresourcedefinition {' '.join(CRDS)}",
        "  kubectl delete namespace speech-e2e-abc123"]


def test_the_day_one_steps_in_order_and_what_each_needs() -> None:
    """The acceptance's list, each a named check; everything after the SpeechToTexts needs them Ready."""
    assert [(c.name, c.needs) for c in CHECKS] == [
        ("the operator pod runs", ()),
        ("a SpeechToText without and one with an API key become Ready", ("the operator pod runs",)),
        ("the operator and recognizer pods stay up with no restarts", ("a SpeechToText without and one with an API key become Ready",)),
        ("the unmodified Speech SDK through Service plain matches in-process Vosk", ("a SpeechToText without and one with an API key become Ready",)),
        ("the unmodified Speech SDK through Service keyed (API key) matches in-process Vosk", ("a SpeechToText without and one with an API key become Ready",)),
        ("the unmodified Speech SDK through the gateway's Service matches in-process Vosk for each locale", ("a SpeechToText without and one with an API key become Ready",)),
        ("the gateway answers a locale nobody serves with 400 naming the locales", ("a SpeechToText without and one with an API key become Ready",)),
        ("kubectl scale changes the pods", ("a SpeechToText without and one with an API key become Ready",)),
        ("a stream in progress when its pod is deleted gets all its results", ("a SpeechToText without and one with an API key become Ready",)),
        ("deleting the SpeechToTexts removes their children", ("a SpeechToText without and one with an API key become Ready",)),
        ("in a namespace enforcing the restricted Pod Security Standard, a PVC's chown step is refused and said so; "
         "chownVolumes: false runs", ("the operator pod runs",)),
    ]
    assert Timeouts().stay_up == 120


def test_the_real_checks_on_a_cluster_whose_operator_crash_loops() -> None:
    """The day-one list as it runs: the first check fails with the pod's state and its last log,
    everything else is not run (never passed), and the run cleans up."""
    cluster = FakeCluster()
    cluster.operator_pods = [pod("op-1", ready=False, restarts=3, waiting="CrashLoopBackOff", last_exit=("Error", 1))]
    report = suite(cluster, CHECKS).execute()
    statuses = [(r.name, r.status) for r in report.results[3:]]
    assert statuses[0] == (CHECKS[0].name, FAIL) and all(s == SKIP for _, s in statuses[1:])
    detail = report.results[3].detail
    assert "the operator pod ready not within 0 s" in detail
    assert "c waiting: CrashLoopBackOff" in detail and "restarted 3x, last: Error exit 1" in detail
    assert "log of op-1 (previous)" in detail
    assert not cluster.objects and not cluster.releases
