"""The gateway stopping (its rollout, its scale-down) in front of a real recognizer process: idle
WebSockets are closed with 1000 at once, so that apps connect again, and streams in progress end
normally before it exits.

The gateway is stopped as SIGTERM stops it in ``gateway.run`` (``serving`` ends: aiohttp's
shutdown, ``on_shutdown`` then the runner's ``shutdown_timeout``); the next gateway listens on the
same address, as another gateway pod behind the same Service.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import azure.cognitiveservices.speech as speechsdk
import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from harness.usp import client_audio_frame, client_text_frame
from speech_operator.gateway import GATEWAY, GatewayConfig
from speech_operator.gateway_shutdown import AFTER_DRAIN_SECONDS, IDLE_REASON, SETTLE_SECONDS, STOPPED_MIDSTREAM, STOPPED_UNANSWERED, Progress, Shutdown
from speech_recognizer.usp.frames import parse_text, text_frame
from tests.support import Reference, Starved, TcpServerThread, free_port, read_wav, scrape_metrics, within
from tests.usp.sdk import assert_same, config, continuous, expected, reported

from .conftest import Recognizer, Stack, speech_to_text, start_recognizer
from .test_wake import AT_ZERO

#: The gateway's shutdown_seconds here: what a stop must take much less than when nothing runs, and long enough for
#: what is in progress at the stop to end on a loaded machine (at load 25-30, 30 s cut a paced /vosk stream with 1001,
#: a Speech SDK recognition and a REST recognition sent during the drain with 503, before they ended).
SHUTDOWN_SECONDS = 120
#: How soon after the stop began an idle WebSocket must be closed, and the gateway have stopped when
#: nothing runs: the quiet it waits for after a turn, and a margin, in time this process and its children (the
#: gateway, the recognizer, the Speech SDK) did not wait for a CPU (:func:`within_of`); held for shutdown_seconds, it
#: is far past it.
PROMPT = SETTLE_SECONDS + 3
USP = "/speech/recognition/conversation/cognitiveservices/v1?language=ko-KR"
REST = USP


@pytest.fixture(scope="module")
def ko(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recognizer]:
    r = start_recognizer(tmp_path_factory.mktemp("gateway-shutdown"), "ko-KR")
    try:
        r.wait_ready()
        yield r
    finally:
        r.kill()


def gateway(tmp: Path, recognizer: Recognizer | TcpServerThread, port: int = 0, shutdown_seconds: float = SHUTDOWN_SECONDS,
            **config: Any) -> Stack:
    """A gateway (with its kmock and watch, ``config`` its other settings) routing ko-KR to ``recognizer``, listening on
    ``port``, once it sees its pod ready."""
    tmp.mkdir()
    stack = Stack(tmp, GatewayConfig(host="127.0.0.1", port=port, shutdown_seconds=shutdown_seconds, **config)).__enter__()
    stack.create(speech_to_text("ko-kr", "ko-KR", recognizer.port))
    stack.serving("ko-KR")
    return stack


def stopped_at(stack: Stack, stopping: float) -> float:
    """Once the gateway has stopped (:meth:`Stack.join`), when its stop ended: :attr:`Stack.stopped_in` after
    ``stopping`` (when the test called :meth:`Stack.stop`; the gateway's loop sees it a little later), the end of a
    stretch :func:`within_of` judges. Not looked for by polling: under load each look's wait for a CPU is taken out of
    the stretch, and a loop polling every 10 ms left a stop of 10 s under 1.5 s not waiting for a CPU."""
    stack.join()
    assert stack.stopped_in is not None, "the gateway's stop did not end"
    return stopping + stack.stopped_in


def within_of(starved: Starved, start: float, end: float, bound: float, what: str) -> None:
    """``what`` happened (at ``end``) within ``bound`` seconds of ``start`` in time this process and its children (the
    gateway, the recognizer, the Speech SDK) did not wait for a CPU (:meth:`~tests.support.Starved.unstarved`): a wait
    for a timer (shutdown_seconds, SETTLE_SECONDS) counts in full, a loaded machine's waits for a CPU do not (by the
    clock such bounds failed at load 20)."""
    quiet = starved.unstarved(start, end)
    assert quiet < bound, f"{what} {end - start:.1f} s later, {quiet:.1f} s of it not waiting for a CPU (bound {bound:g} s)"


def close_of(ws: ClientConnection) -> tuple[int, str, float]:
    """The close frame ``ws`` gets next (code, reason, when), reading whatever comes before it."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            ws.recv(timeout=SHUTDOWN_SECONDS + 10)
    assert closed.value.rcvd is not None, "closed without a close frame"
    return closed.value.rcvd.code, closed.value.rcvd.reason, time.monotonic()


