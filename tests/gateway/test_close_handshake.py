"""A relayed WebSocket the gateway closes itself (its stop: idle 1000, out of time 1001; a recognizer lost: 1011) ends
with a close handshake on the client's side (RFC 6455 5.5.1): the close frame, the client's close reply read, then
the end of the TCP connection; a client that never replies is cut after
:data:`~speech_operator.gateway_shutdown.CLOSE_REPLY_SECONDS`, and the stop stays within its bound. At the stop, a client
that takes in nothing is reset once that bound passed, and a recognizer that never answers the gateway's close holds the
stop no longer than it.

The client is the ``websockets`` library's own protocol (Sans-I/O) over a socket of the test's, so that its close reply
goes out when the test says: a gateway that ends the connection before it (the same millisecond as its close frame,
as aiohttp's ``close`` of a socket another task reads does) is seen to. A recognizer's close passed on is
tests/gateway/test_jssdk_refusals.py's (the JavaScript SDK then reported the close to no one); the client's close
passed on to the recognizer already was a handshake (aiohttp's client reads the recognizer's reply).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.sync.client import connect
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from speech_operator.gateway import GATEWAY
from speech_operator.gateway_http_limits import HeadLimits
from speech_operator.gateway_relay import CLOSING_POLL_SECONDS
from speech_operator.gateway_shutdown import (
    AFTER_DRAIN_SECONDS,
    CLOSE_REPLY_SECONDS,
    IDLE_REASON,
    SETTLE_SECONDS,
    STOPPED_DRAINED,
    STOPPED_MIDSTREAM,
    Shutdown,
)
from speech_recognizer.serving import DEAD_PEER_SECONDS
from tests.recognizer.test_not_reading import deaf_websocket
from tests.support import Starved, TcpServerThread, read_wav

from .conftest import Recognizer, Stack, start_recognizer
from .test_not_reading import FEW_RESETS, failures, gateway_side, vosk_stream
from .test_shutdown import PROMPT, asleep_stack, close_of, gateway, ko  # noqa: F401 - ko: the fixture

#: The gateway's shutdown_seconds in the tests of a stream still going at the deadline.
DEADLINE_SECONDS = 2
#: How long a client holds its close reply before it looks whether the gateway ended the connection meanwhile: well
#: under CLOSE_REPLY_SECONDS (the gateway's close and the end of its connection came in the same millisecond).
HELD = 0.3
#: Within how long of the client's close reply its connection must end: well under CLOSE_REPLY_SECONDS - HELD (the end of a
#: connection whose reply went unread).
PROMPTLY = 0.3
SILENCE = b"\0" * 3200  # 100 ms at 16 kHz
#: Within how long of its close a client whose recognizer takes nothing in gets its close reply and its connection ends:
#: the relay's look at a send that waits (CLOSING_POLL_SECONDS after it began), its close to the recognizer given up
#: (CLOSE_REPLY_SECONDS), and some.
CLOSE_PROMPTLY = CLOSING_POLL_SECONDS + CLOSE_REPLY_SECONDS + 1


class HeldReply:
    """A WebSocket client whose close reply waits for the test (:meth:`reply`) once the server closed."""

    def __init__(self, url: str, subprotocols: Sequence[Subprotocol] | None = None) -> None:
        uri = parse_uri(url)
        self.protocol = ClientProtocol(uri, subprotocols=subprotocols)
        self.sock = socket.create_connection((uri.host, uri.port), timeout=10)
        self.protocol.send_request(self.protocol.connect())
        self._flush()
        while self.protocol.state is State.CONNECTING:
            self._receive(10)
        # CLOSING: a refusal's close came with the 101 (its reply held as any other)
        assert self.protocol.handshake_exc is None and self.protocol.state in (State.OPEN, State.CLOSING), self.protocol.handshake_exc

    def _flush(self) -> None:
        for data in self.protocol.data_to_send():
            if data:  # b"": its own end of the connection, which a client leaves to the server
                self.sock.sendall(data)

    def _receive(self, timeout: float) -> None:
        self.sock.settimeout(timeout)
        data = self.sock.recv(65536)
        if data:
            self.protocol.receive_data(data)
        else:
            self.protocol.receive_eof()
        for event in self.protocol.events_received():
            assert not isinstance(event, Response) or event.status_code == 101, event

    def send(self, data: bytes | str) -> None:
        self.protocol.send_text(data.encode()) if isinstance(data, str) else self.protocol.send_binary(data)
        self._flush()

    def closed(self, timeout: float, sending: bytes | None = None) -> tuple[Close, float]:
        """The server's close and when it came (``sending``: sent every 100 ms meanwhile, as a stream's audio); what
        came before it is read (pongs answered), its reply is held."""
        deadline = time.monotonic() + timeout
        while self.protocol.close_rcvd is None:
            assert time.monotonic() < deadline, f"no close within {timeout} s"
            assert self.protocol.state is State.OPEN, "the connection ended without a close frame"
            if sending is not None:
                self.send(sending)
            try:
                self._receive(0.1 if sending is not None else deadline - time.monotonic())
            except TimeoutError:
                continue
            if self.protocol.close_rcvd is None:
                self._flush()
        return self.protocol.close_rcvd, time.monotonic()

    def ended(self, within: float) -> str | None:
        """How the server ended the connection within ``within`` seconds: ``fin``, ``reset``; None: it did not."""
        self.sock.settimeout(within)
        try:
            while self.sock.recv(65536):
                pass  # nothing comes after a close; whatever did is not the end
        except TimeoutError:
            return None
        except ConnectionResetError:
            return "reset"
        return "fin"

    def handshake(self) -> float:
        """Check that the connection is still open a while after the server's close (:data:`HELD`), then send the close
        reply held: the connection must end, with a FIN, within :data:`PROMPTLY`; the seconds that took."""
        assert self.ended(HELD) is None, "the gateway ended the connection before the client's close reply"
        self._flush()
        replied = time.monotonic()
        assert self.ended(CLOSE_REPLY_SECONDS + 3) == "fin"
        took = time.monotonic() - replied
        assert took < PROMPTLY, f"the connection ended {took:.2f} s after the close reply: it was not read"
        return took

    def __enter__(self) -> HeldReply:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


def streaming(url: str) -> HeldReply:
    """A /vosk client at ``url`` (ws://host:port) that sent its config."""
    client = HeldReply(f"{url}/vosk?language=ko-KR")
    client.send(json.dumps({"config": {"sample_rate": 16000}}))
    return client


@pytest.mark.parametrize("replies", [True, False], ids=["replies", "never-replies"])
@pytest.mark.parametrize("stopped", ["idle", "at-the-deadline"])
def test_a_websocket_the_gateways_stop_closes_gets_a_close_handshake(ko: Recognizer,  # noqa: F811 - the fixture imported
                                                                    tmp_path: Path, stopped: str, replies: bool) -> None:
    """An idle /vosk connection (closed 1000 at the stop) and a stream still going at ``shutdown_seconds`` (1001): the
    client gets the close, and its connection ends only once its close reply came (at once then), or, never sent, after
    CLOSE_REPLY_SECONDS; the stop within its bounds either way. Before: the connection ended with the close (the same
    millisecond), the reply met a closed socket."""
    seconds = DEADLINE_SECONDS if stopped == "at-the-deadline" else 30
    stack = gateway(tmp_path / "gateway", ko, shutdown_seconds=seconds)
    try:
        with streaming(stack.ws) as client:
            if stopped == "idle":
                time.sleep(0.2)  # the config has passed the gateway
            else:
                client.send(SILENCE)  # a stream in progress
            stopping = time.monotonic()
            stack.stop()
            close, at = client.closed(PROMPT + seconds, sending=SILENCE if stopped != "idle" else None)
            expected = (1000, IDLE_REASON) if stopped == "idle" else (STOPPED_MIDSTREAM.kind.close, STOPPED_MIDSTREAM.message)
            assert (close.code, close.reason) == expected
            if replies:
                took = client.handshake()
                print(f"\n{stopped}: closed {at - stopping:.2f} s after the stop began; the connection ended {took:.3f} s "
                      "after the close reply")
            else:
                assert client.ended(CLOSE_REPLY_SECONDS + 5) is not None, "the connection did not end"
                waited = time.monotonic() - at
                assert CLOSE_REPLY_SECONDS - 0.2 < waited < CLOSE_REPLY_SECONDS + 1.5, f"cut {waited:.2f} s after its close"
                print(f"\n{stopped}: a client that never replied was cut {waited:.2f} s after its close")
    finally:
        stack.__exit__()
    bound = PROMPT if stopped == "idle" else seconds + AFTER_DRAIN_SECONDS + 0.5
    assert stack.stopped_in is not None and stack.stopped_in < bound, f"the gateway took {stack.stopped_in:.1f} s to stop"


def test_a_client_whose_recognizer_is_lost_gets_a_close_handshake(tmp_path: Path) -> None:
    """The recognizer's process killed mid-stream: the client gets the gateway's 1011 and its reason, and its connection
    ends once its close reply came. Before: with the close (the same millisecond)."""
    recognizer = start_recognizer(tmp_path, "ko-KR")
    try:
        recognizer.wait_ready()
        stack = gateway(tmp_path / "gateway", recognizer)
        try:
            with streaming(stack.ws) as client:
                client.send(SILENCE)
                recognizer.kill()
                close, _ = client.closed(10, sending=SILENCE)
                assert close.code == 1011 and close.reason.startswith("the recognizer of ko-KR"), close
                client.handshake()
        finally:
            stack.__exit__()
    finally:
        recognizer.kill()


#: A connection the gateway refuses (fr-CA: no SpeechToText serves it), on each WebSocket route: URL path, subprotocols.
REFUSED = {"usp": ("/speech/recognition/conversation/cognitiveservices/v1?language=fr-CA", [Subprotocol("USP")]),
           "vosk": ("/vosk?language=fr-CA", None)}


@pytest.mark.parametrize("route", list(REFUSED))
def test_a_websocket_the_gateway_refuses_gets_a_close_handshake_at_the_stop(tmp_path: Path, route: str,
                                                                            caplog: pytest.LogCaptureFixture) -> None:
    """A WebSocket the gateway refuses (a language no SpeechToText serves) when it stops: on the Speech SDK's route one
    still read for its request, closed (1007, the reason) at the stop; on /vosk one closed at once, its close reply not
    come yet. Either connection ends once its close reply came, and the gateway at once; the stop's log line counts the
    refusal it waits for. Before: the drain did not wait for such a close's reply (the Speech SDK's: only until none was
    read for its request; /vosk's: not at all), which aiohttp's shutdown then dropped: the connection ended when that
    shutdown cut it; the log line counted only the refusals read for their request (/vosk's: 0)."""
    caplog.set_level(logging.INFO, logger="speech_operator.gateway")
    stack = asleep_stack(tmp_path / "gateway", 30)
    path, subprotocols = REFUSED[route]
    try:
        with HeldReply(f"{stack.ws}{path}", subprotocols) as client:
            if route == "usp":
                assert stack.app is not None
                refusals = stack.app[GATEWAY].refusals
                stack.eventually(lambda: refusals.reading == 1, 10, "its refusal reads for its request")
                stopping = time.monotonic()
                stack.stop()
                close, at = client.closed(PROMPT)
            else:
                close, at = client.closed(PROMPT)
                stopping = time.monotonic()
                stack.stop()
            assert close.code == 1007 and "fr-CA" in close.reason, close
            took = client.handshake()
            print(f"\n{route} refused: closed {at - stopping:+.3f} s after the stop began; the connection ended {took:.3f} s "
                  "after the close reply")
    finally:
        stack.__exit__()
    assert stack.stopped_in is not None and stack.stopped_in < PROMPT, f"the gateway took {stack.stopped_in:.1f} s to stop"
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("gateway stopping:")]
    counted = [int(m[1]) for line in said if (m := re.search(r"(\d+) refused", line))]
    assert counted == [1], said


