"""The numbers the ko-KR model's marked tokens spell, written as numerals in every form a person reads
(speech_recognizer.numbers; docs/engine.md, "Result forms and the model's marked tokens"): ``[공] [일] [공]`` as
``010``, ``[3] (천) [5] (백)`` as ``3500``, ``[2] {만}`` as ``2만``, ``[3] [쩜] [5]`` as ``3.5``. Before, each token
was unbracketed alone: ``공 일 공``, ``3 천 5 백``. Lexical and Words keep the model's tokens; a joined number spans
its tokens' times."""

from __future__ import annotations

import json
import random
from pathlib import Path

import httpx
import pytest
import srt

from speech_recognizer.models import LoadedModel
from speech_recognizer.numbers import COUNTERS, DIGITS, MONTHS, PARTICLES, PHONE_SEPARATORS, UNITS, VERSUS, WITH_PARTICLE, numbers
from speech_recognizer.openai_compat import answer as openai_answer
from speech_recognizer.results import OutputFormat, Profanity, display, phrase_json, written, written_words
from speech_recognizer.subtitles import cues
from speech_recognizer.transcript import Alternative, Phrase, Word
from speech_recognizer.vosk_ws import final_json

from ..conftest import CHUNK
from ..support import CLOCK_TOLERANCE, Reference, ServerThread, concat, read_wav, speak, vosk_reference
from .test_written_forms import NO_WORDS, NUMBER_TOKENS, output_words

REST = "/speech/recognition/conversation/cognitiveservices/v1"

