"""One app recognition refused for want of capacity is one stream at the server, with either real Speech SDK.

Every decoder busy (``DecoderMaxCount=1``, a /vosk stream holding it) or ``MaxConnections`` reached: the app is canceled
``TooManyRequests`` (the Python SDK with the server's reason, the JavaScript SDK in its own words), and the server is
asked once (``speech_refused_total{reason}`` counts each stream it refused).

The Python SDK's core connects again, a few times, after a turn that fails with any status and after most closes; a
close 4429 it reports at once as ``TooManyRequests`` with its reason, and asks no more (errors.py, ``CORE_CLOSES``).
Before, the refusal was that turn (``speech.phrase`` ``TooManyRequests``, close 1013): 5 streams each time, load
multiplied by five just when the server is short of it. The JavaScript SDK, which takes a close 4429 as a lost
connection, is told by the turn, as before.

A failure of the service's own (a model that cannot be loaded, a bug) keeps its turn (``ServiceUnavailable``,
``Error``: no close gives the core those codes), and the core asks again, each new turn naming the failed one
(``continuation.previousServiceTag``): the server counts and logs the app's recognition once, its repeats at DEBUG
(``errors.asked_again(kind)``: these kinds, and a protocol error, tests/usp/test_corrupted_frames.py), so that one
failed recognition is one fault, not five.

A turn that fails ``BadRequest`` for a stream past ``MaxSessionSeconds`` keeps its turn too: the core connects again
and goes on from its last phrase, which is what a long recognition needs (a close 1007, which the core would report at
once, would end it there).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import azure.cognitiveservices.speech as speechsdk
import pytest
from websockets.sync.client import connect

from speech_recognizer.app import create_app
from speech_recognizer.deadlines import Deadlines
from speech_recognizer.models import ModelRegistry
from speech_recognizer.usp import routes
from speech_recognizer.usp.connection import Turn

from ..conftest import CHUNK, make_settings
from ..support import ServerThread, read_wav
from ..usp.sdk import config, continuous, recognizer
from .node import recognize, scenario
from .test_refusals import TOO_MANY_REQUESTS, Failover, broken_models, python_sdk_unavailable, refusals

#: Each way the server is short of capacity: its settings, and the ``speech_refused_total`` reason of a stream refused.
SHORT = {"busy": ("DecoderMaxCount=1", "busy"), "max_connections": ("MaxConnections=1", "too_many_connections")}


@contextlib.contextmanager
def short_of_capacity(registry: ModelRegistry, tmp_path: Path, pcm: bytes, short: str) -> Iterator[ServerThread]:
    """A recognizer whose one decoder (``busy``) or one connection (``max_connections``) a /vosk stream holds."""
    with ServerThread(create_app(make_settings(tmp_path, SHORT[short][0]), registry)) as srv, \
            connect(f"{srv.ws}/vosk?language=ko-KR") as holder:
        holder.send(pcm[:CHUNK])
        holder.recv(timeout=30)  # the stream is served: it holds the decoder and the connection
        yield srv


def python_sdk(srv: ServerThread, wav: Path, mode: str) -> tuple[speechsdk.CancellationErrorCode, str]:
    """A Python Speech SDK app's one recognition (``once``, or ``continuous`` until its ``canceled``): its
    ``CancellationErrorCode`` and error details."""
    rec = recognizer(config(srv.ws), wav)
    if mode == "once":
        result = rec.recognize_once()
        assert result.reason == speechsdk.ResultReason.Canceled, result
        details = result.cancellation_details
        return details.code, details.error_details
    canceled: list[speechsdk.CancellationDetails] = []
    done = threading.Event()
    rec.canceled.connect(lambda e: (canceled.append(e.cancellation_details), done.set()))
    rec.start_continuous_recognition()
    assert done.wait(60), "no canceled event"
    rec.stop_continuous_recognition()
    return canceled[0].code, canceled[0].error_details


@pytest.mark.parametrize("short", sorted(SHORT))
@pytest.mark.parametrize("mode", ["once", "continuous"])
def test_a_python_sdk_recognition_refused_for_capacity_is_one_stream(
        registry: ModelRegistry, tmp_path: Path, speech_wav: Path, mode: str, short: str) -> None:
    """The Python SDK: ``TooManyRequests`` with the server's reason, one stream refused (before: 5)."""
    pcm, _, _ = read_wav(speech_wav)
    with short_of_capacity(registry, tmp_path, pcm, short) as srv:
        code, details = python_sdk(srv, speech_wav, mode)
        asked = refusals(srv, SHORT[short][1])
    assert code == speechsdk.CancellationErrorCode.TooManyRequests, (code, details)
    assert ("decoders are busy" if short == "busy" else "MaxConnections") in details, details
    assert asked == 1, f"one recognition was {asked:g} streams"


