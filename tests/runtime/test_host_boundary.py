"""Runtime contract: the host boundary (SECURITY.md). Nothing a sandbox owns is readable by
another host account or sandbox, no sandbox spends host root's or a neighbour's per-user
kernel budgets, shared memory nobody holds is freed, the agent outlives an OOM its tenant
provokes, and nothing inside names another sandbox or the host's paths."""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from sandbox.agent_client import hand_over_work_group
from sandbox.host.base import HostRuntime
from sandbox.oci.runtime import forget_instance
from sandbox.spec import MEMORY_TIERS, SANDBOX_UID
from tests.runtime.conftest import MIB, Harness, check, chunks_of, sh, spec

pytestmark = pytest.mark.root

# Another host account: an id in no sandbox's range and no system account's.
STRANGER = 4_000_000


def _run_as(uid: int, code: str) -> subprocess.CompletedProcess[str]:
    """Run Python `code` as host uid/gid `uid` (no groups), on the host's own Python (the
    test's may live where other accounts cannot read)."""
    return subprocess.run(
        ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--",
         "/usr/bin/python3", "-I", "-c", code],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


async def _walk_as(uid: int, top: Path) -> list[str]:
    """Every file under `top` that host uid `uid` can read a byte of."""
    proc = await asyncio.to_thread(_run_as, uid, WALK.replace("sys.argv[1:]", repr([str(top)])))
    assert proc.returncode == 0, proc.stderr
    found: list[str] = json.loads(proc.stdout)
    return found


WALK = """
import os, sys, json
readable, errors = [], 0
for top in sys.argv[1:]:
    for dirpath, dirnames, filenames in os.walk(top, onerror=lambda e: None):
        for name in filenames:
            try:
                with open(os.path.join(dirpath, name), "rb") as f:
                    if f.read(1):
                        readable.append(os.path.join(dirpath, name))
            except OSError:
                errors += 1
print(json.dumps(readable))
"""


async def _populated(backend: Harness) -> tuple[str, Path]:
    """A sandbox whose code wrote a file, with an uploaded file: (id, its host dir)."""
    rt = backend.runtime
    assert isinstance(rt, HostRuntime)
    s = spec()
    await rt.create(s)
    sid = s.sandbox_id
    await check(rt, sid, "echo secret-from-code > /mnt/data/written && mkdir -p /mnt/data/d")
    await rt.agent(sid).write_file("/mnt/data", "uploaded", chunks_of(b"secret-upload", 64), 64)
    first = rt.first_host_id(sid)
    assert first is not None
    return sid, rt.egress_dir(sid).parent


async def test_another_host_account_reads_nothing_of_any_sandbox(backend: Harness) -> None:
    """A second host account walking the whole state dir reads no byte of any sandbox."""
    rt = backend.runtime
    assert isinstance(rt, HostRuntime)
    _, sdir = await _populated(backend)
    state = sdir.parent.parent
    assert await _walk_as(STRANGER, state) == []
    # Not even by a path it knows: every route in ends at a 0700 root directory.
    for path in (sdir / "data" / "written", sdir / "data" / "uploaded", sdir / "skills"):
        proc = await asyncio.to_thread(_run_as, STRANGER, f"open({str(path)!r}, 'rb')")
        assert "PermissionError" in proc.stderr, path
    assert (state.stat().st_mode & 0o777, sdir.stat().st_mode & 0o777) == (0o700, 0o700)


async def test_another_sandbox_reads_nothing_of_its_neighbour(backend: Harness) -> None:
    """Sandbox B's own host uid reads nothing of sandbox A on the host."""
    rt = backend.runtime
    assert isinstance(rt, HostRuntime)
    a, sdir = await _populated(backend)
    b = spec()
    await rt.create(b)
    first_a, first_b = rt.first_host_id(a), rt.first_host_id(b.sandbox_id)
    assert first_a is not None and first_b is not None
    assert abs(first_a - first_b) >= 65536  # ranges of their own
    assert await _walk_as(first_b + SANDBOX_UID, sdir.parent) == []
    for path in (sdir / "data" / "written", sdir / "data" / "uploaded"):
        proc = await asyncio.to_thread(_run_as, first_b + SANDBOX_UID, f"open({str(path)!r})")
        assert "PermissionError" in proc.stderr, path


