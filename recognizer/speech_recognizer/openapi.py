"""The API reference: one OpenAPI 3.0 document, built from the routes the app serves.

Each route is declared together with its description, next to its handler
(:func:`describe`), and :func:`document` refuses a route that has none: a route
cannot be added to the app without being added to the reference. OpenAPI has no
WebSocket verbs, so a WebSocket route is described as the GET that upgrades to it
(101 Switching Protocols) with an ``x-websocket`` object naming its protocol, its
messages each way and its close codes; a plain HTTP GET there is answered 426
(Upgrade Required). This module holds what the descriptions share: the error
shape, the key, the recognition parameters.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from . import __version__
from . import contract as c
from .errors import error_response

Operation = dict[str, Any]
R = TypeVar("R", Route, WebSocketRoute)

OPENAPI_VERSION = "3.0.3"
#: Where the home page explains each protocol (anchors of its sections).
HOME_SPEECH_SDK = f"{c.ROUTE_HOME}#speech-sdk"
HOME_REST = f"{c.ROUTE_HOME}#rest"
HOME_VOSK = f"{c.ROUTE_HOME}#vosk"
HOME_OPENAI = f"{c.ROUTE_HOME}#openai"

# ---- tags: the sections of the reference, in order -----------------------------------------------
RECOGNITION = "recognition"
HEALTH = "health"
RECORDS = "metrics and usage"
REFERENCE = "this reference"
TAGS = [
    {"name": RECOGNITION, "description": "Speech to text: the Speech SDK's WebSocket, REST short audio, the vosk-server "
     "WebSocket, OpenAI-compatible transcriptions."},
    {"name": HEALTH, "description": "Probes: Kubernetes and Azure's container contract. Logged at Debug only."},
    {"name": RECORDS, "description": "Prometheus metrics and Azure's usage records."},
    {"name": REFERENCE, "description": "The home page, this page and the OpenAPI document."},
]


@dataclass(frozen=True)
class Description:
    """What one route serves, for the reference: where it is documented and its operations by method."""

    path: str
    operations: Mapping[str, Operation] = field(default_factory=dict)
    #: For a WebSocket route: the GET operation that upgrades to it (with ``x-websocket``).
    websocket: Operation | None = None


class Undescribed(LookupError):
    """A route of the app has no description for the reference."""


def openapi_path(path: str) -> str:
    """Starlette's ``/usage/{month:int}`` as OpenAPI spells it, ``/usage/{month}``."""
    return re.sub(r"\{(\w+):\w+\}", r"{\1}", path)


def describe(route: R, *, path: str | None = None, websocket: Operation | None = None, **operations: Operation) -> R:
    """``route``, carrying its description: ``get=``, ``post=``... for an HTTP route (exactly the
    methods it serves), ``websocket=`` (a GET operation with ``x-websocket``) for a WebSocket route;
    documented at ``path`` (default: the route's own path). Routes that share a path and method
    share one operation object."""
    if isinstance(route, WebSocketRoute):
        if websocket is None or operations or "x-websocket" not in websocket:
            raise ValueError(f"the WebSocket route {route.path} is described by websocket= with an x-websocket object")
    elif websocket is not None:
        raise ValueError(f"{route.path} is not a WebSocket route")
    elif isinstance(route, Route):
        served = {m.lower() for m in route.methods or ()} - {"head"}  # Starlette adds HEAD to every GET
        if served != set(operations):
            raise ValueError(f"{route.path} serves {sorted(served)} but is described for {sorted(operations)}")
    else:
        raise TypeError(f"describe() takes a Route or a WebSocketRoute, not {route!r}")
    route.openapi = Description(path or openapi_path(route.path), operations, websocket)  # type: ignore[attr-defined]
    return route


def websocket_routes(path: str, endpoint: Callable[..., Any], operation: Operation, *, documented_at: str | None = None,
                     name: str | None = None) -> list[BaseRoute]:
    """A WebSocket route and its plain-HTTP face (a GET answered 426), both described by ``operation``."""
    return [
        describe(WebSocketRoute(path, endpoint, name=name), path=documented_at, websocket=operation),
        describe(Route(path, upgrade_required, methods=["GET"]), path=documented_at, get=operation),
    ]


async def upgrade_required(request: Request) -> Response:
    """A plain HTTP GET on a WebSocket route (as *Try it out* sends): 426 and the upgrade it needs."""
    return error_response(
        426,
        f"{request.url.path} is a WebSocket route: connect with a WebSocket client (the API reference at "
        f"{c.ROUTE_SWAGGER} lists its messages)",
        {"Upgrade": "websocket", "Connection": "Upgrade"},
    )


