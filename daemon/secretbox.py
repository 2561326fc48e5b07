"""Domain secret values at rest: AES-GCM with a 256-bit key in a 0600 file of the state dir.

Each value is sealed with a fresh 96-bit nonce and the container id and secret name as
associated data, so a sealed value cannot be moved to another container or name.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12


class SecretBoxError(Exception):
    """The key file is unusable, or a sealed value does not open (tampered, wrong key)."""


class SecretBox:
    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise SecretBoxError("secret key must be 32 bytes")
        self._aead = AESGCM(key)

    @classmethod
    def open_or_create(cls, path: Path) -> SecretBox:
        """Blocking: call it off the event loop."""
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(KEY_BYTES))
                f.flush()
                os.fsync(f.fileno())
        st = path.lstat()
        if st.st_mode & 0o077:
            raise SecretBoxError(f"{path} must not be readable by group or others (chmod 600)")
        return cls(path.read_bytes())

    def seal(self, aad: str, value: str) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, value.encode(), aad.encode())

    def unseal(self, aad: str, sealed: bytes) -> str:
        try:
            return self._aead.decrypt(
                sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], aad.encode()
            ).decode()
        except (InvalidTag, ValueError, UnicodeDecodeError) as exc:
            raise SecretBoxError("a sealed secret does not open") from exc
