"""The gateway's directory: which Service serves each locale, kept current by a watch of SpeechToTexts.

:class:`Directory` is plain state (no I/O): SpeechToTexts in, a :class:`Backend` per request out.
:class:`SpeechToTextWatch` feeds it the way an informer does: one list, then a watch from the
list's ``resourceVersion``, watched again from the last version seen when the server ends the
stream, listed afresh when that version has expired (410 Gone) or the connection broke. So a
request never costs an API call, and a SpeechToText created, scaled or deleted reaches the
gateway within a watch event.

A language is matched as the recognizer matches it (:func:`speech_recognizer.models.served_locale`):
canonical spelling first (``ko-kr`` is ``ko-KR``), else a locale of the same language. Unknown
languages get the recognizer's own message, naming the locales that exist.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import watch
from pydantic import ValidationError

from speech_operator import api, builders, conditions, foreign_autoscalers
from speech_recognizer.models import UnknownLocale, canonical_locale, served_locale

log = logging.getLogger(__name__)

#: Seconds a watch request asks the API server to keep the stream open before it is renewed.
WATCH_SECONDS = 300
#: How much longer than that the gateway waits for the stream's end before it takes the stream for
#: dead and lists again: ``timeoutSeconds`` is the server's promise only, and a connection lost
#: without a reset (an API server replaced behind a load balancer, a NAT entry expired) would
#: otherwise be waited on for ever, routing by a directory that no longer changes.
WATCH_MARGIN_SECONDS = 30.0
#: Seconds a list (or a connection to the API server) may take.
API_SECONDS = 30.0
#: Longest wait between two attempts after the API server could not be reached.
MAX_BACKOFF_SECONDS = 30.0


class NotOurs(ValueError):
    """A SpeechToText whose Service name is someone else's (Degraded, :data:`conditions.NAME_CONFLICT`): its URL
    reaches their Service, never to be sent a client's audio and key."""


@dataclass(frozen=True)
class Backend:
    """One SpeechToText as the gateway routes to it."""

    namespace: str
    name: str
    #: ``spec.locale``, canonical.
    locale: str
    #: Base URL of its Service (what :func:`speech_operator.builders.endpoint` gives the status).
    url: str
    #: Pods that pass their readiness probe (``status.readyReplicas``).
    ready_replicas: int = 0
    #: Replicas from sessions (``spec.autoscaling``): the operator wakes it when asked.
    autoscaled: bool = False
    #: Pods it should have, as the operator last said (:func:`speech_operator.conditions.reported_replicas`: an HPA's
    #: choice while one scales its Deployment).
    replicas: int = 1
    #: Pods its spec asks for (:func:`speech_operator.builders.replicas`): with ``replicas``, 0 says nothing wakes it.
    spec_replicas: int = 1
    #: Who scales its Deployment instead of it, in words (``status.foreignAutoscalers``,
    #: :func:`speech_operator.foreign_autoscalers.who`): with ``replicas`` 0, the gateway cannot wake it.
    held_by: tuple[str, ...] = ()
    #: Its recognizer asks for a key (``spec.apiKeySecretRef``).
    keyed: bool = False
    #: Why the operator refuses its spec, or "" (:func:`speech_operator.conditions.refusal`): it makes no pod for it.
    refused: str = ""
    #: Pods its Deployment has, ready or not (``status.replicas``).
    pods: int = 0

    @property
    def key(self) -> tuple[str, str]:
        return self.namespace, self.name

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> Backend:
        """The backend of a SpeechToText object; :class:`ValueError` when its spec is not one the operator serves, or
        its name is someone else's (:class:`NotOurs`)."""
        stt = api.SpeechToText.model_validate(body)
        for c in stt.status.conditions if stt.status else []:
            if c.type == conditions.DEGRADED and c.status == "True" and c.reason == conditions.NAME_CONFLICT:
                raise NotOurs(c.message)
        return cls(namespace=stt.namespace, name=stt.name, locale=canonical_locale(stt.spec.locale),
                   url=builders.endpoint(stt), ready_replicas=stt.status.readyReplicas if stt.status else 0,
                   autoscaled=stt.spec.autoscaling is not None, replicas=conditions.reported_replicas(stt),
                   spec_replicas=builders.replicas(stt),
                   held_by=tuple(map(foreign_autoscalers.who, stt.status.foreignAutoscalers or [])) if stt.status else (),
                   keyed=stt.spec.apiKeySecretRef is not None,
                   refused=conditions.refusal(body.get("status"), (body.get("metadata") or {}).get("generation")),
                   pods=stt.status.replicas if stt.status else 0)


