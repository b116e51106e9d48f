"""The gateway's cap on client connections: what bounds its memory, whatever its clients hold.

Every connection costs the gateway memory for as long as it is open, and what a client can make it
cost is bounded per connection, not in all (measured on loopback, ``python -m bench.gateway_memory``,
bench/notes.md): an idle kept-alive connection about 8 KiB, a relayed WebSocket about 31 KiB idle and,
stalled within a message, that message so far (up to ``SPEECH_GATEWAY_MAX_MESSAGE_BYTES``: aiohttp
assembles each message before the relay sends it on), a REST body relayed to a recognizer that reads
slowly (or held while its locale wakes) what aiohttp buffers of it (up to twice
``SPEECH_GATEWAY_READ_BUFFER_BYTES``) and the relay's chunk in flight. Without a cap a few clients holding a
few hundred such connections would take the pod past its memory limit, and the OOM killer every
client of every locale with it. So at most ``SPEECH_GATEWAY_MAX_CONNECTIONS`` are served at once,
from their opening to their close, whatever they carry.

A connection past the cap is still accepted and its first request head read (within the same head
limits, :mod:`speech_operator.gateway_http_limits`): a probe or scrape (:data:`PROBE_ROUTES`: the
kubelet's ``/ready``, ``/status`` and ``/pre-stop``, Prometheus' ``/metrics``) is answered, anything else
is refused with :data:`~speech_operator.gateway_failures.TOO_MANY_CONNECTIONS` (503 + ``Retry-After``,
or a WebSocket accepted and closed with 1013 and the reason, as the recognizer refuses its own
connections past ``MaxConnections``), and either way the connection is closed after that answer. So a
flood never makes the kubelet restart the pod, nor Prometheus lose it, and what a connection past the
cap holds is its head (``SPEECH_GATEWAY_MAX_HEADER_BYTES``) for ``SPEECH_GATEWAY_HEADER_SECONDS`` at most.
Those are bounded in number too: at most ``SPEECH_GATEWAY_MAX_CONNECTIONS`` past the cap are open at once, and
the next closes the one of them open longest, without an answer (it is the one most likely to be a slow head,
not a probe, which sends its head at once). Unbounded, a flood of connections each sending a head of almost
16 KiB and never ending it held the gateway's memory by the thousand, for 10 s each: one client could take the
pod to its limit (bench/notes.md, "Gateway: memory per connection"). Those closes are counted
(``speech_gateway_connections_closed_past_cap_total``), not logged.
Refusals are counted (``speech_gateway_failures_total{reason="too_many_connections"}``) and logged as one
warning line per :data:`~speech_recognizer.admission.LOG_EVERY_SECONDS` with their count, not one each;
``speech_gateway_connections`` and ``speech_gateway_connections_max`` say how near the cap it is.

A connection that waits for a request head of which it has sent no byte (a new one before its first
request, or a kept-alive one between two) costs almost nothing and does nothing, yet is counted: so that
one client holding the cap's worth of them (one quick request each, then silence, or a stream of empty
connections) does not lock every other client out, a new connection past the cap closes the one of them
that has been waiting longest and takes its place, as nginx does with its "reusable" connections (HTTP/1.1
allows closing an idle kept-alive connection: its client retries on a new one). Only when every connection
counted has a request or stream in progress (a head or body arriving, a request handled, a WebSocket
relayed or held) is the new one past the cap. Nothing sent means nothing in its socket's receive queue either:
connections accepted in one turn of the event loop (a burst of clients) have had nothing read yet, though their
requests may have come, and closing those reset clients that had asked for something, without an answer. Those closes are counted
(``speech_gateway_idle_connections_closed_total``), not logged.

The defaults, against the pod's memory limit (256 MiB; measured on loopback with the defaults, RSS of the gateway's
process, bench/notes.md): 92 MiB idle; the OpenAI forms' budget full, 64 MiB; ``SPEECH_GATEWAY_MAX_HELD`` (100)
WebSockets held for a waking locale, each having sent what it keeps (256 KiB, or up to one message more), 0.42 MiB
each (42 MiB); the other 100 of the 200 connections each stalled within a message of ``SPEECH_GATEWAY_MAX_MESSAGE_BYTES`` (64 KiB), 0.1 MiB each (10 MiB;
an idle one 8 KiB, a form read ahead 70 KiB); and 200 past the cap, each midway through a head of almost 16 KiB,
36 KiB each (7 MiB): 215 MiB in all; and the kernel's buffers of each connection's socket and of its connection to
a recognizer, each ``SPEECH_GATEWAY_READ_BUFFER_BYTES`` (doubled by the kernel: 32 KiB), at most 128 KiB per
connection (25 MiB): 240 MiB. What no client can cause alone, a REST body relayed to a
recognizer that reads none of it, costs 0.2 MiB and 0.03 MiB of the kernel's socket buffers (with
``SPEECH_GATEWAY_READ_BUFFER_BYTES`` at 16 KiB; 0.65 MiB at aiohttp's own 256 KiB): 200 of them, 138 MiB. A pod given
more memory may take more connections: about 10 MiB per 100, and 12.5 MiB more at worst in the kernel.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from speech_operator import gateway_failures as failures
from speech_recognizer import contract
from speech_recognizer.admission import LOG_EVERY_SECONDS

log = logging.getLogger("speech_operator.gateway")

#: Routes answered on a connection past the cap (then closed): the kubelet's probes and hook, Prometheus' scrape.
PROBE_ROUTES = frozenset({contract.ROUTE_READY, contract.ROUTE_STATUS, contract.ROUTE_METRICS, contract.ROUTE_PRE_STOP})


class Reusable(Protocol):
    """A connection as the cap sees it (the gateway's :class:`~speech_operator.gateway_http_limits.HeadGuard`)."""

    def idle_since(self) -> float | None:
        """When (event loop time) it began waiting for a request head of which no byte has come; None: it is busy."""

    def unread(self) -> int:
        """Bytes its client has sent that have not been read yet (a request that has come: it is no idle one)."""

    def close_idle(self) -> None:
        """Close it, idle as it is, or past the cap whatever it is doing (the cap needs its place)."""


class ConnectionCap:
    """Counts the client connections open against ``limit``; used on the event loop only."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        #: The connections open now within the cap (one past it is not counted: it is closed after one answer).
        self._open: set[Reusable] = set()
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
        idle longest to make room if the cap is reached; False if it is past the cap (every one counted is busy): then,
        with ``limit`` open past the cap already, the one of them open longest is closed (:attr:`shed`)."""
        if len(self._open) >= self.limit:
            idle = sorted(((since, c) for c in self._open if (since := c.idle_since()) is not None), key=lambda pair: pair[0])
            # the one idle longest whose request has not come unread (asked of the socket, so of one or a few only)
            oldest = next((c for _, c in idle if not c.unread()), None)
            if oldest is None:
                if len(self._past) >= self.limit:
                    oldest_past = next(iter(self._past))
                    del self._past[oldest_past]
                    self.shed += 1
                    oldest_past.close_idle()
                self._past[connection] = None
                return False
            self._open.discard(oldest)
            self.reclaimed += 1
            oldest.close_idle()
        self._open.add(connection)
        return True

    def release(self, connection: Reusable) -> None:
        """A connection is closed (one closed by :meth:`admit` already: nothing)."""
        self._open.discard(connection)
        self._past.pop(connection, None)

    def refusal(self) -> failures.Failure:
        """The failure a request past the cap is answered with; one WARNING line at the first refusal and then at
        most one per :data:`LOG_EVERY_SECONDS`, with their count."""
        self._refused_unlogged += 1
        now = time.monotonic()
        if now - self._refusals_logged_at >= LOG_EVERY_SECONDS:
            log.warning("SPEECH_GATEWAY_MAX_CONNECTIONS=%d connections are open: new ones are refused (%d since the last "
                        "such line)", self.limit, self._refused_unlogged)
            self._refused_unlogged, self._refusals_logged_at = 0, now
        kind = failures.TOO_MANY_CONNECTIONS
        return failures.Failure(f"too many connections: this gateway keeps at most {self.limit} open "
                                f"(SPEECH_GATEWAY_MAX_CONNECTIONS); retry in {kind.retry_after} s", kind)
