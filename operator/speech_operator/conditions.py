"""Pure status computation: what the operator saw, turned into ``status`` with conditions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal

from speech_operator import api, builders, foreign_autoscalers
from speech_operator.config import POD_IDENTITY_ENV

READY: Final = "Ready"
PROGRESSING: Final = "Progressing"
DEGRADED: Final = "Degraded"
#: Reason of the conditions of a SpeechToText the operator's policy refuses.
POLICY_VIOLATION = "PolicyViolation"
#: Reason of the conditions of a SpeechToText whose spec the operator cannot take (a setting the recognizer would
#: refuse, or a spec a CRD older than the operator let through).
INVALID_SPEC = "InvalidSpec"
#: Reason of the conditions of a SpeechToText whose spec and annotations are too large for kopf's record of them
#: (:func:`speech_operator.record.overflow`): nothing is created or changed, as with an invalid spec.
SPEC_TOO_LARGE = "SpecTooLarge"
#: Reason when the Deployment cannot create pods (its ``ReplicaFailure`` condition: an admission refusal
#: such as Pod Security, a ResourceQuota, a LimitRange), with the API server's words.
PODS_NOT_CREATED = "PodsNotCreated"
#: Reason when the Deployment's rollout made no progress within its progressDeadlineSeconds (pods that
#: crash, cannot pull their image or be scheduled, or never pass their probes), with its words.
PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
#: Reason when a pod's container or init container cannot start or keeps failing (an image the nodes cannot pull, a
#: crash loop, an out-of-memory kill, a container config the kubelet cannot make), in the kubelet's words.
PODS_FAILING = "PodsFailing"
#: Reason when the scheduler finds no node for a pod, in its words.
PODS_UNSCHEDULABLE = "PodsUnschedulable"
#: Reason when a Secret, Secret key, ConfigMap, ConfigMap key or PVC the spec names is missing.
MISSING_DEPENDENCY = "MissingDependency"
#: Reason when the installed CRD lacks fields this operator knows (:mod:`speech_operator.crd_check`): the API server
#: drops them from every SpeechToText written. A reason of Degraded, not a condition type of its own: an older CRD's
#: schema refuses condition types it does not list, and the whole status write with them.
CRD_OUTDATED = "CRDOutdated"
#: Reason when the API server refused to create or change a child (an admission webhook such as a policy
#: engine's, a ResourceQuota on objects, a value it does not take), with its words.
WRITE_REFUSED = "WriteRefused"
#: Reason when an object of a child's name (the SpeechToText's) is someone else's, which the operator leaves as it is:
#: another controller's, or one made by hand or by another tool.
NAME_CONFLICT = "NameConflict"
#: Reason when a HorizontalPodAutoscaler (or KEDA's) scales the SpeechToText's Deployment instead of the SpeechToText,
#: which the operator leaves to it (:mod:`speech_operator.foreign_autoscalers`), with its name and the fix.
FOREIGN_AUTOSCALER = "ForeignAutoscaler"
#: Degraded's message when it is False: none of the reasons above holds (its Recovered event adds the one that held).
NOT_DEGRADED = "the spec is applied, all it references exists and no pod is failing"


def deployment_trouble(deployment: dict[str, Any] | None, stt: api.SpeechToText) -> tuple[str, str] | None:
    """What the Deployment's own conditions say keeps its pods from running: ``(reason, message)``, or None.

    Conditions the Deployment controller has not yet brought up to the Deployment's latest spec
    (``status.observedGeneration`` behind ``metadata.generation``) say nothing of that spec.
    """
    if deployment is None:
        return None
    seen = deployment.get("status") or {}
    generation = (deployment.get("metadata") or {}).get("generation")
    if generation is not None and int(seen.get("observedGeneration") or 0) < int(generation):
        return None
    found = {c.get("type"): c for c in seen.get("conditions") or [] if isinstance(c, dict)}
    failure = found.get("ReplicaFailure") or {}
    if failure.get("status") == "True":
        message = f"the Deployment cannot create pods: {failure.get('message') or failure.get('reason') or 'no reason given'}"
        pod_security = "PodSecurity" in message
        if pod_security and builders.needs_chown(stt.spec):
            message += ("; the chown init container runs as root to give the PVC and hostPath volumes to uid 65532: where "
                        "the namespace enforces the restricted Pod Security Standard, set spec.chownVolumes to false "
                        "and have the volumes writable by 65532")
        openshift = "security context constraint" in message  # OpenShift's SCC admission
        if (pod_security or openshift) and any(v.hostPath for v in builders.mounted_volumes(stt.spec).values()):
            message += "; hostPath volumes are refused there whoever owns them: use a PersistentVolumeClaim"
        template = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
        if openshift and "fsGroup" in (template.get("securityContext") or {}):
            message += ("; OpenShift's default SCC (restricted-v2) gives each namespace's pods a uid and fsGroup of its "
                        f"own range and refuses 65532: have the operator leave them to it ({POD_IDENTITY_ENV}=platform; "
                        "the chart's podIdentity=platform)")
        return PODS_NOT_CREATED, message
    progress = found.get("Progressing") or {}
    if progress.get("status") == "False" and progress.get("reason") == PROGRESS_DEADLINE_EXCEEDED:
        return PROGRESS_DEADLINE_EXCEEDED, (
            f"{(progress.get('message') or 'the rollout made no progress').rstrip('.')}: its pods did not become ready "
            f"(kubectl describe pods -l {builders.selector(stt)})")
    return None


#: Why a container waits, in the kubelet's words, that its pod will not get past unless something changes.
IMAGE_PULL_FAILED = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName")
CONFIG_FAILED = ("CreateContainerConfigError", "CreateContainerError")
CRASH_LOOP = "CrashLoopBackOff"
OOM_KILLED = "OOMKilled"
#: How much of the cluster's words a status quotes (of a container's termination message, with
#: ``FallbackToLogsOnError`` the end of its log: its last line, where the error is): the end, when longer.
QUOTED_MAX = 400


def is_ready(pod: Mapping[str, Any]) -> bool:
    """A pod that passes its readiness probe, has an IP and is not being deleted."""
    status = pod.get("status") or {}
    if (pod.get("metadata") or {}).get("deletionTimestamp") or not status.get("podIP"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def desired_replicas(stt: api.SpeechToText, held: int | None = None) -> int:
    """The pods wanted: the SpeechToText's (:func:`builders.replicas`), or ``held``, where someone else's autoscaler
    holds its Deployment's replicas (:mod:`speech_operator.foreign_autoscalers`)."""
    return builders.replicas(stt) if held is None else held


