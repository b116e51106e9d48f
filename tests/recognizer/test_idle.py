"""Idle and endless clients give their decoders back (issue 16, item 2): AudioIdleSeconds, MaxSessionSeconds.

Six WebSocket clients that sent 2 bytes and then nothing held every decoder of a default pod for as
long as they stayed connected (REST answered 503, a seventh stream 1013), on /vosk and on the Speech
SDK route, even with initialSilenceTimeoutMs. Each test runs a normal stream beside the idle ones and
checks it stays strictly real time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import azure.cognitiveservices.speech as speechsdk
import httpx
import pytest
from websockets.asyncio.client import connect as aconnect
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from harness.usp import client_audio_frame, client_text_frame
from speech_recognizer.app import create_app
from speech_recognizer.models import LoadedModel, ModelRegistry
from speech_recognizer.usp.frames import parse_text

from ..conftest import CHUNK, make_settings
from ..hostile import Audio, assert_real_time_but_starved, paced_stream, warm
from ..support import Reference, ServerThread, Starved, read_wav, threads_named, vosk_reference
from ..usp.held import CONVERSATION, assert_held_phrase_first, first_sentence_held, until_close
from ..usp.sdk import config, display_text

REST = "/speech/recognition/conversation/cognitiveservices/v1"
IDLE = 2.0
#: How late a close may come, in seconds but those this process (its clients, the server's threads) waited for a CPU
#: (:class:`~tests.support.Starved`): what these tests guard against is a decoder held for as long as the client
#: stays, not a close a few seconds late.
LATE = 20.0
#: How long a client waits for the close by the clock before it gives up: a hang, on however loaded a machine (the
#: bound is :data:`LATE`, counted in unstarved time once the close came).
HANG = 120.0
#: The threads whose waits for a CPU do not excuse a late close: the server's decoders and the normal stream's client,
#: which compute beside the idle clients (the close itself comes from the server's event loop after a timer).
BESIDE = ("decoder-", "warm", "replenish", "paced-stream")


class Idle:
    """A server with AudioIdleSeconds=2 and three decoders, and its app (to watch its engine)."""

    def __init__(self, srv: ServerThread, app: object) -> None:
        self.srv, self.app = srv, app

    @property
    def engine(self):
        return self.app.state.engine  # type: ignore[attr-defined]

    def assert_all_held(self, first: float, starved: Starved) -> None:
        """Every decoder is held (the two quiet clients' and the normal stream's), seen before an idle close can have
        come: a quiet client's idle clock starts once the server takes in its audio, after ``first`` (when the first
        was sent), so none is closed before ``first`` + :data:`IDLE` of the clock. Not seen by then: the test could
        not look in time, which only this process's waits for a CPU most of that time excuse (``starved``; the
        decoders' waits, :data:`BESIDE`, do not: the decoders are held before they decode)."""
        while (active := self.engine.active) < 3 and time.monotonic() < first + IDLE:
            time.sleep(0.005)
        if active != 3:
            looked = starved.unstarved(first, time.monotonic(), beside=threads_named(*BESIDE))
            assert looked < IDLE / 2, f"{active} decoders held, not 3, in {looked:.1f} s not waiting for a CPU"

    def wait_for_decoders(self, busy: int, within: float, starved: Starved) -> None:
        """Waits until at most ``busy`` decoders are in use; fails after ``within`` seconds but those this process
        (but :data:`BESIDE`) waited for a CPU meanwhile (``starved``, entered before), or after :data:`HANG`."""
        started = time.monotonic()
        while self.engine.active > busy:
            held = starved.unstarved(started, time.monotonic(), beside=threads_named(*BESIDE))
            assert held < within and time.monotonic() - started < HANG, \
                f"{self.engine.active} decoders still held after {held:.1f} s not waiting for a CPU"
            time.sleep(0.05)


@pytest.fixture(scope="module")
def normal(utterances_wav: Path) -> Audio:
    """What the normal stream beside the idle clients says, at 1x real time (12 s)."""
    pcm, rate, _ = read_wav(utterances_wav)
    return Audio(pcm, rate, utterances_wav)


