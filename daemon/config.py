"""Configuration: one TOML file parsed into frozen models that refuse unknown keys.

CLI flags override file values. Every limit has a conservative default documented in
config/sandboxd.example.toml.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from sandboxd_client import discovery

from daemon import keys
from proxy.options import Limits as ProxyLimits
from proxy.options import OptionsError
from sandbox.agent_client import AgentLimits
from sandbox.idranges import IdRangeSettings
from sandbox.images import NAME as IMAGE_NAME
from sandbox.skill_archive import SkillLimits
from sandbox.spec import MEMORY_TIERS, Limits

EX_CONFIG = 78
INSTANCE = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
MAX_AGENT_STDIN = 16 << 20  # the in-sandbox agent's own cap
MAX_AGENT_SESSIONS = 64  # the agent's own caps on code sessions and cell size
MAX_AGENT_CODE = 4 << 20
MAX_AGENT_LISTED = 10_000  # files one agent listing holds at most
MAX_AGENT_PROCESSES = 32  # the agent's own caps on background processes
MAX_AGENT_RING = 16 << 20
MAX_AGENT_RING_TOTAL = 32 << 20
MAX_AGENT_PROCESS_INPUT = 1 << 20
MAX_AGENT_PROCESS_COMMAND = 16 << 10
MAX_AGENT_PORT_CONNECT_MS = 60000  # the agent's bound on one port connect


class ConfigError(Exception):
    """Bad configuration: the daemon exits with EX_CONFIG (78)."""


@dataclass(frozen=True)
class ServerConfig:
    socket: str = ""  # "" = /run/sandboxd/sandboxd.sock as root, $XDG_RUNTIME_DIR otherwise
    socket_mode: int = 0o660
    socket_group: str = ""  # e.g. "sandboxd"; "" keeps the daemon's group
    tcp: str = ""  # "HOST:PORT"; needs api_keys
    # owner name -> "sha256:<hex>" of the bearer key (`sandboxd key new NAME` makes one)
    api_keys: dict[str, str] = field(default_factory=dict)
    admin_owners: list[str] = field(default_factory=list)  # key owners that see everything
    max_json_bytes: int = 1 << 20
    # Shutdown stages (see daemon/shutdown.py); their sum must stay under TimeoutStopSec.
    drain_timeout_s: float = 10.0  # in-flight requests finish on their own
    kill_grace_s: float = 3.0  # then running commands are killed; their replies go out
    cancel_timeout_s: float = 2.0  # then what is left is cancelled
    tasks_timeout_s: float = 2.0  # background tasks stop

    def shutdown_budget_s(self) -> float:
        return (
            self.drain_timeout_s
            + self.kill_grace_s
            + self.cancel_timeout_s
            + (self.tasks_timeout_s)
        )


@dataclass(frozen=True)
class RuntimeConfig:
    backend: str = "oci"
    oci_binary: str = "runc"
    runtime_root: str = "/run/sandboxd/runc"  # runc's state: <runtime_root>/<instance>/
    cgroup_parent: str = "/sandboxd"  # sandboxes' cgroups: <cgroup_parent>/<instance>/<id>
    seccomp_profile: str = ""  # "" = sandbox/seccomp.json shipped with sandboxd
    # A container's image when its create names none: "host" (the host's /usr in a skeleton)
    # or an image built by `sandboxd image build RECIPE` (GET /v1/images lists them).
    default_image: str = "host"
    # Every host-wide name carries this; "" = a hash of the state dir.
    instance: str = ""
    # Host uid/gid ranges, one per live sandbox (claimed host-wide, in /run/sandboxd/ids).
    uid_base: int = IdRangeSettings.base
    uid_range_size: int = IdRangeSettings.size
    uid_ranges: int = IdRangeSettings.count

    def id_ranges(self) -> IdRangeSettings:
        return IdRangeSettings(self.uid_base, self.uid_range_size, self.uid_ranges)


@dataclass(frozen=True)
class DockerConfig:
    """The docker backend (runtime.backend = "docker")."""

    engine_url: str = ""  # "" = $DOCKER_HOST, else unix:///var/run/docker.sock
    # containers' cgroups: <parent>/<instance>/<container id>
    cgroup_parent: str = "/sandboxd-docker"
    threads: int = 8  # the SDK's own thread pool (never the event loop)
    timeout_s: float = 60.0  # one engine API call


@dataclass(frozen=True)
class ContainerConfig:
    default_minutes: int = 20
    max_minutes: int = 1440
    max_containers_per_owner: int = 100
    pids: int = 512
    cpus: float = 1.0
    workspace_bytes: int = 1 << 30
    tmp_bytes: int = 256 << 20
    nofile: int = 1024
    max_upload_bytes: int = 512 << 20
    max_download_bytes: int = 1 << 30
    max_files_listed: int = 10000  # files one workspace listing sees (the agent's cap: 10000)
    max_file_records: int = 20000  # container file records kept per container, at most
    reaper_interval_s: float = 10.0  # idle expiry happens within one interval of the deadline
    # Admission: the memory tiers of all sandboxes may sum to at most host RAM x this; a tier
    # bigger than host RAM is always refused.
    memory_overcommit: float = 2.0

    def limits(self) -> Limits:
        return Limits(
            pids=self.pids,
            cpus=self.cpus,
            workspace_bytes=self.workspace_bytes,
            tmp_bytes=self.tmp_bytes,
            nofile=self.nofile,
            fsize_bytes=self.workspace_bytes,
        )


@dataclass(frozen=True)
class ExecConfig:
    default_timeout_ms: int = 60_000
    max_timeout_ms: int = 3_600_000
    default_max_output: int = 1 << 20
    max_output: int = 16 << 20
    max_commands: int = 64
    max_stdin_bytes: int = 1 << 20
    # stdout+stderr kept for one exec call (all its commands) or one /code call: the daemon's
    # memory per call, whatever max_output_length and the number of commands say.
    max_total_output: int = 16 << 20
    # An exec or /code event stream with nothing to say this long sends an SSE comment, so a
    # quiet command keeps its connection through clients' and proxies' idle timeouts.
    keepalive_s: float = 15.0


# Agent connections kept free of the long-held ones (output streams, attachments, relays):
# a full set of those never starves typing into a terminal or the process watch.
SHORT_OPERATIONS = 4


@dataclass(frozen=True)
class AgentConfig:
    """How the daemon shares one container's in-sandbox agent (see sandbox/agent_client.py)."""

    connections: int = 24  # operations at once per container
    queue: int = 64  # more wait for a connection; beyond that 429 (x-should-retry, Retry-After)
    queue_wait_s: float = 30.0  # longest wait for a connection; then 429 too
    reply_timeout_s: float = 30.0  # any agent reply outside a running command or cell

    def limits(self) -> AgentLimits:
        return AgentLimits(
            connections=self.connections,
            queue=self.queue,
            queue_wait_s=self.queue_wait_s,
            reply_timeout_s=self.reply_timeout_s,
        )


