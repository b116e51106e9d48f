"""The pure builders: manifests Kubernetes accepts, with the recognizer contract and the restricted profile."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from speech_operator import api, builders
from speech_operator.config import OperatorConfig
from speech_recognizer import contract, scratch
from tests.ship.conftest import KUBE_VERSIONS

pytestmark = pytest.mark.unit  # no model, server, operator or browser: the quick run (README, Tests)

CONFIG = OperatorConfig(image="registry.example/speech-recognizer", version="9.9.9")
META = {"name": "en-us", "namespace": "speech", "uid": "0b6c5a4e-0000-4000-8000-000000000001"}
MINIMAL = api.SpeechToText.model_validate({"metadata": META, "spec": {"locale": "en-US", "eula": "accept"}})
MAXIMAL = api.SpeechToText.model_validate({"metadata": META, "spec": {
    "locale": "en-US", "eula": "accept", "replicas": 4,
    "image": "mirror.example/stt", "version": "1.0.0",
    "resources": {"requests": {"cpu": 1, "memory": "1536Mi"}, "limits": {"cpu": "3", "memory": "3Gi"}},
    "billing": "https://billing.example.test/", "apiKeySecretRef": {"name": "speech-key", "key": "apiKey"},
    "model": {"url": "https://models.example.test/en.zip", "sha256": "ab" * 32,
              "volume": {"persistentVolumeClaim": {"claimName": "models"}}},
    "license": {"hostPath": {"path": "/srv/license", "type": "Directory"}},
    "output": {"emptyDir": {"medium": "Memory", "sizeLimit": "256Mi"}},
    "decoderMaxCount": 8, "warmup": {"count": 2, "seconds": 10}, "drainSeconds": 120,
    "service": {"type": "LoadBalancer", "port": 80, "nodePort": 30080, "ipFamilyPolicy": "PreferDualStack",
                "annotations": {"service.beta.kubernetes.io/aws-load-balancer-internal": "true"}},
    "nodeSelector": {"kubernetes.io/arch": "amd64"},
    "tolerations": [{"key": "speech", "operator": "Exists", "effect": "NoSchedule"}],
    "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
        "weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                                           "labelSelector": {"matchLabels": {"app.kubernetes.io/instance": "en-us"}}}}]}},
    "podAnnotations": {"prometheus.io/scrape": "true"},
    "labels": {"team": "speech", "example.com/cost-center": "cc-42"},
    "imagePullSecrets": [{"name": "registry-credentials"}, {"name": "mirror-credentials"}],
    "logLevel": "Debug",
    "priorityClassName": "speech-realtime",
    "topologySpreadConstraints": [
        {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule", "minDomains": 3,
         "matchLabelKeys": ["pod-template-hash"], "nodeAffinityPolicy": "Honor", "nodeTaintsPolicy": "Honor"},
        {"maxSkew": 2, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
         "labelSelector": {"matchExpressions": [{"key": "app.kubernetes.io/name", "operator": "In",
                                                 "values": ["speech-recognizer"]}]}}],
}})

#: A download that trusts a private CA: OpenShift's injected bundle (its key is ca-bundle.crt).
TRUSTING = api.SpeechToText.model_validate({"metadata": META, "spec": {
    "locale": "en-US", "eula": "accept", "settings": {"ModelCatalogUrl": "https://mirror.example.test/vosk"},
    "model": {"caBundle": {"configMap": {"name": "trusted-ca", "key": "ca-bundle.crt"}}}}})


def pod(stt: api.SpeechToText) -> dict[str, Any]:
    return builders.deployment(stt, CONFIG)["spec"]["template"]["spec"]


def containers(stt: api.SpeechToText) -> dict[str, dict[str, Any]]:
    spec = pod(stt)
    return {c["name"]: c for c in spec.get("initContainers", []) + spec["containers"]}


@pytest.mark.parametrize("stt", [MINIMAL, MAXIMAL, TRUSTING], ids=["minimal", "maximal", "ca bundle"])
def test_manifests_pass_kubernetes_validate_strict(stt: api.SpeechToText) -> None:
    for manifest in builders.children(stt, CONFIG):
        kubernetes_validate.validate(manifest, kubernetes_validate.utils.latest_version(), strict=True)


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("stt", [MINIMAL, MAXIMAL], ids=["minimal", "maximal"])
def test_manifests_are_valid_at_the_oldest_and_newest_kubernetes(stt: api.SpeechToText, version: str) -> None:
    """The chart's oldest Kubernetes (Chart.yaml kubeVersion) knows every field the pods use, the spread
    constraints' and the priority class among them, as the newest does."""
    for manifest in builders.children(stt, CONFIG):
        kubernetes_validate.validate(manifest, version, strict=True)


