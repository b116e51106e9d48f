"""A locale whose model loads on demand for as long as a test keeps its load's gate shut: the real registry, serving the
ko-KR model under another name too."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from speech_recognizer.models import LoadedModel, ModelRegistry

#: The locale loaded on demand, the ko-KR model under another name (:class:`GatedRegistry`).
ON_DEMAND = "ja-JP"


class GatedRegistry(ModelRegistry):
    """The real registry, serving ko-KR (loaded at start-up) and :data:`ON_DEMAND`, whose load waits for :attr:`gate`:
    a big model's long load, for as long as a test keeps it shut."""

    def __init__(self, models_dir: Path) -> None:
        super().__init__(models_dir, ("ko-KR",))
        self.gate = threading.Event()
        #: Seconds the on-demand load took once the gate opened.
        self.load_seconds = 0.0

    def wait_ready(self, seconds: float = 300) -> None:
        """Wait for ko-KR's load at start-up (``seconds``: a loaded machine's)."""
        deadline = time.monotonic() + seconds
        while not self.ready:
            assert time.monotonic() < deadline, "ko-KR did not load"
            time.sleep(0.05)

    def load(self, locale: str) -> LoadedModel:
        if self.resolve(locale) == ON_DEMAND and self.get_loaded(locale) is None:
            self.gate.wait(120)
            started = time.monotonic()
            loaded = super().load(locale)
            self.load_seconds = time.monotonic() - started
            return loaded
        return super().load(locale)
