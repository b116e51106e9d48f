"""The gateway in front of real recognizer processes, its directory fed by a watch against kmock.

What stands in for a cluster, and why:
- kmock (tests/operator/conftest.py's emulator) is the API server: the gateway lists and watches
  SpeechToTexts there exactly as on a cluster;
- cluster DNS and kube-proxy cannot run here: :class:`ServiceDNS` resolves each Service's name
  (``<name>.<namespace>.svc``) to 127.0.0.1, and the SpeechToText's ``spec.service.port`` is the
  port its recognizer process listens on (a free port, as no test may bind a fixed one);
- only ko-KR's model exists here: a second locale is the same ko-KR model served under another
  locale's name (a models folder whose ``ja-JP/`` is a link to the Korean model), so that locale
  "speaks Korean". Each recognizer process sees only its own locale's folder, so a request the
  gateway sent to the wrong one would fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import kmock
import pytest
import yaml
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config

from harness.kube import NAMESPACE, Emulator, declare, kubeconfig_for
from harness.loopback import Loopback, free_port
from speech_operator import api
from speech_operator.config import OperatorConfig
from speech_operator.gateway import GatewayConfig, create_app, serving
from speech_operator.gateway_directory import Directory, SpeechToTextWatch
from speech_operator.kube import MERGE_PATCH, USER_AGENT, Kube
from speech_operator.reconcile import Runtime
from speech_recognizer import contract
from speech_recognizer.models import installed_packages
from tests.recognizer.test_demo_page import browser, microphone_wav  # noqa: F401 - fixtures: the demo page's Chromium and fake microphone (test_newer_routes)
from tests.support import within

T = TypeVar("T")

#: The second locale, served by the Korean model (only ko-KR's model exists here).
OTHER_LOCALE = "ja-JP"


def models_folder(root: Path, locale: str) -> Path:
    """A ``Mounts:Models`` folder holding only ``<locale>/``: a link to the Korean model."""
    folder = root / f"models-{locale}"
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / locale
    if not link.exists():
        link.symlink_to(installed_packages()["ko-KR"], target_is_directory=True)
    return folder


@dataclass
class Recognizer(Loopback):
    """``python -m speech_recognizer`` for one locale on a free loopback port."""

    locale: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, budget: float = 240) -> None:
        """Until /ready answers 200; a hang guard: ``budget`` seconds of time the recognizer and this process did not
        wait for a CPU (:func:`~tests.support.within`; by the clock that bound failed a setup that took 48-74 s at load)."""
        within(budget, self.ready, lambda: f"the {self.locale} recognizer's /ready ({self.output()})", every=0.2)

    def ready(self) -> bool:
        assert self.process.poll() is None, f"the {self.locale} recognizer exited: {self.output()}"
        try:
            return httpx.get(self.http + contract.ROUTE_READY, timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def start_recognizer(root: Path, locale: str, *args: str, port: int | None = None) -> Recognizer:
    """Start one recognizer process serving ``locale`` (the Korean model under that name); not yet ready."""
    work = root / f"recognizer-{locale}-{time.monotonic_ns()}"
    (work / "tmp").mkdir(parents=True)
    port = port or free_port()
    log = work / "output.log"
    env = {k: v for k, v in os.environ.items() if k.split("_")[0].lower() not in {"eula", "apikey", "billing", "locale", "logging"}}
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "speech_recognizer", "Eula=accept", "Host=127.0.0.1", f"Port={port}",
             f"Locale={locale}", f"Mounts:Models={models_folder(root, locale)}", f"Mounts:Output={work / 'output'}",
             "Warmup:Count=0", *args],
            env={**env, "TMPDIR": str(work / "tmp")}, stdout=out, stderr=subprocess.STDOUT)
    return Recognizer(locale, process, port, log)


class ServiceDNS(AbstractResolver):
    """Cluster DNS as the gateway sees it: every ``*.svc`` name is 127.0.0.1 (the recognizers' loopback)."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        self.asked.append(host)
        if not host.endswith(".svc"):
            raise OSError(f"{host} is not a Service name")
        return [ResolveResult(hostname=host, host="127.0.0.1", port=port, family=socket.AF_INET, proto=0,
                              flags=socket.AI_NUMERICHOST)]

    async def close(self) -> None:
        pass


def speech_to_text(name: str, locale: str, port: int, **spec: Any) -> dict[str, Any]:
    """A SpeechToText whose Service listens on ``port``."""
    return {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"locale": locale, "eula": "accept", "service": {"port": port}, **spec}}


