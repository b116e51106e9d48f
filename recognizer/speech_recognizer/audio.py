"""Audio containers the recognizer accepts, decoded to mono 16-bit PCM within a length limit.

WAV (8/16/24/32-bit PCM, 32/64-bit float, A-law, mu-law; any rate and channel
count; streamed WAV whose size fields are 0 or too large is read to the end),
Ogg/Opus and Ogg/Vorbis, FLAC, MP3 (MPEG-1, 2 and 2.5 Layer III, with or without an
ID3v2 tag), WebM, MP4 (3GP too), raw AAC (ADTS), raw AMR, MPEG program streams, and headerless 16-bit PCM when the
content type says so (``audio/l16;
rate=16000`` or ``audio/wav; codecs=audio/pcm; samplerate=16000``). Which one a body
is, its first bytes say (:func:`sniff`; the list is :data:`~speech_recognizer.contract.AUDIO_FORMATS`).

Compressed audio can decode to a thousand times its size (a 35 KB FLAC of
constant subframes is 65 M frames of 8 channels), so nothing is decoded whole:
the length the container's header gives is checked against the limit first,
then the audio is decoded a block at a time, down-mixed to mono as it comes,
and decoding stops as soon as it passes the limit (headers may say "unknown"
or lie). Memory is the limit's worth of mono PCM and one block. An MP3's length is
its frames', counted from their headers before decoding (:func:`mp3_frames`): its
decoder would take a Xing/Info header's count, or guess from the file's size.
"""

from __future__ import annotations

import bisect
import functools
import io
import logging
import re
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from .contract import AUDIO_FORMATS, AUDIO_LISTED, MAX_BYTES_PER_SECOND, AudioFormat
from .errors import BAD_AUDIO, TOO_LARGE, UNSUPPORTED_MEDIA, Failure

log = logging.getLogger(__name__)


class AudioError(Failure, ValueError):
    """The body is not audio we can decode (:data:`~speech_recognizer.errors.BAD_AUDIO`, or the kind given)."""

    kind = BAD_AUDIO


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
WAV, OGG, FLAC, MP3, WEBM, MP4, AAC, AMR, MPEG_PS = AUDIO_FORMATS
#: Containers FFmpeg decodes, in a child process (:mod:`speech_recognizer.ffmpeg`); libmpg123 decodes MP3
#: (:mod:`speech_recognizer.mpg123`), libsndfile the others.
_FFMPEG_FORMATS = (WEBM, MP4, AAC, AMR, MPEG_PS)
#: Containers told by their signature where it is, whatever the content type (MP3 and AAC are told by their frames,
#: MPEG-PS by its pack header: :func:`_mpeg_pack`).
_SIGNED = (WAV, OGG, FLAC, WEBM, MP4, AMR)
#: What is said of bytes :func:`sniff` finds no container in, after what they are ("the body", "the file").
NOT_AUDIO = (f"is not {', '.join(f.name for f in AUDIO_FORMATS[:-1])} or {AUDIO_FORMATS[-1].name} audio "
             f"(no {'/'.join(f.signature_name or f.signature.decode() for f in AUDIO_FORMATS if f is not AAC)} "
             "signature, nor MPEG audio frames, nor ADTS frames)")
SUPPORTED_TYPES = (*(t for f in AUDIO_FORMATS for t in f.media_types), "audio/l16")
#: Content types that declare headerless PCM (with ``codecs=audio/pcm``, any type): bytes under them are never
#: taken for MP3 by its frames, which PCM can happen to look like.
_PCM_TYPES = frozenset({"audio/l16", "audio/pcm", "audio/raw", "audio/x-raw"})
#: MPEG audio's sample rates, by version (a frame header's bits 19-20: 3 MPEG-1, 2 MPEG-2, 0 MPEG-2.5; 1 is reserved).
_MPEG_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}
#: Layer III bit rates (kbit/s) by index, of MPEG-1 and of MPEG-2 and 2.5; index 0 is free format, 15 is invalid.
_LAYER3_KBPS = {3: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
                2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)}
#: How much longer an MP3 may decode to than the length limit (an encoder's delay and padding, which its decoder
#: drops when its Xing/Info header gives them), and how much shorter than its count before it is called cut short:
#: two frames of the longest (1152 samples).
_MP3_SLACK = 2 * 1152


@dataclass(frozen=True)
class MpegFrame:
    """What an MPEG audio Layer III frame header says (:func:`mpeg_frame`)."""

    version: int  # 3 MPEG-1, 2 MPEG-2, 0 MPEG-2.5
    sample_rate: int
    channels: int
    #: Bytes, its header's 4 included.
    length: int
    #: A CRC (2 bytes) follows the header.
    crc: bool


def mpeg_frame(data: bytes | bytearray, at: int) -> MpegFrame | None:
    """The MPEG audio Layer III frame header at ``at`` of ``data``, or None when there is none: 11 sync bits, a
    version, layer III, a bit rate that is neither free format nor invalid, a sample rate and an emphasis that are
    not reserved."""
    if at < 0 or len(data) < at + 4:
        return None
    b0, b1, b2, b3 = data[at : at + 4]
    version, layer, bitrate, rate = (b1 >> 3) & 3, (b1 >> 1) & 3, b2 >> 4, (b2 >> 2) & 3
    if b0 != 0xFF or b1 & 0xE0 != 0xE0 or version == 1 or layer != 1 or bitrate in (0, 15) or rate == 3 or b3 & 3 == 2:
        return None
    sample_rate = _MPEG_RATES[version][rate]
    kbps = _LAYER3_KBPS[3 if version == 3 else 2][bitrate]
    length = (144 if version == 3 else 72) * kbps * 1000 // sample_rate + ((b2 >> 1) & 1)
    return MpegFrame(version, sample_rate, 1 if b3 >> 6 == 3 else 2, length, not b1 & 1)


def _mpeg_frames(data: bytes | bytearray) -> bool:
    """Whether ``data`` begins with two MPEG audio Layer III frames of one stream: a valid header, and another of the
    same version, sample rate and channels where the first one's length says the next begins."""
    first = mpeg_frame(data, 0)
    second = mpeg_frame(data, first.length) if first else None
    return first is not None and second is not None and (
        (second.version, second.sample_rate, second.channels) == (first.version, first.sample_rate, first.channels))


#: AAC's sample rates by an ADTS header's index; 13 to 15 are reserved (ADTS has no rate of its own).
_ADTS_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)


@dataclass(frozen=True)
class AdtsFrame:
    """What an ADTS (raw AAC) frame header says (:func:`adts_frame`)."""

    #: Its MPEG version bit (0 MPEG-4, 1 MPEG-2), AAC profile, sample rate index and channel configuration (0: the frame
    #: says), which each frame of one stream repeats.
    stream: tuple[int, int, int, int]
    #: Bytes, its header's 7 (9 with a CRC) included.
    length: int


def adts_frame(data: bytes | bytearray, at: int) -> AdtsFrame | None:
    """The ADTS frame header at ``at`` of ``data``, or None when there is none: 12 sync bits, layer 0 (MPEG audio's
    layers are 1 to 3, so an MP3's frame never reads as one, nor this as an MP3's), a sample rate index that is not
    reserved, and a length at least its header's."""
    if at < 0 or len(data) < at + 7:
        return None
    b0, b1, b2, b3, b4, b5 = data[at : at + 6]
    rate, length = (b2 >> 2) & 15, (b3 & 3) << 11 | b4 << 3 | b5 >> 5
    if b0 != 0xFF or b1 & 0xF6 != 0xF0 or rate >= len(_ADTS_RATES) or length < (7 if b1 & 1 else 9):
        return None
    return AdtsFrame(((b1 >> 3) & 1, b2 >> 6, rate, (b2 & 1) << 2 | b3 >> 6), length)


