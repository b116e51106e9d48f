"""HTTP probes of a recognizer on 127.0.0.1:5000, printed as JSON (stdlib only).

Run by tests/ship/build_images.py inside the recognizer's network namespace:

    python -m tests.ship.probe ready [--timeout 180]
    python -m tests.ship.probe transcribe speech.wav --language ko-KR [--key KEY]

Exits non-zero, with the reason on stderr, when the answer is not what an
Azure speech-to-text container gives.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request

BASE = "http://127.0.0.1:5000"
KEY = "ship-test"


def get(path: str) -> int:
    """A GET without headers, as a kubelet's probe."""
    req = urllib.request.Request(f"{BASE}{path}")
    with urllib.request.urlopen(req, timeout=5) as resp:
        return resp.status


def ready(timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    last = "no answer"
    start = time.monotonic()
    while time.monotonic() < deadline:
        try:
            code = get("/ready")
            if code == 200:
                # /status reports the container's own key; a kubelet's probe sends none
                return {"ready": code, "status": get("/status"), "seconds": round(time.monotonic() - start, 1),
                        # the API reference's page, its document and its Swagger UI files, from the image itself
                        "reference": {path: get(path) for path in ("/swagger", "/openapi.json", "/swagger/ui/swagger-ui-bundle.js")}}
            last = f"HTTP {code}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except OSError as exc:
            last = repr(exc)
        time.sleep(1)
    raise SystemExit(f"/ready did not answer 200 within {timeout}s (last: {last})")


def transcribe(wav: str, language: str, key: str) -> dict:
    with open(wav, "rb") as fh:
        body = fh.read()
    url = f"{BASE}/speech/recognition/conversation/cognitiveservices/v1?language={language}"
    req = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "audio/wav",
        "Ocp-Apim-Subscription-Key": key,
        "Accept": "application/json",
    })
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            status, text = resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        raise SystemExit(f"POST {url} -> HTTP {exc.code}: {exc.read().decode(errors='replace')}") from None
    try:
        answer = json.loads(text)
    except ValueError:
        raise SystemExit(f"POST {url} -> HTTP {status}, not JSON: {text[:500]}") from None
    if answer.get("RecognitionStatus") != "Success" or not str(answer.get("DisplayText", "")).strip():
        raise SystemExit(f"POST {url} -> HTTP {status}, no transcript: {answer}")
    return {"status": status, "answer": answer}


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("ready")
    r.add_argument("--timeout", type=float, default=120)
    t = sub.add_parser("transcribe")
    t.add_argument("wav")
    t.add_argument("--language", required=True)
    t.add_argument("--key", default=KEY)
    args = parser.parse_args()
    result = ready(args.timeout) if args.cmd == "ready" else transcribe(args.wav, args.language, args.key)
    json.dump(result, sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main()
