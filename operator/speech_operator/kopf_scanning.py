"""kopf's lookup of the API server's resources, made to end with its requests when it is cancelled (the operator's
stop), where kopf 1.45.2 leaves them running.

As it starts (and again when a CRD changes), kopf looks up the resources the API server serves (``/api``, ``/apis``
and each group version) in tasks of :func:`asyncio.as_completed`, which go on when the lookup is cancelled: a stop then
(a pod stopped just after it started) left them running, kopf waited for them (5 s, fixed) after its cleanup had closed
their session, and each logged an ERROR "Request attempt #1/9 failed; will retry: GET ... Connector is closed".
:func:`install` gives kopf's lookup (``kopf._cogs.clients.scanning``, private: its module's ``asyncio``; pinned by
tests/operator/test_kopf_privates.py) an ``as_completed`` whose tasks end with the lookup (:func:`as_completed`), as
:func:`asyncio.gather`'s do.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Awaitable, Coroutine, Iterable, Iterator
from typing import Any, TypeVar

from kopf._cogs.clients import scanning

T = TypeVar("T")


def install() -> None:
    """Give kopf's lookup of resources an :func:`as_completed` that ends its tasks with it (idempotent: once per
    process)."""
    if not isinstance(scanning.asyncio, _EndingWithTheLookup):
        scanning.asyncio = _EndingWithTheLookup()


def as_completed(aws: Iterable[Awaitable[T]]) -> Iterator[Coroutine[Any, Any, T]]:
    """:func:`asyncio.as_completed`, whose tasks are cancelled once a wait for the next of them does not return: it was
    cancelled (the stop), or that one failed (the others' results would go unread)."""
    tasks = {asyncio.ensure_future(aw) for aw in aws}

    async def next_one(done: Awaitable[T]) -> T:
        try:
            return await done
        except BaseException:
            for task in tasks:
                task.cancel()
            raise

    for done in asyncio.as_completed(tasks):
        yield next_one(done)


class _EndingWithTheLookup(types.ModuleType):
    """:mod:`asyncio` as kopf's lookup of resources sees it: the same, but for :func:`as_completed`."""

    as_completed = staticmethod(as_completed)

    def __init__(self) -> None:
        super().__init__("asyncio")

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)
