"""Every way a session ends, on every route that holds one: its objects are freed at once, not by the cycle collector.

A finished session's objects left in a reference cycle wait for Python's cycle collector (minutes apart on a
busy server) and, until ea67416, kept the recognizer they had given back to the pool (100+ MiB each) alive
with them. With the collector off in the whole process (the server's thread too), only reference counting
frees anything: after each ending below no Session, Recognition, Conversation (/vosk), Connection or Turn
(Speech SDK) of it is left, and every Vosk recognizer is in the pool or freed. (A pooled recognizer held by a
Recognition kept alive, ea67416's case, is tests/recognizer/test_engine.py's: here no Recognition may stay.)
The in-process transcriber (transcriber.py) is not here: it builds its own registry, which would load the model again.
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import nullcontext
from pathlib import Path

import httpx
import pytest
import vosk
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from harness.usp import client_audio_frame
from speech_recognizer.recognition import Recognition
from speech_recognizer.session import Session
from speech_recognizer.usp.connection import Connection, Turn
from speech_recognizer.usp.frames import parse_text
from speech_recognizer.vosk_ws import Conversation

from ..support import ServerThread, read_wav
from ..usp.test_protocol import CONVERSATION, open_turn, send_pcm, until_turn_end
from .test_decoder_failures import POISON, decoder_fails

REST = "/speech/recognition/conversation/cognitiveservices/v1?language=ko-KR"
KINDS = (Session, Recognition, Conversation, Connection, Turn)


def census(server: ServerThread) -> dict[str, int]:
    """How many objects of each kind are alive, and how many Vosk recognizers are outside the server's pool."""
    found = dict.fromkeys([k.__name__ for k in KINDS] + ["recognizers outside the pool"], 0)
    recognizers = 0
    for o in gc.get_objects():
        if type(o) in KINDS:
            found[type(o).__name__] += 1
        elif type(o) is vosk.KaldiRecognizer:
            recognizers += 1
    found["recognizers outside the pool"] = recognizers - len(server.server.config.app.state.engine.pool)
    return found


