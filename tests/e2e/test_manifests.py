"""What the suite installs, rendered by the real helm with the suite's own values, and what it
creates itself, validated as the API server would; its label selectors agree with what the chart
and the operator put on the pods."""

from __future__ import annotations

import pytest
import yaml

from speech_operator import api, builders
from speech_operator.config import OperatorConfig
from tests.ship.conftest import load_docs, run, validate_manifests
from tests.ship.tools import helm as fetch_helm

from . import manifests as m

pytestmark = pytest.mark.unit  # no model, server, operator or browser: the quick run (README, Tests)

RUN = m.Run("abc123")
IMAGES = m.Images(operator="registry.test:5000/team/speech-operator:e2e-0123456789ab",
                  recognizer="registry.test:5000/team/speech-recognizer:e2e-ba9876543210")


def labels_match(selector: str, labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in (t.split("=", 1) for t in selector.split(",")))


@pytest.fixture(scope="module", params=[3, 4], ids=["helm3", "helm4"])
def rendered(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    values = tmp_path_factory.mktemp("values") / "values.yaml"
    values.write_text(yaml.safe_dump(m.chart_values(RUN, IMAGES)))
    out = run([fetch_helm(request.param), "template", RUN.release, m.CHART, "--namespace", RUN.namespace,
               "--values", values, "--include-crds"]).stdout
    return load_docs(out)


def test_the_install_is_valid_and_stays_in_the_runs_namespace(rendered: list[dict]) -> None:
    """Nothing cluster-wide but the CRDs, and those are exactly the ones the suite removes when it
    installed them: a run leaves nothing behind once its namespace and those CRDs are gone."""
    validate_manifests(rendered)
    cluster_wide = [d for d in rendered if "namespace" not in d["metadata"]]
    assert sorted(d["kind"] for d in cluster_wide) == ["CustomResourceDefinition"] * len(m.chart_crds())
    assert sorted(d["metadata"]["name"] for d in cluster_wide) == sorted(m.chart_crds())
    assert {d["metadata"]["namespace"] for d in rendered if d not in cluster_wide} == {RUN.namespace}


def test_the_operator_runs_the_runs_images_never_pulled_when_present_and_watches_only_its_namespace(rendered: list[dict]) -> None:
    (deployment,) = [d for d in rendered if d["kind"] == "Deployment" and not d["metadata"]["name"].endswith("-gateway")]
    template = deployment["spec"]["template"]
    (container,) = template["spec"]["containers"]
    assert container["image"] == IMAGES.operator and container["imagePullPolicy"] == "IfNotPresent"
    assert f"--namespace={RUN.namespace}" in container["args"] and "--all-namespaces" not in container["args"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert f"{env['SPEECH_OPERATOR_IMAGE']}:{env['SPEECH_OPERATOR_VERSION']}" == IMAGES.recognizer
    assert labels_match(RUN.operator_selector, template["metadata"]["labels"])


def test_what_the_suite_creates_is_valid() -> None:
    validate_manifests([m.namespace(RUN), m.api_key_secret(RUN, "k" * 32),
                        m.speech_to_text(RUN, m.PLAIN), m.speech_to_text(RUN, m.KEYED, keyed=True)])


@pytest.mark.parametrize("name", [m.PLAIN, m.KEYED])
def test_the_suites_selectors_find_what_the_operator_makes(name: str) -> None:
    stt = api.SpeechToText.model_validate(m.speech_to_text(RUN, name, keyed=name == m.KEYED)
                                          | {"metadata": {"name": name, "namespace": RUN.namespace, "uid": "u"}})
    repo, tag = m.Images.split(IMAGES.recognizer)
    children = builders.children(stt, OperatorConfig(image=repo, version=tag))
    for child in children:
        assert labels_match(m.owned_selector(name), child["metadata"]["labels"]), child["kind"]
    pod = children[0]["spec"]["template"]
    assert labels_match(m.recognizer_selector(name), pod["metadata"]["labels"])
    assert {(c["image"], c["imagePullPolicy"]) for c in pod["spec"].get("initContainers", []) + pod["spec"]["containers"]} \
        == {(IMAGES.recognizer, "IfNotPresent")}


def test_the_suite_finds_the_gateway_the_chart_installs(rendered: list[dict]) -> None:
    """The Service the gateway checks port-forward to, and the selector of its pods."""
    (service,) = [d for d in rendered if d["kind"] == "Service" and d["metadata"]["name"] == RUN.gateway]
    assert [p["port"] for p in service["spec"]["ports"]] == [5000]
    (deployment,) = [d for d in rendered if d["kind"] == "Deployment" and d["metadata"]["name"] == RUN.gateway]
    template = deployment["spec"]["template"]
    assert labels_match(RUN.gateway_selector, template["metadata"]["labels"])
    assert service["spec"]["selector"].items() <= template["metadata"]["labels"].items()
    (container,) = template["spec"]["containers"]
    assert container["args"] == ["gateway", f"--namespace={RUN.namespace}"], "it routes the run's SpeechToTexts"
