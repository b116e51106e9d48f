"""The Grafana dashboard (speech-operator dashboard) in a real Prometheus scraping a real recognizer and a real
gateway (tests/gateway/test_alerts.py's): after some traffic, each panel of theirs, its template variables replaced
as Grafana does, parses and returns series with the labels its legend shows; its variables list the namespace and
locale. The operator's panels are run against the operator's own metrics in tests/operator/test_metrics.py.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import connect

from speech_operator import dashboard
from tests.prometheus import Prometheus, check_dashboard, dashboard_queries
from tests.recognizer.test_vosk_ws import closed_with

from .conftest import Recognizer, Stack
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


def test_each_panel_of_the_recognizers_and_the_gateway_shows_series(watched: tuple[Prometheus, Recognizer, Stack],  # noqa: F811
                                                                      speech_wav: Path) -> None:
    prometheus, recognizer, stack = watched
    audio = {"content": speech_wav.read_bytes(), "headers": {"Content-Type": "audio/wav"}, "timeout": 60}

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

    refused_twice(prometheus, traffic)  # each counter seen, then increased: a rate has two samples
    prometheus.scraped_after(time.time())
    panels = [q for q in dashboard_queries() if "speech_operator_" not in q[1]]
    assert len(panels) > 20
    chosen = {"namespace": RECOGNIZER_TARGET["namespace"], "locale": "ko-KR"}
    check_dashboard(prometheus, panels, chosen, EMPTY)
    check_dashboard(prometheus, panels, {"namespace": ".*", "locale": ".*"}, EMPTY)  # All
    variables: dict[str, Any] = {v["name"]: v for v in dashboard.dashboard()["templating"]["list"]}
    assert prometheus.label_values(variables["namespace"]["query"]) == [RECOGNIZER_TARGET["namespace"]]
    assert prometheus.label_values(variables["locale"]["query"].replace("$namespace", ".*")) == ["ko-KR"]
