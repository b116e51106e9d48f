"""Browsers on another origin (``Http:CorsOrigins``), with the real client: headless Chromium (the demo page's,
tests/recognizer/test_demo_page.py) loads a page from another loopback port, which ``fetch()``\\es the REST and the
OpenAI routes with the key and a WAV body, as a web app on ``https://app.example.com`` calls
``https://speech.example.com``.

Before, every such call failed in the browser (``TypeError: Failed to fetch``): its preflight (``OPTIONS``, no key)
got 405, and no answer carried ``Access-Control-Allow-Origin``. A server without the setting still answers so.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page
from starlette.applications import Starlette
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from speech_recognizer import contract
from speech_recognizer.app import create_app
from speech_recognizer.logs import ACCESS_LOGGER
from speech_recognizer.models import ModelRegistry

from ..conftest import TEST_KEY, make_settings
from ..support import ServerThread, scrape_metrics
from .test_demo_page import browser, microphone_wav  # noqa: F401 - fixtures: the demo page's Chromium (and its fake microphone)

REST = "/speech/recognition/conversation/cognitiveservices/v1?language=ko-KR"
OPENAI = contract.ROUTE_OPENAI_TRANSCRIPTIONS
FAILED = "TypeError: Failed to fetch"
#: The headers of an answer a page may read beyond the safelisted ones, as ``Access-Control-Expose-Headers`` names them.
EXPOSED = "Retry-After, X-Speech-Failure"

#: What the page runs: its WAV (from its own origin) POSTed to ``url`` with ``headers``, as the body or, with ``form``,
#: as the ``file`` of a multipart form with those fields; the answer's status, text, Retry-After and X-Speech-Failure (the
#: failure's name), or the error.
CALL = """async ([url, headers, form]) => {
  const wav = await (await fetch("/speech.wav")).blob();
  let body = wav;
  if (form) {
    body = new FormData();
    body.append("file", wav, "speech.wav");
    for (const [name, value] of Object.entries(form)) body.append(name, value);
  }
  try {
    const answer = await fetch(url, { method: "POST", headers, body });
    return { status: answer.status, text: await answer.text(), retryAfter: answer.headers.get("Retry-After"),
             failure: answer.headers.get("X-Speech-Failure") };
  } catch (error) {
    return { error: String(error) };
  }
}"""


class WebApp(ServerThread):
    """A web app's own server, on a loopback port of its own (its origin): a page, and the WAV it sends."""

    def __init__(self, wav: Path) -> None:
        audio = wav.read_bytes()
        super().__init__(Starlette(routes=[
            Route("/", lambda request: HTMLResponse("<!doctype html><title>app</title><p>a web app</p>")),
            Route("/speech.wav", lambda request: Response(audio, media_type="audio/wav")),
        ]))

    @property
    def origin(self) -> str:
        return self.http

    def page(self, chromium: Browser) -> Page:
        page = chromium.new_context().new_page()
        page.goto(self.http + "/")
        return page


def rest(page: Page, base: str, key: str = TEST_KEY) -> dict:
    """The page's REST call to ``base``: the WAV as the body, the key in ``Ocp-Apim-Subscription-Key``."""
    return page.evaluate(CALL, [base + REST, {contract.KEY_HEADER: key, "Content-Type": "audio/wav"}, None])


def openai(page: Page, base: str, key: str = TEST_KEY) -> dict:
    """The page's OpenAI call to ``base``, as OpenAI's JavaScript client sends it: a form, the key as a bearer
    token, and a header of the client's own (``X-Stainless-Lang``)."""
    return page.evaluate(CALL, [base + OPENAI, {"Authorization": f"Bearer {key}", "X-Stainless-Lang": "js"},
                                {"model": "whisper-1", "language": "ko"}])


@pytest.fixture(scope="module")
def apps(speech_wav: Path) -> Iterator[tuple[WebApp, WebApp]]:
    """Two web apps, each on an origin of its own: the one allowed, and another."""
    with WebApp(speech_wav) as allowed, WebApp(speech_wav) as other:
        yield allowed, other


def refusals(base: str) -> dict:
    """The server's ``speech_refused_total`` and ``speech_requests_total`` samples that are not 0."""
    return {k: v for k, v in scrape_metrics(base).items() if k[0] in ("speech_refused_total", "speech_requests_total") and v}


