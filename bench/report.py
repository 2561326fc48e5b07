"""Render the results as markdown (printed to stdout and written to BENCHMARKS.md)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from bench.docker import DockerResult
from bench.machine import Machine
from bench.proxy import added_latency
from bench.stats import Summary

CLIENT = (
    "Python `http.client` over the unix socket, one keep-alive HTTP/1.1 connection, timed "
    "with `time.perf_counter()` around each request (response body read and JSON-decoded)"
)
RATIOS = (
    ("sandboxd exec / runc exec", "exec", "runc_exec"),
    ("sandboxd exec / docker exec", "exec", "docker_exec"),
    ("sandboxd create / runc run -d `sleep`", "create", "runc_start"),
    ("sandboxd create → first exec / runc run `/bin/true`", "to_exec", "runc_run"),
    ("sandboxd pool hit → first exec / cold create → first exec", "pool_to_exec", "to_exec"),
    ("sandboxd create → first exec / docker run --rm", "to_exec", "docker_run"),
    ("sandboxd on docker: exec / docker exec", "dk_exec", "docker_exec"),
    ("sandboxd on docker: create → first exec / docker run --rm", "dk_to_exec", "docker_run"),
    (
        "sandboxd on docker: pool hit → first exec / docker run --rm",
        "dk_pool_to_exec",
        "docker_run",
    ),
    ("sandboxd delete / runc delete --force", "delete", "runc_delete"),
    ("sandboxd delete / runc kill + delete", "delete", "runc_kill_delete"),
)


@dataclass(frozen=True)
class Results:
    command: str
    machine: Machine
    sandboxd: list[Summary]
    server: list[Summary]
    baseline: list[Summary]
    docker: DockerResult
    components: list[Summary]
    scale: list[Summary]
    scale_notes: list[str]
    proxy: list[Summary] = field(default_factory=list)

    def by_key(self) -> dict[str, Summary]:
        every = [*self.sandboxd, *self.server, *self.baseline, *self.docker.figures]
        return {s.key: s for s in [*every, *self.components]}


def _target(s: Summary) -> str:
    if s.target_ms is None:
        return ""
    verdict = "met" if s.median <= s.target_ms else "**missed**"
    return f"≤ {s.target_ms:g} ({verdict})"


def _rows(title: str, figures: Iterable[Summary]) -> list[str]:
    rows = [f"| **{title}** | | | | | |"]
    rows += [
        f"| {s.label} | {s.n} | {s.median:.1f} | {s.p95:.1f} | {s.min:.1f} | {_target(s)} |"
        for s in figures
    ]
    return rows


def _breakdown(f: dict[str, Summary]) -> list[str]:
    need = ("create", "srv_runtime", "ws_create", "runc_start", "python_start", "runc_run")
    if not all(k in f for k in need):
        return []
    runtime = f["srv_runtime"].median
    python = max(0.0, f["python_start"].median - f["runc_run"].median)
    parts = [
        ("workspace image: template copy + loop mount", f["ws_create"].median),
        ("`runc run -d` of the bundle", f["runc_start"].median),
        ("agent's python3 start in the sandbox (python run minus `true` run)", python),
    ]
    rest = runtime - sum(ms for _, ms in parts)
    lines = [
        "## Where create time goes (estimate)",
        "",
        "Medians of separately measured parts, so only indicative:",
        "",
        f"- client-side create: {f['create'].median:.1f} ms, of which the daemon's runtime "
        f"create ('container created' log line): {runtime:.1f} ms; API, store and HTTP: "
        f"{f['create'].median - runtime:.1f} ms",
    ]
    lines += [f"  - {label}: ~{ms:.1f} ms" for label, ms in parts]
    lines.append(
        f"  - rest (agent imports + readiness ping, config.json, bookkeeping): ~{rest:.1f} ms"
    )
    if all(k in f for k in ("delete", "runc_delete", "runc_kill_delete", "ws_destroy")):
        lines += [
            f"- delete: {f['delete'].median:.1f} ms; `runc delete --force` alone takes "
            f"{f['runc_delete'].median:.1f} ms (runc 1.1 sleeps 100 ms after its SIGKILL before "
            f"checking), `runc kill KILL` + `runc delete` {f['runc_kill_delete'].median:.1f} ms; "
            f"workspace umount + unlink {f['ws_destroy'].median:.1f} ms",
        ]
    return [*lines, ""]


# `python -m bench` rewrites the report above this heading and keeps what follows it.
KEPT_HEADING = "## Soak and paired runs (other commands; kept when the report is rewritten)"


def render(r: Results) -> str:
    f = r.by_key()
    m = r.machine
    lines = [
        "# sandboxd benchmarks",
        "",
        f"Measured {m.date} with `{r.command}` (commit {m.commit}).",
        "",
        "Machines are shared and noisy: compare medians and ratios, not single runs or p95.",
        "",
        "## Latency (ms)",
        "",
        "| Figure | N | median | p95 | min | target (median) |",
        "|---|---:|---:|---:|---:|---|",
        *_rows("sandboxd, client side", r.sandboxd),
        *_rows("sandboxd, the daemon's own `ms` log fields", r.server),
        *_rows("baseline: plain runc, same bundle", r.baseline),
        *_rows("docker", r.docker.figures),
        *_rows("components of a create", r.components),
        *(_rows("scale", r.scale) if r.scale else []),
        *(
            _rows(
                "egress proxy (python -m bench.proxy, in a private network namespace)",
                [*r.proxy, *added_latency(r.proxy)],
            )
            if r.proxy
            else []
        ),
        "",
        r.docker.note,
        "",
        "## Ratios (of medians)",
        "",
        "| Comparison | ratio |",
        "|---|---:|",
    ]
    lines += [
        f"| {label} | {f[a].median / f[b].median:.2f}x |"
        for label, a, b in RATIOS
        if a in f and b in f
    ]
    if r.scale_notes:
        lines += ["", "## Scale", "", *r.scale_notes]
    lines += ["", *_breakdown(f)]
    lines += [
        "## Machine",
        "",
        f"- {m.cpus} CPUs ({m.cpu_model}), {m.memory} memory",
        f"- {m.os}, kernel {m.kernel}, cgroup {m.cgroup}",
        f"- {m.runc}; Python {m.python}",
        f"- /tmp (daemon state, sqlite, workspace images) on {m.tmp_fs}",
        f"- load average at start: {m.load} on {m.cpus} CPUs",
        "",
        "## How to reproduce",
        "",
        "As root, from the repository root:",
        "",
        "```sh",
        ".venv/bin/python -m bench            # N=30 creates, 200 execs, 30 runs per baseline",
        ".venv/bin/python -m bench --quick    # N=10 / 50 / 10",
        ".venv/bin/python -m bench --out /tmp/b.md   # write somewhere else",
        "```",
        "",
        "It starts its own `sandboxd serve` on a socket, state dir and runc root in a fresh",
        "`/tmp/sbxd-bench-*` directory, waits for `GET /healthz`, measures, stops the daemon",
        "(SIGTERM) and removes everything it created, including on error.",
        "",
        f"- Client: {CLIENT}.",
        "- Each measured container is created, exec'd once (`true`) and deleted: create, first",
        "  exec and delete are timed separately. Warm exec: one container, 20 warm-up calls",
        "  first. Two warm-up containers and one warm-up run per baseline are not counted.",
        "- Baseline bundles come from `sandbox.oci.bundle.build_config` with the same rootfs",
        "  skeleton, binds, seccomp profile, user namespace and limits; an empty directory",
        "  stands in for the loop-mounted workspace. `runc run` in the foreground destroys the",
        "  container itself when the process exits, so no separate delete is timed there.",
        "- The baseline runs after the daemon has stopped; cgroup parent `/sandboxd-bench`.",
        "",
    ]
    return "\n".join(lines)
