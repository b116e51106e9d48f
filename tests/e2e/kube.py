"""The cluster, through ``kubectl`` and ``helm`` (one command per operation, printed as it runs).

Every command names the kubeconfig (and context) explicitly: the suite never reads or changes
the user's current context. The suite's logic talks to this class only, so its unit tests can
give it an in-memory cluster instead (a real cluster cannot run on the test machine).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.support import free_port

Manifest = dict[str, Any]


class CommandFailed(RuntimeError):
    """A command exited non-zero; the message holds the command and the end of its output."""


def run(argv: list[str], *, input: str | None = None, timeout: float = 600, log: Callable[[str], None] = print) -> str:
    """Run a command in a process group of its own (so a Ctrl-C reaches the suite, which decides,
    rather than killing a clean-up command half-way); -> its stdout, or CommandFailed."""
    log("$ " + " ".join(argv))
    try:
        proc = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout, process_group=0)
    except subprocess.TimeoutExpired:
        raise CommandFailed(f"`{' '.join(argv)}` took over {timeout:.0f} s") from None
    except FileNotFoundError:
        raise CommandFailed(f"`{argv[0]}` is not installed") from None
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise CommandFailed(f"`{' '.join(argv)}` exited {proc.returncode}: {tail}")
    return proc.stdout


class Kube:
    """kubectl and helm against one cluster."""

    def __init__(self, kubectl: str, helm: str, kubeconfig: Path, context: str | None = None,
                 log: Callable[[str], None] = print) -> None:
        self._kubectl, self._helm, self.kubeconfig, self.context, self.log = kubectl, helm, kubeconfig, context, log

    def kubectl(self, *args: str, input: str | None = None, timeout: float = 600) -> str:
        ctx = ["--context", self.context] if self.context else []
        return run([self._kubectl, "--kubeconfig", str(self.kubeconfig), *ctx, *args], input=input, timeout=timeout, log=self.log)

    def helm(self, *args: str, timeout: float = 600) -> str:
        ctx = ["--kube-context", self.context] if self.context else []
        return run([self._helm, "--kubeconfig", str(self.kubeconfig), *ctx, *args], timeout=timeout, log=self.log)

    # ---- reading ---------------------------------------------------------------------------
    def server_version(self) -> str:
        return json.loads(self.kubectl("version", "-o", "json", timeout=60))["serverVersion"]["gitVersion"]

    def get(self, kind: str, namespace: str | None = None, selector: str | None = None) -> list[Manifest]:
        args = ["get", kind, "-o", "json"]
        args += ["-n", namespace] if namespace else []
        args += ["-l", selector] if selector else []
        return json.loads(self.kubectl(*args, timeout=60))["items"]

    def get_one(self, kind: str, name: str, namespace: str | None = None) -> Manifest | None:
        args = ["get", kind, name, "--ignore-not-found", "-o", "json"] + (["-n", namespace] if namespace else [])
        out = self.kubectl(*args, timeout=60).strip()
        return json.loads(out) if out else None

    def logs(self, namespace: str, pod: str, *, previous: bool = False, tail: int = 40) -> str:
        args = ["logs", "-n", namespace, pod, "--all-containers", f"--tail={tail}"] + (["--previous"] if previous else [])
        try:
            return self.kubectl(*args, timeout=60)
        except CommandFailed as exc:
            return f"(no logs: {exc})"

    # ---- writing ---------------------------------------------------------------------------
    def create(self, manifest: Manifest) -> None:
        self.kubectl("create", "-f", "-", input=json.dumps(manifest), timeout=60)

    def apply(self, manifest: Manifest) -> None:
        self.kubectl("apply", "--server-side", "--field-manager=speech-e2e", "-f", "-", input=json.dumps(manifest), timeout=60)

    def delete(self, kind: str, names: list[str], namespace: str | None = None, *, timeout: float = 300) -> None:
        """Delete and wait until gone; absent objects are fine."""
        args = ["delete", kind, *names, "--ignore-not-found", "--wait=true", f"--timeout={int(timeout)}s"]
        self.kubectl(*args, *(["-n", namespace] if namespace else []), timeout=timeout + 30)

    def delete_now(self, kind: str, name: str, namespace: str) -> None:
        """Delete without waiting (as a node drain or a scale-down does to a pod)."""
        self.kubectl("delete", kind, name, "-n", namespace, "--wait=false", timeout=60)

    def patch(self, kind: str, name: str, namespace: str, patch: Manifest) -> None:
        self.kubectl("patch", kind, name, "-n", namespace, "--type=merge", "-p", json.dumps(patch), timeout=60)

    def scale(self, kind: str, name: str, namespace: str, replicas: int) -> None:
        self.kubectl("scale", kind, name, "-n", namespace, f"--replicas={replicas}", timeout=60)

    # ---- helm ------------------------------------------------------------------------------
    def helm_install(self, release: str, namespace: str, chart: Path, values: Manifest) -> None:
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="e2e-values-") as fh:
            yaml.safe_dump(values, fh)
            fh.flush()
            self.helm("install", release, str(chart), "--namespace", namespace, "--values", fh.name, "--timeout", "5m")

    def helm_uninstall(self, release: str, namespace: str) -> None:
        self.helm("uninstall", release, "--namespace", namespace, "--ignore-not-found", "--wait", "--timeout", "5m",
                  timeout=360)

    # ---- traffic ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def port_forward(self, namespace: str, target: str, remote: int) -> Iterator[int]:
        """``kubectl port-forward`` to ``target`` (service/NAME or pod/NAME) on a free local port."""
        port = free_port()
        ctx = ["--context", self.context] if self.context else []
        argv = [self._kubectl, "--kubeconfig", str(self.kubeconfig), *ctx, "-n", namespace, "port-forward",
                "--address", "127.0.0.1", target, f"{port}:{remote}"]
        self.log("$ " + " ".join(argv))
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, process_group=0)
        lines: list[str] = []
        forwarding = threading.Event()

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line.rstrip())
                if re.search(rf"Forwarding from 127\.0\.0\.1:{port}\b", line):
                    forwarding.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            deadline = time.monotonic() + 30
            while not forwarding.wait(0.2):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise CommandFailed(f"port-forward to {target} did not start: {' / '.join(lines[-5:])}")
            yield port
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def kind_kubeconfig(kind: str, cluster: str, folder: Path) -> Path:
    """The kind cluster's kubeconfig in a file of its own (the user's kubeconfig is not touched)."""
    path = folder / "kubeconfig"
    path.write_text(run([kind, "get", "kubeconfig", "--name", cluster], timeout=60))
    os.chmod(path, 0o600)
    return path
