"""Azure's "speech to text for short audio" REST route, served on the three recognition paths.

``POST /speech/recognition/{interactive|conversation|dictation}/cognitiveservices/v1
?language=ko-KR&format=simple|detailed&profanity=masked|removed|raw`` with a body of
audio (:data:`~speech_recognizer.contract.AUDIO_FORMATS`; chunked allowed). One answer for the whole audio.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive

from . import contract as c
from . import openapi as oa
from .admission import Reservation
from .audio import HEADER_ROOM, NOT_AUDIO, Audio, AudioError, body_limit, chunks, decode, wav_body_limit
from .auth import check_key
from .connection_cap import CLIENT_ENDED
from .engine import Engine
from .errors import CLIENT_GONE, NOT_FOUND, TOO_LARGE, BadValue, Failure, http_response, settle
from .inbox import HELD_LOOK_SECONDS
from .models import UnknownLocale
from .openapi import describe
from .results import OutputFormat, Profanity, merge, phrase_json
from .session import FILE_CHUNK_SECONDS
from .settings import Settings, flag
from .subtitles import SubtitleFormat, from_accept
from .subtitles import render as subtitles
from .transcript import Phrase


def request_locale(query: dict[str, str], engine: Engine) -> str:
    """The ``language`` of a request, or the only locale served when it names none."""
    language = query.get("language") or query.get("locale")
    if language:
        return language
    served = sorted(engine.registry.sources)
    if len(served) == 1:
        return served[0]
    raise UnknownLocale(f"add ?language=<locale>; this server has: {', '.join(served) or 'none'}")


def answer_format(format_param: str | None, accept: str = "") -> OutputFormat | SubtitleFormat:
    """What to answer with: ``format=simple|detailed|srt|vtt``, else subtitles when ``Accept`` asks for them, else simple JSON."""
    if not format_param:
        return from_accept(accept) or OutputFormat.SIMPLE
    value = format_param.strip().lower()
    if value in (f.value for f in SubtitleFormat):
        return SubtitleFormat(value)
    if value in (f.value for f in OutputFormat):
        return OutputFormat(value)
    raise BadValue(f"format={format_param!r}: use simple, detailed, srt or vtt")


def subtitle_response(phrases: list[Phrase], fmt: SubtitleFormat, profanity: Profanity) -> Response:
    """Subtitles of ``phrases`` (:mod:`.subtitles`) as their media type."""
    return Response(subtitles(phrases, fmt, profanity), media_type=f"{fmt.media_type}; charset=utf-8")


def declared_length(request: Request) -> int | None:
    """The body's ``Content-Length``, or None (chunked, or not a number)."""
    declared = request.headers.get("content-length", "")
    return int(declared) if declared.isdigit() else None


def too_large(size: str, limit: int, what: str = "") -> AudioError:
    """The 413 for a body of ``size`` bytes over ``limit``; ``what`` says what the limit is."""
    return AudioError(f"the body is {size} bytes; {limit} at most{what}", TOO_LARGE)


def check_declared_length(request: Request, limit: int, what: str = "") -> None:
    """Refuse (413) a ``Content-Length`` over ``limit`` before anything is read."""
    declared = declared_length(request)
    if declared is not None and declared > limit:
        raise too_large(str(declared), limit, what)


def _seconds_of(max_seconds: float, audio: str) -> str:
    return f": {max_seconds:g} s (MaxAudioSeconds) of {audio}"


async def read_body(request: Request, limit: int, *, wav_seconds: float | None = None) -> bytearray:
    """The whole body (chunked or not), refusing more than ``limit`` bytes with 413, by its
    ``Content-Length`` before anything is read, else as soon as it is passed.

    The buffer it was read into, not a copy of it as ``bytes``: at the decoder cap, a copy of every
    body in flight (23 MB each at the limit) was that much more memory at once, against the pod's limit.

    With ``wav_seconds``, a WAV body's limit narrows to that many seconds of its own format
    as soon as its header has come (and its ``Content-Length`` is checked again), so that an
    audio body is never read past its audio's worth.
    """
    what = ""
    check_declared_length(request, limit, what)
    body = bytearray()
    narrowed = wav_seconds is None
    async for piece in request.stream():
        body += piece
        if not narrowed and body[:4] == b"RIFF":
            found = wav_body_limit(bytes(body[:HEADER_ROOM]), wav_seconds)  # type: ignore[arg-type]
            narrowed = found is not None or len(body) >= HEADER_ROOM  # no header in 64 KiB: decoding will say why
            if found is not None and found[0] < limit:
                limit, what = found[0], _seconds_of(wav_seconds, found[1])  # type: ignore[arg-type]
                check_declared_length(request, limit, what)
        if len(body) > limit:
            raise too_large(f"over {limit}", limit, what)
    return body


