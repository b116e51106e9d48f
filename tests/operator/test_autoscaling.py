"""The operator's session-based autoscaling, the real kopf operator against kmock, with scripted
session counts: up at once, down only after the delay and idle pods first, to zero after the idle
time, from zero when the gateway asks (status.demand); spec.replicas again once autoscaling goes.

The pods are kept by tests/controllers.py (what the Deployment and ReplicaSet controllers and the
kubelet do); behind each is a scripted ``/sessions`` (and ``/ready``) on loopback, not a
recognizer: the sessions each step needs (five at once on one pod, then one on the newest) cannot
be made with real streams on this machine's two cores. The recognizer's own ``/sessions`` is
tested in tests/recognizer/test_service_routes.py, and the wake path with a real recognizer in
tests/gateway/test_wake.py.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import datetime
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio
from aiohttp import web
from conftest import operator_requests, operators, quiet, reconcile_errors

from harness.kube import PROXY_PAGE
from speech_operator.gateway import serving
from tests.controllers import Replicas

if TYPE_CHECKING:
    import kmock
    from conftest import Cluster

NAMESPACE = "speech"
#: How long the operator may take to scale, and the pods to follow, on a loaded machine (the tests wait, then fail):
#: a wrong decision is never reached (or is seen by `stays`), not reached late. The operator looks every 0.2 s here.
PATIENCE = 30.0
POLICY = {"minReplicas": 1, "maxReplicas": 4, "targetSessionsPerReplica": 2, "scaleDownDelaySeconds": 1,
          "idleSecondsToZero": 1}
BODY: dict[str, Any] = {
    "apiVersion": "speech-operator.io/v1alpha1", "kind": "SpeechToText",
    "metadata": {"name": "en-us", "namespace": NAMESPACE},
    "spec": {"locale": "en-US", "eula": "accept", "replicas": 1, "decoderMaxCount": 4, "autoscaling": POLICY},
}


@dataclass
class Scripted:
    """Each pod's ``/sessions`` as the test sets it (``loads[pod] = (sessions, idleSeconds)``,
    ``admitted[pod]``: recognitions it admitted, ``connections[pod]``: clients connected, 0 unless set;
    ``max_connections``: the connection cap every pod reports, none (as a recognizer older than the field) unless set;
    ``asked``: how often a pod was asked)."""

    loads: dict[str, tuple[int, float]] = field(default_factory=dict)
    admitted: dict[str, int] = field(default_factory=dict)
    connections: dict[str, int] = field(default_factory=dict)
    max_connections: int | None = None
    #: ``/sessions`` requests answered, of every pod.
    asked: int = 0
    #: What a pod answers ``/sessions`` instead of its load (JSON, as something other than a recognizer might).
    odd: dict[str, Any] = field(default_factory=dict)

    async def start(self, name: str) -> _Server:
        async def sessions(request: web.Request) -> web.Response:
            self.asked += 1
            if name in self.odd:
                return web.json_response(self.odd[name])
            count, idle = self.loads.get(name, (0, 0.0))
            cap = {} if self.max_connections is None else {"maxConnections": self.max_connections}
            return web.json_response({"sessions": count, "connections": self.connections.get(name, 0), "decoders": 4, **cap,
                                      "idleSeconds": idle, "admitted": self.admitted.get(name, 0), "ready": True, "draining": False})

        async def ready(request: web.Request) -> web.Response:
            return web.json_response({"ready": True})

        app = web.Application()
        app.router.add_get("/sessions", sessions)
        app.router.add_get("/ready", ready)
        server = _Server(serving(app, "127.0.0.1", 0, 0))
        server.port = await server.context.__aenter__()
        return server


@dataclass
class _Server:
    context: Any
    port: int = 0

    async def stop(self) -> None:
        await self.context.__aexit__(None, None, None)


@dataclass
class Scaled:
    cluster: Cluster
    script: Scripted
    pods: Replicas

    async def replicas(self) -> int | None:
        dep = await self.cluster.api.get(self.cluster.url("apps/v1", "deployments", "en-us"))
        return None if dep is None else dep["spec"]["replicas"]

    async def becomes(self, replicas: int, timeout: float = PATIENCE) -> float:
        """Wait until the Deployment has ``replicas``; the seconds it took."""
        started = time.monotonic()

        async def reached() -> bool:
            return await self.replicas() == replicas
        await self.cluster.eventually(reached, timeout)
        return time.monotonic() - started

    async def stays(self, replicas: int, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert await self.replicas() == replicas
            await asyncio.sleep(0.05)

    async def status(self) -> dict[str, Any]:
        body = await self.cluster.api.get(self.cluster.stt_url("en-us")) or {}
        return body.get("status") or {}

    async def desired(self, n: int) -> bool:
        """The status says the operator wants ``n`` pods."""
        return (await self.status()).get("desiredReplicas") == n

    async def ready_pods(self, n: int) -> None:
        async def counted() -> bool:
            return sum(p.ready for p in self.pods.pods.values()) == n and len(self.pods.pods) == n
        await self.cluster.eventually(counted, PATIENCE)

    async def events(self, reason: str) -> list[str]:
        return [e["message"] for e in await self.cluster.events() if e["reason"] == reason]

    async def sessions_seen(self, *counts: int) -> None:
        """The pod en-us-0 holds each of ``counts`` sessions in turn, each until status.autoscaling says it."""
        for sessions in counts:
            self.script.loads["en-us-0"] = (sessions, 0.0)

            async def seen(n: int = sessions) -> bool:
                return ((await self.status()).get("autoscaling") or {}).get("sessions") == n
            await self.cluster.eventually(seen, PATIENCE)

    async def settled(self) -> None:
        """:meth:`looked_at`, then Ready and one second of nothing but looks (lists of the pods)."""
        await self.looked_at()

        def more(r: kmock.Request) -> bool:
            return operators(r) and not (r.method == "GET" and r.resource.plural == "pods" and r.subresource is None)

        async def settled() -> bool:
            ready = any(c["type"] == "Ready" and c["status"] == "True" for c in (await self.status()).get("conditions") or [])
            return ready and await quiet(self.cluster, counted=more)
        await self.cluster.eventually(settled, PATIENCE)

    async def looked_at(self) -> None:
        """en-us made from :data:`BODY`, its pod ready, and the autoscaler's first look in its status."""
        await self.cluster.api.create(self.cluster.stt_url(), copy.deepcopy(BODY))
        await self.becomes(1)
        await self.ready_pods(1)

        async def looked() -> bool:
            return "autoscaling" in await self.status()
        await self.cluster.eventually(looked, PATIENCE)


