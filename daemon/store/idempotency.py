"""Responses stored under an `Idempotency-Key` (the semantics: daemon/idempotency.py)."""

from __future__ import annotations

import sqlite3

from daemon.models import StoredResponse
from daemon.store.db import Database


class IdempotencyKeys:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, owner: str, key: str, since: int) -> StoredResponse | None:
        """The response stored under the owner's key at `since` or later."""
        row = await self._db.run(
            lambda db: db.execute(
                "SELECT fingerprint, status, body FROM idempotency_keys "
                "WHERE owner = ? AND key = ? AND created_at >= ?",
                (owner, key, since),
            ).fetchone()
        )
        return StoredResponse(str(row[0]), int(row[1]), bytes(row[2])) if row else None

    async def put(
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

        await self._db.run(put)


def forget_before(db: sqlite3.Connection, before: int) -> int:
    """Drop the keys stored before `before`; how many went."""
    return db.execute("DELETE FROM idempotency_keys WHERE created_at < ?", (before,)).rowcount
