"""The soak's tenants: each runs in a process of its own until the deadline (or the stop
event) and returns a Tally of what it saw. Hostile tenants each use an owner of their own
(TCP bearer keys), so per-owner limits cannot hide what they do to their neighbours.

Probes:   healthz     GET /healthz every 100 ms on the unix socket (no owner), and every
                      second on a new connection
          neighbour   one long-lived container, exec `true` every 200 ms
Normal:   normal      create -> exec -> upload -> list -> download -> delete, over and over
Hostile:  output      the maximum exec output: every command at max_output_length of 0xff
          files       tens of thousands of files in /mnt/data, the directory renamed each
                      round, the files list read between rounds
          names       file names that are not UTF-8: written by exec and by /code, uploaded
                      in multipart, then listed
          connflood   hundreds of connections on the API socket holding half a request head,
                      plus bursts of connect/close
          deletes     sandboxes with dirty workspaces (dd in /mnt/data), deleted all at once
"""

from __future__ import annotations

import collections
import concurrent.futures
import json
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from bench.client import BenchError, Client, Reply

OP_TIMEOUT_S = 300.0  # one request (the maximum output case is slow without a budget)
HEALTHZ_INTERVAL_S = 0.1
NEIGHBOUR_INTERVAL_S = 0.2
DELETE_ROUND_S = 10.0  # a round of dirty deletes at most this often (disk writes add up)


@dataclass(frozen=True)
class Api:
    socket: str
    tcp: str
    keys: dict[str, str]  # owner -> bearer key

    def client(self, owner: str = "") -> Client:
        """A client for `owner` (TCP with its key), or on the unix socket (as root)."""
        if not owner:
            return Client(self.socket, OP_TIMEOUT_S)
        return Client(tcp=self.tcp, api_key=self.keys[owner], timeout=OP_TIMEOUT_S)


@dataclass(frozen=True)
class Tenant:
    name: str  # also the owner, for tenants that have one
    kind: str  # a key of KINDS
    params: dict[str, int] = field(default_factory=dict)


@dataclass
class Tally:
    """Replies by status ("200", "500", "conn_error"), latencies by operation, and the first
    body seen for each status other than 200."""

    statuses: collections.Counter[str] = field(default_factory=collections.Counter)
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)
    samples: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:  # sent between processes without its lock
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _lock=threading.Lock())

    def count(self, status: str, op: str = "", ms: float | None = None, sample: str = "") -> None:
        with self._lock:
            self.statuses[status] += 1
            if ms is not None:
                self.latencies_ms.setdefault(op, []).append(ms)
            if sample and status != "200":
                self.samples.setdefault(status, sample[:300])

    def call(
        self,
        client: Client,
        op: str,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        discard: bool = False,
    ) -> Reply | None:
        """One timed request, counted under its status; None when the transport failed."""
        if body is not None:
            raw, headers = json.dumps(body).encode(), {"Content-Type": "application/json"}
        start = time.perf_counter()
        try:
            reply = client.request(method, path, raw, headers, discard=discard)
        except BenchError as exc:
            self.count("conn_error", sample=f"{op}: {exc}")
            return None
        ms = (time.perf_counter() - start) * 1000
        self.count(str(reply.status), op, ms, f"{op}: {reply.body[:300]!r}")
        return reply


