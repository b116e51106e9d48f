"""Streaming sample-rate conversion to the model's rate (libsoxr, through python-soxr).

Every stream is converted to its model's rate before Vosk sees it, so one warm
pool serves every input rate: a recognizer built for 16 kHz decodes an 8 kHz
telephone call or a 44.1 kHz recording alike, and no request waits for a new
recognizer because of its rate (docs/engine.md). The converter keeps its state
from chunk to chunk, so the output is the same whatever the chunking, and is
aligned with the input: output sample ``k`` is at ``k / out_rate`` seconds of the
stream.

libsoxr converts in float32 and is given float32 here, the samples rounded back to
16 bits by :func:`to_pcm16`: with 16-bit output it would add TPDF dither, noise of
about one step seeded per converter (python-soxr has no way to pass
``SOXR_NO_DITHER``), and the same audio would decode differently from one stream to
the next, as Kaldi's own dither did (models.without_dither).
"""

from __future__ import annotations

import numpy as np
import soxr

#: libsoxr's quality recipe: "HQ" is its default, 20-bit precision, a passband to 91 % of Nyquist.
QUALITY = "HQ"


#: Full scale of 16-bit samples as floats in [-1, 1).
_SCALE = 32768.0


def to_float(pcm: bytes) -> np.ndarray:
    """16-bit little-endian PCM as float32 samples in [-1, 1)."""
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / np.float32(_SCALE)


def to_pcm16(samples: np.ndarray) -> bytes:
    """float samples as 16-bit little-endian PCM: rounded to the nearest step, clipped, no dither."""
    return np.clip(np.rint(samples * _SCALE), -_SCALE, _SCALE - 1).astype("<i2").tobytes()


class Resampler:
    """Mono 16-bit little-endian PCM at ``in_rate`` to ``out_rate``, one chunk after another."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32", quality=QUALITY) if in_rate != out_rate else None

    def __call__(self, pcm: bytes, last: bool = False) -> bytes:
        """The converted samples available after ``pcm``; ``last`` flushes what the filter still holds."""
        if self._stream is None:
            return pcm
        return to_pcm16(self._stream.resample_chunk(to_float(pcm), last=last))


def resample(pcm: bytes, in_rate: int, out_rate: int) -> bytes:
    """A whole recording of mono 16-bit PCM, converted in one piece (as :class:`Resampler` converts a stream)."""
    if in_rate == out_rate:
        return pcm
    return to_pcm16(soxr.resample(to_float(pcm), in_rate, out_rate, quality=QUALITY))
