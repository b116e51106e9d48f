"""A client that leaves mid-recognition gives its decoder back at once, not after the audio it left behind.

A client that sends 50 s of audio as fast as it can and then goes away held its decoder until the
server had decoded everything it had received (3-7 s here; more on a busy pod), for nobody: a
client reconnecting at once found the server full (503, 1013, ``TooManyRequests``). A REST client
was never looked at while its upload decoded; a WebSocket client's close frame (or, on the Speech
SDK route, with no reply to send, the end of its connection) waited in the socket behind its
audio. Each test leaves mid-decoding on a server with one decoder, checks that decoder is free
within :data:`BOUND`, and that a client connecting again gets it; a client that ends its audio
properly still gets every result.
"""

from __future__ import annotations

import asyncio
import fcntl
import io
import json
import socket
import struct
import sys
import termios
import threading
import time
import uuid
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from harness.usp import client_audio_frame, client_text_frame
from speech_recognizer.app import create_app
from speech_recognizer.models import ModelRegistry
from speech_recognizer.usp.frames import parse_text

from ..conftest import CHUNK, make_settings
from ..support import Reference, ServerThread, read_wav, scrape_metrics, within
from .on_demand import ON_DEMAND, GatedRegistry

REST = "/speech/recognition/conversation/cognitiveservices/v1"
#: Seconds of this process's CPU time (the server's, its decoder's) within which a gone client's decoder must be free:
#: decoding what it left takes several, its end here at most the decoding of the chunk that was running as it left.
#: CPU time, not the clock's: on a machine whose CPU is shared by many, the clock's time of that same work is many times
#: longer (and of decoding what it left too), while the CPU it takes stays what it is.
BOUND = 1.0
#: Seconds, in time this process (the server, its decoders) did not wait for a CPU, after which a wait that another
#: bound judges (:data:`BOUND`'s CPU time, what is counted) fails as a hang (:func:`~tests.support.within`).
HANG = 60.0


@dataclass(frozen=True)
class Held:
    """How long a decoder stayed held: clock seconds, and this process's CPU seconds meanwhile."""

    seconds: float
    cpu: float

    def __str__(self) -> str:
        return f"{self.seconds:.3f} s ({self.cpu:.3f} s of CPU)"


class Gone:
    """A server with one decoder, and its app (to watch its engine)."""

    def __init__(self, srv: ServerThread, app: object) -> None:
        self.srv, self.app = srv, app

    @property
    def active(self) -> int:
        return self.app.state.engine.active  # type: ignore[attr-defined]

    def wait_until_held(self) -> None:
        within(HANG, lambda: self.active, "the recognition's decoder taken", every=0.02)

    def held_until_free(self) -> Held:
        """Wait until the decoder is free; how long that took, in clock and CPU time (bounded by :data:`BOUND` by the
        caller; here only a hang is, by :data:`HANG`)."""
        started, cpu = time.monotonic(), time.process_time()
        within(HANG, lambda: not self.active, "the decoder given back")
        return Held(time.monotonic() - started, time.process_time() - cpu)

    def refusals(self, route: str) -> float:
        samples = scrape_metrics(self.srv.http)
        return samples.get(("speech_refused_total", (("reason", "client_gone"), ("route", route))), 0.0)

    def succeeded(self, route: str) -> float:
        return scrape_metrics(self.srv.http).get(("speech_requests_total", (("route", route), ("status", "200"))), 0.0)

    def ends(self, route: str) -> tuple[float, float]:
        """How many streams on ``route`` were counted as successes, and as clients gone."""
        return self.succeeded(route), self.refusals(route)

    def abandoned(self, route: str) -> float:
        """Seconds of audio counted as dropped undecoded on ``route``."""
        samples = scrape_metrics(self.srv.http)
        return samples.get(("speech_audio_abandoned_seconds_total", (("locale", "ko-KR"), ("route", route))), 0.0)

    def decoded(self, route: str) -> float:
        """Seconds of audio decoded on ``route``."""
        samples = scrape_metrics(self.srv.http)
        return samples.get(("speech_audio_seconds_total", (("locale", "ko-KR"), ("route", route))), 0.0)

    def counters(self, route: str) -> tuple[float, float]:
        return self.abandoned(route), self.decoded(route)

    def check_dropped(self, route: str, before: tuple[float, float], sent: float, again: float, how: str) -> None:
        """Of the ``sent`` seconds of a stream whose client left, little was decoded and the rest the server had
        read was counted as dropped; ``again``: seconds decoded on ``route`` since by a client connecting again.

        After a close frame the server has read all the audio (it came before the close), so most of it is
        counted. After a reset the kernel drops what the server had not read yet, which is more the busier the
        machine: only some is counted then.
        """
        dropped = self.abandoned(route) - before[0]
        decoded = self.decoded(route) - before[1] - again
        assert decoded < sent / 2, f"{decoded:.1f} s of {sent:.1f} s were decoded: the decoder went on after the client left"
        assert 0 < dropped <= sent - decoded + 0.01, f"{dropped:.1f} s counted as dropped, {decoded:.1f} s decoded of {sent:.1f} s"
        if how == "close frame":
            assert dropped > 20, "most of its audio was dropped undecoded"


