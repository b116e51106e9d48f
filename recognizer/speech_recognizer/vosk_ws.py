"""The vosk-server WebSocket protocol, so existing Vosk clients work unchanged.

Served at ``/vosk`` and at ``/`` (where vosk-server clients connect). An
optional first text message ``{"config": {"sample_rate", "phrase_list",
"words", "max_alternatives"}}``, then binary 16-bit PCM; every chunk is
answered with ``{"partial": …}`` or a final ``{"text", "result": [...]}``,
Vosk's words as vosk-server sends them (``[9]``, ``<UNK>``). A config's
``"written": 1`` (not vosk-server's: it ignores it) asks for every text of the
replies as :func:`~speech_recognizer.results.written` writes it for people
(``9``), as the demo page does;
the text ``{"eof" : 1}`` flushes the final result and closes; ``{"reset" : 1}``
answers the final result so far and the stream goes on (as vosk-server does). The
locale is ``?language=`` (default: the only locale served). Audio is read up to
:data:`~speech_recognizer.session.READ_AHEAD` chunks ahead of the replies, which
are the same as when the client waits for each. A client that sends no audio for
``AudioIdleSeconds``, or streams longer than ``MaxSessionSeconds``, gets the final
result of its audio and a close (1008) saying which, unless it took in none of its replies in that idle time
(``not_reading``: its connection reset, nothing more sent; :mod:`.deadlines`); one that sends nothing for
``ConnectionIdleSeconds`` before its first audio is closed with 1000 and the reason.
Only a stream ended with eof is a success: a client that leaves without it is counted as gone (``client_gone``), as
a Speech SDK client that leaves mid-turn is, however much of its audio was decoded, and before any audio too; one the
drain's deadline cuts (the server's stop closes it, 1012) is counted as the drain's (``draining``). Its
end of the connection (a FIN or a reset) may come behind more audio than the inbox reads ahead: decoding stops at the
next chunk once the kernel has it (:mod:`.inbox`), the rest dropped undecoded. A client that half-closes (its FIN
read after what it sent, and no reset to the server's probe: it reads on) is answered all it sent, its final result
after eof and the close; without eof it is counted as gone once its audio is answered.
A locale whose model is not loaded yet is loaded at the client's arrival, the client watched meanwhile: one that
leaves during the load is let go (``client_gone``) at once, the load going on for others.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket

from . import contract as c
from . import openapi as oa
from .auth import check_key
from .deadlines import Deadlines
from .engine import Engine
from .errors import CLIENT_GONE, DRAINING, NOT_READING, PROTOCOL_ERROR, BadValue, Failure, classify, close_args, settle
from .frame_budget import CUT_OFF
from .inbox import SHUTDOWN_CLOSE, Inbox, held, left_before_audio
from .models import model_sample_rate
from .openapi import describe
from .rest import request_locale
from .results import written, written_words
from .scratch import SPILL_BYTES
from .session import READ_AHEAD, Session, Snapshot
from .settings import Settings
from .transcript import Event, Phrase, Word

ROUTE = "vosk"
#: Most alternatives a client may ask for (each costs decoding time).
MAX_ALTERNATIVES = 100


def _shown(words: Sequence[Word], for_people: bool) -> Sequence[Word]:
    """The words as sent: as Vosk said them, or as :func:`~speech_recognizer.results.written_words` writes them
    for people (a number of several tokens one word over their times, a word written as nothing left out)."""
    return written_words(words) if for_people else words


def final_json(phrase: Phrase | None, max_alternatives: int, words: bool, for_people: bool = False) -> dict[str, Any]:
    """Vosk's own final-result JSON for a phrase (``{"text": ""}`` when nothing was said); ``for_people``: each
    text written for people (:func:`~speech_recognizer.results.written`), as a config's ``"written"`` asks."""
    if max_alternatives:
        alternatives = []
        for alt in phrase.alternatives if phrase else ():
            entry: dict[str, Any] = {"confidence": alt.confidence, "text": written(alt.text) if for_people else alt.text}
            if words:
                entry["result"] = [{"end": w.end, "start": w.start, "word": w.text} for w in _shown(alt.words, for_people)]
            alternatives.append(entry)
        return {"alternatives": alternatives or [{"confidence": 0.0, "text": ""}]}
    if phrase is None:
        return {"text": ""}
    out: dict[str, Any] = {"text": written(phrase.text) if for_people else phrase.text}
    if words:
        out["result"] = [{"conf": w.confidence, "end": w.end, "start": w.start, "word": w.text}
                         for w in _shown(phrase.words, for_people)]
    return out


