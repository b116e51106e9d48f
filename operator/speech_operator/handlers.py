"""kopf handlers: thin wrappers that hand every event to :mod:`speech_operator.reconcile`.

- SpeechToText created, changed (including ``kubectl scale``) or seen at start -> reconcile.
- An owned Deployment, Service or PodDisruptionBudget changed or deleted -> reconcile its owner (drift is put back;
  also what changed while a watch of them was away, as kopf lists them again: :func:`child_changed`);
  only its Deployment's status or a foreign autoscaler's replicas changed -> its status again, from the Deployment.
- While Degraded (a Secret or PVC missing, a write the API server refused, a name taken, pods that crash or cannot
  pull their image), or while its pods exist and are not all ready, a daemon re-checks every ``recheck_seconds`` (a
  crash loop changes no field of the Deployment's: only a look at the pods sees it): the pods' look a status refresh,
  the look for a missing Secret, a refused write or a name taken those alone. An API server that does not answer
  (5xx, 429, a timeout) is one line, and a retry.
- With ``spec.autoscaling``, a daemon looks at the pods' sessions every ``autoscale_seconds``
  (:mod:`speech_operator.autoscaler`), and at once when the gateway asks for a locale at zero
  (``status.demand``, seen by an event handler: status changes are no kopf update); none while the spec is refused.
- A status someone else wrote over the operator's (conditions cleared by hand), or removed -> written again at once
  (or, when kopf's watch of them was away, once kopf lists them again: :func:`status_changed`).
- SpeechToText deleted -> its children are deleted, then kopf releases the finalizer.
- The installed SpeechToText CRD, listed and watched from start (:mod:`speech_operator.crd_watch`):
  while it lacks fields this operator knows, each SpeechToText is reconciled to say so, and again
  once it is current (a daemon per SpeechToText waits for that; kopf stops it while paused). The same daemon
  reconciles it when an HPA pointed at its Deployment appears or goes (:mod:`speech_operator.foreign_autoscalers`,
  which lists and watches the HPAs of each namespace a SpeechToText is reconciled in). That daemon also
  reconciles, at its start, a SpeechToText never reconciled: kopf calls no handler for one created with another's
  annotations (a copy, a restored backup).
- Every SpeechToText is kept in an index (:func:`speech_operator.metrics.summary`) that the
  operator's ``/metrics`` reads at each scrape.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Iterator
from typing import Any

import kopf

from speech_operator import api, builders, conditions, crd_watch, kopf_exit, kopf_scanning, kube, metrics, record
from speech_operator.autoscaler import Autoscaler
from speech_operator.reconcile import (
    KINDS,
    Follow,
    Runtime,
    crd_changed,
    delete_children,
    follow,
    left_at_stop,
    reconcile,
    refresh,
    stt_path,
)

STT = (api.GROUP, api.VERSION, api.PLURAL)


def owner_of(body: kopf.Body) -> str | None:
    """The SpeechToText a Deployment, Service or PodDisruptionBudget is a child of (:func:`builders.owner_name`)."""
    return builders.owner_name(body.metadata)


def _is_child(body: kopf.Body, type: str | None, namespace: str | None, resource: kopf.Resource, memo: kopf.Memo,
              **_: Any) -> bool:
    """Whether ``body`` is a SpeechToText's child (:func:`child_changed` handles it). One that is not, passed from a
    listing kopf made again (:func:`listed_again`: kopf watches every object of the kind), says that listing came
    (:meth:`~speech_operator.reconcile.Runtime.relisted`, no owner): a child deleted while that watch was away, the
    last child of its kind there, is in no listing, and kopf passes a handler nothing else of it (nor anything of a
    listing with no object at all: kopf's session tells that one, :meth:`~speech_operator.reconcile.Runtime.kopf_listed`)."""
    if owner_of(body) is not None:
        return True
    if namespace is not None and listed_again(type, memo):
        runtime(memo).relisted(KINDS[resource.plural], namespace, None)
    return False


def namespaced(namespace: str | None) -> str:
    """The namespace kopf gives a handler of a namespaced resource (its protocols allow None, for
    cluster-wide resources)."""
    if namespace is None:
        raise kopf.PermanentError("a namespaced resource came without a namespace")
    return namespace


def runtime(memo: kopf.Memo) -> Runtime:
    """The process-wide :class:`Runtime`; the CLI and tests may put their own in the memo."""
    rt = memo.get("runtime")
    if rt is None:
        rt = memo["runtime"] = Runtime()
    return rt


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    """Keep kopf's bookkeeping in our own annotations and finalizer, out of ``status``.

    The operator's startup handlers (this one, :func:`watch_crd`, :func:`export`) are coroutines that never wait, so
    that kopf's startup activity is over at its first step, before kopf listens for SIGTERM: kopf runs a plain function
    in a thread, and a stop landing on that wait (a pod stopped just after it started) cancelled the activity, with the
    WARNINGs "Activity ... is cancelled" and "Startup activity is only partially executed", and no cleanup
    (:func:`close`): kopf then waited 5 s (fixed) for the CRD's watch (:func:`watch_crd`) before cancelling it."""
    settings.persistence.finalizer = f"{api.GROUP}/cleanup"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=api.GROUP)
    settings.persistence.diffbase_storage = record.STORAGE  # never a record the API server would refuse
    settings.posting.reporting_component = builders.MANAGER
    settings.execution.max_workers = 4
    settings.queueing.exit_timeout = HANDLER_GRACE_SECONDS  # the handling of an event under way at exit finishes
    kopf_exit.install()  # and a worker asleep (a standby replica's peering, a delayed handler) wakes at once
    kopf_scanning.install()  # kopf's lookup of resources ends with its requests at a stop


