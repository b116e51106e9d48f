"""An unmodified Speech SDK for JavaScript app (npm ``microsoft-cognitiveservices-speech-sdk``, run by Node.js on
recognize.mjs) against the recognizer, checked against in-process Vosk as tests/usp checks the Python SDK.

Nothing is mocked but the browser: the "browser" form runs the SDK's browser branch (a global ``WebSocket`` opened
with the URL alone, so the key, a token and the connection id travel in the URL's query, as from a web page), with
the ws package standing in for a browser's WebSocket (recognize.mjs says why). The gateway's case is in
tests/gateway/test_routes.py (its recognizer processes are that module's).

What the JavaScript SDK does differently from the Python SDK, and these tests pin: it reports a refused key
(401/403 at the upgrade) as ``ConnectionFailure`` with the status in its details, after 5 attempts (it has no
``AuthenticationFailure`` for a connection; against Azure alike); it sends no continuation offset and reads a
``speech.phrase`` error with its own fixed words, so a bad request's reason reaches the app only from the close.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect as sync_connect

from harness.usp import client_audio_frame, client_text_frame
from speech_recognizer.app import create_app
from speech_recognizer.models import LoadedModel, ModelRegistry
from speech_recognizer.results import written
from speech_recognizer.usp.connection import Turn, split_header
from speech_recognizer.usp.frames import parse_text

from ..conftest import CHUNK, LONG_PAUSE_MS, TEST_KEY, make_settings
from ..support import Reference, ServerThread, Starved, vosk_reference
from ..usp.sdk import Span, assert_confidences, assert_same, expected, expected_words, spans
from ..usp.test_idle_proxy import HOLD_AT
from .node import HANG_MS, LOCK, MULTICHANNEL, recognize, result_span, scenario

ENDPOINT = "/speech/recognition/conversation/cognitiveservices/v1"
#: Faster than real time, slow enough that results come while the audio streams.
SPEED = 2


def recognized_once(out: dict[str, Any]) -> dict[str, Any]:
    result = out["once"]
    assert result is not None and result["reason"] == "RecognizedSpeech", out
    assert out["canceled"] == [] and out["sessionStopped"] == 1, out
    return result


@pytest.mark.unit
def test_the_lock_pins_every_package_with_its_hash() -> None:
    """``npm ci`` installs exactly what package-lock.json names, from the registry (npm leaves its default registry's
    URL out of the lock), each checked against its sha512."""
    packages = {name: p for name, p in json.loads(LOCK.read_text())["packages"].items() if name}
    assert packages["node_modules/microsoft-cognitiveservices-speech-sdk"]["version"] == "1.52.0"
    for name, package in packages.items():
        assert package.get("resolved", "https://registry.npmjs.org/").startswith("https://registry.npmjs.org/"), name
        assert package["integrity"].startswith("sha512-"), name


@pytest.mark.parametrize("browser", [False, True], ids=["node", "browser"])
def test_recognize_once_from_host(jssdk: str, server: ServerThread, speech_wav: Path, speech_ref: Reference, browser: bool) -> None:
    """``SpeechConfig.fromHost(new URL("ws://..."))``, a push stream, ``recognizeOnceAsync``: in-process Vosk's words and times."""
    out = recognize(jssdk, scenario(server.ws, speech_wav, mode="once", browser=browser))
    result = recognized_once(out)
    assert_same([result_span(result)], [expected(speech_ref.phrases[0])])
    assert result["json"]["DisplayText"] == result["text"] and "NBest" not in result["json"]
    assert [result_span(r) for r in out["recognized"]] == [result_span(result)]


@pytest.mark.parametrize(("browser", "credential"), [(False, "key"), (True, "key"), (True, "token")])
def test_recognize_once_with_a_key(jssdk: str, keyed_server: ServerThread, speech_wav: Path, speech_ref: Reference,
                                   browser: bool, credential: str) -> None:
    """With ``ApiKey`` set: ``fromHost(url, key)``, or ``fromHost`` and ``authorizationToken``. In the browser form the
    key or token is in the URL only (``Ocp-Apim-Subscription-Key=`` or ``Authorization=Bearer …``): it is taken there."""
    out = recognize(jssdk, scenario(keyed_server.ws, speech_wav, mode="once", browser=browser, **{credential: TEST_KEY}))
    assert_same([result_span(recognized_once(out))], [expected(speech_ref.phrases[0])])
    if browser:
        in_query = f"Ocp-Apim-Subscription-Key={TEST_KEY}" if credential == "key" else f"Authorization=Bearer%20{TEST_KEY}"
        assert len(out["opened"]) == 1 and in_query in out["opened"][0], out["opened"]


