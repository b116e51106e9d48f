"""How a Speech SDK connection refused before any turn runs is answered (``MaxConnections``, a drain, a service not
served): the upgrade is taken, the client's messages are read until its request begins, and then the refusal is
told as a turn that fails (:func:`answer`; :func:`refuse` on an ASGI server's WebSocket). The gateway answers its own
refusals with it too (``speech_operator.gateway_relay.refuse``), on an aiohttp WebSocket.

Why not at once: the SDK for JavaScript sends its first messages (``speech.config``, ``speech.context``, the audio's
header) as soon as the socket opens, and one sent after the close frame came fails its recognition with
"websocket send error: Websocket not ready" and a stack trace (``WebsocketMessageAdapter.sendRawMessage``), where
the reason was meant. Why a turn: that SDK words a close's reason only for 1002, 1003, 1007 and 4000
(``ServiceRecognizerBase``'s ``ConnectionClosedEvent`` handler); after any other close it connects again and, with a
stream that has ended, waits for ever. A ``speech.phrase`` whose ``RecognitionStatus`` it knows cancels it at once;
the Python SDK reports the same phrase with its ``Message``. The close then carries the code and the reason as before.
A refusal whose status the SDK for JavaScript knows not (``ServiceUnavailable``: a drain, a model that cannot be
loaded) it is told by the close alone, once its request began (its ``speech.config`` names it): a close 4000, which
it reports at once as ``ConnectionFailure`` with the reason (:func:`~speech_recognizer.errors.usp_status`). The other
SDKs (the Python SDK's core) connect again a few times after a failed turn, so a capacity refusal (``TooManyRequests``)
is told them by a close 4429 alone, which they report at once with that code and the reason, and ask no more
(:data:`~speech_recognizer.errors.CORE_CLOSES`), after the same message that names its kind. A message
that ends its reading comes first (:func:`.frames.javascript_reading_end`): with nothing sent on the connection, that
SDK would keep it, closed, for its recognizer's next recognition, which would fail; with a message its reading did not
end on, it would connect again at once after the close and send its request again.

A connection that sends nothing is held until :data:`REQUEST_WAIT_SECONDS` pass: at most :data:`MAX_WAITING` are held
so at once by one server (its :class:`Waiting`), and past them a refused connection is answered at once from what it
sent already (closed at once, as before the turn was sent, when its request has not begun), so that a flood of idle
connections past a cap cannot hold a socket each for that long. The server's stop ends the waits alike
(:meth:`Waiting.end`): the close, with the refusal's code and reason, is not held for a client that sends nothing,
nor cut by the server's exit without them.

Only :mod:`..errors` and :mod:`.frames` are used: :class:`~speech_recognizer.drain.DrainMiddleware` refuses with it
before any route runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any

from .. import contract
from ..errors import Failure, Kind, asked_again, close_args, told_by_close, usp_headers, usp_phrase, usp_status
from .frames import FrameError, from_javascript_sdk, javascript_reading_end, parse_binary, parse_text, previous_service_tag, text_frame

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
#: The client's next message: its text, or its bytes (binary); None once it has left (or broken the protocol).
Read = Callable[[], Awaitable[str | bytes | None]]
#: Sends one text message to the client.
SendText = Callable[[str], Awaitable[None]]
#: Closes the connection with a code and a reason.
Close = Callable[[int, str], Awaitable[None]]
#: Counts and logs a refusal (:func:`~speech_recognizer.errors.observe`); true: as the Speech SDK asking again for a
#: refusal its server told already (:class:`FailedTurns`), at DEBUG and not counted.
Observe = Callable[[bool], None]

#: How long a connection being refused is read for its request before the close.
REQUEST_WAIT_SECONDS = 5.0
#: Refused connections one server reads for their request at once, at most; past it the close is at once. An SDK
#: begins its request as soon as its socket opens, so its refusal waits a round trip: 64 at once is a burst of 64
#: refusals within one round trip, far past what a cap's honest clients make; a flood of idle connections then holds
#: 64 sockets for :data:`REQUEST_WAIT_SECONDS` (no more than 64 idle connections of its own would), not one each.
MAX_WAITING = 64


@dataclass(frozen=True)
class Request:
    """What a refused client's first messages tell of it."""

    #: The ``X-RequestId`` of the message that began its request ("" when it has none, or none began in time).
    id: str
    #: Whether its ``speech.config`` says it is the SDK for JavaScript (:func:`.frames.from_javascript_sdk`).
    javascript: bool = False
    #: The service tag of the turn its ``speech.context`` continues (:func:`.frames.previous_service_tag`), if any.
    continues: str = ""


