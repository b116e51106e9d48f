"""WebM (browsers' MediaRecorder: Opus), Matroska (screen recorders: AAC), MP4/M4A (phones: AAC), QuickTime MOV
(iPhones' videos: AAC; old ones without an ``ftyp`` box too), raw AAC in ADTS frames (voice recorders, ``ffmpeg -c:a
aac out.aac``), 3GP with AMR-NB (Android's voice and call recorders), raw AMR (``#!AMR``, ``#!AMR-WB``) and MPEG program
streams with MP2 or MP3 (``.mpg``: camcorders, video CDs), decoded by FFmpeg in a child process of the server
(speech_recognizer.ffmpeg), on the OpenAI route with the openai package, the REST route and the file transcriber;
what is not whole, not audio or too long refused saying why; a decoder killed under the server ends its request alone."""

from __future__ import annotations

import functools
import io
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import av
import httpx
import numpy as np
import psutil
import pytest

from harness.hostile_inputs import vorbis_setup, webm_opus_bomb
from speech_recognizer import ffmpeg, ffmpeg_child, transcriber
from speech_recognizer.audio import AAC, AMR, MP3, MP4, MPEG_PS, WEBM, AudioError, body_limit, decode, decode_stream, sniff
from speech_recognizer.errors import DECODER_FAILED
from speech_recognizer.models import LoadedModel
from speech_recognizer.results import written

from ..conftest import av_reference
from ..muxing import decoding, encoded_wav, first_packet_sizes, in_child, muxed, remuxed
from ..support import Reference, ServerThread, av_pcm, near_confidence
from .test_openai_route import client
from .test_rest_inputs import GoodRequest, assert_still_serves, good_second, good_text, post  # noqa: F401 (fixtures)
from .test_transcriber import transcribe, words_of

#: Each kind by its files' suffix: ``qt`` is an old QuickTime movie without an ``ftyp`` box (:func:`utterances_qt`),
#: ``3gp`` AMR-NB in 3GP, ``amr`` raw AMR-NB, ``mpg`` an MPEG program stream with MP2, ``mpeg`` one with MP3.
FORMATS = ("webm", "m4a", "mkv", "mov", "aac", "qt", "3gp", "amr", "mpg", "mpeg")


@pytest.fixture(scope="module")
def recordings(utterances_webm: Path, utterances_m4a: Path, utterances_mkv: Path, utterances_mov: Path, utterances_aac: Path,
               utterances_qt: Path, utterances_recorded: dict[str, Path]) -> dict[str, Path]:
    """Each kind's file (the session's fixtures), by :data:`FORMATS`' names."""
    return {"webm": utterances_webm, "m4a": utterances_m4a, "mkv": utterances_mkv, "mov": utterances_mov,
            "aac": utterances_aac, "qt": utterances_qt, **utterances_recorded}


@pytest.fixture(scope="module")
def encoded(run_dir: Path, model: LoadedModel, recordings: dict[str, Path], utterances_webm_ref: Reference,
            utterances_m4a_ref: Reference, utterances_mkv_ref: Reference, utterances_mov_ref: Reference) -> dict[str, tuple[Path, Reference]]:
    """Each kind's file and what in-process Vosk hears in it: the references of the session's fixtures, and the
    others'."""
    refs = {"webm": utterances_webm_ref, "m4a": utterances_m4a_ref, "mkv": utterances_mkv_ref, "mov": utterances_mov_ref}
    return {kind: (path, refs[kind] if kind in refs else av_reference(run_dir, model, path)) for kind, path in recordings.items()}


@pytest.mark.parametrize("kind", FORMATS)
def test_the_openai_client_s_upload_is_heard_as_in_process_vosk_hears_its_pcm(
        keyed_fresh_server: ServerThread, encoded: dict[str, tuple[Path, Reference]], utterances_ref: Reference, kind: str) -> None:
    """A WebM/Opus, an M4A/AAC, an MKV/AAC, a MOV/AAC, a raw AAC (ADTS) and an old QuickTime MOV without ``ftyp`` uploaded
    by the openai package, and a 3GP of AMR-NB, a raw AMR-NB, and MPEG program streams of MP2 and of MP3: the words
    and times of in-process Vosk fed the PCM
    PyAV decodes the same file to, and its length (lossy coding changes some of the WAV's words: espeak's voice is at
    the edge of what the model hears; as many utterances). They were refused: "the body is not WAV, Ogg, FLAC or MP3
    audio"; the MKV's AAC later "the WebM file's audio is AAC (Advanced Audio Coding), not opus or vorbis"; the raw AAC
    and the MOV without ``ftyp`` until the ADTS frames and the atoms were told (400: "the body is not ... audio"); the
    3GP "the MP4 file's audio is AMR-NB (Adaptive Multi-Rate NarrowBand), not aac or alac" (415), the raw AMR and the
    MPEG program streams "the body is not ... audio" (400). On new recognizers, as the REST route's test below."""
    path, ref = encoded[kind]
    assert len(ref.phrases) == len(utterances_ref.phrases), (ref.texts, utterances_ref.texts)
    verbose = client(keyed_fresh_server).audio.transcriptions.create(
        model="whisper-1", file=path.open("rb"), language="ko", response_format="verbose_json",
        timestamp_granularities=["word", "segment"])
    assert verbose.text == " ".join(written(t) for t in ref.texts)
    pcm, rate = av_pcm(path)
    assert verbose.duration == round(len(pcm) / (2 * rate), 6)
    ref.assert_words_match([(w.word, w.start, w.end) for w in verbose.words], written=True)
    for segment, phrase in zip(verbose.segments, ref.phrases, strict=True):
        assert near_confidence(float(np.exp(segment.avg_logprob)), float(np.exp(np.mean([np.log(w.confidence) for w in phrase.words]))))


#: The content types each kind goes by, its files' own first, ``application/octet-stream`` last (what the file
#: transcriber sends any file as). The REST route decodes a body by its bytes, whatever its type (audio.decode: the type
#: counts for headerless PCM alone): each kind is recognized under its first type, and shown to decode alike under the
#: others.
OCTETS = "application/octet-stream"
TYPES = {"webm": ("audio/webm", "video/webm", OCTETS), "m4a": ("audio/mp4", "audio/x-m4a", "video/mp4", OCTETS),
         "mkv": ("video/x-matroska", OCTETS), "mov": ("video/quicktime", OCTETS), "aac": ("audio/aac", "audio/x-aac", OCTETS),
         "qt": ("video/quicktime", OCTETS), "3gp": ("audio/3gpp", "video/3gpp", OCTETS), "amr": ("audio/amr", OCTETS),
         "mpg": ("video/mpeg", "video/mp2p", OCTETS), "mpeg": ("video/mpeg", "audio/mpeg", OCTETS)}
#: The decoder each kind's bytes take (audio.sniff).
DECODERS = {"webm": WEBM, "m4a": MP4, "mkv": WEBM, "mov": MP4, "aac": AAC, "qt": MP4, "3gp": MP4, "amr": AMR, "mpg": MPEG_PS,
            "mpeg": MPEG_PS}


@pytest.mark.parametrize("kind", FORMATS)
def test_the_rest_route_hears_them(fresh_server, encoded: dict[str, tuple[Path, Reference]], kind: str) -> None:
    """The REST route, each kind under its own type (its bytes taking the kind's decoder): the same words and times as
    in-process Vosk on the decoded PCM; its types had been a 415 (the raw AAC's ``audio/aac`` still was, and a 400 by
    its bytes, as the MOV without ``ftyp`` was; the 3GP's AMR a 415 naming its codec, the raw AMR's and the MPEG program
    streams' types a 415, their bytes a 400). On new recognizers (``fresh_server``): a reused one moved a word of the
    MP2 recording by 5 ms (trial 108: ``용`` at 0.6540 s against 0.6589 s), by what it had decoded before in the
    session."""
    path, ref = encoded[kind]
    body = path.read_bytes()
    assert sniff(body, TYPES[kind][0]) is DECODERS[kind]
    r = post(fresh_server, body, TYPES[kind][0], query="language=ko-KR&format=detailed&wordLevelTimestamps=true")
    assert r.status_code == 200, r.text
    best = r.json()["NBest"][0]
    assert best["Lexical"] == " ".join(ref.texts)
    ref.assert_words_match([(w["Word"], w["Offset"] * 1e-7, (w["Offset"] + w["Duration"]) * 1e-7) for w in best["Words"]])


