"""OpenAI's ``POST /v1/audio/transcriptions``, so that apps and SDKs written for it work unchanged.

A multipart form: ``file`` (any audio the REST route takes), ``model`` (any name: this server
has one model per locale), ``language`` (``ko`` or ``ko-KR``; else ``?language=``; else the only locale served),
``response_format`` (``json``, ``text``, ``srt``, ``vtt``, ``verbose_json``) and
``timestamp_granularities[]`` (``segment``, ``word``; with ``verbose_json``). ``prompt`` and
``temperature`` are accepted and ignored: Vosk's phrase list would *restrict* recognition to the
phrases given, which is not what a prompt means. The key, when the server has one, is OpenAI's
bearer token (``OpenAI(api_key=…)``).

The upload is bounded as the REST route's body is (same size limit, a decoder held before the
body is read, ``MaxAudioSeconds``), and recognized the same way: a segment is one utterance, the
REST route's phrase, with the same word times. Failures are answered by the failure policy
(:mod:`.errors`) in OpenAI's error shape.
"""

from __future__ import annotations

import asyncio
import math
import time
import zlib
from collections.abc import AsyncGenerator
from typing import Any

from python_multipart.multipart import parse_options_header
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from . import contract as c
from . import openapi as oa
from .audio import AudioError, decode
from .auth import check_key
from .engine import Engine
from .errors import UNSUPPORTED_MEDIA, BadValue, Failure, openai_response, settle
from .openapi import describe
from .rest import client_gone, read_body, recognize_audio, request_locale
from .results import written, written_words
from .scratch import FORM_FIELD_BYTES, upload_bytes
from .settings import Settings
from .subtitles import SubtitleFormat
from .subtitles import render as subtitles
from .transcript import Phrase

ROUTE = "openai"
RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
GRANULARITIES = ("segment", "word")


#: Pieces the body is handed to the form parser in. Whole, the file's part came out of it as one copy of it
#: (23 MB at the limit), which the spooled file first took whole in memory too, a third copy beside the body.
_PARSE_PIECE = 1 << 20


async def _replay(body: bytes | bytearray) -> AsyncGenerator[bytes, None]:
    view = memoryview(body)
    for start in range(0, len(view), _PARSE_PIECE):
        yield view[start : start + _PARSE_PIECE].tobytes()


class _FormParser(MultiPartParser):
    """Starlette's parser, told whether the form's closing boundary came: without it, the parts
    read so far would pass for the whole form and the part the body was cut in would be dropped unsaid."""

    ended = False

    def on_end(self) -> None:
        self.ended = True

    def on_headers_finished(self) -> None:
        """Starlette's, except that a part with a filename other than ``file`` (``language`` sent as a file: ``curl -F
        language=@ko.txt``), or a second ``file``, is refused saying so: Starlette said "Too many files"."""
        _, options = parse_options_header(self._current_part.content_disposition)
        if b"filename" in options and b"name" in options:
            name = options[b"name"].decode("latin-1")
            if name != "file":
                raise MultiPartException(f"the field {name[:64]!r} is sent as a file (its part has a filename): send it "
                                         "as a plain form field; only 'file' is a file")
            if self._current_files >= 1:
                raise MultiPartException("the field 'file' is given twice: send one file")
        super().on_headers_finished()


async def parse_form(request: Request, body: bytes | bytearray) -> FormData:
    """The multipart form in ``body`` (one file, a few short fields); a bad form (a cut one too) is a 400,
    another type a 415."""
    media = request.headers.get("content-type", "")
    if not media.lower().startswith("multipart/form-data"):
        raise Failure(f"unsupported content type {media.split(';')[0]!r}: send multipart/form-data with the audio "
                      "in the field 'file' (as OpenAI's clients do)", UNSUPPORTED_MEDIA)
    parser = _FormParser(request.headers, _replay(body), max_files=1, max_fields=32, max_part_size=FORM_FIELD_BYTES)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise BadValue(f"the multipart form cannot be read: {exc.message}") from None
    if not parser.ended:
        await form.close()
        raise BadValue(f"the multipart form ends before its closing boundary ({len(body)} bytes read): "
                       "the body was cut short, or its Content-Length is too small")
    return form


def _one(form: FormData, name: str) -> str | UploadFile | None:
    """The part ``name`` (None: absent); given twice, a 400, since which one was meant cannot be told."""
    values = form.getlist(name)
    if len(values) > 1:
        raise BadValue(f"the field {name!r} is given {len(values)} times: send it once")
    return values[0] if values else None


def _field(form: FormData, name: str, default: str = "") -> str:
    """The field ``name``'s value (``default`` when absent or a file)."""
    value = _one(form, name)
    return value.strip() if isinstance(value, str) else default


