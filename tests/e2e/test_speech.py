"""The Speech SDK checks, run for real: the unmodified SDK against the real recognizer on loopback,
compared with in-process Vosk on audio made by espeak-ng. Only the cluster is stood in for (a real
one cannot run here): its "port-forward" is a TCP relay to the recognizer, and "deleting the pod"
either cuts the relay (a pod that dies with its streams) or leaves it (a pod that drains)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest

from speech_recognizer.models import LoadedModel
from tests.conftest import TEST_KEY
from tests.gateway.conftest import Stack, speech_to_text
from tests.support import Reference, ServerThread
from tests.usp.sdk import display_text

from . import checks as c
from . import manifests as m
from .fake import FakeCluster, pod
from .speech import Audio, prepare

RUN = m.Run("abc123")


class Relay:
    """What ``kubectl port-forward`` is to the suite: a local port that reaches the recognizer,
    and that dies with its pod."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.listener.accept()
                upstream = socket.create_connection(("127.0.0.1", self.target))
                self.sockets += [client, upstream]
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def cut(self) -> None:
        """The pod is gone: its connections end, its port refuses. shutdown() first: on Linux a bare
        close() neither wakes the thread blocked in accept() (the port would go on accepting, and
        the SDK reconnects and replays its audio) nor the ones blocked in recv()."""
        for s in [self.listener, *self.sockets]:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


class RelayCluster(FakeCluster):
    """The in-memory cluster whose port-forwards reach a recognizer on loopback."""

    def __init__(self, servers: dict[str, ServerThread]) -> None:
        super().__init__()
        self.servers = servers
        self.relays: list[Relay] = []

    @contextlib.contextmanager
    def port_forward(self, namespace: str, target: str, remote: int) -> Iterator[int]:
        self._hook("port_forward", namespace, target, remote)
        relay = Relay(self.servers[target].port)
        self.relays.append(relay)
        try:
            yield relay.port
        finally:
            relay.cut()


@pytest.fixture(scope="module")
def audio(tmp_path_factory: pytest.TempPathFactory, model: LoadedModel, utterances_ref: Reference) -> Audio:
    """The suite's audio, made by the suite (with the session's model, loaded once): the same
    three utterances in-process Vosk gives the other tests."""
    made = prepare(tmp_path_factory.mktemp("e2e-audio"), model.model)
    assert [e[0] for e in made.expected] == [display_text(p) for p in utterances_ref.phrases]
    return made


def context(cluster: FakeCluster, audio: Audio, **kw) -> c.Context:
    cluster.put("namespace", {"metadata": {"name": RUN.namespace}})
    return c.Context(kube=cluster, run=RUN, timeouts=c.Timeouts(), audio=lambda: audio, log=lambda _: None, **kw)


def test_the_sdk_check_passes_through_each_service(server: ServerThread, keyed_server: ServerThread, audio: Audio) -> None:
    cluster = RelayCluster({f"service/{m.PLAIN}": server, f"service/{m.KEYED}": keyed_server})
    ctx = context(cluster, audio, api_key=TEST_KEY)
    assert c.check_sdk(m.PLAIN, keyed=False)(ctx).startswith("3 utterances as in-process Vosk: ")
    assert c.check_sdk(m.KEYED, keyed=True)(ctx).startswith("3 utterances as in-process Vosk: ")


def test_the_sdk_check_fails_with_the_sdks_reason_on_a_wrong_key(keyed_server: ServerThread, audio: Audio) -> None:
    ctx = context(RelayCluster({f"service/{m.KEYED}": keyed_server}), audio, api_key="not-the-key")
    with pytest.raises(c.CheckFailed, match=r"^Service keyed: the Speech SDK reported \['AuthenticationFailure: .*\(401\)"):
        c.check_sdk(m.KEYED, keyed=True)(ctx)


