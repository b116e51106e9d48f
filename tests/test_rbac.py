"""tests/rbac.py, the API server's RBAC as the tests judge kmock's requests by: its mapping of a request to RBAC's
attributes (requestinfo.go), its rule matching (RuleAllows), bindings' scope, and that it can refuse."""

from __future__ import annotations

import dataclasses

import kmock
import pytest

from speech_operator.kube import USER_AGENT

from . import conftest, rbac
from .rbac import Attributes, Binding, Identity, Sent, attributes, rule_allows

pytestmark = pytest.mark.unit  # no model, server, operator or browser: the quick run (README, Tests)

STT = "/apis/speech-operator.io/v1alpha1/namespaces/speech/speechtotexts"


def res(verb: str, group: str, resource: str, namespace: str = "", name: str = "", sub: str = "", version: str = "v1") -> Attributes:
    return Attributes(verb=verb, path="", resource_request=True, api_group=group, api_version=version,
                      namespace=namespace, resource=resource, subresource=sub, name=name)


@pytest.mark.parametrize(("method", "path", "query", "expected"), [
    ("GET", STT, {}, ("list", "speech-operator.io", "speechtotexts", "speech", "", "")),
    ("GET", STT, {"watch": "true"}, ("watch", "speech-operator.io", "speechtotexts", "speech", "", "")),
    ("GET", STT, {"watch": "True"}, ("watch", "speech-operator.io", "speechtotexts", "speech", "", "")),  # Go's ParseBool
    ("GET", STT, {"watch": "false"}, ("list", "speech-operator.io", "speechtotexts", "speech", "", "")),
    ("GET", f"{STT}/en-us", {}, ("get", "speech-operator.io", "speechtotexts", "speech", "en-us", "")),
    ("HEAD", f"{STT}/en-us", {}, ("get", "speech-operator.io", "speechtotexts", "speech", "en-us", "")),
    ("PATCH", f"{STT}/en-us/status", {"fieldManager": "x"}, ("patch", "speech-operator.io", "speechtotexts", "speech", "en-us", "status")),
    ("PUT", f"{STT}/en-us/scale", {}, ("update", "speech-operator.io", "speechtotexts", "speech", "en-us", "scale")),
    ("POST", STT, {"dryRun": "All"}, ("create", "speech-operator.io", "speechtotexts", "speech", "", "")),
    ("DELETE", f"{STT}/en-us", {}, ("delete", "speech-operator.io", "speechtotexts", "speech", "en-us", "")),
    ("DELETE", STT, {}, ("deletecollection", "speech-operator.io", "speechtotexts", "speech", "", "")),
    ("GET", "/apis/speech-operator.io/v1alpha1/speechtotexts", {"watch": "1"}, ("watch", "speech-operator.io", "speechtotexts", "", "", "")),
    ("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", {"fieldSelector": "metadata.name=speechtotexts.speech-operator.io"},
     ("list", "apiextensions.k8s.io", "customresourcedefinitions", "", "speechtotexts.speech-operator.io", "")),
    ("GET", "/apis/apps/v1/watch/namespaces/speech/deployments/en-us", {}, ("watch", "apps", "deployments", "speech", "en-us", "")),
    ("GET", "/api/v1/namespaces", {}, ("list", "", "namespaces", "", "", "")),
    ("GET", "/api/v1/namespaces/speech", {}, ("get", "", "namespaces", "speech", "speech", "")),
    ("PUT", "/api/v1/namespaces/speech/finalize", {}, ("update", "", "namespaces", "speech", "speech", "finalize")),
    ("POST", "/api/v1/namespaces/speech/events", {}, ("create", "", "events", "speech", "", "")),
    ("GET", "/api/v1/namespaces/speech/pods/p/proxy/a/b", {}, ("get", "", "pods", "speech", "p", "proxy")),
])
def test_a_request_is_read_as_the_api_server_reads_it(method: str, path: str, query: dict[str, str],
                                                      expected: tuple[str, ...]) -> None:
    a = attributes(method, path, query)
    assert a.resource_request
    assert (a.verb, a.api_group, a.resource, a.namespace, a.name, a.subresource) == expected


