"""Azure-style settings, each declared once.

Settings come as ``Key=Value`` command-line arguments (``Eula=accept``,
``Mounts:License=/license``) or as environment variables with ``__`` for ``:``
(``Mounts__License=/license``). Keys are case-insensitive; arguments win over
the environment.

Every setting is one field of :class:`Settings`, declared with :func:`setting`:
its key, its type (the field's annotation), its default, its bounds and its help.
Parsing, ``--help`` (:func:`describe`) and README's settings table (which a
test renders from :data:`KNOWN` and compares with README) all come from those
declarations. :func:`boolean` is the one parser of true/false for settings and
request parameters alike.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from . import contract as c
from .addresses import Network, proxies
from .cors import origins
from .errors import BadValue
from .scratch import CATALOG_UNPACK_RATIO


class SettingsError(ValueError):
    """A setting is missing or malformed; the message is one line for the user."""


#: Where a container sees its own cgroup (as a runtime mounts it).
CGROUP = Path("/sys/fs/cgroup")


def cgroup_cpu_limit(root: Path = CGROUP) -> int | None:
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


#: cgroup v1's "no limit" is the largest page count its counter holds, in bytes (9223372036854771712 with 4 KiB pages);
#: a limit this large or larger is none.
NO_MEMORY_LIMIT = 2**62


def cgroup_memory_limit(root: Path = CGROUP) -> int | None:
    """The container's memory limit in bytes, or None when there is none (or it cannot be read: no crash on garbage).

    Reads cgroup v2 ``memory.max`` ("max" = none) or cgroup v1 ``memory/memory.limit_in_bytes`` (a number near
    2**63 = none), as :func:`cgroup_cpu_limit` reads the CPU limit.
    """
    for path in (root / "memory.max", root / "memory" / "memory.limit_in_bytes"):
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        try:
            limit = int(text)
        except ValueError:  # "max", or garbage
            return None
        return limit if 0 < limit < NO_MEMORY_LIMIT else None
    return None


def cpu_affinity() -> int:
    """The CPUs this process may run on (its CPU affinity): a node's, a cpuset's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


#: The least memory a recognizer is taken to hold before it decodes: the process and its model loaded (the ko-KR small
#: model: 515.5 MiB with jemalloc, the image's allocator, ~570 with glibc's malloc; bench/notes.md, "Memory"). Once its
#: models are loaded the server measures what it holds (:func:`resident_bytes`) and counts that when it is more
#: (:func:`memory_base_mib`): a larger model, or several locales in one process.
BASE_MIB = 576
#: Memory each decoder may take at its peak: its warm recognizer (~46 MiB) and that recognizer's decoding graph grown
#: over the 10 minutes of a stream's own audio before its handover (~283 MiB on varied speech: six streams took a
#: warmed server from 799 to 2497 MiB), and a fifth more for speech more varied than the bench's (bench/notes.md, "Memory").
DECODER_MIB = 400
#: The most decoders the default ``DecoderMaxCount`` gives, whatever the cores and the memory limit (past it: more
#: pods, or ``DecoderMaxCount`` given). One figure for the recognizer and the operator: a pod whose limits bound
#: neither (no CPU limit on a node of any size) runs no more, and the operator sizes its /tmp (:mod:`.scratch`) for
#: as many, the most its ``SpeechToText`` may ask for besides (speech_operator.api).
MAX_DEFAULT_DECODERS = 64
#: ``Settings.decoder_max_count`` until ``__post_init__`` makes the default (never given: its minimum is 1).
DECODERS_UNSET = 0
#: How the default ``DecoderMaxCount`` is made, as help and README say it.
DECODER_RULE = (f"3 × cores, at most {MAX_DEFAULT_DECODERS} and at most what the memory limit holds ({DECODER_MIB} "
                f"MiB each beyond what the process holds once its models are loaded, at least {BASE_MIB} MiB)")