@pytest.fixture(scope="module")
def gone(registry: ModelRegistry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gone]:
    app = create_app(make_settings(tmp_path_factory.mktemp("gone"), "DecoderMaxCount=1"), registry)
    with ServerThread(app) as srv:
        yield Gone(srv, app)


@pytest.fixture(scope="module")
def long_pcm(utterances_wav: Path) -> bytes:
    """About 50 s of speech (the three utterances four times), 16 kHz mono: seconds of decoding."""
    return read_wav(utterances_wav)[0] * 4


def wav_bytes(pcm: bytes) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm)
    return out.getvalue()


def leave(sock: socket.socket, how: str) -> None:
    """Close the TCP connection: a FIN (``close``), or a reset (``reset``: SO_LINGER 0), with no WebSocket close frame."""
    if how == "reset":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def leave_websocket(gone: Gone, ws: ClientConnection, how: str) -> Held:
    """Leave once the server answers (the stream has its decoder), with most of the audio sent still
    undecoded; how long its decoder stayed held.

    ``close frame``: a WebSocket close, whose handshake the client waits for in the background
    (up to its close timeout, 10 s); else the TCP connection closed without one (:func:`leave`).
    """
    ws.recv(timeout=30)
    assert gone.active == 1
    if how == "close frame":
        threading.Thread(target=ws.close, daemon=True).start()
    else:
        leave(ws.socket, how)
    return gone.held_until_free()


