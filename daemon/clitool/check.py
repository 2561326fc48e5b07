"""`sandboxd check`: a local preflight (no daemon needed) that says what to fix.

Each check yields one line: OK, WARN (works, but worth knowing) or FAIL (sandboxes will not
work until fixed). The exit code is 0 without a FAIL, 1 otherwise.
"""

from __future__ import annotations

import os
import platform
import pwd
import re
import shutil
import socket
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

from daemon.admission import host_memory_bytes
from daemon.clitool import output
from daemon.clitool.check_runtime import LiveCheckFailed, live_sandbox
from daemon.config import Config
from daemon.egress_proxy import EgressUnavailable, refuse_shared
from daemon.store import committed_memory
from sandbox.cgroups import CgroupError, CgroupLayout, CgroupVersion
from sandbox.host.workspace import TOOL_ENV
from sandbox.idranges import IdRangeSettings
from sandbox.oci.runc import RUNTIME_ENV
from sandbox.seccomp import SeccompProfileError, load_profile
from sandbox.spec import MEMORY_TIERS

OK, WARN, FAIL = "OK", "WARN", "FAIL"
CONTROLLERS = ("memory", "pids", "cpu")
MIN_FREE = 5 << 30
DOCKER_SOCKET = "/var/run/docker.sock"
PROBE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""


def run_checks(cfg: Config, euid: int, live: bool = True) -> list[Check]:
    probes: list[tuple[str, Callable[[], Check]]] = [
        ("kernel", kernel),
        ("cgroups", lambda: cgroups(Path("/sys/fs/cgroup"))),
        ("userns", user_namespaces),
        ("root", lambda: privileges(euid)),
        ("runtime", lambda: runtime(cfg, euid, live)),
        ("seccomp", lambda: seccomp(cfg.runtime.seccomp_profile)),
        ("workspace", workspace_tools),
        ("python", sandbox_python),
        ("state-dir", lambda: state_dir(Path(cfg.state_dir))),
        ("runtime-root", lambda: runtime_root(cfg)),
        ("uid-ranges", lambda: uid_ranges(cfg.runtime.id_ranges())),
        ("admission", lambda: admission(cfg)),
        ("proxy-user", lambda: proxy_user(cfg.proxy.user, cfg.proxy.enabled)),
        ("docker", lambda: docker(_engine_socket(cfg), required=cfg.runtime.backend == "docker")),
    ]
    results = []
    for name, probe in probes:
        try:
            results.append(probe())
        except Exception as exc:  # noqa: BLE001 - a broken probe is a finding, not a crash
            results.append(Check(name, FAIL, f"the check itself failed: {exc!r}"))
    return results


def report(checks: list[Check], out: TextIO, as_json: bool) -> int:
    failed = any(c.status == FAIL for c in checks)
    if as_json:
        output.print_json({"ok": not failed, "checks": [asdict(c) for c in checks]}, out)
        return 1 if failed else 0
    width = max(len(c.name) for c in checks)
    for c in checks:
        out.write(f"{c.status:<4}  {c.name:<{width}}  {c.detail}\n")
        if c.fix:
            out.write(f"{'':<4}  {'':<{width}}  fix: {c.fix}\n")
    counts = {s: sum(c.status == s for c in checks) for s in (OK, WARN, FAIL)}
    out.write(f"\n{counts[OK]} ok, {counts[WARN]} warnings, {counts[FAIL]} failures\n")
    return 1 if failed else 0


def kernel() -> Check:
    release = platform.release()
    match = re.match(r"(\d+)\.(\d+)", release)
    version = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
    detail = f"Linux {release} ({platform.machine()})"
    if version < (4, 6):
        return Check("kernel", FAIL, detail, "sandboxes need cgroup namespaces: Linux 4.6 or newer")
    if version < (5, 4):
        return Check("kernel", WARN, detail + "; untested below 5.4", "upgrade the kernel")
    return Check("kernel", OK, detail)


def cgroup_mode(root: Path) -> str:
    layout = CgroupLayout.detect(root)
    if layout.version is CgroupVersion.V2:
        return "v2"
    return "hybrid" if (root / "unified" / "cgroup.controllers").exists() else "v1"


