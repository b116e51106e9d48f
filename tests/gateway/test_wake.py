"""A locale at zero pods: the gateway holds its requests, asks the operator for a pod, and forwards
them once one is ready; past its bounds it refuses clearly.

The wake path end to end: kmock is the API server; the real kopf operator watches it; the gateway
routes; tests/controllers.py "is the kubelet": when the Deployment's replicas go to 1 it starts a
real recognizer process (ja-JP: the Korean model under that name, tests/gateway/conftest.py) on
the SpeechToText's Service port and reports the pod ready once the recognizer's /ready says so, and
stops it when the replicas go back to 0. Each protocol wakes the locale once: the real Speech SDK,
REST, /vosk and OpenAI's client.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import socket
import threading
import time
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from harness.hostile_inputs import responses
from speech_operator import api
from speech_operator.config import OperatorConfig
from speech_operator.gateway import GatewayConfig
from speech_operator.kube import MERGE_PATCH
from speech_recognizer.connection_cap import CONTINUE
from speech_recognizer.results import written
from tests.controllers import Replicas
from tests.recognizer.test_vosk_ws import stream, texts
from tests.support import Reference, ServerThread, Starved, Timed, free_port, read_wav, within
from tests.usp.sdk import assert_matches, config, once

from .conftest import NAMESPACE, Recognizer, Stack, operator, speech_to_text, start_recognizer

REST = "/speech/recognition/conversation/cognitiveservices/v1"
AT_ZERO = {"minReplicas": 0, "maxReplicas": 1, "scaleDownDelaySeconds": 0, "idleSecondsToZero": 300}


def get_stt(stack: Stack, name: str) -> dict:
    return stack.call(stack.objects.get_namespaced_custom_object(api.GROUP, api.VERSION, NAMESPACE, api.PLURAL, name))


# ---- the bounds (no operator: nobody wakes the locale) -----------------------------------------------
@contextmanager
def never_woken(tmp_path: Path, hold_seconds: float) -> Iterator[Stack]:
    """A locale at zero pods that never wakes; the gateway holds for ``hold_seconds``, one request at a time."""
    with Stack(tmp_path, GatewayConfig(host="127.0.0.1", port=0, hold_seconds=hold_seconds, max_held=1)) as stack:
        stack.create(speech_to_text("ja-jp", "ja-JP", free_port(), replicas=0, autoscaling=AT_ZERO), ready=0)
        stack.routes("ja-JP")
        yield stack


@pytest.fixture
def asleep(tmp_path: Path) -> Iterator[Stack]:
    """A locale at zero pods that never wakes; the gateway holds for 2 s, one request at a time."""
    with never_woken(tmp_path, 2) as stack:
        yield stack


def quick(starved: Starved, run: Timed) -> float:
    """``run``'s seconds in time neither its thread nor the gateway (nor anything else of this process) waited for a
    CPU (:meth:`~tests.support.Starved.unstarved`): by the clock, such bounds failed at load 20."""
    return starved.unstarved(run.start, run.end)


def test_a_held_request_asks_for_a_pod_and_is_refused_past_the_hold(asleep: Stack, speech_wav: Path) -> None:
    """Refused once the hold (2 s) is over: not before it by the clock, and within 5 s in time not waiting for a CPU."""
    sent_at = datetime.datetime.now(datetime.UTC)
    with Starved() as starved:
        started = time.monotonic()
        answer = httpx.post(f"{asleep.http}{REST}?language=ja-JP", content=speech_wav.read_bytes(),
                            headers={"Content-Type": "audio/wav"}, timeout=60)
        run = Timed.since(started)
    assert 2 <= run.clock and quick(starved, run) < 5, f"{run.clock:.1f} s, {quick(starved, run):.1f} s of it not waiting for a CPU"
    assert (answer.status_code, answer.headers["Retry-After"]) == (503, "10")
    assert answer.json()["error"] == {"code": "ServiceUnavailable", "message":
                                      "no recognizer of ja-JP became ready within 2 s; it may still be starting: try again"}
    demand = get_stt(asleep, "ja-jp")["status"]["demand"]
    requested = datetime.datetime.fromisoformat(demand["requestedAt"].replace("Z", "+00:00"))
    # asked for while held (requestedAt in whole seconds)
    assert sent_at - datetime.timedelta(seconds=1) <= requested <= datetime.datetime.now(datetime.UTC), (sent_at, demand)
    asked = [r for r in list(asleep.emulator) if r.method == "PATCH" and r.subresource == "status"
             and "demand" in ((r.data or {}).get("status") or {})]
    assert asked and all(r.params.get("fieldManager") == "speech-gateway" for r in asked), "under the gateway's field manager"
    assert len(asked) == 1, "asked once: again only every 5 s while it still holds"


#: The hold of the test of the cap: a second request held too would wait this long before its 503.
CAP_HOLD_S = 5


def test_one_request_past_the_cap_is_refused_at_once(tmp_path: Path, speech_wav: Path) -> None:
    with never_woken(tmp_path, CAP_HOLD_S) as asleep:
        first: dict = {}
        holder = threading.Thread(target=lambda: first.update(r=httpx.post(
            f"{asleep.http}{REST}?language=ja-JP", content=speech_wav.read_bytes(), timeout=30)))
        holder.start()
        within(10, lambda: asleep.call(_held(asleep)) == 1, "the first request held")  # a hang guard
        with Starved() as starved:
            started = time.monotonic()
            second = httpx.post(f"{asleep.http}{REST}?language=ja-JP", content=speech_wav.read_bytes(), timeout=60)
            run = Timed.since(started)
        holder.join()
    # in time not waiting for a CPU: by the clock, this bound failed at load 20
    assert quick(starved, run) < CAP_HOLD_S - 2, f"answered {run.clock:.1f} s later ({quick(starved, run):.1f} s not waiting for a CPU): held, not refused at once"
    assert (second.status_code, second.headers["Retry-After"]) == (503, "5")
    assert "1 requests already wait for recognizers here (at most 1)" in second.json()["error"]["message"]
    assert first["r"].status_code == 503


async def _held(stack: Stack) -> int:
    async with httpx.AsyncClient() as client:
        metrics = (await client.get(f"{stack.http}/metrics")).text
    return int(float(next(line.split()[-1] for line in metrics.splitlines() if line.startswith("speech_gateway_held "))))


def held_request(route: str, audio: bytes, language: str) -> bytes:
    """A whole REST or OpenAI request of ``audio`` for ``language``, as a client writes it."""
    if route == "rest":
        head, body = f"POST {REST}?language={language} HTTP/1.1\r\nHost: speech\r\nContent-Type: audio/wav\r\n", audio
    else:
        boundary = "held-form"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"language\"\r\n\r\n{language}\r\n--{boundary}\r\n"
                f"Content-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\n").encode()
        body += audio + f"\r\n--{boundary}--\r\n".encode()
        head = (f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: speech\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\n")
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


#: Short requests held: one the gateway reads whole (0.4 s of audio: its client's FIN is read), and one whose end waits
#: unread in the gateway's socket (1.5 s: aiohttp stops reading past 32 KiB; its FIN is seen in the TCP state).
SHORT_HELD = pytest.mark.parametrize(("route", "size"), [("rest", 12800), ("rest", 48000), ("openai", 48000)],
                                     ids=["rest, read whole", "rest, partly unread", "openai"])


@SHORT_HELD
def test_a_held_request_whose_client_leaves_is_let_go_at_once(tmp_path: Path, speech_wav: Path, route: str, size: int) -> None:
    """A client that sent its whole request and left while its locale woke: its hold ends at once (``client_gone``). It
    was held to the hold's end (the gateway asking the operator again every 5 s, and taking one of SPEECH_GATEWAY_MAX_HELD),
    then relayed to a woken recognizer, a decoder spent on an answer nobody reads. The wake asked for goes on.
    A longer request's FIN waits in its client's kernel behind what the gateway has not taken, and is seen once the
    relay reads it, at the wake's end."""
    with never_woken(tmp_path, 30) as asleep:
        with socket.create_connection(("127.0.0.1", asleep.port)) as client:
            client.sendall(held_request(route, speech_wav.read_bytes()[:size], "ja-JP"))
            within(10, lambda: asleep.call(_held(asleep)) == 1, "the request held")  # a hang guard
        # let go within 3 s (the hold is 30) in time not waiting for a CPU
        within(3, lambda: asleep.call(_held(asleep)) == 0, "the hold let go once its client left")
        metrics = httpx.get(f"{asleep.http}/metrics").text
        assert 'speech_gateway_failures_total{locale="ja-JP",reason="client_gone"} 1.0' in metrics, metrics


