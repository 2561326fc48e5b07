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

from tests.runtime.conftest import Harness, check, sandbox_uid, sh
from tests.security_report import SecurityRecord

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


# attack -> what it tries (SECURITY.md's attack table, generated from this suite's results).
TRIES = {
    "proc1_root_read": "read a host file through /proc/1/root",
    "proc1_cwd_list": "list /proc/1/cwd",
    "host_pid_environ": "read a host process's /proc/<pid>/environ",
    "host_pid_root": "list a host process's /proc/<pid>/root",
    "proc_pids": "see host processes in /proc (prints the lowest pid)",
    "kill_host_pid": "signal a host process by its pid",
    "kill_init": "SIGKILL PID 1 (the agent)",
    "pidfd_open_host_pid": "pidfd_open a host process",
    "ptrace_attach_init": "ptrace(ATTACH) PID 1",
    "process_vm_readv_init": "read PID 1's memory (process_vm_readv)",
    "open_by_handle_at": "open_by_handle_at (shocker)",
    "name_to_handle_at": "name_to_handle_at on /",
    "mount_tmpfs": "mount a tmpfs over the workspace",
    "remount_root_rw": "remount / read-write",
    "bind_mount_proc": "bind-mount /proc",
    "umount_workspace": "unmount the workspace",
    "umount_proc_masks": "unmount a /proc mask (/proc/kcore)",
    "pivot_root": "pivot_root",
    "fsopen": "fsopen a new tmpfs (new mount API)",
    "open_tree": "open_tree / (new mount API)",
    "unshare_mnt": "unshare a mount namespace",
    "unshare_pid": "unshare a pid namespace",
    "clone3": "clone3 (flags seccomp cannot inspect)",
    "setns_own_net": "setns into a network namespace",
    "open_init_ns_mnt": "open PID 1's mount namespace",
    "raw_socket": "open a raw IP socket",
    "packet_socket": "open a packet socket",
    "netlink_route_socket": "open an rtnetlink socket (read-only use is allowed)",
    "netlink_newlink_dummy": "create a dummy interface over rtnetlink",
    "netlink_newlink_veth": "create a veth pair over rtnetlink",
    "netlink_audit_socket": "open a netlink audit socket",
    "vsock_socket": "open a vsock socket",
    "alg_socket": "open an AF_ALG (kernel crypto) socket",
    "lo_down": "take lo down (SIOCSIFFLAGS)",
    "tuntap": "open /dev/net/tun",
    "connect_docker_tcp": "connect to Docker's TCP port on 127.0.0.1:2375",
    "connect_docker_bridge": "connect to the Docker bridge 172.17.0.1:2375",
    "connect_proxy_gateway": "connect to a proxy at the gateway 10.0.2.2:3128",
    "connect_metadata": "connect to the metadata service 169.254.169.254:80",
    "udp_dns": "send DNS to 8.8.8.8:53 over UDP",
    "connect_docker_sock": "connect to /var/run/docker.sock",
    "connect_run_docker_sock": "connect to /run/docker.sock",
    "connect_sandboxd_sock": "connect to sandboxd's API socket",
    "init_module": "load a kernel module (init_module)",
    "finit_module": "load a kernel module (finit_module)",
    "delete_module": "unload a kernel module",
    "kexec_load": "kexec_load a new kernel",
    "reboot": "reboot the host",
    "swapon": "swapon",
    "acct": "turn on process accounting",
    "iopl": "raise the I/O privilege level (iopl)",
    "ioperm": "get I/O port access (ioperm)",
    "syslog_read": "read the kernel log (syslog)",
    "perf_event_open": "perf_event_open",
    "add_key": "add a key to a keyring",
    "request_key": "request a key from a keyring",
    "clock_settime": "set the system clock (clock_settime)",
    "settimeofday": "set the time of day",
    "adjtimex_set": "adjust the clock (adjtimex)",
    "setdomainname": "set the domain name",
    "write_proc_sys": "write /proc/sys/kernel/domainname",
    "write_sys": "write /sys/kernel/uevent_helper",
    "write_cgroup": "write a cgroup limit (pids.max)",
    "mkdir_root": "mkdir /evil in the root",
    "rename_in_usr": "rename a file in /usr/bin",
    "mknod_tmp_char": "mknod a char device (/dev/mem) in /tmp",
    "mknod_tmp_block": "mknod a block device in /tmp",
    "hardlink_agent": "hard-link the agent into the workspace",
    "hardlink_etc_passwd_to_tmp": "hard-link /etc/passwd into /tmp",
    "chown_to_root": "chown the workspace to root",
    "setuid_bits_kept": "set the setuid bit on an own file",
    "setgroups_root": "setgroups([0])",
    "setresuid_root": "setresuid(0, 0, 0)",
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
    assert sorted(probe_results) == sorted(EXPECTED) == sorted(TRIES)


@pytest.mark.parametrize("attack", sorted(EXPECTED))
async def test_attack(
    probe_results: dict[str, str],
    attack: str,
    security_record: SecurityRecord,
) -> None:
    observed = probe_results.get(attack)
    security_record(
        attack, EXPECTED[attack], observed, observed == EXPECTED[attack], description=TRIES[attack]
    )
    assert probe_results.get(attack) == EXPECTED[attack]


async def test_setuid_binaries_do_not_elevate(module_backend: Harness, shared_sandbox: str) -> None:
    """The rootfs's setuid binaries belong to an unmapped uid (shown as nobody; on docker,
    which has no user namespace, to root) and run with no_new_privs on: they run as the
    sandbox user (uid 1000; on docker the sandbox's own host uid)."""
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
    uid = sandbox_uid(module_backend, sid)
    assert (
        await check(rt, sid, "id")
        == f"uid={uid}(sandbox) gid={uid}(sandbox) groups={uid}(sandbox)\n"
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
