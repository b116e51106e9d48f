"""Azure's "speech to text for short audio" REST route, served on the three recognition paths.

``POST /speech/recognition/{interactive|conversation|dictation}/cognitiveservices/v1
?language=ko-KR&format=simple|detailed&profanity=masked|removed|raw`` with a WAV,
Ogg/Opus or FLAC body (chunked allowed). One answer for the whole audio.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import contract as c
from .audio import Audio, AudioError, chunks, decode
from .auth import AuthError, check_key
from .admission import Busy
from .engine import Engine
from .errors import error_response
from .models import ModelError, UnknownLocale
from .results import OutputFormat, Profanity, merge, phrase_json
from .session import FILE_CHUNK_SECONDS
from .settings import Settings
from .transcript import Phrase

#: Bytes per second of the largest input we accept (48 kHz, stereo, 32-bit), to cap bodies early.
_MAX_BYTES_PER_SECOND = 48000 * 2 * 4


def request_locale(query: dict[str, str], engine: Engine) -> str:
    """The ``language`` of a request, or the only locale served when it names none."""
    language = query.get("language") or query.get("locale")
    if language:
        return language
    served = sorted(engine.registry.sources)
    if len(served) == 1:
        return served[0]
    raise UnknownLocale(f"add ?language=<locale>; this server has: {', '.join(served) or 'none'}")


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body (chunked or not), refusing more than ``limit`` bytes with 413."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise AudioError(f"the body is {int(declared)} bytes; the limit is {limit}", status=413)
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > limit:
            raise AudioError(f"the body is over the limit of {limit} bytes", status=413)
    return bytes(body)


async def recognize_audio(engine: Engine, locale: str, audio: Audio, route: str) -> list[Phrase]:
    """Every phrase in ``audio``, fed in :data:`FILE_CHUNK_SECONDS` pieces in one decoder hand-off."""
    async with engine.session(locale, audio.sample_rate, audio.channels, route=route, partials=False) as session:
        events = await session.decode(chunks(audio, FILE_CHUNK_SECONDS))
    return [e for e in events if isinstance(e, Phrase)]


async def recognize(request: Request) -> Response:
    """Recognize a short recording and answer in Azure's JSON."""
    settings: Settings = request.app.state.settings
    engine: Engine = request.app.state.engine
    metrics = request.app.state.metrics
    mode = request.path_params.get("mode", "conversation")
    if mode not in c.RECOGNITION_MODES:
        return error_response(404, f"no recognition mode {mode!r}; use one of {', '.join(c.RECOGNITION_MODES)}")
    route = f"rest-{mode}"
    query = dict(request.query_params)
    try:
        check_key(settings.api_key, request.headers, query)
        fmt = OutputFormat.parse(query.get("format"))
        profanity = Profanity.parse(query.get("profanity"))
        locale = request_locale(query, engine)
        limit = int(settings.max_audio_seconds * _MAX_BYTES_PER_SECOND) + 4096
        body = await read_body(request, limit)
        audio = await asyncio.to_thread(decode, body, request.headers.get("content-type", ""))
        if audio.seconds > settings.max_audio_seconds:
            raise AudioError(
                f"the audio is {audio.seconds:.1f} s long; this route takes at most "
                f"{settings.max_audio_seconds:g} s (MaxAudioSeconds); use the WebSocket route for longer audio",
                status=413,
            )
        if not audio.pcm:
            raise AudioError("the audio holds no samples")
        phrases = await recognize_audio(engine, locale, audio, route)
    except AuthError as exc:
        metrics.requests.labels(route, str(exc.status)).inc()
        return error_response(exc.status, exc.reason)
    except (AudioError, ValueError) as exc:
        status = getattr(exc, "status", 400)
        metrics.requests.labels(route, str(status)).inc()
        return error_response(status, str(exc))
    except UnknownLocale as exc:
        metrics.requests.labels(route, "400").inc()
        return error_response(400, str(exc))
    except Busy as exc:
        metrics.refused.labels(route).inc()
        metrics.requests.labels(route, "503").inc()
        return error_response(503, str(exc), {"Retry-After": str(exc.retry_after)})
    except ModelError as exc:
        metrics.requests.labels(route, "503").inc()
        return error_response(503, str(exc), {"Retry-After": "5"})
    metrics.requests.labels(route, "200").inc()
    body_json = phrase_json(
        merge(phrases),
        fmt,
        profanity,
        empty_duration=audio.seconds,
        word_timings=query.get("wordLevelTimestamps", "").lower() == "true",
        word_confidence=query.get("wordLevelConfidence", "").lower() == "true",
    )
    return JSONResponse(body_json)


def routes() -> list[Route]:
    """POST routes for the three recognition modes."""
    template = c.RECOGNITION_PATH_TEMPLATE.replace("{mode}", "{mode:str}")
    return [Route(template, recognize, methods=["POST"], name="rest-recognize")]
