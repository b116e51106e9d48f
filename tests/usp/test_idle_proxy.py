"""A Speech SDK app behind a proxy that drops idle connections, as ingress-nginx does at ``proxy-read-timeout``.

A Speech SDK app keeps its WebSocket open between recognitions. A reverse proxy in front of the
gateway (ingress-nginx mostly) closes a proxied connection that has carried no byte for its idle
timeout (``proxy-read-timeout``, 60 s by default), without a WebSocket close frame: a TCP FIN (or a
reset). The recognizer's own idle close (``ConnectionIdleSeconds``) is a close 1000 with a reason,
after which the SDK connects again; after a 1001 or 1012 it fails that recognizer object's every
later recognition. After a bare FIN or reset it does the same as after a 1001 or 1012: that
recognizer object's every later recognition is canceled at once. So a proxy's idle timeout must
never pass first on an idle Speech SDK connection: the recognizer's keepalive pings (every 20 s,
relayed by the gateway) keep one open through any proxy whose timeout is longer, and its own close
1000 (``ConnectionIdleSeconds``) must come before the proxy's timeout should the pings not pass.

:class:`IdleProxy` is the stand-in for nginx (tests/gateway/test_ingress_nginx.py runs real nginx, configured as
ingress-nginx configures it, and sees the same FIN and the same failure; this relay also cuts with a reset, and sits
before recognizers of settings of their own): a TCP relay on
loopback between the real Speech SDK and a real recognizer (the session's ko-KR model) that relays
bytes both ways unchanged and closes both sides, with a FIN or with a reset (``SO_LINGER`` 0), once
no byte has passed for :data:`PROXY_IDLE` seconds. Every idle test uses one recognizer object on a
file of three utterances (each ``recognize_once`` goes on where the last one ended), waiting between them
past the proxy's timeout, or until the connection is gone where it is to go.

A connection cut mid-stream (the proxy's ``at_phrase``: a restart, a node lost) is another matter:
there both SDKs (Python, and JavaScript under Node) connect again at once and replay their audio from
the end of the last phrase they got, and the app gets every utterance once, at its place in the stream.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import azure.cognitiveservices.speech as speechsdk
import pytest

from speech_recognizer.app import create_app
from speech_recognizer.models import LoadedModel, ModelRegistry
from speech_recognizer.usp.options import continuation_offset

from ..conftest import make_settings
from ..jssdk.node import HANG_MS, recognize, result_span, scenario
from ..support import Reference, ServerThread, Starved, TcpServerThread, free_port, read_wav
from ..ws_frames import pieces
from .conftest import SDK_CHUNK, replay_phrases, replay_reference
from .sdk import assert_matches, assert_same, config, continuous, expected, recognizer, reported

Reason = speechsdk.ResultReason
Cut = Literal["fin", "rst"]

#: The proxy's idle timeout in seconds (nginx: ``proxy-read-timeout``, 60 s by default).
PROXY_IDLE = 2.0
#: How long the app waits between its recognitions where its connection stays open: well past :data:`PROXY_IDLE`.
PAUSE = 1.5 * PROXY_IDLE
#: How long the app waits between its recognitions once its connection is gone (cut by the proxy, or closed by the
#: recognizer): time for the SDK to have seen it go before its next recognition.
AFTER_GONE = 0.5
#: The recognizer's ConnectionIdleSeconds in the test of its own close, shorter than the proxy's timeout there.
CONNECTION_IDLE = 1.0
#: The ping interval of :func:`pinging_server`.
PING = PROXY_IDLE / 4
#: Seconds into the recording past which the app of the JavaScript cut test pushes nothing until the first phrase came:
#: the cut at that phrase then falls mid-stream however slow the server (before the second utterance, at 4.8 s).
HOLD_AT = 4.5
#: How long after the first phrase passed an ``at_phrase`` proxy cuts the connection (bytes from the client stop at once).
AFTER_PHRASE = 0.2


@dataclass
class IdleProxy(TcpServerThread):
    """A TCP relay from 127.0.0.1:``port`` to ``upstream`` that closes both sides of a connection on which
    no byte has passed for ``idle`` seconds: with a FIN (``cut="fin"``), as nginx does at its timeout,
    or with a reset (``cut="rst"``). It runs its own event loop on a thread."""

    upstream: int
    idle: float
    cut: Cut
    port: int = field(default_factory=free_port)
    #: Cut the first connection mid-stream too: once the server has sent it a ``speech.phrase`` (the server does not
    #: compress its frames, so the path is in the bytes), no more bytes from the client are passed on, and
    #: :data:`AFTER_PHRASE` later (time for the client to read the phrase) the connection is cut.
    at_phrase: bool = False
    #: Connections accepted, and how many of them the proxy cut (for idleness, or at a phrase).
    accepted: int = 0
    cuts: int = 0
    #: Connections gone (cut, or closed by either side), and its condition.
    ended: int = 0
    gone: threading.Condition = field(default_factory=threading.Condition)
    #: ``time.monotonic()`` from which idleness counts: :meth:`hold` sets it to infinity while the app recognizes,
    #: :meth:`arm` to the time its recognition ended.
    armed_at: float = -math.inf

    def hold(self) -> None:
        """Cut nothing for idleness from now on, until :meth:`arm`: the app is recognizing. These tests are about the
        connection idle between recognitions; during one, a loaded machine's server decoding its audio can pass no
        byte for longer than the proxy's timeout here (a real proxy's is 60 s)."""
        self.armed_at = math.inf

    def arm(self) -> None:
        """Count idleness from now (the app's recognition ended)."""
        self.armed_at = time.monotonic()

    def wait_gone(self, timeout: float = 30) -> None:
        """Wait until every connection accepted is gone."""
        with self.gone:
            assert self.gone.wait_for(lambda: self.ended == self.accepted, timeout), f"{self.ended} of {self.accepted} gone"

    async def relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.accepted += 1
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream)
        last = time.monotonic()
        watch = self.at_phrase and self.accepted == 1
        phrase_at = math.inf  # when the first phrase passed (watched on the first connection only)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, upstream: bool) -> None:
            nonlocal last, phrase_at
            while data := await src.read(1 << 16):
                if upstream and phrase_at < math.inf:
                    continue  # cut here, mid-stream: these bytes are not passed on
                last = time.monotonic()
                dst.write(data)
                await dst.drain()
                if watch and not upstream and b"Path:speech.phrase" in data:
                    phrase_at = min(phrase_at, time.monotonic())
            if not dst.is_closing() and dst.can_write_eof():
                dst.write_eof()  # a half close is passed on as such

        pumps = asyncio.gather(pump(client_r, up_w, True), pump(up_r, client_w, False), return_exceptions=True)
        # a cancelled gather's CancelledError left unread is logged at garbage collection, an ERROR inside whatever
        # test runs then in this worker
        pumps.add_done_callback(lambda done: None if done.cancelled() else done.exception())
        stopping = True
        try:
            while not pumps.done():
                await asyncio.wait([pumps], timeout=0.05)
                now = time.monotonic()
                if not pumps.done() and (now - max(last, self.armed_at) > self.idle or now - phrase_at > AFTER_PHRASE):
                    self.cuts += 1
                    break
            stopping = False
        finally:  # also the proxy stopping with the connection open: both sides closed (a FIN), nothing left pending
            pumps.cancel()
            for w in (client_w, up_w):
                if self.cut == "rst" and not stopping:
                    w.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    w.transport.abort()
                else:
                    w.close()
            await asyncio.gather(pumps, return_exceptions=True)
            with self.gone:
                self.ended += 1
                self.gone.notify_all()



