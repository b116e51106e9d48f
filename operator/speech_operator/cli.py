"""``speech-operator``: run the operator, or print the CRD.

    speech-operator run --namespace speech            # one namespace (or SPEECH_OPERATOR_NAMESPACE=a,b)
    speech-operator run --all-namespaces --liveness http://0.0.0.0:8080/healthz
    speech-operator crd > crds/speechtotexts.speech-operator.io.yaml

Two replicas are safe: kopf peering keeps exactly one replica active. The replicas
find each other through a ``ClusterKopfPeering`` (with ``--all-namespaces``) or a
``KopfPeering`` in each watched namespace, named by ``--peering`` (default
``speech-operator``; CRDs in ``crds/kopf-peering.yaml``). Each replica writes a
keep-alive there; the others pause and take over within a minute (``lifetime``) when the
active one stops. Peering is mandatory unless ``--standalone`` is given, so a missing
peering CRD stops the operator instead of letting two replicas fight over the same
children. Within one replica, reconciles of one SpeechToText are serialised.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import signal
import sys
from collections.abc import Callable

import kopf

from speech_operator import crd


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="speech-operator", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the operator")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", default=[],
                       help="namespace to watch (repeatable; globs allowed); env SPEECH_OPERATOR_NAMESPACE=a,b")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
    run.add_argument("--liveness", metavar="URL", default=os.environ.get("SPEECH_OPERATOR_LIVENESS"),
                     help="serve liveness probes, e.g. http://0.0.0.0:8080/healthz")
    run.add_argument("--peering", default=os.environ.get("SPEECH_OPERATOR_PEERING", "speech-operator"),
                     help="name of the kopf peering object shared by the replicas")
    run.add_argument("--standalone", action="store_true", help="no peering (a single replica only)")
    run.add_argument("-v", "--verbose", action="store_true")
    run.add_argument("--debug", action="store_true")
    sub.add_parser("crd", help="print the SpeechToText CRD (YAML)")
    args = parser.parse_args(argv)
    if args.command == "run" and not args.namespace and not args.all_namespaces:
        env = os.environ.get("SPEECH_OPERATOR_NAMESPACE", "")
        args.namespace = [ns.strip() for ns in env.split(",") if ns.strip()]
        if not args.namespace:
            parser.error("pass --namespace NS (or SPEECH_OPERATOR_NAMESPACE) or --all-namespaces")
    return args


async def run(args: argparse.Namespace) -> None:
    import speech_operator.handlers  # noqa: F401  (registers the handlers)

    await kopf.operator(
        clusterwide=args.all_namespaces,
        namespaces=args.namespace,
        liveness_endpoint=args.liveness,
        peering_name=None if args.standalone else args.peering,  # a name makes peering mandatory
        standalone=args.standalone,
    )


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
    args = parse(argv)
    if args.command == "crd":
        sys.stdout.write(crd.render())
        return
    kopf.configure(verbose=args.verbose, debug=args.debug)
    asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
