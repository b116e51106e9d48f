"""The ``speech-operator`` command run as a user runs it: the console script in a process of its own,
the README's exact arguments, against kmock over HTTP (credentials from the kubeconfig in
``KUBECONFIG``)."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import kmock
import pytest
import yaml
from conftest import ENV, NAMESPACE, Operator, console_script, declare_peerings, deployment, kubeconfig_for

from speech_operator import api
from speech_operator.kube import USER_AGENT
from tests.support import Unstarved

if TYPE_CHECKING:
    from conftest import Cluster


#: Seconds within which the operator exits on SIGTERM when it has nothing under way to finish (a replica standing by, one
#: still starting): its cleanup (a standby's last keep-alive: its peering entry removed) and Python's exit, on a machine
#: shared by other tests.
STOP_SECONDS = 2.0


async def stopped(op: Operator) -> Unstarved:
    """SIGTERM to ``op``, as the kubelet stops it, and its exit awaited (20 s by the clock at most): the stretch in
    which this process (kmock, which its cleanup calls) and its children (the operator) did not wait for a CPU, read
    every 50 ms. On a machine shared by many a stop of a few tenths of a second of work took seconds of clock."""
    stopwatch = Unstarved()
    try:
        op.proc.send_signal(signal.SIGTERM)
        while op.proc.returncode is None:
            assert stopwatch.clock < 20, f"the operator did not exit within {stopwatch} of SIGTERM"
            await asyncio.sleep(0.05)
            stopwatch.read()
        stopwatch.read()
        return stopwatch
    finally:
        stopwatch.close()


def stt(name: str = "en-us") -> dict[str, Any]:
    return {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"locale": "en-US", "eula": "accept", "replicas": 1}}


@pytest.mark.parametrize("bound", ["cluster-wide", "by a Role"])
async def test_the_readme_command_creates_deployments(apiserver: Cluster, bound: str) -> None:
    """`speech-operator run --namespace speech`, verbatim, with no warning: whether its account may read the
    whole cluster or is bound by a Role in the namespace only (the chart's namespaced mode). It used to make kopf
    pause every watch until a KopfPeering named speech-operator existed, which nothing created: no Deployment.
    And by a Role it logged kopf's warnings that it may not list or watch namespaces and CRDs (the
    namespace it was given was only "assumed to exist"), which asked for nothing a user should do."""
    if bound == "by a Role":
        apiserver.emulator.namespaced_only.add("test-token")
    async with Operator("run", "--namespace", "speech") as op:
        await apiserver.api.create(apiserver.stt_url(), stt())
        dep = await apiserver.eventually(lambda: deployment(apiserver), timeout=30)
        assert dep["metadata"]["ownerReferences"][0]["name"] == "en-us"
    assert not [x for x in op.lines if re.search(r"WARNING|ERROR|Traceback", x)], "\n".join(op.lines)
    assert op.proc.returncode == 0, "\n".join(op.lines)


async def test_missing_peering_crd_is_a_warning_saying_what_to_do(apiserver: Cluster) -> None:
    async with Operator("run", "--namespace", "speech", "--peering", "speech-operator") as op:
        line = await op.line("WARNING")
    assert "watching is paused" in line and "peering CRDs" in line and "crds/kopf-peering.yaml" in line
    assert "without --peering" in line


async def test_missing_peering_object_is_a_warning_and_watching_resumes_once_it_exists(apiserver: Cluster) -> None:
    declare_peerings(apiserver)
    async with Operator("run", "--namespace", "speech", "--peering", "speech-operator") as op:
        line = await op.line("WARNING")
        assert "watching is paused in namespace 'speech'" in line and "KopfPeering 'speech-operator'" in line
        assert "kubectl apply" in line
        await apiserver.api.create(apiserver.stt_url(), stt())
        await asyncio.sleep(3)
        assert await deployment(apiserver) is None  # paused, as the warning says
        await apiserver.api.create(apiserver.url("kopf.dev/v1", "kopfpeerings"), {
            "apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "speech-operator", "namespace": NAMESPACE}})
        await apiserver.eventually(lambda: deployment(apiserver), timeout=30)


@pytest.mark.parametrize("crds", ["served", "not served"])
async def test_bound_by_a_role_a_missing_peering_is_the_same_warning(apiserver: Cluster, crds: str) -> None:
    """The chart's namespaced mode with peering: the operator's rules are a Role in each watched namespace. A
    KopfPeering missing there (or kopf's CRDs missing) is the same warning as when bound cluster-wide. It asked
    whether the CRDs are served by listing KopfPeerings of the whole cluster, which a Role does not grant: a 403,
    and the operator died at start with a traceback instead of saying what to do."""
    apiserver.emulator.namespaced_only.add("test-token")
    if crds == "served":
        declare_peerings(apiserver)
    async with Operator("run", "--namespace", "speech", "--peering", "speech-operator") as op:
        line = await op.line("WARNING")
        await asyncio.sleep(1)
        assert op.proc.returncode is None, "\n".join(op.lines)
    if crds == "served":
        assert "watching is paused in namespace 'speech'" in line and "KopfPeering 'speech-operator'" in line
    else:
        assert "watching is paused" in line and "peering CRDs" in line
    assert not [x for x in op.lines if re.search(r"ERROR|Traceback|kopfpeerings -> HTTP 403", x)], "\n".join(op.lines)


async def test_a_higher_ranked_peer_pauses_watching_with_a_warning_and_the_standby_stops_at_once(apiserver: Cluster) -> None:
    """Another live replica ranks higher: this one stands by, and says so at WARNING (kopf logs
    it at INFO only). Stopped by SIGTERM, as the kubelet stops it, it exits at once and quietly. It used to sleep on in
    kopf's peering worker until that peer's keep-alive would lapse, which kopf's exit did not wake: every stop of a
    standby replica took the operator's whole grace for in-flight handlers (HANDLER_GRACE_SECONDS, 10 s), then kopf's
    WARNING "Unprocessed streams left for [(kopfpeerings...)]" (speech_operator.kopf_exit)."""
    declare_peerings(apiserver)
    now = datetime.datetime.now(datetime.UTC).isoformat()
    await apiserver.api.create(apiserver.url("kopf.dev/v1", "kopfpeerings"), {
        "apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "speech-operator", "namespace": NAMESPACE},
        "status": {"other-replica": {"priority": 100, "lifetime": 60, "lastseen": now}}})
    async with Operator("run", "--namespace", "speech", "--peering", "speech-operator", "--priority", "1") as op:
        line = await op.line("WARNING")
        await apiserver.api.create(apiserver.stt_url(), stt())
        await asyncio.sleep(2)
        assert await deployment(apiserver) is None
        stopping = len(op.lines)
        took = await stopped(op)
    assert "watching is paused in namespace 'speech': other-replica under peering 'speech-operator' rank above" in line
    assert "takes over within 60 s" in line and "without --peering" in line
    assert op.proc.returncode == 0, "\n".join(op.lines)
    assert not [x for x in op.lines[stopping:] if re.search(r"WARNING|ERROR|Traceback", x)], "\n".join(op.lines)
    assert took.seconds < STOP_SECONDS, f"a standby replica took {took} to stop on SIGTERM"


async def stopped_on_a_slow_read(cluster: Cluster, route: str, agent: str, *args: str) -> tuple[Operator, Unstarved]:
    """``speech-operator ARGS`` sent SIGTERM, as the kubelet stops it, once it reads ``route`` (kmock's: "get /path")
    with a User-Agent beginning ``agent``, which kmock does not answer until then; its exit timed by :func:`stopped`."""
    asked, answer = asyncio.Event(), asyncio.Event()

    async def slow(request: kmock.Request) -> None:  # no answer: kmock's own (its fallback) once ``answer`` is set
        if request.headers.get("User-Agent", "").startswith(agent):
            asked.set()
            await answer.wait()
    cluster.emulator[route] << slow
    try:
        async with Operator(*args) as op:
            await asyncio.wait_for(asked.wait(), 20)
            took = await stopped(op)
    finally:
        answer.set()
    print(f"stop {took}, status {op.proc.returncode}")
    return op, took


async def test_a_stop_while_kopf_is_starting_is_at_once_and_quiet(apiserver: Cluster) -> None:
    """SIGTERM while kopf still looks up which resources the API server serves (a pod stopped just after it started: a
    rollout, a node drain, a quick scale-down), the API server slow to answer that lookup (here its read of apps/v1):
    the operator exits at once, status 0, with no ERROR. kopf's lookup left its requests running past the stop (kopf
    waits 5 s, fixed, for such tasks), which then failed on the closed session, each with an ERROR line "Request attempt
    #1/9 failed; will retry: GET .../apis/apps/v1 -> ClientConnectionError('Connector is closed.')" before kopf
    cancelled them (speech_operator.kopf_scanning)."""
    op, took = await stopped_on_a_slow_read(apiserver, "get /apis/apps/v1", "kopf/", "run", "--namespace", "speech")
    assert op.proc.returncode == 0, "\n".join(op.lines)
    assert took.seconds < STOP_SECONDS, f"the operator took {took} to stop on SIGTERM while kopf was starting"
    assert not [x for x in op.lines if re.search(r"WARNING|ERROR|Traceback", x)], "\n".join(op.lines)


async def test_a_stop_before_kopf_starts_is_at_once_and_quiet(apiserver: Cluster) -> None:
    """SIGTERM before kopf runs (a pod stopped just after it started), here while the operator checks its peering on an
    API server slow to answer: the operator exits at once, status 0, with no WARNING or ERROR, as kopf's stop does.
    Python's default ended it there (and through its imports, seconds on a loaded node): status 143, killed by the
    signal, its cleanup not run."""
    declare_peerings(apiserver)
    op, took = await stopped_on_a_slow_read(
        apiserver, f"get /apis/kopf.dev/v1/namespaces/{NAMESPACE}/kopfpeerings/speech-operator", USER_AGENT,
        "run", "--namespace", "speech", "--peering", "speech-operator")
    assert op.proc.returncode == 0, "\n".join(op.lines)
    assert took.seconds < STOP_SECONDS, f"the operator took {took} to stop on SIGTERM before kopf started"
    assert not [x for x in op.lines if re.search(r"WARNING|ERROR|Traceback", x)], "\n".join(op.lines)
    assert [x for x in op.lines if "Signal SIGTERM is received while starting" in x], "\n".join(op.lines)


def run_cli(*args: str, env: dict[str, str], python: str | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [python, "-m", "speech_operator", *args] if python else [console_script(), *args]
    return subprocess.run(cmd, env={"PATH": os.environ["PATH"], **ENV, **env}, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


def test_no_credentials_is_one_line_and_exit_status_1(tmp_path: Path) -> None:
    """No service account, no kubeconfig: one line saying so, not kopf's 85 lines of tracebacks
    ending in LoginError."""
    proc = run_cli("run", "--namespace", "speech", env={"HOME": str(tmp_path)})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout == "" and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("speech-operator: no Kubernetes credentials: not in a cluster")
    assert f"{tmp_path}/.kube/config does not exist" in proc.stderr

    proc = run_cli("run", "--namespace", "speech", env={"HOME": str(tmp_path), "KUBECONFIG": str(tmp_path / "nope")})
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and f"KUBECONFIG={tmp_path}/nope does not exist" in proc.stderr

    broken = tmp_path / "broken"
    broken.write_text(yaml.safe_dump(kubeconfig_for("https://127.0.0.1:1", {"exec": {
        "apiVersion": "client.authentication.k8s.io/v1beta1", "command": str(tmp_path / "no-such-plugin")}})))
    proc = run_cli("cleanup", "--namespace", "speech", "x", env={"HOME": str(tmp_path), "KUBECONFIG": str(broken)})
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"speech-operator: cannot use the kubeconfig KUBECONFIG={broken}")


def test_missing_operator_extra_is_one_line_naming_it(tmp_path: Path) -> None:
    """A Python with this package but none of the operator extra's dependencies (`pip install
    speech-operator` without `[operator]`): a venv without site packages. Run as the module the
    console script calls (`speech_operator.cli:main`), since nothing is installed in that venv."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    for args in (["run", "--namespace", "speech"], ["crd"], ["run", "--namespace", "speech", "--liveness", "http://*:8080/healthz"],
                 ["run", "--namespace", "speech", "--metrics", "http://*:8081/metrics"]):
        proc = run_cli(*args, env={"HOME": str(tmp_path)}, python=python)
        assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
        assert "No module named" in proc.stderr and "pip install 'speech-operator[operator]'" in proc.stderr


#: A fake exec credential plugin handing out a new token each run. kopf and the operator's client may run it at the same
#: moment: the counter is read and written under a lock (without it, one read the file another had just truncated).
PLUGIN = textwrap.dedent("""\
    import fcntl, json, pathlib, sys
    counter = pathlib.Path(sys.argv[1])
    with open(counter.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        n = int(counter.read_text() if counter.exists() else 0) + 1
        counter.write_text(str(n))
    print(json.dumps({"apiVersion": "client.authentication.k8s.io/v1beta1", "kind": "ExecCredential",
                      "status": {"token": f"exec-token-{n}"}}))
""")


async def test_a_kubeconfig_exec_plugin_logs_in_kopf_and_our_calls_and_refreshes(apiserver: Cluster, tmp_path: Path) -> None:
    """Credentials from an exec plugin (as EKS, GKE and AKS kubeconfigs use) reach kopf's watches
    and the operator's own calls; when the token expires (401), both run the plugin again. The
    old client read only static tokens from the kubeconfig, and sent none here."""
    plugin = tmp_path / "plugin.py"
    plugin.write_text(PLUGIN)
    kubeconfig = tmp_path / "exec-kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(kubeconfig_for(str(apiserver.emulator.url).rstrip("/"), {"exec": {
        "apiVersion": "client.authentication.k8s.io/v1beta1", "command": sys.executable,
        "args": [str(plugin), str(tmp_path / "count")], "interactiveMode": "Never"}})))

    def tokens(agent: str) -> set[str]:
        return {r.headers.get("Authorization", "") for r in list(apiserver.emulator)
                if r.headers.get("User-Agent", "").startswith(agent)}

    async with Operator("run", "--namespace", "speech", env={"KUBECONFIG": str(kubeconfig)}):
        await apiserver.api.create(apiserver.stt_url(), stt())
        await apiserver.eventually(lambda: deployment(apiserver), timeout=30)
        before = tokens("kopf/") | tokens(USER_AGENT)
        assert tokens("kopf/") and tokens(USER_AGENT)
        assert all(re.fullmatch(r"Bearer exec-token-\d+", t) for t in before), before

        apiserver.emulator.expired.update(t.removeprefix("Bearer ") for t in before)
        await apiserver.api.patch(apiserver.stt_url("en-us"), {"spec": {"logLevel": "Debug"}})

        async def rolled() -> bool:
            dep = await deployment(apiserver) or {}
            return "Logging:Console:LogLevel:Default=Debug" in json.dumps(dep)
        await apiserver.eventually(rolled, timeout=30)
        fresh = {t for t in tokens(USER_AGENT) if t.removeprefix("Bearer ") not in apiserver.emulator.expired}
        assert fresh, "the operator's calls did not get a new token"

        async def kopf_relogged() -> bool:
            return any(t.removeprefix("Bearer ") not in apiserver.emulator.expired for t in tokens("kopf/"))
        await apiserver.eventually(kopf_relogged, timeout=30)


@pytest.mark.parametrize(("variable", "value", "says"), [
    ("SPEECH_GATEWAY_HEADER_SECONDS", "abc", "SPEECH_GATEWAY_HEADER_SECONDS='abc' is not a number"),
    ("SPEECH_GATEWAY_MAX_HEADER_BYTES", "-5", "SPEECH_GATEWAY_MAX_HEADER_BYTES='-5' must be at least 1024"),
    ("SPEECH_GATEWAY_MAX_HELD", "x", "SPEECH_GATEWAY_MAX_HELD='x' is not a whole number"),
    ("SPEECH_GATEWAY_SHUTDOWN_SECONDS", "inf", "SPEECH_GATEWAY_SHUTDOWN_SECONDS='inf' is not a finite number"),
    ("SPEECH_GATEWAY_FORM_PAUSE_SECONDS", "0.5", "SPEECH_GATEWAY_FORM_PAUSE_SECONDS='0.5' must be at least 1"),
    ("SPEECH_GATEWAY_FORM_BUDGET_BYTES", "1024", "SPEECH_GATEWAY_FORM_BUDGET_BYTES='1024' must be at least 65536"),
    ("SPEECH_GATEWAY_MAX_CONNECTIONS", "0", "SPEECH_GATEWAY_MAX_CONNECTIONS='0' must be at least 1"),
    ("SPEECH_GATEWAY_READ_BUFFER_BYTES", "100", "SPEECH_GATEWAY_READ_BUFFER_BYTES='100' must be at least 4096"),
    ("SPEECH_GATEWAY_MAX_MESSAGE_BYTES", "2000000", "SPEECH_GATEWAY_MAX_MESSAGE_BYTES='2000000' must be at most 1048576"),
    ("SPEECH_GATEWAY_PORT", "70000", "SPEECH_GATEWAY_PORT='70000' must be at most 65535"),
    # what the kubelet gives the pod of a Service named speech-gateway in its namespace, unless service links are off
    ("SPEECH_GATEWAY_PORT", "tcp://10.96.1.2:5000", "SPEECH_GATEWAY_PORT='tcp://10.96.1.2:5000' is not a whole number: it "
     "looks like the service link of a Service named speech-gateway, which the kubelet puts in every pod of its namespace: "
     "set enableServiceLinks: false in the pod spec, or rename the Service"),
])
def test_a_bad_gateway_variable_is_one_line_naming_it(tmp_path: Path, variable: str, value: str, says: str) -> None:
    """As a user starts it: one line and exit status 1, not a traceback (nor a negative cap taken as given)."""
    proc = run_cli("gateway", "--namespace", "speech", env={"HOME": str(tmp_path), variable: value})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr == f"speech-operator gateway: {says}\n", proc.stderr


def test_a_form_buffer_past_the_form_budget_is_one_line(tmp_path: Path) -> None:
    """A form read ahead up to SPEECH_GATEWAY_FORM_BUFFER_BYTES must fit SPEECH_GATEWAY_FORM_BUDGET_BYTES (beyond the 64 KiB
    each reads uncounted): with the buffer above, such a form alone got 503 forms_held ("try again shortly") every time,
    where its own bound said 413. The gateway took that without a word; now it is refused at start, as the chart refuses
    it (tests/ship/test_chart.py)."""
    env = {"HOME": str(tmp_path), "SPEECH_GATEWAY_FORM_BUFFER_BYTES": "16777216", "SPEECH_GATEWAY_FORM_BUDGET_BYTES": "1048576"}
    proc = run_cli("gateway", "--namespace", "speech", env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr == ("speech-operator gateway: SPEECH_GATEWAY_FORM_BUFFER_BYTES=16777216 must be at most "
                           "SPEECH_GATEWAY_FORM_BUDGET_BYTES=1048576 and the 65536 bytes each form reads ahead uncounted "
                           "(1114112): a form read ahead that far would get 503 (forms_held) every time, not 413\n"), proc.stderr


@pytest.mark.parametrize(("port", "says"), [("70000", "must be at most 65535"), ("-1", "must be at least 0")])
def test_a_gateway_port_flag_out_of_range_is_one_line(tmp_path: Path, port: str, says: str) -> None:
    """``--port`` has SPEECH_GATEWAY_PORT's bounds: a port past 65535 was taken, and the gateway listened on it modulo
    65536 (70000: port 4464) without a word."""
    proc = run_cli("gateway", "--namespace", "speech", f"--port={port}", env={"HOME": str(tmp_path)})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr == f"speech-operator gateway: --port {port} {says}\n", proc.stderr


@pytest.mark.parametrize(("host", "says"), [("127.0.0.1", "127.0.0.1"), ("::1", "[::1]"), ("[::1]", "[::1]")])
def test_a_gateway_port_in_use_is_one_line(tmp_path: Path, host: str, says: str) -> None:
    """A port in use is one line naming where, an IPv6 address in brackets as in a URL (it read ``::1:PORT``); the
    host may come in brackets (it was "Name or service not known"). The kubeconfig names no server that answers: the
    gateway fails to listen before it needs one."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(kubeconfig_for("https://127.0.0.1:1", {"token": "test-token"})))
    with socket.create_server((host.strip("[]"), 0), family=socket.AF_INET6 if ":" in host else socket.AF_INET) as taken:
        port = taken.getsockname()[1]
        proc = run_cli("gateway", "--namespace", "speech", f"--host={host}", f"--port={port}",
                       env={"HOME": str(tmp_path), "KUBECONFIG": str(kubeconfig)})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.endswith(f"speech-operator gateway: cannot listen on {says}:{port}: Address already in use\n"), proc.stderr


@pytest.mark.parametrize(("variable", "value", "says"), [
    ("SPEECH_OPERATOR_RECHECK_SECONDS", "abc", "SPEECH_OPERATOR_RECHECK_SECONDS='abc' is not a number"),
    ("SPEECH_OPERATOR_AUTOSCALE_SECONDS", "0", "SPEECH_OPERATOR_AUTOSCALE_SECONDS='0' must be at least 0.001"),
    ("SPEECH_OPERATOR_DEMAND_SECONDS", "nan", "SPEECH_OPERATOR_DEMAND_SECONDS='nan' is not a finite number"),
])
def test_a_bad_operator_variable_is_one_line_naming_it(tmp_path: Path, variable: str, value: str, says: str) -> None:
    """Before it looks for credentials: one line and exit status 1, not a traceback once kopf has started (nor an
    autoscaler looking every 0 s)."""
    proc = run_cli("run", "--namespace", "speech", env={"HOME": str(tmp_path), variable: value})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr == f"speech-operator: {says}\n", proc.stderr