def ends_audio(frame: bytes) -> bool:
    """Whether ``frame`` (a whole WebSocket frame from the client, masked) is a Speech SDK's end of audio: a binary
    ``audio`` message with an empty payload."""
    from websockets.utils import apply_mask

    if frame[0] & 0x0F != 2 or not frame[1] & 0x80:
        return False
    at = 2 + {126: 2, 127: 8}.get(frame[1] & 0x7F, 0)  # after the length, the mask
    data = apply_mask(frame[at + 4 :], frame[at : at + 4])
    headers = data[2 : 2 + int.from_bytes(data[:2], "big")]
    return len(data) == 2 + len(headers) and b"path:audio" in headers.lower().replace(b" ", b"")


@dataclass
class AudioEndProxy(TcpServerThread):
    """A TCP relay from 127.0.0.1:``port`` to ``upstream`` that cuts the first connection (a FIN both ways) once the
    client's end of audio has passed to the server and the server's first ``speech.phrase`` to the client, what the
    server sends after that phrase held back: the server has received all of the audio and its end, the client has
    one phrase. With ``after_turn_end``, the cut waits for the server's ``turn.end`` too (held back with the rest): the
    server ended the turn before the cut, not after. With ``token``, the cut comes instead once the end of audio has
    passed and then a message of the server's with a continuation token (what the server sends after it took the end
    of audio: usp.resume), what follows it (``turn.end`` too) held back. It reads the WebSocket frames after the
    upgrade to tell where each ends (and unmasks the client's binary ones to see the end of audio); later connections
    are relayed unchanged."""

    upstream: int
    after_turn_end: bool = False
    token: bool = False
    port: int = field(default_factory=free_port)
    accepted: int = 0
    cuts: int = 0
    #: ``time.monotonic()`` of the cut.
    cut_at: float = math.inf

    async def relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.accepted += 1
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream)
        watch = self.accepted == 1
        audio_ended, phrase_passed, turn_ended = asyncio.Event(), asyncio.Event(), asyncio.Event()
        if not self.after_turn_end or self.token:
            turn_ended.set()

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, upstream: bool) -> None:
            if not watch:
                while data := await src.read(1 << 16):
                    dst.write(data)
                    await dst.drain()
            else:
                async for frame in pieces(src):  # the upgrade's head first: neither a frame nor held back
                    if not upstream and (phrase_passed.is_set() or self.token and b"Path:turn.end" in frame):
                        if b"Path:turn.end" in frame:
                            turn_ended.set()
                        continue  # held back: the client is to have the first phrase (or token) alone
                    dst.write(frame)
                    if upstream and ends_audio(frame):
                        audio_ended.set()
                    elif not upstream and (b"X-Continuation-Token" in frame if self.token else b"Path:speech.phrase" in frame):
                        phrase_passed.set()
                    await dst.drain()
            if not dst.is_closing() and dst.can_write_eof():
                dst.write_eof()

        pumps = asyncio.gather(pump(client_r, up_w, True), pump(up_r, client_w, False), return_exceptions=True)
        try:
            if watch:

                async def due() -> None:
                    for event in (audio_ended, phrase_passed, turn_ended):
                        await event.wait()

                cut = asyncio.create_task(due())
                try:
                    await asyncio.wait([pumps, cut], return_when=asyncio.FIRST_COMPLETED)
                    if cut.done():
                        await asyncio.sleep(AFTER_PHRASE)  # time for the client to read the phrase
                        self.cuts += 1
                        self.cut_at = time.monotonic()
                        pumps.cancel()
                finally:
                    cut.cancel()
            with suppress(asyncio.CancelledError):  # cancelled at the cut
                await pumps
        finally:  # also the proxy stopping with the connection open: both sides closed, nothing left pending
            pumps.cancel()
            for w in (client_w, up_w):
                w.close()
            await asyncio.gather(pumps, return_exceptions=True)