def reported_replicas(stt: api.SpeechToText) -> int:
    """The pods the operator last said it wants (``status.desiredReplicas``, :func:`observe`: a foreign autoscaler's
    choice while one holds the Deployment), what the metrics and the gateway read; :func:`builders.replicas` before
    its first reconcile wrote one."""
    status = stt.status
    if status is not None and status.observedGeneration is not None and "desiredReplicas" in status.model_fields_set:
        return status.desiredReplicas
    return builders.replicas(stt)


def pods_matter(stt: api.SpeechToText, deployment: dict[str, Any] | None, held: int | None = None) -> bool:
    """Whether the pods may say why the SpeechToText is not ready: fewer of them ready, or updated, than desired, and the
    Deployment has pods (``status.replicas``). A steady ready SpeechToText's pods are never listed (the reconcile runs
    often), nor those of a Deployment that has made none yet (a creation's first reconciles): its controller's status
    update once it has is an event of the Deployment, and reconciles again."""
    seen = (deployment or {}).get("status") or {}
    desired = desired_replicas(stt, held)
    return deployment is not None and desired > 0 and int(seen.get("replicas") or 0) > 0 and (
        int(seen.get("readyReplicas") or 0) < desired or int(seen.get("updatedReplicas") or 0) < desired)


def _quoted(text: str) -> str:
    """Words of the cluster's on one line, their end when long."""
    said = " ".join(line.strip() for line in text.splitlines() if line.strip())
    return said if len(said) <= QUOTED_MAX else "..." + said[-(QUOTED_MAX - 3):]


