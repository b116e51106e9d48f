"""What a real API server would do with each write to a SpeechToText that the tests' kmock servers served.

kmock stores whatever it is sent. A real API server, with our CRD (crds/speechtotexts.speech-operator.io.yaml):

- PRUNES every field the structural schema does not declare, silently (the write succeeds, the field is gone):
  :func:`pruned`. ``x-kubernetes-preserve-unknown-fields`` keeps what is below its node; ``additionalProperties``
  declares a map's values; ``metadata`` keeps ObjectMeta's fields only (kubernetes-validate's ObjectMeta schema).
- REFUSES (422 Invalid) a write whose result does not validate: types, enums, minimum/maximum, lengths, patterns,
  formats, ``required`` and the ``x-kubernetes-validations`` CEL rules (jsonschema and cel-python:
  :func:`problems`, after the schema's defaults as the API server fills them in).
- Takes only ``.status`` through the status subresource (its PrepareForUpdate copies the old object and sets
  the status: metadata, spec, anything else sent there is ignored) and ignores ``.status`` on the main resource;
  ``/scale`` takes an autoscaling/v1 Scale, whose ``spec.replicas`` lands in ``.spec.replicas``.
- Takes a JSON merge patch, a JSON patch or a server-side apply of a custom resource, not a strategic merge patch
  (415 Unsupported Media Type).

:func:`judge` finds these in every recorded write to speechtotexts (tests/conftest.py calls it beside
tests/rbac.py's judge when a test ends; it reads the :class:`tests.rbac.Sent` records). It sees each request
alone, not the object it changed: a write of the whole object (create, update, a server-side apply, which states
every field its manager owns) is validated whole; a merge patch or a JSON patch by the fields it writes (what
``required`` and CEL rules ask of the fields it does not send is not judged, except inside a list a merge patch
sends: it replaces the list whole). ``null`` in a merge patch removes its field: nothing to prune or validate there.

The test's own writes (``test-client``, kubectl's part) are judged too: a test that sets up what a cluster would
not store tests something no cluster does.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import kubernetes_validate
import yaml
from kubernetes_validate import utils as kv_utils

from .rbac import Sent, attributes

ROOT = Path(__file__).resolve().parents[1]
CRD_PATH = ROOT / "crds" / "speechtotexts.speech-operator.io.yaml"
GROUP, PLURAL = "speech-operator.io", "speechtotexts"

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
#: The patches a custom resource takes (no strategic merge patch: it has no Go type to read patch strategies from).
PATCHES = (MERGE_PATCH, JSON_PATCH, APPLY_PATCH)
#: What the status subresource keeps of a body besides .status (the object's identity, read, not written).
STATUS_IDENTITY = frozenset({"apiVersion", "kind"})
STATUS_METADATA_IDENTITY = frozenset({"name", "namespace", "uid", "resourceVersion"})


# ---- the CRD's schema, and validation as the API server does it (defaults, then the schema, then CEL) ----------
def crd_schema(crd: dict[str, Any] | None = None) -> dict[str, Any]:
    """The schema of ``crd`` (crds/'s SpeechToText CRD by default: a copy of its own)."""
    crd = crd or yaml.safe_load(CRD_PATH.read_text())
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


@functools.cache
def _schema() -> dict[str, Any]:
    """crds/'s schema, read once for the judge (which never changes it)."""
    return crd_schema()


def with_defaults(schema: dict[str, Any], value: Any) -> Any:
    """``value`` with the schema's defaults filled in, as the API server does before validating."""
    value = copy.deepcopy(value)
    if isinstance(value, dict):
        for name, sub in (schema.get("properties") or {}).items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                value[name] = with_defaults(sub, value[name])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            value = {k: with_defaults(extra, v) for k, v in value.items()}
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        value = [with_defaults(schema["items"], v) for v in value]
    return value


@functools.cache
def _program(rule: str) -> Any:
    env = celpy.Environment()
    return env.program(env.compile(rule))


def cel_failures(schema: dict[str, Any], value: Any, where: str = "") -> list[str]:
    """Messages of the ``x-kubernetes-validations`` rules that ``value`` breaks, evaluated for real."""
    failures: list[str] = []
    for rule in schema.get("x-kubernetes-validations") or []:
        result = _program(rule["rule"]).evaluate({"self": celpy.json_to_cel(value)})
        if isinstance(result, Exception) or not bool(result):
            failures.append(f"{where or '<root>'}: {rule['message']}")
    if isinstance(value, dict):
        for name, sub in (schema.get("properties") or {}).items():
            if name in value:
                failures += cel_failures(sub, value[name], f"{where}.{name}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            failures += cel_failures(schema["items"], item, f"{where}[{i}]")
    return failures


def problems(obj: Any, schema: dict[str, Any] | None = None) -> list[str]:
    """Everything the API server would refuse in ``obj`` by ``schema`` (the whole SpeechToText's by default);
    empty when it is accepted."""
    schema = _schema() if schema is None else schema
    obj = with_defaults(schema, obj)
    validator = jsonschema.Draft7Validator(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)
    errors = [f"{'.'.join(map(str, e.path)) or '<root>'}: {e.message}" for e in validator.iter_errors(obj)]
    return errors or cel_failures(schema, obj)


def partial(schema: dict[str, Any], *, items: bool = False) -> dict[str, Any]:
    """``schema`` for the fields a patch writes: its object nodes lose ``required`` and their CEL rules, which ask
    of fields the patch may leave as they were; down to a list, which a merge patch writes whole, or (``items``:
    a JSON patch, which may write one field of an item) below lists too."""
    out = {k: v for k, v in schema.items() if k not in ("required", "x-kubernetes-validations", "default")}
    if isinstance(schema.get("properties"), dict):
        out["properties"] = {k: partial(v, items=items) for k, v in schema["properties"].items()}
    if isinstance(schema.get("additionalProperties"), dict):
        out["additionalProperties"] = partial(schema["additionalProperties"], items=items)
    if items and isinstance(schema.get("items"), dict):
        out["items"] = partial(schema["items"], items=items)
    return out


# ---- pruning ----------------------------------------------------------------------------------------------------
@functools.cache
def object_meta_fields() -> frozenset[str]:
    """ObjectMeta's fields (kubernetes-validate's schema of the newest Kubernetes it knows): what a custom
    resource's metadata keeps."""
    version = kv_utils.latest_version()
    schema = kv_utils.schema_contents(f"kubernetes-json-schema/v{version}-local-strict/objectmeta-meta-v1.json", version)
    return frozenset(schema["properties"])


def pruned(schema: Mapping[str, Any], value: Any, where: str = "", *, root: bool = True) -> list[str]:
    """The fields of ``value`` the structural ``schema`` does not declare: what the API server prunes."""
    out: list[str] = []
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for key, sub in value.items():
            at = f"{where}.{key}"
            if sub is None:  # a merge patch's removal
                continue
            if root and key == "metadata" and isinstance(sub, dict):
                out += [f"{at}.{k}" for k in sub if k not in object_meta_fields()]
            elif root and key in ("apiVersion", "kind"):
                continue
            elif key in props:
                out += pruned(props[key], sub, at, root=False)
            elif isinstance(extra, dict):
                out += pruned(extra, sub, at, root=False)
            elif not (extra is True or schema.get("x-kubernetes-preserve-unknown-fields")):
                out.append(at)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            out += pruned(schema["items"], item, f"{where}[{i}]", root=False)
    return out


# ---- what a request writes --------------------------------------------------------------------------------------
def without_nulls(value: Any) -> Any:
    """A merge patch's fields less its removals (``null``)."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    return value


def from_json_patch(ops: Iterable[Any]) -> dict[str, Any]:
    """The fields a JSON patch's ``add`` and ``replace`` operations write, as one object (an index or ``-`` in a
    path reads as an item of a list)."""
    out: dict[str, Any] = {}
    for op in ops:
        if not isinstance(op, Mapping) or op.get("op") not in ("add", "replace"):
            continue
        keys = [k.replace("~1", "/").replace("~0", "~") for k in str(op.get("path", "")).split("/")[1:]]
        if not keys:
            continue
        value = copy.deepcopy(op.get("value"))
        for key in reversed(keys[1:]):
            value = [value] if key == "-" or key.isdigit() else {key: value}
        _put(out, {keys[0]: value})
    return out


def _put(into: dict[str, Any], piece: dict[str, Any]) -> None:
    for key, value in piece.items():
        if isinstance(into.get(key), dict) and isinstance(value, dict):
            _put(into[key], value)
        elif isinstance(into.get(key), list) and isinstance(value, list):
            into[key].extend(value)
        else:
            into[key] = value


def at(where: str, problem: str) -> str:
    """A problem :func:`problems` found below ``where`` (a field's path from the object, '' the object), named
    from the object."""
    path, _, message = problem.partition(": ")
    return f"{where or '<root>'}: {message}" if path == "<root>" else f"{where}.{path}: {message}"


def findings(s: Sent) -> Iterator[str]:
    """What the API server would prune, ignore or refuse of one write ``s`` to a SpeechToText."""
    attrs = attributes(s.method, s.path, s.query)
    schema = _schema()
    sub = attrs.subresource
    kind = s.content_type.split(";")[0].strip().lower()
    if s.method == "PATCH" and kind not in PATCHES:
        yield f"refused (415): a custom resource takes a PATCH as one of {', '.join(PATCHES)}"
        return
    if s.method == "PATCH" and kind == JSON_PATCH:
        if not isinstance(s.body, list):
            yield f"refused (400): a JSON patch that is not a list: {s.body!r}"
            return
        written, whole, deep = from_json_patch(s.body), False, True
    elif not isinstance(s.body, dict):
        yield f"refused (400): a body that is not an object: {s.body!r}"
        return
    else:
        written = without_nulls(s.body) if kind == MERGE_PATCH else s.body
        whole, deep = s.method in ("POST", "PUT") or kind == APPLY_PATCH, False

    if sub == "scale":
        scale = {"apiVersion": "autoscaling/v1", "kind": "Scale", **written}
        try:
            kubernetes_validate.validate(scale, kv_utils.latest_version(), strict=True)
        except kubernetes_validate.ValidationError as exc:
            yield f"refused or pruned: not an autoscaling/v1 Scale: {exc.message}"
        replicas = (written.get("spec") or {}).get("replicas")
        if replicas is not None:
            yield from (f"refused (422): {at('.spec.replicas', p)}"
                        for p in problems(replicas, schema["properties"]["spec"]["properties"]["replicas"]))
        return
    if sub == "status":
        yield from (f"ignored: .{k} (the status subresource takes .status only)"
                    for k in written if k not in STATUS_IDENTITY | {"metadata", "status"})
        yield from (f"ignored: .metadata.{k} (the status subresource takes .status only)"
                    for k in written.get("metadata") or {} if k not in STATUS_METADATA_IDENTITY)
        if "status" not in written:
            return
        written, schema = written["status"], schema["properties"]["status"]
        where = ".status"
    elif sub:
        yield f"refused (404): speechtotexts has no subresource {sub}"
        return
    else:
        if "status" in written:
            yield ".status: ignored (the main resource takes no status: it has a status subresource)"
            written = {k: v for k, v in written.items() if k != "status"}
        where = ""
        if not whole or s.method == "PATCH":  # an apply to an existing object need not restate the spec
            schema = {**schema, "required": [r for r in schema.get("required", []) if r in written]}
    yield from (f"{field}: pruned (the CRD's schema does not declare it)"
                for field in pruned(schema, written, where, root=not where))
    checked = problems(written, schema if whole else partial(schema, items=deep))
    yield from (f"refused (422): {at(where, p)}" for p in checked)


def as_created(doc: Mapping[str, Any]) -> list[str]:
    """What the API server would prune or refuse of ``doc`` created whole (``kubectl apply`` of a new object):
    the examples and manifests users apply."""
    namespace = (doc.get("metadata") or {}).get("namespace") or "default"
    sent = Sent(method="POST", path=f"/apis/{GROUP}/v1alpha1/namespaces/{namespace}/{PLURAL}", query={}, user_agent="",
                body=doc, content_type="application/json")
    return list(findings(sent))


def judge(sent: Iterable[Sent]) -> list[str]:
    """Every finding in the writes to speechtotexts among ``sent``, each naming its request: empty when a real
    API server would store each as it was sent."""
    out = []
    for s in sent:
        if s.method not in ("POST", "PUT", "PATCH"):
            continue
        attrs = attributes(s.method, s.path, s.query)
        if not attrs.resource_request or (attrs.api_group, attrs.resource) != (GROUP, PLURAL):
            continue
        query = "&".join(f"{k}={v}" for k, v in s.query.items())
        request = f"{s.method} {s.path}{'?' + query if query else ''} ({s.user_agent}, {s.content_type or 'no Content-Type'})"
        out += [f"{request}: {f}" for f in findings(s)]
    return out
