"""The hostile suite (issue 16): each attack of the issue against a server with a pod's default settings.

For each attack: the answer the server gave (and whether it is the clear answer expected), the
time to answer, the server's peak RSS increase over the attack (against the bytes the attack
sent: the target is at most 100 MB above them), ``/ready``'s latency while it runs (polled every
50 ms; target under 200 ms), and for the idle streams how long until their decoders are free
again. After the whole suite the server's log is searched for tracebacks (target: none).

An attack is one entry of :data:`ATTACKS`: a name, the issue's item, the answer expected, and a
function that runs it against the server (``(server) -> Outcome``); attacks that need other
server settings say so (``args``) and run on a server of their own.
"""

from __future__ import annotations

import asyncio
import http.server
import io
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import soundfile
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as connect_sync

from harness.hostile_inputs import (
    big_header_head,
    exchange,
    flac_bomb,
    mp3_bomb,
    ogg_opus_bomb,
    post_head,
    random_frame_bodies,
    raw_request,
    trickle,
    wav_header,
    zip_bomb,
)
from harness.memory import PeakRss
from harness.usp import client_audio_frame, client_text_frame
from speech_recognizer.usp.frames import parse_text

from .chunked_bodies import chunked
from .common import ROOT, Audio, Server, cpu_seconds, percentile, server

REST = "/speech/recognition/conversation/cognitiveservices/v1"
USP = REST
KEY = "hostile-bench-key-8d1f"
#: Targets of the issue.
RSS_ALLOWANCE_MB = 100
READY_TARGET_S = 0.2
#: No attack may take longer than this (it is then reported as unanswered).
ATTACK_DEADLINE_S = 120.0
#: The head and body deadlines of the server the HTTP-limit attacks (items 3 and 4) run on: short, so that
#: the suite stays quick (a pod's defaults are 10 s; the limits work the same at any value).
HTTP_DEADLINE_S = 2
HTTP_LIMITS = (f"Http:HeaderTimeoutSeconds={HTTP_DEADLINE_S}", f"Http:BodyTimeoutSeconds={HTTP_DEADLINE_S}")


@dataclass
class Outcome:
    """What one attack got: the answer, whether it is the clear answer expected, and what it sent."""

    answer: str
    clear: bool
    seconds: float
    sent_bytes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Attack:
    name: str
    item: int
    expected: str
    run: Callable[[Server, Audio], Outcome]
    #: Settings of the server it needs, when not a pod's defaults.
    args: tuple[str, ...] = ()


# ---- helpers --------------------------------------------------------------------------------------------


def _post(srv: Server, body: bytes, content_type: str = "audio/wav", query: str = "language=ko-KR", **headers: str) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    r = httpx.post(f"{srv.http}{REST}?{query}", content=body, headers={"Content-Type": content_type, **headers}, timeout=ATTACK_DEADLINE_S)
    return r, time.monotonic() - started


def _message(r: httpx.Response) -> str:
    try:
        return str(r.json().get("error", {}).get("message") or r.json().get("RecognitionStatus"))[:90]
    except ValueError:
        return r.text[:90]


def _rest(expect: int, words: str = "") -> Callable[[httpx.Response, float, int], Outcome]:
    def judge(r: httpx.Response, took: float, sent: int) -> Outcome:
        msg = _message(r)
        return Outcome(f"{r.status_code} {msg}", r.status_code == expect and words in msg, took, sent)

    return judge


def _wav(pcm: bytes, rate: int, subtype: str) -> bytes:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768.0
    buf = io.BytesIO()
    soundfile.write(buf, samples, rate, format="WAV", subtype=subtype)
    return buf.getvalue()


def _sessions(srv: Server) -> int:
    return int(httpx.get(f"{srv.http}/sessions", timeout=10).json()["sessions"])


async def _close_of(ws: Any, deadline: float) -> tuple[int | None, str]:
    try:
        async with asyncio.timeout(deadline):
            while True:
                await ws.recv()
    except ConnectionClosed as exc:
        return (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (None, "")
    except TimeoutError:
        return None, "no close"


# ---- the attacks ----------------------------------------------------------------------------------------


def flac(srv: Server, audio: Audio) -> Outcome:
    body = flac_bomb()
    r, took = _post(srv, body, "audio/flac")
    return _rest(413, "MaxAudioSeconds")(r, took, len(body))


def ogg(srv: Server, audio: Audio) -> Outcome:
    body = ogg_opus_bomb()
    r, took = _post(srv, body, "audio/ogg")
    return _rest(413, "MaxAudioSeconds")(r, took, len(body))


def mp3(srv: Server, audio: Audio) -> Outcome:
    """3.6 MB of silent 8 kbit/s MP3 frames, an hour, with no Xing header to count them: nothing but its frames tells
    its length."""
    body = mp3_bomb(xing=False)
    r, took = _post(srv, body, "audio/mpeg")
    return _rest(413, "MaxAudioSeconds")(r, took, len(body))


#: A line of the server's own log: its loggers' (the time first) and the access log's (``INFO:     127.0.0.1:5000 -
#: "POST …``); any other is what a library wrote to stderr.
_LOGGED = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d|[A-Z]+: +[\d.:\[\]a-f]+ - \"")