@dataclass
class Stopped:
    """A gateway's stop as :func:`stop_closing` saw it: the closes its WebSockets got (code, reason, when), when the
    stop began and ended, and the waits for a CPU meanwhile (for :meth:`within`)."""

    starved: Starved
    stopping: float
    closes: list[tuple[int, str, float]]
    stopped: float

    def within(self, end: float, bound: float, what: str) -> None:
        """``what`` happened at ``end`` within ``bound`` of the stop's beginning (:func:`within_of`)."""
        within_of(self.starved, self.stopping, end, bound, f"the stop began; {what}")


def stop_closing(stack: Stack, *wss: ClientConnection) -> Stopped:
    """Stop the gateway of ``stack`` and read the close each of ``wss`` gets, until the stop has ended."""
    with Starved() as starved:
        stopping = time.monotonic()
        stack.stop()
        closes = [close_of(ws) for ws in wss]
        stopped = stopped_at(stack, stopping)
    return Stopped(starved, stopping, closes, stopped)


def usp_turn(ws: ClientConnection, pcm: bytes) -> list[str]:
    """One turn as the Speech SDK sends it; the paths the recognizer answered, up to ``turn.end``."""
    rid = uuid.uuid4().hex
    ws.send(client_text_frame("speech.config", None, {"context": {"audio": {"source": {"type": "Stream"}}}}))
    ws.send(client_text_frame("speech.context", rid, {"phraseDetection": {"language": "ko-KR"}}))
    for i in range(0, len(pcm), 3200):
        ws.send(client_audio_frame(rid, pcm[i:i + 3200]))
    ws.send(client_audio_frame(rid, b""))
    paths = []
    while not paths or paths[-1] != "turn.end":
        paths.append(parse_text(str(ws.recv(timeout=30))).path)
    return paths


def test_idle_sdk_apps_are_closed_with_1000_and_connect_again(ko: Recognizer, tmp_path: Path, speech_wav: Path,
                                                              utterances_wav: Path) -> None:
    """A Speech SDK app between recognitions is closed with 1000 and the reason as soon as the gateway
    stops, which then exits at once; the app's next recognition, with the same recognizer object,
    reaches the next gateway. It was held for shutdown_seconds and then dropped without a close
    frame, after which the SDK failed every recognition of that recognizer at once
    (SPXERR_START_RECOGNIZING_INVALID_STATE_TRANSITION)."""
    first = gateway(tmp_path / "first", ko)
    # A file of several utterances: each recognize_once takes the next one, on the connection it keeps.
    app = speechsdk.SpeechRecognizer(config(first.ws), audio_config=speechsdk.audio.AudioConfig(filename=str(utterances_wav)))
    assert_recognized(app.recognize_once())
    pcm, _, _ = read_wav(speech_wav)
    with connect(first.ws + USP, subprotocols=["USP"], open_timeout=10) as raw:  # type: ignore[list-item]
        assert usp_turn(raw, pcm)[-1] == "turn.end"  # what the app did, on a connection whose close is seen
        stop = stop_closing(first, raw)
    [(code, reason, closed)] = stop.closes
    assert (code, reason) == (1000, IDLE_REASON)
    stop.within(closed, PROMPT, "the idle connection closed")
    stop.within(stop.stopped, PROMPT, "the gateway stopped")

    second = gateway(tmp_path / "second", ko, port=first.port)
    try:
        assert_recognized(app.recognize_once())
    finally:
        second.__exit__()


def test_an_idle_vosk_connection_is_closed_with_1000(ko: Recognizer, tmp_path: Path) -> None:
    """A /vosk connection that has sent no audio (nothing, or only its config) is idle."""
    stack = gateway(tmp_path / "gateway", ko)
    with connect(f"{stack.ws}/vosk?language=ko-KR", open_timeout=10) as silent, \
            connect(f"{stack.ws}/vosk?language=ko-KR", open_timeout=10) as configured:
        configured.send(json.dumps({"config": {"sample_rate": 16000}}))
        time.sleep(0.2)  # the config has passed the gateway
        stop = stop_closing(stack, silent, configured)
    for code, reason, closed in stop.closes:
        assert (code, reason) == (1000, IDLE_REASON)
        stop.within(closed, PROMPT, "the idle connection closed")
    stop.within(stop.stopped, PROMPT, "the gateway stopped")


