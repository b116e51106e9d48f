"""``speech-recognizer transcribe``: run as a user runs it (a subprocess of the console entry), in-process
and against a real server on loopback, on the real ko-KR model."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import io
import json
import os
import pty
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import numpy as np
import pytest
import srt

from harness.hostile_inputs import random_frame_bodies
from speech_recognizer import settings, transcriber
from speech_recognizer.results import written

from ..conftest import StreamedMp3
from ..support import READING_SECONDS, Reference, Starved, Unstarved, assert_same_answer, near_confidence, within

TICK = 1e-7


def transcribe(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """``speech-recognizer transcribe ARGS``, what it wrote as text (as ``subprocess.run(text=True)`` reads it); a run
    past ``timeout`` is killed and fails the test (:func:`finish`)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen([sys.executable, "-m", "speech_recognizer", "transcribe", *args], stdin=subprocess.DEVNULL,
                                   stdout=out, stderr=err, start_new_session=True)
        status = finish(process, timeout, err)
        out.seek(0), err.seek(0)
        return subprocess.CompletedProcess(process.args, status, out.read(), err.read())


def finish(process: subprocess.Popen[bytes], timeout: float, err: IO[Any]) -> int:
    """The status of ``process`` (a session of its own) once it ends; past ``timeout`` it is killed, its process group
    with it, and fails the test (a hang), with what it wrote on ``err``. ``timeout`` is judged in time in which the run
    (the transcriber, a wrapper of it) and this process did not wait for a CPU, or by the clock after
    :func:`~tests.support.starved_clock` of it, however starved (:meth:`~tests.support.Unstarved.beyond`): its model
    load and decoding are work that a loaded machine stretches by the clock, while a run that hangs idles, each of its
    seconds counted."""
    with contextlib.closing(Unstarved(descendants=True)) as stopwatch:
        while (status := process.poll()) is None:
            if stopwatch.beyond(timeout):
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                err.seek(0)
                pytest.fail(f"still running after {timeout} s ({stopwatch}; killed): {err.read()!r}")
            time.sleep(READING_SECONDS)
    return status


def words_of(body: dict) -> list[tuple[str, float, float]]:
    return [(w["Word"], w["Offset"] * TICK, (w["Offset"] + w["Duration"]) * TICK) for w in body["NBest"][0]["Words"]]


#: The formats of :func:`in_process`'s run.
WRITTEN = ("srt", "vtt", "txt", "json")

#: Runs ``speech-recognizer transcribe ARGV[2:]`` as its console entry does, counting the work done on each file, which
#: it writes to the file ``argv[1]`` as JSON before the process ends: the files decoded from their container
#: (``audio.decode_stream``), the recognitions opened on the engine for them, and the PCM bytes fed to those recognitions.
_COUNTED = """
import json, sys
from speech_recognizer import audio, cli, engine, session
counts, written = {"decoded": 0, "recognitions": 0, "fed": 0}, sys.argv[1]
decode, recognition, feed, end_now = audio.decode_stream, engine.Engine.session, session.Session.feed_many_ahead, cli.end_now
def counted_decode(*args, **kwargs):
    counts["decoded"] += 1
    return decode(*args, **kwargs)
def counted_recognition(self, *args, **kwargs):
    counts["recognitions"] += kwargs.get("route") == "transcribe"
    return recognition(self, *args, **kwargs)
def counted_feed(self, pieces):
    counts["fed"] += sum(map(len, pieces))
    return feed(self, pieces)
def counted_end(status):
    open(written, "w").write(json.dumps(counts))
    end_now(status)
audio.decode_stream, engine.Engine.session, session.Session.feed_many_ahead, cli.end_now = counted_decode, counted_recognition, counted_feed, counted_end
sys.argv = ["speech-recognizer", "transcribe", *sys.argv[2:]]
cli.main()
"""


@dataclass
class Counted:
    """:func:`in_process`'s run: where it wrote, what it said and the work it counted (:data:`_COUNTED`)."""

    here: Path
    run: subprocess.CompletedProcess[str]
    counts: dict[str, int]


@pytest.fixture(scope="module")
def in_process(utterances_wav: Path, tmp_path_factory: pytest.TempPathFactory) -> Counted:
    """``transcribe --format srt,vtt,txt,json --output-dir HERE utterances.wav`` in-process, stderr a pipe, its work
    counted: one run (and one model load) for every test that reads its transcripts."""
    here = tmp_path_factory.mktemp("here")
    counts = here / "counts.json"
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen([sys.executable, "-X", "faulthandler", "-c", _COUNTED, str(counts), "--format", ",".join(WRITTEN), "--output-dir",
                                    str(here), str(utterances_wav)], stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True)
        status = finish(process, 240, err)
        out.seek(0), err.seek(0)
        run = subprocess.CompletedProcess(process.args, status, out.read(), err.read())
    return Counted(here, run, json.loads(counts.read_text()))


def test_in_process_json_matches_in_process_vosk_and_the_server_gives_the_same(
        fresh_server, utterances_wav: Path, utterances_ref: Reference, in_process: Counted) -> None:
    assert in_process.run.returncode == 0, in_process.run.stderr
    body = json.loads((in_process.here / "utterances.json").read_text())
    assert body["File"] == str(utterances_wav)
    assert body["NBest"][0]["Lexical"] == " ".join(utterances_ref.texts)
    utterances_ref.assert_words_match(words_of(body))
    words = [w for p in utterances_ref.phrases for w in p.words]  # its Words carry no confidence: their mean does
    assert body["NBest"][0]["Confidence"] == round(sum(w.confidence for w in words) / len(words), 6)

    there = transcribe("--format", "json", "--server", fresh_server.http, str(utterances_wav))
    assert there.returncode == 0, there.stderr
    remote = json.loads(there.stdout)
    assert remote["NBest"][0]["Lexical"] == body["NBest"][0]["Lexical"]
    assert near_confidence(remote["NBest"][0]["Confidence"], body["NBest"][0]["Confidence"]), "as every served confidence is compared (fresh_server: a new recognizer, so in fact exact)"
    utterances_ref.assert_words_match(words_of(remote))


def served(server, route: str) -> tuple[float, float]:
    """The server's count of answered requests on ``route`` and of the seconds of audio it recognized there (its /metrics)."""
    from prometheus_client.parser import text_string_to_metric_families

    samples = [s for family in text_string_to_metric_families(httpx.get(f"{server.http}/metrics").text) for s in family.samples
               if s.labels.get("route") == route]
    return (sum(s.value for s in samples if s.name == "speech_requests_total" and s.labels["status"] == "200"),
            sum(s.value for s in samples if s.name == "speech_audio_seconds_total"))


