"""The ``SpeechToText`` API (speech-operator.io/v1alpha1): typed models, the single source of truth.

The CRD in ``crds/`` is generated from these models (see :mod:`speech_operator.crd`).
Cross-field rules live twice, on purpose and side by side: as CEL expressions
(``x-kubernetes-validations``, enforced by the API server) and as pydantic
validators (enforced when the operator reads a spec). Tests evaluate both.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from speech_operator.quantities import mebibytes, quantity
from speech_recognizer import contract, models, scratch
from speech_recognizer.settings import DECODER_MIB, KNOWN, MAX_DEFAULT_DECODERS, declared

GROUP: Final = "speech-operator.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = "speech-operator.io/v1alpha1"  # GROUP/VERSION, spelled out: the models' Literal
assert API_VERSION == f"{GROUP}/{VERSION}"
KIND: Final = "SpeechToText"
PLURAL = "speechtotexts"
SINGULAR = "speechtotext"
SHORT_NAMES = ["stt"]

#: A BCP-47-ish locale as the recognizer takes it: ``en-US``, ``ko-KR``, ``sr-Latn-RS``, ``es-419``.
LOCALE_PATTERN = r"^[a-z]{2,3}(-[A-Z][a-z]{3})?-([A-Z]{2}|[0-9]{3})$"
#: A DNS-1123 subdomain (names of Secrets, PVCs).
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
#: A resource quantity written as a string: ``500m``, ``1Gi``, ``2``.
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"

Quantity = Annotated[int | Annotated[str, Field(pattern=QUANTITY_PATTERN, max_length=64)], Field(
    description="A Kubernetes resource quantity, e.g. 500m, 2, 1Gi.")]
Name = Annotated[str, Field(min_length=1, max_length=253, pattern=NAME_PATTERN)]


def _whole(value: float | None) -> int:
    """A recognizer setting's declared number as this API's integer (an error at import if it is fractional)."""
    if value is None or value != int(value):
        raise ValueError(f"{value!r} is not a whole number")
    return int(value)


# What fields below pass on to a recognizer setting take from its declaration (speech_recognizer.settings),
# never retyped: the operator ships the recognizer's package (pyproject's [operator] extra installs its
# pure-Python parts; settings imports the standard library, the contract and Starlette only).
# Upper bounds the recognizer does not set (warm-ups per pod, the idle seconds) are this API's own.
_DRAIN = declared("drain_seconds")
_DECODERS = declared("decoder_max_count")
_WARMUP_COUNT = declared("warmup_count")
_WARMUP_SECONDS = declared("warmup_seconds")
_MAX_CONNECTIONS = declared("max_connections")
_CONNECTION_IDLE = declared("connection_idle_seconds")
_AUDIO_IDLE = declared("audio_idle_seconds")
#: Most decoders or warm-up recognizers a pod may be asked for: the most the recognizer's default gives on any node,
#: what a pod whose limits bound neither is sized for (its /tmp, speech_operator.builders.pod_decoders).
MAX_DECODERS_PER_POD = MAX_DEFAULT_DECODERS
#: Longest a stream may send no audio before it is ended (``audioIdleSeconds``): the recognizer sets no
#: upper bound; an hour is as long as its default ``MaxSessionSeconds`` lets a stream hold its decoder.
MAX_AUDIO_IDLE_SECONDS = 3600


#: Recognizer settings this API's own fields set (or the pods' contract fixes: its port, the mount paths, the
#: download step's): ``spec.settings`` may not set them. The builders emit no other key (a test checks).
OWNED_SETTINGS: Final = frozenset({
    contract.EULA, contract.BILLING, contract.API_KEY, contract.LOCALE, contract.MOUNTS_LICENSE, contract.MOUNTS_OUTPUT,
    contract.MOUNTS_MODELS, contract.MODEL_URL, contract.MODEL_SHA256, contract.MODEL_CA_FILE, contract.DOWNLOAD_MODEL,
    "DownloadLicense",
    contract.DECODER_MAX_COUNT, contract.CONTAINER_CPU_LIMIT, contract.CONTAINER_MEMORY_LIMIT, contract.WARMUP_COUNT,
    contract.WARMUP_SECONDS, contract.MAX_CONNECTIONS, contract.CONNECTION_IDLE_SECONDS, contract.AUDIO_IDLE_SECONDS,
    contract.DRAIN_SECONDS, contract.LOG_LEVEL, "Host", "Port"})
#: The recognizer settings ``spec.settings`` may set: every other one it declares, by its canonical key.
SETTABLE: Final = tuple(s.key for s in KNOWN if s.key not in OWNED_SETTINGS)
_CONVERTERS = {s.key: s.convert for s in KNOWN}
#: One value per key ``spec.settings`` may set (:data:`SETTABLE`): the map's bound.
MAX_SETTINGS = len(SETTABLE)
SETTINGS_MESSAGE = "settings: each key must be one of " + ", ".join(SETTABLE) + " (the spec's own fields set the others)"

#: The labels the operator puts on what it makes (:mod:`speech_operator.builders`), besides those under ``GROUP/``:
#: ``spec.labels`` may set neither (its selectors and watches rely on them).
OPERATOR_LABELS: Final = ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component",
                          "app.kubernetes.io/managed-by")
MAX_LABELS = 32
#: A label key (apimachinery's IsQualifiedName): an optional DNS subdomain prefix and ``/``, then a name of at most
#: 63 characters; and a label value (IsValidLabelValue, with its maxLength of 63).
LABEL_KEY: Final = re.compile(r"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                              r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
LABEL_VALUE: Final = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
LABELS_MESSAGE = ("labels: no key may be one the operator sets (" + ", ".join(OPERATOR_LABELS) + ") or under "
                  f"{GROUP}/")


def _above(value: float | None) -> int:
    """The least whole number greater than a recognizer setting's exclusive lower bound (``above``)."""
    if value is None:
        raise ValueError("no lower bound declared")
    return math.floor(value) + 1


def cel(rule: str, message: str) -> dict[str, Any]:
    """One ``x-kubernetes-validations`` entry, attached to a model's JSON schema."""
    return {"rule": rule, "message": message}


def both_or_neither(a: str, b: str) -> str:
    """The CEL rule "fields a and b are set together".

    Not ``has(self.a) == has(self.b)``: kube-apiserver 1.25.0 (cel-go v0.12.4) estimates ``==`` of two values
    whose size it does not know at 2^64 - 1 and refuses the CRD (tests/test_crd_cost.py); a conditional costs 1.
    """
    return f"has(self.{a}) ? has(self.{b}) : !has(self.{b})"


