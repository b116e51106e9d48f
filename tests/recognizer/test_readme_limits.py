"""The numbers of README's Limits table and routes that are no setting, read back against the constants that hold them.

A setting's default quoted anywhere is checked by tests/recognizer/test_settings.py; these are the server's fixed
bounds the README states in prose (the keep-alive, the lingering close, the request ids a Speech SDK connection
remembers, a vosk config's alternatives, the preStop pause, the decoding block). Each phrase must still be found,
and each number in it is the constant's.
"""

from __future__ import annotations

import re

import pytest

from speech_recognizer import audio, contract, serving, vosk_ws
from speech_recognizer.http_limits import HttpLimits
from speech_recognizer.usp.frames import RequestIds
from tests.doc_tables import README, one_line

pytestmark = pytest.mark.unit  # no model, server, operator or browser: the quick run (README, Tests)

#: A phrase of the README with a number in it -> the value that number is (in the phrase's unit).
FACTS = {
    r"\| an idle kept-alive HTTP connection \| (\d+) s between two requests": serving.KEEPALIVE_SECONDS,
    r"an idle kept-alive connection is closed after (\d+) s, as the recognizer's": serving.KEEPALIVE_SECONDS,
    r"read and dropped \((\d+) s at most\)": HttpLimits.linger_seconds,
    r"remembers its last (\d+) finished request ids": RequestIds.REMEMBERED,
    r"`max_alternatives` at most (\d+)": vosk_ws.MAX_ALTERNATIVES,
    r"\| `GET /pre-stop` \| answers after (\d+) s": contract.PRE_STOP_SECONDS,
    r"\(`GET /pre-stop`\) holds it (\d+) s": contract.PRE_STOP_SECONDS,
    r"and one (\d+) MiB block": audio._BLOCK_BYTES / (1 << 20),
}


@pytest.mark.parametrize(("phrase", "value"), FACTS.items(), ids=list(FACTS))
def test_readme_states_the_servers_fixed_bounds(phrase: str, value: float) -> None:
    said = re.findall(phrase, one_line(README.read_text()))
    assert said, f"README no longer says {phrase!r}: update FACTS with what it says now"
    assert all(float(n) == value for n in said), f"README says {said} for {phrase!r}; the server has {value:g}"
