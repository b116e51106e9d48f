"""A Speech SDK frame corrupted on its way (a proxy's fault, a bad link): the turn fails ``protocol_error``, the Python
SDK's core asks again, and the server counts the app's recognition once.

The recognizer answers a message it cannot read as the Speech SDK's (here a binary ``audio`` frame whose ``Path``
header was garbled) with ``protocol_error``: the turn's ``speech.phrase`` ``BadRequest``, then a close 1002. After a
failed phrase the Python SDK's core connects again and sends its request and audio again, a few times, each new turn's
``speech.context`` naming the failed one (``continuation.previousServiceTag``), before it reports the failure. So a
one-off corrupted frame is recovered (the next connection recognizes), and a link that corrupts every connection's
is 5 turns of one app recognition: counted and logged at INFO once, the repeats at DEBUG
(``errors.asked_again``), as for a failure of the service's own (tests/jssdk/test_asked_once.py). A close 1007,
which the core reports at once as ``BadRequest``, would end the one-off case canceled.

:class:`CorruptingProxy` sits between the real Python Speech SDK and a real recognizer (the session's ko-KR model) on
loopback: it reads the WebSocket frames after the upgrade and garbles the first audio frame of the connections it is
told to, passing everything else unchanged.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path

import azure.cognitiveservices.speech as speechsdk
import pytest

from speech_recognizer.app import create_app
from speech_recognizer.errors import ASKED_AGAIN_HEADER
from speech_recognizer.models import ModelRegistry

from ..conftest import make_settings
from ..jssdk.test_refusals import refusals
from ..support import ServerThread, TcpServerThread, free_port
from ..ws_frames import frame_size, pieces
from .sdk import config, once

#: The bit flipped in the ``P`` of a binary frame's ``Path`` header (``P`` to ``X``, ``p`` to ``x``): the frame has no
#: path then, which the recognizer answers as a protocol error.
GARBLE = 0x08


def garbled(frame: bytes) -> bytes | None:
    """``frame`` (a whole WebSocket frame from the client, masked) with the ``P`` of its ``Path`` header garbled, when
    it is a binary ``audio`` message; else None. The mask is a XOR: a bit flipped in the masked byte flips it in the
    message."""
    from websockets.utils import apply_mask

    if frame[0] & 0x0F != 2 or not frame[1] & 0x80:
        return None
    at = 2 + {126: 2, 127: 8}.get(frame[1] & 0x7F, 0) + 4  # after the length and the mask
    data = apply_mask(frame[at:], frame[at - 4 : at])
    headers = data[2 : 2 + int.from_bytes(data[:2], "big")].lower()
    if b"path:audio" not in headers.replace(b" ", b""):
        return None
    out = bytearray(frame)
    out[at + 2 + headers.find(b"path")] ^= GARBLE
    return bytes(out)


@dataclass
class CorruptingProxy(TcpServerThread):
    """A TCP relay from 127.0.0.1:``port`` to ``upstream`` that garbles the first audio frame from the client on each
    of its first ``corrupt`` connections (:func:`garbled`), and relays all else unchanged."""

    upstream: int
    corrupt: int
    port: int = field(default_factory=free_port)
    #: Connections accepted, frames garbled, and connections whose failing phrase says the SDK asks again
    #: (:data:`~speech_recognizer.errors.ASKED_AGAIN_HEADER`: a proxy in front, the gateway, times it not).
    accepted: int = 0
    garbled: int = 0
    asked_again: int = 0

    async def relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.accepted += 1
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream)
        corrupt = self.accepted <= self.corrupt

        async def upstream() -> None:
            if corrupt:  # the upgrade request as it is, then whole frames, the first audio one garbled
                garbling = True
                async for piece in pieces(client_r):
                    if garbling and frame_size(piece) == len(piece) and (bad := garbled(piece)) is not None:
                        self.garbled += 1
                        piece, garbling = bad, False
                    up_w.write(piece)
            while data := await client_r.read(1 << 16):  # the rest as it comes
                up_w.write(data)
                await up_w.drain()
            if not up_w.is_closing() and up_w.can_write_eof():
                up_w.write_eof()

        async def downstream() -> None:
            said = bytearray()
            while data := await up_r.read(1 << 16):
                said += data
                client_w.write(data)
                await client_w.drain()
            self.asked_again += ASKED_AGAIN_HEADER.encode() in said
            if not client_w.is_closing() and client_w.can_write_eof():
                client_w.write_eof()

        try:
            await asyncio.gather(upstream(), downstream(), return_exceptions=True)
        finally:
            up_w.close()


def failure_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The server's log lines of ``protocol_error``."""
    return [r for r in caplog.records if r.name == "speech_recognizer.failures" and ": protocol_error" in r.getMessage()]


def test_a_link_that_corrupts_every_connection_is_one_protocol_error_per_recognition(
        registry: ModelRegistry, tmp_path: Path, speech_wav: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Every connection's first audio frame garbled: the Python SDK's recognize-once asks 5 times and is canceled
    ``BadRequest`` with the server's reason; ``speech_refused_total{reason="protocol_error"}`` counts 1 and the server
    logs one INFO line, the 4 repeats at DEBUG, each repeat's failing phrase saying so (``X-Speech-Asked-Again``, which
    the gateway reads: it times the recognition once). Before: 5 counted, 5 INFO lines, no repeat said."""
    caplog.set_level(logging.DEBUG, logger="speech_recognizer.failures")
    with ServerThread(create_app(make_settings(tmp_path), registry)) as srv, CorruptingProxy(srv.port, corrupt=1000) as proxy:
        result = once(config(f"ws://127.0.0.1:{proxy.port}"), speech_wav)
        counted = refusals(srv, "protocol_error")
    assert result.reason == speechsdk.ResultReason.Canceled, result
    details = result.cancellation_details
    assert details.code == speechsdk.CancellationErrorCode.BadRequest and "Path" in details.error_details, details
    lines = failure_lines(caplog)
    told = [r for r in lines if r.levelno >= logging.INFO]
    # the SDK asks 5 times (connections, frames garbled, lines), each repeat said to be one
    assert (counted, len(told), len(lines), proxy.accepted, proxy.garbled, proxy.asked_again) == (1, 1, 5, 5, 5, 4), \
        f"one recognition was {counted:g} protocol errors, {len(told)} INFO lines of {len(lines)}, {proxy.accepted} " \
        f"connections, {proxy.garbled} garbled, {proxy.asked_again} said to be repeats"


def test_a_one_off_corrupted_frame_is_recovered_on_the_next_connection(
        registry: ModelRegistry, tmp_path: Path, speech_wav: Path) -> None:
    """The first connection's first audio frame garbled: its turn fails ``protocol_error`` (counted once), the Python
    SDK connects again and sends its request and audio again, and the app gets the phrase: 2 connections, no cancel."""
    with ServerThread(create_app(make_settings(tmp_path), registry)) as srv, CorruptingProxy(srv.port, corrupt=1) as proxy:
        result = once(config(f"ws://127.0.0.1:{proxy.port}"), speech_wav)
        counted = refusals(srv, "protocol_error")
    assert result.reason == speechsdk.ResultReason.RecognizedSpeech and result.text, (result.reason, result)
    assert (proxy.accepted, proxy.garbled, proxy.asked_again, counted) == (2, 1, 0, 1), (proxy.accepted, proxy.garbled, counted)
