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

A turn that fails ``BadRequest`` (a stream past ``MaxSessionSeconds``) or ``Error`` (a bug of the server's) is told
the JavaScript SDK by a close 1007 or 4000, whose reason it reports (``BadRequestParameters``, ``ConnectionFailure``),
recognizing once or continuously (a turn it began in continuous recognition ends first, with no phrase); its phrase
would be read in the SDK's fixed words. Every such close comes after a message that ends the SDK's reading
(errors.py, ``JAVASCRIPT_CLOSES``): with nothing sent on the connection, the SDK would keep it, closed, and fail the
recognizer's next recognition; with a message its reading goes on after, it would connect again after the close and
send its request again without audio. The kept-recognizer tests below have an app try again on its recognizer
after each refusal, as pages do.

Before, ``MaxConnections`` and a drain closed the connection with 1013 as soon as it was accepted: the SDK, still
sending its first messages, canceled with ``RuntimeError`` and "websocket send error: Websocket not ready <ids> Error"
and its stack (``WebsocketMessageAdapter.sendRawMessage``) as the error details, or, in some runs, rejected
``startContinuousRecognitionAsync`` with "Cannot send on connection that is in Disconnected state". Closed with 1013 only once the request
began, it connected again and then waited for ever (``ServiceRecognizerBase`` reports a close's reason only for 1002,
1003, 1007 and 4000). Now the refusal is a turn that fails (speech_recognizer/usp/refusal.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import azure.cognitiveservices.speech as speechsdk
import pytest
from websockets.sync.client import connect as sync_connect

from harness.speech import silence
from speech_recognizer import drain
from speech_recognizer.app import create_app
from speech_recognizer.models import ModelRegistry
from speech_recognizer.usp.connection import Turn

from ..balancer import Balancer
from ..conftest import make_settings
from ..hostile import Audio, warm
from ..support import Reference, ServerThread, Starved, TcpServerThread, free_port, read_wav, scrape_metrics
from ..usp.sdk import config, expected, once
from ..usp.test_idle_proxy import HOLD_AT
from ..ws_frames import pieces
from .node import recognize, scenario

ENDPOINT = "/speech/recognition/conversation/cognitiveservices/v1"
#: Seconds within which a refusal must reach the app (its own start included), but those the app and the server waited
#: for a CPU (:class:`~tests.support.Starved`; an event's ``work``: tests/jssdk/node.py): the product's promise is
#: work, no waiting (a refusal is a close or a failed turn as the request begins), which a loaded machine stretches.
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
    """Run one recognition that is refused: it must end in a ``canceled`` event within :data:`AT_ONCE` seconds (but
    those the app and the server waited for a CPU: :class:`~tests.support.Starved`), one only (in recognize-once also
    as the result), with no stack trace in its details or on stderr; that event."""
    with Starved() as starved:
        started = time.monotonic()
        out = recognize(jssdk, scenario(ws, wav, mode=mode, timeoutMs=15000, **more))
        ended = time.monotonic()
    took = starved.unstarved(started, ended)
    assert took < AT_ONCE, f"canceled after {ended - started:.1f} s, {took:.1f} s of it not waiting for a CPU"
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

def broken_models(tmp_path: Path, locale: str = "ko-KR") -> Path:
    """A models folder whose ``locale`` Vosk cannot load (a ``final.mdl`` that is no model)."""
    models = tmp_path / "models"
    (models / locale / "conf").mkdir(parents=True)
    (models / locale / "conf" / "model.conf").write_text("--min-active=200\n")
    (models / locale / "am").mkdir()
    (models / locale / "am" / "final.mdl").write_bytes(b"not a model")
    return models


@pytest.mark.parametrize("mode", ["once", "continuous"])
def test_a_model_that_cannot_be_loaded_cancels_at_once_with_connection_failure_and_the_reason(
    jssdk: str, tmp_path: Path, speech_wav: Path, mode: str
) -> None:
    """A locale whose model folder Vosk cannot load (here a ``final.mdl`` that is no model): for the JavaScript SDK, a
    close 4000 alone naming the model, which it reports at once, asked once, as ``ConnectionFailure`` with that reason;
    for the Python SDK, as before, a turn that ends ``ServiceUnavailable`` naming it, then a close 1013. Before, the
    JavaScript SDK got that turn too: ``NoError`` and its words for an internal error, the reason dropped."""
    models = broken_models(tmp_path, "fr-FR")
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


def connected_once(out: dict[str, Any]) -> None:
    """The app's recognizer connected once in its run, lingering included: after a close that alone tells it a failure,
    the SDK for JavaScript's reading connects again at once when the server had sent it anything on the connection and
    its reading did not end (``ServiceRecognizerBase.receiveMessage``, ``reconnect``), and sends its request again
    without audio, which the server ends for want of audio (``idle_timeout``) and the SDK asks again after
    (frames.javascript_reading_end)."""
    assert len(out["connected"]) == 1, f"the SDK connected again (at {out['connected'][1:]} ms; canceled at {out['canceled']})"


#: Seconds :class:`LateClose` holds a close of the server's back.
CLOSE_LAG = 0.5


@dataclass
class LateClose(TcpServerThread):
    """A TCP relay from 127.0.0.1:``port`` to ``upstream`` that passes the server's close frame on to the client
    :data:`CLOSE_LAG` seconds after what came before it (as a network or a proxy in front may: the client's reading
    waits for the close then), everything else as it comes. It reads the server's WebSocket frames after the upgrade to
    tell where each ends.

    The SDK for JavaScript, whose reading goes on after a message (with no reading-end message before the close: a
    ``turn.end`` of its continuous recognition), connects again after the close only if its reading waits when the
    close comes, not if it still handles that message (its next read then fails, which ends its reading): with the
    close right behind, in some runs only (in one of four of the Node form's, in each of the browser form's)."""

    upstream: int
    port: int = field(default_factory=free_port)

    async def relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream)

        async def up() -> None:
            while data := await client_r.read(1 << 16):
                up_w.write(data)
                await up_w.drain()
            if up_w.can_write_eof():
                up_w.write_eof()

        async def down() -> None:
            upgraded = False
            async for piece in pieces(up_r):  # the upgrade's head, then each frame
                if upgraded and piece[0] & 0x0F == 0x8:  # a close
                    await asyncio.sleep(CLOSE_LAG)
                client_w.write(piece)
                await client_w.drain()
                upgraded = True
            if client_w.can_write_eof():
                client_w.write_eof()

        pumps = asyncio.gather(up(), down(), return_exceptions=True)
        try:
            await pumps
        finally:  # also the relay stopping with the connection open: both sides closed, nothing left pending
            pumps.cancel()
            for writer in (client_w, up_w):
                writer.close()
            await asyncio.gather(pumps, return_exceptions=True)


@pytest.mark.parametrize("browser", [False, True], ids=["node", "browser"])
def test_a_stream_past_max_session_seconds_is_a_bad_request_with_the_reason(
    jssdk: str, registry: ModelRegistry, tmp_path: Path, utterances_wav: Path, browser: bool
) -> None:
    """A continuous recognition streamed in real time past ``MaxSessionSeconds`` (:data:`MAX_SESSION_SECONDS`): its
    phrases so far, the turn's end, then a close 1007 alone, which the JavaScript SDK reports at once as
    ``BadRequestParameters``, the code the turn's ``BadRequest`` gives, with the server's reason (open a new stream to go
    on). Its reading ends before the close: the SDK connects no more while the app keeps the recognizer. The Python SDK
    is told by the turn, as before (tests/recognizer/test_idle.py). Before, the JavaScript SDK got that turn too: its
    fixed words ("Invalid parameter or unsupported audio format in the request."), the reason dropped. The close comes
    :data:`CLOSE_LAG` after the turn's end (:class:`LateClose`): without the message that ends its reading, the SDK
    connects again in each run. The app pushes nothing past :data:`HOLD_AT` until the cancel came, so the close falls
    mid-stream however slow the machine (a server that ended the stream at its end alone would leave the app waiting
    until its ``timeoutMs``): pushed on, the whole recording was sent before a late session began its clock."""
    app = create_app(make_settings(tmp_path, f"MaxSessionSeconds={MAX_SESSION_SECONDS:g}", f"AudioIdleSeconds={IDLE_SECONDS:g}"),
                     registry)
    with ServerThread(app) as srv, LateClose(srv.port) as relay:
        out = recognize(jssdk, scenario(relay.ws, utterances_wav, mode="continuous", speed=1, holdAt=HOLD_AT, holdUntil="canceled",
                                        browser=browser, timeoutMs=45000, lingerMs=LINGER_MS), timeout=90)
        reason = f"the stream reached {MAX_SESSION_SECONDS:g} s (MaxSessionSeconds); open a new one to go on"
        assert [(c["cancelReason"], c["errorCode"], c["errorDetails"]) for c in out["canceled"]] == [
            ("Error", "BadRequestParameters", f"{reason} websocket error code: 1007")], out
        # by the clock: MaxSessionSeconds is clock time from the session's start (a decoder held), the audio's pace a
        # microphone's
        assert 1000 * MAX_SESSION_SECONDS <= out["canceled"][0]["ms"], out
        assert "\n    at " not in out["stderr"], out["stderr"]
        connected_once(out)
        session, again = refusals(srv, "session_too_long"), refusals(srv, "idle_timeout")
        assert (session, again) == (1, 0), f"the SDK connected again: {session:g} session_too_long, {again:g} idle_timeout"


#: AudioIdleSeconds of the tests where the SDK for JavaScript might send its request again without audio.
IDLE_SECONDS = 2.0
#: MaxSessionSeconds of the test of a stream past it: shorter than :data:`IDLE_SECONDS`, so that audio held back (or
#: all come at once after a late start) never ends the stream as idle first.
MAX_SESSION_SECONDS = 1.5
#: How long the app keeps its recognizer after its recognition ended (a page keeps it for its next one): the SDK
#: connects again at once after a close it reads on past (:func:`connected_once`), and the server ends a request it
#: sends again without audio after IDLE_SECONDS (counted as ``idle_timeout``).
LINGER_MS = int(1000 * IDLE_SECONDS) + 1000


def test_a_kept_recognizer_whose_stream_went_quiet_connects_again_no_more(
    jssdk: str, registry: ModelRegistry, tmp_path: Path, utterances_wav: Path
) -> None:
    """A continuous recognition whose push stream stays open with no more audio (a microphone that stopped): after
    ``AudioIdleSeconds`` the turn's end, then a close 1007, which the JavaScript SDK reports as
    ``BadRequestParameters`` with the reason; the app keeps its recognizer a while more, in which the SDK connects no
    more. Before, the turn ended by the close alone, and the SDK, reading on, connected again each time: a request
    without audio every ``AudioIdleSeconds``, each holding a decoder, for as long as the app kept its recognizer (5 in
    8 s); with the turn's end alone before the close (10240b2), once."""
    app = create_app(make_settings(tmp_path, f"AudioIdleSeconds={IDLE_SECONDS:g}"), registry)
    with ServerThread(app) as srv:
        out = recognize(jssdk, scenario(srv.ws, utterances_wav, mode="continuous", speed=4, keepOpen=True, timeoutMs=45000,
                                        lingerMs=LINGER_MS), timeout=90)
        assert [(c["cancelReason"], c["errorCode"]) for c in out["canceled"]] == [("Error", "BadRequestParameters")], out
        assert out["canceled"][0]["errorDetails"].endswith("(AudioIdleSeconds): the stream ended to free its decoder websocket error code: 1007"), out
        connected_once(out)
        assert refusals(srv, "idle_timeout") == 1, f"the SDK connected again {refusals(srv, 'idle_timeout') - 1:g} times"


@pytest.fixture
def bug() -> Iterator[Callable[[int], None]]:
    """``arm(n)``: a bug of the server's, once: the ``n``-th audio message it receives from then on raises
    (``Turn.audio``), which the connection answers as :data:`~speech_recognizer.errors.INTERNAL`."""
    real = Turn.audio
    left = [0]

    async def buggy(turn: Turn, payload: bytes) -> None:
        left[0] -= 1
        if left[0] == 0:
            raise RuntimeError("a bug of the server's")
        await real(turn, payload)

    def arm(n: int) -> None:
        left[0] = n

    Turn.audio = buggy  # type: ignore[method-assign]
    try:
        yield arm
    finally:
        Turn.audio = real  # type: ignore[method-assign]


@pytest.mark.parametrize("at", [1, 5], ids=["at-its-header", "mid-turn"])
def test_a_bug_of_the_server_cancels_with_connection_failure_and_the_reason_and_the_recognizer_goes_on(
    jssdk: str, registry: ModelRegistry, tmp_path: Path, utterances_wav: Path, bug: Callable[[int], None], at: int
) -> None:
    """A bug of the server's (``internal``; its traceback logged) in a continuous recognition, at its first audio
    message (before the turn began) or mid-turn: the turn's end, then a close 4000, which the JavaScript SDK reports at
    once as ``ConnectionFailure`` with the server's reason, after which apps connect again; the app's next recognition
    on the same recognizer (started after the first 4 s of audio were pushed) recognizes what follows. The Python SDK
    is told, as before, by the turn, which ends ``Error`` (and a close 1011, after which it connects again and sends its
    audio again). Before, the JavaScript SDK got that turn too: ``ServiceError`` and its words for an internal error ("The speech service encountered an
    internal error and could not continue."), the reason dropped; a close 4000 alone at its first audio message would
    have left the recognizer's later recognitions failing ("Cannot send on connection that is in Disconnected state")."""
    reason = "internal error (RuntimeError); the server logged the details"
    with ServerThread(create_app(make_settings(tmp_path), registry)) as srv:
        bug(at)
        out = recognize(jssdk, scenario(srv.ws, utterances_wav, mode="continuous", cuts=[4.0], partTimeoutMs=5000, timeoutMs=45000),
                        timeout=90)
        assert [(c["cancelReason"], c["errorCode"], c["errorDetails"]) for c in out["canceled"]] == [closed_4000(reason)], out
        assert out["canceled"][0]["work"] < 1000 * AT_ONCE, out["canceled"]
        assert [r["reason"] for r in out["recognized"]][:1] == ["RecognizedSpeech"] and out["error"] is None, out
        assert refusals(srv, "internal") == 1


#: Where the kept-recognizer tests cut their one utterance (s): the first recognition gets silence only (refused, it
#: may read some of it), the second the utterance.
LEAD_SECONDS = 0.2


class Failover(Balancer):
    """A Service whose first connection reaches a pod that refuses it (backend 0) and every later one a healthy pod
    (backend 1), as a drain's refusal (or a gateway's) and the app's next try meet: the kept recognizer connects anew."""

    def __init__(self, refusing: int, healthy: int) -> None:
        super().__init__([refusing, healthy], ready=[0])
        self.connections = 0

    async def relay(self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.connections > 1:
            self.ready = {1}
        await super().relay(client_reader, client)


@pytest.fixture(scope="module")
def warm_server(server: ServerThread, speech_wav: Path) -> ServerThread:
    """The session's ``server`` once it has decoded the utterance (:func:`~tests.hostile.warm`), for the kept-recognizer
    tests whose second recognition it answers within the app's timeout: it warms no recognizer at start-up
    (:func:`~tests.conftest.make_settings`), and a new recognizer's first utterance costs several times the CPU of a
    warm one's (docs/engine.md), which the first of those tests in a session paid inside its timeout."""
    pcm, rate, _ = read_wav(speech_wav)
    warm(server, Audio(pcm, rate, speech_wav))
    return server


def kept_recognizer(jssdk: str, url: str, wav: Path, mode: str, **more: Any) -> tuple[tuple[str, str, str], str]:
    """Two recognitions on one recognizer object (a page that tries again after a failure, as it keeps its recognizer):
    the first must be canceled, at once; the second must recognize. ``(cancelReason, errorCode, errorDetails)`` of the
    first, the text the second recognized."""
    out = recognize(jssdk, scenario(url, wav, mode=mode, cuts=[LEAD_SECONDS], partTimeoutMs=15000, timeoutMs=40000, **more),
                    timeout=90)
    errors = [c for c in out["canceled"] if c["cancelReason"] != "EndOfStream"]  # the second's stream ends
    assert len(errors) == 1 and errors[0]["work"] < 1000 * AT_ONCE, out
    first = errors[0]
    if mode == "once":
        assert [r["reason"] for r in out["onces"]] == ["Canceled", "RecognizedSpeech"], out
        second = out["onces"][1]["text"]
    else:
        assert [r["reason"] for r in out["recognized"]][:1] == ["RecognizedSpeech"], out
        second = out["recognized"][0]["text"]
    return (first["cancelReason"], first["errorCode"], first["errorDetails"]), second


@pytest.mark.parametrize("mode", ["once", "continuous"])
def test_a_kept_recognizer_refused_by_a_drain_recognizes_on_its_next_try(
    jssdk: str, registry: ModelRegistry, warm_server: ServerThread, tmp_path: Path, speech_wav: Path, speech_ref: Reference, mode: str
) -> None:
    """A page keeps its recognizer: refused by a draining pod (``ConnectionFailure`` with the drain's reason), its next
    recognition on that recognizer reaches another pod and recognizes the utterance. Before, the close 4000 came with
    nothing sent on that connection, and the SDK kept that closed connection for the recognizer: its next recognition
    failed "Cannot send on connection that is in Disconnected state"."""
    app = create_app(make_settings(tmp_path), registry)
    with ServerThread(app) as draining, Failover(draining.port, warm_server.port) as service:
        app.state.drain.begin()
        failed, second = kept_recognizer(jssdk, service.ws, speech_wav, mode)
        assert failed == closed_4000(drain.REASON), failed
        assert second == expected(speech_ref.phrases[0])[0]
        assert refusals(draining, "draining") == 1, "the SDK connected again"



@pytest.mark.parametrize("mode", ["once", "continuous"])
def test_a_kept_recognizer_whose_model_could_not_be_loaded_recognizes_on_its_next_try(
    jssdk: str, warm_server: ServerThread, tmp_path: Path, speech_wav: Path, speech_ref: Reference, mode: str
) -> None:
    """A pod that cannot load the locale's model (``model_unavailable``, told as the turn begins): ``ConnectionFailure``
    naming the model, and the page's next recognition on its recognizer, at another pod, recognizes. Before, the close
    4000 came with nothing sent on that connection: the next recognition failed "Cannot send on connection that is in
    Disconnected state"."""
    models = broken_models(tmp_path)
    app = create_app(make_settings(tmp_path, f"Mounts:Models={models}"), ModelRegistry(models, ("ko-KR",)))
    with ServerThread(app) as broken, Failover(broken.port, warm_server.port) as service:
        failed, second = kept_recognizer(jssdk, service.ws, speech_wav, mode)
        assert failed[:2] == closed_4000("")[:2] and "ko-KR" in failed[2] and failed[2].endswith(" websocket error code: 4000"), failed
        assert second == expected(speech_ref.phrases[0])[0]
        assert refusals(broken, "model_unavailable") == 1, "the SDK connected again"


def test_a_bug_of_the_server_at_the_first_audio_reaches_a_recognize_once_app_with_the_reason_and_the_recognizer_goes_on(
    jssdk: str, warm_server: ServerThread, speech_wav: Path, speech_ref: Reference, bug: Callable[[int], None]
) -> None:
    """Recognizing once, a bug of the server's at the first audio message (its header): ``ConnectionFailure`` with the
    server's reason (a close 4000), as in continuous recognition, and the next ``recognizeOnceAsync`` on the recognizer
    recognizes. The Python SDK is told by the failed turn, as before. Before, the failed turn told the JavaScript SDK
    too: ``ServiceError`` and its fixed words for an internal error, the reason dropped (a close alone would have left
    the recognizer failing its later recognitions)."""
    before = refusals(warm_server, "internal")
    bug(1)
    failed, second = kept_recognizer(jssdk, warm_server.ws, speech_wav, "once")
    assert failed == closed_4000("internal error (RuntimeError); the server logged the details"), failed
    assert second == expected(speech_ref.phrases[0])[0]
    assert refusals(warm_server, "internal") == before + 1


def test_a_kept_recognizer_whose_recognize_once_went_quiet_connects_again_no_more(
    jssdk: str, registry: ModelRegistry, tmp_path: Path
) -> None:
    """Recognizing once, a stream that stays open with no more audio after half a second of silence (a microphone that
    stopped): after ``AudioIdleSeconds`` the close 1007, which the JavaScript SDK reports as ``BadRequestParameters``
    with the reason; the app keeps its recognizer a while more, in which the SDK connects again no more. Before, its reading
    connected again after each close and sent its request again without audio: an ``idle_timeout`` every
    ``AudioIdleSeconds``, each a decoder held, for as long as the app kept its recognizer."""
    quiet = silence(0.5, tmp_path / "quiet.wav")
    app = create_app(make_settings(tmp_path, f"AudioIdleSeconds={IDLE_SECONDS:g}"), registry)
    with ServerThread(app) as srv:
        out = recognize(jssdk, scenario(srv.ws, quiet, mode="once", keepOpen=True, timeoutMs=20000, lingerMs=LINGER_MS), timeout=60)
        assert [(c["cancelReason"], c["errorCode"]) for c in out["canceled"]] == [("Error", "BadRequestParameters")], out
        assert out["canceled"][0]["errorDetails"].endswith("(AudioIdleSeconds): the stream ended to free its decoder websocket error code: 1007"), out
        connected_once(out)
        assert refusals(srv, "idle_timeout") == 1, f"the SDK connected again {refusals(srv, 'idle_timeout') - 1:g} times"
