"""Azure-style settings, parsed in one place.

Settings come as ``Key=Value`` command-line arguments (``Eula=accept``,
``Mounts:License=/license``) or as environment variables with ``__`` for ``:``
(``Mounts__License=/license``). Keys are case-insensitive; arguments win over
the environment. Every known key is declared once in :data:`KNOWN`.
"""

from __future__ import annotations

import difflib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping

from . import contract as c


class SettingsError(ValueError):
    """A setting is missing or malformed; the message is one line for the user."""


@dataclass(frozen=True)
class Setting:
    """One documented setting."""

    key: str
    help: str
    default: str | None = None
    aliases: tuple[str, ...] = ()


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """The container's CPU limit in whole CPUs (rounded up), or None when there is none.

    Reads cgroup v2 ``cpu.max`` ("200000 100000" = 2 CPUs, "max 100000" = none) or
    cgroup v1 ``cpu/cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (quota -1 = none).
    """
    try:
        quota_s, period_s = (root / "cpu.max").read_text().split()[:2]
        if quota_s == "max":
            return None
        quota, period = int(quota_s), int(period_s)
    except (OSError, ValueError):
        try:
            quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
            period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            return None
    if quota <= 0 or period <= 0:
        return None
    return max(1, math.ceil(quota / period))