CASES = [
    # digit words, read one by one: a run is one digit string, ended by any other token
    ("[공] [일] [공]", "010"),
    ("[공] [일] [공] 에 [일] [이] [삼] [사]", "010 에 1234"), ("[일] [이] [삼] 에 [사] [오] [육] [칠] 에 [팔] [구] [공] [일]", "123 에 4567 에 8901"),
    ("[영] [구]", "09"),
    ("[공] [일] 오후", "01 오후"),
    ("번호 는 [일] [일] [구]", "번호 는 119"),
    # ... in a phone number's shape (010, 070, 02, an old mobile prefix or an area code first, then 7 or 8 digits; 080
    # and 7; a nationwide 15xx, 16xx or 18xx and 4): hyphenated, the hyphen said aloud (에, 의) between its groups part of it
    ("[공] [일] [공] [일] [이] [삼] [사] [오] [육] [칠] [팔]", "010-1234-5678"),
    ("[공] [일] [공] 에 [일] [이] [삼] [사] 에 [오] [육] [칠] [팔]", "010-1234-5678"),
    ("[공] [일] [공] 의 [일] [이] [삼] [사] 의 [오] [육] [칠] [팔]", "010-1234-5678"),
    ("[공] [일] [공] 에 [일] [이] [삼] [사] [오] [육] [칠] [팔]", "010-1234-5678"),
    ("[영] [칠] [영] [일] [이] [삼] [사] [오] [육] [칠] [팔]", "070-1234-5678"),
    ("[공] [이] [일] [이] [삼] [사] [오] [육] [칠]", "02-123-4567"), ("[공] [이] 에 [일] [이] [삼] [사] 에 [오] [육] [칠] [팔]", "02-1234-5678"),
    ("[공] [삼] [일] [일] [이] [삼] [사] [오] [육] [칠]", "031-123-4567"), ("[공] [육] [사] 에 [일] [이] [삼] [사] 에 [오] [육] [칠] [팔]", "064-1234-5678"),
    ("전화 [공] [일] [공] [일] [이] [삼] [사] [오] [육] [칠] [팔] 번으로", "전화 010-1234-5678번으로"),
    ("[공] [일] [공] [일] [이] [삼] [사] [오] [육] [칠] [팔] 에 [공] [이] [일] [이] [삼] [사] [오] [육] [칠]", "010-1234-5678 에 02-123-4567"),
    ("[공] [일] [일] [일] [이] [삼] [사] [오] [육] [칠] [팔]", "011-1234-5678"), ("[공] [일] [칠] 에 [일] [이] [삼] 에 [오] [육] [칠] [팔]", "017-123-5678"),
    ("[공] [팔] [공] [일] [이] [삼] [사] [오] [육] [칠]", "080-123-4567"),
    ("[일] [오] [팔] [팔] [일] [이] [삼] [사]", "1588-1234"), ("[일] [오] [팔] [팔] 에 [일] [이] [삼] [사]", "1588-1234"),
    ("[일] [육] [공] [공] 의 [공] [공] [일] [이]", "1600-0012"), ("[일] [팔] [공] [공] [일] [이] [삼] [사] 번", "1800-1234번"),
    # ... and only there: not another length, prefix or grouping
    ("[공] [일] [공] [일] [이] [삼] [사] [오] [육] [칠]", "0101234567"), ("[공] [일] [공] [일] [이] [삼] [사] [오] [육] [칠] [팔] [구]", "010123456789"),
    ("[공] [이] [일] [이] [삼] [사] [오] [육]", "02123456"),
    ("[공] [일] [공] [일] [이] 에 [삼] [사] [오] [육] [칠] [팔]", "01012 에 345678"), ("[공] [일] [공] 에 [일] [이] [삼] [사] 에", "010 에 1234 에"),
    ("[공] [일] [공] 과 [일] [이] [삼] [사] 과 [오] [육] [칠] [팔]", "010 과 1234 과 5678"), ("[공] [이] [일] [이] [삼] [쩜] [오]", "02123.5"),
    ("[공] [팔] [공] [일] [이] [삼] [사] [오] [육] [칠] [팔]", "08012345678"), ("[일] [오] [팔] [팔] [일] [이] [삼]", "1588123"),
    ("[일] [오] [팔] 에 [팔] [일] [이] [삼] [사]", "158 에 81234"), ("[일] [이] [삼] [사] [오] [육] [칠] [팔]", "12345678"),
    ("[일] [오] [팔] [팔] [일] [이] [삼] [사] [오]", "158812345"),
    # numbers read whole, alone and side by side
    ("[9]", "9"), ("[09] 시", "09시"), ("[99]", "99"), ("[3] [5]", "3 5"), ("오후 [9] 시", "오후 9시"),
    # Sino-Korean composition within four digits
    ("[3] (천) [5] (백)", "3500"),
    ("[3] (천) [5] (백) [50]", "3550"),
    ("[3] (백) [50] 원", "350원"),
    ("(백)", "100"), ("(천) (백) (십)", "1110"), ("(십) [오]", "15"), ("(십) [5]", "15"), ("[2] (십) [5]", "25"),
    ("[삼] (백)", "300"), ("삼 (백)", "300"), ("삼 (백) 원", "300원"), ("(백) [05]", "105"),
    # large units stay written after their numeral, each ending a word
    ("[2] {만}", "2만"), ("삼 {만} 원", "3만 원"), ("[5] {만} 유언", "5만 유언"), ("[13] 만", "13만"), ("[4] 억", "4억"),
    ("[1] {억} [2] (천) {만}", "1억 2000만"), ("(백) {만}", "100만"), ("[3] (천) {만} [5] (천)", "3000만 5000"),
    ("[22] 조 원", "22조 원"), ("[1] 만 [5]", "1만 5"),
    # the point between a number and digits
    ("[3] [쩜] [5]", "3.5"), ("삼 [쩜] [오]", "3.5"), ("이 일 [쩜] [사] 함", "이 1.4 함"), ("[영] [쩜] [오]", "0.5"),
    ("영 [쩜] [공] [오]", "0.05"), ("[3] [쩜] [14]", "3.14"), ("[1] [쩜] [5] {억}", "1.5억"), ("[3] (백) [쩜] [오]", "300.5"),
    # unmarked words stay words: only a marked token next to them says they are a number
    ("삼", "삼"), ("이 사람", "이 사람"), ("삼 만 원", "삼 만 원"), ("만 [3] 세", "만 3세"), ("백 명", "백 명"),
    # a counter or unit noun right after a number is written on it (Hangul orthography, article 43's proviso)
    ("[5] 명", "5명"), ("[3] 개", "3개"), ("[10] 분", "10분"), ("[20] 살", "20살"), ("[3] 층", "3층"), ("[5] 번", "5번"),
    ("[2] (천) [24] 년 [3] 월 [5] 일", "2024년 3월 5일"), ("[2] 시간 [30] 분", "2시간 30분"), ("[5] 마리 의", "5마리 의"),
    ("[3] [쩜] [5] 퍼센트", "3.5퍼센트"), ("[1] [쩜] [5] 킬로그램", "1.5킬로그램"), ("[일] [일] [구] 번", "119번"),
    ("(백) 미터", "100미터"), ("[5] <UNK> 명", "5명"), ("[5] 명 명", "5명 명"), ("[3] 일 일", "3일 일"),
    # ... not after 만, 억, 조 (article 44 spaces by 만), nor after a plain word, nor a word that is no counter
    ("[3] {만} 원", "3만 원"), ("[1] {억} [5] (천) {만} 원", "1억 5000만 원"), ("[1] {만} [5] (천) 원", "1만 5000원"),
    ("다섯 명", "다섯 명"), ("삼 개", "삼 개"), ("오후 시", "오후 시"), ("[3] 이", "3 이"),
    ("[3] 사", "3 사"), ("[3] 점 [5]", "3 점 5"), ("[3] 등", "3 등"), ("[1] 시 반", "1시 반"), ("[3] 일 (백)", "3 100"),
    ("명", "명"), ("[쩜] 명", "쩜 명"), ("[3] [쩜] 명", "3 쩜 명"),
    # dates, times and money as the counters write them
    ("이 (천) [24] 년 [3] 월 [5] 일", "2024년 3월 5일"), ("(십) [2] 월 [25] 일", "12월 25일"), ("[3] 시 [30] 분 [10] 초", "3시 30분 10초"),
    ("유월 [5] 일", "6월 5일"), ("시월", "10월"), ("[2] (천) [24] 년 시월 [3] 일", "2024년 10월 3일"), ("유월절", "유월절"),
    ("오후 [2] 시 삼 (십) 분", "오후 2시 30분"), ("[5] {만} 원", "5만 원"), ("[5] (천) 원", "5000원"), ("[1] (천) [9] (백) [99] 년", "1999년"),
    # 대 between two numbers is "versus" (article 45: 청군 대 백군), spaced: a score or ratio; the counter otherwise
    ("[3] 대 [1]", "3 대 1"), ("[3] 대 [1] 로", "3 대 1 로"), ("[2] 대 [0] 으로", "2 대 0 으로"), ("[10] 대 (십) [2]", "10 대 12"),
    ("[삼] 대 [일]", "3 대 1"), ("[1] [쩜] [5] 대 [1]", "1.5 대 1"), ("[3] 대 [1] 대 [2]", "3 대 1 대 2"), ("[3] 대 [1] 명", "3 대 1명"),
    ("차 [3] 대", "차 3대"), ("[3] 대 가", "3대 가"), ("[3] 대가", "3대가"), ("[3] 대 명", "3대 명"), ("[3] 대 대", "3대 대"),
    # a counter with a particle on it, one token of the model's, likewise: its form after the counter's last sound
    ("[5] 명이", "5명이"), ("[5] 마리가", "5마리가"), ("[3] 시간에", "3시간에"), ("[3] 층에서는", "3층에서는"), ("[3] 개씩", "3개씩"),
    ("[2] (천) [24] 년부터", "2024년부터"), ("[5] 월까지", "5월까지"), ("[10] 살로", "10살로"), ("[3] 원으로", "3원으로"),
    ("[1] 인당", "1인당"), ("[3] [쩜] [5] 톤을", "3.5톤을"), ("[1] {만} [5] (천) 원을", "1만 5000원을"), ("[3] 일부터", "3일부터"),
    ("[2] 일로부터", "2일로부터"), ("[5] <UNK> 명의", "5명의"), ("[5] 명이 명이", "5명이 명이"), ("[1] 시쯤 반", "1시쯤 반"),
    # ... with the same guards, and not where the particle's form does not fit, nor where it is another word
    ("[3] {만} 원을", "3만 원을"), ("다섯 명이", "다섯 명이"), ("삼 개씩", "삼 개씩"), ("명이", "명이"), ("[3] 점이", "3 점이"),
    ("[3] 차이", "3 차이"), ("[3] 살으로", "3 살으로"), ("[3] 원로", "3 원로"), ("[3] 원인", "3 원인"), ("[3] 시대", "3 시대"),
    ("[3] 초과", "3 초과"), ("[3] 일만", "3 일만"), ("[3] 원만", "3 원만"), ("[3] 분만", "3 분만"), ("[3] 시랑", "3 시랑"),
    ("[3] 월경", "3 월경"), ("가로 [3] 세로 [4]", "가로 3 세로 4"), ("[3] 이가", "3 이가"), ("[3] 명이다", "3 명이다"),
    # no-word markers are dropped and part no number
    ("[3] <UNK> (천)", "3000"), ("<UNK> [공] [일] <SPOKEN_NOISE> [공]", "010"),
    # malformed: nothing crashes, no token is lost
    ("{만}", "만"), ("{만} {만}", "만 만"), ("[쩜]", "쩜"), ("[쩜] [쩜]", "쩜 쩜"), ("[쩜] [오]", "쩜 5"),
    ("[3] [쩜]", "3 쩜"), ("[3] [쩜] 오후", "3 쩜 오후"), ("(백) (천)", "100 1000"), ("(백) (백)", "100 100"),
    ("(십) (백)", "10 100"), ("[35] (백)", "35 100"), ("[공] (백)", "0 100"), ("[삼] [오] (백)", "3 500"),
    ("{조} [3]", "조 3"), ("{억} {만}", "억 만"), ("[05] (백)", "05 100"), ("(백) [0]", "100 0"),
    ("[2] {만} {만}", "2만 만"), ("[3] [쩜] [5] [쩜] [5]", "3.5 쩜 5"), ("오후 [쩜]", "오후 쩜"),
]