def test_a_speech_sdk_turn_with_no_audio_is_idle(ko: Recognizer, tmp_path: Path, speech_wav: Path) -> None:
    """A Speech SDK connection whose last turn has its ``speech.context`` and no audio (after a turn that ended) is idle,
    as the recognizer's own stop counts it: closed with 1000 and the reason at the stop, the gateway stopping at once. It
    was counted in progress: the stop held for shutdown_seconds, then cut it with 1001 (the recognizer keeps such a
    connection up to its ConnectionIdleSeconds, so nothing ended it sooner)."""
    stack = gateway(tmp_path / "gateway", ko)
    pcm, _, _ = read_wav(speech_wav)
    with connect(stack.ws + USP, subprotocols=["USP"], open_timeout=10) as raw:  # type: ignore[list-item]
        assert usp_turn(raw, pcm)[-1] == "turn.end"
        raw.send(client_text_frame("speech.context", uuid.uuid4().hex, {"phraseDetection": {"language": "ko-KR"}}))
        stop = stop_closing(stack, raw)
    [(code, reason, closed)] = stop.closes
    assert (code, reason) == (1000, IDLE_REASON)
    stop.within(closed, PROMPT, "the connection of a turn with no audio closed")
    stop.within(stop.stopped, PROMPT, "the gateway stopped")


def test_a_vosk_stream_in_progress_ends_normally(ko: Recognizer, tmp_path: Path, utterances_wav: Path,
                                                utterances_ref: Reference) -> None:
    """A paced /vosk stream going on when the gateway stops gets every result and the recognizer's
    normal close after its eof; the gateway exits once it has ended."""
    stack = gateway(tmp_path / "gateway", ko)
    pcm, rate, _ = read_wav(utterances_wav)
    finals = []
    with connect(f"{stack.ws}/vosk?language=ko-KR", open_timeout=10) as ws, Starved() as starved:
        ws.send(json.dumps({"config": {"sample_rate": rate}}))
        for n, i in enumerate(range(0, len(pcm), 3200)):
            if n == 10:
                stopping = time.monotonic()
                stack.stop()
            ws.send(pcm[i:i + 3200])
            reply = json.loads(ws.recv(timeout=30))
            if "partial" not in reply:
                finals.append(reply)
            time.sleep(0.03)
        ws.send('{"eof" : 1}')
        finals.append(json.loads(ws.recv(timeout=30)))
        code, _, ended = close_of(ws)
        stopped = stopped_at(stack, stopping)
    assert code == 1000, "the recognizer's close after eof"
    assert [f["text"] for f in finals if f.get("text")] == utterances_ref.texts
    assert ended - stopping > 2, "the stream went on for seconds after the stop began"
    within_of(starved, ended, stopped, PROMPT, "the stream ended; the gateway stopped")


def test_an_sdk_recognition_in_progress_ends_normally(ko: Recognizer, tmp_path: Path, utterances_wav: Path,
                                                     utterances_ref: Reference) -> None:
    """A Speech SDK continuous recognition going on when the gateway stops gets every phrase and ends
    without a cancellation; the gateway exits once it has ended."""
    stack = gateway(tmp_path / "gateway", ko)
    pcm, rate, _ = read_wav(utterances_wav)
    stream = speechsdk.audio.PushAudioInputStream(speechsdk.audio.AudioStreamFormat(samples_per_second=rate))
    rec = speechsdk.SpeechRecognizer(config(stack.ws), audio_config=speechsdk.audio.AudioConfig(stream=stream))
    started = threading.Event()
    stopping: list[float] = []

    def feed() -> None:
        started.wait(30)
        for n, i in enumerate(range(0, len(pcm), 3200)):
            if n == 10:
                stopping.append(time.monotonic())
                stack.stop()
            stream.write(pcm[i:i + 3200])
            time.sleep(0.03)
        stream.close()

    feeder = threading.Thread(target=feed)
    with Starved() as starved:
        feeder.start()
        events = continuous(rec, started=started)
        ended = time.monotonic()
        feeder.join()
        assert stopping, "the gateway stopped during the recognition"
        stopped = stopped_at(stack, stopping[0])
    assert not events.canceled, [c.error_details for c in events.canceled]
    assert_same([reported(r) for r in events.recognized], [expected(p) for p in utterances_ref.phrases])
    within_of(starved, ended, stopped, PROMPT, "the recognition ended; the gateway stopped")


