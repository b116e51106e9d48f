"""An unmodified Azure Speech SDK app against the server, checked against in-process Vosk.

Decoding is deterministic (the registry turns Kaldi's dither off) and the server
decodes the SDK's chunks as they come, so every result must equal in-process
Vosk's on the same audio exactly: the same words (formatted as Azure's Display
form), the same offsets and durations to the tick and, in detailed results, its
confidences (within support.CONFIDENCE_TOLERANCE: a pooled recognizer's lattice is
not always a new one's).
"""

from __future__ import annotations

import json
import threading
import time
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import azure.cognitiveservices.speech as speechsdk
import httpx
import pytest

from speech_recognizer.models import LoadedModel
from speech_recognizer.results import lexical, written

from ..conftest import TEST_KEY, reference
from ..support import Reference, ServerThread, Starved, read_wav, speak
from .conftest import SDK_CHUNK, replay_reference
from .sdk import assert_confidences, assert_matches, assert_same, config, continuous, detailed, expected, expected_words, once, recognizer, reported, spans
from .test_idle_proxy import HOLD_AT

Reason = speechsdk.ResultReason
#: A sentence after which Vosk, without dither, found no end of speech in exact zeros.
DIGITAL_SILENCE_SENTENCE = "안녕하세요 오늘 날씨가 좋네요"


def test_recognize_once_with_host(server: ServerThread, speech_wav: Path, speech_ref: Reference) -> None:
    result = once(config(server.ws), speech_wav)
    assert_matches(result, speech_ref.phrases[0])
    body = json.loads(result.json)
    assert set(body) >= {"RecognitionStatus", "DisplayText", "Offset", "Duration"} and "NBest" not in body
    assert_same(spans([body]), [expected(speech_ref.phrases[0])])


def test_recognize_once_with_endpoint_and_key(keyed_server: ServerThread, speech_wav: Path, speech_ref: Reference) -> None:
    cfg = config(keyed_server.ws, key=TEST_KEY, endpoint_mode="conversation")
    assert_matches(once(cfg, speech_wav), speech_ref.phrases[0])


def test_continuous_reports_each_utterance_once(fresh_server: ServerThread, utterances_wav: Path, utterances_ref: Reference) -> None:
    events = continuous(recognizer(detailed(config(fresh_server.ws)), utterances_wav))
    assert not events.canceled
    assert_same([reported(r) for r in events.recognized], [expected(p) for p in utterances_ref.phrases])
    for result, phrase in zip(events.recognized, utterances_ref.phrases, strict=True):
        assert "Confidence" in json.loads(result.json)["NBest"][0]["Words"][0]
        assert_confidences(json.loads(result.json), phrase)
    offsets = [r.offset for r in events.recognized]
    assert len(offsets) == 3 and offsets == sorted(set(offsets))


def test_recognize_once_twice_continues_the_stream(
    fresh_server: ServerThread, model: LoadedModel, utterances_wav: Path, utterances_ref: Reference
) -> None:
    """The second call is a continuation turn: the SDK replays the stream from the end of the
    first phrase, and the server decodes the replay afresh, reporting it at its place in the stream."""
    rec = recognizer(config(fresh_server.ws), utterances_wav)
    first, second = rec.recognize_once(), rec.recognize_once()
    assert_matches(first, utterances_ref.phrases[0])
    acknowledged = first.offset + first.duration
    replay_start = acknowledged // 10_000 / 1000  # the SDK replays from whole milliseconds
    replayed = replay_reference(model, utterances_wav, replay_start)
    assert replayed is not None, "in-process Vosk finds nothing in the replayed audio"
    assert_matches(second, replayed)
    assert second.offset > acknowledged and second.text != first.text


#: Seconds the push-stream app holds its audio at :data:`~tests.usp.test_idle_proxy.HOLD_AT` at most, waiting for the
#: first phrase.
HOLD_FOR = 60.0