def test_recognize_once_from_endpoint_with_a_key(jssdk: str, keyed_server: ServerThread, speech_wav: Path, speech_ref: Reference) -> None:
    """``SpeechConfig.fromEndpoint(new URL(".../conversation/cognitiveservices/v1"), key)``."""
    out = recognize(jssdk, scenario(keyed_server.ws + ENDPOINT, speech_wav, mode="once", endpoint=True, key=TEST_KEY))
    assert_same([result_span(recognized_once(out))], [expected(speech_ref.phrases[0])])


def test_continuous_detailed_gives_hypotheses_and_each_utterance_while_the_audio_streams(
    jssdk: str, fresh_server: ServerThread, utterances_wav: Path, utterances_ref: Reference
) -> None:
    """``startContinuousRecognitionAsync`` with ``OutputFormat.Detailed`` and word timestamps, audio pushed in real time
    as a microphone gives it, whose speaker is still talking when the first phrase comes back: the app pushes nothing
    past :data:`HOLD_AT` (before the second utterance) until a phrase is recognized, so that phrase must come while the
    audio streams, by that event however slow a busy machine decodes (at real time alone, a loaded one's first phrase
    came after the audio's end: CI trials 90, 97 and 116); a server that answered only at the end of the
    stream leaves the app waiting until its ``timeoutMs``, which fails. ``recognizing`` before its phrase,
    ``recognized`` once per utterance, each phrase and word where in-process Vosk puts it, with its confidence; the end
    of the stream stops the session."""
    out = recognize(jssdk, scenario(fresh_server.ws, utterances_wav, mode="continuous", detailed=True, speed=1, holdAt=HOLD_AT,
                                    timeoutMs=HANG_MS))
    recognized = out["recognized"]
    assert all(r["reason"] == "RecognizedSpeech" for r in recognized), recognized
    assert_same([result_span(r) for r in recognized], [expected(p) for p in utterances_ref.phrases])
    for result, phrase in zip(recognized, utterances_ref.phrases, strict=True):
        best = result["json"]["NBest"][0]
        assert best["Display"] == result["text"]
        assert_same(spans(best["Words"]), expected_words(phrase))
        assert_confidences(result["json"], phrase)
    assert out["recognizing"], "no recognizing events"
    assert out["recognizing"][0]["ms"] < recognized[0]["ms"]
    # by the clock: the audio's pace is a microphone's; the app holds it at HOLD_AT until a phrase came, however slow
    assert recognized[0]["ms"] < out["audioDoneMs"] - 2000, "the first phrase came only at the end of the audio"
    assert [c["cancelReason"] for c in out["canceled"]] == ["EndOfStream"] and out["sessionStopped"] == 1, out


@pytest.fixture
def turn_audio(monkeypatch: pytest.MonkeyPatch) -> dict[str, bytearray]:
    """The audio each Speech SDK turn of the server received (its RIFF header left out), by request id in the order
    the turns began: recorded as it reaches ``usp.connection.Turn.audio``, which then runs unchanged (a spy, no mock)."""
    received: dict[str, bytearray] = {}
    audio = Turn.audio

    async def spy(turn: Turn, payload: bytes) -> None:
        riff = split_header(payload)
        received.setdefault(turn.request_id, bytearray()).extend(riff[1] if riff else payload)
        await audio(turn, payload)

    monkeypatch.setattr(Turn, "audio", spy)
    return received


@pytest.mark.parametrize(("mode", "multichannel"), [("once", False), ("continuous", False), ("continuous", True)],
                         ids=["once", "continuous", "continuous-multichannel"])
def test_recognitions_one_after_another_on_one_recognizer_each_report_their_own_utterance(
    jssdk: str, fresh_server: ServerThread, model: LoadedModel, utterances_wav: Path, utterances_ref: Reference,
    turn_audio: dict[str, bytearray], mode: str, multichannel: bool
) -> None:
    """One recognizer on one push stream, three recognitions on its one connection, each over the next part of the
    audio (cut 0.1 s before the next utterance): ``recognizeOnceAsync`` three times, or start, a phrase, stop three
    times. This SDK sends no continuation offset: each recognition counts its offsets from the start of the audio it
    sends, and the app gets each utterance once, as in-process Vosk decodes that turn's audio (where that audio
    begins is the SDK's: it drops the first 100 ms chunk pushed after a recognition, and what a stopped session had
    not sent yet goes first in the next). Before, the server dropped every phrase of the second and third turn that
    ended before the first phrase's end (2.13 s), taking their offsets for times of the stream already reported: the
    second and third session, or the third ``recognizeOnceAsync``, got nothing. With multi-channel processing on
    (test_multichannel.py) alike: each recognition starts the SDK's reliable-reconnect state afresh, with no
    continuation, and it takes the offsets as sent, counted from the start of the recognition's audio."""
    properties = MULTICHANNEL if multichannel else {}
    cuts = [math.floor((p.words[0].start - 0.1) * 10) / 10 for p in utterances_ref.phrases[1:]]  # on the SDK's 100 ms grid
    out = recognize(jssdk, scenario(fresh_server.ws, utterances_wav, mode=mode, cuts=cuts, partTimeoutMs=10000, timeoutMs=45000,
                                    properties=properties), timeout=60)
    results = out["onces"] if mode == "once" else out["recognized"]
    assert [r["reason"] for r in results] == ["RecognizedSpeech"] * 3, results
    assert len(turn_audio) == 3, "a turn a recognition"
    want: list[Span] = []
    for audio in turn_audio.values():
        phrases = vosk_reference(model.model, bytes(audio), 16000, CHUNK, runs=1).phrases
        want += [expected(p) for p in phrases[: 1 if mode == "once" else None]]
    assert len(want) == 3, f"in-process Vosk hears an utterance a turn: {want}"
    assert_same([result_span(r) for r in results], want)
    assert_same([result_span(results[0])], [expected(utterances_ref.phrases[0])])
    assert not [c for c in out["canceled"] if c["cancelReason"] == "Error"], out["canceled"]


