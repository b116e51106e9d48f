"""Subtitles (speech_recognizer.subtitles): readable cues, split between words at Vosk's word times,
written as SRT and WebVTT that the `srt` and `webvtt-py` parsers read back to the same cues."""

from __future__ import annotations

import datetime
import io
from pathlib import Path

import httpx
import pytest
import srt
import webvtt

from speech_recognizer.results import Profanity
from speech_recognizer.subtitles import (
    MAX_CUE_SECONDS,
    MAX_LINE_CHARS,
    MAX_LINES,
    MIN_CUE_SECONDS,
    Cue,
    SubtitleFormat,
    cues,
    from_accept,
    layout,
    to_srt,
    to_vtt,
)
from speech_recognizer.transcript import Alternative, Phrase, Word

from ..support import Reference, finishes

#: Seconds a REST recognition (of the three utterances, of silence) may take, in time this process (the server, its
#: decoders) did not wait for a CPU: a hang guard (:func:`~tests.support.finishes`); 60 s of the client's clock failed
#: one that was only slow (189 s at load 18).
RECOGNITION = 60.0

LOREM = ("the quick brown fox jumps over the lazy dog and then runs far away into the deep dark forest where "
         "nobody can find it ever again because the trees are tall and the night is long").split()


def phrase(words: list[str], start: float = 0.0, step: float = 0.5, length: float = 0.4) -> Phrase:
    items = tuple(Word(w, start + i * step, start + i * step + length, 0.9) for i, w in enumerate(words))
    return Phrase((Alternative(" ".join(words), 0.9, items),), items[0].start, items[-1].end)


def words_of(cue: Cue) -> list[str]:
    return " ".join(cue.lines).split()


def test_a_long_utterance_is_split_into_cues_within_every_limit() -> None:
    p = phrase(LOREM)
    found = cues([p])
    assert len(found) > 2
    assert [w for c in found for w in words_of(c)] == LOREM, "every word once, in order"
    at = 0
    for cue in found:
        assert 1 <= len(cue.lines) <= MAX_LINES
        assert all(len(line) <= MAX_LINE_CHARS for line in cue.lines), cue.lines
        assert cue.end - cue.start <= MAX_CUE_SECONDS
        n = len(words_of(cue))
        first, last = p.words[at], p.words[at + n - 1]
        assert cue.start == first.start, "a cue starts when its first word starts"
        assert cue.end == last.end, "and ends when its last word ends"
        at += n


def test_a_cue_lasts_at_most_its_duration_even_with_short_lines() -> None:
    # slow speech: 1.5 s per word, short words; the duration limit splits before the line limit
    p = phrase(["a", "b", "c", "d", "e", "f", "g", "h"], step=1.5, length=1.0)
    found = cues([p])
    assert all(c.end - c.start <= MAX_CUE_SECONDS for c in found)
    assert len(found) == 2, found


def test_utterances_never_share_a_cue_and_short_cues_are_held_without_overlap() -> None:
    first = phrase(["hello"], start=1.0, length=0.3)
    second = phrase(["world"], start=1.6, length=0.3)
    third = phrase(["again"], start=5.0, length=0.3)
    found = cues([first, second, third])
    assert [c.lines for c in found] == [("hello",), ("world",), ("again",)]
    assert found[0].end == pytest.approx(1.6), "held up to the next cue, no further"
    assert found[1].end == pytest.approx(1.6 + MIN_CUE_SECONDS), "held to the minimum when there is room"
    assert found[2].end == pytest.approx(5.0 + MIN_CUE_SECONDS)


def test_two_lines_are_balanced_and_one_line_is_used_when_it_fits() -> None:
    assert layout(["short", "line"]) == ("short line",)
    lines = layout("the quick brown fox jumps over the lazy dog and then runs".split())
    assert lines is not None and len(lines) == 2
    assert abs(len(lines[0]) - len(lines[1])) <= 6, lines
    assert layout(["x" * 50]) == ("x" * 50,), "a word longer than a line stands alone"
    assert layout(["word"] * 30) is None, "too much for two lines"


def test_unknown_words_are_dropped_and_profanity_applied() -> None:
    p = phrase(["this", "[unk]", "shit", "works"])
    assert cues([p], profanity=Profanity.MASKED)[0].lines == ("this **** works",)
    assert cues([p], profanity=Profanity.REMOVED)[0].lines == ("this works",)
    assert cues([p], profanity=Profanity.RAW)[0].lines == ("this shit works",)


def test_a_phrase_without_word_times_is_spread_over_its_span() -> None:
    p = Phrase((Alternative(" ".join(LOREM[:20]), 0.9, ()),), 2.0, 12.0)
    found = cues([p])
    assert found[0].start == 2.0 and found[-1].end == pytest.approx(12.0)
    assert [w for c in found for w in words_of(c)] == LOREM[:20]


