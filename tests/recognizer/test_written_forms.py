"""The model's marked tokens in every result form: ``[9]`` is shown as ``9`` wherever a person reads the text (the
numbers several tokens spell: tests/recognizer/test_numbers.py), the unknown word not at all; ``Lexical`` and the ``Words`` keep the model's spelling; ``/vosk`` sends Vosk's words as
they are, unless its config asks ``"written": 1`` as the demo page does (docs/engine.md, "Result forms and the
model's marked tokens")."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import httpx
import pytest
import srt
from websockets.sync.client import connect

from speech_recognizer.errors import BadValue
from speech_recognizer.model_graph import FST_MAGIC, HAS_ISYMBOLS, HAS_OSYMBOLS, SYMBOLS_MAGIC
from speech_recognizer.models import LoadedModel
from speech_recognizer.openai_compat import answer as openai_answer
from speech_recognizer.results import OutputFormat, Profanity, display, hypothesis_json, lexical, phrase_json, written
from speech_recognizer.subtitles import cues
from speech_recognizer.transcript import Alternative, Phrase, Word
from speech_recognizer.vosk_ws import VoskConfig, final_json

from ..conftest import CHUNK
from ..support import Reference, ServerThread, read_wav
from .test_vosk_ws import stream

REST = "/speech/recognition/conversation/cognitiveservices/v1"
BRACKETS = re.compile(r"[\[\](){}<>]")


# ---- the rendering, alone -----------------------------------------------------------------------------------

@pytest.mark.unit
@pytest.mark.parametrize(("token", "shown"), [
    ("[9]", "9"), ("[09]", "09"), ("[99]", "99"), ("[공]", "0"), ("[쩜]", "쩜"), ("(백)", "100"), ("{만}", "만"),
    ("<UNK>", ""), ("<SPOKEN_NOISE>", ""), ("[unk]", ""), ("!SIL", ""), ("<eps>", ""), ("#0", ""), ("</s>", ""),
    ("오후", "오후"), ("ABC", "ABC"), ("9", "9"), ("[]", "[]"), ("[[9]]", "[[9]]"), ("㎏", "㎏"),
])
def test_a_token_is_written_without_its_brackets_and_a_marker_not_at_all(token: str, shown: str) -> None:
    assert written(token) == shown
    assert written(shown) == shown or not shown, "a written word written again is the same word"


@pytest.mark.unit
def test_a_dropped_marker_leaves_one_space_and_every_form_its_own_spelling() -> None:
    text = "<UNK> 오후 [9] <SPOKEN_NOISE> 시 [공] (백) {만} [쩜]"
    assert written(text) == "오후 9시 0 100만 쩜"
    assert lexical(text) == "오후 [9] 시 [공] (백) {만} [쩜]"
    assert written("<UNK>") == lexical("<UNK>") == ""


def _phrase() -> Phrase:
    words = (Word("<UNK>", 0.1, 0.3, 0.5), Word("오후", 0.3, 0.6, 1.0), Word("[9]", 0.6, 0.9, 0.8), Word("시", 0.9, 1.2, 0.9))
    return Phrase((Alternative(" ".join(w.text for w in words), 0.8, words),), 0.1, 1.2)


@pytest.mark.unit
def test_azure_forms_show_the_number_lexical_and_words_keep_the_models_spelling_at_their_times() -> None:
    body = phrase_json(_phrase(), OutputFormat.DETAILED, Profanity.MASKED, word_timings=True)
    best = body["NBest"][0]
    assert body["DisplayText"] == best["Display"] == "오후 9시."
    assert best["ITN"] == best["MaskedITN"] == "오후 9시"
    assert best["Lexical"] == "오후 [9] 시"
    assert [(w["Word"], w["Offset"], w["Duration"]) for w in best["Words"]] == [
        ("오후", 3_000_000, 3_000_000), ("[9]", 6_000_000, 3_000_000), ("시", 9_000_000, 3_000_000)], "the marker's entry dropped, no time moved"
    assert (body["Offset"], body["Duration"]) == (1_000_000, 11_000_000), "the phrase's span is the decoder's"
    assert hypothesis_json("오후 [9] <UNK>", 0.0, 1.0, Profanity.MASKED)["Text"] == "오후 9"


@pytest.mark.unit
def test_subtitles_and_openai_forms_show_the_number() -> None:
    phrase = _phrase()
    found = cues([phrase])
    assert [(c.start, c.end, c.text) for c in found] == [(0.3, 1.3, "오후 9시")], "from the first word, held to 1 s"
    body = json.loads(openai_answer([phrase], "verbose_json", {"segment", "word"}, "ko-KR", 1.2).body)
    assert body["text"] == body["segments"][0]["text"] == "오후 9시"
    assert body["words"] == [{"word": "오후", "start": 0.3, "end": 0.6}, {"word": "9시", "start": 0.6, "end": 1.2}]
    assert openai_answer([phrase], "text", set(), "ko-KR", 1.2).body.decode() == "오후 9시\n"


@pytest.mark.unit
def test_vosk_sends_vosks_words_unless_its_config_asks_for_them_written() -> None:
    phrase = _phrase()
    assert final_json(phrase, 0, True) == {"text": "<UNK> 오후 [9] 시", "result": [
        {"conf": w.confidence, "end": w.end, "start": w.start, "word": w.text} for w in phrase.words]}, "as vosk-server sends it"
    assert final_json(phrase, 0, True, True) == {"text": "오후 9시", "result": [
        {"conf": 1.0, "end": 0.6, "start": 0.3, "word": "오후"}, {"conf": 0.8, "end": 1.2, "start": 0.6, "word": "9시"}]}, \
        "the marker's entry dropped, no other word's time moved, the number with its counter one entry over both"
    assert final_json(phrase, 2, False, True) == {"alternatives": [{"confidence": 0.8, "text": "오후 9시"}]}
    assert final_json(phrase, 2, True, True)["alternatives"][0]["result"][1] == {"end": 1.2, "start": 0.6, "word": "9시"}
    assert final_json(phrase, 2, False) == {"alternatives": [{"confidence": 0.8, "text": "<UNK> 오후 [9] 시"}]}
    config = VoskConfig(16000)
    assert config.written is False, "vosk-server clients, who never send it, get Vosk's words"
    config.update({"written": 1})
    assert config.written is True
    config.update({"written": "0"})
    assert config.written is False
    with pytest.raises(BadValue, match="bad config"):
        config.update({"written": "yes"})


# ---- the real model ------------------------------------------------------------------------------------------

def output_words(path: Path) -> list[str]:
    """The words of an OpenFst FST's output symbol table (Vosk's word list: ``Gr.fst``), read from its binary
    header as :mod:`speech_recognizer.model_graph` knows it."""
    buf = path.read_bytes()

    def string(pos: int) -> tuple[bytes, int]:
        (size,) = struct.unpack_from("<i", buf, pos)
        return buf[pos + 4:pos + 4 + size], pos + 4 + size

    def table(pos: int) -> tuple[list[str], int]:
        assert struct.unpack_from("<i", buf, pos)[0] == SYMBOLS_MAGIC
        _, pos = string(pos + 4)  # its name
        (count,) = struct.unpack_from("<q", buf, pos + 8)  # after the available key
        pos, words = pos + 16, []
        for _ in range(count):
            word, pos = string(pos)
            words.append(word.decode())
            pos += 8  # its key
        return words, pos

    assert struct.unpack_from("<i", buf, 0)[0] == FST_MAGIC
    _, pos = string(4)  # the FST type
    _, pos = string(pos)  # the arc type
    (flags,) = struct.unpack_from("<i", buf, pos + 4)  # after the version
    pos += 40  # version, flags, properties, start state, states, arcs
    assert flags & HAS_OSYMBOLS
    if flags & HAS_ISYMBOLS:
        _, pos = table(pos)
    return table(pos)[0]


#: What the ko-KR model's word table holds besides words (read from its graph/Gr.fst, 503,352 entries).
NUMBER_TOKENS = ([f"[{n}]" for n in range(100)] + [f"[0{n}]" for n in range(10)]
                 + [f"[{w}]" for w in "공구사삼영오육이일쩜칠팔"] + ["(십)", "(백)", "(천)", "{만}", "{억}", "{조}"])
NO_WORDS = ["<eps>", "!SIL", "<SPOKEN_NOISE>", "<UNK>", "#0", "<s>", "</s>"]


def test_the_ko_models_marked_tokens_are_written_without_their_brackets_and_its_markers_not_at_all(model: LoadedModel) -> None:
    vocabulary = output_words(model.path / "graph" / "Gr.fst")
    marked = [w for w in vocabulary if BRACKETS.search(w)]
    assert sorted(marked) == sorted(NUMBER_TOKENS + [w for w in NO_WORDS if BRACKETS.search(w)]), "the tokens docs/engine.md lists"
    assert set(NO_WORDS) <= set(vocabulary)
    assert [w for w in NO_WORDS if written(w)] == []
    alone = {"[공]": "0", "[영]": "0", "[일]": "1", "[이]": "2", "[삼]": "3", "[사]": "4", "[오]": "5", "[육]": "6",
             "[칠]": "7", "[팔]": "8", "[구]": "9", "[쩜]": "쩜", "(십)": "10", "(백)": "100", "(천)": "1000"}
    assert {w: written(w) for w in NUMBER_TOKENS} == {w: alone.get(w, w[1:-1]) for w in NUMBER_TOKENS}, \
        "each alone: a number as its numeral, a unit or the point as its word"
    assert [w for w in vocabulary if w not in NO_WORDS and BRACKETS.search(written(w))] == []


def test_a_number_the_model_heard_reaches_every_display_form_as_a_number_and_vosk_clients_as_vosk_said_it(
        server: ServerThread, speech_wav: Path, speech_ref: Reference) -> None:
    """The quick start's sentence: the model hears a ``[9]`` in it. Before, every form showed ``[9]``."""
    said = speech_ref.texts[0]
    assert any(w in NUMBER_TOKENS for w in said.split()), f"the recording gives no number token: {said!r}"
    shown = written(said)
    assert not BRACKETS.search(shown), shown
    body = speech_wav.read_bytes()
    detailed = httpx.post(f"{server.http}{REST}", params={"language": "ko-KR", "format": "detailed", "wordLevelTimestamps": "true"},
                          content=body, headers={"Content-Type": "audio/wav"}, timeout=60).json()
    best = detailed["NBest"][0]
    assert (detailed["DisplayText"], best["Display"], best["ITN"], best["MaskedITN"]) == (display(shown), display(shown), shown, shown)
    assert best["Lexical"] == said and [w["Word"] for w in best["Words"]] == said.split(), "the model's spelling"

    subtitles = httpx.post(f"{server.http}{REST}", params={"language": "ko-KR", "format": "srt"}, content=body,
                           headers={"Content-Type": "audio/wav"}, timeout=60).text
    assert [c.content for c in srt.parse(subtitles)] == [shown]
    openai = httpx.post(f"{server.http}/v1/audio/transcriptions", files={"file": ("a.wav", body)},
                        data={"response_format": "verbose_json", "timestamp_granularities[]": "word"}, timeout=60).json()
    assert openai["text"] == shown and [w["word"] for w in openai["words"]] == shown.split()

    pcm, rate, _ = read_wav(speech_wav)
    finals = stream(f"{server.ws}/vosk?language=ko-KR", pcm, CHUNK, {"sample_rate": rate, "words": True})
    assert [(f["text"], [w["word"] for w in f["result"]]) for f in finals if f.get("text")] == [(said, said.split())], \
        "vosk-server sends Vosk's words as they are"


