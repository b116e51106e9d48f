"""The recognizer's newer routes through the gateway, in front of two real recognizer processes
(tests/gateway/conftest.py): OpenAI's ``POST /v1/audio/transcriptions`` with the official ``openai``
package, routed by the form's ``language`` (else ``?language=``); subtitles on REST (``format=`` and
``Accept``); the ``/demo`` page offering every locale routed, its scripts, and its ``/vosk`` stream
with the key in the query as the page sends it, and the page itself in a real browser.

Both locales speak Korean here, so which recognizer answered is told by what only it says:
``verbose_json``'s ``language`` is the recognizer's own locale.
"""

from __future__ import annotations

import html
import re
import time
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from playwright.sync_api import Browser
from prometheus_client.parser import text_string_to_metric_families

from speech_operator import gateway_openai
from speech_operator.gateway import GATEWAY
from speech_recognizer.results import written
from tests.recognizer.test_demo_page import DEVICE_RATE, Offline, page_lines, read_pcm, vosk_replies
from tests.recognizer.test_vosk_ws import stream, texts
from tests.support import Reference, assert_same_answer, read_wav

from .conftest import KEY, OTHER_LOCALE, Locales

REST = "/speech/recognition/conversation/cognitiveservices/v1"
OPENAI = "/v1/audio/transcriptions"


def client(base: str, locale: str | None = None, **options: object) -> openai.OpenAI:
    """OpenAI's client at ``base``, with the key :data:`OTHER_LOCALE` asks for (ko-KR asks for none)."""
    key = KEY if locale in (None, OTHER_LOCALE) else "no-key-needed"
    return openai.OpenAI(base_url=f"{base}/v1", api_key=key, timeout=120, max_retries=0, **options)


def form(wav: Path, fields: list[tuple[str, str]], file_first: bool, padding: int = 0) -> tuple[bytes, str]:
    """A multipart body by hand, the file part first or last (httpx and OpenAI's clients put it last)."""
    boundary = "gateway-test-boundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields]
    audio = wav.read_bytes() + b"\0" * padding
    file = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
            "Content-Type: audio/wav\r\n\r\n").encode() + audio + b"\r\n"
    body = (file + b"".join(parts) if file_first else b"".join(parts) + file) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def test_the_openai_client_gets_what_the_recognizer_gives(locales: Locales, speech_wav: Path, utterances_wav: Path,
                                                          utterances_ref: Reference) -> None:
    """For each locale, by its locale or its language alone (``ja``, ``ko``), every response format
    through the gateway equals the recognizer's own answer. The gateway relays the answer's bytes
    whatever they say, so the formats are compared on the one-utterance recording (a quarter of the
    decoding); the three utterances' segments are checked through the gateway once per locale."""
    for locale, r in locales.recognizers.items():
        direct, via = client(r.http, locale), client(locales.stack.http, locale)
        for fmt in ("json", "text", "srt", "vtt", "verbose_json"):
            asked = {"model": "whisper-1", "language": locale, "response_format": fmt}
            expected = direct.audio.transcriptions.create(file=speech_wav.open("rb"), **asked)
            got = via.audio.transcriptions.create(file=speech_wav.open("rb"), **asked)
            assert expected, fmt
            if hasattr(got, "model_dump"):  # verbose_json's avg_logprob: each recognizer's may be a pooled one
                assert_same_answer(got.model_dump(), expected.model_dump())
            else:
                assert got == expected, fmt
        verbose = via.audio.transcriptions.create(model="whisper-1", file=utterances_wav.open("rb"),
                                                  language=locale.split("-")[0], response_format="verbose_json")
        assert verbose.language == locale, "the language alone reaches its locale's recognizer"
        assert [s.text for s in verbose.segments] == [written(p.text) for p in utterances_ref.phrases]


def test_the_language_comes_from_the_form_then_the_query(locales: Locales, speech_wav: Path) -> None:
    stack = locales.stack
    # no language field: ?language= (OpenAI's client sends it with default_query)
    by_query = client(stack.http, OTHER_LOCALE, default_query={"language": OTHER_LOCALE}).audio.transcriptions.create(
        model="whisper-1", file=speech_wav.open("rb"), response_format="verbose_json")
    assert by_query.language == OTHER_LOCALE
    # the form's field wins over the query
    both = client(stack.http, "ko-KR", default_query={"language": OTHER_LOCALE}).audio.transcriptions.create(
        model="whisper-1", file=speech_wav.open("rb"), response_format="verbose_json", language="ko-KR")
    assert both.language == "ko-KR"
    # the file before the fields (curl -F file=@a.wav -F language=ja-JP): found after the file
    for locale in locales.recognizers:
        body, ctype = form(speech_wav, [("model", "whisper-1"), ("response_format", "verbose_json"), ("language", locale)],
                           file_first=True)
        answer = httpx.post(stack.http + OPENAI, content=body, headers={"Content-Type": ctype, "Authorization": f"Bearer {KEY}"},
                            timeout=60)
        assert answer.status_code == 200, answer.text
        assert answer.json()["language"] == locale


