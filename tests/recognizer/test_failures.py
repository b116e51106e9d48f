"""One failure policy: every route answers a failure as speech_recognizer.errors says, counts it and logs one line."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.asyncio.client import connect as aconnect
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from harness.usp import client_audio_frame, client_text_frame
from speech_recognizer import errors
from speech_recognizer.app import create_app
from speech_recognizer.errors import MAX_CLOSE_REASON_BYTES, Failure, Kind, close_args, close_reason, http_response, usp_phrase, usp_status
from speech_recognizer.models import ModelRegistry
from speech_recognizer.usp.frames import READING_END_PATH, parse_text
from tests.doc_tables import README, assert_generated

from ..conftest import make_settings
from ..hostile import Audio, assert_real_time_but_starved, paced_stream, warm
from ..support import ServerThread, Starved, read_wav, scrape_metrics, within

REST = "/speech/recognition/conversation/cognitiveservices/v1"
USP = "usp/conversation"
#: ``RecognitionStatus`` values the Speech SDK (1.53) turns into a ``CancellationErrorCode`` of their own.
#: Seconds a Speech SDK turn by hand waits for the server's next message: only a hang guard (a second of audio is
#: decoded in well under 1 s of CPU), generous for a loaded machine; a turn's end that did not come was once taken here
#: for no close after it (30 s at load 18-28).
REPLY_HANG = 120.0
SDK_ERROR_STATUSES = {"BadRequest", "TooManyRequests", "ServiceUnavailable", "Forbidden", "Error"}
#: Close codes an endpoint may send (RFC 6455 7.4.1; 1004-1006 and 1015 never go on the wire).
CLOSE_CODES = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014}
#: The close codes whose reason the Speech SDK for JavaScript (1.52.0) reports at once, canceled, and its error code for
#: each (``ServiceRecognizerBase``'s ``ConnectionClosedEvent`` handler; after any other close it connects again).
JAVASCRIPT_CODES = {1002: "ConnectionFailure", 1003: "ConnectionFailure", 1007: "BadRequestParameters", 4000: "ConnectionFailure"}
#: Every kind speech_recognizer.errors declares, by name.
KINDS: dict[str, Kind] = {k.name: k for k in vars(errors).values() if isinstance(k, Kind)}


def markdown_table() -> str:
    """README's table of failures: how each kind is answered on each protocol."""
    rows = ["| failure | REST | WebSocket close | Speech SDK | log | alert |", "| --- | --- | --- | --- | --- | --- |"]
    for k in KINDS.values():
        retry = f" + `Retry-After: {k.retry_after}`" if k.retry_after is not None else ""
        if k.usp and not k.usp_turn:
            sdk = "none: it ends no Speech SDK turn"
        elif k.usp:
            sdk = f"`{k.usp}`" + (f", close {k.usp_close}" if k.usp_close else "")
            if errors.usp_status(k) is None:
                told = errors.close_args(Failure("", k), usp=True, javascript=True)[0]
                sdk = f"close {errors.CORE_CLOSES[k.usp]} (`{k.usp}` with the reason, asked once; the JavaScript SDK: {sdk}, close {told})"
            if errors.usp_status(k, javascript=True) is None:
                told = errors.JAVASCRIPT_CLOSES[k.usp]
                sdk += f" (the JavaScript SDK: close {told} instead, its `{JAVASCRIPT_CODES[told]}` with the reason)"
        elif k.usp_close:
            sdk = f"close {k.usp_close} " + {1007: "(`BadRequest`)", errors.CONNECTION_FAILURE_CLOSE: "(the JavaScript SDK's `ConnectionFailure` with the reason)"
                                              }.get(k.usp_close, "(it connects again at its next recognition)")
        else:
            sdk = f"HTTP {k.http} at the upgrade (`AuthenticationFailure`)"
        rows.append(f"| `{k.name}`: {k.doc} | {k.http}{retry} | {k.close} | {sdk} | {logging.getLevelName(k.level).lower()} | {k.alert or ''} |")
    return "\n".join(rows)


