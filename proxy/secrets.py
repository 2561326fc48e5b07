"""Placeholders and secret values of one sandbox: find, substitute, redact (pure, no I/O).

A placeholder is PLACEHOLDER_PREFIX followed by PLACEHOLDER_BODY characters of [a-z2-7]
(base32 of 160 random bits), made by the daemon; its value is only known here. Substitution
happens only in header values (including inside a decoded `Basic` credential) of intercepted
requests to a host the secret's domain matches; any placeholder of the sandbox headed to a
host its secret does not match makes the request refused.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from sandbox.policy import matches

PLACEHOLDER_PREFIX = "sbxd_ph_"
PLACEHOLDER_BODY = 32  # base32 characters: 160 bits
PLACEHOLDER_LEN = len(PLACEHOLDER_PREFIX) + PLACEHOLDER_BODY
_PLACEHOLDER_RE = re.compile(re.escape(PLACEHOLDER_PREFIX) + f"[a-z2-7]{{{PLACEHOLDER_BODY}}}")
_PLACEHOLDER_RE_B = re.compile(_PLACEHOLDER_RE.pattern.encode())


@dataclass(frozen=True)
class Secret:
    name: str
    domain: str  # canonical pattern
    placeholder: str
    value: str = field(repr=False)


class SecretSet:
    """The secrets of one sandbox, indexed by placeholder."""

    def __init__(self, secrets: Iterable[Secret]) -> None:
        self._by_placeholder = {s.placeholder: s for s in secrets}

    def __bool__(self) -> bool:
        return bool(self._by_placeholder)

    def any_for(self, host: str) -> bool:
        return any(matches(s.domain, host) for s in self._by_placeholder.values())

    def found_in(self, text: str | bytes) -> list[Secret]:
        """Secrets whose placeholder occurs in `text` (plain, or in a Basic credential)."""
        if isinstance(text, bytes):
            hits = {m.decode() for m in _PLACEHOLDER_RE_B.findall(text)}
            text = text.decode("latin-1")
        else:
            hits = set(_PLACEHOLDER_RE.findall(text))
        decoded = _basic_credential(text)
        if decoded is not None:
            hits.update(_PLACEHOLDER_RE.findall(decoded))
        return [self._by_placeholder[h] for h in sorted(hits) if h in self._by_placeholder]

    def foreign(self, host: str, texts: Iterable[str | bytes]) -> Secret | None:
        """The first secret whose placeholder appears in `texts` but may not go to `host`."""
        for text in texts:
            for secret in self.found_in(text):
                if not matches(secret.domain, host):
                    return secret
        return None

    def substitute(self, host: str, value: str) -> tuple[str, list[Secret]]:
        """Header value with this host's placeholders replaced by their values."""
        used: list[Secret] = []

        def swap(match: re.Match[str]) -> str:
            secret = self._by_placeholder.get(match.group(0))
            if secret is None or not matches(secret.domain, host):
                return match.group(0)
            used.append(secret)
            return secret.value

        out = _PLACEHOLDER_RE.sub(swap, value)
        scheme, _, token = out.partition(" ")
        if scheme.lower() == "basic" and token:
            decoded = _basic_credential(out)
            if decoded is not None:
                swapped = _PLACEHOLDER_RE.sub(swap, decoded)
                if swapped != decoded:
                    out = f"{scheme} {base64.b64encode(swapped.encode()).decode()}"
        return out, used


def _basic_credential(value: str) -> str | None:
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:
        return base64.b64decode(token.strip(), validate=True).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        return None


class Redactor:
    """Turns secret values back into their placeholders in a response body, chunk by chunk:
    keeps the last len(longest value)-1 bytes back so a value split across chunks is seen."""

    def __init__(self, used: Iterable[Secret]) -> None:
        pairs = {s.value.encode(): s.placeholder.encode() for s in used}
        self._pairs = sorted(pairs.items(), key=lambda kv: -len(kv[0]))
        self._keep = max((len(v) for v in pairs), default=1) - 1
        self._tail = b""

    def whole(self, data: bytes) -> bytes:
        for value, placeholder in self._pairs:
            data = data.replace(value, placeholder)
        return data

    def __call__(self, chunk: bytes) -> bytes:
        if not chunk:  # end of the body
            out, self._tail = self.whole(self._tail), b""
            return out
        data = self.whole(self._tail + chunk)
        if self._keep and len(data) > self._keep:
            out, self._tail = data[: -self._keep], data[-self._keep :]
        elif self._keep:
            out, self._tail = b"", data
        else:
            out = data
        return out
