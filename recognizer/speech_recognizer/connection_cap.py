"""A cap on open connections that gives way to idle ones: the recognizer's plain HTTP connections and the gateway's.

At most ``limit`` connections are counted at once, from their opening to their close. A new one past the cap closes
the counted connection that has waited longest for a request head of which it has sent nothing (a new one before its
first request, a kept-alive one between two), as nginx does with its "reusable" connections (HTTP/1.1 allows closing
an idle kept-alive connection: its client retries on a new one), and takes its place; its owner closes it with a reset
unless an answer is still on its way to it (:func:`reset_on_close`: why). Ties (the loop's clock may count whole
milliseconds: uvloop's does) go to the one admitted first (:meth:`ConnectionCap.victim`); a set's order (hash order)
decided them before. Only when every connection
counted has a request in progress is the new one past the cap: its owner reads its first head, answers a probe or
scrape and refuses anything else (:meth:`ConnectionCap.refusal`), then closes it. Those are bounded too: at most
``limit`` past the cap at once, the next closing the one of them open longest (the one most likely a slow head, not a
probe, which sends its head at once). Nothing sent means nothing in the socket's receive queue either
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


class Reusable(Protocol):
    """A connection as the cap sees it."""

    def idle_since(self) -> float | None:
        """When (event loop time) it began waiting for a request head of which no byte has come; None: it is busy."""

    def unread(self) -> int:
        """Bytes its client has sent that have not been read yet (a request that has come: it is no idle one)."""

    def close_idle(self) -> None:
        """Close it, idle as it is, or past the cap whatever it is doing (the cap needs its place)."""


def _queued(transport: asyncio.BaseTransport | None, request: int) -> int:
    """What the ioctl ``request`` says is queued in the transport's socket (0: no socket, or closed meanwhile)."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return 0
    try:
        return int.from_bytes(fcntl.ioctl(sock.fileno(), request, bytes(4)), sys.byteorder)
    except OSError:  # closed meanwhile
        return 0


def unread_bytes(transport: asyncio.BaseTransport | None) -> int:
    """Bytes the client has sent that the event loop has not read yet (the socket's receive queue, ``FIONREAD``)."""
    return _queued(transport, termios.FIONREAD)


def unsent_bytes(transport: asyncio.BaseTransport | None) -> int:
    """Bytes written to the client that it has not acknowledged yet: the transport's buffer and the socket's send queue
    (``TIOCOUTQ``: sent and not acknowledged, or not sent yet)."""
    buffered = transport.get_write_buffer_size() if isinstance(transport, asyncio.WriteTransport) else 0
    return buffered + _queued(transport, termios.TIOCOUTQ)


def reset_on_close(transport: asyncio.BaseTransport | None) -> None:
    """Make the close of an idle connection, about to be closed, a reset (``SO_LINGER`` 0) instead of a FIN, unless
    something written to it has not reached its client yet (a reset would destroy that: then it stays a FIN, after it).
    A client that pools connections (a proxy: nginx) and takes this one for its next request finds it failed before it
    sends anything, and tries a new connection; after a FIN it sends the request, finds the connection closed only then,
    and fails it (nginx: 502 for a POST, which it does not send again)."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None and not unsent_bytes(transport):
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
        """A new connection: True if it is within the cap (counted until :meth:`release`), having closed the connection
        idle longest to make room if the cap is reached (:meth:`victim`); False if it is past the cap (every one counted is busy): then,
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
            self.reclaimed += 1
            victim.close_idle()
        self._open[connection] = None
        return True

    def victim(self) -> Reusable | None:
        """The idle connection a new one at the cap closes: the one idle longest whose request has not come unread (asked
        of the socket, so of one or a few only); ties to the one admitted first. None if every one counted is busy."""
        # sorted is stable: of those idle since the same moment, the one admitted first comes first
        idle = sorted(((since, c) for c in self._open if (since := c.idle_since()) is not None), key=lambda pair: pair[0])
        return next((c for _, c in idle if not c.unread()), None)

    def release(self, connection: Reusable) -> None:
        """A connection is closed (one closed by :meth:`admit` already: nothing)."""
        self._open.pop(connection, None)
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
