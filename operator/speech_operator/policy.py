"""Operator-level policy: what a SpeechToText may ask of a node, beyond what its author may do.

Whoever may create a SpeechToText must not become root on a node through it. Its pods run
``spec.image`` with the API-key Secret it names in their environment, and mount the
hostPaths it names; so the operator only runs images from the repositories it allows
(default: its own recognizer repository) and only mounts hostPaths under the prefixes it
allows (default: none). The CRD refuses system paths outright (CEL, in :mod:`api`); this
is the site's own, narrower list. Nor may a team's SpeechToText outrank other teams' pods:
it gets only a PriorityClass the operator allows (default: none, the cluster's default class),
as a class high enough would let its pods preempt anyone's. Pure functions: :func:`violations` says why a spec is
refused, the reconcile loop reports it and creates or changes nothing.
"""

from __future__ import annotations

import posixpath

from speech_operator import api, builders
from speech_operator.config import OperatorConfig

IMAGES_ENV = "SPEECH_OPERATOR_ALLOWED_IMAGES"
HOST_PATHS_ENV = "SPEECH_OPERATOR_ALLOWED_HOST_PATHS"
PRIORITY_CLASSES_ENV = "SPEECH_OPERATOR_ALLOWED_PRIORITY_CLASSES"


def image_allowed(repository: str, allowed: tuple[str, ...]) -> bool:
    """``repository`` is one of ``allowed``, or under an entry that ends with ``/`` (``registry.example/speech/``)."""
    return any(repository == entry or (entry.endswith("/") and repository.startswith(entry)) for entry in allowed)


def host_path_allowed(path: str, allowed: tuple[str, ...]) -> bool:
    """``path`` is an allowed prefix or below one, compared by whole path segments after normalising."""
    if not path.startswith("/") or ".." in path.split("/"):
        return False
    path = _normal(path)
    for prefix in allowed:
        prefix = _normal(prefix)
        if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
            return True
    return False


def _normal(path: str) -> str:
    """``//srv//a/`` -> ``/srv/a`` (normpath keeps a leading ``//``)."""
    return posixpath.normpath("/" + path.lstrip("/"))


def violations(spec: api.SpeechToTextSpec, config: OperatorConfig) -> list[str]:
    """Why the operator refuses to run ``spec``, one sentence each; empty when it may run."""
    found: list[str] = []
    repository = spec.image or config.image
    allowed_images = config.allowed_image_repositories
    if not image_allowed(repository, allowed_images):
        found.append(f'image "{repository}" is not an allowed repository (allowed: {", ".join(allowed_images)}; '
                     f"the operator's {IMAGES_ENV})")
    for name, source in builders.mounted_volumes(spec).items():
        if source.hostPath is not None and not host_path_allowed(source.hostPath.path, config.allowed_host_paths):
            allowed = ", ".join(config.allowed_host_paths) or "none"
            found.append(f'{name} hostPath "{source.hostPath.path}" is not under an allowed prefix (allowed: {allowed}; '
                         f"the operator's {HOST_PATHS_ENV})")
    if spec.priorityClassName and spec.priorityClassName not in config.allowed_priority_classes:
        allowed = ", ".join(config.allowed_priority_classes) or "none"
        found.append(f'priorityClassName "{spec.priorityClassName}" is not an allowed priority class (allowed: {allowed}; '
                     f"the operator's {PRIORITY_CLASSES_ENV})")
    return found
