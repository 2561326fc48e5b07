"""`.venv/bin/python -m bench.attach [--n 300]`: the attach echo round trip, one byte sent
over the attach WebSocket to a `cat` in a container, timed until it comes back.

A real daemon (bench/daemon.py: private socket, state dir and runc root) runs one container
with two background processes: `cat` on a terminal in raw mode (`stty raw -echo`, so the
byte goes through cat itself, not the terminal's echo) and a plain `cat` on pipes. Each is
attached once (aiohttp's client over the unix socket), then `n` times one byte is sent and
the clock stops when it is back: the WebSocket, the daemon, the agent's input op, the
process, the agent's output ring and its follower, the daemon and the WebSocket again.
Prints p50/p90/min (ms). Run as root from the repository root; not part of `python -m bench`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import aiohttp

from bench.client import BenchError, Client
from bench.daemon import running_daemon
from bench.stats import Summary, summarize
from bench.workdir import workdir

WARMUP = 20
COMMANDS = {
    "attach_tty": ("tty `cat` (raw mode)", "stty raw -echo && exec cat", True),
    "attach_pipe": ("`cat` on pipes", "exec cat", False),
}


async def _round_trips(socket: str, cid: str, pid: str, n: int) -> list[float]:
    url = f"http://localhost/v1/containers/{cid}/processes/{pid}/attach"
    samples: list[float] = []
    connector = aiohttp.UnixConnector(path=socket)
    async with aiohttp.ClientSession(connector=connector) as s, s.ws_connect(url) as ws:
        first = await ws.receive(timeout=30)
        if json.loads(first.data).get("type") != "attached":
            raise BenchError(f"unexpected first message {first.data!r}")
        await asyncio.sleep(0.5)  # let `stty` take effect before the first byte
        for i in range(n + WARMUP):
            byte = bytes([0x61 + i % 26])
            start = time.perf_counter()
            await ws.send_bytes(byte)
            got = b""
            while not got.endswith(byte):
                msg = await ws.receive(timeout=30)
                if msg.type != aiohttp.WSMsgType.BINARY:
                    raise BenchError(f"unexpected message {msg!r}")
                got += msg.data
            if i >= WARMUP:
                samples.append((time.perf_counter() - start) * 1000)
    return samples


def measure(client: Client, socket: str, n: int) -> list[Summary]:
    cid = client.call("POST", "/v1/containers", {"name": "bench-attach", "memory_limit": "1g"})[
        "id"
    ]
    found = []
    try:
        for key, (label, command, tty) in COMMANDS.items():
            body = {"command": command, "tty": tty}
            pid = client.call("POST", f"/v1/containers/{cid}/processes", body)["id"]
            samples = asyncio.run(_round_trips(socket, cid, pid, n))
            found.append(summarize(key, label, samples))
    finally:
        client.call("DELETE", f"/v1/containers/{cid}")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.attach", description=__doc__)
    parser.add_argument("--n", type=int, default=300, help="round trips each (default 300)")
    args = parser.parse_args()
    with workdir() as work, running_daemon(work) as daemon, Client(str(daemon.socket)) as client:
        found = measure(client, str(daemon.socket), args.n)
    print("| | n | p50 ms | p90 ms | min ms |")
    print("|---|---:|---:|---:|---:|")
    for s in found:
        print(f"| {s.label} | {s.n} | {s.median:.2f} | {s.percentile(0.9):.2f} | {s.min:.2f} |")


if __name__ == "__main__":
    main()
