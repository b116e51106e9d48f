"""kopf peering for two or more operator replicas, and a WARNING whenever it pauses the watching.

Peering is opt-in (``--peering NAME``): with it, kopf pauses every watch until it sees the peering
object of that name (a ``ClusterKopfPeering`` for ``--all-namespaces``, else a ``KopfPeering`` in
each watched namespace), and whenever another live replica ranks above this one. kopf says nothing
at INFO about the first and only INFO about the second, so an operator that does nothing looks
healthy. :func:`check` looks for the peering CRD and objects at start and logs a WARNING naming
what is missing and how to fix it; :class:`PauseExplainer` turns kopf's own pause messages into
WARNINGs that say why and what to do.

kopf pauses *every* replica when two of the same priority meet, so each replica ranks itself
with a random priority (:func:`own_priority`): the highest one is active, the others stand by
and take over once its keep-alive lapses (``lifetime``, 60 s).
"""

from __future__ import annotations

import datetime
import logging
import random
import re
from typing import Any

from speech_operator.kube import Kube, path

logger = logging.getLogger(__name__)

GROUP_VERSION = "kopf.dev/v1"
CRD_HINT = "kubectl apply -f crds/kopf-peering.yaml (or install the chart with peering.enabled=true)"
SOLO_HINT = "or run a single replica without --peering"


def own_priority() -> int:
    """A random rank, so that exactly one of several replicas is active (kopf pauses equals)."""
    return random.randint(1, 2**30)


def _is_pattern(namespace: str) -> bool:
    return bool(re.search(r"[*?\[\]!,]", namespace))


def _ahead(status: dict[str, Any] | None, priority: int, now: datetime.datetime) -> tuple[list[str], list[str]]:
    """The live peers in a peering object's status that rank above ``priority``, and those equal."""
    above, equal = [], []
    for identity, peer in (status or {}).items():
        try:
            seen = datetime.datetime.fromisoformat(str(peer["lastseen"]))
            alive = seen + datetime.timedelta(seconds=int(peer.get("lifetime", 60))) > now
            rank = int(peer.get("priority", 0))
        except (KeyError, TypeError, ValueError):
            continue
        if alive and rank > priority:
            above.append(identity)
        elif alive and rank == priority:
            equal.append(identity)
    return above, equal


async def check(kube: Kube, name: str, namespaces: list[str], clusterwide: bool, priority: int,
                lifetime: int = 60) -> list[str]:
    """WARNINGs (also logged) for each reason kopf will keep the watching paused from the start
    (kopf logs none of them: it starts paused and only logs a change)."""
    where: list[tuple[str | None, str]]
    if clusterwide:
        kind, plural = "ClusterKopfPeering", "clusterkopfpeerings"
        where = [(None, path(GROUP_VERSION, plural, None, name))]
    else:
        kind, plural = "KopfPeering", "kopfpeerings"
        where = [(ns, path(GROUP_VERSION, plural, ns, name)) for ns in namespaces if not _is_pattern(ns)]
    warnings = []
    patterns = [ns for ns in namespaces if _is_pattern(ns)] if not clusterwide else []
    if patterns:
        warnings.append(f"peering {name!r}: every namespace matching {', '.join(patterns)} needs a KopfPeering "
                        f"named {name!r}, or kopf pauses the watching there")
    found = {ns: await kube.get(url) for ns, url in where}
    missing = [ns for ns, obj in found.items() if obj is None]
    now = datetime.datetime.now(datetime.UTC)
    for ns, obj in found.items():
        above, equal = _ahead((obj or {}).get("status"), priority, now)
        scope = f"in namespace {ns!r}" if ns else "cluster-wide"
        if above:
            warnings.append(f"watching is paused {scope}: {', '.join(above)} under peering {name!r} rank above "
                            f"this replica (priority {priority}) and are active; this one takes over within "
                            f"{lifetime} s of their last keep-alive. If no other operator should run, stop it, "
                            f"{SOLO_HINT}")
        elif equal:
            warnings.append(f"watching is paused {scope}: {', '.join(equal)} under peering {name!r} has the same "
                            f"priority ({priority}), and kopf pauses all of them; give each a different "
                            f"--priority (the default is random), {SOLO_HINT}")
    # Are kopf's CRDs served? A list of that kind where one is missing says (404 if not): in a namespace, not of the
    # whole cluster, which a Role (the chart's namespaced mode) does not grant: that was a 403 and a crash at start.
    if missing and await kube.get(path(GROUP_VERSION, plural, missing[0])) is None:
        warnings.append(f"watching is paused: --peering {name} needs kopf's peering CRDs, which this cluster "
                        f"does not serve: {CRD_HINT}, {SOLO_HINT}")
    else:
        for ns in missing:
            scope = f"in namespace {ns!r}" if ns else "cluster-wide"
            meta = f"name: {name}" + (f", namespace: {ns}" if ns else "")
            warnings.append(f"watching is paused {scope}: --peering {name} needs the {kind} {name!r} "
                            f"(kubectl apply -f - <<< '{{apiVersion: {GROUP_VERSION}, kind: {kind}, "
                            f"metadata: {{{meta}}}}}'), {SOLO_HINT}")
    for warning in warnings:
        logger.warning(warning)
    return warnings


class PauseExplainer(logging.Filter):
    """Rewrites kopf's pause messages as WARNINGs that say why the watching stopped and what to do, and
    follows them: :attr:`active` is whether this replica is the one at work (kopf exposes no such state).

    kopf starts a peering replica paused and logs "Resuming operations" when it finds no live peer
    ranking at or above it, a "Pausing" message when one appears. (With several namespaces, each with its
    KopfPeering, the replicas meet in each with the same ranks, so the messages agree.)
    """

    def __init__(self, name: str, lifetime: int) -> None:
        super().__init__()
        self.peering, self.lifetime = name, lifetime
        self.active = False
        #: How many times watching resumed (kopf lists the SpeechToTexts again each time).
        self.resumed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("Resuming operations"):
            self.active = True
            self.resumed += 1
        if message.startswith("Pausing"):
            self.active = False
        if message.startswith("Pausing operations in favour of"):
            advice = (f"watching is paused: another replica under peering {self.peering!r} ranks above this one and "
                      f"is active; this one takes over within {self.lifetime} s of its last keep-alive. If no "
                      f"other operator should run, stop it, {SOLO_HINT}. ({message})")
        elif message.startswith("Pausing all operators"):
            advice = (f"watching is paused: operators of the same priority met under peering {self.peering!r} and "
                      f"all of them paused; give each a different --priority, {SOLO_HINT}. ({message})")
        else:
            return True
        record.msg, record.args = advice, ()
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True

    def install(self) -> None:
        logging.getLogger("kopf._core.engines.peering").addFilter(self)
