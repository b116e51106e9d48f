"""README's HTTP routes (and the protocols' routes) are the app's, both ways.

The tables' words are prose, so they are checked rather than generated: every route a row names is in the
app's OpenAPI document with its method, and every path of that document is named in the tables (a path
with a parameter by an example of it: ``/demo/{file}`` by ``/demo/demo.js``), or is one of
:data:`NOT_IN_THE_TABLES`, each said why.
"""

from __future__ import annotations

import re

import pytest

from speech_recognizer.app import create_app
from speech_recognizer.settings import parse
from tests.doc_tables import README, code_spans, table

pytestmark = pytest.mark.unit  # no model, server, operator or browser: the quick run (README, Tests)

#: Paths the app serves that the README's tables do not name, and why.
NOT_IN_THE_TABLES = {
    "/records/usage-logs": "the same summary as /records/usage-logs/ (Azure's clients ask for both)",
    "/swagger/index.html": "the page of /swagger at Swagger UI's own path",
    "/swagger/v1/swagger.json": "/openapi.json at the path Azure's container serves it",
    "/swagger/ui/{file}": "Swagger UI's scripts and styles, which the /swagger page loads",
}


def served() -> dict[str, set[str]]:
    """The app's paths and their methods, from the OpenAPI document it builds of its routes (no model needed)."""
    doc = create_app(parse(["Eula=accept"], environ={})).state.openapi
    return {path: {m.upper() for m in ops} for path, ops in doc["paths"].items()}


def pattern(path: str) -> re.Pattern[str]:
    """A served path as a regex: a ``{parameter}`` matches one segment (``{MONTH}`` as the README writes one)."""
    return re.compile("".join("[^/]+" if part.startswith("{") else re.escape(part) for part in re.split(r"(\{[^}]*\})", path)))


def named() -> list[tuple[str | None, str]]:
    """(method or None, path) of every route the routes and protocols tables name: `GET /x`, `POST /x?...`,
    `ws://host:5000/x?...` (a WebSocket's upgrade: GET), a bare `/x`."""
    text = README.read_text()
    cells = [c for row in table(text, "| route | what |") for c in row]
    cells += [c for row in table(text, "| protocol | where | notes |") for c in row]
    out: list[tuple[str | None, str]] = []
    for code in (code for cell in cells for code in code_spans(cell)):
        found = re.fullmatch(r"(?:(GET|POST|PUT|DELETE) |(ws)://[^/]+)?(/[^?\s]*)(?:\?.*)?", code)
        if found:
            out.append(("GET" if found.group(2) else found.group(1), found.group(3)))
    return out


def test_readme_routes_are_the_apps() -> None:
    paths = served()
    routes = named()
    for method, path in routes:
        match = [p for p in paths if pattern(p).fullmatch(path)]
        assert match, f"README names {path}, which the app does not serve"
        if method:
            assert any(method in paths[p] for p in match), f"README names {method} {path}; the app serves {path} for {sorted(set().union(*(paths[p] for p in match)))}"
    unnamed = {p for p in paths if not any(pattern(p).fullmatch(path) for _, path in routes)}
    assert not unnamed - set(NOT_IN_THE_TABLES), f"paths the app serves that README's tables do not name (nor NOT_IN_THE_TABLES): {sorted(unnamed - set(NOT_IN_THE_TABLES))}"
    assert not set(NOT_IN_THE_TABLES) - unnamed, f"NOT_IN_THE_TABLES: not served, or named: {sorted(set(NOT_IN_THE_TABLES) - unnamed)}"
