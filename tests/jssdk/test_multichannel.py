"""The Speech SDK for JavaScript with multi-channel processing on (``Speech_EnableMultiChannelProcessing``): its
reliable-reconnect contract, against a real recognizer and in-process Vosk.

With that property (its ``ConversationTranscriber`` asks for speaker ids instead, refused as not served: see
tests/usp/test_sdk_features.py) a ``SpeechRecognizer`` of the SDK (1.52.0, ``ServiceRecognizerBase``) changes how it
counts time: it tells the server ``SeparateChannelProcessing`` in ``speech.config``, takes every offset the server
sends as it is (session time: it adds no turn start of its own), learns how far the server acknowledged the audio
from a ``X-Continuation-Audio-Streams-1-Offset`` header (turn time), and after a lost connection sends that point
back as ``continuation.audio.streams.1.offset`` and replays its audio from the end of the last phrase. These tests
pin the three cases where that shows: one recognition, a connection cut mid-stream, recognitions one after another.
The cut is made by tests/usp/test_idle_proxy.py's loopback relay; nothing is mocked.
"""

from __future__ import annotations

from pathlib import Path

from ..support import Reference, ServerThread
from ..usp.sdk import assert_same, config, continuous, detailed, expected, expected_words, recognizer, reported, spans
from .node import MULTICHANNEL, recognize, result_span, scenario

#: Audio pushed at this many times real time: results come while it streams, and the cut falls mid-stream.
SPEED = 4


def test_continuous_gives_each_utterance_once_where_the_python_sdk_and_vosk_put_it(
    jssdk: str, server: ServerThread, utterances_wav: Path, utterances_ref: Reference
) -> None:
    """Continuous recognition, detailed with word times, multi-channel processing on: each utterance once, its offset,
    duration and words as the Python SDK (continuous, on the same file) gets them and as in-process Vosk decodes them."""
    out = recognize(jssdk, scenario(server.ws, utterances_wav, mode="continuous", detailed=True, speed=SPEED, properties=MULTICHANNEL))
    recognized = out["recognized"]
    assert [r["reason"] for r in recognized] == ["RecognizedSpeech"] * 3, out
    python = continuous(recognizer(detailed(config(server.ws)), utterances_wav), timeout=30)
    assert not python.canceled, [d.error_details for d in python.canceled]
    assert [result_span(r) for r in recognized] == [reported(r) for r in python.recognized]
    assert_same([result_span(r) for r in recognized], [expected(p) for p in utterances_ref.phrases])
    for result, phrase in zip(recognized, utterances_ref.phrases, strict=True):
        assert_same(spans(result["json"]["NBest"][0]["Words"]), expected_words(phrase))
    assert [c["cancelReason"] for c in out["canceled"]] == ["EndOfStream"], out["canceled"]

