"""Test helpers shared by every suite: a server on loopback in a thread, in-process Vosk as the
reference, the metrics a server exposes. What the benchmarks need too (speech fixtures, free
ports) lives in the ``harness`` package and is imported here for the tests' convenience."""

from __future__ import annotations

import asyncio
import functools
import json
import math
import mmap
import os
import socket
import threading
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import Future
from contextlib import closing, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Self, TypeVar

import uvicorn

# re-exported: the tests import these from here as before
from harness.loopback import Loopback, free_port
from harness.speech import NARROWBAND_SENTENCE, SENTENCES, SPEECH_RATE, concat, read_wav, require_tool, silence, speak  # noqa: F401
from speech_recognizer.model_graph import duplicate_input_symbols
from speech_recognizer.results import written_words
from speech_recognizer.serving import SERVER_OPTIONS, listening_socket, server_options
from speech_recognizer.transcript import Word

T = TypeVar("T")


@dataclass(frozen=True)
class RefWord:
    """A word as in-process Vosk gives it: its times (s) and confidence (Vosk's ``conf``, 0-1)."""

    word: str
    start: float
    end: float
    confidence: float


@dataclass(frozen=True)
class RefPhrase:
    text: str
    words: tuple[RefWord, ...]

    @property
    def confidence(self) -> float:
        """Azure's ``Confidence`` of the phrase (NBest): the mean of its words' (Vosk gives none of its own)."""
        return sum(w.confidence for w in self.words) / len(self.words)

    def then(self, other: RefPhrase) -> RefPhrase:
        """This phrase and ``other`` as one (a server joining them across a pause: both texts, both words)."""
        return RefPhrase(f"{self.text} {other.text}", self.words + other.words)

    @property
    def written_words(self) -> tuple[RefWord, ...]:
        """Its words as a person reads them (results.written_words: a number with its counter one word over its tokens' times)."""
        written = written_words([Word(w.word, w.start, w.end, w.confidence) for w in self.words])
        return tuple(RefWord(w.text, w.start, w.end, w.confidence) for w in written)


#: How far a server's word time may sit from in-process Vosk's: decoding is deterministic
#: (dither off), so only clock rounding remains — a reused (warm) recognizer's times are
#: float32 on a clock that has run on, a few microseconds off. A real decoding difference
#: moves a word by a decoder frame (30 ms).
CLOCK_TOLERANCE = 0.001

#: How far a served confidence may sit from in-process Vosk's on the same audio in the same pieces. Vosk
#: computes a word's confidence (and its times) by minimum Bayes risk over the utterance's lattice, and a
#: pooled (warm) recognizer's lattice is not always a new one's: its lazily composed graph was expanded by
#: other audio before. Measured (2026-12-05, the product's Recognition and WarmPool in one process, a new
#: recognizer against warm ones after 1-3 random pieces of the test recordings): on the three-utterance fixture
#: twice (25 s) 15 of 17 warm ones moved word times, the one examined a word's confidence by 0.023 (0.640 ->
#: 0.617) and the next word's start by 5 ms, words equal (9 of 9 on the fixture once: no change); the session's server gave the three-utterance fixture 0.56127 against 0.559883 for its third phrase
#: (trial 80), words and times equal. So served confidences are compared within this, about twice the largest
#: seen; where both sides are new recognizers (in-process against in-process) they are compared exactly.
CONFIDENCE_TOLERANCE = 0.05

#: The keys under which the recognizer's answers carry a confidence: Azure's JSON, vosk-server's, and the
#: OpenAI route's verbose_json (``avg_logprob``: the mean log of its words' confidences).
CONFIDENCE_KEYS = frozenset({"Confidence", "conf", "confidence"})
LOG_CONFIDENCE_KEYS = frozenset({"avg_logprob"})


def near_confidence(got: float, want: float) -> bool:
    """Whether a served confidence is in-process Vosk's (or another server's) up to :data:`CONFIDENCE_TOLERANCE`."""
    return abs(got - want) <= CONFIDENCE_TOLERANCE


