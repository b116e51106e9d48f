"""A cap on open connections that gives way to idle ones: the recognizer's plain HTTP connections and the gateway's.

At most ``limit`` connections are counted at once, from their opening to their close. A new one past the cap closes
a counted connection that waits for a request head of which it has sent nothing (a new one before its first request,
a kept-alive one between two), as nginx does with its "reusable" connections (HTTP/1.1 allows closing an idle
kept-alive connection: its client retries on a new one), and takes its place. Which one (:meth:`ConnectionCap.victim`):

1. one whose answers its client is not taking in: some still wait in its buffers, not yet sent because the client's
   receive window is full (:func:`unsent_bytes`; what is merely in flight does not count). Its client is still busy
   reading, so it is no idle connection in the keep-alive sense, but it is the cheapest to refuse more work: a slow
   reader that holds a place while its answers trickle out is the slowloris pattern, and closing it costs it nothing
   it asked for. Its owner closes it with a FIN after those answers, so it gets them all, then has to reconnect for its
   next request; if its window stays full, the kernel gives up on it after ``DEAD_PEER_SECONDS``
   (``TCP_USER_TIMEOUT``, set on the listening socket by :mod:`.serving`, bounds zero-window probing too). Of those,
   the one idle longest.
2. else the one idle longest (nginx's order: least recently used), which its owner closes with a reset
   (:func:`reset_on_close`: why). A kept-alive client that read everything loses only a reconnect, and the one idle
   longest is the least likely to be about to send its next request.

Idle since when: the end of its last answer as the server handed it over (to the transport), as nginx's keep-alive
starts once the last byte is handed to the kernel: when its client reads it the server cannot tell without asking
each socket, and rule 1 is what tells a client still reading from one done. Ties (the loop's clock may count whole
milliseconds: uvloop's does) go to the one admitted first; a set's order (hash order) decided them before, so that at a
tie a slow reader or the kept-alive client beside it was closed at random.

Only when every connection counted has a request in progress is the new one past the cap: its owner reads its first
head, answers a probe or scrape and refuses anything else (:meth:`ConnectionCap.refusal`), then closes it. Those are
bounded too: at most ``limit`` past the cap at once, the next closing the one of them open longest (the one most likely
a slow head, not a probe, which sends its head at once). Nothing sent means nothing in the socket's receive queue either
(:func:`unread_bytes`): connections accepted in one turn of the event loop have had nothing read yet, though their
requests may have come, and closing those would reset clients that had asked for something.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import socket
import struct
import sys
import termios
import time
from typing import Protocol

from .admission import LOG_EVERY_SECONDS
from .errors import Failure, Kind

#: Linux's ioctl for the bytes of a TCP socket's send queue not sent yet (``linux/sockios.h``; Python does not name it).
SIOCOUTQNSD = 0x894B


class Reusable(Protocol):
    """A connection as the cap sees it."""

    def idle_since(self) -> float | None:
        """When (event loop time) it began waiting for a request head of which no byte has come; None: it is busy."""

    def unread(self) -> int:
        """Bytes its client has sent that have not been read yet (a request that has come: it is no idle one)."""

    def unsent(self) -> int:
        """Bytes of its answers not yet sent because its client is not taking them in (:func:`unsent_bytes`)."""

    def close_idle(self) -> None:
        """Close it, idle as it is, or past the cap whatever it is doing (the cap needs its place)."""


def _queued(transport: asyncio.BaseTransport | None, request: int) -> int:
    """What the ioctl ``request`` says is queued in the transport's socket (0: no socket, or closed meanwhile)."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return 0
    try:
        return int.from_bytes(fcntl.ioctl(sock.fileno(), request, bytes(4)), sys.byteorder)
    except (OSError, ValueError):  # closed meanwhile (uvloop's socket then has the file descriptor -1: a ValueError)
        return 0


