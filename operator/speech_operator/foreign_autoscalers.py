"""HorizontalPodAutoscalers pointed at a SpeechToText's Deployment instead of at the SpeechToText, KEDA's
ScaledObjects among them (KEDA scales through an HPA of its own, ``keda-hpa-NAME``): found, and said once.

Such an HPA and the operator would both set the Deployment's replicas. While one exists the operator leaves them to it
(:func:`speech_operator.reconcile.reconcile`), and does not put spec.replicas back: fighting would make both flap, pods
made at each of the HPA's syncs and removed at once, their model loads wasted and their sessions cut, while a
platform team that pointed an HPA at the Deployment wants its pods to stay while it learns why. The status says the
truth of it: Degraded, reason :data:`speech_operator.conditions.FOREIGN_AUTOSCALER`, naming the HPA and the fix
(:func:`message`), and ``status.foreignAutoscalers`` names it (:func:`autoscaler`; the gateway reads it: a request
for a locale it holds at zero pods is refused at once, :mod:`speech_operator.gateway_wake`); ``status.desiredReplicas``
is the HPA's choice, and Ready counts against it. One Warning event and one WARNING line when it begins (Degraded's
transition, or its own while another reason holds Degraded), one Recovered event when it ends: then spec.replicas
is applied again, or spec.autoscaling starts from the replicas the HPA left, not from spec.replicas
(:func:`resumed`). Meanwhile spec.autoscaling decides nothing: no look at the pods, no ScaledUp or ScaledDown event,
no ``status.autoscaling`` (:mod:`speech_operator.autoscaler`).

Per namespace where a SpeechToText is reconciled, one list then a watch of its HPAs
(:func:`speech_operator.kube.list_and_watch`); a reconcile waits for the first list, so that a restart does not put
spec.replicas over an HPA's before it is known. Each change of who scales a SpeechToText's Deployment wakes one
reconcile of it (:meth:`ForeignAutoscalers.changed_for`). Where the operator may not list HPAs (HTTP 403: a Role from
before this check) or the API server serves no autoscaling/v2 (404), one INFO line per namespace says the check is not
done, and the operator works as before (it puts spec.replicas back, with a ScaledByHand warning at each change).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from speech_operator import api, builders
from speech_operator.kube import Kube, list_and_watch, path

log = logging.getLogger(__name__)

#: How long a reconcile waits for its namespace's first list of HPAs (an API server away): then it goes on without.
FIRST_LIST_SECONDS = 30.0


def target(hpa: dict[str, Any]) -> str | None:
    """The name of the Deployment an HPA scales (``scaleTargetRef`` kind Deployment in group apps), else None."""
    ref = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
    if ref.get("kind") == "Deployment" and str(ref.get("apiVersion") or "").split("/")[0] == "apps":
        return str(ref.get("name") or "") or None
    return None


def autoscaler(hpa: dict[str, Any]) -> api.ForeignAutoscaler:
    """Who an HPA is: KEDA's ScaledObject when one controls it (its fix is made there), else the HPA."""
    meta = hpa.get("metadata") or {}
    owner: dict[str, Any] = next((r for r in meta.get("ownerReferences") or [] if r.get("controller")), {})
    if owner.get("kind") == "ScaledObject":
        return api.ForeignAutoscaler(kind="ScaledObject", name=str(owner.get("name")),
                                     horizontalPodAutoscaler=str(meta.get("name")))
    return api.ForeignAutoscaler(kind="HorizontalPodAutoscaler", name=str(meta.get("name")))


def who(scaler: api.ForeignAutoscaler) -> str:
    """A foreign autoscaler in words (:func:`autoscaler`)."""
    if scaler.kind == "ScaledObject":
        return f"KEDA ScaledObject {scaler.name} (its HorizontalPodAutoscaler {scaler.horizontalPodAutoscaler})"
    return f"{scaler.kind} {scaler.name}"


def message(scalers: tuple[api.ForeignAutoscaler, ...], stt: api.SpeechToText) -> str:
    """What the SpeechToText's status says while ``scalers`` scale its Deployment, and the fix."""
    words = [who(s) for s in scalers]
    them, verb, it, its = (words[0], "scales", "it", "its") if len(words) == 1 else (", ".join(words), "scale", "them", "their")
    ref = f"apiVersion: {api.API_VERSION}, kind: {api.KIND}, name: {stt.name}"
    if stt.spec.autoscaling is not None:
        unapplied = "spec.autoscaling's choice is not applied"
        fix = f"delete {it} (spec.autoscaling scales on sessions), or point {its} scaleTargetRef at the SpeechToText ({ref}) and remove spec.autoscaling"
    else:
        unapplied = f"spec.replicas ({stt.spec.replicas}) is not applied"
        fix = f"point {its} scaleTargetRef at the SpeechToText ({ref}), or delete {it} and set spec.autoscaling"
    return (f"{them} {verb} Deployment {stt.name}, not the SpeechToText: the operator leaves the Deployment's replicas "
            f"to {it} and {unapplied} meanwhile; {fix}")


def gone(scalers: list[dict[str, Any]], name: str) -> str:
    """That the foreign autoscalers of a raw ``status.foreignAutoscalers`` no longer scale Deployment ``name``, in words
    (a status written by someone else may name them oddly: then they are not named)."""
    try:
        words = [who(api.ForeignAutoscaler.model_validate(s)) for s in scalers]
    except ValueError:
        return f"what scaled Deployment {name} instead of the SpeechToText no longer does"
    return f"{', '.join(words)} no longer {'scales' if len(words) == 1 else 'scale'} Deployment {name}"


