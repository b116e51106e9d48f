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

At most :data:`QUEUED_MAX` Events of one object wait: a SpeechToText that flaps (Degraded, Recovered, Degraded...)
faster than the API server takes its Events drops its oldest waiting, not its newest, and says how many in one line once
its queue empties. The newest say what holds now. Coalescing a repeat into a waiting Event of its reason, as client-go's
event aggregation and series do, would bound a run of one reason only, not a flapping object's alternation, and by
moving the repeat ahead of what came between it would end the object's story on the wrong state. At the operator's
exit the Events still waiting get up to :data:`EXIT_GRACE_SECONDS` to be posted (kopf's own poster drops its Events
then), and those left are one line.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import logging
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import kopf

from speech_operator import api, builders
from speech_operator.kube import UNANSWERED, Kube, KubeError, path

log = logging.getLogger(__name__)

#: How long an Event's message may be: :func:`cut` cuts a longer one to this. kopf's poster (its fallback,
#: :meth:`Events._post`) would cut it there too, in the middle (kopf._cogs.clients.events), and client-go's recorders
#: and events.k8s.io's ``note`` keep to 1 KiB as well (the API server takes a longer core/v1 message).
MAX_MESSAGE = 1024
#: How many Event POSTs are in flight at once: they share the operator's client (100 connections) with the reconciles.
IN_FLIGHT = 8
#: How many SpeechToTexts :class:`Going` remembers (the latest): one forgotten costs at most one more refused POST.
GOING_KEPT = 4096
#: How many Events of one object wait to be posted at most (the one in flight aside): the oldest waiting goes first.
#: client-go lets a source post 25 Events about one object at once, then one each 5 minutes (its spam filter).
QUEUED_MAX = 32
#: How long the operator's exit waits for the Events not yet posted (:meth:`Events.close`).
EXIT_GRACE_SECONDS = 3.0


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


def cut(message: str, name: str) -> str:
    """An Event's ``message`` about the SpeechToText ``name`` within :data:`MAX_MESSAGE`: whole, else its start up to a
    word's end, "…", and where it is whole. Its start says what is wrong and what refused it (the API server's words
    begin with the webhook or the quota that refuses); kopf's cut kept the start and the end, and lost the middle
    wherever it fell, mid-word. The long ones are a condition's message (an admission webhook's refusal quoted whole),
    which the status keeps to 32768 characters and the operator's log line whole."""
    if len(message) <= MAX_MESSAGE:
        return message
    tail = f" … (cut from {len(message)} characters: kubectl get {api.SHORT_NAMES[0]} {name} -o yaml has it whole)"
    room = MAX_MESSAGE - len(tail)
    end = max((i for i in range(room // 2, room + 1) if message[i].isspace()), default=room)
    return message[:end].rstrip() + tail


def event_body(obj: Mapping[str, Any], type_: str, reason: str, message: str) -> dict[str, Any]:
    """A core/v1 Event about ``obj`` as kopf's poster words its own: the type, reason and message (:func:`cut` to
    :data:`MAX_MESSAGE`), the operator's component, the object's reference (kopf's fields, the empty ones left out)."""
    meta, at = obj["metadata"], now()
    message = cut(message, str(meta.get("name")))
    ref = {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), "name": meta.get("name"),
           "uid": meta.get("uid"), "namespace": meta.get("namespace")}
    return {"apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {k: v for k, v in ref.items() if v},
            "type": type_, "reason": reason, "message": message, "count": 1, "firstTimestamp": at,
            "lastTimestamp": at, "source": {"component": builders.MANAGER}, "reportingComponent": builders.MANAGER}


@dataclass
class _Queue:
    """One object's Events not yet posted (``about``: the object, in words): those waiting, whether one is being posted,
    how many waiting were dropped."""

    about: str
    waiting: collections.deque[tuple[Mapping[str, Any], dict[str, Any]]] = field(default_factory=collections.deque)
    posting: bool = False
    dropped: int = 0


class Events:
    """Posts the operator's Events (:meth:`post`), each object's in order, in the background."""

    def __init__(self, kube: Kube, going: Going) -> None:
        self.kube, self.going = kube, going
        self._queues: dict[Hashable, _Queue] = {}
        self._workers: set[asyncio.Task[None]] = set()
        self._in_flight = asyncio.Semaphore(IN_FLIGHT)
        self._exiting = False
        #: Events refused for a cause kopf's poster would have tried again, once it has stopped (the operator's exit).
        self._unposted = 0

    def post(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """Post an Event of ``type_`` (Normal, Warning) about ``obj`` soon; nothing when its namespace is known to be
        going (:class:`Going`). Returns at once, as kopf's ``kopf.info`` does."""
        meta = obj["metadata"]
        if meta.get("uid") in self.going:
            return
        key = meta.get("uid") or (meta.get("namespace"), meta.get("name"))
        queue = self._queues.get(key)
        started = queue is None
        if queue is None:
            queue = self._queues[key] = _Queue(f"{api.KIND} {meta.get('namespace')}/{meta.get('name')}")
        if len(queue.waiting) >= QUEUED_MAX:
            queue.waiting.popleft()
            queue.dropped += 1
        queue.waiting.append((obj, event_body(obj, type_, reason, message)))
        if started:
            worker = asyncio.get_running_loop().create_task(self._drain(key), name=f"Events of {api.KIND} {meta.get('name')}")
            self._workers.add(worker)
            worker.add_done_callback(self._workers.discard)

    async def _drain(self, key: Hashable) -> None:
        queue = self._queues[key]
        try:
            while queue.waiting:
                obj, body = queue.waiting.popleft()
                queue.posting = True
                if obj["metadata"].get("uid") not in self.going:
                    async with self._in_flight:
                        await self._post(obj, body)
                queue.posting = False
        finally:
            del self._queues[key]  # nothing awaited since the loop saw it empty: no Event is left in it
            if queue.dropped:
                log.warning("%s: %d of its Events were dropped unposted, the oldest waiting (at most %d wait): they came "
                            "faster than the API server took them", queue.about, queue.dropped, QUEUED_MAX)

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
        except UNANSWERED:
            pass
        if self._exiting:  # kopf's poster has stopped: it would drop it unsaid (counted by :meth:`close`)
            self._unposted += 1
            return
        kopf.event(event_target(obj), type=body["type"], reason=body["reason"], message=body["message"])

    async def close(self, grace: float = EXIT_GRACE_SECONDS) -> None:
        """End the posting at the operator's exit, after up to ``grace`` seconds for the Events not yet posted (kopf's
        own poster has stopped by then, its Events not posted dropped); those left are one line."""
        self._exiting = True
        workers = list(self._workers)
        if workers:
            await asyncio.wait(workers, timeout=grace)
        left = sum(len(q.waiting) + q.posting for q in self._queues.values())
        workers = list(self._workers)  # with any started meanwhile
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        left += self._unposted
        if left:
            log.warning("%d Events were not posted at the operator's exit: the API server did not take them within %g s",
                        left, grace)