@pytest.mark.unit
@pytest.mark.parametrize(("tokens", "shown"), CASES)
def test_the_numbers_marked_tokens_spell_are_written_as_numerals(tokens: str, shown: str) -> None:
    assert written(tokens) == shown
    assert written(shown) == shown, "written again, the same"


@pytest.mark.unit
def test_no_counter_is_a_word_that_reads_as_a_number_or_as_often_as_another_word() -> None:
    assert COUNTERS & {*DIGITS, *UNITS} == {"일"}, "a digit word or a unit is the number's own; 일 the day where it begins none"
    assert not COUNTERS & {"점", "등", "반", "줄", "알", "통", "표", "기", "부", "달"}, "docs/engine.md says why these are out"


@pytest.mark.unit
def test_a_counter_takes_the_particles_form_that_fits_its_last_sound() -> None:
    assert {"명이", "마리가", "원은", "세는", "명을", "마리를", "원으로", "세로부터", "살로", "일로부터", "명이나", "마리나"} <= WITH_PARTICLE
    assert not {"명가", "마리이", "원는", "세은", "명를", "마리을", "원로", "살으로", "명나", "마리이나", "차이", "평가"} & WITH_PARTICLE
    assert not WITH_PARTICLE & {*DIGITS, *UNITS, *NUMBER_TOKENS}, "no counter with a particle reads as a number"
    assert not {"초과", "분만", "원만", "일만", "회랑", "월경", "원인", "시대", "세로"} & WITH_PARTICLE, "docs/engine.md says why"


