"""Compressed-audio bombs: refused by their header, or as soon as decoding passes MaxAudioSeconds.

A real server process (default settings but the warm-up, so its RSS is its own, and logging at Information);
each bomb goes to the REST route while a normal stream is paced at 1x real
time beside it. The answer must be a 413 naming the limit, within a bound of the server's CPU time (its collected
decoders' too), the server's peak RSS must rise less than 100 MB above the body, and the stream must
stay strictly real time.
"""

from __future__ import annotations

import functools
import subprocess
import sys
import time
import wave
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from harness.hostile_inputs import (
    adts_bomb,
    alac_m4a,
    amr_bomb,
    flac_bomb,
    mp3_bomb,
    mp4_chunked,
    mp4_compressed_header,
    mp4_declaring,
    mp4_tables_in,
    ogg_opus_bomb,
    ogg_vorbis_bomb,
    random_frame_bodies,
    webm_opus_bomb,
    webm_opus_laced,
)
from harness.server import Server, cpu_seconds
from harness.speech import Audio, make_audio
from speech_recognizer.audio import VORBIS_SETUP_MAX_BYTES, AudioError, decode
from speech_recognizer.ffmpeg_child import ALAC_MAX_FRAME_SAMPLES, MP4_MAX_BOXES, MP4_MAX_ENTRIES

from ..conftest import StreamedMp3
from ..hostile import RSS_ALLOWANCE_MB, PeakRss, assert_strict, paced_stream, real_server_for
from ..muxing import encoded_wav, in_child
from .test_transcriber import transcribe

REST = "/speech/recognition/conversation/cognitiveservices/v1?language=ko-KR"


@pytest.fixture(scope="module")
def stream_audio(tmp_path_factory: pytest.TempPathFactory) -> Audio:
    return make_audio(tmp_path_factory.mktemp("paced"))


#: The module's server logs at Information: :func:`test_a_damaged_mp3_is_one_log_line_and_nothing_from_its_decoder` reads
#: its log (a server of its own cost that test some 10 CPU s: its start, the model's load, a new recognizer's decoding).
INFORMATION = "Logging:Console:LogLevel:Default=Information"


@pytest.fixture(scope="module")
def real_server(stream_audio: Audio) -> Iterator[Server]:
    with real_server_for(stream_audio, INFORMATION) as srv:
        yield srv


BOMBS = {
    # 35 KB; STREAMINFO says 65.5 M frames x 8 channels (4,096 s): refused from the header.
    "flac": (lambda: flac_bomb(), "is 4095.9 s long"),
    # The same frames with the total "unknown" (0, which FLAC allows): refused once 60 s are decoded.
    "flac of unknown length": (lambda: flac_bomb(total_samples=0), "is longer than 60 s"),
    # 93 KB of Ogg/Opus that decodes to an hour of 48 kHz stereo (690 MB as 16-bit PCM).
    "ogg/opus": (lambda: ogg_opus_bomb(3600, channels=2), "is 3600.1 s long"),
    # 3.6 MB of silent MP3 frames (8 kbit/s, 8 kHz), an hour; its Xing header counts them: refused from the header.
    "mp3": (lambda: mp3_bomb(3600), "is 3600.0 s long"),
    # The same frames without a Xing header: its length is its frames', refused once 60 s of them are counted.
    "mp3 without a length": (lambda: mp3_bomb(3600, xing=False), "is longer than 60 s"),
    # 263 KB of WebM/Opus, an hour: FFmpeg's child decodes it, and stops (refused) once 60 s are decoded. Muxed, and
    # the AAC below encoded, by PyAV in a process of their own (tests/muxing.py).
    "webm/opus": (lambda: in_child(webm_opus_bomb, 3600), "is longer than 60 s"),
    # 65-95 KB of WebM/Opus blocks of 256 laces each (Matroska's most), each lace the 120 ms packet, an hour: Xiph-,
    # EBML- or fixed-laced (FFmpeg's demuxer splits each block into 256 packets); refused once 60 s are decoded.
    **{f"webm/opus {lacing}-laced": (lambda lacing=lacing: webm_opus_laced(3600, lacing), "is longer than 60 s")
       for lacing in ("xiph", "ebml", "fixed")},
    # 309 KB of raw AAC (ADTS, which says no length), an hour: FFmpeg's child decodes it, refused once 60 s are decoded.
    "aac": (lambda: in_child(adts_bomb, 3600), "is longer than 60 s"),
    # 180 KB of raw AMR-NB no-data frames (a byte each, 20 ms; the file says no length), an hour: refused once 60 s are
    # decoded. The same of AMR-WB (16 kHz).
    "amr": (lambda: amr_bomb(3600), "is longer than 60 s"),
    "amr-wb": (lambda: amr_bomb(3600, wide=True), "is longer than 60 s"),
}