class Waiting:
    """The refusals one server answers now (:func:`answer`), and how many of them are read for their request
    (:data:`MAX_WAITING` at most): each server owns one, on its own event loop (two servers in one process, as the
    tests run them, each hold their own places; nothing here is shared between threads)."""

    def __init__(self, limit: int = MAX_WAITING) -> None:
        self.limit = limit
        #: Refusals being answered, from their upgrade's acceptance to their close.
        self.answering = 0
        #: Of them, those being read for their request.
        self.reading = 0
        #: Set by :meth:`end`: no refusal waits for its request any more.
        self.ended = False
        #: The budgets of those being read, which :meth:`end` brings to now.
        self._budgets: set[asyncio.Timeout] = set()

    async def until_request(self, read: Read, budget: float = REQUEST_WAIT_SECONDS) -> Request | None:
        """Read the client's messages until one begins its request (:func:`request_of`), or ``budget`` seconds have
        passed, or the server stops (:meth:`end`): that request (its id "" when it has none, on time out or at the
        stop); None when the client left first. When :attr:`limit` are read so already, or the server stopped,
        only what the client sent already is read (no wait)."""
        if self.ended or self.reading >= self.limit:
            return await _read_request(read, asyncio.timeout(0))
        timeout = asyncio.timeout(budget)
        self.reading += 1
        self._budgets.add(timeout)
        try:
            return await _read_request(read, timeout)
        finally:
            self._budgets.discard(timeout)
            self.reading -= 1

    def end(self) -> None:
        """The server stops: every refusal read for its request is answered at once (its close, with no turn, as
        one past :attr:`limit`), and so is every later one."""
        self.ended = True
        now = asyncio.get_running_loop().time()
        for timeout in self._budgets:
            if not timeout.expired():
                timeout.reschedule(now)

    @contextlib.contextmanager
    def answer(self) -> Iterator[None]:
        """One refusal being answered (:attr:`answering`) for the time of the block."""
        self.answering += 1
        try:
            yield
        finally:
            self.answering -= 1


#: Seconds after a turn failed within which a turn that continues it is the Speech SDK asking again (its core
#: connects again at once), and how many such turns are kept.
ASKED_AGAIN_SECONDS = 5.0
ASKED_AGAIN_KEPT = 1024


class FailedTurns:
    """The service tags of the turns one server lately failed with a kind the Speech SDK's core asks again for
    (:func:`~..errors.asked_again`), and the kind of each: a turn whose ``speech.context`` continues one of them
    (``continuation.previousServiceTag``) within :data:`ASKED_AGAIN_SECONDS` and fails the same way is that SDK's
    recognition asked again, logged at DEBUG and not counted again (:func:`~..errors.observe`). Each server owns one
    (its app's state), used on its own event loop: a repeat that reaches another server is counted there, as it is
    when that server is another pod."""

    def __init__(self) -> None:
        self._kinds: OrderedDict[str, tuple[Kind, float]] = OrderedDict()

    def failed(self, tag: str, kind: Kind) -> None:
        """The turn of service tag ``tag`` failed with ``kind``."""
        if asked_again(kind):
            self._kinds[tag] = (kind, time.monotonic())
            while len(self._kinds) > ASKED_AGAIN_KEPT:
                self._kinds.popitem(last=False)

    def continued(self, tag: str) -> Kind | None:
        """The kind of the failed turn of service tag ``tag`` that a new turn continues, if lately failed."""
        kind, at = self._kinds.pop(tag, (None, 0.0))
        return kind if time.monotonic() - at <= ASKED_AGAIN_SECONDS else None


def request_of(message: str | bytes) -> str | None:
    """The ``X-RequestId`` of a client's message that begins its request (``contract.USP_REQUEST_PATHS``, or audio:
    "" when it has none); None for any other message (``speech.config``, a malformed one)."""
    try:
        if isinstance(message, bytes):
            return parse_binary(message).request_id or ""
        frame = parse_text(message)
    except FrameError:
        return None
    return (frame.request_id or "") if frame.path.lower() in contract.USP_REQUEST_PATHS else None


def _continues(message: str | bytes) -> str:
    """The service tag of the turn a ``speech.context`` continues ("" for any other message, or a malformed one)."""
    if isinstance(message, bytes):
        return ""
    try:
        frame = parse_text(message)
        return previous_service_tag(frame.json()) if frame.path.lower() == "speech.context" else ""
    except FrameError:
        return ""


