"""Media the tests make and read with PyAV (FFmpeg), each in a process of its own (:func:`in_child`), never in the
pytest worker.

FFmpeg's encoders run threads of their own in C (PyAV's ``thread_count`` is 0: automatic), and its muxers, demuxers
and decoders are C code outside what the tests check: a crash there in the pytest worker ends the whole worker, and
with it CI (stop 55's lost one in ``test_a_video_s_decoder_is_never_opened``, with no traceback). In a process of its
own it fails the one test that asked, with the child's exit status and its threads' tracebacks (``-X faulthandler``).

``python -X faulthandler -m tests.muxing`` is each worker's fork server: with PyAV, NumPy and the server's decoder
imported (one thread: ``OPENBLAS_NUM_THREADS=1``) and no FFmpeg code run, it reads requests from stdin (a function,
any module-level one, and its arguments, pickled) and forks a child for each, which runs it afresh; it answers on
stdout with the child's exit status, what it returned (pickled) and what it wrote to stderr. A child costs a fork, not
a Python start and its imports."""

from __future__ import annotations

import atexit
import io
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import av
import numpy as np

from harness.speech import read_wav

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")
_SIZE = struct.Struct("<Q")


def _send(pipe: IO[bytes], message: bytes) -> None:
    pipe.write(_SIZE.pack(len(message)) + message)
    pipe.flush()


def _receive(fd: int, size: int, deadline: float | None = None) -> bytes:
    """``size`` bytes read from ``fd`` by ``deadline`` (:func:`time.monotonic`'s; None: however long): EOFError at its
    end, TimeoutError past the deadline."""
    got = bytearray()
    while len(got) < size:
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not select.select([fd], [], [], wait)[0]:
            raise TimeoutError
        piece = os.read(fd, min(size - len(got), 1 << 20))
        if not piece:
            raise EOFError
        got += piece
    return bytes(got)


def _message(fd: int, deadline: float | None = None) -> bytes:
    """One message (its size, then its bytes) read from ``fd``: a request or an answer."""
    return _receive(fd, _SIZE.unpack(_receive(fd, _SIZE.size, deadline))[0], deadline)


class _ForkServer:
    """This worker's fork server (``python -X faulthandler -m tests.muxing``), started at its first request and again
    after it ended; in a session of its own, so that a request past its time ends it and its child together."""

    def __init__(self) -> None:
        self.lock, self.process = threading.Lock(), None
        atexit.register(self.stop)

    def ask(self, request: bytes, timeout: float) -> tuple[int, bytes, bytes]:
        """The exit status, stdout (pickled) and stderr of the child that ran ``request``."""
        with self.lock:
            if self.process is None or self.process.poll() is not None:
                self.process = subprocess.Popen([sys.executable, "-X", "faulthandler", "-m", "tests.muxing"], cwd=ROOT,
                                                env={**os.environ, "OPENBLAS_NUM_THREADS": "1"}, stdin=subprocess.PIPE,
                                                stdout=subprocess.PIPE, bufsize=0, start_new_session=True)
            assert self.process.stdin is not None and self.process.stdout is not None
            deadline, fd = time.monotonic() + timeout, self.process.stdout.fileno()
            try:
                _send(self.process.stdin, request)
                status, out, err = pickle.loads(_message(fd, deadline))
            except TimeoutError:
                self.stop()
                raise AssertionError(f"no answer from the fork server in {timeout} s: it and its child killed") from None
            except (OSError, EOFError):
                self.stop()
                raise AssertionError(f"the fork server ended with exit status {self.process.returncode} before it "
                                     "answered") from None
            return status, out, err

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


_SERVER = _ForkServer()


def in_child(function: Callable[..., T], *args: Any, timeout: float = 300) -> T:
    """``function(*args)`` run in a child of this worker's fork server, its result; a child that does not end well
    fails the test that asked (an AssertionError) with its exit status (the signal's name) and its stderr's end (its
    threads' tracebacks, for a crash)."""
    status, out, err = _SERVER.ask(pickle.dumps((function, args)), timeout)
    how = f"signal {signal.Signals(-status).name}" if status < 0 else f"exit status {status}"
    called = ", ".join(f"<{len(a)} bytes>" if isinstance(a, bytes | bytearray | memoryview) else f"{a!r:.100}" for a in args)
    assert status == 0, (f"{function.__module__}.{function.__qualname__}({called}) in a process of its own ended "
                         f"with {how}:\n{err.decode(errors='replace')[-4000:]}")
    result: T = pickle.loads(out)
    return result


