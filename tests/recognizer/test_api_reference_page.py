"""The interactive API reference (``/swagger``) in a real browser: Debian's Chromium, headless, driven by Playwright.

The browser may reach the server under test and nothing else: every other request is
refused and recorded, and the browser's own way out goes to a proxy that is not there, so a
page that needed a CDN (or an online validator) would fail here as it would on a
disconnected machine. Playwright uses the system's Chromium
(``apt-get install chromium``, see .ci/run); it never downloads a browser of its own.

README.md's screenshot (docs/swagger.png) is this module's own, taken once every route is listed: to refresh it, run
the first test with ``SPEECH_SWAGGER_SCREENSHOT=docs/swagger.png`` (a path, relative to where pytest runs; written only
when the test passes). Unset (CI), the shot stays in the test's tmp_path.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, Route, sync_playwright

from ..support import ServerThread

CHROMIUM = "/usr/bin/chromium"
#: A loopback port nobody listens on (the discard port; binding it would need root).
DEAD_PORT = 9
SCREENSHOT_ENV = "SPEECH_SWAGGER_SCREENSHOT"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is not installed: apt-get install chromium (see .ci/run)")
    with sync_playwright() as playwright:
        # Every host but loopback (which Chromium never proxies) goes to a proxy that is not there.
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[f"--proxy-server=http://127.0.0.1:{DEAD_PORT}"])
        yield browser
        browser.close()


class Offline:
    """A page that reaches only ``base``: every other request is aborted and kept in :attr:`refused`."""

    def __init__(self, browser: Browser, base: str) -> None:
        self.base = base
        self.refused: list[str] = []
        self.context = browser.new_context(viewport={"width": 1280, "height": 1400})
        self.context.route("**/*", self._gate)
        self.page: Page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    def _gate(self, route: Route) -> None:
        if route.request.url.startswith(self.base + "/"):
            route.continue_()
        else:
            self.refused.append(route.request.url)
            route.abort("internetdisconnected")


@pytest.fixture
def offline(browser: Browser, server: ServerThread) -> Iterator[Offline]:
    page = Offline(browser, server.http)
    yield page
    page.context.close()


def listed_operations(page: Page) -> set[tuple[str, str]]:
    """(method, path) of every operation the page shows."""
    page.wait_for_selector(".opblock-summary-path", timeout=60_000)
    pairs = page.eval_on_selector_all(
        ".opblock-summary",
        "els => els.map(e => [e.querySelector('.opblock-summary-method').innerText,"
        " e.querySelector('.opblock-summary-path').getAttribute('data-path')])",
    )
    return {(method.lower(), path) for method, path in pairs}


def test_the_page_lists_every_route_with_no_network(offline: Offline, server: ServerThread, tmp_path: Path) -> None:
    offline.page.goto(f"{server.http}/swagger")
    shown = listed_operations(offline.page)
    spec = httpx.get(f"{server.http}/openapi.json").json()
    documented = {(method, path) for path, item in spec["paths"].items() for method in item}
    assert shown == documented
    assert offline.refused == [], f"the page asked another host for: {offline.refused}"
    assert offline.errors == [], offline.errors
    offline.page.screenshot(path=str(tmp_path / "swagger.png"))
    if target := os.environ.get(SCREENSHOT_ENV):  # only a page the checks above passed
        shutil.copyfile(tmp_path / "swagger.png", target)


def test_try_it_out_on_ready_gets_200_from_the_server(offline: Offline, server: ServerThread) -> None:
    page = offline.page
    page.goto(f"{server.http}/swagger")
    page.wait_for_selector(".opblock-summary-path", timeout=60_000)
    operation = page.locator(".opblock", has=page.locator(".opblock-summary-path[data-path='/ready']"))
    operation.locator(".opblock-summary").click()
    operation.get_by_role("button", name="Try it out").click()
    operation.get_by_role("button", name="Execute").click()
    status = operation.locator(".live-responses-table .response .response-col_status")
    status.wait_for(timeout=30_000)
    assert status.inner_text().strip() == "200"
    body = operation.locator(".live-responses-table .response-col_description pre").first.inner_text()
    assert '"ready": true' in body, body
    assert offline.refused == [], offline.refused