#: Resets a client that takes in nothing sends on its /vosk stream: each answered at once, their replies fill the
#: buffers on the way back.
RESETS = 5000


def test_a_client_that_takes_in_nothing_is_reset_at_the_stop(ko: Recognizer, tmp_path: Path,  # noqa: F811 - the fixture imported
                                                             speech_wav: Path) -> None:
    """A /vosk stream whose client reads nothing (its window shut behind the replies to its resets) when
    ``shutdown_seconds`` run out, the gateway's own bound on such a client (``SPEECH_GATEWAY_SEND_STALL_SECONDS``) the
    longest: its close 1001 cannot reach it, and its connection is reset once CLOSE_REPLY_SECONDS passed, gone from the
    gateway's side by the end of the stop. Before: its FIN waited behind the bytes it did not take in, the connection
    established for 60 s after the stop (until the kernel gave it up)."""
    stack = gateway(tmp_path / "gateway", ko, shutdown_seconds=DEADLINE_SECONDS, send_stall_seconds=DEAD_PEER_SECONDS)
    try:
        sock, protocol = deaf_websocket(stack.port, "/vosk?language=ko-KR")
        with sock:
            for message in vosk_stream(RESETS, read_wav(speech_wav)[0])[:-1]:  # no eof: the stream goes on
                protocol.send_text(message) if message.startswith(b"{") else protocol.send_binary(message)
            sock.settimeout(10)
            sock.sendall(b"".join(protocol.data_to_send()))
            port = sock.getsockname()[1]
            stack.eventually(lambda: int(gateway_side(stack, port, 2) or 0) > 0, 30, "bytes wait unsent for the client")
            stopping = time.monotonic()
            stack.stop()
            stack.join()
            stopped = time.monotonic() - stopping
            bound = DEADLINE_SECONDS + AFTER_DRAIN_SECONDS + 0.5
            while side := gateway_side(stack, port):
                assert time.monotonic() - stopping < bound, f"the gateway's end of the connection still {side}, " \
                    f"{time.monotonic() - stopping:.1f} s after the stop began (the gateway stopped in {stopped:.2f} s)"
                time.sleep(0.05)
            gone = time.monotonic() - stopping
    finally:
        stack.__exit__()
    assert stack.stopped_in is not None and stack.stopped_in < DEADLINE_SECONDS + AFTER_DRAIN_SECONDS + 0.5, stack.stopped_in
    # the stream cut (gateway_stopped), its close reset at the stop's end: one failure of the stream, counted once
    assert stopped_failures(stack) == {("gateway_stopped", "ko-KR"): 1}
    print(f"\nthe gateway stopped in {stack.stopped_in:.2f} s, its end of the connection gone {gone:.2f} s after the stop began")


def stopped_failures(stack: Stack) -> dict[tuple[str, str], float]:
    """A stopped gateway's ``speech_gateway_failures_total`` by (reason, locale), those not 0: its exposition read in
    this process (its /metrics no longer answers)."""
    assert stack.app is not None
    text = stack.app[GATEWAY].metrics.exposition().decode()
    return {(s.labels["reason"], s.labels["locale"]): s.value for family in text_string_to_metric_families(text)
            for s in family.samples if s.name == "speech_gateway_failures_total" and s.value}


def test_a_client_still_closing_when_the_stop_ends_is_counted(ko: Recognizer, tmp_path: Path) -> None:  # noqa: F811 - the fixture imported
    """A /vosk connection with no audio (idle: closed 1000 as the stop begins) whose client reads nothing, the replies
    to :data:`~tests.gateway.test_not_reading.FEW_RESETS` resets waiting unsent for it: its close waits behind them,
    and the gateway's bound on a client that takes in nothing (``SPEECH_GATEWAY_SEND_STALL_SECONDS``, 60 s here) outlasts
    the stop (4 s). The stop's end resets the connection, and that is counted once, a failure of its stream:
    ``speech_gateway_failures_total{reason="gateway_stopped",locale="ko-KR"}`` (its client got neither its last replies
    nor the close). Before: one DEBUG line, counted nowhere."""
    stack = gateway(tmp_path / "gateway", ko, shutdown_seconds=SETTLE_SECONDS + 2, send_stall_seconds=DEAD_PEER_SECONDS)
    try:
        sock, protocol = deaf_websocket(stack.port, "/vosk?language=ko-KR")
        with sock:
            for message in [json.dumps({"config": {"max_alternatives": 1}}).encode(), *[b'{"reset" : 1}'] * FEW_RESETS]:
                protocol.send_text(message)
            sock.settimeout(10)
            sock.sendall(b"".join(protocol.data_to_send()))
            port = sock.getsockname()[1]
            stack.eventually(lambda: int(gateway_side(stack, port, 2) or 0) > 0, 30, "replies wait unsent for the client")
            time.sleep(SETTLE_SECONDS)  # idle and quiet: closed 1000 as soon as the stop begins
            stack.stop()
            stack.join()
            side = gateway_side(stack, port)
    finally:
        stack.__exit__()
    assert not side, f"the gateway's end of the connection still {side} once it stopped"
    assert stack.app is not None
    text = stack.app[GATEWAY].metrics.exposition().decode()
    assert 'speech_gateway_requests_total{code="1000",locale="ko-KR",route="vosk"} 1.0' in text, "closed idle, 1000"
    assert stopped_failures(stack) == {("gateway_stopped", "ko-KR"): 1}