@pytest_asyncio.fixture(loop_scope="function")
async def scaled(cluster: Cluster) -> AsyncIterator[Scaled]:
    script = Scripted()
    pods = Replicas(cluster.api, NAMESPACE, "en-us", script.start)
    keeper = asyncio.create_task(pods.run())
    try:
        yield Scaled(cluster, script, pods)
    finally:
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)


async def test_up_at_once_down_after_the_delay_idle_pods_first(scaled: Scaled) -> None:
    await scaled.cluster.api.create(scaled.cluster.stt_url(), copy.deepcopy(BODY))
    await scaled.becomes(1)
    await scaled.ready_pods(1)

    scaled.script.loads["en-us-0"] = (5, 0.0)
    await scaled.becomes(3)
    assert await scaled.events("ScaledUp") == ["5 sessions on 1 pod (target 2 per pod): 1 → 3"]
    await scaled.ready_pods(3)

    async def written() -> bool:  # the operator has seen the three ready (on a loaded machine later than 0.5 s)
        return (await scaled.status()).get("readyReplicas") == 3
    await scaled.cluster.eventually(written, PATIENCE)
    await asyncio.sleep(0.5)
    before = len(scaled.cluster.sent("PATCH", "speechtotexts", "en-us", "status")), len(scaled.cluster.sent("PATCH", "deployments", "en-us"))
    await asyncio.sleep(1.0)  # five looks at a steady load
    after = len(scaled.cluster.sent("PATCH", "speechtotexts", "en-us", "status")), len(scaled.cluster.sent("PATCH", "deployments", "en-us"))
    assert after == before, "a look that changes nothing writes nothing"
    status = (await scaled.status())["autoscaling"]
    assert (status["replicas"], status["sessions"], status["decoders"], status["targetSessionsPerReplica"]) == (3, 5, 4, 2)
    assert status["lastDecision"]["reason"] == "5 sessions on 1 pod (target 2 per pod): 1 → 3"

    # One session left, on the newest pod: one pod is enough, after the delay, and the idle ones go.
    scaled.script.loads = {"en-us-0": (0, 3.0), "en-us-1": (0, 3.0), "en-us-2": (1, 0.0)}
    waited = await scaled.becomes(1)
    assert waited >= 0.9, f"scaled down after {waited:.2f} s, before scaleDownDelaySeconds (1 s)"
    await scaled.ready_pods(1)
    assert sorted(scaled.pods.removed) == ["en-us-0", "en-us-1"], "the pod holding the session stays"
    (message,) = await scaled.events("ScaledDown")
    assert message.startswith("1 session on 3 pods (target 2 per pod), 1 pod enough for ") and message.endswith(": 3 → 1")
    assert (await scaled.status())["autoscaling"]["sessions"] == 1