INOTIFY_HOG = r"""
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
made = 0
for _ in range(200):
    if libc.inotify_init1(0) < 0:
        break
    made += 1
print(made, flush=True)
time.sleep(3600)
"""


def _inotify_instances_possible(n: int) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    fds = []
    try:
        for _ in range(n):
            fd = libc.inotify_init1(os.O_CLOEXEC)
            if fd < 0:
                break
            fds.append(fd)
        return len(fds)
    finally:
        for fd in fds:
            os.close(fd)


async def test_inotify_exhaustion_stays_in_its_sandbox(backend: Harness) -> None:
    """200 inotify instances held by a setsid process in sandbox A leave host root and
    sandbox B able to create theirs: the kernel charges them to A's own host uid."""
    rt = backend.runtime
    a, b = spec(), spec()
    await rt.create(a)
    await rt.create(b)
    await check(rt, a.sandbox_id, "cat > /tmp/hog.py", stdin=INOTIFY_HOG)
    await check(rt, a.sandbox_id, "setsid python3 /tmp/hog.py > /tmp/hog.out 2>&1 &")
    deadline = time.monotonic() + 20
    made = ""
    while not made and time.monotonic() < deadline:
        made = (await check(rt, a.sandbox_id, "cat /tmp/hog.out")).strip()
        await asyncio.sleep(0.1)
    assert made and 0 < int(made) <= 200
    assert _inotify_instances_possible(8) == 8  # host root
    probe = "import ctypes; print(ctypes.CDLL(None).inotify_init1(0) >= 0)"
    assert await check(rt, b.sandbox_id, f"python3 -c '{probe}'") == "True\n"


SHM_LEAVER = r"""
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
size = int(sys.argv[1])
shmid = libc.shmget(0, ctypes.c_size_t(size), 0o1600)  # IPC_PRIVATE, IPC_CREAT | 0600
assert shmid >= 0, ctypes.get_errno()
address = libc.shmat(shmid, None, 0)
ctypes.memset(address, 1, size)  # every page charged
print(shmid)
"""


async def test_shared_memory_nobody_holds_is_freed(backend: Harness) -> None:
    """A 2 GiB SysV shm segment left by a process that exited is gone with it: the sandbox's
    memory use drops back (kernel.shm_rmid_forced in its IPC namespace)."""
    rt = backend.runtime
    s = spec(MEMORY_TIERS["4g"])
    await rt.create(s)
    sid = s.sandbox_id
    before = await rt.counters(sid)
    assert before is not None
    await check(rt, sid, "cat > /tmp/shm.py", stdin=SHM_LEAVER)
    await check(rt, sid, f"python3 /tmp/shm.py {2 << 30}")
    after = await rt.counters(sid)
    assert after is not None
    assert after.memory_bytes < before.memory_bytes + 256 * MIB, (before, after)
    assert await check(rt, sid, "cat /proc/sys/kernel/shm_rmid_forced") == "1\n"
    segments = await check(rt, sid, "tail -n +2 /proc/sysvipc/shm | wc -l")
    assert segments == "0\n"


# Many processes, each lowering its score as far as the kernel lets it and holding 5 MiB (an
# awk string, ~7.5 MiB resident): each one smaller than the agent (~9 MiB), together more than
# the tier. At equal scores the OOM killer takes the biggest process: the agent, unless the
# agent is not among the candidates. Each awk holds its string until its own `sleep 10` ends,
# so the attack ends on its own (11-21 s here, 4-19 OOM kills): an earlier version parked them
# all on one FIFO with a timed writer, and a subshell that reached its open() after the writer
# had gone blocked until the command's timeout.
OOM_ATTACK = r"""
for i in $(seq 200); do
  sleep 10 | (
   for v in -1000 -999 -500 0; do echo $v > /proc/self/oom_score_adj 2>/dev/null && break; done
   exec awk 'BEGIN { x = "aaaaa"; for (i = 0; i < 20; i++) x = x x } { n++ }') &
done
wait
"""


async def test_the_agent_survives_an_oom_its_tenant_provokes(backend: Harness) -> None:
    """Sandbox code lowers its oom_score_adj and fills the tier with many small processes:
    the OOM killer takes sandbox processes, never the agent."""
    rt = backend.runtime
    s = spec(MEMORY_TIERS["1g"])
    await rt.create(s)
    sid = s.sandbox_id
    await sh(rt, sid, OOM_ATTACK, timeout_ms=60_000)  # the attacking shell may be a victim too
    counters = await rt.counters(sid)
    assert counters is not None and counters.oom_kills >= 1
    await rt.agent(sid).ping()
    assert await rt.is_running(sid)
    assert await check(rt, sid, "echo alive") == "alive\n"


