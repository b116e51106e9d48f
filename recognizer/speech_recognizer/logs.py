"""Console and disk logging as Azure's ``Logging:*`` settings describe."""

from __future__ import annotations

import json
import logging
import logging.handlers
import re
from collections.abc import Iterable
from pathlib import Path

from . import contract as c
from .settings import Settings

#: What kubelets, load balancers and Prometheus poll, every few seconds for as long as the server runs.
PROBE_ROUTES = frozenset({c.ROUTE_READY, c.ROUTE_STATUS, c.ROUTE_CONTAINER_LIVENESS, c.ROUTE_CONTAINER_READINESS, c.ROUTE_METRICS,
                          c.ROUTE_SESSIONS})
#: uvicorn's access log: one INFO line per request, ``'%s - "%s %s HTTP/%s" %d'`` (client, method, path?query, version, status).
ACCESS_LOGGER = "uvicorn.access"


def probe_path(record: logging.LogRecord) -> str | None:
    """The route of an access-log line when it is one of :data:`PROBE_ROUTES`, else None."""
    args = record.args
    if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
        path = args[2].split("?", 1)[0]
        return path if path in PROBE_ROUTES else None
    return None


class ProbesAtDebug(logging.Filter):
    """Access lines of probes and scrapes at DEBUG, not INFO.

    A kubelet polls ``/ready`` every few seconds (30-odd lines during one start-up
    alone) and Prometheus scrapes ``/metrics``: at INFO the access log was mostly
    probes. Every other request keeps its INFO line; the moment the server turns
    ready is logged once by the app; ``Logging:Console:LogLevel:Default=Debug``
    shows the probes again.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or probe_path(record) is None:
            return True
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


#: python-multipart's logger (Starlette's form parser, and the gateway's scanner of OpenAI forms, run its parser).
MULTIPART_LOGGER = "python_multipart.multipart"


class ParserNotesAtDebug(logging.Filter):
    """python-multipart's warnings at DEBUG, not WARNING.

    Its parser logs a WARNING of its own for each form it cannot read ("Expected boundary character 116,
    got 112 at index 5"), then raises: the route refuses the form (400 with the reason) and logs that
    failure, one line. A hostile client wrote two lines per request, one of them a WARNING. The refusal's
    own line stays; ``Logging:Console:LogLevel:Default=Debug`` shows the parser's too.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING:
            return True
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def quiet_multipart() -> None:
    """Install :class:`ParserNotesAtDebug` on python-multipart's logger (once)."""
    logger = logging.getLogger(MULTIPART_LOGGER)
    if not any(isinstance(f, ParserNotesAtDebug) for f in logger.filters):
        logger.addFilter(ParserNotesAtDebug())


#: A query parameter whose name says it holds a secret (``subscription-key``, ``Ocp-Apim-Subscription-Key``,
#: ``Authorization``, ``access_token``, ...): its value is what :class:`SecretsRedacted` hides.
_SECRET_PARAMETER = re.compile(r"(?i)((?:^|[?&;])[^=&?;\s\"]*(?:key|token|authorization|secret|password|signature)[^=&?;\s\"]*=)[^&;\s\"]*")
REDACTED = "***"
#: Secrets at least this long are hidden wherever they occur; shorter ones only where they stand alone (no letter,
#: digit or underscore either side), since as a substring a 1- or 3-character key would hide pieces of every other word
#: (``ApiKey=k`` wrote "ko-KR" as "***o-KR").
SUBSTRING_SECRET_CHARS = 8


def _pattern(secret: str) -> re.Pattern[str]:
    """Where ``secret`` counts as written out (:data:`SUBSTRING_SECRET_CHARS`)."""
    if len(secret) >= SUBSTRING_SECRET_CHARS:
        return re.compile(re.escape(secret))
    return re.compile(rf"(?<!\w){re.escape(secret)}(?!\w)")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with the values of secret query parameters, and every one of ``secrets``, replaced by ``***``."""
    text = _SECRET_PARAMETER.sub(lambda m: m.group(1) + REDACTED, text)
    for secret in secrets:
        text = _pattern(secret).sub(REDACTED, text)
    return text


class SecretsRedacted(logging.Filter):
    """Hides keys in log lines: the values of secret query parameters, and the server's own ``ApiKey``.

    uvicorn writes every request's path with its query to the access log, and every
    WebSocket's to its error log (``"WebSocket /…?…" [accepted]``): a key sent in the
    URL (as the Speech SDK for JavaScript sends it) was written out in full. Arguments
    keep their types and places (uvicorn's access formatter unpacks them).
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = tuple(s for s in secrets if s)

    def _clean(self, value: object) -> object:
        return redact(value, self.secrets) if isinstance(value, str) else value

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self._clean(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(self._clean(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: self._clean(v) for k, v in record.args.items()}
        return True


#: Loggers uvicorn writes request paths (with their queries) to.
UVICORN_LOGGERS = (ACCESS_LOGGER, "uvicorn.error")


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
    secrets = SecretsRedacted([settings.api_key] if settings.api_key else [])
    console.addFilter(secrets)
    # On the logger, not a handler: uvicorn replaces the access log's handlers when it configures
    # its loggers (dictConfig), and keeps its filters.
    access = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(f, ProbesAtDebug) for f in access.filters):
        access.addFilter(ProbesAtDebug())
    quiet_multipart()
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, SecretsRedacted)]:
            logger.removeFilter(old)
        logger.addFilter(secrets)
    if settings.log_disk_json:
        folder = Path(settings.output_dir) / "logs"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            disk = logging.handlers.RotatingFileHandler(
                folder / "speech-recognizer.jsonl", maxBytes=int(settings.log_disk_max_mb * 1024 * 1024), backupCount=5
            )
            disk.setFormatter(JsonFormatter())
            disk.addFilter(secrets)
            root.addHandler(disk)
        except OSError as exc:
            logging.getLogger(__name__).warning("disk logging off: cannot write %s: %s", folder, exc)
