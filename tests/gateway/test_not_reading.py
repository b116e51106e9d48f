"""A client of the gateway that never reads: its recognizer resets the stream (``not_reading``), and the gateway takes
that for the client's doing, not for a recognizer lost.

The gateway relays with backpressure: once its client takes in nothing, it stops reading the recognizer's replies,
whose sends then stall, and after ``AudioIdleSeconds`` the recognizer resets the connection (nothing can reach the
client: tests/recognizer/test_not_reading.py). The gateway, still sending the client's audio on, saw its send fail and
counted ``backend_lost`` (WARNING, and the fault alert SpeechGatewayFailing pages on it), and queued a close 1011 for a
client that takes in nothing, its connection held until the kernel gave it up (60 s).

The gateway bounds its own sends too (``SPEECH_GATEWAY_SEND_STALL_SECONDS``): a client that has sent all it had and
reads nothing was held until the kernel gave it up (61 s), whatever its recognizer did meanwhile, neither direction of
the relay reading the recognizer once the send to the client waited; now it is reset once it has taken in none of
what waits for it for that long. A slow reader, which takes some in between two looks, is not.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp.client
import httpx
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from websockets.frames import Close, Frame, Opcode

from speech_operator.gateway import MIN_BUFFER_BYTES, GatewayConfig
from speech_operator.gateway_shutdown import CLOSE_REPLY_SECONDS
from speech_recognizer import serving
from speech_recognizer.app import create_app
from speech_recognizer.models import ModelRegistry
from tests.recognizer.test_gone_clients import vosk_words
from tests.recognizer.test_not_reading import USP, Server, deaf_websocket, send_all, stalling, usp_frames  # noqa: F401 - stalling: a fixture

from ..conftest import CHUNK, make_settings
from ..support import Reference, ServerThread, Starved, read_wav, scrape_metrics
from .conftest import Stack, speech_to_text

#: Seconds within which the recognizer must have reset the stream once it answered its last turn (its sends stalled
#: behind the replies held for a client that takes in nothing), but those this process (the recognizer, the gateway,
#: the client) waited for a CPU (:class:`~tests.support.Starved`): its ``AudioIdleSeconds``, the turn it was decoding,
#: and room. Without its bound on a stalled send: the kernel's (60 s in production, :data:`BEYOND_SECONDS` here).
STALLED_BOUND = 10.0
#: Turns the recognizer may answer before it resets the stream: their replies (about 1 KB each) fill what holds them
#: between it and the client first. How long those turns take is the recognizer's pace, which the machine's load sets:
#: the test bounds what is held, not that time.
MAX_TURNS = 1000
#: The gateway's bound on a client that takes in nothing, and its kernel's (``TCP_USER_TIMEOUT`` of its listening
#: socket, :data:`~speech_recognizer.serving.DEAD_PEER_SECONDS` in production, 60 s) in :func:`gateway`: beyond any
#: time the recognizer's turns may take to fill the buffers on a loaded machine, so that the recognizer's bound comes
#: first however slow its turns (:data:`MAX_TURNS` bounds what is held meanwhile).
BEYOND_SECONDS = 600
#: How long the test waits by the clock for the recognizer's next turn or its reset, and for the gateway's end of the
#: client's connection to go, before it gives up: a hang, on however loaded a machine (the bounds are
#: :data:`STALLED_BOUND` and :data:`AFTER`, in unstarved time).
HANG = 120.0
#: What aiohttp holds of a relay's replies besides the kernels' buffers, whatever the gateway's ``read_buffer_bytes``: up
#: to twice its ``DEFAULT_CHUNK_SIZE`` (256 KiB) in the read queue of the recognizer's side, and up to its WebSocket
#: ``writer_limit`` (the same 256 KiB) in the write buffer to the client before a send waits (:func:`small_buffers`).
#: The test makes both the gateway's ``read_buffer_bytes``, its least (:func:`gateway`'s): the recognizer's sends stall
#: after fewer turns, well before the client's window has been shut 60 s (the gateway's bound here, and the kernel's),
#: however slow the turns.
AIOHTTP_BUFFER_BYTES = MIN_BUFFER_BYTES
#: Seconds within which the gateway's end of the client's connection must be gone once the recognizer has reset the
#: stream, but those this process waited for a CPU. Before: until the kernel gave it up, about 60 s after the client's
#: window shut.
AFTER = 3.0


@pytest.fixture(scope="module")
def gateway(stalling: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:  # noqa: F811 - the fixture imported
    """The gateway, routing ko-KR to :func:`~tests.recognizer.test_not_reading.stalling`'s recognizer; its own bound on
    a client that takes in nothing and its kernel's both :data:`BEYOND_SECONDS` (the latter set on its listening socket,
    which its connections inherit, as the gateway starts in this process) and its buffers at their least, so that the
    recognizer's (``AudioIdleSeconds`` 1 s, from when its sends stall, once its replies filled what holds them:
    :data:`AIOHTTP_BUFFER_BYTES`) comes first, as the test means."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(serving, "DEAD_PEER_SECONDS", BEYOND_SECONDS)  # the gateway's bound is at most it, read as checked
        config = GatewayConfig(host="127.0.0.1", port=0, send_stall_seconds=BEYOND_SECONDS, read_buffer_bytes=MIN_BUFFER_BYTES)
        with Stack(tmp_path_factory.mktemp("gateway-not-reading"), config) as stack:
            patch.undo()  # its listening socket made as it started: the other tests' are production's
            stack.create(speech_to_text("ko-kr", "ko-KR", stalling.srv.port))
            stack.serving("ko-KR")
            yield stack


