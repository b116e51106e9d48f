"""The native heap: a faster allocator setting for Vosk, and freed memory given back to the OS.

Vosk's decoder allocates and frees many small blocks per chunk. glibc keeps
small freed blocks in "fastbins" and merges them all (``malloc_consolidate``)
whenever a larger block is asked for: 5 % of a decoding thread's samples in a
perf profile, and 7-8 % of its CPU measured by A/B in one process
(bench/notes.md). :func:`disable_fastbins` turns them off (``M_MXFAST`` 0; the
per-thread cache still serves small blocks); the server does it at start-up.

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


#: ``mallopt`` parameter: the largest request served from fastbins (0: none).
M_MXFAST = 1


def _libc_function(name: str) -> ctypes._NamedFuncPointer | None:
    """A glibc function by name, or None on another C library."""
    lib = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(lib), name) if lib else None
    except (OSError, AttributeError):
        return None


def _malloc_trim() -> Callable[[], bool] | None:
    fn = _libc_function("malloc_trim")
    if fn is None:
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return lambda: bool(fn(0))


def disable_fastbins() -> bool:
    """Stop glibc from keeping small freed blocks in fastbins (``M_MXFAST`` 0), process-wide; call it early,
    before the model loads. True when set; does nothing (False) where ``mallopt`` is missing (musl, macOS)."""
    fn = _libc_function("mallopt")
    if fn is None:
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_int]
    fn.restype = ctypes.c_int
    return bool(fn(M_MXFAST, 0))


class HeapTrimmer:
    """Coalesces trim requests onto one background thread, at most one trim per ``min_interval`` seconds."""

    def __init__(self, min_interval: float = 5.0, trim: Callable[[], bool] | None = None) -> None:
        self.min_interval = min_interval
        self._trim = trim if trim is not None else _malloc_trim()
        self._wanted = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._last = float("-inf")
        #: Trims done, and the seconds they took in all (/metrics).
        self.count = 0
        self.seconds = 0.0

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
        self.seconds += self._last - started
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
