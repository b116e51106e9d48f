"""The pure comparison of the installed SpeechToText CRD with this operator's (speech_operator.crd_check)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from stt_schema import generated, older, schema

from speech_operator import api, conditions, crd_check
from speech_operator.crd_check import Findings

pytestmark = pytest.mark.unit  # no model, server, operator or browser: the quick run (README, Tests)


def served(definition: dict[str, Any]) -> dict[str, Any]:
    """``definition`` as the API server returns it: its own metadata, defaults and status added."""
    out = copy.deepcopy(definition)
    out["metadata"].update(uid="0b6f", resourceVersion="812", generation=3, creationTimestamp="2026-01-01T00:00:00Z")
    out["spec"]["conversion"] = {"strategy": "None"}
    out["status"] = {"acceptedNames": out["spec"]["names"], "storedVersions": ["v1alpha1"], "conditions": []}
    return out


def test_the_same_crd_finds_nothing() -> None:
    assert crd_check.compare(served(generated()), generated()) == Findings()
    assert crd_check.problem(Findings()) is None
    warn, line = crd_check.report(Findings())
    assert not warn and line.endswith("matches this operator's (0.1.0)")


def test_an_older_crd_lacks_the_paths_deleted_from_this_operators() -> None:
    found = crd_check.compare(served(older()), generated())
    assert found.missing == ("spec.model.caBundle", "status.autoscaling", "subresource scale")
    assert found.extra == ()
    assert found.differs == ("SpeechToText (x-kubernetes-validations)", "spec.replicas (minimum)", "printer columns")
    message = crd_check.problem(found)
    assert message is not None and "is older than this operator (0.1.0)" in message
    assert "lacks spec.model.caBundle, status.autoscaling, subresource scale, which the API server drops" in message
    assert "kubectl apply --server-side --force-conflicts -f crds/" in message and "CRDs: install and upgrade" in message
    warn, line = crd_check.report(found)
    assert warn and line.startswith(message) and "validates otherwise: SpeechToText (x-kubernetes-validations)" in line


def test_a_newer_crd_has_paths_this_operator_lacks_and_is_no_problem() -> None:
    found = crd_check.compare(generated(), older())
    assert found.missing == () and found.extra == ("spec.model.caBundle", "status.autoscaling", "subresource scale")
    assert crd_check.problem(found) is None
    warn, line = crd_check.report(found)
    assert not warn and "is newer than this operator" in line and "spec.model.caBundle" in line


def test_fields_under_a_node_that_keeps_unknown_fields_are_not_dropped() -> None:
    """An older CRD that kept spec.model free-form prunes nothing below it: not missing, but validated otherwise."""
    old = generated()
    schema(old)["properties"]["spec"]["properties"]["model"] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    found = crd_check.compare(old, generated())
    assert found.missing == ()
    assert len(found.differs) == 1 and found.differs[0].startswith("spec.model (")
    warn, line = crd_check.report(found)
    assert warn and "differs from this operator's" in line and "kubectl apply --server-side --force-conflicts -f crds/" in line


def test_list_items_and_map_values_are_walked() -> None:
    old = generated()
    fields = schema(old)["properties"]
    del fields["status"]["properties"]["conditions"]["items"]["properties"]["observedGeneration"]
    fields["spec"]["properties"]["settings"]["additionalProperties"].pop("maxLength")
    found = crd_check.compare(old, generated())
    assert found.missing == ("status.conditions[].observedGeneration",)
    assert found.differs == ("spec.settings{} (maxLength)",)


def test_another_version_is_missing_and_extra() -> None:
    old = generated()
    old["spec"]["versions"][0]["name"] = "v1alpha0"
    found = crd_check.compare(old, generated())
    assert found.missing == ("version v1alpha1",) and found.extra == ("version v1alpha0",)
    old["spec"]["versions"][0].update(name="v1alpha1", served=False)
    assert crd_check.compare(old, generated()).missing == ("version v1alpha1 (not served)",)


def test_long_lists_are_cut_in_the_message() -> None:
    found = Findings(missing=tuple(f"spec.f{i}" for i in range(20)))
    message = crd_check.problem(found) or ""
    assert f"spec.f{crd_check.SHOWN - 1}, " not in message and "and 12 more" in message


STT = api.SpeechToText.model_validate({
    "metadata": {"name": "en-us", "namespace": "speech", "uid": "u", "generation": 3},
    "spec": {"locale": "en-US", "eula": "accept", "replicas": 1}})
READY = {"status": {"replicas": 1, "readyReplicas": 1, "updatedReplicas": 1}}


def by_type(status: api.SpeechToTextStatus) -> dict[str, api.Condition]:
    return {c.type: c for c in status.conditions}


def test_an_outdated_crd_is_degraded_and_still_ready_and_needs_no_recheck() -> None:
    """Degraded with reason CRDOutdated (a reason, as an older CRD's enum of condition types would refuse a new
    type); the pods still serve; and the Degraded re-check leaves it to the CRD watch."""
    problem = crd_check.problem(crd_check.compare(older(), generated()))
    c = by_type(conditions.observe(STT, READY, [], "t", outdated_crd=problem))
    assert (c["Degraded"].status, c["Degraded"].reason, c["Degraded"].message) == ("True", "CRDOutdated", problem)
    assert (c["Ready"].status, c["Ready"].reason) == ("True", "ReplicasReady")
    status = conditions.observe(STT, READY, [], "t", outdated_crd=problem).model_dump(mode="json")
    assert not conditions.needs_recheck(status)
    assert set(schema(older())["properties"]["status"]["properties"]["conditions"]["items"]["properties"]["type"]["enum"]) \
        == {"Ready", "Progressing", "Degraded"}

    missing = by_type(conditions.observe(STT, READY, ['Secret "k"'], "t", outdated_crd=problem))
    assert missing["Degraded"].reason == "MissingDependency"
    assert missing["Degraded"].message == f'Secret "k" not found; also, {problem}'
    assert conditions.needs_recheck({"conditions": [missing["Degraded"].model_dump(mode="json")]})
    invalid = by_type(conditions.invalid({"metadata": {"generation": 3}}, "spec.settings: bad", "t", problem))
    assert invalid["Degraded"].message == f"spec.settings: bad; also, {problem}" and invalid["Ready"].message == "spec.settings: bad"
    assert by_type(conditions.observe(STT, READY, [], "t"))["Degraded"].reason == "AsExpected"


def test_the_chart_readme_quotes_the_warning_as_the_operator_writes_it() -> None:
    """The chart README's sample WARNING ends with the fix the operator gives (before, it still said `kubectl apply
    --server-side -f crds/` once the fix had changed)."""
    readme = (Path(__file__).parents[2] / "charts/speech-operator/README.md").read_text()
    (line,) = [x for x in readme.splitlines() if "[WARNING ]" in x and "CustomResourceDefinition" in x]
    assert line.endswith("; " + crd_check.FIX)
