"""Warm pool: pre-started sandboxes per (image, memory tier), claimed by creates of that pair.

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


Slot = tuple[str, str]  # (image, memory tier)


class WarmPool:
    def __init__(
        self,
        runtime: Runtime,
        sizes: dict[Slot, int],
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
        self._sizes = {slot: n for slot, n in sizes.items() if n > 0}
        self._limits = limits
        self._metrics = metrics
        self._busy = busy  # True while API creates are using the runtime
        self._ready: dict[Slot, collections.deque[str]] = {
            slot: collections.deque() for slot in self._sizes
        }
        self._wanted = asyncio.Event()
        self._wanted.set()
        for image, tier in self._sizes:
            metrics.pool_depth.labels(image, tier).set(0)

    def depth(self, image: str, tier: str) -> int:
        return len(self._ready.get((image, tier), ()))

    async def claim(self, image: str, tier: str) -> str | None:
        """A ready sandbox of this image and tier, now the caller's alone; None on a miss
        (and from the moment the pool drains)."""
        if self._draining:
            return None
        slot = (image, tier)
        ready = self._ready.get(slot, collections.deque())
        while ready:
            sid = ready.popleft()
            self._changed(slot)
            try:
                async with asyncio.timeout(CLAIM_CHECK_S):
                    await self._runtime.agent(sid).ping()
                    current = await self._runtime.on_current_build(sid)
            except (SandboxError, TimeoutError):
                logger.warning("pooled sandbox is dead; discarded", extra={"container_id": sid})
                await self._discard(sid)
                continue
            if not current:  # made before its image was rebuilt: new containers get the new
                logger.info(
                    "pooled sandbox of an old build; discarded", extra={"container_id": sid}
                )
                await self._discard(sid)
                continue
            self._metrics.pool_claims.labels(image, tier, "hit").inc()
            return sid
        if slot in self._sizes:
            self._metrics.pool_claims.labels(image, tier, "miss").inc()
        return None

    def _changed(self, slot: Slot) -> None:
        self._metrics.pool_depth.labels(*slot).set(len(self._ready[slot]))
        self._wanted.set()

    async def _discard(self, sid: str) -> None:
        try:
            await self._runtime.destroy(sid)
        except SandboxError as exc:
            logger.error("discarding a pooled sandbox failed", extra={"error": str(exc)})

    def _deficit(self) -> Slot | None:
        """A slot short of its size that admission has room for."""
        for slot, size in self._sizes.items():
            if len(self._ready[slot]) < size and self._admission.fits(MEMORY_TIERS[slot[1]]):
                return slot
        return None

    def _short(self) -> bool:
        return any(len(self._ready[slot]) < size for slot, size in self._sizes.items())

    async def make_room(self, memory_bytes: int) -> None:
        """Give pooled sandboxes back, other tiers' first, until a create of this tier would
        be admitted (or the pool is empty): requests come before the pool."""
        slots = sorted(self._ready, key=lambda slot: MEMORY_TIERS[slot[1]] == memory_bytes)
        for slot in slots:
            while self._ready[slot] and not self._admission.fits(memory_bytes):
                sid = self._ready[slot].popleft()
                self._changed(slot)
                await self._discard(sid)

    async def run(self) -> None:
        """Refill forever: one sandbox at a time, never while API creates are in flight."""
        backoff = 0.5
        while True:
            slot = self._deficit()
            if slot is None:
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
            image, tier = slot
            sid = ids.container_id()
            spec = SandboxSpec(
                sid,
                MEMORY_TIERS[tier],
                self._limits,
                image=image,
                trust_bundle=self._trust_bundle(),
            )
            try:
                await self._runtime.create(spec)
            except SandboxError as exc:
                logger.error(
                    "pool refill failed", extra={"image": image, "tier": tier, "error": str(exc)}
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            backoff = 0.5
            self._ready[slot].append(sid)
            self._metrics.pool_depth.labels(image, tier).set(len(self._ready[slot]))

    async def drain(self) -> None:
        """Destroy every pooled sandbox (shutdown); no claim succeeds from now on."""
        self._draining = True
        for (image, tier), queue in self._ready.items():
            while queue:
                await self._discard(queue.popleft())
            self._metrics.pool_depth.labels(image, tier).set(0)
