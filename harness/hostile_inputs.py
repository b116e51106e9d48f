"""Hostile inputs: compressed-audio bombs, lying headers, oversized or withheld requests, zip bombs.

Pure generators (bytes in, bytes out, or raw socket clients), shared by the
hostile bench suite and the tests that prove each limit holds. Nothing here
imports the tests or the server (the recognizer's MPEG and ADTS frame header parsers aside).
"""

from __future__ import annotations

import io
import socket
import struct
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

# ---- FLAC -----------------------------------------------------------------------------------


def _crc(data: bytes, width: int, poly: int) -> int:
    """The MSB-first CRC of ``width`` bits, initial value 0, no reflection, no final XOR: FLAC's frame header
    CRC-8 (poly 0x07) and frame CRC-16 (0x8005), Ogg's page CRC-32 (0x04C11DB7: :func:`_ogg_crc` computes it faster)."""
    top, mask, crc = 1 << (width - 1), (1 << width) - 1, 0
    for byte in data:
        crc ^= byte << (width - 8)
        for _ in range(8):
            crc = ((crc << 1) ^ poly) & mask if crc & top else (crc << 1) & mask
    return crc


def _utf8_number(n: int) -> bytes:
    """FLAC's UTF-8-like coding of a frame number (up to 2**31)."""
    if n < 0x80:
        return bytes([n])
    if n < 0x800:
        return bytes([0xC0 | n >> 6, 0x80 | n & 0x3F])
    if n < 0x10000:
        return bytes([0xE0 | n >> 12, 0x80 | (n >> 6) & 0x3F, 0x80 | n & 0x3F])
    return bytes([0xF0 | n >> 18, 0x80 | (n >> 12) & 0x3F, 0x80 | (n >> 6) & 0x3F, 0x80 | n & 0x3F])


#: FLAC's frame-header codes for the sample rates it can name without STREAMINFO.
_FLAC_RATE_CODES = {88200: 1, 176400: 2, 192000: 3, 8000: 4, 16000: 5, 22050: 6, 24000: 7, 32000: 8, 44100: 9, 48000: 10, 96000: 11}


def flac_bomb(frames: int = 1000, block: int = 65535, channels: int = 8, rate: int = 16000,
              total_samples: int | None = None, value: int = 0) -> bytes:
    """A FLAC file of ``frames`` frames of ``block`` samples x ``channels``, every subframe CONSTANT.

    About 35 bytes a frame: the defaults are 35 KB that decode to 65.5 M frames x 8 channels
    (4,096 s at 16 kHz, 1 GB as 16-bit PCM, 2 GB as the float a decoder may use). STREAMINFO's
    total sample count is ``total_samples`` (default: the truth; 0 means "unknown", which FLAC
    allows; a smaller number is a lie the frames do not keep).
    """
    assert 1 <= channels <= 8 and 16 <= block <= 65535 and rate in _FLAC_RATE_CODES
    total = frames * block if total_samples is None else total_samples
    info = struct.pack(">HH", block, block) + b"\0" * 6  # min/max block size; frame sizes unknown
    info += ((rate << 44) | ((channels - 1) << 41) | (15 << 36) | total).to_bytes(8, "big")  # 16 bits/sample
    info += b"\0" * 16  # MD5 unknown
    out = bytearray(b"fLaC" + bytes([0x80, 0, 0, len(info)]) + info)  # the last (only) metadata block
    subframes = (b"\0" + struct.pack(">h", value)) * channels  # type CONSTANT, then the 16-bit value
    for n in range(frames):
        head = bytes([0xFF, 0xF8, 0x70 | _FLAC_RATE_CODES[rate], ((channels - 1) << 4) | 0x08])
        head += _utf8_number(n) + struct.pack(">H", block - 1)
        frame = head + bytes([_crc(head, 8, 0x07)]) + subframes
        out += frame + struct.pack(">H", _crc(frame, 16, 0x8005))
    return bytes(out)


# ---- Ogg ------------------------------------------------------------------------------------


