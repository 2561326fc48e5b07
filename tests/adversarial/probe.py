"""Attacks run from inside a sandbox (uid 1000, stdlib only): one line per attack,
`name result`, where result is OK, an errno name, or a short fact.

Run as `python3 probe.py HOST_PID`, where HOST_PID is a pid of a process on the host.
"""

# ruff: noqa: UP031, SIM115 - runs on the sandbox's Python, whatever its version

import ctypes
import errno
import os
import platform
import socket
import sys

libc = ctypes.CDLL(None, use_errno=True)
HOST_PID = int(sys.argv[1])
NR = {
    "x86_64": {
        "init_module": 175,
        "finit_module": 313,
        "delete_module": 176,
        "add_key": 248,
        "request_key": 249,
        "setns": 308,
        "umount2": 166,
        "pivot_root": 155,
        "kexec_load": 246,
        "perf_event_open": 298,
        "process_vm_readv": 310,
        "open_by_handle_at": 304,
        "clock_settime": 227,
        "settimeofday": 164,
        "adjtimex": 159,
        "setdomainname": 171,
        "reboot": 169,
        "swapon": 167,
        "acct": 163,
        "iopl": 172,
        "ioperm": 173,
        "name_to_handle_at": 303,
        "mount_setattr": 442,
        "fsopen": 430,
        "open_tree": 428,
        "syslog": 103,
        "pidfd_open": 434,
        "clone3": 435,
    },
    "aarch64": {
        "init_module": 105,
        "finit_module": 273,
        "delete_module": 106,
        "add_key": 217,
        "request_key": 218,
        "setns": 268,
        "umount2": 39,
        "pivot_root": 41,
        "kexec_load": 104,
        "perf_event_open": 241,
        "process_vm_readv": 270,
        "open_by_handle_at": 265,
        "clock_settime": 112,
        "settimeofday": 170,
        "adjtimex": 171,
        "setdomainname": 162,
        "reboot": 142,
        "swapon": 224,
        "acct": 89,
        "iopl": -1,
        "ioperm": -1,
        "name_to_handle_at": 264,
        "mount_setattr": 442,
        "fsopen": 430,
        "open_tree": 428,
        "syslog": 116,
        "pidfd_open": 434,
        "clone3": 435,
    },
}[platform.machine()]
buf = ctypes.create_string_buffer(4096)


def report(name, fn):
    try:
        result = fn()
    except OSError as exc:
        result = errno.errorcode.get(exc.errno, exc.errno)
    except Exception as exc:  # any other outcome is reported, not hidden
        result = type(exc).__name__
    print(name, "OK" if result is None else result, flush=True)


def sys_(name, *args):
    nr = NR[name]
    if nr < 0:
        raise OSError(errno.ENOSYS, "no such syscall here")
    ctypes.set_errno(0)
    rc = libc.syscall(nr, *args)
    if rc == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return "returned %d" % rc


def call(fn, *args):
    ctypes.set_errno(0)
    if fn(*args) == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def read(path):
    with open(path, "rb") as f:
        f.read(1)


def connect(family, addr, kind=socket.SOCK_STREAM):
    with socket.socket(family, kind) as s:
        s.settimeout(2)
        s.connect(addr)


def sock(family, kind, proto=0):
    socket.socket(family, kind, proto).close()


def timespec():
    return (ctypes.c_long * 2)(0, 0)


