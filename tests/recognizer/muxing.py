"""Short synthetic media made with PyAV for the container tests (tests/recognizer/test_ffmpeg_formats.py).

``python -m tests.recognizer.muxing CONTAINER VIDEO AUDIO RATE`` writes :func:`muxed`'s bytes to stdout (``-`` for no
video or no audio): the tests encode video in a process of their own this way (:func:`test_ffmpeg_formats._muxed`)."""

from __future__ import annotations

import io
import sys

import av
import numpy as np


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


if __name__ == "__main__":
    container, video, audio, rate = sys.argv[1:5]
    sys.stdout.buffer.write(muxed(container, None if video == "-" else video, None if audio == "-" else audio, int(rate)))
