"""One Speech SDK connection: frames in, turns of recognition out.

A turn starts with ``speech.context`` (or its first audio frame) under a new
``X-RequestId``, takes a RIFF header and PCM chunks, and ends with the empty
audio chunk. Per turn the server sends ``turn.start``, ``speech.startDetected``,
``speech.hypothesis`` while audio arrives, ``speech.phrase`` results,
``speech.endDetected`` and ``turn.end``. Interactive mode ends the turn after
its first phrase; continuous modes report every phrase and close the turn with
``EndOfDictation``. Offsets are 100-ns ticks from the start of the stream,
continued across turns through ``continuation.audio.streams.1.offset``: the
Python SDK adds that offset to those the turn reports; the SDK for JavaScript
with multi-channel processing on (:func:`.options.stream_offsets`) takes them as
sent, so the server adds it (:func:`in_stream_time`), and learns the offset to
continue from from each ``speech.phrase``'s :data:`CONTINUATION_OFFSET` header.
A turn of such a client cut after its end of audio is decoded to its end all the
same and answers the continuation that follows (:mod:`.resume`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack, suppress
from typing import Any, Protocol

from starlette.websockets import WebSocketDisconnect

from ..audio import AudioError, WavFormat, pcm16_header
from ..deadlines import Deadlines
from ..engine import Engine
from ..errors import (
    CLIENT_GONE,
    DRAINING,
    IDLE,
    INTERNAL,
    NOT_READING,
    PROTOCOL_ERROR,
    Counters,
    Failure,
    Kind,
    classify,
    close_args,
    settle,
    told_by_close,
    usp_headers,
    usp_phrase,
    usp_status,
)
from ..frame_budget import CUT_OFF
from ..inbox import SHUTDOWN_CLOSE, Inbox, left_before_audio
from ..results import TICKS_PER_SECOND, hypothesis_json, phrase_json, status_json, ticks
from ..session import READ_AHEAD, Session, Snapshot
from ..transcript import Event, Partial, Phrase, joined, split_at_pauses
from .frames import FrameError, Message, RequestIds, from_javascript_sdk, javascript_reading_end, parse_binary, parse_text, previous_service_tag, text_frame
from .options import DEFAULT_FORMAT, Options, audio_format, stream_offsets
from .refusal import FailedTurns
from .resume import RESENT, RESENT_PATHS, TOKEN_HEADER, Parked, Parking, Sent, audio_ended, ended_token, lost

log = logging.getLogger(__name__)


class Socket(Protocol):
    """What a connection needs of a Starlette WebSocket."""

    async def receive(self) -> Mapping[str, Any]: ...
    async def send_text(self, data: str) -> None: ...
    async def close(self, code: int = 1000, reason: str | None = None) -> None: ...


def split_header(payload: bytes) -> tuple[WavFormat, bytes] | None:
    """``(format, PCM after the header)`` when ``payload`` starts with a RIFF/WAVE header, else None.

    Raises :class:`FrameError` for a header that is not 16-bit PCM or is cut short.
    """
    if not payload.startswith(b"RIFF"):
        return None
    try:
        fmt, offset = pcm16_header(payload)
    except AudioError as exc:
        raise FrameError(str(exc)) from None
    return fmt, payload[offset:]


def offset_json(seconds: float) -> dict[str, int]:
    """The body of ``speech.startDetected`` / ``speech.endDetected``."""
    return {"Offset": ticks(seconds)}


def replay_origin(acknowledged: float) -> float:
    """Engine offset for a continuation turn, in the turn's own time base.

    The SDK replays audio from the acknowledged offset cut to whole
    milliseconds, and adds the acknowledged offset itself to every offset the
    turn reports; so the replayed audio starts this much (<= 0) before the
    turn's zero.
    """
    replay_start = int(round(acknowledged * TICKS_PER_SECOND)) // 10_000 / 1000
    return replay_start - acknowledged


#: Close codes of a client that closed its connection (rather than lost it): it does not continue a turn.
CLOSED = (1000, 1001)

#: The header of a ``speech.phrase`` that tells a client taking stream times (:func:`.options.stream_offsets`) how far
#: its audio was acknowledged, in ticks from the start of the turn's audio (the SDK adds the offset the turn began at,
#: and sends the sum as ``continuation.audio.streams.1.offset`` when it connects again).
CONTINUATION_OFFSET = "X-Continuation-Audio-Streams-1-Offset"


def in_stream_time(body: Mapping[str, Any], added: int) -> dict[str, Any]:
    """``body`` with ``added`` ticks added to its ``Offset`` and its words' (``NBest[].Words``): what the SDK adds to
    a turn's offsets itself (its ``updateOffsets``), unless it takes them as times of its stream."""
    out = {**body, "Offset": body["Offset"] + added}
    if "NBest" in body:
        out["NBest"] = [{**best, "Words": [{**w, "Offset": w["Offset"] + added} for w in best["Words"]]} if "Words" in best else best
                        for best in body["NBest"]]
    return out


