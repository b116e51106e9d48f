"""Read the world, call the builders, apply, report: the one reconcile loop behind every handler.

Children and the status are written with server-side apply under the field manager
``speech-operator``, forcing conflicts (as cert-manager does): the whole desired object each time,
so the API server also removes what we applied before and no longer send (``nodeSelector`` taken
out of the spec leaves the pods). A write happens only when one is due: the desired object carries
a fingerprint of itself (annotation :data:`APPLIED`), and a child is applied when it is missing,
carries another fingerprint (the desired state changed, removals included), or differs where we
set a value (someone edited it). Values compare as the API server stores them (a CPU of ``0.5``
reads back as ``500m``) and fields only the server sets are not compared, so a resync or a
restart with nothing changed writes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import enum
import hashlib
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf
import pydantic

from speech_operator import api, builders, conditions, foreign_autoscalers, kopf_exit, metrics, policy, record
from speech_operator.config import OperatorConfig
from speech_operator.crd_watch import InstalledCRD
from speech_operator.events import Events, Going, now
from speech_operator.foreign_autoscalers import ForeignAutoscalers
from speech_operator.kube import UNANSWERED, Kube, KubeError, path
from speech_operator.quantities import quantity

log = logging.getLogger(__name__)

#: The fingerprint of the desired object last applied to a child.
APPLIED = f"{api.GROUP}/applied"
PLURALS = {kind: (api_version, plural) for api_version, plural, kind in builders.OWNED_KINDS}
KINDS = {plural: kind for _, plural, kind in builders.OWNED_KINDS}
#: The collections kopf lists that the operator follows (the SpeechToTexts, each kind of child), by the start of their
#: URL path (its API group and version) and their plural.
LISTED = {(path(api_version, plural).rsplit("/", 1)[0], plural): kind
          for api_version, plural, kind in [(api.API_VERSION, api.PLURAL, api.KIND), *builders.OWNED_KINDS]}
_COLLECTION = re.compile(r"(/api/v1|/apis/[^/]+/[^/]+)(?:/namespaces/([^/]+))?/([^/]+)\Z")


#: The finalizer the API server puts on an object deleted with its dependents orphaned (propagationPolicy Orphan).
ORPHAN = "orphan"
#: How many of its last statuses :attr:`Runtime.reported` keeps per SpeechToText.
REPORTED_KEPT = 8
#: The least time between the starts of two status refreshes of one SpeechToText (:meth:`Runtime.refresh`): the
#: Deployment's events of one burst (an HPA's scale, then its controller's status updates) that come within it are
#: one refresh, written once; a change after a quiet time is refreshed at once.
REFRESH_GAP_SECONDS = 0.5


@dataclass
class Relisting:
    """A listing kopf makes again of one kind in one scope, under way (:meth:`Runtime.relisted`): the SpeechToTexts
    listed, by namespace and name (of a child kind: whose child each had), when (loop time) its last object came, and
    the look due once none more came for :attr:`~OperatorConfig.relist_settle_seconds` (one task for the whole listing); ``looking``:
    that look has begun."""

    listed: set[tuple[str, str]]
    last: float
    task: asyncio.Task[None] | None = None
    looking: bool = False


@dataclass
class Serial:
    """One SpeechToText's lock (:meth:`Runtime.lock`), and how many of its reconciles hold it or wait for it."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