@pytest.mark.parametrize("how", ["close", "reset"])
def test_a_rest_client_leaving_mid_decoding_frees_its_decoder(gone: Gone, long_pcm: bytes, speech_wav: Path, how: str) -> None:
    body = wav_bytes(long_pcm)
    head = (f"POST {REST}?language=ko-KR HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: audio/wav\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    before, dropped = gone.refusals("rest-conversation"), gone.abandoned("rest-conversation")
    sock = socket.create_connection(("127.0.0.1", gone.srv.port))
    sock.sendall(head + body)
    gone.wait_until_held()
    time.sleep(0.5)  # decoding its 50 s
    assert gone.active == 1
    leave(sock, how)
    held = gone.held_until_free()
    assert held.cpu < BOUND, f"the decoder was held {held} after the client left"
    again = httpx.post(f"{gone.srv.http}{REST}?language=ko-KR", content=speech_wav.read_bytes(),
                       headers={"Content-Type": "audio/wav"}, timeout=60)
    assert again.status_code == 200 and again.json()["RecognitionStatus"] == "Success", again.text
    assert gone.refusals("rest-conversation") == before + 1, "the request is counted as one whose client left"
    assert 20 < gone.abandoned("rest-conversation") - dropped < len(long_pcm) / 32000, "most of its audio was dropped undecoded"


def vosk_words(base: str, pcm: bytes) -> list[str]:
    """What /vosk answers ``pcm`` sent at once, then eof (the client waits for every result)."""
    with connect(f"{base}/vosk?language=ko-KR", max_size=1 << 20) as ws:
        for i in range(0, len(pcm), CHUNK):
            ws.send(pcm[i : i + CHUNK])
        ws.send('{"eof" : 1}')
        texts = []
        with pytest.raises(ConnectionClosed):
            while True:
                texts.append(json.loads(ws.recv(timeout=60)).get("text"))
    return [t for t in texts if t]


@pytest.mark.parametrize("how", ["reset", "close frame"])
def test_a_vosk_client_leaving_with_audio_unread_frees_its_decoder(
    gone: Gone, long_pcm: bytes, speech_wav: Path, speech_ref: Reference, how: str
) -> None:
    before, counters = gone.refusals("vosk"), gone.counters("vosk")
    with connect(f"{gone.srv.ws}/vosk?language=ko-KR", max_size=1 << 20) as ws:
        for i in range(0, len(long_pcm), CHUNK):  # as fast as the socket takes it
            ws.send(long_pcm[i : i + CHUNK])
        held = leave_websocket(gone, ws, how)
    assert held.cpu < BOUND, f"the decoder was held {held} after the client left"
    pcm = read_wav(speech_wav)[0]
    assert vosk_words(gone.srv.ws, pcm) == speech_ref.texts, "connecting again gets a decoder"
    assert gone.refusals("vosk") == before + 1, "the stream is counted as one whose client left"
    gone.check_dropped("vosk", counters, len(long_pcm) / 32000, len(pcm) / 32000, how)


@pytest.mark.parametrize("route", ["vosk", "usp/conversation"])
def test_a_client_s_fin_behind_more_than_the_read_ahead_frees_its_decoder(
    gone: Gone, long_pcm: bytes, speech_wav: Path, speech_ref: Reference, route: str
) -> None:
    """A client that sends four times the audio the server reads ahead (2 MiB: 60 s) as fast as the socket takes it,
    its end of audio (/vosk's eof, the Speech SDK's empty chunk), and closes its connection once the server's kernel
    has it all (its FIN comes at once; ``shutdown(SHUT_RDWR)``: a reset answers anything sent to it after, as a closed
    socket's kernel does). The FIN waited in the server's socket behind the audio its inbox had not read: the decoder
    was held until that was decoded (measured below), for nobody. Now the decoder is free within :data:`BOUND` of the
    FIN, counted as a client gone, what it had read ahead counted as dropped (the audio decoded while the client waited
    for the server's kernel to take it all is most of it); connecting again gets it (/vosk: 4519a1c). A client that
    half-closes there and reads on is answered instead (tests/recognizer/test_half_close.py)."""
    pcm = long_pcm * 4  # 200 s, 6.4 MB
    before, counters = gone.refusals(route), gone.counters(route)
    url = f"{gone.srv.ws}/vosk?language=ko-KR" if route == "vosk" else f"{gone.srv.ws}{REST}?language=ko-KR"
    # its replies read meanwhile: no send waits on it; no keepalive of its own (its pings wait unread behind its audio:
    # under load the sending outlasts websockets' 20 + 20 s, and the client closed itself, 1011)
    with connect(url, max_size=1 << 20, max_queue=None, ping_interval=None) as ws:
        if route == "vosk":
            for i in range(0, len(pcm), CHUNK):  # returns once the last is in the client's socket
                ws.send(pcm[i : i + CHUNK])
            ws.send('{"eof" : 1}')
        else:
            ws.send(client_audio_frame(usp_turn(ws, pcm), b""))
        while unacknowledged(ws.socket):  # all of it in the server's kernel, the FIN not behind any
            time.sleep(0.005)
        assert gone.active == 1, "the audio is being decoded"
        ws.socket.shutdown(socket.SHUT_RDWR)
        held = gone.held_until_free()
        print(f"{route}: decoder free {held} after the FIN")
        assert held.cpu < BOUND, f"the decoder was held {held} after the client's FIN"
    again = read_wav(speech_wav)[0]
    if route == "vosk":
        assert vosk_words(gone.srv.ws, again) == speech_ref.texts, "connecting again gets a decoder"
    else:
        phrases = usp_phrases(gone.srv.ws, again)
        assert all(p.get("DisplayText") for p in phrases[:-1]) and len(phrases) == 1 + len(speech_ref.phrases), phrases
    assert gone.refusals(route) == before + 1, "the stream is counted as one whose client left"
    dropped = gone.abandoned(route) - counters[0]
    decoded = gone.decoded(route) - counters[1] - len(again) / 32000  # (what was decoded before the FIN came: much)
    assert 20 < dropped <= len(pcm) / 32000 - decoded + 0.01, f"{dropped:.1f} s dropped, {decoded:.1f} s decoded"


def unacknowledged(sock: socket.socket) -> int:
    """Bytes the client has sent that the server's kernel has not acknowledged yet (``TIOCOUTQ``)."""
    return int.from_bytes(fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, bytes(4)), sys.byteorder)