def test_subtitles_and_text_in_process_equal_the_servers(fresh_server, utterances_wav: Path, utterances_ref: Reference,
                                                          in_process: Counted, tmp_path: Path) -> None:
    """Every format at once, in one run each: in-process and through the server, the same files, the server's own
    subtitles; each from one decoding of the file (in-process: decoded and recognized once, its PCM fed once whatever
    the number of formats; through the server: one request, the file's seconds recognized once)."""
    here, run = in_process.here, in_process.run
    pcm = wave.open(str(utterances_wav)).getnframes() * 2
    assert in_process.counts == {"decoded": 1, "recognitions": 1, "fed": pcm}, "one decoding for four formats"
    before = served(fresh_server, "rest-conversation")
    there = run_cli("--format", "srt,vtt", "-f", "txt", "--format", "json", "--output-dir", str(tmp_path / "there"), "--server", fresh_server.http,
                    str(utterances_wav))
    answered, seconds = (now - then for now, then in zip(served(fresh_server, "rest-conversation"), before, strict=True))
    assert (answered, round(seconds, 2)) == (1, round(pcm / 32000, 2)), "one request for four formats"
    assert run.returncode == there.status == 0, (run.stderr, there.err)
    assert run.stdout == there.out.decode() == "", "with --output-dir nothing goes to stdout"
    for fmt in WRITTEN:
        mine, theirs = (here / f"utterances.{fmt}").read_text(), (tmp_path / "there" / f"utterances.{fmt}").read_text()
        if fmt == "json":  # its confidences as every served one is compared (support.CONFIDENCE_TOLERANCE; a new recognizer here)
            assert_same_answer(json.loads(theirs), json.loads(mine))
        else:
            assert mine == theirs, fmt
    for fmt in ("srt", "vtt"):  # rendered by the transcriber from the answer's phrases: as the route renders its own
        answer = httpx.post(f"{fresh_server.http}/speech/recognition/conversation/cognitiveservices/v1", params={"format": fmt},
                            content=utterances_wav.read_bytes(), headers={"Content-Type": "audio/wav"}, timeout=60)
        assert (here / f"utterances.{fmt}").read_text() == answer.text + ("" if answer.text.endswith("\n") else "\n"), fmt
    cues = list(srt.parse((here / "utterances.srt").read_text()))
    assert [c.content for c in cues] == [written(t) for t in utterances_ref.texts], "one cue per utterance (each fits a line)"
    first_word = utterances_ref.phrases[0].words[0]
    assert abs(cues[0].start.total_seconds() - first_word.start) < 0.001
    assert (here / "utterances.txt").read_text().strip().rstrip(".") == " ".join(written(t) for t in utterances_ref.texts)


@dataclass
class Ran:
    """A finished run of the console entry: its status, output (bytes: it must be UTF-8 whatever the names) and peak memory."""

    status: int
    out: bytes
    err: bytes
    max_rss: int

    @property
    def errors(self) -> list[str]:
        return self.err.decode("utf-8").splitlines()


#: Runs ``argv[2:]``, writes its peak memory (bytes) to the file ``argv[1]`` and ends with its status. A child of
#: this small process, it is counted alone: a child of the test process would count the test's own memory too (the
#: kernel's peak of a fork includes what it shared with its parent before exec: 650 MiB with the model loaded).
_PEAK = ("import resource, subprocess, sys; status = subprocess.call(sys.argv[2:], close_fds=False); "
         "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)); "
         "sys.exit(status if status >= 0 else 128 - status)")


def run_cli(*args: str, prefix: Sequence[str] = (), pass_fds: Sequence[int] = (), cwd: Path | None = None,
            timeout: float = 240, stdin: int = subprocess.DEVNULL) -> Ran:
    """``speech-recognizer transcribe ARGS`` as a user runs it, with stdout strict UTF-8 as Python makes it under
    a UTF-8 locale other than C (this machine's C.UTF-8 would let any byte through); a run past ``timeout`` is
    killed and fails the test (a hang: :func:`finish`)."""
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict"}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile("r") as peak:
        process = subprocess.Popen([*prefix, sys.executable, "-c", _PEAK, peak.name, sys.executable, "-X", "faulthandler", "-m", "speech_recognizer", "transcribe",
                                    *args], stdin=stdin, stdout=out, stderr=err, pass_fds=pass_fds, cwd=cwd, env=env,
                                   start_new_session=True)
        status = finish(process, timeout, err)
        out.seek(0), err.seek(0)
        return Ran(status, out.read(), err.read(), int(peak.read()))


def as_a_user() -> list[str]:
    """What runs a command subject to file permissions: as root (which ignores them), root without the
    capabilities that override them (util-linux's setpriv; CI installs it)."""
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []


NON_UTF8 = os.fsdecode(b"bad\xff.wav")  # a name from another system's encoding: Python holds the byte as a surrogate
NEWLINE = "new\nline.wav"


def what_a_disk_holds(tmp_path: Path, speech_wav: Path) -> Path:
    """``tmp_path/in``: audio (``a.wav``, ``sub/b.wav``, two of hostile names), and what a folder of a user's disk also
    holds: not audio (``notes.txt``, ``broken.wav``), a named pipe nobody writes to, a dangling link, a link to itself,
    a link to its parent folder (a loop), an empty file, a folder nobody may read (``locked``); beside it ``fifo.wav``, a
    named pipe nobody writes to, and ``sparse.wav``, a WAV header saying 2 GB and a sparse 2 GB behind it."""
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    for name in ("a.wav", "sub/b.wav", NON_UTF8, NEWLINE):
        shutil.copy(speech_wav, folder / name)  # what is found and where it goes, not what is said, is at stake
    (folder / "notes.txt").write_text("not audio, and not picked from a folder")
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    os.mkfifo(folder / "pipe.wav")
    (folder / "dangling.wav").symlink_to("nowhere.wav")
    (folder / "self.wav").symlink_to("self.wav")
    (folder / "up").symlink_to("..")
    (folder / "empty.wav").touch()
    (folder / "locked").mkdir()
    shutil.copy(speech_wav, folder / "locked" / "x.wav")
    (folder / "locked").chmod(0)
    os.mkfifo(tmp_path / "fifo.wav")
    size = 2 << 30
    with open(tmp_path / "sparse.wav", "wb") as sparse:
        sparse.write(b"RIFF" + struct.pack("<I", size + 36) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16)
                     + b"data" + struct.pack("<I", size))
        sparse.truncate(size + 44)
    return folder


