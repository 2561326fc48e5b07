"""`.venv/bin/python -m bench [--quick] [--out PATH]`: measure sandboxd and plain runc."""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
from pathlib import Path
from types import FrameType

from bench import machine
from bench.baseline import measure_runc
from bench.client import BenchError, Client
from bench.daemon import running_daemon
from bench.docker import measure_docker
from bench.proxy import measure_proxy
from bench.report import KEPT_HEADING, Results, render
from bench.sandboxd import Sizes, measure_api, server_side
from bench.scale import CONCURRENT_CYCLES, DENSITY_TARGET, concurrent_cycles, density
from bench.workdir import workdir

FULL = Sizes(create=30, exec=200, baseline=30)
QUICK = Sizes(create=10, exec=50, baseline=10)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="N=10 creates, 50 execs, no scale runs"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=machine.REPO / "BENCHMARKS.md",
        help="markdown report (default: BENCHMARKS.md at the repository root)",
    )
    return parser


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through every cleanup


def run(sizes: Sizes, command: str, scale: bool) -> Results:
    described = machine.describe()
    scale_runs = []
    with workdir() as work:
        with running_daemon(work) as daemon, Client(str(daemon.socket)) as client:
            api = measure_api(client, sizes)
            if scale:
                scale_runs.append(concurrent_cycles(str(daemon.socket), CONCURRENT_CYCLES))
                scale_runs.append(density(str(daemon.socket), daemon.pid, DENSITY_TARGET))
        server = server_side(daemon.log, api, sizes.exec)
        baseline, components = measure_runc(work, sizes.baseline)
        docker = measure_docker(sizes.baseline, work)
    return Results(
        command=command,
        machine=described,
        sandboxd=api.figures,
        server=server,
        baseline=baseline,
        docker=docker,
        components=components,
        scale=[f for r in scale_runs for f in r.figures],
        scale_notes=[n for r in scale_runs for n in r.notes],
        proxy=measure_proxy(sizes.exec),
    )


def _kept(out: Path) -> str:
    """The part of an existing report from KEPT_HEADING on: figures of other commands
    (`python -m bench.soak`, `python -m bench.against`), pasted there by hand."""
    try:
        text = out.read_text()
    except FileNotFoundError:
        return ""
    at = text.find(KEPT_HEADING)
    return "" if at < 0 else "\n" + text[at:]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if os.geteuid() != 0:
        print("bench: must run as root (runc, loop mounts, cgroups)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    command = shlex.join([".venv/bin/python", "-m", "bench", *sys.argv[1:]])
    try:
        results = run(QUICK if args.quick else FULL, command, scale=not args.quick)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    report = render(results)
    print(report)
    args.out.write_text(report + _kept(args.out))
    print(f"bench: wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
