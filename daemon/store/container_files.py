"""The container file index: records of the files in a container's workspace, kept in step
with workspace listings and code cells, at most `cap` per container."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from daemon.models import FileRecord, Page
from daemon.store.db import Database
from daemon.store.pages import ord_key, select_page
from sandbox import pathnames

_COLS = "id, container_id, path, source, bytes, created_at"


def _file(row: tuple[Any, ...]) -> FileRecord:
    return FileRecord(*row)


class ContainerFiles:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def insert(self, rec: FileRecord, cap: int) -> None:
        """Record an upload (replacing a stale record of its path); at most `cap` records."""
        values = (
            rec.id, rec.container_id, rec.path, rec.source, rec.bytes, rec.created_at,
            ord_key(rec.id, rec.created_at),
        )  # fmt: skip

        def insert(db: sqlite3.Connection) -> None:
            db.execute(
                f"INSERT INTO container_files ({_COLS}, ord) VALUES (?,?,?,?,?,?,?) "
                "ON CONFLICT (container_id, path) DO UPDATE SET "
                "id = excluded.id, source = excluded.source, bytes = excluded.bytes, "
                "created_at = excluded.created_at, ord = excluded.ord",
                values,
            )
            _cap_files(db, rec.container_id, {rec.path}, cap)

        await self._db.run(insert)

    async def get(self, cid: str, fid: str) -> FileRecord | None:
        row = await self._db.run(
            lambda db: db.execute(
                f"SELECT {_COLS} FROM container_files WHERE container_id = ? AND id = ?",
                (cid, fid),
            ).fetchone()
        )
        return _file(row) if row else None

    async def delete(self, fid: str) -> None:
        await self._db.run(
            lambda db: db.execute("DELETE FROM container_files WHERE id = ?", (fid,))
        )

    async def page(self, cid: str, after: str | None, limit: int, desc: bool) -> Page[FileRecord]:
        """A page of the container's file records; `truncated` if its last listing was."""

        def run(db: sqlite3.Connection) -> tuple[list[tuple[Any, ...]], bool]:
            where = ["container_id = ?"]
            rows = select_page(db, "container_files", _COLS, where, [cid], after, limit, desc)
            flag = db.execute("SELECT files_truncated FROM containers WHERE id = ?", (cid,))
            return rows, bool((flag.fetchone() or (0,))[0])

        rows, truncated = await self._db.run(run)
        return Page([_file(r) for r in rows[:limit]], len(rows) > limit, truncated)

    async def sync(
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

        await self._db.run(sync)

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
            return _records_of(db, cid, list(changed))

        return await self._db.run(run)


def _known_files(db: sqlite3.Connection, cid: str) -> dict[str, int]:
    rows = db.execute("SELECT path, bytes FROM container_files WHERE container_id = ?", (cid,))
    return dict(rows.fetchall())


def _records_of(db: sqlite3.Connection, cid: str, paths: list[str]) -> dict[str, FileRecord]:
    """The records of these paths, by path; asked in chunks that stay below sqlite's limit
    on bound parameters."""
    out: dict[str, FileRecord] = {}
    for i in range(0, len(paths), 500):
        chunk = paths[i : i + 500]
        marks = ",".join("?" * len(chunk))
        rows = db.execute(
            f"SELECT {_COLS} FROM container_files WHERE container_id = ? AND path IN ({marks})",
            [cid, *chunk],
        ).fetchall()
        out.update((r[2], _file(r)) for r in rows)
    return out


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
            new.append((fid, cid, path, "assistant", size, now, ord_key(fid, now)))
        elif known[path] != size:
            changed.append((size, cid, path))
    db.executemany(f"INSERT INTO container_files ({_COLS}, ord) VALUES (?,?,?,?,?,?,?)", new)
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