def _mp3_of(audio: Audio, seconds: float = 60.0) -> bytes:
    """``audio`` repeated to ``seconds``, as LAME's MP3 (libsndfile's)."""
    pcm = np.frombuffer(audio.pcm * int(seconds // audio.seconds + 1), dtype="<i2")[: int(seconds * audio.rate) - audio.rate]
    buf = io.BytesIO()
    soundfile.write(buf, pcm, audio.rate, format="MP3")
    return buf.getvalue()


def _random_middle(mp3: bytes, rng: np.random.Generator) -> bytes:
    quarter = len(mp3) // 4
    return mp3[:quarter] + rng.bytes(2 * quarter) + mp3[3 * quarter :]


def _damaged_mp3(damage: Callable[[bytes, np.random.Generator], bytes]) -> Callable[[Server, Audio], Outcome]:
    def attack(srv: Server, audio: Audio) -> Outcome:
        body = damage(_mp3_of(audio), np.random.default_rng(16))
        logged = srv.log.stat().st_size
        r, took = _post(srv, body, "audio/mpeg")
        time.sleep(0.5)  # what the decoder wrote, and the request's log line, are in the log
        with srv.log.open("rb") as log:
            log.seek(logged)
            lines = log.read().decode(errors="replace").splitlines()
        foreign = [line for line in lines if not _LOGGED.match(line)]
        return Outcome(f"{r.status_code} {_message(r)[:60]}; {len(foreign)} lines on stderr {foreign[:1]!s:.60}",
                       r.status_code in (200, 400) and not foreign, took, len(body), {"stderr_lines": len(foreign)})

    return attack


def wav_claiming_4gb(srv: Server, audio: Audio) -> Outcome:
    body = wav_header() + audio.pcm * 5  # the header says 4 GB; 70 s follow
    r, took = _post(srv, body)
    return _rest(413, "MaxAudioSeconds")(r, took, len(body))


def idle_streams(srv: Server, audio: Audio) -> Outcome:
    """Six /vosk clients (a default pod's decoders) send 2 bytes and then nothing."""

    async def run() -> Outcome:
        started = time.monotonic()
        sockets = [await connect(f"{srv.ws}/vosk?language=ko-KR") for _ in range(6)]
        for ws in sockets:
            await ws.send(b"\0\0")
        held = _sessions(srv)
        refused = await _refused_and_gone(srv, audio)
        closes = await asyncio.gather(*(_close_of(ws, ATTACK_DEADLINE_S) for ws in sockets))
        took = time.monotonic() - started
        while _sessions(srv) and time.monotonic() - started < ATTACK_DEADLINE_S:
            await asyncio.sleep(0.1)
        freed = time.monotonic() - started
        codes = sorted({str(c) for c, _ in closes})
        clear = all(c == 1008 and "AudioIdleSeconds" in r for c, r in closes)
        return Outcome(f"{held} decoders held ({refused} refused meanwhile); closed {','.join(codes)} {closes[0][1][:50]}", clear,
                       took, 12, {"decoders_free_after_s": round(freed, 1)})

    return asyncio.run(run())


async def _refused_and_gone(srv: Server, audio: Audio) -> int:
    """While every decoder is held: 5 REST uploads and 5 /vosk streams refused as busy, whose clients leave
    without reading the answer (item 10: each was a 70-line ERROR traceback)."""
    body = audio.pcm[:64000]
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", srv.port)) as sock:
            sock.sendall(post_head(f"{REST}?language=ko-KR", content_length=len(body), content_type="audio/l16; rate=16000") + body)
        async with connect(f"{srv.ws}/vosk?language=ko-KR") as ws:
            await ws.send(b"\0" * 3200)
    await asyncio.sleep(0.5)
    return 10


def idle_turn(srv: Server, audio: Audio) -> Outcome:
    """A Speech SDK turn with 2 bytes of audio, then nothing."""

    async def run() -> Outcome:
        started = time.monotonic()
        async with connect(f"{srv.ws}{USP}?language=ko-KR") as ws:
            rid = uuid.uuid4().hex
            await ws.send(client_text_frame("speech.context", rid, {"phraseDetection": {"language": "ko-KR"}}))
            await ws.send(client_audio_frame(rid, b"\0\0"))
            code, reason = await _close_of(ws, ATTACK_DEADLINE_S)
        took = time.monotonic() - started
        while _sessions(srv) and time.monotonic() - started < ATTACK_DEADLINE_S:
            await asyncio.sleep(0.1)
        return Outcome(f"close {code} {reason[:70]}", code == 1007 and "AudioIdleSeconds" in reason, took, 2,
                       {"decoders_free_after_s": round(time.monotonic() - started, 1)})

    return asyncio.run(run())


def float_wav(srv: Server, audio: Audio) -> Outcome:
    """32-bit float WAV of the bench audio: the same words as its 16-bit PCM original (it was heard as silence)."""
    want, _ = _post(srv, _wav(audio.pcm, audio.rate, "PCM_16"))
    body = _wav(audio.pcm, audio.rate, "FLOAT")
    r, took = _post(srv, body)
    same = r.status_code == 200 and r.json().get("DisplayText") == want.json().get("DisplayText") and r.json()["RecognitionStatus"] == "Success"
    return Outcome(f"{r.status_code} {r.json().get('RecognitionStatus')}, {'same' if same else 'other'} words as 16-bit", same, took, len(body))


def usage_logs(srv: Server, audio: Audio) -> Outcome:
    """A million usage records, then three concurrent GETs of /records/usage-logs/."""
    folder = srv.workdir / "output" / "usage"
    folder.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"time": "2026-01-15T10:00:00+00:00", "route": "vosk", "locale": "ko-KR", "audioSeconds": 1.5, "phrases": 1}) + "\n"
    with open(folder / "2026-01.jsonl", "a") as out:
        for _ in range(100):
            out.write(line * 10_000)

    async def run() -> tuple[list[httpx.Response], float]:
        started = time.monotonic()
        async with httpx.AsyncClient(timeout=ATTACK_DEADLINE_S) as client:
            got = await asyncio.gather(*(client.get(f"{srv.http}/records/usage-logs/") for _ in range(3)))
        return list(got), time.monotonic() - started

    got, took = asyncio.run(run())
    counts = [next(m["quantity"] for m in r.json()["meters"] if m["name"] == "speech-to-text.requests") for r in got]
    return Outcome(f"{got[0].status_code}; requests {counts[0]}", all(c >= 1_000_000 for c in counts), took, 3 * 200)


