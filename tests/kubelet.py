"""Run a pod spec the way a kubelet does, without a cluster: what the tests use to run what the builders emit.

A :class:`Pod` takes a pod spec (``Deployment.spec.template.spec``) and an :class:`Image`
and runs its init containers in order, each to completion, then its first container,
each as a process:

- in the pod's own network namespace (a "pause" process holds it; only loopback), so
  the fixed port 5000 collides with nothing and two pods never see each other;
- in a mount namespace of its own whose root is the image's filesystem, read-only when
  ``readOnlyRootFilesystem`` is set (a mounted image's filesystem is shared by every pod that
  runs it, where a runtime gives each container a copy: a container of such an image must set it,
  else it is refused), with the pod's volumes mounted where the container
  mounts them: emptyDirs are fresh directories (mode 0777, group ``fsGroup``, as the
  kubelet makes them; one with a ``sizeLimit`` a tmpfs of that size, see below), PVCs and hostPaths are host directories the test provides, given
  no ``fsGroup`` treatment (as NFS or a hostPath get none), or, with ``fs_group_claims``,
  PVCs given to the pod's ``fsGroup`` as the kubelet gives a volume whose storage supports
  it (:func:`set_volume_ownership`);
- as the container's (else the pod's) ``runAsUser``/``runAsGroup`` with the pod's
  ``fsGroup`` as a supplementary group, only the capabilities it adds (root keeps only
  those, a non-root user has none), ``no_new_privs`` unless privilege escalation is
  allowed;
- with the image's entrypoint, or ``command``, and ``args``; the image's environment, the
  service links (:func:`service_links`: the master Service's ``KUBERNETES_SERVICE_HOST`` and
  so on always, and unless the pod spec sets ``enableServiceLinks: false`` those of every
  Service given as the pod's namespace's, with a made-up cluster IP), then the container's
  ``env`` (Secret keys filled in from the Secrets given; its resources' amounts by the downward API,
  :func:`resource_field`, the node's allocatable for a limit unset), which wins over them, nothing
  else (no ``HOME``, no ``USER``, no TTY: stdin is /dev/null).

- in a cgroup of its own (:class:`Cgroup`, under this process's own), joined before the container's process
  execs, with its ``resources.limits`` as the kubelet has the runtime set them: ``cpu`` a CFS quota per 100 ms period
  (v1 ``cpu.cfs_quota_us``, v2 ``cpu.max``; none with :attr:`Pod.cpu_cfs_quota` False, as a kubelet run with
  ``--cpu-cfs-quota=false``), ``memory`` the cgroup's limit (v1 ``memory.limit_in_bytes``, v2
  ``memory.max``), past which the kernel OOM-kills it: the container then ends as ``OOMKilled``
  (:meth:`Running.state`, :attr:`Exited.reason`), as the kubelet reports it. The container sees its own cgroup
  at /sys/fs/cgroup (read-only), as in a runtime's container, so what it reads of its limits is what it got.
  The cgroups go when the container ends. A machine whose cgroup filesystem cannot be written fails the pod
  with the reason (never runs it without its limits);

An emptyDir's ``sizeLimit`` is a tmpfs of that size: a write past it fails (ENOSPC) in the container that makes it,
where a kubelet lets it be written and evicts the whole pod at its next look at the volume's usage (every ten seconds
or so), so what a pod is allowed to write is run within the size it is given, and what it is not fails at once. The
tmpfs's pages are memory charged to the writing container's cgroup (its memory limit), where a disk-backed emptyDir
takes node disk and only reclaimable page cache.

Probes and ``httpGet`` hooks are plain GETs from inside the pod's network namespace,
without headers beyond the kubelet's own ``User-Agent``, judged as a kubelet does
(200-399 is success).

:func:`host_image` is "the image" as this checkout on this machine (its Python, the
worktree, read-only); tests/ship builds real images and uses :func:`oci_image`.
Needs root (namespaces, mounts, chroot), like the image build.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import json
import math
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")

CLONE_NEWNET = 0x40000000
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
#: Capability names a pod spec uses -> numbers (linux/capability.h).
CAPABILITIES = {"CHOWN": 0, "DAC_OVERRIDE": 1, "DAC_READ_SEARCH": 2, "FOWNER": 3, "FSETID": 4, "KILL": 5,
                "SETGID": 6, "SETUID": 7, "NET_BIND_SERVICE": 10, "SYS_CHROOT": 18}

_libc = ctypes.CDLL(None, use_errno=True)

#: The master Service (``kubernetes`` in namespace default): the kubelet gives every container its link variables,
#: ``KUBERNETES_SERVICE_HOST`` and so on, even with ``enableServiceLinks: false``. Tests' pods log in with a kubeconfig
#: naming kmock (tests/operator_pod.py), and no service-account token is mounted, so the in-cluster login these point
#: at fails first (no token file) and the kubeconfig is used, as in a cluster the token would be.
MASTER_SERVICE = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kubernetes", "namespace": "default"},
                  "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443, "protocol": "TCP"}]}}


@dataclass(frozen=True)
class Image:
    """What a kubelet takes from an image: its filesystem, entrypoint, environment and working directory."""

    entrypoint: tuple[str, ...]
    env: dict[str, str]
    workdir: str = "/"
    #: The image's root filesystem; None: this machine's own directories (see :func:`host_image`).
    rootfs: Path | None = None
    #: For ``rootfs`` None: host paths that make up the filesystem, bound read-only at the same place.
    host_paths: tuple[str, ...] = ()


def host_image(entrypoint: tuple[str, ...] = ("python", "-m", "speech_recognizer")) -> Image:
    """This checkout as an image: the running Python and the worktree, read-only, on PYTHONPATH.

    The image's ``Entrypoint`` and ``Env`` are written in the Dockerfile; here, ``PATH``
    leads to the running Python and ``PYTHONPATH`` to this worktree's packages.
    """
    python_home = Path(sys.prefix)
    paths = ["/usr", "/etc", str(python_home), str(ROOT)]
    return Image(
        entrypoint=entrypoint,
        env={
            "PATH": f"{python_home / 'bin'}:/usr/local/bin:/usr/bin:/bin",
            "PYTHONPATH": f"{ROOT / 'recognizer'}:{ROOT / 'operator'}",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
        },
        workdir="/tmp",
        host_paths=tuple(paths),
    )


def oci_image(config: dict[str, Any], rootfs: Path) -> Image:
    """An image from its OCI config (``podman image inspect``'s ``Config``) and its mounted filesystem."""
    env = dict(item.split("=", 1) for item in config.get("Env") or [])
    return Image(entrypoint=tuple(config.get("Entrypoint") or ()), env=env,
                 workdir=config.get("WorkingDir") or "/", rootfs=rootfs)


# ---- the launcher (runs as root inside the container's network and mount namespaces) ----
#: Quantity suffixes a ``sizeLimit`` takes, as multipliers (the launcher imports nothing of the project's: its own).
_SIZE_SUFFIXES = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
                  "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def _bytes(quantity: str | int) -> int:
    """A ``sizeLimit`` in bytes, a page at least (tmpfs's grain)."""
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?", str(quantity).strip())
    if match is None:
        raise ValueError(f"sizeLimit {quantity!r} is not a quantity this kubelet reads")
    return max(4096, math.ceil(float(match[1]) * _SIZE_SUFFIXES[match[2] or ""]))


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def _bind(source: str, target: Path, read_only: bool) -> None:
    target.mkdir(parents=True, exist_ok=True)
    _mount("--rbind", source, str(target))
    if read_only:
        _mount("-o", "remount,bind,ro", str(target))


def inside(root: Path, path: str) -> Path:
    """``path`` as the container sees it, under ``root``: symlinks in the image are followed within
    ``root`` (``/var/run`` -> ``/run`` must not reach the host's /run), as runtimes do (securejoin)."""
    todo = [p for p in path.split("/") if p not in ("", ".")]
    done: list[str] = []
    for _ in range(255):
        if not todo:
            return root.joinpath(*done)
        part = todo.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        candidate = root.joinpath(*done, part)
        if candidate.is_symlink():
            target = os.readlink(candidate)
            if target.startswith("/"):
                done = []
            todo = [p for p in target.split("/") if p not in ("", ".")] + todo
        else:
            done.append(part)
    raise OSError(f"too many symlinks in {path}")


def _launch(plan: dict[str, Any]) -> None:
    """Set up the container's filesystem and identity, then exec its process (never returns)."""
    for directory in plan["cgroups"].values():  # first: all it runs, its process above all, runs under its limits
        Path(directory, "cgroup.procs").write_text(str(os.getpid()))
    root = Path(plan["root"])
    if plan["rootfs"]:
        _mount("--rbind", plan["rootfs"], str(root))
    else:
        _mount("-t", "tmpfs", "-o", "mode=0755", "tmpfs", str(root))
        for top in ("bin", "sbin", "lib", "lib64"):
            if os.path.islink(f"/{top}"):
                (root / top).symlink_to(os.readlink(f"/{top}"))
        for path in plan["host_paths"]:
            _bind(path, root / path.lstrip("/"), read_only=True)
        # as in the image (the Dockerfile's /tmp), the working directory; it exists already when a host
        # path lies under /tmp (a checkout there)
        (root / "tmp").mkdir(mode=0o1777, exist_ok=True)
        os.chmod(root / "tmp", 0o1777)
    for system in ("proc", "dev", "sys"):
        _bind(f"/{system}", inside(root, system), read_only=False)
    # its own cgroup where the container looks for it, read-only, as a runtime mounts it (v1: per controller)
    for controller, directory in plan["cgroups"].items():
        _bind(directory, inside(root, f"sys/fs/cgroup/{controller}"), read_only=True)
    for mount in plan["mounts"]:
        _bind(mount["source"], inside(root, mount["target"]), read_only=mount["readOnly"])
    if plan["readOnlyRootFilesystem"]:
        _mount("-o", "remount,ro" if not plan["rootfs"] else "remount,bind,ro", str(root))
    os.chroot(root)
    os.chdir(plan["workdir"])
    last_cap = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    for cap in range(last_cap + 1):
        if cap not in plan["capabilities"] and _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), f"cannot drop capability {cap}")
    os.setgroups(plan["groups"])
    os.setresgid(plan["gid"], plan["gid"], plan["gid"])
    os.setresuid(plan["uid"], plan["uid"], plan["uid"])
    if plan["noNewPrivs"] and _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "cannot set no_new_privs")
    argv = plan["argv"]
    os.execvpe(argv[0], argv, plan["env"])


