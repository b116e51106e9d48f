"""An unmodified Azure Speech SDK app against the server, checked against in-process Vosk."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import azure.cognitiveservices.speech as speechsdk

from ..conftest import TEST_KEY
from ..support import RefPhrase, ServerThread, read_wav
from .sdk import TIME_TOLERANCE, assert_close, config, continuous, expected_span, once, recognizer, ticks

Reason = speechsdk.ResultReason


def assert_matches(result: speechsdk.SpeechRecognitionResult, ref: RefPhrase) -> None:
    assert result.reason == Reason.RecognizedSpeech, result
    assert_close(result.text, result.offset, result.duration, ref)


def test_recognize_once_with_host(server: ServerThread, speech_audio: Path, speech_ref: list[RefPhrase]) -> None:
    result = once(config(server.ws), speech_audio)
    assert_matches(result, speech_ref[0])
    body = json.loads(result.json)
    assert set(body) >= {"RecognitionStatus", "DisplayText", "Offset", "Duration"} and "NBest" not in body


def test_recognize_once_with_endpoint_and_key(
    keyed_server: ServerThread, speech_audio: Path, speech_ref: list[RefPhrase]
) -> None:
    cfg = config(keyed_server.ws, key=TEST_KEY, endpoint_mode="conversation")
    assert_matches(once(cfg, speech_audio), speech_ref[0])


def test_continuous_reports_each_utterance_once(
    server: ServerThread, utterances_audio: Path, utterances_ref: list[RefPhrase]
) -> None:
    events = continuous(recognizer(config(server.ws), utterances_audio))
    assert not events.canceled
    assert len(events.recognized) == len(utterances_ref)
    for result, ref in zip(events.recognized, utterances_ref):
        assert_close(result.text, result.offset, result.duration, ref)
    offsets = [r.offset for r in events.recognized]
    assert offsets == sorted(set(offsets))


def test_recognize_once_twice_continues_the_stream(
    server: ServerThread, utterances_audio: Path, utterances_ref: list[RefPhrase]
) -> None:
    """The second call is a continuation turn: the next utterance, at its place in the stream."""
    rec = recognizer(config(server.ws), utterances_audio)
    first, second = rec.recognize_once(), rec.recognize_once()
    assert_matches(first, utterances_ref[0])
    assert second.reason == Reason.RecognizedSpeech
    assert second.text and second.text != first.text
    # Offsets continue across the turns: the second utterance is where it is in the stream.
    # (Its words may differ: decoding restarts cold at the replayed audio.)
    start, _ = expected_span(utterances_ref[1])
    assert abs(second.offset - start) <= 2 * TIME_TOLERANCE, (second.offset, start)
    assert second.offset > first.offset + first.duration


def test_push_stream_in_real_time_gives_hypotheses_before_the_end(
    server: ServerThread, utterances_audio: Path, utterances_ref: list[RefPhrase]
) -> None:
    pcm, rate, _ = read_wav(utterances_audio)
    stream = speechsdk.audio.PushAudioInputStream()
    rec = speechsdk.SpeechRecognizer(config(server.ws), audio_config=speechsdk.audio.AudioConfig(stream=stream))
    started = threading.Event()
    audio_done: list[float] = []

    def feed() -> None:
        started.wait(10)
        for i in range(0, len(pcm), 3200):
            stream.write(pcm[i : i + 3200])
            time.sleep(0.1)
        audio_done.append(time.monotonic())
        stream.close()

    feeder = threading.Thread(target=feed)
    feeder.start()
    events = continuous(rec, started=started)
    feeder.join()
    assert events.recognizing, "no recognizing events"
    assert events.recognizing[0][0] < audio_done[0] - 3, "the first hypothesis came only at the end of the audio"
    assert events.recognized_at[0] < audio_done[0], "the first phrase came only at the end of the audio"
    assert events.recognizing[0][0] < events.recognized_at[0]
    assert len(events.recognized) == len(utterances_ref)


def test_detailed_output_with_word_timings(server: ServerThread, speech_audio: Path, speech_ref: list[RefPhrase]) -> None:
    cfg = config(server.ws)
    cfg.output_format = speechsdk.OutputFormat.Detailed
    cfg.request_word_level_timestamps()
    result = once(cfg, speech_audio)
    assert_matches(result, speech_ref[0])
    body = json.loads(result.properties[speechsdk.PropertyId.SpeechServiceResponse_JsonResult])
    assert json.loads(result.json) == body
    assert body["RecognitionStatus"] == "Success" and body["DisplayText"] == result.text
    assert (body["Offset"], body["Duration"]) == (result.offset, result.duration)
    best = body["NBest"][0]
    assert best["Lexical"] == best["ITN"] == best["Display"] == result.text
    assert 0.0 < best["Confidence"] <= 1.0
    words = best["Words"]
    assert " ".join(w["Word"] for w in words) == result.text
    assert words[0]["Offset"] == result.offset
    assert words[-1]["Offset"] + words[-1]["Duration"] == result.offset + result.duration
    assert all(a["Offset"] + a["Duration"] <= b["Offset"] for a, b in zip(words, words[1:]))
    assert abs(words[0]["Duration"] - (ticks(speech_ref[0].words[0].end) - ticks(speech_ref[0].words[0].start))) <= TIME_TOLERANCE


def _cancellation(result: speechsdk.SpeechRecognitionResult) -> speechsdk.CancellationDetails:
    assert result.reason == Reason.Canceled, result
    details = result.cancellation_details
    assert details.reason == speechsdk.CancellationReason.Error
    return details


def test_wrong_key_is_an_authentication_failure(keyed_server: ServerThread, speech_audio: Path) -> None:
    details = _cancellation(once(config(keyed_server.ws, key="not-the-key"), speech_audio))
    assert details.code == speechsdk.CancellationErrorCode.AuthenticationFailure
    assert "401" in details.error_details


def test_missing_key_is_an_authentication_failure(keyed_server: ServerThread, speech_audio: Path) -> None:
    details = _cancellation(once(config(keyed_server.ws), speech_audio))
    assert details.code == speechsdk.CancellationErrorCode.AuthenticationFailure
    assert "403" in details.error_details


def test_unknown_language_is_a_bad_request_naming_it(server: ServerThread, speech_audio: Path) -> None:
    started = time.monotonic()
    details = _cancellation(once(config(server.ws, language="xx-XX"), speech_audio))
    assert details.code == speechsdk.CancellationErrorCode.BadRequest
    assert "xx-XX" in details.error_details and "ko-KR" in details.error_details
    assert time.monotonic() - started < 5, "the SDK retried instead of failing fast"


def test_silence_is_no_match(server: ServerThread, silence_wav: Path) -> None:
    result = once(config(server.ws), silence_wav)
    assert result.reason == Reason.NoMatch
    assert result.no_match_details.reason == speechsdk.NoMatchReason.InitialSilenceTimeout


def test_silence_in_continuous_mode_recognizes_nothing(server: ServerThread, silence_wav: Path) -> None:
    events = continuous(recognizer(config(server.ws), silence_wav))
    assert events.recognized == [] and events.canceled == []


def test_four_clients_at_once(
    server: ServerThread, speech_audio: Path, speech_ref: list[RefPhrase], utterances_audio: Path, utterances_ref: list[RefPhrase]
) -> None:
    wavs = [speech_audio, utterances_audio, speech_audio, utterances_audio]
    expected = [speech_ref[0], utterances_ref[0], speech_ref[0], utterances_ref[0]]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda w: once(config(server.ws), w), wavs))
    for result, ref in zip(results, expected):
        assert_matches(result, ref)
