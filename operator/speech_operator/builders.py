"""Pure builders: a SpeechToText in, the Deployment and Service that run it out.

No I/O here. Every recognizer fact (port, routes, setting names, user) comes from
:mod:`speech_recognizer.contract`, never retyped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from speech_operator import api
from speech_operator.config import POD_IDENTITY_ENV, OperatorConfig
from speech_operator.quantities import mebibytes, quantity
from speech_recognizer import contract, scratch
from speech_recognizer.settings import default_decoders

MANAGER = "speech-operator"
APP_NAME = "speech-recognizer"
LABEL_NAME, LABEL_INSTANCE, LABEL_COMPONENT, LABEL_MANAGED_BY = api.OPERATOR_LABELS
LABEL_LOCALE = f"{api.GROUP}/locale"
#: Every child carries this label; the operator watches children filtered by it.
LABEL_OWNER = f"{api.GROUP}/speechtotext"

CONTAINER = "recognizer"
#: The init containers: the chown step, the model download.
CHOWN_CONTAINER = "chown"
DOWNLOAD_CONTAINER = "download-model"
#: Each container's: when it fails without a termination message, the kubelet keeps the end of its log (the
#: recognizer's and the download's one-line error) in the pod's status, which the SpeechToText's status quotes.
TERMINATION_MESSAGE_POLICY = "FallbackToLogsOnError"
PORT_NAME = "http"
TMP_MOUNT = "/tmp"
#: Where the download init container finds ``spec.model.caBundle``'s ConfigMap key (its ModelCaFile): a folder of
#: its own (a mount over the image's /etc would hide its system CAs), holding that key alone as CA_FILE.
CA_BUNDLE_VOLUME = "model-ca"
CA_BUNDLE_MOUNT = "/model-ca"
CA_FILE = "ca.crt"

Manifest = dict[str, Any]


def selector_labels(stt: api.SpeechToText) -> dict[str, str]:
    """Labels that select this SpeechToText's pods (immutable once the Deployment exists)."""
    return {LABEL_NAME: APP_NAME, LABEL_INSTANCE: stt.name}


def selector(stt: api.SpeechToText) -> str:
    """The pod selector as a string, for ``status.selector`` (scale subresource, HPAs)."""
    return ",".join(f"{k}={v}" for k, v in selector_labels(stt).items())


def labels(stt: api.SpeechToText) -> dict[str, str]:
    """Labels on every child object: ``spec.labels`` and the operator's own."""
    return {
        **stt.spec.labels,
        **selector_labels(stt),
        LABEL_COMPONENT: "speech-to-text",
        LABEL_MANAGED_BY: MANAGER,
        LABEL_OWNER: stt.name,
        LABEL_LOCALE: stt.spec.locale,
    }


def owner_name(meta: Mapping[str, Any]) -> str | None:
    """The SpeechToText an object (its ``metadata``) is a child of: its controller's name when that is a SpeechToText,
    else its :data:`LABEL_OWNER` label's with the operator's ``managed-by`` label; None for any other object. The owner
    reference first: a child whose labels were edited by hand is still the SpeechToText's (and put back)."""
    for ref in meta.get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == api.KIND and ref.get("apiVersion") == api.API_VERSION:
            return str(ref.get("name"))
    labels = meta.get("labels") or {}
    return labels.get(LABEL_OWNER) if labels.get(LABEL_MANAGED_BY) == MANAGER else None


