"""How the recognizer listens: uvicorn's options and the listening socket (the CLI and the tests share them).

Keepalive. uvicorn pings every WebSocket client (:data:`PING_INTERVAL_SECONDS`),
which keeps idle connections open through proxies and load balancers. It does
not close a connection whose pong is late (``ws_ping_timeout`` None): a client
that sends audio faster than it is decoded (the Speech SDK sends recorded files
ahead) is held back on purpose, and its pong waits in the socket behind the
audio not read yet, for as long as that audio takes to decode. With a pong
deadline (uvicorn's default, 20 s) such a client was cut off with 1011
"keepalive ping timeout", and the Speech SDK reported no result (it connected again, and
ended with ``TooManyRequests``). Pings come one interval apart however late their
pongs (:meth:`~.http_limits.UnmappedWebSockets.schedule_ping`).

A peer that is really gone (its machine or network, not its program) stops
acknowledging what the server sends, the pings included; the kernel gives the
connection up after :data:`DEAD_PEER_SECONDS` (``TCP_USER_TIMEOUT``, Linux),
and the session ends as on any disconnect. Acknowledgements come from the
peer's kernel, so a client held back is never mistaken for a dead one.

A client that is there but reads nothing is no dead peer either: its kernel
acknowledges every probe while its window stays shut, and gave the connection up
only :data:`DEAD_PEER_SECONDS` after the window shut. A WebSocket send that waits on
such a client is bounded by ``AudioIdleSeconds`` instead
(:meth:`~.http_limits.UnmappedWebSockets.send`: the connection reset, ``not_reading``).
"""

from __future__ import annotations

import errno
import logging
import socket
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from .addresses import host_port
from .contract import EVERY_ADDRESS
from .settings import Settings

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from .connection_cap import ConnectionCap
    from .errors import Counters

#: Seconds between keepalive pings.
PING_INTERVAL_SECONDS = 20.0
#: A connection whose data (a ping included) is not acknowledged this long is closed by the kernel.
DEAD_PEER_SECONDS = 60
#: uvicorn's listen backlog (its default).
BACKLOG = 2048
#: Each accepted connection's send buffer (``SO_SNDBUF``; the kernel doubles it: 128 KiB), where answers a client does
#: not read wait: the kernel grew it to ``tcp_wmem``'s maximum (4 MiB) while they flowed, kernel memory that a cgroup-v2
#: limit charges to the pod (bench/notes.md, "Kernel socket memory"); ``Http:MaxConnections`` bounds how many HTTP connections hold one.
SEND_BUFFER_BYTES = 64 << 10
#: Seconds an idle kept-alive HTTP connection stays open between two requests (uvicorn's default
#: is 5). Longer than a client that pools connections keeps them idle (ingress controllers and
#: cloud load balancers: 60 s; the gateway keeps none): the client closes them, never the server
#: while the client sends its next request on one (that request would fail: 502 at a proxy).
KEEPALIVE_SECONDS = 75.0

#: How uvicorn serves the app. Audio does not compress: per-message deflate would spend
#: CPU on every chunk for nothing, so it is not offered.
SERVER_OPTIONS: dict[str, Any] = {
    "ws_max_size": 1 << 20,
    "ws_per_message_deflate": False,
    "ws_ping_interval": PING_INTERVAL_SECONDS,
    "ws_ping_timeout": None,
    "timeout_keep_alive": KEEPALIVE_SECONDS,
}


def connection_cap(settings: Settings) -> ConnectionCap:
    """The cap on plain HTTP connections that ``settings`` ask for (``Http:MaxConnections``): made once per app
    (:func:`~speech_recognizer.app.create_app`, which exposes it on ``/metrics``), held by its HTTP protocol."""
    from .connection_cap import ConnectionCap
    from .contract import HTTP_MAX_CONNECTIONS
    from .errors import TOO_MANY_CONNECTIONS

    return ConnectionCap(settings.http_max_connections, setting=HTTP_MAX_CONNECTIONS, kind=TOO_MANY_CONNECTIONS)