def test_an_unknown_or_missing_language_gets_a_400_naming_the_locales(locales: Locales, speech_wav: Path) -> None:
    via = client(locales.stack.http)
    with pytest.raises(openai.BadRequestError) as unknown:
        via.audio.transcriptions.create(model="whisper-1", file=speech_wav.open("rb"), language="xx-YY")
    assert unknown.value.body == {"message": f"no model for language 'xx-YY'; this server has: {OTHER_LOCALE}, ko-KR",
                                  "type": "invalid_request_error", "param": None, "code": "unknown_locale"}
    with pytest.raises(openai.BadRequestError) as missing:
        via.audio.transcriptions.create(model="whisper-1", file=speech_wav.open("rb"))
    assert missing.value.body["message"] == ("add the form field language=<locale> (or ?language=<locale>); "
                                             f"this server has: {OTHER_LOCALE}, ko-KR")
    assert missing.value.body["code"] == "unknown_locale"
    # the recognizer's own refusals come back as they are (here: its key)
    with pytest.raises(openai.AuthenticationError) as wrong:
        client(locales.stack.http, "ko-KR").audio.transcriptions.create(
            model="whisper-1", file=speech_wav.open("rb"), language=OTHER_LOCALE)
    assert wrong.value.body["code"] == "auth_wrong"
    # not a form: routed by the query, and the recognizer says why it cannot read it
    plain = httpx.post(f"{locales.stack.http}{OPENAI}?language=ko-KR", content=speech_wav.read_bytes(),
                       headers={"Content-Type": "audio/wav"}, timeout=60)
    assert plain.status_code == 415 and "multipart/form-data" in plain.json()["error"]["message"]


def test_a_form_is_streamed_once_its_language_is_known_and_buffered_only_up_to_a_bound(locales: Locales,
                                                                                       speech_wav: Path) -> None:
    """A form larger than the gateway's buffer passes whole when ``language`` comes before the file
    (the recognizer transcribes it: a WAV's bytes after its data chunk are ignored); with the file
    first and nothing else to route by, the gateway stops at its bound with a 413 that says what to do."""
    over = gateway_openai.FormLimits.buffer_bytes + 2**20
    headers = {"Authorization": f"Bearer {KEY}"}
    body, ctype = form(speech_wav, [("language", OTHER_LOCALE)], file_first=False, padding=over)
    streamed = httpx.post(locales.stack.http + OPENAI, content=body, headers={**headers, "Content-Type": ctype}, timeout=120)
    assert streamed.status_code == 200, streamed.text
    assert streamed.json()["text"]

    body, ctype = form(speech_wav, [("language", OTHER_LOCALE)], file_first=True, padding=over)
    held = httpx.post(locales.stack.http + OPENAI, content=body, headers={**headers, "Content-Type": ctype}, timeout=120)
    assert held.status_code == 413
    assert held.json()["error"] == {
        "message": "the form's file comes before its language field and the form is over 16 MiB: send the field "
                   "language before the file, or ?language=<locale> in the URL",
        "type": "invalid_request_error", "param": None, "code": "too_large"}


def test_forms_read_ahead_are_bounded_for_the_whole_gateway(locales: Locales, speech_wav: Path) -> None:
    """What the gateway reads ahead of the relay counts against one budget for all requests: a form
    that would pass it gets 503 + Retry-After; every request, refused or relayed, gives its bytes back."""
    assert locales.stack.app is not None
    forms = locales.stack.app[GATEWAY].forms
    assert forms.used == 0, "the requests of the tests before gave back what was read ahead"
    body, ctype = form(speech_wav, [("response_format", "verbose_json"), ("language", OTHER_LOCALE)], file_first=True,
                       padding=2 * 2**20)
    headers = {"Content-Type": ctype, "Authorization": f"Bearer {KEY}"}
    limit, forms.limit = forms.limit, 2**20
    try:
        refused = httpx.post(locales.stack.http + OPENAI, content=body, headers=headers, timeout=60)
    finally:
        forms.limit = limit
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "5"
    error = refused.json()["error"]
    assert error["code"] == "forms_held" and error["type"] == "server_error"
    assert re.match(r"the gateway already holds [\d.]+ MiB of forms read ahead for their language field \(at most 1\.0 MiB\)",
                    error["message"]), error["message"]
    assert forms.used == 0
    relayed = httpx.post(locales.stack.http + OPENAI, content=body, headers=headers, timeout=60)
    assert relayed.status_code == 200 and relayed.json()["language"] == OTHER_LOCALE
    assert forms.used == 0