def resident_bytes(statm: Path = Path("/proc/self/statm")) -> int | None:
    """The memory this process holds now, in bytes: its resident set (``statm``'s second field, in pages), or None
    where it cannot be read.

    Not its cgroup's ``memory.current`` (``usage_in_bytes``): that also counts the page cache of the model files read
    at load, which the kernel reclaims before it OOM-kills anything, and whatever else the cgroup ran before.
    """
    try:
        return int(statm.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def memory_base_mib(resident: int | None) -> int:
    """The memory the decoders come on top of, in MiB: ``resident`` bytes (what the process holds with its models
    loaded), at least :data:`BASE_MIB`, the small ko-KR model's figure that the budget per decoder was measured beside."""
    return BASE_MIB if resident is None else max(BASE_MIB, resident // 2**20)


def decoders_for_memory(limit: int | None, base_mib: int = BASE_MIB) -> int | None:
    """Decoders a memory limit of ``limit`` bytes holds (:data:`DECODER_MIB` each beyond ``base_mib``; 0 when it
    holds not even that), or None without a limit."""
    if limit is None:
        return None
    return max(0, (limit // 2**20 - base_mib) // DECODER_MIB)


def default_decoders(cores: int | None, memory_limit: int | None, base_mib: int = BASE_MIB) -> int:
    """The default ``DecoderMaxCount`` (:data:`DECODER_RULE`): 3 per core, what 2 vCPUs were measured to keep strictly
    real time (docs/benchmarks.md), but no more than the memory limit holds beyond ``base_mib``, since past it the
    kernel OOM-kills the container and every stream on it, nor than :data:`MAX_DEFAULT_DECODERS`, what the pod's /tmp
    is sized for when its limits bound neither. ``cores`` None: any number (a pod without a CPU limit, for a node not
    yet known). At least 1: a server with no decoder would refuse everything, and a limit too small for one stream of
    ten varied minutes still holds shorter ones (the start-up log warns)."""
    count = MAX_DEFAULT_DECODERS if cores is None else min(3 * cores, MAX_DEFAULT_DECODERS)
    held = decoders_for_memory(memory_limit, base_mib)
    return max(1, count if held is None else min(count, held))


@dataclass(frozen=True)
class Resources:
    """The CPUs and the memory limit the default ``DecoderMaxCount`` counts (:func:`container_resources`), each with
    where it came from, as the start-up line says it."""

    cores: int
    memory_limit: int | None
    #: What gave :attr:`cores` (the least of them), and what else was read, for the start-up line.
    cores_from: str
    #: What gave :attr:`memory_limit`; empty without one.
    memory_from: str

    def decoders(self, base_mib: int = BASE_MIB) -> int:
        """The default ``DecoderMaxCount`` of these resources (:func:`default_decoders`)."""
        return default_decoders(self.cores, self.memory_limit, base_mib)


def _least(figures: list[tuple[str, int]], absent: str) -> tuple[int | None, str]:
    """The least of ``figures`` (what said it -> the figure) and who said it: each source that gave the least, then
    in brackets the others' figures and ``absent`` (a source that said nothing), so the line says why it is the least."""
    if not figures:
        return None, ""
    least = min(value for _, value in figures)
    names = [name for name, value in figures if value == least]
    said = ", ".join(names[:-1]) + " and " * (len(names) > 1) + names[-1]
    others = [f"{name}: {value}" for name, value in figures if value != least] + ([absent] if absent else [])
    return least, said + (f" ({'; '.join(others)})" if others else "")


def container_resources(cpu_millicores: int | None = None, memory_bytes: int | None = None, root: Path = CGROUP,
                        affinity: int | None = None) -> Resources:
    """The CPUs and the memory limit this container's default decoders count: the least of what its cgroup says (the
    CPUs it may run on, ``affinity`` (:func:`cpu_affinity` when None), capped by its CFS quota, :func:`cgroup_cpu_limit`:
    in a pod with ``limits.cpu: 2`` on a 64-core node 2, not 64, where the kubelet enforces the limit; its memory limit, both read under
    ``root``) and what it was told (``Container:CpuLimitMillicores``, rounded up to whole CPUs as the operator rounds
    ``limits.cpu``, and ``Container:MemoryLimitBytes``: the operator's pods pass their container's limits by the
    downward API, the node's allocatable where none is set, which bounds the pod all the same). The cgroup alone
    misses a CPU limit the kubelet does not enforce (``--cpu-cfs-quota=false``: no quota, the node's CPUs counted) and
    a memory limit it cannot read (a host cgroup namespace): then the pod would run more decoders than its /tmp is
    sized for. Without those settings (a ``docker run``), the cgroup's figures as they are."""
    quota = cgroup_cpu_limit(root)
    cpus = [("CPUs to run on", cpu_affinity() if affinity is None else affinity)] + ([("the cgroup's quota", quota)] if quota else [])
    if cpu_millicores is not None:
        cpus.append((f"{c.CONTAINER_CPU_LIMIT}={cpu_millicores}", max(1, math.ceil(cpu_millicores / 1000))))
    cores, cores_from = _least(cpus, "" if quota else "no CPU quota in the cgroup")
    cgroup = cgroup_memory_limit(root)
    limits = ([("the cgroup's", cgroup)] if cgroup is not None else []) + (
        [(f"{c.CONTAINER_MEMORY_LIMIT}={memory_bytes}", memory_bytes)] if memory_bytes is not None else [])
    memory, memory_from = _least(limits, "none in the cgroup" if cgroup is None else "")
    assert cores is not None
    return Resources(cores, memory, cores_from, memory_from)


def container_cores(environ: Mapping[str, str] | None = None, root: Path = CGROUP, affinity: int | None = None) -> int:
    """The cores this container's defaults count (:func:`container_resources`, as :meth:`Settings.resources`), with
    ``Container:CpuLimitMillicores`` read from ``environ`` (the process's when None): for a tool of the recognizer's
    that takes no other setting (the file transcriber's ``--jobs``), which a malformed setting it does not use must not
    stop. :class:`SettingsError` for a malformed limit."""
    values, _ = _collect((), os.environ if environ is None else environ)
    raw = values.get(c.CONTAINER_CPU_LIMIT, "").strip()
    millicores = _BY_LOWER[c.CONTAINER_CPU_LIMIT.lower()].convert(raw) if raw else None
    return container_resources(millicores, None, root, affinity).cores


def decoder_capacity(count: int, resources: Resources, base_mib: int = BASE_MIB, given: bool = False) -> tuple[str, str | None]:
    """What the start-up log says of ``count`` decoders: how many, whether ``DecoderMaxCount`` was ``given``, what the
    cores and the memory limit hold beyond ``base_mib`` and where those came from (:class:`Resources`); and a warning
    when the memory limit holds fewer (an explicit ``DecoderMaxCount`` is obeyed, so is the floor of 1)."""
    cores, memory_limit = resources.cores, resources.memory_limit
    held = decoders_for_memory(memory_limit, base_mib)
    memory = ("no memory limit" if memory_limit is None else
              f"the {memory_limit // 2**20} MiB memory limit holds {held} at {DECODER_MIB} MiB each beyond {base_mib} MiB")
    capped = f", at most {MAX_DEFAULT_DECODERS}" if 3 * cores > MAX_DEFAULT_DECODERS else ""
    source = f"cores: {resources.cores_from}" + (f"; memory limit: {resources.memory_from}" if resources.memory_from else "")
    line = (f"{count} decoder{'s' * (count != 1)} ({f'{c.DECODER_MAX_COUNT} given; ' if given else ''}"
            f"3 × {cores} cores: {3 * cores}{capped}; {memory}; {source})")
    if memory_limit is None or held is None or count <= held:
        return line, None
    return line, (f"{c.DECODER_MAX_COUNT}={count} is more than the {memory_limit // 2**20} MiB memory limit holds ({held}): "
                  "decoders all busy with long streams of varied speech may get the container OOM-killed, every stream "
                  f"on it lost; raise the memory limit to {base_mib + count * DECODER_MIB} MiB or lower {c.DECODER_MAX_COUNT}")


# ---- values ---------------------------------------------------------------------------------------------

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def boolean(text: str) -> bool:
    """``true``/``false``, ``1``/``0``, ``yes``/``no``, ``on``/``off`` in any case: the recognizer's one boolean parser
    (settings, REST and Speech SDK query parameters alike). Raises ValueError for anything else."""
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{text!r} is not a boolean: use true or false")


def flag(query: Mapping[str, str], name: str) -> bool:
    """A boolean query parameter (absent: false), read by the recognizer's one boolean parser; a
    :class:`~speech_recognizer.errors.BadValue` for anything else than true/false, 1/0, yes/no, on/off."""
    raw = query.get(name)
    if raw is None or not raw.strip():
        return False
    try:
        return boolean(raw)
    except ValueError as exc:
        raise BadValue(f"{name}={raw[:40]!r} is not a boolean: use true or false") from exc


#: Console log levels as Azure names them -> Python's.
LOG_LEVELS = {
    "trace": "DEBUG",
    "debug": "DEBUG",
    "information": "INFO",
    "info": "INFO",
    "warning": "WARNING",
    "error": "ERROR",
    "critical": "CRITICAL",
    "none": "CRITICAL",
}


def _log_level(text: str) -> str:
    try:
        return LOG_LEVELS[text.strip().lower()]
    except KeyError:
        raise ValueError("use one of Trace, Debug, Information, Warning, Error, Critical, None") from None


def _locales(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


@dataclass(frozen=True)
class Setting:
    """One setting: where it is read from, what it becomes, and how it is documented."""

    key: str
    #: The :class:`Settings` field it sets.
    name: str
    help: str
    #: The default as the docs show it.
    shown: str
    convert: Callable[[str], Any]
    aliases: tuple[str, ...] = ()

    @property
    def env(self) -> str:
        return c.env_name(self.key)


@dataclass(frozen=True)
class _Spec:
    key: str
    help: str
    shown: str | None
    minimum: float | None
    maximum: float | None
    above: float | None
    choices: tuple[str, ...]
    aliases: tuple[str, ...]
    parse: Callable[[str], Any] | None


def setting(
    key: str,
    default: Any = None,
    *,
    help: str,
    factory: Callable[[], Any] | None = None,
    shown: str | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
    choices: tuple[str, ...] = (),
    aliases: tuple[str, ...] = (),
    parse: Callable[[str], Any] | None = None,
) -> Any:
    """Declare a field of :class:`Settings` as the setting ``key``: its default (or ``factory``, documented as
    ``shown``), bounds (``minimum``/``maximum`` inclusive, ``above`` exclusive), ``choices``, ``help``, and
    environment ``aliases``. The field's type says how the value is read, unless ``parse`` says otherwise."""
    spec = _Spec(key, help, shown, minimum, maximum, above, choices, aliases, parse)
    if factory is not None:
        return field(default_factory=factory, metadata={"setting": spec})
    return field(default=default, metadata={"setting": spec})


@dataclass(frozen=True)
class Settings:
    """Typed settings of one recognizer process; each field that is a setting is declared here, once."""

    eula: str = setting(c.EULA, "", shown="—", help="must be `accept` to start (`DownloadModel` and `DownloadLicense` need none)")
    billing: str | None = setting(c.BILLING, help="billing endpoint (Azure compatibility); recorded in usage records")
    api_key: str | None = setting(
        c.API_KEY,
        help="when set, every recognition request must carry it (`Ocp-Apim-Subscription-Key` or `Authorization: Bearer`): "
        "403 missing, 401 wrong; see [Keys](#keys)",
    )
    license_dir: Path = setting(c.MOUNTS_LICENSE, Path(c.DEFAULT_LICENSE_MOUNT), help="license folder (open models need no license file)")
    output_dir: Path = setting(c.MOUNTS_OUTPUT, Path(c.DEFAULT_OUTPUT_MOUNT), help="usage records (`usage/YYYY-MM.jsonl`) and disk logs")
    models_dir: Path = setting(c.MOUNTS_MODELS, Path(c.DEFAULT_MODELS_MOUNT), help="Vosk models, one folder per locale (`/models/ko-KR/`)")
    locales: tuple[str, ...] = setting(c.LOCALE, (), shown="every locale found", parse=_locales, help="comma-separated locales to load at start")
    model_url: str | None = setting(c.MODEL_URL, help="a zipped Vosk model for `Locale` instead of the catalog's (http or https only)")
    model_sha256: str | None = setting(c.MODEL_SHA256, parse=lambda v: v.strip().lower(), help="the SHA-256 of the zip at `ModelUrl`")
    model_catalog_url: str = setting(
        c.MODEL_CATALOG_URL,
        "https://alphacephei.com/vosk/models",
        parse=lambda v: v.strip().rstrip("/"),
        help="base URL of the built-in catalog's files (a mirror; http or https only)",
    )
    model_max_size_mb: float = setting(
        c.MODEL_MAX_SIZE_MB, 4096.0, above=0, help="largest model download, zipped and unpacked, in MB (10^6 bytes); not given, a catalog model whose size the "
        f"catalog knows is held to its zip and {CATALOG_UNPACK_RATIO} times it instead; see [Limits](#limits)"
    )
    model_ca_file: Path | None = setting(
        c.MODEL_CA_FILE,
        help="a PEM file of CA certificates the model download trusts besides the system's: a private CA's, or a "
        "TLS-intercepting proxy's; see [Behind a TLS-intercepting proxy](#behind-a-tls-intercepting-proxy-or-a-private-ca)",
    )
    download_model: bool = setting(
        c.DOWNLOAD_MODEL, False, help="`True`: download `Locale`'s model into `Mounts:Models`, verify, unpack atomically, exit"
    )
    download_license: bool = setting(c.DOWNLOAD_LICENSE, False, help="`True`: Azure's license download; reports that none is needed and exits")
    #: 3 per core, at most :data:`MAX_DEFAULT_DECODERS` and what the container's memory limit holds (:func:`default_decoders`
    #: of :meth:`resources`, made in ``__post_init__`` when not given: it counts the two settings below); by default,
    #: until the models are loaded: then the server lowers its count to what the memory they took leaves (app.py).
    decoder_max_count: int = setting(
        c.DECODER_MAX_COUNT,
        DECODERS_UNSET,
        shown=DECODER_RULE,
        minimum=1,
        aliases=("DECODER_MAX_COUNT",),
        help="recognitions decoding at once; more get 503 + `Retry-After` (REST), close 1013 (vosk), `TooManyRequests` (SDK)",
    )
    container_cpu_millicores: int | None = setting(
        c.CONTAINER_CPU_LIMIT,
        minimum=1,
        help="the container's CPU limit in millicores: the cores the defaults of `DecoderMaxCount` and `Warmup:Count` "
        "count are at most this (rounded up), whatever its cgroup says; the operator's pods set it from their "
        "`limits.cpu` by the downward API, so that where the kubelet does not enforce CPU limits "
        "(`--cpu-cfs-quota=false`) a pod does not count the node's CPUs; see [On Kubernetes](#on-kubernetes)",
    )
    container_memory_bytes: int | None = setting(
        c.CONTAINER_MEMORY_LIMIT,
        minimum=1,
        help="the container's memory limit in bytes: the memory `DecoderMaxCount`'s default counts is at most this, "
        "whatever its cgroup says; the operator's pods set it from their `limits.memory` by the downward API, for a "
        "container that cannot read its memory cgroup",
    )
    #: False: no recognizer decodes a second stream (the warm pool holds none, and nothing is warmed at start-up).
    reuse_recognizers: bool = setting(
        c.REUSE_RECOGNIZERS,
        True,
        help="`False`: every stream decodes on a new recognizer, none kept warm (the start-up warm-up is off too): "
        "its words, times and confidences are then the same whatever was decoded before, as a new in-process Vosk "
        "recognizer's, at about 4 × the CPU of each stream's first utterance; see [Settings](#settings)",
    )
    #: Recognizers per locale warmed at start-up; None: as many as DecoderMaxCount (:attr:`warmup_recognizers`).
    warmup_count: int | None = setting(
        c.WARMUP_COUNT,
        shown="`DecoderMaxCount`, at most 3 × cores",
        minimum=0,
        help="recognizers per locale warmed at start-up, before `/ready` answers 200; `0` turns it off",
    )
    warmup_seconds: float = setting(c.WARMUP_SECONDS, 6.0, above=0, help="seconds of audio each warm-up decodes")
    warmup_audio: Path | None = setting(
        c.WARMUP_AUDIO,
        shown="built-in speech-like signal",
        help="an audio file to warm with instead: a recording of the speech you serve warms best",
    )
    max_audio_seconds: float = setting("MaxAudioSeconds", 60.0, above=0, help="longest audio a REST request may carry, in seconds; longer gets 413 (see [Limits](#limits))")
    audio_idle_seconds: float = setting(
        c.AUDIO_IDLE_SECONDS,
        30.0,
        above=0,
        help="a WebSocket stream that sends no audio for this long is answered what its audio gave and closed (1008; "
        "1007 on the Speech SDK route, which the SDK reports as `BadRequest`): an idle client holds no decoder; a "
        "WebSocket client that takes in none of its replies for this long is reset (`not_reading`); "
        "see [Limits](#limits)",
    )
    max_session_seconds: float = setting(
        "MaxSessionSeconds",
        3600.0,
        above=0,
        help="longest a WebSocket stream may hold a decoder: then it is closed (1008; `/vosk` first gets the answers to "
        "the audio it had already sent and the final result); the Speech SDK connects again and goes on; see "
        "[Limits](#limits)",
    )
    connection_idle_seconds: float = setting(
        c.CONNECTION_IDLE_SECONDS,
        300.0,
        minimum=1,
        maximum=86400,
        help="a recognition WebSocket with no stream in progress (before its first audio, a Speech SDK app's between "
        "recognitions) that sends nothing for this long is closed with 1000 and the reason; the Speech SDK connects "
        "again at its next recognition; see [Limits](#limits)",
    )
    max_connections: int = setting(
        c.MAX_CONNECTIONS,
        500,
        minimum=1,
        maximum=100000,
        help="recognition WebSockets (`/vosk`, `/`, Speech SDK) open at once, with or without a stream (a Speech SDK app "
        "keeps its connection between recognitions); more are accepted and closed with 1013 and the reason: at once, "
        "or a Speech SDK connection once its request begins (5 s at most), after a turn that fails `TooManyRequests` "
        "(the Python SDK: closed 4429 alone, its `TooManyRequests`, asked once); see [Limits](#limits)",
    )
    http_max_header_bytes: int = setting(
        c.HTTP_MAX_HEADER_BYTES,
        16384,
        minimum=1024,
        maximum=524288,
        help="largest HTTP request head (request line and headers), in bytes; larger gets 431 as soon as it passes (see [Limits](#limits))",
    )
    http_header_timeout_seconds: float = setting(
        c.HTTP_HEADER_TIMEOUT,
        10.0,
        minimum=1,
        maximum=600,
        help="seconds a request head may take from its first byte (a new connection's from its opening); later gets 408",
    )
    http_body_timeout_seconds: float = setting(
        c.HTTP_BODY_TIMEOUT,
        10.0,
        minimum=1,
        maximum=600,
        help="longest pause in a request body, in seconds; a whole body must also arrive within `MaxAudioSeconds` plus this; later gets 408",
    )
    http_max_connections: int = setting(
        c.HTTP_MAX_CONNECTIONS,
        200,
        minimum=1,
        maximum=100000,
        help="plain HTTP connections open at once (a WebSocket leaves them at its upgrade, for `MaxConnections`); past it a "
        "new one closes one waiting for a request (first one whose answers its client is not reading, else the one waiting "
        "longest), or if none waits, its request gets 503 with the reason "
        "(a probe or scrape is answered); see [Limits](#limits)",
    )
    http_trusted_proxies: tuple[Network, ...] = setting(
        c.HTTP_TRUSTED_PROXIES,
        proxies("127.0.0.1,::1"),
        shown="127.0.0.1,::1",
        parse=proxies,
        aliases=("FORWARDED_ALLOW_IPS",),
        help="comma-separated addresses and CIDRs of proxies whose `X-Forwarded-For` names the client (in the access log and "
        "to the app): the gateway's and the ingress controller's pods; anyone else's header is ignored, so that a client "
        "cannot name itself; see [Behind an Ingress](#behind-an-ingress)",
    )
    http_cors_origins: tuple[str, ...] = setting(
        c.HTTP_CORS_ORIGINS,
        (),
        parse=origins,
        aliases=("CORS_ORIGINS",),
        help="comma-separated origins of web pages that may call the REST and OpenAI routes from a browser "
        "(`https://app.example.com`), or `*` for any: their preflights are answered and their answers readable (no "
        "credentials); none: no CORS headers, browsers refuse such calls; see "
        "[Browsers on another origin](#browsers-on-another-origin-cors)",
    )
    drain_seconds: float = setting(
        c.DRAIN_SECONDS,
        30.0,
        minimum=0,
        maximum=3600,
        help="on SIGTERM, how long running recognitions may take to finish while new ones are refused (`0`: close "
        "everything at once); see [Stopping](#stopping-drain-instead-of-cut)",
    )
    host: str = setting(
        "Host",
        c.EVERY_ADDRESS,
        help="address to listen on: `*` (every address, IPv6 and IPv4, as Azure's container; IPv4 alone where the "
        "kernel has no IPv6), `::` (IPv6 and IPv4; fails without IPv6), `0.0.0.0` (IPv4 only) or one address",
    )
    port: int = setting("Port", c.PORT, minimum=1, maximum=65535, help="port to listen on")
    log_level: str = setting(
        c.LOG_LEVEL,
        "INFO",
        shown="Information",
        parse=_log_level,
        help="`Trace`, `Debug`, `Information`, `Warning`, `Error`, `Critical`, `None`",
    )
    log_disk_format: str | None = setting(c.LOG_DISK_FORMAT, choices=("json",), help="`json`: JSON-lines logs in `Mounts:Output/logs/`")
    log_disk_max_mb: float = setting(c.LOG_DISK_MAX_FILE_SIZE, 10.0, above=0, help="MB per disk log file before it rotates")
    http_proxy: str | None = setting("HTTP_PROXY", aliases=("HTTPS_PROXY",), help="proxy for model downloads")
    #: Unknown keys met while parsing, each with the nearest known key.
    warnings: tuple[str, ...] = ()
    #: The settings given (attribute names), not defaulted: a default that does not fit is told apart from a choice.
    given: frozenset[str] = frozenset()

    @property
    def warmup_recognizers(self) -> int:
        """Recognizers per locale to warm at start-up: ``Warmup:Count``, by default one per
        decoder up to 3 per CPU (each costs ~3.5 CPU s and ~45 MiB; more decoders than that
        are overcommitted anyway); none when recognizers are not reused (nothing could keep them)."""
        if not self.reuse_recognizers:
            return 0
        if self.warmup_count is not None:
            return self.warmup_count
        return min(self.decoder_max_count, 3 * self.resources().cores)

    def __post_init__(self) -> None:
        if self.decoder_max_count == DECODERS_UNSET:  # the default: of this container's resources, read now
            object.__setattr__(self, "decoder_max_count", self.resources().decoders())

    def resources(self, root: Path = CGROUP, affinity: int | None = None) -> Resources:
        """The CPUs and memory limit this container's defaults count (:func:`container_resources`): its cgroup's
        (read under ``root``; ``affinity``: the CPUs it may run on, its own when None), within
        ``Container:CpuLimitMillicores`` and ``Container:MemoryLimitBytes``."""
        return container_resources(self.container_cpu_millicores, self.container_memory_bytes, root, affinity)

    @property
    def eula_accepted(self) -> bool:
        return self.eula.strip().lower() == "accept"

    @property
    def log_disk_json(self) -> bool:
        return self.log_disk_format == "json"


# ---- from the declarations: the table of settings, parsing, docs ------------------------------------------


def _converter(key: str, kind: Any, spec: _Spec) -> Callable[[str], Any]:
    """How a raw value of the setting ``key`` becomes a value of type ``kind`` within ``spec``'s bounds."""
    base: Callable[[str], Any]
    if spec.parse is not None:
        base = spec.parse
    else:
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        target = args[0] if len(args) == 1 else kind
        parsers: dict[Any, Callable[[str], Any]] = {bool: boolean, int: int, float: float, Path: Path, str: str}
        base = parsers[target]

    def convert(raw: str) -> Any:
        text = raw.strip()
        try:
            value = base(text)
        except ValueError as exc:
            if base in (int, float):
                raise SettingsError(f"{key}={raw!r} is not a number") from None
            raise SettingsError(f"{key}={raw!r}: {exc}") from None
        if spec.choices and value.lower() not in spec.choices:
            raise SettingsError(f"{key}={raw!r}: use {' or '.join(spec.choices)}")
        if spec.choices:
            value = value.lower()
        if isinstance(value, float) and not math.isfinite(value):
            raise SettingsError(f"{key}={raw!r} is not a finite number")
        if spec.above is not None and not value > spec.above:
            raise SettingsError(f"{key}={raw!r} must be greater than {spec.above:g}")
        if spec.minimum is not None and value < spec.minimum:
            more = "greater than 0" if spec.minimum == 1 and isinstance(value, int) else f"{spec.minimum:g} or more"
            raise SettingsError(f"{key}={raw!r} must be {more}")
        if spec.maximum is not None and value > spec.maximum:
            raise SettingsError(f"{key}={raw!r} must be at most {spec.maximum:g}")
        return value

    return convert


def _shown(spec: _Spec, default: Any) -> str:
    if spec.shown is not None:
        return spec.shown
    if default is None or default == () or default is MISSING:
        return "—"
    if isinstance(default, float) and default.is_integer():
        return f"{default:g}"
    return str(default)


def _declared() -> tuple[Setting, ...]:
    hints = typing.get_type_hints(Settings)
    out = []
    for f in fields(Settings):
        spec = f.metadata.get("setting")
        if spec is not None:
            bounded = spec.minimum is not None and spec.maximum is not None
            help = spec.help + (f"; from {spec.minimum:g} to {spec.maximum:g}" if bounded else "")
            out.append(Setting(spec.key, f.name, help, _shown(spec, f.default), _converter(spec.key, hints[f.name], spec), spec.aliases))
    return tuple(out)


#: Every setting, in the order of :class:`Settings`.
KNOWN: tuple[Setting, ...] = _declared()

_BY_LOWER: dict[str, Setting] = {name.lower(): s for s in KNOWN for name in (s.key, *s.aliases)}


@dataclass(frozen=True)
class Declared:
    """A setting's declared default and bounds, for code that passes the setting on and must not retype
    them (the operator's ``SpeechToText`` API)."""

    key: str
    #: None when the default is computed (``factory``) or there is none.
    default: Any
    minimum: float | None
    maximum: float | None
    above: float | None


def declared(name: str) -> Declared:
    """What :class:`Settings` declares for its field ``name`` (``KeyError`` for a field that is no setting)."""
    for f in fields(Settings):
        if f.name == name and "setting" in f.metadata:
            spec: _Spec = f.metadata["setting"]
            return Declared(spec.key, None if f.default is MISSING else f.default, spec.minimum, spec.maximum, spec.above)
    raise KeyError(name)


def _nearest(key: str) -> str:
    match = difflib.get_close_matches(key.lower(), list(_BY_LOWER), n=1, cutoff=0.5)
    return _BY_LOWER[match[0]].key if match else ""


def _collect(args: Iterable[str], environ: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """Canonical key -> raw value, plus warnings; arguments override the environment."""
    values: dict[str, str] = {}
    warnings: list[str] = []
    for name, value in environ.items():
        found = _BY_LOWER.get(name.replace("__", ":").lower())
        if found is not None:
            values[found.key] = value
    for raw in args:
        if "=" not in raw:
            raise SettingsError(f"argument {raw!r} is not Key=Value (for example Eula=accept)")
        name, value = raw.split("=", 1)
        name = name.strip().lstrip("-")
        found = _BY_LOWER.get(name.replace("__", ":").lower())
        if found is None:
            near = _nearest(name.replace("__", ":"))
            hint = f"; did you mean {near}?" if near else ""
            warnings.append(f"unknown setting {name!r} ignored{hint}")
            continue
        values[found.key] = value
    return values, warnings


def parse(args: Iterable[str] = (), environ: Mapping[str, str] | None = None) -> Settings:
    """Parse ``Key=Value`` arguments and the environment into :class:`Settings`.

    An empty value means the default. Raises :class:`SettingsError` for malformed
    values; the EULA is checked by the caller (see :func:`require_eula`) so that
    tools can inspect settings.
    """
    values, warnings = _collect(args, os.environ if environ is None else environ)
    given = {s.name: s.convert(values[s.key]) for s in KNOWN if values.get(s.key, "").strip()}
    return Settings(**given, warnings=tuple(warnings), given=frozenset(given))


def require_eula(settings: Settings) -> None:
    """Refuse to start unless the EULA is accepted, with one clear line."""
    if not settings.eula_accepted:
        raise SettingsError(
            "the EULA was not accepted: start with Eula=accept (or environment variable Eula=accept)"
        )


def _plain(text: str) -> str:
    """Markdown as plain text: no backticks, links as their text."""
    return re.sub(r"\[([^]]*)\]\([^)]*\)", r"\1", text).replace("`", "")


def describe() -> str:
    """A plain-text table of every setting, for ``--help``."""
    lines = []
    for s in KNOWN:
        default = f" (default: {_plain(s.shown)})" if s.shown != "—" else ""
        alias = f" [env also: {', '.join(s.aliases)}]" if s.aliases else ""
        lines.append(f"  {s.key:<34} {_plain(s.help)}{default}{alias}")
    return "\n".join(lines)
