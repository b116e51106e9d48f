"""Usage records: one JSON line per recognition in ``Mounts:Output``, summed in Azure's shape."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .engine import SessionRecord

log = logging.getLogger(__name__)

API_TYPE = "speech"
SERVICE_NAME = "speech-to-text"
#: Longest line read from a usage file; a longer one is not a record (it is skipped, and so is its memory).
MAX_LINE_BYTES = 64 * 1024


@dataclass
class Totals:
    """Requests and audio seconds per month (``YYYY-MM``) and locale."""

    by_month: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def add(self, record: dict[str, Any]) -> None:
        month = str(record.get("time", ""))[:7]
        try:
            seconds = float(record.get("audioSeconds", 0.0))
        except (TypeError, ValueError):
            seconds = 0.0
        entry = self.by_month.setdefault(month, {}).setdefault(str(record.get("locale", "")), [0, 0.0])
        entry[0] += 1
        entry[1] += seconds

    def absorb(self, other: Totals) -> None:
        for month, locales in other.by_month.items():
            for locale, (count, seconds) in locales.items():
                entry = self.by_month.setdefault(month, {}).setdefault(locale, [0, 0.0])
                entry[0] += count
                entry[1] += seconds

    def merge_into(self, out: dict[str, list[float]], month: str | None) -> None:
        for key, locales in self.by_month.items():
            if month is None or key == month:
                for locale, (count, seconds) in locales.items():
                    entry = out.setdefault(locale, [0, 0.0])
                    entry[0] += count
                    entry[1] += seconds


@dataclass
class _File:
    """What has been read of one usage file: up to ``offset``, summed in ``totals``."""

    offset: int = 0
    identity: tuple[int, int] = (0, 0)
    totals: Totals = field(default_factory=Totals)


class UsageRecords:
    """Appends records under ``<output>/usage/<YYYY>-<MM>.jsonl`` and keeps their running totals.

    The files are read incrementally: each summary reads only the lines appended since the
    previous one (by this process or another writing the same folder), off the event loop, one
    line at a time; memory is the totals per file, month and locale, whatever the number of
    records (reading every record at every request took 13.5 s and 1.5 GB at 1M records).
    Records that cannot be written are kept in the totals too, so a read-only or missing output
    folder (or a disk that fills up part-way) loses nothing for the life of the process; the
    problem is logged once. The first summary after start-up reads the files whole (a million
    records take seconds, on a worker thread; the app starts that read at start-up).
    """

    def __init__(self, output_dir: Path, billing: str | None = None) -> None:
        self.folder = output_dir / "usage"
        self.billing = billing
        #: Held while a record is appended (add() runs on the event loop: never held long).
        self._write_lock = threading.Lock()
        #: Held while the totals change or are summed (briefly; a file is read without it).
        self._totals_lock = threading.Lock()
        self._warned = False
        #: Records that could not be written to disk.
        self._unwritten = Totals()
        self._files: dict[Path, _File] = {}
        #: One refresh of the totals at a time; concurrent summaries share it.
        self._refreshing: asyncio.Future[None] | None = None

    def unwritable(self) -> str | None:
        """Why records cannot be written to :attr:`folder` (it is made if missing), or None when they can; checked at
        start-up, so that the one line saying so comes then and not at the first recognition (:meth:`add` does not
        repeat it)."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            if not os.access(self.folder, os.W_OK):
                raise PermissionError(f"not writable by uid {os.getuid()}")
        except OSError as exc:
            self._warned = True
            return f"usage records kept in memory only: cannot write {self.folder}: {exc}"
        return None

    def add(self, record: SessionRecord) -> None:
        now = datetime.fromtimestamp(record.started, UTC)
        line = {
            "time": now.isoformat(),
            "route": record.route,
            "locale": record.locale,
            "audioSeconds": round(record.audio_seconds, 3),
            "phrases": record.phrases,
        }
        if self.billing:
            line["billing"] = self.billing
        with self._write_lock:
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                data = (json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8")
                with open(self.folder / f"{now:%Y-%m}.jsonl", "a+b") as out:
                    # A line cut short by a crash must not swallow this record too.
                    if out.seek(0, os.SEEK_END) > 0:
                        out.seek(-1, os.SEEK_END)
                        if out.read(1) != b"\n":
                            data = b"\n" + data
                    out.write(data)
            except OSError as exc:
                with self._totals_lock:
                    self._unwritten.add(line)
                if not self._warned:
                    log.warning("usage records kept in memory only: cannot write %s: %s", self.folder, exc)
                    self._warned = True

    def refresh(self) -> None:
        """Read what was appended to the usage files since the last call (blocking: run it off the event loop, one
        call at a time)."""
        try:
            paths = sorted(self.folder.glob("*.jsonl")) if self.folder.is_dir() else []
        except OSError as exc:
            log.warning("cannot list usage records in %s: %s", self.folder, exc)
            return
        with self._totals_lock:
            for gone in set(self._files) - set(paths):
                del self._files[gone]
        for path in paths:
            self._read_new(path)

    def _read_new(self, path: Path) -> None:
        """Sum the lines appended to ``path`` since it was last read into its totals (one line in memory at a time)."""
        seen = self._files.get(path) or _File()
        offset, totals = seen.offset, Totals()
        try:
            with open(path, "rb") as f:
                stat = os.fstat(f.fileno())
                identity = (stat.st_dev, stat.st_ino)
                fresh = identity != seen.identity or stat.st_size < seen.offset  # new, replaced or cut: from the start
                f.seek(0 if fresh else offset)
                offset = f.tell()
                while raw := f.readline(MAX_LINE_BYTES):
                    if not raw.endswith(b"\n"):
                        if len(raw) < MAX_LINE_BYTES:
                            break  # a record being written: read next time
                        while (rest := f.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                            pass
                        offset = f.tell()
                        log.warning("skipping an overlong line in %s", path)
                        continue
                    offset = f.tell()
                    self._count(path, raw, totals)
        except OSError as exc:
            log.warning("skipping unreadable usage file %s: %s", path, exc)
            return
        with self._totals_lock:
            if fresh:
                seen = _File(identity=identity)
            seen.offset = offset
            seen.totals.absorb(totals)
            self._files[path] = seen

    @staticmethod
    def _count(path: Path, raw: bytes, totals: Totals) -> None:
        if not raw.strip():
            return
        try:
            record = json.loads(raw)
        except ValueError:  # e.g. a line cut short by a crash; the others still count
            log.warning("skipping a malformed line in %s", path)
            return
        if isinstance(record, dict):
            totals.add(record)

    async def summary(self, month: int | None = None, year: int | None = None) -> dict[str, Any]:
        """Azure's usage-log shape: ``{"apiType","serviceName","meters":[{"name","quantity"}]}``.

        Brings the totals up to date on a worker thread first (one refresh at a time, shared by
        concurrent requests); the event loop never reads a file.
        """
        await self.refreshed()
        return self.summarize(month, year)

    async def refreshed(self) -> None:
        """The totals brought up to date on a worker thread; a refresh already running is waited for, not repeated
        (one at a time: concurrent requests share it)."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(asyncio.to_thread(self.refresh))
        await asyncio.shield(self._refreshing)

    def summarize(self, month: int | None = None, year: int | None = None) -> dict[str, Any]:
        """The summary of the totals as last read (:meth:`refresh`)."""
        key = f"{year:04d}-{month:02d}" if month is not None and year is not None else None
        summed: dict[str, list[float]] = {}
        with self._totals_lock:
            for seen in self._files.values():
                seen.totals.merge_into(summed, key)
            self._unwritten.merge_into(summed, key)
        seconds: dict[str, float] = defaultdict(float)
        requests = 0
        for locale, (count, secs) in summed.items():
            requests += int(count)
            seconds[locale] += secs
        meters = [
            {"name": "speech-to-text.requests", "quantity": requests},
            {"name": "speech-to-text.audio-seconds", "quantity": round(sum(seconds.values()), 3)},
        ]
        meters += [
            {"name": f"speech-to-text.audio-seconds.{loc}", "quantity": round(val, 3)}
            for loc, val in sorted(seconds.items())
        ]
        return {"apiType": API_TYPE, "serviceName": SERVICE_NAME, "meters": meters}
