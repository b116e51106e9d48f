"""Hostile multipart forms on OpenAI's ``POST /v1/audio/transcriptions``: whatever a client sends, a
status of the failure table (README, Errors) with a reason in OpenAI's error shape, in bounded time,
with no traceback in the server's log; a form that is whole and right is transcribed, and one that is
cut short, or says a thing twice, is refused, never answered as if its lost part had not been sent.

Each request is written on a socket by hand, so that its Content-Length may lie: a good form (the
file, the fields OpenAI's clients send, in any order, the language after a 1 MiB file too) with
hypothesis' choice of mutations (a boundary wrong, missing or twice, parts without
Content-Disposition, fields twice, names and values of binary or non-UTF-8 bytes or over the field
limit, the file not audio, empty or a nested form, LF line endings, a body cut, a Content-Length too
small or too large, no key or a wrong one).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from harness.hostile_inputs import raw_request, response_complete, responses
from speech_recognizer import contract
from speech_recognizer.app import create_app
from speech_recognizer.audio import sniff
from speech_recognizer.models import ModelRegistry
from speech_recognizer.results import written

from ..conftest import TEST_KEY, make_settings
from ..support import Reference, ServerThread, scrape_metrics

ROUTE = contract.ROUTE_OPENAI_TRANSCRIPTIONS
BOUNDARY = b"openai-form-fuzz"
#: What the failure table (README, Errors) answers on this route: a transcription, a bad value or audio, a
#: wrong or missing key, a body that paused (``Http:BodyTimeoutSeconds``), one too large, a type not served.
STATUSES = {200, 400, 401, 403, 408, 413, 415}
#: The server's body pause limit here, so that a Content-Length too large costs a second, not ten.
BODY_TIMEOUT_SECONDS = 1
#: No answer takes longer than this (the body timeout, a 1 MiB upload, a transcription by a recognizer that has
#: decoded before (:func:`warm`), a busy machine).
ANSWER_WITHIN_SECONDS = 15.0
#: The form that warms the server (:func:`warm`): a new recognizer's first decode, on a loaded machine.
WARM_WITHIN_SECONDS = 60.0
#: Examples of each mutation alone (and of good forms), then of mutations together.
#: Not shrunk: an example says what it is (its mutations), and a server that hangs would make each try last the bound.
EACH = settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                phases=[Phase.explicit, Phase.generate])
MIXED = settings(EACH, max_examples=60)

#: Mutations after which the form is still one to transcribe: field values the route ignores, in any bytes.
HARMLESS = {"binary_ignored"}
#: Mutations that must be refused (never a 200), with the status when the mutation is the only one.
REFUSED: dict[str, int | None] = {
    "dup_language": 400, "dup_format": 400, "dup_file": 400, "no_disposition": 400, "not_audio": 400,
    "empty_file": 400, "huge_field": 400, "nested": None, "no_filename": 400, "lf": 400, "no_closing": 400,
    "cut": 400, "cl_short": 400, "cl_long": 408, "boundary_missing": 400, "boundary_wrong": 400,
    "boundary_empty": 400, "not_form": 415, "auth_wrong": 401, "auth_missing": 403,
}
#: Mutations whose answer may be either (a form the RFC allows but a parser may not, a value that may be valid).
EITHER = {"odd_name", "odd_value", "preamble", "epilogue", "boundary_twice"}
MUTATIONS = sorted(HARMLESS | set(REFUSED) | EITHER)


@dataclass
class Part:
    headers: list[bytes]
    value: bytes

    @staticmethod
    def of(name: bytes, value: bytes, filename: bytes | None = None, ctype: bytes | None = None) -> Part:
        disposition = b'Content-Disposition: form-data; name="' + name + b'"'
        if filename is not None:
            disposition += b'; filename="' + filename + b'"'
        return Part([disposition] + ([b"Content-Type: " + ctype] if ctype else []), value)


@dataclass
class Sent:
    """One request as written on the socket, its mutations (what the test expects of its answer follows from them)
    and the response format asked for."""

    mutations: list[str]
    head: bytes
    body: bytes
    fmt: str = "json"

    def __repr__(self) -> str:
        return f"Sent({self.mutations}, {self.head!r}, {len(self.body)} bytes: {self.body[:300]!r}...{self.body[-300:]!r})"

    def _repr_pretty_(self, printer: object, cycle: bool) -> None:  # how hypothesis shows a failing example
        printer.text(repr(self))  # type: ignore[attr-defined]


def serialize(parts: list[Part], nl: bytes, boundary: bytes) -> tuple[bytes, int]:
    """The body, and where its closing delimiter (``--boundary--``) ends."""
    body = b"".join(b"--" + boundary + nl + b"".join(h + nl for h in p.headers) + nl + p.value + nl for p in parts)
    body += b"--" + boundary + b"--"
    return body + nl, len(body)


@dataclass(frozen=True)
class Target:
    """Who is asked: ``locale`` (a good form names it, or its language alone, or, unless ``language_needed``,
    nothing), with the bearer token ``key``."""

    locale: str
    key: str
    language_needed: bool = False
    #: The status of a mutation alone, where it is not :data:`REFUSED`'s.
    statuses: tuple[tuple[str, int | None], ...] = ()
    #: Mutations not sent (each says why).
    left_out: tuple[str, ...] = ()

    @property
    def mutations(self) -> list[str]:
        return [m for m in MUTATIONS if m not in self.left_out]

    @property
    def languages(self) -> list[bytes]:
        return [self.locale.split("-")[0].encode(), self.locale.encode(), f" {self.locale} ".encode()]


@st.composite
def requests(draw: st.DrawFn, wav: bytes, target: Target, mutations: list[str] | None = None) -> Sent:
    """A request to ``target``: a good form, with ``mutations`` (None: up to two, hypothesis' choice)."""
    if mutations is None:
        mutations = draw(st.lists(st.sampled_from(target.mutations), max_size=2, unique=True))
    fmt = draw(st.sampled_from(["json", "text", "verbose_json", None]))
    padding = draw(st.sampled_from([0, 0, 0, 2**20]))  # a WAV's bytes after its data chunk are not audio
    file = Part.of(b"file", wav + b"\0" * padding, b"speech.wav", draw(st.sampled_from([b"audio/wav", b"application/octet-stream", None])))
    fields = [Part.of(b"model", b"whisper-1")]
    if fmt is not None:
        fields.append(Part.of(b"response_format", fmt.encode()))
    if target.language_needed or draw(st.booleans()):
        fields.append(Part.of(b"language", draw(st.sampled_from(target.languages))))
    for granularity in draw(st.lists(st.sampled_from([b"segment", b"word"]), max_size=2, unique=True)):
        fields.append(Part.of(b"timestamp_granularities[]", granularity))
    if draw(st.booleans()):
        fields.append(Part.of(b"temperature", b"0.2"))
    fields = draw(st.permutations(fields))
    parts = fields[:]
    parts.insert(draw(st.integers(0, len(fields))), file)  # the language after the (large) file too
    text = st.binary(max_size=64).filter(lambda b: BOUNDARY not in b)

    def anywhere(part: Part) -> None:
        parts.insert(draw(st.integers(0, len(parts))), part)

    if "dup_language" in mutations:
        anywhere(Part.of(b"language", draw(st.sampled_from([*target.languages, b"ko-KR", b"ja-JP"]))))
        if not any(p.headers[0].endswith(b'name="language"') for p in fields):
            anywhere(Part.of(b"language", target.locale.encode()))
    if "dup_format" in mutations:
        anywhere(Part.of(b"response_format", draw(st.sampled_from([b"json", b"text"]))))
        if fmt is None:
            anywhere(Part.of(b"response_format", b"json"))
    if "dup_file" in mutations:
        anywhere(Part.of(b"file", wav, b"again.wav", b"audio/wav"))
    if "no_disposition" in mutations:
        anywhere(Part([b"Content-Type: text/plain"], draw(text)))
    if "odd_name" in mutations:
        name = draw(st.one_of(st.binary(min_size=1, max_size=80), st.sampled_from([b"\xff\xfe\x00", "언어".encode("euc-kr"), b"x" * 100_000])))
        anywhere(Part.of(name, draw(text)))
    if "odd_value" in mutations:
        name = draw(st.sampled_from([b"language", b"response_format", b"timestamp_granularities[]"]))
        value = draw(st.one_of(text, st.sampled_from([b"\xff", b"json\x00", "verbose_json".encode("utf-16"), b"word\r\nsegment"])))
        for p in [p for p in parts if p.headers[0].endswith(b'name="' + name + b'"')]:
            parts.remove(p)
        anywhere(Part.of(name, value))
    if "binary_ignored" in mutations:
        anywhere(Part.of(draw(st.sampled_from([b"prompt", b"user"])), draw(text)))
    if "huge_field" in mutations:
        anywhere(Part.of(b"prompt", b"\xea\xb0\x80" * draw(st.integers(22_000, 70_000))))  # over 64 KiB
    if "not_audio" in mutations:
        file.value = draw(st.one_of(st.sampled_from([b"these are not the sounds you are looking for", b"RIFF\0\0\0\0WAVE", b"OggS", b"\0" * 44]),
                                    st.binary(min_size=1, max_size=2000).filter(lambda b: sniff(b) is None)))
    if "empty_file" in mutations:
        file.value = b""
    if "nested" in mutations:
        inner, _ = serialize([Part([b'Content-Disposition: file; filename="speech.wav"', b"Content-Type: audio/wav"], wav)], b"\r\n", b"inner")
        file.headers = [file.headers[0], b"Content-Type: multipart/mixed; boundary=inner"]
        file.value = inner
    if "no_filename" in mutations:
        file.headers[0] = b'Content-Disposition: form-data; name="file"'

    nl = b"\n" if "lf" in mutations else b"\r\n"
    body, closed_at = serialize(parts, nl, BOUNDARY)
    if "no_closing" in mutations:
        body = body[: closed_at - len(BOUNDARY) - 4]
    if "cut" in mutations:
        body = body[: draw(st.integers(0, min(len(body), closed_at) - 1))]
    if "preamble" in mutations:
        body = draw(text) + nl + body
    if "epilogue" in mutations:
        body += draw(text)

    boundary = BOUNDARY.decode()
    ctype = f"multipart/form-data; boundary={draw(st.sampled_from([boundary, chr(34) + boundary + chr(34)]))}"
    if "boundary_missing" in mutations:
        ctype = "multipart/form-data"
    if "boundary_wrong" in mutations:
        ctype = "multipart/form-data; boundary=" + draw(st.sampled_from(["other", boundary[:-1], boundary + "x", "é" + boundary]))
    if "boundary_empty" in mutations:
        ctype = "multipart/form-data; boundary="
    if "boundary_twice" in mutations:
        ctype = draw(st.sampled_from([f"{ctype}; boundary=other", ctype.replace("boundary=", "boundary=other; boundary=", 1)]))
    if "not_form" in mutations:
        ctype = draw(st.sampled_from(["audio/wav", "application/json", "multipart/mixed; boundary=" + boundary, "text/plain"]))

    length = len(body)
    if "cl_short" in mutations:  # the server reads this many bytes: the form's closing delimiter is not among them
        length = draw(st.integers(0, min(len(body), closed_at) - 1))
    if "cl_long" in mutations:
        length += draw(st.integers(1, 4096))
    auth = {"auth_wrong": "Authorization: Bearer not-the-key\r\n", "auth_missing": ""}
    key = next((auth[m] for m in mutations if m in auth), f"Authorization: Bearer {target.key}\r\n")
    head = (f"POST {ROUTE} HTTP/1.1\r\nHost: test\r\nContent-Type: {ctype}\r\nContent-Length: {length}\r\n"
            f"{key}Connection: close\r\n\r\n").encode()
    return Sent(mutations, head, body, fmt or "json")


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float


def send(port: int, sent: Sent) -> Answer:
    """Write ``sent`` and read its one answer (the server may keep reading what follows a request it answered for a
    while before it closes: the answer is read up to its end, not the connection's)."""
    data, seconds = raw_request("127.0.0.1", port, sent.head, sent.body, timeout=ANSWER_WITHIN_SECONDS)
    assert response_complete(data), f"no whole answer within {ANSWER_WITHIN_SECONDS} s: {data[:300]!r}"
    [(status, headers, body)] = responses(data)
    return Answer(status, headers, body, seconds)


def transcript(answer: Answer, fmt: str) -> str:
    return answer.body.decode().strip() if fmt == "text" else json.loads(answer.body)["text"]


def plain(body: bytes, mutation: str, target: Target) -> Sent:
    """``body`` sent as a form with the key and a true Content-Length."""
    head = (f"POST {ROUTE} HTTP/1.1\r\nHost: test\r\nContent-Type: multipart/form-data; boundary={BOUNDARY.decode()}\r\n"
            f"Content-Length: {len(body)}\r\nAuthorization: Bearer {target.key}\r\nConnection: close\r\n\r\n").encode()
    return Sent([mutation], head, body)


def cut_after_the_file(wav: bytes, target: Target, fields: list[tuple[bytes, bytes]], keep: int) -> Sent:
    """The file first, then ``fields``, the body cut ``keep`` bytes into the last one: forms the route answered
    200 as if the field cut had not been sent (the file alone was whole)."""
    parts = [Part.of(b"file", wav, b"speech.wav", b"audio/wav")] + [Part.of(n, v) for n, v in fields]
    body, _ = serialize(parts, b"\r\n", BOUNDARY)
    return plain(body[: body.rindex(b"--" + BOUNDARY + b"\r\n") + keep], "cut", target)


def around_the_file(wav: bytes, target: Target, before: Part, after: Part, mutation: str) -> Sent:
    """A form of ``before``, the file and ``after``: given the same name, the route answered by the last one."""
    file = Part.of(b"file", wav, b"speech.wav", b"audio/wav")
    return plain(serialize([before, file, after], b"\r\n", BOUNDARY)[0], mutation, target)


def check(answer: Answer, sent: Sent, expected_text: str, target: Target) -> None:
    """What every answer must be, and what ``sent``'s mutations ask of it."""
    assert answer.seconds < ANSWER_WITHIN_SECONDS
    assert answer.status in STATUSES, (answer.status, answer.body[:500], sent)
    if answer.status >= 400:
        error = json.loads(answer.body)["error"]
        assert isinstance(error["message"], str) and error["message"].strip(), (answer.body, sent)
        assert error["type"] == "invalid_request_error" and error["code"], (answer.body, sent)
    refused = [m for m in sent.mutations if m in REFUSED]
    if refused:
        assert answer.status != 200, (f"{refused} answered as a whole form", answer.body[:300], sent)
        alone = {**REFUSED, **dict(target.statuses)}[refused[0]]
        if len(sent.mutations) == 1 and alone is not None:
            assert answer.status == alone, (answer.status, answer.body[:300], sent)
    elif set(sent.mutations) <= HARMLESS:
        assert answer.status == 200, (answer.body[:500], sent)
        assert transcript(answer, sent.fmt) == expected_text, sent


def assert_no_traceback(caplog: pytest.LogCaptureFixture, sent: Sent) -> None:
    bad = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR or "Traceback" in r.getMessage()]
    assert not bad, ([r.getMessage() for r in bad], caplog.text[-3000:], sent)
    assert "Traceback" not in caplog.text, caplog.text[-3000:]


