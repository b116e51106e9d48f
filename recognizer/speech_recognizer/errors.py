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
    429: "TooManyRequests",
    500: "InternalServerError",
    503: "ServiceUnavailable",
}


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """A JSON error with a reason a person can act on."""
    return JSONResponse({"error": {"code": _CODES.get(status, "Error"), "message": message}}, status, headers=headers)