@SHORT_HELD
def test_a_held_request_whose_client_half_closes_is_answered_once_its_locale_wakes(
        tmp_path: Path, server: ServerThread, speech_wav: Path, route: str, size: int) -> None:
    """A client that sent its whole request and half-closed (``shutdown(SHUT_WR)``: ``nc -N``, a proxy passing its
    client's half-close on) while its locale woke still reads: it is held, and answered once a pod is ready (here: the
    session's recognizer, made ready by its status), as a half-closed client of a ready locale is. Before, its FIN was
    taken for leaving: 499 at once (``client_gone``), the wake asked for going on for nobody."""
    with Stack(tmp_path, GatewayConfig(host="127.0.0.1", port=0, hold_seconds=30, max_held=1)) as stack:
        stack.create(speech_to_text("ko-kr", "ko-KR", server.port, replicas=0, autoscaling=AT_ZERO), ready=0)
        stack.routes("ko-KR")
        with socket.create_connection(("127.0.0.1", stack.port), timeout=180) as client:  # a hang guard (30 s failed at load 25)
            client.sendall(held_request(route, speech_wav.read_bytes()[:size], "ko-KR"))
            within(10, lambda: stack.call(_held(stack)) == 1, "the request held")  # a hang guard
            client.shutdown(socket.SHUT_WR)
            time.sleep(1)  # twice the gateway's look at the connection's TCP state (LEAVING_POLL_SECONDS)
            assert stack.call(_held(stack)) == 1, "the half-closed client was let go as if it had left"
            stack.call(stack.objects.patch_namespaced_custom_object_status(
                api.GROUP, api.VERSION, NAMESPACE, api.PLURAL, "ko-kr", {"status": {"readyReplicas": 1, "replicas": 1}},
                _content_type=MERGE_PATCH))
            answer = b"".join(iter(lambda: client.recv(65536), b""))
        metrics = httpx.get(f"{stack.http}/metrics").text
    assert answer.count(CONTINUE) <= 1, answer[:300]  # asked whether it still reads
    [(status, _, body)] = responses(answer.replace(CONTINUE, b""))
    assert status == 200 and (json.loads(body).get("DisplayText") or json.loads(body).get("text")), answer[-300:]
    assert "client_gone" not in metrics, metrics