class Directory:
    """Backends by SpeechToText, and the lookup of a request's language."""

    def __init__(self) -> None:
        self._backends: dict[tuple[str, str], Backend] = {}
        self._changed = asyncio.Event()
        #: True once every watched scope has been listed (the gateway's ``/ready``).
        self.synced = False

    # ---- what the watch feeds -------------------------------------------------------------------
    def upsert(self, body: Mapping[str, Any]) -> None:
        """Add or update a SpeechToText; one the operator would refuse is left out, with a log line."""
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace") or "default"), str(meta.get("name")))
        try:
            backend = Backend.of(body)
        except (ValidationError, NotOurs, UnknownLocale, KeyError) as exc:
            log.warning("SpeechToText %s/%s is not routed: %s", *key, str(exc).splitlines()[0])
            self._set(key, None)
            return
        self._set(key, backend)

    def remove(self, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        self._set((str(meta.get("namespace") or "default"), str(meta.get("name"))), None)

    def replace(self, namespace: str | None, bodies: Iterable[Mapping[str, Any]]) -> None:
        """What a list returned for ``namespace`` (``None``: every namespace) replaces what was known there."""
        listed = set()
        for body in bodies:
            self.upsert(body)
            meta = body.get("metadata") or {}
            listed.add((str(meta.get("namespace") or "default"), str(meta.get("name"))))
        for key in [k for k in self._backends if (namespace is None or k[0] == namespace) and k not in listed]:
            self._set(key, None)

    def _set(self, key: tuple[str, str], backend: Backend | None) -> None:
        before = self._backends.get(key)
        if backend is None:
            self._backends.pop(key, None)
        else:
            self._backends[key] = backend
        if before != backend:
            self._changed.set()
            self._changed = asyncio.Event()

    # ---- what requests ask ----------------------------------------------------------------------
    @property
    def locales(self) -> list[str]:
        """Every locale served, sorted."""
        return sorted({b.locale for b in self._backends.values()})

    def backends(self) -> list[Backend]:
        return sorted(self._backends.values(), key=lambda b: b.key)

    def lookup(self, language: str | None, missing: str = "add ?language=<locale>") -> Backend:
        """The backend for a request's ``language``; raises :class:`UnknownLocale` with the recognizer's message
        (``missing``: what it says to do when the request names no language).

        No language: the only locale served, as the recognizer does. Several SpeechToTexts
        for one locale: one with ready pods first, then by namespace and name.
        """
        locales = self.locales
        available = ", ".join(locales) or "none"
        if not language:
            if len(locales) == 1:
                return self._pick(locales[0])
            raise UnknownLocale(f"{missing}; this server has: {available}")
        served = served_locale(language, locales)
        if served not in locales:
            raise UnknownLocale(f"no model for language {language!r}; this server has: {available}")
        return self._pick(served)

    def _pick(self, locale: str) -> Backend:
        return min((b for b in self._backends.values() if b.locale == locale),
                   key=lambda b: (b.ready_replicas == 0, b.key))

    def get(self, key: tuple[str, str]) -> Backend | None:
        return self._backends.get(key)

    def next_change(self) -> asyncio.Event:
        """Set by the next change of a backend: take it before looking, so that a change made while
        the caller acts on what it saw is not missed."""
        return self._changed

    async def changed(self, timeout: float | None = None, since: asyncio.Event | None = None) -> bool:
        """Wait until a backend changes (after ``since`` was taken, when given), or ``timeout`` seconds pass: False."""
        try:
            await asyncio.wait_for((since or self._changed).wait(), timeout)
        except TimeoutError:
            return False
        return True


ListCall = Callable[..., Awaitable[Any]]


class SpeechToTextWatch:
    """Keeps a :class:`Directory` current: list, then watch, for each namespace (or the whole cluster)."""

    def __init__(self, api_client: k8s.ApiClient, directory: Directory, namespaces: list[str] | None) -> None:
        self.objects = k8s.CustomObjectsApi(api_client)
        self.directory = directory
        #: ``None``: every namespace (one cluster-wide watch).
        self.namespaces = namespaces
        self._listed: set[str | None] = set()

    def _call(self, namespace: str | None) -> tuple[ListCall, tuple[Any, ...]]:
        if namespace is None:
            return self.objects.list_cluster_custom_object, (api.GROUP, api.VERSION, api.PLURAL)
        return self.objects.list_namespaced_custom_object, (api.GROUP, api.VERSION, namespace, api.PLURAL)

    async def run(self) -> None:
        """Watch every scope until cancelled."""
        scopes: list[str | None] = list(self.namespaces) if self.namespaces is not None else [None]
        async with asyncio.TaskGroup() as group:
            for scope in scopes:
                group.create_task(self._follow(scope, len(scopes)))

    async def _follow(self, namespace: str | None, scopes: int) -> None:
        call, args = self._call(namespace)
        where = f"namespace {namespace}" if namespace else "every namespace"
        backoff = 0.5
        version: str | None = None
        while True:
            try:
                if version is None:
                    listing = await call(*args, _request_timeout=API_SECONDS)
                    self.directory.replace(namespace, listing.get("items") or [])
                    version = (listing.get("metadata") or {}).get("resourceVersion") or None
                    self._listed.add(namespace)
                    if len(self._listed) == scopes and not self.directory.synced:
                        self.directory.synced = True
                        log.info("gateway: routing %s (SpeechToTexts in %s)", ", ".join(self.directory.locales) or "no locale yet", where)
                version = await self._watch(call, args, version)
                backoff = 0.5
            except asyncio.CancelledError:
                raise
            except k8s.ApiException as exc:
                if exc.status == 410:  # the version expired: list again
                    version = None
                    continue
                log.warning("gateway: watching SpeechToTexts in %s failed: HTTP %s %s; again in %.0f s",
                            where, exc.status, exc.reason, backoff)
                version = None
            except Exception as exc:  # noqa: BLE001 - the API server away, a broken stream: list again later
                log.warning("gateway: watching SpeechToTexts in %s failed: %s: %s; again in %.0f s",
                            where, type(exc).__name__, exc, backoff)
                version = None
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    async def _watch(self, call: ListCall, args: tuple[Any, ...], version: str | None) -> str | None:
        """Apply watch events until the server ends the stream; the last version seen."""
        kwargs: dict[str, Any] = {"timeout_seconds": WATCH_SECONDS, "allow_watch_bookmarks": True, "_request_timeout":
                                  aiohttp.ClientTimeout(total=WATCH_SECONDS + WATCH_MARGIN_SECONDS, sock_connect=API_SECONDS)}
        if version is not None:
            kwargs["resource_version"] = version
        async with watch.Watch() as stream:
            async for event in stream.stream(call, *args, **kwargs):
                kind, body = event.get("type"), event.get("raw_object") or {}
                if kind in ("ADDED", "MODIFIED"):
                    self.directory.upsert(body)
                elif kind == "DELETED":
                    self.directory.remove(body)
                version = stream.resource_version or version
        return version

