"""Hostile clients against what landed with multi-channel processing, repeated key headers and trusted proxies: each
attack gets its clear answer (a close or a status with the reason, one log line, no traceback). A real recognizer on
loopback (the session's, no key) and real WebSocket clients.
"""

from __future__ import annotations

import logging
import uuid

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from harness.usp import timestamp

from ..support import ServerThread

USP = "/speech/recognition/conversation/cognitiveservices/v1?language=ko-KR"
#: JSON nested deeper than the interpreter's recursion limit (1000), well within a WebSocket message (1 MiB).
DEEP = {"an array": "[" * 100_000, "an object": '{"a":' * 50_000}


def _usp_text(path: str, body: str, request_id: str | None) -> str:
    """A USP text frame with ``body`` as written (no JSON encoding: it may be none)."""
    head = f"X-Timestamp:{timestamp()}\r\nPath:{path}\r\n" + (f"X-RequestId:{request_id}\r\n" if request_id else "")
    return f"{head}\r\n{body}"


def _close(url: str, message: str) -> tuple[int, str]:
    """The close code and reason the server answers ``message`` with."""
    with connect(url, subprotocols=["USP"] if "cognitiveservices" in url else None, max_size=1 << 20) as ws:  # type: ignore[list-item]
        ws.send(message)
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=10)
    assert closed.value.rcvd is not None, "closed without a close frame"
    return closed.value.rcvd.code, closed.value.rcvd.reason


@pytest.mark.parametrize("nesting", DEEP)
@pytest.mark.parametrize("where", ["speech.config", "speech.context", "/vosk"])
def test_json_nested_past_the_parsers_depth_is_a_bad_value(server: ServerThread, caplog: pytest.LogCaptureFixture,
                                                           where: str, nesting: str) -> None:
    """A ``speech.config`` or ``speech.context`` (the Speech SDK's route) or a ``/vosk`` text message of JSON nested
    100000 deep (100 KB): close 1007 saying it is nested too deeply, one INFO line. Before, json.loads' RecursionError
    was the server's fault: close 1011 "internal error (RecursionError)" and an ERROR line with its traceback."""
    body = DEEP[nesting]
    if where == "/vosk":
        url, message = f"{server.ws}/vosk?language=ko-KR", body
    else:
        url, message = server.ws + USP, _usp_text(where, body, None if where == "speech.config" else uuid.uuid4().hex)
    with caplog.at_level(logging.INFO, logger="speech_recognizer"):
        code, reason = _close(url, message)
    assert code == 1007 and "nested too deeply" in reason, (code, reason)
    lines = [r for r in caplog.records if r.name == "speech_recognizer.failures"]
    assert [(r.levelno, r.exc_info) for r in lines] == [(logging.INFO, None)], [r.getMessage() for r in lines]