def answer_differences(got: object, want: object, where: str = "") -> list[str]:
    """Where two recognizer answers (parsed JSON) differ: every value exactly but confidences, which are
    compared with :func:`near_confidence` (log ones on their exponent). Empty when they are the same answer."""
    if isinstance(got, dict) and isinstance(want, dict):
        if got.keys() != want.keys():
            return [f"{where or '.'}: keys {sorted(got)} != {sorted(want)}"]
        found = []
        for key in got:
            g, w, at = got[key], want[key], f"{where}.{key}"
            if key in CONFIDENCE_KEYS | LOG_CONFIDENCE_KEYS and isinstance(g, float | int) and isinstance(w, float | int):
                near = near_confidence(math.exp(g), math.exp(w)) if key in LOG_CONFIDENCE_KEYS else near_confidence(g, w)
                found += [] if near else [f"{at}: {g!r} != {w!r}"]
            else:
                found += answer_differences(g, w, at)
        return found
    if isinstance(got, list) and isinstance(want, list):
        if len(got) != len(want):
            return [f"{where or '.'}: {len(got)} items != {len(want)}"]
        return [d for i, (g, w) in enumerate(zip(got, want, strict=True)) for d in answer_differences(g, w, f"{where}[{i}]")]
    return [] if got == want else [f"{where or '.'}: {got!r} != {want!r}"]


def assert_same_answer(got: object, want: object) -> None:
    """Two answers to the same audio are the same (:func:`answer_differences`)."""
    differ = answer_differences(got, want)
    assert not differ, f"the answers differ: {differ}"


@dataclass(frozen=True)
class Reference:
    """What in-process Vosk says of some audio over several runs."""

    runs: tuple[tuple[RefPhrase, ...], ...]

    @property
    def phrases(self) -> tuple[RefPhrase, ...]:
        return self.runs[0]

    @property
    def texts(self) -> list[str]:
        return [p.text for p in self.phrases]

    def assert_words_match(self, got: Sequence[tuple[str, float, float] | tuple[str, float, float, float]],
                           tolerance: float | None = None, *, places: int | None = None, written: bool = False) -> None:
        """Same words in order; each start/end within ``tolerance`` (:data:`CLOCK_TOLERANCE`) of in-process Vosk;
        with ``written``, its :attr:`RefPhrase.written_words` (what the OpenAI route's words and subtitles show).

        Where ``got`` carries a confidence (a fourth item), it is in-process Vosk's (rounded to ``places``
        decimals where the route rounds: Azure's JSON, 6) within :data:`CONFIDENCE_TOLERANCE`, a pooled
        recognizer's lattice being not always a new one's. The reference's runs (new recognizers) must agree
        on it exactly, else no confidence can be expected.
        """
        tolerance = CLOCK_TOLERANCE if tolerance is None else tolerance
        words = [[w for p in run for w in (p.written_words if written else p.words)] for run in self.runs]
        assert [g[0] for g in got] == [w.word for w in words[0]], (got, words[0])
        for i, (word, start, end, *_) in enumerate(got):
            starts = [run[i].start for run in words]
            ends = [run[i].end for run in words]
            assert min(starts) - tolerance <= start <= max(starts) + tolerance, (word, start, starts)
            assert min(ends) - tolerance <= end <= max(ends) + tolerance, (word, end, ends)
        if got and len(got[0]) == 4:
            want = [[w.confidence if places is None else round(w.confidence, places) for w in run] for run in words]
            assert all(run == want[0] for run in want), f"in-process Vosk's confidences vary from run to run: {want}"
            differ = [(g[0], g[3], w) for g, w in zip(got, want[0], strict=True) if not near_confidence(g[3], w)]
            assert not differ, f"confidences (word, served, in-process) differ: {differ}"


def vosk_reference(model: object, pcm: bytes, rate: int, chunk_bytes: int, runs: int = 3, *, model_rate: int | None = None) -> Reference:
    """In-process ``KaldiRecognizer`` fed mono ``pcm`` ``chunk_bytes`` at a time, ``runs`` times.

    With a ``model_rate`` other than ``rate``, each chunk first goes through one streaming
    resampler (the server's: ``speech_recognizer.resampling.Resampler``, same settings), whose
    tail is decoded before the final result, as the server does. Fails unless Vosk agrees
    with itself on the words, so that a mismatch with a server is the server's and not the
    engine's own variance.
    """
    results = tuple(tuple(_vosk_once(model, pcm, rate, chunk_bytes, model_rate or rate)) for _ in range(runs))
    texts = [[p.text for p in r] for r in results]
    assert all(t == texts[0] for t in texts), f"in-process Vosk disagrees with itself on this audio: {texts}"
    return Reference(results)


