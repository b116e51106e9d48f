"""The Grafana dashboard (speech-operator dashboard) in a real Prometheus scraping a real recognizer and a real
gateway (tests/gateway/test_alerts.py's): after some traffic, each panel of theirs, its template variables replaced
as Grafana does, parses and returns series with the labels its legend shows; its variables list the namespace and
locale. The operator's panels are run against the operator's own metrics in tests/operator/test_metrics.py.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from harness.speech import read_wav
from harness.usp import client_audio_frame, client_text_frame
from speech_operator import dashboard
from speech_recognizer.usp.frames import parse_text
from tests.prometheus import Prometheus, as_grafana_sends, check_dashboard, dashboard_queries
from tests.recognizer.test_gone_clients import wav_bytes
from tests.recognizer.test_vosk_ws import closed_with
from tests.support import scrape_metrics

from .conftest import OTHER_LOCALE, Recognizer, Stack, start_recognizer
from .test_alerts import DOWN, RECOGNIZER_TARGET, REST, STARTING, refused_twice, watched  # noqa: F401 (the fixture)

#: What this recognizer and gateway do not show, by ``panel title / legend`` (tests/prometheus.py dashboard_queries): those parse and are
#: empty. The recognizers' faults (a bug, a model that cannot be loaded: tests/ship/test_alerts.py runs their alert on
#: series of that metric and label); a recognizer refusing work with every decoder busy (its capacity panel shows the
#: same metric's too_many_connections); how long requests held for a waking locale were held (this gateway holds
#: none: max_held=0, which makes its capacity refusals).
EMPTY = {
    "Decoders in use / {{locale}} refused busy /s": "no recognition is refused busy here",
    "Recognizers: failed / {{locale}} {{reason}}": "no recognizer fault can be caused in a healthy server",
    "Requests held for waking locales / {{locale}} p95 held (s)": "this gateway holds no request (max_held=0)",
}


def wait_until_none_open(recognizer: Recognizer, budget: float = 10) -> None:
    deadline = time.monotonic() + budget
    while "\nspeech_connections 0.0\n" not in httpx.get(f"{recognizer.http}/metrics", timeout=5).text:
        assert time.monotonic() < deadline, "the recognizer keeps a WebSocket open"
        time.sleep(0.1)


def left_mid_decoding(recognizer: Recognizer, pcm: bytes) -> None:
    """A REST client that sends ``pcm`` (seconds of decoding) and leaves before its answer: its audio not decoded yet
    is dropped (``speech_audio_abandoned_seconds_total``)."""
    abandoned = ("speech_audio_abandoned_seconds_total", (("locale", "ko-KR"), ("route", "rest-conversation")))
    before = scrape_metrics(recognizer.http).get(abandoned, 0.0)
    body = wav_bytes(pcm)
    with socket.create_connection(("127.0.0.1", recognizer.port)) as sock:
        sock.sendall(f"POST {REST}?language=ko-KR HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: audio/wav\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        time.sleep(0.5)  # decoding
    deadline = time.monotonic() + 30
    while scrape_metrics(recognizer.http).get(abandoned, 0.0) <= before:
        assert time.monotonic() < deadline, "no audio was dropped undecoded"
        time.sleep(0.1)


def streamed(recognizer: Recognizer, pcm: bytes) -> None:
    """A /vosk stream to its eof and final result, and a Speech SDK turn (interactive: to its first phrase)."""
    with connect(f"{recognizer.ws}/vosk?language=ko-KR", max_size=1 << 20) as ws:
        for i in range(0, len(pcm), 8000):
            ws.send(pcm[i : i + 8000])
            ws.recv(timeout=30)
        ws.send('{"eof" : 1}')
        assert "text" in ws.recv(timeout=30)
    request = uuid.uuid4().hex
    source = {"type": "Stream", "samplerate": "16000", "bitspersample": "16", "channelcount": "1"}
    with connect(f"{recognizer.ws}/speech/recognition/interactive/cognitiveservices/v1?language=ko-KR",
                 subprotocols=["USP"]) as ws:  # type: ignore[list-item]
        ws.send(client_text_frame("speech.config", None, {"context": {"audio": {"source": source}}}))
        ws.send(client_text_frame("speech.context", request, {"phraseDetection": {"language": "ko-KR"}}))
        for i in range(0, len(pcm), 3200):
            ws.send(client_audio_frame(request, pcm[i : i + 3200]))
        ws.send(client_audio_frame(request, b""))
        while parse_text(ws.recv(timeout=30)).path != "turn.end":  # type: ignore[arg-type]
            pass


def test_each_panel_of_the_recognizers_and_the_gateway_shows_series(watched: tuple[Prometheus, Recognizer, Stack],  # noqa: F811
                                                                      speech_wav: Path) -> None:
    prometheus, recognizer, stack = watched
    audio = {"content": speech_wav.read_bytes(), "headers": {"Content-Type": "audio/wav"}, "timeout": 60}
    pcm = read_wav(speech_wav)[0]

    def traffic() -> None:
        ok = httpx.post(f"{stack.http}{REST}?language=ko-KR", **audio)  # relayed: a recognition, its audio and CPU
        assert ok.status_code == 200, ok.text
        bad = httpx.post(f"{recognizer.http}{REST}?language=ko-KR", content=b"not audio", headers=audio["headers"])
        assert bad.status_code == 400, bad.text  # bad_audio: the client's doing
        for locale in (DOWN, STARTING):  # backend_unavailable (a fault), too_many_held (capacity)
            assert httpx.post(f"{stack.http}{REST}?language={locale}", **audio).status_code == 503
        assert httpx.post(f"{stack.http}{REST}?language=xx-XX", **audio).status_code == 400  # unknown_locale
        with connect(f"{recognizer.ws}/vosk"), connect(f"{recognizer.ws}/vosk"):
            closed_with(f"{recognizer.ws}/vosk")  # too_many_connections: MaxConnections=2
        with connect(f"{stack.ws}/vosk?language=ko-KR"):  # a stream relayed (speech_gateway_streams{route})
            pass
        wait_until_none_open(recognizer)  # the gateway lets its connection go after the client's
        openai = httpx.post(f"{recognizer.http}/v1/audio/transcriptions", files={"file": ("a.wav", audio["content"], "audio/wav")},
                            data={"model": "vosk"}, timeout=60)
        assert openai.status_code == 200, openai.text  # the time of each route to its final result
        streamed(recognizer, pcm)
        left_mid_decoding(recognizer, pcm * 12)  # audio dropped undecoded
        wait_until_none_open(recognizer)

    refused_twice(prometheus, traffic)  # each counter seen, then increased: a rate has two samples
    prometheus.scraped_after(time.time())
    panels = [q for q in dashboard_queries() if "speech_operator_" not in q[1]]
    assert len(panels) > 20
    # ko-KR's recognizer, and the locales the gateway fails for (its failures are counted per locale)
    chosen = {"namespace": RECOGNIZER_TARGET["namespace"], "locale": f"ko-KR|{DOWN}|{STARTING}"}
    check_dashboard(prometheus, panels, chosen, EMPTY)
    check_dashboard(prometheus, panels, {"namespace": ".*", "locale": ".*"}, EMPTY)  # All
    latency = {legend: expr for name, expr, legend in panels if name.startswith("Time to the final result /")}
    assert len(latency) == 2, "the median and the 95th percentile"
    for legend, expr in latency.items():  # each route's time to its final result, as the panel shows it
        found = {r["metric"]["route"]: float(r["value"][1]) for r in prometheus.query(as_grafana_sends(expr, chosen))}
        assert set(found) == {"rest", "openai", "usp", "vosk"} and all(0 < s < 60 for s in found.values()), (legend, found)
    variables: dict[str, Any] = {v["name"]: v for v in dashboard.dashboard()["templating"]["list"]}
    assert prometheus.label_values(variables["namespace"]["query"]) == [RECOGNIZER_TARGET["namespace"]]
    assert prometheus.label_values(variables["locale"]["query"].replace("$namespace", ".*")) == ["ko-KR"]


@pytest.fixture(scope="module")
def rolling(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """Two pods of one SpeechToText's Service, one of each locale (its ``spec.locale`` changed, the rollout under
    way: a ko-KR pod and a ja-JP one), scraped by Prometheus as a ServiceMonitor's targets."""
    root = tmp_path_factory.mktemp("rolling")
    old, new = start_recognizer(root, "ko-KR"), start_recognizer(root, OTHER_LOCALE)
    prometheus = None
    try:
        old.wait_ready()
        new.wait_ready()
        pods = {"old": (old.port, {**RECOGNIZER_TARGET, "pod": "ko-kr-5d9c7-x2x4q"}),
                "new": (new.port, {**RECOGNIZER_TARGET, "pod": "ko-kr-7f6b8-p9w2z"})}
        prometheus = Prometheus(root / "prometheus", pods, groups=frozenset({"speech-recognizers"}))
        prometheus.wait_until("both pods scraped", lambda: len(prometheus.query("speech_locale_loaded == 1")) == 2)
        yield prometheus
    finally:
        if prometheus is not None:
            prometheus.stop()
        old.kill()
        new.kill()


def test_a_service_with_pods_of_two_locales_is_shown_by_locale(rolling: Prometheus) -> None:
    """Each recognizer's series gets its own pod's locale: a Service whose pods serve two locales (a SpeechToText whose
    locale changed, rolling out) shows each. Before: the locale was joined by Service, and Prometheus refused every
    such panel while the rollout ran (many-to-many matching)."""
    joined = [q for q in dashboard_queries() if "group_left" in q[1]]
    assert len(joined) > 5
    for _, expr, _ in joined:  # each parses and runs (a refusal fails prometheus.query with Prometheus' error)
        rolling.query(as_grafana_sends(expr, {"namespace": ".*", "locale": ".*"}))
    [decoders] = [expr for name, expr, _ in joined if name == "Decoders in use / {{locale}} decoders"]
    found = {r["metric"]["locale"] for r in rolling.query(as_grafana_sends(decoders, {"namespace": ".*", "locale": ".*"}))}
    assert found == {"ko-KR", OTHER_LOCALE}, found
