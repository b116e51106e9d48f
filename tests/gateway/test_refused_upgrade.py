"""A recognizer's refusal of a WebSocket upgrade reaches the client through the gateway as it would directly.

The Speech SDK's route refuses a wrong or missing key at the upgrade, with HTTP 401/403 and its reason as the body
(text/plain; charset=utf-8; no other header of note). Through the gateway the client gets the same status, body and
headers (the gateway used to answer its own "refused the connection: HTTP 401"), and a client the gateway accepted
while its locale woke gets a close 1008 whose reason is the recognizer's text. What was alike already, and is shown
in tests/gateway/test_routes.py: /vosk accepts and closes 1008 with the reason (the relay passes the close on), and
the Speech SDK (Python, JavaScript) reports only the status of a refused upgrade, not its body (a held SDK client
connects again after the 1008 and meets the refusal itself: the same CancellationDetails as directly).

One real recognizer process (``ApiKey``) stands behind two SpeechToTexts: ja-JP awake, ko-KR at zero pods, woken by
hand (its status set ready, as the kubelet would; no operator needed: the key is checked before the language). The
bounds on what the gateway reads of a refusal are shown against a stand-in upstream (no recognizer sends a huge or
endless refusal), and so is the close of a held client for each class of refusal (400, 404, 413, 429, 503, 500: a
recognizer refuses upgrades only for keys, but what stands in front of one, or a later version, may answer any).
"""

from __future__ import annotations

import asyncio
import http.client
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import azure.cognitiveservices.speech as speechsdk
import pytest
import pytest_asyncio
from aiohttp import web
from multidict import CIMultiDict
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from speech_operator import api, gateway_relay
from speech_operator.gateway import GATEWAY, Gateway, GatewayConfig, create_app, serving
from speech_operator.gateway_directory import Directory
from speech_operator.gateway_http_limits import client_leaves
from speech_operator.kube import MERGE_PATCH

from .conftest import KEY, NAMESPACE, OTHER_LOCALE, Recognizer, ServiceDNS, Stack, speech_to_text, start_recognizer
from .test_wake import AT_ZERO

USP = "/speech/recognition/conversation/cognitiveservices/v1"
ASLEEP = "ko-KR"
#: The client's request headers of each refusal: a wrong key, and none.
KEYS = {"wrong": {"Ocp-Apim-Subscription-Key": "not-the-key"}, "missing": {}}
#: A WebSocket client's handshake headers.
HANDSHAKE = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
#: Headers of one hop, or naming the server that wrote them: not the recognizer's answer.
HOP = {"date", "server", "connection"}


@dataclass
class Keyed:
    recognizer: Recognizer
    stack: Stack

    def set_ready(self, name: str, ready: int) -> None:
        """The SpeechToText ``name``'s ready pods, as the kubelet reports them, once the gateway has seen them."""
        self.stack.call(self.stack.objects.patch_namespaced_custom_object_status(
            api.GROUP, api.VERSION, NAMESPACE, api.PLURAL, name, {"status": {"readyReplicas": ready, "replicas": ready}},
            _content_type=MERGE_PATCH))
        self.stack.eventually(lambda: self.stack.directory.get((NAMESPACE, name)).ready_replicas == ready, 10, f"{name} ready={ready}")


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keyed]:
    root = tmp_path_factory.mktemp("refused")
    recognizer = start_recognizer(root, OTHER_LOCALE, f"ApiKey={KEY}", "Billing=https://example.invalid")
    try:
        recognizer.wait_ready()
        with Stack(root) as stack:
            stack.create(speech_to_text(OTHER_LOCALE.lower(), OTHER_LOCALE, recognizer.port))
            stack.create(speech_to_text(ASLEEP.lower(), ASLEEP, recognizer.port, replicas=0, autoscaling=AT_ZERO), ready=0)
            for locale in (OTHER_LOCALE, ASLEEP):
                stack.routes(locale)
            yield Keyed(recognizer, stack)
    finally:
        recognizer.kill()


