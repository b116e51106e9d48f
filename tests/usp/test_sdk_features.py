"""What an unmodified Speech SDK app gets when it sets more than a language: the features apps migrating from Azure
use, each against the session's server, as README's table (Using the Azure Speech SDK) says.

Each feature either works as with Azure's speech-to-text container (the same words as in-process Vosk, as
tests/usp/test_sdk.py checks them), is ignored with the same words, or is refused at once with a cancellation that
names what is not served. What the SDK sent is read from the server's own log of each ``speech.context`` (a debug
line of ``speech_recognizer.usp.connection``): no client or server part is mocked.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import subprocess
import threading
import uuid
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import azure.cognitiveservices.speech as speechsdk
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect
from websockets.typing import Subprotocol

from harness.usp import client_text_frame
from speech_recognizer.contract import NOT_SERVED_PATHS
from speech_recognizer.models import LoadedModel
from speech_recognizer.results import written
from speech_recognizer.usp.connection import Turn

from ..conftest import LONG_PAUSE_MS, reference
from ..doc_tables import README, ROOT, code_spans, table
from ..support import SENTENCES, Reference, RefPhrase, RefWord, ServerThread, Starved, read_wav, require_tool, speak, within
from .conftest import SDK_CHUNK
from .sdk import UNSERVED_CLIENTS, assert_matches, assert_same, config, continuous, detailed, expected_words, recognizer, spans

Reason = speechsdk.ResultReason
PropertyId = speechsdk.PropertyId
#: README's table of Speech SDK features, by its header row.
FEATURES_HEADER = "| the app sets | what the recognizer does | test |"
#: How soon a refusal must reach the app: at once, not after the SDK's reconnections (seen: 0.02-0.5 s), in seconds but
#: those this process (the SDK, the server) waited for a CPU (:class:`~tests.support.Starved`).
AT_ONCE = 2.0
#: How long a raw client waits by the clock for a close that :data:`AT_ONCE` bounds: a hang, on however loaded a machine.
HANG = 60.0
#: How long a phrase (or a session's stop) may take to come once its audio is pushed: a hang guard, in time this process
#: (the SDK, the server, its decoders) did not wait for a CPU (:func:`~tests.support.within`): 20 s of clock failed
#: sessions that were only slow at load 22.
PHRASE_SECONDS = 30.0
#: How long a ``Connection``'s ``connected`` or ``disconnected`` may take to fire: a hang guard, in time this process
#: (the SDK's threads, the server) did not wait for a CPU (:func:`~tests.support.within`). Not a latency: the SDK's own
#: threads wait for a CPU all the while on a loaded machine (a server 5 s late to accept read as under 2 s at load 16).
EVENT_SECONDS = 10.0


@pytest.fixture
def contexts(caplog: pytest.LogCaptureFixture) -> Callable[[], list[dict[str, Any]]]:
    """The ``speech.context`` bodies the server received during the test, as it logged them."""
    caplog.set_level(logging.DEBUG, logger="speech_recognizer.usp.connection")

    def read() -> list[dict[str, Any]]:
        return [json.loads(r.args[1]) for r in caplog.records  # type: ignore[index]
                if r.name == "speech_recognizer.usp.connection" and r.args and r.args[0] == "speech.context"]

    return read


def _cancellation(result: speechsdk.SpeechRecognitionResult) -> speechsdk.CancellationDetails:
    assert result.reason == Reason.Canceled, result
    return result.cancellation_details


# ---- served, or ignored with the same words ----------------------------------------------------------


def test_phrase_list_is_ignored_with_the_same_words(server: ServerThread, speech_wav: Path, speech_ref: Reference, contexts) -> None:
    """``PhraseListGrammar`` reaches the server as ``dgi`` in ``speech.context``; Vosk's graph is compiled, so the
    phrases are no hints to it: the words are those without them, and recognition goes on."""
    rec = recognizer(config(server.ws), speech_wav)
    phrases = speechsdk.PhraseListGrammar.from_recognizer(rec)
    phrases.addPhrase("날씨")
    phrases.addPhrase("서울 부산")
    assert_matches(rec.recognize_once(), speech_ref.phrases[0])
    sent = contexts()
    assert [i["Text"] for i in sent[0]["dgi"]["Groups"][0]["Items"]] == ["날씨", "서울 부산"], sent


@pytest.mark.parametrize("how", ["SourceLanguageConfig", "SpeechConfig.endpoint_id"])
def test_a_custom_endpoint_id_is_served_by_the_locale_model(server: ServerThread, speech_wav: Path, speech_ref: Reference,
                                                            how: str) -> None:
    """A custom model's endpoint id (query ``cid``) is served by the model of the locale, as a container serves the
    one model it runs: the words are the locale model's."""
    cfg = config(server.ws)
    if how == "SpeechConfig.endpoint_id":
        cfg.endpoint_id = "my-custom-endpoint"
        rec = recognizer(cfg, speech_wav)
    else:
        source = speechsdk.languageconfig.SourceLanguageConfig("ko-KR", "my-custom-endpoint")
        rec = speechsdk.SpeechRecognizer(cfg, source_language_config=source,
                                         audio_config=speechsdk.audio.AudioConfig(filename=str(speech_wav)))
    assert_matches(rec.recognize_once(), speech_ref.phrases[0])