class Mute(TcpServerThread):
    """A stand-in recognizer that accepts a WebSocket, then reads what comes and answers nothing, a close neither."""

    def __init__(self) -> None:
        self.port = 0

    async def relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await self.accept(reader, writer):
            while await reader.read(65536):
                pass

    @staticmethod
    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Answer the WebSocket upgrade with 101; False if the connection ended before it."""
        protocol = ServerProtocol()
        while not (events := protocol.events_received()):
            if not (data := await reader.read(65536)):
                return False
            protocol.receive_data(data)
        protocol.send_response(protocol.accept(events[0]))  # type: ignore[arg-type]
        writer.write(b"".join(protocol.data_to_send()))
        return True


def test_a_recognizer_that_never_answers_its_close_holds_the_stop_no_longer_than_close_reply_seconds(tmp_path: Path) -> None:
    """An idle /vosk connection closed at the stop, its recognizer never answering the gateway's close: the gateway
    waits CLOSE_REPLY_SECONDS for that reply, as for a client's, and stops then. Before: aiohttp's 10 s."""
    with Mute() as mute:
        stack = gateway(tmp_path / "gateway", mute)
        try:
            with connect(f"{stack.ws}/vosk?language=ko-KR", open_timeout=10) as ws:
                time.sleep(SETTLE_SECONDS)  # idle and quiet: closed as soon as the stop begins
                stack.stop()
                code, reason, _ = close_of(ws)
            stack.join()
        finally:
            stack.__exit__()
    assert (code, reason) == (1000, IDLE_REASON)
    assert stack.stopped_in is not None and stack.stopped_in < CLOSE_REPLY_SECONDS + 1.5, f"the gateway took {stack.stopped_in:.1f} s to stop"
    print(f"\nthe gateway stopped in {stack.stopped_in:.2f} s")


class Deaf(Mute):
    """A stand-in recognizer that accepts a WebSocket, then reads nothing (its receive buffer at its least from the
    connection's start, its window so too; its event loop no longer reading the connection)."""

    def __enter__(self) -> Deaf:
        super().__enter__()
        self.server.sockets[0].setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the connections accepted inherit it
        #: What each connection waits on until the server stops: the server's, so that the garbage collector does not end
        #: the task that waits (Python 3.11's start_server keeps none; its transport, no longer read, neither).
        self.forever = asyncio.Event()
        return self

    async def relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await self.accept(reader, writer):
            writer.transport.pause_reading()  # type: ignore[attr-defined]
            await self.forever.wait()


#: A message more than the gateway's connection to a recognizer taking nothing in holds (its kernel's buffers and the
#: relay's are SPEECH_GATEWAY_READ_BUFFER_BYTES each): its send waits.
STUCK_MESSAGE = b"\0" * (1024 * 1024)


@contextlib.contextmanager
def stuck_stream(tmp: Path) -> Iterator[HeldReply]:
    """A /vosk client of a gateway (at ``tmp``) whose recognizer reads nothing (:class:`Deaf`), that sent its config and
    :data:`STUCK_MESSAGE`: the relay's send of it waits. The gateway stops within :data:`DEADLINE_SECONDS`: its close of
    the recognizer's side waits SPEECH_GATEWAY_SEND_STALL_SECONDS for a recognizer that takes in nothing."""
    with Deaf() as deaf:
        stack = gateway(tmp, deaf, send_stall_seconds=30, max_message_bytes=len(STUCK_MESSAGE), shutdown_seconds=DEADLINE_SECONDS)
        try:
            with HeldReply(f"{stack.ws}/vosk?language=ko-KR") as client:
                client.send(json.dumps({"config": {"sample_rate": 16000}}))
                client.send(STUCK_MESSAGE)
                yield client
        finally:
            stack.__exit__()


@contextlib.contextmanager
def relayed_stream(tmp: Path, recognizer: Any, send_stall_seconds: float = 30,
                   shutdown_seconds: float = 30) -> Iterator[tuple[Stack, HeldReply, Callable[[], dict[str, float]]]]:
    """A gateway (at ``tmp``, stopping within ``shutdown_seconds``) relaying messages up to :data:`STUCK_MESSAGE`'s size
    to a stand-in ``recognizer``, a /vosk client of it that sent its config, and what the gateway has counted under ko-KR
    since (a call: kind -> count)."""
    stack = gateway(tmp, recognizer, send_stall_seconds=send_stall_seconds, max_message_bytes=len(STUCK_MESSAGE),
                    shutdown_seconds=shutdown_seconds)
    try:
        before = failures(stack, "ko-KR")

        def counted() -> dict[str, float]:
            after = failures(stack, "ko-KR")
            return {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}

        with HeldReply(f"{stack.ws}/vosk?language=ko-KR") as client:
            client.send(json.dumps({"config": {"sample_rate": 16000}}))
            yield stack, client, counted
    finally:
        stack.__exit__()


def test_a_client_closing_while_its_recognizer_takes_nothing_in_gets_its_close_reply(tmp_path: Path) -> None:
    """A /vosk client sends more than its recognizer, which reads nothing, can be sent, one more message and its close,
    all at once, then waits for its close reply: it comes, and the connection ends, within CLOSING_POLL_SECONDS and
    CLOSE_REPLY_SECONDS (the relay's close to the recognizer given up), not held until the recognizer reads; the stream
    is closed with the client's code. Before: no reply until the recognizer read (never), the connection held under the
    cap."""
    with stuck_stream(tmp_path / "gateway") as client:
        client.send(SILENCE)
        came, ended = close_answered(client)
    assert ended < CLOSE_PROMPTLY, ended
    print(f"\nthe close reply came {came:.2f} s after the client's close, the connection ended {ended:.2f} s after")


def close_answered(client: HeldReply) -> tuple[float, float]:
    """Send ``client``'s close (1000 ``done``) and wait for the reply: it must come within :data:`CLOSE_PROMPTLY` with
    the client's code and reason, and the connection end with a FIN; the seconds from the close to the reply, and to
    the connection's end."""
    client.protocol.send_close(1000, "done")
    client._flush()
    closing = time.monotonic()
    with contextlib.suppress(TimeoutError):
        while client.protocol.close_rcvd is None and time.monotonic() - closing < CLOSE_PROMPTLY:
            client._receive(CLOSE_PROMPTLY)
    came = time.monotonic() - closing
    assert client.protocol.close_rcvd is not None, f"no close reply within {came:.1f} s"
    assert (client.protocol.close_rcvd.code, client.protocol.close_rcvd.reason) == (1000, "done")
    assert client.ended(CLOSE_PROMPTLY) == "fin"
    return came, time.monotonic() - closing


def test_a_client_ending_its_connection_while_its_recognizer_takes_nothing_in_is_let_go(tmp_path: Path) -> None:
    """A /vosk client sends more than its recognizer, which reads nothing, can be sent, then another message over what
    the gateway reads ahead (SPEECH_GATEWAY_READ_BUFFER_BYTES: it reads no more of the connection) and its end of stream
    (a FIN, unread behind it): its connection ends within :data:`CLOSE_PROMPTLY`, the stream closed 1001. Before: held
    until the recognizer read, its place under the cap kept."""
    with stuck_stream(tmp_path / "gateway") as client:
        client.send(STUCK_MESSAGE)
        client.sock.shutdown(socket.SHUT_WR)
        closing = time.monotonic()
        how = client.ended(CLOSE_PROMPTLY)
        ended = time.monotonic() - closing
    assert how is not None, f"the connection was still open {ended:.1f} s after the client's end of stream"
    print(f"\nthe connection ended ({how}) {ended:.2f} s after the client's end of stream")


class Slow:
    """A stand-in recognizer that accepts WebSockets, then takes in 2 KiB of each every 0.2 s (its receive buffer at its
    least): it reads on, slower than its client sends. ``taken``: the bytes it has read after the upgrades."""

    def __enter__(self) -> Slow:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the connections accepted inherit it
        self.port = self.listener.getsockname()[1]
        self.taken = 0
        self.stopping = threading.Event()
        threading.Thread(target=self._accept, daemon=True, name="slow").start()
        return self

    def _accept(self) -> None:
        with contextlib.suppress(OSError):  # the listener closed
            while True:
                conn, _ = self.listener.accept()
                threading.Thread(target=self._read, args=(conn,), daemon=True, name="slow-connection").start()

    def _read(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            protocol = ServerProtocol()
            while not (events := protocol.events_received()):
                if not (data := conn.recv(65536)):
                    return
                protocol.receive_data(data)
            protocol.send_response(protocol.accept(events[0]))  # type: ignore[arg-type]
            conn.sendall(b"".join(protocol.data_to_send()))
            while not self.stopping.is_set() and (data := conn.recv(2048)):
                self.taken += len(data)
                time.sleep(0.2)

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.listener.close()


#: SPEECH_GATEWAY_SEND_STALL_SECONDS in :func:`test_a_client_closing_while_its_slow_recognizer_reads_on_gets_its_close_reply`:
#: how long past the client's close its recognizer, still taking the stream in, may take to have it all.
SLOW_BOUND = 2


def test_a_client_closing_while_its_slow_recognizer_reads_on_gets_its_close_reply(tmp_path: Path) -> None:
    """A /vosk client sends its recognizer, which takes in 2 KiB every 0.2 s (:class:`Slow`: it reads on, never stops),
    a message more than the relay holds (1 MiB: its send waits), then its close: the close reply comes, and the
    connection ends, within :data:`CLOSE_PROMPTLY` with the client's code, and the recognizer's side ends too, once
    SPEECH_GATEWAY_SEND_STALL_SECONDS (:data:`SLOW_BOUND`) passed with the recognizer still taking the stream in (reset:
    the rest of the message unsent, not minutes at its pace), counted ``backend_not_reading`` (it decodes slower than
    the audio came). What the client sent before its close is dropped, as a recognizer drops the audio it read
    ahead of a client's close: a client that closed takes no more results (gateway_relay._while_sends_wait says why)."""
    with Slow() as slow, relayed_stream(tmp_path / "gateway", slow, SLOW_BOUND) as (_, client, counted):
        client.send(STUCK_MESSAGE)
        taken = slow.taken
        time.sleep(1)  # the relay's send of it waits, the recognizer taking some in meanwhile
        came, _ = close_answered(client)
        reading = slow.taken - taken
        deadline = time.monotonic() + SLOW_BOUND + CLOSE_PROMPTLY
        while (state := upstream_side(slow.port)) and time.monotonic() < deadline:
            time.sleep(0.05)
        count = counted()
    assert reading > 0, "the recognizer took in nothing from the message to the close reply: not a slow reader"
    assert slow.taken < len(STUCK_MESSAGE), "the recognizer had read the whole message: nothing was left to cut"
    assert not state, f"the gateway's end of its connection to the recognizer still {state} after the client's close"
    assert count == {"backend_not_reading": 1}, count
    print(f"\nthe close reply came {came:.2f} s after the client's close; the recognizer took in {reading} bytes from the message on")


class Steady:
    """A stand-in recognizer that accepts WebSockets, then takes in 16 KiB of each every 0.1 s (its receive buffer 16 KiB),
    as a recognizer whose read-ahead is full takes in a stream's audio at its decoding's pace, and answers a close
    (the ``websockets`` library's own protocol). ``taken``: the bytes it has read after the upgrade; ``closed``: the
    close it got, once it got one."""

    #: Its receive buffer (what it asks the kernel for), and the seconds between two reads of what that holds.
    RECEIVE_BUFFER, PAUSE = 16384, 0.1
    #: Seconds between two of its replies while it takes nothing in (None: it sends none).
    REPLY_EVERY: float | None = None

    def __enter__(self) -> Steady:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.RECEIVE_BUFFER)  # the connections accepted inherit it
        self.port = self.listener.getsockname()[1]
        self.taken = 0
        self.closed: Close | None = None
        threading.Thread(target=self._accept, daemon=True, name="steady").start()
        return self

    def _accept(self) -> None:
        with contextlib.suppress(OSError):  # the listener closed
            conn, _ = self.listener.accept()
            with conn:
                protocol = ServerProtocol()
                while not (events := protocol.events_received()):
                    protocol.receive_data(conn.recv(65536))
                protocol.send_response(protocol.accept(events[0]))  # type: ignore[arg-type]
                conn.sendall(b"".join(protocol.data_to_send()))
                while data := conn.recv(2 * self.RECEIVE_BUFFER):  # Linux doubles what is asked
                    self.taken += len(data)
                    protocol.receive_data(data)
                    protocol.events_received()
                    if protocol.close_rcvd is not None and self.closed is None:
                        self.closed = protocol.close_rcvd
                        conn.sendall(b"".join(protocol.data_to_send()))
                    self._pause(conn, protocol)

    def _pause(self, conn: socket.socket, protocol: ServerProtocol) -> None:
        """Take nothing in for :attr:`PAUSE`, replying every :attr:`REPLY_EVERY` meanwhile."""
        until = time.monotonic() + self.PAUSE
        while (left := until - time.monotonic()) > 0:
            time.sleep(min(left, self.REPLY_EVERY or left))
            if self.REPLY_EVERY is not None and self.closed is None:
                protocol.send_text(b'{"partial" : ""}')
                conn.sendall(b"".join(protocol.data_to_send()))

    def __exit__(self, *exc: object) -> None:
        self.listener.close()


class Decoding(Steady):
    """A recognizer whose read-ahead is full as the real one takes a stream in (``python -m speech_recognizer``: uvicorn
    reads its socket again only once the messages of its last read, up to 256 KiB, have been handled): nothing for 1.5 s,
    then what its receive buffer holds (128 KiB), answering the chunks it decodes meanwhile (a partial every 0.25 s)."""

    RECEIVE_BUFFER, PAUSE, REPLY_EVERY = 65536, 1.5, 0.25


#: How long :class:`Quiet` takes in nothing and says nothing from the client's close on: more than CLOSE_REPLY_SECONDS.
QUIET_SECONDS = 2.5


class Quiet(Steady):
    """A recognizer busy decoding that says nothing (a real one on the Speech SDK's route in a long silence, loaded:
    uvicorn reads its socket again only once the messages of its last read have been handled, and a silence has no
    result to send): told (:meth:`hush`), it takes in nothing and sends nothing for a while, then takes the stream in
    as :class:`Steady` does."""

    #: Until when (``time.monotonic()``) it takes in nothing.
    until = 0.0

    def hush(self, seconds: float) -> None:
        """Take in nothing, and send nothing, for ``seconds`` from its next pause on."""
        self.until = time.monotonic() + seconds

    def _pause(self, conn: socket.socket, protocol: ServerProtocol) -> None:
        super()._pause(conn, protocol)
        while (left := self.until - time.monotonic()) > 0:
            time.sleep(left)


@pytest.mark.parametrize("busy", [Steady, Decoding, Quiet], ids=["steady", "decoding", "quiet"])
def test_a_client_closing_while_its_busy_recognizer_takes_in_its_stream_is_no_recognizers_failure(
        tmp_path: Path, busy: type[Steady]) -> None:
    """A /vosk client sends a message more than the relay holds (1 MiB: its send waits) to a recognizer busy decoding
    (:class:`Steady`: takes in 16 KiB every 0.1 s; :class:`Decoding`: nothing for 1.5 s, then 128 KiB, replying
    meanwhile; :class:`Quiet`: as Steady, but nothing taken in and nothing sent for :data:`QUIET_SECONDS` from the
    close on), then closes: the close reply comes within :data:`CLOSE_PROMPTLY`, and the gateway's close goes on to
    the recognizer behind the rest of the message (some seconds at its pace, within SPEECH_GATEWAY_SEND_STALL_SECONDS),
    and the connection ends; nothing is counted under ko-KR. Each gets the close, the client's code and reason, and
    answers it, Decoding too, whose last read comes more than CLOSE_REPLY_SECONDS after the rest of the stream left the
    gateway (its kernel holding it). Before: its connection was reset CLOSE_REPLY_SECONDS after the close, counted
    ``backend_not_reading`` (WARNING, SpeechGatewayFailing paging), though it was taking the stream in (Steady, before
    e99d968), or taking nothing in for a second while it answered what it decoded (Decoding, before 24a49d9), or taking
    nothing in and saying nothing for a second (Quiet); then Decoding's connection ended CLOSE_REPLY_SECONDS after
    nothing waited unsent to it, the close unread in its kernel: it never got it (the gateway's socket, holding its
    partials unread, reset the connection)."""
    with busy() as steady, relayed_stream(tmp_path / "gateway", steady) as (stack, client, counted):
        client.send(STUCK_MESSAGE)
        time.sleep(1)  # the relay's send of it waits, the recognizer taking some in meanwhile
        if isinstance(steady, Quiet):
            steady.hush(QUIET_SECONDS)
        close_answered(client)
        closing = time.monotonic()
        stack.eventually(lambda: steady.closed is not None or not upstream_side(steady.port), 30,
                         "the recognizer's close or the end of its connection")
        got = time.monotonic() - closing
        # the gateway's end closed after the handshake: gone, or waiting on the recognizer's end (FIN-WAIT-2) or in TIME-WAIT
        stack.eventually(lambda: upstream_side(steady.port) in ("", "FIN-WAIT-2", "TIME-WAIT"), 5,
                         "the end of the connection to the recognizer")
        count = counted()
    assert count == {}, f"{count} counted under ko-KR for a recognizer taking the stream in"
    assert steady.closed is not None and (steady.closed.code, steady.closed.reason) == (1000, "done"), (
        f"the recognizer got no close, {steady.taken} bytes taken in")
    print(f"\nthe recognizer got the client's close or its connection ended {got:.1f} s after it, {steady.taken} bytes taken in")


def streams(stack: Stack) -> tuple[float, float]:
    """The gateway's ``speech_gateway_streams{route="vosk"}`` and ``speech_gateway_streams_closing{route="vosk"}``, read
    in this process (its registry: a look costs no request, which a loaded machine may delay by seconds)."""
    assert stack.app is not None
    registry = stack.app[GATEWAY].metrics.registry
    live, closing = (registry.get_sample_value(name, {"route": "vosk"}) or 0.0
                     for name in ("speech_gateway_streams", "speech_gateway_streams_closing"))
    return live, closing


#: Within how long of its client's end, not waiting for a CPU, a stream leaves ``speech_gateway_streams``: its relay's
#: close of the client and the look at the gauges, well under the bound on the recognizer's close reply (30 s).
LEFT_PROMPTLY = 2


def leave(client: HeldReply, how: str) -> None:
    """``client`` leaves: its close 1000 ``done``, answered at once (:func:`close_answered`), or a reset."""
    if how == "close":
        close_answered(client)
    else:
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.sock.close()


@pytest.mark.parametrize("leaves", ["close", "reset"])
def test_a_gone_clients_stream_is_no_longer_counted_live_while_its_recognizers_close_reply_is_awaited(
        tmp_path: Path, leaves: str) -> None:
    """A /vosk client streams to a recognizer that takes in all it is sent and answers nothing, a close neither
    (:class:`Mute`), then leaves: its close 1000 (answered at once) or a reset. Within :data:`LEFT_PROMPTLY`, not waiting
    for a CPU, the stream is no longer in ``speech_gateway_streams`` (which the dashboards and autoscaling read as live
    load) but in ``speech_gateway_streams_closing``, while the gateway awaits the recognizer's close reply (up to
    SPEECH_GATEWAY_SEND_STALL_SECONDS, 30 s). Before: the gone client's stream stayed in ``speech_gateway_streams`` all
    that time."""
    with Mute() as mute, relayed_stream(tmp_path / "gateway", mute) as (stack, client, _):
        client.send(SILENCE)
        stack.eventually(lambda: streams(stack) == (1, 0), 5, "the stream relayed")
        with Starved() as starved:
            leave(client, leaves)
            left = time.monotonic()
            stack.eventually(lambda: streams(stack) != (1, 0), 20, "the stream's gauge moved")
            moved, took = streams(stack), time.monotonic() - left
        quiet = starved.unstarved(left, left + took)
    assert moved == (0, 1) and quiet < LEFT_PROMPTLY, (f"streams, closing {moved} {quiet:.1f} s not waiting for a CPU "
                                                       f"({took:.1f} s of the clock) after the client left")
    print(f"\nthe stream left speech_gateway_streams within {took:.2f} s of its client's end ({quiet:.2f} s unstarved)")


#: SPEECH_GATEWAY_SEND_STALL_SECONDS in :func:`test_a_recognizer_that_never_answers_a_gone_clients_close_is_let_go_and_counted`.
REPLY_BOUND = 2


@pytest.mark.parametrize("leaves", ["close", "reset"])
def test_a_recognizer_that_never_answers_a_gone_clients_close_is_let_go_and_counted(
        tmp_path: Path, leaves: str, caplog: pytest.LogCaptureFixture) -> None:
    """As above, SPEECH_GATEWAY_SEND_STALL_SECONDS :data:`REPLY_BOUND`: once it passed with the gateway's close to the
    recognizer (stuck: its kernel takes what its process no longer reads) unanswered, the stream is let go, in neither
    gauge, and counted once, ``backend_close_unanswered`` of ko-KR (the failure table's: it pages), one WARNING line
    naming the recognizer. Before: one DEBUG line, counted nowhere: no one saw a stuck recognizer its clients all left."""
    caplog.set_level(logging.DEBUG, logger="speech_operator.gateway")
    with Mute() as mute, relayed_stream(tmp_path / "gateway", mute, REPLY_BOUND) as (stack, client, counted):
        client.send(SILENCE)
        stack.eventually(lambda: streams(stack) == (1, 0), 5, "the stream relayed")
        leave(client, leaves)
        stack.eventually(lambda: streams(stack) == (0, 0), REPLY_BOUND + 30, "the stream let go")
        count = counted()
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if "backend_close_unanswered" in r.getMessage()]
    assert count == {"backend_close_unanswered": 1}, f"{count} counted under ko-KR"
    assert len(lines) == 1 and lines[0][0] == "WARNING" and "the recognizer of ko-KR" in lines[0][1], lines