def unread_bytes(transport: asyncio.BaseTransport | None) -> int:
    """Bytes the client has sent that the event loop has not read yet (the socket's receive queue, ``FIONREAD``)."""
    return _queued(transport, termios.FIONREAD)


def _buffered(transport: asyncio.BaseTransport | None) -> int:
    """Bytes written to the transport that it has not handed to its socket yet (the socket's send buffer is full)."""
    # uvloop's transports (the recognizer's) are no asyncio.WriteTransport to isinstance, but have the method
    size = getattr(transport, "get_write_buffer_size", None)
    return int(size()) if size is not None else 0


def unacknowledged_bytes(transport: asyncio.BaseTransport | None) -> int:
    """Bytes written to the client that it has not acknowledged yet: the transport's buffer and the socket's send queue
    (``TIOCOUTQ``: sent and not acknowledged, or not sent yet)."""
    return _buffered(transport) + _queued(transport, termios.TIOCOUTQ)


def unsent_bytes(transport: asyncio.BaseTransport | None) -> int:
    """Bytes written to the client that have not been sent yet: the transport's buffer and the socket's send queue not
    yet sent (``SIOCOUTQNSD``). Not what is in flight (sent, not yet acknowledged: a client reading at once has its last
    answer's end in flight for a round trip): what the client's receive window holds back, because it does not read."""
    return _buffered(transport) + _queued(transport, SIOCOUTQNSD)


class Intake:
    """How long a client has taken in none of what waits unsent for it (:func:`unsent_bytes`), from looks now and then:
    a look that finds fewer bytes unsent than the last one restarts the clock (a slow reader takes some in between two
    looks and never stalls), and what was written since counts from then on. Both servers' bound on a client that
    reads nothing use it: the recognizer's WebSocket sends (``AudioIdleSeconds``) and the gateway's
    (``SPEECH_GATEWAY_SEND_STALL_SECONDS``)."""

    def __init__(self, unsent: int, now: float) -> None:
        #: Bytes unsent at the last look, and when the client last took some in (event loop time).
        self.unsent, self.since = unsent, now

    def look(self, unsent: int, now: float) -> float:
        """Seconds the client has taken in nothing, ``unsent`` bytes waiting at ``now``."""
        if unsent < self.unsent:
            self.since = now
        self.unsent = unsent
        return now - self.since

    def heard(self, now: float) -> float:
        """The peer shows at ``now`` that it works on the connection otherwise (it sent something): the clock restarts."""
        self.since = now
        return 0.0


#: ``tcpi_state`` of a connection its peer has reset (Linux's ``TCP_CLOSE``, the state a reset leaves it in).
_TCP_CLOSE = 7
#: ``tcpi_state`` of a connection whose peer has sent its FIN (Linux's ``TCP_CLOSE_WAIT``).
_TCP_CLOSE_WAIT = 8
#: The interim answer both servers send a client that ended what it sends, to tell a close from a half-close: a closed
#: socket answers it with a reset (RFC 9110, 15.2: an HTTP/1.1 client takes any 1xx before the final answer).
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
#: How often such a client is looked at while that answer is not acknowledged (a closed socket's reset comes within a
#: round trip).
PRESENCE_POLL_SECONDS = 0.05
#: The ASGI scope extension under which the server's HTTP protocol gives a request whether its client has gone, its body
#: read or not (a callable, looked at as often as the app likes: :meth:`~.http_limits.LimitedHttpTools._gone_unread`).
CLIENT_ENDED = "speech.client_ended"