#: What a run on :func:`what_a_disk_holds` says on stderr, by the name each line starts with (in-process and through a server).
DISK_ERRORS = {
    "in/broken.wav": "WAV",
    "in/locked": "cannot read the folder: Permission denied",
    "in/pipe.wav": "a named pipe (FIFO): skipped",
    "in/dangling.wav": "a symbolic link to nothing: skipped",
    "in/self.wav": "Too many levels of symbolic links: skipped",
    "in/empty.wav": "the file is empty",
    "fifo.wav": "the file is empty (a named pipe nobody writes to)",
    "sparse.wav": "the file is 2147483692 bytes: more than 1985580 bytes, 60 s (--max-seconds) of this WAV's 16000 Hz, 1-channel",
    "/dev/zero": "the file is not WAV, Ogg, FLAC, MP3, WebM, MP4, AAC, AMR or MPEG-PS audio",
}


def feed(pipe: int, data: bytes, then_zeros: int = 0) -> threading.Thread:
    """A writer of ``data`` (then as many zeros) into the pipe ``pipe``, closed at the end or when its reader leaves."""

    def write() -> None:
        with contextlib.suppress(BrokenPipeError), open(pipe, "wb") as w:
            w.write(data)
            for _ in range(then_zeros >> 16):
                w.write(bytes(1 << 16))

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


def check_disk_errors(ran: Ran, tmp_path: Path, more: dict[str, str]) -> None:
    """Each entry of :data:`DISK_ERRORS` and ``more`` is one line on stderr saying why, and nothing else is."""
    expected = {**{str(tmp_path / k) if not k.startswith("/") else k: v for k, v in DISK_ERRORS.items()}, **more}
    said = {}
    for line in ran.errors:
        assert line.startswith("speech-recognizer transcribe: "), line
        name = next((n for n in expected if line.startswith(f"speech-recognizer transcribe: {n}: ")), None)
        assert name is not None and name not in said, f"unexpected, or said twice: {line}"
        said[name] = line
    assert said.keys() == expected.keys(), set(expected) ^ set(said)
    for name, why in expected.items():
        assert why in said[name], said[name]


def test_folders_and_globs_and_a_bad_file_that_does_not_stop_the_batch(speech_wav: Path, tmp_path: Path) -> None:
    """Folders, globs, pipes named as files, and all of :func:`what_a_disk_holds` in one in-process run: nothing hangs
    (the pipes had: reading a header of each file first waited for a writer forever), every file that is not transcribed
    is one line saying why, names with a newline or a byte that is not UTF-8 come out escaped on one line (they had ended
    the batch with UnicodeEncodeError), a 2 GB file is refused by its size (it had been read whole: 2.6 GB of memory),
    ``/dev/zero`` after 64 KiB (it had been read until memory ran out), and a pipe that streams a WAV on and on at
    ``--max-seconds`` of its audio. A pipe named as a file with audio in it (``<(sox …)``) is read, once (its header
    was read first to sort the files, and the rest then was not audio); so is ``-``, the standard input (a pipe here).
    Costs one model load (as before) and ~2 s."""
    folder = what_a_disk_holds(tmp_path, speech_wav)
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(speech_wav, other / "c.wav")
    audio_in, audio_out = os.pipe()
    endless_in, endless_out = os.pipe()
    stdin_in, stdin_out = os.pipe()
    streamed = b"RIFF\xff\xff\xff\xffWAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16) + b"data\xff\xff\xff\xff"
    writers = [feed(audio_out, speech_wav.read_bytes()), feed(endless_out, streamed, then_zeros=64 << 20), feed(stdin_out, speech_wav.read_bytes())]
    try:
        done = run_cli("--max-seconds", "60", "--jobs", "2", str(folder), str(other / "*.wav"), str(tmp_path / "missing.wav"), str(tmp_path / "nothing*.wav"),
                       str(tmp_path / "fifo.wav"), str(tmp_path / "sparse.wav"), "/dev/zero", f"/dev/fd/{audio_in}", f"/dev/fd/{endless_in}", "-",
                       prefix=as_a_user(), pass_fds=(audio_in, endless_in), stdin=stdin_in)
    finally:
        for fd in (audio_in, endless_in, stdin_in):
            os.close(fd)
        for writer in writers:
            writer.join(10)
    assert done.status == 1, "files failed: the status says so"
    assert b"Traceback" not in done.err, done.err.decode(errors="replace")
    check_disk_errors(done, tmp_path, {str(tmp_path / "missing.wav"): "no such file or folder", str(tmp_path / "nothing*.wav"): "no file matches",
                                      f"/dev/fd/{endless_in}": "the file goes on: more than 1985580 bytes, 60 s (--max-seconds)"})
    headers = [line for line in done.out.decode("utf-8").splitlines() if line.startswith("==> ")]
    assert headers == [f"==> {folder / 'a.wav'} <==", f"==> {folder}/bad\\xff.wav <==", f"==> {folder}/new\\nline.wav <==",
                       f"==> {folder / 'sub' / 'b.wav'} <==", f"==> {other / 'c.wav'} <==", f"==> /dev/fd/{audio_in} <==", "==> /dev/stdin <=="]
    texts = done.out.decode("utf-8").split("==> ")[1:]
    assert len({t.split("\n", 1)[1] for t in texts}) == 1, f"the same speech, the same words, the pipe's too: {texts}"
    assert done.max_rss < 1 << 30, f"{done.max_rss >> 20} MiB: files are read within their bound, not whole"  # 2 jobs: 649 MiB measured

    shutil.copy(speech_wav, other / "a.wav")  # the same name as folder/a.wav
    into = transcribe("--format", "vtt", "--output-dir", str(tmp_path / "out"), str(folder / "a.wav"), str(folder / "sub"), str(other))
    assert into.returncode == 0, into.stderr
    written = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert written == ["in/a.vtt", "in/sub/b.vtt", "other/a.vtt", "other/c.vtt"], "each in its folder, none overwritten"


def test_through_a_server_what_a_disk_holds_and_names_in_json(server, speech_wav: Path, tmp_path: Path) -> None:
    """:func:`what_a_disk_holds` through a server (``--server``), as JSON on stdout: the same one line for each file
    not transcribed, no hang; the same file named twice (by its path in the folder given, and relative to the working
    folder) is transcribed once; a name that is not UTF-8 is a JSON escape in ``File`` that reads back as the name Python
    gives the file (it had ended the batch with UnicodeEncodeError). ~2 s, no model load."""
    folder = what_a_disk_holds(tmp_path, speech_wav)
    done = run_cli("--server", server.http, "--format", "json", "--max-seconds", "60", str(folder), "in/a.wav", str(tmp_path / "fifo.wav"),
                   str(tmp_path / "sparse.wav"), "/dev/zero", prefix=as_a_user(), cwd=tmp_path)
    assert done.status == 1
    assert b"Traceback" not in done.err, done.err.decode(errors="replace")
    check_disk_errors(done, tmp_path, {})
    files = [json.loads(line)["File"] for line in done.out.decode("utf-8").splitlines()]
    assert files == [str(folder / "a.wav"), str(folder / NON_UTF8), str(folder / NEWLINE), str(folder / "sub" / "b.wav")]
    assert b"\\udcff" in done.out, "the byte as the JSON escape of its surrogate"