def test_a_held_stream_keeps_its_keepalive_and_is_closed_with_1013(asleep: Stack) -> None:
    """Its pings are answered while it waits (a ping sent with its request has its pong before the close, which comes
    at the hold's end), and past the hold it gets 1013 with the reason. A keepalive's deadline (0.3 s by the clock)
    judged this by how soon the pong came, which a loaded machine stretches; what is judged now is that it came."""
    with connect(f"{asleep.ws}/vosk?language=ja-jp", ping_interval=None) as ws:
        ws.send(json.dumps({"config": {"sample_rate": 16000}}))
        ws.send(b"\0" * 3200)
        pong = ws.ping()
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=60)  # a hang guard: the hold is 2 s
    assert pong.is_set(), "the held stream's ping was not answered before its close"
    frame = closed.value.rcvd
    assert frame is not None and frame.code == 1013, closed.value
    assert frame.reason == "no recognizer of ja-JP became ready within 2 s; it may still be starting: try again"


# ---- the wake path end to end ------------------------------------------------------------------------
@dataclass
class Recognizing:
    """What stands behind the pod: a real recognizer process on the Service's port."""

    recognizer: Recognizer

    @property
    def port(self) -> int:
        return self.recognizer.port

    async def stop(self) -> None:  # the kubelet's SIGTERM: the recognizer drains (nothing runs) and exits
        self.recognizer.process.terminate()
        await asyncio.to_thread(self.recognizer.process.wait, 60)