async def test_to_zero_when_idle_and_back_when_the_gateway_asks(scaled: Scaled) -> None:
    body = copy.deepcopy(BODY)
    body["spec"]["autoscaling"] = {**POLICY, "minReplicas": 0, "idleSecondsToZero": 5}
    await scaled.cluster.api.create(scaled.cluster.stt_url(), body)
    await scaled.becomes(1)
    await scaled.ready_pods(1)
    scaled.script.loads["en-us-0"] = (0, 2.0)
    await scaled.stays(1, 1.0)  # idle, but for less than idleSecondsToZero
    scaled.script.loads["en-us-0"] = (0, 6.0)
    await scaled.becomes(0)
    await scaled.ready_pods(0)
    assert await scaled.events("ScaledToZero") == ["no session for 6 s (idleSecondsToZero 5): 1 → 0"]

    async def scaled_to_zero() -> bool:
        ready = next((c for c in (await scaled.status()).get("conditions", []) if c["type"] == "Ready"), {})
        return ready.get("reason") == "ScaledToZero" and ready.get("status") == "True"
    await scaled.cluster.eventually(scaled_to_zero, PATIENCE)

    await scaled.stays(0, 1.0)  # nobody asked
    # Looks every 30 s from now on: a wake within 10 s is the demand seen at once, not at the next look (the bound
    # is loose because a busy CI machine took 1.19 s for it; the next look would take 30).
    scaled.cluster.runtime.config = dataclasses.replace(scaled.cluster.runtime.config, autoscale_seconds=30)
    await asyncio.sleep(0.5)
    asked = datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")
    await scaled.cluster.api.patch(scaled.cluster.stt_url("en-us", "status"), {"status": {"demand": {"requestedAt": asked}}})
    took = await scaled.becomes(1, timeout=15)
    assert took < 10.0, f"woken {took:.2f} s after the gateway asked: the demand should be seen at once, not at the next look"
    assert await scaled.events("WokenUp") == ["a request waits at the gateway: waking, 0 → 1"]
    await scaled.ready_pods(1)
    assert (await scaled.status())["demand"] == {"requestedAt": asked}, "the gateway's field is left alone"
    scaled.script.loads["en-us-1"] = (1, 0.0)
    await scaled.stays(1, 1.0)


async def test_a_pod_woken_for_a_request_is_not_sent_back_before_it_arrives(scaled: Scaled) -> None:
    """A pod woken for a held request reports no session and a long idle time (a recognizer's idle
    clock runs while it loads its model) until the gateway has forwarded the request to it; how
    long that takes is up to the watch, the gateway and the CPU. The pod stays until the request
    has reached a pod (a session, or idle only since after the ask), then goes to zero after
    idleSecondsToZero as ever. (The wake test with a real recognizer, tests/gateway/test_wake.py,
    lost its /vosk stream with close 1012 when this look came before the stream: its pod was
    scaled back to zero and stopped while the gateway forwarded the stream.)"""
    body = copy.deepcopy(BODY)
    body["spec"]["autoscaling"] = {**POLICY, "minReplicas": 0, "idleSecondsToZero": 2}
    await scaled.cluster.api.create(scaled.cluster.stt_url(), body)
    await scaled.becomes(1)
    await scaled.ready_pods(1)
    scaled.script.loads["en-us-0"] = (0, 3.0)
    await scaled.becomes(0)
    await scaled.ready_pods(0)

    scaled.script.loads["en-us-1"] = (0, 30.0)  # the woken pod: idle since it started, nothing served yet
    asked = datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")
    await scaled.cluster.api.patch(scaled.cluster.stt_url("en-us", "status"), {"status": {"demand": {"requestedAt": asked}}})
    await scaled.becomes(1)
    await scaled.ready_pods(1)
    await scaled.stays(1, 2.5)  # ten looks at a ready pod idle for longer than idleSecondsToZero
    assert await scaled.events("ScaledToZero") == ["no session for 3 s (idleSecondsToZero 2): 1 → 0"], "only the first pod's"

    scaled.script.loads["en-us-1"] = (1, 0.0)  # the request arrives
    scaled.script.admitted["en-us-1"] = 1
    await scaled.stays(1, 0.5)
    scaled.script.loads["en-us-1"] = (0, 0.0)  # and ends: the demand is served
    await asyncio.sleep(2.5)
    scaled.script.loads["en-us-1"] = (0, 2.5)  # idle since it ended, after the ask
    await scaled.becomes(0)
    assert len(await scaled.events("ScaledToZero")) == 2


