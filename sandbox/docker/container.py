"""Docker create() arguments for one sandbox, from the backend-neutral spec (plain data).

Docker's defaults are not a sandbox, so every control is spelled out here (SECURITY.md's
checklist, docker column). The agent runs as PID 1 (no docker-init): like on the oci backend
it is the reaping init, and PID 1 of a pid namespace cannot be killed from inside it; under
tini it would be PID 2, killable by sandbox code of the same uid.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sandbox.host.agent import AGENT_ARGV
from sandbox.host.mounts import AGENT_SOCKET_DIR, HostPaths, Kind, Mount, mounts
from sandbox.spec import (
    AGENT_RESERVE_BYTES,
    MASKED_PATHS,
    READONLY_PATHS,
    SandboxSpec,
    ipc_sysctls,
)

AGENT_SOCKET = f"{AGENT_SOCKET_DIR}/agent"  # short: the host path must stay < 108 bytes
LABEL_MANAGED = "sandboxd.managed"
LABEL_ID = "sandboxd.id"
LABEL_INSTANCE = "sandboxd.instance"  # which daemon (state dir) owns it, on a shared engine


@dataclass(frozen=True)
class ContainerArgs:
    """Keyword arguments of the SDK's `APIClient.create_container` and `create_host_config`,
    plus raw HostConfig fields; plain data, so this module needs no SDK import."""

    create: dict[str, Any]
    host: dict[str, Any]
    raw_host: dict[str, Any]


def _engine_mount(mount: Mount) -> dict[str, Any]:
    """A bind in the engine API's Mounts form (a missing source is an error, not a new dir).
    The API has no nosuid/nodev for a bind (the oci bundle's): here no-new-privileges and
    the engine's device cgroup do that work."""
    return {
        "Type": "bind",
        "Source": mount.source,
        "Target": mount.destination,
        "ReadOnly": mount.read_only,
        "BindOptions": {"Propagation": "rprivate"},
    }


def _tmpfs_options(mount: Mount) -> str:
    """A tmpfs's options for HostConfig.Tmpfs: flags, then data. The engine's tmpfs are
    noexec unless told otherwise, so a tmpfs the layout leaves executable says `exec`."""
    flags = [option for option in mount.options if "=" not in option]
    data = [option for option in mount.options if "=" in option]
    executable = [] if "noexec" in flags else ["exec"]
    return ",".join(["ro" if mount.read_only else "rw", *flags, *executable, *data])


def engine_mounts(
    spec: SandboxSpec, paths: HostPaths
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The layout (sandbox/host/mounts.py) as engine binds and tmpfs mounts; the standard
    mounts (/proc, /dev, /sys...) are the engine's own."""
    binds: list[dict[str, Any]] = []
    tmpfs: dict[str, str] = {}
    for mount in mounts(spec, paths):
        if mount.standard:
            continue
        if mount.kind is Kind.BIND:
            binds.append(_engine_mount(mount))
        elif mount.kind is Kind.TMPFS:
            tmpfs[mount.destination] = _tmpfs_options(mount)
        else:
            raise ValueError(f"no engine mount for a {mount.kind} at {mount.destination}")
    return binds, tmpfs


def etc_files(uid: int, gid: int) -> tuple[str, str]:
    """(passwd, group) for a sandbox whose user is host uid/gid `uid`/`gid`: there is no user
    namespace, so the sandbox's user is that host id, which no other sandbox has."""
    passwd = (
        "root:x:0:0:root:/root:/usr/sbin/nologin\n"
        f"sandbox:x:{uid}:{gid}:sandbox:/tmp:/bin/sh\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    )
    return passwd, f"root:x:0:\nsandbox:x:{gid}:\nnogroup:x:65534:\n"


def create_args(
    spec: SandboxSpec,
    image: str,
    paths: HostPaths,
    cgroup_parent: str,
    instance: str,
    seccomp: Mapping[str, Any],
    user: tuple[int, int],
) -> ContainerArgs:
    """`user`: the sandbox's own host uid and gid (see etc_files)."""
    lim = spec.limits
    env = dict(item.split("=", 1) for item in paths.agent_env)
    env["SANDBOXD_AGENT_SOCKET"] = AGENT_SOCKET
    binds, tmpfs = engine_mounts(spec, paths)
    create = {
        "image": image,
        "command": list(AGENT_ARGV),
        "entrypoint": [],
        "user": f"{user[0]}:{user[1]}",
        "working_dir": "/",
        "hostname": spec.hostname,
        "environment": env,
        "labels": {LABEL_MANAGED: "1", LABEL_ID: spec.sandbox_id, LABEL_INSTANCE: instance},
        "stdin_open": False,
        "tty": False,
        "use_config_proxy": False,  # never the SDK user's proxy settings in a sandbox's env
    }
    host = {
        "network_mode": "none",
        "ipc_mode": "private",
        "cgroupns": "private",
        # Sandbox code gets the tier (its work sub-group); the agent the reserve above.
        "mem_limit": spec.memory_bytes + AGENT_RESERVE_BYTES,
        "memswap_limit": spec.memory_bytes + AGENT_RESERVE_BYTES,
        "oom_kill_disable": False,
        "oom_score_adj": 0,  # the agent's, and the floor its children inherit (see spec.py)
        "pids_limit": lim.pids,
        "nano_cpus": int(lim.cpus * 1e9),
        "cap_drop": ["ALL"],
        "security_opt": [
            "no-new-privileges",
            "seccomp=" + json.dumps(seccomp, separators=(",", ":")),
        ],
        "init": False,
        "read_only": True,
        "privileged": False,
        "tmpfs": tmpfs,
        "mounts": binds,
        "ulimits": [
            {"name": "nofile", "soft": lim.nofile, "hard": lim.nofile},
            {"name": "fsize", "soft": lim.fsize_bytes, "hard": lim.fsize_bytes},
            {"name": "core", "soft": 0, "hard": 0},
        ],
        "cgroup_parent": cgroup_parent,
        "log_config": {"type": "json-file", "config": {"max-size": "1m", "max-file": "1"}},
        "restart_policy": {"Name": "no"},
        "sysctls": {
            # lo gets ::1 as on the oci backend (docker disables IPv6 in a "none" namespace).
            "net.ipv6.conf.all.disable_ipv6": "0",
            "net.ipv6.conf.lo.disable_ipv6": "0",
            **ipc_sysctls(spec.memory_bytes),
        },
    }
    # HostConfig fields the SDK has no keyword for: our own masked and read-only /proc and
    # /sys lists (they replace the engine's defaults, which vary by engine version). Docker
    # also mounts a (read-only) cgroupfs, which the oci backend never does: mask it too.
    masked = [*MASKED_PATHS, "/sys/fs/cgroup"]
    raw_host = {"MaskedPaths": masked, "ReadonlyPaths": list(READONLY_PATHS)}
    return ContainerArgs(create, host, raw_host)
