"""One failure policy: what every refusal or error becomes, on every protocol.

Adapters raise a :class:`Failure` that names its :class:`Kind` (bad audio, busy,
idle, ...); this module answers it, the same way on every route:

- REST: :func:`http_response` — the kind's HTTP status, ``{"error": {"code", "message"}}``,
  ``Retry-After`` when the kind has one, and the kind's name in :data:`FAILURE_HEADER` (:func:`failure_headers`);
- WebSocket (/vosk, Speech SDK): :func:`close_args` — the kind's close code and the message (on /vosk a fault's led by
  its kind's name, :func:`named`) cut to a close frame's 123 bytes of UTF-8 (:func:`close_reason`, never inside a
  character); one refused before it starts names its kind in its 101 too (:func:`accept_headers`);
- Speech SDK turn: :func:`usp_phrase` — a ``speech.phrase`` (its kind named in :func:`usp_headers`) whose
  ``RecognitionStatus`` the SDK reports as ``CancellationDetails`` (``BadRequest``, ``TooManyRequests``, ``ServiceUnavailable``,
  ``Error`` become those error codes; the message is in its error details); the SDK for JavaScript,
  which words those statuses in fixed words of its own, is told them by a close alone that carries the message
  (:data:`JAVASCRIPT_CLOSES`, :func:`usp_status`), and the other SDKs a capacity refusal (``TooManyRequests``) by a
  close 4429 alone, after which they do not ask again (:data:`CORE_CLOSES`);
- OpenAI-compatible route: :func:`openai_response` — the same status and ``Retry-After`` in the error
  shape OpenAI's clients read (``{"error": {"message", "type", "param", "code"}}``);
- :func:`observe` — ``speech_requests_total{status}`` and ``speech_refused_total{reason}``, and
  one log line at the kind's level (a traceback only for :data:`INTERNAL`, a bug of ours).

A new kind of failure is one line in the table below. Any other exception an adapter
meets becomes a failure through :func:`classify` (a client that left, or :data:`INTERNAL`).
"""

from __future__ import annotations

import http
import logging
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse
from starlette.websockets import WebSocketDisconnect

from .frame_budget import CONTROL_BURST, CONTROL_PER_SECOND, HELD_PER_SECOND, MAX_FRAGMENTS

log = logging.getLogger("speech_recognizer.failures")

DEBUG, INFO, WARNING, ERROR = logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR

#: What a kind says of the service to the people who run it (:attr:`Kind.alert`; the alerts of
#: ``speech-operator alerts`` are built from it): work refused for want of capacity (more pods or
#: decoders would have taken it) ...
CAPACITY = "capacity"
#: ... or work the service failed (a bug, a model it cannot load, a recognizer that went away).
FAULT = "fault"


@dataclass(frozen=True)
class Kind:
    """How one kind of failure is answered on every protocol."""

    #: The ``reason`` label of ``speech_refused_total`` and the tag of its log line.
    name: str
    #: HTTP status (REST; the Speech SDK's upgrade for keys; ``speech_requests_total{status}`` everywhere).
    http: int
    #: WebSocket close code (RFC 6455: 1000 normal, 1002 protocol, 1007 bad data, 1008 policy, 1009 too big, 1011 our error,
    #: 1013 try later).
    close: int
    #: ``RecognitionStatus`` of the ``speech.phrase`` that ends a Speech SDK turn; None: no such phrase (a key is
    #: refused at the upgrade with the HTTP status, which the SDK reports as ``AuthenticationFailure``; else the
    #: close answers).
    usp: str | None
    #: Level of its one log line.
    level: int
    #: Seconds a client should wait before trying again (``Retry-After``), when it may.
    retry_after: int | None = None
    #: What it means, for the docs.
    doc: str = ""
    #: The close code on the Speech SDK route, when not :attr:`close` (with ``usp`` None: the close alone answers).
    #: The SDK reports a close 1007 at once as ``BadRequest`` with the reason (1002 and 4000 as ``ConnectionFailure``,
    #: 4429 as ``TooManyRequests``: :data:`CORE_CLOSES`); after any other close or error status it connects again and
    #: sends its unacknowledged audio again, and with a stream that has stopped it then waits.
    usp_close: int | None = None
    #: :data:`CAPACITY` or :data:`FAULT` when the people who run the service should hear of it (an alert);
    #: None when it is the client's doing or normal operation (a bad request, a drain, an idle client).
    alert: str | None = None
    #: Whether a Speech SDK turn can end with it (its :attr:`usp` phrase, or the close that tells the SDK for JavaScript
    #: in its stead): False for one that fails an HTTP request only (before any WebSocket; a WebSocket message over its
    #: limit is the library's close 1009) or a decoder the Speech SDK route never runs, and where nothing more reaches
    #: the client (it left, or its connection is reset).
    usp_turn: bool = True


