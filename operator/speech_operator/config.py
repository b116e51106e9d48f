"""Operator-wide settings, read once from the environment."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from speech_operator import __version__

DEFAULT_IMAGE = "ghcr.io/speech-operator/speech-recognizer"
#: ``SPEECH_OPERATOR_POD_IDENTITY``: ``fixed``, the recognizer pods run as uid/gid and fsGroup 65532 (with the
#: chown step for ``spec.chownVolumes``); ``platform``, they set no runAsUser, runAsGroup or fsGroup and the platform
#: assigns them (OpenShift's restricted-v2 SCC: a uid and fsGroup from the namespace's range, gid 0), with no chown step.
POD_IDENTITY_ENV = "SPEECH_OPERATOR_POD_IDENTITY"
POD_IDENTITIES = ("fixed", "platform")
#: A variable the kubelet made of a Service NAME of the pod's namespace (Docker's links): ``NAME_PORT`` and
#: ``NAME_PORT_<port>_<PROTO>``, each ``tcp://<cluster IP>:<port>``.
_SERVICE_LINK_NAME = re.compile(r"(?P<service>.+)_PORT(_[0-9]+_[A-Z]+)?")
_SERVICE_LINK_VALUE = re.compile(r"(tcp|udp|sctp)://[^\s/]+:[0-9]+")


@dataclass(frozen=True)
class OperatorConfig:
    """Defaults the operator fills into every SpeechToText, and its own timings."""

    image: str = DEFAULT_IMAGE
    """Recognizer image repository used when ``spec.image`` is unset."""
    version: str = __version__
    """Recognizer image tag used when ``spec.version`` is unset."""
    recheck_seconds: float = 30.0
    """How often a Degraded SpeechToText looks again for its missing Secret or PVC."""
    allowed_images: tuple[str, ...] = ()
    """Image repositories pods may run (an entry ending in ``/``: any repository under it); empty: ``image`` only."""
    allowed_host_paths: tuple[str, ...] = ()
    """Node directories pods may mount as hostPath (and below them); empty: none."""
    allowed_priority_classes: tuple[str, ...] = ()
    """PriorityClasses pods may ask for (``spec.priorityClassName``); empty: none."""
    autoscale_seconds: float = 5.0
    """How often the autoscaler asks the pods of a SpeechToText with spec.autoscaling for their sessions."""
    demand_seconds: float = 120.0
    """How long a request the gateway asked for (status.demand) keeps at least one pod wanted."""
    relist_settle_seconds: float = 2.0
    """How long after the last object kopf passed from a listing it made again (a watch that could not go on: 410 Gone)
    that listing is taken as over, and what it lacked looked for: kopf says no more of it than of its first. Longer:
    a child deleted while the watch was away is made again later; shorter than the gaps between a listing's objects
    reaching the operator (a loaded operator, a large listing): its SpeechToTexts not passed yet are read again."""
    pod_identity: str = "fixed"
    """Who picks the recognizer pods' uid, gid and fsGroup: ``fixed`` (65532) or ``platform`` (see :data:`POD_IDENTITY_ENV`)."""

    @property
    def platform_identity(self) -> bool:
        """The platform assigns the pods' uid, gid and fsGroup (nothing may run as root, nothing asks for an id)."""
        return self.pod_identity == "platform"

    @property
    def allowed_image_repositories(self) -> tuple[str, ...]:
        return self.allowed_images or (self.image,)

    @property
    def trusted_image(self) -> str:
        """The operator's own recognizer image, which runs the steps that need root (the chown step)."""
        return f"{self.image}:{self.version}"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> OperatorConfig:
        """Read ``SPEECH_OPERATOR_IMAGE``, ``_VERSION``, ``_RECHECK_SECONDS``, ``_ALLOWED_IMAGES`` and
        ``_ALLOWED_HOST_PATHS``, ``_ALLOWED_PRIORITY_CLASSES`` (lists: comma- or space-separated), ``_AUTOSCALE_SECONDS``, ``_DEMAND_SECONDS``,
        ``_RELIST_SETTLE_SECONDS``, ``_POD_IDENTITY``; :class:`ValueError` naming the variable for a number that is none or out of bounds, or a
        pod identity that is neither ``fixed`` nor ``platform``."""
        env = dict(os.environ if env is None else env)
        return cls(
            image=env.get("SPEECH_OPERATOR_IMAGE") or cls.image,
            version=env.get("SPEECH_OPERATOR_VERSION") or cls.version,
            recheck_seconds=env_number(env, "SPEECH_OPERATOR_RECHECK_SECONDS", float, cls.recheck_seconds, 0.001),
            allowed_images=_list(env.get("SPEECH_OPERATOR_ALLOWED_IMAGES")),
            allowed_host_paths=_list(env.get("SPEECH_OPERATOR_ALLOWED_HOST_PATHS")),
            allowed_priority_classes=_list(env.get("SPEECH_OPERATOR_ALLOWED_PRIORITY_CLASSES")),
            autoscale_seconds=env_number(env, "SPEECH_OPERATOR_AUTOSCALE_SECONDS", float, cls.autoscale_seconds, 0.001),
            demand_seconds=env_number(env, "SPEECH_OPERATOR_DEMAND_SECONDS", float, cls.demand_seconds, 0),
            relist_settle_seconds=env_number(env, "SPEECH_OPERATOR_RELIST_SETTLE_SECONDS", float,
                                             cls.relist_settle_seconds, 0.001),
            pod_identity=env_choice(env, POD_IDENTITY_ENV, POD_IDENTITIES, cls.pod_identity),
        )


def env_number(env: Mapping[str, str], name: str, kind: type[int] | type[float], default: float, minimum: float) -> Any:
    """The number in the variable ``name`` (``default`` when unset or empty). Raises :class:`ValueError`
    naming the variable for a value that is no number, not finite, or under ``minimum``: one line for the
    command to print, not a traceback (nor a zero that would spin a loop)."""
    text = (env.get(name) or "").strip()
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is not {'a whole number' if kind is int else 'a number'}{_service_link(name, text)}") from None
    if not math.isfinite(value):  # inf, nan: float() takes them
        raise ValueError(f"{name}={text!r} is not a finite number")
    if value < minimum:
        raise ValueError(f"{name}={text!r} must be at least {minimum:g}")
    return value


def _service_link(name: str, text: str) -> str:
    """What to say of a value that looks like a kubelet's service link (a Service's name made the variable ours)."""
    found = _SERVICE_LINK_NAME.fullmatch(name)
    if found is None or _SERVICE_LINK_VALUE.fullmatch(text) is None:
        return ""
    service = found["service"].lower().replace("_", "-")
    return (f": it looks like the service link of a Service named {service}, which the kubelet puts in every pod of its "
            "namespace: set enableServiceLinks: false in the pod spec, or rename the Service")


def env_choice(env: Mapping[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    """The word in the variable ``name`` (``default`` when unset or empty; any case); :class:`ValueError` naming the
    variable and the choices for another."""
    text = (env.get(name) or "").strip()
    if not text:
        return default
    if text.lower() not in choices:
        raise ValueError(f"{name}={text!r} is not one of {', '.join(choices)}")
    return text.lower()


def _list(value: str | None) -> tuple[str, ...]:
    return tuple(item for item in (value or "").replace(",", " ").split() if item)
