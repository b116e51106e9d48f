"""The gateway in front of two real recognizer processes for two locales (tests/gateway/conftest.py:
the second locale is the Korean model under another name): REST, the real Speech SDK and /vosk
give through the gateway what they give directly; unknown locales get the recognizer's errors;
keys pass through; a recognizer that dies mid-stream ends the client's stream with a clear close.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import azure.cognitiveservices.speech as speechsdk
import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from harness.hostile_inputs import BAD_CHUNK, BAD_CHUNK_REASON, break_mid_body, post_head, responses
from harness.loopback import Loopback
from harness.server import cpu_seconds
from speech_recognizer import contract
from tests.jssdk.node import recognize, result_span, scenario
from tests.recognizer.test_gone_clients import Held, leave, wav_bytes
from tests.recognizer.test_vosk_ws import closed_with, stream, texts
from tests.support import Reference, read_wav
from tests.usp.sdk import UNSERVED_CLIENTS, assert_matches, assert_same, config, continuous, expected, once, recognizer, reported

from .conftest import KEY, OTHER_LOCALE, Locales, Recognizer, speech_to_text, start_recognizer

REST = "/speech/recognition/conversation/cognitiveservices/v1"
Reason = speechsdk.ResultReason


def key_of(locale: str) -> dict[str, str]:
    return {"Ocp-Apim-Subscription-Key": KEY} if locale == OTHER_LOCALE else {}


def rest(base: str, language: str, wav: Path, query: str = "&format=detailed&wordLevelTimestamps=true",
         **headers: str) -> httpx.Response:
    return httpx.post(f"{base}{REST}?language={language}{query}", content=wav.read_bytes(),
                      headers={"Content-Type": "audio/wav", **headers}, timeout=60)


def test_rest_gives_what_the_recognizer_gives(locales: Locales, speech_wav: Path) -> None:
    """Each locale's answer through the gateway equals its recognizer's own; ``ko-kr`` is ``ko-KR``. (The
    one-utterance recording: the gateway relays the answer's bytes, however many words they hold.)"""
    for locale, r in locales.recognizers.items():
        direct = rest(r.http, locale, speech_wav, **key_of(locale))
        via = rest(locales.stack.http, locale.lower(), speech_wav, **key_of(locale))
        assert direct.status_code == via.status_code == 200, (direct.text, via.text)
        assert via.json() == direct.json()
        assert via.json()["RecognitionStatus"] == "Success"


def test_the_speech_sdk_works_for_every_locale(locales: Locales, speech_wav: Path, speech_ref: Reference) -> None:
    """An unmodified Speech SDK app pointed at the gateway (``host=``, or ``endpoint=`` with a key)
    recognizes exactly what in-process Vosk does, for each locale, as it does directly."""
    for locale, r in locales.recognizers.items():
        key = KEY if locale == OTHER_LOCALE else None
        direct = once(config(r.ws, key=key, language=locale), speech_wav)
        via = once(config(locales.stack.ws, key=key, language=locale), speech_wav)
        assert_matches(direct, speech_ref.phrases[0])
        assert_matches(via, speech_ref.phrases[0])
        assert reported(via) == reported(direct)
    via = once(config(locales.stack.ws, key=KEY, language=OTHER_LOCALE, endpoint_mode="interactive"), speech_wav)
    assert_matches(via, speech_ref.phrases[0])


def test_continuous_recognition_through_the_gateway(locales: Locales, utterances_wav: Path, utterances_ref: Reference) -> None:
    events = continuous(recognizer(config(locales.stack.ws, language="ko-KR"), utterances_wav))
    assert not events.canceled
    assert_same([reported(r) for r in events.recognized], [expected(p) for p in utterances_ref.phrases])
    assert events.recognizing, "intermediate results come through"


def test_vosk_gives_what_the_recognizer_gives(locales: Locales, speech_wav: Path, speech_ref: Reference) -> None:
    """Every message of a /vosk stream through the gateway (by the locale, any case, or at ``/``) is the recognizer's
    own: a reply per chunk and the final result, on the one-utterance recording (test_continuous_recognition_through_the_gateway
    and the dying-recognizer tests stream the three utterances through it)."""
    pcm, rate, _ = read_wav(speech_wav)
    for locale, r in locales.recognizers.items():
        direct = stream(f"{r.ws}/vosk?language={locale}", pcm, 3200, {"sample_rate": rate}, **key_of(locale))
        via = stream(f"{locales.stack.ws}/vosk?language={locale.lower()}", pcm, 3200, {"sample_rate": rate}, **key_of(locale))
        root = stream(f"{locales.stack.ws}/?language={locale}", pcm, 3200, {"sample_rate": rate}, **key_of(locale))
        assert via == direct == root
        assert texts(via) == speech_ref.texts


def test_an_unknown_locale_gets_the_recognizers_error_naming_the_locales(locales: Locales, speech_wav: Path) -> None:
    stack, ko = locales.stack, locales.recognizers["ko-KR"]
    direct = rest(ko.http, "xx-YY", speech_wav)
    via = rest(stack.http, "xx-YY", speech_wav)
    assert direct.status_code == via.status_code == 400
    assert via.json() == {"error": {"code": "BadRequest",
                                    "message": f"no model for language 'xx-YY'; this server has: {OTHER_LOCALE}, ko-KR"}}
    assert direct.json()["error"]["message"] == "no model for language 'xx-YY'; this server has: ko-KR", "the same words"
    assert rest(stack.http, "not a locale!", speech_wav).json()["error"]["message"] == "'not a locale!' is not a locale (expected e.g. en-US)"
    missing = httpx.post(f"{stack.http}{REST}", content=speech_wav.read_bytes(), timeout=30)
    assert missing.status_code == 400 and "add ?language=<locale>" in missing.json()["error"]["message"]

    started = time.monotonic()
    result = once(config(stack.ws, language="xx-XX"), speech_wav)
    assert result.reason == Reason.Canceled, result
    details = result.cancellation_details
    assert details.code == speechsdk.CancellationErrorCode.BadRequest
    assert "xx-XX" in details.error_details and OTHER_LOCALE in details.error_details and "ko-KR" in details.error_details
    assert time.monotonic() - started < 5, "the SDK retried instead of failing fast"

    code, reason = closed_with(f"{stack.ws}/vosk?language=xx-YY")
    assert code == 1007 and reason == f"no model for language 'xx-YY'; this server has: {OTHER_LOCALE}, ko-KR"
    assert httpx.get(f"{stack.http}/").json()["locales"] == [OTHER_LOCALE, "ko-KR"]


def test_language_identification_is_routed_by_its_languages(locales: Locales, speech_wav: Path, speech_ref: Reference) -> None:
    """A Speech SDK app with an ``AutoDetectSourceLanguageConfig`` sends ``language=en-us&lidEnabled=...``: the gateway
    routes it by its language, where it routed by en-us and refused it ("no model for language 'en-us'"). One language
    is recognized in it (tests/usp/test_sdk_features.py); several are the recognizer's refusal, naming them."""
    def detect(*languages: str) -> speechsdk.SpeechRecognitionResult:
        auto = speechsdk.languageconfig.AutoDetectSourceLanguageConfig(languages=list(languages))
        return speechsdk.SpeechRecognizer(speechsdk.SpeechConfig(host=locales.stack.ws), auto_detect_source_language_config=auto,
                                          audio_config=speechsdk.audio.AudioConfig(filename=str(speech_wav))).recognize_once()

    result = detect("ko-KR")
    assert_matches(result, speech_ref.phrases[0])
    assert speechsdk.AutoDetectSourceLanguageResult(result).language == "ko-KR"
    refused = detect("ko-KR", "en-US")
    assert refused.reason == Reason.Canceled, refused
    assert refused.cancellation_details.code == speechsdk.CancellationErrorCode.BadRequest
    assert "language identification among ko-KR, en-US is not served" in refused.cancellation_details.error_details


@pytest.mark.parametrize(("client", "name"), UNSERVED_CLIENTS, ids=lambda v: v.__name__ if callable(v) else "")
def test_services_not_served_are_refused_as_the_recognizer_refuses_them(locales: Locales, speech_wav: Path, client: Any, name: str) -> None:
    """Translation, conversation transcription and synthesis pointed at the gateway: ``BadRequest`` at once naming the
    service, as from a recognizer (tests/usp/test_sdk_features.py), where the gateway answered 404 (the SDK's
    ServiceError "Internal service error (404)", after connecting again)."""
    said, took = client(locales.stack.ws, speech_wav)
    assert took < 2, f"{name}: canceled after {took:.1f} s"
    assert said.startswith("CancellationErrorCode.BadRequest "), said
    assert f"{name} is not served here" in said, said


def test_keys_reach_the_recognizer_and_its_refusals_reach_the_client(locales: Locales, speech_wav: Path) -> None:
    stack = locales.stack
    for key, status in ((None, "403"), ("not-the-key", "401")):
        result = once(config(stack.ws, key=key, language=OTHER_LOCALE), speech_wav)
        assert result.reason == Reason.Canceled, result
        assert result.cancellation_details.code == speechsdk.CancellationErrorCode.AuthenticationFailure
        assert status in result.cancellation_details.error_details
    assert rest(stack.http, OTHER_LOCALE, speech_wav).status_code == 403
    assert rest(stack.http, OTHER_LOCALE, speech_wav, **{"Authorization": f"Bearer {KEY}"}).status_code == 200
    code, reason = closed_with(f"{stack.ws}/vosk?language={OTHER_LOCALE}", **{"Ocp-Apim-Subscription-Key": "wrong"})
    assert code == 1008 and "wrong key" in reason


@pytest.mark.parametrize("browser", [False, True], ids=["node", "browser"])
def test_the_javascript_sdk_through_the_gateway(jssdk: str, locales: Locales, speech_wav: Path, speech_ref: Reference, browser: bool) -> None:
    """The Speech SDK for JavaScript (tests/jssdk) pointed at the gateway with ``fromHost``: each locale recognizes what
    in-process Vosk does, the keyed one with its key (in the browser form the key is in the URL only, and the gateway
    passes it on); a wrong key is refused as directly; an unknown locale's reason names it and the locales served,
    every time: the gateway closed as soon as it accepted, and the SDK, still sending its first messages, mostly failed
    with its own "websocket send error: Websocket not ready" and a stack trace instead (7 of 10 runs in Node)."""
    stack = locales.stack
    for locale, key in (("ko-KR", None), (OTHER_LOCALE, KEY)):
        out = recognize(jssdk, scenario(stack.ws, speech_wav, language=locale, key=key, mode="once", browser=browser))
        assert out["once"]["reason"] == "RecognizedSpeech" and out["canceled"] == [], out
        assert_same([result_span(out["once"])], [expected(speech_ref.phrases[0])])
    refused = recognize(jssdk, scenario(stack.ws, speech_wav, language=OTHER_LOCALE, key="not-the-key", mode="once", browser=browser))
    assert [(c["errorCode"], "Unexpected server response: 401" in c["errorDetails"]) for c in refused["canceled"]] == [("ConnectionFailure", True)]
    for mode in ("once", "continuous") * 2:
        started = time.monotonic()
        unknown = recognize(jssdk, scenario(stack.ws, speech_wav, language="xx-XX", mode=mode, browser=browser, timeoutMs=10000))
        assert [c["errorCode"] for c in unknown["canceled"]] == ["BadRequestParameters"], unknown["canceled"]
        assert all(word in unknown["canceled"][0]["errorDetails"] for word in ("'xx-XX'", OTHER_LOCALE, "ko-KR")), unknown["canceled"]
        assert time.monotonic() - started < 5, "the SDK retried instead of failing fast"


def test_the_gateway_reports_itself(locales: Locales, speech_wav: Path) -> None:
    """Its probes and metrics; the requests the metrics must count are made here, so the test stands alone."""
    stack = locales.stack
    assert httpx.post(f"{stack.http}{REST}", content=b"", timeout=30).status_code == 400  # no ?language=: locale "-"
    assert rest(stack.http, "ko-KR", speech_wav).status_code == 200  # relayed bytes
    assert httpx.get(f"{stack.http}/ready").json() == {"ready": True, "locales": [OTHER_LOCALE, "ko-KR"]}
    assert httpx.get(f"{stack.http}/status").status_code == 200
    metrics = httpx.get(f"{stack.http}/metrics").text
    assert 'speech_gateway_backend_ready_pods{locale="ko-KR",name="ko-kr",namespace="speech"} 1.0' in metrics
    assert 'speech_gateway_requests_total{code="400",locale="-",route="rest"}' in metrics
    assert 'speech_gateway_relayed_bytes_total{direction="to_recognizer"}' in metrics


# ---- a body that breaks off mid-relay ----------------------------------------------------------
def metric(server: Loopback, line_start: str) -> float:
    """The sum of the server's metric lines that begin ``line_start`` (0 when there is none yet)."""
    lines = [line for line in httpx.get(f"{server.http}/metrics", timeout=10).text.splitlines() if line.startswith(line_start)]
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines)


