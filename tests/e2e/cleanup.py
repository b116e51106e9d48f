"""Undo what the suite created, last first, whatever happened: a failure, Ctrl-C or SIGTERM.

Every step that creates something registers how to remove it *before* it creates it (removing
what does not exist is a no-op), so a failure or an interrupt half-way through a step is undone
too. Clean-up itself is not stopped by the first Ctrl-C (it would leave the cluster dirty); a
second one stops it and prints what is left and how to remove it by hand.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import FrameType


class Interrupted(KeyboardInterrupt):
    """SIGTERM (or SIGHUP), handled like Ctrl-C."""


@dataclass
class Undo:
    what: str  # "helm uninstall e2e-1a2b3c (namespace speech-e2e-1a2b3c)"
    action: Callable[[], None]
    by_hand: str  # the command a person runs to do it, printed when clean-up cannot


@dataclass
class Cleanup:
    """A stack of undo actions."""

    log: Callable[[str], None] = print
    pending: list[Undo] = field(default_factory=list)

    def push(self, what: str, action: Callable[[], None], by_hand: str) -> None:
        self.pending.append(Undo(what, action, by_hand))

    def run(self) -> list[str]:
        """Run every pending action, last first; -> one line per action that failed."""
        failures: list[str] = []
        interrupts = 0

        def deferred(signum: int, frame: FrameType | None) -> None:
            nonlocal interrupts
            interrupts += 1
            if interrupts > 1:
                raise KeyboardInterrupt
            self.log("clean-up under way; interrupt again to stop it and leave the rest to remove by hand")

        with _handling((signal.SIGINT, signal.SIGTERM, signal.SIGHUP), deferred):
            try:
                while self.pending:
                    undo = self.pending[-1]
                    self.log(f"clean-up: {undo.what}")
                    try:
                        undo.action()
                    except Exception as exc:  # noqa: BLE001 - one failure must not stop the rest
                        failures.append(f"{undo.what}: {exc}".strip())
                        self.log(f"clean-up FAILED: {undo.what}: {exc}; by hand: {undo.by_hand}")
                    self.pending.pop()
            except KeyboardInterrupt:
                self.log("clean-up stopped; left behind, remove by hand:\n" + self.by_hand())
                failures += [f"not cleaned up (interrupted): {u.what}" for u in reversed(self.pending)]
        return failures

    def by_hand(self) -> str:
        return "\n".join(f"  {u.by_hand}" for u in reversed(self.pending))


@contextlib.contextmanager
def _handling(signals: tuple[signal.Signals, ...], handler: Callable[[int, FrameType | None], None]) -> Iterator[None]:
    """Install ``handler`` for ``signals`` (main thread only: elsewhere signals are left alone)."""
    try:
        previous = {s: signal.signal(s, handler) for s in signals}
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signal.Signals(signum).name)


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP raise :class:`Interrupted` (a KeyboardInterrupt), as Ctrl-C does, so
    a CI job that is cancelled cleans up like a person pressing Ctrl-C."""
    with _handling((signal.SIGTERM, signal.SIGHUP), _raise_interrupted):
        yield