def _vosk_once(model: object, pcm: bytes, rate: int, chunk_bytes: int, model_rate: int) -> list[RefPhrase]:
    import vosk

    from speech_recognizer.audio import dither_zeros
    from speech_recognizer.resampling import Resampler

    resample = Resampler(rate, model_rate)
    rec = vosk.KaldiRecognizer(model, float(model_rate))
    rec.SetWords(True)
    rec.SetPartialWords(True)
    raw: list[str] = []
    fed = 0  # the server turns exact zeros into its silence pattern by stream position (audio.dither_zeros)
    for i in range(0, len(pcm), chunk_bytes):
        piece = resample(pcm[i : i + chunk_bytes])
        if not piece:
            continue
        piece, fed = dither_zeros(piece, fed), fed + len(piece) // 2
        if rec.AcceptWaveform(piece):
            raw.append(rec.Result())
        else:
            rec.PartialResult()
    tail = resample(b"", last=True)
    if tail and rec.AcceptWaveform(dither_zeros(tail, fed)):
        raw.append(rec.Result())
    raw.append(rec.FinalResult())
    phrases = []
    for item in raw:
        data = json.loads(item)
        if data.get("text", "").strip():
            words = tuple(RefWord(w["word"], w["start"], w["end"], w["conf"]) for w in data.get("result", []))
            phrases.append(RefPhrase(data["text"].strip(), words))
    return phrases


class ServerThread(Loopback):
    """A real uvicorn server on loopback in a background thread."""

    def __init__(self, app: object, port: int | None = None, host: str = "127.0.0.1", *,
                 receive_buffer: int | None = None, **options: object) -> None:
        """Serves as ``speech-recognizer`` does (its uvicorn options, request limits included, and
        listening socket, on ``host``); ``options`` override some. ``receive_buffer``: each connection's kernel
        receive buffer, in bytes (``SO_RCVBUF``, which the kernel doubles), instead of Linux's, which grows to 6 MiB
        on loopback: a test of a client the server holds back then fills it with little audio, not megabytes the
        server decodes once it reads on."""
        self.port = port or free_port()
        state = getattr(app, "state", None)
        served = server_options(state.settings, state.metrics, getattr(state, "http_cap", None)) if hasattr(state, "settings") else SERVER_OPTIONS
        config = uvicorn.Config(app, host=host, port=self.port, log_level="warning", **{**served, **options})  # type: ignore[arg-type]
        self.server = uvicorn.Server(config)
        sock = listening_socket(host, self.port)
        if receive_buffer is not None:  # accepted connections inherit it
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


class TcpServerThread(Loopback):
    """A TCP server on 127.0.0.1:``port`` (0: a free one, known once entered) that runs :meth:`relay` for each
    connection, on an event loop of its own in a background thread: a stand-in for what sits in front of a
    server (a proxy, kube-proxy)."""

    port: int

    async def relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """:meth:`relay`, the client's connection closed after it however it ended. The server stopping (its task
        cancelled) ends it quietly: a connection's task that ends cancelled makes asyncio log an ERROR ("Exception in
        callback StreamReaderProtocol...") inside whatever test runs then. One still unfinished when the loop stopped (a
        connection accepted as the server stopped) is closed by the garbage collector: it may await nothing then (an
        await in its ``finally`` was a "coroutine ignored GeneratorExit" warning)."""
        collected = False
        try:
            await self.relay(reader, writer)
        except asyncio.CancelledError:
            pass
        except GeneratorExit:
            collected = True
            raise
        finally:
            writer.close()
            if not collected:
                with suppress(OSError):
                    await writer.wait_closed()

    def __enter__(self) -> Self:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name=type(self).__name__)
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self.serve, "127.0.0.1", self.port), self.loop).result(10)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            """Stop listening, cancel every connection's task and wait for them: their connections closed (each
            relay's own clean-up run) before the loop stops."""
            self.server.close()
            deadline = self.loop.time() + 5
            # again while any is left: a connection accepted meanwhile has a task the first look did not see
            while (tasks := asyncio.all_tasks() - {asyncio.current_task()}) and self.loop.time() < deadline:
                for task in tasks:
                    task.cancel()
                await asyncio.wait(tasks, timeout=deadline - self.loop.time())

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def scrape_metrics(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a server's ``/metrics``: ``(name, sorted labels) -> value``."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    r = httpx.get(f"{base}/metrics", timeout=30)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(r.text)
        for sample in family.samples
    }