# Bounds of the spec's free-form maps and lists. kopf keeps its record of the last handled spec (the annotation
# speech-operator.io/last-handled-configuration, the spec's JSON) within the 256 KiB that ALL annotations of an object
# may take: unbounded, a spec over about 256 KiB less its own annotations (128 KiB when client-side kubectl apply keeps
# its copy, kubectl.kubernetes.io/last-applied-configuration) was taken by the API server and then broke kopf's write of
# its record, retried without end. Each bound is well above what a real spec holds (a pod carries a handful of
# annotations, node labels and tolerations, one or two spread constraints), and a spec at every bound at once takes
# about 189 KiB in ASCII (tests/test_crd_bounds.py measures it from the CRD): its record fits with 67 KiB to spare.
# Strings run short of their bounds in practice, so kubectl apply's copy fits beside it too but at the extremes.
# affinity and each toleration are kept as the pods take them (core/v1 types whose fields grow with Kubernetes),
# bounded in count only. A SpeechToText whose record would still not fit (a spec near every bound applied with
# client-side kubectl apply, long non-ASCII values, a huge affinity, large annotations of one's own) is Degraded
# (SpecTooLarge) and changes nothing (speech_operator.record).
#: A map key (an annotation's or a label's: apimachinery's qualified name): a DNS subdomain prefix of at most 253
#: characters, ``/``, a name of at most 63. Bounded by a CEL rule: a structural schema cannot bound a map's keys.
KEY_MAX = 317
#: Annotations on the pods or the Service: a pod carries a handful (a service mesh's, a scraper's, a secrets agent's,
#: the autoscaler's safe-to-evict), a cloud load balancer's Service 10 to 20 (the AWS Load Balancer Controller reads
#: some 40: scheme, subnets, security groups, certificates, health checks, attributes, tags), each value at most 1 KiB
#: (an ARN list, a JSON snippet; a secrets agent's template belongs in a ConfigMap).
MAX_ANNOTATIONS = 16
MAX_SERVICE_ANNOTATIONS = 32
ANNOTATION_VALUE_MAX = 1024
#: Node labels the pods must match (a pool, a zone, an architecture, an accelerator: a few), and tolerations (a taint or
#: two per dedicated pool, with the default not-ready/unreachable ones).
MAX_NODE_SELECTOR = 16
MAX_TOLERATIONS = 16
#: A label value (apimachinery's IsValidLabelValue).
LABEL_VALUE_MAX = 63
#: A core/v1 Toleration's fields (key, operator, value, effect, tolerationSeconds) and Affinity's (nodeAffinity,
#: podAffinity, podAntiAffinity): bounds on what may be given besides them.
TOLERATION_FIELDS = 5
AFFINITY_FIELDS = 3


def _keys_bounded(value: dict[str, Any]) -> dict[str, Any]:
    """What :func:`keys_rule` asks, for the models."""
    long = next((k for k in value if len(k) > KEY_MAX), None)
    if long is not None:
        raise ValueError(f"the key {long[:80]!r}... is longer than {KEY_MAX} characters")
    return value


def keys_rule() -> dict[str, Any]:
    """The CEL rule bounding a map's keys to :data:`KEY_MAX` characters (a new dict each time: YAML would alias one
    shared by two nodes)."""
    return cel(f"self.all(k, size(k) <= {KEY_MAX})", f"each key at most {KEY_MAX} characters")


#: An annotation's value, bounded (:data:`ANNOTATION_VALUE_MAX`).
AnnotationValue = Annotated[str, Field(max_length=ANNOTATION_VALUE_MAX)]
#: Annotations of the pods (:data:`MAX_ANNOTATIONS`) and of the Service (:data:`MAX_SERVICE_ANNOTATIONS`), keys bounded.
Annotations = Annotated[dict[str, AnnotationValue], Field(
    max_length=MAX_ANNOTATIONS, json_schema_extra={"x-kubernetes-validations": [keys_rule()]}),
    AfterValidator(_keys_bounded)]
ServiceAnnotations = Annotated[dict[str, AnnotationValue], Field(
    max_length=MAX_SERVICE_ANNOTATIONS, json_schema_extra={"x-kubernetes-validations": [keys_rule()]}),
    AfterValidator(_keys_bounded)]
#: Node labels the pods must match, bounded (:data:`MAX_NODE_SELECTOR`).
NodeSelector = Annotated[dict[str, Annotated[str, Field(max_length=LABEL_VALUE_MAX)]], Field(
    max_length=MAX_NODE_SELECTOR, json_schema_extra={"x-kubernetes-validations": [keys_rule()]}),
    AfterValidator(_keys_bounded)]


class _Model(BaseModel):
    """Base for all API types: camelCase field names as written, unknown fields rejected."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, use_attribute_docstrings=True)


class SecretKeyRef(_Model):
    """A key of a Secret in the SpeechToText's namespace."""

    name: Name
    """Name of the Secret."""
    key: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")]
    """Key within the Secret's data."""


class LocalObjectReference(_Model):
    """An object in the SpeechToText's namespace, by name (core/v1 LocalObjectReference)."""

    name: Name
    """Its name."""


MAX_PULL_SECRETS = 8


class ConfigMapKeyRef(_Model):
    """A key of a ConfigMap in the SpeechToText's namespace."""

    name: Name
    """Name of the ConfigMap."""
    key: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")] = "ca.crt"
    """Key within the ConfigMap's data (ca.crt when unset; OpenShift's injected bundle: ca-bundle.crt)."""


class CaBundle(_Model):
    """CA certificates (PEM, one or more) to trust, from where a cluster keeps them."""

    configMap: ConfigMapKeyRef
    """A ConfigMap key holding them: one of your own (kubectl create configmap NAME --from-file=ca.crt=FILE), a
    trust-manager Bundle's target, or OpenShift's injected trusted CA bundle (key ca-bundle.crt)."""


class PersistentVolumeClaimSource(_Model):
    """An existing PersistentVolumeClaim in the SpeechToText's namespace."""

    claimName: Name
    """Name of the PersistentVolumeClaim."""


