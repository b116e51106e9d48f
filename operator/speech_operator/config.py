"""Operator-wide settings, read once from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass

from speech_operator import __version__

DEFAULT_IMAGE = "ghcr.io/speech-operator/speech-recognizer"


@dataclass(frozen=True)
class OperatorConfig:
    """Defaults the operator fills into every SpeechToText, and its own timings."""

    image: str = DEFAULT_IMAGE
    """Recognizer image repository used when ``spec.image`` is unset."""
    version: str = __version__
    """Recognizer image tag used when ``spec.version`` is unset."""
    recheck_seconds: float = 30.0
    """How often a Degraded SpeechToText looks again for its missing Secret or PVC."""

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> OperatorConfig:
        """Read ``SPEECH_OPERATOR_IMAGE``, ``SPEECH_OPERATOR_VERSION``, ``SPEECH_OPERATOR_RECHECK_SECONDS``."""
        env = dict(os.environ if env is None else env)
        return cls(
            image=env.get("SPEECH_OPERATOR_IMAGE") or cls.image,
            version=env.get("SPEECH_OPERATOR_VERSION") or cls.version,
            recheck_seconds=float(env.get("SPEECH_OPERATOR_RECHECK_SECONDS") or cls.recheck_seconds),
        )
