"""Follow the installed SpeechToText CRD: what :mod:`speech_operator.crd_check` finds in it, at start
and whenever it changes, for the log and for every SpeechToText's status.

One list, then a watch, both filtered to the CRD's name (the verbs the operator has for kopf's own
discovery: list and watch); again after each watch ends. Each new state is one log line: a WARNING
while the installed CRD lacks what this operator writes or validates otherwise (what is dropped, and
the fix), INFO when it matches or is newer. :class:`InstalledCRD` keeps the problem every
SpeechToText shows in its status (:func:`speech_operator.conditions.observe`) and wakes one reconcile
of each when it changes, so their conditions follow the CRD both ways.

Where the operator may not read CRDs (HTTP 403: a namespace-scoped install, bound by Roles only) one
INFO line says the check is not done and why, and the watch ends; nothing else changes. This is not
kopf's own discovery of CRDs, which works as before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from speech_operator import crd, crd_check
from speech_operator.kube import WATCH_SECONDS, Kube, KubeError, list_and_watch, path

log = logging.getLogger(__name__)

URL = path("apiextensions.k8s.io/v1", "customresourcedefinitions")
NOT_DONE = "the check of the installed SpeechToText CRD against this operator's is not done"


class InstalledCRD:
    """What the operator knows of the installed CRD, shared by its watch and the reconciles.

    ``problem`` is what every SpeechToText's status says about it (None: nothing; also while it is
    unknown); ``generation`` counts its changes. Each reconcile takes it with :meth:`problem_for`,
    which remembers the generation each SpeechToText was last reconciled with, so :meth:`changed_for`
    wakes one reconcile of each per change and none when nothing changed (a restart reads no more).
    """

    def __init__(self) -> None:
        self.problem: str | None = None
        self.generation = 0
        self._generated = crd.custom_resource_definition()
        self._said: object = None
        self._used: dict[tuple[str, str], int] = {}
        self._next = asyncio.Event()

    def _say(self, state: object, warn: bool, line: str) -> None:
        if state != self._said:
            self._said = state
            log.log(logging.WARNING if warn else logging.INFO, "%s", line)

    def see(self, installed: Mapping[str, Any] | None) -> None:
        """The CRD as now installed (None: there is none): one log line when its state is new, and the problem."""
        if installed is None:
            self._say("absent", False, f"{NOT_DONE} yet: there is no CustomResourceDefinition {crd_check.NAME} "
                                       f"(apply crds/); it is checked once it appears")
            self._set(None)
            return
        findings = crd_check.compare(installed, self._generated)
        self._say(findings, *crd_check.report(findings))
        self._set(crd_check.problem(findings))

    def unreadable(self, exc: KubeError) -> None:
        """CRDs cannot be read (403, 404): one line, and nothing shown on the SpeechToTexts."""
        why = ("this operator may not read CustomResourceDefinitions (HTTP 403, as in a namespace-scoped install "
               "bound by Roles only)" if exc.status == 403 else f"the API server serves no CustomResourceDefinitions "
               f"(HTTP {exc.status})")
        self._say("unreadable", False, f"{NOT_DONE}: {why}, so an installed CRD older than this operator goes "
                                       f"unnoticed: {crd_check.FIX}")
        self._set(None)

    def _set(self, problem: str | None) -> None:
        if problem != self.problem:
            self.problem = problem
            self.generation += 1
            self._next.set()
            self._next = asyncio.Event()

    def problem_for(self, key: tuple[str, str]) -> str | None:
        """The problem a reconcile of the SpeechToText ``key`` (namespace, name) shows, remembered as shown: taken with
        its read alone (:func:`speech_operator.reconcile.read_noted`), a look that shows nothing reads :attr:`problem`."""
        self._used[key] = self.generation
        return self.problem

    async def changed_for(self, key: tuple[str, str]) -> None:
        """Return once the problem changed since the SpeechToText ``key`` was last reconciled (or since now)."""
        self._used.setdefault(key, self.generation)
        while self.generation <= self._used.get(key, self.generation):
            await self._next.wait()

    def forget(self, key: tuple[str, str]) -> None:
        self._used.pop(key, None)


async def follow(kube: Kube, state: InstalledCRD, seconds: int = WATCH_SECONDS) -> None:
    """List and watch the CRD into ``state`` until cancelled (:func:`speech_operator.kube.list_and_watch`: a WARNING
    and a retry for each failure); return at once where CRDs may not be read."""

    def listed(items: list[dict[str, Any]]) -> None:
        state.see(next((item for item in items if (item.get("metadata") or {}).get("name") == crd_check.NAME), None))

    def changed(kind: str, obj: dict[str, Any]) -> None:
        if (obj.get("metadata") or {}).get("name") == crd_check.NAME:
            state.see(None if kind == "DELETED" else obj)

    state.unreadable(await list_and_watch(kube, URL, {"fieldSelector": f"metadata.name={crd_check.NAME}"},
                                         "the SpeechToText CRD", listed, changed, seconds))
