"""A model's grammar FST (``Gr.fst``) without the word table it carries twice.

Vosk's small (lookahead) models keep the language model in an OpenFst ``ngram`` FST whose input and
output symbol tables are one and the same word list. Vosk reads both while it loads the model and
uses only the output one (vosk-api ``model.cc``: ``word_syms_ = g_fst_->OutputSymbols()``; nothing
reads ``InputSymbols``), so the input copy costs every process load time and memory
(docs/engine.md, "The model's word table"). :func:`slim_model` rewrites the file without it: the
header's has-input-symbols flag cleared and that table cut out, every other byte as it was. A file
that is anything else (tables that differ, an aligned FST whose padding depends on offsets, a format
this reader does not know) is left as it is.

It runs where this project owns a model's files: a download, before its folder appears
(:func:`speech_recognizer.models.download_model`), and the image build, for a baked model
(``python -m speech_recognizer.model_graph FOLDER``). OpenFst's binary layout is written out here:
the Python bindings on PyPI (``openfst`` 1.6.9, ``openfst-python`` 1.7.3) have not been released
since 2019, build from source, need the ngram extension to read this FST at all, and would load every
arc to rewrite a header.
"""

from __future__ import annotations

import logging
import mmap
import os
import shutil
import struct
import sys
from pathlib import Path

log = logging.getLogger(__name__)

#: OpenFst's magic numbers (fst/fst.h ``kFstMagicNumber``, fst/symbol-table.cc ``kSymbolTableMagicNumber``).
FST_MAGIC = 2125659606
SYMBOLS_MAGIC = 2125658996
#: FstHeader flags.
HAS_ISYMBOLS, HAS_OSYMBOLS, IS_ALIGNED = 1, 2, 4
#: Where Vosk looks for the grammar FST in a model folder (vosk-api model.cc: both layouts).
GRAMMAR_FILES = ("graph/Gr.fst", "Gr.fst")


class _Layout(ValueError):
    """The bytes are not the layout this module knows."""


def _string_end(buf: mmap.mmap, pos: int) -> int:
    """The offset after the OpenFst string (int32 length, bytes) at ``pos``."""
    if pos + 4 > len(buf):
        raise _Layout("truncated")
    (size,) = struct.unpack_from("<i", buf, pos)
    if size < 0 or pos + 4 + size > len(buf):
        raise _Layout("bad string length")
    return pos + 4 + size


def _symbols_end(buf: mmap.mmap, pos: int) -> int:
    """The offset after the binary SymbolTable at ``pos``: magic, name, available key, size,
    then ``size`` entries of (symbol string, int64 key)."""
    if pos + 4 > len(buf) or struct.unpack_from("<i", buf, pos)[0] != SYMBOLS_MAGIC:
        raise _Layout("no symbol table")
    pos = _string_end(buf, pos + 4) + 8
    if pos + 8 > len(buf):
        raise _Layout("truncated")
    (count,) = struct.unpack_from("<q", buf, pos)
    pos += 8
    if count < 0 or count > (len(buf) - pos) // 12:
        raise _Layout("bad symbol count")
    unpack, end = struct.Struct("<i").unpack_from, len(buf)
    for _ in range(count):
        if pos + 4 > end:
            raise _Layout("truncated")
        (size,) = unpack(buf, pos)
        if size < 0:
            raise _Layout("bad string length")
        pos += 12 + size
    if pos > end:
        raise _Layout("truncated")
    return pos


def duplicate_input_symbols(buf: mmap.mmap) -> tuple[int, int, int] | None:
    """``(flags offset, start, end)`` of the input symbol table when it repeats the output one byte
    for byte, in an FST header this module can rewrite; None otherwise."""
    if len(buf) < 4 or struct.unpack_from("<i", buf, 0)[0] != FST_MAGIC:
        return None
    try:
        flags_at = _string_end(buf, _string_end(buf, 4)) + 4  # fst type, arc type, version
        if flags_at + 36 > len(buf):
            return None
        (flags,) = struct.unpack_from("<i", buf, flags_at)
        if flags & IS_ALIGNED or flags & (HAS_ISYMBOLS | HAS_OSYMBOLS) != HAS_ISYMBOLS | HAS_OSYMBOLS:
            return None
        start = flags_at + 36  # flags, properties, start state, states, arcs
        end = _symbols_end(buf, start)
        size = end - start
        if end + size > len(buf) or buf[start:end] != buf[end:end + size]:
            return None
        return flags_at, start, end
    except _Layout:
        return None


def slim_grammar(path: Path) -> int:
    """Rewrite the FST at ``path`` without its duplicate input symbol table (atomically, mode
    kept); the bytes saved, 0 when the file is left as it is."""
    try:
        with open(path, "rb") as source, mmap.mmap(source.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            found = duplicate_input_symbols(buf)
            if found is None:
                return 0
            flags_at, start, end = found
            (flags,) = struct.unpack_from("<i", buf, flags_at)
            partial = path.with_name(f".{path.name}.slim")
            try:
                with open(partial, "wb") as out:
                    out.write(buf[:flags_at])
                    out.write(struct.pack("<i", flags & ~HAS_ISYMBOLS))
                    out.write(buf[flags_at + 4:start])
                    view = memoryview(buf)
                    try:
                        for at in range(end, len(buf), 1 << 24):
                            out.write(view[at:at + (1 << 24)])
                    finally:
                        view.release()
                shutil.copymode(path, partial)
                os.replace(partial, path)
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
    except (OSError, ValueError) as exc:  # ValueError: mmap of an empty file
        log.warning("left %s as it is: %s", path, exc)
        return 0
    return end - start


def slim_model(root: Path) -> int:
    """:func:`slim_grammar` on the model folder ``root``'s grammar FST; the bytes saved."""
    saved = 0
    for name in GRAMMAR_FILES:
        path = root / name
        if path.is_file():
            saved += slim_grammar(path)
    if saved:
        log.info("%s: dropped the grammar FST's input word table, a copy of its output one (%d bytes)", root, saved)
    return saved


def main(argv: list[str]) -> int:
    """``python -m speech_recognizer.model_graph FOLDER...``: slim each model folder; 1 when one is missing."""
    status = 0
    for arg in argv:
        if not Path(arg).is_dir():
            print(f"{arg}: no such folder", file=sys.stderr)
            status = 1
            continue
        print(f"{arg}: {slim_model(Path(arg))} bytes saved")
    return status


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
