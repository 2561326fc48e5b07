"""An in-memory `Runtime` for the in-process API/service tests (never instead of the runtime
contract suite, which drives the real backends).

Each sandbox is a record plus one real process (`sleep`) standing in for its agent, so the
daemon's agent watch (a pidfd) sees a death when a test kills it. The agent's socket is a path
where nothing listens: a call that needs the agent gets AgentUnavailable, as from a sandbox whose
agent does not answer. Sandboxes outlive a daemon, as with the real backends: the double belongs
to the test, a `Daemon` only borrows it, so a restarted daemon reconciles against the same set.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sandbox.agent_client import AgentClient, AgentLimits
from sandbox.cgroups import CgroupCounters, KillCounters
from sandbox.errors import RuntimeFailure
from sandbox.spec import SandboxSpec, SkillFiles


@dataclass
class FakeSandbox:
    spec: SandboxSpec
    process: subprocess.Popen[bytes]
    skills: list[str] = field(default_factory=list)
    counters: CgroupCounters = field(default_factory=lambda: CgroupCounters(0, 0, None, 1, 0))


class MemoryRuntime:
    name = "memory"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sandboxes: dict[str, FakeSandbox] = {}
        self.created: list[str] = []  # every create, in order (the pool's too)
        self.fail_creates = 0  # the next n creates fail, as a backend that cannot start one
        self.started = 0

    async def start(self) -> None:
        self.started += 1

    async def create(self, spec: SandboxSpec) -> None:
        if self.fail_creates:
            self.fail_creates -= 1
            raise RuntimeFailure("the double was told to fail this create")
        if spec.sandbox_id in self.sandboxes:
            return
        self.egress_dir(spec.sandbox_id).mkdir(parents=True, exist_ok=True, mode=0o700)
        proc = await asyncio.to_thread(
            subprocess.Popen, ["sleep", "infinity"], stdin=subprocess.DEVNULL
        )
        self.sandboxes[spec.sandbox_id] = FakeSandbox(spec, proc)
        self.created.append(spec.sandbox_id)

    async def destroy(self, sandbox_id: str) -> None:
        box = self.sandboxes.pop(sandbox_id, None)
        if box is not None:
            await asyncio.to_thread(_end, box.process)

    async def is_running(self, sandbox_id: str) -> bool:
        box = self.sandboxes.get(sandbox_id)
        return box is not None and box.process.poll() is None

    async def list_ids(self) -> list[str]:
        return list(self.sandboxes)

    async def agent_pid(self, sandbox_id: str) -> int | None:
        box = self.sandboxes.get(sandbox_id)
        if box is None or box.process.poll() is not None:
            return None
        return box.process.pid

    def egress_dir(self, sandbox_id: str) -> Path:
        return self.root / "egress" / sandbox_id

    def agent(self, sandbox_id: str) -> AgentClient:
        return AgentClient(self.root / "no-agent" / f"{sandbox_id}.sock", AgentLimits())

    async def counters(self, sandbox_id: str) -> CgroupCounters | None:
        box = self.sandboxes.get(sandbox_id)
        return None if box is None else box.counters

    async def on_current_build(self, sandbox_id: str) -> bool:
        return sandbox_id in self.sandboxes  # one build of one image here

    async def kill_counters(self, sandbox_id: str) -> KillCounters | None:
        box = self.sandboxes.get(sandbox_id)
        if box is None:
            return None
        return KillCounters(box.counters.oom_kills, box.counters.pids_limit_hits)

    async def install_skills(self, sandbox_id: str, skills: Sequence[SkillFiles]) -> None:
        self.sandboxes[sandbox_id].skills = [s.name for s in skills]

    async def close(self) -> None:
        """Sandboxes keep running (the test ends them with `end_all`)."""

    def kill_agent(self, sandbox_id: str) -> None:
        """The stand-in agent dies (as by SIGKILL on the host); the sandbox is then gone."""
        _end(self.sandboxes[sandbox_id].process)

    def end_all(self) -> None:
        for box in self.sandboxes.values():
            _end(box.process)
        self.sandboxes.clear()


def _end(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()