def _adts_frames(data: bytes | bytearray, start: int = 0) -> bool:
    """Whether ``data`` holds two ADTS frames of one stream from ``start``: a valid header, and another of the same
    version, profile, sample rate and channels where the first one's length says the next begins."""
    first = adts_frame(data, start)
    second = adts_frame(data, start + first.length) if first else None
    return first is not None and second is not None and second.stream == first.stream


#: The atoms an old QuickTime movie, written before MP4's ``ftyp`` box, begins with; its ``moov`` (the index) or its
#: ``mdat`` (the media) comes after a few small ones.
_QUICKTIME_LEAD = frozenset({b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"})
_ATOM_TYPE = re.compile(rb"[A-Za-z0-9 ]{4}")


def _quicktime_atoms(data: bytes | bytearray) -> bool:
    """Whether ``data`` begins as a QuickTime movie without an ``ftyp`` box: one of :data:`_QUICKTIME_LEAD`, then atom
    after atom (each a 4-byte size at least its header's, 8 bytes, or 1 and a 64-bit size after its type; a type of
    four letters, digits or spaces), up to its ``moov`` or ``mdat``."""
    at = 0
    while at + 8 <= len(data):
        size, kind = int.from_bytes(data[at : at + 4], "big"), bytes(data[at + 4 : at + 8])
        if not _ATOM_TYPE.fullmatch(kind) or (at == 0 and kind not in _QUICKTIME_LEAD):
            return False
        if size == 1:  # a 64-bit size follows the type
            size = int.from_bytes(data[at + 8 : at + 16], "big") if at + 16 <= len(data) else 16
            if size < 16:
                return False
        if kind in (b"moov", b"mdat"):
            return size >= 8 or (size == 0 and kind == b"mdat")  # an mdat of size 0 runs to the file's end
        if size < 8:
            return False
        at += size
    return False


def id3_end(data: bytes | bytearray) -> int | None:
    """Where the ID3v2 tag ``data`` begins with ends (its 10-byte header, the size it gives, a footer), or None when
    it begins with none: ``ID3``, version 2 to 4, a revision other than 0xFF, a size of four 7-bit bytes."""
    if len(data) < 10 or data[:3] != b"ID3" or data[3] not in (2, 3, 4) or data[4] == 0xFF or any(b & 0x80 for b in data[6:10]):
        return None
    size = data[6] << 21 | data[7] << 14 | data[8] << 7 | data[9]
    return 10 + size + (10 if data[5] & 0x10 else 0)


def _xing_tag(frame: MpegFrame) -> int:
    """Where a Xing/Info header begins in a Layer III frame ``frame``: after its header, CRC and side information."""
    side = (17 if frame.channels == 1 else 32) if frame.version == 3 else (9 if frame.channels == 1 else 17)
    return 4 + 2 * frame.crc + side


def _xing(first: bytes | bytearray, frame: MpegFrame) -> tuple[int, int | None] | None:
    """The Xing/Info header of the frame ``first`` begins with (``frame``, its header): where its frame count is in
    the frame and that count (None: it gives none), or None when the frame holds audio. LAME and most encoders write
    one as an MP3's first frame, which decoders skip."""
    tag = _xing_tag(frame)
    if bytes(first[tag : tag + 4]) not in (b"Xing", b"Info"):
        return None
    counted = len(first) >= tag + 12 and bool(first[tag + 7] & 1)
    return tag + 8, int.from_bytes(first[tag + 8 : tag + 12], "big") if counted else None


def declares_pcm(content_type: str) -> bool:
    """Whether ``content_type`` says the bytes are headerless PCM (``audio/l16``, ``audio/pcm``, ``audio/raw``, or any
    type with ``codecs=audio/pcm``), rate or no rate."""
    mime, params = content_params(content_type or "")
    return mime in _PCM_TYPES or params.get("codecs", "").lower() == "audio/pcm"


def sniff(data: bytes | bytearray, content_type: str = "") -> AudioFormat | None:
    """The container ``data`` begins with (None: none of :data:`~speech_recognizer.contract.AUDIO_FORMATS`): its
    signature, whatever the content type; else, where the content type does not declare headerless PCM
    (:func:`declares_pcm`), an MP3 by its ID3v2 tag (raw AAC when ADTS frames follow it: FFmpeg skips the tag) or by
    two MPEG audio frames of one stream, one after the other, raw AAC by two ADTS frames so, an MPEG program stream by
    its pack header (:func:`_mpeg_pack`), or an old QuickTime movie (MP4's decoder reads it) by its atoms
    (:func:`_quicktime_atoms`)."""
    for fmt in _SIGNED:
        if data[fmt.offset : fmt.offset + len(fmt.signature)] == fmt.signature:
            return fmt
    if declares_pcm(content_type):
        return None
    if (tagged := id3_end(data)) is not None:
        return AAC if _adts_frames(data, tagged) else MP3
    if _mpeg_frames(data):
        return MP3
    if _adts_frames(data):
        return AAC
    if _mpeg_pack(data):
        return MPEG_PS
    return MP4 if _quicktime_atoms(data) else None


def _mpeg_pack(data: bytes | bytearray) -> bool:
    """Whether ``data`` begins with an MPEG program stream's pack header: its start code (``00 00 01 BA``), then
    MPEG-1's ``0010`` and marker bit, or MPEG-2's ``01`` and marker bit (what bytes that merely begin with the code,
    as silent PCM could, seldom have)."""
    if len(data) < 5 or data[:4] != MPEG_PS.signature:
        return False
    return data[4] & 0xF1 == 0x21 or data[4] & 0xC4 == 0x44


def content_params(content_type: str) -> tuple[str, dict[str, str]]:
    """``audio/wav; codecs=audio/pcm; samplerate=16000`` -> ("audio/wav", {"codecs": ..., "samplerate": ...})."""
    parts = [p.strip() for p in content_type.split(";")]
    params: dict[str, str] = {}
    for part in parts[1:]:
        if "=" in part:
            key, value = part.split("=", 1)
            params[key.strip().lower()] = value.strip().strip('"')
    return parts[0].lower(), params


def parse_wav_header(data: bytes | bytearray) -> tuple[WavFormat, int, int]:
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
            f"the stream must be 16-bit PCM (WAV format tag {fmt.format_tag:#x}, {fmt.bits} bits)", UNSUPPORTED_MEDIA
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
            UNSUPPORTED_MEDIA,
        )


#: Decoded frames per block: a block of the widest input (32 channels of float) is 1 MiB.
_BLOCK_BYTES = 1 << 20
#: WAV encodings read through libsndfile's RAW reader: (format tag, bits) -> its subtype.
_RAW_SUBTYPES = {
    (PCM, 8): "PCM_U8",
    (PCM, 24): "PCM_24",
    (PCM, 32): "PCM_32",
    (FLOAT, 32): "FLOAT",
    (FLOAT, 64): "DOUBLE",
    (ALAW, 8): "ALAW",
    (MULAW, 8): "ULAW",
}
#: Subtypes libsndfile hands back unscaled when asked for integers (float 0.5 reads as 0), so read as float.
_FLOAT_SUBTYPES = frozenset({"FLOAT", "DOUBLE"})


def too_long(seconds: float | None, limit: float) -> AudioError:
    """The 413 for audio longer than ``limit`` seconds (``MaxAudioSeconds``); ``seconds`` None: not known."""
    length = f"is {seconds:.1f} s long" if seconds is not None else f"is longer than {limit:g} s"
    return AudioError(
        f"the audio {length}; this route takes at most {limit:g} s (MaxAudioSeconds); "
        "use the WebSocket route for longer audio",
        TOO_LARGE,
    )


def _mono16(block: np.ndarray) -> np.ndarray:
    """A block of frames (frames x channels, int16 or float in -1..1) as mono 16-bit samples.

    Float becomes 16-bit as int16 became float (x / 32768), so 16-bit PCM converted
    to float and back is the same PCM; channels are averaged as :func:`mono` does.
    """
    if block.dtype != np.int16:
        block = np.clip(np.round(block * 32768.0), -32768, 32767).astype(np.int16)
    if block.shape[1] == 1:
        return block[:, 0].astype("<i2", copy=False)
    return block.mean(axis=1).round().astype("<i2")


def _checked(reader: object, what: str, max_seconds: float, cut: bool, believed: bool = True) -> tuple[int, float | None]:
    """The sample rate of an open ``soundfile.SoundFile`` and the seconds its header says it holds (None: it does not
    say, or is not ``believed``: an MP3's guess); refuses what it cannot take, and without ``cut`` what its header says
    is longer than ``max_seconds``."""
    rate, channels = int(reader.samplerate), int(reader.channels)  # type: ignore[attr-defined]
    if channels < 1 or channels > 32:
        raise AudioError(f"{what} audio with {channels} channels is not supported (1..32)")
    if rate < 4000 or rate > 192000:
        raise AudioError(f"{what} sample rate {rate} Hz is outside 4000..192000")
    declared = int(reader.frames)  # type: ignore[attr-defined]
    known = believed and declared < 1 << 62  # libsndfile says 2**63 - 1 for "unknown"
    if known and declared > int(max_seconds * rate) and not cut:
        raise too_long(declared / rate, max_seconds)
    return rate, declared / rate if known else None


def _read_blocks(reader: object, what: str, max_seconds: float, cut: bool,
                 ended: Callable[[int], None] | None = None) -> Iterator[bytes]:
    """Mono 16-bit PCM from an open ``soundfile.SoundFile`` (checked by :func:`_checked`), a block at a time.

    Stops as soon as the decoded audio passes ``max_seconds`` (a header may say "unknown" or lie): refused, or
    with ``cut`` cut there. One block is held at a time. ``ended``: called with the frames decoded when the
    decoder gives no more (an MP3's, which may end early without an error: :meth:`_Compressed._ended`).
    """
    import soundfile

    rate, channels = int(reader.samplerate), int(reader.channels)  # type: ignore[attr-defined]
    limit = int(max_seconds * rate)
    dtype = "float32" if reader.subtype in _FLOAT_SUBTYPES else "int16"  # type: ignore[attr-defined]
    block = max(256, _BLOCK_BYTES // (4 * channels))
    frames = 0
    while frames <= limit:
        try:
            samples = reader.read(min(block, limit + 1 - frames), dtype=dtype, always_2d=True)  # type: ignore[attr-defined]
        except (RuntimeError, soundfile.LibsndfileError, TypeError, ValueError) as exc:
            if what == MP3.name:  # mpg123 says "A generic mpg123 error." or the like
                raise AudioError("the MP3 is corrupt: its decoder lost the MPEG frames (junk between two, or a frame of "
                                 "another sample rate or channel count)") from None
            raise AudioError(f"cannot decode the {what} audio: {_reason(exc)}") from None
        if not len(samples):
            if ended is not None:
                ended(frames)
            return
        if frames + len(samples) > limit:
            if not cut:
                raise too_long(None, max_seconds)  # decoding stopped at the limit: how long it is, nobody knows
            yield _mono16(samples[: limit - frames]).tobytes()
            return
        frames += len(samples)
        yield _mono16(samples).tobytes()


def _decode_blocks(reader: object, what: str, max_seconds: float, cut: bool) -> Audio:
    """Mono 16-bit PCM from an open ``soundfile.SoundFile``, read a block at a time (:func:`_read_blocks`).

    Refuses what its header says is longer than ``max_seconds`` before decoding
    anything: at most ``max_seconds`` of mono PCM and one block are ever held.
    """
    rate, _ = _checked(reader, what, max_seconds, cut)
    return Audio(b"".join(_read_blocks(reader, what, max_seconds, cut)), rate, 1)


def _reason(exc: Exception) -> str:
    """What libsndfile said, without soundfile's "Error opening <object at 0x…>: " before it."""
    return str(getattr(exc, "error_string", "") or exc)


@dataclass
class _Compressed:
    """An Ogg, FLAC or MP3 opened (:func:`_open_compressed`) and checked (:func:`_checked`)."""

    reader: Any
    what: str
    sample_rate: int
    #: How long its header says it is (None: not said, or not believed: an MP3 cut at the limit, :func:`mp3_frames`).
    seconds: float | None
    #: An MP3: its decoder may end early without an error (:meth:`_ended`).
    mp3: bool

    def blocks(self, max_seconds: float, cut: bool = False) -> Iterator[bytes]:
        """Its mono 16-bit PCM a block at a time (:func:`_read_blocks`); closes it at the end."""
        with self.reader:
            yield from _read_blocks(self.reader, self.what, max_seconds, cut, self._ended if self.mp3 else None)

    def _ended(self, frames: int) -> None:
        """Refuses an MP3 whose decoder gave ``frames`` and no more, fewer than its frames hold (:func:`mp3_frames`
        counted them, and its Xing/Info header says so to mpg123): the decoder stops without an error where it
        cannot go on."""
        declared, rate = int(self.reader.frames), self.sample_rate
        if self.seconds is not None and frames < declared - _MP3_SLACK:
            raise AudioError(f"the MP3 is corrupt: its decoder ended at {frames / rate:.1f} s of the {declared / rate:.1f} s "
                             "its frames hold")


def _open_compressed(source: bytes | bytearray | BinaryIO, fmt: AudioFormat, head: bytes | bytearray, size: int | None,
                     max_seconds: float, cut: bool = False) -> _Compressed:
    """``source`` (its first bytes ``head``; ``size`` bytes when known), an Ogg, FLAC or MP3 as :func:`sniff` says,
    opened and checked: Ogg and FLAC by libsndfile, MP3 by libmpg123 (:class:`~speech_recognizer.mpg123.Mp3`), what
    it reads of one put right first (:func:`_mp3_source`)."""
    believed = True
    if fmt is OGG:
        _check_vorbis_setup(_peeker(source))
    if fmt is not MP3:
        reader: Any = _open_soundfile(source, fmt.name)
    else:
        read, believed = _mp3_source(source, head, size, max_seconds, cut)
        reader = _open_mp3(read, head, size)
    try:
        rate, seconds = _checked(reader, fmt.name, max_seconds, cut, believed)
        return _Compressed(reader, fmt.name, rate, seconds, fmt is MP3)
    except BaseException:
        reader.close()
        raise


#: The most memory the codebooks of an Ogg/Vorbis file's setup header may take in its decoder (:func:`_check_vorbis_setup`).
VORBIS_CODEBOOKS_MAX_BYTES = 8 << 20
#: The most bytes of an Ogg/Vorbis file's identification or setup header (:func:`_ogg_vorbis_setup` holds them to read
#: its codebooks, libvorbis as it opens the file): twenty times the longest an encoder writes (libvorbis's: some 11 KB,
#: FFmpeg's under 50 KB). Past it an Ogg/Vorbis is refused, as its headers' pages allowed some 66 MB.
VORBIS_SETUP_MAX_BYTES = 1 << 20
#: The most pages of an Ogg read for its three Vorbis headers (a comment packet may hold a picture of megabytes: 255
#: segments of 255 bytes a page): an Ogg/Vorbis whose headers take more is refused, not left to libvorbis unread.
_OGG_HEADER_PAGES = 1024


def _ogg_vorbis_setup(peek: Callable[[int, int], bytes]) -> bytes | None:
    """The third packet (the setup header) of the Ogg's first logical stream (the first page's serial number) when
    its first is a Vorbis identification header, the second (its comments) passed over unheld; None when it is not
    Vorbis, or the file ends or its pages stop being Ogg's before its third packet (left to libsndfile to refuse).
    Refuses an Ogg/Vorbis whose three headers are not within :data:`_OGG_HEADER_PAGES` pages, or whose identification
    or setup header is longer than :data:`VORBIS_SETUP_MAX_BYTES`."""
    packets: list[bytes] = []
    pending, at, serial = bytearray(), 0, None
    for _ in range(_OGG_HEADER_PAGES):
        head = peek(at, 27)
        if len(head) < 27 or head[:4] != b"OggS":
            return None
        lacing = peek(at + 27, head[26])
        at += 27 + head[26]
        page_serial = int.from_bytes(head[14:18], "little")
        serial = page_serial if serial is None else serial
        if page_serial == serial:
            offset = 0
            for segment in lacing:
                if len(packets) != 1:  # the comments are not needed
                    pending += peek(at + offset, segment)
                    if len(pending) > VORBIS_SETUP_MAX_BYTES:
                        _refuse_long_header(packets, pending)
                        return None
                offset += segment
                if segment < 255:
                    packets.append(bytes(pending))
                    pending.clear()
                    if not packets[0].startswith(b"\x01vorbis"):
                        return None
                    if len(packets) == 3:
                        return packets[2]
        at += sum(lacing)
    if packets and packets[0].startswith(b"\x01vorbis") or not packets and pending.startswith(b"\x01vorbis"):
        raise AudioError(f"the Ogg/Vorbis headers take more than {_OGG_HEADER_PAGES} pages: send it with its headers "
                         "at its start, as an encoder writes them", UNSUPPORTED_MEDIA)
    return None


def _refuse_long_header(packets: list[bytes], pending: bytearray) -> None:
    """Refuses the Ogg/Vorbis whose header being read (``pending``, after ``packets``) passed
    :data:`VORBIS_SETUP_MAX_BYTES`; nothing when the Ogg is not Vorbis (left to libsndfile)."""
    if (packets[0] if packets else pending).startswith(b"\x01vorbis"):
        raise AudioError(f"the Ogg/Vorbis {'setup' if packets else 'identification'} header is more than "
                         f"{VORBIS_SETUP_MAX_BYTES >> 20} MB (an encoder's is under 50 KB): encode it with a standard "
                         "Vorbis encoder, or send Opus, FLAC or WAV", UNSUPPORTED_MEDIA)


class _Bits:
    """Vorbis's bit reader: values packed from each byte's lowest bit."""

    def __init__(self, data: bytes) -> None:
        self._data, self.at = data, 0

    def read(self, width: int) -> int:
        """The next ``width`` bits as a number; raises EOFError past the end."""
        end = self.at + width
        if end > 8 * len(self._data):
            raise EOFError
        first, last = self.at >> 3, (end + 7) >> 3
        value = int.from_bytes(self._data[first:last], "little") >> (self.at & 7) & ((1 << width) - 1)
        self.at = end
        return value

    def skip(self, width: int) -> None:
        """Passes ``width`` bits; raises EOFError past the end."""
        if self.at + width > 8 * len(self._data):
            raise EOFError
        self.at += width


def _vorbis_codebooks_bytes(setup: bytes, bound: int) -> int:
    """What the codebooks of a Vorbis setup header (``setup``, its packet) take in libvorbis once it opens them, about:
    for each, its code words, decoding tables and, with a lookup, ``entries`` x ``dimensions`` floats (its declared
    entries, all of them used or not). Stops once past ``bound`` (walking a codebook's lengths costs its entries);
    0 when it is not a setup header libvorbis reads (left to it to refuse)."""
    bits, total = _Bits(setup), 0
    try:
        if bits.read(56) != int.from_bytes(b"\x05vorbis", "little"):
            return 0
        for _ in range(bits.read(8) + 1):
            if bits.read(24) != 0x564342:
                return 0
            dimensions, entries = bits.read(16), bits.read(24)
            lookup_floats = entries * dimensions
            total += entries * 24 + 4 * lookup_floats
            if total > bound:
                return total
            if bits.read(1):  # ordered: runs of one length
                bits.read(5)
                done = 0
                while done < entries:
                    done += bits.read(max(1, (entries - done).bit_length()))
            elif bits.read(1):  # sparse: a flag for each entry, a length for each used one
                for _ in range(entries):
                    if bits.read(1):
                        bits.read(5)
            else:
                bits.skip(5 * entries)
            lookup = bits.read(4)
            if lookup in (1, 2):
                bits.read(64)
                width = bits.read(4) + 1
                bits.read(1)
                values = 1
                if lookup == 1:
                    while (values + 1) ** dimensions <= entries:
                        values += 1
                else:
                    values = lookup_floats
                bits.skip(values * width)
            elif lookup:
                return 0
    except EOFError:
        return 0
    return total


def _check_vorbis_setup(peek: Callable[[int, int], bytes]) -> None:
    """Refuses an Ogg/Vorbis whose setup header's codebooks would take more than :data:`VORBIS_CODEBOOKS_MAX_BYTES` in
    libvorbis, before libsndfile opens it: that decoder runs in the server's own process, and a few bytes of codebook
    declare what it expands to gigabytes of lookup tables (and seconds of CPU) as it opens, whatever the audio. An
    encoder's codebooks take well under a megabyte."""
    setup = _ogg_vorbis_setup(peek)
    if setup is None:
        return
    need = _vorbis_codebooks_bytes(setup, VORBIS_CODEBOOKS_MAX_BYTES)
    if need > VORBIS_CODEBOOKS_MAX_BYTES:
        raise AudioError(f"the Ogg/Vorbis setup header declares codebooks that would take more than "
                         f"{VORBIS_CODEBOOKS_MAX_BYTES >> 20} MB to decode (an encoder's take under 1 MB): encode it "
                         "with a standard Vorbis encoder, or send Opus, FLAC or WAV", UNSUPPORTED_MEDIA)


def check_header(file: BinaryIO) -> None:
    """Raise the refusal (:class:`AudioError`) of the seekable ``file`` (read from where it is, put back there) that
    libsndfile must not be let open, even to read its header: an Ogg/Vorbis whose codebooks :func:`_check_vorbis_setup`
    refuses. For what reads a file's header with libsndfile before decoding it (the transcriber's start order)."""
    start = file.tell()
    head = file.read(4)
    file.seek(start)
    if head == b"OggS":
        peek = _peeker(file)
        _check_vorbis_setup(lambda at, n: peek(start + at, n))


def _open_mp3(read: bytes | bytearray | BinaryIO | io.RawIOBase, head: bytes | bytearray, size: int | None) -> Any:
    """libmpg123 reading ``read`` (what :func:`_mp3_source` gives of an MP3 whose first bytes are ``head``); where the
    system has no libmpg123 (a source install; the image has it), the ``soundfile`` wheel's libsndfile, whose own
    mpg123 decodes the same samples but writes to stderr for each damaged frame (:func:`_mp3_fallback` says so once)."""
    try:
        from . import mpg123
    except ImportError as exc:
        _mp3_fallback(str(exc))
        try:
            return _open_soundfile(read, MP3.name, _unseeking())
        except AudioError:
            raise AudioError(_mp3_unopened(head, size)) from None
    try:
        return mpg123.Mp3(_BufferReader(read) if isinstance(read, (bytes, bytearray)) else read)
    except RuntimeError:
        raise AudioError(_mp3_unopened(head, size)) from None


@functools.cache
def _mp3_fallback(why: str) -> None:
    """One WARNING line, at the first MP3, that libsndfile decodes them here (:func:`_open_mp3`)."""
    log.warning("%s: MP3 is decoded by the soundfile wheel's libsndfile instead, the same samples, but its mpg123 writes "
                "a line to stderr for each damaged frame of an upload", why)


@functools.cache
def _unseeking() -> type:
    """``soundfile.SoundFile`` that does not seek between reads. soundfile seeks to where a read ended after every
    read (its position's bookkeeping), and libsndfile's MPEG decoder takes each seek as a new start: the frames after
    it are decoded without the bit reservoir of those before (MP3 made by libsndfile itself: up to 11700 of 32768
    off for 4000 samples after each block, and mpg123 writing "part2_3_length too large" to stderr), where the whole
    file read at once is right. Not seekable, soundfile reads on without seeking; libsndfile still ends at its length."""
    import soundfile

    class Unseeking(soundfile.SoundFile):
        def seekable(self) -> bool:
            return False

    return Unseeking


#: Tags an MP3 may carry after a frame (an ID3v2 tag is told by :func:`id3_end`): an ID3v1 tag (128 bytes), and
#: APEv2 and Lyrics3 tags, taken as its end.
_ID3V1, _MP3_END_TAGS = b"TAG", (b"APETAGEX", b"LYRICSBEGIN")


@dataclass(frozen=True)
class Mp3Frames:
    """What walking an MP3's frame headers found (:func:`mp3_frames`)."""

    sample_rate: int
    #: Samples a frame holds: 1152 (MPEG-1), 576 (MPEG-2 and 2.5).
    samples: int
    #: Its frames of audio (not its Xing/Info frames), counted to its end, or only past ``limit`` when not ``whole``.
    count: int
    whole: bool
    #: The count its Xing/Info header gives (None: it has none), and where that count is (the 4 bytes, big-endian).
    declared: int | None
    declared_at: int
    #: What mpg123 is to read for this MP3: byte ranges of it replaced, each (start, end, replacement).
    edits: tuple[tuple[int, int, bytes], ...]


def mp3_frames(peek: Callable[[int, int], bytes], start: int, size: int, max_seconds: float) -> Mp3Frames | None:
    """Walks the frame headers of the MP3 whose first frame is at ``start`` (after an ID3v2 tag), ``size`` bytes:
    ``peek(at, n)`` gives up to ``n`` of its bytes at ``at``. None when no whole frame is at ``start`` (refused then,
    saying what it is: :func:`_mp3_source`). Stops once it counts more than ``max_seconds``.

    What mpg123 reads is then made to give the MP3's length, which mpg123 takes from a Xing/Info
    frame count, else guesses from the file's size and the first frame's bit rate and stops there without an error:
    a variable bit rate without that frame, MP3s put one after another, a count that lies, all decoded short. The
    count is put right or a Xing frame put in, and the Xing/Info frames and tags of the MP3s after the first are taken
    out (mpg123 ends at another stream's Info frame). Junk between two frames, a frame of another sample rate or
    channel count, or what follows the last frame when a frame would resume after it, is refused here, before
    mpg123 resynchronises in it (and decodes what it finds there)."""
    first = mpeg_frame(peek(start, 4), 0)
    if first is None or start + first.length > size:
        return None
    kind, samples = (first.version, first.sample_rate, first.channels), 1152 if first.version == 3 else 576
    limit = int(max_seconds * first.sample_rate) + _MP3_SLACK  # an encoder's delay and padding besides
    pos, count, declared, declared_at, edits = start, 0, None, -1, []
    while pos < size:
        head = peek(pos, 64)
        frame = mpeg_frame(head, 0)
        if frame is None:
            tag = id3_end(head) if head[:3] == b"ID3" else 128 if head[:3] == _ID3V1 else None
            if tag is None:
                _mp3_trailer(peek, pos, size, count, kind)
                edits.append((pos, size, b""))  # what mpg123 would resynchronise in, and write to stderr about
                break
            edits.append((pos, min(pos + tag, size), b""))
            pos += tag
            continue
        if (frame.version, frame.sample_rate, frame.channels) != kind:
            raise AudioError(f"the MP3 is corrupt: its frame {count + 1} (byte {pos}) is of another sample rate or "
                             "channel count than its first")
        if pos + frame.length > size:
            edits.append((pos, size, b""))  # cut in its last frame, which its decoder would drop
            break
        xing = _xing(head, frame)
        if xing is None:
            count += 1
            if count * samples > limit:
                return Mp3Frames(first.sample_rate, samples, count, False, declared, declared_at, tuple(edits))
        elif pos == start and xing[1] is not None:
            declared_at, declared = pos + xing[0], xing[1]
        else:  # another stream's, or one that counts nothing
            edits.append((pos, pos + frame.length, b""))
        pos += frame.length
    return Mp3Frames(first.sample_rate, samples, count, True, declared, declared_at, tuple(edits))


def _mp3_source(source: bytes | bytearray | BinaryIO, head: bytes | bytearray, size: int | None, max_seconds: float,
                cut: bool) -> tuple[bytes | bytearray | BinaryIO | io.RawIOBase, bool]:
    """What mpg123 is to read of an MP3 (``source``, its first bytes ``head``, ``size`` bytes when known) for its
    decoder to give all of it (:func:`mp3_frames`), and whether the length it then says is the MP3's. Refuses one
    longer than ``max_seconds`` (unless ``cut``), cut short or corrupt, or holding no frame where it begins (another
    container after an ID3 tag: 415), before anything is decoded."""
    peek = _peeker(source)
    if size is None:
        size = len(source) if isinstance(source, (bytes, bytearray)) else _file_size(source)
    start = id3_end(head) or 0
    found = mp3_frames(peek, start, size, max_seconds)
    if found is None:
        after = sniff(peek(start, HEADER_ROOM)) if start else None
        if after is not None and after is not MP3:
            raise AudioError(f"an ID3 tag followed by {after.name} audio, not MP3: send it without the tag", UNSUPPORTED_MEDIA)
        raise AudioError(_mp3_unopened(head, size))
    if not found.whole and not cut:
        if found.declared is not None and found.declared > found.count:
            return source, True  # its Xing/Info count says how long: mpg123's length then, refused by it (_checked)
        raise too_long(None, max_seconds)
    edits = _mp3_edits(found, peek, start, size)
    return (_Spliced(source, size, edits) if edits else source), found.whole


#: The most bytes after an MP3's last frame searched for a frame that would resume it (junk in its middle), and the
#: most frame headers in them looked at: past either, what follows is refused rather than taken as its end unread.
_MP3_TRAILER_BYTES, _MP3_RESYNC_TRIES = 1 << 20, 4096
#: The first two bytes of a Layer III frame header (:func:`mpeg_frame` tells the rest).
_MPEG_SYNC = re.compile(rb"\xff[\xe2\xe3\xf2\xf3\xfa\xfb]")


def _mp3_trailer(peek: Callable[[int, int], bytes], pos: int, size: int, count: int, kind: tuple[int, int, int]) -> None:
    """Refuses what follows an MP3's last frame (at ``pos``, ``count`` frames of ``kind`` before it) unless it is a
    tag taken as its end, or bytes no frame of the MP3 resumes in (trailing junk, which no decoder reads)."""
    if peek(pos, 16).startswith(_MP3_END_TAGS):
        return
    rest = peek(pos, min(size - pos, _MP3_TRAILER_BYTES))
    for tries, sync in enumerate(_MPEG_SYNC.finditer(rest)):
        frame = mpeg_frame(rest, sync.start())
        if tries >= _MP3_RESYNC_TRIES or frame is not None and _mpeg_frames(rest[sync.start() :]) and (
                (frame.version, frame.sample_rate, frame.channels) == kind):
            break
    else:
        if size - pos <= _MP3_TRAILER_BYTES:
            return
    raise AudioError(f"the MP3 is corrupt: junk at byte {pos}, after its frame {count}, where MPEG frames go on")


def _mp3_edits(found: Mp3Frames, peek: Callable[[int, int], bytes], start: int, size: int) -> list[tuple[int, int, bytes]]:
    """What to replace in an MP3 (:func:`mp3_frames` found ``found``) for its decoder to give all of it: its Xing/Info
    count set to the frames there are, or a Xing frame that counts them put before its first frame. Refuses an MP3
    cut short (fewer frames than its count, which its decoder would end at without an error)."""
    edits = list(found.edits)
    rate, samples, count = found.sample_rate, found.samples, found.count
    if found.declared is not None and found.whole and count + 2 < found.declared:  # encoders count the Xing frame, or not
        raise AudioError(f"the MP3 is cut short: it ends at {count * samples / rate:.1f} s of the "
                         f"{found.declared * samples / rate:.1f} s its header counts")
    if found.declared is not None and found.declared >= count:
        return edits
    if found.declared is not None:  # a count that lies, or MP3s put one after another: the first one's count
        edits.append((found.declared_at, found.declared_at + 4, count.to_bytes(4, "big")))
        if peek(found.declared_at - 1, 1)[0] & 2:  # the file's bytes follow: mpg123 says on stderr when they are off
            length = size + sum(len(new) - (end - start) for start, end, new in edits)  # by more than 1%
            edits.append((found.declared_at + 4, found.declared_at + 8, (length % (1 << 32)).to_bytes(4, "big")))
    else:
        edits.append((start, start, _xing_frame(peek(start, 4), count)))
    return sorted(edits)


def _xing_frame(header: bytes, count: int) -> bytes:
    """A Xing frame counting ``count`` frames, for an MP3 whose first frame's header is ``header``: the same version,
    sample rate and channels, no CRC, the least bit rate a frame holding the header takes."""
    b1, b2 = header[1] | 1, header[2] & 0x0D
    for bitrate in range(1, 15):
        frame = mpeg_frame(bytes((0xFF, b1, bitrate << 4 | b2, header[3])), 0)
        if frame is not None and frame.length >= _xing_tag(frame) + 12:
            tag = _xing_tag(frame)
            head = bytes((0xFF, b1, bitrate << 4 | b2, header[3])) + bytes(tag - 4)
            return (head + b"Xing" + struct.pack(">II", 1, count)).ljust(frame.length, b"\0")
    raise AssertionError("the highest bit rate's frame holds a Xing header")


def _peeker(source: bytes | bytearray | BinaryIO) -> Callable[[int, int], bytes]:
    """``peek(at, n)``: up to ``n`` bytes of ``source`` at ``at`` (a file read 64 KiB at a time and put back where
    it was)."""
    if isinstance(source, (bytes, bytearray)):
        view = memoryview(source)
        return lambda at, n: bytes(view[at : at + n])
    window: list[Any] = [0, b""]

    def peek(at: int, n: int) -> bytes:
        if not window[0] <= at or at + n > window[0] + len(window[1]):
            back = source.tell()
            source.seek(at)
            window[:] = [at, source.read(max(n, 1 << 16))]
            source.seek(back)
        return window[1][at - window[0] : at - window[0] + n]

    return peek


def _mp3_unopened(head: bytes | bytearray, size: int | None) -> str:
    """Why an MP3 (by :func:`sniff`) whose first frame is not where it begins is not audio: ``head`` its first bytes, ``size``
    its length when known."""
    end = id3_end(head)
    if end is not None and size is not None and end >= size:
        if end == size:
            return "the MP3 is an ID3 tag and nothing else: it holds no audio"
        return f"the MP3 is cut short: its ID3 tag says it is {end} bytes, and there are {size}"
    after = "after its ID3 tag " if end is not None else ""
    return f"the MP3 holds no MPEG audio frame {after}that can be decoded: it is corrupt, or cut short in its first frame"


class _BufferReader(io.RawIOBase):
    """A read-only, seekable file over a buffer, which it does not copy: ``io.BytesIO`` copies anything but
    ``bytes`` (a memoryview of a WAV's data, the bytearray a body is read into), and at the decoder cap a second
    copy of every body being decoded (23 MB each at the limit) was that much more memory at once."""

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        super().__init__()
        self._view = memoryview(data).cast("B")
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        target = memoryview(buffer).cast("B")
        count = max(0, min(len(target), len(self._view) - self._pos))
        target[:count] = self._view[self._pos : self._pos + count]
        self._pos += count
        return count

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos


class _Spliced(io.RawIOBase):
    """A read-only, seekable view of ``source`` (a buffer, or a seekable file; ``size`` bytes) with byte ranges
    replaced: ``edits``, sorted (start, end, replacement). What mpg123 reads of an MP3 put right (:func:`_mp3_source`)."""

    def __init__(self, source: bytes | bytearray | BinaryIO, size: int, edits: list[tuple[int, int, bytes]]) -> None:
        super().__init__()
        self._source = memoryview(source).cast("B") if isinstance(source, (bytes, bytearray)) else source
        #: (where it begins in the view, where in ``source`` or the replacement's bytes, its length)
        self._pieces: list[tuple[int, int | bytes, int]] = []
        at = kept = 0
        for start, end, new in [*edits, (size, size, b"")]:
            for piece in ((kept, start - kept), (new, len(new))):
                if piece[1] > 0:
                    self._pieces.append((at, *piece))
                    at += piece[1]
            kept = end
        self._size, self._pos = at, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        target, done = memoryview(buffer).cast("B"), 0
        index = bisect.bisect_right([p[0] for p in self._pieces], self._pos) - 1
        while done < len(target) and 0 <= index < len(self._pieces):
            begins, where, length = self._pieces[index]
            skip = self._pos - begins
            count = min(len(target) - done, length - skip)
            if count > 0:
                if isinstance(where, bytes):
                    target[done : done + count] = where[skip : skip + count]
                elif isinstance(self._source, memoryview):
                    target[done : done + count] = self._source[where + skip : where + skip + count]
                else:
                    self._source.seek(where + skip)
                    data = self._source.read(count)
                    count = len(data)
                    if not count:
                        break
                    target[done : done + count] = data
                done, self._pos = done + count, self._pos + count
            index += 1 if self._pos >= begins + length else 0
        return done

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos


def _file_size(file: BinaryIO) -> int:
    """The bytes of a seekable ``file``, which is left where it was."""
    at = file.tell()
    try:
        return file.seek(0, io.SEEK_END)
    finally:
        file.seek(at)


def _open_soundfile(data: bytes | bytearray | memoryview | BinaryIO | io.RawIOBase, what: str, cls: type | None = None,
                    **raw: object) -> object:
    """A ``soundfile.SoundFile`` (or ``cls``) reading ``data`` where it is, or a seekable file (its decoder seeks)."""
    import soundfile

    try:
        source = _BufferReader(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
        return (cls or soundfile.SoundFile)(source, **raw)
    except (RuntimeError, soundfile.LibsndfileError, TypeError, ValueError) as exc:
        raise AudioError(f"cannot decode the {what} audio: {_reason(exc)}") from None


def decode_wav(data: bytes | bytearray, max_seconds: float, cut: bool = False) -> Audio:
    """Decode a WAV file to mono 16-bit PCM; the data chunk is read as it is, so streamed sizes work.

    The data length is the header's, clipped to what is present: a header claiming
    4 GB holds no more than the body.
    """
    fmt, offset, length = parse_wav_header(data)
    frame = _wav_frame(fmt)
    frames = length // frame
    limit = int(max_seconds * fmt.sample_rate)
    if frames > limit and not cut:
        raise too_long(frames / fmt.sample_rate, max_seconds)
    frames = min(frames, limit)
    return Audio(_wav_mono(memoryview(data)[offset : offset + frames * frame], fmt, max_seconds), fmt.sample_rate, 1)


def _wav_frame(fmt: WavFormat) -> int:
    """The bytes of one frame of a WAV of format ``fmt``, which is checked (:func:`_check_format`)."""
    _check_format(fmt)
    frame = fmt.channels * fmt.bits // 8
    if frame == 0:
        raise AudioError(f"WAV with {fmt.bits} bits per sample is not supported")
    return frame


def _raw_subtype(fmt: WavFormat) -> str | None:
    """The libsndfile RAW subtype that reads a WAV of format ``fmt``; None for 16-bit PCM, read as it is."""
    if fmt.format_tag == PCM and fmt.bits == 16:
        return None
    subtype = _RAW_SUBTYPES.get((fmt.format_tag, fmt.bits))
    if subtype is None:
        raise AudioError(f"unsupported WAV encoding: format tag {fmt.format_tag:#x} with {fmt.bits} bits", UNSUPPORTED_MEDIA)
    return subtype


def _wav_mono(body: memoryview, fmt: WavFormat, max_seconds: float) -> bytes:
    """Whole frames of a WAV's data as mono 16-bit PCM (each frame on its own: a file's blocks decode as the whole)."""
    subtype = _raw_subtype(fmt)
    if subtype is None:
        return mono(body, fmt.channels)
    raw: dict[str, Any] = dict(mode="r", format="RAW", subtype=subtype, channels=fmt.channels, samplerate=fmt.sample_rate,
                               endian="LITTLE")
    with _open_soundfile(body, "WAV", **raw) as reader:  # type: ignore[attr-defined]
        return _decode_blocks(reader, "WAV", max_seconds, cut=False).pcm


@dataclass(frozen=True)
class Decoding:
    """Audio decoded as it is read (:func:`decode_stream`): mono 16-bit PCM at ``sample_rate``, a block at a time."""

    sample_rate: int
    #: How long its header says it is; None when it does not say (a WAV streamed with sizes 0, an Ogg without an end).
    seconds: float | None
    blocks: Iterator[bytes]


#: The most a WAV's chunks before its data (metadata) may take in a file decoded as it is read: what is held to find its data.
WAV_HEADER_MAX = 16 << 20


def decode_stream(head: bytes | bytearray, read: Callable[[int], bytes], *, size: int | None, file: BinaryIO | None,
                  max_seconds: float) -> Decoding:
    """Audio of any container (:func:`sniff`) decoded as it is read, never whole: what is held is a block, whatever its
    length.

    ``head``: the input's first bytes (enough for :func:`sniff`: 64 KiB); ``read(n)``: up to ``n`` of the bytes after
    them (fewer only at the end); ``size``: the whole input's length when known (a regular file); ``file``: the same
    input, seekable, for the compressed containers (their decoder seeks), else (a pipe) the rest is taken by ``read`` and held
    (compressed) before it is decoded. Refuses as :func:`decode` does (413: :func:`too_long`): by the length a
    header says before decoding anything (a WAV's data, when ``size`` bounds it), else as soon as the audio
    decoded passes ``max_seconds``; and raises what ``read`` raises.
    """
    fmt = sniff(head)
    if fmt is WAV:
        return _stream_wav(bytearray(head), read, size, max_seconds)
    if fmt is None:
        raise AudioError(f"the body {NOT_AUDIO}")
    source: bytearray | BinaryIO
    if file is None:
        source = bytearray(head)
        while piece := read(_BLOCK_BYTES):
            source += piece
        size = len(source)
    else:
        source = file
    if fmt in _FFMPEG_FORMATS:
        return _ffmpeg_decoding(fmt, source, max_seconds)
    opened = _open_compressed(source, fmt, head, size, max_seconds)
    return Decoding(opened.sample_rate, opened.seconds, opened.blocks(max_seconds))


def _ffmpeg_decoding(fmt: AudioFormat, source: bytearray | BinaryIO, max_seconds: float) -> Decoding:
    """:func:`decode_stream` of what FFmpeg decodes (:func:`_ffmpeg`): no length is known before its audio ends."""
    rate, blocks = _ffmpeg(fmt, source, max_seconds)
    return Decoding(rate, None, blocks)


def _ffmpeg(fmt: AudioFormat, source: bytes | bytearray | BinaryIO, max_seconds: float, cut: bool = False) -> tuple[int, Iterator[bytes]]:
    """The sample rate and mono 16-bit PCM blocks of a WebM, MP4, AAC, AMR or MPEG-PS, decoded by FFmpeg in a child process
    (:mod:`speech_recognizer.ffmpeg`), which reads ``source`` (the whole input, or a file from its start); how it
    ended raised as an :class:`AudioError` of its kind (past ``max_seconds``: :func:`too_long`)."""
    from . import ffmpeg

    def refusal(ended: ffmpeg.Ended) -> AudioError:
        return too_long(None, max_seconds) if ended.kind is TOO_LARGE else AudioError(ended.message, ended.kind)

    def blocks(decoding: ffmpeg.Decoding) -> Iterator[bytes]:
        try:
            yield from decoding.blocks()
        except ffmpeg.Ended as ended:
            raise refusal(ended) from None

    try:
        decoding = ffmpeg.start(fmt, source, max_seconds, cut)
    except ffmpeg.Ended as ended:
        raise refusal(ended) from None
    return decoding.sample_rate, blocks(decoding)


def _stream_wav(head: bytearray, read: Callable[[int], bytes], size: int | None, max_seconds: float) -> Decoding:
    """:func:`decode_stream` of a WAV: its header read up to its data chunk (growing ``head``), the data then a block at a time."""
    while True:
        try:
            fmt, offset, _ = parse_wav_header(head)
            break
        except AudioError:  # a header cut short, or chunks of metadata longer than the first bytes read
            more = read(HEADER_ROOM) if len(head) < WAV_HEADER_MAX else b""
            if not more:
                raise
            head += more
    frame = _wav_frame(fmt)
    (declared,) = struct.unpack_from("<I", head, offset - 4)
    limit = int(max_seconds * fmt.sample_rate)
    length: int | None
    if size is not None:  # a file: the header's length, within what the file holds (as decode_wav has it)
        present = size - offset
        length = present if declared == 0 or declared > present else declared
        if length // frame > limit:
            raise too_long(length // frame / fmt.sample_rate, max_seconds)
    else:  # a stream: up to the header's length, or to its end when the header says 0 or the most (not known)
        length = None if declared in (0, 0xFFFFFFFF) else declared
    _raw_subtype(fmt)
    # how long it is, for a stream only when believable: a writer that cannot seek back may claim gigabytes
    seconds = None if length is None or length // frame > limit else length // frame / fmt.sample_rate
    return Decoding(fmt.sample_rate, seconds, _wav_blocks(bytes(head[offset:]), read, fmt, length, max_seconds))


def _wav_blocks(first: bytes, read: Callable[[int], bytes], fmt: WavFormat, length: int | None, max_seconds: float) -> Iterator[bytes]:
    """Mono 16-bit PCM of a WAV's data, ``first`` then what ``read`` gives, up to ``length`` bytes (None: to the end),
    in blocks of about 1 MiB of the file; refused as soon as it passes ``max_seconds``."""
    frame = fmt.channels * fmt.bits // 8
    block, limit = max(1, _BLOCK_BYTES // frame) * frame, int(max_seconds * fmt.sample_rate)
    left, frames, carry = length, 0, b""
    piece = first if left is None else first[:left]
    while piece:
        if left is not None:
            left -= len(piece)
        data = carry + piece
        whole = len(data) - len(data) % frame
        carry = data[whole:]  # a frame cut between two reads
        frames += whole // frame
        if frames > limit:
            raise too_long(None, max_seconds)
        if whole:
            yield _wav_mono(memoryview(data)[:whole], fmt, max_seconds)
        piece = read(block if left is None else min(block, left)) if left != 0 else b""


def headerless_format(content_type: str) -> WavFormat | None:
    """The format of headerless 16-bit PCM the content type declares (``audio/l16; rate=16000; channels=1``,
    or Azure's ``audio/wav; codecs=audio/pcm; samplerate=16000``), or None when it declares none."""
    mime, params = content_params(content_type or "")
    if mime != "audio/l16" and params.get("codecs", "").lower() != "audio/pcm":
        return None
    rate = params.get("rate") or params.get("samplerate")
    if not rate or not rate.isdigit():
        return None
    channels = params.get("channels", "1") or "1"
    if not channels.isdigit():
        raise AudioError(f"channels={channels!r} is not a number")
    fmt = WavFormat(PCM, int(channels), int(rate), 16)
    _check_format(fmt)
    return fmt


#: Room for container headers, and for chunks a WAV may carry after its data (LIST, id3).
HEADER_ROOM = 64 * 1024


def body_limit(content_type: str, max_seconds: float) -> tuple[int, str]:
    """The most bytes a REST body may have before any of it is read, and what that is, for the message:
    ``max_seconds`` of the ``audio/l16`` PCM the content type declares, else of the widest audio
    (Azure's ``audio/wav; codecs=audio/pcm; samplerate=…`` is often a WAV file of another format)."""
    fmt = headerless_format(content_type) if content_params(content_type)[0] == "audio/l16" else None
    if fmt is not None:
        return int(max_seconds * fmt.sample_rate) * 2 * fmt.channels, _describe(fmt)
    return int(max_seconds * MAX_BYTES_PER_SECOND) + 4096, "the widest audio taken (48 kHz, 2 channels, 32 bits)"


def wav_body_limit(head: bytes, max_seconds: float) -> tuple[int, str] | None:
    """The most bytes a WAV body starting with ``head`` may have (its header, ``max_seconds`` of the
    format its header gives, and room for trailing chunks), and what that is; None while ``head``
    does not hold the header up to its data chunk."""
    try:
        fmt, offset, _ = parse_wav_header(head)
    except AudioError:
        return None
    frame = fmt.channels * fmt.bits // 8
    if frame <= 0 or fmt.sample_rate <= 0:
        return None
    return offset + int(max_seconds * fmt.sample_rate) * frame + HEADER_ROOM, f"this WAV's {_describe(fmt)}"


def _describe(fmt: WavFormat) -> str:
    return f"{fmt.sample_rate} Hz, {fmt.channels}-channel, {fmt.bits}-bit audio"


def decode(data: bytes | bytearray, content_type: str = "", *, max_seconds: float, cut: bool = False) -> Audio:
    """Decode a request body to mono 16-bit PCM, by its bytes (the content type only for headerless PCM).

    Raises :class:`AudioError`: 413 when the audio is longer than ``max_seconds``
    (by its header, before decoding, or as soon as decoding passes it), or with
    ``cut`` keeps its first ``max_seconds``.
    """
    if not data:
        raise AudioError(f"the request body is empty: send audio ({AUDIO_LISTED})")
    mime, params = content_params(content_type or "")
    container = sniff(data, content_type)
    if container is WAV:
        return decode_wav(data, max_seconds, cut)
    if container in _FFMPEG_FORMATS:
        rate, blocks = _ffmpeg(container, data, max_seconds, cut)
        return Audio(b"".join(blocks), rate, 1)
    if container is not None:
        opened = _open_compressed(data, container, data, len(data), max_seconds, cut)
        return Audio(b"".join(opened.blocks(max_seconds, cut)), opened.sample_rate, 1)
    fmt = headerless_format(content_type)
    if fmt is not None:
        frames = len(data) // (2 * fmt.channels)
        limit = int(max_seconds * fmt.sample_rate)
        if frames > limit and not cut:
            raise too_long(frames / fmt.sample_rate, max_seconds)
        body = memoryview(data)[: 2 * fmt.channels * min(frames, limit)]
        return Audio(mono(body, fmt.channels), fmt.sample_rate, 1)
    if mime and mime not in SUPPORTED_TYPES and not mime.startswith("application/octet-stream"):
        raise AudioError(f"unsupported content type {mime!r}: send {AUDIO_LISTED} audio", UNSUPPORTED_MEDIA)
    raise AudioError(f"the body {NOT_AUDIO}")


def mono(pcm: bytes | memoryview, channels: int) -> bytes:
    """Interleaved 16-bit PCM down-mixed to mono (the channels' mean, rounded); whole frames only."""
    if channels == 1:
        return pcm if isinstance(pcm, bytes) else bytes(pcm)
    frame_bytes = 2 * channels
    samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % frame_bytes], dtype="<i2").reshape(-1, channels)
    return samples.mean(axis=1).round().astype("<i2").tobytes()


#: What an exact digital zero becomes before the decoder: -1 or +1 (16-bit), by the sample's position
#: in its stream. The server computes features without dither (``--dither=0``: every recognizer, route
#: and in-process run gives the same words), and on digital silence (a muted microphone, zero padding)
#: Vosk's acoustic model then never sees silence: an utterance followed by exact zeros never ended
#: (no endpoint in 10 s of them; with one LSB of noise, 0.7 s after the speech). A fixed pattern
#: keeps that determinism, whatever the audio's cut into pieces.
SILENCE_PATTERN: np.ndarray = np.random.default_rng(20261202).choice(np.array([-1, 1], dtype="<i2"), 4801)


def dither_zeros(pcm: bytes, position: int) -> bytes:
    """``pcm`` (16-bit mono) with each exact zero replaced by :data:`SILENCE_PATTERN`'s value for its
    position in the recognition's stream (``position``: the index of ``pcm``'s first sample, as
    :class:`~speech_recognizer.recognition.Recognition` counts it: from 0 at each USP turn, /vosk stream or REST
    request, and on across a handover to another recognizer)."""
    samples = np.frombuffer(pcm, dtype="<i2")
    zeros = np.flatnonzero(samples == 0)
    if not len(zeros):
        return pcm
    out = samples.copy()
    out[zeros] = SILENCE_PATTERN[(zeros + position) % len(SILENCE_PATTERN)]
    return out.tobytes()


def rms(pcm: bytes) -> float:
    """The root mean square of 16-bit mono PCM, in sample units (full scale 32768); 0 for no samples."""
    samples = np.frombuffer(pcm, dtype="<i2")
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if len(samples) else 0.0


def chunks(audio: Audio, seconds: float) -> list[bytes]:
    """Split PCM into pieces of ``seconds`` (whole frames)."""
    return list(pieces((audio.pcm,), audio.sample_rate, seconds, audio.channels))


def pieces(blocks: Iterable[bytes], sample_rate: int, seconds: float, channels: int = 1) -> Iterator[bytes]:
    """16-bit PCM that comes in ``blocks`` (whole frames), in pieces of ``seconds`` as it comes, the last what is
    left: the pieces :func:`chunks` cuts the whole into, whatever the blocks (the decoder's words depend on them)."""
    size = max(1, int(sample_rate * seconds)) * 2 * channels
    pending = b""
    for block in blocks:
        pending += block
        whole = len(pending) - len(pending) % size
        for start in range(0, whole, size):
            yield pending[start : start + size]
        pending = pending[whole:]
    if pending:
        yield pending