@pytest.mark.parametrize("path", ["/api", "/api/v1", "/apis", "/apis/apps", "/apis/apps/v1", "/version", "/healthz", "/"])
def test_discovery_and_the_like_are_non_resource_urls(path: str) -> None:
    a = attributes("GET", path)
    assert not a.resource_request and a.verb == "get" and a.path == path


def test_rules_match_as_rbac_matches_them() -> None:
    pods = res("list", "", "pods", "speech")
    assert rule_allows({"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}, pods)
    assert rule_allows({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}, pods)
    assert not rule_allows({"apiGroups": ["apps"], "resources": ["pods"], "verbs": ["list"]}, pods)
    assert not rule_allows({"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}, pods)
    status = res("patch", "speech-operator.io", "speechtotexts", "speech", "a", "status")
    assert not rule_allows({"apiGroups": ["speech-operator.io"], "resources": ["speechtotexts"], "verbs": ["patch"]}, status)
    assert rule_allows({"apiGroups": ["speech-operator.io"], "resources": ["speechtotexts/status"], "verbs": ["patch"]}, status)
    assert rule_allows({"apiGroups": ["speech-operator.io"], "resources": ["*/status"], "verbs": ["patch"]}, status)
    assert rule_allows({"apiGroups": ["speech-operator.io"], "resources": ["*"], "verbs": ["patch"]}, status)
    named = {"apiGroups": ["speech-operator.io"], "resources": ["speechtotexts"], "resourceNames": ["a"], "verbs": ["get", "list"]}
    assert rule_allows(named, res("get", "speech-operator.io", "speechtotexts", "speech", "a"))
    assert not rule_allows(named, res("get", "speech-operator.io", "speechtotexts", "speech", "b"))
    assert not rule_allows(named, res("list", "speech-operator.io", "speechtotexts", "speech"))  # no name: not granted
    assert rule_allows(named, attributes("GET", STT, {"fieldSelector": "metadata.name=a"}))  # a list of that name is
    assert rule_allows({"nonResourceURLs": ["/apis/*"], "verbs": ["get"]}, attributes("GET", "/apis/apps/v1"))
    assert not rule_allows({"nonResourceURLs": ["/apis"], "verbs": ["get"]}, attributes("GET", "/apis/apps/v1"))


def test_a_role_binds_its_namespace_only() -> None:
    rules = ({"apiGroups": [""], "resources": ["pods", "namespaces"], "verbs": ["list"]},)
    cluster, role = Identity("x", (Binding(rules),)), Identity("x", (Binding(rules, "speech"),))
    here, there, everywhere = res("list", "", "pods", "speech"), res("list", "", "pods", "other"), res("list", "", "pods")
    assert cluster.allows(here) and cluster.allows(there) and cluster.allows(everywhere)
    assert role.allows(here) and not role.allows(there) and not role.allows(everywhere)
    assert not role.allows(res("list", "", "namespaces"))  # cluster-scoped: never by a Role
    assert role.allows(attributes("GET", "/apis")) and role.allows(attributes("GET", "/version"))  # every user's


def test_the_operators_rules_grant_what_it_does_and_refuse_with_a_verb_removed() -> None:
    """Judged with deploy/base/rbac.yaml's rules, then with a copy lacking ``patch`` of SpeechToTexts' status:
    the same apply is refused, with the request and the rule it lacks."""
    apply = Sent("PATCH", f"{STT}/en-us/status", {"fieldManager": "speech-operator"}, USER_AGENT)
    assert rbac.judge([apply], namespaces=["speech"]) == []
    operator = rbac.cluster_wide("speech-operator")
    rules = tuple({**r, "verbs": [v for v in r["verbs"] if not (r["resources"] == ["speechtotexts/status"] and v == "patch")]}
                  for r in operator.bindings[0].rules)
    less = dataclasses.replace(operator, bindings=(Binding(rules, None, "a copy less patch of speechtotexts/status"),))
    (problem,) = rbac.judge([apply], namespaces=["speech"], extra={USER_AGENT: less})
    assert problem.startswith(f"PATCH {STT}/en-us/status?fieldManager=speech-operator ({USER_AGENT}): patch speechtotexts/status")
    assert "missing rule: {'apiGroups': ['speech-operator.io'], 'resources': ['speechtotexts/status'], 'verbs': ['patch']}" in problem


def test_an_apply_that_creates_needs_create_too() -> None:
    """An apply of a missing object is authorized as a patch and then as a create (patch.go's withAuthorization)."""
    applied = Sent("PATCH", "/apis/apps/v1/namespaces/speech/deployments/en-us", {"fieldManager": "x"}, USER_AGENT, created=True)
    assert [a.verb for a in applied.verbs()] == ["patch", "create"]
    gateway = Sent("PATCH", f"{STT}/en-us", {}, f"{USER_AGENT} gateway", created=True)
    problems = rbac.judge([gateway], namespaces=["speech"])
    assert len(problems) == 2 and "patch speechtotexts" in problems[0] and "create speechtotexts" in problems[1]


def test_the_operator_bound_by_roles_may_not_list_cluster_wide_and_the_emulator_must_agree() -> None:
    """In the chart's namespaced mode the operator's rules are a Role in each watched namespace: listing
    namespaces (cluster-scoped) is refused; a 403 the emulator answered for it agrees; one for a request the
    Roles grant is reported (the emulator's model of Roles and the Roles differ)."""
    namespaces = Sent("GET", "/api/v1/namespaces", {}, "kopf/1.0", role_bound=True)
    assert "may not" in rbac.judge([namespaces], namespaces=["speech"])[0]
    assert rbac.judge([dataclasses.replace(namespaces, forbidden=True)], namespaces=["speech"]) == []
    assert rbac.judge([dataclasses.replace(namespaces, role_bound=False)], namespaces=["speech"]) == []
    granted = Sent("GET", STT, {}, "kopf/1.0", role_bound=True, forbidden=True)
    assert "the emulator answered 403 but" in rbac.judge([granted], namespaces=["speech"])[0]


def test_a_request_from_no_known_client_is_an_error_not_a_pass() -> None:
    with pytest.raises(LookupError, match="User-Agent 'curl/8'"):
        rbac.judge([Sent("GET", STT, {}, "curl/8")], namespaces=["speech"])
    assert rbac.judge([Sent("DELETE", STT, {}, "test-client")], namespaces=["speech"]) == []  # the test, as an admin


async def test_every_kmock_handler_is_recorded_whatever_its_class() -> None:
    """A bare kmock handler (not harness.kube's Emulator) is recorded too: its requests reach the judge, with the
    sender's User-Agent, and judged they fail (the operator may not delete collections of SpeechToTexts)."""
    conftest.unjudged()  # what earlier tests of this worker left is theirs
    handler = kmock.RawHandler()
    handler.fallback << 404  # type: ignore[operator, attr-defined]
    async with handler, kmock.Server(handler) as server:
        async with server.client.delete(STT, headers={"User-Agent": USER_AGENT}) as response:
            assert response.status == 404
    (sent,) = conftest.unjudged()
    assert (sent.method, sent.path, sent.user_agent) == ("DELETE", STT, USER_AGENT)
    (problem,) = rbac.judge([sent], namespaces=["speech"])
    assert "deletecollection speechtotexts" in problem and "missing rule" in problem


def test_grants_no_request_used_are_listed() -> None:
    """What the run's summary lists: a grant a judged request used is not; one no request used is."""
    exercised: set[tuple[str, str, str, str]] = set()
    assert rbac.judge([Sent("GET", STT, {"watch": "true"}, f"{USER_AGENT} gateway")], namespaces=["speech"], exercised=exercised) == []
    assert exercised == {("speech-gateway", "speech-operator.io", "speechtotexts", "watch")}
    left = rbac.unexercised(exercised)
    assert ("speech-operator.io", "speechtotexts", "watch") not in left["speech-gateway"]
    assert ("speech-operator.io", "speechtotexts", "list") in left["speech-gateway"]
    assert ("speech-operator.io", "speechtotexts", "watch") in left["speech-operator"]


def test_what_the_namespaced_mode_would_refuse_is_kept_apart_from_what_a_test_lived_with() -> None:
    """The CRD list the operator sends bound cluster-wide is one the chart's namespaced mode refuses; once a test
    bound by Roles saw it refused (the emulator's 403), it is no longer unproven."""
    crd = Sent("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
               {"fieldSelector": "metadata.name=speechtotexts.speech-operator.io"}, USER_AGENT)
    stt = Sent("GET", STT, {"watch": "true"}, "kopf/1.0")
    namespaced = rbac.Namespaced()
    assert rbac.judge([crd, stt], namespaces=["speech"], namespaced=namespaced) == []
    (unproven,) = namespaced.unproven()
    assert unproven[0] == "speech-operator" and unproven[1].startswith("list customresourcedefinitions")
    assert rbac.judge([dataclasses.replace(crd, role_bound=True, forbidden=True)], namespaces=["speech"], namespaced=namespaced) == []
    assert namespaced.unproven() == []


async def test_the_emulator_notes_what_rbac_needs_of_each_request() -> None:
    """harness.kube.Emulator tells the judge an apply that created its object (create is checked too), a 401 (never
    authorized: not judged), and its own 403 to a token bound by Roles (which the Roles must refuse as well)."""
    from harness.kube import Emulator, declare
    from speech_operator.kube import APPLY_PATCH

    conftest.unjudged()  # what earlier tests of this worker left is theirs
    deployment = "/apis/apps/v1/namespaces/speech/deployments/en-us"
    async with Emulator() as emulator, kmock.Server(emulator) as server:
        declare(emulator)
        emulator.expired.add("old")
        emulator.namespaced_only.add("roles")
        body = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "en-us", "namespace": "speech"}}
        for token, method, path, kwargs in [
                ("t", "PATCH", deployment, {"json": body, "headers": {"Content-Type": APPLY_PATCH}, "params": {"fieldManager": "m"}}),
                ("t", "PATCH", deployment, {"json": body, "headers": {"Content-Type": APPLY_PATCH}, "params": {"fieldManager": "m"}}),
                ("old", "GET", deployment, {}),
                ("roles", "GET", "/apis/apps/v1/deployments", {})]:
            headers = {"Authorization": f"Bearer {token}", "User-Agent": USER_AGENT, **kwargs.pop("headers", {})}
            async with server.client.request(method, path, headers=headers, **kwargs) as response:
                await response.read()
    created, patched, forbidden = conftest.unjudged()  # the 401 is left out
    assert (created.created, patched.created) == (True, False)
    assert [a.verb for a in created.verbs()] == ["patch", "create"] and [a.verb for a in patched.verbs()] == ["patch"]
    assert forbidden.role_bound and forbidden.forbidden and forbidden.path == "/apis/apps/v1/deployments"
    assert rbac.judge([created, patched, forbidden], namespaces=["speech"]) == []


# ---- OwnerReferencesPermissionEnforcement (gc_admission.go): what it asks RBAC of a write setting ownerReferences ----
DEPLOYMENTS = "/apis/apps/v1/namespaces/speech/deployments"
OWNER = {"apiVersion": "speech-operator.io/v1alpha1", "kind": "SpeechToText", "name": "en-us", "uid": "u-1",
         "controller": True, "blockOwnerDeletion": True}


def owned(*refs: dict[str, object]) -> dict[str, object]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "en-us", "namespace": "speech", "ownerReferences": list(refs)}}