def description_of(route: BaseRoute) -> Description:
    """The description :func:`describe` gave ``route``; :class:`Undescribed` when it has none."""
    found = getattr(route, "openapi", None)
    if not isinstance(found, Description):
        raise Undescribed(
            f"the route {getattr(route, 'path', route)!r} has no description for the API reference: "
            "declare it with speech_recognizer.openapi.describe(...), next to its handler"
        )
    return found


def document(routes: Iterable[BaseRoute]) -> dict[str, Any]:
    """The OpenAPI document of ``routes`` (an app's ``routes``); raises :class:`Undescribed` for a route without description.

    A WebSocket route on a path whose GET is an HTTP page (the vosk protocol on ``/``)
    adds its ``x-websocket`` object, its 101 answer and its description to that GET.
    """
    descriptions = [description_of(route) for route in routes]
    paths: dict[str, dict[str, Operation]] = {}
    sources: dict[tuple[str, str], Operation] = {}
    for desc in sorted(descriptions, key=lambda d: d.websocket is not None):  # HTTP operations first
        offered = {"get": desc.websocket} if desc.websocket is not None else desc.operations
        item = paths.setdefault(desc.path, {})
        for method, operation in offered.items():
            source = sources.get((desc.path, method))
            if source is operation:
                continue  # one operation for several routes (the three recognition modes, an upgrade and its 426)
            if source is None:
                sources[(desc.path, method)] = operation
                item[method] = _readable(operation)
            elif desc.websocket is not None and "x-websocket" not in source:
                item[method] = _with_upgrade(item[method], _readable(operation))
            else:
                raise ValueError(f"{method.upper()} {desc.path} is described twice, differently")
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "speech-recognizer", "version": __version__, "description": INFO_DESCRIPTION},
        "tags": TAGS,
        "paths": dict(sorted(paths.items(), key=lambda kv: _path_order(kv[0]))),
        "components": COMPONENTS,
    }


def _readable(operation: Operation) -> Operation:
    """A copy of ``operation``; a WebSocket's messages and close codes (``x-websocket``) also in its description,
    where Swagger UI shows them as text."""
    out = copy.deepcopy(operation)
    ws = out.get("x-websocket")
    if ws is not None:
        def listing(title: str, entries: Mapping[str, str]) -> str:
            return f"**{title}**\n\n" + "\n".join(f"- `{name}`: {what}" for name, what in entries.items())

        out["description"] = "\n\n".join([
            out.get("description", ""),
            f"**Protocol**: {ws['protocol']}.",
            listing("Messages from the client", ws["clientMessages"]),
            listing("Messages from the server", ws["serverMessages"]),
            listing("Close codes", ws["closeCodes"]),
        ])
    return out


def _with_upgrade(page: Operation, upgrade: Operation) -> Operation:
    """An HTTP GET that also upgrades to a WebSocket protocol."""
    merged = copy.deepcopy(page)
    merged["x-websocket"] = upgrade["x-websocket"]
    merged["responses"] = {"101": upgrade["responses"]["101"], **merged["responses"]}
    merged["description"] = f"{merged.get('description', '')}\n\n**{upgrade['summary']}**, on an upgrade. {upgrade['description']}".strip()
    return merged


#: The order of the paths in the document (others follow, alphabetically): Swagger UI lists them so within each tag.
PATH_ORDER = (
    c.RECOGNITION_PATH_TEMPLATE, c.ROUTE_VOSK_WS, c.ROUTE_READY, c.ROUTE_STATUS, c.ROUTE_CONTAINER_LIVENESS,
    c.ROUTE_CONTAINER_READINESS, c.ROUTE_METRICS, c.ROUTE_HOME, c.ROUTE_SWAGGER, c.ROUTE_OPENAPI,
)


def _path_order(path: str) -> tuple[int, str]:
    return (PATH_ORDER.index(path) if path in PATH_ORDER else len(PATH_ORDER), path)


# ---- what the descriptions share -------------------------------------------------------------------

