"""Egress proxy figures: added latency of a keep-alive HTTPS request and new-connection cost.

Runs in a private network namespace (`unshare --net`, `lo` up): a loopback TLS upstream on
127.0.0.2:443 (the egress tests' echo server and throwaway CA), the real proxy process started
by the daemon's supervisor, and a client that connects to a sandbox's egress socket the way
the in-sandbox agent relays to it. Measured: the same keep-alive GET direct to the upstream,
through a relayed tunnel (no secret) and through an intercepted one (a secret substituted);
and whole new connections (CONNECT + TLS + GET + close) through each mode.

`measure_proxy(n)` runs `python -m bench.proxy --json` in that namespace and returns the
summaries; `python -m bench.proxy` alone prints them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.stats import Summary, summarize

UPSTREAM = ("127.0.0.2", 443)
HOST = "api.bench.test"
SECRET_HOST = "secret.bench.test"
PROXY_TARGET_MS = 1.5  # added p50 of a keep-alive request (our target)


def measure_proxy(n: int) -> list[Summary]:
    """Run the measurement in a fresh network namespace (needs root and `unshare`)."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return []
    done = subprocess.run(
        ["unshare", "--net", "--", "sh", "-c",
         f'ip link set lo up && exec "{sys.executable}" -m bench.proxy --json --n {n}'],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"bench.proxy failed: {done.stderr[-2000:]}")
    raw: list[dict[str, Any]] = json.loads(done.stdout.strip().splitlines()[-1])
    return [summarize(r["key"], r["label"], r["samples"], r.get("target")) for r in raw]


# ----------------------------------------------------------------------------- client


class _Conn:
    """One HTTPS connection, direct or tunnelled through a sandbox's egress socket."""

    def __init__(self, ctx: ssl.SSLContext, host: str, proxy_socket: Path | None) -> None:
        if proxy_socket is None:
            raw = socket.create_connection(UPSTREAM)
        else:
            raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            raw.connect(str(proxy_socket))
            raw.sendall(f"CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n".encode())
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = raw.recv(4096)
                if not chunk:
                    raise ConnectionError("proxy closed the connection")
                head += chunk
            if not head.startswith(b"HTTP/1.1 200"):
                raise ConnectionError(head.decode(errors="replace"))
        self.sock = ctx.wrap_socket(raw, server_hostname=host)
        self.host = host
        self.buf = b""

    def get(self, headers: str = "") -> bytes:
        self.sock.sendall(f"GET /bench HTTP/1.1\r\nHost: {self.host}\r\n{headers}\r\n".encode())
        while b"\r\n\r\n" not in self.buf:
            self.buf += self._recv()
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            rest += self._recv()
        self.buf = rest[length:]
        return head

    def _recv(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("connection closed")
        return data

    def close(self) -> None:
        self.sock.close()


def _keepalive(make: Any, n: int, headers: str = "") -> list[float]:
    conn = make()
    try:
        for _ in range(20):
            conn.get(headers)  # warm up
        out = []
        for _ in range(n):
            start = time.perf_counter()
            conn.get(headers)
            out.append((time.perf_counter() - start) * 1000)
        return out
    finally:
        conn.close()


def _fresh(make: Any, n: int, headers: str = "") -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        conn = make()
        conn.get(headers)
        conn.close()
        out.append((time.perf_counter() - start) * 1000)
    return out


# ----------------------------------------------------------------------------- in the netns


async def _run(n: int) -> list[dict[str, Any]]:
    from bench.upstream import ThrowawayCA, Upstreams
    from daemon.egress_proxy import EgressProxy, ProxySettings
    from daemon.metrics import Metrics
    from daemon.tasks import TaskSupervisor

    base = Path(tempfile.mkdtemp(prefix="sbxd-bench-px-", dir="/tmp"))
    base.chmod(0o755)  # noqa: ASYNC240 - one-shot setup
    ca = ThrowawayCA(base)
    upstreams = Upstreams(ca)
    upstreams.start()
    upstreams.add(UPSTREAM[0], [HOST, SECRET_HOST])
    tasks = TaskSupervisor()
    proxy = EgressProxy(
        ProxySettings(
            state_dir=base / "proxy",
            hosts={HOST: [UPSTREAM[0]], SECRET_HOST: [UPSTREAM[0]]},
            allow_upstreams=(UPSTREAM,),
            upstream_ca_bundle=str(ca.cert_path),
        ),
        Metrics("oci"),
        tasks,
    )
    try:
        await proxy.start()
        sandbox_dir = base / "sbx"
        sandbox_dir.mkdir(mode=0o700)
        placeholder = "sbxd_ph_" + "a" * 32
        await proxy.attach(
            "cntr_bench",
            sandbox_dir,
            {"type": "allowlist", "allowed_domains": [HOST, SECRET_HOST]},
            [{"name": "K", "domain": SECRET_HOST, "placeholder": placeholder, "value": "v" * 40}],
        )
        sock = sandbox_dir / "proxy.sock"
        direct_ctx = ssl.create_default_context(cafile=str(ca.cert_path))
        mitm_ctx = ssl.create_default_context(cafile=str(proxy.ca_cert))
        auth = f"Authorization: Bearer {placeholder}\r\n"

        def direct() -> _Conn:
            return _Conn(direct_ctx, HOST, None)

        def relay() -> _Conn:
            return _Conn(direct_ctx, HOST, sock)

        def intercept() -> _Conn:
            return _Conn(mitm_ctx, SECRET_HOST, sock)

        def measure() -> list[dict[str, Any]]:
            fresh_n = max(10, n // 4)
            rows = [
                ("px_direct", "keep-alive GET, direct to the upstream", _keepalive(direct, n)),
                ("px_relay", "keep-alive GET through the proxy, relayed (no secret)",
                 _keepalive(relay, n)),
                ("px_intercept", "keep-alive GET through the proxy, intercepted + secret",
                 _keepalive(intercept, n, auth)),
                ("px_new_direct", "new connection (TLS + GET + close), direct",
                 _fresh(direct, fresh_n)),
                ("px_new_relay", "new connection through the proxy, relayed",
                 _fresh(relay, fresh_n)),
                ("px_new_intercept", "new connection through the proxy, intercepted",
                 _fresh(intercept, fresh_n, auth)),
            ]  # fmt: skip
            return [{"key": k, "label": label, "samples": s} for k, label, s in rows]

        return await asyncio.to_thread(measure)
    finally:
        await tasks.close(5)
        await proxy.close()
        upstreams.stop()
        shutil.rmtree(base, ignore_errors=True)


def added_latency(figures: list[Summary]) -> list[Summary]:
    """Median-to-median differences as one-sample rows (what the target is about)."""
    by = {s.key: s for s in figures}
    rows = []
    for mode in ("relay", "intercept"):
        if f"px_{mode}" in by and "px_direct" in by:
            added = by[f"px_{mode}"].median - by["px_direct"].median
            rows.append(
                summarize(
                    f"px_added_{mode}",
                    f"added by the proxy to a keep-alive request ({mode}), median - median",
                    [added],
                    PROXY_TARGET_MS,
                )
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.proxy")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if [name for _, name in socket.if_nameindex()] != ["lo"]:
        print(
            "bench.proxy: run in a private network namespace (measure_proxy does)", file=sys.stderr
        )
        return 2
    rows = asyncio.run(_run(args.n))
    if args.json:
        print(json.dumps(rows))
    else:
        for r in rows:
            s = summarize(r["key"], r["label"], r["samples"])
            print(f"{s.label}: median {s.median:.2f} ms, p95 {s.p95:.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