def audio_bytes(message: Mapping[str, Any]) -> int:
    """The bytes of audio a WebSocket message carries: the payload of a binary frame (its headers not counted)."""
    data = message.get("bytes")
    if not data or len(data) < 2:
        return 0
    return max(0, len(data) - 2 - int.from_bytes(data[:2], "big"))


#: Audio at least this loud (:func:`~speech_recognizer.audio.rms` of a chunk, full scale 32768: about -50 dBFS) may
#: hold speech: a recognize-once turn that heard some within its initial-silence window waits for the decoder
#: (:data:`ONSET_LAG_SECONDS`) before it says there was none. Exact zeros (fed as +-1) and a quiet room are below.
SOUND_LEVEL = 100.0
#: How far behind the start of a word the decoder may report it (its first hypothesis or phrase): a word that
#: begins just inside the window is reported after it. The small models' lag: docs/engine.md.
ONSET_LAG_SECONDS = 3.0




class Turn:
    """One request (``X-RequestId``) of a connection."""

    def __init__(self, conn: Connection, request_id: str, options: Options) -> None:
        self.conn = conn
        self.request_id = request_id
        self.options = options
        #: Stream time (s) of the turn's zero: the SDK adds it to the offsets the turn reports, or, for a client that
        #: takes them as the stream's, the server does (:attr:`added`).
        self.base = options.resume_at
        #: Ticks added to every offset the turn sends: :attr:`base`'s for a client that takes stream times, else 0.
        self.added = ticks(self.base) if conn.stream_offsets else 0
        #: Turn time (s) of the first audio the turn receives.
        self.origin = replay_origin(options.resume_at)
        self.service_tag = uuid.uuid4().hex
        self.session: Session | None = None
        #: The format of the turn's audio, once its first audio came (its RIFF header's, else ``speech.config``'s).
        self.format: WavFormat | None = None
        self._stack = AsyncExitStack()
        self.started = False
        self.speech = False
        self.ended = False
        #: Whether the turn ended with a failure (counted by the policy, not as a request served).
        self.failed = False
        #: The kind of the failed turn it asks again for (the Speech SDK's core: :class:`FailedTurns`), if any.
        self.asks_again: Kind | None = None
        #: Whether its session holds a decoder (counted against MaxSessionSeconds).
        self._holding = False
        #: Seconds of audio whose results were handled (the decoder may be ahead of it).
        self._decoded = 0.0
        #: Decoding results in the order of the audio, for :meth:`_handle_results` (None: end of audio).
        self._results: asyncio.Queue[asyncio.Future[Snapshot] | None] = asyncio.Queue(READ_AHEAD)
        #: When each of them arrived (:attr:`..inbox.Inbox.arrived`), in the same order; when the audio whose results were
        #: handled last arrived, and the latest audio received: the final result's latency runs from the first, a
        #: failure's from the second (``speech_request_seconds``).
        self._arrivals: deque[float] = deque()
        self._handled_from: float | None = None
        self.received: float | None = None
        self._handler: asyncio.Task[None] | None = None
        self._audio_ended = False
        #: Whether audio loud enough to hold speech (:data:`SOUND_LEVEL`) came within the initial-silence window.
        self._sound = False
        #: The phrase the decoder ended at a pause shorter than the app's segmentation silence, not reported yet: the
        #: next one is joined to it if it begins before that much silence has passed (:meth:`_emit`).
        self._held: Phrase | None = None
        #: Turn time (s) of the end of the latest hypothesis: while one goes on, speech has not paused.
        self._heard = 0.0
        #: Turn time (s) of the end of the latest audio loud enough to hold speech (:data:`SOUND_LEVEL`).
        self._loud = 0.0
        #: What the turn sent last (its phrases, end of speech and end, in stream time) to a client with the
        #: reliable-reconnect contract: a cut may lose it in flight (:mod:`.resume`).
        self._told: deque[Sent] = deque(maxlen=RESENT)
        #: For that client: the turn as a continuation finds it (:mod:`.resume`).
        self.parked: Parked | None = conn.parking.open(self.service_tag) if conn.stream_offsets else None
        #: Whether that client's connection was found cut: what the turn sends is kept (:meth:`park`).
        self.cut = False
        #: Set once the turn is closed (its decoder released).
        self.closed = asyncio.Event()

    @property
    def audio_ended(self) -> bool:
        """Whether the turn's end of audio (the empty chunk) was received."""
        return self._audio_ended

    async def send(self, path: str, body: Mapping[str, Any], extra: Mapping[str, str] = {}) -> None:
        """Send a message of the turn; its offsets (turn time) in stream time for a client that takes them so.

        A client with the reliable-reconnect contract found gone: the message is kept (:meth:`park`), as is what
        follows, and the turn goes on; the connection decides at the disconnect whether it keeps it (:meth:`Connection._park`).
        """
        if self.added and "Offset" in body:
            body = in_stream_time(body, self.added)
        if self._audio_ended and self.parked is not None:  # its continuation's token says no audio will come (.resume)
            extra = {**extra, TOKEN_HEADER: ended_token(self.service_tag)}
        if not self.cut:
            try:
                await self.conn.socket.send_text(text_frame(path, self.request_id, body, extra))
            except (WebSocketDisconnect, ConnectionError):
                if self.parked is None:
                    raise
            else:
                if path in RESENT_PATHS and self.parked is not None:
                    self._told.append((path, dict(body)))
                return
        self.park().frames.append((path, dict(body)))

    def park(self) -> Parked:
        """The turn's record, which keeps from now on what it sent last and sends, for the client's continuation."""
        assert self.parked is not None
        if not self.cut:
            self.cut = True
            self.parked.frames = list(self._told)
        return self.parked

    async def resume(self, parked: Parked) -> bool:
        """Answer this continuation turn with what the cut turn ``parked`` kept, once that turn is over: what it sent
        after the offset this turn resumes at (the client has what ends before), its phrases and end of speech, the
        phrase that ended it (``EndOfDictation``, or its failure), and ``turn.end``; no audio is awaited (the client
        sends none: its audio had ended). False, with nothing sent, when that turn was not kept (its connection ended
        otherwise, or its server had not seen it cut within ``AudioIdleSeconds``: by then this turn would have been
        closed for want of audio) or was closed unfinished."""
        idle = self.conn.deadlines.idle_seconds
        try:
            async with asyncio.timeout(None if math.isinf(idle) else idle):
                await parked.decided.wait()
        except TimeoutError:
            return False
        await parked.settled.wait()
        if not parked.complete:
            return False
        acknowledged = ticks(self.base)
        missed = [(path, body) for path, body in parked.frames if path in RESENT_PATHS and path != "turn.end" and not (
            body.get("Offset", 0) + body.get("Duration", 0) <= acknowledged and body.get("RecognitionStatus", "Success") == "Success")]
        log.info("turn %s continues a turn cut after its end of audio: answered with the %d results it kept that the client lacks",
                 self.request_id[:40], len(missed))
        self.started = True
        await self.conn.socket.send_text(text_frame("turn.start", self.request_id, {"context": {"serviceTag": self.service_tag}}))
        for path, body in missed:
            end = body.get("Offset", 0) + body.get("Duration", 0)
            extra = {CONTINUATION_OFFSET: str(end - self.added)} if path == "speech.phrase" else {}
            await self.conn.socket.send_text(text_frame(path, self.request_id, body, extra))
        self.ended = True
        await self.conn.socket.send_text(text_frame("turn.end", self.request_id, {}))
        await self.close()
        return True

    async def send_phrase(self, body: Mapping[str, Any]) -> None:
        """Send a ``speech.phrase`` (a result or a status), which acknowledges the audio up to its end: a client taking
        stream times is told so (:data:`CONTINUATION_OFFSET`, in turn time), as it replays its audio from there after
        a lost connection whether told or not."""
        extra = {CONTINUATION_OFFSET: str(body["Offset"] + body["Duration"])} if self.conn.stream_offsets else {}
        await self.send("speech.phrase", body, extra)

    @property
    def position(self) -> float:
        """Turn time (s) of the end of the audio whose results were handled so far."""
        return self.origin + self._decoded

    async def _open(self, fmt: WavFormat) -> None:
        """Admit the turn's session (or raise the failure: busy, unknown language, bad format) and start the turn. A
        turn begun by its audio (no ``speech.context``) has its model loaded first as ``speech.context`` has it, the
        client watched (:meth:`~..inbox.Inbox.model`): one gone during an on-demand load is let go at once, holding no
        decoder meanwhile."""
        await self.conn.inbox.model(self.conn.engine.registry, self.options.language)
        self.session = await self._stack.enter_async_context(
            self.conn.engine.session(
                self.options.language,
                fmt.sample_rate,
                fmt.channels,
                route=self.conn.route,
                offset=self.origin,
                words=True,
                partial_words=True,
            )
        )
        self._holding = True
        self.conn.deadlines.session_started()
        self.conn.inbox.ahead = True  # so that a client gone with audio still unread is seen at once
        self.started = True
        await self.send("turn.start", {"context": {"serviceTag": self.service_tag}})

    async def flush(self) -> None:
        """Send what the turn's audio gave so far, its last phrase included (before it ends early: idle, too long)."""
        if self.session is None or self.ended:
            return
        await self.settle()
        if not self.ended and not self._audio_ended:
            self._audio_ended = True
            await self._emit(await self.session.finish(), final=True)
        await self.report_held()

    async def fail(self, failure: Failure | None) -> None:
        """End the turn with the failure's ``speech.phrase`` status; the SDK reports it as ``CancellationDetails``.
        ``None``: with no phrase, for a failure the close that follows tells alone (:data:`~..errors.JAVASCRIPT_CLOSES`)."""
        if self.ended:
            return
        self.failed = True
        if not self.started:
            self.started = True
            await self.send("turn.start", {"context": {"serviceTag": self.service_tag}})
        if failure is not None:
            await self.send("speech.phrase", usp_phrase(failure), usp_headers(failure, again=failure.kind is self.asks_again))
            self.conn.failed_turns.failed(self.service_tag, failure.kind)
        await self.end()

    async def audio(self, payload: bytes) -> None:
        """An audio chunk of this turn; the empty chunk ends the audio.

        Decoding runs ahead of the results sent: a chunk is queued (up to
        :data:`READ_AHEAD`; then this waits) and :meth:`_handle_results` sends what
        it gave, in order, while the connection reads the next frames.
        """
        if self.ended or self._audio_ended:
            return
        self.received = arrived = self.conn.inbox.arrived
        if self.session is None:
            riff = split_header(payload)
            self.format, payload = riff if riff else (self.conn.audio_format, payload)
            await self._open(self.format)
            if riff and not payload:
                return
        session = self.session
        assert session is not None
        if self._handler is None:
            self._handler = asyncio.create_task(self._handle_results())
        self._arrivals.append(arrived)
        if not payload:
            self._audio_ended = True
            await self._results.put(None)
            return
        self.conn.deadlines.owe()
        await self._results.put(session.feed_ahead(payload))

    async def _handle_results(self) -> None:
        """Send each chunk's results in order; after the end of audio, the last phrase and the turn's end."""
        assert self.session is not None
        while True:
            item = await self._results.get()
            self._handled_from = self._arrivals.popleft()
            try:
                if self.ended:
                    continue  # the turn is over: what is left was dropped with the session
                if item is None:
                    await self._emit(await self.session.finish(), final=True)
                    await self._end_of_audio()
                    continue
                snapshot = await item
                if self.position < self.window and snapshot.level >= SOUND_LEVEL:
                    self._sound = True
                self._decoded = snapshot.audio_seconds
                if snapshot.level >= SOUND_LEVEL:
                    self._loud = self.position
                await self._emit(snapshot.events)
                # Without a word by the end of the window (and, when there was sound in it, by the time the
                # decoder would have reported one begun inside it), there was no speech.
                silent = self.position >= self.window + (ONSET_LAG_SECONDS if self._sound else 0.0)
                if silent and not self.ended and not self.options.continuous and not self.speech:
                    await self._no_speech()
            except Exception as exc:  # noqa: BLE001 - this turn ends with a reason; the server goes on
                if isinstance(exc, (WebSocketDisconnect, ConnectionError)):  # the client went away mid-turn
                    exc = Failure(f"turn {self.request_id[:40]}: the client left before its results were sent", CLIENT_GONE)
                await self.conn.fail(classify(exc))
            finally:
                self._results.task_done()
                if item is not None:
                    self.conn.deadlines.paid()

    async def settle(self) -> None:
        """Wait until the results of the audio received so far were handled."""
        if self._handler is not None and not self.ended:
            await self._results.join()

    @property
    def window(self) -> float:
        """Turn time (s) by which a recognize-once turn's speech must begin: its initial-silence timeout."""
        return self.origin + self.options.initial_silence

    async def _emit(self, events: list[Event], *, final: bool = False) -> None:
        """Send what the decoder reported: hypotheses, and phrases as the app's segmentation silence ``S`` ends them.

        Without ``S`` a phrase is sent as the decoder ends it. With it, a phrase is cut at pauses of ``S`` or more
        (:func:`~..transcript.split_at_pauses`: the decoder ends one only after its own pause, about 0.5 s), and held
        until ``S`` of audio has passed after its last word: speech that begins sooner (the next hypothesis or
        phrase) is joined to it, so that a pause shorter than ``S`` never ends a phrase. ``final``: the audio ended,
        a phrase held is sent.
        """
        pause = self.options.segmentation_silence
        if pause is not None:
            events = [piece for event in events for piece in (split_at_pauses(event, pause) if isinstance(event, Phrase) else [event])]
        for event in events:
            if self.ended:
                return
            if not self.speech and not self.options.continuous and event.start >= self.window:
                await self._no_speech()  # it began after the window: the silence timed out first
                return
            held = self._held
            if held is not None and pause is not None and event.start - held.end >= pause - 1e-6:  # word times: 1 us
                await self.report_held()  # this speech began after the segmentation silence: a phrase of its own
                if self.ended:
                    return
                held = None
            if isinstance(event, Partial):
                await self._speech_started(event.start)
                self._heard = event.end
                text, start = (f"{held.text} {event.text}", held.start) if held is not None else (event.text, event.start)
                await self.send("speech.hypothesis", self._identified(hypothesis_json(text, start, event.end, self.options.profanity)))
            elif isinstance(event, Phrase):
                if self.base + event.end <= self.conn.acknowledged:
                    continue  # already reported in an earlier turn
                await self._speech_started(event.start)
                if pause is None:
                    await self._report(event)
                else:
                    self._held = event if held is None else joined(held, event)
        held = self._held
        if held is not None and pause is not None and (final or self._paused(held, pause)):
            await self.report_held()  # the audio ended, or the segmentation silence passed with no speech in it

    def _paused(self, held: Phrase, pause: float) -> bool:
        """Whether ``pause`` s of silence followed ``held`` in the audio fed (its position, not the clock: the
        decoder says nothing during silence): quiet audio (:data:`SOUND_LEVEL`) that long after its last word (and
        any hypothesis since); or, where there was sound, no word from the decoder though it has had the time to
        report one begun within ``pause`` (:data:`ONSET_LAG_SECONDS`: it reports a word seconds after it begins)."""
        words = max(held.end, self._heard)
        return self.position - max(words, self._loud) >= pause - 1e-6 or self.position - words >= pause + ONSET_LAG_SECONDS

    async def before_failure(self) -> None:
        """Before a failure ends the turn (a protocol error, a session too long, a decoder that failed): the results
        of the audio received so far are sent, as it arrived, and then the phrase held for the segmentation
        silence, which the decoder finished. A decoder that failed (this runs in :meth:`_handle_results`) gave no
        more results: only the held phrase is sent."""
        if asyncio.current_task() is not self._handler:
            await self.settle()
        await self.report_held()

    async def report_held(self) -> None:
        """Send the phrase held for the segmentation silence (:meth:`_emit`), if any: the turn's audio ends."""
        held, self._held = self._held, None
        if held is not None and not self.ended:
            await self._report(held)

    async def _report(self, phrase: Phrase) -> None:
        """Send ``phrase``; in interactive mode, with the end of speech, and end the turn."""
        self.conn.acknowledged = self.base + phrase.end
        if not self.options.continuous:
            await self.send("speech.endDetected", offset_json(phrase.end))
        await self.send_phrase(self._phrase(phrase))
        if not self.options.continuous:
            await self.end()

    def _phrase(self, phrase: Phrase) -> dict[str, Any]:
        """The same JSON the REST route answers for this phrase, on channel 0."""
        opts = self.options
        body = phrase_json(
            phrase,
            opts.output_format,
            opts.profanity,
            word_timings=opts.word_timings,
            word_confidence=opts.word_confidence,
        )
        return self._identified({**body, "Channel": 0})

    def _identified(self, body: dict[str, Any]) -> dict[str, Any]:
        """``body`` with the language the app's ``AutoDetectSourceLanguageConfig`` gave, when it gave one."""
        language = self.options.identified
        return body if language is None else {**body, "PrimaryLanguage": language}

    async def _status(self, status: str, start: float, end: float) -> None:
        await self.send("speech.endDetected", offset_json(end))
        await self.send_phrase({**status_json(status, start, end), "Channel": 0})
        await self.end()

    async def _speech_started(self, at: float) -> None:
        if not self.speech:
            self.speech = True
            await self.send("speech.startDetected", offset_json(at))

    async def _no_speech(self) -> None:
        """``InitialSilenceTimeout`` over the window (or the audio, if shorter): the next turn goes on from its end,
        so speech that began after the window is that turn's."""
        await self._status("InitialSilenceTimeout", max(0.0, self.origin), min(self.position, self.window))

    async def _end_of_audio(self) -> None:
        if self.ended:
            return
        if not self.options.continuous:
            await self._no_speech()
            return
        await self._status("EndOfDictation", self.position, self.position)

    async def end(self) -> None:
        """Send ``turn.end`` (once) and release the decoder."""
        if self.ended:
            return
        self.ended = True
        if self.started:
            if not self.failed:
                self.conn.metrics.succeeded(self.conn.route, self._handled_from)
            await self.send("turn.end", {})
        await self.close()

    def hand_over(self) -> None:
        """The turn's connection is over, or the turn replaced on it: its record waits for a continuation if kept,
        and is dropped if not (:mod:`.resume`)."""
        if self.parked is not None:
            self.conn.parking.settle(self.service_tag, self.parked)

    async def close(self) -> None:
        """Release the decoder without sending anything (and stop handling results)."""
        self.closed.set()
        if self._holding:
            self._holding = False
            self.conn.inbox.ahead = False
            self.conn.deadlines.session_ended()
            self.conn.deadlines.settled()
        self.ended = True
        handler = self._handler
        if handler is not None and handler is not asyncio.current_task():
            self._handler = None
            handler.cancel()
            await asyncio.gather(handler, return_exceptions=True)
        await self._stack.aclose()


