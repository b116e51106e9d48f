"""USP frames: the Speech SDK's text and binary WebSocket messages.

A text frame is header lines (``Name:value``), a blank line, then the body. A
binary frame is a 2-byte big-endian header length, ASCII header lines, then the
payload. Parsing is lenient about spacing, case and line ends; anything that is
not a frame raises :class:`FrameError` with the WebSocket close code to use.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..errors import BAD_VALUE, PROTOCOL_ERROR, Failure, usp_headers

#: Limits the SDK keeps to, and so do we.
MAX_HEADER_BYTES = 8192
MAX_CHUNK_BYTES = 8192

_BLANK = re.compile(r"\r?\n\r?\n")


class FrameError(Failure):
    """A frame the server cannot accept (:data:`~speech_recognizer.errors.BAD_VALUE`, or the kind given)."""

    kind = BAD_VALUE

    @property
    def code(self) -> int:
        """The WebSocket close code it is answered with."""
        return self.kind.close


@dataclass(frozen=True)
class Message:
    """One parsed frame. Header names are lower-cased; compare paths case-insensitively."""

    path: str
    headers: Mapping[str, str]
    body: bytes | str = b""
    binary: bool = False

    @property
    def request_id(self) -> str | None:
        return self.headers.get("x-requestid") or None

    def json(self) -> dict[str, Any]:
        """The body as a JSON object (empty body -> ``{}``); raises :class:`FrameError` otherwise."""
        text = self.body.decode("utf-8", "replace") if isinstance(self.body, bytes) else self.body
        if not text.strip():
            return {}
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise FrameError(f"{self.path} body is not JSON: {exc}") from exc
        except RecursionError:  # the parser's depth is the interpreter's: "[" * 100000 fits in a message
            raise FrameError(f"{self.path} body is nested too deeply") from None
        if not isinstance(data, dict):
            raise FrameError(f"{self.path} body is not a JSON object")
        return data


def parse_headers(block: str) -> dict[str, str]:
    """``Name:value`` lines (CRLF or LF, any spacing, any case) -> ``{name.lower(): value}``."""
    if len(block.encode("utf-8", "replace")) > MAX_HEADER_BYTES:
        raise FrameError(f"headers exceed {MAX_HEADER_BYTES} bytes")
    headers: dict[str, str] = {}
    for line in block.splitlines():
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip() or " " in name.strip():
            raise FrameError(f"malformed header line {line[:60]!r}")
        headers[name.strip().lower()] = value.strip()
    return headers


def _require_path(headers: Mapping[str, str]) -> str:
    path = headers.get("path", "").strip()
    if not path:
        raise FrameError("frame without a Path header", PROTOCOL_ERROR)
    return path


def parse_text(text: str) -> Message:
    """Parse a text frame; a frame without the blank line after its headers is malformed."""
    match = _BLANK.search(text)
    if match is None:
        # Headers only, ending with a single line break, are accepted (an empty body).
        if text.endswith("\n"):
            head, body = text, ""
        else:
            raise FrameError("text frame without a blank line after its headers")
    else:
        head, body = text[: match.start()], text[match.end() :]
    headers = parse_headers(head)
    return Message(_require_path(headers), headers, body, binary=False)


def parse_binary(data: bytes) -> Message:
    """Parse a binary frame: 2-byte big-endian header length, ASCII headers, payload."""
    if len(data) < 2:
        raise FrameError("binary frame shorter than its 2-byte header length")
    size = int.from_bytes(data[:2], "big")
    if size > MAX_HEADER_BYTES:
        raise FrameError(f"binary frame headers of {size} bytes exceed {MAX_HEADER_BYTES}")
    if size > len(data) - 2:
        raise FrameError(f"binary frame header length {size} exceeds the frame")
    try:
        head = data[2 : 2 + size].decode("ascii")
    except UnicodeDecodeError as exc:
        raise FrameError("binary frame headers are not ASCII") from exc
    payload = data[2 + size :]
    if len(payload) > MAX_CHUNK_BYTES:
        raise FrameError(f"audio chunk of {len(payload)} bytes exceeds {MAX_CHUNK_BYTES}")
    headers = parse_headers(head)
    return Message(_require_path(headers), headers, payload, binary=True)


def previous_service_tag(context: Mapping[str, Any]) -> str:
    """``continuation.previousServiceTag`` of a ``speech.context``: the ``turn.start`` tag of the turn it continues
    ("" when there is none)."""
    continuation = context.get("continuation")
    tag = continuation.get("previousServiceTag") if isinstance(continuation, dict) else None
    return tag if isinstance(tag, str) else ""


def from_javascript_sdk(config: Mapping[str, Any]) -> bool:
    """Whether a ``speech.config`` body comes from the SDK for JavaScript (``context.system.lang``), which is told a
    refusal it knows no status for by a close (:func:`~speech_recognizer.errors.usp_status`)."""
    context = config.get("context")
    system = context.get("system") if isinstance(context, Mapping) else None
    return isinstance(system, Mapping) and system.get("lang") == "JavaScript"


def timestamp(now: datetime | None = None) -> str:
    """An ``X-Timestamp`` value: UTC ISO 8601 with milliseconds and ``Z``."""
    now = now or datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def _head(lines: Mapping[str, str]) -> str:
    return "".join(f"{name}:{value}\r\n" for name, value in lines.items())


def text_frame(path: str, request_id: str, body: Mapping[str, Any] | str, extra: Mapping[str, str] = {}) -> str:
    """A text frame as the service writes it (JSON body, CRLF headers)."""
    payload = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    headers = {
        "X-RequestId": request_id,
        "Path": path,
        "Content-Type": "application/json; charset=utf-8",
        "X-Timestamp": timestamp(),
        **extra,
    }
    return _head(headers) + "\r\n" + payload


#: The path of :func:`javascript_reading_end`'s message: one no SDK handles.
READING_END_PATH = "connection.closing"


def javascript_reading_end(failure: Failure) -> str:
    """The text message the SDK for JavaScript gets just before a close that alone tells it ``failure``
    (:data:`~speech_recognizer.errors.JAVASCRIPT_CLOSES`): one with no ``X-RequestId``, naming the failure's kind
    (:func:`~speech_recognizer.errors.usp_headers`). Another SDK gets it before a close that tells it a status in its
    stead (:data:`~speech_recognizer.errors.CORE_CLOSES`), for the kind it names (a proxy in front reads it); it passes
    over the message.

    That SDK keeps a closed connection for its recognizer's next recognition unless the service sent it a message on
    it (``ServiceRecognizerBase.reconnect``: ``privServiceHasSentMessage``), and then fails it ("Cannot send on
    connection that is in Disconnected state"); and after a close on which it got one, its reading connects again at
    once and sends its request again, without audio, unless its reading ended (``receiveMessage``). This message is
    one it got, and its reading ends on it (``SpeechConnectionMessage.fromConnectionMessage`` throws for want of a
    request id, which ``receiveMessage`` takes as its end): the close then cancels the recognition with its reason,
    and the recognizer's next recognition connects anew."""
    return _head({"Path": READING_END_PATH, "Content-Type": "application/json; charset=utf-8", "X-Timestamp": timestamp(),
                  **usp_headers(failure)}) + "\r\n{}"


class RequestIds:
    """The request ids of a connection's last finished turns: a reused one is a protocol error, and
    audio still in flight for one is dropped.

    Only the last :attr:`REMEMBERED` are kept, as 16-byte digests: a connection of many turns stays
    small whatever its ids (remembering every id, 60,000 turns of 8 KB ids held 465 MB). An id
    reused after that many turns is taken as a new turn.
    """

    REMEMBERED = 64

    def __init__(self) -> None:
        self._recent: OrderedDict[bytes, None] = OrderedDict()

    @staticmethod
    def _digest(request_id: str) -> bytes:
        return hashlib.blake2b(request_id.encode("utf-8", "surrogatepass"), digest_size=16).digest()

    def __len__(self) -> int:
        return len(self._recent)

    def retire(self, request_id: str) -> None:
        self._recent[self._digest(request_id)] = None
        while len(self._recent) > self.REMEMBERED:
            self._recent.popitem(last=False)

    def finished(self, request_id: str) -> bool:
        return self._digest(request_id) in self._recent

    def check_new(self, request_id: str) -> None:
        if self.finished(request_id):
            raise FrameError(f"X-RequestId {request_id[:40]} was already used", PROTOCOL_ERROR)
