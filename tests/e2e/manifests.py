"""What the end-to-end suite creates in a cluster, as pure data: one place for every name.

A run is named by a short random id; everything it creates carries that id, so two runs
(or a run and a real install) never share an object, and clean-up knows what is its own.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from speech_operator import api, builders

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "speech-operator"
LOCALE = "ko-KR"
#: Label on the namespace of a run, so a run left behind (``--keep``, a killed run) can be found.
RUN_LABEL = "speech-operator.io/e2e-run"

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Images:
    """The two images, as the cluster's nodes know them."""

    operator: str
    recognizer: str

    @staticmethod
    def split(ref: str) -> tuple[str, str]:
        """``repo[:tag]`` -> (repo, tag); a port in the registry host is not a tag."""
        repo, sep, tag = ref.rpartition(":")
        if not sep or "/" in tag:
            return ref, "latest"
        return repo, tag


@dataclass(frozen=True)
class Run:
    """The names of one run's objects."""

    id: str

    @classmethod
    def new(cls) -> Run:
        return cls(secrets.token_hex(3))

    @property
    def namespace(self) -> str:
        """The release, its operator and the run's SpeechToTexts live here, and nowhere else."""
        return f"speech-e2e-{self.id}"

    @property
    def release(self) -> str:
        return f"e2e-{self.id}"

    @property
    def operator_selector(self) -> str:
        """Label selector of the operator's pods (the chart's selector labels)."""
        return f"app.kubernetes.io/instance={self.release},app.kubernetes.io/component=operator"

    @property
    def gateway(self) -> str:
        """The gateway's Service (and Deployment): the chart's ``<fullname>-gateway``."""
        return f"{self.release}-{CHART.name}"[:55].rstrip("-") + "-gateway"

    @property
    def gateway_selector(self) -> str:
        """Label selector of the gateway's pods (the chart's gateway selector labels)."""
        return f"app.kubernetes.io/name=speech-gateway,app.kubernetes.io/instance={self.release}"


#: The two SpeechToTexts of day one: without an API key, and with one from a Secret.
PLAIN = "plain"
KEYED = "keyed"
KEY_SECRET = "e2e-api-key"
KEY_FIELD = "apiKey"
BILLING = "https://example.invalid/"


#: The run's namespace enforces the restricted Pod Security Standard, as deploy/base's does: the chart's pods (the
#: operator, the gateway) and the recognizers' must meet it, or the API server refuses them.
POD_SECURITY = {"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/warn": "restricted"}


def namespace(run: Run) -> Manifest:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": run.namespace, "labels": {RUN_LABEL: run.id, **POD_SECURITY}}}


def api_key_secret(run: Run, key: str) -> Manifest:
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": KEY_SECRET, "namespace": run.namespace},
            "stringData": {KEY_FIELD: key}}


#: A SpeechToText that keeps its output on a PersistentVolumeClaim of the cluster's default StorageClass.
ON_A_CLAIM = "claimed"
OUTPUT_CLAIM = "e2e-output"


def output_claim(run: Run) -> Manifest:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": OUTPUT_CLAIM, "namespace": run.namespace},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "64Mi"}}}}


def speech_to_text(run: Run, name: str, *, keyed: bool = False, replicas: int = 1, output_claim: str | None = None) -> Manifest:
    """A SpeechToText as a user writes it on day one: a locale, the EULA, replicas (and a key, or an output PVC)."""
    spec: Manifest = {"locale": LOCALE, "eula": "accept", "replicas": replicas}
    if keyed:
        spec["billing"] = BILLING
        spec["apiKeySecretRef"] = {"name": KEY_SECRET, "key": KEY_FIELD}
    if output_claim:
        spec["output"] = {"persistentVolumeClaim": {"claimName": output_claim}}
    return {"apiVersion": api.API_VERSION, "kind": api.KIND,
            "metadata": {"name": name, "namespace": run.namespace}, "spec": spec}


def recognizer_selector(name: str) -> str:
    """Label selector of one SpeechToText's pods (what the operator puts on them)."""
    return ",".join(f"{k}={v}" for k, v in {builders.LABEL_NAME: builders.APP_NAME, builders.LABEL_INSTANCE: name}.items())


def owned_selector(name: str) -> str:
    """Label selector of every child the operator makes for one SpeechToText."""
    return f"{builders.LABEL_OWNER}={name}"


def chart_values(run: Run, images: Images) -> Manifest:
    """Helm values of the run's install: its images, never pulled when the node has them, and an
    operator that watches only the run's namespace (a real install elsewhere is left alone)."""
    op_repo, op_tag = Images.split(images.operator)
    rec_repo, rec_tag = Images.split(images.recognizer)
    return {
        "image": {"repository": op_repo, "tag": op_tag, "pullPolicy": "IfNotPresent"},
        "recognizerImage": {"repository": rec_repo, "tag": rec_tag},
        "watch": {"mode": "namespaced", "namespaces": [run.namespace]},
    }


def chart_crds(chart: Path = CHART) -> list[str]:
    """Names of the CRDs the chart installs (its crds/ folder)."""
    names = []
    for path in sorted((chart / "crds").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                names.append(doc["metadata"]["name"])
    return names