async def test_pods_with_clients_connected_before_their_first_audio_are_not_scaled_away(scaled: Scaled) -> None:
    """A client connected to a pod has no session before its first audio (nor a Speech SDK app
    between recognitions), and its pod's idle clock stands still (idleSeconds 0): the pod is busy,
    kept, and removed after the idle ones; once the clients have gone the locale goes to zero as
    ever. (Without it the ReplicaSet removed the newest pods first, the two with clients.)"""
    body = copy.deepcopy(BODY)
    body["spec"]["autoscaling"] = {**POLICY, "minReplicas": 0, "idleSecondsToZero": 1}
    await scaled.cluster.api.create(scaled.cluster.stt_url(), body)
    await scaled.becomes(1)
    await scaled.ready_pods(1)
    scaled.script.loads["en-us-0"] = (5, 0.0)
    await scaled.becomes(3)
    await scaled.ready_pods(3)

    scaled.script.loads = {"en-us-0": (0, 5.0), "en-us-1": (0, 0.0), "en-us-2": (0, 0.0)}
    scaled.script.connections = {"en-us-1": 1, "en-us-2": 2}
    await scaled.becomes(2)
    await scaled.ready_pods(2)
    assert scaled.pods.removed == ["en-us-0"], "the idle pod goes, the pods with clients stay"
    (message,) = await scaled.events("ScaledDown")
    assert message.startswith("0 sessions, 3 connections on 3 pods (target 2 per pod), 2 pods enough for "), message
    status = (await scaled.status())["autoscaling"]
    assert (status["sessions"], status["connections"]) == (0, 3), "the status says why the pods stay"
    await scaled.stays(2, 2.5)  # longer than scaleDownDelaySeconds and idleSecondsToZero

    scaled.script.connections = {}  # the clients have gone
    scaled.script.loads = {"en-us-1": (0, 2.0), "en-us-2": (0, 2.0)}
    await scaled.becomes(0)


async def test_up_before_the_connections_reach_the_pods_cap(scaled: Scaled) -> None:
    """Many clients connected and few sessions (Speech SDK apps between recognitions): a pod at its
    MaxConnections closes the next client with 1013 while its sessions say one pod is plenty. The
    pods report their cap (500), and a pod is added once the connections pass four fifths of it;
    once they fit on fewer pods again, after the delay, the extra pod goes."""
    scaled.script.max_connections = 500
    await scaled.cluster.api.create(scaled.cluster.stt_url(), copy.deepcopy(BODY))
    await scaled.becomes(1)
    await scaled.ready_pods(1)
    scaled.script.loads["en-us-0"] = (1, 0.0)
    scaled.script.connections["en-us-0"] = 450
    await scaled.becomes(2)
    assert await scaled.events("ScaledUp") == ["1 session, 450 connections on 1 pod (target 400 connections per pod, cap 500): 1 → 2"]
    await scaled.ready_pods(2)

    async def reported() -> bool:  # the status is written after the Deployment
        status = (await scaled.status())["autoscaling"]
        return (status["sessions"], status["connections"], status.get("maxConnections")) == (1, 450, 500)
    await scaled.cluster.eventually(reported, PATIENCE)
    await scaled.stays(2, 1.5)  # longer than scaleDownDelaySeconds: 450 connections still need two pods

    scaled.script.connections["en-us-0"] = 300  # the apps' connections closed while idle
    await scaled.becomes(1)


async def test_a_pod_not_ready_with_sessions_is_not_scaled_away(scaled: Scaled) -> None:
    """A pod whose readiness probe fails (an overloaded node) still runs its streams, and the
    ReplicaSet removes not-ready pods first: while it holds sessions, no scale-down."""
    await scaled.cluster.api.create(scaled.cluster.stt_url(), copy.deepcopy(BODY))
    await scaled.becomes(1)
    await scaled.ready_pods(1)
    scaled.script.loads["en-us-0"] = (3, 0.0)
    await scaled.becomes(2)
    await scaled.ready_pods(2)

    # Not ready first, then the load: the other order leaves a moment where both pods are ready and
    # one is idle, in which scaling down is right (a busy machine's tick fell in it once).
    await scaled.cluster.api.patch(scaled.cluster.url("v1", "pods", "en-us-1", "status"),
                                   {"status": {"conditions": [{"type": "Ready", "status": "False"}]}})
    scaled.script.loads = {"en-us-0": (0, 5.0), "en-us-1": (2, 0.0)}
    await scaled.stays(2, 2.5)  # one pod would be enough for the ready pods' sessions, after 1 s
    assert scaled.pods.removed == []

    scaled.script.loads["en-us-1"] = (0, 5.0)  # its streams ended: it may go
    await scaled.becomes(1)


async def test_without_autoscaling_spec_replicas_rules_again(scaled: Scaled) -> None:
    """And status.desiredReplicas (`kubectl get stt`'s REPLICAS) says what the operator wants running in each case:
    the autoscaler's 4, not spec.replicas' 1 (the column showed 1 while 4 pods ran); then spec.replicas, then the
    scale subresource's."""
    await scaled.cluster.api.create(scaled.cluster.stt_url(), copy.deepcopy(BODY))
    scaled.script.loads["en-us-0"] = (7, 0.0)
    await scaled.becomes(4)  # capped at maxReplicas
    await scaled.cluster.eventually(lambda: scaled.desired(4), PATIENCE)
    assert (await scaled.cluster.api.get(scaled.cluster.stt_url("en-us")))["spec"]["replicas"] == 1
    await scaled.cluster.api.patch(scaled.cluster.stt_url("en-us"), {"spec": {"autoscaling": None, "replicas": 2}})
    await scaled.becomes(2)

    async def dropped() -> bool:
        return "autoscaling" not in await scaled.status()
    await scaled.cluster.eventually(dropped, PATIENCE)
    await scaled.cluster.eventually(lambda: scaled.desired(2), PATIENCE)
    await scaled.cluster.api.patch(scaled.cluster.stt_url("en-us", "scale"), {"spec": {"replicas": 3}})
    await scaled.becomes(3)
    await scaled.cluster.eventually(lambda: scaled.desired(3), PATIENCE)
    await scaled.stays(3, 1.0)


