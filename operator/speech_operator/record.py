"""kopf's record of the last handled SpeechToText, and the size the API server allows it.

kopf keeps what it last handled of an object (its spec, labels and annotations other than kopf's and kubectl's) as
JSON in the annotation ``speech-operator.io/last-handled-configuration``, to tell at the next event what changed. The
API server refuses a write after which an object's annotations take more than 256 KiB, keys and values together
(apimachinery's TotalAnnotationSizeLimitB): kopf's patch of a record that large is 422 Invalid ("metadata.annotations:
Too long"), which kopf retried without end, an ERROR with a traceback each time, while the status said nothing.

The CRD's bounds keep a spec's record well under that (:mod:`speech_operator.api`). A SpeechToText they let through
whose record would still not fit, with :data:`KOPF_ROOM` left beside it for kopf's progress of a handler (long non-ASCII
values, which the record escapes to six bytes a character; a large affinity; large annotations of one's own; a CRD
older than the operator) gets no record (:class:`Storage`: kopf then
handles each of its events as its creation) and is not applied: :func:`overflow` says why, and the reconcile makes
that its status (Degraded, reason SpecTooLarge), one event and one log line.

The record stays in an annotation, not in ``status`` (kopf's StatusDiffBaseStorage, under the object's own 1.5 MiB):
the status is what the gateway and ``kubectl`` read and the CRD declares field by field, and every SpeechToText made so
far has its record in the annotation. Bounding the spec leaves it where it is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, cast

import kopf

from speech_operator import api

#: The most bytes an object's annotations may take, keys and values together (apimachinery's TotalAnnotationSizeLimitB).
ANNOTATIONS_MAX_BYTES = 256 * 1024
#: The room the record leaves in the annotations for kopf's other writes there while it is in place: its progress of a
#: handler that failed and is tried again (when it started, its retries, the error, which KubeError bounds to some 700
#: characters: 447 bytes for a 503 with a short Status, some 3.5 KiB at most once JSON escapes it) and the dummy it
#: touches the object with to wake that handler. Refused for the size, those writes were an ERROR with a traceback each.
KOPF_ROOM = 4 * 1024
#: The most bytes the annotations may take with the record in them.
RECORDED_MAX_BYTES = ANNOTATIONS_MAX_BYTES - KOPF_ROOM


def annotations_bytes(annotations: Mapping[str, Any]) -> int:
    """The size of ``annotations`` as the API server counts it: the UTF-8 bytes of every key and value."""
    return sum(len(k.encode()) + len(str(v).encode()) for k, v in annotations.items())


class Storage(kopf.AnnotationsDiffBaseStorage):
    """kopf's annotation record, never written where the API server would refuse it (a record from before, of
    another spec, is taken off then: it no longer says what was handled)."""

    def __init__(self) -> None:
        super().__init__(prefix=api.GROUP, key="last-handled-configuration")

    def keys(self, body: kopf.Body) -> list[str]:
        """The record's annotation keys on ``body``."""
        return list(self.make_keys(self.key, body=body))

    def after(self, body: kopf.Body, essence: Any = None, pending: Mapping[str, Any] | None = None) -> tuple[int, int]:
        """The bytes of the record of ``essence`` (``body``'s, by default), and of all of ``body``'s annotations once
        it and the ``pending`` changes of its annotations (None removes one) are written: what kopf's store writes,
        measured on a patch of its own (the record under each of its keys, and kopf's marker ``PREFIX/kopf-managed``
        while ``body`` lacks it, so that the total is the same before kopf's first patch of the object and after)."""
        written = kopf.Patch()
        super().store(body=body, patch=written, essence=self.build(body=body) if essence is None else essence)
        ours = dict(written.metadata.annotations)
        annotations = {**body.metadata.annotations, **(pending or {}), **ours}
        return (len(str(ours[self.keys(body)[0]]).encode()),
                annotations_bytes({k: v for k, v in annotations.items() if v is not None}))

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: Any) -> None:
        pending = dict(patch.get("metadata", {}).get("annotations") or {})
        if self.after(body, essence, pending)[1] <= RECORDED_MAX_BYTES:
            super().store(body=body, patch=patch, essence=essence)
            return
        for key in self.keys(body):
            if key in body.metadata.annotations:
                patch.metadata.annotations[key] = None


#: The one record storage: kopf's (:func:`speech_operator.handlers.configure`) and the reconcile's measure of it.
STORAGE = Storage()


#: kubectl apply's (client-side) copy of the object, among its annotations.
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
#: Parts of an object smaller than this are not named as its largest.
NAMED_MIN_BYTES = 1024


def _largest(essence: Mapping[str, Any]) -> list[str]:
    """The parts of kopf's record ``essence`` (the spec's fields, the object's own labels and annotations: not kubectl
    apply's copy, named on its own, nor kopf's) of at least :data:`NAMED_MIN_BYTES` in JSON, with their bytes, the
    three largest first."""
    meta = essence.get("metadata") or {}
    parts = {f"spec.{k}": v for k, v in (essence.get("spec") or {}).items()}
    parts.update({f"metadata.{k}": meta.get(k) for k in ("annotations", "labels") if meta.get(k)})
    sizes = sorted(((len(json.dumps(v, separators=(",", ":"))), where) for where, v in parts.items()), reverse=True)
    return [f"{where} ({size} bytes)" for size, where in sizes[:3] if size >= NAMED_MIN_BYTES]


def overflow(raw: Mapping[str, Any]) -> str | None:
    """Why kopf's record of the SpeechToText ``raw`` would not fit in its annotations (its largest parts, and kubectl
    apply's copy of it when it holds one), or None when it fits."""
    body = kopf.Body(cast(kopf.RawBody, dict(raw)))
    record, total = STORAGE.after(body)
    if total <= RECORDED_MAX_BYTES:
        return None
    message = (f"the operator's record of the spec it handles (annotation {STORAGE.keys(body)[0]}, {record} "
               f"bytes) would take the object's annotations to {total} bytes, more than the {RECORDED_MAX_BYTES} it "
               f"leaves them (the API server allows {ANNOTATIONS_MAX_BYTES}, and the operator keeps {KOPF_ROOM} for its "
               f"bookkeeping): nothing is created or changed until the spec and the object's own annotations are smaller")
    largest = _largest(STORAGE.build(body=body))
    message += f"; the largest: {', '.join(largest)}" if largest else ""
    copy = body.metadata.annotations.get(LAST_APPLIED)
    if copy is not None:
        message += (f"; kubectl apply keeps a copy of the object in the annotation {LAST_APPLIED} ({len(copy.encode())}"
                    f" bytes), kubectl apply --server-side none")
    return message
