"""A SpeechToText too large for kopf's record of it (speech_operator.record), on kmock with the API server's limit.

kmock stores annotations of any size; ``harness.kube.Emulator`` answers a write whose object would carry more than
256 KiB of annotations with the API server's 422 ("metadata.annotations: Too long: must have at most 262144 bytes"),
as it is the API server's own check that kopf's record runs into.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import kopf
import pytest
from conftest import NAMESPACE, condition, deployment, quiet

from speech_operator import conditions, record
from speech_operator.kube import KubeError
from speech_operator.record import ANNOTATIONS_MAX_BYTES

if TYPE_CHECKING:
    from conftest import Cluster

RECORD = "speech-operator.io/last-handled-configuration"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def applied(**spec: Any) -> dict[str, Any]:
    """A SpeechToText as ``kubectl apply`` (client-side) sends it: with its own copy of the object in an annotation."""
    obj: dict[str, Any] = {"apiVersion": "speech-operator.io/v1alpha1", "kind": "SpeechToText",
                           "metadata": {"name": "en-us", "namespace": NAMESPACE},
                           "spec": {"locale": "en-US", "eula": "accept", "replicas": 1, **spec}}
    return {**obj, "metadata": {**obj["metadata"], "annotations": {LAST_APPLIED: json.dumps(obj) + "\n"}}}


def pinned_to(nodes: int) -> dict[str, Any]:
    """An affinity that lists ``nodes`` node names (63 characters each) the pods may run on."""
    names = [f"node-{i:05d}-" + "x" * 52 for i in range(nodes)]
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{
        "matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": names}]}]}}}


def _records(cluster: Cluster) -> list[int]:
    """The sizes of the records the operator (kopf) wrote, in order."""
    return [len(r.data["metadata"]["annotations"][RECORD]) for r in cluster.sent("PATCH", "speechtotexts", "en-us")
            if isinstance(r.data, dict) and (r.data.get("metadata") or {}).get("annotations", {}).get(RECORD)]


def test_a_record_from_before_is_taken_off_when_the_new_one_would_not_fit() -> None:
    """kopf's store, on its own Body and Patch: a record that fits is written as kopf writes it; one that would not is
    not, and the record of an earlier, smaller spec is taken off (it no longer says what was handled)."""
    small, big = applied(affinity=pinned_to(3)), applied(affinity=pinned_to(2100))
    patch = kopf.Patch()
    record.STORAGE.store(body=kopf.Body(small), patch=patch, essence=record.STORAGE.build(body=kopf.Body(small)))
    written = patch["metadata"]["annotations"][RECORD]
    assert json.loads(written) == {"spec": small["spec"]} and written.endswith("\n")
    grown = kopf.Body({**big, "metadata": {**big["metadata"], "annotations": {
        **big["metadata"]["annotations"], RECORD: written}}})
    patch = kopf.Patch()
    record.STORAGE.store(body=grown, patch=patch, essence=record.STORAGE.build(body=grown))
    assert patch["metadata"]["annotations"] == {RECORD: None}
    patch = kopf.Patch()
    record.STORAGE.store(body=kopf.Body(big), patch=patch, essence=record.STORAGE.build(body=kopf.Body(big)))
    assert not patch, "nothing to take off, nothing written"


async def test_the_emulator_refuses_annotations_over_the_api_servers_limit(apiserver: Cluster) -> None:
    """What the test below relies on: the API server's 422, on a create and on a merge patch, and nothing stored."""
    big = {"example.com/notes": "x" * (ANNOTATIONS_MAX_BYTES - len("example.com/notes") + 1)}
    with pytest.raises(KubeError) as refused:
        await apiserver.api.create(apiserver.stt_url(), {**applied(), "metadata": {"name": "en-us", "annotations": big}})
    assert refused.value.status == 422 and refused.value.message == (
        'SpeechToText.speech-operator.io "en-us" is invalid: metadata.annotations: Too long: must have at most 262144 '
        "bytes")
    assert await apiserver.api.get(apiserver.stt_url("en-us")) is None
    await apiserver.api.create(apiserver.stt_url(), applied())
    with pytest.raises(KubeError) as refused:
        await apiserver.api.patch(apiserver.stt_url("en-us"), {"metadata": {"annotations": big}})
    assert refused.value.status == 422
    assert "example.com/notes" not in ((await apiserver.api.get(apiserver.stt_url("en-us")) or {})["metadata"]
                                       .get("annotations") or {})