class Stack(Loopback):
    """kmock, the gateway's watch and the gateway, on an event loop of their own in a thread, so that
    blocking clients (the Speech SDK, websockets' sync client) can call the gateway from the test.

    ``call`` runs a coroutine on that loop (e.g. a change to a SpeechToText in kmock)."""

    def __init__(self, tmp: Path, config: GatewayConfig | None = None) -> None:
        self.tmp = tmp
        self.config = config or GatewayConfig(host="127.0.0.1", port=0)
        self.dns = ServiceDNS()
        self.directory: Directory | None = None
        #: The gateway's application (``app[GATEWAY]`` is its :class:`~speech_operator.gateway.Gateway`).
        self.app: web.Application | None = None
        self.port = 0
        self.emulator: Emulator | None = None
        self.api: k8s.ApiClient | None = None
        self._admin: k8s.ApiClient | None = None
        #: The operator's own client, as tests/controllers.py uses it.
        self.kube: Kube | None = None
        self.kubeconfig = tmp / "kubeconfig"
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        #: How long the gateway's own stop took (``serving``'s exit: aiohttp's shutdown), once stopped.
        self.stopped_in: float | None = None
        self._started: Future[None] = Future()
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._main(),), name="gateway", daemon=True)

    # ---- lifecycle --------------------------------------------------------------------------------
    def __enter__(self) -> Stack:
        self._thread.start()
        self._started.result(timeout=30)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.join()

    def stop(self) -> None:
        """Stop the gateway as SIGTERM does in ``gateway.run`` (``serving`` ends), without waiting."""
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    def join(self, timeout: float = 30) -> None:
        self._thread.join(timeout=timeout)
        assert not self._thread.is_alive(), "the gateway did not stop"

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        try:
            async with Emulator() as emulator, kmock.Server(emulator):
                declare(emulator)
                self.emulator = emulator
                self.kubeconfig.write_text(yaml.safe_dump(kubeconfig_for(str(emulator.url).rstrip("/"), {"token": "test-token"})))
                configuration = k8s.Configuration()
                await k8s_config.load_kube_config(config_file=str(self.kubeconfig), client_configuration=configuration)
                self.kube = Kube(configuration, user_agent="test-client")
                async with k8s.ApiClient(configuration) as self.api, k8s.ApiClient(configuration) as self._admin:
                    self.api.user_agent = f"{USER_AGENT} gateway"  # as `speech-operator gateway` names itself (cli.py)
                    self._admin.user_agent = "test-client"  # the test's own changes, as kubectl's (tests/rbac.py)
                    self.directory = Directory()
                    watcher = asyncio.create_task(SpeechToTextWatch(self.api, self.directory, [NAMESPACE]).run())
                    try:
                        app = self.app = create_app(self.directory, self.config, resolver=self.dns, api_client=self.api)
                        async with serving(app, "127.0.0.1", self.config.port, self.config.shutdown_seconds) as self.port:
                            self._started.set_result(None)
                            await self._stop.wait()
                            stopping = time.monotonic()
                        self.stopped_in = time.monotonic() - stopping
                    finally:
                        watcher.cancel()
                        await asyncio.gather(watcher, return_exceptions=True)
                        await self.kube.close()
        except BaseException as exc:
            if not self._started.done():
                self._started.set_exception(exc)
            raise

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def call(self, coro: Awaitable[T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)  # type: ignore[arg-type]

    # ---- the cluster --------------------------------------------------------------------------------
    @property
    def objects(self) -> k8s.CustomObjectsApi:
        """The test's own client of SpeechToTexts (kubectl's part), not the gateway's: its RBAC is the gateway's."""
        assert self._admin is not None
        return k8s.CustomObjectsApi(self._admin)

    def create(self, body: dict[str, Any], ready: int = 1) -> None:
        """Create a SpeechToText in kmock with ``ready`` ready pods in its status."""
        async def go() -> None:
            await self.objects.create_namespaced_custom_object(api.GROUP, api.VERSION, NAMESPACE, api.PLURAL, body)
            await self.objects.patch_namespaced_custom_object_status(
                api.GROUP, api.VERSION, NAMESPACE, api.PLURAL, body["metadata"]["name"],
                {"status": {"readyReplicas": ready, "replicas": ready}}, _content_type=MERGE_PATCH)
        self.call(go())

    def delete(self, name: str) -> None:
        self.call(self.objects.delete_namespaced_custom_object(api.GROUP, api.VERSION, NAMESPACE, api.PLURAL, name))

    def routes(self, locale: str, timeout: float = 10) -> None:
        """Wait until the gateway's directory routes ``locale``."""
        self.eventually(lambda: self.directory is not None and locale in self.directory.locales, timeout, f"{locale} routed")

    def serving(self, locale: str, timeout: float = 10) -> None:
        """Wait until the gateway routes ``locale`` to a ready pod: a SpeechToText's status comes after it, and a stream
        sent before the gateway saw it would be held for a wake (closed 1013 at the stop)."""
        self.eventually(lambda: self.directory is not None and locale in self.directory.locales
                        and self.directory.lookup(locale).ready_replicas > 0, timeout, f"{locale} ready")

    @staticmethod
    def eventually(check: Callable[[], bool], timeout: float = 10, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
            time.sleep(0.02)


@contextlib.contextmanager
def operator(config: OperatorConfig) -> Iterator[Runtime]:
    """The real kopf operator, on a loop of its own in a thread, logged in with ``KUBECONFIG`` (set it first)."""
    import kopf

    import speech_operator.handlers  # noqa: F401  (registers the handlers)

    settings = kopf.OperatorSettings()
    settings.scanning.disabled = True
    settings.watching.reconnect_backoff = 0.1
    settings.networking.request_timeout = 5
    runtime = Runtime(config=config)
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(target=asyncio.run, name="operator", args=(kopf.operator(
        settings=settings, standalone=True, namespaces=[NAMESPACE], memo=kopf.Memo(runtime=runtime),
        stop_flag=stop, ready_flag=ready),))
    thread.start()
    try:
        assert ready.wait(10), "the operator did not start"
        yield runtime
    finally:
        stop.set()
        thread.join(15)
        assert not thread.is_alive(), "the operator did not stop"


#: The key :data:`OTHER_LOCALE`'s recognizer requires (``ApiKey``), so that key headers are seen to pass.
KEY = "gateway-test-key"


@dataclass
class Locales:
    """Two recognizer processes, ko-KR (no key) and :data:`OTHER_LOCALE` (``ApiKey`` :data:`KEY`, and
    its SpeechToText names a key Secret), each behind a SpeechToText the gateway routes."""

    stack: Stack
    recognizers: dict[str, Recognizer] = field(default_factory=dict)


@pytest.fixture(scope="session")
def locales(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Locales]:
    """:func:`two_locales` once per worker process, shared by the modules that use it (xdist's ``--dist loadfile`` may
    send several to one worker): each of them leaves the stack as it found it (what a test adds to the directory it
    deletes, a limit it changes it restores, a recognizer it kills is its own). A module that stops, scales or
    reconfigures what it serves builds its own (:func:`two_locales`, :class:`Stack`)."""
    with two_locales(tmp_path_factory.mktemp("gateway")) as found:
        yield found


@contextlib.contextmanager
def two_locales(root: Path, *settings: str, config: GatewayConfig | None = None) -> Iterator[Locales]:
    """:class:`Locales`, each recognizer given ``settings`` too (the gateway ``config``, if given)."""
    recognizers = {"ko-KR": start_recognizer(root, "ko-KR", *settings),
                   OTHER_LOCALE: start_recognizer(root, OTHER_LOCALE, f"ApiKey={KEY}", "Billing=https://example.invalid", *settings)}
    try:
        for r in recognizers.values():
            r.wait_ready()
        with Stack(root, config) as stack:
            for locale, r in recognizers.items():
                keyed = {"billing": "https://example.invalid", "apiKeySecretRef": {"name": "speech-key", "key": "apiKey"}}
                stack.create(speech_to_text(locale.lower(), locale, r.port, **(keyed if locale == OTHER_LOCALE else {})))
            for locale in recognizers:
                stack.routes(locale)
            yield Locales(stack, recognizers)
    finally:
        for r in recognizers.values():
            r.kill()
