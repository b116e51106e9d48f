"""A rollout under steady traffic: a recognizer pod is deleted while clients keep their connections alive.

Two real recognizer processes stand behind a stand-in for kube-proxy (:class:`tests.balancer.Balancer`:
each new connection to the Service goes to a ready pod, in turn; connections already open stay where
they are). The gateway routes ko-KR to that Service. The rollout, as a cluster runs it: the old pod
(backend 1) serves alone, the new pod (backend 0) becomes ready, then the old pod's deletion starts
(it leaves the endpoints), its preStop hook waits (shortened here from
:data:`~speech_recognizer.contract.PRE_STOP_SECONDS` to :data:`PRE_STOP_SECONDS`), and it gets SIGTERM
and drains. Meanwhile clients send REST recognitions without a pause, each on a kept-alive connection
opened while only the old pod was ready: through the gateway, and straight to the Service (an ingress
controller's upstream pool, an app's HTTP client). Not one may fail; a recognition in flight on the old
pod when the drain begins (a slow upload) is answered whole.

Before, the old pod kept its kept-alive connections and answered 503 ``draining`` on them, and the
gateway kept its own to the old pod in its pool: in four runs, 3 to 103 of the answers through the gateway
(24 to 119) and 1 to 4 of those straight to the Service (10 to 15) were 503.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.balancer import Balancer
from tests.support import starved_clock, within

from .conftest import Recognizer, Stack, speech_to_text, start_recognizer

REST = "/speech/recognition/conversation/cognitiveservices/v1?language=ko-KR&format=simple"
#: The old pod's preStop wait here (a pod's is 5 s: how long the endpoints take to drop it everywhere).
PRE_STOP_SECONDS = 0.5
#: Clients sending recognitions through the gateway at once.
GATEWAY_CLIENTS = 2
#: How long a recognition (and a step of the rollout: the first answers, the old pod's exit) may take, in time this
#: process and its children (the recognizers; the gateway is in it) did not wait for a CPU (:func:`within`): a request
#: no answer ends within it was dropped.
ANSWER_SECONDS = 60.0
#: Each request's own bound by the clock: only past :func:`within`'s, so that a slow answer on a starved machine is
#: not taken for a dropped one (a dropped one is: its client does not finish within :data:`ANSWER_SECONDS`).
REQUEST_TIMEOUT = httpx.Timeout(starved_clock(ANSWER_SECONDS) + 30)


def record(answers: list[tuple[int, str]], send: Callable[[], httpx.Response]) -> None:
    """Keeps the answer to ``send()``'s request in ``answers``: its status and text (a 200's ``DisplayText``); a
    transport error as status 0 and its text."""
    try:
        answer = send()
        answers.append((answer.status_code, answer.json().get("DisplayText", "") if answer.status_code == 200 else answer.text))
    except httpx.HTTPError as exc:
        answers.append((0, repr(exc)))


class Client(threading.Thread):
    """Sends the same recognition again and again on one kept-alive HTTP client until told to stop; keeps
    each answer's status and text (a transport error is kept as status 0 and its text)."""

    def __init__(self, base: str, audio: bytes) -> None:
        super().__init__(name=f"client-{base}", daemon=True)
        self.base, self.audio = base, audio
        self.answers: list[tuple[int, str]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=REQUEST_TIMEOUT) as http:
            while not self.stop.is_set():
                record(self.answers, lambda: http.post(REST, content=self.audio, headers={"Content-Type": "audio/wav"}))

    def failed(self) -> list[tuple[int, str]]:
        return [a for a in self.answers if a[0] != 200]


def paced(audio: bytes, seconds: float, sent: threading.Event) -> Iterator[bytes]:
    """``audio`` in pieces over ``seconds`` (a client uploading as it records); ``sent`` once three are."""
    step = len(audio) // 20 + 1
    for i in range(0, len(audio), step):
        yield audio[i:i + step]
        if i >= 2 * step:  # the server has had its head for a while: the recognition runs
            sent.set()
        time.sleep(seconds / 20)


@pytest.fixture(scope="module")
def pods(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Recognizer]]:
    root = tmp_path_factory.mktemp("rollout")
    pods = [start_recognizer(root, "ko-KR") for _ in range(2)]
    try:
        for pod in pods:
            pod.wait_ready()
        yield pods
    finally:
        for pod in pods:
            pod.kill()


def test_a_rollout_under_keep_alive_traffic_fails_no_request(pods: list[Recognizer], speech_wav: Path, tmp_path: Path) -> None:
    new, old = pods
    audio = speech_wav.read_bytes()
    with Balancer([new.port, old.port], ready=[1]) as service, Stack(tmp_path) as stack:
        stack.create(speech_to_text("ko-kr", "ko-KR", service.port))
        stack.serving("ko-KR")
        clients = [Client(stack.http, audio) for _ in range(GATEWAY_CLIENTS)]
        direct = Client(service.http, audio)
        for client in (*clients, direct):
            client.start()
        within(ANSWER_SECONDS, lambda: all(len(c.answers) >= 2 for c in (*clients, direct)), "answers from the old pod")
        service.add(0)  # the new pod is ready
        time.sleep(1.0)
        service.remove(1)  # the old pod's deletion begins
        time.sleep(PRE_STOP_SECONDS)
        assert service.open[1] > 0, "no kept-alive connection reaches the old pod: the test would show nothing"
        kept = service.open[1]

        # a recognition in flight on the old pod when it drains (a client that connected before it left the endpoints)
        uploading, in_flight = threading.Event(), list[tuple[int, str]]()
        slow = threading.Thread(target=record, daemon=True, args=(in_flight, lambda: httpx.post(
            old.http + REST, content=paced(audio, 3.0, uploading), headers={"Content-Type": "audio/wav"}, timeout=REQUEST_TIMEOUT)))
        slow.start()
        within(ANSWER_SECONDS, uploading.is_set, "the slow upload's start")
        before = [len(c.answers) for c in (*clients, direct)]
        old.process.send_signal(signal.SIGTERM)
        within(ANSWER_SECONDS, lambda: not slow.is_alive(), "the answer to the upload in flight when the old pod drained")
        time.sleep(1.0)
        for client in (*clients, direct):
            client.stop.set()
        within(ANSWER_SECONDS, lambda: not any(c.is_alive() for c in (*clients, direct)), "the clients' requests in flight")
        within(ANSWER_SECONDS, lambda: old.process.poll() is not None, "the old pod's exit after its drain")
        assert old.process.returncode == 0, old.output()

    answers = [a for c in clients for a in c.answers]
    expected = clients[0].answers[0][1]
    during = [len(c.answers) - n for c, n in zip((*clients, direct), before, strict=True)]
    print(f"{kept} kept-alive connection(s) to the old pod when it was removed; answers after its SIGTERM: {during}; "
          f"through the gateway: {Counter(s for s, _ in answers)}, straight to the Service: {Counter(s for s, _ in direct.answers)}")
    assert expected, clients[0].answers[0]
    assert all(during), f"a client sent nothing during the drain: the test would show nothing: {during}"
    assert not [a for c in clients for a in c.failed()], [a for c in clients for a in c.failed()]
    assert all(text == expected for _, text in answers), Counter(answers)
    assert not direct.failed(), direct.failed()
    assert in_flight == [(200, expected)], in_flight