@pytest.mark.parametrize("leave", [False, True], ids=["bad chunk", "client leaves"])
def test_a_body_that_breaks_off_mid_relay_ends_the_recognizers_request(locales: Locales, utterances_wav: Path, leave: bool) -> None:
    """The head and a second of WAV, relayed and being recognized; then a chunk size that is not hex and 256 KiB (the
    gateway answers the 400 with the parser's reason at once, then EOF), or the client leaves: either way the
    recognizer's request ends (it counts a client gone) and its decoder is free. Before: the client got the
    recognizer's 408 after its Http:BodyTimeoutSeconds (10 s), the decoder held all that time; a client that left was
    the gateway's ``backend_lost``."""
    ko, stack = locales.recognizers["ko-KR"], locales.stack
    gone = 'speech_refused_total{reason="client_gone"'
    failed = 'speech_gateway_failures_total{locale="ko-KR",'
    before, failed_before = metric(ko, gone), {kind: metric(stack, f'{failed}reason="{kind}"') for kind in ("client_gone", "backend_lost")}
    audio = utterances_wav.read_bytes()[:44 + 32000]
    start = post_head(f"{REST}?language=ko-KR") + b"%x\r\n" % len(audio) + audio + b"\r\n"
    broken = break_mid_body("127.0.0.1", stack.port, start, BAD_CHUNK + b"x" * (256 << 10), wait=0.5, leave=leave)
    if not leave:
        # At once: far below the 5 s break_mid_body waits (the recognizer's 408 came after 10 s), room for a loaded machine.
        assert broken.end == "EOF" and broken.first < 3.0, (broken.end, broken.first, broken.answer[:300])
        [(status, headers, body)] = responses(broken.answer)
        assert status == 400 and headers["connection"] == "close", broken.answer[:300]
        assert BAD_CHUNK_REASON in json.loads(body)["error"]["message"]
    stack.eventually(lambda: metric(ko, gone) == before + 1, 5, "the recognizer's request ended")
    stack.eventually(lambda: metric(ko, "speech_active_sessions") == 0, 5, "the recognizer's decoder is free")
    assert metric(stack, f'{failed}reason="backend_lost"') == failed_before["backend_lost"], "the recognizer was not lost"
    if leave:
        assert metric(stack, f'{failed}reason="client_gone"') == failed_before["client_gone"] + 1
    assert rest(stack.http, "ko-KR", utterances_wav).status_code == 200, "the gateway and the recognizer serve on"


