"""JSON bodies of the service's USP messages, in the shapes the Speech SDK parses."""

from __future__ import annotations

from typing import Any

from ..engine import Partial, Phrase, Word
from .options import Options, ticks
from .profanity import filter_text

Body = dict[str, Any]


def offset(seconds: float) -> Body:
    """``speech.startDetected`` / ``speech.endDetected``."""
    return {"Offset": ticks(seconds)}


def hypothesis(partial: Partial, options: Options) -> Body:
    """``speech.hypothesis``: the utterance so far."""
    start = ticks(partial.start)
    return {
        "Text": filter_text(partial.text, options.profanity),
        "Offset": start,
        "Duration": max(0, ticks(partial.end) - start),
    }


def _word(word: Word, options: Options) -> Body:
    start = ticks(word.start)
    out: Body = {
        "Word": filter_text(word.text, options.profanity),
        "Offset": start,
        "Duration": max(0, ticks(word.end) - start),
    }
    if options.word_confidence:
        out["Confidence"] = round(word.confidence, 6)
    return out


def phrase(result: Phrase, options: Options) -> Body:
    """``speech.phrase`` with ``RecognitionStatus: Success``, simple or detailed."""
    start = ticks(result.start)
    display = filter_text(result.text, options.profanity)
    body: Body = {
        "RecognitionStatus": "Success",
        "Offset": start,
        "Duration": max(0, ticks(result.end) - start),
        "DisplayText": display,
        "Channel": 0,
    }
    if options.detailed:
        nbest = []
        for alt in result.alternatives:
            text = filter_text(alt.text, options.profanity)
            entry: Body = {
                "Confidence": round(alt.confidence, 6),
                "Lexical": alt.text,
                "ITN": alt.text,
                "MaskedITN": filter_text(alt.text, "masked"),
                "Display": text,
            }
            if options.word_timings or options.word_confidence:
                entry["Words"] = [
                    _word(w, options) for w in alt.words if filter_text(w.text, options.profanity)
                ]
            nbest.append(entry)
        body["NBest"] = nbest
    return body


def status(name: str, start: float, end: float) -> Body:
    """A ``speech.phrase`` without text: ``InitialSilenceTimeout``, ``NoMatch``, ``EndOfDictation``."""
    return {"RecognitionStatus": name, "Offset": ticks(start), "Duration": max(0, ticks(end) - ticks(start)), "Channel": 0}
