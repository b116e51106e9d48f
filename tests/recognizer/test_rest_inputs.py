"""The REST short-audio route: formats, every bad input, and that the server serves on afterwards."""

from __future__ import annotations

import io
import struct
import wave
from pathlib import Path
from typing import NamedTuple

import httpx
import numpy as np
import pytest
import soundfile

from speech_recognizer import audio
from speech_recognizer.models import LoadedModel

from ..conftest import CHUNK, TEST_KEY, StreamedMp3, shared_reference
from ..support import SENTENCES, Reference, read_wav, speak

REST = "/speech/recognition/conversation/cognitiveservices/v1"


def post(server, body: bytes, content_type: str = "audio/wav", query: str = "language=ko-KR", **headers: str) -> httpx.Response:
    return httpx.post(f"{server.http}{REST}?{query}", content=body, headers={"Content-Type": content_type, **headers}, timeout=60)


@pytest.fixture(scope="module")
def good_text(server, speech_wav: Path) -> str:
    r = post(server, speech_wav.read_bytes())
    assert r.status_code == 200, r.text
    assert r.json()["RecognitionStatus"] == "Success"
    assert r.json()["DisplayText"]
    return r.json()["DisplayText"]


class GoodRequest(NamedTuple):
    """A good body and the words (``Lexical``) the route must answer it with."""

    body: bytes
    lexical: str


#: The seconds of :func:`speech_wav` that :func:`good_second` holds: its first words.
GOOD_SECONDS = 1.0


@pytest.fixture(scope="session")
def good_second(run_dir: Path, model: LoadedModel, speech_wav: Path) -> GoodRequest:
    """The first :data:`GOOD_SECONDS` of :func:`speech_wav`, a WAV, and the words in-process Vosk hears in it (once per
    run): what a server that still serves answers after a bad request, for a third of the whole utterance's decoding."""
    pcm, rate, _ = read_wav(speech_wav)
    head = pcm[: int(GOOD_SECONDS * rate) * 2]
    ref = shared_reference(run_dir, model, head, rate, CHUNK)
    assert ref.texts, "no words in the first second"
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate)
        w.writeframes(head)
    return GoodRequest(out.getvalue(), " ".join(ref.texts))


def assert_still_serves(server, good: GoodRequest) -> None:
    """The server answers a good request (:func:`good_second`) with its words."""
    r = post(server, good.body, query="language=ko-KR&format=detailed")
    assert r.status_code == 200 and r.json()["NBest"][0]["Lexical"] == good.lexical, r.text


@pytest.mark.parametrize(
    ("rate", "channels"),
    [(8000, 1), (44100, 1), (16000, 2), (44100, 2), (48000, 1)],
)
def test_other_rates_and_channels_work(server, audio_dir: Path, rate: int, channels: int) -> None:
    wav = speak(SENTENCES[0], audio_dir / f"s{rate}c{channels}.wav", rate=rate, channels=channels)
    r = post(server, wav.read_bytes())
    assert r.status_code == 200, r.text
    assert r.json()["RecognitionStatus"] == "Success"
    assert r.json()["DisplayText"]


def test_ogg_opus_and_flac(server, speech_wav: Path, tmp_path: Path) -> None:
    data, rate = soundfile.read(speech_wav, dtype="int16")
    for fmt, subtype, ctype in (("OGG", "OPUS", "audio/ogg; codecs=opus"), ("FLAC", "PCM_16", "audio/flac")):
        buf = io.BytesIO()
        soundfile.write(buf, data, 48000 if subtype == "OPUS" else rate, format=fmt, subtype=subtype)
        r = post(server, buf.getvalue(), ctype)
        assert r.status_code == 200, r.text
        assert r.json()["RecognitionStatus"] == "Success"


def test_chunked_body(server, speech_wav: Path, good_text: str) -> None:
    data = speech_wav.read_bytes()

    def body():
        for i in range(0, len(data), 4096):
            yield data[i : i + 4096]

    r = httpx.post(f"{server.http}{REST}?language=ko-KR", content=body(), headers={"Content-Type": "audio/wav"}, timeout=60)
    assert r.status_code == 200 and r.json()["DisplayText"] == good_text


def test_streamed_wav_sizes(server, speech_wav: Path, good_text: str) -> None:
    """WAV written while streaming has 0 in its size fields (as the Speech SDK sends it)."""
    data = bytearray(speech_wav.read_bytes())
    struct.pack_into("<I", data, 4, 0)
    struct.pack_into("<I", data, 40, 0)
    r = post(server, bytes(data))
    assert r.status_code == 200 and r.json()["DisplayText"] == good_text