def server_options(settings: Settings, counters: Counters | None = None, cap: ConnectionCap | None = None) -> dict[str, Any]:
    """uvicorn's options for ``settings``: :data:`SERVER_OPTIONS` and the HTTP protocol that holds
    their request limits and ``cap`` (:mod:`.http_limits`; always httptools, whatever uvicorn would
    pick; a cap of its own if none is given) and the CORS headers of its refusals (``Http:CorsOrigins``), counting its refusals on ``counters``, and the WebSocket protocol that
    gives upgraded connections the same client address and answers what websockets refuses of their heads
    (:class:`~.http_limits.UnmappedWebSockets`, counting on ``counters`` too), whose bounds on a head are made the
    head's (:func:`~.http_limits.websocket_head_bounds`). uvicorn's own reading of ``X-Forwarded-For`` is off: the app
    reads it (``Http:TrustedProxies``: :class:`~.forwarded.ForwardedClient`)."""
    from .cors import instance
    from .http_limits import HttpLimits, UnmappedWebSockets, protocol, websocket_head_bounds

    limits = HttpLimits(
        max_header_bytes=settings.http_max_header_bytes,
        header_seconds=settings.http_header_timeout_seconds,
        body_pause_seconds=settings.http_body_timeout_seconds,
        body_seconds=settings.max_audio_seconds + settings.http_body_timeout_seconds,
    )
    websocket_head_bounds(limits.max_header_bytes)
    websockets = type("UnmappedWebSockets", (UnmappedWebSockets,), {"metrics": counters, "stall_seconds": settings.audio_idle_seconds})
    answerer = instance(settings.http_cors_origins)  # the app's CORS policy, for the refusals written below it
    return {**SERVER_OPTIONS, "http": protocol(limits, counters, cap or connection_cap(settings), answerer), "ws": websockets,
            "proxy_headers": False}


#: What binding ``::`` fails with where the kernel has no IPv6: no such family (``ipv6.disable=1``), or no such
#: address (IPv6 disabled on every interface).
_NO_IPV6 = frozenset({errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL})


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound, listening TCP socket whose connections give up on a dead peer after :data:`DEAD_PEER_SECONDS`.

    ``host`` :data:`~.contract.EVERY_ADDRESS` (``*``) listens on both families where the kernel has IPv6 and on IPv4
    alone where it has not (one INFO line says so); ``::`` on both families (or fails); ``0.0.0.0``
    on IPv4 alone. An IPv6 address may come in brackets, as in a URL (``[::]``, ``[fd00::5]``). Raises :class:`OSError` when the address cannot be bound (in use, not local).
    Connections accepted from it inherit ``TCP_USER_TIMEOUT`` (where the
    platform has it) and a send buffer of :data:`SEND_BUFFER_BYTES`.
    """
    if host.startswith("[") and host.endswith("]"):  # an IPv6 address as a URL writes it: [::] is ::
        host = host[1:-1]
    if host != EVERY_ADDRESS:
        return _listening_socket(host, port)
    try:
        return _listening_socket("::", port)
    except OSError as exc:
        if exc.errno not in _NO_IPV6:
            raise
        log.info("no IPv6 here (%s): listening on IPv4 only, 0.0.0.0:%d", exc.strerror or exc, port)
        return _listening_socket("0.0.0.0", port)


def _listening_socket(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and host in ("::", ""):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # IPv4 clients too
        if hasattr(socket, "TCP_USER_TIMEOUT"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, DEAD_PEER_SECONDS * 1000)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)  # inherited, as TCP_USER_TIMEOUT
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def listening_on(sock: socket.socket) -> str:
    """Where ``sock`` listens, for a log line: ``[::]:5000 (IPv6 and IPv4)``, ``0.0.0.0:5000``."""
    host, port = sock.getsockname()[:2]
    both = sock.family == socket.AF_INET6 and host == "::" and not sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
    return host_port(host, port) + (" (IPv6 and IPv4)" if both else "")


#: Set by a WebSocket handler that refused the upgrade with an HTTP response (the denial response extension).
DENIED: ContextVar[bool] = ContextVar("speech_recognizer_ws_denied", default=False)


class _DenialIsNoError(logging.Filter):
    """uvicorn's websockets-sansio protocol logs "ASGI callable returned without completing handshake" at ERROR
    after every denial response, though the response went out (it never marks such a handshake complete;
    fixed upstream in uvicorn pull request 3138). Dropped for connections we denied on purpose (:data:`DENIED`,
    set in the task that serves the connection, where uvicorn logs it); any other such error still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (DENIED.get() and record.getMessage().startswith("ASGI callable returned without completing handshake"))


#: Set in the task of a recognition WebSocket refused before its route ran (:func:`speech_recognizer.drain.refuse`).
REFUSED: ContextVar[bool] = ContextVar("speech_recognizer_ws_refused", default=False)


class _RefusalsAtDebug(logging.Filter):
    """The INFO lines of a WebSocket accepted only to be refused (:data:`REFUSED`) at DEBUG: uvicorn's
    ``"WebSocket /vosk" [accepted]`` and websockets' ``connection open``. A flood past ``MaxConnections`` would
    be two lines per attempt; the refusal itself is counted and logged by the failure policy."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or not REFUSED.get():
            return True
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def _add_filter(logger: str, added: logging.Filter) -> None:
    if not any(type(f) is type(added) for f in logging.getLogger(logger).filters):
        logging.getLogger(logger).addFilter(added)


_add_filter("uvicorn.error", _DenialIsNoError())
for _logger in ("uvicorn.error", "websockets.server"):
    _add_filter(_logger, _RefusalsAtDebug())