def less(role: str, group: str, resource: str, verb: str) -> Identity:
    """``role`` bound cluster-wide by a copy of its rules without ``verb`` of ``resource``."""
    rules = tuple({**r, "verbs": [v for v in r["verbs"] if not (r["apiGroups"] == [group] and r["resources"] == [resource] and v == verb)]}
                  for r in rbac.cluster_role(role))
    assert rules != rbac.cluster_role(role), "the copy must lack something"
    return Identity(role, (Binding(rules, None, f"a copy less {verb} of {resource}"),))


def checked(sent: Sent) -> list[tuple[str, str, str, str, str, str]]:
    return [(a.verb, a.api_group, a.resource, a.subresource, a.name, a.namespace) for a, _ in sent.owner_checks()]


FINALIZERS = ("update", "speech-operator.io", "speechtotexts", "finalizers", "en-us", "speech")
DELETE = ("delete", "apps", "deployments", "", "en-us", "speech")


def test_a_create_with_a_blocking_owner_reference_needs_update_of_the_owners_finalizers() -> None:
    """A create (POST, or an apply that creates) needs no delete of its object, but each blocking ownerReference
    needs ``update`` of the owner's ``finalizers``, which deploy/base/rbac.yaml grants the operator; judged with
    a copy lacking it, the request is refused with the plugin's words and the rule it lacks."""
    for sent in [Sent("POST", DEPLOYMENTS, {}, USER_AGENT, body=owned(OWNER)),
                 Sent("PATCH", f"{DEPLOYMENTS}/en-us", {"fieldManager": "m"}, USER_AGENT, created=True, body=owned(OWNER))]:
        assert checked(sent) == [FINALIZERS]
        assert [why for _, why in sent.owner_checks()] == [rbac.CANNOT_BLOCK]
        assert rbac.judge([sent], namespaces=["speech"]) == []
        without = less("speech-operator", "speech-operator.io", "speechtotexts/finalizers", "update")
        (problem,) = rbac.judge([sent], namespaces=["speech"], extra={USER_AGENT: without})
        assert (f"OwnerReferencesPermissionEnforcement: {rbac.CANNOT_BLOCK}: update speechtotexts/finalizers"
                " (apiGroup 'speech-operator.io') named en-us in namespace speech, which speech-operator may not") in problem
        assert problem.endswith("missing rule: {'apiGroups': ['speech-operator.io'], 'resources': "
                                "['speechtotexts/finalizers'], 'verbs': ['update']}")
    assert checked(Sent("POST", DEPLOYMENTS, {}, USER_AGENT, body=owned())) == []  # no ownerReferences: not changing


