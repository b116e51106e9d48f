"""The API-key check every recognition route applies (Azure's contract), and where a key may be.

A key travels in the ``Ocp-Apim-Subscription-Key`` header or as
``Authorization: Bearer <key>``, as Azure's REST and Speech SDK clients send it.
On WebSocket upgrades it may also be in the URL's query: a browser cannot set
headers on a WebSocket, so the Speech SDK for JavaScript sends its headers as
query parameters (``?Ocp-Apim-Subscription-Key=…`` or
``?Authorization=Bearer%20…``). A plain HTTP request with the key only in its
URL is refused: URLs are written to access logs, of proxies and ingresses too.
This server never logs a key (:class:`~speech_recognizer.logs.SecretsRedacted`).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping

from . import contract as c
from .errors import AUTH_MISSING, AUTH_WRONG, Failure

#: Query parameters a key may come in on a WebSocket upgrade (compared case-insensitively).
QUERY_KEY_NAMES = (c.KEY_HEADER.lower(), "subscription-key")
#: The query parameter a token may come in on a WebSocket upgrade, as ``Bearer <token>``.
QUERY_AUTHORIZATION = "authorization"


class AuthError(Failure):
    """The request's key is missing (:data:`~speech_recognizer.errors.AUTH_MISSING`, 403) or wrong (401)."""

    kind = AUTH_WRONG


def _bearer(value: str) -> str | None:
    return value[7:].strip() or None if value.lower().startswith("bearer ") else None


def header_key(headers: Mapping[str, str]) -> str | None:
    """The key in ``Ocp-Apim-Subscription-Key`` or ``Authorization: Bearer``.

    Raises :class:`AuthError` (401) when that header comes more than once with different keys: which one counts would
    be an accident of order (a proxy in between may keep either), so neither does. ``headers`` must give every line
    in ``items()``, as Starlette's and aiohttp's do."""
    keys = _values(headers, c.KEY_HEADER)
    where = c.KEY_HEADER
    if not keys:
        keys = [token for value in _values(headers, "Authorization") if (token := _bearer(value))]
        where = "Authorization: Bearer"
    return _one(keys, where)


def _one(keys: list[str], where: str) -> str | None:
    """The one key of ``keys`` (None when there is none); :class:`AuthError` when they differ."""
    if len(set(keys)) > 1:
        raise AuthError(f"ambiguous key: {where} came {len(keys)} times with {len(set(keys))} different keys; send one")
    return keys[0] if keys else None


def _values(headers: Mapping[str, str], name: str) -> list[str]:
    """Every non-empty value of the header ``name``, stripped, in order."""
    return [value.strip() for key, value in headers.items() if key.lower() == name.lower() and value.strip()]


def query_keys(query: Iterable[tuple[str, str]]) -> list[str]:
    """Every key in the query's parameters (each one, in order: ``multi_items()``): ``Ocp-Apim-Subscription-Key``,
    ``subscription-key`` or ``Authorization=Bearer …``."""
    keys = []
    for name, value in query:
        lower = name.lower()
        if lower in QUERY_KEY_NAMES and value.strip():
            keys.append(value.strip())
        elif lower == QUERY_AUTHORIZATION and (token := _bearer(value)):
            keys.append(token)
    return keys


def check_key(expected: str | None, headers: Mapping[str, str], query: Iterable[tuple[str, str]] = (), *, websocket: bool) -> None:
    """Raise :class:`AuthError` unless ``expected`` is unset or the request carries it.

    ``websocket``: the request is a WebSocket upgrade, whose key may be in ``query`` (its parameters, every one:
    ``multi_items()``), once (more than one key there, different, is ambiguous as in a header: 401); on plain HTTP a
    key found only in the query is refused (403) with where to put it.
    """
    if not expected:
        return
    key = header_key(headers)
    if key is None and (in_query := query_keys(query)):
        if not websocket:
            raise AuthError(
                f"a key in the URL is not accepted on this route (URLs end up in logs): send it in the "
                f"{c.KEY_HEADER} header or as Authorization: Bearer",
                AUTH_MISSING,
            )
        key = _one(in_query, "the URL's key")
    if key is None:
        raise AuthError(f"missing key: send it in the {c.KEY_HEADER} header or as Authorization: Bearer", AUTH_MISSING)
    if not hmac.compare_digest(key.encode(), expected.encode()):
        raise AuthError("wrong key: the key does not match this server's ApiKey")
