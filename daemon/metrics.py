"""Prometheus metrics on a registry of our own (never the global default one).

Label sets are small and closed: no container ids, routes are the route templates.
Gauges that describe the current state (containers by status and tier, memory in use) are
refreshed by the /metrics handler just before it renders.
"""

from __future__ import annotations

import platform

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from proxy.state import REASONS as EGRESS_REASONS
from sandbox.execution import CommandOutcome
from sandbox.spec import MEMORY_TIERS

VERSION = "0.1.0"
CONTENT_TYPE = CONTENT_TYPE_LATEST
STATUSES = ("running", "expired")
EXEC_OUTCOMES = ("ok", "error", "timeout", "killed")
KILL_REASONS = ("oom", "pids", "timeout", "shutdown")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    def __init__(self, backend: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.containers = Gauge(
            "sandboxd_containers", "Containers by status and memory tier.", ["status", "tier"],
            registry=r,
        )  # fmt: skip
        self.memory = Gauge(
            "sandboxd_container_memory_bytes",
            "Memory in use by running sandboxes (cgroup counters), summed per tier.",
            ["tier"],
            registry=r,
        )
        self.create_seconds = Histogram(
            "sandboxd_container_create_seconds",
            "Time to create a container, from request to running sandbox.",
            ["backend", "pool"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.create_failures = Counter(
            "sandboxd_container_create_failures_total", "Container creates that failed.",
            ["backend"], registry=r,
        )  # fmt: skip
        self.exec_seconds = Histogram(
            "sandboxd_exec_seconds", "Duration of one exec'd command, as the agent measured it.",
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.exec_total = Counter(
            "sandboxd_exec_total", "Commands run, by outcome.", ["outcome"], registry=r
        )
        self.kills = Counter(
            "sandboxd_kills_total", "Commands killed, by reason.", ["reason"], registry=r
        )
        self.processes_running = Gauge(
            "sandboxd_processes_running",
            "Background processes running in containers (as the daemon last saw them).",
            registry=r,
        )
        self.processes_started = Counter(
            "sandboxd_processes_started_total", "Background processes started.", registry=r
        )
        self.process_output_bytes = Counter(
            "sandboxd_process_output_bytes_total",
            "Bytes of background processes' output sent to clients (reads and streams).",
            registry=r,
        )
        self.attachments_open = Gauge(
            "sandboxd_attachments_open",
            "WebSocket attachments to processes (.../attach) open now.",
            registry=r,
        )
        self.attach_bytes = Counter(
            "sandboxd_attach_bytes_total",
            "Bytes relayed by attachments: in = to the process, out = its output to clients.",
            ["direction"],
            registry=r,
        )
        self.port_relays = Counter(
            "sandboxd_port_relays_total",
            "Requests relayed to ports inside containers (/ports/{port}/...).",
            registry=r,
        )
        self.port_relays_open = Gauge(
            "sandboxd_port_relays_open",
            "Port relays open now (their responses streaming).",
            registry=r,
        )
        self.port_relay_bytes = Counter(
            "sandboxd_port_relay_bytes_total",
            "Body bytes relayed to and from ports inside containers, by direction.",
            ["direction"],
            registry=r,
        )
        self.memory_committed = Gauge(
            "sandboxd_memory_committed_bytes",
            "Sum of the memory tiers of every sandbox on the host (admission control).",
            registry=r,
        )
        self.memory_capacity = Gauge(
            "sandboxd_memory_capacity_bytes",
            "Memory tiers the host admits: RAM x containers.memory_overcommit.",
            registry=r,
        )
        self.agent_deaths = Counter(
            "sandboxd_agent_deaths_total",
            "Sandboxes whose agent died (the container expired), by cause.",
            ["cause"],
            registry=r,
        )
        self.pool_depth = Gauge(
            "sandboxd_pool_depth", "Ready pre-started sandboxes per image and memory tier.",
            ["image", "tier"],
            registry=r,
        )  # fmt: skip
        self.pool_claims = Counter(
            "sandboxd_pool_claims_total", "Creates that found (hit) or missed a pooled sandbox.",
            ["image", "tier", "result"], registry=r,
        )  # fmt: skip
        self.reaper_expired = Counter(
            "sandboxd_reaper_expired_total", "Containers expired for being idle.", registry=r
        )
        self.reaper_sweeps = Counter(
            "sandboxd_reaper_sweeps_total", "Idle-reaper sweeps completed.", registry=r
        )
        self.api_requests = Counter(
            "sandboxd_api_requests_total", "API requests by route and status.",
            ["route", "status"], registry=r,
        )  # fmt: skip
        self.api_seconds = Histogram(
            "sandboxd_api_request_seconds", "API request duration by route.", ["route"],
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.egress_decisions = Counter(
            "sandboxd_egress_decisions_total",
            "Egress proxy decisions by reason (relay/intercept/substituted allow; the rest deny).",
            ["reason"], registry=r,
        )  # fmt: skip
        self.egress_substitutions = Counter(
            "sandboxd_egress_secret_substitutions_total",
            "Secrets substituted into requests by the egress proxy.", registry=r,
        )  # fmt: skip
        self.proxy_restarts = Counter(
            "sandboxd_proxy_restarts_total", "Egress proxy process restarts.", registry=r
        )
        self.proxy_up = Gauge(
            "sandboxd_proxy_up", "1 while the egress proxy process answers its health check.",
            registry=r,
        )  # fmt: skip
        build = Gauge(
            "sandboxd_build_info", "Build information (always 1).",
            ["version", "python", "backend"], registry=r,
        )  # fmt: skip
        build.labels(VERSION, platform.python_version(), backend).set(1)
        for status in STATUSES:
            for tier in MEMORY_TIERS:
                self.containers.labels(status, tier).set(0)
        for tier in MEMORY_TIERS:
            self.memory.labels(tier).set(0)
        for outcome in EXEC_OUTCOMES:
            self.exec_total.labels(outcome)
        for reason in KILL_REASONS:
            self.kills.labels(reason)
        for reason in EGRESS_REASONS:
            self.egress_decisions.labels(reason)
        self.create_failures.labels(backend)
        self.create_seconds.labels(backend, "miss")
        self.create_seconds.labels(backend, "hit")

    def count_command(self, outcome: CommandOutcome) -> None:
        self.exec_seconds.observe(outcome.duration_ms / 1000)
        if outcome.killed is not None:
            self.exec_total.labels("killed").inc()
            self.kills.labels(outcome.killed).inc()
        elif outcome.timed_out:
            self.exec_total.labels("timeout").inc()
            self.kills.labels("timeout").inc()
        else:
            self.exec_total.labels("ok" if outcome.exit_code == 0 else "error").inc()

    def set_containers(self, counts: dict[tuple[str, str], int]) -> None:
        for status in STATUSES:
            for tier in MEMORY_TIERS:
                self.containers.labels(status, tier).set(counts.get((status, tier), 0))

    def set_memory(self, by_tier: dict[str, int]) -> None:
        for tier in MEMORY_TIERS:
            self.memory.labels(tier).set(by_tier.get(tier, 0))

    def render(self) -> bytes:
        return generate_latest(self.registry)