def test_srt_and_vtt_parse_back_to_the_same_cues() -> None:
    found = cues([phrase(LOREM), phrase(["서울", "부산", "대구"], start=70.0), phrase(["late"], start=3725.5)])
    parsed_srt = list(srt.parse(to_srt(found)))
    assert [(s.start.total_seconds(), s.end.total_seconds(), s.content) for s in parsed_srt] == [
        (round(c.start, 3), round(c.end, 3), c.text) for c in found]
    assert [s.index for s in parsed_srt] == list(range(1, len(found) + 1))
    parsed_vtt = webvtt.from_buffer(io.StringIO(to_vtt(found)))
    assert [(v.start, v.end, v.text) for v in parsed_vtt] == [
        (_vtt(c.start), _vtt(c.end), c.text) for c in found]
    assert parsed_vtt.captions[-1].start == "01:02:05.500"


def test_no_speech_gives_empty_subtitles_that_still_parse() -> None:
    assert list(srt.parse(to_srt([]))) == []
    assert len(webvtt.from_buffer(io.StringIO(to_vtt([]))).captions) == 0


def test_the_accept_header_picks_a_format() -> None:
    assert from_accept("text/vtt") is SubtitleFormat.VTT
    assert from_accept("application/json;q=0.9, application/x-subrip") is SubtitleFormat.SRT
    assert from_accept("application/json") is None
    assert from_accept("*/*") is None


def _vtt(seconds: float) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


# ---- on the REST route, on the real model ---------------------------------------------------------

REST = "/speech/recognition/conversation/cognitiveservices/v1"


def reference_cues(ref: Reference) -> list[Cue]:
    """The cues in-process Vosk's phrases and word times give."""
    phrases = [Phrase((Alternative(p.text, 1.0, tuple(Word(w.word, w.start, w.end, 1.0) for w in p.words)),),
                      p.words[0].start, p.words[-1].end) for p in ref.phrases]
    return cues(phrases, profanity=Profanity.MASKED)


def test_rest_answers_subtitles_by_format_or_accept_that_parse_to_in_process_vosks_cues(
        fresh_server, utterances_wav: Path, utterances_ref: Reference) -> None:
    body = utterances_wav.read_bytes()
    expected = reference_cues(utterances_ref)
    assert len(expected) == len(utterances_ref.phrases) == 3
    by_format = finishes(RECOGNITION, lambda: httpx.post(f"{fresh_server.http}{REST}?language=ko-KR&format=srt", content=body,
                                                         headers={"Content-Type": "audio/wav"}, timeout=None), "the srt recognition")
    assert by_format.status_code == 200, by_format.text
    assert by_format.headers["content-type"] == "application/x-subrip; charset=utf-8"
    parsed = list(srt.parse(by_format.text))
    assert [s.content for s in parsed] == [c.text for c in expected]
    for got, want in zip(parsed, expected, strict=True):
        assert abs(got.start.total_seconds() - want.start) <= 0.0015 and abs(got.end.total_seconds() - want.end) <= 0.0015

    by_accept = finishes(RECOGNITION, lambda: httpx.post(f"{fresh_server.http}{REST}?language=ko-KR", content=body,
                                                         headers={"Content-Type": "audio/wav", "Accept": "text/vtt"}, timeout=None),
                         "the vtt recognition")
    assert by_accept.status_code == 200, by_accept.text
    assert by_accept.headers["content-type"] == "text/vtt; charset=utf-8"
    captions = webvtt.from_buffer(io.StringIO(by_accept.text)).captions
    assert [(c.start, c.end, c.text) for c in captions] == [(s_vtt(s.start), s_vtt(s.end), s.content) for s in parsed]


def test_rest_subtitles_of_silence_and_a_bad_format(server, silence_wav: Path) -> None:
    quiet = finishes(RECOGNITION, lambda: httpx.post(f"{server.http}{REST}?language=ko-KR&format=vtt", content=silence_wav.read_bytes(),
                                                     timeout=None), "the recognition of silence")
    assert quiet.status_code == 200 and quiet.text.startswith("WEBVTT")
    assert webvtt.from_buffer(io.StringIO(quiet.text)).captions == []
    bad = finishes(RECOGNITION, lambda: httpx.post(f"{server.http}{REST}?language=ko-KR&format=ass", content=silence_wav.read_bytes(),
                                                   timeout=None), "the refusal of a bad format")
    assert bad.status_code == 400
    assert "use simple, detailed, srt or vtt" in bad.json()["error"]["message"]


def s_vtt(delta: datetime.timedelta) -> str:
    return _vtt(delta.total_seconds())