class VoskConfig:
    """What a client's ``{"config": …}`` message sets."""

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self.phrase_list: list[str] | None = None
        self.words = True
        self.max_alternatives = 0
        #: ``"written"``: the replies' texts written for people (``[9]`` -> ``9``), not as Vosk said them.
        self.written = False

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
            if "written" in config:
                self.written = bool(int(config["written"]))
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
        return final_json(phrase, config.max_alternatives, config.words, config.written)
    return {"partial": written(snapshot.partial_text) if config.written else snapshot.partial_text}


#: What the reply queue holds: a decoding job's future and how its result becomes the reply sent.
Reply = tuple["asyncio.Future[Any]", Callable[[Any], dict[str, Any]]]


class Conversation:
    """One vosk-server conversation on an accepted WebSocket.

    Audio is read up to :data:`READ_AHEAD` chunks ahead of the replies; :meth:`_send_replies`
    sends each reply in order as its decoding ends. The wait for each message is bounded by
    :class:`~speech_recognizer.deadlines.Deadlines`: a client that sends no audio for
    ``AudioIdleSeconds``, or whose session reaches ``MaxSessionSeconds``, gets the final result
    of what it sent and a close with the reason.
    """

    def __init__(self, ws: WebSocket, engine: Engine, locale: str, deadlines: Deadlines,
                 draining: Callable[[], bool] = lambda: False) -> None:
        """``draining``: whether the server drains (a connection it closes before any audio is the drain's)."""
        self.ws = ws
        self.draining = draining
        self.engine = engine
        self.locale = locale
        self.deadlines = deadlines
        self.config: VoskConfig | None = None
        self.session: Session | None = None
        self._session_cm: Any = None
        self._replies: asyncio.Queue[Reply | None] = asyncio.Queue(READ_AHEAD)
        self._sender: asyncio.Task[None] | None = None
        #: What stopped the replies (a failed decode, a client gone), as soon as :meth:`_send_replies` meets it: read
        #: while it runs (a disconnect after the failure's close) and after it ended (:meth:`_final`).
        self._failure: Failure | None = None
        self.inbox: Inbox
        #: When its last message arrived, and the eof its final result answers (``speech_request_seconds`` runs from
        #: them: a failure's from the first, a success's from the second), once they came.
        self.heard: float | None = None
        self.final_from: float | None = None

    async def run(self) -> None:
        """Serve until eof or the client leaves; raises the :class:`~speech_recognizer.errors.Failure` that ended it early
        (a client that left with a stream unfinished among them)."""
        self.inbox = Inbox(self.ws.receive, ended=self.deadlines.ended_unread(), spill=SPILL_BYTES,
                           budget=self.engine.spills)
        try:
            model = await self.inbox.model(self.engine.registry, self.locale)
            self.config = VoskConfig(model.sample_rate)
            self._sender = asyncio.create_task(self._send_replies())
            while True:
                try:
                    message = await self.deadlines.receive(self.inbox.receive)
                    self.heard = self.inbox.arrived
                except Failure as failure:  # idle, or too long: what was sent is answered, then the close says why
                    if self.session is not None and failure.kind is not NOT_READING:  # (not reading: reset, nobody to answer)
                        await self._arrived_audio()
                        await self._final()
                    raise
                if message["type"] == "websocket.disconnect":
                    if (cut := message.get(CUT_OFF)) is not None:  # closed by the protocol for its frames (frame_budget)
                        raise cut
                    # A failed decode closed the connection (the client's answer to that close is this disconnect)
                    # while the sender waits for more to drain: the failure is still this conversation's end.
                    if self._failure is not None:
                        raise self._failure
                    dropped = f"; {self.inbox.dropped_bytes} bytes it had sent were dropped undecoded" if self.inbox.dropped_bytes else ""
                    if self.session is not None and message.get("code") == SHUTDOWN_CLOSE and self.draining():
                        # the server's stop closed it (its drain out of time), not its client: nothing more can be sent
                        raise Failure(f"the stream was cut, the server's drain out of time{dropped}", DRAINING)
                    if dropped:
                        raise Failure(f"the client left{dropped}", CLIENT_GONE)
                    if self.session is not None:  # its stream unfinished, as a Speech SDK turn left without its end of audio
                        raise Failure('the client left without {"eof" : 1}: its stream was never finished', CLIENT_GONE)
                    raise left_before_audio("the connection", self.draining())
                if message.get("text") is not None:
                    if await self._text(message["text"]):
                        return
                elif message.get("bytes") is not None:
                    await self._audio(message["bytes"])
        finally:
            await self.inbox.close()
            if self._sender is not None:
                self._sender.cancel()
                await asyncio.gather(self._sender, return_exceptions=True)
            # Cancelled, the task keeps its CancelledError, whose traceback holds the task's frame, which holds
            # this conversation: a cycle that kept it, its session and recognition for Python's collector.
            self._sender = None
            self._failure = None  # raised (the route settles it), or a later end's: either way not this one's to keep
            if self._session_cm is not None:
                if self.session is not None and self.config is not None:  # 16-bit mono PCM at the config's rate
                    self.session.abandoned_seconds += self.inbox.dropped_audio_bytes / (2 * self.config.sample_rate)
                self.deadlines.session_ended()
                await self._session_cm.__aexit__(None, None, None)

    def count_unadmitted(self, metrics: Any) -> None:
        """Count the audio a client sent and left behind before its stream had a session (while its model loaded:
        :meth:`~.inbox.Inbox.model` reads ahead meanwhile) as abandoned, as a session's is at its end: 16-bit mono PCM
        at the rate the client's config among what was dropped says (:meth:`_declared_rate`), else the model's."""
        inbox = getattr(self, "inbox", None)
        if self.session is not None or inbox is None or not inbox.dropped_audio_bytes:
            return
        served = self.engine.registry.resolve(self.locale)
        if served not in self.engine.registry.sources:  # refused: no locale of a client's own in the labels
            return
        rate = self.config.sample_rate if self.config is not None else self._declared_rate(inbox.dropped, served)
        metrics.audio_abandoned(ROUTE, served, inbox.dropped_audio_bytes / (2 * rate))

    def _declared_rate(self, dropped: Sequence[Mapping[str, Any]], served: str) -> int:
        """The sample rate of the audio among ``dropped`` (messages read ahead, never handled): the last config's
        before it that the stream would have taken, else the ``served`` model's (a client that declares none sends
        audio at it)."""
        model_rate = model_sample_rate(self.engine.registry.sources[served])
        config = VoskConfig(model_rate)
        for message in dropped:
            if message.get("text") is None:
                break  # a config after the audio is refused: only those before it say the audio's rate
            with contextlib.suppress(ValueError, RecursionError, BadValue):
                parsed = json.loads(message["text"])
                if isinstance(parsed, dict) and "config" in parsed:
                    config.update(parsed["config"])
        return config.sample_rate if config.sample_rate > 0 else model_rate

    async def _arrived_audio(self) -> None:
        """At the cut (idle, too long): the audio that had arrived, read ahead or coming as the deadline passed, goes to
        the decoder before the final result, each chunk answered as before: a client that sent ahead of the decoding is
        answered for everything the server took in, and tells by the replies which chunks were decoded. (Dropped, the
        final result read as the answer to the last chunk sent, and that audio was lost unseen.) At most the inbox's
        read-ahead in memory (:data:`~speech_recognizer.inbox.READ_AHEAD_BYTES`), what it kept on disk beyond dropped
        undecoded (the stream is over); up to the first message that is not audio."""
        self.inbox.ahead = False
        taken = 0
        while taken < self.inbox.limit and (message := self.inbox.take_arrived()) is not None:
            if message.get("bytes") is None:
                break
            taken += held(message)
            await self._audio(message["bytes"])
        self.inbox.drop()

    async def _audio(self, data: bytes) -> None:
        config = self.config
        assert config is not None
        if self.session is None:
            self._session_cm = self.engine.session(
                self.locale,
                config.sample_rate,
                route=ROUTE,
                max_alternatives=config.max_alternatives,
                words=config.words,
                phrase_list=config.phrase_list,
            )
            self.session = await self._session_cm.__aenter__()
            self.deadlines.session_started()
            self.inbox.ahead = True  # so that a client gone with audio still unread is seen at once
        self.deadlines.owe()
        await self._replies.put((self.session.feed_ahead(data), lambda snapshot: chunk_reply(snapshot, config)))
        self.deadlines.heard()

    async def _text(self, text: str) -> bool:
        """A text message: a config, ``{"reset": 1}`` or ``{"eof": 1}``; True when the conversation is over."""
        config = self.config
        assert config is not None
        try:
            parsed = json.loads(text)
        except ValueError:
            raise BadValue("text messages must be JSON: a config, {\"reset\" : 1} or {\"eof\" : 1}") from None
        except RecursionError:  # the parser's depth is the interpreter's: "[" * 100000 fits in a message
            raise BadValue("a text message is nested too deeply; send a config, {\"reset\" : 1} or {\"eof\" : 1}") from None
        if not isinstance(parsed, dict):
            raise BadValue("unknown text message; send a config, audio, {\"reset\" : 1} or {\"eof\" : 1}")
        if "config" in parsed:
            if self.session is not None:
                raise Failure("config must come before the audio", PROTOCOL_ERROR)
            config.update(parsed["config"])
            return False
        if "reset" in parsed:  # vosk-server: the final result so far, and the stream goes on
            self.deadlines.owe()
            await self._replies.put(self._final_reply())
            return False
        if "eof" in parsed:
            self.final_from = self.heard
            await self._final()
            await self.ws.close()
            return True
        raise BadValue("unknown text message; send a config, audio, {\"reset\" : 1} or {\"eof\" : 1}")

    def _final_reply(self) -> Reply:
        """The final result of the audio so far (the decoder flushed, after the chunks queued before it)."""
        config = self.config
        assert config is not None
        if self.session is None:
            done: asyncio.Future[list[Event]] = asyncio.get_running_loop().create_future()
            done.set_result([])
            future = done
        else:
            future = self.session.finish_ahead()
        return future, lambda events: final_json(first_phrase(events), config.max_alternatives, config.words, config.written)

    async def _final(self) -> None:
        """Send every reply still due and the final result, then stop sending (eof, idle, too long)."""
        assert self._sender is not None
        self.deadlines.owe()
        await self._replies.put(self._final_reply())
        await self._replies.put(None)
        await self._sender
        if self._failure is not None:
            raise self._failure

    async def _send_replies(self) -> None:
        """Send each reply in order as its decoding ends, until ``None``; what stopped it goes in ``_failure``.

        A failed decode closes the connection as the failure policy says; after it, or after
        the client went away, the rest is drained unsent.
        """
        while (item := await self._replies.get()) is not None:
            future, make = item
            try:
                reply = make(await future)
            except Exception as exc:  # noqa: BLE001 - the connection ends with a reason, the server goes on
                self.deadlines.paid()
                if self._failure is None:
                    self._failure = classify(exc)
                    with contextlib.suppress(Exception):  # the client may be gone already
                        await self.ws.close(*close_args(self._failure))
                continue
            if self._failure is not None:
                self.deadlines.paid()
                continue
            try:
                await self.ws.send_text(json.dumps(reply, ensure_ascii=False))
            except Failure as failure:  # it took in none of its replies for too long (NOT_READING): cut off
                self._failure = failure
            except Exception:  # noqa: BLE001 - the client went away: nobody to answer
                self._failure = Failure("the client left before its replies were sent", CLIENT_GONE)
            finally:
                self.deadlines.paid()


