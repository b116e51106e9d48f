"""Check objects the way the API server would: defaults, then the structural schema, then CEL (tests/crd_schema.py)."""

from __future__ import annotations

from typing import Any

from speech_operator import crd
from tests.crd_schema import CRD_PATH, ROOT, cel_failures, crd_schema, problems, with_defaults

__all__ = ["CRD_PATH", "ROOT", "cel_failures", "crd_schema", "generated", "older", "problems", "schema", "with_defaults"]


# ---- the CRD as an older operator made it (tests/operator/test_crd_check.py, test_crd_watch.py) ----
def generated() -> dict[str, Any]:
    """This operator's CRD, as it generates it."""
    return crd.custom_resource_definition()


def schema(definition: dict[str, Any]) -> dict[str, Any]:
    return definition["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def older() -> dict[str, Any]:
    """This operator's CRD before spec.model.caBundle, status.autoscaling, the name rule, the Reason column
    and the scale subresource: what a cluster keeps when the CRDs were not applied before an upgrade."""
    old = generated()
    fields = schema(old)["properties"]
    del fields["spec"]["properties"]["model"]["properties"]["caBundle"]
    del fields["status"]["properties"]["autoscaling"]
    del schema(old)["x-kubernetes-validations"]
    fields["spec"]["properties"]["replicas"].pop("minimum")
    version = old["spec"]["versions"][0]
    version["additionalPrinterColumns"] = version["additionalPrinterColumns"][:-1]
    del version["subresources"]["scale"]
    return old
