"""Every input rate is resampled to the model's: warm recognizers serve all rates, and the results are
in-process Vosk's on the same resampled audio, on the client's clock."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect as aconnect
from websockets.sync.client import connect

from harness.usp import client_audio_frame, client_text_frame
from speech_recognizer.app import create_app
from speech_recognizer.models import LoadedModel, ModelRegistry
from speech_recognizer.resampling import Resampler, resample
from speech_recognizer.usp.frames import parse_text

from ..conftest import make_settings
from ..support import (
    CLOCK_TOLERANCE,
    NARROWBAND_SENTENCE,
    SENTENCES,
    Reference,
    ServerThread,
    concat,
    near_confidence,
    read_wav,
    require_tool,
    speak,
    vosk_reference,
)
from ..usp.sdk import assert_confidences, assert_same, expected, spans

RATES = (8000, 11025, 22050, 44100, 48000)
REST = "/speech/recognition/conversation/cognitiveservices/v1?language=ko-KR&format=detailed&wordLevelTimestamps=true&wordLevelConfidence=true"
USP = "/speech/recognition/conversation/cognitiveservices/v1?language=ko-KR&format=detailed&wordLevelConfidence=true"
TICK = 1e-7


def pool_counts(base: str) -> dict[str, float]:
    text = httpx.get(f"{base}/metrics").text
    return {f.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if f.name.startswith("speech_recognizer")}


@pytest.fixture(scope="module")
def warm_server(registry: ModelRegistry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """A server whose start-up warm-up left two recognizers in the pool, ready (``/ready`` 200)."""
    settings = make_settings(tmp_path_factory.mktemp("rates"), "Warmup:Count=2", "Warmup:Seconds=1", "DecoderMaxCount=4")
    with ServerThread(create_app(settings, registry)) as srv:
        deadline = time.monotonic() + 120
        while httpx.get(f"{srv.http}/ready").status_code != 200:
            assert time.monotonic() < deadline, "never ready"
            time.sleep(0.1)
        assert pool_counts(srv.http)["speech_recognizers_built"] == 0, "the start-up warm-up builds its own"
        yield srv


#: Utterances of each rate's recording: at 8 kHz one of :data:`NARROWBAND_SENTENCE` (the small model reads
#: 8 kHz espeak-ng speech, nothing above 4 kHz, with low confidence); at the other rates three, with silence
#: between them. Decoding is deterministic at every rate (Kaldi's dither off, the resampler's too: bench/notes.md,
#: "The resampler's dither"), so one in-process run is the reference and every route must give its words, its
#: times (up to clock rounding: support.CLOCK_TOLERANCE) and its confidences (at each route's precision).
UTTERANCES = {8000: 1, 11025: 3, 22050: 3, 44100: 3, 48000: 3}


@pytest.fixture(scope="module")
def at_rate(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """The recordings, sentences 2-4 of tests.support.SENTENCES (at 8 kHz its NARROWBAND_SENTENCE), at each rate (sox, repeatable)."""
    folder = tmp_path_factory.mktemp("rates-audio")
    parts = [speak(text, folder / f"s{i}.wav") for i, text in enumerate(SENTENCES[1:4])]
    narrowband = [speak(NARROWBAND_SENTENCE, folder / "narrowband.wav")]
    out = {}
    for rate in RATES:
        source = concat((narrowband if rate == 8000 else parts)[: UTTERANCES[rate]], folder / f"source{rate}.wav")
        out[rate] = folder / f"utterances{rate}.wav"
        subprocess.run([require_tool("sox"), "-R", str(source), "-r", str(rate), str(out[rate])], check=True)
    return out


def chunk_bytes(rate: int, seconds: float = 0.1) -> int:
    """``seconds`` of mono PCM; 100 ms is what the REST route feeds its decoder at a time, and what the
    /vosk client here sends."""
    return 2 * int(rate * seconds)


@pytest.mark.unit
@pytest.mark.parametrize("rate", RATES)
def test_the_resampler_gives_the_same_samples_every_time_whatever_the_chunking(rate: int) -> None:
    """Two converters at once, one fed 100 ms chunks and one 37 ms chunks, and the whole recording converted in one
    piece: the same samples, to the bit, so a stream's audio is what in-process Vosk gets through the same resampler.

    libsoxr adds TPDF dither to 16-bit output, seeded per converter (the time and its address): when the server
    asked python-soxr for 16-bit samples, every stream at a rate other than the model's carried other noise, and the
    same audio decoded to other confidences, times and words from one stream to the next (bench/notes.md).
    """
    rng = np.random.default_rng(rate)
    t = np.arange(rate) / rate  # 1 s: a chirp and some noise
    signal = 0.3 * np.sin(2 * np.pi * (200 + 1500 * t) * t) + 0.05 * rng.standard_normal(rate)
    pcm = np.clip(np.rint(signal * 32768), -32768, 32767).astype("<i2").tobytes()
    converters = {0.1: Resampler(rate, 16000), 0.037: Resampler(rate, 16000)}

    def streamed(seconds: float) -> bytes:
        convert, step = converters[seconds], chunk_bytes(rate, seconds)
        return b"".join([convert(pcm[i : i + step]) for i in range(0, len(pcm), step)] + [convert(b"", last=True)])

    first = streamed(0.1)
    assert len(first) == 2 * 16000, "1 s at 16 kHz"
    assert first == streamed(0.037) == resample(pcm, rate, 16000)


def usp_chunk_seconds(rate: int) -> float:
    """What the USP client here sends at a time: 100 ms where an audio frame (at most 8 KiB) holds it, else 50 ms."""
    return 0.1 if chunk_bytes(rate) <= 8192 else 0.05


def rest_words(base: str, wav: Path) -> tuple[dict, list[tuple[str, float, float, float]]]:
    r = httpx.post(f"{base}{REST}", content=wav.read_bytes(), headers={"Content-Type": "audio/wav"}, timeout=120)
    assert r.status_code == 200, r.text
    body = r.json()
    words = [(w["Word"], w["Offset"] * TICK, (w["Offset"] + w["Duration"]) * TICK, w["Confidence"]) for w in body["NBest"][0]["Words"]]
    return body, words


def vosk_words(base: str, pcm: bytes, rate: int) -> list[tuple[str, float, float, float]]:
    finals = []
    step = chunk_bytes(rate)
    with connect(f"{base}/vosk?language=ko-KR") as ws:
        ws.send(json.dumps({"config": {"sample_rate": rate, "words": 1}}))
        for i in range(0, len(pcm), step):
            ws.send(pcm[i : i + step])
            reply = json.loads(ws.recv(timeout=60))
            if "text" in reply:
                finals.append(reply)
        ws.send('{"eof" : 1}')
        finals.append(json.loads(ws.recv(timeout=60)))
    return [(w["word"], w["start"], w["end"], w["conf"]) for f in finals for w in f.get("result", [])]


async def usp_phrases(base: str, pcm: bytes, rate: int) -> list[dict]:
    """A Speech SDK conversation turn in raw USP frames, 16-bit mono at ``rate``: its speech.phrase bodies (detailed,
    with each word's confidence)."""
    rid = uuid.uuid4().hex
    source = {"type": "Stream", "samplerate": str(rate), "bitspersample": "16", "channelcount": "1"}
    step = chunk_bytes(rate, usp_chunk_seconds(rate))
    phrases = []
    async with aconnect(base + USP, subprotocols=["USP"]) as ws:  # type: ignore[list-item]
        await ws.send(client_text_frame("speech.config", None, {"context": {"audio": {"source": source}}}))
        await ws.send(client_text_frame("speech.context", rid, {"phraseDetection": {"language": "ko-KR"}}))
        for i in range(0, len(pcm), step):
            await ws.send(client_audio_frame(rid, pcm[i : i + step]))
        await ws.send(client_audio_frame(rid, b""))
        while True:
            msg = parse_text(await ws.recv())
            if msg.path == "speech.phrase":
                phrases.append(msg.json())
            if msg.path == "turn.end":
                return phrases


@pytest.mark.parametrize("rate", RATES)
async def test_every_rate_reuses_warm_recognizers_and_matches_vosk_on_the_resampled_audio(
    warm_server: ServerThread, model: LoadedModel, at_rate: dict[int, Path], rate: int
) -> None:
    """REST, /vosk and USP at ``rate``: no recognizer is built (the start-up warm-up's serve every rate), and
    each route gives in-process Vosk's words, times and confidences on the same audio through the same
    resampler, times on the client's clock (REST Offset/Duration, vosk start/end, USP Offset/Duration)."""
    import asyncio

    wav = at_rate[rate]
    pcm, got_rate, channels = read_wav(wav)
    assert (got_rate, channels) == (rate, 1)
    references = asyncio.gather(*(asyncio.to_thread(vosk_reference, model.model, pcm, rate, chunk_bytes(rate, seconds), runs=1,
                                                    model_rate=model.sample_rate) for seconds in sorted({0.1, usp_chunk_seconds(rate)}, reverse=True)))
    before = pool_counts(warm_server.http)

    body, rest = await asyncio.to_thread(rest_words, warm_server.http, wav)
    vosk = await asyncio.to_thread(vosk_words, warm_server.ws, pcm, rate)
    usp = await usp_phrases(warm_server.ws, pcm, rate)

    after = pool_counts(warm_server.http)
    assert after["speech_recognizers_built"] == 0, f"a recognizer was built for {rate} Hz"
    assert after["speech_recognizers_reused"] == before["speech_recognizers_reused"] + 3

    got: list[Reference] = await references
    reference, usp_reference = got[0], got[-1]  # 100 ms chunks; the USP client's (the same below 44.1 kHz)
    assert len(reference.phrases) == len(usp_reference.phrases) == UTTERANCES[rate], (reference.texts, usp_reference.texts)
    words = [w for p in reference.phrases for w in p.words]
    assert any(w.confidence < 1 for w in words), f"every word at confidence 1: no confidence compared here {reference.texts}"
    reference.assert_words_match(rest, places=6)
    assert near_confidence(body["NBest"][0]["Confidence"], sum(w.confidence for w in words) / len(words))
    assert body["Offset"] * TICK == pytest.approx(reference.phrases[0].words[0].start, abs=CLOCK_TOLERANCE)
    assert (body["Offset"] + body["Duration"]) * TICK == pytest.approx(reference.phrases[-1].words[-1].end, abs=CLOCK_TOLERANCE)
    reference.assert_words_match(vosk)
    spoken = [p for p in usp if p["RecognitionStatus"] == "Success"]
    assert_same(spans(spoken), [expected(p) for p in usp_reference.phrases])
    for phrase, want in zip(spoken, usp_reference.phrases, strict=True):
        assert "Confidence" in phrase["NBest"][0]["Words"][0]
        assert_confidences(phrase, want)
    end = [p for p in usp if p["RecognitionStatus"] == "EndOfDictation"]
    assert len(end) == 1 and end[0]["Offset"] * TICK == pytest.approx(len(pcm) / 2 / rate, abs=1e-6), "the end on the client's clock"
