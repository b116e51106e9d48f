"""In-process Vosk: the reference the server's streams are measured against, run and measured as they are
(the clients of the server's routes are :mod:`harness.clients`)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

from harness.clients import StreamResult, lag_series
from speech_recognizer.audio import dither_zeros
from speech_recognizer.resampling import Resampler

from .common import Audio

# ---- in-process Vosk --------------------------------------------------------------------


class InProcess:
    """Plain ``KaldiRecognizer`` streams on threads; recognizers are warmed the same way the server's pool is.

    Recognizers run at the model's rate (``rate``); a stream at another rate goes through the server's
    streaming resampler first (:class:`speech_recognizer.resampling.Resampler`, same settings), so both
    sides decode the same samples.
    """

    def __init__(self, model: object, rate: int = 16000) -> None:
        self.model = model
        self.rate = rate
        self._idle: list[object] = []
        self._lock = threading.Lock()

    def _recognizer(self) -> object:
        import vosk

        with self._lock:
            if self._idle:
                return self._idle.pop()
        rec = vosk.KaldiRecognizer(self.model, float(self.rate))
        rec.SetWords(True)
        rec.SetPartialWords(True)
        return rec

    def _give(self, rec: object) -> None:
        with self._lock:
            self._idle.append(rec)

    def stream(self, audio: Audio, *, paced: bool, delay: float = 0.0, partials: bool = True) -> StreamResult:
        """One stream; ``latencies`` are Vosk's own per-chunk decode times (accept + partial).

        ``partials=False`` skips ``PartialResult`` as the server's REST route does for files."""
        res = StreamResult("in-process", audio.seconds)
        time.sleep(delay)
        rec = self._recognizer()
        resample = Resampler(audio.rate, self.rate)
        t0 = time.monotonic()
        last = ""
        fed = 0
        for k, chunk in enumerate(audio.chunks()):
            due = t0 + k * audio.chunk_s
            if paced and (wait := due - time.monotonic()) > 0:
                time.sleep(wait)
            start = time.monotonic()
            partial = None
            samples = dither_zeros(resample(chunk), fed)  # as the server feeds Vosk
            fed += len(samples) // 2
            if not samples:
                pass
            elif rec.AcceptWaveform(samples):
                rec.Result()
                last = ""
            elif partials:
                partial = rec.PartialResult()
            got = time.monotonic()
            res.latencies.append(got - start)
            if paced:
                res.lag.append(((k + 1) * audio.chunk_s, got - due))
                text = json.loads(partial).get("partial", "").strip() if partial else ""
                if text and text != last:  # the server sends a USP hypothesis for this chunk
                    res.changed_latencies.append(got - start)
                    last = text
        eof = time.monotonic()
        if tail := resample(b"", last=True):
            rec.AcceptWaveform(dither_zeros(tail, fed))
        rec.FinalResult()
        res.final_latency = time.monotonic() - eof
        res.wall_s = time.monotonic() - t0
        res.lag = lag_series(res.lag)
        res.ok = True
        self._give(rec)
        return res

    def warm(self, audio: Audio | list[Audio], n: int, passes: int = 1, *, partials: bool = True) -> None:
        """Leave ``n`` warm recognizers idle, each having decoded ``audio`` (stream ``i``: ``audio[i]`` of a list)
        ``passes`` times, as the runs do (on ``n`` threads, with or without intermediate results: computing
        those is warmed up too)."""
        each = audio if isinstance(audio, list) else [audio] * n
        for _ in range(passes):
            self._threads(n, lambda i: self.stream(each[i % len(each)], paced=False, partials=partials))

    @staticmethod
    def _threads(n: int, fn: Callable[[int], object]) -> float:
        """``fn(i)`` on ``n`` threads at once; the wall time."""
        threads = [threading.Thread(target=fn, args=(i,)) for i in range(n)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.monotonic() - t0

    def files(self, audio: Audio, n: int, count: int) -> float:
        """``count`` decodes of ``audio`` on ``n`` threads, without intermediate results (as REST); the wall time."""
        left = list(range(count))
        lock = threading.Lock()

        def work() -> None:
            while True:
                with lock:
                    if not left:
                        return
                    left.pop()
                self.stream(audio, paced=False, partials=False)

        return self._threads(n, lambda i: work())

    def run(self, audio: Audio | list[Audio], n: int, *, paced: bool, stagger: float = 0.0) -> tuple[list[StreamResult], float]:
        """``n`` streams on ``n`` threads (stream ``i`` speaks ``audio[i]`` when given a list); the results and
        the wall time of the whole run."""
        results: list[StreamResult | None] = [None] * n
        each = audio if isinstance(audio, list) else [audio] * n

        def one(i: int) -> None:
            results[i] = self.stream(each[i % len(each)], paced=paced, delay=i * stagger)

        wall = self._threads(n, one)
        return [r for r in results if r is not None], wall
