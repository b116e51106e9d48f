"""``Http:MaxConnections``: the plain HTTP connections a server keeps open are capped, giving way to idle ones.

Before, nothing counted them (``MaxConnections`` counts recognition WebSockets only), and each can make the server
hold its kernel buffers, a read of pipelined requests and their answers (bench/notes.md, "Pipelined requests"). Raw
sockets against a server in this process (its log is the test's) with a cap of :data:`CAP`: a new connection at
the cap closes an idle one (a slow reader's first, else the one idle longest); with every connection busy (heads arriving a byte at a time), at most ``CAP``
more are open past the cap, each answered once: a probe or a WebSocket upgrade served, anything else refused with 503,
``Retry-After`` and the reason, counted, and logged once.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator

import psutil
import pytest
from websockets.sync.client import connect

from harness.hostile_inputs import response_complete, responses, write_then_read
from speech_recognizer import contract as c
from speech_recognizer.app import create_app
from speech_recognizer.connection_cap import ConnectionCap
from speech_recognizer.errors import TOO_MANY_CONNECTIONS
from speech_recognizer.models import ModelRegistry

from ..conftest import make_settings
from ..gateway.test_connections import skmem
from ..support import ServerThread, scrape_metrics

CAP = 4
REASON = f"too many connections: this server keeps at most {CAP} open (Http:MaxConnections); retry in 1 s"
#: The start of a request head that never ends (a client that sends it a byte at a time, or stalls): a busy connection.
PARTIAL = b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "


@pytest.fixture(scope="module")
def srv(registry: ModelRegistry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    settings = make_settings(tmp_path_factory.mktemp("http-cap"), f"Http:MaxConnections={CAP}", "Http:HeaderTimeoutSeconds=30")
    with ServerThread(create_app(settings, registry)) as server:
        yield server


def server_side(srv: ServerThread) -> int:
    """Connections the server has open now (its ends: this process holds both)."""
    return sum(1 for conn in psutil.Process().net_connections("tcp")
               if conn.laddr and conn.laddr.port == srv.port and conn.status == psutil.CONN_ESTABLISHED)


def get(srv: ServerThread, path: str) -> tuple[int, dict[str, str], bytes]:
    answer, end = write_then_read("127.0.0.1", srv.port, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode(), timeout=10)
    return responses(answer)[0]


def closed(sock: socket.socket, within: float = 5.0) -> bool:
    """Whether the server closes ``sock`` within ``within`` seconds (what it sends before is dropped)."""
    sock.settimeout(within)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except OSError:
        pass
    return True


def refusals(srv: ServerThread) -> float:
    return scrape_metrics(srv.http).get(("speech_refused_total", (("reason", "too_many_connections"), ("route", "http"))), 0.0)


def sample(srv: ServerThread, name: str) -> float:
    return scrape_metrics(srv.http)[(name, ())]


def until_server_side(srv: ServerThread, count: int, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while server_side(srv) != count:
        assert time.monotonic() < deadline, f"{server_side(srv)} connections open, not {count}"
        time.sleep(0.05)


def test_at_the_cap_a_new_connection_closes_the_one_idle_longest(srv: ServerThread) -> None:
    """``CAP`` connections, each answered once and kept alive (idle), then a new one: it is answered, and the oldest
    idle one closed (HTTP/1.1 lets a server close an idle kept-alive connection: its client opens another), the others
    left alone. Before, nothing was closed: the cap did not exist. It is closed with a reset (before: a FIN), so that a
    proxy taking it from its pool at that instant finds it failed before it sends a request on it
    (tests/gateway/test_ingress_nginx.py, where the gateway does the same)."""
    until_server_side(srv, 0)
    reclaimed = sample(srv, "speech_http_idle_connections_closed_total")
    idle = []
    try:
        for _ in range(CAP):
            sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
            sock.sendall(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200"), "answered, kept alive"
            idle.append(sock)
            time.sleep(0.05)
        status, _, _ = get(srv, c.ROUTE_OPENAPI)
        assert status == 200
        idle[0].settimeout(5)
        with pytest.raises(ConnectionResetError):  # a reset, not a FIN: a proxy pooling it tries another (connection_cap)
            idle[0].recv(65536)
        assert not any(closed(sock, 0.3) for sock in idle[1:]), "the others stay open"
        scraped = scrape_metrics(srv.http)
        assert scraped[("speech_http_idle_connections_closed_total", ())] == reclaimed + 1
        # of the CAP, the scrape's own is busy; the others, kept alive, give way at the cap (no near-cap alert for them)
        assert (scraped[("speech_http_connections", ())], scraped[("speech_http_idle_connections", ())]) == (CAP, CAP - 1)
    finally:
        for sock in idle:
            sock.close()


def kept_alive_get(sock: socket.socket, path: str) -> tuple[int, dict[str, str], bytes]:
    """``GET path`` on ``sock``, kept alive, and its whole answer."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    return answer_on(sock)


