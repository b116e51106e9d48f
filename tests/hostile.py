"""Helpers for the tests of hostile input: a real server process, its peak memory, and a paced stream beside.

Each hostile test runs ``python -m speech_recognizer`` in a subprocess (the
way a pod runs it: its memory is the server's alone, and the client's work does
not share the server's interpreter), and checks that a
normal stream, paced at 1x real time over ``/vosk`` while the attack runs,
stays strictly real time (:attr:`harness.clients.StreamResult.strict`: every
reply and the final result within 1 s), or, on a machine too busy for that
(:func:`assert_strict`), that each of its waits is within 1 s but the time the
server and this process waited for a CPU in it, measured in the same moments
(:class:`~tests.support.Starved`; the server is this process's child). Beside a
server in the test's own process, the same (:func:`assert_real_time_but_starved`).
"""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import ExitStack, contextmanager

from harness.clients import STRICT_S, StreamResult, vosk_stream
from harness.loopback import Loopback
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
    """A paced stream's result, and the waits for a CPU of this process and its children (a server in a subprocess)
    while it ran: what :func:`assert_strict` takes out of its waits."""

    def __init__(self, starved: Starved) -> None:
        super().__init__()
        self.starved = starved


@contextmanager
def paced_stream(server: Loopback, audio: Audio, headers: dict[str, str] | None = None,
                 starved: Starved | None = None) -> Iterator[PacedStream]:
    """A ``/vosk`` stream of ``audio`` at 1x real time (``headers`` on its upgrade), in a thread of its own: the
    block begins once its first chunk is answered (it holds a decoder), and the stream ends :data:`TAIL_S` after
    the block (or at its audio's end, if sooner). Its waits for a CPU are measured by ``starved`` (entered by the
    caller around it), else by a :class:`~tests.support.Starved` of its own around the stream."""
    with ExitStack() as stack:
        result = PacedStream(starved or stack.enter_context(Starved()))
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


def assert_strict(stream: PacedStream, audio_s: float) -> None:
    """The paced stream completed, every reply and its final result within 1 s; or, when it waited longer, each wait
    within 1 s but the time this process and its children (the server) waited for a CPU in it
    (:func:`assert_real_time_but_starved`, with the stream's own :class:`~tests.support.Starved`).

    A fixed 1 s measures the machine as much as the attack: a busy machine (CI's other workers) makes a stream lag with
    no attack at all. So the waits for a CPU are taken out, measured in the same moments as the attack's: a stream on a
    fresh server later (the baseline this used to take) measured another moment of a machine whose load comes and goes
    (CI at load 20-28: 2.16 s beside a bomb against less than 1.16 s then). A stall of the server's own (its event loop
    blocked, busy or asleep, a lock held) is no wait for a CPU and counts in full."""
    got = stream.result(timeout=audio_s + 60)
    assert got.ok, got.summary()
    if not got.strict:
        assert_real_time_but_starved(stream, audio_s, stream.starved)


def assert_real_time_but_starved(stream: PacedStream, audio_s: float, starved: Starved) -> None:
    """The paced stream completed, and each of its waits within :data:`~harness.clients.STRICT_S` but the time this
    process and its children waited for a CPU meanwhile (``starved``, entered around the stream; its unstarved time):
    each reply from its chunk's sending, the final result from the end of audio, and the lag behind real time of each
    reply on the unstarved clock (from the stream's start). For a server in this process
    (:class:`~tests.support.ServerThread`), whose clients beside the stream share its interpreter, or in a subprocess
    (:func:`assert_strict`). A busy machine's delays are taken out from the same moments as the attack's.

    The lag is the unstarved time since the stream began less the audio answered, not the unstarved time since each
    chunk was due: a stream a starved machine put behind real time sends each chunk late, and the time since it was due
    holds the work on every chunk before it (the stream's own and the attack's alike), which grows with the stream
    (beside hypothesis at load 20: 88 s behind, 22.7 s of it unstarved). A stall of the server's own (its event loop
    blocked, busy or asleep, a lock held) is no wait for a CPU: it counts in full in the reply awaited meanwhile."""
    got = stream.result(timeout=audio_s + 60)
    assert got.ok, got.summary()
    *chunks, (eof, final) = got.waits
    assert len(chunks) == len(got.latencies), (len(chunks), len(got.latencies))
    begun = since = chunks[0][0]
    waits, elapsed = [(starved.unstarved(eof, final), final - eof, "the final result")], 0.0
    for (due, replied), latency in zip(chunks, got.latencies, strict=True):
        elapsed, since = elapsed + starved.unstarved(since, replied), replied  # summed: each stretch walked once
        waits.append((starved.unstarved(replied - latency, replied), latency, f"the reply at {due - begun:.1f} s"))
        waits.append((elapsed - (due - begun), replied - due, f"the lag at {due - begun:.1f} s"))
    unstarved, clock, what = max(waits)
    assert unstarved <= STRICT_S, (f"beside the attack the stream waited {clock:.2f} s for {what}, {unstarved:.2f} s of it "
                                   f"not for a CPU: more than {STRICT_S:g} s. {got.summary()}")