def failures(stack: Stack, locale: str | None = None) -> dict[str, float]:
    """``speech_gateway_failures_total`` by reason, of ``locale`` (None: summed over its locales)."""
    text = httpx.get(f"http://127.0.0.1:{stack.port}/metrics", timeout=10).text
    counted: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "speech_gateway_failures_total" and locale in (None, sample.labels["locale"]):
                counted[sample.labels["reason"]] = counted.get(sample.labels["reason"], 0) + sample.value
    return counted


def small_buffers(patch: pytest.MonkeyPatch) -> None:
    """aiohttp's own buffers of a relayed WebSocket :data:`AIOHTTP_BUFFER_BYTES` (those made while ``patch`` holds)."""
    patch.setattr(aiohttp.client, "DEFAULT_CHUNK_SIZE", AIOHTTP_BUFFER_BYTES)  # read when a WebSocket connects
    patch.setitem(web.WebSocketResponse.__init__.__kwdefaults__, "writer_limit", AIOHTTP_BUFFER_BYTES)


def answered(recognizer: Server, route: str = "usp/conversation") -> float:
    """The recognitions ``recognizer`` has ended on ``route`` (``speech_requests_total``, any outcome): the Speech SDK's
    turns, /vosk's streams."""
    return sum(value for (name, labels), value in scrape_metrics(recognizer.srv.http).items()
               if name == "speech_requests_total" and ("route", route) in labels)


def gateway_side(stack: Stack, port: int, column: int = 0) -> str:
    """A column of ``ss``' line for the gateway's end of the client's connection from ``port``: its state (0), Recv-Q
    (1), Send-Q (2); "" once gone."""
    out = subprocess.run(["ss", "-tnH", "state", "all", f"( sport = :{stack.port} and dport = :{port} )"],
                         capture_output=True, text=True, check=True).stdout
    return out.split()[column] if out.strip() else ""


