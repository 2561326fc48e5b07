"""What the proxy knows: sandboxes (policy, secrets, listener), their connections, counters."""

from __future__ import annotations

import asyncio
import collections
import itertools
from dataclasses import dataclass, field
from typing import Any

from proxy.secrets import SecretSet
from sandbox.policy import NetworkPolicy

# The peername mitmproxy sees for a connection that came through a sandbox's socket: a
# host no network address can have, and a serial number the front registered first.
ORIGIN_HOST = "sandbox.origin.invalid"

# Every reason the proxy counts a decision under (a fixed set: they become metric labels).
ALLOW_REASONS = ("relay", "intercept", "substituted")
DENY_REASONS = (
    "unknown_origin", "internal_error", "second_connect", "ip_literal", "bad_host", "port",
    "not_allowed", "resolve_failed", "non_global_address", "sni_mismatch", "no_vetted_tunnel",
    "placeholder", "plain_http", "duplicate_host", "host_mismatch", "missing_host",
    "connection_limit", "header_timeout", "head_too_large", "body_too_large", "body_budget",
)  # fmt: skip
REASONS = ALLOW_REASONS + DENY_REASONS


@dataclass
class Sandbox:
    sandbox_id: str
    policy: NetworkPolicy
    secrets: SecretSet
    intercept_all: bool
    server: asyncio.Server | None = None
    connections: set[Connection] = field(default_factory=set)
    detached: bool = False
    buffered_bytes: int = 0  # request bodies and WebSocket messages held now (see Held)

    def intercepts(self, host: str) -> bool:
        return self.intercept_all or self.secrets.any_for(host)


@dataclass(eq=False)
class Connection:
    """One client connection from a sandbox, as the hooks learn about it."""

    sandbox: Sandbox
    serial: int
    writer: Any = None  # the asyncio StreamWriter, to cut the connection on detach
    connect_host: str | None = None
    port: int = 0
    intercept: bool = False
    tunnel_ok: bool = False  # CONNECT vetted and the ClientHello's SNI matched it
    refused: bool = False

    @property
    def usable(self) -> bool:
        return not self.sandbox.detached and not self.refused


class Held:
    """What one message (a request body being received, a WebSocket message being assembled)
    holds in the proxy, counted in its sandbox's `buffered_bytes` until released."""

    __slots__ = ("bytes", "sandbox")

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.bytes = 0

    def fits(self, total: int, budget: int) -> bool:
        """Whether holding `total` bytes (instead of what it holds now) stays in `budget`."""
        return self.sandbox.buffered_bytes - self.bytes + total <= budget

    def set(self, total: int) -> None:
        self.sandbox.buffered_bytes += total - self.bytes
        self.bytes = total

    def release(self) -> None:
        self.set(0)


class Registry:
    def __init__(self) -> None:
        self.sandboxes: dict[str, Sandbox] = {}
        self._pending: dict[int, Connection] = {}
        self._by_client: dict[str, Connection] = {}
        self._serials = itertools.count(1)
        self.decisions: collections.Counter[str] = collections.Counter()
        self.substitutions = 0

    def new_connection(self, sandbox: Sandbox) -> Connection:
        conn = Connection(sandbox, next(self._serials))
        self._pending[conn.serial] = conn
        sandbox.connections.add(conn)
        return conn

    def claim(self, client_id: str, peername: Any) -> Connection | None:
        """Bind mitmproxy's client to the connection the front registered (or None)."""
        if (
            not isinstance(peername, tuple)
            or len(peername) != 2
            or peername[0] != ORIGIN_HOST
            or not isinstance(peername[1], int)
        ):
            return None
        conn = self._pending.pop(peername[1], None)
        if conn is not None:
            self._by_client[client_id] = conn
        return conn

    def of(self, client_id: str) -> Connection | None:
        return self._by_client.get(client_id)

    def forget(self, conn: Connection, client_id: str | None = None) -> None:
        self._pending.pop(conn.serial, None)
        if client_id is not None:
            self._by_client.pop(client_id, None)
        conn.sandbox.connections.discard(conn)

    def forget_client(self, client_id: str) -> None:
        conn = self._by_client.pop(client_id, None)
        if conn is not None:
            conn.sandbox.connections.discard(conn)

    def stats(self) -> dict[str, Any]:
        return {
            "decisions": dict(self.decisions),
            "substitutions": self.substitutions,
            "sandboxes": len(self.sandboxes),
            "connections": sum(len(s.connections) for s in self.sandboxes.values()),
        }
