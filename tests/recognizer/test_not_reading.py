"""A WebSocket client that never reads its replies gives its decoder back after ``AudioIdleSeconds``, not the kernel's 60 s.

Such a client is no dead peer: its kernel acknowledges every probe while its receive window stays shut. Once the
server's buffers are full its replies wait, the stream waits on them (its audio no longer read), and its decoder,
doing nothing, was held until the kernel gave the connection up (``TCP_USER_TIMEOUT``, 60 s of a shut window). Each
test opens a raw socket with a small receive buffer that reads nothing after the handshake, makes the server reply
fast (a final result per ``{"reset" : 1}`` on ``/vosk``, many short turns on the Speech SDK route; the server's send
buffers small, so that fewer replies fill them), and checks that its decoder is free and its connection gone within
:data:`BOUND` of its first audio, counted as ``not_reading``, while a client that reads, on the same server at the
same time, gets every result.

A client that reads, however slowly, is not cut: :func:`test_a_slow_reader_is_not_cut` reads a little at a time
while the server's sends wait on it, at the server's usual send buffer, where the event loop's buffer moves only
once the kernel's has drained a third: longer than ``AudioIdleSeconds`` at that rate.

A client whose replies fit the server's buffers stalls no send: it is told from an idle client at its idle deadline
instead (:func:`test_a_vosk_client_that_sent_all_its_audio_and_reads_nothing_is_cut_as_not_reading`, and
:func:`test_a_speech_sdk_client_that_sent_its_audio_and_reads_nothing_is_cut_as_not_reading`, whose earlier turns'
replies wait unsent).
One whose replies fit its own receive buffer ends idle, and is reset once it has not answered the close for
:data:`~speech_recognizer.http_limits.CLOSE_REPLY_SECONDS` (:func:`test_a_client_that_sent_its_audio_and_reads_nothing_is_let_go_after_its_close`).
"""

from __future__ import annotations

import fcntl
import json
import socket
import subprocess
import termios
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.sync.client import connect
from websockets.uri import parse_uri

from harness.usp import client_audio_frame, client_text_frame
from speech_recognizer import serving
from speech_recognizer.app import create_app
from speech_recognizer.connection_cap import SIOCOUTQNSD
from speech_recognizer.http_limits import CLOSE_REPLY_SECONDS
from speech_recognizer.models import ModelRegistry
from speech_recognizer.usp.frames import parse_text

from ..conftest import CHUNK, make_settings
from ..support import Reference, ServerThread, Unstarved, read_wav, scrape_metrics
from .test_gone_clients import Gone, usp_phrases, vosk_words, wav_bytes

USP = "/speech/recognition/conversation/cognitiveservices/v1?language=ko-KR"
#: The server's AudioIdleSeconds here, the longest a send may wait on a client that takes in nothing.
STALL_SECONDS = 1.0
#: Seconds within which a client taking in nothing must have lost its decoder and its connection, from its first audio:
#: the time its replies take to fill the server's buffers (a few seconds), the stall bound, and the decoding of the
#: chunks queued. Judged in time this process (the server, the client that reads) and its children did not wait for a
#: CPU (:class:`~tests.support.Unstarved`): filling the buffers and decoding are work that a loaded machine stretches by
#: the clock, while a connection held for the kernel (before: 60 s of a shut window) idles, each of its seconds counted.
#: On a machine so starved that the clock's cap (:func:`~tests.support.starved_clock`) comes past the kernel's 60 s,
#: such a connection still fails the test: the kernel's cut is not counted ``not_reading``.
BOUND = 15.0


class Server(Gone):
    """A recognizer with two decoders and ``AudioIdleSeconds`` :data:`STALL_SECONDS`, and its app (its engine)."""

    def refused(self, route: str, reason: str = "not_reading") -> float:
        return scrape_metrics(self.srv.http).get(("speech_refused_total", (("reason", reason), ("route", route))), 0.0)

    def _ss(self, client: socket.socket, column: int) -> str:
        """A column of ``ss``' line for the server's end of ``client``'s connection ("" once gone)."""
        out = subprocess.run(["ss", "-tnH", "state", "all", f"( sport = :{self.srv.port} and dport = :{client.getsockname()[1]} )"],
                             capture_output=True, text=True, check=True).stdout
        return out.split()[column] if out.strip() else ""

    def server_side(self, client: socket.socket) -> str:
        """The state of the server's end of ``client``'s connection, as ``ss`` shows it ("" once gone)."""
        return self._ss(client, 0)

    def send_queue(self, client: socket.socket) -> str:
        """The bytes queued in the server's kernel for ``client`` (``ss``' Send-Q; "" once gone)."""
        return self._ss(client, 2)


