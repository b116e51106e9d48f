"""Read the world, call the builders, apply, report: the one reconcile loop behind every handler."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

from speech_operator import api, builders, conditions, policy
from speech_operator.config import OperatorConfig
from speech_operator.kube import Kube, path

#: What a SpeechToText owns: (apiVersion, plural, kind).
CHILD_KINDS = [("apps/v1", "deployments", "Deployment"), ("v1", "services", "Service")]


@dataclass
class Runtime:
    """Per-process state shared by all handlers (kept in kopf's memo)."""

    config: OperatorConfig = field(default_factory=OperatorConfig.from_env)
    kube: Kube = field(default_factory=Kube)
    _locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict)

    def lock(self, namespace: str, name: str) -> asyncio.Lock:
        """Serialises reconciles of one SpeechToText across its own and its children's handlers."""
        return self._locks.setdefault((namespace, name), asyncio.Lock())


def stt_path(namespace: str, name: str, subresource: str | None = None) -> str:
    return path(api.API_VERSION, api.PLURAL, namespace, name, subresource)


def differences(desired: Any, actual: Any, where: str = "") -> list[str]:
    """Paths where ``actual`` does not carry ``desired`` (server-side defaults are ignored)."""
    if isinstance(desired, Mapping):
        if not isinstance(actual, Mapping):
            return [where or "."]
        return [d for k, v in desired.items() for d in differences(v, actual.get(k), f"{where}.{k}")]
    if isinstance(desired, list):
        if not isinstance(actual, list) or len(actual) != len(desired):
            return [where]
        return [d for i, (a, b) in enumerate(zip(desired, actual)) for d in differences(a, b, f"{where}[{i}]")]
    if isinstance(desired, int) and not isinstance(desired, bool) and isinstance(actual, str):
        return [] if str(desired) == actual else [where]  # quantities come back as strings
    return [] if desired == actual else [where]


def _summary(paths: list[str]) -> str:
    tops = list(dict.fromkeys(".".join(p.split(".")[:3]).split("[")[0] for p in paths))
    return ", ".join(tops[:5]) + (" …" if len(tops) > 5 else "")


async def apply(kube: Kube, desired: dict[str, Any], owner: Mapping[str, Any]) -> dict[str, Any]:
    """Create the child, or merge-patch it back to ``desired`` when it drifted; one Event per change."""
    kind, meta = desired["kind"], desired["metadata"]
    plural = {k: p for _, p, k in CHILD_KINDS}[kind]
    collection = path(desired["apiVersion"], plural, meta["namespace"])
    url = path(desired["apiVersion"], plural, meta["namespace"], meta["name"])
    actual = await kube.get(url)
    if actual is None:
        created = await kube.create(collection, desired)
        kopf.info(dict(owner), reason="Created", message=f"Created {kind} {meta['name']}")
        return created
    controllers = [o for o in actual.get("metadata", {}).get("ownerReferences") or [] if o.get("controller")]
    if controllers and controllers[0].get("uid") != meta["ownerReferences"][0]["uid"]:
        message = f"{kind} {meta['name']} exists and is controlled by {controllers[0].get('kind')} {controllers[0].get('name')}"
        kopf.warn(dict(owner), reason="NameConflict", message=message)
        raise kopf.TemporaryError(message, delay=60)
    drift = differences({"metadata": {k: meta[k] for k in ("labels", "ownerReferences", "annotations") if k in meta},
                         "spec": desired["spec"]}, actual)
    if not drift:
        return actual
    patched = await kube.patch(url, desired) or actual
    kopf.info(dict(owner), reason="Updated", message=f"Updated {kind} {meta['name']}: {_summary(drift)}")
    return patched


async def missing_dependencies(kube: Kube, stt: api.SpeechToText) -> list[str]:
    """Human-readable names of the Secrets, keys and PVCs the pods need but that do not exist."""
    missing: list[str] = []
    for ref in builders.secret_refs(stt.spec):
        secret = await kube.get(path("v1", "secrets", stt.namespace, ref.name))
        if secret is None:
            missing.append(f'Secret "{ref.name}"')
        elif ref.key not in (secret.get("data") or {}) and ref.key not in (secret.get("stringData") or {}):
            missing.append(f'key "{ref.key}" in Secret "{ref.name}"')
    for claim in builders.claim_names(stt.spec):
        if await kube.get(path("v1", "persistentvolumeclaims", stt.namespace, claim)) is None:
            missing.append(f'PersistentVolumeClaim "{claim}"')
    return missing


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _report_transitions(body: Mapping[str, Any], before: dict[str, Any] | None, after: api.SpeechToTextStatus) -> None:
    """One Event per condition flip, so ``kubectl describe stt`` tells the story."""
    old = {c.get("type"): c.get("status") for c in (before or {}).get("conditions") or []}
    for c in after.conditions:
        if old.get(c.type) == c.status:
            continue
        if c.type == conditions.DEGRADED and c.status == "True":
            kopf.warn(dict(body), reason=c.reason, message=c.message)
        elif c.type == conditions.DEGRADED and c.type in old:
            kopf.info(dict(body), reason="Recovered", message=c.message)
        elif c.type == conditions.READY and c.status == "True":
            kopf.info(dict(body), reason="Ready", message=c.message)


async def write_status(kube: Kube, body: Mapping[str, Any], status: api.SpeechToTextStatus) -> None:
    """Patch the status subresource when it changed."""
    before = dict(body.get("status") or {})
    after = status.model_dump(mode="json", exclude_none=True)
    if {k: before.get(k) for k in after} == after:
        return
    meta = body["metadata"]
    await kube.patch(stt_path(meta["namespace"], meta["name"], "status"), {"status": after})
    _report_transitions(body, before, status)


async def reconcile(runtime: Runtime, namespace: str, name: str) -> api.SpeechToTextStatus | None:
    """Bring the SpeechToText ``namespace/name`` and its children in line with its spec; report status.

    The object is read afresh under its lock, so concurrent triggers (its own events, its
    children's, the Degraded re-check) never act on a stale copy. Returns ``None`` when it is
    gone or being deleted; raises :class:`kopf.PermanentError` on a spec the API server should
    have refused (e.g. a CRD older than the operator).
    """
    async with runtime.lock(namespace, name):
        body = await runtime.kube.get(stt_path(namespace, name))
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        try:
            stt = api.SpeechToText.model_validate(body)
        except ValueError as exc:
            kopf.warn(body, reason="InvalidSpec", message=str(exc))
            raise kopf.PermanentError(f"invalid spec: {exc}") from exc
        missing = await missing_dependencies(runtime.kube, stt)
        refused = policy.violations(stt.spec, runtime.config)
        deployment = None
        if refused:  # nothing created or changed; the status and an event say why
            deployment = await runtime.kube.get(path("apps/v1", "deployments", namespace, name))
        else:
            for desired in builders.children(stt, runtime.config):
                actual = await apply(runtime.kube, desired, body)
                if desired["kind"] == "Deployment":
                    deployment = actual
        status = conditions.observe(stt, deployment, missing, _now(), refused)
        await write_status(runtime.kube, body, status)
        return status


async def delete_children(runtime: Runtime, body: Mapping[str, Any]) -> None:
    """Delete what the SpeechToText owns (owner references would too; this makes it immediate)."""
    meta = body["metadata"]
    async with runtime.lock(meta["namespace"], meta["name"]):
        for api_version, plural, kind in CHILD_KINDS:
            if await runtime.kube.delete(path(api_version, plural, meta["namespace"], meta["name"])):
                kopf.info(dict(body), reason="Deleted", message=f"Deleted {kind} {meta['name']}")
