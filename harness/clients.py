"""Stream clients of the recognizer's WebSocket routes: vosk-server's ``/vosk`` and the Speech SDK's (USP).

Each stream returns a :class:`StreamResult`. Paced streams send one 100 ms
chunk every 100 ms of wall time (1x real time); unpaced ones send as fast as
the server takes them.

Latency of an intermediate result: on ``/vosk`` every chunk is answered, so it
is exact (reply time - send time). USP answers only when the hypothesis
changes; a hypothesis is attributed to the last chunk sent before it arrived,
which is exact while the server keeps up (replies come well within the 100 ms
between chunks) and, if it fell behind, would understate it; the final-result
latency (end of audio -> ``turn.end``) shows any backlog exactly on both.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from dataclasses import dataclass, field

import websockets
from websockets.asyncio.client import connect

from speech_recognizer.usp.frames import parse_text

from .speech import LOCALE, Audio
from .usp import client_audio_frame, client_text_frame


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, int(round(q / 100 * (len(s) - 1)))))
    return s[k]


USP_PATH = "/speech/recognition/conversation/cognitiveservices/v1?language=" + LOCALE
STRICT_S = 1.0  # strictly real time: every reply and the final result within 1 s


@dataclass
class StreamResult:
    route: str
    audio_s: float
    ok: bool = False
    refused: bool = False
    dropped: bool = False
    #: dropped with no close reason or error message the client could show
    unexplained: bool = False
    #: still running at the bench's deadline and cancelled there (see :func:`bounded`)
    stalled: bool = False
    message: str = ""
    latencies: list[float] = field(default_factory=list)  # per intermediate result, s
    #: in-process, paced: decode times of the chunks whose partial text changed (those a USP client hears of)
    changed_latencies: list[float] = field(default_factory=list)
    lag: list[tuple[float, float]] = field(default_factory=list)  # (audio time s, reply lag behind real time s)
    #: paced: each wait its time.monotonic() from, to: a chunk's from when it was due to its reply, the final result's
    #: from the end of audio (what ``latencies``, ``lag`` and ``final_latency`` measure)
    waits: list[tuple[float, float]] = field(default_factory=list)
    final_latency: float = float("nan")
    wall_s: float = float("nan")
    texts: list[str] = field(default_factory=list)

    @property
    def max_lag(self) -> float:
        return max((lag for _, lag in self.lag), default=0.0)

    @property
    def strict(self) -> bool:
        return self.ok and max(self.latencies, default=0.0) <= STRICT_S and self.max_lag <= STRICT_S and self.final_latency <= STRICT_S

    def summary(self) -> dict[str, object]:
        return {
            "route": self.route, "ok": self.ok, "refused": self.refused, "dropped": self.dropped, "message": self.message,
            "p50_ms": round(1000 * percentile(self.latencies, 50), 1), "p95_ms": round(1000 * percentile(self.latencies, 95), 1),
            "max_ms": round(1000 * max(self.latencies, default=0.0), 1), "final_ms": round(1000 * self.final_latency, 1),
            "max_lag_ms": round(1000 * self.max_lag, 1), "rtf": round(self.wall_s / self.audio_s, 3) if self.audio_s else None,
            "strict": self.strict,
        }


def lag_series(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """One point per audio second: the worst lag in that second."""
    worst: dict[int, float] = {}
    for t, lag in points:
        worst[int(t)] = max(worst.get(int(t), 0.0), lag)
    return sorted((float(k), v) for k, v in worst.items())


async def vosk_stream(ws_base: str, audio: Audio, *, paced: bool, delay: float = 0.0, timeout: float = 120.0,
                      headers: dict[str, str] | None = None, answered: threading.Event | None = None,
                      stop: threading.Event | None = None) -> StreamResult:
    """One vosk-server conversation: a config, chunks each answered, ``{"eof" : 1}``; ``headers`` on the upgrade (a key).

    Paced, it sets ``answered`` once its first chunk is answered, and ends early (``{"eof" : 1}`` instead of
    the next chunk; :attr:`StreamResult.audio_s` is then what it sent) once ``stop`` is set."""
    res = StreamResult("vosk", audio.seconds)
    await asyncio.sleep(delay)
    try:
        async with connect(f"{ws_base}/vosk?language={LOCALE}", max_size=1 << 20, open_timeout=30, additional_headers=headers,
                           ping_interval=None) as ws:  # no pong deadline: a pong waits behind audio sent ahead (as on the server)
            await ws.send(json.dumps({"config": {"sample_rate": audio.rate, "words": 1}}))
            t0 = time.monotonic()
            lag = []
            chunks = audio.chunks()
            step = audio.chunk_s
            if paced:  # lock-step: each chunk sent on time, its reply awaited (latency per chunk)
                for k, chunk in enumerate(chunks):
                    due = t0 + k * step
                    if (wait := due - time.monotonic()) > 0:
                        await asyncio.sleep(wait)
                    if stop is not None and stop.is_set():
                        res.audio_s = k * step
                        break
                    sent = time.monotonic()
                    await ws.send(chunk)
                    reply = json.loads(await asyncio.wait_for(ws.recv(), timeout))
                    got = time.monotonic()
                    res.latencies.append(got - sent)
                    lag.append(((k + 1) * step, got - due))
                    res.waits.append((due, got))
                    if answered is not None:
                        answered.set()
                    if reply.get("text"):
                        res.texts.append(reply["text"])
            else:  # as fast as the server takes them: sent without waiting (as the USP client does), replies read meanwhile

                async def send_all() -> None:
                    for chunk in chunks:
                        await ws.send(chunk)

                # Lean on purpose: the client shares the server's CPUs, and in throughput rows every CPU
                # second it spends is taken from decoding (a deployment's clients run elsewhere). So one
                # deadline for the whole stream, not a timer per reply, and partial results are counted,
                # not parsed.
                sender = asyncio.create_task(send_all())
                async with asyncio.timeout(timeout):
                    for _ in chunks:
                        raw = await ws.recv()
                        if not raw.startswith('{"partial"') and (text := json.loads(raw).get("text")):
                            res.texts.append(text)
                await sender
            eof = time.monotonic()
            await ws.send('{"eof" : 1}')
            final = json.loads(await asyncio.wait_for(ws.recv(), timeout))
            res.final_latency = time.monotonic() - eof
            if paced:
                res.waits.append((eof, eof + res.final_latency))
            res.wall_s = time.monotonic() - t0
            if final.get("text"):
                res.texts.append(final["text"])
            res.lag = lag_series(lag)
            res.ok = True
    except websockets.ConnectionClosed as exc:
        rcvd = exc.rcvd
        if rcvd is not None and rcvd.code == 1013 and rcvd.reason:
            res.refused, res.message = True, f"{rcvd.code} {rcvd.reason}"
        else:
            res.dropped, res.message = True, f"closed {rcvd.code if rcvd else 'without a close frame'} {rcvd.reason if rcvd else ''}"
            res.unexplained = not (rcvd and rcvd.reason)
    except (TimeoutError, OSError) as exc:
        res.dropped, res.message, res.unexplained = True, f"{type(exc).__name__}: {exc}", True
    return res


async def bounded(route: str, stream: asyncio.Future[StreamResult] | object, audio_s: float, deadline: float) -> StreamResult:
    """Await one stream coroutine for at most ``deadline`` s; past it the stream is cancelled (its
    socket closed by the ``async with``) and reported as stalled."""
    task = asyncio.ensure_future(stream)  # type: ignore[arg-type]
    try:
        return await asyncio.wait_for(task, deadline)
    except TimeoutError:
        return StreamResult(route, audio_s, stalled=True, message=f"no final result within {deadline:g} s; cancelled")


async def usp_stream(ws_base: str, audio: Audio, *, paced: bool, delay: float = 0.0, timeout: float = 120.0) -> StreamResult:
    """One Speech SDK continuous recognition (conversation mode) spoken as raw USP frames."""
    res = StreamResult("usp", audio.seconds)
    await asyncio.sleep(delay)
    rid = uuid.uuid4().hex
    sent_at: list[float] = []
    due_at: list[float] = []
    done = asyncio.Event()
    state = {"eof": float("nan"), "end": float("nan")}
    lag = []

    async def reader(ws) -> None:
        async for raw in ws:
            if not isinstance(raw, str):
                continue
            msg = parse_text(raw)
            got = time.monotonic()
            path = msg.path.lower()
            if path == "speech.hypothesis" and sent_at:
                k = len(sent_at) - 1
                res.latencies.append(got - sent_at[k])
                if paced:
                    lag.append(((k + 1) * audio.chunk_s, got - due_at[k]))
            elif path == "speech.phrase":
                body = msg.json()
                status = body.get("RecognitionStatus")
                if status == "TooManyRequests":
                    res.refused, res.message = True, f"TooManyRequests: {body.get('Message', '')}"
                elif status == "Success":
                    res.texts.append(body.get("DisplayText", ""))
            elif path == "turn.end":
                state["end"] = got
                done.set()
                return

    try:
        async with connect(ws_base + USP_PATH, subprotocols=["USP"], max_size=1 << 20, open_timeout=30, ping_interval=None) as ws:  # type: ignore[list-item]
            source = {"type": "Stream", "samplerate": str(audio.rate), "bitspersample": "16", "channelcount": "1"}
            await ws.send(client_text_frame("speech.config", None, {"context": {"audio": {"source": source}}}))
            await ws.send(client_text_frame("speech.context", rid, {"phraseDetection": {"language": LOCALE}}))
            read = asyncio.create_task(reader(ws))
            t0 = time.monotonic()
            for k, chunk in enumerate(audio.chunks()):
                if done.is_set():
                    break
                due = t0 + k * audio.chunk_s
                if paced and (wait := due - time.monotonic()) > 0:
                    await asyncio.sleep(wait)
                due_at.append(due)
                sent_at.append(time.monotonic())
                await ws.send(client_audio_frame(rid, chunk))
            state["eof"] = time.monotonic()
            if not done.is_set():
                await ws.send(client_audio_frame(rid, b""))
            await asyncio.wait_for(done.wait(), timeout)
            await read
            res.final_latency = state["end"] - state["eof"]
            res.wall_s = state["end"] - t0
            res.lag = lag_series(lag)
            res.ok = not res.refused
    except websockets.ConnectionClosed as exc:
        rcvd = exc.rcvd
        if not res.refused:
            res.dropped, res.message = True, f"closed {rcvd.code if rcvd else 'without a close frame'} {rcvd.reason if rcvd else ''}"
            res.unexplained = not (rcvd and rcvd.reason)
    except (TimeoutError, OSError) as exc:
        res.dropped, res.message, res.unexplained = True, f"{type(exc).__name__}: {exc}", True
    return res
