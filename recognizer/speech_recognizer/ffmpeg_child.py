"""The FFmpeg decoder's child process: one WebM, MP4, raw AAC (ADTS), raw AMR or MPEG program stream upload on stdin,
its audio as mono 16-bit PCM on stdout.

    python -m speech_recognizer.ffmpeg_child FORMAT MAX_SECONDS CUT CPU_SECONDS MEMORY_BYTES

Run by :mod:`speech_recognizer.ffmpeg` only, so that a crash of FFmpeg (a large decoder surface fed what clients send)
ends this process and not the server's. It limits itself before it imports PyAV (address space, CPU time, no file
written, no core), opens the input with the one demuxer ``FORMAT`` names, no format probed, and decodes its first
audio stream only if its codec is one that container is served with (:data:`CODECS`), by the decoder :data:`DECODERS`
names for it, else FFmpeg's own. FFmpeg may open no other decoder (:func:`whitelist`): not even while it reads the
streams' parameters, where it would open every stream's (a video's, a subtitle track's) and decode some of its packets.
Once they are read, the demuxer discards every other stream: its packets are skipped where the container allows it,
never parsed (FFmpeg's parser read an MPEG program stream's video to its end) nor returned.

stdout: the sample rate (4 bytes, little-endian) once the first frame is decoded, then mono 16-bit little-endian PCM
at that rate (PyAV's resampler converts format and channels, and the rate of any later frame that differs). Decoding
stops as soon as the audio passes ``MAX_SECONDS``: with ``CUT`` 1 it ends there, else it exits :data:`TOO_LONG`.
Any other refusal: the exit status (:data:`NOT_AUDIO`, :data:`UNSUPPORTED`, :data:`LIMIT`) and the reason on
stderr's last line. stdin: a regular file is read where it is (seeked to its start); a pipe is read whole first (an
MP4's index may come last).
"""

from __future__ import annotations

import io
import math
import os
import re
import resource
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, BinaryIO

#: Exit statuses: the input is not audio of the format named (or is cut or corrupt) ...
NOT_AUDIO = 65
#: ... it holds no audio stream of a codec served in that container ...
UNSUPPORTED = 66
#: ... its audio is longer than ``MAX_SECONDS`` ...
TOO_LONG = 67
#: ... decoding it needed more memory than ``MEMORY_BYTES``.
LIMIT = 68
#: How much shorter than its header says audio may decode before it is called cut short (a codec's priming and
#: padding, a last frame's rounding).
CUT_SLACK_SECONDS = 0.1
#: The FFmpeg demuxer (its short name) and the codecs served in each container (by :attr:`AudioFormat.name`; codecs by
#: FFmpeg's canonical names): AMR in MP4 is phones' 3GP (Android's voice and call recorders), MP2 or MP3 in an MPEG
#: program stream is old camcorders' and video CDs' ``.mpg``.
DEMUXERS = {"WebM": "webm", "MP4": "mp4", "AAC": "aac", "AMR": "amr", "MPEG-PS": "mpeg"}
CODECS = {"WebM": frozenset({"opus", "vorbis", "aac"}), "MP4": frozenset({"aac", "alac", "amr_nb", "amr_wb"}),
          "AAC": frozenset({"aac"}), "AMR": frozenset({"amr_nb", "amr_wb"}), "MPEG-PS": frozenset({"mp2", "mp3"})}
#: The decoder of a codec where it is not FFmpeg's own: OpenCORE's AMR decoders (3GPP's reference code) decode the
#: comfort-noise (SID) and no-data frames a recorder's discontinuous transmission (DTX) writes in silences, which
#: FFmpeg's own AMR decoders refuse ("not yet implemented"), failing the whole file.
DECODERS = {"amr_nb": "libopencore_amrnb", "amr_wb": "libopencore_amrwb"}
#: Containers whose headers give no length: FFmpeg's is a guess (from the bit rate; an MPEG program stream's from its
#: last timestamps), so none is held against the audio.
UNTIMED = frozenset({"AAC", "AMR", "MPEG-PS"})
#: The most zero bytes an MPEG program stream may have between two units or after its last: a video CD's sector (2324
#: bytes), whose unused end its muxer writes as zeros. A file cut one or two bytes into a pack's start code ends in as
#: many zeros (the audio decoded is that of the file cut where the pack ends).
PADDING_BYTES = 2324
#: The most streams (an MP4's or WebM's tracks) a container may have: far more than any recording has (a camera's or a
#: multitrack recorder's have a few dozen at most), and few enough that opening it stays well within the child's
#: memory, where FFmpeg reads each stream's parameters with a decoder of its own (an AAC decoder's state is large:
#: an MP4 of a thousand AAC tracks passed the limit). FFmpeg's ``max_streams`` holds it: the MP4 demuxer then fails
#: with ENOMEM, told apart by FFmpeg's error (:func:`opened`), and Matroska's drops the tracks past it with an error;
#: either is refused (:data:`UNSUPPORTED`).
MAX_STREAMS = 256
#: The most samples an MP4's ALAC frames may be declared to hold (its magic cookie's ``frameLength``): 16 times what
#: encoders write (Apple's and FFmpeg's: 4096). FFmpeg's decoder takes up to 4096 x 4096 and allocates buffers of that
#: many samples for each channel as it opens: a few kilobytes of MP4 declaring it took the child past its memory limit.
ALAC_MAX_FRAME_SAMPLES = 1 << 16
#: The most samples an MP4's tracks may declare together (their sample sizes: ``stsz``, ``stz2``, and the fragments'
#: ``trun``), and the most entries of each other kind of table that FFmpeg's demuxer allocates by its count (time to
#: sample, chunks, sync samples ...): some 24 hours of 48 kHz AAC (1024 samples a frame). FFmpeg builds an index entry
#: for each sample as it opens the file and allocates each table by the count it declares, in a few bytes: a 10 KB MP4
#: declaring millions of samples took the child hundreds of MB, and past its memory limit the index was dropped without
#: a word (the file read as holding no audio) or the opening failed (the child's fault, not the file's).
MP4_MAX_ENTRIES = 1 << 22
#: The samples a second of served audio may take in an MP4 (:func:`mp4_max_entries`): 48 kHz AAC's frames are 47 a
#: second, 96 kHz AAC's 94, AMR's 50.
MP4_ENTRIES_PER_SECOND = 100
#: What FFmpeg's MP4 demuxer takes for each sample it indexes (its index entry, the sample's size and time), with room
#: (5 M samples declared took the child 209 MB, 8 M 314 MB), and what the child takes before it.
_MP4_ENTRY_BYTES, _MP4_BASE_BYTES = 64, 128 << 20
#: The most boxes (atoms) :func:`_mp4_tables` walks in an MP4, those it walks into and their own: far more than a
#: recorder writes (a few dozen, and some 8 for each fragment of a fragmented file: a fragment a frame is 330 a second of
#: 48 kHz AAC), and few enough that the walk, in Python, stays a small part of the opening's CPU bound
#: (:data:`OPEN_CPU_SECONDS`): millions of 8-byte boxes took it past that, refused for its "tracks' codec setup".
MP4_MAX_BOXES = 1 << 18
#: The MP4 tables counted, by box: where the count is after the box's header, and what it counts (the tables that
#: declare samples together, each other kind of table by itself).
_MP4_COUNTS = {b"stsz": (8, "samples"), b"stz2": (8, "samples"), b"trun": (4, "samples"),
               **{kind: (4, kind.decode()) for kind in (b"stts", b"ctts", b"stsc", b"stco", b"co64", b"stss", b"stps")}}