@dataclass
class Woken:
    stack: Stack
    pods: Replicas

    def wake_seconds(self) -> tuple[float, float]:
        """(started -> ready) of the last pod: the recognizer's own start and warm-up."""
        started = max(t for t, what, _ in self.pods.history if what == "started")
        ready = max(t for t, what, _ in self.pods.history if what == "ready")
        return started, ready

    def at_zero(self, timeout: float = 30) -> None:
        """Until the locale is back at zero pods: a hang guard in time not waiting for a CPU."""
        within(timeout, lambda: not self.pods.pods and self.stack.directory.get((NAMESPACE, "ja-jp")).ready_replicas == 0,
               "back at zero pods")


@pytest.fixture
def woken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Woken]:
    port = free_port()
    with Stack(tmp_path, GatewayConfig(host="127.0.0.1", port=0, hold_seconds=120)) as stack:
        monkeypatch.setenv("KUBECONFIG", str(stack.kubeconfig))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)

        async def start(name: str) -> Recognizing:
            return Recognizing(start_recognizer(tmp_path, "ja-JP", port=port))

        with operator(OperatorConfig(image="example.test/recognizer", version="1.2.3", autoscale_seconds=0.25)):
            assert stack.kube is not None
            pods = Replicas(stack.kube, NAMESPACE, "ja-jp", start)
            keeper = stack.call(_spawn(pods.run()))
            try:
                stack.create(speech_to_text("ja-jp", "ja-JP", port, replicas=0, autoscaling={**AT_ZERO, "idleSecondsToZero": 1}),
                             ready=0)
                stack.routes("ja-JP")
                yield Woken(stack, pods)
            finally:
                stack.call(_cancel(keeper), timeout=90)  # its recognizers stopped


def test_each_protocol_wakes_a_locale_at_zero_and_gets_its_answer(woken: Woken, speech_wav: Path, speech_ref: Reference) -> None:
    """Each wake starts a recognizer process, whose first decoding is a new (cold) recognizer's: each protocol
    sends the one-utterance recording, and its answer is in-process Vosk's."""
    stack = woken.stack
    assert not woken.pods.pods, "the locale starts at zero pods"

    # The Speech SDK: its connection is accepted at once and held; its first answer comes late, not as an error.
    asked = time.monotonic()
    result = once(config(stack.ws, language="ja-JP"), speech_wav)
    answered = time.monotonic()
    assert_matches(result, speech_ref.phrases[0])
    started, ready = woken.wake_seconds()
    assert asked < started < ready < answered
    print(f"\nwake (Speech SDK): first result {answered - asked:.1f} s after the request: pod started after "
          f"{started - asked:.1f} s, the recognizer's start and warm-up {ready - started:.1f} s, "
          f"answer {answered - ready:.1f} s after ready")
    reasons = [e["reason"] for e in stack.call(_events(stack))]
    assert "WokenUp" in reasons
    woken.at_zero()
    assert "ScaledToZero" in [e["reason"] for e in stack.call(_events(stack))]

    # REST: held with its body unread, then forwarded.
    asked = time.monotonic()
    answer = httpx.post(f"{stack.http}{REST}?language=ja-JP&format=detailed", content=speech_wav.read_bytes(),
                        headers={"Content-Type": "audio/wav"}, timeout=180)
    assert answer.status_code == 200, answer.text
    assert answer.json()["NBest"][0]["Lexical"] == " ".join(speech_ref.texts)
    print(f"wake (REST): answer {time.monotonic() - asked:.1f} s after the request")
    woken.at_zero()

    # vosk: what the client sent while it waited goes first, in order.
    pcm, rate, _ = read_wav(speech_wav)
    asked = time.monotonic()
    finals = stream(f"{stack.ws}/vosk?language=ja-JP", pcm, 3200, {"sample_rate": rate})
    assert texts(finals) == speech_ref.texts
    print(f"wake (vosk): last result {time.monotonic() - asked:.1f} s after the request")
    woken.at_zero()

    # OpenAI's client: its form is read up to the language field (``ja`` alone), then held and forwarded.
    asked = time.monotonic()
    client = openai.OpenAI(base_url=f"{stack.http}/v1", api_key="unused", timeout=180, max_retries=0)
    verbose = client.audio.transcriptions.create(model="whisper-1", file=speech_wav.open("rb"), language="ja",
                                                 response_format="verbose_json")
    assert verbose.language == "ja-JP"
    assert [s.text for s in verbose.segments] == [written(p.text) for p in speech_ref.phrases]
    print(f"wake (OpenAI): answer {time.monotonic() - asked:.1f} s after the request")
    assert len(woken.pods.started) == 4, "one pod per wake"