@pytest.mark.parametrize("stt", [MINIMAL, MAXIMAL], ids=["minimal", "maximal"])
def test_children_are_owned_and_labelled(stt: api.SpeechToText) -> None:
    for manifest in builders.children(stt, CONFIG):
        meta = manifest["metadata"]
        assert meta["ownerReferences"] == [{"apiVersion": "speech-operator.io/v1alpha1", "kind": "SpeechToText",
                                            "name": "en-us", "uid": META["uid"], "controller": True,
                                            "blockOwnerDeletion": True}]
        assert meta["labels"][builders.LABEL_OWNER] == "en-us"
        assert meta["labels"][builders.LABEL_MANAGED_BY] == "speech-operator"
    dep, svc, *rest = builders.children(stt, CONFIG)
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert dep["spec"]["template"]["metadata"]["labels"].items() >= dep["spec"]["selector"]["matchLabels"].items()


def test_minimal_recognizer_container() -> None:
    c = containers(MINIMAL)["recognizer"]
    assert c["image"] == "registry.example/speech-recognizer:9.9.9"
    assert c["args"] == ["Eula=accept", "Locale=en-US", f"{contract.DRAIN_SECONDS}=30", f"{contract.LOG_LEVEL}=Information"]
    assert c["ports"] == [{"name": "http", "containerPort": contract.PORT, "protocol": "TCP"}]
    assert c["startupProbe"]["httpGet"] == {"path": contract.ROUTE_STATUS, "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": contract.ROUTE_READY, "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": contract.ROUTE_STATUS, "port": "http"}
    assert c["resources"] == {"requests": {"cpu": "500m", "memory": "1Gi", "ephemeral-storage": "873Mi"},
                              "limits": {"cpu": "2", "memory": "3Gi"}}
    assert c["env"] == [  # its limits by the downward API, which the recognizer's default decoders count (test_pod_disk)
        {"name": "Container__CpuLimitMillicores", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1m"}}},
        {"name": "Container__MemoryLimitBytes", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1"}}},
        {"name": "Mounts__Models", "value": contract.DEFAULT_MODELS_MOUNT}]
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    assert builders.deployment(MINIMAL, CONFIG)["spec"]["replicas"] == 1
    # The catalog model is downloaded into a per-pod emptyDir; nothing needs chown.
    assert list(containers(MINIMAL)) == ["download-model", "recognizer"]
    assert {"name": "models", "emptyDir": {"sizeLimit": "355Mi"}} in pod(MINIMAL)["volumes"]  # en-US's catalog zip


def test_maximal_recognizer_container() -> None:
    c = containers(MAXIMAL)["recognizer"]
    assert c["image"] == "mirror.example/stt:1.0.0"
    assert c["args"] == ["Eula=accept", "Locale=en-US", "Billing=https://billing.example.test/",
                         "DecoderMaxCount=8", "Warmup:Count=2", "Warmup:Seconds=10", f"{contract.DRAIN_SECONDS}=120",
                         f"{contract.LOG_LEVEL}=Debug"]
    env = {e["name"]: e for e in c["env"]}
    assert env["ApiKey"] == {"name": "ApiKey", "valueFrom": {"secretKeyRef": {"name": "speech-key", "key": "apiKey"}}}
    assert env["Mounts__License"]["value"] == "/license" and env["Mounts__Output"]["value"] == "/output"
    assert "value" not in env["ApiKey"]
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/output"].get("readOnly") is None and mounts["/license"]["readOnly"] is True
    spec = pod(MAXIMAL)
    assert spec["nodeSelector"] == {"kubernetes.io/arch": "amd64"} and spec["tolerations"][0]["key"] == "speech"
    assert "podAntiAffinity" in spec["affinity"]
    vols = {v["name"]: v for v in spec["volumes"]}
    assert vols["models"] == {"name": "models", "persistentVolumeClaim": {"claimName": "models"}}
    assert vols["license"] == {"name": "license", "hostPath": {"path": "/srv/license", "type": "Directory"}}
    assert vols["output"] == {"name": "output", "emptyDir": {"medium": "Memory", "sizeLimit": "256Mi"}}
    meta = builders.deployment(MAXIMAL, CONFIG)["spec"]["template"]["metadata"]
    assert meta["annotations"] == {"prometheus.io/scrape": "true"}
    svc = builders.service(MAXIMAL)
    assert svc["spec"]["type"] == "LoadBalancer"
    assert svc["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP",
                                     "nodePort": 30080}]
    assert svc["metadata"]["annotations"] == {"service.beta.kubernetes.io/aws-load-balancer-internal": "true"}
    assert svc["spec"]["ipFamilyPolicy"] == "PreferDualStack"
    assert "ipFamilyPolicy" not in builders.service(MINIMAL)["spec"], "unset: the cluster's default, which a later apply may change"


def test_download_init_container_gets_url_and_checksum() -> None:
    init = containers(MAXIMAL)["download-model"]
    assert init["image"] == "mirror.example/stt:1.0.0"
    assert init["args"] == ["DownloadModel=True", "Locale=en-US", "Mounts:Models=/models",
                            "ModelUrl=https://models.example.test/en.zip", f"ModelSha256={'ab' * 32}"]
    assert {"name": "models", "mountPath": "/models"} in init["volumeMounts"]


def test_ca_bundle_is_mounted_into_the_download_step_only() -> None:
    """``model.caBundle``: its ConfigMap key, alone, read-only at the path the download's ModelCaFile names; the
    recognizer, which downloads nothing, gets neither; the pod still meets the restricted profile."""
    from tests.pod_security import violations

    spec = pod(TRUSTING)
    assert {"name": "model-ca", "configMap": {"name": "trusted-ca", "items": [{"key": "ca-bundle.crt", "path": "ca.crt"}]}} in spec["volumes"]
    download = containers(TRUSTING)["download-model"]
    assert download["args"] == ["DownloadModel=True", "Locale=en-US", "Mounts:Models=/models", "ModelCaFile=/model-ca/ca.crt",
                                "ModelCatalogUrl=https://mirror.example.test/vosk"]
    assert {"name": "model-ca", "mountPath": "/model-ca", "readOnly": True} in download["volumeMounts"]
    recognizer = containers(TRUSTING)["recognizer"]
    assert not [m for m in recognizer["volumeMounts"] if m["name"] == "model-ca"]
    assert not [a for a in recognizer["args"] if a.startswith("ModelCaFile=")]
    assert violations(spec) == []


@pytest.mark.parametrize("stt", [MINIMAL, MAXIMAL], ids=["minimal", "maximal"])
def test_without_a_ca_bundle_nothing_is_mounted_nor_passed(stt: api.SpeechToText) -> None:
    assert "model-ca" not in [v["name"] for v in pod(stt)["volumes"]]
    for c in containers(stt).values():
        assert "model-ca" not in [m["name"] for m in c["volumeMounts"]]
        assert not [a for a in c.get("args", []) if a.startswith("ModelCaFile=")]


@pytest.mark.parametrize("stt", [MINIMAL, MAXIMAL, TRUSTING], ids=["minimal", "maximal", "ca bundle"])
def test_restricted_profile_except_the_chown_step(stt: api.SpeechToText) -> None:
    spec = pod(stt)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    for name, c in containers(stt).items():
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"]["drop"] == ["ALL"] and sc["seccompProfile"] == {"type": "RuntimeDefault"}
        if name == "chown":
            assert sc["runAsUser"] == 0 and sc["capabilities"]["add"] == ["CHOWN", "FOWNER"]
        else:
            assert sc["runAsNonRoot"] is True
            assert (sc["runAsUser"], sc["runAsGroup"]) == (contract.RUN_AS_USER, contract.RUN_AS_GROUP)
            assert "add" not in sc["capabilities"]


def test_chown_only_for_volumes_fsgroup_cannot_fix() -> None:
    assert "chown" not in containers(MINIMAL)
    chown = containers(MAXIMAL)["chown"]
    # the step that runs as root runs the operator's own image, never spec.image
    assert chown["image"] == CONFIG.trusted_image == "registry.example/speech-recognizer:9.9.9"
    assert containers(MAXIMAL)["recognizer"]["image"] == "mirror.example/stt:1.0.0"
    assert chown["command"][-2:] == ["/models", "/license"]  # the PVC and the hostPath, not the emptyDir
    assert chown["command"][3:5] == [str(contract.RUN_AS_USER), str(contract.RUN_AS_GROUP)]
    assert list(containers(MAXIMAL))[0] == "chown"  # before the model download writes


def test_without_the_chown_step_the_pod_meets_the_restricted_profile() -> None:
    """``chownVolumes: false`` (namespaces enforcing the restricted Pod Security Standard): no container runs as root;
    the volumes stay mounted, the pod's fsGroup 65532 still applies where the storage supports it. Only volume types
    the profile refuses whoever owns them (hostPath) are left."""
    from tests.pod_security import violations

    stt = MAXIMAL.model_copy(update={"spec": MAXIMAL.spec.model_copy(update={"chownVolumes": False})})
    assert "chown" not in containers(stt) and list(containers(stt)) == ["download-model", "recognizer"]
    for c in containers(stt).values():
        assert c["securityContext"] == builders.restricted_security_context()
    assert pod(stt)["securityContext"]["fsGroup"] == contract.RUN_AS_GROUP
    assert pod(stt)["volumes"] == pod(MAXIMAL)["volumes"]
    assert violations(pod(stt)) == ['restricted volume types (volume "license" uses restricted volume type "hostPath")']
    on_claims = stt.model_copy(update={"spec": stt.spec.model_copy(update={"license": api.VolumeSource.model_validate(
        {"persistentVolumeClaim": {"claimName": "license"}})})})
    assert violations(pod(on_claims)) == [] and violations(pod(MINIMAL)) == []
    assert violations(pod(on_claims.model_copy(update={"spec": on_claims.spec.model_copy(update={"chownVolumes": True})}))) == [
        'unrestricted capabilities (container "chown" must not include [\'CHOWN\', \'FOWNER\'] in securityContext.capabilities.add)',
        'runAsNonRoot != true (container "chown" must set securityContext.runAsNonRoot=true)',
        'runAsUser=0 (container "chown" must not set runAsUser=0)']


#: A value for every key spec.settings may set.
EVERY_SETTING = {
    "ModelCatalogUrl": "https://mirror.example.test/vosk/models", "ModelMaxSizeMB": "8192",
    "ReuseRecognizers": "False", "Warmup:Audio": "/models/warmup.wav", "MaxAudioSeconds": "120", "MaxSessionSeconds": "7200",
    "Http:MaxHeaderBytes": "32768", "Http:HeaderTimeoutSeconds": "20", "Http:BodyTimeoutSeconds": "20",
    "Http:MaxConnections": "400", "Http:TrustedProxies": "10.244.0.0/16,fd00:10:244::/56",
    "Http:CorsOrigins": "https://app.example.com,https://admin.example.com",
    "Logging:Disk:Format": "json", "Logging:Disk:MaxFileSize": "20", "HTTP_PROXY": "http://proxy.example.test:3128"}


def test_settings_are_arguments_of_every_container_and_never_a_fields() -> None:
    """spec.settings go to the recognizer and the download step (a catalog mirror or a proxy is the download's) as
    ``Key=Value`` arguments in key order; every other key the builders emit is one the spec's fields own, so a
    setting never contends with a field (the CRD and the models refuse those keys in spec.settings)."""
    from speech_recognizer.settings import KNOWN

    assert set(EVERY_SETTING) == set(api.SETTABLE) and not set(api.SETTABLE) & api.OWNED_SETTINGS
    assert set(api.SETTABLE) | api.OWNED_SETTINGS == {s.key for s in KNOWN}
    stt = MAXIMAL.model_copy(update={"spec": MAXIMAL.spec.model_copy(update={
        "settings": dict(reversed(EVERY_SETTING.items())), "audioIdleSeconds": 60,
        "connections": api.ConnectionsSpec(max=900, idleSeconds=600)})})
    given = [f"{k}={EVERY_SETTING[k]}" for k in sorted(EVERY_SETTING)]
    for name in ("recognizer", "download-model"):
        args = containers(stt)[name]["args"]
        assert args[-len(given):] == given, name
        emitted = {a.split("=", 1)[0] for a in args[:-len(given)]}
        emitted |= {e["name"].replace("__", ":") for e in containers(stt)[name].get("env", [])}
        assert emitted <= api.OWNED_SETTINGS, (name, emitted - api.OWNED_SETTINGS)


def test_every_container_sets_cpu_and_memory_requests_and_limits() -> None:
    """A namespace with a ResourceQuota on requests and limits of CPU and memory refuses a pod any container of which
    leaves one unset ("must specify limits.cpu for: chown"); with the spec's defaults none does."""
    on_claims = MINIMAL.model_copy(update={"spec": MINIMAL.spec.model_copy(update={
        "output": api.VolumeSource.model_validate({"persistentVolumeClaim": {"claimName": "out"}})})})
    assert list(containers(on_claims)) == ["chown", "download-model", "recognizer"]
    for name, c in containers(on_claims).items():
        for part in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"][part]), (name, part, c["resources"])


def _spec(stt: api.SpeechToText, **update: Any) -> api.SpeechToText:
    return stt.model_copy(update={"spec": api.SpeechToTextSpec.model_validate({**stt.spec.model_dump(exclude_none=True), **update})})


@pytest.mark.parametrize(("stt", "decoders", "seconds"), [
    (MINIMAL, 6, 60),  # the default limits: 2 CPUs, 3Gi
    (MAXIMAL, 8, 60),  # decoderMaxCount
    (_spec(MINIMAL, settings={"MaxAudioSeconds": "300"}), 6, 300),
    (_spec(MINIMAL, resources={"limits": {"cpu": "3500m", "memory": "8Gi"}}), 12, 60),  # 3 per CPU, rounded up
    (_spec(MINIMAL, resources={"limits": {"cpu": "4", "memory": "1536Mi"}}), 2, 60),  # what the memory holds
    (_spec(MINIMAL, resources={"limits": {"memory": "2Gi"}}), 3, 60),  # no CPU limit: the memory's
    (_spec(MINIMAL, resources={"limits": {}}), api.MAX_DECODERS_PER_POD, 60),  # neither: the recognizer's cap, 64
], ids=["defaults", "decoderMaxCount", "MaxAudioSeconds", "cpu", "memory", "no cpu limit", "no limits"])
def test_tmp_is_sized_by_what_the_recognizer_may_write_there(stt: api.SpeechToText, decoders: int, seconds: float) -> None:
    """The pod's /tmp emptyDir has a sizeLimit, and the recognizer container an ephemeral-storage request, of what the
    recognizer may write there at most (speech_recognizer.scratch: its decoders' spills, an upload per decoder),
    rounded up to a MiB, so that the scheduler places the pod on a node whose disk holds it and the kubelet does not
    evict it for what it was allowed to write; no ephemeral-storage limit (the logs and a model downloaded into its
    emptyDir count towards one). Before: an emptyDir without a size, and no request: the pod scheduled blind to its
    disk, and evicted first under DiskPressure."""
    size = f"{-(-scratch.tmp_bytes(decoders, seconds) // 2**20)}Mi"
    assert {"name": "tmp", "emptyDir": {"sizeLimit": size}} in pod(stt)["volumes"]
    resources = containers(stt)["recognizer"]["resources"]
    models = 0 if stt is MAXIMAL else 355  # MAXIMAL's models are on a PVC, the others' en-US's in the default emptyDir
    assert resources["requests"]["ephemeral-storage"] == f"{int(size[:-2]) + models}Mi"
    assert "ephemeral-storage" not in resources.get("limits", {})
    if stt is MINIMAL:
        assert size == "518Mi", "README's figure (On Kubernetes)"
    if not stt.spec.resources.limits.model_dump(exclude_none=True):
        assert (decoders, size) == (64, "5508Mi"), "README's figure (On Kubernetes)"


@pytest.mark.parametrize(("model", "settings", "models_volume", "asked"), [
    ({}, {}, {"emptyDir": {"sizeLimit": "355Mi"}}, "873Mi"),  # en-US's catalog zip, 41,205,931 bytes: 9 x that, 1 MiB
    ({}, {"ModelMaxSizeMB": "4096"}, {"emptyDir": {"sizeLimit": "7814Mi"}}, "8332Mi"),  # 2 x 4096 MB and 1 MiB
    ({"url": "https://models.example.test/en.zip", "sha256": "ab" * 32}, {},
     {"emptyDir": {"sizeLimit": "7814Mi"}}, "8332Mi"),  # a model of the user's own: ModelMaxSizeMB's default
    ({}, {"ModelMaxSizeMB": "200"}, {"emptyDir": {"sizeLimit": "383Mi"}}, "901Mi"),
    ({"volume": {"emptyDir": {}}}, {"ModelMaxSizeMB": "200"}, {"emptyDir": {"sizeLimit": "383Mi"}}, "901Mi"),
    ({"volume": {"emptyDir": {}}}, {}, {"emptyDir": {"sizeLimit": "355Mi"}}, "873Mi"),  # as the default one
    ({"volume": {"emptyDir": {"sizeLimit": "10Gi"}}}, {}, {"emptyDir": {"sizeLimit": "10Gi"}}, "10758Mi"),
    ({"volume": {"emptyDir": {"medium": "Memory"}}}, {"ModelMaxSizeMB": "200"},
     {"emptyDir": {"medium": "Memory", "sizeLimit": "383Mi"}}, "518Mi"),  # memory, not the node's disk
    ({"volume": {"persistentVolumeClaim": {"claimName": "models"}}}, {}, {"persistentVolumeClaim": {"claimName": "models"}},
     "518Mi"),
], ids=["default", "ModelMaxSizeMB 4096", "model url", "ModelMaxSizeMB", "emptyDir without size",
         "emptyDir without size, catalog", "emptyDir with size", "memory", "pvc"])
def test_the_models_emptydir_is_sized_by_what_the_download_may_write_there(
        model: dict[str, Any], settings: dict[str, str], models_volume: dict[str, Any], asked: str) -> None:
    """The models emptyDir the download writes to gets a sizeLimit of what it may write there at once
    (speech_recognizer.models.download_bound: a catalog model's zip of known size and 8 times it; given a model URL or
    ModelMaxSizeMB, that one's zip and the model it unpacks to, each in MB of 10^6 bytes; and a MiB for folders), and
    the recognizer's ephemeral-storage request counts it beside /tmp, as the kubelet counts an emptyDir to the pod; an
    emptyDir of model.volume without a size by the same rule, a size of the user's own is kept. Before: ``"emptyDir": {}``
    and a request of /tmp's alone, the model's gigabytes unseen by the scheduler, the pod evicted under DiskPressure;
    then the default asked 8332Mi (2 x 4096 MB) for a 41 MB zip: two pods on a node of 20 GiB."""
    stt = _spec(MINIMAL, model=model, settings=settings)
    assert {"name": "models", **models_volume} in pod(stt)["volumes"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "518Mi"}} in pod(stt)["volumes"]
    resources = containers(stt)["recognizer"]["resources"]
    assert resources["requests"]["ephemeral-storage"] == asked
    assert "ephemeral-storage" not in resources.get("limits", {})