def _javascript(message: str | bytes) -> bool:
    """Whether ``message`` is a ``speech.config`` of the SDK for JavaScript."""
    if isinstance(message, bytes):
        return False
    try:
        frame = parse_text(message)
        return frame.path.lower() == "speech.config" and from_javascript_sdk(frame.json())
    except FrameError:
        return False


async def _read_request(read: Read, timeout: asyncio.Timeout) -> Request | None:
    """:meth:`Waiting.until_request`'s reading, within ``timeout`` (not entered yet)."""
    javascript = False
    try:
        async with timeout:
            while (message := await read()) is not None:
                if (request_id := request_of(message)) is not None:
                    return Request(request_id, javascript, _continues(message))
                javascript = javascript or _javascript(message)
            return None
    except TimeoutError:
        return Request("", javascript)


def failed_turn(failure: Failure, request_id: str, tag: str, javascript: bool = False, again: bool = False) -> list[str]:
    """The text messages of a turn of service tag ``tag`` that ends with the failure's ``speech.phrase`` under
    ``request_id`` (``turn.start``, ``speech.phrase``, ``turn.end``, as :meth:`.connection.Turn.fail` ends one); none
    when the close alone answers (:func:`~speech_recognizer.errors.usp_status`; ``javascript``: to the SDK for
    JavaScript) or the request has no id. ``again``: the SDK asking again for a refusal told it already
    (:func:`~speech_recognizer.errors.usp_headers`)."""
    if not (usp_status(failure.kind, javascript=javascript) and request_id):
        return []
    turn: tuple[tuple[str, dict[str, Any]], ...] = (
        ("turn.start", {"context": {"serviceTag": tag}}), ("speech.phrase", usp_phrase(failure)), ("turn.end", {}))
    return [text_frame(path, request_id, body, usp_headers(failure, again) if path == "speech.phrase" else {}) for path, body in turn]


async def answer(read: Read, send_text: SendText, close: Close, failure: Failure, waiting: Waiting,
                 observe: Observe | None = None, failed: FailedTurns | None = None) -> None:
    """Answer a connection accepted only to be refused, counted in its server's ``waiting``: once its request begins
    (:meth:`Waiting.until_request`; only among what it sent already when :data:`MAX_WAITING` are read so already, or
    the server stops), the failed turn (:func:`failed_turn`; to the SDK for JavaScript told by the close alone, and to
    another told by the close in its status's stead, the message that ends the JavaScript SDK's reading and names the
    kind: :func:`.frames.javascript_reading_end`), then the close with the kind's code on the
    Speech SDK's route and the reason (:func:`~speech_recognizer.errors.close_args`). Nothing when the client left first.

    ``observe``: counts and logs the refusal once its request is read (or the client left), before it is answered;
    ``failed``: the server's failed turns, where the turn told is kept, so that a request that continues one refused
    the same way (the Speech SDK's core asking again: a drain's refusal is ``ServiceUnavailable``) is observed as such."""
    with waiting.answer():
        request = await waiting.until_request(read)
        again = request is not None and failed is not None and failed.continued(request.continues) is failure.kind
        if observe is not None:
            observe(again)
        if request is None:
            return
        tag = uuid.uuid4().hex
        turn = failed_turn(failure, request.id, tag, request.javascript, again)
        if turn and failed is not None:
            failed.failed(tag, failure.kind)
        named = request.javascript or (told_by_close(failure.kind) and bool(request.id))  # no request: the close at once
        for text in turn or ([javascript_reading_end(failure)] if named else []):
            await send_text(text)
        await close(*close_args(failure, usp=True, javascript=request.javascript))


async def refuse(receive: Receive, send: Send, failure: Failure, waiting: Waiting, observe: Observe | None = None,
                 failed: FailedTurns | None = None) -> None:
    """:func:`answer` on an ASGI WebSocket accepted already (``receive`` and ``send``, its messages)."""

    async def read() -> str | bytes | None:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return None
        text = message.get("text")
        return text if text is not None else (message.get("bytes") or b"")

    async def send_text(text: str) -> None:
        await send({"type": "websocket.send", "text": text})

    async def close(code: int, reason: str) -> None:
        await send({"type": "websocket.close", "code": code, "reason": reason})

    await answer(read, send_text, close, failure, waiting, observe, failed)
