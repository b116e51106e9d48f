"""USP fixtures: in-process Vosk on the session's model, fed the shared audio in the SDK's chunks.

The registry turns Kaldi's dither off, so in-process Vosk and the server decode
the same PCM in the same chunks to the same words and times; one run of the
reference is enough and the server must match it exactly.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from speech_recognizer.models import LoadedModel

#: The SDK sends 100 ms chunks: 3,200 bytes at 16 kHz mono.
from ..conftest import CHUNK as SDK_CHUNK
from ..support import RefPhrase, RefWord, read_wav


def replay_reference(model: LoadedModel, wav: Path, start: float) -> RefPhrase | None:
    """In-process Vosk's first phrase of the audio from ``start`` seconds, fed as the SDK replays it.

    A continuation turn re-sends the stream from the acknowledged offset (cut to
    whole milliseconds): first the rest of the 100 ms chunk it falls in, then
    the stream's own chunks. Times are from the start of the stream.
    """
    phrases = replay_phrases(model, wav, start, first=True)
    return phrases[0] if phrases else None


def replay_phrases(model: LoadedModel, wav: Path, start: float, *, first: bool = False) -> list[RefPhrase]:
    """In-process Vosk's phrases of the audio from ``start`` seconds to its end (with ``first``, the first alone), fed
    as an SDK replays it (:func:`replay_reference`). Times are from the start of the stream. Decoded once per process
    for each model, recording and start: Vosk hears the same phrases in the same PCM (dither off, the module's
    docstring), and the tests of a continuation replay the one recording from the one phrase's end."""
    stat = wav.stat()
    return list(_replayed(model, wav, stat.st_size, stat.st_mtime_ns, start, first))


@functools.cache
def _replayed(model: LoadedModel, wav: Path, size: int, mtime_ns: int, start: float, first: bool) -> tuple[RefPhrase, ...]:
    """:func:`replay_phrases`'s decoding (``size`` and ``mtime_ns``: the recording's, so that a file written again is
    decoded again)."""
    import vosk

    from speech_recognizer.audio import dither_zeros

    pcm, rate, _ = read_wav(wav)
    begin = int(round(start * rate)) * 2
    boundary = min(len(pcm), (begin // SDK_CHUNK + 1) * SDK_CHUNK)
    pieces = [pcm[begin:boundary]] + [pcm[i : i + SDK_CHUNK] for i in range(boundary, len(pcm), SDK_CHUNK)]
    rec = vosk.KaldiRecognizer(model.model, float(rate))
    rec.SetWords(True)
    rec.SetPartialWords(True)

    def phrase(raw: str) -> RefPhrase | None:
        item = json.loads(raw)
        if not item.get("text", "").strip():
            return None
        words = tuple(RefWord(w["word"], w["start"] + start, w["end"] + start, w["conf"]) for w in item["result"])
        return RefPhrase(item["text"].strip(), words)

    # the server's silence pattern for exact zeros (audio.dither_zeros) goes by position in the turn's session, not
    # in the stream: it starts at the turn's origin (usp.connection.Turn), 0 where the acknowledged offset is whole
    # milliseconds (every caller's here)
    fed = 0
    found: list[RefPhrase] = []
    for piece in pieces:
        piece, fed = dither_zeros(piece, fed), fed + len(piece) // 2
        if rec.AcceptWaveform(piece):
            if (one := phrase(rec.Result())) is not None:
                found.append(one)
                if first:
                    return tuple(found)  # a recognize-once turn ends with its first phrase: decode no further
        else:
            rec.PartialResult()
    if (one := phrase(rec.FinalResult())) is not None:
        found.append(one)
    return tuple(found)