@pytest.fixture(scope="module")
def idle(registry: ModelRegistry, tmp_path_factory: pytest.TempPathFactory, normal: Audio) -> Iterator[Idle]:
    app = create_app(make_settings(tmp_path_factory.mktemp("idle"), f"AudioIdleSeconds={IDLE}", "DecoderMaxCount=3"), registry)
    with ServerThread(app) as srv:
        warm(srv, normal)
        yield Idle(srv, app)


def post(base: str, wav: bytes) -> httpx.Response:
    return httpx.post(f"{base}{REST}?language=ko-KR", content=wav, headers={"Content-Type": "audio/wav"}, timeout=60)


def test_idle_vosk_clients_give_their_decoders_back(idle: Idle, speech_wav: Path, normal: Audio) -> None:
    with Starved() as starved, paced_stream(idle.srv, normal, starved=starved) as stream:
        with contextlib.ExitStack() as clients:
            quiet = [clients.enter_context(connect(f"{idle.srv.ws}/vosk?language=ko-KR")) for _ in range(2)]
            first = time.monotonic()
            for ws in quiet:
                ws.send(b"\0\0")  # 2 bytes, then nothing
            idle.assert_all_held(first, starved)
            for ws in quiet:
                assert "partial" in json.loads(ws.recv(timeout=10))
            sent = time.monotonic()
            for ws in quiet:
                final = json.loads(ws.recv(timeout=HANG))
                with pytest.raises(ConnectionClosed) as closed:
                    ws.recv(timeout=10)
                assert final == {"text": ""}, "what the audio gave comes before the close"
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
                assert "no audio for 2 s (AudioIdleSeconds)" in closed.value.rcvd.reason
            took = starved.unstarved(sent, time.monotonic(), beside=threads_named(*BESIDE))
            assert took < IDLE + LATE, f"closed {took:.1f} s after the quiet clients' audio, not waiting for a CPU"
            idle.wait_for_decoders(busy=1, within=LATE, starved=starved)  # the normal stream's
            ok = post(idle.srv.http, speech_wav.read_bytes())
            assert ok.status_code == 200 and ok.json()["RecognitionStatus"] == "Success"
    assert_real_time_but_starved(stream, normal.seconds, starved)


def test_a_vosk_client_gone_quiet_gets_its_words_first(idle: Idle, speech_wav: Path, speech_ref: Reference) -> None:
    pcm, _, _ = read_wav(speech_wav)
    with Starved() as starved, connect(f"{idle.srv.ws}/vosk?language=ko-KR") as ws:
        texts = []
        for i in range(0, len(pcm), 3200):
            ws.send(pcm[i : i + 3200])
            texts.append(json.loads(ws.recv(timeout=30)).get("text"))
        sent = time.monotonic()
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                texts.append(json.loads(ws.recv(timeout=HANG)).get("text"))
        took = starved.unstarved(sent, time.monotonic())
    assert took < IDLE + LATE, f"closed {took:.1f} s after the last audio, not waiting for a CPU"
    assert [t for t in texts if t] == speech_ref.texts
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


async def _quiet_turn(ws_base: str, query: str = "") -> tuple[list[dict], int, str, float, float]:
    """What a Speech SDK turn that sent 2 bytes of audio then nothing was answered: the bodies, the close's code and
    reason, and the moments (:func:`time.monotonic`) its audio was sent and its close came."""
    async with aconnect(f"{ws_base}{REST}?language=ko-KR{query}") as ws:
        rid = uuid.uuid4().hex
        await ws.send(client_text_frame("speech.context", rid, {"phraseDetection": {"language": "ko-KR"}}))
        await ws.send(client_audio_frame(rid, b"\0\0"))  # 2 bytes, then nothing
        sent = time.monotonic()
        bodies = []
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                msg = parse_text(await asyncio.wait_for(ws.recv(), HANG))
                bodies.append({"path": msg.path, **msg.json()})
    assert closed.value.rcvd is not None
    return bodies, closed.value.rcvd.code, closed.value.rcvd.reason, sent, time.monotonic()