def test_the_rest_route_decodes_them_alike_by_any_of_their_types(recordings: dict[str, Path]) -> None:
    """Each kind under each other type it goes by (``application/octet-stream`` too, as the file transcriber sends
    every kind to a server; an MPEG program stream sent as ``audio/mpeg``, MP3's type, is decoded as what its bytes
    are): the REST route's body limit and the PCM its decoding gives (its decoder's, by the bytes) are those of its own
    type, which the route recognizes (the test above); the route uses the type for nothing else. So every kind the
    transcriber sends through a server is heard as under its own type (the folder test below sends three of them)."""
    for kind, (own, *others) in TYPES.items():
        body = recordings[kind].read_bytes()
        heard = decode(body, own, max_seconds=60)
        for content_type in others:
            assert body_limit(content_type, 60) == body_limit(own, 60), (kind, content_type)
            assert sniff(body, content_type) is DECODERS[kind], (kind, content_type)
            again = decode(body, content_type, max_seconds=60)
            assert (again.sample_rate, again.pcm) == (heard.sample_rate, heard.pcm), (kind, content_type)


#: The kinds of the folders the transcriber transcribes, in-process and through a server: each of the five decoders
#: (:data:`DECODERS`) in both, eight kinds in all. Every kind is shown decoded from its file as the transcriber reads it
#: to the PCM of its whole decoding (the test below), which the REST route hears as in-process Vosk does (the tests
#: above); through a server the transcriber sends it as ``application/octet-stream``, decoded alike (the test above).
IN_PROCESS = ("mkv", "m4a", "aac", "amr", "mpg")
THROUGH_A_SERVER = ("webm", "3gp", "mpeg")


def test_a_folder_of_them_in_process_and_through_a_server(fresh_server, encoded: dict[str, tuple[Path, Reference]], tmp_path: Path) -> None:
    """A folder of an .mkv, an .m4a, an .aac, an .amr and an .mpg (:data:`IN_PROCESS`) is searched for each (the .mkv
    was not, later the .aac, then the .amr and .mpg; a .3gp was found and failed: its codec) and each transcribed
    in-process (FFmpeg's child reads the file itself), a folder of a .webm, a .3gp and an .mpeg
    (:data:`THROUGH_A_SERVER`) through a server: in-process Vosk's words and times on the decoded PCM. (Each of the ten
    kinds was transcribed in-process, each some 5 s of CPU: those of the five not here are what the test below shows
    them decoded alike as.)"""
    for where, kinds in (((), IN_PROCESS), (("--server", fresh_server.http), THROUGH_A_SERVER)):  # new recognizers, as above
        folder = tmp_path / f"recordings-{len(where)}"
        folder.mkdir()
        for kind in kinds:
            shutil.copy(encoded[kind][0], folder / f"memo.{kind}")
        done = transcribe("--format", "json", *where, str(folder))
        assert done.returncode == 0, (where, done.stderr)
        answers = {Path(body["File"]).suffix[1:]: body for body in map(json.loads, done.stdout.splitlines())}
        assert sorted(answers) == sorted(kinds), done.stdout
        for kind in kinds:
            ref = encoded[kind][1]
            assert answers[kind]["NBest"][0]["Lexical"] == " ".join(ref.texts), (where, kind)
            ref.assert_words_match(words_of(answers[kind]))


@pytest.mark.parametrize("kind", FORMATS)
def test_decoded_as_they_are_read_they_equal_the_whole_decoding(recordings: dict[str, Path], kind: str) -> None:
    """Each kind, from a file as the transcriber reads one (its first 64 KiB told by their bytes alone, then the child
    reads the file from its start, whatever was read of it) and from a pipe's bytes: the PCM the whole decoding gives."""
    path = recordings[kind]
    whole = decode(path.read_bytes(), max_seconds=600)
    with path.open("rb") as file:
        head = file.read(65536)
        assert sniff(head) is DECODERS[kind]
        decoding = decode_stream(head, file.read, size=path.stat().st_size, file=file, max_seconds=600)
        assert decoding.sample_rate == whole.sample_rate and b"".join(decoding.blocks) == whole.pcm
    rest = io.BytesIO(path.read_bytes()[65536:])
    decoding = decode_stream(path.read_bytes()[:65536], rest.read, size=None, file=None, max_seconds=600)
    assert b"".join(decoding.blocks) == whole.pcm


