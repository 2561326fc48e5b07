"""Structured logging: one JSON line per event on stderr, with request and container ids.

Under journald (JOURNAL_STREAM set) each line gets a `<N>` syslog priority prefix and no
timestamp, since the journal records its own.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from typing import Any

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
container_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "container_id", default=None
)

_STD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message"}
_PRIORITY = {"DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}


class JsonFormatter(logging.Formatter):
    def __init__(self, journald: bool) -> None:
        super().__init__()
        self._journald = journald

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {}
        if not self._journald:
            entry["ts"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + (
                f".{int(record.msecs):03d}Z"
            )
        entry["level"] = record.levelname.lower()
        entry["logger"] = record.name
        entry["msg"] = record.getMessage()
        rid, cid = request_id.get(), container_id.get()
        if rid:
            entry["request_id"] = rid
        if cid:
            entry["container_id"] = cid
        for key, value in vars(record).items():
            if key not in _STD_ATTRS and not key.startswith("_"):
                entry[key] = value if isinstance(value, int | float | bool | None) else str(value)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        line = json.dumps(entry, separators=(",", ":"))
        if self._journald:
            return f"<{_PRIORITY.get(record.levelname, 6)}>{line}"
        return line


def setup(level: str, journald: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(journald))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
