"""Every encoding the REST route accepts gives the words of the 16-bit PCM original.

The encodings are made from the test speech by sox (and, for Ogg/Opus, which
this sox cannot write, and a second float WAV writer, by libsndfile through
soundfile). Float WAV used to be heard as silence: libsndfile hands float
samples back unscaled when asked for 16-bit integers, so every sample read as
0 or +-1 (``InitialSilenceTimeout``).

The lossy 8-bit ones (unsigned PCM, A-law, mu-law: 37-48 dB SNR) and Vorbis
change the words themselves: the small model, on synthetic speech it is unsure
of, hears them differently even as sox decodes them. So those are compared
with the words of the 16-bit PCM sox decodes the same file to (the server's
decoding equals sox's sample for sample): the server must hear what the file
holds, neither silence nor noise.
"""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import httpx
import pytest
import soundfile

from ..support import require_tool

REST = "/speech/recognition/conversation/cognitiveservices/v1?language=ko-KR"

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


def post(server, body: bytes) -> httpx.Response:
    return httpx.post(f"{server.http}{REST}", content=body, headers={"Content-Type": "audio/wav"}, timeout=60)


@pytest.fixture(scope="module")
def original_text(server, speech_wav: Path) -> str:
    r = post(server, speech_wav.read_bytes())
    assert r.status_code == 200 and r.json()["RecognitionStatus"] == "Success", r.text
    return r.json()["DisplayText"]


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
def test_encoding_gives_the_words_of_the_original(server, speech_wav: Path, original_text: str, tmp_path: Path, name: str) -> None:
    """At another rate than the original's, the original is 16-bit PCM at that rate and channel count, made first
    and then encoded: the server resamples what it gets to the model's rate, and on speech the small model is
    unsure of, two resamplings (16 -> 48 -> 16 kHz) can change a syllable (seen: 씀 for 습)."""
    source, expected = speech_wav, original_text
    if "-r" in SOX.get(name, ()):
        source = tmp_path / "pcm16.wav"
        sox(speech_wav, [*SOX[name][:4], "-b", "16", "-e", "signed-integer"], source)
        expected = post(server, source.read_bytes()).json()["DisplayText"]
    r = post(server, encoded(name, source, tmp_path / name))
    assert r.status_code == 200, r.text
    assert (r.json()["RecognitionStatus"], r.json()["DisplayText"]) == ("Success", expected)


@pytest.mark.parametrize("name", LOSSY)
def test_lossy_encoding_gives_the_words_of_its_16_bit_decoding(server, speech_wav: Path, tmp_path: Path, name: str) -> None:
    body = sox(speech_wav, LOSSY[name], tmp_path / name)
    decoded = post(server, sox(tmp_path / name, ["-b", "16", "-e", "signed-integer"], tmp_path / "decoded.wav"))
    assert decoded.status_code == 200 and decoded.json()["RecognitionStatus"] == "Success", decoded.text
    r = post(server, body)
    assert r.status_code == 200, r.text
    assert (r.json()["RecognitionStatus"], r.json()["DisplayText"]) == ("Success", decoded.json()["DisplayText"])
