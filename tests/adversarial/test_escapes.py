"""Escapes that need more than one syscall: neighbours, the file API over links, process
floods, and what a deleted sandbox leaves running (nothing)."""

from __future__ import annotations

import asyncio
import os
import resource
import secrets
import time
from pathlib import Path

import pytest

from sandbox.errors import AgentError
from sandbox.spec import Limits
from tests.runtime.conftest import MIB, Harness, check, chunks_of, read_all, sh, spec

pytestmark = pytest.mark.root


async def test_neighbour_cannot_signal_another_sandbox(backend: Harness) -> None:
    rt = backend.runtime
    a, b = spec(), spec()
    await asyncio.gather(rt.create(a), rt.create(b))
    # Burn a few pids in A so its sleep's pid is not one B's own command will have.
    await check(rt, a.sandbox_id, "for i in 1 2 3 4 5 6 7 8 9 10; do true & done; wait")
    pid = int(await check(rt, a.sandbox_id, "sleep 1000 >/dev/null 2>&1 & echo $!"))
    assert pid > 10
    kill = f"import os\ntry:\n    os.kill({pid}, 9)\nexcept OSError as exc:\n    print(exc.errno)\n"
    assert await check(rt, b.sandbox_id, "exec python3", stdin=kill) == "3\n"  # ESRCH
    assert await check(rt, a.sandbox_id, f"kill -0 {pid} && echo alive") == "alive\n"


async def test_upload_over_a_symlink_replaces_the_link(backend: Harness, sid: str) -> None:
    """An upload whose name is an existing symlink never writes through it: the upload gets
    a fresh name, and the link's target (a file outside /mnt/data) is untouched."""
    rt = backend.runtime
    agent = rt.agent(sid)
    await check(rt, sid, "printf orig > /tmp/target && ln -s /tmp/target /mnt/data/up.txt")
    path, size = await agent.write_file("/mnt/data", "up.txt", chunks_of(b"new", 3), 100)
    assert (path, size) == ("/mnt/data/up (1).txt", 3)  # a taken name is never reused
    assert await check(rt, sid, "cat /tmp/target; echo; stat -c %F /mnt/data/up.txt") == (
        "orig\nsymbolic link\n"
    )
    assert await read_all(agent, "/mnt/data/up (1).txt") == b"new"
    with pytest.raises(AgentError) as exc:
        await read_all(agent, "/mnt/data/up.txt")
    assert exc.value.code == "outside_workspace"


async def test_hard_links_in_the_workspace(backend: Harness, sid: str) -> None:
    """Hard links to anything outside the workspace fail with EXDEV (another filesystem);
    one inside it is just a second name for a workspace file."""
    rt = backend.runtime
    agent = rt.agent(sid)
    for target in ("/etc/passwd", "/.sandboxd/agent.py", "/tmp/x"):
        out, err, outcome = await sh(rt, sid, f"touch /tmp/x; ln {target} /mnt/data/hl")
        assert (out, outcome.exit_code) == ("", 1), target
        assert err == (
            f"ln: failed to create hard link '/mnt/data/hl' => '{target}': "
            "Invalid cross-device link\n"
        )
    await check(rt, sid, "printf inside > a.txt && ln a.txt b.txt")
    assert await read_all(agent, "/mnt/data/b.txt") == b"inside"
    listed = sorted((f.path, f.bytes) for f in (await agent.list_files("/mnt/data", 100)).files)
    assert listed == [("/mnt/data/a.txt", 6), ("/mnt/data/b.txt", 6)]


async def test_download_through_a_symlinked_directory_is_refused(
    backend: Harness, sid: str
) -> None:
    rt = backend.runtime
    agent = rt.agent(sid)
    await check(rt, sid, "ln -s /proc/self /mnt/data/me && ln -s /tmp /mnt/data/t && touch /tmp/f")
    for path in ("/mnt/data/me/environ", "/mnt/data/t/f", "/mnt/data/./t/../t/f"):
        with pytest.raises(AgentError) as exc:
            await read_all(agent, path)
        assert exc.value.code == "outside_workspace", path
    with pytest.raises(AgentError) as exc:
        await agent.list_files("/mnt/data/t", 100)
    assert exc.value.code == "outside_workspace"


