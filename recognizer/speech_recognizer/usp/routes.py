"""The Speech SDK's routes: its WebSocket protocol (USP) on the three recognition paths.

An unmodified Azure Speech SDK app transcribes against this server by pointing
``SpeechConfig(host=...)`` (or ``endpoint=``) at it. The app must provide
``app.state.engine`` (:class:`~speech_recognizer.engine.Engine`),
``app.state.settings`` (for ``api_key``), ``app.state.failed_turns``
(:class:`~.refusal.FailedTurns`) and ``app.state.parking`` (:class:`~.resume.Parking`).
"""

from __future__ import annotations

import logging

from starlette.responses import PlainTextResponse
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket

from .. import contract as c
from .. import openapi as oa
from ..auth import check_key
from ..deadlines import Deadlines
from ..errors import NOT_FOUND, Failure, close_args, failure_headers, observe, unserved_service
from ..serving import DENIED
from .connection import Connection
from .options import Options
from .refusal import refuse

log = logging.getLogger(__name__)

SUBPROTOCOL = "USP"


async def _deny(websocket: WebSocket, failure: Failure) -> None:
    """Refuse the upgrade with the failure's HTTP status and headers (its kind named: :func:`~speech_recognizer.errors.failure_headers`):
    the Speech SDK reports 401/403 as ``AuthenticationFailure`` (a plain 403 where the server cannot send a response to
    an upgrade)."""
    try:
        await websocket.send_denial_response(PlainTextResponse(failure.message, status_code=failure.kind.http,
                                                                      headers=failure_headers(failure)))
        DENIED.set(True)
    except RuntimeError:
        await websocket.close(*close_args(failure))


def endpoint(mode: str):
    """The WebSocket handler for one recognition mode."""

    async def serve(websocket: WebSocket) -> None:
        state = websocket.app.state
        try:
            check_key(getattr(state.settings, "api_key", None), websocket.headers, websocket.query_params.multi_items(), websocket=True)
            options = Options.from_query(mode, websocket.query_params)
        except Failure as exc:  # refused at the upgrade, with its HTTP status (the SDK reports 401/403 as AuthenticationFailure)
            observe(exc, f"usp/{mode}", state.metrics)
            await _deny(websocket, exc)
            return
        offered = websocket.scope.get("subprotocols") or []
        await websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
        drain = getattr(state, "drain", None)  # at its deadline, what the connection holds is sent before the close
        connection = Connection(websocket, state.engine, options, state.metrics, Deadlines.of(state.settings, websocket.scope),
                                lambda: drain is not None and drain.draining, state.failed_turns, state.parking)
        if drain is None:
            await connection.run()
            return
        drain.cut_hooks.add(connection.before_cut)
        try:
            await connection.run()
        finally:
            drain.cut_hooks.discard(connection.before_cut)

    serve.__name__ = f"usp_{mode}"
    return serve


SPEECH_SDK = {
    "tags": [oa.RECOGNITION],
    "summary": "WebSocket: the Azure Speech SDK's protocol",
    "description": "What an unmodified Speech SDK app speaks: `SpeechConfig(host=\"ws://<this server>\")` (or `endpoint=` this URL), "
    "then `recognize_once()` (interactive) or continuous recognition (conversation, dictation), with intermediate results. "
    "Audio: 16-bit PCM at any rate and channel count. A refused key is answered before the upgrade, as HTTP. "
    f"[How to call it]({oa.HOME_SPEECH_SDK}); the protocol's messages are in `x-websocket`.",
    "parameters": [
        oa.MODE,
        {**oa.LANGUAGE, "schema": {"type": "string", "default": "en-US"}, "description": "the locale (the SDK always sends it)"},
        oa.FORMAT, oa.PROFANITY, oa.WORD_TIMESTAMPS, oa.WORD_CONFIDENCE,
        {"name": "initialSilenceTimeoutMs", "in": "query", "schema": {"type": "integer", "default": 5000},
         "description": "interactive mode: silence before the turn ends with `InitialSilenceTimeout`"},
    ],
    "security": oa.KEY_SECURITY,
    "responses": {"101": oa.SWITCHING, **oa.KEY_ERRORS, "426": oa.UPGRADE_REQUIRED},
    "x-websocket": {
        "protocol": "the Speech SDK's (USP); subprotocol `USP` when the client offers it",
        "clientMessages": {
            "speech.config": "text: the SDK's context (system, OS)",
            "speech.context": "text, per turn: starts a turn under a new `X-RequestId` (its first audio frame does too)",
            "audio": "binary, header `Path: audio` and the turn's `X-RequestId`: first a RIFF/WAVE header (16-bit PCM), "
            "then PCM chunks; an empty chunk ends the turn's audio",
        },
        "serverMessages": {
            "turn.start": "a turn has started",
            "speech.startDetected": "`{Offset}`: speech begins",
            "speech.hypothesis": "`{Text, Offset, Duration}`: the words so far, while audio arrives",
            "speech.endDetected": "`{Offset}`: the utterance ended",
            "speech.phrase": "`{RecognitionStatus, DisplayText, Offset, Duration, NBest}` as the REST answer; `RecognitionStatus` "
            "`InitialSilenceTimeout`, `EndOfDictation`, or an error (`BadRequest`, `TooManyRequests`, `ServiceUnavailable`, `Error`) "
            "with a `Message`, after which the connection closes with the failure's code",
            "turn.end": "the turn is over: interactive after its first phrase, the others after their audio",
        },
        "closeCodes": {
            "1000": "the client closed; or the server closed a connection no turn used, with the reason: it sent nothing "
            "for `ConnectionIdleSeconds` (between recognitions), or the server is draining (the SDK connects again at its "
            "next recognition)",
            "1002": "protocol error: a frame without `X-RequestId`, or one reused",
            "1007": "invalid data: a mode other than these three, a language no model serves, audio that is not 16-bit PCM, a malformed frame or value; "
            "also a turn with no audio for `AudioIdleSeconds` (after the phrases of its audio): the close alone answers "
            "(no `speech.phrase`), which the SDK reports at once as `BadRequest` with the reason",
            "1008": "a turn longer than `MaxSessionSeconds`, after its `BadRequest`: the SDK connects again and goes on",
            "1011": "recognition failed (a server error)",
            "1012": "the server restarts: its drain ran out of time (`Drain:Seconds`) with the turn still running "
            "(after the phrase it held for the segmentation silence, if any)",
            "1013": "try again later: every decoder is busy (after a `TooManyRequests` turn), the server keeps "
            "`MaxConnections` open already (after a `TooManyRequests` turn, as soon as the request begins), or it is "
            "draining (shutting down; after a `ServiceUnavailable` turn, as soon as the request begins), connect again "
            "to reach another",
        },
        "offsets": "100-ns ticks from the start of the stream, continued across turns",
    },
}