def _serve() -> None:
    """The fork server's loop (the module's docstring), until stdin ends."""
    while True:
        try:
            request = _message(sys.stdin.fileno())
        except EOFError:  # the worker ended
            return
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            if (pid := os.fork()) == 0:
                os.dup2(err.fileno(), 1)  # nothing of the child's may reach the answers' pipe
                os.dup2(err.fileno(), 2)  # faulthandler's, and any exception's, traceback
                try:
                    function, args = pickle.loads(request)
                    pickle.dump(function(*args), out)
                    out.flush()
                    os._exit(0)
                except BaseException:  # noqa: BLE001 (whatever it was, said on stderr: the child never returns to the loop)
                    traceback.print_exc()
                    sys.stderr.flush()
                    os._exit(1)
            status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
            out.seek(0)
            err.seek(0)
            _send(sys.stdout.buffer, pickle.dumps((status, out.read(), err.read())))


def muxed(container: str, video: str | None = None, audio: str | None = None, rate: int = 16000) -> bytes:
    """A second of ``container`` (PyAV's name) holding ``video`` (64x48, 10 frames a second; 25 of MPEG-1 video, which has
    no slower rate) and ``audio`` (mono noise at ``rate``), each when given."""
    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as muxer:
        packets = []
        if video:
            fps = 25 if video == "mpeg1video" else 10
            picture = muxer.add_stream(video, rate=fps)
            picture.width, picture.height, picture.pix_fmt = 64, 48, "yuv420p"
            frames = [av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 10, np.uint8), format="rgb24") for i in range(fps)]
            packets += [packet for frame in [*frames, None] for packet in picture.encode(frame)]
        if audio:
            sound = muxer.add_stream(audio, rate=rate, layout="mono")
            noise = np.random.default_rng(7).integers(-3000, 3000, (1, rate), dtype=np.int16)
            frame = av.AudioFrame.from_ndarray(noise, format="s16", layout="mono")
            frame.sample_rate = rate
            packets += [*sound.encode(frame), *sound.encode(None)]
        for packet in packets:
            muxer.mux(packet)
    return buf.getvalue()


def encoded_wav(wav: Path, container: str, codec: str, rate: int | None = None, bit_rate: int | None = None,
            layout: str = "mono") -> bytes:
    """The 16-bit mono ``wav`` encoded with ``codec`` at ``rate`` Hz (None: the WAV's) and ``bit_rate`` (None: the
    encoder's) into ``container``, each of ``layout``'s channels its samples."""
    samples, source_rate, mono = read_wav(wav)
    assert mono == 1, (wav, mono)
    channels = av.AudioLayout(layout).nb_channels
    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as muxer:
        stream = muxer.add_stream(codec, rate=rate or source_rate, layout=layout)
        if bit_rate:
            stream.bit_rate = bit_rate
        frame = av.AudioFrame.from_ndarray(np.repeat(np.frombuffer(samples, "<i2"), channels).reshape(1, -1), format="s16", layout=layout)
        frame.sample_rate = source_rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            muxer.mux(packet)
    return buf.getvalue()


def pcm(path: Path) -> tuple[bytes, int]:
    """The mono 16-bit PCM and rate PyAV decodes ``path``'s first audio stream to, as the server's decoder does (the
    decoder it takes for that codec: :func:`speech_recognizer.ffmpeg_child.decoder`; FFmpeg's resampler to s16 mono at
    the first frame's rate)."""
    from speech_recognizer.ffmpeg_child import decoder

    out = bytearray()
    with av.open(str(path)) as demuxer:
        stream = demuxer.streams.audio[0]
        context, resampler = decoder(stream), None
        for frame in (frame for packet in demuxer.demux(stream) for frame in context.decode(packet)):
            resampler = resampler or av.AudioResampler(format="s16", layout="mono", rate=frame.sample_rate)
            for converted in resampler.resample(frame):
                out += bytes(converted.planes[0])[: 2 * converted.samples]
        assert resampler is not None
        for converted in resampler.resample(None):
            out += bytes(converted.planes[0])[: 2 * converted.samples]
        return bytes(out), resampler.rate