@dataclass
class Runtime:
    """Per-process state shared by all handlers (kept in kopf's memo)."""

    config: OperatorConfig = field(default_factory=OperatorConfig.from_env)
    kube: Kube = field(default_factory=Kube)
    crd: InstalledCRD = field(default_factory=InstalledCRD)
    #: The HPAs that scale SpeechToTexts' Deployments instead of the SpeechToTexts (:mod:`speech_operator.foreign_autoscalers`).
    autoscalers: ForeignAutoscalers = field(default_factory=ForeignAutoscalers)
    #: The locks of the SpeechToTexts whose reconciles hold or wait for one (:meth:`lock`), by (namespace, name).
    locks: dict[tuple[str, str], Serial] = field(default_factory=dict)
    #: The daemons running, each with the SpeechToText it is of (namespace, name, uid), and whether the operator's
    #: cleanup has begun (:func:`speech_operator.handlers.close`).
    daemons: dict[asyncio.Task[Any], tuple[str, str, str]] = field(default_factory=dict)
    #: The daemons ended as their SpeechToText was found gone (:meth:`_gone_while_away`): each ends quietly.
    ended: set[asyncio.Task[Any]] = field(default_factory=set)
    #: The uids of the SpeechToTexts found gone though kopf saw no deletion (:meth:`_gone_while_away`): kopf's index
    #: of them keeps their entries for the process' life (it drops one only at a deletion it watches), and the metrics
    #: skip those (:class:`speech_operator.metrics.Exporter`).
    gone: set[str] = field(default_factory=set)
    exiting: bool = False
    #: The process' autoscaler (:func:`speech_operator.handlers.autoscaler`; typed Any: its module imports this one).
    autoscaler: Any = None
    #: The statuses each SpeechToText was last given (the fields the operator writes; the last :data:`REPORTED_KEPT`),
    #: by (namespace, name): one that reads as none of them was written by someone else
    #: (:func:`speech_operator.handlers.status_changed`; the events of the operator's own writes may come late).
    reported: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    #: The uids of the SpeechToTexts whose namespace is being deleted (a create in it was refused for that, an Event's
    #: too): nothing more is written for them, their own deletion follows (:func:`reconcile`, :func:`delete_children`).
    ending: Going = field(default_factory=Going)
    #: Every Event the operator posts (:mod:`speech_operator.events`).
    events: Events = field(init=False)
    #: Per SpeechToText whose Deployment's last writes found it changed since their read at each try (:func:`apply`:
    #: a 409 each), reconcile after reconcile: when (loop time) the first of them was, and how many in a row.
    contended: dict[tuple[str, str], tuple[float, int]] = field(default_factory=dict)
    #: The reconciles due again after such a write (:meth:`retry`), at most one per SpeechToText.
    retries: dict[tuple[str, str], asyncio.Task[None]] = field(default_factory=dict)
    #: Per SpeechToText whose last reconcile found nothing amiss, what it decided and saw (:class:`Observed`): a change
    #: of a child that changes none of it needs no reconcile (:func:`follow`).
    observed: dict[tuple[str, str], Observed] = field(default_factory=dict)
    #: Per SpeechToText whose last reconcile found only what a later look may find mended (:class:`Amiss`: what the
    #: spec references missing, writes refused, names taken), what it found: a re-check looks at that alone
    #: (:func:`recheck_amiss`).
    amiss: dict[tuple[str, str], Amiss] = field(default_factory=dict)
    #: The status refreshes under way (:meth:`refresh`), at most one per SpeechToText, and those asked for meanwhile.
    refreshing: dict[tuple[str, str], asyncio.Task[None]] = field(default_factory=dict)
    _refresh_again: set[tuple[str, str]] = field(default_factory=set)
    #: Whether kopf watches every namespace (``--all-namespaces``; the chart's cluster mode, a ClusterRole): the look
    #: after a listing of the SpeechToTexts made again lists each kind of child once for them all, not once per
    #: namespace (:meth:`_children_looked_for`). Else the namespaces it was given, where it may be bound by a Role each.
    clusterwide: bool = False
    #: The listings kopf makes again of the SpeechToTexts and their children, by kind and namespace ("" when
    #: :attr:`clusterwide`: kopf's one watch of every namespace), under way: the SpeechToTexts listed, by namespace and
    #: name (of a child kind: whose child each had), and the look due once it is over (:meth:`relisted`).
    relistings: dict[tuple[str, str], Relisting] = field(default_factory=dict)
    #: When (loop time) the last of those listings of each kind and namespace began; forgotten once no look under way
    #: or to come reads it (:meth:`_forget_relisted`): a namespace listed once is not kept for the process' life.
    relisted_at: dict[tuple[str, str], float] = field(default_factory=dict)
    #: The kinds kopf listed at least once, by scope (as :attr:`relistings`): its next listing of one is a listing made
    #: again (:meth:`kopf_listed`).
    listed_once: set[tuple[str, str]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.events = Events(self.kube, self.ending)

    def report(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Remember ``status`` as the one the SpeechToText was last given."""
        kept = [s for s in self.reported.get((namespace, name), []) if s != status]
        self.reported[(namespace, name)] = [*kept, status][-REPORTED_KEPT:]

    def foreign(self, namespace: str, name: str, status: Mapping[str, Any]) -> bool:
        """Whether a stored ``status`` of the SpeechToText is none the operator gave it lately (False before its first
        reconcile in this process, and for one without ``observedGeneration``: from before the operator's first
        write, as the late event of its creation brings)."""
        kept = self.reported.get((namespace, name), [])
        return bool(kept) and "observedGeneration" in status and all(differs(status, s) for s in kept)

    def unsure(self, namespace: str, name: str, status: Mapping[str, Any]) -> bool:
        """Whether a stored ``status`` without ``observedGeneration`` comes after the operator wrote one: from before its
        first write (the late event of its creation) or removed since (a merge patch of the status subresource with
        ``status: null``, a tool that replaces the status). An event cannot tell which; the live object can."""
        return bool(self.reported.get((namespace, name))) and "observedGeneration" not in status

    @contextlib.asynccontextmanager
    async def lock(self, namespace: str, name: str) -> AsyncIterator[None]:
        """Serialises reconciles of one SpeechToText across its own and its children's handlers (of one made again
        under its name too). Its lock is kept while one holds or waits for it, dropped as the last lets it go: kept
        on, one per SpeechToText ever reconciled would last the process' life. By hand: asyncio has no keyed lock,
        and the count of its users is all it takes (taken and given back with no await between)."""
        key = (namespace, name)
        serial = self.locks.get(key)
        if serial is None:
            serial = self.locks[key] = Serial()
        serial.users += 1
        try:
            async with serial.lock:
                yield
        finally:
            serial.users -= 1
            if not serial.users:
                del self.locks[key]

    def contention(self, namespace: str, name: str) -> tuple[float, int]:
        """One more reconcile whose Deployment write found it changed at each try: how long since the first of those in
        a row (seconds), and how many in a row, this one included (:attr:`contended`)."""
        at = asyncio.get_running_loop().time()
        first, count = self.contended.get((namespace, name), (at, 0))
        self.contended[(namespace, name)] = (first, count + 1)
        return at - first, count + 1

    def retry(self, namespace: str, name: str, delay: float) -> None:
        """Reconcile the SpeechToText again in ``delay`` seconds; nothing when a retry of it is due already."""
        if (namespace, name) not in self.retries:
            self.retries[(namespace, name)] = asyncio.get_running_loop().create_task(
                self._retried(namespace, name, delay), name=f"reconcile {api.KIND} {namespace}/{name} again")

    async def _retried(self, namespace: str, name: str, delay: float) -> None:
        await asyncio.sleep(delay)
        if self.retries.get((namespace, name)) is asyncio.current_task():
            del self.retries[(namespace, name)]  # the reconcile may ask for the next one
        if not left_at_stop("its reconcile again", namespace, name):
            await _said(reconcile(self, namespace, name), namespace, name)

    def refresh(self, namespace: str, name: str) -> None:
        """Make the SpeechToText's status from its Deployment again soon (:func:`refresh`): at once, unless one began
        less than :data:`REFRESH_GAP_SECONDS` ago; then once more when that gap is over (which reads the Deployment
        afresh), however often asked meanwhile: a burst of the Deployment's events is one refresh per gap, the states
        in between not each written, the last one's at most a gap late."""
        key = (namespace, name)
        if key in self.refreshing:
            self._refresh_again.add(key)
        else:
            self.refreshing[key] = asyncio.get_running_loop().create_task(
                self._refreshed(namespace, name), name=f"refresh {api.KIND} {namespace}/{name}'s status")

    async def _refreshed(self, namespace: str, name: str) -> None:
        key, loop = (namespace, name), asyncio.get_running_loop()
        try:
            while True:
                self._refresh_again.discard(key)
                if left_at_stop("its status refresh", namespace, name):
                    return
                started = loop.time()
                await _said(refresh(self, namespace, name), namespace, name)
                await asyncio.sleep(started + REFRESH_GAP_SECONDS - loop.time())  # asked again meanwhile: once more
                if key not in self._refresh_again:
                    return
        finally:
            if self.refreshing.get(key) is asyncio.current_task():
                del self.refreshing[key]

    def relisted(self, kind: str, namespace: str, owner: str | None) -> None:
        """``owner`` (a SpeechToText, ``kind`` :data:`api.KIND`), or its child of ``kind``, came in a listing kopf made
        again (a watch that could not go on: 410 Gone); ``owner`` None: an object of ``kind`` that is no child did
        (another's Deployment, the operator's own, the ``kubernetes`` Service). Once no more of it came for
        :attr:`~OperatorConfig.relist_settle_seconds`, each SpeechToText of that listing's scope (``namespace``; every one when
        :attr:`clusterwide`: kopf watches them all at once) whose last reconcile kept a child of ``kind``
        (:class:`Observed`; :class:`Amiss`: one not refused, no name taken) that the listing had none of is reconciled:
        that child was deleted while the watch was away, and no event says so. No request when none is missing. A
        listing with no object of ``kind`` in its scope reaches no handler: kopf's session tells it
        (:meth:`kopf_listed`); the SpeechToTexts' own listing looks for their children of each kind kopf did not list
        again meanwhile (:meth:`_children_looked_for`)."""
        key, loop = (kind, self._scope(namespace)), asyncio.get_running_loop()
        relisting = self.relistings.get(key)
        if relisting is None:
            relisting = self.relistings[key] = Relisting(set(), loop.time())
            self.relisted_at[key] = relisting.last
        elif relisting.looking and relisting.task is not None:  # more of it while its look lists: that look again
            relisting.task.cancel()
            relisting.task, relisting.looking = None, False
        relisting.last = loop.time()  # its look waits for this one's settle: one task per listing, not per object
        if owner is not None:
            relisting.listed.add((namespace, owner))
        if relisting.task is None:
            relisting.task = loop.create_task(self._relisting_over(*key, relisting),
                                              name=f"{kind}s of {key[1] or 'every namespace'} listed again")

    def kopf_listed(self, url_path: str) -> None:
        """kopf began a listing, of the collection at ``url_path`` (:func:`speech_operator.kube.kopf_session`). Of the
        SpeechToTexts or a kind of child, one of a scope listed before is a listing made again (a watch that could not
        go on: 410 Gone, a list that failed, a resumption after a pause): :meth:`relisted`, with no owner, so that its
        look comes when no object of it reaches a handler: the last child of its kind in a namespace deleted while its
        watch was away (made again), the last SpeechToText deleted so with its finalizer taken off by hand (its daemons
        ended, its metrics gone). kopf's first listing of each, at its start, is each object's first: nothing to look
        for. No request of its own."""
        match = _COLLECTION.search(url_path)
        kind = LISTED.get((match[1], match[3])) if match else None
        if match is None or kind is None:
            return
        namespace = match[2] or ""
        key = (kind, self._scope(namespace))
        if key in self.listed_once:
            self.relisted(kind, namespace, None)
        self.listed_once.add(key)

    def _scope(self, namespace: str) -> str:
        """What one listing kopf makes of a kind covers: ``namespace``, or "" (every one) when :attr:`clusterwide`."""
        return "" if self.clusterwide else namespace

    async def _relisting_over(self, kind: str, scope: str, relisting: Relisting) -> None:
        loop = asyncio.get_running_loop()
        while (left := relisting.last + self.config.relist_settle_seconds - loop.time()) > 0:  # each object put the end later
            await asyncio.sleep(left)
        if left_at_stop(f"the look after kopf's {kind}s listed again", scope or "every namespace"):
            self.relistings.pop((kind, scope), None)  # over: not kept until the cleanup (:meth:`stop_retries`)
            return
        relisting.looking = True
        if kind == api.KIND:  # cancelled by one more of that listing
            await self._children_looked_for(scope, relisting.listed)
            await self._gone_while_away(scope, relisting.listed)
        self.relistings.pop((kind, scope), None)  # no await from here on: its reconciles are retries (:meth:`retry`)
        if kind != api.KIND:
            self._lacking(kind, scope, relisting.listed, "was not in the listing kopf made again")
        self._forget_relisted()

    def _forget_relisted(self) -> None:
        """Forget when the listings over began (:attr:`relisted_at`) that no look reads any more: a look reads the
        children's from :attr:`~OperatorConfig.relist_settle_seconds` before its own SpeechToTexts' listing began on, and a listing
        begins now at the earliest."""
        floor = min([asyncio.get_running_loop().time(), *(
            at for key, at in self.relisted_at.items() if key[0] == api.KIND and key in self.relistings)])
        for key, at in list(self.relisted_at.items()):
            if key not in self.relistings and at < floor - self.config.relist_settle_seconds:
                del self.relisted_at[key]

    async def _children_looked_for(self, scope: str, listed: set[tuple[str, str]]) -> None:
        """Once kopf's listing of the SpeechToTexts of ``scope`` (a namespace; "": every one, :attr:`clusterwide`)
        made again (``listed``) is over: the children of each kind those SpeechToTexts' last reconciles kept, listed
        once per kind (the operator's, by its ``managed-by`` label; of ``scope``: one request for every namespace when
        kopf watches them all), and each SpeechToText lacking its child of that kind reconciled. A watch of them that
        could not go on either (410 Gone: a restarted API server forgot every watch's history) lists them again, and
        a deletion meanwhile of the last of a kind in a listing's scope reaches no handler of theirs. Not the kinds kopf
        listed again there from :attr:`~OperatorConfig.relist_settle_seconds` before this listing on (their own look:
        :meth:`relisted`); a failure is one line, and the look is left to the next reconciles.

        Since kopf's session tells each listing it makes (:meth:`kopf_listed`), a kind kopf lists again has a look of
        its own, and a kind whose watch went on, or resumes from its last version, is sent each deletion: this look
        only makes a child again sooner while its kind's watch is still away (reconnecting, no 410 yet), at one list
        per kind not listed again. It stays as the one look for a listing kopf would make with no list request to
        tell (kopf's ``settings.watching.initial_streaming``: the objects come in the watch; the operator leaves it
        off), where an empty listing of a kind reaches no handler."""
        began = self.relisted_at.get((api.KIND, scope), 0.0) - self.config.relist_settle_seconds
        kept: dict[str, set[str]] = {}  # kind: the namespaces of the listed SpeechToTexts that kept a child of it
        for key, last in self._kept():
            if key in listed:
                for child in last.children:
                    kept.setdefault(child["kind"], set()).add(key[0])
        selector = f"{builders.LABEL_MANAGED_BY}={builders.MANAGER}"
        for kind in sorted(kept):
            namespaces = {ns for ns in kept[kind] if (kind, self._scope(ns)) not in self.relistings
                          and self.relisted_at.get((kind, self._scope(ns)), began - 1) < began}
            if not namespaces:
                continue
            api_version, plural = PLURALS[kind]
            try:
                found = await self.kube.request("GET", path(api_version, plural, scope or None, None),
                                                query={"labelSelector": selector})
            except UNANSWERED as exc:
                log.warning("listing the %ss of %s (kopf listed its %ss again): %s: %s; looked for at their next "
                            "reconciles", kind, scope or "every namespace", api.KIND, type(exc).__name__, exc)
                continue
            present: set[tuple[str, str]] = set()  # the owners of those found, by namespace and name
            for item in (found or {}).get("items") or []:
                meta = item.get("metadata") or {}
                if (owner := builders.owner_name(meta)) is not None:
                    present.add((str(meta.get("namespace") or ""), owner))
            for ns in sorted(namespaces):
                self._lacking(kind, ns, present, "is gone", among=listed)

    async def _gone_while_away(self, scope: str, listed: set[tuple[str, str]]) -> None:
        """Once kopf's listing of the SpeechToTexts of ``scope`` made again (``listed``) is over: each of ``scope`` whose
        daemons run that the listing lacked is read, and one gone (deleted while the watch was away, its finalizer
        taken off by hand: no deletion for kopf to handle, and no event) is forgotten (:meth:`forget`) and its daemons
        end (one of another of its name made meanwhile too). kopf, which saw no deletion, runs them for the process'
        life else: its autoscaler's a list of pods every ``autoscale_seconds``. One the listing lacked as it came
        meanwhile is read and left. A read that fails is one line, and leaves them."""
        running = {(ns, name) for ns, name, _ in self.daemons.values() if ns == scope or not scope}
        for namespace, name in sorted(running - listed):
            try:
                live = await self.kube.get(stt_path(namespace, name))
            except UNANSWERED as exc:
                log.warning("reading %s %s/%s (not in the listing kopf made again): %s: %s; its daemons run on",
                            api.KIND, namespace, name, type(exc).__name__, exc)
                continue
            uid = (live or {}).get("metadata", {}).get("uid")
            ended = [task for task, of in self.daemons.items() if of[:2] == (namespace, name) and of[2] != uid]
            if not ended:
                continue
            log.info("%s %s/%s was deleted while kopf's watch of them was away: forgotten, its daemons ended",
                     api.KIND, namespace, name)
            if live is None:
                self.forget(namespace, name)
            self.gone.update(uid for task in ended if (uid := self.daemons[task][2]))
            for task in ended:
                self.ended.add(task)
                task.cancel()

    def _kept(self, kind: str | None = None) -> list[tuple[tuple[str, str], Observed | Amiss]]:
        """The SpeechToTexts whose last reconcile kept what it decided (:class:`Observed`, :class:`Amiss`), with it;
        with ``kind``, not those whose child of ``kind`` was refused or whose name is taken."""
        return [*self.observed.items(), *((key, last) for key, last in self.amiss.items() if kind is None or not any(
            child["kind"] == kind for child, _ in [*last.refused, *last.conflicts]))]

    def _lacking(self, kind: str, scope: str, present: set[tuple[str, str]], why: str,
                 among: set[tuple[str, str]] | None = None) -> None:
        """Reconcile each SpeechToText of ``scope`` (a namespace; "": every one; ``among`` these, by namespace and name)
        whose last reconcile kept a child of ``kind`` and that is not among the owners ``present`` of one."""
        for (ns, name), last in self._kept(kind):
            if ((not scope or ns == scope) and (ns, name) not in present and (among is None or (ns, name) in among)
                    and any(child["kind"] == kind for child in last.children)):
                log.info("%s %s/%s: its %s %s: reconciled", api.KIND, ns, name, kind, why)
                self.retry(ns, name, 0)

    def forget(self, namespace: str, name: str) -> None:
        """Forget what is kept of the SpeechToText (its deletion): what the installed CRD and foreign autoscalers said
        of it, its retry, status refresh and what it observed (:meth:`forget_retry`), the statuses it was given."""
        self.crd.forget((namespace, name))
        self.autoscalers.forget((namespace, name))
        self.forget_retry(namespace, name)
        self.reported.pop((namespace, name), None)

    def forget_retry(self, namespace: str, name: str) -> None:
        """Its retry and status refresh not due any more (its deletion); its contention and what it observed forgotten."""
        self.contended.pop((namespace, name), None)
        self.observed.pop((namespace, name), None)
        self.amiss.pop((namespace, name), None)
        self._refresh_again.discard((namespace, name))
        for task in (self.retries.pop((namespace, name), None), self.refreshing.pop((namespace, name), None)):
            if task is not None and task is not asyncio.current_task():
                task.cancel()

    async def stop_retries(self) -> None:
        """Cancel the retries due, the status refreshes and the looks after listings (the operator's exit)."""
        tasks = [*self.retries.values(), *self.refreshing.values(),
                 *(r.task for r in self.relistings.values() if r.task is not None)]
        self.retries.clear()
        self.refreshing.clear()
        self.relistings.clear()
        self.relisted_at.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def left_at_stop(what: str, *of: str) -> bool:
    """Whether the operator is stopping (:func:`speech_operator.kopf_exit.stopping`), so that a follow-up of its own
    falling due then (a retry, a status refresh, the look after a listing made again; kopf's retry of a reconcile,
    :func:`speech_operator.handlers.reconcile_stt`) does not begin: a DEBUG line.
    Each was reads and writes in the pod's grace until the cleanup cancelled it (:meth:`Runtime.stop_retries`), for a
    SpeechToText the next replica's start reconciles anyway (kopf resumes each one); one under way finishes."""
    if not kopf_exit.stopping():
        return False
    log.debug("%s of %s left: the operator is stopping", what, "/".join(of))
    return True


async def _said(work: Awaitable[Any], namespace: str, name: str) -> None:
    """Await a reconcile of the operator's own (no kopf handler around it): an unanswered API server is one WARNING
    line, anything else logged with its traceback (else asyncio's "Task exception was never retrieved")."""
    try:
        await work
    except UNANSWERED as exc:
        log.warning("reconciling %s/%s: %s: %s; again at its next change or event", namespace, name,
                    type(exc).__name__, exc)
    except Exception:
        log.exception("reconciling %s/%s again failed; again at its next change or event", namespace, name)


def stt_path(namespace: str, name: str, subresource: str | None = None) -> str:
    return path(api.API_VERSION, api.PLURAL, namespace, name, subresource)


def child_path(kind: str, namespace: str, name: str) -> str:
    if kind not in PLURALS:
        raise kopf.PermanentError(f"the builders returned a {kind}, which builders.OWNED_KINDS does not list "
                                  f"(list it there, with the operator's RBAC for it)")
    api_version, plural = PLURALS[kind]
    return path(api_version, plural, namespace, name)


#: Where the API server rewrites resource quantities into its canonical form.
_QUANTITY_PATH = re.compile(r"\.resources\.(requests|limits)\.[^.\[]+$|\.sizeLimit$")


def differences(desired: Any, actual: Any, where: str = "") -> list[str]:
    """Paths where ``actual`` does not carry ``desired`` (fields only ``actual`` has are server
    defaults or someone else's, and are ignored; quantities compare by amount; an empty value, ``""``, ``[]``, ``{}``
    or null, is carried by its absence: the API server stores none of the fields it omits when empty, as a
    toleration's ``value: ""``, which a spec's tolerations, affinity or annotations may hold)."""
    if actual is None and desired in (None, "", [], {}):
        return []
    if isinstance(desired, Mapping):
        if not isinstance(actual, Mapping):
            return [where or "."]
        return [d for k, v in desired.items() for d in differences(v, actual.get(k), f"{where}.{k}")]
    if isinstance(desired, list):
        if not isinstance(actual, list):
            return [where]
        names = [d.get("name") for d in desired if isinstance(d, Mapping)]
        if desired and len(names) == len(desired) and None not in names and len(set(names)) == len(names):
            # items by name (containers, env, volumes, ports, imagePullSecrets), as server-side apply merges them: an
            # item someone else added (a mutating webhook's env or volume, a hand-made sidecar) stays whatever we apply
            by_name = {a.get("name"): a for a in actual if isinstance(a, Mapping)}
            return [d for item in desired for d in differences(item, by_name.get(item["name"]), f"{where}[{item['name']}]")]
        if len(actual) != len(desired):
            return [where]
        return [d for i, (a, b) in enumerate(zip(desired, actual, strict=True)) for d in differences(a, b, f"{where}[{i}]")]
    if desired == actual:
        return []
    if isinstance(desired, int) and not isinstance(desired, bool) and isinstance(actual, str) and str(desired) == actual:
        return []  # integers the API server keeps as strings
    if _QUANTITY_PATH.search(where) and quantity(desired) is not None and quantity(desired) == quantity(actual):
        return []
    return [where]


def fingerprinted(desired: dict[str, Any], held: tuple[int, str] | None = None) -> dict[str, Any]:
    """``desired`` with the :data:`APPLIED` annotation: a hash of everything else in it. ``held``: the replicas a foreign
    autoscaler holds a Deployment at, and who: applied, and hashed as who holds them, not as their number, so that its
    changes of them are no change of the desired state (nothing written, no event)."""
    out = copy.deepcopy(desired)
    out["metadata"].setdefault("annotations", {}).pop(APPLIED, None)
    if not out["metadata"]["annotations"]:
        del out["metadata"]["annotations"]
    hashed = out if held is None else {**out, "spec": {**out["spec"], "replicas": held[1]}}
    if held is not None:
        out["spec"]["replicas"] = held[0]
    digest = hashlib.sha256(json.dumps(hashed, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    out["metadata"].setdefault("annotations", {})[APPLIED] = digest[:20]
    return out


def pending(desired: dict[str, Any], live: Mapping[str, Any] | None) -> list[str]:
    """Why ``desired`` (fingerprinted) must be applied over ``live``: [] when it needs no write."""
    if live is None:
        return ["."]
    meta = desired["metadata"]
    mine = {"metadata": {k: meta[k] for k in ("labels", "annotations", "ownerReferences") if k in meta},
            **{k: v for k, v in desired.items() if k not in ("apiVersion", "kind", "metadata")}}
    return differences(mine, live)


def _summary(paths: list[str]) -> str:
    changed = [p for p in paths if not p.endswith(APPLIED)]
    if not changed:
        return "fields the spec no longer sets removed"
    tops = list(dict.fromkeys(".".join(p.split(".")[:3]).split("[")[0] for p in changed))
    return ", ".join(tops[:5]) + (" …" if len(tops) > 5 else "")


def _controller(obj: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    refs = ((obj or {}).get("metadata") or {}).get("ownerReferences") or []
    return next((o for o in refs if o.get("controller")), None)


#: The Event reason when the operator puts back replicas someone else gave its Deployment (:func:`scaled_by_hand`).
SCALED_BY_HAND = "ScaledByHand"


def scaled_by_hand(desired: Mapping[str, Any], live: Mapping[str, Any] | None, owner: Mapping[str, Any]) -> str | None:
    """What to tell whoever scaled the SpeechToText ``owner``'s Deployment itself (``kubectl scale deployment``, an HPA
    pointed at it) when ``desired`` (fingerprinted) puts its replicas back; None when ``live`` has the replicas wanted,
    or the change is the operator's own (a new spec or autoscaler decision: another fingerprint). The operator puts
    them back all the same (the SpeechToText is the source of truth); this says why, and what to scale instead."""
    if live is None or desired["kind"] != "Deployment":
        return None
    if ((live.get("metadata") or {}).get("annotations") or {}).get(APPLIED) != desired["metadata"]["annotations"][APPLIED]:
        return None
    found, wanted = (live.get("spec") or {}).get("replicas"), desired["spec"]["replicas"]
    if found == wanted or not isinstance(found, int):
        return None
    name, namespace = owner["metadata"]["name"], owner["metadata"]["namespace"]
    if (owner.get("spec") or {}).get("autoscaling"):
        instead = ("its replicas are the SpeechToText's autoscaler's choice (spec.autoscaling): "
                   "change spec.autoscaling.minReplicas or maxReplicas instead")
    else:
        instead = (f"scale the SpeechToText instead: kubectl scale speechtotext/{name} -n {namespace} --replicas={found}, "
                   f"or set spec.autoscaling")
    return f"Deployment {desired['metadata']['name']} was scaled to {found} by hand (or by an autoscaler): put back to {wanted}; {instead}"


class NameConflict(Exception):
    """A child's name is taken by an object the SpeechToText does not own: it is left as it is (:func:`apply`)."""


def taken(kind: str, name: str, held: str) -> str:
    """The child ``kind`` ``name`` held by someone else's object (:func:`holder`'s words ``held``), as the
    SpeechToText's status says it."""
    return (f"{kind} {name} exists and is not this SpeechToText's ({held}); it is left as it is: delete or rename it, "
            f"or give the SpeechToText another name")


def holder(live: Mapping[str, Any] | None, owner: Mapping[str, Any]) -> str | None:
    """Who holds the child ``live``, in words, when it is not the SpeechToText ``owner``'s; None when it is missing,
    controlled by ``owner``, or an orphan with the operator's labels for ``owner`` (its owner reference removed by
    hand: taken back). Anything else is someone else's: never changed, never deleted."""
    if live is None:
        return None
    controller = _controller(live)
    if controller:
        if controller.get("uid") == owner["metadata"].get("uid"):
            return None
        return f"controlled by {controller.get('kind')} {controller.get('name')}"
    labels = (live.get("metadata") or {}).get("labels") or {}
    if labels.get(builders.LABEL_MANAGED_BY) == builders.MANAGER and labels.get(builders.LABEL_OWNER) == owner["metadata"]["name"]:
        return None
    return "made by someone else: it has no controller and not the operator's labels"


def live_replicas(live: Mapping[str, Any] | None) -> int | None:
    """A live Deployment's spec.replicas, or None."""
    found = ((live or {}).get("spec") or {}).get("replicas")
    return found if isinstance(found, int) and not isinstance(found, bool) else None


#: How many times :func:`apply` reads a child again when its conditional write finds it changed since its read.
STALE_WRITES_RETRIED = 4
#: How long the Deployment's writes may find it changed since their read at each try (:data:`STALE_WRITES_RETRIED`),
#: reconcile after reconcile, before its status says so (:data:`conditions.WRITE_REFUSED`). Until then it is a race
#: with whoever else writes it (a foreign autoscaler scaling it, its controller's status updates during a rollout),
#: each of which is tried again (:data:`STALE_RETRY_SECONDS`), not a refusal: four of an HPA's syncs (15 s apart by
#: default) and many times the gap between a rollout's status updates. Beyond, something writes it all the time (two
#: controllers fighting over it) and the spec will not land without someone's act.
STALE_SUSTAINED_SECONDS = 60.0
#: When a reconcile whose Deployment write found it changed at each try is tried again: 1 s after the first, doubling
#: with each one in a row, at most the re-check interval (recheck_seconds). The Deployment's own events (each 409 is a
#: change of it) reconcile it too, at once.
STALE_RETRY_SECONDS = 1.0


def conditional(desired: dict[str, Any], live: Mapping[str, Any] | None) -> dict[str, Any]:
    """``desired`` written only over ``live`` as it was read: with its resourceVersion, which the API server checks
    (409 Conflict when the object changed since: :attr:`KubeError.stale`). For the replicas read from a Deployment a
    foreign autoscaler holds: an apply that forces them unconditionally would put back the replicas it had when read,
    undoing a scale made between the read and the write until the autoscaler's next sync. Nothing to check at a
    creation (``live`` None), where the API server refuses a version."""
    version = ((live or {}).get("metadata") or {}).get("resourceVersion")
    if not version:
        return desired
    return {**desired, "metadata": {**desired["metadata"], "resourceVersion": version}}


class Unread(enum.Enum):
    """A child not read yet (:func:`apply` reads it), where None is one read and found missing."""

    UNREAD = enum.auto()


def wanted(desired: dict[str, Any], live: Mapping[str, Any] | None,
           scalers: tuple[api.ForeignAutoscaler, ...]) -> tuple[dict[str, Any], int | None]:
    """``desired`` fingerprinted as :func:`apply` writes it over ``live``, and the replicas ``scalers`` (foreign
    autoscalers) hold its Deployment at (None when no one else holds them): those found, at its creation those it is
    created with; its fingerprint names who holds them."""
    found = None
    if scalers and desired["kind"] == "Deployment":
        found = live_replicas(live) if live is not None else desired["spec"]["replicas"]
    return fingerprinted(desired, None if found is None else (found, ", ".join(map(foreign_autoscalers.who, scalers)))), found


def seen(deployment: Mapping[str, Any] | None) -> tuple[Any, ...]:
    """What a SpeechToText's status is made of in its Deployment (:func:`conditions.observe`, :func:`conditions.pods_matter`):
    its generation, replicas and status."""
    meta, spec = (deployment or {}).get("metadata") or {}, (deployment or {}).get("spec") or {}
    return meta.get("generation"), spec.get("replicas"), (deployment or {}).get("status")


@dataclass(frozen=True)
class Observed:
    """What the last reconcile of a SpeechToText decided and saw, when it found nothing amiss (no refused spec, nothing
    missing, no write refused, no name taken): the SpeechToText as read and as decided on, its children as built
    (``held``: the Deployment's replicas they were built with, where foreign autoscalers hold them), who else scales
    its Deployment, what the installed CRD lacks, and its Deployment as its status was made of it (:func:`seen`).
    ``looked``: the pods' waits (:func:`conditions.dependency_trouble`) a status refresh since looked up what the spec
    references for, and found nothing missing: not looked for again while they last (:func:`refresh_status`)."""

    body: dict[str, Any]
    stt: api.SpeechToText
    children: list[dict[str, Any]]
    held: int | None
    scalers: tuple[api.ForeignAutoscaler, ...]
    outdated_crd: str | None
    deployment: tuple[Any, ...]
    looked: frozenset[conditions.Wait] = frozenset()


@dataclass(frozen=True)
class Amiss:
    """What the last reconcile of a SpeechToText found amiss, when that is all a later look may find mended and nothing
    changes without an event of its own (no refused spec, no foreign autoscaler, no write refused as stale): what the
    spec references and found missing (:func:`missing_dependencies`), the children whose writes the API server refused
    (as built) with the refusal as its status says it, and those whose names someone else's objects hold (as built)
    with whose, as its status says it (:func:`taken`). The SpeechToText as read and decided on, its children as built,
    where each differed from that then (:func:`pending`: a refused write's child only), what the installed CRD lacked,
    and its Deployment as its status was made of it (:func:`seen`): a change of a child that changes none of it needs
    no reconcile (:func:`follow`).
    A change of the SpeechToText, of a child, of the installed CRD or of who scales its Deployment is a whole reconcile
    of its own (their handlers), which keeps a new one or none."""

    body: dict[str, Any]
    stt: api.SpeechToText
    missing: list[str]
    refused: list[tuple[dict[str, Any], str]]
    conflicts: list[tuple[dict[str, Any], str]]
    children: list[dict[str, Any]]
    drift: dict[str, list[str]]
    outdated_crd: str | None
    deployment: tuple[Any, ...]


class Follow(enum.Enum):
    """What a change of a SpeechToText's child calls for (:func:`follow`)."""

    RECONCILE = enum.auto()  #: it may change what the operator decides, or puts back: a whole reconcile
    STATUS = enum.auto()  #: its Deployment's replicas or status changed, nothing the operator decides: the status again
    NOTHING = enum.auto()  #: nothing the operator decides or reports (its status, its version, someone else's fields)


def _unheld(child: dict[str, Any]) -> dict[str, Any]:
    if child["kind"] != "Deployment":
        return child
    return {**child, "spec": {k: v for k, v in child["spec"].items() if k != "replicas"}}


def carries(config: OperatorConfig, last: Observed, kind: str, live: Mapping[str, Any]) -> bool:
    """Whether ``live``, the SpeechToText's child of ``kind``, carries all the operator decided for it at its ``last``
    reconcile (:func:`pending`; a Deployment's replicas where foreign autoscalers hold them aside), and those replicas
    change none of its other children (a PodDisruptionBudget only above one replica)."""
    held = live_replicas(live) if kind == "Deployment" and last.scalers else last.held
    children = last.children if held == last.held else builders.children(last.stt, config, held)
    if held != last.held and list(map(_unheld, children)) != list(map(_unheld, last.children)):
        return False
    child = next((c for c in children if c["kind"] == kind), None)
    return child is not None and not pending(wanted(child, live, last.scalers)[0], live)


def follow(runtime: Runtime, namespace: str, name: str, kind: str, live: Mapping[str, Any] | None) -> Follow:
    """What the SpeechToText ``namespace/name``'s child of ``kind``, now ``live`` (None: deleted), calls for. A whole
    reconcile unless its last one found nothing amiss and still holds (who else scales its Deployment, what the
    installed CRD lacks) and ``live`` carries what it decided (:func:`carries`); else its status again when the
    Deployment's replicas or status changed (:func:`refresh_status`), else nothing. An HPA's scale and the Deployment
    controller's status updates during its rollout are one event each: before, each was a reconcile reading every
    child."""
    last = runtime.observed.get((namespace, name))
    if last is None:
        return follow_amiss(runtime, namespace, name, kind, live)
    if (live is None or last.scalers != runtime.autoscalers.known(namespace, name)
            or last.outdated_crd != runtime.crd.problem
            or not carries(runtime.config, last, kind, live)):
        return Follow.RECONCILE
    return Follow.STATUS if kind == "Deployment" and seen(live) != last.deployment else Follow.NOTHING


def follow_amiss(runtime: Runtime, namespace: str, name: str, kind: str, live: Mapping[str, Any] | None) -> Follow:
    """:func:`follow` for a SpeechToText whose last reconcile kept what it found amiss (:class:`Amiss`): a whole
    reconcile unless that still holds (no foreign autoscaler, the same CRD lack), no object holding a name taken is of
    ``kind``, and ``live`` differs from what it decided where it did then (nowhere but where a write of it was refused);
    else its status again when the Deployment's replicas or status changed (:func:`refresh_status`), else nothing. The
    Deployment controller's status updates while it is Degraded were each a whole reconcile."""
    last = runtime.amiss.get((namespace, name))
    if (last is None or live is None or runtime.autoscalers.known(namespace, name)
            or last.outdated_crd != runtime.crd.problem
            or any(child["kind"] == kind for child, _ in last.conflicts)):
        return Follow.RECONCILE
    child = next((c for c in last.children if c["kind"] == kind), None)
    if child is None or pending(fingerprinted(child), live) != last.drift.get(kind, []):
        return Follow.RECONCILE
    return Follow.STATUS if kind == "Deployment" and seen(live) != last.deployment else Follow.NOTHING


async def refresh(runtime: Runtime, namespace: str, name: str, recheck: bool = False) -> None:
    """The SpeechToText's status made again of its Deployment (:func:`refresh_status`, under its lock), else a whole
    reconcile. ``recheck``: the re-check of a SpeechToText whose pods are not all ready (a rollout, a scale-up, a pod
    that crashes: :func:`conditions.needs_recheck`), made even when its Deployment did not change: its pods may have.
    A refresh that fails is counted (``speech_operator_reconcile_errors_total{scope="status"}``), the reconcile's own
    failures as a reconcile's. The re-check of one whose last reconcile found what the spec references missing or a
    write refused looks at that alone (:func:`recheck_amiss`), and reconciles it wholly once that changed; a change of
    its Deployment's status makes its status again as that reconcile made it (:func:`refresh_status`)."""
    async with runtime.lock(namespace, name):
        with metrics.counted(metrics.STATUS):
            done = await refresh_status(runtime, namespace, name, recheck)
        if not done and recheck:
            done = await recheck_amiss(runtime, namespace, name)
    if not done:
        await reconcile(runtime, namespace, name)


async def recheck_amiss(runtime: Runtime, namespace: str, name: str) -> bool:
    """Whether what the SpeechToText's last reconcile found amiss (:class:`Amiss`) still is, in the same words: each
    object holding a child's name read again (someone else's: no event of it reaches the operator), what its spec
    references looked up again, each write the API server refused tried again (the refusal's cause, a webhook's policy
    or a quota, changes with no event the operator sees). Nothing else read, nothing written when it still is: its
    status would be the same. False (a whole reconcile due) when it found nothing kept, or anything changed: a name
    let go or held by another, a dependency back or another gone, a write taken or refused in other words. Its failures,
    its names taken and its refused writes are counted as a reconcile's
    (``speech_operator_reconcile_errors_total{scope="reconcile"}``). The caller holds its lock.

    Its own children are not read: a change or deletion of one is an event of its own (kopf's watch, once ended, goes
    on from the last version it saw, and is sent what it missed; one that lists again, 410 Gone, passes each child it
    lists to :func:`speech_operator.handlers.child_changed`, and a child not in it is looked for once it is over:
    :meth:`Runtime.relisted`)."""
    last = runtime.amiss.get((namespace, name))
    if last is None:
        return False
    if last.body["metadata"].get("uid") in runtime.ending:
        return True
    try:
        for child, said in last.conflicts:
            kind, meta = child["kind"], child["metadata"]
            held = holder(await runtime.kube.get(child_path(kind, namespace, meta["name"])), last.body)
            if held is None or taken(kind, meta["name"], held) != said:
                return False
        if await missing_dependencies(runtime.kube, last.stt) != last.missing:
            return False
        for child, said in last.refused:
            error = (await applied(runtime, child, last.body)).refused
            if error is None or error.stale or refused_words(child, error) != said:
                return False  # taken now, its name taken, its namespace going, or refused otherwise: a whole reconcile
    except Exception as exc:
        metrics.reconcile_failed(exc)
        raise
    for reason, found in ((conditions.WRITE_REFUSED, last.refused), (conditions.NAME_CONFLICT, last.conflicts)):
        if found:
            metrics.reconcile_failed(reason)
    return True


def refused_words(child: Mapping[str, Any], error: KubeError) -> str:
    """A refused write of ``child`` as the SpeechToText's status says it."""
    return f"{child['kind']} {child['metadata']['name']}: {error.message}"


async def refresh_status(runtime: Runtime, namespace: str, name: str, recheck: bool = False) -> bool:
    """Read the SpeechToText's Deployment and make its status of it as its last reconcile would have (its pods listed
    when :func:`conditions.pods_matter`), over the status last written; False, having written nothing, when
    :func:`follow` calls for a whole reconcile. No other child read, and not the SpeechToText: its own changes are
    reconciled by its own events, its other children's by theirs. ``recheck``: made even when the Deployment is as
    last seen (:func:`refresh`). The caller holds its lock (:meth:`Runtime.lock`).

    What the spec references (Secrets, ConfigMaps, PVCs) is read only when a pod's container waits for what a missing
    one explains (:func:`conditions.dependency_trouble`: a Secret deleted during a rollout), and not yet for that wait
    (:attr:`Observed.looked`): a config error none of them explains (runAsNonRoot) is looked up once, not at each
    re-check while it lasts, and again when its message changes or a new pod waits. What is missing is named as the
    reconcile names it, and nothing is kept as observed (the next re-check is a whole reconcile, whose :class:`Amiss`
    the later ones look at, until it is back).

    Not a re-check, of one whose last reconcile kept what it found amiss (:class:`Amiss`): its status made as that
    reconcile did, what is amiss as it found it (the re-check's to look at again, :func:`recheck_amiss`), no pods
    listed (none are while anything is amiss)."""
    key = (namespace, name)
    last, reported = runtime.observed.get(key), runtime.reported.get(key)
    amiss = runtime.amiss.get(key) if last is None and not recheck else None
    kept: Observed | Amiss | None = last or amiss
    if kept is None or not reported:
        return False
    if kept.body["metadata"].get("uid") in runtime.ending:
        return True
    deployment = await runtime.kube.get(child_path("Deployment", namespace, name))
    then = follow(runtime, namespace, name, "Deployment", deployment)
    if then is Follow.RECONCILE:
        return False
    if amiss is not None:
        stt = amiss.stt.model_copy(update={"status": api.SpeechToTextStatus.model_validate(reported[-1])})
        status = conditions.observe(stt, deployment, amiss.missing, now(), None, amiss.outdated_crd,
                                    builders.chown_not_applied(stt.spec, runtime.config),
                                    [said for _, said in amiss.refused], None, [said for _, said in amiss.conflicts])
        await write_status(runtime, {**amiss.body, "status": reported[-1]}, status)
        runtime.amiss[key] = dataclasses.replace(amiss, deployment=seen(deployment))
        return True
    assert last is not None
    if then is Follow.NOTHING and not recheck:
        return True
    assert deployment is not None
    stt = last.stt.model_copy(update={"status": api.SpeechToTextStatus.model_validate(reported[-1])})
    held = live_replicas(deployment) if last.scalers else None
    pods = await pods_of(runtime, stt) if conditions.pods_matter(stt, deployment, held) else None
    waits = conditions.dependency_trouble(pods or [], stt)
    missing = await missing_dependencies(runtime.kube, stt) if waits - last.looked else []
    status = conditions.observe(stt, deployment, missing, now(), None, last.outdated_crd,
                                builders.chown_not_applied(stt.spec, runtime.config), None, None if missing else pods,
                                None, last.scalers, held)
    await write_status(runtime, {**last.body, "status": reported[-1]}, status)
    if missing:
        runtime.observed.pop((namespace, name), None)
    else:
        runtime.observed[(namespace, name)] = dataclasses.replace(last, deployment=seen(deployment), looked=waits)
    return True


def unchanged_by(config: OperatorConfig, last: Observed, body: Mapping[str, Any]) -> bool:
    """Whether the SpeechToText ``body``, read afresh, still makes what its ``last`` reconcile decided: the same
    generation, a spec the operator takes and kopf can record, and the same children (a new CRD's defaults and pruning
    apply as it is read, and may change what its spec makes without a new generation)."""
    if body["metadata"].get("generation") != last.body["metadata"].get("generation") or record.overflow(body):
        return False
    try:
        stt = api.SpeechToText.model_validate(body)
    except ValueError:
        return False
    stt.status = last.stt.status  # as decided on (an autoscaler's replicas), whatever the event of its write brought
    return not policy.violations(stt.spec, config) and builders.children(stt, config, last.held) == last.children


async def read_noted(runtime: Runtime, namespace: str, name: str) -> tuple[dict[str, Any] | None, str | None]:
    """The SpeechToText read afresh, and what the installed CRD lacks as its status is to show it, noted as shown
    (:meth:`InstalledCRD.problem_for`): the one place that note is taken, with the read it goes with. Noted before the
    read, so a read that fails (RBAC's 403, a 503) leaves it noted: :func:`speech_operator.handlers.follow_crd` waits for
    the next change of the CRD then, where a read that left an older note had it read again at once, for ever. The body
    is None, and the note forgotten, when the SpeechToText is gone or going (deleted, being deleted, its namespace
    going: :attr:`Runtime.ending`): nothing is kept of it (a reconcile its children's deletion calls for comes after its
    own deletion forgot it). The caller holds its lock."""
    key = (namespace, name)
    outdated_crd = runtime.crd.problem_for(key)
    body = await runtime.kube.get(stt_path(namespace, name))
    if body is None or body["metadata"].get("deletionTimestamp") or body["metadata"].get("uid") in runtime.ending:
        runtime.crd.forget(key)
        return None, outdated_crd
    return body, outdated_crd


async def crd_changed(runtime: Runtime, namespace: str, name: str) -> None:
    """What the installed CRD lacks changed, or who else scales the SpeechToText's Deployment
    (:func:`speech_operator.handlers.follow_crd`): a whole reconcile, unless its last one found nothing amiss, who
    scales its Deployment is as it knew, and the SpeechToText read afresh still makes the children it decided
    (:func:`unchanged_by`): then its status alone is made again, saying what the CRD lacks now (:func:`refresh_status`:
    its Deployment read, no other child). A failure of that read or refresh is counted as a refresh's
    (``scope="status"``)."""
    key, done = (namespace, name), False
    async with runtime.lock(namespace, name):
        last = runtime.observed.get(key)
        if last is not None and last.scalers == runtime.autoscalers.known(namespace, name):
            with metrics.counted(metrics.STATUS):
                body, outdated_crd = await read_noted(runtime, namespace, name)
                if body is None:
                    return  # its deletion's handler does the rest
                if unchanged_by(runtime.config, last, body):
                    runtime.observed[key] = dataclasses.replace(last, outdated_crd=outdated_crd)
                    done = await refresh_status(runtime, namespace, name, recheck=True)
    if not done:
        await reconcile(runtime, namespace, name)


def rescaled(config: OperatorConfig, last: Observed | Amiss | None, reported: list[dict[str, Any]] | None,
             before: api.AutoscalingStatus | None, decided: api.AutoscalingStatus) -> api.SpeechToTextStatus | None:
    """The SpeechToText's status with the autoscaler's new ``decided`` in it, when that is all it changes: its ``last``
    reconcile found nothing amiss, or only what its re-check looks at (:class:`Amiss`: its status then says so still,
    and the re-check goes on mending it), no foreign autoscaler holds its Deployment, the status last written
    (``reported``) is the one decided over (``before``: its ``status.autoscaling``), no new decision (``lastDecision``: a
    change of replicas, an Event) and the children built with it are those decided (the sessions, connections or
    ``lowerSince`` it saw changed, not the replicas). None when a whole reconcile is needed for it."""
    scalers = last.scalers if isinstance(last, Observed) else ()
    if last is None or not reported or scalers or decided.lastDecision != (before.lastDecision if before else None):
        return None
    was = reported[-1].get("autoscaling")
    if (api.AutoscalingStatus.model_validate(was) if was is not None else None) != before:
        return None
    status = api.SpeechToTextStatus.model_validate(
        {**reported[-1], "autoscaling": decided.model_dump(mode="json", exclude_none=True)})
    held = last.held if isinstance(last, Observed) else None
    if builders.children(last.stt.model_copy(update={"status": status}), config, held) != last.children:
        return None
    return status


async def autoscaled(runtime: Runtime, namespace: str, name: str, before: api.AutoscalingStatus | None,
                     decided: api.AutoscalingStatus, autoscale: Autoscale) -> None:
    """The autoscaler's look found ``decided`` over ``before`` (the SpeechToText's ``status.autoscaling``): its status
    alone written when that is all it changes (:func:`rescaled`, Degraded or not; a write that fails counted as a
    refresh's, ``scope="status"``), else a whole reconcile that decides again (``autoscale``) on a fresh copy and
    applies it."""
    async with runtime.lock(namespace, name):
        key = (namespace, name)
        last = runtime.observed.get(key) or runtime.amiss.get(key)
        status = rescaled(runtime.config, last, runtime.reported.get(key), before, decided)
        if status is not None:
            assert last is not None
            reported = runtime.reported[key]
            if last.body["metadata"].get("uid") not in runtime.ending:  # else nothing more is written for it
                with metrics.counted(metrics.STATUS):
                    await write_status(runtime, {**last.body, "status": reported[-1]}, status)
            return
    await reconcile(runtime, namespace, name, autoscale=autoscale)


class ApplyRefused(Exception):
    """A write of a child the API server refused (:attr:`error`; :attr:`KubeError.refused`), with the child as
    :func:`apply` read it just before (None: missing), which the status is made of: no read of it again."""

    def __init__(self, error: KubeError, live: dict[str, Any] | None) -> None:
        super().__init__(str(error))
        self.error, self.live = error, live


async def apply(runtime: Runtime, desired: dict[str, Any], owner: Mapping[str, Any],
                scalers: tuple[api.ForeignAutoscaler, ...] = (), handed_back: bool = False,
                read: dict[str, Any] | None | Unread = Unread.UNREAD) -> dict[str, Any]:
    """Server-side apply ``desired`` when :func:`pending` says so; one Event per write, and a Warning with a line when
    it puts back replicas someone scaled its Deployment to (:func:`scaled_by_hand`). :class:`NameConflict` when its
    name is taken by an object ``owner`` does not own (:func:`holder`). ``scalers``: the foreign autoscalers that scale
    the Deployment (:mod:`speech_operator.foreign_autoscalers`): its replicas are left as they are found, written only
    over the version they were read from (:func:`conditional`). ``handed_back``: they held it until now (the status
    names them). Either way a write of the Deployment's fingerprint alone, which names who holds its replicas, is no
    "Updated" event. ``read``: the child as the caller has just read it (None: missing), its first write's base instead
    of a read of its own; a write refused as stale reads it again. A write the API server refuses otherwise, or as stale
    at each try, is :class:`ApplyRefused`, with the child as last read."""
    kind, meta, kube = desired["kind"], desired["metadata"], runtime.kube
    url = child_path(kind, meta["namespace"], meta["name"])
    for attempt in range(1, STALE_WRITES_RETRIED + 2):
        live = await kube.get(url) if read is Unread.UNREAD or attempt > 1 else read
        held = holder(live, owner)
        if held:
            raise NameConflict(taken(kind, meta["name"], held))
        written, found = wanted(desired, live, scalers)  # found: the replicas they hold it at
        todo = pending(written, live)
        if not todo:
            return dict(live or {})
        sent = written if found is None else conditional(written, live)
        try:
            applied = await kube.apply(url, sent)
            break
        except KubeError as exc:
            if not (exc.stale and sent is not written and attempt <= STALE_WRITES_RETRIED):
                if exc.refused and not exc.namespace_terminating:
                    raise ApplyRefused(exc, live) from exc
                raise
            log.debug("%s %s/%s changed since it was read (its replicas then: %s): read again", kind, meta["namespace"],
                      meta["name"], found)
    if live is None:
        runtime.events.post(owner, "Normal", "Created", f"Created {kind} {meta['name']}")
    elif (found is not None or (handed_back and kind == "Deployment")) and all(p.endswith(APPLIED) for p in todo):
        pass  # the fingerprint alone: it now names who holds the replicas, nothing the spec changed
    else:
        runtime.events.post(owner, "Normal", "Updated", f"Updated {kind} {meta['name']}: {_summary(todo)}")
    scaled = scaled_by_hand(written, live, owner)
    if scaled:
        log.warning("%s %s/%s: %s", api.KIND, meta["namespace"], owner["metadata"]["name"], scaled)
        runtime.events.post(owner, "Warning", SCALED_BY_HAND, scaled)
    return applied


@dataclass(frozen=True)
class Outcome:
    """What :func:`applied` came to for one child: ``live``, the child as written, or as last read before a refused
    write (None: missing, or not looked at); ``refused``, the API server's refusal (:class:`ApplyRefused`);
    ``conflict``, whose object holds its name, in the status' words (:class:`NameConflict`); ``ending``, its namespace
    is being deleted (nothing more is created in it)."""

    live: dict[str, Any] | None
    refused: KubeError | None = None
    conflict: str | None = None
    ending: bool = False


async def applied(runtime: Runtime, desired: dict[str, Any], owner: Mapping[str, Any],
                  scalers: tuple[api.ForeignAutoscaler, ...] = (), handed_back: bool = False,
                  read: dict[str, Any] | None | Unread = Unread.UNREAD) -> Outcome:
    """:func:`apply` (its arguments), its outcome told once for the reconcile and its re-check (:func:`recheck_amiss`);
    any other failure raised."""
    try:
        return Outcome(await apply(runtime, desired, owner, scalers, handed_back, read))
    except ApplyRefused as refusal:
        return Outcome(refusal.live, refused=refusal.error)
    except NameConflict as exc:
        return Outcome(None, conflict=str(exc))
    except KubeError as exc:
        if not exc.namespace_terminating:
            raise
        return Outcome(None, ending=True)


async def remove_unwanted(runtime: Runtime, desired: list[dict[str, Any]], owner: Mapping[str, Any]) -> None:
    """Delete owned children of kinds the builders no longer return (e.g. a PodDisruptionBudget
    once replicas drop to 1)."""
    meta = owner["metadata"]
    wanted = {d["kind"] for d in desired}
    for kind in PLURALS.keys() - wanted:
        url = child_path(kind, meta["namespace"], meta["name"])
        live = await runtime.kube.get(url)
        if live is not None and holder(live, owner) is None:
            if await runtime.kube.delete(url):
                runtime.events.post(owner, "Normal", "Deleted", f"Deleted {kind} {meta['name']}")


async def missing_dependencies(kube: Kube, stt: api.SpeechToText) -> list[str]:
    """Human-readable names of the Secrets, ConfigMaps, their keys and the PVCs the pods need but that do not exist
    (a pod that mounts a missing one stays in ContainerCreating; one whose image pull secret is missing cannot pull
    from a registry that asks for it)."""
    missing: list[str] = []
    for ref in builders.secret_refs(stt.spec):
        secret = await kube.get(path("v1", "secrets", stt.namespace, ref.name))
        if secret is None:
            missing.append(f'Secret "{ref.name}"')
        elif ref.key not in (secret.get("data") or {}) and ref.key not in (secret.get("stringData") or {}):
            missing.append(f'key "{ref.key}" in Secret "{ref.name}"')
    for pull in stt.spec.imagePullSecrets:
        if await kube.get(path("v1", "secrets", stt.namespace, pull.name)) is None:
            missing.append(f'Secret "{pull.name}" (spec.imagePullSecrets)')
    ca = builders.ca_bundle(stt.spec)
    if ca is not None:
        config_map = await kube.get(path("v1", "configmaps", stt.namespace, ca.name))
        if config_map is None:
            missing.append(f'ConfigMap "{ca.name}"')
        elif ca.key not in (config_map.get("data") or {}) and ca.key not in (config_map.get("binaryData") or {}):
            missing.append(f'key "{ca.key}" in ConfigMap "{ca.name}"')
    for claim in builders.claim_names(stt.spec):
        if await kube.get(path("v1", "persistentvolumeclaims", stt.namespace, claim)) is None:
            missing.append(f'PersistentVolumeClaim "{claim}"')
    return missing


async def pods_of(runtime: Runtime, stt: api.SpeechToText) -> list[dict[str, Any]]:
    """The SpeechToText's pods (selected by its labels, also checked here)."""
    wanted = builders.selector_labels(stt)
    listing = await runtime.kube.request("GET", path("v1", "pods", stt.namespace), query={"labelSelector": builders.selector(stt)})
    pods = (listing or {}).get("items") or []
    return [p for p in pods if wanted.items() <= ((p.get("metadata") or {}).get("labels") or {}).items()]


def invalid_spec_message(exc: ValueError) -> str:
    """What is wrong with a spec, in one line per error: where, and pydantic's or the recognizer's words."""
    if isinstance(exc, pydantic.ValidationError):
        return "; ".join(f"{'.'.join(str(x) for x in e['loc']) or '.'}: {e['msg'].removeprefix('Value error, ')}"
                         for e in exc.errors())
    return str(exc)


def _report_transitions(events: Events, body: Mapping[str, Any], before: dict[str, Any] | None,
                        after: api.SpeechToTextStatus) -> None:
    """One Event per condition flip (and per new reason to be Degraded, and per new generation of a refused spec refused
    in other words: :func:`conditions.refused_anew`), so ``kubectl describe stt`` tells the story; the operator's log
    has a line for each Degraded and Recovered. A foreign autoscaler found while another reason
    holds Degraded (its message added to that reason's) has its Warning and its line too, and its Recovered and its
    line once it goes while Degraded still holds (for another reason): no flip of Degraded says either."""
    old = {c.get("type"): (c.get("status"), c.get("reason")) for c in (before or {}).get("conditions") or []}
    meta = body.get("metadata") or {}

    def degraded(reason: str, message: str) -> None:
        log.warning("%s %s/%s is degraded (%s): %s", api.KIND, meta.get("namespace"), meta.get("name"), reason, message)
        events.post(body, "Warning", reason, message)

    def recovered(message: str) -> None:
        log.info("%s %s/%s recovered: %s", api.KIND, meta.get("namespace"), meta.get("name"), message)
        events.post(body, "Normal", "Recovered", message)
    for c in after.conditions:
        was, why = old.get(c.type, (None, None))
        if c.type == conditions.DEGRADED and c.status == "True" and (
                (was, why) != (c.status, c.reason) or conditions.refused_anew(before, c)):
            degraded(c.reason, c.message)
        elif was == c.status:
            continue
        elif c.type == conditions.DEGRADED and c.type in old:
            recovered(f"no longer {why}: {c.message}" if why else c.message)
        elif c.type == conditions.READY and c.status == "True":
            events.post(body, "Normal", "Ready", c.message)
    held = next((c for c in after.conditions if c.type == conditions.DEGRADED and c.status == "True"), None)
    reason = next((c.reason for c in after.conditions if c.type == conditions.DEGRADED), None)
    foreign_before = (before or {}).get("foreignAutoscalers")
    if after.foreignAutoscalers and not foreign_before and reason != conditions.FOREIGN_AUTOSCALER:
        degraded(conditions.FOREIGN_AUTOSCALER, foreign_autoscalers.message(tuple(after.foreignAutoscalers),
                                                                            api.SpeechToText.model_validate(body)))
    elif foreign_before and not after.foreignAutoscalers and held is not None:
        recovered(f"no longer {conditions.FOREIGN_AUTOSCALER}: {foreign_autoscalers.gone(foreign_before, meta['name'])}; "
                  f"still {held.reason}")


def _report_decision(events: Events, body: Mapping[str, Any], before: api.AutoscalingStatus | None,
                     after: api.AutoscalingStatus) -> None:
    """One Event per change of replicas the autoscaler makes."""
    made = after.lastDecision
    if made is None or (before is not None and before.lastDecision == made):
        return
    reason = ("WokenUp" if made.previous == 0 else "ScaledToZero" if made.replicas == 0
              else "ScaledUp" if made.replicas > made.previous else "ScaledDown")
    events.post(body, "Normal", reason, made.reason)


def differs(status: Mapping[str, Any], reported: dict[str, Any]) -> bool:
    """Whether a stored ``status`` does not read as the operator's ``reported`` fields (fields it never writes, as
    the gateway's ``demand``, are not compared)."""
    return {k: status.get(k) for k in reported} != reported


async def write_status(runtime: Runtime, body: Mapping[str, Any], status: api.SpeechToTextStatus) -> None:
    """Server-side apply the status subresource when a value in it changed; remember it (:attr:`Runtime.reported`)."""
    before = dict(body.get("status") or {})
    # status.demand is the gateway's field: the operator never applies it (so never removes it)
    after = status.model_dump(mode="json", exclude_none=True, exclude={"demand"})
    meta = body["metadata"]
    if not differs(before, after):
        runtime.report(meta["namespace"], meta["name"], after)
        return
    await runtime.kube.apply(stt_path(meta["namespace"], meta["name"], "status"), {
        "apiVersion": api.API_VERSION, "kind": api.KIND,
        "metadata": {"name": meta["name"], "namespace": meta["namespace"]}, "status": after})
    runtime.report(meta["namespace"], meta["name"], after)
    _report_transitions(runtime.events, body, before, status)


#: What the autoscaler decides for a SpeechToText read afresh under its lock: its new ``status.autoscaling``.
Autoscale = Callable[[api.SpeechToText], Awaitable[api.AutoscalingStatus]]


async def reconcile(runtime: Runtime, namespace: str, name: str, autoscale: Autoscale | None = None) -> api.SpeechToTextStatus | None:
    """Bring the SpeechToText ``namespace/name`` and its children in line with its spec; report status.

    The object is read afresh under its lock, so concurrent triggers (its own events, its
    children's, the Degraded re-check, the autoscaler) never act on a stale copy. ``autoscale``
    (the autoscaler's look, :mod:`speech_operator.autoscaler`) decides the replicas on that
    copy; a change is one Event. Returns ``None`` when it is gone or being deleted, or when its Deployment changed
    between each read and write of it (a race with a foreign autoscaler: tried again soon, its status then, and said in
    its status only once that lasts, :data:`STALE_SUSTAINED_SECONDS`). A spec the
    operator cannot take (a setting the recognizer would refuse; a spec a CRD older than the
    operator let through; one too large for kopf's record of it, :mod:`speech_operator.record`) changes nothing: its status says why (:func:`conditions.invalid`). While the
    installed CRD lacks fields of this operator's, the status says so (:mod:`speech_operator.crd_watch`). While an
    HPA scales its Deployment instead of it, the Deployment's replicas are left to the HPA, and the status says so
    (:mod:`speech_operator.foreign_autoscalers`); once it goes, spec.autoscaling starts from the replicas it left.
    """
    async with runtime.lock(namespace, name):
        kept: Observed | None = None  # what :attr:`Runtime.observed` keeps of it: one that found nothing amiss
        amiss: Amiss | None = None  # what :attr:`Runtime.amiss` keeps of it: one that found only what a re-check may mend
        try:
            body, outdated_crd = await read_noted(runtime, namespace, name)
            if body is None:
                return None
            try:
                stt = api.SpeechToText.model_validate(body)
            except ValueError as exc:
                status = conditions.invalid(body, invalid_spec_message(exc), now(), outdated_crd)
                await write_status(runtime, body, status)
                return status
            too_large = record.overflow(body)
            if too_large:  # kopf cannot record it: nothing is applied (the status, an event and a line say why)
                status = conditions.invalid(body, too_large, now(), outdated_crd, conditions.SPEC_TOO_LARGE)
                await write_status(runtime, body, status)
                return status
            missing = await missing_dependencies(runtime.kube, stt)
            refused = policy.violations(stt.spec, runtime.config)
            scalers = await runtime.autoscalers.scaling(runtime.kube, namespace, name)
            handed_back = not scalers and bool(stt.status and stt.status.foreignAutoscalers)
            resuming = handed_back and foreign_autoscalers.resumes(stt)
            # the Deployment, read once when this reconcile needs it before writing it (apply then writes over that read):
            # what a refused spec reports, the replicas a foreign autoscaler holds it at or left it at
            read: dict[str, Any] | None | Unread = Unread.UNREAD
            if refused or scalers or resuming:
                read = await runtime.kube.get(child_path("Deployment", namespace, name))
            ours = read if not isinstance(read, Unread) and holder(read, body) is None else None
            if resuming:  # spec.autoscaling starts from the replicas they left
                stt.status = foreign_autoscalers.resumed(stt, live_replicas(ours))
            # while a foreign autoscaler holds the Deployment, spec.autoscaling decides nothing (no event, no status)
            if autoscale is not None and stt.spec.autoscaling is not None and not refused and not scalers:
                before = stt.status.autoscaling if stt.status else None
                decided = await autoscale(stt)
                stt.status = (stt.status or api.SpeechToTextStatus()).model_copy(update={"autoscaling": decided})
                _report_decision(runtime.events, body, before, decided)
            deployment, write_refused, conflicts = None, list[str](), list[str]()
            conflicted: list[tuple[dict[str, Any], str]] = []  # the names taken, which a re-check reads again alone
            drift: dict[str, list[str]] = {}  # where the children whose writes were refused differ from what is decided
            rechecked: list[tuple[dict[str, Any], str]] | None = []  # the refused writes a re-check tries again alone
            raced, racing = 0, False  # reconciles in a row whose Deployment writes found it changed (this one's); not for long
            held = live_replicas(ours) if scalers and not refused else None  # the replicas a foreign autoscaler holds it at
            desired: list[dict[str, Any]] = []
            if refused:  # nothing created or changed; the status and an event say why
                deployment = ours
            else:
                desired = builders.children(stt, runtime.config, held)
                for child in desired:
                    outcome = await applied(runtime, child, body, scalers, handed_back,
                                            read if child["kind"] == "Deployment" else Unread.UNREAD)
                    actual, error = outcome.live, outcome.refused
                    if outcome.ending:  # its namespace is being deleted: it goes too, and nothing to say
                        runtime.ending.add(body["metadata"].get("uid"))
                        log.info("%s %s/%s: its namespace is being deleted: nothing more is created in it (%s %s "
                                 "is gone)", api.KIND, namespace, name, child["kind"], name)
                        return None
                    if outcome.conflict is not None:  # someone else's: said in the status, looked at again
                        conflicts.append(outcome.conflict)
                        conflicted.append((child, outcome.conflict))
                    if error is not None:  # an admission webhook, a quota, ...: said in the status, tried again
                        if error.stale:  # the Deployment changed since its read, at each of apply's tries
                            lasted, raced = runtime.contention(namespace, name)
                            racing = lasted < STALE_SUSTAINED_SECONDS
                        if error.stale and racing:  # a race: tried again, the status then
                            actual = None
                        else:
                            write_refused.append(refused_words(child, error) + (
                                f" (at each of its writes for {lasted:.0f} s, {raced} reconciles of "
                                f"{STALE_WRITES_RETRIED + 1} tries each: something else writes it all the time)"
                                if error.stale else ""))
                            rechecked = None if error.stale or rechecked is None else [*rechecked, (child, write_refused[-1])]
                            drift[child["kind"]] = pending(wanted(child, actual, scalers)[0], actual)
                    if child["kind"] == "Deployment":
                        deployment = actual
                await remove_unwanted(runtime, desired, body)
            if not raced:
                runtime.contended.pop((namespace, name), None)
            for reason, found in ((conditions.WRITE_REFUSED, write_refused), (conditions.NAME_CONFLICT, conflicts)):
                if found:
                    metrics.reconcile_failed(reason)
            if racing:
                delay = min(STALE_RETRY_SECONDS * 2 ** (raced - 1), runtime.config.recheck_seconds)
                log.info("%s %s/%s: its Deployment changed between each read and write of it (%d tries; a foreign "
                         "autoscaler scaling it meanwhile): tried again in %g s, its status then", api.KIND, namespace,
                         name, STALE_WRITES_RETRIED + 1, delay)
                runtime.retry(namespace, name, delay)
                return None
            if held is not None and live_replicas(deployment) is not None:  # as written (the HPA may have moved it since)
                held = live_replicas(deployment)
            # why pods are not ready, in the kubelet's words: asked only then (a missing Secret or a refused write says more)
            pods = (await pods_of(runtime, stt) if not (refused or missing or write_refused or conflicts)
                    and conditions.pods_matter(stt, deployment, held) else None)
            # an HPA on a Deployment of this name that is someone else's is none of this SpeechToText's business
            foreign = scalers if not any(c.startswith("Deployment ") for c in conflicts) else ()
            status = conditions.observe(stt, deployment, missing, now(), refused, outdated_crd,
                                        builders.chown_not_applied(stt.spec, runtime.config), write_refused, pods, conflicts,
                                        foreign, held)
            await write_status(runtime, body, status)
            if not (refused or missing or write_refused or conflicts):
                kept = Observed(body, stt, desired, live_replicas(ours) if scalers else None, scalers, outdated_crd,
                                seen(deployment))
            elif rechecked is not None and not (refused or scalers or handed_back):
                amiss = Amiss(body, stt, missing, rechecked, conflicted, desired, drift, outdated_crd, seen(deployment))
            return status
        except Exception as exc:
            metrics.reconcile_failed(exc)  # raised on: kopf or the caller says it and tries again
            raise
        finally:
            if kept is None:
                runtime.observed.pop((namespace, name), None)
            else:
                runtime.observed[(namespace, name)] = kept
            if amiss is None:
                runtime.amiss.pop((namespace, name), None)
            else:
                runtime.amiss[(namespace, name)] = amiss


async def delete_children(runtime: Runtime, body: Mapping[str, Any]) -> None:
    """Delete what the SpeechToText owns (owner references would too; this makes it immediate), never an object of
    its children's names that someone else holds (:func:`holder`). Nothing when it is deleted with its dependents
    orphaned (``kubectl delete --cascade=orphan``: the API server's ``orphan`` finalizer), as the garbage collector
    leaves them: its pods serve on, and a SpeechToText of its name made again takes them back (:func:`holder`).
    No Event when its namespace is known to be going (:attr:`Runtime.ending`): the API server would refuse it; else
    one per child deleted (the namespace controller deletes in no set order: a SpeechToText may go before anything
    met the namespace's refusal, and its first "Deleted" Event then does, :mod:`speech_operator.events`).
    What is kept of it is forgotten at once (its retries and refreshes are due no more), and again once its lock is
    held: a reconcile under way at its deletion keeps what it found as it ends, and with its dependents orphaned no
    child's deletion reconciles it afterwards (which finds it gone and keeps nothing)."""
    meta = body["metadata"]
    runtime.forget(meta["namespace"], meta["name"])
    orphaned = ORPHAN in (meta.get("finalizers") or [])
    if orphaned:
        log.info("%s %s/%s is deleted with its dependents orphaned: its children are left", api.KIND, meta["namespace"],
                 meta["name"])
    async with runtime.lock(meta["namespace"], meta["name"]):
        runtime.forget(meta["namespace"], meta["name"])
        said = meta.get("uid") not in runtime.ending
        runtime.ending.discard(meta.get("uid"))
        if orphaned:
            return
        for kind in PLURALS:
            url = child_path(kind, meta["namespace"], meta["name"])
            live = await runtime.kube.get(url)
            if live is not None and holder(live, body) is None and await runtime.kube.delete(url) and said:
                runtime.events.post(body, "Normal", "Deleted", f"Deleted {kind} {meta['name']}")
