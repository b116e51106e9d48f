"""What one upload of the largest size the limits allow costs in memory while it is read, parsed and decoded.

At the decoder cap every decoder can hold such an upload at once (tests/operator/test_pods_run.py runs a pod so,
in its cgroup with the emitted memory limit): each copy of a body one of them holds is that many copies of 23 MB
more against the limit. Each test runs one step in-process under ``tracemalloc`` (Python's allocations: the
bodies and their copies are Python objects) on :func:`tests.support.widest_wav`'s body: 60 s of 48 kHz stereo
32-bit PCM, the widest audio a body may carry. Unit tests: no server, no model.
"""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.requests import Request

from speech_recognizer.audio import decode
from speech_recognizer.openai_compat import parse_form
from speech_recognizer.rest import read_body
from tests.support import widest_wav

BOUNDARY = "body-memory"


@pytest.fixture(scope="module")
def body() -> bytes:
    return widest_wav()


def peak_of(step: Callable[[], Any]) -> tuple[Any, int]:
    """What ``step()`` returned, and the most memory Python held at once while it ran, above what it held before."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        out = step()
        return out, tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


def request(body: bytes, content_type: str) -> Request:
    """A request whose body arrives as uvicorn hands it over, in 64 KiB messages."""
    pieces: Iterator[bytes] = (body[i : i + 65536] for i in range(0, len(body), 65536))

    async def receive() -> dict[str, Any]:
        piece = next(pieces, b"")
        return {"type": "http.request", "body": piece, "more_body": bool(piece)}

    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    return Request({"type": "http", "method": "POST", "path": "/", "headers": headers, "query_string": b""}, receive)


def test_reading_a_body_keeps_one_copy_of_it(body: bytes) -> None:
    """The body read is the buffer it was read into: it was copied into ``bytes`` at the end, two copies at once."""
    async def read() -> bool:  # compared here: the buffer itself, handed out of asyncio.run, counted 9 times over
        return await read_body(request(body, "audio/wav"), len(body) + 1, wav_seconds=60) == body

    same, peak = peak_of(lambda: asyncio.run(read()))
    assert same
    assert peak < 1.5 * len(body), f"{peak / 1e6:.1f} MB held to read a {len(body) / 1e6:.1f} MB body"


def test_decoding_a_body_makes_no_copy_of_it(body: bytes) -> None:
    """Decoding reads the body where it is (its PCM comes out at 48 kHz mono, a quarter of it, and is kept, with one
    1 MiB block): it went to libsndfile through ``io.BytesIO``, which copies a memoryview, and so the whole body."""
    held = bytearray(body)  # as read_body returns it
    audio, peak = peak_of(lambda: decode(held, "audio/wav", max_seconds=60))
    assert (audio.sample_rate, audio.channels, len(audio.pcm)) == (48000, 1, 60 * 48000 * 2)
    assert peak < len(body), f"{peak / 1e6:.1f} MB held to decode a {len(body) / 1e6:.1f} MB body"


def test_parsing_a_form_keeps_no_copy_of_its_file_in_memory(body: bytes) -> None:
    """The OpenAI route's form: its file part goes to the spooled file piece by piece. Handed the body whole, the
    parser cut the file's part out of it as one copy, and the spooled file took that whole in memory before it went
    to disk: two copies of the body beside it."""
    form_body = bytearray(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n--{BOUNDARY}\r\n'
        f'Content-Disposition: form-data; name="file"; filename="widest.wav"\r\nContent-Type: audio/wav\r\n\r\n'.encode()
        + body + f"\r\n--{BOUNDARY}--\r\n".encode())

    async def parse() -> bytes:
        form = await parse_form(request(b"", f"multipart/form-data; boundary={BOUNDARY}"), form_body)
        try:
            upload = form["file"]
            assert form["model"] == "whisper-1" and not isinstance(upload, str)
            return await upload.read(16)
        finally:
            await form.close()

    head, peak = peak_of(lambda: asyncio.run(parse()))
    assert head == body[:16]
    assert peak < len(body) / 4, f"{peak / 1e6:.1f} MB held to parse a form of a {len(body) / 1e6:.1f} MB file"