def test_a_segmentation_silence_longer_than_the_decoders_joins_phrases_across_shorter_pauses(
    jssdk: str, fresh_server: ServerThread, long_pauses_wav: Path, long_pauses_ref: Reference
) -> None:
    """``Speech_SegmentationSilenceTimeoutMs`` 2000 in continuous recognition: the sentences 1 s apart come as one
    phrase (in-process Vosk's two joined, words and times), the hypotheses of the second after the first's words; the
    one 3 s later is a phrase of its own, as tests/usp/test_sdk_features.py checks with the Python SDK. Before, the
    setting was ignored above the decoder's own pause: three phrases."""
    first, second, third = long_pauses_ref.phrases
    out = recognize(jssdk, scenario(fresh_server.ws, long_pauses_wav, mode="continuous", detailed=True,
                                    properties={"Speech_SegmentationSilenceTimeoutMs": str(LONG_PAUSE_MS)}))
    recognized = out["recognized"]
    assert all(r["reason"] == "RecognizedSpeech" for r in recognized), recognized
    want = [first.then(second), third]
    assert_same([result_span(r) for r in recognized], [expected(p) for p in want])
    for result, phrase in zip(recognized, want, strict=True):
        assert_same(spans(result["json"]["NBest"][0]["Words"]), expected_words(phrase))
    heard_first = written(first.text) + " "
    assert any(h["text"].startswith(heard_first) and len(h["text"]) > len(heard_first) for h in out["recognizing"]), out["recognizing"]


@pytest.mark.parametrize("browser", [False, True], ids=["node", "browser"])
@pytest.mark.parametrize(("key", "status"), [("not-the-key", "401"), (None, "403")], ids=["wrong", "missing"])
def test_a_refused_key_cancels_at_once(jssdk: str, keyed_server: ServerThread, speech_wav: Path, browser: bool,
                                       key: str | None, status: str) -> None:
    """A wrong or missing key: ``canceled`` with ``ConnectionFailure`` naming the HTTP status (the JavaScript SDK's
    words for a refused upgrade: it has no ``AuthenticationFailure`` there), in continuous mode as in recognize-once,
    within moments (its 5 attempts), never a hang. (A real browser hides the status from the page.)"""
    for mode in ("once", "continuous"):
        with Starved() as starved:
            started = time.monotonic()
            out = recognize(jssdk, scenario(keyed_server.ws, speech_wav, mode=mode, browser=browser, key=key, timeoutMs=10000))
            ended = time.monotonic()
        took = starved.unstarved(started, ended)
        assert took < 8, f"the SDK waited instead of failing: {ended - started:.2f} s, {took:.2f} s of it not for a CPU"
        assert out["recognized"] == [] and out["recognizing"] == []
        assert [(c["cancelReason"], c["errorCode"]) for c in out["canceled"]] == [("Error", "ConnectionFailure")], out
        assert f"Unexpected server response: {status}" in out["canceled"][0]["errorDetails"]


@pytest.mark.parametrize("mode", ["once", "continuous"])
def test_an_unknown_language_cancels_naming_it_and_the_served_ones(jssdk: str, server: ServerThread, speech_wav: Path, mode: str) -> None:
    """The app's ``CancellationDetails`` carry the server's reason (the language asked for and those served), as the
    Python SDK's do. The JavaScript SDK reads a ``speech.phrase`` ``BadRequest`` as its own fixed words ("Invalid
    parameter or unsupported audio format in the request."); the reason reaches it from the close 1007 alone."""
    with Starved() as starved:
        started = time.monotonic()
        out = recognize(jssdk, scenario(server.ws, speech_wav, mode=mode, language="xx-XX", timeoutMs=10000))
        ended = time.monotonic()
    took = starved.unstarved(started, ended)
    assert took < 5, f"the SDK retried instead of failing fast: {ended - started:.2f} s, {took:.2f} s of it not for a CPU"
    assert out["recognized"] == []
    assert [(c["cancelReason"], c["errorCode"]) for c in out["canceled"]] == [("Error", "BadRequestParameters")], out
    details = out["canceled"][0]["errorDetails"]
    assert "'xx-XX'" in details and "ko-KR" in details and "1007" in details, details



