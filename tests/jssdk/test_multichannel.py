"""The Speech SDK for JavaScript with multi-channel processing on (``Speech_EnableMultiChannelProcessing``): its
reliable-reconnect contract, against a real recognizer and in-process Vosk.

With that property (its ``ConversationTranscriber`` asks for speaker ids instead, refused as not served: see
tests/usp/test_sdk_features.py) a ``SpeechRecognizer`` of the SDK (1.52.0, ``ServiceRecognizerBase``) changes how it
counts time: it tells the server ``SeparateChannelProcessing`` in ``speech.config``, takes every offset the server
sends as it is (session time: it adds no turn start of its own), learns how far the server acknowledged the audio
from a ``X-Continuation-Audio-Streams-1-Offset`` header (turn time), and after a lost connection sends that point
back as ``continuation.audio.streams.1.offset`` and replays its audio from the end of the last phrase, as long as
it is still sending audio: cut after its end of audio, it replays nothing and waits for the server to end the turn.
These tests pin the cases where that shows: one recognition, a connection cut mid-stream, and one cut after the end
of audio, answered by the server that had the cut turn or by one that has it not. The cuts are made by
tests/usp/test_idle_proxy.py's loopback relays.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import pytest

from speech_recognizer.app import create_app
from speech_recognizer.models import LoadedModel, ModelRegistry
from speech_recognizer.usp.options import continuation_offset

from ..conftest import make_settings
from ..support import Reference, ServerThread, Starved
from ..usp.conftest import replay_phrases
from ..usp.sdk import assert_same, config, continuous, detailed, expected, expected_words, recognizer, reported, spans
from ..usp.test_idle_proxy import HOLD_AT, AudioEndProxy, IdleProxy
from .node import HANG_MS, MULTICHANNEL, recognize, result_span, scenario
from .test_refusals import Failover

#: Audio pushed at this many times real time: results come while it streams.
SPEED = 4
#: What the server logs when it answers a continuation with what a turn cut after its end of audio kept (usp.connection).
CUT_AFTER_END = "continues a turn cut after its end of audio"


def contexts(caplog: pytest.LogCaptureFixture) -> list[dict]:
    """The ``speech.context`` bodies the server received, in order (its debug log of each frame)."""
    return [json.loads(r.args[1]) for r in caplog.records  # type: ignore[index]
            if r.name == "speech_recognizer.usp.connection" and r.args and r.args[0] == "speech.context"]


def test_continuous_gives_each_utterance_once_where_the_python_sdk_and_vosk_put_it(
    jssdk: str, fresh_server: ServerThread, utterances_wav: Path, utterances_ref: Reference
) -> None:
    """Continuous recognition, detailed with word times, multi-channel processing on: each utterance once, its offset,
    duration and words as the Python SDK (continuous, on the same file) gets them and as in-process Vosk decodes them."""
    out = recognize(jssdk, scenario(fresh_server.ws, utterances_wav, mode="continuous", detailed=True, speed=SPEED, properties=MULTICHANNEL,
                                    timeoutMs=HANG_MS))
    recognized = out["recognized"]
    assert [r["reason"] for r in recognized] == ["RecognizedSpeech"] * 3, out
    python = continuous(recognizer(detailed(config(fresh_server.ws)), utterances_wav), timeout=HANG_MS / 1000)
    assert not python.canceled, [d.error_details for d in python.canceled]
    assert [result_span(r) for r in recognized] == [reported(r) for r in python.recognized]
    assert_same([result_span(r) for r in recognized], [expected(p) for p in utterances_ref.phrases])
    for result, phrase in zip(recognized, utterances_ref.phrases, strict=True):
        assert_same(spans(result["json"]["NBest"][0]["Words"]), expected_words(phrase))
    assert [c["cancelReason"] for c in out["canceled"]] == ["EndOfStream"], out["canceled"]


def test_a_connection_cut_mid_stream_resumes_from_the_acknowledged_offset_at_the_streams_times(
    jssdk: str, fresh_server: ServerThread, model: LoadedModel, utterances_wav: Path, utterances_ref: Reference, caplog: pytest.LogCaptureFixture
) -> None:
    """The proxy cuts the connection (FIN) once the first phrase has passed it, while the audio still streams (the app
    pushes nothing past :data:`HOLD_AT` until that phrase came, so the cut falls mid-stream however slow the server:
    cut after its end of audio, the SDK replays nothing, the case of the tests below). The SDK connects again, sends the offset the server acknowledged (the first phrase's end, from the server's
    ``X-Continuation-Audio-Streams-1-Offset``) and replays from there: every utterance once, the later ones at their
    place in the stream as in-process Vosk decodes the replay. Before, the server sent no such header, so the SDK sent
    no offset, and counted the second connection's times from 0 where the SDK takes them as the stream's: the second
    and third phrases came 2.13 s early (at 2.67 s and 6.72 s, not 4.80 s and 8.85 s)."""
    caplog.set_level(logging.DEBUG, logger="speech_recognizer.usp.connection")
    with IdleProxy(fresh_server.port, math.inf, "fin", at_phrase=True) as proxy:
        out = recognize(jssdk, scenario(proxy.ws, utterances_wav, mode="continuous", speed=SPEED, holdAt=HOLD_AT, properties=MULTICHANNEL,
                                        timeoutMs=HANG_MS))
    assert (proxy.accepted, proxy.cuts) == (2, 1), "the proxy cut the first connection, the SDK opened a second"
    recognized = out["recognized"]
    assert recognized and recognized[0]["reason"] == "RecognizedSpeech", out
    first = expected(utterances_ref.phrases[0])
    acknowledged = (first[1] + first[2]) / 10_000_000
    assert not any(CUT_AFTER_END in r.getMessage() for r in caplog.records), "cut mid-stream, not after the end of audio"
    replayed = replay_phrases(model, utterances_wav, acknowledged)
    assert_same([result_span(r) for r in recognized], [first, *map(expected, replayed)])
    assert [c["cancelReason"] for c in out["canceled"]] == ["EndOfStream"], out["canceled"]
    assert [continuation_offset(c) for c in contexts(caplog)[:2]] == [0.0, acknowledged], contexts(caplog)


@pytest.mark.parametrize("after_turn_end", [False, True], ids=["while-decoding", "after-turn-end"])
def test_a_connection_cut_after_the_end_of_audio_ends_the_recognition_with_every_phrase(
    jssdk: str, fresh_server: ServerThread, utterances_wav: Path, utterances_ref: Reference, caplog: pytest.LogCaptureFixture,
    after_turn_end: bool
) -> None:
    """The proxy cuts the connection (FIN) once the SDK's end of audio has passed it to the server and the server's
    first phrase to the SDK (what the server sends after it held back), while the server still decodes the rest or,
    ``after_turn_end``, once it has sent its ``turn.end``. The SDK connects again and sends the continuation's
    ``speech.context`` (the cut turn's service tag, the first phrase's end) and a RIFF header, and no audio: it had
    ended its audio and replays none. The server, which had all the audio of the cut turn, answers the continuation
    with that turn's phrases after the acknowledged offset, its ``EndOfDictation`` and ``turn.end``: the recognition
    ends (EndOfStream) with every utterance, as one session decoded them. Before, the continuation turn waited for
    audio that never came and the SDK for its end: the recognition did not end (until the app stopped it)."""
    caplog.set_level(logging.DEBUG, logger="speech_recognizer.usp.connection")
    with AudioEndProxy(fresh_server.port, after_turn_end) as proxy:
        out = recognize(jssdk, scenario(proxy.ws, utterances_wav, mode="continuous", properties=MULTICHANNEL, timeoutMs=HANG_MS))
    assert (proxy.accepted, proxy.cuts) == (2, 1), "the proxy cut the first connection, the SDK opened a second"
    assert any(CUT_AFTER_END in r.getMessage() for r in caplog.records), "the continuation was answered with what the cut turn kept"
    assert_same([result_span(r) for r in out["recognized"]], [expected(p) for p in utterances_ref.phrases])
    assert [c["cancelReason"] for c in out["canceled"]] == ["EndOfStream"], out["canceled"]
    first = expected(utterances_ref.phrases[0])
    assert [continuation_offset(c) for c in contexts(caplog)] == [0.0, (first[1] + first[2]) / 10_000_000], contexts(caplog)


def test_a_continuation_after_the_end_of_audio_that_finds_no_cut_turn_ends_at_once_saying_what_is_lost(
    jssdk: str, fresh_server: ServerThread, registry: ModelRegistry, tmp_path: Path, utterances_wav: Path, utterances_ref: Reference,
    caplog: pytest.LogCaptureFixture
) -> None:
    """The proxy cuts the connection (FIN) once the SDK's end of audio has passed to the server and then a message the
    server sent after it took that end (each carries its continuation token, which says so: usp.resume) to the SDK.
    The SDK's continuation reaches another server, which does not have the cut turn, as another pod behind the Service
    would not (a Service whose first connection reaches one server and every later one another: each server keeps
    its own turns, its app's ``parking``). It carries that token: no audio will come, and the continuation is ended
    at once, by a close 4000 alone, which the SDK reports as ``ConnectionFailure`` with the reason: the phrases after
    the acknowledged offset are lost. The app has the phrases that reached it before the cut. Before, that
    continuation turn waited for audio that never comes, for ``AudioIdleSeconds`` (30 s), and was then closed 1007
    (``BadRequestParameters``); here the server sent no token and the SDK waited for the turn's end until its app gave
    up. And while the process kept every server's turns (``usp.resume.PARKING``), the other server found the cut turn
    and answered the continuation as the first would have."""
    caplog.set_level(logging.DEBUG, logger="speech_recognizer.usp.connection")
    other = ServerThread(create_app(make_settings(tmp_path, "ReuseRecognizers=False"), registry))
    with other, Failover(fresh_server.port, other.port) as service, AudioEndProxy(service.port, token=True) as proxy:
        with Starved() as starved:
            out = recognize(jssdk, scenario(proxy.ws, utterances_wav, mode="continuous", properties=MULTICHANNEL, timeoutMs=HANG_MS))
            ended = time.monotonic()
    told = starved.unstarved(proxy.cut_at, ended)  # at once: work, no waiting, which a loaded machine stretches
    assert service.connections == 2, f"the Service relayed {service.connections} connections"
    assert (proxy.accepted, proxy.cuts) == (2, 1), "the proxy cut the first connection, the SDK opened a second"
    assert told < 5, f"the recognition ended {ended - proxy.cut_at:.1f} s after the cut, {told:.1f} s of it not waiting for a CPU"
    acknowledged = continuation_offset(contexts(caplog)[1])
    [event] = out["canceled"]
    assert (event["cancelReason"], event["errorCode"], event["errorDetails"]) == ("Error", "ConnectionFailure", (
        f"the turn cut after its end of audio is not on this server: its phrases after {acknowledged:.2f} s are lost "
        "websocket error code: 4000")), out
    phrases = [expected(p) for p in utterances_ref.phrases]
    assert_same([result_span(r) for r in out["recognized"]], phrases[: len(out["recognized"])])
    print(f"\n{len(out['recognized'])} of {len(phrases)} phrases before the cut; the app was told {ended - proxy.cut_at:.2f} s after "
          f"it: {event['errorDetails']!r}")
