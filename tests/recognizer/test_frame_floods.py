"""A WebSocket client flooding the server with frames that complete no message (pings, a message's fragments) or with
empty messages, beside a stream paced at 1x: the flood takes neither the event loop nor the stream's real time, and a
client whose frames pass :mod:`speech_recognizer.frame_budget`'s bounds is closed 1008 with the reason, counted and
logged once (``frame_flood``), on ``/vosk`` and the Speech SDK route alike.

The flooding client writes raw frames on a socket (websockets will not send a thousand empty fragments); the server is
a real one (``python -m speech_recognizer``), the stream beside it a real ``/vosk`` client (:func:`tests.hostile.paced_stream`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.clients import LOCALE, USP_PATH
from harness.server import Server
from harness.speech import Audio, make_audio
from speech_recognizer.frame_budget import CONTROL_BURST, CONTROL_PER_SECOND, MAX_FRAGMENTS, ControlBudget

from ..hostile import assert_strict, paced_stream, real_server_for
from ..support import scrape_metrics
from ..ws_frames import pieces

#: The routes flooded: their path and subprotocol.
ROUTES = {"vosk": (f"/vosk?language={LOCALE}", None), "usp": (USP_PATH, "USP")}
#: How long a flood that is not closed goes on (the stream beside it runs throughout).
FLOOD_S = 4.0
#: Most seconds from a flood's start to its close: the bound is passed in its first reads, and the close written then.
CLOSE_BY_S = 2.0
_MASK = b"\x01\x02\x03\x04"


def frame(opcode: int, *, fin: bool = True) -> bytes:
    """An empty client frame (masked, as RFC 6455 asks of a client): 6 bytes, the smallest there is."""
    return bytes([(0x80 if fin else 0) | opcode, 0x80]) + _MASK


#: Each flood: the frame that begins it (if any), then the one repeated.
FLOODS = {
    "pings": (b"", frame(0x9)),
    "empty fragments": (frame(0x2, fin=False), frame(0x0, fin=False)),
    "empty messages": (b"", frame(0x2)),
}


@dataclass
class Flooded:
    """What the flooding client saw: the server's close (code, reason) if one came, and when, from the flood's start."""

    code: int | None = None
    reason: str = ""
    after_s: float = 0.0


async def flood(server: Server, route: str, kind: str, seconds: float = FLOOD_S) -> Flooded:
    """Upgrade to ``route``, then write ``kind``'s frames as fast as the server takes them, reading nothing but its
    close, until it closes or ``seconds`` have passed."""
    path, subprotocol = ROUTES[route]
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                  + (f"Sec-WebSocket-Protocol: {subprotocol}\r\n" if subprotocol else "") + "\r\n").encode())
    frames = pieces(reader)
    head = await anext(frames)
    assert head.startswith(b"HTTP/1.1 101"), head
    loop = asyncio.get_running_loop()
    seen, started = Flooded(), loop.time()

    async def closed() -> None:
        async for got in frames:
            if got[0] & 0x0F == 0x8:  # the server's close: unmasked, its code then its reason
                payload = got[4:] if got[1] == 126 else got[2:]
                seen.code, seen.reason, seen.after_s = int.from_bytes(payload[:2], "big"), payload[2:].decode(), loop.time() - started
                return

    first, unit = FLOODS[kind]
    block = unit * (65536 // len(unit))
    watching = asyncio.create_task(closed())
    try:
        writer.write(first)
        while not watching.done() and loop.time() - started < seconds:
            writer.write(block)
            with contextlib.suppress(TimeoutError, ConnectionError):
                async with asyncio.timeout(0.1):  # the server holds its reading: wait, as a client's write would
                    await writer.drain()
        async with asyncio.timeout(1):
            with contextlib.suppress(ConnectionError):
                await watching  # a close written as the flood ended has a second to come
    except TimeoutError:
        pass
    finally:
        watching.cancel()
        writer.transport.abort()
    return seen


@pytest.fixture(scope="module")
def stream_audio(tmp_path_factory: pytest.TempPathFactory) -> Audio:
    return make_audio(tmp_path_factory.mktemp("paced"))


@pytest.fixture(scope="module")
def real_server(stream_audio: Audio) -> Iterator[Server]:
    """One server for every flood: a flood leaves nothing behind (its connection closed, no decoder held)."""
    with real_server_for(stream_audio, "Logging:Console:LogLevel:Default=Information") as srv:
        yield srv


def floods_refused(server: Server, route: str) -> float:
    """``speech_refused_total{reason="frame_flood"}`` on ``route``'s label (``vosk``; ``usp/...``)."""
    return sum(value for (name, labels), value in scrape_metrics(server.http).items()
               if name == "speech_refused_total" and dict(labels)["reason"] == "frame_flood"
               and dict(labels)["route"].split("/")[0] == route)


