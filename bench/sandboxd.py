"""sandboxd figures over the API, and the daemon's own view of them from its JSON log."""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.client import BenchError, Client
from bench.stats import Summary, summarize, timed_ms

CREATE_TARGET_MS = 60.0
EXEC_TARGET_MS = 3.0
POOL_TARGET_MS = 10.0
WARMUP_CONTAINERS = 2
WARMUP_EXECS = 20


@dataclass(frozen=True)
class Sizes:
    create: int  # containers created (and exec'd once, and deleted)
    exec: int  # exec round trips on one warm container
    baseline: int  # runc / docker runs


@dataclass(frozen=True)
class ApiRun:
    figures: list[Summary]
    create_ids: frozenset[str]  # the measured containers, to pick their log lines
    exec_id: str


COLD_TIER = "4g"  # no warm pool for this tier in the bench's daemon: the cold path
POOL_TIER = "1g"
POOL_WAIT_S = 10.0


def _create(client: Client, name: str, live: set[str], tier: str = COLD_TIER) -> str:
    body = client.call("POST", "/v1/containers", {"name": name, "memory_limit": tier})
    cid = str(body["id"])
    live.add(cid)
    return cid


def _delete(client: Client, cid: str, live: set[str]) -> None:
    client.call("DELETE", f"/v1/containers/{cid}")
    live.discard(cid)


def _exec_true(client: Client, cid: str) -> None:
    body = client.call("POST", f"/v1/containers/{cid}/exec", {"commands": ["true"]})
    outcome = body["output"][0]["outcome"]
    if outcome != {"type": "exit", "exit_code": 0}:
        raise BenchError(f"exec true in {cid}: unexpected outcome {outcome}")


def pool_depth(client: Client, tier: str = POOL_TIER) -> int:
    text = client.text("/metrics")
    for line in text.splitlines():
        if line.startswith(f'sandboxd_pool_depth{{image="host",tier="{tier}"}}'):
            return int(float(line.split()[-1]))
    return 0


def wait_for_pool(client: Client) -> None:
    deadline = time.monotonic() + POOL_WAIT_S
    while pool_depth(client) < 1:
        if time.monotonic() > deadline:
            raise BenchError("the warm pool did not refill within 10 s")
        time.sleep(0.02)


@dataclass(frozen=True)
class Cycle:
    """One create, exec `true`, delete, timed from the client (ms)."""

    cid: str
    create: float
    first_exec: float
    delete: float

    @property
    def to_exec(self) -> float:
        return self.create + self.first_exec


def cycle(client: Client, name: str, tier: str, live: set[str]) -> Cycle:
    t0 = time.perf_counter()
    cid = _create(client, name, live, tier)
    t1 = time.perf_counter()
    _exec_true(client, cid)
    t2 = time.perf_counter()
    _delete(client, cid, live)
    t3 = time.perf_counter()
    return Cycle(cid, (t1 - t0) * 1000, (t2 - t1) * 1000, (t3 - t2) * 1000)


def pool_cycles(client: Client, n: int, prefix: str, live: set[str]) -> list[Cycle]:
    """n cycles of the pooled tier, each once the pool has refilled: n warm-pool hits."""
    hits = []
    for i in range(n):
        wait_for_pool(client)
        hits.append(cycle(client, f"{prefix}-{i}", POOL_TIER, live))
    return hits


def _measure(client: Client, sizes: Sizes, live: set[str]) -> ApiRun:
    for i in range(WARMUP_CONTAINERS):
        cid = _create(client, f"bench-warmup-{i}", live)
        _exec_true(client, cid)
        _delete(client, cid, live)
    cold = [cycle(client, f"bench-{i}", COLD_TIER, live) for i in range(sizes.create)]
    hits = pool_cycles(client, sizes.create, "bench-pool", live)
    exec_id = _create(client, "bench-exec", live)
    for _ in range(WARMUP_EXECS):
        _exec_true(client, exec_id)
    execs = [timed_ms(lambda: _exec_true(client, exec_id))[1] for _ in range(sizes.exec)]
    path = f"/v1/containers/{exec_id}"
    gets = [timed_ms(lambda: client.call("GET", path))[1] for _ in range(sizes.exec)]
    files = [timed_ms(lambda: client.call("GET", f"{path}/files"))[1] for _ in range(sizes.exec)]
    _delete(client, exec_id, live)
    return ApiRun(
        figures=[
            summarize(
                "create",
                "sandboxd cold create (no pool)",
                [c.create for c in cold],
                CREATE_TARGET_MS,
            ),
            summarize(
                "to_exec",
                "sandboxd cold create → first exec `true` done",
                [c.to_exec for c in cold],
            ),
            summarize(
                "pool_create",
                "sandboxd create, warm-pool hit (then exec is possible)",
                [c.create for c in hits],
                POOL_TARGET_MS,
            ),
            summarize(
                "pool_to_exec",
                "sandboxd create, pool hit → first exec `true` done",
                [c.to_exec for c in hits],
            ),
            summarize(
                "first_exec",
                "sandboxd first exec `true` (fresh container)",
                [c.first_exec for c in cold],
            ),
            summarize("exec", "sandboxd exec `true` (warm container)", execs, EXEC_TARGET_MS),
            summarize("delete", "sandboxd delete", [c.delete for c in cold]),
            summarize("get", "sandboxd GET container (store read + touch)", gets),
            summarize("files", "sandboxd GET files (agent listing + store sync)", files),
        ],
        create_ids=frozenset(c.cid for c in cold),
        exec_id=exec_id,
    )


def measure_api(client: Client, sizes: Sizes) -> ApiRun:
    """Run every API measurement; containers left by a failure are deleted before returning."""
    live: set[str] = set()
    try:
        return _measure(client, sizes, live)
    finally:
        for cid in sorted(live):
            with contextlib.suppress(BenchError):
                client.call("DELETE", f"/v1/containers/{cid}")


def _log_entries(log: Path) -> list[dict[str, Any]]:
    entries = []
    for line in log.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict):
                entries.append(entry)
    return entries


def server_side(log: Path, run: ApiRun, n_exec: int) -> list[Summary]:
    """The daemon's own `ms` fields for the measured requests (warm-ups excluded)."""
    entries = _log_entries(log)

    def pick(msg: str, ids: frozenset[str], method: str = "", suffix: str = "") -> list[float]:
        return [
            float(e["ms"])
            for e in entries
            if e.get("msg") == msg
            and "ms" in e
            and e.get("container_id") in ids
            and (not method or e.get("method") == method)
            and str(e.get("path", "")).endswith(suffix)
        ]

    exec_ids = frozenset({run.exec_id})
    ids = run.create_ids
    picked = [
        (
            "srv_create",
            "POST /v1/containers request",
            pick("request", ids, "POST", "/v1/containers"),
        ),
        ("srv_runtime", "runtime create (the `created` event)", pick("container event", ids)),
        ("srv_first_exec", "first exec request", pick("request", ids, "POST", "/exec")),
        ("srv_exec", "warm exec request", pick("request", exec_ids, "POST", "/exec")[-n_exec:]),
        (
            "srv_agent",
            "warm exec: agent duration_ms (whole ms)",
            pick("command finished", exec_ids)[-n_exec:],
        ),
        ("srv_delete", "DELETE request", pick("request", ids, "DELETE")),
    ]
    return [summarize(key, label, samples) for key, label, samples in picked if samples]
