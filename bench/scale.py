"""Scale figures: concurrent create+exec+delete cycles, and idle density."""

from __future__ import annotations

import concurrent.futures
import time
from dataclasses import dataclass
from pathlib import Path

from bench.client import BenchError, Client
from bench.stats import Summary, summarize

CONCURRENT_CYCLES = 100
DENSITY_TARGET = 500


@dataclass(frozen=True)
class ScaleRun:
    figures: list[Summary]
    notes: list[str]


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _available_mib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _cycle(socket: str, i: int) -> float:
    with Client(socket) as client:
        t0 = time.perf_counter()
        cid = client.call("POST", "/v1/containers", {"name": f"cc-{i}", "memory_limit": "4g"})["id"]
        try:
            out = client.call("POST", f"/v1/containers/{cid}/exec", {"commands": ["true"]})
            if out["output"][0]["outcome"] != {"type": "exit", "exit_code": 0}:
                raise BenchError(f"exec in {cid}: {out['output'][0]}")
        finally:
            client.call("DELETE", f"/v1/containers/{cid}")
        return (time.perf_counter() - t0) * 1000


def concurrent_cycles(socket: str, n: int) -> ScaleRun:
    started = time.perf_counter()
    latencies: list[float] = []
    errors: list[str] = []
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        for future in [pool.submit(_cycle, socket, i) for i in range(n)]:
            try:
                latencies.append(future.result())
            except BenchError as exc:
                errors.append(str(exc)[:200])
    wall = time.perf_counter() - started
    notes = [
        f"- {n} concurrent create + exec `true` + delete cycles (cold path, 4g): "
        f"{len(errors)} errors, {wall:.1f} s wall, {n / wall:.1f} cycles/s."
    ]
    notes += [f"  - error: {e}" for e in errors[:5]]
    return ScaleRun([summarize("concurrent", f"{n} concurrent cycles, each", latencies)], notes)


def density(socket: str, daemon_pid: int, target: int) -> ScaleRun:
    """Create idle 1g sandboxes until `target` or the first failure; all must answer exec."""
    live: list[str] = []
    rss0, avail0 = _rss_mib(daemon_pid), _available_mib()
    failure = ""
    with Client(socket) as client:
        try:
            while len(live) < target:
                try:
                    body = client.call("POST", "/v1/containers", {"name": "idle"})
                except BenchError as exc:
                    failure = str(exc)[:200]
                    break
                live.append(body["id"])
            rss, avail = _rss_mib(daemon_pid), _available_mib()
            answering = 0
            for cid in live:
                out = client.call("POST", f"/v1/containers/{cid}/exec", {"commands": ["true"]})
                answering += out["output"][0]["outcome"] == {"type": "exit", "exit_code": 0}
        finally:
            for cid in live:
                try:
                    client.call("DELETE", f"/v1/containers/{cid}")
                except BenchError as exc:
                    failure = failure or f"delete: {exc}"
    per = (avail0 - avail) / len(live) if live else 0.0
    notes = [
        f"- Idle density: {len(live)} `1g` sandboxes alive at once "
        f"({'stopped at the target' if not failure else 'first failure: ' + failure}); "
        f"{answering} of them answered exec afterwards.",
        f"  - daemon RSS {rss:.0f} MiB (was {rss0:.0f} MiB before the first); "
        f"host memory per idle sandbox {per:.1f} MiB (MemAvailable drop / sandboxes).",
    ]
    return ScaleRun([], notes)