def many_turns(srv: Server, audio: Audio) -> Outcome:
    """One Speech SDK connection, 10,000 turns, each with an 8 KB request id (the issue's 60,000 held +465 MB)."""

    async def run() -> Outcome:
        started = time.monotonic()
        ended = 0
        async with connect(f"{srv.ws}{USP}?language=ko-KR", max_size=1 << 20) as ws:
            for n in range(10_000):
                rid = f"{n:08d}" + "x" * 8000
                await ws.send(client_text_frame("speech.context", rid, {"phraseDetection": {"language": "ko-KR"}}))
                await ws.send(client_audio_frame(rid, b""))
                while parse_text(await ws.recv()).path != "turn.end":
                    pass
                ended += 1
        return Outcome(f"{ended} turns ended", ended == 10_000, time.monotonic() - started, 10_000 * 8200)

    return asyncio.run(run())


def key_in_query(srv: Server, audio: Audio) -> Outcome:
    """The server's key in a REST URL (logged by proxies): refused, and never written to the server's log."""
    r, took = _post(srv, b"RIFF", query=f"language=ko-KR&subscription-key={KEY}")
    time.sleep(0.5)  # the access log line is written after the answer
    logged = KEY in srv.log.read_text()
    clear = r.status_code == 403 and "header" in r.json()["error"]["message"] and not logged
    return Outcome(f"{r.status_code} {_message(r)}; key in the log: {'yes' if logged else 'no'}", clear, took, 4)