@pytest.mark.parametrize("option", ["Removed", "Raw", "property raw"])
def test_profanity_options_reach_the_server(server: ServerThread, speech_wav: Path, speech_ref: Reference, contexts, option: str) -> None:
    """``set_profanity`` and ``SpeechServiceResponse_ProfanityOption`` reach the server (``enrichment.profanity``);
    the words (none of them profane) are unchanged. How each option treats a profane word: tests/recognizer."""
    cfg = config(server.ws)
    if option == "property raw":
        cfg.set_property(PropertyId.SpeechServiceResponse_ProfanityOption, "raw")
    else:
        cfg.set_profanity(getattr(speechsdk.ProfanityOption, option))
    assert_matches(recognizer(cfg, speech_wav).recognize_once(), speech_ref.phrases[0])
    want = "raw" if option == "property raw" else option.lower()
    assert contexts()[0]["phraseDetection"]["enrichment"]["profanity"] == want


def test_truetext_post_processing_is_ignored_with_the_same_words(server: ServerThread, speech_wav: Path, speech_ref: Reference,
                                                                 contexts) -> None:
    """``PostProcessingOption`` ``TrueText`` (disfluencies removed) reaches the server; the model writes no
    disfluencies, so the detailed result, ``ITN`` and ``Display`` included, is as without it."""
    cfg = detailed(config(server.ws))
    cfg.set_property(PropertyId.SpeechServiceResponse_PostProcessingOption, "TrueText")
    result = recognizer(cfg, speech_wav).recognize_once()
    assert_matches(result, speech_ref.phrases[0])
    best = json.loads(result.json)["NBest"][0]
    assert best["Display"] == result.text and best["ITN"] == written(best["Lexical"])
    assert contexts()[0]["phraseDetection"]["enrichment"]["interactive"]["disfluencyMode"] == "Removed"


@pytest.mark.parametrize("mode", ["at start", "continuous"])
def test_language_identification_with_one_language_recognizes_in_it(server: ServerThread, speech_wav: Path,
                                                                    speech_ref: Reference, mode: str) -> None:
    """``AutoDetectSourceLanguageConfig`` with one language: the SDK sends ``language=en-us&lidEnabled=ko-KR`` and
    ``languageId.languages``; the turn is recognized in that language and each result names it
    (``AutoDetectSourceLanguageResult``). It was refused before: "no model for language 'en-us'"."""
    cfg = speechsdk.SpeechConfig(host=server.ws)
    detect = speechsdk.languageconfig.AutoDetectSourceLanguageConfig(languages=["ko-KR"])
    audio = speechsdk.audio.AudioConfig(filename=str(speech_wav))
    if mode == "at start":
        result = speechsdk.SpeechRecognizer(cfg, auto_detect_source_language_config=detect, audio_config=audio).recognize_once()
        results = [result]
    else:
        cfg.set_property(PropertyId.SpeechServiceConnection_LanguageIdMode, "Continuous")
        events = continuous(speechsdk.SpeechRecognizer(cfg, auto_detect_source_language_config=detect, audio_config=audio), timeout=30)
        assert not events.canceled, [d.error_details for d in events.canceled]
        results = events.recognized
    assert len(results) == 1
    assert_matches(results[0], speech_ref.phrases[0])
    assert speechsdk.AutoDetectSourceLanguageResult(results[0]).language == "ko-KR"