@dataclass(frozen=True)
class CodeConfig:
    """Persistent Python sessions (POST /v1/containers/{id}/code); output caps are exec's."""

    max_sessions: int = 8  # per container
    default_timeout_ms: int = 60_000
    max_timeout_ms: int = 3_600_000
    max_code_bytes: int = 1 << 20  # UTF-8 bytes of one cell


@dataclass(frozen=True)
class ProcessConfig:
    """Background processes (/v1/containers/{id}/processes), kept by the sandbox's agent."""

    # Kept per container, running or ended; an ended one is forgotten to make room, and a
    # start while this many run is refused (409). Their rings live in the agent's memory:
    # max_per_container x ring_bytes may not exceed the agent's budget (32 MiB).
    max_per_container: int = 8
    ring_bytes: int = 4 << 20  # output kept per process: its last bytes, stdout and stderr
    max_input_bytes: int = 64 << 10  # one POST .../input
    max_read_bytes: int = 1 << 20  # one GET .../output without stream (the rest: next_offset)
    # Output streams open at once per container: each holds one of the agent's connections.
    max_streams: int = 4
    # Terminals (tty: true) running at once per container; they count as processes too.
    max_terminals: int = 4
    # WebSocket attachments (.../attach) open at once per container: each holds one of the
    # agent's connections for its output.
    max_attachments: int = 8
    max_frame_bytes: int = 64 << 10  # one input frame of an attachment (1009 beyond)


