"""The API-key check every recognition route applies (Azure's contract)."""

from __future__ import annotations

import hmac
from typing import Mapping

from . import contract as c


class AuthError(Exception):
    """The request's key is missing (403) or wrong (401)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def presented_key(headers: Mapping[str, str], query: Mapping[str, str] | None = None) -> str | None:
    """The key a request carries: ``Ocp-Apim-Subscription-Key``, ``Authorization: Bearer``, or the query."""
    key = headers.get(c.KEY_HEADER.lower()) or headers.get(c.KEY_HEADER)
    if key:
        return key.strip()
    auth = headers.get("authorization") or headers.get("Authorization") or ""
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    if query:
        return query.get(c.KEY_HEADER) or query.get("subscription-key") or None
    return None


def check_key(expected: str | None, headers: Mapping[str, str], query: Mapping[str, str] | None = None) -> None:
    """Raise :class:`AuthError` unless ``expected`` is unset or the request carries it."""
    if not expected:
        return
    key = presented_key(headers, query)
    if key is None:
        raise AuthError(403, f"missing key: send it in the {c.KEY_HEADER} header or as Authorization: Bearer")
    if not hmac.compare_digest(key.encode(), expected.encode()):
        raise AuthError(401, "wrong key: the key does not match this server's ApiKey")
