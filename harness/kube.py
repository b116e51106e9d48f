"""kmock's Kubernetes emulator, plus what a real API server does that the operator relies on, with
the operator's resources declared: what the operator's tests and its benchmark run kopf against."""

from __future__ import annotations

import asyncio
import collections
import copy
import datetime
import itertools
import random
import re
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import aiohttp.web
import attrs
import jsonpatch
import kmock
from kmock._internal import aiobus
from kmock._internal import dicts as kmock_dicts
from kmock._internal import k8s as kmock_k8s
from kmock._internal import parsing as kmock_parsing

from speech_operator import api
from speech_operator.kube import APPLY_PATCH, USER_AGENT
from speech_operator.record import ANNOTATIONS_MAX_BYTES, annotations_bytes

#: The namespace the emulator's tests and benchmarks create their objects in.
NAMESPACE = "speech"
STT_RESOURCE = f"{api.GROUP}/{api.VERSION}/{api.PLURAL}"


@attrs.mutable(weakref_slot=True)
class _Bus(aiobus.Bus[Any]):
    """kmock's bus of one resource's watch events, which also keeps every event it carried (``history``: what a watch
    from a resourceVersion replays, as the API server's watch cache does) and gives each DELETED event a version of its
    own (``stamp``). The history grows in the same step as the bus, so a watch that marks the bus and reads the
    history at once (no await between) has every event exactly once: replayed, or streamed after its mark."""

    history: list[dict[str, Any]] = attrs.field(factory=list)
    stamp: Callable[[dict[str, Any]], dict[str, Any]] = attrs.field(default=lambda event: event)

    async def put(self, *items: Any, logged: bool = True) -> None:
        items = tuple(self.stamp(item) if isinstance(item, dict) else item for item in items)
        async with self._condition:
            if logged:
                self.history.extend(item for item in items if isinstance(item, dict))
            self._buffer.extend(items)
            self._condition.notify_all()
            self._streamed_count += len(items)
        await self._flush()


#: A page a proxy in front of the API server answers with (:attr:`Emulator.garbled`).
PROXY_PAGE = "<html><head><title>502 Bad Gateway</title></head><body><center>nginx</center></body></html>"


