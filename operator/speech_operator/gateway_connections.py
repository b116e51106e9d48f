"""The gateway's cap on client connections: what bounds its memory, whatever its clients hold.

Every connection costs the gateway memory for as long as it is open, and what a client can make it
cost is bounded per connection, not in all (``python -m bench.gateway_memory`` measures each kind: bench/notes.md,
"Gateway: memory per connection", has the figures and the worst case below): an idle kept-alive connection little,
a relayed WebSocket a little more and, stalled within a message, that message so far (up to ``SPEECH_GATEWAY_MAX_MESSAGE_BYTES``: aiohttp
assembles each message before the relay sends it on), a REST body relayed to a recognizer that reads
slowly (or held while its locale wakes) what aiohttp buffers of it (up to twice
``SPEECH_GATEWAY_READ_BUFFER_BYTES``) and the relay's chunk in flight. Without a cap a few clients holding a
few hundred such connections would take the pod past its memory limit, and the OOM killer every
client of every locale with it. So at most ``SPEECH_GATEWAY_MAX_CONNECTIONS`` are served at once,
from their opening to their close, whatever they carry.

A connection past the cap is still accepted and its first request head read (within the same head
limits, :mod:`speech_operator.gateway_http_limits`): a probe or scrape (:data:`PROBE_ROUTES`: the
kubelet's ``/ready``, ``/status`` and ``/pre-stop``, Prometheus' ``/metrics``) is answered, and so is a browser's
CORS preflight with ``SPEECH_GATEWAY_CORS_ORIGINS`` (:mod:`speech_recognizer.cors` says why), anything else
is refused with :data:`~speech_operator.gateway_failures.TOO_MANY_CONNECTIONS` (503 + ``Retry-After``,
or a WebSocket accepted and closed with 1013 and the reason, as the recognizer refuses its own
connections past ``MaxConnections``: a Speech SDK's once its request begins, after a turn that fails, by the
recognizer's own code, :mod:`speech_recognizer.usp.refusal`), and either way the connection is closed after that answer. So a
flood never makes the kubelet restart the pod, nor Prometheus lose it, and what a connection past the
cap holds is its head (``SPEECH_GATEWAY_MAX_HEADER_BYTES``) for ``SPEECH_GATEWAY_HEADER_SECONDS`` at most.
Those are bounded in number too (the cap is the recognizer's own, :mod:`speech_recognizer.connection_cap`): at
most ``SPEECH_GATEWAY_MAX_CONNECTIONS`` past the cap are open at once, and the next closes the one of them open longest, without an answer (it is the one most likely to be a slow head,
not a probe, which sends its head at once). Unbounded, a flood of connections each sending a head of almost
16 KiB and never ending it held the gateway's memory by the thousand, each for ``SPEECH_GATEWAY_HEADER_SECONDS``:
one client could take the pod to its limit. Those closes are counted
(``speech_gateway_connections_closed_past_cap_total``), not logged.
Refusals are counted (``speech_gateway_failures_total{reason="too_many_connections"}``) and logged as one
warning line per :data:`~speech_recognizer.admission.LOG_EVERY_SECONDS` with their count, not one each;
``speech_gateway_connections`` and ``speech_gateway_connections_max`` say how near the cap it is.

A connection that waits for a request head of which it has sent no byte (a new one before its first
request, or a kept-alive one between two) costs almost nothing and does nothing, yet is counted: so that
one client holding the cap's worth of them (one quick request each, then silence, or a stream of empty
connections) does not lock every other client out, a new connection past the cap closes one of them and takes
its place, as nginx does with its "reusable" connections (HTTP/1.1 allows closing an idle kept-alive connection:
its client retries on a new one): first one whose answers its client is not reading (a slow reader: it still gets
them, then a FIN), else the one that has been waiting longest (:mod:`speech_recognizer.connection_cap` says why).
It closes it with a reset, not a FIN (unless an answer is still on its way:
:func:`~speech_recognizer.connection_cap.reset_on_close`): ingress-nginx keeps
the gateway's connections in a pool of idle ones, and if it takes this one for a request as the gateway closes it,
it finds it failed before it sends anything and tries a new connection. After a FIN it sent the request on it, and a
POST, which nginx does not send twice, got its 502 (tests/gateway/test_ingress_nginx.py). Only when every connection
counted has a request or stream in progress (a head or body arriving, a request handled, a WebSocket
relayed or held) is the new one past the cap. Nothing sent means nothing in its socket's receive queue either:
connections accepted in one turn of the event loop (a burst of clients) have had nothing read yet, though their
requests may have come, and closing those reset clients that had asked for something, without an answer. Those closes are counted
(``speech_gateway_idle_connections_closed_total``), not logged.

The defaults keep the pod within its memory limit at worst: the gateway idle; the OpenAI forms' budget full;
``SPEECH_GATEWAY_MAX_HELD`` WebSockets held for a waking locale, each having sent what it keeps; the rest of the
connections under the cap each stalled within a message of ``SPEECH_GATEWAY_MAX_MESSAGE_BYTES``; as many past the
cap, each midway through a head of almost ``SPEECH_GATEWAY_MAX_HEADER_BYTES``; and the kernel's buffers of each
connection's socket and of its connection to a recognizer full, each ``SPEECH_GATEWAY_READ_BUFFER_BYTES`` (doubled by
the kernel). A REST body relayed to a recognizer that reads none of it, which no client can cause alone, costs more
per connection. A pod given more memory may take more connections, in proportion.
"""

from __future__ import annotations

import logging

from speech_operator import gateway_failures as failures
from speech_recognizer import connection_cap, contract
from speech_recognizer.connection_cap import Reusable

log = logging.getLogger("speech_operator.gateway")

__all__ = ["PROBE_ROUTES", "ConnectionCap", "Reusable"]

#: Routes answered on a connection past the cap (then closed): the kubelet's probes and hook, Prometheus' scrape.
PROBE_ROUTES = frozenset({contract.ROUTE_READY, contract.ROUTE_STATUS, contract.ROUTE_METRICS, contract.ROUTE_PRE_STOP})


class ConnectionCap(connection_cap.ConnectionCap):
    """The recognizer's cap (:class:`speech_recognizer.connection_cap.ConnectionCap`), on ``SPEECH_GATEWAY_MAX_CONNECTIONS``
    client connections of every kind, refusing with the gateway's :data:`~speech_operator.gateway_failures.TOO_MANY_CONNECTIONS`."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit, setting="SPEECH_GATEWAY_MAX_CONNECTIONS", kind=failures.TOO_MANY_CONNECTIONS, holder="gateway", log=log)