# ---- a client that leaves before its answer ------------------------------------------------------
#: CPU seconds of the recognizer's process within which the decoder of a gateway's client that left is free: decoding
#: the 50 s it left takes several; the gateway noticing the client gone and closing its request, and the recognizer
#: ending the chunk it decodes, take a fraction of one. The recognizer's CPU time, not the clock's: it runs in another
#: process, and on a machine whose CPU is shared by many the clock's time of that same work is many times longer.
GONE_CPU_BOUND = 1.0


def on_the_wire(request: httpx.Request) -> bytes:
    """``request`` as an HTTP/1.1 client writes it, its body whole."""
    head = f"{request.method} {request.url.raw_path.decode()} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in request.headers.items())
    return head.encode() + b"\r\n" + request.read()


def held_until_free(recognizer: Recognizer) -> Held:
    """How long ``recognizer`` went on decoding (its gauge, scraped every 0.1 s): clock seconds, and its process's CPU
    seconds meanwhile (which include its scrapes' little)."""
    started, cpu = time.monotonic(), cpu_seconds(recognizer.process.pid)
    while metric(recognizer, "speech_active_sessions"):
        assert time.monotonic() - started < 60, "the decoder is still held after 60 s"
        time.sleep(0.1)
    return Held(time.monotonic() - started, cpu_seconds(recognizer.process.pid) - cpu)


