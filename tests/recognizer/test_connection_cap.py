"""``MaxConnections``: the recognition WebSockets a server keeps open are capped; the one past the cap is refused at once.

A connection that sends nothing holds no decoder and stays open up to ``ConnectionIdleSeconds`` (a Speech SDK
app keeps its connection between recognitions), so before the cap a client could open them until the pod ran out of
memory or file descriptors (3000 idle ``/vosk`` connections stayed open and raised the server's RSS by
about 114 MiB). Each test runs against a real server process (``python -m speech_recognizer``) with a cap of
:data:`CAP`: the first ``CAP`` connections stay open, the next are accepted and closed with 1013 and the
reason (a Speech SDK connection once its request begins, after a turn that fails ``TooManyRequests``), the probes answer, a stream that arrives at the cap hears why it is refused and is admitted once
the flood has gone, the real Speech SDK reports the reason, and a flood far past the cap leaves the server's
memory and open files bounded.
"""

from __future__ import annotations

import asyncio
import base64
import os
import resource
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, closing, contextmanager
from pathlib import Path

import azure.cognitiveservices.speech as speechsdk
import httpx
import psutil
import pytest
from websockets.asyncio.client import connect as aconnect
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from harness.clients import vosk_stream
from harness.server import Server
from harness.speech import Audio, make_audio
from harness.usp import client_text_frame
from speech_recognizer import contract as c
from speech_recognizer import errors
from speech_recognizer.admission import LOG_EVERY_SECONDS
from speech_recognizer.http_limits import CLOSE_REPLY_SECONDS
from speech_recognizer.usp.frames import READING_END_PATH, parse_text
from speech_recognizer.usp.refusal import MAX_WAITING, REQUEST_WAIT_SECONDS

from ..hostile import PeakRss, assert_strict, paced_stream, real_server_for
from ..support import Starved, Unstarved, scrape_metrics, within
from ..usp.sdk import config

CAP = 20
USP = "/speech/recognition/conversation/cognitiveservices/v1"
#: The routes that accept a recognition WebSocket before it takes a decoder: vosk's two and the Speech SDK's.
PATHS = {"vosk": "/vosk", "vosk at /": "/", "speech sdk": USP}
#: The close of a connection refused at the cap, by route when not 1013: the Speech SDK's is 4429 (errors.CORE_CLOSES).
REFUSED = {USP: errors.TOO_MANY_REQUESTS_CLOSE}
#: The routes a kubelet, Prometheus or the operator polls: never refused by the cap.
PROBES = (c.ROUTE_READY, c.ROUTE_STATUS, c.ROUTE_CONTAINER_LIVENESS, c.ROUTE_CONTAINER_READINESS, c.ROUTE_SESSIONS, c.ROUTE_METRICS)
REASON = f"too many connections: this server keeps at most {CAP} open (MaxConnections)"
#: Seconds within which a refusal must reach the client, in time this process and the server did not wait for a CPU
#: (:meth:`~tests.support.Starved.unstarved`).
AT_ONCE = 1.0


@pytest.fixture(scope="module")
def stream_audio(tmp_path_factory: pytest.TempPathFactory) -> Audio:
    return make_audio(tmp_path_factory.mktemp("paced"))


@pytest.fixture(scope="module")
def srv(stream_audio: Audio) -> Iterator[Server]:
    with real_server_for(stream_audio, f"MaxConnections={CAP}", "Logging:Console:LogLevel:Default=Information") as server:
        yield server


def sessions(srv: Server) -> dict:
    r = httpx.get(f"{srv.http}{c.ROUTE_SESSIONS}", timeout=10)
    assert r.status_code == 200
    return r.json()


def until(srv: Server, connections: int, seconds: float = 5.0) -> None:
    """Wait until ``/sessions`` reports ``connections``: within ``seconds`` of time this process and the server did
    not wait for a CPU (:func:`~tests.support.within`)."""
    now: list[dict] = []

    def reports() -> bool:
        now.append(sessions(srv))
        return now[-1]["connections"] == connections

    within(seconds, reports, lambda: f"/sessions reports {now[-1]}, not {connections} connections")


def gauges(srv: Server) -> tuple[float | None, float | None]:
    """``speech_connections`` and ``speech_connections_max`` of ``/metrics``."""
    samples = scrape_metrics(srv.http)
    return samples.get(("speech_connections", ())), samples.get(("speech_connections_max", ()))


