"""A raw USP client with a phrase held for the segmentation silence, for the tests of each way its turn can end.

The turn (conversation mode, segmentation silence :data:`~tests.conftest.LONG_PAUSE_MS`) gets the first sentence of
``long_pauses_wav`` and 1.5 s of the silence after it: the decoder ends its phrase (after about 0.5 s), and the
server holds it, since more speech could follow within 2 s. Whatever then ends the turn, the phrase must come first.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from harness.usp import client_audio_frame, client_text_frame
from speech_recognizer.usp.frames import Message, parse_text

from ..conftest import LONG_PAUSE_MS
from ..support import Reference, read_wav
from .sdk import assert_same, expected, spans

CONVERSATION = "/speech/recognition/conversation/cognitiveservices/v1?language=ko-KR"
#: Seconds of the silence after the first sentence's last word that are sent: more than the decoder's own end of
#: utterance, less than the segmentation silence.
PAUSE_SENT = 1.5


def first_sentence_held(ws: ClientConnection, long_pauses_wav: Path, long_pauses_ref: Reference) -> str:
    """Open a turn on ``ws`` and send it the first sentence and :data:`PAUSE_SENT` s after it (not the end of the
    audio); its request id."""
    first = long_pauses_ref.phrases[0]
    pcm, rate, _ = read_wav(long_pauses_wav)
    pcm = pcm[: int((first.words[-1].end + PAUSE_SENT) * rate) * 2]
    request_id = uuid.uuid4().hex
    source = {"type": "Stream", "samplerate": str(rate), "bitspersample": "16", "channelcount": "1"}
    ws.send(client_text_frame("speech.config", None, {"context": {"audio": {"source": source}}}))
    segmentation = {"segmentation": {"segmentationSilenceTimeoutMs": LONG_PAUSE_MS}}
    ws.send(client_text_frame("speech.context", request_id, {"phraseDetection": {"language": "ko-KR", "CONVERSATION": segmentation}}))
    for i in range(0, len(pcm), 3200):
        ws.send(client_audio_frame(request_id, pcm[i : i + 3200]))
    return request_id


def until_close(ws: ClientConnection, timeout: float = 30) -> tuple[list[Message], int | None, str]:
    """Every message until the server closes: the messages, the close code and its reason."""
    messages: list[Message] = []
    try:
        while True:
            data = ws.recv(timeout=timeout)
            if isinstance(data, str):
                messages.append(parse_text(data))
    except ConnectionClosed as closed:
        rcvd = closed.rcvd
        return messages, (rcvd.code if rcvd else None), (rcvd.reason if rcvd else "")


def assert_held_phrase_first(messages: list[Message], long_pauses_ref: Reference, then: list[str]) -> None:
    """The messages after the hypotheses: the first sentence's phrase (in-process Vosk's words and times), then the
    ``RecognitionStatus`` values ``then`` names (the end of the turn)."""
    phrases = [m.json() for m in messages if m.path == "speech.phrase"]
    statuses = [p["RecognitionStatus"] for p in phrases]
    assert statuses == ["Success", *then], ([m.path for m in messages], phrases)
    assert_same(spans(phrases[:1]), [expected(long_pauses_ref.phrases[0])])