def test_every_decoder_busy_cancels_at_once_with_too_many_requests_in_the_sdks_own_words(
    jssdk: str, registry: ModelRegistry, tmp_path: Path, speech_wav: Path
) -> None:
    """Every decoder busy: the server ends the turn with a ``speech.phrase`` ``TooManyRequests`` whose ``Message`` says
    why (the Python SDK shows it: tests/usp/test_protocol.py), then closes with 1013 and the reason. The JavaScript SDK
    cancels at once with ``TooManyRequests`` in its own fixed words: it words a status from its code alone
    (``EnumTranslation.implTranslateErrorDetails``; the ``Message`` is never read), and reports a close's reason only
    for 1002, 1003, 1007 and 4000 (``ServiceRecognizerBase``'s ``ConnectionClosedEvent`` handler), the recognition
    being canceled by then anyway. No message a server sends gets the reason to it."""
    app = create_app(make_settings(tmp_path, "DecoderMaxCount=1"), registry)
    with ServerThread(app) as srv, sync_connect(srv.ws + ENDPOINT + "?language=ko-KR") as holder:
        held = uuid.uuid4().hex
        holder.send(client_text_frame("speech.context", held, {"phraseDetection": {"language": "ko-KR"}}))
        holder.send(client_audio_frame(held, b"\0" * 3200))
        assert parse_text(holder.recv(timeout=30)).path == "turn.start", "the one decoder is held"
        with Starved() as starved:
            started = time.monotonic()
            out = recognize(jssdk, scenario(srv.ws, speech_wav, mode="once", timeoutMs=10000))
            ended = time.monotonic()
    took = starved.unstarved(started, ended)
    assert took < 5, f"the SDK waited instead of failing: {ended - started:.2f} s, {took:.2f} s of it not for a CPU"
    once = out["once"]
    assert (once["reason"], once["cancelReason"], once["errorCode"]) == ("Canceled", "Error", "TooManyRequests"), out
    assert once["errorDetails"] == "The number of parallel requests exceeded the number of allowed concurrent transcriptions.", once


#: Seconds within which the Speech SDK's stop of an open stream resolves, but those the app and the server waited for a
#: CPU (:class:`~tests.support.Starved`): the server ends the turn once it has decoded what it had queued (at most
#: :data:`HOLD_AT` seconds of audio), a fraction of this on a machine of its own.
STOP_BOUND = 2.0


def test_stopping_mid_utterance_ends_at_once_and_gives_the_decoder_back(jssdk: str, server: ServerThread, utterances_wav: Path) -> None:
    """``stopContinuousRecognitionAsync`` at the first ``recognizing`` of a stream that stays open (a microphone still
    on): the stop resolves at once, the session stops without an error, and the server holds no session after it.
    The app pushes nothing past :data:`HOLD_AT` until a phrase came, so the stop falls mid-stream by that event,
    however slow a busy machine's server gives its first hypothesis. At once: before the app's audio ended (it waits
    for no more of the stream), and within :data:`STOP_BOUND` but the time the app and the server waited for a CPU (a
    busy machine's, not theirs: the stop waits for the server to decode what it had queued)."""
    with Starved() as starved:
        out = recognize(jssdk, scenario(server.ws, utterances_wav, mode="continuous", speed=1, holdAt=HOLD_AT, keepOpen=True,
                                        stopAfterRecognizing=1))
    assert out["stoppingMs"] is not None and out["stoppedMs"] is not None, out
    stopping, stopped = ((out["startedAt"] + out[ms]) / 1000 for ms in ("stoppingMs", "stoppedMs"))
    took = starved.unstarved(stopping, stopped, epoch=True)
    assert took < STOP_BOUND, f"the stop took {stopped - stopping:.2f} s, {took:.2f} s of it not waiting for a CPU: {out}"
    assert out["sessionStopped"] == 1 and not [c for c in out["canceled"] if c["cancelReason"] == "Error"], out
    assert out["recognizing"] and out["audioDoneMs"] is None, "stopped after the audio had ended"
    deadline = time.monotonic() + 5
    while (sessions := httpx.get(f"{server.http}/sessions").json()["sessions"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sessions == 0, "the stopped recognition still holds a decoder"
