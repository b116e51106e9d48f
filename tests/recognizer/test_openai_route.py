"""``POST /v1/audio/transcriptions`` with the official ``openai`` package (``OpenAI(base_url=…, api_key=…)``),
against a real server on loopback: every response format, and errors as OpenAI's clients raise them."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import soundfile
import srt
import webvtt
from websockets.sync.client import connect

from speech_recognizer.app import create_app
from speech_recognizer.results import written, written_words
from speech_recognizer.transcript import Word

from ..conftest import TEST_KEY, StreamedMp3, make_settings, mp3_pcm
from ..support import Reference, ServerThread, near_confidence

REST = "/speech/recognition/conversation/cognitiveservices/v1"
TICK = 1e-7


def client(server: ServerThread, key: str = TEST_KEY, **options: object) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.http}/v1", api_key=key, timeout=120, **options)


def rest(server: ServerThread, wav: Path, query: str) -> httpx.Response:
    response = httpx.post(f"{server.http}{REST}?language=ko-KR&{query}", content=wav.read_bytes(),
                          headers={"Content-Type": "audio/wav", "Ocp-Apim-Subscription-Key": TEST_KEY}, timeout=120)
    assert response.status_code == 200, response.text
    return response


def test_every_response_format_with_the_openai_client(keyed_fresh_server: ServerThread, utterances_wav: Path,
                                                            utterances_ref: Reference) -> None:
    api = client(keyed_fresh_server)
    text = " ".join(written(t) for t in utterances_ref.texts)

    as_json = api.audio.transcriptions.create(model="whisper-1", file=utterances_wav.open("rb"), language="ko")
    assert as_json.text == text

    as_text = api.audio.transcriptions.create(model="whisper-1", file=utterances_wav.open("rb"), response_format="text")
    assert as_text.strip() == text

    subtitles: dict[str, str] = {}
    for fmt in ("srt", "vtt"):
        subtitles[fmt] = api.audio.transcriptions.create(model="whisper-1", file=utterances_wav.open("rb"), response_format=fmt)
        assert subtitles[fmt] == rest(keyed_fresh_server, utterances_wav, f"format={fmt}").text, "the same cues as the REST route's"
    cues = list(srt.parse(subtitles["srt"]))
    assert [c.content for c in cues] == [written(t) for t in utterances_ref.texts]
    assert [c.text for c in webvtt.from_buffer(io.StringIO(subtitles["vtt"])).captions] == [c.content for c in cues]

    verbose = api.audio.transcriptions.create(model="whisper-1", file=utterances_wav.open("rb"), language="ko-KR",
                                              response_format="verbose_json", timestamp_granularities=["word", "segment"])
    assert verbose.text == text and verbose.language == "ko-KR"
    assert verbose.duration == pytest.approx(utterances_wav.stat().st_size / 32000, abs=0.01)
    # a segment per utterance: in-process Vosk's phrases, spanning their words
    assert [s.text for s in verbose.segments] == [written(p.text) for p in utterances_ref.phrases]
    for segment, phrase in zip(verbose.segments, utterances_ref.phrases, strict=True):
        assert segment.start == pytest.approx(phrase.words[0].start, abs=0.001)
        assert segment.end == pytest.approx(phrase.words[-1].end, abs=0.001)
        assert segment.no_speech_prob == 0
        # the mean log of its words' confidences (Vosk's, none 0 here), at the route's 6 decimals
        assert segment.avg_logprob == round(segment.avg_logprob, 6)
        assert near_confidence(math.exp(segment.avg_logprob), math.exp(sum(math.log(w.confidence) for w in phrase.words) / len(phrase.words)))
    # words: in-process Vosk's, written ([9] as 9, [9] 시 as one word 9시 over both tokens' times: the numbers:
    # tests/recognizer/test_numbers.py), and the REST route's (the model's spelling, a token each) to the tick
    words = [(w.word, w.start, w.end) for w in verbose.words]
    assert [w[0] for w in words] != [w.word for p in utterances_ref.phrases for w in p.words], "written"
    utterances_ref.assert_words_match(words, written=True)
    detailed = rest(keyed_fresh_server, utterances_wav, "format=detailed&wordLevelTimestamps=true").json()["NBest"][0]["Words"]
    assert [(w.text, round(w.start), round(w.end)) for w in written_words(
        [Word(w["Word"], w["Offset"], w["Offset"] + w["Duration"], 1.0) for w in detailed])] == [
        (word, round(start / TICK), round(end / TICK)) for word, start, end in words]

    only_words = api.audio.transcriptions.create(model="whisper-1", file=utterances_wav.open("rb"),
                                                 response_format="verbose_json", timestamp_granularities=["word"])
    assert only_words.segments is None and [w.word for w in only_words.words] == [w[0] for w in words]


def test_an_mp3_is_heard_as_in_process_vosk_hears_the_pcm_it_decodes_to(keyed_fresh_server: ServerThread, utterances_mp3: Path,
                                                                               utterances_mp3_ref: Reference) -> None:
    """An MP3 (what apps written for OpenAI send most), uploaded by the openai package: the words and times of
    in-process Vosk fed the PCM soundfile decodes the same file to, and its length. It was refused: "the body is not
    WAV, Ogg or FLAC audio"."""
    verbose = client(keyed_fresh_server).audio.transcriptions.create(
        model="whisper-1", file=utterances_mp3.open("rb"), language="ko", response_format="verbose_json",
        timestamp_granularities=["word", "segment"])
    assert verbose.text == " ".join(written(t) for t in utterances_mp3_ref.texts)
    assert verbose.duration == round(len(mp3_pcm(utterances_mp3)) / 32000, 6)
    utterances_mp3_ref.assert_words_match([(w.word, w.start, w.end) for w in verbose.words], written=True)
    assert [s.text for s in verbose.segments] == [written(p.text) for p in utterances_mp3_ref.phrases]
    for segment, phrase in zip(verbose.segments, utterances_mp3_ref.phrases, strict=True):
        assert near_confidence(math.exp(segment.avg_logprob), math.exp(sum(math.log(w.confidence) for w in phrase.words) / len(phrase.words)))


