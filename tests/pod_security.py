"""The Kubernetes Pod Security Standards' "restricted" profile, written out as its checks.

A namespace labelled ``pod-security.kubernetes.io/enforce: restricted`` (deploy/base's is) has
every pod refused that breaks one of these; what the chart, deploy/ and the operator emit must
pass them. The API server's admission plugin cannot run here (no API server), so the tests hold
pod specs against this list, made from the standard's table
(https://kubernetes.io/docs/concepts/security/pod-security-standards/, baseline and restricted,
policy version 1.30): :func:`violations` returns one line per broken rule, in the admission's terms.
"""

from __future__ import annotations

from typing import Any

#: Volume types the restricted profile allows.
ALLOWED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
#: Capabilities the baseline profile lets a container add (restricted: NET_BIND_SERVICE only).
RESTRICTED_ADD = {"NET_BIND_SERVICE"}
SECCOMP_OK = {"RuntimeDefault", "Localhost"}


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod.get("containers", []), *pod.get("ephemeralContainers", [])]


def violations(pod: dict[str, Any]) -> list[str]:
    """What of the pod spec ``pod`` (a template's ``spec``) the restricted profile refuses; [] when it passes."""
    out: list[str] = []
    pod_sc = pod.get("securityContext") or {}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            out.append(f"host namespaces ({key}=true)")
    for volume in pod.get("volumes", []):
        kind = next((k for k in volume if k != "name"), None)
        if kind not in ALLOWED_VOLUMES:
            out.append(f'restricted volume types (volume "{volume["name"]}" uses restricted volume type "{kind}")')
    if pod_sc.get("runAsUser") == 0:
        out.append("runAsUser=0 (pod must not set runAsUser=0)")
    pod_seccomp = (pod_sc.get("seccompProfile") or {}).get("type")
    if pod_seccomp is not None and pod_seccomp not in SECCOMP_OK:
        out.append(f"seccompProfile (pod must not set seccompProfile.type to {pod_seccomp})")
    for c in _containers(pod):
        name, sc = c["name"], c.get("securityContext") or {}
        where = f'container "{name}"'
        if sc.get("privileged"):
            out.append(f"privileged ({where} must not set securityContext.privileged=true)")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            out.append(f"hostPort ({where} uses hostPorts)")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"allowPrivilegeEscalation != false ({where} must set securityContext.allowPrivilegeEscalation=false)")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            out.append(f'unrestricted capabilities ({where} must set securityContext.capabilities.drop=["ALL"])')
        added = set(caps.get("add") or []) - RESTRICTED_ADD
        if added:
            out.append(f"unrestricted capabilities ({where} must not include {sorted(added)} in securityContext.capabilities.add)")
        non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
        if non_root is not True:
            out.append(f"runAsNonRoot != true ({where} must set securityContext.runAsNonRoot=true)")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            out.append(f"runAsUser=0 ({where} must not set runAsUser=0)")
        seccomp = (sc.get("seccompProfile") or {}).get("type") or pod_seccomp
        if seccomp not in SECCOMP_OK:
            out.append(f'seccompProfile ({where} must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")')
    return out
