"""The ko-KR model's marked number tokens written as numerals (inverse text normalization).

The model's word table marks how a number was said (docs/engine.md, "Result forms and the model's
marked tokens"): ``[0]``..``[99]`` and ``[00]``..``[09]`` (a number read whole), the digit words
``[공]`` ``[영]`` ``[일]``..``[구]`` (read digit by digit), ``[쩜]`` (point), the multipliers ``(십)``
``(백)`` ``(천)`` and the units ``{만}`` ``{억}`` ``{조}``. :func:`numbers` finds the numbers such a
token sequence spells and writes each in Korean written style:

- a run of digit words is one digit string: ``[공] [일] [공]`` -> ``010``; any other token ends it;
- a run in the shape of a Korean phone number (:data:`PHONE_PREFIXES`, :data:`NATIONWIDE_PREFIXES`) is written
  with hyphens: the decoder's tokens carry no pause, so ``010 1234 5678`` read digit by digit comes out as one run,
  written ``010-1234-5678`` (``1588-1234``); the hyphen said aloud (``에``) between its groups is part of it too;
- multipliers compose Sino-Korean style: ``[3] (천) [5] (백)`` -> ``3500``, ``(백) [50]`` -> ``150``;
- ``[쩜]`` between a number and digits is a decimal point: ``[3] [쩜] [5]`` -> ``3.5``;
- ``{만}`` ``{억}`` ``{조}`` stay written after their numeral, each such unit ending a word, as
  Korean writes large numbers (Hangul orthography, article 44: spacing by 만): ``[2] {만}`` -> ``2만``,
  ``[1] {억} [2] (천) {만}`` -> ``1억`` ``2000만``, ``[1] [쩜] [5] {억}`` -> ``1.5억``;
- a counter or unit noun (:data:`COUNTERS`) right after a number that ends in a digit is written on it,
  as Korean writes one with Arabic numerals (Hangul orthography, article 43's proviso): ``[5] 명`` ->
  ``5명``, ``오후 [9] 시`` -> ``오후`` ``9시``; after 만, 억 or 조 the space stays (``3만 원``); so is a token
  of the model's that holds a counter and a particle (:data:`WITH_PARTICLE`): ``[5] 명이`` -> ``5명이``;
  but 대 between two numbers is "versus", spaced: ``[3] 대 [1]`` -> ``3 대 1`` (``[3] 대`` -> ``3대``);
- the months said irregularly, plain words of the table, are written as the others: ``유월`` -> ``6월``, ``시월`` -> ``10월``.

Unmarked words are left alone, except where a marked token says they belong to a number: the model
writes the digit before a multiplier or point unmarked (``삼 (백)``, ``삼 {만}``, ``삼 [쩜] [오]``:
-> ``300``, ``3만``, ``3.5``), a unit after a number now and then (``[13] 만`` -> ``13만``), and a
counter always (``[5] 명``).
Anything else (``(백)`` ends where a larger multiplier follows, a bare ``{만}``, a ``[쩜]`` with no
digits after it) is no number here, and its tokens are written one by one as before.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate

#: Digit words (said 공, 영, 일, ..., 구) and their digits.
DIGITS = {"공": "0", "영": "0", "일": "1", "이": "2", "삼": "3", "사": "4", "오": "5", "육": "6", "칠": "7", "팔": "8", "구": "9"}
#: Multipliers within a group of four digits.
MULTIPLIERS = {"(십)": 10, "(백)": 100, "(천)": 1000}
#: The units of four digits each, written after their numeral.
UNITS = ("만", "억", "조")
POINT = "[쩜]"
#: Counters and unit nouns written on the number before them (the model's tokens: none of them is marked).
#: Left out as they are other words after a numeral as often: 이 and 사 (digit words), 점 (the point said
#: aloud), 등 (also "etc." after a list), 반 (the half in ``1시 반``), 줄, 알, 통, 표, 기, 부, 달.
#: docs/engine.md, "Numbers written as numerals", says why these.
COUNTERS = frozenset((
    # people, age, things
    "명", "인", "인분", "살", "세", "개", "대", "권", "장", "잔", "병", "마리", "켤레", "벌", "송이", "그루", "채",
    "곡", "편", "곳", "군데", "건",
    # order and rank
    "번", "번째", "호", "층", "위", "회", "차", "학년", "승", "패",
    # time and date
    "년", "월", "일", "주", "주일", "시", "시간", "분", "초", "개월", "주년", "박", "세기", "분기",
    # money and measures
    "원", "달러", "유로", "엔", "위안", "퍼센트", "프로", "도", "미터", "킬로미터", "센티미터", "밀리미터",
    "킬로", "킬로그램", "그램", "톤", "리터", "센티", "밀리", "인치", "평",
))
#: Particles and suffixes written on a counter, as the model's table has them glued to one (``명이``, ``시간에``,
#: ``개씩``): a counter followed by one of these is a counter too. A pair where the form depends on the sound
#: before it is (after a consonant, after a vowel; 로 after ㄹ too): ``명이``, ``마리가``; ``원으로``, ``살로``, ``차로``.
#: Each one ends some counter in the model's table. Left out: 만 (the unit: 일만 is 10,000; 분만, 원만 are
#: words), 과/와 (``3 초과``: more than 3), 랑/이랑 (회랑, 시랑), 경 (박경, 월경: names and words), 여 (대여,
#: 잔여), 대 (a counter of its own: 시대, 세대), 인/이다 (the copula: 원인, 시인, 개인). docs/engine.md says why.
PARTICLES: tuple[tuple[str, str], ...] = (
    ("이", "가"), ("은", "는"), ("을", "를"), ("으로", "로"), ("으로부터", "로부터"), ("이나", "나"),
    *((p, p) for p in ("의", "에", "에는", "에도", "에서", "에서는", "에서도", "에게", "보다", "만큼", "도", "까지", "부터",
                       "마다", "뿐", "씩", "째", "쯤", "간", "당", "짜리", "가량", "께")),
)
#: 대 between two numbers is "versus" (對), a dependent noun spaced on both sides: a score or ratio reads ``3 대 1``.
VERSUS = "대"
#: A phone number's first group (a mobile, internet-phone, toll-free or area code) and how many digits may follow
#: it, in two groups (the last of four): the mobile 010 and 070 take eight (``010-1234-5678``), the old mobile
#: prefixes (011, 016..019, still dialled) seven or eight, the toll-free 080 seven (``080-123-4567``), Seoul's 02
#: and the area codes seven or eight (``02-123-4567``, ``031-1234-5678``).
PHONE_PREFIXES: dict[str, tuple[int, ...]] = {
    "010": (8,), "070": (8,), "080": (7,), "02": (7, 8),
    **{code: (7, 8) for code in ("011", "016", "017", "018", "019", "031", "032", "033", "041", "042", "043", "044",
                                 "051", "052", "053", "054", "055", "061", "062", "063", "064")},
}
#: A nationwide number's (전국대표번호: a business's line, ``1588-1234``, ``1544-...``, ``1600-...``, ``1800-...``)
#: first digits: eight digits in all, two groups of four.
NATIONWIDE_PREFIXES = ("15", "16", "18")
#: The digits a phone number's run begins with.
_PHONE_FIRST = frozenset(prefix[0] for prefix in (*PHONE_PREFIXES, *NATIONWIDE_PREFIXES))
#: Words a phone number's hyphen is read as between its groups (``공일공에 일이삼사에 ...``): 에, or 의 (said 에 there).
PHONE_SEPARATORS = frozenset(("에", "의"))
#: The two months Korean says irregularly (육월 as 유월, 십월 as 시월), plain words of the model's table that name
#: nothing else: written as the other months are (``[5] 월`` -> ``5월``), ``유월 [5] 일`` -> ``6월 5일``.
MONTHS = {"유월": "6월", "시월": "10월"}
#: A counter and particle that is another word after a number as often: ``가로 [3] 세로 [4]`` (3 wide, 4 high).
OTHER_WORDS = frozenset(("세로",))
_MARKED_UNITS = frozenset(f"{{{unit}}}" for unit in UNITS)
#: Hangul syllables: the first's code point, how many final consonants (none first), ㄹ's place among them.
_HANGUL, _JONGSEONG, _RIEUL = 0xAC00, 28, 8
_WHOLE = re.compile(r"\[(\d\d?)\]")


@dataclass(frozen=True)
class Number:
    """A number the tokens ``start`` up to ``stop`` spell (with its unit or counter), written as ``text``."""

    text: str
    start: int
    stop: int


def _after(syllable: str, after_consonant: str, after_vowel: str) -> str:
    """The particle's form after ``syllable`` (a Hangul syllable): 이 after 명, 가 after 마리, 로 after 살 (ㄹ)."""
    final = (ord(syllable) - _HANGUL) % _JONGSEONG
    return after_vowel if final == 0 or (final == _RIEUL and after_consonant.startswith("으")) else after_consonant