@pytest.mark.parametrize(("size_limit", "settings", "fits"), [
    ("1Gi", {"ModelMaxSizeMB": "4096"}, "or lower settings.ModelMaxSizeMB to 536 or less"),
    ("7813Mi", {"ModelMaxSizeMB": "4096"}, "or lower settings.ModelMaxSizeMB to 4095 or less"),
    ("1Mi", {"ModelMaxSizeMB": "4096"}, "raise sizeLimit to 7814Mi ("),
    ("383Mi", {"ModelMaxSizeMB": "201"}, "or lower settings.ModelMaxSizeMB to 200 or less"),
    ("354Mi", {}, "en-US (the catalog's vosk-model-small-en-us-0.15.zip, 41205931 bytes, and what it unpacks to, at "
                  "most 8 times it: 355Mi): raise sizeLimit to 355Mi"),
    ("1Mi", {}, "raise sizeLimit to 355Mi"),
])
def test_a_models_emptydir_too_small_for_the_download_is_refused(size_limit: str, settings: dict[str, str], fits: str) -> None:
    """A models emptyDir with a sizeLimit that cannot hold what the download may write there (its catalog model's zip
    and 8 times it; given ModelMaxSizeMB, twice that) is a spec error (InvalidSpec), saying the way out, and with
    ModelMaxSizeMB the other, not a pod evicted midway through its download; one that holds it is taken. Before:
    taken, the pod evicted by the kubelet once a model past the size came; then 355Mi, which holds en-US's catalog
    model, was refused for want of 7814Mi."""
    with pytest.raises(ValueError, match="cannot hold the model download") as refused:
        _spec(MINIMAL, model={"volume": {"emptyDir": {"sizeLimit": size_limit}}}, settings=settings)
    assert f"model.volume.emptyDir.sizeLimit {size_limit} cannot hold" in str(refused.value)
    assert fits.replace(" (", "") in str(refused.value).replace(" (", ""), str(refused.value)
    assert _spec(MINIMAL, model={"volume": {"emptyDir": {"sizeLimit": "355Mi"}}}).spec.model.volume is not None
    assert _spec(MINIMAL, model={"volume": {"emptyDir": {"sizeLimit": "7814Mi"}}},
                 settings={"ModelMaxSizeMB": "4096"}).spec.model.volume is not None