def _exit(terminated: dict[str, Any]) -> str:
    """``Error, exit code 1`` and the last line of the container's last words (the recognizer's and the download's
    error is one line, their last), if any."""
    words = f"{terminated.get('reason') or 'exited'}, exit code {terminated.get('exitCode', '?')}"
    lines = [line for line in str(terminated.get("message") or "").splitlines() if line.strip()]
    return f"{words}: {_quoted(lines[-1])}" if lines else words


def _container_trouble(c: dict[str, Any], stt: api.SpeechToText) -> tuple[int, str] | None:
    """What keeps one container (status) from running, with what to do where it is known: ``(rank, words)``, the
    rank lower for a cause the spec holds (an image, a config) than for one it may (a crash), or None."""
    state, last = c.get("state") or {}, (c.get("lastState") or {}).get("terminated") or {}
    waiting, terminated = state.get("waiting") or {}, state.get("terminated") or {}
    reason, message = waiting.get("reason"), _quoted(str(waiting.get("message") or ""))
    said = f"{reason}: {message}" if message else str(reason)
    if reason in IMAGE_PULL_FAILED:
        whose = ("the operator's own image (the chown step)" if c.get("name") == builders.CHOWN_CONTAINER
                 else "check spec.image, spec.version and spec.imagePullSecrets")
        return 0, f"{said}; {whose}"
    if reason in CONFIG_FAILED:
        return 0, f"{said}; check the Secrets and ConfigMaps the spec names"
    if reason == CRASH_LOOP or (terminated and terminated.get("exitCode") not in (0, None)):
        ended = last if reason == CRASH_LOOP else terminated
        words = f"{CRASH_LOOP if reason == CRASH_LOOP else 'failed'} ({_exit(ended)})"
    elif last.get("reason") == OOM_KILLED:
        ended, words = last, f"was restarted ({_exit(last)})"
    else:
        return None
    if ended.get("reason") == OOM_KILLED and c.get("name") != builders.CHOWN_CONTAINER:  # the chown step's are fixed
        limit = stt.spec.resources.limits.memory
        words += f"; it needs more memory: raise spec.resources.limits.memory (now {limit or 'unset'})"
    elif c.get("name") == builders.DOWNLOAD_CONTAINER:
        words += ("; the model download failed: let the pods reach the model catalog (ModelCatalogUrl, or "
                  "spec.model.url), through a NetworkPolicy or a proxy, or give the model in a volume "
                  "(README, Disconnected mode)")
    return 1, words