def owner_reference(stt: api.SpeechToText) -> Manifest:
    """A controller owner reference to the SpeechToText, so the garbage collector follows it."""
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "name": stt.name,
        "uid": stt.metadata["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(stt: api.SpeechToText, annotations: dict[str, str] | None = None) -> Manifest:
    meta: Manifest = {
        "name": stt.name,
        "namespace": stt.namespace,
        "labels": labels(stt),
        "ownerReferences": [owner_reference(stt)],
    }
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def image(stt: api.SpeechToText, config: OperatorConfig) -> str:
    return f"{stt.spec.image or config.image}:{stt.spec.version or config.version}"


def endpoint(stt: api.SpeechToText) -> str:
    """In-cluster URL of the recognizer Service."""
    return f"http://{stt.name}.{stt.namespace}.svc:{stt.spec.service.port}"


def secret_refs(spec: api.SpeechToTextSpec) -> list[api.SecretKeyRef]:
    """Secrets the pods need."""
    return [spec.apiKeySecretRef] if spec.apiKeySecretRef else []


def ca_bundle(spec: api.SpeechToTextSpec) -> api.ConfigMapKeyRef | None:
    """The ConfigMap key the model download trusts (``spec.model.caBundle``), when the pods download."""
    bundle = spec.model.caBundle
    return bundle.configMap if bundle is not None and spec.model.download else None


def ca_bundle_volume(ref: api.ConfigMapKeyRef) -> Manifest:
    """The pod volume of ``spec.model.caBundle``: its one key, as :data:`CA_FILE`."""
    return {"name": CA_BUNDLE_VOLUME, "configMap": {"name": ref.name, "items": [{"key": ref.key, "path": CA_FILE}]}}


def claim_names(spec: api.SpeechToTextSpec) -> list[str]:
    """PersistentVolumeClaims the pods mount, in mount order, without repeats."""
    names = [v.persistentVolumeClaim.claimName for v in mounted_volumes(spec).values() if v.persistentVolumeClaim]
    return list(dict.fromkeys(names))


def mounted_volumes(spec: api.SpeechToTextSpec) -> dict[str, api.VolumeSource]:
    """Named data volumes (models, license, output) that are mounted."""
    vols = {"models": models_volume(spec)}
    if spec.license:
        vols["license"] = spec.license
    if spec.output:
        vols["output"] = spec.output
    return vols


MOUNT_PATHS = {
    "models": contract.DEFAULT_MODELS_MOUNT,
    "license": contract.DEFAULT_LICENSE_MOUNT,
    "output": contract.DEFAULT_OUTPUT_MOUNT,
}
MOUNT_SETTINGS = {
    "models": contract.MOUNTS_MODELS,
    "license": contract.MOUNTS_LICENSE,
    "output": contract.MOUNTS_OUTPUT,
}


def volume(name: str, source: api.VolumeSource) -> Manifest:
    """A pod volume from a VolumeSource."""
    if source.persistentVolumeClaim:
        return {"name": name, "persistentVolumeClaim": {"claimName": source.persistentVolumeClaim.claimName}}
    if source.hostPath:
        host: Manifest = {"path": source.hostPath.path}
        if source.hostPath.type:
            host["type"] = source.hostPath.type
        return {"name": name, "hostPath": host}
    assert source.emptyDir is not None  # guaranteed by VolumeSource's validator
    empty: Manifest = {}
    if source.emptyDir.medium:
        empty["medium"] = source.emptyDir.medium
    if source.emptyDir.sizeLimit is not None:
        empty["sizeLimit"] = source.emptyDir.sizeLimit
    return {"name": name, "emptyDir": empty}


def identity(config: OperatorConfig) -> Manifest:
    """The uid and gid the pods ask for: 65532, or none when the platform assigns them (``platform_identity``)."""
    return {} if config.platform_identity else {"runAsUser": contract.RUN_AS_USER, "runAsGroup": contract.RUN_AS_GROUP}


def restricted_security_context(config: OperatorConfig | None = None) -> Manifest:
    """The Pod Security "restricted" profile for one container (as uid/gid 65532 unless ``config`` leaves the ids
    to the platform)."""
    return {
        "runAsNonRoot": True,
        **identity(config or OperatorConfig()),
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _resources(spec: api.SpeechToTextSpec) -> Manifest:
    out: Manifest = {}
    for part in ("requests", "limits"):
        amounts = getattr(spec.resources, part).model_dump(exclude_none=True)
        if amounts:
            out[part] = amounts
    return out



def pod_decoders(spec: api.SpeechToTextSpec) -> int:
    """The most decoders a pod of ``spec`` runs: ``spec.decoderMaxCount``, else the recognizer's default for the
    container's limits, by the recognizer's own rule (:func:`~speech_recognizer.settings.default_decoders`, which it
    may lower once its models load, never raise): its CPU limit's CPUs rounded up, as the recognizer reads the CFS
    quota the kubelet makes of it, and the limits the pod passes it (:func:`limits_env`: a kubelet that enforces no
    CPU limit, or a memory cgroup the container cannot read, change nothing); without a CPU limit any node's, which the
    rule's cap bounds."""
    if spec.decoderMaxCount is not None:
        return spec.decoderMaxCount
    cpu, memory = quantity(spec.resources.limits.cpu), quantity(spec.resources.limits.memory)
    return default_decoders(None if cpu is None else max(1, math.ceil(cpu)), None if memory is None else int(memory))


def tmp_bytes(spec: api.SpeechToTextSpec) -> int:
    """What a pod's recognizer may write to /tmp at most (:func:`speech_recognizer.scratch.tmp_bytes`: its decoders'
    read-ahead spills, an upload per decoder, ``MaxAudioSeconds`` long, from ``spec.settings`` or the default)."""
    return scratch.tmp_bytes(pod_decoders(spec), spec.setting("max_audio_seconds"))


def tmp_quantity(spec: api.SpeechToTextSpec) -> str:
    """:func:`tmp_bytes` as a quantity, in whole MiB rounded up: the /tmp emptyDir's ``sizeLimit``."""
    return mebibytes(tmp_bytes(spec))


def models_volume(spec: api.SpeechToTextSpec) -> api.VolumeSource:
    """The models volume: ``spec.model.volume``, else an emptyDir; an emptyDir without a ``sizeLimit`` gets what the
    download may write there at most (:meth:`~speech_operator.api.SpeechToTextSpec.download_bound`, the rule its run
    holds itself to: a catalog model's zip and 8 times it, else twice ``ModelMaxSizeMB``), one with its own keeps it
    (the spec is refused when it cannot hold that)."""
    given = spec.model.volume or api.VolumeSource(emptyDir=api.EmptyDirSource())
    if given.emptyDir is None or given.emptyDir.sizeLimit is not None:
        return given
    limit = mebibytes(spec.download_bound().folder_bytes)
    return api.VolumeSource(emptyDir=given.emptyDir.model_copy(update={"sizeLimit": limit}))


def ephemeral_bytes(spec: api.SpeechToTextSpec) -> int:
    """The node disk a pod's emptyDirs take at most: /tmp's ``sizeLimit`` and each mounted emptyDir's on disk (the
    models folder's, an output one's; a ``Memory`` one counts as memory, one without a size cannot be counted)."""
    amount = quantity(tmp_quantity(spec)) or 0
    for source in mounted_volumes(spec).values():
        empty = source.emptyDir
        if empty is not None and empty.medium != "Memory" and empty.sizeLimit is not None:
            amount += quantity(empty.sizeLimit) or 0
    return int(amount)


def _recognizer_resources(spec: api.SpeechToTextSpec) -> Manifest:
    """The recognizer's resources, its ``ephemeral-storage`` request what the pod's emptyDirs may hold
    (:func:`ephemeral_bytes`: /tmp, the models folder when it is one), so the scheduler places the pod where a
    node's disk holds it (emptyDirs count to the pod, and the recognizer runs while they hold it all). No
    ``ephemeral-storage`` limit: the kubelet would evict the pod (every stream on it) once all it writes passed it,
    its logs besides; each volume's own ``sizeLimit`` bounds it."""
    out = _resources(spec)
    out["requests"] = {**out.get("requests", {}), "ephemeral-storage": mebibytes(ephemeral_bytes(spec))}
    return out


def recognizer_args(spec: api.SpeechToTextSpec) -> list[str]:
    """Azure-style ``Key=Value`` arguments of the recognizer container."""
    args = [contract.arg(contract.EULA, spec.eula), contract.arg(contract.LOCALE, spec.locale)]
    if spec.billing:
        args.append(contract.arg(contract.BILLING, spec.billing))
    if spec.decoderMaxCount is not None:
        args.append(contract.arg(contract.DECODER_MAX_COUNT, spec.decoderMaxCount))
    warmup = spec.warmup or api.WarmupSpec()
    if warmup.count is not None:
        args.append(contract.arg(contract.WARMUP_COUNT, warmup.count))
    if warmup.seconds is not None:
        args.append(contract.arg(contract.WARMUP_SECONDS, warmup.seconds))
    connections = spec.connections or api.ConnectionsSpec()
    if connections.max is not None:
        args.append(contract.arg(contract.MAX_CONNECTIONS, connections.max))
    if connections.idleSeconds is not None:
        args.append(contract.arg(contract.CONNECTION_IDLE_SECONDS, connections.idleSeconds))
    if spec.audioIdleSeconds is not None:
        args.append(contract.arg(contract.AUDIO_IDLE_SECONDS, spec.audioIdleSeconds))
    args.append(contract.arg(contract.DRAIN_SECONDS, spec.drainSeconds))
    args.append(contract.arg(contract.LOG_LEVEL, spec.logLevel))
    return args + settings_args(spec)


def settings_args(spec: api.SpeechToTextSpec) -> list[str]:
    """``spec.settings`` as ``Key=Value`` arguments, in key order (the pod template does not change with the map's order)."""
    return [contract.arg(key, spec.settings[key]) for key in sorted(spec.settings)]


#: Seconds a pod may take to exit after its drain: uvicorn's shutdown and the process's end.
SHUTDOWN_MARGIN_SECONDS = 10


def termination_grace_seconds(spec: api.SpeechToTextSpec) -> int:
    """The pod's ``terminationGracePeriodSeconds``: the preStop pause, the drain, and a margin.

    The kubelet runs the preStop hook, then sends SIGTERM (the recognizer drains for at most
    ``spec.drainSeconds``), and kills what is left when this runs out.
    """
    return contract.PRE_STOP_SECONDS + spec.drainSeconds + SHUTDOWN_MARGIN_SECONDS


def download_args(spec: api.SpeechToTextSpec) -> list[str]:
    """Arguments of the init container that fetches the model (skipped by the recognizer when present)."""
    args = [
        contract.arg(contract.DOWNLOAD_MODEL, True),
        contract.arg(contract.LOCALE, spec.locale),
        contract.arg(contract.MOUNTS_MODELS, contract.DEFAULT_MODELS_MOUNT),
    ]
    if spec.model.url:
        args.append(contract.arg(contract.MODEL_URL, spec.model.url))
        args.append(contract.arg(contract.MODEL_SHA256, spec.model.sha256))
    if ca_bundle(spec) is not None:
        args.append(contract.arg(contract.MODEL_CA_FILE, f"{CA_BUNDLE_MOUNT}/{CA_FILE}"))
    return args + settings_args(spec)  # a catalog mirror, a proxy, a size limit: the download's own settings


#: Gives the mounted data directories to the recognizer's user. It runs as root (CHOWN/FOWNER
#: only) in the operator's own recognizer image (:attr:`OperatorConfig.trusted_image`), never in
#: ``spec.image``; its Python, so disconnected clusters need no second image.
CHOWN_SCRIPT = (
    "import os, sys\n"
    "uid, gid = int(sys.argv[1]), int(sys.argv[2])\n"
    "for top in sys.argv[3:]:\n"
    "    os.chown(top, uid, gid)\n"
    "    for root, dirs, files in os.walk(top):\n"
    "        for n in dirs + files:\n"
    "            os.lchown(os.path.join(root, n), uid, gid)\n"
)


def needs_chown(spec: api.SpeechToTextSpec, config: OperatorConfig | None = None) -> list[str]:
    """Mounted volumes whose ownership fsGroup cannot be trusted to fix (PVCs, hostPaths); none when the spec
    says their owner is seen to elsewhere (``chownVolumes: false``), or when the platform assigns the ids
    (:func:`chown_not_applied`)."""
    if not spec.chownVolumes or (config is not None and config.platform_identity):
        return []
    return [name for name, v in mounted_volumes(spec).items() if v.persistentVolumeClaim or v.hostPath]


def chown_not_applied(spec: api.SpeechToTextSpec, config: OperatorConfig) -> str | None:
    """Why ``spec.chownVolumes`` is not applied, when it would be but the platform assigns the ids: the step would
    have to run as root and give the volumes to a uid the pods do not know beforehand. The platform's fsGroup gives
    PVCs to the pods' group instead, where their storage supports it (OpenShift applies the fsGroup it assigns)."""
    owned = needs_chown(spec)
    if not owned or not config.platform_identity:
        return None
    return (f"spec.chownVolumes is not applied to {', '.join(owned)}: the platform assigns the pods' uid and fsGroup "
            f"(the operator's {POD_IDENTITY_ENV}=platform), so no step runs as root; a PersistentVolumeClaim is given "
            "to that fsGroup where its storage supports fsGroup, other volumes must be writable by it already")


def init_containers(spec: api.SpeechToTextSpec, img: str, config: OperatorConfig) -> list[Manifest]:
    """The chown step (in the operator's own image) when volumes need it, then the model download (in ``img``)."""
    inits: list[Manifest] = []
    owned = needs_chown(spec, config)
    if owned:
        inits.append({
            "name": CHOWN_CONTAINER,
            "image": config.trusted_image,
            "imagePullPolicy": "IfNotPresent",
            "terminationMessagePolicy": TERMINATION_MESSAGE_POLICY,
            "command": ["python", "-c", CHOWN_SCRIPT,
                        str(contract.RUN_AS_USER), str(contract.RUN_AS_GROUP),
                        *(MOUNT_PATHS[n] for n in owned)],
            "securityContext": {
                "runAsNonRoot": False,
                "runAsUser": 0,
                "runAsGroup": 0,
                "readOnlyRootFilesystem": True,
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"], "add": ["CHOWN", "FOWNER"]},
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            # a CPU limit too: a ResourceQuota on limits.cpu refuses any pod with a container that sets none
            "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"cpu": "500m", "memory": "128Mi"}},
            "volumeMounts": [{"name": n, "mountPath": MOUNT_PATHS[n]} for n in owned],
        })
    if spec.model.download:
        mounts: list[Manifest] = [
            {"name": "tmp", "mountPath": TMP_MOUNT},
            {"name": "models", "mountPath": contract.DEFAULT_MODELS_MOUNT},
        ]
        if ca_bundle(spec) is not None:
            mounts.append({"name": CA_BUNDLE_VOLUME, "mountPath": CA_BUNDLE_MOUNT, "readOnly": True})
        inits.append({
            "name": DOWNLOAD_CONTAINER,
            "image": img,
            "imagePullPolicy": "IfNotPresent",
            "terminationMessagePolicy": TERMINATION_MESSAGE_POLICY,
            "args": download_args(spec),
            "securityContext": restricted_security_context(config),
            "resources": _resources(spec),
            "volumeMounts": mounts,
        })
    return inits


def probes() -> Manifest:
    """The kubelet's checks, all plain GETs without headers (a kubelet sends no API key).

    - startup: ``/status`` answers once the server listens (the model loads and warms
      after that); liveness waits for it, so a slow start is not a failed liveness.
    - readiness: ``/ready``, 200 once the model is loaded and warm, 503 while draining.
    - liveness: ``/status``, which needs no key from the caller (Azure's semantics).
    """
    def get(path: str) -> Manifest:
        return {"httpGet": {"path": path, "port": PORT_NAME}}

    return {
        "startupProbe": {**get(contract.ROUTE_STATUS), "periodSeconds": 2, "timeoutSeconds": 3, "failureThreshold": 90},
        "readinessProbe": {**get(contract.ROUTE_READY), "periodSeconds": 5, "timeoutSeconds": 3, "failureThreshold": 3},
        "livenessProbe": {**get(contract.ROUTE_STATUS), "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 6},
    }


#: The recognizer's settings its own ``resources.limits`` fill in, by the downward API: setting -> (resource, divisor).
#: Millicores and bytes, as precise as the limits (the kubelet rounds up to the divisor); the recognizer rounds the
#: cores up as :func:`pod_decoders` does.
LIMITS_SETTINGS: dict[str, tuple[str, str]] = {
    contract.CONTAINER_CPU_LIMIT: ("limits.cpu", "1m"),
    contract.CONTAINER_MEMORY_LIMIT: ("limits.memory", "1"),
}


def limits_env() -> list[Manifest]:
    """The recognizer container's limits passed to it (:data:`LIMITS_SETTINGS`), so that its default decoders are
    those :func:`pod_decoders` sized /tmp for on any node: its cgroup alone says no CPU limit where the kubelet
    enforces none (``--cpu-cfs-quota=false``: it would count the node's CPUs) and no memory limit where the container
    cannot read its memory cgroup. Where a limit is not set the kubelet gives the node's allocatable, which bounds the
    pod as well (and :func:`pod_decoders` counts no limit: any node's)."""
    return [{"name": contract.env_name(key), "valueFrom": {"resourceFieldRef": {"resource": resource, "divisor": divisor}}}
            for key, (resource, divisor) in LIMITS_SETTINGS.items()]


def recognizer_container(spec: api.SpeechToTextSpec, img: str, config: OperatorConfig | None = None) -> Manifest:
    env: list[Manifest] = limits_env()
    if spec.apiKeySecretRef:
        env.append({"name": contract.env_name(contract.API_KEY), "valueFrom": {"secretKeyRef": {
            "name": spec.apiKeySecretRef.name, "key": spec.apiKeySecretRef.key}}})
    mounts: list[Manifest] = [{"name": "tmp", "mountPath": TMP_MOUNT}]
    for name in mounted_volumes(spec):
        env.append({"name": contract.env_name(MOUNT_SETTINGS[name]), "value": MOUNT_PATHS[name]})
        mount: Manifest = {"name": name, "mountPath": MOUNT_PATHS[name]}
        if name != "output":
            mount["readOnly"] = True
        mounts.append(mount)
    return {
        "name": CONTAINER,
        "image": img,
        "imagePullPolicy": "IfNotPresent",
        "terminationMessagePolicy": TERMINATION_MESSAGE_POLICY,
        "args": recognizer_args(spec),
        "env": env,
        "ports": [{"name": PORT_NAME, "containerPort": contract.PORT, "protocol": "TCP"}],
        **probes(),
        # An HTTP hook: the image has no shell for `sleep`, and the sleep action needs Kubernetes 1.30.
        "lifecycle": {"preStop": {"httpGet": {"path": contract.ROUTE_PRE_STOP, "port": PORT_NAME}}},
        "resources": _recognizer_resources(spec),
        "securityContext": restricted_security_context(config),
        "volumeMounts": mounts,
    }


#: Node labels the pods of a SpeechToText spread over by default: nodes, then zones.
SPREAD_TOPOLOGY_KEYS = ("kubernetes.io/hostname", "topology.kubernetes.io/zone")


def topology_spread(stt: api.SpeechToText) -> list[Manifest]:
    """The pods' ``topologySpreadConstraints``: ``spec.topologySpreadConstraints`` (each without a labelSelector
    counts this SpeechToText's pods), or by default one pod more at most on any node and in any zone than on another.

    The default is ScheduleAnyway, a preference: a cluster of one node or one zone still runs every pod. It sets no
    ``matchLabelKeys: [pod-template-hash]``: on Kubernetes 1.25 and 1.26 (the chart supports them) that field is alpha,
    behind a feature gate off by default, and the API server drops it, so the live Deployment would never match what
    the operator applies and it would apply it again at every reconcile.
    """
    given = stt.spec.topologySpreadConstraints
    if given is None:
        return [{"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": "ScheduleAnyway",
                 "labelSelector": {"matchLabels": selector_labels(stt)}} for key in SPREAD_TOPOLOGY_KEYS]
    return [{**c.model_dump(exclude_none=True), "labelSelector": c.labelSelector.model_dump(exclude_none=True)
             if c.labelSelector is not None else {"matchLabels": selector_labels(stt)}} for c in given]


def pod_spec(stt: api.SpeechToText, config: OperatorConfig) -> Manifest:
    spec = stt.spec
    img = image(stt, config)
    pod: Manifest = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": termination_grace_seconds(spec),
        "securityContext": {
            "runAsNonRoot": True,
            **identity(config),
            **({} if config.platform_identity else {"fsGroup": contract.RUN_AS_GROUP}),
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    inits = init_containers(spec, img, config)
    if inits:
        pod["initContainers"] = inits
    pod["containers"] = [recognizer_container(spec, img, config)]
    # /tmp sized by what the recognizer may write there (scratch.py), which it holds itself to: a pod past its
    # sizeLimit is evicted, every stream on it lost
    pod["volumes"] = ([{"name": "tmp", "emptyDir": {"sizeLimit": tmp_quantity(spec)}}]
                      + [volume(n, v) for n, v in mounted_volumes(spec).items()])
    ref = ca_bundle(spec)
    if ref is not None:
        pod["volumes"].append(ca_bundle_volume(ref))
    if spec.nodeSelector:
        pod["nodeSelector"] = dict(spec.nodeSelector)
    if spec.tolerations:
        pod["tolerations"] = [dict(t) for t in spec.tolerations]
    if spec.affinity:
        pod["affinity"] = dict(spec.affinity)
    spread = topology_spread(stt)
    if spread:
        pod["topologySpreadConstraints"] = spread
    if spec.priorityClassName:
        pod["priorityClassName"] = spec.priorityClassName
    if spec.imagePullSecrets:
        pod["imagePullSecrets"] = [{"name": ref.name} for ref in spec.imagePullSecrets]
    return pod


def replicas(stt: api.SpeechToText) -> int:
    """The pods a SpeechToText should have: ``spec.replicas``; with ``spec.autoscaling``, what the
    autoscaler decided last (``status.autoscaling.replicas``; ``spec.replicas`` before its first
    look), always within ``minReplicas`` .. ``maxReplicas`` (a new bound applies at once)."""
    policy = stt.spec.autoscaling
    if policy is None:
        return stt.spec.replicas
    decided = stt.status.autoscaling if stt.status else None
    return bounded(policy, decided.replicas if decided is not None else stt.spec.replicas)


def bounded(policy: api.AutoscalingSpec, replicas: int) -> int:
    """``replicas`` within ``minReplicas`` .. ``maxReplicas``."""
    return min(policy.maxReplicas, max(policy.minReplicas, replicas))


def deployment(stt: api.SpeechToText, config: OperatorConfig, held: int | None = None) -> Manifest:
    """The recognizer Deployment for a SpeechToText; ``held``: its replicas, where someone else's autoscaler holds them
    (:mod:`speech_operator.foreign_autoscalers`)."""
    template_meta: Manifest = {"labels": {**stt.spec.labels, **selector_labels(stt), LABEL_LOCALE: stt.spec.locale}}
    if stt.spec.podAnnotations:
        template_meta["annotations"] = dict(stt.spec.podAnnotations)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(stt),
        "spec": {
            "replicas": replicas(stt) if held is None else held,
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": selector_labels(stt)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {"metadata": template_meta, "spec": pod_spec(stt, config)},
        },
    }


def service(stt: api.SpeechToText) -> Manifest:
    """The Service in front of the recognizer pods."""
    svc = stt.spec.service
    port: Manifest = {"name": PORT_NAME, "port": svc.port, "targetPort": PORT_NAME, "protocol": "TCP"}
    if svc.nodePort is not None:
        port["nodePort"] = svc.nodePort
    spec: Manifest = {"type": svc.type, "selector": selector_labels(stt), "ports": [port]}
    if svc.ipFamilyPolicy is not None:
        spec["ipFamilyPolicy"] = svc.ipFamilyPolicy
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata(stt, svc.annotations), "spec": spec}


def pod_disruption_budget(stt: api.SpeechToText) -> Manifest:
    """At most one pod of the SpeechToText evicted at a time (a node drain, a cluster upgrade): the
    others keep serving while it drains. Only with more than one replica: with one, it would
    block node drains."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(stt),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(stt)}},
    }


#: Every kind :func:`children` may return, as (apiVersion, plural, kind): what a SpeechToText owns.
#: One that is not returned any more is deleted; the operator's RBAC must cover each.
OWNED_KINDS = [("apps/v1", "deployments", "Deployment"), ("v1", "services", "Service"),
               ("policy/v1", "poddisruptionbudgets", "PodDisruptionBudget")]


def children(stt: api.SpeechToText, config: OperatorConfig, held: int | None = None) -> list[Manifest]:
    """Everything a SpeechToText owns, in apply order (a PodDisruptionBudget only with more than one replica);
    ``held``: the Deployment's replicas, where someone else's autoscaler holds them."""
    owned = [deployment(stt, config, held), service(stt)]
    if (replicas(stt) if held is None else held) > 1:
        owned.append(pod_disruption_budget(stt))
    return owned
