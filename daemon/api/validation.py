"""Strict parsing of request bodies and query strings into typed values (400 on anything off)."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError

from daemon.errors import InvalidRequest, UnknownParameter

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def parse_json_object(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        raise InvalidRequest("The request body must be a JSON object.")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return body


def reject_unknown(body: Mapping[str, Any], known: set[str], prefix: str = "") -> None:
    for key in body:
        if key not in known:
            raise UnknownParameter(f"Unknown parameter: '{prefix}{key}'.", param=f"{prefix}{key}")


def get_str(
    body: Mapping[str, Any], key: str, *, default: str | None = None, max_len: int = 256,
    param: str | None = None,
) -> str:  # fmt: skip
    param = param or key
    value = body.get(key, default)
    if value is None:
        raise InvalidRequest(f"Missing required parameter: '{param}'.", param=param)
    if not isinstance(value, str):
        raise InvalidRequest(f"Invalid type for '{param}': expected a string.", param=param)
    if len(value) > max_len:
        raise InvalidRequest(f"'{param}' is longer than {max_len} characters.", param=param)
    return value


def get_int(
    body: Mapping[str, Any], key: str, *, default: int, lo: int, hi: int, param: str | None = None
) -> int:
    param = param or key
    value = body.get(key, default)
    if value is None:
        value = default
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidRequest(f"Invalid type for '{param}': expected an integer.", param=param)
    if not lo <= value <= hi:
        raise InvalidRequest(
            f"Invalid value for '{param}': expected {lo} to {hi}, got {value}.", param=param
        )
    return value


def get_enum(
    body: Mapping[str, Any],
    key: str,
    *,
    default: str,
    allowed: tuple[str, ...],
    param: str | None = None,
) -> str:
    param = param or key
    value = body.get(key, default)
    if value is None:
        value = default
    if not isinstance(value, str) or value not in allowed:
        choices = ", ".join(f"'{a}'" for a in allowed)
        raise InvalidRequest(
            f"Invalid value for '{param}': expected one of {choices}, got {json.dumps(value)}.",
            param=param,
        )
    return value


def query_list_params(
    query: Mapping[str, str],
    cursor: re.Pattern[str],
    *,
    max_limit: int = 100,
    default: int = 20,
    min_limit: int = 1,
) -> tuple[str | None, int, bool]:
    """(after, limit, descending) from a list endpoint's query string; `after` must have the
    shape of the list's ids (`cursor`), though the object it names need not exist any more."""
    after = query.get("after") or None
    raw_limit = query.get("limit", str(default))
    try:
        limit = int(raw_limit)
    except ValueError:
        raise InvalidRequest(
            "Invalid type for 'limit': expected an integer.", param="limit"
        ) from None
    if not min_limit <= limit <= max_limit:
        raise InvalidRequest(
            f"Invalid value for 'limit': expected {min_limit} to {max_limit}.", param="limit"
        )
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest("Invalid value for 'order': expected 'asc' or 'desc'.", param="order")
    if after is not None and not cursor.fullmatch(after):
        raise InvalidRequest(
            f"Invalid value for 'after': {after[:64]!r} is not an id of this list.", param="after"
        )
    return after, limit, order == "desc"


@contextlib.contextmanager
def malformed_multipart(param: str) -> Iterator[None]:
    """aiohttp's multipart parser fails with ValueError or HttpProcessingError: a 400."""
    try:
        yield
    except (ValueError, HttpProcessingError) as exc:
        message = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else "truncated"
        raise InvalidRequest(f"Malformed multipart body: {message}", param=param) from None
