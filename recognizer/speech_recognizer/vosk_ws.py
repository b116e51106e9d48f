"""The vosk-server WebSocket protocol, so existing Vosk clients work unchanged.

Served at ``/vosk`` and at ``/`` (where vosk-server clients connect). An
optional first text message ``{"config": {"sample_rate", "phrase_list",
"words", "max_alternatives"}}``, then binary 16-bit PCM; every chunk is
answered with ``{"partial": …}`` or a final ``{"text", "result": [...]}``;
the text ``{"eof" : 1}`` flushes the final result and closes. The locale is
``?language=`` (default: the only locale served). Audio is read up to
:data:`~speech_recognizer.session.READ_AHEAD` chunks ahead of the replies, which
are the same as when the client waits for each.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from . import contract as c
from . import openapi as oa
from .auth import check_key
from .engine import Engine
from .errors import CLIENT_GONE, PROTOCOL_ERROR, BadValue, Failure, classify, close_args, observe
from .openapi import describe
from .rest import request_locale
from .session import READ_AHEAD, Session, Snapshot
from .settings import Settings
from .transcript import Event, Phrase

ROUTE = "vosk"
#: Most alternatives a client may ask for (each costs decoding time).
MAX_ALTERNATIVES = 100


def final_json(phrase: Phrase | None, max_alternatives: int, words: bool) -> dict[str, Any]:
    """Vosk's own final-result JSON for a phrase (``{"text": ""}`` when nothing was said)."""
    if max_alternatives:
        alternatives = []
        for alt in phrase.alternatives if phrase else ():
            entry: dict[str, Any] = {"confidence": alt.confidence, "text": alt.text}
            if words:
                entry["result"] = [{"end": w.end, "start": w.start, "word": w.text} for w in alt.words]
            alternatives.append(entry)
        return {"alternatives": alternatives or [{"confidence": 0.0, "text": ""}]}
    if phrase is None:
        return {"text": ""}
    out: dict[str, Any] = {"text": phrase.text}
    if words:
        out["result"] = [{"conf": w.confidence, "end": w.end, "start": w.start, "word": w.text} for w in phrase.words]
    return out


class VoskConfig:
    """What a client's ``{"config": …}`` message sets."""

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self.phrase_list: list[str] | None = None
        self.words = True
        self.max_alternatives = 0

    def update(self, config: object) -> None:
        """Apply a config message; raises :class:`~speech_recognizer.errors.BadValue` naming what is wrong."""
        if not isinstance(config, dict):
            raise BadValue(f"bad config: {str(config)[:40]!r} is not an object")
        try:
            if "sample_rate" in config:
                self.sample_rate = int(float(config["sample_rate"]))
            if "phrase_list" in config:
                if not isinstance(config["phrase_list"], list):
                    raise ValueError("phrase_list is not a list")
                self.phrase_list = [str(p) for p in config["phrase_list"]] or None
            if "words" in config:
                self.words = bool(int(config["words"]))
            if "max_alternatives" in config:
                self.max_alternatives = max(0, int(config["max_alternatives"]))
        except (TypeError, ValueError, OverflowError) as exc:  # e.g. "fast", 1e999 (inf), NaN, a list
            raise BadValue(f"bad config: {exc}") from None
        if self.max_alternatives > MAX_ALTERNATIVES:
            raise BadValue(f"bad config: max_alternatives {self.max_alternatives} is over {MAX_ALTERNATIVES}")


def first_phrase(events: list[Event]) -> Phrase | None:
    return next((e for e in events if isinstance(e, Phrase)), None)


def chunk_reply(snapshot: Snapshot, config: VoskConfig) -> dict[str, Any]:
    """The reply to one chunk: from the state that chunk left (:class:`~speech_recognizer.session.Snapshot`)."""
    phrase = first_phrase(snapshot.events)
    if phrase is not None or snapshot.endpoint:
        return final_json(phrase, config.max_alternatives, config.words)
    return {"partial": snapshot.partial_text}


async def _send_replies(ws: WebSocket, replies: asyncio.Queue[asyncio.Future[Snapshot] | None], config: VoskConfig) -> Failure | None:
    """Send each chunk's reply in order as its decoding ends, until ``None``; the failure that stopped it, if any.

    The receiving side reads ahead (up to :data:`READ_AHEAD` chunks) while this waits.
    A failed decode closes the connection as the failure policy says; after it, or after
    the client went away, the rest is drained unsent.
    """
    failure: Failure | None = None
    while (future := await replies.get()) is not None:
        try:
            reply = chunk_reply(await future, config)
        except Exception as exc:  # noqa: BLE001 - the connection ends with a reason, the server goes on
            if failure is None:
                failure = classify(exc)
                with contextlib.suppress(Exception):  # the client may be gone already
                    await ws.close(*close_args(failure))
            continue
        if failure is not None:
            continue
        try:
            await ws.send_text(json.dumps(reply, ensure_ascii=False))
        except Exception as exc:  # noqa: BLE001 - the client went away: nobody to answer
            failure = classify(exc) if isinstance(exc, (WebSocketDisconnect, ConnectionError)) else Failure("the client left", CLIENT_GONE)
    return failure