@kopf.on.login()
async def login(memo: kopf.Memo, settings: kopf.OperatorSettings, **_: Any) -> kopf.AiohttpSession:
    """The pod's service account, else the kubeconfig (exec plugins and OIDC included), loaded by
    the official client: our calls and kopf's watches use the same credentials, refreshed together
    on every re-login. kopf's session tells the operator each listing kopf makes
    (:meth:`~speech_operator.reconcile.Runtime.kopf_listed`)."""
    rt = runtime(memo)
    return kube.kopf_session(await kube.connection_info(await rt.kube.reload(), settings), rt.kopf_listed)


def autoscaler(memo: kopf.Memo) -> Autoscaler:
    """The process-wide :class:`Autoscaler` (its HTTP client to the pods, its wake-ups), kept in the :class:`Runtime`:
    kopf gives each object's handlers a copy of the memo, so one kept in the memo was one per SpeechToText, each
    with an HTTP client of its own that the cleanup (:func:`close`, given the operator's memo) never closed."""
    rt = runtime(memo)
    if rt.autoscaler is None:
        rt.autoscaler = Autoscaler(rt)
    scaler: Autoscaler = rt.autoscaler
    return scaler


@kopf.on.startup()
async def watch_crd(memo: kopf.Memo, **_: Any) -> None:
    """Compare the installed CRD with this operator's, now and on every change of it, in the background."""
    rt = runtime(memo)
    memo["crd_watch"] = asyncio.create_task(crd_watch.follow(rt.kube, rt.crd), name="SpeechToText CRD watch")


