"""The FFmpeg decoder's child on a pod short of CPU (:meth:`speech_recognizer.ffmpeg.Decoding._wait`): a child that
is slow because it waits for a CPU is not stalled and decodes to the end; one that is stuck (no block and no CPU used
for ``STALL_SECONDS``) is killed, as is one the server has waited on ``wait_seconds`` in all.

Starved as a pod at its CPU limit starves it: pinned to one CPU beside a busy loop, at nice 12 (about a fifteenth of
that CPU, less beside another process there). The windows are scaled down (``STALL_SECONDS`` 2 s, not 30) so that a
start of the child (Python, PyAV: a few tenths of a second of CPU) starved takes several windows. Run in a process
of its own (:func:`tests.muxing.in_child`), never in the pytest worker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from speech_recognizer import ffmpeg
from speech_recognizer.audio import WEBM
from tests.muxing import in_child, muxed

#: The scaled-down stall window of these tests, in seconds.
STALL = 2.0


def decoded(data: bytes | None, starve: bool, wait_per_cpu: float | None = None) -> tuple[str, float]:
    """How the decoding of the WebM ``data`` at ``MaxAudioSeconds`` 10 ended ("200" and its PCM's bytes, or the failure's
    status and reason) and the seconds it took, with :data:`STALL` as ``STALL_SECONDS`` (and ``wait_per_cpu``, when
    given, as ``WAIT_PER_CPU_SECOND``); ``starve``: this process and
    the child pinned to one CPU beside a busy loop, at nice 12. ``data`` None: an input that never ends (a pipe held
    open, which the child reads whole first: it blocks, using no CPU)."""
    ffmpeg.STALL_SECONDS = STALL
    if wait_per_cpu is not None:
        ffmpeg.WAIT_PER_CPU_SECOND = wait_per_cpu
    busy = None
    if starve:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # nice 0, on that CPU (inherited)
        os.nice(12)
    read, write = os.pipe()
    try:
        began = time.monotonic()
        try:
            source = data if data is not None else os.fdopen(read, "rb", closefd=False)
            said = f"200 {sum(len(block) for block in ffmpeg.start(WEBM, source, 10).blocks())}"
        except ffmpeg.Ended as ended:
            said = f"{ended.kind.http} {ended}"
        return said, time.monotonic() - began
    finally:
        os.close(read)
        os.close(write)
        if busy is not None:
            busy.send_signal(signal.SIGKILL)
            busy.wait()


@pytest.fixture(scope="module")
def webm() -> bytes:
    """A second of Opus noise in WebM."""
    return in_child(muxed, "webm", None, "libopus", 48000)


def test_a_decoder_waiting_for_cpu_is_not_stalled_one_stuck_is_killed(webm: bytes) -> None:
    """Starved, the child gives its first block only after several stall windows, using CPU in each: it decodes the
    whole second, as unstarved. Before, the clock alone was watched: it was killed after ``STALL_SECONDS``, a 502
    (``decoder_failed``) for an upload the server would have served. A child blocked on its input (no CPU used) is
    still killed, within two windows of its start."""
    whole, _ = in_child(decoded, webm, False)
    assert whole.startswith("200 ") and int(whole.split()[1]) > 0, whole
    said, seconds = in_child(decoded, webm, True)
    assert said == whole, (said, seconds)
    assert seconds > STALL, f"not starved: decoded in {seconds:.1f} s, within one window"
    said, seconds = in_child(decoded, None, False)
    assert said == f"502 decoding the WebM audio stopped: no audio for {STALL:g} s, and no CPU used (the decoder's " \
                   "limit)", said
    assert STALL <= seconds < 3 * STALL + 5, seconds


def test_the_server_waits_on_a_starved_decoder_its_limit_in_all(webm: bytes) -> None:
    """A child that uses CPU however slowly is waited on ``wait_seconds`` in all (``WAIT_PER_CPU_SECOND`` 0.25 here:
    2.75 s for the 11 s of CPU of MaxAudioSeconds 10), then killed: the 502 says so. Before, the only bound of
    clock was ``STALL_SECONDS`` without a block, however much the child worked."""
    said, seconds = in_child(decoded, webm, True, 0.25)
    assert said == "502 decoding the WebM audio stopped: it took more than 2.75 s (the decoder's limit)", (said, seconds)
    assert 2.75 <= seconds < 2.75 + STALL + 5, seconds
