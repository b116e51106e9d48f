"""OpenShift's default security context constraint, ``restricted-v2``, written out as its admission: what it refuses
and what it assigns to a pod of a namespace.

On OpenShift every pod is admitted by the SCC admission plugin; a ServiceAccount granted nothing more (the chart's,
deploy/'s, and the recognizers', which use their namespace's ``default``) has ``restricted-v2`` only. There is no
OpenShift here (no API server, no SCC plugin), so the tests hold pod specs against this emulation, written from:

- ``restricted-v2`` as OpenShift ships it (openshift/cluster-kube-apiserver-operator,
  bindata/bootkube/scc-manifests/0000_20_kube-apiserver-operator_00_scc-restricted-v2.yaml): no host network, PID,
  IPC, ports or directories; not privileged; ``allowPrivilegeEscalation: false``; ``requiredDropCapabilities: [ALL]``;
  ``allowedCapabilities: [NET_BIND_SERVICE]``; ``runAsUser: MustRunAsRange``; ``fsGroup: MustRunAs``;
  ``seLinuxContext: MustRunAs``; ``supplementalGroups: RunAsAny``; ``seccompProfiles: [runtime/default]`` ("it will
  also default the seccomp profile to runtime/default if unset, otherwise this seccomp profile is required"); volumes
  configMap, csi, downwardAPI, emptyDir, ephemeral, image, persistentVolumeClaim, projected, secret;
- OpenShift's documentation of SCCs ("Managing security context constraints",
  https://docs.openshift.com/container-platform/4.11/authentication/managing-security-context-constraints.html, and
  its part "About pre-allocated security context constraints values"): an SCC without ranges takes them from the
  namespace's annotations (``openshift.io/sa.scc.uid-range`` for MustRunAsRange, ``openshift.io/sa.scc.supplemental-groups``
  for fsGroup's MustRunAs, ``openshift.io/sa.scc.mcs`` for the SELinux level); a range strategy gives a field the pod
  leaves unset the minimum of its (first) range, and refuses a value the pod sets outside its ranges.

:func:`admit` returns the pod as admitted (the values assigned, as ``oc get pod -o yaml`` shows them: ``runAsUser`` on
each container, ``fsGroup`` and the SELinux level on the pod, capabilities dropped, no privilege escalation, the
seccomp profile) or the refusals, one line each, in the plugin's words. The gid: SCCs have no ``runAsGroup`` strategy;
a container without one runs with the primary group of its uid in the image's /etc/passwd, which has no entry for a uid
of the range, so gid 0 (:data:`ASSIGNED_GID`), with the fsGroup as a supplementary group. Not written out: the SCCs a
ServiceAccount may be granted besides (``nonroot-v2``, ``anyuid``...) and the choice among several, sysctls, AppArmor.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

SCC = "restricted-v2"
VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "image", "persistentVolumeClaim", "projected", "secret"}
ALLOWED_CAPABILITIES = {"NET_BIND_SERVICE"}
#: The gid a container of an admitted pod runs with when it sets no runAsGroup (see the module doc).
ASSIGNED_GID = 0


@dataclass(frozen=True)
class Namespace:
    """An OpenShift project's pre-allocated values, as its annotations hold them (``start/length``)."""

    uid_range: str = "1000680000/10000"
    supplemental_groups: str = "1000680000/10000"
    mcs: str = "s0:c26,c15"

    @property
    def annotations(self) -> dict[str, str]:
        return {"openshift.io/sa.scc.uid-range": self.uid_range,
                "openshift.io/sa.scc.supplemental-groups": self.supplemental_groups, "openshift.io/sa.scc.mcs": self.mcs}

    @staticmethod
    def _range(value: str) -> tuple[int, int]:
        start, length = (int(x) for x in value.split("/"))
        return start, start + length - 1

    @property
    def uids(self) -> tuple[int, int]:
        return self._range(self.uid_range)

    @property
    def groups(self) -> tuple[int, int]:
        return self._range(self.supplemental_groups.split(",")[0])


class Refused(Exception):
    """The pod is refused: its message is the plugin's, its ``reasons`` one line per broken rule."""

    def __init__(self, reasons: list[str]) -> None:
        self.reasons = reasons
        super().__init__(f'unable to validate against any security context constraint: [provider "{SCC}": '
                         + ", ".join(reasons) + "]")


def _containers(pod: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(f"{kind}[{i}]", c) for kind in ("initContainers", "containers") for i, c in enumerate(pod.get(kind) or [])]


