"""What a Speech SDK app sees when the gateway refuses its connection after taking the upgrade: at its connection cap
(``SPEECH_GATEWAY_MAX_CONNECTIONS``) or its cap on requests held (``SPEECH_GATEWAY_MAX_HELD``), for a locale it
cannot serve (scaled to 0 with nothing to wake it, a recognizer that does not answer, one that did not wake within
the hold), for a language no SpeechToText serves and for a recognition path of no mode, and when it stops while it
holds one for a locale that wakes. The gateway answers as a recognizer answers its own refusals
(speech_recognizer/usp/refusal.py; tests/jssdk/test_refusals.py): once the request begins, a turn that fails with the
kind's status, then the close; a refusal that turn would end ``ServiceUnavailable`` (the service, not the request, at
fault for now) is told the JavaScript SDK, which knows no such status, by the close alone: 4000, its
``ConnectionFailure`` with the reason.

Before, the gateway closed 1013 (at the cap at once, else once the request began) and the JavaScript SDK failed with
``RuntimeError``, "websocket send error: Websocket not ready" and a stack trace, or connected again and waited until its
own time out; the Python SDK said ``ServiceError`` "Connection was closed by the remote host. Error code: 1013". A
recognition path of no mode was a bare 404 at the upgrade ("Unexpected server response: 404"; the Python SDK's
"Internal service error (404)"). Only kmock and the gateway run here: no refusal reaches a recognizer.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import azure.cognitiveservices.speech as speechsdk
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from harness.loopback import free_port
from harness.usp import client_text_frame
from speech_operator.gateway import GATEWAY, GatewayConfig
from speech_recognizer.models import ModelRegistry
from speech_recognizer.usp.frames import parse_text
from speech_recognizer.usp.refusal import MAX_WAITING
from tests.jssdk.node import recognize, scenario
from tests.jssdk.test_refusals import TOO_MANY_REQUESTS, Failover, canceled_at_once, closed_4000, kept_recognizer
from tests.usp.sdk import config, expected, once

from ..support import Reference, ServerThread, read_wav, scrape_metrics
from .conftest import Stack, speech_to_text
from .test_refusal_outcomes import BROKEN, decoder_held
from .test_shutdown import HELD_SHUTDOWN_SECONDS, STOPPED_WHILE_WAKING, asleep_stack, held

ENDPOINT = "/speech/recognition/conversation/cognitiveservices/v1"
#: Seconds within which a refusal must reach a Python SDK app.
AT_ONCE = 5
#: The gateway's hold for a locale with no ready pod, in the tests of a locale that does not wake.
HOLD_SECONDS = 1.0


@contextlib.contextmanager
def gateway(tmp: Path, **settings: Any) -> Iterator[Stack]:
    """kmock and a gateway with ``settings``, routing ``ja-JP`` (held: its pod is starting), ``de-DE`` (scaled to 0,
    nothing wakes it) and ``fr-FR`` (ready, but no recognizer listens at its Service's port)."""
    with Stack(tmp, GatewayConfig(host="127.0.0.1", port=0, **settings)) as stack:
        stack.create(speech_to_text("ja-jp", "ja-JP", free_port()), ready=0)
        stack.create(speech_to_text("de-de", "de-DE", free_port(), replicas=0), ready=0)
        stack.create(speech_to_text("fr-fr", "fr-FR", free_port()))
        for locale in ("ja-JP", "de-DE"):
            stack.routes(locale)
        stack.serving("fr-FR")  # ready: its streams are relayed (to no one), not held for a wake
        yield stack


def failures(stack: Stack, reason: str) -> float:
    """``speech_gateway_failures_total{reason}``."""
    return sum(value for (name, labels), value in scrape_metrics(stack.http).items()
               if name == "speech_gateway_failures_total" and dict(labels).get("reason") == reason)


def python_sdk(url: str, wav: Path, budget: float = AT_ONCE, **cfg: Any) -> speechsdk.CancellationDetails:
    """A Python Speech SDK app's recognize-once, which must be canceled within ``budget`` seconds: its details."""
    started = time.monotonic()
    result = once(config(url, **cfg), wav)
    took = time.monotonic() - started
    assert result.reason == speechsdk.ResultReason.Canceled, result
    assert took < budget, f"canceled after {took:.1f} s"
    return result.cancellation_details


@pytest.mark.parametrize("browser", [False, True], ids=["node", "browser"])
@pytest.mark.parametrize("mode", ["once", "continuous"])
def test_at_the_gateways_connection_cap_the_app_is_canceled_with_too_many_requests(
    jssdk: str, tmp_path: Path, speech_wav: Path, mode: str, browser: bool
) -> None:
    """``SPEECH_GATEWAY_MAX_CONNECTIONS=1`` and one stream held: the JavaScript SDK is canceled at once with
    ``TooManyRequests`` in its own words, asked once (it does not connect again), as at a recognizer's
    ``MaxConnections``; the Python SDK with ``TooManyRequests`` and the gateway's reason. Before: "Websocket not ready"
    and a stack trace (JavaScript), ``ServiceError`` "... Error code: 1013" (Python)."""
    with gateway(tmp_path, max_connections=1) as stack, connect(f"{stack.ws}{ENDPOINT}?language=ja-JP", subprotocols=["USP"]):
        stack.eventually(lambda: stack.app is not None and stack.app[GATEWAY].waker.held == 1, 10, "the stream held")
        event = canceled_at_once(jssdk, stack.ws, speech_wav, mode, browser=browser, language="ja-JP")
        assert (event["cancelReason"], event["errorCode"], event["errorDetails"]) == ("Error", "TooManyRequests", TOO_MANY_REQUESTS), event
        assert failures(stack, "too_many_connections") == 1, "the SDK connected again"
        details = python_sdk(stack.ws, speech_wav, language="ja-JP")
        assert details.code == speechsdk.CancellationErrorCode.TooManyRequests, details
        assert "SPEECH_GATEWAY_MAX_CONNECTIONS" in details.error_details, details.error_details


@pytest.mark.parametrize("browser", [False, True], ids=["node", "browser"])
def test_past_the_requests_the_gateway_may_hold_the_app_is_canceled_with_too_many_requests(
    jssdk: str, tmp_path: Path, speech_wav: Path, browser: bool
) -> None:
    """As many requests held for starting locales as ``SPEECH_GATEWAY_MAX_HELD`` allows (0 here): a Speech SDK app for
    a starting locale is a load refusal (try again later), canceled at once with ``TooManyRequests`` in the JavaScript
    SDK's own words, asked once, as at the gateway's connection cap; the Python SDK with ``TooManyRequests`` and the
    gateway's reason. Before: ``ServiceUnavailable``, which the JavaScript SDK knows not (``NoError`` and its words for
    an internal error), and the Python SDK's ``ServiceUnavailable``."""
    with gateway(tmp_path, max_held=0) as stack:
        event = canceled_at_once(jssdk, stack.ws, speech_wav, "once", browser=browser, language="ja-JP")
        assert (event["cancelReason"], event["errorCode"], event["errorDetails"]) == ("Error", "TooManyRequests", TOO_MANY_REQUESTS), event
        assert failures(stack, "too_many_held") == 1, "the SDK connected again"
        details = python_sdk(stack.ws, speech_wav, language="ja-JP")
        assert details.code == speechsdk.CancellationErrorCode.TooManyRequests, details
        assert "requests already wait for recognizers here (at most 0)" in details.error_details, details.error_details


#: Each locale the gateway cannot serve: (language, the gateway's failure, words of its reason).
UNSERVED = [("de-DE", "backend_unavailable", "is scaled to 0 replicas and nothing wakes it"),
            ("fr-FR", "backend_unavailable", "no recognizer of fr-FR answers"),
            ("ja-JP", "wake_timeout", f"no recognizer of ja-JP became ready within {HOLD_SECONDS:g} s")]


@pytest.mark.parametrize(("language", "reason", "words"), UNSERVED, ids=["scaled-to-zero", "unreachable", "wake-timeout"])
@pytest.mark.parametrize("mode", ["once", "continuous"])
def test_a_locale_the_gateway_cannot_serve_cancels_at_once(
    jssdk: str, tmp_path: Path, speech_wav: Path, mode: str, language: str, reason: str, words: str
) -> None:
    """The turn ends ``ServiceUnavailable`` with the reason: the Python SDK's ``ServiceUnavailable`` with it; the
    JavaScript SDK, which knows no such status, is told by a close 4000 alone: ``ConnectionFailure`` with the reason,
    at once (after the hold, for a locale that did not wake), asked once. (The Python SDK asks again a few times
    before it reports it, as it does a recognizer's refusal: each time held again.) Before, the JavaScript SDK got
    the turn too: ``NoError`` and its words for an internal error, the reason dropped; before that, "Websocket not
    ready" and a stack trace, or a connection again and a hang; ``ServiceError`` "... Error code: 1013" (Python)."""
    with gateway(tmp_path, hold_seconds=HOLD_SECONDS) as stack:
        event = canceled_at_once(jssdk, stack.ws, speech_wav, mode, language=language)
        assert (event["cancelReason"], event["errorCode"]) == closed_4000("")[:2], event
        assert words in event["errorDetails"] and event["errorDetails"].endswith(" websocket error code: 4000"), event
        assert failures(stack, reason) == 1, "the SDK connected again"
        details = python_sdk(stack.ws, speech_wav, AT_ONCE + 6 * HOLD_SECONDS, language=language)
        assert details.code == speechsdk.CancellationErrorCode.ServiceUnavailable, details
        assert words in details.error_details, details.error_details


@pytest.mark.parametrize("browser", [False, True], ids=["node", "browser"])
def test_a_language_no_speech_to_text_serves_and_a_path_of_no_mode_are_bad_requests_with_the_reason(
    jssdk: str, tmp_path: Path, speech_wav: Path, browser: bool
) -> None:
    """The close 1007 alone answers both, as from a recognizer: ``BadRequestParameters`` with the reason (JavaScript),
    ``BadRequest`` (Python). The path of no mode was a bare 404 (before: "Unexpected server response: 404", the
    Python SDK's ``ServiceError`` "Internal service error (404)" without the reason)."""
    with gateway(tmp_path) as stack:
        unknown = canceled_at_once(jssdk, stack.ws, speech_wav, "once", browser=browser, language="xx-XX")
        assert (unknown["errorCode"], "'xx-XX'" in unknown["errorDetails"]) == ("BadRequestParameters", True), unknown
        nowhere = f"{stack.ws}/speech/recognition/nowhere/cognitiveservices/v1"
        typo = canceled_at_once(jssdk, nowhere, speech_wav, "once", browser=browser, endpoint=True)
        assert typo["errorCode"] == "BadRequestParameters", typo
        assert "no recognition mode 'nowhere'; use one of interactive, conversation, dictation" in typo["errorDetails"], typo
        details = python_sdk(stack.ws, speech_wav, endpoint_mode="nowhere")
        assert details.code == speechsdk.CancellationErrorCode.BadRequest, details
        assert "no recognition mode 'nowhere'" in details.error_details, details.error_details


def refused_turn(url: str) -> tuple[list[str], int, str]:
    """A Speech SDK connection that begins its request at once, as the SDKs do: the paths of the messages it gets
    before its close, and the close's code and reason."""
    said: list[str] = []
    with connect(url, subprotocols=["USP"], open_timeout=10) as ws:  # type: ignore[list-item]
        ws.send(client_text_frame("speech.context", uuid.uuid4().hex, {}))
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                said.append(parse_text(str(ws.recv(timeout=10))).path)
    assert closed.value.rcvd is not None, "closed without a close frame"
    return said, closed.value.rcvd.code, closed.value.rcvd.reason


def test_each_gateway_has_its_own_places_for_refusals_that_wait_for_their_request(tmp_path: Path) -> None:
    """Two gateways in one process (as the tests run them): ``MAX_WAITING`` Speech SDK connections refused by the
    first that send nothing take all of its places (one more is closed at once), none of the second's, whose refusal
    still waits for its request and tells it as a failed turn. Before, the places were one count for the process
    (a class attribute, counted without a lock): the second's refusal was closed at once, without its turn."""
    url = f"{ENDPOINT}?language=de-DE"  # scaled to 0, nothing wakes it: refused at once
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    with gateway(tmp_path / "first") as first, gateway(tmp_path / "second") as second, contextlib.ExitStack() as silent:
        idle = [silent.enter_context(connect(first.ws + url, subprotocols=["USP"], open_timeout=10))  # type: ignore[list-item]
                for _ in range(MAX_WAITING)]
        first.eventually(lambda: failures(first, "backend_unavailable") == MAX_WAITING, 10, "every one refused")
        time.sleep(0.3)  # each is read for its request
        with connect(first.ws + url, subprotocols=["USP"], open_timeout=10) as past:  # type: ignore[list-item]
            with pytest.raises(ConnectionClosed) as closed:
                past.recv(timeout=AT_ONCE)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013, "past the first's places: closed at once"
        said, code, reason = refused_turn(second.ws + url)
        assert (said, code) == (["turn.start", "speech.phrase", "turn.end"], 1013), (said, code, reason)
        assert "nothing wakes it" in reason, reason
        for ws in idle:
            with pytest.raises(TimeoutError):
                ws.recv(timeout=0)  # still read for their request


def test_held_for_a_wake_when_the_gateway_stops_the_app_is_canceled_with_connection_failure_and_the_reason(
    jssdk: str, tmp_path: Path, speech_wav: Path
) -> None:
    """A JavaScript SDK app's recognition held while its locale wakes, when the gateway stops (a rolling update of the
    gateway): canceled at once with ``ConnectionFailure`` and the gateway's reason (a close 4000 alone), which says to
    try again: the next connection reaches another gateway pod. The Python SDK is told, as before, by a turn that ends
    ``ServiceUnavailable`` and a close 1013 (the raw protocol's: test_shutdown.py). Before, the JavaScript SDK got that
    turn too: ``NoError`` and its words for an internal error, the reason dropped."""
    stack = asleep_stack(tmp_path / "gateway", HELD_SHUTDOWN_SECONDS)
    with ThreadPoolExecutor(1) as pool:
        app = pool.submit(recognize, jssdk, scenario(stack.ws, speech_wav, mode="once", language="ja-JP", timeoutMs=20000))
        held(stack, 1)
        # the SDK's first messages (speech.config, speech.context, the audio's header), sent as soon as its socket opens,
        # reach the gateway: a stop before them is answered at once from what it has, without the request (usp.refusal)
        time.sleep(1)
        stopping = time.monotonic()
        stack.stop()
        out = app.result(timeout=30)
        took = time.monotonic() - stopping
    stack.join()
    assert [(c["cancelReason"], c["errorCode"], c["errorDetails"]) for c in out["canceled"]] == [closed_4000(STOPPED_WHILE_WAKING)], out
    assert took < AT_ONCE, f"canceled {took:.1f} s after the stop began"


@pytest.mark.parametrize("mode", ["once", "continuous"])
def test_a_kept_recognizer_the_gateway_refused_recognizes_on_its_next_try(
    jssdk: str, tmp_path: Path, server: ServerThread, speech_wav: Path, speech_ref: Reference, mode: str
) -> None:
    """A page keeps its recognizer: refused by the gateway (``ko-KR`` scaled to 0, nothing wakes it:
    ``ConnectionFailure`` with the gateway's reason), its next recognition on that recognizer, which reaches a
    recognizer (as a try once the locale woke does), recognizes the utterance. Before, the gateway's close 4000 came
    with nothing sent on that connection: the next recognition failed "Cannot send on connection that is in
    Disconnected state"."""
    with gateway(tmp_path) as stack:
        stack.create(speech_to_text("ko-kr", "ko-KR", free_port(), replicas=0), ready=0)
        stack.routes("ko-KR")
        with Failover(stack.port, server.port) as service:
            failed, second = kept_recognizer(jssdk, service.ws, speech_wav, mode)
        assert failed[:2] == closed_4000("")[:2] and "is scaled to 0 replicas and nothing wakes it" in failed[2], failed
        assert second == expected(speech_ref.phrases[0])[0]
        assert failures(stack, "backend_unavailable") == 1, "the SDK connected again"


@pytest.mark.parametrize("mode", ["once", "continuous"])
@pytest.mark.parametrize("language", ["ko-KR", BROKEN], ids=["decoders-busy", "model-unloadable"])
def test_a_turn_the_recognizer_fails_reaches_the_app_through_the_gateway_at_once(
    jssdk: str, registry: ModelRegistry, tmp_path: Path, speech_wav: Path, language: str, mode: str
) -> None:
    """Real recognizers behind the gateway fail the JavaScript SDK's turn: every decoder busy (``DecoderMaxCount=1``, a
    /vosk stream holding it), a model that cannot be loaded. The app is canceled at once, as connected straight to the
    recognizer (tests/jssdk/test_refusals.py, test_jssdk.py): ``TooManyRequests``; ``ConnectionFailure`` with the
    model's reason. Before, through the gateway it waited for its own time out: the gateway closed the client's
    connection as soon as it had written the close, without reading the client's close reply (aiohttp's ``close`` of a
    socket another task receives on), and the SDK (its ``ws``) told both at once reported the close to no one."""
    pcm, _, _ = read_wav(speech_wav)
    with Stack(tmp_path) as stack, decoder_held(registry, pcm, tmp_path, stack) as release:
        event = canceled_at_once(jssdk, stack.ws, speech_wav, mode, language=language)
        release()
    if language == BROKEN:
        assert (event["cancelReason"], event["errorCode"]) == closed_4000("")[:2], event
        assert f"cannot load the {BROKEN} model" in event["errorDetails"], event
    else:
        assert (event["cancelReason"], event["errorCode"], event["errorDetails"]) == ("Error", "TooManyRequests", TOO_MANY_REQUESTS), event