def cgroups(root: Path) -> Check:
    try:
        mode = cgroup_mode(root)
    except CgroupError as exc:
        return Check("cgroups", FAIL, str(exc), "mount cgroup2 at /sys/fs/cgroup")
    if mode == "v2":
        present = set((root / "cgroup.controllers").read_text().split())
    else:
        present = {c for c in CONTROLLERS if (root / c).is_dir()}
    missing = [c for c in CONTROLLERS if c not in present]
    detail = f"{mode}, controllers " + (", ".join(c for c in CONTROLLERS if c in present) or "-")
    if missing:
        fix = f"enable the {', '.join(missing)} controller(s) (kernel config or boot options)"
        return Check("cgroups", FAIL, f"{detail}; missing {', '.join(missing)}", fix)
    if mode != "v2" and "memory" in present:
        if not (root / "memory" / "memory.memsw.limit_in_bytes").exists():
            if _swap_enabled():
                return Check(
                    "cgroups",
                    WARN,
                    f"{detail}; no swap accounting: sandboxes may swap beyond their tier",
                    "boot with swapaccount=1, or disable swap",
                )
            return Check("cgroups", OK, f"{detail}; no swap accounting (no swap in use)")
        detail += ", swap accounting (memsw)"
    return Check("cgroups", OK, detail)


def _swap_enabled() -> bool:
    try:
        return len(Path("/proc/swaps").read_text().splitlines()) > 1
    except OSError:
        return False


def user_namespaces() -> Check:
    try:
        limit = int(Path("/proc/sys/user/max_user_namespaces").read_text())
    except (OSError, ValueError):
        return Check("userns", FAIL, "no /proc/sys/user/max_user_namespaces",
                     "use a kernel built with CONFIG_USER_NS")  # fmt: skip
    if limit <= 0:
        return Check("userns", FAIL, "user namespaces are disabled (max_user_namespaces=0)",
                     "sysctl -w user.max_user_namespaces=15000")  # fmt: skip
    detail = f"max_user_namespaces={limit}"
    apparmor = Path("/proc/sys/kernel/apparmor_restrict_unprivileged_userns")
    if apparmor.exists() and apparmor.read_text().strip() == "1":
        return Check("userns", WARN,
                     f"{detail}; AppArmor leaves namespaces of unprivileged users without "
                     "capabilities: sandboxes get their own per-user budgets, not the caps "
                     "inside them (user.max_* in their namespace)",
                     "allow userns for sandboxd (an AppArmor profile with `userns,`) or "
                     "sysctl kernel.apparmor_restrict_unprivileged_userns=0")  # fmt: skip
    clone = Path("/proc/sys/kernel/unprivileged_userns_clone")
    if clone.exists():
        # Only unprivileged creation depends on it; the daemon runs as root.
        detail += f", unprivileged_userns_clone={clone.read_text().strip()}"
    return Check("userns", OK, detail)


def privileges(euid: int) -> Check:
    if euid == 0:
        return Check("root", OK, "running as root")
    return Check("root", WARN, "not root: sandboxd serve needs root, and live checks are skipped",
                 "run `sudo sandboxd check`")  # fmt: skip


def _which(binary: str, path: str) -> str | None:
    return binary if binary.startswith("/") and os.access(binary, os.X_OK) else (
        shutil.which(binary, path=path)
    )  # fmt: skip


