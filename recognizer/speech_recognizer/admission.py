"""Admission: at most ``DecoderMaxCount`` recognitions hold a decoder at once; the next ones are refused.

A route reserves a decoder as soon as it knows it will recognize, before it has
the audio's format (the REST route, before it reads the body), and hands the
:class:`Reservation` to the session it opens; the session gives it back at its
end. Refusing at once (:class:`Busy`) keeps the admitted streams real time,
where queueing would make every stream late. Used on the event loop only.
"""

from __future__ import annotations

import time
from types import TracebackType

from .errors import BUSY, Failure


class Busy(Failure):
    """Every decoder is in use; retry after :attr:`retry_after` seconds."""

    kind = BUSY

    def __init__(self, limit: int) -> None:
        super().__init__(f"all {limit} decoders are busy; retry in {BUSY.retry_after} s")
        self.limit = limit


class Reservation:
    """A decoder held for one recognition; :meth:`release` (or leaving the ``with``) gives it back, once."""

    def __init__(self, admission: Admission) -> None:
        self._admission: Admission | None = admission

    @property
    def held(self) -> bool:
        return self._admission is not None

    def release(self) -> None:
        admission, self._admission = self._admission, None
        if admission is not None:
            admission.active -= 1
            if admission.active == 0:
                admission.idle_since = time.monotonic()

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


class Admission:
    """Counts the decoders held against ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        #: Decoders held now.
        self.active = 0
        #: Recognitions admitted since the start.
        self.admitted = 0
        #: When the last decoder held was given back (monotonic), else the start.
        self.idle_since = time.monotonic()

    def reserve(self) -> Reservation:
        """A decoder for one recognition, or :class:`Busy` when all ``limit`` are held."""
        if self.active >= self.limit:
            raise Busy(self.limit)
        self.active += 1
        self.admitted += 1
        return Reservation(self)

    def idle_seconds(self) -> float:
        """Seconds since a decoder was last held (0 while one is): how long this server has had no work."""
        return 0.0 if self.active else time.monotonic() - self.idle_since