class Run:
    """What a tenant's loop needs: its API client, its tally, and whether to go on."""

    def __init__(self, api: Api, owner: str, deadline: float, stop: Any) -> None:
        self.api, self.owner, self.deadline, self.stop = api, owner, deadline, stop
        self.tally = Tally()
        self.client = api.client(owner)

    def going(self) -> bool:
        return time.monotonic() < self.deadline and not self.stop.is_set()

    def rounds(self, interval: float = 0.0) -> Iterator[int]:
        i = 0
        while self.going():
            started = time.monotonic()
            yield i
            i += 1
            rest = interval - (time.monotonic() - started)
            if rest > 0:
                self.stop.wait(rest)

    def create(self, name: str, tier: str = "1g") -> str | None:
        body = {"name": name, "memory_limit": tier}
        reply = self.tally.call(self.client, "create", "POST", "/v1/containers", body)
        if reply is None or reply.status != 200:
            return None
        return str(json.loads(reply.body)["id"])

    def delete(self, cid: str, client: Client | None = None) -> None:
        self.tally.call(client or self.client, "delete", "DELETE", f"/v1/containers/{cid}")

    def exec(
        self,
        cid: str,
        commands: list[str],
        op: str = "exec",
        client: Client | None = None,
        **extra: Any,
    ) -> Reply | None:
        """Exec `commands`; the reply's body is kept only for op "exec" (the rest discard it)."""
        return self.tally.call(
            client or self.client,
            op,
            "POST",
            f"/v1/containers/{cid}/exec",
            {"commands": commands, **extra},
            discard=op != "exec",
        )

    def list_files(self, cid: str) -> Reply | None:
        path = f"/v1/containers/{cid}/files?limit=100"
        return self.tally.call(self.client, "list_files", "GET", path)

    def upload(self, cid: str, filename: bytes, content: bytes) -> Reply | None:
        boundary = "soakboundary7d1f"
        raw = (
            f"--{boundary}\r\n".encode()
            + b'Content-Disposition: form-data; name="file"; filename="'
            + filename
            + b'"\r\nContent-Type: application/octet-stream\r\n\r\n'
            + content
            + f"\r\n--{boundary}--\r\n".encode()
        )
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        path = f"/v1/containers/{cid}/files"
        return self.tally.call(self.client, "upload", "POST", path, raw=raw, headers=headers)


# ---------------------------------------------------------------------------- probes


def healthz(run: Run, params: dict[str, int]) -> None:
    """On one keep-alive connection; every 10th round also on a new one (can a new client
    still get in?), recorded as `healthz_new_conn`."""
    for i in run.rounds(HEALTHZ_INTERVAL_S):
        run.tally.call(run.client, "healthz", "GET", "/healthz")
        if i % 10 == 5:
            with run.api.client() as fresh:
                run.tally.call(fresh, "healthz_new_conn", "GET", "/healthz")


def neighbour(run: Run, params: dict[str, int]) -> None:
    cid = run.create("neighbour")
    if cid is None:
        run.tally.notes.append("neighbour: create failed; no exec samples")
        return
    try:
        for _ in run.rounds(NEIGHBOUR_INTERVAL_S):
            run.exec(cid, ["true"])
    finally:
        run.delete(cid)


# ---------------------------------------------------------------------------- normal


def normal(run: Run, params: dict[str, int]) -> None:
    content = b"soak payload\n" * 5000  # 65 kB
    for i in run.rounds():
        cid = run.create(f"{run.owner}-{i}")
        if cid is None:
            run.stop.wait(1.0)
            continue
        try:
            run.exec(cid, ["echo hello from $HOSTNAME; ls /mnt/data | wc -l"])
            reply = run.upload(cid, b"notes-%d.txt" % i, content)
            run.list_files(cid)
            if reply is not None and reply.status == 200:
                fid = json.loads(reply.body)["id"]
                run.tally.call(
                    run.client, "download", "GET", f"/v1/containers/{cid}/files/{fid}/content"
                )
        finally:
            run.delete(cid)


# ---------------------------------------------------------------------------- hostile


def output(run: Run, params: dict[str, int]) -> None:
    """The maximum output case: `commands` commands, each max_output_length bytes of 0xff."""
    cid = run.create(run.owner)
    if cid is None:
        return
    size, commands = params["bytes"], params["commands"]
    command = f"head -c {size} /dev/zero | tr '\\0' '\\377'"
    try:
        for _ in run.rounds():
            run.exec(
                cid,
                [command] * commands,
                op="exec_max_output",
                max_output_length=size,
                timeout_ms=int(OP_TIMEOUT_S * 1000) - 10_000,
            )
    finally:
        run.delete(cid)


