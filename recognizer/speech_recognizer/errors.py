"""Error responses in one shape: ``{"error": {"code", "message"}}`` with the right status."""

from __future__ import annotations

from starlette.responses import JSONResponse

_CODES = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    413: "PayloadTooLarge",
    415: "UnsupportedMediaType",
    426: "UpgradeRequired",
    429: "TooManyRequests",
    500: "InternalServerError",
    503: "ServiceUnavailable",
}


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """A JSON error with a reason a person can act on."""
    return JSONResponse({"error": {"code": _CODES.get(status, "Error"), "message": message}}, status, headers=headers)


#: Longest WebSocket close reason RFC 6455 allows: 125 payload bytes less the 2-byte code.
MAX_CLOSE_REASON_BYTES = 123


def close_reason(message: str, limit: int = MAX_CLOSE_REASON_BYTES) -> str:
    """``message`` cut to at most ``limit`` bytes of UTF-8, never inside a character.

    Close reasons are limited in bytes, not characters: 120 Korean characters
    are 360 bytes, which a server must not send (websockets refuses it).
    """
    encoded = message.encode("utf-8")
    if len(encoded) <= limit:
        return message
    return encoded[: limit - 3].decode("utf-8", errors="ignore") + "..."