#: The close the SDK for JavaScript reports at once as ``ConnectionFailure`` with its reason ("<reason> websocket error
#: code: 4000", ``ServiceRecognizerBase``'s ``ConnectionClosedEvent`` handler: it reports a close's reason only after
#: 1002, 1003, 1007 and 4000, and 4000, a private code, says nothing else), the error its apps connect again after.
CONNECTION_FAILURE_CLOSE = 4000

#: The close that tells the SDK for JavaScript a failed turn in its stead, by the turn's ``RecognitionStatus``
#: (:func:`usp_status`). That SDK (1.52.0) words a failed ``speech.phrase`` from its status alone (``EnumTranslation``),
#: the ``Message`` dropped: ``BadRequest`` "Invalid parameter or unsupported audio format in the request.", ``Error``
#: "The speech service encountered an internal error and could not continue." (``ServiceError``), and
#: ``ServiceUnavailable``, which it knows not, in those words with ``NoError``. A close 1007 or 4000 it reports at once
#: with the reason, canceled: 1007 as ``BadRequestParameters``, the code the turn gives, for a bad request; 4000 as
#: ``ConnectionFailure`` for the service's failures (a drain, a model that cannot be loaded, a bug), after which apps
#: connect again. ``TooManyRequests`` keeps its turn: that error code, which apps back off on, in words that say what
#: (a close 4429, :data:`CORE_CLOSES`, it would take as a lost connection, and connect again). The Python SDK is told
#: the turn, but for ``TooManyRequests`` (:data:`CORE_CLOSES`).
#:
#: After a close, that SDK's reading connects again at once when the server had sent it anything on that connection
#: (``ServiceRecognizerBase.receiveMessage`` and ``reconnect``), canceled or not, and sends its request again without
#: audio; else it keeps the closed connection, and the recognizer's later recognitions fail ("Cannot send on connection
#: that is in Disconnected state"). So a close that alone tells that SDK a failure (or ends its connection) comes after
#: a message that ends its reading (:func:`~speech_recognizer.usp.frames.javascript_reading_end`), in recognize-once
#: and continuous recognition alike: the close cancels the recognition with the reason, and the recognizer's next
#: recognition connects anew. In continuous recognition a turn that began ends first (``turn.end``, no phrase:
#: :meth:`~speech_recognizer.usp.connection.Turn.fail`): the SDK begins its next turn, which the close cancels.
JAVASCRIPT_CLOSES: Mapping[str, int] = {"BadRequest": 1007, "Error": CONNECTION_FAILURE_CLOSE,
                                         "ServiceUnavailable": CONNECTION_FAILURE_CLOSE}

#: The close the Speech SDK's core (the SDK for Python, and for C#, Java, C++ on the same core) reports at once as
#: ``TooManyRequests`` with its reason ("Connection was closed by the remote host. Error code: 4429. Error details:
#: <reason>"), and asks no more after: a private code, as 4000 is the SDK for JavaScript's.
TOO_MANY_REQUESTS_CLOSE = 4429