def resumes(stt: api.SpeechToText) -> bool:
    """Whether the foreign autoscalers the status names held the Deployment of a SpeechToText with spec.autoscaling
    until now: its autoscaler has not decided since (:func:`resumed`)."""
    return (stt.spec.autoscaling is not None and stt.status is not None and bool(stt.status.foreignAutoscalers)
            and stt.status.autoscaling is None)


def resumed(stt: api.SpeechToText, left: int | None) -> api.SpeechToTextStatus:
    """The status of a SpeechToText whose autoscaler :func:`resumes`, with where it starts: the replicas the foreign
    autoscalers left the Deployment at (``left``; ``status.desiredReplicas``, their last choice the operator saw, when
    it is not known), within its bounds. Not spec.replicas: pods would be removed (or added) at once, and the
    autoscaler's next look would put back what the sessions need, one period later."""
    assert stt.spec.autoscaling is not None and stt.status is not None
    replicas = builders.bounded(stt.spec.autoscaling, stt.status.desiredReplicas if left is None else left)
    return stt.status.model_copy(update={"autoscaling": api.AutoscalingStatus(replicas=replicas)})


class ForeignAutoscalers:
    """The HPAs of each namespace the operator reconciles in, by the Deployment they scale; shared by the watches and
    the reconciles as :class:`speech_operator.crd_watch.InstalledCRD` is."""

    def __init__(self) -> None:
        #: namespace -> HPA name -> (the Deployment it scales, who it is)
        self._found: dict[str, dict[str, tuple[str, api.ForeignAutoscaler]]] = {}
        self._listed: dict[str, asyncio.Event] = {}
        self._watches: dict[str, asyncio.Task[None]] = {}
        self._used: dict[tuple[str, str], tuple[api.ForeignAutoscaler, ...]] = {}
        self._next = asyncio.Event()

    def _of(self, key: tuple[str, str]) -> tuple[api.ForeignAutoscaler, ...]:
        namespace, name = key
        return tuple(sorted((s for deployment, s in (self._found.get(namespace) or {}).values() if deployment == name),
                            key=who))

    async def listed(self, kube: Kube, namespace: str) -> None:
        """Return once the namespace's HPAs are listed (its watch starts with the first call), or after
        :data:`FIRST_LIST_SECONDS` of waiting for that (an API server away: its failures are said by the watch)."""
        if namespace not in self._watches:
            self._listed[namespace] = asyncio.Event()
            self._watches[namespace] = asyncio.create_task(self._follow(kube, namespace), name=f"HPA watch {namespace}")
        if not self._listed[namespace].is_set():
            try:
                await asyncio.wait_for(self._listed[namespace].wait(), FIRST_LIST_SECONDS)
            except TimeoutError:  # reconciles and looks go on without waiting again
                self._listed[namespace].set()

    async def scaling(self, kube: Kube, namespace: str, name: str) -> tuple[api.ForeignAutoscaler, ...]:
        """Who scales the Deployment ``name`` besides the operator (sorted by :func:`who`; () when none or unknown), once
        the namespace's HPAs are listed (:meth:`listed`); remembered as the reconcile's."""
        await self.listed(kube, namespace)
        found = self._used[(namespace, name)] = self._of((namespace, name))
        return found

    def known(self, namespace: str, name: str) -> tuple[api.ForeignAutoscaler, ...]:
        """Who scales the Deployment ``name`` besides the operator, as far as known now (no wait for a first list)."""
        return self._of((namespace, name))

    async def changed_for(self, key: tuple[str, str]) -> None:
        """Return once who scales the SpeechToText ``key``'s (namespace, name) Deployment changed since its last
        reconcile (or since now, when its namespace's HPAs are listed; else since its first reconcile, which waits
        for that list: what the list brings is no change to that reconcile, and an HPA there before the SpeechToText
        was reconciled again for it at each creation and restart)."""
        listed = self._listed.get(key[0])
        if listed is not None and listed.is_set():
            self._used.setdefault(key, self._of(key))
        while key not in self._used or self._of(key) == self._used[key]:
            await self._next.wait()

    def forget(self, key: tuple[str, str]) -> None:
        self._used.pop(key, None)

    def _set(self, namespace: str, found: dict[str, tuple[str, api.ForeignAutoscaler]]) -> None:
        if found != self._found.get(namespace):
            self._found[namespace] = found
            self._next.set()
            self._next = asyncio.Event()

    async def _follow(self, kube: Kube, namespace: str) -> None:
        def listed(items: list[dict[str, Any]]) -> None:
            self._set(namespace, {str(i["metadata"]["name"]): (t, autoscaler(i)) for i in items if (t := target(i))})
            self._listed[namespace].set()

        def changed(kind: str, hpa: dict[str, Any]) -> None:
            found = dict(self._found.get(namespace) or {})
            found.pop(str((hpa.get("metadata") or {}).get("name")), None)
            if kind != "DELETED" and (t := target(hpa)):
                found[str(hpa["metadata"]["name"])] = (t, autoscaler(hpa))
            self._set(namespace, found)

        refused = await list_and_watch(kube, path("autoscaling/v2", "horizontalpodautoscalers", namespace), {},
                                       f"HorizontalPodAutoscalers in {namespace}", listed, changed)
        self._listed[namespace].set()
        why = ("this operator may not list horizontalpodautoscalers there (HTTP 403: its RBAC is from before this "
               "check; apply the chart's or deploy/'s RBAC again)" if refused.status == 403
               else f"the API server serves no autoscaling/v2 (HTTP {refused.status})")
        log.info("HorizontalPodAutoscalers in namespace %s pointed at a SpeechToText's Deployment go unnoticed: %s",
                 namespace, why)

    async def close(self) -> None:
        """Stop the watches (the operator's cleanup)."""
        tasks, self._watches = list(self._watches.values()), {}
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
