"""The engine: admitted sessions over pooled recognizers, and the warm pool kept at strength.

Every protocol adapter opens its recognitions with :meth:`Engine.session`, so the
same audio gives the same words and timings on every route. The engine admits a
session (:mod:`.admission`), gives it a decoder thread (:mod:`.session`) and a
recognition (:mod:`.recognition`) that starts on a warm recognizer when the pool
(:mod:`.pool`) has one, and at its end hands the recognizer back and records the
session. It alone decides on replacements: a recognizer that retires, at a release
or at a handover, is replaced in the background by one warmed with the start-up
warm-up audio. Why it is built this way, with measurements: docs/engine.md.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from .admission import Admission, Reservation
from .audio import Audio, chunks
from .inbox import SpillBudget
from .models import LoadedModel, ModelRegistry
from .pool import WarmPool
from .recognition import Recognition, Release
from .scratch import spill_budget
from .session import FILE_CHUNK_SECONDS, Lanes, Session

log = logging.getLogger(__name__)


@dataclass
class SessionRecord:
    """What a finished session leaves for usage records and metrics."""

    route: str
    locale: str
    audio_seconds: float
    #: CPU seconds of the session's decoder thread spent decoding.
    decoder_cpu_seconds: float
    phrases: int
    started: float = field(default_factory=time.time)
    #: Seconds of audio the client sent that were dropped undecoded because it left first.
    abandoned_seconds: float = 0.0


def _lower_priority() -> None:
    """Run the calling thread at nice 10: it takes only the CPU that decoding leaves (Linux: per thread)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):  # another platform, or not allowed: the default priority
        pass


