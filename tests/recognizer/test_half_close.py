"""A client that writes its requests, then half-closes (``shutdown(SHUT_WR)``: ``nc -N``, simple clients, proxies that
pass a client's half-close on) still reads: each request it sent whole is answered, in order, then the connection closes.

Before, uvicorn closed the connection at the client's FIN: of 1, 2 or 3 pipelined ``GET /ready`` it answered 1, 1, 1;
of REST recognitions 0, 0, 1 (whichever answer was already on its way). A client that closes its socket sends the same
FIN: a recognition in progress still gives its decoder back at once (tests/recognizer/test_gone_clients.py), told
apart by an interim ``100 Continue`` that a closed socket answers with a reset (``LimitedHttpTools._probe``).
A /vosk client that half-closes after ``{"eof" : 1}`` gets its final result and the close (an unsolicited pong is the
WebSocket's probe: ``UnmappedWebSockets.eof_received``).
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from pathlib import Path

import pytest
from websockets.frames import Close, Frame, Opcode

from harness.hostile_inputs import post_head, responses, wav_header

from ..conftest import CHUNK
from ..support import Reference, ServerThread, Starved, read_wav, scrape_metrics
from .test_gone_clients import unacknowledged
from .test_not_reading import deaf_websocket

REST = "/speech/recognition/conversation/cognitiveservices/v1?language=ko-KR"
READY = b"GET /ready HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
#: Half a second of silence: a recognition answered 200 quickly.
AUDIO = wav_header(data_bytes=16000) + b"\0" * 16000
RECOGNITION = post_head(REST, content_length=len(AUDIO)) + AUDIO
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
#: Seconds within which the connection must close once answered (its keep-alive is 75 s), in time the server (in this
#: process) and this process did not wait for a CPU: a bound by the clock failed a recognition of half a second of
#: silence that was only slow (16.4 s at load 18-28).
CLOSED_WITHIN = 15
#: Seconds a half-closed client waits by the clock for the server's close: a hang guard, generous for a loaded machine,
#: past the keep-alive (a server that does not close at the half-close closes there: its time not waiting for a CPU
#: is then over :data:`CLOSED_WITHIN`).
HANG = 90
#: Seconds within which a few seconds of speech sent at once are answered (decoding on a loaded machine).
DECODED_WITHIN = 120


def half_close(port: int, data: bytes) -> tuple[bytes, float]:
    """Write ``data``, half-close, read until the server closes: what it answered, and the seconds that took, but those
    in which the server or this process waited for a CPU (:class:`~tests.support.Starved`)."""
    answer = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=HANG) as sock, Starved() as starved:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        while got := sock.recv(65536):
            answer += got
    return bytes(answer), starved.seconds


@pytest.mark.parametrize("count", [1, 2, 3])
@pytest.mark.parametrize("kind", ["ready", "recognition"])
def test_requests_written_then_half_closed_are_all_answered_then_closed(server: ServerThread, kind: str, count: int) -> None:
    """1, 2 or 3 requests in one write, then the half-close: as many answers, in order, then the server's close (not at
    the end of its keep-alive). A recognition in progress at the half-close is told apart from a closed socket by a
    ``100 Continue`` before its answer (one at most: an answer already on its way needs none)."""
    request = READY if kind == "ready" else RECOGNITION
    answer, took = half_close(server.port, request * count)
    interim = answer.count(CONTINUE)
    got = responses(answer.replace(CONTINUE, b""))
    assert [code for code, _, _ in got] == [200] * count, answer[:600]
    if kind == "recognition":
        assert interim <= 1 and not answer.endswith(CONTINUE), answer[:300]  # before the answer in progress at the FIN
        assert all("RecognitionStatus" in json.loads(body) for _, _, body in got), got
    else:
        assert interim == 0, answer[:300]
    assert took < CLOSED_WITHIN, f"closed {took:.1f} s after the half-close"


@pytest.mark.parametrize("kind", ["ready", "recognition"])
def test_an_http_1_0_request_half_closed_is_answered_without_an_interim_answer(server: ServerThread, kind: str) -> None:
    """``printf 'GET /ready HTTP/1.0\\r\\n\\r\\n' | nc -N``: answered; an HTTP/1.0 client gets no 1xx (RFC 9110, 15.2)."""
    request = (READY if kind == "ready" else RECOGNITION).replace(b" HTTP/1.1\r\n", b" HTTP/1.0\r\n", 1)
    answer, took = half_close(server.port, request)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]
    assert CONTINUE not in answer and took < CLOSED_WITHIN, (took, answer[:300])


def test_a_request_cut_off_by_the_half_close_is_not_answered_but_those_before_it_are(server: ServerThread) -> None:
    """Two whole requests and the start of a third (a head, or a body cut short): the two answered, then the close (the
    third can never end). One cut off with nothing before it: the close at once, as before."""
    for cut in (b"GET /ready HTTP/1.1\r\nHo", RECOGNITION[:-100]):
        answer, took = half_close(server.port, READY + RECOGNITION + cut)
        got = responses(answer.replace(CONTINUE, b""))
        assert [code for code, _, _ in got] == [200, 200], answer[:600]
        assert took < CLOSED_WITHIN, f"closed {took:.1f} s after the half-close"
        alone, took = half_close(server.port, cut)
        assert alone == b"" and took < 2, (took, alone[:300])


def vosk_half_closed(port: int, pcm: bytes, taken: bool = False) -> tuple[list[dict], Close | None, float]:
    """/vosk: ``pcm`` at once, ``{"eof" : 1}``, then the half-close (no close frame; ``taken``: once the server's
    kernel has taken all of it in, so that the FIN is not behind any); every reply read until the server closes: the
    replies, its close frame (None: none, or the connection reset), and the seconds from the close frame to the
    connection's end, but those in which the server or this process waited for a CPU (:class:`~tests.support.Starved`)."""
    sock, protocol = deaf_websocket(port, "/vosk?language=ko-KR")
    closed_at = None
    with sock, Starved() as starved:
        sock.settimeout(DECODED_WITHIN)
        for i in range(0, len(pcm), CHUNK):
            protocol.send_binary(pcm[i : i + CHUNK])
        protocol.send_text(b'{"eof" : 1}')
        sock.sendall(b"".join(protocol.data_to_send()))
        while taken and unacknowledged(sock):
            time.sleep(0.005)
        sock.shutdown(socket.SHUT_WR)
        with contextlib.suppress(ConnectionResetError):  # the server's reset: no close frame, the replies so far
            while got := sock.recv(65536):
                protocol.receive_data(got)
                if protocol.close_rcvd is not None and closed_at is None:
                    closed_at = time.monotonic()
        ended = time.monotonic()
    protocol.receive_eof()
    frames = [e for e in protocol.events_received() if isinstance(e, Frame)]
    replies = [json.loads(f.data) for f in frames if f.opcode is Opcode.TEXT]
    return replies, protocol.close_rcvd, starved.unstarved(closed_at or ended, ended)