def bad_values(srv: Server, audio: Audio) -> Outcome:
    """Item 9's values on every route: REST l16 rate=0, a vosk config of 1e999, a USP context that is a list
    where an object goes, a continuation offset of 10^400, a language of 180 Korean characters."""
    started = time.monotonic()
    answers = []
    r, _ = _post(srv, b"\0" * 3200, "audio/l16; rate=0")
    answers.append((r.status_code, r.status_code == 400))

    async def ws_case(path: str, frames: list[str | bytes]) -> tuple[int | None, str]:
        async with connect(srv.ws + path) as ws:
            for f in frames:
                await ws.send(f)
            return await _close_of(ws, 30)

    rid = uuid.uuid4().hex
    cases = [
        ("/vosk?language=ko-KR", ['{"config": {"sample_rate": 1e999}}', b"\0" * 3200]),
        (f"{USP}?language=ko-KR", [client_text_frame("speech.config", None, {"context": [1]}), client_audio_frame(rid, b"\0" * 3200)]),
        (f"{USP}?language=ko-KR", [client_text_frame("speech.context", rid, {"continuation": {"audio": {"streams": {"1": {"offset": "1" + "0" * 400}}}}})]),
        (f"{USP}?language=ko-KR", [client_text_frame("speech.context", rid, {"phraseDetection": {"language": "한국어" * 60}})]),
    ]
    for path, frames in cases:
        code, reason = asyncio.run(ws_case(path, frames))
        answers.append((code, code == 1007 and bool(reason) and len(reason.encode()) <= 123))
    return Outcome("answers " + ", ".join(str(c) for c, _ in answers), all(ok for _, ok in answers), time.monotonic() - started, 5000)


def disconnects(srv: Server, audio: Audio) -> Outcome:
    """Clients that leave mid-upload (20 of them): one debug line each, no traceback (counted over the suite)."""
    started = time.monotonic()
    body = _wav(audio.pcm, audio.rate, "PCM_16")
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", srv.port)) as sock:
            sock.sendall(post_head(f"{REST}?language=ko-KR", content_length=len(body)) + body[: len(body) // 2])
    time.sleep(0.5)
    return Outcome("20 left mid-upload", httpx.get(f"{srv.http}/ready", timeout=10).status_code == 200, time.monotonic() - started,
                   20 * len(body) // 2)


def model_zip_bomb(srv: Server, audio: Audio) -> Outcome:
    """DownloadModel=True from a URL serving a 3 MB zip that unpacks to 3 GB, and from file:///etc/passwd."""
    bomb = zip_bomb(3_000_000_000)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(bomb)))
            self.end_headers()
            self.wfile.write(bomb)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    models = Path(tempfile.mkdtemp(prefix="bench-zip-"))
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'recognizer'}:{os.environ.get('PYTHONPATH', '')}"}
    started = time.monotonic()
    try:
        answers = []
        for url in (f"http://127.0.0.1:{httpd.server_address[1]}/model.zip", "file:///etc/passwd"):
            proc = subprocess.run([sys.executable, "-m", "speech_recognizer", "DownloadModel=True", "Locale=ko-KR", f"ModelUrl={url}",
                                   f"Mounts:Models={models}"], capture_output=True, text=True, timeout=ATTACK_DEADLINE_S, env=env)
            answers.append((proc.returncode, proc.stderr.strip().splitlines()[-1:] or [""]))
    finally:
        httpd.shutdown()
    written = sum(f.stat().st_size for f in models.rglob("*") if f.is_file())
    clear = all(code == 1 for code, _ in answers) and written < 10_000_000
    answer = f"exit {answers[0][0]} (...{answers[0][1][0][-60:]}); file: exit {answers[1][0]} (...{answers[1][1][0][-40:]}); {written} bytes written"
    return Outcome(answer, clear, time.monotonic() - started, len(bomb), {"note": "a process of its own: RSS is the server's, unchanged"})


def reset_and_counting(srv: Server, audio: Audio) -> Outcome:
    """vosk-server's {"reset": 1} answered (it was refused with 1007), and a Speech SDK turn counted in speech_requests_total."""

    async def run() -> Outcome:
        started = time.monotonic()
        async with connect(f"{srv.ws}/vosk?language=ko-KR") as ws:
            for chunk in audio.chunks()[:28]:  # into the first sentence
                await ws.send(chunk)
                await ws.recv()
            await ws.send('{"reset" : 1}')
            after_reset = json.loads(await ws.recv())
            await ws.send('{"eof" : 1}')
            await ws.recv()
        before = _usp_requests(srv)
        async with connect(f"{srv.ws}{USP}?language=ko-KR") as ws:
            rid = uuid.uuid4().hex
            await ws.send(client_text_frame("speech.context", rid, {}))
            for chunk in audio.chunks()[:20]:
                await ws.send(client_audio_frame(rid, chunk))
            await ws.send(client_audio_frame(rid, b""))
            while parse_text(await ws.recv()).path != "turn.end":
                pass
        counted = _usp_requests(srv) - before
        clear = "text" in after_reset and counted == 1
        return Outcome(f"reset -> {json.dumps(after_reset, ensure_ascii=False)[:40]}; SDK turns counted +{counted:g}", clear,
                       time.monotonic() - started, 60 * 3200)

    return asyncio.run(run())


