"""What a real API server's RBAC would say to each request the tests' kmock servers served.

kmock grants every request; a real cluster answers 403 to one that the sender's Roles do not grant. So every
request a kmock handler serves in a test is recorded (tests/conftest.py wraps ``kmock.RawHandler.__call__``,
which every kmock server calls, so no kmock escapes it) and, when the test ends, judged here as the API server
judges it:

- :func:`attributes` turns method, path and query into RBAC's request attributes, as the API server's
  ``RequestInfoFactory.NewRequestInfo`` (k8s.io/apiserver/pkg/endpoints/request/requestinfo.go) does: GET of a
  collection is ``list`` (``watch`` with ``watch=true``, which Go reads with ParseBool), of a name ``get``; POST
  ``create``, PUT ``update``, PATCH ``patch`` (server-side apply too), DELETE ``delete`` (of a collection
  ``deletecollection``); ``/watch/`` paths ``watch``; ``status``/``scale``... are subresources; a list or watch
  with ``fieldSelector=metadata.name=X`` carries the name X (what ``resourceNames`` matches); ``/api``, ``/apis``,
  ``/api/v1``, ``/apis/GROUP/VERSION``, ``/version`` are non-resource URLs.
- :func:`rule_allows` is RBAC's ``RuleAllows`` (plugin/pkg/auth/authorizer/rbac/rbac.go and the matchers of
  pkg/apis/rbac/v1/evaluation_helpers.go): ``*`` verbs, groups and resources, ``*/SUB``, resourceNames,
  nonResourceURLs ending in ``*``.
- An :class:`Identity` is who sent a request, with its bindings: a ClusterRoleBinding applies to every
  namespace and to cluster-scoped requests, a RoleBinding only to requests in its namespace. Every authenticated
  user also has the default ``system:discovery``, ``system:public-info-viewer`` and ``system:basic-user``.

Who sent a request is read from its User-Agent (:func:`identity_of`): the tests' kmock servers take one token
from everyone, but each of our clients names itself. A User-Agent none of ours sends is an error, not a pass.

A server-side apply that creates its object (our emulator turns it into a create: harness/kube.py) is
authorized by the API server as ``patch`` and then as ``create`` (the patch handler's ``withAuthorization``
on creation): both are checked.

Beside RBAC, the OwnerReferencesPermissionEnforcement admission plugin (on by default on OpenShift and OKD;
plugin/pkg/admission/gc/gc_admission.go) asks RBAC more of a create or update (a patch, an apply) whose object's
ownerReferences it changes: :meth:`Sent.owner_checks`. An update that changes them (a create never counts: its
sender could have not created it) needs ``delete`` of the object; each ownerReference with
``blockOwnerDeletion: true`` that is new (a uid the old object had not, or had not blocking) needs ``update`` of
``<owner's plural>/finalizers`` in the owner's group, named as the owner, in the request's namespace (a
namespaced owner) or cluster-wide. The owner's plural and scope come from a REST mapping: the CRDs of
``crds/`` (:func:`owner_mapping`); a kind they do not declare is an error here (the plugin answers 403 for a
kind it cannot map). What the object had before an update the emulator notes (``Emulator.owners_before``);
when no one noted it (a plain kmock handler) every ownerReference the body sets counts as new.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
RBAC_YAML = ROOT / "deploy" / "base" / "rbac.yaml"
#: The CRDs the tests' cluster has: what the REST mapper maps an owner's kind to a resource by.
CRDS = ROOT / "crds"

#: kube-apiserver's ``--api-prefixes``; ``api`` is the groupless (core) one.
API_PREFIXES = ("api", "apis")
#: Path segments after the version that name a verb, not a resource.
SPECIAL_VERBS = ("proxy", "watch")
#: Namespace subresources (``/api/v1/namespaces/NAME/status``), not a resource inside the namespace.
NAMESPACE_SUBRESOURCES = ("status", "finalize")
#: Go's strconv.ParseBool's true spellings (how the API server reads ``watch=``).
GO_TRUE = ("1", "t", "T", "TRUE", "true", "True")

#: The default ClusterRoles bound to every authenticated user (system:authenticated).
AUTHENTICATED: tuple[dict[str, Any], ...] = (
    {"nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*",
                         "/readyz", "/version", "/version/"], "verbs": ["get"]},  # system:discovery
    {"nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"], "verbs": ["get"]},  # public-info-viewer
    {"apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
     "verbs": ["create"]},  # system:basic-user
    {"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"], "verbs": ["create"]},
)


@dataclasses.dataclass(frozen=True)
class Attributes:
    """RBAC's view of one request (authorizer.AttributesRecord, less the user)."""

    verb: str
    path: str
    resource_request: bool = False
    api_group: str = ""
    api_version: str = ""
    namespace: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""

    def __str__(self) -> str:
        if not self.resource_request:
            return f"{self.verb} {self.path}"
        what = self.resource + (f"/{self.subresource}" if self.subresource else "")
        group = f" (apiGroup {self.api_group!r})"
        where = f" in namespace {self.namespace}" if self.namespace else " cluster-wide"
        named = f" named {self.name}" if self.name else ""
        return f"{self.verb} {what}{group}{named}{where}"

    def missing_rule(self) -> dict[str, Any]:
        """The rule that would grant this request (what a Role or ClusterRole lacks)."""
        if not self.resource_request:
            return {"nonResourceURLs": [self.path], "verbs": [self.verb]}
        what = self.resource + (f"/{self.subresource}" if self.subresource else "")
        return {"apiGroups": [self.api_group], "resources": [what], "verbs": [self.verb]}


