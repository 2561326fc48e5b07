"""Drive an OCI runtime binary (runc, or crun where it works) as containerd does.

Every call runs on the runtime's own thread pool with an explicit minimal environment (runc
and crun read NOTIFY_SOCKET, so os.environ must never leak into them).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from sandbox.errors import RuntimeFailure

RUNTIME_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
CALL_TIMEOUT_S = 30.0
MAX_LOG_TAIL = 64 << 10
# runc is started through prlimit(1), which sets the sandbox's rlimits on itself and execs
# runc: its init inherits them. Setting them later, from outside, on a process in a user
# namespace that root does not own needs CAP_SYS_RESOURCE; setting them on runc from outside
# races with runc forking its init. Limits are named as prlimit names them (nofile...).
PRLIMIT = "/usr/bin/prlimit"
PID_FILE = "init.pid"  # in the bundle: the container's init (the agent), written by `run`


@dataclass(frozen=True)
class ContainerState:
    status: str  # creating | created | running | stopped | paused
    pid: int  # of the container's init on the host (0 when it has none)


class OciCli:
    def __init__(self, binary: str, root: Path, executor: ThreadPoolExecutor) -> None:
        self._binary = binary
        self._root = root
        self._executor = executor

    def _base(self, log: Path | None = None) -> list[str]:
        argv = [self._binary, "--root", str(self._root)]
        if log is not None:
            argv += ["--log", str(log), "--log-format", "json"]
        return argv

    async def _call(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        argv = [*self._base(), *args]
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self._executor,
                lambda: subprocess.run(
                    argv,
                    env=RUNTIME_ENV,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    timeout=CALL_TIMEOUT_S,
                    check=False,
                ),
            )
        except OSError as exc:  # e.g. the binary is gone: callers (destroy) expect our error
            raise RuntimeFailure(f"cannot run {self._binary}: {exc.strerror}") from exc
        except subprocess.TimeoutExpired as exc:
            raise RuntimeFailure(f"{self._binary} {args[0]} hung for {CALL_TIMEOUT_S} s") from exc

    def run_detached(
        self,
        container_id: str,
        bundle: Path,
        listen_fd: int,
        rlimits: Sequence[tuple[str, int]] = (),
    ) -> None:
        """`run -d` with `listen_fd` as the container's fd 3 and stdio on /dev/null, under
        `rlimits` ((prlimit name, value) pairs, soft = hard), which the container inherits
        (check_rlimits() confirms it); its init's host pid goes to PID_FILE in the bundle.
        Blocking: call it on the runtime's thread pool.

        posix_spawn is used because subprocess cannot place a descriptor at a given number.
        """
        log = bundle / "runtime.log"
        limits = [f"--{name}={value}:{value}" for name, value in rlimits]
        argv = [
            *([PRLIMIT, *limits, "--"] if limits else []),
            *self._base(log),
            "run",
            "--detach",
            # No session keyring per sandbox: it would be charged to the sandbox's root's key
            # quota for nothing, since the sandbox cannot use keyrings (keyctl, add_key and
            # request_key are denied by seccomp).
            "--no-new-keyring",
            "--bundle",
            str(bundle),
            "--pid-file",
            str(bundle / PID_FILE),
            "--preserve-fds",
            "1",
            container_id,
        ]

        try:
            pid = os.posix_spawn(
                argv[0] if "/" in argv[0] else _which(argv[0]),
                argv,
                RUNTIME_ENV,
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0),
                    (os.POSIX_SPAWN_OPEN, 2, "/dev/null", os.O_WRONLY, 0),
                    (os.POSIX_SPAWN_DUP2, listen_fd, 3),
                ],
            )
            _, status = os.waitpid(pid, 0)
            code = os.waitstatus_to_exitcode(status)
        except OSError as exc:
            raise RuntimeFailure(f"cannot run {self._binary}: {exc.strerror}") from exc
        if code != 0:
            raise RuntimeFailure(f"{self._binary} run failed ({code}): {_log_tail(log)}")

    async def delete_force(self, container_id: str) -> None:
        """Kill and delete; no error if the container does not exist.

        `kill KILL` + `delete` is the fast path: killing the init of a PID namespace kills
        the whole namespace, while runc 1.1's `delete --force` sleeps 100 ms after its kill.
        """
        await self._call("kill", container_id, "KILL")
        for _ in range(3):
            proc = await self._call("delete", container_id)
            err = proc.stderr.decode(errors="replace")
            if proc.returncode == 0 or "not exist" in err:
                return
            await asyncio.sleep(0.01)
        proc = await self._call("delete", "--force", container_id)
        err = proc.stderr.decode(errors="replace")
        if proc.returncode != 0 and "not exist" not in err:
            raise RuntimeFailure(f"{self._binary} delete failed: {err.strip()[-300:]}")

    async def state(self, container_id: str) -> ContainerState | None:
        proc = await self._call("state", container_id)
        if proc.returncode != 0:
            return None
        try:
            found = json.loads(proc.stdout)
            status, pid = found.get("status"), found.get("pid")
        except (ValueError, AttributeError):
            return None
        if not isinstance(status, str) or not isinstance(pid, int):
            return None
        return ContainerState(status, pid)

    async def list_ids(self) -> list[str]:
        proc = await self._call("list", "--format", "json")
        if proc.returncode != 0:
            raise RuntimeFailure(f"{self._binary} list failed: {proc.stderr[-300:]!r}")
        items = json.loads(proc.stdout or b"null") or []
        return [str(item["id"]) for item in items if isinstance(item, dict) and "id" in item]


def check_rlimits(pid: int, rlimits: Sequence[tuple[str, int]]) -> None:
    """RuntimeFailure unless process `pid` runs under exactly these limits (soft and hard)."""
    try:
        with open(f"/proc/{pid}/limits") as f:
            table = f.read(1 << 16)
    except OSError as exc:
        raise RuntimeFailure(f"cannot read the limits of {pid}: {exc.strerror}") from exc
    labels = {"nofile": "Max open files", "fsize": "Max file size", "core": "Max core file size"}
    for name, value in rlimits:
        line = next((ln for ln in table.splitlines() if ln.startswith(labels[name])), "")
        fields = line[len(labels[name]) :].split()
        if fields[:2] != [str(value), str(value)]:
            raise RuntimeFailure(f"the sandbox's {name} limit is {fields[:2]}, not {value}")


def _which(name: str) -> str:
    for directory in RUNTIME_ENV["PATH"].split(":"):
        candidate = os.path.join(directory, name)
        if os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeFailure(f"{name} not found in {RUNTIME_ENV['PATH']}")


def _log_tail(log: Path) -> str:
    try:
        with open(log, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - MAX_LOG_TAIL))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return "no runtime log"
    messages = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("level") in ("error", "fatal"):
            messages.append(str(entry.get("msg", ""))[:500])
    return "; ".join(messages[-3:]) or "no error in runtime log"
