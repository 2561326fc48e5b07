"""Name resolution for the proxy: resolve once, keep only addresses that may be dialled.

The proxy dials an address it vetted here, never a name, so a rebinding resolver cannot
swap the answer between check and dial. Only global unicast addresses pass, unless an
explicit `ip:port` pair is listed in `allow_upstreams` (offline diagnostics and tests).
`hosts` (also diagnostics) replaces DNS for the names it lists.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sandbox.policy import is_global_address

RESOLVE_TIMEOUT_S = 5.0
MAX_ADDRESSES = 16


class ResolveError(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class Resolver:
    hosts: Mapping[str, Sequence[str]] = field(default_factory=dict)
    allow_upstreams: frozenset[tuple[str, int]] = frozenset()

    def may_dial(self, address: str, port: int) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if (str(ip), port) in self.allow_upstreams:
            return True
        return is_global_address(ip)

    async def resolve(self, host: str, port: int) -> list[str]:
        """Vetted addresses of `host` in resolver order; ResolveError if none may be dialled."""
        if host in self.hosts:
            answers = list(self.hosts[host])
        else:
            loop = asyncio.get_running_loop()
            try:
                infos = await asyncio.wait_for(
                    loop.getaddrinfo(host, port, type=socket.SOCK_STREAM),
                    RESOLVE_TIMEOUT_S,
                )
            except (OSError, TimeoutError) as exc:
                raise ResolveError("resolve_failed", f"{host}: {exc}") from None
            answers = [str(info[4][0]) for info in infos]
        vetted: list[str] = []
        for answer in answers[: MAX_ADDRESSES * 4]:
            if self.may_dial(answer, port) and answer not in vetted:
                vetted.append(answer)
        if not vetted:
            raise ResolveError("non_global_address", f"{host}: no address may be dialled")
        return vetted[:MAX_ADDRESSES]