def test_every_container_keeps_the_end_of_its_log_when_it_fails() -> None:
    """With FallbackToLogsOnError the kubelet puts the end of a failed container's log (the recognizer's and the
    download's one-line error) in the pod's status, where the SpeechToText's status quotes it; the default (File)
    reads a file none of them writes, and said nothing."""
    on_claims = MINIMAL.model_copy(update={"spec": MINIMAL.spec.model_copy(update={
        "output": api.VolumeSource.model_validate({"persistentVolumeClaim": {"claimName": "out"}})})})
    assert list(containers(on_claims)) == [builders.CHOWN_CONTAINER, builders.DOWNLOAD_CONTAINER, builders.CONTAINER]
    assert {name: c.get("terminationMessagePolicy") for name, c in containers(on_claims).items()} \
        == dict.fromkeys(containers(on_claims), "FallbackToLogsOnError")


def test_existing_model_pvc_skips_the_download() -> None:
    stt = api.SpeechToText.model_validate({"metadata": META, "spec": {
        "locale": "ko-KR", "eula": "accept",
        "model": {"download": False, "volume": {"persistentVolumeClaim": {"claimName": "ko-model"}}}}})
    assert list(containers(stt)) == ["chown", "recognizer"]
    assert builders.claim_names(stt.spec) == ["ko-model"]