INFO_DESCRIPTION = f"""Open speech to text on [Vosk](https://alphacephei.com/vosk), compatible with Azure's speech-to-text container.

Four ways to recognize speech, all decoded the same way (the same audio gives the same words and timings on each):

- **Azure Speech SDK** (WebSocket, `GET /speech/recognition/{{mode}}/cognitiveservices/v1` with an upgrade): point an
  unmodified Speech SDK app at this server by its host. [How to call it]({HOME_SPEECH_SDK}).
- **REST short audio** (`POST` on the same paths): a recording of up to `MaxAudioSeconds`, one answer. [How to call it]({HOME_REST}).
- **vosk-server WebSocket** (`GET /vosk` with an upgrade, also on `/`). [How to call it]({HOME_VOSK}).
- **OpenAI-compatible transcriptions** (`POST {c.ROUTE_OPENAI_TRANSCRIPTIONS}`, multipart): apps written for OpenAI's
  `audio.transcriptions`, pointed at `/v1` on this server; text, JSON or subtitles. [How to call it]({HOME_OPENAI}).

**Key.** When the server runs with `ApiKey`, every recognition request carries it: the `{c.KEY_HEADER}` header,
`Authorization: Bearer <key>`, or the query parameter `{c.KEY_HEADER}`/`subscription-key`. Without one: 403; a wrong one: 401.
Use **Authorize** to send it from this page.

**Times** (`Offset`, `Duration`) are in 100-nanosecond ticks from the start of the audio, as Azure's.

**Errors** are JSON `{{"error": {{"code", "message"}}}}` with a message that says what to change; on a WebSocket, a close code and reason.

**WebSockets.** OpenAPI has no WebSocket verbs: each WebSocket route is the `GET` that upgrades (101); its
description (and its `x-websocket` object) lists the messages each way and the close codes. *Try it out* sends a plain `GET`, which is
answered 426 (Upgrade Required): use a WebSocket client (the Speech SDK, `websockets`, `websocat`).
"""

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "example": "BadRequest", "description": "the status's name: BadRequest, Unauthorized, Forbidden, ..."},
                "message": {"type": "string", "description": "what went wrong and what to change"},
            },
        }
    },
}

COMPONENTS: dict[str, Any] = {
    "securitySchemes": {
        "subscriptionKey": {"type": "apiKey", "in": "header", "name": c.KEY_HEADER, "description": "the server's `ApiKey`"},
        "bearer": {"type": "http", "scheme": "bearer", "description": "the server's `ApiKey` as `Authorization: Bearer <key>`"},
    },
    "schemas": {
        "Error": ERROR_SCHEMA,
        "Recognition": {
            "type": "object",
            "description": "Azure's short-audio answer. `Offset` and `Duration` are 100-ns ticks.",
            "required": ["RecognitionStatus", "Offset", "Duration"],
            "properties": {
                "RecognitionStatus": {
                    "type": "string",
                    "enum": ["Success", "InitialSilenceTimeout", "NoMatch"],
                    "description": "`InitialSilenceTimeout`: no speech in the audio (no `DisplayText` then)",
                },
                "DisplayText": {"type": "string", "description": "the text, capitalized, with a final period"},
                "Offset": {"type": "integer", "format": "int64", "example": 5600000},
                "Duration": {"type": "integer", "format": "int64", "example": 13200000},
                "NBest": {"type": "array", "items": {"$ref": "#/components/schemas/NBest"}, "description": "with `format=detailed`"},
            },
            "example": {"RecognitionStatus": "Success", "DisplayText": "오늘 날씨가 좋습니다.", "Offset": 5600000, "Duration": 13200000},
        },
        "NBest": {
            "type": "object",
            "properties": {
                "Confidence": {"type": "number", "format": "float", "minimum": 0, "maximum": 1},
                "Lexical": {"type": "string"},
                "ITN": {"type": "string"},
                "MaskedITN": {"type": "string"},
                "Display": {"type": "string"},
                "Words": {"type": "array", "items": {"$ref": "#/components/schemas/Word"}, "description": "with `wordLevelTimestamps` or `wordLevelConfidence`"},
            },
        },
        "Word": {
            "type": "object",
            "properties": {
                "Word": {"type": "string"},
                "Offset": {"type": "integer", "format": "int64"},
                "Duration": {"type": "integer", "format": "int64"},
                "Confidence": {"type": "number", "format": "float", "description": "with `wordLevelConfidence=true`"},
            },
        },
    },
}

#: The language, as every recognition route takes it.
LANGUAGE = {
    "name": "language",
    "in": "query",
    "schema": {"type": "string"},
    "example": "ko-KR",
    "description": "BCP-47 locale of the speech (`ko-KR`; the language alone, `ko`, finds its locale). "
    "May be left out when the server serves one locale; the home page lists them.",
}
MODE = {
    "name": "mode",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "enum": list(c.RECOGNITION_MODES)},
    "description": "`interactive` recognizes one utterance; `conversation` and `dictation` every utterance (on the WebSocket; REST answers once for the whole audio either way)",
}
FORMAT = {"name": "format", "in": "query", "schema": {"type": "string", "enum": ["simple", "detailed"], "default": "simple"},
          "description": "`detailed` adds `NBest` (Lexical, ITN, MaskedITN, Display, Confidence)"}
