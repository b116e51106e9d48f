"""``speech_request_seconds{route,outcome}``: how long a recognition takes to its final result, on each route family.

A REST or OpenAI request is timed from its head to its answer. A stream is timed from the arrival of the audio that
completed its final result (here its end of audio, sent after a pause) to that result: the wait after speaking, which
a pause of the speaker's (or a live stream's length) does not lengthen. A stream its client left without its end of
audio is timed as the client's failure, not as a success, and so is a connection closed before any audio.
A refusal before any turn or audio (a key, MaxConnections, a locale, a mode or service not served) is timed from the
request's head, and a Speech SDK connection's protocol error outside a turn from its last message: every failure
counted in ``speech_requests_total`` is timed, under its class.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from harness.usp import client_audio_frame, client_text_frame
from speech_recognizer.app import create_app
from speech_recognizer.models import ModelRegistry
from speech_recognizer.usp.frames import parse_text

from ..conftest import make_settings
from ..support import ServerThread, read_wav, scrape_metrics

REST = "/speech/recognition/conversation/cognitiveservices/v1?language=ko-KR"
USP = "/speech/recognition/conversation/cognitiveservices/v1?language=ko-KR"
#: Seconds a stream's client waits between its audio and its end: not the server's time to the final result.
PAUSE = 1.5
KEY = "latency-test-key"


@pytest.fixture(scope="module")
def base(registry: ModelRegistry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server with metrics of its own (sharing the session's loaded model)."""
    with ServerThread(create_app(make_settings(tmp_path_factory.mktemp("latency")), registry)) as srv:
        yield srv.http


def timed(base: str, route: str, outcome: str) -> tuple[float, float]:
    """(count, sum) of ``speech_request_seconds{route, outcome}``."""
    samples = scrape_metrics(base)
    labels = (("outcome", outcome), ("route", route))
    return (samples.get(("speech_request_seconds_count", labels), 0.0), samples.get(("speech_request_seconds_sum", labels), 0.0))


def added(before: tuple[float, float], after: tuple[float, float]) -> tuple[float, float]:
    return after[0] - before[0], after[1] - before[1]


def test_rest_and_openai_requests_are_timed_from_head_to_answer(base: str, speech_wav: Path) -> None:
    before = {(route, outcome): timed(base, route, outcome) for route in ("rest", "openai") for outcome in ("ok", "client")}
    started = time.monotonic()
    ok = httpx.post(base + REST, content=speech_wav.read_bytes(), headers={"Content-Type": "audio/wav"}, timeout=60)
    took = time.monotonic() - started
    assert ok.status_code == 200, ok.text
    bad = httpx.post(base + REST, content=b"not audio", headers={"Content-Type": "audio/wav"}, timeout=60)
    assert bad.status_code == 400, bad.text
    openai = httpx.post(f"{base}/v1/audio/transcriptions", files={"file": ("a.wav", speech_wav.read_bytes(), "audio/wav")},
                        data={"model": "vosk", "language": "ko"}, timeout=60)
    assert openai.status_code == 200, openai.text
    count, seconds = added(before[("rest", "ok")], timed(base, "rest", "ok"))
    assert count == 1 and 0 < seconds <= took, (count, seconds, took)
    assert added(before[("rest", "client")], timed(base, "rest", "client"))[0] == 1, "a bad request: the client's doing"
    count, seconds = added(before[("openai", "ok")], timed(base, "openai", "ok"))
    assert count == 1 and seconds > 0


def test_a_vosk_stream_is_timed_from_its_eof_to_its_final_result(base: str, speech_wav: Path) -> None:
    pcm, _, _ = read_wav(speech_wav)
    before = timed(base, "vosk", "ok")
    with connect(f"{base.replace('http', 'ws')}/vosk?language=ko-KR", max_size=1 << 20) as ws:
        for i in range(0, len(pcm), 8000):
            ws.send(pcm[i : i + 8000])
            ws.recv()
        time.sleep(PAUSE)
        ws.send('{"eof" : 1}')
        assert ws.recv(timeout=30)  # the final result
    deadline = time.monotonic() + 10
    while (timed(base, "vosk", "ok")[0] - before[0]) < 1:
        assert time.monotonic() < deadline, "the stream was not timed"
        time.sleep(0.05)
    count, seconds = added(before, timed(base, "vosk", "ok"))
    assert count == 1 and 0 < seconds < PAUSE, f"{seconds:.3f} s: timed from the eof, not from the stream's start"