@pytest.mark.parametrize("name", sorted(KINDS))
def test_every_kind_has_an_answer_for_every_protocol(name: str) -> None:
    kind = KINDS[name]
    failure = Failure("이 요청은 처리할 수 없습니다 " * 20, kind)
    response = http_response(failure)
    assert response.status_code == kind.http
    body = json.loads(response.body)
    assert body["error"]["message"] == failure.message and body["error"]["code"]
    assert ("retry-after" in response.headers) == (kind.retry_after is not None)
    code, reason = close_args(failure)
    assert code == kind.close and code in CLOSE_CODES
    assert len(reason.encode()) <= MAX_CLOSE_REASON_BYTES and reason.endswith("...")
    assert usp_phrase(failure)["RecognitionStatus"] in SDK_ERROR_STATUSES
    assert kind.level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR) and kind.doc


@pytest.mark.parametrize("name", sorted(KINDS))
def test_every_turn_failure_reaches_a_javascript_sdk_app_with_its_reason(name: str) -> None:
    """The SDK for JavaScript words a failed turn's status in fixed words of its own, the reason dropped, but for
    ``TooManyRequests`` (its own code, which apps back off on): recognizing once or continuously, every other status a
    turn can fail with is told it by a close whose reason it reports (the code's error code: ``BadRequestParameters``
    for a bad request), and the Python SDK by the turn, as before, but for ``TooManyRequests``: a close 4429 alone,
    which it reports with that code and the reason and asks no more after (errors.CORE_CLOSES, tests/jssdk/test_asked_once.py).
    Before, recognizing once, only ``ServiceUnavailable`` was (a close alone left its recognizer failing every later
    recognition)."""
    kind = KINDS[name]
    failure = Failure("why", kind)
    if not kind.usp:
        return
    if kind.usp == "TooManyRequests":
        assert usp_status(kind) is None and close_args(failure, usp=True) == (errors.TOO_MANY_REQUESTS_CLOSE, "why")
    else:
        assert usp_status(kind) == kind.usp and close_args(failure, usp=True) == ((kind.usp_close or kind.close), "why")
    status = usp_status(kind, javascript=True)
    code, reason = close_args(failure, usp=True, javascript=True)
    if status is not None:
        assert status == "TooManyRequests" and code == kind.close, (status, code)
        return
    assert JAVASCRIPT_CODES[code] == {"BadRequest": "BadRequestParameters"}.get(kind.usp, "ConnectionFailure") and reason == "why"


@given(st.text())
def test_close_reasons_fit_a_close_frame_and_keep_whole_characters(message: str) -> None:
    reason = close_reason(message)
    assert len(reason.encode("utf-8", "replace")) <= MAX_CLOSE_REASON_BYTES
    assert reason == message or message.startswith(reason.removesuffix("..."))


# ---- the same failure, answered alike on every route, and counted -------------------------------------


