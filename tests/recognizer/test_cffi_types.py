"""cffi builds a library's C types lazily, and two threads building one at once can abort the process
(recognizer/speech_recognizer/cffi_types.py): the server and the transcriber realize all of Vosk's and
libsndfile's before they start a thread.

The race itself is too rare to reproduce in a test here (one abort in 30 fresh processes whose 8 threads
first touched Vosk's functions together under forced garbage collection; none in 60 without it): these
tests check that the realization covers both libraries and comes before the first thread."""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from speech_recognizer import cffi_types, transcriber
from speech_recognizer.app import create_app
from speech_recognizer.models import ModelRegistry
from speech_recognizer.transcriber import InProcess

from ..conftest import make_settings


def test_every_function_and_named_type_of_both_libraries_is_realized() -> None:
    import soundfile
    import vosk

    expected = {}
    for module, ffi, lib in ((vosk, vosk._ffi, vosk._c), (soundfile, soundfile._ffi, soundfile._snd)):
        functions = [name for name in dir(lib) if not name.startswith("__")]
        assert functions, f"{module.__name__} names no function: has its cffi library moved?"
        expected[module.__name__] = len(functions) + sum(len(names) for names in ffi.list_types())
    assert cffi_types.realize() == expected


def _order(monkeypatch: pytest.MonkeyPatch, run: Callable[[], None]) -> list[str]:
    """What ``run`` did first: "realize" for cffi_types.realize, "thread <name>" for each thread it started."""
    events: list[str] = []
    start, realize = threading.Thread.start, cffi_types.realize

    def recorded_start(self: threading.Thread) -> None:
        events.append(f"thread {self.name}")
        start(self)

    def recorded_realize() -> dict[str, int]:
        events.append("realize")
        return realize()

    monkeypatch.setattr(threading.Thread, "start", recorded_start)
    monkeypatch.setattr(cffi_types, "realize", recorded_realize)
    run()
    monkeypatch.undo()
    return events


def test_the_server_realizes_them_before_it_starts_a_thread(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    app = create_app(settings, ModelRegistry(settings.models_dir, settings.locales))  # a registry of its own: it loads

    async def start_and_stop() -> None:
        async with app.router.lifespan_context(app):
            await asyncio.sleep(0.2)  # the model's load is under way on a thread

    events = _order(monkeypatch, lambda: asyncio.run(start_and_stop()))
    assert events[:1] == ["realize"] and any(e.startswith("thread") for e in events), events


def test_the_transcriber_realizes_them_before_it_starts_a_thread(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    backend = InProcess(tmp_path / "models", "ko-KR", 1, 60.0)
    try:
        events = _order(monkeypatch, lambda: asyncio.run(backend.start()))
    finally:
        backend.close()
    assert events[:1] == ["realize"] and any(e.startswith("thread") for e in events), events


def test_the_transcriber_command_realizes_them_before_its_first_thread(monkeypatch: pytest.MonkeyPatch, speech_wav: Path,
                                                                       tmp_path: Path) -> None:
    """The whole command, not its backend alone: the headers' thread (soundfile, for the start order) started
    before the backend's first step had realized the types, and read the headers while it did."""
    args = ["--models", str(tmp_path / "models"), "--output-dir", str(tmp_path / "out"), str(speech_wav)]
    stderr = io.StringIO()
    status: list[int] = []
    events = _order(monkeypatch, lambda: status.append(transcriber.main(args, io.StringIO(), stderr)))
    assert status == [0], stderr.getvalue()
    assert events[:1] == ["realize"] and any(e.startswith("thread") for e in events), events
