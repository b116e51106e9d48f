"""SpeechToText fields that become recognizer settings: their defaults and bounds are the recognizer's own
declarations (speech_recognizer.settings), never retyped, and every value the API allows, the recognizer takes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import typing
from typing import Any

import pytest

from speech_operator import api, builders
from speech_recognizer import contract
from speech_recognizer.settings import LOG_LEVELS, Settings, declared, parse
from tests.doc_tables import README, assert_generated, one_line

pytestmark = pytest.mark.unit  # no model, server, operator or browser: the quick run (README, Tests)

#: The API field (its path in the spec) -> the Settings field it is passed to.
MIRRORED = {
    ("drainSeconds",): "drain_seconds",
    ("decoderMaxCount",): "decoder_max_count",
    ("warmup", "count"): "warmup_count",
    ("warmup", "seconds"): "warmup_seconds",
    ("connections", "max"): "max_connections",
    ("connections", "idleSeconds"): "connection_idle_seconds",
    ("audioIdleSeconds",): "audio_idle_seconds",
}


def field_schema(path: tuple[str, ...]) -> dict[str, Any]:
    """The JSON schema of a spec field (the integer branch of an optional one)."""
    schema = api.SpeechToTextSpec.model_json_schema()
    node = schema
    for part in path:
        node = node["properties"][part]
        if "$ref" in node or "anyOf" in node and "$ref" in node["anyOf"][0]:
            node = schema["$defs"][(node.get("$ref") or node["anyOf"][0]["$ref"]).rsplit("/", 1)[1]]
    return next((b for b in node.get("anyOf", []) if b.get("type") == "integer"), node)


def spec_with(path: tuple[str, ...], value: object) -> api.SpeechToTextSpec:
    fields: dict[str, Any] = {"locale": "ko-KR", "eula": "accept"}
    node = fields
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value
    return api.SpeechToTextSpec.model_validate(fields)


def recognizer_settings(spec: api.SpeechToTextSpec) -> Settings:
    """What the recognizer makes of the arguments the operator gives its container."""
    return parse(builders.recognizer_args(spec), environ={})


@pytest.mark.parametrize(("path", "name"), MIRRORED.items(), ids=[".".join(p) for p in MIRRORED])
def test_the_recognizer_takes_every_value_the_api_allows(path: tuple[str, ...], name: str) -> None:
    bounds = field_schema(path)
    for value in (bounds["minimum"], bounds["maximum"]):
        assert getattr(recognizer_settings(spec_with(path, value)), name) == value


def test_the_api_has_the_recognizers_drain_default_and_bounds() -> None:
    drain, declaration = field_schema(("drainSeconds",)), declared("drain_seconds")
    assert (drain["minimum"], drain["maximum"], drain["default"]) == (declaration.minimum, declaration.maximum, declaration.default)
    assert recognizer_settings(spec_with(("locale",), "ko-KR")).drain_seconds == Settings().drain_seconds


def test_the_api_has_the_recognizers_connection_bounds() -> None:
    """``connections.max`` and ``connections.idleSeconds`` take MaxConnections' and ConnectionIdleSeconds'
    declared bounds; ``audioIdleSeconds`` starts at the least whole second above AudioIdleSeconds' ``above``."""
    for path, name in ((("connections", "max"), "max_connections"), (("connections", "idleSeconds"), "connection_idle_seconds")):
        bounds, declaration = field_schema(path), declared(name)
        assert (bounds["minimum"], bounds["maximum"]) == (declaration.minimum, declaration.maximum), path
    audio, declaration = field_schema(("audioIdleSeconds",)), declared("audio_idle_seconds")
    assert declaration.above is not None and audio["minimum"] - 1 <= declaration.above < audio["minimum"]
    assert audio["maximum"] == api.MAX_AUDIO_IDLE_SECONDS


def test_unset_connection_fields_emit_nothing_and_leave_the_recognizers_defaults() -> None:
    """Unset: no argument, so the recognizer's own default holds (and a new default reaches every pod);
    ``connections: {}`` is the same."""
    keys = (contract.MAX_CONNECTIONS, contract.CONNECTION_IDLE_SECONDS, contract.AUDIO_IDLE_SECONDS)
    for spec in (spec_with(("locale",), "ko-KR"), spec_with(("connections",), {})):
        assert not [a for a in builders.recognizer_args(spec) if a.split("=", 1)[0] in keys]
        got = recognizer_settings(spec)
        assert (got.max_connections, got.connection_idle_seconds, got.audio_idle_seconds) == (
            Settings().max_connections, Settings().connection_idle_seconds, Settings().audio_idle_seconds)
    spec = api.SpeechToTextSpec.model_validate({"locale": "ko-KR", "eula": "accept", "audioIdleSeconds": 5,
                                                "connections": {"max": 2000, "idleSeconds": 60}})
    assert {"MaxConnections=2000", "ConnectionIdleSeconds=60", "AudioIdleSeconds=5"} <= set(builders.recognizer_args(spec))


