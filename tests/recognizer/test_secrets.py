"""No key in any log line, and a key in the URL only where a client has no other way to send it.

``python -m speech_recognizer`` with an ``ApiKey``, at the default log level
(uvicorn's access log on) and with JSON disk logs. Keys are sent in URLs every
way a client does: REST with ``?subscription-key=`` (refused: 403 saying where
a key goes), and WebSocket upgrades as the Speech SDK for JavaScript sends them
(``?Ocp-Apim-Subscription-Key=``, ``?Authorization=Bearer%20…``; accepted, since
a browser cannot set headers on a WebSocket), right and wrong. Neither key may
appear in the console or disk logs; the requests' access lines must be there,
with the key's value hidden. A stream paced beside stays strictly real time.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from harness.server import Server
from harness.speech import Audio, make_audio
from speech_recognizer import contract as c

from ..hostile import assert_strict, paced_stream, real_server_for

KEY = "Secret-Key-4c1f0e9b7a"
WRONG = "Wrong-Key-77d3a2c5e1"
REST = "/speech/recognition/conversation/cognitiveservices/v1"
USP = "/speech/recognition/interactive/cognitiveservices/v1"


@pytest.fixture(scope="module")
def stream_audio(tmp_path_factory: pytest.TempPathFactory) -> Audio:
    return make_audio(tmp_path_factory.mktemp("paced"))


@pytest.fixture(scope="module")
def keyed(stream_audio: Audio) -> Iterator[Server]:
    with real_server_for(stream_audio, f"ApiKey={KEY}", "Logging:Console:LogLevel:Default=Information", "Logging:Disk:Format=json",
                         headers={c.KEY_HEADER: KEY}) as srv:
        yield srv


def query(**params: str) -> str:
    return urllib.parse.urlencode({"language": "ko-KR", **params}, quote_via=urllib.parse.quote)


def upgrade(srv: Server, path: str, **params: str) -> int:
    """The HTTP status of a WebSocket upgrade to ``path`` with ``params`` (101: accepted)."""
    try:
        with connect(f"{srv.ws}{path}?{query(**params)}", subprotocols=["USP"] if path == USP else None, open_timeout=30):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


def test_keys_in_urls_are_never_logged(keyed: Server, stream_audio: Audio, speech_wav: Path) -> None:
    wav = speech_wav.read_bytes()
    with paced_stream(keyed, stream_audio, {c.KEY_HEADER: KEY}) as stream:
        for name in ("subscription-key", c.KEY_HEADER):
            for key in (KEY, WRONG):
                r = httpx.post(f"{keyed.http}{REST}?{query(**{name: key})}", content=wav, headers={"Content-Type": "audio/wav"}, timeout=60)
                assert r.status_code == 403, r.text
                assert f"send it in the {c.KEY_HEADER} header" in r.json()["error"]["message"]
        header = httpx.post(f"{keyed.http}{REST}?{query(**{'subscription-key': WRONG})}", content=wav,
                            headers={"Content-Type": "audio/wav", c.KEY_HEADER: KEY}, timeout=60)
        assert header.status_code == 200, "the header's key counts; the URL's is ignored"
        assert upgrade(keyed, USP, **{c.KEY_HEADER: KEY, "X-ConnectionId": "0123"}) == 101
        assert upgrade(keyed, USP, Authorization=f"Bearer {KEY}") == 101
        assert upgrade(keyed, USP, **{c.KEY_HEADER: WRONG}) == 401
        assert upgrade(keyed, "/vosk", **{c.KEY_HEADER: KEY}) == 101
        assert httpx.get(f"{keyed.http}/nowhere?{query(**{'access_token': KEY})}").status_code == 404
    assert_strict(stream, stream_audio.seconds)
    keyed.proc.terminate()  # the logs are complete once it has stopped
    keyed.proc.wait(30)
    console = keyed.log.read_text()
    disk = (keyed.workdir / "output" / "logs" / "speech-recognizer.jsonl").read_text()
    for log in (console, disk):
        assert KEY not in log and WRONG not in log
    assert console.count("subscription-key=***") == 3 and console.count(f"{c.KEY_HEADER}=***") >= 4, console
    assert "Authorization=***" in console and "access_token=***" in console, console
    assert all(json.loads(line) for line in disk.splitlines())
