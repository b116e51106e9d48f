"""A Service's address as its clients meet it: kube-proxy, stood in for by a TCP balancer on loopback.

Each new connection goes to one of the backends ready now, in turn (round robin); a backend can be
made ready or removed, as the endpoint controller does when a pod becomes ready or its deletion starts.
Connections already open stay where they are, as with kube-proxy: only new ones avoid a removed
backend. Bytes are copied as they come, a half-close is passed on, and a connection that breaks on one
side is reset on the other (kube-proxy's NAT passes a reset through).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterable

from tests.support import TcpServerThread


class Balancer(TcpServerThread):
    """Listens on a free loopback port, in a thread of its own, and relays each connection to a ready backend port."""

    def __init__(self, backends: list[int], ready: Iterable[int] | None = None) -> None:
        self.backends = list(backends)
        self.ready = set(range(len(backends)) if ready is None else ready)
        #: Connections open now to each backend (by index).
        self.open: Counter[int] = Counter()
        self.port = 0
        self._turn = 0

    def add(self, index: int) -> None:
        """Put backend ``index`` in the endpoints (its pod is ready): new connections go to it in turn."""
        self._on_loop(self.ready.add, index)

    def remove(self, index: int) -> None:
        """Take backend ``index`` out of the endpoints (its pod's deletion began): no new connection goes
        to it; those open stay."""
        self._on_loop(self.ready.discard, index)

    def _on_loop(self, change: Callable[[int], None], index: int) -> None:
        async def apply() -> None:
            change(index)
        asyncio.run_coroutine_threadsafe(apply(), self.loop).result(10)

    async def relay(self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        ready = sorted(self.ready)
        if not ready:
            client.transport.abort()
            return
        index = ready[self._turn % len(ready)]
        self._turn += 1
        try:
            backend_reader, backend = await asyncio.open_connection("127.0.0.1", self.backends[index])
        except OSError:
            client.transport.abort()
            return
        self.open[index] += 1
        try:
            await asyncio.gather(_copy(client_reader, backend, client), _copy(backend_reader, client, backend))
        finally:
            self.open[index] -= 1
            for side in (client, backend):
                side.close()


async def _copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter, src_writer: asyncio.StreamWriter) -> None:
    """``src`` to ``dst`` until its end (passed on as a half-close); a break resets both sides."""
    try:
        while chunk := await src.read(65536):
            dst.write(chunk)
            await dst.drain()
        if dst.can_write_eof() and not dst.is_closing():
            dst.write_eof()
    except (ConnectionError, OSError):
        for side in (dst, src_writer):
            side.transport.abort()
    except asyncio.CancelledError:
        for side in (dst, src_writer):
            side.transport.abort()
        raise