@pytest.mark.parametrize("drains", [True, False], ids=["pod-drains", "pod-dies"])
def test_drain_check_passes_only_when_the_stream_outlives_its_pod(drains: bool, server: ServerThread, audio: Audio) -> None:
    """The stream is live (paced, 8x real time here), the pod is deleted 4 s of audio in: a pod that
    drains keeps the stream to its end and every result arrives; one that dies cuts it, and the
    check says what it needs."""
    cluster = RelayCluster({"pod/plain-1": server})
    ctx = context(cluster, audio, pace=8.0)
    p = pod("plain-1", labels={"app.kubernetes.io/name": "speech-recognizer", "app.kubernetes.io/instance": m.PLAIN})
    p["metadata"]["namespace"] = RUN.namespace
    cluster.put("pod", p)
    if not drains:
        cluster.hooks["delete_now"] = lambda *args: cluster.relays[-1].cut()
    if drains:
        assert c.check_drain(ctx) == "pod plain-1 deleted 4 s in; all 3 utterances arrived"
    else:
        with pytest.raises(c.CheckFailed) as exc:
            c.check_drain(ctx)
        assert str(exc.value).startswith("pod plain-1 deleted 4 s into a ")
        assert str(exc.value).endswith(c.DRAIN_NEEDS)
    assert ("delete_now", "pod", "plain-1", RUN.namespace) in cluster.journal


# ---- the gateway --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gateway(server: ServerThread, keyed_server: ServerThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The real gateway (tests/gateway/conftest.py: kmock its API server, Service names resolved to
    loopback) routing the run's two ko-KR SpeechToTexts to the two recognizers."""
    with Stack(tmp_path_factory.mktemp("e2e-gateway")) as stack:
        stack.create(speech_to_text(m.PLAIN, m.LOCALE, server.port))
        stack.create(speech_to_text(m.KEYED, m.LOCALE, keyed_server.port, billing=m.BILLING,
                                    apiKeySecretRef={"name": m.KEY_SECRET, "key": m.KEY_FIELD}))
        stack.routes(m.LOCALE)
        yield stack


def gateway_cluster(gateway: Stack, *locales: str) -> RelayCluster:
    """The fake cluster with the run's SpeechToTexts (of ``locales``: ko-KR by default), a ready
    gateway pod, and its Service port-forwarded to ``gateway``."""
    cluster = RelayCluster({f"service/{RUN.gateway}": gateway})  # type: ignore[dict-item]
    locales = locales or (m.LOCALE, m.LOCALE)
    # one SpeechToText per locale, named in this order: a fourth locale has no name and is refused
    for name, locale in zip((m.PLAIN, m.KEYED, "other")[:len(locales)], locales, strict=True):
        stt = m.speech_to_text(RUN, name, keyed=name == m.KEYED)
        stt["spec"]["locale"] = locale
        cluster.put("speechtotext", stt)
    p = pod("gw-1", labels={"app.kubernetes.io/name": "speech-gateway", "app.kubernetes.io/instance": RUN.release})
    p["metadata"]["namespace"] = RUN.namespace
    cluster.put("pod", p)
    return cluster


def test_the_gateway_checks_pass_through_the_real_gateway(gateway: Stack, audio: Audio) -> None:
    cluster = gateway_cluster(gateway)
    ctx = context(cluster, audio, api_key=TEST_KEY)
    assert c.check_gateway(ctx) == "ko-KR: 3 utterances as in-process Vosk"
    assert c.check_gateway_unknown_locale(ctx) == "400: no model for language 'xx-YY'; this server has: ko-KR"
    assert ("port_forward", RUN.namespace, f"service/{RUN.gateway}", 5000) in cluster.journal


def test_the_gateway_checks_fail_when_a_locale_is_not_routed(gateway: Stack, audio: Audio) -> None:
    """A SpeechToText of ja-JP the gateway does not route: both checks say so."""
    ctx = context(gateway_cluster(gateway, m.LOCALE, m.LOCALE, "ja-JP"), audio, api_key=TEST_KEY)
    ctx.timeouts = c.Timeouts(operator=0.3, poll=0.1)
    for check in (c.check_gateway, c.check_gateway_unknown_locale):
        with pytest.raises(c.CheckFailed) as exc:
            check(ctx)
        assert str(exc.value).startswith(f"the gateway (Service {RUN.gateway}) routing every locale not within 0 s: "
                                         "/ready: HTTP 200, routes ['ko-KR']; the run's SpeechToTexts serve ['ja-JP', 'ko-KR']")


def test_the_gateway_check_fails_with_the_sdks_reason_on_a_wrong_key(gateway: Stack, audio: Audio) -> None:
    """The keyed recognizer serves ko-KR through the gateway (ready first, then by name): a wrong key fails the check."""
    ctx = context(gateway_cluster(gateway), audio, api_key="not-the-key")
    with pytest.raises(c.CheckFailed, match=rf"^Service {RUN.gateway} \(the gateway\), language ko-KR: the Speech SDK reported \['AuthenticationFailure: .*\(401\)"):
        c.check_gateway(ctx)
