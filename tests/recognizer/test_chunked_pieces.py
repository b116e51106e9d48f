"""The pieces a read is fed to the parser in, for a chunked body (speech_recognizer.http_limits, ``ChunkedBody``).

A chunked body's pieces end where the body does, not at every ``CRLF CRLF`` in its data: before, a body made of
them was fed 4 bytes at a time (bench/notes.md, "Pipelined requests"). Each test drives the server's HTTP protocol
in this process, each ``data_received`` call one read as asyncio makes it, over a transport that keeps what is
written, with an app that answers each request with its method, path, body length and digest; it counts the
pieces fed (``_feed``) and the requests each completed. None of it is timed.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

import httptools
import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from uvicorn.server import ServerState

from harness.hostile_inputs import responses
from speech_recognizer.http_limits import ChunkedBody, LimitedHttpTools, _Unfollowed

pytestmark = pytest.mark.unit

#: asyncio's read size (selector_events' max_size): a read is at most this.
READ = 256 << 10
HEAD = b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
AFTER = b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n"


class Transport(asyncio.Transport):
    """What the protocol writes, and whether it paused reading or closed."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.paused = self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 5000)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass


class Counting(LimitedHttpTools):
    """The server's protocol, counting each piece fed: (its length, the phase it was fed in, requests it completed)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pieces: list[tuple[int, str, int]] = []
        self.completed = 0

    def _feed(self, piece: memoryview) -> bytes | None:
        phase, before = self._phase, self.completed
        again = super()._feed(piece)
        self.pieces.append((len(piece), phase, self.completed - before))
        return again

    def on_message_complete(self) -> None:
        if self._phase == "body":
            self.completed += 1
        super().on_message_complete()

    def body_pieces(self) -> int:
        return sum(1 for _, phase, _ in self.pieces if phase == "body")


def answering(gate: asyncio.Event | None = None) -> Callable[..., Awaitable[None]]:
    """An app that reads each request's body and answers ``METHOD PATH LENGTH SHA256`` (after ``gate`` is set, if given)."""

    async def app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if gate is not None:
            await gate.wait()
        answer = f"{scope['method']} {scope['path']} {len(body)} {hashlib.sha256(body).hexdigest()}".encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(answer))]})
        await send({"type": "http.response.body", "body": answer})

    return app


def answer_of(method: str, path: str, body: bytes) -> bytes:
    return f"{method} {path} {len(body)} {hashlib.sha256(body).hexdigest()}".encode()


def serving(app: Callable[..., Awaitable[None]]) -> uvicorn.Config:
    """uvicorn's configuration for ``app`` over :class:`Counting` (the server's default limits), loaded."""
    config = uvicorn.Config(app, http=Counting, lifespan="off", log_level="warning")
    config.load()
    return config


class Connection:
    """One connection of :class:`Counting` in the running loop, serving ``app`` (or as ``app`` configures it)."""

    def __init__(self, app: Callable[..., Awaitable[None]] | uvicorn.Config) -> None:
        config = app if isinstance(app, uvicorn.Config) else serving(app)
        self.transport = Transport()
        self.protocol: Counting = config.http_protocol_class(config=config, server_state=ServerState(), app_state={},
                                                             _loop=asyncio.get_running_loop())
        self.protocol.connection_made(self.transport)

    async def read(self, *reads: bytes) -> None:
        """Each of ``reads`` as one read, the loop let run between them."""
        for data in reads:
            self.protocol.data_received(data)
            await settle()

    async def answers(self, count: int) -> list[bytes]:
        """The bodies of the first ``count`` answers, once written."""
        for _ in range(10_000):
            got = responses(bytes(self.transport.written))
            if len(got) >= count:
                assert all(status == 200 for status, _, _ in got), got
                return [body for _, _, body in got]
            await asyncio.sleep(0.001)
        raise AssertionError(f"{len(responses(bytes(self.transport.written)))} answers of {count}: {bytes(self.transport.written)[:300]!r}")

    def close(self) -> None:
        self.protocol.connection_lost(None)


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def chunked(data: bytes, size: int) -> bytes:
    return b"".join(b"%x\r\n" % len(data[at:at + size]) + data[at:at + size] + b"\r\n" for at in range(0, len(data), size)) + b"0\r\n\r\n"