def answer_on(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """The next whole answer on ``sock``."""
    answer = b""
    while not response_complete(answer):
        chunk = sock.recv(65536)
        assert chunk, "closed"
        answer += chunk
    return responses(answer)[0]


def gauges(body: bytes) -> dict[str, float]:
    return {name: float(value) for name, _, value in (line.partition(" ") for line in body.decode().splitlines())
            if name in ("speech_http_idle_connections", "speech_http_idle_connections_closed_total")}


def test_at_the_cap_a_slow_reader_makes_room_before_clients_idle_longer_that_read_their_answers(srv: ServerThread) -> None:
    """Two kept-alive clients, each answered and done reading (idle the longest), then a slow reader that pipelines 28
    ``GET /metrics`` (108 KB of answers) and reads none (its receive buffer 4 KiB: its receive window fills, and most of
    them wait unsent in the server's buffers while it waits for its next head: idle), and a scraper with a head begun
    (busy): ``CAP`` open. A new connection closes the slow reader's (connection_cap's rule: one whose answers its client
    is not taking in first): it still gets all 28, then a FIN; the two that read everything are still served, kept alive.
    Before, the one idle longest was closed (a reset): a client that read its answer lost its connection while the slow
    reader kept its place. Deterministic: the slow reader's answers are written after the others' are read."""
    until_server_side(srv, 0)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as first, \
            socket.create_connection(("127.0.0.1", srv.port), timeout=10) as second, socket.socket() as slow, \
            socket.create_connection(("127.0.0.1", srv.port), timeout=10) as scraper:
        for sock in (first, second):
            assert kept_alive_get(sock, c.ROUTE_STATUS)[0] == 200
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect(("127.0.0.1", srv.port))
        slow.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * 28)
        deadline = time.monotonic() + 10
        # All 28 answered: some answers wait in the server's send queue (so their requests were read), and then first,
        # second and the slow reader are idle (the scraper busy while it scrapes). Idle alone is not enough: a connection
        # whose requests have not been read yet is idle too.
        while not skmem(f"sport = :{srv.port} and dport = :{slow.getsockname()[1]}")[0]["w"] or \
                (before := gauges(kept_alive_get(scraper, c.ROUTE_METRICS)[2]))["speech_http_idle_connections"] != 3:
            assert time.monotonic() < deadline, "the slow reader's 28 answers were never all written"
            time.sleep(0.02)
        scraper.sendall(b"GET /metrics HTTP/1.1\r\n")  # busy: a head begun
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as extra:  # at the cap
            assert kept_alive_get(extra, c.ROUTE_STATUS)[0] == 200
            for sock in (first, second):  # before: the first was reset
                status, headers, _ = kept_alive_get(sock, c.ROUTE_STATUS)
                assert (status, headers.get("connection")) == (200, None)
            slow.settimeout(10)
            answers = b""
            while chunk := slow.recv(65536):  # every answer, then the FIN (a reset raises)
                answers += chunk
            assert [status for status, _, _ in responses(answers)] == [200] * 28
            scraper.sendall(b"Host: 127.0.0.1\r\n\r\n")  # the head's end: its scrape
            after = gauges(answer_on(scraper)[2])
    assert after["speech_http_idle_connections_closed_total"] == before["speech_http_idle_connections_closed_total"] + 1