def usp_turn(ws: ClientConnection, pcm: bytes, language: str = "ko-KR") -> str:
    """A Speech SDK turn's frames: context, RIFF header, ``pcm`` in the SDK's chunks (no end of audio); its request id."""
    rid = uuid.uuid4().hex
    ws.send(client_text_frame("speech.context", rid, {"phraseDetection": {"language": language}}))
    ws.send(client_audio_frame(rid, wav_bytes(b"")))
    for i in range(0, len(pcm), CHUNK):
        ws.send(client_audio_frame(rid, pcm[i : i + CHUNK]))
    return rid


def usp_phrases(base: str, pcm: bytes) -> list[dict]:
    """The ``speech.phrase`` bodies a client that reads gets for one turn of ``pcm`` (its last: ``EndOfDictation``)."""
    with connect(f"{base}{REST}?language=ko-KR", max_size=1 << 20) as ws:
        ws.send(client_audio_frame(usp_turn(ws, pcm), b""))
        phrases = []
        while (msg := parse_text(str(ws.recv(timeout=60)))).path != "turn.end":
            if msg.path == "speech.phrase":
                phrases.append(msg.json())
    return phrases


@pytest.mark.parametrize("how", ["reset", "close frame"])
def test_a_speech_sdk_client_leaving_with_audio_unread_frees_its_decoder(
    gone: Gone, long_pcm: bytes, speech_wav: Path, speech_ref: Reference, how: str
) -> None:
    before, counters = gone.refusals("usp/conversation"), gone.counters("usp/conversation")
    with connect(f"{gone.srv.ws}{REST}?language=ko-KR", max_size=1 << 20) as ws:
        usp_turn(ws, long_pcm)
        held = leave_websocket(gone, ws, how)
    assert held.cpu < BOUND, f"the decoder was held {held} after the client left"
    pcm = read_wav(speech_wav)[0]
    with connect(f"{gone.srv.ws}{REST}?language=ko-KR", max_size=1 << 20) as again:  # connecting again gets a decoder
        rid = usp_turn(again, pcm)
        again.send(client_audio_frame(rid, b""))
        paths, phrases = [], []
        while not paths or paths[-1] != "turn.end":
            msg = parse_text(again.recv(timeout=60))
            paths.append(msg.path)
            if msg.path == "speech.phrase":
                phrases.append(msg.json())
    assert phrases[0].get("DisplayText") and phrases[-1]["RecognitionStatus"] == "EndOfDictation", phrases
    assert gone.refusals("usp/conversation") == before + 1, "the turn is counted as one whose client left"
    gone.check_dropped("usp/conversation", counters, len(long_pcm) / 32000, len(pcm) / 32000, how)


