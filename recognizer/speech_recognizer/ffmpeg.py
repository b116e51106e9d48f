"""WebM, MP4, raw AAC, raw AMR and MPEG-PS audio decoded by FFmpeg (PyAV) in a child process, so that a crash in it ends
one request, not the server.

FFmpeg is a large decoder surface to feed what clients send: each WebM/MKV (Opus, Vorbis, AAC), MP4/M4A/MOV/3GP (AAC, ALAC,
AMR), AAC (ADTS), AMR (AMR-NB, AMR-WB) or MPEG program stream (MP2, MP3) is decoded by its own ``python -m speech_recognizer.ffmpeg_child`` (:mod:`speech_recognizer.ffmpeg_child`), which opens
only the demuxer and the decoders that container is served with, under limits of its own: address space
(:data:`MEMORY_BYTES`, and twice an input it holds), CPU time (:func:`cpu_seconds`), no file written, and time
(:meth:`Decoding._wait`): stalled, it gives no block and uses no CPU for :data:`STALL_SECONDS`; one that uses CPU however
slowly (a pod short of CPU) is let go on, up to :func:`wait_seconds` waited in all. It stops as soon as the audio decoded passes the length limit (a
decompression bomb costs the limit's worth of decoding), and the server reads no more than that from it either.

Its end is a failure of the one table (:mod:`speech_recognizer.errors`): not audio of its format, cut short or
corrupt: :data:`~speech_recognizer.errors.BAD_AUDIO`; no audio stream of a served codec (a video alone):
:data:`~speech_recognizer.errors.UNSUPPORTED_MEDIA`; too long: :data:`~speech_recognizer.errors.TOO_LARGE`; past a
limit of CPU, memory or time, killed by a signal (a crash) or ended otherwise:
:data:`~speech_recognizer.errors.DECODER_FAILED`, its stderr logged on one line.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from . import ffmpeg_child as child
from .contract import AudioFormat
from .errors import BAD_AUDIO, DECODER_FAILED, TOO_LARGE, UNSUPPORTED_MEDIA, Failure, Kind, one_line

log = logging.getLogger("speech_recognizer.ffmpeg")

#: The child's address space besides an input it holds (twice its size): Python, PyAV and FFmpeg's libraries mapped.
MEMORY_BYTES = 512 << 20
#: The longest the child may give no block of audio AND use no CPU (clock), in seconds: it is stuck, not starved.
STALL_SECONDS = 30.0
#: Seconds of clock the server waits on the child for each second of its CPU limit, in all: the child gets a tenth of a
#: CPU at the least before a pod short of CPU has it killed.
WAIT_PER_CPU_SECOND = 10.0
#: Bytes read from the child at once.
_BLOCK_BYTES = 1 << 20
#: The most of the child's stderr kept for its log line.
_STDERR_BYTES = 4096
#: The package's folder's parent, for the child's ``sys.path`` (the server may run from a source tree).
_ROOT = str(Path(__file__).resolve().parents[1])
#: What each exit status of the child is answered as.
_REFUSALS: dict[int, Kind] = {child.NOT_AUDIO: BAD_AUDIO, child.UNSUPPORTED: UNSUPPORTED_MEDIA, child.LIMIT: DECODER_FAILED}


class Ended(Failure):
    """The child's decoding ended short of the audio's end: its :attr:`kind` and reason (:data:`TOO_LARGE`: the audio
    passed the length limit, which :mod:`speech_recognizer.audio` words)."""


def cpu_seconds(max_seconds: float) -> int:
    """The child's CPU time for audio of at most ``max_seconds``: 10 s, and a second for each 10 s of audio."""
    return 10 + int(max_seconds // 10)


def wait_seconds(max_seconds: float) -> float:
    """The most clock the server waits on the child decoding audio of at most ``max_seconds``, in all: its CPU limit's
    :data:`WAIT_PER_CPU_SECOND` times (a client's worst wait for its audio's decoding)."""
    return WAIT_PER_CPU_SECOND * cpu_seconds(max_seconds)


def _cpu_ticks(pid: int) -> int | None:
    """The CPU time (user and system, all its threads) process ``pid`` has used, in clock ticks; None once it is gone.
    Read from /proc by hand: psutil, which reads the same line, is no dependency of the server."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[11]) + int(fields[12])  # utime, stime: the stat line's 14th and 15th fields


class Decoding:
    """A child decoding one input (:func:`start`): its :attr:`sample_rate`, then its mono 16-bit PCM by :meth:`blocks`."""

    def __init__(self, fmt: AudioFormat, source: bytes | bytearray | BinaryIO, max_seconds: float, cut: bool) -> None:
        self.fmt, self.max_seconds, self.cut = fmt, max_seconds, cut
        held = len(source) if isinstance(source, (bytes, bytearray)) else 0
        stdin = source if not isinstance(source, (bytes, bytearray)) else subprocess.PIPE
        self.cpu = cpu_seconds(max_seconds)
        args = [fmt.name, repr(float(max_seconds)), "1" if cut else "0", str(self.cpu), str(MEMORY_BYTES + 2 * held)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (_ROOT, os.environ.get("PYTHONPATH"))))}
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", child.__name__, *args], stdin=stdin,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, close_fds=True, bufsize=0)
        self.stalled: str | None = None  # why the child was killed for time: the reason its failure gives
        self.waited = 0.0  # seconds of clock the server waited on the child
        self.wait_limit = wait_seconds(max_seconds)
        self.stderr = bytearray()
        self._threads = [threading.Thread(target=self._keep_stderr, daemon=True)]
        if isinstance(source, (bytes, bytearray)):
            self._threads.append(threading.Thread(target=self._feed, args=(source,), daemon=True))
        for thread in self._threads:
            thread.start()
        self.limit = 0
        try:
            head = self._read(4)
            if len(head) < 4:  # the child gives its rate at once, in one write
                raise self._ended() or Ended(f"the {fmt.name} file holds no audio", BAD_AUDIO)
            self.sample_rate = int.from_bytes(head, "little")
            self.limit = 2 * int(max_seconds * self.sample_rate)
        except BaseException:
            self.close()
            raise

    def _feed(self, data: bytes | bytearray) -> None:
        """Write the input to the child's stdin and close it (a child that ended or was killed reads no more)."""
        stdin = self.process.stdin
        assert stdin is not None
        view = memoryview(data)
        try:
            while view:
                view = view[stdin.write(view[:_BLOCK_BYTES]) or 0 :]
        except (BrokenPipeError, ValueError, OSError):
            pass
        finally:
            try:
                stdin.close()
            except BrokenPipeError:
                pass

    def _keep_stderr(self) -> None:
        """Read the child's stderr to its end, keeping its last :data:`_STDERR_BYTES`."""
        stderr = self.process.stderr
        assert stderr is not None
        while piece := stderr.read(_STDERR_BYTES):
            self.stderr += piece
            del self.stderr[:-_STDERR_BYTES]

    def _wait(self, done: Callable[[float], bool]) -> bool:
        """Wait on the child until ``done(seconds)`` (waits at most that long) is true; False once it was killed for
        time: it used no CPU for :data:`STALL_SECONDS` (stuck: blocked, deadlocked, stopped), or the server has waited
        :attr:`wait_limit` on it in all. A child short of CPU (a starved pod) is not stalled: it goes on as long as
        its CPU time grows, its CPU limit (RLIMIT_CPU) bounding its work."""
        ticks = _cpu_ticks(self.process.pid)
        while True:
            window = min(STALL_SECONDS, self.wait_limit - self.waited)
            began = time.monotonic()
            ready = done(max(window, 0.0))
            self.waited += time.monotonic() - began
            if ready:
                return True
            if self.waited >= self.wait_limit:
                self.stalled = f"it took more than {self.wait_limit:g} s (the decoder's limit)"
                break
            if (now := _cpu_ticks(self.process.pid)) is None or now == ticks:
                self.stalled = f"no audio for {STALL_SECONDS:g} s, and no CPU used (the decoder's limit)"
                break
            ticks = now
        self.process.kill()
        return False

    def _read(self, size: int) -> bytes:
        """Up to ``size`` bytes of the child's stdout (b"": its end, or its kill for time: :meth:`_wait`)."""
        stdout = self.process.stdout
        assert stdout is not None
        if not self._wait(lambda seconds: bool(select.select([stdout], [], [], seconds)[0])):
            return b""
        return stdout.read(size) or b""

    def _exited(self, seconds: float) -> bool:
        """Whether the child has ended, waiting at most ``seconds`` for it."""
        try:
            self.process.wait(seconds)
        except subprocess.TimeoutExpired:
            return False
        return True

    def blocks(self) -> Iterator[bytes]:
        """Its PCM as the child gives it, up to the limit (past it: the 413, or with ``cut`` the end); the child's
        refusal or crash raised as its failure. The child is ended however the blocks end."""
        taken, carry = 0, b""
        try:
            while piece := self._read(_BLOCK_BYTES):
                piece = carry + piece  # a pipe's read may end inside a sample: blocks are whole samples
                whole = len(piece) - len(piece) % 2
                piece, carry = piece[:whole], piece[whole:]
                if taken + len(piece) > self.limit:  # the child stops there itself: this is the server's own bound
                    if not self.cut:
                        raise Ended("too long", TOO_LARGE)
                    piece = piece[: self.limit - taken]
                taken += len(piece)
                if piece:
                    yield piece
                if taken >= self.limit and self.cut:
                    return
            if (failure := self._ended()) is not None:
                raise failure
        finally:
            self.close()

    def _ended(self) -> Ended | None:
        """The failure the child's end says (None: it decoded all), once it has ended; its stderr logged when it
        did not end on its own terms."""
        if self.stalled is None:  # else it was killed: it ends at once
            self._wait(self._exited)
        status = self.process.wait()
        for thread in self._threads:
            thread.join(1.0)
        text = self.stderr.decode("utf-8", "replace").strip()
        said, reason = one_line(text, _STDERR_BYTES), one_line(text.rsplit("\n", 1)[-1])
        if status == 0:
            return None
        if status == child.TOO_LONG:
            return Ended("too long", TOO_LARGE)
        if status in _REFUSALS:
            return Ended(reason, _REFUSALS[status])
        seconds = time.monotonic() - self.started
        log.warning("the %s decoder (pid %d) ended with %s after %.1f s; its stderr: %s", self.fmt.name, self.process.pid,
                    _status(status), seconds, said or "(nothing)")
        if self.stalled:
            return Ended(f"decoding the {self.fmt.name} audio stopped: {self.stalled}", DECODER_FAILED)
        if status == -signal.SIGXCPU:
            return Ended(f"decoding the {self.fmt.name} audio took more than {self.cpu} s of CPU (the decoder's "
                              "limit)", DECODER_FAILED)
        return Ended(f"the {self.fmt.name} decoder (FFmpeg, in a process of its own) failed on this audio: "
                          f"{_status(status)}; nothing else was affected", DECODER_FAILED)

    def close(self) -> None:
        """End the child if it has not ended, and collect it."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


def _status(status: int) -> str:
    """A child's exit status in words: "signal SIGSEGV", "exit status 1"."""
    if status < 0:
        try:
            return f"signal {signal.Signals(-status).name}"
        except ValueError:
            return f"signal {-status}"
    return f"exit status {status}"


def start(fmt: AudioFormat, source: bytes | bytearray | BinaryIO, max_seconds: float, cut: bool = False) -> Decoding:
    """A child decoding ``source`` (the whole input, or a regular file it reads from its start) as ``fmt``, once it has
    given its sample rate; refused (:class:`Ended`) when it gives none."""
    return Decoding(fmt, source, max_seconds, cut)
