"""The client and scheme a trusted proxy names (``Http:TrustedProxies``), for the app and uvicorn's access log.

In place of uvicorn's ``ProxyHeadersMiddleware`` (:func:`~.serving.server_options` turns it off), so that the
recognizer names the client as the gateway's access log does (:func:`~.addresses.client`, one algorithm): uvicorn
took any text of ``X-Forwarded-For`` that is no address as the client (``unknown``, ``_hidden``, or
``x" 200 "GET /admin``, written into the access line as it came), and an empty entry (``203.0.113.7,``) as no client
at all, naming the proxy.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from .addresses import Network, client, trusted_peer

#: ``X-Forwarded-Proto`` values taken (uvicorn's), and what each is for a WebSocket.
SCHEMES = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}


class ForwardedClient:
    """Sets ``scope["client"]`` to the client a trusted peer's ``X-Forwarded-For`` names, and ``scope["scheme"]`` to its
    last ``X-Forwarded-Proto`` line (``http``, ``https``, ``ws``, ``wss``), as uvicorn did; a peer not ``trusted``
    changes neither."""

    def __init__(self, app: ASGIApp, trusted: tuple[Network, ...]) -> None:
        self.app = app
        self.trusted = trusted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        peer = scope.get("client")
        if scope["type"] in ("http", "websocket") and peer and trusted_peer(peer[0], self.trusted):
            forwarded = [value.decode("latin-1") for name, value in scope["headers"] if name == b"x-forwarded-for"]
            protos = [value.decode("latin-1").strip() for name, value in scope["headers"] if name == b"x-forwarded-proto"]
            if forwarded and (host := client(peer[0], forwarded, self.trusted)) != peer[0]:
                scope["client"] = (host, 0)
            if protos and protos[-1] in SCHEMES:
                scope["scheme"] = SCHEMES[protos[-1]] if scope["type"] == "websocket" else protos[-1]
        await self.app(scope, receive, send)
