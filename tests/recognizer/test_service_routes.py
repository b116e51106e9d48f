"""Routes about the service: home, health, status, API docs, Prometheus metrics, usage records."""

from __future__ import annotations

import html
import json
import logging
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from openapi_spec_validator import validate
from prometheus_client.parser import text_string_to_metric_families
from starlette.routing import Route, WebSocketRoute
from websockets.sync.client import connect

from speech_recognizer import contract as c
from speech_recognizer import openapi, service_routes
from speech_recognizer.app import create_app
from speech_recognizer.models import ModelRegistry
from speech_recognizer.serving import SEND_BUFFER_BYTES

from ..conftest import TEST_KEY, make_settings
from ..support import ServerThread, read_wav

REST = "/speech/recognition/conversation/cognitiveservices/v1"


class App:
    """A server with its own metrics and usage records (sharing the session's loaded model)."""

    def __init__(self, srv: ServerThread, app: object, output: Path) -> None:
        self.srv, self.app, self.output = srv, app, output

    @property
    def http(self) -> str:
        return self.srv.http

    @property
    def ws(self) -> str:
        return self.srv.ws


@pytest.fixture(scope="module")
def fresh(registry: ModelRegistry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    tmp = tmp_path_factory.mktemp("fresh")
    app = create_app(make_settings(tmp, "Billing=https://billing.example"), registry)
    with ServerThread(app) as srv:
        yield App(srv, app, tmp / "output")


def recognize(base: str, wav: Path, **headers: str) -> httpx.Response:
    return httpx.post(f"{base}{REST}?language=ko-KR", content=wav.read_bytes(), headers={"Content-Type": "audio/wav", **headers}, timeout=60)


def seconds_of(wav: Path) -> float:
    pcm, rate, channels = read_wav(wav)
    return len(pcm) / (2 * rate * channels)


# ---- home, health, status --------------------------------------------------------


def test_home_page_names_the_locale_and_how_to_call_it(server) -> None:
    r = httpx.get(f"{server.http}/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    assert "ko-KR" in page and "loaded" in page
    assert f"{REST}?language=ko-KR" in page
    assert f"{server.ws}/vosk?language=ko-KR" in page
    assert f'SpeechConfig(host="{server.ws}")' in page
    assert "No key is required" in page



def test_home_page_links_the_reference_and_has_what_it_links_to(server) -> None:
    """The home page leads to the interactive reference; the reference's "how to call it" links land on its sections."""
    page = httpx.get(f"{server.http}/").text
    assert f'href="{c.ROUTE_SWAGGER}"' in page and "interactive API reference" in page
    spec = httpx.get(f"{server.http}/openapi.json").json()
    anchors = set(re.findall(r"\]\(/#([\w-]+)\)", json.dumps(spec)))
    assert anchors == {"speech-sdk", "rest", "vosk", "openai"}, anchors
    for anchor in anchors:
        assert f'id="{anchor}"' in page, anchor


def test_home_page_says_a_key_is_required(keyed_server) -> None:
    page = httpx.get(f"{keyed_server.http}/").text
    assert c.KEY_HEADER in page and TEST_KEY not in page


def test_ready_is_503_until_the_model_is_loaded(tmp_path: Path) -> None:
    unloaded = ModelRegistry(tmp_path / "models", ("ko",))  # language only: ready must still come
    assert unloaded.loaded == {}
    with ServerThread(create_app(make_settings(tmp_path, "Locale=ko"), unloaded)) as srv:
        first = httpx.get(f"{srv.http}/ready")
        assert first.status_code == 503, first.text
        assert first.json()["ready"] is False and first.json()["wanted"] == ["ko-KR"]
        assert httpx.get(f"{srv.http}/ContainerReadiness").status_code == 503
        assert httpx.get(f"{srv.http}/ContainerLiveness").status_code == 200, "alive while loading"
        deadline = time.monotonic() + 120
        while (r := httpx.get(f"{srv.http}/ready")).status_code != 200:
            assert r.status_code == 503
            assert time.monotonic() < deadline, "the model never loaded"
            time.sleep(0.2)
        assert r.json() == {"ready": True, "loaded": ["ko-KR"], "wanted": ["ko-KR"],
                            "warmup": {"done": True, "wanted": {}, "warmed": {}}}
        ready = httpx.get(f"{srv.http}/ContainerReadiness")
        assert ready.status_code == 200 and ready.text == "Ready"


def test_liveness_and_readiness(server) -> None:
    live = httpx.get(f"{server.http}/ContainerLiveness")
    assert live.status_code == 200 and live.text == "Healthy"
    ready = httpx.get(f"{server.http}/ContainerReadiness")
    assert ready.status_code == 200 and ready.text == "Ready"
    assert httpx.get(f"{server.http}/ready").json()["ready"] is True


def test_answers_a_client_never_reads_wait_in_a_bounded_send_buffer(server) -> None:
    """A client sending 300 ``GET /openapi.json`` at once (44 KB answered each) and reading none of the answers: they wait
    in the kernel's send buffer, kernel memory a cgroup-v2 limit charges to the pod, for every such connection (HTTP
    connections are not counted by ``MaxConnections``). Before, the kernel grew it to ``tcp_wmem``'s maximum while they
    flowed: 4 MiB each (bench/notes.md); now it is :data:`~speech_recognizer.serving.SEND_BUFFER_BYTES`, doubled."""
    limit = 2 * SEND_BUFFER_BYTES  # as the kernel doubles it
    with socket.create_connection(("127.0.0.1", server.port)) as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the client's side takes little of the answers
        client.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n" * 300)
        port = client.getsockname()[1]

        def sockets() -> list[dict[str, int]]:
            out = subprocess.run(["ss", "-tmnH", "state", "established", f"( sport = :{server.port} and dport = :{port} )"],
                                 capture_output=True, text=True, check=True).stdout
            return [{k: int(v) for k, v in (re.fullmatch(r"([a-z_]+)(\d+)", f).groups() for f in line.split("skmem:(")[1].split(")")[0].split(","))}
                    for line in out.splitlines() if "skmem:(" in line]

        deadline = time.monotonic() + 10
        while not (got := sockets()) or got[0]["w"] < limit / 2:  # answers wait: the pattern took
            assert time.monotonic() < deadline, got
            time.sleep(0.05)
        for _ in range(20):  # and stay within the buffer while the server has more to answer (before: 4 MiB within 2 s)
            time.sleep(0.1)
            got = sockets()
            assert got[0]["w"] <= 2 * limit and got[0]["tb"] <= limit, got


def test_status_without_a_key(server) -> None:
    r = httpx.get(f"{server.http}/status")
    assert r.status_code == 200 and r.json()["apiStatus"] == "Valid"


def test_status_needs_no_key_from_the_caller(keyed_server) -> None:
    """Azure's /status reports the container's own key; a kubelet probe sends no headers and must get 200."""
    for headers in ({}, {c.KEY_HEADER: "wrong"}, {c.KEY_HEADER: TEST_KEY}, {"Authorization": f"Bearer {TEST_KEY}"}):
        r = httpx.get(f"{keyed_server.http}/status", headers=headers)
        assert r.status_code == 200 and r.json()["apiStatus"] == "Valid", (headers, r.text)
        assert TEST_KEY not in r.text
    # the recognition routes still check the caller's key
    assert httpx.post(f"{keyed_server.http}{REST}?language=ko-KR", content=b"").status_code == 403


# ---- API docs ----------------------------------------------------------------------


def served(app: object) -> set[tuple[str, str, str]]:
    """(kind, method, path) of every route the app serves, as Starlette has them: ("http", "post", path)
    for each method of an HTTP route (HEAD aside), ("websocket", "get", path) for a WebSocket route."""
    out: set[tuple[str, str, str]] = set()
    for route in app.routes:  # type: ignore[attr-defined]
        if isinstance(route, WebSocketRoute):
            out.add(("websocket", "get", route.path))
        else:
            assert isinstance(route, Route), f"a kind of route this test does not know: {route!r}"
            out |= {("http", m.lower(), route.path) for m in route.methods or () if m != "HEAD"}
    return out


def documented_operation(spec: dict, method: str, path: str) -> dict | None:
    """The operation of ``spec`` that a request ``method path`` reaches (a templated path's parameters in their enum)."""
    path = re.sub(r"\{(\w+):\w+\}", r"{\1}", path)  # Starlette's {month:int} is OpenAPI's {month}
    for template, item in spec["paths"].items():
        pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
        match = re.fullmatch(pattern, path)
        if match is None or method not in item:
            continue
        operation = item[method]
        params = {p["name"]: p for p in operation.get("parameters", []) if p["in"] == "path"}
        for name, value in match.groupdict().items():
            assert name in params, f"{method.upper()} {template} does not describe its path parameter {name}"
            enum = params[name]["schema"].get("enum")
            if enum is not None and value not in enum and value != f"{{{name}}}":
                break
        else:
            return operation
    return None


def test_openapi_is_valid_and_describes_every_route(fresh: App) -> None:
    """Every route the app serves is in the document (WebSocket routes as a GET with x-websocket), and
    nothing else is; the document is valid OpenAPI."""
    r = httpx.get(f"{fresh.http}/openapi.json")
    assert r.status_code == 200
    spec = r.json()
    validate(spec)
    routes = served(fresh.app)
    assert any(kind == "websocket" for kind, _, _ in routes) and len(routes) > 10
    for kind, method, path in sorted(routes):
        operation = documented_operation(spec, method, path)
        assert operation is not None, f"{kind} {method.upper()} {path} is not in /openapi.json"
        assert operation.get("summary") and operation.get("tags") and operation.get("responses"), (method, path)
        if kind == "websocket":
            ws = operation.get("x-websocket")
            assert ws and ws["clientMessages"] and ws["serverMessages"] and ws["closeCodes"], path
            assert "101" in operation["responses"], path
    for template, item in spec["paths"].items():  # and nothing that is not served
        for method in item:
            assert any(m == method and documented_operation({"paths": {template: item}}, m, p) for _, m, p in routes), \
                f"{method.upper()} {template} is documented but not served"
    assert httpx.get(f"{fresh.http}/swagger/v1/swagger.json").json() == spec


def test_a_route_without_description_stops_the_app(registry: ModelRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The app cannot be built with a route the reference leaves out, nor one described for a method it does not serve."""
    async def handler(request: object) -> None: ...

    monkeypatch.setattr(service_routes, "routes", lambda original=service_routes.routes: [*original(), Route("/new", handler)])
    with pytest.raises(openapi.Undescribed, match="'/new' has no description"):
        create_app(make_settings(tmp_path), registry)
    with pytest.raises(ValueError, match="serves"):
        openapi.describe(Route("/new", handler, methods=["POST"]), get={"summary": "wrong method", "responses": {}})


def test_the_overview_names_every_way_to_recognize(fresh: App) -> None:
    """The reference's opening words (what Swagger UI shows first) and its recognition section name every route served
    for recognition (the OpenAI route was left out: "Three ways"); each one's link lands on the home page's example of it
    (:func:`test_home_page_links_the_reference_and_has_what_it_links_to`)."""
    spec = httpx.get(f"{fresh.http}/openapi.json").json()
    overview = spec["info"]["description"]
    served = {path for path, item in spec["paths"].items() for op in item.values()
              if openapi.RECOGNITION in op["tags"] and path not in c.NOT_SERVED_PATHS}
    assert served == {c.RECOGNITION_PATH_TEMPLATE, c.ROUTE_VOSK_WS, c.ROUTE_OPENAI_TRANSCRIPTIONS}, served
    for path in served:
        assert path in overview, path
    assert len(re.findall(r"\]\(/#", overview)) == 4 and "OpenAI" in spec["tags"][0]["description"]


def test_recognition_is_described_completely(fresh: App) -> None:
    """The REST body's content types (FLAC, WAV variants, Ogg/Opus, MP3, headerless PCM with rate and
    channels), its query parameters, its error shapes; the key as a security scheme. The OpenAI route's file
    is described as every container decoded."""
    spec = httpx.get(f"{fresh.http}/openapi.json").json()
    item = spec["paths"][c.RECOGNITION_PATH_TEMPLATE]
    post = item["post"]
    types = set(post["requestBody"]["content"])
    assert {"audio/flac", "audio/wav", "audio/x-wav", "audio/wav; codecs=audio/pcm; samplerate=16000",
            "audio/ogg; codecs=opus", "audio/mpeg", "audio/l16; rate=16000; channels=1"} <= types, types
    upload = spec["paths"][c.ROUTE_OPENAI_TRANSCRIPTIONS]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert all(f.name in upload["schema"]["properties"]["file"]["description"] for f in c.AUDIO_FORMATS), upload
    params = {p["name"] for p in post["parameters"]}
    assert {"mode", "language", "format", "profanity", "wordLevelTimestamps", "wordLevelConfidence"} <= params
    for status in ("400", "401", "403", "413", "415", "503"):
        schema = post["responses"][status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/Error"}, status
    assert post["responses"]["200"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Recognition"}
    assert {"subscriptionKey", "bearer"} <= set(spec["components"]["securitySchemes"])
    sdk = item["get"]["x-websocket"]
    assert {"speech.config", "speech.context", "audio"} <= set(sdk["clientMessages"])
    assert {"turn.start", "speech.hypothesis", "speech.phrase", "turn.end"} <= set(sdk["serverMessages"])
    home = spec["paths"]["/"]["get"]
    assert home["x-websocket"] == spec["paths"]["/vosk"]["get"]["x-websocket"], "/ also speaks the vosk protocol"


def test_a_plain_get_on_a_websocket_route_is_426(fresh: App) -> None:
    for path in ("/vosk", *c.RECOGNITION_PATHS):
        r = httpx.get(f"{fresh.http}{path}")
        assert r.status_code == 426 and r.headers["upgrade"] == "websocket", path
        assert "WebSocket" in r.json()["error"]["message"] and r.json()["error"]["code"] == "UpgradeRequired"


def test_swagger_page_is_served_whole_from_here(fresh: App) -> None:
    """Swagger UI from the package, no other host: every script and style the page names is served here;
    without JavaScript the page still lists every route."""
    r = httpx.get(f"{fresh.http}/swagger")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert httpx.get(f"{fresh.http}/swagger/index.html").text == r.text
    linked = re.findall(r'(?:src|href)="([^"]+)"', r.text)
    assert linked and not [u for u in linked if "//" in u], f"the page names another host: {linked}"
    for url in linked:
        got = httpx.get(f"{fresh.http}{url}")
        assert got.status_code == 200 and len(got.content) > 100, url
    assert "SwaggerUIBundle" in httpx.get(f"{fresh.http}/swagger/ui/swagger-ui-bundle.js").text
    assert httpx.get(f"{fresh.http}/swagger/ui/index.html").status_code == 404, "only the files the page needs"
    noscript = r.text[r.text.index("<noscript>"):r.text.index("</noscript>")]
    for path in httpx.get(f"{fresh.http}/openapi.json").json()["paths"]:
        assert html.escape(path) in noscript, path


# ---- metrics --------------------------------------------------------------------


def scrape(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = httpx.get(f"{base}/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_metrics_move_after_a_recognition(fresh: App, speech_wav: Path) -> None:
    rest_200 = ("speech_requests_total", (("route", "rest-conversation"), ("status", "200")))
    audio = ("speech_audio_seconds_total", (("locale", "ko-KR"), ("route", "rest-conversation")))
    decodes = ("speech_decoder_cpu_seconds_count", (("locale", "ko-KR"),))
    decode_sum = ("speech_decoder_cpu_seconds_sum", (("locale", "ko-KR"),))
    before = scrape(fresh.http)
    assert recognize(fresh.http, speech_wav).status_code == 200
    after = scrape(fresh.http)
    assert after[rest_200] == before.get(rest_200, 0) + 1
    assert after[audio] - before.get(audio, 0) == pytest.approx(seconds_of(speech_wav), abs=0.01)
    assert after[decodes] == before.get(decodes, 0) + 1
    assert after[decode_sum] > before.get(decode_sum, 0)
    assert after[("speech_active_sessions", ())] == 0


def test_warm_pool_metrics(fresh: App, speech_wav: Path) -> None:
    """/metrics shows the warm pool: each recognition started on a reused recognizer or built one."""
    started = [("speech_recognizers_reused_total", ()), ("speech_recognizers_built_total", ())]
    before = scrape(fresh.http)
    assert recognize(fresh.http, speech_wav).status_code == 200
    after = scrape(fresh.http)
    assert sum(after[k] for k in started) == sum(before[k] for k in started) + 1
    for name in ("speech_recognizers_retired_total", "speech_recognizers_replaced_total", "speech_recognizer_handovers_total",
                 "speech_recognizers_idle", "speech_heap_trims_total", "speech_heap_trim_seconds_total"):
        assert (name, ()) in after, name


def test_active_sessions_gauge(fresh: App, speech_wav: Path) -> None:
    pcm, rate, _ = read_wav(speech_wav)
    with connect(f"{fresh.ws}/vosk?language=ko-KR") as ws:
        ws.send(pcm[:3200])
        ws.recv()
        assert scrape(fresh.http)[("speech_active_sessions", ())] == 1
        ws.send('{"eof" : 1}')
        ws.recv()
    deadline = time.monotonic() + 10
    while scrape(fresh.http)[("speech_active_sessions", ())] != 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    vosk_ok = ("speech_requests_total", (("route", "vosk"), ("status", "200")))
    assert scrape(fresh.http)[vosk_ok] >= 1


def until_ready(base: str, budget: float = 30) -> None:
    """The models loaded and the decoders fitted to them (app.fit_decoders, before ``/ready`` answers 200)."""
    deadline = time.monotonic() + budget
    while httpx.get(f"{base}{c.ROUTE_READY}", timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "the server did not get ready"
        time.sleep(0.05)


@pytest.mark.parametrize("given", [("DecoderMaxCount=3",), ()], ids=["given", "default"])
def test_decoder_capacity_is_what_sessions_reports(registry: ModelRegistry, tmp_path: Path, given: tuple[str, ...]) -> None:
    """``speech_decoders_max`` is ``/sessions``' ``decoders``, given or the default made once the models are loaded
    (the admission's limit, lowered for the memory they take: tests/recognizer/test_decoder_memory.py); the locale
    served is in ``speech_locale_loaded`` before any recognition, what the dashboard gives a pod's other metrics."""
    app = create_app(make_settings(tmp_path, *given), registry)
    with ServerThread(app) as srv:
        until_ready(srv.http)
        decoders = httpx.get(f"{srv.http}{c.ROUTE_SESSIONS}", timeout=10).json()["decoders"]
        metrics = scrape(srv.http)
        assert metrics[("speech_decoders_max", ())] == decoders == (3 if given else app.state.engine.decoder_max_count)
        assert metrics[("speech_locale_loaded", (("locale", "ko-KR"),))] == 1
        assert not [k for k in metrics if k[0].startswith("speech_decoder_cpu_seconds")], "no recognition yet"


def test_a_locale_whose_model_cannot_be_loaded_is_exported_as_0(tmp_path: Path) -> None:
    """A wanted locale is in ``speech_locale_loaded`` from the start; 0 until its model is loaded, 0 for good when it
    cannot be (a folder vosk refuses), so the dashboard still names the pod's locale."""
    broken = tmp_path / "models" / "ko-KP" / "conf"
    broken.mkdir(parents=True)
    (broken / "model.conf").write_text("--not-a-model\n")
    app = create_app(make_settings(tmp_path, "Locale=ko-KP"), ModelRegistry(tmp_path / "models", ("ko-KP",)))
    with ServerThread(app) as srv:
        deadline = time.monotonic() + 30
        while "ko-KP" not in app.state.registry.errors:
            assert time.monotonic() < deadline, "the load did not fail"
            time.sleep(0.05)
        assert scrape(srv.http)[("speech_locale_loaded", (("locale", "ko-KP"),))] == 0


def test_sessions_route_reports_live_sessions_capacity_and_idle_time(registry: ModelRegistry, tmp_path: Path, speech_wav: Path) -> None:
    """What the operator's autoscaling reads: sessions now, clients connected and their cap, decoders in all, seconds
    without work; the answer has the fields its description in the reference lists, all of them.
    (A client connected before its first audio: tests/recognizer/test_open_connections.py.)"""
    app = create_app(make_settings(tmp_path, "DecoderMaxCount=4", "MaxConnections=37"), registry)
    pcm, _, _ = read_wav(speech_wav)
    with ServerThread(app) as srv:
        def sessions() -> dict:
            return httpx.get(f"{srv.http}{c.ROUTE_SESSIONS}", timeout=10).json()

        idle = sessions()
        assert set(idle) == set(service_routes.SESSIONS_SCHEMA["properties"]) == set(service_routes.SESSIONS_SCHEMA["required"])
        assert (idle["sessions"], idle["connections"], idle["decoders"], idle["admitted"], idle["draining"]) == (0, 0, 4, 0, False)
        assert idle["maxConnections"] == 37, "the cap the operator's autoscaling keeps the connections below"
        time.sleep(0.3)
        assert sessions()["idleSeconds"] >= idle["idleSeconds"] + 0.2, "idle time grows from the start"
        with connect(f"{srv.ws}/vosk?language=ko-KR") as ws:
            ws.send(pcm[:3200])
            ws.recv()
            busy = sessions()
            assert (busy["sessions"], busy["connections"], busy["idleSeconds"], busy["admitted"]) == (1, 1, 0, 1)
            ws.send('{"eof" : 1}')
            ws.recv()
        deadline = time.monotonic() + 10
        while (after := sessions())["sessions"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert after["admitted"] == 1 and after["idleSeconds"] < 2, "idle again, counted from the session's end"
        assert recognize(srv.http, speech_wav).status_code == 200
        again = sessions()
        assert (again["admitted"], again["connections"]) == (2, 0), "a REST recognition is a session too, not a connection"


# ---- usage records ----------------------------------------------------------------


def meters(summary: dict) -> dict[str, float]:
    assert set(summary) == {"apiType", "serviceName", "meters"}
    assert all(set(m) == {"name", "quantity"} for m in summary["meters"])
    return {m["name"]: m["quantity"] for m in summary["meters"]}


def test_usage_record_per_recognition_and_azure_summary(fresh: App, speech_wav: Path, utterances_wav: Path) -> None:
    assert recognize(fresh.http, speech_wav).status_code == 200
    assert recognize(fresh.http, utterances_wav).status_code == 200
    files = sorted((fresh.output / "usage").glob("*.jsonl"))
    now = datetime.now(UTC)
    assert [f.name for f in files] == [f"{now:%Y-%m}.jsonl"]
    lines = [json.loads(line) for line in files[0].read_text().splitlines()]
    rest = [line for line in lines if line["route"] == "rest-conversation"]
    assert rest[-2]["audioSeconds"] == pytest.approx(seconds_of(speech_wav), abs=0.002)
    assert rest[-1]["audioSeconds"] == pytest.approx(seconds_of(utterances_wav), abs=0.002)
    assert rest[-1]["phrases"] == 3
    assert all(line["locale"] == "ko-KR" and line["billing"] == "https://billing.example" for line in lines)

    total = sum(line["audioSeconds"] for line in lines)
    overall = httpx.get(f"{fresh.http}/records/usage-logs/").json()
    got = meters(overall)
    assert got["speech-to-text.requests"] == len(lines)
    assert got["speech-to-text.audio-seconds"] == pytest.approx(total, abs=0.001)
    assert got["speech-to-text.audio-seconds.ko-KR"] == pytest.approx(total, abs=0.001)
    assert httpx.get(f"{fresh.http}/records/usage-logs").json() == overall

    month = httpx.get(f"{fresh.http}/records/usage-logs/{now.month}/{now.year}").json()
    assert meters(month) == got
    other = meters(httpx.get(f"{fresh.http}/records/usage-logs/1/2001").json())
    assert other["speech-to-text.requests"] == 0 and other["speech-to-text.audio-seconds"] == 0
    assert httpx.get(f"{fresh.http}/records/usage-logs/13/2024").status_code == 400


def test_unwritable_output_loses_nothing(registry: ModelRegistry, tmp_path: Path, speech_wav: Path,
                                        caplog: pytest.LogCaptureFixture) -> None:
    """Records that cannot be written are summed in memory; a ``Mounts:Output`` given that cannot be written is one
    WARNING at start-up, not one at the first recognition (tests/operator/test_pods_run.py: the default, not given,
    says it at INFO)."""
    blocker = tmp_path / "output"
    blocker.write_text("a file where the output folder should be")  # unwritable even for root
    settings = make_settings(tmp_path)
    assert settings.output_dir == blocker
    with caplog.at_level(logging.INFO, logger="speech_recognizer"), ServerThread(create_app(settings, registry)) as srv:
        said = [(r.levelname, r.getMessage()) for r in caplog.records if "usage records" in r.getMessage()]
        assert said == [("WARNING", f"usage records kept in memory only: cannot write {blocker / 'usage'}: "
                                    f"[Errno 20] Not a directory: '{blocker / 'usage'}'")], said
        for _ in range(2):
            r = recognize(srv.http, speech_wav)
            assert r.status_code == 200 and r.json()["RecognitionStatus"] == "Success"
        got = meters(httpx.get(f"{srv.http}/records/usage-logs/").json())
    assert [r.getMessage() for r in caplog.records if "usage records" in r.getMessage()] == [said[0][1]]
    assert got["speech-to-text.requests"] == 2
    assert got["speech-to-text.audio-seconds"] == pytest.approx(2 * seconds_of(speech_wav), abs=0.002)


def test_usage_survives_a_malformed_line(registry: ModelRegistry, tmp_path: Path, speech_wav: Path) -> None:
    """A line cut short (a crash mid-write) does not hide the rest of the month."""
    usage = tmp_path / "output" / "usage"
    usage.mkdir(parents=True)
    now = datetime.now(UTC)
    good = {"time": now.isoformat(), "route": "vosk", "locale": "ko-KR", "audioSeconds": 1.5, "phrases": 1}
    (usage / f"{now:%Y-%m}.jsonl").write_text(json.dumps(good) + "\n" + '{"time": "20')
    with ServerThread(create_app(make_settings(tmp_path), registry)) as srv:
        assert recognize(srv.http, speech_wav).status_code == 200
        got = meters(httpx.get(f"{srv.http}/records/usage-logs/").json())
    assert got["speech-to-text.requests"] == 2
    assert got["speech-to-text.audio-seconds"] == pytest.approx(1.5 + seconds_of(speech_wav), abs=0.002)
