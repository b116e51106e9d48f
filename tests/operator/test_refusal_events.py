"""What a refused spec tells ``kubectl describe stt`` and the operator's log: one Warning event and one WARNING line per
refusal in other words at a new generation of the spec (its user mended one cause and made another), none per re-check
and none at a restart. The real kopf operator against kmock (harness/kube.py)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import pytest
from conftest import NAMESPACE, Operator, condition, quiet

from speech_operator import api

if TYPE_CHECKING:
    from conftest import Cluster


def stt(name: str = "en-us", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"locale": "en-US", "eula": "accept", "replicas": 1, **spec}}


#: Per reason: a spec refused for one cause, the change that mends it and makes another, and words of each refusal.
ANEW = {
    "InvalidSpec": ({"settings": {"MaxAudioSeconds": "two minutes"}},
                    {"settings": {"MaxAudioSeconds": None, "ReuseRecognizers": "maybe"}},
                    "MaxAudioSeconds='two minutes' is not a number", "'maybe' is not a boolean"),
    "PolicyViolation": ({"image": "elsewhere.example/recognizer"}, {"image": "other.example/recognizer"},
                        'image "elsewhere.example/recognizer"', 'image "other.example/recognizer"'),
}


async def warned(cluster: Cluster, reason: str) -> list[str]:
    """The messages of the Warning events of ``reason`` the API server holds, oldest first."""
    return [e["message"] for e in await cluster.events() if (e["type"], e["reason"]) == ("Warning", reason)]


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


async def degraded_saying(cluster: Cluster, words: str, name: str = "en-us") -> dict[str, Any] | None:
    found = await condition(cluster, "Degraded", name)
    return found if found.get("status") == "True" and words in found.get("message", "") else None


@pytest.mark.parametrize("reason", list(ANEW))
async def test_a_spec_refused_again_in_other_words_is_a_new_warning_and_line_once(
        cluster: Cluster, caplog: pytest.LogCaptureFixture, reason: str) -> None:
    """Refused for one field, then (a new generation) for another: a second Warning event and WARNING line say the new
    cause, both events kept (``kubectl describe`` ends on the cause that holds); a third generation refused in the same
    words says nothing more, and the operator falls quiet. Before, only the turn to Degraded (or to another reason) was
    said: the status' message changed, while the events and the log still named the mended field."""
    first, second, said_first, said_second = ANEW[reason]
    await cluster.api.create(cluster.stt_url(), stt(**first))
    one = (await cluster.eventually(lambda: degraded_saying(cluster, said_first)))["message"]
    await cluster.api.patch(cluster.stt_url("en-us"), {"spec": second})
    other = (await cluster.eventually(lambda: degraded_saying(cluster, said_second)))["message"]
    await cluster.api.patch(cluster.stt_url("en-us"), {"spec": {"replicas": 2}})  # refused in the same words

    async def third_seen() -> bool:
        return (await condition(cluster, "Degraded")).get("observedGeneration") == 3
    await cluster.eventually(third_seen)
    await cluster.eventually(lambda: quiet(cluster))
    assert await warned(cluster, reason) == [one, other]
    assert lines(caplog) == [f"SpeechToText {NAMESPACE}/en-us is degraded ({reason}): {one}",
                             f"SpeechToText {NAMESPACE}/en-us is degraded ({reason}): {other}"]


DENIED = 'admission webhook "validation.gatekeeper.sh" denied the request: [required-labels] you must provide labels: {}'


async def test_a_write_refused_again_in_other_words_is_a_new_warning_at_a_new_generation_only(
        cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    """A webhook refuses the Deployment; its words change with no change of the spec (its policy edited, or words of its
    own per request): the re-checks write them in the status, and say nothing more, as many times as they run. The
    spec then changes, refused in other words: one Warning event and one WARNING line. Before, none."""
    key = ("deployments", "en-us")
    cluster.emulator.refusals[key] = (400, "BadRequest", DENIED.format('{"team"}'))
    await cluster.api.create(cluster.stt_url(), stt())
    one = (await cluster.eventually(lambda: degraded_saying(cluster, '{"team"}')))["message"]
    cluster.emulator.refusals[key] = (400, "BadRequest", DENIED.format('{"owner"}'))
    await cluster.eventually(lambda: degraded_saying(cluster, '{"owner"}'))
    looked = len(cluster.sent("PATCH", "deployments", "en-us"))

    async def rechecked() -> bool:  # three re-checks since, each refused in these words
        return len(cluster.sent("PATCH", "deployments", "en-us")) >= looked + 3
    await cluster.eventually(rechecked)
    assert await warned(cluster, "WriteRefused") == [one]

    cluster.emulator.refusals[key] = (400, "BadRequest", DENIED.format('{"cost-center"}'))
    await cluster.api.patch(cluster.stt_url("en-us"), {"spec": {"labels": {"team": "speech", "owner": "ops"}}})
    other = (await cluster.eventually(lambda: degraded_saying(cluster, '{"cost-center"}')))["message"]

    async def said() -> list[str]:
        found = await warned(cluster, "WriteRefused")
        return found if len(found) > 1 else []
    assert await cluster.eventually(said) == [one, other]
    assert [x for x in lines(caplog) if "WriteRefused" in x] == [
        f"SpeechToText {NAMESPACE}/en-us is degraded (WriteRefused): {one}",
        f"SpeechToText {NAMESPACE}/en-us is degraded (WriteRefused): {other}"]


async def test_a_restart_posts_nothing_for_specs_still_refused(apiserver: Cluster) -> None:
    """Two SpeechToTexts refused (InvalidSpec, PolicyViolation), one Warning event each; the operator restarts (its
    process stopped as the kubelet stops it, another started) and resumes both: no event, nothing written. A restart
    with every spec the same says nothing again, where a new event per refused SpeechToText per restart would have
    been one more line in each one's ``kubectl describe`` at each rollout of the operator."""
    await apiserver.api.create(apiserver.stt_url(), stt(**ANEW["InvalidSpec"][0]))
    await apiserver.api.create(apiserver.stt_url(), stt("de-de", image="elsewhere.example/recognizer"))

    async def both_said() -> bool:
        return len([e for e in await apiserver.events() if e["type"] == "Warning"]) == 2
    async with Operator("run", "--namespace", NAMESPACE):
        await apiserver.eventually(lambda: degraded_saying(apiserver, ANEW["InvalidSpec"][2]), 30)
        await apiserver.eventually(lambda: degraded_saying(apiserver, ANEW["PolicyViolation"][2], "de-de"), 30)
        await apiserver.eventually(both_said)
        await apiserver.eventually(lambda: quiet(apiserver), 30)
    said = await apiserver.events()
    first = len(list(apiserver.emulator))

    async def resumed() -> bool:  # the second operator read both SpeechToTexts
        later = list(apiserver.emulator)[first:]
        return {r.name for r in later if r.method == "GET" and r.resource is not None
                and r.resource.plural == api.PLURAL and r.name} == {"en-us", "de-de"}
    async with Operator("run", "--namespace", NAMESPACE) as op:
        await apiserver.eventually(resumed, 30)
        await apiserver.eventually(lambda: quiet(apiserver), 30)
    assert await apiserver.events() == said
    written = [(r.method, r.resource.plural, r.name, r.subresource) for r in list(apiserver.emulator)[first:]
               if r.method in ("POST", "PATCH", "PUT") and r.resource is not None and r.resource.plural != "kopfpeerings"]
    assert written == [], (written, "\n".join(op.lines))