def refusals(srv: Server) -> dict[str, float]:
    """``speech_refused_total{reason="too_many_connections"}`` by route."""
    return {dict(labels)["route"]: value for (name, labels), value in scrape_metrics(srv.http).items()
            if name == "speech_refused_total" and dict(labels)["reason"] == "too_many_connections"}


def open_ws(srv: Server, path: str) -> ClientConnection:
    return connect(f"{srv.ws}{path}?language=ko-KR", subprotocols=["USP"] if path == USP else None,  # type: ignore[list-item]
                   open_timeout=10)


def still_open(ws: ClientConnection) -> bool:
    try:
        ws.recv(timeout=0.01)
    except TimeoutError:
        return True
    except ConnectionClosed:
        return False
    return True  # a message (none is sent to an idle connection)


def attempt(srv: Server, path: str, wait: float = 10) -> tuple[int | None, str, float]:
    """A connection past the cap: the close code and reason it got, and how long after its start (code None,
    reason "open": still open after ``wait`` seconds). On the Speech SDK's route it begins a request, as the SDKs do
    at once, and is told by a close 4429 alone (``TooManyRequests`` to the Python SDK, asked once: errors.CORE_CLOSES)
    after a message that names the kind (speech_recognizer/usp/refusal.py)."""
    started = time.monotonic()
    said: list[str | bytes] = []
    with open_ws(srv, path) as ws:
        if path == USP:
            ws.send(client_text_frame("speech.context", uuid.uuid4().hex, {}))
        try:
            while True:
                said.append(ws.recv(timeout=wait))
        except ConnectionClosed as closed:
            took = time.monotonic() - started
            answer = (closed.rcvd.code, closed.rcvd.reason, took) if closed.rcvd else (None, "no close frame", took)
        except TimeoutError:
            return None, "open", time.monotonic() - started
    if path != USP:
        assert said == [], f"{path}: a message on an idle connection"
        return answer
    frames = [parse_text(str(m)) for m in said]
    assert [(f.path, f.headers.get(errors.FAILURE_HEADER.lower())) for f in frames] == [(READING_END_PATH, "too_many_connections")], said
    return answer


@contextmanager
def held(srv: Server, count: int) -> Iterator[list[ClientConnection]]:
    """``count`` idle recognition WebSockets, spread over the three routes, closed at the end."""
    with ExitStack() as stack:
        paths = list(PATHS.values())
        conns = [stack.enter_context(open_ws(srv, paths[i % len(paths)])) for i in range(count)]
        yield conns


FLOOD = 2000
#: What a flood of :data:`FLOOD` attempts may add to the server's peak RSS (without the cap: about 76 MB, kept).
FLOOD_ALLOWANCE_MB = 20