#: Every counter with a particle on it, as one token: ``명이``, ``시간에``, ``개씩``, ``살로`` (not ``차이``: 차 takes 가).
WITH_PARTICLE = frozenset(noun + _after(noun[-1], *forms) for noun in COUNTERS for forms in PARTICLES) - OTHER_WORDS


def counter(token: str) -> bool:
    """Whether ``token`` is a counter, alone (:data:`COUNTERS`) or with a particle (:data:`WITH_PARTICLE`)."""
    return token in COUNTERS or token in WITH_PARTICLE


def _marked_digit(token: str) -> str | None:
    """``[삼]`` -> ``3``."""
    return DIGITS.get(token[1:-1]) if token.startswith("[") and token.endswith("]") else None


def _marked_number(token: str) -> str | None:
    """``[35]`` -> ``35``, ``[05]`` -> ``05``: the digits as the model writes them."""
    match = _WHOLE.fullmatch(token)
    return match.group(1) if match else None


def _coefficient(token: str) -> int | None:
    """The 1..9 a multiplier may follow: a marked digit word or number, or the digit word the model leaves unmarked."""
    digit = _marked_digit(token) or _marked_number(token) or DIGITS.get(token)
    return int(digit) if digit and len(digit) == 1 and digit != "0" else None


def _composed(tokens: Sequence[str], i: int) -> tuple[int, int] | None:
    """A Sino-Korean number below 10,000 from ``i``: coefficients and multipliers, largest first, and
    its ones (``[3] (천) [5] (백) [50]``); its value and where it ends, or None without a multiplier."""
    value, last, k = 0, 10_000, i
    while k < len(tokens):
        coefficient = _coefficient(tokens[k])
        if coefficient and k + 1 < len(tokens) and MULTIPLIERS.get(tokens[k + 1], last) < last:
            last = MULTIPLIERS[tokens[k + 1]]
            value, k = value + coefficient * last, k + 2
        elif MULTIPLIERS.get(tokens[k], last) < last:
            last = MULTIPLIERS[tokens[k]]
            value, k = value + last, k + 1
        else:
            break
    if k == i:
        return None
    ones = _marked_digit(tokens[k]) or _marked_number(tokens[k]) if k < len(tokens) else None
    if ones and 0 < int(ones) < last:
        value, k = value + int(ones), k + 1
    return value, k


