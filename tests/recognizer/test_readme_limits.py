"""The numbers of README's Limits table, routes and prose that are no setting, read back against the constants that hold them.

A setting's default quoted anywhere is checked by tests/recognizer/test_settings.py; these are the server's fixed
bounds the README states in prose (the keep-alive, the lingering close, the requests pipelined parsed at once, a connection's send buffer, the request ids a Speech SDK connection
remembers, a vosk config's alternatives, the preStop pause, the decoding block, the recognizers' clock, the chunks
read ahead, the pings, the dead peer's timeout, a media file's tracks, an ALAC frame's samples, a media file's headers' CPU time, the FFmpeg decoder's stall and wait), and the query parameters the logs redact. Each phrase must still be found,
and each number in it is the constant's; the boxes it names of an MP4's tables are the ones the decoder's check reads.
"""

from __future__ import annotations

import io
import re

import pytest

import speech_recognizer.logs
from speech_recognizer import audio, contract, ffmpeg, ffmpeg_child, frame_budget, recognition, serving, session, vosk_ws
from speech_recognizer.http_limits import HttpLimits
from speech_recognizer.settings import declared
from speech_recognizer.usp.frames import RequestIds
from tests.doc_tables import README, one_line

pytestmark = pytest.mark.unit  # no model, server, operator or browser: the quick run (README, Tests)

#: A phrase of the README with a number in it -> the value that number is (in the phrase's unit).
FACTS = {
    r"\| an idle kept-alive HTTP connection \| (\d+) s between two requests": serving.KEEPALIVE_SECONDS,
    r"an idle kept-alive connection is closed after (\d+) s, as the recognizer's": serving.KEEPALIVE_SECONDS,
    r"read and dropped \((\d+) s at most\)": HttpLimits.linger_seconds,
    r"\| requests pipelined on one connection \| (\d+) parsed at a time": HttpLimits.max_pipelined,
    r"\| a connection's answers its client does not read \| (\d+) KiB of kernel send buffer": serving.SEND_BUFFER_BYTES / 1024,
    r"remembers its last (\d+) finished request ids": RequestIds.REMEMBERED,
    r"`max_alternatives` at most (\d+)": vosk_ws.MAX_ALTERNATIVES,
    r"\| `GET /pre-stop` \| answers after (\d+) s": contract.PRE_STOP_SECONDS,
    r"\(`GET /pre-stop`\) holds it (\d+) s": contract.PRE_STOP_SECONDS,
    r"and one (\d+) MiB block": audio._BLOCK_BYTES / (1 << 20),
    r"moves to another recognizer at the first utterance end after (\d+) minutes": recognition.RECYCLE_AUDIO_SECONDS / 60,
    r"retires from the pool after (\d+) minutes of clock": recognition.MAX_WARM_CLOCK_SECONDS / 60,
    r"the WebSocket routes read up to (\d+) chunks ahead": session.READ_AHEAD,
    r"A client that reads no replies is held back after (\d+) chunks": session.READ_AHEAD,
    r"the server pings every WebSocket client every (\d+) s": serving.PING_INTERVAL_SECONDS,
    r"at most (\d+) pings or pongs at once": frame_budget.CONTROL_BURST,
    r"pings or pongs at once and (\d+) a second beyond": frame_budget.CONTROL_PER_SECOND,
    r"each second the server holds reading a client \(its read-ahead full, its model loading\) allows (\d+) more": frame_budget.HELD_PER_SECOND,
    r"at most (\d+) fragments in one message": frame_budget.MAX_FRAGMENTS,
    r"what the server reads is parsed (\d+) KiB at a time": frame_budget.FEED_BYTES >> 10,
    r"the kernel drops its connection after (\d+) s \(`TCP_USER_TIMEOUT`": serving.DEAD_PEER_SECONDS,
    r"A WebM, MP4 or MPEG-PS of more than (\d+) tracks \(streams\) is a 415": ffmpeg_child.MAX_STREAMS,
    r"ALAC declaring frames of more than (\d+) samples": ffmpeg_child.ALAC_MAX_FRAME_SAMPLES,
    r"A file whose headers take more than (\d+) s of the decoder's CPU time": ffmpeg_child.OPEN_CPU_SECONDS,
    r"killed when stuck: no block of audio and no CPU used for (\d+) s": ffmpeg.STALL_SECONDS,
    r"stuck: no block and no CPU used for (\d+) s; or waited on": ffmpeg.STALL_SECONDS,
    r"The server waits on it (\d+) times its CPU time in all at most": ffmpeg.WAIT_PER_CPU_SECOND,
    r"or waited on (\d+) times its CPU time in all\)": ffmpeg.WAIT_PER_CPU_SECOND,
    r"a client waits at most (\d+) s for its upload's decoding at the default": ffmpeg.wait_seconds(declared("max_audio_seconds").default),
    r"An MP4 whose sample tables declare more than (\d+) samples": ffmpeg_child.MP4_MAX_ENTRIES,
    r"for a longer `MaxAudioSeconds`, (\d+) for each second": ffmpeg_child.MP4_ENTRIES_PER_SECOND,
    r"holds FFmpeg's index of them, (\d+) bytes each": ffmpeg_child._MP4_ENTRY_BYTES,
    r"or that has more than (\d+) boxes \(atoms": ffmpeg_child.MP4_MAX_BOXES,
    r"Ogg/Vorbis whose identification or setup header is more than (\d+) MB": audio.VORBIS_SETUP_MAX_BYTES >> 20,
    r"its headers read from at most (\d+) pages": audio._OGG_HEADER_PAGES,
    r"codebooks that would take more than (\d+) MB to decode": audio.VORBIS_CODEBOOKS_MAX_BYTES >> 20,
}
#: The query parameters the logs redact, as README, Keys, names them: every one the log filter matches.
SECRET_WORDS = r"whose name holds (.*?), and the `ApiKey` itself"
#: Where README, media limits, says an MP4's sample tables are counted (boxes the check walks into, as FFmpeg's demuxer
#: reads them), and which sample descriptions holding which boxes are refused, and why.
MP4_PLACES = r"the tables are counted wherever FFmpeg's demuxer reads them, a track's (.*?) too\)"
MP4_DESCRIBED = r"whose sample description \((.*?)\) holds a sample table or handler \((.*?) \.\.\.: .*?, and (.*?)\)"