async def _spawn(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    return asyncio.create_task(coro)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def _events(stack: Stack) -> list[dict]:
    assert stack.kube is not None
    listing = await stack.kube.get(f"/api/v1/namespaces/{NAMESPACE}/events")
    return (listing or {}).get("items", [])


def test_a_locale_scaled_to_zero_by_hand_is_refused_at_once(tmp_path: Path, speech_wav: Path) -> None:
    """Without spec.autoscaling nothing would wake it: no hold, the reason at once."""
    with Stack(tmp_path) as stack:
        stack.create(speech_to_text("ja-jp", "ja-JP", free_port(), replicas=0), ready=0)
        stack.routes("ja-JP")
        with Starved() as starved:
            started = time.monotonic()
            answer = httpx.post(f"{stack.http}{REST}?language=ja-JP", content=speech_wav.read_bytes(), timeout=60)
            run = Timed.since(started)
        assert quick(starved, run) < 10, f"held (for the default hold, 120 s), not refused at once: {run.clock:.1f} s"
        assert answer.status_code == 503 and "scaled to 0 replicas and nothing wakes it" in answer.json()["error"]["message"]


def refused_at_once(stack: Stack, speech_wav: Path) -> httpx.Response:
    """A REST request for ja-JP through the gateway, answered within 2 s in time not waiting for a CPU (a refusal, not a
    hold)."""
    with Starved() as starved:
        started = time.monotonic()
        answer = httpx.post(f"{stack.http}{REST}?language=ja-JP", content=speech_wav.read_bytes(),
                            headers={"Content-Type": "audio/wav"}, timeout=60)
        run = Timed.since(started)
    assert quick(starved, run) < 2, f"answered after {run.clock:.1f} s ({quick(starved, run):.1f} s not waiting for a CPU): held, not refused at once"
    return answer


@pytest.mark.parametrize("reason", ["SpecTooLarge", "PolicyViolation"])
def test_a_locale_whose_spec_the_operator_refuses_is_refused_at_once_naming_why(tmp_path: Path, speech_wav: Path,
                                                                              monkeypatch: pytest.MonkeyPatch, reason: str) -> None:
    """The real operator refuses the SpeechToText (130 KB of annotations of one's own: SpecTooLarge; an image its policy
    does not allow: PolicyViolation) and so makes no Deployment, no pod: the gateway refuses a request for the locale
    at once, 503 and the reason first, a stream with 1013 and that reason. Before, each was held for the hold (3 s here,
    120 s by default) asking for a pod nobody would make (spec.replicas 1), then refused as a wake that timed out."""
    with Stack(tmp_path, GatewayConfig(host="127.0.0.1", port=0, hold_seconds=3)) as stack:
        monkeypatch.setenv("KUBECONFIG", str(stack.kubeconfig))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        body = speech_to_text("ja-jp", "ja-JP", free_port())
        if reason == "SpecTooLarge":
            body["metadata"]["annotations"] = {"example.com/notes": "x" * 130_000}
        else:
            body["spec"]["image"] = "elsewhere.example/recognizer"
        with operator(OperatorConfig(image="example.test/recognizer", version="1.2.3")):
            stack.create(body, ready=0)
            stack.eventually(lambda: (b := stack.directory.get((NAMESPACE, "ja-jp"))) is not None and b.refused == reason,
                             20, "the operator's refusal seen by the gateway")
            answer = refused_at_once(stack, speech_wav)
            message = answer.json()["error"]["message"]
            assert answer.status_code == 503 and message.startswith(
                f"{reason}: the operator refuses the SpeechToText of ja-JP (speech/ja-jp)"), (answer.status_code, message)
            with connect(f"{stack.ws}/vosk?language=ja-jp") as ws, pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=60)  # a hang guard: its reason tells the refusal from the hold's end (3 s)
            frame = closed.value.rcvd
            assert frame is not None and frame.code == 1013 and frame.reason.startswith(f"{reason}: the operator refuses"), closed.value
            assert "demand" not in get_stt(stack, "ja-jp")["status"], "the operator was asked for a pod"


