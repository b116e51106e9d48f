"""Hostile multipart forms on OpenAI's ``POST /v1/audio/transcriptions`` through the gateway, which reads
each form itself up to its ``language`` field (python-multipart's push parser) and relays it to a
recognizer process: the recognizer's test (tests/recognizer/test_openai_forms.py), its requests and
its checks, with the gateway in front of two locales (the form must name one). Every answer is a
status of the failure table with a reason, in bounded time, and neither the gateway's log nor the
recognizers' output holds a traceback. Then hostile clients of the read-ahead itself: a form that
pauses, and forms that trickle to hold the gateway's budget for forms read ahead.
"""

from __future__ import annotations

import asyncio
import json
import logging
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.hostile_inputs import response_complete, responses
from speech_operator.gateway import GatewayConfig
from speech_recognizer import contract
from speech_recognizer.results import written
from tests.recognizer.test_openai_forms import BODY_TIMEOUT_SECONDS, Target, run_hostile
from tests.support import Reference, scrape_metrics

from .conftest import KEY, OTHER_LOCALE, Locales, two_locales

#: The gateway's bounds on forms read ahead, here: small, so that a few clients fill them in a moment.
#: A Content-Length too large on a form whose file comes first is answered after the pause. The read deadline leaves
#: a loaded machine time to fill the budget with trickles and relay a form beside them (not to transcribe it: that
#: took over 8 s beside busy loops, and the trickles waited it out, 20 s).
FORMS = GatewayConfig(host="127.0.0.1", port=0, form_buffer_bytes=2 * 2**20, form_budget_bytes=4 * 2**20,
                      form_read_seconds=10.0, form_pause_seconds=1.0)
BOUNDARY = "gateway-read-ahead"


@pytest.fixture(scope="module")
def fronted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Locales]:
    """conftest's two locales (ko-KR without a key, OTHER_LOCALE with :data:`KEY`), their recognizers refusing a
    body that pauses after :data:`BODY_TIMEOUT_SECONDS`, behind a gateway with the bounds :data:`FORMS`."""
    with two_locales(tmp_path_factory.mktemp("gateway-forms"), f"Http:BodyTimeoutSeconds={BODY_TIMEOUT_SECONDS}",
                     config=FORMS) as found:
        yield found


def test_hostile_forms_through_the_gateway(fronted: Locales, speech_wav: Path, speech_ref: Reference,
                                           caplog: pytest.LogCaptureFixture) -> None:
    expected_text = " ".join(written(t) for t in speech_ref.texts)
    # A body that is not a form the gateway can read has no language field: with two locales, the gateway says to add one.
    # Left out: a Content-Length too small. What follows the request then comes in the same segment, and the gateway's
    # parser fails on it (llhttp: "Data after `Connection: close`", or a bad method when kept alive) in the same read
    # as the request, which is lost: the client gets that 400 in place of the request's answer.
    target = Target(OTHER_LOCALE, KEY, language_needed=True, statuses=(("not_form", 400),), left_out=("cl_short",))
    took, reached = run_hostile(fronted.stack.port, target, speech_wav.read_bytes(), expected_text, caplog, "aiohttp")
    assert reached == {*target.mutations, "none"}, reached
    for r in fronted.recognizers.values():
        assert "Traceback" not in r.output(), r.output()[-3000:]
    assert fronted.stack.app is not None
    assert took < 90, f"the examples took {took:.0f} s: fewer examples"


# ---- hostile clients of the read-ahead ----------------------------------------------------------------
#: The file part's head, first in the form (no language before it: the gateway reads on to find one).
FILE_FIRST = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="speech.wav"\r\n'
              'Content-Type: audio/wav\r\n\r\n').encode()


def form_head(length: int) -> bytes:
    return (f"POST {contract.ROUTE_OPENAI_TRANSCRIPTIONS} HTTP/1.1\r\nHost: test\r\nContent-Type: multipart/form-data; "
            f"boundary={BOUNDARY}\r\nContent-Length: {length}\r\nAuthorization: Bearer {KEY}\r\n\r\n").encode()


