"""The aiohttp privates the gateway's relay reads or overrides (operator/speech_operator/gateway_relay.py), pinned with
the installed aiohttp: each exists and has the shape the relay relies on. An aiohttp that renames or reshapes one
fails here, in one test naming the function that depends on it, not as a relay that silently holds more, closes late
or misses a client's close. A real WebSocket on loopback, its server side the relay's own class (:class:`_ClientSide`).
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web, web_ws

from speech_operator.gateway_relay import _bound_writes, _ClientSide, _close_read

pytestmark = pytest.mark.unit  # no model, server, operator or browser: the quick run (README, Tests)

RELAY = "operator/speech_operator/gateway_relay.py"
#: The relay's read-ahead and the write bound on the recognizer's side, both small and not aiohttp's defaults.
READ_AHEAD_BYTES = 8192
WRITE_LIMIT_BYTES = 4096
#: Seconds within which the server side has read the client's message and close on loopback.
QUEUED_WITHIN = 5.0


class _Recorded(_ClientSide):
    """The relay's client side, noting each call aiohttp makes to the hooks the relay overrides."""

    calls: list[str]

    def _post_start(self, request: web.BaseRequest, protocol: str | None, writer: Any) -> None:
        self.calls = ["_post_start"]
        super()._post_start(request, protocol, writer)

    def _close_transport(self) -> None:
        self.calls.append("_close_transport")
        super()._close_transport()


def _same_parameters(name: str) -> list[str]:
    """The parameters of aiohttp's ``WebSocketResponse.<name>`` (asserted to exist), as the relay's override takes them."""
    assert name in vars(web.WebSocketResponse), (
        f"aiohttp {aiohttp.__version__}: web.WebSocketResponse.{name} is gone; {RELAY} _ClientSide.{name} overrides it")
    return list(inspect.signature(getattr(web.WebSocketResponse, name)).parameters)


async def test_the_aiohttp_privates_the_relay_relies_on_exist_with_their_shape() -> None:
    version = aiohttp.__version__
    assert isinstance(getattr(web_ws, "DEFAULT_CHUNK_SIZE", None), int), (
        f"aiohttp {version}: aiohttp.web_ws.DEFAULT_CHUNK_SIZE is gone or no int; {RELAY} _ClientSide._post_start sets it "
        "to bound the queue of a client's messages read and not yet relayed (SPEECH_GATEWAY_READ_BUFFER_BYTES)")
    for name in ("_post_start", "_close_transport"):
        assert _same_parameters(name) == list(inspect.signature(getattr(_ClientSide, name)).parameters), (
            f"aiohttp {version}: web.WebSocketResponse.{name} takes other parameters than {RELAY} _ClientSide.{name}")

    chunk = web_ws.DEFAULT_CHUNK_SIZE
    seen: dict[str, Any] = {}
    handled = asyncio.Event()

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = _Recorded(64 * 1024, READ_AHEAD_BYTES, autoclose=False, autoping=False)
        await ws.prepare(request)
        seen["queue_limit"] = getattr(getattr(ws, "_reader", None), "_limit", None)
        seen["transport"] = ws._req.transport if ws._req is not None else None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + QUEUED_WITHIN
        while _close_read(ws) is None and loop.time() < deadline:  # the client's message and close read, none taken yet
            await asyncio.sleep(0.01)
        seen["queued"] = list(getattr(getattr(ws, "_reader", None), "_buffer", ()))
        seen["close_read"] = _close_read(ws)
        assert (await ws.receive()).type is WSMsgType.BINARY
        await ws.close()
        seen["calls"] = ws.calls
        handled.set()
        return ws

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with aiohttp.ClientSession() as session, session.ws_connect(f"http://127.0.0.1:{port}/") as upstream:
            writer = getattr(upstream, "_writer", None)
            assert isinstance(getattr(writer, "_limit", None), int) and isinstance(
                getattr(writer, "transport", None), asyncio.WriteTransport), (
                f"aiohttp {version}: a ws_connect response's _writer._limit (an int) or _writer.transport is gone; {RELAY} "
                "_bound_writes sets both to bound what waits unsent to a recognizer, relay_websocket and _close_within "
                "read the transport")
            _bound_writes(upstream, WRITE_LIMIT_BYTES)
            assert writer._limit == WRITE_LIMIT_BYTES and writer.transport.get_write_buffer_limits()[1] == WRITE_LIMIT_BYTES
            await upstream.send_bytes(b"audio")
            await writer.send_frame(b"\x03\xe8bye", aiohttp.WSMsgType.CLOSE)  # a close behind it, the socket left open
            await asyncio.wait_for(handled.wait(), 10)
    finally:
        await runner.cleanup()

    assert seen["queue_limit"] == READ_AHEAD_BYTES, (
        f"aiohttp {version}: the queue of messages read a WebSocketResponse makes as it starts is no longer bounded by twice "
        f"web_ws.DEFAULT_CHUNK_SIZE as read then (_reader._limit {seen['queue_limit']!r}, not {READ_AHEAD_BYTES}); {RELAY} "
        "_ClientSide._post_start bounds it so (SPEECH_GATEWAY_READ_BUFFER_BYTES)")
    assert web_ws.DEFAULT_CHUNK_SIZE == chunk, f"{RELAY} _ClientSide._post_start left web_ws.DEFAULT_CHUNK_SIZE changed"
    assert isinstance(seen["transport"], asyncio.Transport), (
        f"aiohttp {version}: a prepared WebSocketResponse's _req.transport is gone; {RELAY} _ClientSide._close_transport reads it")
    assert [type(item) for item in seen["queued"]] == [tuple, tuple] and [msg.type for msg, _ in seen["queued"]] == [
        WSMsgType.BINARY, WSMsgType.CLOSE], (
        f"aiohttp {version}: WebSocketResponse._reader._buffer is gone or holds no (message, size) pairs ({seen['queued']!r}); "
        f"{RELAY} _close_read reads the client's close there, behind messages not yet relayed (getattr: it would find none)")
    assert seen["close_read"] == (1000, b"bye"), seen["close_read"]
    assert seen["calls"] == ["_post_start", "_close_transport"], (
        f"aiohttp {version}: WebSocketResponse no longer calls _post_start as it starts and _close_transport as its close "
        f"ends ({seen['calls']}); {RELAY} _ClientSide overrides both (its read-ahead bound; a close after unsent bytes)")
