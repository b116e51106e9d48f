"""The Events the operator posts about its SpeechToTexts (``kubectl describe stt``): every one goes through
:meth:`Events.post`.

kopf's poster (``kopf.info``, ``kopf.warn``) tries a refused Event again 8 times over 54 s, an ERROR line each, whatever
the refusal. A namespace being deleted refuses every create in it, Events included (403 Forbidden, cause
NamespaceTerminating), while its pods, its Deployments and so its SpeechToTexts' conditions change: each Event said
then was 9 refused POSTs and 9 ERROR lines, on an everyday operation (CI clusters delete namespaces all the time).
Here an Event is posted with the operator's own client, in the background as kopf posts its own (a reconcile never
waits for it), in order per object; the first refused for its namespace is one INFO line, and nothing more is posted
or created for that object (:class:`Going`, which :func:`speech_operator.reconcile.reconcile` reads too). Any other
failure (a 5xx, a timeout, a webhook) hands the Event to kopf's poster, which tries it again, as before.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import logging
from collections.abc import Hashable, Mapping
from typing import Any, cast

import aiohttp
import kopf

from speech_operator import api, builders
from speech_operator.kube import Kube, KubeError, path

log = logging.getLogger(__name__)

#: How long an Event's message may be: kopf's poster cuts a longer one to this, keeping its start and end
#: (kopf._cogs.clients.events), and so does :func:`event_body`.
MAX_MESSAGE = 1024
#: How many Event POSTs are in flight at once: they share the operator's client (100 connections) with the reconciles.
IN_FLIGHT = 8
#: How many SpeechToTexts :class:`Going` remembers (the latest): one forgotten costs at most one more refused POST.
GOING_KEPT = 4096


class Going:
    """The uids of the SpeechToTexts whose namespace is being deleted (a create in it was refused for that): nothing more
    is created for them, Events included. The last :data:`GOING_KEPT` of them: an Event refused after its object's
    deletion adds one that nothing removes."""

    def __init__(self) -> None:
        self._uids: dict[str, None] = {}

    def __contains__(self, uid: object) -> bool:
        return uid in self._uids

    def add(self, uid: str | None) -> None:
        if uid:
            self._uids.pop(uid, None)
            self._uids[uid] = None
            while len(self._uids) > GOING_KEPT:
                del self._uids[next(iter(self._uids))]

    def discard(self, uid: str | None) -> None:
        self._uids.pop(uid or "", None)


def event_target(obj: Mapping[str, Any]) -> kopf.Body:
    """The object an Event is about, for kopf's event functions: they read only its apiVersion, kind
    and metadata, and are typed for kopf's own Body."""
    return cast(kopf.Body, dict(obj))


def now() -> str:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def event_body(obj: Mapping[str, Any], type_: str, reason: str, message: str) -> dict[str, Any]:
    """A core/v1 Event about ``obj`` as kopf's poster words its own: the type, reason and message (cut to
    :data:`MAX_MESSAGE` as kopf cuts it), the operator's component, the object's reference (kopf's fields, the empty
    ones left out)."""
    meta, at = obj["metadata"], now()
    if len(message) > MAX_MESSAGE:
        message = f"{message[:MAX_MESSAGE // 2 - 1]}...{message[-MAX_MESSAGE // 2 + 2:]}"
    ref = {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), "name": meta.get("name"),
           "uid": meta.get("uid"), "namespace": meta.get("namespace")}
    return {"apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {k: v for k, v in ref.items() if v},
            "type": type_, "reason": reason, "message": message, "count": 1, "firstTimestamp": at,
            "lastTimestamp": at, "source": {"component": builders.MANAGER}, "reportingComponent": builders.MANAGER}


class Events:
    """Posts the operator's Events (:meth:`post`), each object's in order, in the background."""

    def __init__(self, kube: Kube, going: Going) -> None:
        self.kube, self.going = kube, going
        self._queues: dict[Hashable, collections.deque[tuple[Mapping[str, Any], dict[str, Any]]]] = {}
        self._workers: set[asyncio.Task[None]] = set()
        self._in_flight = asyncio.Semaphore(IN_FLIGHT)

    def post(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """Post an Event of ``type_`` (Normal, Warning) about ``obj`` soon; nothing when its namespace is known to be
        going (:class:`Going`). Returns at once, as kopf's ``kopf.info`` does."""
        meta = obj["metadata"]
        if meta.get("uid") in self.going:
            return
        key = meta.get("uid") or (meta.get("namespace"), meta.get("name"))
        queued = self._queues.get(key)
        if queued is not None:
            queued.append((obj, event_body(obj, type_, reason, message)))
            return
        self._queues[key] = collections.deque([(obj, event_body(obj, type_, reason, message))])
        worker = asyncio.get_running_loop().create_task(self._drain(key), name=f"Events of {api.KIND} {meta.get('name')}")
        self._workers.add(worker)
        worker.add_done_callback(self._workers.discard)

    async def _drain(self, key: Hashable) -> None:
        queued = self._queues[key]
        try:
            while queued:
                obj, body = queued.popleft()
                if obj["metadata"].get("uid") not in self.going:
                    async with self._in_flight:
                        await self._post(obj, body)
        finally:
            del self._queues[key]  # nothing awaited since the loop saw it empty: no Event is left in it

    async def _post(self, obj: Mapping[str, Any], body: dict[str, Any]) -> None:
        meta = obj["metadata"]
        try:
            await self.kube.create(path("v1", "events", meta["namespace"]), body)
            return
        except KubeError as exc:
            if exc.namespace_terminating:
                self.going.add(meta.get("uid"))
                log.info("%s %s/%s: its namespace is being deleted: nothing more is created in it, Events included "
                         "(its %s Event %s was refused)", api.KIND, meta["namespace"], meta["name"], body["type"],
                         body["reason"])
                return
        except (TimeoutError, aiohttp.ClientError):
            pass
        kopf.event(event_target(obj), type=body["type"], reason=body["reason"], message=body["message"])

    async def close(self) -> None:
        """End the posting (the operator's exit: kopf's own poster has stopped by then, its Events not posted dropped)."""
        workers = list(self._workers)
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
