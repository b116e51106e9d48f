"""The inbox of a WebSocket: read ahead only while a decoder is held, at most its limit, and a disconnect
read ahead drops what was before it. An ASGI receive channel stands in for uvicorn's (an asyncio queue,
which is what uvicorn's WebSocket protocol hands the app); the routes over real servers are in
test_gone_clients.py."""

from __future__ import annotations

import asyncio
import tempfile
import time
import tracemalloc
from pathlib import Path

import pytest

from speech_recognizer.deadlines import HALF_CLOSED
from speech_recognizer.inbox import MESSAGE_BYTES, READ_AHEAD_BYTES, Inbox, SpillBudget, spilled_bytes
from speech_recognizer.scratch import SPILL_BYTES

pytestmark = pytest.mark.unit  # no model, server, operator or browser: the quick run (README, Tests)

DISCONNECT = {"type": "websocket.disconnect", "code": 1006}


def audio(size: int) -> dict:
    return {"type": "websocket.receive", "bytes": bytes(size)}


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def test_no_read_ahead_without_a_decoder_then_at_most_the_limit() -> None:
    async def run() -> None:
        channel: asyncio.Queue[dict] = asyncio.Queue()
        for _ in range(10):
            channel.put_nowait(audio(1000))
        inbox = Inbox(channel.get, limit=3000)
        await settle()
        assert channel.qsize() == 10, "nothing is read ahead while no decoder is held"
        assert (await inbox.receive())["bytes"] == bytes(1000)
        await settle()
        assert channel.qsize() == 9, "one message read, the one asked for"
        inbox.ahead = True
        await settle()
        assert channel.qsize() == 6, "read ahead up to the limit (3 messages of 1000 bytes), no further"
        await inbox.receive()
        await settle()
        assert channel.qsize() == 5, "room again: one more read ahead"
        inbox.ahead = False
        await inbox.receive()
        await settle()
        assert channel.qsize() == 5, "no read ahead once the decoder is given back"
        await inbox.close()

    asyncio.run(run())


def test_a_disconnect_read_ahead_drops_what_was_before_it_and_comes_next() -> None:
    async def run() -> None:
        channel: asyncio.Queue[dict] = asyncio.Queue()
        for _ in range(5):
            channel.put_nowait(audio(1000))
        channel.put_nowait(DISCONNECT)
        inbox = Inbox(channel.get, limit=1 << 20)
        inbox.ahead = True
        await settle()
        assert (await inbox.receive()) == DISCONNECT
        assert inbox.dropped_bytes == 5000
        with pytest.raises(RuntimeError):
            await inbox.receive()
        await inbox.close()

    asyncio.run(run())


def test_a_half_close_read_ahead_comes_after_what_was_before_it() -> None:
    """A client that half-closed reads on (the server's protocol marks its disconnect ``HALF_CLOSED``): what it sent
    before its end is handled and answered, nothing dropped."""

    async def run() -> None:
        channel: asyncio.Queue[dict] = asyncio.Queue()
        for _ in range(5):
            channel.put_nowait(audio(1000))
        half_closed = {**DISCONNECT, HALF_CLOSED: True}
        channel.put_nowait(half_closed)
        inbox = Inbox(channel.get, limit=1 << 20)
        inbox.ahead = True
        await settle()
        assert [(await inbox.receive()).get("bytes") for _ in range(5)] == [bytes(1000)] * 5
        assert (await inbox.receive()) == half_closed
        assert inbox.dropped_bytes == 0
        await inbox.close()

    asyncio.run(run())


def test_a_wait_cancelled_loses_no_message() -> None:
    """The routes wait for a message under a deadline (AudioIdleSeconds), which cancels the wait."""

    async def run() -> None:
        channel: asyncio.Queue[dict] = asyncio.Queue()
        inbox = Inbox(channel.get)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(inbox.receive(), 0.05)
        channel.put_nowait(audio(10))
        assert (await asyncio.wait_for(inbox.receive(), 1))["bytes"] == bytes(10)
        await inbox.close()

    asyncio.run(run())


def numbered(i: int, size: int = 1000) -> dict:
    return {"type": "websocket.receive", "bytes": bytes([i]) * size}