def in_reads(data: bytes, size: int = READ) -> list[bytes]:
    return [data[at:at + size] for at in range(0, len(data), size)]


async def test_a_chunked_body_of_crlfcrlf_is_fed_a_read_at_a_time() -> None:
    """1 MiB of ``CRLF CRLF`` in 64 KiB chunks, then a GET, in reads of 256 KiB: the body is fed in a piece a read
    (before: a piece up to each ``CRLF CRLF``, overlapping ones too: 524305), read whole, and the GET after it answered."""
    body = b"\r\n\r\n" * (1 << 18)
    reads = in_reads(HEAD + chunked(body, 64 << 10) + AFTER)
    connection = Connection(answering())
    await connection.read(*reads)
    assert await connection.answers(2) == [answer_of("POST", "/upload", body), answer_of("GET", "/after", b"")]
    assert connection.protocol.body_pieces() <= len(reads), connection.protocol.body_pieces()
    assert len(connection.protocol.pieces) <= 2 * len(reads) + 2, len(connection.protocol.pieces)
    connection.close()


#: A chunked POST with what a body may hold: hex sizes in either case and with leading zeros, extensions (a quoted one
#: with a ``;``), data that looks like framing (``CRLF CRLF``, a last chunk, a request), a last chunk with an
#: extension, trailers; then a GET pipelined behind it.
TRICKY_DATA = (b"\r\n\r\n", b"0\r\n\r\n", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"A" * 26, b"\r")
TRICKY = (HEAD + b"4;a=b\r\n" + TRICKY_DATA[0] + b"\r\n" + b"005\r\n" + TRICKY_DATA[1] + b"\r\n"
          + b'1b;n="x;y";m\r\n' + TRICKY_DATA[2] + b"\r\n" + b"1A\r\n" + TRICKY_DATA[3] + b"\r\n" + b"1\r\n" + TRICKY_DATA[4]
          + b"\r\n" + b"000;last=1\r\nX-Checksum: 1\r\nX-Other: \r\n\r\n" + AFTER)


async def test_a_chunked_body_split_at_every_byte_is_read_whole_and_the_request_after_it_answered() -> None:
    """:data:`TRICKY` in two reads, split at each of its bytes in turn: the body whole, the GET after it answered, no
    piece completing two requests, and the body fed a piece a read (before: a piece up to each ``CRLF CRLF`` in it, 8 or more)."""
    want = [answer_of("POST", "/upload", b"".join(TRICKY_DATA)), answer_of("GET", "/after", b"")]
    config = serving(answering())
    for split in range(1, len(TRICKY)):
        connection = Connection(config)
        await connection.read(TRICKY[:split], TRICKY[split:])
        assert await connection.answers(2) == want, split
        pieces = connection.protocol.pieces
        assert all(done <= 1 for _, _, done in pieces), (split, pieces)
        assert connection.protocol.body_pieces() <= 2, (split, pieces)
        connection.close()