#: Each byte's bits in the opposite order.
_REVERSED = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def _ogg_crc(data: bytes) -> int:
    """:func:`_crc`'s Ogg page CRC-32 (0x04C11DB7, MSB-first), by zlib's (the same polynomial, LSB-first): on the bytes
    bit-reversed, from 0 (zlib's value 0xFFFFFFFF undoes its first inversion), not inverted at the end, bit-reversed."""
    crc = zlib.crc32(data.translate(_REVERSED), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return int(f"{crc:032b}"[::-1], 2)


def _ogg_page(packets: list[bytes], granule: int, sequence: int, flags: int = 0, last: bool = True) -> bytes:
    """An Ogg page (stream 1) of ``packets``; not ``last``, the last of them goes on in the next page (255 segments of
    255 bytes end this one)."""
    lacing = bytearray()
    for packet in packets:
        lacing += b"\xff" * (len(packet) // 255) + (bytes([len(packet) % 255]) if last or packet is not packets[-1] else b"")
    page = bytearray(b"OggS\0" + bytes([flags]) + struct.pack("<qIII", granule, 1, sequence, 0) + bytes([len(lacing)]) + lacing)
    page += b"".join(packets)
    struct.pack_into("<I", page, 22, _ogg_crc(bytes(page)))
    return bytes(page)


def _ogg_packet_pages(packet: bytes, granule: int, sequence: int) -> list[bytes]:
    """``packet`` alone over as many pages as it takes (sequence numbers from ``sequence``), each after the first
    flagged as going on with it."""
    pieces = [packet[at : at + 255 * 255] for at in range(0, len(packet), 255 * 255)] or [b""]
    if len(pieces[-1]) == 255 * 255:  # a packet of whole pages ends in a page of one empty segment
        pieces.append(b"")
    return [_ogg_page([piece], granule if n == len(pieces) - 1 else -1, sequence + n, flags=1 if n else 0, last=n == len(pieces) - 1)
            for n, piece in enumerate(pieces)]


def ogg_opus_bomb(seconds: float = 3600.0, channels: int = 2) -> bytes:
    """Ogg/Opus that decodes to ``seconds`` of 48 kHz audio from about 26 bytes a second.

    Every packet is 2 bytes: a code-3 TOC and a count of six empty 20 ms frames,
    which a decoder conceals as lost (120 ms of output each). The default hour of
    stereo is 93 KB and decodes to 345 M samples (690 MB as 16-bit PCM). The last
    page's granule position, where readers take the length from, tells the truth.
    """
    assert channels in (1, 2)
    pre_skip = 312
    head = b"OpusHead" + bytes([1, channels]) + struct.pack("<HIhB", pre_skip, 48000, 0, 0)
    tags = b"OpusTags" + struct.pack("<I", 6) + b"hostil" + struct.pack("<I", 0)
    pages = [_ogg_page([head], 0, 0, flags=2), _ogg_page([tags], 0, 1)]
    packet = bytes([(31 << 3) | ((channels - 1) << 2) | 3, 6])  # CELT fullband 20 ms, stereo flag, code 3; 6 CBR frames
    count = int(seconds / 0.12) + 1
    granule, sent = pre_skip, 0
    while sent < count:
        n = min(255, count - sent)
        sent += n
        granule += n * 5760
        pages.append(_ogg_page([packet] * n, granule, len(pages), flags=4 if sent == count else 0))
    return b"".join(pages)


def vorbis_setup(codebooks: int, entries: int, dimensions: int, *, playable: bool = False) -> bytes:
    """A Vorbis setup header of ``codebooks`` codebooks of ``entries`` codewords of one length each (a whole tree) and
    ``dimensions`` values each (lookup type 1), which a decoder expands to ``entries`` x ``dimensions`` floats each as
    it opens it (256 x 16384 x 16: some 5 KB for about 270 MB). Then zeros (no valid floor: FFmpeg's decoder refuses
    it once it has read and expanded every codebook), or, ``playable``, one floor 0, residue 0, mapping and mode of
    the first codebook: a setup libvorbis takes whole, and expands only then. Vorbis packs its bits from each byte's
    lowest."""
    bits, at = 0, 0

    def put(value: int, width: int) -> None:
        nonlocal bits, at
        bits, at = bits | value << at, at + width

    values = 1  # lookup type 1's: the most whose power of ``dimensions`` is within ``entries``
    while (values + 1) ** dimensions <= entries:
        values += 1
    put(codebooks - 1, 8)
    for _ in range(codebooks):
        put(0x564342, 24), put(dimensions, 16), put(entries, 24)  # sync, dimensions, entries
        put(1, 1), put((entries - 1).bit_length() - 1, 5), put(entries, entries.bit_length())  # ordered: all one length
        put(1, 4), put(0, 32), put(0x60000000, 32), put(0, 4), put(0, 1), put(0, values)  # lookup 1: min, delta, 1-bit values
    if not playable:
        return b"\x05vorbis" + bits.to_bytes((at + 64 + 7) // 8, "little")
    put(0, 6), put(0, 16)  # one time-domain transform (always 0)
    put(0, 6), put(0, 16), put(1, 8), put(16000, 16), put(256, 16), put(6, 6), put(1, 8), put(0, 4), put(0, 8)  # floor 0
    put(0, 6), put(0, 16), put(0, 24), put(16, 24), put(15, 24), put(0, 6), put(0, 8), put(0, 3), put(0, 1)  # residue 0
    put(0, 6), put(0, 16), put(0, 1), put(0, 1), put(0, 2), put(0, 8), put(0, 8), put(0, 8)  # mapping 0: floor 0, residue 0
    put(0, 6), put(0, 1), put(0, 16), put(0, 16), put(0, 8), put(1, 1)  # one mode (short blocks, mapping 0); framing bit
    return b"\x05vorbis" + bits.to_bytes((at + 7) // 8, "little")


def ogg_vorbis_bomb(codebooks: int = 256, entries: int = 16384, dimensions: int = 16, setup_bytes: int = 0) -> bytes:
    """An Ogg/Vorbis (16 kHz mono) whose setup header is :func:`vorbis_setup`'s, ``playable``, and one empty audio
    packet: the defaults are 5 KB whose decoder, opening it, expands the codebooks to some 300 MB. With
    ``setup_bytes``, the setup header is that long, zeros after its framing bit (which libvorbis does not read), over
    as many pages as it takes."""
    ident = b"\x01vorbis" + struct.pack("<IBIiiiBB", 0, 1, 16000, 0, 0, 0, 0xB8, 1)  # blocks of 256 and 2048
    comment = b"\x03vorbis" + bytes(8) + b"\x01"
    setup = vorbis_setup(codebooks, entries, dimensions, playable=True)
    if not setup_bytes:
        return (_ogg_page([ident], 0, 0, flags=2) + _ogg_page([comment, setup], 0, 1)
                + _ogg_page([bytes(10)], 160, 2, flags=4))
    pages = [_ogg_page([ident], 0, 0, flags=2), _ogg_page([comment], 0, 1)]
    pages += _ogg_packet_pages(setup + bytes(max(0, setup_bytes - len(setup))), 0, 2)
    return b"".join([*pages, _ogg_page([bytes(10)], 160, len(pages), flags=4)])


def webm_opus_bomb(seconds: float = 3600.0, channels: int = 2) -> bytes:
    """WebM/Opus that decodes to ``seconds`` of 48 kHz audio from about 70 bytes a second: :func:`ogg_opus_bomb`'s
    2-byte packet (six empty 20 ms frames, concealed as lost) in a Matroska block again and again, muxed by PyAV
    (FFmpeg), whose header gives the true length. The default hour is 263 KB."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="webm") as muxer:
        stream = muxer.add_stream("libopus", rate=48000, layout="stereo" if channels == 2 else "mono")
        muxer.start_encoding()
        for i in range(int(seconds / 0.12) + 1):
            packet = av.Packet(bytes([(31 << 3) | ((channels - 1) << 2) | 3, 6]))
            packet.stream, packet.time_base = stream, Fraction(1, 48000)
            packet.pts = packet.dts = i * 5760
            packet.duration = 5760
            muxer.mux(packet)
    return buf.getvalue()


def _ebml(element: bytes, data: bytes) -> bytes:
    """An EBML element (Matroska's): its ID, its size (8 bytes) and ``data``."""
    return element + (1 << 56 | len(data)).to_bytes(8, "big") + data


#: Matroska's lacing kinds (a block's flags, bits 1-2) and how the sizes of a block's laces but the last are written
#: for ``count`` laces of ``size`` bytes: Xiph's (runs of 255), EBML's (the first a variable-length number, the others
#: signed differences from the one before: 0, 0x3F biased in one byte) or none (fixed: all of one size).
_LACINGS = {"xiph": (0x02, lambda count, size: (b"\xff" * (size // 255) + bytes([size % 255])) * (count - 1)),
            "ebml": (0x06, lambda count, size: (0x4000 | size).to_bytes(2, "big") + b"\xbf" * (count - 2)),
            "fixed": (0x04, lambda count, size: b"")}


def webm_opus_laced(seconds: float = 3600.0, lacing: str = "xiph", laces: int = 256) -> bytes:
    """WebM/Opus (48 kHz mono) that decodes to ``seconds`` from blocks of ``laces`` laces each (Matroska's most: 256),
    laced by ``lacing`` (:data:`_LACINGS`), every lace :func:`ogg_opus_bomb`'s 2-byte packet of six empty 20 ms frames
    (120 ms, concealed as lost): 30.7 s of audio from each block of some 520 to 780 bytes, written by hand (no length
    in its header). The default hour is 65 KB (fixed) to 95 KB."""
    flag, sizes = _LACINGS[lacing]
    packet = bytes([(31 << 3) | 3, 6])
    head = b"OpusHead" + bytes([1, 1]) + struct.pack("<HIhB", 312, 48000, 0, 0)
    audio = _ebml(b"\xe1", _ebml(b"\xb5", struct.pack(">d", 48000.0)) + _ebml(b"\x9f", b"\x01"))
    track = _ebml(b"\xae", _ebml(b"\xd7", b"\x01") + _ebml(b"\x73\xc5", b"\x01") + _ebml(b"\x83", b"\x02")
                  + _ebml(b"\x86", b"A_OPUS") + _ebml(b"\x63\xa2", head) + audio)
    block_ms = laces * 120  # a cluster's time in ms (the segment's scale), its one block at its start
    block = _ebml(b"\xa3", b"\x81" + struct.pack(">h", 0) + bytes([0x80 | flag, laces - 1]) + sizes(laces, len(packet))
                  + packet * laces)
    clusters = b"".join(_ebml(b"\x1f\x43\xb6\x75", _ebml(b"\xe7", (n * block_ms).to_bytes(4, "big")) + block)
                        for n in range(int(seconds * 1000 / block_ms) + 1))
    header = _ebml(b"\x1a\x45\xdf\xa3", _ebml(b"\x42\x86", b"\x01") + _ebml(b"\x42\xf7", b"\x01") + _ebml(b"\x42\xf2", b"\x04")
                   + _ebml(b"\x42\xf3", b"\x08") + _ebml(b"\x42\x82", b"webm") + _ebml(b"\x42\x87", b"\x02")
                   + _ebml(b"\x42\x85", b"\x02"))
    info = _ebml(b"\x15\x49\xa9\x66", _ebml(b"\x2a\xd7\xb1", (1000000).to_bytes(3, "big")))
    return header + _ebml(b"\x18\x53\x80\x67", info + _ebml(b"\x16\x54\xae\x6b", track) + clusters)


def adts_bomb(seconds: float = 3600.0) -> bytes:
    """Raw AAC (ADTS) that decodes to ``seconds`` of 8 kHz mono silence from about 86 bytes a second: FFmpeg's AAC
    encoder's frames of silence (PyAV), the steady one repeated, each 1024 samples. ADTS says no length: only decoding
    tells it. The default hour is 309 KB."""
    import av
    import numpy as np

    from speech_recognizer.audio import adts_frame

    buf = io.BytesIO()
    with av.open(buf, "w", format="adts") as muxer:
        stream = muxer.add_stream("aac", rate=8000, layout="mono")
        for i in range(3):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 8000), dtype=np.int16), format="s16", layout="mono")
            frame.sample_rate, frame.pts = 8000, i * 8000
            for packet in stream.encode(frame):
                muxer.mux(packet)
        for packet in stream.encode(None):
            muxer.mux(packet)
    data, frames, at = buf.getvalue(), [], 0
    while (header := adts_frame(data, at)) is not None:
        frames.append(data[at : at + header.length])
        at += header.length
    return b"".join(frames[:2]) + frames[len(frames) // 2] * (int(seconds * 8000 / 1024) + 1)


def amr_bomb(seconds: float = 3600.0, wide: bool = False) -> bytes:
    """Raw AMR-NB (AMR-WB with ``wide``) that decodes to ``seconds`` of silence from 50 bytes a second: a file header,
    then no-data frames (frame type 15: a header byte alone, 20 ms each), which OpenCORE's decoder (the server's)
    conceals as silence; the smallest speech frames are 13 bytes (650 bytes a second), OpenCORE's encoder's at 12.2
    kbit/s 32 (1.6 KB/s). A raw AMR file says no length: only decoding tells it. The default hour is 180 KB."""
    return (b"#!AMR-WB\n" if wide else b"#!AMR\n") + bytes([15 << 3 | 4]) * (int(seconds * 50) + 1)


# ---- MP3 ------------------------------------------------------------------------------------


def mp3_bomb(seconds: float = 3600.0, *, xing: bool = True) -> bytes:
    """An MP3 of ``seconds`` of silence from 1000 bytes a second: MPEG-2.5 Layer III at 8 kHz, 8 kbit/s, mono, the
    least any MP3 takes, each frame 72 bytes (its header, then side information of zeros: no bits for either granule)
    and 576 samples (72 ms). The default hour is 3.6 MB and decodes to 28.8 M samples (58 MB as 16-bit PCM). With
    ``xing`` its first frame is a Xing header counting the frames, as LAME writes one: its length is known before
    decoding; without, nothing but its frames tell it (a decoder's guess from the size and the first frame's bit rate
    is no more than a guess)."""
    header = bytes([0xFF, 0xE3, 0x18, 0xC4])  # sync, MPEG-2.5, layer III, no CRC; 8 kbit/s, 8 kHz; mono, original
    frame = header + bytes(68)
    count = int(seconds / 0.072) + 1
    first = b""
    if xing:  # after the header and the 9 bytes of mono MPEG-2.5 side information: "Xing", flags (frames), frames
        first = header + bytes(9) + b"Xing" + struct.pack(">II", 1, count)
        first += bytes(len(frame) - len(first))
    return first + frame * count


def random_frame_bodies(mp3: bytes, rng: np.random.Generator) -> bytes:
    """``mp3`` (no ID3 tag) with every frame's bytes after its header random, the first (a Xing/Info header) whole:
    each frame is found where the one before says, and each is damaged, which its decoder conceals (libmpg123
    without its quiet flag writes one to three lines to stderr for each)."""
    from speech_recognizer.audio import mpeg_frame

    out, at = bytearray(mp3), 0
    while (frame := mpeg_frame(mp3, at)) is not None:
        if at:
            out[at + 4 : at + frame.length] = rng.bytes(frame.length - 4)
        at += frame.length
    return bytes(out)


# ---- MP4 ------------------------------------------------------------------------------------


def _mp4_box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def _mp4_boxes(boxes: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Each box of ``boxes`` (one after the other, none holding the next): its type and payload."""
    at = 0
    while at + 8 <= len(boxes):
        size, kind = struct.unpack_from(">I4s", boxes, at)
        yield kind, boxes[at + 8 : at + size]
        at += size


#: The MP4 boxes :func:`mp4_declaring` rebuilds on the way to the sample table.
_MP4_PATH = (b"moov", b"trak", b"mdia", b"minf", b"stbl")


def _mp4_rebuilt(data: bytes, start: int, end: int, stbl: Callable[[bytes], bytes]) -> bytes:
    """The boxes of ``data[start:end]``, each on the way to the sample table rebuilt (its size new), the sample table's
    boxes (its payload) given to ``stbl``."""
    out = b""
    while start + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, start)
        if kind == b"stbl":
            out += _mp4_box(kind, stbl(data[start + 8 : start + size]))
        elif kind in _MP4_PATH:
            out += _mp4_box(kind, _mp4_rebuilt(data, start + 8, start + size, stbl))
        else:
            out += data[start : start + size]
        start += size
    return out


def mp4_declaring(m4a: bytes, samples: int | None = None, entries: dict[bytes, int] | None = None) -> bytes:
    """``m4a`` (one track, its ``moov`` after its ``mdat``, as FFmpeg's muxer writes it: no chunk offset moves) whose
    sample table declares ``samples`` samples of one size in one chunk (its time-to-sample, sample-to-chunk and sample
    size boxes of a few bytes each: FFmpeg indexes each sample declared as it opens the file, some 40 bytes each) and,
    for each box of ``entries`` (``stss``: sync samples, ``stts`` ...), that count of entries with only the first in
    the box (FFmpeg allocates the count declared). A 10 KB file may declare billions."""
    assert m4a.index(b"mdat") < m4a.index(b"moov"), "moov after mdat"

    def stbl(boxes: bytes) -> bytes:
        out = b""
        for kind, body in _mp4_boxes(boxes):
            if samples is not None and kind == b"stts":
                body = struct.pack(">IIII", 0, 1, samples, 1024)
            elif samples is not None and kind == b"stsc":
                body = struct.pack(">IIIII", 0, 1, 1, samples, 1)
            elif samples is not None and kind == b"stsz":
                body = struct.pack(">III", 0, max(struct.unpack_from(">I", body, 12)[0], 1), samples)
            elif samples is not None and kind in (b"sgpd", b"sbgp"):  # the priming's sample groups, of the old count
                continue
            if kind not in (entries or {}):
                out += _mp4_box(kind, body)
        for kind, count in (entries or {}).items():
            out += _mp4_box(kind, struct.pack(">III", 0, count, 1))
        return out

    return _mp4_rebuilt(m4a, 0, len(m4a), stbl)


def _mp4_edited(data: bytes, path: tuple[bytes, ...], edit: Callable[[bytes], bytes]) -> bytes:
    """The boxes of ``data``, the payload of the first box at ``path`` (its types from the top) given to ``edit``, each
    box on the way rebuilt (its size new)."""
    out, done = b"", False
    for kind, body in _mp4_boxes(data):
        if kind == path[0] and not done:
            body, done = edit(body) if len(path) == 1 else _mp4_edited(body, path[1:], edit), True
        out += _mp4_box(kind, body)
    return out


#: Where :func:`mp4_tables_in` moves the sample tables (their boxes, one after the other) to: the path of the box they
#: are added to, and what is added.
_MP4_PLACES: dict[str, tuple[tuple[bytes, ...], Callable[[bytes], bytes]]] = {
    "udta": ((b"moov", b"trak"), lambda tables: _mp4_box(b"udta", tables)),
    "edts": ((b"moov", b"trak"), lambda tables: _mp4_box(b"edts", tables)),
    "meta": ((b"moov", b"trak"), lambda tables: _mp4_box(b"meta", bytes(4) + _mp4_box(b"hdlr", bytes(8) + b"mdir" + bytes(13)) + tables)),
    "dinf": ((b"moov", b"trak", b"mdia", b"minf"), lambda tables: _mp4_box(b"dinf", tables)),
}


def mp4_tables_in(m4a: bytes, samples: int, where: str) -> bytes:
    """``m4a`` (one track, its ``moov`` after its ``mdat``) whose sample tables declare ``samples`` samples as
    :func:`mp4_declaring`'s do, where FFmpeg's demuxer reads them as in the sample table, for the track: moved into a box
    of the track (``where``: ``udta``, ``edts``, ``meta`` after its handler, ``dinf`` in its ``minf``) or after the boxes
    of its sample description's entry (``stsd``); or left where they are, the movie header named ``hoov`` (FFmpeg reads
    one beginning with ``mvhd`` as ``moov``), or in a second track after one whose ``mdia`` ends in a box of an invalid
    size (4 bytes: FFmpeg reads no further in that ``mdia``, and on)."""
    declared = mp4_declaring(m4a, samples=samples)
    if where == "hoov":
        return b"".join(_mp4_box(b"hoov" if kind == b"moov" else kind, body) for kind, body in _mp4_boxes(declared))
    if where == "second trak":
        hostile = dict(_mp4_boxes(dict(_mp4_boxes(declared))[b"moov"]))[b"trak"]
        broken = _mp4_edited(m4a, (b"moov", b"trak", b"mdia"), lambda mdia: mdia + struct.pack(">I4s", 4, b"free"))
        return _mp4_edited(broken, (b"moov",), lambda moov: moov + _mp4_box(b"trak", hostile))
    tables = b""

    def taken(stbl: bytes) -> bytes:
        nonlocal tables
        kept = b""
        for kind, body in _mp4_boxes(stbl):
            if kind in (b"stts", b"stsc", b"stsz"):
                tables += _mp4_box(kind, body)
            else:
                kept += _mp4_box(kind, body)
        return kept

    moved = _mp4_edited(declared, _MP4_PATH, taken)
    if where == "stsd":
        def entry_then_tables(stsd: bytes) -> bytes:
            size = struct.unpack_from(">I", stsd, 8)[0]
            return stsd[:8] + struct.pack(">I", size + len(tables)) + stsd[12 : 8 + size] + tables + stsd[8 + size :]
        return _mp4_edited(moved, (*_MP4_PATH, b"stsd"), entry_then_tables)
    path, holder = _MP4_PLACES[where]
    return _mp4_edited(moved, path, lambda body: body + holder(tables))


def mp4_chunked(mov: bytes, chunks: int, chunk_samples: int, then: int | None = None) -> bytes:
    """``mov`` (one track, its ``moov`` after its ``mdat``) whose sample-to-chunk table declares ``chunk_samples``
    samples in each of ``chunks`` chunks (its chunk offsets table that many entries, each its first chunk's): FFmpeg
    indexes a track of uncompressed sound (PCM) by pieces of 1024 samples of its chunks as it opens the file, whatever
    its sample sizes declare. ``then``: a second chunk offsets table after it, of that many (FFmpeg keeps the first)."""
    assert mov.index(b"mdat") < mov.index(b"moov"), "moov after mdat"

    def stbl(boxes: bytes) -> bytes:
        out = b""
        for kind, body in _mp4_boxes(boxes):
            if kind == b"stsc":
                body = struct.pack(">IIIII", 0, 1, 1, chunk_samples, 1)
            elif kind == b"stco":
                for count in (chunks, *([] if then is None else [then])):
                    out += _mp4_box(kind, struct.pack(">II", 0, count) + body[8:12] * count)
                continue
            out += _mp4_box(kind, body)
        return out

    return _mp4_rebuilt(mov, 0, len(mov), stbl)


def mp4_compressed_header(m4a: bytes, declared: int | None = None) -> bytes:
    """``m4a`` (its ``moov`` last) whose movie header is compressed (QuickTime's ``cmov``: zlib), saying it is
    ``declared`` bytes once uncompressed (default the truth; FFmpeg allocates what it says, up to 4 GB)."""
    at = m4a.index(b"moov") - 4
    moov = m4a[at:]
    assert at + struct.unpack_from(">I", m4a, at)[0] == len(m4a), "moov last"
    cmvd = struct.pack(">I", len(moov) if declared is None else declared) + zlib.compress(moov, 9)
    return m4a[:at] + _mp4_box(b"moov", _mp4_box(b"cmov", _mp4_box(b"dcom", b"zlib") + _mp4_box(b"cmvd", cmvd)))


def _alac_frame(samples: np.ndarray, frame_samples: int) -> bytes:
    """One ALAC frame of the mono 16-bit ``samples`` stored verbatim (escape flag; its sample count in its header
    when it is shorter than ``frame_samples``) and the end tag: ALAC's bits, most significant first."""
    partial = len(samples) < frame_samples
    bits = "000" + "0000" + "0" * 12 + str(int(partial)) + "00" + "1" + (format(len(samples), "032b") if partial else "")
    bits += "".join(format(int(value) & 0xFFFF, "016b") for value in samples) + "111"
    bits += "0" * (-len(bits) % 8)
    return int(bits, 2).to_bytes(len(bits) // 8, "big")


def alac_m4a(samples: np.ndarray, frame_samples: int = 4096, rate: int = 16000) -> bytes:
    """An M4A of the mono 16-bit ``samples`` (at ``rate``) in ALAC frames of ``frame_samples`` each (the last shorter:
    its count in its header), stored verbatim, its magic cookie declaring that frame length: written by hand, as no
    encoder at hand writes frames of other than 4096 samples (FFmpeg's takes no other)."""
    frames = [_alac_frame(samples[at : at + frame_samples], frame_samples) for at in range(0, len(samples), frame_samples)]
    ftyp = _mp4_box(b"ftyp", b"M4A " + struct.pack(">I", 0x200) + b"M4A mp42isom")
    mdat = _mp4_box(b"mdat", b"".join(frames))
    matrix = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
    millis = len(samples) * 1000 // rate
    mvhd = _mp4_box(b"mvhd", struct.pack(">IIIIIIH", 0, 0, 0, 1000, millis, 0x10000, 0x100) + bytes(10) + matrix + bytes(24)
                    + struct.pack(">I", 2))
    tkhd = _mp4_box(b"tkhd", struct.pack(">IIIIII", 7, 0, 0, 1, 0, millis) + bytes(8) + struct.pack(">HHHH", 0, 0, 0x100, 0)
                    + matrix + bytes(8))
    mdhd = _mp4_box(b"mdhd", struct.pack(">IIIIIHH", 0, 0, 0, rate, len(samples), 0x55C4, 0))
    hdlr = _mp4_box(b"hdlr", struct.pack(">II", 0, 0) + b"soun" + bytes(12) + b"\0")
    dinf = _mp4_box(b"dinf", _mp4_box(b"dref", struct.pack(">II", 0, 1) + _mp4_box(b"url ", struct.pack(">I", 1))))
    cookie = _mp4_box(b"alac", struct.pack(">IIBBBBBBHIII", 0, frame_samples, 0, 16, 40, 10, 14, 1, 255,
                                           max(map(len, frames)), 0, rate))
    entry = _mp4_box(b"alac", bytes(6) + struct.pack(">HHHIHHHHI", 1, 0, 0, 0, 1, 16, 0, 0, rate << 16) + cookie)
    whole, last = divmod(len(samples), frame_samples)
    stts = struct.pack(">II", 0, 1 + bool(last)) + struct.pack(">II", whole, frame_samples) + (struct.pack(">II", 1, last) if last else b"")
    stbl = _mp4_box(b"stbl", _mp4_box(b"stsd", struct.pack(">II", 0, 1) + entry) + _mp4_box(b"stts", stts)
                    + _mp4_box(b"stsc", struct.pack(">IIIII", 0, 1, 1, len(frames), 1))
                    + _mp4_box(b"stsz", struct.pack(">III", 0, 0, len(frames)) + b"".join(struct.pack(">I", len(f)) for f in frames))
                    + _mp4_box(b"stco", struct.pack(">III", 0, 1, len(ftyp) + 8)))
    minf = _mp4_box(b"minf", _mp4_box(b"smhd", bytes(8)) + dinf + stbl)
    trak = _mp4_box(b"trak", tkhd + _mp4_box(b"mdia", mdhd + hdlr + minf))
    return ftyp + mdat + _mp4_box(b"moov", mvhd + trak)


# ---- WAV ------------------------------------------------------------------------------------


def wav_header(*, rate: int = 16000, channels: int = 1, bits: int = 16, tag: int = 1, data_bytes: int = 0xFFFFFFF0) -> bytes:
    """A 44-byte RIFF/WAVE header that claims ``data_bytes`` of data (by default nearly 4 GB)."""
    align = channels * bits // 8
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * align, align, bits)
    return b"RIFF" + struct.pack("<I", min(0xFFFFFFFF, data_bytes + 36)) + b"WAVEfmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", data_bytes)


# ---- zip ------------------------------------------------------------------------------------


def zip_bomb(unpacked_bytes: int, name: str = "model/am/final.mdl") -> bytes:
    """A zip holding one member of ``unpacked_bytes`` zeros (deflate: about 1/1000 of that),
    next to a ``conf/model.conf`` so that it looks like a Vosk model."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("model/conf/model.conf", "--min-active=200\n")
        info = zipfile.ZipInfo(name)
        info.compress_type = zipfile.ZIP_DEFLATED
        with archive.open(info, "w", force_zip64=True) as member:
            chunk = b"\0" * (1 << 20)
            left = unpacked_bytes
            while left > 0:
                member.write(chunk[: min(left, len(chunk))])
                left -= len(chunk)
    return buf.getvalue()


# ---- HTTP -----------------------------------------------------------------------------------


def raw_request(host: str, port: int, head: bytes, body: bytes = b"", *, timeout: float = 30.0) -> tuple[bytes, float]:
    """Send ``head`` and ``body`` as they are; the server's whole answer (until it closes or
    ``timeout``) and the seconds it took."""
    started = time.monotonic()
    with socket.create_connection((host, port), timeout=timeout) as sock:
        try:
            sock.sendall(head + body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered and closed before the whole body was written: the answer is still there to read
        return _read_all(sock, started, timeout), time.monotonic() - started


@dataclass(frozen=True)
class Exchange:
    """What :func:`exchange` got: the server's answer, the seconds until its first byte, the bytes sent."""

    answer: bytes
    first_byte_s: float
    sent: int


def exchange(host: str, port: int, data: bytes, *, timeout: float = 60.0, piece: int = 65536) -> Exchange:
    """Send ``data`` a piece at a time, reading between pieces, until the server has answered (a whole
    response, or it closed), or stops taking data, or ``timeout``.

    A server may answer before it has read everything (a head or body over its limit, a busy
    server); a client that only wrote would not see that answer until it had sent it all.
    """
    started = time.monotonic()
    first = float("nan")
    answer = bytearray()
    sent = 0
    sending = True
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.setblocking(False)
        while time.monotonic() - started < timeout:
            try:
                got = sock.recv(65536)
                if not got:
                    break
                if not answer:
                    first = time.monotonic() - started
                answer += got
                if response_complete(bytes(answer)):
                    break
                continue
            except BlockingIOError:
                pass
            except OSError:
                break
            if sending and sent < len(data) and not answer:
                try:
                    sent += sock.send(data[sent : sent + piece])
                except BlockingIOError:
                    time.sleep(0.001)
                except OSError:
                    # The server closed with our data unread, which resets the connection: its answer may have
                    # arrived between the last read and this send, and is still there to read (then the reset).
                    sending = False
            else:
                time.sleep(0.01)
    return Exchange(bytes(answer), first, sent)


def send_until_answered(host: str, port: int, data: bytes, *, timeout: float = 60.0, piece: int = 65536) -> tuple[bytes, float]:
    """:func:`exchange`'s answer and the seconds until its first byte."""
    got = exchange(host, port, data, timeout=timeout, piece=piece)
    return got.answer, got.first_byte_s


def response_complete(answer: bytes) -> bool:
    """Whether ``answer`` holds a whole HTTP response: with a ``Content-Length``, or chunked up to its last chunk."""
    head, sep, body = answer.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
        if name.strip().lower() == b"transfer-encoding" and value.strip().lower() == b"chunked":
            return body.startswith(b"0\r\n\r\n") or b"\r\n0\r\n\r\n" in body
    return False


def trickle(host: str, port: int, data: bytes, *, interval: float, timeout: float) -> tuple[bytes, float, int]:
    """Send ``data`` one byte every ``interval`` seconds until the server answers or closes, or
    ``timeout``: (what it answered, seconds, bytes sent)."""
    started = time.monotonic()
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(interval)
        sent = 0
        for i in range(len(data)):
            try:
                sock.sendall(data[i : i + 1])
            except OSError:
                break
            sent += 1
            try:
                got = sock.recv(65536)
            except TimeoutError:
                if time.monotonic() - started > timeout:
                    break
                continue
            except OSError:
                got = b""
            return got + _read_all(sock, started, timeout), time.monotonic() - started, sent
        return _read_all(sock, started, timeout), time.monotonic() - started, sent


def _read_all(sock: socket.socket, started: float, timeout: float) -> bytes:
    out = bytearray()
    while time.monotonic() - started < timeout:
        sock.settimeout(max(0.01, timeout - (time.monotonic() - started)))
        try:
            piece = sock.recv(65536)
        except TimeoutError:
            break
        except OSError:
            break
        if not piece:
            break
        out += piece
        if response_complete(bytes(out)):
            break
    return bytes(out)


_HOST = b"Host: 127.0.0.1\r\n"
#: Requests an HTTP/1.1 parser (llhttp: httptools, aiohttp) refuses, by name, each with (part of) the reason its 400 gives.
MALFORMED_REQUESTS: dict[str, tuple[bytes, str]] = {
    "garbage request line": (b"GARBAGE\r\n\r\n", "Invalid method encountered"),
    "unknown method": (b"FOO /ready HTTP/1.1\r\n" + _HOST + b"\r\n", "Invalid method encountered"),
    "invalid method token": (b"G@T /ready HTTP/1.1\r\n" + _HOST + b"\r\n", "Invalid method encountered"),
    "header without a colon": (b"GET /ready HTTP/1.1\r\n" + _HOST + b"NoColonHere\r\n\r\n", "Invalid header token"),
    "NUL in a header": (b"GET /ready HTTP/1.1\r\n" + _HOST + b"X-A: a\x00b\r\n\r\n", "Invalid header value char"),
    "bare LF": (b"GET /ready HTTP/1.1\nHost: 127.0.0.1\n\n", "Expected CRLF after version"),
    "Content-Length: abc": (b"POST /ready HTTP/1.1\r\n" + _HOST + b"Content-Length: abc\r\n\r\n", "Invalid character in Content-Length"),
    "two Content-Lengths": (b"POST /ready HTTP/1.1\r\n" + _HOST + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", "Duplicate Content-Length"),
    "bad chunk size": (b"POST /ready HTTP/1.1\r\n" + _HOST + b"Transfer-Encoding: chunked\r\n\r\nZZ\r\nhello\r\n0\r\n\r\n", "Invalid character in chunk size"),
    "HTTP/2 preface": (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "HTTP/2 is not served here"),
}


def write_then_read(host: str, port: int, *pieces: bytes, timeout: float = 10.0, between: Callable[[], object] = lambda: None,
                    read_after: float = 0.0, receive_buffer: int = 0) -> tuple[bytes, str]:
    """Write ``pieces`` whole one after the other (calling ``between()`` before each but the first: a pause, a wait), then
    read until the server closes, as many clients do: (what it answered, ``"EOF"`` or the name of the error that ended
    the exchange, such as ``ConnectionResetError``). ``read_after``: seconds before the reading begins (a client busy
    elsewhere); ``receive_buffer``: the client's socket receive buffer, in bytes (0: the system's)."""
    answer = bytearray()
    with socket.socket() as sock:
        if receive_buffer:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.settimeout(timeout)
        sock.connect((host, port))
        try:
            for n, piece in enumerate(pieces):
                if n:
                    between()
                sock.sendall(piece)
            time.sleep(read_after)
            while got := sock.recv(65536):
                answer += got
        except OSError as exc:
            return bytes(answer), type(exc).__name__
    return bytes(answer), "EOF"


#: A chunk-size line that is not hex, and what a parser says of it.
BAD_CHUNK, BAD_CHUNK_REASON = b"ZZ\r\nhello\r\n", "Invalid character in chunk size"


@dataclass
class Broken:
    """What a client got whose body broke off (:func:`break_mid_body`)."""

    #: What the server answered, whole.
    answer: bytes
    #: ``"EOF"``, or the name of the error that ended the exchange (``ConnectionResetError``, ``TimeoutError``).
    end: str
    #: Seconds from the break to the answer's first byte (NaN: none came), and to its end.
    first: float
    last: float


def break_mid_body(host: str, port: int, start: bytes, then: bytes = b"", *, wait: Callable[[], bool] | float = 0.5,
                   keep_sending: float = 0.0, leave: bool = False, timeout: float = 5.0) -> Broken:
    """Send ``start`` (a head and the first of its body), wait (``wait`` seconds, or until ``wait()`` is true), then
    ``then`` whole (a bad chunk, say), and for ``keep_sending`` seconds more bytes without reading, as an upload goes on;
    then read until the server closes, or ``timeout``. ``leave``: close the connection instead of sending ``then``."""
    answer = bytearray()
    first = float("nan")
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(start)
        if callable(wait):
            deadline = time.monotonic() + timeout
            while not wait():
                if time.monotonic() > deadline:
                    raise TimeoutError("the server never got the start of the body")
                time.sleep(0.01)
        else:
            time.sleep(wait)
        broke = time.monotonic()
        if leave:
            return Broken(b"", "left", first, 0.0)
        try:
            sock.sendall(then)
            piece = b"x" * 65536
            while time.monotonic() - broke < keep_sending:
                sock.sendall(piece)
            while got := sock.recv(65536):
                if not answer:
                    first = time.monotonic() - broke
                answer += got
        except OSError as exc:
            return Broken(bytes(answer), type(exc).__name__, first, time.monotonic() - broke)
    return Broken(bytes(answer), "EOF", first, time.monotonic() - broke)


def responses(answer: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """The responses in ``answer`` one after another, each with a ``Content-Length`` or chunked: (status, headers by
    lower-case name, body, de-chunked)."""
    out = []
    while answer:
        head, _, rest = answer.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        assert status_line.startswith("HTTP/1.1 "), answer[:300]
        headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body, answer = _dechunked(rest)
        else:
            length = int(headers["content-length"])
            body, answer = rest[:length], rest[length:]
            assert len(body) == length, (headers, body[:300])
        out.append((int(status_line[9:12]), headers, body))
    return out


def _dechunked(data: bytes) -> tuple[bytes, bytes]:
    """A chunked body's data, and what follows its last chunk (no trailers)."""
    body = b""
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return body, data.removeprefix(b"\r\n")
        body, data = body + data[:size], data[size + 2:]


def post_head(path: str, *, content_length: int | None = None, content_type: str = "audio/wav", extra: bytes = b"") -> bytes:
    """The head of a POST to ``path`` (chunked when ``content_length`` is None)."""
    length = b"Transfer-Encoding: chunked\r\n" if content_length is None else b"Content-Length: %d\r\n" % content_length
    return b"POST " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: " + content_type.encode() + b"\r\n" + length + extra + b"\r\n"


def big_header_head(path: str, header_bytes: int) -> bytes:
    """A GET whose one header is ``header_bytes`` long."""
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"a" * header_bytes + b"\r\n\r\n"


__all__ = [
    "BAD_CHUNK", "BAD_CHUNK_REASON", "MALFORMED_REQUESTS", "Broken", "Exchange", "big_header_head", "break_mid_body", "exchange",
    "flac_bomb", "ogg_opus_bomb", "post_head",
    "raw_request", "response_complete", "responses", "send_until_answered", "trickle", "wav_header", "write_then_read", "zip_bomb",
]
