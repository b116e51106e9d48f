"""The recognizer as a user runs it: ``python -m speech_recognizer`` in a process of its own, polled
by probes as a kubelet polls it, then stopped with SIGTERM as Kubernetes stops it.

Each process gets a private ``TMPDIR``, so that what other tests leave in the system's temporary
folder does not count: before, each start left a ``vosk-*`` folder there (the model's view with
dither off), and every ``/ready`` poll was an INFO line in the log.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from speech_recognizer import contract as c
from speech_recognizer.logs import PROBE_ROUTES

from ..support import free_port

PROBES = (c.ROUTE_READY, c.ROUTE_STATUS, c.ROUTE_CONTAINER_LIVENESS, c.ROUTE_CONTAINER_READINESS, c.ROUTE_METRICS,
          c.ROUTE_SESSIONS)


@dataclass
class Run:
    """One recognizer process and what it left."""

    process: subprocess.Popen[bytes]
    port: int
    tmpdir: Path
    log: Path

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def http6(self) -> str:
        return f"http://[::1]:{self.port}"

    def output(self) -> str:
        """What it printed, stdout and stderr."""
        return self.log.read_text(errors="replace")

    def temporary(self) -> list[str]:
        return sorted(p.name for p in self.tmpdir.iterdir())

    def stop(self) -> int:
        """SIGTERM, as Kubernetes stops a pod, and the exit status."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=120)


def launch(tmp: Path, *args: str, host: str | None = "127.0.0.1") -> Run:
    """``python -m speech_recognizer`` on a free port of ``host`` (None: no ``Host``, as the emitted pod runs it),
    with a private TMPDIR, stdout and stderr to a file."""
    tmpdir = tmp / "tmp"
    tmpdir.mkdir()
    port = free_port()
    log = tmp / "output.log"
    env = {k: v for k, v in os.environ.items() if k.split("_")[0].lower() not in {"eula", "apikey", "billing", "locale", "logging"}}
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "speech_recognizer", "Eula=accept", *([f"Host={host}"] if host else []), f"Port={port}",
             f"Mounts:Output={tmp / 'output'}", f"Mounts:Models={tmp / 'models'}", *args],
            env={**env, "TMPDIR": str(tmpdir)}, stdout=out, stderr=subprocess.STDOUT,  # uvicorn's access log is on stdout
        )
    return Run(process, port, tmpdir, log)


@contextlib.contextmanager
def launched(tmp: Path, *args: str, host: str | None = "127.0.0.1") -> Iterator[Run]:
    """:func:`launch`, killed at the end if the test left it running."""
    run = launch(tmp, *args, host=host)
    try:
        yield run
    finally:
        if run.process.poll() is None:
            run.process.kill()
            run.process.wait()


def get(run: Run, path: str, base: str | None = None) -> httpx.Response:
    return httpx.get(f"{base or run.http}{path}", timeout=30)


def status_at(base: str, path: str) -> int:
    """The status of ``GET path`` at ``base``; 0 when nothing answered there."""
    try:
        return httpx.get(f"{base}{path}", timeout=30).status_code
    except httpx.TransportError:
        return 0


def wait_ready(run: Run, deadline_s: float = 240) -> int:
    """Polls ``/ready`` every 0.2 s (as a kubelet does, faster) until 200; the number of polls."""
    deadline = time.monotonic() + deadline_s
    polls = 0
    while True:
        assert run.process.poll() is None, f"the recognizer exited: {run.output()}"
        assert time.monotonic() < deadline, f"not ready in {deadline_s} s: {run.output()}"
        try:
            polls += 1
            if get(run, c.ROUTE_READY).status_code == 200:
                return polls
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(0.2)


def access_lines(output: str, path: str) -> list[str]:
    """uvicorn's access lines for ``GET path`` (``... - "GET /ready HTTP/1.1" 200``)."""
    return [line for line in output.splitlines() if f'"GET {path} HTTP/' in line or f'"GET {path}?' in line]


def test_the_probe_routes_are_the_documented_ones() -> None:
    assert PROBE_ROUTES == set(PROBES)


@dataclass(frozen=True)
class Polled:
    """A start with no ``Host`` (as the emitted pod runs it) polled by probes over IPv4 until ready, one request of
    each probe over IPv4 and over IPv6, one other request over each, then SIGTERM."""

    output: str
    status: int
    polls: int
    temporary_when_ready: list[str]
    temporary_after: list[str]
    port: int
    #: Each probe's status over IPv4 and over IPv6 (``::1``; 0: nothing answered), and the other two requests'.
    answered: dict[str, tuple[int, int]]


