"""vosk-server WebSocket protocol details: config, eof, keys, bad input; the server serves on."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from speech_recognizer.results import display, written

from ..conftest import TEST_KEY
from ..support import NARROWBAND_SENTENCE, read_wav, speak

REST = "/speech/recognition/conversation/cognitiveservices/v1"


def stream(url: str, pcm: bytes, chunk: int, config: dict | None = None, **headers: str) -> list[dict]:
    """Every final result (``text`` or ``alternatives``) of ``pcm`` sent in ``chunk`` bytes, then eof."""
    finals = []
    with connect(url, additional_headers=headers or None) as ws:
        if config is not None:
            ws.send(json.dumps({"config": config}))
        for i in range(0, len(pcm), chunk):
            ws.send(pcm[i : i + chunk])
            reply = json.loads(ws.recv())
            if "partial" not in reply:
                finals.append(reply)
        ws.send('{"eof" : 1}')
        finals.append(json.loads(ws.recv()))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000, "eof closes normally"
    return finals


def closed_with(url: str, send: list[str | bytes] = (), **headers: str) -> tuple[int, str]:
    """The close code and reason the server answers with (after sending ``send``)."""
    with connect(url, additional_headers=headers or None) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            for message in send:
                ws.send(message)
            while True:
                ws.recv(timeout=30)
    frame = closed.value.rcvd
    assert frame is not None, "the server closed without a close frame"
    assert len(frame.reason.encode()) <= 123
    return frame.code, frame.reason


def texts(finals: list[dict]) -> list[str]:
    return [f["text"] for f in finals if f.get("text")]


def test_8khz_audio_via_config(server, audio_dir: Path) -> None:
    wav = speak(NARROWBAND_SENTENCE, audio_dir / "ws8k.wav", rate=8000)
    pcm, rate, _ = read_wav(wav)
    assert rate == 8000
    got = texts(stream(f"{server.ws}/vosk?language=ko-KR", pcm, 1600, {"sample_rate": 8000}))
    assert got, "8 kHz speech gives words"
    rest = httpx.post(f"{server.http}{REST}?language=ko-KR", content=wav.read_bytes(), headers={"Content-Type": "audio/wav"}, timeout=60)
    assert rest.json()["DisplayText"] == display(written(" ".join(got))), "same words as REST at 8 kHz"


def test_phrase_list_restricts_the_output(server, utterances_wav: Path, audio_dir: Path) -> None:
    pcm, rate, _ = read_wav(audio_dir / "u1.wav")  # "서울 부산 대구", made by utterances_wav
    allowed = ["서울", "부산", "반갑습니다"]
    finals = stream(f"{server.ws}/vosk?language=ko-KR", pcm, 3200, {"sample_rate": rate, "phrase_list": allowed})
    words = [w for t in texts(finals) for w in t.split()]
    assert words, finals
    assert set(words) <= {*allowed, "[unk]"}, words
    assert "서울" in words or "부산" in words
    free = [w for t in texts(stream(f"{server.ws}/vosk?language=ko-KR", pcm, 3200, {"sample_rate": rate})) for w in t.split()]
    assert "대구" in free or set(free) - set(allowed), "without a list the model says more than the list"


def test_max_alternatives(server, speech_wav: Path) -> None:
    pcm, rate, _ = read_wav(speech_wav)
    finals = stream(f"{server.ws}/vosk?language=ko-KR", pcm, 3200, {"sample_rate": rate, "max_alternatives": 3})
    assert all("alternatives" in f and "text" not in f for f in finals), finals
    spoken = [f["alternatives"] for f in finals if f["alternatives"][0]["text"]]
    assert spoken
    for alts in spoken:
        assert 1 <= len(alts) <= 3
        assert all(isinstance(a["confidence"], float) and a["text"] for a in alts)
        assert len({a["text"] for a in alts}) == len(alts), "alternatives differ"
    plain = texts(stream(f"{server.ws}/vosk?language=ko-KR", pcm, 3200, {"sample_rate": rate}))
    assert [alts[0]["text"] for alts in spoken] == plain, "the best alternative is the plain result"


def test_eof_without_audio(server) -> None:
    with connect(f"{server.ws}/vosk") as ws:
        ws.send('{"eof" : 1}')
        assert json.loads(ws.recv()) == {"text": ""}
        with pytest.raises(ConnectionClosed):
            ws.recv()


def test_key_is_enforced_with_a_reason(keyed_server, speech_wav: Path) -> None:
    url = f"{keyed_server.ws}/vosk?language=ko-KR"
    code, reason = closed_with(url)
    assert code == 1008 and "missing key" in reason
    code, reason = closed_with(url, **{"Ocp-Apim-Subscription-Key": "wrong"})
    assert code == 1008 and "wrong key" in reason
    pcm, rate, _ = read_wav(speech_wav)
    assert texts(stream(url, pcm, 16000, {"sample_rate": rate}, **{"Ocp-Apim-Subscription-Key": TEST_KEY}))
    assert texts(stream(url, pcm, 16000, {"sample_rate": rate}, Authorization=f"Bearer {TEST_KEY}"))


def test_unknown_language_closes_with_a_reason(server) -> None:
    code, reason = closed_with(f"{server.ws}/vosk?language=xx-YY")
    assert code == 1007 and "no model for language" in reason and "ko-KR" in reason


def test_long_korean_reason_fits_a_close_frame(server) -> None:
    code, reason = closed_with(f"{server.ws}/vosk?language={'한국어' * 40}")
    assert code == 1007 and reason.startswith("'한국어") and "..." in reason


@pytest.mark.parametrize(
    ("message", "code", "words"),
    [
        ("hello, not json", 1007, "must be JSON"),
        ('{"hello": 1}', 1007, "unknown text message"),
        ('{"config": {"sample_rate": "fast"}}', 1007, "bad config"),
        ('{"config": {"sample_rate": 1000}}', 1007, "sample rate"),
    ],
)
def test_bad_text_messages_close_with_a_reason(server, speech_wav: Path, message: str, code: int, words: str) -> None:
    pcm, _, _ = read_wav(speech_wav)
    got_code, reason = closed_with(f"{server.ws}/vosk?language=ko-KR", [message, pcm[:3200]])
    assert (got_code, words in reason) == (code, True), reason


def test_config_after_audio_is_refused(server, speech_wav: Path) -> None:
    pcm, _, _ = read_wav(speech_wav)
    code, reason = closed_with(f"{server.ws}/vosk", [pcm[:3200], json.dumps({"config": {"sample_rate": 16000}})])
    assert code == 1002 and "before the audio" in reason


def test_server_keeps_serving(server, speech_wav: Path) -> None:
    pcm, rate, _ = read_wav(speech_wav)
    for _ in range(2):
        closed_with(f"{server.ws}/vosk", ["not json"])
    assert texts(stream(f"{server.ws}/vosk?language=ko-KR", pcm, 8000, {"sample_rate": rate}))
    assert httpx.get(f"{server.http}/ready").status_code == 200


def test_reset_answers_the_final_result_and_the_stream_goes_on(server, model, utterances_wav: Path) -> None:
    """vosk-server's ``{"reset" : 1}`` (issue 16, item 12; it was refused with 1007): the final result of the
    audio so far, then the stream goes on; the same words, times and confidences as in-process Vosk doing the same."""
    import vosk

    from speech_recognizer.audio import dither_zeros

    from ..support import CLOCK_TOLERANCE, near_confidence

    pcm, rate, _ = read_wav(utterances_wav)
    cut = (len(pcm) // 2) // 3200 * 3200  # within the second utterance
    rec = vosk.KaldiRecognizer(model.model, float(rate))
    rec.SetWords(True)
    rec.SetPartialWords(True)
    want = []
    for part, at in ((pcm[:cut], 0), (pcm[cut:], cut)):
        for i in range(0, len(part), 3200):
            if rec.AcceptWaveform(dither_zeros(part[i : i + 3200], (at + i) // 2)):
                want.append(json.loads(rec.Result()))
            else:
                rec.PartialResult()
        want.append(json.loads(rec.FinalResult()))
    want = [w for w in want if w.get("text")]

    got = []
    with connect(f"{server.ws}/vosk?language=ko-KR") as ws:
        ws.send('{"reset" : 1}')
        assert json.loads(ws.recv()) == {"text": ""}, "a reset before any audio: nothing said yet"
        for part, last in ((pcm[:cut], '{"reset" : 1}'), (pcm[cut:], '{"eof" : 1}')):
            for i in range(0, len(part), 3200):
                ws.send(part[i : i + 3200])
                reply = json.loads(ws.recv())
                if reply.get("text"):
                    got.append(reply)
            ws.send(last)
            reply = json.loads(ws.recv())
            assert "partial" not in reply, "a reset and eof answer a final result"
            if reply.get("text"):
                got.append(reply)
    assert [g["text"] for g in got] == [w["text"] for w in want] and len(want) >= 3
    for g, w in zip(got, want, strict=True):
        for gw, ww in zip(g["result"], w["result"], strict=True):
            assert abs(gw["start"] - ww["start"]) <= CLOCK_TOLERANCE and abs(gw["end"] - ww["end"]) <= CLOCK_TOLERANCE, (gw, ww)
            assert near_confidence(gw["conf"], ww["conf"]), (gw, ww)  # Vosk's own number; the server's recognizer may be a pooled one


def test_a_conversation_the_client_left_is_freed_at_once(server) -> None:
    """A client that closes without eof: its conversation (and its session, recognition and inbox) is freed when
    it ends, not kept in a reference cycle until Python's collector runs (the reply task cancelled at the end held
    its CancelledError, whose traceback held the task's frame, which held the conversation)."""
    import gc
    import time

    from speech_recognizer.session import Session
    from speech_recognizer.vosk_ws import Conversation

    def alive() -> set[int]:
        return {id(o) for o in gc.get_objects() if isinstance(o, (Conversation, Session))}

    gc.collect()
    gc.disable()  # in the whole process, the server's thread too: only reference counting frees anything
    try:
        # Another test's conversation may still be ending on the shared server, and be freed meanwhile: this one's
        # objects are those alive now that were not before (ids, not counts; no reference kept).
        before = alive()
        with connect(f"{server.ws}/vosk?language=ko-KR") as ws:
            ws.send(json.dumps({"config": {"sample_rate": 16000}}))
            ws.send(bytes(3200))
            assert "partial" in json.loads(ws.recv())
            ours = alive() - before
            assert len(ours) >= 2, ours  # its Conversation and its Session
        deadline = time.monotonic() + 10
        while alive() & ours and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive() & ours, "the conversation of a client that left waits for the cycle collector"
    finally:
        gc.enable()