@dataclass(frozen=True)
class PortsConfig:
    """Requests relayed to servers inside containers (/v1/containers/{id}/ports/{port}/...)."""

    # Relays open at once per container (429 beyond): each holds one of the agent's
    # connections for as long as its response streams.
    max_relays: int = 4
    connect_timeout_ms: int = 5_000  # the agent's connect to 127.0.0.1:{port} inside
    # From the request sent to the start of the response (its status and headers): 504 beyond.
    response_timeout_s: float = 60.0
    # Silence on an open relay (no byte either way) for this long ends it.
    idle_timeout_s: float = 300.0
    max_header_bytes: int = 64 << 10  # the upstream response's status line and headers


@dataclass(frozen=True)
class PoolConfig:
    # Pre-started sandboxes kept ready per image and memory tier; a create of that pair claims
    # one. A key is a tier ("1g": the default image's) or "IMAGE:TIER" ("python-data:4g").
    sizes: dict[str, int] = field(default_factory=lambda: {"1g": 2})

    def slots(self, default_image: str) -> dict[tuple[str, str], int]:
        """(image, tier) -> size."""
        found: dict[tuple[str, str], int] = {}
        for key, size in self.sizes.items():
            image, _, tier = key.rpartition(":")
            slot = (image or default_image, tier)
            found[slot] = found.get(slot, 0) + size
        return found


@dataclass(frozen=True)
class FilesConfig:
    """Files uploaded through /v1/files (what `file_ids` copies into containers)."""

    max_file_bytes: int = 512 << 20  # one upload
    max_owner_bytes: int = 10 << 30  # all live files of one owner
    max_files_per_owner: int = 10_000
    min_expires_seconds: int = 3600  # expires_after[seconds] bounds (OpenAI's: 1 h .. 30 d)
    max_expires_seconds: int = 2_592_000
    sweep_interval_s: float = 60.0  # expired blobs are removed within one interval


@dataclass(frozen=True)
class SkillsConfig:
    """Skills (/v1/skills and `skills` at container create); see daemon/skill_archive.py."""

    max_zip_bytes: int = 50 << 20  # an uploaded zip (or a directory upload in total)
    max_files: int = 500  # files in one skill
    max_file_bytes: int = 25 << 20  # one file, uncompressed
    max_total_bytes: int = 100 << 20  # all files of one skill, uncompressed
    max_compression_ratio: int = 100  # a zip entry (over 1 MiB) expanding more is a zip bomb
    max_skills_per_owner: int = 500
    max_skills_per_container: int = 32

    def limits(self) -> SkillLimits:
        return SkillLimits(
            max_zip_bytes=self.max_zip_bytes,
            max_files=self.max_files,
            max_file_bytes=self.max_file_bytes,
            max_total_bytes=self.max_total_bytes,
            max_ratio=self.max_compression_ratio,
        )


@dataclass(frozen=True)
class IdempotencyConfig:
    """`Idempotency-Key` on creating POSTs (daemon/idempotency.py)."""

    ttl_s: int = 86_400  # a key answers with its first response for this long
    wait_s: float = 60.0  # a retry waits this long for the first request, then 409 (retry)
    max_per_owner: int = 10_000  # the oldest of one owner's keys go first beyond this
    sweep_interval_s: float = 600.0  # expired keys (and old cursor places) are removed


@dataclass(frozen=True)
class MetricsConfig:
    listen: str = ""  # "HOST:PORT" for a /metrics-only listener (keep it on loopback)