@pytest.fixture(scope="module")
def polled(tmp_path_factory: pytest.TempPathFactory) -> Polled:
    with launched(tmp_path_factory.mktemp("polled"), "Warmup:Count=1", "Warmup:Seconds=2", host=None) as run:
        polls = wait_ready(run)
        when_ready = run.temporary()
        answered = {path: (status_at(run.http, path), status_at(run.http6, path)) for path in PROBES}
        answered[c.ROUTE_HOME] = (status_at(run.http, c.ROUTE_HOME), 0)
        answered[c.ROUTE_OPENAPI] = (0, status_at(run.http6, c.ROUTE_OPENAPI))
        status = run.stop()
        return Polled(run.output(), status, polls, when_ready, run.temporary(), run.port, answered)


def test_with_no_host_it_answers_on_ipv4_and_ipv6_and_logs_ipv4_clients_as_ipv4(polled: Polled) -> None:
    """As the operator's pods run it (no ``Host``): every probe answers over 127.0.0.1 and over ::1 (a kubelet on an
    IPv6-only cluster probes the pod's IPv6 address; on 0.0.0.0, the old default, nothing answered there); the log
    says where it listens, and an IPv4 client's access line names it as IPv4, not ``::ffff:127.0.0.1``."""
    assert polled.answered == {**{path: (200, 200) for path in PROBES},
                               c.ROUTE_HOME: (200, 0), c.ROUTE_OPENAPI: (0, 200)}, polled.output
    assert f"on [::]:{polled.port} (IPv6 and IPv4)" in polled.output, polled.output
    (home,) = access_lines(polled.output, c.ROUTE_HOME)
    (openapi,) = access_lines(polled.output, c.ROUTE_OPENAPI)
    assert " 127.0.0.1:" in home and " ::1:" in openapi and "::ffff:" not in polled.output, polled.output


def test_probes_leave_no_access_line_at_the_default_level(polled: Polled) -> None:
    """Every other request keeps its line; the turn to ready is logged once."""
    output = polled.output
    assert polled.polls + len(PROBES) > 5
    for path in PROBES:
        assert access_lines(output, path) == [], f"{path} is logged at INFO:\n{output}"
    assert len(access_lines(output, c.ROUTE_HOME)) == 1, f"other requests keep their access line:\n{output}"
    assert len(access_lines(output, c.ROUTE_OPENAPI)) == 1, output
    assert output.count("ready to recognize ko-KR") == 1, f"the turn to ready is logged once:\n{output}"
    assert "Traceback" not in output and "ERROR" not in output, output


def test_no_temporary_folder_once_loaded_nor_after_sigterm(polled: Polled) -> None:
    assert polled.status in (0, -signal.SIGTERM), polled.output
    assert polled.temporary_when_ready == [], "the model's view with dither off outlives the load"
    assert polled.temporary_after == [], "a temporary folder is left after SIGTERM"


def test_sigterm_while_the_model_loads_leaves_no_temporary_folder(tmp_path: Path) -> None:
    """The view exists while Vosk reads the model; a SIGTERM then lets the load end and removes it.
    At Debug the probes' access lines are there, at DEBUG."""
    with launched(tmp_path, "Warmup:Count=0", "Logging:Console:LogLevel:Default=Debug") as run:
        deadline = time.monotonic() + 120
        while not run.temporary():
            assert run.process.poll() is None, run.output()
            assert time.monotonic() < deadline, f"no view of the model appeared in TMPDIR: {run.output()}"
            time.sleep(0.01)
        while True:  # the server answers while the model loads
            try:
                assert get(run, c.ROUTE_CONTAINER_LIVENESS).status_code == 200
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, run.output()
                time.sleep(0.02)
        loading = run.temporary()
        assert loading and all(name.startswith("vosk-") for name in loading), "the load ended before the signal: nothing tested"
        status = run.stop()
        output = run.output()
    assert status in (0, -signal.SIGTERM), output
    assert run.temporary() == [], f"left in TMPDIR: {run.temporary()}"
    assert "ready to recognize" not in output, "the signal came after the load"
    lines = access_lines(output, c.ROUTE_CONTAINER_LIVENESS)
    assert lines and all("DEBUG" in line for line in lines), output