#: shutdown_seconds in :func:`test_a_stream_whose_audio_waits_on_its_busy_recognizer_at_the_stop_is_in_progress`: over
#: SETTLE_SECONDS and a second, when such a stream was taken for idle and closed.
BUSY_STOP_SECONDS = 4


def test_a_stream_whose_audio_waits_on_its_busy_recognizer_at_the_stop_is_in_progress(tmp_path: Path) -> None:
    """A /vosk client's first audio (a message more than the relay holds: its send waits) goes to a recognizer busy
    decoding (:class:`Quiet`, hushed: it takes in nothing and says nothing) when the gateway stops (shutdown_seconds
    :data:`BUSY_STOP_SECONDS`), the client streaming on: the stream is in progress, not idle. It goes on until the
    deadline, then its client gets close 1001 with the stop's reason (``STOPPED_MIDSTREAM``: connect again), counted
    once (``gateway_stopped`` of ko-KR). Before: audio counted only once its send ended, it was taken for idle and closed
    1000 "closed while idle" SETTLE_SECONDS after its config, 1 s into the stop, as if nothing were lost: its audio
    dropped (the recognizer's connection reset 1 s later, silent, as the stop's)."""
    with Quiet() as quiet, relayed_stream(tmp_path / "gateway", quiet, shutdown_seconds=BUSY_STOP_SECONDS) as (stack, client, _):
        client.send(STUCK_MESSAGE)
        time.sleep(0.5)  # the recognizer took some in, the rest waits
        quiet.hush(60)
        time.sleep(0.5)
        stopping = time.monotonic()
        stack.stop()
        close, when = client.closed(BUSY_STOP_SECONDS + PROMPT, sending=SILENCE)
        client._flush()
        stack.join()
    assert (close.code, close.reason) == (STOPPED_MIDSTREAM.kind.close, STOPPED_MIDSTREAM.message), (close, when - stopping)
    assert stopped_failures(stack) == {("gateway_stopped", "ko-KR"): 1}
    print(f"\nthe client got {close.code} {when - stopping:.2f} s into the stop")


