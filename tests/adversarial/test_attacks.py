"""Isolation attacks from inside a sandbox, each with its exact outcome, on every backend.

One probe (probe.py, stdlib only) runs every syscall- and file-level attack in a shared
sandbox and prints `name result`; each attack is then its own test case asserting the errno
(or fact) seen. The other attacks need more than a syscall and have their own tests.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import pytest_asyncio

from tests.runtime.conftest import Harness, check, sh

pytestmark = [pytest.mark.root, pytest.mark.asyncio(loop_scope="module")]

PROBE = (Path(__file__).parent / "probe.py").read_text()

# attack -> exact outcome (OK, an errno name, or the fact the probe prints).
EXPECTED = {
    # Host files and processes outside: PID 1 is the (non-dumpable) agent; host pids do not
    # exist in the sandbox's pid namespace.
    "proc1_root_read": "EACCES",
    "proc1_cwd_list": "EACCES",
    "host_pid_environ": "ENOENT",
    "host_pid_root": "ENOENT",
    "proc_pids": "1",
    "kill_host_pid": "ESRCH",
    "kill_init": "OK",  # accepted and ignored: a pid namespace's init ignores SIGKILL from inside
    "pidfd_open_host_pid": "ESRCH",
    "ptrace_attach_init": "EPERM",
    "process_vm_readv_init": "EPERM",
    "open_by_handle_at": "EPERM",
    "name_to_handle_at": "EPERM",
    # Mounts and namespaces.
    "mount_tmpfs": "EPERM",
    "remount_root_rw": "EPERM",
    "bind_mount_proc": "EPERM",
    "umount_workspace": "EPERM",
    "umount_proc_masks": "EPERM",
    "pivot_root": "EPERM",
    "fsopen": "EPERM",
    "open_tree": "EPERM",
    "unshare_mnt": "EPERM",
    "unshare_pid": "EPERM",
    "clone3": "ENOSYS",  # so libc falls back to clone, whose flags seccomp can inspect
    "setns_own_net": "EPERM",
    "open_init_ns_mnt": "EACCES",
    # Network: no interface but lo, no raw/packet/vsock/alg sockets, rtnetlink read-only.
    "raw_socket": "EPERM",
    "packet_socket": "EPERM",
    "netlink_route_socket": "OK",
    "netlink_newlink_dummy": "EPERM",
    "netlink_newlink_veth": "EPERM",
    "netlink_audit_socket": "EPERM",
    "vsock_socket": "EPERM",
    "alg_socket": "EPERM",
    "lo_down": "EPERM",
    "tuntap": "ENOENT",
    "connect_docker_tcp": "ECONNREFUSED",  # the sandbox's own loopback: nothing listens
    "connect_docker_bridge": "ENETUNREACH",
    "connect_proxy_gateway": "ENETUNREACH",
    "connect_metadata": "ENETUNREACH",
    "udp_dns": "ENETUNREACH",
    "connect_docker_sock": "ENOENT",
    "connect_run_docker_sock": "ENOENT",
    "connect_sandboxd_sock": "ENOENT",
    # Kernel: modules, kexec, reboot, swap, accounting, ports, logs, perf, keyrings, clock.
    "init_module": "EPERM",
    "finit_module": "EPERM",
    "delete_module": "EPERM",
    "kexec_load": "EPERM",
    "reboot": "EPERM",
    "swapon": "EPERM",
    "acct": "EPERM",
    "iopl": "EPERM",
    "ioperm": "EPERM",
    "syslog_read": "EPERM",
    "perf_event_open": "EPERM",
    "add_key": "EPERM",
    "request_key": "EPERM",
    "clock_settime": "EPERM",
    "settimeofday": "EPERM",
    "adjtimex_set": "EPERM",
    "setdomainname": "EPERM",
    "write_proc_sys": "EROFS",
    "write_sys": "EROFS",
    "write_cgroup": "ENOENT",  # no cgroupfs in the sandbox at all
    # Files: read-only root, no device nodes, no links out of the workspace, no root.
    "mkdir_root": "EROFS",
    "rename_in_usr": "EROFS",
    "mknod_tmp_char": "EPERM",
    "mknod_tmp_block": "EPERM",
    "hardlink_agent": "EXDEV",
    "hardlink_etc_passwd_to_tmp": "EXDEV",
    "chown_to_root": "EPERM",
    "setuid_bits_kept": "0o4755",  # allowed on one's own file; nosuid + no_new_privs void it
    "setgroups_root": "EPERM",
    "setresuid_root": "EPERM",
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def probe_results(module_backend: Harness, shared_sandbox: str) -> dict[str, str]:
    rt, sid = module_backend.runtime, shared_sandbox
    out = await check(rt, sid, f"python3 - {os.getpid()}", stdin=PROBE, timeout_ms=60_000)
    results = dict(line.split(" ", 1) for line in out.splitlines())
    # The sandbox survived the probe, PID 1 included.
    await rt.agent(sid).ping()
    return results


async def test_probe_covers_exactly_the_expected_attacks(probe_results: dict[str, str]) -> None:
    assert sorted(probe_results) == sorted(EXPECTED)


@pytest.mark.parametrize("attack", sorted(EXPECTED))
async def test_attack(probe_results: dict[str, str], attack: str) -> None:
    assert probe_results.get(attack) == EXPECTED[attack]


async def test_setuid_binaries_do_not_elevate(module_backend: Harness, shared_sandbox: str) -> None:
    """The rootfs's setuid binaries belong to an unmapped uid (shown as nobody; on docker,
    which has no user namespace, to root) and run with no_new_privs on: they run as uid 1000."""
    rt, sid = module_backend.runtime, shared_sandbox
    owner = "nobody" if module_backend.name == "oci" else "root"
    assert await check(rt, sid, "stat -c '%A %U' /usr/bin/mount /usr/bin/su") == (
        f"-rwsr-xr-x {owner}\n-rwsr-xr-x {owner}\n"
    )
    out, err, outcome = await sh(rt, sid, "/usr/bin/mount -t tmpfs none /tmp")
    assert (out, outcome.exit_code) == ("", 32)
    assert err.startswith("mount: /tmp: must be superuser to use mount.\n")
    out, err, outcome = await sh(rt, sid, "su -c id root </dev/null")
    assert (out, outcome.exit_code) == ("", 1)
    assert err == "su: Critical error - immediate abort\n"
    assert (
        await check(rt, sid, "id") == "uid=1000(sandbox) gid=1000(sandbox) groups=1000(sandbox)\n"
    )


async def test_no_unix_sockets_anywhere(module_backend: Harness, shared_sandbox: str) -> None:
    """Neither the daemon's socket, nor docker's, nor any other host socket is mounted in."""
    rt, sid = module_backend.runtime, shared_sandbox
    found = await check(
        rt,
        sid,
        "find / \\( -path /proc -o -path /sys \\) -prune -o -type s -print 2>/dev/null; true",
        timeout_ms=60_000,
    )
    assert found == ""
