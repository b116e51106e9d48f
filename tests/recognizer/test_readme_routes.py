"""README's HTTP routes (and the protocols' routes) are the app's, both ways.

The tables' words are prose, so they are checked rather than generated: every route a row names is in the
app's OpenAPI document with its method, and every path of that document is named in the tables (a path
with a parameter by an example of it: ``/demo/{file}`` by ``/demo/demo.js``), or is one of
:data:`NOT_IN_THE_TABLES`, each said why.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from speech_recognizer.app import create_app
from speech_recognizer.settings import parse
from speech_recognizer.vosk_ws import VoskConfig
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


def shape(value: Any) -> Any:
    """The keys of a JSON value, nested (a list by its first item): what the README writes of an answer."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return None


def written_shape(code: str) -> Any:
    """``{"a","b","m":[{"x","y"}]}``, as the README writes an answer's keys, read as :func:`shape` gives them."""
    return json.loads(re.sub(r'"(\w+)"(?=\s*[,}])', r'"\1": null', code))


def route_cell(route: str) -> str:
    return next(what for name, what in table(README.read_text(), "| route | what |") if name == f"`{route}`")


def test_readme_says_the_keys_of_the_answers_the_operator_and_azure_read(tmp_path: Path) -> None:
    """`GET /sessions` (what the autoscaler reads) and the usage summary: the keys the README lists, in order,
    are those the app answers, no more, no fewer; and the vosk config message's keys are those VoskConfig takes."""
    app = create_app(parse(["Eula=accept", f"Mounts:Output={tmp_path}", f"Mounts:Models={tmp_path}"], environ={}))
    client = TestClient(app)  # no lifespan: no model is loaded, the answers' keys are there all the same
    for route, path in (("GET /sessions", "/sessions"), ("GET /records/usage-logs/`, `GET /records/usage-logs/{MONTH}/{YEAR}", "/records/usage-logs/")):
        written = written_shape(code_spans(route_cell(route))[0])
        answered = shape(client.get(path).json())
        assert list(written) == list(answered) and written == answered, f"README says {route} answers {written}, it answers {answered}"
    vosk = next(notes for protocol, _, notes in table(README.read_text(), "| protocol | where | notes |") if protocol == "vosk-server WebSocket")
    config = written_shape(code_spans(vosk)[0])["config"]
    assert list(config) == list(vars(VoskConfig(16000))), f"README says the config takes {list(config)}; VoskConfig takes {list(vars(VoskConfig(16000)))}"


def test_readme_says_the_values_the_rest_and_openai_routes_take() -> None:
    """REST's `format=` and `profanity=` values, OpenAI's form fields and `response_format`s, as the OpenAPI
    document declares them (the route's own validation is built from the same lists)."""
    doc = create_app(parse(["Eula=accept"], environ={})).state.openapi
    rows = {protocol: (where, notes) for protocol, where, notes in table(README.read_text(), "| protocol | where | notes |")}
    rest_where = rows["REST short audio (Azure's cloud contract)"][0]
    query = dict(part.split("=", 1) for part in code_spans(rest_where)[0].split("?", 1)[1].split("&"))
    params = {p["name"]: p.get("schema", {}).get("enum") for p in doc["paths"]["/speech/recognition/{mode}/cognitiveservices/v1"]["post"]["parameters"]}
    for name, values in query.items():
        assert name in params, f"README names the REST parameter {name}, which the route does not declare"
        if values:
            assert values.split("|") == params[name], f"README says {name}={values}; the route takes {params[name]}"
    openai_where, openai_notes = rows["OpenAI `audio.transcriptions`"]
    form = doc["paths"]["/v1/audio/transcriptions"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    fields = code_spans(openai_where.split("(multipart", 1)[1].split(")", 1)[0])
    assert fields and set(fields) <= set(form), f"README names the form fields {fields}; the route declares {sorted(form)}"
    formats = code_spans(openai_notes.split(";", 1)[0])  # `json`, `text`, ...; the key as bearer token
    assert formats == form["response_format"]["enum"], f"README says the formats are {formats}; the route takes {form['response_format']['enum']}"