def log_lines(server: Server, pattern: str) -> list[str]:
    return [line for line in Path(server.log).read_text(errors="replace").splitlines() if re.search(pattern, line)]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(("kind", "said"), [("pings", f"more than {CONTROL_BURST} control frames"),
                                            ("empty fragments", f"more than {MAX_FRAGMENTS} fragments")])
def test_a_flood_of_frames_completing_no_message_is_closed_with_its_reason_beside_a_stream(
        real_server: Server, stream_audio: Audio, route: str, kind: str, said: str) -> None:
    """Before, pings were answered and fragments kept for as long as they came, and reading never paused (they complete
    no message): the stream beside a ping flood waited 7.5 s (/vosk) and 8.4 s (the Speech SDK route) for a reply, 17 s
    beside empty fragments, the event loop taken for the flood's whole length."""
    counted, logged = floods_refused(real_server, route), len(log_lines(real_server, "frame_flood"))
    with paced_stream(real_server, stream_audio) as stream:
        seen = asyncio.run(flood(real_server, route, kind))
    assert (seen.code, said in seen.reason) == (1008, True), seen
    assert seen.after_s < CLOSE_BY_S, seen
    assert floods_refused(real_server, route) == counted + 1
    lines = log_lines(real_server, "frame_flood")[logged:]
    assert len(lines) == 1 and said in lines[0], lines
    assert not log_lines(real_server, "Traceback")
    assert_strict(stream, stream_audio.seconds)


@pytest.mark.parametrize("route", ROUTES)
def test_a_flood_of_empty_messages_takes_no_stream_beside_it_off_real_time(real_server: Server, stream_audio: Audio,
                                                                           route: str) -> None:
    """Each message waits for its route, and reading pauses behind it: but the frames of a read were all parsed at once,
    up to 32 reads of 256 KiB (43 690 empty messages each) in one turn of the event loop. Before, the stream beside
    waited 7.3 s (/vosk) and 18.9 s (the Speech SDK route) for a reply; now what is read is parsed a few KiB a turn."""
    with paced_stream(real_server, stream_audio) as stream:
        asyncio.run(flood(real_server, route, "empty messages"))
    assert not log_lines(real_server, "Traceback")
    assert_strict(stream, stream_audio.seconds)


#: An hour the server holds reading a client (its audio sent ahead, decoded on a loaded pod; its model loading).
HOUR_S = 3600.0


def sent_at_once(held_s: float, pings: int) -> int:
    """How many of ``pings`` control frames, all read at once as reading resumes after ``held_s`` seconds held (from
    the upgrade on; the budget's clock, the event loop's time in the server), the client's budget takes before it is
    closed."""
    budget = ControlBudget(0.0)
    budget.reading(0.0, True)
    budget.reading(held_s, False)
    return next((taken for taken in range(pings) if not budget.spend(held_s)), pings)


@pytest.mark.parametrize("every_s", [20.0, 5.0, 1.0])
def test_a_keepalive_pinging_behind_an_hour_held_back_is_not_closed(every_s: float) -> None:
    """websockets' keepalive (a ping every 20 s), an app's (every few seconds, once a second): their pings of an hour
    the server held back the client's reading come at once when it reads on, all taken."""
    pings = int(HOUR_S / every_s)
    assert sent_at_once(HOUR_S, pings) == pings


def test_a_client_pinging_at_the_full_rate_while_held_is_closed_when_reading_resumes() -> None:
    """A client held back an hour had credit for every ping the budget allows a client that is read (5 a second) for
    the whole hour: 18 050 pings taken at once as reading resumed, each parsed and answered with a pong. Now what a
    keepalive pinging once a second wrote meanwhile (3 650, the burst of 50 beside) is taken, and the rest closes it."""
    pings = int(HOUR_S * CONTROL_PER_SECOND)
    taken = sent_at_once(HOUR_S, pings)
    assert taken == CONTROL_BURST + HOUR_S * 1.0, f"{taken} of {pings} pings taken at once after an hour held"
