"""`.venv/bin/python -m bench.soak [--minutes 20] [--json PATH]`: a soak with hostile tenants.

For N minutes (default 20) a real daemon (bench/daemon.py: private socket, state dir and runc
root) serves, each in a process of its own (bench/tenants.py): hostile tenants (the maximum
exec output of invalid UTF-8, floods of files and renames in /mnt/data, file names that are
not UTF-8, connection floods on the API socket, concurrent deletes of sandboxes with dirty
workspaces), each under an owner of its own, beside normal tenants (create/exec/files) and
two probes: /healthz every 100 ms and a neighbour's exec `true` every 200 ms. It reports
/healthz and the neighbour's exec p50/p99, the daemon's RSS over time, the store's size, and
every reply by status, against the targets: p99 <= 50 ms for both probes, RSS <= 300 MiB,
no 5xx. Run as root from the repository root; not part of the test suite (tests/soak/ runs a
2-minute version). If the daemon's RSS passes --rss-abort-mib or its store --store-abort-mib
the run stops early (and says so) rather than take the machine down with it.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import json
import multiprocessing
import os
import queue
import secrets
import shlex
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import machine
from bench.client import BenchError, Client
from bench.daemon import RunningDaemon, running_daemon
from bench.stats import Summary, summarize
from bench.tenants import Api, Tally, Tenant, tenant_main
from bench.workdir import workdir
from daemon.config import ExecConfig
from daemon.keys import hash_key

MIB = 1 << 20
STOP_GRACE_S = 330.0  # a tenant finishes its request in flight (one op may take 300 s)
TARGET_P99_MS = 50.0
TARGET_RSS_MIB = 300.0
TIMELINE_ROWS = 20
HOSTILES = ("output", "files", "names", "connflood", "deletes")


@dataclass(frozen=True)
class Settings:
    minutes: float = 20.0
    normal_tenants: int = 2
    output_commands: int = ExecConfig().max_commands  # the maximum output case: every
    output_bytes: int = ExecConfig().max_output  # command of the batch at the cap
    flood_files: int = 20_000
    flood_connections: int = 256
    dirty_sandboxes: int = 4
    dirty_mib: int = 256
    rss_abort_mib: int = 2048
    store_abort_mib: int = 2048
    sample_interval_s: float = 1.0
    hostiles: tuple[str, ...] = HOSTILES  # which hostile tenants run

    def tenants(self) -> list[Tenant]:
        normal = [Tenant(f"normal-{i}", "normal") for i in range(self.normal_tenants)]
        return [
            Tenant("healthz", "healthz"),
            Tenant("neighbour", "neighbour"),
            *normal,
            *(t for t in self._hostile() if t.kind in self.hostiles),
        ]

    def _hostile(self) -> list[Tenant]:
        return [
            Tenant(
                "hostile-output",
                "output",
                {"commands": self.output_commands, "bytes": self.output_bytes},
            ),
            Tenant("hostile-files", "files", {"files": self.flood_files}),
            Tenant("hostile-names", "names"),
            Tenant("hostile-connflood", "connflood", {"connections": self.flood_connections}),
            Tenant(
                "hostile-deletes",
                "deletes",
                {"sandboxes": self.dirty_sandboxes, "dirty_mib": self.dirty_mib},
            ),
        ]


@dataclass(frozen=True)
class Sample:
    t_s: float
    rss_mib: float
    store_mib: float
    daemon_cpu: float  # the daemon's CPU use since the previous sample (1.0 = one core)
    load1: float  # the host's 1-minute load average


@dataclass
class SoakResult:
    settings: Settings
    command: str
    machine: machine.Machine
    duration_s: float = 0.0
    aborted: str = ""
    tallies: dict[str, Tally] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)

    def summary(self, tenant: str, op: str) -> Summary | None:
        tally = self.tallies.get(tenant)
        found = tally.latencies_ms.get(op) if tally else None
        return summarize(f"{tenant}.{op}", f"{tenant} {op}", found) if found else None

    def statuses(self) -> collections.Counter[str]:
        total: collections.Counter[str] = collections.Counter()
        for tally in self.tallies.values():
            total.update(tally.statuses)
        return total

    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses().items() if status.startswith("5"))

    def rss_max_mib(self) -> float:
        return max((s.rss_mib for s in self.samples), default=0.0)

    def targets(self) -> list[tuple[str, str, str, bool]]:
        """(what, bound, measured, met) for each of the issue's targets."""
        rows = []
        for name, tenant, op in (("/healthz p99", "healthz", "healthz"),
                                 ("neighbour exec p99", "neighbour", "exec")):  # fmt: skip
            s = self.summary(tenant, op)
            p99 = s.p99 if s else float("inf")
            rows.append((name, f"<= {TARGET_P99_MS:.0f} ms", f"{p99:.1f} ms", p99 <= TARGET_P99_MS))
        rss = self.rss_max_mib()
        rows.append(("daemon RSS (max)", f"<= {TARGET_RSS_MIB:.0f} MiB", f"{rss:.0f} MiB",
                     rss <= TARGET_RSS_MIB))  # fmt: skip
        errors = self.server_errors()
        rows.append(("5xx replies", "0", str(errors), errors == 0))
        if self.aborted:
            rows.append(("run completed", "yes", f"no: {self.aborted}", False))
        return rows

    def to_json(self) -> dict[str, Any]:
        def latency(s: Summary | None) -> dict[str, float] | None:
            return None if s is None else {"n": s.n, "p50": s.median, "p99": s.p99,
                                           "max": max(s.samples_ms)}  # fmt: skip

        return {
            "command": self.command,
            "settings": dataclasses.asdict(self.settings),
            "machine": dataclasses.asdict(self.machine),
            "duration_s": self.duration_s,
            "aborted": self.aborted,
            "healthz_ms": latency(self.summary("healthz", "healthz")),
            "neighbour_exec_ms": latency(self.summary("neighbour", "exec")),
            "rss_max_mib": self.rss_max_mib(),
            "store_final_mib": self.samples[-1].store_mib if self.samples else 0.0,
            "samples": [dataclasses.asdict(s) for s in self.samples],
            "statuses": {name: dict(t.statuses) for name, t in self.tallies.items()},
            "server_errors": self.server_errors(),
            "targets": [
                {"what": w, "bound": b, "measured": m, "met": ok} for w, b, m, ok in self.targets()
            ],
        }