def upstream_side(recognizer_port: int, column: int = 0) -> str:
    """A column of ``ss``' line for the gateway's end of its connection to the recognizer listening on
    ``recognizer_port``: its state (0), Recv-Q (1), Send-Q (2); "" once gone (or in TIME-WAIT).

    TIME-WAIT lines are left out: ``ss`` lists the whole machine's sockets, and a connection of another test (this
    worker's or another's) to an earlier server that had the same port number (free ports are handed out again) stays
    in TIME-WAIT for a minute, which once failed a stuck-recognizer test on a line not its own. The gateway's connection
    of these tests reaches TIME-WAIT only after its stand-in recognizer's FIN, once ended anyway."""
    out = subprocess.run(["ss", "-tnH", "state", "all", f"( dport = :{recognizer_port} )"],
                         capture_output=True, text=True, check=True).stdout
    lines = [line.split() for line in out.splitlines() if line.strip() and not line.startswith("TIME-WAIT")]
    return lines[0][column] if lines else ""


#: SPEECH_GATEWAY_SEND_STALL_SECONDS in :func:`test_a_client_leaving_a_recognizer_that_takes_nothing_in_leaves_no_connection_to_it_behind`:
#: how long a recognizer that takes in nothing and says nothing after its client left has before it is counted stuck.
STUCK_BOUND = 2
#: A message the gateway's connection to a recognizer taking nothing in holds unsent in its kernel's send queue, its
#: send not waiting (under the relay's own bound, SPEECH_GATEWAY_READ_BUFFER_BYTES).
UNSENT_MESSAGE = b"\0" * (15 * 1024)


@pytest.mark.parametrize(("leaves", "stuck"), [("close", False), ("reset", False), ("fin", True), ("reset", True)],
                         ids=["close", "reset", "fin while stuck", "reset while stuck"])
