"""Browsers on another origin through the gateway (``SPEECH_GATEWAY_CORS_ORIGINS``), with the real client: headless
Chromium loads a page from another loopback port, which ``fetch()``\\es the gateway's REST and OpenAI routes with the
key, in front of real recognizers (tests/gateway/conftest.py) that allow that origin themselves too.

The gateway answers the preflight itself (an OpenAI one has no form to pick a locale from), and its answers carry its
own ``Access-Control-*`` headers only (a recognizer's too would make the browser refuse them: the header twice).
"""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page

from speech_operator.gateway import GatewayConfig
from speech_recognizer import contract
from tests.recognizer.test_cors import CALL, FAILED, WebApp
from tests.support import scrape_metrics

from .conftest import KEY, OTHER_LOCALE, Stack, speech_to_text, two_locales

REST = f"/speech/recognition/conversation/cognitiveservices/v1?language={OTHER_LOCALE}"
OPENAI = contract.ROUTE_OPENAI_TRANSCRIPTIONS
ACCESS = "speech_operator.gateway.access"


def rest(page: Page, base: str) -> dict:
    return page.evaluate(CALL, [base + REST, {contract.KEY_HEADER: KEY, "Content-Type": "audio/wav"}, None])


def openai(page: Page, base: str) -> dict:
    return page.evaluate(CALL, [base + OPENAI, {"Authorization": f"Bearer {KEY}", "X-Stainless-Lang": "js"},
                                {"model": "whisper-1", "language": OTHER_LOCALE}])


def counted(base: str) -> dict:
    """The gateway's ``speech_gateway_requests_total`` and ``speech_gateway_failures_total`` samples that are not 0."""
    names = ("speech_gateway_requests_total", "speech_gateway_failures_total")
    return {k: v for k, v in scrape_metrics(base).items() if k[0] in names and v}


def test_a_page_of_an_allowed_origin_calls_the_gateway_and_others_are_refused_by_the_browser(
        browser: Browser, tmp_path_factory: pytest.TempPathFactory, speech_wav: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path_factory.mktemp("cors")
    with WebApp(speech_wav) as allowed, WebApp(speech_wav) as other:
        config = GatewayConfig(host="127.0.0.1", port=0, cors_origins=allowed.origin)
        with two_locales(root, f"Http:CorsOrigins={allowed.origin}", config=config) as found:
            gateway, recognizer = found.stack, found.recognizers[OTHER_LOCALE]
            expected_rest = httpx.post(recognizer.http + REST, content=speech_wav.read_bytes(), timeout=60,
                                       headers={contract.KEY_HEADER: KEY, "Content-Type": "audio/wav"}).json()
            expected_text = httpx.post(recognizer.http + OPENAI, headers={"Authorization": f"Bearer {KEY}"}, timeout=60,
                                       files={"file": ("speech.wav", speech_wav.read_bytes(), "audio/wav")},
                                       data={"model": "whisper-1", "language": OTHER_LOCALE}).json()["text"]
            assert expected_rest["RecognitionStatus"] == "Success" and expected_text, (expected_rest, expected_text)
            caplog.set_level(logging.INFO, ACCESS)
            before = counted(gateway.http)

            page = allowed.page(browser)
            got = rest(page, gateway.http)
            assert got.get("status") == 200 and httpx.Response(200, text=got["text"]).json() == expected_rest, got
            got = openai(page, gateway.http)
            assert got.get("status") == 200 and httpx.Response(200, text=got["text"]).json()["text"] == expected_text, got
            stranger = other.page(browser)
            assert rest(stranger, gateway.http) == {"error": FAILED}
            assert openai(stranger, gateway.http) == {"error": FAILED}

            # the preflights reached no route: counted neither as requests nor as failures; one access line each
            after = counted(gateway.http)
            assert {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)} == {
                ("speech_gateway_requests_total", (("code", "200"), ("locale", OTHER_LOCALE), ("route", "rest"))): 1,
                ("speech_gateway_requests_total", (("code", "200"), ("locale", OTHER_LOCALE), ("route", "openai"))): 1,
            }
            lines = [r.getMessage() for r in caplog.records if r.name == ACCESS and '"OPTIONS ' in r.getMessage()]
            assert {line.split('" ', 1)[1].split()[0] for line in lines} == {"200", "400"}, lines

            # a gateway without the setting (today's), in front of the same recognizers: the browser refuses the calls,
            # a form without a key too (no preflight: a "simple" request), whose answer the recognizer allowed the page
            (root / "plain").mkdir()
            with Stack(root / "plain") as plain:
                for locale, r in found.recognizers.items():
                    plain.create(speech_to_text(locale.lower(), locale, r.port))
                    plain.routes(locale)
                assert rest(page, plain.http) == {"error": FAILED}
                assert openai(page, plain.http) == {"error": FAILED}
                simple = [plain.http + OPENAI, {}, {"model": "whisper-1", "language": "ko-KR"}]
                assert page.evaluate(CALL, simple) == {"error": FAILED}
                assert page.evaluate(CALL, [found.recognizers["ko-KR"].http + OPENAI, *simple[1:]]).get("status") == 200
