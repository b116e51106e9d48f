"""The gateway behind real nginx configured as ingress-nginx configures it for the chart's Ingress (tests/ingress_nginx.py:
the nginx.conf is written from ``helm template``'s Ingress, so its annotations are the chart's
``gateway.ingress.nginxAnnotations``), with real clients through it: the Speech SDK, REST, OpenAI's client, /vosk.

What stands in for a cluster: the gateway and its recognizers of tests/gateway/conftest.py on loopback; nginx's upstream
is the gateway's port, where ingress-nginx's Lua balancer would pick one of the gateway Service's endpoints; plain HTTP
(ingress-nginx's TLS is not modelled). The Ingress rule's host is ``127.0.0.1``, the name the clients here connect
to (a real Ingress names a DNS host; nginx picks the server by name either way).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import azure.cognitiveservices.speech as speechsdk
import httpx
import openai
import pytest

from harness.hostile_inputs import post_head, raw_request
from harness.loopback import Loopback
from speech_operator.gateway import GATEWAY, GatewayConfig
from speech_operator.gateway_connections import ConnectionCap
from speech_recognizer import contract
from tests.ingress_nginx import NGINX, IngressNginx, ingress_nginx, render_ingress
from tests.support import Reference, read_wav, widest_wav
from tests.usp.sdk import assert_matches, assert_same, config, continuous, expected, once, recognizer, reported
from tests.usp.test_idle_proxy import BROKEN

from .conftest import KEY, OTHER_LOCALE, Locales, Stack, speech_to_text

REST = "/speech/recognition/conversation/cognitiveservices/v1"
#: The Ingress rule's host: what the clients here name (the Speech SDK sends ``Host: 127.0.0.1:<port>``).
HOST = "127.0.0.1"
#: The rule's host, for every render here.
ON_LOOPBACK = ("--set", f"gateway.ingress.hosts[0].host={HOST}")
#: ingress-nginx's own defaults: the chart's Ingress without ``nginxAnnotations``.
WITHOUT_ANNOTATIONS = ("--set", "gateway.ingress.nginxAnnotations=null")


@pytest.fixture(scope="module")
def nginx(locales: Locales, tmp_path_factory: pytest.TempPathFactory) -> Iterator[IngressNginx]:
    """nginx for the chart's Ingress at its defaults (class nginx: ``nginxAnnotations`` added), before the gateway."""
    with ingress_nginx(render_ingress(*ON_LOOPBACK), locales.stack.port, tmp_path_factory.mktemp("nginx")) as server:
        yield server


def other_nginx(locales: Locales, tmp_path: Path, *args: str,
                config: dict[str, str] | None = None) -> contextlib.AbstractContextManager[IngressNginx]:
    """nginx for the chart's Ingress rendered with helm's ``args`` too (and the controller's ConfigMap ``config``)."""
    return ingress_nginx(render_ingress(*ON_LOOPBACK, *args), locales.stack.port, tmp_path / "nginx", config)


def own(annotation: str, value: str) -> tuple[str, str]:
    """The nginx ``annotation`` set in ``gateway.ingress.annotations``, which wins over ``nginxAnnotations``."""
    return "--set-string", f"gateway.ingress.annotations.{NGINX.replace('.', chr(92) + '.')}{annotation}={value}"


def rest(base: str, language: str, body: bytes, **headers: str) -> httpx.Response:
    return httpx.post(f"{base}{REST}?language={language}&format=detailed&wordLevelTimestamps=true", content=body,
                      headers={"Content-Type": "audio/wav", **headers}, timeout=60)


def test_the_speech_sdk_through_ingress_nginx(locales: Locales, nginx: IngressNginx, utterances_wav: Path,
                                              utterances_ref: Reference, speech_wav: Path, speech_ref: Reference) -> None:
    """An unmodified Speech SDK app (``SpeechConfig(host="ws://<ingress>")``) recognizes the three utterances
    continuously through nginx: the phrases, times and all, are those it gets from the gateway directly (and in-process
    Vosk's). The keyed locale's key header passes nginx too."""
    via = continuous(recognizer(config(nginx.ws, language="ko-KR"), utterances_wav))
    direct = continuous(recognizer(config(locales.stack.ws, language="ko-KR"), utterances_wav))
    assert not via.canceled and not direct.canceled, (via.canceled, direct.canceled, nginx.error_log())
    assert [reported(r) for r in via.recognized] == [reported(r) for r in direct.recognized]
    assert_same([reported(r) for r in via.recognized], [expected(p) for p in utterances_ref.phrases])
    assert via.recognizing, "intermediate results come through nginx as they are made"
    assert_matches(once(config(nginx.ws, key=KEY, language=OTHER_LOCALE), speech_wav), speech_ref.phrases[0])
    assert '"GET /speech/recognition/conversation/cognitiveservices/v1?' in nginx.access_log(), "the SDK went through nginx"


