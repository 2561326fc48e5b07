"""Small named values of the daemon itself (e.g. the boot id its containers ran under)."""

from __future__ import annotations

from daemon.store.db import Database


class Meta:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, key: str) -> str | None:
        row = await self._db.run(
            lambda db: db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        )
        return str(row[0]) if row else None

    async def set(self, key: str, value: str) -> None:
        await self._db.run(
            lambda db: db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )
        )