def remuxed(data: bytes, container: str, source: str | None = None, count: int = 1) -> bytes:
    """The packets of ``data``'s one audio stream (demuxed as ``source``: None, by its bytes) remuxed into ``container``,
    in each of ``count`` tracks alike."""
    with av.open(io.BytesIO(data), format=source) as demuxer:
        template = demuxer.streams.audio[0]
        packets = [packet for packet in demuxer.demux(template) if packet.size]
        buf = io.BytesIO()
        with av.open(buf, "w", format=container) as muxer:
            tracks = [muxer.add_stream_from_template(template) for _ in range(count)]
            for packet, track in ((p, t) for p in packets for t in tracks):
                copy = av.Packet(bytes(packet))
                copy.pts, copy.dts, copy.duration, copy.time_base = packet.pts, packet.dts, packet.duration, packet.time_base
                copy.stream = track
                muxer.mux(copy)
    return buf.getvalue()


def first_packet_sizes(heads: list[bytes], source: str) -> list[int]:
    """The size of the first packet FFmpeg's ``source`` demuxer reads from each of ``heads``."""
    sizes = []
    for head in heads:
        with av.open(io.BytesIO(head), format=source) as demuxer:
            sizes.append(next(iter(demuxer.demux(demuxer.streams.audio[0]))).size)
    return sizes


class _Read(io.BytesIO):
    """An input that keeps the furthest byte read of it (:attr:`furthest`)."""

    furthest = 0

    def read(self, size: int | None = -1) -> bytes:
        piece = super().read(size)
        self.furthest = max(self.furthest, self.tell())
        return piece


@dataclass
class Decoding:
    """What :func:`decoding` saw of the server's child decoding a file."""

    out: bytes = b""  #: what the child wrote
    refused: int | None = None  #: the exit status of its refusal (:class:`ffmpeg_child.Refused`), if it refused
    furthest: int = 0  #: the furthest byte of the file read
    opened: list[tuple[str, str | None]] = field(default_factory=list)  #: each stream's type and format, once open
    chosen: list[tuple[str, str]] = field(default_factory=list)  #: each stream's type and discard as the audio's decoding began
    said: list[str] = field(default_factory=list)  #: FFmpeg's log at the level asked and above


def decoding(name: str, data: bytes, max_seconds: float, level: int = av.logging.ERROR) -> Decoding:
    """The server's child's decoding (:func:`speech_recognizer.ffmpeg_child.decode`) of ``data`` as the format ``name``,
    watched: the container's streams once open (``av.open``'s), as the audio's decoding begins
    (``ffmpeg_child.decoder``'s), FFmpeg's log at ``level`` and above, how far the file was read."""
    from speech_recognizer import ffmpeg_child

    seen, open_container, chosen = Decoding(), av.open, ffmpeg_child.decoder

    def opening(*args: Any, **options: Any) -> Any:
        container = open_container(*args, **options)
        seen.opened += [(stream.type, stream.codec_context.format and stream.codec_context.format.name)
                        for stream in container.streams]
        return container

    def decoder(stream: Any) -> Any:
        seen.chosen += [(other.type, other.discard.name) for other in stream.container.streams]
        return chosen(stream)

    av.open, ffmpeg_child.decoder = opening, decoder  # for the one decoding this process runs before it ends
    read, out = _Read(data), io.BytesIO()
    av.logging.set_level(level)
    with av.logging.Capture(local=True) as said:
        try:
            ffmpeg_child.decode(name, read, max_seconds, False, out)
        except ffmpeg_child.Refused as refused:
            seen.refused = refused.status
    av.logging.set_level(None)
    seen.out, seen.furthest, seen.said = out.getvalue(), read.furthest, [message for _, _, message in said]
    return seen


if __name__ == "__main__":
    import tests.muxing  # noqa: F401 (imported once for every child: the functions asked for are this module's)
    from speech_recognizer import ffmpeg_child  # noqa: F401 (and pcm's and decoding's)

    _serve()