@contextlib.contextmanager
def _ended_at_exit(memo: kopf.Memo, namespace: str, name: str, uid: str | None) -> Iterator[None]:
    """Run a daemon's body (of the SpeechToText ``namespace/name``, ``uid``) so that the cleanup (:func:`close`) ends it
    if kopf did not, and so that the operator ends it once it finds that SpeechToText gone though kopf saw no deletion
    (:meth:`~speech_operator.reconcile.Runtime._gone_while_away`): it returns, and kopf starts it no more.

    kopf stops the daemons it knows of when it exits, then lets the events in processing finish
    (up to ``settings.queueing.exit_timeout``), and one of those may start a daemon after the
    others were stopped (a SpeechToText's creation handled as the operator stops): nothing sets
    that one's flag, so it runs on until kopf gives up waiting for its tasks (5 s, fixed) and
    cancels them. The cleanup runs after every event is done: it cancels the daemons still
    running, and a daemon cancelled so ends quietly (kopf logs a cancelled handler as a WARNING)."""
    rt = runtime(memo)  # shared: kopf gives each SpeechToText's handlers a copy of the memo
    task = asyncio.current_task()
    assert task is not None
    rt.daemons[task] = (namespace, name, uid or "")
    try:
        yield
    except asyncio.CancelledError:
        if not rt.exiting and task not in rt.ended:
            raise
    finally:
        rt.daemons.pop(task, None)
        rt.ended.discard(task)


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    """The operator's exit: the daemons kopf left ended, the watches and clients closed, and the Events not yet posted
    given a short grace (:meth:`speech_operator.events.Events.close`) before the API client they use is closed."""
    rt = runtime(memo)
    rt.exiting = True
    left = list(rt.daemons)
    for task in left:
        task.cancel()
    await asyncio.gather(*left, return_exceptions=True)
    await rt.stop_retries()
    watch = memo.get("crd_watch")
    if watch is not None:
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch
    await rt.autoscalers.close()
    await autoscaler(memo).close()
    await rt.events.close()
    await runtime(memo).kube.close()


#: kopf's index of SpeechToTexts for the metrics (kopf passes it to every handler as a keyword of this name).
INDEX = "speechtotexts"


@kopf.index(*STT, id=INDEX)
async def speechtotexts(body: kopf.Body, namespace: str | None, name: str | None, memo: kopf.Memo,
                        **_: Any) -> dict[tuple[str | None, str | None], metrics.Summary]:
    """The SpeechToText's entry, stamped with the current resumption; none when an event kopf received before a pause
    is of one gone since, or replaced by another of its name (:meth:`metrics.Exporter.unsure`: one GET). An API server
    that does not answer that GET leaves the entry made, and its next event reads again."""
    exporter = memo.get("metrics")
    if exporter is None:
        return {(namespace, name): metrics.summary(body)}
    resumed, uid = exporter.resumed(), str(body.metadata.get("uid"))
    if exporter.unsure(uid) and name is not None:
        try:
            live = await runtime(memo).kube.get(stt_path(namespaced(namespace), name))
        except UNANSWERED:
            pass
        else:
            if live is None or live["metadata"].get("uid") != uid:
                return {}
            exporter.alive(uid)
    return {(namespace, name): metrics.summary(body, resumed)}


@kopf.on.event(*STT)
async def unindexed(type: str, uid: str | None, memo: kopf.Memo, **_: Any) -> None:
    """A SpeechToText's deletion (its DELETED event: kopf's index drops its entry then): the ``/metrics`` server forgets
    it read it live (:meth:`metrics.Exporter.forget`)."""
    exporter = memo.get("metrics")
    if type == "DELETED" and exporter is not None and uid:
        exporter.forget(uid)


@kopf.on.startup()
async def export(memo: kopf.Memo, **kwargs: Any) -> None:
    """Hand kopf's index of SpeechToTexts, and the uids of its entries the operator found gone, to the ``/metrics``
    server the CLI started (``--metrics``), if any."""
    exporter = memo.get("metrics")
    if exporter is not None:
        exporter.index = kwargs[INDEX]
        exporter.gone = runtime(memo).gone


#: What an API server that is away or busy gives (a 5xx, a throttle, a timeout, a broken connection, an answer that is
#: no object: :data:`speech_operator.kube.UNANSWERED`): asking again later mends it. A write it refuses outright is the
#: SpeechToText's status instead (:func:`reconcile`).
UNANSWERED = kube.UNANSWERED


