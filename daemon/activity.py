"""Operations in progress per container (exec, code, streams).

A container with an open operation is active: the reaper never expires it, and the end of
the operation counts as activity (its `last_active_at` moves to that moment).
"""

from __future__ import annotations

import collections


class OpenOperations:
    def __init__(self) -> None:
        self._open: collections.Counter[str] = collections.Counter()

    def busy(self, cid: str) -> bool:
        return self._open[cid] > 0

    def enter(self, cid: str) -> None:
        self._open[cid] += 1

    def leave(self, cid: str) -> None:
        self._open[cid] -= 1
        if self._open[cid] <= 0:
            del self._open[cid]
