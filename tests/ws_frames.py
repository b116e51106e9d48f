"""A WebSocket connection's bytes as the relays of the tests split them: its upgrade head, then each whole frame.

Test relays that hold back, delay or garble a frame of a real client's or server's stream (tests/usp's AudioEndProxy
and corrupted link, tests/jssdk's LateClose) read the same way: the HTTP upgrade through its blank line, then the frames
one by one (RFC 6455 5.2)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator


def frame_size(data: bytes | bytearray) -> int | None:
    """The length of the WebSocket frame ``data`` begins with (RFC 6455 5.2), None while it is not all there."""
    if len(data) < 2:
        return None
    size, at = data[1] & 0x7F, 2
    if size >= 126:
        wide = 2 if size == 126 else 8
        if len(data) < at + wide:
            return None
        size, at = int.from_bytes(data[at : at + wide], "big"), at + wide
    at += 4 if data[1] & 0x80 else 0  # the client's frames are masked
    return at + size if len(data) >= at + size else None


async def pieces(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    """What ``reader`` carries, in order: the upgrade head (request or response, through its blank line), then each
    whole frame as it is all there; at the end of the connection, what is left of a frame cut short. Nothing at all
    from a connection that ends before its head does."""
    try:
        yield await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return
    pending = bytearray()
    while data := await reader.read(1 << 16):
        pending += data
        while (size := frame_size(pending)) is not None:
            yield bytes(pending[:size])
            del pending[:size]
    if pending:
        yield bytes(pending)