#: The most CPU time a bomb's request may cost the server (its threads, the paced stream's recognition beside it, and the
#: FFmpeg decoder's process it collected): decoding stops at MaxAudioSeconds' 60 s, 0.01 to 0.5 s (AMR-WB's); decoded
#: to its end (an hour), it cost many times that. CPU time, not the clock's, which a loaded machine stretches (a webm/opus
#: bomb took 5.3 s at load 13).
BOMB_CPU_SECONDS = 2.0


@pytest.mark.parametrize("name", list(BOMBS))
def test_bomb_is_refused_with_bounded_memory_and_time(real_server: Server, stream_audio: Audio, name: str) -> None:
    make, says = BOMBS[name]
    body = make()
    with paced_stream(real_server, stream_audio) as stream:
        with PeakRss(real_server.pid) as rss:
            cpu = cpu_seconds(real_server.pid, children=True)
            r = httpx.post(f"{real_server.http}{REST}", content=body, headers={"Content-Type": "audio/flac"}, timeout=60)
            used = cpu_seconds(real_server.pid, children=True) - cpu
    assert r.status_code == 413, r.text
    message = r.json()["error"]["message"]
    assert says in message and "MaxAudioSeconds" in message, message
    assert used < BOMB_CPU_SECONDS, used
    assert rss.growth_mb < RSS_ALLOWANCE_MB + len(body) / 1e6, rss.growth_mb
    assert_strict(stream, stream_audio.seconds)


#: Uploads of :func:`~harness.hostile_inputs.ogg_vorbis_bomb` sent at once: the server's memory is every upload's.
VORBIS_AT_ONCE = 4


def test_ogg_vorbis_whose_codebooks_expand_to_hundreds_of_mb_is_refused_before_it_is_opened(
        real_server: Server, stream_audio: Audio) -> None:
    """Ogg/Vorbis is decoded in the server's own process (libsndfile's libvorbis), which expands a setup header's
    codebooks as it opens the file: 5 KB of them (256 x 16384 codewords x 16 values) are some 300 MB, for each
    upload at once. Refused (415, saying what to send) by its setup header before libvorbis sees it."""
    body = ogg_vorbis_bomb()
    with paced_stream(real_server, stream_audio) as stream:
        with PeakRss(real_server.pid) as rss, ThreadPoolExecutor(VORBIS_AT_ONCE) as pool:
            cpu = cpu_seconds(real_server.pid, children=True)
            answers = list(pool.map(lambda _: httpx.post(f"{real_server.http}{REST}", content=body, timeout=60,
                                                         headers={"Content-Type": "audio/ogg"}), range(VORBIS_AT_ONCE)))
            used = cpu_seconds(real_server.pid, children=True) - cpu
    for r in answers:
        assert r.status_code == 415, r.text
        assert "setup header declares codebooks" in r.json()["error"]["message"], r.text
    assert used < BOMB_CPU_SECONDS, used
    assert rss.growth_mb < RSS_ALLOWANCE_MB, rss.growth_mb
    assert_strict(stream, stream_audio.seconds)


