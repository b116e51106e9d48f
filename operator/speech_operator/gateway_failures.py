"""What each failure of the gateway becomes: the recognizer's failure policy, plus the gateway's own kinds.

A refusal is answered in the recognizer's shapes, built by the recognizer's own code
(:mod:`speech_recognizer.errors`, which is why the operator image carries Starlette):
``{"error": {"code", "message"}}`` with the kind's status and ``Retry-After`` on REST, the kind's
close code with the reason cut to a close frame's 123 bytes on a WebSocket. An unknown locale or
recognition mode is the recognizer's own kind (:data:`UNKNOWN_LOCALE`: 400, close 1007 with the
recognizer's words; the Speech SDK reports ``BadRequest``), answered on the Speech SDK's route with the
close alone, by the gateway as by the recognizer.
The kinds only a gateway meets are in the table below, in the same form.
"""

from __future__ import annotations

import logging

from aiohttp import web

from speech_recognizer import errors
from speech_recognizer.errors import CLIENT_GONE, DRAINING, MALFORMED_REQUEST, NOT_FOUND, UNKNOWN_LOCALE, Failure, Kind

log = logging.getLogger("speech_operator.gateway")

__all__ = ["BACKEND_LOST", "BACKEND_NOT_READING", "CLOSE_UNANSWERED", "CLIENT_GONE", "DRAINING", "FORMS_HELD", "HELD_AT_ZERO", "MALFORMED_REQUEST", "NOT_FOUND", "STOPPED", "STOPPED_HOLDING", "TOO_MANY_CONNECTIONS", "TOO_MANY_HELD", "UNAVAILABLE", "UNKNOWN_LOCALE", "WAKE_TIMEOUT", "Failure", "Kind",
           "BY_NAME", "KINDS", "answered_kind", "closed_kind", "usp_told", "answered_with", "close_args", "http_response", "refusal_close", "report"]

# ---- the gateway's own kinds (the recognizer's table has the rest) ---------------------------------
UNAVAILABLE = Kind("backend_unavailable", 503, 1013, "ServiceUnavailable", errors.WARNING, 5,
                   doc="no recognizer of the locale took the connection (no ready pod, or none answers)", alert=errors.FAULT)
BACKEND_LOST = Kind("backend_lost", 502, 1011, "Error", errors.WARNING,
                    doc="the recognizer's connection broke before it answered or closed (its pod stopped or failed)", alert=errors.FAULT)
# A client that takes in nothing is the recognizer's own kind, not_reading (408: the client's doing, no alert); a
# recognizer that takes in nothing of a stream's end is this one: the service's fault, which pages.
BACKEND_NOT_READING = Kind("backend_not_reading", 502, 1011, "Error", errors.WARNING, usp_turn=False,
                           doc="the recognizer took in none of the stream and sent nothing for SPEECH_GATEWAY_SEND_STALL_SECONDS "
                               "while the gateway's send to it waited (its pod is stuck: the client is closed with the reason), "
                               "or had not taken in all of the stream's last bytes (the gateway's close behind them) that long "
                               "after the gateway's close (the client closed or left, or the stop closed the stream; it decodes "
                               "slower than the audio came): its connection was reset", alert=errors.FAULT)
# A recognizer that took in all of a stream's end, the gateway's close among it, and answered no close within the bound:
# its kernel takes what its process no longer reads (a stuck pod); let go then, the service's fault, which pages.
CLOSE_UNANSWERED = Kind("backend_close_unanswered", 502, 1011, "Error", errors.WARNING, usp_turn=False,
                        doc="the recognizer had taken in all of the stream, the gateway's close too (the client closed or "
                            "left), and had not answered that close SPEECH_GATEWAY_SEND_STALL_SECONDS after it (its pod is "
                            "stuck; a busy one reads the close once it decoded what it read ahead): its connection was ended",
                        alert=errors.FAULT)
WAKE_TIMEOUT = Kind("wake_timeout", 503, 1013, "ServiceUnavailable", errors.WARNING, 10,
                    doc="the locale had no ready pod within the gateway's hold time (SPEECH_GATEWAY_HOLD_SECONDS)", alert=errors.FAULT)
HELD_AT_ZERO = Kind("held_at_zero", 503, 1013, "ServiceUnavailable", errors.INFO, 30,
                    doc="an HPA or KEDA ScaledObject that scales the locale's Deployment instead of its SpeechToText holds it "
                        "at 0 pods: refused at once, as nothing the gateway asks for wakes it (KEDA wakes it on its own "
                        "triggers, which it polls every 30 s by default); the SpeechToText is Degraded (ForeignAutoscaler)")