def upgrade(port: int, target: str, headers: dict[str, str]) -> tuple[int, str, list[tuple[str, str]], bytes]:
    """A Speech SDK's upgrade to 127.0.0.1:``port``, refused: its status, reason phrase, headers (lower-cased names,
    but for those of one hop; sorted: the framing's place is the writer's) and body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", target, headers={**HANDSHAKE, "Sec-WebSocket-Protocol": "USP",
                                             "X-ConnectionId": "0123456789abcdef0123456789abcdef", **headers})
        answer = conn.getresponse()
        kept = sorted((name.lower(), value) for name, value in answer.getheaders() if name.lower() not in HOP)
        return answer.status, answer.reason, kept, answer.read()
    finally:
        conn.close()


@pytest.mark.parametrize("key", KEYS)
def test_a_refused_upgrade_reads_as_directly(keyed: Keyed, key: str) -> None:
    """Same status, reason phrase, body and headers (the old code answered the gateway's own text)."""
    target = f"{USP}?language={OTHER_LOCALE}"
    direct = upgrade(keyed.recognizer.port, target, KEYS[key])
    via = upgrade(keyed.stack.port, target, KEYS[key])
    assert direct[0] == {"wrong": 401, "missing": 403}[key], direct
    assert direct[3].startswith(f"{key} key: ".encode()), direct
    assert via == direct


@pytest.mark.parametrize("key", KEYS)
def test_a_client_held_while_its_locale_woke_gets_the_recognizers_reason(keyed: Keyed, key: str) -> None:
    """Accepted at once (its locale at zero), then closed 1008 with the recognizer's text once a pod is ready and
    refuses the key (the old code's reason: "the recognizer of ko-KR refused the connection: HTTP 401")."""
    target = f"{USP}?language={ASLEEP}"
    *_, said = upgrade(keyed.recognizer.port, target, KEYS[key])
    keyed.set_ready(ASLEEP.lower(), 0)
    with connect(f"{keyed.stack.ws}{target}", subprotocols=["USP"], additional_headers=KEYS[key]) as ws:
        keyed.set_ready(ASLEEP.lower(), 1)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
    frame = closed.value.rcvd
    assert frame is not None and (frame.code, frame.reason) == (1008, said.decode()), closed.value


# ---- the bounds, and a broken handshake: a stand-in upstream ---------------------------------------------
@dataclass
class Endless:
    """A stand-in recognizer refusing every upgrade 401: its body streamed without end (``?endless``), or its head and
    a few bytes, then nothing (``?stalled``); or answering 101 with a broken handshake (``?broken``)."""

    port: int = 0
    ended: asyncio.Event | None = None

    async def refuse(self, request: web.Request) -> web.StreamResponse:
        if "broken" in request.query:  # a 101 whose Sec-WebSocket-Accept does not answer the key
            return web.Response(status=101, headers={"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Accept": "wrong"})
        self.ended = asyncio.Event()
        answer = web.StreamResponse(status=401, headers={"Content-Type": "text/plain", "WWW-Authenticate": "Key"})
        await answer.prepare(request)
        try:
            await answer.write(b"refused: ")
            if "stalled" in request.query:
                await client_leaves(request)  # the gateway closed the connection (aiohttp cancels no handler)
                return answer
            while True:
                await answer.write(b"x" * 1024)
        except ConnectionError:  # the gateway closed the connection, as it should
            return answer
        finally:
            self.ended.set()


@pytest_asyncio.fixture(loop_scope="function")
async def endless() -> AsyncIterator[tuple[Endless, str]]:
    upstream = Endless()
    app = web.Application()
    app.router.add_get(USP, upstream.refuse)
    async with serving(app, "127.0.0.1", 0, 1) as upstream.port:
        directory = Directory()
        directory.upsert({**speech_to_text("ko-kr", "ko-KR", upstream.port), "status": {"readyReplicas": 1}})
        directory.synced = True
        async with serving(create_app(directory, GatewayConfig(host="127.0.0.1"), resolver=ServiceDNS()), "127.0.0.1", 0, 1) as port:
            yield upstream, f"http://127.0.0.1:{port}"


async def _refusal(url: str) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as client, client.get(url, headers=HANDSHAKE) as answer:
        return answer.status, dict(answer.headers), await answer.read()


@pytest.mark.unit
async def test_an_endless_refusal_is_cut_at_its_bound(endless: tuple[Endless, str]) -> None:
    """The client gets the first REFUSAL_MAX_BYTES at once, and the gateway closes the recognizer's connection (the
    old code passed its own text, reading none of the body)."""
    upstream, gateway = endless
    started = time.monotonic()
    status, headers, body = await _refusal(f"{gateway}{USP}?language=ko-KR&endless")
    assert time.monotonic() - started < gateway_relay.REFUSAL_READ_SECONDS, "cut at its size, not at the deadline"
    assert (status, headers["WWW-Authenticate"]) == (401, "Key")
    assert body == (b"refused: " + b"x" * gateway_relay.REFUSAL_MAX_BYTES)[:gateway_relay.REFUSAL_MAX_BYTES]
    assert upstream.ended is not None
    await asyncio.wait_for(upstream.ended.wait(), 5)  # its connection closed by the gateway, not read on


@pytest.mark.unit
async def test_a_stalled_refusal_is_passed_on_at_its_deadline(endless: tuple[Endless, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """What came of its body within REFUSAL_READ_SECONDS, then: the gateway does not wait for the rest."""
    monkeypatch.setattr(gateway_relay, "REFUSAL_READ_SECONDS", 0.3)
    upstream, gateway = endless
    started = time.monotonic()
    status, _, body = await _refusal(f"{gateway}{USP}?language=ko-KR&stalled")
    assert (status, body) == (401, b"refused: ")
    assert 0.3 <= time.monotonic() - started < 3
    assert upstream.ended is not None
    await asyncio.wait_for(upstream.ended.wait(), 5)


@pytest.mark.unit
async def test_a_broken_handshake_is_the_recognizers_fault(endless: tuple[Endless, str]) -> None:
    """A 101 that is no WebSocket's: the client is accepted and closed 1013 with the reason, as for a recognizer that
    cannot be reached (the old code answered the client a 101 of its own, with a body, and no WebSocket)."""
    _, gateway = endless
    async with aiohttp.ClientSession() as client, client.ws_connect(f"{gateway.replace('http', 'ws', 1)}{USP}?language=ko-KR&broken") as ws:
        await ws.send_bytes(b"audio")  # the Speech SDK's route closes once the request has begun (gateway_relay.refuse)
        closed = await ws.receive(timeout=10)
    assert (closed.type, closed.data) == (aiohttp.WSMsgType.CLOSE, 1013), closed
    assert closed.extra == f"the recognizer of ko-KR ({NAMESPACE}/ko-kr) answered the upgrade with a broken handshake: Invalid challenge response"


@pytest.mark.unit
@pytest.mark.parametrize(("status", "body", "close"), [
    (401, b"wrong key: the key does not match this server's ApiKey\n", (1008, b"wrong key: the key does not match this server's ApiKey")),
    (503, b"", (1013, b"the recognizer of ko-KR refused the connection: HTTP 503")),
], ids=["its reason", "no reason"])
def test_the_close_of_a_held_client_says_why(status: int, body: bytes, close: tuple[int, bytes]) -> None:
    """The close code of the kind answered with the status (1008 for a key, 1013 for a 503: the old code closed every
    refusal but a key's 1011, "server error"); the recognizer's text, or, when it sent none, the gateway's naming the
    status (an empty reason would lose it)."""
    backend = Directory()
    backend.upsert({**speech_to_text("ko-kr", "ko-KR", 1), "status": {"readyReplicas": 1}})
    refused = gateway_relay.RefusedUpgrade(status, None, CIMultiDict(), body)
    assert refused.close_args(backend.lookup("ko-KR")) == close


# ---- each class of refusal, to a client held while its locale woke: a stand-in upstream ----------------------
#: A reason of 300 bytes of UTF-8 (100 Korean characters): more than a close frame carries.
LONG = "가" * 100
#: What the stand-in refuses with (status, body, headers), and the close the held client gets (code, reason): the close
#: code of the kind the failure tables answer with that status; a Retry-After, which a close cannot carry, ends the reason.
REFUSALS: list[tuple[int, bytes, dict[str, str], int, str]] = [
    (400, b"bad value: format=xml is not one of simple, detailed", {}, 1007, "bad value: format=xml is not one of simple, detailed"),
    (404, b"no route /vosk/v2\n", {}, 1008, "no route /vosk/v2"),
    (413, b"the request is over 10 MB", {}, 1009, "the request is over 10 MB"),
    (429, b"slow down", {"Retry-After": "3"}, 1013, "slow down (Retry-After: 3)"),
    (503, b'{"error": {"code": "ServiceUnavailable", "message": "every decoder is in use (DecoderMaxCount)"}}',
     {"Content-Type": "application/json", "Retry-After": "1"}, 1013, "every decoder is in use (DecoderMaxCount) (Retry-After: 1)"),
    (503, LONG.encode(), {"Retry-After": "5"}, 1013, LONG[:34] + "... (Retry-After: 5)"),
    (500, b"internal error (RuntimeError); the server logged the details", {}, 1011,
     "internal error (RuntimeError); the server logged the details"),
]


async def _refuse_as_asked(request: web.Request) -> web.Response:
    """Refuse the upgrade with ``REFUSALS[int(?case)]``'s status, body and headers (as a recognizer, or what may stand in
    front of one, would)."""
    status, body, headers, *_ = REFUSALS[int(request.query["case"])]
    return web.Response(status=status, body=body, headers=headers)


@dataclass
class Held:
    """A gateway whose ko-KR is at zero pods (autoscaled: a WebSocket to it is accepted and held), in front of a
    stand-in recognizer that refuses every upgrade."""

    directory: Directory
    ws: str
    gateway: Gateway

    def ready(self, replicas: int) -> None:
        self.directory.upsert({**speech_to_text("ko-kr", "ko-KR", self.port, autoscaling=AT_ZERO),
                               "status": {"readyReplicas": replicas}})

    port: int = 0


@pytest_asyncio.fixture(loop_scope="function")
async def held() -> AsyncIterator[Held]:
    app = web.Application()
    app.router.add_get("/vosk", _refuse_as_asked)
    app.router.add_get(USP, _refuse_as_asked)
    async with serving(app, "127.0.0.1", 0, 1) as upstream:
        directory = Directory()
        directory.synced = True
        app = create_app(directory, GatewayConfig(host="127.0.0.1", hold_seconds=30), resolver=ServiceDNS())
        async with serving(app, "127.0.0.1", 0, 1) as port:
            yield Held(directory, f"ws://127.0.0.1:{port}", app[GATEWAY], upstream)


@pytest.mark.unit
async def test_a_held_client_is_closed_with_the_code_of_each_refusal(held: Held) -> None:
    """400 closes 1007, 404 1008, 413 1009, 429 and 503 1013 (try again later) with the Retry-After in the reason, a
    503 in the recognizer's JSON error shape with its message, a reason over 123 bytes cut within them at a whole
    character, a 500 1011 (the old code closed all of them 1011, the body as it came, without the Retry-After). The
    client: aiohttp's, on /vosk, accepted while its locale was at zero pods, then relayed once it had a ready pod."""
    got = []
    async with aiohttp.ClientSession() as client:
        for case in range(len(REFUSALS)):
            held.ready(0)
            async with client.ws_connect(f"{held.ws}/vosk?language=ko-KR&case={case}") as ws:  # accepted: held
                held.ready(1)
                closed = await ws.receive(timeout=10)
            assert closed.type is aiohttp.WSMsgType.CLOSE, closed
            got.append((closed.data, closed.extra))
    assert got == [(code, reason) for *_, code, reason in REFUSALS]
    assert all(len(reason.encode()) <= 123 for _, reason in got)



@pytest.mark.unit
async def test_the_speech_sdk_held_then_refused_400_reports_the_reason(held: Held, speech_wav: Path) -> None:
    """The Python Speech SDK held while its locale woke, then refused 400: ``BadRequest`` with the recognizer's reason,
    at once (close 1007). The old code's 1011 made it connect again and meet the 400 itself: ``BadRequest`` with
    "WebSocket upgrade failed: Bad request (400)" and no reason. (A 503 reads the same both ways: after a 1013, as after
    a 1011, the SDK connects again, and reports the 503 it then meets, "Please try the request again".)"""
    def recognize() -> speechsdk.SpeechRecognitionResult:
        cfg = speechsdk.SpeechConfig(endpoint=f"{held.ws}{USP}?case=0", subscription="unused-key")
        cfg.speech_recognition_language = "ko-KR"
        return speechsdk.SpeechRecognizer(cfg, audio_config=speechsdk.audio.AudioConfig(filename=str(speech_wav))).recognize_once()

    held.ready(0)
    sdk = asyncio.ensure_future(asyncio.to_thread(recognize))
    async with asyncio.timeout(10):  # the gateway holds it: no event says so but its count (speech_gateway_held)
        while held.gateway.waker.held == 0:
            await asyncio.sleep(0.02)
    held.ready(1)
    result = await sdk
    assert result.reason == speechsdk.ResultReason.Canceled, result
    details = result.cancellation_details
    assert details.code == speechsdk.CancellationErrorCode.BadRequest, details
    assert "Error code: 1007. Error details: bad value: format=xml is not one of simple, detailed" in details.error_details
