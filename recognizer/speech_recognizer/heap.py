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

Both are about glibc's malloc. When another allocator serves the process's
``malloc`` (the recognizer image preloads jemalloc: ``LD_PRELOAD``, with
``MALLOC_CONF`` giving freed memory back on a background thread; bench/notes.md,
"jemalloc"), glibc's arenas hold next to nothing: :func:`allocator` tells which
library it is, and then neither setting is applied nor a trim counted.
:func:`report` logs it once at start-up.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


#: ``mallopt`` parameter: the largest request served from fastbins (0: none).
M_MXFAST = 1


@functools.cache
def _libc_path() -> str | None:
    return ctypes.util.find_library("c")  # runs ldconfig: once


def _libc_function(name: str) -> ctypes._NamedFuncPointer | None:
    """A C library function by name (a new function object: its argtypes are the caller's), or None."""
    lib = _libc_path()
    try:
        return getattr(ctypes.CDLL(lib), name) if lib else None
    except (OSError, AttributeError):
        return None


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p), ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


class _LinkMap(ctypes.Structure):
    pass


_LinkMap._fields_ = [
    ("l_addr", ctypes.c_void_p),
    ("l_name", ctypes.c_char_p),
    ("l_ld", ctypes.c_void_p),
    ("l_next", ctypes.POINTER(_LinkMap)),
    ("l_prev", ctypes.POINTER(_LinkMap)),
]
#: ``dlinfo`` request: the object's ``struct link_map``.
RTLD_DI_LINKMAP = 2


@functools.cache
def allocator() -> str | None:
    """Which library's ``malloc`` this process calls: ``"glibc"``, or the file name of the one that
    overrides glibc's (``"libjemalloc.so.2"`` under ``LD_PRELOAD``); None on another C library.

    The first loaded library that defines ``malloc`` itself, in the dynamic linker's order (the
    program, the preloaded libraries, then the others): the one every call binds to. Not the
    address ``malloc`` resolves to: a program built without PIE (Debian's python3.11) has its own
    stub for it there.
    """
    if _libc_function("gnu_get_libc_version") is None:
        return None
    dlinfo, dladdr = _libc_function("dlinfo"), _libc_function("dladdr")
    if dlinfo is None or dladdr is None:
        return None
    dlinfo.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
    dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
    node = ctypes.POINTER(_LinkMap)()
    if dlinfo(ctypes.CDLL(None)._handle, RTLD_DI_LINKMAP, ctypes.byref(node)) != 0:
        return None
    while node:
        name = node.contents.l_name
        if name:  # the program itself has none
            try:
                address = ctypes.cast(ctypes.CDLL(os.fsdecode(name)).malloc, ctypes.c_void_p).value
            except (OSError, AttributeError):  # the vDSO; a library without malloc of its own or its dependencies'
                address = None
            info = _DlInfo()
            if address and dladdr(address, ctypes.byref(info)) and info.dli_fname == name:
                base = os.path.basename(os.fsdecode(name))
                return "glibc" if base.startswith("libc.so") else base
        node = node.contents.l_next
    return None


def glibc_malloc() -> bool:
    """True when glibc's malloc serves this process: what :func:`disable_fastbins` and the trims act on."""
    return allocator() == "glibc"


def report() -> None:
    """Log, once at start-up, which allocator serves the decoders and what this module does about it."""
    which = allocator()
    if which == "glibc":
        log.info("native heap: glibc malloc (fastbins off, freed memory trimmed after recognizers are dropped)")
    elif which is not None:
        log.info("native heap: %s serves malloc (no glibc tuning, no malloc_trim; MALLOC_CONF=%s)", which, os.environ.get("MALLOC_CONF", ""))
    else:
        log.info("native heap: not glibc (no tuning, no trims)")


def _malloc_trim() -> Callable[[], bool] | None:
    if not glibc_malloc():  # another allocator serves malloc: glibc's heap has nothing to give back
        return None
    fn = _libc_function("malloc_trim")
    if fn is None:
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return lambda: bool(fn(0))


def disable_fastbins() -> bool:
    """Stop glibc from keeping small freed blocks in fastbins (``M_MXFAST`` 0), process-wide; call it early,
    before the model loads. True when set; does nothing (False) where ``mallopt`` is missing (musl, macOS) or
    another allocator serves ``malloc`` (:func:`allocator`)."""
    if not glibc_malloc():
        return False
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