def test_rest_and_openai_through_ingress_nginx(locales: Locales, nginx: IngressNginx, speech_wav: Path) -> None:
    """REST's short-audio route and OpenAI's route (the official ``openai`` client) answer through nginx what they
    answer from the gateway directly, for each locale, with its key."""
    body = speech_wav.read_bytes()
    for locale in locales.recognizers:
        key = {"Ocp-Apim-Subscription-Key": KEY} if locale == OTHER_LOCALE else {}
        direct, via = rest(locales.stack.http, locale, body, **key), rest(nginx.http, locale, body, **key)
        assert direct.status_code == via.status_code == 200, (via.text, nginx.error_log())
        assert via.json() == direct.json() and via.json()["RecognitionStatus"] == "Success"

        asked: dict[str, Any] = {"model": "whisper-1", "language": locale, "response_format": "verbose_json"}
        answers = [openai.OpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=0, timeout=60).audio.transcriptions.create(
            file=speech_wav.open("rb"), **asked) for base in (locales.stack.http, nginx.http)]
        assert answers[0] == answers[1] and answers[1].language == locale and answers[1].text


def head_and_first_piece(port: int, head: bytes, piece: bytes, wait: float) -> tuple[bytes, float]:
    """Send ``head`` and ``piece`` (the start of a longer body) and nothing more; what came back within ``wait`` s of
    the last byte sent, and when its first byte came (``nan``: nothing)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(head + piece)
        sent = time.monotonic()
        answer = b""
        try:
            while time.monotonic() - sent < wait and (got := sock.recv(65536)):
                answer += got
                if b"\r\n\r\n" in answer:
                    return answer, time.monotonic() - sent
        except (TimeoutError, ConnectionResetError):
            pass
        return answer, float("nan")


def test_a_refusal_before_the_body_reaches_a_client_still_sending_it(locales: Locales, nginx: IngressNginx,
                                                                     tmp_path: Path) -> None:
    """``proxy-request-buffering: off``: a client that has sent the head of a 20 MB upload with a wrong key and its
    first 64 KiB gets the recognizer's 401 through nginx (relayed by the gateway) while it still has 20 MB to send.
    With the Ingress's ``proxy-request-buffering`` set back to ingress-nginx's default (``on``), nginx reads the whole
    body before it opens a connection to the gateway: the same client gets nothing at all (no byte in 2 s)."""
    length = 20_000_000
    head = post_head(f"{REST}?language={OTHER_LOCALE}", content_length=length, extra=b"Ocp-Apim-Subscription-Key: wrong\r\n")
    head = head.replace(b"Host: 127.0.0.1\r\n", f"Host: {HOST}:{nginx.port}\r\n".encode())
    piece = b"\0" * 65536
    answer, took = head_and_first_piece(nginx.port, head, piece, wait=10)
    assert answer.startswith(b"HTTP/1.1 401 "), (answer[:300], nginx.error_log()[-2000:])
    assert took < 1, f"the refusal came {took:.2f} s after the first piece"
    with other_nginx(locales, tmp_path, *own("proxy-request-buffering", "on")) as buffering:
        assert "proxy_request_buffering on;" in buffering.conf and "client_max_body_size 23m;" in buffering.conf
        answer, took = head_and_first_piece(buffering.port, head.replace(str(nginx.port).encode(), str(buffering.port).encode()), piece, wait=2)
        assert answer == b"", answer[:300]


def test_a_body_over_ingress_nginxs_default_1m_passes(locales: Locales, nginx: IngressNginx, speech_wav: Path, tmp_path: Path) -> None:
    """``proxy-body-size: 23m``: the one-utterance recording as 48 kHz stereo 32-bit audio (over 1 MiB: the largest
    upload a recognizer takes at its defaults is 23 MB of that) is recognized through nginx as from the gateway
    directly; at ingress-nginx's default ``1m`` nginx answers 413 itself."""
    pcm, rate, _ = read_wav(speech_wav)
    body = widest_wav(speech_wav, seconds=len(pcm) / 2 / rate)
    assert 2**20 < len(body) < 23 * 2**20, len(body)
    direct, via = rest(locales.stack.http, "ko-KR", body), rest(nginx.http, "ko-KR", body)
    assert direct.status_code == via.status_code == 200, (via.text, nginx.error_log()[-2000:])
    assert via.json() == direct.json() and via.json()["RecognitionStatus"] == "Success"
    with other_nginx(locales, tmp_path, *WITHOUT_ANNOTATIONS) as limited:
        assert "client_max_body_size 1m;" in limited.conf
        refused = rest(limited.http, "ko-KR", body)
        assert refused.status_code == 413 and "nginx" in refused.text, refused.text