def test_a_vosk_stream_left_without_eof_is_timed_as_the_clients_failure(base: str, speech_wav: Path) -> None:
    pcm, _, _ = read_wav(speech_wav)
    before = {outcome: timed(base, "vosk", outcome) for outcome in ("ok", "client")}
    with connect(f"{base.replace('http', 'ws')}/vosk?language=ko-KR") as ws:
        ws.send(pcm[:8000])
        ws.recv()
    deadline = time.monotonic() + 10
    while timed(base, "vosk", "client")[0] < before["client"][0] + 1:
        assert time.monotonic() < deadline, "the stream was not timed as the client's failure (client_gone)"
        time.sleep(0.05)
    assert timed(base, "vosk", "ok") == before["ok"]


def test_a_vosk_connection_closed_before_any_audio_is_timed_as_the_clients_failure(base: str) -> None:
    """Counted as the client's leaving (``client_gone``, 499), as a stream left without eof is, and timed so (from the
    request's head: it sent nothing); no success (before: ``status="200"``, not timed)."""
    requests = ("speech_requests_total", (("route", "vosk"), ("status", "499")))
    before = {outcome: timed(base, "vosk", outcome) for outcome in ("ok", "client")}
    counted = scrape_metrics(base).get(requests, 0.0)
    with connect(f"{base.replace('http', 'ws')}/vosk?language=ko-KR"):
        pass
    deadline = time.monotonic() + 10
    while scrape_metrics(base).get(requests, 0.0) < counted + 1:
        assert time.monotonic() < deadline, "the connection was not counted as a client gone"
        time.sleep(0.05)
    assert timed(base, "vosk", "ok") == before["ok"]
    assert timed(base, "vosk", "client")[0] == before["client"][0] + 1, "timed as the client's failure"


def test_a_speech_sdk_turn_is_timed_from_its_end_of_audio_to_its_final_result(base: str, speech_wav: Path) -> None:
    pcm, rate, _ = read_wav(speech_wav)
    before = timed(base, "usp", "ok")
    request = uuid.uuid4().hex
    source = {"type": "Stream", "samplerate": str(rate), "bitspersample": "16", "channelcount": "1"}
    with connect(base.replace("http", "ws") + USP, subprotocols=["USP"]) as ws:  # type: ignore[list-item]
        ws.send(client_text_frame("speech.config", None, {"context": {"audio": {"source": source}}}))
        ws.send(client_text_frame("speech.context", request, {"phraseDetection": {"language": "ko-KR"}}))
        for i in range(0, len(pcm), 3200):
            ws.send(client_audio_frame(request, pcm[i : i + 3200]))
        time.sleep(PAUSE)
        ws.send(client_audio_frame(request, b""))
        while parse_text(ws.recv(timeout=30)).path != "turn.end":  # type: ignore[arg-type]
            pass
    count, seconds = added(before, timed(base, "usp", "ok"))
    assert count == 1 and 0 < seconds < PAUSE, f"{seconds:.3f} s: timed from the end of audio, not from the turn's start"