@pytest.mark.parametrize("how", ["close", "reset"])
@pytest.mark.parametrize("route", ["rest", "openai"])
def test_a_client_that_leaves_before_its_answer_frees_the_recognizers_decoder(locales: Locales, utterances_wav: Path,
                                                                              route: str, how: str) -> None:
    """A REST or OpenAI client of the gateway sends 50 s of audio, whole, then leaves while its recognizer decodes (a FIN:
    its socket closed, which the gateway tells from a half-close; or a reset): the gateway aborts its request to the
    recognizer, which counts a client gone and frees its decoder within :data:`GONE_CPU_BOUND`, as for a client of its own;
    the gateway counts ``client_gone``. Before, the gateway waited for the answer: the recognizer decoded the audio to
    its end for nobody and answered (its decoder held long after the client left, where a client of the recognizer's
    own frees it at once), and counted no client gone."""
    ko, stack = locales.recognizers["ko-KR"], locales.stack
    wav = wav_bytes(read_wav(utterances_wav)[0] * 4)  # about 50 s: seconds of decoding
    if route == "rest":
        request = httpx.Request("POST", f"{stack.http}{REST}?language=ko-KR", content=wav, headers={"Content-Type": "audio/wav"})
    else:
        request = httpx.Request("POST", f"{stack.http}{contract.ROUTE_OPENAI_TRANSCRIPTIONS}", data={"language": "ko-KR"},
                                files={"file": ("long.wav", wav, "audio/wav")})
    gone = f'speech_refused_total{{reason="client_gone",route="{"rest-conversation" if route == "rest" else "openai"}"}}'
    failed = 'speech_gateway_failures_total{locale="ko-KR",reason="client_gone"}'
    before, failed_before = metric(ko, gone), metric(stack, failed)
    with socket.create_connection(("127.0.0.1", stack.port)) as sock:
        sock.sendall(on_the_wire(request))
        stack.eventually(lambda: metric(ko, "speech_active_sessions") == 1, 30, "the recognizer decodes")
        time.sleep(0.5)
        assert metric(ko, "speech_active_sessions") == 1, "it decodes its 50 s"
        leave(sock, how)
        held = held_until_free(ko)
    assert held.cpu < GONE_CPU_BOUND, f"the recognizer's decoder was held {held} after the client left"
    stack.eventually(lambda: metric(ko, gone) == before + 1, 5, "the recognizer counts a client gone")
    stack.eventually(lambda: metric(stack, failed) == failed_before + 1, 5, "the gateway counts a client gone")