def pods_trouble(pods: list[dict[str, Any]], stt: api.SpeechToText) -> tuple[str, str] | None:
    """The most telling reason the SpeechToText's pods do not run, in the kubelet's or scheduler's words:
    ``(reason, message)``, or None.

    Pods that are ready or being deleted say nothing (during a rollout, the old ones go: what matters is why the
    new ones do not come up). A container that cannot start for a cause the spec holds (an image the nodes cannot
    pull, a config the kubelet cannot make) comes first, then one that crashes or was killed out of memory (init
    containers first: they run first), then a pod the scheduler cannot place.
    """
    found: list[tuple[int, str, str, str]] = []  # rank, reason, message, pod
    for pod in pods:
        meta, status = pod.get("metadata") or {}, pod.get("status") or {}
        if meta.get("deletionTimestamp") or is_ready(pod):
            continue
        name = str(meta.get("name"))
        for kind, key in (("init container", "initContainerStatuses"), ("container", "containerStatuses")):
            for c in status.get(key) or []:
                trouble = _container_trouble(c, stt)
                if trouble:
                    found.append((trouble[0], PODS_FAILING, f'pod {name}: {kind} "{c.get("name")}" {trouble[1]}', name))
        scheduled: dict[str, Any] = next((c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"), {})
        if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
            found.append((2, PODS_UNSCHEDULABLE, (
                f"pod {name} cannot be scheduled: {_quoted(str(scheduled.get('message') or 'Unschedulable')).rstrip('.')}; "
                "check spec.resources.requests, spec.nodeSelector, spec.tolerations, spec.affinity"), name))
    if not found:
        return None
    _, reason, message, _ = min(found, key=lambda f: f[0])  # the first of the lowest rank
    others = len({f[3] for f in found}) - 1
    return reason, message + (f" (and {others} more pod{'s' if others > 1 else ''} not running)" if others else "")


#: A container's wait for what a missing Secret or ConfigMap may explain: (pod, container, reason, message).
Wait = tuple[str, str, str, str]


def dependency_trouble(pods: list[dict[str, Any]], stt: api.SpeechToText) -> frozenset[Wait]:
    """The containers of pods not ready that wait for what a Secret or ConfigMap the spec names, missing, would explain:
    a container config the kubelet cannot make (:data:`CONFIG_FAILED`: an environment variable from a Secret's key), or
    an image it cannot pull while ``spec.imagePullSecrets`` names some. A status refresh looks for those objects only
    for a wait it has not looked for yet (:func:`speech_operator.reconcile.refresh_status`): the kubelet's message
    changes with what it lacks (it makes the environment before it checks runAsNonRoot), a new pod is a new wait."""
    reasons = (*CONFIG_FAILED, *(IMAGE_PULL_FAILED if stt.spec.imagePullSecrets else ()))
    return frozenset((str((pod.get("metadata") or {}).get("name")), str(c.get("name")), str(waiting.get("reason")),
                      str(waiting.get("message") or ""))
                     for pod in pods if not (pod.get("metadata") or {}).get("deletionTimestamp") and not is_ready(pod)
                     for key in ("initContainerStatuses", "containerStatuses") for c in (pod.get("status") or {}).get(key) or []
                     for waiting in [((c.get("state") or {}).get("waiting") or {})] if waiting.get("reason") in reasons)


def condition(
    type_: api.ConditionType, ok: bool, reason: str, message: str, *,
    generation: int | None, now: str, previous: list[api.Condition],
) -> api.Condition:
    """A condition whose lastTransitionTime only moves when its status flips, its message cut to the
    bound (a cluster's words quoted in it, e.g. a long admission refusal, must not fail the status write)."""
    if len(message) > api.CONDITION_MESSAGE_MAX:
        tail = f" ... ({len(message)} characters, cut)"
        message = message[:api.CONDITION_MESSAGE_MAX - len(tail)] + tail
    status: Literal["True", "False"] = "True" if ok else "False"
    before = next((c for c in previous if c.type == type_), None)
    since = before.lastTransitionTime if before and before.status == status else now
    return api.Condition(type=type_, status=status, reason=reason, message=message,
                         lastTransitionTime=since, observedGeneration=generation)


def _refused_writes(refused: list[str]) -> str:
    return "the API server refused " + "; ".join(refused)


#: What joins to a Degraded message for one reason the others that hold (:func:`_also`).
ALSO = "; also, "


def _also(message: str, *others: str | None) -> str:
    """A Degraded message for one reason, still saying the ``others`` that hold (an outdated CRD, a foreign
    autoscaler)."""
    return ALSO.join([message, *filter(None, others)])


def observe(
    stt: api.SpeechToText, deployment: dict[str, Any] | None, missing: list[str], now: str,
    refused: list[str] | None = None, outdated_crd: str | None = None, not_applied: str | None = None,
    write_refused: list[str] | None = None, pods: list[dict[str, Any]] | None = None, conflicts: list[str] | None = None,
    foreign: tuple[api.ForeignAutoscaler, ...] = (), held: int | None = None,
) -> api.SpeechToTextStatus:
    """The status of a SpeechToText from its Deployment and the dependencies found missing.

    ``missing`` names what the pods need but is absent, e.g. ``Secret "api-key"``;
    ``refused`` says why the operator's policy refuses the spec (:mod:`policy`): then
    nothing was created or changed, and the SpeechToText is Degraded and not Ready.
    ``outdated_crd`` says what the installed CRD lacks (:func:`crd_check.problem`): Degraded
    (reason :data:`CRD_OUTDATED`, or added to another reason's message), still Ready when its pods are.
    ``not_applied`` says what of the spec the operator leaves out, and why, in the message of
    a Degraded that is False (:func:`builders.chown_not_applied`).
    ``write_refused`` gives the API server's words for each child it refused to create or change (an
    admission webhook such as a policy engine's, a quota): Degraded (reason :data:`WRITE_REFUSED`, re-checked
    as a missing Secret is), not Progressing, and not Ready unless a Deployment from before serves.
    ``pods`` are the SpeechToText's pods, listed when :func:`pods_matter`: what keeps them from running
    (:func:`pods_trouble`) makes it Degraded and not Ready, before the Deployment's progress deadline says so.
    ``conflicts`` says which children's names someone else's objects hold (left as they are): Degraded (reason
    :data:`NAME_CONFLICT`, re-checked), not Progressing, not Ready (``deployment`` is then None, or the Service
    in front of its pods is not theirs).
    ``foreign`` are who scale its Deployment instead of it: ``status.foreignAutoscalers``, and Degraded (reason
    :data:`FOREIGN_AUTOSCALER`, or added to another reason's message: :func:`foreign_autoscalers.message`), not
    re-checked (its watch says when it goes);
    ``held`` is the replicas it holds the Deployment at, the pods desired (:func:`desired_replicas`); meanwhile
    ``status.autoscaling`` is absent: spec.autoscaling decides nothing (:func:`speech_operator.reconcile.reconcile`).
    """
    desired = desired_replicas(stt, held)
    foreign_said = foreign_autoscalers.message(foreign, stt) if foreign else None
    seen = (deployment or {}).get("status") or {}
    replicas = int(seen.get("replicas") or 0)
    ready = int(seen.get("readyReplicas") or 0)
    updated = int(seen.get("updatedReplicas") or 0)
    generation = stt.metadata.get("generation")
    previous = stt.status.conditions if stt.status else []

    def cond(type_: api.ConditionType, ok: bool, reason: str, message: str) -> api.Condition:
        return condition(type_, ok, reason, message, generation=generation, now=now, previous=previous)

    trouble = None if refused else deployment_trouble(deployment, stt)
    # the pods' own words say more than a progress deadline; a Deployment that cannot create pods has none to ask
    failing = None if refused or (trouble and trouble[0] == PODS_NOT_CREATED) else pods_trouble(pods or [], stt)
    cause = failing or trouble
    if refused:
        degraded = cond(DEGRADED, True, POLICY_VIOLATION, _also("refused: " + "; ".join(refused), foreign_said, outdated_crd))
    elif conflicts:
        degraded = cond(DEGRADED, True, NAME_CONFLICT, _also("; ".join(conflicts), foreign_said, outdated_crd))
    elif write_refused:
        degraded = cond(DEGRADED, True, WRITE_REFUSED, _also(_refused_writes(write_refused), foreign_said, outdated_crd))
    elif missing:
        what = "; ".join(missing)
        degraded = cond(DEGRADED, True, MISSING_DEPENDENCY, _also(f"{what} not found", foreign_said, outdated_crd))
    elif cause:
        degraded = cond(DEGRADED, True, cause[0], _also(cause[1], foreign_said, outdated_crd))
    elif foreign_said:
        degraded = cond(DEGRADED, True, FOREIGN_AUTOSCALER, _also(foreign_said, outdated_crd))
    elif outdated_crd:
        degraded = cond(DEGRADED, True, CRD_OUTDATED, outdated_crd)
    else:
        degraded = cond(DEGRADED, False, "AsExpected", NOT_DEGRADED
                        + (f"; {not_applied}" if not_applied else ""))

    counts = f"{ready}/{desired} replicas ready"
    if refused:
        progressing = cond(PROGRESSING, False, POLICY_VIOLATION, "nothing is created or changed while the spec breaks the operator's policy")
    elif conflicts:
        progressing = cond(PROGRESSING, False, NAME_CONFLICT, "the spec is not applied: " + "; ".join(conflicts))
    elif write_refused:
        progressing = cond(PROGRESSING, False, WRITE_REFUSED, "the spec is not applied: " + _refused_writes(write_refused))
    elif deployment is None:
        progressing = cond(PROGRESSING, True, "Creating", "Deployment is being created")
    elif trouble and trouble[0] == PROGRESS_DEADLINE_EXCEEDED:
        progressing = cond(PROGRESSING, False, PROGRESS_DEADLINE_EXCEEDED, f"{counts}, {updated} updated: {trouble[1]}")
    elif updated < desired or ready < desired or replicas > desired:
        progressing = cond(PROGRESSING, True, "RollingOut", f"{counts}, {updated} updated")
    else:
        progressing = cond(PROGRESSING, False, "Complete", counts)

    if refused:
        ready_c = cond(READY, False, POLICY_VIOLATION, "refused: " + "; ".join(refused))
    elif conflicts:
        ready_c = cond(READY, False, NAME_CONFLICT, f"{counts}: " + "; ".join(conflicts))
    elif missing:
        ready_c = cond(READY, False, MISSING_DEPENDENCY, f"{'; '.join(missing)} not found")
    elif write_refused and (deployment is None or ready < desired):
        ready_c = cond(READY, False, WRITE_REFUSED, f"{counts}: {_refused_writes(write_refused)}")
    elif write_refused:  # the pods of the Deployment from before serve
        ready_c = cond(READY, True, "ScaledToZero" if desired == 0 else "ReplicasReady", counts)
    elif deployment is not None and progressing.reason == "Complete":
        ready_c = cond(READY, True, "ScaledToZero" if desired == 0 else "ReplicasReady", counts)
    elif cause:
        ready_c = cond(READY, False, cause[0], f"{counts}: {cause[1]}")
    else:
        ready_c = cond(READY, False, "ReplicasNotReady", counts)

    return api.SpeechToTextStatus(
        conditions=[ready_c, progressing, degraded],
        observedGeneration=generation,
        replicas=replicas,
        desiredReplicas=desired,
        readyReplicas=ready,
        selector=builders.selector(stt),
        endpoint=builders.endpoint(stt),
        # while a foreign autoscaler holds the Deployment the operator's decides nothing: no status of its own
        autoscaling=stt.status.autoscaling if stt.spec.autoscaling and stt.status and not foreign else None,
        foreignAutoscalers=list(foreign) or None,
    )


def invalid(body: dict[str, Any], message: str, now: str, outdated_crd: str | None = None,
            reason: str = INVALID_SPEC) -> api.SpeechToTextStatus:
    """The status of a SpeechToText whose spec the operator cannot take (``reason``: :data:`INVALID_SPEC`, or
    :data:`SPEC_TOO_LARGE`): what it reported before (its replicas, selector and autoscaling stay, the pods running as
    they were), its conditions saying why (and Degraded that the installed CRD is outdated, which may be what let the
    spec through)."""
    before = dict(body.get("status") or {})
    try:
        status = api.SpeechToTextStatus.model_validate(before)
    except ValueError:  # a status written by someone else: its counts are read again once the spec is valid
        status = api.SpeechToTextStatus()
    generation = (body.get("metadata") or {}).get("generation")

    def cond(type_: api.ConditionType, ok: bool, message: str) -> api.Condition:
        return condition(type_, ok, reason, message, generation=generation, now=now, previous=status.conditions)

    why = "the spec is invalid" if reason == INVALID_SPEC else "the spec is too large"
    return status.model_copy(update={"observedGeneration": generation, "conditions": [
        cond(READY, False, message),
        cond(PROGRESSING, False, f"nothing is created or changed while {why}"),
        cond(DEGRADED, True, _also(message, outdated_crd))]})


#: The reasons of a spec the operator refuses: nothing is created or changed for it (the autoscaler's decisions included)
#: until the spec, or the operator's policy, changes.
REFUSALS = (POLICY_VIOLATION, INVALID_SPEC, SPEC_TOO_LARGE)


def refusal(stt_status: Mapping[str, Any] | None, generation: int | None) -> str:
    """Why a raw ``status`` says the operator refuses the spec of ``generation`` (the reason of its Progressing
    condition, False for one of :data:`REFUSALS`, observed at that generation), or "": a status of an older spec says
    nothing of this one."""
    found: Mapping[str, Any] = next((c for c in (stt_status or {}).get("conditions") or []
                                     if c.get("type") == PROGRESSING), {})
    taken = found.get("status") != "False" or found.get("reason") not in REFUSALS or found.get("observedGeneration") != generation
    return "" if taken else str(found["reason"])


def refused(stt_status: Mapping[str, Any] | None, generation: int | None) -> bool:
    """Whether the operator refuses the spec of ``generation`` (:func:`refusal`)."""
    return bool(refusal(stt_status, generation))


#: The reasons of a spec refused, by the operator (:data:`REFUSALS`) or by the API server (its writes of the children):
#: a new generation of the spec refused in other words is said again (:func:`refused_anew`), not only the turn to it.
SAID_PER_GENERATION = (*REFUSALS, WRITE_REFUSED)


def refused_anew(before: Mapping[str, Any] | None, degraded: api.Condition) -> bool:
    """Whether the Degraded condition ``degraded`` refuses a new generation of the spec for the reason a raw ``status``
    ``before`` refused an older one, in other words: its user mended one cause and made another (InvalidSpec for one
    field, then another), which the turn to Degraded did not say. Its own words only: what :func:`_also` adds (a foreign
    autoscaler, an outdated CRD) has Events of its own. Within one generation never: a re-check (a webhook's words,
    WriteRefused) or an annotation (SpecTooLarge's counts) changes nothing the user changed in the spec."""
    if degraded.type != DEGRADED or degraded.status != "True" or degraded.reason not in SAID_PER_GENERATION:
        return False
    was: Mapping[str, Any] = next((c for c in (before or {}).get("conditions") or [] if c.get("type") == DEGRADED), {})
    return ((was.get("status"), was.get("reason")) == ("True", degraded.reason)
            and was.get("observedGeneration") != degraded.observedGeneration
            and str(was.get("message") or "").split(ALSO)[0] != degraded.message.split(ALSO)[0])


#: The reasons to be Degraded that no later look finds gone: a refused spec (:data:`REFUSALS`), which only a change of
#: it mends (its event reconciles it; a change of the operator's policy is a restart, which reconciles every one), and
#: what a watch reports the moment it changes (an outdated CRD, a foreign autoscaler).
NOT_RECHECKED = (*REFUSALS, CRD_OUTDATED, FOREIGN_AUTOSCALER)


def needs_recheck(stt_status: dict[str, Any] | None) -> bool:
    """Whether a raw ``status`` asks for another look later: Degraded for a reason a later look may find gone (a
    Secret created, a quota raised...; none of :data:`NOT_RECHECKED`), or not Ready while its pods exist and are not
    all ready (a pod that crashes, or cannot pull its image, changes no field of the Deployment's: only a look at the
    pods sees it, :func:`pods_trouble`)."""
    found = {c.get("type"): c for c in (stt_status or {}).get("conditions") or []}
    degraded, ready = found.get(DEGRADED) or {}, found.get(READY) or {}
    if degraded.get("status") == "True" and degraded.get("reason") not in NOT_RECHECKED:
        return True
    return ready.get("status") == "False" and ready.get("reason") == "ReplicasNotReady" \
        and int((stt_status or {}).get("replicas") or 0) > 0
