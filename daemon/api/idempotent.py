"""`Idempotency-Key` on the creating POSTs: the HTTP side of daemon/idempotency.py."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from aiohttp import web

from daemon.api.body import BODY, RequestBody
from daemon.api.context import CONFIG, IDEMPOTENCY, caller_of
from daemon.config import Config
from daemon.errors import IdempotencyKeyReused, InvalidRequest
from daemon.models import StoredResponse

HEADER = "Idempotency-Key"
MAX_KEY = 255
REPLAYED = "Idempotent-Replayed"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _max_body(cfg: Config) -> int:
    """The most a creating POST's body can be (the largest upload cap, plus its envelope)."""
    caps = (cfg.containers.max_upload_bytes, cfg.files.max_file_bytes, cfg.skills.max_zip_bytes)
    return max(*caps, cfg.server.max_json_bytes) + (1 << 20)


def idempotent(handler: Handler) -> Handler:
    """Run `handler` once per (caller, Idempotency-Key); replay its success to retries."""

    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        key = request.headers.get(HEADER)
        if key is None:
            return await handler(request)
        if not 1 <= len(key) <= MAX_KEY or not (key.isascii() and key.isprintable()):
            raise InvalidRequest(
                f"Invalid {HEADER}: use 1 to {MAX_KEY} printable ASCII characters.",
                param=HEADER,
            )
        cfg = request.app[CONFIG]
        owner = caller_of(request).owner
        body = request[BODY] = RequestBody(request, fingerprint=True, cap=_max_body(cfg))
        keys = request.app[IDEMPOTENCY]
        stored = await keys.begin(owner, key)
        if stored is not None:
            if not await body.finish(cfg.server.max_json_bytes):
                raise InvalidRequest("The request body could not be read.")
            if body.fingerprint() != stored.fingerprint:
                hours = cfg.idempotency.ttl_s / 3600
                raise IdempotencyKeyReused(
                    f"This {HEADER} was used with another request (method, path or body) in "
                    f"the last {hours:g} hours; use a new key for a new request.",
                    param=HEADER,
                )
            return web.Response(
                status=stored.status,
                body=stored.body,
                content_type="application/json",
                headers={REPLAYED: "true"},
            )
        kept: StoredResponse | None = None
        try:
            response = await handler(request)
            if (
                response.status == 200
                and isinstance(response, web.Response)
                and isinstance(response.body, bytes)
                and await body.finish(cfg.server.max_json_bytes)
            ):
                kept = StoredResponse(body.fingerprint(), response.status, response.body)
            return response
        finally:
            await keys.finish(owner, key, kept)

    return wrapper
