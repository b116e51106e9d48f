"""The USP wire protocol with a raw WebSocket client: message order, headers, protocol errors."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.sync.client import connect as sync_connect

from harness.usp import binary_frame, client_audio_frame, client_text_frame
from speech_recognizer.app import create_app
from speech_recognizer.errors import FAILURE_HEADER, TOO_MANY_REQUESTS_CLOSE
from speech_recognizer.models import LoadedModel, ModelRegistry
from speech_recognizer.results import ticks
from speech_recognizer.usp.frames import READING_END_PATH, Message, parse_text

from ..conftest import make_settings
from ..support import Reference, ServerThread, read_wav, require_tool, vosk_reference
from .held import CONVERSATION, assert_held_phrase_first, first_sentence_held, until_close
from .sdk import assert_confidences, assert_same, expected, spans

INTERACTIVE = "/speech/recognition/interactive/cognitiveservices/v1?language=ko-KR"


def speech_config(rate: int = 16000, channels: int = 1) -> str:
    source = {"type": "Stream", "samplerate": str(rate), "bitspersample": "16", "channelcount": str(channels)}
    return client_text_frame("speech.config", None, {"context": {"audio": {"source": source}}})


async def open_turn(ws: ClientConnection, request_id: str, rate: int = 16000, channels: int = 1, language: str = "ko-KR") -> None:
    await ws.send(speech_config(rate, channels))
    await ws.send(client_text_frame("speech.context", request_id, {"phraseDetection": {"language": language}}))


async def send_pcm(ws: ClientConnection, request_id: str, pcm: bytes, chunk: int = 3200) -> None:
    for i in range(0, len(pcm), chunk):
        await ws.send(client_audio_frame(request_id, pcm[i : i + chunk]))
    await ws.send(client_audio_frame(request_id, b""))


async def until_turn_end(ws: ClientConnection) -> list[Message]:
    messages = []
    while True:
        msg = parse_text(await ws.recv())
        messages.append(msg)
        if msg.path == "turn.end":
            return messages


async def close_frame(ws: ClientConnection) -> tuple[int, str]:
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:
            await ws.recv()
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


async def closed_with(ws: ClientConnection) -> int:
    return (await close_frame(ws))[0]


async def test_interactive_turn_without_riff_header(server: ServerThread, speech_wav: Path, speech_ref: Reference) -> None:
    pcm, _, _ = read_wav(speech_wav)
    rid = uuid.uuid4().hex
    async with connect(server.ws + INTERACTIVE, subprotocols=["USP"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "USP"
        await open_turn(ws, rid)
        await send_pcm(ws, rid, pcm)
        messages = await until_turn_end(ws)
    paths = [m.path for m in messages]
    assert paths[:2] == ["turn.start", "speech.startDetected"]
    assert paths[-3:] == ["speech.endDetected", "speech.phrase", "turn.end"]
    assert set(paths[2:-3]) == {"speech.hypothesis"}
    for m in messages:
        assert m.request_id == rid and m.headers["content-type"] == "application/json; charset=utf-8"
        assert m.headers["x-timestamp"]
    assert "serviceTag" in messages[0].json()["context"]
    phrase = messages[-2].json()
    assert set(phrase) == {"RecognitionStatus", "Offset", "Duration", "DisplayText", "Channel"}
    assert (phrase["RecognitionStatus"], phrase["Channel"]) == ("Success", 0)
    assert_same(spans([phrase]), [expected(speech_ref.phrases[0])])
    assert messages[-3].json() == {"Offset": phrase["Offset"] + phrase["Duration"]}
    assert messages[1].json() == {"Offset": phrase["Offset"]}
    hyp = messages[2].json()
    assert set(hyp) == {"Text", "Offset", "Duration"} and hyp["Offset"] == phrase["Offset"]
    assert hyp["Text"] and not hyp["Text"].endswith(".")  # hypotheses are lexical, not Display


async def test_riff_header_sample_rate_and_channels_are_honoured(
    server: ServerThread, model: LoadedModel, speech_wav: Path, tmp_path: Path
) -> None:
    """22.05 kHz stereo (2.76x the byte rate speech.config announces) decodes as in-process Vosk
    decodes its one channel, resampled to the model's rate as the server does: same words, same times,
    same confidences (a detailed turn, with each word's)."""
    wav = tmp_path / "stereo22k.wav"
    # -D: no dither, so both channels carry the same samples and the down-mix is the channel itself.
    subprocess.run([require_tool("sox"), "-D", str(speech_wav), "-r", "22050", "-c", "2", "-b", "16", str(wav)], check=True)
    pcm, rate, channels = read_wav(wav)
    header = wav.read_bytes()[:44]
    assert (rate, channels) == (22050, 2) and header.startswith(b"RIFF")
    samples = memoryview(pcm).cast("h")
    assert samples[0::2] == samples[1::2]
    chunk = 8000  # bytes of stereo: 4,000 bytes of the channel
    mono = samples[0::2].tobytes()
    in_process = asyncio.create_task(asyncio.to_thread(vosk_reference, model.model, mono, rate, chunk // 2, runs=1,
                                                       model_rate=model.sample_rate))
    rid = uuid.uuid4().hex
    async with connect(server.ws + CONVERSATION + "&format=detailed&wordLevelConfidence=true") as ws:
        await open_turn(ws, rid)  # speech.config says 16 kHz mono; the RIFF header wins
        await ws.send(client_audio_frame(rid, header))
        await send_pcm(ws, rid, pcm, chunk=chunk)
        messages = await until_turn_end(ws)
    phrases = [m.json() for m in messages if m.path == "speech.phrase"]
    assert len(phrases) == 2
    reference = await in_process
    assert len(reference.phrases) == 1, reference.texts
    assert_same(spans(phrases[:1]), [expected(reference.phrases[0])])
    assert "Confidence" in phrases[0]["NBest"][0]["Words"][0]
    assert_confidences(phrases[0], reference.phrases[0])
    assert phrases[1]["RecognitionStatus"] == "EndOfDictation"
    assert phrases[1]["Offset"] == ticks(len(pcm) / (rate * channels * 2))


async def test_continuous_turn_ends_with_end_of_dictation(server: ServerThread, silence_wav: Path) -> None:
    pcm, _, _ = read_wav(silence_wav)
    rid = uuid.uuid4().hex
    async with connect(server.ws + CONVERSATION) as ws:
        await open_turn(ws, rid)
        await send_pcm(ws, rid, pcm)
        messages = await until_turn_end(ws)
    assert [m.path for m in messages] == ["turn.start", "speech.endDetected", "speech.phrase", "turn.end"]
    end = ticks(len(pcm) / 32000)
    assert messages[2].json() == {"RecognitionStatus": "EndOfDictation", "Offset": end, "Duration": 0, "Channel": 0}


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        ([b"\x00\x40Path:audio\r\n"], 1007),  # header length beyond the frame
        (["Path:speech.context\r\nX-RequestId:r1"], 1007),  # no blank line
        (["X-RequestId:r1\r\n\r\n{}"], 1002),  # no Path
        ([client_text_frame("speech.context", None, {})], 1002),  # no X-RequestId
        ([binary_frame({"Path": "audio"}, b"")], 1002),
        ([client_text_frame("speech.context", "r1", {}), client_text_frame("speech.context", "r1", {})], 1002),  # reused request id
        ([client_text_frame("speech.context", "r1", [1, 2])], 1007),  # body not a JSON object
    ],
)
async def test_protocol_errors_close_the_connection(server: ServerThread, frames: list[str | bytes], code: int) -> None:
    async with connect(server.ws + CONVERSATION) as ws:
        for frame in frames:
            await ws.send(frame)
        assert await closed_with(ws) == code