#: The MP4 boxes whose boxes FFmpeg's demuxer reads wherever they are (``mov_read_default`` and its parse table: a table
#: in a ``udta``, ``edts`` or ``dinf`` is read as one in ``stbl``, for the track last begun), and where their boxes
#: begin after their header (``iref``'s after its version and flags).
_MP4_CONTAINERS = {**dict.fromkeys((b"moov", b"trak", b"mdia", b"minf", b"stbl", b"moof", b"traf", b"edts", b"dinf",
                                    b"udta", b"mvex", b"tref", b"sinf", b"schi", b"ilst", b"iprp", b"ipco"), 0), b"iref": 4}
#: The boxes FFmpeg reads as a movie header (``moov``) when their first box is one's (``mvhd`` or ``cmov``).
_MP4_MOVIE_LIKE, _MP4_MOVIE_FIRST = frozenset({b"hoov", b"free"}), frozenset({b"mvhd", b"cmov"})
#: The boxes whose boxes FFmpeg reads from where their fields end, which depends on their codec and version (a sample
#: description's ``wave``, ``esds`` ...; ``wave``'s after an ALAC cookie), and the boxes FFmpeg would read there as it
#: reads them anywhere that no recorder writes there (:func:`_mp4_described`): looked for in all their bytes by type.
_MP4_SCANNED = frozenset({b"stsd", b"wave"})
_MP4_FOUND = re.compile(b"|".join(re.escape(kind) for kind in (*_MP4_COUNTS, b"hdlr", b"cmov", b"moov", b"hoov")))
#: The bytes of the MP4 read at once looking for boxes by type (the child holds no more of the file than that).
_MP4_SCAN_BYTES = 1 << 20
#: The samples of an index entry FFmpeg's MP4 demuxer makes of a track it indexes by its chunks (a track of
#: uncompressed sound, :meth:`_Mp4Track.chunked`), but for a chunk's last: it cuts each chunk in pieces of 1024 samples
#: (PCM), or of a codec's frames (``samples_per_frame``, a sound description's or a codec's: 160 and more, QCELP's and
#: GSM's, one frame each; fewer, as many as fit in 1024), never fewer than 160 samples.
_MP4_PIECE_SAMPLES, _MP4_FEWEST_PIECE_SAMPLES = 1024, 160
#: The sound descriptions (``stsd`` entries, by format) of PCM, which FFmpeg cuts in pieces of
#: :data:`_MP4_PIECE_SAMPLES` unless the description (QuickTime's version 1 or 2) declares packets of more than a sample.
_MP4_PCM = frozenset({b"sowt", b"twos", b"raw ", b"NONE", b"lpcm", b"in24", b"in32", b"fl32", b"fl64"})
#: The most CPU time (its thread's) opening a container may take: FFmpeg reading its headers and
#: each stream's parameters, with a decoder of its own for each, which reads its codec's setup as it opens (a Vorbis
#: track's codebooks, a few kilobytes that it expands to megabytes). Several times what the largest body of served
#: audio takes (an MPEG program stream of the tiniest units); past it the input is refused (:data:`UNSUPPORTED`), not
#: left to run out of the child's CPU time or to stall past the clock's limit (a 502, a fault).
OPEN_CPU_SECONDS = 3.0
#: How often the CPU time taken opening a container is looked at, in seconds.
_WATCH_SECONDS = 0.05
#: The stack of the thread that looks (threads made later have the default, as before it).
_WATCH_STACK_BYTES = 1 << 18
#: The headers of multi-channel AMR files (RFC 4867's ``#!AMR_MC1.0``): FFmpeg reads their channels' frames as one
#: channel's, one after the other (audio of the wrong length, garbled), so they are refused.
AMR_MULTICHANNEL = (b"#!AMR_MC1.0\n", b"#!AMR-WB_MC1.0\n")


def set_limits(cpu_seconds: int, memory_bytes: int) -> None:
    """This process's limits: ``memory_bytes`` of address space, ``cpu_seconds`` of CPU (then SIGXCPU ends it),
    no file written (stdout and stderr are pipes), no core dump."""
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def source(stdin: BinaryIO) -> BinaryIO:
    """The input, seekable: stdin itself when it is a regular file (from its start), else all it gives, held."""
    if stdin.seekable():
        stdin.seek(0)
        return stdin
    return io.BytesIO(stdin.read())


