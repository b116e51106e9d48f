"""The FFmpeg decoder's child process: one WebM, MP4 or raw AAC (ADTS) upload on stdin, its audio as mono 16-bit PCM on stdout.

    python -m speech_recognizer.ffmpeg_child FORMAT MAX_SECONDS CUT CPU_SECONDS MEMORY_BYTES

Run by :mod:`speech_recognizer.ffmpeg` only, so that a crash of FFmpeg (a large decoder surface fed what clients send)
ends this process and not the server's. It limits itself before it imports PyAV (address space, CPU time, no file
written, no core), opens the input with the one demuxer ``FORMAT`` names and decodes its first audio stream only if
its codec is one that container is served with (:data:`CODECS`): no probing, nothing else FFmpeg knows is opened.

stdout: the sample rate (4 bytes, little-endian) once the first frame is decoded, then mono 16-bit little-endian PCM
at that rate (PyAV's resampler converts format and channels, and the rate of any later frame that differs). Decoding
stops as soon as the audio passes ``MAX_SECONDS``: with ``CUT`` 1 it ends there, else it exits :data:`TOO_LONG`.
Any other refusal: the exit status (:data:`NOT_AUDIO`, :data:`UNSUPPORTED`, :data:`LIMIT`) and the reason on
stderr's last line. stdin: a regular file is read where it is (seeked to its start); a pipe is read whole first (an
MP4's index may come last).
"""

from __future__ import annotations

import io
import resource
import sys
from typing import Any, BinaryIO

#: Exit statuses: the input is not audio of the format named (or is cut or corrupt) ...
NOT_AUDIO = 65
#: ... it holds no audio stream of a codec served in that container ...
UNSUPPORTED = 66
#: ... its audio is longer than ``MAX_SECONDS`` ...
TOO_LONG = 67
#: ... decoding it needed more memory than ``MEMORY_BYTES``.
LIMIT = 68
#: How much shorter than its header says audio may decode before it is called cut short (a codec's priming and
#: padding, a last frame's rounding).
CUT_SLACK_SECONDS = 0.1
#: The FFmpeg demuxer (its short name) and the decoders served in each container (by :attr:`AudioFormat.name`).
DEMUXERS = {"WebM": "webm", "MP4": "mp4", "AAC": "aac"}
CODECS = {"WebM": frozenset({"opus", "vorbis", "aac"}), "MP4": frozenset({"aac", "alac"}), "AAC": frozenset({"aac"})}
#: Containers whose headers give no length: FFmpeg's is a guess from the bit rate, so none is held against the audio.
UNTIMED = frozenset({"AAC"})


def set_limits(cpu_seconds: int, memory_bytes: int) -> None:
    """This process's limits: ``memory_bytes`` of address space, ``cpu_seconds`` of CPU (then SIGXCPU ends it),
    no file written (stdout and stderr are pipes), no core dump."""
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def source(stdin: BinaryIO) -> BinaryIO:
    """The input, seekable: stdin itself when it is a regular file (from its start), else all it gives, held."""
    if stdin.seekable():
        stdin.seek(0)
        return stdin
    return io.BytesIO(stdin.read())