#: How long the app waits between its recognitions behind :data:`SCALED_READ_TIMEOUT`: past it.
PAUSE = 1.5
#: ``proxy-read-timeout`` scaled down from ingress-nginx's default 60 s.
SCALED_READ_TIMEOUT = 1


def upgrade(port: int) -> socket.socket:
    """A raw WebSocket upgrade of /vosk through nginx at ``port``, its 101 read."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"GET /vosk?language=ko-KR HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 101 "), head
    return sock


def two_recognitions(ws: str, wav: Path) -> tuple[speechsdk.SpeechRecognitionResult, speechsdk.SpeechRecognitionResult, float]:
    """One Speech SDK recognizer object: ``recognize_once``, :data:`PAUSE` s with nothing sent, ``recognize_once``
    again (the next phrase of ``wav``); the results and the second one's seconds."""
    rec = recognizer(config(ws), wav)
    first = rec.recognize_once_async().get()
    time.sleep(PAUSE)
    started = time.monotonic()
    second = rec.recognize_once_async().get()
    return first, second, time.monotonic() - started


def test_an_idle_speech_sdk_connection_lives_as_long_as_the_read_timeout_says(
        locales: Locales, nginx: IngressNginx, utterances_wav: Path, utterances_ref: Reference, tmp_path: Path) -> None:
    """nginx's ``proxy_read_timeout`` ends an upgraded connection on which the gateway sent nothing for that long, with
    a bare FIN (no close frame; ``reset_timedout_connection`` does not make it a reset). Scaled down from ingress-nginx's
    60 s to 1 s on the Ingress: an upgraded /vosk connection gets its FIN 1 s after its 101; a Speech SDK recognizer
    object idle for 1.5 s between two recognitions fails its second at once without connecting again (as
    tests/usp/test_idle_proxy.py found behind a TCP relay standing in for nginx). At the chart's 3600 s the same app's
    second recognition gives the next phrase: the timeout, not the pause, cut it."""
    assert "proxy_read_timeout 3600s;" in nginx.conf and "proxy_send_timeout 3600s;" in nginx.conf
    with other_nginx(locales, tmp_path, *own("proxy-read-timeout", str(SCALED_READ_TIMEOUT))) as short:
        assert f"proxy_read_timeout {SCALED_READ_TIMEOUT}s;" in short.conf
        with upgrade(short.port) as sock:
            opened = time.monotonic()
            assert sock.recv(65536) == b"", "a FIN, nothing before it"
            cut = time.monotonic() - opened
        assert SCALED_READ_TIMEOUT - 0.1 < cut < SCALED_READ_TIMEOUT + 2, cut
        assert "upstream timed out (110: Connection timed out) while proxying upgraded connection" in short.error_log()
        first, second, took = two_recognitions(short.ws, utterances_wav)
    assert_matches(first, utterances_ref.phrases[0])
    assert second.reason == speechsdk.ResultReason.Canceled, (second.reason, second.text)
    details = second.cancellation_details
    assert f"{details.code.name}: {details.error_details}".startswith(BROKEN), details.error_details
    assert took < 1, "at once, without connecting"

    first, second, _ = two_recognitions(nginx.ws, utterances_wav)
    assert_matches(first, utterances_ref.phrases[0])
    assert second.reason == speechsdk.ResultReason.RecognizedSpeech and second.text, (second.reason, nginx.error_log()[-2000:])
    assert second.offset >= first.offset + first.duration, "the phrase after the first"