#: The close that tells the Speech SDK's core (every SDK but JavaScript's) a failed turn in its stead, by the turn's
#: ``RecognitionStatus`` (:func:`usp_status`). After a ``speech.phrase`` of any failed status, whatever close follows,
#: that core connects again and sends its request and audio again, a few times, before it reports the failure; so it
#: does after an upgrade refused 429 or 503 and after any close but four: 1002 and 4000 (``ConnectionFailure``), 1007
#: (``BadRequest``) and 4429 (``TooManyRequests``), each reported at once with the reason. A capacity refusal
#: (``TooManyRequests``: every decoder busy, ``MaxConnections``) is a close 4429 alone, so that one recognition is one
#: stream when the service is short of capacity, not several. No close keeps ``ServiceUnavailable`` (a drain, a model
#: that cannot be loaded): its phrase stays, and the core asks again (a drained pod's client reaches another).
CORE_CLOSES: Mapping[str, int] = {"TooManyRequests": TOO_MANY_REQUESTS_CLOSE}

#: The ``RecognitionStatus`` of the failures of the service's own (a drain, a model that cannot be loaded, a bug) whose
#: turn the Speech SDK's core asks again for, no close keeping them (:data:`CORE_CLOSES`): on a new connection, a few
#: times, each new turn's ``speech.context`` naming the one that failed (``continuation.previousServiceTag``), before it
#: reports the failure. A turn so asked again that fails with the same kind is the same app recognition: logged at
#: DEBUG, not counted again (:func:`observe`'s ``again``), so that one failed recognition is one fault, not several.
ASKED_AGAIN: frozenset[str] = frozenset({"ServiceUnavailable", "Error"})

# ---- the policy: one line per kind ------------------------------------------------------------------
# A bad request closed with 1007 is answered on the Speech SDK route by the close alone, as Azure answers it: both SDKs
# report a close 1007 at once as a bad request with its reason, but the JavaScript SDK reads a speech.phrase
# BadRequest as its own fixed words ("Invalid parameter or unsupported audio format in the request.") and drops the
# reason that follows in the close.
BAD_VALUE = Kind("bad_value", 400, 1007, None, INFO, doc="a parameter, message or frame the server cannot accept", usp_close=1007)
BAD_AUDIO = Kind("bad_audio", 400, 1007, None, INFO, doc="audio that cannot be decoded", usp_close=1007)
UNSUPPORTED_MEDIA = Kind("unsupported_media", 415, 1007, None, INFO, usp_close=1007,
                      doc="an audio encoding or content type not served, or a media file of more tracks than served")
UNKNOWN_LOCALE = Kind("unknown_locale", 400, 1007, None, INFO, doc="a language no model serves", usp_close=1007)
NOT_FOUND = Kind("not_found", 404, 1008, None, INFO, doc="no such route or mode", usp_close=1007)
NOT_SERVED = Kind("not_served", 400, 1007, None, INFO, usp_close=1007,
                  doc="a Speech SDK service this server does not serve: translation, conversation transcription, synthesis, "
                      "language identification among several languages")
PROTOCOL_ERROR = Kind("protocol_error", 400, 1002, "BadRequest", INFO, doc="messages out of order, a missing or reused request id")
TOO_LARGE = Kind("too_large", 413, 1009, "BadRequest", INFO, doc="a body or audio over its limit (MaxAudioSeconds)", usp_turn=False)
HEADER_TOO_LARGE = Kind("header_too_large", 431, 1009, "BadRequest", INFO, doc="request headers over their limit", usp_turn=False)
UPLOAD_TIMEOUT = Kind("upload_timeout", 408, 1008, "BadRequest", INFO, doc="a request or its body that did not arrive in time", usp_turn=False)
MALFORMED_REQUEST = Kind("malformed_request", 400, 1002, "BadRequest", INFO, usp_turn=False,
                         doc="a request that is not HTTP/1.1 (its request line, a header, its length or a chunk), with the parser's reason")
