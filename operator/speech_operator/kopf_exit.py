"""kopf's exit, made prompt and quiet where kopf 1.45.2 is neither: it wakes each object's worker that sleeps, as a new
event of that object does, and it tells the operator's handlers that the operator is stopping (:func:`stopping`). The
lookup of the API server's resources kopf may be making as it stops ends with it: :mod:`speech_operator.kopf_scanning`.

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

kopf's workers then handle every event still queued, each at once (the pressure set): a change of a child queued at
the stop was a whole reconcile of its SpeechToText, reads and writes, in the pod's grace, for a SpeechToText the next
replica's start reconciles anyway (kopf resumes each one). The depletion also marks the operator of its loop as
stopping (:func:`stopping`) so that its handlers may leave such events (:func:`speech_operator.handlers.child_changed`):
when kopf's orchestration of its watches is being cancelled (its root task :data:`ORCHESTRATION`, private: pinned by
tests/operator/test_kopf_privates.py), not when kopf ends a watch of a resource or namespace gone (the CRD deleted,
with scanning on), which depletes that watch's workers alike while the operator runs on.
"""

from __future__ import annotations

import asyncio
import functools
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from kopf._core.reactor import queueing

#: The attribute marking kopf's depletion as wrapped by :func:`install` (it wraps it once per process).
WAKES = "speech_operator_wakes_sleepers"

#: The name of kopf's root task that orchestrates its watches (kopf 1.45.2's ``kopf._core.reactor.running``): the
#: operator's stop cancels it, and it ends its watches then.
ORCHESTRATION = "multidimensional multitasker"

#: The event loops whose operator began stopping (:func:`stopping`): kopf runs one operator per loop (it cancels every
#: task of its loop as it exits).
_STOPPING: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()


def stopping() -> bool:
    """Whether the operator of the running loop began stopping: its watches ended, kopf's workers handle the events
    still queued (:func:`install`)."""
    return asyncio.get_running_loop() in _STOPPING


def _orchestration_cancelled() -> bool:
    return any(task.get_name() == ORCHESTRATION and task.cancelling() for task in asyncio.all_tasks())


def install() -> None:
    """Wrap kopf's depletion at exit so that it wakes each object's worker and says the operator is :func:`stopping`
    (idempotent: once per process)."""
    original: Callable[..., Awaitable[None]] = queueing._wait_for_depletion
    if getattr(original, WAKES, False):
        return

    @functools.wraps(original)
    async def wake_then_deplete(*, streams: dict[Any, queueing.Stream], **kwargs: Any) -> None:
        # kopf queues the marker right after this with no await in between (its queues are unbounded): a worker woken
        # here finds the marker next, whatever it was sleeping for.
        if _orchestration_cancelled():
            _STOPPING.add(asyncio.get_running_loop())
        for stream in list(streams.values()):
            stream.pressure.set()
        await original(streams=streams, **kwargs)

    setattr(wake_then_deplete, WAKES, True)
    queueing._wait_for_depletion = wake_then_deplete
