"""Admission: at most ``DecoderMaxCount`` recognitions hold a decoder at once; the next ones are refused.

A route reserves a decoder as soon as it knows it will recognize, before it has
the audio's format (the REST route, before it reads the body), and hands the
:class:`Reservation` to the session it opens; the session gives it back at its
end. Refusing at once (:class:`Busy`) keeps the admitted streams real time,
where queueing would make every stream late. Used on the event loop only.

A recognition WebSocket takes its decoder only at its first audio (vosk's after
its optional config, a Speech SDK turn's at its first audio frame), so the
admission also counts the recognition connections open (:meth:`Admission.connection`,
held by :class:`~speech_recognizer.drain.DrainMiddleware` from the upgrade to the end
of the route's handler): the server is not idle while a client is connected, about to
speak. Both are what ``GET /sessions`` reports to the operator's autoscaling.

Those connections are capped too (``MaxConnections``): a connection that sends nothing holds no
decoder and stays open up to ``ConnectionIdleSeconds`` (:mod:`.deadlines`), so without a cap a client
could open them faster than they are let go, until the pod ran out of memory or file descriptors. The one past the cap is refused at once
(:class:`TooManyConnections`); a flood of them is logged as one line per :data:`LOG_EVERY_SECONDS`.
uvicorn's own cap (``limit_concurrency``) does not fit: it is checked at an HTTP request's head only, never
at a WebSocket upgrade; it counts every connection, the probes' included, and refuses them too (a kubelet
would restart a flooded pod); and it answers a bare 503 with a warning line per refusal.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from types import TracebackType

from .errors import BUSY, TOO_MANY_CONNECTIONS, Failure

log = logging.getLogger(__name__)

#: At most one line per this many seconds says that connections are being refused at the cap, and how many.
LOG_EVERY_SECONDS = 10.0


class Busy(Failure):
    """Every decoder is in use; retry after :attr:`retry_after` seconds."""

    kind = BUSY

    def __init__(self, limit: int) -> None:
        super().__init__(f"all {limit} decoders are busy; retry in {BUSY.retry_after} s")
        self.limit = limit


class TooManyConnections(Failure):
    """``MaxConnections`` recognition WebSockets are open already."""

    kind = TOO_MANY_CONNECTIONS

    def __init__(self, limit: int) -> None:
        super().__init__(f"too many connections: this server keeps at most {limit} open (MaxConnections); "
                         f"retry in {TOO_MANY_CONNECTIONS.retry_after} s")
        self.limit = limit


class Reservation:
    """A decoder held for one recognition; :meth:`release` (or leaving the ``with``) gives it back, once."""

    def __init__(self, admission: Admission, *, request: bool = False) -> None:
        self._admission: Admission | None = admission
        #: Held by an HTTP request (:meth:`Admission.reserve`).
        self.request = request

    @property
    def held(self) -> bool:
        return self._admission is not None

    def release(self) -> None:
        admission, self._admission = self._admission, None
        if admission is not None:
            admission.active -= 1
            admission.held_by_requests -= self.request
            admission.idle_since = time.monotonic()

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


class Admission:
    """Counts the decoders held against ``limit``, and the recognition connections open against ``max_connections``."""

    def __init__(self, limit: int, max_connections: int | None = None) -> None:
        self.limit = limit
        #: Most recognition WebSockets open at once; None: no cap.
        self.max_connections = max_connections
        #: Decoders held now.
        self.active = 0
        #: Of those, held by HTTP requests (REST, OpenAI), which :class:`~speech_recognizer.drain.DrainMiddleware` counts
        #: itself: told apart so that the drain counts each recognition once.
        self.held_by_requests = 0
        #: Recognitions admitted since the start.
        self.admitted = 0
        #: Recognition WebSockets open now, with or without a decoder (:meth:`connection`).
        self.connections = 0
        #: When a decoder was last given back or a connection last ended (monotonic), else the start.
        self.idle_since = time.monotonic()
        #: Connections refused at the cap since the last log line about them, and when that was.
        self._refused_unlogged = 0
        self._refusals_logged_at = -LOG_EVERY_SECONDS

    def reserve(self, *, request: bool = False) -> Reservation:
        """A decoder for one recognition (``request``: an HTTP request's), or :class:`Busy` when all ``limit`` are held."""
        if self.active >= self.limit:
            raise Busy(self.limit)
        self.active += 1
        self.admitted += 1
        self.held_by_requests += request
        return Reservation(self, request=request)

    def connection(self) -> AbstractContextManager[None]:
        """One recognition WebSocket open for as long as the ``with`` lasts (however it ends: a close,
        a client gone without one, a refusal), or :class:`TooManyConnections` when ``max_connections`` are."""
        if self.max_connections is not None and self.connections >= self.max_connections:
            self._log_refusal()
            raise TooManyConnections(self.max_connections)
        return self._open()

    def _log_refusal(self) -> None:
        """One WARNING line at the first refusal and then at most one per :data:`LOG_EVERY_SECONDS`, with the count."""
        self._refused_unlogged += 1
        now = time.monotonic()
        if now - self._refusals_logged_at >= LOG_EVERY_SECONDS:
            log.warning("MaxConnections=%d connections are open: new ones are refused (%d since the last such line)",
                        self.max_connections, self._refused_unlogged)
            self._refused_unlogged, self._refusals_logged_at = 0, now

    @contextmanager
    def _open(self) -> Iterator[None]:
        self.connections += 1
        try:
            yield
        finally:
            self.connections -= 1
            self.idle_since = time.monotonic()

    def idle_seconds(self) -> float:
        """Seconds since the last decoder held or connection open went (0 while one is): how long this
        server has had no work and no client about to bring some."""
        return 0.0 if self.active or self.connections else time.monotonic() - self.idle_since