def test_a_client_leaving_a_recognizer_that_takes_nothing_in_leaves_no_connection_to_it_behind(
        tmp_path: Path, leaves: str, stuck: bool) -> None:
    """A /vosk client sends its recognizer, which reads nothing and says nothing (:class:`Deaf`: stuck), more than its
    receive window (15 KiB: the relay's send does not wait; or 1 MiB: it waits), then leaves: its close 1000, a reset,
    or its FIN. The gateway's close of the recognizer's side waits for its reply, then, the recognizer having taken in
    none of what waits unsent and sent nothing for SPEECH_GATEWAY_SEND_STALL_SECONDS (:data:`STUCK_BOUND`), resets that
    connection: its bytes still unsent, a FIN would wait behind them. Its end of the connection is gone within that
    bound and CLOSING_POLL_SECONDS and 1 s more, not waiting for a CPU, and that reset is counted once, the recognizer's failure:
    ``backend_not_reading`` of ko-KR (one WARNING line naming the recognizer; SpeechGatewayFailing pages on it), no
    ``not_reading`` (a client that takes in nothing). Before: aiohttp closed it with a FIN, kept in FIN-WAIT-1 by the
    kernel (until it gave the connection up: minutes against a shut window); then (c78e2bc) reset with one DEBUG line,
    counted nowhere; then counted as ``not_reading``, as a client that takes in nothing; then reset and counted
    CLOSE_REPLY_SECONDS after the close, healthy recognizers busy decoding too."""
    bound = CLOSING_POLL_SECONDS + STUCK_BOUND + 1
    with Deaf() as deaf, relayed_stream(tmp_path / "gateway", deaf, STUCK_BOUND) as (_, client, counted):
        client.send(STUCK_MESSAGE if stuck else UNSENT_MESSAGE)
        deadline = time.monotonic() + 5
        while int(upstream_side(deaf.port, 2) or 0) < 4096:
            assert time.monotonic() < deadline, "nothing waits unsent to the recognizer"
            time.sleep(0.05)
        time.sleep(0.2)  # its send waits, or has ended
        if leaves == "close":
            client.protocol.send_close(1000, "done")
            client._flush()
        elif leaves == "reset":
            client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.sock.close()
        else:
            client.sock.shutdown(socket.SHUT_WR)
        with Starved() as starved:
            left = time.monotonic()
            while (state := upstream_side(deaf.port)) and time.monotonic() - left < 4 * bound:  # the clock's bounds the unstarved time from above
                time.sleep(0.05)
            took = time.monotonic() - left
        count = counted()
    quiet = starved.unstarved(left, left + took)
    assert not state and quiet < bound, (f"the gateway's end of its connection to the recognizer {state or 'gone'} {quiet:.1f} s "
                                         f"not waiting for a CPU ({took:.1f} s of the clock) after its client left")
    assert count == {"backend_not_reading": 1}, f"{count} counted for the reset of the recognizer's connection, under ko-KR"
    print(f"\nthe gateway's end of its connection to the recognizer gone {took:.2f} s after its client left ({quiet:.2f} s unstarved)")


def stuck_closed(client: HeldReply, port: int, bound: float, began: float) -> tuple[Close | None, str, float]:
    """Wait (up to 4 ``bound`` from ``began``) until the gateway's end of its connection to the recognizer listening on
    ``port`` is gone, reading what the gateway sends ``client`` meanwhile: the close it got (None: none), that
    connection's state at the end ("" once gone), and when it ended (``time.monotonic()``)."""
    while (state := upstream_side(port)) and time.monotonic() - began < 4 * bound:  # the clock's bounds the unstarved time from above
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            if client.protocol.close_rcvd is None:
                client._receive(0.05)
        time.sleep(0.05)
    ended = time.monotonic()
    with contextlib.suppress(TimeoutError, ConnectionResetError):
        while client.protocol.close_rcvd is None:
            client._receive(CLOSE_REPLY_SECONDS)
    return client.protocol.close_rcvd, state, ended


def test_a_client_closing_behind_audio_its_stuck_recognizer_takes_none_of_gets_the_gateways_close(tmp_path: Path) -> None:
    """A /vosk client sends its recognizer, which reads nothing and says nothing (:class:`Deaf`: stuck), a message more
    than the relay holds (1 MiB: the relay's send waits), then two more and its close 1000, which wait in its socket
    behind them (the gateway reads no more of the client than SPEECH_GATEWAY_READ_BUFFER_BYTES and one message): the
    gateway sees neither that close nor any end of the connection. Once the recognizer has taken in none of the stream
    and sent nothing for SPEECH_GATEWAY_SEND_STALL_SECONDS (:data:`STUCK_BOUND`) the relay resets its connection (within
    that bound, CLOSING_POLL_SECONDS and 1 s of the first send, not waiting for a CPU), counts it once
    (``backend_not_reading`` of ko-KR), and closes the client with the failure table's code (1011) and the reason. Before:
    nothing ended it; the client got no close (1006 once it gave up), nothing was counted, the recognizer's connection
    held."""
    bound = CLOSING_POLL_SECONDS + STUCK_BOUND + 1
    with Deaf() as deaf, relayed_stream(tmp_path / "gateway", deaf, STUCK_BOUND) as (_, client, counted), Starved() as starved:
        client.send(STUCK_MESSAGE)
        began = time.monotonic()
        client.protocol.send_binary(STUCK_MESSAGE)
        client.protocol.send_binary(STUCK_MESSAGE)
        client.protocol.send_close(1000, "done")
        behind = b"".join(client.protocol.data_to_send())

        def send() -> None:
            with contextlib.suppress(OSError):  # it waits until the gateway resets the connection
                client.sock.sendall(behind)

        threading.Thread(target=send, daemon=True, name="behind").start()
        close, state, ended = stuck_closed(client, deaf.port, bound, began)
        count = counted()
    took, quiet = ended - began, starved.unstarved(began, ended)
    assert not state and quiet < bound, (f"the gateway's end of its connection to the recognizer {state or 'gone'} {quiet:.1f} s "
                                         f"not waiting for a CPU ({took:.1f} s of the clock) after the stream's first send")
    assert close is not None, "the client got no close"
    assert close.code == 1011 and close.reason.startswith("the recognizer of ko-KR"), close
    assert count == {"backend_not_reading": 1}, f"{count} counted under ko-KR"
    print(f"\nthe client got {close.code} and the recognizer's connection was gone {took:.2f} s after the first send "
          f"({quiet:.2f} s unstarved)")


#: SPEECH_GATEWAY_SEND_STALL_SECONDS in :func:`test_a_stuck_recognizer_gets_the_bound_from_when_it_stuck_not_from_its_clients_close`,
#: and when in it the client closes: three quarters of it after the recognizer stuck.
LATE_BOUND = 4
LATE_CLOSE = LATE_BOUND * 3 / 4


def test_a_stuck_recognizer_gets_the_bound_from_when_it_stuck_not_from_its_clients_close(tmp_path: Path) -> None:
    """A /vosk client sends its recognizer, which reads nothing and says nothing (:class:`Deaf`: stuck), a message more
    than the relay holds (1 MiB: the relay's send waits), then closes :data:`LATE_CLOSE` s later: it gets its close reply
    at once, and the recognizer's connection is reset, counted once (``backend_not_reading`` of ko-KR), within
    SPEECH_GATEWAY_SEND_STALL_SECONDS (:data:`LATE_BOUND`), CLOSING_POLL_SECONDS and 1 s of the first send, not waiting
    for a CPU: the clock runs from when it stopped taking in. Before: from the client's close, the bound again (its
    connection held up to twice the bound)."""
    bound = CLOSING_POLL_SECONDS + LATE_BOUND + 1
    with Deaf() as deaf, relayed_stream(tmp_path / "gateway", deaf, LATE_BOUND) as (_, client, counted), Starved() as starved:
        client.send(STUCK_MESSAGE)
        began = time.monotonic()
        time.sleep(LATE_CLOSE)
        came, _ = close_answered(client)
        _, state, ended = stuck_closed(client, deaf.port, bound, began)
        count = counted()
    took, quiet = ended - began, starved.unstarved(began, ended)
    assert not state and quiet < bound, (f"the gateway's end of its connection to the recognizer {state or 'gone'} {quiet:.1f} s "
                                         f"not waiting for a CPU ({took:.1f} s of the clock) after the stream's first send")
    assert count == {"backend_not_reading": 1}, f"{count} counted under ko-KR"
    print(f"\nthe close reply came {came:.2f} s after the client's close; the recognizer's connection was gone {took:.2f} s "
          f"after the first send ({quiet:.2f} s unstarved)")


#: shutdown_seconds in :func:`test_a_recognizer_taking_in_none_of_a_closed_streams_end_holds_the_stop_no_longer_than_close_reply_seconds`.
STOP_SECONDS = 10