async def test_the_autoscalers_daemon_ends_quietly_when_autoscaling_goes_and_at_deletion(
        scaled: Scaled, caplog: pytest.LogCaptureFixture) -> None:
    """kopf stops the autoscaler's daemon by its flag when spec.autoscaling goes and when the SpeechToText is deleted
    (and at the operator's exit or a peering pause), and cancels one the flag does not end, with the WARNING "Daemon
    'autoscale' is cancelled. Will escalate.". The daemon waited for its next look (autoscale_seconds, 5 s by default)
    without the flag: each of those logged that WARNING. It now ends at the flag."""
    await scaled.cluster.api.create(scaled.cluster.stt_url(), copy.deepcopy(BODY))
    await scaled.becomes(1)
    await scaled.cluster.api.patch(scaled.cluster.stt_url("en-us"), {"spec": {"autoscaling": None, "replicas": 2}})
    await scaled.becomes(2)

    async def dropped() -> bool:
        return "autoscaling" not in await scaled.status()
    await scaled.cluster.eventually(dropped, PATIENCE)
    await scaled.cluster.api.patch(scaled.cluster.stt_url("en-us"), {"spec": {"autoscaling": POLICY}})

    async def again() -> bool:
        return "autoscaling" in await scaled.status()
    await scaled.cluster.eventually(again, PATIENCE)
    assert await scaled.cluster.api.delete(scaled.cluster.stt_url("en-us"))

    async def gone() -> bool:
        return await scaled.cluster.api.get(scaled.cluster.stt_url("en-us")) is None
    await scaled.cluster.eventually(gone, PATIENCE)
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not warned, warned


#: Two specs the operator refuses (nothing is created or changed, and the autoscaler's decisions are not applied):
#: annotations of one's own too large for kopf's record of the spec (SpecTooLarge; the record holds them too, so 130 KB
#: of them take the annotations past 256 KiB), and an image the operator's policy does not allow (PolicyViolation).
REFUSALS = {"SpecTooLarge": {"metadata": {"annotations": {"example.com/notes": "x" * 130_000}}},
            "PolicyViolation": {"spec": {"image": "elsewhere.example/recognizer"}}}
TAKEN = {"SpecTooLarge": {"metadata": {"annotations": {"example.com/notes": None}}},
         "PolicyViolation": {"spec": {"image": None}}}


@pytest.mark.parametrize("reason", list(REFUSALS))
async def test_the_autoscaler_stays_idle_while_the_spec_is_refused_and_resumes_once_it_is_taken(
        scaled: Scaled, reason: str) -> None:
    """While the operator refuses the spec (SpecTooLarge, PolicyViolation, InvalidSpec) it applies nothing, the
    autoscaler's decisions included: the autoscaler no longer looks (kopf stops its daemon at the status that says so)
    and starts again once the spec is taken. Before, it went on looking every autoscale_seconds, the pods listed and
    each asked for its sessions (here 1 list and 1 ask every 0.2 s), for decisions never applied: API load for nothing."""
    cluster = scaled.cluster
    await scaled.looked_at()
    await cluster.api.patch(cluster.stt_url("en-us"), REFUSALS[reason])

    async def refused() -> bool:
        progressing = next((c for c in (await scaled.status()).get("conditions") or [] if c["type"] == "Progressing"), {})
        return progressing.get("reason") == reason
    await cluster.eventually(refused, PATIENCE)
    await asyncio.sleep(0.5)  # a look begun before the refusal was written has ended
    asked, listed = scaled.script.asked, len(cluster.sent("GET", "pods"))
    scaled.script.loads["en-us-0"] = (5, 0.0)  # enough for 3 pods
    await scaled.stays(1, 1.0)  # five of the autoscaler's periods
    assert (scaled.script.asked - asked, len(cluster.sent("GET", "pods")) - listed) == (0, 0), \
        "the pods were asked for their sessions, or listed, while the spec is refused"
    assert await scaled.events("ScaledUp") == []

    await cluster.api.patch(cluster.stt_url("en-us"), TAKEN[reason])
    await scaled.becomes(3)
    assert await scaled.events("ScaledUp") == ["5 sessions on 1 pod (target 2 per pod): 1 → 3"]