def service_links(services: list[dict[str, Any]]) -> dict[str, str]:
    """The variables the kubelet makes of ``services`` (Kubernetes' pkg/kubelet/envvars/envvars.go, FromServices): for
    a Service ``NAME`` (upper case, ``-`` as ``_``) ``NAME_SERVICE_HOST`` (its cluster IP), ``NAME_SERVICE_PORT`` (its first
    port), ``NAME_SERVICE_PORT_<PORT NAME>`` for each named port, and Docker's link variables: ``NAME_PORT`` (the first
    port as ``tcp://IP:PORT``), and per port ``NAME_PORT_<port>_<PROTO>`` (the same), ``..._PROTO``, ``..._PORT``,
    ``..._ADDR``. A Service without a cluster IP (headless, ExternalName) makes none; one whose manifest has none yet
    (as rendered, before the API server allots one) gets a made-up one, 10.96.1.x in their order."""
    env: dict[str, str] = {}
    for number, service in enumerate(services, start=1):
        spec = service.get("spec") or {}
        ip = spec.get("clusterIP") or ("" if spec.get("type") == "ExternalName" else f"10.96.1.{number}")
        if ip in ("", "None") or not spec.get("ports"):
            continue
        prefix = service["metadata"]["name"].replace("-", "_").upper()
        env[f"{prefix}_SERVICE_HOST"] = ip
        env[f"{prefix}_SERVICE_PORT"] = str(spec["ports"][0]["port"])
        for port in spec["ports"]:
            if port.get("name"):
                env[f"{prefix}_SERVICE_PORT_{port['name'].replace('-', '_').upper()}"] = str(port["port"])
        for index, port in enumerate(spec["ports"]):
            proto = port.get("protocol") or "TCP"
            address = f"{proto.lower()}://{ip}:{port['port']}"
            if index == 0:
                env[f"{prefix}_PORT"] = address
            each = f"{prefix}_PORT_{port['port']}_{proto.upper()}"
            env.update({each: address, f"{each}_PROTO": proto.lower(), f"{each}_PORT": str(port["port"]), f"{each}_ADDR": ip})
    return env