def test_detailed_format(server, speech_wav: Path) -> None:
    r = post(server, speech_wav.read_bytes(), query="language=ko-KR&format=detailed&profanity=raw")
    body = r.json()
    assert set(body) >= {"RecognitionStatus", "DisplayText", "Offset", "Duration", "NBest"}
    best = body["NBest"][0]
    assert set(best) >= {"Confidence", "Lexical", "ITN", "MaskedITN", "Display"}
    assert 0 < best["Confidence"] <= 1
    assert isinstance(body["Offset"], int) and isinstance(body["Duration"], int) and body["Duration"] > 0


def test_silence_is_initial_silence_timeout(server, silence_wav: Path) -> None:
    r = post(server, silence_wav.read_bytes())
    assert r.status_code == 200
    assert r.json()["RecognitionStatus"] == "InitialSilenceTimeout"
    assert r.json()["Duration"] == 3 * 10_000_000


def _truncated(wav: bytes) -> bytes:
    return wav[:30]


BAD_INPUTS = {
    "empty body": (lambda wav: b"", "audio/wav", 400, "empty"),
    "non-audio bytes": (lambda wav: b"this is not audio at all" * 10, "audio/wav", 400, "not WAV"),
    "truncated WAV header": (_truncated, "audio/wav", 400, "truncated"),
    "unsupported encoding": (
        lambda wav: wav[:20] + struct.pack("<H", 0x55) + wav[22:],  # MPEG layer 3 format tag
        "audio/wav",
        415,
        "unsupported WAV encoding",
    ),
    # an ASF (WMA) header: no container served (AMR, this case's body until raw AMR was decoded, is one now)
    "unsupported content type": (lambda wav: bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c") + b"\x3c" * 400, "audio/x-ms-wma",
                                 415, "unsupported content type"),
    # an MPEG frame header over and over: no second frame where the first one's length says: not taken for an MP3
    "MPEG frame headers alone": (lambda wav: b"\xff\xfb\x90\x00" * 100, "audio/mpeg", 400, "nor MPEG audio frames"),
    "bad sample rate": (lambda wav: wav[:24] + struct.pack("<I", 1000) + wav[28:], "audio/wav", 400, "sample rate"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gets_a_clear_error(server, speech_wav: Path, good_second: GoodRequest, case: str) -> None:
    make, ctype, status, words = BAD_INPUTS[case]
    r = post(server, make(speech_wav.read_bytes()), ctype)
    assert r.status_code == status, r.text
    assert words.lower() in r.json()["error"]["message"].lower()
    assert_still_serves(server, good_second)


def test_mp3_gives_the_words_and_times_in_process_vosk_hears_in_the_pcm_it_decodes_to(server, utterances_mp3: Path,
                                                                                       utterances_mp3_ref: Reference) -> None:
    """An MP3 body, as ``audio/mpeg`` or ``audio/mp3``: the words and times of in-process Vosk fed the PCM soundfile
    decodes the same file to. It had been a 415 ("unsupported content type 'audio/mpeg'")."""
    for content_type in ("audio/mpeg", "audio/mp3"):
        r = post(server, utterances_mp3.read_bytes(), content_type, query="language=ko-KR&format=detailed&wordLevelTimestamps=true")
        assert r.status_code == 200, r.text
        best = r.json()["NBest"][0]
        assert best["Lexical"] == " ".join(utterances_mp3_ref.texts)
        utterances_mp3_ref.assert_words_match([(w["Word"], w["Offset"] * 1e-7, (w["Offset"] + w["Duration"]) * 1e-7)
                                               for w in best["Words"]])


def _id3(body: bytes = b"", size: int | None = None) -> bytes:
    """An ID3v2.4 tag (a title), then ``body``; ``size``: the tag's size it says, if not its own."""
    frames = b"TIT2" + struct.pack(">I", 6) + b"\0\0" + b"\x03title"
    said = len(frames) if size is None else size
    return b"ID3\x04\x00\x00" + bytes((said >> shift) & 0x7F for shift in (21, 14, 7, 0)) + frames + body


def _flac(wav: Path) -> bytes:
    buf = io.BytesIO()
    soundfile.write(buf, *soundfile.read(wav, dtype="int16"), format="FLAC")
    return buf.getvalue()


#: MP3 bodies that are not whole: made of the MP3 of the three utterances (and the WAV) -> status, what the reason says.
BAD_MP3 = {
    "an ID3 tag alone": (lambda mp3, wav: _id3(), 400, "the MP3 is an ID3 tag and nothing else: it holds no audio"),
    "garbage after an ID3 tag": (lambda mp3, wav: _id3(b"garbage " * 500), 400, "holds no MPEG audio frame after its ID3 tag"),
    "cut in its first frame": (lambda mp3, wav: _id3(mp3[:100]), 400, "cut short in its first frame"),
    "an ID3 tag longer than the body": (lambda mp3, wav: _id3(mp3, size=1 << 20), 400, "its ID3 tag says it is 1048586 bytes"),
    "cut short": (lambda mp3, wav: mp3[: len(mp3) // 2], 400, "the MP3 is cut short: it ends at"),
    "junk in its middle": (lambda mp3, wav: mp3[: len(mp3) // 2] + b"junk" * 2000 + mp3[len(mp3) // 2 :], 400,
                           "the MP3 is corrupt: junk at byte"),
    "FLAC after an ID3 tag": (lambda mp3, wav: _id3(_flac(wav)), 415, "an ID3 tag followed by FLAC audio, not MP3"),
}


@pytest.mark.parametrize("case", list(BAD_MP3))
def test_an_mp3_that_is_not_whole_is_refused_saying_why(server, utterances_mp3: Path, speech_wav: Path, good_second: GoodRequest,
                                                        case: str) -> None:
    """Corrupt and cut MP3s, and what libsndfile would read after an ID3 tag besides MP3: refused with the reason
    (libsndfile's own words for most were "File does not exist or is not a regular file (possibly a pipe?)"; an MP3
    cut short decoded to what was left, without an error), never a 500; the server serves on. They had all been 415,
    or 400 "not WAV, Ogg or FLAC audio"."""
    make, status, says = BAD_MP3[case]
    r = post(server, make(utterances_mp3.read_bytes(), speech_wav), "audio/mpeg")
    assert r.status_code == status, r.text
    assert says in r.json()["error"]["message"], r.text
    assert_still_serves(server, good_second)


def test_audio_over_the_limit(server, audio_dir: Path, good_second: GoodRequest) -> None:
    long = np.zeros(16000 * 61, dtype="<i2")
    buf = io.BytesIO()
    soundfile.write(buf, long, 16000, format="WAV", subtype="PCM_16")
    r = post(server, buf.getvalue())
    assert r.status_code == 413
    assert "60 s" in r.json()["error"]["message"]
    huge = b"RIFF" + b"\0" * (60 * 48000 * 8 + 10_000)
    r = post(server, huge)
    assert r.status_code == 413
    assert_still_serves(server, good_second)


@pytest.mark.parametrize(
    ("query", "message"),
    [("language=xx-YY", "no model for language"), ("language=not a locale!", "not a locale"), ("format=fancy&language=ko-KR", "format"), ("profanity=some&language=ko-KR", "profanity")],
)
def test_bad_query(server, speech_wav: Path, good_second: GoodRequest, query: str, message: str) -> None:
    r = post(server, speech_wav.read_bytes(), query=query)
    assert r.status_code == 400
    assert message in r.json()["error"]["message"]
    assert_still_serves(server, good_second)


def test_language_defaults_to_the_only_locale(server, speech_wav: Path, good_text: str) -> None:
    r = post(server, speech_wav.read_bytes(), query="")
    assert r.status_code == 200 and r.json()["DisplayText"] == good_text


def test_language_matches_case_and_language_only(server, speech_wav: Path, good_text: str) -> None:
    for lang in ("ko-kr", "ko"):
        r = post(server, speech_wav.read_bytes(), query=f"language={lang}")
        assert r.status_code == 200 and r.json()["DisplayText"] == good_text


def test_key_missing_wrong_and_right(keyed_server, speech_wav: Path) -> None:
    wav = speech_wav.read_bytes()
    missing = post(keyed_server, wav)
    assert missing.status_code == 403 and "missing key" in missing.json()["error"]["message"]
    wrong = post(keyed_server, wav, **{"Ocp-Apim-Subscription-Key": "nope"})
    assert wrong.status_code == 401 and "wrong key" in wrong.json()["error"]["message"]
    right = post(keyed_server, wav, **{"Ocp-Apim-Subscription-Key": TEST_KEY})
    assert right.status_code == 200 and right.json()["RecognitionStatus"] == "Success"
    bearer = post(keyed_server, wav, Authorization=f"Bearer {TEST_KEY}")
    assert bearer.status_code == 200


def test_unknown_mode_is_404(server, speech_wav: Path) -> None:
    r = httpx.post(f"{server.http}/speech/recognition/banana/cognitiveservices/v1", content=speech_wav.read_bytes())
    assert r.status_code == 404


def test_stereo_downmix_equals_mono(server, audio_dir: Path, speech_wav: Path, good_text: str) -> None:
    pcm, rate, _ = read_wav(speech_wav)
    mono = np.frombuffer(pcm, dtype="<i2")
    stereo = np.stack([mono, mono], axis=1)
    buf = io.BytesIO()
    soundfile.write(buf, stereo, rate, format="WAV", subtype="PCM_16")
    r = post(server, buf.getvalue())
    assert r.json()["DisplayText"] == good_text


def test_word_timestamps_1_over_rest_and_the_sdk_route(server, speech_wav: Path) -> None:
    """wordLevelTimestamps=1 (a boolean as Azure spells it) gives words on both routes; "maybe" is a 400."""
    import asyncio
    import uuid

    from websockets.asyncio.client import connect

    from harness.usp import client_audio_frame, client_text_frame
    from speech_recognizer.usp.frames import parse_text


    path = "/speech/recognition/conversation/cognitiveservices/v1?language=ko-KR&format=detailed&wordLevelTimestamps=1"
    rest = httpx.post(server.http + path, content=speech_wav.read_bytes(), headers={"Content-Type": "audio/wav"}, timeout=60).json()
    assert rest["NBest"][0]["Words"], rest
    bad = httpx.post(server.http + path.replace("=1", "=maybe"), content=speech_wav.read_bytes(), timeout=60)
    assert bad.status_code == 400 and "wordLevelTimestamps" in bad.json()["error"]["message"]

    async def sdk_route() -> dict:
        pcm, _, _ = read_wav(speech_wav)
        async with connect(server.ws + path) as ws:
            rid = uuid.uuid4().hex
            await ws.send(client_text_frame("speech.context", rid, {"phraseDetection": {"language": "ko-KR"}}))
            for i in range(0, len(pcm), 3200):
                await ws.send(client_audio_frame(rid, pcm[i : i + 3200]))
            await ws.send(client_audio_frame(rid, b""))
            while (msg := parse_text(await ws.recv())).path != "speech.phrase":
                pass
            return msg.json()

    assert asyncio.run(sdk_route())["NBest"][0]["Words"]


def test_an_mp3_no_header_counts_or_two_put_one_after_another_decode_to_their_end(server, streamed_mp3: StreamedMp3,
                                                                                  streamed_mp3_refs: dict[str, Reference]) -> None:
    """MP3s whose decoder's length is not theirs (:func:`~tests.conftest.streamed_mp3`): a variable bit rate that no
    Xing/Info header counts, and two MP3s one after the other (the first's header counts its own frames). Decoded
    in-process, each holds the utterances' PCM exactly as soundfile decodes their MP3 alone, and ends where its
    frames do; through REST the words of all three utterances. libsndfile alone had decoded the first to its guess
    from the size and first frame (2.8 s of 13.1) and the second to the silence (0.5 s), without an error."""
    utterances = np.frombuffer(streamed_mp3.utterances, "<i2")
    joined = np.frombuffer(audio.decode(streamed_mp3.joined.read_bytes(), max_seconds=60).pcm, "<i2")
    headerless = np.frombuffer(audio.decode(streamed_mp3.headerless.read_bytes(), max_seconds=60).pcm, "<i2")
    assert len(headerless) == streamed_mp3.headerless_samples, (len(headerless), streamed_mp3.headerless_samples)
    for pcm, at in ((joined, streamed_mp3.joined_at), (headerless, streamed_mp3.headerless_at)):
        assert np.array_equal(pcm[at : at + len(utterances)], utterances), (len(pcm), at, len(utterances))
        assert len(pcm) - (at + len(utterances)) < 1152, "no more than the last frame's padding after them"
    for mp3 in (streamed_mp3.headerless, streamed_mp3.joined):
        r = post(server, mp3.read_bytes(), "audio/mpeg", query="language=ko-KR&format=detailed&wordLevelTimestamps=true")
        assert r.status_code == 200, r.text
        best = r.json()["NBest"][0]
        assert len(streamed_mp3_refs[mp3.name].phrases) == 3, streamed_mp3_refs[mp3.name].texts
        assert best["Lexical"] == " ".join(streamed_mp3_refs[mp3.name].texts), mp3.name
        streamed_mp3_refs[mp3.name].assert_words_match([(w["Word"], w["Offset"] * 1e-7, (w["Offset"] + w["Duration"]) * 1e-7)
                                                        for w in best["Words"]])
