"""Build an OCI runtime-spec config.json for one sandbox from the backend-neutral spec.

The sandbox joins a user namespace made beforehand and owned by its own first host id (see
sandbox/oci/userns.py), so the kernel's per-user counters are charged to the sandbox, not to
root. Its rlimits are therefore set on runc as it starts (`rlimits()`, see runc.run_detached):
raising or setting them on a process in a namespace root does not own needs CAP_SYS_RESOURCE,
which the daemon may not have.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sandbox.host.agent import AGENT_ARGV
from sandbox.host.mounts import HostPaths, Kind, Mount, mounts
from sandbox.spec import (
    AGENT_RESERVE_BYTES,
    MASKED_PATHS,
    READONLY_PATHS,
    SANDBOX_GID,
    SANDBOX_UID,
    SandboxSpec,
    ipc_sysctls,
)

CPU_PERIOD_US = 100_000
# The six standard character devices runc creates (null, zero, full, random, urandom, tty).
STANDARD_DEVICES = [(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0)]


@dataclass(frozen=True)
class BundlePaths:
    rootfs: str
    host: HostPaths  # what is bound into the sandbox (see sandbox/host/mounts.py)
    userns: str = ""  # the user namespace to join (a /proc/<pid>/ns/user path); "": a new one


def _oci_mount(mount: Mount) -> dict[str, Any]:
    """A mount of the layout as a config.json `mounts` entry; every bind recursive, private,
    nosuid and nodev."""
    if mount.kind is Kind.BIND:
        options = ["rbind", "ro" if mount.read_only else "rw", "nosuid", "nodev", "rprivate"]
    else:
        options = [*mount.options, *(["ro"] if mount.read_only else [])]
    return {
        "destination": mount.destination,
        "type": mount.kind.value,
        "source": mount.source,
        "options": options,
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
    no_caps: dict[str, list[str]] = {
        k: [] for k in ("bounding", "effective", "permitted", "inheritable", "ambient")
    }
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": SANDBOX_UID, "gid": SANDBOX_GID, "additionalGids": []},
            "args": AGENT_ARGV,
            "env": list(paths.host.agent_env),
            "cwd": "/",
            "capabilities": no_caps,
            "noNewPrivileges": True,
            # Written by runc as root: the agent's score *and* the floor its children inherit
            # (oom_score_adj_min) become 0, whatever the daemon's own (-500 under systemd).
            "oomScoreAdj": 0,
        },
        "root": {"path": paths.rootfs, "readonly": True},
        "hostname": spec.hostname,
        "mounts": [_oci_mount(m) for m in mounts(spec, paths.host)],
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