def test_a_rest_upload_in_progress_is_answered(ko: Recognizer, tmp_path: Path, speech_wav: Path) -> None:
    """A REST recognition whose upload is still arriving when the gateway stops gets its answer; the
    gateway exits once it is sent. aiohttp's own shutdown drops what arrives on a connection after its
    start, so the rest of the body never came and the request was cut at the runner's timeout."""
    stack = gateway(tmp_path / "gateway", ko)
    body = speech_wav.read_bytes()
    conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=SHUTDOWN_SECONDS + 10)
    conn.putrequest("POST", REST)
    conn.putheader("Content-Type", "audio/wav")
    conn.putheader("Content-Length", str(len(body)))
    conn.endheaders()
    pieces = [body[i:i + len(body) // 20 + 1] for i in range(0, len(body), len(body) // 20 + 1)]
    with Starved() as starved:
        for n, piece in enumerate(pieces):
            if n == 5:
                stopping = time.monotonic()
                stack.stop()
            conn.send(piece)
            time.sleep(0.1)
        response = conn.getresponse()
        answered = time.monotonic()
        answer = json.loads(response.read())
        conn.close()
        stopped = stopped_at(stack, stopping)
    assert response.status == 200 and answer["RecognitionStatus"] == "Success" and answer["DisplayText"], answer
    assert answered - stopping > 1, "the upload went on for over a second after the stop began"
    within_of(starved, answered, stopped, PROMPT, "the answer came; the gateway stopped")


def test_a_connection_kept_alive_is_closed_after_its_answer_during_the_drain(ko: Recognizer, tmp_path: Path,
                                                                            speech_wav: Path) -> None:
    """A client's kept-alive connection still brings its requests once the gateway stops (only aiohttp's
    shutdown, after the drain, stops reading it): a REST recognition sent on it during the drain gets
    its answer with ``Connection: close`` and the connection closes, so the client's next request
    goes to another gateway pod. It was kept alive: a client busy on it kept the drain running to
    its deadline, which cut the request it had in flight then."""
    stack = gateway(tmp_path / "gateway", ko)
    conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=SHUTDOWN_SECONDS + 10)
    conn.request("GET", "/status")
    first = conn.getresponse()
    assert first.read() and not first.will_close
    pcm, _, _ = read_wav(speech_wav)
    assert stack.app is not None
    shutdown = stack.app[GATEWAY].shutdown
    with connect(f"{stack.ws}/vosk?language=ko-KR", open_timeout=10) as ws:  # the drain goes on while it streams
        ws.send(json.dumps({"config": {"sample_rate": 16000}}))
        ws.send(pcm[:3200])
        ws.recv(timeout=30)
        stack.stop()
        within(10, shutdown.begun.is_set, "the drain begun", every=0.01)  # a hang guard
        conn.request("POST", REST, body=speech_wav.read_bytes(), headers={"Content-Type": "audio/wav"})
        answer = conn.getresponse()
        body = json.loads(answer.read())
        assert answer.status == 200 and body["RecognitionStatus"] == "Success", body
        assert answer.getheader("Connection") == "close" and answer.will_close, answer.getheaders()
        ws.send('{"eof" : 1}')
        ws.recv(timeout=30)
        close_of(ws)
    conn.close()
    stack.join()


# ---- what a stop does not wait for (a wake), and how long it may take at worst ---------------------
#: shutdown_seconds of the gateways below: a stop must not wait it out for what is held for a wake.
HELD_SHUTDOWN_SECONDS = 3
#: How soon after the stop began what is held for a wake must be answered, and the gateway have
#: stopped when nothing else runs, in time not waiting for a CPU (:func:`within_of`): it is at once; held
#: for shutdown_seconds, it is past this.
AT_ONCE = 1.5
#: What a client held for ja-JP's wake is told when the gateway stops.
STOPPED_WHILE_WAKING = "this gateway stopped while ja-JP was waking up; try again (another gateway pod takes it)"


def asleep_stack(tmp: Path, shutdown_seconds: float, locale: str = "ja-JP") -> Stack:
    """A gateway routing ``locale``, an autoscaled locale at zero pods that never wakes (no operator runs):
    whatever asks for it is held, for up to 60 s."""
    tmp.mkdir()
    stack = Stack(tmp, GatewayConfig(host="127.0.0.1", port=0, shutdown_seconds=shutdown_seconds, hold_seconds=60)).__enter__()
    stack.create(speech_to_text(locale.lower(), locale, free_port(), replicas=0, autoscaling=AT_ZERO), ready=0)
    stack.routes(locale)
    return stack


def held(stack: Stack, count: int) -> None:
    """Wait until the gateway holds ``count`` requests for a wake."""
    assert stack.app is not None
    waker = stack.app[GATEWAY].waker
    within(10, lambda: waker.held == count, f"{count} held for the wake")  # a hang guard


@pytest.mark.parametrize("path, protocols", [("/vosk?language=ja-JP", None),
                                              ("/speech/recognition/conversation/cognitiveservices/v1?language=ja-JP", ["USP"])],
                         ids=["vosk", "speech-sdk"])
def test_a_websocket_held_for_a_wake_is_closed_with_the_reason_at_once(tmp_path: Path, path: str,
                                                                      protocols: list[str] | None) -> None:
    """A WebSocket accepted and held while its locale wakes gets close 1013 and the reason as soon as
    the gateway stops, and the gateway exits at once: the client tries again, at another gateway pod.
    It was held through the drain's shutdown_seconds (idle, but not relayed: nothing closed it), then
    for aiohttp's shutdown_seconds again, then dropped without a close frame."""
    stack = asleep_stack(tmp_path / "gateway", HELD_SHUTDOWN_SECONDS)
    with connect(stack.ws + path, subprotocols=protocols, open_timeout=10) as ws:  # type: ignore[arg-type]
        if protocols:
            ws.send(client_text_frame("speech.context", "a" * 32, {"phraseDetection": {"language": "ja-JP"}}))
            ws.send(client_audio_frame("a" * 32, b"\0" * 3200))
        else:
            ws.send(json.dumps({"config": {"sample_rate": 16000}}))
            ws.send(b"\0" * 3200)
        held(stack, 1)
        stop = stop_closing(stack, ws)
    [(code, reason, closed)] = stop.closes
    assert (code, reason) == (1013, STOPPED_WHILE_WAKING)
    stop.within(closed, AT_ONCE, "the held WebSocket closed")
    stop.within(stop.stopped, AT_ONCE, "the gateway stopped")


#: What a Speech SDK connection for de-DE, a locale scaled to zero by hand, is refused with at once.
NOTHING_WAKES = "is scaled to 0 replicas and nothing wakes it"


@pytest.mark.parametrize("locale", ["ja-JP", "de-DE"], ids=["held-for-a-wake", "refused-at-once"])
def test_a_refused_speech_sdk_connection_that_sends_nothing_is_closed_at_once_by_the_stop(tmp_path: Path, locale: str) -> None:
    """A Speech SDK connection the gateway refuses is read for its request before its close (up to
    REQUEST_WAIT_SECONDS, 5 s: speech_recognizer/usp/refusal.py); one that sends nothing gets its close with the
    reason as soon as the gateway stops, and the gateway exits at once. Before, held for a wake then refused by the
    stop, or refused at once (a locale nothing wakes), it was read for its request until REQUEST_WAIT_SECONDS ran
    out, and the stop waited for it: its close came then, and the gateway stopped then."""
    stack = asleep_stack(tmp_path / "gateway", SHUTDOWN_SECONDS)
    stack.create(speech_to_text("de-de", "de-DE", free_port(), replicas=0), ready=0)
    stack.routes("de-DE")
    assert stack.app is not None
    with connect(f"{stack.ws}/speech/recognition/conversation/cognitiveservices/v1?language={locale}", subprotocols=["USP"],  # type: ignore[list-item]
                 open_timeout=10) as ws:
        if locale == "ja-JP":
            held(stack, 1)
        else:
            within(10, lambda: any(name == "speech_gateway_failures_total" and ("reason", "backend_unavailable") in labels
                                   for name, labels in scrape_metrics(stack.http)), "refused")  # a hang guard
            time.sleep(0.2)  # its refusal reads for its request
        stop = stop_closing(stack, ws)
    [(code, reason, closed)] = stop.closes
    assert code == 1013 and (reason == STOPPED_WHILE_WAKING if locale == "ja-JP" else NOTHING_WAKES in reason), (code, reason)
    stop.within(closed, AT_ONCE, "the refused connection closed")
    stop.within(stop.stopped, AT_ONCE, "the gateway stopped")


class Service:
    """kube-proxy's part for a Service in front of gateway pods: each new connection goes to the pod
    at ``endpoint`` (a port), which the test moves off a stopping pod as the Service's endpoints drop
    it (during its preStop pause); connections made go on where they are."""

    def __init__(self, endpoint: int) -> None:
        self.endpoint = endpoint
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, name="service", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed
                return
            try:
                pod = socket.create_connection(("127.0.0.1", self.endpoint))
            except OSError:
                client.close()
                continue
            self._open += [client, pod]
            for source, sink in ((client, pod), (pod, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        for s in [self._listener, *self._open]:
            s.close()


def test_a_request_unanswered_at_the_deadline_gets_503(ko: Recognizer, tmp_path: Path, speech_wav: Path) -> None:
    """A REST recognition whose recognizer has not answered when shutdown_seconds run out (here the
    recognizer process is stopped, as a stuck pod) gets 503 + Retry-After and the reason, and the
    gateway exits at once. It was cut without an answer when aiohttp's shutdown gave up on it."""
    seconds = HELD_SHUTDOWN_SECONDS
    stack = gateway(tmp_path / "gateway", ko, shutdown_seconds=seconds)
    answers: dict = {}
    ko.process.send_signal(signal.SIGSTOP)
    try:
        client = threading.Thread(target=_post, args=(stack, "rest", speech_wav.read_bytes(), answers, "ko-KR"))
        client.start()
        assert stack.app is not None
        shutdown = stack.app[GATEWAY].shutdown
        within(10, lambda: shutdown.requests == 1, "the request in flight")  # a hang guard
        time.sleep(0.5)  # its body is sent on to the recognizer
        with Starved() as starved:
            stopping = time.monotonic()
            stack.stop()
            client.join(30)
            stopped = stopped_at(stack, stopping)
    finally:
        ko.process.send_signal(signal.SIGCONT)
    assert "response" in answers, f"no answer: {answers.get('error')!r}"
    response = answers["response"]
    assert (response.status_code, response.headers.get("Retry-After")) == (503, "5"), response.text
    assert response.json()["error"]["message"] == STOPPED_UNANSWERED.message
    # at the deadline: not before it by the clock, and not long past it in time not waiting for a CPU
    assert seconds - 0.5 < answers["at"] - stopping, f"answered {answers['at'] - stopping:.1f} s after the stop began"
    within_of(starved, stopping, answers["at"], seconds + 1, "the stop began; the request was answered")
    within_of(starved, stopping, stopped, seconds + 1, "the stop began; the gateway stopped")


def test_a_speech_sdk_recognition_held_for_a_wake_gets_its_answer_from_the_next_gateway(
        ko: Recognizer, tmp_path: Path, utterances_wav: Path) -> None:
    """Two gateway pods behind a Service; the first holds the app's recognition while ko-KR wakes
    (there it is at zero pods) and stops. The Speech SDK, closed with 1013 and the reason at once,
    connects again at once (to the other pod: the Service dropped the stopping one), sends its audio
    again and gets its result there; the same recognizer object recognizes the next utterance. The
    first gateway held it through both shutdown_seconds and then dropped it without a close frame."""
    second = gateway(tmp_path / "second", ko)  # started first: kmock's stacks end in the reverse order
    first = asleep_stack(tmp_path / "first", HELD_SHUTDOWN_SECONDS, "ko-KR")
    service = Service(first.port)
    try:
        app = speechsdk.SpeechRecognizer(config(f"ws://127.0.0.1:{service.port}"),
                                         audio_config=speechsdk.audio.AudioConfig(filename=str(utterances_wav)))
        disconnected: list[float] = []
        connection = speechsdk.Connection.from_recognizer(app)
        connection.disconnected.connect(lambda e: disconnected.append(time.monotonic()))
        answer = app.recognize_once_async()
        held(first, 1)
        service.endpoint = second.port  # the Service's endpoints drop the stopping pod
        with Starved() as starved:
            stopping = time.monotonic()
            first.stop()
            result = answer.get()
            stopped = stopped_at(first, stopping)
        assert_recognized(result)
        assert disconnected, "the Speech SDK's connection to the stopping gateway was not closed"
        within_of(starved, stopping, disconnected[0], AT_ONCE, "the stop began; the Speech SDK was disconnected")
        within_of(starved, stopping, stopped, AT_ONCE, "the stop began; the gateway stopped")
        assert_recognized(app.recognize_once())
    finally:
        second.__exit__()
        service.close()


def _post(stack: Stack, route: str, wav: bytes, answers: dict, locale: str = "ja-JP") -> None:
    """A recognition request for ``locale`` on ``route``; its answer (or error) and when it came into ``answers``."""
    try:
        if route == "rest":
            answers["response"] = httpx.post(f"{stack.http}{REST.replace('ko-KR', locale)}", content=wav,
                                             headers={"Content-Type": "audio/wav"}, timeout=30)
        else:
            answers["response"] = httpx.post(f"{stack.http}/v1/audio/transcriptions", timeout=30,
                                             data={"model": "whisper-1", "language": locale},
                                             files={"file": ("speech.wav", wav, "audio/wav")})
    except httpx.HTTPError as exc:
        answers["error"] = exc
    answers["at"] = time.monotonic()


@pytest.mark.parametrize("route", ["rest", "openai"])
def test_a_request_held_for_a_wake_is_answered_503_at_once(tmp_path: Path, speech_wav: Path, route: str) -> None:
    """A REST or OpenAI request held while its locale wakes gets 503 + Retry-After and the reason (in
    the route's error shape) as soon as the gateway stops, which then exits at once. It was held
    through both shutdown_seconds, then cut without an answer."""
    stack = asleep_stack(tmp_path / "gateway", HELD_SHUTDOWN_SECONDS)
    answers: dict = {}
    client = threading.Thread(target=_post, args=(stack, route, speech_wav.read_bytes(), answers))
    client.start()
    held(stack, 1)
    with Starved() as starved:
        stopping = time.monotonic()
        stack.stop()
        client.join(30)
        stopped = stopped_at(stack, stopping)
    assert "response" in answers, f"no answer: {answers.get('error')!r}"
    response = answers["response"]
    assert (response.status_code, response.headers.get("Retry-After")) == (503, "1"), response.text
    error = response.json()["error"]
    assert error["message"] == STOPPED_WHILE_WAKING
    assert error["code"] == ("ServiceUnavailable" if route == "rest" else "stopped_while_held")
    within_of(starved, stopping, answers["at"], AT_ONCE, "the stop began; the held request was answered")
    within_of(starved, stopping, stopped, AT_ONCE, "the stop began; the gateway stopped")


def test_the_worst_stop_ends_within_shutdown_seconds_and_a_few(ko: Recognizer, tmp_path: Path, speech_wav: Path) -> None:
    """Everything that can hold a stop at once: a /vosk stream that never ends, a WebSocket held for a
    wake, a REST upload that never ends, and requests to another route (the 5 s preStop hook's: one
    in flight at the stop, one sent during the drain on a connection kept alive, which outlasts it).
    The gateway exits within shutdown_seconds and AFTER_DRAIN_SECONDS (the pod's grace leaves room
    for both after the preStop pause): the stream is closed with 1001 and the reason at the deadline,
    the held WebSocket with 1013 at once, the other route answered, the upload answered 503 at the
    deadline and its connection closed (still sending, this client reads no answer). It took twice
    shutdown_seconds (the drain's, then aiohttp's again), over the pod's grace for the default 30."""
    seconds = 6  # twice that (the old stop) is well past the bound, with a busy machine's margin
    stack = asleep_stack(tmp_path / "gateway", seconds)
    stack.create(speech_to_text("ko-kr", "ko-KR", ko.port))
    stack.serving("ko-KR")
    assert stack.app is not None
    shutdown = stack.app[GATEWAY].shutdown
    got: dict[str, tuple] = {}
    going = threading.Event()

    def stream() -> None:  # a /vosk stream to ko-KR that never ends (silence, paced)
        with connect(f"{stack.ws}/vosk?language=ko-KR", open_timeout=10) as ws:
            ws.send(json.dumps({"config": {"sample_rate": 16000}}))
            try:
                while True:
                    ws.send(b"\0" * 3200)
                    ws.recv(timeout=30)
                    going.set()
                    time.sleep(0.05)
            except ConnectionClosed as exc:
                got["stream"] = (exc.rcvd and exc.rcvd.code, exc.rcvd and exc.rcvd.reason, time.monotonic())

    def hold() -> None:  # a /vosk WebSocket held for ja-JP's wake
        with connect(f"{stack.ws}/vosk?language=ja-JP", open_timeout=10) as ws:
            ws.send(json.dumps({"config": {"sample_rate": 16000}}))
            got["held"] = close_of(ws)

    def upload() -> None:  # a REST upload to ko-KR whose body trickles for a minute
        body = speech_wav.read_bytes()
        conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=60)
        conn.putrequest("POST", REST)
        conn.putheader("Content-Type", "audio/wav")
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        step = len(body) // 600 + 1
        try:
            for i in range(0, len(body), step):
                conn.send(body[i:i + step])
                time.sleep(0.1)
            got["upload"] = (conn.getresponse().status, time.monotonic())
        except OSError as exc:  # cut: reset, or closed before an answer
            got["upload"] = (type(exc).__name__, time.monotonic())
        except http.client.HTTPException as exc:
            got["upload"] = (type(exc).__name__, time.monotonic())
        finally:
            conn.close()

    hook = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=30)
    hook.request("GET", "/pre-stop")  # the preStop hook's request (5 s), sent here: it is in flight at the stop

    def other_route() -> None:
        got["other"] = (hook.getresponse().status, time.monotonic())

    # A connection kept alive: its next request, sent during the drain, is still read and served (only
    # aiohttp's shutdown stops that). /pre-stop again, sent when its 5 s outlast the drain and the 3 s after.
    alive = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=30)
    alive.request("GET", "/status")
    assert alive.getresponse().read()

    def late_other_route() -> None:
        time.sleep(seconds - 0.5)
        alive.request("GET", "/pre-stop")
        try:
            got["late"] = (alive.getresponse().status, time.monotonic())
        except (OSError, http.client.HTTPException) as exc:  # cut
            got["late"] = (type(exc).__name__, time.monotonic())

    clients = [threading.Thread(target=f) for f in (stream, hold, upload, other_route)]
    for c in clients:
        c.start()
    assert going.wait(10), "the stream runs"
    held(stack, 1)
    within(10, lambda: shutdown.requests == 1, "the upload in flight")  # a hang guard
    time.sleep(0.2)  # the /pre-stop request is read by now (it was sent before the others started)
    with Starved() as starved:
        stopping = time.monotonic()
        stack.stop()
        late = threading.Thread(target=late_other_route)
        late.start()
        for c in [*clients, late]:
            c.join(60)
        stopped = stopped_at(stack, stopping)
    # each bound in time not waiting for a CPU (within_of); a close at the deadline not before it by the clock either
    bound = seconds + AFTER_DRAIN_SECONDS
    within_of(starved, stopping, stopped, bound + 1,
              f"the stop began (shutdown_seconds {seconds}, then {AFTER_DRAIN_SECONDS:g}); the gateway stopped")
    code, reason, closed = got["held"]
    assert (code, reason) == (1013, STOPPED_WHILE_WAKING)
    within_of(starved, stopping, closed, AT_ONCE, "the stop began; the held WebSocket closed")
    code, reason, closed = got["stream"]
    assert (code, reason) == (STOPPED_MIDSTREAM.kind.close, STOPPED_MIDSTREAM.message)
    assert seconds - 0.5 < closed - stopping, f"closed {closed - stopping:.1f} s after the stop began"
    within_of(starved, stopping, closed, seconds + 1.5, "the stop began; the stream closed")
    assert got["other"][0] == 200, "another route's request in flight is answered"
    within_of(starved, stopping, got["upload"][1], bound + 1.5, "the stop began; the upload ended")
    within_of(starved, stopping, got["late"][1], bound + 1, "the stop began; the late /pre-stop ended")
    print(f"\nworst stop: gateway exited {stack.stopped_in:.1f} s after the stop began ({starved.unstarved(stopping, stopped):.1f} s "
          f"not waiting for a CPU; shutdown_seconds {seconds}); "
          f"held WebSocket closed after {got['held'][2] - stopping:.2f} s, stream after {got['stream'][2] - stopping:.1f} s, "
          f"upload ended ({got['upload'][0]}) after {got['upload'][1] - stopping:.1f} s, "
          f"/pre-stop answered after {got['other'][1] - stopping:.1f} s, the late one ended ({got['late'][0]}) after "
          f"{got['late'][1] - stopping:.1f} s")
    hook.close()
    alive.close()