@pytest.fixture(scope="module")
def paused_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two sentences with a short pause between them (0.1 s of digital silence after espeak's own), then 1 s of it:
    the decoder's endpoint rules hear one utterance (its phrase's largest gap between words is 0.48 s)."""
    folder = tmp_path_factory.mktemp("paused")
    first, rate, _ = read_wav(speak(SENTENCES[0], folder / "first.wav"))
    second, _, _ = read_wav(speak(SENTENCES[1], folder / "second.wav"))
    out = folder / "paused.wav"
    with wave.open(str(out), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate)
        w.writeframes(bytes(int(0.3 * rate) * 2) + first + bytes(int(0.1 * rate) * 2) + second + bytes(rate * 2))
    return out


def _cut(phrase: RefPhrase, pause: float) -> list[RefPhrase]:
    """``phrase`` cut where its words leave ``pause`` s of silence (what Azure's segmentation silence does)."""
    pieces: list[list[RefWord]] = [[phrase.words[0]]]
    for before, word in itertools.pairwise(phrase.words):
        if word.start - before.end >= pause:
            pieces.append([])
        pieces[-1].append(word)
    return [RefPhrase(" ".join(w.word for w in p), tuple(p)) for p in pieces]


@pytest.mark.parametrize("setting", ["Speech_SegmentationSilenceTimeoutMs", "SpeechServiceConnection_EndSilenceTimeoutMs"])
def test_a_segmentation_silence_shorter_than_the_decoders_ends_phrases_at_it(
        server: ServerThread, model: LoadedModel, paused_wav: Path, contexts, setting: str) -> None:
    """Segmentation silence 300 ms (continuous recognition), or end silence 300 ms (``recognize_once``): a pause that
    long ends a phrase, as with Azure, where the decoder went on (the model's endpoint rules want 0.5 s or more).
    The server cuts the decoder's phrase at its pauses: each piece is in-process Vosk's words, times and
    confidences. Before, the setting reached the server (``speech.context``) and was ignored: one phrase."""
    want = reference(model, paused_wav).phrases
    assert len(want) == 1, [p.text for p in want]
    pieces = _cut(want[0], 0.3)
    assert len(pieces) == 2, pieces
    cfg = detailed(config(server.ws))
    cfg.set_property(getattr(PropertyId, setting), "300")
    rec = recognizer(cfg, paused_wav)
    if setting == "Speech_SegmentationSilenceTimeoutMs":
        events = continuous(rec, timeout=30)
        assert not events.canceled
        assert len(events.recognized) == 2, [r.text for r in events.recognized]
        for result, piece in zip(events.recognized, pieces, strict=True):
            assert_matches(result, piece)
        sent = contexts()[0]["phraseDetection"]["CONVERSATION"]["segmentation"]["segmentationSilenceTimeoutMs"]
    else:
        assert_matches(rec.recognize_once(), pieces[0])
        sent = contexts()[0]["phraseDetection"]["trailingSilenceTimeout"]
    assert sent == 300


def _assert_detailed(result: speechsdk.SpeechRecognitionResult, phrase: RefPhrase) -> None:
    """:func:`assert_matches`, and each word's times (``NBest[0].Words``) as in-process Vosk's."""
    assert_matches(result, phrase)
    assert_same(spans(json.loads(result.json)["NBest"][0]["Words"]), expected_words(phrase))


@pytest.mark.parametrize("setting", ["Speech_SegmentationSilenceTimeoutMs", "SpeechServiceConnection_EndSilenceTimeoutMs"])
def test_a_segmentation_silence_longer_than_the_decoders_joins_phrases_across_shorter_pauses(
        fresh_server: ServerThread, long_pauses_wav: Path, long_pauses_ref: Reference, setting: str) -> None:
    """Segmentation silence 2000 ms (continuous recognition, a push stream), or end silence 2000 ms (``recognize_once``):
    the decoder ends a phrase at each pause of the audio (about 0.5 s of silence is enough for it), but a pause shorter
    than 2 s does not end one, as with Azure. The sentences 1 s apart come as ONE phrase: both phrases of in-process
    Vosk joined (words, times, confidences; offset of the first, duration to the last); while the second is heard,
    the hypotheses show the first's words before it. The pause of 3 s ends the joined phrase once 2 s of it have
    been sent (before the third sentence is); the third comes at the end of the audio (1 s of silence after it).
    Before, the setting was ignored above the decoder's own pause: one phrase per pause (three; recognize_once: the
    first sentence alone)."""
    first, second, third = long_pauses_ref.phrases
    cfg = detailed(config(fresh_server.ws))
    cfg.set_property(getattr(PropertyId, setting), str(LONG_PAUSE_MS))
    if setting == "SpeechServiceConnection_EndSilenceTimeoutMs":
        _assert_detailed(recognizer(cfg, long_pauses_wav).recognize_once(), first.then(second))
        return
    pcm, rate, _ = read_wav(long_pauses_wav)
    cut = int((third.words[0].start - 0.2) * rate) * 2 // SDK_CHUNK * SDK_CHUNK  # before the third sentence
    stream = speechsdk.audio.PushAudioInputStream()
    rec = speechsdk.SpeechRecognizer(cfg, audio_config=speechsdk.audio.AudioConfig(stream=stream))
    got: list[speechsdk.SpeechRecognitionResult] = []
    hypotheses: list[str] = []
    arrived, stopped = threading.Semaphore(0), threading.Event()
    rec.recognizing.connect(lambda e: hypotheses.append(e.result.text))
    rec.recognized.connect(lambda e: (got.append(e.result), arrived.release()) if e.result.reason == Reason.RecognizedSpeech else None)
    rec.session_stopped.connect(lambda e: stopped.set())
    rec.start_continuous_recognition()
    _push(stream, pcm[:cut])
    within(PHRASE_SECONDS, lambda: arrived.acquire(blocking=False), lambda: f"a phrase before the third sentence was sent ({hypotheses})")
    _push(stream, pcm[cut:])
    stream.close()
    within(PHRASE_SECONDS, stopped.is_set, "the session's stop at the end of the audio")
    rec.stop_continuous_recognition()
    assert len(got) == 2, [r.text for r in got]
    _assert_detailed(got[0], first.then(second))
    _assert_detailed(got[1], third)
    heard_first = written(first.text) + " "
    assert any(h.startswith(heard_first) and len(h) > len(heard_first) for h in hypotheses), hypotheses


@pytest.fixture
def turns(monkeypatch: pytest.MonkeyPatch) -> list[Turn]:
    """The server's turns of this test, in order, seen by a spy on ``Turn.audio`` (which then runs unchanged): how far
    each has handled its audio (``Turn.position``)."""
    seen: list[Turn] = []
    audio = Turn.audio

    async def spy(turn: Turn, payload: bytes) -> None:
        if turn not in seen:
            seen.append(turn)
        await audio(turn, payload)

    monkeypatch.setattr(Turn, "audio", spy)
    return seen


def decoded(turns: list[Turn], pcm_bytes: int, rate: int) -> None:
    """Wait until the server's first turn has handled ``pcm_bytes`` of audio (16-bit, ``rate`` Hz): a hang guard
    (:func:`~tests.support.within`), a new recognizer decoding slower than real time on a busy machine."""
    within(60, lambda: turns and turns[0].position >= pcm_bytes / 2 / rate - 1e-6, lambda: f"the audio pushed decoded ({[t.position for t in turns]})")


def test_a_phrase_held_for_the_segmentation_silence_comes_at_the_stop(fresh_server: ServerThread, long_pauses_wav: Path,
                                                                      long_pauses_ref: Reference, turns: list[Turn]) -> None:
    """Segmentation silence 2000 ms; the first sentence and 1.5 s of the silence after it pushed: once the server has
    decoded all of it, the decoder ended its phrase (after about 0.5 s), and the server holds it, as more speech could
    follow within 2 s. ``stop_continuous_recognition`` ends the audio: the phrase comes before ``stop`` returns, as
    in-process Vosk's. Before, it came as soon as the decoder ended it, at a pause shorter than the app asked for.
    The stop waits for that event, the turn's results handled to the end of the audio pushed (``Turn.position``, seen
    by a spy on ``Turn.audio``, which then runs unchanged), not for a time: a new recognizer decodes its first
    utterance slower than real time on a busy machine."""
    first = long_pauses_ref.phrases[0]
    pcm, rate, _ = read_wav(long_pauses_wav)
    cut = int((first.words[-1].end + 1.5) * rate) * 2 // SDK_CHUNK * SDK_CHUNK
    cfg = detailed(config(fresh_server.ws))
    cfg.set_property(PropertyId.Speech_SegmentationSilenceTimeoutMs, str(LONG_PAUSE_MS))
    stream = speechsdk.audio.PushAudioInputStream()
    rec = speechsdk.SpeechRecognizer(cfg, audio_config=speechsdk.audio.AudioConfig(stream=stream))
    got: list[speechsdk.SpeechRecognitionResult] = []
    rec.recognized.connect(lambda e: got.append(e.result))
    rec.start_continuous_recognition()
    _push(stream, pcm[:cut])
    decoded(turns, cut, rate)
    assert not got, [r.text for r in got]
    rec.stop_continuous_recognition()
    assert len(got) == 1, [r.text for r in got]
    _assert_detailed(got[0], first)


@pytest.fixture(scope="module")
def noisy_pauses_wav(long_pauses_wav: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first two sentences of :func:`~tests.conftest.long_pauses_wav`, 1 s apart, and 6 s after them, in a noisy
    room: white noise at 0.01 of full scale (about -45 dBFS, above the server's
    :data:`~speech_recognizer.usp.connection.SOUND_LEVEL`) all through."""
    require_tool("sox")
    folder = tmp_path_factory.mktemp("noisy")
    parts = [read_wav(long_pauses_wav.parent / f"long-pauses{i}.wav")[0] for i in range(2)]
    quiet, noise, out = folder / "quiet.wav", folder / "noise.wav", folder / "noisy-pauses.wav"
    pcm = bytes(int(0.3 * 16000) * 2) + parts[0] + bytes(16000 * 2) + parts[1] + bytes(6 * 16000 * 2)
    with wave.open(str(quiet), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes(pcm)
    seconds = str(len(pcm) / (2 * 16000))
    subprocess.run(["sox", "-R", "-n", "-r", "16000", "-c", "1", "-b", "16", str(noise), "synth", seconds, "whitenoise", "vol", "0.01"],
                   check=True)
    subprocess.run(["sox", "-R", "-m", "-v", "1", str(quiet), "-v", "1", str(noise), "-b", "16", str(out)], check=True)
    return out


def _segmented(ref: Reference, pause: float) -> list[RefPhrase]:
    """The phrases an app with segmentation silence ``pause`` (s) must get of in-process Vosk's: its words, in runs
    whose pauses between words are shorter than ``pause``, wherever the decoder ended its own phrases."""
    words = [w for phrase in ref.phrases for w in phrase.words]
    runs: list[list[RefWord]] = [[words[0]]]
    for before, word in itertools.pairwise(words):
        if word.start - before.end >= pause:
            runs.append([])
        runs[-1].append(word)
    return [RefPhrase(" ".join(w.word for w in run), tuple(run)) for run in runs]


def test_in_a_noisy_room_a_held_phrase_comes_when_the_decoder_ends_the_next_or_the_silence_has_passed(
        server: ServerThread, model: LoadedModel, noisy_pauses_wav: Path) -> None:
    """Segmentation silence 2000 ms in a noisy room (:func:`noisy_pauses_wav`): no audio is quiet, so a held phrase
    is joined to the phrase the decoder ends of speech that followed within 2 s, and, with no word after it, sent
    2 + 3 s (``ONSET_LAG_SECONDS``) of audio after its last word: never held for good. The app gets in-process
    Vosk's words of the same audio (noise words included), in runs without a 2 s pause (detailed: words, times,
    confidences), every one before the audio ends (6 s of noise after the last word; the push stream stays open)."""
    ref = reference(model, noisy_pauses_wav)
    want = _segmented(ref, LONG_PAUSE_MS / 1000)
    assert len(want) < len(ref.phrases), ref.phrases  # the decoder ended a phrase the app's silence joins
    pcm, _, _ = read_wav(noisy_pauses_wav)
    cfg = detailed(config(server.ws))
    cfg.set_property(PropertyId.Speech_SegmentationSilenceTimeoutMs, str(LONG_PAUSE_MS))
    stream = speechsdk.audio.PushAudioInputStream()
    rec = speechsdk.SpeechRecognizer(cfg, audio_config=speechsdk.audio.AudioConfig(stream=stream))
    got: list[speechsdk.SpeechRecognitionResult] = []
    arrived = threading.Semaphore(0)
    rec.recognized.connect(lambda e: (got.append(e.result), arrived.release()) if e.result.reason == Reason.RecognizedSpeech else None)
    rec.start_continuous_recognition()
    _push(stream, pcm)
    for _ in want:
        within(PHRASE_SECONDS, lambda: arrived.acquire(blocking=False), lambda: f"{[r.text for r in got]} before the end of the audio; want {[p.text for p in want]}")
    rec.stop_continuous_recognition()
    assert len(got) == len(want), ([r.text for r in got], [p.text for p in want])
    for result, phrase in zip(got, want, strict=True):
        _assert_detailed(result, phrase)


def test_a_segmentation_silence_out_of_range_is_refused_naming_it(server: ServerThread, speech_wav: Path) -> None:
    """A segmentation silence outside the 100-5000 ms the SDK documents: ``BadRequest`` at once, naming the value."""
    cfg = config(server.ws)
    cfg.set_property(PropertyId.Speech_SegmentationSilenceTimeoutMs, "50")
    with Starved() as starved:
        details = _cancellation(recognizer(cfg, speech_wav).recognize_once())
    assert starved.seconds < AT_ONCE, str(starved)
    assert details.code == speechsdk.CancellationErrorCode.BadRequest
    assert "segmentationSilenceTimeoutMs '50' is not a number of ms from 100 to 5000" in details.error_details


# ---- the Connection object, and recognizing more than once -------------------------------------------


def test_a_connection_opened_first_serves_the_recognition(server: ServerThread, speech_wav: Path, speech_ref: Reference) -> None:
    """``Connection.from_recognizer(r).open(False)`` before ``recognize_once``, with a ``speech.config`` property
    set: ``connected`` fires, the recognition uses that connection, ``close()`` fires ``disconnected``. (``open(True)``
    opens a continuous connection, after which ``recognize_once`` raises SPXERR_SWITCH_MODE_NOT_ALLOWED in the SDK
    itself, before anything is sent; the Python SDK (1.53) has no ``message_received``.)"""
    rec = recognizer(config(server.ws), speech_wav)
    connection = speechsdk.Connection.from_recognizer(rec)
    seen: list[str] = []
    connected, disconnected = threading.Event(), threading.Event()
    connection.connected.connect(lambda e: (seen.append("connected"), connected.set()))
    connection.disconnected.connect(lambda e: (seen.append("disconnected"), disconnected.set()))
    connection.set_message_property("speech.config", "application", json.dumps({"name": "migrated-app"}))
    connection.open(False)
    within(EVENT_SECONDS, connected.is_set, lambda: f"connected ({seen})")
    assert_matches(rec.recognize_once(), speech_ref.phrases[0])
    connection.close()
    within(EVENT_SECONDS, disconnected.is_set, lambda: f"disconnected ({seen})")
    assert seen == ["connected", "disconnected"]


def _push(rec_stream: speechsdk.audio.PushAudioInputStream, pcm: bytes) -> None:
    for i in range(0, len(pcm), SDK_CHUNK):
        rec_stream.write(pcm[i : i + SDK_CHUNK])


def test_continuous_recognition_started_and_stopped_twice(fresh_server: ServerThread, utterances_wav: Path, utterances_ref: Reference) -> None:
    """Start, an utterance, stop; start again, the next, stop (one recognizer on one push stream): each session
    reports its own utterance, once, at its place in the stream (the second session's offsets go on from the first's)."""
    pcm, rate, _ = read_wav(utterances_wav)
    first, second, third = utterances_ref.phrases
    # each cut just before the next utterance: the decoder reports an utterance's end some way into the silence after it
    cuts = [int((b.words[0].start - 0.1) * rate) * 2 for b in (second, third)]
    stream = speechsdk.audio.PushAudioInputStream()
    rec = speechsdk.SpeechRecognizer(config(fresh_server.ws), audio_config=speechsdk.audio.AudioConfig(stream=stream))
    got: list[speechsdk.SpeechRecognitionResult] = []
    arrived = threading.Semaphore(0)
    rec.recognized.connect(lambda e: (got.append(e.result), arrived.release()) if e.result.reason == Reason.RecognizedSpeech else None)
    for part in (pcm[: cuts[0]], pcm[cuts[0] : cuts[1]]):
        rec.start_continuous_recognition()
        _push(stream, part)
        within(PHRASE_SECONDS, lambda: arrived.acquire(blocking=False), "a phrase from this session")
        rec.stop_continuous_recognition()
    assert len(got) == 2, [r.text for r in got]
    assert_matches(got[0], first)
    # the second session's audio starts with the SDK's replay from the first phrase's end: its own decoding, at its place
    assert got[1].text and abs(got[1].offset / 1e7 - second.words[0].start) < 0.1, (got[1].text, got[1].offset, second)


def test_stop_mid_utterance_gives_the_words_so_far(fresh_server: ServerThread, model: LoadedModel, utterances_wav: Path,
                                                  utterances_ref: Reference, tmp_path: Path, turns: list[Turn]) -> None:
    """``stop_continuous_recognition`` in the middle of an utterance: the SDK ends the audio, and the words heard so far
    come as a final ``recognized`` result before ``stop`` returns, as in-process Vosk's final result on that audio.
    (The decoder reports the first words of an utterance only some way into it: here not before the stop.) The stop
    comes once the server has decoded what was pushed, not 0.5 s after: at load 22 that was still decoding, and the
    SDK's stop returned before its final result (none)."""
    pcm, rate, _ = read_wav(utterances_wav)
    words = utterances_ref.phrases[0].words
    cut = int(words[-2].end * rate) * 2 // SDK_CHUNK * SDK_CHUNK  # before the utterance's last word, in whole chunks
    partial = tmp_path / "cut.wav"
    with wave.open(str(partial), "wb") as out:
        out.setnchannels(1), out.setsampwidth(2), out.setframerate(rate)
        out.writeframes(pcm[:cut])
    want = reference(model, partial)
    stream = speechsdk.audio.PushAudioInputStream()
    rec = speechsdk.SpeechRecognizer(config(fresh_server.ws), audio_config=speechsdk.audio.AudioConfig(stream=stream))
    got: list[speechsdk.SpeechRecognitionResult] = []
    rec.recognized.connect(lambda e: got.append(e.result))
    rec.start_continuous_recognition()
    _push(stream, pcm[:cut])
    decoded(turns, cut, rate)
    assert not got, "a phrase ended before the stop"
    rec.stop_continuous_recognition()
    assert len(got) == 1, [r.text for r in got]
    assert_matches(got[0], want.phrases[0])


# ---- refused at once, naming what is not served ------------------------------------------------------


def test_language_identification_among_two_languages_is_refused_naming_it(server: ServerThread, speech_wav: Path) -> None:
    """At-start language identification among two languages: no model here tells languages apart (nor does Azure's
    speech-to-text container), so the app gets ``BadRequest`` at once, its reason naming the feature and languages."""
    detect = speechsdk.languageconfig.AutoDetectSourceLanguageConfig(languages=["ko-KR", "en-US"])
    rec = speechsdk.SpeechRecognizer(speechsdk.SpeechConfig(host=server.ws), auto_detect_source_language_config=detect,
                                     audio_config=speechsdk.audio.AudioConfig(filename=str(speech_wav)))
    with Starved() as starved:
        details = _cancellation(rec.recognize_once())
    assert starved.seconds < AT_ONCE, f"the SDK connected again instead of failing at once: {starved}"
    assert details.code == speechsdk.CancellationErrorCode.BadRequest
    assert "language identification among ko-KR, en-US is not served" in details.error_details


@pytest.mark.parametrize(("client", "name"), UNSERVED_CLIENTS, ids=lambda v: v.__name__ if callable(v) else "")
def test_services_not_served_are_refused_at_once_naming_them(server: ServerThread, speech_wav: Path, client: Any, name: str) -> None:
    """Translation, conversation transcription and synthesis pointed at the recognizer: ``BadRequest`` at once with
    the service named (close 1007). Before, the paths were refused with 403, which the SDK reports as
    ``AuthenticationFailure`` ("check subscription information"): a wrong lead."""
    said, took = client(server.ws, speech_wav)
    assert took < AT_ONCE, f"{name}: canceled after {took:.2f} s not waiting for a CPU"
    assert said.startswith("CancellationErrorCode.BadRequest "), said
    assert f"{name} is not served here" in said, said


def test_a_recognition_path_of_no_mode_is_a_bad_request_naming_the_modes(server: ServerThread, speech_wav: Path) -> None:
    """``SpeechConfig(endpoint=...)`` with a recognition path of no mode (a typing error): ``BadRequest`` at once with
    the modes served (close 1007). Before, no route matched and the SDK got 403: ``AuthenticationFailure``, "Please
    check subscription information and region name", a wrong lead."""
    cfg = speechsdk.SpeechConfig(endpoint=f"{server.ws}/speech/recognition/nowhere/cognitiveservices/v1", subscription="unused-key")
    cfg.speech_recognition_language = "ko-KR"
    with Starved() as starved:
        result = speechsdk.SpeechRecognizer(cfg, audio_config=speechsdk.audio.AudioConfig(filename=str(speech_wav))).recognize_once()
    assert starved.seconds < AT_ONCE, str(starved)
    assert result.reason == speechsdk.ResultReason.Canceled, result
    details = result.cancellation_details
    assert details.code == speechsdk.CancellationErrorCode.BadRequest, details.error_details
    assert "no recognition mode 'nowhere'; use one of interactive, conversation, dictation" in details.error_details


@pytest.mark.parametrize("path", sorted(NOT_SERVED_PATHS))
def test_a_service_not_served_is_closed_once_its_request_begins(server: ServerThread, path: str) -> None:
    """The close comes after the client's first request message, not at once: the SDK for JavaScript sends its
    first messages as soon as the socket opens, and one sent after the close came made it report "websocket send
    error: Websocket not ready" and a stack trace (2 of 3 TranslationRecognizer requests), not the reason. Its
    SpeechSynthesizer connects to /tts/cognitiveservices/websocket/v1, which was refused with 403."""
    request = "synthesis.context" if "websocket" in path else "speech.context"
    with connect(f"{server.ws}{path}", subprotocols=[Subprotocol("USP")]) as ws:
        ws.send(client_text_frame("speech.config", None, {"context": {"system": {"name": "SpeechSDK"}}}))
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.3)  # still open: the request has not begun
        with Starved() as starved:
            ws.send(client_text_frame(request, uuid.uuid4().hex, {}))
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=HANG)
    assert starved.seconds < AT_ONCE, f"closed {starved} after the request"
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1007, closed.value
    assert f"{NOT_SERVED_PATHS[path]} is not served here" in closed.value.rcvd.reason