async def test_a_spec_too_large_for_the_record_is_said_once_and_applied_once_it_is_smaller(
        cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    """kubectl apply of a SpeechToText whose affinity lists 2100 nodes: the object (136 KiB of spec, as much again in
    kubectl's annotation) is taken, but kopf's record of it would take its annotations past 256 KiB. The status says
    so (Degraded, Ready and Progressing: SpecTooLarge, naming spec.affinity), with one Warning event and one WARNING
    line; nothing is created, and kopf never sends the record the API server would refuse. Once the affinity is
    shorter, the spec is applied, the record written and the status recovers.

    Before: the children were made, the status said nothing, and kopf's patch of its 136 KiB record was answered 422,
    logged as an ERROR with a traceback ("Throttling for 1 seconds due to an unexpected error") and sent again, without
    end (twice in the first 8 s, measured)."""
    big = applied(affinity=pinned_to(2100))
    assert ANNOTATIONS_MAX_BYTES / 2 < len(json.dumps(big["spec"])) < ANNOTATIONS_MAX_BYTES / 2 + 16 * 1024
    await cluster.api.create(cluster.stt_url(), big)

    async def too_large() -> dict[str, Any] | None:
        c = await condition(cluster, "Degraded")
        return c if c.get("reason") == conditions.SPEC_TOO_LARGE else None
    degraded = await cluster.eventually(too_large)
    message = degraded["message"]
    assert degraded["status"] == "True" and message.startswith(
        f"the operator's record of the spec it handles (annotation {RECORD}, "), message
    assert (f"more than the {ANNOTATIONS_MAX_BYTES - 4096} it leaves them (the API server allows {ANNOTATIONS_MAX_BYTES}, "
            "and the operator keeps 4096 for its bookkeeping): nothing is created or changed") in message, message
    assert message.endswith(f"; kubectl apply keeps a copy of the object in the annotation {LAST_APPLIED} "
                            f"({len(big['metadata']['annotations'][LAST_APPLIED])} bytes), kubectl apply --server-side "
                            "none"), message
    assert "; the largest: spec.affinity (" in message and "metadata.annotations" not in message, message
    assert "spec.eula" not in message, "only parts of 1 KiB or more are named"
    for type_ in ("Ready", "Progressing"):
        c = await condition(cluster, type_)
        assert (c["status"], c["reason"]) == ("False", conditions.SPEC_TOO_LARGE), c
    await cluster.eventually(lambda: quiet(cluster))  # every reconcile its events bring done (no re-check: it is refused)
    assert await deployment(cluster) is None, "nothing is created"
    assert _records(cluster) == [], "no record the API server would refuse is sent"
    assert [e["type"] for e in await cluster.events() if e["reason"] == conditions.SPEC_TOO_LARGE] == ["Warning"]
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 1 and conditions.SPEC_TOO_LARGE in warned[0] and "spec.affinity" in warned[0], warned
    assert not any(r.exc_info for r in caplog.records), "no traceback"

    small = applied(affinity=pinned_to(3))
    await cluster.api.patch(cluster.stt_url("en-us"), {"metadata": small["metadata"], "spec": small["spec"]})
    assert await cluster.eventually(lambda: deployment(cluster)), "applied once smaller"

    async def recovered() -> bool:
        return (await condition(cluster, "Degraded")).get("status") == "False"
    await cluster.eventually(recovered)
    await cluster.event("Recovered")
    assert await cluster.eventually(lambda: _records_async(cluster)), "the record is written"
    assert all(size < ANNOTATIONS_MAX_BYTES / 8 for size in _records(cluster))


async def _records_async(cluster: Cluster) -> list[int]:
    return _records(cluster)


async def test_a_spec_too_large_has_its_status_written_once(cluster: Cluster) -> None:
    """Without a record kopf handles each event of the SpeechToText as its creation, and its first handling brings two
    more: the operator's status write, and kopf's patch of its marker (speech-operator.io/kopf-managed, which it puts
    beside any record it keeps). The status says the same at each, so it is written once: its total of the annotations
    counts the marker whether it is on the object yet or not, as the record's write would carry it. Before, the first
    handling counted without it and the next with it (34 bytes more): the status was written again, and on an API
    server that write's event was a third "creation" (kopf skips events older than its own patch; kmock keeps one
    resourceVersion, so kopf handles them all here: 7 creations in 0.2 s, then none)."""
    await cluster.api.create(cluster.stt_url(), applied(affinity=pinned_to(2100)))

    async def too_large() -> dict[str, Any] | None:
        c = await condition(cluster, "Degraded")
        return c if c.get("reason") == conditions.SPEC_TOO_LARGE else None
    message = (await cluster.eventually(too_large))["message"]
    await cluster.eventually(lambda: quiet(cluster))  # the reconciles of its events done, kopf's marker's included
    assert len(cluster.sent("PATCH", "speechtotexts", "en-us", "status")) == 1, "its status is written once"
    live = await cluster.api.get(cluster.stt_url("en-us")) or {}
    annotations = live["metadata"]["annotations"]
    assert annotations.get("speech-operator.io/kopf-managed") == "yes", "kopf's marker is on the object"
    size = int(message.split(f"(annotation {RECORD}, ", 1)[1].split(" bytes)", 1)[0])
    total = sum(len(k.encode()) + len(v.encode()) for k, v in annotations.items()) + len(RECORD) + size
    assert f"would take the object's annotations to {total} bytes" in message, (total, message)


async def test_a_record_leaves_room_for_kopfs_progress_of_a_handler_tried_again(
        cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    """kopf keeps its progress of a handler that failed and is tried again (when it started, its retries, the error) in
    an annotation too, beside the record: a record that left the annotations less room than that had that write
    refused as well. A SpeechToText (no kubectl copy) whose record takes its annotations to 100 bytes short of 256 KiB
    is changed while the API server answers the Deployment's write 503. Before: it was applied with its record, and at
    the change kopf's patch of its progress (447 bytes) was answered 422 "metadata.annotations: Too long", an ERROR
    with a traceback ("Throttling for 1 seconds due to an unexpected error") twice in 3 s, where a 503 is one line and
    a retry. Now the record leaves kopf room for it, and this one is Degraded, SpecTooLarge, as a record that does not
    fit is."""
    def stt(notes: int) -> dict[str, Any]:  # its own annotation is in the record too: two bytes more a character
        return {"apiVersion": "speech-operator.io/v1alpha1", "kind": "SpeechToText",
                "metadata": {"name": "en-us", "namespace": NAMESPACE, "annotations": {"example.com/notes": "x" * notes}},
                "spec": {"locale": "en-US", "eula": "accept", "replicas": 1}}
    notes = (ANNOTATIONS_MAX_BYTES - 100 - record.STORAGE.after(kopf.Body(stt(0)))[1]) // 2
    assert ANNOTATIONS_MAX_BYTES - 101 <= record.STORAGE.after(kopf.Body(stt(notes)))[1] <= ANNOTATIONS_MAX_BYTES - 100
    await cluster.api.create(cluster.stt_url(), stt(notes))

    async def handled() -> bool:
        live = await cluster.api.get(cluster.stt_url("en-us")) or {}
        return "observedGeneration" in (live.get("status") or {})
    await cluster.eventually(handled)
    before = (await condition(cluster, "Degraded")).get("message")
    cluster.emulator.refusals[("deployments", "en-us")] = (503, "ServiceUnavailable", "the server is shutting down")
    await cluster.api.patch(cluster.stt_url("en-us"), {"metadata": {"annotations": {"example.com/notes": "x" * (notes + 1)}},
                                                       "spec": {"replicas": 2}})

    async def changed_or_failed() -> bool:  # the message gives the record's bytes: one more
        return (any(r.levelno >= logging.ERROR and r.exc_info for r in caplog.records)
                or (await condition(cluster, "Degraded")).get("message") != before)
    await cluster.eventually(changed_or_failed)
    assert not any(r.exc_info for r in caplog.records), [r.getMessage() for r in caplog.records if r.exc_info]
    degraded = await condition(cluster, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", conditions.SPEC_TOO_LARGE), degraded
    assert await deployment(cluster) is None, "nothing is created"