def test_every_counter_is_a_word_of_the_ko_models_table(model: LoadedModel) -> None:
    """The model emits each as a word of its own, never marked (its marked tokens are the numbers alone), and
    glues some to a particle: each particle of the list is on a counter in its table (명이, 시간에, 개씩, 살로)."""
    vocabulary = set(output_words(model.path / "graph" / "Gr.fst"))
    assert sorted(COUNTERS - vocabulary) == []
    assert [forms for forms in PARTICLES if not {c + f for c in COUNTERS for f in forms} & WITH_PARTICLE & vocabulary] == []
    assert {"명이", "명의", "명을", "시간에", "원을", "개씩", "년부터", "월까지", "층에서", "살로"} <= vocabulary
    assert {VERSUS, *PHONE_SEPARATORS} <= vocabulary, "대 and a phone number's hyphen said aloud are words of the table"
    assert set(MONTHS) <= vocabulary and not {m + p for m in MONTHS for forms in PARTICLES for p in forms} & vocabulary, \
        "유월 and 시월 are words of the table, never glued to a particle"


def covered(tokens: list[str]) -> list[list[int]]:
    """For each written word of ``tokens`` (as words timed by their index), the indices of the tokens it spans."""
    words = written_words([Word(token, i, i + 1, 1.0) for i, token in enumerate(tokens)])
    return [list(range(int(w.start), int(w.end))) for w in words]


