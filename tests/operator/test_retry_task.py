"""A reconcile the operator runs again on its own timer (:meth:`Runtime.retry`, after writes that found the Deployment
changed since their read) has no kopf handler around it to log what it raises. An error other than the API server's or
the network's (a bug, kopf.PermanentError from a builder) was left in the task: asyncio's "Task exception was never
retrieved" at some later garbage collection, with no SpeechToText named."""

from __future__ import annotations

import asyncio
import gc
import logging

import kopf
import pytest

from speech_operator import reconcile
from speech_operator.config import OperatorConfig
from speech_operator.reconcile import Runtime

pytestmark = pytest.mark.unit  # no model, server, operator or browser: the quick run (README, Tests)


async def test_a_retried_reconcile_that_raises_is_logged_with_its_speechtotext_and_leaves_no_task_exception(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(runtime: Runtime, namespace: str, name: str) -> None:
        raise kopf.PermanentError("the builders returned a Widget")

    monkeypatch.setattr(reconcile, "reconcile", broken)
    runtime = Runtime(config=OperatorConfig(image="example.test/recognizer", version="1.2.3"))
    unretrieved: list[dict] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, context: unretrieved.append(context))
    runtime.retry("default", "en-us", 0)
    task = runtime.retries[("default", "en-us")]
    with caplog.at_level(logging.ERROR, logger="speech_operator.reconcile"):
        await asyncio.wait([task])
    assert task.exception() is None
    [record] = [r for r in caplog.records if r.name == "speech_operator.reconcile"]
    assert record.getMessage() == "reconciling default/en-us again failed; again at its next change or event"
    assert record.exc_info is not None and "the builders returned a Widget" in str(record.exc_info[1])
    del task
    gc.collect()
    assert not unretrieved
    assert ("default", "en-us") not in runtime.retries, "the next one may be asked for"