def test_speaker_diarization_asked_on_the_recognition_route_is_refused_naming_it(server: ServerThread) -> None:
    """The SDK for JavaScript's ConversationTranscriber connects to the conversation route and asks for speaker ids in
    its speech.context (``phraseDetection.speakerDiarization``, as its ConversationTranscriptionServiceRecognizer
    writes it). Before, it was served as plain recognition, its results without the speakers it asked for; now
    the turn is closed 1007 with the reason, which that SDK reports as a bad request."""
    context = {"phraseDetection": {"mode": "Conversation", "speakerDiarization": {
        "mode": "Anonymous", "audioSessionId": uuid.uuid4().hex, "audioOffsetMs": 0, "diarizeIntermediates": False}}}
    with connect(f"{server.ws}/speech/recognition/conversation/cognitiveservices/v1?language=ko-KR",
                 subprotocols=[Subprotocol("USP")]) as ws:
        ws.send(client_text_frame("speech.config", None, {"context": {"system": {"name": "SpeechSDK"}}}))
        with Starved() as starved:
            ws.send(client_text_frame("speech.context", uuid.uuid4().hex, context))
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    ws.recv(timeout=HANG)
    assert starved.seconds < AT_ONCE, f"closed {starved} after the request"
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1007, closed.value
    assert "speaker diarization (ConversationTranscriber) is not served here" in closed.value.rcvd.reason


# ---- README's table ----------------------------------------------------------------------------------


def test_readme_table_names_the_tests_that_check_it() -> None:
    """Each row of README's feature table names tests (``file::name``) that exist; each test of this file is named."""
    rows = table(README.read_text(), FEATURES_HEADER)
    named = {span for row in rows for span in code_spans(row[2])}
    assert named, "the table names no test"
    for ref in named:
        path, _, name = ref.partition("::")
        source = (ROOT / path).read_text()
        assert re.search(rf"^def {re.escape(name)}\(", source, re.M), f"README's feature table names {ref}, which does not exist"
    here = Path(__file__).relative_to(ROOT).as_posix()
    mine = re.findall(r"^def (test_\w+)\(", Path(__file__).read_text(), re.M)
    unnamed = [t for t in mine if f"{here}::{t}" not in named and t != "test_readme_table_names_the_tests_that_check_it"]
    assert not unnamed, f"tests README's feature table does not name: {unnamed}"