@pytest.fixture(scope="module")
def keyed(registry: ModelRegistry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server with a key that keeps one recognition WebSocket open at most."""
    settings = make_settings(tmp_path_factory.mktemp("keyed"), f"ApiKey={KEY}", "MaxConnections=1")
    with ServerThread(create_app(settings, registry)) as srv:
        yield srv.http


def failures_by_family(base: str) -> tuple[dict[str, float], dict[str, float]]:
    """(counted, timed) failures by route family: ``speech_requests_total`` of a status other than 200, and
    ``speech_request_seconds_count`` of an outcome other than ok (a Speech SDK service not served is counted ``usp``, as a
    recognition path of no mode)."""
    counted: dict[str, float] = {}
    timed_: dict[str, float] = {}
    for (name, labels), value in scrape_metrics(base).items():
        found = dict(labels)
        if name == "speech_requests_total" and found["status"] != "200" and found["route"] != "http":
            family = found["route"].split("/")[0].split("-")[0]
            counted[family] = counted.get(family, 0.0) + value
        elif name == "speech_request_seconds_count" and found["outcome"] != "ok":
            timed_[found["route"]] = timed_.get(found["route"], 0.0) + value
    return counted, timed_


def closed(url: str, send: list[str | bytes] = (), **headers: str) -> int:
    """The close code the server answers a WebSocket with (after sending ``send``)."""
    with connect(url, additional_headers=headers or None) as ws, pytest.raises(ConnectionClosed) as ended:
        for message in send:
            ws.send(message)
        while True:
            ws.recv(timeout=30)
    assert ended.value.rcvd is not None, "closed without a close frame"
    return ended.value.rcvd.code


def none_open(base: str) -> None:
    """Wait until the server has no recognition WebSocket open (MaxConnections=1: the last one's end counted)."""
    deadline = time.monotonic() + 10
    while scrape_metrics(base).get(("speech_connections", ()), 0.0) != 0:
        assert time.monotonic() < deadline, "a WebSocket stays open"
        time.sleep(0.05)


def test_every_refusal_counted_is_timed_from_the_requests_head(keyed: str) -> None:
    ws, key = keyed.replace("http", "ws"), {"Ocp-Apim-Subscription-Key": KEY}
    before = failures_by_family(keyed)
    none_open(keyed)
    assert closed(f"{ws}/vosk?language=ko-KR") == 1008, "no key"
    none_open(keyed)
    assert closed(f"{ws}/vosk?language=xx-XX", **key) == 1007, "no such locale"
    none_open(keyed)
    with pytest.raises(InvalidStatus):  # the Speech SDK's upgrade refused for its key
        with connect(ws + USP, subprotocols=["USP"]):  # type: ignore[list-item]
            pass
    none_open(keyed)
    assert closed(f"{ws}/speech/recognition/nomode/cognitiveservices/v1", **key) == 1007, "no such mode"
    none_open(keyed)
    assert closed(f"{ws}/cognitiveservices/websocket/v1", **key) == 1007, "synthesis: not served"
    none_open(keyed)
    with connect(f"{ws}/vosk?language=ko-KR", additional_headers=key):  # MaxConnections=1: the next is refused
        assert closed(f"{ws}/vosk?language=ko-KR", **key) == 1013
    # and the connection held open meanwhile, left before any audio: a client gone
    expected = {"vosk": 4.0, "usp": 3.0}
    deadline = time.monotonic() + 10
    while True:
        counted, timed_ = failures_by_family(keyed)
        added_counts = {f: counted.get(f, 0.0) - before[0].get(f, 0.0) for f in expected}
        if added_counts == expected or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert added_counts == expected, added_counts
    added_timed = {f: timed_.get(f, 0.0) - before[1].get(f, 0.0) for f in expected}
    assert added_timed == added_counts, f"counted {added_counts}, timed {added_timed}"


def test_a_speech_sdk_protocol_error_outside_a_turn_is_timed_from_its_last_message(keyed: str) -> None:
    key = {"Ocp-Apim-Subscription-Key": KEY}
    none_open(keyed)
    before = timed(keyed, "usp", "client")
    source = {"type": "Stream", "samplerate": "16000", "bitspersample": "16", "channelcount": "1"}
    config = client_text_frame("speech.config", None, {"context": {"audio": {"source": source}}})
    with connect(keyed.replace("http", "ws") + USP, subprotocols=["USP"], additional_headers=key) as ws:  # type: ignore[list-item]
        ws.send(config)
        time.sleep(PAUSE)  # open a while before its error: not what it is timed by
        with pytest.raises(ConnectionClosed) as ended:
            ws.send(client_text_frame("speech.context", None, {}))  # no X-RequestId
            while True:
                ws.recv(timeout=30)
    assert ended.value.rcvd is not None and ended.value.rcvd.code == 1002, ended.value
    deadline = time.monotonic() + 10
    while timed(keyed, "usp", "client")[0] < before[0] + 1:
        assert time.monotonic() < deadline, "the protocol error was not timed"
        time.sleep(0.05)
    count, seconds = added(before, timed(keyed, "usp", "client"))
    assert count == 1 and 0 <= seconds < PAUSE, f"{seconds:.3f} s: timed from its last message, not from its upgrade"