def test_push_stream_gives_hypotheses_before_the_end(fresh_server: ServerThread, utterances_wav: Path, utterances_ref: Reference) -> None:
    """Audio pushed at 1x real time from another thread: hypotheses and phrases come while it streams. The app pushes
    nothing past :data:`~tests.usp.test_idle_proxy.HOLD_AT` (mid-stream, before the second utterance) until the first
    phrase came, at most :data:`HOLD_FOR` seconds, so that it comes while the audio streams by that event, however slow
    a busy machine's server (a new recognizer) decodes; a server that tells nothing before the end of the audio still
    fails."""
    pcm, rate, _ = read_wav(utterances_wav)
    stream = speechsdk.audio.PushAudioInputStream()
    rec = speechsdk.SpeechRecognizer(config(fresh_server.ws), audio_config=speechsdk.audio.AudioConfig(stream=stream))
    started, phrase = threading.Event(), threading.Event()
    rec.recognized.connect(lambda e: phrase.set() if e.result.reason == Reason.RecognizedSpeech else None)
    audio_done: list[float] = []

    def feed() -> None:
        started.wait(10)
        chunk_seconds = SDK_CHUNK / (2 * rate)
        hold = int(HOLD_AT * rate) * 2 // SDK_CHUNK
        t0 = time.monotonic()
        for n, i in enumerate(range(0, len(pcm), SDK_CHUNK)):
            if n == hold:
                phrase.wait(HOLD_FOR)
                t0 = time.monotonic() - n * chunk_seconds  # 1x from here on
            stream.write(pcm[i : i + SDK_CHUNK])
            time.sleep(max(0.0, t0 + (n + 1) * chunk_seconds - time.monotonic()))
        audio_done.append(time.monotonic())
        stream.close()

    feeder = threading.Thread(target=feed)
    feeder.start()
    events = continuous(rec, timeout=HOLD_FOR + 60, started=started)
    feeder.join()
    assert events.recognizing, "no recognizing events"
    assert events.recognizing[0][0] < audio_done[0] - 3, "the first hypothesis came only at the end of the audio"
    assert events.recognized_at[0] < audio_done[0], "the first phrase came only at the end of the audio"
    assert events.recognizing[0][0] < events.recognized_at[0]
    assert_same([reported(r) for r in events.recognized], [expected(p) for p in utterances_ref.phrases])


def test_detailed_output_with_word_timings(server: ServerThread, speech_wav: Path, speech_ref: Reference) -> None:
    result = once(detailed(config(server.ws)), speech_wav)
    phrase = speech_ref.phrases[0]
    assert_matches(result, phrase)
    body = json.loads(result.properties[speechsdk.PropertyId.SpeechServiceResponse_JsonResult])
    assert json.loads(result.json) == body
    assert body["RecognitionStatus"] == "Success" and body["DisplayText"] == result.text
    assert (body["Offset"], body["Duration"]) == (result.offset, result.duration)
    best = body["NBest"][0]
    assert best["Lexical"] == lexical(phrase.text), "the model's words as it spells them"
    assert best["ITN"] == best["MaskedITN"] == written(phrase.text), "written: [9] as 9"
    assert best["Display"] == result.text
    assert "Confidence" in best["Words"][0]
    assert_same(spans(best["Words"]), expected_words(phrase))
    assert_confidences(body, phrase)


def test_rest_and_sdk_give_the_same_json(server: ServerThread, speech_wav: Path, speech_ref: Reference) -> None:
    """One phrase, one JSON: the REST route and the SDK protocol build it with the same code."""
    response = httpx.post(
        f"{server.http}/speech/recognition/conversation/cognitiveservices/v1",
        params={"language": "ko-KR", "format": "detailed", "wordLevelTimestamps": "true", "wordLevelConfidence": "true"},
        content=speech_wav.read_bytes(),
        headers={"Content-Type": "audio/wav; codecs=audio/pcm; samplerate=16000"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    rest = response.json()
    sdk = json.loads(once(detailed(config(server.ws)), speech_wav).json)
    phrase = speech_ref.phrases[0]
    for body in (rest, sdk):
        assert_same(spans([body]), [expected(phrase)])
        assert body["NBest"][0]["Lexical"] == lexical(phrase.text)
        assert_same(spans(body["NBest"][0]["Words"]), expected_words(phrase))
        assert "Confidence" in body["NBest"][0]["Words"][0]
        assert_confidences(body, phrase)
    assert set(sdk) - set(rest) == {"Channel"}
    assert (sdk["RecognitionStatus"], sdk["DisplayText"]) == (rest["RecognitionStatus"], rest["DisplayText"])
    assert_same(spans([sdk]), spans([rest]))
    assert len(sdk["NBest"]) == len(rest["NBest"])
    for ours, theirs in zip(sdk["NBest"], rest["NBest"], strict=True):
        assert {k: v for k, v in ours.items() if k != "Words"} == {k: v for k, v in theirs.items() if k != "Words"}
        assert_same(spans(ours["Words"]), spans(theirs["Words"]))


def _cancellation(result: speechsdk.SpeechRecognitionResult) -> speechsdk.CancellationDetails:
    assert result.reason == Reason.Canceled, result
    details = result.cancellation_details
    assert details.reason == speechsdk.CancellationReason.Error
    return details


def test_wrong_key_is_an_authentication_failure(keyed_server: ServerThread, speech_wav: Path) -> None:
    details = _cancellation(once(config(keyed_server.ws, key="not-the-key"), speech_wav))
    assert details.code == speechsdk.CancellationErrorCode.AuthenticationFailure
    assert "401" in details.error_details


def test_missing_key_is_an_authentication_failure(keyed_server: ServerThread, speech_wav: Path) -> None:
    details = _cancellation(once(config(keyed_server.ws), speech_wav))
    assert details.code == speechsdk.CancellationErrorCode.AuthenticationFailure
    assert "403" in details.error_details


def test_unknown_language_is_a_bad_request_naming_it(server: ServerThread, speech_wav: Path) -> None:
    """``BadRequest`` naming the language asked for and those served, within 5 s but the time this process (the SDK,
    the server) waited for a CPU (:class:`~tests.support.Starved`): the SDK does not retry."""
    with Starved() as starved:
        details = _cancellation(once(config(server.ws, language="xx-XX"), speech_wav))
    assert details.code == speechsdk.CancellationErrorCode.BadRequest
    assert "xx-XX" in details.error_details and "ko-KR" in details.error_details
    assert starved.seconds < 5, f"the SDK retried instead of failing fast: {starved}"


def test_silence_is_no_match(server: ServerThread, silence_wav: Path) -> None:
    result = once(config(server.ws), silence_wav)
    assert result.reason == Reason.NoMatch
    assert result.no_match_details.reason == speechsdk.NoMatchReason.InitialSilenceTimeout


def test_silence_in_continuous_mode_recognizes_nothing(server: ServerThread, silence_wav: Path) -> None:
    events = continuous(recognizer(config(server.ws), silence_wav))
    assert events.recognized == [] and events.canceled == []


def test_four_clients_at_once(
    fresh_server: ServerThread, speech_wav: Path, speech_ref: Reference, utterances_wav: Path, utterances_ref: Reference
) -> None:
    wavs = [speech_wav, utterances_wav, speech_wav, utterances_wav]
    expected_phrases = [speech_ref.phrases[0], utterances_ref.phrases[0]] * 2
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda w: once(config(fresh_server.ws), w), wavs))
    for result, phrase in zip(results, expected_phrases, strict=True):
        assert_matches(result, phrase)