AUTH_MISSING = Kind("auth_missing", 403, 1008, None, INFO, doc="ApiKey is set and the request carries no key")
AUTH_WRONG = Kind("auth_wrong", 401, 1008, None, INFO, doc="the request's key is not ApiKey, or its key header (or the URL) came with different keys")
IDLE = Kind("idle_timeout", 408, 1008, None, INFO, doc="no audio for AudioIdleSeconds: the decoder is given back", usp_close=1007)
CONTINUATION_LOST = Kind("continuation_lost", 410, 1008, None, INFO, usp_close=CONNECTION_FAILURE_CLOSE,
                         doc="a Speech SDK for JavaScript continuation of a turn cut after its end of audio, which another "
                             "server had (its token says no audio will come): the phrases after the cut are lost")
CONNECTION_IDLE = Kind("connection_idle", 408, 1000, None, DEBUG, usp_close=1000,
                       doc="a recognition WebSocket with no stream sent nothing for ConnectionIdleSeconds (normal operation)")
SESSION_TOO_LONG = Kind("session_too_long", 413, 1008, "BadRequest", INFO, doc="a session open longer than MaxSessionSeconds")
NOT_READING = Kind("not_reading", 408, 1008, "Error", INFO, usp_turn=False,
                  doc="a WebSocket client that took in none of its replies for AudioIdleSeconds: its decoder is given back and "
                      "its connection reset (nothing more reaches it)")
FRAME_FLOOD = Kind("frame_flood", 400, 1008, "Error", INFO, usp_turn=False,
                  doc=f"a WebSocket client that sent pings or pongs past {CONTROL_BURST} at once and {CONTROL_PER_SECOND:g} a "
                      f"second beyond ({HELD_PER_SECOND:g} a second while the server held its reading; pongs to the server's pings aside), or a message in more than {MAX_FRAGMENTS} fragments: "
                      f"closed, nothing it sends after read")
BUSY = Kind("busy", 503, 1013, "TooManyRequests", INFO, 1, doc="every decoder is in use (DecoderMaxCount)", alert=CAPACITY)
# Refused before a Speech SDK turn runs (MaxConnections, a drain): the turn fails with the kind's status once the request
# begins (usp/refusal.py), then the close. TooManyRequests the JavaScript SDK is told by the turn (it has fixed words of
# its own for it) and the Python SDK by a close 4429 alone (CORE_CLOSES: that code and the reason, asked once);
# ServiceUnavailable the JavaScript SDK by a close alone (JAVASCRIPT_CLOSES: ConnectionFailure with the reason) and the
# Python SDK by the turn (that code and the reason, after it asked again a few times).
DRAINING = Kind("draining", 503, 1013, "ServiceUnavailable", DEBUG, 1, doc="the server is shutting down and takes no new work")
TOO_MANY_CONNECTIONS = Kind("too_many_connections", 503, 1013, "TooManyRequests", DEBUG, 1,
                            doc="the server keeps MaxConnections WebSocket connections, or Http:MaxConnections HTTP connections none of "
                                "them idle, open already (its log says so once per 10 s; probes and scrapes are still answered)",
                            alert=CAPACITY)
MODEL_UNAVAILABLE = Kind("model_unavailable", 503, 1013, "ServiceUnavailable", WARNING, 5, doc="the locale's model cannot be loaded now",
                         alert=FAULT)
DECODER_FAILED = Kind("decoder_failed", 502, 1011, "Error", WARNING, alert=FAULT, usp_turn=False,
                      doc="FFmpeg's decoder of a WebM, MP4, raw AAC, AMR or MPEG-PS (a process of its own) crashed on it, or passed its limits of "
                          "CPU time, memory or time (stuck: no block and no CPU used for 30 s; or waited on 10 times its CPU time in all); "
                          "the server serves on (its stderr is logged)")
CLIENT_GONE = Kind("client_gone", 499, 1001, "Error", DEBUG, doc="the client left before its answer (nothing is sent)", usp_turn=False)
INTERNAL = Kind("internal", 500, 1011, "Error", ERROR, doc="a bug of the server (logged with its traceback)", alert=FAULT)


