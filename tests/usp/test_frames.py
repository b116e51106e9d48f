"""Frame parsing and writing, RIFF headers, turn options: pure functions."""

from __future__ import annotations

import struct

import pytest

from harness.usp import binary_frame
from speech_recognizer.audio import WavFormat
from speech_recognizer.errors import BadValue
from speech_recognizer.results import Profanity, apply_profanity, ticks
from speech_recognizer.usp.connection import replay_origin, split_header
from speech_recognizer.usp.frames import FrameError, parse_binary, parse_text, text_frame
from speech_recognizer.usp.options import Options, audio_format, continuation_offset

pytestmark = pytest.mark.unit  # no model, server, operator or browser: the quick run (README, Tests)


def riff(rate: int = 16000, channels: int = 1, bits: int = 16, tag: int = 1) -> bytes:
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * channels * bits // 8, channels * bits // 8, bits)
    return b"RIFF\0\0\0\0WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data\0\0\0\0"


@pytest.mark.parametrize(
    "text",
    [
        "Path:speech.context\r\nX-RequestId:abc\r\n\r\n{}",
        "path: speech.context\nx-requestid: abc\n\n{}",
        "PATH :speech.context\r\nX-REQUESTID:  abc  \n\r\n{}",
    ],
)
def test_text_headers_are_parsed_leniently(text: str) -> None:
    msg = parse_text(text)
    assert (msg.path, msg.request_id, msg.body, msg.binary) == ("speech.context", "abc", "{}", False)


def test_text_body_keeps_blank_lines_after_the_first() -> None:
    assert parse_text("Path:x\r\n\r\na\r\n\r\nb").body == "a\r\n\r\nb"


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("Path:speech.context", 1007),  # no blank line
        ("no colon here\r\n\r\n{}", 1007),
        ("X-RequestId:abc\r\n\r\n{}", 1002),  # no Path
        ("Path:\r\n\r\n", 1002),
        ("Path:x\r\nX-Big:" + "a" * 9000 + "\r\n\r\n", 1007),
    ],
)
def test_bad_text_frames(text: str, code: int) -> None:
    with pytest.raises(FrameError) as err:
        parse_text(text)
    assert err.value.code == code


def test_binary_frame_round_trip() -> None:
    data = binary_frame({"Path": "audio", "X-RequestId": "r1", "X-StreamId": "1"}, b"\x01\x02")
    msg = parse_binary(data)
    assert (msg.path, msg.request_id, msg.headers["x-streamid"], msg.body, msg.binary) == ("audio", "r1", "1", b"\x01\x02", True)
    assert int.from_bytes(data[:2], "big") == len("Path:audio\r\nX-RequestId:r1\r\nX-StreamId:1\r\n")


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"\x00", 1007),
        (b"\x00\x50Path:audio\r\n", 1007),  # header length beyond the frame
        (b"\x00\x04\xff\xfe\xfd\xfc", 1007),  # not ASCII
        (binary_frame({"Path": "audio"}, b"\0" * 8193), 1007),
        (binary_frame({"X-RequestId": "r"}, b""), 1002),
        ((9000).to_bytes(2, "big") + b"a" * 9000, 1007),
    ],
)
def test_bad_binary_frames(data: bytes, code: int) -> None:
    with pytest.raises(FrameError) as err:
        parse_binary(data)
    assert err.value.code == code


def test_server_text_frame_headers() -> None:
    msg = parse_text(text_frame("speech.phrase", "r9", {"DisplayText": "안녕"}))
    assert msg.path == "speech.phrase" and msg.request_id == "r9"
    assert msg.headers["content-type"] == "application/json; charset=utf-8"
    assert msg.headers["x-timestamp"].endswith("Z") and msg.json() == {"DisplayText": "안녕"}


def test_riff_header_gives_the_format_and_the_rest_is_pcm() -> None:
    assert split_header(riff(8000, 2) + b"\1\2\3\4") == (WavFormat(1, 2, 8000, 16), b"\1\2\3\4")
    assert split_header(riff(8000, 2)) == (WavFormat(1, 2, 8000, 16), b"")
    assert split_header(b"\0\0\1\1") is None