def test_a_recognizer_taking_in_none_of_a_closed_streams_end_holds_the_stop_no_longer_than_close_reply_seconds(tmp_path: Path) -> None:
    """A /vosk client sends its recognizer, which reads nothing and says nothing (:class:`Deaf`), more than its receive
    window (:data:`UNSENT_MESSAGE`: it waits unsent), closes and gets its close reply; then the gateway stops
    (shutdown_seconds :data:`STOP_SECONDS`). The close of the recognizer's side, which has taken in nothing and said
    nothing since, holds the stop no longer than CLOSE_REPLY_SECONDS from the close: the gateway stops within that and
    1.5 s, that connection reset (gone once the gateway stopped) and counted once, its client's leaving (``client_gone``
    of ko-KR: a recognizer silent for a second is not known stuck, and the client was gone before the stop:
    tests/gateway/test_stop_streams.py). Before: the stop waited shutdown_seconds for it (its stuck bound,
    SPEECH_GATEWAY_SEND_STALL_SECONDS, is longer), a stream whose client was done."""
    with Deaf() as deaf, relayed_stream(tmp_path / "gateway", deaf, shutdown_seconds=STOP_SECONDS) as (stack, client, _):
        client.send(UNSENT_MESSAGE)
        stack.eventually(lambda: int(upstream_side(deaf.port, 2) or 0) >= 4096, 5, "audio waits unsent to the recognizer")
        close_answered(client)
        stack.stop()
        stack.join()
        state = upstream_side(deaf.port)
    assert stack.stopped_in is not None and stack.stopped_in < CLOSE_REPLY_SECONDS + 1.5, f"the gateway took {stack.stopped_in:.1f} s to stop"
    assert not state, f"the gateway's end of its connection to the recognizer still {state} once it stopped"
    assert stopped_failures(stack) == {("client_gone", "ko-KR"): 1}
    print(f"\nthe gateway stopped in {stack.stopped_in:.2f} s")


def test_a_stream_cut_at_the_deadline_is_counted_once_whatever_its_close_meets(tmp_path: Path,
                                                                             caplog: pytest.LogCaptureFixture) -> None:
    """A /vosk stream still going at ``shutdown_seconds`` (its audio, :data:`UNSENT_MESSAGE`, waiting unsent to its
    recognizer, which reads nothing: :class:`Deaf`) is cut, 1001 (``gateway_stopped``); the gateway's close of the
    recognizer's side then ends unanswered behind those bytes, and that connection is reset CLOSE_REPLY_SECONDS later,
    the stop having run out of time (``gateway_stopped``: a recognizer silent for a second is not known stuck): one
    stream, one failure, ``gateway_stopped`` of ko-KR, the reset one DEBUG line. Before: counted twice,
    ``gateway_stopped`` and ``not_reading`` (a request's failure was counted once per kind); then that DEBUG line was
    ``backend_not_reading``."""
    caplog.set_level(logging.DEBUG, logger="speech_operator.gateway")
    with Deaf() as deaf:
        stack = gateway(tmp_path / "gateway", deaf, shutdown_seconds=DEADLINE_SECONDS)
        try:
            with HeldReply(f"{stack.ws}/vosk?language=ko-KR") as client:
                client.send(json.dumps({"config": {"sample_rate": 16000}}))
                client.send(UNSENT_MESSAGE)  # audio: the stream is in progress
                stack.eventually(lambda: int(upstream_side(deaf.port, 2) or 0) >= 4096, 5, "audio waits unsent to the recognizer")
                stack.stop()
                close, _ = client.closed(PROMPT + DEADLINE_SECONDS)
                assert (close.code, close.reason) == (STOPPED_MIDSTREAM.kind.close, STOPPED_MIDSTREAM.message)
                client.handshake()
            stack.join()
        finally:
            stack.__exit__()
    said = [r.getMessage() for r in caplog.records if "after gateway_stopped counted for it" in r.getMessage()]
    assert stopped_failures(stack) == {("gateway_stopped", "ko-KR"): 1}
    assert len(said) == 1 and "the gateway stopped before the recognizer" in said[0], said


class Flooding(Deaf):
    """A stand-in recognizer that accepts a WebSocket, reads nothing (:class:`Deaf`) and sends 1 MiB of replies at once."""

    async def relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await self.accept(reader, writer):
            writer.transport.pause_reading()  # type: ignore[attr-defined]
            writer.write(Frame(Opcode.BINARY, b"\0" * 16384).serialize(mask=False) * 64)
            await self.forever.wait()