def cpu_count() -> int:
    """CPUs this process may use: its CPU affinity, capped by the container's CPU limit.

    In a pod with ``limits.cpu: 2`` on a 64-core node this is 2, not 64, so that the
    defaults that scale with it (``DecoderMaxCount``, the warm-up) fit the pod.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    return min(cpus, limit) if limit else cpus


#: Drain:Seconds: default and bounds (the operator passes spec.drainSeconds).
DRAIN_DEFAULT, DRAIN_MIN, DRAIN_MAX = 30.0, 0.0, 3600.0

KNOWN: tuple[Setting, ...] = (
    Setting(c.EULA, "Must be 'accept' to serve (the license of the open models and of this server); DownloadModel and DownloadLicense need none."),
    Setting(c.BILLING, "Billing endpoint URI. Accepted for compatibility with Azure; recorded in usage records."),
    Setting(c.API_KEY, "When set, every recognition request must carry it (Ocp-Apim-Subscription-Key or Authorization: Bearer)."),
    Setting(c.MOUNTS_LICENSE, "License folder (Azure compatibility; open models need no license file).", c.DEFAULT_LICENSE_MOUNT),
    Setting(c.MOUNTS_OUTPUT, "Folder for usage records and disk logs.", c.DEFAULT_OUTPUT_MOUNT),
    Setting(c.MOUNTS_MODELS, "Folder of Vosk models, one sub-folder per locale (e.g. /models/ko-KR).", c.DEFAULT_MODELS_MOUNT),
    Setting(c.LOCALE, "Comma-separated locales to load at start (e.g. 'ko-KR'); default: every locale found."),
    Setting(c.MODEL_URL, "Download URL of a zipped Vosk model for Locale (overrides the catalog)."),
    Setting(c.MODEL_SHA256, "Expected SHA-256 of the zip at ModelUrl."),
    Setting(c.MODEL_CATALOG_URL, "Base URL the built-in catalog's file names are fetched from.", "https://alphacephei.com/vosk/models"),
    Setting(c.MODEL_MAX_SIZE_MB, "Largest model download, zipped and unpacked, in MB; larger is refused before it is unpacked.", "4096"),
    Setting(c.DOWNLOAD_MODEL, "'True': download the model for Locale into Mounts:Models, verify and unpack it, then exit."),
    Setting(c.DOWNLOAD_LICENSE, "'True': Azure's license download; open models need none, so it reports that and exits."),
    Setting(c.DECODER_MAX_COUNT, "Most recognitions decoding at once; more are refused with 503 and Retry-After.", None, ("DECODER_MAX_COUNT",)),
    Setting(c.WARMUP_COUNT, "Recognizers per locale warmed at start-up, before /ready answers 200 (0: none; at most DecoderMaxCount in all).", "DecoderMaxCount, at most 3 per CPU"),
    Setting(c.WARMUP_SECONDS, "Seconds of audio each start-up warm-up decodes.", "6"),
    Setting(c.WARMUP_AUDIO, "Audio file to warm recognizers with (a recording of the speech you serve warms best); default: a built-in speech-like signal."),
    Setting("MaxAudioSeconds", "Longest audio a REST request may carry, in seconds.", "60"),
    Setting(c.DRAIN_SECONDS, f"On SIGTERM: seconds running recognitions may take to finish while new ones are refused (/ready 503, WebSocket close 1013, REST 503); then the server exits. 0: close everything at once. {DRAIN_MIN:g} to {DRAIN_MAX:g}.", f"{DRAIN_DEFAULT:g}"),
    Setting("Host", "Address to listen on.", "0.0.0.0"),
    Setting("Port", "Port to listen on.", str(c.PORT)),
    Setting(c.LOG_LEVEL, "Console log level: Trace, Debug, Information, Warning, Error, Critical, None.", "Information"),
    Setting(c.LOG_DISK_FORMAT, "'json' writes JSON-lines logs into Mounts:Output/logs."),
    Setting(c.LOG_DISK_MAX_FILE_SIZE, "Largest disk log file in MB before it rotates.", "10"),
    Setting("HTTP_PROXY", "Proxy for model downloads.", None, ("HTTPS_PROXY",)),
)

_BY_LOWER: dict[str, Setting] = {}
for _s in KNOWN:
    for _name in (_s.key, *_s.aliases):
        _BY_LOWER[_name.lower()] = _s

_LOG_LEVELS = {
    "trace": "DEBUG",
    "debug": "DEBUG",
    "information": "INFO",
    "info": "INFO",
    "warning": "WARNING",
    "error": "ERROR",
    "critical": "CRITICAL",
    "none": "CRITICAL",
}


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"true", "1", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    """Typed settings of one recognizer process."""

    eula: str
    billing: str | None = None
    api_key: str | None = None
    license_dir: Path = Path(c.DEFAULT_LICENSE_MOUNT)
    output_dir: Path = Path(c.DEFAULT_OUTPUT_MOUNT)
    models_dir: Path = Path(c.DEFAULT_MODELS_MOUNT)
    locales: tuple[str, ...] = ()
    model_url: str | None = None
    model_sha256: str | None = None
    model_catalog_url: str = "https://alphacephei.com/vosk/models"
    model_max_size_mb: float = 4096.0
    download_model: bool = False
    download_license: bool = False
    #: 3 per core: what 2 vCPUs were measured to keep strictly real time (docs/benchmarks.md).
    decoder_max_count: int = field(default_factory=lambda: max(3, 3 * cpu_count()))
    #: Recognizers per locale warmed at start-up; None: as many as DecoderMaxCount.
    warmup_count: int | None = None
    warmup_seconds: float = 6.0
    warmup_audio: Path | None = None
    max_audio_seconds: float = 60.0
    drain_seconds: float = DRAIN_DEFAULT
    host: str = "0.0.0.0"
    port: int = c.PORT
    log_level: str = "INFO"
    log_disk_json: bool = False
    log_disk_max_mb: float = 10.0
    http_proxy: str | None = None
    warnings: tuple[str, ...] = ()

    @property
    def warmup_recognizers(self) -> int:
        """Recognizers per locale to warm at start-up: ``Warmup:Count``, by default one per
        decoder up to 3 per CPU (each costs ~3.5 CPU s and ~45 MiB; more decoders than that
        are overcommitted anyway)."""
        if self.warmup_count is not None:
            return self.warmup_count
        return min(self.decoder_max_count, 3 * cpu_count())

    @property
    def eula_accepted(self) -> bool:
        return self.eula.strip().lower() == "accept"


def _nearest(key: str) -> str:
    match = difflib.get_close_matches(key.lower(), list(_BY_LOWER), n=1, cutoff=0.5)
    return _BY_LOWER[match[0]].key if match else ""


def _collect(args: Iterable[str], environ: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """Canonical key -> raw value, plus warnings; arguments override the environment."""
    values: dict[str, str] = {}
    warnings: list[str] = []
    for name, value in environ.items():
        setting = _BY_LOWER.get(name.replace("__", ":").lower())
        if setting is not None:
            values[setting.key] = value
    for raw in args:
        if "=" not in raw:
            raise SettingsError(f"argument {raw!r} is not Key=Value (for example Eula=accept)")
        name, value = raw.split("=", 1)
        name = name.strip().lstrip("-")
        setting = _BY_LOWER.get(name.replace("__", ":").lower())
        if setting is None:
            near = _nearest(name.replace("__", ":"))
            hint = f"; did you mean {near}?" if near else ""
            warnings.append(f"unknown setting {name!r} ignored{hint}")
            continue
        values[setting.key] = value
    return values, warnings


def _number(values: Mapping[str, str], key: str, default: float, cast: Callable[[str], float], *, zero: bool = False) -> float:
    raw = values.get(key)
    if raw is None or raw.strip() == "":
        return default
    try:
        number = cast(raw.strip())
    except ValueError:
        raise SettingsError(f"{key}={raw!r} is not a number") from None
    if not math.isfinite(number):
        raise SettingsError(f"{key}={raw!r} is not a finite number")
    if number < 0 or (number == 0 and not zero):
        raise SettingsError(f"{key}={raw!r} must be {'0 or more' if zero else 'greater than 0'}")
    return number


def _bounded(values: Mapping[str, str], key: str, default: float, low: float, high: float) -> float:
    number = _number(values, key, default, float, zero=low == 0)
    if not low <= number <= high:
        raise SettingsError(f"{key}={values[key]!r} must be between {low:g} and {high:g}")
    return number


def parse(args: Iterable[str] = (), environ: Mapping[str, str] | None = None) -> Settings:
    """Parse ``Key=Value`` arguments and the environment into :class:`Settings`.

    Raises :class:`SettingsError` for malformed values; the EULA is checked by
    the caller (see :func:`require_eula`) so that tools can inspect settings.
    """
    values, warnings = _collect(args, os.environ if environ is None else environ)
    level_raw = values.get(c.LOG_LEVEL, "Information")
    level = _LOG_LEVELS.get(level_raw.strip().lower())
    if level is None:
        raise SettingsError(f"{c.LOG_LEVEL}={level_raw!r}: use one of Trace, Debug, Information, Warning, Error, Critical, None")
    port = int(_number(values, "Port", c.PORT, int))
    if port > 65535:
        raise SettingsError(f"Port={values['Port']!r} must be at most 65535")
    locales = tuple(p.strip() for p in values.get(c.LOCALE, "").split(",") if p.strip())
    defaults = Settings(eula="")
    return Settings(
        eula=values.get(c.EULA, ""),
        billing=values.get(c.BILLING) or None,
        api_key=values.get(c.API_KEY) or None,
        license_dir=Path(values.get(c.MOUNTS_LICENSE, c.DEFAULT_LICENSE_MOUNT)),
        output_dir=Path(values.get(c.MOUNTS_OUTPUT, c.DEFAULT_OUTPUT_MOUNT)),
        models_dir=Path(values.get(c.MOUNTS_MODELS, c.DEFAULT_MODELS_MOUNT)),
        locales=locales,
        model_url=values.get(c.MODEL_URL) or None,
        model_sha256=(values.get(c.MODEL_SHA256) or "").strip().lower() or None,
        model_catalog_url=values.get(c.MODEL_CATALOG_URL, defaults.model_catalog_url).rstrip("/"),
        model_max_size_mb=_number(values, c.MODEL_MAX_SIZE_MB, defaults.model_max_size_mb, float),
        download_model=_truthy(values.get(c.DOWNLOAD_MODEL)),
        download_license=_truthy(values.get(c.DOWNLOAD_LICENSE)),
        decoder_max_count=int(_number(values, c.DECODER_MAX_COUNT, defaults.decoder_max_count, int)),
        warmup_count=None if not values.get(c.WARMUP_COUNT, "").strip() else int(_number(values, c.WARMUP_COUNT, 0, int, zero=True)),
        warmup_seconds=_number(values, c.WARMUP_SECONDS, defaults.warmup_seconds, float),
        warmup_audio=Path(values[c.WARMUP_AUDIO]) if values.get(c.WARMUP_AUDIO, "").strip() else None,
        max_audio_seconds=_number(values, "MaxAudioSeconds", 60.0, float),
        drain_seconds=_bounded(values, c.DRAIN_SECONDS, DRAIN_DEFAULT, DRAIN_MIN, DRAIN_MAX),
        host=values.get("Host", "0.0.0.0"),
        port=port,
        log_level=level,
        log_disk_json=values.get(c.LOG_DISK_FORMAT, "").strip().lower() == "json",
        log_disk_max_mb=_number(values, c.LOG_DISK_MAX_FILE_SIZE, 10.0, float),
        http_proxy=values.get("HTTP_PROXY") or None,
        warnings=tuple(warnings),
    )


def require_eula(settings: Settings) -> None:
    """Refuse to start unless the EULA is accepted, with one clear line."""
    if not settings.eula_accepted:
        raise SettingsError(
            "the EULA was not accepted: start with Eula=accept (or environment variable Eula=accept)"
        )


def describe() -> str:
    """A plain-text table of every setting, for ``--help`` and the docs."""
    lines = []
    for s in KNOWN:
        default = f" (default: {s.default})" if s.default else ""
        alias = f" [env also: {', '.join(s.aliases)}]" if s.aliases else ""
        lines.append(f"  {s.key:<36} {s.help}{default}{alias}")
    return "\n".join(lines)
