"""Safe retries: `Idempotency-Key` on creating POSTs (Stripe's semantics).

The first request with a key runs; its response (a success) is stored with a fingerprint of
the request, and for `ttl_s` the same caller's same key answers with that response again and
creates nothing. The same key with another request (method, path or body) is 409
`idempotency_key_reused`. A retry that arrives while the first request is still running waits
for it (up to `wait_s`, then 409 `request_in_flight` with `x-should-retry: true`), so a client
that timed out and retried gets the first request's object, never a second one.

Only successes are stored: a create that failed made nothing (creates are all or nothing), so
its key is not spent and a retry runs again. Requests in flight are known to this process only
(one daemon serves a state dir); stored responses survive restarts. A supervised task sweeps
keys older than `ttl_s`, and the cursor places kept for deleted old ids (daemon/store/pages.py).
"""

from __future__ import annotations

import asyncio
import logging
import time

from daemon.config import IdempotencyConfig
from daemon.errors import RequestInFlight, StorageFull
from daemon.models import StoredResponse
from daemon.store import Store

logger = logging.getLogger(__name__)


class Idempotency:
    def __init__(self, config: IdempotencyConfig, store: Store) -> None:
        self._cfg = config
        self._store = store
        self._running: dict[tuple[str, str], asyncio.Event] = {}

    async def begin(self, owner: str, key: str) -> StoredResponse | None:
        """The stored response for (owner, key), or None: the caller now runs the request and
        must call finish(), whatever happens. Waits while another request holds the key."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._cfg.wait_s
        slot = (owner, key)
        while True:
            running = self._running.get(slot)
            if running is not None:
                try:
                    async with asyncio.timeout_at(deadline):
                        await running.wait()
                except TimeoutError:
                    raise RequestInFlight(
                        "A request with this Idempotency-Key is still running; retry shortly."
                    ) from None
                continue
            stored = await self._store.idempotency.get(owner, key, _now() - self._cfg.ttl_s)
            if slot in self._running:
                continue  # another request took the key meanwhile: wait for it
            if stored is not None:
                return stored
            self._running[slot] = asyncio.Event()
            return None

    async def finish(self, owner: str, key: str, response: StoredResponse | None) -> None:
        """Release the key; a response given is what later requests with the key get."""
        try:
            if response is not None:
                keep = self._cfg.max_per_owner
                await self._store.idempotency.put(owner, key, response, _now(), keep)
        except StorageFull:
            # The object exists and its response goes out; only a retry would make another.
            logger.error("idempotency key not stored: state disk full")
        finally:
            event = self._running.pop((owner, key), None)
            if event is not None:
                event.set()

    async def run_sweeper(self) -> None:
        while True:
            try:
                keys, places = await self._store.sweep(_now() - self._cfg.ttl_s)
                if keys or places:
                    logger.info("expired keys swept", extra={"keys": keys, "places": places})
            except Exception:
                logger.exception("idempotency sweep failed")
            await asyncio.sleep(self._cfg.sweep_interval_s)


def _now() -> int:
    return int(time.time())
