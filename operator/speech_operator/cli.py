"""``speech-operator``: run the operator or the gateway, print the CRD, the alerts or the dashboard, or delete SpeechToTexts (Helm's uninstall hook).

    speech-operator run --namespace speech            # one namespace (or SPEECH_OPERATOR_NAMESPACE=a,b)
    speech-operator run --all-namespaces --liveness 'http://*:8080/healthz'   # *: IPv6 and IPv4
    speech-operator run --all-namespaces --peering speech-operator   # two or more replicas
    speech-operator run --all-namespaces --metrics 'http://*:8081/metrics'   # SpeechToTexts' conditions
    speech-operator gateway --all-namespaces          # one endpoint for every locale, on port 5000
    speech-operator crd > crds/speechtotexts.speech-operator.io.yaml
    speech-operator alerts > deploy/monitoring/prometheusrule.yaml   # --rules: a Prometheus rules file
    speech-operator dashboard > deploy/monitoring/grafana-dashboard.json
    speech-operator cleanup --namespace speech en-us ko-kr

One replica needs nothing more. Two or more must peer (``--peering NAME``, off by default): kopf
keeps one replica active through a ``ClusterKopfPeering`` (with ``--all-namespaces``) or a
``KopfPeering`` in each watched namespace of that name (CRDs in ``crds/kopf-peering.yaml``),
and pauses every watch while it is missing (logged as a WARNING; see
:mod:`speech_operator.peering`). Within one replica, reconciles of one SpeechToText are serialised.

Credentials: the pod's service account, else ``KUBECONFIG`` / ``~/.kube/config`` with whatever it
uses (tokens, client certificates, exec plugins, OIDC). Without any, one line and exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the operator's dependencies load only once they are checked (run)
    from aiohttp import web
    from kubernetes_asyncio import client as k8s

    from speech_operator.reconcile import Runtime
from collections.abc import Callable

PROG = "speech-operator"


def _scope(command: argparse.ArgumentParser, globs: bool = True) -> None:
    scope = command.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", default=[],
                       help=f"namespace to watch (repeatable{'; globs allowed' if globs else ''}); "
                            "env SPEECH_OPERATOR_NAMESPACE=a,b")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")


class _Parser(argparse.ArgumentParser):
    """An argument parser whose epilog and flags' help may be made only when help is asked for (``epilog_from``,
    ``helps_from``: by each flag's ``dest``): the gateway's list its settings from where they are declared, a module
    that takes 0.8 s to import."""

    def __init__(self, *args: Any, epilog_from: Callable[[], str] | None = None,
                 helps_from: Callable[[], dict[str, str]] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.epilog_from = epilog_from
        self.helps_from = helps_from

    def format_help(self) -> str:
        if self.epilog_from is not None:
            self.epilog = self.epilog_from()
        if self.helps_from is not None:
            helps = self.helps_from()
            for action in self._actions:
                if action.dest in helps:
                    action.help = helps[action.dest].replace("%", "%%")
        return super().format_help()


def _gateway_settings() -> str:
    from speech_operator.gateway import GatewayConfig
    return GatewayConfig.help()


#: The gateway's settings that are flags too (a flag wins over its variable).
_GATEWAY_FLAGS = ("host", "port")


def _gateway_flags() -> dict[str, str]:
    """The help of the gateway's flags, from their settings' declaration: what each does, its variable, its default."""
    from speech_operator.gateway import GatewayConfig
    declared = {f.name: (name, f) for name, f in GatewayConfig.variables().items()}
    return {flag: f"{f.metadata['help']} (env {name}; default {f.default})"
            for flag in _GATEWAY_FLAGS for name, f in [declared[flag]]}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="run the operator")
    _scope(run)
    run.add_argument("--liveness", metavar="URL", default=os.environ.get("SPEECH_OPERATOR_LIVENESS"),
                     help="serve liveness probes, e.g. http://*:8080/healthz (host *: every address, IPv6 and IPv4; "
                          "env SPEECH_OPERATOR_LIVENESS)")
    run.add_argument("--metrics", metavar="URL", default=os.environ.get("SPEECH_OPERATOR_METRICS") or None,
                     help="serve Prometheus metrics (each SpeechToText's conditions and replicas), e.g. "
                          "http://*:8081/metrics; off unless given (env SPEECH_OPERATOR_METRICS)")
    peers = run.add_mutually_exclusive_group()
    peers.add_argument("--peering", metavar="NAME", default=os.environ.get("SPEECH_OPERATOR_PEERING") or None,
                       help="peer with the other replicas through the kopf peering object NAME (for two or "
                            "more replicas; env SPEECH_OPERATOR_PEERING)")
    peers.add_argument("--standalone", action="store_true", help="no peering: a single replica (the default)")
    run.add_argument("--priority", type=int, default=None,
                     help="peering rank; the highest live replica is active (default: random)")
    run.add_argument("-v", "--verbose", action="store_true")
    run.add_argument("--debug", action="store_true")
    gateway = sub.add_parser("gateway", help="serve every locale at one endpoint, forwarding by language",
                             epilog_from=_gateway_settings, helps_from=_gateway_flags,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    _scope(gateway, globs=False)
    gateway.add_argument("--host", default=None)  # their help: _gateway_flags; unset, the variable's or the default
    gateway.add_argument("--port", type=int, default=None)
    gateway.add_argument("-v", "--verbose", action="store_true")
    sub.add_parser("crd", help="print the SpeechToText CRD (YAML)")
    alerts = sub.add_parser("alerts", help="print the Prometheus alerts (a PrometheusRule; --rules: a rules file)")
    alerts.add_argument("--rules", action="store_true", help="a Prometheus rules file (rule_files) instead of a PrometheusRule")
    sub.add_parser("dashboard", help="print the Grafana dashboard (JSON)")
    clean = sub.add_parser("cleanup", help="delete SpeechToTexts and wait until the operator released them")
    clean.add_argument("-n", "--namespace", default=os.environ.get("POD_NAMESPACE"), required=not os.environ.get("POD_NAMESPACE"),
                       help="their namespace (default: env POD_NAMESPACE)")
    clean.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for them to go (default 300)")
    clean.add_argument("names", nargs="+", metavar="NAME")
    args = parser.parse_args(argv)
    if args.command == "run" and args.standalone:
        args.peering = None
    if args.command == "run" and (args.liveness or args.metrics):
        _require_extra()  # the check below needs them (aiohttp, prometheus_client)
        from speech_operator.metrics import address
        ports = {}
        for flag, url in (("--liveness", args.liveness), ("--metrics", args.metrics)):
            try:
                ports[flag] = address(url)[1] if url else None
            except ValueError as exc:
                parser.error(f"{flag}: {exc}")
        if args.metrics and ports["--metrics"] == ports["--liveness"]:  # the second server would fail to bind
            parser.error(f"--metrics: {args.metrics!r} is on the port of --liveness {args.liveness!r}: give each its own port")
    if args.command in ("run", "gateway"):
        if not args.namespace and not args.all_namespaces:
            env = os.environ.get("SPEECH_OPERATOR_NAMESPACE", "")
            args.namespace = [ns.strip() for ns in env.split(",") if ns.strip()]
            if not args.namespace:
                parser.error("pass --namespace NS (or SPEECH_OPERATOR_NAMESPACE) or --all-namespaces")
    return args


def ensure_identity() -> None:
    """Give ``HOME`` and ``LOGNAME`` values when the user has none (an arbitrary uid without a passwd entry).

    The Kubernetes client resolves ``~`` when it is imported ("Could not determine home
    directory"), and kopf names its peering identity with ``getpass.getuser()`` ("getpwuid():
    uid not found"): both stopped the operator at once. ``/`` as home, as container runtimes use
    then, and ``uid-<uid>`` as the name. The images have a passwd entry (``nonroot``); this is
    for runtimes that pick another uid.
    """
    if not os.environ.get("HOME") and os.path.expanduser("~") == "~":  # no HOME and no passwd entry
        os.environ["HOME"] = "/"
    if not any(os.environ.get(name) for name in ("LOGNAME", "USER", "LNAME", "USERNAME")):
        import pwd
        try:
            pwd.getpwuid(os.getuid())
        except KeyError:
            os.environ["LOGNAME"] = f"uid-{os.getuid()}"


def _require_extra() -> None:
    """One line, not a traceback, when ``pip install speech-operator`` left out the operator extra."""
    try:
        import aiohttp  # noqa: F401
        import kopf  # noqa: F401
        import kubernetes_asyncio  # noqa: F401
        import prometheus_client  # noqa: F401
        import pydantic  # noqa: F401
        import starlette  # noqa: F401
        import yaml  # noqa: F401
    except ImportError as exc:
        sys.exit(f"{PROG}: the operator's dependencies are not installed ({exc}); "
                 f"install them with: pip install 'speech-operator[operator]'")


async def _credentials() -> k8s.Configuration:
    from speech_operator import kube
    try:
        return await kube.load_configuration()
    except kube.NoCredentials as exc:
        sys.exit(f"{PROG}: {exc}")


def named_namespaces_only(namespaces: list[str], all_namespaces: bool) -> bool:
    """Whether the operator watches namespaces given by name only (no glob, no ``!``, as kopf reads them).

    Then kopf has nothing to learn from listing namespaces, nor from watching CRDs (it reads
    them at start): its scanning is off. Bound by a Role in each namespace (the chart's
    namespaced mode) it may do neither, and with scanning on it retried both for about a
    minute (an ERROR line per attempt), serving nothing until it gave up with warnings that
    the namespaces it was given were "assumed to exist". Patterns still need the listing.
    """
    return not all_namespaces and not any(ch in ns for ns in namespaces for ch in "!*?,")


async def run(args: argparse.Namespace) -> None:
    import speech_operator.handlers  # noqa: F401  (registers the handlers)
    from speech_operator.config import OperatorConfig
    from speech_operator.kube import Kube
    from speech_operator.reconcile import Runtime

    stopped = _stopped_while_starting()
    runtime: Runtime | None = None
    servers: list[web.AppRunner] = []  # kopf's own liveness endpoint is not used: it cannot listen on IPv6 and IPv4 (metrics.alive)
    try:
        try:
            config = OperatorConfig.from_env()
        except ValueError as exc:
            sys.exit(f"{PROG}: {exc}")
        runtime = Runtime(config=config, kube=Kube(await _credentials()), clusterwide=args.all_namespaces)
        await _operate(args, runtime, servers)
    except asyncio.CancelledError:
        if not stopped.is_set():
            raise
        logging.getLogger(__name__).info("Signal SIGTERM is received while starting. Operator is stopping.")
    finally:
        for server in servers:
            await server.cleanup()
        if runtime is not None:
            await runtime.kube.close()


def _exit_at_once(*_: Any) -> None:
    """SIGTERM before the operator's loop runs (while Python imports its dependencies, seconds on a loaded node):
    nothing was begun, so the process exits at once, status 0 (Python's default: 143, killed by the signal)."""
    raise SystemExit(0)


def _stopped_while_starting() -> asyncio.Event:
    """SIGTERM from now until kopf listens for it (as its tasks start: its handler replaces this one) cancels the
    operator's start (the credentials' load, the peering check, the servers' start), which then ends quietly, status 0,
    as kopf's stop does; Python's default ended the process at once with status 143 (killed by the signal). Set once
    it came."""
    stopped, task = asyncio.Event(), asyncio.current_task()
    assert task is not None

    def stop() -> None:
        stopped.set()
        task.cancel()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop)
    return stopped


async def _operate(args: argparse.Namespace, runtime: Runtime, servers: list[web.AppRunner]) -> None:
    """Check the peering, start the servers asked for (each appended to ``servers``), then run kopf."""
    import kopf

    from speech_operator import peering
    from speech_operator.metrics import Exporter, alive, serve

    settings = kopf.OperatorSettings()
    settings.scanning.disabled = named_namespaces_only(args.namespace, args.all_namespaces)
    priority, explainer = None, None
    if args.peering:
        priority = args.priority if args.priority is not None else peering.own_priority()
        explainer = peering.PauseExplainer(args.peering, settings.peering.lifetime)
        explainer.install()
        await peering.check(runtime.kube, args.peering, args.namespace, args.all_namespaces, priority,
                            settings.peering.lifetime)
    exporter = (Exporter(active=lambda: explainer.active, resumed=lambda: explainer.resumed) if explainer is not None
                else Exporter())
    for flag, url, start in (("--metrics", args.metrics, exporter.start),
                             ("--liveness", args.liveness, lambda url: serve(url, "/healthz", alive))):
        if not url:
            continue
        try:
            servers.append(await start(url))
        except OSError as exc:  # the port in use, an address not of this machine
            sys.exit(f"{PROG}: cannot serve {flag} {url}: {exc.strerror or exc}")
    await kopf.operator(
        settings=settings,
        clusterwide=args.all_namespaces,
        namespaces=args.namespace,
        peering_name=args.peering,  # a name makes peering mandatory
        standalone=not args.peering,
        priority=priority,
        memo=kopf.Memo(runtime=runtime, metrics=exporter),
    )


async def gateway(args: argparse.Namespace) -> None:
    from kubernetes_asyncio import client as k8s

    from speech_operator.gateway import GatewayConfig
    from speech_operator.gateway import run as serve
    from speech_operator.kube import USER_AGENT
    from speech_recognizer.addresses import host_port

    try:
        config = GatewayConfig.from_env()
        if args.port is not None:  # within the same bounds as SPEECH_GATEWAY_PORT (a port past 65535 wrapped round)
            config = dataclasses.replace(config, port=GatewayConfig.bounded("port", args.port, f"--port {args.port}"))
    except ValueError as exc:
        sys.exit(f"{PROG} gateway: {exc}")
    if args.host is not None:
        config = dataclasses.replace(config, host=args.host)
    async with k8s.ApiClient(await _credentials()) as api_client:
        api_client.user_agent = f"{USER_AGENT} gateway"
        try:
            await serve(config, api_client, None if args.all_namespaces else args.namespace)
        except OSError as exc:  # the port in use, an address not of this machine
            sys.exit(f"{PROG} gateway: cannot listen on {host_port(config.host, config.port)}: {exc.strerror or exc}")


async def cleanup(args: argparse.Namespace) -> int:
    from speech_operator import cleanup
    from speech_operator.kube import USER_AGENT, Kube

    kube = Kube(await _credentials(), user_agent=f"{USER_AGENT} cleanup")
    try:
        return await cleanup.cleanup(kube, args.namespace, args.names, args.timeout)
    finally:
        await kube.close()


def quiet_when_stdout_closes(entry: Callable[..., int | None]) -> Callable[..., int | None]:
    """``entry`` ends quietly, as ``cat`` does, when its reader stops early (``crd | head``).

    Without this the write to the closed pipe (or Python's own flush at exit) ends in a
    BrokenPipeError traceback. The exit status is the one a shell reports for a program
    killed by SIGPIPE (141); SIGPIPE itself stays ignored, as Python sets it.
    """

    @functools.wraps(entry)
    def run(*args: object, **kwargs: object) -> int | None:
        try:
            try:
                return entry(*args, **kwargs)
            finally:  # also after SystemExit (argparse's --help)
                sys.stdout.flush()
        except BrokenPipeError:
            # Python flushes stdout once more at exit: let that flush go nowhere.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 128 + signal.SIGPIPE

    return run


@quiet_when_stdout_closes
def main(argv: list[str] | None = None) -> None:
    if (sys.argv[1:] if argv is None else argv)[:1] == ["run"]:  # before the imports: parsing may make some
        signal.signal(signal.SIGTERM, _exit_at_once)  # until the operator's loop runs (run: _stopped_while_starting)
    ensure_identity()  # first: parsing may import the Kubernetes client (--liveness, --metrics), which needs a home
    args = parse(argv)
    _require_extra()
    if args.command == "crd":
        from speech_operator import crd
        sys.stdout.write(crd.render())
    elif args.command == "alerts":
        from speech_operator import alerts
        sys.stdout.write(alerts.render(rules_file=args.rules))
    elif args.command == "dashboard":
        from speech_operator import dashboard
        sys.stdout.write(dashboard.render())
    elif args.command == "cleanup":
        sys.exit(asyncio.run(cleanup(args)))
    elif args.command == "gateway":
        logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        asyncio.run(gateway(args))
    else:
        import kopf
        kopf.configure(verbose=args.verbose, debug=args.debug)
        asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
