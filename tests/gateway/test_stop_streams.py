"""The gateway's stop and the streams it finds: what it counts for a stream whose client had already gone.

A stream whose client closed or reset its connection is no client's any more (``speech_gateway_streams_closing``): the
gateway still closes its recognizer's side, its close reply awaited. The stop cuts that close short (a recognizer busy
decoding what the client sent, or stuck, has taken in nothing for CLOSE_REPLY_SECONDS); what it cuts is what a gone
client left, not a stream the stop ended, and it is counted as the failure table counts a client gone before its answer
(``client_gone``: a DEBUG line, no alert), not as the stop's (``gateway_stopped``). The stop's own cut of a stream is
tests/gateway/test_close_handshake.py's (``gateway_stopped``, once).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .test_close_handshake import UNSENT_MESSAGE, Deaf, leave, relayed_stream, stopped_failures, streams, upstream_side

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