def test_an_mp3_in_a_folder_in_process_and_through_a_server(server, utterances_mp3: Path, utterances_mp3_ref: Reference,
                                                             tmp_path: Path) -> None:
    """A folder holding an MP3 (what people who run the transcriber arrive with) is searched for it, and the MP3
    transcribed in-process and through a server: the words and times in-process Vosk hears in the PCM soundfile
    decodes the same file to (the server's confidence within the tolerance of a pooled recognizer's). The folder
    had given nothing (``.mp3`` was no audio suffix), and the file named alone was "not WAV, Ogg or FLAC audio"."""
    folder = tmp_path / "recordings"
    folder.mkdir()
    shutil.copy(utterances_mp3, folder / "interview.mp3")
    (folder / "notes.txt").write_text("not audio")
    words = [w for p in utterances_mp3_ref.phrases for w in p.words]
    for where in ((), ("--server", server.http)):
        done = transcribe("--format", "json", *where, str(folder))
        assert done.returncode == 0, (where, done.stderr)
        body = json.loads(done.stdout)
        assert body["File"] == str(folder / "interview.mp3")
        assert body["NBest"][0]["Lexical"] == " ".join(utterances_mp3_ref.texts)
        utterances_mp3_ref.assert_words_match(words_of(body))
        assert near_confidence(body["NBest"][0]["Confidence"], sum(w.confidence for w in words) / len(words)), where


def test_mp3s_whose_decoder_length_is_not_theirs_are_transcribed_to_their_end(server, streamed_mp3: StreamedMp3,
                                                                             streamed_mp3_refs: dict[str, Reference]) -> None:
    """The two MP3s of :func:`~tests.conftest.streamed_mp3` (a variable bit rate no Xing/Info header counts; two MP3s
    one after the other), named, in-process (decoded from the file as it is read) and through a server: the words
    and times of all three utterances, as in-process Vosk hears them in the PCM each decodes to. They had been
    transcribed to 2.8 s of 13.1 and to the half second of silence, without an error."""
    for where in ((), ("--server", server.http)):
        done = transcribe("--format", "json", *where, str(streamed_mp3.headerless), str(streamed_mp3.joined))
        assert done.returncode == 0, (where, done.stderr)
        for line in done.stdout.splitlines():
            body = json.loads(line)
            ref = streamed_mp3_refs[Path(body["File"]).name]
            assert len(ref.phrases) == 3 and body["NBest"][0]["Lexical"] == " ".join(ref.texts), (where, body["File"])
            ref.assert_words_match(words_of(body))


def test_an_mp3_whose_every_frame_is_damaged_writes_nothing_to_stderr_in_process(utterances_mp3: Path, tmp_path: Path) -> None:
    """The utterances' MP3 with every frame's body random after its header (the frames found, each damaged),
    transcribed in-process from the file: a transcript of what its decoder conceals them to, and nothing on stderr.
    libmpg123, decoding it under libsndfile (which leaves its quiet flag unset), wrote 477 lines there
    ("big_values too large!", "part2_3_length ... too large for available bit count")."""
    damaged = tmp_path / "damaged.mp3"
    damaged.write_bytes(random_frame_bodies(utterances_mp3.read_bytes(), np.random.default_rng(16)))
    done = transcribe("--format", "json", str(damaged))
    assert done.returncode == 0 and json.loads(done.stdout)["File"] == str(damaged), done.stdout
    assert done.stderr == "", done.stderr[:500]


def test_an_output_folder_that_refuses_a_file_fails_that_file_alone(server, speech_wav: Path, tmp_path: Path) -> None:
    """``--output-dir`` where one sub-folder is read-only: that file is one line and the status 1, the others are
    written, an older transcript is replaced, no ``.part`` is left (the write error had ended the batch: status 2);
    an ``--output-dir`` that cannot be made is one line and status 2 (it had been a traceback). ~2 s, no model load."""
    for name in ("a.wav", "sub/b.wav", "c.wav"):
        (tmp_path / "in" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(speech_wav, tmp_path / "in" / name)
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "sub").chmod(0o555)
    (out / "a.txt").write_text("an older transcript\n")
    done = run_cli("--server", server.http, "--output-dir", str(out), str(tmp_path / "in"), prefix=as_a_user())
    assert done.status == 1
    assert done.errors == [f"speech-recognizer transcribe: {tmp_path / 'in/sub/b.wav'}: cannot write {out / 'sub/b.txt'}: Permission denied"]
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == ["a.txt", "c.txt", "sub"]
    assert (out / "a.txt").read_text() == (out / "c.txt").read_text() != "an older transcript\n"

    nowhere = run_cli("--output-dir", "/dev/null/out", str(speech_wav))
    assert (nowhere.status, nowhere.errors) == (2, ["speech-recognizer transcribe: --output-dir /dev/null/out: Not a directory"])