@pytest.mark.unit
@pytest.mark.parametrize(("tokens", "shown"), CASES)
def test_each_token_is_in_one_written_word_and_in_order(tokens: str, shown: str) -> None:
    """The written words partition the tokens (bar the no-word markers) in order: none lost, none twice."""
    split = tokens.split()
    spans = covered(split)
    assert [w.text for w in written_words([Word(t, i, i + 1, 1.0) for i, t in enumerate(split)])] == shown.split()
    assert [i for span in spans for i in span if split[i] not in NO_WORDS] == [i for i, t in enumerate(split) if t not in NO_WORDS]


@pytest.mark.unit
def test_any_sequence_of_number_tokens_and_words_is_written_whole() -> None:
    """Random sequences of the model's number tokens, words that read as numbers and others, and no-word markers:
    never an error, every token in exactly one written word, no bracket left where a number was written."""
    pool = NUMBER_TOKENS + ["삼", "이", "영", "만", "억", "조", "백", "오후", "원", "에", "명", "일", "시", "점", "명이", "일부터", "원을", "대", "의"] + NO_WORDS
    rng = random.Random(20261205)
    for _ in range(3000):
        tokens = [rng.choice(pool) for _ in range(rng.randint(1, 12))]
        spans = covered(tokens)
        kept = [i for i, t in enumerate(tokens) if t not in NO_WORDS]
        assert [i for span in spans for i in span if tokens[i] not in NO_WORDS] == kept, tokens
        for number in numbers([tokens[i] for i in kept]):
            assert number.stop > number.start and not any(c in number.text for c in "[](){}"), (tokens, number)


