"""Graceful shutdown state shared by the API and the service.

Stages (Daemon.stop): stop accepting and answer new requests 503, and end the output streams
of background processes (they would hold the drain to its end); let in-flight requests
finish within the drain budget; then stop running commands (they answer with
`"killed": "shutdown"`) and give their replies a short budget; then let aiohttp cancel
whatever is left, stop background tasks and close the store.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass


class ShutdownControl:
    def __init__(self) -> None:
        self.draining = False
        # Set with `draining`: streams with no end of their own (a background process's
        # output) end at once rather than hold the drain; the processes run on.
        self.stop_streams = asyncio.Event()
        self.stop_commands = asyncio.Event()
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def enter(self) -> None:
        self._in_flight += 1
        self._idle.clear()

    def leave(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self._idle.set()

    async def wait_idle(self, timeout_s: float) -> bool:
        """True if every in-flight request finished within the budget."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True


@dataclass
class Cut:
    happened: bool = False


@contextlib.asynccontextmanager
async def cut_short(event: asyncio.Event) -> AsyncIterator[Cut]:
    """The block, cancelled once `event` is set (then it ends quietly, `happened` true): how
    streams with no end of their own stop at the daemon's shutdown. A timeout scope that the
    event expires; its watcher task is owned and awaited here."""
    loop = asyncio.get_running_loop()
    cut = Cut()
    try:
        async with asyncio.timeout(None) as scope:

            async def expire_on_event() -> None:
                await event.wait()
                scope.reschedule(loop.time())

            watcher = loop.create_task(expire_on_event())
            try:
                yield cut
            finally:
                watcher.cancel()
                await asyncio.wait({watcher})
    except TimeoutError:
        if not scope.expired():
            raise
        cut.happened = True