def test_spec_change_changes_the_pod_template_but_scaling_does_not() -> None:
    template = builders.deployment(MINIMAL, CONFIG)["spec"]["template"]
    scaled = MINIMAL.model_copy(update={"spec": MINIMAL.spec.model_copy(update={"replicas": 5})})
    assert builders.deployment(scaled, CONFIG)["spec"]["template"] == template
    relocaled = MINIMAL.model_copy(update={"spec": MINIMAL.spec.model_copy(update={"logLevel": "Error"})})
    assert builders.deployment(relocaled, CONFIG)["spec"]["template"] != template


def test_status_fields() -> None:
    assert builders.selector(MINIMAL) == "app.kubernetes.io/name=speech-recognizer,app.kubernetes.io/instance=en-us"
    assert builders.endpoint(MAXIMAL) == "http://en-us.speech.svc:80"


@pytest.mark.parametrize(("stt", "drain"), [(MINIMAL, 30), (MAXIMAL, 120)], ids=["minimal", "maximal"])
def test_pods_drain_before_they_stop(stt: api.SpeechToText, drain: int) -> None:
    """preStop pause, then SIGTERM: the recognizer drains for spec.drainSeconds; the grace period covers both."""
    c = containers(stt)["recognizer"]
    assert c["lifecycle"] == {"preStop": {"httpGet": {"path": contract.ROUTE_PRE_STOP, "port": "http"}}}
    assert f"{contract.DRAIN_SECONDS}={drain}" in c["args"]
    assert pod(stt)["terminationGracePeriodSeconds"] == contract.PRE_STOP_SECONDS + drain + builders.SHUTDOWN_MARGIN_SECONDS


