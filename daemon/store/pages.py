"""List pages in creation order, shared by every listed table.

Each listed row has an `ord`: its id's time key (daemon/ids.py), or for an id made before ids
carried time, its creation second and insertion order (schema 5). A cursor `after=<id>` need
not name a row that still exists: a deleted old id's place is kept in `cursor_tombstones`,
and a time-keyed id is placed by its time.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from daemon import ids
from daemon.errors import InvalidRequest


def ord_key(object_id: str, created_at: int) -> str:
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


def select_page(
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


def forget_places(db: sqlite3.Connection, before: int) -> int:
    """Drop the kept places of old ids deleted before `before`; how many went."""
    return db.execute("DELETE FROM cursor_tombstones WHERE deleted_at < ?", (before,)).rowcount