def enough_files(count: int) -> None:
    """This process may hold ``count`` more sockets (its soft limit raised up to the hard one)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = psutil.Process().num_fds() + count + 200
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= want, "the flood needs more open files than this process may have"


def test_a_flood_far_past_the_cap_leaves_the_server_memory_bounded(srv: Server) -> None:
    """:data:`FLOOD` clients connect and keep what they get: the server holds ``CAP``, refuses the rest at once."""
    enough_files(FLOOD)

    async def flood() -> tuple[int, int]:
        kept, refused = [], 0

        async def one() -> None:
            nonlocal refused
            ws = await aconnect(f"{srv.ws}/vosk?language=ko-KR", open_timeout=30)
            try:
                await asyncio.wait_for(ws.recv(), 2)
            except TimeoutError:
                kept.append(ws)
            except ConnectionClosed as closed:
                assert closed.rcvd is not None and closed.rcvd.code == 1013, closed
                refused += 1

        for _ in range(FLOOD // 100):
            await asyncio.gather(*(one() for _ in range(100)))
        open_now = sessions(srv)["connections"]
        for ws in kept:
            await ws.close()
        return open_now, refused

    until(srv, 0)
    # The server logs a refusal at most once per LOG_EVERY_SECONDS, so a refusal logged less than that ago
    # would silence the flood's first line: this test comes first in the module, and waits only if one was.
    if "MaxConnections" in srv.log.read_text(errors="replace"):
        time.sleep(LOG_EVERY_SECONDS)
    logged = srv.log.stat().st_size
    with PeakRss(srv.pid) as rss:
        started = time.monotonic()
        open_now, refused = asyncio.run(flood())
        took = time.monotonic() - started
    print(f"{FLOOD} connections in {took:.1f} s against a cap of {CAP}: {open_now} kept open, {refused} refused, "
          f"the server's peak RSS +{rss.growth_mb:.1f} MB")
    assert (open_now, refused) == (CAP, FLOOD - CAP)
    assert rss.growth_mb < FLOOD_ALLOWANCE_MB
    until(srv, 0)
    with srv.log.open("rb") as log:
        log.seek(logged)
        lines = log.read().decode(errors="replace").splitlines()
    said = [line for line in lines if "MaxConnections" in line]
    print(f"the server's log (at Information) over the flood: {len(lines)} lines, {len(said)} about the cap: {said}")
    assert 1 <= len(said) <= took / 10 + 2, said
    # uvicorn's and websockets' lines for the CAP connections kept (accepted, open, closed), not a line per refusal
    assert len(lines) <= 4 * CAP + 10, lines[:50]


def test_past_the_cap_a_connection_is_refused_at_once_with_the_reason_and_the_probes_answer(srv: Server) -> None:
    until(srv, 0)
    before = refusals(srv)
    with held(srv, CAP) as conns:
        until(srv, CAP)
        time.sleep(1.0)
        assert all(still_open(ws) for ws in conns), "the connections within the cap stay open"
        assert gauges(srv) == (CAP, CAP)

        tries = 5
        took = []  # (clock, unstarved) from each connection's start to its refusal
        with Starved() as starved:
            for route, path in PATHS.items():
                for _ in range(tries):
                    started = time.monotonic()
                    code, reason, seconds = attempt(srv, path)
                    assert (code, reason.startswith(REASON)) == (REFUSED.get(path, 1013), True), (route, code, reason)
                    took.append((started, seconds))
        took = [(round(seconds, 3), round(starved.unstarved(started, started + seconds), 3)) for started, seconds in took]
        print(f"refusal at the cap: {1000 * min(took)[0]:.0f}-{1000 * max(took)[0]:.0f} ms from the connection's start")
        # in time this process and the server did not wait for a CPU: by the clock, such a bound fails at load 20
        assert max(quiet for _, quiet in took) < AT_ONCE, f"(clock, unstarved) {took}"

        for probe in PROBES:  # a kubelet probing a pod at the cap: alive and ready
            assert httpx.get(f"{srv.http}{probe}", timeout=5).status_code == 200, probe
        assert httpx.get(f"{srv.http}{c.ROUTE_READY}", timeout=5).json()["ready"] is True
        after = refusals(srv)
        counted = {route: after.get(route, 0) - before.get(route, 0) for route in ("vosk", "usp/conversation")}
        assert counted == {"vosk": 2 * tries, "usp/conversation": tries}, after
        assert sessions(srv)["connections"] == CAP and all(still_open(ws) for ws in conns), "the refusals left the others alone"
    until(srv, 0)
    assert gauges(srv) == (0, CAP)
    for path in PATHS.values():  # room again
        with open_ws(srv, path) as ws:
            time.sleep(0.3)
            assert still_open(ws), path


#: Attempts to connect past the cap while the admitted stream runs (tens a second: a few seconds of them).
TRIES_BESIDE = 50


def test_a_stream_at_the_cap_hears_why_and_is_admitted_once_the_flood_goes(srv: Server, stream_audio: Audio) -> None:
    """A stream refused at the cap, with the reason; admitted once one idle connection has gone, it stays
    strictly real time while a client goes on trying to connect past the cap beside it."""
    until(srv, 0)
    with held(srv, CAP) as conns:
        until(srv, CAP)
        late = asyncio.run(vosk_stream(srv.ws, stream_audio, paced=True, timeout=30))
        assert late.refused and late.message.startswith(f"1013 {REASON}"), late.summary()

        conns.pop().close()
        until(srv, CAP - 1)
        attempts: list[tuple[float, int | None]] = []  # (when answered, close code)
        stop = threading.Event()

        def flood() -> None:
            while not stop.is_set():
                code = attempt(srv, "/vosk", wait=2)[0]
                attempts.append((time.monotonic(), code))
                time.sleep(0.02)  # tens a second: the flood's CPU is not what this test measures

        with paced_stream(srv, stream_audio) as stream:
            until(srv, CAP, seconds=10)
            flooder = threading.Thread(target=flood, name="flood", daemon=True)
            flooder.start()
            # (fewer attempts by 30 s of time not waiting for a CPU: the count below says so, after the stream's lag)
            with closing(Unstarved(descendants=True)) as stopwatch:
                while len(attempts) < TRIES_BESIDE and not stream.done() and not stopwatch.beyond(30):
                    time.sleep(0.05)
        ended = time.monotonic()  # the stream's connection closed just before: an attempt from then on may be admitted
        stop.set()
        flooder.join(15)
        assert_strict(stream, stream_audio.seconds)
        during = [code for answered, code in attempts if answered < ended]
        print(f"{len(during)} connections refused beside the stream")
        assert len(during) >= TRIES_BESIDE and set(during) == {1013}, attempts
    until(srv, 0)


def test_a_flood_of_idle_speech_sdk_connections_past_the_cap_holds_at_most_max_waiting(srv: Server) -> None:
    """A refused Speech SDK connection is read for its request up to ``REQUEST_WAIT_SECONDS`` (usp/refusal.py): a flood
    of ``MAX_WAITING`` + 10 that send nothing holds ``MAX_WAITING`` sockets that long, and the other 10 are closed at
    once (the close and the reason, as before the turn was sent), not all of them held; the server answers meanwhile, each
    held one is closed once its time is up, and a connection refused after them waits for its request (its turn) again.

    Each connection's close is timed from its own opening: the first 10 to close within :data:`AT_ONCE` in time this
    process and the server did not wait for a CPU, the others not before ``REQUEST_WAIT_SECONDS`` by the clock. Telling
    them apart by which were closed at one look, :data:`AT_ONCE` by the clock after the flood, failed on a loaded
    machine."""
    until(srv, 0)
    enough_files(MAX_WAITING + 10 + CAP)

    async def one() -> tuple[int, float, float]:
        """A connection that sends nothing: its close code, when it opened and when its close came."""
        ws = await aconnect(f"{srv.ws}{USP}?language=ko-KR", subprotocols=["USP"], open_timeout=60)  # type: ignore[list-item]
        opened = time.monotonic()
        with pytest.raises(ConnectionClosed) as closed:  # a message on an idle connection fails it
            await asyncio.wait_for(ws.recv(), REQUEST_WAIT_SECONDS + 60)  # a hang guard
        assert closed.value.rcvd is not None and closed.value.rcvd.reason.startswith(REASON), closed.value
        return closed.value.rcvd.code, opened, time.monotonic()

    async def flood() -> tuple[list[tuple[int, float, float]], int]:
        closes = asyncio.gather(*(one() for _ in range(MAX_WAITING + 10)))
        ready = await asyncio.to_thread(lambda: httpx.get(f"{srv.http}{c.ROUTE_READY}", timeout=60).status_code)
        return await closes, ready

    with held(srv, CAP):
        until(srv, CAP)
        with Starved() as starved:
            closes, ready = asyncio.run(flood())
        closes.sort(key=lambda close: close[2])
        at_once, later = closes[:10], closes[10:]
        print(f"{len(at_once)} closed within {max(starved.unstarved(o, t) for _, o, t in at_once):.2f} s not waiting for a CPU, "
              f"{len(later)} held {min(t - o for _, o, t in later):.1f}-{max(t - o for _, o, t in later):.1f} s")
        assert ready == 200, "the server answers meanwhile"
        assert [code for code, _, _ in closes] == [REFUSED[USP]] * (MAX_WAITING + 10)
        slow = [(round(t - o, 2), round(starved.unstarved(o, t), 2)) for _, o, t in at_once if starved.unstarved(o, t) >= AT_ONCE]
        assert not slow, f"closed past {AT_ONCE:g} s not waiting for a CPU (clock, unstarved): {slow}"
        early = [round(t - o, 2) for _, o, t in later if t - o < REQUEST_WAIT_SECONDS - 0.5]
        assert not early, f"{len(early)} of the {MAX_WAITING} held closed before their request's wait was over: {early} s"
        code, reason, _ = attempt(srv, USP)  # the message naming the kind, then the close (attempt checks it)
        assert code == REFUSED[USP] and reason.startswith(REASON), (code, reason)
    until(srv, 0)


def test_a_speech_sdk_app_refused_at_the_cap_is_canceled_with_the_reason(srv: Server, speech_wav: Path) -> None:
    """``TooManyRequests`` with the reason, as when every decoder is busy (before: ``ServiceError``, "Connection was
    closed by the remote host. Error code: 1013" and the reason; tests/jssdk/test_refusals.py says why)."""
    until(srv, 0)
    with held(srv, CAP):
        until(srv, CAP)
        with Starved() as starved:  # the SDK's and the server's time not waiting for a CPU
            refused = speechsdk.SpeechRecognizer(config(srv.ws), audio_config=speechsdk.audio.AudioConfig(filename=str(speech_wav))).recognize_once()
        assert refused.reason == speechsdk.ResultReason.Canceled, refused
        details = refused.cancellation_details
        print(f"the Speech SDK refused at the cap, after {starved}:", details.reason, details.code, repr(details.error_details))
        assert (details.reason, details.code) == (speechsdk.CancellationReason.Error, speechsdk.CancellationErrorCode.TooManyRequests)
        assert REASON in details.error_details, details.error_details
        assert starved.seconds < 10, f"a refusal, not a hang: {starved}"
    until(srv, 0)
    admitted = speechsdk.SpeechRecognizer(config(srv.ws), audio_config=speechsdk.audio.AudioConfig(filename=str(speech_wav))).recognize_once()
    assert admitted.reason == speechsdk.ResultReason.RecognizedSpeech, admitted.cancellation_details


def test_clients_that_never_answer_the_refusal_are_let_go(srv: Server) -> None:
    """A hostile flood that sends its upgrades and reads nothing (it never answers the close): each refused
    socket is held only for :data:`~speech_recognizer.http_limits.CLOSE_REPLY_SECONDS` (uvicorn's close timeout held
    it 10 s), then the server's open files are back to what they were."""
    enough_files(FLOOD)
    server = psutil.Process(srv.pid)
    until(srv, 0)
    files_before = server.num_fds()

    refused_before = refusals(srv).get("vosk", 0)

    async def flood() -> list[asyncio.StreamWriter]:
        writers = []
        for _ in range(FLOOD):
            _, writer = await asyncio.open_connection("127.0.0.1", srv.port)
            key = base64.b64encode(os.urandom(16)).decode()
            writer.write(f"GET /vosk?language=ko-KR HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
            writers.append(writer)
        # Each refusal's close answered by nobody: the last one's socket held from its refusal (counted as it is sent)
        # for CLOSE_REPLY_SECONDS. Those seconds are the server's and this process's not waiting for a CPU (Unstarved):
        # on a loaded machine the refusals of the flood came seconds after its last upgrade, and a bound by the clock
        # from then failed the test (85 files still held 15 s after it, with load 10 on 2 CPUs).
        with closing(Unstarved(descendants=True)) as refused:  # a hang guard
            while refusals(srv).get("vosk", 0) < refused_before + FLOOD - CAP:
                assert not refused.beyond(60), f"{refusals(srv)} refused of {FLOOD - CAP} ({refused_before} before): {refused}"
                await asyncio.sleep(0.2)
        stopwatch = Unstarved()
        try:
            while server.num_fds() > files_before + CAP + 5:
                late = stopwatch.read() > CLOSE_REPLY_SECONDS + 3 or stopwatch.clock > 60
                assert not late, (f"the server still holds {server.num_fds()} files ({files_before} before) {stopwatch.seconds:.1f} s "
                                  f"after its last refusal ({stopwatch.clock:.1f} s of clock)")
                await asyncio.sleep(0.2)
        finally:
            stopwatch.close()
        assert sessions(srv)["connections"] == CAP, "the first CAP stay open until their client closes them"
        for writer in writers:
            writer.close()
        return writers

    with PeakRss(srv.pid) as rss:
        asyncio.run(flood())
    print(f"{FLOOD} upgrades that never read the answer: the server's peak RSS +{rss.growth_mb:.1f} MB")
    until(srv, 0, seconds=15)
