"""Every encoding the REST route accepts gives the words of the 16-bit PCM original.

The encodings are made from the test speech by sox (and, for Ogg/Opus, which
this sox cannot write, and a second float WAV writer, by libsndfile through
soundfile). Float WAV used to be heard as silence: libsndfile hands float
samples back unscaled when asked for 16-bit integers, so every sample read as
0 or +-1 (``InitialSilenceTimeout``).

The lossy 8-bit ones (unsigned PCM, A-law, mu-law: 37-48 dB SNR) and Vorbis
change the words themselves: the small model, on synthetic speech it is unsure
of, hears them differently even as sox decodes them. So those are compared
with the 16-bit PCM sox decodes the same file to (the server's decoding equals
sox's sample for sample): the server must hear what the file holds, neither
silence nor noise.

Each comparison is of the whole detailed answer (words, their times and
confidences): the same samples decode the same way every time, at 44.1 and 48
kHz too (the resampler's output depends on its input alone), so anything short
of equal is the decoding's.
"""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import httpx
import pytest
import soundfile

from ..support import assert_same_answer, require_tool

REST = "/speech/recognition/conversation/cognitiveservices/v1?language=ko-KR&format=detailed&wordLevelTimestamps=true&wordLevelConfidence=true"

#: name -> sox output options (the file's extension picks the container).
SOX = {
    "pcm_s24.wav": ["-b", "24", "-e", "signed-integer"],
    "pcm_s32.wav": ["-b", "32", "-e", "signed-integer"],
    "float32.wav": ["-b", "32", "-e", "floating-point"],
    "float64.wav": ["-b", "64", "-e", "floating-point"],
    "pcm_s16_stereo_44k.wav": ["-r", "44100", "-c", "2", "-b", "16"],
    "float32_stereo_48k.wav": ["-r", "48000", "-c", "2", "-b", "32", "-e", "floating-point"],
    "flac16.flac": [],
    "flac24.flac": ["-b", "24"],
}
#: Lossy encodings, by sox: compared with sox's own 16-bit decoding of the same file.
LOSSY = {
    "pcm_u8.wav": ["-b", "8", "-e", "unsigned-integer"],
    "alaw.wav": ["-b", "8", "-e", "a-law"],
    "mulaw.wav": ["-b", "8", "-e", "mu-law"],
    "vorbis.ogg": ["-C", "6"],
}
#: name -> (soundfile format, subtype, sample rate)
SOUNDFILE = {
    "soundfile_float32.wav": ("WAV", "FLOAT", 16000),
    "soundfile_float64.wav": ("WAV", "DOUBLE", 16000),
    "opus.ogg": ("OGG", "OPUS", 48000),
}
#: Lossy encodings made by soundfile from the original: other samples, so only their words are the original's.
LOSSY_WORDS = {"opus.ogg"}


def post(server, body: bytes) -> httpx.Response:
    return httpx.post(f"{server.http}{REST}", content=body, headers={"Content-Type": "audio/wav"}, timeout=60)


def answer(server, body: bytes) -> dict:
    """The detailed answer to ``body``, which must be speech: its words, their times and confidences."""
    r = post(server, body)
    assert r.status_code == 200 and r.json()["RecognitionStatus"] == "Success", r.text
    assert r.json()["NBest"][0]["Words"], r.text
    return r.json()


@pytest.fixture(scope="module")
def original(server, speech_wav: Path) -> dict:
    return answer(server, speech_wav.read_bytes())


def sox(source: Path, options: list[str], out: Path) -> bytes:
    subprocess.run([require_tool("sox"), "-R", str(source), *options, str(out)], check=True)
    return out.read_bytes()


def encoded(name: str, speech_wav: Path, out: Path) -> bytes:
    if name in SOX:
        return sox(speech_wav, SOX[name], out)
    fmt, subtype, rate = SOUNDFILE[name]
    data, _ = soundfile.read(speech_wav, dtype="float64")
    if rate != 16000:
        subprocess.run([require_tool("sox"), "-R", str(speech_wav), "-r", str(rate), str(out.with_suffix(".wav"))], check=True)
        data, _ = soundfile.read(out.with_suffix(".wav"), dtype="float64")
    buf = io.BytesIO()
    soundfile.write(buf, data, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


@pytest.mark.parametrize("name", [*SOX, *SOUNDFILE])
def test_encoding_gives_the_words_of_the_original(server, speech_wav: Path, original: dict, tmp_path: Path, name: str) -> None:
    """At another rate than the original's, the original is 16-bit PCM at that rate and channel count, made first
    and then encoded: what reaches the model is then not the original's samples but sox's conversion and the
    server's back to 16 kHz, other audio, on which the small model's confidences differ and, on speech it is unsure
    of, a syllable can (seen: 씀 for 습). The same samples give the same answer every time."""
    source, expected = speech_wav, original
    if "-r" in SOX.get(name, ()):
        source = tmp_path / "pcm16.wav"
        sox(speech_wav, [*SOX[name][:4], "-b", "16", "-e", "signed-integer"], source)
        expected = answer(server, source.read_bytes())
    r = post(server, encoded(name, source, tmp_path / name))
    assert r.status_code == 200, r.text
    if name in LOSSY_WORDS:
        assert (r.json()["RecognitionStatus"], r.json()["DisplayText"]) == ("Success", expected["DisplayText"])
    else:
        assert_same_answer(r.json(), expected)


@pytest.mark.parametrize("name", LOSSY)
def test_lossy_encoding_gives_the_words_of_its_16_bit_decoding(server, speech_wav: Path, tmp_path: Path, name: str) -> None:
    body = sox(speech_wav, LOSSY[name], tmp_path / name)
    decoded = answer(server, sox(tmp_path / name, ["-b", "16", "-e", "signed-integer"], tmp_path / "decoded.wav"))
    r = post(server, body)
    assert r.status_code == 200, r.text
    assert_same_answer(r.json(), decoded)
