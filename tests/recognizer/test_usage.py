"""Usage records are summed as running totals, off the event loop, in bounded memory (issue 16, item 6).

With a million records, three concurrent GETs of /records/usage-logs/ made /ready take 13.5 s and the
server grow by 1.5 GB: every request read and parsed every record on the event loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from speech_recognizer.app import create_app
from speech_recognizer.engine import SessionRecord
from speech_recognizer.models import ModelRegistry
from speech_recognizer.usage import UsageRecords

from ..conftest import make_settings
from ..hostile import PeakRss
from ..support import ServerThread

RECORDS = 1_000_000


def meters(summary: dict) -> dict[str, float]:
    return {m["name"]: m["quantity"] for m in summary["meters"]}


def write_records(folder: Path, count: int) -> None:
    """``count`` records spread over two months, as the server writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    for month in (1, 2):
        line = json.dumps({"time": f"2026-{month:02d}-15T10:00:00+00:00", "route": "vosk", "locale": "ko-KR", "audioSeconds": 1.5, "phrases": 1})
        with open(folder / f"2026-{month:02d}.jsonl", "w") as out:
            block = (line + "\n") * 10_000
            for _ in range(count // 2 // 10_000):
                out.write(block)


def test_a_million_records_never_block_the_event_loop(registry: ModelRegistry, tmp_path: Path) -> None:
    write_records(tmp_path / "output" / "usage", RECORDS)
    app = create_app(make_settings(tmp_path), registry)
    with ServerThread(app) as srv, httpx.Client(timeout=120) as client:
        latencies: list[float] = []
        done = threading.Event()

        def probe() -> None:
            while not done.is_set():
                started = time.perf_counter()
                client.get(f"{srv.http}/ready")
                latencies.append(time.perf_counter() - started)
                time.sleep(0.05)

        prober = threading.Thread(target=probe)
        with PeakRss(os.getpid()) as rss:
            prober.start()
            with ThreadPoolExecutor(3) as pool:
                summaries = list(pool.map(lambda _: client.get(f"{srv.http}/records/usage-logs/").json(), range(3)))
            january = client.get(f"{srv.http}/records/usage-logs/1/2026").json()
            done.set()
            prober.join()
    assert all(meters(s)["speech-to-text.requests"] == RECORDS for s in summaries), summaries
    assert meters(summaries[0])["speech-to-text.audio-seconds.ko-KR"] == pytest.approx(1.5 * RECORDS)
    assert meters(january)["speech-to-text.requests"] == RECORDS // 2
    # Read on the event loop, the million records stalled /ready for their whole read (13.5 s); off it, a probe waits
    # for the GIL behind the reading thread and the test's own threads: 2 ms median, and up to 0.44 s once on a
    # loaded 2-core machine (a fresh-clone CI trial with other work beside it), hence 1 s, far below the stall.
    assert len(latencies) >= 5 and max(latencies) < 1.0, (len(latencies), max(latencies), statistics.median(latencies))
    assert rss.growth_mb < 50, f"the server grew {rss.growth_mb:.0f} MB summing {RECORDS} records"


def test_totals_follow_the_files(tmp_path: Path) -> None:
    """Records this process adds, lines another writer appends, a line cut short, a file replaced or removed,
    and records kept in memory when the folder cannot be written: the totals say what the files say."""
    usage = UsageRecords(tmp_path)
    folder = tmp_path / "usage"

    def total() -> float:
        return meters(asyncio.run(usage.summary()))["speech-to-text.requests"]

    assert total() == 0
    usage.add(SessionRecord("vosk", "ko-KR", 2.0, 0.1, 1))
    usage.add(SessionRecord("rest-conversation", "en-US", 1.0, 0.1, 1))
    assert total() == 2
    month = next(folder.glob("*.jsonl"))
    with open(month, "a") as out:  # another replica writing the same folder, and a line being written
        out.write(json.dumps({"time": "2026-03-01T00:00:00+00:00", "locale": "ko-KR", "audioSeconds": 3}) + "\n")
        out.write('{"time": "2026-03-01T00:00:00+00:00", "loc')
    assert total() == 3
    with open(month, "a") as out:  # the line is finished
        out.write('ale": "ko-KR", "audioSeconds": 1}\n' + "not json\n")
    summary = meters(asyncio.run(usage.summary()))
    assert summary["speech-to-text.requests"] == 4 and summary["speech-to-text.audio-seconds.ko-KR"] == 6.0
    month.write_text(json.dumps({"time": "2026-03-01T00:00:00+00:00", "locale": "ko-KR", "audioSeconds": 1}) + "\n")  # replaced
    assert total() == 1
    month.unlink()
    assert total() == 0
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK):  # root writes anyway: make the folder a file instead
            folder.chmod(0o700)
            for f in folder.iterdir():
                f.unlink()
            folder.rmdir()
            folder.write_text("")
        usage.add(SessionRecord("vosk", "ko-KR", 2.0, 0.1, 1))
        assert total() == 1, "a record that could not be written is still counted"
    finally:
        if folder.is_dir():
            folder.chmod(0o700)
