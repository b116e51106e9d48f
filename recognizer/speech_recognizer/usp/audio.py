"""The audio format of a USP stream: a RIFF/WAVE header first, or the format from ``speech.config``."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Mapping

from .frames import CLOSE_INVALID_DATA, FrameError

_PCM = 1
_EXTENSIBLE = 0xFFFE


@dataclass(frozen=True)
class AudioFormat:
    """16-bit little-endian PCM at ``sample_rate`` with ``channels`` interleaved channels."""

    sample_rate: int = 16000
    channels: int = 1

    @property
    def bytes_per_second(self) -> int:
        return self.sample_rate * self.channels * 2


def from_config(config: Mapping[str, Any]) -> AudioFormat:
    """The format ``speech.config`` announces (``context.audio.source``), default 16 kHz mono."""
    source = ((config.get("context") or {}).get("audio") or {}).get("source") or {}
    try:
        rate = int(source.get("samplerate") or 16000)
        channels = int(source.get("channelcount") or 1)
    except (TypeError, ValueError):
        return AudioFormat()
    if rate <= 0 or channels <= 0:
        return AudioFormat()
    return AudioFormat(rate, channels)


def split_riff(payload: bytes) -> tuple[AudioFormat, bytes] | None:
    """``(format, pcm after the header)`` when ``payload`` starts with a RIFF/WAVE header, else None.

    Raises :class:`FrameError` (1007) for a RIFF header that is not 16-bit PCM or is cut short.
    """
    if not payload.startswith(b"RIFF"):
        return None
    if len(payload) < 12 or payload[8:12] != b"WAVE":
        raise FrameError(CLOSE_INVALID_DATA, "RIFF header without WAVE")
    pos = 12
    fmt: AudioFormat | None = None
    while pos + 8 <= len(payload):
        chunk, size = payload[pos : pos + 4], struct.unpack_from("<I", payload, pos + 4)[0]
        body = pos + 8
        if chunk == b"fmt ":
            if size < 16 or body + 16 > len(payload):
                raise FrameError(CLOSE_INVALID_DATA, "RIFF fmt chunk is cut short")
            tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", payload, body)
            if tag not in (_PCM, _EXTENSIBLE) or bits != 16:
                raise FrameError(CLOSE_INVALID_DATA, f"audio must be 16-bit PCM (format {tag}, {bits} bits)")
            if channels < 1 or not 4000 <= rate <= 192000:
                raise FrameError(CLOSE_INVALID_DATA, f"unsupported audio: {rate} Hz, {channels} channels")
            fmt = AudioFormat(rate, channels)
        elif chunk == b"data":
            if fmt is None:
                raise FrameError(CLOSE_INVALID_DATA, "RIFF data chunk before its fmt chunk")
            return fmt, payload[body:]
        pos = body + size + (size & 1)
    raise FrameError(CLOSE_INVALID_DATA, "RIFF header without a data chunk")