def asked_again(kind: Kind) -> bool:
    """Whether a Speech SDK turn failed with ``kind`` is one the SDK's core asks again for, each repeat the same app
    recognition (logged at DEBUG, not counted again: :func:`observe`'s ``again``; said to a proxy in front:
    :data:`ASKED_AGAIN_HEADER`): a failure of the service's own (:data:`ASKED_AGAIN`), or a protocol error, most likely
    a message garbled on its way (kept a turn that fails ``BadRequest``, not a close 1007, which the core would report at
    once: a one-off one is recovered by the repeat; one garbled on every connection is one failure, not five). Not a
    stream cut at ``MaxSessionSeconds``, whose repeat goes on from its last phrase: each cut is counted."""
    return kind.usp in ASKED_AGAIN or kind is PROTOCOL_ERROR

_HTTP_CODES = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    408: "RequestTimeout",
    410: "Gone",
    413: "PayloadTooLarge",
    415: "UnsupportedMediaType",
    426: "UpgradeRequired",
    429: "TooManyRequests",
    431: "RequestHeaderFieldsTooLarge",
    499: "ClientClosedRequest",
    500: "InternalServerError",
    502: "BadGateway",
    503: "ServiceUnavailable",
}


class Failure(Exception):
    """A request the server will not (or can no longer) serve, and why; :attr:`kind` says how it is answered.

    Subclasses fix a default kind (``Busy`` is :data:`BUSY`); any may be raised with
    another: ``AudioError("...", TOO_LARGE)``.
    """

    kind: Kind = INTERNAL

    def __init__(self, message: str, kind: Kind | None = None, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if kind is not None:
            self.kind = kind
        self.retry_after = self.kind.retry_after if retry_after is None else retry_after

    @property
    def status(self) -> int:
        """The HTTP status it is answered with."""
        return self.kind.http

    @property
    def reason(self) -> str:
        return self.message


def not_reading(seconds: float, unsent: int) -> Failure:
    """The :data:`NOT_READING` failure of a WebSocket client that took in none of its replies for ``seconds``
    (``AudioIdleSeconds``), ``unsent`` bytes waiting: its connection reset."""
    return Failure(f"the client took in none of its replies for {seconds:g} s (AudioIdleSeconds), "
                   f"{unsent} bytes waiting unsent: its connection was reset", NOT_READING)


def kinds(namespace: Mapping[str, object]) -> list[Kind]:
    """The failure kinds a module's namespace (``vars(module)``) declares or imports, in their order: its table."""
    return [k for k in namespace.values() if isinstance(k, Kind)]


def unserved_service(what: str) -> Failure:
    """The refusal of a Speech SDK service this server does not serve (``what``: its name and the SDK's class)."""
    return Failure(f"{what} is not served here: this server recognizes speech (SpeechRecognizer)", NOT_SERVED)


class BadValue(Failure, ValueError):
    """A value a client sent that the server cannot take (:data:`BAD_VALUE`): the message says which and why."""

    kind = BAD_VALUE


#: The key of a request's ASGI scope ``extensions`` under which the server's HTTP protocol leaves the :class:`Failure`
#: it refused the request's body with (a body that paused or came past its deadline, a bad chunk:
#: :class:`~speech_recognizer.http_limits.LimitedHttpTools`), answered, counted and logged there (route ``http``). The
#: request's route then hears its client gone (its read of the body a disconnect): that is the protocol's refusal, not
#: a client that left, and is not counted again (:func:`refused_by_server`, :func:`settle`'s ``scope``).
REFUSED_BODY = "speech.refused_body"


def refused_by_server(scope: Mapping[str, Any] | None) -> Failure | None:
    """The failure the server's HTTP protocol refused the body of the request of ``scope`` with (:data:`REFUSED_BODY`),
    counted there; None when it refused none."""
    return scope.get("extensions", {}).get(REFUSED_BODY) if scope is not None else None


def classify(exc: BaseException, scope: Mapping[str, Any] | None = None) -> Failure:
    """Any exception as a failure: itself, a client that left, or :data:`INTERNAL` (with the cause kept). A client
    gone from the request of ``scope`` whose body the server's protocol refused is that refusal
    (:func:`refused_by_server`)."""
    if isinstance(exc, Failure):
        failure = exc
    elif isinstance(exc, (ClientDisconnect, WebSocketDisconnect, ConnectionError)):
        failure = Failure("the client left", CLIENT_GONE)
    else:
        failure = Failure(f"internal error ({type(exc).__name__}); the server logged the details", INTERNAL)
        failure.__cause__ = exc
    refused = refused_by_server(scope) if failure.kind is CLIENT_GONE else None
    return failure if refused is None else refused


# ---- the answers ------------------------------------------------------------------------------------


#: The header of every failure's HTTP answer that names its kind (``busy``, ``draining``, ``model_unavailable``: the
#: ``reason`` of ``speech_refused_total``): what a proxy in front (the gateway) tells apart, where a status says less
#: (a 503 is a busy server, a drain or a model that cannot be loaded).
FAILURE_HEADER = "X-Speech-Failure"
#: A header of the Speech SDK message that fails a turn (:func:`usp_headers`) when that turn is the SDK asking again for
#: one that failed the same way (:func:`asked_again`), which was counted: a proxy in front counts the app's recognition
#: once, as the server does.
ASKED_AGAIN_HEADER = "X-Speech-Asked-Again"


def failure_headers(failure: Failure) -> dict[str, str]:
    """The headers of ``failure``'s HTTP answer: its kind's name (:data:`FAILURE_HEADER`), and ``Retry-After`` when
    the kind has one."""
    headers = {FAILURE_HEADER: failure.kind.name}
    if failure.retry_after is not None:
        headers["Retry-After"] = str(failure.retry_after)
    return headers


def accept_headers(failure: Failure) -> list[tuple[bytes, bytes]]:
    """The headers (ASGI's) of the 101 of a WebSocket accepted only to be refused at once (a drain, ``MaxConnections``:
    closed with the failure's code; a close before the handshake reaches a client as a bare 403): its kind named
    (:data:`FAILURE_HEADER`), so that a proxy in front knows the stream refused from its upgrade's answer."""
    return [(FAILURE_HEADER.lower().encode(), failure.kind.name.encode())]


def usp_headers(failure: Failure, again: bool = False) -> dict[str, str]:
    """The headers of the Speech SDK message that tells ``failure`` (the ``speech.phrase`` that fails a turn, or the
    message before a close that alone tells the SDK for JavaScript: :func:`usp_status`): its kind named
    (:data:`FAILURE_HEADER`), as its HTTP answer and 101 name it, for a proxy in front (the gateway), where a
    ``RecognitionStatus`` or a close code says less (``ServiceUnavailable`` is a drain or a model that cannot be loaded);
    ``again``: the turn is the SDK asking again for one that failed so (:data:`ASKED_AGAIN_HEADER`).
    The SDKs read the headers they know and pass over the others."""
    return {FAILURE_HEADER: failure.kind.name, **({ASKED_AGAIN_HEADER: "true"} if again else {})}


def http_response(failure: Failure) -> JSONResponse:
    """The REST answer: status, ``{"error": {"code", "message"}}``, and :func:`failure_headers`."""
    return error_response(failure.kind.http, failure.message, failure_headers(failure))


def http_response_bytes(failure: Failure, *, openai: bool = False, extra: Iterable[tuple[str, str]] = ()) -> bytes:
    """:func:`http_response` (:func:`openai_response` with ``openai``) as the bytes of a whole HTTP/1.1 response
    that closes the connection, with the ``extra`` headers (a browser's CORS headers): for a server's own protocol
    code, which answers outside any application."""
    response = openai_response(failure) if openai else http_response(failure)
    status = response.status_code
    head = f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in [*response.headers.items(), *extra] if name != "connection")
    return (head + "connection: close\r\n\r\n").encode("latin-1") + bytes(response.body)