#: Node directories no SpeechToText may mount, nor anything below them: the system's configuration,
#: kernel interfaces and devices, the kubelet's and container runtimes' state (their sockets and
#: every pod's Secrets). Regular expressions of the path after its leading ``/`` (``/+``: ``//`` counts as ``/``).
SYSTEM_HOST_PATHS = ("etc", "proc", "sys", "dev", "boot", "root", "run", "var/+run", "var/+lib/+kubelet",
                     "var/+lib/+containerd", "var/+lib/+docker", "var/+lib/+containers", "usr", "bin", "sbin",
                     "lib", "lib32", "lib64")
#: ``/`` itself and the directories that hold system ones (``/var``, ``/var/lib``): refused, not what is below them.
SYSTEM_HOST_PATH_PARENTS = r"^/*$|^/+var(/+lib)?/*$"
SYSTEM_HOST_PATH_RULE = (
    f"!self.path.matches('{SYSTEM_HOST_PATH_PARENTS}') && !{list(SYSTEM_HOST_PATHS)}"
    ".exists(d, self.path.matches('^/+' + d + '(/.*)?$'))"
)
#: A path with a ``.`` or ``..`` segment (it could lead anywhere).
DOT_SEGMENT_PATTERN = r"(^|/)[.][.]?(/|$)"  # [.], not a backslash: the CEL string needs no escape
SYSTEM_HOST_PATH_MESSAGE = ("hostPath.path must not be /, /var, /var/lib, a system directory ("
                            + ", ".join("/" + p.replace("/+", "/") for p in SYSTEM_HOST_PATHS) + ") or below one")
DOT_SEGMENT_MESSAGE = "hostPath.path must not hold . or .. segments"


def is_system_host_path(path: str) -> bool:
    """What :data:`SYSTEM_HOST_PATH_RULE` refuses, for the models."""
    return bool(re.search(SYSTEM_HOST_PATH_PARENTS, path)) or any(
        re.search(f"^/+{d}(/.*)?$", path) for d in SYSTEM_HOST_PATHS)


class HostPathSource(_Model):
    """A directory on the node (the operator mounts only those under the prefixes its policy allows)."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        cel(SYSTEM_HOST_PATH_RULE, SYSTEM_HOST_PATH_MESSAGE),
        cel(f"!self.path.matches('{DOT_SEGMENT_PATTERN}')", DOT_SEGMENT_MESSAGE),
    ]})

    path: Annotated[str, Field(min_length=1, max_length=4096, pattern=r"^/")]
    """Absolute path on the node; never /, a system directory or below one."""
    type: Literal["", "DirectoryOrCreate", "Directory"] = ""
    """hostPath type; empty means no check."""

    @model_validator(mode="after")
    def _safe(self) -> HostPathSource:
        if is_system_host_path(self.path):
            raise ValueError(SYSTEM_HOST_PATH_MESSAGE)
        if re.search(DOT_SEGMENT_PATTERN, self.path):
            raise ValueError(DOT_SEGMENT_MESSAGE)
        return self


#: The models emptyDir's sizeLimit of a model.url or a catalog model of unknown size, when the spec sets neither it nor
#: ModelMaxSizeMB (SpeechToTextSpec.download_bound).
_MODELS_DEFAULT_SIZE = mebibytes(scratch.download_bytes(declared("model_max_size_mb").default))
#: The models emptyDir's sizeLimit of a catalog model, for one (SpeechToTextSpec.download_bound).
_KO_MODELS_SIZE = mebibytes(models.download_bound("ko-KR", None, declared("model_max_size_mb").default, False).folder_bytes)


class EmptyDirSource(_Model):
    """A scratch directory that lives as long as the pod."""

    medium: Literal["", "Memory"] = ""
    """Storage medium; Memory means tmpfs."""
    sizeLimit: Quantity | None = Field(default=None, description=(
        "Maximum size of the directory, past which the kubelet evicts the pod (Memory: its tmpfs is full). Emitted as "
        "given; unset, the models volume (model.volume) gets what the model download may write there at once (a "
        f"catalog model's zip and {models.CATALOG_UNPACK_RATIO} times it where the catalog knows its size, e.g. "
        f"{_KO_MODELS_SIZE} for ko-KR; else its zip and the model it unpacks to, each up to settings "
        f"{contract.MODEL_MAX_SIZE_MB} MB, {_MODELS_DEFAULT_SIZE} by default: see model.volume), the license and "
        "output ones none. A model.volume sizeLimit smaller than "
        "that is refused: the SpeechToText turns Degraded (InvalidSpec) and nothing is changed. Each emptyDir not on "
        "Memory counts to the recognizer's ephemeral-storage request."))


_ONE_SOURCE = (
    "(has(self.persistentVolumeClaim) ? 1 : 0) + (has(self.hostPath) ? 1 : 0)"
    " + (has(self.emptyDir) ? 1 : 0) == 1"
)


class VolumeSource(_Model):
    """Where a mount's data lives: exactly one of persistentVolumeClaim, hostPath or emptyDir."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        cel(_ONE_SOURCE, "exactly one of persistentVolumeClaim, hostPath or emptyDir must be set"),
    ]})

    persistentVolumeClaim: PersistentVolumeClaimSource | None = None
    """An existing PersistentVolumeClaim."""
    hostPath: HostPathSource | None = None
    """A directory on the node."""
    emptyDir: EmptyDirSource | None = None
    """A per-pod scratch directory."""

    @model_validator(mode="after")
    def _exactly_one(self) -> VolumeSource:
        if sum(x is not None for x in (self.persistentVolumeClaim, self.hostPath, self.emptyDir)) != 1:
            raise ValueError("exactly one of persistentVolumeClaim, hostPath or emptyDir must be set")
        return self


