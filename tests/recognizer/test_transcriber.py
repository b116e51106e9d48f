"""``speech-recognizer transcribe``: run as a user runs it (a subprocess of the console entry), in-process
and against a real server on loopback, on the real ko-KR model."""

from __future__ import annotations

import asyncio
import fcntl
import io
import json
import os
import pty
import re
import select
import shutil
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
import srt

from speech_recognizer import transcriber

from ..support import Reference

TICK = 1e-7


def transcribe(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "speech_recognizer", "transcribe", *args],
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def words_of(body: dict) -> list[tuple[str, float, float]]:
    return [(w["Word"], w["Offset"] * TICK, (w["Offset"] + w["Duration"]) * TICK) for w in body["NBest"][0]["Words"]]


def test_in_process_json_matches_in_process_vosk_and_the_server_gives_the_same(
        server, utterances_wav: Path, utterances_ref: Reference) -> None:
    here = transcribe("--format", "json", str(utterances_wav))
    assert here.returncode == 0, here.stderr
    body = json.loads(here.stdout)
    assert body["File"] == str(utterances_wav)
    assert body["NBest"][0]["Lexical"] == " ".join(utterances_ref.texts)
    utterances_ref.assert_words_match(words_of(body))
    words = [w for p in utterances_ref.phrases for w in p.words]  # its Words carry no confidence: their mean does
    assert body["NBest"][0]["Confidence"] == round(sum(w.confidence for w in words) / len(words), 6)

    there = transcribe("--format", "json", "--server", server.http, str(utterances_wav))
    assert there.returncode == 0, there.stderr
    remote = json.loads(there.stdout)
    assert remote["NBest"][0]["Lexical"] == body["NBest"][0]["Lexical"]
    assert remote["NBest"][0]["Confidence"] == body["NBest"][0]["Confidence"]
    utterances_ref.assert_words_match(words_of(remote))


#: The formats of :func:`in_process`'s runs.
WRITTEN = ("srt", "vtt", "txt")


@pytest.fixture(scope="module")
def in_process(utterances_wav: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, subprocess.CompletedProcess[str]]]:
    """``transcribe --format F --output-dir HERE utterances.wav`` in-process for each of :data:`WRITTEN`, stderr a pipe:
    HERE and the runs (each run loads the model: run once for the tests that read them)."""
    here = tmp_path_factory.mktemp("here")
    return here, {fmt: transcribe("--format", fmt, "--output-dir", str(here), str(utterances_wav)) for fmt in WRITTEN}


def test_subtitles_and_text_in_process_equal_the_servers(server, utterances_wav: Path, utterances_ref: Reference,
                                                          in_process: tuple[Path, dict[str, subprocess.CompletedProcess[str]]],
                                                          tmp_path: Path) -> None:
    here_dir, runs = in_process
    for fmt in WRITTEN:
        here = runs[fmt]
        there = transcribe("--format", fmt, "--output-dir", str(tmp_path / "there"), "--server", server.http, str(utterances_wav))
        assert here.returncode == there.returncode == 0, (here.stderr, there.stderr)
        assert here.stdout == there.stdout == "", "with --output-dir nothing goes to stdout"
        mine = (here_dir / f"utterances.{fmt}").read_text()
        assert mine == (tmp_path / "there" / f"utterances.{fmt}").read_text()
    cues = list(srt.parse((here_dir / "utterances.srt").read_text()))
    assert [c.content for c in cues] == utterances_ref.texts, "one cue per utterance (each fits a line)"
    first_word = utterances_ref.phrases[0].words[0]
    assert abs(cues[0].start.total_seconds() - first_word.start) < 0.001
    assert (here_dir / "utterances.txt").read_text().strip().rstrip(".") == " ".join(utterances_ref.texts)


def test_folders_and_globs_and_a_bad_file_that_does_not_stop_the_batch(speech_wav: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(speech_wav, folder / "a.wav")
    shutil.copy(speech_wav, folder / "sub" / "b.wav")  # what is found and where it goes, not what is said, is at stake
    (folder / "notes.txt").write_text("not audio, and not picked from a folder")
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(speech_wav, other / "c.wav")
    done = transcribe(str(folder), str(other / "*.wav"), str(tmp_path / "missing.wav"))
    assert done.returncode == 1, "a file failed: the status says so"
    errors = done.stderr.strip().splitlines()
    assert any(str(folder / "broken.wav") in line and "WAV" in line for line in errors), errors
    assert any("missing.wav: no such file or folder" in line for line in errors), errors
    assert len(errors) == 2, errors
    assert "Traceback" not in done.stderr
    headers = [line for line in done.stdout.splitlines() if line.startswith("==> ")]
    assert headers == [f"==> {folder / 'a.wav'} <==", f"==> {folder / 'sub' / 'b.wav'} <==", f"==> {other / 'c.wav'} <=="]

    shutil.copy(speech_wav, other / "a.wav")  # the same name as folder/a.wav
    into = transcribe("--format", "vtt", "--output-dir", str(tmp_path / "out"), str(folder / "a.wav"), str(folder / "sub"), str(other))
    assert into.returncode == 0, into.stderr
    written = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert written == ["in/a.vtt", "in/sub/b.vtt", "other/a.vtt", "other/c.vtt"], "each in its folder, none overwritten"


def test_a_progress_bar_on_a_terminal_and_none_when_piped(
        utterances_wav: Path, in_process: tuple[Path, dict[str, subprocess.CompletedProcess[str]]]) -> None:
    here, runs = in_process  # stderr piped there
    piped = runs["txt"]
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
    assert transcriber.start_order([broken, short, long_, middle, twin]) == [long_, middle, twin, short, broken]


@pytest.mark.unit
def test_the_readme_names_every_suffix_a_folder_is_searched_for() -> None:
    """README, Transcribe files: "folders (every `.wav`, ... below)" lists :data:`transcriber.AUDIO_SUFFIXES`
    (it had left out ``.wave``)."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    listed = re.search(r"folders \(every ((?:`\.\w+`(?:, )?)+) below\)", readme)
    assert listed, "README no longer says which files a folder is searched for"
    assert set(re.findall(r"`(\.\w+)`", listed.group(1))) == set(transcriber.AUDIO_SUFFIXES)


class _Recorded:
    """A stand-in backend that records the order files start in (the scheduling under test needs no model)."""

    def __init__(self) -> None:
        self.started: list[str] = []

    async def transcribe(self, path: Path, fmt: str, profanity: object, progress: object) -> str:
        self.started.append(path.name)
        await asyncio.sleep(0.01 * len(self.started))
        if path.name == "bad.wav":
            raise transcriber.FileError("not audio")
        return f"text of {path.stem}"


@pytest.mark.unit
@pytest.mark.parametrize("to_folder", [False, True])
def test_a_batch_starts_in_the_order_given_and_writes_in_the_files_order(tmp_path: Path, to_folder: bool) -> None:
    files = [tmp_path / n for n in ("a.wav", "bad.wav", "c.wav", "d.wav")]
    order = [files[3], files[1], files[0], files[2]]
    backend, out, err = _Recorded(), io.StringIO(), io.StringIO()
    out_dir = tmp_path / "out" if to_folder else None
    failed = asyncio.run(transcriber.run(files, order, backend, "txt", None, 2, out_dir, out, err))  # type: ignore[arg-type]
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