class Emulator(kmock.KubernetesEmulator):
    """kmock's emulator plus what a real API server does that the operator relies on.

    - On create: a name from generateName, a uid, creationTimestamp and resourceVersion (kopf's JSON patches test
      it), whatever the client sent, and generation 1 where the registry keeps one (:func:`_generated`: not a
      Namespace's, a Service's, a Pod's); a create that sends a resourceVersion is refused, 500, as there
      (:func:`version_on_create`).
    - The status subresource: a resource that has one (declared so: :func:`declare`) ignores a status written to its
      main resource and a create's, and its ``/status`` all but the status (:func:`_status_split`).
    - Versions as etcd keeps them (kmock keeps the create's forever): every stored change (a PATCH, an apply, a
      deletion marked by deletionTimestamp) gets a new resourceVersion from one counter across all objects, and its
      watch event carries it; a write that changes nothing (the same labels again) stores nothing: the same
      resourceVersion, no watch event (kopf's consistency wait and its "nothing changed" depend on both). A JSON
      patch whose ``test`` fails (kopf's optimistic lock on resourceVersion) is 422, as there (kmock: a 500). An
      update whose object carries a resourceVersion other than the stored one (a PUT, a patch of any type, an apply
      that sends one) is 409 Conflict and stores nothing, as there (:func:`_stale`; kmock stored it); a PUT is a
      replace (:func:`_replaced`; kmock served none).
    - A list's resourceVersion is the newest there is (etcd's revision; kmock's is ``...``), and a watch from a
      resourceVersion replays every event after it as it happened, then what follows, as the watch cache does
      (:meth:`_serve_watch`; 410 Expired once :meth:`compact` forgot it): kmock started every watch with an ADDED of
      each object, so kopf's watch after its list had each object twice, a change since the list came as ADDED and a
      deletion since not at all. A DELETED event carries the deletion's own resourceVersion, and removing the last
      finalizer of an object being deleted deletes it: one DELETED, no MODIFIED (:meth:`_versioned`). A watch ends
      at its ``timeoutSeconds``, else after 30 to 60 minutes (:attr:`min_request_timeout`), its answer simply ending,
      and what it sent is kept (:attr:`streamed`): kmock's never ended, so a client's watch from the last version it
      saw never ran.
    - ``labelSelector`` and ``fieldSelector`` on a list or a watch, which kmock reads neither of (:func:`_selection`;
      a watch sends the events of the objects its selector holds, not the API server's ADDED or DELETED for an object
      a change brings into or out of it).
    - ``metadata.generation`` as the registry counts it: one up when a write changes anything but metadata and
      status (the spec: a CRD with the status subresource, a Deployment, whose annotations count too), and when a
      deletion is marked; not on a status or other metadata-only write, nor on any ``/status`` write.
    - Resource quantities of Deployments stored in canonical form (``cpu: "0.5"`` reads back as
      ``500m``); a SpeechToText keeps what was written, as a CRD does.
    - The size limit of an object's annotations (apimachinery's ValidateAnnotationsSize: the bytes of all keys and
      values, at most :data:`ANNOTATIONS_MAX_BYTES`): a create, update or merge patch whose result exceeds it is 422
      Invalid in the API server's words, and nothing is stored (kmock stores any size).
    - Server-side apply, which kmock lacks (it merges every PATCH into the object): an apply
      creates a missing object, and removes the fields the same field manager applied before but
      no longer sends. This keeps field ownership per manager with each list as one field (as
      atomic lists are), not the API server's merge keys: enough to see a field removed from a
      spec leave its child, which plain kmock cannot show. A manager's fields are those of its last
      apply that was taken: one refused (409 Conflict, 422) owns nothing, as the API server then stores
      no managedFields. Recorded requests keep the body the operator sent (``request.body``).
    - A namespace's deletion as the API server does it: ``DELETE /api/v1/namespaces/NAME`` marks the Namespace
      Terminating (deletionTimestamp, ``status.phase``; it stays until the namespace controller has emptied it, which
      a test does by hand, and then deletes it: :meth:`finalize_namespace`), and every create in it (a POST, an apply
      that would create) is then 403 Forbidden with the NamespaceLifecycle admission plugin's Status
      (:func:`namespace_terminating`); updates and deletes are served, as there.
    """

    _serial = itertools.count(1)
    #: kube-apiserver's ``--min-request-timeout`` (its default, in seconds): a watch that asks for no ``timeoutSeconds``
    #: ends after between this and twice this (:meth:`_serve_watch`).
    min_request_timeout: float = 1800

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._buses = collections.defaultdict(lambda: _Bus(stamp=self._stamp_deletion))

    def _tick(self) -> str:
        """A new resourceVersion, above every one before (one counter across all objects, as etcd's revision)."""
        version = next(self._serial)
        self.__dict__["_latest"] = version
        return str(version)

    @property
    def latest(self) -> int:
        """The newest resourceVersion this emulator gave (what a list answers as its own: etcd's current revision)."""
        return int(self.__dict__.get("_latest", 0))

    def _stamp_deletion(self, event: dict[str, Any]) -> dict[str, Any]:
        """A DELETED event carries the object as it was last stored with the deletion's own new resourceVersion (the
        etcd revision of the delete: apiserver's storage/etcd3/watcher.go, prepareObjs, "sends the *old* object with
        the etcd revision for the time at which it gets deleted"); any other event is sent as it is."""
        if event.get("type") != "DELETED" or not isinstance(event.get("object"), dict):
            return event
        gone = copy.deepcopy(dict(event["object"]))
        gone["metadata"] = {**(gone.get("metadata") or {}), "resourceVersion": self._tick()}
        return {**event, "object": gone}

    @property
    def streamed(self) -> dict[int, list[tuple[str, str, str, str]]]:
        """What each watch sent (by ``request.id``), in order: ``(type, namespace, name, resourceVersion)`` of each
        event, an ERROR's code as its version."""
        return self.__dict__.setdefault("_streamed", {})

    @property
    def expired(self) -> set[str]:
        """Bearer tokens answered with 401 Unauthorized, as for an expired token."""
        return self.__dict__.setdefault("_expired", set())

    @property
    def namespaced_only(self) -> set[str]:
        """Bearer tokens bound by Roles (RoleBindings) only, as the chart's namespaced mode binds the operator:
        a request outside a namespace (namespaces, CRDs, a cluster-wide list or watch) is 403 Forbidden;
        discovery (``/api``, ``/apis``) stays open, as it is to every authenticated user."""
        return self.__dict__.setdefault("_namespaced_only", set())

    @property
    def seen(self) -> dict[int, set[str]]:
        """What the emulator knew of a request (by ``request.id``) that its RBAC check (tests/rbac.py) needs:
        ``unauthorized`` (answered 401), ``role-bound`` (its token was in :attr:`namespaced_only` then),
        ``forbidden`` (answered 403 for that), ``created`` (a server-side apply that created its object)."""
        return self.__dict__.setdefault("_seen", {})

    @property
    def owners_before(self) -> dict[int, list[Any]]:
        """The ownerReferences of the object each update (a PATCH or PUT of an existing object; by ``request.id``)
        found, before it: what OwnerReferencesPermissionEnforcement compares the updated object's with (tests/rbac.py)."""
        return self.__dict__.setdefault("_owners_before", {})

    @property
    def refusals(self) -> dict[tuple[str, str], tuple[int, str, str]]:
        """Writes refused as an admission webhook or a quota refuses them: ``(plural, name)`` -> ``(code, reason,
        message)`` answered to every create, update or apply of that object (reads are served)."""
        return self.__dict__.setdefault("_refusals", {})

    @property
    def failing(self) -> dict[tuple[str, str, str | None], tuple[int, str, str]]:
        """Objects the API server fails the operator's requests for (its User-Agent), reads included: ``(plural, name,
        subresource)`` (name ``""``: a list) -> ``(code, reason, message)`` answered to each (a 5xx of an API server that cannot serve it, a
        403 of a rule that forbids it); other clients' (kopf's, the test's) are served."""
        return self.__dict__.setdefault("_failing", {})

    @property
    def garbled(self) -> dict[tuple[str, str, str | None], str]:
        """Objects the operator's requests for (its User-Agent; keys as :attr:`failing`'s) are answered ``200
        text/html`` with this body, no Kubernetes object: a proxy's page in front of the API server."""
        return self.__dict__.setdefault("_garbled", {})

    @property
    def withheld(self) -> set[str]:
        """Resources (plurals) answered 403 Forbidden to every request of the operator's, as by its RBAC from an install
        older than its grant of them (tests/rbac.py judges the requests by today's rules all the same)."""
        return self.__dict__.setdefault("_withheld", set())

    @property
    def held(self) -> dict[tuple[str | None, str], asyncio.Event]:
        """The operator's requests (its User-Agent) for ``(plural, name)`` held until the event is set, as by an API
        server that stalls: the operator's handling of one object's event goes on while a test does more."""
        return self.__dict__.setdefault("_held", {})

    @property
    def late(self) -> float:
        """Seconds each of the operator's requests (its User-Agent) waits before it is served, as on a slow API server."""
        return float(self.__dict__.get("_late", 0.0))

    @late.setter
    def late(self, seconds: float) -> None:
        self.__dict__["_late"] = seconds

    @property
    def meddlers(self) -> dict[tuple[str, str], Callable[[kmock.Request], Awaitable[None]]]:
        """What another client does as the operator sends a request for ``(plural, name)``: awaited with each of the
        operator's requests for it before that one is served (a scale between the operator's read and its write)."""
        return self.__dict__.setdefault("_meddlers", {})

    @property
    def watches_held(self) -> dict[str, asyncio.Event]:
        """Every client's watches of a resource (plural) held until the event is set, as by an API server out of reach:
        a watch that ended meanwhile is not started again, and what changes meanwhile comes when it is (from the last
        version its watcher saw), or, once :meth:`compact` forgot it, a 410 Expired (its watcher lists again)."""
        return self.__dict__.setdefault("_watches_held", {})

    def _namespace(self, name: str | None) -> Any:
        """The stored Namespace ``name`` (kmock's object, with its history), or None."""
        return next((obj for (resource, _, n), obj in self.objects.items()
                     if resource.plural == "namespaces" and n == name and not obj.deleted), None)

    def _namespaces(self) -> Any:
        """kmock's key of the namespaces resource (its watches' bus)."""
        return next(resource for resource, _, _ in self.objects if resource.plural == "namespaces")

    def terminating(self, namespace: str | None) -> bool:
        """Whether the Namespace ``namespace`` is marked for deletion (phase Terminating)."""
        live = self._namespace(namespace)
        return live is not None and (live.get("status") or {}).get("phase") == "Terminating"

    async def finalize_namespace(self, namespace: str) -> None:
        """The namespace controller's last step, once it has deleted what the namespace held: the Namespace goes."""
        async with self._lock:
            live = self._namespace(namespace)
            assert live is not None, f"no namespace {namespace}"
            raw = live.raw
            live.delete()
            await self._buses[self._namespaces()].put({"type": "DELETED", "object": raw})

    async def _terminate_namespace(self, request: kmock.Request) -> aiohttp.web.Response | None:
        """``DELETE /api/v1/namespaces/NAME``: the Namespace marked Terminating and returned, as the API server does
        (its ``spec.finalizers`` hold it until the namespace controller has emptied it); None when it does not exist."""
        async with self._lock:
            live = self._namespace(request.name)
            if live is None:
                return None
            if not (live.get("metadata") or {}).get("deletionTimestamp"):
                marked = kmock_dicts.patch_dict(copy.deepcopy(live.raw), {
                    "metadata": {"deletionTimestamp": _now()}, "spec": {"finalizers": ["kubernetes"]},
                    "status": {"phase": "Terminating"}})
                live.create(self._next_version(live.raw, dict(marked), request))
                await self._buses[request.resource].put({"type": "MODIFIED", "object": live.raw})
            return aiohttp.web.json_response(live.raw)

    def _creates(self, request: kmock.Request) -> bool:
        """Whether ``request`` would create an object: a POST, or a server-side apply of one that does not exist."""
        if request.action == kmock.action.CREATE:
            return True
        if request.action != kmock.action.UPDATE or request.headers.get("Content-Type") != APPLY_PATCH:
            return False
        key = (request.resource, request.namespace, request.name)
        return request.subresource is None and (key not in self.objects or self.objects[key].deleted)

    async def _handle(self, request: kmock.Request) -> Any:
        operators = request.headers.get("User-Agent", "").startswith(USER_AGENT)
        if request.resource is not None and request.params.get("watch") == "true":
            away = self.watches_held.get(request.resource.plural)
            if away is not None:
                await away.wait()
        gate = self.held.get((request.resource.plural, request.name or "")) if request.resource is not None else None
        if gate is not None and operators:
            await gate.wait()
        if operators and self.late:
            await asyncio.sleep(self.late)
        meddler = self.meddlers.get((request.resource.plural, request.name or "")) if request.resource is not None else None
        if meddler is not None and operators:
            await meddler(request)
        if (request.resource is not None and request.resource.plural in self.withheld
                and request.headers.get("User-Agent", "").startswith(USER_AGENT)):
            return aiohttp.web.json_response({"apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": "Forbidden",
                                              "code": 403, "message": f"{request.resource.plural} is forbidden"}, status=403)
        if (request.action == kmock.action.DELETE and request.resource is not None
                and request.resource.plural == "namespaces" and request.name is not None
                and (terminated := await self._terminate_namespace(request)) is not None):
            return terminated
        if request.resource is not None and request.resource.plural != "namespaces" and self._creates(request):
            namespace = request.namespace or ((request.data or {}).get("metadata") or {}).get("namespace")
            if self.terminating(namespace):
                return namespace_terminating(request, namespace)
        refusal = (self.refusals.get((request.resource.plural, request.name or ""))
                   if request.resource is not None and request.action in (kmock.action.CREATE, kmock.action.UPDATE) else None)
        if request.resource is not None and operators:
            refusal = self.failing.get((request.resource.plural, request.name or "", request.subresource), refusal)
        page = (self.garbled.get((request.resource.plural, request.name or "", request.subresource))
                if request.resource is not None and operators else None)
        if page is not None:
            return aiohttp.web.Response(text=page, content_type="text/html")
        if refusal is not None:
            code, reason, message = refusal
            return aiohttp.web.json_response({"apiVersion": "v1", "kind": "Status", "status": "Failure",
                                              "reason": reason, "code": code, "message": message}, status=code)
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        seen = self.seen.setdefault(request.id, set())
        if token in self.expired:
            seen.add("unauthorized")
            return aiohttp.web.json_response({"apiVersion": "v1", "kind": "Status", "status": "Failure",
                                              "reason": "Unauthorized", "code": 401}, status=401)
        if token in self.namespaced_only:
            seen.add("role-bound")
        if token in self.namespaced_only and request.resource is not None and request.resource.plural and request.namespace is None:
            seen.add("forbidden")
            return aiohttp.web.json_response({"apiVersion": "v1", "kind": "Status", "status": "Failure",
                                              "reason": "Forbidden", "code": 403,
                                              "message": f"{request.resource.plural} is forbidden at the cluster scope"},
                                             status=403)
        if request.action == kmock.action.UPDATE and request.resource is not None and request.name is not None:
            key = (request.resource, request.namespace, request.name)
            if key in self.objects and not (live := self.objects[key]).deleted:
                self.owners_before[request.id] = copy.deepcopy((live.get("metadata") or {}).get("ownerReferences") or [])
        if request.action == kmock.action.UPDATE and request.headers.get("Content-Type") == APPLY_PATCH:
            request, manager, sent = self._server_side_apply(request)
            answer = await self._write(request)
            if 200 <= answer.status < 300:  # the fields a refused apply (a 409, a 422) sent are not its manager's
                self._applied[manager] = sent
            return answer
        return await self._write(request)

    async def _write(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        """A write (or any other request) past the checks that refuse it before the emulator looks at its object."""
        if (too_long := self._annotations_too_long(request)) is not None:
            return too_long
        if (request.action in (kmock.action.CREATE, kmock.action.UPDATE) and isinstance(request.data, dict)
                and request.resource is not None and request.resource.plural == "deployments"):
            _canonical_quantities(request.data)  # built-in kinds only: a CRD keeps what was written
        if request.action == kmock.action.CREATE and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            if _version(request.data):  # a POST's, or an apply's that would create
                return version_on_create()
            if self._has_status(request.resource):
                _fresh_status(request.resource, request.data)
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = f"{meta['generateName']}{next(self._serial)}"
            # the system fields are the server's (FillObjectMetaSystemFields; BeforeCreate clears a deletion's)
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now())
            meta.pop("deletionTimestamp", None)
            meta.pop("deletionGracePeriodSeconds", None)
            if request.resource is not None and _generated(request.resource):
                meta["generation"] = 1
            if request.resource is not None and request.resource.plural == "namespaces" and not _custom(request.resource):
                spec = request.data.setdefault("spec", {})  # the Namespace strategy's PrepareForCreate
                spec["finalizers"] = [*(f for f in spec.get("finalizers") or [] if f != "kubernetes"), "kubernetes"]
            if request.resource is not None:
                return await self._create(request)
        if request.resource is not None and request.name is not None and (
                request.action == kmock.action.UPDATE or request.action == kmock.action.DELETE):
            return await self._versioned(request)
        return await super()._handle(request)

    async def _create(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        """A create stored as kmock stores it (a 409 when its object exists), its resourceVersion given as it is stored
        and its ADDED sent in the same step (as etcd gives the revision at the commit: a list read meanwhile has the
        object and a version at least its, or neither); kmock then answers it."""
        assert request.resource is not None and isinstance(request.data, dict)
        meta = request.data["metadata"]
        key = (request.resource, request.namespace or meta.get("namespace"), meta.get("name"))
        async with self._lock:
            if key in self.objects and not self.objects[key].deleted:
                raise kmock_k8s.KubernetesObjectConflictError()
            meta["resourceVersion"] = self._tick()
            if key in self.objects:
                self.objects[key].create(request.data)
            else:
                self.objects[key] = request.data
            await self._buses[request.resource].put({"type": "ADDED", "object": self.objects[key].last.raw})
        return await kmock.KubernetesScaffold._handle(self, request)  # reactions, else kmock's answer: the stored

    async def _versioned(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        """An update, or a deletion that only marks its object, stored as the API server stores it (kmock's own
        branches would keep the resourceVersion and send an event for every write); kmock then answers it."""
        assert request.resource is not None
        key = (request.resource, request.namespace, request.name)
        async with self._lock:
            live = self.objects[key] if key in self.objects else None
            before = live.raw if live is not None and not live.deleted else None
            meta = (before or {}).get("metadata") or {}
            if before is None or (request.action == kmock.action.DELETE
                                  and (meta.get("deletionTimestamp") or not meta.get("finalizers"))):
                after = None  # kmock's: a 404, a deletion at once, or one already marked
            elif request.action == kmock.action.DELETE:
                after = dict(kmock_dicts.patch_dict(copy.deepcopy(before), {"metadata": {"deletionTimestamp": _now()}}))
            else:
                try:
                    after = (_replaced(before, request.data, request.subresource) if request.method == kmock.method.PUT
                             else dict(kmock_dicts.patch_dict(copy.deepcopy(before), request.data or {})))
                except jsonpatch.JsonPatchException as e:
                    return invalid_patch(str(e))
                if (stale := _stale(request, before, after)) is not None:
                    return stale
                if self._has_status(request.resource):
                    after = _status_split(request.resource, request.subresource, before, after)
            if live is not None and before is not None and after is not None and after != before:
                if meta.get("deletionTimestamp") and not (after.get("metadata") or {}).get("finalizers"):
                    # the last finalizer of an object being deleted removed: the update is not stored, the object is
                    # deleted instead (the registry's Update: ShouldDeleteDuringUpdate, deleteWithoutFinalizers), one
                    # DELETED of it as it was stored (its version the deletion's: _Bus.stamp); the answer is the
                    # object as written, at the version it was written to
                    live.create(after)
                    live.delete()
                    await self._buses[request.resource].put({"type": "DELETED", "object": before})
                else:
                    after = self._next_version(before, after, request)
                    live.create(after)
                    await self._buses[request.resource].put({"type": "MODIFIED", "object": after})
        if after is None:
            return await super()._handle(request)
        return await kmock.KubernetesScaffold._handle(self, request)  # reactions, else kmock's answer: the stored

    def _next_version(self, before: dict[str, Any], after: dict[str, Any], request: kmock.Request) -> dict[str, Any]:
        """``after`` with a new resourceVersion, and its generation one up when its spec changed or its deletion was
        marked (metadata and status are not the spec; a ``/status`` write changes no generation)."""
        meta = after["metadata"] = dict(after.get("metadata") or {})
        meta["resourceVersion"] = self._tick()
        spec = {k: v for k, v in after.items() if k not in ("metadata", "status", "apiVersion", "kind")}
        was = {k: v for k, v in before.items() if k not in ("metadata", "status", "apiVersion", "kind")}
        if request.resource is not None and (request.resource.group, request.resource.plural) == ("apps", "deployments"):
            # the Deployment registry's PrepareForUpdate: its annotations count too (copied to its ReplicaSets)
            spec["annotations"] = meta.get("annotations")
            was["annotations"] = (before.get("metadata") or {}).get("annotations")
        marked = bool(meta.get("deletionTimestamp")) and not (before.get("metadata") or {}).get("deletionTimestamp")
        if request.subresource != "status" and (spec != was or marked) and meta.get("generation"):
            meta["generation"] += 1  # as the registry does: only a generation that is set
        return after

    def _has_status(self, resource: Any) -> bool:
        """Whether ``resource`` has the status subresource (declared so): its main resource ignores a status written
        to it and a create's, and its ``/status`` ignores all else (:func:`_status_split`)."""
        return resource is not None and resource in self.resources and "status" in self.resources[resource].subresources

    async def resend(self, plural: str) -> int:
        """Send every object of ``plural`` again, unchanged, to the watches (a MODIFIED each, its resourceVersion
        kept): an event that changes nothing the operator reads, which a write that changes nothing does not bring
        (it sends no event). Not a real API server's: its every MODIFIED has a new resourceVersion, and kopf's
        re-list after a watch ends passes its objects to handlers with no event type. The number sent."""
        async with self._lock:
            live = [(resource, obj.raw) for (resource, _, _), obj in self.objects.items()
                    if resource.plural == plural and not obj.deleted]
            for resource, raw in live:
                bus = self._buses[resource]
                assert isinstance(bus, _Bus)
                await bus.put({"type": "MODIFIED", "object": raw}, logged=False)  # no watch from a version replays it
        return len(live)

    @property
    def compacted(self) -> dict[str | None, int]:
        """The version each resource's watch history was last forgotten up to (:meth:`compact`), by plural; None: every
        resource's."""
        return self.__dict__.setdefault("_compacted", {})

    async def compact(self, *plurals: str) -> int:
        """Forget the watch history of ``plurals`` (none: of every resource) up to now, as the watch cache's bounded
        window of each resource does (etcd's compaction, every resource's): a watch of them from an older
        resourceVersion is then answered 410 Expired (what kopf and client-go take as "list again"); the others go on
        from where they were. The version compacted to."""
        async with self._lock:
            for plural in plurals or (None,):
                self.compacted[plural] = self.latest
            for resource, bus in self._buses.items():
                assert isinstance(bus, _Bus)
                if not plurals or resource.plural in plurals:
                    bus.history.clear()
            return self.latest

    async def _serve_list(self, request: kmock.Request) -> Any:
        """kmock's list, with the version it was read at (etcd's revision then: every change so far is in it, so a
        watch from it misses nothing and repeats nothing; kmock's is ``...``)."""
        if request.resource not in self._get_resources():
            return await super()._serve_list(request)  # kmock's 404
        try:
            selected = _selection(request)
        except ValueError as e:  # the API server's 400 for a selector it cannot read
            raise kmock_k8s.KubernetesError(status=400, reason="BadRequest", message=str(e), details={}) from None
        async with self._lock:
            items = [obj.raw for obj in self._KubernetesEmulator__get_objs(request, strict=False) if not obj.deleted]
            version = max([self.latest, *(v for item in items if (v := _version(item)) is not None)])
        return {"metadata": {"resourceVersion": str(version)}, "items": [i for i in items if selected(i)]}

    async def _serve_watch(self, request: kmock.Request) -> Any:
        """A watch as the API server's watch cache serves it (apiserver's storage/cacher/watch_cache.go,
        getAllEventsSinceLocked): from a resourceVersion, every event after it as it happened (MODIFIED, DELETED:
        an object changed or deleted since the watcher's list is not an ADDED, nor missed), or one ERROR of 410
        Expired when that version is older than what it keeps (:meth:`compact`); without one (or from "0"), an
        ADDED of each object there is, then what happens next. kmock began every watch with an ADDED of each
        object, and lost what happened between that and its subscription.

        It ends as the API server ends it: after its ``timeoutSeconds``, else after between
        :attr:`min_request_timeout` and twice that (apiserver's endpoints/request/GetTimeoutForWatch: ``minRequestTimeout
        * (1 + rand)``), its chunked answer simply ending, no event saying why (endpoints/handlers/watch.go,
        HandleHTTP: ``case <-timeoutCh: return``); the client watches again from the last version it saw. kmock's
        never ended."""
        yield b""  # the answer's head goes out at once, as kmock's does
        assert request.resource is not None
        asked = request.params.get("timeoutSeconds", "")
        seconds = int(asked) if asked.isdigit() and int(asked) > 0 else self.min_request_timeout * (1 + random.random())
        deadline = asyncio.get_running_loop().time() + seconds
        since = request.params.get("resourceVersion", "")
        bus = self._buses[request.resource]
        assert isinstance(bus, _Bus)  # __attrs_post_init__'s
        check = self._KubernetesEmulator__check
        sent = self.streamed.setdefault(request.id, [])

        def said(event: dict[str, Any]) -> dict[str, Any]:
            meta = event["object"].get("metadata") or {}
            sent.append((event["type"], meta.get("namespace") or "", meta.get("name") or "",
                         str(meta.get("resourceVersion") or event["object"].get("code") or "")))
            return event
        try:
            selected = _selection(request)
        except ValueError as e:
            yield said({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                                    "status": "Failure", "reason": "BadRequest", "message": str(e),
                                                    "code": 400}})
            return

        def mine(event: Any) -> bool:
            meta = ((event.get("object") or {}).get("metadata") or {}) if isinstance(event, dict) else {}
            return isinstance(event, dict) and check(request, request.resource, meta.get("namespace"), meta.get("name"),
                                                     strict=False) and selected(event["object"])

        async with self._lock:
            marker = await bus.mark()  # with the history read at once: nothing falls between, nothing comes twice
            compacted = max(self.compacted.get(None, 0), self.compacted.get(request.resource.plural, 0))
            if since.isdigit() and int(since) > 0:
                first = [e for e in bus.history if (_version(e["object"]) or 0) > int(since)]
            else:
                first = [{"type": "ADDED", "object": obj.raw}
                         for obj in self._KubernetesEmulator__get_objs(request, strict=False) if not obj.deleted]
        live = bus.stream(since=marker)
        try:
            if since.isdigit() and 0 < int(since) < compacted:
                yield said({"type": "ERROR", "object": {
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "Expired",
                    "message": f"too old resource version: {since} ({compacted})", "code": 410}})
                return
            for event in first:
                if mine(event):
                    yield said(event)
            while True:
                try:
                    async with asyncio.timeout_at(deadline):  # around the wait only: never around a yield
                        event = await anext(live)
                except TimeoutError:
                    return  # the answer ends: the watch timed out
                if mine(event):
                    yield said(event)
        finally:
            await live.aclose()
            await bus.unmark(marker)

    def _annotations_too_long(self, request: kmock.Request) -> aiohttp.web.Response | None:
        """The API server's 422 for a write whose object would carry more than ``ANNOTATIONS_MAX_BYTES`` of
        annotations (a create's, or the live object's with a merge patch's or an apply's); None for any other."""
        if (request.resource is None or request.subresource is not None or not isinstance(request.data, dict)
                or request.action not in (kmock.action.CREATE, kmock.action.UPDATE)):
            return None  # a JSON patch (kopf's finalizers: no annotation) is not judged
        result: Any = request.data
        key = (request.resource, request.namespace, request.name)
        if (request.action == kmock.action.UPDATE and request.method != kmock.method.PUT and key in self.objects
                and not (live := self.objects[key]).deleted):
            result = kmock_dicts.patch_dict(copy.deepcopy(dict(live.raw)), request.data)
        if annotations_bytes((result.get("metadata") or {}).get("annotations") or {}) <= ANNOTATIONS_MAX_BYTES:
            return None
        name = request.name or (result.get("metadata") or {}).get("name", "")
        kind = result.get("kind") or request.resource.plural
        field = f"metadata.annotations: Too long: must have at most {ANNOTATIONS_MAX_BYTES} bytes"
        message = f"{kind}{'.' + request.resource.group if request.resource.group else ''} \"{name}\" is invalid: {field}"
        return aiohttp.web.json_response({
            "apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": "Invalid", "code": 422,
            "message": message, "details": {"name": name, "group": request.resource.group, "kind": kind,
                                            "causes": [{"reason": "FieldValueTooLong", "field": "metadata.annotations",
                                                        "message": field.split(": ", 1)[1]}]}}, status=422)

    @property
    def _applied(self) -> dict[tuple[Any, ...], Any]:
        """What each field manager last applied to each object (and subresource) and the API server took."""
        return self.__dict__.setdefault("_applied_fields", {})

    def _server_side_apply(self, request: kmock.Request) -> tuple[kmock.Request, tuple[Any, ...], Any]:
        """The apply ``request`` as the merge it makes of the live object (the fields its manager applied before and no
        longer sends removed), its manager's key and what it sent: its manager's fields once the write is taken
        (:meth:`_handle`); a refused write leaves them as they were, as the API server stores no managedFields then."""
        key = (request.resource, request.namespace, request.name)
        mine = (*key, request.subresource, request.params.get("fieldManager"))
        sent = copy.deepcopy(request.data)
        before = self._applied.get(mine) or {}
        live = self.objects[key] if key in self.objects else None
        # kmock routes the very request it recorded, which is frozen: rewrite it in place.
        if live is None or live.deleted:
            if request.subresource is None:
                object.__setattr__(request, "action", kmock.action.CREATE)
                self.seen.setdefault(request.id, set()).add("created")
        else:
            object.__setattr__(request, "data", _merge(sent, _removed(before, sent)))
        return request, mine, sent


def invalid_patch(cause: str) -> aiohttp.web.Response:
    """The API server's 422 for a JSON patch it cannot apply (a ``test`` that fails: kopf's optimistic lock on the
    resourceVersion it last saw), as its patcher words it (apiserver's handlers/patch.go, applyJSPatch: a generic
    server response of 422 with the patch library's error)."""
    return aiohttp.web.json_response({"apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": "Invalid",
                                      "code": 422, "message": cause}, status=422)


#: The API server's words for an update whose resourceVersion is not the stored one (apiserver's
#: registry/generic/registry/store.go, OptimisticLockErrorMsg).
OPTIMISTIC_LOCK = "the object has been modified; please apply your changes to the latest version and try again"


def _replaced(before: dict[str, Any], sent: Any, subresource: str | None) -> dict[str, Any]:
    """The object a PUT (a replace) makes of ``before``: what was sent, with the fields the registry keeps whatever an
    update sends (rest.BeforeUpdate and the strategies' PrepareForUpdate: uid, creationTimestamp, generation, a
    deletion's marks; its name and namespace are the URL's); a ``/scale`` PUT sets the replicas alone, and the version
    only when it sends one."""
    sent = copy.deepcopy(sent) if isinstance(sent, dict) else {}
    given = sent.get("metadata") or {}
    if subresource == "scale":
        after = copy.deepcopy(before)
        after.setdefault("spec", {})["replicas"] = (sent.get("spec") or {}).get("replicas")
        if given.get("resourceVersion"):  # else none is asked for (the scale REST's scaleUpdatedObjectInfo)
            after["metadata"] = {**after["metadata"], "resourceVersion": given["resourceVersion"]}
        return after
    kept = {k: v for k, v in (before.get("metadata") or {}).items() if k in (
        "name", "namespace", "uid", "creationTimestamp", "generation", "deletionTimestamp", "deletionGracePeriodSeconds")}
    return {**sent, "metadata": {**given, **kept}}


def _stale(request: kmock.Request, before: dict[str, Any], after: dict[str, Any]) -> aiohttp.web.Response | None:
    """The API server's answer to an update (a PUT, any PATCH, /status and /scale too) whose object carries a
    resourceVersion that is not the stored one: 409 Conflict, nothing stored (registry/generic/registry/store.go,
    Update: ``newResourceVersion != existingResourceVersion`` -> apierrors.NewConflict(qualifiedResource, name,
    OptimisticLockErrorMsg), checked before the strategies' PrepareForUpdate). A patch's object has the stored version
    unless the patch sets one, so a patch without one is never stale. One with none is taken as it is (the version then
    the stored one), but a custom resource's: its strategy allows no unconditional update (apiextensions-apiserver
    customresource/strategy.go, AllowUnconditionalUpdate false), so it is 422 "must be specified for an update".
    None for any other update."""
    assert request.resource is not None
    sent, stored = ((obj.get("metadata") or {}).get("resourceVersion") for obj in (after, before))
    resource = f"{request.resource.plural}{'.' + request.resource.group if request.resource.group else ''}"
    details = {"name": request.name, **({"group": request.resource.group} if request.resource.group else {}),
               "kind": request.resource.plural}
    if not sent and stored and _custom(request.resource):
        field = "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"
        return aiohttp.web.json_response({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": f"{resource} \"{request.name}\" is invalid: {field}", "reason": "Invalid",
            "details": {**details, "causes": [{"reason": "FieldValueInvalid", "message": field.split(": ", 1)[1],
                                               "field": "metadata.resourceVersion"}]}, "code": 422}, status=422)
    if not sent or str(sent) == str(stored):
        return None
    return aiohttp.web.json_response({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": f"Operation cannot be fulfilled on {resource} \"{request.name}\": {OPTIMISTIC_LOCK}",
        "reason": "Conflict", "details": details, "code": 409}, status=409)


def version_on_create() -> aiohttp.web.Response:
    """The API server's answer to a create (a POST, or a server-side apply of an object that does not exist) whose
    metadata.resourceVersion is set: its storage refuses it (apiserver's storage/etcd3/store.go, Create:
    ``storage.ErrResourceVersionSetOnCreate``), an error that is no API status, so the handler answers it as an
    internal error of unknown reason (endpoints/handlers/responsewriters/status.go, ErrorToAPIStatus: 500,
    ``StatusReasonUnknown``, which is "" and so left out). A version that is 0 or no number is taken."""
    return aiohttp.web.json_response({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                      "message": "resourceVersion should not be set on objects to be created",
                                      "code": 500}, status=500)


def namespace_terminating(request: kmock.Request, namespace: str) -> aiohttp.web.Response:
    """The API server's answer to a create in a namespace being deleted, as its NamespaceLifecycle admission plugin
    words it (kubernetes/kubernetes, staging/src/k8s.io/apiserver/pkg/admission/plugin/namespace/lifecycle/
    admission.go, Admit: admission.NewForbidden, whose errors.go names the object by the request's name, else the
    body's name, else its generateName, and apimachinery's errors.NewForbidden words the message; the plugin appends
    the cause ``NamespaceTerminating``, a StatusCause whose type is ``reason`` in JSON)."""
    assert request.resource is not None
    meta = (request.data.get("metadata") or {}) if isinstance(request.data, dict) else {}
    name = request.name or meta.get("name") or meta.get("generateName") or "Unknown"
    resource = f"{request.resource.plural}{'.' + request.resource.group if request.resource.group else ''}"
    details: dict[str, Any] = {"name": name, "kind": request.resource.plural, "causes": [{
        "reason": "NamespaceTerminating", "message": f"namespace {namespace} is being terminated",
        "field": "metadata.namespace"}]}
    if request.resource.group:
        details["group"] = request.resource.group
    return aiohttp.web.json_response({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": f"{resource} \"{name}\" is forbidden: unable to create new content in namespace {namespace} "
                   "because it is being terminated",
        "reason": "Forbidden", "details": details, "code": 403}, status=403)


_REQUIREMENT = re.compile(r"\s*(!?)\s*([A-Za-z0-9_./-]+)\s*(?:(==|=|!=)\s*([A-Za-z0-9_.-]*)|\s+(in|notin)\s*\(([^)]*)\))?\s*$")


def _split(selector: str) -> list[str]:
    """``selector``'s requirements: split at the commas that are not inside an ``in (...)`` list."""
    parts, depth, start = [], 0, 0
    for i, c in enumerate(selector):
        depth += {"(": 1, ")": -1}.get(c, 0)
        if c == "," and depth == 0:
            parts.append(selector[start:i])
            start = i + 1
    return [p for p in [*parts, selector[start:]] if p.strip()]


def _labels_match(selector: str) -> Callable[[dict[str, str]], bool]:
    """A label selector as apimachinery's labels.Parse reads it: ``k``, ``!k``, ``k=v``, ``k==v``, ``k!=v``,
    ``k in (a,b)``, ``k notin (a,b)``, all of them to hold; ValueError for one it refuses."""
    tests: list[Callable[[dict[str, str]], bool]] = []
    for part in _split(selector):
        m = _REQUIREMENT.match(part)
        if m is None or (m[1] and (m[3] or m[5])):
            raise ValueError(f"unable to parse requirement: {part.strip()!r}")
        bang, key, op, value, setop, values = m.groups()
        if setop:
            choices = {v.strip() for v in values.split(",")}
            tests.append(lambda labels, k=key, c=choices, neg=setop == "notin": (labels.get(k) in c) != neg
                         if k in labels else neg)
        elif op:
            tests.append(lambda labels, k=key, v=value, neg=op == "!=": (labels.get(k) == v) != neg)
        else:
            tests.append(lambda labels, k=key, neg=bool(bang): (k in labels) != neg)
    return lambda labels: all(t(labels) for t in tests)


def _fields_match(selector: str, custom: bool) -> Callable[[dict[str, Any]], bool]:
    """A field selector (``path=v``, ``path==v``, ``path!=v``, all to hold): a custom resource's may name
    metadata.name and metadata.namespace only (apiextensions-apiserver's objectMetaFieldsSet; another is 400 "field
    label not supported"), a built-in's any path of its object here."""
    tests: list[Callable[[dict[str, Any]], bool]] = []
    for part in _split(selector):
        m = re.fullmatch(r"\s*([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*?)\s*", part)
        if m is None:
            raise ValueError(f"invalid field selector: {part.strip()!r}")
        path, op, value = m.groups()
        if custom and path not in ("metadata.name", "metadata.namespace"):
            raise ValueError(f'"{path}" is not a known field selector: only "metadata.name", "metadata.namespace"')

        def found(obj: dict[str, Any], path: str = path) -> str:
            for step in path.split("."):
                obj = obj.get(step) if isinstance(obj, dict) else None  # type: ignore[assignment]
            return "" if obj is None else str(obj)
        tests.append(lambda obj, f=found, v=value, neg=op == "!=": (f(obj) == v) != neg)
    return lambda obj: all(t(obj) for t in tests)


def _selection(request: kmock.Request) -> Callable[[dict[str, Any]], bool]:
    """Whether an object is in what a list or watch selects by its ``labelSelector`` and ``fieldSelector`` (kmock
    reads neither and answers every object); ValueError for a selector the API server refuses (400)."""
    labels = _labels_match(request.params.get("labelSelector", ""))
    fields = _fields_match(request.params.get("fieldSelector", ""), _custom(request.resource))
    return lambda obj: labels((obj.get("metadata") or {}).get("labels") or {}) and fields(obj)


def _custom(resource: Any) -> bool:
    """Whether ``resource`` is a custom resource (a CRD's) rather than one of the API server's own: built-in groups
    are the core group, one-word groups (apps, policy, autoscaling) and the ``*.k8s.io`` ones."""
    return "." in resource.group and not resource.group.endswith(".k8s.io")


def _generated(resource: Any) -> bool:
    """Whether the registry gives ``resource``'s objects a generation (1 at the create, one up for each spec change):
    a custom resource's (apiextensions-apiserver customresource/strategy.go, PrepareForCreate: SetGeneration(1)), a
    Deployment, a PodDisruptionBudget and a CustomResourceDefinition (their strategies' PrepareForCreate:
    ``Generation = 1``). The others' (a Namespace, Service, Pod, Secret, Event, PVC, HPA) have none: their strategies
    never set it, so it is left out of what they read back."""
    return _custom(resource) or (resource.group, resource.plural) in {
        ("apps", "deployments"), ("policy", "poddisruptionbudgets"), ("apiextensions.k8s.io", "customresourcedefinitions")}


def _fresh_status(resource: Any, body: dict[str, Any]) -> None:
    """A create's ``status`` as the registry's PrepareForCreate leaves it for a resource with a status subresource:
    a custom resource's dropped (apiextensions-apiserver's customresource/strategy.go), a built-in's reset (the
    Deployment strategy's ``Status = DeploymentStatus{}``; a Pod starts ``Pending``, a Namespace ``Active``)."""
    body.pop("status", None)
    fresh = {"pods": {"phase": "Pending"}, "namespaces": {"phase": "Active"}}.get(resource.plural)
    if fresh is not None and not _custom(resource):
        body["status"] = fresh


def _status_split(resource: Any, subresource: str | None, before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """``after`` as the registry stores a write of a resource with the status subresource: the main resource (and
    ``/scale``) keeps the stored status whatever was written there (PrepareForUpdate of the Deployment strategy:
    ``newDeployment.Status = oldDeployment.Status``; of a custom resource's: the old status); ``/status`` keeps all
    but the status: a custom resource's whole stored object but its status (customresource/status_strategy.go), a
    built-in's spec (its status strategy's ``Spec = old.Spec``) and a Deployment's labels too."""
    if subresource == "status":
        if _custom(resource):
            kept = copy.deepcopy(before)
            kept.pop("status", None)
            return {**kept, **({"status": after["status"]} if "status" in after else {})}
        out = {k: v for k, v in after.items() if k in ("metadata", "status", "apiVersion", "kind")}
        out.update({k: v for k, v in before.items() if k not in ("metadata", "status", "apiVersion", "kind")})
        if resource.plural == "deployments":
            out["metadata"] = {**out["metadata"], "labels": (before.get("metadata") or {}).get("labels")}
            if out["metadata"]["labels"] is None:
                del out["metadata"]["labels"]
        return out
    out = {k: v for k, v in after.items() if k != "status"}
    if "status" in before:
        out["status"] = before["status"]
    return out


def _now() -> str:
    """The time as the API server writes it in metadata (deletionTimestamp): RFC 3339 in whole seconds, UTC."""
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _version(obj: dict[str, Any]) -> int | None:
    """An object's resourceVersion as a number; None for one a test stored without one (or with one that is no
    number: the API server's versioner reads it as 0 then, and a create takes it)."""
    version = str((obj.get("metadata") or {}).get("resourceVersion") or "")
    return int(version) if version.isdigit() else None


def _canonical(value: Any) -> Any:
    """A quantity as the API server stores it: binary suffixes stay binary (1024Mi -> 1Gi), decimal
    amounts get the largest exact decimal suffix (0.5 -> 500m, 2000 -> 2k, 2 -> 2)."""
    from speech_operator.quantities import quantity
    amount = quantity(value)
    if amount is None:
        return value
    if re.search(r"[KMGTPE]i$", str(value)):
        for suffix, factor in [("Ei", 2**60), ("Pi", 2**50), ("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)]:
            if amount % factor == 0:
                return f"{int(amount // factor)}{suffix}"
    for suffix, factor in [("E", 10**18), ("P", 10**15), ("T", 10**12), ("G", 10**9), ("M", 10**6), ("k", 10**3), ("", 1),
                           ("m", Decimal("1e-3")), ("u", Decimal("1e-6")), ("n", Decimal("1e-9"))]:
        if amount % factor == 0:
            return f"{int(amount / factor)}{suffix}"
    return value


def _canonical_quantities(obj: Any) -> None:
    """Rewrite every ``resources.requests``/``limits`` amount in ``obj`` in place."""
    if isinstance(obj, dict):
        for part in ("requests", "limits"):
            amounts = (obj.get("resources") or {}).get(part) if isinstance(obj.get("resources"), dict) else None
            if isinstance(amounts, dict):
                for k, v in amounts.items():
                    amounts[k] = _canonical(v)
        for v in obj.values():
            _canonical_quantities(v)
    elif isinstance(obj, list):
        for v in obj:
            _canonical_quantities(v)


def _removed(before: Any, after: Any) -> dict[str, Any]:
    """A merge patch deleting the keys of ``before`` that ``after`` lacks (None deletes in kmock)."""
    out: dict[str, Any] = {}
    for k, v in before.items():
        if k not in after:
            out[k] = None
        elif isinstance(v, dict) and isinstance(after[k], dict) and (sub := _removed(v, after[k])):
            out[k] = sub
    return out


def _merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in patch.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _parse_path(path: str, _parse: Callable[[str], Any] = kmock_parsing.parse_path) -> Any:
    """kmock reads ``/api/v1/namespaces[/NAME]`` as a namespace prefix with no resource, so it cannot
    list, watch or create Namespaces, which kopf lists and watches when it runs as the CLI runs it
    (scanning on, as on a real cluster). Those paths are the namespaces resource itself."""
    parts = path.strip("/").split("/")
    if parts[:3] == ["api", "v1", "namespaces"] and len(parts) <= 4:
        return kmock_parsing.ParsedPath("", "v1", "namespaces", None, parts[3] if len(parts) == 4 else None, None)
    return _parse(path)


kmock_parsing.parse_path = _parse_path


def _guess_k8s(k8s_path: Any, method: Any, query: dict[str, str], _guess: Callable[..., Any] = kmock_parsing.guess_k8s) -> Any:
    """The official client asks for a watch with ``watch=True`` (Python's spelling); the API server
    reads booleans as Go's ParseBool does (``true``, ``True``, ``1`` ...), kmock only ``true``. A PUT of an object
    is an update (a replace), which kmock did not serve."""
    if query.get("watch") in ("True", "1", "t", "T", "TRUE"):
        query = {**query, "watch": "true"}
    if method == kmock.method.PUT and k8s_path.group is not None and k8s_path.name is not None:
        return kmock.action.UPDATE  # a replace (kmock guesses no action for a PUT): Emulator._versioned stores it
    return _guess(k8s_path, method, query)


kmock_parsing.guess_k8s = _guess_k8s


def declare(emulator: kmock.KubernetesEmulator) -> None:
    emulator.resources[STT_RESOURCE] = kmock.ResourceInfo(
        kind=api.KIND, singular=api.SINGULAR, namespaced=True, shortnames=set(api.SHORT_NAMES),
        subresources={"status", "scale"}, verbs={"get", "list", "watch", "create", "patch", "delete"})
    # the subresources as the API server's discovery lists them (those of a status matter: harness/kube.py, _status_split)
    for res, kind, subresources in [
            ("apps/v1/deployments", "Deployment", {"status", "scale"}), ("v1/services", "Service", {"status"}),
            ("policy/v1/poddisruptionbudgets", "PodDisruptionBudget", {"status"}),
            ("v1/secrets", "Secret", set()), ("v1/persistentvolumeclaims", "PersistentVolumeClaim", {"status"}),
            ("v1/events", "Event", set()), ("v1/pods", "Pod", {"status"}),
            ("autoscaling/v2/horizontalpodautoscalers", "HorizontalPodAutoscaler", {"status"})]:
        emulator.resources[res] = kmock.ResourceInfo(
            kind=kind, namespaced=True, verbs={"get", "list", "watch", "create", "patch", "delete"}, subresources=subresources)
    # kopf waits for these to be discoverable even with scanning disabled.
    emulator.resources["v1/namespaces"] = kmock.ResourceInfo(kind="Namespace", namespaced=False,
                                                             subresources={"status", "finalize"})
    emulator.resources["apiextensions.k8s.io/v1/customresourcedefinitions"] = kmock.ResourceInfo(
        kind="CustomResourceDefinition", namespaced=False, subresources={"status"})


def kubeconfig_for(server: str, user: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "kmock"}}],
        "clusters": [{"name": "kmock", "cluster": {"server": server}}],
        "users": [{"name": "kmock", "user": user}],
    }