def runtime(cfg: Config, euid: int, live: bool) -> Check:
    if cfg.runtime.backend == "docker":
        return Check("runtime", OK, "docker backend: the engine runs sandboxes (see docker)")
    binary = cfg.runtime.oci_binary
    found = _which(binary, RUNTIME_ENV["PATH"])
    if found is None:
        return Check("runtime", FAIL, f"{binary} not found in {RUNTIME_ENV['PATH']}",
                     f"apt-get install {Path(binary).name}")  # fmt: skip
    try:
        proc = subprocess.run(
            [found, "--version"], env=RUNTIME_ENV, capture_output=True, text=True,
            timeout=PROBE_TIMEOUT_S, check=False,
        )  # fmt: skip
        version = (proc.stdout.splitlines() or ["unknown version"])[0]
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check("runtime", FAIL, f"{found} does not run: {exc}", f"reinstall {binary}")
    if euid != 0 or not live:
        why = "not root" if euid != 0 else "--no-live"
        return Check("runtime", WARN, f"{found}: {version}; live test skipped ({why})")
    try:
        elapsed_ms = live_sandbox(binary, cfg.runtime.id_ranges(), cfg.runtime.seccomp_profile)
    except LiveCheckFailed as exc:
        fix = 'see the message; `crun` may refuse hybrid cgroups, try oci_binary = "runc"'
        return Check("runtime", FAIL, f"{found}: {version}; a test sandbox failed: {exc}", fix)
    return Check(
        "runtime", OK, f"{found}: {version}; started and removed a sandbox ({elapsed_ms:.0f} ms)"
    )


def seccomp(profile: str) -> Check:
    try:
        data = load_profile(Path(profile) if profile else None)
    except SeccompProfileError as exc:
        return Check("seccomp", FAIL, str(exc), "point runtime.seccomp_profile at a valid file")
    arches = ", ".join(data.get("architectures") or ["-"])
    return Check("seccomp", OK, f"{len(data.get('syscalls') or [])} rules, arch {arches}")


def workspace_tools() -> Check:
    if not _which("mkfs.ext4", TOOL_ENV["PATH"]):
        return Check("workspace", FAIL, "missing mkfs.ext4", "apt-get install e2fsprogs")
    if not Path("/dev/loop-control").exists():
        return Check("workspace", FAIL, "no /dev/loop-control: loop devices unavailable",
                     "modprobe loop (or give the host loop devices)")  # fmt: skip
    return Check("workspace", OK, "mkfs.ext4 and loop devices available")