@pytest.mark.parametrize("mode", ["once", "continuous"])
def test_a_javascript_sdk_recognition_refused_for_capacity_is_one_stream(
        jssdk: str, registry: ModelRegistry, tmp_path: Path, speech_wav: Path, mode: str) -> None:
    """The JavaScript SDK at every decoder busy: ``TooManyRequests`` in its own words, one stream refused (as before;
    ``MaxConnections``: test_refusals.py)."""
    pcm, _, _ = read_wav(speech_wav)
    with short_of_capacity(registry, tmp_path, pcm, "busy") as srv:
        out = recognize(jssdk, scenario(srv.ws, speech_wav, mode=mode, timeoutMs=15000))
        asked = refusals(srv, "busy")
    assert [(e["cancelReason"], e["errorCode"], e["errorDetails"]) for e in out["canceled"]] == [
        ("Error", "TooManyRequests", TOO_MANY_REQUESTS)], out
    assert asked == 1, f"one recognition was {asked:g} streams"


async def _a_bug(turn: Turn, payload: bytes) -> None:
    """``Turn.audio`` with a bug of the server's, met at every turn's first audio."""
    raise RuntimeError("a bug of the server's")


#: Each failure of the service's own: the Python SDK's error code, and words of the server's reason.
FAULTS = {"model_unavailable": (speechsdk.CancellationErrorCode.ServiceUnavailable, "fr-FR"),
          "internal": (speechsdk.CancellationErrorCode.ServiceError, "internal error (RuntimeError)")}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_python_sdk_recognition_failed_by_the_service_is_one_fault(
        registry: ModelRegistry, tmp_path: Path, speech_wav: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, fault: str) -> None:
    """A model that cannot be loaded, or a bug of the server's at every turn: the Python SDK's recognize-once is
    canceled with the status's code and the server's reason after it asked 5 times (each repeat's turn continuing the
    failed one); ``speech_refused_total{reason}`` counts 1 and the server logs one line at the kind's level, the 4
    repeats at DEBUG (before: 5 counted, 5 WARNING or ERROR lines, a fault alert's rate five-fold)."""
    language = "ko-KR"
    if fault == "internal":
        monkeypatch.setattr(Turn, "audio", _a_bug)
        app = create_app(make_settings(tmp_path), registry)
    else:
        models, language = broken_models(tmp_path, "fr-FR"), "fr-FR"
        app = create_app(make_settings(tmp_path, f"Mounts:Models={models}"), ModelRegistry(models, (language,)))
    caplog.set_level(logging.DEBUG, logger="speech_recognizer.failures")
    with ServerThread(app) as srv:
        cfg = config(srv.ws, language=language)
        result = speechsdk.SpeechRecognizer(cfg, audio_config=speechsdk.audio.AudioConfig(filename=str(speech_wav))).recognize_once()
        counted = refusals(srv, fault)
    assert result.reason == speechsdk.ResultReason.Canceled, result
    code, words = FAULTS[fault]
    assert result.cancellation_details.code == code and words in result.cancellation_details.error_details, result.cancellation_details
    lines = [r for r in caplog.records if r.name == "speech_recognizer.failures" and f": {fault}" in r.getMessage()]
    loud = [r for r in lines if r.levelno >= logging.WARNING]
    assert counted == 1 and len(loud) == 1, f"one recognition was {counted:g} faults, {len(loud)} lines: {[r.getMessage() for r in loud]}"
    assert len(lines) == 5, "the SDK asks 5 times"