@pytest.mark.parametrize("how", ["close", "reset"])
def test_a_vosk_client_that_leaves_without_a_close_frame_frees_the_recognizers_decoder(locales: Locales, utterances_wav: Path,
                                                                                       how: str) -> None:
    """A /vosk client of the gateway sends 50 s of audio and leaves without a close frame (a FIN, or a reset): the
    gateway closes the recognizer's side (1001), which counts a client gone and frees its decoder within
    :data:`GONE_CPU_BOUND`. (So it did before this test: 0.1 s after the client left, either way.)"""
    ko, stack = locales.recognizers["ko-KR"], locales.stack
    pcm = read_wav(utterances_wav)[0] * 4
    gone = 'speech_refused_total{reason="client_gone",route="vosk"}'
    before = metric(ko, gone)
    with connect(f"{stack.ws}/vosk?language=ko-KR", max_size=1 << 20) as ws:
        for i in range(0, len(pcm), 8000):  # as fast as the sockets take it
            ws.send(pcm[i : i + 8000])
        ws.recv(timeout=30)
        assert metric(ko, "speech_active_sessions") == 1, "it decodes its 50 s"
        leave(ws.socket, how)
        held = held_until_free(ko)
    assert held.cpu < GONE_CPU_BOUND, f"the recognizer's decoder was held {held} after the client left"
    stack.eventually(lambda: metric(ko, gone) == before + 1, 5, "the recognizer counts a client gone")