def sandbox_python(path: str = "/usr/bin/python3") -> Check:
    fix = "apt-get install python3 (3.9+); the in-sandbox agent runs on the host's /usr"
    try:
        proc = subprocess.run(
            [path, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            env={"PATH": TOOL_ENV["PATH"]}, capture_output=True, text=True,
            timeout=PROBE_TIMEOUT_S, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check("python", FAIL, f"{path}: {exc}", fix)
    version = proc.stdout.strip()
    parts = tuple(int(p) for p in version.split(".") if p.isdigit())
    if proc.returncode != 0 or parts < (3, 9):
        return Check("python", FAIL, f"{path}: {version or 'does not run'}", fix)
    return Check("python", OK, f"{path} {version} (runs the in-sandbox agent)")


def _existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def state_dir(path: Path) -> Check:
    """Private to root (the daemon makes it 0700): no o+x needed anywhere above it."""
    base = _existing(path)
    free = shutil.disk_usage(base).free
    detail = f"{path}: {free / (1 << 30):.1f} GiB free"
    if base == path.absolute() and path.stat().st_mode & 0o077:
        mode = path.stat().st_mode & 0o7777
        return Check("state-dir", WARN, f"{detail}; mode {mode:o}, others may look in",
                     f"chmod 700 {path} (the daemon does it at start)")  # fmt: skip
    if free < MIN_FREE:
        return Check("state-dir", WARN, detail + " (under 5 GiB)",
                     "free disk space or move state_dir")  # fmt: skip
    return Check("state-dir", OK, detail + "; private to root (0700)")


def runtime_root(cfg: Config) -> Check:
    """The one place sandboxes' own ids must traverse: where their shared root is bound."""
    if cfg.runtime.backend == "docker":
        return Check("runtime-root", OK, "docker backend: not used")
    path = Path(cfg.runtime.runtime_root)
    base = _existing(path)
    closed = [p for p in [base, *base.parents] if not p.stat().st_mode & 0o001]
    if closed:
        return Check("runtime-root", FAIL, f"{closed[0]} is not searchable by other users",
                     f"chmod o+x {closed[0]} (sandboxes' roots are bound below it)")  # fmt: skip
    return Check("runtime-root", OK, f"{path}: traversable (the shared root is bound below)")


def _host_ranges() -> list[tuple[str, int, int]]:
    """(what, first, end) of every uid/gid range the host hands out: subordinate ids
    (rootless containers) and accounts."""
    found: list[tuple[str, int, int]] = []
    for name in ("/etc/subuid", "/etc/subgid"):
        try:
            lines = Path(name).read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            fields = line.split(":")
            if len(fields) == 3 and fields[1].isdigit() and fields[2].isdigit():
                start, count = int(fields[1]), int(fields[2])
                found.append((f"{name} ({fields[0]})", start, start + count))
    for entry in pwd.getpwall():
        found.append((f"user {entry.pw_name}", entry.pw_uid, entry.pw_uid + 1))
    return found


def uid_ranges(ids: IdRangeSettings) -> Check:
    end = ids.base + ids.size * ids.count
    clash = [what for what, first, stop in _host_ranges() if first < end and ids.base < stop]
    claimed = len(list(ids.registry.glob("*-*"))) if ids.registry.is_dir() else 0
    detail = (
        f"{ids.count} ranges of {ids.size} ids from {ids.base} (to {end - 1}), one per live "
        f"sandbox; {claimed} claimed on this host"
    )
    if clash:
        return Check("uid-ranges", WARN, f"{detail}; overlaps {', '.join(clash[:3])}",
                     "move runtime.uid_base so no host account shares a sandbox's ids")  # fmt: skip
    return Check("uid-ranges", OK, detail)


def admission(cfg: Config) -> Check:
    host = host_memory_bytes()
    capacity = host * cfg.containers.memory_overcommit
    committed = committed_memory(Path(cfg.state_dir) / "sandboxd.db")
    detail = (
        f"memory tiers up to {capacity / (1 << 30):.1f} GiB ({host / (1 << 30):.1f} GiB RAM x "
        f"{cfg.containers.memory_overcommit:g}); "
        + (f"{committed / (1 << 30):.1f} GiB committed" if committed is not None else "no state")
    )
    if cfg.pool.sizes and sum(MEMORY_TIERS[t] * n for t, n in cfg.pool.sizes.items()) > capacity:
        return Check("admission", WARN, f"{detail}; the warm pool alone would not fit",
                     "shrink pool.sizes or raise containers.memory_overcommit")  # fmt: skip
    return Check("admission", OK, detail)


def proxy_user(name: str, enabled: bool) -> Check:
    if not enabled:
        return Check("proxy-user", OK, "egress proxy disabled")
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        if shutil.which("useradd", path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
            return Check("proxy-user", FAIL, f"user {name} is missing and useradd is not here",
                         f"create the system user {name} (scripts/install does)")  # fmt: skip
        return Check("proxy-user", WARN, f"user {name} is missing; the daemon will create it",
                     "scripts/install (systemd-sysusers) creates it")  # fmt: skip
    try:
        refuse_shared(entry)
    except EgressUnavailable as exc:
        return Check("proxy-user", FAIL, str(exc), "give the proxy a user and group of its own")
    return Check("proxy-user", OK, f"the egress proxy runs as {name} (uid {entry.pw_uid})")


def _engine_socket(cfg: Config) -> str:
    url = cfg.docker.engine_url
    return url.removeprefix("unix://") if url.startswith("unix://") else DOCKER_SOCKET


def docker(path: str = DOCKER_SOCKET, required: bool = False) -> Check:
    optional = "runtime.backend is docker" if required else "optional: only the docker backend"
    missing = FAIL if required else WARN
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(3.0)
            sock.connect(path)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            reply = sock.recv(4096).decode(errors="replace")
    except OSError as exc:
        return Check(
            "docker", missing, f"{path}: not reachable ({exc.strerror or exc}; {optional})"
        )
    status = reply.split("\r\n", 1)[0]
    if " 200 " not in f"{status} ":
        return Check("docker", missing, f"{path}: /_ping answered {status!r} ({optional})")
    return Check("docker", OK, f"{path}: engine answers /_ping ({optional})")
