"""What each failure of the gateway becomes: HTTP status, WebSocket close code and reason, log level.

One table, as the recognizer keeps one: a refusal is answered the same way on every route, and
in the recognizer's own shapes, built by the recognizer's own code (:mod:`speech_recognizer.errors`,
which is why the operator image carries Starlette): ``{"error": {"code", "message"}}`` with the
status on REST, a close code with the reason cut to a close frame's 123 bytes on a WebSocket. An
unknown locale is answered exactly as the recognizer answers it: 400, close 1007
(``Unsupported language: …`` for the Speech SDK, which reports ``CancellationErrorCode.BadRequest``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiohttp import web

from speech_recognizer.errors import close_reason, error_response

log = logging.getLogger("speech_operator.gateway")


@dataclass(frozen=True)
class Kind:
    """How one kind of failure is answered."""

    #: The ``reason`` label of ``speech_gateway_failures_total`` and the tag of its log line.
    name: str
    http: int
    close: int
    level: int
    #: ``Retry-After`` seconds, when trying again later may work.
    retry_after: int | None = None


UNKNOWN_LOCALE = Kind("unknown_locale", 400, 1007, logging.INFO)
NOT_FOUND = Kind("not_found", 404, 1008, logging.INFO)
#: No recognizer of the locale took the connection (its Service has no ready pod, or none answers).
UNAVAILABLE = Kind("backend_unavailable", 503, 1013, logging.WARNING, retry_after=5)
#: The recognizer's connection broke before it answered or closed (its pod stopped or crashed).
BACKEND_LOST = Kind("backend_lost", 502, 1011, logging.WARNING)

class Failure(Exception):
    """A request the gateway does not forward, or a stream it cannot carry on, and why."""

    def __init__(self, message: str, kind: Kind) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind


def http_response(failure: Failure) -> web.Response:
    """The REST answer: the recognizer's error shape, ``Retry-After`` when the kind has one."""
    kind = failure.kind
    headers = {"Retry-After": str(kind.retry_after)} if kind.retry_after is not None else None
    answer = error_response(kind.http, failure.message, headers)
    return web.Response(status=answer.status_code, body=answer.body,
                        headers={k: v for k, v in answer.headers.items() if k.lower() != "content-length"})


def close_args(failure: Failure) -> tuple[int, bytes]:
    """``(code, reason)`` of the close frame that answers ``failure`` on a WebSocket."""
    return failure.kind.close, close_reason(failure.message).encode()


def report(failure: Failure, route: str, locale: str | None) -> None:
    """One log line at the kind's level."""
    log.log(failure.kind.level, "%s %s: %s: %s", route, locale or "-", failure.kind.name, failure.message)