@dataclass(frozen=True)
class ProxyConfig:
    """The egress proxy (containers with network_policy allowlist); see EGRESS notes in docs."""

    enabled: bool = True
    user: str = "sandboxd-proxy"  # its own system user (created when missing)
    intercept: str = "secrets"  # "secrets": TLS interception only for secret domains; "all"
    memory_bytes: int = 2 << 30  # RLIMIT_AS of the proxy process
    nofile: int = 8192  # RLIMIT_NOFILE of the proxy process
    # The proxy's limits; their defaults (and bounds) are the proxy's own (proxy/options.py).
    max_connections: int = ProxyLimits.max_connections  # concurrent connections per sandbox
    max_head_bytes: int = ProxyLimits.max_head_bytes  # one request head
    header_timeout_s: float = ProxyLimits.header_timeout_s  # to send the first request head
    idle_timeout_s: float = ProxyLimits.idle_timeout_s  # no traffic either way: closed
    max_body_bytes: int = ProxyLimits.max_body_bytes  # a request body or WebSocket message
    max_buffered_bytes: int = ProxyLimits.max_buffered_bytes  # all one sandbox holds at once
    health_interval_s: float = 2.0  # health check; 3 missed answers restart the proxy
    # Diagnostics for offline testing only (off by default; never needed in production):
    hosts: dict[str, str] = field(default_factory=dict)  # name -> "addr[,addr...]", not DNS
    allow_upstreams: list[str] = field(default_factory=list)  # "ip:port" dialable anyway
    upstream_ca_bundle: str = ""  # extra CA file trusted for upstream certificates

    def limits(self) -> ProxyLimits:
        """The proxy's limits as configured here (OptionsError when out of their bounds)."""
        return ProxyLimits(
            max_connections=self.max_connections,
            max_head_bytes=self.max_head_bytes,
            header_timeout_s=self.header_timeout_s,
            idle_timeout_s=self.idle_timeout_s,
            max_body_bytes=self.max_body_bytes,
            max_buffered_bytes=self.max_buffered_bytes,
        )


@dataclass(frozen=True)
class Config:
    state_dir: str = "/var/lib/sandboxd"
    log_level: str = "info"
    server: ServerConfig = field(default_factory=ServerConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    docker: DockerConfig = field(default_factory=DockerConfig)
    containers: ContainerConfig = field(default_factory=ContainerConfig)
    exec: ExecConfig = field(default_factory=ExecConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    pool: PoolConfig = field(default_factory=PoolConfig)
    code: CodeConfig = field(default_factory=CodeConfig)
    processes: ProcessConfig = field(default_factory=ProcessConfig)
    ports: PortsConfig = field(default_factory=PortsConfig)
    files: FilesConfig = field(default_factory=FilesConfig)
    skills: SkillsConfig = field(default_factory=SkillsConfig)
    idempotency: IdempotencyConfig = field(default_factory=IdempotencyConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)


def _build[T](cls: type[T], data: dict[str, Any], where: str) -> T:
    hints = get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if where == "runtime." and "image" in unknown:
        raise ConfigError("runtime.image is now runtime.default_image ('host' for the host's /usr)")
    if unknown:
        raise ConfigError(f"unknown key {where}{unknown[0]}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        hint = hints[name]
        key = f"{where}{name}"
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ConfigError(f"{key} must be a table")
            kwargs[name] = _build(hint, value, f"{key}.")  # type: ignore[arg-type]
        else:
            kwargs[name] = _check(value, hint, key)
    return cls(**kwargs)


def _check(value: Any, hint: Any, key: str) -> Any:
    origin = getattr(hint, "__origin__", None)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if origin is dict:
        item = hint.__args__[1]
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, item) and not isinstance(v, bool)
            for k, v in value.items()
        ):
            raise ConfigError(f"{key} must be a table of {item.__name__} values")
        return dict(value)
    if origin is list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key} must be a list of strings")
        return list(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"{key} must be of type {hint.__name__}")
    return value


