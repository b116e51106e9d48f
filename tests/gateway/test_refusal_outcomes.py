"""``speech_gateway_request_seconds{route,locale,outcome}``: what a recognizer's refusal was, per locale.

A recognizer answers 503 for a busy server (``busy``, ``too_many_connections``: capacity), a drain (``draining``:
normal operation during a rollout, the client's class) and a model it cannot load (``model_unavailable``: a fault).
Its answer names the kind (``X-Speech-Failure``, :data:`speech_recognizer.errors.FAILURE_HEADER`), and the gateway
times the request under that kind's class and the locale it routed to (``-`` for one refused before its locale was
known). Before, every 503 was ``capacity`` (the status alone), and the histogram had no locale.

A stream the recognizer refuses before it starts (a drain, ``MaxConnections``) is accepted and closed 1013 at once; its
101 names the kind too (:func:`speech_recognizer.errors.accept_headers`), which the gateway reads: before, such a
stream was timed ``ok``. One it refuses once accepted (a model it cannot load, every decoder busy at the first audio)
is told by its close before any reply, whose code and reason (a fault's names its kind) the gateway reads alike.

Real recognizers (in-process, on loopback: the session's ko-KR model, draining as SIGTERM makes it; fr-FR a folder
whose model Vosk cannot load) behind a real gateway; ``/metrics`` read as Prometheus reads it.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import azure.cognitiveservices.speech as speechsdk
import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from harness.usp import client_audio_frame, client_text_frame
from speech_recognizer import contract
from speech_recognizer.app import create_app
from speech_recognizer.errors import BUSY, FAILURE_HEADER
from speech_recognizer.models import ModelRegistry
from speech_recognizer.usp.frames import READING_END_PATH, parse_text
from tests.conftest import make_settings
from tests.jssdk.test_refusals import refusals
from tests.recognizer.test_failures import vosk_close
from tests.support import ServerThread, read_wav, scrape_metrics
from tests.usp.sdk import config, once

from .conftest import KEY, Stack, speech_to_text

REST = "/speech/recognition/conversation/cognitiveservices/v1"
#: The locale whose model cannot be loaded.
BROKEN = "fr-FR"
LATENCY = "speech_gateway_request_seconds_count"


def outcomes(stack: Stack) -> dict[tuple[str, str, str], float]:
    """``speech_gateway_request_seconds``' count by (route, locale, outcome) (a label missing: ``?``)."""
    return {(labels.get("route", "?"), labels.get("locale", "?"), labels.get("outcome", "?")): value
            for (name, pairs), value in scrape_metrics(stack.http).items() if name == LATENCY and (labels := dict(pairs)) and value}


def broken_models(root: Path) -> Path:
    """A models folder whose :data:`BROKEN` model Vosk cannot load (a ``final.mdl`` that is no model)."""
    model = root / "broken-models" / BROKEN
    (model / "conf").mkdir(parents=True)
    (model / "conf" / "model.conf").write_text("--min-active=200\n")
    (model / "am").mkdir()
    (model / "am" / "final.mdl").write_bytes(b"not a model")
    return model.parent


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with Stack(tmp_path) as stack:
        yield stack


def test_a_recognizers_503_is_timed_under_the_class_of_the_kind_it_names_and_its_locale(
        registry: ModelRegistry, speech_wav: Path, tmp_path: Path, stack: Stack) -> None:
    """A draining recognizer's 503: ``client``; a model that cannot be loaded (REST, OpenAI): ``fault``; each under its
    locale, the recognizer's kind passed on to the client. An unknown locale: ``client`` under ``-``."""
    models = broken_models(tmp_path)
    draining = create_app(make_settings(tmp_path / "ko"), registry)
    broken = create_app(make_settings(tmp_path / "fr", f"Mounts:Models={models}"), ModelRegistry(models, (BROKEN,)))
    audio = {"content": speech_wav.read_bytes(), "headers": {"Content-Type": "audio/wav"}, "timeout": 30}
    with ServerThread(draining) as ko, ServerThread(broken) as fr:
        stack.create(speech_to_text("ko-kr", "ko-KR", ko.port))
        stack.create(speech_to_text("fr-fr", BROKEN, fr.port))
        stack.serving("ko-KR")
        stack.serving(BROKEN)
        draining.state.drain.begin()  # as SIGTERM begins it: new work refused, 503 draining
        answers = {
            "rest ko-KR": httpx.post(f"{stack.http}{REST}?language=ko-KR", **audio),
            f"rest {BROKEN}": httpx.post(f"{stack.http}{REST}?language={BROKEN}", **audio),
            f"openai {BROKEN}": httpx.post(f"{stack.http}{contract.ROUTE_OPENAI_TRANSCRIPTIONS}", timeout=30,
                                           files={"file": ("a.wav", audio["content"], "audio/wav")}, data={"language": BROKEN}),
            "rest xx-XX": httpx.post(f"{stack.http}{REST}?language=xx-XX", **audio),
        }
    got = {what: (r.status_code, r.headers.get(FAILURE_HEADER)) for what, r in answers.items()}
    timed = outcomes(stack)
    assert (timed, got) == ({("rest", "ko-KR", "client"): 1, ("rest", BROKEN, "fault"): 1, ("openai", BROKEN, "fault"): 1,
                             ("rest", "-", "client"): 1},
                            {"rest ko-KR": (503, "draining"), f"rest {BROKEN}": (503, "model_unavailable"),
                             f"openai {BROKEN}": (503, "model_unavailable"), "rest xx-XX": (400, "unknown_locale")}), (timed, got)


