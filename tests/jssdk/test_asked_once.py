"""One app recognition refused for want of capacity is one stream at the server, with either real Speech SDK.

Every decoder busy (``DecoderMaxCount=1``, a /vosk stream holding it) or ``MaxConnections`` reached: the app is canceled
``TooManyRequests`` (the Python SDK with the server's reason, the JavaScript SDK in its own words), and the server is
asked once (``speech_refused_total{reason}`` counts each stream it refused).

The Python SDK's core connects again, a few times, after a turn that fails with any status and after most closes; a
close 4429 it reports at once as ``TooManyRequests`` with its reason, and asks no more (errors.py, ``CORE_CLOSES``).
Before, the refusal was that turn (``speech.phrase`` ``TooManyRequests``, close 1013): 5 streams each time, load
multiplied by five just when the server is short of it. The JavaScript SDK, which takes a close 4429 as a lost
connection, is told by the turn, as before.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import azure.cognitiveservices.speech as speechsdk
import pytest
from websockets.sync.client import connect

from speech_recognizer.app import create_app
from speech_recognizer.models import ModelRegistry

from ..conftest import CHUNK, make_settings
from ..support import ServerThread, read_wav
from ..usp.sdk import config, recognizer
from .node import recognize, scenario
from .test_refusals import TOO_MANY_REQUESTS, refusals

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
