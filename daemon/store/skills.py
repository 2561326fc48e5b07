"""Skills and their immutable versions (the versions' zips are blobs: daemon/skills.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from daemon.models import Page, SkillRecord, SkillVersionRecord
from daemon.store.db import Database
from daemon.store.pages import ord_key, select_page

_VERSION_COLS = "id, skill_id, version, created_at, name, description, bytes"
# A skill shows its default version's name and description.
_SKILL_SELECT = (
    "SELECT s.id, s.owner, s.created_at, s.default_version, s.latest_version, v.name, "
    "v.description FROM skills s JOIN skill_versions v "
    "ON v.skill_id = s.id AND v.version = s.default_version"
)


class Skills:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def insert(self, sid: str, owner: str, version: SkillVersionRecord) -> None:
        def insert(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO skills (id, owner, created_at, default_version, latest_version, ord) "
                "VALUES (?,?,?,1,1,?)",
                (sid, owner, version.created_at, ord_key(sid, version.created_at)),
            )
            _insert_version(db, version)

        await self._db.run(insert)

    async def add_version(
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

        return await self._db.run(add)

    async def get(self, sid: str) -> SkillRecord | None:
        row = await self._db.run(
            lambda db: db.execute(f"{_SKILL_SELECT} WHERE s.id = ?", (sid,)).fetchone()
        )
        return SkillRecord(*row) if row else None

    async def count(self, owner: str) -> int:
        row = await self._db.run(
            lambda db: db.execute(
                "SELECT COUNT(*) FROM skills WHERE owner = ?", (owner,)
            ).fetchone()
        )
        return int(row[0])

    async def page(
        self, owner: str | None, after: str | None, limit: int, desc: bool
    ) -> Page[SkillRecord]:
        def run(db: sqlite3.Connection) -> list[tuple[Any, ...]]:
            where, args = ["1 = 1"], []
            if owner is not None:
                where.append("owner = ?")
                args.append(owner)
            ids = [r[0] for r in select_page(db, "skills", "id", where, args, after, limit, desc)]
            return [db.execute(f"{_SKILL_SELECT} WHERE s.id = ?", (i,)).fetchone() for i in ids]

        rows = await self._db.run(run)
        return Page([SkillRecord(*r) for r in rows[:limit]], len(rows) > limit)

    async def set_default_version(self, sid: str, version: int) -> bool:
        def run(db: sqlite3.Connection) -> bool:
            if not _version_exists(db, sid, version):
                return False
            db.execute("UPDATE skills SET default_version = ? WHERE id = ?", (version, sid))
            return True

        return await self._db.run(run)

    async def delete(self, sid: str) -> list[str]:
        """Delete the skill and its versions; returns the version ids (for their blobs)."""

        def run(db: sqlite3.Connection) -> list[str]:
            ids = [
                str(r[0])
                for r in db.execute("SELECT id FROM skill_versions WHERE skill_id = ?", (sid,))
            ]
            db.execute("DELETE FROM skills WHERE id = ?", (sid,))
            return ids

        return await self._db.run(run)

    async def get_version(self, sid: str, version: int) -> SkillVersionRecord | None:
        row = await self._db.run(
            lambda db: db.execute(
                f"SELECT {_VERSION_COLS} FROM skill_versions WHERE skill_id = ? AND version = ?",
                (sid, version),
            ).fetchone()
        )
        return SkillVersionRecord(*row) if row else None

    async def version_page(
        self, sid: str, after: str | None, limit: int, desc: bool
    ) -> Page[SkillVersionRecord]:
        rows = await self._db.run(
            lambda db: select_page(
                db, "skill_versions", _VERSION_COLS, ["skill_id = ?"], [sid], after, limit, desc
            )
        )
        return Page([SkillVersionRecord(*r) for r in rows[:limit]], len(rows) > limit)

    async def delete_version(self, sid: str, version: int) -> str:
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

        return await self._db.run(run)

    async def version_ids(self) -> set[str]:
        rows = await self._db.run(lambda db: db.execute("SELECT id FROM skill_versions").fetchall())
        return {str(r[0]) for r in rows}


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
            ord_key(v.id, v.created_at),
        ),
    )


def _version_exists(db: sqlite3.Connection, sid: str, version: int) -> bool:
    return (
        db.execute(
            "SELECT 1 FROM skill_versions WHERE skill_id = ? AND version = ?", (sid, version)
        ).fetchone()
        is not None
    )