class ModelSpec(_Model):
    """Which Vosk model to serve and where it is kept.

    By default the model for ``spec.locale`` is downloaded from the recognizer's catalog into a
    per-pod emptyDir. Set ``url`` + ``sha256`` for a model of your own, ``volume`` to keep the
    download (a PVC survives restarts), or ``download: false`` with a PVC or hostPath that
    already holds the model (disconnected clusters).
    """

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        cel(both_or_neither("url", "sha256"), "model.url and model.sha256 must be set together"),
        cel("!has(self.url) || !has(self.download) || self.download",
            "model.url needs download: true"),
        cel("!has(self.download) || self.download || (has(self.volume) && !has(self.volume.emptyDir))",
            "download: false needs a persistentVolumeClaim or hostPath volume that holds the model"),
        cel("!has(self.caBundle) || !has(self.download) || self.download", "model.caBundle needs download: true"),
    ]})

    url: Annotated[str, Field(pattern=r"^https?://", max_length=2048)] | None = None
    """URL of a model archive (zip) to download instead of the catalog's."""
    sha256: Annotated[str, Field(pattern=r"^[a-f0-9]{64}$", max_length=64)] | None = None
    """SHA-256 of the archive at url (hex, lower case)."""
    volume: VolumeSource | None = Field(default=None, description=(
        "Where models are kept; unset, an emptyDir sized for the download (its sizeLimit what the download may write "
        f"there at once, which it holds itself to: a catalog model's zip and {models.CATALOG_UNPACK_RATIO} times it "
        f"where the catalog knows its size, e.g. {_KO_MODELS_SIZE} for ko-KR; with url, settings "
        f"{contract.MODEL_MAX_SIZE_MB} or a catalog model of unknown size, twice {contract.MODEL_MAX_SIZE_MB} MB and "
        f"1 MiB, {_MODELS_DEFAULT_SIZE} by default: set {contract.MODEL_MAX_SIZE_MB} near your model's size to ask for "
        "less), which the recognizer's ephemeral-storage request counts. An emptyDir given here without a sizeLimit "
        "gets the same, and one whose own sizeLimit cannot hold that is refused (Degraded, InvalidSpec); a "
        "persistentVolumeClaim keeps the model across restarts and off the node's disk."))
    download: bool = True
    """Download the model when it is missing from the volume."""
    caBundle: CaBundle | None = None
    """CA certificates the model download trusts besides the image's own (the recognizer's ModelCaFile): the CA that
    signs your model mirror (url, settings ModelCatalogUrl), or a TLS-intercepting proxy's (settings HTTP_PROXY).
    Mounted read-only into the download init container only. Until the ConfigMap and its key exist the pods cannot
    start (they stay in ContainerCreating) and the SpeechToText is Degraded (MissingDependency)."""

    @model_validator(mode="after")
    def _rules(self) -> ModelSpec:
        if (self.url is None) != (self.sha256 is None):
            raise ValueError("model.url and model.sha256 must be set together")
        if self.url is not None and not self.download:
            raise ValueError("model.url needs download: true")
        if not self.download and (self.volume is None or self.volume.emptyDir is not None):
            raise ValueError("download: false needs a persistentVolumeClaim or hostPath volume that holds the model")
        if self.caBundle is not None and not self.download:
            raise ValueError("model.caBundle needs download: true")
        return self


class ResourceList(_Model):
    """CPU and memory amounts."""

    cpu: Quantity | None = None
    """CPU, e.g. 500m or 2."""
    memory: Quantity | None = None
    """Memory, e.g. 1Gi."""


class Resources(_Model):
    """Compute resources of the recognizer container."""

    requests: ResourceList = ResourceList(cpu="500m", memory="1Gi")
    """Guaranteed amounts; defaults fit a Vosk small model."""
    limits: ResourceList = ResourceList(cpu="2", memory="3Gi")
    """Maximum amounts; the memory holds the model and a decoder per third of a CPU each with ten minutes of varied speech
    (2Gi did not: bench/notes.md, "Memory")."""


class WarmupSpec(_Model):
    """Recognizers each pod warms at start-up, before it reports ready (the recognizer's Warmup:* settings)."""

    count: Annotated[int, Field(ge=_whole(_WARMUP_COUNT.minimum), le=MAX_DECODERS_PER_POD)] | None = None
    """Recognizers warmed per pod (Warmup:Count; 0: none); the recognizer's default, one per decoder up to 3 per CPU, when unset."""
    seconds: Annotated[int, Field(ge=1, le=60)] | None = Field(default=None, description=(
        f"Seconds of audio each warm-up decodes (Warmup:Seconds); the recognizer's default ({_WARMUP_SECONDS.default:g}) when unset."))


class ConnectionsSpec(_Model):
    """Recognition WebSockets (``/vosk``, ``/``, the Speech SDK's) each pod keeps open: the recognizer's
    MaxConnections and ConnectionIdleSeconds. A Speech SDK app keeps its connection between recognitions."""

    max: Annotated[int, Field(ge=_whole(_MAX_CONNECTIONS.minimum), le=_whole(_MAX_CONNECTIONS.maximum))] | None = Field(
        default=None, description=(
            f"Recognition WebSockets a pod keeps open at once, with or without a stream (MaxConnections); more are closed "
            f"with 1013 (a Speech SDK connection once its request begins, after a turn that fails TooManyRequests); the "
            f"recognizer's default ({_MAX_CONNECTIONS.default}) when unset. With spec.autoscaling, "
            "pods are added before the connections on each reach four fifths of it."))
    idleSeconds: Annotated[int, Field(ge=_whole(_CONNECTION_IDLE.minimum), le=_whole(_CONNECTION_IDLE.maximum))] | None = Field(
        default=None, description=(
            f"Seconds a recognition WebSocket with no stream in progress may send nothing before it is closed with 1000 "
            f"(ConnectionIdleSeconds; the Speech SDK connects again at its next recognition); the recognizer's default "
            f"({_CONNECTION_IDLE.default:g}) when unset."))


class ServiceSpec(_Model):
    """The Service in front of the recognizer pods."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        cel("self.type != 'ClusterIP' || !has(self.nodePort)", "nodePort needs type NodePort or LoadBalancer"),
    ]})

    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    """Service type."""
    port: Annotated[int, Field(ge=1, le=65535)] = contract.PORT
    """Port the Service listens on (the pods listen on 5000)."""
    nodePort: Annotated[int, Field(ge=30000, le=32767)] | None = None
    """Fixed node port for NodePort and LoadBalancer Services."""
    annotations: ServiceAnnotations = Field(default_factory=dict)
    """Annotations for the Service (e.g. for a cloud load balancer)."""
    ipFamilyPolicy: Literal["SingleStack", "PreferDualStack", "RequireDualStack"] | None = None
    """IP families of the Service on a dual-stack cluster (the pods listen on both): unset, the cluster's default, SingleStack."""

    @model_validator(mode="after")
    def _node_port(self) -> ServiceSpec:
        if self.type == "ClusterIP" and self.nodePort is not None:
            raise ValueError("nodePort needs type NodePort or LoadBalancer")
        return self