#: The utterances' M4A (AAC) with sample tables declaring what FFmpeg's MP4 demuxer allocates for as it opens the file
#: -> (status, the reason's words). 11.18 M samples in 10 KB: FFmpeg's index of them passed the decoder's memory limit
#: and was dropped without a word, a 400 "holds no audio that can be decoded" that said nothing of why; 100 M sync
#: samples, or a compressed movie header declaring 4 GB: FFmpeg's allocation of them failed, a 502 decoder_failed (a
#: fault, an alert) for the client's file. As many samples as served are read as what they are (most are not there).
#: Millions of empty boxes (8 bytes each) were walked one by one before FFmpeg opened the file, past the opening's CPU
#: bound on a loaded machine, refused for its "tracks' codec setup"; more than MP4_MAX_BOXES are refused saying so.
#: FFmpeg reads sample tables wherever it reads boxes, for the track last begun (in its udta, edts, meta or dinf, after
#: its sample description's entry, in a movie header named hoov, in a track after a box of an invalid size): 6 M samples
#: there were not counted, and FFmpeg's index of them took the decoder 244 MB (a 400 "corrupt", or a 200).
MP4_TABLES = {
    "11.18 M samples": (lambda m4a: mp4_declaring(m4a, samples=11_180_000), 415,
                        "the MP4 file's sample tables (stsz, stz2, trun) declare 11180000 samples, more than the "
                        f"{MP4_MAX_ENTRIES} served (some 24 hours of 48 kHz AAC): send the audio as a recorder writes it"),
    "100 M sync samples": (lambda m4a: mp4_declaring(m4a, entries={b"stss": 100_000_000}), 415,
                           f"the MP4 file's stss tables declare 100000000 entries, more than the {MP4_MAX_ENTRIES} served"),
    "a compressed header of 4 GB": (lambda m4a: mp4_compressed_header(m4a, 0xFFFFFFF0), 415,
                                    "the MP4 file's movie header is compressed (QuickTime's cmov), which is not served"),
    "as many samples as served": (lambda m4a: mp4_declaring(m4a, samples=MP4_MAX_ENTRIES), 400, "the MP4 audio is "),
    "as its encoder wrote it": (lambda m4a: m4a, 200, ""),
    f"then {MP4_MAX_BOXES} empty boxes": (lambda m4a: m4a + b"\0\0\0\x08free" * MP4_MAX_BOXES, 415,
                                          f"the MP4 file has more than {MP4_MAX_BOXES} boxes (atoms), which is not served"),
    "then as many boxes as served": (lambda m4a: m4a + b"\0\0\0\x08free" * (MP4_MAX_BOXES - 100), 200, ""),
    **{f"6 M samples in {where}": (functools.partial(mp4_tables_in, samples=6_000_000, where=where), 415,
                                   "the MP4 file's sample tables (stsz, stz2, trun) declare 600")
       for where in ("udta", "edts", "meta", "dinf", "hoov", "second trak")},
    "6 M samples in stsd": (functools.partial(mp4_tables_in, samples=6_000_000, where="stsd"), 415,
                            "the MP4 file's sample description (stsd) holds a stts box, which is not served"),
}


@pytest.mark.parametrize("case", list(MP4_TABLES))
def test_an_mp4_whose_tables_declare_more_than_served_is_refused_saying_so(real_server: Server, utterances_m4a: Path,
                                                                           case: str) -> None:
    """Refused (415, saying what to send) by the counts its tables declare, before FFmpeg's demuxer opens it, in the
    decoder's process as the server runs it; a refusal within :data:`BOMB_CPU_SECONDS` of the server's CPU time, its
    decoders' with it (at the bound, FFmpeg's index of the samples declared takes 0.7 s)."""
    make, status, says = MP4_TABLES[case]
    cpu = cpu_seconds(real_server.pid, children=True)
    r = httpx.post(f"{real_server.http}{REST}", content=make(utterances_m4a.read_bytes()), timeout=60,
                   headers={"Content-Type": "audio/mp4"})
    used = cpu_seconds(real_server.pid, children=True) - cpu
    assert r.status_code == status, r.text
    if status == 200:
        assert r.json()["RecognitionStatus"] == "Success", r.text
    else:
        assert r.json()["error"]["message"].startswith(says), r.text
        assert used < BOMB_CPU_SECONDS, used  # (a 200's is its recognition's too)