# too_many_held, forms_held and too_many_connections are capacity refusals (try again later), as the recognizer's own
# busy and too_many_connections: TooManyRequests, which the JavaScript SDK reports in its own clear words (Canceled,
# TooManyRequests). ServiceUnavailable, which it knows not, it is told by a close 4000 alone (ConnectionFailure with the
# reason: errors.CONNECTION_FAILURE_CLOSE); the Python SDK by the turn, but TooManyRequests by a close 4429 alone, which it
# does not retry (errors.CORE_CLOSES).
TOO_MANY_HELD = Kind("too_many_held", 503, 1013, "TooManyRequests", errors.WARNING, 5,
                     doc="the gateway already holds as many requests for starting locales as it may (SPEECH_GATEWAY_MAX_HELD)",
                     alert=errors.CAPACITY)
STOPPED = Kind("gateway_stopped", 503, 1001, "ServiceUnavailable", errors.WARNING, 5,
               doc="the gateway stopped (SIGTERM) before the stream ended or the recognizer answered, "
                   "SPEECH_GATEWAY_SHUTDOWN_SECONDS after it began")
STOPPED_HOLDING = Kind("stopped_while_held", 503, 1013, "ServiceUnavailable", errors.INFO, 1,
                       doc="the gateway stopped (SIGTERM) while the request was held for its locale to wake: answered at "
                           "once, the client tries again at another gateway pod (the wake asked for goes on)")
FORMS_HELD = Kind("forms_held", 503, 1013, "TooManyRequests", errors.WARNING, 5,
                  doc="the gateway already holds as many bytes of OpenAI forms read ahead for their language field as it may",
                  alert=errors.CAPACITY)
TOO_MANY_CONNECTIONS = Kind("too_many_connections", 503, 1013, "TooManyRequests", errors.DEBUG, 1,
                            doc="the gateway keeps SPEECH_GATEWAY_MAX_CONNECTIONS client connections open already (its log says so "
                                "once per 10 s; probes and scrapes are still answered)", alert=errors.CAPACITY)

#: Every kind a gateway answers with: the recognizer's table, then the gateway's own (in the order declared).
KINDS: tuple[Kind, ...] = tuple(dict.fromkeys([*errors.kinds(vars(errors)), *errors.kinds(globals())]))


#: Each kind of :data:`KINDS` by its name (the recognizer's :data:`~speech_recognizer.errors.FAILURE_HEADER`).
BY_NAME: dict[str, Kind] = {kind.name: kind for kind in KINDS}


def answered_kind(status: int, named: str | None = None) -> Kind | None:
    """The kind of a recognizer's answer of HTTP ``status``: the one its :data:`~speech_recognizer.errors.FAILURE_HEADER`
    ``named``, when a kind of that status has that name (a 503 is ``busy``, ``draining``, ``too_many_connections`` or
    ``model_unavailable``), else by its status alone (:func:`answered_with`: a recognizer older than the header, or a
    proxy's answer)."""
    kind = BY_NAME.get(named or "")
    return kind if kind is not None and kind.http == status else answered_with(status)


def answered_with(status: int) -> Kind | None:
    """The first kind of :data:`KINDS` answered with HTTP ``status`` (400 a bad value, 404 not found, 413 too large,
    500 internal, 503 busy, ...): what a refusal known only by its status is taken for. None for a status no kind has
    (429, or another a proxy may answer)."""
    return next((kind for kind in KINDS if kind.http == status), None)


def closed_kind(code: int, reason: str) -> Kind | None:
    """The kind of a recognizer's close of a stream it had accepted (a model it cannot load, every decoder busy at the
    first audio: :func:`~speech_recognizer.errors.close_args`): the one its reason names
    (:func:`~speech_recognizer.errors.named_in`: a fault's, the drain's), when a kind closed with ``code`` has that name,
    else the first kind of :data:`KINDS` closed with ``code`` (1013 busy, 1011 decoder_failed, 1008 not_found, 1000
    connection_idle, ...), as :func:`answered_kind` reads an HTTP answer. None for a code no kind has (1012, a private one)."""
    kind = BY_NAME.get(errors.named_in(reason) or "")
    if kind is not None and kind.close == code:
        return kind
    return next((kind for kind in KINDS if kind.close == code), None)