class Connection:
    """The frames of one WebSocket, dispatched to turns."""

    def __init__(
        self, socket: Socket, engine: Engine, options: Options, metrics: TurnCounters | None = None, deadlines: Deadlines | None = None,
        draining: Callable[[], bool] = lambda: False, failed_turns: FailedTurns | None = None, parking: Parking | None = None,
    ) -> None:
        """``draining``: whether the server drains (a turn whose connection it closes before any audio is the drain's);
        ``failed_turns``: the server's turns that lately failed, which the Speech SDK's core asks again for (its app's
        state: each server counts the repeats it was asked, whatever else runs in the process); ``parking``: the
        server's turns that a continuation may take up (:class:`~.resume.Parking`, its app's state too)."""
        self.socket = socket
        self.draining = draining
        self.failed_turns = failed_turns if failed_turns is not None else FailedTurns()
        self.parking = parking if parking is not None else Parking()
        self.engine = engine
        self.options = options
        self.metrics = metrics if metrics is not None else _Uncounted()
        #: When waiting for the client ends: no audio for AudioIdleSeconds, a turn longer than MaxSessionSeconds.
        self.deadlines = deadlines if deadlines is not None else Deadlines(math.inf, math.inf)
        #: The route's name in metrics, usage records and logs.
        self.route = f"usp/{options.mode}"
        self.config: dict[str, Any] = {}
        self.audio_format = DEFAULT_FORMAT
        #: Whether the client takes offsets as times of its stream, not of the turn (:func:`.options.stream_offsets`).
        self.stream_offsets = False
        #: Whether the client is the SDK for JavaScript, told a failure it knows no status for by the close alone.
        self.javascript = False
        self.turn: Turn | None = None
        self.ids = RequestIds()
        #: Stream time (s) up to which phrases were reported; later continuation turns never repeat them.
        self.acknowledged = 0.0
        self._closed = False
        #: Whether the server's stop closed the connection (nothing more can be sent: a failure is counted alone).
        self._stopped = False
        #: The socket's messages, read ahead while a turn holds a decoder (made by :meth:`run`).
        self.inbox: Inbox

    async def run(self) -> None:
        """Serve until the client goes away; a failure is answered as :mod:`..errors` says (:meth:`fail`)."""
        self.inbox = Inbox(self.socket.receive, audio_bytes=audio_bytes, ended=self.deadlines.ended_unread(self._resumable))
        try:
            while True:
                try:
                    msg = await self.deadlines.receive(self.inbox.receive)
                except Failure as failure:
                    # Idle: what the turn's audio gave is sent before it ends with the reason (no more audio is coming).
                    # Too long: not, as the SDK connects again and sends the audio past its last phrase again.
                    if failure.kind is IDLE and self.turn is not None:
                        await self.turn.flush()
                    raise
                if self._closed:  # a turn's results failed meanwhile (its client gone, not reading, its decoder): no more is answered
                    return
                if msg["type"] == "websocket.disconnect":
                    if (cut := msg.get(CUT_OFF)) is not None:  # closed by the protocol for its frames (frame_budget)
                        raise cut
                    if self.turn is not None and msg.get("code") not in CLOSED and await self._park(self.turn):
                        return
                    if self.turn is not None and not self.turn.ended:
                        what = f"turn {self.turn.request_id[:40]}"
                        if not self.turn.started:  # begun by its speech.context, no audio yet
                            await self.fail(left_before_audio(what, self.draining()))
                            return
                        dropped = f"; {self.inbox.dropped_bytes} bytes it had sent were dropped undecoded" if self.inbox.dropped_bytes else ""
                        if msg.get("code") == SHUTDOWN_CLOSE and self.draining():  # the server's stop closed it, not its client
                            self._stopped = True
                            await self.fail(Failure(f"{what}: cut mid-turn, the server's drain out of time{dropped}", DRAINING))
                            return
                        await self.fail(Failure(f"{what}: the client left mid-turn{dropped}", CLIENT_GONE))
                    return
                if msg.get("text") is not None:
                    frame = parse_text(msg["text"])
                elif msg.get("bytes") is not None:
                    frame = parse_binary(msg["bytes"])
                else:
                    continue
                await self.handle(frame)
        except Exception as exc:  # noqa: BLE001 - every failure is answered by the policy
            await self.fail(classify(exc))
        finally:
            await self.inbox.close()
            if self.turn is not None:
                if (session := self.turn.session) is not None and self.inbox.dropped_audio_bytes:
                    rec = session.recognition
                    session.abandoned_seconds += self.inbox.dropped_audio_bytes / (2 * rec.channels * rec.sample_rate)
                elif session is None and self.inbox.dropped_audio_bytes:
                    self._count_unadmitted(self.turn)
                await self.turn.close()
                self.turn.hand_over()
                # The turn holds this connection (Turn.conn): without this, the two, the turn's session and its
                # recognition waited in a reference cycle for Python's collector.
                self.turn = None

    def _count_unadmitted(self, turn: Turn) -> None:
        """Count the audio of ``turn`` its client sent and left behind before the turn had a session (while its model
        loaded: :meth:`~..inbox.Inbox.model` reads ahead meanwhile) as abandoned, as a session's is at its end
        (:meth:`~..metrics.Metrics.audio_abandoned`): its audio frames among what was dropped, in the format the turn's
        RIFF header says (taken, or among them), else ``speech.config``'s; the header itself no audio."""
        fmt, pcm = turn.format, 0
        for message in self.inbox.dropped:
            try:
                frame = parse_binary(message["bytes"]) if message.get("bytes") is not None else None
                if frame is None or frame.path.lower() != "audio" or frame.request_id != turn.request_id:
                    continue
                payload = frame.body
                assert isinstance(payload, bytes)
                if fmt is None:
                    riff = split_header(payload)
                    fmt, payload = riff if riff else (self.audio_format, payload)
            except FrameError:  # the turn would have failed at it: nothing after it would have been decoded
                break
            pcm += len(payload)
        served = self.engine.registry.resolve(turn.options.language)
        if fmt is not None and pcm and served in self.engine.registry.sources:  # no locale of a client's own in the labels
            self.metrics.audio_abandoned(self.route, served, pcm / (2 * fmt.channels * fmt.sample_rate))

    def _resumable(self) -> bool:
        """Whether the turn is one its client may continue on a new connection (:mod:`.resume`): the end of its
        connection come behind unread audio is not looked at (:meth:`~..deadlines.Deadlines.ended_unread`), as its end
        of audio may be behind, and with it the results its continuation is told."""
        return self.turn is not None and self.turn.parked is not None

    async def fail(self, failure: Failure) -> None:
        """Count and log ``failure`` (its tracebacks then dropped: :func:`~..errors.settle`), end the open turn with its
        status, and close the connection with its code (once; nothing to a client gone, or reset for taking in none of
        its replies: ``not_reading``, nor after the server's stop closed it). A fault of the server's met once the connection is being
        closed for another failure (a decoder failing on audio received before a protocol error) is still counted and
        logged, with its traceback: nothing more is told the client."""
        # its time runs from the turn's latest audio, else from the connection's last message (a protocol error, an idle
        # connection): not from its upgrade, which may be turns ago (errors.observe's default)
        since = self.turn.received if self.turn is not None and self.turn.received is not None else self.inbox.arrived
        if self._closed:
            if failure.kind is INTERNAL:
                settle(failure, self.route, self.metrics, since)
            return
        self._closed = True
        settle(failure, self.route, self.metrics, since, again=self.turn.asks_again if self.turn is not None else None)
        if failure.kind in (CLIENT_GONE, NOT_READING) or self._stopped:
            # A phrase held for the segmentation silence cannot be told: the client is gone, or its connection reset
            # for taking in none of its replies, or closed by the server's stop (nothing more reaches it: a turn.end, a
            # close neither). Its audio was
            # not acknowledged, so an SDK that connects again sends it again.
            if self.turn is not None:
                self.turn.failed = True
            return
        phrase = usp_status(failure.kind, javascript=self.javascript)
        with suppress(Exception):  # the client may be gone already
            if self.turn is not None:
                await self.turn.before_failure()
                if phrase:
                    await self.turn.fail(failure)
                elif self.javascript and self.options.continuous and self.turn.started:
                    # The SDK for JavaScript in continuous recognition, told by the close alone: the turn it began
                    # ends first, with no phrase, as its failed turn did (errors.JAVASCRIPT_CLOSES).
                    await self.turn.fail(None)
            if (self.javascript and not (phrase and self.turn is not None)) or told_by_close(failure.kind, javascript=self.javascript):
                # ... and its reading ends before the close, which it reports; its recognizer connects anew after. A
                # close that tells the Python SDK a status in its stead (errors.CORE_CLOSES) comes after it too: the
                # message names the kind for a proxy in front; that SDK passes over it.
                await self.socket.send_text(javascript_reading_end(failure))
            await self.socket.close(*close_args(failure, usp=True, javascript=self.javascript))

    async def _park(self, turn: Turn) -> bool:
        """The connection was cut (no close frame) after the turn's end of audio (received, or read ahead and dropped
        at the disconnect) from a client with the reliable-reconnect contract: what the turn sent last and, if it
        was still going, its results of the rest of its audio, decoded to its end (waited for here), are kept for
        the continuation (:mod:`.resume`); True. Else False: a turn still going ends as the client's (it sends the
        audio past its last phrase again)."""
        if turn.parked is None or not turn.started or turn.failed:
            return False
        try:
            frames = [parse_binary(m["bytes"]) for m in self.inbox.dropped if m.get("bytes") is not None]
        except FrameError:
            return False
        audio = [f.body for f in frames if f.path.lower() == "audio" and f.request_id == turn.request_id]
        if not (turn.audio_ended or b"" in audio):
            return False
        self.inbox.recover()
        turn.park().keep()
        if not turn.ended:
            log.info("turn %s: the connection was cut after its end of audio; its results are kept for the client's continuation",
                     turn.request_id[:40])
            for payload in audio:
                assert isinstance(payload, bytes)
                await turn.audio(payload)
            await turn.closed.wait()
        return True

    async def before_cut(self) -> None:
        """The server's drain ran out of time (``Drain:Seconds``) with this connection's turn still running:
        uvicorn's shutdown closes it next (1012, nothing can be sent after). A phrase the decoder finished and the
        turn holds for the segmentation silence is sent first; the SDK then connects again (to another pod) and
        sends its audio from after that phrase, not the phrase's audio again."""
        if self.turn is not None and not self._closed:
            await self.turn.report_held()

    async def handle(self, frame: Message) -> None:
        """Dispatch one frame."""
        path = frame.path.lower()
        if path == "speech.config":
            self.config = frame.json()
            self.audio_format = audio_format(self.config)
            self.stream_offsets = stream_offsets(self.config)
            self.javascript = from_javascript_sdk(self.config)
            return
        request_id = frame.request_id
        if not request_id:
            raise FrameError(f"{frame.path} frame without an X-RequestId header", PROTOCOL_ERROR)
        log.debug("USP %s %s", frame.path, frame.body if not frame.binary else len(frame.body))
        if path == "speech.context":
            context = frame.json()
            options = self.options.with_context(context)
            # the first turn of a connection that continues a turn cut after its end of audio: that turn's results
            first = self.turn is None
            previous = previous_service_tag(context)
            parked = self.parking.claim(previous) if self.stream_offsets and first else None
            turn = await self._new_turn(request_id, options)
            turn.asks_again = self.failed_turns.continued(previous)
            if parked is not None and await turn.resume(parked):
                return
            if self.stream_offsets and first and audio_ended(context):  # that turn is not here, and no audio will come
                raise lost(options.resume_at)
            # an unknown language fails the turn now, not at its audio; a client gone during an on-demand load ends it at once
            await self.inbox.model(self.engine.registry, options.language)
        elif path == "audio":
            assert isinstance(frame.body, bytes)
            if not self.ids.finished(request_id):  # else audio still in flight for a turn that already ended
                if self.turn is None or self.turn.request_id != request_id:
                    await self._new_turn(request_id, self.options.checked())
                assert self.turn is not None
                await self.turn.audio(frame.body)
            self.deadlines.heard()
        # telemetry and anything else needs no answer

    async def _new_turn(self, request_id: str, options: Options) -> Turn:
        if self.turn is not None and self.turn.request_id == request_id:
            raise FrameError(f"X-RequestId {request_id[:40]} was already used", PROTOCOL_ERROR)
        self.ids.check_new(request_id)
        if self.turn is not None:
            await self.turn.settle()  # what the old turn received is answered first, as it arrived
            await self.turn.report_held()
            await self.turn.close()
            self.turn.hand_over()
            self.ids.retire(self.turn.request_id)
        if not options.resume_at:
            # No continuation: the client counts this turn's offsets from a zero of its own (the SDK for JavaScript
            # adds the offset it sends audio from itself), so what earlier turns reported is no time of this turn's.
            self.acknowledged = 0.0
        self.turn = Turn(self, request_id, options)
        return self.turn


class TurnCounters(Counters, Protocol):
    """What a connection counts on: each turn that succeeded, besides the failures."""

    def succeeded(self, route: str, since: float | None = None) -> None: ...
    def audio_abandoned(self, route: str, locale: str, seconds: float) -> None: ...


class _Uncounted:
    """Metrics for a connection nobody counts (tests of the protocol alone)."""

    def succeeded(self, route: str, since: float | None = None) -> None:
        pass

    def failed(self, route: str, status: int, reason: str, since: float | None = None) -> None:
        pass

    def audio_abandoned(self, route: str, locale: str, seconds: float) -> None:
        pass
