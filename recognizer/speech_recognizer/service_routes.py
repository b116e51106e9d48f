"""Routes about the service itself: home page, health, metrics, usage records, API docs."""

from __future__ import annotations

import asyncio
import html
import logging
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from swagger_ui_bundle import swagger_ui_path

from . import __version__
from . import contract as c
from . import openapi as oa
from .errors import error_response
from .openapi import describe

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
    keyed = bool(state.settings.api_key)
    key_note = (
        "This server requires a key (its <code>ApiKey</code>): the examples below read it from the environment, "
        "so first <code>export SPEECH_KEY=…</code> with it."
        if keyed
        else "No key is required."
    )
    # The examples run as shown (tests/test_snippets.py runs them against this page): with the key
    # from $SPEECH_KEY when the server requires one, never the key itself.
    sdk_key = ', subscription=os.environ["SPEECH_KEY"]' if keyed else ""
    sdk_import = "import os\n" if keyed else ""
    curl_key = '-H "Ocp-Apim-Subscription-Key: $SPEECH_KEY" ' if keyed else ""
    openai_key = 'os.environ["SPEECH_KEY"]' if keyed else '"unused"'
    vosk_key = "<p>with the key in the upgrade's <code>Ocp-Apim-Subscription-Key</code> header.</p>" if keyed else ""
    base = str(request.base_url).rstrip("/")
    ws_base = base.replace("http", "ws", 1)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>speech-recognizer</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}code,pre{{background:#f4f4f4}}td{{padding:0 1em}}</style>
</head><body><h1>speech-recognizer {__version__}</h1>
<p>Open speech to text on Vosk, compatible with Azure's speech-to-text container.
Ready: <b>{'yes' if is_ready(state) else 'loading' if not state.registry.ready else 'warming up'}</b>. Decoders: {state.engine.active} busy of {state.engine.decoder_max_count}. {key_note}</p>
<p><a href="{c.ROUTE_DEMO}"><b>Live demo</b></a>: speak into your browser's microphone and read the text as it is recognized.</p>
<h2>Locales</h2><table><tr><th>locale</th><th>state</th><th>model</th></tr>{rows}</table>
<h2>Call it</h2>
<h3 id="speech-sdk">Azure Speech SDK (Python)</h3>
<pre>{sdk_import}import azure.cognitiveservices.speech as speechsdk

speech_config = speechsdk.SpeechConfig(host="{html.escape(ws_base)}"{html.escape(sdk_key)})
speech_config.speech_recognition_language = "{html.escape(example)}"
recognizer = speechsdk.SpeechRecognizer(speech_config, audio_config=speechsdk.audio.AudioConfig(filename="audio.wav"))
print(recognizer.recognize_once().text)</pre>
<h3 id="rest">REST (short audio, up to {state.settings.max_audio_seconds:g} s)</h3>
<pre>curl -s -X POST {html.escape(curl_key)}-H "Content-Type: audio/wav" --data-binary @audio.wav \\
  "{html.escape(base)}/speech/recognition/conversation/cognitiveservices/v1?language={html.escape(example)}&amp;format=detailed"</pre>
<h3 id="openai">OpenAI-compatible (<code>audio.transcriptions</code>)</h3>
<pre>{sdk_import}from openai import OpenAI

client = OpenAI(base_url="{html.escape(base)}/v1", api_key={html.escape(openai_key)})
print(client.audio.transcriptions.create(model="whisper-1", file=open("audio.wav", "rb"), response_format="srt"))</pre>
<h3 id="vosk">vosk-server WebSocket</h3><pre>{html.escape(ws_base)}/vosk?language={html.escape(example)}</pre>{vosk_key}
<p>Every route, its parameters, content types, answers and errors, and the WebSocket messages: the
<a href="{c.ROUTE_SWAGGER}">interactive API reference</a> (Swagger UI, served from here: it works without a network;
<i>Try it out</i> sends requests to this server) and its <a href="{c.ROUTE_OPENAPI}">OpenAPI document</a>.</p>
<p><a href="{c.ROUTE_READY}">/ready</a> ·
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


async def sessions(request: Request) -> Response:
    """Live sessions, connections and their cap, decoder capacity: what the operator's autoscaling reads from each pod."""
    state = _state(request)
    admission = state.engine.admission
    return JSONResponse({
        "sessions": admission.active, "connections": admission.connections, "maxConnections": admission.max_connections,
        "decoders": admission.limit, "idleSeconds": round(admission.idle_seconds(), 1), "admitted": admission.admitted, "ready": is_ready(state),
        "draining": state.drain.draining,
    })


async def usage_logs(request: Request) -> Response:
    """Azure's usage summary, overall or for ``/{MONTH}/{YEAR}``."""
    month = request.path_params.get("month")
    year = request.path_params.get("year")
    if month is not None and not 1 <= month <= 12:
        return error_response(400, f"month {month} is not 1..12")
    return JSONResponse(await _state(request).usage.summary(month, year))


async def openapi_document(request: Request) -> Response:
    """The OpenAPI document, built once from the app's routes (:func:`speech_recognizer.openapi.document`)."""
    return JSONResponse(_state(request).openapi)


#: Swagger UI's files, served from the swagger-ui-bundle package (no CDN: the page works disconnected).
SWAGGER_UI_FILES = ("swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png", "favicon-16x16.png")


async def swagger_ui_file(request: Request) -> Response:
    """One of :data:`SWAGGER_UI_FILES`."""
    name = request.path_params["file"]
    if name not in SWAGGER_UI_FILES:
        return error_response(404, f"no file {name!r}; the reference's files are {', '.join(SWAGGER_UI_FILES)}")
    return FileResponse(Path(str(swagger_ui_path)) / name, headers={"Cache-Control": "public, max-age=86400"})


async def swagger(request: Request) -> HTMLResponse:
    """The interactive API reference: Swagger UI on ``/openapi.json``, every file served from here."""
    ui = c.ROUTE_SWAGGER_UI
    rows = "".join(
        f"<li><code>{method.upper()} {html.escape(path)}</code> {html.escape(op.get('summary', ''))}</li>"
        for path, item in _state(request).openapi["paths"].items()
        for method, op in item.items()
    )
    # validatorUrl null: Swagger UI would otherwise send the document to an online validator.
    return HTMLResponse(f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>speech-recognizer API {__version__}</title>
<link rel="stylesheet" href="{ui}/swagger-ui.css"><link rel="icon" type="image/png" href="{ui}/favicon-32x32.png">
<style>body{{margin:0}} .swagger-ui .info{{margin:30px 0 20px}}</style>
</head><body><div id="swagger-ui"></div>
<noscript><h1>speech-recognizer API {__version__}</h1><p>The interactive reference needs JavaScript. The OpenAPI
document is <a href="{c.ROUTE_OPENAPI}">{c.ROUTE_OPENAPI}</a>; the routes:</p><ul>{rows}</ul></noscript>
<script src="{ui}/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({{
  url: "{c.ROUTE_OPENAPI}", dom_id: "#swagger-ui", validatorUrl: null, deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis], layout: "BaseLayout",
  displayRequestDuration: true, defaultModelsExpandDepth: 0
}});
</script></body></html>""")


# ---- the routes, each with its description for the API reference -----------------------------------

READY_SCHEMA = {
    "type": "object",
    "required": ["ready", "loaded", "wanted", "warmup"],
    "properties": {
        "ready": {"type": "boolean"},
        "loaded": {"type": "array", "items": {"type": "string"}, "description": "locales whose model is loaded"},
        "wanted": {"type": "array", "items": {"type": "string"}, "description": "locales loaded at start-up (`Locale`)"},
        "warmup": {
            "type": "object",
            "properties": {
                "done": {"type": "boolean"},
                "wanted": {"type": "object", "additionalProperties": {"type": "integer"}, "description": "recognizers to warm per locale"},
                "warmed": {"type": "object", "additionalProperties": {"type": "integer"}},
                "error": {"type": "string", "description": "why the warm-up failed (serving goes on, cold)"},
            },
        },
        "errors": {"type": "object", "additionalProperties": {"type": "string"}, "description": "locale -> why its model did not load"},
        "draining": {"type": "boolean", "description": "present (true) from SIGTERM on: running streams finish, new ones are refused"},
    },
}
SESSIONS_SCHEMA = {
    "type": "object",
    "required": ["sessions", "connections", "maxConnections", "decoders", "idleSeconds", "admitted", "ready", "draining"],
    "properties": {
        "sessions": {"type": "integer", "description": "recognitions holding a decoder now (streams and REST requests)"},
        "connections": {"type": "integer", "description": "recognition WebSockets open now (`/vosk`, `/` and the Speech SDK's), "
                        "with or without a session: a stream takes its decoder only at its first audio, and a Speech SDK app "
                        "keeps its connection between recognitions (for at most `ConnectionIdleSeconds` without a message)"},
        "maxConnections": {"type": "integer", "description": "recognition WebSockets this server keeps open at once "
                           "(`MaxConnections`); the next is closed with 1013: the operator's autoscaling adds pods before "
                           "`connections` reaches it"},
        "decoders": {"type": "integer", "description": "recognitions that may hold one at once (`DecoderMaxCount`)"},
        "idleSeconds": {"type": "number", "description": "seconds since the last recognition ended or the last recognition "
                        "WebSocket closed (or the start); 0 while a recognition runs or a connection is open"},
        "admitted": {"type": "integer", "description": "recognitions admitted since the start"},
        "ready": {"type": "boolean", "description": "as `/ready`"},
        "draining": {"type": "boolean", "description": "true from SIGTERM on"},
    },
}
USAGE_SCHEMA = {
    "type": "object",
    "required": ["apiType", "serviceName", "meters"],
    "properties": {
        "apiType": {"type": "string"},
        "serviceName": {"type": "string"},
        "meters": {
            "type": "array",
            "items": {"type": "object", "properties": {"name": {"type": "string"}, "quantity": {"type": "number"}}},
        },
    },
    "example": {"apiType": "speechtotext", "serviceName": "speech-recognizer", "meters": [
        {"name": "speech-to-text.requests", "quantity": 2}, {"name": "speech-to-text.audio-seconds", "quantity": 4.25},
        {"name": "speech-to-text.audio-seconds.ko-KR", "quantity": 4.25}]},
}
USAGE = {
    "tags": [oa.RECORDS],
    "summary": "Usage summary",
    "description": "Azure's usage-log shape, from the usage records (`Mounts:Output/usage/YYYY-MM.jsonl`): requests and audio seconds, per locale.",
    "responses": {"200": oa.json_response("every record so far", USAGE_SCHEMA)},
}
OPENAPI_DOCUMENT = {
    "tags": [oa.REFERENCE],
    "summary": "This OpenAPI document",
    "responses": {"200": oa.json_response("OpenAPI 3.0", {"type": "object"})},
}
SWAGGER_PAGE = {
    "tags": [oa.REFERENCE],
    "summary": "This interactive reference (Swagger UI)",
    "description": "Served with every file it needs: it works without a network.",
    "responses": {"200": {"description": "HTML", "content": oa.HTML}},
}


def routes() -> list[BaseRoute]:
    """The service's routes, each described for the API reference."""
    return [
        describe(Route(c.ROUTE_HOME, home), get={
            "tags": [oa.REFERENCE],
            "summary": "Home page",
            "description": "What runs, the locales loaded and available, and how to call each protocol with this server's address.",
            "responses": {"200": {"description": "HTML", "content": oa.HTML}},
        }),
        describe(Route(c.ROUTE_READY, ready), get={
            "tags": [oa.HEALTH],
            "summary": "Readiness: 200 once the models are loaded and warmed",
            "description": "The Kubernetes readiness probe. 503 while a model loads or the start-up warm-up runs (`Warmup:*`), the body "
            "saying how far it is; 503 again from SIGTERM on, while the server drains (`draining`: new work goes elsewhere).",
            "responses": {
                "200": oa.json_response("ready", READY_SCHEMA, {"ready": True, "loaded": ["ko-KR"], "wanted": ["ko-KR"],
                                                               "warmup": {"done": True, "wanted": {"ko-KR": 6}, "warmed": {"ko-KR": 6}}}),
                "503": oa.json_response("loading, warming up, or draining", READY_SCHEMA),
            },
        }),
        describe(Route(c.ROUTE_STATUS, status), get={
            "tags": [oa.HEALTH],
            "summary": "Azure's status: whether the container's own key is usable",
            "description": "Runs no recognition and asks no key of the caller (a liveness probe sends no headers).",
            "responses": {"200": oa.json_response("valid", {"type": "object", "properties": {
                "status": {"type": "string"}, "apiStatus": {"type": "string"}, "apiStatusMessage": {"type": "string"}}},
                {"status": "valid", "apiStatus": "Valid", "apiStatusMessage": "No key is required."})},
        }),
        describe(Route(c.ROUTE_CONTAINER_LIVENESS, liveness), get={
            "tags": [oa.HEALTH],
            "summary": "Azure's liveness probe",
            "description": "200 for as long as the process serves, loading included.",
            "responses": {"200": oa.text_response("alive", "Healthy")},
        }),
        describe(Route(c.ROUTE_CONTAINER_READINESS, readiness), get={
            "tags": [oa.HEALTH],
            "summary": "Azure's readiness probe",
            "description": "As `/ready`, in plain text.",
            "responses": {"200": oa.text_response("ready", "Ready"), "503": oa.text_response("`Loading`, `Warming up` or `Draining`", "Loading")},
        }),
        describe(Route(c.ROUTE_PRE_STOP, pre_stop), get={
            "tags": [oa.HEALTH],
            "summary": "The pod's preStop hook",
            "description": f"Answers after {c.PRE_STOP_SECONDS} s, serving new work meanwhile: time for the Service's endpoints to "
            "drop the pod before the kubelet's SIGTERM starts the drain (running streams finish, new ones are refused).",
            "responses": {"200": oa.text_response("the pause is over", "ok")},
        }),
        describe(Route(c.ROUTE_METRICS, metrics), get={
            "tags": [oa.RECORDS],
            "summary": "Prometheus metrics",
            "description": "Requests by route and status, audio seconds, active sessions, decoder CPU time, refusals, the warm pool of recognizers.",
            "responses": {"200": oa.text_response("Prometheus text exposition 0.0.4", "speech_active_sessions 0.0",
                                                  "text/plain; version=0.0.4")},
        }),
        describe(Route(c.ROUTE_SESSIONS, sessions), get={
            "tags": [oa.HEALTH],
            "summary": "Live sessions, connections and decoder capacity",
            "description": "What the operator's autoscaling reads from each ready pod (`spec.autoscaling`): sessions now, "
            "clients connected (a pod with one is not idle, even before its first audio) and how many it may keep, "
            "decoders in all, and how long the "
            "server has had no work and no client (a locale with `minReplicas: 0` rests at zero pods after "
            "`idleSecondsToZero`). Polled, so its access lines are at Debug.",
            "responses": {"200": oa.json_response("now", SESSIONS_SCHEMA, {
                "sessions": 2, "connections": 3, "maxConnections": 500, "decoders": 6, "idleSeconds": 0, "admitted": 17, "ready": True,
                "draining": False})},
        }),
        describe(Route(c.ROUTE_USAGE_LOGS, usage_logs), get=USAGE),
        describe(Route(c.ROUTE_USAGE_LOGS.rstrip("/"), usage_logs), get=USAGE),
        describe(Route(c.ROUTE_USAGE_LOGS + "{month:int}/{year:int}", usage_logs), get={
            **USAGE,
            "summary": "Usage summary of one month",
            "parameters": [
                {"name": "month", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1, "maximum": 12}, "example": 1},
                {"name": "year", "in": "path", "required": True, "schema": {"type": "integer"}, "example": 2026},
            ],
            "responses": {"200": oa.json_response("the records of that month", USAGE_SCHEMA), "400": oa.error(400, "the month is not 1..12", "month 13 is not 1..12")},
        }),
        describe(Route(c.ROUTE_OPENAPI, openapi_document), get=OPENAPI_DOCUMENT),
        describe(Route(c.ROUTE_SWAGGER + "/v1/swagger.json", openapi_document), get=OPENAPI_DOCUMENT),
        describe(Route(c.ROUTE_SWAGGER, swagger), get=SWAGGER_PAGE),
        describe(Route(c.ROUTE_SWAGGER + "/index.html", swagger), get=SWAGGER_PAGE),
        describe(Route(c.ROUTE_SWAGGER_UI + "/{file}", swagger_ui_file), get={
            "tags": [oa.REFERENCE],
            "summary": "The files of this reference",
            "description": "Swagger UI, from the swagger-ui-bundle package.",
            "parameters": [{"name": "file", "in": "path", "required": True, "schema": {"type": "string", "enum": list(SWAGGER_UI_FILES)}}],
            "responses": {"200": {"description": "the file"}, "404": oa.error(404, "not one of the reference's files", "no file 'index.html'; the reference's files are "
                                                                        + ", ".join(SWAGGER_UI_FILES))},
        }),
    ]
