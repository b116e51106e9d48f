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
  kubelet makes them), PVCs and hostPaths are host directories the test provides, given
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
  ``env`` (Secret keys filled in from the Secrets given), which wins over them, nothing
  else (no ``HOME``, no ``USER``, no TTY: stdin is /dev/null).

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
import os
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


def environment(spec: dict[str, Any], container: dict[str, Any], services: list[dict[str, Any]],
                secrets: dict[str, dict[str, str]] | None = None) -> dict[str, str]:
    """What the kubelet puts in a container's environment, over its image's: the service links (:func:`service_links`) of
    the master Service, and of ``services`` (those of the pod's namespace) unless the pod ``spec`` sets
    ``enableServiceLinks: false``; then the container's ``env``, which wins over them (``secretKeyRef`` values from
    ``secrets``: Secret name -> key -> value)."""
    links = services if spec.get("enableServiceLinks", True) is not False else []
    env = service_links([*links, MASTER_SERVICE])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
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


# ---- the pod ----------------------------------------------------------------------
@dataclass
class Exited:
    """An init container that ran to its end."""

    name: str
    returncode: int
    log: str


@dataclass
class Running:
    """The pod's main container while it runs."""

    name: str
    process: subprocess.Popen
    logfile: Path

    def log(self) -> str:
        return self.logfile.read_text(errors="replace") if self.logfile.exists() else ""


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
    _dir: Path | None = None
    _pause: subprocess.Popen | None = None
    _sources: dict[str, Path] = field(default_factory=dict)
    _running: list[Running] = field(default_factory=list)

    def __enter__(self) -> Pod:
        if os.geteuid() != 0:
            raise RuntimeError("tests/kubelet.py runs pods as a kubelet does and needs root (namespaces, mounts, "
                               "chroot); CI and .ci/run run as root")
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
        if self._pause is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._pause.pid, signal.SIGKILL)
            self._pause.wait()
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
        env = {**image.env, "HOSTNAME": self.name, **environment(self.spec, container, self.services, self.secrets)}
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

    def _popen(self, container: dict[str, Any], logfile: Path) -> subprocess.Popen:
        plan_file = logfile.with_suffix(".plan.json")
        plan_file.write_text(json.dumps(self.plan(container)))
        cmd = ["nsenter", f"--net={self.netns}", "--", "unshare", "--mount", "--propagation", "private", "--",
               sys.executable, "-m", "tests.kubelet", str(plan_file)]
        with logfile.open("wb") as out:
            return subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})

    def run_init(self, name: str, timeout: float = 600) -> Exited:
        """Run one init container to its end, as the kubelet does before the next one."""
        assert self._dir is not None
        logfile = self._dir / f"{name}.log"
        proc = self._popen(self.container(name), logfile)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        return Exited(name, code, logfile.read_text(errors="replace"))

    def init_containers(self) -> list[str]:
        return [c["name"] for c in self.spec.get("initContainers", [])]

    def start(self, name: str | None = None) -> Running:
        """Start the (first) main container."""
        assert self._dir is not None
        container = self.container(name) if name else self.spec["containers"][0]
        logfile = self._dir / f"{container['name']}.log"
        running = Running(container["name"], self._popen(container, logfile), logfile)
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
        """Probe every ``periodSeconds`` until it passes; seconds it took. Fails when the process ends,
        or after ``failureThreshold`` failures (startup, the kubelet would restart it) or ``budget`` seconds."""
        container = self.container(running.name)
        spec = container[kind]
        period = float(spec.get("periodSeconds", 10))
        start = time.monotonic()
        time.sleep(float(spec.get("initialDelaySeconds", 0)))
        failures, last = 0, (False, 0, "")
        limit = float(spec.get("failureThreshold", 3)) if kind != "readinessProbe" else float("inf")
        while True:
            if running.process.poll() is not None:
                raise AssertionError(f"{running.name} exited with {running.process.returncode} before its {kind} "
                                     f"passed; last: {last[1:]}\n{running.log()[-4000:]}")
            last = self.probe(container, kind)
            if last[0]:
                return time.monotonic() - start
            failures += 1
            if failures >= limit or (budget is not None and time.monotonic() - start > budget):
                raise AssertionError(f"{kind} of {running.name} failed {failures} times (last: HTTP {last[1]} "
                                     f"{last[2][:300]})\n{running.log()[-4000:]}")
            time.sleep(period)


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