def node_allocatable() -> dict[str, str]:
    """This machine as a node's allocatable (a kubelet's is its capacity less what it reserves; none reserved here): its
    CPUs, its memory, its root filesystem's size."""
    return {"cpu": str(os.cpu_count() or 1), "memory": str(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")),
            "ephemeral-storage": str(shutil.disk_usage("/").total)}


#: The divisors the API server accepts for each resource a ``resourceFieldRef`` names (Kubernetes'
#: validateContainerResourceDivisor).
DIVISORS = {"cpu": ("1m", "1"),
            **dict.fromkeys(("memory", "ephemeral-storage"), ("1", "1k", "1M", "1G", "1T", "1P", "1E",
                                                             "1Ki", "1Mi", "1Gi", "1Ti", "1Pi", "1Ei"))}


def resource_field(container: dict[str, Any], ref: dict[str, Any], allocatable: dict[str, str]) -> str:
    """The value of an ``env[].valueFrom.resourceFieldRef`` as the kubelet gives it (Kubernetes'
    ExtractContainerResourceValue, pkg/api/v1/resource): the container's ``limits.`` or ``requests.`` amount of
    ``cpu``, ``memory`` or ``ephemeral-storage`` over ``divisor`` (``1`` when unset), rounded UP to a whole number (cpu
    first to whole millicores, memory to whole bytes); a limit the container does not set (or sets to 0) is the node's
    ``allocatable`` (the kubelet's defaulting for the downward API), a request it does not set its limit (the API
    server's defaulting), else 0. A resource, divisor or container the API server refuses is a ValueError."""
    from speech_operator.quantities import quantity  # not at the top: the launcher runs without PYTHONPATH

    part, _, name = str(ref.get("resource", "")).partition(".")
    if part not in ("limits", "requests") or name not in DIVISORS:
        raise ValueError(f"resourceFieldRef {ref.get('resource')!r}: not a resource the downward API gives")
    if ref.get("containerName", container["name"]) != container["name"]:
        raise ValueError(f"resourceFieldRef of {container['name']!r} names container {ref['containerName']!r}: an "
                         "env var may only name its own")
    divisor = str(ref.get("divisor") or "1")
    if divisor not in DIVISORS[name]:
        raise ValueError(f"resourceFieldRef {ref['resource']}: divisor {divisor!r} is not one of {', '.join(DIVISORS[name])}")
    resources = container.get("resources") or {}
    limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
    if part == "limits":
        amount = quantity(limits[name]) if name in limits else None
        amount = quantity(allocatable[name]) if not amount else amount
    else:
        amount = quantity(requests.get(name, limits.get(name, 0)))
    unit = quantity(divisor)
    assert amount is not None and unit is not None, ref
    if name == "cpu":
        return str(math.ceil(math.ceil(amount * 1000) / (unit * 1000)))
    return str(math.ceil(math.ceil(amount) / unit))


def environment(spec: dict[str, Any], container: dict[str, Any], services: list[dict[str, Any]],
                secrets: dict[str, dict[str, str]] | None = None,
                allocatable: dict[str, str] | None = None) -> dict[str, str]:
    """What the kubelet puts in a container's environment, over its image's: the service links (:func:`service_links`) of
    the master Service, and of ``services`` (those of the pod's namespace) unless the pod ``spec`` sets
    ``enableServiceLinks: false``; then the container's ``env``, which wins over them (``secretKeyRef`` values from
    ``secrets``: Secret name -> key -> value; ``resourceFieldRef`` ones from its resources, :func:`resource_field`, the
    node's ``allocatable`` for a limit unset: this machine's by default)."""
    links = services if spec.get("enableServiceLinks", True) is not False else []
    env = service_links([*links, MASTER_SERVICE])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
        elif "resourceFieldRef" in item["valueFrom"]:
            env[item["name"]] = resource_field(container, item["valueFrom"]["resourceFieldRef"],
                                               node_allocatable() if allocatable is None else allocatable)
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = (secrets or {})[ref["name"]][ref["key"]]
    return env


def set_volume_ownership(top: Path, fs_group: int, read_only: bool = False) -> None:
    """What the kubelet does to a volume whose storage supports fsGroup (most block and CSI storage; not NFS or a
    hostPath) before a pod with ``fsGroup`` mounts it (Kubernetes' pkg/volume/volume_linux.go, SetVolumeOwnership):
    every file and directory to group ``fsGroup``, group read-write (read-only: read), directories also group
    executable and setgid; skipped when the top already has that group and those bits (``OnRootMismatch``)."""
    mask = 0o440 if read_only else 0o660
    if top.stat().st_gid == fs_group and top.stat().st_mode & (mask | 0o2110) == mask | 0o2110:
        return
    for path in [top, *top.rglob("*")]:
        if path.is_symlink():
            continue
        os.chown(path, -1, fs_group)
        os.chmod(path, path.stat().st_mode & 0o7777 | mask | (0o2110 if path.is_dir() else 0))


# ---- cgroups: the containers' resources.limits --------------------------------------------
#: How often :meth:`Pod.wait_probe` probes: more often than any emitted ``periodSeconds`` (2 to 20 s), so that a test
#: goes on once a probe passes; the kubelet's bound (its periods times its failureThreshold) is kept as a deadline.
PROBE_POLL_SECONDS = 0.2
CGROUPS = Path("/sys/fs/cgroup")
#: The CFS period a kubelet gives every container (its cpuCFSQuotaPeriod default).
CFS_PERIOD_US = 100_000


def cfs_quota(cpu_limit: float) -> int:
    """The CFS quota per :data:`CFS_PERIOD_US` the kubelet gives a container of ``cpu_limit`` CPUs (its
    milliCPUToQuota: at least 1 ms per period)."""
    return max(1000, int(cpu_limit * CFS_PERIOD_US))


class CgroupError(RuntimeError):
    """The containers' cgroups cannot be made here: the pod does not run (it would run without its limits)."""


def _own_cgroup(controller: str) -> str:
    """This process's cgroup path in the hierarchy of ``controller`` (``""``: the v2 hierarchy), from /proc/self/cgroup."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if (controller == "" and controllers == "") or (controller and controller in controllers.split(",")):
            return path
    raise CgroupError(f"this process is in no cgroup of the {controller or 'v2'} hierarchy (/proc/self/cgroup)")


def cgroup_parents() -> dict[str, Path]:
    """Where containers' cgroups go: under this process's own cgroup, so that whatever limits it is under hold them
    too. cgroup v2 (one hierarchy, /sys/fs/cgroup with cpu and memory among its controllers): ``{"": dir}``; v1:
    ``{"cpu": dir, "memory": dir}`` (/sys/fs/cgroup/cpu and /sys/fs/cgroup/memory)."""
    unified = CGROUPS / "cgroup.controllers"
    if unified.exists():
        missing = {"cpu", "memory"} - set(unified.read_text().split())
        if missing:
            raise CgroupError(f"cgroup v2 at {CGROUPS} has no {' or '.join(sorted(missing))} controller")
        return {"": CGROUPS / _own_cgroup("").lstrip("/")}
    parents = {}
    for controller in ("cpu", "memory"):
        if not (CGROUPS / controller / "cgroup.procs").exists():
            raise CgroupError(f"neither cgroup v2 ({unified}) nor v1's {controller} controller ({CGROUPS / controller}) "
                              "is mounted")
        parents[controller] = CGROUPS / controller / _own_cgroup(controller).lstrip("/")
    return parents


def _write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError as exc:
        raise CgroupError(f"cannot write {value!r} to {path}: {exc.strerror or exc}") from None


@dataclass
class Cgroup:
    """One container's cgroup, with the container's ``resources.limits``: in each controller's hierarchy (v1), or in
    the one hierarchy (v2), a directory ``<this process's cgroup>/<pod>/<container>``, ``<pod>`` the name of the pod's
    own directory (``kubelet-<name>-<random>``: two pods of one name never share one)."""

    dirs: dict[str, Path]
    cpu_limit: float | None
    memory_limit: int | None

    @property
    def v2(self) -> bool:
        return "" in self.dirs

    def _file(self, controller: str, v1: str, v2: str) -> Path:
        return self.dirs[""] / v2 if self.v2 else self.dirs[controller] / v1

    @classmethod
    def make(cls, pod: str, container: dict[str, Any], cpu_cfs_quota: bool = True) -> Cgroup:
        """Create the cgroup of ``container`` (a pod spec's container) of the pod whose directory is named ``pod``,
        its limits set (its CPU limit as no quota with ``cpu_cfs_quota`` False: :attr:`Pod.cpu_cfs_quota`)."""
        from speech_operator.quantities import quantity  # not at the top: the launcher runs without PYTHONPATH

        limits = (container.get("resources") or {}).get("limits") or {}
        cpu = quantity(limits["cpu"]) if "cpu" in limits else None
        memory = quantity(limits["memory"]) if "memory" in limits else None
        dirs = {controller: parent / pod / container["name"] for controller, parent in cgroup_parents().items()}
        if "" in dirs:  # v2: a cgroup's controllers are those its parent hands down
            try:
                _write(dirs[""].parents[1] / "cgroup.subtree_control", "+cpu +memory")
            except CgroupError as exc:
                raise CgroupError(f"{exc}: cgroup v2 hands controllers down only from a cgroup with no processes of "
                                  "its own (but the root): run the tests in a cgroup of their own whose parent "
                                  "delegates cpu and memory (systemd-run --scope -p Delegate=yes ...)") from None
            dirs[""].parent.mkdir(exist_ok=True)
            _write(dirs[""].parent / "cgroup.subtree_control", "+cpu +memory")
        enforced = cpu if cpu_cfs_quota else None
        made = cls(dirs, float(enforced) if enforced is not None else None, int(memory) if memory is not None else None)
        made.remove()  # a container run again (an init container) starts in a fresh one
        for path in dirs.values():
            try:
                path.mkdir(parents=True)
            except OSError as exc:
                raise CgroupError(f"cannot make the cgroup {path}: {exc.strerror or exc}") from None
        if made.cpu_limit is not None:
            quota = cfs_quota(made.cpu_limit)
            if made.v2:
                _write(dirs[""] / "cpu.max", f"{quota} {CFS_PERIOD_US}")
            else:
                _write(dirs["cpu"] / "cpu.cfs_period_us", str(CFS_PERIOD_US))
                _write(dirs["cpu"] / "cpu.cfs_quota_us", str(quota))
        if made.memory_limit is not None:
            _write(made._file("memory", "memory.limit_in_bytes", "memory.max"), str(made.memory_limit))
            if made.v2 and (dirs[""] / "memory.swap.max").exists():  # the kubelet's default: no swap
                _write(dirs[""] / "memory.swap.max", "0")
        return made

    def oom_kills(self) -> int:
        """Processes of the container the kernel killed for its memory limit (v1 ``memory.oom_control``'s
        ``oom_kill``, v2 ``memory.events``')."""
        text = self._file("memory", "memory.oom_control", "memory.events").read_text()
        counts = dict(line.split() for line in text.splitlines() if line.strip())
        return int(counts.get("oom_kill", 0))

    def memory_peak(self) -> int:
        """The most memory the container has used, in bytes (v1 ``memory.max_usage_in_bytes``, v2 ``memory.peak``)."""
        return int(self._file("memory", "memory.max_usage_in_bytes", "memory.peak").read_text())

    def cpu_throttled(self) -> tuple[int, float]:
        """CFS periods in which the container ran out of its quota, and the seconds it waited for the next."""
        stat = dict(line.split() for line in self._file("cpu", "cpu.stat", "cpu.stat").read_text().splitlines())
        if self.v2:
            return int(stat.get("nr_throttled", 0)), int(stat.get("throttled_usec", 0)) / 1e6
        return int(stat.get("nr_throttled", 0)), int(stat.get("throttled_time", 0)) / 1e9

    def remove(self) -> None:
        """Kill what is left in the cgroup (a container's end ends all its processes), then remove it, and its pod's
        directory once that is empty."""
        for path in self.dirs.values():
            if not path.is_dir():
                continue
            deadline = time.monotonic() + 10
            while True:
                pids = [int(pid) for pid in (path / "cgroup.procs").read_text().split()]
                if not pids:
                    break
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                if time.monotonic() > deadline:
                    raise CgroupError(f"processes {pids} in {path} outlived SIGKILL")
                time.sleep(0.02)
            while True:
                try:
                    path.rmdir()
                    break
                except OSError:  # EBUSY: the last one killed is not quite gone yet
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)
            with contextlib.suppress(OSError):  # ENOTEMPTY: another container of the pod is still there
                path.parent.rmdir()


# ---- the pod ----------------------------------------------------------------------
def termination(returncode: int, cgroup: Cgroup) -> dict[str, Any]:
    """How the kubelet reports a container that ended with ``returncode`` (``state.terminated``): exit code (128 + the
    signal for a signal), and reason ``OOMKilled`` when the kernel killed it for its memory limit, else ``Completed``
    (0) or ``Error``."""
    code = 128 - returncode if returncode < 0 else returncode
    reason = "OOMKilled" if cgroup.oom_kills() else "Completed" if code == 0 else "Error"
    return {"exitCode": code, "reason": reason}


@dataclass
class Exited:
    """An init container that ran to its end."""

    name: str
    returncode: int
    log: str
    #: As the kubelet reports it: ``Completed``, ``Error`` or ``OOMKilled``.
    reason: str = "Completed"


@dataclass
class Running:
    """The pod's main container while it runs."""

    name: str
    process: subprocess.Popen
    logfile: Path
    #: The container's cgroup, with its limits (removed once the container has ended and been seen to).
    cgroup: Cgroup
    _ended: dict[str, Any] | None = None

    def log(self) -> str:
        return self.logfile.read_text(errors="replace") if self.logfile.exists() else ""

    def state(self) -> dict[str, Any]:
        """The container's state as the kubelet reports it: ``{"running": {}}``, or ``{"terminated": {"exitCode",
        "reason"}}`` (reason ``OOMKilled`` when its memory limit had it killed: :func:`termination`)."""
        if self._ended is None:
            if self.process.poll() is None:
                return {"running": {}}
            self._ended = termination(self.process.returncode, self.cgroup)
        return {"terminated": self._ended}

    def cpu_seconds(self) -> float:
        """CPU time the container's process has used so far, user and system, its threads included."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def ended(self) -> str:
        """What the container's end was, for a failure message (its log's end too)."""
        return f"{self.name} ended: {self.state()}\n{self.log()[-4000:]}"


@dataclass
class Pod:
    """One pod: its spec, the image its containers run, Secrets and the host directories behind its volumes."""

    spec: dict[str, Any]
    image: Image
    #: Secret name -> key -> value (for ``env[].valueFrom.secretKeyRef``).
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)
    #: Volume name -> host directory, for every volume that is not an emptyDir (PVCs, hostPaths).
    volumes: dict[str, Path] = field(default_factory=dict)
    name: str = "pod-0"
    #: Images by reference, when containers of the pod use other images than ``image``.
    images: dict[str, Image] = field(default_factory=dict)
    #: PVCs are on storage that supports fsGroup: given to the pod's ``fsGroup`` as they are mounted.
    fs_group_claims: bool = False
    #: The Services of the pod's namespace (as rendered beside it): their link variables are in each container's
    #: environment unless the spec sets ``enableServiceLinks: false`` (:func:`service_links`).
    services: list[dict[str, Any]] = field(default_factory=list)
    #: The node's allocatable: what the downward API gives for a limit a container does not set (:func:`resource_field`).
    allocatable: dict[str, str] = field(default_factory=node_allocatable)
    #: False: the kubelet's ``--cpu-cfs-quota=false``: a CPU limit is no CFS quota in the container's cgroup (it is
    #: not enforced, nor seen there), though the downward API still gives it.
    cpu_cfs_quota: bool = True
    _dir: Path | None = None
    _pause: subprocess.Popen | None = None
    _sources: dict[str, Path] = field(default_factory=dict)
    _running: list[Running] = field(default_factory=list)
    _tmpfs: list[Path] = field(default_factory=list)

    def __enter__(self) -> Pod:
        if os.geteuid() != 0:
            raise RuntimeError("tests/kubelet.py runs pods as a kubelet does and needs root (namespaces, mounts, "
                               "chroot); CI and .ci/run run as root")
        cgroup_parents()  # no pod where its containers' limits cannot be set (CgroupError says why)
        self._dir = Path(tempfile.mkdtemp(prefix=f"kubelet-{self.name}-"))
        os.chmod(self._dir, 0o755)
        self._pause = subprocess.Popen(["unshare", "--net", "--", "sleep", "infinity"], start_new_session=True)
        host_ns = os.readlink("/proc/self/ns/net")
        deadline = time.monotonic() + 30
        while os.readlink(f"/proc/{self._pause.pid}/ns/net") == host_ns:  # unshare(2) not done yet
            if self._pause.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the pod's network namespace was not created")
            time.sleep(0.02)
        subprocess.run(["nsenter", f"--net={self.netns}", "--", "ip", "link", "set", "lo", "up"], check=True)
        fs_group = self.pod_security.get("fsGroup")
        for volume in self.spec.get("volumes", []):
            name = volume["name"]
            if "emptyDir" in volume:
                path = self._dir / "empty-dirs" / name
                path.mkdir(parents=True)
                limit = volume["emptyDir"].get("sizeLimit")
                if limit is not None:
                    _mount("-t", "tmpfs", "-o", f"size={_bytes(limit)}", "tmpfs", str(path))
                    self._tmpfs.append(path)
                if fs_group is not None:
                    os.chown(path, 0, fs_group)
                os.chmod(path, 0o777 | (0o2000 if fs_group is not None else 0))
                self._sources[name] = path
            elif name in self.volumes:
                self._sources[name] = self.volumes[name]
                if self.fs_group_claims and fs_group is not None and "persistentVolumeClaim" in volume:
                    set_volume_ownership(self.volumes[name], int(fs_group))
            else:
                raise ValueError(f"volume {name!r} ({sorted(volume)}) needs a host directory in Pod.volumes")
        return self

    def __exit__(self, *exc: object) -> None:
        for running in self._running:
            self.stop(running, grace=0)
            running.state()  # read before its cgroup goes
            running.cgroup.remove()
        if self._pause is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._pause.pid, signal.SIGKILL)
            self._pause.wait()
        for path in self._tmpfs:
            subprocess.run(["umount", "--lazy", str(path)], check=False)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    @property
    def netns(self) -> str:
        assert self._pause is not None, "the pod is not started"
        return f"/proc/{self._pause.pid}/ns/net"

    @property
    def pod_security(self) -> dict[str, Any]:
        return self.spec.get("securityContext") or {}

    def volume_dir(self, name: str) -> Path:
        """The host directory behind the pod's volume ``name`` (an emptyDir's lives as long as the pod)."""
        return self._sources[name]

    def container(self, name: str) -> dict[str, Any]:
        return next(c for c in self.spec.get("initContainers", []) + self.spec["containers"] if c["name"] == name)

    # ---- processes ----
    def plan(self, container: dict[str, Any]) -> dict[str, Any]:
        """How the launcher sets up one container (argv, env, identity, mounts)."""
        image = self.images.get(container.get("image", ""), self.image)
        sc = {**{k: v for k, v in self.pod_security.items() if k in ("runAsUser", "runAsGroup")},
              **(container.get("securityContext") or {})}
        uid = int(sc.get("runAsUser", 0))
        gid = int(sc.get("runAsGroup", 0))
        if sc.get("runAsNonRoot") and uid == 0:
            raise ValueError(f"{container['name']}: runAsNonRoot with user 0: the kubelet refuses to start it")
        read_only = bool(sc.get("readOnlyRootFilesystem"))
        if image.rootfs is not None and not read_only:
            raise ValueError(f"{container['name']}: a root that is not read-only needs a copy of the image's filesystem of "
                             f"its own (a runtime's overlay), which this kubelet does not make: {image.rootfs} is shared by "
                             "every pod that runs the image")
        groups = [gid] + ([int(self.pod_security["fsGroup"])] if "fsGroup" in self.pod_security else [])
        caps = sc.get("capabilities") or {}
        kept = set() if "ALL" in caps.get("drop", []) else set(CAPABILITIES.values())
        kept |= {CAPABILITIES[c] for c in caps.get("add", [])}
        env = {**image.env, "HOSTNAME": self.name,
               **environment(self.spec, container, self.services, self.secrets, self.allocatable)}
        argv = list(container.get("command") or image.entrypoint) + list(container.get("args", []))
        mounts = [{"source": str(self._sources[m["name"]]), "target": m["mountPath"], "readOnly": bool(m.get("readOnly"))}
                  for m in container.get("volumeMounts", [])]
        hidden = [path for path in image.host_paths for m in mounts if Path(path).is_relative_to(m["target"])]
        assert not hidden, (f"the pod mounts a volume over {hidden}, which this checkout-as-an-image is made of (a "
                            "checkout under a pod's mount path, such as /tmp): run the tests from a clone elsewhere")
        assert self._dir is not None
        root = self._dir / "roots" / container["name"]
        root.mkdir(parents=True, exist_ok=True)
        return {
            "root": str(root), "rootfs": str(image.rootfs) if image.rootfs else None, "host_paths": list(image.host_paths),
            "mounts": mounts, "readOnlyRootFilesystem": read_only,
            "workdir": container.get("workingDir") or image.workdir,
            "uid": uid, "gid": gid, "groups": groups, "capabilities": sorted(kept),
            "noNewPrivs": sc.get("allowPrivilegeEscalation") is False,
            "argv": argv, "env": env,
        }

    def _popen(self, container: dict[str, Any], logfile: Path, cgroup: Cgroup) -> subprocess.Popen:
        plan_file = logfile.with_suffix(".plan.json")
        plan_file.write_text(json.dumps({**self.plan(container), "cgroups": {k: str(v) for k, v in cgroup.dirs.items()}}))
        cmd = ["nsenter", f"--net={self.netns}", "--", "unshare", "--mount", "--propagation", "private", "--",
               sys.executable, "-m", "tests.kubelet", str(plan_file)]
        with logfile.open("wb") as out:
            return subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})

    def run_init(self, name: str, timeout: float = 600) -> Exited:
        """Run one init container to its end, as the kubelet does before the next one."""
        assert self._dir is not None
        logfile = self._dir / f"{name}.log"
        container = self.container(name)
        cgroup = Cgroup.make(self._dir.name, container, self.cpu_cfs_quota)
        try:
            proc = self._popen(container, logfile, cgroup)
            try:
                code = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise
            return Exited(name, code, logfile.read_text(errors="replace"), termination(code, cgroup)["reason"])
        finally:
            cgroup.remove()

    def init_containers(self) -> list[str]:
        return [c["name"] for c in self.spec.get("initContainers", [])]

    def start(self, name: str | None = None) -> Running:
        """Start the (first) main container."""
        assert self._dir is not None
        container = self.container(name) if name else self.spec["containers"][0]
        logfile = self._dir / f"{container['name']}.log"
        cgroup = Cgroup.make(self._dir.name, container, self.cpu_cfs_quota)
        try:
            process = self._popen(container, logfile, cgroup)
        except BaseException:
            cgroup.remove()
            raise
        running = Running(container["name"], process, logfile, cgroup)
        self._running.append(running)
        return running

    def terminate(self, running: Running) -> tuple[int, float]:
        """Delete the pod as a kubelet does: the preStop hook (an ``httpGet``) to its end, then SIGTERM,
        then SIGKILL when ``terminationGracePeriodSeconds`` (counted from the hook's start) runs out.
        The exit status and the seconds it all took."""
        container = self.container(running.name)
        grace = float(self.spec.get("terminationGracePeriodSeconds", 30))
        start = time.monotonic()
        hook = ((container.get("lifecycle") or {}).get("preStop") or {}).get("httpGet")
        if hook is not None:
            status, body = self.http_get(self.port(container, hook["port"]), hook.get("path", "/"), timeout=grace)
            assert 200 <= status < 400, f"preStop hook: HTTP {status} {body}"
        code = self.stop(running, grace=max(0.0, grace - (time.monotonic() - start)))
        return code, time.monotonic() - start

    def stop(self, running: Running, grace: float = 30, signum: int = signal.SIGTERM) -> int:
        """SIGTERM (the container's process only, as a kubelet signals PID 1), then SIGKILL after ``grace``."""
        proc = running.process
        if proc.poll() is None:
            self.signal(running, signum)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        return proc.returncode

    def signal(self, running: Running, signum: int) -> None:
        """Send a signal to the container's process: nsenter, unshare (neither forks without --fork)
        and the launcher exec one into the other, so the process started is the container's own."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(running.process.pid, signum)

    # ---- the pod's network ----
    def in_network(self, fn: Callable[[], T]) -> T:
        """``fn()`` on a thread that joined the pod's network namespace (sockets it makes live there)."""
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                fd = os.open(self.netns, os.O_RDONLY)
                try:
                    if _libc.setns(fd, CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), "setns")
                finally:
                    os.close(fd)
                box["value"] = fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                box["error"] = exc

        thread = threading.Thread(target=run, name=f"{self.name}-net")
        thread.start()
        thread.join()
        if "error" in box:
            raise box["error"]
        return box["value"]

    def serve_in_network(self, start: Callable[[], Callable[[], None]]) -> threading.Thread:
        """Run a server on a daemon thread inside the pod's network: ``start()`` binds and returns its serve loop."""
        ready = threading.Event()
        box: dict[str, Any] = {}

        def run() -> None:
            fd = os.open(self.netns, os.O_RDONLY)
            try:
                _libc.setns(fd, CLONE_NEWNET)
            finally:
                os.close(fd)
            try:
                loop = start()
            except BaseException as exc:  # noqa: BLE001
                box["error"] = exc
                ready.set()
                return
            ready.set()
            loop()

        thread = threading.Thread(target=run, name=f"{self.name}-server", daemon=True)
        thread.start()
        ready.wait(30)
        if "error" in box:
            raise box["error"]
        return thread

    def http_get(self, port: int, path: str, timeout: float = 3.0,
                 headers: dict[str, str] | None = None, host: str = "127.0.0.1") -> tuple[int, str]:
        """A GET as a kubelet's probe sends it: (status, body); status 0 when nothing answered."""
        def get() -> tuple[int, str]:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
            try:
                conn.request("GET", path, headers={"User-Agent": "kube-probe/1.33", "Accept": "*/*", **(headers or {})})
                resp = conn.getresponse()
                return resp.status, resp.read().decode(errors="replace")
            except OSError as exc:
                return 0, repr(exc)
            finally:
                conn.close()
        return self.in_network(get)

    def port(self, container: dict[str, Any], port: int | str) -> int:
        if isinstance(port, int):
            return port
        return next(p["containerPort"] for p in container.get("ports", []) if p.get("name") == port)

    def probe(self, container: dict[str, Any], kind: str) -> tuple[bool, int, str]:
        """One run of the container's ``startupProbe``/``readinessProbe``/``livenessProbe``: (passed, status, body).
        A kubelet probes the pod's IP, of either family (IPv6 alone on an IPv6-only cluster): the liveness probe
        goes to ``::1``, the others to ``127.0.0.1``."""
        spec = container[kind]
        get = spec["httpGet"]
        assert set(get) <= {"path", "port", "scheme", "httpHeaders"}, get
        headers = {h["name"]: h["value"] for h in get.get("httpHeaders", [])}
        status, body = self.http_get(self.port(container, get["port"]), get.get("path", "/"),
                                     float(spec.get("timeoutSeconds", 1)), headers,
                                     "::1" if kind == "livenessProbe" else "127.0.0.1")
        return 200 <= status < 400, status, body

    def wait_probe(self, running: Running, kind: str, budget: float | None = None) -> float:
        """Probe until it passes; seconds it took. A kubelet probes every ``periodSeconds`` from
        ``initialDelaySeconds`` on and gives up at the ``failureThreshold``-th failure (startup and liveness: it
        restarts the container). This probes every :data:`PROBE_POLL_SECONDS` from the start, so that a test goes on
        as soon as the probe passes, not at the kubelet's next period, and fails where the kubelet's last probe would
        have: not passed by ``initialDelaySeconds + (failureThreshold - 1) * periodSeconds``; readiness, which no
        kubelet gives up on, after ``budget`` seconds; either when the process ends."""
        container = self.container(running.name)
        spec = container[kind]
        period = float(spec.get("periodSeconds", 10))
        start = time.monotonic()
        limit = float(spec.get("failureThreshold", 3)) if kind != "readinessProbe" else float("inf")
        last_probe = start + float(spec.get("initialDelaySeconds", 0)) + (limit - 1) * period
        deadline = min(last_probe, start + budget if budget is not None else float("inf"))
        probes, last = 0, (False, 0, "")
        while True:
            if running.process.poll() is not None:
                raise AssertionError(f"{running.name} exited with {running.process.returncode} "
                                     f"({running.state()['terminated']['reason']}) before its {kind} "
                                     f"passed; last: {last[1:]}\n{running.log()[-4000:]}")
            sent = time.monotonic()
            last = self.probe(container, kind)
            probes += 1
            if last[0]:
                return time.monotonic() - start
            if sent >= deadline:
                raise AssertionError(f"{kind} of {running.name} failed for {sent - start:.1f} s, {probes} probes "
                                     f"(last: HTTP {last[1]} {last[2][:300]})\n{running.log()[-4000:]}")
            time.sleep(PROBE_POLL_SECONDS)


@contextlib.contextmanager
def file_server(pod: Pod, files: dict[str, Path], *, port: int = 0, context: ssl.SSLContext | None = None) -> Iterator[str]:
    """An HTTP server inside the pod's network serving ``files`` by name, on ``port`` (0: any); HTTPS with the
    certificate of a server ``context``. Yields its base URL."""
    import http.server

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = files.get(self.path.lstrip("/"))
            if path is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(path.stat().st_size))
            self.end_headers()
            with path.open("rb") as fh:
                shutil.copyfileobj(fh, self.wfile)

        def log_message(self, *args: object) -> None:
            pass

    box: dict[str, Any] = {}

    def start() -> Callable[[], None]:
        box["server"] = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        if context is not None:
            box["server"].socket = context.wrap_socket(box["server"].socket, server_side=True)
        return box["server"].serve_forever

    pod.serve_in_network(start)
    try:
        yield f"{'https' if context else 'http'}://127.0.0.1:{box['server'].server_address[1]}"
    finally:
        box["server"].shutdown()
        box["server"].server_close()


if __name__ == "__main__":
    _launch(json.loads(Path(sys.argv[1]).read_text()))