@pytest.mark.parametrize("source", ["file", "push stream"])
@pytest.mark.parametrize(("key", "status"), [("not-the-key", "401"), (None, "403")])
def test_refused_key_cancels_continuous_recognition(
    keyed_server: ServerThread, utterances_wav: Path, source: str, key: str | None, status: str
) -> None:
    """As ``recognize_once``: the app gets ``canceled`` with AuthenticationFailure and the status, then
    ``session_stopped``, at once (within 5 s but the time this process waited for a CPU: :class:`~tests.support.Starved`),
    from a file as from a push stream that is still open."""
    cfg = config(keyed_server.ws, key=key)
    if source == "file":
        rec = recognizer(cfg, utterances_wav)
    else:
        stream = speechsdk.audio.PushAudioInputStream()
        stream.write(read_wav(utterances_wav)[0][: 10 * SDK_CHUNK])  # 1 s, and the stream left open
        rec = speechsdk.SpeechRecognizer(cfg, audio_config=speechsdk.audio.AudioConfig(stream=stream))
    with Starved() as starved:
        events = continuous(rec, timeout=10)
    assert [d.code for d in events.canceled] == [speechsdk.CancellationErrorCode.AuthenticationFailure], events
    assert f"Authentication error ({status})" in events.canceled[0].error_details
    assert events.recognized == [] and events.recognizing == []
    assert starved.seconds < 5, f"the SDK retried instead of failing fast: {starved}"


def test_a_phrase_followed_by_digital_silence_ends_within_it(server: ServerThread, model: LoadedModel, tmp_path: Path) -> None:
    """A muted microphone sends exact zeros. The phrase ends within them, as after any quiet. The server
    decodes without dither (deterministic words), and after this sentence Vosk found no end of speech in
    10 s of exact zeros, so recognize_once waited for the stream's end or the server's AudioIdleSeconds
    (then canceled); most sentences ended there anyway, 0.6-0.9 s after the speech. Within 10 s of the audio sent
    but the time this process (the SDK, the server) waited for a CPU (:class:`~tests.support.Starved`)."""
    spoken = speak(DIGITAL_SILENCE_SENTENCE, tmp_path / "sentence.wav")
    pcm, rate, _ = read_wav(spoken)
    audio = pcm + bytes(2 * rate * 3)  # the sentence, then 3 s of digital silence; the stream stays open
    pushed = tmp_path / "pushed.wav"
    with wave.open(str(pushed), "wb") as out:
        out.setnchannels(1), out.setsampwidth(2), out.setframerate(rate)
        out.writeframes(audio)
    want = reference(model, pushed)
    stream = speechsdk.audio.PushAudioInputStream()
    stream.write(audio)
    rec = speechsdk.SpeechRecognizer(config(server.ws), audio_config=speechsdk.audio.AudioConfig(stream=stream))
    with Starved() as starved:
        result = rec.recognize_once_async().get()
    stream.close()
    assert result.reason == Reason.RecognizedSpeech, result.cancellation_details if result.reason == Reason.Canceled else result
    assert starved.seconds < 10, f"the phrase ended {starved} after the audio was sent"
    assert_matches(result, want.phrases[0])