#: Longest reason made of what a client sent (:func:`one_line`), in characters.
MAX_REASON_CHARS = 200


def one_line(text: str, limit: int = MAX_REASON_CHARS) -> str:
    """``text`` fit for a reason and a log line: one line, printable characters only (others become ``?``), at most
    ``limit`` characters (cut with ``...``): for a reason that quotes what a client or a parser said."""
    cleaned = "".join(c if c.isprintable() else "?" for c in " ".join(text[: limit * 2].split()))
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."


def malformed_reason(said: str) -> str:
    """The reason a request an HTTP parser refused is given (:data:`MALFORMED_REQUEST`): the parser's words (llhttp's,
    in httptools and aiohttp), on one line and cut short, since they may quote the request."""
    said = one_line(said) or "the parser refused it"
    if "PRI/Upgrade" in said:  # llhttp's "Pause on PRI/Upgrade": the preface of HTTP/2 spoken without an upgrade
        return "HTTP/2 is not served here (only HTTP/1.1, and WebSocket upgrades from it)"
    return f"not a valid HTTP/1.1 request: {said}"


def openai_response(failure: Failure) -> JSONResponse:
    """:func:`http_response` in OpenAI's error shape (its headers too): ``code`` is the kind's name, ``type`` OpenAI's
    ``server_error`` (5xx) or ``invalid_request_error``; the openai package raises the error class of the status."""
    kind = "server_error" if failure.kind.http >= 500 else "invalid_request_error"
    body = {"error": {"message": failure.message, "type": kind, "param": None, "code": failure.kind.name}}
    return JSONResponse(body, failure.kind.http, headers=failure_headers(failure))


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """A JSON error with a reason a person can act on."""
    return JSONResponse({"error": {"code": _HTTP_CODES.get(status, "Error"), "message": message}}, status, headers=headers)