async def test_server_still_serves_after_a_protocol_error(server: ServerThread, silence_wav: Path) -> None:
    async with connect(server.ws + CONVERSATION) as ws:
        await ws.send(b"\xff")
        assert await closed_with(ws) == 1007
    await test_continuous_turn_ends_with_end_of_dictation(server, silence_wav)


async def test_unknown_language_fails_at_the_turns_context(server: ServerThread) -> None:
    """The language is checked when speech.context names it, before any audio."""
    async with connect(server.ws + CONVERSATION) as ws:
        await open_turn(ws, uuid.uuid4().hex, language="xx-XX")
        code, reason = await close_frame(ws)
    assert code == 1007
    assert "xx-XX" in reason and "ko-KR" in reason


async def test_decoder_cap_gives_too_many_requests(registry: ModelRegistry, tmp_path: Path, speech_wav: Path) -> None:
    """With every decoder busy, a new turn is refused at once with a close the SDK reports as ``TooManyRequests`` with
    the reason (4429 alone, after a message that names the kind: errors.CORE_CLOSES; tests/jssdk/test_asked_once.py)."""
    import azure.cognitiveservices.speech as speechsdk

    from .sdk import config, once

    app = create_app(make_settings(tmp_path, "DecoderMaxCount=1"), registry)
    with ServerThread(app) as srv:
        async with connect(srv.ws + CONVERSATION) as holder:
            rid = uuid.uuid4().hex
            await open_turn(holder, rid)
            await holder.send(client_audio_frame(rid, b"\0" * 3200))
            assert parse_text(await holder.recv()).path == "turn.start"
            async with connect(srv.ws + CONVERSATION) as ws:
                other = uuid.uuid4().hex
                await open_turn(ws, other)
                await ws.send(client_audio_frame(other, b"\0" * 3200))
                told = parse_text(await ws.recv())
                assert (told.path, told.headers.get(FAILURE_HEADER.lower())) == (READING_END_PATH, "busy"), told
                code, reason = await close_frame(ws)
                assert code == TOO_MANY_REQUESTS_CLOSE and "decoders are busy" in reason, (code, reason)
            result = await asyncio.to_thread(once, config(srv.ws), speech_wav)
            assert result.reason == speechsdk.ResultReason.Canceled
            details = result.cancellation_details
            assert details.code == speechsdk.CancellationErrorCode.TooManyRequests
            assert "decoders are busy" in details.error_details


