"""Writes of the operator that the API server refuses or cannot answer, as on a real cluster.

kmock accepts every write; a real cluster's admission webhooks (a policy engine such as Gatekeeper or Kyverno),
ResourceQuotas on object counts (``services.loadbalancers``), allocations (a nodePort taken) refuse some, and an API
server being upgraded answers 5xx for a while. ``Emulator.refusals`` (harness/kube.py) answers the writes of one object
as those do: the mock of a part that cannot run here (no webhook, no quota controller).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import pytest
from conftest import NAMESPACE, condition, deployment, one_pod_ready, settled_looks

if TYPE_CHECKING:
    from conftest import Cluster

DENIED = ('admission webhook "validation.gatekeeper.sh" denied the request: [required-labels] you must provide labels: '
          '{"team"}')
QUOTA = ('services "en-us" is forbidden: exceeded quota: objects, requested: services.loadbalancers=1, used: '
         'services.loadbalancers=2, limited: services.loadbalancers=2')

#: Gatekeeper's refusal of a Deployment that breaks many constraints: one line per violation (19 of them, 2.4 KB).
LONG = 'admission webhook "validation.gatekeeper.sh" denied the request: ' + "\n".join([
    '[required-labels] you must provide labels: {"team", "cost-center", "owner", "data-classification"}',
    *(f'[container-limits-{c}] container <{c}> has no resource limits; every container in namespace "speech" must set '
      f"limits.cpu and limits.memory (see https://policies.example.com/k8s/container-limits#{c})"
      for c in ("recognizer", "model-download", "chown")),
    *(f"[{rule}] {words}" for rule, words in [
        ("allowed-repos", 'container <recognizer> has an invalid image repo <example.test/recognizer:1.2.3>, allowed '
                          'repos are ["registry.corp.example/", "mcr.microsoft.com/azure-cognitive-services/"]'),
        ("read-only-root", "only read-only root filesystem container is allowed: model-download"),
        ("psp-seccomp", "Seccomp profile 'not configured' is not allowed for container 'recognizer'. Found at: no "
                        "explicit profile found. Allowed profiles: {\"RuntimeDefault\", \"docker/default\"}"),
        ("block-automount-token", "Automounting service account token is disallowed, pod: en-us"),
        ("required-probes", "Container <chown> in your <Pod> has no <livenessProbe>"),
        ("required-probes", "Container <model-download> in your <Pod> has no <readinessProbe>"),
        ("replica-limits", "The provided number of replicas is not allowed for deployment: en-us. Allowed ranges: "
                           "{\"ranges\": [{\"max_replicas\": 50, \"min_replicas\": 2}]}")]),
    *(f"[unique-service-selector-{i}] same selector as service <legacy-{i}> in namespace <speech>" for i in range(8))])


def stt(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "speech-operator.io/v1alpha1", "kind": "SpeechToText",
            "metadata": {"name": "en-us", "namespace": NAMESPACE},
            "spec": {"locale": "en-US", "eula": "accept", "replicas": 1, **spec}}


def _lines(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= level]


async def test_a_refused_deployment_is_the_status_an_event_and_one_line_and_is_written_once_allowed(
        cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    """A webhook refuses the Deployment: the SpeechToText says so in the API server's words (Ready, Progressing and
    Degraded, reason WriteRefused), with one Warning event and one WARNING line and no traceback, while the
    Service is made all the same; once the policy allows it, the re-check writes it and the status recovers.
    Before, the status stayed empty and kopf logged the raw Status body with a traceback, once a minute."""
    cluster.emulator.refusals[("deployments", "en-us")] = (400, "BadRequest", DENIED)
    await cluster.api.create(cluster.stt_url(), stt())

    async def refused() -> dict[str, Any] | None:
        c = await condition(cluster, "Degraded")
        return c if c.get("reason") == "WriteRefused" else None
    degraded = await cluster.eventually(refused)
    assert degraded["status"] == "True" and degraded["message"] == f"the API server refused Deployment en-us: {DENIED}"
    ready = await condition(cluster, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "WriteRefused") and DENIED in ready["message"], ready
    assert (await condition(cluster, "Progressing"))["reason"] == "WriteRefused"
    assert await cluster.api.get(cluster.url("v1", "services", "en-us")) is not None, "the other children are made"
    event = await cluster.event("WriteRefused")
    assert event["type"] == "Warning" and DENIED in event["message"]
    warned = [r for r in _lines(caplog, logging.WARNING) if "WriteRefused" in r.getMessage()]
    assert len(warned) == 1 and DENIED in warned[0].getMessage(), [r.getMessage() for r in warned]
    assert not [r for r in _lines(caplog, logging.ERROR)], "no ERROR, no traceback"
    assert not any(r.exc_info for r in caplog.records)

    del cluster.emulator.refusals[("deployments", "en-us")]  # the policy now allows it
    assert await cluster.eventually(lambda: deployment(cluster)), "the re-check writes it"

    async def recovered() -> bool:
        return (await condition(cluster, "Degraded")).get("status") == "False"
    await cluster.eventually(recovered)
    await cluster.event("Recovered")
    assert len([e for e in await cluster.events() if e["reason"] == "WriteRefused"]) == 1


#: How many re-checks :func:`test_the_recheck_of_a_refused_write_tries_it_again_alone` counts.
RECHECKS = 5


async def test_the_recheck_of_a_refused_write_tries_it_again_alone(cluster: Cluster) -> None:
    """A webhook refuses the Deployment at each of its re-checks: each re-check reads the Deployment once and tries its
    write again (apply's read before its write, which the status is made of), and nothing else: neither the
    SpeechToText (its changes are events) nor its other children (theirs too). Refused in other words, the status says
    those at the next re-check (a whole reconcile then). Before, each re-check was a whole reconcile: the SpeechToText,
    the Deployment, Service and PodDisruptionBudget read (4 GETs and the refused PATCH a look)."""
    cluster.emulator.refusals[("deployments", "en-us")] = (400, "BadRequest", DENIED)
    await cluster.api.create(cluster.stt_url(), stt())

    async def refused(words: str) -> dict[str, Any] | None:
        c = await condition(cluster, "Degraded")
        return c if c.get("reason") == "WriteRefused" and words in c["message"] else None
    await cluster.eventually(lambda: refused(DENIED))

    sent = await settled_looks(cluster, RECHECKS, "PATCH", "deployments", "en-us", {"GET deployments", "PATCH deployments"})
    print(f"the operator's requests for {RECHECKS} re-checks of a refused write:", sent)
    assert sent == {"GET deployments": RECHECKS, "PATCH deployments": RECHECKS}, sent

    cluster.emulator.refusals[("deployments", "en-us")] = (403, "Forbidden", QUOTA.replace("services", "deployments"))
    await cluster.eventually(lambda: refused(QUOTA.replace("services", "deployments")), 10)


async def test_a_refused_update_keeps_the_running_pods_ready_and_says_what_is_not_applied(cluster: Cluster) -> None:
    """A quota refuses the Service's change to a LoadBalancer: the Deployment from before serves (Ready stays
    True), Degraded and Progressing say the spec is not applied and why."""
    await cluster.api.create(cluster.stt_url(), stt())
    first = await cluster.eventually(lambda: deployment(cluster))
    await one_pod_ready(cluster, first)
    cluster.emulator.refusals[("services", "en-us")] = (403, "Forbidden", QUOTA)
    await cluster.api.patch(cluster.stt_url("en-us"), {"spec": {"service": {"type": "LoadBalancer", "port": 5000}}})

    async def refused() -> dict[str, Any] | None:
        c = await condition(cluster, "Degraded")
        return c if c.get("reason") == "WriteRefused" else None
    degraded = await cluster.eventually(refused)
    assert degraded["message"] == f"the API server refused Service en-us: {QUOTA}"
    assert (await condition(cluster, "Ready"))["status"] == "True", "the pods from before still serve"
    progressing = await condition(cluster, "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("False", "WriteRefused")
    assert progressing["message"].startswith("the spec is not applied: ")


async def test_an_api_server_that_fails_is_one_line_per_try_and_tried_again(
        cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    """A 503 (an API server being upgraded) is no refusal: the status is left as it is, kopf says it in one line
    without a traceback and tries again after ``recheck_seconds``, which then succeeds."""
    cluster.emulator.refusals[("deployments", "en-us")] = (503, "ServiceUnavailable", "the server is shutting down")
    await cluster.api.create(cluster.stt_url(), stt())

    async def tried_twice() -> bool:
        return len(cluster.sent("PATCH", "deployments", "en-us")) >= 2
    await cluster.eventually(tried_twice)
    failed = [r for r in _lines(caplog, logging.WARNING) if "the server is shutting down" in r.getMessage()]
    assert failed and not any(r.exc_info for r in caplog.records), [r.getMessage() for r in failed]
    assert not (await condition(cluster, "Degraded")).get("reason") == "WriteRefused"
    del cluster.emulator.refusals[("deployments", "en-us")]
    assert await cluster.eventually(lambda: deployment(cluster))


async def test_a_long_refusal_is_whole_in_the_status_and_the_log_and_its_event_keeps_its_start(
        cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    """Gatekeeper refuses the Deployment for 19 violations in 2.4 KB: the status' conditions and the WARNING line quote
    it whole; its Warning event (1,024 characters at most) keeps its start, cut at a word's end, "…" and where it is
    whole. Before, the operator kept the first 1,000 characters of the API server's words (the status and the line
    lost the rest) and cut the event in the middle, mid-word, keeping its end."""
    cluster.emulator.refusals[("deployments", "en-us")] = (400, "BadRequest", LONG)
    await cluster.api.create(cluster.stt_url(), stt())
    whole = f"the API server refused Deployment en-us: {LONG}"

    async def refused() -> dict[str, Any] | None:
        c = await condition(cluster, "Degraded")
        return c if c.get("reason") == "WriteRefused" else None
    assert (await cluster.eventually(refused))["message"] == whole
    assert (await condition(cluster, "Ready"))["message"].endswith(LONG)
    warned = [r.getMessage() for r in _lines(caplog, logging.WARNING) if "WriteRefused" in r.getMessage()]
    assert warned == [f"SpeechToText {NAMESPACE}/en-us is degraded (WriteRefused): {whole}"], warned
    said = (await cluster.event("WriteRefused"))["message"]
    head, _, tail = said.partition(" … ")
    assert len(said) <= 1024 and tail == f"(cut from {len(whole)} characters: kubectl get stt en-us -o yaml has it whole)"
    assert whole.startswith(head) and whole[len(head)].isspace() and len(head) > 800, said
