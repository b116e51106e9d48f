"""Bad values get a 400 or a close 1007 with a reason, never a 500, a crash or a close without a frame (issue 16, item 9).

Each route is fed the values the issue found (ZeroDivisionError, OverflowError, AttributeError in the
handlers), then malformed messages made by hypothesis, while a normal stream beside stays strictly
real time and the server goes on serving.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from harness.usp import client_audio_frame, client_text_frame
from speech_recognizer.app import create_app
from speech_recognizer.models import ModelRegistry

from ..conftest import make_settings
from ..hostile import Audio, assert_real_time_but_starved, paced_stream, warm
from ..support import ServerThread, Starved, read_wav

REST = "/speech/recognition/conversation/cognitiveservices/v1"
#: How the server may end a conversation it cannot go on with: a reason-giving close, never 1011 (our bug).
CLIENT_ERRORS = {1002, 1007, 1008, 1009}
EXAMPLES = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)

#: Any JSON value, nested a little.
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


def opt(**members: st.SearchStrategy) -> st.SearchStrategy:
    """Objects with any of ``members`` (each a value from its strategy), or any JSON value instead."""
    return st.one_of(st.fixed_dictionaries({}, optional=members), JSON)


#: Numbers and near-numbers a handler may choke on.
NUMBERS = st.one_of(st.integers(min_value=-(10**30), max_value=10**500), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from(["0", "-1", "1e999", "Infinity", "NaN", "16000", "x", "1" + "0" * 400]))
VOSK_CONFIG = opt(sample_rate=NUMBERS, phrase_list=JSON, words=NUMBERS | JSON, max_alternatives=NUMBERS)
USP_CONTEXT = opt(
    phraseDetection=opt(language=st.text(max_size=12) | JSON, enrichment=opt(profanity=JSON)),
    phraseOutput=opt(format=st.just("Detailed") | JSON, detailed=opt(options=JSON)),
    continuation=opt(audio=opt(streams=opt(**{"1": opt(offset=NUMBERS)}))),
)
USP_CONFIG = opt(context=opt(audio=opt(source=opt(samplerate=NUMBERS, channelcount=NUMBERS, bitspersample=NUMBERS))))
CONTENT_TYPES = st.tuples(st.sampled_from(["audio/l16", "audio/wav; codecs=audio/pcm"]),
                          st.sampled_from(["rate", "samplerate"]), NUMBERS.map(str), NUMBERS.map(str)).map(
    lambda t: f"{t[0]}; {t[1]}={t[2]}; channels={t[3]}")


@pytest.fixture(scope="module")
def normal(utterances_wav: Path) -> Audio:
    """The normal stream's audio: the three utterances, eight times (99 s at 1x). The stream ends soon after the
    examples (:func:`~tests.hostile.paced_stream`), so only what they take is decoded; the rest is room for a slow
    or loaded machine, on which they took 45 s."""
    pcm, rate, _ = read_wav(utterances_wav)
    return Audio(pcm * 8, rate, utterances_wav)


@pytest.fixture(scope="module")
def srv(registry: ModelRegistry, tmp_path_factory: pytest.TempPathFactory, utterances_wav: Path) -> Iterator[ServerThread]:
    """Pings no WebSocket client (``ws_ping_interval`` None): uvicorn's keepalive ping draws its payload from the
    ``random`` module in the server's thread, and one sent while Hypothesis draws an example (the normal stream is
    open for as long as the examples take, past the 20 s interval on a slow machine) is a HypothesisDeprecationWarning
    ("Do not use the `random` module inside strategies")."""
    with ServerThread(create_app(make_settings(tmp_path_factory.mktemp("values")), registry), ws_ping_interval=None) as server:
        pcm, rate, _ = read_wav(utterances_wav)
        warm(server, Audio(pcm, rate, utterances_wav))  # the three utterances once
        yield server


def close_of(ws_base: str, path: str, send: list[str | bytes], *, turn_end: bool = False) -> tuple[int, str]:
    """The close code and reason after sending ``send``; with ``turn_end``, 1000 when a Speech SDK turn ended instead."""
    with connect(ws_base + path, max_size=1 << 20) as ws:
        try:
            for message in send:
                ws.send(message)
            while True:
                reply = ws.recv(timeout=30)
                if turn_end and isinstance(reply, str) and "Path:turn.end" in reply:
                    return 1000, ""
        except ConnectionClosed as exc:
            assert exc.rcvd is not None, "closed without a close frame"
            assert len(exc.rcvd.reason.encode()) <= 123
            return exc.rcvd.code, exc.rcvd.reason
    raise AssertionError("unreachable")


# ---- the values the issue found --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "words"),
    [
        ("audio/l16; rate=0", "sample rate"),
        ("audio/l16; rate=16000; channels=0", "channels"),
        ("audio/l16; rate=16000; channels=x", "channels"),
        ("audio/wav; codecs=audio/pcm; samplerate=99999999999999999999", "sample rate"),
    ],
)
def test_rest_headerless_pcm_with_impossible_parameters(srv: ServerThread, content_type: str, words: str) -> None:
    r = httpx.post(f"{srv.http}{REST}?language=ko-KR", content=b"\0" * 32000, headers={"Content-Type": content_type}, timeout=30)
    assert r.status_code == 400, r.text
    assert words in r.json()["error"]["message"]


@pytest.mark.parametrize(
    "config",
    [
        '{"config": {"sample_rate": 1e999}}',
        '{"config": {"sample_rate": Infinity}}',
        '{"config": {"sample_rate": NaN}}',
        '{"config": {"max_alternatives": 1e999}}',
        '{"config": {"words": Infinity}}',
        '{"config": {"phrase_list": 5}}',
        '{"config": 5}',
        '{"config": {"max_alternatives": 100000}}',
    ],
)
def test_vosk_config_values_that_are_not_numbers(srv: ServerThread, config: str) -> None:
    code, reason = close_of(srv.ws, "/vosk?language=ko-KR", [config, b"\0" * 3200])
    assert code == 1007 and "bad config" in reason, (code, reason)


def _context(**members: Any) -> dict:
    return {"phraseDetection": {"language": "ko-KR"}, **members}


@pytest.mark.parametrize(
    ("config", "context", "words"),
    [
        ({"context": [1, 2]}, _context(), "context must be an object"),
        ({"context": {"audio": "x"}}, _context(), "audio must be an object"),
        ({}, _context(phraseOutput={"format": "Detailed", "detailed": "x"}), "detailed must be an object"),
        ({}, _context(phraseOutput={"format": "Detailed", "detailed": {"options": 7}}), "options must be a list"),
        ({}, _context(phraseDetection=[1]), "phraseDetection must be an object"),
        ({}, _context(continuation={"audio": {"streams": {"1": {"offset": "1" + "0" * 400}}}}), "continuation offset"),
        ({}, _context(continuation={"audio": {"streams": {"1": {"offset": 10**400}}}}), "continuation offset"),
    ],
)
def test_usp_messages_of_the_wrong_shape(srv: ServerThread, config: dict, context: dict, words: str) -> None:
    rid = uuid.uuid4().hex
    code, reason = close_of(srv.ws, REST + "?language=ko-KR", [
        client_text_frame("speech.config", None, config),
        client_text_frame("speech.context", rid, context),
        client_audio_frame(rid, b"\0" * 3200),
    ])
    assert code == 1007 and words in reason, (code, reason)


def test_a_close_reason_in_korean_is_cut_by_bytes(srv: ServerThread) -> None:
    """The Speech SDK route cut its close reasons by characters: 120 Korean characters are 360 bytes, and the
    close failed (ProtocolError: control frame too long) without a close frame."""
    rid = uuid.uuid4().hex
    code, reason = close_of(srv.ws, REST + "?language=ko-KR", [client_text_frame("speech.context", rid, _context(phraseDetection={"language": "한국어" * 60}))])
    assert code == 1007 and "한국어" in reason and reason.endswith("..."), (code, reason)
    assert len(reason.encode()) <= 123


# ---- malformed messages made by hypothesis, a normal stream beside -----------------------------------------


def test_malformed_messages_on_every_route(srv: ServerThread, normal: Audio) -> None:
    """Any query, content type, vosk text message, speech.context or speech.config: a 4xx with a reason or a
    close with a reason (never a 500, a 1011 or no close frame), while a 1x stream beside stays real time (but the
    time a busy machine kept this process from a CPU: :func:`assert_real_time_but_starved`)."""

    def client_error(r: httpx.Response) -> None:
        assert r.status_code < 500, r.text
        if r.status_code >= 400:
            assert r.json()["error"]["message"]

    @EXAMPLES
    @given(st.dictionaries(st.sampled_from(["language", "format", "profanity", "wordLevelTimestamps", "wordLevelConfidence", "x"]),
                           st.text(max_size=30), max_size=5))
    def rest_query(query: dict[str, str]) -> None:
        client_error(httpx.post(f"{srv.http}{REST}", params=query, content=b"RIFF", timeout=30))

    @EXAMPLES
    @given(CONTENT_TYPES)
    def rest_content_type(content_type: str) -> None:
        client_error(httpx.post(f"{srv.http}{REST}?language=ko-KR", content=b"\0" * 3200,
                                headers={"Content-Type": content_type[:200]}, timeout=30))

    @EXAMPLES
    @given(st.one_of(st.fixed_dictionaries({"config": VOSK_CONFIG}).map(json.dumps), JSON.map(json.dumps), st.text(max_size=40)))
    def vosk_text(message: str) -> None:
        code, _ = close_of(srv.ws, "/vosk?language=ko-KR", [message, b"\0" * 3200, '{"eof" : 1}'])
        assert code in CLIENT_ERRORS | {1000}, (message, code)

    @EXAMPLES
    @given(USP_CONTEXT)
    def usp_context(context: Any) -> None:
        rid = uuid.uuid4().hex
        code, _ = close_of(srv.ws, REST + "?language=ko-KR", [client_text_frame("speech.context", rid, context), client_audio_frame(rid, b"")],
                           turn_end=True)
        assert code in CLIENT_ERRORS | {1000}, (context, code)

    @EXAMPLES
    @given(USP_CONFIG)
    def usp_config(config: Any) -> None:
        rid = uuid.uuid4().hex
        code, _ = close_of(srv.ws, REST + "?language=ko-KR", [
            client_text_frame("speech.config", None, config), client_audio_frame(rid, b"\0" * 3200), client_audio_frame(rid, b"")],
                           turn_end=True)
        assert code in CLIENT_ERRORS | {1000}, (config, code)

    with Starved() as starved, paced_stream(srv, normal, starved=starved) as stream:
        started = time.monotonic()
        for examples in (rest_query, rest_content_type, vosk_text, usp_context, usp_config):
            examples()
        took = time.monotonic() - started
        beside = not stream.done()
    assert beside, f"the normal stream ({normal.seconds:.0f} s) ended before the examples did ({took:.1f} s): fewer examples"
    assert_real_time_but_starved(stream, normal.seconds, starved)
    ok = httpx.post(f"{srv.http}{REST}?language=ko-KR", content=normal.path.read_bytes(), headers={"Content-Type": "audio/wav"}, timeout=60)
    assert ok.status_code == 200 and ok.json()["RecognitionStatus"] == "Success"
