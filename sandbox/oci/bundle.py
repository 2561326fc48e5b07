"""Build an OCI runtime-spec config.json for one sandbox from the backend-neutral spec.

The sandbox joins a user namespace made beforehand and owned by its own first host id (see
sandbox/oci/userns.py), so the kernel's per-user counters are charged to the sandbox, not to
root. Its rlimits are therefore set on runc as it starts (`rlimits()`, see runc.run_detached):
raising or setting them on a process in a namespace root does not own needs CAP_SYS_RESOURCE,
which the daemon may not have.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from sandbox.spec import (
    AGENT_DIR,
    AGENT_LAZY_MODULES,
    AGENT_PYCACHE,
    AGENT_RESERVE_BYTES,
    EGRESS_DIR,
    MASKED_PATHS,
    READONLY_PATHS,
    SANDBOX_GID,
    SANDBOX_UID,
    SKILLS_DIR,
    SYSTEM_CA_BUNDLE,
    WORKSPACE,
    SandboxSpec,
    ipc_sysctls,
)

CPU_PERIOD_US = 100_000
# Imported (not run as a script) so that a matching __pycache__/agent.*.pyc is used.
AGENT_ARGV = [
    "/usr/bin/python3",
    "-I",
    "-S",
    "-B",
    "-c",
    f"import sys; sys.path.insert(0, {AGENT_DIR!r}); import agent; agent.main()",
]
AGENT_ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"]
# The six standard character devices runc creates (null, zero, full, random, urandom, tty).
STANDARD_DEVICES = [(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0)]


@dataclass(frozen=True)
class BundlePaths:
    rootfs: str
    workspace: str  # host mountpoint of the workspace image
    agent_script: str
    interpreter_script: str  # started by the agent for code sessions
    binds: Sequence[tuple[str, str]]  # read-only host binds (source, destination)
    skills: str = ""  # host dir bound read-only at /mnt/skills, filled after the start
    egress: str = ""  # host dir bound read-only at EGRESS_DIR (the proxy socket's home)
    agent_pycache: str = ""  # host dir of the agent's bytecode, bound read-only at AGENT_PYCACHE
    userns: str = ""  # the user namespace to join (a /proc/<pid>/ns/user path); "": a new one


def agent_module_binds(agent_script: str) -> list[tuple[str, str]]:
    """(host, sandbox) paths of the modules the agent imports on first use: beside agent.py
    on the host, and beside it in the sandbox, where it finds them."""
    host_dir = PurePath(agent_script).parent
    return [(str(host_dir / name), f"{AGENT_DIR}/{name}") for name in AGENT_LAZY_MODULES]


def _ro_bind(src: str, dst: str) -> dict[str, Any]:
    return {
        "destination": dst,
        "type": "bind",
        "source": src,
        "options": ["rbind", "ro", "nosuid", "nodev", "rprivate"],
    }


def rlimits(spec: SandboxSpec) -> list[tuple[str, int]]:
    """(prlimit name, value) pairs for every process of the sandbox (see runc.run_detached)."""
    lim = spec.limits
    return [("nofile", lim.nofile), ("fsize", lim.fsize_bytes), ("core", 0)]


def build_config(
    spec: SandboxSpec,
    paths: BundlePaths,
    ids: tuple[int, int],
    cgroups_path: str,
    seccomp: Mapping[str, Any],
) -> dict[str, Any]:
    """`ids`: (first host id, count) of the sandbox's uid/gid range."""
    lim = spec.limits
    mounts: list[dict[str, Any]] = [
        {
            "destination": "/proc",
            "type": "proc",
            "source": "proc",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "noexec", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        },
        {
            "destination": "/dev/mqueue",
            "type": "mqueue",
            "source": "mqueue",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/sys",
            "type": "sysfs",
            "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", "ro"],
        },
        {
            "destination": "/tmp",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": [
                "nosuid",
                "nodev",
                "mode=1777",
                f"size={lim.tmp_bytes}",
                f"nr_inodes={lim.tmp_inodes}",
            ],
        },
        {
            "destination": "/run",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "nodev", "noexec", "mode=755", "size=1m"],
        },
        *(_ro_bind(src, dst) for src, dst in paths.binds),
        _ro_bind(paths.agent_script, f"{AGENT_DIR}/agent.py"),
        *(_ro_bind(src, dst) for src, dst in agent_module_binds(paths.agent_script)),
        _ro_bind(paths.interpreter_script, f"{AGENT_DIR}/interpreter.py"),
        *([_ro_bind(paths.agent_pycache, AGENT_PYCACHE)] if paths.agent_pycache else []),
        {
            "destination": WORKSPACE,
            "type": "bind",
            "source": paths.workspace,
            "options": ["rbind", "rw", "nosuid", "nodev", "rprivate"],
        },
        *([_ro_bind(paths.skills, SKILLS_DIR)] if paths.skills else []),
        *([_ro_bind(paths.egress, EGRESS_DIR)] if paths.egress else []),
        *([_ro_bind(str(spec.trust_bundle), SYSTEM_CA_BUNDLE)] if spec.trust_bundle else []),
    ]
    no_caps: dict[str, list[str]] = {
        k: [] for k in ("bounding", "effective", "permitted", "inheritable", "ambient")
    }
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": SANDBOX_UID, "gid": SANDBOX_GID, "additionalGids": []},
            "args": AGENT_ARGV,
            "env": AGENT_ENV,
            "cwd": "/",
            "capabilities": no_caps,
            "noNewPrivileges": True,
            # Written by runc as root: the agent's score *and* the floor its children inherit
            # (oom_score_adj_min) become 0, whatever the daemon's own (-500 under systemd).
            "oomScoreAdj": 0,
        },
        "root": {"path": paths.rootfs, "readonly": True},
        "hostname": spec.hostname,
        "mounts": mounts,
        "linux": {
            # Also given when joining: runc needs to know who the sandbox's root is.
            "uidMappings": [{"containerID": 0, "hostID": ids[0], "size": ids[1]}],
            "gidMappings": [{"containerID": 0, "hostID": ids[0], "size": ids[1]}],
            "namespaces": [
                *({"type": t} for t in ("pid", "network", "ipc", "uts", "mount", "cgroup")),
                {"type": "user", **({"path": paths.userns} if paths.userns else {})},
            ],
            "cgroupsPath": cgroups_path,
            "sysctl": ipc_sysctls(spec.memory_bytes),
            "resources": {
                # Sandbox code gets the tier (its work sub-group); the agent the reserve above.
                "memory": {
                    "limit": spec.memory_bytes + AGENT_RESERVE_BYTES,
                    "swap": spec.memory_bytes + AGENT_RESERVE_BYTES,
                },
                "pids": {"limit": lim.pids},
                "cpu": {"quota": int(lim.cpus * CPU_PERIOD_US), "period": CPU_PERIOD_US},
                "devices": [
                    {"allow": False, "access": "rwm"},
                    *(
                        {"allow": True, "type": "c", "major": ma, "minor": mi, "access": "rwm"}
                        for ma, mi in STANDARD_DEVICES
                    ),
                ],
            },
            **({"seccomp": dict(seccomp)} if seccomp else {}),
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        },
    }
