"""Human output: aligned tables, short relative times, JSON for scripts."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any, TextIO

MAX_CELL = 60


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by two spaces; long cells are cut with an ellipsis."""
    cells = [[_cell(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
        for row in [list(headers), *cells]
    ]
    return "\n".join(lines) + "\n"


def _cell(value: str) -> str:
    value = "".join(ch if ch.isprintable() else "?" for ch in value)
    return value if len(value) <= MAX_CELL else value[: MAX_CELL - 1] + "…"


def duration(seconds: float) -> str:
    """12s, 5m, 3h, 2d: the largest whole unit."""
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def ago(timestamp: Any, now: float | None = None) -> str:
    if not isinstance(timestamp, int | float):
        return "-"
    now = time.time() if now is None else now
    return f"{duration(now - timestamp)} ago" if now >= timestamp else "just now"


def clock(timestamp: Any) -> str:
    if not isinstance(timestamp, int | float):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def detail(values: Any) -> str:
    """An event's detail object as `key=value` pairs."""
    if not isinstance(values, dict) or not values:
        return ""
    return " ".join(f"{k}={_scalar(v)}" for k, v in values.items())


def _scalar(value: Any) -> str:
    if isinstance(value, str) and value and " " not in value:
        return value
    return json.dumps(value, ensure_ascii=False)


def print_json(value: Any, out: TextIO) -> None:
    json.dump(value, out, indent=2, ensure_ascii=False)
    out.write("\n")
