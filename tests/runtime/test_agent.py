"""Runtime contract: files and commands through the in-sandbox agent."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from sandbox.errors import AgentError, SandboxError
from sandbox.spec import AGENT_LAZY_MODULES
from tests.runtime.conftest import MIB, Harness, check, chunks_of, read_all, sandbox_uid, sh, spec

pytestmark = pytest.mark.root

# ------------------------------------------------------------------------------ files


async def test_write_read_list_delete(backend: Harness, sid: str) -> None:
    agent = backend.runtime.agent(sid)
    payload = os.urandom(3 * MIB + 12345)

    path, size = await agent.write_file(
        "/mnt/data", "data.bin", chunks_of(payload, 700_000), 8 * MIB
    )
    assert (path, size) == ("/mnt/data/data.bin", len(payload))
    assert await read_all(agent, path) == payload

    small = b"second upload\n"
    path2, size2 = await agent.write_file("/mnt/data", "data.bin", chunks_of(small, 4), 8 * MIB)
    assert (path2, size2) == ("/mnt/data/data (1).bin", len(small))
    assert await read_all(agent, path) == payload  # the first file is untouched
    assert await read_all(agent, path2) == small

    listing = await agent.list_files("/mnt/data", 100)
    files, truncated = listing.files, listing.truncated
    assert truncated is False
    assert sorted((f.path, f.bytes) for f in files) == [
        ("/mnt/data/data (1).bin", len(small)),
        ("/mnt/data/data.bin", len(payload)),
    ]
    # What the agent wrote is what sandbox code sees, owned by the sandbox user.
    out = await check(backend.runtime, sid, "stat -c '%u %s %n' data.bin 'data (1).bin'")
    uid = sandbox_uid(backend, sid)
    assert out == f"{uid} {len(payload)} data.bin\n{uid} {len(small)} data (1).bin\n"

    await agent.delete_file(path)
    files = (await agent.list_files("/mnt/data", 100)).files
    assert [f.path for f in files] == [path2]
    with pytest.raises(AgentError) as exc:
        await read_all(agent, path)
    assert exc.value.code == "not_found"
    with pytest.raises(AgentError) as exc:
        await agent.delete_file(path)
    assert exc.value.code == "not_found"


async def test_name_clash_numbering(backend: Harness, sid: str) -> None:
    agent = backend.runtime.agent(sid)
    paths = [
        (await agent.write_file("/mnt/data", name, chunks_of(b"x", 1), 10))[0]
        for name in ("README", "README", "a.tar.gz", "a.tar.gz", ".env", ".env")
    ]
    assert paths == [
        "/mnt/data/README",
        "/mnt/data/README (1)",
        "/mnt/data/a.tar.gz",
        "/mnt/data/a.tar (1).gz",
        "/mnt/data/.env",
        "/mnt/data/.env (1)",
    ]


@pytest.mark.parametrize("name", ["a/b", "../x", "..", ".", "", "x\0y", "n" * 256])
async def test_bad_names_are_refused(backend: Harness, sid: str, name: str) -> None:
    agent = backend.runtime.agent(sid)
    with pytest.raises(AgentError) as exc:
        await agent.write_file("/mnt/data", name, chunks_of(b"data", 4), 10)
    assert exc.value.code == "bad_name"
    files = (await agent.list_files("/mnt/data", 100)).files
    assert files == []
    await agent.ping()  # the connection pool is still healthy


async def test_file_size_caps(backend: Harness, sid: str) -> None:
    agent = backend.runtime.agent(sid)
    with pytest.raises(AgentError) as exc:
        await agent.write_file("/mnt/data", "big", chunks_of(b"x" * 2000, 500), 1000)
    assert exc.value.code == "too_large"
    assert (await agent.list_files("/mnt/data", 100)).files == []

    path, _ = await agent.write_file("/mnt/data", "f", chunks_of(b"y" * 2000, 500), 2000)
    with pytest.raises(AgentError) as exc:
        await read_all(agent, path, max_bytes=1999)
    assert exc.value.code == "too_large"
    assert await read_all(agent, path, max_bytes=2000) == b"y" * 2000


async def test_list_is_capped(backend: Harness, sid: str) -> None:
    rt = backend.runtime
    await check(rt, sid, "for i in $(seq 30); do echo $i > f$i; done")
    listing = await rt.agent(sid).list_files("/mnt/data", 10)
    files, truncated = listing.files, listing.truncated
    assert (len(files), truncated) == (10, True)
    listing = await rt.agent(sid).list_files("/mnt/data", 30)
    files, truncated = listing.files, listing.truncated
    assert (len(files), truncated) == (30, False)
    assert sorted(f.path for f in files) == sorted(f"/mnt/data/f{i}" for i in range(1, 31))


async def test_files_in_subdirectories(backend: Harness, sid: str) -> None:
    rt = backend.runtime
    agent = rt.agent(sid)
    await check(rt, sid, "mkdir -p out/plots && printf abc > out/plots/p.txt")
    files = (await agent.list_files("/mnt/data", 100)).files
    assert [(f.path, f.bytes) for f in files] == [("/mnt/data/out/plots/p.txt", 3)]
    path, _ = await agent.write_file("/mnt/data/out", "n.txt", chunks_of(b"12", 1), 10)
    assert path == "/mnt/data/out/n.txt"
    assert await check(rt, sid, "cat out/n.txt") == "12"
    with pytest.raises(AgentError) as exc:
        await agent.write_file("/mnt/data/missing", "n.txt", chunks_of(b"12", 1), 10)
    assert exc.value.code == "io_error"


async def test_abandoned_read_does_not_poison_the_pool(backend: Harness, sid: str) -> None:
    agent = backend.runtime.agent(sid)
    data = os.urandom(3 * MIB)
    path, _ = await agent.write_file("/mnt/data", "f.bin", chunks_of(data, MIB), 8 * MIB)
    async with agent.read_file(path, 8 * MIB) as (size, chunks):
        assert size == len(data)
        async for first in chunks:
            assert first == data[: len(first)]
            break  # the caller stops early (e.g. it only wanted the head)
    await agent.ping()
    assert [f.path for f in (await agent.list_files("/mnt/data", 10)).files] == [path]
    assert await read_all(agent, path) == data


async def test_oversized_request_is_a_typed_error(backend: Harness, sid: str) -> None:
    """A request over every frame cap fails as a SandboxError, and the agent goes on."""
    with pytest.raises(SandboxError):
        await sh(backend.runtime, sid, "true #" + "x" * (4 * MIB))
    await backend.runtime.agent(sid).ping()


async def test_the_agent_starts_from_its_read_only_bytecode(backend: Harness, sid: str) -> None:
    rt = backend.runtime
    py = "python3 -I -S -c 'import sys; print(sys.implementation.cache_tag)'"
    tag = (await sh(rt, sid, py))[0].strip()
    out, _, outcome = await sh(rt, sid, "ls /.sandboxd/__pycache__")
    modules = sorted(["agent", *(name.removesuffix(".py") for name in AGENT_LAZY_MODULES)])
    assert (out, outcome.exit_code) == ("".join(f"{m}.{tag}.pyc\n" for m in modules), 0)
    _, err, outcome = await sh(rt, sid, f"echo x >> /.sandboxd/__pycache__/agent.{tag}.pyc")
    assert outcome.exit_code != 0
    assert "Read-only file system" in err or "Permission denied" in err


# ------------------------------------------------------------------------------ exec


async def test_stdout_stderr_and_exit_codes(backend: Harness, sid: str) -> None:
    rt = backend.runtime
    out, err, outcome = await sh(rt, sid, "echo out; echo err >&2; echo out2; exit 3")
    assert (out, err) == ("out\nout2\n", "err\n")
    assert outcome.exit_code == 3
    assert (outcome.timed_out, outcome.truncated, outcome.killed) == (False, False, None)

    for cmd, code in [("true", 0), ("false", 1), ("exit 255", 255), ("no-such-cmd", 127)]:
        assert (await sh(rt, sid, cmd))[2].exit_code == code, cmd
    # Killed by a signal: 128 + signal number, as a shell reports it.
    out, _, outcome = await sh(rt, sid, "exec sh -c 'kill -TERM $$'")
    assert outcome.exit_code == 128 + 15


async def test_environment(backend: Harness, sid: str) -> None:
    rt = backend.runtime
    out = await check(
        rt, sid, 'printf "%s|%s" "$GREETING" "$EMPTY"', env={"GREETING": "héllo wörld", "EMPTY": ""}
    )
    assert out == "héllo wörld|"
    # Nothing of the daemon's environment reaches the command; the base env is fixed.
    env = dict(
        line.split("=", 1)
        for line in (await check(rt, sid, "exec env -0", env={"X": "1"})).split("\0")
        if line
    )
    bundle = "/etc/ssl/certs/ca-certificates.crt"  # the system bundle every TLS stack trusts
    assert env == {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/tmp",
        "LANG": "C.UTF-8",
        "USER": "sandbox",
        "LOGNAME": "sandbox",
        "SHELL": "/bin/sh",
        "TMPDIR": "/tmp",
        "PWD": "/mnt/data",  # exported by the shell itself
        "X": "1",
        **dict.fromkeys(
            (
                "SSL_CERT_FILE",
                "REQUESTS_CA_BUNDLE",
                "CURL_CA_BUNDLE",
                "NODE_EXTRA_CA_CERTS",
                "GIT_SSL_CAINFO",
                "PIP_CERT",
            ),
            bundle,
        ),
    }


async def test_configure_sets_the_environment_of_later_commands(backend: Harness) -> None:
    rt = backend.runtime
    s = spec()
    await rt.create(s)
    try:
        await rt.agent(s.sandbox_id).configure({"API_KEY": "sbxd_ph_x", "HTTPS_PROXY": "h"}, None)
        out = await check(rt, s.sandbox_id, 'printf "%s|%s" "$API_KEY" "$HTTPS_PROXY"')
        assert out == "sbxd_ph_x|h"
        # No egress relay was asked for: nothing listens on 3128.
        out = await check(
            rt, s.sandbox_id,
            "python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", 3128))' "
            "2>&1 | tail -1",
        )  # fmt: skip
        assert "ConnectionRefusedError" in out
    finally:
        await rt.destroy(s.sandbox_id)


async def test_working_directory(backend: Harness, sid: str) -> None:
    rt = backend.runtime
    assert await check(rt, sid, "pwd") == "/mnt/data\n"
    assert await check(rt, sid, "pwd", cwd="/tmp") == "/tmp\n"
    with pytest.raises(AgentError) as exc:
        await sh(rt, sid, "pwd", cwd="/nonexistent")
    assert exc.value.code == "bad_cwd"


async def test_stdin_is_delivered(backend: Harness, sid: str) -> None:
    rt = backend.runtime
    assert await check(rt, sid, "cat", stdin="line one\nline two\n") == "line one\nline two\n"
    text = "0123456789abcdef" * 3_000
    assert await check(rt, sid, "wc -c", stdin=text) == f"{len(text)}\n"
    # Without stdin the command reads EOF at once instead of hanging.
    assert await check(rt, sid, "cat; echo eof", timeout_ms=5000) == "eof\n"


async def test_large_stdin_is_delivered(backend: Harness, sid: str) -> None:
    """stdin up to the documented 1 MiB cap (here 640 KB: more than a pipe buffer)."""
    big = "0123456789abcdef" * 40_000
    assert await check(backend.runtime, sid, "wc -c", stdin=big) == f"{len(big)}\n"


async def test_timeout_returns_partial_output(backend: Harness, sid: str) -> None:
    rt = backend.runtime
    started = time.monotonic()
    out, err, outcome = await sh(rt, sid, "echo start; sleep 30; echo never", timeout_ms=1000)
    elapsed = time.monotonic() - started
    assert (out, err) == ("start\n", "")
    assert outcome.timed_out is True
    assert outcome.killed is None
    assert outcome.exit_code == 128 + 9
    assert 1.0 <= elapsed < 5.0
    # The command's whole process group is gone, and the sandbox goes on.
    live_sleeps = "ps -eo stat=,comm= | grep -v '^Z' | grep -c ' sleep$' || true"
    assert await check(rt, sid, live_sleeps) == "0\n"


async def test_output_cap(backend: Harness, sid: str) -> None:
    rt = backend.runtime
    started = time.monotonic()
    out, err, outcome = await sh(rt, sid, "head -c 50000000 /dev/zero", max_output=1000)
    assert out == "\0" * 1000
    assert err == ""
    assert outcome.truncated is True
    assert outcome.timed_out is False
    # Draining the rest (exit 0) and closing the pipe on the writer (SIGPIPE) are both fine.
    assert outcome.exit_code in (0, 128 + 13)
    assert time.monotonic() - started < 10

    # The cap counts stdout and stderr together.
    out, err, outcome = await sh(
        rt, sid, "head -c 600 /dev/zero; head -c 600 /dev/zero >&2", max_output=1000
    )
    assert len(out) + len(err) == 1000
    assert outcome.truncated is True

    out, _, outcome = await sh(rt, sid, "head -c 1000 /dev/zero", max_output=1000)
    assert (len(out), outcome.truncated) == (1000, False)


async def test_background_process_does_not_block(backend: Harness, sid: str) -> None:
    rt = backend.runtime
    started = time.monotonic()
    out, err, outcome = await sh(rt, sid, "sleep 1000 & echo started")
    assert time.monotonic() - started < 2.0
    assert (out, err, outcome.exit_code, outcome.timed_out) == ("started\n", "", 0, False)
    assert await check(rt, sid, "echo next") == "next\n"


async def test_concurrent_commands(backend: Harness, sid: str) -> None:
    rt = backend.runtime
    started = time.monotonic()
    results = await asyncio.gather(
        *(sh(rt, sid, f"sleep 1; echo {i}") for i in range(4)),
        backend.runtime.agent(sid).ping(),
    )
    assert time.monotonic() - started < 1.9
    assert [r[0] for r in results[:4]] == [f"{i}\n" for i in range(4)]


async def test_orphans_are_reaped(backend: Harness, sid: str) -> None:
    """Double-forked children are re-parented to the agent (PID 1), which must reap them."""
    rt = backend.runtime
    await check(rt, sid, "for i in $(seq 40); do (true &) ; done; sleep 0.3")
    states = await check(
        rt,
        sid,
        "for s in /proc/[0-9]*/stat; do cut -d' ' -f3 $s; done 2>/dev/null | sort | uniq -c",
    )
    assert "Z" not in states, states
