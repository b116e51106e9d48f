"""Subtitles (SRT, WebVTT) from recognized phrases, split into cues a person can read.

Every route that gives subtitles (REST ``format=srt|vtt``, the OpenAI-compatible route,
``speech-recognizer transcribe``) builds them here, so the same phrases give the same cues.

A cue never spans two utterances, holds at most :data:`MAX_LINES` lines of at most
:data:`MAX_LINE_CHARS` characters and lasts at most :data:`MAX_CUE_SECONDS` (common
broadcast guidelines). Cues split between words, at the word times Vosk gives: a cue
starts when its first word starts and ends when its last word ends, held up to
:data:`MIN_CUE_SECONDS` on screen when the next cue leaves room. SRT is composed by the
``srt`` package; WebVTT differs from it only in its header and the millisecond separator.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum

import srt

from .results import Profanity, apply_profanity, is_profane, written, written_words
from .transcript import Phrase, Word

MAX_LINE_CHARS = 42
MAX_LINES = 2
MAX_CUE_SECONDS = 7.0
#: A short cue (one quick word) stays this long on screen when the next cue starts later.
MIN_CUE_SECONDS = 1.0


class SubtitleFormat(str, Enum):
    SRT = "srt"
    VTT = "vtt"

    @property
    def media_type(self) -> str:
        return "application/x-subrip" if self is SubtitleFormat.SRT else "text/vtt"


#: Media types an ``Accept`` header may ask subtitles by.
ACCEPTED_MEDIA_TYPES = {"application/x-subrip": SubtitleFormat.SRT, "text/srt": SubtitleFormat.SRT,
                        "application/srt": SubtitleFormat.SRT, "text/vtt": SubtitleFormat.VTT}


def from_accept(accept: str) -> SubtitleFormat | None:
    """The subtitle format an ``Accept`` header asks for first, if any (``text/vtt``, ``application/x-subrip``)."""
    for part in accept.split(","):
        media = part.split(";")[0].strip().lower()
        if media in ACCEPTED_MEDIA_TYPES:
            return ACCEPTED_MEDIA_TYPES[media]
    return None


@dataclass(frozen=True)
class Cue:
    """One subtitle: its span in seconds of the audio and its lines."""

    start: float
    end: float
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def _shown_words(phrase: Phrase, profanity: Profanity) -> list[tuple[str, float, float]]:
    """The phrase's words as shown: written (:func:`.results.written_words`: no-word markers dropped, numbers
    as numerals, ``[3] (백)`` as ``300`` from the start of ``[3]`` to the end of ``(백)``), profanity applied;
    times from Vosk.

    A phrase without word times (words turned off) spreads its written words over its span by their length.
    """
    words: Sequence[Word] = written_words(phrase.words)
    if not words:
        tokens = written(phrase.text).split()
        total = sum(len(t) for t in tokens) or 1
        at, span, spread = phrase.start, max(0.0, phrase.end - phrase.start), []
        for token in tokens:
            length = span * len(token) / total
            spread.append(Word(token, at, at + length, 1.0))
            at += length
        words = spread
    shown = []
    for w in words:
        if profanity is Profanity.REMOVED and is_profane(w.text):
            continue
        shown.append((apply_profanity(w.text, profanity) if profanity is Profanity.MASKED else w.text, w.start, w.end))
    return shown


def layout(words: Sequence[str], max_line: int = MAX_LINE_CHARS, max_lines: int = MAX_LINES) -> tuple[str, ...] | None:
    """``words`` on one line when they fit, else on at most ``max_lines`` lines of at most ``max_line``
    characters with the longest line as short as it can be; None when they do not fit.

    A single word longer than a line stands on a line of its own.
    """
    if not words:
        return ()
    whole = " ".join(words)
    if len(whole) <= max_line or len(words) == 1:
        return (whole,)
    if max_lines <= 1:
        return None
    best: tuple[str, ...] | None = None
    for cut in range(1, len(words)):
        first = " ".join(words[:cut])
        if len(first) > max_line and cut > 1:
            break  # a later cut only makes the first line longer
        rest = layout(words[cut:], max_line, max_lines - 1)
        if rest is not None and (best is None or max(map(len, (first, *rest))) < max(map(len, best))):
            best = (first, *rest)
    return best


def cues(
    phrases: Iterable[Phrase],
    *,
    profanity: Profanity = Profanity.RAW,
    max_line: int = MAX_LINE_CHARS,
    max_lines: int = MAX_LINES,
    max_seconds: float = MAX_CUE_SECONDS,
    min_seconds: float = MIN_CUE_SECONDS,
) -> list[Cue]:
    """The cues of ``phrases``: each utterance split at word boundaries into cues that fit the limits."""
    out: list[Cue] = []
    for phrase in phrases:
        group: list[tuple[str, float, float]] = []
        for word in _shown_words(phrase, profanity):
            candidate = [*group, word]
            fits = layout([w[0] for w in candidate], max_line, max_lines) is not None
            if group and (not fits or word[2] - group[0][1] > max_seconds):
                out.append(_cue(group, max_line, max_lines))
                group = [word]
            else:
                group = candidate
        if group:
            out.append(_cue(group, max_line, max_lines))
    return _held(out, min_seconds)


def _cue(group: list[tuple[str, float, float]], max_line: int, max_lines: int) -> Cue:
    texts = [w[0] for w in group]
    lines = layout(texts, max_line, max_lines) or (" ".join(texts),)
    return Cue(group[0][1], max(w[2] for w in group), lines)


def _held(items: list[Cue], min_seconds: float) -> list[Cue]:
    """Short cues held up to ``min_seconds``, never into the next cue."""
    held = []
    for i, cue in enumerate(items):
        end = max(cue.end, cue.start + min_seconds)
        if i + 1 < len(items):
            end = min(end, max(cue.end, items[i + 1].start))
        held.append(Cue(cue.start, end, cue.lines))
    return held


def _ms(seconds: float) -> datetime.timedelta:
    return datetime.timedelta(milliseconds=round(max(0.0, seconds) * 1000))


def to_srt(items: Sequence[Cue]) -> str:
    """SubRip text (``srt`` package); empty when there is no cue."""
    return srt.compose([srt.Subtitle(i, _ms(c.start), _ms(c.end), c.text) for i, c in enumerate(items, 1)], reindex=False)


def _vtt_time(seconds: float) -> str:
    ms = int(_ms(seconds) / datetime.timedelta(milliseconds=1))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    return f"{hours:02d}:{minutes:02d}:{ms // 1000:02d}.{ms % 1000:03d}"


def to_vtt(items: Sequence[Cue]) -> str:
    """WebVTT text: the header, then each cue with its number as identifier."""
    blocks = ["WEBVTT\n"]
    for i, c in enumerate(items, 1):
        text = "\n".join(line.replace("-->", "->") for line in c.lines)
        blocks.append(f"{i}\n{_vtt_time(c.start)} --> {_vtt_time(c.end)}\n{text}\n")
    return "\n".join(blocks)


def render(phrases: Iterable[Phrase], fmt: SubtitleFormat, profanity: Profanity = Profanity.RAW) -> str:
    """Subtitles of ``phrases`` in ``fmt``."""
    found = cues(phrases, profanity=profanity)
    return to_srt(found) if fmt is SubtitleFormat.SRT else to_vtt(found)