def duplicate_table_bytes(grammar: Path) -> int:
    """The size of the word table ``grammar`` (a model's Gr.fst) carries twice; 0 when it does not."""
    with open(grammar, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        found = duplicate_input_symbols(buf)
    return 0 if found is None else found[2] - found[1]


def widest_wav(speech: Path | None = None, speech_seconds: float | None = None, seconds: float | None = None) -> bytes:
    """``MaxAudioSeconds`` (60 s by default; or ``seconds``) of the widest audio a REST or OpenAI body may carry (48 kHz,
    2 channels, 32 bits: 23 MB, the largest upload the limits allow): ``speech`` (a 16 kHz mono WAV) over and over, else
    silence; with ``speech_seconds``, silence after that many seconds of it."""
    import io
    import wave

    import numpy as np

    from speech_recognizer.settings import parse

    seconds = parse([], environ={}).max_audio_seconds if seconds is None else seconds
    pcm, rate, _ = read_wav(speech) if speech is not None else (b"\0\0", 16000, 1)
    samples = np.resize(np.repeat(np.frombuffer(pcm, "<i2").astype("<i4") << 16, 48000 // rate), int(seconds * 48000))
    if speech_seconds is not None:
        samples[int(speech_seconds * 48000) :] = 0
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(4)
        wav.setframerate(48000)
        wav.writeframes(np.stack([samples, samples], axis=1).tobytes())
    return out.getvalue()


# ---- WebM, M4A: audio encoded and decoded by PyAV (FFmpeg), as browsers and phones send it and as the server decodes it ----


def mp3_encode(wav: Path, out: Path) -> Path:
    """``wav`` as an MP3 by libsndfile (LAME, variable bit rate, a Xing header), at its own rate."""
    import soundfile

    data, rate = soundfile.read(wav, dtype="int16")
    soundfile.write(out, data, rate, format="MP3")
    return out


def av_encode(wav: Path, out: Path, container: str, codec: str, rate: int, bit_rate: int) -> Path:
    """``wav`` (16-bit mono) encoded by PyAV with ``codec`` at ``rate`` Hz and ``bit_rate`` into ``container``, in a
    process of its own (:func:`tests.muxing.in_child`)."""
    from .muxing import encoded_wav, in_child

    out.write_bytes(in_child(encoded_wav, wav, container, codec, rate, bit_rate))
    return out


def av_pcm(path: Path) -> tuple[bytes, int]:
    """:func:`tests.muxing.pcm`: the PCM and rate PyAV decodes ``path`` to as the server's decoder does, in a process of
    its own, once per version of the file in a worker."""
    return _av_pcm(path, path.stat().st_mtime_ns, path.stat().st_size)


@functools.cache
def _av_pcm(path: Path, _mtime_ns: int, _size: int) -> tuple[bytes, int]:
    from .muxing import in_child, pcm

    return in_child(pcm, path)


class _Schedstat:
    """Nanoseconds each thread of this process and of its children has spent runnable but waiting for a CPU, from
    the kernel's schedstat (its second field), read cheaply: the sampler shares the GIL with what it measures, so each
    file is opened once and read again at offset 0 (``os.pread``), and each process's threads listed by one
    ``os.listdir``. A thread gone (its file read fails) is forgotten; a new one is opened at the next sample. With
    ``descendants``, the children's children too, and theirs (a command run through a wrapper process)."""

    def __init__(self, skip: int, descendants: bool = False) -> None:
        self.skip, self.descendants = skip, descendants
        self.fds: dict[tuple[str, int], int] = {}  # ("stat" | "children", tid) -> open file

    def _read(self, kind: str, pid: int, tid: int) -> bytes | None:
        """The file ``kind`` of thread ``tid`` of ``pid`` (schedstat, or the ids of its children), None if gone."""
        fd = self.fds.get((kind, tid))
        if fd is None:
            try:
                fd = self.fds[(kind, tid)] = os.open(f"/proc/{pid}/task/{tid}/{'schedstat' if kind == 'stat' else kind}", os.O_RDONLY)
            except OSError:
                return None
        try:
            return os.pread(fd, 256, 0)
        except OSError:
            os.close(self.fds.pop((kind, tid)))
            return None

    def __call__(self) -> dict[int, int]:
        """Each thread's wait now, by thread id (this process's and its children's, or its descendants', but thread ``skip``)."""
        waited: dict[int, int] = {}
        pids, seen = [os.getpid()], set()
        for pid in pids:
            try:
                tids = [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
            except OSError:
                continue
            for tid in tids:
                seen.add(tid)
                if pid == pids[0] or self.descendants:
                    pids += [int(child) for child in (self._read("children", pid, tid) or b"").split()]
                if tid != self.skip and (stat := self._read("stat", pid, tid)):
                    with suppress(IndexError, ValueError):
                        waited[tid] = int(stat.split()[1])
        for key in [key for key in self.fds if key[1] not in seen]:
            os.close(self.fds.pop(key))
        return waited

    def close(self) -> None:
        """Closes every file kept open."""
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


#: How long before the reading that credits it a thread's wait for a CPU may have begun, as :func:`wait_spans` takes it:
#: under load a wait lasts tens of milliseconds (CFS's slices of the others runnable), rarely more.
WAIT_CREDITED_WITHIN = 1.0


def wait_spans(before: float, now: float, waits: Sequence[float]) -> list[tuple[float, float]]:
    """When threads waited for a CPU between two readings of their schedstat (at ``before`` and ``now``), from each
    thread's wait credited meanwhile (``waits``, seconds): at most the time between, the threads waiting at once counted
    once (at its end), and what each was credited beyond that time just before it. The kernel credits a wait (schedstat's
    second field) as it ends, when the thread gets a CPU: capped at the time between the readings, as these waits were
    before, most of a starved process's were lost (a child burning 1 s of CPU on a CPU shared with 5 busy loops took
    13.8 s of clock, 12.7 s of it waiting by its schedstat, and 5.5 s were read as not waiting)."""
    between = now - before
    within = min(between, sum(min(wait, between) for wait in waits))
    return [(now - within, now), *((before - (wait - between), before) for wait in waits if wait > between)]


def waited(spans: Iterable[tuple[float, float]], start: float, end: float) -> float:
    """The seconds from ``start`` to ``end`` that ``spans`` (from, to: :func:`wait_spans`) cover: their union's."""
    total, reach = 0.0, start
    for begun, ended in sorted(spans):
        begun, ended = max(begun, reach), min(ended, end)
        if ended > begun:
            total, reach = total + ended - begun, ended
    return total


#: How long :meth:`Unstarved.beyond` waits by the clock at most, however starved (a bound must end a test that hangs
#: on a machine shared by many, where the stopwatch's unstarved time may run far slower than the clock even while
#: what is waited on idles): :data:`STARVED_CLOCK_FACTOR` times its bound, and no more than :data:`STARVED_CLOCK_EXTRA`
#: seconds past it or :data:`STARVED_CLOCK_LONG` times it, whichever is longer. A short bound (a reply, a status) gets
#: a fixed margin; a long one bounds work a starved machine stretches in proportion (whole recordings decoded, Speech
#: SDK sessions one after another), so its margin grows with it, while a hang of it still ends within a few minutes.
STARVED_CLOCK_FACTOR = 10
STARVED_CLOCK_EXTRA = 60.0
STARVED_CLOCK_LONG = 3
#: Seconds between two readings of an :class:`Unstarved` stopwatch by a loop that waits on it.
READING_SECONDS = 0.05


def starved_clock(bound: float) -> float:
    """The clock's seconds after which :meth:`Unstarved.beyond` ends a wait of ``bound`` unstarved seconds, however
    starved (:data:`STARVED_CLOCK_FACTOR`, :data:`STARVED_CLOCK_EXTRA`, :data:`STARVED_CLOCK_LONG`)."""
    return min(STARVED_CLOCK_FACTOR * bound, max(bound + STARVED_CLOCK_EXTRA, STARVED_CLOCK_LONG * bound))


class Unstarved:
    """A stopwatch of the time this process and its children did not wait for a CPU (the :class:`Starved` measure),
    read at its caller's own pace rather than by a sampling thread: each :meth:`read` adds the clock time since the
    one before, less what the threads waited for a CPU meanwhile (threads waiting at once count once: :func:`waited`).
    For a wait's bound that a loaded machine should stretch and a quiet one should not: when nothing waits for a CPU
    it reads the clock's time. With ``descendants``, the waits of the children's children count too, and theirs."""

    def __init__(self, descendants: bool = False) -> None:
        self._read = _Schedstat(skip=0, descendants=descendants)  # no thread is skipped: the reader's own waits count too
        self._at, self._waits = time.monotonic(), self._read()
        self._began, self._recent = self._at, list[tuple[float, float]]()
        self.seconds = 0.0
        self.clock = 0.0

    def read(self) -> float:
        """The unstarved seconds since this stopwatch began (and :attr:`clock`, the clock's)."""
        now, waits = time.monotonic(), self._read()
        new = wait_spans(self._at, now, [(waits[tid] - self._waits[tid]) / 1e9 for tid in waits.keys() & self._waits.keys()])
        # a wait credited now may have begun before the last reading (:func:`wait_spans`): it is taken from the time
        # counted so far, whose waits of the last seconds are kept so as to count none twice
        self._recent = [(a, b) for a, b in self._recent if b > now - 2 * WAIT_CREDITED_WITHIN]
        before = waited(self._recent, self._began, now)
        self._recent += new
        self.clock = now - self._began
        self.seconds = max(0.0, self.seconds + (now - self._at) - (waited(self._recent, self._began, now) - before))
        self._at, self._waits = now, waits
        return self.seconds

    def beyond(self, bound: float) -> bool:
        """Whether ``bound`` seconds are past (read now): in time not waiting for a CPU, or by the clock after
        :func:`starved_clock` of it, however starved."""
        return self.read() > bound or self.clock > starved_clock(bound)

    def __str__(self) -> str:
        """The stretch read last, for an assertion's message: its clock time and :attr:`seconds`."""
        return f"{self.clock:.1f} s of clock, {self.seconds:.1f} s of it not waiting for a CPU"

    def close(self) -> None:
        self._read.close()


def within(seconds: float, done: Callable[[], object], what: str | Callable[[], str], every: float = READING_SECONDS) -> None:
    """Wait until ``done()`` is true; fail once ``seconds`` passed in time this process and its children (a server
    process, its decoders) did not wait for a CPU, or by the clock after :func:`starved_clock` of it, however starved
    (:meth:`Unstarved.beyond`): a wait bounded by the clock failed what was only slow on a machine shared by many (a
    rollout's 30 s request timeout at load 18, a model's load, a phrase from the Speech SDK). ``what`` names what is
    waited for in the failure, or is called then for it (the state it ended in); ``done`` is asked ``every`` seconds."""
    with closing(Unstarved(descendants=True)) as stopwatch:
        while not done():
            assert not stopwatch.beyond(seconds), f"{what() if callable(what) else what}: not within {seconds:g} s ({stopwatch})"
            time.sleep(every)


def finishes(seconds: float, call: Callable[[], T], what: str) -> T:
    """``call()`` (a client's request, with no timeout of its own) run in a thread of its own and waited for by
    :func:`within`: a hang guard in time this process and its children did not wait for a CPU, where a client's own
    timeout is the clock's (a REST recognition's 60 s failed one that was only slow: 189 s at load 18). Its result, or
    its exception raised here."""
    done: Future[T] = Future()

    def run() -> None:
        try:
            done.set_result(call())
        except BaseException as exc:  # noqa: BLE001 - raised in the caller
            done.set_exception(exc)

    threading.Thread(target=run, name="finishes", daemon=True).start()
    within(seconds, done.done, what)
    return done.result()


def threads_named(*prefixes: str) -> frozenset[int]:
    """The native ids of this process's Python threads alive now whose names begin with one of ``prefixes``."""
    return frozenset(t.native_id for t in threading.enumerate() if t.native_id is not None and t.name.startswith(prefixes))


class Starved:
    """How long this process and its children waited for a CPU, while entered: sampled every 10 ms against the
    monotonic clock and the epoch's (so that moments another process reports, its ``Date.now()``, can be read too).

    On a machine whose CPU is shared by many, a stretch's clock time is its work's plus the time its threads waited
    to run; :meth:`unstarved` is the first without the second. Each sample interval counts at most its own length
    (threads waiting at once count once), so a wait for nothing (a timer, a peer that never answers, a lock held by
    a thread that runs) still counts in full: an idle thread does not wait for a CPU."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float, dict[int, int]]] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="starved", daemon=True)

    def _sample(self) -> None:
        read = _Schedstat(skip=threading.get_native_id())
        try:
            while True:
                self.samples.append((time.monotonic(), time.time(), read()))
                if self._done.wait(0.01):
                    return
        finally:
            read.close()

    def __enter__(self) -> Self:
        assert Path("/proc/self/schedstat").exists(), "this kernel keeps no schedstat: no measure of waits for a CPU"
        self._thread.start()
        self.entered = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.left = time.monotonic()
        self._done.set()
        self._thread.join()

    @property
    def seconds(self) -> float:
        """Seconds from entering to leaving but those in which a thread waited for a CPU (:meth:`unstarved`)."""
        return self.unstarved(self.entered, self.left)

    def __str__(self) -> str:
        """The stretch from entering to leaving, for an assertion's message: its clock time and :attr:`seconds`."""
        return f"{self.left - self.entered:.2f} s, {self.seconds:.2f} s of it not waiting for a CPU"

    def unstarved(self, start: float, end: float, *, epoch: bool = False, beside: Collection[int] = ()) -> float:
        """Seconds from ``start`` to ``end`` (:func:`time.monotonic`'s, or with ``epoch`` the epoch's) but those in
        which a thread of this process or of a child waited for a CPU (a thread that began or ended between two
        samples counts for nothing there), but the threads ``beside`` (native ids: :func:`threads_named`): work
        beside what is timed (another stream's decoding), whose waits for a CPU would hide a stall of what is timed
        while it idles."""
        at, samples = 1 if epoch else 0, self.samples
        # Only the samples around the stretch (the sampler appends in time order): a caller that polls (a wait for
        # decoders every 50 ms) walks its own stretch, not every sample since entering, holding the GIL meanwhile.
        # Those a little after it too: a wait is credited as it ends (:func:`wait_spans`).
        last = len(samples)
        first = max(0, bisect_right(samples, start, hi=last, key=lambda s: s[at]) - 1)
        last = min(last, bisect_left(samples, end + WAIT_CREDITED_WITHIN, lo=first, hi=last, key=lambda s: s[at]) + 1)
        spans = []
        for i in range(first, last - 1):
            (t0, w0), (t1, w1) = (samples[i][at], samples[i][2]), (samples[i + 1][at], samples[i + 1][2])
            spans += wait_spans(t0, t1, [(w1[tid] - w0[tid]) / 1e9 for tid in w1.keys() & w0.keys() if tid not in beside])
        return end - start - waited(spans, start, end)

    def latency(self, timed: Timed) -> float:
        """:meth:`unstarved` of a stretch a thread timed (its exchange with a server in a child process): its clock
        time but those seconds in which that thread or a thread of a child (the server) waited for a CPU, this
        process's other threads then (clients beside it, a stream paced beside it) left out: their waits would hide a
        slow answer. Read once this stopwatch is left (a wait is credited as it ends)."""
        return self.unstarved(timed.start, timed.end, beside=timed.beside)


@dataclass(frozen=True)
class Timed:
    """A stretch of the clock one thread timed (``start`` to ``end``: :func:`time.monotonic`'s), and the native ids of
    this process's other Python threads then (``beside``: what :meth:`Starved.latency` leaves out)."""

    start: float
    end: float
    beside: frozenset[int]

    @classmethod
    def since(cls, start: float) -> Timed:
        """From ``start`` to now, timed by the calling thread."""
        return cls(start, time.monotonic(), threads_named("") - {threading.get_native_id()})

    @property
    def clock(self) -> float:
        return self.end - self.start