async def client_left(receive: Receive) -> None:
    """Return once the client of a request whose body was read has gone (ASGI ``http.disconnect``)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def client_gone(request: Request) -> None:
    """Return once the request's client has gone, its body read or not (what the server's protocol says,
    :data:`~.connection_cap.CLIENT_ENDED`, looked at every :data:`~.inbox.HELD_LOOK_SECONDS`: reading the body to
    see its end would hold it all in memory); never under a server that does not say."""
    ended = request.scope.get("extensions", {}).get(CLIENT_ENDED)
    if ended is None:
        await asyncio.Event().wait()
    while not ended():
        await asyncio.sleep(HELD_LOOK_SECONDS)


async def recognize_audio(
    engine: Engine, locale: str, audio: Audio, route: str, reservation: Reservation | None = None, *, receive: Receive | None = None
) -> list[Phrase]:
    """Every phrase in ``audio``, fed in :data:`FILE_CHUNK_SECONDS` pieces in one decoder hand-off (on ``reservation``'s decoder).

    ``receive``: the request's ASGI channel, its body read. When the client goes away
    before the answer, decoding stops at the next piece and the decoder is given back at
    once, not after the rest of the audio (nobody is left to answer); raises a
    :data:`~speech_recognizer.errors.CLIENT_GONE` failure saying how much audio was dropped.
    """
    async with engine.session(locale, audio.sample_rate, audio.channels, route=route, partials=False, reservation=reservation) as session:
        decoding = asyncio.ensure_future(session.decode(chunks(audio, FILE_CHUNK_SECONDS)))
        watching = asyncio.ensure_future(client_left(receive) if receive is not None else asyncio.Event().wait())
        try:
            await asyncio.wait((decoding, watching), return_when=asyncio.FIRST_COMPLETED)
        finally:
            watching.cancel()
            if not decoding.done():  # the client left (or this request was cancelled): the decoder stops at the next piece
                decoding.cancel()
                await asyncio.gather(decoding, return_exceptions=True)
        if decoding.cancelled():
            left = max(0.0, audio.seconds - session.recognition.audio_seconds)
            session.abandoned_seconds = left
            raise Failure(f"the client left before its answer; {left:.1f} s of its {audio.seconds:.1f} s of audio "
                          "were not decoded", CLIENT_GONE)
        events = decoding.result()
    return [e for e in events if isinstance(e, Phrase)]


async def recognize(request: Request) -> Response:
    """Recognize a short recording and answer in Azure's JSON; a failure is answered by :mod:`.errors`."""
    mode = request.path_params.get("mode", "conversation")
    route = f"rest-{mode}" if mode in c.RECOGNITION_MODES else "rest"
    metrics = request.app.state.metrics
    started = time.monotonic()
    try:
        response = await _recognize(request, mode)
    except Exception as exc:  # noqa: BLE001 - every failure is answered by the policy
        failure = settle(exc, route, metrics, started, scope=request.scope)  # a body the server refused: counted there
        return http_response(failure)
    metrics.succeeded(route, started)
    return response


async def _recognize(request: Request, mode: str) -> Response:
    settings: Settings = request.app.state.settings
    engine: Engine = request.app.state.engine
    if mode not in c.RECOGNITION_MODES:
        raise Failure(f"no recognition mode {mode!r}; use one of {', '.join(c.RECOGNITION_MODES)}", NOT_FOUND)
    query = dict(request.query_params)
    check_key(settings.api_key, request.headers, request.query_params.multi_items(), websocket=False)
    fmt = answer_format(query.get("format"), request.headers.get("accept", ""))
    profanity = Profanity.parse(query.get("profanity"))
    word_timings, word_confidence = flag(query, "wordLevelTimestamps"), flag(query, "wordLevelConfidence")
    each_phrase = flag(query, "phrases")
    locale = request_locale(query, engine)
    # an unknown language is refused before the body is read; a client gone during an on-demand load, at once
    await engine.registry.aload_watched(locale, lambda: client_gone(request))
    ctype = request.headers.get("content-type", "")
    limit, audio_kind = body_limit(ctype, settings.max_audio_seconds)
    check_declared_length(request, limit, _seconds_of(settings.max_audio_seconds, audio_kind))
    # A decoder is held before the body is read and decoded (both cost memory and CPU), so that a
    # busy server refuses at once instead of after reading and decoding a body for nothing. A body
    # refused unread is discarded as it comes (within Http:BodyTimeoutSeconds), never kept.
    with engine.reserve() as reservation:
        body = await read_body(request, limit, wav_seconds=settings.max_audio_seconds)
        audio = await asyncio.to_thread(decode, body, ctype, max_seconds=settings.max_audio_seconds)
        del body  # the PCM is all that is kept while it is recognized
        if not audio.pcm:
            raise AudioError("the audio holds no samples")
        phrases = await recognize_audio(engine, locale, audio, f"rest-{mode}", reservation, receive=request.receive)
    if isinstance(fmt, SubtitleFormat):
        return subtitle_response(phrases, fmt, profanity)
    shape = fmt

    def answer(phrase: Phrase | None) -> dict[str, Any]:
        return phrase_json(phrase, shape, profanity, empty_duration=audio.seconds, word_timings=word_timings,
                           word_confidence=word_confidence)

    whole = answer(merge(phrases))
    if each_phrase:  # what the whole answer merges, for a client that builds subtitles from it too (the file transcriber)
        whole["Phrases"] = [answer(p) for p in phrases]
    return JSONResponse(whole)


_AUDIO = {"schema": {"type": "string", "format": "binary"}}
#: What the body may be, by ``Content-Type``; the body's own signature (RIFF, OggS, fLaC, ID3, MPEG frames, EBML, ftyp, ADTS
#: frames, QuickTime atoms: :func:`.audio.sniff`) wins over the type, but for frames or atoms under a type that declares
#: headerless PCM.
AUDIO_TYPES = {
    "audio/wav": "WAV: PCM (8, 16, 24, 32 bit), float, A-law or µ-law; 4-192 kHz; 1-32 channels (down-mixed); "
    "sizes of 0 or too large (a streamed WAV) are read to the end",
    "audio/wav; codecs=audio/pcm; samplerate=16000": "Azure's spelling: a WAV file, or headerless 16-bit little-endian PCM at `samplerate`",
    "audio/x-wav": "WAV, as `audio/wav`",
    "audio/wave": "WAV, as `audio/wav`",
    "audio/ogg; codecs=opus": "Ogg/Opus (Ogg/Vorbis too)",
    "audio/flac": "FLAC",
    "audio/mpeg": "MP3: MPEG-1, 2 or 2.5 Layer III, with or without an ID3v2 tag (`audio/mp3` too); its length counts as "
    "its decoded audio's unless a Xing/Info header gives it",
    "audio/webm": "WebM: Opus or Vorbis, as browsers' MediaRecorder records it, or Matroska (MKV) with Opus, Vorbis or AAC, as "
    "screen recorders record it (`video/webm`, `audio/x-matroska`, `video/x-matroska` too: its audio); decoded by FFmpeg in a "
    "process of its own",
    "audio/mp4": "MP4/M4A/MOV/3GP: AAC or ALAC, as phones record it, or AMR-NB or AMR-WB, as Android's voice and call "
    "recorders record 3GP (`audio/m4a`, `audio/x-m4a`, `video/mp4`, `video/quicktime`, `audio/3gpp`, `video/3gpp` too: its "
    "audio; a QuickTime movie without an `ftyp` box too); decoded by FFmpeg in a process of its own",
    "audio/aac": "raw AAC in ADTS frames, as voice recorders write it (`audio/x-aac`, `audio/aacp` too); decoded by FFmpeg in a "
    "process of its own",
    "audio/amr": "raw AMR-NB or AMR-WB (`#!AMR`, `#!AMR-WB`: `.amr`, `.awb`; `audio/amr-wb` too), as old phones and voice "
    "recorders write it; single-channel only (`#!AMR_MC1.0` is a 415); decoded by FFmpeg in a process of its own",
    "video/mpeg": "an MPEG program stream (`.mpg`, `.mpeg`: camcorders, video CDs) with MP2 or MP3 audio (`video/mp2p` too: its "
    "audio; one sent as `audio/mpeg` is decoded by its bytes); decoded by FFmpeg in a process of its own",
    "audio/l16; rate=16000; channels=1": "headerless 16-bit little-endian PCM at `rate` with `channels`",
    "application/octet-stream": f"{c.AUDIO_LISTED}, told apart by their first bytes",
}
RECOGNIZE = {
    "tags": [oa.RECOGNITION],
    "summary": "Recognize a short recording (REST)",
    "description": "Azure's *speech to text REST API for short audio*: the whole recording in the body "
    f"(`Transfer-Encoding: chunked` too), one answer for all of it. The audio is any of the types below; at most "
    f"`MaxAudioSeconds` (60 s by default): longer audio goes to a WebSocket route. [How to call it]({oa.HOME_REST}).",
    "parameters": [oa.MODE, oa.LANGUAGE, oa.REST_FORMAT, oa.PROFANITY, oa.WORD_TIMESTAMPS, oa.WORD_CONFIDENCE, oa.PHRASES, oa.ACCEPT_SUBTITLES],
    "security": oa.KEY_SECURITY,
    "requestBody": {
        "required": True,
        "description": "The audio, by `Content-Type`:\n\n" + "\n".join(f"- `{media}`: {what}" for media, what in AUDIO_TYPES.items()),
        "content": {media: _AUDIO for media in AUDIO_TYPES},
    },
    "responses": {
        "200": {"description": "the transcript (also `InitialSilenceTimeout` when no speech was heard); subtitles with "
                "`format=srt|vtt` (no cue when no speech was heard)",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Recognition"}}, **oa.SUBTITLES}},
        "400": oa.error(400, "audio that cannot be decoded, an empty body, a bad parameter, or a language no model serves "
                        "(the message names the languages served)",
                        f"the body {NOT_AUDIO}"),
        **oa.KEY_ERRORS,
        "404": oa.error(404, "no such recognition mode", "no recognition mode 'batch'; use one of interactive, conversation, dictation"),
        "408": oa.error(408, "the request's head or body did not arrive in time (`Http:HeaderTimeoutSeconds`, `Http:BodyTimeoutSeconds`); "
                        "the connection is closed", "the request's body paused for 10 s (Http:BodyTimeoutSeconds)"),
        "413": oa.error(413, "audio longer than `MaxAudioSeconds`, or a body over its size",
                        "the audio is 75.0 s long; this route takes at most 60 s (MaxAudioSeconds); use the WebSocket route for longer audio"),
        "431": oa.error(431, "the request's head is over `Http:MaxHeaderBytes`; the connection is closed",
                        "the request's head is over 16384 bytes (Http:MaxHeaderBytes)"),
        "415": oa.error(415, "an encoding or content type not served",
                        f"unsupported content type 'audio/x-ms-wma': send {c.AUDIO_LISTED} audio"),
        "502": oa.error(502, "FFmpeg's decoder of a WebM, MP4, AAC, AMR or MPEG-PS, a process of its own, crashed on it (the server serves on)",
                        "the WebM decoder (FFmpeg, in a process of its own) failed on this audio: signal SIGSEGV; nothing else "
                        "was affected"),
        "503": {**oa.error(503, "every decoder is busy (`DecoderMaxCount`), the model is loading, or the server is draining (shutting down): "
                           "retry after `Retry-After` seconds",
                           "all 6 decoders are busy; retry in 1 s"),
                "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}},
    },
}


def routes() -> list[BaseRoute]:
    """POST routes for the three recognition modes."""
    template = c.RECOGNITION_PATH_TEMPLATE.replace("{mode}", "{mode:str}")
    return [describe(Route(template, recognize, methods=["POST"], name="rest-recognize"), post=RECOGNIZE)]
