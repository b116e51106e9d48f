"""What the operator's handlers keep for the whole process is one thing, whichever object's handler makes it first.

kopf gives each object's handlers a shallow copy of the operator's memo (kopf/_core/reactor/inventory.py,
``copy.copy(memobase)``): what a handler adds to its memo stays that object's. The autoscaler was so kept, one per
SpeechToText, each with its HTTP client to the pods, and the cleanup, given the operator's own memo, closed none of
them: "Unclosed client session" at the exit of every test run that autoscaled (tests/gateway/test_wake.py)."""

from __future__ import annotations

import copy

import kopf
import pytest

from speech_operator import handlers
from speech_operator.config import OperatorConfig
from speech_operator.reconcile import Runtime

pytestmark = pytest.mark.unit  # no model, server, operator or browser: the quick run (README, Tests)


async def test_every_objects_handlers_and_the_cleanup_share_one_autoscaler_whose_client_the_cleanup_closes() -> None:
    operator_memo = kopf.Memo(runtime=Runtime(config=OperatorConfig(image="example.test/recognizer", version="1.2.3")))
    first, second = copy.copy(operator_memo), copy.copy(operator_memo)  # two SpeechToTexts' handlers, as kopf gives them
    scaler = handlers.autoscaler(first)
    assert handlers.autoscaler(second) is scaler and handlers.autoscaler(operator_memo) is scaler
    client = scaler.http
    await handlers.close(memo=operator_memo)
    assert client.closed, "the cleanup closed the autoscaler's client to the pods"