@pytest.fixture(scope="module")
def single(registry: ModelRegistry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """A server of its own (its own counters) with one decoder."""
    with ServerThread(create_app(make_settings(tmp_path_factory.mktemp("policy"), "DecoderMaxCount=1"), registry)) as srv:
        yield srv


def refused(base: str, route: str, reason: str) -> float:
    return scrape_metrics(base).get(("speech_refused_total", (("reason", reason), ("route", route))), 0.0)


def requests(base: str, route: str, status: str) -> float:
    return scrape_metrics(base).get(("speech_requests_total", (("route", route), ("status", status))), 0.0)


async def usp_turn(ws_base: str, language: str = "ko-KR", pcm: bytes = b"\0" * 3200) -> tuple[list[dict], tuple[int, str] | None]:
    """One Speech SDK turn by hand: the bodies of the messages it got, and the close frame if the server closed (2 s
    after the turn's end at most)."""
    bodies: list[dict] = []
    async with aconnect(f"{ws_base}{REST}?language={language}") as ws:
        rid = uuid.uuid4().hex
        await ws.send(client_text_frame("speech.context", rid, {"phraseDetection": {"language": language}}))
        for i in range(0, len(pcm), 3200):
            await ws.send(client_audio_frame(rid, pcm[i : i + 3200]))
        await ws.send(client_audio_frame(rid, b""))
        try:
            while True:
                try:
                    msg = parse_text(await asyncio.wait_for(ws.recv(), REPLY_HANG))
                except TimeoutError:
                    raise AssertionError(f"no message {REPLY_HANG:g} s after {[b['path'] for b in bodies]}") from None
                bodies.append({"path": msg.path, **msg.json()})
                if msg.path == "turn.end":
                    break
            await asyncio.wait_for(ws.recv(), 2)
        except ConnectionClosed as exc:
            assert exc.rcvd is not None, "closed without a close frame"
            return bodies, (exc.rcvd.code, exc.rcvd.reason)
        except TimeoutError:
            pass
    return bodies, None


def vosk_close(ws_base: str, query: str, send: bytes = b"\0" * 3200) -> tuple[int, str]:
    with connect(f"{ws_base}/vosk?{query}") as ws:
        with pytest.raises(ConnectionClosed) as closed:
            ws.send(send)
            while True:
                ws.recv(timeout=30)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


def test_an_unknown_language_is_answered_alike_on_every_route(single: ServerThread) -> None:
    before = {route: refused(single.http, route, "unknown_locale") for route in ("rest-conversation", "vosk", USP)}
    rest = httpx.post(f"{single.http}{REST}?language=xx-XX", content=b"RIFF", timeout=30)
    assert rest.status_code == 400 and "xx-XX" in rest.json()["error"]["message"]
    assert vosk_close(single.ws, "language=xx-XX")[0] == 1007
    bodies, closed = asyncio.run(usp_turn(single.ws, "xx-XX"))
    assert bodies == [], "the close alone answers (tests/jssdk: the JavaScript SDK drops its reason after a speech.phrase)"
    assert closed is not None and closed[0] == 1007 and "xx-XX" in closed[1]
    for route, count in before.items():
        assert refused(single.http, route, "unknown_locale") == count + 1, route


def test_busy_is_answered_alike_on_every_route_and_counted(single: ServerThread, speech_wav: Path) -> None:
    pcm, _, _ = read_wav(speech_wav)
    before = {route: refused(single.http, route, "busy") for route in ("rest-conversation", "vosk", USP)}
    served = requests(single.http, USP, "200")
    with connect(f"{single.ws}/vosk?language=ko-KR") as holder:
        holder.send(pcm[:3200])
        holder.recv()  # the only decoder is taken
        rest = httpx.post(f"{single.http}{REST}?language=ko-KR", content=speech_wav.read_bytes(), timeout=30)
        assert rest.status_code == 503 and rest.headers["Retry-After"] == "1" and "busy" in rest.json()["error"]["message"]
        code, reason = vosk_close(single.ws, "language=ko-KR")
        assert code == 1013 and "busy" in reason
        bodies, closed = asyncio.run(usp_turn(single.ws))
        # the Python SDK is told by a close alone, after a message that names the kind (errors.CORE_CLOSES)
        assert [b["path"] for b in bodies] == [READING_END_PATH], bodies
        assert closed is not None and closed[0] == errors.TOO_MANY_REQUESTS_CLOSE and "busy" in closed[1], closed
        holder.send('{"eof" : 1}')
        holder.recv()
    for route, count in before.items():
        assert refused(single.http, route, "busy") == count + 1, route
    turns: list[tuple[list[dict], tuple[int, str] | None]] = []

    def served_turn() -> bool:
        """Whether a turn now is not refused busy: the holder's decoder comes back as its socket closes."""
        turns.append(asyncio.run(usp_turn(single.ws, pcm=pcm[:32000])))
        return turns[-1][1] is None or turns[-1][1][0] != errors.TOO_MANY_REQUESTS_CLOSE

    within(10, served_turn, lambda: f"a turn not refused busy ({turns[-1]})")
    bodies, closed = turns[-1]
    statuses = [b["RecognitionStatus"] for b in bodies if b["path"] == "speech.phrase"]
    assert bodies[-1]["path"] == "turn.end" and statuses[-1] == "EndOfDictation", bodies
    assert requests(single.http, USP, "200") == served + 1, "a Speech SDK turn is a request in speech_requests_total"


# ---- one line at the right level, never a traceback (issue 16, item 10) ---------------------------------


class Records(logging.Handler):
    """Every record of the server's loggers and uvicorn's, while installed."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self) -> Records:
        for name in ("speech_recognizer", "uvicorn.error"):
            logging.getLogger(name).addHandler(self)
        self._level = logging.getLogger("speech_recognizer").level
        logging.getLogger("speech_recognizer").setLevel(logging.DEBUG)
        return self

    def __exit__(self, *exc: object) -> None:
        for name in ("speech_recognizer", "uvicorn.error"):
            logging.getLogger(name).removeHandler(self)
        logging.getLogger("speech_recognizer").setLevel(self._level)

    def lines(self, at_least: int = logging.DEBUG) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno >= at_least]

    def assert_no_traceback(self) -> None:
        assert not [r.getMessage() for r in self.records if r.exc_info], "a traceback was logged"


def test_a_refused_key_is_one_info_line(keyed_server: ServerThread) -> None:
    with Records() as logs:
        with pytest.raises(Exception, match="HTTP 403"):
            asyncio.run(usp_turn(keyed_server.ws))
        assert vosk_close(keyed_server.ws, "language=ko-KR")[0] == 1008
        assert httpx.post(f"{keyed_server.http}{REST}", content=b"RIFF").status_code == 403
        time.sleep(0.5)  # uvicorn logs after the handler returned
    assert not logs.lines(logging.WARNING), logs.lines(logging.WARNING)
    refusals = [line for line in logs.lines(logging.INFO) if "auth_" in line]
    assert len(refusals) == 3, refusals
    logs.assert_no_traceback()


def test_clients_leaving_mid_upload_or_when_refused_are_one_debug_line(
    single: ServerThread, speech_wav: Path, utterances_wav: Path
) -> None:
    pcm, _, _ = read_wav(speech_wav)
    wav = speech_wav.read_bytes()
    audio = Audio(*read_wav(utterances_wav)[:2], utterances_wav)
    warm(single, audio)
    with Starved() as starved, Records() as logs, paced_stream(single, audio, starved=starved) as normal:  # also holds the only decoder
        for body in (wav[: len(wav) // 2], wav):  # gone mid-upload; gone while refused as busy
            with socket.create_connection(("127.0.0.1", single.port)) as raw:
                raw.sendall(
                    f"POST {REST}?language=ko-KR HTTP/1.1\r\nHost: x\r\nContent-Type: audio/wav\r\n"
                    f"Content-Length: {len(wav)}\r\n\r\n".encode() + body
                )
                time.sleep(0.3)
        for _ in range(3):  # refused as busy on the WebSocket routes, gone before the answer is read
            with connect(f"{single.ws}/vosk?language=ko-KR") as ws:
                ws.send(pcm[:3200])
            asyncio.run(_usp_gone(single.ws))
        time.sleep(1.0)
    assert_real_time_but_starved(normal, audio.seconds, starved)
    logs.assert_no_traceback()
    assert not logs.lines(logging.WARNING), logs.lines(logging.WARNING)


async def _usp_gone(ws_base: str) -> None:
    async with aconnect(f"{ws_base}{REST}?language=ko-KR") as ws:
        rid = uuid.uuid4().hex
        await ws.send(client_text_frame("speech.context", rid, {}))
        await ws.send(client_audio_frame(rid, b"\0" * 3200))


def test_readme_lists_every_failure_as_the_policy_answers_it() -> None:
    assert_generated(markdown_table(), README, "table of errors (speech_recognizer.errors)")
