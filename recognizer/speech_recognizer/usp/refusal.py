"""How a Speech SDK connection refused before any turn runs is answered (``MaxConnections``, a drain, a service not
served): the upgrade is taken, the client's messages are read until its request begins, and then the refusal is
told as a turn that fails (:func:`refuse`).

Why not at once: the SDK for JavaScript sends its first messages (``speech.config``, ``speech.context``, the audio's
header) as soon as the socket opens, and one sent after the close frame came fails its recognition with
"websocket send error: Websocket not ready" and a stack trace (``WebsocketMessageAdapter.sendRawMessage``), where
the reason was meant. Why a turn: that SDK words a close's reason only for 1002, 1003, 1007 and 4000
(``ServiceRecognizerBase``'s ``ConnectionClosedEvent`` handler); after any other close it connects again and, with a
stream that has ended, waits for ever. A ``speech.phrase`` whose ``RecognitionStatus`` it knows cancels it at once;
the Python SDK reports the same phrase with its ``Message``. The close then carries the code and the reason as before.

Only :mod:`..errors` and :mod:`.frames` are used: :class:`~speech_recognizer.drain.DrainMiddleware` refuses with it
before any route runs.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .. import contract
from ..errors import Failure, close_args, usp_phrase
from .frames import FrameError, parse_binary, parse_text, text_frame

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

#: How long a connection being refused is read for its request before the close.
REQUEST_WAIT_SECONDS = 5.0


async def until_request(receive: Receive, budget: float = REQUEST_WAIT_SECONDS) -> str | None:
    """Read the client's ASGI messages until one begins its request (``contract.USP_REQUEST_PATHS``, or audio), or
    ``budget`` seconds have passed: that request's ``X-RequestId`` ("" when it has none, or on time out); None when
    the client left first."""
    try:
        async with asyncio.timeout(budget):
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    return None
                try:
                    if message.get("text") is None:  # binary: audio
                        return parse_binary(message.get("bytes") or b"").request_id or ""
                    frame = parse_text(message["text"])
                except FrameError:
                    continue
                if frame.path.lower() in contract.USP_REQUEST_PATHS:
                    return frame.request_id or ""
    except TimeoutError:
        return ""


async def refuse(receive: Receive, send: Send, failure: Failure) -> None:
    """Answer a connection accepted only to be refused: once its request begins (:func:`until_request`), a turn
    that ends with the failure's ``speech.phrase`` (``turn.start``, ``speech.phrase``, ``turn.end``, as
    :meth:`.connection.Turn.fail` ends one) when its kind has a ``usp`` status and the request an id, then the
    close with the kind's code and the reason (:func:`~speech_recognizer.errors.close_args`)."""
    request_id = await until_request(receive)
    if request_id is None:
        return
    if failure.kind.usp and request_id:
        turn: tuple[tuple[str, dict[str, Any]], ...] = (
            ("turn.start", {"context": {"serviceTag": uuid.uuid4().hex}}), ("speech.phrase", usp_phrase(failure)), ("turn.end", {}))
        for path, body in turn:
            await send({"type": "websocket.send", "text": text_frame(path, request_id, body)})
    code, reason = close_args(failure, usp=True)
    await send({"type": "websocket.close", "code": code, "reason": reason})