@pytest.mark.unit
def test_digits_read_one_by_one_keep_every_digit_and_are_hyphenated_only_in_a_phone_numbers_shape() -> None:
    """Random runs of digit words, 0 first more often than not, parted now and then by the spoken hyphen: the
    digits read are the digits written, in order, and a word with hyphens is a Korean phone number's groups."""
    rng = random.Random(20261205)
    words = [f"[{word}]" for word in DIGITS]
    shapes = {(3, 4, 4), (2, 3, 4), (2, 4, 4), (3, 3, 4)}
    hyphenated, nationwide = 0, 0
    for _ in range(3000):
        tokens = [rng.choice(words) for _ in range(rng.randint(1, 12))]
        if (first := rng.random()) < 0.7:
            tokens[0] = "[공]" if first < 0.5 else "[일]"
        for at in sorted(rng.sample(range(1, len(tokens)), min(len(tokens) - 1, rng.randint(0, 2))), reverse=True):
            tokens.insert(at, rng.choice(("에", "의")))
        shown = written(" ".join(tokens)).split()
        assert "".join(c for word in shown for c in word if c.isdigit()) == "".join(DIGITS[t[1:-1]] for t in tokens if t[0] == "["), tokens
        for word in shown:
            if "-" in word:
                hyphenated += 1
                shape = tuple(map(len, word.split("-")))
                assert (word[0] == "0" and shape in shapes) or (word[:2] in ("15", "16", "18") and shape == (4, 4)), (tokens, word)
                nationwide += shape == (4, 4)
    assert hyphenated > 30 and nationwide > 2, f"the shapes come up: {hyphenated}, {nationwide} nationwide"


def _phrase(*tokens: tuple[str, float, float, float]) -> Phrase:
    words = tuple(Word(*token) for token in tokens)
    return Phrase((Alternative(" ".join(w.text for w in words), 0.8, words),), words[0].start, words[-1].end)


PRICE = _phrase(("가격", 0.1, 0.4, 0.9), ("[3]", 0.5, 0.7, 0.8), ("(천)", 0.7, 0.9, 0.6), ("<UNK>", 0.9, 1.0, 0.1),
                ("[5]", 1.0, 1.2, 0.9), ("(백)", 1.2, 1.5, 0.7), ("원", 1.5, 1.8, 1.0))


@pytest.mark.unit
def test_a_joined_number_spans_its_tokens_times_and_is_as_sure_as_its_least_sure_token() -> None:
    assert written_words(PRICE.words[:-1]) == [Word("가격", 0.1, 0.4, 0.9), Word("3500", 0.5, 1.5, 0.6)]
    assert written_words(PRICE.words) == [Word("가격", 0.1, 0.4, 0.9), Word("3500원", 0.5, 1.8, 0.6)], "and its counter"
    unsure = (*PRICE.words[:-1], Word("원", 1.5, 1.8, 0.3), Word("정도", 1.8, 2.0, 1.0))
    assert written_words(unsure)[1:] == [Word("3500원", 0.5, 1.8, 0.3), Word("정도", 1.8, 2.0, 1.0)]


@pytest.mark.unit
def test_every_written_form_writes_the_number_and_the_lexical_ones_keep_the_tokens() -> None:
    body = phrase_json(PRICE, OutputFormat.DETAILED, Profanity.MASKED, word_timings=True)
    best = body["NBest"][0]
    assert body["DisplayText"] == best["Display"] == "가격 3500원."
    assert best["ITN"] == best["MaskedITN"] == "가격 3500원"
    assert best["Lexical"] == "가격 [3] (천) [5] (백) 원"
    assert [w["Word"] for w in best["Words"]] == ["가격", "[3]", "(천)", "[5]", "(백)", "원"], "the model's tokens, each at its time"

    assert [(c.start, c.end, c.text) for c in cues([PRICE])] == [(0.1, 1.8, "가격 3500원")]
    assert [(c.start, c.end, c.text) for c in cues([PRICE], max_line=4, max_lines=1)] == [
        (0.1, 0.5, "가격"), (0.5, 1.8, "3500원")], "a cue holding the number spans its tokens, its counter's too"
    verbose = json.loads(openai_answer([PRICE], "verbose_json", {"segment", "word"}, "ko-KR", 1.8).body)
    assert verbose["text"] == verbose["segments"][0]["text"] == "가격 3500원"
    assert verbose["words"] == [{"word": "가격", "start": 0.1, "end": 0.4}, {"word": "3500원", "start": 0.5, "end": 1.8}]
    assert final_json(PRICE, 0, True, True) == {"text": "가격 3500원", "result": [
        {"conf": 0.9, "end": 0.4, "start": 0.1, "word": "가격"}, {"conf": 0.6, "end": 1.8, "start": 0.5, "word": "3500원"}]}, \
        "/vosk asked for written words"
    assert final_json(PRICE, 0, True)["text"] == PRICE.text, "/vosk as Vosk said it"
    unspread = Phrase((Alternative(PRICE.text, 0.8, ()),), 0.0, 1.0)
    assert [c.text for c in cues([unspread])] == ["가격 3500원"], "without word times too"


