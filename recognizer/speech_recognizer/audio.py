"""Audio containers the recognizer accepts, decoded to 16-bit PCM.

WAV (any PCM/float/A-law/mu-law subtype, any rate and channel count; streamed
WAV whose size fields are 0 or too large is read to the end), Ogg/Opus and
Ogg/Vorbis, FLAC, and headerless 16-bit PCM when the content type says so
(``audio/l16; rate=16000`` or ``audio/wav; codecs=audio/pcm; samplerate=16000``).
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import numpy as np


class AudioError(ValueError):
    """The body is not audio we can decode; ``status`` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Audio:
    """Interleaved 16-bit little-endian PCM."""

    pcm: bytes
    sample_rate: int
    channels: int

    @property
    def seconds(self) -> float:
        return len(self.pcm) / (2 * self.channels * self.sample_rate)


@dataclass(frozen=True)
class WavFormat:
    """What a RIFF/WAVE ``fmt`` chunk says."""

    format_tag: int
    channels: int
    sample_rate: int
    bits: int


PCM, FLOAT, ALAW, MULAW, EXTENSIBLE = 1, 3, 6, 7, 0xFFFE
SUPPORTED_TYPES = ("audio/wav", "audio/x-wav", "audio/wave", "audio/ogg", "audio/opus", "audio/flac", "audio/l16")


def content_params(content_type: str) -> tuple[str, dict[str, str]]:
    """``audio/wav; codecs=audio/pcm; samplerate=16000`` -> ("audio/wav", {"codecs": ..., "samplerate": ...})."""
    parts = [p.strip() for p in content_type.split(";")]
    params: dict[str, str] = {}
    for part in parts[1:]:
        if "=" in part:
            key, value = part.split("=", 1)
            params[key.strip().lower()] = value.strip().strip('"')
    return parts[0].lower(), params