def read_answer(sock: socket.socket, timeout: float) -> bytes:
    """What the gateway answers on ``sock``, up to the end of its answer."""
    sock.settimeout(timeout)
    answer = b""
    while not response_complete(answer):
        data = sock.recv(65536)
        assert data, f"closed before a whole answer: {answer!r}"
        answer += data
    return answer


class Trickle(threading.Thread):
    """A client sending a form whose file comes first, with no language: ``fill`` bytes of it at once, then a byte
    every ``every`` seconds until ``stop`` is set or the gateway answers (:attr:`answer`)."""

    def __init__(self, port: int, fill: int, every: float, stop: threading.Event) -> None:
        super().__init__(name="trickle", daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.fill, self.every, self.stop = fill, every, stop
        self.answer = b""
        #: When the request began (monotonic): the gateway's read deadline for it falls after this plus the read seconds.
        self.started = 0.0
        #: Seconds from the request's start to its whole answer.
        self.answered_in = 0.0

    def run(self) -> None:
        with self.sock:
            self.started = started = time.monotonic()
            self.sock.sendall(form_head(self.fill + 2**20) + FILE_FIRST + b"\0" * (self.fill - len(FILE_FIRST)))
            while not self.stop.is_set() and not response_complete(self.answer):
                if select.select([self.sock], [], [], self.every)[0]:
                    data = self.sock.recv(65536)
                    if not data:
                        return
                    self.answer += data
                else:
                    self.sock.sendall(b"\0")
            self.answered_in = time.monotonic() - started


def test_a_form_that_pauses_is_refused_in_openais_shape_and_closed_lingering(fronted: Locales,
                                                                             caplog: pytest.LogCaptureFixture) -> None:
    """A form read ahead (its file first, no language) whose client pauses longer than ``form_pause_seconds``: 408 in
    OpenAI's error shape that long after its last byte (the gateway waited for the next piece up to its read deadline,
    60 s by default, holding what it had read), one log line, ``Connection: close``; what the client still sends is
    read and dropped, then the connection is closed (a reset would destroy the answer of a client still writing)."""
    pause = FORMS.form_pause_seconds
    with caplog.at_level(logging.INFO, "speech_operator.gateway"), \
            socket.create_connection(("127.0.0.1", fronted.stack.port), timeout=10) as sock:
        sock.sendall(form_head(2**20) + FILE_FIRST + b"\0" * 1000)
        for _ in range(3):  # pieces within the pause: read on
            time.sleep(pause / 2)
            last = time.monotonic()  # before the send: the gateway may read the piece (and start its pause) before sendall returns
            sock.sendall(b"\0" * 100)
        answer = read_answer(sock, 5 * pause)
        took = time.monotonic() - last
        sock.sendall(b"\0" * 65536)  # the client still sending
        closing = time.monotonic()
        assert sock.recv(65536) == b"", "the connection is closed after the answer, what came after it dropped"
        closed_in = time.monotonic() - closing
    # Answered at the pause, not at the read deadline (20 s here): the bound past the pause leaves a loaded machine time.
    assert pause <= took < pause + 2, f"answered {took:.2f} s after the last piece, its pause {pause:g} s"
    assert closed_in < 3, f"closed {closed_in:.2f} s after the client's last bytes"
    [(status, headers, body)] = responses(answer)
    assert (status, headers["connection"]) == (408, "close")
    assert json.loads(body)["error"] == {"message": f"the form paused for {pause:g} s", "type": "invalid_request_error",
                                         "param": None, "code": "upload_timeout"}
    lines = [r.getMessage() for r in caplog.records if r.name == "speech_operator.gateway"]
    assert lines == [f"openai -: upload_timeout: the form paused for {pause:g} s"], lines


def test_forms_trickled_to_hold_the_budget_leave_forms_that_give_their_language_first_alone(
        fronted: Locales, speech_wav: Path, speech_ref: Reference) -> None:
    """Clients that fill the gateway's budget for forms read ahead with forms whose file comes first, then trickle
    under the pause limit, keep it full for as long as the read deadline allows (then 408): another such form gets
    503 (``forms_held``, saying how not to), but a form whose language comes before its file is transcribed (it got
    503 too: the budget counted its first bytes; it counts only what a form reads ahead beyond its first 64 KiB)."""
    from speech_operator import gateway_openai
    from speech_operator.gateway import GATEWAY

    assert fronted.stack.app is not None
    budget = fronted.stack.app[GATEWAY].forms
    uncounted, per = gateway_openai.UNCOUNTED_BYTES, FORMS.form_buffer_bytes - 1000
    fills = [per, per, FORMS.form_budget_bytes - 2 * (per - uncounted) - 4096 + uncounted]  # all the budget but 4 KiB
    stop = threading.Event()
    trickles = [Trickle(fronted.stack.port, fill, FORMS.form_pause_seconds / 3, stop) for fill in fills]
    try:
        counted = 0
        for t in trickles:  # one after the other: each one's bytes held (or refused) before the next
            t.start()
            counted += t.fill - uncounted
            fronted.stack.eventually(lambda: bool(t.answer) or budget.used >= counted, 10, "the form held")  # noqa: B023
        assert budget.used >= FORMS.form_budget_bytes - 4096, budget.used
        with socket.create_connection(("127.0.0.1", fronted.stack.port), timeout=10) as sock:
            body = FILE_FIRST + b"\0" * (2 * uncounted)  # and more to come
            sock.sendall(form_head(len(body) + 2**20) + body)
            [(status, _, refused)] = responses(read_answer(sock, 10))
        assert status == 503 and json.loads(refused)["error"]["code"] == "forms_held", refused
        wav = speech_wav.read_bytes()
        body = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="language"\r\n\r\n{OTHER_LOCALE}\r\n'.encode()
                + FILE_FIRST + wav + f"\r\n--{BOUNDARY}--\r\n".encode())
        first = uncounted + 8192  # more than the budget left beyond the uncounted bytes: counted, they would be refused
        assert first < len(body)
        with socket.create_connection(("127.0.0.1", fronted.stack.port), timeout=30) as sock:
            sock.sendall(form_head(len(body)) + body[:first])
            # Relayed while the trickles hold the budget (the recognizer's request under way, its transcription as long
            # as a loaded machine takes: it need not end before the trickles' read deadline).
            recognizer = fronted.recognizers[OTHER_LOCALE]
            fronted.stack.eventually(lambda: relaying(recognizer.port) or bool(select.select([sock], [], [], 0)[0]), 10,
                                     "the form relayed to its recognizer")
            assert not select.select([sock], [], [], 0)[0], f"answered before its body was all sent: {sock.recv(65536)!r}"
            assert budget.used >= FORMS.form_budget_bytes - 4096, budget.used
            assert not any(t.answer for t in trickles), "the trickles were held all along"
            sock.sendall(body[first:])
            # however long that takes: the first transcription of a recognizer warmed by nothing, on a loaded machine,
            # took over 30 s (when this test runs first in its module)
            [(status, _, transcribed)] = responses(read_answer(sock, 120))
        assert status == 200, transcribed
        assert json.loads(transcribed)["text"] == " ".join(written(t) for t in speech_ref.texts)
        for t in trickles:  # until the read deadline
            t.join(FORMS.form_read_seconds + 5)
        for t in trickles:
            [(status, headers, timed_out)] = responses(t.answer)
            assert (status, headers["connection"]) == (408, "close"), timed_out
            assert json.loads(timed_out)["error"]["message"] == (
                f"the form did not reach its language field within {FORMS.form_read_seconds:g} s (send the field language "
                "before the file, or ?language=<locale> in the URL)")
            assert FORMS.form_read_seconds <= t.answered_in < FORMS.form_read_seconds + 5, t.answered_in
    finally:
        stop.set()
        for t in trickles:
            t.join(10)
    fronted.stack.eventually(lambda: budget.used == 0, 5, f"the budget given back ({budget.used} held)")


