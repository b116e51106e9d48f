"""Helpers for the tests of hostile input: a real server process, its peak memory, and a paced stream beside.

Each hostile test runs ``python -m speech_recognizer`` in a subprocess (the
way a pod runs it: its memory is the server's alone, and the client's work does
not share the server's interpreter), and checks that a
normal stream, paced at 1x real time over ``/vosk`` while the attack runs,
stays strictly real time (:attr:`harness.clients.StreamResult.strict`: every
reply and the final result within 1 s), or, on a machine too busy for that
(:func:`assert_strict`), lags no more than 1 s behind the same stream on a
server with no attack, measured then. Beside a server in the test's own process,
each wait is within 1 s but the time the process waited for a CPU in it
(:func:`assert_real_time_but_starved`).
"""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager

from harness.clients import STRICT_S, StreamResult, vosk_stream
from harness.memory import PeakRss  # noqa: F401 - the hostile tests' measure
from harness.server import Server, server
from harness.speech import Audio

from .support import Starved

#: What a request may add to the server's peak RSS beyond its body (issue 16's target).
RSS_ALLOWANCE_MB = 100


@contextmanager
def real_server_for(audio: Audio | None, *args: str, headers: dict[str, str] | None = None) -> Iterator[Server]:
    """``python -m speech_recognizer`` with ``args``, one recognizer warmed with ``audio`` itself; with no
    ``audio`` (no paced stream beside the attack), no recognizer warmed at all, not even at start-up.

    A recognizer that has decoded speech is about 2.5 times cheaper on its next
    utterance than one warmed at start-up only (bench/notes.md): the paced stream
    then measures the attack, not a cold recognizer.
    """
    warmup = ("Warmup:Count=1", "Warmup:Seconds=2") if audio is not None else ("Warmup:Count=0",)
    with server(*warmup, *args) as srv:
        try:
            if audio is not None:
                warmed = asyncio.run(vosk_stream(srv.ws, audio, paced=False, timeout=120, headers=headers))
                assert warmed.ok, warmed.summary()
            yield srv
        finally:
            shutil.rmtree(srv.workdir, ignore_errors=True)


def warm(server: Server, audio: Audio) -> None:
    """Decode ``audio`` once on ``server`` (unpaced), so that the paced stream then takes a recognizer that has
    decoded it: a new one stalls on its first audio and spends ~4x the CPU on its first utterance."""
    warmed = asyncio.run(vosk_stream(server.ws, audio, paced=False, timeout=120))
    assert warmed.ok, warmed.summary()


#: How long a paced stream goes on after its block (the attack) has ended, so that what the attack left under
#: way on the server (a decoder stopping, memory given back) is heard beside it too; then it ends, not at its audio's end.
TAIL_S = 2.0


class PacedStream(Future[StreamResult]):
    """A paced stream's result, and its audio: what :func:`assert_strict` streams again for a baseline."""

    def __init__(self, audio: Audio) -> None:
        super().__init__()
        self.audio = audio


@contextmanager
def paced_stream(server: Server, audio: Audio, headers: dict[str, str] | None = None) -> Iterator[PacedStream]:
    """A ``/vosk`` stream of ``audio`` at 1x real time (``headers`` on its upgrade), in a thread of its own: the
    block begins once its first chunk is answered (it holds a decoder), and the stream ends :data:`TAIL_S` after
    the block (or at its audio's end, if sooner)."""
    result = PacedStream(audio)
    answered, stop = threading.Event(), threading.Event()

    def run() -> None:
        try:
            result.set_result(asyncio.run(vosk_stream(server.ws, audio, paced=True, timeout=60, headers=headers,
                                                      answered=answered, stop=stop)))
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            result.set_exception(exc)
        finally:
            answered.set()  # refused or failed: the block need not wait

    thread = threading.Thread(target=run, name="paced-stream", daemon=True)
    thread.start()
    assert answered.wait(60), "the paced stream's first chunk was not answered within 60 s"
    try:
        yield result
    finally:
        thread.join(TAIL_S)
        stop.set()
        thread.join(60)


def worst_wait(result: StreamResult) -> float:
    """The longest the stream waited: for a reply, behind real time, or for its final result."""
    return max(max(result.latencies, default=0.0), result.max_lag, result.final_latency)


def assert_strict(stream: PacedStream, audio_s: float) -> None:
    """The paced stream completed, every reply and its final result within 1 s; or, when it waited longer, no more
    than 1 s longer than the same stream (as long) waited then, on a fresh server with no attack beside it.

    A fixed 1 s measures the machine as much as the attack: a busy machine (CI's other workers) makes a stream lag
    with no attack at all. So the lag the attack may add is measured against a baseline: taken only when needed (it
    costs a server's start and the stream again), on a fresh server, so that what the attack left running on its own
    server cannot slow the baseline too. On a quiet machine the baseline waits far less than 1 s: the bound stays
    near 1 s."""
    got = stream.result(timeout=audio_s + 60)
    assert got.ok, got.summary()
    if got.strict:
        return
    block_s = max(0.0, got.audio_s - TAIL_S)
    with real_server_for(stream.audio) as fresh, paced_stream(fresh, stream.audio) as again:
        time.sleep(block_s)
    base = again.result(timeout=audio_s + 60)
    assert base.ok, f"the baseline stream failed: {base.summary()}"
    assert worst_wait(got) <= worst_wait(base) + STRICT_S, (
        f"beside the attack the stream waited up to {worst_wait(got):.2f} s; with no attack, then, {worst_wait(base):.2f} s: "
        f"more than {STRICT_S:g} s longer. {got.summary()}; baseline {base.summary()}")


def assert_real_time_but_starved(stream: PacedStream, audio_s: float, starved: Starved) -> None:
    """The paced stream completed, each of its waits (a reply, its lag behind real time, its final result) within
    :data:`~harness.clients.STRICT_S` but the time this process waited for a CPU meanwhile (``starved``, entered
    around the stream), for a server in this process (:class:`~tests.support.ServerThread`).

    Such a server, the clients beside the stream and the stream share this interpreter, so a stream on a fresh server
    process later (:func:`assert_strict`'s baseline) is no measure of it, and measures the machine at another moment: a
    busy machine's delays are taken out here from the same moments as the attack's."""
    got = stream.result(timeout=audio_s + 60)
    assert got.ok, got.summary()
    waits = sorted(((starved.unstarved(start, end), end - start) for start, end in got.waits), reverse=True)
    assert waits[0][0] <= STRICT_S, (f"beside the attack the stream waited {waits[0][1]:.2f} s, {waits[0][0]:.2f} s of it "
                                     f"not for a CPU: more than {STRICT_S:g} s. {got.summary()}")