async def vosk_endpoint(ws: WebSocket) -> None:
    """One vosk-server conversation; every failure is answered by :mod:`.errors` (a close code and reason)."""
    settings: Settings = ws.app.state.settings
    engine: Engine = ws.app.state.engine
    metrics = ws.app.state.metrics
    # Accept first, even a request without its key: a close before the handshake becomes a bare
    # HTTP 403 and the reason is lost.
    await ws.accept()
    conversation: Conversation | None = None
    try:
        check_key(settings.api_key, ws.headers, ws.query_params.multi_items(), websocket=True)
        drain = getattr(ws.app.state, "drain", None)
        conversation = Conversation(ws, engine, request_locale(dict(ws.query_params), engine), Deadlines.of(settings, ws.scope),
                                    lambda: drain is not None and drain.draining)
        await conversation.run()
    except Exception as exc:  # noqa: BLE001 - every failure is answered by the policy
        failure = settle(exc, ROUTE, metrics, conversation.heard if conversation is not None else None)
        if conversation is not None:
            conversation.count_unadmitted(metrics)
        if failure.kind is not CLIENT_GONE:
            with contextlib.suppress(Exception):  # the client may be gone already
                await ws.close(*close_args(failure))
        return
    metrics.succeeded(ROUTE, conversation.final_from)


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
            '"words": 1, "max_alternatives": 0}}` (sample_rate: of the PCM that follows; default the model\'s). Not '
            'vosk-server\'s: `"written": 1` makes every text of the replies written for people, as the other routes\' '
            'display forms are (the model\'s `[9]` as `9`, `<UNK>` left out); without it, Vosk\'s words as vosk-server sends them',
            "audio": "binary: 16-bit little-endian mono PCM at `sample_rate`, in chunks of any size",
            "reset": 'text `{"reset" : 1}`: the final result of the audio so far follows, and the stream goes on',
            "eof": 'text `{"eof" : 1}`: the audio is over; the final result follows, then the close',
        },
        "serverMessages": {
            "partial": 'one per chunk while an utterance goes on: `{"partial": "..."}`',
            "result": 'one per chunk that ends an utterance, and after reset and eof: `{"text": "...", "result": [{"conf", "start", "end", '
            '"word"}]}` (seconds; `result` with `words`), or `{"alternatives": [{"confidence", "text"}]}` with `max_alternatives`',
        },
        "closeCodes": {
            "1000": "after the final result (eof); or a connection with no stream in progress closed with the reason: "
            "it sent nothing for `ConnectionIdleSeconds`, or the server is draining (connect again to reach another)",
            "1002": "protocol error: a config after the audio",
            "1007": "invalid data: a text message that is not JSON, a bad config, an unknown message, an impossible sample rate, "
            "a language no model serves",
            "1008": "policy: a missing or wrong key (the reason says which); no audio for `AudioIdleSeconds`, or a stream "
            "longer than `MaxSessionSeconds` (after the final result of its audio)",
            "1011": "decoding failed (a server error)",
            "1012": "the server restarts: its drain ran out of time (`Drain:Seconds`)",
            "1013": "try again later: every decoder is busy (`DecoderMaxCount`), the model cannot be loaded now, the "
            "server keeps `MaxConnections` open already (at once, at the upgrade), or it is draining (shutting down: "
            "connect again to reach another)",
        },
    },
}


def routes() -> list[BaseRoute]:
    """``/vosk`` (and its 426 for a plain GET), and ``/``, whose GET is the home page."""
    return [*oa.websocket_routes(c.ROUTE_VOSK_WS, vosk_endpoint, VOSK),
            describe(WebSocketRoute(c.ROUTE_HOME, vosk_endpoint), websocket=VOSK)]