def test_a_vosk_client_half_closed_after_eof_gets_its_final_result_then_the_close(
        server: ServerThread, speech_wav: Path, speech_ref: Reference) -> None:
    """A client that sends its audio and ``{"eof" : 1}``, then half-closes (``shutdown(SHUT_WR)``, no close frame: it
    reads on) gets every reply and its final result, as a client that waits for them does, then the close (1000) and
    at once the end of the connection (it cannot answer the close: uvicorn's wait for that answer is 10 s), counted as
    a stream served. Before, the server closed at the FIN: the client got the replies already on their way, if any,
    never the final result (as vosk-server, whose websockets closes at a FIN too)."""
    pcm = read_wav(speech_wav)[0]
    served = served_streams(server)
    replies, close, took = vosk_half_closed(server.port, pcm)
    texts = [r["text"] for r in replies if r.get("text")]
    assert texts == speech_ref.texts and "text" in replies[-1], replies[-3:]
    assert close is not None and close.code == 1000, close
    assert took < 2, f"the connection ended {took:.1f} s after the close"
    assert served_streams(server) == served + 1


def served_streams(server: ServerThread) -> float:
    return scrape_metrics(server.http).get(("speech_requests_total", (("route", "vosk"), ("status", "200"))), 0.0)


def test_a_vosk_client_half_closed_behind_more_than_the_read_ahead_gets_its_final_result(
        server: ServerThread, utterances_wav: Path) -> None:
    """The same, its audio half as much again as the server's read-ahead (2 MiB: 60 s; 3.2 MB here), sent as fast as the socket
    takes it, and the half-close once the server's kernel has it all: its FIN waits there behind audio the route has
    not read. It was taken for the end of a client gone (a closed socket sends the same FIN): what was read ahead
    dropped undecoded, no final result, no close frame, the connection ended at once. Now a closed socket is told
    apart by the probe its reset answers (tests/recognizer/test_gone_clients.py), and this client, which takes the
    probe in, gets every reply, its final result and the close 1000, counted as a stream served."""
    pcm = read_wav(utterances_wav)[0] * 8
    assert len(pcm) > 1.5 * (2 << 20)
    served = served_streams(server)
    replies, close, took = vosk_half_closed(server.port, pcm, taken=True)
    finals = [r for r in replies if "text" in r]
    print(f"{len(replies)} replies, {len(finals)} results, close {close}")
    assert close is not None and close.code == 1000, f"{len(replies)} replies, {len(finals)} results, close {close}"
    assert "text" in replies[-1] and len(finals) >= 8, f"{len(replies)} replies, {len(finals)} results"
    assert took < 2, f"the connection ended {took:.1f} s after the close"
    assert served_streams(server) == served + 1
