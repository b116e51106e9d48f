"""USP frames as the Speech SDK writes them: what a client sends (the server only parses these)."""

from __future__ import annotations

import json
from collections.abc import Mapping

from speech_recognizer.usp.frames import timestamp


def _head(lines: Mapping[str, str]) -> str:
    return "".join(f"{name}:{value}\r\n" for name, value in lines.items())


def binary_frame(headers: Mapping[str, str], payload: bytes) -> bytes:
    """A binary frame: 2-byte big-endian header length, ASCII header lines, payload (what the SDK sends for audio)."""
    head = _head(headers).encode("ascii")
    return len(head).to_bytes(2, "big") + head + payload


def client_text_frame(path: str, request_id: str | None, body: object) -> str:
    """A text frame as the Speech SDK writes it (``speech.config`` carries no request id)."""
    headers = {"X-Timestamp": timestamp(), "Path": path}
    if request_id:
        headers["X-RequestId"] = request_id
    return _head(headers) + "\r\n" + json.dumps(body)


def client_audio_frame(request_id: str, payload: bytes, stream_id: str = "1") -> bytes:
    """An ``audio`` frame as the SDK sends it (an empty payload ends the stream)."""
    return binary_frame({"X-Timestamp": timestamp(), "Path": "audio", "X-RequestId": request_id, "X-StreamId": stream_id}, payload)