@pytest.fixture(scope="module")
def stalling(registry: ModelRegistry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Its connections' send buffers the kernel's least (``SO_SNDBUF`` 4 KiB, not 64): a client's replies fill them,
    and the event loop's 64 KiB after them, with fewer replies, sooner."""
    app = create_app(make_settings(tmp_path_factory.mktemp("not-reading"), "DecoderMaxCount=2", f"AudioIdleSeconds={STALL_SECONDS:g}"),
                     registry)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(serving, "SEND_BUFFER_BYTES", 4096)
        with ServerThread(app) as srv:
            yield Server(srv, app)


def deaf_websocket(port: int, path: str) -> tuple[socket.socket, ClientProtocol]:
    """A WebSocket whose client reads the server's handshake answer and nothing after it (its receive buffer 4 KiB,
    which its kernel doubles: its window shuts once that much waits)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    protocol = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}{path}"))
    protocol.send_request(protocol.connect())
    sock.sendall(b"".join(protocol.data_to_send()))
    head = b""
    while not head.endswith(b"\r\n\r\n"):  # a byte at a time: not one byte of a frame after it
        head += sock.recv(1)
    protocol.receive_data(head)
    assert protocol.handshake_exc is None, head
    return sock, protocol


def send_all(sock: socket.socket, frames: list[bytes]) -> None:
    """Send ``frames`` in the background, for as long as the server reads them (it stops: the sender waits, then fails)."""
    def run() -> None:
        try:
            for frame in frames:
                sock.sendall(frame)
        except OSError:
            pass

    threading.Thread(target=run, daemon=True).start()


def assert_cut_within_bound(stalling: Server, sock: socket.socket, started: Unstarved, readers: Future[object]) -> Unstarved:
    """``started`` (begun as its first audio was sent) once the deaf client's decoder was free and its connection
    gone: within :data:`BOUND` (:meth:`~tests.support.Unstarved.beyond`)."""
    while stalling.server_side(sock) or stalling.active > (0 if readers.done() else 1):
        assert not started.beyond(BOUND), (
            f"{started} after it began to send, the client that reads nothing still holds {stalling.active} "
            f"decoder(s), its connection {stalling.server_side(sock) or 'gone'}")
        time.sleep(0.05)
    started.read()
    return started


def test_a_vosk_client_that_never_reads_loses_its_decoder_after_audio_idle_seconds(
        stalling: Server, speech_wav: Path, speech_ref: Reference) -> None:
    """A chunk of audio (the stream takes its decoder), then ``{"reset" : 1}`` after ``{"reset" : 1}``, each answered
    with a final result: the server's buffers fill within a second or two and its sends stall; the decoder is then free,
    and the connection reset, within :data:`BOUND`."""
    before = stalling.refused("vosk")
    sock, protocol = deaf_websocket(stalling.srv.port, "/vosk?language=ko-KR")
    protocol.send_text(json.dumps({"config": {"max_alternatives": 1}}).encode())  # a longer answer to each reset
    protocol.send_binary(read_wav(speech_wav)[0][:CHUNK])
    for _ in range(5000):
        protocol.send_text(b'{"reset" : 1}')
    with sock, ThreadPoolExecutor(1) as pool, closing(Unstarved()) as started:
        send_all(sock, [b"".join(protocol.data_to_send())])
        stalling.wait_until_held()
        reader = pool.submit(vosk_words, stalling.srv.ws, read_wav(speech_wav)[0])  # a client that reads, meanwhile
        took = assert_cut_within_bound(stalling, sock, started, reader)
        assert reader.result(timeout=60) == speech_ref.texts
    assert stalling.refused("vosk") == before + 1, "counted as a client that took in nothing"
    print(f"decoder free and connection gone {took} after its first audio")


def usp_frames(protocol: ClientProtocol, turns: int) -> list[bytes]:
    """``turns`` Speech SDK turns of 0.1 s of silence each, one after the other without waiting for their ends: each
    is answered with its start, its status phrase and its end (about 1 KB)."""
    frames = []
    for _ in range(turns):
        rid = uuid.uuid4().hex
        protocol.send_text(client_text_frame("speech.context", rid, {"phraseDetection": {"language": "ko-KR"}}).encode())
        for payload in (wav_bytes(b""), bytes(CHUNK), b""):
            protocol.send_binary(client_audio_frame(rid, payload))
        frames.append(b"".join(protocol.data_to_send()))
    return frames


def test_a_speech_sdk_client_that_never_reads_loses_its_decoder_after_audio_idle_seconds(
        stalling: Server, speech_wav: Path, speech_ref: Reference) -> None:
    """Short turns sent back to back, each answered with about 1 KB: the server's buffers fill after a few hundred, a
    turn's sends stall holding its decoder; it is then free, and the connection reset, within :data:`BOUND`, and
    the turns that came after are not answered (no internal error)."""
    before, internal = stalling.refused("usp/conversation"), stalling.refused("usp/conversation", "internal")
    sock, protocol = deaf_websocket(stalling.srv.port, USP)
    frames = usp_frames(protocol, 2000)
    with sock, ThreadPoolExecutor(1) as pool, closing(Unstarved()) as started:
        send_all(sock, frames)
        stalling.wait_until_held()
        reader = pool.submit(usp_phrases, stalling.srv.ws, read_wav(speech_wav)[0])  # a client that reads, meanwhile
        took = assert_cut_within_bound(stalling, sock, started, reader)
        phrases = reader.result(timeout=60)
    assert [p.get("DisplayText") for p in phrases[:-1]] and phrases[-1]["RecognitionStatus"] == "EndOfDictation", phrases
    assert len(phrases) == 1 + len(speech_ref.phrases)
    assert stalling.refused("usp/conversation") == before + 1, "counted as a client that took in nothing"
    # the turns it had sent after it, read ahead, are not answered: before, the next one's start was sent on the
    # connection closed for the failure, an internal error (a fault: its alert) logged with its traceback
    assert stalling.refused("usp/conversation", "internal") == internal
    print(f"decoder free and connection gone {took} after its first audio")


#: The ``AudioIdleSeconds`` of :func:`patient_reader`'s server.
SLOW_STALL_SECONDS = 3.0
#: What a slow reader takes in at a time, every :data:`SLOW_READ_PAUSE` seconds, for :data:`SLOW_READ_SECONDS`: 4 KiB a
#: second, where freeing a third of the server's kernel send buffer (128 KiB) takes about 10 s: the event loop's
#: buffer stays put through the slow reads, three times :data:`SLOW_STALL_SECONDS`.
SLOW_READ_BYTES = 1024
SLOW_READ_PAUSE = 0.25
SLOW_READ_SECONDS = 3 * SLOW_STALL_SECONDS


@pytest.fixture(scope="module")
def patient_reader(registry: ModelRegistry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A recognizer with ``AudioIdleSeconds`` :data:`SLOW_STALL_SECONDS` and its connections' usual send buffers."""
    app = create_app(make_settings(tmp_path_factory.mktemp("slow-reader"), "DecoderMaxCount=2",
                                   f"AudioIdleSeconds={SLOW_STALL_SECONDS:g}"), registry)
    with ServerThread(app) as srv:
        yield Server(srv, app)


def test_a_slow_reader_is_not_cut(patient_reader: Server, speech_wav: Path) -> None:
    """A /vosk client whose 10000 resets are answered far faster than it reads (:data:`SLOW_READ_BYTES` every
    :data:`SLOW_READ_PAUSE` s, from the start): the server's sends wait on it all along, and its kernel's send queue
    goes down at each read, but its event loop's buffer does not move (before, the connection was reset
    ``AudioIdleSeconds`` after the sends stalled, the client reading all the while). It gets every reply, then reads
    the rest at once, and the close 1000; nothing counted as ``not_reading``."""
    resets = 10000
    before = patient_reader.refused("vosk")
    sock, protocol = deaf_websocket(patient_reader.srv.port, "/vosk?language=ko-KR")
    protocol.send_text(json.dumps({"config": {"max_alternatives": 1}}).encode())
    protocol.send_binary(read_wav(speech_wav)[0][:CHUNK])
    for _ in range(resets):
        protocol.send_text(b'{"reset" : 1}')
    protocol.send_text(b'{"eof" : 1}')
    texts, received, slowly, closed = 0, 0, 0, None
    with sock:
        send_all(sock, [b"".join(protocol.data_to_send())])
        started = time.monotonic()
        sock.settimeout(10)
        while closed is None:
            slow = time.monotonic() - started < SLOW_READ_SECONDS
            try:
                data = sock.recv(SLOW_READ_BYTES if slow else 1 << 16)
            except ConnectionResetError:
                data = b""
            assert data, (f"the connection was reset {time.monotonic() - started:.1f} s in, its client having read "
                          f"{received} bytes, {slowly} of them in its slow reads")
            received += len(data)
            slowly += len(data) if slow else 0
            protocol.receive_data(data)
            for event in protocol.events_received():
                if isinstance(event, Frame):
                    texts += event.opcode is Opcode.TEXT
                    if event.opcode is Opcode.CLOSE:
                        closed = Close.parse(event.data)
            if slow:
                time.sleep(SLOW_READ_PAUSE)
    assert closed.code == 1000, closed
    assert texts >= resets + 1, "a final result for each reset, and the stream's last"
    assert received - slowly > 2 * serving.SEND_BUFFER_BYTES, "what it read slowly left the server's buffers full"
    assert patient_reader.refused("vosk") == before
    print(f"{slowly} bytes read slowly in {SLOW_READ_SECONDS:g} s, then {received - slowly} more")



def test_a_vosk_client_that_sent_all_its_audio_and_reads_nothing_is_cut_as_not_reading(stalling: Server, utterances_wav: Path) -> None:
    """A /vosk client sends a recording in 20 ms chunks, no eof, and reads nothing: its replies (one a chunk)
    fill its window but not the server's buffers, so no send stalls. ``AudioIdleSeconds`` after its last reply it has
    taken in none of what waited unsent then: it is cut as ``not_reading``, its decoder given back and its connection
    reset at once (before: ``idle_timeout``, its final result and close queued behind the replies it does not read,
    the connection held until the kernel gave it up, 60 s)."""
    before = {reason: stalling.refused("vosk", reason) for reason in ("not_reading", "idle_timeout")}
    sock, protocol = deaf_websocket(stalling.srv.port, "/vosk?language=ko-KR")
    pcm = read_wav(utterances_wav)[0]
    for i in range(0, len(pcm), 640):
        protocol.send_binary(pcm[i : i + 640])
    with sock:
        send_all(sock, [b"".join(protocol.data_to_send())])
        stalling.wait_until_held()
        held = time.monotonic()
        freed = None
        while side := stalling.server_side(sock):
            now = time.monotonic()
            if freed is None and not stalling.active:
                freed = now
            assert now - (freed or held) < (2 * STALL_SECONDS + 1 if freed else 60), (
                f"the connection of a client that read nothing is still {side}, {now - held:.1f} s after its stream began, "
                f"{now - freed:.1f} s after its decoder was free" if freed else f"its decoder still held {now - held:.1f} s on",
                stalling.refused("vosk", "idle_timeout"))
            time.sleep(0.05)
        gone = time.monotonic()
    assert stalling.active == 0
    after = {reason: stalling.refused("vosk", reason) for reason in ("not_reading", "idle_timeout")}
    assert after == {"not_reading": before["not_reading"] + 1, "idle_timeout": before["idle_timeout"]}, after
    print(f"decoder free {(freed or gone) - held:.2f} s after it took it, its connection gone {gone - (freed or gone):.2f} s after")


#: Short turns a deaf Speech SDK client sends before its turn of speech: their replies (about 1 KB each) back up unsent
#: behind its shut window, far fewer than stall a send (the server's buffers take some 70 KB).
BACKLOG_TURNS = 30


def test_a_speech_sdk_client_that_sent_its_audio_and_reads_nothing_is_cut_as_not_reading(stalling: Server, utterances_wav: Path) -> None:
    """A Speech SDK client that stopped reading: :data:`BACKLOG_TURNS` short turns, whose replies wait unsent behind
    its shut window without stalling a send, then a turn of a second of speech, no end of audio. ``AudioIdleSeconds``
    after that turn's last reply it has taken in none of what waited unsent then: it is cut as ``not_reading``, its
    decoder given back and its connection reset at once, nothing more sent (before: the route's deadlines had no
    :class:`~speech_recognizer.deadlines.Backlog`, so it ended as ``idle_timeout``, its last phrase and the close queued
    behind the replies it does not read, its connection held until the unanswered close was reset, 10 s on)."""
    route = "usp/conversation"
    before = {reason: stalling.refused(route, reason) for reason in ("not_reading", "idle_timeout")}
    sock, protocol = deaf_websocket(stalling.srv.port, USP)
    frames = usp_frames(protocol, BACKLOG_TURNS)
    rid = uuid.uuid4().hex
    pcm = read_wav(utterances_wav)[0][: VOSK_CHUNKS * CHUNK]
    protocol.send_text(client_text_frame("speech.context", rid, {"phraseDetection": {"language": "ko-KR"}}).encode())
    for payload in [wav_bytes(b"")] + [pcm[i : i + CHUNK] for i in range(0, len(pcm), CHUNK)]:
        protocol.send_binary(client_audio_frame(rid, payload))
    frames.append(b"".join(protocol.data_to_send()))
    with sock:
        send_all(sock, frames)
        stalling.wait_until_held()
        held = time.monotonic()
        freed, queued = None, ""
        while side := stalling.server_side(sock):
            now = time.monotonic()
            if stalling.active:  # a turn holds the decoder (the short ones each briefly, then the last)
                freed = None
            elif freed is None:
                freed, queued = now, stalling.send_queue(sock)
            assert now - (freed or held) < (2 * STALL_SECONDS + 1 if freed else 60), (
                f"the connection of a client that read nothing is still {side}, {now - held:.1f} s after its first turn, "
                f"{now - freed:.1f} s after its decoder was free ({queued} bytes queued to it then)" if freed
                else f"its decoder still held {now - held:.1f} s on", stalling.refused(route, "idle_timeout"))
            time.sleep(0.05)
        gone = time.monotonic()
    assert stalling.active == 0
    after = {reason: stalling.refused(route, reason) for reason in ("not_reading", "idle_timeout")}
    assert after == {"not_reading": before["not_reading"] + 1, "idle_timeout": before["idle_timeout"]}, after
    print(f"decoder free {(freed or gone) - held:.2f} s after its first turn took it ({queued} bytes in the server's "
          f"send queue then), its connection gone {gone - (freed or gone):.2f} s after")


#: Chunks a deaf /vosk client sends (1 s of audio): their replies fit its receive buffer, as a Speech SDK turn's do.
VOSK_CHUNKS = 50


@pytest.mark.parametrize("route", ["usp/conversation", "vosk"])
def test_a_client_that_sent_its_audio_and_reads_nothing_is_let_go_after_its_close(
        stalling: Server, utterances_wav: Path, route: str) -> None:
    """A client sends audio, no end of it, and reads nothing: its replies (a Speech SDK turn's sparse hypotheses, a
    second of /vosk partial results) fit its receive buffer, so nothing waits unsent and it ends as an idle client
    (``idle_timeout``), its last results and the close sent. It never answers the close: :data:`~speech_recognizer.http_limits.CLOSE_REPLY_SECONDS` later
    its connection is reset, gone at once (before: closed with a FIN, which its kernel acknowledged, the server's end
    then held in ``FIN_WAIT2`` for the kernel's ``tcp_fin_timeout``, 60 s)."""
    before = stalling.refused(route, "idle_timeout")
    pcm = read_wav(utterances_wav)[0]
    if route == "vosk":
        sock, protocol = deaf_websocket(stalling.srv.port, "/vosk?language=ko-KR")
        for i in range(0, VOSK_CHUNKS * CHUNK, CHUNK):
            protocol.send_binary(pcm[i : i + CHUNK])
    else:
        sock, protocol = deaf_websocket(stalling.srv.port, USP)
        rid = uuid.uuid4().hex
        protocol.send_text(client_text_frame("speech.context", rid, {"phraseDetection": {"language": "ko-KR"}}).encode())
        for payload in [wav_bytes(b"")] + [pcm[i : i + CHUNK] for i in range(0, len(pcm), CHUNK)]:
            protocol.send_binary(client_audio_frame(rid, payload))
    with sock:
        send_all(sock, [b"".join(protocol.data_to_send())])
        stalling.wait_until_held()
        while stalling.active:
            time.sleep(0.05)
        freed = time.monotonic()
        states: dict[str, float] = {}  # the server's end's states, and when each was first seen
        while side := stalling.server_side(sock):
            took = time.monotonic() - freed
            states.setdefault(side, took)
            assert took < CLOSE_REPLY_SECONDS + 3, f"the connection of a client that answers no close is still {side} {took:.1f} s after its stream ended ({states})"
            time.sleep(0.05)
        gone = time.monotonic()
    assert stalling.refused(route, "idle_timeout") == before + 1, "it ended as an idle client"
    print(f"{route}: its connection gone {gone - freed:.2f} s after its stream ended (its decoder free); seen {states}")


class KernelLooks:
    """Counts what this process asks the kernel about its connections while ``patch`` holds: ``ioctl`` of a socket's queues
    (``SIOCOUTQNSD``, ``TIOCOUTQ``, ``FIONREAD``) and ``getsockopt(TCP_INFO)``, the server's in-process threads'
    included (the looks of :class:`~speech_recognizer.deadlines.Backlog` and :mod:`~speech_recognizer.connection_cap`)."""

    QUEUES = frozenset({SIOCOUTQNSD, termios.TIOCOUTQ, termios.FIONREAD})

    def __init__(self, patch: pytest.MonkeyPatch) -> None:
        self.count = 0
        ioctl, getsockopt = fcntl.ioctl, socket.socket.getsockopt

        def counted_ioctl(fd: Any, request: int, *args: Any) -> Any:
            self.count += request in self.QUEUES
            return ioctl(fd, request, *args)

        def counted_getsockopt(sock: socket.socket, level: int, option: int, *args: Any) -> Any:
            self.count += (level, option) == (socket.IPPROTO_TCP, socket.TCP_INFO)
            return getsockopt(sock, level, option, *args)

        patch.setattr(fcntl, "ioctl", counted_ioctl)
        patch.setattr(socket.socket, "getsockopt", counted_getsockopt)


#: Chunks of 20 ms a paced client sends in :func:`test_a_paced_stream_asks_the_kernel_nothing_per_chunk`.
PACED_CHUNKS = 100


@pytest.mark.parametrize("route", ["vosk", "usp/conversation"])
def test_a_paced_stream_asks_the_kernel_nothing_per_chunk(stalling: Server, utterances_wav: Path, route: str) -> None:
    """A client that reads its replies and sends :data:`PACED_CHUNKS` chunks of 20 ms in real time (a microphone), then
    its end of audio: what its connection's kernel says (bytes unsent, its TCP state) is looked at where it tells
    something, once a stream's client has been quiet a tenth of its idle time, at its idle deadline or while the
    read-ahead is full, not at each chunk (before: /vosk asked for the bytes unsent at each reply and the TCP state at
    each chunk; the Speech SDK route the bytes unsent at every reply paid with nothing else owed). A few looks at the
    connection's end (its close) are allowed."""
    pcm = read_wav(utterances_wav)[0][: PACED_CHUNKS * 640]
    with pytest.MonkeyPatch.context() as patch:
        looks = KernelLooks(patch)
        if route == "vosk":
            with connect(f"{stalling.srv.ws}/vosk?language=ko-KR", max_size=1 << 20) as ws:
                for i in range(0, len(pcm), 640):
                    ws.send(pcm[i : i + 640])
                    time.sleep(0.02)
                ws.send('{"eof" : 1}')
                while "text" not in json.loads(ws.recv(timeout=30)):
                    pass
        else:
            with connect(f"{stalling.srv.ws}{USP}", max_size=1 << 20) as ws:
                rid = uuid.uuid4().hex
                ws.send(client_text_frame("speech.context", rid, {"phraseDetection": {"language": "ko-KR"}}))
                ws.send(client_audio_frame(rid, wav_bytes(b"")))
                for i in range(0, len(pcm), 640):
                    ws.send(client_audio_frame(rid, pcm[i : i + 640]))
                    time.sleep(0.02)
                ws.send(client_audio_frame(rid, b""))
                while parse_text(str(ws.recv(timeout=30))).path != "turn.end":
                    pass
        stalling.held_until_free()  # a hang guard (test_gone_clients.HANG, judged by support.within)
        seen = looks.count
    print(f"{route}: {seen} looks at the kernel for {PACED_CHUNKS} chunks")
    assert seen <= 5, f"{seen} looks at the kernel for {PACED_CHUNKS} chunks of 20 ms"
