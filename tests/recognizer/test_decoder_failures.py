"""A decoder that fails mid-stream: the stream ends as the failure policy answers INTERNAL (close 1011 with a reason),
counted and logged once with its traceback; its session is freed at once (tests/recognizer/test_no_cycles.py's
endings "... decoder fails").

No input of a client makes Vosk raise mid-stream here (it would take a bug of Vosk's, or memory running out), so the
failure is injected where every decode runs (``Recognition.accept``), for one chunk no test sends otherwise
(:data:`POISON`): mock only what cannot run here; the server, its routes and the client are real.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from harness.usp import client_audio_frame, client_text_frame
from speech_recognizer.recognition import Recognition
from speech_recognizer.transcript import Event

from ..support import Reference, ServerThread
from ..usp.held import CONVERSATION, assert_held_phrase_first, first_sentence_held, until_close
from .test_failures import Records, refused

#: The chunk of audio the decoder fails on while :func:`decoder_fails` lasts (0.1 s at 16 kHz).
POISON = b"\x7f\x7f\x80\x80" * 800


@contextmanager
def decoder_fails(*, logged: bool = True, after: float = 0.0) -> Iterator[None]:
    """``Recognition.accept`` raises on :data:`POISON` while this lasts (``after`` seconds into its decoding: a decoder
    slower than the event loop, which meanwhile reads on). ``logged=False``: the failure's log line goes
    nowhere, since pytest's log capture keeps every record till the test ends, and an INTERNAL one's traceback holds the
    frames the failure went through, with the session (which test_no_cycles wants freed)."""
    accept = Recognition.accept

    def failing(self: Recognition, pcm: bytes) -> list[Event]:
        if pcm == POISON:
            time.sleep(after)
            raise RuntimeError("the decoder failed (injected)")
        return accept(self, pcm)

    failures = logging.getLogger("speech_recognizer.failures")
    nowhere = logging.NullHandler()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Recognition, "accept", failing)
        if not logged:
            patch.setattr(failures, "propagate", False)
            failures.addHandler(nowhere)
        try:
            yield
        finally:
            failures.removeHandler(nowhere)


def test_a_decoder_failing_ends_a_vosk_stream_with_a_reason_counted_and_logged(server: ServerThread) -> None:
    before = refused(server.http, "vosk", "internal")
    with decoder_fails(), Records() as records:
        with connect(f"{server.ws}/vosk?language=ko-KR") as ws:
            ws.send(bytes(3200))
            assert "partial" in json.loads(ws.recv(timeout=30))
            ws.send(POISON)
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    ws.recv(timeout=30)
        assert closed.value.rcvd is not None, "closed without a close frame"
        assert closed.value.rcvd.code == 1011 and "internal error (RuntimeError)" in closed.value.rcvd.reason, closed.value.rcvd
        deadline = time.monotonic() + 10  # the server counts it once the client answered its close
        while refused(server.http, "vosk", "internal") == before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert refused(server.http, "vosk", "internal") == before + 1, "counted as a failure, not as a stream served"
        logged = [r for r in records.records if r.name == "speech_recognizer.failures"]
        assert [r.getMessage().split(";")[0] for r in logged] == ["vosk: internal: internal error (RuntimeError)"]
        assert logged[0].exc_info is not None and "the decoder failed (injected)" in str(logged[0].exc_info[1])


def test_a_phrase_held_for_the_segmentation_silence_comes_before_a_decoder_failure(
        server: ServerThread, long_pauses_wav: Path, long_pauses_ref: Reference) -> None:
    """A Speech SDK turn holds the first sentence's phrase for the segmentation silence (tests/usp/held.py); then
    the decoder fails (on :data:`POISON`). The turn ends as INTERNAL (``Error``, close 1011), but the phrase the
    decoder finished before it comes first, in-process Vosk's words and times. Before, it was dropped."""
    with decoder_fails(logged=False), connect(server.ws + CONVERSATION) as ws:
        request_id = first_sentence_held(ws, long_pauses_wav, long_pauses_ref)
        ws.send(client_audio_frame(request_id, POISON))
        messages, code, reason = until_close(ws)
    assert code == 1011 and "internal error (RuntimeError)" in reason, (code, reason)
    assert_held_phrase_first(messages, long_pauses_ref, ["Error"])
    assert messages[-1].path == "turn.end"


def test_a_decoder_failing_while_a_protocol_error_is_answered_is_counted_and_logged_too(server: ServerThread) -> None:
    """A Speech SDK turn's decoder fails on audio received just before a frame that breaks the protocol. The protocol
    error is answered (close 1002, the turn's results of the audio before it first); the decoder's failure, met while
    the turn's results were being settled for that answer, is a fault of the server's all the same: counted and logged
    once with its traceback. It was dropped silently (the connection was already closing)."""
    route = "usp/conversation"
    before = (refused(server.http, route, "protocol_error"), refused(server.http, route, "internal"))
    request_id = "0123456789abcdef0123456789abcdef"
    source = {"type": "Stream", "samplerate": "16000", "bitspersample": "16", "channelcount": "1"}
    with decoder_fails(after=0.5), Records() as records, connect(server.ws + CONVERSATION) as ws:
        ws.send(client_text_frame("speech.config", None, {"context": {"audio": {"source": source}}}))
        ws.send(client_text_frame("speech.context", request_id, {"phraseDetection": {"language": "ko-KR"}}))
        ws.send(client_audio_frame(request_id, bytes(3200)))
        ws.send(client_audio_frame(request_id, POISON))
        ws.send("X-RequestId:r1\r\n\r\n{}")  # no Path: a protocol error, read while the decoder works on POISON
        _, code, reason = until_close(ws)
        assert code == 1002, (code, reason)
        deadline = time.monotonic() + 10  # counted once the turn's results were settled
        while refused(server.http, route, "internal") == before[1] and time.monotonic() < deadline:
            time.sleep(0.05)
        after = (refused(server.http, route, "protocol_error"), refused(server.http, route, "internal"))
        assert after == (before[0] + 1, before[1] + 1), (before, after)
        logged = [r for r in records.records if r.name == "speech_recognizer.failures" and "internal" in r.getMessage()]
        assert len(logged) == 1 and logged[0].exc_info is not None, [r.getMessage() for r in logged]
        assert "the decoder failed (injected)" in str(logged[0].exc_info[1])