def test_an_update_is_judged_by_what_it_changes_of_the_owner_references_the_object_had() -> None:
    """isChangingOwnerReference and newBlockingOwnerDeletionRefs: the same references as before ask nothing;
    changed ones need delete of the object; a reference blocking now that was not (or is new) needs the finalizers
    too. When no one noted the object's references before (a plain kmock handler), every one counts as new."""
    apply = Sent("PATCH", f"{DEPLOYMENTS}/en-us", {"fieldManager": "m"}, USER_AGENT, body=owned(OWNER))
    assert checked(dataclasses.replace(apply, owners_before=(OWNER,))) == []
    assert checked(dataclasses.replace(apply, owners_before=())) == [DELETE, FINALIZERS]
    assert checked(dataclasses.replace(apply, owners_before=({**OWNER, "blockOwnerDeletion": False},))) == [DELETE, FINALIZERS]
    assert checked(dataclasses.replace(apply, owners_before=({**OWNER, "uid": "u-0"},))) == [DELETE, FINALIZERS]  # another uid: new
    unblocked = dataclasses.replace(apply, body=owned({**OWNER, "controller": False}), owners_before=(OWNER,))
    assert checked(unblocked) == [DELETE]  # changed, but blocking before too
    assert checked(dataclasses.replace(apply, body=owned(), owners_before=(OWNER,))) == [DELETE]  # removed
    assert checked(apply) == [DELETE, FINALIZERS]  # before not known
    assert [why for _, why in apply.owner_checks()] == [rbac.CANNOT_DELETE, rbac.CANNOT_BLOCK]
    without = less("speech-operator", "apps", "deployments", "delete")
    (problem,) = rbac.judge([unblocked], namespaces=["speech"], extra={USER_AGENT: without})
    assert f"{rbac.CANNOT_DELETE}: delete deployments (apiGroup 'apps') named en-us in namespace speech" in problem
    assert problem.endswith("missing rule: {'apiGroups': ['apps'], 'resources': ['deployments'], 'verbs': ['delete']}")


