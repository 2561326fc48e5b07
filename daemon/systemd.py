"""systemd integration without libsystemd: sd_notify datagrams and socket activation."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass

logger = logging.getLogger(__name__)

SD_LISTEN_FDS_START = 3


class Notifier:
    """Sends sd_notify states (READY=1, STOPPING=1, WATCHDOG=1, STATUS=...) if asked to."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self._address = "\0" + address[1:] if address and address.startswith("@") else address
        self.watchdog_s = watchdog_usec / 1_000_000 if watchdog_usec else None

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def notify(self, *states: str) -> None:
        if not self._address:
            return
        message = "\n".join(states).encode()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            try:
                s.sendto(message, self._address)
            except OSError as exc:
                logger.warning("sd_notify failed", extra={"error": exc.strerror})

    async def watchdog(self) -> None:
        """Ping the watchdog at half its interval while the event loop is healthy."""
        if self.watchdog_s is None:
            return
        while True:
            self.notify("WATCHDOG=1")
            await asyncio.sleep(self.watchdog_s / 2)


@dataclass(frozen=True)
class SystemdEnv:
    notify_socket: str | None = None
    watchdog_usec: int | None = None
    listen_fds: int = 0  # sockets passed by socket activation, starting at fd 3

    @classmethod
    def from_environ(cls, env: Mapping[str, str], pid: int) -> SystemdEnv:
        def as_int(key: str) -> int | None:
            try:
                return int(env[key])
            except (KeyError, ValueError):
                return None

        watchdog_pid = as_int("WATCHDOG_PID")
        watchdog = as_int("WATCHDOG_USEC") if watchdog_pid in (None, pid) else None
        fds = as_int("LISTEN_FDS") or 0 if as_int("LISTEN_PID") == pid else 0
        return cls(env.get("NOTIFY_SOCKET") or None, watchdog, fds)

    def activated_socket(self) -> socket.socket | None:
        """The first socket passed by systemd (the API socket), if any."""
        if self.listen_fds < 1:
            return None
        sock = socket.socket(fileno=SD_LISTEN_FDS_START)
        os.set_inheritable(sock.fileno(), False)
        for extra in range(SD_LISTEN_FDS_START + 1, SD_LISTEN_FDS_START + self.listen_fds):
            os.set_inheritable(extra, False)
        return sock
