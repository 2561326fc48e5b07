"""Durable state in SQLite (WAL), on one dedicated thread; the only module that imports sqlite3."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from daemon import ids
from daemon.errors import InvalidRequest, StorageFull
from daemon.models import (
    ContainerRecord,
    EventRecord,
    FileRecord,
    Page,
    SealedSecret,
    SkillRecord,
    SkillVersionRecord,
    Status,
    StoredResponse,
    UserFileRecord,
)
from sandbox import pathnames
from sandbox.spec import MEMORY_TIERS

SCHEMA_VERSION = 5
MAX_EVENTS_PER_CONTAINER = 50
MAX_CACHED_RECORDS = 4096  # container records kept in memory (emptied when full)
MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE containers (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        owner TEXT NOT NULL,
        name TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        last_active_at INTEGER NOT NULL,
        status TEXT NOT NULL,
        memory_limit TEXT NOT NULL,
        expires_minutes INTEGER NOT NULL,
        runtime TEXT NOT NULL,
        status_reason TEXT
    );
    CREATE INDEX containers_owner ON containers (owner, seq);
    CREATE TABLE container_files (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        container_id TEXT NOT NULL REFERENCES containers (id) ON DELETE CASCADE,
        path TEXT NOT NULL,
        source TEXT NOT NULL,
        bytes INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        UNIQUE (container_id, path)
    );
    """,
    2: """
    CREATE TABLE container_events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        container_id TEXT NOT NULL REFERENCES containers (id) ON DELETE CASCADE,
        created_at INTEGER NOT NULL,
        type TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    CREATE INDEX container_events_container ON container_events (container_id, seq);
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    3: """
    CREATE TABLE files (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        owner TEXT NOT NULL,
        filename TEXT NOT NULL,
        purpose TEXT NOT NULL,
        bytes INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER
    );
    CREATE INDEX files_owner ON files (owner, seq);
    CREATE INDEX files_expires ON files (expires_at) WHERE expires_at IS NOT NULL;
    CREATE TABLE skills (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        owner TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        default_version INTEGER NOT NULL,
        latest_version INTEGER NOT NULL
    );
    CREATE INDEX skills_owner ON skills (owner, seq);
    CREATE TABLE skill_versions (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        skill_id TEXT NOT NULL REFERENCES skills (id) ON DELETE CASCADE,
        version INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        name TEXT NOT NULL,
        description TEXT NOT NULL,
        bytes INTEGER NOT NULL,
        UNIQUE (skill_id, version)
    );
    """,
    4: """
    ALTER TABLE containers ADD COLUMN network_policy TEXT;
    CREATE TABLE container_secrets (
        container_id TEXT NOT NULL REFERENCES containers (id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        domain TEXT NOT NULL,
        placeholder TEXT NOT NULL,
        sealed BLOB NOT NULL,
        PRIMARY KEY (container_id, name)
    );
    """,
    5: """
    -- Lists are ordered by `ord`: the id's time key, then the id (daemon/ids.py). Rows made
    -- before ids were time-ordered get their creation second and insertion order instead.
    ALTER TABLE containers ADD COLUMN ord TEXT NOT NULL DEFAULT '';
    UPDATE containers SET ord = printf('%08x%08x', created_at, seq) || id;
    DROP INDEX containers_owner;
    CREATE UNIQUE INDEX containers_ord ON containers (ord);
    CREATE INDEX containers_owner_ord ON containers (owner, ord);
    ALTER TABLE container_files ADD COLUMN ord TEXT NOT NULL DEFAULT '';
    UPDATE container_files SET ord = printf('%08x%08x', created_at, seq) || id;
    CREATE INDEX container_files_ord ON container_files (container_id, ord);
    ALTER TABLE files ADD COLUMN ord TEXT NOT NULL DEFAULT '';
    UPDATE files SET ord = printf('%08x%08x', created_at, seq) || id;
    DROP INDEX files_owner;
    CREATE UNIQUE INDEX files_ord ON files (ord);
    CREATE INDEX files_owner_ord ON files (owner, ord);
    ALTER TABLE skills ADD COLUMN ord TEXT NOT NULL DEFAULT '';
    UPDATE skills SET ord = printf('%08x%08x', created_at, seq) || id;
    DROP INDEX skills_owner;
    CREATE UNIQUE INDEX skills_ord ON skills (ord);
    CREATE INDEX skills_owner_ord ON skills (owner, ord);
    ALTER TABLE skill_versions ADD COLUMN ord TEXT NOT NULL DEFAULT '';
    UPDATE skill_versions SET ord = printf('%08x%08x', created_at, seq) || id;
    CREATE INDEX skill_versions_ord ON skill_versions (skill_id, ord);
    -- Such an old id carries no time: when its row goes, its place is kept here (swept after
    -- a day), so a cursor naming it still continues where it stood.
    CREATE TABLE cursor_tombstones (
        id TEXT PRIMARY KEY,
        ord TEXT NOT NULL,
        deleted_at INTEGER NOT NULL
    );
    CREATE INDEX cursor_tombstones_age ON cursor_tombstones (deleted_at);
    CREATE TRIGGER containers_tombstone AFTER DELETE ON containers
    WHEN substr(old.ord, 1, 16) <> substr(old.id, 6, 16) BEGIN
        INSERT OR REPLACE INTO cursor_tombstones (id, ord, deleted_at)
        VALUES (old.id, old.ord, CAST(strftime('%s', 'now') AS INTEGER));
    END;
    CREATE TRIGGER container_files_tombstone AFTER DELETE ON container_files
    WHEN substr(old.ord, 1, 16) <> substr(old.id, 7, 16) BEGIN
        INSERT OR REPLACE INTO cursor_tombstones (id, ord, deleted_at)
        VALUES (old.id, old.ord, CAST(strftime('%s', 'now') AS INTEGER));
    END;
    CREATE TRIGGER files_tombstone AFTER DELETE ON files
    WHEN substr(old.ord, 1, 16) <> substr(old.id, 6, 16) BEGIN
        INSERT OR REPLACE INTO cursor_tombstones (id, ord, deleted_at)
        VALUES (old.id, old.ord, CAST(strftime('%s', 'now') AS INTEGER));
    END;
    CREATE TRIGGER skills_tombstone AFTER DELETE ON skills
    WHEN substr(old.ord, 1, 16) <> substr(old.id, 7, 16) BEGIN
        INSERT OR REPLACE INTO cursor_tombstones (id, ord, deleted_at)
        VALUES (old.id, old.ord, CAST(strftime('%s', 'now') AS INTEGER));
    END;
    CREATE TRIGGER skill_versions_tombstone AFTER DELETE ON skill_versions
    WHEN substr(old.ord, 1, 16) <> substr(old.id, 10, 16) BEGIN
        INSERT OR REPLACE INTO cursor_tombstones (id, ord, deleted_at)
        VALUES (old.id, old.ord, CAST(strftime('%s', 'now') AS INTEGER));
    END;
    -- Set by a workspace listing that saw only part of the files (the list says so).
    ALTER TABLE containers ADD COLUMN files_truncated INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE idempotency_keys (
        owner TEXT NOT NULL,
        key TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        status INTEGER NOT NULL,
        body BLOB NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (owner, key)
    );
    CREATE INDEX idempotency_keys_age ON idempotency_keys (created_at);
    CREATE INDEX idempotency_keys_owner_age ON idempotency_keys (owner, created_at);
    CREATE TRIGGER container_files_renumbered AFTER UPDATE OF id ON container_files
    WHEN old.id <> new.id AND substr(old.ord, 1, 16) <> substr(old.id, 7, 16) BEGIN
        INSERT OR REPLACE INTO cursor_tombstones (id, ord, deleted_at)
        VALUES (old.id, old.ord, CAST(strftime('%s', 'now') AS INTEGER));
    END;
    """,
}

_CONTAINER_COLS = (
    "id, owner, name, created_at, last_active_at, status, memory_limit, expires_minutes, "
    "runtime, status_reason, network_policy"
)
_FILE_COLS = "id, container_id, path, source, bytes, created_at"
_UPLOAD_COLS = "id, owner, filename, purpose, bytes, created_at, expires_at"
_LIVE = "(expires_at IS NULL OR expires_at > ?)"
_VERSION_COLS = "id, skill_id, version, created_at, name, description, bytes"
_SKILL_SELECT = (
    "SELECT s.id, s.owner, s.created_at, s.default_version, s.latest_version, v.name, "
    "v.description FROM skills s JOIN skill_versions v "
    "ON v.skill_id = s.id AND v.version = s.default_version"
)


def _container(row: tuple[Any, ...]) -> ContainerRecord:
    cid, owner, name, created, active, status, memory, minutes, runtime, reason, policy = row
    return ContainerRecord(
        cid, owner, name, created, active, Status(status), memory, minutes, runtime, reason, policy
    )


def _file(row: tuple[Any, ...]) -> FileRecord:
    return FileRecord(*row)


class StoreUnavailable(Exception):
    """The state database cannot be opened (corrupt, locked by another process, unreadable).
    Nothing is changed: the file is left for the operator (or a later start) as it is."""


class Store:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="store")
        self._db: sqlite3.Connection | None = None
        # Container rows as last read, so the exec hot path skips the thread hop. Filled by
        # reads and dropped by every write of that row, both on the one store thread, in
        # order; a write therefore never leaves a stale entry behind.
        self._records: dict[str, ContainerRecord] = {}

    async def _run[T](self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            assert self._db is not None, "store is closed"
            try:
                with self._db:
                    return fn(self._db)
            except sqlite3.OperationalError as exc:
                if "disk is full" in str(exc) or "disk I/O error" in str(exc):
                    raise StorageFull("The daemon's state disk is full.") from exc
                raise

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def open(self) -> None:
        def do_open() -> sqlite3.Connection:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600))  # WAL/SHM inherit it
            db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            db.isolation_level = "DEFERRED"
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("PRAGMA busy_timeout=5000")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                db.close()
                raise StoreUnavailable(
                    f"{self._path}: schema {version} is newer than this sandboxd's "
                    f"({SCHEMA_VERSION}); run the sandboxd that wrote it"
                )
            for v in range(version + 1, SCHEMA_VERSION + 1):
                with db:
                    db.executescript(f"BEGIN;{MIGRATIONS[v]};PRAGMA user_version={v};COMMIT;")
            return db

        try:
            self._db = await asyncio.get_running_loop().run_in_executor(self._executor, do_open)
        except sqlite3.DatabaseError as exc:  # corrupt ("not a database"), locked, unreadable
            raise StoreUnavailable(f"{self._path}: {exc}") from exc

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await asyncio.get_running_loop().run_in_executor(self._executor, db.close)
        self._executor.shutdown(wait=True)

    # -------------------------------------------------------------------- containers

    async def insert_container(self, rec: ContainerRecord) -> None:
        values = (
            rec.id, rec.owner, rec.name, rec.created_at, rec.last_active_at, str(rec.status),
            rec.memory_limit, rec.expires_minutes, rec.runtime, rec.status_reason,
            rec.network_policy,
        )  # fmt: skip
        await self._run(
            lambda db: db.execute(
                f"INSERT INTO containers ({_CONTAINER_COLS}, ord) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (*values, _ord(rec.id, rec.created_at)),
            )
        )

    async def insert_secrets(self, cid: str, rows: list[SealedSecret]) -> None:
        await self._run(
            lambda db: db.executemany(
                "INSERT INTO container_secrets (container_id, name, domain, placeholder, sealed) "
                "VALUES (?,?,?,?,?)",
                [(cid, r.name, r.domain, r.placeholder, r.sealed) for r in rows],
            )
        )

    async def secrets_of(self, cid: str) -> list[SealedSecret]:
        rows = await self._run(
            lambda db: db.execute(
                "SELECT name, domain, placeholder, sealed FROM container_secrets "
                "WHERE container_id = ? ORDER BY name",
                (cid,),
            ).fetchall()
        )
        return [SealedSecret(n, d, p, bytes(s)) for n, d, p, s in rows]

    async def delete_secrets(self, cid: str) -> None:
        await self._run(
            lambda db: db.execute("DELETE FROM container_secrets WHERE container_id = ?", (cid,))
        )

    async def get_container(self, cid: str) -> ContainerRecord | None:
        cached = self._records.get(cid)
        if cached is not None:
            return cached

        def read(db: sqlite3.Connection) -> ContainerRecord | None:
            row = db.execute(
                f"SELECT {_CONTAINER_COLS} FROM containers WHERE id = ?", (cid,)
            ).fetchone()
            if row is None:
                return None
            rec = _container(row)
            if len(self._records) >= MAX_CACHED_RECORDS:
                self._records.clear()
            self._records[cid] = rec
            return rec

        return await self._run(read)

    async def _write_container(self, cid: str, sql: str, params: tuple[object, ...]) -> None:
        def write(db: sqlite3.Connection) -> None:
            try:
                db.execute(sql, params)
            finally:
                self._records.pop(cid, None)

        await self._run(write)

    async def set_status(self, cid: str, status: Status, reason: str | None = None) -> None:
        await self._write_container(
            cid,
            "UPDATE containers SET status = ?, status_reason = ? WHERE id = ?",
            (str(status), reason, cid),
        )

    async def touch(self, cid: str, now: int) -> None:
        await self._write_container(
            cid,
            "UPDATE containers SET last_active_at = MAX(last_active_at, ?) WHERE id = ?",
            (now, cid),
        )

    async def delete_container(self, cid: str) -> None:
        await self._write_container(cid, "DELETE FROM containers WHERE id = ?", (cid,))

    async def count_containers(self, owner: str) -> int:
        row = await self._run(
            lambda db: db.execute(
                "SELECT COUNT(*) FROM containers WHERE owner = ? AND status != 'expired'",
                (owner,),
            ).fetchone()
        )
        return int(row[0])

    async def containers_with_status(self, statuses: Iterable[Status]) -> list[ContainerRecord]:
        wanted = [str(s) for s in statuses]
        marks = ",".join("?" * len(wanted))
        rows = await self._run(
            lambda db: db.execute(
                f"SELECT {_CONTAINER_COLS} FROM containers WHERE status IN ({marks})", wanted
            ).fetchall()
        )
        return [_container(r) for r in rows]

    async def list_containers(
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
        rows = await self._run(
            lambda db: _page(db, "containers", _CONTAINER_COLS, where, args, after, limit, desc)
        )
        return Page([_container(r) for r in rows[:limit]], len(rows) > limit)

    async def count_by_status_tier(self) -> dict[tuple[str, str], int]:
        rows = await self._run(
            lambda db: db.execute(
                "SELECT status, memory_limit, COUNT(*) FROM containers "
                "GROUP BY status, memory_limit"
            ).fetchall()
        )
        return {(str(status), str(tier)): int(n) for status, tier, n in rows}

    async def expirable(self, now: int) -> list[ContainerRecord]:
        """Running containers whose idle deadline has passed."""
        rows = await self._run(
            lambda db: db.execute(
                # last_active_at is whole seconds (the activity was within the second after
                # it): +1 so that no container ever expires early.
                f"SELECT {_CONTAINER_COLS} FROM containers WHERE status = 'running' "
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

        await self._run(add)

    async def events(self, cid: str) -> list[EventRecord]:
        rows = await self._run(
            lambda db: db.execute(
                "SELECT created_at, type, detail FROM container_events "
                "WHERE container_id = ? ORDER BY seq",
                (cid,),
            ).fetchall()
        )
        return [EventRecord(r[0], r[1], json.loads(r[2])) for r in rows]

    async def get_meta(self, key: str) -> str | None:
        row = await self._run(
            lambda db: db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        )
        return str(row[0]) if row else None

    async def set_meta(self, key: str, value: str) -> None:
        await self._run(
            lambda db: db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )
        )

    # ------------------------------------------------------------------------- files

    async def insert_file(self, rec: FileRecord, cap: int) -> None:
        """Record an upload (replacing a stale record of its path); at most `cap` records."""
        values = (
            rec.id, rec.container_id, rec.path, rec.source, rec.bytes, rec.created_at,
            _ord(rec.id, rec.created_at),
        )  # fmt: skip

        def insert(db: sqlite3.Connection) -> None:
            db.execute(
                f"INSERT INTO container_files ({_FILE_COLS}, ord) VALUES (?,?,?,?,?,?,?) "
                "ON CONFLICT (container_id, path) DO UPDATE SET "
                "id = excluded.id, source = excluded.source, bytes = excluded.bytes, "
                "created_at = excluded.created_at, ord = excluded.ord",
                values,
            )
            _cap_files(db, rec.container_id, {rec.path}, cap)

        await self._run(insert)

    async def get_file(self, cid: str, fid: str) -> FileRecord | None:
        row = await self._run(
            lambda db: db.execute(
                f"SELECT {_FILE_COLS} FROM container_files WHERE container_id = ? AND id = ?",
                (cid, fid),
            ).fetchone()
        )
        return _file(row) if row else None

    async def delete_file(self, fid: str) -> None:
        await self._run(lambda db: db.execute("DELETE FROM container_files WHERE id = ?", (fid,)))

    async def list_files(
        self, cid: str, after: str | None, limit: int, desc: bool
    ) -> Page[FileRecord]:
        """A page of the container's file records; `truncated` if its last listing was."""

        def run(db: sqlite3.Connection) -> tuple[list[tuple[Any, ...]], bool]:
            where = ["container_id = ?"]
            rows = _page(db, "container_files", _FILE_COLS, where, [cid], after, limit, desc)
            flag = db.execute("SELECT files_truncated FROM containers WHERE id = ?", (cid,))
            return rows, bool((flag.fetchone() or (0,))[0])

        rows, truncated = await self._run(run)
        return Page([_file(r) for r in rows[:limit]], len(rows) > limit, truncated)

    async def sync_files(
        self,
        cid: str,
        found: dict[str, int],
        upto: bytes | None,
        now: int,
        new_id: Callable[[], str],
        cap: int,
    ) -> None:
        """Reconcile records with a workspace listing: new paths become `assistant` files,
        sizes are refreshed, and records of paths the listing covered but did not find are
        dropped: every path if it was complete (`upto` None), else those up to `upto` (the raw
        bytes of the last path of a listing in byte order). At most `cap` records stay."""

        def sync(db: sqlite3.Connection) -> None:
            known = _known_files(db, cid)
            _record_found(db, cid, found, known, now, new_id)
            gone = [p for p in known if p not in found and (upto is None or _raw(p) <= upto)]
            _forget_files(db, cid, gone)
            _cap_files(db, cid, set(found), cap)
            db.execute(
                "UPDATE containers SET files_truncated = ? WHERE id = ?", (upto is not None, cid)
            )

        await self._run(sync)

    async def record_changes(
        self,
        cid: str,
        changed: dict[str, int],
        removed: list[str],
        now: int,
        new_id: Callable[[], str],
        cap: int,
    ) -> dict[str, FileRecord]:
        """What a code cell wrote and removed, like a listing of just those paths; returns the
        records of the written paths (ids kept for paths already known)."""

        def run(db: sqlite3.Connection) -> dict[str, FileRecord]:
            known = _known_files(db, cid)
            _record_found(db, cid, changed, known, now, new_id)
            _forget_files(db, cid, [p for p in removed if p not in changed])
            _cap_files(db, cid, set(changed), cap)
            out: dict[str, FileRecord] = {}
            paths = list(changed)
            for i in range(0, len(paths), 500):
                chunk = paths[i : i + 500]
                marks = ",".join("?" * len(chunk))
                rows = db.execute(
                    f"SELECT {_FILE_COLS} FROM container_files "
                    f"WHERE container_id = ? AND path IN ({marks})",
                    [cid, *chunk],
                ).fetchall()
                out.update((r[2], _file(r)) for r in rows)
            return out

        return await self._run(run)

    # --------------------------------------------------------- uploaded files (/v1/files)

    async def insert_user_file(self, rec: UserFileRecord) -> None:
        values = (
            rec.id, rec.owner, rec.filename, rec.purpose, rec.bytes, rec.created_at,
            rec.expires_at,
        )  # fmt: skip
        await self._run(
            lambda db: db.execute(
                f"INSERT INTO files ({_UPLOAD_COLS}, ord) VALUES (?,?,?,?,?,?,?,?)",
                (*values, _ord(rec.id, rec.created_at)),
            )
        )

    async def get_user_file(self, fid: str, now: int) -> UserFileRecord | None:
        """The file, unless it has expired (an expired file is gone even before the sweep)."""
        row = await self._run(
            lambda db: db.execute(
                f"SELECT {_UPLOAD_COLS} FROM files WHERE id = ? AND {_LIVE}", (fid, now)
            ).fetchone()
        )
        return UserFileRecord(*row) if row else None

    async def list_user_files(
        self,
        owner: str | None,
        purpose: str | None,
        now: int,
        after: str | None,
        limit: int,
        desc: bool,
    ) -> Page[UserFileRecord]:
        where: list[str] = [_LIVE]
        args: list[Any] = [now]
        if owner is not None:
            where.append("owner = ?")
            args.append(owner)
        if purpose is not None:
            where.append("purpose = ?")
            args.append(purpose)
        rows = await self._run(
            lambda db: _page(db, "files", _UPLOAD_COLS, where, args, after, limit, desc)
        )
        return Page([UserFileRecord(*r) for r in rows[:limit]], len(rows) > limit)

    async def user_file_usage(self, owner: str, now: int) -> tuple[int, int]:
        """(live files, their total bytes) of one owner."""
        row = await self._run(
            lambda db: db.execute(
                f"SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM files WHERE owner = ? AND {_LIVE}",
                (owner, now),
            ).fetchone()
        )
        return int(row[0]), int(row[1])

    async def delete_user_file(self, fid: str) -> None:
        await self._run(lambda db: db.execute("DELETE FROM files WHERE id = ?", (fid,)))

    async def expired_user_files(self, now: int, limit: int) -> list[str]:
        rows = await self._run(
            lambda db: db.execute(
                "SELECT id FROM files WHERE expires_at IS NOT NULL AND expires_at <= ? LIMIT ?",
                (now, limit),
            ).fetchall()
        )
        return [str(r[0]) for r in rows]

    async def user_file_ids(self) -> set[str]:
        rows = await self._run(lambda db: db.execute("SELECT id FROM files").fetchall())
        return {str(r[0]) for r in rows}

    # ------------------------------------------------------------------------ skills

    async def insert_skill(self, sid: str, owner: str, version: SkillVersionRecord) -> None:
        def insert(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO skills (id, owner, created_at, default_version, latest_version, ord) "
                "VALUES (?,?,?,1,1,?)",
                (sid, owner, version.created_at, _ord(sid, version.created_at)),
            )
            _insert_version(db, version)

        await self._run(insert)

    async def add_skill_version(
        self, sid: str, new: Callable[[int], SkillVersionRecord], make_default: bool
    ) -> SkillVersionRecord | None:
        """Insert the next version number (None if the skill is gone)."""

        def add(db: sqlite3.Connection) -> SkillVersionRecord | None:
            row = db.execute("SELECT latest_version FROM skills WHERE id = ?", (sid,)).fetchone()
            if row is None:
                return None
            rec = new(int(row[0]) + 1)
            _insert_version(db, rec)
            db.execute("UPDATE skills SET latest_version = ? WHERE id = ?", (rec.version, sid))
            if make_default:
                db.execute("UPDATE skills SET default_version = ? WHERE id = ?", (rec.version, sid))
            return rec

        return await self._run(add)

    async def get_skill(self, sid: str) -> SkillRecord | None:
        row = await self._run(
            lambda db: db.execute(f"{_SKILL_SELECT} WHERE s.id = ?", (sid,)).fetchone()
        )
        return SkillRecord(*row) if row else None

    async def count_skills(self, owner: str) -> int:
        row = await self._run(
            lambda db: db.execute(
                "SELECT COUNT(*) FROM skills WHERE owner = ?", (owner,)
            ).fetchone()
        )
        return int(row[0])

    async def list_skills(
        self, owner: str | None, after: str | None, limit: int, desc: bool
    ) -> Page[SkillRecord]:
        def run(db: sqlite3.Connection) -> list[tuple[Any, ...]]:
            where, args = ["1 = 1"], []
            if owner is not None:
                where.append("owner = ?")
                args.append(owner)
            ids = [r[0] for r in _page(db, "skills", "id", where, args, after, limit, desc)]
            return [db.execute(f"{_SKILL_SELECT} WHERE s.id = ?", (i,)).fetchone() for i in ids]

        rows = await self._run(run)
        return Page([SkillRecord(*r) for r in rows[:limit]], len(rows) > limit)

    async def set_default_version(self, sid: str, version: int) -> bool:
        def run(db: sqlite3.Connection) -> bool:
            if not _version_exists(db, sid, version):
                return False
            db.execute("UPDATE skills SET default_version = ? WHERE id = ?", (version, sid))
            return True

        return await self._run(run)

    async def delete_skill(self, sid: str) -> list[str]:
        """Delete the skill and its versions; returns the version ids (for their blobs)."""

        def run(db: sqlite3.Connection) -> list[str]:
            ids = [
                str(r[0])
                for r in db.execute("SELECT id FROM skill_versions WHERE skill_id = ?", (sid,))
            ]
            db.execute("DELETE FROM skills WHERE id = ?", (sid,))
            return ids

        return await self._run(run)

    async def get_skill_version(self, sid: str, version: int) -> SkillVersionRecord | None:
        row = await self._run(
            lambda db: db.execute(
                f"SELECT {_VERSION_COLS} FROM skill_versions WHERE skill_id = ? AND version = ?",
                (sid, version),
            ).fetchone()
        )
        return SkillVersionRecord(*row) if row else None

    async def list_skill_versions(
        self, sid: str, after: str | None, limit: int, desc: bool
    ) -> Page[SkillVersionRecord]:
        rows = await self._run(
            lambda db: _page(
                db, "skill_versions", _VERSION_COLS, ["skill_id = ?"], [sid], after, limit, desc
            )
        )
        return Page([SkillVersionRecord(*r) for r in rows[:limit]], len(rows) > limit)

    async def delete_skill_version(self, sid: str, version: int) -> str:
        """'deleted', 'skill_deleted' (it was the last one), 'is_default' or 'missing'."""

        def run(db: sqlite3.Connection) -> str:
            row = db.execute("SELECT default_version FROM skills WHERE id = ?", (sid,)).fetchone()
            if row is None or not _version_exists(db, sid, version):
                return "missing"
            (count,) = db.execute(
                "SELECT COUNT(*) FROM skill_versions WHERE skill_id = ?", (sid,)
            ).fetchone()
            if count == 1:
                db.execute("DELETE FROM skills WHERE id = ?", (sid,))
                return "skill_deleted"
            if int(row[0]) == version:
                return "is_default"
            db.execute(
                "DELETE FROM skill_versions WHERE skill_id = ? AND version = ?", (sid, version)
            )
            return "deleted"

        return await self._run(run)

    async def skill_version_ids(self) -> set[str]:
        rows = await self._run(lambda db: db.execute("SELECT id FROM skill_versions").fetchall())
        return {str(r[0]) for r in rows}

    # ------------------------------------------------------------------- idempotency

    async def stored_response(self, owner: str, key: str, since: int) -> StoredResponse | None:
        row = await self._run(
            lambda db: db.execute(
                "SELECT fingerprint, status, body FROM idempotency_keys "
                "WHERE owner = ? AND key = ? AND created_at >= ?",
                (owner, key, since),
            ).fetchone()
        )
        return StoredResponse(str(row[0]), int(row[1]), bytes(row[2])) if row else None

    async def store_response(
        self, owner: str, key: str, response: StoredResponse, now: int, keep: int
    ) -> None:
        """Remember a response; beyond `keep` keys of this owner, the oldest are forgotten."""

        def put(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT OR REPLACE INTO idempotency_keys "
                "(owner, key, fingerprint, status, body, created_at) VALUES (?,?,?,?,?,?)",
                (owner, key, response.fingerprint, response.status, response.body, now),
            )
            db.execute(
                "DELETE FROM idempotency_keys WHERE owner = ? AND rowid IN (SELECT rowid FROM "
                "idempotency_keys WHERE owner = ? ORDER BY created_at DESC LIMIT -1 OFFSET ?)",
                (owner, owner, keep),
            )

        await self._run(put)

    async def sweep(self, before: int) -> tuple[int, int]:
        """Forget idempotency keys and deleted old ids' places older than `before`."""

        def run(db: sqlite3.Connection) -> tuple[int, int]:
            keys = db.execute("DELETE FROM idempotency_keys WHERE created_at < ?", (before,))
            places = db.execute("DELETE FROM cursor_tombstones WHERE deleted_at < ?", (before,))
            return keys.rowcount, places.rowcount

        return await self._run(run)


def _known_files(db: sqlite3.Connection, cid: str) -> dict[str, int]:
    rows = db.execute("SELECT path, bytes FROM container_files WHERE container_id = ?", (cid,))
    return dict(rows.fetchall())


def _record_found(
    db: sqlite3.Connection,
    cid: str,
    found: dict[str, int],
    known: dict[str, int],
    now: int,
    new_id: Callable[[], str],
) -> None:
    new, changed = [], []
    for path, size in found.items():
        if path not in known:
            fid = new_id()
            new.append((fid, cid, path, "assistant", size, now, _ord(fid, now)))
        elif known[path] != size:
            changed.append((size, cid, path))
    db.executemany(f"INSERT INTO container_files ({_FILE_COLS}, ord) VALUES (?,?,?,?,?,?,?)", new)
    db.executemany(
        "UPDATE container_files SET bytes = ? WHERE container_id = ? AND path = ?", changed
    )


def _forget_files(db: sqlite3.Connection, cid: str, paths: list[str]) -> None:
    db.executemany(
        "DELETE FROM container_files WHERE container_id = ? AND path = ?",
        [(cid, p) for p in paths],
    )


def _cap_files(db: sqlite3.Connection, cid: str, keep: set[str], cap: int) -> None:
    """At most `cap` records per container: beyond it, those with the greatest paths (byte
    order) go first, as a listing cut short would not see them either; `keep` stays."""
    (count,) = db.execute(
        "SELECT COUNT(*) FROM container_files WHERE container_id = ?", (cid,)
    ).fetchone()
    if count <= cap:
        return
    rows = db.execute("SELECT path FROM container_files WHERE container_id = ?", (cid,))
    others = sorted((p for (p,) in rows.fetchall() if p not in keep), key=_raw, reverse=True)
    _forget_files(db, cid, others[: count - cap])


def _raw(path: str) -> bytes:
    """A container file path's bytes (paths are stored in API form: sandbox/pathnames.py)."""
    return pathnames.raw(path)


def _insert_version(db: sqlite3.Connection, v: SkillVersionRecord) -> None:
    db.execute(
        f"INSERT INTO skill_versions ({_VERSION_COLS}, ord) VALUES (?,?,?,?,?,?,?,?)",
        (
            v.id,
            v.skill_id,
            v.version,
            v.created_at,
            v.name,
            v.description,
            v.bytes,
            _ord(v.id, v.created_at),
        ),
    )


def _version_exists(db: sqlite3.Connection, sid: str, version: int) -> bool:
    return (
        db.execute(
            "SELECT 1 FROM skill_versions WHERE skill_id = ? AND version = ?", (sid, version)
        ).fetchone()
        is not None
    )


def _ord(object_id: str, created_at: int) -> str:
    """A row's place in its list: its id's (daemon/ids.py), or for an id without a time key,
    its creation second."""
    return ids.sort_key(object_id) or f"{created_at:08x}00000000{object_id}"


def _position(db: sqlite3.Connection, table: str, after: str) -> str:
    """Where the cursor `after` stands: its row's place; a deleted old id's kept place; or the
    time in the id (a deleted or never-made one). 400 if it has none of these."""
    row = db.execute(f"SELECT ord FROM {table} WHERE id = ?", (after,)).fetchone()
    if row is None:
        row = db.execute("SELECT ord FROM cursor_tombstones WHERE id = ?", (after,)).fetchone()
    if row is not None:
        return str(row[0])
    key = ids.sort_key(after)
    if key is None:
        raise InvalidRequest(
            f"Invalid value for 'after': {after[:64]!r} is not an id of this list.",
            param="after",
        )
    return key


def _page(
    db: sqlite3.Connection,
    table: str,
    cols: str,
    where: list[str],
    args: list[Any],
    after: str | None,
    limit: int,
    desc: bool,
) -> list[tuple[Any, ...]]:
    """One page (+1 row to tell has_more) in creation order; `after` is an object id, which
    need not exist any more (see _position)."""
    where, args = list(where), list(args)
    if after is not None:
        where.append("ord < ?" if desc else "ord > ?")
        args.append(_position(db, table, after))
    order = "DESC" if desc else "ASC"
    sql = f"SELECT {cols} FROM {table} WHERE {' AND '.join(where)} ORDER BY ord {order} LIMIT ?"
    return db.execute(sql, [*args, limit + 1]).fetchall()


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