def test_a_client_of_the_gateway_that_never_reads_is_no_recognizer_lost(
        gateway: Stack, stalling: Server, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811 - stalling: the fixture imported
    """Speech SDK turns sent back to back through the gateway, never read, the client sending on: the recognizer resets
    the stream (``not_reading``) once it answered at most :data:`MAX_TURNS`, and within :data:`STALLED_BOUND` of its last
    answer; the gateway counts no ``backend_lost`` and resets its client's connection at once."""
    small_buffers(monkeypatch)
    before, refused = failures(gateway), stalling.refused("usp/conversation")
    sock, protocol = deaf_websocket(gateway.port, USP)
    port = sock.getsockname()[1]
    with sock, Starved() as starved:
        frames = usp_frames(protocol, 20000)  # still being sent when the recognizer gives up
        started = time.monotonic()
        send_all(sock, frames)
        turns, last = 0, started
        while stalling.refused("usp/conversation") == refused:
            if (now := answered(stalling)) != turns:
                turns, last = now, time.monotonic()
            assert turns <= MAX_TURNS, f"the recognizer answered {turns} turns and never stalled: its replies are held unbounded"
            if (waited := time.monotonic() - last) >= STALLED_BOUND:  # the clock's bounds the unstarved time from above
                quiet = starved.unstarved(last, last + waited)
                assert quiet < STALLED_BOUND and waited < HANG, (
                    f"the recognizer answered no turn for {quiet:.1f} s not waiting for a CPU ({waited:.1f} s of the clock, "
                    f"{turns} answered) and never reset the stream")
            time.sleep(0.1)
        reset_at = time.monotonic()
        while side := gateway_side(gateway, port):
            if (waited := time.monotonic() - reset_at) >= AFTER:
                held = starved.unstarved(reset_at, reset_at + waited)
                assert held < AFTER and waited < HANG, (
                    f"the gateway's end of the client's connection still {side} {held:.1f} s not waiting for a CPU "
                    f"({waited:.1f} s of the clock) after the reset")
            time.sleep(0.05)
    after = failures(gateway)
    assert after.get("backend_lost", 0) == before.get("backend_lost", 0), after
    print(f"stream reset {reset_at - started:.2f} s after the first audio, {reset_at - last:.2f} s after its last "
          f"turn answered ({turns}), the client's connection gone {time.monotonic() - reset_at:.2f} s after")



#: The bounded gateway's SPEECH_GATEWAY_SEND_STALL_SECONDS.
STALL_SECONDS = 2.0
#: Seconds within which the gateway must have reset a client that sent everything and reads nothing, from its last
#: byte sent: its replies fill the buffers (a second or two), then :data:`STALL_SECONDS`. Before: the kernel's 61 s.
SENT_ALL_BOUND = 20.0
#: What a vosk stream sends: a config (a longer answer to each reset), a chunk of audio (the stream takes its decoder),
#: then resets, each answered with a final result at once.
CONFIG = json.dumps({"config": {"max_alternatives": 1}}).encode()


@pytest.fixture(scope="module")
def patient(registry: ModelRegistry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A recognizer with two decoders and the default ``AudioIdleSeconds`` (30 s): only the gateway cuts a client within
    the tests' bounds."""
    app = create_app(make_settings(tmp_path_factory.mktemp("patient"), "DecoderMaxCount=2"), registry)
    with ServerThread(app) as srv:
        yield Server(srv, app)


@pytest.fixture(scope="module")
def bounded(patient: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A gateway with ``SPEECH_GATEWAY_SEND_STALL_SECONDS`` :data:`STALL_SECONDS`, routing ko-KR to :func:`patient`."""
    config = GatewayConfig(host="127.0.0.1", port=0, send_stall_seconds=STALL_SECONDS)
    with Stack(tmp_path_factory.mktemp("gateway-bounded"), config) as stack:
        stack.create(speech_to_text("ko-kr", "ko-KR", patient.srv.port))
        stack.serving("ko-KR")
        yield stack


def connections(stack: Stack) -> float:
    """``speech_gateway_connections``: client connections open now (the scrape's own among them)."""
    text = httpx.get(f"http://127.0.0.1:{stack.port}/metrics", timeout=10).text
    return next(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == "speech_gateway_connections")


def vosk_stream(resets: int, pcm: bytes) -> list[bytes]:
    """:data:`CONFIG`, a chunk of ``pcm``, ``resets`` resets and the end of stream, as a vosk client's messages."""
    return [CONFIG, pcm[:CHUNK], *[b'{"reset" : 1}'] * resets, b'{"eof" : 1}']


def test_a_client_that_sent_everything_and_reads_nothing_is_reset_after_send_stall_seconds(
        bounded: Stack, patient: Server, speech_wav: Path, speech_ref: Reference) -> None:
    """A /vosk client sends its whole stream, 5000 resets, and reads nothing: the gateway's sends to it stall once the
    replies fill the buffers, and neither direction of the relay reads the recognizer any more. Its connection is reset
    within :data:`SENT_ALL_BOUND` (before: the kernel's 61 s), counted once as ``not_reading``, the gateway's connection
    count back down and the recognizer's decoder given back; a client beside it gets every result."""
    before, open_before = failures(bounded), connections(bounded)
    pcm = read_wav(speech_wav)[0]
    sock, protocol = deaf_websocket(bounded.port, "/vosk?language=ko-KR")
    port = sock.getsockname()[1]
    for message in vosk_stream(5000, pcm):
        protocol.send_text(message) if message.startswith(b"{") else protocol.send_binary(message)
    with sock, ThreadPoolExecutor(1) as pool:
        sock.settimeout(10)
        sock.sendall(b"".join(protocol.data_to_send()))  # all of it: the gateway reads it all, nothing is held back
        sent = time.monotonic()
        reader = pool.submit(vosk_words, f"ws://127.0.0.1:{bounded.port}", pcm)  # a client that reads, meanwhile
        while side := gateway_side(bounded, port):
            took = time.monotonic() - sent
            assert took < SENT_ALL_BOUND, f"the gateway's end of the connection of a client that reads nothing still {side} {took:.1f} s on"
            time.sleep(0.05)
        took = time.monotonic() - sent
        assert reader.result(timeout=60) == speech_ref.texts
    after = failures(bounded)
    assert after.get("not_reading", 0) == before.get("not_reading", 0) + 1, after
    assert after.get("backend_lost", 0) == before.get("backend_lost", 0), after
    Stack.eventually(lambda: connections(bounded) == open_before, 10, "the gateway's connections back down")
    Stack.eventually(lambda: patient.active == 0, 10, "the recognizer's decoder given back")
    print(f"reset {took:.2f} s after it had sent everything")


def test_a_slow_reader_is_never_cut(bounded: Stack, speech_wav: Path) -> None:
    """A /vosk client that reads a little at a time (a 4 KiB receive buffer, read every 0.25 s: tens of KB a second,
    where the recognizer answers hundreds): the gateway's sends to it wait again and again, longer than
    :data:`STALL_SECONDS` in all, but it takes some in between two looks; it gets every reply and the close."""
    before = failures(bounded)
    resets = 3000
    sock, protocol = deaf_websocket(bounded.port, "/vosk?language=ko-KR")
    for message in vosk_stream(resets, read_wav(speech_wav)[0]):
        protocol.send_text(message) if message.startswith(b"{") else protocol.send_binary(message)
    replies, received, closed = 0, 0, None
    with sock:
        send_all(sock, [b"".join(protocol.data_to_send())])
        started = time.monotonic()
        sock.settimeout(10)
        while closed is None and (data := sock.recv(1 << 16)):
            received += len(data)
            protocol.receive_data(data)
            for frame in protocol.events_received():  # the handshake's answer first
                if isinstance(frame, Frame):
                    replies += frame.opcode is Opcode.TEXT
                    closed = Close.parse(frame.data) if frame.opcode is Opcode.CLOSE else closed
            time.sleep(0.25)
        took = time.monotonic() - started
    assert closed is not None and closed.code == 1000, (closed, replies)
    assert replies >= resets + 1, "a final result for each reset, and the stream's last"
    assert took > 2 * STALL_SECONDS, f"{received} bytes read in {took:.1f} s: fast enough that the gateway's sends never waited long"
    assert failures(bounded).get("not_reading", 0) == before.get("not_reading", 0)
    print(f"{received} bytes of {replies} replies read in {took:.1f} s")


#: Resets a client that reads nothing sends before its end of stream: their replies (tens of KB) wait unsent for it
#: without holding the gateway's sends back (they fit in its buffers), so that its recognizer answers them all and
#: ends the stream.
FEW_RESETS = 300
#: Seconds within which the gateway's end of such a client's connection must be gone once its recognizer ended the
#: stream: the close's reply awaited (CLOSE_REPLY_SECONDS), then :data:`STALL_SECONDS` of nothing taken in, and room
#: for a loaded machine. Before: until the kernel gave it up, 60 s.
CLOSED_BOUND = CLOSE_REPLY_SECONDS + STALL_SECONDS + 2.0


def vosk_ended(recognizer: Server) -> float:
    """/vosk streams ``recognizer`` has ended (``speech_requests_total``, any outcome)."""
    return sum(value for (name, labels), value in scrape_metrics(recognizer.srv.http).items()
               if name == "speech_requests_total" and any(k == "route" and "vosk" in v for k, v in labels))


def test_a_client_that_reads_nothing_is_reset_once_its_stream_closed(bounded: Stack, patient: Server, speech_wav: Path) -> None:
    """A /vosk client sends its whole stream, :data:`FEW_RESETS` resets and its end, and reads nothing: the recognizer
    answers it all and closes the stream (1000), the replies waiting unsent for the client, the gateway's close after
    them. Its connection is reset within :data:`CLOSED_BOUND` of the recognizer's close, and its decoder given back; the
    reset is counted once (``not_reading``), under the stream's locale (the relay tells the guard whom to tell).
    Before: the gateway's FIN waited behind the bytes it never took in, the connection open until the kernel gave it up;
    then (a215b7a) its reset was counted under locale ``-``."""
    ended, counted = vosk_ended(patient), failures(bounded, "ko-KR").get("not_reading", 0)
    sock, protocol = deaf_websocket(bounded.port, "/vosk?language=ko-KR")
    port = sock.getsockname()[1]
    for message in vosk_stream(FEW_RESETS, read_wav(speech_wav)[0]):
        protocol.send_text(message) if message.startswith(b"{") else protocol.send_binary(message)
    with sock:
        sock.settimeout(10)
        sock.sendall(b"".join(protocol.data_to_send()))
        Stack.eventually(lambda: vosk_ended(patient) > ended, 60, "the recognizer ended the stream")
        closed = time.monotonic()
        unsent = int(gateway_side(bounded, port, 2) or 0)
        assert unsent > 0, "nothing waits unsent for the client: the close is not behind what it takes none of"
        while side := gateway_side(bounded, port):
            took = time.monotonic() - closed
            assert took < CLOSED_BOUND, f"the gateway's end of the connection still {side} {took:.1f} s after the recognizer's close"
            time.sleep(0.05)
        took = time.monotonic() - closed
    assert failures(bounded, "ko-KR").get("not_reading", 0) - counted == 1, "the reset is counted once (not_reading), under ko-KR"
    print(f"{unsent} bytes unsent at the recognizer's close; the connection gone {took:.2f} s after it")


def test_a_slow_reader_gets_every_reply_and_the_close_once_its_stream_closed(bounded: Stack, patient: Server,
                                                                            speech_wav: Path) -> None:
    """A /vosk client that reads 2 KiB every 0.25 s sends its whole stream, 1500 resets and its end: the recognizer
    closes the stream (1000) while the client still has more of its replies to take in than it takes in
    :data:`CLOSED_BOUND`. It is not cut: it gets every reply, then the close."""
    ended, resets = vosk_ended(patient), 1500
    sock, protocol = deaf_websocket(bounded.port, "/vosk?language=ko-KR")
    for message in vosk_stream(resets, read_wav(speech_wav)[0]):
        protocol.send_text(message) if message.startswith(b"{") else protocol.send_binary(message)
    replies, closed, closed_at = 0, None, None
    with sock:
        send_all(sock, [b"".join(protocol.data_to_send())])
        sock.settimeout(10)
        while closed is None and (data := sock.recv(2048)):
            protocol.receive_data(data)
            for frame in protocol.events_received():
                if isinstance(frame, Frame):
                    replies += frame.opcode is Opcode.TEXT
                    closed = Close.parse(frame.data) if frame.opcode is Opcode.CLOSE else closed
            if closed_at is None and vosk_ended(patient) > ended:
                closed_at = time.monotonic()
            time.sleep(0.25)
        read_on = time.monotonic() - closed_at if closed_at is not None else 0.0
    assert closed is not None and closed.code == 1000, (closed, replies)
    assert replies >= resets + 1, "a final result for each reset, and the stream's last"
    assert read_on > CLOSED_BOUND, f"the client read its last replies {read_on:.1f} s after the recognizer's close: too soon to show anything"
    print(f"{replies} replies and the close read, the last {read_on:.1f} s after the recognizer's close")
