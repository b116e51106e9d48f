"""Usage records: one JSON line per recognition in ``Mounts:Output``, summed in Azure's shape."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .engine import SessionRecord

log = logging.getLogger(__name__)

API_TYPE = "speech"
SERVICE_NAME = "speech-to-text"


class UsageRecords:
    """Appends records under ``<output>/usage/<YYYY>-<MM>.jsonl``.

    Records that cannot be written are kept in memory and summed with the files,
    so a read-only or missing output folder (or a disk that fills up part-way)
    loses nothing for the life of the process; the problem is logged once.
    """

    def __init__(self, output_dir: Path, billing: str | None = None) -> None:
        self.folder = output_dir / "usage"
        self.billing = billing
        #: Records that could not be written to disk (all of them when the folder is unwritable).
        self._memory: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._warned = False

    def add(self, record: SessionRecord) -> None:
        now = datetime.fromtimestamp(record.started, timezone.utc)
        line = {
            "time": now.isoformat(),
            "route": record.route,
            "locale": record.locale,
            "audioSeconds": round(record.audio_seconds, 3),
            "phrases": record.phrases,
        }
        if self.billing:
            line["billing"] = self.billing
        with self._lock:
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
                self._memory.append(line)
                if not self._warned:
                    log.warning("usage records kept in memory only: cannot write %s: %s", self.folder, exc)
                    self._warned = True

    def _records(self, month: int | None, year: int | None) -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        files = sorted(self.folder.glob("*.jsonl")) if self.folder.is_dir() else []
        for path in files:
            try:
                lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
            except OSError as exc:
                log.warning("skipping unreadable usage file %s: %s", path, exc)
                continue
            for raw in lines:
                try:
                    record = json.loads(raw) if raw.strip() else None
                except ValueError:  # e.g. a line cut short by a crash; the others still count
                    log.warning("skipping a malformed line in %s", path)
                    continue
                if isinstance(record, dict):
                    seen.append(record)
        with self._lock:
            seen += self._memory
        if month is not None and year is not None:
            prefix = f"{year:04d}-{month:02d}"
            seen = [r for r in seen if str(r.get("time", "")).startswith(prefix)]
        return seen

    def summary(self, month: int | None = None, year: int | None = None) -> dict[str, Any]:
        """Azure's usage-log shape: ``{"apiType","serviceName","meters":[{"name","quantity"}]}``."""
        records = self._records(month, year)
        seconds: dict[str, float] = defaultdict(float)
        for r in records:
            seconds[r.get("locale", "")] += float(r.get("audioSeconds", 0.0))
        meters = [
            {"name": "speech-to-text.requests", "quantity": len(records)},
            {"name": "speech-to-text.audio-seconds", "quantity": round(sum(seconds.values()), 3)},
        ]
        meters += [
            {"name": f"speech-to-text.audio-seconds.{loc}", "quantity": round(val, 3)}
            for loc, val in sorted(seconds.items())
        ]
        return {"apiType": API_TYPE, "serviceName": SERVICE_NAME, "meters": meters}