async def test_audio_sent_ahead_gets_the_results_paced_audio_gets(server: ServerThread, utterances_wav: Path) -> None:
    """The server decodes up to READ_AHEAD chunks ahead of the results it sends: a client that sends all
    its audio at once gets the very hypotheses, phrases and offsets a client pausing after each chunk gets."""
    pcm, _, _ = read_wav(utterances_wav)
    pcm = pcm[: 60 * 3200]

    async def turn(pause: float) -> list[tuple[str, object]]:
        rid = uuid.uuid4().hex
        async with connect(server.ws + CONVERSATION) as ws:
            await open_turn(ws, rid)
            for i in range(0, len(pcm), 3200):
                await ws.send(client_audio_frame(rid, pcm[i : i + 3200]))
                if pause:
                    await asyncio.sleep(pause)
            await ws.send(client_audio_frame(rid, b""))
            messages = await until_turn_end(ws)
        return [(m.path, m.json()) for m in messages if m.path != "turn.start"]

    paced, ahead = await turn(0.03), await turn(0.0)
    assert any(path == "speech.hypothesis" for path, _ in ahead)
    assert any(path == "speech.phrase" and body.get("DisplayText") for path, body in ahead)  # type: ignore[union-attr]
    assert ahead == paced


async def test_a_client_leaving_mid_turn_is_a_departure_not_a_failure(
    registry: ModelRegistry, tmp_path: Path, utterances_wav: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that drops its connection while results of the audio it sent ahead are still on their way is
    logged as gone (debug), not as a failed turn (warning), and its decoder is given back."""
    pcm, _, _ = read_wav(utterances_wav)
    pcm = pcm[: 60 * 3200]
    app = create_app(make_settings(tmp_path), registry)
    engine = app.state.engine
    with caplog.at_level(logging.DEBUG, logger="speech_recognizer"), ServerThread(app) as srv:
        ws = await connect(srv.ws + CONVERSATION)
        rid = uuid.uuid4().hex
        await open_turn(ws, rid)
        for i in range(0, len(pcm), 3200):  # ahead of the decoding; the turn's audio never ends
            await ws.send(client_audio_frame(rid, pcm[i : i + 3200]))
        assert parse_text(await ws.recv()).path == "turn.start"
        ws.transport.abort()  # gone without a close frame, results still to come
        deadline = time.monotonic() + 30
        while engine.active:
            assert time.monotonic() < deadline, "the decoder was not given back"
            await asyncio.sleep(0.05)
    ours = [r for r in caplog.records if r.name.startswith("speech_recognizer")]
    # Gone before its results were sent, or (read ahead) before its audio was decoded: a departure either way.
    assert any("client_gone" in r.getMessage() and "the client left" in r.getMessage() for r in ours)
    assert not [r.getMessage() for r in ours if r.levelno >= logging.WARNING]


async def test_a_connection_that_ended_is_freed_at_once(server: ServerThread) -> None:
    """A connection whose client closed it, after its turn ended or in the middle of it: the connection, its turn
    and the turn's session are freed when it ends, not kept in a reference cycle (the turn holds its connection)
    until Python's collector runs."""
    import gc

    from speech_recognizer.session import Session
    from speech_recognizer.usp.connection import Connection

    def alive() -> set[int]:
        return {id(o) for o in gc.get_objects() if type(o) in (Connection, Session)}

    gc.collect()
    gc.disable()  # in the whole process, the server's thread too: only reference counting frees anything
    try:
        for mode in ("after the turn", "mid-turn"):
            # Another test's connection may still be ending on the shared server, and be freed meanwhile: this
            # connection's objects are those alive now that were not before (ids, not counts; no reference kept).
            before = alive()
            async with connect(server.ws + CONVERSATION) as ws:
                rid = uuid.uuid4().hex
                await open_turn(ws, rid)
                if mode == "after the turn":
                    await send_pcm(ws, rid, bytes(20 * 3200))
                    await until_turn_end(ws)
                else:
                    for _ in range(20):
                        await ws.send(client_audio_frame(rid, bytes(3200)))
                    assert parse_text(await ws.recv()).path == "turn.start"
                ours = alive() - before
                assert len(ours) >= 2, ours  # its Connection and its turn's Session
            deadline = time.monotonic() + 10
            while alive() & ours and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert not alive() & ours, f"a connection closed {mode} waits for the cycle collector"
    finally:
        gc.enable()


@pytest.mark.parametrize("bad", ["no request id", "malformed"])
def test_a_phrase_held_for_the_segmentation_silence_comes_before_a_protocol_error(
        fresh_server: ServerThread, long_pauses_wav: Path, long_pauses_ref: Reference, bad: str) -> None:
    """A turn holds the first sentence's phrase for the segmentation silence (tests/usp/held.py); then the client
    sends a frame the server cannot take (an audio frame without ``X-RequestId``; a text frame without its blank
    line). The turn ends with the failure (``BadRequest`` and close 1002; close 1007), but the phrase the decoder
    finished from the audio before it comes first, in-process Vosk's words and times. Before, it was dropped."""
    with sync_connect(fresh_server.ws + CONVERSATION) as ws:
        first_sentence_held(ws, long_pauses_wav, long_pauses_ref)
        ws.send(binary_frame({"Path": "audio"}, bytes(3200)) if bad == "no request id" else "Path: audio")
        messages, code, reason = until_close(ws)
    if bad == "no request id":
        assert code == 1002 and "X-RequestId" in reason, (code, reason)
        assert_held_phrase_first(messages, long_pauses_ref, ["BadRequest"])
        assert messages[-1].path == "turn.end"
    else:
        assert code == 1007, (code, reason)
        assert_held_phrase_first(messages, long_pauses_ref, [])
