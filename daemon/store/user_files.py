"""Records of the files uploaded through /v1/files (their bytes are blobs: daemon/user_files.py)."""

from __future__ import annotations

from typing import Any

from daemon.models import Page, UserFileRecord
from daemon.store.db import Database
from daemon.store.pages import ord_key, select_page

_COLS = "id, owner, filename, purpose, bytes, created_at, expires_at"
_LIVE = "(expires_at IS NULL OR expires_at > ?)"


class UserFiles:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def insert(self, rec: UserFileRecord) -> None:
        values = (
            rec.id, rec.owner, rec.filename, rec.purpose, rec.bytes, rec.created_at,
            rec.expires_at,
        )  # fmt: skip
        await self._db.run(
            lambda db: db.execute(
                f"INSERT INTO files ({_COLS}, ord) VALUES (?,?,?,?,?,?,?,?)",
                (*values, ord_key(rec.id, rec.created_at)),
            )
        )

    async def get(self, fid: str, now: int) -> UserFileRecord | None:
        """The file, unless it has expired (an expired file is gone even before the sweep)."""
        row = await self._db.run(
            lambda db: db.execute(
                f"SELECT {_COLS} FROM files WHERE id = ? AND {_LIVE}", (fid, now)
            ).fetchone()
        )
        return UserFileRecord(*row) if row else None

    async def page(
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
        rows = await self._db.run(
            lambda db: select_page(db, "files", _COLS, where, args, after, limit, desc)
        )
        return Page([UserFileRecord(*r) for r in rows[:limit]], len(rows) > limit)

    async def usage(self, owner: str, now: int) -> tuple[int, int]:
        """(live files, their total bytes) of one owner."""
        row = await self._db.run(
            lambda db: db.execute(
                f"SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM files WHERE owner = ? AND {_LIVE}",
                (owner, now),
            ).fetchone()
        )
        return int(row[0]), int(row[1])

    async def delete(self, fid: str) -> None:
        await self._db.run(lambda db: db.execute("DELETE FROM files WHERE id = ?", (fid,)))

    async def expired(self, now: int, limit: int) -> list[str]:
        rows = await self._db.run(
            lambda db: db.execute(
                "SELECT id FROM files WHERE expires_at IS NOT NULL AND expires_at <= ? LIMIT ?",
                (now, limit),
            ).fetchall()
        )
        return [str(r[0]) for r in rows]

    async def ids(self) -> set[str]:
        rows = await self._db.run(lambda db: db.execute("SELECT id FROM files").fetchall())
        return {str(r[0]) for r in rows}
