"""Waking a locale at zero pods: the gateway holds its requests, asks the operator, and forwards them
as soon as a pod is ready.

A request or stream for a SpeechToText with no ready pod (at zero, or starting) is held, not
refused: the client sees a slower first answer. What nothing the gateway asks for would wake is refused at once
(:func:`unwakeable`): one scaled to zero by hand, without ``spec.autoscaling``, and one an HPA or KEDA pointed at its
Deployment holds at zero (``status.foreignAutoscalers``; the operator's autoscaler, which the gateway asks, leaves it to
them): KEDA wakes it on its own triggers, and a ``Retry-After`` brings the client back then, where a hold would keep it
waiting for ``hold_seconds`` and answer 503 all the same; and one with no pod whose spec the operator refuses
(SpecTooLarge, PolicyViolation: it makes no pod until the spec is mended). One an HPA holds above a spec.replicas of 0
is held: its pods are coming. While anything is held for an autoscaled SpeechToText the gateway asks the
operator for a pod, by writing ``status.demand.requestedAt`` (under its own field manager, the
only write it may make: ``patch`` on ``speechtotexts/status``), again every
:data:`ASK_AGAIN_SECONDS` while it still holds. The operator's autoscaler wakes the locale at once
(:mod:`speech_operator.autoscaler`); its pod's readiness reaches the gateway through the watch.

Bounded twice: a request held longer than ``hold_seconds`` gets 503 + ``Retry-After`` (REST) or
close 1013 (WebSockets), and past ``max_held`` requests held at once the next one gets the same
at once. A WebSocket is accepted while it is held, and read meanwhile, so that its keepalive pings
are answered (a client would otherwise give the connection up): what it sends is kept, in order,
until :data:`HOLD_BUFFER_BYTES` are kept (or that and up to one message more: aiohttp reads messages
whole, so the one that passes the mark is kept whole), and then no more is read until the stream is
relayed (the client is held back, as backpressure holds it back anyway).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import WSMessage, WSMsgType, web
from kubernetes_asyncio import client as k8s

from speech_operator import api
from speech_operator import gateway_failures as failures
from speech_operator.gateway_directory import Backend, Directory

log = logging.getLogger("speech_operator.gateway")

#: How often the gateway asks again while it still holds requests for a locale.
ASK_AGAIN_SECONDS = 5.0
#: Seconds one ask (the status patch) may take: an API server away must not hold the request past its hold time.
ASK_SECONDS = 5.0
#: What a held WebSocket may send before the gateway stops reading it: 8 s of 16-kHz audio.
HOLD_BUFFER_BYTES = 256 * 1024
#: The gateway's field manager for ``status.demand``.
FIELD_MANAGER = "speech-gateway"


def unwakeable(backend: Backend) -> failures.Failure | None:
    """Why a request for ``backend`` (no ready pod) is refused at once rather than held: at 0 replicas by its
    spec and by the operator's word with no ``spec.autoscaling`` (an HPA holding its Deployment above a spec.replicas
    of 0 has pods coming), or at 0 by an autoscaler that scales its Deployment instead of it (the operator's, which the
    gateway would ask, leaves it to that one); or with no pod at all while the operator refuses its spec (it makes
    none until the spec is mended). None: it is held."""
    where = f"{backend.locale} ({backend.namespace}/{backend.name})"
    if backend.refused and backend.pods == 0:  # its reason first: a close reason keeps 123 bytes
        return failures.Failure(f"{backend.refused}: the operator refuses the SpeechToText of {where} and makes no pod "
                                "for it until its spec is mended (kubectl describe says why)", failures.UNAVAILABLE)
    if backend.replicas != 0:
        return None
    if backend.held_by:  # its name first: a close reason keeps 123 bytes
        return failures.Failure(f"{', '.join(backend.held_by)} {'holds' if len(backend.held_by) == 1 else 'hold'} the "
                                f"recognizer of {where} at 0 replicas, not its SpeechToText: the gateway cannot wake it; "
                                "try again later", failures.HELD_AT_ZERO)
    if not backend.autoscaled and backend.spec_replicas == 0:
        return failures.Failure(f"the recognizer of {where} is scaled to 0 replicas and nothing wakes it (no "
                                "spec.autoscaling)", failures.UNAVAILABLE)
    return None


@dataclass
class Waker:
    """Holds requests for SpeechToTexts with no ready pod until one is ready (bounded), asking the operator."""

    directory: Directory
    #: The API client for ``status.demand``; ``None``: never asks (nobody would answer).
    api_client: k8s.ApiClient | None
    hold_seconds: float = 120.0
    max_held: int = 100
    held: int = 0
    _asked: dict[tuple[str, str], float] = field(default_factory=dict)

    async def ready(self, backend: Backend) -> Backend:
        """``backend`` once it has a ready pod (at once when it has one); raises
        :class:`~speech_operator.gateway_failures.Failure` past the bounds."""
        if backend.ready_replicas > 0:
            return backend
        if (refused := unwakeable(backend)) is not None:
            raise refused
        if self.held >= self.max_held:
            raise failures.Failure(f"the recognizer of {backend.locale} is starting and {self.held} requests already wait "
                                   f"for recognizers here (at most {self.max_held}); try again shortly", failures.TOO_MANY_HELD)
        self.held += 1
        deadline = time.monotonic() + self.hold_seconds
        try:
            while True:
                change = self.directory.next_change()
                current = self.directory.get(backend.key)
                if current is None:
                    raise failures.Failure(f"the SpeechToText {backend.namespace}/{backend.name} of {backend.locale} "
                                           "was deleted while the request waited", failures.UNAVAILABLE)
                if current.ready_replicas > 0:
                    return current
                if (refused := unwakeable(current)) is not None:  # scaled to 0, or taken by an HPA at 0, meanwhile
                    raise refused
                if current.autoscaled:
                    await self._ask(current)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise failures.Failure(f"no recognizer of {backend.locale} became ready within {self.hold_seconds:g} s; "
                                           "it may still be starting: try again", failures.WAKE_TIMEOUT)
                await self.directory.changed(timeout=min(remaining, ASK_AGAIN_SECONDS), since=change)
        finally:
            self.held -= 1

    async def _ask(self, backend: Backend) -> None:
        """Write ``status.demand`` (at most every :data:`ASK_AGAIN_SECONDS` per SpeechToText)."""
        if self.api_client is None:
            return
        now = time.monotonic()
        if now - self._asked.get(backend.key, -ASK_AGAIN_SECONDS) < ASK_AGAIN_SECONDS:
            return
        self._asked[backend.key] = now
        stamp = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        try:
            await k8s.CustomObjectsApi(self.api_client).patch_namespaced_custom_object_status(
                api.GROUP, api.VERSION, backend.namespace, api.PLURAL, backend.name,
                {"status": {"demand": {"requestedAt": stamp}}},
                # _content_type: the generated client takes it in **kwargs, which its type hints omit
                field_manager=FIELD_MANAGER, _content_type="application/merge-patch+json",  # type: ignore[call-arg]
                _request_timeout=ASK_SECONDS)
            log.info("gateway: a request waits for %s: asked the operator to wake %s/%s", backend.locale,
                     backend.namespace, backend.name)
        except k8s.ApiException as exc:  # the request still waits; the next ask may pass
            log.warning("gateway: could not ask for a pod of %s/%s: HTTP %s %s", backend.namespace, backend.name,
                        exc.status, exc.reason)
        except (aiohttp.ClientError, TimeoutError) as exc:  # the API server away or silent: likewise
            log.warning("gateway: could not ask for a pod of %s/%s: the API server did not answer: %s", backend.namespace,
                        backend.name, f"{type(exc).__name__}: {exc}".rstrip(": "))


async def hold_websocket(client: web.WebSocketResponse, waiting: asyncio.Future[Backend],
                         transport: asyncio.BaseTransport | None = None) -> list[WSMessage] | None:
    """Read ``client`` while ``waiting`` runs: its pings answered, what it sends kept in order (until
    :data:`HOLD_BUFFER_BYTES` are kept, or up to one message more). The messages kept, or ``None`` when the
    client left meanwhile.

    Once that much is kept its connection (``transport``) is not read until this returns: aiohttp would otherwise read on
    into its own queue of messages, up to 512 KiB more, and more than doubled what a held WebSocket costs (bench/notes.md,
    "Gateway: memory per connection", ``wsheld``)."""
    kept: list[WSMessage] = []
    size = 0
    paused = False

    async def read() -> bool:
        nonlocal size
        while size < HOLD_BUFFER_BYTES:
            msg = await client.receive()
            if msg.type is WSMsgType.PING:
                await client.pong(msg.data)
            elif msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                kept.append(msg)
                size += len(msg.data)
            elif msg.type is not WSMsgType.PONG:
                return False  # a close, or the connection lost
        nonlocal paused
        if isinstance(transport, asyncio.ReadTransport) and transport.is_reading():
            transport.pause_reading()
            paused = True
        await asyncio.Future()  # held back: read no more until the relay does
        return True

    reader = asyncio.ensure_future(read())
    try:
        either: set[asyncio.Future[Any]] = {reader, waiting}
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not reader.done():
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        if paused and isinstance(transport, asyncio.ReadTransport) and not transport.is_closing():
            transport.resume_reading()  # the relay reads on (aiohttp's own flow control again)
    if reader.done() and not reader.cancelled() and reader.exception() is None and reader.result() is False:
        waiting.cancel()
        return None
    return kept