def _granularities(form: FormData) -> set[str]:
    asked = {str(v).strip() for v in form.getlist("timestamp_granularities[]") + form.getlist("timestamp_granularities")}
    unknown = asked - set(GRANULARITIES)
    if unknown:
        raise BadValue(f"timestamp_granularities[]={sorted(unknown)[0]!r}: use segment or word")
    return asked or {"segment"}


def _compression_ratio(text: str) -> float:
    """As Whisper reports it: the text's bytes over their zlib-compressed size."""
    raw = text.encode("utf-8")
    return round(len(raw) / len(zlib.compress(raw)), 6) if raw else 0.0


def segment_json(index: int, phrase: Phrase) -> dict[str, Any]:
    """A ``verbose_json`` segment: one utterance (the REST route's phrase), times in seconds.

    ``avg_logprob`` is the mean log of the words' confidences; ``seek`` the start in
    hundredths of a second (Whisper's frames); Vosk has no tokens and no temperature.
    """
    text = written(phrase.text)
    confidences = [max(w.confidence, 1e-6) for w in phrase.words] or [max(phrase.confidence, 1e-6)]
    return {
        "id": index,
        "seek": int(round(phrase.start * 100)),
        "start": phrase.start,
        "end": phrase.end,
        "text": text,
        "tokens": [],
        "temperature": 0.0,
        "avg_logprob": round(sum(math.log(c) for c in confidences) / len(confidences), 6),
        "compression_ratio": _compression_ratio(text),
        "no_speech_prob": 0.0,
    }


def answer(phrases: list[Phrase], fmt: str, granularities: set[str], locale: str, seconds: float) -> Response:
    """The transcription in ``fmt``, from the recognized phrases."""
    text = " ".join(t for t in (written(p.text) for p in phrases) if t)
    if fmt == "text":
        return PlainTextResponse(text + "\n")
    if fmt in ("srt", "vtt"):
        subtitle = SubtitleFormat(fmt)
        return Response(subtitles(phrases, subtitle), media_type=f"{subtitle.media_type}; charset=utf-8")
    usage = {"type": "duration", "seconds": math.ceil(seconds)}
    if fmt == "json":
        return JSONResponse({"text": text, "usage": usage})
    body: dict[str, Any] = {"task": "transcribe", "language": locale, "duration": round(seconds, 6), "text": text}
    if "segment" in granularities:
        body["segments"] = [segment_json(i, p) for i, p in enumerate(phrases)]
    if "word" in granularities:
        body["words"] = [{"word": w.text, "start": w.start, "end": w.end} for p in phrases for w in written_words(p.words)]
    body["usage"] = usage
    return JSONResponse(body)


async def transcriptions(request: Request) -> Response:
    """Transcribe the uploaded file; a failure is answered by :mod:`.errors` in OpenAI's shape."""
    metrics = request.app.state.metrics
    started = time.monotonic()
    try:
        response = await _transcribe(request)
    except Exception as exc:  # noqa: BLE001 - every failure is answered by the policy
        failure = settle(exc, ROUTE, metrics, started, scope=request.scope)  # a body the server refused: counted there
        return openai_response(failure)
    metrics.succeeded(ROUTE, started)
    return response