class Engine:
    """Admits sessions up to the decoder cap and runs each one's decoding on a thread of its own."""

    def __init__(
        self,
        registry: ModelRegistry,
        decoder_max_count: int,
        on_session_end: Callable[[SessionRecord], None] | None = None,
        *,
        warm_pool: int | None = None,
        max_connections: int | None = None,
    ) -> None:
        self.registry = registry
        self.decoder_max_count = decoder_max_count
        self.admission = Admission(decoder_max_count, max_connections)
        #: For work outside sessions (the start-up warm-up).
        self.executor = ThreadPoolExecutor(max_workers=decoder_max_count, thread_name_prefix="warm")
        #: Warms replacements of retired recognizers, one at a time, at a lower CPU priority than decoding.
        self.replenisher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="replenish", initializer=_lower_priority)
        self.lanes = Lanes(decoder_max_count)
        self._on_end = on_session_end
        #: Recognizers of finished sessions kept warm (default: as many as may decode at once).
        self.pool = WarmPool(decoder_max_count if warm_pool is None else warm_pool)
        self._pool_per_decoder = warm_pool is None
        #: The warm-up audio per pool key: what a retired recognizer's replacement decodes.
        self._warmup_pcm: dict[int, tuple[bytes, int]] = {}
        #: The disk the /vosk streams' read-ahead may take in temporary files, all together: a stream's share per decoder.
        self.spills = SpillBudget(lambda: spill_budget(self.decoder_max_count))

    @property
    def active(self) -> int:
        """Decoders held now (sessions, and routes that reserved one)."""
        return self.admission.active

    def limit_decoders(self, count: int) -> None:
        """Admit at most ``count`` recognitions from now on, no more than it was built for (its lanes and threads),
        and keep as many warm when the pool holds one per decoder: the default ``DecoderMaxCount`` once the models
        are loaded and the memory they took is known (app.py). Recognitions holding a decoder keep it."""
        self.decoder_max_count = self.admission.limit = min(count, self.decoder_max_count)
        if self._pool_per_decoder:  # lowered only: a pool made smaller meanwhile (reuse off) stays so
            self.pool.capacity = min(self.pool.capacity, self.decoder_max_count)

    def reserve(self) -> Reservation:
        """Hold a decoder before the recognition can start (raises :class:`~.admission.Busy`); pass it to :meth:`session`.
        What the HTTP routes (REST, OpenAI) do, before they read the body: the decoder is counted as an HTTP request's
        (:attr:`~.admission.Admission.held_by_requests`); a stream's session reserves its own."""
        return self.admission.reserve(request=True)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.replenisher.shutdown(wait=False, cancel_futures=True)
        self.lanes.shutdown()
        self.pool.clear()

    def warm(self, model: LoadedModel, pcm: bytes, sample_rate: int) -> bool:
        """Decode ``pcm`` on a new recognizer and leave it warm in the pool; True when kept.

        Blocking: run it on :attr:`executor`. Start-up warm-up (:mod:`.warmup`) calls it
        once per recognizer to keep, so it never takes one from the pool. The audio is
        kept to warm the replacements of recognizers that retire later. A warm-up too
        long to keep is not replaced (by another as long).
        """
        self._warmup_pcm[WarmPool.key(model)] = (pcm, sample_rate)
        recognition = Recognition(model, sample_rate, pool=self.pool, warmup=True)
        for piece in chunks(Audio(pcm, sample_rate, 1), FILE_CHUNK_SECONDS):
            recognition.accept(piece)
        recognition.finish()
        return recognition.release() is Release.KEPT

    def _retired(self, recognition: Recognition, *, handover: bool) -> None:
        """A session's recognizer retired (its clock ran long): count it and warm a replacement.

        Without replacements the pool shrinks by one at every retirement, and a burst of
        streams after light traffic finds it nearly empty, every stream then building a new
        recognizer. Only for models warmed at start-up (their warm-up audio), and only
        while the pool and the sessions' recognizers together are short of the pool's
        capacity (checked when the replacement's turn comes).
        """
        self.pool.count(retired=1, handovers=int(handover))
        warmup = self._warmup_pcm.get(WarmPool.key(recognition.model))
        if warmup is None:
            return
        try:
            self.replenisher.submit(self._replace, recognition.model, *warmup)
        except RuntimeError:  # shut down
            pass

    def _handed_over(self, recognition: Recognition) -> None:
        self._retired(recognition, handover=True)

    def _replace(self, model: LoadedModel, pcm: bytes, sample_rate: int) -> None:
        if len(self.pool) + self.active >= self.pool.capacity:
            return
        try:
            if self.warm(model, pcm, sample_rate):
                self.pool.count(replaced=1)
        except Exception:  # an optimisation: sessions build recognizers of their own instead
            log.exception("warming a replacement recognizer failed")

    def _release(self, recognition: Recognition) -> None:
        """On the session's lane after its last job: the recognizer back to the pool, or retired."""
        try:
            if recognition.release() is Release.RETIRED:
                self._retired(recognition, handover=False)
        finally:
            self.pool.done()

    @asynccontextmanager
    async def session(
        self,
        locale: str,
        sample_rate: int,
        channels: int = 1,
        *,
        route: str,
        offset: float = 0.0,
        reservation: Reservation | None = None,
        **options: object,
    ) -> AsyncIterator[Session]:
        """Admit a stream (or raise :class:`~.admission.Busy`), resolve its model, and account for it at the end.

        ``reservation``: a decoder the route reserved already (:meth:`reserve`); the
        session gives it back at its end. Raises
        :class:`~speech_recognizer.models.UnknownLocale` or
        :class:`~speech_recognizer.models.ModelError` for the locale.
        """
        held = reservation if reservation is not None and reservation.held else self.admission.reserve()
        lane = self.lanes.take()
        session: Session | None = None
        try:
            model = await self.registry.aload(locale)
            loop = asyncio.get_running_loop()
            recognition = await loop.run_in_executor(
                lane,
                lambda: Recognition(model, sample_rate, channels, offset=offset, pool=self.pool, **options),  # type: ignore[arg-type]
            )
            session = Session(recognition, route, lane, on_handover=self._handed_over)
            yield session
        finally:
            self.lanes.give(lane)
            held.release()
            if session is not None:
                self.pool.expect()
                recognition = session.recognition
                try:  # back to the pool off the event loop, after the session's job still running
                    session.close(lambda: self._release(recognition))
                except RuntimeError:  # the executor is shut down
                    self.pool.done()
            if session is not None and self._on_end is not None:
                rec = session.recognition
                try:
                    self._on_end(SessionRecord(route, session.locale, rec.audio_seconds, rec.decoder_cpu_seconds, session.phrases,
                                               abandoned_seconds=session.abandoned_seconds))
                except Exception:  # accounting must never break a response
                    log.exception("recording usage failed")
