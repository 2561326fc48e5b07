"""The container aggregate: container rows, their events and their sealed secrets.

Events and secrets exist only with their container (deleted with it by ON DELETE CASCADE)
and are only ever read by its id, so they live here; the container file index, with its own
ids, cursors and reconciliation, is its own repository (daemon/store/container_files.py).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from daemon.models import ContainerRecord, EventRecord, Page, SealedSecret, Status
from daemon.store.db import Database
from daemon.store.pages import ord_key, select_page
from sandbox.spec import MEMORY_TIERS

MAX_EVENTS_PER_CONTAINER = 50
MAX_CACHED_RECORDS = 4096  # container records kept in memory (emptied when full)

_COLS = (
    "id, owner, name, created_at, last_active_at, status, memory_limit, expires_minutes, "
    "runtime, status_reason, network_policy, image"
)


def _container(row: tuple[Any, ...]) -> ContainerRecord:
    cid, owner, name, created, active, status, memory, minutes, runtime, reason, policy, image = row
    network = json.loads(policy) if policy else None
    return ContainerRecord(
        cid, owner, name, created, active, Status(status), memory, minutes, runtime, reason,
        network, image,
    )  # fmt: skip


class Containers:
    def __init__(self, db: Database) -> None:
        self._db = db
        # Container rows as last read, so the exec hot path skips the thread hop. Filled by
        # reads and dropped by every write of that row, both on the one store thread, in
        # order; a write therefore never leaves a stale entry behind.
        self._records: dict[str, ContainerRecord] = {}

    async def insert(self, rec: ContainerRecord) -> None:
        values = (
            rec.id, rec.owner, rec.name, rec.created_at, rec.last_active_at, str(rec.status),
            rec.memory_limit, rec.expires_minutes, rec.runtime, rec.status_reason,
            # json.dumps' default separators: the bytes stored before records were decoded
            None if rec.network_policy is None else json.dumps(rec.network_policy), rec.image,
        )  # fmt: skip
        await self._db.run(
            lambda db: db.execute(
                f"INSERT INTO containers ({_COLS}, ord) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (*values, ord_key(rec.id, rec.created_at)),
            )
        )

    async def get(self, cid: str) -> ContainerRecord | None:
        cached = self._records.get(cid)
        if cached is not None:
            return cached

        def read(db: sqlite3.Connection) -> ContainerRecord | None:
            row = db.execute(f"SELECT {_COLS} FROM containers WHERE id = ?", (cid,)).fetchone()
            if row is None:
                return None
            rec = _container(row)
            if len(self._records) >= MAX_CACHED_RECORDS:
                self._records.clear()
            self._records[cid] = rec
            return rec

        return await self._db.run(read)

    async def _write(self, cid: str, sql: str, params: tuple[object, ...]) -> None:
        def write(db: sqlite3.Connection) -> None:
            try:
                db.execute(sql, params)
            finally:
                self._records.pop(cid, None)

        await self._db.run(write)

    async def set_status(self, cid: str, status: Status, reason: str | None = None) -> None:
        await self._write(
            cid,
            "UPDATE containers SET status = ?, status_reason = ? WHERE id = ?",
            (str(status), reason, cid),
        )

    async def touch(self, cid: str, now: int) -> None:
        await self._write(
            cid,
            "UPDATE containers SET last_active_at = MAX(last_active_at, ?) WHERE id = ?",
            (now, cid),
        )

    async def delete(self, cid: str) -> None:
        await self._write(cid, "DELETE FROM containers WHERE id = ?", (cid,))

    async def count(self, owner: str) -> int:
        row = await self._db.run(
            lambda db: db.execute(
                "SELECT COUNT(*) FROM containers WHERE owner = ? AND status != 'expired'",
                (owner,),
            ).fetchone()
        )
        return int(row[0])

    async def with_status(self, statuses: Iterable[Status]) -> list[ContainerRecord]:
        wanted = [str(s) for s in statuses]
        marks = ",".join("?" * len(wanted))
        rows = await self._db.run(
            lambda db: db.execute(
                f"SELECT {_COLS} FROM containers WHERE status IN ({marks})", wanted
            ).fetchall()
        )
        return [_container(r) for r in rows]

    async def page(
        self, owner: str | None, name: str | None, after: str | None, limit: int, desc: bool
    ) -> Page[ContainerRecord]:
        where = ["status IN ('running', 'expired')"]
        args: list[Any] = []
        if owner is not None:
            where.append("owner = ?")
            args.append(owner)
        if name is not None:
            where.append("name = ?")
            args.append(name)
        rows = await self._db.run(
            lambda db: select_page(db, "containers", _COLS, where, args, after, limit, desc)
        )
        return Page([_container(r) for r in rows[:limit]], len(rows) > limit)

    async def count_by_status_tier(self) -> dict[tuple[str, str], int]:
        rows = await self._db.run(
            lambda db: db.execute(
                "SELECT status, memory_limit, COUNT(*) FROM containers "
                "GROUP BY status, memory_limit"
            ).fetchall()
        )
        return {(str(status), str(tier)): int(n) for status, tier, n in rows}

    async def expirable(self, now: int) -> list[ContainerRecord]:
        """Running containers whose idle deadline has passed."""
        rows = await self._db.run(
            lambda db: db.execute(
                # last_active_at is whole seconds (the activity was within the second after
                # it): +1 so that no container ever expires early.
                f"SELECT {_COLS} FROM containers WHERE status = 'running' "
                "AND last_active_at + expires_minutes * 60 + 1 <= ?",
                (now,),
            ).fetchall()
        )
        return [_container(r) for r in rows]

    # ------------------------------------------------------------------------ events

    async def add_event(self, cid: str, now: int, kind: str, detail: dict[str, Any]) -> None:
        """Append an event, keeping only the newest MAX_EVENTS_PER_CONTAINER per container."""

        def add(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO container_events (container_id, created_at, type, detail) "
                "SELECT ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM containers WHERE id = ?)",
                (cid, now, kind, json.dumps(detail, separators=(",", ":")), cid),
            )
            db.execute(
                "DELETE FROM container_events WHERE container_id = ? AND seq NOT IN "
                "(SELECT seq FROM container_events WHERE container_id = ? "
                "ORDER BY seq DESC LIMIT ?)",
                (cid, cid, MAX_EVENTS_PER_CONTAINER),
            )

        await self._db.run(add)

    async def events(self, cid: str) -> list[EventRecord]:
        rows = await self._db.run(
            lambda db: db.execute(
                "SELECT created_at, type, detail FROM container_events "
                "WHERE container_id = ? ORDER BY seq",
                (cid,),
            ).fetchall()
        )
        return [EventRecord(r[0], r[1], json.loads(r[2])) for r in rows]

    # ----------------------------------------------------------------------- secrets

    async def insert_secrets(self, cid: str, rows: list[SealedSecret]) -> None:
        await self._db.run(
            lambda db: db.executemany(
                "INSERT INTO container_secrets (container_id, name, domain, placeholder, sealed) "
                "VALUES (?,?,?,?,?)",
                [(cid, r.name, r.domain, r.placeholder, r.sealed) for r in rows],
            )
        )

    async def secrets(self, cid: str) -> list[SealedSecret]:
        rows = await self._db.run(
            lambda db: db.execute(
                "SELECT name, domain, placeholder, sealed FROM container_secrets "
                "WHERE container_id = ? ORDER BY name",
                (cid,),
            ).fetchall()
        )
        return [SealedSecret(n, d, p, bytes(s)) for n, d, p, s in rows]

    async def delete_secrets(self, cid: str) -> None:
        await self._db.run(
            lambda db: db.execute("DELETE FROM container_secrets WHERE container_id = ?", (cid,))
        )


def committed_memory(path: Path) -> int | None:
    """The memory tiers of the running containers in the database at `path`, read-only
    (`sandboxd check`, beside a running daemon); None when there is no readable database."""
    if not path.exists():
        return None
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = db.execute(
                "SELECT memory_limit, COUNT(*) FROM containers WHERE status IN (?, ?) "
                "GROUP BY memory_limit",
                (Status.RUNNING.value, Status.CREATING.value),
            ).fetchall()
        finally:
            db.close()
    except sqlite3.Error:
        return None
    return sum(MEMORY_TIERS.get(str(tier), 0) * int(count) for tier, count in rows)