async def test_a_pod_ready_while_the_gateway_asks_is_seen_at_once() -> None:
    """The readiness that arrives while the gateway is writing its demand is not missed (it would
    have waited for its next ask, 5 s later)."""
    from speech_operator.gateway_directory import Directory
    from speech_operator.gateway_wake import ASK_AGAIN_SECONDS, Waker

    asleep = {**speech_to_text("ja-jp", "ja-JP", 5000, autoscaling=AT_ZERO), "status": {"readyReplicas": 0}}
    directory = Directory()
    directory.upsert(asleep)

    class Asking(Waker):
        async def _ask(self, backend: object) -> None:  # the operator and the pod, quicker than the write
            directory.upsert({**asleep, "status": {"readyReplicas": 1}})

    started = time.monotonic()
    backend = await Asking(directory, None, hold_seconds=30).ready(directory.lookup("ja-JP"))
    assert backend.ready_replicas == 1
    assert time.monotonic() - started < ASK_AGAIN_SECONDS / 2, f"seen at the next ask ({ASK_AGAIN_SECONDS:g} s later), not at once"


@pytest.mark.parametrize(("spec_replicas", "held"), [(0, 2), (1, 0)], ids=["hpa-above-spec-0", "at-zero-unnamed"])
async def test_a_deployment_an_hpa_holds_is_waited_for_not_refused(spec_replicas: int, held: int) -> None:
    """An HPA pointed at the Deployment holds its replicas (speech_operator.foreign_autoscalers), and the status says
    its choice (status.desiredReplicas, as the operator writes it): at 2 over a spec.replicas of 0 its pods are
    coming. Held until a pod is ready, not refused as "nothing wakes it". Before, the gateway read spec.replicas: it
    was refused at once. At 0 over a spec.replicas of 1 with no autoscaler named (an operator from before
    status.foreignAutoscalers) it is held as before. One the spec and the operator both say is at 0 is still refused
    at once."""
    from speech_operator import gateway_failures as failures
    from speech_operator.gateway_directory import Directory
    from speech_operator.gateway_wake import Waker

    body = {**speech_to_text("ja-jp", "ja-JP", 5000, replicas=spec_replicas),
            "status": {"observedGeneration": 1, "desiredReplicas": held, "readyReplicas": 0}}
    directory = Directory()
    directory.upsert(body)
    waker = Waker(directory, None, hold_seconds=30)
    waiting = asyncio.ensure_future(waker.ready(directory.lookup("ja-JP")))
    await asyncio.sleep(0)  # one step of the task: to its first wait, or to its refusal
    assert not waiting.done() and waker.held == 1, waiting.done() and waiting.exception()
    directory.upsert({**body, "status": {**body["status"], "readyReplicas": 1}})
    assert (await asyncio.wait_for(waiting, 5)).ready_replicas == 1

    directory.upsert({**body, "spec": {**body["spec"], "replicas": 0}, "status": {**body["status"], "desiredReplicas": 0}})
    with pytest.raises(failures.Failure, match="scaled to 0 replicas and nothing wakes it"):
        await waker.ready(directory.lookup("ja-JP"))


