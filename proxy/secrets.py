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


def is_placeholder(text: str) -> bool:
    """Whether `text` is one whole placeholder (the only kind SecretSet can ever find)."""
    return _PLACEHOLDER_RE.fullmatch(text) is not None


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
        """Secrets whose placeholder occurs in `text`, plainly or inside any `Basic`
        credential in it (a header line, a header value, a body)."""
        data = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text
        hits = {m.decode() for m in _PLACEHOLDER_RE_B.findall(data)}
        for token in _BASIC_RE.findall(data):
            decoded = _b64(token)
            if decoded is not None:
                hits.update(m.decode() for m in _PLACEHOLDER_RE_B.findall(decoded))
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
        scheme, _, token = out.strip().partition(" ")
        if scheme.lower() == "basic" and token:
            raw = _b64(token.strip().encode("latin-1", "replace"))
            if raw is not None:
                # Bytes in, bytes out: a credential that is not UTF-8 stays what it was.
                text = raw.decode("utf-8", "surrogateescape")
                swapped = _PLACEHOLDER_RE.sub(swap, text)
                if swapped != text:
                    encoded = base64.b64encode(swapped.encode("utf-8", "surrogateescape"))
                    out = f"{scheme} {encoded.decode()}"
        return out, used


_BASIC_RE = re.compile(rb"(?i)\bbasic[ \t]+([A-Za-z0-9+/=]+)")


def _b64(token: bytes) -> bytes | None:
    try:
        return base64.b64decode(token, validate=True)
    except (binascii.Error, ValueError):
        return None


class Redactor:
    """Turns secret values back into their placeholders in a response body, chunk by chunk.

    A match is only taken once the longest value would have fitted after its start, so a
    value that is a prefix of another can never hide the longer one across a chunk boundary.
    """

    def __init__(self, used: Iterable[Secret]) -> None:
        pairs = {s.value.encode(): s.placeholder.encode() for s in used}
        self._map = pairs
        longest_first = sorted(pairs, key=len, reverse=True)
        self._re = re.compile(b"|".join(re.escape(v) for v in longest_first) or b"(?!)")
        self._keep = max((len(v) for v in pairs), default=1) - 1
        self._buf = b""

    def whole(self, data: bytes) -> bytes:
        return self._re.sub(lambda m: self._map[m.group(0)], data)

    def __call__(self, chunk: bytes) -> bytes:
        """The next chunk of the body; b"" ends it (and flushes what was held back)."""
        buf = self._buf + chunk
        limit = len(buf) if not chunk else len(buf) - self._keep  # matches may start before
        out = bytearray()
        pos = 0
        for match in self._re.finditer(buf):
            if match.start() >= limit:
                break
            out += buf[pos : match.start()] + self._map[match.group(0)]
            pos = match.end()
        end = max(pos, limit)
        out += buf[pos:end]
        self._buf = buf[end:]
        return bytes(out)