@dataclass(frozen=True)
class Outcome:
    """What one ``recognize_once`` gave, and how long it took: of the clock, and but the time this process (the SDK, the
    proxy, the server) waited for a CPU (:class:`~tests.support.Starved`)."""

    result: speechsdk.SpeechRecognitionResult
    seconds: float
    unstarved: float

    @property
    def reason(self) -> speechsdk.ResultReason:
        return self.result.reason

    @property
    def error(self) -> str:
        """The cancellation's error code and the first line of its details ("" when not canceled)."""
        if self.result.reason != Reason.Canceled:
            return ""
        details = self.result.cancellation_details
        return f"{details.code.name}: {details.error_details.splitlines()[0] if details.error_details else ''}"


def three_recognitions(proxy: IdleProxy, wav: Path, gone: bool) -> list[Outcome]:
    """One recognizer object through ``proxy``: three ``recognize_once`` (no byte passes between them but what the
    server sends by itself), :data:`PAUSE` apart, or, where the connection is to be ``gone`` between them (the proxy
    cuts it, or the recognizer closes it), each :data:`AFTER_GONE` after it is."""
    rec = recognizer(config(proxy.ws), wav)
    outcomes = []
    for n in range(3):
        if n and gone:
            proxy.wait_gone()
            time.sleep(AFTER_GONE)
        elif n:
            time.sleep(PAUSE)
        proxy.hold()
        with Starved() as starved:
            result = rec.recognize_once_async().get()
        proxy.arm()
        outcomes.append(Outcome(result, starved.left - starved.entered, starved.seconds))
    for n, o in enumerate(outcomes, 1):
        print(f"proxy cutting with {proxy.cut} after {proxy.idle:g} s idle, recognition {n}: {o.reason.name} "
              f"in {o.seconds:.2f} s ({o.unstarved:.2f} s not waiting for a CPU) {o.result.text!r} {o.error}")
    print(f"proxy: {proxy.accepted} connection(s) accepted, {proxy.cuts} cut for idleness")
    del rec
    return outcomes