def test_a_page_of_an_allowed_origin_gets_its_transcript_and_others_are_refused_by_the_browser(
        browser: Browser, apps: tuple[WebApp, WebApp], keyed_server: ServerThread, registry: ModelRegistry, tmp_path: Path,  # noqa: F811
        speech_wav: Path, caplog: pytest.LogCaptureFixture) -> None:
    allowed, other = apps
    page = allowed.page(browser)
    # without Http:CorsOrigins (the default: today's server), the browser refuses both calls
    assert rest(page, keyed_server.http) == {"error": FAILED}
    assert openai(page, keyed_server.http) == {"error": FAILED}

    settings = make_settings(tmp_path, f"ApiKey={TEST_KEY}", "Billing=https://example.invalid", f"Http:CorsOrigins={allowed.origin}")
    with ServerThread(create_app(settings, registry)) as server:
        caplog.set_level(logging.INFO, ACCESS_LOGGER)
        caplog.set_level(logging.INFO, "speech_recognizer")
        logging.getLogger(ACCESS_LOGGER).addHandler(caplog.handler)
        try:
            before = refusals(server.http)
            expected_rest = httpx.post(server.http + REST, content=speech_wav.read_bytes(), timeout=60,
                                       headers={contract.KEY_HEADER: TEST_KEY, "Content-Type": "audio/wav"}).json()
            expected_text = httpx.post(server.http + OPENAI, headers={"Authorization": f"Bearer {TEST_KEY}"}, timeout=60,
                                       files={"file": ("speech.wav", speech_wav.read_bytes(), "audio/wav")},
                                       data={"model": "whisper-1", "language": "ko"}).json()["text"]
            assert expected_rest["RecognitionStatus"] == "Success" and expected_text, (expected_rest, expected_text)

            got = rest(page, server.http)
            assert got.get("status") == 200 and httpx.Response(200, text=got["text"]).json() == expected_rest, got
            got = openai(page, server.http)
            assert got.get("status") == 200 and httpx.Response(200, text=got["text"]).json()["text"] == expected_text, got
            # a refusal is readable too: the page can say why
            got = rest(page, server.http, key="not-the-key")
            assert got.get("status") == 401 and "wrong key" in got["text"], got
            # a page of another origin is refused by the browser, whatever its key
            stranger = other.page(browser)
            assert rest(stranger, server.http) == {"error": FAILED}
            assert openai(stranger, server.http) == {"error": FAILED}

            # the preflights are no refusals: only the wrong key is counted (and the 4 recognitions, by the routes)
            after = refusals(server.http)
            grown = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
            assert grown == {
                ("speech_requests_total", (("route", "rest-conversation"), ("status", "200"))): 2,
                ("speech_requests_total", (("route", "openai"), ("status", "200"))): 2,
                ("speech_requests_total", (("route", "rest-conversation"), ("status", "401"))): 1,
                ("speech_refused_total", (("reason", "auth_wrong"), ("route", "rest-conversation"))): 1,
            }, grown
            lines = [r.getMessage() for r in caplog.records if r.name == ACCESS_LOGGER and '"OPTIONS ' in r.getMessage()]
            # one line each (the browser may keep an answered preflight and not ask again): 200, or 400 for the other origin
            assert {line.rsplit(" ", 1)[1] for line in lines} == {"200", "400"}, lines
            said = [m for r in caplog.records if r.name.startswith("speech_recognizer")
                    and (m := r.getMessage()).startswith(("rest", "openai:", "http:"))]  # the failure policy's lines
            assert said == ["rest-conversation: auth_wrong: wrong key: the key does not match this server's ApiKey"], said
        finally:
            logging.getLogger(ACCESS_LOGGER).removeHandler(caplog.handler)


def test_what_the_preflight_and_the_answer_say(registry: ModelRegistry, tmp_path: Path) -> None:
    """The preflight allows the method and the headers asked for, and lets no credentials through; an answer exposes
    ``Retry-After`` (a busy server's 503) and ``X-Speech-Failure`` (its name); with ``*`` any origin, still without
    credentials."""
    preflight = {"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "ocp-apim-subscription-key,content-type"}
    for origins, allow in (("https://app.example.com", "https://app.example.com"), ("*", "*")):
        with ServerThread(create_app(make_settings(tmp_path / origins.replace("/", "_"), f"Http:CorsOrigins={origins}"), registry)) as server:
            asked = httpx.options(server.http + REST, headers=preflight)
            assert asked.status_code == 200, asked.text
            assert asked.headers["Access-Control-Allow-Origin"] == allow
            assert asked.headers["Access-Control-Allow-Headers"] == "ocp-apim-subscription-key,content-type"
            assert "POST" in asked.headers["Access-Control-Allow-Methods"]
            assert "Access-Control-Allow-Credentials" not in asked.headers
            answer = httpx.get(server.http + contract.ROUTE_STATUS, headers={"Origin": "https://app.example.com"})
            assert answer.headers["Access-Control-Allow-Origin"] == allow
            assert answer.headers["Access-Control-Expose-Headers"] == EXPOSED
            assert "Access-Control-Allow-Credentials" not in answer.headers
