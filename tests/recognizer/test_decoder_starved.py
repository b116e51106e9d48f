"""The FFmpeg decoder's child on a pod short of CPU (:meth:`speech_recognizer.ffmpeg.Decoding._wait`): a child that
is slow, using CPU but giving no block, is not stalled and decodes to the end; one that is stuck (no block and no CPU
used for ``STALL_SECONDS``) is killed, as is one the server has waited on ``wait_seconds`` in all.

The slowness is made, not hoped for (a busy loop beside the child, nice and pinning starved it too little on a quiet
machine, and a CPU-throttled cgroup needs root): the server's command for the child (``sys.executable``) is a script
that for a given time of clock uses a fifth of a CPU and gives nothing, as a child short of CPU does, then execs the
decoder's child itself, in the same process (its CPU time, read by the server, is that process's). The windows are
scaled down (``STALL_SECONDS`` 2 s, not 30). Run in a process of its own (:func:`tests.muxing.in_child`), never in the
pytest worker.
"""

from __future__ import annotations

import os
import shlex
import stat
import sys
import tempfile
import time
from pathlib import Path

import pytest

from speech_recognizer import ffmpeg
from speech_recognizer.audio import WEBM
from tests.muxing import in_child, muxed

#: The scaled-down stall window of these tests, in seconds.
STALL = 2.0
#: What the slow child runs first, for ``sys.argv[1]`` seconds of clock: 20 ms of its CPU, then 80 ms asleep, again;
#: then it execs the server's command for the child (``sys.argv[2:]``) with this Python.
_SLOW = """
import os, sys, time
until = time.monotonic() + float(sys.argv[1])
while time.monotonic() < until:
    burn = time.process_time() + 0.02
    while time.process_time() < burn:
        pass
    time.sleep(0.08)
os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
"""


def decoded(data: bytes | None, slow: float = 0.0, wait_per_cpu: float | None = None) -> tuple[str, float]:
    """How the decoding of the WebM ``data`` at ``MaxAudioSeconds`` 10 ended ("200" and its PCM's bytes, or the failure's
    status and reason) and the seconds it took, with :data:`STALL` as ``STALL_SECONDS`` (and ``wait_per_cpu``, when
    given, as ``WAIT_PER_CPU_SECOND``); ``slow``: the child uses CPU and gives nothing for that many seconds of clock
    before it decodes. ``data`` None: an input that never ends (a pipe held open, which the child reads whole first:
    it blocks, using no CPU)."""
    ffmpeg.STALL_SECONDS = STALL
    if wait_per_cpu is not None:
        ffmpeg.WAIT_PER_CPU_SECOND = wait_per_cpu
    read, write = os.pipe()
    with tempfile.TemporaryDirectory() as folder:
        if slow:
            script = Path(folder, "slow-child")
            script.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -c {shlex.quote(_SLOW)} {slow!r} \"$@\"\n")
            script.chmod(script.stat().st_mode | stat.S_IXUSR)
            sys.executable = str(script)  # this process's alone: it ends with the test
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


@pytest.fixture(scope="module")
def webm() -> bytes:
    """A second of Opus noise in WebM."""
    return in_child(muxed, "webm", None, "libopus", 48000)


@pytest.fixture(scope="module")
def whole(webm: bytes) -> str:
    """What the decoding of :func:`webm` says, its child not slowed: "200" and its PCM's bytes."""
    said, _ = in_child(decoded, webm)
    assert said.startswith("200 ") and int(said.split()[1]) > 0, said
    return said


def test_a_decoder_using_cpu_slowly_is_not_stalled(webm: bytes, whole: str) -> None:
    """A child that uses CPU but gives its first block only after one and a half stall windows decodes the whole
    second, as one not slowed. Before, the clock alone was watched: it was killed after ``STALL_SECONDS``, a 502
    (``decoder_failed``) for an upload the server would have served."""
    said, seconds = in_child(decoded, webm, 1.5 * STALL)
    assert said == whole, (said, seconds)
    assert seconds >= 1.5 * STALL, f"not slowed: decoded in {seconds:.1f} s"


def test_a_stuck_decoder_is_killed(webm: bytes) -> None:
    """A child blocked on its input (no block, no CPU used) is killed within two windows of its start."""
    said, seconds = in_child(decoded, None)
    assert said == f"502 decoding the WebM audio stopped: no audio for {STALL:g} s, and no CPU used (the decoder's " \
                   "limit)", said
    assert STALL <= seconds < 3 * STALL + 5, seconds


def test_the_server_waits_on_a_slow_decoder_its_limit_in_all(webm: bytes) -> None:
    """A child that uses CPU however slowly is waited on ``wait_seconds`` in all (``WAIT_PER_CPU_SECOND`` 0.25 here:
    2.75 s for the 11 s of CPU of MaxAudioSeconds 10: a stall window, its CPU grown, then 0.75 s), then killed: the
    502 says so, within a second of it (a last window not cut at the ceiling would end a whole one later). Slowed for
    5 s past that, a child not killed then decodes to its end (no 502). Before, the only bound of clock was
    ``STALL_SECONDS`` without a block, however much the child worked."""
    said, seconds = in_child(decoded, webm, 2.75 + 5, 0.25)
    assert said == "502 decoding the WebM audio stopped: it took more than 2.75 s (the decoder's limit)", (said, seconds)
    assert 2.75 <= seconds < 2.75 + 1, seconds