def test_an_idle_speech_sdk_turn_ends_with_a_reason(idle: Idle, normal: Audio) -> None:
    with Starved() as starved, paced_stream(idle.srv, normal, starved=starved) as stream:
        for query in ("", "&initialSilenceTimeoutMs=500"):
            bodies, code, reason, sent, came = asyncio.run(_quiet_turn(idle.srv.ws, query))
            # The close alone: the SDK reports a close 1007 at once as BadRequest with its reason (after an
            # error status or another close it connects again, sends its audio again and waits for more).
            assert [b["path"] for b in bodies] == ["turn.start"], bodies
            assert code == 1007 and "AudioIdleSeconds" in reason, (code, reason)
            took = starved.unstarved(sent, came, beside=threads_named(*BESIDE))
            assert took < IDLE + LATE, f"closed {took:.1f} s after the audio, not waiting for a CPU"
            idle.wait_for_decoders(busy=1, within=LATE, starved=starved)
    assert_real_time_but_starved(stream, normal.seconds, starved)


def test_the_speech_sdk_reports_an_idle_recognition(idle: Idle) -> None:
    """The real SDK, recognize_once from a push stream that stops after a fifth of a second of silence (and an
    initialSilenceTimeoutMs, which counts audio, not time): the turn ends with BadRequest naming the limit."""
    cfg = config(idle.srv.ws)
    cfg.set_property(speechsdk.PropertyId.SpeechServiceConnection_InitialSilenceTimeoutMs, "500")
    stream = speechsdk.audio.PushAudioInputStream()
    rec = speechsdk.SpeechRecognizer(cfg, audio_config=speechsdk.audio.AudioConfig(stream=stream))
    stream.write(bytes(6400))  # then nothing; the stream stays open
    with Starved() as starved:
        result = rec.recognize_once()
        stream.close()
        assert result.reason == speechsdk.ResultReason.Canceled, result
        details = result.cancellation_details
        assert details.code == speechsdk.CancellationErrorCode.BadRequest and "AudioIdleSeconds" in details.error_details
        took = starved.unstarved(starved.entered, time.monotonic())
        assert took < IDLE + LATE, f"canceled after {took:.1f} s not waiting for a CPU"
        idle.wait_for_decoders(busy=0, within=LATE, starved=starved)


def test_a_speech_sdk_push_stream_that_stops_gets_its_words_then_the_reason(
    idle: Idle, utterances_wav: Path, utterances_ref: Reference
) -> None:
    """Continuous recognition from a push stream whose app stops pushing (the stream stays open): the words
    of what it pushed, then a cancellation naming AudioIdleSeconds; its decoder is given back."""
    pcm, _, _ = read_wav(utterances_wav)
    stream = speechsdk.audio.PushAudioInputStream()
    rec = speechsdk.SpeechRecognizer(config(idle.srv.ws), audio_config=speechsdk.audio.AudioConfig(stream=stream))
    recognized: list[str] = []
    canceled: list[speechsdk.CancellationDetails] = []
    stopped = threading.Event()
    stopped_at: list[float] = []
    rec.recognized.connect(lambda e: recognized.append(e.result.text) if e.result.reason == speechsdk.ResultReason.RecognizedSpeech else None)
    rec.canceled.connect(lambda e: canceled.append(e.cancellation_details))
    rec.session_stopped.connect(lambda e: (stopped_at.append(time.monotonic()), stopped.set()))
    with Starved() as starved:
        rec.start_continuous_recognition()
        try:
            written = time.monotonic()
            stream.write(pcm[: int(3.0 * 16000) * 2])  # the first utterance, cut short of its trailing silence
            assert stopped.wait(HANG), "the SDK did not stop"
        finally:
            rec.stop_continuous_recognition()
            stream.close()
        took = starved.unstarved(written, stopped_at[0])
        assert took < IDLE + LATE, f"stopped {took:.1f} s after its audio, not waiting for a CPU"
        assert recognized == [display_text(utterances_ref.phrases[0])]
        assert len(canceled) == 1 and canceled[0].code == speechsdk.CancellationErrorCode.BadRequest
        assert "AudioIdleSeconds" in canceled[0].error_details
        idle.wait_for_decoders(busy=0, within=LATE, starved=starved)