async def test_autoscaling_with_every_default(scaled: Scaled) -> None:
    """``autoscaling: {}`` autoscales: min 1, max 10, target four fifths of the decoders reported (4 -> 3)."""
    body = copy.deepcopy(BODY)
    body["spec"]["autoscaling"] = {}
    await scaled.cluster.api.create(scaled.cluster.stt_url(), body)
    await scaled.becomes(1)
    await scaled.ready_pods(1)
    scaled.script.loads["en-us-0"] = (7, 0.0)
    await scaled.becomes(3)

    async def target() -> int | None:  # the status is written after the Deployment
        return ((await scaled.status()).get("autoscaling") or {}).get("targetSessionsPerReplica")
    assert await scaled.cluster.eventually(target, PATIENCE) == 3


async def test_a_look_that_changes_what_it_saw_and_not_the_replicas_writes_the_status_alone(scaled: Scaled) -> None:
    """The sessions on the pod change, not the pods they need: each look that sees it writes status.autoscaling (its
    sessions) and reads nothing but the pods it lists: no reconcile (no read of the SpeechToText, its Service or its
    PodDisruptionBudget, no write of a child). Before, each such look was a whole reconcile that listed the pods and
    asked them for their sessions again (4 changes: 4 reconciles, each 5-6 requests beside the look's)."""
    cluster = scaled.cluster
    await scaled.settled()
    since = len(list(cluster.emulator))
    await scaled.sessions_seen(1, 2, 1, 2)
    await scaled.stays(1, 0.5)
    sent = operator_requests(cluster, since)
    print("the operator's requests for 4 changes of the sessions:", sent)
    assert not any(k.startswith(("GET speechtotexts", "GET services", "GET poddisruptionbudgets", "PATCH deployments",
                                 "PATCH services", "PATCH poddisruptionbudgets")) for k in sent), sent
    assert sent.get("PATCH speechtotexts status", 0) >= 4, sent
    assert await scaled.events("ScaledUp") == []


async def test_a_look_at_a_degraded_one_that_changes_what_it_saw_writes_the_status_alone(scaled: Scaled) -> None:
    """As above, while its Service's writes are refused (an admission webhook: Degraded, WriteRefused, re-checked every
    recheck_seconds, which writes the Service again alone): each look that sees the sessions change writes
    status.autoscaling alone, nothing the re-check would not read (no read of the SpeechToText, its Deployment or its
    PodDisruptionBudget, no write of the Deployment), Degraded kept as it was and the refused write still tried again,
    which is taken once the webhook lets it through. Before, each such look of a Degraded one was a whole reconcile."""
    cluster = scaled.cluster
    cluster.emulator.refusals[("services", "en-us")] = (400, "BadRequest", "admission webhook denied the request")
    await scaled.looked_at()

    async def degraded() -> dict[str, Any]:
        conditions = (await scaled.status()).get("conditions") or []
        return next((c for c in conditions if c["type"] == "Degraded" and c["status"] == "True"), {})
    said = await cluster.eventually(degraded, PATIENCE)
    assert said["reason"] == "WriteRefused", said

    async def steady() -> bool:  # its pod's readiness reported: a second of nothing but looks and re-checks
        since = len(list(cluster.emulator))
        await asyncio.sleep(1)
        return set(operator_requests(cluster, since)) <= {"GET pods", "GET services", "PATCH services"}
    await cluster.eventually(steady, PATIENCE)
    said = await degraded()
    since = len(list(cluster.emulator))
    await scaled.sessions_seen(1, 2, 1, 2)
    sent = operator_requests(cluster, since)
    print("the operator's requests for 4 changes of the sessions of a Degraded one:", sent)
    assert not any(k.startswith(("GET speechtotexts", "GET deployments", "GET poddisruptionbudgets", "PATCH deployments"))
                   for k in sent), sent
    assert sent.get("PATCH speechtotexts status", 0) >= 4 and sent.get("PATCH services", 0) >= 1, sent
    assert await degraded() == said, "Degraded kept as it was"
    del cluster.emulator.refusals[("services", "en-us")]

    async def mended() -> bool:
        return not await degraded() and await cluster.api.get(cluster.url("v1", "services", "en-us")) is not None
    await cluster.eventually(mended, PATIENCE)


async def test_a_looks_status_write_that_fails_is_counted(scaled: Scaled) -> None:
    """The status write of a look that changes only what it saw, which the API server cannot serve (503), is counted
    as a status refresh's failure (``scope="status"``, ApiUnavailable), once per look, and is no reconcile (none
    counted, no child read); served again, the status says what the look saw. Before, it was a WARNING line alone."""
    cluster = scaled.cluster
    await scaled.settled()
    before, since = reconcile_errors(), len(list(cluster.emulator))
    cluster.emulator.failing[("speechtotexts", "en-us", "status")] = (503, "ServiceUnavailable", "etcdserver: leader changed")
    scaled.script.loads["en-us-0"] = (1, 0.0)

    def failed(scope: str, reason: str) -> float:
        return reconcile_errors().get((scope, reason), 0) - before.get((scope, reason), 0)

    async def counted() -> bool:
        return failed("status", "ApiUnavailable") >= 3  # a look every 0.2 s here, each writing again
    await cluster.eventually(counted, PATIENCE)
    del cluster.emulator.failing[("speechtotexts", "en-us", "status")]

    async def seen() -> bool:
        return ((await scaled.status()).get("autoscaling") or {}).get("sessions") == 1
    await cluster.eventually(seen, PATIENCE)
    sent = operator_requests(cluster, since)
    print("the operator's requests while its status writes failed, then one more look:", sent)
    writes = sent.get("PATCH speechtotexts status", 0)
    assert {key: n - before.get(key, 0) for key, n in reconcile_errors().items() if n != before.get(key, 0)} == {
        ("status", "ApiUnavailable"): writes - 1}, sent  # each write but the last, served
    assert not any(k.startswith(("GET speechtotexts", "GET services", "GET poddisruptionbudgets", "PATCH deployments"))
                   for k in sent), sent


