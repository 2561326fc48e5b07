"""Every mount a sandbox gets, stated once for both backends: `mounts()` lists them, and each
backend renders the list in its own terms (sandbox/oci/bundle.py as OCI `mounts` entries,
sandbox/docker/container.py as engine mounts and tmpfs options).

Binds are recursive, private (nothing propagates to or from the host) and nosuid,nodev where
the backend can say so; everything bound from the host is read-only but the workspace and,
on docker, the agent's socket dir.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePath

from sandbox.host.agent import AGENT_ENV
from sandbox.spec import (
    AGENT_DIR,
    AGENT_LAZY_MODULES,
    AGENT_PYCACHE,
    EGRESS_DIR,
    SKILLS_DIR,
    SYSTEM_CA_BUNDLE,
    WORKSPACE,
    SandboxSpec,
)

# The agent binds its listening socket here when it is not handed one (see
# agent.open_listener): a per-sandbox host dir.
AGENT_SOCKET_DIR = f"{AGENT_DIR}/sock"


class Kind(enum.StrEnum):
    """The filesystem type (a bind is the host's own)."""

    BIND = "bind"
    TMPFS = "tmpfs"
    PROC = "proc"
    DEVPTS = "devpts"
    MQUEUE = "mqueue"
    SYSFS = "sysfs"


@dataclass(frozen=True)
class Mount:
    destination: str  # the path inside the sandbox
    kind: Kind
    source: str  # a bind's host path; else the filesystem's name (as mountinfo shows it)
    read_only: bool
    # The filesystem's own flags and data in the kernel's spelling, in order ("ro" is
    # `read_only`'s); none for a bind (see the module docstring).
    options: tuple[str, ...] = ()
    # One of the mounts every Linux container has (/proc, /dev, /sys...): an OCI bundle
    # lists it, a container engine makes its own.
    standard: bool = False


@dataclass(frozen=True)
class HostPaths:
    """The host side of a sandbox's binds ("": not bound), and the agent's environment."""

    workspace: str  # host mountpoint of the workspace image (mounted nosuid,nodev)
    agent_script: str
    interpreter_script: str  # started by the agent for code sessions
    binds: Sequence[tuple[str, str]]  # extra read-only binds (source, destination): host trees
    skills: str = ""  # host dir bound read-only at SKILLS_DIR, filled after the start
    egress: str = ""  # host dir bound read-only at EGRESS_DIR (the proxy socket's home)
    agent_pycache: str = ""  # the agent's bytecode, bound read-only at AGENT_PYCACHE
    # Where the agent binds its own socket, read-write at AGENT_SOCKET_DIR: docker cannot hand
    # the agent a listening socket as runc does.
    agent_socket_dir: str = ""
    # An empty file over /etc/resolv.conf: docker otherwise copies the host's nameservers in.
    empty_file: str = ""
    # /etc/passwd and /etc/group naming the sandbox's own host uid and gid as "sandbox" (no
    # user namespace on docker; the oci root has its own).
    passwd: str = ""
    group: str = ""
    agent_env: Sequence[str] = tuple(AGENT_ENV)  # host.agent.agent_env(): with the image's own


def agent_module_binds(agent_script: str) -> list[tuple[str, str]]:
    """(host, sandbox) paths of the modules the agent imports on first use: beside agent.py
    on the host, and beside it in the sandbox, where it finds them."""
    host_dir = PurePath(agent_script).parent
    return [(str(host_dir / name), f"{AGENT_DIR}/{name}") for name in AGENT_LAZY_MODULES]


def _bind(source: str, destination: str, read_only: bool = True) -> Mount:
    return Mount(destination, Kind.BIND, source, read_only)


def _optional_bind(source: str, destination: str) -> list[Mount]:
    return [_bind(source, destination)] if source else []


def mounts(spec: SandboxSpec, paths: HostPaths) -> list[Mount]:
    """Every mount of the sandbox, in the order it is made."""
    lim = spec.limits
    return [
        Mount("/proc", Kind.PROC, "proc", False, ("nosuid", "noexec", "nodev"), standard=True),
        Mount(
            "/dev",
            Kind.TMPFS,
            "tmpfs",
            False,
            ("nosuid", "noexec", "strictatime", "mode=755", "size=65536k"),
            standard=True,
        ),
        Mount(
            "/dev/pts",
            Kind.DEVPTS,
            "devpts",
            False,
            ("nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"),
            standard=True,
        ),
        Mount(
            "/dev/shm",
            Kind.TMPFS,
            "shm",
            False,
            ("nosuid", "noexec", "nodev", "mode=1777", "size=65536k"),
            standard=True,
        ),
        Mount(
            "/dev/mqueue",
            Kind.MQUEUE,
            "mqueue",
            False,
            ("nosuid", "noexec", "nodev"),
            standard=True,
        ),
        Mount("/sys", Kind.SYSFS, "sysfs", True, ("nosuid", "noexec", "nodev"), standard=True),
        Mount(
            "/tmp",
            Kind.TMPFS,
            "tmpfs",
            False,
            (
                "nosuid",
                "nodev",
                "mode=1777",
                f"size={lim.tmp_bytes}",
                f"nr_inodes={lim.tmp_inodes}",
            ),
        ),
        Mount(
            "/run", Kind.TMPFS, "tmpfs", False, ("nosuid", "nodev", "noexec", "mode=755", "size=1m")
        ),
        *(_bind(src, dst) for src, dst in paths.binds),
        _bind(paths.agent_script, f"{AGENT_DIR}/agent.py"),
        *(_bind(src, dst) for src, dst in agent_module_binds(paths.agent_script)),
        _bind(paths.interpreter_script, f"{AGENT_DIR}/interpreter.py"),
        *_optional_bind(paths.agent_pycache, AGENT_PYCACHE),
        *(
            [_bind(paths.agent_socket_dir, AGENT_SOCKET_DIR, False)]
            if paths.agent_socket_dir
            else []
        ),
        _bind(paths.workspace, WORKSPACE, False),
        *_optional_bind(paths.skills, SKILLS_DIR),
        *_optional_bind(paths.egress, EGRESS_DIR),
        *_optional_bind(paths.empty_file, "/etc/resolv.conf"),
        *_optional_bind(paths.passwd, "/etc/passwd"),
        *_optional_bind(paths.group, "/etc/group"),
        *([_bind(str(spec.trust_bundle), SYSTEM_CA_BUNDLE)] if spec.trust_bundle else []),
    ]
