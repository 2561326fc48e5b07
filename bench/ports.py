"""`.venv/bin/python -m bench.ports [--n 200]`: a small GET through the ports route against
the same GET made directly on the sandbox's loopback, from inside it.

A real daemon (bench/daemon.py: private socket, state dir and runc root) runs one container
with `python3 -m http.server` started as a background process. Through the route, each GET
is one request on the bench client's keep-alive unix-socket connection (the daemon opens an
agent connection and a TCP connection inside for each); inside, one exec runs a loop of the
same GETs, a new loopback connection each (as the relay makes them), timed by the sandbox's
own clock. Prints both summaries (ms) and their difference, the cost of the relay. Run as
root from the repository root; not part of `python -m bench`.
"""

from __future__ import annotations

import argparse
import json
import shlex
import time

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


def measure(client: Client, n: int) -> tuple[Summary, Summary]:
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
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ports", description=__doc__)
    parser.add_argument("--n", type=int, default=200, help="GETs each way (default 200)")
    args = parser.parse_args()
    with workdir() as work, running_daemon(work) as daemon, Client(str(daemon.socket)) as client:
        route, direct = measure(client, args.n)
    print("| | n | p50 ms | p95 ms | min ms |")
    print("|---|---|---|---|---|")
    for s in (route, direct):
        print(f"| {s.label} | {s.n} | {s.median:.2f} | {s.p95:.2f} | {s.min:.2f} |")
    print(f"\nrelay cost (p50 difference): {route.median - direct.median:.2f} ms")


if __name__ == "__main__":
    main()