async def test_a_chunked_body_and_three_requests_in_one_read_keep_the_pipelining_bound() -> None:
    """A chunked POST whose data is ``CRLF CRLF`` (64 KiB) and 3 GETs in one read, the answers held: the POST and the
    first GET parsed (``max_pipelined``, 2), the other two held unparsed and reading paused; once the answers go,
    every one answered in order. The body is one piece (before: 32777)."""
    body = b"\r\n\r\n" * (1 << 14)
    gets = [b"GET /after/%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(3)]
    gate = asyncio.Event()
    connection = Connection(answering(gate))
    await connection.read(HEAD + chunked(body, 8 << 10) + b"".join(gets))
    protocol = connection.protocol
    assert protocol.completed == protocol.limits.max_pipelined == 2 and protocol._held is not None and connection.transport.paused, protocol.pieces
    assert protocol.body_pieces() == 1, protocol.body_pieces()
    gate.set()
    want = [answer_of("POST", "/upload", body)] + [answer_of("GET", f"/after/{i}", b"") for i in range(3)]
    assert await connection.answers(4) == want
    assert all(done <= 1 for _, _, done in protocol.pieces), protocol.pieces
    connection.close()


# ---- the framing followed as llhttp follows it -------------------------------------------------------------


def llhttp_end(body: bytes) -> int | None:
    """Where llhttp (httptools) ends a chunked body at the start of ``body`` (fed a byte at a time), None if it refuses it
    or it does not end."""

    class Ended:
        done = False

        def on_message_complete(self) -> None:
            self.done = True

    ended = Ended()
    parser = httptools.HttpRequestParser(ended)
    parser.feed_data(HEAD)
    for at in range(len(body)):
        try:
            parser.feed_data(body[at:at + 1])
        except httptools.HttpParserError:
            return None
        if ended.done:
            return at + 1
    return None


def walked_end(body: bytes, cuts: list[int]) -> int | None:
    """Where :class:`ChunkedBody` ends the body at the start of ``body``, read in pieces cut at ``cuts``."""
    framing, offset = ChunkedBody(), 0
    for start, stop in zip([0, *cuts], [*cuts, len(body)], strict=True):
        end = framing.end(body[start:stop], 0)
        if end is not None:
            return offset + end
        offset += stop - start
    return None


_hex = st.integers(1, 300).flatmap(lambda n: st.tuples(st.just(n), st.sampled_from(["%x", "%X", "00%x", "0%X"])))
_chunk = st.tuples(_hex, st.sampled_from([b"", b";a", b";a=b", b';q="x;y"', b";" + b"e" * 300]),
                   st.sampled_from([b"\r\n\r\n", b"0\r\n\r\n", b"\r\n", b"x", b"\r"]))
_trailers = st.sampled_from([b"", b"A: b\r\n", b"A: b\r\nC: d\r\n"])


@st.composite
def chunked_bodies(draw: st.DrawFn) -> bytes:
    """A chunked body whose data is made of bytes that look like framing, then what follows it on the connection."""
    parts = []
    for (size, spelling), extension, filler in draw(st.lists(_chunk, max_size=6)):
        data = (filler * (size // len(filler) + 1))[:size]
        parts.append((spelling % size).encode() + extension + b"\r\n" + data + b"\r\n")
    last = draw(st.sampled_from([b"0", b"000", b"0;z"])) + b"\r\n" + draw(_trailers) + b"\r\n"
    return b"".join(parts) + last + draw(st.sampled_from([AFTER, b"\r\n\r\n", b"", b"0\r\n\r\n"]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=chunked_bodies(), data=st.data())
def test_the_framing_ends_a_body_where_llhttp_does_however_it_is_read(body: bytes, data: st.DataObject) -> None:
    """A valid chunked body, cut into reads anywhere: :class:`ChunkedBody` ends it where llhttp does."""
    cuts = sorted(data.draw(st.sets(st.integers(1, len(body) - 1), max_size=4)) if len(body) > 1 else set())
    want = llhttp_end(body)
    assert want is not None, body
    assert walked_end(body, cuts) == want, (body, cuts)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=chunked_bodies(), data=st.data())
def test_a_body_llhttp_refuses_never_ends_past_its_fault(body: bytes, data: st.DataObject) -> None:
    """A chunked body with one byte changed: where llhttp still ends it, :class:`ChunkedBody` ends it there too or gives
    up (the old rule then); where llhttp refuses it, whatever the framing says (the parser stops at the fault)."""
    at = data.draw(st.integers(0, len(body) - 1))
    body = body[:at] + data.draw(st.sampled_from([b"\r", b"\n", b"0", b";", b" ", b"g", b"+"])) + body[at + 1:]
    cuts = sorted(data.draw(st.sets(st.integers(1, len(body) - 1), max_size=4)) if len(body) > 1 else set())
    want = llhttp_end(body)
    try:
        got = walked_end(body, cuts)
    except _Unfollowed:
        return
    if want is not None:
        assert got == want, (body, cuts)