def _digit_run(tokens: Sequence[str], i: int) -> tuple[str, int] | None:
    """The digit string a run of digit words from ``i`` spells (``[공] [일] [공]`` -> ``010``) and where it ends."""
    digits, k = "", i
    while k < len(tokens) and (digit := _marked_digit(tokens[k])):
        if k > i and _coefficient(tokens[k]) and k + 1 < len(tokens) and tokens[k + 1] in MULTIPLIERS:
            break  # 삼 오백: the 오 begins the next number
        digits, k = digits + digit, k + 1
    return (digits, k) if digits else None


def _phone_groups(digits: str) -> tuple[int, ...] | None:
    """The lengths of a Korean phone number's groups if ``digits`` has the shape of one (:data:`PHONE_PREFIXES`,
    :data:`NATIONWIDE_PREFIXES`)."""
    if len(digits) == 8 and digits.startswith(NATIONWIDE_PREFIXES):
        return 4, 4
    for prefix, rest in PHONE_PREFIXES.items():
        if digits.startswith(prefix) and len(digits) - len(prefix) in rest:
            return len(prefix), len(digits) - len(prefix) - 4, 4
    return None


def _phone(tokens: Sequence[str], i: int) -> tuple[str, int] | None:
    """A phone number read digit by digit from ``i``, hyphenated (``010-1234-5678``), and where it ends: one run
    of digit words, or up to three runs parted by a spoken hyphen (:data:`PHONE_SEPARATORS`) at its groups' ends."""
    runs: list[tuple[str, int]] = []
    run = _digit_run(tokens, i)
    while run and len(runs) < 3:
        runs.append(run)
        k = run[1]
        run = _digit_run(tokens, k + 1) if k + 1 < len(tokens) and tokens[k] in PHONE_SEPARATORS else None
    for n in range(len(runs), 0, -1):
        said = [group for group, _ in runs[:n]]
        digits = "".join(said)
        groups = _phone_groups(digits)
        if groups and set(accumulate(map(len, said))) <= set(ends := tuple(accumulate(groups))):
            return "-".join(digits[start:end] for start, end in zip((0, *ends[:-1]), ends, strict=True)), runs[n - 1][1]
    return None


