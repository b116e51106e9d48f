"""recognize_once and its initial-silence window (5 s): speech that begins late in it, after it, and none.

Azure ends a recognize-once turn with ``InitialSilenceTimeout`` when no speech began within the window.
The decoder reports a word only some time after it begins (its first hypothesis or phrase, up to about
2.5 s later with the small model: docs/engine.md), so speech begun in the window's last seconds was
answered ``InitialSilenceTimeout`` and lost: a user who waits three seconds before speaking got nothing.
"""

from __future__ import annotations

import wave
from pathlib import Path

import azure.cognitiveservices.speech as speechsdk
import pytest

from harness.speech import SENTENCES, concat, silence, speak
from speech_recognizer.models import LoadedModel

from ..conftest import reference
from ..support import Reference, ServerThread, Starved, read_wav
from .conftest import replay_reference
from .sdk import assert_matches, config, recognizer

Reason = speechsdk.ResultReason
#: In-process Vosk decodes it the same way from each start the tests use (most of these sentences vary).
SENTENCE = SENTENCES[0]
WINDOW = 5.0  # Azure's default initial-silence timeout for recognize-once (usp.options)


def padded(tmp_path: Path, quiet: float) -> Path:
    """``quiet`` seconds of silence (exact zeros, sox's; the sentence's own lead-in adds a little), the sentence,
    1.5 s of silence."""
    parts = [silence(quiet - 0.3, tmp_path / "quiet.wav"), speak(SENTENCE, tmp_path / "sentence.wav")]
    pcm, rate, _ = read_wav(concat(parts, tmp_path / "late.wav", gap=0.0))
    out = tmp_path / "late-padded.wav"
    with wave.open(str(out), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate)
        w.writeframes(pcm + bytes(2 * int(rate * 1.5)))
    return out


@pytest.mark.parametrize("quiet", [3.0, 4.0])
def test_speech_beginning_late_in_the_window_is_recognized(server: ServerThread, model: LoadedModel, tmp_path: Path,
                                                            quiet: float) -> None:
    """Speech from 3.2 s and from 4.5 s: the decoder reports it after 5 s of audio; it is the turn's phrase, with
    in-process Vosk's words and times (before: NoMatch, InitialSilenceTimeout over 0-5 s)."""
    wav = padded(tmp_path, quiet)
    want = reference(model, wav)
    assert quiet < want.phrases[0].words[0].start < WINDOW
    result = recognizer(config(server.ws), wav).recognize_once()
    assert result.reason == Reason.RecognizedSpeech, (result.reason, result.offset, result.duration)
    assert_matches(result, want.phrases[0])


def test_speech_beginning_after_the_window_is_the_next_turns(server: ServerThread, model: LoadedModel,
                                                             tmp_path: Path) -> None:
    """Speech from 6.5 s: the first recognize_once ends with InitialSilenceTimeout over exactly the window (0-5 s);
    the next, a continuation from 5 s, gets the phrase as in-process Vosk decodes that replay."""
    wav = padded(tmp_path, 6.5)
    rec = recognizer(config(server.ws), wav)
    first, second = rec.recognize_once(), rec.recognize_once()
    assert first.reason == Reason.NoMatch and first.no_match_details.reason == speechsdk.NoMatchReason.InitialSilenceTimeout
    assert (first.offset, first.duration) == (0, int(WINDOW * 10_000_000))
    want = replay_reference(model, wav, WINDOW)
    assert want is not None and want.words[0].start > WINDOW
    assert second.reason == Reason.RecognizedSpeech, second.reason
    assert_matches(second, want)


def test_quiet_audio_times_out_at_the_window(server: ServerThread) -> None:
    """Exact zeros (a muted microphone), 6 s of them and the stream left open: nothing loud came in the window,
    so the turn ends at 5 s of audio as before, not after the decoder's lag (which 6 s would not reach: the
    turn would wait for more audio): within 10 s but the time this process (the SDK, the server) waited for a CPU
    (:class:`~tests.support.Starved`)."""
    stream = speechsdk.audio.PushAudioInputStream()
    stream.write(bytes(2 * 16000 * 6))
    rec = speechsdk.SpeechRecognizer(config(server.ws), audio_config=speechsdk.audio.AudioConfig(stream=stream))
    with Starved() as starved:
        result = rec.recognize_once_async().get()
    stream.close()
    assert result.reason == Reason.NoMatch and result.no_match_details.reason == speechsdk.NoMatchReason.InitialSilenceTimeout
    assert starved.seconds < 10, f"the turn ended {starved} after the audio was sent"
    assert result.duration == int(WINDOW * 10_000_000)


def test_three_recognitions_of_three_utterances(server: ServerThread, model: LoadedModel, utterances_wav: Path,
                                                utterances_ref: Reference) -> None:
    """One recognizer object, recognize_once three times on a file of three utterances: each turn is a continuation
    from the end of the last phrase and gets the next one (the third began 3 s into its turn: it was NoMatch), as
    in-process Vosk decodes the SDK's replay from there, word for word."""
    rec = recognizer(config(server.ws), utterances_wav)
    results = [rec.recognize_once() for _ in range(3)]
    assert [r.reason for r in results] == [Reason.RecognizedSpeech] * 3, [(r.reason, r.offset) for r in results]
    assert_matches(results[0], utterances_ref.phrases[0])
    ends = [(r.offset + r.duration) // 10_000 / 1000 for r in results]  # the SDK replays from whole milliseconds
    second = replay_reference(model, utterances_wav, ends[0])
    assert second is not None
    assert_matches(results[1], second)
    third = replay_reference(model, utterances_wav, ends[1])
    assert third is not None
    assert ends[1] < results[2].offset / 1e7
    assert_matches(results[2], third)
