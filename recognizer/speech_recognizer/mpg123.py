"""MP3 decoded by the system's libmpg123 (``libmpg123.so.0``, through ctypes) with its quiet flag set.

libsndfile decodes MP3 with libmpg123 too, but sets its parameters itself, the quiet flag (``MPG123_QUIET``) not among
them, and the ``soundfile`` wheel links its libmpg123 into itself: for every frame whose header is whole and whose
contents are damaged, mpg123 wrote a line to the process's stderr ("part2_3_length ... too large", "big_values too
large!"), thousands for one upload, between the log's own lines. Opened here as libsndfile opens it (its reader, the
flags it adds and removes, 32-bit float samples) and quiet, it decodes the same samples and conceals a damaged frame
as it did (silence), saying nothing; it counts none. :class:`Mp3` reads like the ``soundfile.SoundFile`` it
replaces (what :mod:`speech_recognizer.audio` uses of one: float samples, which it converts to 16-bit as libsndfile did).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
from typing import BinaryIO

import numpy as np


def _load() -> ctypes.CDLL:
    """The system's libmpg123: the recognizer image installs Debian's (Dockerfile); a source install needs one."""
    try:
        return ctypes.CDLL("libmpg123.so.0")
    except OSError:
        found = ctypes.util.find_library("mpg123")  # where another platform keeps it
    try:
        return ctypes.CDLL(found or "libmpg123.so.0")
    except OSError:
        raise ImportError("libmpg123, the MP3 decoder, is not installed (Debian's libmpg123-0)") from None


_lib = _load()

_Handle = ctypes.c_void_p
_READ = ctypes.CFUNCTYPE(ctypes.c_ssize_t, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
_SEEK = ctypes.CFUNCTYPE(ctypes.c_long, ctypes.c_void_p, ctypes.c_long, ctypes.c_int)  # off_t: long on LP64
_CLEANUP = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
for _name, _restype, _argtypes in (
    ("mpg123_new", _Handle, [ctypes.c_char_p, ctypes.POINTER(ctypes.c_int)]),
    ("mpg123_param", ctypes.c_int, [_Handle, ctypes.c_int, ctypes.c_long, ctypes.c_double]),
    ("mpg123_replace_reader_handle", ctypes.c_int, [_Handle, _READ, _SEEK, _CLEANUP]),
    ("mpg123_open_handle", ctypes.c_int, [_Handle, ctypes.c_void_p]),
    ("mpg123_getformat", ctypes.c_int, [_Handle, ctypes.POINTER(ctypes.c_long), ctypes.POINTER(ctypes.c_int),
                                        ctypes.POINTER(ctypes.c_int)]),
    ("mpg123_length", ctypes.c_long, [_Handle]),
    ("mpg123_read", ctypes.c_int, [_Handle, ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t)]),
    ("mpg123_plain_strerror", ctypes.c_char_p, [ctypes.c_int]),
    ("mpg123_close", ctypes.c_int, [_Handle]),
    ("mpg123_delete", None, [_Handle]),
):
    getattr(_lib, _name).restype, getattr(_lib, _name).argtypes = _restype, _argtypes

#: mpg123.h: parameters, flags, the float encoding, return codes.
_ADD_FLAGS, _REMOVE_FLAGS = 2, 13
_QUIET, _GAPLESS, _FORCE_FLOAT, _AUTO_RESAMPLE, _NO_FRANKENSTEIN = 0x20, 0x40, 0x400, 0x8000, 0x1000000
_ENC_FLOAT_32 = 0x200
_OK, _DONE = 0, -12
#: What libsndfile says of a length it does not know.
UNKNOWN_FRAMES = (1 << 63) - 1


class Mp3:
    """An MP3 decoded as it is read from ``source`` (a seekable file: mpg123 seeks to its end for an ID3v1 tag, as
    under libsndfile), to 32-bit float samples in -1..1. Raises RuntimeError when mpg123 cannot open it."""

    #: What ``soundfile`` calls float samples: :func:`speech_recognizer.audio._read_blocks` reads them as they are.
    subtype = "FLOAT"

    def __init__(self, source: BinaryIO | io.RawIOBase) -> None:
        self._source = source
        source.seek(0)  # read from its start, wherever a look at its first bytes left it
        # kept as long as the handle: mpg123 calls them
        self._callbacks = (_READ(self._read), _SEEK(self._seek), _CLEANUP(0))
        error = ctypes.c_int()
        self._handle = _lib.mpg123_new(None, ctypes.byref(error))
        if not self._handle:
            raise RuntimeError(_said(error.value))
        try:
            _lib.mpg123_replace_reader_handle(self._handle, *self._callbacks)
            _lib.mpg123_param(self._handle, _REMOVE_FLAGS, _AUTO_RESAMPLE, 1.0)
            _lib.mpg123_param(self._handle, _ADD_FLAGS, _FORCE_FLOAT | _GAPLESS | _NO_FRANKENSTEIN | _QUIET, 1.0)
            _check(_lib.mpg123_open_handle(self._handle, None))
            rate, channels, encoding = ctypes.c_long(), ctypes.c_int(), ctypes.c_int()
            _check(_lib.mpg123_getformat(self._handle, ctypes.byref(rate), ctypes.byref(channels), ctypes.byref(encoding)))
            if encoding.value != _ENC_FLOAT_32:
                raise RuntimeError(f"mpg123 gives encoding {encoding.value:#x}, not 32-bit float")
        except BaseException:
            self.close()
            raise
        self.samplerate, self.channels = rate.value, channels.value
        length = _lib.mpg123_length(self._handle)
        #: The frames its Xing/Info header counts, less an encoder's delay and padding; :data:`UNKNOWN_FRAMES`: none.
        self.frames = length if length >= 0 else UNKNOWN_FRAMES
        self._position = 0

    def _read(self, _: int | None, buffer: int | None, size: int) -> int:
        try:
            target = memoryview((ctypes.c_char * size).from_address(buffer or 0)).cast("B")
            return self._source.readinto(target) or 0  # type: ignore[union-attr]  # a file opened "rb" has it
        except Exception:  # noqa: BLE001 - a callback that raised would be printed to stderr, mpg123 told nothing
            return -1

    def _seek(self, _: int | None, offset: int, whence: int) -> int:
        try:
            return int(self._source.seek(offset, whence))
        except Exception:  # noqa: BLE001 - as in _read
            return -1

    def read(self, frames: int, dtype: str = "float32", always_2d: bool = True) -> np.ndarray:
        """Up to ``frames`` frames (fewer only at its end, and never past :attr:`frames`, as libsndfile reads), frames x
        channels, whatever ``dtype`` and ``always_2d`` say (``soundfile``'s, taken as :attr:`subtype` has them);
        RuntimeError when mpg123 fails."""
        out = np.empty((max(0, min(frames, self.frames - self._position)), self.channels), dtype=np.float32)
        want, done, got = out.nbytes, ctypes.c_size_t(), 0
        while got < want:
            status = _lib.mpg123_read(self._handle, out.ctypes.data + got, want - got, ctypes.byref(done))
            if status != _DONE:
                _check(status)
            got += done.value
            if status == _DONE or not done.value:  # as libsndfile: its end, or a read that gave nothing
                break
        self._position += got // out.itemsize // self.channels
        return out[: got // out.itemsize // self.channels]

    def close(self) -> None:
        if self._handle:
            _lib.mpg123_close(self._handle)
            _lib.mpg123_delete(self._handle)
            self._handle = None

    def __enter__(self) -> Mp3:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check(status: int) -> None:
    if status != _OK:
        raise RuntimeError(_said(status))


def _said(status: int) -> str:
    return (_lib.mpg123_plain_strerror(status) or b"").decode(errors="replace") or f"mpg123 error {status}"