class Refused(Exception):
    """Why the input is not decoded; :attr:`status` is the exit status that says so."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def decode(name: str, data: BinaryIO, max_seconds: float, cut: bool, out: BinaryIO, bounded: bool = False,
           memory_bytes: int | None = None) -> None:
    """Decode the ``name`` container (:data:`DEMUXERS`) read from ``data`` to ``out`` (the module's stdout protocol);
    ``bounded`` (this module run as the child): the process ended once opening it took :data:`OPEN_CPU_SECONDS`;
    ``memory_bytes``: the child's memory limit, which bounds an MP4's samples (:func:`mp4_max_entries`)."""
    import av

    if name == "AMR":
        head = data.read(16)
        data.seek(0)
        if head.startswith(AMR_MULTICHANNEL):
            raise Refused(UNSUPPORTED, f"the AMR file is multi-channel ({head[:head.index(b'1.0') + 3].decode()}), "
                                       "which is not served: send single-channel AMR (#!AMR or #!AMR-WB)")
    checked = ProgramStream(data) if name == "MPEG-PS" else None
    with opened(name, checked or data, bounded, mp4_max_entries(max_seconds, memory_bytes)) as container:
        _verdict(checked)
        streams = [s for s in container.streams if s.type == "audio"]
        if not streams:
            kinds = sorted({s.type for s in container.streams}) or ["nothing"]
            raise Refused(UNSUPPORTED, f"the {name} file holds no audio ({' and '.join(kinds)} only)")
        stream = streams[0]
        codec = stream.codec_context.codec.canonical_name
        if codec not in CODECS[name]:
            *others, last = sorted(CODECS[name])
            served = f"{', '.join(others)} or {last}" if others else last
            raise Refused(UNSUPPORTED, f"the {name} file's audio is {stream.codec_context.codec.long_name or codec}, not {served}")
        if codec == "alac":
            _alac_frames(stream.codec_context.extradata)
        if checked is not None:
            checked.keep(stream.id)
        for other in container.streams:  # read past by the demuxer: neither parsed nor returned
            if other.index != stream.index:
                other.discard = av.stream.Discard.all
        _write(container, stream, decoder(stream), name, max_seconds, cut, out, checked)


def _alac_frames(cookie: bytes | None) -> None:
    """Refuse ALAC whose magic cookie (the ``alac`` box FFmpeg's decoder reads: its ``frameLength`` after the box's size,
    type and version) declares frames of more than :data:`ALAC_MAX_FRAME_SAMPLES`, before its decoder allocates for
    them. A cookie too short to hold it is left to the decoder, which refuses it."""
    if cookie is None or len(cookie) < 36:
        return
    if (samples := int.from_bytes(cookie[12:16], "big")) > ALAC_MAX_FRAME_SAMPLES:
        raise Refused(UNSUPPORTED, f"the MP4 file's ALAC audio declares frames of {samples} samples, more than the "
                                   f"{ALAC_MAX_FRAME_SAMPLES} served (encoders write 4096): send the ALAC or AAC an "
                                   "encoder writes")


def opened(name: str, data: BinaryIO | ProgramStream, bounded: bool = False, entries: int = MP4_MAX_ENTRIES) -> Any:
    """The ``name`` container read from ``data``, opened (:func:`options`); refused when it cannot be read, when it has
    more than :data:`MAX_STREAMS` streams, when an MP4's tables declare more than ``entries`` (:func:`_mp4_tables`),
    when reading it needed more memory than the limit, or (``bounded``: the process ended) more than
    :data:`OPEN_CPU_SECONDS` of CPU time (its tables' walk with it). FFmpeg says "exceeds max_streams" in an error of its log (captured while it opens, then its logging is as before) exactly when a
    container passes ``max_streams``: the MP4 demuxer's ENOMEM is then that, not the memory limit's."""
    import av

    checked = data if isinstance(data, ProgramStream) else None
    level = av.logging.get_level()
    av.logging.set_level(av.logging.ERROR)
    try:
        with av.logging.Capture(local=False) as said, _cpu_bounded(name, bounded):
            if name == "MP4" and not isinstance(data, ProgramStream):
                _mp4_tables(data, entries)
            try:
                container: Any = av.open(data, format=DEMUXERS[name], container_options=options(name))
            except MemoryError:
                _too_many_streams(name, said)
                raise Refused(LIMIT, f"reading the {name} container needed more memory than the decoder's limit") from None
            except (av.FFmpegError, ValueError, EOFError) as exc:
                _verdict(checked)
                raise Refused(NOT_AUDIO, f"the {name} container cannot be read: {_said(exc)}") from None
    finally:
        av.logging.set_level(level)
    try:
        _too_many_streams(name, said)
    except Refused:
        container.close()
        raise
    return container


def mp4_max_entries(max_seconds: float, memory_bytes: int | None) -> int:
    """The most samples an MP4's tables may declare (and entries of each other kind of table) for ``max_seconds`` of
    audio (``MaxAudioSeconds``) in a child of ``memory_bytes`` (None: not known): :data:`MP4_MAX_ENTRIES`, or
    :data:`MP4_ENTRIES_PER_SECOND` for each second when that is more, as far as the child's memory holds FFmpeg's index
    of them (:data:`_MP4_ENTRY_BYTES` each): a long recording's upload brings the memory its index needs (the child's
    limit is twice an upload more), a few kilobytes declaring as many never do."""
    wanted = max(MP4_MAX_ENTRIES, math.ceil(max_seconds * MP4_ENTRIES_PER_SECOND))
    held = MP4_MAX_ENTRIES if memory_bytes is None else (memory_bytes - _MP4_BASE_BYTES) // _MP4_ENTRY_BYTES
    return max(MP4_MAX_ENTRIES, min(wanted, held))


def _mp4_tables(data: BinaryIO, bound: int = MP4_MAX_ENTRIES) -> None:
    """Refuse the MP4 ``data`` whose sample tables declare more than ``bound`` samples, or entries of a
    kind of table, before FFmpeg's demuxer allocates for them (each counted as declared: a table may say more than its
    box holds), or whose movie header is compressed (``cmov``: its tables cannot be counted unread, and FFmpeg
    allocates the size it declares, up to 4 GB), or that has more than :data:`MP4_MAX_BOXES` boxes. Its boxes are
    walked by their sizes wherever FFmpeg reads boxes (:data:`_MP4_CONTAINERS`, ``meta`` from its handler,
    :data:`_MP4_MOVIE_LIKE`; :data:`_MP4_SCANNED` looked through), each table counted for the track FFmpeg gives it (the
    trak last begun, until it ends); a box of an invalid size ends the box holding it, as in FFmpeg. Only the tables'
    counts are read, and the sample-to-chunk runs of a track of uncompressed sound, which FFmpeg indexes by pieces of
    its chunks, not by its samples (:meth:`_Mp4Track.indexed`)."""
    counts: dict[str, int] = {}
    sizes: dict[str, int] = {}  # the sizes tables of tracks, held by FFmpeg however it indexes them
    tracks: list[_Mp4Track] = []
    track: _Mp4Track | None = None  # the trak last begun, until it ends: FFmpeg's last stream, indexed then
    ends: list[tuple[int, bool]] = [(data.seek(0, io.SEEK_END), False)]  # each box walked into: its end, whether a trak
    at, walked = 0, 0

    def box(at: int, within: int) -> tuple[bytes, bytes, int, int]:
        """The box at ``at`` in a box ending at ``within``: its first bytes, type, header's size and end (its header's
        size past its end: invalid)."""
        data.seek(at)
        head = data.read(32)
        size, start = int.from_bytes(head[:4], "big"), 8
        if size == 1 and len(head) >= 16:
            size, start = int.from_bytes(head[8:16], "big"), 16
        elif size == 0:
            size = within - at
        return head, head[4:8], start, min(at + size, within) if size >= start else at

    def leaf(head: bytes, kind: bytes, at: int, start: int, end: int) -> None:
        """Count the box of ``kind`` read by FFmpeg (not walked into), for the track FFmpeg gives it."""
        if kind == b"cmov":
            raise Refused(UNSUPPORTED, "the MP4 file's movie header is compressed (QuickTime's cmov), which is not served: "
                                       "send it as current recorders and tools write it, its header uncompressed")
        owner = track if kind != b"trun" else None  # FFmpeg's: the last stream's
        if owner is not None:
            owner.read(kind, head[start:], data, at + start, end)
        if (counted := _MP4_COUNTS.get(kind)) is not None and len(count := head[start + counted[0] : start + counted[0] + 4]) == 4:
            what, declared = counted[1], int.from_bytes(count, "big")
            if what == "samples" and owner is not None:  # indexed by sample or by chunk, known once its trak ends
                if kind == b"stz2" or head[start + 4 : start + 8] == bytes(4):  # and a size each, held as declared
                    sizes[kind.decode()] = sizes.get(kind.decode(), 0) + declared
            else:
                counts[what] = counts.get(what, 0) + declared
                _mp4_within(what, counts[what], bound)

    def count() -> None:
        nonlocal walked
        if (walked := walked + 1) > MP4_MAX_BOXES:
            raise Refused(UNSUPPORTED, f"the MP4 file has more than {MP4_MAX_BOXES} boxes (atoms), which is not served: "
                                       "no recorder writes that many; send the audio as a recorder writes it")

    while ends:
        if at + 8 > ends[-1][0]:
            at, trak = ends.pop()
            if trak:  # FFmpeg indexes a track as its trak ends: what follows is not in its index
                track = None
            continue
        count()
        head, kind, start, end = box(at, ends[-1][0])
        if end == at:  # FFmpeg reads no further in the box holding it
            at = ends[-1][0]
            continue
        if kind in _MP4_MOVIE_LIKE and head[12:16] in _MP4_MOVIE_FIRST:
            kind = b"moov"
        if (first := _MP4_CONTAINERS.get(kind)) is not None:
            if kind == b"trak":
                tracks.append(track := _Mp4Track())
            ends.append((end, kind == b"trak"))
            at += start + first
            continue
        if kind == b"meta" and (handler := _mp4_handler(data, at + start, end)) is not None:
            ends.append((end, False))
            at = handler
            continue
        leaf(head, kind, at, start, end)
        if kind in _MP4_SCANNED:
            _mp4_described(data, kind, at + start, end)
        at = end
    indexed = sum(track.indexed() for track in tracks)
    _mp4_within("samples", counts.get("samples", 0) + indexed, bound, any(track.chunked() for track in tracks))
    for table, entries in sizes.items():
        _mp4_within(table, entries, bound)
    data.seek(0)


def _mp4_found(data: BinaryIO, start: int, end: int, pattern: re.Pattern[bytes] = _MP4_FOUND) -> Iterator[tuple[int, bytes]]:
    """Where in ``data``'s bytes from ``start`` to ``end`` ``pattern`` (box types: four bytes) is found, and what,
    :data:`_MP4_SCAN_BYTES` read at a time (each read's found given at once: the caller may read between)."""
    while start < end:
        data.seek(start)
        block = data.read(min(_MP4_SCAN_BYTES, end - start))
        yield from [(start + match.start(), match.group()) for match in pattern.finditer(block)]
        if len(block) < _MP4_SCAN_BYTES:
            return
        start += len(block) - 3  # a type across two reads is found in the second


def _mp4_described(data: BinaryIO, kind: bytes, start: int, end: int) -> None:
    """Refuse the box of ``kind`` (:data:`_MP4_SCANNED`) whose payload is ``data``'s bytes from ``start`` to ``end``
    when it holds a box FFmpeg reads there as anywhere (:data:`_MP4_FOUND`: a sample table, a handler, a movie header),
    for the track last begun, which no recorder writes there."""
    for found, what in _mp4_found(data, start, end):
        if found - 4 >= start:
            raise Refused(UNSUPPORTED, f"the MP4 file's sample description ({kind.decode()}) holds a {what.decode()} "
                                       "box, which is not served: no recorder writes one there; send the audio as a "
                                       "recorder writes it")


_HANDLER = re.compile(b"hdlr")


def _mp4_handler(data: BinaryIO, start: int, end: int) -> int | None:
    """Where FFmpeg reads the boxes of a ``meta`` whose payload is ``data``'s bytes from ``start`` to ``end``: from its
    handler box (``hdlr``), found by its type at 4-byte steps (QuickTime's meta has no version and flags before it,
    ISO's has); None: no handler, nothing read."""
    return next((found - 4 for found, _ in _mp4_found(data, start, end, _HANDLER)
                 if (found - start) % 4 == 0 and end - found > 8), None)


@dataclass
class _Mp4Track:
    """What FFmpeg's demuxer indexes one ``trak`` by as the trak ends (``mov_build_index``), as :func:`_mp4_tables`
    reads it: its handlers' kinds, whether its last time-to-sample table is one entry of duration 1, the samples its
    sizes declare (summed where FFmpeg takes the last: more, never fewer), its first chunk offsets table's chunks, its
    first sample-to-chunk table's runs (first chunk, samples in each, description: FFmpeg ignores later ones), and the
    samples of the pieces it cuts its chunks in (:func:`_mp4_piece`, the fewest of its sample descriptions')."""

    handlers: set[bytes] = field(default_factory=set)
    unit_times: bool = False
    samples: int = 0
    chunks: int = 0
    runs: bytes = b""
    piece: int = _MP4_PIECE_SAMPLES

    def read(self, kind: bytes, body: bytes, data: BinaryIO, start: int, end: int) -> None:
        """Read what its box of ``kind`` says (``body``: its first bytes after its header; its payload: ``data``'s bytes
        from ``start`` to ``end``)."""
        declared = int.from_bytes(body[4:8], "big")
        if kind == b"hdlr" and body[8:12] in (b"soun", b"vide", b"subp", b"clcp"):
            self.handlers.add(body[8:12])  # mdia's (minf's, QuickTime's data handler, says alis or url)
        elif kind == b"stts":
            self.unit_times = declared == 1 and end - start >= 16 and body[12:16] == b"\0\0\0\1"
        elif kind in (b"stsz", b"stz2"):
            self.samples += int.from_bytes(body[8:12], "big")
        elif kind in (b"stco", b"co64") and not self.chunks:
            self.chunks = declared
        elif kind == b"stsd":
            data.seek(start + 8)
            self.piece = min(self.piece, _mp4_piece(data.read(min(end - start - 8, 1 << 16)), min(declared, 1024)))
        elif kind == b"stsc" and declared and not self.runs and 12 * declared + 4 <= end - start:  # as FFmpeg reads one
            data.seek(start + 8)
            self.runs = data.read(12 * declared)

    def chunked(self) -> bool:
        """Whether FFmpeg may index it by pieces of its chunks (``mov_build_index``'s "old uncompressed audio chunk
        demuxing"): sound whose time-to-sample table is one entry of duration 1 (PCM's). A track is sound by its last
        handler, or by its sample description where no handler made it video (``mov_codec_id``)."""
        return self.unit_times and (b"soun" in self.handlers or b"vide" not in self.handlers)

    def indexed(self) -> int:
        """At most the entries FFmpeg's demuxer makes for it as it opens the file: its samples, or by chunk its chunks'
        pieces; the more of the two where it may be either (its handlers say sound and another kind)."""
        if not self.chunked():
            return self.samples
        return self._pieces() if self.handlers == {b"soun"} else max(self._pieces(), self.samples)

    def _pieces(self) -> int:
        """The pieces FFmpeg cuts its chunks in by its runs: ``2**32`` where its unsigned count of the last run's chunks
        may wrap (a run names chunks past its last), its chunks in the largest runs' pieces where it mends its runs
        (each invalid one made its next's)."""
        if not self.runs:
            return 0
        import numpy as np  # here alone: a track of uncompressed sound (PCM, not served) is rare

        runs = np.frombuffer(self.runs, ">i4").reshape(-1, 3)  # FFmpeg's ints
        firsts, pieces = runs[:, 0].astype(np.int64), -(-np.maximum(runs[:, 1], 1) // self.piece)
        if max(int(firsts.max()), len(firsts)) > self.chunks:
            return 1 << 32
        if firsts[0] < 1 or np.any(np.diff(firsts) <= 0) or np.any(runs[:, 1:] < 1):
            return self.chunks * int(pieces.max())
        return int(np.diff(firsts, append=self.chunks + 1) @ pieces)


def _mp4_piece(entries: bytes, count: int) -> int:
    """The samples of a piece of a chunk FFmpeg indexes by chunk (:attr:`_Mp4Track.piece`) by the ``count`` sample
    descriptions ``entries`` (an ``stsd``'s, as many as FFmpeg reads): :data:`_MP4_PIECE_SAMPLES` where each is PCM
    (:data:`_MP4_PCM`) declaring no packets of more than a sample (QuickTime's version 1 at 36 bytes in, version 2's at
    68), else the fewest FFmpeg may take (:data:`_MP4_FEWEST_PIECE_SAMPLES`)."""
    at = 0
    for _ in range(count):
        size, entry = int.from_bytes(entries[at : at + 4], "big"), entries[at : at + 72]
        version = int.from_bytes(entry[16:18], "big")
        frames = {0: bytes(4), 1: entry[36:40], 2: entry[68:72]}.get(version, b"")
        if size < 8 or entry[4:8] not in _MP4_PCM or len(frames) < 4 or int.from_bytes(frames, "big") > 1:
            return _MP4_FEWEST_PIECE_SAMPLES
        at += size
    return _MP4_PIECE_SAMPLES


def _mp4_within(what: str, count: int, bound: int, chunked: bool = False) -> None:
    """Refuse an MP4 whose tables of ``what`` declare ``count`` entries (``samples``: FFmpeg's index of them, ``chunked``
    where a track of uncompressed sound is counted in pieces of its chunks), more than ``bound``."""
    if count <= bound:
        return
    if what == "samples":
        declared = (f"sample tables (stsz, stz2, trun) declare {count} samples" if not chunked else
                    f"sample tables declare {count} samples (uncompressed sound's counted in pieces of its chunks, "
                    "as FFmpeg indexes it)")
    else:
        declared = f"{what} tables declare {count} entries"
    raise Refused(UNSUPPORTED, f"the MP4 file's {declared}, more than the {bound} served (some {int(bound / 46.875 / 3600)} "
                               "hours of 48 kHz AAC): send the audio as a recorder writes it, in parts if it is longer")


@contextmanager
def _cpu_bounded(name: str, bounded: bool) -> Iterator[None]:
    """While the ``name`` container is opened (by this thread, FFmpeg's decoders too while it reads the streams'
    parameters): once that took :data:`OPEN_CPU_SECONDS` of its CPU time, its refusal on stderr and this process ended
    (:data:`UNSUPPORTED`), from a thread of its own, as FFmpeg opens it without Python's lock (PyAV releases it).
    Nothing has been written to stdout by then. Not ``bounded`` (decoding in another process than the child): nothing."""
    if not bounded:
        yield
        return
    done = threading.Event()
    clock = time.pthread_getcpuclockid(threading.get_ident())
    until = time.clock_gettime(clock) + OPEN_CPU_SECONDS

    def watch() -> None:
        while not done.wait(_WATCH_SECONDS):
            if time.clock_gettime(clock) > until:
                print(f"reading the {name} file's headers took more than {OPEN_CPU_SECONDS:g} s of the decoder's CPU "
                      "time (its tracks' codec setup), which is not served: send the audio track alone, as a recorder "
                      "writes it", file=sys.stderr, flush=True)
                os._exit(UNSUPPORTED)

    watcher = threading.Thread(target=watch, name="open-cpu", daemon=True)
    default = threading.stack_size(_WATCH_STACK_BYTES)  # the watch's stack, in the limited address space: its own alone
    try:
        watcher.start()
    finally:
        threading.stack_size(default)
    try:
        yield
    finally:
        done.set()
        watcher.join()


def _too_many_streams(name: str, said: list[tuple[int, str, str]]) -> None:
    """Refuse the ``name`` container whose opening FFmpeg ``said`` (its log's errors) passed :data:`MAX_STREAMS`."""
    if any("exceeds max_streams" in message for _, _, message in said):
        raise Refused(UNSUPPORTED, f"the {name} file has more than {MAX_STREAMS} tracks (streams), which is not served: "
                                   "no recording has that many; send the audio track alone")


def options(name: str) -> dict[str, str]:
    """The options the ``name`` container is opened with: :func:`whitelist`'s and at most :data:`MAX_STREAMS` streams;
    for an MPEG program stream, no length estimated from the timestamps at its end (:data:`UNTIMED`: none is used),
    for which FFmpeg read the file's end (more of it where it found none) whatever the audio's length, past
    :class:`ProgramStream`'s check."""
    return {**whitelist(name), "max_streams": str(MAX_STREAMS),
            **({"skip_estimate_duration_from_pts": "1"} if name == "MPEG-PS" else {})}


def _verdict(checked: ProgramStream | None) -> None:
    """Raise the refusal of the MPEG program stream ``checked`` (None: another container), if it is refused."""
    if checked is not None:
        checked.verdict()


def whitelist(name: str) -> dict[str, str]:
    """The options that hold FFmpeg to the ``name`` container's demuxer (``format_whitelist``) and to the decoders of the
    codecs it is served with (``codec_whitelist``: each decoder FFmpeg has of a codec of :data:`CODECS`, its own and
    :data:`DECODERS`'). Opening a container reads its streams' parameters (``avformat_find_stream_info``), which opens
    the decoder of each stream and decodes packets until they are known: a phone video's H.264 or HEVC, a camcorder's
    MPEG video, a subtitle track's, whatever FFmpeg has. The whitelist is passed on to each of those opens, which
    refuses any other decoder (its stream's parameters are then what the container says)."""
    import av

    decoders = set()
    for codec_name in av.codecs_available:
        try:
            codec = av.Codec(codec_name, "r")
        except av.codec.codec.UnknownCodecError:  # an encoder's name
            continue
        if codec.canonical_name in CODECS[name]:
            decoders.add(codec.name)
    return {"format_whitelist": DEMUXERS[name], "codec_whitelist": ",".join(sorted(decoders))}


#: Units of an MPEG program stream's read walked one by one (:meth:`ProgramStream._check`) before the rest are walked
#: at once (:meth:`ProgramStream._run`), and the bytes that first looks at.
_WALKED, _WINDOW = 256, 4096
#: MPEG program stream codes: private stream 1 (the first of the packets' codes; its substreams, a DVD's AC-3 or
#: subtitles, are named by a byte of its packets' payload) and padding.
_PRIVATE, _PADDING = 0xBD, 0xBE


def _substreams(buf: Any, starts: Any, sizes: Any) -> Any:
    """:func:`_stream_id` of each private stream 1 packet of ``buf`` (a NumPy array of bytes) at ``starts``, of
    ``sizes`` bytes (each whole in ``buf``): its substream byte, or 0x200 where it has none (None's)."""
    import numpy as np

    ends = starts + np.minimum(sizes, 6 + 3 + 255 + 1)  # as _stream_id, at most an MPEG-2 header's longest read

    def byte(at: Any) -> Any:
        """The byte at each of ``at``, or 0 past its packet's end (what :func:`_stream_id` reads there)."""
        return np.where(at < ends, buf[np.minimum(at, len(buf) - 1)], 0).astype(np.int64)

    others = np.append(np.flatnonzero(buf != 0xFF), len(buf))
    i = np.minimum(others[np.searchsorted(others, starts + 6)], ends)  # past MPEG-1's stuffing
    c = byte(i)
    buffered = c & 0xC0 == 0x40  # MPEG-1's buffer size
    i = np.where(buffered, i + 2, i)
    c = np.where(buffered, byte(i), c)
    i = np.select([c & 0xE0 == 0x20, c & 0xC0 == 0x80, c == 0x0F],  # MPEG-1's timestamps, MPEG-2's header, neither
                  [i + np.where(c & 0x10, 10, 5), i + 3 + byte(i + 2), i + 1], -1)
    return np.where((i >= 0) & (i < ends), byte(np.maximum(i, 0)), 0x200)


def _stream_id(head: bytes, data: BinaryIO, at: int, size: int) -> int | None:
    """The stream (``AVStream.id`` as FFmpeg's demuxer gives it) of the packet at byte ``at`` of ``data`` (``size``
    bytes, ``head`` its first): ``0x100`` and its code; a private stream's, its substream's byte after the packet's
    header (MPEG-1's stuffing, buffer size and timestamps, or MPEG-2's header); None where it has none."""
    if head[3] != _PRIVATE:
        return 0x100 | head[3]
    if len(head) < size:
        data.seek(at)
        head = data.read(min(size, 6 + 3 + 255 + 1))  # an MPEG-2 header's longest
    head = head[:size]
    i = 6
    while i < len(head) and head[i] == 0xFF:  # MPEG-1's stuffing
        i += 1
    c = head[i] if i < len(head) else 0
    if c & 0xC0 == 0x40:  # MPEG-1's buffer size
        i += 2
        c = head[i] if i < len(head) else 0
    if c & 0xE0 == 0x20:  # MPEG-1's timestamps
        i += 10 if c & 0x10 else 5
    elif c & 0xC0 == 0x80:  # MPEG-2's header
        i += 3 + (head[i + 2] if i + 2 < len(head) else 0)
    elif c == 0x0F:
        i += 1
    else:
        return None
    return head[i] if i < len(head) else None


class ProgramStream:
    """An MPEG program stream's input, checked as FFmpeg reads it: refused when it is cut short or has junk between its
    packs (FFmpeg's demuxer decodes what is left of a cut packet, or skips junk to the next start code, without a word).
    From its start, each unit is a start code (``00 00 01``) and a pack header (MPEG-1's or MPEG-2's length) or a packet
    of the length it gives, up to the program's end code or the input's end. Between units and at the end, up to
    :data:`PADDING_BYTES` zero bytes are padding (a video CD's sectors end in zeros); more is refused, read no further.

    Each read is checked up to its end before FFmpeg has it, so what is decoded has been checked and what decoding
    never needs is never read: a file is read as far as its audio is (to :data:`TOO_LONG` or the cut), not to its end.
    Once refused (:attr:`refused`, which :meth:`verdict` raises), the input reads as ended. Past a read's first units,
    the rest are walked at once (:meth:`_run`, NumPy's arrays): a file of the tiniest units (6 bytes) costs the child
    little more CPU time than FFmpeg's own reading of it, not the interpreter's work for each unit.

    No stream appears once the container is open: FFmpeg's demuxer makes a stream of each packet of a stream it has
    not seen, at any point of the file, which PyAV's demuxing does not expect (it read past the end of its table of
    streams for each packet of one, and failed at the end: the child's crash). While the container is opened, a read
    ends before the first packet of a stream not read before (:func:`_stream_id`), so that FFmpeg has parsed each
    packet of a new stream it holds; once the audio decoded is chosen (:meth:`keep`), every other stream's packet
    reads as padding, which the demuxer skips (they are discarded anyway)."""

    def __init__(self, data: BinaryIO) -> None:
        self.data, self.end = data, data.seek(0, io.SEEK_END)
        data.seek(0)
        #: The next unit's start: every byte before it is checked (:attr:`end`: all is, or what follows is not read).
        self.at = 0
        #: Why the input is refused, once it is.
        self.refused: Refused | None = None
        #: The streams (:func:`_stream_id`) of the packets read so far, while the container is opened.
        self.seen: set[int | None] = set()
        #: The stream of the audio decoded (its ``AVStream.id``), once chosen (:meth:`keep`).
        self.kept: int | None = None
        #: Where a packet's stream code is to read as padding's (:data:`_PADDING`), in bytes not yet read.
        self.padded: list[int] = []
        #: The same, found by :meth:`_run` (arrays of offsets).
        self.runs: list[Any] = []
        #: Units to walk one by one before :meth:`_run` walks the rest of a read (fewer once it went far).
        self.walk = _WALKED
        #: The bytes :meth:`_run` looks at next (twice as many once it went through them all).
        self.window = _WINDOW

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self.data.seek(offset, whence)

    def tell(self) -> int:
        return self.data.tell()

    def keep(self, stream_id: int) -> None:
        """From now on, every packet but those of stream ``stream_id`` (its ``AVStream.id``) reads as padding."""
        self.kept = stream_id

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes from where the input is, checked up to their end (ended before a new stream's packet
        while the container is opened; other streams' packets as padding once the audio is chosen); none once the
        input is refused."""
        if self.refused is None:
            start = self.data.tell()
            piece = self.data.read(size)
            try:
                piece = piece[: self._check(start + len(piece) if piece else self.end, start, piece) - start]
            except Refused as refused:
                self.refused = refused
            self.data.seek(start + len(piece))
            if (self.padded or self.runs) and self.refused is None:
                piece = self._pad(piece, start)
            if self.refused is None:
                return piece
        return b""

    def _pad(self, piece: bytes, start: int) -> bytes:
        """``piece`` (read from byte ``start``) with the stream codes of :attr:`padded` in it as padding's."""
        held, patched = start + len(piece), bytearray(piece)
        for at in self.padded:
            if start <= at < held:
                patched[at - start] = _PADDING
        self.padded = [at for at in self.padded if at >= held]
        if self.runs:
            import numpy as np

            view, runs = np.frombuffer(patched, np.uint8), self.runs
            self.runs = []
            for run in runs:
                view[run[(run >= start) & (run < held)] - start] = _PADDING
                if (later := run[run >= held]).size:
                    self.runs.append(later)
        return bytes(patched)

    def verdict(self) -> None:
        """Raise the input's refusal, if it is refused."""
        if self.refused is not None:
            raise self.refused

    def _check(self, until: int, start: int, piece: bytes) -> int:
        """Check the units that begin before byte ``until``; where the read from ``start`` (``piece``) ends:
        ``until``, or while the container is opened, where a new stream's packet (after ``start``) begins."""
        data, end, held = self.data, self.end, start + len(piece)
        until = min(until, end)
        walked = 0
        while self.at < until:
            at = self.at
            if walked >= self.walk and start <= at and at + 16 <= held and piece.startswith(b"\0\0\1", at - start):
                walked = 0
                self._run(piece, start)
                if self.at != at:
                    continue
            walked += 1
            if start <= at and at + 16 <= held:
                head = piece[at - start : at - start + 16]
            else:
                data.seek(at)
                head = data.read(16)
            if head[:3] != b"\0\0\1":
                data.seek(at)
                run = data.read(PADDING_BYTES + 3)
                zeros = len(run) - len(run.lstrip(b"\0"))
                if zeros == len(run) <= PADDING_BYTES:
                    self.at = end  # padding to the end
                    break
                if zeros == len(run) or zeros > PADDING_BYTES + 2:
                    raise Refused(NOT_AUDIO, f"the MPEG-PS file is corrupt: more than {PADDING_BYTES} zero bytes (a video "
                                             f"CD sector's padding at most) from byte {at}")
                if zeros < 2 or run[zeros] != 1:
                    raise Refused(NOT_AUDIO, f"the MPEG-PS file is corrupt: no start code at byte {at}")
                self.at = at + zeros - 2  # the next start code's own zero bytes end the run
                continue
            code = head[3] if len(head) > 3 else None
            if code == 0xB9:  # the program's end code: what follows is not read
                self.at = end
                break
            if code is None:
                size = 4
            elif code == 0xBA:
                size = 12 if len(head) > 4 and head[4] >> 4 == 2 else 14 + (head[13] & 7 if len(head) > 13 else 0)
            elif code >= 0xBB:
                size = 6 + int.from_bytes(head[4:6], "big") if len(head) >= 6 else 6
            else:
                raise Refused(NOT_AUDIO, f"the MPEG-PS file is corrupt: start code 0x{code:02x} at byte {at} begins no "
                                         "pack or packet")
            if at + size > end:
                raise Refused(NOT_AUDIO, f"the MPEG-PS file is cut short: its unit at byte {at} ends at byte {at + size}, "
                                         f"past the file's end (byte {end})")
            if code is not None and code >= _PRIVATE and code != _PADDING:
                if self.kept is None:
                    if (stream := _stream_id(head, data, at, size)) not in self.seen:
                        if at > start:
                            return at
                        self.seen.add(stream)
                elif (0x100 | code if code != _PRIVATE or self.kept > 0xFF else _stream_id(head, data, at, size)) != self.kept:
                    self.padded.append(at + 3)
            self.at = at + size
        return until

    def _run(self, piece: bytes, start: int) -> None:
        """Walk at once the units from :attr:`at` (a start code whose head is in ``piece``, read from byte ``start``)
        that :meth:`_check` would pass one by one, within :attr:`window` bytes: each whole in them, begun by a start
        code where the one before ends or after a run of zeros there (of padding's length); a pack header, or a
        packet of a stream read before (while the container is opened) or of any stream (once the audio is chosen:
        those not kept are :attr:`runs`). :attr:`at` is left at the first unit :meth:`_check` looks at itself (a
        private stream's while opening, a new stream's, the end code, any other code, one not whole in the window),
        or where the last one passed ends. So a file of tiny units costs arrays' work for each read, not the
        interpreter's for each unit. The units' chain is followed by jumps of 1, 2, 4 ... units."""
        import numpy as np

        base = self.at - start
        buf = np.frombuffer(piece, np.uint8, min(len(piece) - base, self.window), base)
        w = len(buf)
        ones = np.flatnonzero(buf[2:] == 1)
        starts = ones[(buf[ones] == 0) & (buf[ones + 1] == 0) & (ones + 16 <= w)]  # as _check: a unit's head at hand
        if not starts.size or starts[0]:
            self.walk, self.window = _WALKED, _WINDOW
            return
        code, b4, b5, b13 = (buf[starts + i].astype(np.int64) for i in (3, 4, 5, 13))
        size = np.where(code == 0xBA, np.where(b4 >> 4 == 2, 12, 14 + (b13 & 7)), 6 + (b4 << 8 | b5))
        ends = starts + size
        count = starts.size  # the index of "none": where _check goes on
        stop = (code < 0xBA) | (ends > w)
        stream = (code >= _PRIVATE) & (code != _PADDING)
        if self.kept is None:
            known = np.zeros(0x200 + 1, bool)  # by stream, None last
            known[[0x200 if s is None else s for s in self.seen]] = True
            ids = 0x100 | code
            if (private := np.flatnonzero((code == _PRIVATE) & ~stop)).size:
                ids[private] = _substreams(buf, starts[private], size[private])
            stop |= stream & ~known[ids]
            padded = np.zeros(count, bool)
        else:
            if self.kept <= 0xFF:
                stop |= code == _PRIVATE
            padded = stream & ((0x100 | code) != self.kept)
        unit = np.full(w + 1, count)
        unit[starts] = np.arange(count)
        nxt = unit[np.minimum(ends, w)]
        after = ends.copy()
        if (lost := np.flatnonzero((nxt == count) & (ends < w))).size:
            # past 3 to PADDING_BYTES + 2 zeros (and before a 1) where a unit ends, the next one's start code
            nonzero = np.append(np.flatnonzero(buf), w)
            first = nonzero[np.searchsorted(nonzero, ends[lost])]
            zeros = first - ends[lost]
            hop = (first < w) & (zeros >= 3) & (zeros <= PADDING_BYTES + 2) & (buf[np.minimum(first, w - 1)] == 1)
            after[lost[hop]] = first[hop] - 2
            nxt[lost[hop]] = unit[first[hop] - 2]
        nxt = np.append(np.where(stop, np.arange(count), nxt), count)
        # the chain of units from the first: mostly each unit's next is the one after it in the window
        step = nxt[:count] != np.arange(1, count + 1)
        last = int(step.argmax()) if step.any() else count
        if last < count and nxt[last] > last:  # a start code within a unit passed, or the units to look at: jumps
            jumps = [nxt]  # jumps[k][i]: the unit 2**k units after unit i
            while 1 << len(jumps) <= count:
                jumps.append(jumps[-1][jumps[-1]])
            reached = np.array([last])  # the units reached in 0 to 2**len(jumps) - 1 jumps, with repeats
            for jump in reversed(jumps):
                reached = np.concatenate((reached, jump[reached]))
            passed = np.zeros(count + 1, bool)
            passed[:last] = True
            passed[reached] = True
            last = int(reached.max())  # a unit left to _check, or "none"
        else:
            passed = np.arange(count + 1) < last
        if last == count:
            passed[count] = False
        passed[last] = False
        passed = passed[:count]
        if last < count:
            self.at = start + base + int(starts[last])
        else:
            self.at = start + base + int(after[passed & (nxt[:count] == count)][0])
        if (runs := starts[passed & padded]).size:
            self.runs.append(runs + (start + base + 3))
        if last == count:  # it went through its window (or to what _check refuses): look further, sooner
            self.walk, self.window = _WALKED // 8, min(2 * self.window, 1 << 20)
        else:
            self.walk, self.window = _WALKED, _WINDOW


def decoder(stream: Any) -> Any:
    """The codec context that decodes ``stream``: :data:`DECODERS`' for its codec, given the stream's parameters, else
    the stream's own (FFmpeg's decoder)."""
    import av

    chosen = DECODERS.get(stream.codec_context.codec.canonical_name)
    if chosen is None:
        return stream.codec_context
    context: Any = av.CodecContext.create(chosen, "r")
    context.sample_rate, context.layout = stream.codec_context.sample_rate, stream.codec_context.layout
    return context


def _write(container: Any, stream: Any, context: Any, name: str, max_seconds: float, cut: bool, out: BinaryIO,
           checked: ProgramStream | None) -> None:
    """Decode ``stream`` of ``container`` by ``context`` to ``out``: the rate, then PCM, up to ``max_seconds``; an MPEG
    program stream ``checked`` as it is read, refused as soon as it is (the packet refused is not decoded)."""
    import av

    resampler: Any = None
    written = limit = 0
    try:
        for packet in container.demux(stream):
            _verdict(checked)
            if name == "AMR" and packet.size:
                _amr_frame(packet, stream.codec_context.codec.canonical_name)
            for frame in context.decode(packet):
                if resampler is None:
                    rate = frame.sample_rate
                    resampler, limit = av.AudioResampler(format="s16", layout="mono", rate=rate), int(max_seconds * rate)
                    out.write(rate.to_bytes(4, "little"))
                for converted in resampler.resample(frame):
                    written = _emit(converted, written, limit, cut, out)
        if resampler is not None:
            for converted in resampler.resample(None):
                written = _emit(converted, written, limit, cut, out)
    except _Done:
        return
    except MemoryError:
        raise Refused(LIMIT, f"decoding the {name} audio needed more memory than the decoder's limit") from None
    except (av.FFmpegError, ValueError, EOFError) as exc:
        _verdict(checked)
        raise Refused(NOT_AUDIO, f"the {name} audio is corrupt or cut short: {_said(exc)}") from None
    _verdict(checked)
    if resampler is None:
        raise Refused(NOT_AUDIO, f"the {name} file's audio stream holds no audio that can be decoded")
    declared = None if name in UNTIMED else _declared(container, stream)
    if declared is not None and written / resampler.rate < declared - CUT_SLACK_SECONDS:
        raise Refused(NOT_AUDIO, f"the {name} audio is cut short: it ends at {written / resampler.rate:.1f} s of the "
                                 f"{declared:.1f} s its header gives")


#: The frame types (a frame header's bits 3 to 6) no frame of an AMR file has, by codec: AMR's 12 to 14 and AMR-WB's 10
#: to 13 are for future use (RFC 4867).
_AMR_UNUSED = {"amr_nb": range(12, 15), "amr_wb": range(10, 14)}


#: The bytes of an AMR file's frame, its header byte with them, by its frame type and codec: RFC 4867's sizes as FFmpeg's
#: demuxer reads them (a frame type with no speech bits is its header alone).
AMR_FRAME_BYTES = {"amr_nb": (13, 14, 16, 18, 20, 21, 27, 32, 6, 1, 1, 1, 1, 1, 1, 1),
                   "amr_wb": (18, 24, 33, 37, 41, 47, 51, 59, 61, 6, 1, 1, 1, 1, 1, 1)}


def _amr_frame(packet: Any, codec: str) -> None:
    """Refuse the AMR file's frame ``packet`` when its header is not one: padding bits set, or an unused frame type;
    or when it is shorter than its type's (:data:`AMR_FRAME_BYTES`): the file is cut inside it, its last (FFmpeg's
    demuxer gives what is left of it, which the decoder refuses as "invalid data"). A raw AMR file has no sync word:
    FFmpeg takes any byte for a frame's header, so junk decodes to noise (of any length) unless it is refused here."""
    header = bytes(packet)[0]
    kind = header >> 3 & 15
    if header & 0x83 or kind in _AMR_UNUSED[codec]:
        why = "padding bits set" if header & 0x83 else f"frame type {kind}, which is unused"
        raise Refused(NOT_AUDIO, f"the AMR audio is corrupt: the frame at byte {packet.pos} has {why} (0x{header:02x})")
    if packet.size < (size := AMR_FRAME_BYTES[codec][kind]):
        raise Refused(NOT_AUDIO, f"the AMR audio is cut short: its last frame, at byte {packet.pos}, has {packet.size} of "
                                 f"its {size} bytes")


def _declared(container: Any, stream: Any) -> float | None:
    """The seconds the audio stream's header (else the container's) says it lasts; None when neither says (a WebM
    a browser's MediaRecorder writes, as it goes, has no length: one cut short is not told from a whole one)."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    return container.duration / 1_000_000 if container.duration else None


class _Done(Exception):
    """The audio was cut at the limit (``CUT``): nothing more is decoded."""


def _emit(frame: Any, written: int, limit: int, cut: bool, out: BinaryIO) -> int:
    """Write ``frame``'s samples (mono s16) to ``out``; the samples written so far, or past ``limit`` the end."""
    samples = frame.samples
    if written + samples > limit:
        if not cut:
            raise Refused(TOO_LONG, "too long")
        out.write(bytes(frame.planes[0])[: 2 * (limit - written)])
        raise _Done
    out.write(bytes(frame.planes[0])[: 2 * samples])
    return written + samples


def _said(exc: BaseException) -> str:
    """What FFmpeg said (its message without PyAV's errno and file name), on one line."""
    text = getattr(exc, "strerror", None) or str(exc)
    return " ".join(str(text).split())[:200] or type(exc).__name__


def main(argv: list[str]) -> int:
    name, max_seconds, cut, cpu_seconds, memory_bytes = argv
    os.environ["OPENBLAS_NUM_THREADS"] = "1"  # NumPy's (ProgramStream._run): not a thread (and its buffers) per core
    set_limits(int(cpu_seconds), int(memory_bytes))
    try:
        decode(name, source(sys.stdin.buffer), float(max_seconds), cut == "1", sys.stdout.buffer, bounded=True,
               memory_bytes=int(memory_bytes))
        sys.stdout.buffer.flush()
    except Refused as refused:
        print(refused, file=sys.stderr)
        return refused.status
    except MemoryError:
        print("decoding needed more memory than the decoder's limit", file=sys.stderr)
        return LIMIT
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
