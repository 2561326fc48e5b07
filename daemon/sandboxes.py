"""The runtime and the sandboxes' agents as the services see them: domain errors only.

Services never hold the `Runtime` itself; every call that can fail in the sandbox layer goes
through `Sandboxes`, whose one `translate` turns sandbox-layer failures into domain errors (a
call that skipped it would be a bare 500). Work on an agent happens inside `agent()` or
`lease()`, so a failure anywhere in the block (a stream read half way, a command's deadline)
is translated with the name of the operation.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass

from daemon.egress_proxy import EgressUnavailable
from daemon.errors import (
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    PortTimeout,
    PortUnreachable,
    ProcessExited,
    ProxyUnavailable,
    SandboxBusy,
    SandboxFailed,
    SandboxTimeout,
    SandboxUnavailable,
    SessionBusy,
    StorageFull,
    TooManyProcesses,
    TooManyTerminals,
)
from sandbox.agent_client import AgentClient, AgentConnection
from sandbox.cgroups import CgroupCounters, KillCounters
from sandbox.errors import (
    AgentBusy,
    AgentError,
    AgentProtocolError,
    AgentTimeout,
    AgentUnavailable,
    HostStorageFull,
    SandboxError,
)
from sandbox.execution import CountersFn
from sandbox.images import ImageError
from sandbox.runtime import Runtime
from sandbox.spec import SandboxSpec, SkillFiles

logger = logging.getLogger(__name__)

AGENT_ERRORS: dict[str, tuple[type[Exception], str | None]] = {
    "not_found": (NotFound, None),
    "no_space": (PayloadTooLarge, None),
    "too_large": (PayloadTooLarge, None),
    "bad_name": (InvalidRequest, "file"),
    "bad_cwd": (InvalidRequest, "working_directory"),
    "outside_workspace": (InvalidRequest, None),
    "not_regular": (InvalidRequest, None),
    "name_clash": (InvalidRequest, "file"),
    "bad_request": (InvalidRequest, None),
    "spawn_failed": (SandboxUnavailable, None),
    "no_thread": (SandboxBusy, None),  # instead of a hello: the sandbox's pids limit is full
    # code sessions
    "bad_session": (InvalidRequest, "session_id"),
    "too_many_sessions": (InvalidRequest, "session_id"),
    "session_busy": (SessionBusy, "session_id"),
    "session_not_found": (NotFound, "session_id"),
    # background processes
    "process_not_found": (NotFound, "process_id"),
    "too_many_processes": (TooManyProcesses, None),
    "too_many_terminals": (TooManyTerminals, None),
    "not_a_terminal": (InvalidRequest, "process_id"),
    "process_exited": (ProcessExited, "process_id"),
    "bad_offset": (InvalidRequest, "offset"),
    "input_full": (SandboxBusy, "process_id"),
    # ports
    "port_refused": (PortUnreachable, "port"),
    "port_failed": (PortUnreachable, "port"),
    "port_timeout": (PortTimeout, "port"),
}


@contextlib.contextmanager
def translate(action: str) -> Iterator[None]:
    """Turn sandbox-layer failures into domain errors (the one translation).

    Everything the runtime and the agent client raise is a SandboxError (the agent client
    turns its timeouts and broken connections into AgentTimeout and AgentUnavailable); a
    TimeoutError that still gets here is a deadline of a layer below and answers 504, never
    an untyped 500. The egress proxy's failures (EgressUnavailable) are translated here too."""
    try:
        yield
    except HostStorageFull as exc:
        raise StorageFull("The host's disk is full: the sandbox could not be created.") from exc
    except AgentError as exc:
        cls, param = AGENT_ERRORS.get(exc.code, (SandboxFailed, None))
        raise cls(exc.message, param=param) from exc  # type: ignore[call-arg]
    except AgentBusy as exc:
        logger.info("agent busy", extra={"action": action, "error": str(exc)})
        raise SandboxBusy(
            f"The container is busy ({action}): too many operations at once; retry shortly."
        ) from exc
    except AgentUnavailable as exc:
        raise SandboxUnavailable(f"The sandbox is not reachable ({action}).") from exc
    except (AgentTimeout, TimeoutError) as exc:
        logger.warning("agent timeout", extra={"action": action, "error": str(exc)})
        raise SandboxTimeout(f"The sandbox did not answer in time ({action}).") from exc
    except EgressUnavailable as exc:
        logger.error("egress proxy failed", extra={"action": action, "error": str(exc)})
        raise ProxyUnavailable("The egress proxy is unavailable; try again.") from exc
    except AgentProtocolError as exc:
        logger.warning("agent protocol violation", extra={"action": action, "error": str(exc)})
        raise SandboxFailed(f"The sandbox misbehaved ({action}).") from exc
    except ImageError as exc:  # removed or broken after the create's own check
        logger.warning("image unusable", extra={"action": action, "error": str(exc)})
        raise InvalidRequest(f"The image cannot be used: {exc}", param="image") from exc
    except SandboxError as exc:
        logger.error("sandbox operation failed", extra={"action": action, "error": str(exc)})
        raise SandboxFailed(f"The sandbox failed ({action}).") from exc


@dataclass(frozen=True)
class Lease:
    """One agent connection held for a run (a batch of commands, or a cell), and the cgroup
    counters its kills are attributed from."""

    conn: AgentConnection
    counters: CountersFn


class Sandboxes:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self.name = runtime.name

    async def create(self, spec: SandboxSpec) -> None:
        with translate("create"):
            await self._runtime.create(spec)

    async def destroy(self, cid: str, action: str = "delete") -> None:
        with translate(action):
            await self._runtime.destroy(cid)

    async def install_skills(self, cid: str, skills: Sequence[SkillFiles]) -> None:
        with translate("install skills"):
            await self._runtime.install_skills(cid, skills)

    async def agent_pid(self, cid: str) -> int | None:
        """The agent's host pid while it runs (SandboxError untranslated: the agent watch
        logs it and moves on)."""
        return await self._runtime.agent_pid(cid)

    async def counters(self, cid: str) -> CgroupCounters | None:
        """None when the sandbox's cgroup is gone (never raises for a missing sandbox)."""
        return await self._runtime.counters(cid)

    async def kill_counters(self, cid: str) -> KillCounters | None:
        """The OOM and pids-limit counters alone (cheap: read on the loop); None when the
        sandbox's cgroup is gone."""
        return await self._runtime.kill_counters(cid)

    @contextlib.asynccontextmanager
    async def agent(self, cid: str, action: str) -> AsyncIterator[AgentClient]:
        """The sandbox's agent for the block; any sandbox-layer failure in the block is
        translated, named by `action`."""
        with translate(action):
            yield self._runtime.agent(cid)

    @contextlib.asynccontextmanager
    async def lease(self, cid: str, action: str) -> AsyncIterator[Lease]:
        """One agent connection for the block (a busy agent refuses here, 429, before
        anything runs), with the sandbox's kill counters."""

        async def counters() -> KillCounters | None:
            return await self._runtime.kill_counters(cid)

        with translate(action):
            async with self._runtime.agent(cid).connection() as conn:
                yield Lease(conn, counters)
