"""Docker create() arguments for one sandbox, from the backend-neutral spec (plain data).

Docker's defaults are not a sandbox, so every control is spelled out here (SECURITY.md's
checklist, docker column). The agent runs as PID 1 (no docker-init): like on the oci backend
it is the reaping init, and PID 1 of a pid namespace cannot be killed from inside it; under
tini it would be PID 2, killable by sandbox code of the same uid.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sandbox.oci.bundle import AGENT_ARGV, AGENT_ENV, agent_module_binds
from sandbox.spec import (
    AGENT_DIR,
    AGENT_PYCACHE,
    AGENT_RESERVE_BYTES,
    EGRESS_DIR,
    MASKED_PATHS,
    READONLY_PATHS,
    SKILLS_DIR,
    SYSTEM_CA_BUNDLE,
    WORKSPACE,
    SandboxSpec,
    ipc_sysctls,
)

# The agent binds its listening socket here (a per-sandbox host dir), see agent.open_listener.
AGENT_SOCKET_DIR = f"{AGENT_DIR}/sock"
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


@dataclass(frozen=True)
class HostPaths:
    workspace: str  # host mountpoint of the workspace image (mounted nosuid,nodev)
    agent_script: str
    interpreter_script: str
    agent_socket_dir: str
    skills: str
    egress: str
    binds: Sequence[tuple[str, str]]  # extra read-only binds (the host trees, for "host")
    # An empty file over /etc/resolv.conf: docker otherwise copies the host's nameservers in.
    empty_file: str
    # /etc/passwd and /etc/group naming the sandbox's own host uid and gid as "sandbox".
    passwd: str
    group: str
    agent_pycache: str = ""  # the agent's bytecode ("": none), see sandbox/hostdirs.py


def _bind(src: str, dst: str, mode: str = "ro") -> dict[str, Any]:
    """A bind in the engine API's Mounts form (a missing source is an error, not a new dir)."""
    return {
        "Type": "bind",
        "Source": src,
        "Target": dst,
        "ReadOnly": mode == "ro",
        "BindOptions": {"Propagation": "rprivate"},
    }


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
    env = dict(item.split("=", 1) for item in AGENT_ENV)
    env["SANDBOXD_AGENT_SOCKET"] = AGENT_SOCKET
    mounts = [
        *(_bind(src, dst) for src, dst in paths.binds),
        _bind(paths.agent_script, f"{AGENT_DIR}/agent.py"),
        *(_bind(src, dst) for src, dst in agent_module_binds(paths.agent_script)),
        _bind(paths.interpreter_script, f"{AGENT_DIR}/interpreter.py"),
        *([_bind(paths.agent_pycache, AGENT_PYCACHE)] if paths.agent_pycache else []),
        _bind(paths.agent_socket_dir, AGENT_SOCKET_DIR, "rw"),
        _bind(paths.workspace, WORKSPACE, "rw"),
        _bind(paths.skills, SKILLS_DIR),
        _bind(paths.egress, EGRESS_DIR),
        _bind(paths.empty_file, "/etc/resolv.conf"),
        _bind(paths.passwd, "/etc/passwd"),
        _bind(paths.group, "/etc/group"),
        *([_bind(str(spec.trust_bundle), SYSTEM_CA_BUNDLE)] if spec.trust_bundle else []),
    ]
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
        "tmpfs": {
            "/tmp": f"rw,nosuid,nodev,exec,mode=1777,size={lim.tmp_bytes},"
            f"nr_inodes={lim.tmp_inodes}",
            "/run": "rw,nosuid,nodev,noexec,mode=755,size=1m",
        },
        "mounts": mounts,
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