@pytest.mark.parametrize("answer", ["503", "page"])
async def test_a_look_that_cannot_list_the_pods_is_counted(scaled: Scaled, answer: str,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """The autoscaler's list of the pods, which the API server cannot serve (503), or which a proxy in front of it
    answers with a page of its own (200 text/html), is counted as a look's failure (``scope="autoscaler"``,
    ApiUnavailable), once per look, nothing else counted: blind, it writes and decides nothing (the sessions that
    changed meanwhile are not in the status), a WARNING line each, no traceback; served again, the next look sees them,
    uncounted. Before, each 503 was a WARNING line alone; the page was counted Internal (the look read a string as the
    list), with a traceback, and ended the autoscaler's daemon until kopf started it again."""
    cluster = scaled.cluster
    await scaled.settled()
    before, since = reconcile_errors(), len(list(cluster.emulator))
    if answer == "page":
        cluster.emulator.garbled[("pods", "", None)] = PROXY_PAGE
    else:
        cluster.emulator.failing[("pods", "", None)] = (503, "ServiceUnavailable", "etcdserver: leader changed")

    def counted() -> dict[tuple[str, str], float]:
        return {key: n - before.get(key, 0) for key, n in reconcile_errors().items() if n != before.get(key, 0)}

    def failed_looks() -> float:
        return counted().get(("autoscaler", "ApiUnavailable"), 0)

    # the sessions change once a look has failed: a look under way when the list began failing had listed the pods
    # already, and would read the new sessions (trial 109: the status said 1); the looks run one after another
    async def one_failed() -> bool:
        return failed_looks() >= 1
    await cluster.eventually(one_failed, PATIENCE)
    scaled.script.loads["en-us-0"] = (1, 0.0)

    async def blind() -> bool:
        return failed_looks() >= 3  # a look every 0.2 s here
    await cluster.eventually(blind, PATIENCE)
    assert ((await scaled.status()).get("autoscaling") or {}).get("sessions") != 1
    sent = operator_requests(cluster, since)
    assert set(counted()) == {("autoscaler", "ApiUnavailable")}, counted()
    assert counted()[("autoscaler", "ApiUnavailable")] <= sent.get("GET pods", 0), sent
    assert not any(k.startswith(("PATCH", "GET speechtotexts")) for k in sent), sent
    cluster.emulator.failing.pop(("pods", "", None), None)
    cluster.emulator.garbled.pop(("pods", "", None), None)

    async def seen() -> bool:
        return ((await scaled.status()).get("autoscaling") or {}).get("sessions") == 1
    await cluster.eventually(seen, PATIENCE)
    failed = counted()
    await asyncio.sleep(1)  # five looks more, served
    assert counted() == failed and set(failed) == {("autoscaler", "ApiUnavailable")}, counted()
    assert not [r.getMessage() for r in caplog.records if r.exc_info], "no traceback"
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "autoscaling" in r.getMessage()]
    assert said and ("no JSON object: '<html>" in said[0] if answer == "page" else "HTTP 503" in said[0]), said


async def test_a_pod_answering_json_that_is_no_object_is_silent_not_a_failed_look(
        scaled: Scaled, caplog: pytest.LogCaptureFixture) -> None:
    """A ready pod whose ``/sessions`` answers JSON that is no object (``[]``: something else listening at its IP and
    port) is a pod that does not report its sessions (a WARNING line a look), as one answering no JSON is: the looks go
    on, none fails, nothing counted. Before, each look failed on it (``'list' object has no attribute 'get'``),
    counted Internal with a traceback, and the autoscaler's daemon ended until kopf started it again 60 s later."""
    cluster = scaled.cluster
    await scaled.settled()
    before = reconcile_errors()
    asked = scaled.script.asked
    scaled.script.odd["en-us-0"] = []

    async def looked() -> bool:
        return scaled.script.asked - asked >= 5  # a look every 0.2 s here
    await cluster.eventually(looked, PATIENCE)
    assert {k: n - before.get(k, 0) for k, n in reconcile_errors().items() if n != before.get(k, 0)} == {}
    assert not [r.getMessage() for r in caplog.records if r.exc_info], "no traceback"
    said = [r.getMessage() for r in caplog.records if "did not report its sessions" in r.getMessage()]
    assert said and said[0] == "pod en-us-0 did not report its sessions: answered list JSON, no object", said