class AutoscalingSpec(_Model):
    """Replicas from live sessions: the operator reads each ready pod's sessions, decoders, connections
    and connection cap (``GET /sessions``), keeps the sessions per pod near the target and the
    connections per pod below four fifths of the cap."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        cel("self.minReplicas <= self.maxReplicas", "autoscaling.minReplicas must not exceed maxReplicas"),
    ]})

    minReplicas: Annotated[int, Field(ge=0, le=1000)] = 1
    """Fewest pods; 0 lets an idle locale rest at zero pods (the gateway wakes it on its next request)."""
    maxReplicas: Annotated[int, Field(ge=1, le=1000)] = 10
    """Most pods."""
    targetSessionsPerReplica: Annotated[int, Field(ge=1, le=1000)] | None = None
    """Sessions per pod to keep near; when unset, four fifths of the decoders each pod reports (DecoderMaxCount), at least 1."""
    scaleDownDelaySeconds: Annotated[int, Field(ge=0, le=86400)] = 300
    """How long fewer pods must have been enough before the operator removes any."""
    idleSecondsToZero: Annotated[int, Field(ge=0, le=604800)] = 600
    """With minReplicas 0: how long a locale must have had no session and no client connected before it goes to zero pods."""

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingSpec:
        if self.minReplicas > self.maxReplicas:
            raise ValueError("autoscaling.minReplicas must not exceed maxReplicas")
        return self


#: A label key or a topology key: an optional DNS-subdomain-like prefix and ``/``, then a name (the API server checks
#: the prefix's dots further when it takes the Deployment).
LABEL_KEY_PATTERN = r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
LabelKey = Annotated[str, Field(min_length=1, max_length=KEY_MAX, pattern=LABEL_KEY_PATTERN)]
#: Terms of a label selector a spread constraint counts pods by (its matchLabels, matchExpressions, matchLabelKeys:
#: one or two), and values of one expression (a few names).
MAX_SELECTOR_TERMS = 4
MAX_SELECTOR_VALUES = 8


class LabelSelectorRequirement(_Model):
    """One expression of a label selector (meta/v1 LabelSelectorRequirement)."""

    key: LabelKey
    """The label key."""
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    """How the key's value relates to values."""
    values: Annotated[list[Annotated[str, Field(max_length=LABEL_VALUE_MAX)]], Field(
        max_length=MAX_SELECTOR_VALUES)] | None = None
    """Values for In and NotIn."""


class LabelSelector(_Model):
    """Which pods (meta/v1 LabelSelector)."""

    matchLabels: Annotated[dict[str, Annotated[str, Field(max_length=LABEL_VALUE_MAX)]], Field(
        max_length=MAX_SELECTOR_TERMS, json_schema_extra={"x-kubernetes-validations": [keys_rule()]}),
        AfterValidator(_keys_bounded)] | None = None
    """Labels the pods carry."""
    matchExpressions: Annotated[list[LabelSelectorRequirement], Field(max_length=MAX_SELECTOR_TERMS)] | None = None
    """Expressions the pods' labels meet."""


SPREAD_MIN_DOMAINS_MESSAGE = "minDomains needs whenUnsatisfiable: DoNotSchedule"


class TopologySpreadConstraint(_Model):
    """How the pods spread over a topology (core/v1 TopologySpreadConstraint); labelSelector: this SpeechToText's pods when unset."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        cel("!has(self.minDomains) || self.whenUnsatisfiable == 'DoNotSchedule'", SPREAD_MIN_DOMAINS_MESSAGE),
    ]})

    maxSkew: Annotated[int, Field(ge=1)]
    """Most the number of matching pods may differ between two domains (nodes, zones)."""
    topologyKey: LabelKey
    """Node label whose values are the domains: kubernetes.io/hostname (nodes), topology.kubernetes.io/zone (zones)."""
    whenUnsatisfiable: Literal["DoNotSchedule", "ScheduleAnyway"]
    """DoNotSchedule: a pod that would break maxSkew stays Pending; ScheduleAnyway: it is placed where it breaks it least."""
    labelSelector: LabelSelector | None = None
    """The pods counted; this SpeechToText's pods when unset."""
    matchLabelKeys: Annotated[list[LabelKey], Field(max_length=MAX_SELECTOR_TERMS)] | None = Field(default=None, description=(
        "Pod labels whose values on the incoming pod also select the pods counted, e.g. [pod-template-hash]: a "
        "rollout's new pods spread among themselves (Kubernetes 1.27+; older API servers drop it)."))
    minDomains: Annotated[int, Field(ge=1)] | None = None
    """Fewest domains counted (with DoNotSchedule)."""
    nodeAffinityPolicy: Literal["Honor", "Ignore"] | None = None
    """Whether nodeSelector and node affinity limit the domains counted (Honor when unset)."""
    nodeTaintsPolicy: Literal["Honor", "Ignore"] | None = None
    """Whether taints the pods do not tolerate limit the domains counted (Ignore when unset)."""

    @model_validator(mode="after")
    def _min_domains(self) -> TopologySpreadConstraint:
        if self.minDomains is not None and self.whenUnsatisfiable != "DoNotSchedule":
            raise ValueError(SPREAD_MIN_DOMAINS_MESSAGE)
        return self


#: At most this many spread constraints (one per topology and policy is all a pod needs: nodes, zones, regions). It
#: was 8 before the other bounds came, and stays 8: a stored SpeechToText with more would be refused at its next write
#: (its finalizer's removal included, on a cluster without CRD validation ratcheting, before 1.30).
MAX_SPREAD_CONSTRAINTS = 8
SPREAD_UNIQUE_MESSAGE = "topologySpreadConstraints: each topologyKey and whenUnsatisfiable pair at most once"


LogLevel = Literal["Trace", "Debug", "Information", "Warning", "Error", "Critical", "None"]