def test_form_scanner_finds_the_language_wherever_the_chunks_end(speech_wav: Path) -> None:
    """The push parser sees the field whole and the file's start, fed one byte at a time."""
    body, ctype = form(speech_wav, [("model", "whisper-1"), ("language", "ko-KR")], file_first=False)
    boundary = ctype.split("boundary=")[1].encode()
    scanner = gateway_openai.FormScanner(boundary)
    fed = 0
    while scanner.language is None:
        scanner.feed(body[fed:fed + 1])
        fed += 1
    assert scanner.language == "ko-KR" and not scanner.file_begun
    while not scanner.file_begun:
        scanner.feed(body[fed:fed + 1])
        fed += 1
    assert fed < 400, "the file's start is seen as soon as its headers end"

    first, _ = form(speech_wav, [("language", "ja-JP")], file_first=True)
    scanner = gateway_openai.FormScanner(boundary)
    scanner.feed(first[:300])
    assert scanner.file_begun and scanner.language is None
    scanner.feed(first[300:])
    assert scanner.language == "ja-JP" and scanner.ended


# ---- subtitles on REST ------------------------------------------------------------------------------
async def test_a_lone_form_past_its_buffer_gets_413_at_the_largest_buffer_the_budget_allows() -> None:
    """A form alone, its file first, read ahead past SPEECH_GATEWAY_FORM_BUFFER_BYTES gets its 413, with the buffer at
    the most the gateway allows: the budget and UNCOUNTED_BYTES. The chunk that passed the buffer was counted in the
    budget before the buffer was checked, so that form got 503 (forms_held, "try again shortly") every time.
    A buffer above that is refused at start (tests/operator/test_cli.py)."""
    from aiohttp import ClientSession, web

    from speech_operator.gateway import serving
    from speech_recognizer.errors import Failure

    budget = 256 * 1024
    limits = gateway_openai.FormLimits(buffer_bytes=budget + gateway_openai.UNCOUNTED_BYTES, budget_bytes=budget)
    assert limits.buffer_fits_the_budget()
    assert not gateway_openai.FormLimits(buffer_bytes=limits.buffer_bytes + 1, budget_bytes=budget).buffer_fits_the_budget()
    forms = gateway_openai.FormBudget(budget)

    async def read_ahead(request: web.Request) -> web.Response:
        try:
            await gateway_openai.scan(request, False, forms, limits)
        except Failure as failure:
            return web.Response(status=failure.kind.http, text=failure.message)
        return web.Response(text="read")

    app = web.Application()
    app.router.add_post(OPENAI, read_ahead)
    boundary = "gateway-test-boundary"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n').encode() + \
        b"\0" * (limits.buffer_bytes + 2**20)
    async with serving(app, "127.0.0.1", 0, 1) as port, ClientSession() as session:
        for _ in range(3):
            async with session.post(f"http://127.0.0.1:{port}{OPENAI}", data=body,
                                    headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}) as answer:
                assert answer.status == 413, (answer.status, await answer.text())
        assert forms.used == 0


def test_subtitles_on_rest_pass_through(locales: Locales, speech_wav: Path) -> None:
    """``format=srt|vtt`` and an ``Accept`` asking for subtitles give the recognizer's own cues and type
    (the one-utterance recording: the gateway relays the bytes, however many cues they hold)."""
    for locale, r in locales.recognizers.items():
        headers = {"Content-Type": "audio/wav", "Ocp-Apim-Subscription-Key": KEY}
        for query, accept in (("format=srt", None), ("format=vtt", None), ("", "text/vtt"), ("", "application/x-subrip")):
            asked = {**headers, **({"Accept": accept} if accept else {})}
            url = f"{REST}?language={locale}&{query}"
            direct = httpx.post(r.http + url, content=speech_wav.read_bytes(), headers=asked, timeout=60)
            via = httpx.post(locales.stack.http + url, content=speech_wav.read_bytes(), headers=asked, timeout=60)
            assert direct.status_code == via.status_code == 200, via.text
            assert via.headers["content-type"] == direct.headers["content-type"] and via.text == direct.text
            assert "-->" in via.text, (query, accept)


