"""Hostile multipart forms on OpenAI's ``POST /v1/audio/transcriptions`` through the gateway, which reads
each form itself up to its ``language`` field (python-multipart's push parser) and relays it to a
recognizer process: the recognizer's test (tests/recognizer/test_openai_forms.py), its requests and
its checks, with the gateway in front of two locales (the form must name one). Every answer is a
status of the failure table with a reason, in bounded time, and neither the gateway's log nor the
recognizers' output holds a traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from speech_operator import gateway_openai
from speech_recognizer.results import lexical
from tests.recognizer.test_openai_forms import BODY_TIMEOUT_SECONDS, Target, run_hostile
from tests.support import Reference

from .conftest import KEY, OTHER_LOCALE, Locales, two_locales

#: The gateway's deadline for reading a form up to its language field, here (60 s otherwise): a Content-Length
#: too large on a form whose file comes first is answered after it.
FORM_READ_SECONDS = 2.0


@pytest.fixture(scope="module")
def fronted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Locales]:
    """conftest's two locales (ko-KR without a key, OTHER_LOCALE with :data:`KEY`), their recognizers refusing a
    body that pauses after :data:`BODY_TIMEOUT_SECONDS`."""
    with two_locales(tmp_path_factory.mktemp("gateway-forms"), f"Http:BodyTimeoutSeconds={BODY_TIMEOUT_SECONDS}") as found:
        yield found


def test_hostile_forms_through_the_gateway(fronted: Locales, speech_wav: Path, speech_ref: Reference,
                                           caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gateway_openai, "FORM_READ_SECONDS", FORM_READ_SECONDS)
    expected_text = " ".join(lexical(t) for t in speech_ref.texts)
    # A body that is not a form the gateway can read has no language field: with two locales, the gateway says to add one.
    # Left out: a Content-Length too small. What follows the request then comes in the same segment, and the gateway's
    # parser fails on it (llhttp: "Data after `Connection: close`", or a bad method when kept alive) in the same read
    # as the request, which is lost: the client gets that 400 in place of the request's answer.
    target = Target(OTHER_LOCALE, KEY, language_needed=True, statuses=(("not_form", 400),), left_out=("cl_short",))
    took, reached = run_hostile(fronted.stack.port, target, speech_wav.read_bytes(), expected_text, caplog, "aiohttp")
    assert reached == {*target.mutations, "none"}, reached
    for r in fronted.recognizers.values():
        assert "Traceback" not in r.output(), r.output()[-3000:]
    assert fronted.stack.app is not None
    assert took < 90, f"the examples took {took:.0f} s: fewer examples"
