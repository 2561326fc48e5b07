"""Notices a dead agent at once, not at the next call.

Every running container's agent is watched through a pidfd of its host pid, which becomes
readable the moment the process exits (one fd per container, no polling). An agent that dies
(SIGKILLed on the host, or chosen by an OOM with nothing else left) takes its whole sandbox
with it; the watcher hands the container to `on_death`, which expires it with the cause.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from daemon.tasks import TaskSupervisor
from sandbox.errors import SandboxError

logger = logging.getLogger(__name__)


class AgentWatch:
    def __init__(
        self,
        agent_pid: Callable[[str], Awaitable[int | None]],
        tasks: TaskSupervisor,
        on_death: Callable[[str], Coroutine[Any, Any, None]],
    ) -> None:
        self._agent_pid = agent_pid  # Runtime.agent_pid
        self._tasks = tasks
        self._on_death = on_death
        self._fds: dict[str, int] = {}

    async def watch(self, cid: str) -> None:
        """Watch the container's agent from now on (idempotent); if it is not running any
        more, it is reported dead right away."""
        if cid in self._fds:
            return
        try:
            pid = await self._agent_pid(cid)
        except SandboxError as exc:
            logger.warning("agent not watched", extra={"container_id": cid, "error": str(exc)})
            return
        if pid is None:
            self._report(cid)
            return
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            self._report(cid)
            return
        self._fds[cid] = fd
        asyncio.get_running_loop().add_reader(fd, self._exited, cid)

    def unwatch(self, cid: str) -> None:
        fd = self._fds.pop(cid, None)
        if fd is not None:
            asyncio.get_running_loop().remove_reader(fd)
            os.close(fd)

    def _exited(self, cid: str) -> None:
        self.unwatch(cid)
        self._report(cid)

    def _report(self, cid: str) -> None:
        self._tasks.spawn(f"agent-died-{cid}", self._on_death(cid))

    def close(self) -> None:
        for cid in list(self._fds):
            self.unwatch(cid)

    def __len__(self) -> int:
        return len(self._fds)