# --- host files and other processes
report("proc1_root_read", lambda: read("/proc/1/root/etc/hostname"))
report("proc1_cwd_list", lambda: os.listdir("/proc/1/cwd"))
report("host_pid_environ", lambda: read("/proc/%d/environ" % HOST_PID))
report("host_pid_root", lambda: os.listdir("/proc/%d/root" % HOST_PID))
report(
    "proc_pids",
    lambda: " ".join(sorted((p for p in os.listdir("/proc") if p.isdigit()), key=int)[:1]),
)
report("kill_host_pid", lambda: os.kill(HOST_PID, 0))
report("kill_init", lambda: os.kill(1, 9))
report("pidfd_open_host_pid", lambda: sys_("pidfd_open", HOST_PID, 0))
report("ptrace_attach_init", lambda: call(libc.ptrace, 16, 1, None, None))  # PTRACE_ATTACH
iov = (ctypes.c_void_p * 2)(ctypes.cast(buf, ctypes.c_void_p), 8)
report("process_vm_readv_init", lambda: sys_("process_vm_readv", 1, iov, 1, iov, 1, 0))
report("open_by_handle_at", lambda: sys_("open_by_handle_at", -100, buf, 0))
report("name_to_handle_at", lambda: sys_("name_to_handle_at", -100, b"/", buf, buf, 0))
# --- mounts and namespaces
report("mount_tmpfs", lambda: call(libc.mount, b"none", b"/mnt/data", b"tmpfs", 0, None))
report("remount_root_rw", lambda: call(libc.mount, None, b"/", None, 32 | 0x20, None))
report("bind_mount_proc", lambda: call(libc.mount, b"/proc", b"/mnt/data", None, 4096, None))
report("umount_workspace", lambda: sys_("umount2", b"/mnt/data", 2))  # MNT_DETACH
report("umount_proc_masks", lambda: sys_("umount2", b"/proc/kcore", 2))
report("pivot_root", lambda: sys_("pivot_root", b"/tmp", b"/tmp"))
report("fsopen", lambda: sys_("fsopen", b"tmpfs", 0))
report("open_tree", lambda: sys_("open_tree", -100, b"/", 1))
report("unshare_mnt", lambda: call(libc.unshare, 0x00020000))
report("unshare_pid", lambda: call(libc.unshare, 0x20000000))
report("clone3", lambda: sys_("clone3", buf, 88))
report("setns_own_net", lambda: sys_("setns", os.open("/proc/self/ns/net", os.O_RDONLY), 0))
report("open_init_ns_mnt", lambda: os.open("/proc/1/ns/mnt", os.O_RDONLY))
# --- network
report("raw_socket", lambda: sock(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))
report("packet_socket", lambda: sock(socket.AF_PACKET, socket.SOCK_RAW))
report("netlink_route_socket", lambda: sock(socket.AF_NETLINK, socket.SOCK_RAW, 0))
report("netlink_audit_socket", lambda: sock(socket.AF_NETLINK, socket.SOCK_RAW, 9))
report("vsock_socket", lambda: sock(40, socket.SOCK_STREAM))
report("alg_socket", lambda: sock(38, socket.SOCK_SEQPACKET))
report(
    "lo_down",
    lambda: __import__("fcntl").ioctl(socket.socket(), 0x8914, b"lo" + b"\0" * 14 + b"\0" * 24),
)  # SIOCSIFFLAGS, flags 0
report("tuntap", lambda: os.open("/dev/net/tun", os.O_RDWR))
report("connect_docker_tcp", lambda: connect(socket.AF_INET, ("127.0.0.1", 2375)))
report("connect_docker_bridge", lambda: connect(socket.AF_INET, ("172.17.0.1", 2375)))
report("connect_proxy_gateway", lambda: connect(socket.AF_INET, ("10.0.2.2", 3128)))
report("connect_metadata", lambda: connect(socket.AF_INET, ("169.254.169.254", 80)))
report("connect_docker_sock", lambda: connect(socket.AF_UNIX, "/var/run/docker.sock"))
report("connect_run_docker_sock", lambda: connect(socket.AF_UNIX, "/run/docker.sock"))
report("connect_sandboxd_sock", lambda: connect(socket.AF_UNIX, "/run/sandboxd/api.sock"))
report("udp_dns", lambda: connect(socket.AF_INET, ("8.8.8.8", 53), socket.SOCK_DGRAM))
# --- kernel
report("init_module", lambda: sys_("init_module", buf, 16, b""))
report("finit_module", lambda: sys_("finit_module", 0, b"", 0))
report("delete_module", lambda: sys_("delete_module", b"ext4", 0))
report("kexec_load", lambda: sys_("kexec_load", 0, 0, None, 0))
report("reboot", lambda: sys_("reboot", 0xFEE1DEAD, 672274793, 0x4321FEDC, None))
report("swapon", lambda: sys_("swapon", b"/tmp/x", 0))
report("acct", lambda: sys_("acct", b"/tmp/x"))
report("iopl", lambda: sys_("iopl", 3))
report("ioperm", lambda: sys_("ioperm", 0, 1024, 1))
report("syslog_read", lambda: sys_("syslog", 3, buf, 4096))
report("perf_event_open", lambda: sys_("perf_event_open", buf, 0, -1, -1, 0))
report("add_key", lambda: sys_("add_key", b"user", b"x", b"y", 1, -3))
report("request_key", lambda: sys_("request_key", b"user", b"x", None, -3))
report("clock_settime", lambda: sys_("clock_settime", 0, timespec()))
report("settimeofday", lambda: sys_("settimeofday", timespec(), None))
report("adjtimex_set", lambda: sys_("adjtimex", (ctypes.c_int * 64)(1)))  # ADJ_OFFSET
report("setdomainname", lambda: sys_("setdomainname", b"x", 1))
report("write_proc_sys", lambda: open("/proc/sys/kernel/domainname", "w").write("x"))
report("write_sys", lambda: open("/sys/kernel/uevent_helper", "w").write("/x"))
report("write_cgroup", lambda: open("/sys/fs/cgroup/pids/pids.max", "w").write("max"))
# --- files
report("mkdir_root", lambda: os.mkdir("/evil"))
report("rename_in_usr", lambda: os.rename("/usr/bin/env", "/usr/bin/env2"))
report("mknod_tmp_char", lambda: os.mknod("/tmp/mem", 0o600 | 0o020000, os.makedev(1, 1)))
report("mknod_tmp_block", lambda: os.mknod("/tmp/vda", 0o600 | 0o060000, os.makedev(254, 0)))
report("hardlink_agent", lambda: os.link("/.sandboxd/agent.py", "/mnt/data/agent-link"))
report("hardlink_etc_passwd_to_tmp", lambda: os.link("/etc/passwd", "/tmp/passwd-link"))
report("chown_to_root", lambda: os.chown("/mnt/data", 0, 0))
report(
    "setuid_bits_kept",
    lambda: (
        open("/mnt/data/s", "w").close(),
        os.chmod("/mnt/data/s", 0o4755),
        oct(os.stat("/mnt/data/s").st_mode & 0o7777),
        os.unlink("/mnt/data/s"),
    )[2],
)
report("setgroups_root", lambda: os.setgroups([0]))
report("setresuid_root", lambda: os.setresuid(0, 0, 0))


def newlink(kind):
    """RTM_NEWLINK for a `kind` interface over rtnetlink; the kernel's ack carries the errno."""
    import struct

    name = b"evil0\0"
    info_kind = struct.pack("HH", 4 + len(kind), 1) + kind + b"\0" * (-len(kind) % 4)
    linkinfo = struct.pack("HH", 4 + len(info_kind), 18) + info_kind  # IFLA_LINKINFO
    ifname = struct.pack("HH", 4 + len(name), 3) + name + b"\0" * (-len(name) % 4)
    body = struct.pack("BxHiII", 0, 0, 0, 0, 0) + ifname + linkinfo
    header = struct.pack("IHHII", 16 + len(body), 16, 0x405, 1, 0)  # REQUEST|ACK|CREATE|EXCL
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0) as s:
        s.sendto(header + body, (0, 0))
        reply = s.recv(4096)
    code = struct.unpack("i", reply[16:20])[0]
    if code:
        raise OSError(-code, os.strerror(-code))


report("netlink_newlink_dummy", lambda: newlink(b"dummy"))
report("netlink_newlink_veth", lambda: newlink(b"veth"))