def test_a_disruption_budget_only_with_more_than_one_replica() -> None:
    """Node drains evict one pod at a time (the others serve while it drains); one replica gets none,
    which would block node drains."""
    assert [m["kind"] for m in builders.children(MINIMAL, CONFIG)] == ["Deployment", "Service"]
    dep, _, pdb = builders.children(MAXIMAL, CONFIG)
    assert pdb["apiVersion"] == "policy/v1" and pdb["kind"] == "PodDisruptionBudget"
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": dep["spec"]["selector"]["matchLabels"]}}
    assert pdb["metadata"]["ownerReferences"] == dep["metadata"]["ownerReferences"]
    assert {k for _, _, k in builders.OWNED_KINDS} >= {m["kind"] for m in builders.children(MAXIMAL, CONFIG)}


def _spread(stt: api.SpeechToText) -> list[dict[str, Any]] | None:
    return pod(stt).get("topologySpreadConstraints")


def _with_spec(**fields: Any) -> api.SpeechToText:
    return api.SpeechToText.model_validate({"metadata": META, "spec": {"locale": "en-US", "eula": "accept", **fields}})


def test_pods_spread_over_nodes_and_zones_by_default() -> None:
    """One pod more at most on any node and in any zone than on another, counting this SpeechToText's pods only; a
    preference (ScheduleAnyway), so a cluster of one node or one zone still runs every pod."""
    mine = builders.deployment(MINIMAL, CONFIG)["spec"]["selector"]
    assert _spread(MINIMAL) == [
        {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": mine},
        {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": mine}]
    other = _with_spec().model_copy(update={"metadata": {**META, "name": "de-de"}})
    assert _spread(other)[0]["labelSelector"] == {"matchLabels": builders.selector_labels(other)} != mine
    assert "priorityClassName" not in pod(MINIMAL)


def test_given_spread_constraints_replace_the_default() -> None:
    """spec.topologySpreadConstraints, as given; one without a labelSelector counts this SpeechToText's pods."""
    assert _spread(MAXIMAL) == [
        {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule", "minDomains": 3,
         "matchLabelKeys": ["pod-template-hash"], "nodeAffinityPolicy": "Honor", "nodeTaintsPolicy": "Honor",
         "labelSelector": {"matchLabels": builders.selector_labels(MAXIMAL)}},
        {"maxSkew": 2, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
         "labelSelector": {"matchExpressions": [{"key": "app.kubernetes.io/name", "operator": "In",
                                                 "values": ["speech-recognizer"]}]}}]


def test_an_empty_list_of_spread_constraints_means_none() -> None:
    assert "topologySpreadConstraints" not in pod(_with_spec(topologySpreadConstraints=[]))


def test_priority_class_of_the_pods() -> None:
    assert pod(MAXIMAL)["priorityClassName"] == "speech-realtime"


def test_spec_labels_are_on_every_child_and_its_pods_and_in_no_selector() -> None:
    """spec.labels (e.g. what a policy engine requires) reach the Deployment, its pods, the Service and the
    PodDisruptionBudget; the selectors stay the operator's, so adding one rolls the pods but moves no pod out."""
    children = {c["kind"]: c for c in builders.children(MAXIMAL, CONFIG)}
    assert set(children) == {"Deployment", "Service", "PodDisruptionBudget"}
    for child in children.values():
        assert child["metadata"]["labels"]["team"] == "speech", child["kind"]
        assert child["metadata"]["labels"]["example.com/cost-center"] == "cc-42", child["kind"]
    template = children["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert template["team"] == "speech" and template["example.com/cost-center"] == "cc-42"
    assert children["Deployment"]["spec"]["selector"] == {"matchLabels": builders.selector_labels(MAXIMAL)}
    assert children["Service"]["spec"]["selector"] == builders.selector_labels(MAXIMAL)
    assert children["PodDisruptionBudget"]["spec"]["selector"] == {"matchLabels": builders.selector_labels(MAXIMAL)}
    assert "team" not in builders.selector(MAXIMAL)
    assert "team" not in builders.labels(MINIMAL)


def test_image_pull_secrets_reach_the_pods() -> None:
    assert pod(MAXIMAL)["imagePullSecrets"] == [{"name": "registry-credentials"}, {"name": "mirror-credentials"}]
    assert "imagePullSecrets" not in pod(MINIMAL)
