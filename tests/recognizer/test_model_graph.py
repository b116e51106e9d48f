"""The grammar FST without its duplicate word table (model_graph): the same bytes otherwise, the
same decoding, and every other file left as it is."""

from __future__ import annotations

import mmap
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from speech_recognizer.model_graph import FST_MAGIC, HAS_ISYMBOLS, HAS_OSYMBOLS, IS_ALIGNED, SYMBOLS_MAGIC, slim_grammar, slim_model
from speech_recognizer.models import LoadedModel, without_dither

from ..conftest import CHUNK
from ..support import read_wav


def _string(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return struct.pack("<i", len(data)) + data


def _symbols(words: list[str], name: str = "words.txt") -> bytes:
    body = b"".join(_string(w) + struct.pack("<q", i) for i, w in enumerate(words))
    return struct.pack("<i", SYMBOLS_MAGIC) + _string(name) + struct.pack("<qq", len(words), len(words)) + body


def _fst(flags: int, tables: list[bytes], body: bytes = b"\x01\x02\x03" * 100) -> bytes:
    """An OpenFst file: header (magic, type, arc type, version, flags, properties, start, states,
    arcs), its symbol tables, then ``body`` standing for the FST's own data."""
    header = struct.pack("<i", FST_MAGIC) + _string("ngram") + _string("standard") + struct.pack("<ii", 4, flags)
    return header + struct.pack("<Qqqq", 3, 0, 7, 0) + b"".join(tables) + body


WORDS = ["<eps>", "안녕", "하세요", "#0"]


def test_drops_the_input_table_and_keeps_every_other_byte(tmp_path: Path) -> None:
    path = tmp_path / "Gr.fst"
    table = _symbols(WORDS)
    path.write_bytes(_fst(HAS_ISYMBOLS | HAS_OSYMBOLS, [table, table]))
    path.chmod(0o640)
    assert slim_grammar(path) == len(table)
    assert path.read_bytes() == _fst(HAS_OSYMBOLS, [table]), "the flag cleared and the first table cut, nothing else"
    assert path.stat().st_mode & 0o777 == 0o640
    assert slim_grammar(path) == 0, "a slimmed file has nothing left to drop"
    assert [p.name for p in tmp_path.iterdir()] == ["Gr.fst"], "no partial file left behind"


@pytest.mark.parametrize("case", ["tables differ", "output only", "input only", "aligned", "truncated table",
                                  "not an FST", "empty", "count past the end"])
def test_anything_else_is_left_as_it_is(tmp_path: Path, case: str) -> None:
    table = _symbols(WORDS)
    data = {
        "tables differ": _fst(HAS_ISYMBOLS | HAS_OSYMBOLS, [table, _symbols(WORDS[:3])]),
        "output only": _fst(HAS_OSYMBOLS, [table]),
        "input only": _fst(HAS_ISYMBOLS, [table]),
        # an aligned FST pads its data to offsets: cutting bytes would move them
        "aligned": _fst(HAS_ISYMBOLS | HAS_OSYMBOLS | IS_ALIGNED, [table, table]),
        "truncated table": _fst(HAS_ISYMBOLS | HAS_OSYMBOLS, [table], body=b"")[:-5],
        "not an FST": b"<html>not a model</html>" * 100,
        "empty": b"",
        "count past the end": _fst(HAS_ISYMBOLS | HAS_OSYMBOLS, [table[:-len(table) + 40]], body=b""),
    }[case]
    path = tmp_path / "Gr.fst"
    path.write_bytes(data)
    assert slim_grammar(path) == 0
    assert path.read_bytes() == data


def test_a_model_folder_and_the_command(tmp_path: Path) -> None:
    table = _symbols(WORDS)
    (tmp_path / "m" / "graph").mkdir(parents=True)
    (tmp_path / "m" / "graph" / "Gr.fst").write_bytes(_fst(HAS_ISYMBOLS | HAS_OSYMBOLS, [table, table]))
    (tmp_path / "m" / "graph" / "HCLr.fst").write_bytes(b"untouched")
    assert slim_model(tmp_path / "empty") == 0
    run = subprocess.run([sys.executable, "-m", "speech_recognizer.model_graph", str(tmp_path / "m"), str(tmp_path / "none")],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1, "a folder that is not there fails the command"
    assert f"{tmp_path / 'm'}: {len(table)} bytes saved" in run.stdout
    assert f"{tmp_path / 'none'}: no such folder" in run.stderr
    assert (tmp_path / "m" / "graph" / "HCLr.fst").read_bytes() == b"untouched"


def _decode_everything(model: object, pcm: bytes, grammar: str | None) -> list[str]:
    """Every result Vosk gives for ``pcm`` in CHUNK pieces (partials, finals, words, times, confidences)."""
    import vosk

    rec = vosk.KaldiRecognizer(model, 16000.0) if grammar is None else vosk.KaldiRecognizer(model, 16000.0, grammar)
    rec.SetWords(True)
    rec.SetPartialWords(True)
    out = []
    for i in range(0, len(pcm), CHUNK):
        out.append(rec.Result() if rec.AcceptWaveform(pcm[i:i + CHUNK]) else rec.PartialResult())
    out.append(rec.FinalResult())
    return out


def test_the_slimmed_model_decodes_exactly_as_the_original(model: LoadedModel, utterances_wav: Path, tmp_path: Path) -> None:
    """The installed ko-KR model against a copy whose Gr.fst lost its input word table: the same
    partials, words, times and confidences, with and without a grammar (phrase list), which Vosk
    builds from the word table that is kept."""
    import vosk

    view = tmp_path / "model"
    view.mkdir()
    for entry in model.path.iterdir():
        if entry.name != "graph":
            (view / entry.name).symlink_to(entry.resolve())
    (view / "graph").mkdir()
    for entry in (model.path / "graph").iterdir():
        if entry.name != "Gr.fst":
            (view / "graph" / entry.name).symlink_to(entry.resolve())
    shutil.copyfile(model.path / "graph" / "Gr.fst", view / "graph" / "Gr.fst")
    assert slim_model(view) > 10**6
    with open(view / "graph" / "Gr.fst", "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        assert struct.unpack_from("<i", buf, 29)[0] & (HAS_ISYMBOLS | HAS_OSYMBOLS) == HAS_OSYMBOLS  # after "ngram", "standard", version
    with without_dither(view) as dither_off:
        slim = vosk.Model(str(dither_off))
    pcm, rate, _ = read_wav(utterances_wav)
    assert rate == 16000
    grammar = '["안녕하세요", "회의는", "오늘"]'
    for phrases in (None, grammar):
        original = _decode_everything(model.model, pcm, phrases)
        assert any('"word"' in r for r in original), "the audio gives words"
        assert _decode_everything(slim, pcm, phrases) == original