def _integer(tokens: Sequence[str], i: int) -> tuple[str, int, bool] | None:
    """The whole number from ``i``: its digits, where it ends, and whether a marked token spelled it."""
    composed = _composed(tokens, i)
    if composed:
        return str(composed[0]), composed[1], True
    run = _digit_run(tokens, i)
    if run:
        return run[0], run[1], True
    whole = _marked_number(tokens[i])
    if whole:
        return whole, i + 1, True
    if tokens[i] in DIGITS:
        return DIGITS[tokens[i]], i + 1, False
    return None


def _versus(tokens: Sequence[str], k: int) -> bool:
    """Whether ``tokens[k]`` is 대 "versus" between two numbers (a score or ratio: ``[3] 대 [1]``), not the counter."""
    return tokens[k] == VERSUS and k + 1 < len(tokens) and _section(tokens, k + 1) is not None


def _section(tokens: Sequence[str], i: int) -> Number | None:
    """The number (a word of it: up to and with its unit) from ``i``, or None."""
    if tokens[i] in MONTHS:
        return Number(MONTHS[tokens[i]], i, i + 1)
    integer = _integer(tokens, i)
    if integer is None:
        return None
    text, k, marked = integer
    phone = _phone(tokens, i) if _marked_digit(tokens[i]) in _PHONE_FIRST else None
    if phone:
        text, k = phone
    elif k + 1 < len(tokens) and tokens[k] == POINT:
        fraction, f = "", k + 1
        while f < len(tokens) and (digits := _marked_digit(tokens[f]) or _marked_number(tokens[f])):
            fraction, f = fraction + digits, f + 1
        if fraction:
            text, k, marked = f"{text}.{fraction}", f, True
    if not phone and k < len(tokens) and (tokens[k] in _MARKED_UNITS or (marked and tokens[k] in UNITS)):
        text, k, marked = text + tokens[k].strip("{}"), k + 1, True
    elif marked and k < len(tokens) and counter(tokens[k]) and _section(tokens, k) is None and not _versus(tokens, k):
        text, k = text + tokens[k], k + 1  # 일 (백) is the next number, not the day
    return Number(text, i, k) if marked else None


def numbers(tokens: Sequence[str]) -> list[Number]:
    """Every number ``tokens`` (the model's words, no-word markers left out) spell, in order, none overlapping."""
    found: list[Number] = []
    i = 0
    while i < len(tokens):
        number = _section(tokens, i)
        if number:
            found.append(number)
            i = number.stop
        else:
            i += 1
    return found
