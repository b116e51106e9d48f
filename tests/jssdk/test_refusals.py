"""What a Speech SDK for JavaScript app sees when the recognizer refuses its recognition: a ``canceled`` event (and
``recognizeOnceAsync``'s canceled result) at once, with a reason and an error code, never a stack trace or a hang.

The refusals a recognition WebSocket can meet, and where each is pinned:

- before the upgrade, as HTTP: a wrong or missing key (401/403: ``ConnectionFailure`` naming the status,
  test_jssdk.py::test_a_refused_key_cancels_at_once). ``Http:MaxConnections`` never refuses an upgrade
  (tests/recognizer/test_http_connection_cap.py), nor does the query (``Options.from_query`` takes what it cannot
  read as its default);
- accepted, then refused before any turn runs: ``MaxConnections``, a drain, a recognition path of no mode (below),
  a service not served (a close 1007 naming it, for the SDKs' other recognizers: tests/usp/test_sdk_features.py);
- in the turn: a language without a model (close 1007: ``BadRequestParameters`` with the reason,
  test_jssdk.py::test_an_unknown_language_cancels_naming_it_and_the_served_ones), every decoder busy (``TooManyRequests``
  in the SDK's words, test_jssdk.py::test_every_decoder_busy_cancels_at_once_with_too_many_requests_in_the_sdks_own_words),
  a model that cannot be loaded (below).

A drain and a model that cannot be loaded are the service's, for now, not the request's: the Python SDK is told by a
turn that fails ``ServiceUnavailable`` with the reason; the JavaScript SDK, which knows no such status, by a close 4000
alone, which it reports at once as ``ConnectionFailure`` with the reason (errors.py, ``CONNECTION_FAILURE_CLOSE``).

Before, ``MaxConnections`` and a drain closed the connection with 1013 as soon as it was accepted: the SDK, still
sending its first messages, canceled with ``RuntimeError`` and "websocket send error: Websocket not ready <ids> Error"
and its stack (``WebsocketMessageAdapter.sendRawMessage``) as the error details, or, in some runs, rejected
``startContinuousRecognitionAsync`` with "Cannot send on connection that is in Disconnected state". Closed with 1013 only once the request
began, it connected again and then waited for ever (``ServiceRecognizerBase`` reports a close's reason only for 1002,
1003, 1007 and 4000). Now the refusal is a turn that fails (speech_recognizer/usp/refusal.py).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import azure.cognitiveservices.speech as speechsdk
import pytest
from websockets.sync.client import connect as sync_connect

from speech_recognizer import drain
from speech_recognizer.app import create_app
from speech_recognizer.models import ModelRegistry

from ..conftest import make_settings
from ..support import ServerThread, scrape_metrics
from ..usp.sdk import config, once
from .node import recognize, scenario

ENDPOINT = "/speech/recognition/conversation/cognitiveservices/v1"
#: Seconds within which a refusal must reach the app (its own start included).
AT_ONCE = 5
#: The JavaScript SDK's words for ``TooManyRequests`` (``EnumTranslation.implTranslateErrorDetails``).
TOO_MANY_REQUESTS = "The number of parallel requests exceeded the number of allowed concurrent transcriptions."
def closed_4000(reason: str) -> tuple[str, str, str]:
    """``(cancelReason, errorCode, errorDetails)`` of the JavaScript SDK's cancel after a close 4000 with ``reason``
    (``ServiceRecognizerBase``'s ``ConnectionClosedEvent`` handler)."""
    return "Error", "ConnectionFailure", f"{reason} websocket error code: 4000"


def python_sdk_unavailable(url: str, wav: Path, words: str, **cfg: Any) -> None:
    """A Python Speech SDK app's recognize-once at ``url`` is canceled ``ServiceUnavailable`` with ``words`` in its
    details (it connects again a few times first)."""
    result = once(config(url, **cfg), wav)
    assert result.reason == speechsdk.ResultReason.Canceled, result
    details = result.cancellation_details
    assert details.code == speechsdk.CancellationErrorCode.ServiceUnavailable and words in details.error_details, details


def canceled_at_once(jssdk: str, ws: str, wav: Path, mode: str, **more: Any) -> dict[str, Any]:
    """Run one recognition that is refused: it must end in a ``canceled`` event within :data:`AT_ONCE` seconds, one
    only (in recognize-once also as the result), with no stack trace in its details or on stderr; that event."""
    started = time.monotonic()
    out = recognize(jssdk, scenario(ws, wav, mode=mode, timeoutMs=15000, **more))
    took = time.monotonic() - started
    assert took < AT_ONCE, f"canceled after {took:.1f} s"
    assert out["recognized"] == [] and len(out["canceled"]) == 1, out
    event = out["canceled"][0]
    if mode == "once":
        result = out["once"]
        assert result["reason"] == "Canceled", result
        assert (result["cancelReason"], result["errorCode"], result["errorDetails"]) == (
            event["cancelReason"], event["errorCode"], event["errorDetails"]), out
    for said in (event["errorDetails"], out["stderr"]):
        assert "Websocket not ready" not in said and "\n    at " not in said, said
    return event


def refusals(srv: ServerThread, reason: str) -> float:
    """``speech_refused_total{reason}`` summed over the routes."""
    return sum(value for (name, labels), value in scrape_metrics(srv.http).items()
               if name == "speech_refused_total" and dict(labels).get("reason") == reason)


@pytest.mark.parametrize("browser", [False, True], ids=["node", "browser"])
@pytest.mark.parametrize("mode", ["once", "continuous"])
def test_at_max_connections_the_app_is_canceled_with_too_many_requests(
    jssdk: str, registry: ModelRegistry, tmp_path: Path, speech_wav: Path, mode: str, browser: bool
) -> None:
    """``MaxConnections=1`` and one connection open: the app's recognition is canceled at once with
    ``TooManyRequests`` in the SDK's words (the reason, which the Python SDK shows, it never reads), asked once (it
    does not connect again). Before: ``RuntimeError``, "websocket send error: Websocket not ready" and a stack."""
    app = create_app(make_settings(tmp_path, "MaxConnections=1"), registry)
    with ServerThread(app) as srv, sync_connect(srv.ws + ENDPOINT + "?language=ko-KR"):
        event = canceled_at_once(jssdk, srv.ws, speech_wav, mode, browser=browser)
        assert (event["cancelReason"], event["errorCode"], event["errorDetails"]) == ("Error", "TooManyRequests", TOO_MANY_REQUESTS), event
        assert refusals(srv, "too_many_connections") == 1, "the SDK connected again"


@pytest.mark.parametrize("mode", ["once", "continuous"])
def test_while_draining_the_app_is_canceled_at_once_with_connection_failure_and_the_reason(
    jssdk: str, registry: ModelRegistry, tmp_path: Path, speech_wav: Path, mode: str
) -> None:
    """A server draining (shutting down, as each pod of a rolling update does) refuses a new recognition: canceled at
    once, asked once, with ``ConnectionFailure`` and the server's reason (a close 4000 alone), which says to connect
    again: the Service sends the next connection to another pod. The Python SDK is told by a turn that fails
    ``ServiceUnavailable`` with the reason (unchanged; tests/recognizer/test_drain.py too). Before, the JavaScript SDK
    got that turn too, which it knows no status for: error code ``NoError`` and its words for an internal error ("The
    speech service encountered an internal error and could not continue."), the reason dropped; before that,
    ``RuntimeError``, "websocket send error: Websocket not ready" and a stack."""
    app = create_app(make_settings(tmp_path), registry)
    with ServerThread(app) as srv:
        app.state.drain.begin()
        event = canceled_at_once(jssdk, srv.ws, speech_wav, mode)
        assert (event["cancelReason"], event["errorCode"], event["errorDetails"]) == closed_4000(drain.REASON), event
        assert refusals(srv, "draining") == 1, "the SDK connected again"
        python_sdk_unavailable(srv.ws, speech_wav, drain.REASON)


@pytest.mark.parametrize("mode", ["once", "continuous"])
def test_a_model_that_cannot_be_loaded_cancels_at_once_with_connection_failure_and_the_reason(
    jssdk: str, tmp_path: Path, speech_wav: Path, mode: str
) -> None:
    """A locale whose model folder Vosk cannot load (here a ``final.mdl`` that is no model): for the JavaScript SDK, a
    close 4000 alone naming the model, which it reports at once, asked once, as ``ConnectionFailure`` with that reason;
    for the Python SDK, as before, a turn that ends ``ServiceUnavailable`` naming it, then a close 1013. Before, the
    JavaScript SDK got that turn too: ``NoError`` and its words for an internal error, the reason dropped."""
    models = tmp_path / "models"
    (models / "fr-FR" / "conf").mkdir(parents=True)
    (models / "fr-FR" / "conf" / "model.conf").write_text("--min-active=200\n")
    (models / "fr-FR" / "am").mkdir()
    (models / "fr-FR" / "am" / "final.mdl").write_bytes(b"not a model")
    app = create_app(make_settings(tmp_path, f"Mounts:Models={models}"), ModelRegistry(models, ("fr-FR",)))
    with ServerThread(app) as srv:
        event = canceled_at_once(jssdk, srv.ws, speech_wav, mode, language="fr-FR")
        assert (event["cancelReason"], event["errorCode"]) == closed_4000("")[:2], event
        assert event["errorDetails"].endswith(" websocket error code: 4000") and "fr-FR" in event["errorDetails"], event
        assert refusals(srv, "model_unavailable") == 1, "the SDK connected again"
        python_sdk_unavailable(srv.ws, speech_wav, "fr-FR", language="fr-FR")


@pytest.mark.parametrize("browser", [False, True], ids=["node", "browser"])
def test_a_recognition_path_of_no_mode_is_a_bad_request_naming_the_modes(jssdk: str, server: ServerThread, speech_wav: Path,
                                                                         browser: bool) -> None:
    """``fromEndpoint`` with a recognition path of no mode (a typing error): ``BadRequestParameters`` at once, with the
    modes served (a close 1007, as a language without a model). Before, no route matched: ``ConnectionFailure``
    "Unexpected server response: 403" (the Python SDK: ``AuthenticationFailure``, as if the key were wrong)."""
    url = server.ws + "/speech/recognition/nowhere/cognitiveservices/v1"
    event = canceled_at_once(jssdk, url, speech_wav, "once", endpoint=True, browser=browser)
    assert (event["cancelReason"], event["errorCode"]) == ("Error", "BadRequestParameters"), event
    assert "no recognition mode 'nowhere'; use one of interactive, conversation, dictation" in event["errorDetails"], event