def _validate(cfg: Config) -> None:
    if cfg.runtime.backend not in ("oci", "docker"):
        raise ConfigError(f"runtime.backend must be oci or docker (got {cfg.runtime.backend!r})")
    if cfg.runtime.instance and not INSTANCE.fullmatch(cfg.runtime.instance):
        raise ConfigError("runtime.instance must be 1-32 of a-z, 0-9 and '-' (or '')")
    try:
        cfg.runtime.id_ranges().check()
    except ValueError as exc:
        raise ConfigError(f"runtime.uid_base/uid_range_size/uid_ranges: {exc}") from None
    if not IMAGE_NAME.fullmatch(cfg.runtime.default_image):
        raise ConfigError("runtime.default_image must be an image name (lowercase, digits, . _ -)")
    if not 1 <= cfg.docker.threads <= 64 or cfg.docker.timeout_s <= 0:
        raise ConfigError("docker.threads must be within 1..64 and docker.timeout_s positive")
    if cfg.docker.engine_url and not cfg.docker.engine_url.startswith(("unix://", "tcp://")):
        raise ConfigError("docker.engine_url must be unix://PATH or tcp://HOST:PORT")
    if cfg.runtime.oci_binary not in ("runc", "crun") and not cfg.runtime.oci_binary.startswith(
        "/"
    ):
        raise ConfigError("runtime.oci_binary must be runc, crun or an absolute path")
    if cfg.log_level not in ("debug", "info", "warning", "error"):
        raise ConfigError("log_level must be debug, info, warning or error")
    for key, address in (("server.tcp", cfg.server.tcp), ("metrics.listen", cfg.metrics.listen)):
        if address and not _host_port(address):
            raise ConfigError(f"{key} must be HOST:PORT (got {address!r})")
    if cfg.server.tcp and not cfg.server.api_keys:
        raise ConfigError("server.tcp needs server.api_keys")
    for owner, stored in cfg.server.api_keys.items():
        if not keys.HASHED.fullmatch(stored):
            raise ConfigError(
                f"server.api_keys.{owner} must be a key hash 'sha256:<64 hex>', not a key "
                "(make one with: sandboxd key new NAME)"
            )
    c, e = cfg.containers, cfg.exec
    positives = {
        "containers.default_minutes": c.default_minutes,
        "containers.max_minutes": c.max_minutes,
        "containers.pids": c.pids,
        "containers.workspace_bytes": c.workspace_bytes,
        "containers.max_upload_bytes": c.max_upload_bytes,
        "exec.default_timeout_ms": e.default_timeout_ms,
        "exec.max_output": e.max_output,
        "exec.max_total_output": e.max_total_output,
        "agent.connections": cfg.agent.connections,
        "files.max_file_bytes": cfg.files.max_file_bytes,
        "files.max_owner_bytes": cfg.files.max_owner_bytes,
        "files.max_files_per_owner": cfg.files.max_files_per_owner,
        "files.min_expires_seconds": cfg.files.min_expires_seconds,
        "skills.max_zip_bytes": cfg.skills.max_zip_bytes,
        "skills.max_files": cfg.skills.max_files,
        "skills.max_file_bytes": cfg.skills.max_file_bytes,
        "skills.max_total_bytes": cfg.skills.max_total_bytes,
        "skills.max_compression_ratio": cfg.skills.max_compression_ratio,
        "skills.max_skills_per_owner": cfg.skills.max_skills_per_owner,
        "skills.max_skills_per_container": cfg.skills.max_skills_per_container,
    }
    for key, value in positives.items():
        if value <= 0:
            raise ConfigError(f"{key} must be positive")
    for key, size in cfg.pool.sizes.items():
        image, colon, tier = key.rpartition(":")
        if (
            tier not in MEMORY_TIERS
            or not 0 <= size <= 64
            or (colon and not IMAGE_NAME.fullmatch(image))
        ):
            raise ConfigError(
                f"pool.sizes.{key}: keys are a tier ({', '.join(MEMORY_TIERS)}) or IMAGE:TIER,"
                " sizes 0..64"
            )
    if not 0.1 <= c.memory_overcommit <= 1000:
        raise ConfigError("containers.memory_overcommit must be within 0.1..1000")
    if not 1 <= c.max_files_listed <= min(MAX_AGENT_LISTED, c.max_file_records):
        raise ConfigError(
            f"containers.max_files_listed must be within 1..{MAX_AGENT_LISTED}, and "
            "containers.max_file_records at least as large"
        )
    if not 0.1 <= cfg.exec.keepalive_s <= 300:
        raise ConfigError("exec.keepalive_s must be within 0.1..300")
    if not 0.1 <= c.reaper_interval_s <= 600:
        raise ConfigError("containers.reaper_interval_s must be within 0.1..600")
    stages = ("drain_timeout_s", "kill_grace_s", "cancel_timeout_s", "tasks_timeout_s")
    if any(getattr(cfg.server, k) < 0 for k in stages):
        raise ConfigError("server shutdown timeouts must not be negative")
    if not 1 <= c.default_minutes <= c.max_minutes:
        raise ConfigError("containers.default_minutes must be within 1..max_minutes")
    if not 0 <= e.max_stdin_bytes <= MAX_AGENT_STDIN:
        raise ConfigError(f"exec.max_stdin_bytes must be within 0..{MAX_AGENT_STDIN}")
    if e.default_timeout_ms > e.max_timeout_ms or e.default_max_output > e.max_output:
        raise ConfigError("exec defaults must not exceed their maxima")
    a = cfg.agent
    if not 0 <= a.queue <= 100_000:
        raise ConfigError("agent.queue must be within 0..100000")
    if not (0.01 <= a.queue_wait_s <= 3600 and 0.01 <= a.reply_timeout_s <= 3600):
        raise ConfigError("agent.queue_wait_s and agent.reply_timeout_s must be within 0.01..3600")
    if cfg.files.min_expires_seconds > cfg.files.max_expires_seconds:
        raise ConfigError("files.min_expires_seconds must not exceed max_expires_seconds")
    if not 0.1 <= cfg.files.sweep_interval_s <= 3600:
        raise ConfigError("files.sweep_interval_s must be within 0.1..3600")
    _validate_proxy(cfg.proxy)
    i = cfg.idempotency
    if i.ttl_s < 60 or not 0 <= i.wait_s <= 600 or i.max_per_owner < 1:
        raise ConfigError(
            "idempotency.ttl_s must be at least 60, wait_s within 0..600, max_per_owner positive"
        )
    if not 1 <= i.sweep_interval_s <= 86_400:
        raise ConfigError("idempotency.sweep_interval_s must be within 1..86400")
    code = cfg.code
    if not 1 <= code.max_sessions <= MAX_AGENT_SESSIONS:
        raise ConfigError(f"code.max_sessions must be within 1..{MAX_AGENT_SESSIONS}")
    if not 1 <= code.max_code_bytes <= MAX_AGENT_CODE:
        raise ConfigError(f"code.max_code_bytes must be within 1..{MAX_AGENT_CODE}")
    if not 1 <= code.default_timeout_ms <= code.max_timeout_ms:
        raise ConfigError("code.default_timeout_ms must be within 1..max_timeout_ms")
    _validate_processes(cfg.processes, cfg.agent)
    _validate_ports(cfg.ports, cfg.agent)
    held = cfg.processes.max_streams + cfg.processes.max_attachments + cfg.ports.max_relays
    if held + SHORT_OPERATIONS > cfg.agent.connections:
        raise ConfigError(
            f"processes.max_streams + processes.max_attachments + ports.max_relays ({held}) "
            f"plus {SHORT_OPERATIONS} for short operations (input, resize, the process "
            f"watch) must not exceed agent.connections ({cfg.agent.connections}): each of them "
            "holds a connection for as long as it is open"
        )


