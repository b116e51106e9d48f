"""kopf's exit wakes each object's worker that sleeps, as a new event of that object does.

At exit kopf ends each watch by queueing an end-of-stream marker for each object's worker and waits up to
``settings.queueing.exit_timeout`` (:data:`speech_operator.handlers.HANDLER_GRACE_SECONDS`) for them to read it. A
worker asleep wakes only at its stream's "pressure", which only a new event of its object sets, never the exit:

- a replica standing by (``--peering``, a live peer ranks above it) sleeps in its peering object's worker until that
  peer's keep-alive lapses (up to its 60 s lifetime);
- an object's worker sleeps until its delayed handlers are due (a retry's delay), or through a daemon's
  ``cancellation_backoff`` (a daemon stopped by its filter).

So such a stop waited the whole ``exit_timeout``, then cancelled the sleeper with kopf's WARNING "Unprocessed streams
left for [...]". :func:`install` makes the exit set each stream's pressure as it queues the marker (kopf 1.45.2's
``kopf._core.reactor.queueing._wait_for_depletion``, private: pinned by tests/operator/test_kopf_privates.py; kopf has
no public hook there). A sleeper then returns at once, as at a new event, and reads the marker: a delayed handler or a
daemon's backoff is left to the next start (kopf keeps both in the object's annotations), as kopf leaves them when the
sleep outlasts ``exit_timeout``. A worker handling an event still finishes it within ``exit_timeout``.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from kopf._core.reactor import queueing

#: The attribute marking kopf's depletion as wrapped by :func:`install` (it wraps it once per process).
WAKES = "speech_operator_wakes_sleepers"


def install() -> None:
    """Wrap kopf's depletion at exit so that it wakes each object's worker (idempotent: one wrap per process)."""
    original: Callable[..., Awaitable[None]] = queueing._wait_for_depletion
    if getattr(original, WAKES, False):
        return

    @functools.wraps(original)
    async def wake_then_deplete(*, streams: dict[Any, queueing.Stream], **kwargs: Any) -> None:
        # kopf queues the marker right after this with no await in between (its queues are unbounded): a worker woken
        # here finds the marker next, whatever it was sleeping for.
        for stream in list(streams.values()):
            stream.pressure.set()
        await original(streams=streams, **kwargs)

    setattr(wake_then_deplete, WAKES, True)
    queueing._wait_for_depletion = wake_then_deplete