def _field_name(selector: str) -> str:
    """The name a field selector requires exactly (``metadata.name=X`` or ``==X`` among its terms), else ''."""
    for term in selector.split(","):
        found = re.fullmatch(r"\s*metadata\.name\s*==?\s*(.*?)\s*", term)
        if found and (value := found.group(1)) not in ("", ".", "..") and "/" not in value and "%" not in value:
            return value
    return ""


def attributes(method: str, path: str, query: Mapping[str, str] | None = None) -> Attributes:
    """requestinfo.go's NewRequestInfo, for RBAC: ``method`` and ``path`` (no query) of the request, ``query`` its parameters."""
    query = query or {}
    method = method.upper()
    parts = [p for p in path.strip("/").split("/") if p] if path.strip("/") else []
    nonresource = Attributes(verb=method.lower(), path=path)
    if len(parts) < 3 or parts[0] not in API_PREFIXES:
        return nonresource
    prefix, parts = parts[0], parts[1:]
    group = ""
    if prefix != "api":  # the groupless prefix has no group segment
        if len(parts) < 3:
            return nonresource
        group, parts = parts[0], parts[1:]
    version, parts = parts[0], parts[1:]
    by_method = False
    if parts[0] in SPECIAL_VERBS:
        if len(parts) < 2:
            raise ValueError(f"unable to determine kind and namespace from {path}")
        verb, parts = parts[0], parts[1:]
    else:
        by_method = True
        verb = {"POST": "create", "GET": "get", "HEAD": "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method, "")
    namespace = ""
    if parts[0] == "namespaces" and len(parts) > 1:
        namespace = parts[1]
        if len(parts) > 2 and parts[2] not in NAMESPACE_SUBRESOURCES:
            parts = parts[2:]
    resource = name = subresource = ""
    if len(parts) >= 3 and verb != "proxy":
        subresource = parts[2]
    if len(parts) >= 2:
        name = parts[1]
    resource = parts[0]
    if by_method and not name and verb == "get":
        verb = "watch" if query.get("watch") in GO_TRUE else "list"
        name = _field_name(query.get("fieldSelector", ""))
    if by_method and not name and verb == "delete":
        verb = "deletecollection"
    return Attributes(verb=verb, path=path, resource_request=True, api_group=group, api_version=version,
                      namespace=namespace, resource=resource, subresource=subresource, name=name)


def rule_allows(rule: Mapping[str, Any], attrs: Attributes) -> bool:
    """RBAC's RuleAllows: does this PolicyRule grant this request?"""
    verbs = rule.get("verbs") or []
    if "*" not in verbs and attrs.verb not in verbs:
        return False
    if not attrs.resource_request:
        return any(u == "*" or u == attrs.path or (u.endswith("*") and attrs.path.startswith(u[:-1]))
                   for u in rule.get("nonResourceURLs") or [])
    groups = rule.get("apiGroups") or []
    if "*" not in groups and attrs.api_group not in groups:
        return False
    combined = attrs.resource + (f"/{attrs.subresource}" if attrs.subresource else "")
    if not any(r == "*" or r == combined or (attrs.subresource and r == f"*/{attrs.subresource}")
               for r in rule.get("resources") or []):
        return False
    names = rule.get("resourceNames") or []
    return not names or attrs.name in names


@dataclasses.dataclass(frozen=True)
class Binding:
    """Rules bound to an identity: by a ClusterRoleBinding (``namespace`` None: everywhere, and cluster-scoped
    requests) or by a RoleBinding in ``namespace`` (requests in that namespace only)."""

    rules: tuple[Mapping[str, Any], ...]
    namespace: str | None = None
    source: str = ""

    def allows(self, attrs: Attributes) -> bool:
        if self.namespace is not None and (not attrs.resource_request or attrs.namespace != self.namespace):
            return False
        return any(rule_allows(rule, attrs) for rule in self.rules)


@dataclasses.dataclass(frozen=True)
class Identity:
    name: str
    bindings: tuple[Binding, ...]

    def allows(self, attrs: Attributes) -> bool:
        return any(rule_allows(rule, attrs) for rule in AUTHENTICATED) or any(b.allows(attrs) for b in self.bindings)

    def describe(self) -> str:
        return "; ".join(b.source or ("ClusterRoleBinding" if b.namespace is None else f"RoleBinding in {b.namespace}")
                         for b in self.bindings) or "no binding"


@functools.cache
def cluster_role(name: str, source: Path = RBAC_YAML) -> tuple[Mapping[str, Any], ...]:
    """The rules of ClusterRole ``name`` in deploy/base/rbac.yaml (the chart's files/rbac.yaml is its copy)."""
    for doc in yaml.safe_load_all(source.read_text()):
        if doc and doc.get("kind") == "ClusterRole" and doc["metadata"]["name"] == name:
            return tuple(doc["rules"])
    raise LookupError(f"{source} has no ClusterRole {name}")


def cluster_wide(role: str) -> Identity:
    """``role``'s ClusterRole bound by a ClusterRoleBinding (the chart's ``watch.mode: cluster``)."""
    return Identity(role, (Binding(cluster_role(role), None, f"ClusterRole {role} by a ClusterRoleBinding"),))


def by_roles(role: str, namespaces: Iterable[str]) -> Identity:
    """``role``'s rules in a Role and RoleBinding in each of ``namespaces`` (the chart's ``watch.mode: namespaced``:
    charts/speech-operator/templates/rbac.yaml and gateway-rbac.yaml)."""
    rules = cluster_role(role)
    return Identity(role, tuple(Binding(rules, ns, f"Role {role} by a RoleBinding in {ns}") for ns in namespaces))


#: The admission plugin's answers, as its 403s say them.
CANNOT_DELETE = "cannot set an ownerRef on a resource you can't delete"
CANNOT_BLOCK = "cannot set blockOwnerDeletion if an ownerReference refers to a resource you can't set finalizers on"
#: Requests the plugin leaves alone (its whiteList): (apiGroup, resource, subresource).
OWNER_CHECK_EXEMPT = (("", "pods", "status"),)


@functools.cache
def owner_mappings(crds: Path = CRDS) -> dict[tuple[str, str], tuple[str, bool, frozenset[str]]]:
    """(group, kind) -> (plural, namespaced, served versions) of each CRD in ``crds``: the REST mapper's view."""
    out = {}
    for path in sorted(crds.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                spec = doc["spec"]
                out[spec["group"], spec["names"]["kind"]] = (
                    spec["names"]["plural"], spec["scope"] == "Namespaced",
                    frozenset(v["name"] for v in spec["versions"] if v.get("served")))
    return out


def owner_mapping(api_version: str, kind: str) -> tuple[str, str, bool]:
    """(group, plural, namespaced) of an ownerReference's ``apiVersion`` and ``kind`` (RESTMappings of its group
    and kind at its version). A kind no CRD of crds/ declares, or a version it does not serve, raises: the plugin
    refuses what it cannot map, and this judge knows the cluster's kinds by crds/ only."""
    group, _, version = api_version.rpartition("/")
    found = owner_mappings().get((group, kind))
    if found is None or version not in found[2]:
        raise LookupError(f"an ownerReference to {kind} of {api_version}: no CRD of {CRDS} serves it "
                          "(tests/rbac.py maps owner kinds by those CRDs only)")
    return group, found[0], found[1]


@dataclasses.dataclass(frozen=True)
class Sent:
    """One request a kmock server served, as the checker needs it."""

    method: str
    path: str
    query: Mapping[str, str]
    user_agent: str
    created: bool = False  # a PATCH (server-side apply) that created its object
    role_bound: bool = False  # its token was bound by Roles only (harness.kube.Emulator.namespaced_only)
    forbidden: bool = False  # the emulator itself answered 403 Forbidden (its model of Roles)
    body: Any = None  # the body as sent, parsed as JSON (YAML for a server-side apply; None: none, or not parsed)
    content_type: str = ""  # its Content-Type header (tests/crd_schema.py reads a patch by it)
    #: the ownerReferences of the object an update changed, before it (Emulator.owners_before); None: not known
    owners_before: tuple[Mapping[str, Any], ...] | None = None

    def verbs(self) -> list[Attributes]:
        """What the API server authorizes for this request: one check, two for an apply that creates."""
        first = attributes(self.method, self.path, self.query)
        return [first, dataclasses.replace(first, verb="create")] if self.created and first.verb == "patch" else [first]

    def owner_checks(self) -> list[tuple[Attributes, str]]:
        """What OwnerReferencesPermissionEnforcement asks RBAC of this request, each with the 403 it answers
        when refused: gc_admission.go's Validate for a create or update whose body sets ownerReferences."""
        first = attributes(self.method, self.path, self.query)
        meta = self.body.get("metadata") if isinstance(self.body, Mapping) else None
        if (self.forbidden or not first.resource_request or first.verb not in ("create", "update", "patch")
                or (first.api_group, first.resource, first.subresource) in OWNER_CHECK_EXEMPT
                or not isinstance(meta, Mapping) or "ownerReferences" not in meta):
            return []
        new = list(meta["ownerReferences"] or [])
        creating = first.verb == "create" or self.created
        old = None if creating or self.owners_before is None else list(self.owners_before)
        if (not new if creating else new == old):  # isChangingOwnerReference
            return []
        checks = [] if creating else [(dataclasses.replace(first, verb="delete", path=""), CANNOT_DELETE)]
        was = {ref.get("uid"): ref for ref in old or []}
        for ref in new:  # newBlockingOwnerDeletionRefs: blocking now, and not blocking before (or new)
            if ref.get("blockOwnerDeletion") is not True or was.get(ref.get("uid"), {}).get("blockOwnerDeletion") is True:
                continue
            group, plural, namespaced = owner_mapping(str(ref.get("apiVersion", "")), str(ref.get("kind", "")))
            checks.append((Attributes(verb="update", path="", resource_request=True, api_group=group,
                                      api_version=str(ref["apiVersion"]).rpartition("/")[2],
                                      namespace=first.namespace if namespaced else "", resource=plural,
                                      subresource="finalizers", name=str(ref.get("name", ""))), CANNOT_BLOCK))
        return checks


def identity_of(user_agent: str, *, role_bound: bool, namespaces: Sequence[str],
                extra: Mapping[str, Identity] | None = None) -> Identity | None:
    """Who sent a request with this User-Agent: None for the test itself (``test-client``, an administrator as
    kubectl would be); the operator (kopf's requests and its own client) or the gateway, bound cluster-wide or,
    when ``role_bound``, by Roles in ``namespaces``. ``extra`` names other identities (the cleanup hook's Role).
    A User-Agent none of ours sends raises: who sent it must be said, not guessed."""
    from speech_operator.kube import USER_AGENT
    if extra and user_agent in extra:
        return extra[user_agent]
    if user_agent == "test-client":
        return None
    if user_agent.startswith("kopf/") or user_agent == USER_AGENT:
        return by_roles("speech-operator", namespaces) if role_bound else cluster_wide("speech-operator")
    if user_agent == f"{USER_AGENT} gateway":
        return by_roles("speech-gateway", namespaces) if role_bound else cluster_wide("speech-gateway")
    raise LookupError(f"a request with User-Agent {user_agent!r}: no identity of tests/rbac.py sends it "
                      "(the test's own client must say User-Agent: test-client)")


@dataclasses.dataclass
class Namespaced:
    """The chart's namespaced mode (watch.mode: namespaced) runs the operator and the gateway for named namespaces
    with their rules in a Role in each. The tests run them for the namespace ``speech``, mostly bound cluster-wide:
    ``refused`` is what they sent that those Roles would refuse (403): (identity, resource, request); ``lived_with``
    the resources a test bound by Roles only (Emulator.namespaced_only) saw refused, and went on (after a refused
    list, the watch is never sent). What is refused of a resource no test lived with is for a person's eyes: a 403
    in namespaced mode that no test of the run shows the code living with (or a run of an --all-namespaces pod)."""

    refused: set[tuple[str, str, str]] = dataclasses.field(default_factory=set)
    lived_with: set[tuple[str, str]] = dataclasses.field(default_factory=set)

    def unproven(self) -> list[tuple[str, str]]:
        return sorted((who, request) for who, what, request in self.refused if (who, what) not in self.lived_with)


def judge(sent: Iterable[Sent], *, namespaces: Sequence[str], extra: Mapping[str, Identity] | None = None,
          exercised: set[tuple[str, str, str, str]] | None = None, namespaced: Namespaced | None = None) -> list[str]:
    """Every request an identity sent that its RBAC does not grant, as ``request: identity lacks rule``, and every
    check of OwnerReferencesPermissionEnforcement it does not grant (:meth:`Sent.owner_checks`); and every
    request the emulator forbade (its model of Roles) that the Roles would grant. Empty when all is as on a cluster.
    ``exercised`` collects (identity, apiGroup, resource[/subresource], verb) of each resource request granted;
    ``namespaced`` what the chart's namespaced mode would refuse (see :class:`Namespaced`)."""
    problems = []
    for s in sent:
        who = identity_of(s.user_agent, role_bound=s.role_bound, namespaces=namespaces, extra=extra)
        if who is None:
            continue
        for attrs, admission in [*((a, "") for a in s.verbs()), *s.owner_checks()]:
            allowed = who.allows(attrs)
            query = "&".join(f"{k}={v}" for k, v in s.query.items())
            request = f"{s.method} {s.path}{'?' + query if query else ''}"
            if allowed and exercised is not None and attrs.resource_request:
                exercised.add((who.name, *next(iter(used([attrs])))))
            if namespaced is not None and not (extra and s.user_agent in extra):
                what = f"{attrs.resource}{'/' + attrs.subresource if attrs.subresource else ''} ({attrs.api_group or 'core'})"
                if s.role_bound and s.forbidden:
                    namespaced.lived_with.add((who.name, what))
                elif not s.role_bound and not by_roles(who.name, namespaces).allows(attrs):
                    namespaced.refused.add((who.name, what, str(attrs)))
            if not allowed and not s.forbidden:
                why = f"OwnerReferencesPermissionEnforcement: {admission}: " if admission else ""
                problems.append(f"{request} ({s.user_agent}): {why}{attrs}, which {who.name} may not ({who.describe()});"
                                f" missing rule: {attrs.missing_rule()}")
            elif allowed and s.forbidden:
                problems.append(f"{request} ({s.user_agent}): the emulator answered 403 but {who.describe()} grants {attrs}")
    return problems


def grants(identity: Identity) -> set[tuple[str, str, str]]:
    """(apiGroup, resource[/subresource], verb) of every rule of ``identity``'s bindings (resourceNames aside)."""
    return {(g, r, v) for b in identity.bindings for rule in b.rules
            for g in rule.get("apiGroups") or [] for r in rule.get("resources") or [] for v in rule.get("verbs") or []}


def used(attrs: Iterable[Attributes]) -> set[tuple[str, str, str]]:
    return {(a.api_group, a.resource + (f"/{a.subresource}" if a.subresource else ""), a.verb)
            for a in attrs if a.resource_request}


#: Identities a test binds for itself, by User-Agent (the cleanup hook's Role as the chart renders it):
#: cleared when the test ends.
BOUND: dict[str, Identity] = {}
#: The namespaces the operator a test runs watches ("namespaces"; tests/operator/conftest.py's fixture of that name),
#: when not ``speech`` alone: a Role in each in the chart's namespaced mode; None: every namespace, the chart's cluster
#: mode, which no Role binds (nothing of that test is judged by Roles). Cleared when the test ends.
SCOPE: dict[str, list[str] | None] = {}


def unexercised(exercised: Iterable[Sequence[str]]) -> dict[str, list[tuple[str, str, str]]]:
    """deploy/base/rbac.yaml's grants (by ClusterRole) that no judged request used."""
    done = {tuple(e) for e in exercised}
    return {role: sorted(g for g in grants(cluster_wide(role)) if (role, *g) not in done)
            for role in ("speech-operator", "speech-gateway")}