# ---------------------------------------------------------------------------- measuring


def _rss_mib(pid: int) -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds the process has used."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


def _store_mib(state: Path) -> float:
    total = 0
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(OSError):
            total += (state / f"sandboxd.db{suffix}").stat().st_size
    return total / MIB


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _soak(settings: Settings, api: Api, daemon: RunningDaemon, result: SoakResult) -> None:
    tenants = settings.tenants()
    ctx = multiprocessing.get_context("spawn")
    stop, results = ctx.Event(), ctx.Queue()
    start = time.monotonic()
    deadline = start + settings.minutes * 60
    procs = [
        ctx.Process(target=tenant_main, args=(t, api, deadline, stop, results), name=t.name)
        for t in tenants
    ]
    for proc in procs:
        proc.start()
    last_t, last_cpu = start, _cpu_s(daemon.pid)
    try:
        while time.monotonic() < deadline:
            rss = _rss_mib(daemon.pid)
            now, cpu = time.monotonic(), _cpu_s(daemon.pid)
            busy = (cpu - last_cpu) / max(now - last_t, 1e-6)
            last_t, last_cpu = now, cpu
            result.samples.append(
                Sample(now - start, rss, _store_mib(daemon.state), busy, os.getloadavg()[0])
            )
            if rss > settings.rss_abort_mib:
                result.aborted = f"daemon RSS {rss:.0f} MiB > {settings.rss_abort_mib} MiB"
                break
            if result.samples[-1].store_mib > settings.store_abort_mib:
                result.aborted = f"store over {settings.store_abort_mib} MiB"
                break
            time.sleep(settings.sample_interval_s)
    finally:
        stop.set()
        result.duration_s = time.monotonic() - start
        grace = time.monotonic() + STOP_GRACE_S
        while len(result.tallies) < len(tenants) and time.monotonic() < grace:
            with contextlib.suppress(queue.Empty):
                name, tally = results.get(timeout=1.0)
                result.tallies[name] = tally
        for proc in procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join()
        missing = Tally(notes=["did not stop in time"])
        result.tallies = {t.name: result.tallies.get(t.name, missing) for t in tenants}


def _cleanup(api: Api) -> None:
    """Delete what the tenants left (as root on the unix socket, which sees every owner)."""
    with Client(api.socket) as client:
        for _ in range(50):
            page = client.call("GET", "/v1/containers?limit=100")["data"]
            if not page:
                return
            for item in page:
                with contextlib.suppress(BenchError):
                    client.call("DELETE", f"/v1/containers/{item['id']}")


def run(settings: Settings, command: str) -> SoakResult:
    result = SoakResult(settings, command, machine.describe())
    owners = [t.name for t in settings.tenants()]
    keys = {owner: "sk-soak-" + secrets.token_hex(12) for owner in owners}
    port = _free_port()
    hashed = ", ".join(f'"{owner}" = "{hash_key(key)}"' for owner, key in keys.items())
    server = f'tcp = "127.0.0.1:{port}"\napi_keys = {{ {hashed} }}'
    with workdir() as work, running_daemon(work, server_toml=server) as daemon:
        api = Api(str(daemon.socket), f"127.0.0.1:{port}", keys)
        try:
            _soak(settings, api, daemon, result)
        finally:
            _cleanup(api)
    return result


# ---------------------------------------------------------------------------- report