def relaying(port: int) -> bool:
    """Whether the recognizer on ``port`` has a request of the gateway's under way: a plain HTTP connection besides this
    scrape's own (the gateway opens one for each request it relays, and keeps none between them)."""
    return scrape_metrics(f"http://127.0.0.1:{port}").get(("speech_http_connections", ()), 0) >= 2


async def _handlers() -> int:
    """aiohttp's connection handlers running on the gateway's loop (one task for each connection)."""
    return sum(1 for t in asyncio.all_tasks() if getattr(t.get_coro(), "__qualname__", "") == "RequestHandler.start")


def test_a_client_that_leaves_after_an_early_answer_leaves_no_handler_behind(fronted: Locales) -> None:
    """A form answered before its body is all in (here: no language, and a Content-Length past its end), whose client
    reads the answer and leaves: the connection's handler ends at once. aiohttp reads the rest of such a body after
    the answer for up to 10 s, and nothing ended that read when the client left; a gateway stopped meanwhile left
    the task pending ("Task was destroyed but it is pending", at the end of this module's tests)."""
    stack = fronted.stack
    before = stack.call(_handlers())
    body = FILE_FIRST + b"\0" * 1000 + f"\r\n--{BOUNDARY}--\r\n".encode()
    with socket.create_connection(("127.0.0.1", stack.port), timeout=10) as sock:
        sock.sendall(form_head(len(body) + 1000) + body)
        [(status, _, answer)] = responses(read_answer(sock, 10))
        assert status == 400 and json.loads(answer)["error"]["code"] == "unknown_locale", answer
        assert stack.call(_handlers()) == before + 1, "the handler reads the rest of the body"
    stack.eventually(lambda: stack.call(_handlers()) == before, 2, "the handler ended once the client left")


