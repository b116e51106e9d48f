"""Compare the SpeechToText CRD installed in the cluster with the one this operator generates.

Helm never upgrades a chart's ``crds/``: a newer operator can run against an older CRD, and the API
server then prunes every field the old schema does not know (spec fields a lenient client sets,
status fields the operator writes) and enforces none of the rules added since, without a word.
The operator is the one part that knows both schemas (:mod:`speech_operator.crd` generates its
own): :func:`compare` says what the installed one lacks, has more, or checks otherwise, as paths
(``spec.model.caBundle``), not as a diff of YAML; the messages say what to do. Pure: the watch that
feeds it is :mod:`speech_operator.crd_watch`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from speech_operator import __version__, api

NAME = f"{api.PLURAL}.{api.GROUP}"
#: How to bring the installed CRD up to this operator's (the chart README, "CRDs: install and upgrade").
#: --force-conflicts: a CRD that Helm installed has its fields (``.spec.versions``) owned by the field manager "helm",
#: and a server-side apply by another manager that changes them fails on that conflict without it.
FIX = ("apply the CRDs of this operator's version: kubectl apply --server-side --force-conflicts -f crds/ (the crds/ "
       "folder of its chart; chart README, CRDs: install and upgrade)")
#: Schema keywords that say how the schema nests (compared by walking them) or only document it.
_NOT_RULES = {"properties", "items", "additionalProperties", "description"}
#: At most this many paths of one kind in a message; the rest are counted.
SHOWN = 8


@dataclass(frozen=True)
class Findings:
    """What the installed CRD lacks (``missing``: versions, fields and subresources this operator's has,
    which the API server drops or refuses), has that this operator's lacks (``extra``: a newer CRD), and
    validates otherwise where both have a field (``differs``: rules, defaults, printer columns).
    Empty: the installed CRD is this operator's."""

    missing: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()
    differs: tuple[str, ...] = ()


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _keeps_unknown(node: Mapping[str, Any]) -> bool:
    """Whether the API server keeps fields this schema node does not name (nothing below it is pruned)."""
    return bool(node.get("x-kubernetes-preserve-unknown-fields")) or isinstance(node.get("additionalProperties"), Mapping)


def _schema(mine: Mapping[str, Any], theirs: Mapping[str, Any], where: str,
            missing: list[str], extra: list[str], differs: list[str]) -> None:
    """Walk two schema nodes at the same path; fields only one side has are reported at their top only."""
    rules = sorted(k for k in mine.keys() | theirs.keys() if k not in _NOT_RULES and mine.get(k) != theirs.get(k))
    if rules:
        differs.append(f"{where or api.KIND} ({', '.join(rules)})")
    mine_fields, their_fields = mine.get("properties") or {}, theirs.get("properties") or {}
    for name, sub in mine_fields.items():
        if name in their_fields:
            _schema(sub, their_fields[name], _join(where, name), missing, extra, differs)
        elif not _keeps_unknown(theirs):
            missing.append(_join(where, name))
    extra += [_join(where, name) for name in their_fields if name not in mine_fields and not _keeps_unknown(mine)]
    for key, mark in (("items", "[]"), ("additionalProperties", "{}")):
        if isinstance(mine.get(key), Mapping) and isinstance(theirs.get(key), Mapping):
            _schema(mine[key], theirs[key], where + mark, missing, extra, differs)


def _versions(crd: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {str(v.get("name")): v for v in (crd.get("spec") or {}).get("versions") or [] if isinstance(v, Mapping)}


def compare(installed: Mapping[str, Any], generated: Mapping[str, Any]) -> Findings:
    """What sets the CRD ``installed`` (as the API server returns it) apart from ``generated`` (this operator's)."""
    missing: list[str] = []
    extra: list[str] = []
    differs: list[str] = []
    mine, theirs = _versions(generated), _versions(installed)
    for name, version in mine.items():
        their = theirs.get(name)
        if their is None or (version.get("served") and not their.get("served")):
            missing.append(f"version {name}" + ("" if their is None else " (not served)"))
            continue
        if bool(version.get("storage")) != bool(their.get("storage")):
            differs.append(f"version {name} is {'not ' if not their.get('storage') else ''}the storage version")
        prefix = f"{name} " if len(mine) > 1 else ""
        _schema((version.get("schema") or {}).get("openAPIV3Schema") or {},
                (their.get("schema") or {}).get("openAPIV3Schema") or {}, "", missing, extra, differs)
        mine_sub, their_sub = version.get("subresources") or {}, their.get("subresources") or {}
        missing += [f"{prefix}subresource {s}" for s in mine_sub if s not in their_sub]
        extra += [f"{prefix}subresource {s}" for s in their_sub if s not in mine_sub]
        differs += [f"{prefix}subresource {s}" for s in mine_sub if s in their_sub and mine_sub[s] != their_sub[s]]
        if (version.get("additionalPrinterColumns") or []) != (their.get("additionalPrinterColumns") or []):
            differs.append(f"{prefix}printer columns")
    extra += [f"version {name}" for name in theirs if name not in mine]
    names, their_names = (generated.get("spec") or {}).get("names") or {}, (installed.get("spec") or {}).get("names") or {}
    differs += [f"names.{k}" for k in names if names[k] != their_names.get(k)]
    return Findings(tuple(missing), tuple(extra), tuple(differs))


def _listed(paths: tuple[str, ...]) -> str:
    shown = ", ".join(paths[:SHOWN])
    return shown + (f" and {len(paths) - SHOWN} more" if len(paths) > SHOWN else "")


def problem(findings: Findings) -> str | None:
    """What every SpeechToText's status says while the installed CRD lacks what this operator writes
    or reads (None when it lacks nothing): the fields the API server drops, and the fix."""
    if not findings.missing:
        return None
    return (f"the installed CustomResourceDefinition {NAME} is older than this operator ({__version__}): it lacks "
            f"{_listed(findings.missing)}, which the API server drops from every SpeechToText written to it; {FIX}")


def report(findings: Findings) -> tuple[bool, str]:
    """The one log line for a CRD state: ``(warn, text)``; a warning when the installed CRD lacks something
    or checks otherwise (what to do), not when it is newer (an older operator than the CRD loses nothing)."""
    differs = f"; it also validates otherwise: {_listed(findings.differs)}" if findings.differs else ""
    if findings.missing:
        return True, f"{problem(findings)}{differs}"
    if findings.extra:
        return False, (f"the installed CustomResourceDefinition {NAME} is newer than this operator ({__version__}): it has "
                       f"{_listed(findings.extra)}, which this operator does not know; nothing it writes is dropped{differs}")
    if findings.differs:
        return True, (f"the installed CustomResourceDefinition {NAME} differs from this operator's ({__version__}): it "
                      f"validates otherwise: {_listed(findings.differs)}; {FIX}")
    return False, f"the installed CustomResourceDefinition {NAME} matches this operator's ({__version__})"