def _status(answer: bytes) -> int:
    """The status of a raw HTTP/1.1 answer (0 if there was none)."""
    return int(answer[9:12]) if answer.startswith(b"HTTP/1.1 ") and answer[9:12].isdigit() else 0


def _reason(answer: bytes) -> str:
    """The error message of a raw JSON error answer."""
    try:
        return str(json.loads(answer.partition(b"\r\n\r\n")[2])["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return answer[:90].decode("latin-1")


def _huge_head(size: int) -> Callable[[Server, Audio], Outcome]:
    def attack(srv: Server, audio: Audio) -> Outcome:
        """A GET whose one header is ``size`` bytes, sent while the server's answer is read."""
        head = big_header_head("/ready", size)
        got = exchange("127.0.0.1", srv.port, head, timeout=ATTACK_DEADLINE_S)
        status = _status(got.answer)
        return Outcome(f"{status or 'no answer'} {_reason(got.answer)[:70]}; {got.sent / 2**20:.1f} MiB sent of {size / 2**20:g}",
                       status == 431 and b"Http:MaxHeaderBytes" in got.answer and got.first_byte_s < 2, got.first_byte_s, got.sent)

    return attack


def trickled_heads(srv: Server, audio: Audio) -> Outcome:
    """10 connections each sending a GET's head one byte a second."""
    head = big_header_head("/ready", 100)
    started = time.monotonic()
    with ThreadPoolExecutor(10) as pool:
        runs = list(pool.map(lambda _: trickle("127.0.0.1", srv.port, head, interval=1.0, timeout=ATTACK_DEADLINE_S), range(10)))
    statuses = [_status(answer) for answer, _, _ in runs]
    took = [t for _, t, _ in runs]
    clear = all(s == 408 and b"Http:HeaderTimeoutSeconds" in a for s, (a, _, _) in zip(statuses, runs, strict=True)) \
        and all(HTTP_DEADLINE_S - 0.5 < t < HTTP_DEADLINE_S + 2 for t in took)
    return Outcome(f"{statuses.count(408)}x408 after {min(took):.1f}-{max(took):.1f} s; {_reason(runs[0][0])[:60]}", clear,
                   time.monotonic() - started, sum(sent for _, _, sent in runs))


def withheld_bodies(srv: Server, audio: Audio) -> Outcome:
    """40 uploads of 60 s of 16 kHz audio (1.9 MB), each withholding its last byte."""
    body = wav_header(data_bytes=60 * 32000) + b"\1\0" * (60 * 16000)
    data = post_head(f"{REST}?language=ko-KR", content_length=len(body)) + body[:-1]
    decoders = _decoders(srv)
    started = time.monotonic()
    with ThreadPoolExecutor(40) as pool:
        runs = list(pool.map(lambda _: exchange("127.0.0.1", srv.port, data, timeout=ATTACK_DEADLINE_S), range(40)))
    took = time.monotonic() - started
    timed_out = [r for r in runs if _status(r.answer) == 408]
    busy = [r for r in runs if _status(r.answer) == 503]
    clear = (len(timed_out) + len(busy) == len(runs) and len(timed_out) <= decoders
             and all(b"Http:BodyTimeoutSeconds" in r.answer and r.first_byte_s < HTTP_DEADLINE_S + 3 for r in timed_out)
             and all(b"busy" in r.answer and r.first_byte_s < 2 for r in busy))
    first = [r.first_byte_s for r in timed_out] or [float("nan")]
    at_once = [r.first_byte_s for r in busy] or [float("nan")]
    answer = (f"{len(timed_out)}x408 after {min(first):.1f}-{max(first):.1f} s, {len(busy)}x503 busy within {1000 * max(at_once):.0f} ms, "
              f"{len(runs) - len(timed_out) - len(busy)} other (of {decoders} decoders)")
    return Outcome(answer, clear, took, sum(r.sent for r in runs), {"held_mb": round(sum(r.sent for r in timed_out) / 1e6, 1)})


def busy_large_uploads(srv: Server, audio: Audio) -> Outcome:
    """Every decoder held by a /vosk stream, then 14 uploads that declare 22 MB of 48 kHz stereo float and send
    only the WAV header: 503 each before its body is read (they cost 5-7 s of CPU each, read and decoded)."""
    body_bytes = 22_000_000
    head = post_head(f"{REST}?language=ko-KR", content_length=44 + body_bytes)
    first = wav_header(rate=48000, channels=2, bits=32, tag=3, data_bytes=body_bytes)
    holders = [connect_sync(f"{srv.ws}/vosk?language=ko-KR") for _ in range(_decoders(srv))]
    try:
        for ws in holders:
            ws.send(b"\0" * 3200)
            ws.recv(30)
        held = _sessions(srv)
        cpu_before = cpu_seconds(srv.pid)
        started = time.monotonic()
        with ThreadPoolExecutor(14) as pool:
            runs = list(pool.map(lambda _: raw_request("127.0.0.1", srv.port, head, first, timeout=30), range(14)))
        took = time.monotonic() - started
        cpu = cpu_seconds(srv.pid) - cpu_before
    finally:
        for ws in holders:
            ws.close()
    statuses = [_status(a) for a, _ in runs]
    clear = all(s == 503 and b"busy" in a and t < 2 for s, (a, t) in zip(statuses, runs, strict=True)) and cpu < BUSY_CPU_TARGET_S
    return Outcome(f"{statuses.count(503)}x503 within {1000 * max(t for _, t in runs):.0f} ms ({held} decoders held); server CPU {cpu:.2f} s",
                   clear, took, sum(len(head) + len(first) for _ in runs), {"server_cpu_s": round(cpu, 2)})


#: Pipelined requests that read none of their answers: connections, requests on each, seconds before they read them.
PIPELINED = (5, 3000, 8.0)


def pipelined_unread(srv: Server, audio: Audio) -> Outcome:
    """Each connection writes its requests (``GET /status``) at once and reads nothing for a while, then every answer."""
    connections, count, wait = PIPELINED
    request = b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    data = request * (count - 1) + request.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
    started = time.monotonic()
    socks = [socket.create_connection(("127.0.0.1", srv.port), timeout=ATTACK_DEADLINE_S) for _ in range(connections)]
    try:
        for sock in socks:
            sock.sendall(data)
        time.sleep(wait)
        answered = []
        for sock in socks:
            answer = bytearray()
            while got := sock.recv(1 << 20):
                answer += got
            answered.append(answer.count(b"HTTP/1.1 200 "))
    finally:
        for sock in socks:
            sock.close()
    return Outcome(f"{sum(answered)} of {connections * count} answered", answered == [count] * connections,
                   time.monotonic() - started, connections * len(data))


#: MiB of ``CRLF CRLF`` in :func:`chunked_crlf`'s body, and the server CPU (s) it may cost (2.2 s when each was a piece).
CRLF_BODY_MIB = 4
CRLF_CPU_TARGET_S = 0.5


def chunked_crlf(srv: Server, audio: Audio) -> Outcome:
    """A REST upload whose chunked body (64 KiB chunks) is :data:`CRLF_BODY_MIB` MiB of ``CRLF CRLF``, not audio: refused
    once read, and what the server's CPU spent on it (the event loop's, parsing it)."""
    body = chunked(b"\r\n\r\n" * (CRLF_BODY_MIB << 18), 64 << 10)
    head = post_head(f"{REST}?language=ko-KR", extra=b"Connection: close\r\n")
    cpu_before = cpu_seconds(srv.pid)
    answer, took = raw_request("127.0.0.1", srv.port, head, body, timeout=ATTACK_DEADLINE_S)
    cpu = cpu_seconds(srv.pid) - cpu_before
    status = _status(answer)
    return Outcome(f"{status or 'no answer'} {_reason(answer)[:60]}; server CPU {cpu:.2f} s", status == 400 and cpu < CRLF_CPU_TARGET_S,
                   took, len(head) + len(body), {"server_cpu_s": round(cpu, 2)})


#: Connections that each send most of a head (almost 16 KiB) and stall, all at once.
STALLED = 1000


def stalled_heads(srv: Server, audio: Audio) -> Outcome:
    """:data:`STALLED` connections each send the start of a head and stall (busy, none gives way to a new one): how many
    the server keeps open (its ends of them), and whether a probe and a request on a new connection are answered."""
    head = big_header_head("/status", 16000)[:-4]
    started = time.monotonic()
    socks = []
    try:
        for _ in range(STALLED):
            sock = socket.create_connection(("127.0.0.1", srv.port), timeout=ATTACK_DEADLINE_S)
            sock.sendall(head)
            socks.append(sock)
        time.sleep(1)
        kept = sum(1 for c in psutil.Process(srv.pid).net_connections("tcp") if c.status == psutil.CONN_ESTABLISHED)
        probe, _ = raw_request("127.0.0.1", srv.port, b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n", timeout=10)
        other, _ = raw_request("127.0.0.1", srv.port, b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n", timeout=10)
    finally:
        for sock in socks:
            sock.close()
    took = time.monotonic() - started
    return Outcome(f"{kept} kept open; /status {_status(probe)}, /openapi.json {_status(other)} {_reason(other)[:40]}",
                   _status(probe) == 200 and kept < STALLED, took, STALLED * len(head), {"kept_open": kept})


#: The CPU the server may spend refusing the 14 uploads (each cost 5-7 s before the decoder was reserved first).
BUSY_CPU_TARGET_S = 2.0


def _decoders(srv: Server) -> int:
    return int(httpx.get(f"{srv.http}/sessions", timeout=10).json()["decoders"])


def _usp_requests(srv: Server) -> float:
    text = httpx.get(f"{srv.http}/metrics", timeout=10).text
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("speech_requests_total{") and 'route="usp/conversation"' in line and 'status="200"' in line)


#: The attacks, in the issue's order; adding one is adding an entry.
ATTACKS: tuple[Attack, ...] = (
    Attack("FLAC bomb (35 KB, 65 M frames x 8 channels)", 1, "413 before decoding", flac),
    Attack("Ogg/Opus bomb (an hour claimed)", 1, "413 before decoding", ogg),
    Attack("WAV whose header claims 4 GB", 1, "413", wav_claiming_4gb),
    Attack("MP3 bomb (3.6 MB, an hour of 8 kbit/s frames, no Xing header)", 1, "413 before decoding", mp3),
    Attack("6 /vosk clients send 2 bytes, then nothing", 2, "close 1008 (AudioIdleSeconds), decoders free", idle_streams),
    Attack("Speech SDK turn with 2 bytes, then nothing", 2, "close 1007 (AudioIdleSeconds): the SDK's BadRequest", idle_turn),
    Attack("10 connections send a head 1 byte a second", 3, f"408 after Http:HeaderTimeoutSeconds ({HTTP_DEADLINE_S} s here)",
           trickled_heads, HTTP_LIMITS),
    Attack("40 uploads of 60 s audio withhold their last byte", 3,
           f"408 after Http:BodyTimeoutSeconds ({HTTP_DEADLINE_S} s here) for those holding decoders, 503 at once for the rest; "
           "decoders free", withheld_bodies, HTTP_LIMITS),
    Attack("14 uploads of 22 MB to a busy server (every decoder held)", 3, "503 with only the header sent, little server CPU",
           busy_large_uploads, HTTP_LIMITS),
    Attack(f"{PIPELINED[0]} connections pipeline {PIPELINED[1]} GET /status, read none for {PIPELINED[2]:g} s", 3,
           "every one answered, memory bounded", pipelined_unread),
    Attack(f"a chunked upload of {CRLF_BODY_MIB} MiB of CRLF CRLF (64 KiB chunks)", 3, "400 once read (not audio), little server CPU",
           chunked_crlf),
    Attack(f"{STALLED} connections each stall midway through a 16 KB head", 3,
           "at most twice Http:MaxConnections kept, probes answered", stalled_heads),
    Attack("a 64 MiB request header", 4, "431 at once, memory bounded", _huge_head(64 << 20), HTTP_LIMITS),
    Attack("a 256 MiB request header", 4, "431 at once, memory bounded", _huge_head(256 << 20), HTTP_LIMITS),
    Attack("32-bit float WAV", 5, "the same words as 16-bit PCM", float_wav),
    Attack("1M usage records, 3 concurrent GETs", 6, "200, every record counted", usage_logs),
    Attack("one Speech SDK connection, 10,000 turns of 8 KB ids", 7, "every turn ended, memory bounded", many_turns),
    Attack("the key in a REST URL", 8, "403, the key never logged", key_in_query, (f"ApiKey={KEY}",)),
    Attack("bad values on every route", 9, "400 / 1007 with a reason", bad_values),
    Attack("a 60 s MP3, its middle half random bytes", 9, "400 with a reason, nothing on stderr but the log's lines",
           _damaged_mp3(_random_middle)),
    Attack("a 60 s MP3, every frame random after its header", 9,
           "200 (its decoder conceals the frames), nothing on stderr but the log's lines", _damaged_mp3(random_frame_bodies)),
    Attack("20 clients leave mid-upload", 10, "one debug line each, no traceback", disconnects),
    Attack("model zip bomb (3 MB -> 3 GB) and file:// URL", 11, "exit 1 with one line, nothing unpacked", model_zip_bomb),
    Attack("vosk reset; Speech SDK turns counted", 12, "a final result; speech_requests_total +1", reset_and_counting),
)


# ---- the suite ------------------------------------------------------------------------------------------


class ReadyProbe:
    """Polls ``/ready`` every 50 ms in a thread; its latencies."""

    def __init__(self, srv: Server) -> None:
        self.srv = srv
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    client.get(f"{self.srv.http}/ready")
                except httpx.HTTPError:
                    pass
                self.latencies.append(time.perf_counter() - started)
                self._stop.wait(0.05)

    def __enter__(self) -> ReadyProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(35)


def _held_after(srv: Server, wait: float = 10.0) -> int | None:
    """Decoders still held once an attack is over (polled for up to ``wait`` s: a refused stream's decoder goes
    back when its handler has finished); None where ``/sessions`` does not answer."""
    deadline = time.monotonic() + wait
    while True:
        try:
            held = _sessions(srv)
        except (httpx.HTTPError, KeyError, ValueError):
            return None
        if held == 0 or time.monotonic() > deadline:
            return held
        time.sleep(0.1)


def _measure(attack: Attack, srv: Server, audio: Audio) -> dict[str, Any]:
    with ReadyProbe(srv) as probe, PeakRss(srv.pid) as rss:
        try:
            out = attack.run(srv, audio)
        except Exception as exc:  # noqa: BLE001 - a broken attack is a row, not the end of the suite
            out = Outcome(f"{type(exc).__name__}: {str(exc)[:80]}", False, float("nan"))
        held = _held_after(srv)
    row: dict[str, Any] = {
        "item": attack.item, "attack": attack.name, "expected": attack.expected, "answer": out.answer, "clear": out.clear,
        "settings": " ".join(attack.args), "decoders_held_after": held,
        "seconds": round(out.seconds, 2), "sent_mb": round(out.sent_bytes / 1e6, 2), "rss_growth_mb": round(rss.growth_mb, 1),
        "ready_max_ms": round(1000 * max(probe.latencies, default=float("nan")), 1),
        "ready_p95_ms": round(1000 * percentile(probe.latencies, 95), 1), "ready_probes": len(probe.latencies),
        **out.extra,
    }
    row["rss_ok"] = row["rss_growth_mb"] <= row["sent_mb"] + RSS_ALLOWANCE_MB
    row["ready_ok"] = row["ready_max_ms"] < 1000 * READY_TARGET_S
    print("  ", {k: row[k] for k in ("item", "attack", "answer", "clear", "seconds", "rss_growth_mb", "ready_max_ms",
                                     "decoders_held_after")}, flush=True)
    return row


def suite(audio: Audio) -> dict[str, Any]:
    """Every attack of :data:`ATTACKS`, grouped by the server settings they need (a pod's defaults first)."""
    rows: list[dict[str, Any]] = []
    tracebacks: dict[str, int] = {}
    idle_seconds: float | None = None
    for args in dict.fromkeys(a.args for a in ATTACKS):
        with server(*args, "Logging:Console:LogLevel:Default=Information") as srv:
            if idle_seconds is None:
                from speech_recognizer.settings import parse

                defaults = parse([], environ={})
                idle_seconds = defaults.audio_idle_seconds
                decoders = httpx.get(f"{srv.http}/sessions", timeout=10).json()["decoders"]
            for attack in (a for a in ATTACKS if a.args == args):
                rows.append(_measure(attack, srv, audio))
            srv.proc.terminate()
            srv.proc.wait(30)
            log = srv.log.read_text(errors="replace")
            tracebacks[" ".join(args) or "defaults"] = log.count("Traceback")
    idle_rows = [r for r in rows if "decoders_free_after_s" in r]
    return {
        "settings": {"DecoderMaxCount": decoders, "AudioIdleSeconds": idle_seconds, "note": "a pod's defaults on this machine"},
        "rows": rows,
        "tracebacks_in_logs": tracebacks,
        "decoders_free_within_idle_timeout": all(r["decoders_free_after_s"] <= (idle_seconds or 0) + 5 for r in idle_rows),
        "decoders_free_after_every_attack": all(r["decoders_held_after"] in (0, None) for r in rows),
        "ready_p95_ms_median_of_attacks": round(statistics.median([r["ready_p95_ms"] for r in rows if r["ready_probes"]]), 1),
    }
