"""Which parts of a log line the server's own ``ApiKey`` hides (:func:`speech_recognizer.logs.redact`).

tests/recognizer/test_secrets.py runs the server with a real-length key and reads its logs; these are the short keys,
which as substrings hid pieces of other words ("ko-KR" logged as "***o-KR" with ``ApiKey=k``).
"""

from __future__ import annotations

import logging

import pytest

from speech_recognizer.logs import REDACTED, SUBSTRING_SECRET_CHARS, SecretsRedacted, redact

pytestmark = pytest.mark.unit

LINE = '127.0.0.1:5 - "WebSocket /vosk?language=ko-KR&x={key}" [accepted] Bearer {key}; {key}, ({key}).'


@pytest.mark.parametrize("key", ["k", "abc", "k-1", "1234567"])
def test_a_short_key_is_hidden_where_it_stands_alone_and_nowhere_else(key: str) -> None:
    assert len(key) < SUBSTRING_SECRET_CHARS
    line = LINE.format(key=key) + " ko-KR kokr k_1 xabcx 12345678 xk-1"
    hidden = redact(line, [key])
    assert hidden == LINE.format(key=REDACTED) + " ko-KR kokr k_1 xabcx 12345678 xk-1"


def test_a_key_of_eight_characters_or_more_is_hidden_wherever_it_is() -> None:
    key = "k" * SUBSTRING_SECRET_CHARS
    assert redact(f"x{key}x {key}_ {key}", [key]) == f"x{REDACTED}x {REDACTED}_ {REDACTED}"


def test_the_filter_hides_a_short_key_in_arguments_and_keeps_the_rest() -> None:
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s" %d', ("127.0.0.1:5", "GET", "/ready?key=k&lang=ko-KR", 200), None)
    SecretsRedacted(["k"]).filter(record)
    assert record.getMessage() == f'127.0.0.1:5 - "GET /ready?key={REDACTED}&lang=ko-KR" 200'