def _as_at_a_terminal() -> None:
    """SIGINT as a terminal's foreground command has it (Ctrl-C reaches it): a shell starts what it runs in the
    background (``cmd &``, a CI runner's job so started) with SIGINT ignored, the test and its children too, and a
    Python whose SIGINT is ignored at its start raises no KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_mid_batch_is_one_line_and_130_and_leaves_no_half_file(server, speech_wav: Path, tmp_path: Path) -> None:
    """Ctrl-C while one file is done and another is being read from a pipe whose writer has gone quiet (``<(slow)``):
    one line, status 130 at once, the done transcript whole and nothing for the other, not even a ``.part``. It had
    been a KeyboardInterrupt traceback, after waiting for the thread reading the pipe: until its writer ended. ~2 s."""
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    shutil.copy(speech_wav, folder / "done.wav")
    os.mkfifo(folder / "live.wav")  # named as a file: read; opened here read-write, so a writer holds it from the start
    with open(os.open(folder / "live.wav", os.O_RDWR), "wb") as quiet:
        quiet.write(speech_wav.read_bytes()[:4096])  # a header and a little audio, then nothing while the writer lives
        quiet.flush()
        process = subprocess.Popen([sys.executable, "-m", "speech_recognizer", "transcribe", "--server", server.http, "--jobs", "2",
                                    "--output-dir", str(out), str(folder / "done.wav"), str(folder / "live.wav")],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   preexec_fn=_as_at_a_terminal)
        within(120, lambda: (out / "done.txt").exists() or process.poll() is not None, "done.txt")  # a file appearing: polled
        assert process.poll() is None, process.communicate()
        with Starved() as starved:  # the transcriber's stop, in time it and this process did not wait for a CPU
            process.send_signal(signal.SIGINT)
            try:
                stdout, stderr = process.communicate(timeout=60)  # a hang guard, by the clock
            finally:
                process.kill()
    assert (process.returncode, stderr, stdout) == (130, b"speech-recognizer transcribe: interrupted\n", b"")
    assert starved.seconds < 5, f"{starved} after Ctrl-C"
    assert sorted(p.name for p in out.iterdir()) == ["done.txt"]
    assert (out / "done.txt").read_text().strip()


def test_a_progress_bar_on_a_terminal_and_none_when_piped(utterances_wav: Path, in_process: Counted) -> None:
    here, piped = in_process.here, in_process.run  # stderr piped there
    assert piped.returncode == 0 and piped.stderr == "", piped.stderr

    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))  # a terminal has a size
    process = subprocess.Popen([sys.executable, "-m", "speech_recognizer", "transcribe", str(utterances_wav)],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=terminal)
    os.close(terminal)
    drawn = b""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 1.0)
        if ready:
            try:
                piece = os.read(controller, 4096)
            except OSError:  # the terminal closed: the program ended
                break
            if not piece:
                break
            drawn += piece
        elif process.poll() is not None:
            break
    os.close(controller)
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 0
    screen = drawn.decode(errors="replace")
    assert "utterances.wav:" in screen and "%|" in screen and " s [" in screen, screen
    assert out.decode() == (here / "utterances.txt").read_text(), "the same transcript on stdout"


def test_arguments_and_models_that_cannot_work_are_one_line_each(speech_wav: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert transcriber.main(["--language", "xx-XX", str(speech_wav)], stdout=out, stderr=err) == 2
    assert "no model for xx-XX" in err.getvalue() and len(err.getvalue().strip().splitlines()) == 1
    out, err = io.StringIO(), io.StringIO()
    assert transcriber.main(["--jobs", "0", "x.wav"], stdout=out, stderr=err) == 2
    for several in (["--format", "srt,json"], ["-f", "srt", "--format", "json"]):  # to stdout, files would run into each other
        out, err = io.StringIO(), io.StringIO()
        assert transcriber.main([*several, str(speech_wav)], stdout=out, stderr=err) == 2
        assert err.getvalue() == ("speech-recognizer transcribe: several formats (srt,json) need --output-dir, where each file's "
                                  "transcripts are written one a format (NAME.srt, NAME.vtt, ...)\n")
        assert out.getvalue() == ""


def test_the_default_jobs_are_the_cores_the_recognizer_counts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--jobs``'s default is the count the recognizer's own defaults take (settings.container_cores, as
    ``Settings.resources()``): the CPUs it may run on, within its cgroup's CPU quota and the
    ``Container__CpuLimitMillicores`` a pod passes, so a Job with ``limits.cpu: 1`` on a 32-core node whose kubelet
    does not enforce CPU limits (no quota in its cgroup) runs 1 file at a time, not 32. It had counted the cgroup alone."""
    unenforced, quota = tmp_path / "unenforced", tmp_path / "quota"
    for cgroup, cpu_max in ((unenforced, "max"), (quota, "150000")):  # the kubelet's quota of limits.cpu 1500m
        cgroup.mkdir()
        (cgroup / "cpu.max").write_text(f"{cpu_max} 100000\n")
    told = {"Container__CpuLimitMillicores": "1000"}
    assert settings.container_cores({}, unenforced, affinity=32) == 32
    assert settings.container_cores(told, unenforced, affinity=32) == 1
    assert settings.container_cores({}, quota, affinity=32) == 2 == settings.container_cores({}, quota, affinity=2)
    assert settings.container_cores({"Container__CpuLimitMillicores": "4000"}, quota, affinity=32) == 2
    assert settings.container_cores(told, quota, affinity=32) == 1 == settings.container_cores({}, unenforced, affinity=1)
    for environ in ({}, told, {"Container__CpuLimitMillicores": "4000"}):
        assert settings.container_cores(environ, unenforced, affinity=32) == settings.parse([], environ).resources(
            unenforced, affinity=32).cores, environ
    # This process's own count: the CPUs it runs on here (2 on CI), 1 once the pod's limit says so.
    monkeypatch.setenv("Container__CpuLimitMillicores", "1000")
    assert transcriber.parser().parse_args(["x.wav"]).jobs == 1
    assert "here 1)" in " ".join(transcriber.parser().format_help().split())
    monkeypatch.delenv("Container__CpuLimitMillicores")
    assert transcriber.parser().parse_args(["x.wav"]).jobs == settings.parse([], {}).resources().cores
    monkeypatch.setenv("Container__CpuLimitMillicores", "one")
    out, err = io.StringIO(), io.StringIO()
    assert transcriber.main(["x.wav"], stdout=out, stderr=err) == 2
    assert err.getvalue() == "speech-recognizer transcribe: Container:CpuLimitMillicores='one' is not a number\n"
    monkeypatch.setenv("Container__CpuLimitMillicores", "1000")
    monkeypatch.setenv("DecoderMaxCount", "many")  # a setting the transcriber does not use does not stop it
    assert transcriber.parser().parse_args(["x.wav"]).jobs == 1


@pytest.mark.unit
@pytest.mark.parametrize("seconds", ["0", "-5", "inf", "nan"])
def test_a_max_seconds_that_is_no_length_is_one_line_and_status_2(tmp_path: Path, seconds: str) -> None:
    """``--max-seconds`` 0, negative, ``inf`` or ``nan`` is refused before anything starts, as ``--jobs 0`` is. It had been
    taken: each file then failed on its own line, status 1 ("more than -21480 bytes, -5 s (--max-seconds)" for a file of
    any length; ``OverflowError: cannot convert float infinity to integer``). Unit: no model, no server reached."""
    wav = _silence(tmp_path / "a.wav", 0.5)
    out, err = io.StringIO(), io.StringIO()
    assert transcriber.main(["--max-seconds", seconds, "--server", "http://127.0.0.1:9", str(wav)], stdout=out, stderr=err) == 2
    assert err.getvalue() == f"speech-recognizer transcribe: --max-seconds must be a number of seconds above 0 (not {float(seconds):g})\n"
    assert out.getvalue() == ""


def _silence(path: Path, seconds: float) -> Path:
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000), w.writeframes(bytes(int(32000 * seconds)))
    return path


@pytest.mark.unit
def test_files_start_longest_first_and_unreadable_ones_last(tmp_path: Path) -> None:
    short, long_, middle, twin = (_silence(tmp_path / f"{n}.wav", s) for n, s in (("short", 1), ("long", 3), ("middle", 2), ("twin", 2)))
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    assert transcriber.plan([broken, short, long_, middle, twin]) == ([long_, middle, twin, short, broken], None)


