"""`sandboxd config show`: the effective configuration as TOML, secrets redacted.

Rendering walks the config dataclasses, so every key appears (defaults included) and keys
added later show up without changes here. A key whose name says it holds keys, secrets,
passwords or tokens has its values replaced by "***" (an empty value stays empty, so "none
configured" remains visible).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any

REDACTED = "***"
SECRET_KEY = re.compile(r"(^|_)(api_?keys?|keys|secrets?|passwords?|tokens?)($|_)")
BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def is_secret(name: str) -> bool:
    return bool(SECRET_KEY.search(name.lower()))


def redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if value in ("", None):
        return value
    return REDACTED


def render(cfg: Any, notes: dict[str, str] | None = None) -> str:
    """TOML for a config dataclass: its scalars first, then one table per nested dataclass.

    `notes` maps a dotted key to a comment printed after its line (e.g. an effective default).
    """
    lines: list[str] = []
    _table(cfg, "", lines, notes or {})
    return "\n".join(lines).strip("\n") + "\n"


def _table(obj: Any, prefix: str, lines: list[str], notes: dict[str, str]) -> None:
    tables: list[tuple[str, Any]] = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            tables.append((f.name, value))
            continue
        if is_secret(f.name):
            value = redact(value)
        line = f"{_key(f.name)} = {_value(value, f.name)}"
        note = notes.get(prefix + f.name)
        lines.append(f"{line}  # {note}" if note else line)
    for name, value in tables:
        lines += ["", f"[{prefix}{_key(name)}]"]
        _table(value, f"{prefix}{name}.", lines, notes)


def _key(name: str) -> str:
    return name if BARE_KEY.fullmatch(name) else _string(name)


def _string(text: str) -> str:
    # JSON escapes are valid TOML escapes; TOML additionally forbids a raw DEL.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _value(value: Any, name: str = "") -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"0o{value:o}" if name.endswith("_mode") and value >= 0 else str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{_key(str(k))} = {_value(v)}" for k, v in value.items()) + " }"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return _value(fields)
    return _string(str(value))