#: REST's ``format``: also subtitles.
REST_FORMAT = {**FORMAT, "schema": {"type": "string", "enum": ["simple", "detailed", "srt", "vtt"], "default": "simple"},
          "description": "`detailed` adds `NBest` (Lexical, ITN, MaskedITN, Display, Confidence); `srt` and `vtt` answer subtitles "
          "(SubRip, WebVTT) instead of JSON: one utterance or more per cue, at most 2 lines of 42 characters and 7 s a cue, "
          "split between words at their times"}
ACCEPT_SUBTITLES = {"name": "Accept", "in": "header", "schema": {"type": "string"}, "example": "text/vtt",
                    "description": "without `format`: `text/vtt` or `application/x-subrip` asks for subtitles, as `format=vtt`/`srt`"}
#: The 200 answers of a route that can give subtitles.
SUBTITLES = {
    "application/x-subrip": {"schema": {"type": "string"}, "example": "1\n00:00:00,560 --> 00:00:01,880\n오늘 날씨가 좋습니다\n"},
    "text/vtt": {"schema": {"type": "string"}, "example": "WEBVTT\n\n1\n00:00:00.560 --> 00:00:01.880\n오늘 날씨가 좋습니다\n"},
}
PROFANITY = {"name": "profanity", "in": "query", "schema": {"type": "string", "enum": ["masked", "removed", "raw"], "default": "masked"},
             "description": "what becomes of profane words: `***`, left out, or as said"}
WORD_TIMESTAMPS = {"name": "wordLevelTimestamps", "in": "query", "schema": {"type": "boolean", "default": False},
                   "description": "`NBest[].Words` with each word's `Offset` and `Duration` (with `format=detailed`)"}
WORD_CONFIDENCE = {"name": "wordLevelConfidence", "in": "query", "schema": {"type": "boolean", "default": False},
                   "description": "`NBest[].Words` with each word's `Confidence` (with `format=detailed`)"}
PHRASES = {"name": "phrases", "in": "query", "schema": {"type": "boolean", "default": False},
           "description": "`Phrases`: each utterance's answer (as the Speech SDK gets them, with `NBest` and `Words` as asked) beside "
           "the whole audio's; not Azure's. `speech-recognizer transcribe --server` builds subtitles from them"}
#: A recognition route may require the key (``ApiKey``); the empty requirement: when it runs without one.
KEY_SECURITY: list[dict[str, list[str]]] = [{"subscriptionKey": []}, {"bearer": []}, {}]


def error(status: int, description: str, example: str) -> dict[str, Any]:
    """An error response: ``{"error": {"code", "message"}}``, with an example as the server writes it."""
    body = json.loads(bytes(error_response(status, example).body))
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}, "example": body}}}


def json_response(description: str, schema: dict[str, Any], example: Any = None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": schema}
    if example is not None:
        media["example"] = example
    return {"description": description, "content": {"application/json": media}}


def text_response(description: str, example: str, media_type: str = "text/plain") -> dict[str, Any]:
    return {"description": description, "content": {media_type: {"schema": {"type": "string"}, "example": example}}}


HTML = {"text/html": {"schema": {"type": "string"}}}
KEY_ERRORS = {
    "401": error(401, "wrong key: the request's key is not the server's `ApiKey`", "wrong key: the key does not match this server's ApiKey"),
    "403": error(403, "missing key: the server runs with `ApiKey` and the request carries none",
                 f"missing key: send it in the {c.KEY_HEADER} header or as Authorization: Bearer"),
}
#: Answers of a WebSocket route's GET (RFC 6455 upgrade).
SWITCHING = {"description": "Switching Protocols: the WebSocket is open (send `Connection: Upgrade`, `Upgrade: websocket`)"}
UPGRADE_REQUIRED = {
    **error(426, "Upgrade Required: a plain HTTP GET (as *Try it out* sends); connect with a WebSocket client",
            f"/vosk is a WebSocket route: connect with a WebSocket client (the API reference at {c.ROUTE_SWAGGER} lists its messages)"),
    "headers": {"Upgrade": {"schema": {"type": "string", "example": "websocket"}}},
}