def run_examples(hostile: Callable[[Sent], None], wav: bytes, target: Target) -> None:
    """Each mutation alone (where its status is known), the good forms alone, then up to two together; and the forms
    the route used to answer 200, having dropped a part (a body cut after the file, a field given twice)."""
    for mutations in [[m] for m in target.mutations] + [[]]:
        settings(EACH)(given(requests(wav, target, mutations))(hostile))()
    mixed = given(requests(wav, target))(hostile)
    mixed = example(cut_after_the_file(wav, target, [(b"model", b"whisper-1"), (b"language", target.locale.encode())], 30))(mixed)
    mixed = example(cut_after_the_file(wav, target, [(b"language", target.locale.encode()), (b"response_format", b"verbose_json")],
                                       len(BOUNDARY) + 4 + 20))(mixed)
    mixed = example(around_the_file(wav, target, Part.of(b"language", target.languages[0]), Part.of(b"language", target.locale.encode()),
                                    "dup_language"))(mixed)
    mixed = example(around_the_file(wav, target, Part.of(b"file", b"a file part without a filename"), Part.of(b"language", target.locale.encode()),
                                    "dup_file"))(mixed)
    settings(MIXED)(mixed)()


@pytest.fixture(scope="module")
def srv(registry: ModelRegistry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    settings_ = make_settings(tmp_path_factory.mktemp("forms"), f"ApiKey={TEST_KEY}", "Billing=https://example.invalid",
                              f"Http:BodyTimeoutSeconds={BODY_TIMEOUT_SECONDS}")
    with ServerThread(create_app(settings_, registry)) as server:
        yield server


def warm(port: int, wav: bytes, target: Target, expected_text: str) -> None:
    """One whole form transcribed before the examples, so that the recognizer decoding them has decoded before: the
    test servers have no start-up warm-up (``Warmup:Count=0``), and a new recognizer's first decode stalls and costs
    several times the CPU of the next ones (docs/engine.md, "Warm recognizers"), which on a loaded machine took most
    of :data:`ANSWER_WITHIN_SECONDS` from the first example transcribed, whatever its form."""
    parts = [Part.of(b"language", target.locale.encode()), Part.of(b"file", wav, b"speech.wav", b"audio/wav")]
    sent = plain(serialize(parts, b"\r\n", BOUNDARY)[0], "none", target)
    data, _ = raw_request("127.0.0.1", port, sent.head, sent.body, timeout=WARM_WITHIN_SECONDS)
    assert response_complete(data), f"no whole answer to a good form within {WARM_WITHIN_SECONDS} s: {data[:300]!r}"
    [(status, _, body)] = responses(data)
    assert status == 200 and json.loads(body)["text"] == expected_text, (status, body[:500])


def run_hostile(port: int, target: Target, wav: bytes, expected_text: str, caplog: pytest.LogCaptureFixture,
                logger: str) -> tuple[float, set[str]]:
    """Every example sent to ``port`` (warmed first: :func:`warm`) and checked, ``logger``'s records (the server's own,
    which propagate nowhere caplog sees otherwise) in caplog too; the seconds they took and the mutations they reached."""
    warm(port, wav, target, expected_text)
    server_logs = logging.getLogger(logger)
    server_logs.addHandler(caplog.handler)
    reached: set[str] = set()

    def hostile(sent: Sent) -> None:
        caplog.clear()
        check(send(port, sent), sent, expected_text, target)
        assert_no_traceback(caplog, sent)
        reached.update(sent.mutations or ["none"])

    started = time.monotonic()
    try:
        with caplog.at_level(logging.INFO):
            run_examples(hostile, wav, target)
    finally:
        server_logs.removeHandler(caplog.handler)
    return time.monotonic() - started, reached


def test_hostile_forms_get_a_status_of_the_failure_table_and_a_reason(
        srv: ServerThread, speech_wav: Path, speech_ref: Reference, caplog: pytest.LogCaptureFixture) -> None:
    expected_text = " ".join(written(t) for t in speech_ref.texts)
    took, reached = run_hostile(srv.port, Target("ko-KR", TEST_KEY), speech_wav.read_bytes(), expected_text, caplog, "uvicorn")
    assert took < 60, f"the examples took {took:.0f} s: fewer examples"
    assert reached == {*MUTATIONS, "none"}, reached


def test_a_paused_form_is_one_failure_counted_once(srv: ServerThread, speech_wav: Path) -> None:
    """A form whose client withholds its last byte is refused by the server's HTTP protocol (408, the body paused past
    ``Http:BodyTimeoutSeconds``) and counted there once (route ``http``), not a second time as this route's 499
    ``client_gone`` (its read of the form, cut off by that refusal, heard a disconnect)."""
    parts = [Part.of(b"language", b"ko-KR"), Part.of(b"file", speech_wav.read_bytes(), b"speech.wav", b"audio/wav")]
    body = serialize(parts, b"\r\n", BOUNDARY)[0]
    head = (f"POST {ROUTE} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TEST_KEY}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY.decode()}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    base = f"http://127.0.0.1:{srv.port}"
    before = scrape_metrics(base)
    answer, _ = raw_request("127.0.0.1", srv.port, head, body[:-1], timeout=ANSWER_WITHIN_SECONDS)
    assert answer.startswith(b"HTTP/1.1 408 ") and b"Http:BodyTimeoutSeconds" in answer, answer[:300]
    after = scrape_metrics(base)

    def counted(name: str, *labels: tuple[str, str]) -> float:
        key = (name, tuple(sorted(labels)))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert counted("speech_requests_total", ("route", "http"), ("status", "408")) == 1
    assert counted("speech_refused_total", ("reason", "upload_timeout"), ("route", "http")) == 1
    assert counted("speech_refused_total", ("reason", "client_gone"), ("route", "openai")) == 0
    assert counted("speech_requests_total", ("route", "openai"), ("status", "499")) == 0