def test_what_the_plugin_leaves_alone() -> None:
    """Bodies that set no ownerReferences, reads and deletes, pods/status (the plugin's whiteList; pods are not) and
    a request the emulator forbade (never admitted) ask nothing of it."""
    pod = "/api/v1/namespaces/speech/pods/p"
    assert checked(Sent("PATCH", f"{DEPLOYMENTS}/en-us", {}, USER_AGENT, body={"metadata": {"labels": {"a": "b"}}})) == []
    assert checked(Sent("PATCH", f"{DEPLOYMENTS}/en-us", {}, USER_AGENT, body=[{"op": "add", "path": "/x"}])) == []
    assert checked(Sent("DELETE", f"{DEPLOYMENTS}/en-us", {}, USER_AGENT, body=owned(OWNER))) == []
    assert checked(Sent("PATCH", f"{pod}/status", {}, USER_AGENT, body=owned(OWNER))) == []
    assert checked(Sent("PATCH", pod, {}, USER_AGENT, body=owned(OWNER)))[1] == FINALIZERS
    assert checked(Sent("POST", DEPLOYMENTS, {}, USER_AGENT, body=owned(OWNER), forbidden=True)) == []


def test_an_owner_kind_no_crd_declares_is_an_error_not_a_pass() -> None:
    """The owner's resource comes from the CRDs of crds/ (the cluster's REST mapper): a blocking reference to a
    kind or version they do not serve raises, naming it; a cluster-scoped owner is checked cluster-wide."""
    with pytest.raises(LookupError, match="Deployment of apps/v1"):
        Sent("POST", DEPLOYMENTS, {}, USER_AGENT, body=owned({**OWNER, "apiVersion": "apps/v1", "kind": "Deployment"})).owner_checks()
    with pytest.raises(LookupError, match="SpeechToText of speech-operator.io/v1beta1"):
        Sent("POST", DEPLOYMENTS, {}, USER_AGENT, body=owned({**OWNER, "apiVersion": "speech-operator.io/v1beta1"})).owner_checks()
    not_blocking = {**OWNER, "apiVersion": "apps/v1", "kind": "Deployment", "blockOwnerDeletion": False}
    assert checked(Sent("POST", DEPLOYMENTS, {}, USER_AGENT, body=owned(not_blocking))) == []  # only blocking ones are mapped
    peering = {**OWNER, "apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "name": "p"}
    assert checked(Sent("POST", DEPLOYMENTS, {}, USER_AGENT, body=owned(peering))) == [
        ("update", "kopf.dev", "clusterkopfpeerings", "finalizers", "p", "")]


async def test_the_emulator_notes_the_owner_references_an_update_found() -> None:
    """harness.kube.Emulator notes what an update found (Emulator.owners_before) and tests/conftest.py passes it
    and the body as sent to the judge: an apply that creates asks for the finalizers, the same apply again
    nothing, one that makes the reference blocking the delete and the finalizers."""
    from harness.kube import Emulator, declare
    from speech_operator.kube import APPLY_PATCH

    conftest.unjudged()  # what earlier tests of this worker left is theirs
    headers = {"Authorization": "Bearer t", "User-Agent": USER_AGENT, "Content-Type": APPLY_PATCH}
    async with Emulator() as emulator, kmock.Server(emulator) as server:
        declare(emulator)
        for body in [owned({**OWNER, "blockOwnerDeletion": False}), owned({**OWNER, "blockOwnerDeletion": False}), owned(OWNER)]:
            async with server.client.patch(f"{DEPLOYMENTS}/en-us", json=body, headers=headers, params={"fieldManager": "m"}) as response:
                assert response.status == 200, await response.text()
    created, same, blocking = conftest.unjudged()
    assert (created.created, created.owners_before, same.owners_before) == (True, None, ({**OWNER, "blockOwnerDeletion": False},))
    assert (checked(created), checked(same), checked(blocking)) == ([], [], [DELETE, FINALIZERS])
    assert blocking.body == owned(OWNER)
    assert rbac.judge([created, same, blocking], namespaces=["speech"]) == []
