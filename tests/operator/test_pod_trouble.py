"""Why a locale is not ready, in the kubelet's and the scheduler's words: the real kopf operator against kmock.

kmock runs no kubelet and no scheduler: these tests write the pods and their status as those would (a kubelet's
container statuses, a scheduler's PodScheduled condition, the Deployment controller's counts). The crashes are real
ones: the pod the operator emits runs under tests/kubelet.py (this checkout as the image, in a network namespace with
loopback only), so the model download fails as it does behind an egress policy and the recognizer exits as it does
without a model; their exit codes and the end of their logs go in the pod status as a kubelet puts them there, which
it does only for containers whose ``terminationMessagePolicy`` is ``FallbackToLogsOnError``.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from typing import TYPE_CHECKING, Any

import pytest
from conftest import condition, operator_requests

from speech_operator import api, builders, conditions
from speech_operator.kube import USER_AGENT
from tests.kubelet import Exited, Pod, host_image

if TYPE_CHECKING:
    from conftest import Cluster

NAMESPACE = "speech"
POD = "en-us-7d4b9c6f5-x8k2p"
BASE: dict[str, Any] = {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": "en-us", "namespace": NAMESPACE},
                        "spec": {"locale": "en-US", "eula": "accept", "replicas": 1}}
#: What a kubelet keeps of a failed container's log as its termination message (FallbackToLogsOnError): its last
#: 80 lines, at most 2048 bytes.
LOG_LINES, LOG_BYTES = 80, 2048


def terminated(container: dict[str, Any], run: Exited) -> dict[str, Any]:
    """The kubelet's ``terminated`` state of a container that ended as ``run`` did: the end of its log as the message
    only where its terminationMessagePolicy asks for it (the default, File, reads a file the recognizer never writes)."""
    state: dict[str, Any] = {"reason": run.reason, "exitCode": run.returncode}
    if run.returncode and container.get("terminationMessagePolicy") == "FallbackToLogsOnError":
        state["message"] = "\n".join(run.log.splitlines()[-LOG_LINES:]).encode()[-LOG_BYTES:].decode(errors="replace")
    return state


def crash_loop(name: str, container: dict[str, Any], run: Exited) -> dict[str, Any]:
    return {"name": name, "ready": False, "restartCount": 3, "lastState": {"terminated": terminated(container, run)},
            "state": {"waiting": {"reason": "CrashLoopBackOff",
                                  "message": f"back-off 40s restarting failed container={name} pod={POD}_{NAMESPACE}"}}}


def waiting(name: str, reason: str, message: str) -> dict[str, Any]:
    return {"name": name, "ready": False, "restartCount": 0, "state": {"waiting": {"reason": reason, "message": message}}}


def pending(*, init: list[dict[str, Any]] | None = None, main: list[dict[str, Any]] | None = None,
            scheduled: dict[str, Any] | None = None) -> dict[str, Any]:
    """A pod's status that is not ready: scheduled unless said otherwise, with these container statuses."""
    return {"phase": "Pending", "podIP": None if scheduled else "10.42.0.17",
            "conditions": [scheduled or {"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "False"}],
            "initContainerStatuses": init or [], "containerStatuses": main or []}


async def settled_not_ready(cluster: Cluster, **spec: Any) -> dict[str, Any]:
    """Create the SpeechToText (:data:`BASE` with ``spec``), its pod (as the ReplicaSet controller would) and the
    Deployment's counts (as its controller would: 1 pod, none ready); wait for the status to say it is not ready, for
    no reason yet."""
    body = copy.deepcopy(BASE)
    body["spec"].update(spec)
    await cluster.api.create(cluster.stt_url(), body)

    async def made() -> dict[str, Any] | None:
        return await cluster.api.get(cluster.url("apps/v1", "deployments", "en-us"))
    dep = await cluster.eventually(made)
    template = dep["spec"]["template"]
    await cluster.api.create(cluster.url("v1", "pods"), {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": POD, "namespace": NAMESPACE, "labels": template["metadata"]["labels"]},
        "spec": template["spec"]})
    await set_pod(cluster, pending())  # a create's status is the API server's (Pending): the kubelet writes the rest
    await cluster.api.patch(cluster.url("apps/v1", "deployments", "en-us", "status"), {"status": {
        "observedGeneration": dep["metadata"].get("generation", 1), "replicas": 1, "updatedReplicas": 1,
        "readyReplicas": 0, "unavailableReplicas": 1}})

    async def not_ready() -> dict[str, Any] | None:
        body = await cluster.api.get(cluster.stt_url("en-us")) or {}
        ready = await condition(cluster, "Ready")
        return body if ready.get("reason") == "ReplicasNotReady" and (body.get("status") or {}).get("replicas") == 1 else None
    await cluster.eventually(not_ready)
    return dep


async def set_pod(cluster: Cluster, status: dict[str, Any]) -> None:
    """What the kubelet or the scheduler writes: the pod's status, and nothing else (no Deployment field changes)."""
    await cluster.api.patch(cluster.url("v1", "pods", POD, "status"), {"status": status})


async def said(cluster: Cluster, reason: str, *words: str) -> dict[str, Any]:
    """Wait until Degraded is True for ``reason`` with all ``words`` (and Ready False with them too)."""
    async def check() -> dict[str, Any] | None:
        c = await condition(cluster, "Degraded")
        return c if c.get("status") == "True" and c.get("reason") == reason and all(w in c["message"] for w in words) else None
    try:
        degraded = await cluster.eventually(check, timeout=5)
    except AssertionError:
        raise AssertionError(f"Degraded is not {reason} with {words}: {await condition(cluster, 'Degraded')}") from None
    ready = await condition(cluster, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", reason) and all(w in ready["message"] for w in words), ready
    assert ready["message"].startswith("0/1 replicas ready: "), ready
    return degraded


def last_line(run: Exited) -> str:
    return run.log.strip().splitlines()[-1]


async def test_each_kind_of_pod_trouble_reaches_the_status_in_the_kubelets_words_and_recovers(
        cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    """A pod the scheduler cannot place, an image the nodes cannot pull, a container config the kubelet cannot make,
    an init container that crashes (the model download, without egress), the recognizer that crashes (no model) and
    one killed out of memory: each reaches Ready and Degraded within seconds, in the kubelet's (or scheduler's) words
    with what to do, though no field of the Deployment changed (the re-check looks at the pods while they are not
    ready); one Warning event and one WARNING line per reason; Recovered once the pod is ready. Before, the status
    said "0/1 replicas ready" and nothing else until the Deployment's 600 s progress deadline."""
    dep = await settled_not_ready(cluster)
    spec = dep["spec"]["template"]["spec"]
    download, recognizer = spec["initContainers"][-1], spec["containers"][0]
    assert (download["name"], recognizer["name"]) == (builders.DOWNLOAD_CONTAINER, builders.CONTAINER)
    with Pod(spec, host_image(), name=POD) as pod:  # the emitted pod, run: its download and its recognizer fail
        fetched = await asyncio.to_thread(pod.run_init, download["name"], 60)
        started = pod.start()
        await asyncio.to_thread(started.process.wait, 30)
        end = started.state()["terminated"]
        ended = Exited(recognizer["name"], end["exitCode"], started.log(), end["reason"])
    assert (fetched.reason, ended.reason) == ("Error", "Error") and fetched.returncode and ended.returncode, (fetched, ended)
    done = {"name": download["name"], "ready": True, "restartCount": 0,
            "state": {"terminated": {"reason": "Completed", "exitCode": 0}}}
    image = f'example.test/recognizer:{cluster.config.version}'

    unschedulable = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                     "message": "0/3 nodes are available: 3 Insufficient memory. preemption: 0/3 nodes are available: "
                                "3 No preemption victims found for incoming pod."}
    await set_pod(cluster, pending(scheduled=unschedulable))
    await said(cluster, conditions.PODS_UNSCHEDULABLE, f"pod {POD} cannot be scheduled: 0/3 nodes are available: "
               "3 Insufficient memory", "spec.resources.requests")

    pull = (f'Failed to pull image "{image}": rpc error: code = NotFound desc = failed to pull and unpack image '
            f'"{image}": failed to resolve reference "{image}": {image}: not found')
    await set_pod(cluster, pending(init=[waiting(download["name"], "ErrImagePull", pull)]))
    await said(cluster, conditions.PODS_FAILING, f'pod {POD}: init container "download-model" ErrImagePull: {pull}',
               "spec.image", "spec.imagePullSecrets")
    await set_pod(cluster, pending(init=[waiting(download["name"], "ImagePullBackOff", f'Back-off pulling image "{image}"')]))
    await said(cluster, conditions.PODS_FAILING, f'ImagePullBackOff: Back-off pulling image "{image}"')

    config = "container has runAsNonRoot and image has non-numeric user (nobody), cannot verify user is non-root"
    await set_pod(cluster, pending(init=[done], main=[waiting(recognizer["name"], "CreateContainerConfigError", config)]))
    await said(cluster, conditions.PODS_FAILING, f'container "recognizer" CreateContainerConfigError: {config}')

    await set_pod(cluster, pending(init=[crash_loop(download["name"], download, fetched)]))
    c = await said(cluster, conditions.PODS_FAILING, f'init container "download-model" CrashLoopBackOff (Error, exit code '
                   f'{fetched.returncode}: ', last_line(fetched), "ModelCatalogUrl", "Disconnected mode")
    print(c["message"])

    await set_pod(cluster, pending(init=[done], main=[crash_loop(recognizer["name"], recognizer, ended)]))
    c = await said(cluster, conditions.PODS_FAILING, f'container "recognizer" CrashLoopBackOff (Error, exit code '
                   f'{ended.returncode}: {last_line(ended)})')
    print(c["message"])

    oom = {"name": recognizer["name"], "ready": False, "restartCount": 1, "state": {"running": {"startedAt": "2026-12-04T10:00:00Z"}},
           "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}
    await set_pod(cluster, {**pending(init=[done], main=[oom]), "phase": "Running"})
    await said(cluster, conditions.PODS_FAILING, "(OOMKilled, exit code 137)", "raise spec.resources.limits.memory (now 3Gi)")

    await set_pod(cluster, {"phase": "Running", "podIP": "10.42.0.17", "initContainerStatuses": [done],
                            "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}],
                            "containerStatuses": [{**oom, "ready": True}]})
    await cluster.api.patch(cluster.url("apps/v1", "deployments", "en-us", "status"), {"status": {
        "readyReplicas": 1, "availableReplicas": 1, "unavailableReplicas": 0}})

    async def recovered() -> bool:
        return (await condition(cluster, "Ready")).get("status") == "True"
    await cluster.eventually(recovered)
    assert (await condition(cluster, "Degraded"))["reason"] == "AsExpected"
    await cluster.event("Recovered")
    events = await cluster.events()
    recoveries = [e["message"] for e in events if e["reason"] == "Recovered"]
    # It says what is over; before, "All referenced Secrets, ConfigMaps and PVCs exist", whatever had been wrong.
    assert recoveries == [f"no longer {conditions.PODS_FAILING}: {conditions.NOT_DEGRADED}"], recoveries
    warnings = [(e["type"], e["reason"]) for e in events if e["type"] == "Warning"]
    assert warnings == [("Warning", conditions.PODS_UNSCHEDULABLE), ("Warning", conditions.PODS_FAILING)], warnings
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "is degraded" in r.getMessage()]
    assert len(lines) == 2 and "cannot be scheduled" in lines[0] and "ErrImagePull" in lines[1], lines
    assert not any(r.exc_info for r in caplog.records), "no traceback"


async def test_pods_are_listed_while_not_ready_and_never_once_ready(cluster: Cluster) -> None:
    """The reconcile runs at every change of the SpeechToText or its children and on each re-check: it lists the pods
    while fewer are ready than desired (once per look), and a ready SpeechToText not at all, however often it runs.
    Before, no reconcile listed pods, so the one not ready said nothing of them."""
    await settled_not_ready(cluster)
    listed = len(cluster.sent("GET", "pods"))
    assert listed >= 1, "the pods of a SpeechToText not ready are looked at"
    await asyncio.sleep(1)  # re-checks every 0.2 s while not ready: each lists the pods once, and reads its Deployment
    more = len(cluster.sent("GET", "pods")) - listed
    assert more >= 2, f"{more} lists of pods in 1 s of re-checks"

    await set_pod(cluster, {"phase": "Running", "podIP": "10.42.0.17", "conditions": [{"type": "Ready", "status": "True"}]})
    await cluster.api.patch(cluster.url("apps/v1", "deployments", "en-us", "status"), {"status": {
        "readyReplicas": 1, "availableReplicas": 1, "unavailableReplicas": 0}})

    async def ready() -> bool:
        return (await condition(cluster, "Ready")).get("status") == "True"
    await cluster.eventually(ready)
    await asyncio.sleep(0.5)  # the last re-check, if one was under way
    listed, reads = len(cluster.sent("GET", "pods")), len(cluster.sent("GET", "deployments", "en-us"))
    for n in range(3):  # edits of the Deployment and of the SpeechToText's labels: a reconcile each
        await cluster.api.patch(cluster.url("apps/v1", "deployments", "en-us"), {"metadata": {"annotations": {"touched": str(n)}}})
        await cluster.api.patch(cluster.stt_url("en-us"), {"metadata": {"labels": {"touched": str(n)}}})
        await asyncio.sleep(0.3)
    assert len(cluster.sent("GET", "deployments", "en-us")) - reads >= 3, "the reconcile ran"
    assert len(cluster.sent("GET", "pods")) == listed, "a ready SpeechToText's pods are not listed"


#: How many re-checks :func:`test_the_recheck_of_pods_not_ready_is_a_status_refresh` counts.
RECHECKS = 5


async def test_the_recheck_of_pods_not_ready_is_a_status_refresh(cluster: Cluster) -> None:
    """While its pods are not all ready (a rollout, a scale-up) a SpeechToText is looked at again every recheck_seconds:
    each look reads its Deployment and lists its pods, and no more (no change of them: nothing written). Its pods'
    trouble still reaches the status, and a Deployment edited meanwhile is still put back (the look finds it drifted:
    a whole reconcile). Before, each look was a whole reconcile: the SpeechToText, its Deployment, Service and
    PodDisruptionBudget read and its pods listed (5 requests a look, 25 for 5 looks)."""
    await settled_not_ready(cluster)
    listed = len(cluster.sent("GET", "pods"))

    async def looked(n: int) -> bool:
        return len(cluster.sent("GET", "pods")) - listed >= n
    await cluster.eventually(lambda: looked(1), 10)  # a look ends with its list of the pods: counted from the next on
    lists = {id(r) for r in cluster.sent("GET", "pods")}
    since = 1 + [i for i, r in enumerate(list(cluster.emulator)) if id(r) in lists][listed]
    await cluster.eventually(lambda: looked(1 + RECHECKS), 10)
    sent = operator_requests(cluster, since)
    print(f"the operator's requests for {RECHECKS} re-checks:", sent)
    assert not any(k.startswith(("GET speechtotexts", "GET services", "GET poddisruptionbudgets", "PATCH")) for k in sent), sent
    assert sent.get("GET deployments", 0) <= sent["GET pods"] + 1, sent

    await cluster.api.patch(cluster.url("apps/v1", "deployments", "en-us"), {"spec": {"template": {"spec": {
        "containers": [{"name": builders.CONTAINER, "image": "example.test/other:9"}]}}}})

    async def put_back() -> bool:
        dep = await cluster.api.get(cluster.url("apps/v1", "deployments", "en-us")) or {}
        return dep["spec"]["template"]["spec"]["containers"][0]["image"] == f"example.test/recognizer:{cluster.config.version}"
    await cluster.eventually(put_back)
    await set_pod(cluster, pending(scheduled={"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                              "message": "0/3 nodes are available: 3 Insufficient cpu."}))
    await said(cluster, conditions.PODS_UNSCHEDULABLE, f"pod {POD} cannot be scheduled: 0/3 nodes are available")


#: The API key's Secret a SpeechToText names (spec.apiKeySecretRef).
KEY = {"name": "speech-key", "key": "apiKey"}
SECRET = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": KEY["name"], "namespace": NAMESPACE},
          "data": {KEY["key"]: "c2VjcmV0"}}


async def test_a_secret_deleted_mid_rollout_is_named_by_the_status_refresh(cluster: Cluster) -> None:
    """The Secret of spec.apiKeySecretRef is deleted while the pods are not all ready (a rollout): the kubelet cannot
    make the recognizer's environment (CreateContainerConfigError), and the re-check that sees it reads the Secret,
    once, and the status names it (MissingDependency), not only the pods' failure; created again, the SpeechToText
    recovers. The re-checks of pods merely not ready read no Secret. Before, the status refresh never looked: the
    status said PodsFailing until the next whole reconcile (a change of the SpeechToText or of a child)."""
    await cluster.api.create(cluster.url("v1", "secrets"), SECRET)
    await settled_not_ready(cluster, billing="https://billing.example.test", apiKeySecretRef=KEY)

    async def looks(n: int, after: int) -> bool:
        return len(cluster.sent("GET", "pods")) - after >= n
    listed = len(cluster.sent("GET", "pods"))
    await cluster.eventually(lambda: looks(1, listed), 10)  # the reconciles of the creation are over
    since, listed = len(list(cluster.emulator)), len(cluster.sent("GET", "pods"))
    await cluster.eventually(lambda: looks(3, listed), 10)
    sent = operator_requests(cluster, since)
    print("the operator's requests for 3 re-checks of pods not ready:", sent)
    assert "GET secrets" not in sent and "GET speechtotexts" not in sent, sent

    assert await cluster.api.delete(cluster.url("v1", "secrets", KEY["name"]))
    since = len(list(cluster.emulator))
    await set_pod(cluster, pending(main=[waiting(builders.CONTAINER, "CreateContainerConfigError",
                                                 f'secret "{KEY["name"]}" not found')]))

    async def named() -> dict[str, Any] | None:
        c = await condition(cluster, "Degraded")
        return c if c.get("reason") == conditions.MISSING_DEPENDENCY else None
    try:
        degraded = await cluster.eventually(named, 10)
    except AssertionError:
        raise AssertionError(f"the status does not name the Secret: {await condition(cluster, 'Degraded')}") from None
    assert degraded["status"] == "True" and degraded["message"] == f'Secret "{KEY["name"]}" not found', degraded
    ready = await condition(cluster, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", conditions.MISSING_DEPENDENCY), ready
    # the re-check that saw the pod's error: its Deployment read, its pods listed, the Secret read once, its status
    # written; no whole reconcile (the SpeechToText, its Service, its PodDisruptionBudget not read)
    requests = [r for r in list(cluster.emulator)[since:] if r.headers.get("User-Agent", "").startswith(USER_AGENT)
                and r.params.get("watch") != "true" and r.resource is not None]
    wrote = next(i for i, r in enumerate(requests) if (r.method, r.resource.plural, r.subresource) == ("PATCH", "speechtotexts", "status"))
    before = [" ".join(filter(None, (r.method, r.resource.plural, r.subresource))) for r in requests[:wrote + 1]]
    print("the operator's requests until the status named the Secret:", before)
    assert before.count("GET secrets") == 1, before
    assert not {"GET speechtotexts", "GET services", "GET poddisruptionbudgets"} & set(before), before
    await cluster.event(conditions.MISSING_DEPENDENCY)

    await cluster.api.create(cluster.url("v1", "secrets"), SECRET)
    await set_pod(cluster, {"phase": "Running", "podIP": "10.42.0.17", "conditions": [{"type": "Ready", "status": "True"}]})
    await cluster.api.patch(cluster.url("apps/v1", "deployments", "en-us", "status"), {"status": {
        "readyReplicas": 1, "availableReplicas": 1, "unavailableReplicas": 0}})

    async def recovered() -> bool:
        return (await condition(cluster, "Ready")).get("status") == "True"
    await cluster.eventually(recovered, 10)
    assert (await condition(cluster, "Degraded"))["reason"] == "AsExpected"
    await cluster.event("Recovered")


async def test_a_config_error_no_missing_object_explains_is_looked_up_once(cluster: Cluster) -> None:
    """A container config error that no Secret or ConfigMap of the spec explains (runAsNonRoot) lasts: the re-check
    that first sees it reads the spec's Secret once, the next ones (each reads its Deployment and lists its pods) no
    more while the pod waits in the same words; the Secret deleted, the kubelet's words change, and the next re-check
    reads it and names it. Before, each re-check read the Secret for as long as the error lasted."""
    await cluster.api.create(cluster.url("v1", "secrets"), SECRET)
    await settled_not_ready(cluster, billing="https://billing.example.test", apiKeySecretRef=KEY)
    config = "container has runAsNonRoot and image has non-numeric user (nobody), cannot verify user is non-root"
    await set_pod(cluster, pending(main=[waiting(builders.CONTAINER, "CreateContainerConfigError", config)]))
    await said(cluster, conditions.PODS_FAILING, f'container "recognizer" CreateContainerConfigError: {config}')
    since, listed = len(list(cluster.emulator)), len(cluster.sent("GET", "pods"))

    async def looked(n: int) -> bool:
        return len(cluster.sent("GET", "pods")) - listed >= n
    await cluster.eventually(lambda: looked(RECHECKS), 10)
    sent = operator_requests(cluster, since)
    print(f"the operator's requests for {RECHECKS} re-checks of a pod waiting for its config:", sent)
    assert sent.get("GET secrets", 0) <= 1, sent
    assert not any(k.startswith(("GET speechtotexts", "PATCH")) for k in sent), sent

    assert await cluster.api.delete(cluster.url("v1", "secrets", KEY["name"]))
    await set_pod(cluster, pending(main=[waiting(builders.CONTAINER, "CreateContainerConfigError",
                                                 f'secret "{KEY["name"]}" not found')]))

    async def named() -> dict[str, Any] | None:
        c = await condition(cluster, "Degraded")
        return c if c.get("reason") == conditions.MISSING_DEPENDENCY else None
    degraded = await cluster.eventually(named, 10)
    assert degraded["message"] == f'Secret "{KEY["name"]}" not found', degraded