def render(r: SoakResult) -> str:
    s, m = r.settings, r.machine
    out = [
        f"# sandboxd soak: {r.duration_s / 60:.1f} of {s.minutes:g} minutes",
        "",
        f"`{r.command}` on {m.date}, commit {m.commit}: {m.cpus} CPUs ({m.cpu_model}), "
        f"{m.memory}, kernel {m.kernel}, load {m.load} at start.",
        f"Hostile output: {s.output_commands} commands x {s.output_bytes / MIB:g} MiB of 0xff "
        f"per exec; {s.flood_files} files renamed per round; {s.flood_connections} held "
        f"connections; {s.dirty_sandboxes} x {s.dirty_mib} MiB dirty sandboxes per delete round. "
        f"Hostile tenants run: {', '.join(s.hostiles) or 'none'}.",
        "",
        "| target | bound | measured | |",
        "|---|---|---|---|",
        *(f"| {w} | {b} | {v} | {'met' if ok else '**missed**'} |" for w, b, v, ok in r.targets()),
        "",
        "## Latency (ms)",
        "",
        "| tenant | operation | n | p50 | p99 | max |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, tally in r.tallies.items():
        for op in sorted(tally.latencies_ms):
            x = r.summary(name, op)
            if x is not None:
                out.append(f"| {name} | {op} | {x.n} | {x.median:.1f} | {x.p99:.1f} | "
                           f"{max(x.samples_ms):.1f} |")  # fmt: skip
    out += ["", "## Daemon RSS and store size over time", "",
            "(daemon CPU: its share of one core since the previous sample; load: the host's "
            "1-minute load average, for telling a stall from a busy machine.)", "",
            "| t (s) | RSS (MiB) | store (MiB) | daemon CPU | load |",
            "|---:|---:|---:|---:|---:|"]  # fmt: skip
    step = max(1, len(r.samples) // TIMELINE_ROWS)
    picked = r.samples[::step] + (
        [r.samples[-1]] if r.samples[-1:] != r.samples[::step][-1:] else []
    )
    out += [f"| {x.t_s:.0f} | {x.rss_mib:.0f} | {x.store_mib:.1f} | {x.daemon_cpu:.2f} | "
            f"{x.load1:.1f} |" for x in picked]  # fmt: skip
    statuses = sorted(r.statuses(), key=lambda k: (not k.isdigit(), k))
    out += ["", "## Replies by status", "",
            "(`conn_error`: the request or connection failed; `held` and `connected` count the "
            "connection flood's half-open and silent connections.)", "",
            "| tenant | " + " | ".join(statuses) + " |",
            "|---|" + "---:|" * len(statuses)]  # fmt: skip
    for name, tally in r.tallies.items():
        out.append(
            f"| {name} | " + " | ".join(str(tally.statuses.get(k, 0)) for k in statuses) + " |"
        )
    samples = [(n, k, v) for n, t in r.tallies.items() for k, v in sorted(t.samples.items())]
    if samples:
        out += ["", "## First reply per status other than 200", ""]
        out += [f"- {n} {k}: `{v}`" for n, k, v in samples]
    notes = [note for t in r.tallies.values() for note in t.notes]
    if notes:
        out += ["", "## Notes", "", *(f"- {n}" for n in notes)]
    return "\n".join(out) + "\n"


def _kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(k for k in text.split(",") if k)
    if unknown := set(kinds) - set(HOSTILES):
        raise argparse.ArgumentTypeError(f"unknown hostile tenants: {', '.join(sorted(unknown))}")
    return kinds


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    d = Settings()
    p.add_argument("--minutes", type=float, default=d.minutes)
    p.add_argument("--normal-tenants", type=int, default=d.normal_tenants)
    p.add_argument("--output-commands", type=int, default=d.output_commands,
                   help="commands per hostile exec (default: the config's maximum)")  # fmt: skip
    p.add_argument("--output-bytes", type=int, default=d.output_bytes,
                   help="output of each (default: the config's maximum)")  # fmt: skip
    p.add_argument("--flood-files", type=int, default=d.flood_files)
    p.add_argument("--flood-connections", type=int, default=d.flood_connections)
    p.add_argument("--dirty-sandboxes", type=int, default=d.dirty_sandboxes)
    p.add_argument("--dirty-mib", type=int, default=d.dirty_mib)
    p.add_argument("--rss-abort-mib", type=int, default=d.rss_abort_mib,
                   help="stop early when the daemon's RSS passes this")  # fmt: skip
    p.add_argument("--store-abort-mib", type=int, default=d.store_abort_mib,
                   help="stop early when the store (SQLite) passes this")  # fmt: skip
    p.add_argument("--hostiles", type=_kinds, default=d.hostiles,
                   help=f"comma-separated, of {','.join(HOSTILES)} (default: all)")  # fmt: skip
    p.add_argument("--json", type=Path, help="also write the figures as JSON here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if os.geteuid() != 0:
        print("bench.soak: must run as root (runc, loop mounts, cgroups)", file=sys.stderr)
        return 2
    options = {
        f.name: getattr(args, f.name) for f in dataclasses.fields(Settings) if hasattr(args, f.name)
    }
    settings = Settings(**options)
    command = shlex.join(
        [".venv/bin/python", "-m", "bench.soak", *(argv if argv is not None else sys.argv[1:])]
    )
    result = run(settings, command)
    print(render(result))
    if args.json:
        args.json.write_text(json.dumps(result.to_json(), indent=1))
    return 0 if all(ok for *_, ok in result.targets()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