def test_a_client_that_takes_in_nothing_is_its_streams_failure_when_its_recognizer_takes_in_nothing_too(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A /vosk client that reads nothing (:func:`~tests.recognizer.test_not_reading.deaf_websocket`) of its
    recognizer's replies, that recognizer reading nothing of its stream either (:class:`Flooding`): the client is reset
    once it took in nothing for SPEECH_GATEWAY_SEND_STALL_SECONDS (1 s), and the close of the recognizer's side, behind
    :data:`UNSENT_MESSAGE`, is reset 1 s later. The stream's failure is its client's, counted once: ``not_reading`` of
    ko-KR, its INFO line saying the client took in nothing; the recognizer's reset one DEBUG line after it. Before: the
    one line counted (``not_reading``) said the recognizer had not taken in the stream's end: the recognizer's close was
    counted first, and the client's reset, of the same kind, was not."""
    caplog.set_level(logging.DEBUG, logger="speech_operator.gateway")
    with Flooding() as flooding:
        stack = gateway(tmp_path / "gateway", flooding, send_stall_seconds=1)
        try:
            before = failures(stack, "ko-KR")
            sock, protocol = deaf_websocket(stack.port, "/vosk?language=ko-KR")
            with sock:
                protocol.send_text(json.dumps({"config": {"sample_rate": 16000}}).encode())
                protocol.send_binary(UNSENT_MESSAGE)
                sock.sendall(b"".join(protocol.data_to_send()))
                stack.eventually(lambda: failures(stack, "ko-KR") != before, 30, "the stream's failure counted")
                stack.eventually(lambda: not upstream_side(flooding.port), 10, "the recognizer's connection ends")
            after = failures(stack, "ko-KR")
        finally:
            stack.__exit__()
    counted = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    lines = [r for r in caplog.records if r.name == "speech_operator.gateway" and "not_reading" in r.getMessage()]
    assert counted == {"not_reading": 1}, counted
    assert [r.levelname for r in lines] == ["INFO", "DEBUG"], [r.getMessage() for r in lines]
    assert "the client took in none of what was sent to it" in lines[0].getMessage(), lines[0].getMessage()
    assert "backend_not_reading, after not_reading counted for it" in lines[1].getMessage(), lines[1].getMessage()


class Answering(Deaf):
    """A stand-in recognizer that accepts a WebSocket, sends one reply of :data:`UNSENT_MESSAGE`'s size (what a client
    that reads nothing leaves unsent in the gateway's kernel, its send ended) and reads nothing (:class:`Deaf`)."""

    async def relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await self.accept(reader, writer):
            writer.transport.pause_reading()  # type: ignore[attr-defined]
            writer.write(Frame(Opcode.BINARY, UNSENT_MESSAGE).serialize(mask=False))
            await self.forever.wait()


def test_a_stream_whose_recognizer_is_stuck_counts_once_when_its_client_is_reset_after_its_close(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A /vosk client that reads nothing (:func:`~tests.recognizer.test_not_reading.deaf_websocket`) sends 1 MiB to a
    recognizer that replied once, then reads nothing and says nothing (:class:`Answering`): once SPEECH_GATEWAY_SEND_STALL_SECONDS
    (1 s) passed, the relay counts the stuck recognizer (``backend_not_reading``, one WARNING line) and closes the client
    1011, that close waiting unsent behind the reply; the client's guard watches it (its close after unsent bytes) and
    resets it once it took in none of them for that long too. That reset is told to the relay's ``failed`` by the guard,
    the stream's one failure counted already: one DEBUG line, nothing counted. One stream, one failure:
    ``{backend_not_reading: 1}`` under ko-KR. (With the rule off, ``gateway._count`` counting every failure told, it also
    counts ``not_reading``.) Before: the stuck recognizer ended nothing, the stream held until the client left."""
    caplog.set_level(logging.DEBUG, logger="speech_operator.gateway")
    with Answering() as answering:
        stack = gateway(tmp_path / "gateway", answering, send_stall_seconds=1, max_message_bytes=len(STUCK_MESSAGE))
        try:
            before = failures(stack, "ko-KR")
            sock, protocol = deaf_websocket(stack.port, "/vosk?language=ko-KR")
            with sock:
                port = sock.getsockname()[1]
                protocol.send_text(json.dumps({"config": {"sample_rate": 16000}}).encode())
                protocol.send_binary(STUCK_MESSAGE)
                sock.sendall(b"".join(protocol.data_to_send()))
                stack.eventually(lambda: not gateway_side(stack, port), 30, "the client's connection reset")
                stack.eventually(lambda: not upstream_side(answering.port), 10, "the recognizer's connection reset")
            after = failures(stack, "ko-KR")
        finally:
            stack.__exit__()
    counted = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "speech_operator.gateway" and "not_reading" in r.getMessage()]
    assert counted == {"backend_not_reading": 1}, counted
    assert [level for level, _ in lines] == ["WARNING", "DEBUG"], lines
    assert "not_reading, after backend_not_reading counted for it" in lines[1][1], lines[1][1]
    assert "the client took in none of what was sent to it" in lines[1][1], lines[1][1]


def test_a_refusal_to_a_client_that_reads_nothing_ends_its_connection_once_the_send_stall_bound_passed(tmp_path: Path) -> None:
    """A client (receive buffer 4 KiB) that pipelines 150 ``GET /status`` and a malformed request and reads nothing: the
    gateway's refusal (400) closes the connection with some 20 KB of answers unsent; its end of the connection is gone
    within the lingering close's bound, SPEECH_GATEWAY_SEND_STALL_SECONDS (2 s) and 1 s more, and that reset is counted
    (``speech_gateway_failures_total{reason="not_reading"}``). Before: left to the kernel, FIN-WAIT-1 behind them until
    it gave the connection up; then (5e4bc84) reset with one DEBUG line, counted nowhere."""
    stall = 2
    bound = HeadLimits().linger_seconds + stall + 1
    with Mute() as mute:
        stack = gateway(tmp_path / "gateway", mute, send_stall_seconds=stall)
    try:
        before = failures(stack).get("not_reading", 0)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        with sock:
            sock.connect(("127.0.0.1", stack.port))
            port = sock.getsockname()[1]
            sock.sendall(b"GET /status HTTP/1.1\r\nHost: gateway\r\n\r\n" * 150 + b"BAD\x01 / HTTP/1.1\r\n\r\n")
            sent = time.monotonic()
            while (state := gateway_side(stack, port)) and time.monotonic() - sent < bound:
                time.sleep(0.1)
            took = time.monotonic() - sent
        counted = failures(stack).get("not_reading", 0) - before
    finally:
        stack.__exit__()
    assert not state, f"the gateway's end of the connection still {state} {took:.1f} s after the refused request"
    assert counted == 1, f"{counted:g} not_reading counted for the reset"
    print(f"\nthe gateway's end of the connection gone {took:.2f} s after the refused request")


def upgrade_once_drained(stack: Stack, path: str, monkeypatch: pytest.MonkeyPatch) -> tuple[bytes, bytes, float]:
    """Stop ``stack`` and send a WebSocket upgrade of ``path`` on a connection kept alive from before the stop, once the
    drain has ended and before aiohttp's shutdown (held there until the answer's head came): the answer's head, its
    body, and the seconds from that head to the end of the connection."""
    drained, answered = threading.Event(), threading.Event()
    drain = Shutdown.drain

    async def held_after(self: Shutdown, seconds: float) -> None:
        await drain(self, seconds)
        drained.set()
        deadline = time.monotonic() + 5
        while not answered.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    monkeypatch.setattr(Shutdown, "drain", held_after)
    try:
        with socket.create_connection(("127.0.0.1", stack.port), timeout=10) as sock:
            sock.sendall(b"GET /status HTTP/1.1\r\nHost: gateway\r\n\r\n")  # taken up, kept alive
            assert b"200 OK" in sock.recv(65536)
            stack.stop()
            assert drained.wait(PROMPT), "the drain did not end"
            protocol = ClientProtocol(parse_uri(f"{stack.ws}{path}"))
            protocol.send_request(protocol.connect())
            sock.sendall(b"".join(protocol.data_to_send()))
            answer = b""
            while b"\r\n\r\n" not in answer and (data := sock.recv(65536)):
                answer += data
            answered.set()
            ended = time.monotonic()
            while data := sock.recv(65536):
                answer += data
            ended = time.monotonic() - ended
    finally:
        answered.set()
        stack.__exit__()
    head, _, body = answer.partition(b"\r\n\r\n")
    return head, body, ended


def test_an_upgrade_refused_once_the_drain_ended_is_answered_over_http(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An upgrade the gateway refuses (/vosk for fr-CA, which nothing serves) that comes on a connection kept alive from
    before the stop, once the drain has ended and before aiohttp's shutdown (:func:`upgrade_once_drained`): its
    refusal is an HTTP answer (400, its reason), then the end of the connection. Before: a WebSocket accepted and
    closed, whose close reply aiohttp's shutdown then dropped unread (the drain no longer waited for it)."""
    head, body, ended = upgrade_once_drained(asleep_stack(tmp_path / "gateway", 30), "/vosk?language=fr-CA", monkeypatch)
    assert head.split(b" ", 2)[1] == b"400" and b"fr-CA" in body, head + body
    assert ended < CLOSE_REPLY_SECONDS, f"the connection ended {ended:.2f} s after the answer's head"
    print(f"\n{head.splitlines()[0].decode()}, the connection ended {ended:.3f} s after")


def test_a_stream_upgraded_once_the_drain_ended_is_refused_over_http(ko: Recognizer, tmp_path: Path,  # noqa: F811 - the fixture imported
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream's upgrade for ko-KR, which a ready recognizer serves, on a connection kept alive from before the stop,
    once the drain has ended (:func:`upgrade_once_drained`): refused over HTTP, 503 (``draining``) with
    :data:`~speech_operator.gateway_shutdown.STOPPED_DRAINED`'s reason and ``Connection: close``, then the end of the
    connection. Before: accepted (101) and relayed, nothing waiting for it, then cut by aiohttp's shutdown without a close."""
    head, body, ended = upgrade_once_drained(gateway(tmp_path / "gateway", ko), "/vosk?language=ko-KR", monkeypatch)
    assert head.split(b" ", 2)[1] == b"503", head + body
    assert b"connection: close" in head.lower(), head
    assert json.loads(body)["error"]["message"] == STOPPED_DRAINED.message, body
    assert ended < CLOSE_REPLY_SECONDS, f"the connection ended {ended:.2f} s after the answer's head"
    print(f"\n{head.splitlines()[0].decode()}, the connection ended {ended:.3f} s after")


def received(sock: socket.socket, size: int, when: str) -> bytes:
    """What ``sock`` reads next (``size`` bytes at most); a reset fails the test, saying ``when``."""
    try:
        return sock.recv(size)
    except ConnectionResetError:
        pytest.fail(f"the connection was reset {when}")


def test_a_slow_reader_closed_at_the_stop_gets_every_reply_and_the_close(ko: Recognizer, tmp_path: Path) -> None:  # noqa: F811 - the fixture imported
    """A /vosk connection with no audio (idle: closed 1000 at the stop) whose client reads 2 KiB every 0.25 s, with
    1500 resets' replies on their way when the gateway stops: its close comes behind seconds of them, and the client,
    which takes some in at every look, gets every reply and the close; the stop within its bound. Before: its
    connection was reset once CLOSE_REPLY_SECONDS passed with bytes unsent, its last replies and the close lost."""
    resets = 1500
    stack = gateway(tmp_path / "gateway", ko, shutdown_seconds=30, send_stall_seconds=2)
    replies, closed, stopping = 0, None, None
    try:
        sock, protocol = deaf_websocket(stack.port, "/vosk?language=ko-KR")
        for message in [json.dumps({"config": {"max_alternatives": 1}}).encode(), *[b'{"reset" : 1}'] * resets]:
            protocol.send_text(message)
        with sock:
            sock.sendall(b"".join(protocol.data_to_send()))
            sock.settimeout(10)
            while closed is None and (data := received(sock, 2048, f"after {replies} of {resets} replies")):
                protocol.receive_data(data)
                for frame in protocol.events_received():
                    if isinstance(frame, Frame):
                        replies += frame.opcode is Opcode.TEXT
                        closed = Close.parse(frame.data) if frame.opcode is Opcode.CLOSE else closed
                if stopping is None and replies >= 100:  # its replies on their way
                    stopping = time.monotonic()
                    stack.stop()
                time.sleep(0.25)
            read = time.monotonic() - (stopping or 0.0)
        stack.join()
    finally:
        stack.__exit__()
    assert closed is not None and (closed.code, closed.reason) == (1000, IDLE_REASON), (closed, replies)
    assert replies == resets, "a final result for each reset"
    assert stack.stopped_in is not None and stack.stopped_in < 30 + AFTER_DRAIN_SECONDS + 0.5, stack.stopped_in
    print(f"\n{replies} replies and the close read {read:.1f} s after the stop began; the gateway stopped in {stack.stopped_in:.2f} s")
