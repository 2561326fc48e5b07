"""`.venv/bin/python -m bench.ports [--n 200]`: a small GET through the ports route against
the same GET made directly on the sandbox's loopback, from inside it.

A real daemon (bench/daemon.py: private socket, state dir and runc root) runs one container
with `python3 -m http.server` started as a background process. Through the route, each GET
is one request on the bench client's keep-alive unix-socket connection (the daemon opens an
agent connection and a TCP connection inside for each); inside, one exec runs a loop of the
same GETs, a new loopback connection each (as the relay makes them), timed by the sandbox's
own clock. Then the same GETs through `sandboxd port-forward` (the command line, a local
listener relaying through the route), on one kept-alive local connection. Prints the
summaries (ms) and the differences, the cost of the relay and of the forward's hop. Run as
root from the repository root; not part of `python -m bench`.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shlex
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

from bench.client import BenchError, Client
from bench.daemon import running_daemon
from bench.stats import Summary, summarize, timed_ms
from bench.workdir import workdir

PORT = 8000
WARMUP = 10
INSIDE = f"""
import http.client, json, sys, time
samples = []
for i in range(int(sys.argv[1]) + {WARMUP}):
    t = time.perf_counter()
    c = http.client.HTTPConnection("127.0.0.1", {PORT})
    c.request("GET", "/small.txt")
    body = c.getresponse().read()
    c.close()
    assert body == b"hello\\n", body
    if i >= {WARMUP}:
        samples.append((time.perf_counter() - t) * 1000)
print(json.dumps(samples))
"""


def _wait_listening(client: Client, cid: str) -> None:
    deadline = time.monotonic() + 30
    while client.request("GET", f"/v1/containers/{cid}/ports/{PORT}/small.txt").status != 200:
        if time.monotonic() > deadline:
            raise BenchError("the server in the container never listened")
        time.sleep(0.05)


def _through_forward(socket: Path, cid: str, n: int) -> list[float]:
    """n GETs through `sandboxd port-forward ID 0:PORT`, one kept-alive local connection."""
    sandboxd = str(Path(sys.executable).parent / "sandboxd")
    proc = subprocess.Popen(
        [sandboxd, "port-forward", "--socket", str(socket), cid, f"0:{PORT}"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        url = urllib.parse.urlsplit(proc.stdout.readline().strip())
        if not url.port:
            raise BenchError("sandboxd port-forward printed no URL")
        conn = http.client.HTTPConnection("127.0.0.1", url.port, timeout=30)
        samples: list[float] = []
        for i in range(n + WARMUP):
            start = time.perf_counter()
            conn.request("GET", "/small.txt")
            body = conn.getresponse().read()
            if body != b"hello\n":
                raise BenchError(f"GET through the forward: {body[:200]!r}")
            if i >= WARMUP:
                samples.append((time.perf_counter() - start) * 1000)
        conn.close()
        return samples
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def measure(client: Client, socket: Path, n: int) -> tuple[Summary, Summary, Summary]:
    cid = client.call("POST", "/v1/containers", {"name": "bench-ports", "memory_limit": "1g"})["id"]
    try:
        client.call("POST", f"/v1/containers/{cid}/exec", {"commands": ["echo hello > small.txt"]})
        command = f"exec python3 -m http.server {PORT} --bind 127.0.0.1"
        client.call("POST", f"/v1/containers/{cid}/processes", {"command": command})
        _wait_listening(client, cid)
        url = f"/v1/containers/{cid}/ports/{PORT}/small.txt"
        route: list[float] = []
        for i in range(n + WARMUP):
            reply, ms = timed_ms(lambda: client.request("GET", url))
            if reply.status != 200 or reply.body != b"hello\n":
                raise BenchError(f"GET {url}: HTTP {reply.status}: {reply.body[:200]!r}")
            if i >= WARMUP:
                route.append(ms)
        forward = _through_forward(socket, cid, n)
        script = f"python3 -c {shlex.quote(INSIDE)} {n}"
        body = {"commands": [script], "timeout_ms": 120_000}
        out = client.call("POST", f"/v1/containers/{cid}/exec", body)["output"][0]
        if out["outcome"]["exit_code"] != 0:
            raise BenchError(f"the loop inside failed: {out['stderr'][-500:]}")
        inside = json.loads(out["stdout"])
    finally:
        client.call("DELETE", f"/v1/containers/{cid}")
    return (
        summarize("ports_route", "GET through /ports/{port}/ (API socket)", route),
        summarize("ports_direct", "GET on 127.0.0.1 inside the sandbox", inside),
        summarize("ports_forward", "GET through `sandboxd port-forward`", forward),
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ports", description=__doc__)
    parser.add_argument("--n", type=int, default=200, help="GETs each way (default 200)")
    args = parser.parse_args()
    with workdir() as work, running_daemon(work) as daemon, Client(str(daemon.socket)) as client:
        route, direct, forward = measure(client, daemon.socket, args.n)
    print("| | n | p50 ms | p95 ms | min ms |")
    print("|---|---|---|---|---|")
    for s in (route, direct, forward):
        print(f"| {s.label} | {s.n} | {s.median:.2f} | {s.p95:.2f} | {s.min:.2f} |")
    print(f"\nrelay cost (p50 difference): {route.median - direct.median:.2f} ms")
    print(f"the forward's hop (p50 difference): {forward.median - route.median:.2f} ms")


if __name__ == "__main__":
    main()
