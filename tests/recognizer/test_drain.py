"""Drain instead of cut: SIGTERM to a real recognizer process while streams run.

The process is ``python -m speech_recognizer`` as a pod runs it (no warm-up, to spare the
shared CPU). Streams are paced at real time, so they are in the middle of their audio when
the signal comes: an unmodified Speech SDK app (PushAudioInputStream) and a vosk-server
client. Each must get every result, the same as in-process Vosk on the same audio (what
they get without a SIGTERM, tests/usp/test_sdk.py and test_vosk_ws.py); work that arrives
during the drain gets a clear refusal; the process exits by itself, with status 0, once the
streams end or at the deadline.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import azure.cognitiveservices.speech as speechsdk
import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from harness.usp import client_audio_frame, client_text_frame
from speech_recognizer import contract as c
from speech_recognizer.usp.frames import parse_text

from ..conftest import CHUNK
from ..support import Loopback, Reference, free_port, read_wav, scrape_metrics, within
from ..usp.held import CONVERSATION, assert_held_phrase_first, first_sentence_held, until_close
from ..usp.sdk import assert_same, config, continuous, expected, reported
from .test_gone_clients import wav_bytes
from .test_not_reading import deaf_websocket, send_all, usp_frames

REST = "/speech/recognition/conversation/cognitiveservices/v1?language=ko-KR"
USP = "/speech/recognition/conversation/cognitiveservices/v1?language=ko-KR"
CHUNK_SECONDS = CHUNK / (2 * 16000)
#: Seconds within which the streams of the SIGTERM test have their first result: a guard against a stream that never
#: starts. The process has no warm-up: its first decoding is slow, and on a loaded machine it comes long after the
#: stream's audio began (the server then still decodes what was sent, and the drain still finds both running).
STREAMS_START = 120
#: Seconds within which the process exits once the SIGTERM test's last stream ended: its linger (drain.LINGER_SECONDS)
#: and its stop, slower on a loaded machine, against the drain's deadline (60 s there) that a drain not ending with
#: its streams would wait out.
EXIT_AFTER_STREAMS = 15
#: What a REST or OpenAI request refused while the server drains is told (a stream is told drain.REASON).
REQUEST_REFUSED = "draining: this server is shutting down and takes no new requests; send it again to reach another"


class Recognizer(Loopback):
    """``python -m speech_recognizer`` on a free loopback port, its output in a file."""

    def __init__(self, tmp: Path, *args: str, port: int | None = None) -> None:
        self.port = port or free_port()
        self.log = tmp / "recognizer.log"
        cmd = [sys.executable, "-m", "speech_recognizer", "Eula=accept", "Host=127.0.0.1", f"Port={self.port}",
               "Locale=ko-KR", "Warmup:Count=0", f"Mounts:Output={tmp / 'output'}", f"Mounts:Models={tmp / 'models'}", *args]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.output()
            try:
                if httpx.get(f"{self.http}/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"not ready in {timeout} s:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def recognizer_process(tmp_path: Path) -> Iterator[type[Recognizer]]:
    started: list[Recognizer] = []

    def start(*args: str, port: int | None = None) -> Recognizer:
        rec = Recognizer(tmp_path, *args, port=port)
        started.append(rec)
        rec.wait_ready()
        return rec

    yield start  # type: ignore[misc]
    for rec in started:
        rec.stop()


class VoskStream(threading.Thread):
    """A vosk-server client sending ``pcm`` at real time and reading every reply."""

    def __init__(self, url: str, pcm: bytes) -> None:
        super().__init__(name="vosk-stream")
        self.url, self.pcm = url, pcm
        self.replies: list[dict] = []
        self.error: BaseException | None = None
        self.started_speaking = threading.Event()
        self.ended_at = 0.0

    def run(self) -> None:
        try:
            with connect(self.url, max_size=None, open_timeout=10) as ws:
                t0 = time.monotonic()
                for n, i in enumerate(range(0, len(self.pcm), CHUNK)):
                    ws.send(self.pcm[i : i + CHUNK])
                    reply = json.loads(ws.recv(timeout=30))
                    self.replies.append(reply)
                    if reply.get("partial") or reply.get("text"):
                        self.started_speaking.set()
                    time.sleep(max(0.0, t0 + (n + 1) * CHUNK_SECONDS - time.monotonic()))
                ws.send('{"eof" : 1}')
                while True:
                    self.replies.append(json.loads(ws.recv(timeout=30)))
        except ConnectionClosed as exc:
            if exc.rcvd is None or exc.rcvd.code != 1000:
                self.error = exc
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
        finally:
            self.ended_at = time.monotonic()

    @property
    def finals(self) -> list[str]:
        return [r["text"] for r in self.replies if r.get("text")]


class SdkStream(threading.Thread):
    """An unmodified Speech SDK app: continuous recognition of a push stream written at real time."""

    def __init__(self, ws_base: str, pcm: bytes) -> None:
        super().__init__(name="sdk-stream")
        self.pcm = pcm
        self.stream = speechsdk.audio.PushAudioInputStream()
        self.recognizer = speechsdk.SpeechRecognizer(config(ws_base),
                                                     audio_config=speechsdk.audio.AudioConfig(stream=self.stream))
        self.events = None
        self.started_speaking = threading.Event()
        self.recognizer.recognizing.connect(lambda e: self.started_speaking.set())
        self.ended_at = 0.0

    def run(self) -> None:
        started = threading.Event()
        feeder = threading.Thread(target=self._feed, args=(started,), name="sdk-feed")
        feeder.start()
        try:
            self.events = continuous(self.recognizer, timeout=120, started=started)
        finally:
            feeder.join()
            self.ended_at = time.monotonic()

    def _feed(self, started: threading.Event) -> None:
        started.wait(10)
        t0 = time.monotonic()
        for n, i in enumerate(range(0, len(self.pcm), CHUNK)):
            self.stream.write(self.pcm[i : i + CHUNK])
            time.sleep(max(0.0, t0 + (n + 1) * CHUNK_SECONDS - time.monotonic()))
        self.stream.close()


def refused_websocket(url: str) -> tuple[int, str]:
    """(code, reason) of the close a new WebSocket gets. A Speech SDK connection begins its request, as the SDKs do at
    once, and is told first by a turn that fails ``ServiceUnavailable`` with the reason (speech_recognizer/usp/refusal.py)."""
    usp = "cognitiveservices" in url
    said = []
    with connect(url, open_timeout=10, subprotocols=["USP"] if usp else None) as ws:
        if usp:
            ws.send(client_text_frame("speech.context", uuid.uuid4().hex, {}))
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                said.append(parse_text(str(ws.recv(timeout=10))))
    assert closed.value.rcvd is not None
    code, reason = closed.value.rcvd.code, closed.value.rcvd.reason
    if usp:
        assert [m.path for m in said] == ["turn.start", "speech.phrase", "turn.end"], said
        assert said[1].json()["RecognitionStatus"] == "ServiceUnavailable" and said[1].json()["Message"] == reason, said
    else:
        assert said == [], said
    return code, reason


def test_sigterm_lets_running_streams_finish_and_refuses_new_work(
    recognizer_process, utterances_wav: Path, utterances_ref: Reference, speech_wav: Path,
) -> None:
    rec = recognizer_process(f"{c.DRAIN_SECONDS}=60")
    pcm, rate, _ = read_wav(utterances_wav)
    assert rate == 16000
    sdk = SdkStream(rec.ws, pcm)
    vosk = VoskStream(f"{rec.ws}/vosk?language=ko-KR", pcm)
    sdk.start()
    vosk.start()
    began = time.monotonic()
    assert sdk.started_speaking.wait(STREAMS_START) and vosk.started_speaking.wait(STREAMS_START), "the streams did not start"
    print(f"both streams had a first result {time.monotonic() - began:.1f} s after they began")
    audio_seconds = len(pcm) / (2 * rate)
    signalled = time.monotonic()
    rec.process.send_signal(signal.SIGTERM)
    time.sleep(0.3)

    # new work, while the streams go on
    assert rec.process.poll() is None, rec.output()
    ready = httpx.get(f"{rec.http}/ready", timeout=5)
    assert ready.status_code == 503 and ready.json()["draining"] is True
    assert httpx.get(f"{rec.http}{c.ROUTE_CONTAINER_READINESS}", timeout=5).text == "Draining"
    assert httpx.get(f"{rec.http}/status", timeout=5).status_code == 200, "liveness must keep passing"
    for route in (f"{rec.ws}/vosk?language=ko-KR", f"{rec.ws}{USP}"):
        code, reason = refused_websocket(route)
        assert code == 1013 and reason.startswith("draining:"), (route, code, reason)
    rest = httpx.post(f"{rec.http}{REST}", content=speech_wav.read_bytes(), headers={"Content-Type": "audio/wav"}, timeout=30)
    assert rest.status_code == 503 and rest.headers["Retry-After"] == "1", rest.text
    assert rest.json()["error"]["message"] == REQUEST_REFUSED, rest.text  # a request, not a stream
    refused = speechsdk.SpeechRecognizer(config(rec.ws), audio_config=speechsdk.audio.AudioConfig(
        filename=str(speech_wav))).recognize_once()
    assert refused.reason == speechsdk.ResultReason.Canceled
    details = refused.cancellation_details
    print("a Speech SDK app refused while draining gets:", details.reason, details.code, repr(details.error_details))
    assert details.code == speechsdk.CancellationErrorCode.ServiceUnavailable and "draining:" in details.error_details
    # counted by the failure policy, per route
    from prometheus_client.parser import text_string_to_metric_families
    refused = {tuple(sorted(s.labels.items())): s.value for f in text_string_to_metric_families(
        httpx.get(f"{rec.http}/metrics", timeout=5).text) for s in f.samples if s.name == "speech_refused_total"}
    for route, count in (("vosk", 1), ("usp/conversation", 1), ("rest-conversation", 1)):
        assert refused.get((("reason", "draining"), ("route", route))) == count, refused
    assert refused.get((("reason", "draining"), ("route", "usp/interactive")), 0) >= 1, refused  # the SDK tries again

    sdk.join(120)
    vosk.join(120)
    assert vosk.error is None, vosk.error
    assert vosk.finals == utterances_ref.texts
    assert sdk.events is not None and not sdk.events.canceled, sdk.events and sdk.events.canceled
    assert_same([reported(r) for r in sdk.events.recognized], [expected(p) for p in utterances_ref.phrases])

    code = rec.process.wait(30)
    exited = time.monotonic()
    assert code == 0, rec.output()
    last_stream = max(sdk.ended_at, vosk.ended_at)
    assert exited - last_stream < EXIT_AFTER_STREAMS, f"exited {exited - last_stream:.1f} s after the last stream ended"
    log = rec.output()
    assert "draining: 2 recognition(s) running" in log and "drained: every recognition ended" in log, log
    print(f"SIGTERM {signalled - (sdk.ended_at - audio_seconds):.1f} s into a {audio_seconds:.1f} s stream; "
          f"exit {exited - signalled:.1f} s after it, {exited - last_stream:.2f} s after the last stream ended")


def test_idle_clients_are_closed_so_that_they_connect_again_and_a_second_sigterm_stops_at_once(
        recognizer_process, utterances_wav: Path, speech_wav: Path) -> None:
    """A Speech SDK app keeps its connection between recognitions. The drain closes it with 1000 once
    nothing runs, and the app's next recognition, with the same recognizer object, reaches the server
    that took the address over (as another pod behind the Service). It was closed with 1012, after
    which the SDK failed that recognition and every later one at once
    (SPXERR_START_RECOGNIZING_INVALID_STATE_TRANSITION): a rollout broke every idle app.
    An idle vosk client gets the same close and reason.

    The server that took the address over then drains with a stream in progress (its drain would wait up to
    ``Drain:Seconds``, 60 s): a second SIGTERM skips the rest of the drain, and the process stops at once (the test
    of it shares that server, not to start one more)."""
    from speech_recognizer.drain import IDLE_REASON

    first = recognizer_process(f"{c.DRAIN_SECONDS}=60")
    # A file of several utterances: each recognize_once takes the next one.
    app = speechsdk.SpeechRecognizer(config(first.ws), audio_config=speechsdk.audio.AudioConfig(filename=str(utterances_wav)))

    before = app.recognize_once()
    assert before.reason == speechsdk.ResultReason.RecognizedSpeech and before.text, before
    with connect(f"{first.ws}/vosk?language=ko-KR", open_timeout=10) as vosk:
        first.process.send_signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed) as closed:
            vosk.recv(timeout=30)
    assert closed.value.rcvd is not None and (closed.value.rcvd.code, closed.value.rcvd.reason) == (1000, IDLE_REASON)
    assert first.process.wait(30) == 0, first.output()
    assert "(2 idle connection(s) closed with 1000: their clients connect again)" in first.output(), first.output()

    rec = recognizer_process(f"{c.DRAIN_SECONDS}=60", port=first.port)  # the next server at the same address
    after = app.recognize_once()
    details = after.cancellation_details.error_details if after.reason == speechsdk.ResultReason.Canceled else ""
    assert after.reason == speechsdk.ResultReason.RecognizedSpeech and after.text, (after.reason, details)

    # a second SIGTERM stops at once
    pcm, _, _ = read_wav(speech_wav)
    with connect(f"{rec.ws}/vosk?language=ko-KR", open_timeout=10) as ws:
        ws.send(pcm[:CHUNK])
        ws.recv(timeout=30)
        rec.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert rec.process.poll() is None
        signalled = time.monotonic()
        rec.process.send_signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed):
            while True:
                ws.recv(timeout=30)
    rec.process.wait(30)
    assert time.monotonic() - signalled < 10


def test_a_refused_speech_sdk_connection_that_sends_nothing_gets_its_reason_when_the_drain_ends(
        recognizer_process, speech_wav: Path) -> None:
    """A Speech SDK connection refused during the drain is read for its request (up to REQUEST_WAIT_SECONDS:
    speech_recognizer/usp/refusal.py). One that sends nothing gets its close, 1013 and the drain's reason, as soon as
    the drain is over (the last stream ended), and the process exits then. Before, uvicorn's shutdown closed it with
    1012 and no reason."""
    from speech_recognizer.drain import REASON
    from speech_recognizer.usp.refusal import REQUEST_WAIT_SECONDS

    rec = recognizer_process(f"{c.DRAIN_SECONDS}=60")
    pcm, _, _ = read_wav(speech_wav)
    with connect(f"{rec.ws}/vosk?language=ko-KR", open_timeout=10) as stream:  # in progress: the drain waits for it
        stream.send(pcm[:CHUNK])
        stream.recv(timeout=30)
        rec.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while httpx.get(f"{rec.http}/ready", timeout=5).status_code != 503:
            assert time.monotonic() < deadline, "not draining"
            time.sleep(0.05)
        with connect(f"{rec.ws}{USP}", subprotocols=["USP"], open_timeout=10) as silent:  # type: ignore[list-item]
            time.sleep(0.3)  # refused, read for its request
            stream.send('{"eof" : 1}')
            with pytest.raises(ConnectionClosed):
                while True:
                    stream.recv(timeout=30)
            ended = time.monotonic()
            with pytest.raises(ConnectionClosed) as closed:
                silent.recv(timeout=30)
            took = time.monotonic() - ended
    assert closed.value.rcvd is not None and (closed.value.rcvd.code, closed.value.rcvd.reason) == (1013, REASON), closed.value
    assert took < REQUEST_WAIT_SECONDS - 1, f"closed {took:.1f} s after the last stream ended"
    assert rec.process.wait(30) == 0, rec.output()


def test_a_phrase_held_for_the_segmentation_silence_comes_before_the_drains_deadline_closes_its_turn(
        recognizer_process, long_pauses_wav: Path, long_pauses_ref: Reference) -> None:
    """A Speech SDK turn holds the first sentence's phrase for the segmentation silence (tests/usp/held.py) and its
    client sends nothing more (a microphone left open). SIGTERM; at the drain's deadline (2 s) the turn is closed
    with 1012, but the phrase the decoder finished comes before the close, in-process Vosk's words and times: the
    SDK connects again (to another pod) and sends its audio from after it. Before, the close came alone."""
    rec = recognizer_process(f"{c.DRAIN_SECONDS}=2")
    with connect(rec.ws + CONVERSATION, open_timeout=10) as ws:
        first_sentence_held(ws, long_pauses_wav, long_pauses_ref)
        before = [parse_text(ws.recv(timeout=30))]
        while before[-1].path != "speech.hypothesis":
            before.append(parse_text(ws.recv(timeout=30)))
        time.sleep(0.5)  # the server decodes the rest (1.5 s of silence) in a fraction of that
        rec.process.send_signal(signal.SIGTERM)
        after, code, reason = until_close(ws)
    assert code == 1012, (code, reason)
    assert_held_phrase_first(before + after, long_pauses_ref, [])
    assert rec.process.wait(30) == 0, rec.output()


def test_drain_seconds_is_a_bounded_setting() -> None:
    from speech_recognizer.settings import SettingsError, parse
    assert parse(["Eula=accept"], environ={}).drain_seconds == 30
    assert parse([f"{c.DRAIN_SECONDS}=0"], environ={}).drain_seconds == 0
    assert parse([], environ={"Drain__Seconds": "90"}).drain_seconds == 90
    for bad in ("-1", "3601", "soon"):
        with pytest.raises(SettingsError, match=c.DRAIN_SECONDS):
            parse([f"{c.DRAIN_SECONDS}={bad}"], environ={})
    assert os.environ.get("Drain__Seconds") is None


@pytest.mark.unit
async def test_after_the_last_recognition_clients_get_a_moment_to_close_their_connections() -> None:
    """A Speech SDK app whose continuous recognition has just ended is still taking in its turn's end;
    closing its connection then (1012) reached it as a canceled recognition (seen once in CI, in
    test_sigterm_lets_running_streams_finish_and_refuses_new_work). So the server waits, within the
    deadline, until the clients have closed their WebSockets, for at most LINGER_SECONDS."""
    import asyncio

    from speech_recognizer.admission import Admission
    from speech_recognizer.drain import LINGER_SECONDS, Drain

    assert 0 < LINGER_SECONDS <= 5
    drain = Drain(60, Admission(1))
    drain.begin()
    assert await drain.linger() == 0, "nothing open: no wait"

    drain.admission.connections = 1

    async def client_closes() -> None:
        await asyncio.sleep(0.2)
        drain.admission.connections -= 1

    # Bounds far from the sleeps they check (a loaded machine wakes late), and below what the bug each guards would take.
    started = time.monotonic()
    closing = asyncio.create_task(client_closes())
    assert await drain.linger(10) == 0
    await closing
    assert 0.15 < time.monotonic() - started < 5, "exits as soon as the client has closed, not at its 10 s"

    drain.admission.connections = 1  # an idle client that keeps its connection
    started = time.monotonic()
    assert await drain.linger(0.3) == 1
    assert 0.25 < time.monotonic() - started < LINGER_SECONDS, "its own seconds, not LINGER_SECONDS"

    late = Drain(0.2, Admission(1))
    late.begin()
    late.admission.connections = 1
    started = time.monotonic()
    assert await late.linger(10) == 1
    assert time.monotonic() - started < 5, "never past the drain's deadline (0.2 s), not its 10 s"



@pytest.mark.unit
async def test_closing_the_idle_connections_takes_no_longer_than_its_seconds() -> None:
    """An idle recognition WebSocket whose client reads nothing (its replies filled the buffers): the drain's close
    waits on it, and waited AudioIdleSeconds (the bounded send) before the server could stop. Now no longer than
    close_idle's seconds; the server's stop resets that connection (tests above)."""
    import asyncio

    from speech_recognizer.admission import Admission
    from speech_recognizer.drain import Drain, Socket

    async def stalled(message: dict) -> None:
        await asyncio.sleep(3600)

    drain = Drain(60, Admission(1))
    drain.begin()
    deaf = Socket(stalled)
    deaf.accepted = True
    drain.sockets.add(deaf)
    started = time.monotonic()
    async with asyncio.timeout(10):
        assert await drain.close_idle(0.3) == 1
    assert time.monotonic() - started < 5, "its 0.3 s"

class SlowUpload(threading.Thread):
    """A REST recognition whose body arrives over 2 s (``uploading`` once the recognition runs); ``answer`` at its end.
    With ``openai``, an OpenAI transcription whose form (the audio in it) arrives so."""

    def __init__(self, rec: Recognizer, audio: bytes, *, openai: bool = False) -> None:
        super().__init__(name="slow-upload")
        self.rec = rec
        self.url, self.audio, self.headers = f"{rec.http}{REST}&format=simple", audio, {"Content-Type": "audio/wav"}
        if openai:
            self.url, self.audio, self.headers = openai_request(rec, audio)
        self.uploading = threading.Event()
        self.answer: httpx.Response | None = None

    def _body(self) -> Iterator[bytes]:
        step = len(self.audio) // 10 + 1
        for i in range(0, len(self.audio), step):
            yield self.audio[i : i + step]
            if i >= 2 * step:  # the server has had its head for a while: the recognition runs
                self.uploading.set()
            time.sleep(0.2)

    def run(self) -> None:
        with httpx.Client(timeout=60) as client:  # a hang guard: the drain's deadline (60 s) bounds the answer
            self.answer = client.post(self.url, content=self._body(), headers=self.headers)


def openai_request(rec: Recognizer, audio: bytes) -> tuple[str, bytes, dict[str, str]]:
    """The URL, body and headers of an OpenAI transcription of the WAV ``audio`` (as OpenAI's clients send it)."""
    request = httpx.Request("POST", f"{rec.http}{c.ROUTE_OPENAI_TRANSCRIPTIONS}", data={"model": "whisper-1", "language": "ko"},
                            files={"file": ("speech.wav", audio, "audio/wav")})
    return str(request.url), request.read(), {"Content-Type": request.headers["Content-Type"]}


def test_http_recognitions_in_flight_are_answered_new_ones_refused_and_keep_alive_ends_when_the_drain_begins(
        recognizer_process, utterances_wav: Path, speech_wav: Path) -> None:
    """The HTTP side of a drain, one drain for what each client below sees (one recognizer to start, not one each).

    OpenAI's route is a recognition to the drain, as the REST route is: a transcription in flight at SIGTERM (its
    upload arriving) is answered whole before the server exits, and one that comes during the drain is refused at once,
    503 ``draining`` with ``Retry-After`` in OpenAI's error shape (which the openai package retries, on another pod),
    counted and logged under route ``openai``. A draining server transcribed it (200) while it refused REST: new work
    taken on by a server that is going away, which its deadline then cuts if it runs long. Each recognition in flight
    is counted once (not as a request and as a decoder held).

    A client that keeps HTTP connections alive (the gateway, an ingress controller's upstream pool, an app's HTTP
    client) must not go on sending its requests to a draining server while other pods are ready: at the drain's start
    its idle connection is closed, and every answer from then on, the one to a request in flight included (it is
    answered whole), says ``Connection: close``. Without that, uvicorn kept such connections, and each request on one
    got 503 ``draining`` until the drain ended.

    A client that pipelines: its second request's head came in the read that ended the first request, in part, and
    the rest comes after the drain began (recognitions still run, so the drain goes on). That request is coming, as one
    whose head arrives on its own is: it is answered with ``Connection: close``, not cut with the idle connections."""
    import http.client

    from prometheus_client.parser import text_string_to_metric_families

    from speech_recognizer.errors import FAILURE_HEADER

    rec = recognizer_process(f"{c.DRAIN_SECONDS}=60", f"{c.LOG_LEVEL}=DEBUG")  # a drain's refusal is a debug line
    idle = http.client.HTTPConnection("127.0.0.1", rec.port, timeout=10)
    idle.request("GET", c.ROUTE_STATUS)
    first = idle.getresponse()
    first.read()
    assert first.status == 200 and first.getheader("Connection") is None, "kept alive before the drain"
    with socket.create_connection(("127.0.0.1", rec.port), timeout=10) as pipelined:
        pipelined.sendall(f"GET {c.ROUTE_STATUS} HTTP/1.1\r\nHost: x\r\n\r\nGET {c.ROUTE_STATUS} HTTP/1.1\r\nHo".encode())
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            answer += pipelined.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200"), answer

        rest = SlowUpload(rec, speech_wav.read_bytes())
        openai = SlowUpload(rec, utterances_wav.read_bytes(), openai=True)
        rest.start()
        openai.start()
        assert rest.uploading.wait(10) and openai.uploading.wait(10)
        rec.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        assert idle.sock.recv(1) == b"", "the idle kept-alive connection is closed"
        closed_in = time.monotonic() - signalled
        assert closed_in < 1.5, f"closed {closed_in:.2f} s after SIGTERM"

        pipelined.sendall(b"st: x\r\n\r\n")  # the drain has begun: the idle connection was closed by it
        second = b""
        while chunk := pipelined.recv(65536):
            second += chunk
    assert second.startswith(b"HTTP/1.1 200"), second
    assert b"connection: close" in second.lower(), second

    url, body, headers = openai_request(rec, speech_wav.read_bytes())
    new = httpx.post(url, content=body, headers=headers, timeout=30)
    assert new.status_code == 503, (new.status_code, new.text)
    assert new.headers["Retry-After"] == "1" and new.headers[FAILURE_HEADER] == "draining", new.headers
    assert new.json() == {"error": {"message": REQUEST_REFUSED, "type": "server_error", "param": None, "code": "draining"}}, new.text
    counted = {(s.name, s.labels.get("route"), s.labels.get("status") or s.labels.get("reason")): s.value
               for f in text_string_to_metric_families(httpx.get(f"{rec.http}/metrics", timeout=5).text) for s in f.samples}
    assert counted.get(("speech_refused_total", "openai", "draining")) == 1, counted
    assert counted.get(("speech_requests_total", "openai", "503")) == 1, counted
    for route in (c.ROUTE_STATUS, c.ROUTE_METRICS):  # answered during the drain, on a new connection, which then closes
        answered = httpx.get(f"{rec.http}{route}", timeout=5)
        assert answered.status_code == 200 and answered.headers["Connection"] == "close", (route, answered.headers)

    rest.join(60)
    assert rest.answer is not None and rest.answer.status_code == 200 and rest.answer.json()["DisplayText"], rest.answer
    assert rest.answer.headers["Connection"] == "close", rest.answer.headers
    openai.join(60)
    transcribed = openai.answer
    assert transcribed is not None and transcribed.status_code == 200, transcribed and transcribed.text
    pcm, rate, _ = read_wav(utterances_wav)  # the whole file transcribed
    assert transcribed.json()["text"] and transcribed.json()["usage"]["seconds"] == math.ceil(len(pcm) / (2 * rate)), transcribed.text
    assert transcribed.headers["Connection"] == "close", transcribed.headers
    assert rec.process.wait(60) == 0, rec.output()
    log = rec.output()
    assert f"openai: draining: {REQUEST_REFUSED}" in log and "drained: every recognition ended" in log, log
    assert "draining: 2 recognition(s) running" in log, log  # the REST one and the OpenAI one, each counted once
    print(f"the idle kept-alive connection was closed {closed_in * 1000:.0f} ms after SIGTERM")


def test_the_uvicorn_internals_the_drain_uses_are_there() -> None:
    """The drain (:meth:`~speech_recognizer.drain.DrainingServer._end_keep_alive`) reads uvicorn's
    ``Server.server_state.connections`` (not a documented API: uvicorn 0.54) and ends keep-alive on the HTTP protocol
    objects in it through uvicorn's ``shutdown()`` of its httptools protocol, whose meaning it relies on (close if
    idle, else no keep-alive after the answer). A uvicorn that changes either fails here first."""
    import http.client
    import inspect

    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from ..support import ServerThread

    async def app(scope, receive, send) -> None:
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

    with ServerThread(app) as server:
        kept = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        kept.request("GET", "/")
        assert kept.getresponse().read() == b"ok"
        connections = list(server.server.server_state.connections)
        assert len(connections) == 1 and isinstance(connections[0], HttpToolsProtocol), connections
        kept.close()
    source = inspect.getsource(HttpToolsProtocol.shutdown)
    assert "self.transport.close()" in source and "self.cycle.keep_alive = False" in source, source


def server_side(port: int, client: socket.socket) -> tuple[str, int]:
    """The state and send queue of the server's end of ``client``'s connection, as ``ss`` shows them (("", 0) once gone)."""
    out = subprocess.run(["ss", "-tnH", "state", "all", f"( sport = :{port} and dport = :{client.getsockname()[1]} )"],
                         capture_output=True, text=True, check=True).stdout.split()
    return (out[0], int(out[2])) if out else ("", 0)


def stalled_client(rec: Recognizer, route: str, first_audio: bytes) -> socket.socket:
    """A client that reads nothing (tests/recognizer/test_not_reading.py), its replies stalling the server's sends on
    ``route``: ``/vosk`` answers ``{"reset" : 1}`` after ``{"reset" : 1}``, the Speech SDK route turn after turn. Returned
    once the server's send queue is full: unchanged for 2 s."""
    if route == "vosk":
        sock, protocol = deaf_websocket(rec.port, "/vosk?language=ko-KR")
        protocol.send_text(json.dumps({"config": {"max_alternatives": 1}}).encode())
        protocol.send_binary(first_audio)
        for _ in range(20000):
            protocol.send_text(b'{"reset" : 1}')
        send_all(sock, [b"".join(protocol.data_to_send())])
    else:
        sock, protocol = deaf_websocket(rec.port, USP)
        send_all(sock, usp_frames(protocol, 6000))
    started, last, since = time.monotonic(), server_side(rec.port, sock), time.monotonic()
    while (now := server_side(rec.port, sock)) != last or not now[1] or time.monotonic() - since < 2:
        if now != last:
            last, since = now, time.monotonic()
        assert time.monotonic() - started < 60, f"the server's sends never stalled: {now}"
        time.sleep(0.1)
    return sock


@pytest.mark.parametrize("route", ["vosk", "usp"])
def test_a_client_that_reads_nothing_does_not_hold_the_stop_past_the_drain(
        recognizer_process, route: str, speech_wav: Path, speech_ref: Reference) -> None:
    """A WebSocket client that reads none of its replies (its stream's sends stalled, its decoder held) beside a client
    mid-stream. SIGTERM: the reading client gets every result and its close (1000) during the drain; the one that reads
    nothing holds its stream until the drain's deadline, and is then reset: the process exits within the drain's
    bound (Drain:Seconds, the deadline's CUT_SECONDS, SHUTDOWN_STALL_SECONDS, and 2 s to stop in time the processes did
    not wait for a CPU). Before, its stalled send waited out AudioIdleSeconds (30 s by default; 60 s here, so that
    however long before SIGTERM the stall began, what it held the stop to is far past that bound), and uvicorn's stop
    waited on it: past the pod's grace when the stall began late in the drain or the drain is shorter.

    The reading client streams one utterance (3 s), SIGTERM once it has had the replies to half its audio (each chunk's
    reply comes once it is decoded), on a recognizer warm for that utterance (a REST request of it came before: the
    pool hands its recognizer on). Its outcome within the drain's 10 s is then not a race with the machine's speed:
    what comes after SIGTERM is 1.5 s of audio at real time and its decoding on a warm recognizer (a fraction of that).
    Before, SIGTERM came 1.5 s after the stream began, whatever of it was decoded, on a new recognizer (its first
    utterance several times the CPU of later ones): at a load of 24 the stream had not ended at the deadline (1012)."""
    from speech_recognizer.drain import CUT_SECONDS
    from speech_recognizer.http_limits import SHUTDOWN_STALL_SECONDS

    drain = 10
    rec = recognizer_process(f"{c.DRAIN_SECONDS}={drain}", f"{c.AUDIO_IDLE_SECONDS}=60")
    pcm = read_wav(speech_wav)[0]
    with stalled_client(rec, route, pcm[:CHUNK]):
        warm = httpx.post(f"{rec.http}{REST}", content=speech_wav.read_bytes(), headers={"Content-Type": "audio/wav"}, timeout=120)
        assert warm.status_code == 200 and warm.json()["DisplayText"], warm.text  # its recognizer pooled, for the stream
        reused = ("speech_recognizers_reused_total", ())
        before = scrape_metrics(rec.http)[reused]
        reading = VoskStream(f"{rec.ws}/vosk?language=ko-KR", pcm)
        started = time.monotonic()
        reading.start()
        half = math.ceil(len(pcm) / CHUNK / 2)
        while len(reading.replies) < half:  # SIGTERM halfway through its audio, as decoded
            assert reading.is_alive() and time.monotonic() - started < STREAMS_START, (reading.error, len(reading.replies))
            time.sleep(0.02)
        assert scrape_metrics(rec.http)[reused] == before + 1, "the stream is on the REST request's warm recognizer"
        signalled = time.monotonic()
        rec.process.send_signal(signal.SIGTERM)
        bound = drain + CUT_SECONDS + SHUTDOWN_STALL_SECONDS + 2
        within(bound, lambda: rec.process.poll() is not None, "the process's exit after SIGTERM, within the drain's bound")
        stopped = time.monotonic() - signalled
        reading.join(30)
    assert rec.process.returncode == 0, rec.output()
    # closed with 1000 (VoskStream's error else): during the drain, the deadline's close being 1012
    assert reading.error is None and reading.finals == speech_ref.texts, (reading.error, reading.finals)
    assert "not_reading: the server stopped" in rec.output(), rec.output()
    print(f"{route}: SIGTERM {signalled - started:.1f} s into the reading client's stream; it ended "
          f"{reading.ended_at - signalled:.1f} s after; the process exited {stopped:.1f} s after SIGTERM")


def test_streams_the_drains_deadline_cuts_are_closed_and_counted_as_the_drains(recognizer_process, speech_wav: Path) -> None:
    """Streams still running when ``Drain:Seconds`` runs out (2 s here): a /vosk stream and a Speech SDK turn, each
    client having sent a second of audio and nothing more, its connection open, reading. Each is closed by the
    server's stop at the deadline (1012, uvicorn's "service restart"), and the process exits 0. Each is counted as
    the drain's (``draining``), nothing more sent, not as a client that left mid-stream (``client_gone``: the 1012
    disconnect is the server's own; before, the Speech SDK route said "the client left mid-turn", /vosk "the client
    left without {"eof" : 1}"). The two routes share one drain (one recognizer to start, not one per route): each has
    its own close and its own failure line."""
    rec = recognizer_process(f"{c.DRAIN_SECONDS}=2", f"{c.LOG_LEVEL}=Debug")  # a drain's failure is a debug line
    pcm = read_wav(speech_wav)[0][: 10 * CHUNK]
    with connect(f"{rec.ws}/vosk?language=ko-KR", open_timeout=10) as vosk, connect(rec.ws + USP, open_timeout=10) as usp:
        for i in range(0, len(pcm), CHUNK):
            vosk.send(pcm[i : i + CHUNK])
        assert "partial" in json.loads(vosk.recv(timeout=30))
        rid = uuid.uuid4().hex
        usp.send(client_text_frame("speech.context", rid, {"phraseDetection": {"language": "ko-KR"}}))
        for payload in [wav_bytes(b"")] + [pcm[i : i + CHUNK] for i in range(0, len(pcm), CHUNK)]:
            usp.send(client_audio_frame(rid, payload))
        assert parse_text(usp.recv(timeout=30)).path == "turn.start"
        time.sleep(0.5)  # their audio decoded: nothing in flight at the deadline
        signalled = time.monotonic()
        rec.process.send_signal(signal.SIGTERM)
        closes = {}
        for route, ws in (("vosk", vosk), ("usp/conversation", usp)):  # the clients stay, sending nothing
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    ws.recv(timeout=30)
            closes[route] = closed.value.rcvd and closed.value.rcvd.code
            if route == "vosk":
                cut = time.monotonic() - signalled
    assert closes == {"vosk": 1012, "usp/conversation": 1012}, closes
    assert 1.8 <= cut < 6, cut  # at the deadline, not before it nor long after
    assert rec.process.wait(30) == 0, rec.output()
    log = rec.output()
    assert "drain deadline (2 s) reached with 2 recognition(s) still running" in log, log
    failures = [line for line in log.splitlines() if "speech_recognizer.failures" in line]
    assert len(failures) == 2, failures
    for route in closes:
        assert sum(f" {route}: draining: " in line for line in failures) == 1, (route, failures)
    assert "Traceback" not in log, log