@pytest.mark.parametrize(
    "header",
    [riff(bits=8), riff(tag=3, bits=32), riff(rate=1000), riff(channels=0), b"RIFF\0\0\0\0WAVEfmt ", b"RIFF\0\0\0\0WAVX"],
)
def test_unusable_riff_headers(header: bytes) -> None:
    with pytest.raises(FrameError) as err:
        split_header(header)
    assert err.value.code == 1007


def test_format_from_speech_config() -> None:
    cfg = {"context": {"audio": {"source": {"samplerate": "8000", "channelcount": "2"}}}}
    assert audio_format(cfg) == WavFormat(1, 2, 8000, 16)
    assert audio_format({}) == audio_format({"context": {"audio": {"source": {"samplerate": "x"}}}}) == WavFormat(1, 1, 16000, 16)


def test_options_from_query_then_context() -> None:
    opts = Options.from_query("interactive", {"language": "ko-kr", "format": "detailed", "profanity": "raw"})
    assert (opts.language, opts.detailed, opts.word_timings, opts.profanity, opts.continuous) == ("ko-kr", True, False, "raw", False)
    ctx = {
        "phraseDetection": {"language": "de-DE", "enrichment": {"profanity": "removed"}},
        "phraseOutput": {"format": "Detailed", "detailed": {"options": ["WordTimings", "WordConfidence"]}},
        "continuation": {"audio": {"streams": {"1": {"offset": "24576875"}}}},
    }
    later = Options.from_query("dictation", {}).with_context(ctx)
    assert (later.language, later.profanity, later.detailed, later.word_timings, later.word_confidence) == (
        "de-DE", "removed", True, True, True,
    )
    assert later.continuous and later.resume_at == pytest.approx(2.4576875)
    assert Options.from_query("conversation", {"wordLevelTimestamps": "true"}).word_timings


def test_continuation_offset_absent_is_zero_malformed_is_a_bad_value() -> None:
    assert continuation_offset({"audio": {"streams": {"1": None}}}) == 0.0
    assert continuation_offset({"continuation": {"audio": {"streams": {"1": {"offset": "25000000"}}}}}) == 2.5
    for bad in ("x", "-5", "1.5", "1" + "0" * 400, 10**400, float("inf")):
        with pytest.raises(BadValue, match="continuation offset"):
            continuation_offset({"continuation": {"audio": {"streams": {"1": {"offset": bad}}}}})


def test_replay_origin_matches_the_sdks_millisecond_replay() -> None:
    # The SDK acknowledged 2.4576875 s and replays from 2.457 s: 0.6875 ms before the turn's zero.
    assert replay_origin(2.4576875) == pytest.approx(-0.0006875)
    assert replay_origin(0.0) == 0.0
    assert ticks(-0.001) == 0 and ticks(1.5) == 15_000_000


def test_profanity_modes() -> None:
    assert apply_profanity("you shit head", Profanity.MASKED) == "you **** head"
    assert apply_profanity("you shit head", Profanity.REMOVED) == "you head"
    assert apply_profanity("you shit head", Profanity.RAW) == "you shit head"
    assert apply_profanity("안녕하세요 병신", Profanity.MASKED) == "안녕하세요 **"
    assert Options.from_query("conversation", {"profanity": "bogus"}).profanity is Profanity.MASKED


def test_a_connection_remembers_a_bounded_number_of_request_ids() -> None:
    """Issue 16, item 7: every finished request id was remembered (60,000 turns of 8 KB ids: +465 MB)."""
    import tracemalloc

    from speech_recognizer.usp.frames import RequestIds

    ids = RequestIds()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(5000):
            ids.retire(f"{n:08d}" + "x" * 8000)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(ids) == RequestIds.REMEMBERED and held < 64 * 1024, held
    recent = f"{4999:08d}" + "x" * 8000
    assert ids.finished(recent)
    with pytest.raises(FrameError) as err:
        ids.check_new(recent)
    assert err.value.code == 1002 and len(err.value.message) < 100
    ids.check_new(f"{0:08d}" + "x" * 8000)  # long forgotten: a new turn