#: What the SDK reports for every recognition of a recognizer object after its connection was dropped
#: without a close frame (as after a close 1001 or 1012).
BROKEN = "RuntimeError: 0x13 (SPXERR_START_RECOGNIZING_INVALID_STATE_TRANSITION)"


@pytest.fixture(scope="module")
def idle_closing_server(registry: ModelRegistry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """A recognizer whose ``ConnectionIdleSeconds`` (1 s) is shorter than the proxy's timeout."""
    app = create_app(make_settings(tmp_path_factory.mktemp("idle-proxy"), f"ConnectionIdleSeconds={CONNECTION_IDLE:g}"), registry)
    with ServerThread(app) as srv:
        yield srv


@pytest.fixture(scope="module")
def pinging_server(registry: ModelRegistry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """A recognizer that pings every :data:`PING` seconds, more often than the proxy's timeout passes (as the
    recognizer's 20 s pings are more often than ingress-nginx's 60 s)."""
    app = create_app(make_settings(tmp_path_factory.mktemp("idle-proxy-ping")), registry)
    with ServerThread(app, ws_ping_interval=PING) as srv:
        yield srv



@pytest.mark.parametrize("cut", ["fin", "rst"])
def test_a_connection_the_proxy_drops_while_idle_fails_the_recognizer_object_for_good(
    server: ServerThread, utterances_wav: Path, utterances_ref: Reference, cut: Cut
) -> None:
    """The recognizer pings every 20 s and closes an idle connection after 300 s: the proxy's 2 s comes first
    and drops the connection with a FIN (nginx at ``proxy-read-timeout``) or a reset. The SDK does not connect
    again: every later recognition of that object is canceled at once with
    SPXERR_START_RECOGNIZING_INVALID_STATE_TRANSITION, as after a close 1001 or 1012. A proxy's idle timeout
    must never pass first on an idle Speech SDK connection."""
    with IdleProxy(server.port, PROXY_IDLE, cut) as proxy:
        first, second, third = three_recognitions(proxy, utterances_wav, gone=True)
    assert_matches(first.result, utterances_ref.phrases[0])
    assert (proxy.accepted, proxy.cuts) == (1, 1), "the proxy cut the one connection the app had"
    for later in (second, third):
        assert later.reason == Reason.Canceled, (later.reason, later.result.text)
        assert later.result.cancellation_details.reason == speechsdk.CancellationReason.Error
        assert later.error.startswith(BROKEN), later.error
        assert later.unstarved < 1, f"at once, without connecting: {later.seconds:.2f} s, {later.unstarved:.2f} s not waiting for a CPU"


def test_the_recognizers_own_idle_close_passes_the_proxy_and_the_app_connects_again(
    idle_closing_server: ServerThread, model: LoadedModel, utterances_wav: Path, utterances_ref: Reference
) -> None:
    """``ConnectionIdleSeconds`` (1 s) shorter than the proxy's timeout (3 s): the recognizer closes the idle
    connection with 1000 and its reason, through the proxy, before the proxy would; the app connects again at
    each next recognition (three connections, none cut) and gets the next phrase of its audio."""
    with IdleProxy(idle_closing_server.port, PROXY_IDLE + 1, "fin") as proxy:
        first, second, third = three_recognitions(proxy, utterances_wav, gone=True)
    assert_matches(first.result, utterances_ref.phrases[0])
    assert_next_phrase(model, utterances_wav, first, second)
    assert third.reason != Reason.Canceled, third.error
    assert (proxy.accepted, proxy.cuts) == (3, 0), "each recognition on a connection of its own, none cut by the proxy"


def test_pings_more_often_than_the_proxy_timeout_keep_the_connection_open(
    pinging_server: ServerThread, model: LoadedModel, utterances_wav: Path, utterances_ref: Reference
) -> None:
    """The recognizer's keepalive pings (and the SDK's pongs) are bytes on the connection: pinging more often
    than the proxy's timeout passes keeps an idle app's connection open through it, and all three
    recognitions use it."""
    with IdleProxy(pinging_server.port, PROXY_IDLE, "fin") as proxy:
        first, second, third = three_recognitions(proxy, utterances_wav, gone=False)
    assert_matches(first.result, utterances_ref.phrases[0])
    assert_next_phrase(model, utterances_wav, first, second)
    assert third.reason != Reason.Canceled, third.error
    assert (proxy.accepted, proxy.cuts) == (1, 0), "one connection, kept open"


def assert_next_phrase(model: LoadedModel, wav: Path, first: Outcome, second: Outcome) -> None:
    """``second`` is the phrase after ``first``'s, as in-process Vosk hears the SDK's replay from there."""
    assert second.reason == Reason.RecognizedSpeech, second.error
    replayed = replay_reference(model, wav, (first.result.offset + first.result.duration) // 10_000 / 1000)
    assert replayed is not None
    assert_matches(second.result, replayed)


@pytest.mark.unit
@pytest.mark.parametrize("proxy_type", [IdleProxy, AudioEndProxy])
def test_a_proxy_stopping_with_a_connection_open_closes_both_sides_quietly(
    proxy_type: type[IdleProxy | AudioEndProxy], caplog: pytest.LogCaptureFixture
) -> None:
    """Leaving a proxy's ``with`` while a connection through it is open (a test that failed, or one whose app left its
    connection open) ends that connection on both sides, each reading its end, and logs nothing: a connection's task
    that ended cancelled made asyncio log an ERROR ("Exception in callback StreamReaderProtocol...") in whatever test
    ran then, and left both sockets open."""
    caplog.set_level(logging.DEBUG, logger="asyncio")
    with socket.create_server(("127.0.0.1", 0)) as listener:
        options = {"idle": math.inf, "cut": "fin"} if proxy_type is IdleProxy else {}
        with proxy_type(listener.getsockname()[1], **options) as proxy:  # type: ignore[arg-type]
            client = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
            upstream, _ = listener.accept()
            upstream.settimeout(10)
            head = b"GET / HTTP/1.1\r\n\r\n"  # a whole request head: AudioEndProxy reads frames only after one
            client.sendall(head)
            assert upstream.recv(64) == head, "relayed"
        with client, upstream:
            assert (client.recv(16), upstream.recv(16)) == (b"", b""), "both sides read the end"
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


# ---- a connection cut mid-stream ----------------------------------------------------------------------


@pytest.mark.parametrize("cut", ["fin", "rst"])
def test_a_connection_cut_mid_stream_the_sdk_for_javascript_connects_again_and_replays(
    jssdk: str, server: ServerThread, model: LoadedModel, utterances_wav: Path, utterances_ref: Reference, cut: Cut
) -> None:
    """The proxy drops the connection (FIN or reset) mid-stream, as soon as the first phrase has passed it, while the
    app (continuous recognition, audio pushed at four times real time) is still sending. The SDK for JavaScript connects
    again and replays its audio from the end of that phrase, without a continuation offset (it adds the offset
    itself): every utterance is reported once, the later ones at their place in the stream, as in-process Vosk
    decodes the replay."""
    with IdleProxy(server.port, math.inf, cut, at_phrase=True) as proxy:
        out = recognize(jssdk, scenario(proxy.ws, utterances_wav, mode="continuous", speed=4, holdAt=HOLD_AT, timeoutMs=HANG_MS))
    assert (proxy.accepted, proxy.cuts) == (2, 1), "the proxy cut the first connection, the SDK opened a second"
    recognized = out["recognized"]
    assert recognized and recognized[0]["reason"] == "RecognizedSpeech", out
    first = expected(utterances_ref.phrases[0])
    replayed = replay_phrases(model, utterances_wav, (first[1] + first[2]) / 10_000_000)
    assert_same([result_span(r) for r in recognized], [first, *map(expected, replayed)])
    assert [c["cancelReason"] for c in out["canceled"]] == ["EndOfStream"], out["canceled"]


@pytest.mark.parametrize("cut", ["fin", "rst"])
def test_a_connection_cut_mid_stream_the_python_sdk_connects_again_and_continues(
    server: ServerThread, model: LoadedModel, utterances_wav: Path, utterances_ref: Reference, caplog: pytest.LogCaptureFixture,
    cut: Cut
) -> None:
    """The same cut under the Python SDK (continuous recognition, a push stream written at four times real time): it
    connects again and replays from the end of the first phrase, saying so in its ``speech.context``
    (``continuation.audio.streams.1.offset``, the phrase's end); every utterance is reported once, at its place in
    the stream, as in-process Vosk decodes the replay. (A FIN or reset on an idle connection, between
    recognitions, is another matter: above, the SDK does not connect again.)"""
    caplog.set_level(logging.DEBUG, logger="speech_recognizer.usp.connection")
    pcm, _, _ = read_wav(utterances_wav)
    with IdleProxy(server.port, math.inf, cut, at_phrase=True) as proxy:
        stream = speechsdk.audio.PushAudioInputStream()
        rec = speechsdk.SpeechRecognizer(config(proxy.ws), audio_config=speechsdk.audio.AudioConfig(stream=stream))

        def push() -> None:
            for i in range(0, len(pcm), SDK_CHUNK):
                stream.write(pcm[i : i + SDK_CHUNK])
                time.sleep(0.025)
            stream.close()

        started = threading.Event()
        pusher = threading.Thread(target=lambda: (started.wait(), push()))
        pusher.start()
        events = continuous(rec, timeout=40, started=started)
        pusher.join()
        # the recognition's cancels, before the proxy's stop closes the connection the SDK keeps after it: the SDK
        # reports that close too (WS_ERROR_UNDERLYING_IO_ERROR), on its own thread, at times before the check below
        canceled = [d.error_details for d in events.canceled]
    assert (proxy.accepted, proxy.cuts) == (2, 1), "the proxy cut the first connection, the SDK opened a second"
    assert not canceled, canceled
    first = expected(utterances_ref.phrases[0])
    replayed = replay_phrases(model, utterances_wav, (first[1] + first[2]) / 10_000_000)
    assert_same([reported(r) for r in events.recognized], [first, *map(expected, replayed)])
    contexts = [json.loads(r.args[1]) for r in caplog.records  # type: ignore[index]
                if r.name == "speech_recognizer.usp.connection" and r.args and r.args[0] == "speech.context"]
    # the first connection's turn, then the second's (a short continuation turn at the end of the audio may follow)
    assert [continuation_offset(c) for c in contexts[:2]] == [0.0, (first[1] + first[2]) / 10_000_000], contexts