def test_an_mp3_no_header_counts_is_heard_to_its_end(keyed_fresh_server: ServerThread, streamed_mp3: StreamedMp3,
                                                          streamed_mp3_refs: dict[str, Reference]) -> None:
    """A variable bit rate MP3 that no Xing/Info header counts (:func:`~tests.conftest.streamed_mp3`, ``headerless``):
    its length every frame's samples (less the decoder's delay), its words all three utterances' as in-process Vosk
    hears them in the PCM it decodes to (tests/recognizer/test_rest_inputs.py checks that PCM against the utterances'
    own). It had been 2.8 s of its 13.1, libsndfile's guess from the size and first frame, without an error."""
    ref = streamed_mp3_refs[streamed_mp3.headerless.name]
    verbose = client(keyed_fresh_server).audio.transcriptions.create(
        model="whisper-1", file=streamed_mp3.headerless.open("rb"), language="ko", response_format="verbose_json",
        timestamp_granularities=["word"])
    assert verbose.duration == round(streamed_mp3.headerless_samples / 16000, 6)
    assert len(ref.phrases) == 3 and verbose.text == " ".join(written(t) for t in ref.texts)
    ref.assert_words_match([(w.word, w.start, w.end) for w in verbose.words], written=True)


def test_pcm_its_content_type_declares_is_never_taken_for_an_mp3(keyed_server: ServerThread, speech_wav: Path) -> None:
    """The same bytes, an MP3 (MPEG-1: its first frame begins 0xFF 0xFB), are 16-bit PCM under a content type that
    declares headerless PCM (two bytes a sample), and an MP3 by their frames under any other (its decoded length).
    Raw PCM can begin like an MPEG frame: its content type, not its bytes, says what it is. Under ``audio/mpeg`` it
    had been a 415, as ``application/octet-stream`` a 400."""
    data, _ = soundfile.read(speech_wav, dtype="int16")
    buf = io.BytesIO()
    soundfile.write(buf, data, 44100, format="MP3")
    body = buf.getvalue()
    assert body[:2] == b"\xff\xfb", body[:4].hex()
    decoded = soundfile.info(io.BytesIO(body)).frames / 44100

    def duration(content_type: str) -> float:
        r = httpx.post(f"{keyed_server.http}/v1/audio/transcriptions", files={"file": ("audio", body, content_type)},
                       data={"response_format": "verbose_json"}, headers={"Authorization": f"Bearer {TEST_KEY}"}, timeout=60)
        assert r.status_code == 200, (content_type, r.text)
        return r.json()["duration"]

    for pcm in ("audio/l16; rate=16000", "audio/wav; codecs=audio/pcm; samplerate=16000"):
        assert duration(pcm) == round(len(body) // 2 / 16000, 6), pcm
    for mp3 in ("audio/mpeg", "application/octet-stream"):
        assert duration(mp3) == pytest.approx(decoded, abs=1e-6), mp3


def test_errors_are_raised_by_the_client_as_openai_says_them(keyed_server: ServerThread, speech_wav: Path, tmp_path: Path) -> None:
    with pytest.raises(openai.AuthenticationError) as wrong:
        client(keyed_server, "not-the-key").audio.transcriptions.create(model="whisper-1", file=speech_wav.open("rb"))
    assert wrong.value.status_code == 401
    assert wrong.value.body["code"] == "auth_wrong" and "wrong key" in wrong.value.body["message"]

    missing = httpx.post(f"{keyed_server.http}/v1/audio/transcriptions", files={"file": speech_wav.read_bytes()}, timeout=60)
    assert missing.status_code == 403
    assert missing.json()["error"]["code"] == "auth_missing" and missing.json()["error"]["type"] == "invalid_request_error"

    api = client(keyed_server)
    with pytest.raises(openai.BadRequestError) as fmt:
        api.audio.transcriptions.create(model="whisper-1", file=speech_wav.open("rb"), response_format="xml")  # type: ignore[arg-type]
    assert "response_format='xml'" in fmt.value.body["message"] and fmt.value.body["code"] == "bad_value"

    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("these are not the sounds you are looking for")
    with pytest.raises(openai.BadRequestError) as bad:
        api.audio.transcriptions.create(model="whisper-1", file=not_audio.open("rb"))
    assert bad.value.body["code"] == "bad_audio"

    with pytest.raises(openai.BadRequestError) as language:
        api.audio.transcriptions.create(model="whisper-1", file=speech_wav.open("rb"), language="xx")
    assert language.value.body["code"] == "unknown_locale" and "ko-KR" in language.value.body["message"]

    plain = httpx.post(f"{keyed_server.http}/v1/audio/transcriptions", content=speech_wav.read_bytes(),
                       headers={"Authorization": f"Bearer {TEST_KEY}", "Content-Type": "audio/wav"}, timeout=60)
    assert plain.status_code == 415 and "multipart/form-data" in plain.json()["error"]["message"]


def test_a_field_sent_as_a_file_is_refused_saying_so(keyed_server: ServerThread, speech_wav: Path) -> None:
    """``curl -F file=@a.wav -F language=@ko.txt``: the field's part has a filename. Starlette's parser (one file at
    most) said "Too many files. Maximum number of files is 1."; the route says which field, and what to do."""
    url, headers = f"{keyed_server.http}/v1/audio/transcriptions", {"Authorization": f"Bearer {TEST_KEY}"}
    for name in ("language", "response_format"):
        files = {"file": ("speech.wav", speech_wav.read_bytes(), "audio/wav"), name: ("value.txt", b"ko-KR", "text/plain")}
        refused = httpx.post(url, files=files, headers=headers, timeout=60)
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["message"] == (
            f"the multipart form cannot be read: the field '{name}' is sent as a file (its part has a filename): "
            "send it as a plain form field; only 'file' is a file"), refused.text
    two = httpx.post(url, files=[("file", ("a.wav", speech_wav.read_bytes(), "audio/wav")),
                                 ("file", ("b.wav", speech_wav.read_bytes(), "audio/wav"))], headers=headers, timeout=60)
    assert two.status_code == 400
    assert two.json()["error"]["message"] == "the multipart form cannot be read: the field 'file' is given twice: send one file"


@pytest.fixture
def one_decoder(registry, tmp_path: Path) -> Iterator[ServerThread]:
    """A server with one decoder and a 4-second audio limit."""
    settings = make_settings(tmp_path, "DecoderMaxCount=1", "MaxAudioSeconds=4")
    with ServerThread(create_app(settings, registry)) as srv:
        yield srv


def test_the_upload_is_bounded_as_the_rest_body_is(one_decoder: ServerThread, speech_wav: Path, utterances_wav: Path) -> None:
    api = client(one_decoder, max_retries=0)
    with pytest.raises(openai.APIStatusError) as long:
        api.audio.transcriptions.create(model="whisper-1", file=utterances_wav.open("rb"))
    assert long.value.status_code == 413 and long.value.body["code"] == "too_large"

    big = one_decoder.http + "/v1/audio/transcriptions"
    huge = httpx.post(big, files={"file": ("big.wav", b"\0" * (5 * 48000 * 2 * 4))}, timeout=60)
    assert huge.status_code == 413, "a body over the limit is refused while it is read"

    with connect(f"{one_decoder.ws}/vosk?language=ko-KR") as held:  # the only decoder is taken by a stream
        held.send(json.dumps({"config": {"sample_rate": 16000}}))
        held.send(b"\0" * 3200)
        held.recv()
        with pytest.raises(openai.InternalServerError) as busy:
            api.audio.transcriptions.create(model="whisper-1", file=speech_wav.open("rb"))
        assert busy.value.status_code == 503 and busy.value.response.headers["Retry-After"] == "1"
        assert busy.value.body["code"] == "busy" and busy.value.body["type"] == "server_error"
        held.send('{"eof" : 1}')
        held.recv()
    done = client(one_decoder).audio.transcriptions.create(model="whisper-1", file=speech_wav.open("rb"))
    assert done.text