@kopf.on.resume(*STT)
@kopf.on.create(*STT)
@kopf.on.update(*STT)
async def reconcile_stt(name: str, namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    """Reconcile the SpeechToText; not once the operator is stopping (:func:`speech_operator.reconcile.left_at_stop`):
    kopf's retry of one that failed (its delay over as an event of it came, queued or handled at the stop), or an event
    queued at the stop, was a whole reconcile in the pod's grace, which the next replica's start makes anyway (kopf
    resumes each SpeechToText). kopf then counts it handled: its resumption at the next start reconciles it."""
    rt = runtime(memo)
    if left_at_stop("its reconcile", namespaced(namespace), name):
        return
    try:
        await reconcile(rt, namespaced(namespace), name)
    except UNANSWERED as exc:  # kopf's one line, no traceback, and it tries again then
        raise kopf.TemporaryError(f"{type(exc).__name__}: {exc}", delay=rt.config.recheck_seconds) from None


async def _reconcile_or_say(rt: Runtime, namespace: str, name: str, logger: kopf.Logger, then: str,
                            work: Awaitable[Any] | None = None) -> None:
    """Reconcile from a daemon or an event (or do ``work`` instead, one that may reconcile); an unanswered API server is
    one WARNING line saying when it is tried again."""
    try:
        await (reconcile(rt, namespace, name) if work is None else work)
    except UNANSWERED as exc:
        logger.warning("reconciling %s/%s: %s: %s; again %s", namespace, name, type(exc).__name__, exc, then)


@kopf.on.delete(*STT)
async def delete_stt(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await delete_children(runtime(memo), body)


def handled(body: kopf.Body) -> bool:
    """Whether ``body`` carries kopf's record of a handled spec (:data:`speech_operator.record.STORAGE`): its creation
    was handled (kopf writes the record once the creation's handler is done), or it was made with another's record."""
    return any(key in body.metadata.annotations for key in record.STORAGE.keys(body))


#: How long a handler caught mid-reconcile by a stop may finish it before kopf cancels it, with a WARNING: a daemon whose
#: flag is set (each ends at its flag between reconciles; without a grace kopf cancels one caught mid-reconcile at
#: once, and a recovery's own status write stops the re-check that made it: "Daemon ... is cancelled. Will escalate."),
#: and, at the operator's exit, the handling of an event under way (kopf's ``settings.queueing.exit_timeout``, 2 s of
#: its own: a creation handled on a slow API server was cut, with "Unprocessed streams left" and "Handler
#: 'reconcile_stt' is cancelled", and without kopf's record of it handled, handled again at the next start). The
#: operator's pods' terminationGracePeriodSeconds (the chart's, deploy/'s) leave room for it (tests/ship).
HANDLER_GRACE_SECONDS = 10.0


def _degraded(status: kopf.Status, **_: Any) -> bool:
    return conditions.needs_recheck(dict(status))


@kopf.daemon(*STT, when=_degraded, cancellation_backoff=HANDLER_GRACE_SECONDS, cancellation_timeout=1)
async def recheck_degraded(stopped: kopf.DaemonStopped, name: str, namespace: str | None, uid: str | None,
                           memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """Look for the missing Secret/PVC again until it appears, write what the API server refused again until it
    takes it, read the object holding a child's name again until it is gone (those alone: a whole reconcile once that
    changed, :func:`speech_operator.reconcile.recheck_amiss`), look
    at pods that are not ready again until they are (the filter then stops this daemon). The pods' look is a status
    refresh (its Deployment read, its pods listed: :func:`speech_operator.reconcile.refresh`) when its
    last reconcile found nothing amiss, else (or when the Deployment drifted) a whole reconcile. It ends for
    good once the SpeechToText's namespace is known to be going (:attr:`~speech_operator.reconcile.Runtime.ending`):
    nothing more is written for it, and it goes; a re-check would only read it until then, and one reading when kopf
    stops the daemon at its deletion is cancelled (kopf's WARNING "Daemon 'recheck_degraded' is cancelled")."""
    rt = runtime(memo)
    with _ended_at_exit(memo, namespaced(namespace), name, uid):
        # kopf's flag ends the wait at once: kopf cancels a daemon the flag does not end, with a WARNING
        while not await stopped.wait(rt.config.recheck_seconds) and uid not in rt.ending:
            await _reconcile_or_say(rt, namespaced(namespace), name, logger, f"in {rt.config.recheck_seconds:g} s",
                                    refresh(rt, namespaced(namespace), name, recheck=True))


@kopf.daemon(*STT, cancellation_backoff=HANDLER_GRACE_SECONDS, cancellation_timeout=1)
async def follow_crd(stopped: kopf.DaemonStopped, name: str, namespace: str | None, uid: str | None, status: kopf.Status,
                     body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """Reconcile once each time what the installed CRD lacks changes (the status says it, or no more: its status alone
    when nothing else changed, :func:`speech_operator.reconcile.crd_changed`), and each time who else scales its
    Deployment changes (:mod:`speech_operator.foreign_autoscalers`).

    And once at its start when the SpeechToText was never reconciled (no ``status.observedGeneration``) though it
    carries kopf's record of a handled spec (:func:`handled`): kopf calls no handler for it (created with another's
    annotations, ``kubectl get -o yaml`` of one applied elsewhere, or restored from a backup), and it would get nothing.
    Not at a plain creation (no record yet): its creation's handler reconciles it, and a second reconcile cost every
    creation its reads again."""
    rt = runtime(memo)
    namespace = namespaced(namespace)
    with _ended_at_exit(memo, namespace, name, uid):
        if "observedGeneration" not in status and handled(body):
            await _until_stopped(stopped, _reconcile_or_say(rt, namespace, name, logger, "at its next change or event"))
        while not stopped:
            await _until_stopped(stopped, rt.crd.changed_for((namespace, name)), rt.autoscalers.changed_for((namespace, name)))
            if not stopped:
                await _reconcile_or_say(rt, namespace, name, logger, "at its next change or event",
                                        crd_changed(rt, namespace, name))


async def _until_stopped(stopped: kopf.DaemonStopped, *work: Awaitable[Any]) -> None:
    """Await the first of ``work`` to end, or cancel them all once the daemon's flag is set: kopf stops a daemon by its
    flag, else cancels it with a WARNING, so a daemon exits at once on the flag."""
    tasks, stop = [asyncio.ensure_future(w) for w in work], asyncio.ensure_future(stopped.wait())
    try:
        done, _ = await asyncio.wait([*tasks, stop], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in [*tasks, stop]:
            task.cancel()
    for task in done - {stop}:
        task.result()


def _autoscaled(spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, **_: Any) -> bool:
    """``spec.autoscaling`` is set (``{}`` is autoscaling with every default) and the operator takes the spec. While
    it refuses it (:func:`conditions.refused`: InvalidSpec, SpecTooLarge, PolicyViolation) nothing it decides is
    applied, and its looks (the pods listed, each asked for its sessions, every ``autoscale_seconds``) were API load for
    nothing: kopf stops the daemon at the status that says so, and starts it again at the event of a spec it may take
    (a new generation, or the status written once it is taken)."""
    return spec.get("autoscaling") is not None and not conditions.refused(dict(status), meta.get("generation"))


@kopf.daemon(*STT, when=_autoscaled, cancellation_backoff=HANDLER_GRACE_SECONDS, cancellation_timeout=1)
async def autoscale(stopped: kopf.DaemonStopped, name: str, namespace: str | None, uid: str | None, body: kopf.Body,
                    memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """Replicas from the pods' sessions, a look every ``autoscale_seconds`` (the filter stops this
    daemon when ``spec.autoscaling`` goes, ``spec.replicas`` ruling again, and while the spec is refused)."""
    scaler = autoscaler(memo)
    namespace = namespaced(namespace)
    wake = scaler.wake(namespace, name)
    with _ended_at_exit(memo, namespace, name, uid):
        try:
            while not stopped:
                wake.clear()
                try:
                    await scaler.look(namespace, name, body)
                except UNANSWERED as exc:
                    logger.warning("autoscaling %s/%s: %s; again in %g s", namespace, name, exc, runtime(memo).config.autoscale_seconds)
                with contextlib.suppress(TimeoutError):  # the next look, or kopf's flag: the daemon ends at once
                    await _until_stopped(stopped, asyncio.wait_for(wake.wait(), runtime(memo).config.autoscale_seconds))
        finally:
            scaler.forget(namespace, name)


#: The key, in an object's own memo (kopf keeps one per object, from its first event to its deletion), saying that an
#: event or a listing of it was handled (:func:`listed_again`).
SEEN = f"{api.GROUP}/seen"


def listed_again(type: str | None, memo: kopf.Memo) -> bool | None:
    """Whether kopf passes an object from a listing it made again (``type`` None, though its protocol says str: kopf
    lists again whenever a watch cannot go on from the last version it saw, 410 Gone or a list that failed, and passes
    each object of that listing as of its first); None for an object's first listing (the operator's start, or one
    that appeared while the watch was away), which every handler leaves: each SpeechToText is resumed or created then
    anyway. It marks the object seen (:data:`SEEN`, in its own memo): one handler per kind calls it."""
    seen = memo.get(SEEN)
    memo[SEEN] = True
    if type is not None:
        return False
    return True if seen else None


@kopf.on.event(*STT)
async def demand_seen(name: str, namespace: str | None, status: kopf.Status, memo: kopf.Memo, **_: Any) -> None:
    """The gateway asks for a locale (``status.demand``): its autoscaler looks now, not at its next time."""
    autoscaler(memo).notice(namespaced(namespace), name, dict(status))


@kopf.on.event(*STT)
async def status_changed(type: str, name: str, namespace: str | None, status: kopf.Status, body: kopf.Body,
                         memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """A status someone else wrote over the operator's (conditions cleared by hand, a Degraded made False), or removed
    (``kubectl patch --subresource=status`` with ``status: null``), is written again at once: left, it would stop the
    re-checks of a Degraded SpeechToText (their filter reads the status), which nothing else would then look at again,
    and tell the gateway and ``kubectl`` what the operator did not see. A status without ``observedGeneration`` after
    the operator's first write is also what the late events of a creation bring: those carry no record of a handled
    spec yet (:func:`handled`; kopf writes it once the creation's handler is done) and are let be; with the record, one
    read of the live object tells. A listing kopf made again (:func:`listed_again`) is looked at as an event: a status
    written over while the watch was away is written again then (no request when it is the operator's); not the first
    listing, at the operator's start (nothing reported yet, and each SpeechToText is resumed then). Once that listing
    is over, its children are looked for (:meth:`~speech_operator.reconcile.Runtime.relisted`): one deleted while the
    watches of its kind were away too, the last of its kind in its namespace, is in no listing of theirs."""
    rt = runtime(memo)
    namespace = namespaced(namespace)
    again = listed_again(type, memo)
    if again is None or type == "DELETED":
        return
    if again:
        rt.relisted(api.KIND, namespace, name)
    if rt.foreign(namespace, name, dict(status)):
        logger.info("its status was written by someone else: written again")
    elif (rt.unsure(namespace, name, dict(status)) and handled(body)
          and await _status_removed(rt, namespace, name, logger)):
        logger.info("its status was removed by someone else: written again")
    else:
        return
    await _reconcile_or_say(rt, namespace, name, logger, "at its next change or event")


async def _status_removed(rt: Runtime, namespace: str, name: str, logger: kopf.Logger) -> bool:
    """Whether the live SpeechToText has no status of the operator's (no ``observedGeneration``) though it wrote one. A
    read that fails leaves a removed status unwritten: counted as a status refresh's failure (``scope="status"``)."""
    try:
        with metrics.counted(metrics.STATUS):
            live = await rt.kube.get(stt_path(namespace, name))
    except UNANSWERED as exc:
        logger.warning("reading %s/%s: %s: %s; its status is looked at again at its next change or event", namespace,
                       name, type(exc).__name__, exc)
        return False
    return (live is not None and not live["metadata"].get("deletionTimestamp")
            and rt.unsure(namespace, name, live.get("status") or {}))


@kopf.on.event("apps", "v1", "deployments", when=_is_child)  # kopf watches them all and filters here, as with labels=
@kopf.on.event("", "v1", "services", when=_is_child)
@kopf.on.event("policy", "v1", "poddisruptionbudgets", when=_is_child)
async def child_changed(type: str, body: kopf.Body, namespace: str | None, resource: kopf.Resource, memo: kopf.Memo,
                        logger: kopf.Logger, **_: Any) -> None:
    """A change to an owned child that may change what the operator decides or puts back (an edit, a delete) reconciles
    its owner; one of its Deployment's replicas under a foreign autoscaler or of its status (new ready replicas) makes
    the owner's status again, from a read of the Deployment, several such changes at once one refresh or two; one of
    nothing the operator decides or reports (its version, its managedFields, someone else's fields) nothing
    (:func:`speech_operator.reconcile.follow`), decided once the owner's reconcile under way, if any, is over: the
    events of the children a creation's reconcile writes come while it runs, and decided then, before it kept what it
    decided, each was a whole reconcile again.

    Not the initial listing (``type`` None, at operator start): every owner is resumed
    then anyway (``on.resume``), and reconciling it once per child as well tripled the
    reads of a restart (bench/notes.md, Operator). kopf lists again whenever a watch cannot go on from the last version
    it saw (410 Gone: that version is older than the API server keeps; a list that failed) and passes each object of
    that listing as of the first, ``type`` None: one it had passed before (:data:`SEEN`, in the child's own memo) is
    followed as an event's (its body the current object: an edit made while the watch was away is put back, at no
    request more when there is none), for an owner whose last reconcile kept what it decided
    (:class:`~speech_operator.reconcile.Observed`, :class:`~speech_operator.reconcile.Amiss`; any other is reconciled by
    its own events). A child deleted meanwhile is in no listing: its owner is reconciled once the listing is over
    (:meth:`~speech_operator.reconcile.Runtime.relisted`; of every namespace with ``--all-namespaces``, as kopf's
    watch; an object of the kind that is no child says that listing came too, :func:`_is_child`). Nor an object whose owner label names no
    possible SpeechToText (one made by hand with the operator's labels, its value empty): one line.

    Nor, once the operator is stopping (:func:`speech_operator.kopf_exit.stopping`), an event kopf still had queued,
    or one that waited for its owner's reconcile under way (which finishes): a DEBUG line. Each was a whole reconcile
    in the pod's grace, for a SpeechToText the next replica's start reconciles anyway (kopf resumes each one). A
    SpeechToText's own events are still handled then: its deletion's children deleted and its finalizer released now,
    not left for a replica that may not come (the operator scaled to zero), its namespace's deletion waiting on it.
    """
    again = listed_again(type, memo)
    if again is None:  # its first listing: at the operator's start, its owner is resumed anyway
        return
    owner = owner_of(body) or ""
    if not api.is_name(owner):
        logger.info("ignored: it names no possible SpeechToText (%r)", owner)
        return
    rt, namespace = runtime(memo), namespaced(namespace)
    if again:
        rt.relisted(KINDS[resource.plural], namespace, owner)
    async with rt.lock(namespace, owner):  # after a reconcile under way: the events of its own writes follow what it kept
        if kopf_exit.stopping():  # an event queued at the stop: the next start reconciles its owner (kopf resumes each)
            logger.debug("left: the operator is stopping")
            return
        if again and (namespace, owner) not in rt.observed and (namespace, owner) not in rt.amiss:
            return
        then = follow(rt, namespace, owner, KINDS[resource.plural], None if type == "DELETED" else dict(body))
    if then is Follow.STATUS:
        rt.refresh(namespace, owner)
    elif then is Follow.RECONCILE:
        await _reconcile_or_say(rt, namespace, owner, logger, "at its next change or event")