async def test_a_stream_the_recognizer_refuses_is_timed_under_the_kind_it_names_and_its_locale(
        registry: ModelRegistry, tmp_path: Path, stack: Stack) -> None:
    """Streams of one recognizer (``ApiKey``, ``MaxConnections=1``): an upgrade refused for a wrong key, 401
    ``auth_wrong`` (the kind passed on to the client): ``client``; a stream past its ``MaxConnections`` and one while it
    drains, each accepted only to be closed 1013 (their 101 names ``too_many_connections``, ``draining``): ``capacity``
    and ``client``, not ``ok``; each under the locale."""
    app = create_app(make_settings(tmp_path, f"ApiKey={KEY}", "Billing=https://example.invalid", "MaxConnections=1"), registry)
    usp = f"{stack.ws}{REST}?language=ko-KR"
    vosk, key = f"{stack.ws}/vosk?language=ko-KR", {contract.KEY_HEADER: KEY}
    with ServerThread(app) as ko:
        stack.create(speech_to_text("ko-kr", "ko-KR", ko.port))
        stack.serving("ko-KR")
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(usp, headers={contract.KEY_HEADER: "wrong"})
            async with session.ws_connect(vosk, headers=key):  # the one connection the recognizer keeps
                async with session.ws_connect(vosk, headers=key) as past_the_cap:
                    closed = [(await past_the_cap.receive(timeout=10)).data]
            app.state.drain.begin()
            async with session.ws_connect(vosk, headers=key) as drained:
                closed.append((await drained.receive(timeout=10)).data)
    assert closed == [1013, 1013], closed
    said = (refused.value.status, refused.value.headers and refused.value.headers.get(FAILURE_HEADER))
    timed = outcomes(stack)
    assert (timed, said) == ({("usp", "ko-KR", "client"): 1, ("vosk", "ko-KR", "ok"): 1, ("vosk", "ko-KR", "capacity"): 1,
                              ("vosk", "ko-KR", "client"): 1}, (401, "auth_wrong")), (timed, said)


@contextlib.contextmanager
def decoder_held(registry: ModelRegistry, pcm: bytes, tmp_path: Path, stack: Stack) -> Iterator[Callable[[], None]]:
    """Behind the gateway: ko-KR (``DecoderMaxCount=1``), its one decoder held by a /vosk stream of ``pcm``, and
    :data:`BROKEN`, a model it cannot load; yields what lets the decoder go (the stream's eof, its final result)."""
    models = broken_models(tmp_path)
    busy = create_app(make_settings(tmp_path / "ko", "DecoderMaxCount=1"), registry)
    broken = create_app(make_settings(tmp_path / "fr", f"Mounts:Models={models}"), ModelRegistry(models, (BROKEN,)))
    with ServerThread(busy) as ko, ServerThread(broken) as fr:
        stack.create(speech_to_text("ko-kr", "ko-KR", ko.port))
        stack.create(speech_to_text("fr-fr", BROKEN, fr.port))
        stack.serving("ko-KR")
        stack.serving(BROKEN)
        with connect(f"{stack.ws}/vosk?language=ko-KR") as holder:
            holder.send(pcm[:3200])
            holder.recv(timeout=30)  # the only decoder is taken

            def release() -> None:
                holder.send('{"eof" : 1}')
                holder.recv(timeout=30)
            yield release