def test_every_log_level_the_api_allows_is_the_recognizers() -> None:
    levels = typing.get_args(api.LogLevel)
    assert {level.lower() for level in levels} <= set(LOG_LEVELS)
    for level in levels:
        assert recognizer_settings(spec_with(("logLevel",), level)).log_level == LOG_LEVELS[level.lower()]
    assert recognizer_settings(spec_with(("locale",), "ko-KR")).log_level == Settings().log_level


def test_the_service_port_defaults_to_the_recognizers() -> None:
    assert api.ServiceSpec().port == contract.PORT == declared("port").default


#: A recognizer whose declarations differ from today's, seen by a fresh interpreter before the API is built.
CHANGED_RECOGNIZER = """
import dataclasses, json, sys
import speech_recognizer.settings as s
real = s.declared
changed = {"drain_seconds": dict(default=45.0, minimum=5, maximum=900), "decoder_max_count": dict(minimum=2),
           "warmup_count": dict(minimum=1), "warmup_seconds": dict(default=7.0),
           "max_connections": dict(default=900, minimum=2, maximum=5000), "connection_idle_seconds": dict(default=200.0, minimum=3, maximum=7200),
           "audio_idle_seconds": dict(default=20.0, above=1.5)}
s.declared = lambda name: dataclasses.replace(real(name), **changed.get(name, {}))
from speech_operator import api
json.dump(api.SpeechToTextSpec.model_json_schema(), sys.stdout)
"""


def test_the_api_follows_the_recognizers_declarations() -> None:
    """Derived, not equal by chance: a recognizer declaring other defaults and bounds changes the API (and so the CRD)."""
    out = subprocess.run([sys.executable, "-c", CHANGED_RECOGNIZER], capture_output=True, text=True, check=True, timeout=60)
    schema = json.loads(out.stdout)
    drain = schema["properties"]["drainSeconds"]
    assert (drain["minimum"], drain["maximum"], drain["default"]) == (5, 900, 45)
    assert schema["properties"]["decoderMaxCount"]["anyOf"][0]["minimum"] == 2
    warmup = schema["$defs"]["WarmupSpec"]["properties"]
    assert warmup["count"]["anyOf"][0]["minimum"] == 1
    assert "the recognizer's default (7) when unset" in warmup["seconds"]["description"]
    connections = schema["$defs"]["ConnectionsSpec"]["properties"]
    assert (connections["max"]["anyOf"][0]["minimum"], connections["max"]["anyOf"][0]["maximum"]) == (2, 5000)
    assert "the recognizer's default (900) when unset" in connections["max"]["description"]
    assert (connections["idleSeconds"]["anyOf"][0]["minimum"], connections["idleSeconds"]["anyOf"][0]["maximum"]) == (3, 7200)
    assert "the recognizer's default (200) when unset" in connections["idleSeconds"]["description"]
    audio = schema["properties"]["audioIdleSeconds"]
    assert audio["anyOf"][0]["minimum"] == 2 and "the recognizer's default (20) when unset" in audio["description"]


def settable_keys_sentence() -> str:
    """README, Create, scale and delete a locale: the keys ``spec.settings`` takes, as the API declares them."""
    return "The keys: " + ", ".join(f"`{key}`" for key in api.SETTABLE) + "; the API server refuses the others"


def test_readme_names_the_keys_spec_settings_takes() -> None:
    """Every recognizer setting the spec's own fields do not set, in the declarations' order, and no other."""
    assert_generated(settable_keys_sentence(), README, "list of spec.settings keys")


def test_readme_gives_the_recognizers_defaults_of_the_spec_fields_left_unset() -> None:
    """README, Create, scale and delete a locale: "unset, ... the recognizer's defaults hold (500 connections, 300 s,
    30 s)" for spec.connections.max, .idleSeconds and spec.audioIdleSeconds, and "`spec.drainSeconds` (default 30,
    its `Drain:Seconds`)": the recognizer's declared defaults, which the API's drainSeconds has too."""
    text = one_line(README.read_text())
    found = re.search(r"the recognizer's defaults hold \((\d+) connections, (\d+) s, (\d+) s\)", text)
    assert found, "README no longer gives the defaults of spec.connections and spec.audioIdleSeconds"
    declared_defaults = [declared(n).default for n in ("max_connections", "connection_idle_seconds", "audio_idle_seconds")]
    assert [float(g) for g in found.groups()] == declared_defaults, f"README says {found.group(0)}; the recognizer declares {declared_defaults}"
    drain = re.search(r"`spec\.drainSeconds` \(default (\d+), its `Drain:Seconds`\)", text)
    assert drain, "README no longer gives spec.drainSeconds' default"
    assert int(drain.group(1)) == api.SpeechToTextSpec.model_fields["drainSeconds"].default == declared("drain_seconds").default