def test_a_form_no_parser_can_read_is_one_log_line(fronted: Locales, caplog: pytest.LogCaptureFixture) -> None:
    """A form whose parts are not delimited by its boundary: the gateway's scanner cannot read it (routed by
    ``?language=``), nor can the recognizer, which answers 400 and logs that failure. python-multipart logged a
    WARNING of its own too, at the gateway and at the recognizer, for each such request: a hostile client wrote
    two or three lines a request; now the recognizer's one line (and the access lines)."""
    recognizer = fronted.recognizers["ko-KR"]
    before = len(recognizer.output())
    body = (b'--other\r\nContent-Disposition: form-data; name="file"; filename="speech.wav"\r\n\r\n'
            + b"\0" * 100 + b"\r\n--other--\r\n")
    head = form_head(len(body)).replace(contract.ROUTE_OPENAI_TRANSCRIPTIONS.encode(),
                                        contract.ROUTE_OPENAI_TRANSCRIPTIONS.encode() + b"?language=ko-KR")
    with caplog.at_level(logging.INFO), socket.create_connection(("127.0.0.1", fronted.stack.port), timeout=10) as sock:
        sock.sendall(head + body)
        [(status, _, answer)] = responses(read_answer(sock, 10))
    assert status == 400 and "multipart" in json.loads(answer)["error"]["message"], answer
    assert not [r.getMessage() for r in caplog.records if r.name.startswith("python_multipart")]
    fronted.stack.eventually(lambda: "POST /v1/audio/transcriptions" in recognizer.output()[before:], 5, "the access line")
    lines = [line for line in recognizer.output()[before:].splitlines() if "/v1/audio/transcriptions" not in line]
    assert len(lines) == 1 and "bad_value" in lines[0], lines