@pytest.mark.parametrize("how", ["close frame", "close", "reset"])
def test_a_vosk_client_leaving_without_eof_is_counted_as_gone(gone: Gone, speech_wav: Path, how: str) -> None:
    """A /vosk client that reads the reply to every chunk it sent (all of it decoded) and leaves without
    ``{"eof" : 1}``: counted as a client gone, as a Speech SDK client that leaves mid-turn is, not as a success
    (before: ``status="200"``, as a client that ended its stream); one that sends eof still counts as a success."""
    pcm = read_wav(speech_wav)[0]
    before = gone.ends("vosk")
    with connect(f"{gone.srv.ws}/vosk?language=ko-KR", max_size=1 << 20) as ws:
        for i in range(0, len(pcm), CHUNK):
            ws.send(pcm[i : i + CHUNK])
            ws.recv(timeout=30)
        if how == "close frame":
            ws.close()
        else:
            leave(ws.socket, how)
    held = gone.held_until_free()
    within(COUNTED, lambda: gone.ends("vosk") != before, "the stream counted")
    assert gone.ends("vosk") == (before[0], before[1] + 1), "counted once, as a client gone"
    print(f"{how}: decoder free {held} after it left")
    vosk_words(gone.srv.ws, pcm)  # eof, then its final result
    assert gone.ends("vosk") == (before[0] + 1, before[1] + 1), "a stream ended with eof is a success"


#: Seconds, in time this process did not wait for a CPU, within which a stream that ended is counted and its connection
#: given back (:func:`~tests.support.within`).
COUNTED = 10.0


def counted(gone: Gone, route: str, before: tuple[float, float] | None = None) -> tuple[float, float]:
    """What is counted on ``route`` (:meth:`Gone.ends`) once every connection has ended and, given what was counted
    ``before``, something more is: within :data:`COUNTED`, else a failure saying what is open and counted."""
    admission = gone.app.state.engine.admission  # type: ignore[attr-defined]
    within(COUNTED, lambda: not admission.connections and gone.ends(route) != before,
           lambda: f"{admission.connections} connections ended and more than {before} counted (now {gone.ends(route)})")
    return gone.ends(route)


@pytest.mark.parametrize("how", ["close frame", "reset"])
@pytest.mark.parametrize("route", ["vosk", "usp/conversation"])
def test_a_client_leaving_before_any_audio_is_counted_as_gone(gone: Gone, route: str, how: str) -> None:
    """A /vosk client that sends its config and leaves, a Speech SDK client whose turn began (``speech.context``) and
    that leaves before its audio: counted once as a client gone (``client_gone``, 499), as one that leaves mid-audio
    is (before: /vosk counted it a success, ``status="200"``; the Speech SDK route counted nothing). A Speech SDK
    connection that began no turn (``speech.config`` alone: an app that connected ahead and never recognized) is no
    request, and counts nothing still."""
    before = gone.ends(route)
    url = f"{gone.srv.ws}/vosk?language=ko-KR" if route == "vosk" else f"{gone.srv.ws}{REST}?language=ko-KR"
    with connect(url, max_size=1 << 20) as ws:
        if route == "vosk":
            ws.send(json.dumps({"config": {"sample_rate": 16000}}))
        else:
            ws.send(client_text_frame("speech.config", None, {"context": {"system": {"name": "test"}}}))
            ws.send(client_text_frame("speech.context", uuid.uuid4().hex, {"phraseDetection": {"language": "ko-KR"}}))
        time.sleep(0.2)  # taken in
        if how == "close frame":
            ws.close()
        else:
            leave(ws.socket, how)
    assert counted(gone, route, before) == (before[0], before[1] + 1), "counted once, as a client gone"
    if route != "vosk":
        with connect(url, max_size=1 << 20) as ws:
            ws.send(client_text_frame("speech.config", None, {"context": {"system": {"name": "test"}}}))
            time.sleep(0.2)
        assert counted(gone, route) == (before[0], before[1] + 1), "a connection with no turn counts nothing"


