"""Giving freed native heap memory back to the OS.

A dropped ``KaldiRecognizer`` frees tens of MiB (its lazily composed decoding
graph), but glibc keeps freed memory in its arenas: the server's RSS would keep
the high-water mark of every recognizer it ever dropped. ``malloc_trim(0)``
returns the free pages. It walks every arena under their locks, so it runs on
a background thread, at most once per :attr:`HeapTrimmer.min_interval`, and
requests in between are coalesced. On a C library without ``malloc_trim``
(musl, macOS) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


def _malloc_trim() -> Callable[[], bool] | None:
    name = ctypes.util.find_library("c")
    try:
        fn = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None
    if fn is None:
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return lambda: bool(fn(0))


class HeapTrimmer:
    """Coalesces trim requests onto one background thread, at most one trim per ``min_interval`` seconds."""

    def __init__(self, min_interval: float = 5.0, trim: Callable[[], bool] | None = None) -> None:
        self.min_interval = min_interval
        self._trim = trim if trim is not None else _malloc_trim()
        self._wanted = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._last = float("-inf")
        #: Trims done, and the seconds the last one took.
        self.count = 0
        self.last_seconds = 0.0

    @property
    def available(self) -> bool:
        return self._trim is not None

    def request(self) -> None:
        """Ask for a trim soon; returns at once."""
        if self._trim is None:
            return
        self._wanted.set()
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="heap-trim", daemon=True)
                self._thread.start()

    def trim_now(self) -> bool:
        """Trim on the calling thread; True when memory was given back."""
        if self._trim is None:
            return False
        started = time.monotonic()
        try:
            released = self._trim()
        except Exception:  # never let housekeeping break decoding
            log.exception("malloc_trim failed")
            return False
        finally:
            self._last = time.monotonic()
        self.count += 1
        self.last_seconds = self._last - started
        return released

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            if (wait := self._last + self.min_interval - time.monotonic()) > 0:
                time.sleep(wait)
            self._wanted.clear()
            self.trim_now()


#: The process's trimmer: the engine asks it to trim after dropping a recognizer.
TRIMMER = HeapTrimmer()
