"""Warm pool: pre-started sandboxes per memory tier, claimed by creates of that tier.

A pooled sandbox has a running agent and an empty workspace, and no container record: its id
becomes the container's id when a create claims it. Claims pop (a sandbox is handed out once,
never returned); the refill task starts replacements one at a time, only while no API create
is waiting for the runtime, so refilling never starves requests. Pooled sandboxes are
destroyed at shutdown; after a crash the reconciler removes them as orphans. They count
against admission control like any sandbox, and the pool only refills when there is room.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from pathlib import Path

from daemon import ids
from daemon.admission import Admission
from daemon.metrics import Metrics
from sandbox.errors import SandboxError
from sandbox.runtime import Runtime
from sandbox.spec import MEMORY_TIERS, Limits, SandboxSpec

logger = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0
CLAIM_CHECK_S = 1.0


class WarmPool:
    def __init__(
        self,
        runtime: Runtime,
        sizes: dict[str, int],
        limits: Limits,
        metrics: Metrics,
        admission: Admission,
        busy: Callable[[], bool],
        trust_bundle: Callable[[], Path | None] = lambda: None,
    ) -> None:
        self._runtime = runtime
        self._admission = admission
        self._trust_bundle = trust_bundle  # known once the egress proxy has started
        self._draining = False
        self._sizes = {tier: n for tier, n in sizes.items() if n > 0}
        self._limits = limits
        self._metrics = metrics
        self._busy = busy  # True while API creates are using the runtime
        self._ready: dict[str, collections.deque[str]] = {
            t: collections.deque() for t in MEMORY_TIERS
        }
        self._wanted = asyncio.Event()
        self._wanted.set()
        for tier in MEMORY_TIERS:
            metrics.pool_depth.labels(tier).set(0)

    def depth(self, tier: str) -> int:
        return len(self._ready[tier])

    async def claim(self, tier: str) -> str | None:
        """A ready sandbox of this tier, now the caller's alone; None on a miss (and from
        the moment the pool drains)."""
        if self._draining:
            return None
        while self._ready[tier]:
            sid = self._ready[tier].popleft()
            self._changed(tier)
            try:
                async with asyncio.timeout(CLAIM_CHECK_S):
                    await self._runtime.agent(sid).ping()
            except (SandboxError, TimeoutError):
                logger.warning("pooled sandbox is dead; discarded", extra={"container_id": sid})
                await self._discard(sid)
                continue
            self._metrics.pool_claims.labels(tier, "hit").inc()
            return sid
        if tier in self._sizes:
            self._metrics.pool_claims.labels(tier, "miss").inc()
        return None

    def _changed(self, tier: str) -> None:
        self._metrics.pool_depth.labels(tier).set(len(self._ready[tier]))
        self._wanted.set()

    async def _discard(self, sid: str) -> None:
        try:
            await self._runtime.destroy(sid)
        except SandboxError as exc:
            logger.error("discarding a pooled sandbox failed", extra={"error": str(exc)})

    def _deficit(self) -> str | None:
        """A tier short of its size that admission has room for."""
        for tier, size in self._sizes.items():
            if len(self._ready[tier]) < size and self._admission.fits(MEMORY_TIERS[tier]):
                return tier
        return None

    def _short(self) -> bool:
        return any(len(self._ready[t]) < size for t, size in self._sizes.items())

    async def make_room(self, memory_bytes: int) -> None:
        """Give pooled sandboxes back, other tiers' first, until a create of this tier would
        be admitted (or the pool is empty): requests come before the pool."""
        tiers = sorted(self._ready, key=lambda t: MEMORY_TIERS[t] == memory_bytes)
        for tier in tiers:
            while self._ready[tier] and not self._admission.fits(memory_bytes):
                sid = self._ready[tier].popleft()
                self._changed(tier)
                await self._discard(sid)

    async def run(self) -> None:
        """Refill forever: one sandbox at a time, never while API creates are in flight."""
        backoff = 0.5
        while True:
            tier = self._deficit()
            if tier is None:
                if self._short():
                    # No room on the host for what is missing: wait until a sandbox goes.
                    self._admission.released.clear()
                    await self._admission.released.wait()
                else:
                    self._wanted.clear()
                    await self._wanted.wait()
                continue
            if self._busy():
                await asyncio.sleep(0.05)
                continue
            sid = ids.container_id()
            spec = SandboxSpec(
                sid, MEMORY_TIERS[tier], self._limits, trust_bundle=self._trust_bundle()
            )
            try:
                await self._runtime.create(spec)
            except SandboxError as exc:
                logger.error("pool refill failed", extra={"tier": tier, "error": str(exc)})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            backoff = 0.5
            self._ready[tier].append(sid)
            self._metrics.pool_depth.labels(tier).set(len(self._ready[tier]))

    async def drain(self) -> None:
        """Destroy every pooled sandbox (shutdown); no claim succeeds from now on."""
        self._draining = True
        for tier, queue in self._ready.items():
            while queue:
                await self._discard(queue.popleft())
            self._metrics.pool_depth.labels(tier).set(0)
