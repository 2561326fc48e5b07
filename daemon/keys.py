"""API keys for the TCP listener: stored only as SHA-256 hashes in the configuration.

Keys are 256-bit random tokens, so a fast hash is enough (no password stretching needed);
comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

PREFIX = "sha256:"
HASHED = re.compile(r"sha256:[0-9a-f]{64}")


def new_key() -> str:
    return "sk-sbx-" + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return PREFIX + hashlib.sha256(key.encode()).hexdigest()


def matches(key: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_key(key).encode(), stored_hash.encode())