#: status.foreignAutoscalers as the operator writes it while KEDA's HPA for ScaledObject ja-jp scales the Deployment.
KEDA = [{"kind": "ScaledObject", "name": "ja-jp", "horizontalPodAutoscaler": "keda-hpa-ja-jp"}]
HELD_BY_KEDA = ("KEDA ScaledObject ja-jp (its HorizontalPodAutoscaler keda-hpa-ja-jp) holds the recognizer of ja-JP "
                "(speech/ja-jp) at 0 replicas, not its SpeechToText: the gateway cannot wake it; try again later")


def test_a_locale_keda_holds_at_zero_is_refused_at_once_naming_it(tmp_path: Path, speech_wav: Path) -> None:
    """spec.autoscaling, and KEDA's HPA holding the Deployment at 0 pods (the status as the operator writes it): REST
    gets 503 at once with Retry-After 30 (KEDA's default polling interval) and the ScaledObject named, a stream the
    close 1013 with that reason, and the operator is not asked (its autoscaler leaves the Deployment to KEDA). Before,
    each was held for the hold (5 s here, 120 by default) asking the operator, then refused as a wake that timed out."""
    with Stack(tmp_path, GatewayConfig(host="127.0.0.1", port=0, hold_seconds=5)) as stack:
        stack.create(speech_to_text("ja-jp", "ja-JP", free_port(), autoscaling=AT_ZERO), ready=0)
        stack.call(stack.objects.patch_namespaced_custom_object_status(
            api.GROUP, api.VERSION, NAMESPACE, api.PLURAL, "ja-jp",
            {"status": {"observedGeneration": 1, "desiredReplicas": 0, "foreignAutoscalers": KEDA}},
            _content_type="application/merge-patch+json"))
        stack.eventually(lambda: (b := stack.directory.get((NAMESPACE, "ja-jp"))) is not None and b.replicas == 0,
                         10, "the status seen")
        answer = refused_at_once(stack, speech_wav)
        assert (answer.status_code, answer.headers["Retry-After"]) == (503, "30")
        assert answer.json()["error"] == {"code": "ServiceUnavailable", "message": HELD_BY_KEDA}
        with connect(f"{stack.ws}/vosk?language=ja-jp") as ws, pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=60)  # a hang guard: its reason tells the refusal from the hold's end (5 s)
        frame = closed.value.rcvd
        assert frame is not None and frame.code == 1013, closed.value
        assert HELD_BY_KEDA.startswith(frame.reason.removesuffix("...")) and frame.reason.startswith("KEDA ScaledObject ja-jp"), frame.reason
        assert "demand" not in get_stt(stack, "ja-jp")["status"], "the operator was asked"
        metrics = httpx.get(f"{stack.http}/metrics").text
        assert 'speech_gateway_failures_total{locale="ja-JP",reason="held_at_zero"} 2.0' in metrics, metrics


async def test_a_held_request_is_refused_once_keda_is_seen_holding_its_locale_at_zero() -> None:
    """A request held for an autoscaled locale at zero (the operator would wake it), then the status says KEDA holds
    the Deployment at 0: refused then, not at the hold's end. Before, it was held on (30 s here)."""
    from speech_operator import gateway_failures as failures
    from speech_operator.gateway_directory import Directory
    from speech_operator.gateway_wake import Waker

    body = {**speech_to_text("ja-jp", "ja-JP", 5000, autoscaling=AT_ZERO),
            "status": {"observedGeneration": 1, "desiredReplicas": 0, "readyReplicas": 0}}
    directory = Directory()
    directory.upsert(body)
    waker = Waker(directory, None, hold_seconds=30)
    waiting = asyncio.ensure_future(waker.ready(directory.lookup("ja-JP")))
    await asyncio.sleep(0)  # one step of the task: to its first wait
    assert not waiting.done() and waker.held == 1, waiting.done() and waiting.exception()
    directory.upsert({**body, "status": {**body["status"], "foreignAutoscalers": KEDA}})
    with pytest.raises(failures.Failure) as refused:
        await asyncio.wait_for(waiting, 5)
    assert (refused.value.kind, refused.value.message) == (failures.HELD_AT_ZERO, HELD_BY_KEDA)
    assert waker.held == 0
