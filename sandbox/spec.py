"""The backend-neutral description of a sandbox: every control lives here once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

MEMORY_TIERS: Mapping[str, int] = {
    "1g": 1 << 30,
    "4g": 4 << 30,
    "16g": 16 << 30,
    "64g": 64 << 30,
}

SANDBOX_UID = 1000
SANDBOX_GID = 1000
WORKSPACE = "/mnt/data"
SKILLS_DIR = "/mnt/skills"  # read-only; one folder per skill + index.json
AGENT_DIR = "/.sandboxd"
# The agent's modules that agent.py imports on first use (code sessions, the egress relay,
# background processes, ports): each bound read-only beside it in AGENT_DIR, from beside it in
# sandbox/agent/ on the host.
AGENT_LAZY_MODULES = ("sessions.py", "egress.py", "processes.py", "ports.py")
# The agent's bytecode, compiled once per daemon start by the sandbox's Python (see
# sandbox/host/agent.py), bound here read-only: the agent then starts without compiling itself.
AGENT_PYCACHE = f"{AGENT_DIR}/__pycache__"
# Egress (network_policy allowlist): the host directory Runtime.egress_dir() is bound here
# read-only; the daemon puts the sandbox's proxy socket in it when the container's policy
# allows egress, and the agent relays 127.0.0.1:3128 to that socket.
EGRESS_DIR = f"{AGENT_DIR}/egress"
EGRESS_SOCKET = f"{EGRESS_DIR}/proxy.sock"
# Where SandboxSpec.trust_bundle is bound (Debian's system CA bundle path).
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"

# moby's current masked and read-only /proc and /sys paths.
MASKED_PATHS = (
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
    "/sys/devices/system/cpu/cpu0/thermal_throttle",
    # Block devices are global: every sandbox's workspace loop device (and the host path
    # behind it) would be listed here.
    "/sys/block",
    "/sys/devices/virtual/block",
)
READONLY_PATHS = (
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)


# The agent's own memory, above the tier: sandbox code runs in a sub-group limited to the
# tier (sandbox/cgroups.py), the sandbox's group gets the tier plus this, so an OOM inside the
# tier never has the agent to choose.
AGENT_RESERVE_BYTES = 64 << 20
# The agent's score for a host-wide OOM, set from the host where the daemon may lower it, through
# the legacy /proc/<pid>/oom_adj (-16 is an oom_score_adj of -941): unlike oom_score_adj, a
# privileged write there does not also lower the floor (oom_score_adj_min) that the agent's
# children inherit, which stays 0 (the runtime sets it), so sandbox code cannot follow the agent
# down. What the agent starts begins at 0 (it raises each child itself).
AGENT_OOM_ADJ = -16


def ipc_sysctls(memory_bytes: int) -> dict[str, str]:
    """Limits of the sandbox's own IPC namespace: shared memory nobody holds is freed with
    its last process (shm_rmid_forced), and no segment or queue outgrows the tier."""
    return {
        "kernel.shm_rmid_forced": "1",
        "kernel.shmmax": str(memory_bytes),
        "kernel.shmall": str(memory_bytes // 4096),
        "kernel.shmmni": "256",
        "kernel.msgmni": "64",
        "kernel.msgmnb": str(64 << 10),
        "kernel.msgmax": str(8 << 10),
        "fs.mqueue.queues_max": "16",
        "fs.mqueue.msg_max": "10",
        "fs.mqueue.msgsize_max": str(8 << 10),
    }


@dataclass(frozen=True)
class Limits:
    """Per-sandbox kernel limits besides memory (which comes from the tier)."""

    pids: int = 512
    cpus: float = 1.0
    workspace_bytes: int = 1 << 30
    tmp_bytes: int = 256 << 20
    tmp_inodes: int = 65536
    nofile: int = 1024
    # Largest single file a process may write (RLIMIT_FSIZE); the workspace size caps it anyway.
    fsize_bytes: int = 2 << 30


@dataclass(frozen=True)
class SandboxSpec:
    sandbox_id: str
    memory_bytes: int
    limits: Limits = field(default_factory=Limits)
    hostname: str = "sandbox"
    # The image it runs on (sandbox/images.py): its current build at create; "host" is the
    # host's /usr in a generated skeleton.
    image: str = "host"
    # Host PEM file bound read-only over SYSTEM_CA_BUNDLE (the host's CAs plus the egress
    # proxy's CA); None leaves the image's own bundle.
    trust_bundle: Path | None = None


@dataclass(frozen=True)
class SkillFiles:
    """A validated skill zip (one top-level folder named `name`) for /mnt/skills/<name>/."""

    name: str
    description: str
    zip_path: Path