#: MaxAudioSeconds -> samples an M4A's tables declare -> (status, the reason's words): a long recording's (5 M samples,
#: 30 hours of 48 kHz AAC) was refused whatever MaxAudioSeconds allowed; a few kilobytes declaring more than the
#: decoder's memory holds the index of are refused still.
_LONG_SAMPLES = {
    (60, 5_000_000): (415, "the MP4 file's sample tables (stsz, stz2, trun) declare 5000000 samples, more than the "
                           f"{MP4_MAX_ENTRIES} served (some 24 hours of 48 kHz AAC)"),
    (172800, 5_000_000): (400, "the MP4 audio is corrupt or cut short"),
    (172800, 11_180_000): (415, "the MP4 file's sample tables (stsz, stz2, trun) declare 11180000 samples, more than the "),
}


@pytest.mark.parametrize(("max_seconds", "samples"), list(_LONG_SAMPLES))
def test_the_samples_an_mp4_may_declare_follow_max_audio_seconds(utterances_m4a: Path, max_seconds: int, samples: int) -> None:
    """The decoder's process as the server runs it (audio.decode: ffmpeg.start's child) at ``MaxAudioSeconds``: past
    MP4_MAX_ENTRIES an MP4's samples are served for a longer MaxAudioSeconds (ffmpeg_child.mp4_max_entries; most of
    these are not there: FFmpeg reads the file as corrupt), as far as the child's memory holds FFmpeg's index."""
    status, says = _LONG_SAMPLES[max_seconds, samples]
    with pytest.raises(AudioError) as refused:
        decode(mp4_declaring(utterances_m4a.read_bytes(), samples=samples), "audio/mp4", max_seconds=max_seconds)
    assert (refused.value.status, str(refused.value)[: len(says)]) == (status, says), str(refused.value)


#: QuickTime movies of 16-bit PCM (48 kHz, mono; FFmpeg's muxer's) -> (seconds, the movie rewritten, the reason's words).
#: FFmpeg indexes such a track by pieces of 1024 samples of its chunks, not sample by sample: 100 s (4.8 M samples, more
#: than MP4_MAX_ENTRIES) were refused by their samples, not by their codec, which is what the sender needs to know.
#: Chunks declaring 2^30 samples each: FFmpeg indexes 2^20 pieces of each as it opens the file (six: 183 MB), of the
#: first chunk offsets table of the track (a second was counted instead: 190 MB, refused by its codec).
_PCM_CODEC = "the MP4 file's audio is PCM signed 16-bit little-endian, not aac, alac, amr_nb or amr_wb"
PCM_MOVIES = {
    "100 s": (100, lambda mov: mov, _PCM_CODEC),
    "6 chunks of 2^30 samples": (1, lambda mov: mp4_chunked(mov, 6, 1 << 30),
                                 f"the MP4 file's sample tables declare {6 << 20} samples (uncompressed sound's counted "
                                 f"in pieces of its chunks, as FFmpeg indexes it), more than the {MP4_MAX_ENTRIES} served"),
    "4 chunks of 2^30 samples": (1, lambda mov: mp4_chunked(mov, 4, 1 << 30), _PCM_CODEC),
    "6 chunks of 2^30 samples, then a table of 1 chunk": (1, lambda mov: mp4_chunked(mov, 6, 1 << 30, then=1),
                                                          f"the MP4 file's sample tables declare {6 << 20} samples"),
}


