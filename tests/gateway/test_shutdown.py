"""The gateway stopping (its rollout, its scale-down) in front of a real recognizer process: idle
WebSockets are closed with 1000 at once, so that apps connect again, and streams in progress end
normally before it exits.

The gateway is stopped as SIGTERM stops it in ``gateway.run`` (``serving`` ends: aiohttp's
shutdown, ``on_shutdown`` then the runner's ``shutdown_timeout``); the next gateway listens on the
same address, as another gateway pod behind the same Service.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import azure.cognitiveservices.speech as speechsdk
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from speech_operator.gateway import GatewayConfig
from speech_operator.gateway_shutdown import IDLE_REASON, SETTLE_SECONDS, Progress, Shutdown
from speech_recognizer.usp.frames import parse_text, text_frame

from harness.usp import client_audio_frame, client_text_frame
from tests.support import Reference, read_wav
from tests.usp.sdk import assert_same, config, continuous, expected, reported

from .conftest import Recognizer, Stack, speech_to_text, start_recognizer

#: The gateway's shutdown_seconds here: what a stop must take much less than when nothing runs.
SHUTDOWN_SECONDS = 30
#: How soon after the stop began an idle WebSocket must be closed, and the gateway have stopped when
#: nothing runs: the quiet it waits for after a turn, and a margin for a busy machine.
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


def gateway(tmp: Path, recognizer: Recognizer, port: int = 0) -> Stack:
    """A gateway (with its kmock and watch) routing ko-KR to ``recognizer``, listening on ``port``."""
    tmp.mkdir()
    stack = Stack(tmp, GatewayConfig(host="127.0.0.1", port=port, shutdown_seconds=SHUTDOWN_SECONDS)).__enter__()
    stack.create(speech_to_text("ko-kr", "ko-KR", recognizer.port))
    stack.routes("ko-KR")
    return stack


def close_of(ws: ClientConnection) -> tuple[int, str, float]:
    """The close frame ``ws`` gets next (code, reason, when), reading whatever comes before it."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            ws.recv(timeout=SHUTDOWN_SECONDS + 10)
    assert closed.value.rcvd is not None, "closed without a close frame"
    return closed.value.rcvd.code, closed.value.rcvd.reason, time.monotonic()


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
        stopping = time.monotonic()
        first.stop()
        code, reason, closed = close_of(raw)
    first.join()
    assert (code, reason) == (1000, IDLE_REASON)
    assert closed - stopping < PROMPT, f"closed {closed - stopping:.1f} s after the stop began"
    assert first.stopped_in is not None and first.stopped_in < PROMPT, f"the gateway took {first.stopped_in:.1f} s to stop"

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
        stopping = time.monotonic()
        stack.stop()
        closes = [close_of(silent), close_of(configured)]
    stack.join()
    for code, reason, closed in closes:
        assert (code, reason) == (1000, IDLE_REASON)
        assert closed - stopping < PROMPT, f"closed {closed - stopping:.1f} s after the stop began"
    assert stack.stopped_in is not None and stack.stopped_in < PROMPT, f"the gateway took {stack.stopped_in:.1f} s to stop"


def test_a_vosk_stream_in_progress_ends_normally(ko: Recognizer, tmp_path: Path, utterances_wav: Path,
                                                utterances_ref: Reference) -> None:
    """A paced /vosk stream going on when the gateway stops gets every result and the recognizer's
    normal close after its eof; the gateway exits once it has ended."""
    stack = gateway(tmp_path / "gateway", ko)
    pcm, rate, _ = read_wav(utterances_wav)
    finals = []
    with connect(f"{stack.ws}/vosk?language=ko-KR", open_timeout=10) as ws:
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
    stack.join()
    assert code == 1000, "the recognizer's close after eof"
    assert [f["text"] for f in finals if f.get("text")] == utterances_ref.texts
    assert ended - stopping > 2, "the stream went on for seconds after the stop began"
    assert stack.stopped_in is not None and stack.stopped_in < ended - stopping + PROMPT, (
        f"the gateway took {stack.stopped_in:.1f} s to stop; the stream ended {ended - stopping:.1f} s after the stop began")


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
    feeder.start()
    events = continuous(rec, started=started)
    ended = time.monotonic()
    feeder.join()
    stack.join()
    assert not events.canceled, [c.error_details for c in events.canceled]
    assert_same([reported(r) for r in events.recognized], [expected(p) for p in utterances_ref.phrases])
    assert stack.stopped_in is not None and stack.stopped_in < ended - stopping[0] + PROMPT, (
        f"the gateway took {stack.stopped_in:.1f} s to stop; the recognition ended {ended - stopping[0]:.1f} s after the stop began")


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
    stack.join()
    assert response.status == 200 and answer["RecognitionStatus"] == "Success" and answer["DisplayText"], answer
    assert answered - stopping > 1, "the upload went on for over a second after the stop began"
    assert stack.stopped_in is not None and stack.stopped_in < answered - stopping + PROMPT, (
        f"the gateway took {stack.stopped_in:.1f} s to stop; the answer came {answered - stopping:.1f} s after the stop began")


def assert_recognized(result: speechsdk.SpeechRecognitionResult) -> None:
    details = result.cancellation_details.error_details if result.reason == speechsdk.ResultReason.Canceled else ""
    assert result.reason == speechsdk.ResultReason.RecognizedSpeech and result.text, (result.reason, details)


# ---- what is in progress, frame by frame ---------------------------------------------------------
def _server_frame(path: str, rid: str) -> bytes:
    return text_frame(path, rid, {}).encode()


@pytest.mark.unit
def test_a_usp_turn_is_in_progress_from_its_context_or_audio_to_its_turn_end() -> None:
    progress = Progress("usp", Shutdown())
    progress.from_client(client_text_frame("speech.config", None, {}).encode(), False)
    assert progress.idle, "speech.config opens no turn (an app that opened its connection and waits)"
    progress.from_client(client_text_frame("speech.context", "a", {}).encode(), False)
    assert not progress.idle
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


@pytest.mark.unit
def test_a_vosk_stream_is_in_progress_from_its_first_audio() -> None:
    progress = Progress("vosk", Shutdown())
    progress.from_client(b'{"config": {"sample_rate": 16000}}', False)
    assert progress.idle
    progress.from_client(b"\0" * 3200, True)
    progress.from_recognizer(b'{"text": ""}', False)
    assert not progress.idle, "until the recognizer closes it after eof"