def test_a_vosk_stream_the_recognizer_refuses_once_accepted_is_timed_under_the_kind_it_closes_with(
        registry: ModelRegistry, speech_wav: Path, tmp_path: Path, stack: Stack) -> None:
    """/vosk streams the recognizer accepts, then refuses by its close before any reply: a locale whose model cannot be
    loaded (1013 naming ``model_unavailable``): ``fault``; every decoder busy at the first audio (``DecoderMaxCount=1``,
    a stream served holding it; 1013, ``busy``): ``capacity``; the stream served: ``ok``. Each under its locale. Before,
    all three were ``ok``: timed at the recognizer's 101."""
    pcm, _, _ = read_wav(speech_wav)
    with decoder_held(registry, pcm, tmp_path, stack) as release:
        closes = {locale: vosk_close(stack.ws, f"language={locale}", pcm[:3200]) for locale in ("ko-KR", BROKEN)}
        release()
    timed = outcomes(stack)
    said = {locale: (code, reason.partition(": ")[0]) for locale, (code, reason) in closes.items()}
    assert (timed, said) == ({("vosk", "ko-KR", "ok"): 1, ("vosk", "ko-KR", "capacity"): 1, ("vosk", BROKEN, "fault"): 1},
                             {"ko-KR": (1013, f"all 1 decoders are busy; retry in {BUSY.retry_after} s"),
                              BROKEN: (1013, "model_unavailable")}), (timed, closes)


def javascript_close(url: str) -> tuple[str, int]:
    """What the SDK for JavaScript is told of a turn that fails at its first audio (its ``speech.config`` says it is
    that SDK, as its own does): the path of the message before the close, and the close's code."""
    request = uuid.uuid4().hex
    with connect(url, subprotocols=["USP"]) as ws:
        ws.send(client_text_frame("speech.config", request, {"context": {"system": {"lang": "JavaScript"}}}))
        ws.send(client_text_frame("speech.context", request, {}))
        ws.send(client_audio_frame(request, bytes(3200)))
        before = parse_text(str(ws.recv(timeout=30))).path
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
    assert closed.value.rcvd is not None, closed.value
    return before, closed.value.rcvd.code


def test_a_speech_sdk_turn_the_recognizer_fails_is_timed_under_the_kind_it_names(
        registry: ModelRegistry, speech_wav: Path, tmp_path: Path, stack: Stack) -> None:
    """Speech SDK recognitions whose turn the recognizer fails once it began (the real Python SDK): every decoder busy at
    the first audio (``DecoderMaxCount=1``, a /vosk stream holding it), a ``speech.phrase`` ``TooManyRequests``:
    ``capacity`` (the SDK asks again a few times); a model it cannot load, a phrase ``ServiceUnavailable`` (again), and to a
    client that says it is the SDK for JavaScript a close 4000 alone after a message that ends its reading: ``fault``; the turn served once the
    decoder is free: ``ok``. The failing messages name their kind (``X-Speech-Failure``), which the gateway reads off
    the recognizer's text messages until the first result or failure. Before, every one was ``ok``: timed at the
    recognizer's first message (``turn.start``)."""
    pcm, _, _ = read_wav(speech_wav)
    with decoder_held(registry, pcm, tmp_path, stack) as release:
        said = {"python ko-KR": once(config(stack.ws), speech_wav).cancellation_details.code,
                f"python {BROKEN}": once(config(stack.ws, language=BROKEN), speech_wav).cancellation_details.code,
                f"javascript {BROKEN}": javascript_close(f"{stack.ws}{REST}?language={BROKEN}")}
        release()
        served = once(config(stack.ws), speech_wav)
    timed = {key: value for key, value in outcomes(stack).items() if key[0] == "usp"}
    assert served.reason == speechsdk.ResultReason.RecognizedSpeech, served
    assert said == {"python ko-KR": speechsdk.CancellationErrorCode.TooManyRequests,
                    f"python {BROKEN}": speechsdk.CancellationErrorCode.ServiceUnavailable,
                    f"javascript {BROKEN}": (READING_END_PATH, 4000)}, said
    assert set(timed) == {("usp", "ko-KR", "capacity"), ("usp", "ko-KR", "ok"), ("usp", BROKEN, "fault")}, timed
    assert timed[("usp", "ko-KR", "ok")] == 1, timed