def test_a_connection_the_drain_closes_before_any_audio_is_counted_as_draining(registry: ModelRegistry, tmp_path: Path) -> None:
    """A /vosk connection that sent its config, and a Speech SDK turn begun by its ``speech.context``, no audio yet,
    when the server drains: its drain closes them (1000, :data:`~speech_recognizer.drain.IDLE_REASON`), their clients
    answer, and each is counted once as ``draining``, not as its client's leaving (before: /vosk counted a success,
    the Speech SDK route nothing)."""
    from speech_recognizer.drain import IDLE_REASON

    app = create_app(make_settings(tmp_path), registry)
    routes = {"vosk": "/vosk?language=ko-KR", "usp/conversation": f"{REST}?language=ko-KR"}
    with ServerThread(app) as srv:
        server = Gone(srv, app)
        with connect(f"{srv.ws}{routes['vosk']}") as vosk, connect(f"{srv.ws}{routes['usp/conversation']}") as usp:
            vosk.send(json.dumps({"config": {"sample_rate": 16000}}))
            usp.send(client_text_frame("speech.context", uuid.uuid4().hex, {"phraseDetection": {"language": "ko-KR"}}))
            time.sleep(0.2)  # taken in
            drain = app.state.drain
            drain.begin()
            asyncio.run_coroutine_threadsafe(drain.close_idle(), srv.server.servers[0].get_loop()).result(timeout=10)
            for ws in (vosk, usp):
                with pytest.raises(ConnectionClosed) as closed:
                    ws.recv(timeout=10)
                assert closed.value.rcvd is not None and (closed.value.rcvd.code, closed.value.rcvd.reason) == (1000, IDLE_REASON)
        samples = scrape_metrics(srv.http)
        for route in routes:
            draining = samples.get(("speech_refused_total", (("reason", "draining"), ("route", route))), 0.0)
            assert (draining, *server.ends(route)) == (1, 0, 0), (route, "counted once, as the drain's", draining, server.ends(route))


#: Seconds within which a client gone while its model loads is let go, in time this process (the server) did not wait
#: for a CPU (:func:`~tests.support.within`). What it is measured against never lets it go while the load lasts (here,
#: while the test keeps the load's gate shut).
LOAD_BOUND = 5.0
class OnDemand:
    """What a test of :data:`ON_DEMAND`'s load does on one route: the client that stays sends its audio and its end, a
    client that leaves sends what makes the server load the model, and what the one that stayed got."""

    def __init__(self, route: str, audio_first: bool = False) -> None:
        self.route = route
        #: The leaving clients' Speech SDK turns begun by their audio, without ``speech.context`` (the model then loads
        #: at that audio); the staying client's has one.
        self.audio_first = audio_first
        self.url = f"/vosk?language={ON_DEMAND}" if route == "vosk" else f"{REST}?language={ON_DEMAND}"

    def send_all(self, ws: ClientConnection, pcm: bytes) -> None:
        if self.route == "vosk":
            for i in range(0, len(pcm), CHUNK):
                ws.send(pcm[i : i + CHUNK])
            ws.send('{"eof" : 1}')
        else:
            ws.send(client_audio_frame(usp_turn(ws, pcm, ON_DEMAND), b""))

    def start(self, ws: ClientConnection, pcm: bytes) -> None:
        """/vosk loads at the connection, the Speech SDK route at the turn's ``speech.context``, or at its first audio
        (its RIFF header) without one."""
        if self.route == "vosk":
            ws.send(pcm[:CHUNK])
        elif self.audio_first:
            ws.send(client_audio_frame(uuid.uuid4().hex, wav_bytes(b"")))
        else:
            ws.send(client_text_frame("speech.context", uuid.uuid4().hex, {"phraseDetection": {"language": ON_DEMAND}}))

    def texts(self, ws: ClientConnection) -> list[str]:
        """Every text the client that stayed got, until its stream's end."""
        texts = []
        if self.route == "vosk":
            with pytest.raises(ConnectionClosed):
                while True:
                    texts.append(json.loads(ws.recv(timeout=120)).get("text"))
            return [t for t in texts if t]
        while (msg := parse_text(ws.recv(timeout=120))).path != "turn.end":
            if msg.path == "speech.phrase":
                texts.append(msg.json().get("DisplayText") or msg.json()["RecognitionStatus"])
        return texts


