"""The Speech SDK for JavaScript (npm ``microsoft-cognitiveservices-speech-sdk``, locked in package-lock.json),
installed once with ``npm ci`` and run by Node.js on :file:`recognize.mjs`: one recognition a process."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

from ..support import READING_SECONDS, Unstarved

FOLDER = Path(__file__).resolve().parent
LOCK = FOLDER / "package-lock.json"
MODULES = FOLDER / "node_modules"
#: Written after a complete install: the hash of the lock file it installed.
STAMP = MODULES / ".installed-from-lock"
SCRIPT = FOLDER / "recognize.mjs"
#: Scenario properties that turn the SDK's multi-channel processing, and with it its reliable-reconnect contract, on.
MULTICHANNEL = {"Speech_EnableMultiChannelProcessing": "true"}


def lock_digest() -> str:
    return hashlib.sha256(LOCK.read_bytes()).hexdigest()


def install() -> str:
    """``npm ci --ignore-scripts`` from the lock file unless node_modules holds what it locks; the path of node.

    Fails (never skips) without Node.js: the JavaScript SDK's tests are part of the suite. Two workers may ask at
    once: the install holds a lock file. After the first install the tests need no network.
    """
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise RuntimeError("node and npm are needed by tests/jssdk (the Speech SDK for JavaScript): install Node.js 20 or later")
    with open(FOLDER / ".install.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        if not (STAMP.is_file() and STAMP.read_text().strip() == lock_digest()):
            done = subprocess.run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--prefer-offline"], cwd=FOLDER,
                                  capture_output=True, text=True, timeout=300)
            if done.returncode != 0:
                raise RuntimeError(f"npm ci in {FOLDER} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
            STAMP.write_text(lock_digest() + "\n")
    return node


def scenario(url: str, wav: Path, **more: Any) -> dict[str, Any]:
    """A scenario of recognize.mjs: ``wav`` in ko-KR at ``url``, and ``more``."""
    return {"url": url, "wav": str(wav), "language": "ko-KR", **more}


def result_span(result: dict[str, Any]) -> tuple[str, int, int]:
    """``(text, offset, duration)`` of a result the app saw (as tests/usp/sdk.py's ``reported``)."""
    return result["text"], result["offset"], result["duration"]


#: recognize.mjs's own default ``timeoutMs``.
APP_TIMEOUT_MS = 30000
#: ``timeoutMs`` of a recognition of a whole recording that is there to end it should it hang (the failures those tests
#: pin were recognitions that never ended), not to time it: the server's phrases of the recording may come long after
#: the audio.
HANG_MS = 90000
#: Seconds the process is given past the app's ``timeoutMs``: its stop after that timeout, mid-turn, can take long.
STOP_SECONDS = 30
#: Seconds an app ended (SIGTERM) is given to write what it saw before it is killed.
STOP_GRACE = 10


def recognize(node: str, scenario: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
    """Run one scenario (see recognize.mjs) and return what the app saw, with what Node wrote on stderr (``stderr``: an
    uncaught error's stack, the SDK's console lines); the script's own failure fails the caller. A recognition that did
    not end in ``timeoutMs`` fails as such first: the app then stops it mid-turn, and the SDK's stop may fail for that
    (``Another turn started before current completed.``, its turn's promise rejected by the next ``turn.start``).

    The app's bounds (``timeoutMs``, ``partTimeoutMs``) and the process's (``timeout`` seconds, else ``timeoutMs`` and
    :data:`STOP_SECONDS`) are judged in time in which neither this process (the server in its threads) nor the app
    waited for a CPU (:class:`~tests.support.Unstarved`), or by the clock after :func:`~tests.support.starved_clock`
    of them, however starved: on a machine shared by many, where a test gets a small share of a CPU, a bound by the
    clock alone failed recognitions that were only slow. The app is told that time (a line on its stdin at each
    reading) and stamps each event with it (``work``, ms, its start included) beside the clock's (``ms``). A process
    past its bound is ended (SIGTERM), and fails with what the app had seen by then (recognize.mjs reports on
    SIGTERM)."""
    app_ms = scenario.get("timeoutMs", APP_TIMEOUT_MS)
    bound = app_ms / 1000 + STOP_SECONDS if timeout is None else timeout
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        stopwatch = Unstarved()
        child = subprocess.Popen([node, str(SCRIPT), json.dumps({**scenario, "unstarved": True})], cwd=FOLDER,
                                 stdin=subprocess.PIPE, stdout=stdout, stderr=stderr)
        assert child.stdin is not None
        os.set_blocking(child.stdin.fileno(), False)  # an app that reads none of it never blocks the watch
        ended = False
        try:
            while child.poll() is None:
                if stopwatch.beyond(bound):
                    ended = True
                    child.terminate()
                    with suppress(subprocess.TimeoutExpired):
                        child.wait(STOP_GRACE)
                    break
                with suppress(BlockingIOError, BrokenPipeError):
                    os.write(child.stdin.fileno(), f"{1000 * stopwatch.seconds:.0f}\n".encode())
                time.sleep(READING_SECONDS)
        finally:
            stopwatch.close()
            if child.poll() is None:
                child.kill()
            child.wait()
            with suppress(BrokenPipeError):
                child.stdin.close()
        stdout.seek(0)
        stderr.seek(0)
        said, errors = stdout.read().decode(), stderr.read().decode(errors="replace")
    try:
        out: dict[str, Any] = json.loads(said)
    except ValueError:
        raise AssertionError(f"recognize.mjs gave no report ({child.returncode}; {stopwatch}):\n{said}\n{errors}") from None
    out["stderr"] = errors
    assert not ended, f"the app did not end within {bound:g} s ({stopwatch}), ended: what it saw: {out}"
    assert not out["timedOut"], f"the recognition did not end in {app_ms} ms (then: {out['error']}; {stopwatch}): {out}"
    assert child.returncode == 0 and out["error"] is None, f"recognize.mjs failed ({child.returncode}): {out['error']}\n{errors}"
    return out