async def _serve(ws: WebSocket, engine: Engine, locale: str) -> None:
    """One conversation; raises the :class:`~speech_recognizer.errors.Failure` that ended it early."""
    model = await engine.registry.aload(locale)
    config = VoskConfig(model.sample_rate)
    session_cm = None
    session: Session | None = None
    replies: asyncio.Queue[asyncio.Future[Snapshot] | None] = asyncio.Queue(READ_AHEAD)
    sender = asyncio.create_task(_send_replies(ws, replies, config))
    try:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                if sender.done() and sender.result() is not None:
                    raise sender.result()
                return
            data = message.get("bytes")
            text = message.get("text")
            if text is not None:
                try:
                    parsed = json.loads(text)
                except ValueError:
                    raise BadValue("text messages must be JSON: a config or {\"eof\" : 1}") from None
                if isinstance(parsed, dict) and "config" in parsed:
                    if session is not None:
                        raise Failure("config must come before the audio", PROTOCOL_ERROR)
                    config.update(parsed["config"])
                    continue
                if isinstance(parsed, dict) and "eof" in parsed:
                    if session is None:
                        await ws.send_text(json.dumps(final_json(None, config.max_alternatives, config.words)))
                    else:
                        finishing = asyncio.create_task(session.finish())  # queued behind the last chunk
                        await replies.put(None)
                        if (failure := await sender) is not None:
                            finishing.cancel()
                            raise failure
                        phrase = first_phrase(await finishing)
                        await ws.send_text(json.dumps(final_json(phrase, config.max_alternatives, config.words), ensure_ascii=False))
                    await ws.close()
                    return
                raise BadValue("unknown text message; send a config, audio, or {\"eof\" : 1}")
            if data is None:
                continue
            if session is None:
                session_cm = engine.session(
                    locale,
                    config.sample_rate,
                    route=ROUTE,
                    max_alternatives=config.max_alternatives,
                    words=config.words,
                    phrase_list=config.phrase_list,
                )
                session = await session_cm.__aenter__()
            await replies.put(session.feed_ahead(data))
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        if session_cm is not None:
            await session_cm.__aexit__(None, None, None)


async def vosk_endpoint(ws: WebSocket) -> None:
    """One vosk-server conversation; every failure is answered by :mod:`.errors` (a close code and reason)."""
    settings: Settings = ws.app.state.settings
    engine: Engine = ws.app.state.engine
    metrics = ws.app.state.metrics
    # Accept first, even a request without its key: a close before the handshake becomes a bare
    # HTTP 403 and the reason is lost.
    await ws.accept()
    try:
        check_key(settings.api_key, ws.headers, dict(ws.query_params), websocket=True)
        await _serve(ws, engine, request_locale(dict(ws.query_params), engine))
    except Exception as exc:  # noqa: BLE001 - every failure is answered by the policy
        failure = classify(exc)
        observe(failure, ROUTE, metrics)
        if failure.kind is not CLIENT_GONE:
            with contextlib.suppress(Exception):  # the client may be gone already
                await ws.close(*close_args(failure))
        return
    metrics.succeeded(ROUTE)


VOSK = {
    "tags": [oa.RECOGNITION],
    "summary": "WebSocket: the vosk-server protocol",
    "description": "What existing Vosk clients speak, unchanged: an optional config, 16-bit mono PCM in binary messages, "
    "a reply to each, `{\"eof\" : 1}` for the last result. Also served on `/`, where vosk-server clients connect. "
    f"The key, when the server has one, goes in a header or the query. [How to call it]({oa.HOME_VOSK}).",
    "parameters": [oa.LANGUAGE],
    "security": oa.KEY_SECURITY,
    "responses": {"101": oa.SWITCHING, "426": oa.UPGRADE_REQUIRED},
    "x-websocket": {
        "protocol": "vosk-server's WebSocket protocol",
        "clientMessages": {
            "config": 'text, optional, before any audio: `{"config": {"sample_rate": 16000, "phrase_list": ["..."], '
            '"words": 1, "max_alternatives": 0}}` (sample_rate: of the PCM that follows; default the model\'s)',
            "audio": "binary: 16-bit little-endian mono PCM at `sample_rate`, in chunks of any size",
            "eof": 'text `{"eof" : 1}`: the audio is over; the final result follows, then the close',
        },
        "serverMessages": {
            "partial": 'one per chunk while an utterance goes on: `{"partial": "..."}`',
            "result": 'one per chunk that ends an utterance, and after eof: `{"text": "...", "result": [{"conf", "start", "end", '
            '"word"}]}` (seconds; `result` with `words`), or `{"alternatives": [{"confidence", "text"}]}` with `max_alternatives`',
        },
        "closeCodes": {
            "1000": "after the final result (eof)",
            "1002": "protocol error: a config after the audio",
            "1007": "invalid data: a text message that is not JSON, a bad config, an unknown message, an impossible sample rate, "
            "a language no model serves",
            "1008": "policy: a missing or wrong key (the reason says which)",
            "1011": "decoding failed (a server error)",
            "1012": "the server restarts: its drain ran out of time (`Drain:Seconds`)",
            "1013": "try again later: every decoder is busy (`DecoderMaxCount`), the model cannot be loaded now, or the "
            "server is draining (shutting down: connect again to reach another)",
        },
    },
}


def routes() -> list[BaseRoute]:
    """``/vosk`` (and its 426 for a plain GET), and ``/``, whose GET is the home page."""
    return [*oa.websocket_routes(c.ROUTE_VOSK_WS, vosk_endpoint, VOSK),
            describe(WebSocketRoute(c.ROUTE_HOME, vosk_endpoint), websocket=VOSK)]