#: Where the headers of a recognizer's text message on the Speech SDK route end (its first blank line), and the lines
#: read there, as the recognizer writes them (:func:`~speech_recognizer.usp.frames.text_frame`): its path, and the
#: failure it tells (:func:`~speech_recognizer.errors.usp_headers`).
_HEAD_END, _PATH, _NAMED = b"\r\n\r\n", b"Path:", errors.FAILURE_HEADER.encode() + b":"
#: The line of a failing message that says its turn is the Speech SDK asking again (:func:`usp_asked_again`).
_AGAIN = errors.ASKED_AGAIN_HEADER.encode() + b":"
#: The paths of a Speech SDK turn's results: one of them (with no failure named) says the recognizer serves the stream.
_RESULTS = frozenset({b"speech.hypothesis", b"speech.fragment", b"speech.phrase"})


def usp_told(message: bytes) -> Kind | bool:
    """What a recognizer's text ``message`` on the Speech SDK route tells of the stream: the kind of the failure it
    names (:data:`~speech_recognizer.errors.FAILURE_HEADER`: the ``speech.phrase`` that fails a turn, or the message
    before a close that alone tells the SDK for JavaScript; :func:`~speech_recognizer.errors.usp_headers`), True for a
    result (``speech.hypothesis``, ``speech.fragment``, ``speech.phrase``: served), False for a message that tells
    neither (``turn.start``, ``speech.startDetected``, a ``turn.end`` of no result, a kind of no name the gateway knows).
    Only the headers are read (a result's text may say anything), with two searches, not parsed."""
    end = message.find(_HEAD_END)
    head = message if end < 0 else message[:end]
    if (at := head.find(_NAMED)) >= 0:
        return BY_NAME.get(_line(head, at + len(_NAMED)).decode("ascii", "replace"), False)
    return (at := head.find(_PATH)) >= 0 and _line(head, at + len(_PATH)) in _RESULTS


def usp_asked_again(message: bytes) -> bool:
    """Whether a recognizer's text ``message`` that names a failure (:func:`usp_told`) fails a turn that is the Speech
    SDK's core asking again for one that failed so (:data:`~speech_recognizer.errors.ASKED_AGAIN_HEADER`): that app
    recognition was counted at its first turn, by the recognizer as by the gateway."""
    end = message.find(_HEAD_END)
    return (message if end < 0 else message[:end]).find(_AGAIN) >= 0


def _line(head: bytes, start: int) -> bytes:
    """The value of the header line of ``head`` whose value begins at ``start``, without its spaces."""
    end = head.find(b"\r\n", start)
    return head[start:end if end >= 0 else len(head)].strip()


def refusal_close(status: int, message: str, retry_after: str | None = None) -> tuple[int, bytes]:
    """``(code, reason)`` of the close that answers a client the gateway accepted before the recognizer refused its
    upgrade with HTTP ``status`` (the client was held while its locale woke, and can get no status any more).

    The code is the close code of the kind answered with that status (:func:`answered_with`: 400 1007, 401/403/404
    1008, 413 1009, 500 1011, 503 1013); for a status no kind has, 1013 (try again later) when the refusal says when
    to (``retry_after``) or is 429, else 1011 for a 5xx and 1008 for a 4xx. The reason is ``message`` cut to a close
    frame's 123 bytes of UTF-8; a close has no ``Retry-After``, so its value ends the reason, kept whole."""
    kind = answered_with(status)
    if kind is not None:
        code = kind.close
    elif retry_after is not None or status == 429:
        code = 1013
    else:
        code = 1011 if status >= 500 else 1008
    suffix = f" (Retry-After: {errors.one_line(retry_after, 40)})" if retry_after is not None else ""
    reason = errors.close_reason(message, errors.MAX_CLOSE_REASON_BYTES - len(suffix.encode())) + suffix
    return code, reason.encode()


def http_response(failure: Failure, openai: bool = False) -> web.Response:
    """The REST answer, as the recognizer's :func:`speech_recognizer.errors.http_response` makes it
    (``openai``: in OpenAI's error shape, as the recognizer answers its OpenAI route)."""
    answer = errors.openai_response(failure) if openai else errors.http_response(failure)
    return web.Response(status=answer.status_code, body=answer.body,
                        headers={k: v for k, v in answer.headers.items() if k.lower() != "content-length"})


def close_args(failure: Failure) -> tuple[int, bytes]:
    """``(code, reason)`` of the close frame that answers ``failure`` on a WebSocket: its message as it is, not led by
    its kind's name as a recognizer's fault is (:func:`~speech_recognizer.errors.named`, for a proxy in front: none is
    in front of the gateway), so that its 123 bytes keep what comes first (the operator's refusal, an autoscaler's name)."""
    code, _ = errors.close_args(failure)
    return code, errors.close_reason(failure.message).encode()


def report(failure: Failure, route: str, locale: str | None) -> None:
    """One log line at the kind's level."""
    log.log(failure.kind.level, "%s %s: %s: %s", route, locale or "-", failure.kind.name, failure.message)
