"""Containers with `network_policy: allowlist`: secrets, placeholders, proxy and agent setup.

At create: each domain secret gets a random placeholder (the only thing the container ever
sees, as env `NAME`), its value is sealed into the store, the proxy is handed the sandbox's
socket with the policy and the values, and the agent is told the environment and starts its
relay from 127.0.0.1:3128. After a daemon restart the proxy is a new process: `restore`
attaches every running container again from the store.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
from pathlib import Path
from typing import Any

from daemon.egress_proxy import EgressProxy
from daemon.models import ContainerRecord, SealedSecret
from daemon.secretbox import SecretBox
from daemon.store import Store
from proxy.secrets import PLACEHOLDER_PREFIX
from sandbox.policy import NetworkPolicy, parse_network_policy
from sandbox.runtime import Runtime
from sandbox.spec import EGRESS_SOCKET

logger = logging.getLogger(__name__)

HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")

PROXY_URL = "http://127.0.0.1:3128"
PROXY_ENV = {
    **dict.fromkeys(("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"), PROXY_URL),
    **dict.fromkeys(("http_proxy", "https_proxy", "all_proxy"), PROXY_URL),
    "NO_PROXY": "",
    "no_proxy": "",
}


def new_placeholder() -> str:
    """Fixed prefix + 160 random bits as 32 lowercase base32 characters."""
    return PLACEHOLDER_PREFIX + base64.b32encode(secrets.token_bytes(20)).decode().lower()


class ContainerEgress:
    """Egress of every container; without a proxy (`[proxy] enabled = false`) it is off and
    a create asking for an allowlist is refused."""

    def __init__(
        self, proxy: EgressProxy | None, store: Store, runtime: Runtime, state_dir: Path
    ) -> None:
        self._proxy = proxy
        self._box: SecretBox | None = None
        self._store = store
        self._runtime = runtime
        self._state_dir = state_dir
        # Host CAs + the proxy's, bound over the system bundle in every sandbox (from start).
        self.trust_bundle: Path | None = None

    async def start(self) -> None:
        """Secret key, proxy process, trust bundle. Raises EgressUnavailable, SecretBoxError
        or OSError (the daemon does not start)."""
        if self._proxy is None:
            return
        self._box = await asyncio.to_thread(
            SecretBox.open_or_create, self._state_dir / "secrets.key"
        )
        await self._proxy.start()
        assert self._proxy.ca_cert is not None
        self.trust_bundle = await asyncio.to_thread(
            _write_trust_bundle, self._state_dir / "trust-bundle.pem", self._proxy.ca_cert
        )

    async def close(self) -> None:
        if self._proxy is not None:
            await self._proxy.close()

    @property
    def enabled(self) -> bool:
        return self._proxy is not None and self._box is not None

    async def setup(self, cid: str, policy: NetworkPolicy) -> None:
        """Attach the (running) sandbox to the proxy and configure its agent."""
        assert self._proxy is not None
        assert self._box is not None
        rows, pushed = [], []
        for secret in policy.secrets:
            placeholder = new_placeholder()
            rows.append(
                SealedSecret(
                    secret.name,
                    secret.domain,
                    placeholder,
                    self._box.seal(f"{cid}/{secret.name}", secret.value),
                )
            )
            pushed.append(_pushed(secret.name, secret.domain, placeholder, secret.value))
        await self._store.containers.insert_secrets(cid, rows)
        await self._proxy.attach(cid, self._runtime.egress_dir(cid), policy.public(), pushed)
        env = dict(PROXY_ENV)
        env.update({row.name: row.placeholder for row in rows})
        await self._runtime.agent(cid).configure(env, EGRESS_SOCKET)

    async def restore(self, rec: ContainerRecord) -> None:
        """Hand a running container's socket and policy to this daemon's proxy again."""
        if rec.network_policy is None or self._proxy is None or self._box is None:
            return
        policy = parse_network_policy(rec.network_policy)
        if policy is None:
            return
        pushed = [
            _pushed(
                s.name, s.domain, s.placeholder, self._box.unseal(f"{rec.id}/{s.name}", s.sealed)
            )
            for s in await self._store.containers.secrets(rec.id)
        ]
        await self._proxy.attach(rec.id, self._runtime.egress_dir(rec.id), policy.public(), pushed)

    async def release(self, cid: str) -> None:
        if self._proxy is not None:
            await self._proxy.detach(cid)


def _pushed(name: str, domain: str, placeholder: str, value: str) -> dict[str, Any]:
    return {"name": name, "domain": domain, "placeholder": placeholder, "value": value}


def _write_trust_bundle(path: Path, ca_cert: Path) -> Path:
    """The host's CA bundle plus the proxy's CA: bound over the system bundle in sandboxes."""
    host = HOST_CA_BUNDLE.read_bytes() if HOST_CA_BUNDLE.is_file() else b""
    data = host.rstrip(b"\n") + b"\n" + ca_cert.read_bytes()
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o644)
    tmp.rename(path)
    return path
