"""Runtime contract: sandboxes cannot see each other, harm their agent, or read through links."""

from __future__ import annotations

import asyncio
import secrets
import socket

import pytest

from sandbox.errors import AgentError
from tests.runtime.conftest import MIB, Harness, check, chunks_of, read_all, sh, spec

pytestmark = pytest.mark.root

LIST_PIDS = (
    'exec python3 -c "import os; print(os.getpid()); '
    "print(' '.join(sorted((p for p in os.listdir('/proc') if p.isdigit()), key=int)))\""
)


async def test_two_sandboxes_are_isolated(backend: Harness) -> None:
    rt = backend.runtime
    a, b = spec(), spec()
    await asyncio.gather(rt.create(a), rt.create(b))
    sa, sb = a.sandbox_id, b.sandbox_id

    await rt.agent(sa).write_file("/mnt/data", "secret.txt", chunks_of(b"from A", 3), 100)
    await check(rt, sa, "echo a > /tmp/a-tmp; echo a > /dev/shm/a-shm; sleep 1000 >/dev/null &")
    assert "secret.txt" in await check(rt, sa, "ls /mnt/data")

    assert (
        await check(rt, sb, "ls -A /mnt/data /tmp /dev/shm") == "/dev/shm:\n\n/mnt/data:\n\n/tmp:\n"
    )
    listing = await rt.agent(sb).list_files("/mnt/data", 100)
    assert (listing.files, listing.truncated) == ([], False)
    with pytest.raises(AgentError) as exc:
        await read_all(rt.agent(sb), "/mnt/data/secret.txt")
    assert exc.value.code == "not_found"

    # B's /proc holds exactly its agent (PID 1) and the command itself.
    own_pid, pids = (await check(rt, sb, LIST_PIDS)).splitlines()
    assert pids.split() == ["1", own_pid]
    assert "sleep" not in await check(rt, sb, "cat /proc/[0-9]*/cmdline | tr '\\0' ' '")
    # ...while A's shows its background sleep (the probe works).
    assert "sleep 1000" in await check(rt, sa, "cat /proc/[0-9]*/cmdline | tr '\\0' ' '")


ABSTRACT_CONNECT = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1].replace("@", "\\0"))
    print("connected")
except OSError as exc:
    print(exc.errno)
"""
ABSTRACT_LISTEN = """
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1].replace("@", "\\0"))
s.listen()
print("listening", flush=True)
time.sleep(1000)
"""


async def test_abstract_sockets_are_private(backend: Harness) -> None:
    """Abstract unix sockets belong to the network namespace: neither the host's nor a
    neighbour's are reachable (the host's include e.g. dbus and containerd ones)."""
    rt = backend.runtime
    a, b = spec(), spec()
    await asyncio.gather(rt.create(a), rt.create(b))
    for sid in (a.sandbox_id, b.sandbox_id):
        await rt.agent(sid).write_file(
            "/mnt/data", "connect.py", chunks_of(ABSTRACT_CONNECT.encode(), 4096), MIB
        )
    name = "@sbxd-rt-" + secrets.token_hex(4)
    with socket.socket(socket.AF_UNIX) as host_listener:
        host_listener.bind(name.replace("@", "\0"))
        host_listener.listen()
        assert await check(rt, a.sandbox_id, f"python3 connect.py {name}") == "111\n"

    await rt.agent(a.sandbox_id).write_file(
        "/mnt/data", "listen.py", chunks_of(ABSTRACT_LISTEN.encode(), 4096), MIB
    )
    await check(rt, a.sandbox_id, f"python3 listen.py {name} > listening.txt 2>&1 &")
    for _ in range(50):
        if await check(rt, a.sandbox_id, "cat listening.txt") == "listening\n":
            break
        await asyncio.sleep(0.05)
    assert await check(rt, a.sandbox_id, f"python3 connect.py {name}") == "connected\n"
    assert await check(rt, b.sandbox_id, f"python3 connect.py {name}") == "111\n"  # ECONNREFUSED


async def test_agent_survives_signals_from_the_sandbox(backend: Harness, sid: str) -> None:
    rt = backend.runtime
    # PID 1 of a pid namespace ignores SIGKILL/SIGSTOP from inside; kill -1 spares it too.
    await check(rt, sid, "kill -9 1; kill -STOP 1; kill -TERM 1; kill -INT 1; kill -HUP 1")
    await check(rt, sid, "sleep 1000 & kill -9 -1")  # exit 0: it did kill the sleep
    await asyncio.sleep(0.2)
    await rt.agent(sid).ping()
    assert await rt.is_running(sid) is True
    assert await check(rt, sid, "echo still here") == "still here\n"


async def test_agent_is_not_inspectable(backend: Harness, sid: str) -> None:
    """The agent is non-dumpable: sandbox code (same uid) cannot read its memory or env."""
    rt = backend.runtime
    for path in ("/proc/1/environ", "/proc/1/maps", "/proc/1/mem"):
        out, err, outcome = await sh(rt, sid, f"head -c 100 {path}")
        assert (out, outcome.exit_code) == ("", 1), path
        assert err == f"head: cannot open '{path}' for reading: Permission denied\n"
    out, err, outcome = await sh(rt, sid, "ls /proc/1/fd")
    assert (out, outcome.exit_code) == ("", 2)
    assert "Permission denied" in err


async def test_links_in_the_workspace_never_leave_it(backend: Harness, sid: str) -> None:
    rt = backend.runtime
    agent = rt.agent(sid)
    await check(
        rt,
        sid,
        "ln -s /etc/passwd link && ln -s /proc/1/environ env && ln -s ../../etc/passwd rel"
        " && ln -s /etc etcdir && ln -s /nonexistent dangling && mkfifo fifo"
        " && mkdir sub && ln -s ../.. sub/up && printf real > real.txt",
    )
    for path in (
        "/mnt/data/link",
        "/mnt/data/env",
        "/mnt/data/rel",
        "/mnt/data/etcdir/passwd",
        "/mnt/data/dangling",
        "/mnt/data/sub/up/etc/passwd",
        "/mnt/data/../../etc/passwd",
        "/proc/1/environ",
    ):
        with pytest.raises(AgentError) as exc:
            await read_all(agent, path)
        assert exc.value.code == "outside_workspace", path
    with pytest.raises(AgentError) as exc:
        await read_all(agent, "/mnt/data/fifo")  # must not block on the FIFO either
    assert exc.value.code == "not_regular"
    with pytest.raises(AgentError) as exc:
        await agent.write_file("/mnt/data/etcdir", "x", chunks_of(b"x", 1), 10)
    assert exc.value.code == "outside_workspace"
    with pytest.raises(AgentError) as exc:
        await agent.list_files("/mnt/data/etcdir", 100)
    assert exc.value.code == "outside_workspace"

    # Only regular files are listed; links (to anything) and FIFOs are not.
    assert [(f.path, f.bytes) for f in (await agent.list_files("/mnt/data", 100)).files] == [
        ("/mnt/data/real.txt", 4)
    ]
    # Deleting a link removes the link, never its target.
    await agent.delete_file("/mnt/data/link")
    assert await check(rt, sid, "ls -A; head -1 /etc/passwd") == (
        "dangling\nenv\netcdir\nfifo\nreal.txt\nrel\nsub\nroot:x:0:0:root:/root:/usr/sbin/nologin\n"
    )
    await agent.ping()