async def test_nothing_inside_names_a_sandbox_or_its_host_path(backend: Harness) -> None:
    """Loop backing files and mount sources seen from inside carry no container id and no
    other sandbox's path."""
    rt = backend.runtime
    assert isinstance(rt, HostRuntime)
    a, b = spec(), spec()
    await rt.create(a)
    await rt.create(b)
    seen = await check(rt, a.sandbox_id, "cat /proc/self/mountinfo; cat /proc/mounts")
    out, _, _ = await sh(
        rt,
        a.sandbox_id,
        "cat /sys/block/loop*/loop/backing_file /sys/devices/virtual/block/*/loop/backing_file",
    )
    seen += out
    b_dir = rt.egress_dir(b.sandbox_id).parent
    for name in (a.sandbox_id, b.sandbox_id, "cntr_", str(b_dir)):
        assert name not in seen, name


async def test_sandbox_code_runs_in_the_work_group_below_the_agent(backend: Harness) -> None:
    """What the agent starts (commands, code sessions, their children) is in the work group
    limited to the tier; the agent alone is in the sandbox's group, whose limit is higher."""
    rt = backend.runtime
    assert isinstance(rt, HostRuntime)
    s = spec(MEMORY_TIERS["1g"])
    await rt.create(s)
    sid = s.sandbox_id
    await check(rt, sid, "setsid sleep 300 > /dev/null 2>&1 &")
    path = await rt._cgroup_of(sid)
    assert path is not None
    layout = rt.cgroup_layout
    group = layout.root / ("memory" if layout.version.value == "v1" else "") / path.lstrip("/")
    work = {int(p) for p in (group / "work" / "cgroup.procs").read_text().split()}
    agent_pid = await rt.agent_pid(sid)
    own = {int(p) for p in (group / "cgroup.procs").read_text().split()}
    if layout.version.value == "v2":
        own = {int(p) for p in (group / "agent" / "cgroup.procs").read_text().split()}
    assert own == {agent_pid}
    assert work and agent_pid not in work
    counters = await rt.counters(sid)
    assert counters is not None and counters.memory_limit == MEMORY_TIERS["1g"]


async def test_the_v2_way_into_the_work_group_gates_every_child(backend: Harness) -> None:
    """The agent's cgroup-v2 mode, run here through v1's cgroup.procs (it moves whole
    processes on both): a child waits behind its gate until it is in the work group, quick
    commands keep their exit status, and a spawn failure is the command's."""
    rt = backend.runtime
    assert isinstance(rt, HostRuntime)
    layout = rt.cgroup_layout
    if layout.version.value != "v1":
        pytest.skip("v2 hosts run this mode for real in every other test")
    s = spec()
    await rt.create(s)
    sid = s.sandbox_id
    path = await rt._cgroup_of(sid)
    assert path is not None
    work = layout.root / "memory" / path.lstrip("/") / "work"
    fd = os.open(work / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)
    try:
        socket_path = rt._agent_socket(sid)
        sock = await asyncio.to_thread(hand_over_work_group, socket_path, "procs", (fd,))
        sock.close()
    finally:
        os.close(fd)
    for code in (0, 3, 0, 7):
        _, _, outcome = await sh(rt, sid, f"exit {code}")
        assert outcome.exit_code == code
    out = await check(rt, sid, "sh -c 'cat /proc/$$/cgroup' | grep memory")
    assert out.strip().endswith("/work")
    _, _, outcome = await sh(rt, sid, "/no/such/program")
    assert outcome.exit_code == 127


def test_forgetting_an_instance_removes_whatever_of_its_runtime_dir_exists(
    tmp_path: Path,
) -> None:
    """A docker-backend daemon never makes `roots`; `runc list` on its state dir makes that
    one: forgetting the instance still removes the state dir and the instance dir."""
    instance = os.urandom(8).hex()
    (tmp_path / instance / "state").mkdir(parents=True)
    removed = forget_instance(tmp_path, [f"/sandboxd-test-{instance}"], instance)
    assert not (tmp_path / instance).exists(), removed
