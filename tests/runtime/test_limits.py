"""Runtime contract: every kernel limit trips, is reported as such, and the sandbox survives.

Commands go through sandbox.execution.run_command, so OOM and pids attribution is tested too.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from sandbox.errors import AgentError
from sandbox.spec import MEMORY_TIERS, Limits
from tests.runtime.conftest import MIB, Harness, check, chunks_of, sh, spec

pytestmark = pytest.mark.root

TOUCH_2G = 'python3 -c "b = bytearray(2 * 1024**3)"'  # zero-filled, so every page is touched


@pytest.mark.parametrize(
    "cmd",
    [
        # The command itself is killed...
        pytest.param(f"exec {TOUCH_2G}", id="exec"),
        # ...or a child of the shell (dash does not exec a lone command): exit 137, no signal.
        pytest.param(TOUCH_2G, id="plain"),
        pytest.param(f"cd /tmp && {TOUCH_2G}", id="compound"),
    ],
)
async def test_oom_is_reported_and_the_sandbox_survives(backend: Harness, cmd: str) -> None:
    rt = backend.runtime
    s = spec(MEMORY_TIERS["1g"])
    await rt.create(s)
    sid = s.sandbox_id

    _, _, outcome = await sh(rt, sid, cmd, timeout_ms=60_000)

    counters = await rt.counters(sid)
    assert counters is not None
    assert counters.oom_kills >= 1
    assert outcome.exit_code == 137
    assert outcome.killed == "oom"
    assert outcome.timed_out is False
    await rt.agent(sid).ping()
    assert await check(rt, sid, "echo after") == "after\n"


async def test_memory_limit_is_applied(backend: Harness) -> None:
    rt = backend.runtime
    for tier in ("1g", "4g"):
        s = spec(MEMORY_TIERS[tier])
        await rt.create(s)
        counters = await rt.counters(s.sandbox_id)
        assert counters is not None
        assert counters.memory_limit == MEMORY_TIERS[tier], tier
        assert counters.oom_kills == 0
        assert 0 < counters.memory_bytes < 256 * MIB


FORK_BOMB = """
import os, time
n = 0
while True:
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    n += 1
print("forked", n, flush=True)
time.sleep(60)
"""


async def test_pids_limit_is_reported_and_the_sandbox_survives(backend: Harness) -> None:
    rt = backend.runtime
    s = spec(limits=Limits(pids=64))
    await rt.create(s)
    sid = s.sandbox_id

    started = time.monotonic()
    _, _, outcome = await sh(rt, sid, "python3", stdin=FORK_BOMB, timeout_ms=20_000)
    elapsed = time.monotonic() - started

    assert outcome.killed == "pids"
    assert outcome.exit_code == 137
    assert outcome.timed_out is False
    assert elapsed < 10, elapsed
    counters = await rt.counters(sid)
    assert counters is not None
    assert counters.pids_limit_hits >= 1
    await rt.agent(sid).ping()
    assert await check(rt, sid, "echo after") == "after\n"
    # The whole bomb is gone (once its orphans are reaped): only the agent and this command.
    deadline = time.monotonic() + 5
    while (count := await check(rt, sid, "ls /proc | grep -c '^[0-9]'")) != "4\n":
        assert time.monotonic() < deadline, f"{count.strip()} processes remain"  # 1, sh, ls, grep
        await asyncio.sleep(0.1)


BACKGROUND_BOMB = """
import os, time
while True:
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(3)
        os._exit(0)
time.sleep(3)
"""


async def test_agent_survives_pids_exhaustion(backend: Harness) -> None:
    """A fork bomb that outlives its command (setsid, background) while the daemon opens new
    connections: those may fail (typed), but the agent lives on once the bomb is over."""
    rt = backend.runtime
    s = spec(limits=Limits(pids=64))
    await rt.create(s)
    sid = s.sandbox_id
    agent = rt.agent(sid)
    await agent.write_file("/mnt/data", "bomb.py", chunks_of(BACKGROUND_BOMB.encode(), 4096), MIB)
    await check(rt, sid, "setsid python3 bomb.py >/dev/null 2>&1 </dev/null &")
    await asyncio.sleep(1.0)  # the bomb holds every pid now
    counters = await rt.counters(sid)
    assert counters is not None
    assert counters.pids_limit_hits >= 1

    # New connections need a new agent thread: while every pid is taken they may fail (how
    # they fail is test_oversized_request_is_a_typed_error's business), the agent must not.
    await asyncio.gather(*(agent.ping() for _ in range(4)), return_exceptions=True)

    await asyncio.sleep(3.5)  # the bomb is over
    assert await rt.is_running(sid) is True
    await agent.ping()
    assert await check(rt, sid, "echo after") == "after\n"


async def test_workspace_size_limit(backend: Harness) -> None:
    rt = backend.runtime
    s = spec(limits=Limits(workspace_bytes=64 * MIB))
    await rt.create(s)
    sid = s.sandbox_id

    _, err, outcome = await sh(rt, sid, "dd if=/dev/zero of=/mnt/data/big bs=1M count=200")
    assert outcome.exit_code == 1
    assert "No space left on device" in err
    size = int(await check(rt, sid, "stat -c %s /mnt/data/big"))
    assert 48 * MIB <= size <= 64 * MIB

    # An upload into the full workspace is refused as such, and leaves no partial file.
    agent = rt.agent(sid)
    with pytest.raises(AgentError) as exc:
        await agent.write_file("/mnt/data", "up.bin", chunks_of(b"u" * MIB, MIB), 8 * MIB)
    assert exc.value.code == "no_space"
    assert await check(rt, sid, "ls -A /mnt/data") == "big\n"  # no upload temp file either

    await check(rt, sid, "rm /mnt/data/big")
    path, size = await agent.write_file("/mnt/data", "up.bin", chunks_of(b"u" * MIB, MIB), MIB)
    assert (path, size) == ("/mnt/data/up.bin", MIB)


async def test_tmp_size_limit(backend: Harness) -> None:
    rt = backend.runtime
    s = spec(limits=Limits(tmp_bytes=16 * MIB))
    await rt.create(s)
    sid = s.sandbox_id

    _, err, outcome = await sh(rt, sid, "dd if=/dev/zero of=/tmp/big bs=1M count=200")
    assert outcome.exit_code == 1
    assert "No space left on device" in err
    assert int(await check(rt, sid, "stat -c %s /tmp/big")) == 16 * MIB
    await check(rt, sid, "rm /tmp/big && echo ok > /tmp/small")


async def test_tmp_inode_limit(backend: Harness) -> None:
    rt = backend.runtime
    s = spec(limits=Limits(tmp_inodes=200))
    await rt.create(s)
    out, err, outcome = await sh(
        rt, s.sandbox_id, "i=0; while touch /tmp/f$i 2>/dev/null; do i=$((i+1)); done; echo $i"
    )
    assert (outcome.exit_code, err) == (0, "")
    assert 150 <= int(out) < 200


async def test_open_files_limit(backend: Harness) -> None:
    rt = backend.runtime
    s = spec(limits=Limits(nofile=64))
    await rt.create(s)
    probe = (
        "import errno\nfiles = []\ntry:\n    while True:\n"
        "        files.append(open('/dev/null'))\n"
        "except OSError as exc:\n    print(len(files) + 3, errno.errorcode[exc.errno])\n"
    )
    assert await check(rt, s.sandbox_id, "python3", stdin=probe) == "64 EMFILE\n"