#: An HPA pointed at the SpeechToText's Deployment instead of at the SpeechToText (speech_operator.foreign_autoscalers).
HPA = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "web", "namespace": NAMESPACE},
       "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "en-us"}, "maxReplicas": 5}}


async def yielded(scaled: Scaled) -> bool:
    """The operator says the HPA scales the Deployment and has no autoscaling status of its own."""
    status = await scaled.status()
    degraded = next((c for c in status.get("conditions") or [] if c["type"] == "Degraded"), {})
    return degraded.get("reason") == "ForeignAutoscaler" and "autoscaling" not in status


async def test_while_an_hpa_scales_the_deployment_the_autoscaler_decides_nothing(scaled: Scaled) -> None:
    """spec.autoscaling and an HPA pointed at the Deployment (speech_operator.foreign_autoscalers): the HPA's replicas
    are applied, so the operator's autoscaler says nothing of its own: no look at the pods, no ScaledUp event, no
    status.autoscaling (`kubectl describe` would show a decision of 3 pods while 1 runs). Once the HPA goes it decides
    again, and says so once. Before, it went on looking, decided 3 and said ScaledUp, none of it applied (the status
    kept its autoscaling, so the first wait below failed)."""
    cluster = scaled.cluster
    await scaled.looked_at()
    await cluster.api.create(cluster.url("autoscaling/v2", "horizontalpodautoscalers"), copy.deepcopy(HPA))
    await cluster.eventually(lambda: yielded(scaled), PATIENCE)
    scaled.script.loads["en-us-0"] = (5, 0.0)  # enough for 3 pods
    await scaled.stays(1, 0.5)  # a look begun before the HPA was known has ended
    asked = scaled.script.asked
    # no decision is there to be awaited: five of the autoscaler's periods (0.2 s here) pass without one
    await scaled.stays(1, 1.0)
    assert scaled.script.asked == asked, "the pods were asked for their sessions while the HPA holds the Deployment"
    assert await scaled.events("ScaledUp") == []
    assert "autoscaling" not in await scaled.status()

    await cluster.api.delete(cluster.url("autoscaling/v2", "horizontalpodautoscalers", "web"))
    await scaled.becomes(3)
    assert await scaled.events("ScaledUp") == ["5 sessions on 1 pod (target 2 per pod): 1 → 3"]


async def test_once_an_hpa_goes_the_autoscaler_starts_from_the_replicas_it_left(scaled: Scaled) -> None:
    """An HPA on the Deployment scaled it to 3 pods, which hold 5 sessions (3 pods at the target of 2); it is deleted:
    the 3 pods stay, the autoscaler's status starts at 3, and its first look decides 3 again (no event). Before, the
    reconcile that saw the HPA go applied spec.replicas (1) at once, 2 pods and their sessions removed, and the next
    look scaled back up (ScaledUp). The write of the Deployment's fingerprint (no longer naming the HPA) is no Updated
    event either."""
    cluster = scaled.cluster
    await cluster.api.create(cluster.stt_url(), copy.deepcopy(BODY))
    await scaled.becomes(1)
    await scaled.ready_pods(1)
    await cluster.api.create(cluster.url("autoscaling/v2", "horizontalpodautoscalers"), copy.deepcopy(HPA))
    await cluster.eventually(lambda: yielded(scaled), PATIENCE)
    scaled.script.loads = {"en-us-0": (2, 0.0), "en-us-1": (2, 0.0), "en-us-2": (1, 0.0)}
    await cluster.api.patch(cluster.url("apps/v1", "deployments", "en-us"), {"spec": {"replicas": 3}})  # the HPA's /scale
    await scaled.ready_pods(3)
    await cluster.eventually(lambda: scaled.desired(3), PATIENCE)
    updated = await scaled.events("Updated")

    await cluster.api.delete(cluster.url("autoscaling/v2", "horizontalpodautoscalers", "web"))

    async def looked() -> dict[str, Any] | None:  # the autoscaler's first look since: it saw the 5 sessions
        status = await scaled.status()
        degraded = next((c for c in status.get("conditions") or [] if c["type"] == "Degraded"), {})
        autoscaling = status.get("autoscaling") or {}
        return autoscaling if degraded.get("status") == "False" and autoscaling.get("sessions") == 5 else None
    autoscaling = await cluster.eventually(looked, PATIENCE)
    assert (autoscaling["replicas"], autoscaling.get("lastDecision")) == (3, None)
    await scaled.stays(3, 0.5)
    assert scaled.pods.removed == []
    assert (await scaled.events("ScaledUp"), await scaled.events("ScaledDown")) == ([], [])
    assert await scaled.events("Updated") == updated, "the Deployment's fingerprint alone changed: no Updated event"
