"""Request bodies as the handlers read them, fingerprinted when a request carries an
`Idempotency-Key` (daemon/idempotency.py).

The fingerprint is SHA-256 over the method, the path (with its query) and the body. A JSON
body counts byte for byte (an SDK's retry resends the same bytes); a multipart body counts part
by part, as (name, filename, SHA-256 of the content), so the random boundary an SDK draws for
every attempt does not matter. Large chunks are hashed on a worker thread, never on the loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import json

from aiohttp import BodyPartReader, MultipartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from daemon.errors import DomainError, InvalidRequest, PayloadTooLarge

CHUNK = 256 << 10
HASH_INLINE = 64 << 10  # smaller chunks are hashed on the loop (cheaper than a thread hop)


async def _hash(h: hashlib._Hash | None, data: bytes) -> None:
    if h is None or not data:
        return
    if len(data) > HASH_INLINE:
        await asyncio.to_thread(h.update, data)
    else:
        h.update(data)


class Part:
    """One part of a multipart body (a BodyPartReader that feeds the fingerprint)."""

    def __init__(self, part: BodyPartReader, body: RequestBody) -> None:
        self.name = part.name
        self.filename = part.filename
        self._part = part
        self._body = body
        self._hash = hashlib.sha256() if body.fingerprinted else None
        self._ended = False

    async def read_chunk(self, size: int = CHUNK) -> bytes:
        chunk = await self._part.read_chunk(size)
        if self._hash is not None and not self._ended:
            if chunk:
                self._body.count(len(chunk))
                await _hash(self._hash, chunk)
            else:
                self._ended = True
                record = [self.name, self.filename, self._hash.hexdigest()]
                self._body.add(json.dumps(record).encode())
        return chunk

    async def release(self) -> None:
        """Skip the rest of the part (still counted by the fingerprint)."""
        if self._hash is None:
            await self._part.release()
            return
        while await self.read_chunk():
            pass


class RequestBody:
    def __init__(self, request: web.Request, *, fingerprint: bool = False, cap: int = 0) -> None:
        self._request = request
        self._digest = hashlib.sha256() if fingerprint else None
        self._cap = cap  # bytes a fingerprint reads at most
        self._seen = 0
        self._reader: MultipartReader | None = None
        self._part: Part | None = None
        self._read = False  # the whole body has been read
        if self._digest is not None:
            self._digest.update(f"{request.method} {request.rel_url}\n".encode())

    @property
    def fingerprinted(self) -> bool:
        return self._digest is not None

    def count(self, n: int) -> None:
        self._seen += n
        if self._seen > self._cap:
            raise PayloadTooLarge(f"The request body exceeds {self._cap} bytes.")

    def add(self, data: bytes) -> None:
        if self._digest is not None:
            self._digest.update(data)

    async def read_bytes(self, cap: int) -> bytes:
        """The whole body at most `cap` bytes (413 beyond): what JSON handlers read."""
        raw = bytearray()
        async for chunk in self._request.content.iter_chunked(64 << 10):
            raw += chunk
            if len(raw) > cap:
                raise PayloadTooLarge(f"The request body exceeds {cap} bytes.")
        self._read = True
        data = bytes(raw)
        await _hash(self._digest, data)
        return data

    async def next_part(self, param: str | None = None) -> Part | None:
        """The next part of a multipart body (the rest of the current one is skipped)."""
        if self._part is not None:
            part, self._part = self._part, None
            await part.release()
        if self._read:
            return None
        if self._reader is None:
            self._reader = await self._request.multipart()
        nxt = await self._reader.next()
        if nxt is None:
            self._read = True
            return None
        if not isinstance(nxt, BodyPartReader):
            raise InvalidRequest("Nested multipart bodies are not accepted.", param=param)
        self._part = Part(nxt, self)
        return self._part

    async def finish(self, max_json: int) -> bool:
        """Read what the handler left unread, so that the fingerprint covers the whole body;
        False if the rest cannot be read (malformed, too large)."""
        try:
            if self._request.content_type.startswith("multipart/"):
                while await self.next_part() is not None:
                    pass
            elif not self._read:
                await self.read_bytes(max_json)
        except (DomainError, ValueError, HttpProcessingError):
            return False
        return True

    def fingerprint(self) -> str:
        assert self._digest is not None, "not fingerprinted"
        return self._digest.hexdigest()


BODY = web.RequestKey("body", RequestBody)


def body_of(request: web.Request) -> RequestBody:
    """The request's body reader (a plain one unless an Idempotency-Key asked for more)."""
    body = request.get(BODY)
    if body is None:
        body = request[BODY] = RequestBody(request)
    return body