def not_served(what: str):
    """The WebSocket handler of a Speech SDK service not served here: the upgrade is taken, then closed with 1007 and
    the reason once the client has begun its request (:func:`.refusal.refuse`), which the SDK reports at once as
    ``BadRequest`` naming the service (a refused upgrade's body is not shown to the app, and any other close code
    makes it connect again first)."""

    async def serve(websocket: WebSocket) -> None:
        failure = unserved_service(what)
        observe(failure, "usp", websocket.app.state.metrics)  # as a recognition path of no mode (the service named in its log line)
        offered = websocket.scope.get("subprotocols") or []
        await websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
        await refuse(websocket.receive, websocket.send, failure, websocket.app.state.drain.refusals)

    return serve


NOT_SERVED_DOC = {
    "tags": [oa.RECOGNITION],
    "summary": "WebSocket: a Speech SDK service not served here",
    "description": "Where the Speech SDK connects for translation (`TranslationRecognizer`), conversation transcription "
    "(`ConversationTranscriber`) and synthesis (`SpeechSynthesizer`), which this server does not serve (nor does Azure's "
    "speech-to-text container). The upgrade is taken and closed with 1007 and a reason naming the service as soon as the "
    f"request begins: the SDK reports it as `BadRequest`. [How to call the recognizer]({oa.HOME_SPEECH_SDK}).",
    "parameters": [],
    "responses": {"101": oa.SWITCHING, "426": oa.UPGRADE_REQUIRED},
    "x-websocket": {
        "protocol": "the Speech SDK's (USP); subprotocol `USP` when the client offers it",
        "clientMessages": {"(any)": "read until one begins the request (`speech.context`, `synthesis.context`, `ssml` or "
                           "audio), at most 5 s, then the connection is closed"},
        "serverMessages": {"(none)": "only the close"},
        "closeCodes": {"1007": "the service is not served, with its name in the reason"},
    },
}


async def unknown_mode(websocket: WebSocket) -> None:
    """A recognition path of no mode (``fromEndpoint`` with a typing error): taken, and closed with 1007 and the modes
    served once the request begins (:func:`.refusal.refuse`), which both SDKs report at once as a bad request with
    that reason. Without it no route matched and the client got a bare 403, which the Python SDK reports as
    ``AuthenticationFailure`` ("Please check subscription information"), as if its key were wrong."""
    mode = websocket.path_params["mode"]
    failure = Failure(f"no recognition mode {mode[:40]!r}; use one of {', '.join(c.RECOGNITION_MODES)}", NOT_FOUND)
    observe(failure, "usp", websocket.app.state.metrics)
    offered = websocket.scope.get("subprotocols") or []
    await websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
    await refuse(websocket.receive, websocket.send, failure, websocket.app.state.drain.refusals)


def routes() -> list[BaseRoute]:
    """WebSocket routes for ``interactive``, ``conversation`` and ``dictation`` (and their 426 for a plain GET), for
    any other mode (:func:`unknown_mode`), and for the Speech SDK's services not served here (``contract.NOT_SERVED_PATHS``)."""
    return [
        route
        for mode in c.RECOGNITION_MODES
        for route in oa.websocket_routes(c.RECOGNITION_PATH_TEMPLATE.format(mode=mode), endpoint(mode), SPEECH_SDK,
                                         documented_at=c.RECOGNITION_PATH_TEMPLATE, name=f"usp-{mode}")
    ] + [oa.describe(WebSocketRoute(c.RECOGNITION_PATH_TEMPLATE.replace("{mode}", "{mode:str}"), unknown_mode, name="usp-unknown-mode"),
                     path=c.RECOGNITION_PATH_TEMPLATE, websocket=SPEECH_SDK)] + [
        route
        for path, what in c.NOT_SERVED_PATHS.items()
        for route in oa.websocket_routes(path, not_served(what), NOT_SERVED_DOC, name=f"not-served-{path.strip('/').replace('/', '-')}")
    ]