def files(run: Run, params: dict[str, int]) -> None:
    """A flood of files, its directory renamed to a new name between lists: every path of a
    listing is new and every path of the last one gone (the index must not grow)."""
    cid = run.create(run.owner)
    if cid is None:
        return
    n = params["files"]
    make = (
        "python3 -c \"import os; os.makedirs('/mnt/data/flood-0', exist_ok=True); "
        f"[open(f'/mnt/data/flood-0/f{{i}}.txt', 'w').close() for i in range({n})]\""
    )
    try:
        run.exec(cid, [make], op="exec_flood", timeout_ms=120_000)
        for i in run.rounds():
            run.exec(cid, [f"mv /mnt/data/flood-{i} /mnt/data/flood-{i + 1}"], op="exec_rename")
            run.list_files(cid)
    finally:
        run.delete(cid)


def names(run: Run, params: dict[str, int]) -> None:
    """File names that are not UTF-8, by exec, by /code and by upload; then listed."""
    cid = run.create(run.owner)
    if cid is None:
        return
    try:
        for i in run.rounds(0.5):
            run.exec(cid, [f"touch \"$(printf '/mnt/data/evil\\377{i}.txt')\""], op="exec_name")
            if i % 5 == 1:
                code = f"open(b'/mnt/data/cell\\xff{i}.txt', 'w').close(); print('ok')"
                run.tally.call(
                    run.client, "code", "POST", f"/v1/containers/{cid}/code", {"code": code}
                )
            if i % 5 == 3:
                run.upload(cid, b"upload\xff%d.txt" % i, b"x")
            run.list_files(cid)
    finally:
        run.delete(cid)


def connflood(run: Run, params: dict[str, int]) -> None:
    """Half-open request heads held on the API socket, and bursts of connect/close."""
    n = params["connections"]
    for _ in run.rounds():
        held: list[socket.socket] = []
        try:
            for _ in range(n):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.settimeout(5)
                try:
                    s.connect(run.api.socket)
                    s.sendall(b"GET /v1/containers HTTP/1.1\r\nHost: soak\r\nX-Slow: ")
                    run.tally.count("held")
                except OSError as exc:
                    run.tally.count("conn_error", sample=f"hold: {exc!r}")
                held.append(s)
            run.stop.wait(2.0)
            for _ in range(n):  # a burst of connections that say nothing
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.settimeout(5)
                    try:
                        s.connect(run.api.socket)
                        run.tally.count("connected")
                    except OSError as exc:
                        run.tally.count("conn_error", sample=f"burst: {exc!r}")
        finally:
            for s in held:
                s.close()


def deletes(run: Run, params: dict[str, int]) -> None:
    """Sandboxes with dirty workspaces, deleted all at once."""
    k, mib = params["sandboxes"], params["dirty_mib"]
    fill = f"dd if=/dev/zero of=/mnt/data/dirty.bin bs=1M count={mib} status=none && sync"

    def fill_one(cid: str) -> None:
        with run.api.client(run.owner) as client:
            run.exec(cid, [fill], op="exec_fill", client=client, timeout_ms=120_000)

    def delete_one(cid: str) -> None:
        with run.api.client(run.owner) as client:
            run.delete(cid, client)

    with concurrent.futures.ThreadPoolExecutor(k) as pool:
        for i in run.rounds(DELETE_ROUND_S):
            ids = [cid for j in range(k) if (cid := run.create(f"dirty-{i}-{j}", "4g"))]
            list(pool.map(fill_one, ids))
            list(pool.map(delete_one, ids))


KINDS: dict[str, Callable[[Run, dict[str, int]], None]] = {
    "healthz": healthz,
    "neighbour": neighbour,
    "normal": normal,
    "output": output,
    "files": files,
    "names": names,
    "connflood": connflood,
    "deletes": deletes,
}
OWNERLESS = frozenset({"healthz", "connflood"})  # on the unix socket


def tenant_main(tenant: Tenant, api: Api, deadline: float, stop: Any, results: Any) -> None:
    """A tenant process: run until the deadline or the stop event, put (name, Tally)."""
    run = Run(api, "" if tenant.kind in OWNERLESS else tenant.name, deadline, stop)
    try:
        KINDS[tenant.kind](run, tenant.params)
    except Exception:  # noqa: BLE001 - a crashed tenant is reported, not fatal to the soak
        run.tally.notes.append(f"{tenant.name} crashed:\n{traceback.format_exc()[-1500:]}")
    finally:
        run.client.close()
        results.put((tenant.name, run.tally))