# ---- the demo page ----------------------------------------------------------------------------------
def test_the_demo_page_offers_every_locale_and_its_stream_works(locales: Locales, speech_wav: Path,
                                                                speech_ref: Reference) -> None:
    stack = locales.stack
    page = httpx.get(stack.http + "/demo")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    offered = [html.unescape(v) for v in re.findall(r'<option value="([^"]+)"', page.text)]
    assert offered == [OTHER_LOCALE, "ko-KR"], "every locale routed, not one recognizer's"
    assert 'data-key-required="true"' in page.text and 'id="key"' in page.text, f"{OTHER_LOCALE} asks for a key"
    assert dict(re.findall(r'<option value="([^"]+)" data-key-required="(\w+)"', page.text)) == {OTHER_LOCALE: "true", "ko-KR": "false"}
    assert 'data-vosk="/vosk"' in page.text
    direct = locales.recognizers["ko-KR"].http
    for name in ("demo.js", "pcm16-worklet.js"):
        script = httpx.get(f"{stack.http}/demo/{name}")
        assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
        assert script.content == httpx.get(f"{direct}/demo/{name}").content
    missing = httpx.get(f"{stack.http}/demo/x.js")
    assert missing.status_code == 404 and "demo.js" in missing.json()["error"]["message"]
    # what the page opens: /vosk?language=<picked>, the key in the query (a browser sets no headers)
    pcm, rate, _ = read_wav(speech_wav)
    for locale in offered:
        query = f"language={locale}&Ocp-Apim-Subscription-Key={KEY}"
        assert texts(stream(f"{stack.ws}/vosk?{query}", pcm, 3200, {"sample_rate": rate})) == speech_ref.texts


def test_the_demo_page_works_through_the_gateway_in_a_browser(locales: Locales, browser: Browser, microphone_wav: Path) -> None:
    """The recognizer's demo in a real browser (tests/recognizer/test_demo_page.py's Chromium, fake
    microphone and recorder), loaded from the gateway and reaching nothing else: the locale picked
    (ja-JP, whose recognizer asks for a key) is what its stream is routed to, and the page shows the
    final lines /vosk gives on the audio the page sent, written for people (its config's ``written``
    goes through the gateway)."""
    stack = locales.stack
    file_pcm = read_pcm(microphone_wav)
    offline = Offline(browser, stack.http)
    page = offline.page
    page.goto(f"{stack.http}/demo")
    assert page.locator("#locale option").all_inner_texts() == [OTHER_LOCALE, "ko-KR"]
    page.select_option("#locale", OTHER_LOCALE)
    page.fill("#key", KEY)
    before = _vosk_streams(stack.http, OTHER_LOCALE)
    started = time.monotonic()
    page.click("#record")
    page.wait_for_function("document.querySelectorAll('#finals .final').length >= 1", timeout=120_000)
    time.sleep(max(0.0, len(file_pcm) / DEVICE_RATE + 1.0 - (time.monotonic() - started)))
    page.click("#record")
    page.wait_for_function("document.getElementById('record').textContent === 'Record'", timeout=60_000)
    assert page.inner_text("#status").startswith("Done"), page.inner_text("#status")
    shown = page.locator("#finals .final").all_inner_texts()
    chunks = [np.array(data, dtype="<i2").tobytes() for _, data in offline.sent()[1:-1]]
    finals, _ = vosk_replies(locales.recognizers[OTHER_LOCALE].ws, KEY, DEVICE_RATE, chunks)
    assert len(finals) >= 2 and shown == page_lines(finals), (shown, finals)
    assert _vosk_streams(stack.http, OTHER_LOCALE) == before + 1, "the page's stream went to the locale picked"
    assert offline.refused == [] and offline.errors == [], (offline.refused, offline.errors)
    offline.context.close()


def _vosk_streams(base: str, locale: str) -> float:
    """/vosk streams of ``locale`` the gateway relayed that ended with a normal close, from its /metrics."""
    for family in text_string_to_metric_families(httpx.get(f"{base}/metrics").text):
        for sample in family.samples:
            if sample.name == "speech_gateway_requests_total" and sample.labels == {"route": "vosk", "locale": locale, "code": "1000"}:
                return sample.value
    return 0.0


def test_the_demo_asks_for_the_key_only_for_a_locale_that_needs_one(locales: Locales, browser: Browser) -> None:
    """Behind the gateway one locale's recognizer has a key and the other's not: the page records
    ko-KR without one, and asks for it when ja-JP is picked."""
    offline = Offline(browser, locales.stack.http)
    page = offline.page
    page.goto(f"{locales.stack.http}/demo")
    page.select_option("#locale", "ko-KR")
    page.click("#record")
    page.wait_for_function("document.getElementById('status').textContent.startsWith('Listening')", timeout=30_000)
    page.click("#record")
    page.wait_for_function("document.getElementById('record').textContent === 'Record'", timeout=60_000)
    page.select_option("#locale", OTHER_LOCALE)
    page.click("#record")
    assert "needs its key" in page.inner_text("#status")
    assert offline.refused == [] and offline.errors == [], (offline.refused, offline.errors)
    offline.context.close()
