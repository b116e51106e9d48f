"""``speech-recognizer transcribe --server``: a file is sent from disk a piece at a time (memory does not grow with
its length), sent again whole after a 503, and an answer that is not a recognizer's is one clear line. Against real
HTTP servers on loopback: a small Starlette app standing in for a recognizer (unit: no model), and the recognizer; through
a proxy the environment names (:class:`Proxy`), or straight past it."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import itertools
import json
import os
import tempfile
import threading
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
import soundfile
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from speech_recognizer import contract as c
from speech_recognizer import transcriber
from speech_recognizer.results import Profanity

from ..conftest import make_settings
from ..support import ServerThread, TcpServerThread, free_port
from ..tls import make_ca
from .test_body_memory import peak_of

PATH = c.RECOGNITION_PATH_TEMPLATE.format(mode="conversation")


@dataclass
class Stand:
    """A stand-in for a recognizer's REST route: each request is answered by the next of ``answers`` (the last one
    again when they run out), called with the request; what each request's body was is kept (its length and hash)."""

    answers: list[Callable[[Request], object]]
    bodies: list[tuple[int, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def route(self, request: Request) -> Response:
        with self.lock:
            answer = self.answers[min(len(self.bodies), len(self.answers) - 1)]
            self.bodies.append((0, ""))
        answered = answer(request)
        return await answered if asyncio.iscoroutine(answered) else answered  # type: ignore[return-value]

    async def read(self, request: Request) -> tuple[int, str]:
        """The request's body, a piece at a time: its length and SHA-256, kept as the request's."""
        digest, length = hashlib.sha256(), 0
        async for piece in request.stream():
            digest.update(piece)
            length += len(piece)
        with self.lock:
            self.bodies[-1] = (length, digest.hexdigest())
        return length, digest.hexdigest()


def serve(stand: Stand, tmp_path: Path) -> ServerThread:
    """``stand`` on loopback, served as a recognizer serves (its HTTP protocol: a request answered before its body is
    read is closed with a lingering close, as the recognizer's 503 and 413 are)."""
    app = Starlette(routes=[Route(PATH, stand.route, methods=["POST"])])
    app.state.settings, app.state.metrics = make_settings(tmp_path), None
    return ServerThread(app)


def recognized(stand: Stand) -> Callable[[Request], object]:
    """An answer as a recognizer's (simple format), whose text is the length and hash of the body it read."""

    async def answer(request: Request) -> Response:
        length, digest = await stand.read(request)
        return JSONResponse({"RecognitionStatus": "Success", "Offset": 0, "Duration": 0, "DisplayText": f"{length} {digest}"})

    return answer


def busy(stand: Stand, read: bool) -> Callable[[Request], object]:
    """The recognizer's 503 (every decoder busy), after reading the body or, as the recognizer does, before."""

    async def answer(request: Request) -> Response:
        if read:
            await stand.read(request)
        return JSONResponse({"error": {"code": "ServiceUnavailable", "message": "all 1 decoders are busy; retry in 0 s"}},
                            status_code=503, headers={"Retry-After": "0"})

    return answer


def long_wav(path: Path, seconds: int) -> Path:
    """A 16 kHz mono 16-bit WAV of ``seconds`` of noise (no two MiB alike: a piece sent twice or out of place changes
    its hash), written a second at a time."""
    noise = np.random.default_rng(11)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        for _ in range(seconds):
            w.writeframes(noise.integers(-3000, 3000, 16000, dtype="<i2").tobytes())
    return path


@pytest.mark.unit
def test_a_long_file_is_sent_a_piece_at_a_time_and_whole_again_after_a_503(tmp_path: Path) -> None:
    """A 115 MB WAV (an hour of 16 kHz mono) goes to the server in the memory of a few pieces, not its size: measured as
    the most memory Python held at once (tracemalloc, the stand-in server's reading included) while it was sent three
    times: after a 503 that read it all, after a 503 answered before any of it was read (as the recognizer's busy
    answer comes, then the connection's lingering close: the sending stops at that answer), then answered. Each time
    it was sent whole from its start (its length and hash, as the server read them), and the progress bar went back by
    what was sent and ended at the file's size. Before, the file was read whole first: over 115 MB held. ~3 s."""
    path = long_wav(tmp_path / "hour.wav", 3600)
    size = path.stat().st_size
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    stand = Stand([])
    stand.answers = [busy(stand, read=True), busy(stand, read=False), recognized(stand)]
    steps: list[float] = []
    totals: list[tuple[float | None, str]] = []

    def progress(total: float | None, unit: str) -> Callable[[float], None]:
        totals.append((total, unit))
        return steps.append

    async def send() -> dict[str, str]:
        remote = transcriber.Remote(server.http, None, None, transcriber.DEFAULT_MAX_SECONDS)
        return await remote.transcribe(path, ["txt"], Profanity.MASKED, progress)

    with serve(stand, tmp_path) as server:
        texts, held = peak_of(lambda: asyncio.run(send()))
    assert texts == {"txt": f"{size} {digest}"}, "sent whole, from its start, the third time"
    assert len(stand.bodies) == 3 and stand.bodies[0] == (size, digest), stand.bodies
    assert totals == [(size, "B")] and sum(steps) == size and max(steps) <= transcriber._Upload.PIECE
    backs = [-step for step in steps if step < 0]
    assert backs[:1] == [size] and sum(backs[1:]) < size // 10, f"the bar went back by what was sent before each retry: {backs}"
    assert held < 12 << 20, f"{held / 1e6:.1f} MB held at once to send a {size / 1e6:.0f} MB file"


def spooled_in(folder: Path) -> list[str]:
    """The files this process has open in ``folder`` (a temporary file without a name shows as ``folder/#N (deleted)``)."""
    links = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # the listing's own, closed by now
            links.append(os.readlink(f"/proc/self/fd/{fd}"))
    return [link for link in links if link.startswith(f"{folder}/")]


@pytest.mark.unit
def test_a_long_stream_is_kept_in_a_temporary_file_not_in_memory_and_sent_again_after_a_503(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 115 MB WAV (an hour of 16 kHz mono) through a pipe goes to the server in the memory of a few pieces, not its
    size (tracemalloc's peak, the stand-in server's reading included), sent three times as the file test's is: after a
    503 that read it all, after one answered before, then answered; each time whole from its start (length and hash).
    A pipe cannot be read twice, so it is copied as it is read into a temporary file in $TMPDIR, which has no name
    there and is no longer open once the file is done. Before, the stream was read whole into memory (over 115 MB held).
    ~4 s."""
    path = long_wav(tmp_path / "hour.wav", 3600)
    size = path.stat().st_size
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    spool = tmp_path / "tmp"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    stand = Stand([])
    held_open: list[list[str]] = []

    def spooling(request: Request) -> object:
        held_open.append(spooled_in(spool))
        return busy(stand, read=True)(request)

    stand.answers = [spooling, busy(stand, read=False), recognized(stand)]
    reading, writing = os.pipe()

    def feed() -> None:  # the kernel copies the file into the pipe: no Python memory of the test's own
        with open(path, "rb") as source:
            try:
                while os.sendfile(writing, source.fileno(), None, 1 << 20):
                    pass
            finally:
                os.close(writing)

    async def send() -> dict[str, str]:
        remote = transcriber.Remote(server.http, None, None, transcriber.DEFAULT_MAX_SECONDS)
        return await remote.transcribe(Path(f"/dev/fd/{reading}"), ["txt"], Profanity.MASKED, lambda total, unit: lambda step: None)

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    try:
        with serve(stand, tmp_path) as server:
            texts, held = peak_of(lambda: asyncio.run(send()))
    finally:
        os.close(reading)
        writer.join(10)
    assert texts == {"txt": f"{size} {digest}"} and stand.bodies[0] == (size, digest), stand.bodies
    assert len(held_open) == 1 and len(held_open[0]) == 1 and held_open[0][0].endswith(" (deleted)"), held_open
    assert list(spool.iterdir()) == [] and spooled_in(spool) == [], "the temporary file is gone"
    assert held < 12 << 20, f"{held / 1e6:.1f} MB held at once to send a {size / 1e6:.0f} MB stream"


def refusal(status: int, reason: str, message: str, *headers: str) -> bytes:
    """A recognizer's JSON error as raw HTTP/1.1, closing its connection, as it answers before reading a body."""
    body = json.dumps({"error": {"code": reason.replace(" ", ""), "message": message}}).encode()
    head = [f"HTTP/1.1 {status} {reason}", "Content-Type: application/json", f"Content-Length: {len(body)}", "Connection: close",
            *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class Answering(TcpServerThread):
    """A hand-written hostile HTTP server on a socket (no HTTP library: uvicorn's lingering close would end the
    connection after 2 s, and this one counts all a client sends after an answer). Each connection's request is answered
    by the next of ``answers`` as soon as its head is in, before any of its body is read; then everything the client
    still sends is read and counted (``after``, a connection each), until the client closes the connection."""

    port = 0

    def __init__(self, answers: list[bytes]) -> None:
        self.answers, self.after = answers, list[int]()

    async def relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        index = len(self.after)
        self.after.append(0)
        writer.write(self.answers[min(index, len(self.answers) - 1)])
        await writer.drain()
        with contextlib.suppress(ConnectionError):
            while piece := await reader.read(1 << 20):
                self.after[index] += len(piece)
        writer.close()


@pytest.mark.unit
def test_an_answer_before_the_body_is_sent_stops_the_sending_and_is_what_the_file_gets(tmp_path: Path) -> None:
    """A server that answers as soon as a request's head is in (the recognizer's 503 when every decoder is busy, its 413
    by Content-Length, a refused key's 401, a 400), to a 115 MB WAV (an hour of 16 kHz mono) named three times, one at a
    time: the client stops sending at that answer, so the server gets less than 16 MB after it (what the system's
    buffers held by then), where it got the rest of the file, 115 MB, each time before; a 503 (Retry-After: 0) is still
    asked again, from the file's start, and the answer after it is the file's. Each file is the one line its answer
    says, status 1. On a slow link the old client spent the time of the whole file, and could lose the answer to the
    reset that ends a recognizer's lingering close (2 s). A hand-written hostile server (:class:`Answering`). ~3 s."""
    path = long_wav(tmp_path / "a.wav", 3600)
    for name in ("b.wav", "c.wav"):
        os.link(path, tmp_path / name)
    answers = [refusal(503, "Service Unavailable", "all 1 decoders are busy; retry in 0 s", "Retry-After: 0"),
               refusal(413, "Payload Too Large", "the body is 115200044 bytes; 23044096 at most"),
               refusal(401, "Unauthorized", "the key is missing or wrong"),
               refusal(400, "Bad Request", "format='x': use simple, detailed, srt or vtt")]
    out, err = io.StringIO(), io.StringIO()
    with Answering(answers) as server:
        status = transcriber.main(["--server", server.http, "--jobs", "1", *(str(tmp_path / n) for n in ("a.wav", "b.wav", "c.wav"))],
                                  stdout=out, stderr=err)
    assert status == 1 and out.getvalue() == ""
    assert err.getvalue().splitlines() == [
        f"speech-recognizer transcribe: {tmp_path / 'a.wav'}: HTTP 413: the body is 115200044 bytes; 23044096 at most (the "
        "server's limit; without --server the file is transcribed here, up to --max-seconds)",
        f"speech-recognizer transcribe: {tmp_path / 'b.wav'}: HTTP 401: the key is missing or wrong",
        f"speech-recognizer transcribe: {tmp_path / 'c.wav'}: HTTP 400: format='x': use simple, detailed, srt or vtt"]
    assert len(server.after) == 4 and max(server.after) < 16 << 20, f"bytes sent after each answer: {server.after}"


class Flooding(TcpServerThread):
    """A hand-written hostile HTTP server on a socket (no HTTP library would send these answers): it reads each request
    whole, then answers connection by connection: a 200 whose chunked body of JSON's first bytes and spaces never ends,
    a 200 that declares 10 GB and sends them, then a recognizer's answer. What it wrote of each answer before its client
    left is counted (``written``); an answer stops at :attr:`MOST` (a client that takes it all: the one before)."""

    port = 0
    MOST = 64 << 20

    def __init__(self) -> None:
        self.written = list[int]()

    async def relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")).split(b":")[1])
        await reader.readexactly(length)
        index = len(self.written)
        self.written.append(0)
        if index == 2:
            body = b'{"RecognitionStatus": "Success", "Offset": 0, "Duration": 0, "DisplayText": "done"}'
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
            writer.close()
            return
        spaces = b" " * (1 << 20)
        chunked = index == 0
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     + (b"Transfer-Encoding: chunked\r\n\r\n" if chunked else b"Content-Length: 10000000000\r\n\r\n"))
        first = b'{"RecognitionStatus": "Success", "DisplayText": "'
        with contextlib.suppress(ConnectionError):
            for piece in itertools.chain([first], itertools.repeat(spaces)):
                if self.written[index] >= self.MOST:
                    break
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                await writer.drain()
                self.written[index] += len(piece)
            writer.write(b"0\r\n\r\n" if chunked else b"")
            await writer.drain()
        writer.close()


@pytest.mark.unit
def test_an_answer_larger_than_any_recognizers_fails_its_file_and_the_batch_goes_on(tmp_path: Path) -> None:
    """An answer past the largest a recognizer gives for ``--max-seconds`` of audio (60 s here: 1 MiB and 5 KiB a
    second, 1355776 bytes) fails its file on one line, as it comes (a chunked body that never ends) or by its
    Content-Length (10 GB declared), and the next file is transcribed; status 1. Less than 16 MB of each was written
    before the client left (what the system's buffers took). Before, an answer was read whole whatever its size (httpx's
    timeout bounds time only): the test's server stops at 64 MB, which the old client read, held, and failed to parse
    ("not a recognizer's JSON"). A hand-written hostile server (:class:`Flooding`). ~1 s."""
    names = [tmp_path / name for name in ("a.wav", "b.wav", "c.wav")]
    long_wav(names[0], 1)
    for name in names[1:]:
        os.link(names[0], name)
    out, err = io.StringIO(), io.StringIO()
    with Flooding() as server:
        status = transcriber.main(["--server", server.http, "--jobs", "1", "--max-seconds", "60", *map(str, names)], stdout=out, stderr=err)
    said = f"{server.http}{PATH}: answered 200 with more than 1355776 bytes, more than a recognizer says of 60 s (--max-seconds) of audio: check --server"
    assert err.getvalue().splitlines() == [f"speech-recognizer transcribe: {name}: {said}" for name in names[:2]]
    assert status == 1 and out.getvalue() == f"==> {names[2]} <==\ndone\n"
    assert len(server.written) == 3 and max(server.written) < 16 << 20, f"bytes of each answer written: {server.written}"


class Breaking(TcpServerThread):
    """A hand-written hostile HTTP server on a socket: it reads each request whole, then, connection by connection,
    closes without an answer, answers 100 of the bytes its Content-Length says and closes, or answers what is not HTTP."""

    port = 0
    WAYS = (b"", b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n" + b"x" * 3,
            b"SSH-2.0-OpenSSH_9.6\r\n\r\n")

    def __init__(self) -> None:
        self.served = 0

    async def relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")).split(b":")[1])
        await reader.readexactly(length)
        self.served += 1
        writer.write(self.WAYS[(self.served - 1) % len(self.WAYS)])
        await writer.drain()
        writer.close()


@pytest.mark.unit
def test_a_connection_that_ends_without_a_whole_answer_is_one_line(tmp_path: Path) -> None:
    """A server that closes without an answer, or in the middle of one, or answers what is not HTTP: each file is one
    line saying which, status 1. (h11's own words were "can't handle event type ConnectionClosed when role=SERVER and
    state=SEND_RESPONSE" for the first.) A hand-written hostile server (:class:`Breaking`). ~0.5 s."""
    names = [tmp_path / name for name in ("a.wav", "b.wav", "c.wav")]
    long_wav(names[0], 1)
    for name in names[1:]:
        os.link(names[0], name)
    err = io.StringIO()
    with Breaking() as server:
        status = transcriber.main(["--server", server.http, "--jobs", "1", *map(str, names)], stdout=io.StringIO(), stderr=err)
    url = f"{server.http}{PATH}"
    assert status == 1 and err.getvalue().splitlines() == [
        f"speech-recognizer transcribe: {names[0]}: {url}: the server closed the connection without an answer",
        f"speech-recognizer transcribe: {names[1]}: {url}: the answer broke off (peer closed connection without sending complete "
        "message body (received 3 bytes, expected 100)): check --server",
        f"speech-recognizer transcribe: {names[2]}: {url}: not an HTTP answer (illegal status line: bytearray(b'SSH-2.0-OpenSSH_9.6')): "
        "check --server"], err.getvalue()


@pytest.mark.unit
def test_over_https_the_servers_certificate_is_checked_against_the_systems_cas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--server https://...``: the server's certificate is checked against the system's CAs (``$SSL_CERT_FILE`` here,
    a private CA's): trusted, the file is sent and answered; not trusted, one line saying why, status 1. ~1 s."""
    ca = make_ca(tmp_path / "ca")
    wav = long_wav(tmp_path / "a.wav", 1)
    stand = Stand([])
    stand.answers = [recognized(stand)]
    app = Starlette(routes=[Route(PATH, stand.route, methods=["POST"])])
    app.state.settings, app.state.metrics = make_settings(tmp_path), None
    with ServerThread(app, ssl_certfile=str(ca.cert_file), ssl_keyfile=str(ca.key_file)) as server:
        url = f"https://127.0.0.1:{server.port}"
        err = io.StringIO()
        assert transcriber.main(["--server", url, str(wav)], stdout=io.StringIO(), stderr=err) == 1
        assert "cannot connect: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed" in err.getvalue(), err.getvalue()
        monkeypatch.setenv("SSL_CERT_FILE", str(ca.ca_file))
        out = io.StringIO()
        assert transcriber.main(["--server", url, str(wav)], stdout=out, stderr=err) == 0
    assert out.getvalue() == f"{wav.stat().st_size} {hashlib.sha256(wav.read_bytes()).hexdigest()}\n"


#: A page a web server answers with, where a recognizer was meant.
PAGE = "<!DOCTYPE html>\n<html><head><title>Welcome to nginx!</title></head><body>It works.</body></html>\n"


@pytest.mark.unit
def test_an_answer_that_is_not_a_recognizer_s_is_one_line_naming_the_url_and_what_came(tmp_path: Path) -> None:
    """``--server`` at something that is not a recognizer: a web page (200 text/html), JSON that is not a recognizer's
    answer (200, no RecognitionStatus), a recognizer-like answer without the phrases subtitles need, phrases that are
    not a recognizer's, a proxy's error page (502 text/html): each file is one line naming the URL, the status, the
    content type and the first bytes (on one line), "check --server"; status 1. Before: a bare "JSONDecodeError: Expecting
    value: line 1 column 1 (char 0)" (the page, the empty body), "KeyError: 'NBest'" (the phrases), "HTTP 502: " and the
    page over three lines (the proxy's), and the JSON was written as the file's transcript, status 0."""
    wav = long_wav(tmp_path / "a.wav", 1)

    def page(status: int) -> Callable[[Request], object]:
        return lambda request: Response(PAGE, status_code=status, media_type="text/html")

    json_said = "not a recognizer's JSON: check --server"
    cases: dict[str, tuple[Callable[[Request], object], list[str], str, str]] = {
        "page": (page(200), ["txt"], "answered 200 text/html; charset=utf-8 ('<!DOCTYPE html> <html><head><title>Welcome", json_said),
        "json": (lambda request: JSONResponse({"status": "ok", "version": 3}), ["json"],
                 """answered 200 application/json ('{"status":"ok","version":3}')""", json_said),
        "empty": (lambda request: Response(b"", status_code=200), ["txt"], "answered 200 no Content-Type (an empty body)", json_said),
        "phrases": (lambda request: JSONResponse({"RecognitionStatus": "Success", "DisplayText": "x", "Phrases": [{"RecognitionStatus": "Success"}]}),
                    ["srt"], """answered 200 application/json ('{"RecognitionStatus":"Success","DisplayText":"x",""", json_said),
        "proxy": (page(502), ["txt"], "answered 502 text/html; charset=utf-8 ('<!DOCTYPE html>", "not a recognizer's error: check --server"),
    }
    for name, (answer, formats, said, ending) in cases.items():
        with serve(Stand([answer]), tmp_path) as server:
            out, err = io.StringIO(), io.StringIO()
            status = transcriber.main(["--server", server.http, "--format", ",".join(formats), str(wav)], stdout=out, stderr=err)
        lines = err.getvalue().splitlines()
        assert status == 1 and out.getvalue() == "", name
        assert len(lines) == 1 and lines[0].startswith(f"speech-recognizer transcribe: {wav}: {server.http}{PATH}: {said}"), f"{name}: {lines}"
        assert lines[0].endswith(f"), {ending}") and len(lines[0]) < len(f"{wav}{server.http}{PATH}") + 200, f"{name}: {lines}"


def flac(path: Path, seconds: float, rate: int, channels: int, noise: float = 0.0) -> Path:
    """A 24-bit FLAC of a 440 Hz tone, with ``noise`` (its standard deviation) of its own in each channel."""
    t = np.arange(int(seconds * rate)) / rate
    samples = 0.3 * np.sin(2 * np.pi * 440 * t)[:, None] + noise * np.random.default_rng(3).standard_normal((len(t), channels))
    soundfile.write(path, samples.clip(-1, 1).astype("float32"), rate, subtype="PCM_24", format="FLAC")
    return path


def test_through_the_recognizer_a_pipe_and_a_file_and_what_its_limit_refuses(server, speech_wav: Path, tmp_path: Path) -> None:
    """Through the recognizer's REST route (MaxAudioSeconds 60): a file sent a piece at a time is transcribed as a pipe
    is (copied into a temporary file, within its bound, and sent from that); a FLAC within ``--max-seconds`` but over the server's limit is its 413
    saying so, whether the server decodes it first (70 s of a tone: "the audio is 70.0 s long") or refuses it by its
    Content-Length before reading it (30 s at 192 kHz, 2 channels of noise: 35 MB, sent while the server drops it).
    ~3 s, no model load."""
    over = flac(tmp_path / "over.flac", 70, 16000, 1)
    large = flac(tmp_path / "large.flac", 30, 192000, 2, noise=0.3)
    assert large.stat().st_size > 60 * 384000 + 4096, "over the route's bound for a body of no declared format"
    reading, writing = os.pipe()
    writer = threading.Thread(target=_feed, args=(writing, speech_wav.read_bytes()), daemon=True)
    writer.start()
    try:
        out, err = io.StringIO(), io.StringIO()
        status = transcriber.main(["--server", server.http, "--format", "json", "--jobs", "2", str(speech_wav), f"/dev/fd/{reading}", str(over),
                                   str(large)], stdout=out, stderr=err)
    finally:
        os.close(reading)
        writer.join(10)
    assert status == 1
    answers = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [a["File"] for a in answers] == [str(speech_wav), f"/dev/fd/{reading}"]
    assert answers[0]["DisplayText"] and answers[0]["NBest"] == answers[1]["NBest"]
    lines = sorted(err.getvalue().splitlines())
    hint = "(the server's limit; without --server the file is transcribed here, up to --max-seconds)"
    assert lines == [f"speech-recognizer transcribe: {large}: HTTP 413: the body is {large.stat().st_size} bytes; 23044096 at most: 60 s "
                     f"(MaxAudioSeconds) of the widest audio taken (48 kHz, 2 channels, 32 bits) {hint}",
                     f"speech-recognizer transcribe: {over}: HTTP 413: the audio is 70.0 s long; this route takes at most 60 s "
                     f"(MaxAudioSeconds); use the WebSocket route for longer audio {hint}"], lines


def _feed(pipe: int, data: bytes) -> None:
    """``data`` written into the pipe ``pipe``, which is then closed."""
    with open(pipe, "wb") as w:
        w.write(data)



def basic(pair: str) -> str:
    return "Basic " + base64.b64encode(pair.encode()).decode()


class Proxy(TcpServerThread):
    """A forward HTTP proxy on loopback, hand-written on asyncio's streams in a few dozen lines (no proxy package is
    locked in requirements/test.txt, and this one is seen whole): a CONNECT opens a tunnel to the HOST:PORT it names (502
    when that cannot be reached), any other request (absolute-form: it names the server's URL) goes on to that server in
    origin-form without its ``Proxy-*`` headers; then both ways are copied as they come until either side closes, so an
    answer that comes before a body's end reaches the client at once. Each request's line and headers are kept (``seen``).
    With ``credentials`` (``user:password``) a request without them in ``Proxy-Authorization`` is answered 407; with
    ``refuse`` every CONNECT is answered that (a 403 of a proxy that allows no such tunnel)."""

    port = 0

    def __init__(self, credentials: str | None = None, refuse: bytes | None = None) -> None:
        self.credentials, self.refuse = credentials, refuse
        self.seen: list[tuple[str, dict[str, str]]] = []

    async def relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line, *fields = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")[:-2]
        headers = {name.strip().lower(): value.strip() for name, _, value in (field.partition(":") for field in fields)}
        self.seen.append((line, headers))
        method, target, _ = line.split(" ")
        where = urlsplit(f"//{target}" if method == "CONNECT" else target)
        if self.credentials and headers.get("proxy-authorization") != basic(self.credentials):
            answer: bytes | None = b'HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="test"\r\n'
        else:
            answer = self.refuse if method == "CONNECT" else None
        if answer is None:
            try:
                upstream = await asyncio.open_connection(where.hostname, where.port)
            except OSError:
                answer = b"HTTP/1.1 502 Bad Gateway\r\n"
        if answer is not None:
            writer.write(answer + b"Content-Length: 0\r\nConnection: close\r\n\r\n")
            await copy(reader, None)  # what the client still sends, until it closes: a close with it unread could reset the answer
        else:
            if method == "CONNECT":
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                kept = [field for field in fields if not field.lower().startswith("proxy-")]
                origin = f"{where.path}?{where.query}" if where.query else where.path
                upstream[1].write("".join(f"{part}\r\n" for part in [f"{method} {origin} HTTP/1.1", *kept, ""]).encode("latin-1"))
            await asyncio.gather(copy(reader, upstream[1]), copy(upstream[0], writer))
        writer.close()


async def copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter | None) -> None:
    """What ``source`` says into ``sink`` (None: dropped) as it comes, until it ends or either side breaks; ``sink`` closed."""
    with contextlib.suppress(ConnectionError):
        while piece := await source.read(1 << 16):
            if sink is not None:
                sink.write(piece)
                await sink.drain()
    if sink is not None:
        sink.close()


@pytest.fixture
def environ(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """``monkeypatch``, with no proxy variable set (as either case): a test sets those it means."""
    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_through_an_http_proxy_with_its_credentials_to_the_recognizer(server, speech_wav: Path, environ: pytest.MonkeyPatch) -> None:
    """``http_proxy`` (upper or lower case) with a user and password (percent-encoded in its URL): the request goes to the
    proxy naming the server's URL (absolute-form), with ``Proxy-Authorization`` from the proxy's URL (the proxy answers 407
    without it), and the server's own user and password from ``--server``'s URL as ``Authorization``; the transcript is
    the one the recognizer gives straight. ``https_proxy`` is not for an http:// server. Before (the h11 client of
    30450ad), the proxy variables were not used: the proxy saw nothing. ~2 s."""
    straight = io.StringIO()
    assert transcriber.main(["--server", server.http, str(speech_wav)], stdout=straight, stderr=io.StringIO()) == 0
    with Proxy(credentials="user:p@ss") as proxy:
        environ.setenv("HTTP_PROXY", f"http://user:p%40ss@127.0.0.1:{proxy.port}")
        environ.setenv("https_proxy", "http://127.0.0.1:9")
        out, err = io.StringIO(), io.StringIO()
        status = transcriber.main(["--server", server.http.replace("://", "://me:s%3Acret@"), str(speech_wav)], stdout=out, stderr=err)
    assert status == 0 and err.getvalue() == "" and out.getvalue() == straight.getvalue() != "\n", (out.getvalue(), err.getvalue())
    (line, headers), = proxy.seen
    assert line.startswith(f"POST {server.http}{PATH}?") and line.endswith(" HTTP/1.1"), line
    assert headers["host"] == server.http.removeprefix("http://")
    assert headers["proxy-authorization"] == basic("user:p@ss") and headers["authorization"] == basic("me:s:cret")


@pytest.mark.unit
def test_through_a_proxys_tunnel_to_an_https_server_and_a_503_then_sends_a_pipe_again(tmp_path: Path, environ: pytest.MonkeyPatch) -> None:
    """``https_proxy``: the proxy is asked for a tunnel to the server (CONNECT 127.0.0.1:PORT), and TLS is made in it
    with the server, whose certificate (a private CA's, for 127.0.0.1) is checked for the server's name: the proxy is
    named ``localhost``, which the certificate does not hold. A pipe answered 503 before its body is read (as a busy
    recognizer answers) is sent again whole from its temporary copy, through a new tunnel. Before, the proxy saw
    nothing. ~1 s."""
    ca = make_ca(tmp_path / "ca")
    environ.setenv("SSL_CERT_FILE", str(ca.ca_file))
    wav = long_wav(tmp_path / "a.wav", 1)
    stand = Stand([])
    stand.answers = [busy(stand, read=False), recognized(stand)]
    app = Starlette(routes=[Route(PATH, stand.route, methods=["POST"])])
    app.state.settings, app.state.metrics = make_settings(tmp_path), None
    reading, writing = os.pipe()
    writer = threading.Thread(target=_feed, args=(writing, wav.read_bytes()), daemon=True)
    writer.start()
    try:
        with ServerThread(app, ssl_certfile=str(ca.cert_file), ssl_keyfile=str(ca.key_file)) as server, Proxy() as proxy:
            environ.setenv("https_proxy", f"http://localhost:{proxy.port}")
            environ.setenv("http_proxy", "http://127.0.0.1:9")
            out, err = io.StringIO(), io.StringIO()
            status = transcriber.main(["--server", f"https://127.0.0.1:{server.port}", f"/dev/fd/{reading}"], stdout=out, stderr=err)
    finally:
        os.close(reading)
        writer.join(10)
    assert status == 0 and out.getvalue() == f"{wav.stat().st_size} {hashlib.sha256(wav.read_bytes()).hexdigest()}\n", err.getvalue()
    assert [line for line, _ in proxy.seen] == [f"CONNECT 127.0.0.1:{server.port} HTTP/1.1"] * 2
    assert len(stand.bodies) == 2


@pytest.mark.unit
def test_no_proxy_names_the_servers_that_are_reached_straight(tmp_path: Path, environ: pytest.MonkeyPatch) -> None:
    """``no_proxy`` as the standard library reads it: ``*``, a host in a list, HOST:PORT, a domain (``.localhost``
    names ``localhost``; ``calhost`` does not: a domain is matched at a dot); a server it names is reached straight,
    the proxy sees nothing of it; one it does not name, loopback too (as with httpx), goes through the proxy. Before,
    nothing went through the proxy. ~1 s."""
    wav = long_wav(tmp_path / "a.wav", 1)
    stand = Stand([])
    stand.answers = [recognized(stand)]
    with serve(stand, tmp_path) as server, Proxy() as proxy:
        environ.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
        cases = [(None, server.http, True), ("*", server.http, False), ("example.com, 127.0.0.1", server.http, False),
                 (f"127.0.0.1:{server.port}", server.http, False), ("127.0.0.1:1", server.http, True),
                 ("example.com,.localhost", f"http://localhost:{server.port}", False), ("calhost", f"http://localhost:{server.port}", True)]
        for no_proxy, url, proxied in cases:
            environ.delenv("NO_PROXY", raising=False)
            if no_proxy is not None:
                environ.setenv("NO_PROXY", no_proxy)
            before, out = len(proxy.seen), io.StringIO()
            assert transcriber.main(["--server", url, str(wav)], stdout=out, stderr=io.StringIO()) == 0 and out.getvalue() != "\n"
            assert len(proxy.seen) - before == proxied, (no_proxy, url, proxy.seen[before:])


@pytest.mark.unit
def test_a_proxy_that_refuses_or_cannot_be_reached_is_one_line_a_file(tmp_path: Path, environ: pytest.MonkeyPatch) -> None:
    """A proxy that answers 407 (no credentials, then wrong ones), 403 (a proxy that allows no such tunnel) or 502 (it
    cannot reach the server), to a CONNECT or to a request it was to send on, or that cannot be reached itself: each
    file is one line saying so (the proxy's URL without its password), the batch goes on, status 1. A proxy that is not
    http:// (socks) is one line, status 2, nothing sent. Before, the proxy variables were not used. ~1 s."""
    names = [tmp_path / name for name in ("a.wav", "b.wav")]
    long_wav(names[0], 1)
    os.link(names[0], names[1])
    closed = free_port()
    with serve(Stand([]), tmp_path) as server, Proxy(credentials="user:secret") as guarded, \
            Proxy(refuse=b"HTTP/1.1 403 Forbidden\r\n") as forbidding:
        https, http = f"https://127.0.0.1:{server.port}", server.http
        give = "(give its user and password in its URL: http://USER:PASSWORD@HOST:PORT)"
        cases = [("https_proxy", f"http://127.0.0.1:{guarded.port}", https, f"the proxy refused: 407 Proxy Authentication Required {give}"),
                 ("HTTP_PROXY", f"127.0.0.1:{guarded.port}", http, f"the proxy refused: 407 Proxy Authentication Required {give}"),
                 ("HTTPS_PROXY", f"http://user:wrong@127.0.0.1:{guarded.port}", https,
                  "the proxy refused: 407 Proxy Authentication Required (the user and password in its URL were refused)"),
                 ("ALL_PROXY", f"http://127.0.0.1:{forbidding.port}", https, "the proxy refused: 403 Forbidden"),
                 ("https_proxy", f"http://user:secret@127.0.0.1:{guarded.port}", f"https://127.0.0.1:{closed}", "the proxy refused: 502 Bad Gateway"),
                 ("https_proxy", f"http://127.0.0.1:{closed}", https, "cannot connect to the proxy: Connection refused")]
        for variable, proxy, url, said in cases:
            environ.setenv(variable, proxy)
            err = io.StringIO()
            status = transcriber.main(["--server", url, "--jobs", "1", *map(str, names)], stdout=io.StringIO(), stderr=err)
            environ.delenv(variable)
            shown = f"http://127.0.0.1:{urlsplit(proxy if '//' in proxy else f'//{proxy}').port}"
            assert status == 1 and err.getvalue().splitlines() == [
                f"speech-recognizer transcribe: {name}: {url}{PATH} (through the proxy {shown}): {said}" for name in names], err.getvalue()
        environ.setenv("all_proxy", "socks5://user:secret@127.0.0.1:1080")
        err = io.StringIO()
        assert transcriber.main(["--server", https, str(names[0])], stdout=io.StringIO(), stderr=err) == 2
    assert err.getvalue() == ("speech-recognizer transcribe: all_proxy (or ALL_PROXY) is 'socks5://127.0.0.1:1080': give an HTTP proxy as "
                              "http://[USER:PASSWORD@]HOST[:PORT] (socks and https:// proxies are not supported), or name 127.0.0.1 in "
                              "no_proxy\n"), err.getvalue()
    assert len(guarded.seen) == 8 and len(forbidding.seen) == 2