@pytest.mark.parametrize(("route", "audio_first"), [("vosk", False), ("usp/conversation", False), ("usp/conversation", True)],
                         ids=["vosk", "usp/conversation", "usp/conversation-audio-first"])
def test_a_client_leaving_while_its_model_loads_is_let_go_at_once(
        registry: ModelRegistry, tmp_path: Path, speech_wav: Path, speech_ref: Reference, route: str, audio_first: bool) -> None:
    """Two clients of a locale whose model is loading on demand leave (a close frame, a reset) while a third
    waits: each is seen gone, its connection given back and counted as a client gone, within :data:`LOAD_BOUND` (before:
    only once the load ended, then counted as a success on /vosk, not counted on the Speech SDK route), and the load
    goes on for the third, which gets every result. ``audio_first``: the leaving clients' Speech SDK turns begun by their
    audio, without ``speech.context`` (before: the load awaited in the turn's session, unwatched, the leaving client
    holding its connection, and the decoder it had reserved, until the load ended)."""
    models = tmp_path / "models"
    models.mkdir()
    (models / ON_DEMAND).symlink_to(registry.sources["ko-KR"])
    gated = GatedRegistry(models)
    app = create_app(make_settings(tmp_path, "DecoderMaxCount=1"), gated)
    pcm = read_wav(speech_wav)[0]
    on = OnDemand(route, audio_first)
    with ServerThread(app) as srv:
        server = Gone(srv, app)
        admission = app.state.engine.admission
        within(60, lambda: gated.ready, "ko-KR's load")  # a hang guard, in unstarved time
        with connect(f"{srv.ws}{on.url}", max_size=1 << 20) as staying:
            on.send_all(staying, pcm)  # read ahead while the model loads
            for how in ("close frame", "reset"):
                before = server.ends(route)
                with connect(f"{srv.ws}{on.url}", max_size=1 << 20) as leaving:
                    on.start(leaving, pcm)
                    while admission.connections < 2:
                        time.sleep(0.005)
                    time.sleep(0.1)  # its message taken in: the server waits for the load
                    holding = server.active  # decoders held meanwhile
                    if how == "close frame":
                        threading.Thread(target=leaving.close, daemon=True).start()
                    else:
                        leave(leaving.socket, how)
                    left = time.monotonic()
                    within(LOAD_BOUND, lambda: admission.connections <= 1 and server.ends(route) != before,  # noqa: B023 - called here
                           lambda: (f"a client that left ({how}) while its model loaded let go: {admission.connections} "  # noqa: B023
                                    f"connections are open, {server.ends(route)} counted (ok, gone), {holding} decoder(s) held "  # noqa: B023
                                    "during the load"), every=0.01)
                print(f"{how}: let go {time.monotonic() - left:.3f} s after it left")
                assert server.ends(route) == (before[0], before[1] + 1), "counted as a client gone"
                assert holding == 0, "no decoder is held while the model loads"
            assert gated.get_loaded(ON_DEMAND) is None, "still loading"
            gated.gate.set()
            texts = on.texts(staying)
        if route == "vosk":
            assert texts == speech_ref.texts, "the load went on for the client that stayed"
        else:
            assert texts[0] != "EndOfDictation" and texts[-1] == "EndOfDictation", texts
        print(f"the on-demand load took {gated.load_seconds:.2f} s once let through")
