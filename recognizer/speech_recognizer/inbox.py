"""A WebSocket's messages, read ahead of their handling while its stream holds a decoder.

uvicorn reads a WebSocket's next message only when the app asks for it, and the streaming
routes ask for audio only a few chunks (:data:`~speech_recognizer.session.READ_AHEAD`) ahead of
their decoding. A client that sent audio faster than it is decoded and then left had its
close frame, or the end of its connection, waiting in the socket behind that audio: the
server decoded all of it for nobody, holding the decoder seconds after the client had gone
(50 s of speech: 3-4 s here), and a client reconnecting at once found the server full. While
the stream holds a decoder (:attr:`Inbox.ahead`), an :class:`Inbox` reads on, up to
:data:`READ_AHEAD_BYTES`, so the end of the connection is seen as it comes: the audio read
ahead of it is dropped and the route gets the disconnect next, within one chunk's decoding.
A client that ends its audio properly (vosk's eof, the Speech SDK's end of audio) is answered
as before: the end of its connection comes after its audio, once it has its results.

A client that sent more than that before its end (its FIN, or a reset) has the end wait in the socket behind what the
inbox does not read. Only then, held at its limits, does the inbox ask whether the client is gone (``ended``: the
connection's TCP state, and the probes of :attr:`~.deadlines.Backlog.ended`), once a message taken and every
:data:`HELD_LOOK_SECONDS` (a stream whose model loads takes none: its client's leaving went unseen until the load's end,
its audio then decoded for nobody): if so, the route gets the disconnect next, as if read (:data:`ENDED_UNREAD`), what
was read ahead dropped, what the socket holds never read. Below the limit it reads on and meets the end itself: a
stream whose client sends no faster than it is decoded asks the kernel nothing.
A client that half-closed and reads on (:data:`~.deadlines.HALF_CLOSED`) has what it sent before its end handled, not
dropped, its FIN behind the read-ahead or not.
A close frame behind more than is read ahead cannot be seen (TCP gives it after the bytes before it): it is read after
the audio before it, or the client's own close timeout ends its connection (websockets': 10 s), its socket closed
with its FIN behind what it sent, which :attr:`~.deadlines.Backlog.ended`'s probe finds.

An inbox given a ``spill`` (the /vosk route's: :data:`~.scratch.SPILL_BYTES`) reads on past its limit, keeping what it reads in
temporary files (:class:`Spill`, in :func:`tempfile.gettempdir`: the pod's /tmp), up to ``spill`` bytes not yet handled
(each message counted with :data:`MESSAGE_BYTES`, as in memory).
A client's keepalive pings come on the same connection as its audio, and the server answers a ping only once it has read
it: a websockets client (vosk-server's usual Python client: a ping every 20 s, 20 s for its pong) that sent a recording
ahead of a busy server's decoding had its pings wait behind that audio, and closed the connection itself with 1011
"keepalive ping timeout", its results lost. Read on, its pings are answered as they come, and so is a close frame. On
disk, not in memory: a stream's audio held so is bounded by ``spill`` (a client that sends more is held back, as
before), and all streams' files together by their :class:`SpillBudget` (:func:`~.scratch.spill_budget`: one stream's
share per decoder; a stream whose model loads reads ahead holding none), counted in :func:`spilled_bytes`. Past that
budget a stream is held back as when its own spill is full, nothing lost: the pod's /tmp is sized by it (the operator's
``emptyDir`` ``sizeLimit``), and a pod past it is evicted with every stream on it. A spill that cannot be written (the
disk full) stops the reading ahead, nothing lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
import tempfile
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import IO, TYPE_CHECKING, Any

from .deadlines import HALF_CLOSED
from .errors import CLIENT_GONE, DRAINING, Failure
from .scratch import SPILL_FILE_BYTES

if TYPE_CHECKING:
    from .models import LoadedModel, ModelRegistry

log = logging.getLogger(__name__)

#: Most bytes of messages read ahead of their handling and held in memory, per stream holding a decoder, each message
#: counted with :data:`MESSAGE_BYTES` (60 s of 16 kHz mono PCM in the Speech SDK's 3200-byte messages).
READ_AHEAD_BYTES = 2 << 20
#: What holding a message read ahead costs in memory beyond its payload (its ASGI dict, the bytes or str object's
#: head, the entry with its arrival time): counted with each, so that :data:`READ_AHEAD_BYTES` bounds the memory a
#: client's tiny messages take, not their payload alone (1-byte messages, 7 bytes each on the wire, held 300 times their
#: payload uncounted). A message spilled to disk is counted so too: besides its record, it costs the event loop a
#: write and two reads, and a client's tiny messages are read ahead no further than they would be in memory.
MESSAGE_BYTES = 320

Message = Mapping[str, Any]

#: The disconnect of a client whose end of the connection came behind messages unread (no close frame read: 1006).
ENDED_UNREAD: Message = {"type": "websocket.disconnect", "code": 1006}
#: The disconnect's code when the server's stop closed the connection (uvicorn's ``shutdown``: what the drain's deadline
#: leaves running is closed so), not its client.
SHUTDOWN_CLOSE = 1012


#: A spilled message's head: its kind (b: binary, t: text), when it was read (time.monotonic), its length, and the
#: bytes of audio it carries.
_HEAD = struct.Struct("<cdII")
#: Bytes of messages held on disk by every :class:`Spill` of this process now.
_spilled_total = 0


def spilled_bytes() -> int:
    """Bytes of WebSocket messages read ahead and held on disk now, all streams together (``/metrics``)."""
    return _spilled_total


#: Seconds between two looks at whether the client of a stream held back at its limits has gone (``ended``): a stream
#: whose model loads takes none of its messages, and nothing else wakes it.
HELD_LOOK_SECONDS = 0.25
#: Seconds between two log lines of streams held back by the spills' budget.
BUDGET_LOG_SECONDS = 10.0


class SpillBudget:
    """The disk all of one server's spills may take together (their files' bytes, what was read of them but not yet
    freed included): ``limit()`` bytes, read at each check (the decoders' count may be lowered once the models load)."""

    def __init__(self, limit: Callable[[], int]) -> None:
        self.limit = limit
        #: Bytes in the spills' open files now.
        self.used = 0
        #: Times a stream was held back by this budget (its own spill not full), for ``/metrics``.
        self.held_total = 0
        #: The events of the inboxes held back, set when bytes are freed.
        self._waiting: set[asyncio.Event] = set()
        self._logged_at = -BUDGET_LOG_SECONDS
        self._unlogged = 0

    def fits(self, size: int) -> bool:
        return self.used + size <= self.limit()

    def free(self, size: int) -> None:
        """``size`` bytes of files closed: the streams held back read on."""
        self.used -= size
        for event in self._waiting:
            event.set()

    def hold(self, more: asyncio.Event) -> None:
        """A stream waits on ``more`` for room: counted, one warning line per :data:`BUDGET_LOG_SECONDS`."""
        if more in self._waiting:
            return
        self._waiting.add(more)
        self.held_total += 1
        self._unlogged += 1
        now = time.monotonic()
        if now - self._logged_at >= BUDGET_LOG_SECONDS:
            log.warning("/vosk streams' audio read ahead fills its %d bytes of temporary files in %s: %d stream(s) held "
                        "back until their audio is decoded (nothing lost; they are read on as room is freed)",
                        self.limit(), tempfile.gettempdir(), self._unlogged)
            self._logged_at, self._unlogged = now, 0

    def release(self, more: asyncio.Event) -> None:
        self._waiting.discard(more)


class Spill:
    """Messages in order on disk: a queue of temporary files, each closed (its space freed) once read through."""

    def __init__(self, budget: SpillBudget | None = None) -> None:
        self._budget = budget
        #: The files, oldest first, each with how far it was read and its size; written at the end of the last, read
        #: from the first (their sizes kept here: no system call but the write and the reads for each message).
        self._files: deque[tuple[IO[bytes], list[int]]] = deque()
        #: Bytes written and not read yet (heads included), their messages, and the bytes of audio they carry.
        self.bytes = 0
        self.count = 0
        self.audio = 0

    def put(self, message: Message, read_at: float, audio: int) -> None:
        """Keep ``message`` (a text or binary one, carrying ``audio`` bytes of audio) after the others; raises OSError
        when it cannot be written."""
        global _spilled_total
        text = message.get("text")
        data = text.encode() if text is not None else message.get("bytes") or b""
        record = _HEAD.pack(b"t" if text is not None else b"b", read_at, len(data), audio) + data
        if not self._files or self._files[-1][1][1] >= SPILL_FILE_BYTES:
            self._files.append((tempfile.TemporaryFile(prefix="speech-read-ahead-"), [0, 0]))
        file, at = self._files[-1]
        os.pwrite(file.fileno(), record, at[1])
        at[1] += len(record)
        if self._budget is not None:
            self._budget.used += len(record)
        self.bytes += len(record)
        self.count += 1
        self.audio += audio
        _spilled_total += len(record)

    def take(self) -> tuple[Message, float]:
        """The oldest message kept, and when it was read."""
        global _spilled_total
        file, at = self._files[0]
        kind, read_at, length, audio = _HEAD.unpack(os.pread(file.fileno(), _HEAD.size, at[0]))
        data = os.pread(file.fileno(), length, at[0] + _HEAD.size)
        at[0] += _HEAD.size + length
        if len(self._files) > 1 and at[0] >= at[1]:
            self._drop_first()
        self.bytes -= _HEAD.size + length
        self.count -= 1
        self.audio -= audio
        _spilled_total -= _HEAD.size + length
        if not self.count:  # read through: the last file too, begun again
            self.close()
        if kind == b"t":
            return {"type": "websocket.receive", "text": data.decode()}, read_at
        return {"type": "websocket.receive", "bytes": data}, read_at

    def close(self) -> None:
        """Drop what is kept (its files closed, their space freed)."""
        global _spilled_total
        _spilled_total -= self.bytes
        self.bytes = self.count = self.audio = 0
        while self._files:
            self._drop_first()

    def _drop_first(self) -> None:
        file, at = self._files.popleft()
        file.close()
        if self._budget is not None:
            self._budget.free(at[1])


def _size(message: Message) -> int:
    data = message.get("bytes") if message.get("bytes") is not None else message.get("text")
    return len(data) if data is not None else 0


def held(message: Message) -> int:
    """What ``message`` costs held in memory: its payload and :data:`MESSAGE_BYTES`."""
    return _size(message) + MESSAGE_BYTES


def left_before_audio(what: str, draining: bool) -> Failure:
    """How a recognition whose connection ended before any of its audio is counted (a /vosk connection, a Speech SDK
    turn begun by its ``speech.context``): as its client's leaving (:data:`~speech_recognizer.errors.CLIENT_GONE`), as
    one leaving mid-audio is, not as a success, nor not at all; ``draining``: the server drains, and closes such
    connections itself (:meth:`~speech_recognizer.drain.Drain.close_idle`, their clients answering), as the drain's
    (:data:`~speech_recognizer.errors.DRAINING`)."""
    if draining:
        return Failure(f"{what}: closed before any audio, the server shutting down", DRAINING)
    return Failure(f"{what}: the client left before sending any audio", CLIENT_GONE)


class Inbox:
    """The messages of one accepted WebSocket, in order; :meth:`close` it at the connection's end."""

    def __init__(self, receive: Callable[[], Awaitable[Message]], limit: int = READ_AHEAD_BYTES,
                 audio_bytes: Callable[[Message], int] | None = None, ended: Callable[[], bool] | None = None,
                 spill: int = 0, budget: SpillBudget | None = None) -> None:
        """``audio_bytes``: the bytes of audio a message carries (default: all of a binary message), for
        :attr:`dropped_audio_bytes`; ``ended``: whether the client's end of the connection has come, unread
        (:attr:`~.deadlines.Backlog.ended`), asked only while reading ahead is held at its limits (None: never);
        ``spill``: most bytes read ahead beyond ``limit`` and kept on disk (:class:`Spill`; 0: none), within
        ``budget``, the server's spills' together (None: none but ``spill``)."""
        self._receive = receive
        self._ended = ended
        self.limit = limit
        self.spill_limit = spill
        self._budget = budget
        #: What was read after the messages in memory, kept on disk (created at the first message past ``limit``).
        self._spill: Spill | None = None
        #: What was read after the spill, in memory: a message its spill could not take, a half-closed client's end.
        self._tail: deque[tuple[Message, float]] = deque()
        self._audio_bytes = audio_bytes or (lambda message: len(message.get("bytes") or b""))
        #: The messages read and not yet handled, each with when it was read from the socket (time.monotonic).
        self._messages: deque[tuple[Message, float]] = deque()
        self._bytes = 0
        #: Whether the route waits for a message.
        self._asked = False
        self._ahead = False
        self._more = asyncio.Event()
        self._arrived = asyncio.Event()
        #: Bytes of messages read ahead and dropped because the client had gone, and of the audio they carried.
        self.dropped_bytes = 0
        self.dropped_audio_bytes = 0
        #: Those messages, until the connection ends (:meth:`recover`).
        self.dropped: list[Message] = []
        #: When the message :meth:`receive` returned last was read from the socket (:func:`time.monotonic`), however
        #: long it then waited behind the decoding: where a stream's latency to its final result runs from.
        self.arrived = time.monotonic()
        self._reader = asyncio.create_task(self._read())

    @property
    def ahead(self) -> bool:
        """Whether to read ahead of the route (while its stream holds a decoder)."""
        return self._ahead

    @ahead.setter
    def ahead(self, value: bool) -> None:
        self._ahead = value
        self._more.set()

    def _spilled(self) -> int:
        return self._spill.bytes if self._spill is not None else 0

    def _spill_count(self) -> int:
        return self._spill.count if self._spill is not None else 0

    def _may_read(self) -> bool:
        if self._asked:
            return True
        if not self._ahead or self._tail:
            return False
        spilled = self._spilled()
        if self._bytes < self.limit and not spilled:
            return True
        if spilled + self._spill_count() * MESSAGE_BYTES >= self.spill_limit:
            return False
        if self._budget is not None and not self._budget.fits(_HEAD.size + 1):  # no room on the server's disk budget
            self._budget.hold(self._more)
            return False
        return True

    def _keep(self, message: Message) -> None:
        """``message``, read now, after the others: in memory within ``limit``, else on disk (or, the disk failing, in
        memory, after the spill: no more is read ahead then)."""
        now = time.monotonic()
        if self._tail:
            self._tail.append((message, now))
            return
        if not self._spilled() and (self._asked or self._bytes < self.limit or not self.spill_limit):
            self._messages.append((message, now))
            self._bytes += held(message)
            return
        if not self.spill_limit:  # the disk failed: after the spill
            self._tail.append((message, now))
            return
        if self._budget is not None and not self._budget.fits(_HEAD.size + _size(message)):
            # other streams took the room while this one's message came: it waits after the spill, in memory (one
            # message), and no more is read until it is handled
            self._budget.hold(self._more)
            self._tail.append((message, now))
            return
        try:
            if self._spill is None:
                self._spill = Spill(self._budget)
            self._spill.put(message, now, self._audio_bytes(message))
        except OSError as exc:
            log.warning("cannot keep a WebSocket's audio read ahead on disk in %s (%s): reading ahead stops at %d bytes",
                        tempfile.gettempdir(), exc, self._bytes + self._spilled())
            self.spill_limit = 0
            self._tail.append((message, now))

    async def _read(self) -> None:
        try:
            while True:
                while not self._may_read():
                    ended = self._ended if self._ahead else None
                    if ended is not None and ended():  # held at the limit: the end behind the rest
                        self._end(ENDED_UNREAD)
                        return
                    self._more.clear()
                    # held so, looked at again each HELD_LOOK_SECONDS: a stream waiting for its model takes nothing
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(HELD_LOOK_SECONDS if ended is not None else None):
                            await self._more.wait()
                if self._budget is not None:
                    self._budget.release(self._more)
                message = await self._receive()
                if message.get("type") == "websocket.disconnect":
                    if message.get(HALF_CLOSED):  # it reads on: what it sent before is handled, then the end
                        (self._tail if self._tail or self._spilled() else self._messages).append((message, time.monotonic()))
                    else:
                        self._end(message)
                    return
                self._keep(message)
                self._asked = False  # what was asked for has come: read on only ahead, within the limit
                self._arrived.set()
        finally:  # the disconnect, or a failure the route's next receive raises
            if self._budget is not None:
                self._budget.release(self._more)
            self._arrived.set()

    def _end(self, disconnect: Message) -> None:
        """Nobody is left to answer: what was read ahead is dropped, the route hears of ``disconnect`` next."""
        self.drop()
        self._messages.append((disconnect, time.monotonic()))

    def drop(self) -> None:
        """Drop what was read and not handled, counted (:attr:`dropped_bytes`, :attr:`dropped_audio_bytes`)."""
        self.dropped = [m for m, _ in self._messages]
        self.dropped_bytes += sum(map(_size, self.dropped))
        self.dropped_audio_bytes += sum(map(self._audio_bytes, self.dropped))
        if self._spill is not None:  # counted, not kept (:meth:`recover` gives back what was in memory)
            self.dropped_bytes += self._spill.bytes - self._spill.count * _HEAD.size
            self.dropped_audio_bytes += self._spill.audio
            self._spill.close()
        tail = [m for m, _ in self._tail]
        self.dropped_bytes += sum(map(_size, tail))
        self.dropped_audio_bytes += sum(map(self._audio_bytes, tail))
        self._messages.clear()
        self._tail.clear()
        self._bytes = 0

    def _next(self) -> tuple[Message, float] | None:
        """The oldest message read and not handled (None: none): from memory, then the spill, then the tail."""
        if self._messages:
            message, arrived = self._messages.popleft()
            self._bytes -= held(message)
            return message, arrived
        if self._spill is not None and self._spill.count:
            return self._spill.take()
        if self._tail:
            return self._tail.popleft()
        return None

    async def receive(self) -> Message:
        """The next message (cancelling the wait loses none)."""
        while not (self._messages or self._spilled() or self._tail):
            if self._reader.done():  # after the disconnect, as a WebSocket would
                self._reader.result()
                raise RuntimeError("the connection is over: no message after its disconnect")
            self._asked = True
            self._more.set()
            self._arrived.clear()
            try:
                await self._arrived.wait()
            finally:
                self._asked = False
        message = self.take_arrived()
        assert message is not None
        return message

    async def gone(self) -> None:
        """Wait until the connection ends (its disconnect read, or the reading failed), reading ahead meanwhile as
        :attr:`ahead` allows; cancelling the wait stops no reading."""
        await asyncio.wait([self._reader])

    async def model(self, registry: ModelRegistry, locale: str) -> LoadedModel:
        """``locale``'s model; one not loaded yet is loaded while the client is watched (its messages read ahead, kept
        in order for the route): a client gone meanwhile raises :data:`~speech_recognizer.errors.CLIENT_GONE` at once,
        its place given back, the load going on for others (:meth:`~speech_recognizer.models.ModelRegistry.aload_watched`),
        what it sent meanwhile dropped (:attr:`dropped`: the route counts it abandoned)."""
        if (loaded := registry.get_loaded(locale)) is not None:
            return loaded
        ahead, self.ahead = self.ahead, True
        loaded = await registry.aload_watched(locale, self.gone)
        self.ahead = ahead
        return loaded

    def take_arrived(self) -> Message | None:
        """The next message read and not yet handled, without waiting for more (None: none; the route handles them
        itself)."""
        taken = self._next()
        if taken is None:
            return None
        message, self.arrived = taken
        self._more.set()
        return message

    def recover(self) -> list[Message]:
        """The messages read ahead and dropped at the disconnect, handed back to a route that can still use them (a
        Speech SDK turn whose audio had ended: usp.connection keeps its results), no longer counted as dropped."""
        recovered, self.dropped = self.dropped, []
        self.dropped_bytes -= sum(map(_size, recovered))
        self.dropped_audio_bytes -= sum(map(self._audio_bytes, recovered))
        return recovered

    async def close(self) -> None:
        """Stop reading (at the connection's end), and let ``ended`` go (a route's own method: no reference cycle)."""
        self._ended = None
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
        if self._spill is not None:
            self._spill.close()