def test_signatures_tell_them_whatever_the_type() -> None:
    """An EBML header is WebM (Matroska), an ``ftyp`` box 4 bytes in is MP4, even under a type that declares PCM."""
    assert sniff(b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81") is WEBM
    assert sniff(b"\x00\x00\x00\x1cftypM4A ", "audio/l16; rate=16000") is MP4
    assert sniff(b"ftyp\x00\x00\x00\x1c") is None


def _adts(length: int, rate_index: int = 8, layer: int = 0, crc: bool = False) -> bytes:
    """An ADTS frame of ``length`` bytes: AAC-LC, mono, sample rate ``rate_index`` (8: 16 kHz), MPEG ``layer`` bits
    (ADTS's are 0), its payload zeros."""
    b1 = 0xF0 | layer << 1 | (not crc)
    header = bytes([0xFF, b1, 1 << 6 | rate_index << 2, 1 << 6 | length >> 11, (length >> 3) & 0xFF, (length & 7) << 5 | 0x1F, 0xFC])
    return header + bytes(length - len(header))


def _id3(size: int) -> bytes:
    """An ID3v2.4 tag of ``size`` bytes after its header (padding)."""
    return b"ID3\x04\x00\x00" + bytes([(size >> s) & 0x7F for s in (21, 14, 7, 0)]) + bytes(size)


def test_adts_frames_are_aac_and_mpeg_audio_s_layers_are_not(utterances_aac: Path, utterances_mp3: Path) -> None:
    """Raw AAC is told by two ADTS frames of one stream, one where the first one's length says (12 sync bits and layer
    0, which MPEG audio reserves), under any type but one that declares headerless PCM, as MP3's frames are, and after
    an ID3 tag (FFmpeg skips it); MPEG audio's frames (layers 1 to 3) are never taken for it, nor it for them; a
    header alone, or a second of another sample rate, is not enough. They were not audio (400), or a 415 by their type."""
    assert sniff(utterances_aac.read_bytes()[:65536]) is AAC
    assert sniff(_adts(100) + _adts(120) + b"junk") is AAC
    assert sniff(_adts(100, crc=True) + _adts(90, crc=True)) is AAC
    assert sniff(_adts(100) + _adts(120), "audio/l16; rate=16000") is None
    assert sniff(_adts(100) + _adts(120), "audio/wav; codecs=audio/pcm; samplerate=16000") is None
    assert sniff(_id3(300) + _adts(100) + _adts(120)) is AAC
    assert sniff(_adts(100) + _adts(120, rate_index=3)) is None, "a second frame of another stream"
    assert sniff(_adts(100) + b"\x00" * 200) is None, "one header alone"
    assert sniff(_adts(100)[:6]) is None
    assert sniff(_adts(100)[:4] + b"\x00\x1f\xfc" + _adts(100)) is None, "a length shorter than its header (0)"
    assert sniff(_adts(100, rate_index=13) + _adts(120, rate_index=13)) is None, "a reserved sample rate index"
    mp3 = utterances_mp3.read_bytes()
    assert sniff(mp3[:65536]) is MP3 and sniff(_id3(300) + mp3[:65536]) is MP3
    for layer in (1, 2, 3):  # layers III, II, I: MPEG audio, not ADTS
        assert sniff(_adts(100, layer=layer) + _adts(120, layer=layer)) in (None, MP3), layer


def _atoms(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """The atoms of a QuickTime movie between ``start`` and ``end``: each type, where it begins and where it ends."""
    while start < end:
        size, kind = int.from_bytes(data[start : start + 4], "big"), data[start + 4 : start + 8]
        yield kind, start, start + size
        start += size


def moov_first(mov: bytes) -> bytes:
    """``mov`` (FFmpeg's: ``ftyp``, ``wide``, ``mdat``, ``moov``) as old QuickTime movies made to stream were written:
    the index (``moov``) first and no ``ftyp``; the chunk offsets the index gives (``stco``) moved with the media."""
    top = {kind: (begin, end) for kind, begin, end in _atoms(mov, 0, len(mov))}
    assert list(top) == [b"ftyp", b"wide", b"mdat", b"moov"], list(top)
    moov = bytearray(mov[top[b"moov"][0] : top[b"moov"][1]])
    shift = len(moov) - top[b"ftyp"][1]  # the moov comes before the media; the ftyp is gone

    def move(begin: int, end: int) -> int:
        moved = 0
        for kind, at, stop in _atoms(bytes(moov), begin, end):
            if kind in (b"trak", b"mdia", b"minf", b"stbl"):
                moved += move(at + 8, stop)
            elif kind == b"stco":
                count = int.from_bytes(moov[at + 12 : at + 16], "big")
                for entry in range(at + 16, at + 16 + 4 * count, 4):
                    moov[entry : entry + 4] = (int.from_bytes(moov[entry : entry + 4], "big") + shift).to_bytes(4, "big")
                moved += count
        return moved

    assert move(8, len(moov)), "the movie's chunk offsets were found"
    return bytes(moov) + mov[top[b"wide"][0] : top[b"mdat"][1]]


def test_an_old_quicktime_movie_is_told_by_its_atoms(utterances_qt: Path, utterances_mov: Path) -> None:
    """A QuickTime movie from before MP4's ``ftyp`` box begins with its ``moov``, ``mdat``, or a small ``wide``, ``free``,
    ``skip`` or ``pnot`` atom before them: told by that chain of atoms (it was "not audio", a 400); what only looks like
    the start of one is not."""
    assert sniff(utterances_qt.read_bytes()[:65536]) is MP4
    assert sniff(moov_first(utterances_mov.read_bytes())[:65536]) is MP4
    assert sniff(b"\x00\x00\x00\x08wide\x00\x00\x10\x00mdat") is MP4
    assert sniff(b"\x00\x00\x00\x01mdat\x00\x00\x00\x00\x00\x01\x00\x00") is MP4, "a 64-bit size"
    assert sniff(b"\x00\x00\x00\x0cpnot\x00\x00\x00\x00\x00\x00\x00\x14moov") is MP4
    assert sniff(b"\x00\x00\x00\x08free") is None, "no moov or mdat seen"
    assert sniff(b"\x00\x00\x00\x08free\x00\x00\x00\x08wide\x00\x00\x00\x04moov") is None, "a size shorter than a header"
    assert sniff(b"\x00\x00\x00\x08free\x00\x00\x00\x08\x00\x01\x02\x03\x00\x00\x00\x08moov") is None, "a type not of letters"
    assert sniff(b"\x00\x00\x00\x10trak\x00\x00\x00\x08moov") is None, "not an atom a movie begins with"
    assert sniff(b"\x00\x00\x00\x01mdat\x00\x00\x00\x00\x00\x00\x00\x08") is None, "a 64-bit size shorter than its header"
    assert sniff(b"\x00\x00\x00\x08wide\x00\x00\x10\x00mdat", "audio/l16; rate=16000") is None


def test_a_moov_first_movie_without_ftyp_is_heard(server, utterances_mov: Path, encoded: dict[str, tuple[Path, Reference]]) -> None:
    """The same movie with its index first and no ``ftyp`` (as old QuickTime wrote movies to stream): what in-process Vosk
    hears in the same audio (the MOV without ``ftyp``'s reference: the same AAC frames)."""
    r = post(server, moov_first(utterances_mov.read_bytes()), "video/quicktime",
             query="language=ko-KR&format=detailed&wordLevelTimestamps=true")
    assert r.status_code == 200, r.text
    assert r.json()["NBest"][0]["Lexical"] == " ".join(encoded["qt"][1].texts)


def test_an_id3_tagged_aac_is_heard_as_the_untagged(server, utterances_aac: Path, encoded: dict[str, tuple[Path, Reference]]) -> None:
    """Raw AAC after an ID3v2 tag (what recorders that tag their files write; FFmpeg's ADTS muxer with ``write_id3v2``):
    the words of the same audio untagged (it was "an ID3 tag followed by ... not MP3", or "not audio")."""
    r = post(server, _id3(1000) + utterances_aac.read_bytes(), "audio/aac", query="language=ko-KR&format=detailed")
    assert r.status_code == 200, r.text
    assert r.json()["NBest"][0]["Lexical"] == " ".join(encoded["aac"][1].texts)


@pytest.mark.unit
def test_a_folder_is_searched_for_every_suffix_of_what_is_decoded(tmp_path: Path) -> None:
    """Raw AAC (``.aac``, ``.adts``), audiobooks (``.m4b``), phones' 3GP (``.3gp``), old QuickTime (``.qt``), raw AMR
    (``.amr``, ``.awb``) and MPEG program streams (``.mpg``, ``.mpeg``) are found in a folder (they were passed over
    without a word: the last four until AMR and MPEG-PS were decoded), as are WebM, M4A, Matroska and QuickTime
    (``.webm``, ``.m4a``, ``.mkv``, ``.mov``: no folder the transcriber transcribes below holds all ten kinds); DVD's
    ``.vob`` (AC-3 or LPCM audio, mostly) and text are not."""
    names = ("a.aac", "b.ADTS", "c.m4b", "d.3gp", "e.qt", "f.mpg", "g.amr", "h.AWB", "i.mpeg", "j.webm", "k.m4a", "l.mkv",
             "m.mov", "n.vob", "notes.txt")
    for name in names:
        (tmp_path / name).touch()
    files, errors = transcriber.expand([str(tmp_path)])
    assert [f.name for f in files] == list(names[:13]) and not errors


@functools.cache
def _muxed(container: str, video: str | None = None, audio: str | None = None, rate: int = 16000) -> bytes:
    """:func:`muxing.muxed`'s second of ``container``, made once a worker, in a process of its own."""
    return in_child(muxed, container, video, audio, rate)


#: Recordings with a video beside their audio, as they come -> (the format served, PyAV's container, video and audio codec,
#: the audio's rate): an iPhone's video (HEVC and AAC in QuickTime), a screen recorder's (OBS: H.264 and AAC in
#: Matroska), a browser's (MediaRecorder: VP8 and Opus in WebM), a camcorder's or a video CD's (MPEG-1 video and MP2 in
#: an MPEG program stream).
VIDEOS = {"mov of hevc": ("MP4", "mov", "libx265", "aac", 44100), "mkv of h264": ("WebM", "matroska", "libx264", "aac", 48000),
          "webm of vp8": ("WebM", "webm", "libvpx", "libopus", 48000),
          "mpg of mpeg-1 video": ("MPEG-PS", "mpeg", "mpeg1video", "mp2", 48000)}


@pytest.mark.parametrize("case", list(VIDEOS))
def test_a_video_s_decoder_is_never_opened(server, case: str) -> None:
    """Opening a container reads its streams' parameters (``avformat_find_stream_info``), for which FFmpeg opened every
    stream's decoder, and decoded its packets until they were known: the HEVC, H.264, VP8 or MPEG-1 video of each upload
    with one, in the decoder's process (any of FFmpeg's decoders, by the codec a file names: its whole surface). The
    video's pixel format, which its decoder alone tells, was known once the container was open (yuv420p). Now FFmpeg
    refuses any decoder but those of the audio served (``codec_whitelist``; its log says so) and the pixel format is
    unknown; the audio decodes to the PCM of the same audio without the video, in the child the server runs too."""
    name, container, video, audio, rate = VIDEOS[case]
    with_video, alone = _muxed(container, video, audio, rate), _muxed(container, audio=audio, rate=rate)
    decoder = av.Codec(av.Codec(video, "w").canonical_name, "r").name
    heard = in_child(decoding, name, with_video, 60)  # its refusal is an error in FFmpeg's log: captured at ERROR
    assert [(kind, pixels) for kind, pixels in heard.opened if kind == "video"] == [("video", None)], heard.opened
    assert any(message.startswith(f"Codec ({decoder}) not on whitelist") for message in heard.said), heard.said
    without = in_child(decoding, name, alone, 60)
    assert heard.out == without.out and len(heard.out) > rate, (len(heard.out), len(without.out))
    r = post(server, with_video, "application/octet-stream")
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("case", list(VIDEOS))
def test_a_video_s_packets_are_discarded_by_the_demuxer(case: str) -> None:
    """Once the streams' parameters are read, the demuxer is told to discard every stream but the audio decoded
    (``AVStream.discard``): their packets are skipped, not parsed nor returned. They were read and returned to PyAV,
    which dropped them, and the MPEG program stream's video went through FFmpeg's MPEG video parser to its end. The
    audio decoded is the same as before (:func:`test_a_video_s_decoder_is_never_opened`)."""
    name, container, video, audio, rate = VIDEOS[case]
    heard = in_child(decoding, name, _muxed(container, video, audio, rate), 60)
    assert sorted(heard.chosen) == [("audio", "default"), ("video", "all")] and len(heard.out) > rate


#: Bodies that are not whole or not served -> (status, words of the reason).
BROKEN = {
    "webm cut short": (lambda webm, m4a, wav: webm[: len(webm) // 2], 400, "the WebM audio is cut short"),
    "webm with junk after its header": (lambda webm, m4a, wav: webm[:40] + bytes(range(256)) * 40, 400, "WebM"),
    "webm of its EBML header alone": (lambda webm, m4a, wav: webm[:4], 400, "the WebM container cannot be read"),
    "m4a cut short (its index lost)": (lambda webm, m4a, wav: m4a[: len(m4a) // 2], 400, "the MP4"),
    "mp4 of video alone": (lambda webm, m4a, wav: _muxed("mp4", "mpeg4"), 415, "the MP4 file holds no audio (video only)"),
    "matroska of mp3": (lambda webm, m4a, wav: _muxed("matroska", audio="libmp3lame"), 415, "the WebM file's audio is MP3 (MPEG audio layer 3), not aac, opus or vorbis"),
    "adts frames of zeros": (lambda webm, m4a, wav: _adts(100) + _adts(120) + _adts(90), 400, "the AAC audio is corrupt or cut short"),
    "quicktime atoms with no moov": (lambda webm, m4a, wav: b"\x00\x00\x00\x08wide\x00\x00\x00\x10mdat" + bytes(8), 400,
                                     "the MP4 container cannot be read"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_what_is_not_whole_or_not_served_is_refused_saying_why(server, utterances_webm: Path, utterances_m4a: Path,
                                                              speech_wav: Path, good_second: GoodRequest, case: str) -> None:  # noqa: F811
    make, status, words = BROKEN[case]
    body = make(utterances_webm.read_bytes(), utterances_m4a.read_bytes(), speech_wav)
    for content_type in ("application/octet-stream", "audio/webm"):
        r = post(server, body, content_type)
        assert r.status_code == status, (content_type, r.text)
        assert words in r.json()["error"]["message"], r.text
    assert_still_serves(server, good_second)


@functools.cache
def _tracks(container: str, audio: str, count: int) -> bytes:
    """:func:`_muxed`'s second of ``audio`` in ``container``, its packets in each of ``count`` tracks alike."""
    return in_child(remuxed, _muxed(container, audio=audio), container, None, count)


#: Files of many audio tracks -> (PyAV's container, codec, tracks, the status): past ffmpeg_child.MAX_STREAMS a 415 saying
#: so (a thousand AAC tracks passed the decoder's memory limit while FFmpeg opened the MP4: a 502 decoder_failed, a
#: fault, where the input is the client's doing; Matroska kept its first thousand and decoded the first), at it decoded.
TRACKS = {"mp4 of 1000 aac tracks": ("mp4", "aac", 1000, 415), "webm of 1000 opus tracks": ("webm", "libopus", 1000, 415),
          "mp4 of as many aac tracks as served": ("mp4", "aac", ffmpeg_child.MAX_STREAMS, 200)}


@pytest.mark.parametrize("case", list(TRACKS))
def test_a_file_of_more_tracks_than_served_is_refused_saying_so(server, good_second: GoodRequest,  # noqa: F811
                                                                case: str) -> None:
    container, audio, count, status = TRACKS[case]
    r = post(server, _tracks(container, audio, count), "application/octet-stream")
    assert r.status_code == status, r.text
    if status != 200:
        name = "MP4" if container == "mp4" else "WebM"
        assert r.json()["error"]["message"] == (f"the {name} file has more than {ffmpeg_child.MAX_STREAMS} tracks (streams), "
                                                "which is not served: no recording has that many; send the audio track alone")
    assert_still_serves(server, good_second)


@functools.cache
def _alac_m4a(wav: Path) -> bytes:
    """A stereo ALAC M4A of ``wav`` (both channels its samples), made once a worker."""
    return in_child(encoded_wav, wav, "ipod", "alac", None, None, "stereo")


def _alac_declaring(m4a: bytes, samples: int | None, channels: int) -> bytes:
    """``m4a`` (one stereo ALAC track) with its magic cookie (the ``alac`` box in its sample description, after the box's
    size, type and version) declaring frames of ``samples`` (None: as its encoder wrote it) and ``channels``."""
    entry = m4a.index(b"alac", m4a.index(b"stsd"))
    at = m4a.index(b"alac", entry + 4) + 8
    assert int.from_bytes(m4a[at : at + 4], "big") == 4096 and m4a[at + 9] == 2  # the encoder's
    return m4a[:at] + (samples or 4096).to_bytes(4, "big") + m4a[at + 4 : at + 9] + bytes([channels]) + m4a[at + 10 :]


#: ALAC frames and channels declared -> the status: FFmpeg's decoder allocates buffers of that many samples for each
#: channel (it takes up to 4096 x 4096 samples and 8 channels): an M4A declaring the most passed the decoder's memory
#: limit as it decoded, a 502 decoder_failed (a fault, an alert) for the client's input; past
#: ffmpeg_child.ALAC_MAX_FRAME_SAMPLES a 415 saying so.
ALAC_FRAMES = {"as its encoder wrote them": (None, 2, 200), "of 4096 x 4096 samples in 8 channels": (4096 * 4096, 8, 415),
               "of one sample more than served": ((1 << 16) + 1, 2, 415)}


@pytest.mark.parametrize("case", list(ALAC_FRAMES))
def test_alac_declaring_frames_longer_than_served_is_refused_saying_so(server, speech_wav: Path, good_text: str, good_second: GoodRequest,  # noqa: F811
                                                                       case: str) -> None:
    samples, channels, status = ALAC_FRAMES[case]
    r = post(server, _alac_declaring(_alac_m4a(speech_wav), samples, channels), "audio/mp4")
    assert r.status_code == status, r.text
    if status == 200:
        assert r.json()["DisplayText"] == good_text
    else:
        assert r.json()["error"]["message"] == (
            f"the MP4 file's ALAC audio declares frames of {samples} samples, more than the "
            f"{ffmpeg_child.ALAC_MAX_FRAME_SAMPLES} served (encoders write 4096): send the ALAC or AAC an encoder writes")
    assert_still_serves(server, good_second)


def _ebml(element: bytes, data: bytes) -> bytes:
    """An EBML element (Matroska's): its ID, its size (8 bytes) and ``data``."""
    return element + (1 << 56 | len(data)).to_bytes(8, "big") + data


def _webm_of_vorbis(tracks: int, setup: bytes) -> bytes:
    """A WebM of ``tracks`` Vorbis tracks (16 kHz mono), each with ``setup`` in its CodecPrivate, and one block."""
    ident = b"\x01vorbis" + struct.pack("<IBIiiiBB", 0, 1, 16000, 0, 0, 0, 0xB8, 1)
    comment = b"\x03vorbis" + bytes(8) + b"\x01"
    private = bytes([2, len(ident), len(comment)]) + ident + comment + setup  # Xiph lacing
    audio = _ebml(b"\xe1", _ebml(b"\xb5", struct.pack(">d", 16000.0)) + _ebml(b"\x9f", b"\x01"))
    entries = b"".join(_ebml(b"\xae", _ebml(b"\xd7", bytes([n])) + _ebml(b"\x73\xc5", bytes([n])) + _ebml(b"\x83", b"\x02")
                             + _ebml(b"\x86", b"A_VORBIS") + _ebml(b"\x63\xa2", private) + audio) for n in range(1, tracks + 1))
    cluster = _ebml(b"\x1f\x43\xb6\x75", _ebml(b"\xe7", b"\x00") + _ebml(b"\xa3", b"\x81\x00\x00\x80" + bytes(10)))
    header = _ebml(b"\x1a\x45\xdf\xa3", _ebml(b"\x42\x86", b"\x01") + _ebml(b"\x42\xf7", b"\x01") + _ebml(b"\x42\xf2", b"\x04")
                   + _ebml(b"\x42\xf3", b"\x08") + _ebml(b"\x42\x82", b"webm") + _ebml(b"\x42\x87", b"\x02") + _ebml(b"\x42\x85", b"\x02"))
    info = _ebml(b"\x15\x49\xa9\x66", _ebml(b"\x2a\xd7\xb1", (1000000).to_bytes(3, "big")))
    return header + _ebml(b"\x18\x53\x80\x67", info + _ebml(b"\x16\x54\xae\x6b", entries) + cluster)

#: WebMs of Vorbis tracks -> (tracks, the status): each track's setup header of 256 codebooks of 16384 codewords in 16
#: dimensions (5 KB) is expanded to some 270 MB by FFmpeg's decoder as it opens, which takes a second or two of CPU, and
#: FFmpeg opens each track's decoder while it reads the streams' parameters: 32 of them (168 KB) ran out of the child's
#: CPU time, or the clock's, a 502 decoder_failed (a fault, an alert) for the client's input; now a 415 once opening
#: took ffmpeg_child.OPEN_CPU_SECONDS. One is opened (and refused by the decoder for what follows the codebooks).
VORBIS_SETUPS = {"32 tracks": (32, 415), "one track": (1, 400)}


@pytest.mark.parametrize("case", list(VORBIS_SETUPS))
def test_tracks_whose_codec_setup_takes_too_long_to_read_are_refused_saying_so(server, good_second: GoodRequest,  # noqa: F811
                                                                                case: str) -> None:
    tracks, status = VORBIS_SETUPS[case]
    r = post(server, _webm_of_vorbis(tracks, vorbis_setup(256, 16384, 16)), "audio/webm")
    assert r.status_code == status, r.text
    if status == 415:
        assert r.json()["error"]["message"] == (
            f"reading the WebM file's headers took more than {ffmpeg_child.OPEN_CPU_SECONDS:g} s of the decoder's CPU "
            "time (its tracks' codec setup), which is not served: send the audio track alone, as a recorder writes it")
    assert_still_serves(server, good_second)


def _children(pid: int) -> list[psutil.Process]:
    return [p for p in psutil.Process(pid).children() if "speech_recognizer.ffmpeg_child" in " ".join(p.cmdline())]


def test_a_decoder_killed_under_the_server_ends_its_request_alone(server, utterances_webm: Path,
                                                                  good_second: GoodRequest) -> None:  # noqa: F811
    """The decoder's process killed by SIGSEGV (as a crash in FFmpeg ends it) while the server waits on it: that
    request is a 502 naming the signal (``decoder_failed``), and the server serves the next one."""
    body = utterances_webm.read_bytes()
    answers: list[httpx.Response] = []
    for _ in range(20):  # the child lives for a tenth of a second: caught alive within a few tries
        request = threading.Thread(target=lambda: answers.append(post(server, body, "audio/webm")))
        request.start()
        killed = False
        while request.is_alive() and not killed:
            for process in _children(psutil.Process().pid):
                process.send_signal(signal.SIGSEGV)
                killed = True
            time.sleep(0.001)
        request.join()
        if killed and answers[-1].status_code != 200:
            break
    r = answers[-1]
    assert r.status_code == DECODER_FAILED.http, r.text
    assert r.json()["error"]["message"] == ("the WebM decoder (FFmpeg, in a process of its own) failed on this audio: "
                                            "signal SIGSEGV; nothing else was affected")
    assert not _children(psutil.Process().pid), "the child was collected"
    assert_still_serves(server, good_second)


def test_a_decoder_killed_mid_stream_fails_that_file(tmp_path: Path) -> None:
    """A file decoded as it is read (the transcriber's way), its decoder killed between two blocks: the next read
    raises ``decoder_failed`` naming the signal; the child is collected."""
    path = tmp_path / "long.webm"
    path.write_bytes(in_child(webm_opus_bomb, 600, 1))
    with path.open("rb") as file:
        decoding = decode_stream(file.read(65536), file.read, size=path.stat().st_size, file=file, max_seconds=3600)
        next(decoding.blocks)
        (child,) = _children(psutil.Process().pid)
        child.send_signal(signal.SIGSEGV)
        with pytest.raises(AudioError) as failed:
            for _ in decoding.blocks:
                pass
    assert failed.value.kind is DECODER_FAILED and "signal SIGSEGV" in failed.value.message
    assert not child.is_running(), "the child was collected"



def _amr_wb_noise(seconds: float, rng: np.random.Generator) -> bytes:
    """Raw AMR-WB (``#!AMR-WB``) of ``seconds`` of 23.85 kbit/s frames (frame type 8: 60 bytes after the header byte)
    of random bits: noise, not speech. No encoder of AMR-WB is at hand (the av wheel's OpenCORE has AMR-NB's alone,
    sox is built without one), so its speech cannot be made here."""
    return b"#!AMR-WB\n" + b"".join(bytes([8 << 3 | 4]) + rng.bytes(60) for _ in range(int(seconds * 50)))


def _in_3gp(amr: bytes) -> bytes:
    """The frames of the raw AMR ``amr`` remuxed into 3GP (``ftyp 3gp4``) by PyAV, as a phone's recorder writes them."""
    return in_child(remuxed, amr, "3gp", "amr")


def test_amr_wb_raw_and_in_3gp_is_decoded_as_pyav_decodes_it(server, tmp_path: Path) -> None:
    """AMR-WB (16 kHz), raw and in 3GP, is decoded to the PCM PyAV decodes it to with the server's decoder (OpenCORE's),
    from bytes and from a file, and the REST route answers it for its length (noise: nothing to hear). It was a 400
    (not audio) raw, a 415 in 3GP ("the MP4 file's audio is AMR-WB ..., not aac or alac")."""
    raw = _amr_wb_noise(3, np.random.default_rng(5))
    for name, body in (("noise.awb", raw), ("noise.3gp", _in_3gp(raw))):
        path = tmp_path / name
        path.write_bytes(body)
        pcm, rate = av_pcm(path)
        audio = decode(body, max_seconds=60)
        assert (audio.sample_rate, audio.pcm) == (rate, pcm) and rate == 16000 and len(pcm) == 2 * 3 * 16000, name
        with path.open("rb") as file:
            decoding = decode_stream(file.read(65536), file.read, size=len(body), file=file, max_seconds=60)
            assert b"".join(decoding.blocks) == pcm, name
        r = post(server, body, "audio/amr-wb" if name.endswith(".awb") else "audio/3gpp")
        assert r.status_code == 200 and r.json()["Duration"] + r.json()["Offset"] <= 3 * 10_000_000, r.text


def test_dtx_silences_of_amr_are_decoded(server, run_dir: Path, model: LoadedModel, utterances_recorded: dict[str, Path], tmp_path: Path) -> None:
    """AMR a recorder wrote with discontinuous transmission (DTX): its silences are comfort-noise (SID) and no-data
    frames, which FFmpeg's own AMR decoders refuse ("not yet implemented"), failing the file; OpenCORE's (the server's)
    decode them: raw and in 3GP, the words and times of in-process Vosk on the PCM PyAV decodes it to with OpenCORE's
    (the recording's first utterance between two silences: 7 s in all, not 17 with the three, each decoded three times).
    With FFmpeg's own decoder it was a 400 "the AMR audio is corrupt or cut short: Not yet implemented in FFmpeg"."""
    silent = bytes([8 << 3 | 4]) + bytes(5)  # a SID frame (frame type 8) of zeros
    nodata = bytes([15 << 3 | 4])
    gaps = b"".join([silent, *[nodata] * 7] * 13)  # 2 s of DTX: a SID frame, then 7 no-data frames, over and over
    first = _amr_frames(utterances_recorded["amr"].read_bytes())[:150]  # 3 s: the first utterance (0.3 to 2.5 s), half its pause
    path = tmp_path / "dtx.amr"
    path.write_bytes(b"#!AMR\n" + gaps + b"".join(first) + gaps)
    ref = av_reference(run_dir, model, path)
    for body, content_type in ((path.read_bytes(), "audio/amr"), (_in_3gp(path.read_bytes()), "audio/3gpp")):
        r = post(server, body, content_type, query="language=ko-KR&format=detailed&wordLevelTimestamps=true")
        assert r.status_code == 200, r.text
        best = r.json()["NBest"][0]
        assert best["Lexical"] == " ".join(ref.texts)
        ref.assert_words_match([(w["Word"], w["Offset"] * 1e-7, (w["Offset"] + w["Duration"]) * 1e-7) for w in best["Words"]])


def _amr_frames(amr: bytes) -> list[bytes]:
    """The frames of a raw AMR-NB file, each its header byte and the bytes its frame type gives (RFC 4867)."""
    sizes = (12, 13, 15, 17, 19, 20, 26, 31, 5, 0, 0, 0, 0, 0, 0, 0)
    at, frames = 6, []
    while at < len(amr):
        end = at + 1 + sizes[amr[at] >> 3 & 15]
        frames.append(amr[at:end])
        at = end
    return frames


def test_amr_and_mpeg_program_streams_are_told_by_their_headers() -> None:
    """``#!AMR`` (``#!AMR-WB``) is AMR, a pack header (MPEG-1's or MPEG-2's) an MPEG program stream, whatever the
    type but one that declares PCM for the pack header, which bytes of PCM could begin with; the start code alone
    or another MPEG start code is not (a 400 as before)."""
    assert sniff(b"#!AMR\n\x3c") is AMR and sniff(b"#!AMR-WB\n\x44", "audio/mpeg") is AMR
    assert sniff(b"\x00\x00\x01\xba\x21\x00\x01\x00\x01\x80\x01\x83") is MPEG_PS, "MPEG-1"
    assert sniff(b"\x00\x00\x01\xba\x44\x00\x04\x00\x04\x01\x01\x89\xc3\xf8", "audio/mpeg") is MPEG_PS, "MPEG-2"
    assert sniff(b"\x00\x00\x01\xba\x44\x00\x04\x00\x04\x01", "audio/l16; rate=16000") is None
    assert sniff(b"\x00\x00\x01\xba\x00\x00\x00\x00") is None, "neither version's bits"
    assert sniff(b"\x00\x00\x01\xb3\x21\x00\x01\x00") is None, "an MPEG video sequence header: no program stream"


def _cut(data: bytes) -> bytes:
    """``data``'s first two thirds, plus a byte (inside a frame, a pack)."""
    return data[: len(data) * 2 // 3 + 1]


def _junk_at(data: bytes, at: int) -> bytes:
    return data[:at] + bytes(range(256)) * 20 + data[at:]


#: AMR and MPEG program streams that are not whole or not served -> (what the body is made of, status, words of the reason).
BROKEN_AMR_MPEG = {
    "amr cut inside a frame": ("amr", _cut, 400, "the AMR audio is cut short: its last frame, at byte"),
    # 50 frames of 61 bytes after the 9 of its header, cut at byte 2040: 18 bytes of the frame at 9 + 33 x 61
    "amr-wb cut inside a frame": ("amr", lambda d: _cut(_amr_wb_noise(1, np.random.default_rng(5))), 400,
                                  "the AMR audio is cut short: its last frame, at byte 2022, has 18 of its 61 bytes"),
    "amr cut inside its first frame": ("amr", lambda d: d[:7], 400,
                                       "the AMR audio is cut short: its last frame, at byte 6, has 1 of its 32 bytes"),
    # the junk's first byte (0x00) reads as a 4.75 kbit/s frame's header; the next one, 13 bytes on (0x0d), as none
    "amr with junk between its frames": ("amr", lambda d: _junk_at(d, 6 + 32 * 40), 400,
                                         "the AMR audio is corrupt: the frame at byte 1299 has padding bits set (0x0d)"),
    "amr of its header alone": ("amr", lambda d: d[:6], 400, "the AMR file's audio stream holds no audio"),
    "multi-channel amr": ("amr", lambda d: b"#!AMR_MC1.0\n" + (2).to_bytes(4, "big") + d[6:], 415,
                          "the AMR file is multi-channel (#!AMR_MC1.0), which is not served"),
    "3gp cut short (its index lost)": ("3gp", _cut, 400, "the MP4 container cannot be read"),
    "mpg cut inside a pack": ("mpg", _cut, 400, "the MPEG-PS file is cut short: its unit at byte"),
    "mpeg (mp3) cut inside a pack": ("mpeg", _cut, 400, "the MPEG-PS file is cut short: its unit at byte"),
    "mpg with junk between its packs": ("mpg", lambda d: _junk_at(d, 2048), 400,
                                        "the MPEG-PS file is corrupt: no start code at byte 2048"),
    "mpg with a MiB of zeros after it": ("mpg", lambda d: d + bytes(1 << 20), 400,
                                         "the MPEG-PS file is corrupt: more than 2324 zero bytes (a video CD sector's "
                                         "padding at most) from byte"),
    "mpg of its pack header alone": ("mpg", lambda d: d[:12], 400, "the MPEG-PS container cannot be read"),
    "mpg of video alone": ("mpg", lambda d: _muxed("mpeg", "mpeg1video"), 415, "the MPEG-PS file holds no audio (video only)"),
    "mpg of ac-3 (a dvd's)": ("mpg", lambda d: _muxed("vob", audio="ac3", rate=48000), 415,
                              "the MPEG-PS file's audio is ATSC A/52A (AC-3), not mp2 or mp3"),
}


@pytest.mark.parametrize("case", list(BROKEN_AMR_MPEG))
def test_amr_or_mpeg_program_stream_not_whole_or_not_served_is_refused_saying_why(
        server, encoded: dict[str, tuple[Path, Reference]], good_second: GoodRequest, case: str) -> None:  # noqa: F811
    """Each a 400 or 415 saying why, by its bytes under any type, and the server serves on. Raw AMR has no sync word:
    FFmpeg takes any byte for a frame's header, so junk was heard as noise of any length (5 KB of it, 51 s) unless its
    headers are checked; FFmpeg's MPEG-PS demuxer decodes what is left of a cut pack, and skips junk, without a word.
    All were a 400 "not audio" (the 3GP a 415, its codec) before AMR and MPEG-PS were decoded; AMR cut inside a frame
    then FFmpeg's words, "the AMR audio is corrupt or cut short: Invalid data found when processing input"."""
    kind, make, status, words = BROKEN_AMR_MPEG[case]
    body = make(encoded[kind][0].read_bytes())
    for content_type in ("application/octet-stream", "audio/amr", "video/mpeg"):
        r = post(server, body, content_type)
        assert r.status_code == status, (content_type, r.text)
        assert words in r.json()["error"]["message"], r.text
    assert_still_serves(server, good_second)


@pytest.mark.unit
def test_an_amr_frame_s_bytes_are_those_ffmpeg_s_demuxer_reads() -> None:
    """The size of each frame type the child holds a raw AMR file's frames to (a frame shorter is cut short) is the size
    of the packet FFmpeg's demuxer reads for it from a file long enough, AMR-NB's and AMR-WB's."""
    for codec, head in (("amr_nb", b"#!AMR\n"), ("amr_wb", b"#!AMR-WB\n")):
        read = in_child(first_packet_sizes, [head + bytes([kind << 3 | 4]) + bytes(100) for kind in range(16)], "amr")
        assert tuple(read) == ffmpeg_child.AMR_FRAME_BYTES[codec], codec


def test_an_mpeg_program_stream_cut_a_byte_or_two_into_a_pack_is_decoded_as_far_as_it_goes(
        encoded: dict[str, tuple[Path, Reference]]) -> None:
    """Cut one or two bytes after a pack (its next one's start code begun: zero bytes), an MPEG program stream decodes
    as far as it goes: to the audio of the same file cut where the pack ends, which cannot be told from a whole file
    (nor can those zero bytes be told from the zeros that may pad one to its end); no part of a unit is decoded. Cut
    three bytes after (a start code whole, its code lost), it is a 400 saying where."""
    for kind in ("mpg", "mpeg"):
        data = encoded[kind][0].read_bytes()
        boundary = 2048 * (len(data) // 2048 // 2)  # FFmpeg's muxer writes packs of 2048 bytes
        assert data[boundary : boundary + 4] == b"\0\0\1\xba", (kind, data[boundary : boundary + 4])
        at_the_pack = decode(data[:boundary], max_seconds=60)
        assert len(at_the_pack.pcm) > 2 * at_the_pack.sample_rate, kind  # a second's audio and more
        for extra in (1, 2):
            cut = decode(data[: boundary + extra], max_seconds=60)
            assert (cut.sample_rate, cut.pcm) == (at_the_pack.sample_rate, at_the_pack.pcm), (kind, extra)
        with pytest.raises(AudioError) as refused:
            decode(data[: boundary + 3], max_seconds=60)
        assert refused.value.message == (f"the MPEG-PS file is cut short: its unit at byte {boundary} ends at byte "
                                         f"{boundary + 4}, past the file's end (byte {boundary + 3})"), kind


def test_a_video_cd_s_zero_padding_is_padding_and_more_zeros_are_refused_unread(encoded: dict[str, tuple[Path, Reference]]) -> None:
    """FFmpeg's video CD muxer ends each 2324-byte sector its packs leave unfilled with zero bytes, between packs: such an
    ``.mpg`` decodes to the audio the plain MPEG-PS muxer's file of the same packets does (it was a 400 "the MPEG-PS file
    is corrupt: no start code at byte ..."). Up to a sector's worth of zeros after the last pack is padding too; more
    is a 400 saying where, the zeros read no further than that (22 MB of them after a file were read to their end,
    then decoded as the file alone: a 200)."""
    vcd, plain = (_muxed(muxer, "mpeg1video", "mp2", 44100) for muxer in ("vcd", "mpeg"))
    assert bytes(16) + b"\0\0\1\xba" in vcd[: -len(vcd) // 4], "no zero padding between the video CD's packs"
    assert (decoded := decode(vcd, max_seconds=60)).pcm == decode(plain, max_seconds=60).pcm and decoded.pcm
    data = encoded["mpg"][0].read_bytes()
    assert decode(data + bytes(ffmpeg_child.PADDING_BYTES), max_seconds=60).pcm == decode(data, max_seconds=60).pcm
    with pytest.raises(AudioError) as refused:
        decode(data + bytes(ffmpeg_child.PADDING_BYTES + 1), max_seconds=60)
    assert refused.value.message == ("the MPEG-PS file is corrupt: more than 2324 zero bytes (a video CD sector's "
                                     f"padding at most) from byte {len(data)}")
    read = in_child(decoding, "MPEG-PS", data + bytes(22 << 20), 60)
    assert read.refused is not None and read.furthest < len(data) + READ_AHEAD, (read.refused, read.furthest)


#: The most FFmpeg reads of a file at once (PyAV's buffer), before what it reads is parsed.
READ_AHEAD = 32 << 10


def test_an_mpeg_program_stream_is_read_as_far_as_its_audio_is_decoded(utterances_recorded: dict[str, Path]) -> None:
    """An MPEG program stream's units are checked as FFmpeg reads them (:class:`ffmpeg_child.ProgramStream`), not all
    before it opens the file: a file is read as far as its decoding goes, to the length limit (a 413) or the cut, not
    to its end however long it is (the transcriber reads a ``.mpg`` of any size). What decoding does not reach is not
    looked at: 22 MiB of junk after eight copies of a recording, decoded to a second, is the 413 or that second's
    audio, the file read no further than its first copy (the whole file was checked first: the 400 "no start code at
    byte ...", all of it read). Junk that decoding reaches is refused as before."""
    one = utterances_recorded["mpg"].read_bytes().removesuffix(b"\0\0\1\xb9")  # an end code (none here) would end the program
    data, junk = one * 8, bytes(range(256)) * (88 << 10)
    with pytest.raises(AudioError) as refused:
        decode(data + junk, max_seconds=1)
    assert refused.value.kind.http == 413 and "longer than 1 s" in refused.value.message, refused.value.message
    assert (cut := decode(data + junk, max_seconds=1, cut=True)).pcm == decode(data, max_seconds=1, cut=True).pcm
    assert len(cut.pcm) == 2 * cut.sample_rate
    read = in_child(decoding, "MPEG-PS", data + junk, 1)
    assert (read.refused, read.furthest < len(one)) == (ffmpeg_child.TOO_LONG, True), (read.refused, read.furthest, len(one))
    with pytest.raises(AudioError) as refused:
        decode(data + junk, max_seconds=3600)
    assert refused.value.message == f"the MPEG-PS file is corrupt: no start code at byte {len(data)}"


#: Streams an MPEG program stream may hold (their packets' codes, and a private stream's substream): MPEG video,
#: MPEG audio, a DVD's subtitles, AC-3, DTS and LPCM (private stream 1's), its navigation (private stream 2).
STREAMS = ([(code, None) for code in [*range(0xE0, 0xF0), *range(0xC1, 0xE0), 0xBF]]
           + [(0xBD, sub) for sub in [*range(0x20, 0x40), *range(0x80, 0x90), *range(0xA0, 0xA8)]])


def _pes(code: int, sub: int | None, payload: bytes) -> bytes:
    """A packet of stream ``code`` (and substream ``sub``) holding ``payload``, with MPEG-1's header (no timestamp)."""
    body = b"\x0f" + (b"" if sub is None else bytes([sub])) + payload
    return b"\0\0\1" + bytes([code]) + len(body).to_bytes(2, "big") + body


def test_streams_that_appear_once_the_mpeg_program_stream_is_open_are_skipped(utterances_recorded: dict[str, Path]) -> None:
    """FFmpeg's MPEG-PS demuxer makes a stream of each packet of a stream it has not seen, anywhere in a file (and
    probes a video's codec from its packets); PyAV's demuxing, whose table of streams is the one the container was
    opened with, read past its end for each packet of one, and could fail at the end (``IndexError``: the child's exit
    status 1, a decoder failure, the audio decoded lost). Here a hundred streams begin past what opening the container
    reads, a packet each after each pack from the 51st (as a camcorder's second audio track may begin later): none is
    made now (FFmpeg's log says it probes none), each packet read as padding, and the audio is that of the file
    without them. FFmpeg read a file's end as it opened it, which made the streams it found there, and does not now
    (:func:`test_an_mpeg_program_stream_is_read_as_far_as_its_audio_is_decoded`)."""
    one = utterances_recorded["mpg"].read_bytes().removesuffix(b"\0\0\1\xb9")
    starts = [at for at in range(0, len(one), 2048) if one.startswith(b"\0\0\1\xba", at)]  # FFmpeg's packs: 2048 bytes
    data, packs = one * 7, [one[at:end] for at, end in zip(starts, [*starts[1:], len(one)], strict=True)] * 7
    for n, (code, sub) in enumerate(STREAMS):
        packs[50 + n] += _pes(code, sub, bytes(range(64)))
    late = b"".join(packs)
    watched = in_child(decoding, "MPEG-PS", late, 3600, av.logging.DEBUG)  # FFmpeg's debug paths: not in the pytest worker
    probing = [message for message in watched.said if message.startswith("probing stream")]
    assert probing == [], probing
    alone = decode(data, max_seconds=3600)
    assert watched.out[4:] == alone.pcm and len(alone.pcm) > 60 * alone.sample_rate
    assert decode(late, max_seconds=3600).pcm == alone.pcm


def child_cpu_seconds(fmt: str, path: Path, max_seconds: float) -> tuple[float, str]:
    """The CPU time (user and system) of the FFmpeg child decoding the file ``path`` as ``fmt`` (an
    :class:`~speech_recognizer.contract.AudioFormat`'s name) up to ``max_seconds``, stdin the file, as the server and the
    transcriber run it (:func:`speech_recognizer.ffmpeg.start`), and how its decoding ended ("200" and the PCM's
    bytes, or the failure). Run from a process of its own, whose only child it is: not the clock's time, which load
    stretches."""
    script = ("import resource, sys\n"
              "from speech_recognizer import audio, ffmpeg\n"
              "fmt = next(f for f in audio.AUDIO_FORMATS if f.name == sys.argv[1])\n"
              "try:\n"
              "    with open(sys.argv[2], 'rb') as file:\n"
              "        said = f'200 {sum(len(b) for b in ffmpeg.start(fmt, file, float(sys.argv[3])).blocks())}'\n"
              "except ffmpeg.Ended as ended:\n"
              "    said = f'{ended.kind.http} {ended}'\n"
              "used = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
              "print(used.ru_utime + used.ru_stime, said)\n")
    root = str(Path(ffmpeg_child.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (root, os.environ.get("PYTHONPATH"))))}
    done = subprocess.run([sys.executable, "-c", script, fmt, str(path), repr(max_seconds)], capture_output=True, text=True,
                          timeout=300, check=True, env=env)
    seconds, said = done.stdout.strip().split(" ", 1)
    return float(seconds), said


#: The most CPU time the FFmpeg child may take for a REST body of the tiniest MPEG program stream units (all the 23 MB
#: a body may have at MaxAudioSeconds' default): it took about 4 s when each unit was checked in Python, 0.9 s now.
TINY_UNITS_CPU_SECONDS = 2.0


def test_an_mpeg_program_stream_of_tiny_units_is_checked_at_little_cost(utterances_recorded: dict[str, Path],
                                                                         tmp_path: Path) -> None:
    """The check of an MPEG program stream's units (:class:`ffmpeg_child.ProgramStream`) walks the units of a read at
    once (:meth:`ffmpeg_child.ProgramStream._run`), not one by one in Python: a body as large as the REST route takes
    (23 MB at 60 s), the recording followed by zero bytes and empty padding packets (7 bytes: two steps of the check
    each), is decoded to the recording's audio within :data:`TINY_UNITS_CPU_SECONDS` of the child's CPU time
    (about a quarter of the 16 s it may take there). A transcriber's file has no such bound on its size: at the
    former cost, some 4 GB of them ran out of the child's CPU time, a 502 for a file that is whole."""
    one = utterances_recorded["mpg"].read_bytes().removesuffix(b"\0\0\1\xb9")
    tiny = b"\0\0\0\1\xbe\0\0"
    path = tmp_path / "tiny.mpg"
    path.write_bytes(one + tiny * ((body_limit("", 60)[0] - len(one)) // len(tiny)))
    seconds, said = child_cpu_seconds("MPEG-PS", path, 60)
    assert said == f"200 {len(decode(one, max_seconds=60).pcm)}"
    assert seconds < TINY_UNITS_CPU_SECONDS, seconds


def test_the_decoder_s_numpy_starts_no_thread_of_its_own(utterances_recorded: dict[str, Path], tmp_path: Path) -> None:
    """NumPy, which the child imports for a read of many MPEG program stream units, loads OpenBLAS, which starts a
    thread for each CPU but one (each with its stack and buffers in the child's address space) unless told one
    (``OPENBLAS_NUM_THREADS``): sampled while it runs, the child starts no thread once OpenBLAS is loaded. (On one CPU
    OpenBLAS starts none: this cannot fail there.)"""
    one = utterances_recorded["mpg"].read_bytes().removesuffix(b"\0\0\1\xb9")
    path = tmp_path / "tiny.mpg"
    path.write_bytes(one + b"\0\0\0\1\xbe\0\0" * (4 << 20 >> 3))
    before: set[str] = set()  # the child's threads seen before OpenBLAS was loaded, and after
    after: set[str] = set()
    with path.open("rb") as file:
        decoding = ffmpeg.start(MPEG_PS, file, 60)
        proc, done = Path(f"/proc/{decoding.process.pid}"), threading.Event()

        def sample() -> None:
            while not done.is_set():
                try:
                    threads = {task.name for task in (proc / "task").iterdir()}
                    if "openblas" in (proc / "maps").read_text():
                        after.update(threads)
                    else:
                        before.update(threads)
                except (OSError, ValueError):
                    pass
                time.sleep(0.002)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            assert sum(len(block) for block in decoding.blocks()) == len(decode(one, max_seconds=60).pcm)
        finally:
            done.set()
            sampler.join()
    assert after and not after - before, (before, after)


@pytest.mark.unit
@pytest.mark.parametrize("seed", range(8))
def test_a_read_s_units_walked_at_once_are_checked_as_one_by_one(monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    """:meth:`ffmpeg_child.ProgramStream._run` passes the units :meth:`ffmpeg_child.ProgramStream._check` would pass
    one by one, with the same effects: on program streams of random units (pack headers of both versions, packets of
    every kind of stream and size, start codes within them, zeros between them, now and then junk, too many zeros, the
    end code, a code of no unit, a cut), read in pieces of random sizes, the container opened then the audio chosen
    at a random read, each read gives the same bytes (cut before a new stream, other streams' packets as padding), and
    the same refusal, walking at once from the first unit of each read and one by one only."""
    rng = random.Random(seed)
    for _ in range(40):
        data = _random_program_stream(rng)
        sizes, chosen = [rng.choice([100, 1000, 4096, 32768]) for _ in range(300)], rng.choice([0, 1, 2, 5, 1000])
        walks = []
        for walked, window in ((1, 64), (10**9, 64)):
            monkeypatch.setattr(ffmpeg_child, "_WALKED", walked)
            monkeypatch.setattr(ffmpeg_child, "_WINDOW", window)
            checked, pieces = ffmpeg_child.ProgramStream(io.BytesIO(data)), []
            for n, size in enumerate(sizes):
                if n == chosen:
                    checked.keep(0x1C0)
                pieces.append(checked.read(size))
                if not pieces[-1]:
                    break
            walks.append((pieces, str(checked.refused), checked.at, sorted(map(str, checked.seen))))
        assert walks[0] == walks[1]


def _random_program_stream(rng: random.Random) -> bytes:
    """A pack header and some hundreds of random units (:func:`test_a_read_s_units_walked_at_once_are_checked_as_one_by_one`),
    a fault now and then, cut short a time in five."""
    def noise(n: int) -> bytes:
        return bytes(rng.randrange(256) for _ in range(n))

    fault = rng.choice([0.0, 0.002, 0.02])
    units = [b"\0\0\1\xba\x21" + bytes(7)]
    for _ in range(rng.randrange(5, 400)):
        kind = rng.random()
        if kind < 0.15:
            units.append(b"\0\0\1\xba\x21" + noise(7))
        elif kind < 0.25:
            stuffing = rng.choice([0, 0, 1, 7])
            units.append(b"\0\0\1\xba\x44" + noise(8) + bytes([0xF8 | stuffing]) + b"\xff" * stuffing)
        elif kind < 0.85:
            code = rng.choice([0xBE, 0xC0, 0xC0, 0xC1, 0xE0, 0xBD, 0xBD, 0xBF, 0xBB, 0xBC, 0xFF])
            body = bytearray(noise(size := rng.choice([0, 1, 2, 3, 5, 10, 30, 300, 2000])))
            if code == 0xBD:  # a header of MPEG-1 (stuffing, buffer size, timestamps) or of MPEG-2, a substream
                header = rng.choice([b"\x0f", b"\xff\xff\x0f", b"\xff" * 300, b"\x40\x00\x0f", b"\x21" + bytes(4),
                                     b"\x31" + bytes(9), b"\x81\x80\x05" + bytes(5), b"\x81\x80\xff", b"\x40"])
                body[:0] = header + bytes([rng.choice([0x20, 0x80, 0x81, 0xA0])])
                body = body[: rng.choice([len(body), len(header), len(header) + 1, 2])]
                size = len(body)
            if size >= 8 and rng.random() < 0.3:
                at = rng.randrange(size - 4)
                body[at : at + 4] = b"\0\0\1" + bytes([rng.choice([0xBA, 0xBE, 0xC0, 0xB9])])
            units.append(b"\0\0\1" + bytes([code]) + size.to_bytes(2, "big") + bytes(body))
        elif kind < 0.97 or rng.random() > 5 * fault:
            units.append(bytes(rng.choice([1, 2, 3, 5, 100, ffmpeg_child.PADDING_BYTES]
                                           + ([ffmpeg_child.PADDING_BYTES + 1] if rng.random() < fault else []))))
        elif kind < 0.985:
            units.append(noise(1))
        else:
            units.append(rng.choice([b"\0\0\1\xb9", b"\0\0\1\x05"]))
    data = b"".join(units)
    return data[: rng.randrange(len(data))] if rng.random() < 0.2 else data


#: Run in a process of its own: the MP4 file ``argv[1]`` decoded as the child decodes it (its opening bounded by its
#: CPU time: a thread watches it), then the stack size each thread was started with and the one threads get now
#: (``threading.stack_size()`` sets it to 0 as it tells it: it is set back).
_STACKS = """
import io, sys, threading
from speech_recognizer import ffmpeg_child
started, start = [], threading.Thread.start
def counted(thread):
    started.append(threading.stack_size())
    threading.stack_size(started[-1])
    start(thread)
threading.Thread.start = counted
with open(sys.argv[1], "rb") as file:
    ffmpeg_child.decode("MP4", file, 60, False, io.BytesIO(), bounded=True)
print(*started, threading.stack_size())
"""


def test_the_watch_of_the_opening_alone_has_its_small_stack(utterances_m4a: Path) -> None:
    """The child's watch of its opening's CPU time (:data:`ffmpeg_child.OPEN_CPU_SECONDS`) is a thread of a small
    stack, in the child's limited address space; the stack size is the process's (``threading.stack_size``), and it
    was left set for every thread started after the watch. Now the watch's alone: threads after it get the default."""
    root = str(Path(ffmpeg_child.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (root, os.environ.get("PYTHONPATH"))))}
    done = subprocess.run([sys.executable, "-X", "faulthandler", "-c", _STACKS, str(utterances_m4a)], capture_output=True, text=True, timeout=120,
                          env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [str(1 << 18), "0"], done.stdout
