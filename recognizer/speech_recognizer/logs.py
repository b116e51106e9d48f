"""Console and disk logging as Azure's ``Logging:*`` settings describe."""

from __future__ import annotations

import json
import logging
import logging.handlers
from pathlib import Path

from .settings import Settings


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(settings: Settings) -> None:
    """Console logs at the configured level; JSON-lines disk logs in ``Mounts:Output/logs`` when asked."""
    root = logging.getLogger()
    root.setLevel(settings.log_level)
    console = logging.StreamHandler()
    console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.handlers = [console]
    if settings.log_disk_json:
        folder = Path(settings.output_dir) / "logs"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            disk = logging.handlers.RotatingFileHandler(
                folder / "speech-recognizer.jsonl", maxBytes=int(settings.log_disk_max_mb * 1024 * 1024), backupCount=5
            )
            disk.setFormatter(JsonFormatter())
            root.addHandler(disk)
        except OSError as exc:
            logging.getLogger(__name__).warning("disk logging off: cannot write %s: %s", folder, exc)