@pytest.mark.parametrize("case", list(PCM_MOVIES))
def test_a_quicktime_movie_of_pcm_is_counted_as_ffmpeg_indexes_it(real_server: Server, tmp_path: Path, case: str) -> None:
    """A movie of PCM (not served in MP4) is refused by its codec, however many samples it holds, unless FFmpeg's
    index of its chunks' pieces is more than is served (ffmpeg_child._Mp4Track.indexed), then by that, within
    :data:`BOMB_CPU_SECONDS` of the server's CPU time. As many pieces as served are read as what they are."""
    seconds, rewrite, says = PCM_MOVIES[case]
    wav = tmp_path / "pcm.wav"
    with wave.open(str(wav), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(48000)
        out.writeframes(np.random.default_rng(3).integers(-3000, 3000, 48000 * seconds, dtype=np.int16).tobytes())
    body = rewrite(in_child(encoded_wav, wav, "mov", "pcm_s16le"))
    cpu = cpu_seconds(real_server.pid, children=True)
    r = httpx.post(f"{real_server.http}{REST}", content=body, timeout=60, headers={"Content-Type": "video/quicktime"})
    used = cpu_seconds(real_server.pid, children=True) - cpu
    assert r.status_code == 415 and r.json()["error"]["message"].startswith(says), r.text
    assert used < BOMB_CPU_SECONDS, used


@pytest.mark.parametrize("frame_samples", [4096, ALAC_MAX_FRAME_SAMPLES])
def test_alac_of_the_longest_frames_served_is_heard_as_its_wav(real_server: Server, speech_wav: Path, frame_samples: int) -> None:
    """ALAC whose frames hold the most samples served (ffmpeg_child.ALAC_MAX_FRAME_SAMPLES, 16 times what encoders
    write; a real file, its frames written by hand) is decoded, its last frame shorter, as the WAV of its samples: the
    REST route's answer is the WAV's. A guard of 1b83b43's bound from the other side: only declarations past it (tried
    by a cookie's number alone) had been tried."""
    wav = speech_wav.read_bytes()
    with wave.open(str(speech_wav)) as read:
        samples = np.frombuffer(read.readframes(read.getnframes()), "<i2")
    assert len(samples) % frame_samples
    answers = [httpx.post(f"{real_server.http}{REST}", content=body, headers={"Content-Type": kind}, timeout=60)
               for body, kind in ((wav, "audio/wav"), (alac_m4a(samples, frame_samples), "audio/mp4"))]
    assert [r.status_code for r in answers] == [200, 200], [r.text for r in answers]
    assert answers[1].json()["DisplayText"] == answers[0].json()["DisplayText"] != "", [r.text for r in answers]


#: The reason an Ogg/Vorbis whose setup header is longer than served is refused with.
_LONG_SETUP = ("the Ogg/Vorbis setup header is more than 1 MB (an encoder's is under 50 KB): encode it with a standard "
               "Vorbis encoder, or send Opus, FLAC or WAV")


def test_ogg_vorbis_whose_setup_header_is_megabytes_is_refused_saying_so(real_server: Server, stream_audio: Audio) -> None:
    """An Ogg/Vorbis's setup header (libvorbis's are some 11 KB, FFmpeg's under 50) was bounded only by the pages read
    for the three headers (1024: some 66 MB; a REST body's 23 MB at MaxAudioSeconds' default): the server held it to
    read its codebooks and libvorbis read it again, in the server's own process, for an answer of no audio. Past
    audio.VORBIS_SETUP_MAX_BYTES a 415 saying so; a header of that length is read as before (a 400: no audio)."""
    long = ogg_vorbis_bomb(1, 16, 1, setup_bytes=20 << 20)
    with paced_stream(real_server, stream_audio) as stream:
        with PeakRss(real_server.pid) as rss:
            cpu = cpu_seconds(real_server.pid, children=True)
            r = httpx.post(f"{real_server.http}{REST}", content=long, headers={"Content-Type": "audio/ogg"}, timeout=60)
            used = cpu_seconds(real_server.pid, children=True) - cpu
    assert r.status_code == 415 and r.json()["error"]["message"] == _LONG_SETUP, r.text
    assert used < BOMB_CPU_SECONDS, used
    assert rss.growth_mb < RSS_ALLOWANCE_MB + len(long) / 1e6, rss.growth_mb
    assert_strict(stream, stream_audio.seconds)
    at_bound = ogg_vorbis_bomb(1, 16, 1, setup_bytes=VORBIS_SETUP_MAX_BYTES)
    r = httpx.post(f"{real_server.http}{REST}", content=at_bound, headers={"Content-Type": "audio/ogg"}, timeout=60)
    assert r.status_code == 400 and "holds no samples" in r.text, r.text


@dataclass(frozen=True)
class _RefusedOggs:
    long_setup: Path
    codebooks: Path
    done: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def refused_oggs(tmp_path_factory: pytest.TempPathFactory, speech_wav: Path) -> _RefusedOggs:
    """One run of the whole command, as a user runs it (``transcribe --format txt``), of the Ogg/Vorbis files it refuses
    saying why (a 60 MB setup header; codebooks some 300 MB to open) beside a recording it transcribes (the batch goes
    on): one run for the tests that read its lines, each run costing the model's load and a new recognizer (some 6 CPU s)."""
    folder = tmp_path_factory.mktemp("refused-oggs")
    long, small = folder / "long-setup.ogg", folder / "small-codebooks.ogg"
    long.write_bytes(ogg_vorbis_bomb(1, 16, 1, setup_bytes=60 << 20))
    small.write_bytes(ogg_vorbis_bomb())  # ~300 MB to open, not 5.5 GB
    return _RefusedOggs(long, small, transcribe(str(long), str(small), str(speech_wav), "--format", "txt"))


def test_the_transcriber_refuses_an_ogg_vorbis_setup_header_of_megabytes_saying_so(refused_oggs: _RefusedOggs) -> None:
    """The transcriber reads each file's Vorbis headers before libsndfile opens it (``audio.check_header``, to order
    its batch, then to decode it): a 60 MB setup header was held whole each time. Now its line says why, and the batch
    goes on."""
    long, done = refused_oggs.long_setup, refused_oggs.done
    assert done.returncode != 0 and done.stdout.strip(), (done.returncode, done.stdout, done.stderr)
    assert [line for line in done.stderr.splitlines() if long.name in line and _LONG_SETUP in line], done.stderr


#: Run in a process of its own under a 2 GiB address space: :func:`speech_recognizer.transcriber.plan` of the files named,
#: the names in the order planned.
_PLANNED = """
import resource, sys
from pathlib import Path
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
from speech_recognizer import transcriber
print(" ".join(path.name for path in transcriber.plan([Path(name) for name in sys.argv[1:]])[0]))
"""


def test_the_transcriber_opens_no_ogg_vorbis_header_whose_codebooks_are_refused(tmp_path: Path, speech_wav: Path,
                                                                                 refused_oggs: _RefusedOggs) -> None:
    """The file transcriber reads each file's header with libsndfile to order its batch (``transcriber.plan``), which
    opened an Ogg/Vorbis as libvorbis does, codebooks and all: 5.5 KB of them (256 x 524288 codewords x 8 values)
    declare some 5.5 GB, and under a memory limit the command ended by SIGSEGV (libvorbis does not check its
    allocations) before any file was transcribed. The header is checked first (``audio.check_header``): such a file is
    planned last, unopened, and its decoding refuses it saying why while the batch goes on."""
    bomb = tmp_path / "codebooks.ogg"
    bomb.write_bytes(ogg_vorbis_bomb(256, 524288, 8))
    planned = subprocess.run([sys.executable, "-X", "faulthandler", "-c", _PLANNED, str(bomb), str(speech_wav)], capture_output=True, text=True,
                             timeout=120)
    assert planned.returncode == 0, (planned.returncode, planned.stderr[-2000:])
    assert planned.stdout.split() == [speech_wav.name, bomb.name], planned.stdout
    small, done = refused_oggs.codebooks, refused_oggs.done  # ~300 MB to open, not 5.5 GB: the whole command, as a user runs it
    assert done.returncode != 0 and done.stdout.strip(), (done.returncode, done.stdout, done.stderr)
    assert [line for line in done.stderr.splitlines() if small.name in line and "setup header declares codebooks" in line], done.stderr


def test_wav_claiming_4_gb_is_read_for_what_it_holds(real_server: Server, speech_wav: Path) -> None:
    """A streamed WAV whose header claims nearly 4 GB: its data is what the body holds."""
    wav = bytearray(speech_wav.read_bytes())
    wav[40:44] = (0xFFFFFFF0).to_bytes(4, "little")
    r = httpx.post(f"{real_server.http}{REST}", content=bytes(wav), headers={"Content-Type": "audio/wav"}, timeout=60)
    assert r.status_code == 200 and r.json()["RecognitionStatus"] == "Success", r.text


def _overwritten(mp3: bytes) -> bytes:
    """``mp3`` with its middle half random bytes (a damaged copy), the same length."""
    quarter = len(mp3) // 4
    return mp3[:quarter] + np.random.default_rng(7).bytes(2 * quarter) + mp3[3 * quarter :]


#: MP3s made of the utterances' (and :func:`~tests.conftest.streamed_mp3`'s) -> the status and what the reason says.
DAMAGED_MP3 = {
    "its middle half random bytes": (lambda s: _overwritten(s.utterances_mp3), 400, "the MP3 is corrupt: junk at byte"),
    "junk in its middle": (lambda s: s.utterances_mp3[:3000] + b"junk" * 5000 + s.utterances_mp3[3000:], 400,
                           "the MP3 is corrupt: junk at byte"),
    "cut short": (lambda s: s.utterances_mp3[: len(s.utterances_mp3) // 2], 400, "the MP3 is cut short"),
    "junk after its end": (lambda s: s.utterances_mp3 + b"junk" * 5000, 200, ""),
    "two one after the other": (lambda s: s.joined.read_bytes(), 200, ""),
    # each frame found where the one before says, each damaged: concealed (silence), as libmpg123 conceals it
    "every frame random after its header": (lambda s: random_frame_bodies(s.utterances_mp3, np.random.default_rng(16)), 200, ""),
}


@dataclass(frozen=True)
class _Mp3s:
    utterances_mp3: bytes
    joined: Path


def test_a_damaged_mp3_is_one_log_line_and_nothing_from_its_decoder(real_server: Server, utterances_mp3: Path,
                                                                    streamed_mp3: StreamedMp3) -> None:
    """The module's real server process, logging at Information: each damaged MP3 is its answer and, besides the access log's,
    one line of the server's log for a refusal, none for an answer; nothing of libmpg123's (it writes to stderr a line for each bad frame and
    resynchronisation: "Note: Illegal Audio-MPEG-Header", "Giving up resync", "Xing stream size off", which the
    frames' walk now refuses or puts right before decoding). Before, each of these wrote 1 to 5 such lines; the MP3
    whose every frame is damaged wrote 477 ("big_values too large!", "part2_3_length ... too large"), libmpg123
    decoding it under libsndfile, which leaves its quiet flag unset."""
    mp3s = _Mp3s(utterances_mp3.read_bytes(), streamed_mp3.joined)
    srv = real_server  # the module's, logging at Information
    for name, (make, status, says) in DAMAGED_MP3.items():
        before = srv.log.read_bytes()
        r = httpx.post(f"{srv.http}{REST}", content=make(mp3s), headers={"Content-Type": "audio/mpeg"}, timeout=60)
        time.sleep(0.2)  # the log line written after the answer
        lines = [line for line in srv.log.read_bytes()[len(before) :].decode(errors="replace").splitlines()
                 if f'"POST {REST} HTTP/1.1" {status}' not in line]  # but the access log's line
        assert not [line for line in lines if " speech_recognizer." not in line], (name, lines)
        assert r.status_code == status and says in r.text, (name, r.text)
        assert len(lines) == (status != 200), (name, lines)
        assert all(" speech_recognizer.failures: " in line and says in line for line in lines), (name, lines)