async def _transcribe(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    engine: Engine = request.app.state.engine
    check_key(settings.api_key, request.headers, request.query_params.multi_items(), websocket=False)
    limit = upload_bytes(settings.max_audio_seconds)  # the form's file past 1 MiB goes to /tmp (scratch.py)
    # As on the REST route: a decoder is held before the body is read and decoded, so a busy server
    # refuses at once instead of after reading and decoding a body for nothing.
    with engine.reserve() as reservation:
        form = await parse_form(request, await read_body(request, limit))
        try:
            upload = _one(form, "file")
            if isinstance(upload, str):
                raise BadValue("the field 'file' is not a file: its Content-Disposition needs a filename (filename=\"a.wav\")")
            if not isinstance(upload, UploadFile):
                raise BadValue("no audio: send the file in the multipart field 'file'")
            fmt = _field(form, "response_format", "json").lower()
            if fmt not in RESPONSE_FORMATS:
                raise BadValue(f"response_format={fmt!r}: use {', '.join(RESPONSE_FORMATS)}")
            granularities = _granularities(form)
            # the form's field (OpenAI's), else ?language= (what a gateway in front routed by), else the only locale
            language = _field(form, "language")
            locale = engine.registry.resolve(request_locale({"language": language} if language else dict(request.query_params), engine))
            await engine.registry.aload_watched(locale, lambda: client_gone(request))  # a client gone meanwhile: at once
            data = await upload.read()
            ctype = upload.content_type or ""
        finally:
            await form.close()
        audio = await asyncio.to_thread(decode, data, ctype, max_seconds=settings.max_audio_seconds)
        del data  # the PCM is all that is kept while it is recognized
        if not audio.pcm:
            raise AudioError("the audio holds no samples")
        phrases = await recognize_audio(engine, locale, audio, ROUTE, reservation, receive=request.receive)
    return answer(phrases, fmt, granularities, locale, audio.seconds)


_TEXT = {"schema": {"type": "string"}}
TRANSCRIPTIONS = {
    "tags": [oa.RECOGNITION],
    "summary": "Transcribe a file (OpenAI-compatible)",
    "description": "OpenAI's `audio.transcriptions` API, so that its clients work unchanged "
    "(`OpenAI(base_url=\"http://host:5000/v1\", api_key=<ApiKey>)`). The file is any audio the REST route takes, "
    "at most `MaxAudioSeconds`; a segment is one utterance, with the REST route's word times. `model` may be any name, "
    "`prompt` and `temperature` are ignored. The key, when the server has one, is the bearer token. Errors are "
    "OpenAI's shape: `{\"error\": {\"message\", \"type\", \"param\", \"code\"}}`, `code` naming the failure.",
    "security": oa.KEY_SECURITY,
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {
                    "file": {"type": "string", "format": "binary", "description": c.AUDIO_LISTED},
                    "model": {"type": "string", "example": "whisper-1", "description": "any name (one model per locale here)"},
                    "language": {"type": "string", "example": "ko", "description": "ISO-639-1 or a locale; else the query's `language`, else the only one served"},
                    "prompt": {"type": "string", "description": "ignored"},
                    "response_format": {"type": "string", "enum": list(RESPONSE_FORMATS), "default": "json"},
                    "temperature": {"type": "number", "description": "ignored"},
                    "timestamp_granularities[]": {"type": "array", "items": {"type": "string", "enum": list(GRANULARITIES)},
                                                  "description": "with `verbose_json`: `segments`, `words` or both (default: segments)"},
                },
            },
            "encoding": {"timestamp_granularities[]": {"style": "form", "explode": True}},
        }},
    },
    "responses": {
        "200": {"description": "the transcription in `response_format`",
                "content": {
                    "application/json": {"schema": {"type": "object"}, "examples": {
                        "json": {"value": {"text": "오늘 날씨가 좋습니다", "usage": {"type": "duration", "seconds": 3}}},
                        "verbose_json": {"value": {
                            "task": "transcribe", "language": "ko-KR", "duration": 2.5, "text": "오늘 날씨가 좋습니다",
                            "segments": [{"id": 0, "seek": 56, "start": 0.56, "end": 1.88, "text": "오늘 날씨가 좋습니다",
                                          "tokens": [], "temperature": 0.0, "avg_logprob": -0.02, "compression_ratio": 0.9,
                                          "no_speech_prob": 0.0}],
                            "words": [{"word": "오늘", "start": 0.56, "end": 0.9}],
                            "usage": {"type": "duration", "seconds": 3}}},
                    }},
                    "text/plain": _TEXT,
                    **oa.SUBTITLES,
                }},
        "400": {"description": "a bad form or field, audio that cannot be decoded, or a language no model serves",
                "content": {"application/json": {"example": {"error": {
                    "message": "response_format='xml': use json, text, srt, vtt, verbose_json", "type": "invalid_request_error",
                    "param": None, "code": "bad_value"}}}}},
        "401": {"description": "wrong key"},
        "403": {"description": "missing key (the server has an `ApiKey`)"},
        "408": {"description": "the body paused for `Http:BodyTimeoutSeconds`, or did not all arrive within `MaxAudioSeconds` "
                               "plus that (OpenAI's error shape, `code` `upload_timeout`); the connection is closed"},
        "413": {"description": "audio longer than `MaxAudioSeconds`, or a body over its size"},
        "415": {"description": "not multipart/form-data, or an audio encoding not served"},
        "502": {"description": "FFmpeg's decoder of a WebM, MP4, AAC, AMR or MPEG-PS (mp4, m4a, webm, aac, amr, mpg...), a process of its own, crashed on it; the "
                               "server serves on"},
        "503": {"description": "every decoder is busy, the model is loading, or the server is draining: retry after `Retry-After`",
                "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}},
    },
}


def routes() -> list[BaseRoute]:
    return [describe(Route(c.ROUTE_OPENAI_TRANSCRIPTIONS, transcriptions, methods=["POST"]), post=TRANSCRIPTIONS)]
