"""The control channel's requests, parsed and validated whole before the proxy acts on one.

The daemon sends three ops (daemon/egress_proxy.py): `ping`, `detach` and `attach`, the last with
the sandbox's listening socket. `parse` checks every field of a request (and that a socket
comes with attach and only with it) and returns a typed op, so the proxy never changes a
sandbox's egress on a request it would refuse halfway: a refused attach leaves the egress the
sandbox had. No mitmproxy here: this is pure validation.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Any

from proxy.secrets import Secret, is_placeholder
from sandbox.policy import NetworkPolicy, parse_network_policy

SECRET_KEYS = ("name", "domain", "placeholder", "value")
# Every key each op may carry ("id" is the request's, echoed in the reply).
KEYS = {
    "ping": frozenset({"id", "op"}),
    "detach": frozenset({"id", "op", "sandbox"}),
    "attach": frozenset({"id", "op", "sandbox", "policy", "secrets"}),
}


class ControlError(ValueError):
    """A request the proxy refuses (the message never holds a secret value)."""


@dataclass(frozen=True)
class Ping:
    pass


@dataclass(frozen=True)
class Detach:
    sandbox_id: str


@dataclass(frozen=True)
class Attach:
    sandbox_id: str
    policy: NetworkPolicy
    secrets: tuple[Secret, ...] = field(repr=False)
    fd: int  # the sandbox's listening socket, received with the request


Op = Ping | Detach | Attach


def parse(message: dict[str, Any], fd: int | None) -> Op:
    """The op `message` asks for; ControlError (or the policy's PolicyError, a ValueError)
    when any part of it is wrong. The caller still owns `fd` (and closes it on an error)."""
    op = message.get("op")
    if not isinstance(op, str) or op not in KEYS:
        raise ControlError(f"unknown op {op!r}")
    unknown = sorted(set(message) - KEYS[op])
    if unknown:
        raise ControlError(f"{op}: unknown key {unknown[0]!r}")
    request_id = message.get("id")
    if isinstance(request_id, bool) or not isinstance(request_id, int):
        raise ControlError(f"{op}: id must be an integer")
    if op == "attach":
        if fd is None:
            raise ControlError("attach: the sandbox's socket is missing")
    elif fd is not None:
        raise ControlError(f"{op}: takes no socket")
    if op == "ping":
        return Ping()
    sandbox_id = message.get("sandbox")
    if not isinstance(sandbox_id, str) or not sandbox_id:
        raise ControlError(f"{op}: sandbox id missing")
    if op == "detach":
        return Detach(sandbox_id)
    assert fd is not None  # checked above, for attach
    if not _listening_unix_socket(fd):
        raise ControlError("attach: the socket is not a listening unix stream socket")
    policy, secrets = _policy(message.get("policy"), message.get("secrets"))
    return Attach(sandbox_id, policy, secrets, fd)


def _listening_unix_socket(fd: int) -> bool:
    """Checked here rather than by the front when it serves the socket: by then the
    sandbox's old socket is gone."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError:  # not a socket at all
        return False
    try:
        return (
            sock.family == socket.AF_UNIX
            and sock.type == socket.SOCK_STREAM
            and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
        )
    except OSError:
        return False
    finally:
        sock.detach()  # the fd stays the caller's


def _policy(raw: Any, raw_secrets: Any) -> tuple[NetworkPolicy, tuple[Secret, ...]]:
    """The sandbox's allowlist and its secrets, checked as the API checked them at create:
    the secrets go back into the policy (as `domain_secrets`) and the policy parser holds
    names, domains (covered by allowed_domains) and values to its rules."""
    if not isinstance(raw, dict) or raw.get("type") != "allowlist":
        raise ControlError("attach needs an allowlist policy")
    if "domain_secrets" in raw:
        # The daemon sends the public policy; secrets come only with their placeholders.
        raise ControlError("attach: the policy must not hold domain_secrets")
    if not isinstance(raw_secrets, list):
        raise ControlError("attach: secrets must be a list")
    placeholders: list[str] = []
    domain_secrets: list[dict[str, Any]] = []
    for i, item in enumerate(raw_secrets):
        if not isinstance(item, dict) or set(item) != set(SECRET_KEYS):
            raise ControlError(f"attach: secrets[{i}] must have exactly {', '.join(SECRET_KEYS)}")
        placeholder = item["placeholder"]
        if not isinstance(placeholder, str) or not is_placeholder(placeholder):
            raise ControlError(f"attach: secrets[{i}].placeholder is not a placeholder")
        if placeholder in placeholders:
            raise ControlError(f"attach: secrets[{i}].placeholder is used twice")
        placeholders.append(placeholder)
        domain_secrets.append({k: item[k] for k in ("name", "domain", "value")})
    policy = parse_network_policy({**raw, "domain_secrets": domain_secrets})
    if policy is None:
        raise ControlError("attach needs an allowlist policy")
    secrets = tuple(
        Secret(s.name, s.domain, placeholder, s.value)
        for s, placeholder in zip(policy.secrets, placeholders, strict=True)
    )
    # The proxy keeps the secrets apart from the policy (SecretSet, by placeholder).
    return NetworkPolicy(policy.allowed_domains), secrets