class Standing:
    """A connection as the cap sees it (:class:`~speech_recognizer.connection_cap.Reusable`), in a state given: a tie
    (two connections idle since the same instant of the loop's clock, which counts whole milliseconds under uvloop) cannot
    be made on demand with real ones. Its hash is ``slot``: a set iterates these in that order, as it iterates real ones
    in the order of their ids, which has nothing to do with when they came."""

    def __init__(self, slot: int, since: float = 100.0) -> None:
        self.slot, self.since, self.closed = slot, since, False

    def __hash__(self) -> int:
        return self.slot

    def idle_since(self) -> float | None:
        return None if self.closed else self.since

    def unread(self) -> int:
        return 0

    def unsent(self) -> int:
        return 0

    def close_idle(self) -> None:
        self.closed = True


def test_of_connections_idle_since_the_same_instant_the_one_admitted_first_makes_room() -> None:
    """Two connections idle since the same millisecond, then a third at the cap of 2: the first admitted is closed. Before,
    the order of a set decided (here the second, which a set of these iterates first), so that a tie closed either."""
    cap = ConnectionCap(2, setting=c.HTTP_MAX_CONNECTIONS, kind=TOO_MANY_CONNECTIONS)
    first, second, new = Standing(7), Standing(1), Standing(2)
    assert cap.admit(first) and cap.admit(second) and cap.admit(new)
    assert (first.closed, second.closed, cap.reclaimed) == (True, False, 1)


def test_past_the_cap_of_busy_connections_probes_are_answered_the_rest_refused_and_few_are_open(
        srv: ServerThread, caplog: pytest.LogCaptureFixture) -> None:
    """``4 * CAP`` connections each send the start of a head and stall (busy: none gives way): the server keeps ``CAP``
    of them and ``CAP`` past the cap, the newest, closing older ones past it (before: every one, 16 here, thousands for
    a flood). A connection past the cap is answered once and closed: the kubelet's probes and Prometheus' scrape are
    served, any other request gets 503 with ``Retry-After`` and the reason, counted, and one warning line says so for
    all of them; a WebSocket upgrade is served (``MaxConnections`` counts it). Once the stalled ones are gone, requests
    are served again."""
    until_server_side(srv, 0)
    before, shed = refusals(srv), sample(srv, "speech_http_connections_closed_past_cap_total")
    stalled = []
    try:
        with caplog.at_level(logging.WARNING, "speech_recognizer"):
            for _ in range(4 * CAP):
                sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
                sock.sendall(PARTIAL)
                stalled.append(sock)
                time.sleep(0.02)
            until_server_side(srv, 2 * CAP)
            scraped = scrape_metrics(srv.http)  # on a connection past the cap (not counted): every one counted is busy
            assert [scraped[(name, ())] for name in ("speech_http_connections", "speech_http_idle_connections",
                                                     "speech_http_connections_max")] == [CAP, 0, CAP]
            assert sample(srv, "speech_http_connections_closed_past_cap_total") - shed >= 2 * CAP
            for probe in (c.ROUTE_STATUS, c.ROUTE_READY, c.ROUTE_CONTAINER_LIVENESS, c.ROUTE_METRICS, c.ROUTE_SESSIONS):
                status, headers, _ = get(srv, probe)
                assert (status, headers.get("connection")) == (200, "close"), probe
            with connect(f"{srv.ws}/vosk?language=ko-KR", open_timeout=10) as ws:  # an upgrade: MaxConnections' to count
                ws.send('{"eof" : 1}')
                assert "text" in ws.recv(timeout=10)
            for path in ("/", "/openapi.json", "/nowhere"):
                status, headers, body = get(srv, path)
                assert (status, headers.get("retry-after"), headers.get("connection")) == (503, "1", "close"), (path, body)
                assert REASON in body.decode(), body
        said = [r.getMessage() for r in caplog.records if "Http:MaxConnections" in r.getMessage() and r.levelno == logging.WARNING]
        assert len(said) == 1 and f"Http:MaxConnections={CAP} connections are open" in said[0], said
        assert refusals(srv) == before + 3
        assert server_side(srv) <= 2 * CAP + 1  # the scrape's own connection, if not yet closed
    finally:
        for sock in stalled:
            sock.close()
    until_server_side(srv, 0)
    assert get(srv, "/openapi.json")[0] == 200