def frames(url: str, pcm: bytes, config: dict) -> list[str]:
    """Every reply /vosk sends, as sent (the text of each frame): one per chunk of ``pcm``, then eof's."""
    with connect(url) as ws:
        ws.send(json.dumps({"config": config}))
        sent = []
        for i in range(0, len(pcm), CHUNK):
            ws.send(pcm[i : i + CHUNK])
            sent.append(ws.recv())
        ws.send('{"eof" : 1}')
        sent.append(ws.recv())
    return [str(frame) for frame in sent]


def test_vosk_writes_its_replies_for_people_when_its_config_asks_and_sends_vosks_words_as_before_when_not(
        server: ServerThread, speech_wav: Path, speech_ref: Reference) -> None:
    """The demo page's ``"written": 1``: each reply is the one a vosk-server client gets, every text as
    results.written writes it. Without it, the frames are what they were: Vosk's ``[9]``, no new member."""
    said = speech_ref.texts[0]
    assert written(said) != said, f"the recording gives no marked token: {said!r}"
    pcm, rate, _ = read_wav(speech_wav)
    url = f"{server.ws}/vosk?language=ko-KR"
    as_said = frames(url, pcm, {"sample_rate": rate, "words": 0})
    for_people = frames(url, pcm, {"sample_rate": rate, "words": 0, "written": 1})

    replies = [json.loads(frame) for frame in as_said]
    assert all(list(reply) in (["partial"], ["text"]) for reply in replies), replies
    assert [frame for frame, reply in zip(as_said, replies, strict=True) if reply.get("text")] == [f'{{"text": "{said}"}}'], \
        "a vosk-server client's final frame, byte for byte"
    assert any(BRACKETS.search(reply.get("partial", "")) for reply in replies), "partials as Vosk said them too"

    expected = [json.dumps({key: written(text) for key, text in reply.items()}, ensure_ascii=False) for reply in replies]
    assert for_people == expected
    assert not any(BRACKETS.search(text) for frame in for_people for text in json.loads(frame).values()), for_people