def _validate_ports(p: PortsConfig, agent: AgentConfig) -> None:
    if not 1 <= p.max_relays < agent.connections:
        raise ConfigError(
            "ports.max_relays must be at least 1 and below agent.connections (each relay holds one)"
        )
    if not 1 <= p.connect_timeout_ms <= MAX_AGENT_PORT_CONNECT_MS:
        raise ConfigError(f"ports.connect_timeout_ms must be within 1..{MAX_AGENT_PORT_CONNECT_MS}")
    if not (0.01 <= p.response_timeout_s <= 3600 and 0.01 <= p.idle_timeout_s <= 86400):
        raise ConfigError(
            "ports.response_timeout_s must be within 0.01..3600 and ports.idle_timeout_s "
            "within 0.01..86400"
        )
    if not 1024 <= p.max_header_bytes <= 1 << 20:
        raise ConfigError("ports.max_header_bytes must be within 1024..1048576")


def _validate_processes(p: ProcessConfig, agent: AgentConfig) -> None:
    if not 1 <= p.max_per_container <= MAX_AGENT_PROCESSES:
        raise ConfigError(f"processes.max_per_container must be within 1..{MAX_AGENT_PROCESSES}")
    if not 1 <= p.ring_bytes <= MAX_AGENT_RING:
        raise ConfigError(f"processes.ring_bytes must be within 1..{MAX_AGENT_RING}")
    if p.max_per_container * p.ring_bytes > MAX_AGENT_RING_TOTAL:
        raise ConfigError(
            f"processes.max_per_container x processes.ring_bytes must not exceed "
            f"{MAX_AGENT_RING_TOTAL} (the agent keeps every ring in its memory)"
        )
    if not 1 <= p.max_input_bytes <= MAX_AGENT_PROCESS_INPUT:
        raise ConfigError(f"processes.max_input_bytes must be within 1..{MAX_AGENT_PROCESS_INPUT}")
    if not 1 <= p.max_read_bytes <= 16 << 20:
        raise ConfigError("processes.max_read_bytes must be within 1..16777216")
    if not 1 <= p.max_streams < agent.connections:
        raise ConfigError(
            "processes.max_streams must be at least 1 and below agent.connections (each "
            "stream holds one)"
        )
    if not 1 <= p.max_terminals <= p.max_per_container:
        raise ConfigError("processes.max_terminals must be within 1..processes.max_per_container")
    if not 1 <= p.max_attachments < agent.connections:
        raise ConfigError(
            "processes.max_attachments must be at least 1 and below agent.connections (each "
            "attachment holds one)"
        )
    if not 1 <= p.max_frame_bytes <= p.max_input_bytes:
        raise ConfigError("processes.max_frame_bytes must be within 1..processes.max_input_bytes")


