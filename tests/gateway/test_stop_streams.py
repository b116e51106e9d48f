"""The gateway's stop and the streams it finds: what it counts for a stream whose client had already gone.

A stream whose client closed or reset its connection is no client's any more (``speech_gateway_streams_closing``): the
gateway still closes its recognizer's side, its close reply awaited. The stop cuts that close short (a recognizer busy
decoding what the client sent, or stuck, has taken in nothing for CLOSE_REPLY_SECONDS); what it cuts is what a gone
client left, not a stream the stop ended, and it is counted as the failure table counts a client gone before its answer
(``client_gone``: a DEBUG line, no alert), not as the stop's (``gateway_stopped``). The stop's own cut of a stream is
tests/gateway/test_close_handshake.py's (``gateway_stopped``, once).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.recognizer.test_not_reading import deaf_websocket

from .test_close_handshake import (
    UNSENT_MESSAGE,
    Answering,
    Deaf,
    leave,
    relayed_stream,
    stopped_failures,
    streams,
    upstream_side,
)
from .test_not_reading import gateway_side
from .test_shutdown import gateway

#: shutdown_seconds here: far more than the stop takes once the recognizer's side of the gone client's stream is cut.
STOP_SECONDS = 10


@pytest.mark.parametrize("leaves", ["close", "reset"])
def test_a_stream_whose_client_left_before_the_stop_is_its_clients_not_the_stops(tmp_path: Path, leaves: str) -> None:
    """A /vosk client sends its recognizer, which reads nothing and says nothing (:class:`Deaf`), more than its receive
    window (audio waits unsent to it), then leaves: its close 1000 (answered at once), or a reset. Its stream is in
    ``speech_gateway_streams_closing``, the recognizer's close reply awaited; then the gateway stops, and the
    recognizer's connection, bytes still unsent, is reset (gone once the gateway stopped). That is counted once, as
    its client's leaving: ``client_gone`` of ko-KR. Before: ``gateway_stopped``, the stop's failure (its log line a
    WARNING), for a stream whose client had gone before the stop began."""
    with Deaf() as deaf, relayed_stream(tmp_path / "gateway", deaf, shutdown_seconds=STOP_SECONDS) as (stack, client, _):
        client.send(UNSENT_MESSAGE)
        stack.eventually(lambda: int(upstream_side(deaf.port, 2) or 0) >= 4096, 5, "audio waits unsent to the recognizer")
        leave(client, leaves)
        stack.eventually(lambda: streams(stack) == (0, 1), 20, "the stream no longer its client's")
        stack.stop()
        stack.join()
        state = upstream_side(deaf.port)
    assert not state, f"the gateway's end of its connection to the recognizer still {state} once it stopped"
    assert stopped_failures(stack) == {("client_gone", "ko-KR"): 1}


#: shutdown_seconds of the stop that ends while a gone client's connection still closes after its last bytes.
CLOSING_STOP_SECONDS = 4


def test_a_client_that_sent_its_close_and_reads_nothing_is_its_clients_at_the_stops_end(tmp_path: Path) -> None:
    """A /vosk client whose recognizer sends it one reply (:class:`Answering`, which then reads nothing and says
    nothing) reads none of it (its window shut: the reply waits unsent in the gateway's kernel), then sends its own close
    1000 and reads nothing still. The gateway's close reply waits behind the reply: the client's connection closes after
    its last bytes (the guard's watch, SPEECH_GATEWAY_SEND_STALL_SECONDS: 30 s here), and the stream is
    ``speech_gateway_streams_closing``. The gateway stops (shutdown_seconds 4); its end resets that connection (gone from
    the gateway's side once it stopped), counted once, as its client's leaving: ``client_gone`` of ko-KR (a DEBUG line,
    no alert), the recognizer's side, its close taken in, ended uncounted. Before: ``gateway_stopped``, the stop's
    failure (a WARNING line), for a client that had gone before the stop began."""
    with Answering() as answering:
        stack = gateway(tmp_path / "gateway", answering, send_stall_seconds=30, shutdown_seconds=CLOSING_STOP_SECONDS)
        try:
            sock, protocol = deaf_websocket(stack.port, "/vosk?language=ko-KR")
            with sock:
                port = sock.getsockname()[1]
                protocol.send_text(json.dumps({"config": {"sample_rate": 16000}}).encode())
                sock.sendall(b"".join(protocol.data_to_send()))
                stack.eventually(lambda: int(gateway_side(stack, port, 2) or 0) > 0, 10, "the reply waits unsent for the client")
                protocol.send_close(1000, "done")
                sock.sendall(b"".join(protocol.data_to_send()))
                stack.eventually(lambda: streams(stack) == (0, 1), 20, "the stream no longer its client's")
                stack.stop()
                stack.join()
                side = gateway_side(stack, port)
        finally:
            stack.__exit__()
    assert not side, f"the gateway's end of the client's connection still {side} once it stopped"
    assert stopped_failures(stack) == {("client_gone", "ko-KR"): 1}