class Refused(Exception):
    """Why the input is not decoded; :attr:`status` is the exit status that says so."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def decode(name: str, data: BinaryIO, max_seconds: float, cut: bool, out: BinaryIO) -> None:
    """Decode the ``name`` container (:data:`DEMUXERS`) read from ``data`` to ``out`` (the module's stdout protocol)."""
    import av

    try:
        container: Any = av.open(data, format=DEMUXERS[name])
    except MemoryError:
        raise Refused(LIMIT, f"reading the {name} container needed more memory than the decoder's limit") from None
    except (av.FFmpegError, ValueError, EOFError) as exc:
        raise Refused(NOT_AUDIO, f"the {name} container cannot be read: {_said(exc)}") from None
    with container:
        streams = [s for s in container.streams if s.type == "audio"]
        if not streams:
            kinds = sorted({s.type for s in container.streams}) or ["nothing"]
            raise Refused(UNSUPPORTED, f"the {name} file holds no audio ({' and '.join(kinds)} only)")
        stream = streams[0]
        codec = stream.codec_context.name
        if codec not in CODECS[name]:
            *others, last = sorted(CODECS[name])
            served = f"{', '.join(others)} or {last}" if others else last
            raise Refused(UNSUPPORTED, f"the {name} file's audio is {stream.codec_context.codec.long_name or codec}, not {served}")
        _write(container, stream, name, max_seconds, cut, out)


def _write(container: Any, stream: Any, name: str, max_seconds: float, cut: bool, out: BinaryIO) -> None:
    """Decode ``stream`` of ``container`` to ``out``: the rate, then PCM, up to ``max_seconds``."""
    import av

    resampler: Any = None
    written = limit = 0
    try:
        for packet in container.demux(stream):
            for frame in packet.decode():
                if resampler is None:
                    rate = frame.sample_rate
                    resampler, limit = av.AudioResampler(format="s16", layout="mono", rate=rate), int(max_seconds * rate)
                    out.write(rate.to_bytes(4, "little"))
                for converted in resampler.resample(frame):
                    written = _emit(converted, written, limit, cut, out)
        if resampler is not None:
            for converted in resampler.resample(None):
                written = _emit(converted, written, limit, cut, out)
    except _Done:
        return
    except MemoryError:
        raise Refused(LIMIT, f"decoding the {name} audio needed more memory than the decoder's limit") from None
    except (av.FFmpegError, ValueError, EOFError) as exc:
        raise Refused(NOT_AUDIO, f"the {name} audio is corrupt or cut short: {_said(exc)}") from None
    if resampler is None:
        raise Refused(NOT_AUDIO, f"the {name} file's audio stream holds no audio that can be decoded")
    declared = None if name in UNTIMED else _declared(container, stream)
    if declared is not None and written / resampler.rate < declared - CUT_SLACK_SECONDS:
        raise Refused(NOT_AUDIO, f"the {name} audio is cut short: it ends at {written / resampler.rate:.1f} s of the "
                                 f"{declared:.1f} s its header gives")


def _declared(container: Any, stream: Any) -> float | None:
    """The seconds the audio stream's header (else the container's) says it lasts; None when neither says (a WebM
    a browser's MediaRecorder writes, as it goes, has no length: one cut short is not told from a whole one)."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    return container.duration / 1_000_000 if container.duration else None


class _Done(Exception):
    """The audio was cut at the limit (``CUT``): nothing more is decoded."""


def _emit(frame: Any, written: int, limit: int, cut: bool, out: BinaryIO) -> int:
    """Write ``frame``'s samples (mono s16) to ``out``; the samples written so far, or past ``limit`` the end."""
    samples = frame.samples
    if written + samples > limit:
        if not cut:
            raise Refused(TOO_LONG, "too long")
        out.write(bytes(frame.planes[0])[: 2 * (limit - written)])
        raise _Done
    out.write(bytes(frame.planes[0])[: 2 * samples])
    return written + samples


def _said(exc: BaseException) -> str:
    """What FFmpeg said (its message without PyAV's errno and file name), on one line."""
    text = getattr(exc, "strerror", None) or str(exc)
    return " ".join(str(text).split())[:200] or type(exc).__name__


def main(argv: list[str]) -> int:
    name, max_seconds, cut, cpu_seconds, memory_bytes = argv
    set_limits(int(cpu_seconds), int(memory_bytes))
    try:
        decode(name, source(sys.stdin.buffer), float(max_seconds), cut == "1", sys.stdout.buffer)
        sys.stdout.buffer.flush()
    except Refused as refused:
        print(refused, file=sys.stderr)
        return refused.status
    except MemoryError:
        print("decoding needed more memory than the decoder's limit", file=sys.stderr)
        return LIMIT
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