def _validate_proxy(p: ProxyConfig) -> None:
    if p.user in ("", "root", "nobody", "daemon") or not p.user.isascii():
        raise ConfigError("proxy.user must be a system user of the proxy's own")
    if p.intercept not in ("secrets", "all"):
        raise ConfigError("proxy.intercept must be 'secrets' or 'all'")
    for key in ("memory_bytes", "nofile"):
        if getattr(p, key) <= 0:
            raise ConfigError(f"proxy.{key} must be positive")
    try:
        p.limits()  # the proxy's own bounds, so that it never refuses what passed here
    except OptionsError as exc:
        raise ConfigError(f"proxy.{exc}") from None
    if not 0.1 <= p.health_interval_s <= 3600:
        raise ConfigError("proxy.health_interval_s must be within 0.1..3600")
    for name, addresses in p.hosts.items():
        for address in addresses.split(","):
            if not _ip(address.strip()):
                raise ConfigError(f"proxy.hosts.{name}: {address!r} is not an IP address")
    for pair in p.allow_upstreams:
        host, sep, port = pair.rpartition(":")
        if not (sep and _ip(host.strip("[]")) and _port(port)):
            raise ConfigError(f"proxy.allow_upstreams: {pair!r} is not IP:PORT")


def _ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _port(text: str) -> bool:
    return text.isascii() and text.isdigit() and 0 < int(text) < 65536


def _host_port(value: str) -> bool:
    host, sep, port = value.rpartition(":")
    return bool(sep and host and _port(port))


def split_host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


def load(path: Path | None, overrides: dict[str, Any] | None = None) -> Config:
    """Read the TOML file (if any), apply dotted-key overrides (CLI flags), validate."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
    for dotted, value in (overrides or {}).items():
        table = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            table = table.setdefault(part, {})
        table[leaf] = value
    cfg = _build(Config, data, "")
    _validate(cfg)
    return cfg


def default_socket(euid: int, env: dict[str, str]) -> str:
    """One rule for the daemon and its clients: sandboxd_client.discovery holds it."""
    return discovery.default_socket(euid, env)
