"""Runtime contract: the hardening seen from inside a sandbox (SECURITY.md's checklist).

Read-only probes share one sandbox per module (and so one event loop per module).
"""

from __future__ import annotations

import os

import pytest

from sandbox.host.base import HostRuntime
from sandbox.idranges import IdRangeSettings
from sandbox.spec import AGENT_DIR, AGENT_LAZY_MODULES
from tests.runtime.conftest import Harness, check, sh

AGENT_MODULES = [f"{AGENT_DIR}/{name}" for name in ("agent.py", *AGENT_LAZY_MODULES)]

pytestmark = [pytest.mark.root, pytest.mark.asyncio(loop_scope="module")]


def status_fields(text: str) -> dict[str, str]:
    return {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


async def test_unprivileged_user_in_a_user_namespace(
    module_backend: Harness, shared_sandbox: str
) -> None:
    rt, sid = module_backend.runtime, shared_sandbox
    assert isinstance(rt, HostRuntime)
    first = rt.first_host_id(sid)
    assert first is not None and first >= IdRangeSettings().base
    # oci: a user namespace maps the sandbox's ids 0..65535 onto its own host range, and it
    # is uid 1000 there; docker has no user namespace per container (userns-remap is
    # engine-wide), so the sandbox runs as its own host uid: first id of its range + 1000.
    user = 1000 if module_backend.name == "oci" else first + 1000
    assert await check(rt, sid, "id -u; id -g; id -G; id -un") == f"{user}\n" * 3 + "sandbox\n"
    status = status_fields(await check(rt, sid, "cat /proc/self/status"))
    for field in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert status[field] == "0000000000000000", field
    assert status["NoNewPrivs"] == "1"
    assert status["Seccomp"] == "2"
    expected = (
        ["0", str(first), "65536"] if module_backend.name == "oci" else ["0", "0", "4294967295"]
    )
    for name in ("uid_map", "gid_map"):
        mapping = await check(rt, sid, f"cat /proc/self/{name}")
        assert mapping.split() == expected, name
    probe = "import os\ntry:\n    os.setuid(0)\nexcept OSError as exc:\n    print(exc.errno)\n"
    assert await check(rt, sid, "python3", stdin=probe) == "1\n"  # EPERM


async def test_read_only_root_and_writable_scratch(
    module_backend: Harness, shared_sandbox: str
) -> None:
    rt, sid = module_backend.runtime, shared_sandbox
    for path in ("/usr/x", "/x", "/etc/x", "/.sandboxd/x", "/mnt/skills/x", "/var/tmp/x"):
        out, err, outcome = await sh(rt, sid, f"touch {path}")
        assert outcome.exit_code == 1, path
        assert err == f"touch: cannot touch '{path}': Read-only file system\n"
    # The agent's modules: not ours (mapped root owns them), and read-only binds anyway.
    for module in AGENT_MODULES:
        out, err, outcome = await sh(rt, sid, f"echo x >> {module}")
        assert (out, outcome.exit_code) == ("", 2)
        assert err in (
            f"/bin/sh: 1: cannot create {module}: {reason}\n"
            for reason in ("Permission denied", "Read-only file system")
        )

    await check(rt, sid, "echo t > /tmp/hardening-probe && rm /tmp/hardening-probe")
    await check(rt, sid, "echo w > /mnt/data/hardening-probe && rm /mnt/data/hardening-probe")

    mounts = {}
    for line in (await check(rt, sid, "cat /proc/self/mountinfo")).splitlines():
        fields = line.split()
        mounts[fields[4]] = set(fields[5].split(","))
    assert {"rw", "nosuid", "nodev"} <= mounts["/mnt/data"]
    assert {"rw", "nosuid", "nodev"} <= mounts["/tmp"]
    assert "ro" in mounts["/"]
    for point in ("/usr", *AGENT_MODULES, "/sys", "/proc/sys"):
        assert "ro" in mounts[point], point

    _, err, outcome = await sh(rt, sid, "mknod /mnt/data/dev c 1 3")
    assert (outcome.exit_code, err) == (1, "mknod: /mnt/data/dev: Operation not permitted\n")
    assert await check(rt, sid, "ls -A /mnt/data") == ""


async def test_only_standard_devices(module_backend: Harness, shared_sandbox: str) -> None:
    rt, sid = module_backend.runtime, shared_sandbox
    assert (await check(rt, sid, "ls -A /dev")).split() == [
        *("fd", "full", "mqueue", "null", "ptmx", "pts", "random", "shm"),
        *("stderr", "stdin", "stdout", "tty", "urandom", "zero"),
    ]
    out, err, outcome = await sh(rt, sid, "head -c 1 /dev/vda")
    assert (out, outcome.exit_code) == ("", 1)
    assert err == "head: cannot open '/dev/vda' for reading: No such file or directory\n"


async def test_no_network(module_backend: Harness, shared_sandbox: str) -> None:
    rt, sid = module_backend.runtime, shared_sandbox
    assert await check(rt, sid, "ls /sys/class/net") == "lo\n"
    devices = (await check(rt, sid, "cat /proc/net/dev")).splitlines()[2:]
    assert [line.split(":")[0].strip() for line in devices] == ["lo"]
    probe = (
        "import socket\n"
        "for addr in (('1.1.1.1', 53), ('2606:4700:4700::1111', 53)):\n"
        "    try:\n"
        "        socket.create_connection(addr, timeout=1)\n"
        "        print('connected')\n"
        "    except OSError as exc:\n"
        "        print(exc.errno)\n"
    )
    assert await check(rt, sid, "python3", stdin=probe) == "101\n101\n"  # ENETUNREACH
    assert await check(rt, sid, "cat /etc/resolv.conf") == ""


async def test_host_secrets_absent(module_backend: Harness, shared_sandbox: str) -> None:
    rt, sid = module_backend.runtime, shared_sandbox
    for path in ("/root", "/var/lib", "/etc/shadow", "/etc/gshadow", "/etc/ssh", "/run/sandboxd"):
        out, err, outcome = await sh(rt, sid, f"ls -d {path}")
        assert outcome.exit_code == 2, path
        assert err == f"ls: cannot access '{path}': No such file or directory\n"
    assert await check(rt, sid, "ls -A /home /run /var/tmp") == "/home:\n\n/run:\n\n/var/tmp:\n"
    assert "docker.sock" not in await check(
        rt, sid, "find / -xdev -name '*.sock' 2>/dev/null; true"
    )

    # Masked /proc files read as empty (or do not exist on this kernel).
    for path in ("/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/interrupts"):
        out = await check(rt, sid, f"test -e {path} && wc -c < {path} || echo 0")
        assert out == "0\n", path
    out, err, outcome = await sh(rt, sid, "echo evil > /proc/sys/kernel/hostname")
    assert outcome.exit_code == 2
    assert "Read-only file system" in err
    out, err, outcome = await sh(rt, sid, "echo c > /proc/sysrq-trigger")
    assert outcome.exit_code == 2
    assert await check(rt, sid, "hostname; cat /proc/sys/kernel/hostname") == "sandbox\nsandbox\n"


SYSCALL_PROBE = """
import ctypes, errno, os, platform
libc = ctypes.CDLL(None, use_errno=True)
NR = {
    "x86_64": {"keyctl": 250, "io_uring_setup": 425, "bpf": 321, "userfaultfd": 323},
    "aarch64": {"keyctl": 219, "io_uring_setup": 425, "bpf": 280, "userfaultfd": 282},
}[platform.machine()]
buf = ctypes.create_string_buffer(256)
calls = {
    "unshare": lambda: libc.unshare(0x10000000),  # CLONE_NEWUSER
    "unshare_net": lambda: libc.unshare(0x40000000),  # CLONE_NEWNET
    "mount": lambda: libc.mount(b"none", b"/tmp", b"tmpfs", 0, None),
    "keyctl": lambda: libc.syscall(NR["keyctl"], 0, -3, 0, 0, 0),  # get the session keyring
    "ptrace": lambda: libc.ptrace(0, 0, None, None),  # PTRACE_TRACEME
    "io_uring_setup": lambda: libc.syscall(NR["io_uring_setup"], 8, buf),
    "bpf": lambda: libc.syscall(NR["bpf"], 0, buf, 64),
    "userfaultfd": lambda: libc.syscall(NR["userfaultfd"], 0),
    "chroot": lambda: libc.chroot(b"/tmp"),
    "sethostname": lambda: libc.sethostname(b"x", 1),
}
for name, call in calls.items():
    ctypes.set_errno(0)
    rc = call()
    print(name, rc, errno.errorcode.get(ctypes.get_errno(), ctypes.get_errno()))
"""


async def test_dangerous_syscalls_are_refused(module_backend: Harness, shared_sandbox: str) -> None:
    rt, sid = module_backend.runtime, shared_sandbox
    lines = (await check(rt, sid, "python3", stdin=SYSCALL_PROBE)).splitlines()
    assert lines == [
        f"{name} -1 EPERM"
        for name in (
            "unshare",
            "unshare_net",
            "mount",
            "keyctl",
            "ptrace",
            "io_uring_setup",
            "bpf",
            "userfaultfd",
            "chroot",
            "sethostname",
        )
    ]


async def test_rlimits(module_backend: Harness, shared_sandbox: str) -> None:
    rt, sid = module_backend.runtime, shared_sandbox
    probe = (
        "import resource as r\n"
        "for n in ('NOFILE', 'CORE', 'FSIZE'):\n"
        "    print(n, *r.getrlimit(getattr(r, 'RLIMIT_' + n)))\n"
    )
    assert await check(rt, sid, "python3", stdin=probe) == (
        f"NOFILE 1024 1024\nCORE 0 0\nFSIZE {2 << 30} {2 << 30}\n"
    )


async def test_own_namespaces(module_backend: Harness, shared_sandbox: str) -> None:
    """Every namespace differs from the host's (the test process is on the host)."""
    rt, sid = module_backend.runtime, shared_sandbox
    names = ("pid", "net", "ipc", "uts", "mnt", "user", "cgroup")
    if module_backend.name == "docker":  # no per-container user namespace (see README)
        names = tuple(n for n in names if n != "user")
    inside = (
        await check(rt, sid, "readlink " + " ".join(f"/proc/self/ns/{n}" for n in names))
    ).split()
    host = [os.readlink(f"/proc/self/ns/{n}") for n in names]
    assert len(inside) == len(names)
    for name, i, h in zip(names, inside, host, strict=True):
        assert i != h, name
