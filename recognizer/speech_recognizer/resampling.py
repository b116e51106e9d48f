"""Streaming sample-rate conversion to the model's rate (libsoxr, through python-soxr).

Every stream is converted to its model's rate before Vosk sees it, so one warm
pool serves every input rate: a recognizer built for 16 kHz decodes an 8 kHz
telephone call or a 44.1 kHz recording alike, and no request waits for a new
recognizer because of its rate (docs/engine.md). The converter keeps its state
from chunk to chunk, so the output is the same whatever the chunking, up to the
filter's rounding, and is aligned with the input: output sample ``k`` is at
``k / out_rate`` seconds of the stream.
"""

from __future__ import annotations

import numpy as np
import soxr

#: libsoxr's quality recipe: "HQ" is its default, 20-bit precision, a passband to 91 % of Nyquist.
QUALITY = "HQ"


class Resampler:
    """Mono 16-bit little-endian PCM at ``in_rate`` to ``out_rate``, one chunk after another."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=QUALITY) if in_rate != out_rate else None

    def __call__(self, pcm: bytes, last: bool = False) -> bytes:
        """The converted samples available after ``pcm``; ``last`` flushes what the filter still holds."""
        if self._stream is None:
            return pcm
        samples = np.frombuffer(pcm, dtype="<i2")
        return self._stream.resample_chunk(samples, last=last).astype("<i2", copy=False).tobytes()


def resample(pcm: bytes, in_rate: int, out_rate: int) -> bytes:
    """A whole recording of mono 16-bit PCM, converted in one piece."""
    if in_rate == out_rate:
        return pcm
    samples = np.frombuffer(pcm, dtype="<i2")
    return soxr.resample(samples, in_rate, out_rate, quality=QUALITY).astype("<i2", copy=False).tobytes()