def test_past_its_limit_it_reads_on_into_a_bounded_spill_in_order() -> None:
    """A spill (the /vosk route's) reads on past the limit onto disk, at most its own limit (heads and MESSAGE_BYTES
    counted), no further; every message comes back in order, a text among them, and the spill's files are gone once handled."""

    async def run() -> None:
        channel: asyncio.Queue[dict] = asyncio.Queue()
        for i in range(20):
            channel.put_nowait(numbered(i))
        channel.put_nowait({"type": "websocket.receive", "text": '{"eof" : 1}'})
        inbox = Inbox(channel.get, limit=3000, spill=5000)
        inbox.ahead = True
        await settle()
        assert channel.qsize() == 21 - 3 - 4, "3 messages in memory, 4 on disk (4000 bytes, their heads and MESSAGE_BYTES each), no more"
        assert spilled_bytes() > 4000, "the disk holds their heads too"
        got = [await inbox.receive() for _ in range(21)]
        assert [m.get("bytes") for m in got[:20]] == [numbered(i)["bytes"] for i in range(20)]
        assert got[20]["text"] == '{"eof" : 1}'
        assert spilled_bytes() == 0
        await inbox.close()

    asyncio.run(run())


def test_a_disconnect_read_past_the_spill_drops_it_counted() -> None:
    async def run() -> None:
        channel: asyncio.Queue[dict] = asyncio.Queue()
        for i in range(8):
            channel.put_nowait(numbered(i))
        channel.put_nowait(DISCONNECT)
        inbox = Inbox(channel.get, limit=3000, spill=1 << 20)
        inbox.ahead = True
        await settle()
        assert (await inbox.receive()) == DISCONNECT
        assert (inbox.dropped_bytes, inbox.dropped_audio_bytes) == (8000, 8000)
        assert spilled_bytes() == 0
        await inbox.close()

    asyncio.run(run())


