"""Routes about the service itself: home page, health, metrics, usage records, API docs."""

from __future__ import annotations

import asyncio
import html
import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from . import __version__
from . import contract as c
from .errors import error_response

log = logging.getLogger(__name__)


def _state(request: Request) -> Any:
    return request.app.state


async def home(request: Request) -> HTMLResponse:
    """What runs, which locales are loaded, and how to call it."""
    state = _state(request)
    loaded = sorted(state.registry.loaded)
    available = sorted(state.registry.sources)
    rows = "".join(
        f"<tr><td>{html.escape(loc)}</td><td>{'loaded' if loc in loaded else 'available'}</td>"
        f"<td><code>{html.escape(str(state.registry.sources[loc]))}</code></td></tr>"
        for loc in available
    )
    example = loaded[0] if loaded else (available[0] if available else "ko-KR")
    key_note = (
        "This server requires a key: send it as <code>Ocp-Apim-Subscription-Key</code>."
        if state.settings.api_key
        else "No key is required."
    )
    base = str(request.base_url).rstrip("/")
    ws_base = base.replace("http", "ws", 1)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>speech-recognizer</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}code,pre{{background:#f4f4f4}}td{{padding:0 1em}}</style>
</head><body><h1>speech-recognizer {__version__}</h1>
<p>Open speech to text on Vosk, compatible with Azure's speech-to-text container.
Ready: <b>{'yes' if is_ready(state) else 'loading' if not state.registry.ready else 'warming up'}</b>. Decoders: {state.engine.active} busy of {state.engine.decoder_max_count}. {key_note}</p>
<h2>Locales</h2><table><tr><th>locale</th><th>state</th><th>model</th></tr>{rows}</table>
<h2>Call it</h2>
<h3>Azure Speech SDK (Python)</h3>
<pre>speech_config = speechsdk.SpeechConfig(host="{html.escape(ws_base)}")
speech_config.speech_recognition_language = "{html.escape(example)}"
recognizer = speechsdk.SpeechRecognizer(speech_config, audio_config=speechsdk.audio.AudioConfig(filename="audio.wav"))
print(recognizer.recognize_once().text)</pre>
<h3>REST (short audio, up to {state.settings.max_audio_seconds:g} s)</h3>
<pre>curl -s -X POST -H "Content-Type: audio/wav" --data-binary @audio.wav \\
  "{html.escape(base)}/speech/recognition/conversation/cognitiveservices/v1?language={html.escape(example)}&amp;format=detailed"</pre>
<h3>vosk-server WebSocket</h3><pre>{html.escape(ws_base)}/vosk?language={html.escape(example)}</pre>
<p><a href="{c.ROUTE_SWAGGER}">API reference</a> · <a href="{c.ROUTE_READY}">/ready</a> ·
<a href="{c.ROUTE_STATUS}">/status</a> · <a href="{c.ROUTE_METRICS}">/metrics</a> ·
<a href="{c.ROUTE_USAGE_LOGS}">usage records</a></p></body></html>"""
    return HTMLResponse(page)


def is_ready(state: Any) -> bool:
    """Every wanted model is loaded, the start-up warm-up is over, and the server is not draining."""
    return bool(state.registry.ready and state.warmup.done and not state.drain.draining)


async def ready(request: Request) -> Response:
    """200 once every wanted model is loaded and warmed, else 503 (also while draining: new work goes elsewhere)."""
    state = _state(request)
    registry = state.registry
    ok = is_ready(state)
    body = {"ready": ok, "loaded": sorted(registry.loaded), "wanted": list(registry.wanted), "warmup": state.warmup.as_json()}
    if state.drain.draining:
        body["draining"] = True
    if registry.errors:
        body["errors"] = registry.errors
    return JSONResponse(body, 200 if ok else 503)


async def pre_stop(request: Request) -> Response:
    """The pod's preStop hook: answers after ``PRE_STOP_SECONDS``, serving new work meanwhile.

    The kubelet sends SIGTERM when the hook returns; the pause gives the Service's endpoints
    time to drop the pod first, so that new streams stop arriving before the drain refuses
    them. An HTTP hook, because the image has no shell (and the ``sleep`` hook needs
    Kubernetes 1.30).
    """
    log.info("preStop hook: serving %g s more while the endpoints drop this pod; SIGTERM then starts the drain",
             c.PRE_STOP_SECONDS)
    await asyncio.sleep(c.PRE_STOP_SECONDS)
    return PlainTextResponse("ok")


async def status(request: Request) -> Response:
    """Azure's ``/status``: whether this container's own key is usable, without running a recognition.

    It asks nothing of the caller, as Azure's container does not: a kubelet's probe
    (no headers) gets the same answer as a client sending a key, so a pod started with
    ``ApiKey`` is not restarted by its own liveness probe. The recognition routes are
    the ones that check a caller's key.
    """
    settings = _state(request).settings
    message = "The container's API key is set; recognition requests must carry it." if settings.api_key else "No key is required."
    return JSONResponse({"status": "valid", "apiStatus": "Valid", "apiStatusMessage": message})


async def liveness(request: Request) -> Response:
    return PlainTextResponse("Healthy")


async def readiness(request: Request) -> Response:
    state = _state(request)
    if is_ready(state):
        return PlainTextResponse("Ready")
    why = "Draining" if state.drain.draining else "Loading" if not state.registry.ready else "Warming up"
    return PlainTextResponse(why, 503)


async def metrics(request: Request) -> Response:
    state = _state(request)
    state.metrics.active_sessions.set(state.engine.active)
    return Response(state.metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")


async def usage_logs(request: Request) -> Response:
    """Azure's usage summary, overall or for ``/{MONTH}/{YEAR}``."""
    month = request.path_params.get("month")
    year = request.path_params.get("year")
    if month is not None and not 1 <= month <= 12:
        return error_response(400, f"month {month} is not 1..12")
    return JSONResponse(_state(request).usage.summary(month, year))


def openapi_spec() -> dict[str, Any]:
    """The OpenAPI description of every route."""
    recognize_params = [
        {"name": "language", "in": "query", "schema": {"type": "string"}, "example": "ko-KR"},
        {"name": "format", "in": "query", "schema": {"type": "string", "enum": ["simple", "detailed"]}},
        {"name": "profanity", "in": "query", "schema": {"type": "string", "enum": ["masked", "removed", "raw"]}},
        {"name": c.KEY_HEADER, "in": "header", "schema": {"type": "string"}},
    ]
    paths: dict[str, Any] = {}
    for path in c.RECOGNITION_PATHS:
        paths[path] = {
            "post": {
                "summary": "Recognize short audio (WAV PCM any rate/channels, Ogg/Opus, FLAC); also the Speech SDK WebSocket (GET upgrade)",
                "parameters": recognize_params,
                "requestBody": {"content": {t: {"schema": {"type": "string", "format": "binary"}} for t in ("audio/wav", "audio/ogg; codecs=opus")}},
                "responses": {
                    "200": {"description": "RecognitionStatus, DisplayText, Offset, Duration (100-ns ticks); NBest when detailed"},
                    "400": {"description": "bad audio or language"},
                    "401": {"description": "wrong key"},
                    "403": {"description": "missing key"},
                    "413": {"description": "audio over MaxAudioSeconds"},
                    "415": {"description": "unsupported encoding"},
                    "503": {"description": "every decoder busy (Retry-After) or model loading"},
                },
            }
        }
    simple = {"get": {"responses": {"200": {"description": "OK"}}}}
    paths[c.ROUTE_HOME] = {"get": {"summary": "Home page", "responses": {"200": {"description": "HTML"}}}}
    paths[c.ROUTE_READY] = {"get": {"summary": "200 when models are loaded and warmed, else 503 (also while draining after SIGTERM)", "responses": {"200": {"description": "ready"}, "503": {"description": "loading, warming up or draining"}}}}
    paths[c.ROUTE_PRE_STOP] = {"get": {"summary": f"The pod's preStop hook: answers after {c.PRE_STOP_SECONDS} s (time for the endpoints to drop the pod)", "responses": {"200": {"description": "ok"}}}}
    paths[c.ROUTE_STATUS] = {"get": {"summary": "Whether the container's own key is valid, without recognizing; needs no key from the caller (liveness probes)", "responses": {"200": {"description": "valid"}}}}
    paths[c.ROUTE_CONTAINER_LIVENESS] = simple
    paths[c.ROUTE_CONTAINER_READINESS] = simple
    paths[c.ROUTE_METRICS] = {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text exposition"}}}}
    paths[c.ROUTE_USAGE_LOGS] = {"get": {"summary": "Usage summary {apiType, serviceName, meters}", "responses": {"200": {"description": "OK"}}}}
    month_year = [
        {"name": "month", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1, "maximum": 12}},
        {"name": "year", "in": "path", "required": True, "schema": {"type": "integer"}},
    ]
    paths[c.ROUTE_USAGE_LOGS + "{month}/{year}"] = {
        "get": {
            "summary": "Usage summary for one month",
            "parameters": month_year,
            "responses": {"200": {"description": "OK"}, "400": {"description": "month not 1..12"}},
        }
    }
    paths[c.ROUTE_VOSK_WS] = {"get": {"summary": "vosk-server WebSocket protocol (upgrade)", "responses": {"101": {"description": "switching protocols"}}}}
    docs = {"get": {"summary": "This API reference (HTML)", "responses": {"200": {"description": "HTML"}}}}
    spec_op = {"get": {"summary": "This OpenAPI document", "responses": {"200": {"description": "JSON"}}}}
    paths[c.ROUTE_OPENAPI] = spec_op
    paths[c.ROUTE_SWAGGER] = docs
    paths[c.ROUTE_SWAGGER + "/index.html"] = docs
    paths[c.ROUTE_SWAGGER + "/v1/swagger.json"] = spec_op
    return {"openapi": "3.0.3", "info": {"title": "speech-recognizer", "version": __version__}, "paths": paths}


async def openapi(request: Request) -> Response:
    return JSONResponse(openapi_spec())


async def swagger(request: Request) -> HTMLResponse:
    """A self-contained API reference page (no CDN, works disconnected)."""
    spec = openapi_spec()
    items = []
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            codes = ", ".join(f"{k} {v['description']}" for k, v in op.get("responses", {}).items())
            items.append(
                f"<li><code>{method.upper()} {html.escape(path)}</code> — {html.escape(op.get('summary', ''))}"
                f"<br><small>{html.escape(codes)}</small></li>"
            )
    return HTMLResponse(
        "<!doctype html><html><head><meta charset='utf-8'><title>speech-recognizer API</title></head><body>"
        f"<h1>speech-recognizer API {__version__}</h1><p>OpenAPI document: <a href='{c.ROUTE_OPENAPI}'>{c.ROUTE_OPENAPI}</a></p>"
        f"<ul>{''.join(items)}</ul></body></html>"
    )


def routes() -> list[Route]:
    return [
        Route(c.ROUTE_HOME, home),
        Route(c.ROUTE_READY, ready),
        Route(c.ROUTE_STATUS, status),
        Route(c.ROUTE_CONTAINER_LIVENESS, liveness),
        Route(c.ROUTE_CONTAINER_READINESS, readiness),
        Route(c.ROUTE_PRE_STOP, pre_stop),
        Route(c.ROUTE_METRICS, metrics),
        Route(c.ROUTE_USAGE_LOGS, usage_logs),
        Route(c.ROUTE_USAGE_LOGS.rstrip("/"), usage_logs),
        Route(c.ROUTE_USAGE_LOGS + "{month:int}/{year:int}", usage_logs),
        Route(c.ROUTE_OPENAPI, openapi),
        Route(c.ROUTE_SWAGGER, swagger),
        Route(c.ROUTE_SWAGGER + "/index.html", swagger),
        Route(c.ROUTE_SWAGGER + "/v1/swagger.json", openapi),
    ]
