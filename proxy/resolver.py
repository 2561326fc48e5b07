"""Name resolution for the proxy: resolve once, dial only addresses vetted here.

`resolve` looks a CONNECT host up (or takes it from `hosts`, offline diagnostics), keeps only
addresses that may be dialled — global unicast, or an explicit `ip:port` pair listed in
`allow_upstreams` (diagnostics and tests) — and pins them for the host. The proxy's event
loop resolves through `dial_getaddrinfo`, which answers only pinned hosts with only their
pinned addresses: mitmproxy's dial can reach nothing that was not vetted, and a rebinding
DNS answer between check and dial is impossible by construction.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from sandbox.policy import canonical_host, is_global_address

RESOLVE_TIMEOUT_S = 5.0
MAX_ADDRESSES = 16
MAX_PINNED_HOSTS = 4096

GetAddrInfo = Callable[..., Awaitable[list[tuple[Any, ...]]]]


class ResolveError(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class Resolver:
    def __init__(
        self,
        hosts: Mapping[str, Sequence[str]] | None = None,
        allow_upstreams: frozenset[tuple[str, int]] = frozenset(),
    ) -> None:
        self._hosts = dict(hosts or {})
        self._allow = frozenset((str(ipaddress.ip_address(a)), p) for a, p in allow_upstreams)
        self._pinned: collections.OrderedDict[tuple[str, int], list[str]] = (
            collections.OrderedDict()
        )
        self._system: GetAddrInfo | None = None

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Make every name the loop resolves go through the pinned table."""
        self._system = loop.getaddrinfo
        loop.getaddrinfo = self.dial_getaddrinfo  # type: ignore[method-assign]

    def may_dial(self, address: str, port: int) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if (str(ip), port) in self._allow:
            return True
        return is_global_address(ip)

    async def resolve(self, host: str, port: int) -> list[str]:
        """Vetted addresses of `host` in resolver order, pinned for the dial; ResolveError
        if none may be dialled."""
        if host in self._hosts:
            answers = list(self._hosts[host])
        else:
            lookup = self._system or asyncio.get_running_loop().getaddrinfo
            try:
                infos = await asyncio.wait_for(
                    lookup(host, port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT_S
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
        vetted = vetted[:MAX_ADDRESSES]
        self._pinned[(host, port)] = vetted
        self._pinned.move_to_end((host, port))
        while len(self._pinned) > MAX_PINNED_HOSTS:
            self._pinned.popitem(last=False)
        return vetted

    async def dial_getaddrinfo(
        self, host: Any, port: Any, *, family: int = 0, type: int = 0, proto: int = 0,
        flags: int = 0,
    ) -> list[tuple[Any, ...]]:  # fmt: skip
        """getaddrinfo for the dial: only a pinned (host, port), only its vetted addresses."""
        name = canonical_host(host.decode() if isinstance(host, bytes) else str(host))
        try:
            number = int(port)
        except (TypeError, ValueError):
            number = -1
        pinned = self._pinned.get((name or "", number))
        if not pinned:
            raise socket.gaierror(socket.EAI_NONAME, f"sandboxd egress: {host!r} was not vetted")
        infos: list[tuple[Any, ...]] = []
        for address in pinned:
            ip = ipaddress.ip_address(address)
            if ip.version == 4:
                infos.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, number)))
            else:
                infos.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, number, 0, 0)))
        return infos