@pytest.mark.parametrize(("phrase", "value"), FACTS.items(), ids=list(FACTS))
def test_readme_states_the_servers_fixed_bounds(phrase: str, value: float) -> None:
    said = re.findall(phrase, one_line(README.read_text()))
    assert said, f"README no longer says {phrase!r}: update FACTS with what it says now"
    assert all(float(n) == value for n in said), f"README says {said} for {phrase!r}; the server has {value:g}"


def test_readme_names_the_query_parameters_the_logs_redact() -> None:
    said = re.search(SECRET_WORDS, one_line(README.read_text()))
    assert said, "README, Keys, no longer says which query parameters are redacted"
    words = re.search(r"\(\?:([a-z|]+)\)", speech_recognizer.logs._SECRET_PARAMETER.pattern)
    named, redacted = set(re.findall(r"`(\w+)`", said.group(1))), set(words.group(1).split("|")) if words else set()
    assert named == redacted, f"README, Keys, names {sorted(named)}; the logs redact names holding {sorted(redacted)}"


def test_readme_names_the_mp4_boxes_the_decoders_check_reads() -> None:
    """README's boxes of an MP4's tables: each place it says they are counted is walked into
    (ffmpeg_child._MP4_CONTAINERS), its sample descriptions are the ones looked through (_MP4_SCANNED), each box it says
    is refused there is one found (_MP4_FOUND), and the refusal's reason gives README's why."""
    text = one_line(README.read_text())
    places, described = re.search(MP4_PLACES, text), re.search(MP4_DESCRIBED, text)
    assert places and described, "README no longer says where an MP4's tables are counted, or which are refused where"
    walked = {kind.decode() for kind in ffmpeg_child._MP4_CONTAINERS}
    named = set(re.findall(r"`(\w+)`", places.group(1)))
    assert named and named <= walked, f"README counts tables in {sorted(named)}; the check walks into {sorted(walked)}"
    scanned = {kind.decode() for kind in ffmpeg_child._MP4_SCANNED}
    assert set(re.findall(r"`(\w+)`", described.group(1))) == scanned, (described.group(1), sorted(scanned))
    refused = re.findall(r"`(\w+)`", described.group(2))
    assert refused and all(ffmpeg_child._MP4_FOUND.fullmatch(kind.encode()) for kind in refused), refused
    stsd = bytes(8) + (16).to_bytes(4, "big") + b"stts" + bytes(8)  # its version, flags and count, then a table
    with pytest.raises(ffmpeg_child.Refused) as reason:
        ffmpeg_child._mp4_described(io.BytesIO(stsd), b"stsd", 0, len(stsd))
    assert described.group(3) in str(reason.value), (described.group(3), str(reason.value))
