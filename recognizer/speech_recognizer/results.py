"""Azure's result JSON (simple and detailed), shared by the REST route and the Speech SDK protocol.

Times are 100-ns ticks. Vosk gives the lexical form only: ``Lexical`` and the ``Words``
are the model's words as it spells them, no-word markers (``<UNK>``) dropped. Every form a
person reads (``DisplayText``, ``ITN``, ``MaskedITN``, ``Display``, hypotheses, and the
subtitles and OpenAI texts, all built on :func:`written` and :func:`written_words`) shows the
words written: the numbers the model's marked tokens spell as numerals (:mod:`.numbers`:
``[3] (천) [5] (백)`` -> ``3500``), other tokens without their brackets. ``Display`` is that form
with its first letter capitalized and a final period, ``MaskedITN`` it with profanity masked
(docs/engine.md, "Result forms and the model's marked tokens").
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from enum import Enum
from typing import Any

from .errors import BadValue
from .numbers import numbers
from .transcript import Alternative, Phrase, Word

TICKS_PER_SECOND = 10_000_000


def ticks(seconds: float) -> int:
    """Seconds -> 100-ns ticks (never negative: a stream's time starts at 0)."""
    return max(0, int(round(seconds * TICKS_PER_SECOND)))


def span(start: float, end: float) -> tuple[int, int]:
    """``(Offset, Duration)`` in ticks of ``start..end`` seconds.

    The duration is the difference of the rounded ends, so ``Offset + Duration``
    of a phrase equals that of its last word to the tick.
    """
    offset = ticks(start)
    return offset, max(0, ticks(end) - offset)


class Profanity(str, Enum):
    """Azure's ``profanity`` option."""

    MASKED = "masked"
    REMOVED = "removed"
    RAW = "raw"

    @classmethod
    def parse(cls, value: str | None) -> Profanity:
        if not value:
            return cls.MASKED
        try:
            return cls(value.strip().lower())
        except ValueError:
            raise BadValue(f"profanity={value!r}: use masked, removed or raw") from None

    @classmethod
    def lenient(cls, value: object) -> Profanity | None:
        """The mode ``value`` names (any case), or None (for clients whose bad values are ignored)."""
        try:
            return cls(str(value or "").strip().lower())
        except ValueError:
            return None


class OutputFormat(str, Enum):
    """Azure's ``format`` option."""

    SIMPLE = "simple"
    DETAILED = "detailed"

    @classmethod
    def parse(cls, value: str | None) -> OutputFormat:
        if not value:
            return cls.SIMPLE
        try:
            return cls(value.strip().lower())
        except ValueError:
            raise BadValue(f"format={value!r}: use simple or detailed") from None


#: A small built-in list (Vosk models carry none); the models' vocabularies rarely hold more.
PROFANE_WORDS: frozenset[str] = frozenset(
    {
        "fuck", "fucking", "fucked", "shit", "bitch", "bastard", "asshole", "cunt", "dick", "motherfucker",
        "씨발", "시발", "개새끼", "병신", "좆",
    }
)


def is_profane(word: str) -> bool:
    """Whether a token is on the list (case-insensitive, surrounding punctuation ignored)."""
    return word.lower().strip(".,!?;:\"'") in PROFANE_WORDS


def apply_profanity(text: str, mode: Profanity) -> str:
    """Mask each profane word with asterisks, remove it, or leave the text raw."""
    if mode is Profanity.RAW:
        return text
    out = []
    for token in text.split():
        if not is_profane(token):
            out.append(token)
        elif mode is Profanity.MASKED:
            out.append("*" * len(token))
    return " ".join(out)


#: Tokens of a model's vocabulary that are no word: Kaldi's unknown-word, noise and silence symbols (the
#: ko-KR model's ``<UNK>``, ``<SPOKEN_NOISE>``, ``!SIL``, ``<eps>``, ``<s>``, ``</s>``, ``#0``; other Vosk models'
#: ``[unk]``). Vosk may put the unknown word in a result; the rest would be a model's oddity.
_NO_WORD = re.compile(r"\[unk\]|<[^<>\s]*>|!sil|#\d+", re.IGNORECASE)
#: A token the model marks by brackets around its written form: the ko-KR model's numbers read digit by
#: digit or as a whole, ``[0]``..``[99]`` and ``[00]``..``[09]``, the digit words ``[공]`` ``[구]`` ``[사]``
#: ``[삼]`` ``[영]`` ``[오]`` ``[육]`` ``[이]`` ``[일]`` ``[칠]`` ``[팔]`` and ``[쩜]`` (point), the
#: multipliers ``(십)`` ``(백)`` ``(천)`` and ``{만}`` ``{억}`` ``{조}``. Those that spell a number are
#: written by :mod:`.numbers`; the rest lose their brackets.
_MARKED = re.compile(r"\[([^\[\]\s]+)\]|\(([^()\s]+)\)|\{([^{}\s]+)\}")


def _unbracketed(token: str) -> str:
    """A token that is no number: ``""`` for a no-word marker (``<UNK>``, ``[unk]``), a marked token without its
    brackets (``{만}`` -> ``만``, ``[쩜]`` -> ``쩜``), any other token as it is."""
    if _NO_WORD.fullmatch(token):
        return ""
    marked = _MARKED.fullmatch(token)
    return next(part for part in marked.groups() if part) if marked else token


def _written_spans(tokens: Sequence[str]) -> list[tuple[str, int, int]]:
    """The tokens as a person reads them, each written word with the first and last of the tokens it writes:
    a number the marked tokens spell as one word (:func:`.numbers.numbers`), any other token
    :func:`_unbracketed`, a no-word marker not at all (nor does it part a number)."""
    kept = [i for i, token in enumerate(tokens) if not _NO_WORD.fullmatch(token)]
    words = [tokens[i] for i in kept]
    out: list[tuple[str, int, int]] = []
    at = 0
    for number in [*numbers(words), None]:
        stop = number.start if number else len(words)
        out.extend((_unbracketed(words[k]), kept[k], kept[k]) for k in range(at, stop))
        if number:
            out.append((number.text, kept[number.start], kept[number.stop - 1]))
            at = number.stop
    return out


def lexical(text: str) -> str:
    """Vosk's text as the model spells its words (``Lexical``): no-word markers and doubled spaces dropped."""
    return " ".join(token for token in text.split() if not _NO_WORD.fullmatch(token))


def written(text: str) -> str:
    """Vosk's text as a person reads it (the written form): numbers as numerals, other tokens without their
    brackets, no-word markers dropped, one space between words."""
    return " ".join(word for word, _, _ in _written_spans(text.split()))


def written_words(words: Sequence[Word]) -> list[Word]:
    """The words of :func:`written`, each with the times of the tokens it writes: a joined number from its first
    token's start to its last one's end, as sure as its least sure token; no other word's time moves."""
    out = []
    for text, first, last in _written_spans([w.text for w in words]):
        confidence = min(w.confidence for w in words[first : last + 1] if not _NO_WORD.fullmatch(w.text))
        out.append(Word(text, words[first].start, words[last].end, confidence))
    return out


def display(text: str) -> str:
    """The Display form: first letter capitalized, final period."""
    text = text.strip()
    if not text:
        return ""
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".?!。？！" else text + "."


def _words_json(words: Sequence[Word], profanity: Profanity, confidence: bool) -> list[dict[str, Any]]:
    out = []
    for w in words:
        if not lexical(w.text) or (profanity is Profanity.REMOVED and is_profane(w.text)):
            continue  # a no-word marker is not in Lexical, so not among its words
        offset, duration = span(w.start, w.end)
        word: dict[str, Any] = {
            "Word": apply_profanity(w.text, profanity) if profanity is Profanity.MASKED else w.text,
            "Offset": offset,
            "Duration": duration,
        }
        if confidence:
            word["Confidence"] = round(w.confidence, 6)
        out.append(word)
    return out


def nbest(
    phrase: Phrase,
    profanity: Profanity,
    *,
    word_timings: bool = False,
    word_confidence: bool = False,
) -> list[dict[str, Any]]:
    """Azure's ``NBest`` list for a phrase."""
    out = []
    for alt in phrase.alternatives:
        lex, itn = lexical(alt.text), written(alt.text)
        entry: dict[str, Any] = {
            "Confidence": round(alt.confidence, 6),
            "Lexical": apply_profanity(lex, profanity),
            "ITN": apply_profanity(itn, profanity),
            "MaskedITN": apply_profanity(itn, Profanity.MASKED),
            "Display": display(apply_profanity(itn, profanity)),
        }
        if word_timings or word_confidence:
            entry["Words"] = _words_json(alt.words, profanity, word_confidence)
        out.append(entry)
    return out


def merge(phrases: Iterable[Phrase]) -> Phrase | None:
    """One phrase spanning several (the REST route answers once for the whole audio)."""
    items = [p for p in phrases]
    if not items:
        return None
    if len(items) == 1:
        return items[0]
    words = tuple(w for p in items for w in p.words)
    text = " ".join(p.text for p in items)
    conf = sum(w.confidence for w in words) / len(words) if words else items[0].confidence
    return Phrase((Alternative(text, conf, words),), items[0].start, items[-1].end)


def phrase_json(
    phrase: Phrase | None,
    fmt: OutputFormat,
    profanity: Profanity,
    *,
    status_if_empty: str = "InitialSilenceTimeout",
    empty_offset: float = 0.0,
    empty_duration: float = 0.0,
    word_timings: bool = False,
    word_confidence: bool = False,
) -> dict[str, Any]:
    """A ``speech.phrase`` body / REST response for ``phrase`` (or the no-speech status).

    The REST route and the Speech SDK protocol both answer with this, so the
    same phrase gives the same ``DisplayText`` and ``NBest`` on either.
    """
    if phrase is None:
        return status_json(status_if_empty, empty_offset, empty_offset + empty_duration)
    offset, duration = span(phrase.start, phrase.end)
    body: dict[str, Any] = {"RecognitionStatus": "Success", "Offset": offset, "Duration": duration}
    body["DisplayText"] = display(apply_profanity(written(phrase.text), profanity))
    if fmt is OutputFormat.DETAILED:
        body["NBest"] = nbest(phrase, profanity, word_timings=word_timings, word_confidence=word_confidence)
    return body


def phrase_of(body: dict[str, Any]) -> Phrase:
    """The phrase a detailed answer with word times describes (:func:`phrase_json`'s, back): its best
    alternative, times in seconds. What a client of the REST route builds subtitles from (the file
    transcriber's ``--server``); a word without ``Confidence`` counts as 1."""
    best = body["NBest"][0]
    words = tuple(Word(w["Word"], w["Offset"] / TICKS_PER_SECOND, (w["Offset"] + w["Duration"]) / TICKS_PER_SECOND,
                       float(w.get("Confidence", 1.0))) for w in best.get("Words", ()))
    start = body["Offset"] / TICKS_PER_SECOND
    return Phrase((Alternative(best["Lexical"], float(best["Confidence"]), words),), start, start + body["Duration"] / TICKS_PER_SECOND)


def status_json(status: str, start: float, end: float) -> dict[str, Any]:
    """A result without text: ``InitialSilenceTimeout``, ``NoMatch``, ``EndOfDictation``, ..."""
    offset, duration = span(start, end)
    return {"RecognitionStatus": status, "Offset": offset, "Duration": duration}


def hypothesis_json(text: str, start: float, end: float, profanity: Profanity) -> dict[str, Any]:
    """An intermediate result (``speech.hypothesis``): the text so far, written (:func:`written`), and its span."""
    offset, duration = span(start, end)
    return {"Text": apply_profanity(written(text), profanity), "Offset": offset, "Duration": duration}