def _sdk_closes(javascript: bool) -> Mapping[str, int]:
    """The closes that tell the SDK a failed turn in its stead: the SDK for JavaScript's, or its core's."""
    return JAVASCRIPT_CLOSES if javascript else CORE_CLOSES


def usp_status(kind: Kind, *, javascript: bool = False) -> str | None:
    """The ``RecognitionStatus`` of the ``speech.phrase`` that ends a Speech SDK turn with a failure of ``kind``; None
    when the close alone answers (``javascript``: the client is the SDK for JavaScript, :data:`JAVASCRIPT_CLOSES`;
    else :data:`CORE_CLOSES`)."""
    return None if kind.usp in _sdk_closes(javascript) else kind.usp


def told_by_close(kind: Kind, *, javascript: bool = False) -> bool:
    """Whether a close alone tells the SDK a failure of ``kind`` in its ``RecognitionStatus``'s stead
    (:func:`usp_status`): the message that names its kind comes first
    (:func:`~speech_recognizer.usp.frames.javascript_reading_end`)."""
    return kind.usp is not None and usp_status(kind, javascript=javascript) is None


def close_args(failure: Failure, *, usp: bool = False, javascript: bool = False) -> tuple[int, str]:
    """``(code, reason)`` of the WebSocket close frame that answers ``failure`` (``usp``: on the Speech SDK route;
    ``javascript``: to the SDK for JavaScript; the close of :data:`JAVASCRIPT_CLOSES` or :data:`CORE_CLOSES` when the
    close alone answers, :func:`told_by_close`)."""
    kind = failure.kind
    if not usp:
        code = kind.close
    elif kind.usp and told_by_close(kind, javascript=javascript):
        code = _sdk_closes(javascript)[kind.usp]
    else:
        code = kind.usp_close or kind.close
    return code, close_reason(failure.message if usp else named(failure))


def named(failure: Failure) -> str:
    """``failure``'s message, led by its kind's name when the kind is a fault of the service (``model_unavailable: cannot
    load ...``), as a close of /vosk (or the gateway's own) says it: its code alone is a busy server's too (1013, 1011
    an internal error's), and the kind tells the people who run the service, and a proxy in front (the gateway counts the
    stream under it: :func:`named_in`), what failed. Other kinds are told by their message as it is."""
    kind = failure.kind
    if kind.alert != FAULT or failure.message.startswith(f"{kind.name}: "):
        return failure.message
    return f"{kind.name}: {failure.message}"


