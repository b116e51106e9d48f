"""``ConnectionIdleSeconds``: a recognition WebSocket with no stream in progress that sends nothing is let go with 1000.

Such a connection (before its first audio; a Speech SDK app's between its recognitions) was left open for
ever: it kept its pod busy for the operator (never scaled away nor to zero) and held one of
``MaxConnections``. The close is 1000 because the real Speech SDK connects again at its next recognition
after a 1000 (after a 1001 or 1012 it fails that recognizer's every later recognition at once). Each test
runs a real server on loopback with ``ConnectionIdleSeconds`` = :data:`IDLE`; what is closed, and what is
not (a stream in progress, which only ``AudioIdleSeconds`` governs; a client that keeps sending), is
checked side by side, so every test fails on a server that never closes an idle connection.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import azure.cognitiveservices.speech as speechsdk
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from harness.usp import client_audio_frame, client_text_frame
from speech_recognizer.app import create_app
from speech_recognizer.models import LoadedModel, ModelRegistry
from speech_recognizer.usp.frames import parse_text

from ..conftest import make_settings
from ..support import Reference, ServerThread, read_wav, scrape_metrics
from ..usp.conftest import replay_reference
from ..usp.sdk import assert_matches, config, display_text, recognizer
from .test_open_connections import PATHS, USP, say_hello, sessions

#: ConnectionIdleSeconds of the test server.
IDLE = 1.0
#: How late after IDLE a close may come (the shared machine's scheduling).
LATE = 2.0
REASON = f"closed while idle: no recognition for {IDLE:g} s (ConnectionIdleSeconds); connect again"


@pytest.fixture(scope="module")
def srv(registry: ModelRegistry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    app = create_app(make_settings(tmp_path_factory.mktemp("connection-idle"), f"ConnectionIdleSeconds={IDLE:g}"), registry)
    with ServerThread(app) as server:
        yield server


def open_ws(srv: ServerThread, path: str) -> ClientConnection:
    return connect(f"{srv.ws}{path}?language=ko-KR", subprotocols=["USP"] if path == USP else None,  # type: ignore[list-item]
                   open_timeout=10)


def closed_after(ws: ClientConnection, since: float, wait: float = IDLE + 10) -> tuple[int | None, str, float]:
    """The close code and reason ``ws`` gets, and how long after ``since`` (code None: still open after ``wait``)."""
    try:
        while True:
            ws.recv(timeout=wait)
    except ConnectionClosed as closed:
        took = time.monotonic() - since
        return (closed.rcvd.code, closed.rcvd.reason, took) if closed.rcvd else (None, "no close frame", took)
    except TimeoutError:
        return None, "still open", time.monotonic() - since


def idle_closes(srv: ServerThread) -> dict[str, float]:
    """``speech_refused_total{reason="connection_idle"}`` by route."""
    return {dict(labels)["route"]: value for (name, labels), value in scrape_metrics(srv.http).items()
            if name == "speech_refused_total" and dict(labels)["reason"] == "connection_idle"}


@pytest.mark.parametrize("hello", [False, True], ids=["nothing sent", "config only"])
@pytest.mark.parametrize("route", PATHS)
def test_a_connection_with_no_stream_that_sends_nothing_is_closed_with_1000(srv: ServerThread, route: str, hello: bool) -> None:
    """Connected and silent, or after vosk's config / the Speech SDK's ``speech.config`` only: close 1000
    with the reason about ``ConnectionIdleSeconds`` after its last message, counted once."""
    path = PATHS[route]
    label = "vosk" if path != USP else "usp/conversation"
    before = idle_closes(srv).get(label, 0)
    with open_ws(srv, path) as ws:
        if hello:
            say_hello(ws, path)
        code, reason, took = closed_after(ws, time.monotonic())
    print(f"{route}, {'config only' if hello else 'nothing sent'}: close {code} after {took:.2f} s")
    assert (code, reason) == (1000, REASON)
    assert IDLE - 0.1 <= took <= IDLE + LATE
    assert idle_closes(srv).get(label, 0) == before + 1


def test_a_speech_sdk_app_idle_past_the_limit_recognizes_again(srv: ServerThread, model: LoadedModel, utterances_wav: Path,
                                                              utterances_ref: Reference) -> None:
    """The real SDK, one recognizer object: it recognizes, stays idle past ``ConnectionIdleSeconds`` (its
    connection is closed: the server reports no connection and its idle clock runs), then recognizes
    again, connecting again: the next phrase of its audio, as in-process Vosk hears it."""
    app = recognizer(config(srv.ws), utterances_wav)
    started = time.monotonic()
    first = app.recognize_once()
    ended = time.monotonic()
    assert_matches(first, utterances_ref.phrases[0])
    assert sessions(srv)["connections"] == 1, "the app keeps its connection between recognitions"
    while (now := sessions(srv))["connections"]:
        assert time.monotonic() - ended < IDLE + LATE, f"still connected {time.monotonic() - ended:.1f} s after the recognition: {now}"
        time.sleep(0.05)
    closed = time.monotonic() - ended
    assert closed >= IDLE - 0.1, f"closed {closed:.2f} s after the recognition"
    time.sleep(0.5)
    idle = sessions(srv)
    assert (idle["connections"], idle["sessions"]) == (0, 0) and idle["idleSeconds"] >= 0.4, "the server's idle clock runs again"

    again = time.monotonic()
    second = app.recognize_once()  # the SDK connects again
    took = time.monotonic() - again
    details = second.cancellation_details.error_details if second.reason == speechsdk.ResultReason.Canceled else ""
    assert second.reason == speechsdk.ResultReason.RecognizedSpeech, (second.reason, details)
    replayed = replay_reference(model, utterances_wav, (first.offset + first.duration) // 10_000 / 1000)
    assert replayed is not None
    assert_matches(second, replayed)
    print(f"connection closed {closed:.2f} s after the recognition; recognize_once took {ended - started:.2f} s, "
          f"then {took:.2f} s connecting again")


def test_streams_in_progress_are_not_closed_beside_an_idle_connection(srv: ServerThread, speech_wav: Path,
                                                                     speech_ref: Reference) -> None:
    """A /vosk stream and a Speech SDK recognition whose audio pauses for twice ``ConnectionIdleSeconds``
    mid-stream hold a decoder: only ``AudioIdleSeconds`` (30 s) governs them, and they get every word. A
    connection beside them that never streamed is closed meanwhile."""
    pcm, _, _ = read_wav(speech_wav)
    half = len(pcm) // 2 // 3200 * 3200
    pause = 2 * IDLE

    def vosk() -> list[str]:
        with open_ws(srv, "/vosk") as ws:
            replies = []
            for i in range(0, len(pcm), 3200):
                if i == half:
                    time.sleep(pause)
                ws.send(pcm[i : i + 3200])
                replies.append(json.loads(ws.recv(timeout=30)))
            ws.send('{"eof" : 1}')
            replies.append(json.loads(ws.recv(timeout=30)))
            code, reason, _ = closed_after(ws, time.monotonic(), wait=10)
            assert (code, reason) == (1000, ""), "closed after eof, as vosk-server does"
        return [r["text"] for r in replies if r.get("text")]

    def sdk() -> list[str]:
        stream = speechsdk.audio.PushAudioInputStream()
        app = speechsdk.SpeechRecognizer(config(srv.ws), audio_config=speechsdk.audio.AudioConfig(stream=stream))
        stream.write(pcm[:half])
        result: Future[speechsdk.SpeechRecognitionResult] = Future()
        threading.Thread(target=lambda: result.set_result(app.recognize_once()), daemon=True).start()
        time.sleep(pause)
        stream.write(pcm[half:] + bytes(32000))
        got = result.result(timeout=60)
        details = got.cancellation_details.error_details if got.reason == speechsdk.ResultReason.Canceled else ""
        assert got.reason == speechsdk.ResultReason.RecognizedSpeech, (got.reason, details)
        return [got.text]

    with ThreadPoolExecutor(2) as pool, open_ws(srv, "/vosk") as quiet:
        opened = time.monotonic()
        streams = [pool.submit(vosk), pool.submit(sdk)]
        code, reason, took = closed_after(quiet, opened)
        assert (code, reason) == (1000, REASON) and took <= IDLE + LATE, "the quiet one is let go meanwhile"
        assert not any(s.done() for s in streams), "while the streams pause"
        assert [s.result(timeout=60) for s in streams] == [speech_ref.texts, [display_text(speech_ref.phrases[0])]]


def test_connections_that_keep_sending_are_not_closed(srv: ServerThread) -> None:
    """A vosk client sending its config and a Speech SDK client sending ``speech.config`` every
    ``IDLE`` / 4 s stay open three times ``ConnectionIdleSeconds``; once they stop, each is closed
    ``ConnectionIdleSeconds`` after its last message."""
    with ExitStack() as stack:
        chatty = {route: stack.enter_context(open_ws(srv, PATHS[route])) for route in ("vosk", "speech sdk")}
        started = last = time.monotonic()
        while time.monotonic() - started < 3 * IDLE:
            last = time.monotonic()
            for route, ws in chatty.items():
                if PATHS[route] == USP:  # a Speech SDK app sends speech.config and telemetry; any message counts
                    ws.send(client_text_frame("speech.config", None, {"context": {"system": {"name": "test"}}}))
                else:
                    say_hello(ws, PATHS[route])
            time.sleep(IDLE / 4)
            for ws in chatty.values():
                with pytest.raises(TimeoutError):
                    ws.recv(timeout=0.01)  # neither closed nor answered
        with ThreadPoolExecutor(len(chatty)) as pool:
            ends = dict(zip(chatty, pool.map(lambda ws: closed_after(ws, last), chatty.values()), strict=True))
    for route, (code, reason, took) in ends.items():
        print(f"{route}: open {last - started:.1f} s while it sent; closed {took:.2f} s after its last message")
        assert (code, reason) == (1000, REASON), route
        assert IDLE - 0.1 <= took <= IDLE + LATE, (route, took)


def test_a_speech_sdk_turn_after_speech_context_only_is_no_stream(srv: ServerThread) -> None:
    """A turn that sent ``speech.context`` and no audio holds no decoder: the connection is closed
    with 1000, without a ``speech.phrase`` (there is no recognition to end)."""
    with open_ws(srv, USP) as ws:
        ws.send(client_text_frame("speech.context", uuid.uuid4().hex, {"phraseDetection": {"language": "ko-KR"}}))
        code, reason, took = closed_after(ws, time.monotonic())
    assert (code, reason) == (1000, REASON) and took <= IDLE + LATE


def test_a_connection_is_let_go_connection_idle_seconds_after_its_turn_ends(srv: ServerThread, speech_wav: Path) -> None:
    """A client of the Speech SDK's protocol that sends its audio at once and then nothing: its turn ends
    while the server waits for its next message under the turn's deadlines (``AudioIdleSeconds``, 30 s);
    from the turn's end the nearer ``ConnectionIdleSeconds`` is the one that counts."""
    pcm, _, _ = read_wav(speech_wav)
    rid = uuid.uuid4().hex
    with open_ws(srv, USP) as ws:
        ws.send(client_text_frame("speech.context", rid, {"phraseDetection": {"language": "ko-KR"}}))
        for i in range(0, len(pcm), 3200):
            ws.send(client_audio_frame(rid, pcm[i : i + 3200]))
        ws.send(client_audio_frame(rid, b""))  # the end of its audio: the turn's last phrase comes at its decoding's end
        paths = []
        while not paths or paths[-1] != "turn.end":
            paths.append(parse_text(ws.recv(timeout=30)).path)
        ended = time.monotonic()
        code, reason, took = closed_after(ws, ended)
    assert "speech.phrase" in paths
    print(f"closed {took:.2f} s after its turn ended")
    assert (code, reason) == (1000, REASON) and IDLE - 0.1 <= took <= IDLE + LATE
