"""A recognizer server in a subprocess (``python -m speech_recognizer`` on a loopback port), and the CPU
a process has used: so that a measured server's RSS and CPU are its own, not shared with its clients."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from .loopback import Loopback, free_port

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Server(Loopback):
    """``python -m speech_recognizer`` on a loopback port, in a subprocess."""

    port: int
    proc: subprocess.Popen
    workdir: Path
    log: Path = field(default=Path("/dev/null"))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_mib(self) -> float:
        return psutil.Process(self.pid).memory_info().rss / 2**20


@contextlib.contextmanager
def server(*args: str, ready_timeout: float = 120.0, port: int | None = None) -> Iterator[Server]:
    """The server with ``args`` (settings, ``Key=value``), once its ``/ready`` answers 200; its log in its workdir."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-server-"))
    port = port or free_port()
    log = workdir / "server.log"
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'recognizer'}:{os.environ.get('PYTHONPATH', '')}"}
    cmd = [sys.executable, "-m", "speech_recognizer", "Eula=accept", f"Port={port}",
           f"Mounts:Output={workdir / 'output'}", f"Mounts:Models={workdir / 'models'}",
           "Host=127.0.0.1", "Logging:Console:LogLevel:Default=Warning", *args]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    srv = Server(port, proc, workdir, log)
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{srv.http}/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not become ready")
            time.sleep(0.2)
        yield srv
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cpu_seconds(pid: int | None = None, *, children: bool = False) -> float:
    """CPU time (user + system, all threads) used so far by ``pid``, or by this process; with ``children``, that of
    its children it has waited for too (the FFmpeg decoder's processes a server collects)."""
    if pid is None:
        t = os.times()
        return t.user + t.system + (t.children_user + t.children_system if children else 0)
    c = psutil.Process(pid).cpu_times()
    return c.user + c.system + (c.children_user + c.children_system if children else 0)