def admit(pod: dict[str, Any], namespace: Namespace = Namespace()) -> dict[str, Any]:
    """The pod spec ``pod`` (a template's ``spec``) as ``restricted-v2`` admits it into ``namespace``; :class:`Refused`
    with every reason when it does not."""
    out = copy.deepcopy(pod)
    reasons: list[str] = []
    low, high = namespace.uids
    g_low, g_high = namespace.groups
    pod_sc = out.setdefault("securityContext", {})
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if out.get(key):
            reasons.append(f"spec.securityContext.{key}: Invalid value: true: {key} is not allowed to be used")
    for i, volume in enumerate(out.get("volumes") or []):
        kind = next((k for k in volume if k != "name"), None)
        if kind not in VOLUMES:
            reasons.append(f'spec.volumes[{i}]: Invalid value: "{kind}": {kind} volumes are not allowed to be used')
    fs_group = pod_sc.get("fsGroup")
    if fs_group is None:
        pod_sc["fsGroup"] = g_low
    elif not g_low <= fs_group <= g_high:
        reasons.append(f"fsGroup: Invalid value: []int64{{{fs_group}}}: {fs_group} is not an allowed group")
    if "runAsUser" in pod_sc and not low <= pod_sc["runAsUser"] <= high:
        reasons.append(f"spec.securityContext.runAsUser: Invalid value: {pod_sc['runAsUser']}: must be in the ranges: [{low}, {high}]")
    level = (pod_sc.get("seLinuxOptions") or {}).get("level")
    if level is not None and level != namespace.mcs:
        reasons.append(f"spec.securityContext.seLinuxOptions.level: Invalid value: {level!r}: must be {namespace.mcs}")
    pod_sc.setdefault("seLinuxOptions", {})["level"] = namespace.mcs
    seccomp = (pod_sc.get("seccompProfile") or {}).get("type")
    if seccomp not in (None, "RuntimeDefault"):
        reasons.append(f"spec.securityContext.seccompProfile.type: Invalid value: {seccomp!r}: runtime/default is the only allowed profile")
    pod_sc["seccompProfile"] = {"type": "RuntimeDefault"}
    for where, c in _containers(out):
        sc = c.setdefault("securityContext", {})
        field = f"spec.{where}.securityContext"
        if sc.get("privileged"):
            reasons.append(f"{field}.privileged: Invalid value: true: Privileged containers are not allowed")
        if any(p.get("hostPort") for p in c.get("ports") or []):
            reasons.append(f"spec.{where}.ports: Invalid value: host ports are not allowed to be used")
        if sc.get("allowPrivilegeEscalation") is True:
            reasons.append(f"{field}.allowPrivilegeEscalation: Invalid value: true: Allowing privilege escalation for containers is not allowed")
        sc["allowPrivilegeEscalation"] = False
        caps = sc.setdefault("capabilities", {})
        for cap in caps.get("add") or []:
            if cap not in ALLOWED_CAPABILITIES:
                reasons.append(f'{field}.capabilities.add: Invalid value: "{cap}": capability may not be added')
        caps["drop"] = ["ALL"]  # requiredDropCapabilities: ALL (added when the container does not drop them)
        uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
        if uid is None:
            sc["runAsUser"] = uid = low
        elif not low <= uid <= high:
            reasons.append(f"{field}.runAsUser: Invalid value: {uid}: must be in the ranges: [{low}, {high}]")
        c_seccomp = (sc.get("seccompProfile") or {}).get("type")
        if c_seccomp not in (None, "RuntimeDefault"):
            reasons.append(f"{field}.seccompProfile.type: Invalid value: {c_seccomp!r}: runtime/default is the only allowed profile")
        if sc.get("runAsNonRoot") is True and uid == 0:
            reasons.append(f"{field}.runAsNonRoot: Invalid value: true: runAsNonRoot with runAsUser 0")
    if reasons:
        raise Refused(reasons)
    return out


def identity(pod: dict[str, Any], container: str) -> tuple[int, int, list[int]]:
    """The uid, gid and supplementary groups a container of an admitted pod runs with (see the module doc)."""
    c = next(c for _, c in _containers(pod) if c["name"] == container)
    pod_sc, sc = pod.get("securityContext") or {}, c.get("securityContext") or {}
    gid = int(sc.get("runAsGroup", pod_sc.get("runAsGroup", ASSIGNED_GID)))
    return (int(sc.get("runAsUser", pod_sc.get("runAsUser"))), gid,
            [gid, *([pod_sc["fsGroup"]] if "fsGroup" in pod_sc else []), *pod_sc.get("supplementalGroups", [])])