def test_a_header_line_over_8k_is_refused_by_ingress_nginx_unless_its_configmap_raises_it(locales: Locales, nginx: IngressNginx,
                                                                                         tmp_path: Path) -> None:
    """The gateway and the recognizer take a head of up to 16 KiB (``Http:MaxHeaderBytes``, ``gateway.maxHeaderBytes``),
    but ingress-nginx reads a head in ``large_client_header_buffers`` ``4 8k``: one header line over 8 KiB (a long
    bearer token, a sign-in proxy's cookie) gets nginx's own 400 "Request Header Or Cookie Too Large" and never reaches
    the gateway; a request line over 8 KiB gets 414. The controller's ConfigMap key ``large-client-header-buffers:
    "4 16k"`` lets them through (there is no annotation for it). nginx adds its own headers (``X-Request-ID``,
    ``X-Real-IP``, ``X-Forwarded-*``, ``X-Scheme``: 200 bytes here): a head 100 bytes within the gateway's limit, which
    the gateway takes from a client directly, gets its 431 through nginx."""
    pad = {"X-Pad": "a" * 10_000}
    assert httpx.get(locales.stack.http + contract.ROUTE_READY, headers=pad).status_code == 200
    refused = httpx.get(nginx.http + contract.ROUTE_READY, headers=pad)
    assert refused.status_code == 400 and "Request Header Or Cookie Too Large" in refused.text, refused.text
    assert httpx.get(nginx.http + contract.ROUTE_READY, headers={"X-Pad": "a" * 7_000}).status_code == 200
    long_line = f"{contract.ROUTE_READY}?pad={'a' * 9_000}"
    assert httpx.get(locales.stack.http + long_line).status_code == 200
    assert httpx.get(nginx.http + long_line).status_code == 414

    def near_the_limit(server: Loopback) -> bytes:
        start = f"GET {contract.ROUTE_READY} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nConnection: close\r\n".encode()
        pads = GatewayConfig().max_header_bytes - 100 - len(start) - 2
        return start + b"".join(b"X-Pad-%d: %s\r\n" % (n, b"a" * (pads // 3 - 13)) for n in range(3)) + b"\r\n"

    assert len(near_the_limit(locales.stack)) <= GatewayConfig().max_header_bytes - 100
    assert raw_request("127.0.0.1", locales.stack.port, near_the_limit(locales.stack))[0].startswith(b"HTTP/1.1 200 ")
    assert raw_request("127.0.0.1", nginx.port, near_the_limit(nginx))[0].startswith(b"HTTP/1.1 431 ")
    with other_nginx(locales, tmp_path, config={"large-client-header-buffers": "4 16k"}) as raised:
        assert httpx.get(raised.http + contract.ROUTE_READY, headers=pad).status_code == 200, raised.error_log()[-2000:]
        assert httpx.get(raised.http + long_line).status_code == 200


def test_the_chart_says_what_ingress_nginx_is_given() -> None:
    """Every nginx annotation the chart adds is one this model maps (tests/ingress_nginx.py refuses any other), and
    the rendered nginx.conf has it where ingress-nginx puts it."""
    from tests.ingress_nginx import nginx_conf

    ingress = render_ingress(*ON_LOOPBACK)
    conf = nginx_conf(ingress, 1, 2, Path("/nonexistent"))
    annotations = ingress["metadata"]["annotations"]
    assert f"client_max_body_size {annotations[NGINX + 'proxy-body-size']};" in conf
    assert f"proxy_read_timeout {annotations[NGINX + 'proxy-read-timeout']}s;" in conf
    assert f"proxy_send_timeout {annotations[NGINX + 'proxy-send-timeout']}s;" in conf
    assert f"proxy_request_buffering {annotations[NGINX + 'proxy-request-buffering']};" in conf
    defaults = nginx_conf(render_ingress(*ON_LOOPBACK, *WITHOUT_ANNOTATIONS), 1, 2, Path("/nonexistent"))
    for line in ("client_max_body_size 1m;", "proxy_read_timeout 60s;", "proxy_send_timeout 60s;", "proxy_connect_timeout 5s;",
                 "proxy_request_buffering on;", "proxy_buffering off;", "proxy_next_upstream error timeout;",
                 "keepalive 320;", "large_client_header_buffers 4 8k;"):
        assert line in defaults, line
    with pytest.raises(ValueError, match="proxy-buffers-size"):
        nginx_conf({**ingress, "metadata": {**ingress["metadata"], "annotations": {NGINX + "proxy-buffers-size": "8k"}}},
                   1, 2, Path("/nonexistent"))


# ---- the gateway's cap on connections (SPEECH_GATEWAY_MAX_CONNECTIONS) behind nginx's keep-alive pool ---------------

#: The capped gateway's ``max_connections``: small, so that nginx's pool and a few clients reach it.
SMALL_CAP = 2


@contextlib.contextmanager
def capped(locales: Locales, tmp_path: Path) -> Iterator[tuple[Stack, ConnectionCap, IngressNginx]]:
    """A gateway of its own with ``max_connections`` :data:`SMALL_CAP`, routing ko-KR to the module's recognizer, its
    cap, and nginx for the chart's Ingress in front of it."""
    with Stack(tmp_path, GatewayConfig(host="127.0.0.1", port=0, max_connections=SMALL_CAP)) as stack:
        stack.create(speech_to_text("ko-kr", "ko-KR", locales.recognizers["ko-KR"].port))
        stack.serving("ko-KR")
        assert stack.app is not None
        with ingress_nginx(render_ingress(*ON_LOOPBACK), stack.port, tmp_path / "nginx") as server:
            yield stack, stack.app[GATEWAY].connections, server


def rest_request(port: int, body: bytes) -> bytes:
    """A REST POST of ``body`` (ko-KR) to the Ingress's host on ``port``."""
    return post_head(f"{REST}?language=ko-KR", content_length=len(body)).replace(
        b"Host: 127.0.0.1\r\n", f"Host: {HOST}:{port}\r\n".encode()) + body


def vosk_upgrade(port: int) -> bytes:
    return (f"GET /vosk?language=ko-KR HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()


def answer(sock: socket.socket, frame: bool = False, wait: float = 10) -> tuple[int, dict[str, str], bytes, float]:
    """The next answer on ``sock``: status, headers (lower-case names), body (a 101's: nothing, or with ``frame`` the
    first WebSocket frame, of up to 125 bytes), and how long it took to come whole."""
    sock.settimeout(wait)
    started, data = time.monotonic(), b""
    while True:
        if b"\r\n\r\n" in data:
            head, _, rest = data.partition(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
            status = int(lines[0].split()[1])
            if status != 101:
                length = int(headers.get("content-length", 0))
            else:  # a frame's length: its second byte's (unmasked, under 126)
                length = (2 + rest[1] if len(rest) >= 2 else 2) if frame else 0
            if len(rest) >= length:
                return status, headers, rest[:length], time.monotonic() - started
        got = sock.recv(65536)
        assert got, f"the connection closed after {data[:300]!r}"
        data += got


def worker(nginx: IngressNginx) -> int:
    """nginx's one worker process (the master's child)."""
    (pid,) = Path(f"/proc/{nginx.process.pid}/task/{nginx.process.pid}/children").read_text().split()
    return int(pid)


def test_at_the_gateways_cap_clients_through_ingress_nginx_get_its_own_answers(locales: Locales, speech_wav: Path,
                                                                               tmp_path: Path) -> None:
    """nginx keeps the gateway's connections it used in its keep-alive pool (``keepalive 320``, 60 s): they count against
    the gateway's cap (``speech_gateway_connections``) but, idle, give way to a new connection (one closed to make
    room), so that a pool the cap's size starves no other client. With the cap full of relayed WebSockets (busy), a
    REST POST of audio through nginx gets the gateway's own 503 with its reason and ``Retry-After`` at once (not nginx's
    502, nor a hang), and a WebSocket through nginx its 101 then the close 1013 with the reason."""
    body = speech_wav.read_bytes()
    with capped(locales, tmp_path) as (stack, cap, nginx):
        clients = [socket.create_connection(("127.0.0.1", nginx.port)) for _ in range(SMALL_CAP)]
        request = rest_request(nginx.port, body)
        split = request.index(b"\r\n\r\n") + 4 + 1024
        for c in clients:  # each upload begun: nginx (proxy-request-buffering off) has a connection to the gateway for each
            c.sendall(request[:split])
        stack.eventually(lambda: cap.open == SMALL_CAP, 5, "nginx's two connections")
        for c in clients:
            c.sendall(request[split:])
            assert answer(c)[0] == 200
        stack.eventually(lambda: cap.idle == SMALL_CAP, 5, "both idle in nginx's pool")
        direct = httpx.post(f"{stack.http}{REST}?language=ko-KR", content=body, headers={"Content-Type": "audio/wav"})
        assert direct.status_code == 200 and cap.reclaimed == 1, (direct.text, cap.reclaimed)
        clients[0].sendall(request)  # nginx's pool still serves: its other connection, or a new one
        assert answer(clients[0])[0] == 200, nginx.error_log()[-2000:]

        streams = [socket.create_connection(("127.0.0.1", nginx.port)) for _ in range(SMALL_CAP)]
        for s in streams:
            s.sendall(vosk_upgrade(nginx.port))
            assert answer(s)[0] == 101
        stack.eventually(lambda: cap.open == SMALL_CAP and cap.idle == 0, 5, "the cap full of relayed WebSockets")
        reason = f"too many connections: this gateway keeps at most {SMALL_CAP} open (SPEECH_GATEWAY_MAX_CONNECTIONS)"
        clients[1].sendall(request)
        status, headers, text, took = answer(clients[1])
        assert status == 503 and reason in text.decode() and headers["retry-after"] == "1", (status, text, nginx.error_log()[-2000:])
        assert took < 1, took
        refused = socket.create_connection(("127.0.0.1", nginx.port))
        refused.sendall(vosk_upgrade(nginx.port))
        status, _, frame, took = answer(refused, frame=True)
        assert status == 101 and frame[0] == 0x88 and int.from_bytes(frame[2:4], "big") == 1013, frame
        assert reason in frame[4:].decode() and took < 1, (frame, took)
        assert "[error]" not in nginx.error_log(), nginx.error_log()[-2000:]
        for s in (*clients, *streams, refused):
            s.close()


def test_a_post_on_a_pooled_connection_the_gateway_closes_to_make_room_is_retried_by_nginx(
        locales: Locales, speech_wav: Path, tmp_path: Path) -> None:
    """The race of an idle pooled connection: at its cap the gateway closes the connection idle longest to make room for a
    new one, which may be the one nginx is reusing for a request just then. nginx's worker is stopped (SIGSTOP) for the
    moment it takes, as one busy with other connections is (an Ingress controller's is): a client's REST POST has come to
    nginx on a kept-alive connection, the gateway closes nginx's one pooled connection for a client of its own (a
    relayed WebSocket holds its other place), then the worker goes on. It takes its pooled connection for the POST
    before it sees its close. Closed with a FIN (before), nginx sent the POST on it, found it closed only then
    ("writev() failed (32: Broken pipe)"), and answered 502: it does not send a POST twice. Closed with a reset, nginx
    finds it failed before it sends anything ("connect() failed (104: Connection reset by peer)") and tries a new
    connection: the client gets the recognition (the new connection making room in turn). A WebSocket upgrade came
    through either way (nginx sends a GET without a body again), as it does here."""
    body = speech_wav.read_bytes()
    with capped(locales, tmp_path) as (stack, cap, nginx):
        client = socket.create_connection(("127.0.0.1", nginx.port))
        client.sendall(rest_request(nginx.port, body))
        assert answer(client)[0] == 200  # nginx's connection to the gateway: in its pool now
        busy = socket.create_connection(("127.0.0.1", stack.port))
        busy.sendall(vosk_upgrade(stack.port))
        assert answer(busy)[0] == 101
        others = []
        # the client's next request on its kept-alive connection: nginx reads it in the same turn as the close (a new
        # connection's request would wait for a turn of its own, after the close is seen)
        for request, expected in ((rest_request(nginx.port, body), 200), (vosk_upgrade(nginx.port), 101)):
            stack.eventually(lambda: cap.open == SMALL_CAP and cap.idle == 1, 5, "nginx's pooled connection idle")
            reclaimed = cap.reclaimed
            pid = worker(nginx)
            os.kill(pid, signal.SIGSTOP)
            try:
                client.sendall(request)
                others.append(socket.create_connection(("127.0.0.1", stack.port)))  # another client at the cap
                stack.eventually(lambda before=reclaimed: cap.reclaimed == before + 1, 5, "nginx's pooled connection closed for it")
            finally:
                os.kill(pid, signal.SIGCONT)
            status, _, text, took = answer(client)
            assert status == expected, (status, text, nginx.error_log()[-2000:])
            assert took < 5, took
            if expected == 200:
                assert json.loads(text)["RecognitionStatus"] == "Success", text
        assert "(104: Connection reset by peer) while connecting to upstream" in nginx.error_log()
        for s in (client, busy, *others):
            s.close()