def assert_recognized(result: speechsdk.SpeechRecognitionResult) -> None:
    details = result.cancellation_details.error_details if result.reason == speechsdk.ResultReason.Canceled else ""
    assert result.reason == speechsdk.ResultReason.RecognizedSpeech and result.text, (result.reason, details)


# ---- what is in progress, frame by frame ---------------------------------------------------------
def _server_frame(path: str, rid: str) -> bytes:
    return text_frame(path, rid, {}).encode()


@pytest.mark.unit
def test_a_usp_turn_is_in_progress_from_its_audio_to_its_turn_end() -> None:
    progress = Progress("usp", Shutdown())
    progress.from_client(client_text_frame("speech.config", None, {}).encode(), False)
    assert progress.idle, "speech.config opens no turn (an app that opened its connection and waits)"
    progress.from_client(client_text_frame("speech.context", "a", {}).encode(), False)
    assert progress.idle, "a speech.context with no audio yet is idle, as the recognizer's stop counts it"
    progress.from_client(client_audio_frame("a", b""), True)
    assert not progress.idle, "its audio, the RIFF header the SDK sends with it first included"
    progress.from_recognizer(_server_frame("speech.hypothesis", "a"), False)
    progress.from_recognizer(_server_frame("turn.end", "other"), False)
    assert not progress.idle, "another turn's end"
    progress.from_recognizer(_server_frame("turn.end", "a"), False)
    assert progress.idle
    progress.from_client(client_audio_frame("a", b"\0" * 3200), True)
    progress.from_client(client_text_frame("telemetry", "a", {}).encode(), False)
    assert progress.idle, "audio still in flight for a turn that ended, and telemetry, open none"
    progress.from_client(client_audio_frame("b", b"\0" * 3200), True)
    assert not progress.idle, "a turn's first audio opens it"
    progress.from_client(b"not a frame", False)
    progress.from_recognizer(_server_frame("turn.end", "b"), False)
    assert progress.idle
    progress.from_client(client_text_frame("speech.context", "c", {}).encode(), False)
    progress.from_recognizer(_server_frame("turn.end", "c"), False)  # a turn failed at its context (its language unknown)
    progress.from_client(client_audio_frame("c", b"\0" * 3200), True)
    assert progress.idle, "audio in flight for a turn that ended before any audio opens none"


@pytest.mark.unit
def test_a_vosk_stream_is_in_progress_from_its_first_audio() -> None:
    progress = Progress("vosk", Shutdown())
    progress.from_client(b'{"config": {"sample_rate": 16000}}', False)
    assert progress.idle
    progress.from_client(b"\0" * 3200, True)
    progress.from_recognizer(b'{"text": ""}', False)
    assert not progress.idle, "until the recognizer closes it after eof"