def test_a_client_held_back_by_decoding_is_not_idle(idle: Idle, utterances_wav: Path, utterances_ref: Reference) -> None:
    """Only time the server owes the client nothing counts: 50 s of audio sent at once takes longer than
    AudioIdleSeconds to decode, while the server reads it a few chunks ahead of the decoding and the
    client waits for its replies."""
    pcm = read_wav(utterances_wav)[0] * 4
    with connect(f"{idle.srv.ws}/vosk?language=ko-KR", max_size=1 << 20) as ws:
        started = time.monotonic()
        for i in range(0, len(pcm), 3200):
            ws.send(pcm[i : i + 3200])
        ws.send('{"eof" : 1}')
        texts = []
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                texts.append(json.loads(ws.recv(timeout=60)).get("text"))
        took = time.monotonic() - started
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000, closed.value.rcvd
    assert [t for t in texts if t][:3] == utterances_ref.texts
    assert took > IDLE, f"decoding took {took:.1f} s: the test needs audio that takes longer than {IDLE} s"


def test_a_speech_sdk_app_pausing_between_recognitions_goes_on(idle: Idle, model, utterances_wav: Path, utterances_ref: Reference) -> None:
    """A connection that holds no decoder is not closed for its silence: an app pausing between two
    recognize_once calls longer than AudioIdleSeconds recognizes as usual, on the connection it kept
    (ConnectionIdleSeconds, 300 s, governs that: test_connection_idle.py)."""
    from ..usp.conftest import replay_reference
    from ..usp.sdk import assert_matches, recognizer

    rec = recognizer(config(idle.srv.ws), utterances_wav)
    first = rec.recognize_once()
    time.sleep(IDLE + 1.5)
    second = rec.recognize_once()
    assert_matches(first, utterances_ref.phrases[0])
    replayed = replay_reference(model, utterances_wav, (first.offset + first.duration) // 10_000 / 1000)
    assert replayed is not None
    assert_matches(second, replayed)


@pytest.fixture(scope="module")
def short(registry: ModelRegistry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """A server whose streams may hold a decoder 3 s."""
    app = create_app(make_settings(tmp_path_factory.mktemp("short"), "MaxSessionSeconds=3"), registry)
    with ServerThread(app) as srv:
        yield srv


def test_a_stream_longer_than_max_session_seconds_ends_with_its_words(short: ServerThread, model: LoadedModel, utterances_wav: Path,
                                                                   utterances_ref: Reference) -> None:
    """A client that keeps sending (2 bytes every second would do) holds a decoder at most MaxSessionSeconds."""
    pcm, rate, _ = read_wav(utterances_wav)
    sent = 0
    with Starved() as starved, connect(f"{short.ws}/vosk?language=ko-KR") as ws:
        started = time.monotonic()
        texts = []
        with pytest.raises(ConnectionClosed) as closed:
            for k, i in enumerate(range(0, len(pcm), CHUNK)):
                time.sleep(max(0.0, started + 0.1 * k - time.monotonic()))
                ws.send(pcm[i : i + CHUNK])
                sent += 1
                texts.append(json.loads(ws.recv(timeout=HANG)).get("text"))
            ws.send('{"eof" : 1}')
            while True:
                texts.append(json.loads(ws.recv(timeout=HANG)).get("text"))
        took = time.monotonic() - started
        unstarved = starved.unstarved(started, started + took)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    # Not before 3 s of the clock (the session began after ``started``), and not held past them by more than LATE but
    # the time this process waited for a CPU.
    assert "MaxSessionSeconds" in closed.value.rcvd.reason and 3 <= took and unstarved < 3 + LATE, (took, unstarved)
    heard = [t for t in texts if t]
    assert heard, texts
    if heard != utterances_ref.texts[: len(heard)]:
        # The cut comes on the wall clock: on a busy machine it falls inside an utterance whose end the
        # decoder has not reached, and its final result is that of the audio decoded so far (Vosk may then
        # choose other words than for the whole utterance, not only the last): in-process Vosk on that much of
        # the recording says the same. Every reply but the last (the final result) answered a chunk decoded
        # before the cut; chunks sent after those may have come before it or after (and the client may send
        # one more before it reads the close).
        decoded = {n: vosk_reference(model.model, pcm[: CHUNK * n], rate, CHUNK, runs=1).texts for n in range(len(texts) - 1, sent + 1)}
        assert heard in decoded.values(), (heard, decoded)


#: MaxSessionSeconds of :func:`held_cut`: several times what a decoder here takes to finish the first sentence's
#: phrase, on a loaded machine too, so that the cut comes after it.
HELD_CUT = 15.0


@pytest.fixture(scope="module")
def held_cut(registry: ModelRegistry, tmp_path_factory: pytest.TempPathFactory, normal: Audio) -> Iterator[ServerThread]:
    """A server whose streams may hold a decoder :data:`HELD_CUT` s, with a warm recognizer (:func:`~tests.hostile.warm`)."""
    app = create_app(make_settings(tmp_path_factory.mktemp("held-cut"), f"MaxSessionSeconds={HELD_CUT}"), registry)
    with ServerThread(app) as srv:
        warm(srv, normal)
        yield srv


def test_a_phrase_held_for_the_segmentation_silence_comes_before_max_session_seconds(
        held_cut: ServerThread, long_pauses_wav: Path, long_pauses_ref: Reference) -> None:
    """A Speech SDK turn holds the first sentence's phrase for the segmentation silence (tests/usp/held.py) when it
    reaches MaxSessionSeconds (the client sends nothing more). The turn ends with ``BadRequest`` and close 1008,
    but the phrase the decoder finished comes first, in-process Vosk's words and times: the SDK, which connects
    again, then sends its audio from after it. Before, it was dropped, and only a replay could bring it back.

    The phrase is held only once the decoder has finished it: at the cut, the audio the route has not handled yet (it
    takes audio a few chunks ahead of the decoding) is not decoded, as the SDK sends it again. The cut is by the clock
    and the decoding by the machine's pace, so the turn gets a warm recognizer (a new one stalls on its first audio)
    and MaxSessionSeconds here (:data:`HELD_CUT`) is far beyond the decoding's time: with the ``short`` server's 3 s
    and a new recognizer, a loaded machine's had decoded nothing by the cut, and the turn ended with no phrase."""
    with connect(held_cut.ws + CONVERSATION) as ws:
        started = time.monotonic()
        first_sentence_held(ws, long_pauses_wav, long_pauses_ref)
        messages, code, reason = until_close(ws, timeout=HANG)
        took = time.monotonic() - started
    assert code == 1008 and "MaxSessionSeconds" in reason, (code, reason)
    assert took >= HELD_CUT, f"closed after {took:.1f} s"
    assert_held_phrase_first(messages, long_pauses_ref, ["BadRequest"])


@pytest.fixture(scope="module")
def cut_soon(registry: ModelRegistry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """A server whose streams may hold a decoder 0.5 s: a new recognizer decodes about 1.5 s of speech in it here."""
    with ServerThread(create_app(make_settings(tmp_path_factory.mktemp("cut"), "MaxSessionSeconds=0.5"), registry)) as srv:
        yield srv


def test_audio_taken_in_before_the_cut_is_answered_before_the_final_result(cut_soon: ServerThread, utterances_wav: Path) -> None:
    """A client that sends faster than the decoder goes: what the server had read when the stream reached
    MaxSessionSeconds is decoded, each chunk answered, before the final result. It was dropped unanswered, the final
    result then read as the reply to the last chunk decoded, and the audio after it lost where the client could not see
    (here 15 of the 40 chunks were answered)."""
    pcm, rate, _ = read_wav(utterances_wav)
    audio = pcm[: 4 * rate * 2]  # 4 s sent at once, read by the server long before the cut
    chunks = [audio[i : i + CHUNK] for i in range(0, len(audio), CHUNK)]
    replies = []
    with connect(f"{cut_soon.ws}/vosk?language=ko-KR") as ws:
        for chunk in chunks:
            ws.send(chunk)
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                replies.append(json.loads(ws.recv(timeout=60)))
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008 and "MaxSessionSeconds" in closed.value.rcvd.reason
    assert len(replies) == len(chunks) + 1, f"{len(replies) - 1} of the {len(chunks)} chunks answered before the final result"