ZOMBIES = """
import os, time
for _ in range(300):
    if os.fork() == 0:
        os._exit(0)
time.sleep(0.5)
with open("/proc/self/status") as f:
    pass
print(sum(1 for p in os.listdir("/proc") if p.isdigit()
          and open("/proc/%s/stat" % p).read().split(") ")[1][0] == "Z"))
"""


async def test_zombie_flood_is_reaped(backend: Harness) -> None:
    """300 children that are never waited for: zombies while their parent lives, reaped by
    the agent (PID 1) once it is gone, so they do not hold pids against the limit."""
    rt = backend.runtime
    s = spec(limits=Limits(pids=512))
    await rt.create(s)
    assert await check(rt, s.sandbox_id, "python3", stdin=ZOMBIES) == "300\n"
    count = "ls /proc | grep -c '^[0-9]'"
    deadline = time.monotonic() + 10
    while (left := await check(rt, s.sandbox_id, count)) != "4\n":  # agent, sh, ls, grep
        assert time.monotonic() < deadline, f"{left.strip()} processes remain"
        await asyncio.sleep(0.1)
    # ...and the pids are free again: 300 more children fit.
    assert await check(rt, s.sandbox_id, "python3", stdin=ZOMBIES) == "300\n"


def _host_processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


async def test_background_processes_are_gone_after_delete(backend: Harness) -> None:
    rt = backend.runtime
    s = spec()
    await rt.create(s)
    marker = secrets.token_hex(6)
    sleeper = f"python3 -c 'import time; time.sleep(10**6)' {marker}"
    await check(
        rt,
        s.sandbox_id,
        f"setsid sh -c \"trap '' HUP TERM; exec {sleeper}\" >/dev/null 2>&1 </dev/null &"
        f" nohup {sleeper} >/dev/null 2>&1 & sleep 0.3",
    )
    assert len(_host_processes_with(marker)) == 2
    await rt.destroy(s.sandbox_id)
    assert _host_processes_with(marker) == []
    assert backend.leftovers(s.sandbox_id) == []


async def test_output_flood_is_capped_without_memory_growth(backend: Harness, sid: str) -> None:
    """500 MB of output against a 1 MiB cap: the caller gets the cap and the command is cut
    off; the host side (this process) does not grow by more than a few MiB."""
    rt = backend.runtime
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    started = time.monotonic()
    out, err, outcome = await sh(
        rt, sid, "head -c 500000000 /dev/zero | tr '\\0' x", max_output=MIB, timeout_ms=60_000
    )
    elapsed = time.monotonic() - started
    growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    assert outcome.truncated is True
    assert len(out) + len(err) <= MIB
    assert growth < 32 * MIB, growth
    assert elapsed < 30, elapsed
    print(f"output flood: {elapsed:.2f}s, host maxrss growth {growth / MIB:.1f} MiB")


async def test_workspace_inode_exhaustion(backend: Harness) -> None:
    """Creating empty files until the workspace's own inode table is full: ENOSPC, and the
    agent still works (it needs no inode to answer)."""
    rt = backend.runtime
    s = spec(limits=Limits(workspace_bytes=16 * MIB))
    await rt.create(s)
    probe = (
        "import errno, os\nn = 0\ntry:\n    while True:\n"
        "        os.close(os.open('/mnt/data/f%d' % n, os.O_CREAT | os.O_WRONLY)); n += 1\n"
        "except OSError as exc:\n    print(errno.errorcode[exc.errno], n > 1000)\n"
    )
    assert await check(rt, s.sandbox_id, "python3", stdin=probe, timeout_ms=60_000) == (
        "ENOSPC True\n"
    )
    await rt.agent(s.sandbox_id).ping()
    with pytest.raises(AgentError) as exc:
        await rt.agent(s.sandbox_id).write_file("/mnt/data", "up", chunks_of(b"x", 1), 10)
    assert exc.value.code == "no_space"
    await check(rt, s.sandbox_id, "rm -f /mnt/data/f1*")
    assert os.getuid() == 0