def parse_wav_header(data: bytes) -> tuple[WavFormat, int, int]:
    """Parse RIFF chunks up to ``data``: returns the format, the data offset and data length.

    The length is what the header says, clipped to what is present (streamed
    WAV often says 0 or 0xFFFFFFFF).
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise AudioError("not a RIFF/WAVE file")
    pos = 12
    fmt: WavFormat | None = None
    while pos + 8 <= len(data):
        chunk_id = data[pos : pos + 4]
        (size,) = struct.unpack_from("<I", data, pos + 4)
        body = pos + 8
        if chunk_id == b"fmt ":
            if size < 16 or body + 16 > len(data):
                raise AudioError("truncated WAV header: the fmt chunk is incomplete")
            tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", data, body)
            if tag == EXTENSIBLE and size >= 40 and body + 26 <= len(data):
                (tag,) = struct.unpack_from("<H", data, body + 24)
            fmt = WavFormat(tag, channels, rate, bits)
        elif chunk_id == b"data":
            if fmt is None:
                raise AudioError("WAV data chunk comes before its fmt chunk")
            available = len(data) - body
            length = available if size == 0 or size > available else size
            return fmt, body, length
        pos = body + size + (size & 1)
    raise AudioError("truncated WAV header: no data chunk")


def pcm16_header(data: bytes) -> tuple[WavFormat, int]:
    """The format and the data offset of a WAV header that must announce 16-bit PCM.

    For streams whose header comes first and whose PCM follows in pieces (the
    Speech SDK sends a 44-byte RIFF header with sizes 0): what follows the
    offset is PCM as it is. Raises :class:`AudioError` for any other encoding.
    """
    fmt, offset, _ = parse_wav_header(data)
    if fmt.format_tag not in (PCM, EXTENSIBLE) or fmt.bits != 16:
        raise AudioError(
            f"the stream must be 16-bit PCM (WAV format tag {fmt.format_tag:#x}, {fmt.bits} bits)", status=415
        )
    _check_format(WavFormat(PCM, fmt.channels, fmt.sample_rate, fmt.bits))
    return fmt, offset


def _check_format(fmt: WavFormat) -> None:
    if fmt.channels < 1 or fmt.channels > 32:
        raise AudioError(f"WAV with {fmt.channels} channels is not supported")
    if fmt.sample_rate < 4000 or fmt.sample_rate > 192000:
        raise AudioError(f"WAV sample rate {fmt.sample_rate} Hz is outside 4000..192000")
    if fmt.format_tag not in (PCM, FLOAT, ALAW, MULAW):
        raise AudioError(
            f"unsupported WAV encoding (format tag {fmt.format_tag:#x}); send PCM, float, A-law or mu-law",
            status=415,
        )


def _decode_with_soundfile(data: bytes, what: str) -> Audio:
    import soundfile

    try:
        samples, rate = soundfile.read(io.BytesIO(data), dtype="int16", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError, TypeError, ValueError) as exc:
        raise AudioError(f"cannot decode the {what} audio: {exc}") from None
    return Audio(np.ascontiguousarray(samples).astype("<i2").tobytes(), int(rate), int(samples.shape[1]))


def decode_wav(data: bytes) -> Audio:
    """Decode a WAV file; 16-bit PCM is read directly so streamed sizes work."""
    fmt, offset, length = parse_wav_header(data)
    _check_format(fmt)
    if fmt.format_tag == PCM and fmt.bits == 16:
        frame = 2 * fmt.channels
        pcm = data[offset : offset + length - length % frame]
        return Audio(pcm, fmt.sample_rate, fmt.channels)
    if fmt.format_tag == PCM and fmt.bits == 8:
        raw = np.frombuffer(data[offset : offset + length], dtype=np.uint8)
        pcm = ((raw.astype(np.int16) - 128) << 8).astype("<i2")
        usable = len(pcm) - len(pcm) % fmt.channels
        return Audio(pcm[:usable].tobytes(), fmt.sample_rate, fmt.channels)
    fixed = bytearray(data[: offset + length])
    # soundfile needs true sizes; patch them for streamed files.
    struct.pack_into("<I", fixed, 4, len(fixed) - 8)
    struct.pack_into("<I", fixed, offset - 4, length)
    return _decode_with_soundfile(bytes(fixed), "WAV")


def decode(data: bytes, content_type: str = "") -> Audio:
    """Decode a request body by its bytes, using the content type only for headerless PCM."""
    if not data:
        raise AudioError("the request body is empty: send WAV (PCM) or Ogg/Opus audio")
    mime, params = content_params(content_type or "")
    if data[:4] == b"RIFF":
        return decode_wav(data)
    if data[:4] in (b"OggS", b"fLaC"):
        return _decode_with_soundfile(data, "Ogg" if data[:4] == b"OggS" else "FLAC")
    if mime == "audio/l16" or params.get("codecs", "").lower() == "audio/pcm":
        rate = params.get("rate") or params.get("samplerate")
        if rate and rate.isdigit():
            channels = int(params.get("channels", "1") or 1)
            usable = len(data) - len(data) % (2 * channels)
            return Audio(data[:usable], int(rate), channels)
    if mime and mime not in SUPPORTED_TYPES and not mime.startswith("application/octet-stream"):
        raise AudioError(f"unsupported content type {mime!r}: send audio/wav or audio/ogg; codecs=opus", status=415)
    raise AudioError("the body is not WAV, Ogg or FLAC audio (no RIFF/OggS/fLaC signature)")


def mono(pcm: bytes, channels: int) -> bytes:
    """Interleaved 16-bit PCM down-mixed to mono (the channels' mean, rounded); whole frames only."""
    if channels == 1:
        return pcm
    frame_bytes = 2 * channels
    samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % frame_bytes], dtype="<i2").reshape(-1, channels)
    return samples.mean(axis=1).round().astype("<i2").tobytes()


def chunks(audio: Audio, seconds: float) -> list[bytes]:
    """Split PCM into pieces of ``seconds`` (whole frames)."""
    size = max(1, int(audio.sample_rate * seconds)) * 2 * audio.channels
    return [audio.pcm[i : i + size] for i in range(0, len(audio.pcm), size)]