async def raw_post(server: ServerThread, head: str, body: bytes, *, wait_for_answer: bool) -> bytes:
    """Send ``head`` and ``body`` on a socket of its own; the answer's first line, or b"" when the client leaves first."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(head.encode() + body)
        await writer.drain()
        return await asyncio.wait_for(reader.readline(), 30) if wait_for_answer else b""
    finally:
        writer.close()


def rest_head(length: int) -> str:
    return (f"POST {REST} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: audio/wav\r\n"
            f"Content-Length: {length}\r\n\r\n")


async def rest_recognized(server: ServerThread, wav: bytes) -> None:
    async with httpx.AsyncClient(base_url=server.http, timeout=60) as client:
        answer = await client.post(REST, content=wav, headers={"Content-Type": "audio/wav"})
    assert answer.status_code == 200, answer.text


async def rest_subtitles(server: ServerThread, wav: bytes) -> None:
    async with httpx.AsyncClient(base_url=server.http, timeout=60) as client:
        answer = await client.post(REST + "&format=srt", content=wav, headers={"Content-Type": "audio/wav"})
    assert answer.status_code == 200 and "-->" in answer.text, answer.text


async def rest_refused_mid_upload(server: ServerThread, wav: bytes) -> None:
    async def body():  # chunked, past MaxAudioSeconds (60 s): refused while it arrives
        yield wav
        for _ in range(40):
            yield bytes(64000)

    async with httpx.AsyncClient(base_url=server.http, timeout=60) as client:
        answer = await client.post(REST, content=body(), headers={"Content-Type": "audio/wav"})
    assert answer.status_code == 413, answer.text


async def rest_client_gone_mid_upload(server: ServerThread, wav: bytes) -> None:
    await raw_post(server, rest_head(len(wav)), wav[: len(wav) // 2], wait_for_answer=False)


async def rest_client_gone_while_decoding(server: ServerThread, wav: bytes) -> None:
    await raw_post(server, rest_head(len(wav)), wav, wait_for_answer=False)


async def openai_transcription(server: ServerThread, wav: bytes, fmt: str = "json") -> None:
    async with httpx.AsyncClient(base_url=server.http, timeout=60) as client:
        answer = await client.post("/v1/audio/transcriptions", files={"file": ("speech.wav", wav, "audio/wav")},
                                   data={"model": "whisper-1", "language": "ko", "response_format": fmt})
    assert answer.status_code == 200, answer.text


async def openai_client_gone_while_decoding(server: ServerThread, wav: bytes) -> None:
    boundary = "nocycles"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"speech.wav\"\r\n"
            "Content-Type: audio/wav\r\n\r\n").encode() + wav + f"\r\n--{boundary}--\r\n".encode()
    head = (f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n")
    await raw_post(server, head, body, wait_for_answer=False)


async def openai_subtitles(server: ServerThread, wav: bytes) -> None:
    await openai_transcription(server, wav, "vtt")


def pcm_of(wav: bytes) -> bytes:
    return wav[44:]  # the fixture's canonical 44-byte header, 16 kHz mono


async def vosk_eof(server: ServerThread, wav: bytes) -> None:
    async with connect(f"{server.ws}/vosk?language=ko-KR") as ws:
        await ws.send(json.dumps({"config": {"sample_rate": 16000}}))
        await ws.send(pcm_of(wav))
        await ws.recv()
        await ws.send('{"eof" : 1}')
        while "partial" in json.loads(await ws.recv()):
            pass
        with pytest.raises(ConnectionClosed):
            await ws.recv()


async def vosk_client_gone(server: ServerThread, wav: bytes) -> None:
    async with connect(f"{server.ws}/vosk?language=ko-KR") as ws:
        await ws.send(json.dumps({"config": {"sample_rate": 16000}}))
        await ws.send(bytes(3200))
        assert "partial" in json.loads(await ws.recv())


async def vosk_server_closes(server: ServerThread, wav: bytes) -> None:
    async with connect(f"{server.ws}/vosk?language=ko-KR") as ws:
        await ws.send(json.dumps({"config": {"sample_rate": 16000}}))
        await ws.send(bytes(3200))
        assert "partial" in json.loads(await ws.recv())
        await ws.send("not json")  # mid-stream: the server closes with a reason
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code != 1000


async def vosk_decoder_fails(server: ServerThread, wav: bytes) -> None:
    async with connect(f"{server.ws}/vosk?language=ko-KR") as ws:
        await ws.send(bytes(3200))
        assert "partial" in json.loads(await ws.recv())
        await ws.send(POISON)
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011


async def usp_turn_ended(server: ServerThread, wav: bytes) -> None:
    async with connect(server.ws + CONVERSATION) as ws:
        rid = uuid.uuid4().hex
        await open_turn(ws, rid)
        await send_pcm(ws, rid, pcm_of(wav))
        await until_turn_end(ws)


async def turn_under_way(ws: ClientConnection, frames: int) -> str:
    """A Speech SDK turn opened on ``ws`` and ``frames`` 100 ms frames of silence sent: the server has started it.
    Returns its request id."""
    rid = uuid.uuid4().hex
    await open_turn(ws, rid)
    for _ in range(frames):
        await ws.send(client_audio_frame(rid, bytes(3200)))
    assert parse_text(await ws.recv()).path == "turn.start"
    return rid


async def usp_closed_mid_turn(server: ServerThread, wav: bytes) -> None:
    async with connect(server.ws + CONVERSATION) as ws:
        await turn_under_way(ws, 20)


async def usp_server_closes_mid_turn(server: ServerThread, wav: bytes) -> None:
    async with connect(server.ws + CONVERSATION) as ws:
        await turn_under_way(ws, 5)
        await ws.send(b"\x00")  # not a frame: the server closes with a reason
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code != 1000


async def usp_decoder_fails(server: ServerThread, wav: bytes) -> None:
    async with connect(server.ws + CONVERSATION) as ws:
        rid = await turn_under_way(ws, 1)
        await ws.send(client_audio_frame(rid, POISON))
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011


ENDINGS: dict[str, Callable[[ServerThread, bytes], Awaitable[None]]] = {
    "REST recognized": rest_recognized,
    "REST subtitles": rest_subtitles,
    "REST refused mid-upload": rest_refused_mid_upload,
    "REST client gone mid-upload": rest_client_gone_mid_upload,
    "REST client gone while decoding": rest_client_gone_while_decoding,
    "OpenAI transcription": openai_transcription,
    "OpenAI subtitles": openai_subtitles,
    "OpenAI client gone while decoding": openai_client_gone_while_decoding,
    "/vosk eof": vosk_eof,
    "/vosk client gone": vosk_client_gone,
    "/vosk server closes": vosk_server_closes,
    "/vosk decoder fails": vosk_decoder_fails,
    "Speech SDK turn ended": usp_turn_ended,
    "Speech SDK closed mid-turn": usp_closed_mid_turn,
    "Speech SDK server closes mid-turn": usp_server_closes_mid_turn,
    "Speech SDK decoder fails": usp_decoder_fails,
}
#: Endings whose decoder fails (injected: tests/recognizer/test_decoder_failures.py), their log line kept out of
#: pytest's log capture, which holds each record's traceback (and the frames in it) till the test ends.
FAILING = {"/vosk decoder fails", "Speech SDK decoder fails"}


@pytest.mark.parametrize("ending", ENDINGS)
async def test_a_session_that_ended_is_freed_at_once(server: ServerThread, speech_wav: Path, ending: str) -> None:
    wav = speech_wav.read_bytes()
    assert read_wav(speech_wav)[1:] == (16000, 1) and wav[36:40] == b"data"
    gc.collect()
    gc.disable()  # in the whole process, the server's thread too: only reference counting frees anything
    try:
        with decoder_fails(logged=False) if ending in FAILING else nullcontext():
            before = census(server)  # another test's session may still be ending on the shared server
            await ENDINGS[ending](server, wav)
            deadline = time.monotonic() + 10
            while (left := {k: n - before[k] for k, n in census(server).items() if n > before[k]}) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        assert not left, f"{ending}: waiting for the cycle collector: {left}"
    finally:
        gc.enable()
