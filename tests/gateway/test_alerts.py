"""The alerts (speech-operator alerts) in a real Prometheus, scraping a real recognizer and a real gateway:
what a platform team's Prometheus does with them. Each alert whose failure can be caused here goes
pending when it happens (their ``for`` is minutes: pending is the rule's expression holding on the
real metrics), and nothing is pending before. The fault alert of the recognizers (a bug, a model
that cannot be loaded) cannot be caused in a healthy server: tests/ship/test_alerts.py shows it on
series of the same metric and labels, which this test shows real.

What stands in for a cluster: Prometheus' static targets carry the ``namespace``, ``service`` and
``pod`` labels a ServiceMonitor's targets get in a cluster (the chart's ``serviceMonitor.enabled``);
the gateway's Services and SpeechToTexts are as in tests/gateway/conftest.py.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from harness.loopback import free_port
from speech_operator.gateway import GatewayConfig
from tests.prometheus import Prometheus
from tests.recognizer.test_http_connection_cap import PARTIAL
from tests.recognizer.test_vosk_ws import closed_with

from .conftest import OTHER_LOCALE, Recognizer, Stack, speech_to_text, start_recognizer

REST = "/speech/recognition/conversation/cognitiveservices/v1"
#: The labels a ServiceMonitor gives each target in a cluster.
RECOGNIZER_TARGET = {"namespace": "speech", "service": "ko-kr", "pod": "ko-kr-5d9c7-x2x4q"}
GATEWAY_TARGET = {"namespace": "speech-operator", "service": "speech-operator-gateway", "pod": "speech-operator-gateway-6b8f4-k2m7p"}
#: A locale whose pods are starting (held by the gateway: it may hold none here), and one whose recognizer is down.
STARTING, DOWN = "de-DE", OTHER_LOCALE
#: The recognizer's Http:MaxConnections: Prometheus' kept-alive scrape connection and two idle ones fill it.
HTTP_CAP = 3


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Prometheus, Recognizer, Stack]]:
    """A recognizer that keeps at most 2 WebSockets and :data:`HTTP_CAP` plain HTTP connections open (a head may take
    600 s: the stalled ones stay busy the test's length) and has 2 decoders (a stream waits for audio 600 s: those
    of the two WebSockets stay held); a gateway that holds no request for a starting locale
    and knows one locale whose recognizer does not answer; Prometheus scraping both."""
    root = tmp_path_factory.mktemp("alerts")
    recognizer = start_recognizer(root, "ko-KR", "MaxConnections=2", f"Http:MaxConnections={HTTP_CAP}",
                                  "Http:HeaderTimeoutSeconds=600", "DecoderMaxCount=2", "AudioIdleSeconds=600")
    prometheus = None
    try:
        recognizer.wait_ready()
        with Stack(root, GatewayConfig(host="127.0.0.1", port=0, max_held=0)) as stack:
            stack.create(speech_to_text("ko-kr", "ko-KR", recognizer.port))
            stack.create(speech_to_text(DOWN.lower(), DOWN, free_port()))  # nothing listens there
            stack.create(speech_to_text(STARTING.lower(), STARTING, free_port()), ready=0)
            for locale in ("ko-KR", DOWN, STARTING):
                stack.routes(locale)
            prometheus = Prometheus(root / "prometheus", {"recognizers": (recognizer.port, RECOGNIZER_TARGET),
                                                          "gateway": (stack.port, GATEWAY_TARGET)},
                                    groups=frozenset({"speech-recognizers", "speech-gateway"}))  # no operator runs here
            prometheus.wait_until("both targets scraped", lambda: len([r for r in prometheus.get("/api/v1/query", query="up")["result"]
                                                                       if r["value"][1] == "1"]) == 2)
            yield prometheus, recognizer, stack
    finally:
        if prometheus is not None:
            prometheus.stop()
        recognizer.kill()


def refused_twice(prometheus: Prometheus, cause: Any) -> None:
    """``cause`` a failure, then again once Prometheus has scraped its counter: a rate sees only increases of a
    series it has seen (a counter's first sample is not one)."""
    cause()
    prometheus.scraped_after(time.time())
    cause()


def kept_alive(recognizer: Recognizer) -> socket.socket:
    """A plain HTTP connection answered once and left open, idle (an Ingress' keep-alive pool)."""
    sock = socket.create_connection(("127.0.0.1", recognizer.port), timeout=10)
    sock.sendall(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert sock.recv(65536).startswith(b"HTTP/1.1 200"), "answered, kept alive"
    return sock


def stalled(recognizer: Recognizer) -> socket.socket:
    """A plain HTTP connection whose request head has begun and stalls: busy."""
    sock = socket.create_connection(("127.0.0.1", recognizer.port), timeout=10)
    sock.sendall(PARTIAL)
    return sock


def test_alerts_go_pending_on_real_failures_and_not_before(watched: tuple[Prometheus, Recognizer, Stack], speech_wav: Path) -> None:
    prometheus, recognizer, stack = watched
    ok = httpx.post(f"{stack.http}{REST}?language=ko-KR", content=speech_wav.read_bytes(),
                    headers={"Content-Type": "audio/wav"}, timeout=60)
    assert ok.status_code == 200, ok.text
    prometheus.wait_until("every group evaluated", lambda: prometheus.evaluated() == len(prometheus.groups))
    with ExitStack() as idle:  # with Prometheus' own, Http:MaxConnections open, all but the scrape's idle: no cap reached
        for _ in range(HTTP_CAP - 1):
            idle.enter_context(kept_alive(recognizer))
        time.sleep(3)  # a few more scrapes and evaluations
        assert prometheus.alerts() == [], "an alert before any failure"

    with connect(f"{recognizer.ws}/vosk") as one, connect(f"{recognizer.ws}/vosk") as two, ExitStack() as busy:  # the recognizer's caps, held
        for stream in (one, two):  # each stream's first audio answered: it holds one of the 2 decoders
            stream.send(bytes(3200))
            stream.recv(timeout=30)
        for _ in range(HTTP_CAP):  # the idle scrape connection gives way, the scrapes are answered past the cap
            busy.enter_context(stalled(recognizer))
        refused_twice(prometheus, lambda: closed_with(f"{recognizer.ws}/vosk"))  # too_many_connections: 1013
        for locale, status in ((DOWN, 503), (STARTING, 503)):  # backend_unavailable; too_many_held
            def ask(locale: str = locale, status: int = status) -> None:
                answer = httpx.post(f"{stack.http}{REST}?language={locale}", content=speech_wav.read_bytes(),
                                    headers={"Content-Type": "audio/wav"}, timeout=60)
                assert answer.status_code == status, answer.text
            refused_twice(prometheus, ask)
        expected = {
            "SpeechRecognizerAtCapacity": {k: RECOGNIZER_TARGET[k] for k in ("namespace", "service")},
            "SpeechRecognizerDecodersNearCapacity": {k: RECOGNIZER_TARGET[k] for k in ("namespace", "service")},
            "SpeechRecognizerConnectionsNearCap": RECOGNIZER_TARGET,
            "SpeechRecognizerHttpConnectionsNearCap": RECOGNIZER_TARGET,
            "SpeechGatewayFailing": {**{k: GATEWAY_TARGET[k] for k in ("namespace", "service")}, "locale": DOWN,
                                     "reason": "backend_unavailable"},
            "SpeechGatewayAtCapacity": {**{k: GATEWAY_TARGET[k] for k in ("namespace", "service")}, "locale": STARTING},
        }

        def pending() -> dict[str, dict[str, Any]] | None:
            found = {a["labels"]["alertname"]: a for a in prometheus.alerts()}
            return found if set(found) == set(expected) else None

        found = prometheus.wait_until(f"{sorted(expected)} pending", pending)
    for name, labels in expected.items():
        alert = found[name]
        assert alert["state"] == "pending", alert  # their `for` is minutes
        assert alert["labels"] == {"alertname": name, "severity": "warning", **labels}
        where = f"{labels['namespace']}/{labels['service']}"
        assert where in alert["annotations"]["summary"], alert["annotations"]
        assert labels.get("locale", where) in alert["annotations"]["summary"], alert["annotations"]  # the gateway's: its locale
        assert "{{" not in alert["annotations"]["summary"] + alert["annotations"]["description"]