# ---- a recognizer that dies mid-stream ---------------------------------------------------------
@pytest.fixture
def doomed(locales: Locales, tmp_path: Path):
    """A third recognizer (locale de-DE, the Korean model) behind a SpeechToText, to be killed mid-stream."""
    r = start_recognizer(tmp_path, "de-DE")
    try:
        r.wait_ready()
        locales.stack.create(speech_to_text("de-de", "de-DE", r.port))
        locales.stack.routes("de-DE")
        yield r
    finally:
        r.kill()
        locales.stack.delete("de-de")
        locales.stack.eventually(lambda: "de-DE" not in locales.stack.directory.locales, 10, "de-DE gone")


def test_a_recognizer_dying_mid_stream_closes_the_vosk_stream_clearly(locales: Locales, doomed, utterances_wav: Path) -> None:
    pcm, rate, _ = read_wav(utterances_wav)
    with connect(f"{locales.stack.ws}/vosk?language=de-DE") as ws:
        ws.send(json.dumps({"config": {"sample_rate": rate}}))
        for i in range(10):
            ws.send(pcm[i * 3200:(i + 1) * 3200])
            ws.recv(timeout=30)
        doomed.kill()
        started = time.monotonic()
        with pytest.raises(ConnectionClosed) as closed:
            for i in range(10, 1000):
                ws.send(pcm[i * 3200:(i + 1) * 3200])
                ws.recv(timeout=30)
    assert time.monotonic() - started < 5
    frame = closed.value.rcvd
    assert frame is not None, "closed without a close frame"
    assert frame.code == 1011 and "went away mid-stream" in frame.reason and "de-DE" in frame.reason, frame


def test_a_recognizer_dying_mid_stream_ends_the_sdks_session(locales: Locales, doomed, utterances_wav: Path) -> None:
    """The Speech SDK is told, and stops with an error naming the locale, within seconds; it does not hang."""
    pcm, rate, _ = read_wav(utterances_wav)
    push = speechsdk.audio.PushAudioInputStream(speechsdk.audio.AudioStreamFormat(samples_per_second=rate))
    rec = speechsdk.SpeechRecognizer(config(locales.stack.ws, language="de-DE"),
                                     audio_config=speechsdk.audio.AudioConfig(stream=push))
    canceled: list[speechsdk.CancellationDetails] = []
    stopped = threading.Event()
    first = threading.Event()
    rec.recognizing.connect(lambda e: first.set())
    rec.canceled.connect(lambda e: canceled.append(e.cancellation_details))
    rec.session_stopped.connect(lambda e: stopped.set())
    rec.start_continuous_recognition()
    pushed = 0
    while not first.is_set() and pushed < len(pcm):
        push.write(pcm[pushed:pushed + 3200])
        pushed += 3200
        time.sleep(0.05)
    # All the audio may be pushed before a loaded machine decodes its first words: wait for them, not for the pushing.
    assert first.wait(20), "no intermediate result before the kill"
    doomed.kill()
    started = time.monotonic()
    while not stopped.wait(0.1) and time.monotonic() - started < 30:
        push.write(pcm[pushed % len(pcm):pushed % len(pcm) + 3200])
        pushed += 3200
    rec.stop_continuous_recognition()
    assert stopped.is_set(), "the SDK's session did not end within 30 s of its recognizer's death"
    assert canceled and canceled[0].reason == speechsdk.CancellationReason.Error, canceled
    # The SDK reconnects once after the 1011; the gateway then finds no recognizer and says so (1013).
    assert "de-DE" in canceled[0].error_details, canceled[0].error_details