# ---- real audio: espeak-ng's Korean through the real model -----------------------------------------------------

#: Sentences whose espeak-ng recording the model hears as a number of several tokens (seen: "오만 원" as
#: ``[5] {만} 유언``, "칠 점 삼" as ``이 일 [쩜] [사] 함``, "오 월" as ``[5] 월``: a counter, unmarked, after the number;
#: "오 위에" as ``[5] 위에``: a counter with its particle, one token); many others (삼백, 삼만 원, phone numbers,
#: most counters, most counters with a particle) it mishears.
SPOKEN_NUMBERS = ("오만 원", "칠 점 삼", "오 월", "오 위에")


@pytest.fixture(scope="module", params=SPOKEN_NUMBERS)
def spoken_number(request: pytest.FixtureRequest, audio_dir: Path, model: LoadedModel) -> tuple[Path, Reference]:
    """One utterance (laid out as the tests' speech_wav), and what in-process Vosk hears in it."""
    index = SPOKEN_NUMBERS.index(request.param)
    wav = concat([speak(request.param, audio_dir / f"number{index}.raw.wav")], audio_dir / f"number{index}.wav", gap=0.5)
    pcm, rate, _ = read_wav(wav)
    return wav, vosk_reference(model.model, pcm, rate, CHUNK, runs=1)  # one run: test_equivalence's determinism test covers Vosk agreeing with itself


def test_a_number_the_model_hears_reads_as_a_numeral_in_displaytext_and_spans_its_tokens_times(
        server: ServerThread, spoken_number: tuple[Path, Reference]) -> None:
    wav, ref = spoken_number
    (said,) = ref.texts
    tokens = said.split()
    joined = [n for n in numbers(tokens) if n.stop - n.start > 1]
    assert joined, f"the recording gives no number of several tokens: {said!r}"
    number = joined[0]
    body = wav.read_bytes()
    detailed = httpx.post(f"{server.http}{REST}", params={"language": "ko-KR", "format": "detailed", "wordLevelTimestamps": "true"},
                          content=body, headers={"Content-Type": "audio/wav"}, timeout=60).json()
    best = detailed["NBest"][0]
    assert detailed["DisplayText"] == best["Display"] == display(written(said))
    assert number.text in best["ITN"].split() and any(c.isdigit() for c in number.text), (number, best["ITN"])
    assert best["Lexical"] == said and [w["Word"] for w in best["Words"]] == tokens, "the model's tokens"

    openai = httpx.post(f"{server.http}/v1/audio/transcriptions", files={"file": ("a.wav", body)},
                        data={"response_format": "verbose_json", "timestamp_granularities[]": "word"}, timeout=60).json()
    assert openai["text"] == best["ITN"]
    heard = ref.phrases[0].words
    (word,) = [w for w in openai["words"] if w["word"] == number.text]
    assert word["start"] == pytest.approx(heard[number.start].start, abs=CLOCK_TOLERANCE)
    assert word["end"] == pytest.approx(heard[number.stop - 1].end, abs=CLOCK_TOLERANCE), "from its first token's start to its last's end"
    subtitles = httpx.post(f"{server.http}{REST}", params={"language": "ko-KR", "format": "srt"}, content=body,
                           headers={"Content-Type": "audio/wav"}, timeout=60).text
    assert [c.content for c in srt.parse(subtitles)] == [best["ITN"]]
