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
#: Seconds of clock in which a starting server that uses no CPU at all is taken for stuck (a deadlock, a wait for what
#: never comes): a runnable process gets a CPU within far less however loaded the machine, the scheduler sharing it out.
STUCK_SECONDS = 30.0
#: How many times its ``ready_timeout`` a starting server may take by the clock at most, however it goes on.
READY_CLOCK_CAP = 5


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
    """The server with ``args`` (settings, ``Key=value``), once its ``/ready`` answers 200; its log in its workdir.

    ``ready_timeout`` bounds its start's work, not how long a machine shared by many stretches it by the clock: the
    server fails to start once it (and its children) used that many seconds of CPU, used none for
    :data:`STUCK_SECONDS`, or took :data:`READY_CLOCK_CAP` times it by the clock."""
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
        started = progressed = time.monotonic()
        used = 0.0
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{srv.http}/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            with contextlib.suppress(psutil.Error):  # gone meanwhile: poll() says so next
                if (now_used := cpu_seconds(proc.pid, children=True)) > used:
                    used, progressed = now_used, time.monotonic()
            now = time.monotonic()
            if used > ready_timeout or now - progressed > STUCK_SECONDS or now - started > READY_CLOCK_CAP * ready_timeout:
                raise RuntimeError(f"the server did not become ready: {now - started:.1f} s, {used:.1f} s of CPU used "
                                   f"(bound {ready_timeout:g} s), none for the last {now - progressed:.1f} s: "
                                   f"{log.read_text()[-2000:]}")
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
