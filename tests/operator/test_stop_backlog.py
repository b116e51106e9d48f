"""The operator's stop with changes of its children still queued in kopf (operator/speech_operator/kopf_exit.py's
``stopping``, :func:`speech_operator.handlers.child_changed`): the real kopf operator against kmock."""

from __future__ import annotations

import collections
import logging
from typing import TYPE_CHECKING, Any

import pytest
from conftest import NAMESPACE, deployment, operators, quiet

from speech_operator import api
from speech_operator.handlers import HANDLER_GRACE_SECONDS
from tests.support import Unstarved

if TYPE_CHECKING:
    from conftest import Cluster

NAMES = {"en-us": "en-US", "de-de": "de-DE", "fr-fr": "fr-FR"}
#: The edits of each Deployment made before the stop: each a change the operator puts back (its replicas).
EDITS = 6
#: How late kmock answers each of the operator's requests: a reconcile takes a second or more, so the edits' events are
#: still queued when the operator stops.
LATE_SECONDS = 0.25


def stt(name: str, locale: str) -> dict[str, Any]:
    return {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"locale": locale, "eula": "accept", "replicas": 1}}


async def test_changes_of_children_queued_at_the_stop_are_left_to_the_next_start(
        cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    """Three SpeechToTexts, each Deployment edited six times (a change the operator puts back) on a slow API server,
    then the stop (as SIGTERM): the reconcile under way of each finishes, and no other begins; the events still queued
    are left (the next replica's start resumes each SpeechToText). Before, each queued event was a whole reconcile at
    the stop (its reads, its writes), and the stop took most of the grace (HANDLER_GRACE_SECONDS)."""
    caplog.set_level(logging.DEBUG, logger="kopf.objects")
    for name, locale in NAMES.items():
        await cluster.api.create(cluster.stt_url(), stt(name, locale))

    async def reconciled() -> bool:
        for name in NAMES:
            body = await cluster.api.get(cluster.stt_url(name)) or {}
            if (body.get("status") or {}).get("observedGeneration") != 1 or await deployment(cluster, name) is None:
                return False
        return True
    await cluster.eventually(reconciled)
    await cluster.eventually(lambda: quiet(cluster, counted=operators))
    cluster.emulator.late = LATE_SECONDS
    edited = len(list(cluster.emulator))
    for replicas in range(2, 2 + EDITS):
        for name in NAMES:
            await cluster.api.patch(cluster.url("apps/v1", "deployments", name), {"spec": {"replicas": replicas}})

    async def reconciling() -> bool:
        return any(operators(r) and r.method == "GET" and r.resource.plural == api.PLURAL
                   for r in list(cluster.emulator)[edited:])
    await cluster.eventually(reconciling)
    stopped = len(list(cluster.emulator))
    assert cluster.stop_operator is not None
    stopwatch = Unstarved()  # the operator's thread is this process': a loaded machine stretches its stop by the clock
    try:
        took = await cluster.stop_operator()
        unstarved = stopwatch.read()
    finally:
        stopwatch.close()
    after = [r for r in list(cluster.emulator)[stopped:] if operators(r)]
    begun = collections.Counter(r.name for r in after if r.method == "GET" and r.resource.plural == api.PLURAL)
    writes = collections.Counter(f"{r.method.name} {r.resource.plural}" for r in after if r.method in ("POST", "PATCH", "PUT"))
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("kopf")]
    left = [r for r in caplog.records if r.getMessage() == "left: the operator is stopping"]
    print(f"stop {took:.2f} s ({unstarved:.2f} s not waiting for a CPU); reconciles begun after it {dict(begun)}; writes {dict(writes)}; left {len(left)}")
    assert not warnings, warnings
    # at most one reconcile per SpeechToText begun as the stop was sent (the operator sees it a moment later)
    assert all(count <= 1 for count in begun.values()), begun
    assert left, "no event was left"
    assert unstarved < HANDLER_GRACE_SECONDS / 2, (took, unstarved)