def _tcp_state(transport: asyncio.BaseTransport | None) -> int | None:
    """The connection's TCP state (Linux's ``TCP_INFO`` ``tcpi_state``), though the event loop may not know it yet (it
    no longer reads a connection whose client ended what it sends, or one past its read buffer); None where the kernel
    does not say, or the socket is closed."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or not hasattr(socket, "TCP_INFO"):
        return None
    try:
        return int(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0])
    except (OSError, ValueError):  # closed meanwhile (uvloop's socket then has the file descriptor -1: a ValueError)
        return None


#: Where ``tcpi_bytes_received`` (a u64, Linux 4.1 and later) lies in Linux's ``struct tcp_info``, and its end.
_BYTES_RECEIVED = slice(128, 136)


def received_bytes(transport: asyncio.BaseTransport | None) -> int | None:
    """Bytes of data the peer has sent on the connection so far, read or not (``TCP_INFO``'s ``tcpi_bytes_received``);
    None where the kernel does not say, or the socket is closed. A peer whose process is stopped sends nothing (its
    kernel only acknowledges)."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or not hasattr(socket, "TCP_INFO"):
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _BYTES_RECEIVED.stop)
    except (OSError, ValueError):  # closed meanwhile (uvloop's socket then has the file descriptor -1: a ValueError)
        return None
    return int.from_bytes(info[_BYTES_RECEIVED], sys.byteorder) if len(info) >= _BYTES_RECEIVED.stop else None


def reset_by_peer(transport: asyncio.BaseTransport | None) -> bool:
    """Whether the client has reset the connection (:func:`_tcp_state`)."""
    return _tcp_state(transport) == _TCP_CLOSE


def peer_gone(transport: asyncio.BaseTransport | None) -> bool:
    """Whether the client has sent its FIN or reset the connection (:func:`_tcp_state`)."""
    return _tcp_state(transport) in (_TCP_CLOSE, _TCP_CLOSE_WAIT)


def peer_end(transport: asyncio.BaseTransport | None) -> str | None:
    """How the client's end of the connection has come (:func:`_tcp_state`), though unread: ``"reset"``, ``"fin"`` (a
    close, or a half-close: the same FIN), None (not, or the kernel does not say)."""
    return {_TCP_CLOSE: "reset", _TCP_CLOSE_WAIT: "fin"}.get(_tcp_state(transport) or 0)


def reset_on_close(transport: asyncio.BaseTransport | None) -> None:
    """Make the close of an idle connection, about to be closed, a reset (``SO_LINGER`` 0) instead of a FIN, unless
    something written to it has not reached its client yet (a reset would destroy that: then it stays a FIN, after it).
    A client that pools connections (a proxy: nginx) and takes this one for its next request finds it failed before it
    sends anything, and tries a new connection; after a FIN it sends the request, finds the connection closed only then,
    and fails it (nginx: 502 for a POST, which it does not send again)."""
    if transport is not None and not unacknowledged_bytes(transport):
        _linger_zero(transport)


def reset(transport: asyncio.WriteTransport) -> None:
    """Close ``transport`` with a reset (``SO_LINGER`` 0): what waits unsent, in the event loop's buffer and the
    kernel's, is dropped, not kept for a client that takes none of it (a close's FIN waits behind it until the kernel
    gives up: ``TCP_USER_TIMEOUT``)."""
    _linger_zero(transport)
    transport.abort()