@pytest.mark.unit
def test_the_readme_names_every_suffix_a_folder_is_searched_for() -> None:
    """README, Transcribe files: "folders (every `.wav`, ... below)" lists :data:`transcriber.AUDIO_SUFFIXES`
    (it had left out ``.wave``)."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    listed = re.search(r"folders \(every ((?:`\.\w+`(?:, )?)+) below\)", readme)
    assert listed, "README no longer says which files a folder is searched for"
    assert set(re.findall(r"`(\.\w+)`", listed.group(1))) == set(transcriber.AUDIO_SUFFIXES)


@pytest.mark.unit
def test_a_folder_gives_videos_and_openai_s_mpga_too(tmp_path: Path) -> None:
    """A folder's screen recordings (``.mkv``), phone videos (``.mov``), Matroska audio (``.mka``) and MP3s named as
    OpenAI names them (``.mpga``) are found (they were passed over without a word); what is no media is not."""
    for name in ("a.mkv", "b.MOV", "c.mka", "d.mpga", "notes.txt"):
        (tmp_path / name).touch()
    files, errors = transcriber.expand([str(tmp_path)])
    assert [f.name for f in files] == ["a.mkv", "b.MOV", "c.mka", "d.mpga"] and not errors


@pytest.mark.unit
def test_a_link_and_what_it_names_are_two_transcripts_where_they_are_named(tmp_path: Path) -> None:
    """``--output-dir`` names a transcript by the path given, not the one a link leads to: ``take.wav`` and ``latest.wav``
    (a link to it) are two files in the output (both had been ``take.txt``, the second written over the first)."""
    (tmp_path / "take.wav").touch()
    (tmp_path / "latest.wav").symlink_to("take.wav")
    names = transcriber.output_names([tmp_path / "take.wav", tmp_path / "latest.wav"], "txt")
    assert names == {tmp_path / "take.wav": Path("take.txt"), tmp_path / "latest.wav": Path("latest.txt")}


@pytest.mark.unit
def test_a_glob_s_double_star_goes_through_no_link_to_a_folder(tmp_path: Path) -> None:
    """README's ``'recordings/**/*.wav'`` finds what a shell's ``**`` (bash's globstar) finds: the files below, a link to a
    file, and nothing through a link to a folder, as the folder ``recordings`` searched. Python's ``glob.glob`` follows
    those links: ``loop -> .`` gave each file 40 times more (``loop/a.wav``, ``loop/loop/a.wav``, ... to the kernel's 40
    links in a path), each transcribed and written again, and ``old`` took another folder's files; with a second loop
    (``more/up -> ..``) the paths to go through were without end: no answer in 60 s, measured by hand (not here: the old
    code would hang this test). What the pattern names before its first wildcard is followed, as a folder named is; a
    dot name is matched as before (by a pattern that begins with a dot only). Unit: no model."""
    folder, elsewhere = tmp_path / "recordings", tmp_path / "archive"
    (folder / "more").mkdir(parents=True)
    elsewhere.mkdir()
    for name in ("recordings/a.wav", "recordings/more/b.wav", "recordings/.x.wav", "archive/c.wav"):
        (tmp_path / name).touch()
    (folder / "latest.wav").symlink_to("a.wav")
    (folder / "loop").symlink_to(".")
    (folder / "old").symlink_to(elsewhere)
    (tmp_path / "named").symlink_to(folder)
    below = [folder / "a.wav", folder / "latest.wav", folder / "more" / "b.wav"]
    assert transcriber.expand([str(folder)]) == ([folder / ".x.wav", *below], [])
    assert transcriber.expand([f"{folder}/**/*.wav"]) == (below, [])
    assert transcriber.expand([f"{tmp_path}/named/**/*.wav"]) == ([tmp_path / "named" / p.relative_to(folder) for p in below], [])
    assert transcriber.expand([f"{folder}/**/.*.wav", f"{folder}/a**.wav"]) == ([folder / ".x.wav", folder / "a.wav"], [])


class _Recorded:
    """A stand-in backend that records the order files start in (the scheduling under test needs no model)."""

    def __init__(self) -> None:
        self.started: list[str] = []

    async def transcribe(self, path: Path, formats: Sequence[str], profanity: object, progress: object) -> dict[str, str]:
        self.started.append(path.name)
        await asyncio.sleep(0.01 * len(self.started))
        if path.name == "bad.wav":
            raise transcriber.FileError("not audio")
        return {fmt: f"text of {path.stem}" for fmt in formats}


@pytest.mark.unit
def test_files_whose_names_differ_only_in_their_suffix_keep_it_in_their_transcripts(tmp_path: Path) -> None:
    """``a.wav`` and ``a.flac`` in one folder (a recording kept in two formats) are ``a.wav.srt`` and ``a.flac.srt``: both
    had been ``a.srt``, and the one done last was written over the other's, with status 0 and not a word said. A name kept
    so that meets another file's (``a.wav.ogg`` would be ``a.wav.srt``) keeps its own suffix too. Unit: no model."""
    files = [tmp_path / n for n in ("a.wav", "a.flac", "a.wav.ogg", "b.wav", "more/a.wav")]
    assert transcriber.output_names(files, "srt") == {files[0]: Path("a.wav.srt"), files[1]: Path("a.flac.srt"),
                                                      files[2]: Path("a.wav.ogg.srt"), files[3]: Path("b.srt"), files[4]: Path("more/a.srt")}
    out = tmp_path / "out"
    failed = asyncio.run(transcriber.run(files[:2], files[:2], _Recorded(), ["txt"], None, 2, out, io.StringIO(), io.StringIO()))  # type: ignore[arg-type]
    assert failed == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.flac.txt", "a.wav.txt"]


@pytest.mark.unit
def test_a_path_that_starts_with_two_slashes_is_the_one_with_one(tmp_path: Path) -> None:
    """``//tmp/x/a.wav`` (a script's ``"$ROOT/$f"`` with ``ROOT=/``) is ``/tmp/x/a.wav``, as Linux reads it: named beside
    it, transcribed once; into ``--output-dir``, ``a.txt`` (pathlib's ``relative_to`` had raised ValueError: the batch
    ended in a traceback, nothing written). Unit: no model."""
    for name in ("a.wav", "b.wav"):
        (tmp_path / name).touch()
    doubled = Path("/" + str(tmp_path / "a.wav"))
    files, errors = transcriber.expand([str(doubled), str(tmp_path / "a.wav"), str(tmp_path / "b.wav")])
    assert (files, errors) == ([doubled, tmp_path / "b.wav"], [])
    failed = asyncio.run(transcriber.run(files, files, _Recorded(), ["txt"], None, 2, tmp_path / "out", io.StringIO(), io.StringIO()))  # type: ignore[arg-type]
    assert failed == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.txt", "b.txt"]


@pytest.mark.unit
def test_a_transcript_whose_name_fits_the_folder_is_written_however_long(tmp_path: Path) -> None:
    """A transcript named up to 255 bytes (a folder's longest name) is written: ``.NAME.PID.part``, where it is written
    first, was 12 bytes longer, so that one named 244 to 255 bytes (a lecture's title in 81 Korean syllables and
    ``.txt``: 247) failed, "File name too long", though it fitted; it is cut to fit. One over 255 is one line, as any
    file that cannot be written. Unit: no model (the stand-in backend)."""
    fits, too_long = tmp_path / ("강" * 81 + ".wav"), tmp_path / ("강" * 84 + ".wav")
    err = io.StringIO()
    failed = asyncio.run(transcriber.run([fits, too_long], [fits, too_long], _Recorded(), ["txt"], None, 1, tmp_path / "out", io.StringIO(), err))  # type: ignore[arg-type]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["강" * 81 + ".txt"]
    assert (tmp_path / "out" / ("강" * 81 + ".txt")).read_text() == "text of " + "강" * 81 + "\n"
    assert failed == 1 and err.getvalue().count("\n") == 1 and "File name too long" in err.getvalue()


@pytest.mark.unit
@pytest.mark.parametrize("to_folder", [False, True])
def test_a_batch_starts_in_the_order_given_and_writes_in_the_files_order(tmp_path: Path, to_folder: bool) -> None:
    files = [tmp_path / n for n in ("a.wav", "bad.wav", "c.wav", "d.wav")]
    order = [files[3], files[1], files[0], files[2]]
    backend, out, err = _Recorded(), io.StringIO(), io.StringIO()
    out_dir = tmp_path / "out" if to_folder else None
    failed = asyncio.run(transcriber.run(files, order, backend, ["txt"], None, 2, out_dir, out, err))  # type: ignore[arg-type]
    assert failed == 1
    assert backend.started == ["d.wav", "bad.wav", "a.wav", "c.wav"], "jobs take the files in the order given to run"
    assert err.getvalue() == f"speech-recognizer transcribe: {files[1]}: not audio\n"
    if to_folder:
        assert out.getvalue() == ""
        assert sorted(p.name for p in out_dir.iterdir()) == ["a.txt", "c.txt", "d.txt"]  # type: ignore[union-attr]
        assert (out_dir / "d.txt").read_text() == "text of d\n"  # type: ignore[operator]
    else:
        assert [line for line in out.getvalue().splitlines() if line.startswith("==>")] == [
            f"==> {files[0]} <==", f"==> {files[2]} <==", f"==> {files[3]} <=="], "stdout keeps the order of the files"


def test_a_reader_that_leaves_ends_the_batch_quietly(speech_wav: Path, utterances_wav: Path) -> None:
    """``transcribe … | head -c 0``: as ``cat`` does, the status of SIGPIPE (141) and nothing on stderr."""
    process = subprocess.Popen([sys.executable, "-m", "speech_recognizer", "transcribe", str(speech_wav), str(utterances_wav)],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None
    process.stdout.close()  # the reader is gone before the first transcript
    _, err = process.communicate(timeout=240)
    assert process.returncode == 141, err
    assert err == b""


#: Files the in-process transcriber decodes as it reads them: name -> (soundfile format, subtype, channels, sample rate).
#: Each is 8 s: up to 4 blocks of its decoding (1 MiB of the file each), frames of 2 to 10 bytes cut between reads.
ENCODED = {
    "pcm16.wav": ("WAV", "PCM_16", 1, 16000),
    "pcm16_5ch_44k.wav": ("WAV", "PCM_16", 5, 44100),
    "pcm24_3ch_48k.wav": ("WAV", "PCM_24", 3, 48000),
    "pcm32_2ch.wav": ("WAV", "PCM_32", 2, 22050),
    "float_2ch_48k.wav": ("WAV", "FLOAT", 2, 48000),
    "double.wav": ("WAV", "DOUBLE", 1, 16000),
    "u8_3ch.wav": ("WAV", "PCM_U8", 3, 16000),
    "alaw.wav": ("WAV", "ALAW", 1, 8000),
    "ulaw_2ch.wav": ("WAV", "ULAW", 2, 8000),
    "flac24_2ch_44k.flac": ("FLAC", "PCM_24", 2, 44100),
    "vorbis.ogg": ("OGG", "VORBIS", 1, 16000),
    "opus.ogg": ("OGG", "OPUS", 2, 48000),
    "joint_stereo_44k.mp3": ("MP3", "MPEG_LAYER_III", 2, 44100),
    "mpeg2_22k.mp3": ("MP3", "MPEG_LAYER_III", 1, 22050),
}


def encoded(folder: Path) -> list[Path]:
    """:data:`ENCODED`, each 8 s of a tone sweeping up with noise, a channel each at its own level; and ``metadata.wav``,
    16-bit PCM with 100 kB of chunks before its data (more than the 64 KiB read first)."""
    import numpy as np
    import soundfile

    files = []
    noise = np.random.default_rng(7)
    for name, (container, subtype, channels, rate) in ENCODED.items():
        t = np.arange(8 * rate) / rate
        wave_ = 0.5 * np.sin(2 * np.pi * (200 + 300 * t) * t) + 0.05 * noise.standard_normal(len(t))
        samples = np.stack([wave_ * (1 - 0.15 * c) for c in range(channels)], axis=1).astype("float32")
        soundfile.write(folder / name, samples, rate, subtype=subtype, format=container)
        files.append(folder / name)
    plain = (folder / "pcm16.wav").read_bytes()
    assert plain[36:40] == b"data", "soundfile's 44-byte header: fmt, then data"
    (folder / "metadata.wav").write_bytes(plain[:36] + b"LIST" + struct.pack("<I", 100_000) + bytes(100_000) + plain[36:])
    return [*files, folder / "metadata.wav"]


@pytest.mark.unit
def test_audio_decoded_as_it_is_read_is_the_pieces_of_the_whole(tmp_path: Path) -> None:
    """In-process, a file is read, decoded and cut into the decoder's pieces as it goes (a block at a time, never whole,
    :func:`transcriber._decoded`): the pieces are those of the whole file decoded as the REST route decodes it, for
    every encoding, from a file and from a pipe (``<(sox …)``), so its words and times are the same. Before, the
    transcriber read a file whole and decoded it whole (no such reading existed). ~1 s, no model."""
    from speech_recognizer.audio import Decoding, chunks, decode
    from speech_recognizer.session import FILE_CHUNK_SECONDS

    def streamed(path: Path) -> tuple[Decoding, list[bytes]]:
        first, *jobs = transcriber._decoded(path, transcriber.DEFAULT_MAX_SECONDS)
        assert isinstance(first, Decoding) and all(1 <= len(job) <= transcriber._PER_JOB for job in jobs)
        return first, [piece for job in jobs for piece in job]

    for path in encoded(tmp_path):
        whole = decode(path.read_bytes(), max_seconds=transcriber.DEFAULT_MAX_SECONDS)
        expected = chunks(whole, FILE_CHUNK_SECONDS)
        decoding, pieces = streamed(path)
        assert (decoding.sample_rate, pieces) == (whole.sample_rate, expected), path.name
        assert decoding.seconds == pytest.approx(whole.seconds, abs=0.05), f"{path.name}: the bar's length, from its header"
        reading, writing = os.pipe()
        writer = feed(writing, path.read_bytes())
        try:
            decoding, pieces = streamed(Path(f"/dev/fd/{reading}"))
        finally:
            os.close(reading)
            writer.join(10)
        assert (decoding.sample_rate, pieces) == (whole.sample_rate, expected), f"{path.name} from a pipe"


def test_a_long_file_is_transcribed_in_a_few_megabytes(registry, speech_wav: Path, tmp_path: Path) -> None:
    """In-process, what a file costs in memory while it is transcribed does not grow with its length: a 246 MB WAV
    (20 s of 32 channels at 192 kHz: as many bytes as 2 h of 16 kHz mono, at the cost of 20 s of decoding) is read,
    decoded and fed a piece at a time, and its speech is heard where it is. Measured as the most memory Python held
    at once (tracemalloc: the file's bytes, its decoded PCM and the pieces fed are Python's), above what it held
    before, with the session's model, in this process as the transcriber runs it (that the pieces are those of the
    whole file: :func:`test_audio_decoded_as_it_is_read_is_the_pieces_of_the_whole`). Before, the file was read
    whole, decoded whole and cut into pieces of the whole: over 246 MB. ~5 s."""
    import tracemalloc

    import numpy as np
    import soxr

    from speech_recognizer.results import Profanity

    rate, channels, seconds = 192000, 32, 20
    speech = soxr.resample(np.frombuffer(wave.open(str(speech_wav)).readframes(-1), "<i2"), 16000, rate).astype("<i2")
    track = np.zeros(seconds * rate, "<i2")
    track[rate : rate + len(speech)] = speech  # a second of silence, the speech, then silence
    wide = tmp_path / "wide.wav"
    with wave.open(str(wide), "wb") as w:
        w.setnchannels(channels), w.setsampwidth(2), w.setframerate(rate)
        for start in range(0, len(track), rate):  # a second at a time: the test holds no copy of it either
            w.writeframes(np.repeat(track[start : start + rate, None], channels, axis=1).tobytes())
    size = wide.stat().st_size

    async def transcribe() -> dict[str, str]:
        backend = transcriber.InProcess(registry, "ko-KR", 1, transcriber.DEFAULT_MAX_SECONDS)
        try:
            return await backend.transcribe(wide, ["json"], Profanity.MASKED, lambda total, unit: lambda step: None)
        finally:
            backend.close()

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        texts = asyncio.run(transcribe())
        held = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    times = [(start, end) for _, start, end in words_of(json.loads(texts["json"]))]
    assert times and 1 < times[0][0] and times[-1][1] < 1 + len(speech) / rate, f"the speech, where it is: {times}"
    assert held < 12 << 20, f"{held / 1e6:.1f} MB held at once to transcribe a {size / 1e6:.0f} MB file"


def test_a_batch_keeps_its_recognizers_as_long_as_its_longest_file_allows(speech_wav: Path, tmp_path: Path, monkeypatch) -> None:
    """In-process, a recognizer that passes the server's retirement clock is not dropped while every file of the batch
    still fits on it (:func:`~speech_recognizer.recognition.retire_clock`): each retirement built a new recognizer for
    the next file, its graph composed again (1.5-2 CPU s) while that file's job waited, where the server warms a
    replacement in the background. The clocks scaled down (retirement at 2 s, a move at 20 s of a stream's own audio):
    four copies of a 3-4 s utterance on one job. Before: 4 recognizers built (each file retired the one before);
    now 1, every file heard alike."""
    import speech_recognizer.recognition as recognition

    monkeypatch.setattr(recognition, "MAX_WARM_CLOCK_SECONDS", 2.0)
    monkeypatch.setattr(recognition, "RECYCLE_AUDIO_SECONDS", 20.0)
    files = [shutil.copy(speech_wav, tmp_path / f"{n}.wav") for n in "abcd"]
    pools: list[tuple[int, int]] = []
    close = transcriber.InProcess.close

    def counted_close(self: transcriber.InProcess) -> None:
        pools.append((self.engine.pool.misses, self.engine.pool.retired))
        close(self)

    monkeypatch.setattr(transcriber.InProcess, "close", counted_close)
    out, err = io.StringIO(), io.StringIO()
    assert transcriber.main(["--jobs", "1", "--format", "json", "--output-dir", str(tmp_path / "out"), *map(str, files)],
                            out, err) == 0, err.getvalue()
    assert pools == [(1, 0)], f"(recognizers built, retired): {pools}"
    lexical = {json.loads((tmp_path / "out" / f"{n}.json").read_text())["NBest"][0]["Lexical"] for n in "abcd"}
    assert len(lexical) == 1 and lexical != {""}, lexical


@pytest.mark.unit
def test_a_batch_s_longest_file_is_known_from_exact_headers_only(tmp_path: Path) -> None:
    """The longest file that lets recognizers be kept past the server's retirement clock is taken from headers that
    give the length exactly; one file whose length is an estimate (MP3), unknown (a pipe) or unreadable makes it
    unknown (the server's clock then)."""
    import soundfile

    from speech_recognizer.recognition import MAX_WARM_CLOCK_SECONDS, RECYCLE_AUDIO_SECONDS, retire_clock

    short, long_ = _silence(tmp_path / "short.wav", 1), _silence(tmp_path / "long.wav", 3)
    flac = tmp_path / "two.flac"
    soundfile.write(str(flac), np.zeros(32000, "<i2"), 16000)
    mp3 = tmp_path / "one.mp3"
    soundfile.write(str(mp3), np.zeros(16000, "<i2"), 16000, format="MP3")
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    assert transcriber.plan([short, flac, long_]) == ([long_, flac, short], 3.0)
    assert transcriber.plan([short, mp3])[1] is None
    assert transcriber.plan([short, broken]) == ([short, broken], None)
    assert transcriber.plan([short, Path("/dev/null")])[1] is None
    assert retire_clock(None) == MAX_WARM_CLOCK_SECONDS
    assert retire_clock(3.0) == MAX_WARM_CLOCK_SECONDS + RECYCLE_AUDIO_SECONDS - 3.0
    assert retire_clock(2 * RECYCLE_AUDIO_SECONDS) == MAX_WARM_CLOCK_SECONDS