@pytest.fixture
def sessions_of_cpu_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Speech SDK route's deadlines (``MaxSessionSeconds`` among them) read this process's CPU time (the server's
    decoding, the SDK's threads) instead of the clock, through the clock :class:`~speech_recognizer.deadlines.Deadlines`
    takes: a session then holds the same work on a machine shared by many as on a quiet one."""

    class CpuTimeDeadlines(Deadlines):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **{**kwargs, "clock": time.process_time})

    monkeypatch.setattr(routes, "Deadlines", CpuTimeDeadlines)


def test_a_python_sdk_recognition_past_max_session_seconds_goes_on(
        registry: ModelRegistry, tmp_path: Path, utterances_wav: Path, sessions_of_cpu_time: None) -> None:
    """A continuous recognition of three utterances whose stream is cut every second (``MaxSessionSeconds=1``): each
    cut's turn fails ``BadRequest`` and the Python SDK connects again and goes on from its last phrase; the app gets
    every phrase and no cancel. Told by a close 1007 instead (``BadRequest`` in errors.CORE_CLOSES), the app was
    canceled ``BadRequest`` at the first cut with no phrase, one stream in all.

    The second is one of CPU time (``sessions_of_cpu_time``): one of the clock's held no phrase's decoding on a starved
    machine (load ~22), and the SDK, which gives up after 5 turns that go no further, was canceled."""
    with ServerThread(create_app(make_settings(tmp_path, "MaxSessionSeconds=1"), registry)) as srv:
        events = continuous(recognizer(config(srv.ws), utterances_wav), timeout=90)
        cuts = refusals(srv, "session_too_long")
    print(f"{cuts:g} cuts, {len(events.recognized)} phrases, canceled: {[c.error_details for c in events.canceled]}")
    assert events.canceled == [] and len(events.recognized) >= 3, (events.canceled, [r.text for r in events.recognized])
    assert cuts >= 2, f"{cuts:g} cuts"


def test_a_repeat_that_reaches_another_server_is_counted_there(tmp_path: Path, speech_wav: Path) -> None:
    """Two servers that cannot load the locale's model, behind a Service whose first connection reaches one and every
    later one the other (a Python SDK's repeats after a failed turn may reach any pod): each server counts the app's
    recognition once, as two pods would. Before, the failed turns were kept by the process, not by the server
    (usp/connection.py ``FAILED``): the second server took the first repeat, which names the first server's turn, as
    its own turn asked again, and counted nothing."""
    models = broken_models(tmp_path, "fr-FR")

    def app(name: str) -> ServerThread:
        return ServerThread(create_app(make_settings(tmp_path / name, f"Mounts:Models={models}"), ModelRegistry(models, ("fr-FR",))))

    with app("first") as first, app("second") as second, Failover(first.port, second.port) as service:
        python_sdk_unavailable(service.ws, speech_wav, "fr-FR", language="fr-FR")
        counted = refusals(first, "model_unavailable"), refusals(second, "model_unavailable")
    assert service.connections == 5, f"the SDK asked {service.connections} times"
    assert counted == (1, 1), f"counted {counted} by each server"


def test_a_python_sdk_recognition_refused_by_a_drain_is_counted_once(registry: ModelRegistry, tmp_path: Path, speech_wav: Path) -> None:
    """A draining server refuses a Python SDK's recognize-once: canceled ``ServiceUnavailable`` with the drain's
    reason once the SDK asked 5 times (each repeat may reach another pod: they stay), and
    ``speech_refused_total{reason="draining"}`` counts the app's recognition once."""
    app = create_app(make_settings(tmp_path), registry)
    with ServerThread(app) as srv, Failover(srv.port, srv.port) as service:
        app.state.drain.begin()
        python_sdk_unavailable(service.ws, speech_wav, "draining:")
        counted = refusals(srv, "draining")
    assert service.connections == 5, f"the SDK asked {service.connections} times"
    assert counted == 1, f"one recognition refused by a drain was counted {counted:g} times"