class SpeechToTextSpec(_Model):
    """The desired recognizer for one locale."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        cel(both_or_neither("billing", "apiKeySecretRef"), "billing and apiKeySecretRef must be set together"),
    ]})

    locale: Annotated[str, Field(pattern=LOCALE_PATTERN, max_length=16)]
    """Locale served, e.g. en-US."""
    eula: Literal["accept"]
    """Set to accept to accept the license terms of the recognizer and the model."""
    replicas: Annotated[int, Field(ge=0, le=1000)] = 1
    """Number of recognizer pods (kubectl scale, HPAs); with autoscaling set, only where the autoscaler starts from."""
    autoscaling: AutoscalingSpec | None = None
    """Replicas from live sessions, between minReplicas and maxReplicas (0 allowed); unset: spec.replicas."""
    image: Annotated[str, Field(min_length=1, max_length=512)] | None = None
    """Recognizer image repository; the operator's default when unset."""
    version: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")] | None = None
    """Recognizer image tag; the operator's default when unset."""
    resources: Resources = Field(default=Resources(), description=(
        "CPU and memory requests and limits. The recognizer's ephemeral-storage request is not set here: the operator "
        f"requests what the pod's emptyDirs may hold on the node's disk (/tmp: {scratch.SPILL_BYTES >> 20} MiB of read-ahead and an upload of "
        "MaxAudioSeconds per decoder; "
        f"the models emptyDir: a catalog model's zip and {models.CATALOG_UNPACK_RATIO} times it, else twice "
        f"{contract.MODEL_MAX_SIZE_MB} MB: see model.volume), so that the scheduler places the pod on a node "
        f"whose disk holds them. To ask for less on nodes with small disks, lower settings {contract.MODEL_MAX_SIZE_MB} "
        "near your model's size or keep the models on a persistentVolumeClaim (model.volume): a request below what "
        "the emptyDirs may hold would place the pod on a node whose disk does not hold them."))
    billing: Annotated[str, Field(pattern=r"^https?://", max_length=2048)] | None = None
    """Billing endpoint passed to the recognizer as Billing=."""
    apiKeySecretRef: SecretKeyRef | None = None
    """Secret key holding the API key (passed as env ApiKey; never inline)."""
    model: ModelSpec = ModelSpec()
    """Which model to serve and where it is kept."""
    license: VolumeSource | None = None
    """Volume mounted at Mounts:License (disconnected use)."""
    output: VolumeSource | None = None
    """Volume mounted at Mounts:Output for logs and usage records."""
    chownVolumes: bool = Field(default=True, description=(
        "Give PVC and hostPath volumes to the recognizer's user (uid/gid 65532) in an init container that runs as root "
        "with CHOWN and FOWNER only. Set false where the namespace enforces the restricted Pod Security Standard (it "
        "refuses any container running as root): the volumes must then be writable by 65532 already (owned by it, or "
        "on storage that applies the pods' fsGroup 65532)."))
    decoderMaxCount: Annotated[int, Field(ge=_whole(_DECODERS.minimum), le=MAX_DECODERS_PER_POD)] | None = Field(
        default=None, description=(
            "Concurrent decoders per pod (DecoderMaxCount); unset, the recognizer's default: 3 per CPU of "
            f"resources.limits.cpu rounded up (of the node's CPUs without a CPU limit), at most {MAX_DEFAULT_DECODERS} "
            f"and at most what resources.limits.memory holds ({DECODER_MIB} MiB each beyond what the recognizer holds with its "
            "model loaded), on any node: the pods pass their limits to the recognizer (the downward API: settings "
            f"{contract.CONTAINER_CPU_LIMIT} and {contract.CONTAINER_MEMORY_LIMIT}), which counts no more than they say "
            "where its cgroup says more (a kubelet that does not enforce CPU limits). The pod's /tmp emptyDir (its sizeLimit) and ephemeral-storage request are sized for that "
            f"many ({scratch.SPILL_BYTES >> 20} MiB of read-ahead and an upload of MaxAudioSeconds each)."))
    warmup: WarmupSpec | None = None
    """Start-up warm-up of each pod; the recognizer's defaults when unset."""
    connections: ConnectionsSpec | None = None
    """Recognition WebSockets each pod keeps open, and how long an idle one stays; the recognizer's defaults when unset."""
    audioIdleSeconds: Annotated[int, Field(ge=_above(_AUDIO_IDLE.above), le=MAX_AUDIO_IDLE_SECONDS)] | None = Field(
        default=None, description=(
            f"Seconds a WebSocket stream may send no audio before it is answered what its audio gave and closed, its "
            f"decoder given back (AudioIdleSeconds); the recognizer's default ({_AUDIO_IDLE.default:g}) when unset."))
    settings: Annotated[dict[str, Annotated[str, Field(min_length=1, max_length=2048)]], Field(
        max_length=MAX_SETTINGS, json_schema_extra={"x-kubernetes-validations": [
            cel(f"self.all(k, k in {list(SETTABLE)})", SETTINGS_MESSAGE)]})] = Field(
        default_factory=dict, description=(
            "Other recognizer settings, by their keys (its Key=Value arguments), passed to the pods' containers as "
            "arguments, e.g. MaxAudioSeconds: \"120\", Http:MaxHeaderBytes: \"32768\", ModelCatalogUrl (a mirror), "
            "HTTP_PROXY (the model download's proxy). Keys: " + ", ".join(SETTABLE) + ". A value the recognizer "
            "would refuse is refused: the SpeechToText turns Degraded (InvalidSpec) and nothing is changed."))
    drainSeconds: Annotated[int, Field(ge=_whole(_DRAIN.minimum), le=_whole(_DRAIN.maximum))] = _whole(_DRAIN.default)
    """Seconds a stopping pod lets its running recognitions finish while it refuses new ones (the recognizer's Drain:Seconds); the pod's terminationGracePeriodSeconds adds the preStop pause and a margin."""
    service: ServiceSpec = ServiceSpec()
    """The Service in front of the pods."""
    nodeSelector: NodeSelector = Field(default_factory=dict)
    """Node labels the pods must match."""
    tolerations: Annotated[list[Annotated[dict[str, Any], Field(max_length=TOLERATION_FIELDS)]], Field(
        max_length=MAX_TOLERATIONS)] = Field(default_factory=list)
    """Pod tolerations (core/v1 Toleration)."""
    affinity: Annotated[dict[str, Any], Field(max_length=AFFINITY_FIELDS)] | None = None
    """Pod affinity (core/v1 Affinity)."""
    podAnnotations: Annotations = Field(default_factory=dict)
    """Extra annotations on the pods."""
    labels: Annotated[dict[str, Annotated[str, Field(max_length=LABEL_VALUE_MAX, pattern=LABEL_VALUE)]], Field(
        max_length=MAX_LABELS, json_schema_extra={"x-kubernetes-validations": [cel(
            f"self.all(k, !(k in {list(OPERATOR_LABELS)}) && !k.startsWith('{GROUP}/'))", LABELS_MESSAGE),
            keys_rule()]})] = Field(
        default_factory=dict, description=(
            "Extra labels on everything the operator makes for this SpeechToText: its Deployment, the Deployment's "
            "pods, Service and PodDisruptionBudget (e.g. what a policy engine requires of them); never in a selector. "
            "Not the operator's own (" + ", ".join(OPERATOR_LABELS) + f", {GROUP}/*)."))
    topologySpreadConstraints: Annotated[list[TopologySpreadConstraint], Field(
        max_length=MAX_SPREAD_CONSTRAINTS, json_schema_extra={"x-kubernetes-validations": [cel(
            "self.all(c, self.exists_one(d, d.topologyKey == c.topologyKey && d.whenUnsatisfiable == c.whenUnsatisfiable))",
            SPREAD_UNIQUE_MESSAGE)]})] | None = Field(
        default=None, description=(
            "How the pods spread over nodes and zones (core/v1 TopologySpreadConstraint). Unset: across nodes "
            "(kubernetes.io/hostname) and zones (topology.kubernetes.io/zone), maxSkew 1, ScheduleAnyway (a cluster of "
            "one node or zone still runs every pod); given: these instead; []: none."))
    priorityClassName: Name | None = Field(default=None, description=(
        "PriorityClass of the pods (their scheduling priority, and whom they may preempt); only one the operator's "
        "policy allows (SPEECH_OPERATOR_ALLOWED_PRIORITY_CLASSES); the cluster's default when unset."))
    imagePullSecrets: Annotated[list[LocalObjectReference], Field(max_length=MAX_PULL_SECRETS)] = Field(
        default_factory=list, description=(
            "Secrets (kubernetes.io/dockerconfigjson, in the SpeechToText's namespace) the pods' image is pulled "
            "with, from a private registry or a mirror; one missing is Degraded (MissingDependency)."))
    logLevel: LogLevel = "Information"
    """Console log level of the recognizer."""

    @model_validator(mode="after")
    def _billing_and_key(self) -> SpeechToTextSpec:
        if (self.billing is None) != (self.apiKeySecretRef is None):
            raise ValueError("billing and apiKeySecretRef must be set together")
        return self

    def setting(self, name: str) -> Any:
        """The recognizer setting ``name`` (its :func:`~speech_recognizer.settings.declared` name) the pods run with:
        ``settings``' value, by the recognizer's own parser, else the recognizer's default."""
        known = declared(name)
        raw = self.settings.get(known.key)
        return known.default if raw is None else _CONVERTERS[known.key](raw)

    def download_bound(self) -> scratch.DownloadBound:
        """What the pods' model download may write to the models folder, by the rule its run holds itself to
        (:func:`speech_recognizer.models.download_bound`), of the settings the operator gives it
        (:func:`speech_operator.builders.download_args`): the catalog model's zip and 8 times it where the catalog
        knows its size, unless ``model.url`` or ``ModelMaxSizeMB`` is given (then ``ModelMaxSizeMB``'s: twice it).
        Every models emptyDir is sized by it, and one's own sizeLimit must hold it."""
        return models.download_bound(self.locale, self.model.url, self.setting("model_max_size_mb"),
                                     contract.MODEL_MAX_SIZE_MB in self.settings)

    @model_validator(mode="after")
    def _model_fits_its_folder(self) -> SpeechToTextSpec:
        """A models emptyDir's own sizeLimit holds what the download may write there (:meth:`download_bound`): past it
        the kubelet evicts the pod, or its tmpfs is full, midway through a download."""
        empty = self.model.volume.emptyDir if self.model.volume is not None else None
        limit = quantity(empty.sizeLimit) if empty is not None and empty.sizeLimit is not None else None
        bound = self.download_bound()
        need = bound.folder_bytes
        if limit is not None and limit < need:
            if bound.catalog is not None:
                raise ValueError(
                    f"model.volume.emptyDir.sizeLimit {empty.sizeLimit} cannot hold the model download of "  # type: ignore[union-attr]
                    f"{self.locale} (the catalog's {bound.catalog}, {bound.zip_bytes} bytes, and what it unpacks to, "
                    f"at most {models.CATALOG_UNPACK_RATIO} times it: {mebibytes(need)}): raise sizeLimit to "
                    f"{mebibytes(need)}")
            mb = self.setting("model_max_size_mb")
            fits = math.floor((limit - scratch.MODEL_FOLDER_BYTES) / 2 / 10**6)
            lower = f", or lower settings.{contract.MODEL_MAX_SIZE_MB} to {fits} or less" if fits > 0 else ""
            raise ValueError(
                f"model.volume.emptyDir.sizeLimit {empty.sizeLimit} cannot hold the model download "  # type: ignore[union-attr]
                f"{contract.MODEL_MAX_SIZE_MB}={mb:g} allows (its zip and the model it unpacks to, each up to "
                f"{mb:g} MB: {mebibytes(need)}): raise sizeLimit to {mebibytes(need)}{lower}")
        return self

    @field_validator("topologySpreadConstraints")
    @classmethod
    def _spread_unique(cls, given: list[TopologySpreadConstraint] | None) -> list[TopologySpreadConstraint] | None:
        pairs = [(c.topologyKey, c.whenUnsatisfiable) for c in given or []]
        if len(set(pairs)) != len(pairs):
            raise ValueError(SPREAD_UNIQUE_MESSAGE.removeprefix("topologySpreadConstraints: "))
        return given

    @field_validator("labels")
    @classmethod
    def _labels(cls, labels: dict[str, str]) -> dict[str, str]:
        """Keys as the API server takes them on the children (the CRD bounds the values; a key's form is checked here,
        a regular expression over keys of any length being too costly for the CRD's own rules)."""
        for key in labels:
            if key in OPERATOR_LABELS or key.startswith(f"{GROUP}/"):
                raise ValueError(LABELS_MESSAGE.removeprefix("labels: "))
            if len(key) > 317 or not LABEL_KEY.fullmatch(key) or len(key.partition("/")[0]) > 253:
                raise ValueError(f"{key[:80]!r} is not a label key (an optional DNS subdomain prefix of at most 253 "
                                 "characters and /, then at most 63 letters, digits, '-', '_' or '.', beginning and "
                                 "ending with a letter or digit)")
        return labels

    @field_validator("settings")
    @classmethod
    def _settings(cls, settings: dict[str, str]) -> dict[str, str]:
        """Each one a key the spec's fields leave, with a value the recognizer takes (by its own parser)."""
        for key, value in settings.items():
            if key not in SETTABLE:
                raise ValueError(SETTINGS_MESSAGE.removeprefix("settings: "))
            _CONVERTERS[key](value)  # SettingsError (a ValueError) in the recognizer's own words
        return settings


