"""What a recognition produces (words, phrases, partial results) and how Vosk's JSON becomes it.

Times are seconds of the client's stream. Vosk reports times on its recognizer's
own clock; the parsers add the stream offset of that clock's zero and take off
``shift``, the clock a reused recognizer had already run (rounded to 1 µs, which
gives back the times a fresh recognizer prints: docs/engine.md).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise


@dataclass(frozen=True)
class Word:
    """A recognized word; times in seconds from the start of the stream."""

    text: str
    start: float
    end: float
    confidence: float


@dataclass(frozen=True)
class Alternative:
    """One entry of an n-best list."""

    text: str
    confidence: float
    words: tuple[Word, ...]


@dataclass(frozen=True)
class Phrase:
    """A final result: the best alternative first."""

    alternatives: tuple[Alternative, ...]
    start: float
    end: float

    @property
    def text(self) -> str:
        return self.alternatives[0].text

    @property
    def words(self) -> tuple[Word, ...]:
        return self.alternatives[0].words

    @property
    def confidence(self) -> float:
        return self.alternatives[0].confidence


@dataclass(frozen=True)
class Partial:
    """An intermediate result (hypothesis) of the utterance in progress."""

    text: str
    start: float
    end: float
    words: tuple[Word, ...] = ()


Event = Partial | Phrase


def words(items: Sequence[dict], offset: float, shift: float = 0.0) -> tuple[Word, ...]:
    """Vosk's word entries with ``offset`` added and ``shift`` taken off (rounded to 1 µs)."""
    if shift:
        return tuple(
            Word(
                text=str(w.get("word", "")),
                start=round(float(w.get("start", 0.0)) - shift, 6) + offset,
                end=round(float(w.get("end", 0.0)) - shift, 6) + offset,
                confidence=float(w.get("conf", 1.0)),
            )
            for w in items
        )
    return tuple(
        Word(
            text=str(w.get("word", "")),
            start=float(w.get("start", 0.0)) + offset,
            end=float(w.get("end", 0.0)) + offset,
            confidence=float(w.get("conf", 1.0)),
        )
        for w in items
    )


def parse_final(raw: str, offset: float = 0.0, shift: float = 0.0) -> Phrase | None:
    """A :class:`Phrase` from Vosk's final JSON, or None when nothing was said."""
    data = json.loads(raw)
    alternatives: list[Alternative] = []
    if "alternatives" in data:
        for alt in data["alternatives"]:
            found = words(alt.get("result", []), offset, shift)
            alternatives.append(Alternative(str(alt.get("text", "")).strip(), float(alt.get("confidence", 0.0)), found))
    else:
        found = words(data.get("result", []), offset, shift)
        confidence = sum(w.confidence for w in found) / len(found) if found else 0.0
        alternatives.append(Alternative(str(data.get("text", "")).strip(), confidence, found))
    alternatives = [a for a in alternatives if a.text]
    if not alternatives:
        return None
    best = alternatives[0].words
    start = best[0].start if best else offset
    end = best[-1].end if best else offset
    return Phrase(tuple(alternatives), start, end)


def parse_partial(raw: str, previous: str, offset: float, shift: float, start: float, end: float) -> Partial | None:
    """A :class:`Partial` from Vosk's partial JSON, or None when its text is empty or ``previous``.

    ``start`` and ``end`` are its span when Vosk gives no words (partial words off).
    """
    data = json.loads(raw)
    text = str(data.get("partial", "")).strip()
    if not text or text == previous:
        return None
    found = words(data.get("partial_result", []), offset, shift)
    return Partial(text, found[0].start if found else start, found[-1].end if found else end, found)



def split_at_pauses(phrase: Phrase, pause: float) -> list[Phrase]:
    """``phrase`` cut where its words leave at least ``pause`` seconds of silence between them: a phrase ends after
    that much silence (the Speech SDK's segmentation silence), where the decoder itself ends one only after its own
    endpoint rules (about 0.5 s for Vosk's models). A phrase cut in pieces keeps only its best alternative: each
    piece's text is its words', its confidence their mean (as :func:`parse_final` gives a phrase)."""
    words = phrase.words
    pieces = [list(words[:1])]
    for before, word in pairwise(words):
        if word.start - before.end >= pause - 1e-6:  # word times are rounded to 1 us
            pieces.append([])
        pieces[-1].append(word)
    if len(pieces) < 2:
        return [phrase]
    return [_of_words(p) for p in pieces]


def joined(first: Phrase, second: Phrase) -> Phrase:
    """One phrase of ``first`` and the ``second`` the decoder ended after a pause shorter than the app's segmentation
    silence: from the start of the first to the end of the second, with both phrases' words and times. Like a piece
    of :func:`split_at_pauses`, it keeps only the best alternatives, its confidence the mean of its words'."""
    if first.words and second.words:
        return _of_words(first.words + second.words)
    alternative = Alternative(f"{first.text} {second.text}", (first.confidence + second.confidence) / 2, first.words + second.words)
    return Phrase((alternative,), first.start, second.end)


def _of_words(words: Sequence[Word]) -> Phrase:
    """A phrase of ``words`` (not empty): its text theirs, its confidence their mean (as :func:`parse_final` gives one)."""
    return Phrase((Alternative(" ".join(w.text for w in words), sum(w.confidence for w in words) / len(words), tuple(words)),),
                  words[0].start, words[-1].end)