def test_an_idle_vosk_connection_is_the_clients_at_the_gateway_as_at_its_recognizer(
        registry: ModelRegistry, tmp_path: Path, stack: Stack) -> None:
    """A /vosk connection that sends nothing, or its config alone, is let go by its recognizer after
    ``ConnectionIdleSeconds`` (close 1000, ``connection_idle``: the client's class, as ``idle_timeout``, the table's
    :attr:`~speech_recognizer.errors.Kind.alert` None) before any message: the gateway times it ``client`` (its
    close's kind: :func:`~speech_operator.gateway_failures.closed_kind`), as the recognizer times and counts it, the
    same number of times."""
    app = create_app(make_settings(tmp_path, "ConnectionIdleSeconds=1"), registry)
    with ServerThread(app) as ko:
        stack.create(speech_to_text("ko-kr", "ko-KR", ko.port))
        stack.serving("ko-KR")
        closes = []
        for hello in ((), ('{"config": {"sample_rate": 16000}}',)):
            with connect(f"{stack.ws}/vosk?language=ko-KR") as ws:
                for text in hello:
                    ws.send(text)
                with pytest.raises(ConnectionClosed) as closed:
                    ws.recv(timeout=10)
            closes.append(closed.value.rcvd and closed.value.rcvd.code)
        own = {(dict(labels)["outcome"] if name.startswith("speech_request") else dict(labels)["reason"]): value
               for (name, labels), value in scrape_metrics(ko.http).items()
               if value and (name == "speech_request_seconds_count" or name == "speech_refused_total")}
    assert (closes, outcomes(stack)) == ([1000, 1000], {("vosk", "ko-KR", "client"): 2}), (closes, outcomes(stack))
    assert own == {"client": 2, "connection_idle": 2}, own


def test_a_python_sdk_recognition_the_recognizer_fails_is_timed_once_as_the_recognizer_counts_it(
        speech_wav: Path, tmp_path: Path, stack: Stack) -> None:
    """A model that cannot be loaded, behind the gateway: the real Python SDK's recognize-once asks 5 times (each
    repeat's turn continuing the failed one), every stream relayed, and is canceled ``ServiceUnavailable``; the
    recognizer counts the app's recognition once and says each repeat is one (``X-Speech-Asked-Again`` on its failing
    phrase), and the gateway times it once, ``fault``. Before, the gateway timed each repeat: 5 faults for 1."""
    models = broken_models(tmp_path)
    broken = create_app(make_settings(tmp_path / "fr", f"Mounts:Models={models}"), ModelRegistry(models, (BROKEN,)))
    with ServerThread(broken) as fr:
        stack.create(speech_to_text("fr-fr", BROKEN, fr.port))
        stack.routes(BROKEN)
        said = once(config(stack.ws, language=BROKEN), speech_wav).cancellation_details.code
        counted = refusals(fr, "model_unavailable")
    streams = sum(value for (name, labels), value in scrape_metrics(stack.http).items()
                  if name == "speech_gateway_requests_total" and dict(labels).get("route") == "usp")
    assert (said, streams) == (speechsdk.CancellationErrorCode.ServiceUnavailable, 5), (said, streams)
    timed = {key: value for key, value in outcomes(stack).items() if key[0] == "usp"}
    assert (counted, timed) == (1, {("usp", BROKEN, "fault"): 1}), f"one recognition: {counted:g} at the recognizer, {timed} at the gateway"


def test_a_python_sdk_recognition_a_draining_recognizer_refuses_is_timed_once(
        registry: ModelRegistry, speech_wav: Path, tmp_path: Path, stack: Stack) -> None:
    """A draining recognizer behind the gateway: each of the real Python SDK's 5 streams of one recognize-once is
    accepted only to be refused (its 101 names ``draining``), the refusal told once its request is read, and the app is
    canceled ``ServiceUnavailable``; the recognizer counts the app's recognition once and says each repeat is one
    (``X-Speech-Asked-Again`` on the refusal's phrase), and the gateway times it once, ``client``, to the 101. Before,
    the gateway timed each stream at its 101, before the request said whether it was a repeat: 5 for 1."""
    app = create_app(make_settings(tmp_path), registry)
    with ServerThread(app) as ko:
        stack.create(speech_to_text("ko-kr", "ko-KR", ko.port))
        stack.serving("ko-KR")
        app.state.drain.begin()  # as SIGTERM begins it: new work refused
        said = once(config(stack.ws), speech_wav).cancellation_details.code
        counted = refusals(ko, "draining")
    streams = sum(value for (name, labels), value in scrape_metrics(stack.http).items()
                  if name == "speech_gateway_requests_total" and dict(labels).get("route") == "usp")
    assert (said, streams) == (speechsdk.CancellationErrorCode.ServiceUnavailable, 5), (said, streams)
    timed = {key: value for key, value in outcomes(stack).items() if key[0] == "usp"}
    assert (counted, timed) == (1, {("usp", "ko-KR", "client"): 1}), f"one recognition: {counted:g} at the recognizer, {timed} at the gateway"