ConditionType = Literal["Ready", "Progressing", "Degraded"]


#: The longest condition message (metav1.Condition's bound, in characters).
CONDITION_MESSAGE_MAX = 32768


class _Observed(_Model):
    """Base for the status's types: written by the operator and the gateway, read by both, and by the versions before
    and after them while a rollout or a rollback runs both at once. A field a newer version writes is ignored by an
    older reader, which would otherwise refuse the whole object (the gateway routed nothing to it). The spec's types
    stay strict: a spec field the operator does not know is the user's mistake or an outdated CRD, and is said so."""

    model_config = ConfigDict(extra="ignore")


class Condition(_Observed):
    """One observation about the SpeechToText, as Kubernetes conditions go."""

    type: ConditionType
    """Ready, Progressing or Degraded."""
    status: Literal["True", "False", "Unknown"]
    """Whether the condition holds."""
    reason: Annotated[str, Field(min_length=1, max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")]
    """CamelCase reason for the last transition."""
    message: Annotated[str, Field(max_length=CONDITION_MESSAGE_MAX)] = ""
    """Human-readable detail."""
    lastTransitionTime: Annotated[str, Field(json_schema_extra={"format": "date-time"})]
    """When the status last changed."""
    observedGeneration: Annotated[int, Field(ge=0)] | None = None
    """The metadata.generation this condition was computed from."""


class ScaleDecision(_Observed):
    """One change of replicas the autoscaler made."""

    time: Annotated[str, Field(json_schema_extra={"format": "date-time"})]
    """When it was made."""
    replicas: Annotated[int, Field(ge=0)]
    """Pods after it."""
    previous: Annotated[int, Field(ge=0)]
    """Pods before it."""
    reason: Annotated[str, Field(max_length=1024)]
    """Why, in words: the sessions seen, the target, the delay that passed."""


class AutoscalingStatus(_Observed):
    """What the autoscaler saw at its last look, and what it decided."""

    replicas: Annotated[int, Field(ge=0)]
    """Pods the autoscaler wants now (the Deployment's replicas)."""
    sessions: Annotated[int, Field(ge=0)] = 0
    """Live sessions on the ready pods."""
    connections: Annotated[int, Field(ge=0)] = 0
    """Clients connected to the ready pods, with or without a session: a Speech SDK app keeps its
    connection between recognitions, and a pod with clients is not scaled away nor to zero."""
    maxConnections: Annotated[int, Field(ge=1)] | None = None
    """Connections each pod keeps at most (MaxConnections), as the pods report it (the least when they differ):
    pods are added before the connections on each reach four fifths of it."""
    decoders: Annotated[int, Field(ge=0)] | None = None
    """Decoders per pod, as the pods report them."""
    targetSessionsPerReplica: Annotated[int, Field(ge=1)] | None = None
    """The target in force (spec, or derived from the decoders)."""
    lowerSince: Annotated[str, Field(json_schema_extra={"format": "date-time"})] | None = None
    """Since when fewer pods would have been enough (scale-down waits scaleDownDelaySeconds from it)."""
    lastDecision: ScaleDecision | None = None
    """The last change of replicas."""


class ForeignAutoscaler(_Observed):
    """An autoscaler that scales the SpeechToText's Deployment instead of the SpeechToText."""

    kind: str
    """HorizontalPodAutoscaler, or ScaledObject: KEDA's, which scales the Deployment through an HPA of its own."""
    name: str
    """Its name, in the SpeechToText's namespace: where its scaleTargetRef is changed."""
    horizontalPodAutoscaler: str | None = None
    """A ScaledObject's HPA (KEDA's keda-hpa-NAME)."""


class Demand(_Observed):
    """Written by the gateway, not the operator: a request waits there for this locale, which has no ready pod."""

    requestedAt: Annotated[str, Field(json_schema_extra={"format": "date-time"})]
    """When the gateway last asked (it asks again while it still holds requests)."""


class SpeechToTextStatus(_Observed):
    """What the operator observed."""

    conditions: list[Condition] = Field(default_factory=list, json_schema_extra={
        "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]})
    """Ready, Progressing and Degraded."""
    observedGeneration: Annotated[int, Field(ge=0)] | None = None
    """The metadata.generation last reconciled."""
    replicas: Annotated[int, Field(ge=0)] = 0
    """Pods of the recognizer Deployment."""
    desiredReplicas: Annotated[int, Field(ge=0)] = 0
    """Pods the operator wants running: spec.replicas, or with spec.autoscaling the autoscaler's choice."""
    readyReplicas: Annotated[int, Field(ge=0)] = 0
    """Pods that pass the readiness probe."""
    selector: str = ""
    """Label selector of the pods (for the scale subresource and HPAs)."""
    endpoint: str = ""
    """In-cluster URL of the recognizer."""
    autoscaling: AutoscalingStatus | None = None
    """Live sessions and the last scaling decision, with spec.autoscaling."""
    foreignAutoscalers: list[ForeignAutoscaler] | None = None
    """HPAs (KEDA's ScaledObjects among them) that scale the Deployment instead of the SpeechToText (Degraded, reason
    ForeignAutoscaler): its replicas are theirs meanwhile (desiredReplicas is their choice), and at 0 the gateway
    refuses requests at once, since nothing it asks for wakes the locale."""
    demand: Demand | None = None
    """Set by the gateway while it holds requests for this locale with no pod ready (the operator wakes it)."""


#: The object's name also names its Deployment and Service, so it must be a DNS-1035 label.
SERVICE_NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
NAME_RULE = cel(f"self.metadata.name.matches('{SERVICE_NAME_PATTERN}') && size(self.metadata.name) <= 63",
                "metadata.name must be a DNS-1035 label of at most 63 characters (it names the Service)")


def is_name(name: str) -> bool:
    """Whether ``name`` may name a SpeechToText (:data:`NAME_RULE`)."""
    return len(name) <= 63 and re.match(SERVICE_NAME_PATTERN, name) is not None


class SpeechToText(_Model):
    """A recognizer for one locale: a Deployment and a Service running speech_recognizer."""

    model_config = ConfigDict(extra="ignore")

    apiVersion: Literal["speech-operator.io/v1alpha1"] = API_VERSION
    kind: Literal["SpeechToText"] = KIND
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: SpeechToTextSpec
    status: SpeechToTextStatus | None = None

    @model_validator(mode="after")
    def _name(self) -> SpeechToText:
        name = self.metadata.get("name")
        if name is not None and not is_name(name):
            raise ValueError(NAME_RULE["message"])
        return self

    @property
    def name(self) -> str:
        return str(self.metadata["name"])

    @property
    def namespace(self) -> str:
        return str(self.metadata.get("namespace") or "default")