def _linger_zero(transport: asyncio.BaseTransport) -> None:
    """Make the close of ``transport``'s socket a reset."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):  # closed meanwhile
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class ConnectionCap:
    """Counts the connections open against ``limit``; used on the event loop only. ``setting`` names the limit in the
    refusal and the log line, ``holder`` what keeps the connections ("server", "gateway"); a refusal is a ``kind``."""

    def __init__(self, limit: int, *, setting: str, kind: Kind, holder: str = "server", log: logging.Logger | None = None) -> None:
        self.limit = limit
        self.setting = setting
        self.kind = kind
        self.holder = holder
        self.log = log or logging.getLogger(__name__)
        #: The connections open now within the cap (one past it is not counted: it is closed after one answer), in the
        #: order they were admitted (which breaks ties between those idle since the same moment: :meth:`victim`).
        self._open: dict[Reusable, None] = {}
        #: Idle connections whose answers were all sent when :meth:`victim` last asked, with when that one's idle time
        #: began: nothing is written to a connection while it is idle, so it stays so until its next answer (asked once
        #: per idle time, not at each admission: an ``ioctl`` each, 10 times the cost of the rest at 200 idle). A next
        #: answer ended within the same millisecond is missed: that connection is then ordered by its idle time alone.
        self._sent: dict[Reusable, float] = {}
        #: The connections open now past the cap (each until its one answer), oldest first: at most ``limit``.
        self._past: dict[Reusable, None] = {}
        #: Idle connections closed to make room for new ones, since the start.
        self.reclaimed = 0
        #: Connections past the cap closed to make room for newer ones past it, since the start.
        self.shed = 0
        #: Requests refused past the cap since the last log line about them, and when that was.
        self._refused_unlogged = 0
        self._refusals_logged_at = -LOG_EVERY_SECONDS

    @property
    def open(self) -> int:
        """Connections open now within the cap."""
        return len(self._open)

    @property
    def idle(self) -> int:
        """Connections open now within the cap that wait for a request head of which nothing came: the ones that give
        way to a new connection at the cap (so a cap full of them is no cap reached)."""
        return sum(1 for c in self._open if c.idle_since() is not None)

    def admit(self, connection: Reusable) -> bool:
        """A new connection: True if it is within the cap (counted until :meth:`release`), having closed an idle one to
        make room if the cap is reached (:meth:`victim`); False if it is past the cap (every one counted is busy): then,
        with ``limit`` open past the cap already, the one of them open longest is closed (:attr:`shed`)."""
        if len(self._open) >= self.limit:
            victim = self.victim()
            if victim is None:
                if len(self._past) >= self.limit:
                    oldest_past = next(iter(self._past))
                    del self._past[oldest_past]
                    self.shed += 1
                    oldest_past.close_idle()
                self._past[connection] = None
                return False
            del self._open[victim]
            self._sent.pop(victim, None)
            self.reclaimed += 1
            victim.close_idle()
        self._open[connection] = None
        return True

    def victim(self) -> Reusable | None:
        """The idle connection a new one at the cap closes (the module's rule): of those whose request has not come
        unread, one whose answers its client is not taking in, else the one idle longest; ties to the one admitted
        first. None if every one counted is busy."""
        # sorted is stable: of those idle since the same moment, the one admitted first comes first
        idle = sorted(((since, c) for c in self._open if (since := c.idle_since()) is not None), key=lambda pair: pair[0])
        sent = self._sent
        not_reading = [c for since, c in idle if sent.get(c) != since and self._unsent(c, since)]
        return next((c for c in [*not_reading, *(c for _, c in idle)] if not c.unread()), None)

    def _unsent(self, connection: Reusable, since: float) -> bool:
        """Whether ``connection``, idle since ``since`` and not known to have sent all its answers in this idle time
        (:attr:`_sent`), has answers its client is not taking in."""
        if connection.unsent():
            return True
        self._sent[connection] = since
        return False

    def release(self, connection: Reusable) -> None:
        """A connection is closed (one closed by :meth:`admit` already: nothing)."""
        self._open.pop(connection, None)
        self._sent.pop(connection, None)
        self._past.pop(connection, None)

    def refusal(self) -> Failure:
        """The failure a request past the cap is answered with; one WARNING line at the first refusal and then at
        most one per :data:`~speech_recognizer.admission.LOG_EVERY_SECONDS`, with their count."""
        self._refused_unlogged += 1
        now = time.monotonic()
        if now - self._refusals_logged_at >= LOG_EVERY_SECONDS:
            self.log.warning("%s=%d connections are open: new ones are refused (%d since the last such line)",
                             self.setting, self.limit, self._refused_unlogged)
            self._refused_unlogged, self._refusals_logged_at = 0, now
        return Failure(f"too many connections: this {self.holder} keeps at most {self.limit} open "
                       f"({self.setting}); retry in {self.kind.retry_after} s", self.kind)
