"""`.venv/bin/python -m bench.against REV [--n N] [--execs N] [--density N]`: this tree against
revision REV, paired in one run.

Both daemons run side by side (each with its own scratch dir, state and runc root, the
bench's config), and every measurement alternates between them, so a machine whose speed
changes within the minute (these are shared) moves both the same way: cold create (4g, no
pool), create from the warm pool (1g), exec `true`. Idle density (--density N: N idle 1g
sandboxes that all answer exec, and the daemon's RSS) runs for one daemon after the other.
Prints medians, and the ratio this tree / REV. REV comes out of the repository's history
(`git archive`); the daemons share this venv.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from types import FrameType

from bench import machine
from bench.client import BenchError, Client
from bench.daemon import RunningDaemon, running_daemon
from bench.sandboxd import COLD_TIER, POOL_TIER, cycle, wait_for_pool
from bench.scale import density
from bench.stats import timed_ms
from bench.workdir import workdir

WARMUP = 2


@dataclass
class Side:
    name: str
    daemon: RunningDaemon
    client: Client
    samples: dict[str, list[float]] = field(default_factory=dict)

    def add(self, figure: str, ms: float) -> None:
        self.samples.setdefault(figure, []).append(ms)


@contextlib.contextmanager
def source_tree(rev: str) -> Iterator[Path]:
    """The daemon's packages at `rev`, in a temporary directory."""
    found = subprocess.run(
        ["git", "-C", str(machine.REPO), "archive", rev, "daemon", "sandbox", "proxy", "config"],
        capture_output=True,
        timeout=120,
        check=False,
    )
    if found.returncode != 0:
        raise BenchError(f"git archive {rev}: {found.stderr.decode(errors='replace')[-300:]}")
    tree = Path(tempfile.mkdtemp(prefix="sbxd-rev-"))
    try:
        with tarfile.open(fileobj=BytesIO(found.stdout)) as tar:
            tar.extractall(tree, filter="data")
        yield tree
    finally:
        shutil.rmtree(tree, ignore_errors=True)


def _interleaved(sides: list[Side], rounds: int, step: Callable[[Side, int], None]) -> None:
    for i in range(rounds):
        order = sides if i % 2 == 0 else sides[::-1]
        for side in order:
            step(side, i)


def _measure(sides: list[Side], n: int, execs: int) -> None:
    live: set[str] = set()

    def cold(side: Side, i: int) -> None:
        c = cycle(side.client, f"against-cold-{i}", COLD_TIER, live)
        if i >= WARMUP:
            side.add("cold create (4g, no pool)", c.create)
            side.add("cold create -> first exec done", c.to_exec)

    def pooled(side: Side, i: int) -> None:
        wait_for_pool(side.client)
        c = cycle(side.client, f"against-pool-{i}", POOL_TIER, live)
        if i >= WARMUP:
            side.add("create, warm-pool hit (1g)", c.create)
            side.add("pool hit -> first exec done", c.to_exec)

    _interleaved(sides, n + WARMUP, cold)
    _interleaved(sides, n + WARMUP, pooled)
    boxes = {
        s.name: str(s.client.call("POST", "/v1/containers", {"name": "x"})["id"]) for s in sides
    }

    def exec_true(side: Side, i: int) -> None:
        path = f"/v1/containers/{boxes[side.name]}/exec"
        _, ms = timed_ms(lambda: side.client.call("POST", path, {"commands": ["true"]}))
        if i >= WARMUP * 10:
            side.add("exec `true` (warm container)", ms)

    _interleaved(sides, execs + WARMUP * 10, exec_true)
    for side in sides:
        side.client.call("DELETE", f"/v1/containers/{boxes[side.name]}")


def _report(rev: str, sides: list[Side], densities: dict[str, list[str]]) -> str:
    old, new = sides
    m = machine.describe()
    lines = [
        f"# This tree ({m.commit}) against {rev}, paired",
        "",
        f"`{' '.join(['python -m bench.against', *sys.argv[1:]])}`, {m.date}: {m.cpus} CPUs,"
        f" {m.memory}, kernel {m.kernel}, load {m.load} at the end",
        "",
        f"| figure (median, ms) | {rev} | this tree | ratio |",
        "|---|---:|---:|---:|",
    ]
    for figure, before in old.samples.items():
        after = new.samples[figure]
        b, a = statistics.median(before), statistics.median(after)
        lines.append(f"| {figure} (n={len(after)}) | {b:.1f} | {a:.1f} | {a / b:.2f} |")
    for name, notes in densities.items():
        lines += ["", f"Idle density, {name}:", *notes]
    return "\n".join(lines)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through every cleanup


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.against", description=__doc__)
    parser.add_argument("rev", help="a revision of this repository (commit, tag, branch)")
    parser.add_argument("--n", type=int, default=20, help="creates per figure and side")
    parser.add_argument("--execs", type=int, default=200, help="execs per side")
    parser.add_argument("--density", type=int, default=0, help="idle sandboxes (0: skip)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench: must run as root (runc, loop mounts, cgroups)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    densities: dict[str, list[str]] = {}
    try:
        with (
            source_tree(args.rev) as code,
            workdir() as old_work,
            workdir() as new_work,
            running_daemon(old_work, code=code) as old_daemon,
            running_daemon(new_work) as new_daemon,
            Client(str(old_daemon.socket)) as old_client,
            Client(str(new_daemon.socket)) as new_client,
        ):
            sides = [
                Side(args.rev, old_daemon, old_client),
                Side("this tree", new_daemon, new_client),
            ]
            _measure(sides, args.n, args.execs)
            if args.density:
                for side in sides:
                    run = density(str(side.daemon.socket), side.daemon.pid, args.density)
                    densities[side.name] = run.notes
            print(_report(args.rev, sides, densities))
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
