"""The Speech SDK for JavaScript (npm ``microsoft-cognitiveservices-speech-sdk``, locked in package-lock.json),
installed once with ``npm ci`` and run by Node.js on :file:`recognize.mjs`: one recognition a process."""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

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
#: pin were recognitions that never ended), not to time it: on a machine whose CPU is shared by many, the server's
#: phrases of the recording come long after the audio.
HANG_MS = 90000
#: Seconds the process is given past the app's ``timeoutMs``: its stop after that timeout, mid-turn, can take long.
STOP_SECONDS = 30


def recognize(node: str, scenario: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
    """Run one scenario (see recognize.mjs) and return what the app saw, with what Node wrote on stderr (``stderr``: an
    uncaught error's stack, the SDK's console lines); the script's own failure fails the caller. A recognition that did
    not end in ``timeoutMs`` fails as such first: the app then stops it mid-turn, and the SDK's stop may fail for that
    (``Another turn started before current completed.``, its turn's promise rejected by the next ``turn.start``)."""
    if timeout is None:
        timeout = scenario.get("timeoutMs", APP_TIMEOUT_MS) / 1000 + STOP_SECONDS
    done = subprocess.run([node, str(SCRIPT), json.dumps(scenario)], cwd=FOLDER, capture_output=True, text=True, timeout=timeout)
    try:
        out: dict[str, Any] = json.loads(done.stdout)
    except ValueError:
        raise AssertionError(f"recognize.mjs gave no report ({done.returncode}):\n{done.stdout}\n{done.stderr}") from None
    out["stderr"] = done.stderr
    assert not out["timedOut"], f"the recognition did not end in {scenario.get('timeoutMs', APP_TIMEOUT_MS)} ms (then: {out['error']}): {out}"
    assert done.returncode == 0 and out["error"] is None, f"recognize.mjs failed ({done.returncode}): {out['error']}\n{done.stderr}"
    return out
