"""The proxy process's options: the schema of its `--config` JSON, with every default once.

The daemon builds ProxyOptions (its [proxy] config table takes its defaults from here) and
hands `to_json()` to the proxy on its command line; the proxy reads it back with
`from_json()`, which refuses unknown keys, wrong types and out-of-range values, so a proxy
never runs on a default it guessed or a value the daemon did not mean. Constructing either
class checks its values too: an invalid Limits or ProxyOptions cannot exist.

No mitmproxy here (the daemon imports this module; see the import-linter contracts).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

# Bounds of the two timeouts: below 0.1 s a slow but honest client is cut; above an hour a
# connection holds its slot (of max_connections) for nothing.
MIN_TIMEOUT_S = 0.1
MAX_TIMEOUT_S = 3600.0


class OptionsError(ValueError):
    """Options the proxy cannot run with; the message names the key (never a secret: the
    options hold none)."""


@dataclass(frozen=True)
class Limits:
    max_connections: int = 64  # per sandbox, concurrent
    max_head_bytes: int = 64 << 10  # a request head (line + headers)
    header_timeout_s: float = 10.0  # to receive the first request head
    idle_timeout_s: float = 120.0  # no byte either way
    max_body_bytes: int = 8 << 20  # an intercepted request body or WebSocket message, held whole
    max_buffered_bytes: int = 32 << 20  # all of them a sandbox's connections hold at once
    max_redact_bytes: int = 1 << 20  # response bodies up to this are scanned whole

    def __post_init__(self) -> None:
        for name in ("max_connections", "max_head_bytes", "max_body_bytes", "max_redact_bytes"):
            if _integer(getattr(self, name), name) <= 0:
                raise OptionsError(f"{name} must be positive")
        if _integer(self.max_buffered_bytes, "max_buffered_bytes") < self.max_body_bytes:
            raise OptionsError("max_buffered_bytes must be at least max_body_bytes")
        for name in ("header_timeout_s", "idle_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise OptionsError(f"{name} must be a number")
            # NaN fails both comparisons, so it is refused too.
            if not MIN_TIMEOUT_S <= value <= MAX_TIMEOUT_S:
                raise OptionsError(f"{name} must be within {MIN_TIMEOUT_S}..{MAX_TIMEOUT_S:g}")


@dataclass(frozen=True)
class ProxyOptions:
    confdir: str  # the proxy's state dir (CA, mitmproxy's confdir); the daemon's to choose
    intercept_all: bool = False  # TLS interception for every allowed domain, not only secrets'
    # Diagnostics for offline tests: name -> addresses used instead of DNS, and (ip, port)
    # pairs that may be dialled although they are not global addresses.
    hosts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    allow_upstreams: tuple[tuple[str, int], ...] = ()
    upstream_ca_bundle: str = ""  # extra CA file trusted for upstream certificates
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        if not isinstance(self.confdir, str) or not self.confdir.startswith("/"):
            raise OptionsError("confdir must be an absolute path")
        if not isinstance(self.intercept_all, bool):
            raise OptionsError("intercept_all must be true or false")
        if not isinstance(self.hosts, Mapping):
            raise OptionsError("hosts must map names to addresses")
        for name, addresses in self.hosts.items():
            if not isinstance(name, str) or not name:
                raise OptionsError("hosts: a name must be a non-empty string")
            if not isinstance(addresses, tuple) or not addresses:
                raise OptionsError(f"hosts.{name} must be a non-empty list of addresses")
            for address in addresses:
                _ip(address, f"hosts.{name}")
        if not isinstance(self.allow_upstreams, tuple):
            raise OptionsError("allow_upstreams must be a list of [ip, port] pairs")
        for pair in self.allow_upstreams:
            if not isinstance(pair, tuple) or len(pair) != 2:
                raise OptionsError("allow_upstreams must be a list of [ip, port] pairs")
            _ip(pair[0], "allow_upstreams")
            if not 0 < _integer(pair[1], "allow_upstreams port") < 65536:
                raise OptionsError(f"allow_upstreams: port {pair[1]} is not within 1..65535")
        if not isinstance(self.upstream_ca_bundle, str):
            raise OptionsError("upstream_ca_bundle must be a string")
        if not isinstance(self.limits, Limits):
            raise OptionsError("limits must be an object")

    def to_json(self) -> str:
        return json.dumps(
            {
                "confdir": self.confdir,
                "intercept_all": self.intercept_all,
                "hosts": {name: list(addresses) for name, addresses in self.hosts.items()},
                "allow_upstreams": [list(pair) for pair in self.allow_upstreams],
                "upstream_ca_bundle": self.upstream_ca_bundle,
                "limits": asdict(self.limits),
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> ProxyOptions:
        """The options `to_json` wrote; OptionsError for anything else."""
        try:
            raw = json.loads(text)
        except ValueError as exc:  # JSONDecodeError, or a recursion/size error of the decoder
            raise OptionsError(f"not JSON: {exc}") from None
        _known_keys(raw, cls, "")
        if "confdir" not in raw:
            raise OptionsError("confdir is missing")
        values: dict[str, Any] = dict(raw)
        if "hosts" in raw:
            hosts = raw["hosts"]
            if not isinstance(hosts, dict):
                raise OptionsError("hosts must map names to addresses")
            values["hosts"] = {name: _tuple(v, f"hosts.{name}") for name, v in hosts.items()}
        if "allow_upstreams" in raw:
            pairs = _tuple(raw["allow_upstreams"], "allow_upstreams")
            values["allow_upstreams"] = tuple(_tuple(p, "allow_upstreams") for p in pairs)
        if "limits" in raw:
            limits = raw["limits"]
            _known_keys(limits, Limits, "limits.")
            try:
                values["limits"] = Limits(**limits)
            except OptionsError as exc:
                raise OptionsError(f"limits.{exc}") from None
        return cls(**values)


def _known_keys(raw: Any, cls: type[Any], where: str) -> None:
    if not isinstance(raw, dict):
        raise OptionsError(f"{where.rstrip('.') or 'the options'} must be an object")
    unknown = sorted(set(raw) - {f.name for f in fields(cls)})
    if unknown:
        raise OptionsError(f"unknown key {where}{unknown[0]}")


def _tuple(value: Any, where: str) -> tuple[Any, ...]:
    if not isinstance(value, list):
        raise OptionsError(f"{where} must be a list")
    return tuple(value)


def _integer(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise OptionsError(f"{name} must be an integer")
    return value


def _ip(value: Any, where: str) -> None:
    try:
        if not isinstance(value, str):  # ip_address() would take an integer too
            raise ValueError(value)
        ipaddress.ip_address(value)
    except ValueError:
        raise OptionsError(f"{where}: {value!r} is not an IP address") from None