def named_in(reason: str) -> str | None:
    """The name of the kind a close's ``reason`` begins with (``<name>: ...``, :func:`named`; the drain's reason is so
    too), else None; whether a kind has that name and that close code is the reader's to check."""
    name, colon, _ = reason.partition(": ")
    return name if colon and name.isidentifier() else None


def usp_phrase(failure: Failure) -> dict[str, Any]:
    """The ``speech.phrase`` body that ends a Speech SDK turn with this failure (the SDK's ``CancellationDetails``)."""
    return {"RecognitionStatus": failure.kind.usp or "Error", "Offset": 0, "Duration": 0, "Message": failure.message}


#: Longest WebSocket close reason RFC 6455 allows: 125 payload bytes less the 2-byte code.
MAX_CLOSE_REASON_BYTES = 123


def close_reason(message: str, limit: int = MAX_CLOSE_REASON_BYTES) -> str:
    """``message`` cut to at most ``limit`` bytes of UTF-8, never inside a character.

    Close reasons are limited in bytes, not characters: 120 Korean characters
    are 360 bytes, which a server must not send (websockets refuses it).
    """
    encoded = message.encode("utf-8", "replace")
    if len(encoded) <= limit:
        return message
    return encoded[: limit - 3].decode("utf-8", errors="ignore") + "..."


class Counters(Protocol):
    """What :func:`observe` counts on (:class:`~speech_recognizer.metrics.Metrics`)."""

    def failed(self, route: str, status: int, reason: str, since: float | None = None) -> None: ...


#: When the request being served came (its head, :func:`time.monotonic`; set by the drain middleware for every request
#: and WebSocket): where a refusal's time runs from when its adapter gives none (:func:`observe`).
HEAD: ContextVar[float | None] = ContextVar("head", default=None)


def observe(failure: Failure, route: str, metrics: Counters | None = None, since: float | None = None, *, again: bool = False) -> None:
    """Count ``failure`` on ``route`` and log it: one line at its kind's level (a traceback for :data:`INTERNAL`);
    ``since``: the :func:`time.monotonic` its latency runs from (``speech_request_seconds``), else the request's head
    (:data:`HEAD`: a refusal before any turn or audio, at the upgrade or the head), so that every failure counted is
    timed; none outside a request (the server's own refusals of a connection's head or body, route ``http``).
    ``again``: the Speech SDK asking again for a turn that failed so (:func:`asked_again`), counted and logged at its
    kind's level already: one line at DEBUG, not counted."""
    kind = failure.kind
    if again:
        log.debug("%s: %s (the Speech SDK asking again): %s", route, kind.name, failure.message)
        return
    if metrics is not None:
        metrics.failed(route, kind.http, kind.name, since if since is not None else HEAD.get())
    cause = failure.__cause__ if kind is INTERNAL else None
    log.log(kind.level, "%s: %s: %s", route, kind.name, failure.message, exc_info=cause)


def settle(exc: BaseException, route: str, metrics: Counters | None = None, since: float | None = None, *,
           again: Kind | None = None, scope: Mapping[str, Any] | None = None) -> Failure:
    """The failure ``exc`` is (:func:`classify`, of the request of ``scope``), counted and logged (:func:`observe`, with
    ``since``; as asked again when of kind ``again``), its tracebacks then dropped (:func:`drop_tracebacks`). The
    protocol's refusal of the request's body (:func:`refused_by_server`) was counted and logged where it was refused:
    not again."""
    failure = classify(exc, scope)
    if failure is not refused_by_server(scope):
        observe(failure, route, metrics, since, again=failure.kind is again)
    drop_tracebacks(exc)
    return failure


def drop_tracebacks(exc: BaseException) -> None:
    """Drop the tracebacks of ``exc`` and of the exceptions it came from (its cause and context, theirs, ...), once
    logged: a traceback holds the frames it passed through, and a frame that holds the failure (``exc`` itself, or a
    failure whose cause is a decoder's exception) makes a cycle that kept the request's session and recognition, and
    the recognizer it had, for Python's cycle collector (minutes on a busy server)."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        link.__traceback__ = None
        link = link.__cause__ or link.__context__