def test_a_spill_the_disk_refuses_stops_the_reading_ahead_losing_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where no temporary file can be made (a /tmp full, or gone: here a folder that is not there), the message read
    is kept in memory after the others and nothing more is read ahead; one WARNING line says so."""

    async def run() -> None:
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "not-there"))
        channel: asyncio.Queue[dict] = asyncio.Queue()
        for i in range(10):
            channel.put_nowait(numbered(i))
        inbox = Inbox(channel.get, limit=3000, spill=1 << 20)
        inbox.ahead = True
        await settle()
        assert channel.qsize() == 10 - 4, "3 in memory, and the one the disk refused"
        got = [await inbox.receive() for _ in range(10)]
        assert [m["bytes"] for m in got] == [numbered(i)["bytes"] for i in range(10)]
        await inbox.close()

    asyncio.run(run())


def held_ahead(size: int, supply: int, spill: int = 0) -> tuple[int, int]:
    """How many of ``supply`` binary messages of ``size`` bytes an inbox holding a decoder reads ahead (in memory; with
    ``spill``, on disk beyond), and the memory they hold (tracemalloc: what was allocated and not freed while it read
    them; not traced with a spill, 0). Each message is made as uvicorn makes it, once read off the socket: a dict of
    its own and a bytes object of its own."""

    async def run() -> tuple[int, int]:
        made = 0
        more = asyncio.Event()

        async def receive() -> dict:
            nonlocal made
            if made == supply:
                await more.wait()  # never set: no more comes
            made += 1
            return {"type": "websocket.receive", "bytes": bytes(size)}

        if not spill:
            tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            inbox = Inbox(receive, spill=spill)
            inbox.ahead = True
            await settle()
            held = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        await inbox.close()
        return made - 1, held  # the one its reader asked for last is not held (the wait for it cancelled)

    return asyncio.run(run())


def test_tiny_messages_read_ahead_hold_at_most_the_read_ahead_in_memory() -> None:
    """The read-ahead's bound is what its messages hold in memory, not their payload alone: a client whose stream
    holds a decoder and that sends 1-byte messages (7 bytes each on the wire) made the server hold 2 million of them,
    ~300 bytes each (a dict, a bytes object, the entry with its arrival time): ~600 MB a stream (a pod OOM-killed,
    every stream on it lost). 16-byte ones, as many to 2 MiB as 128 KiB of them."""
    for size in (1, 16):
        count, held = held_ahead(size, 100_000)
        assert held <= READ_AHEAD_BYTES, (f"{count} messages of {size} bytes read ahead hold {held / 2**20:.1f} MiB "
                                          f"in memory, more than READ_AHEAD_BYTES ({READ_AHEAD_BYTES / 2**20:g} MiB)")


def test_the_speech_sdks_3200_byte_messages_are_read_ahead_a_minute() -> None:
    """The Speech SDK's audio (3200-byte messages, 0.1 s of 16 kHz mono PCM each) is read ahead as before, about a
    minute of it, within READ_AHEAD_BYTES of memory; a browser's AudioWorklet frames (128 samples: 256 bytes), half a
    minute."""
    count, held = held_ahead(3200, 2000)
    assert 590 <= count <= 660 and held <= READ_AHEAD_BYTES, (count, held)
    count, held = held_ahead(256, 20_000)
    assert count * 256 / 32000 >= 25 and held <= READ_AHEAD_BYTES, (count, held)


def test_tiny_messages_spilled_are_counted_each_as_in_memory() -> None:
    """On disk (the /vosk route's spill) a message costs its head and the system calls that write and read it, on the
    event loop, besides its payload: each is counted with MESSAGE_BYTES there too, so that a client's 1-byte messages
    are read ahead no further than 64 MiB of them would cost in memory (a fifth of a million), not 64 MiB of their
    payload and heads (3.7 million, each read, written and read again on the event loop before the client was held
    back)."""
    started = time.process_time()
    count, _ = held_ahead(1, 400_000, spill=SPILL_BYTES)
    cpu = time.process_time() - started
    most = (READ_AHEAD_BYTES + SPILL_BYTES) // MESSAGE_BYTES
    assert count <= most, f"{count} messages of 1 byte read ahead ({cpu:.1f} s of CPU), more than {most}"


def test_streams_past_their_servers_spill_budget_are_held_back_losing_nothing(caplog: pytest.LogCaptureFixture) -> None:
    """Two streams share a server's budget for their spills' files (:class:`SpillBudget`, the pod's /tmp: 12 KB here),
    each with room for 8 messages of its own: together they take no more than the budget on disk; the one it holds
    back is counted and logged once, and reads on as the other's files are freed; every message of each comes back, in
    order. Before, each spilled up to its own limit whatever the others held (a stream whose model loads reads ahead
    without a decoder: the decoders did not bound them)."""

    async def run() -> None:
        budget = SpillBudget(lambda: 12_000)
        channels: list[asyncio.Queue[dict]] = [asyncio.Queue(), asyncio.Queue()]
        for n, channel in enumerate(channels):
            for i in range(16):
                channel.put_nowait(numbered(16 * n + i))
        inboxes = [Inbox(channel.get, limit=3000, spill=8 * (1000 + MESSAGE_BYTES) + 1, budget=budget)
                   for channel in channels]
        for inbox in inboxes:
            inbox.ahead = True
        await settle()
        on_disk = [16 - 3 - c.qsize() for c in channels]
        assert budget.used <= 12_000 and sum(on_disk) >= 10, (budget.used, on_disk)
        assert 8 in on_disk and min(on_disk) < 8, f"one spilled its own share, the other was held back: {on_disk}"
        assert budget.held_total == 1
        first = [await inboxes[0].receive() for _ in range(16)]
        second = [await inboxes[1].receive() for _ in range(16)]
        assert [m["bytes"] for m in first + second] == [numbered(i)["bytes"] for i in range(32)]
        assert budget.used == 0 and spilled_bytes() == 0
        for inbox in inboxes:
            await inbox.close()

    with caplog.at_level("WARNING", logger="speech_recognizer.inbox"):
        asyncio.run(run())
    held = [r.getMessage() for r in caplog.records if "held back" in r.getMessage()]
    assert len(held) == 1 and "12000 bytes" in held[0], held
