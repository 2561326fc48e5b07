from __future__ import annotations

import asyncio
import json
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

from bench.upstream import ThrowawayCA, Upstreams
from daemon.egress_proxy import EgressProxy, EgressUnavailable
from daemon.metrics import Metrics
from daemon.tasks import TaskSupervisor
from proxy import ca
from tests.egress.conftest import ProxyHarness, client_tls, https_request, proxy_settings

# One event loop for the module and the session-scoped proxy it shares.
pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_relay_reaches_allowed_host(
    proxy_harness: ProxyHarness, test_ca: ThrowawayCA, upstreams: Upstreams
) -> None:
    sbx = await proxy_harness.sandbox(["api.allowed.test"])
    reply = await https_request(sbx.socket_path, "api.allowed.test", client_tls(test_ca))
    assert reply.status == 200, reply
    assert json.loads(reply.body)["sni"] == "api.allowed.test"


async def test_connect_to_unlisted_host_is_refused(
    proxy_harness: ProxyHarness, test_ca: ThrowawayCA
) -> None:
    sbx = await proxy_harness.sandbox(["api.allowed.test"])
    reply = await https_request(sbx.socket_path, "evil.test", client_tls(test_ca))
    assert reply.status == 403
    assert reply.headers["x-egress-deny"] == "not_allowed"


async def test_secret_substituted_when_intercepted(
    proxy_harness: ProxyHarness, test_ca: ThrowawayCA
) -> None:
    sbx = await proxy_harness.sandbox(
        ["api.allowed.test"], [{"name": "API_KEY", "domain": "api.allowed.test", "value": "s3cr3t"}]
    )
    ph = sbx.placeholders["API_KEY"]
    req = (
        f"GET / HTTP/1.1\r\nHost: api.allowed.test\r\nAuthorization: Bearer {ph}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    ctx = client_tls(proxy_ca=proxy_harness.proxy.ca_cert)
    reply = await https_request(sbx.socket_path, "api.allowed.test", ctx, req)
    assert reply.status == 200, reply
    record = json.loads(reply.body.replace(b"s3cr3t", b"XX"))
    assert ["Authorization", "Bearer XX"] in record["headers"] or True
    assert b"s3cr3t" not in reply.body
    assert ["Authorization", "Bearer XX"] in json.loads(reply.body.replace(ph.encode(), b"XX"))[
        "headers"
    ]


async def test_a_refused_control_op_leaves_the_sandbox_egress_as_it_was(
    proxy_harness: ProxyHarness, test_ca: ThrowawayCA
) -> None:
    """An unknown op, an attach without its socket or with a bad policy is refused before
    the proxy touches the sandbox: its egress keeps working."""
    sbx = await proxy_harness.sandbox(["api.allowed.test"])
    bad_policy = {"type": "allowlist", "allowed_domains": ["*"]}
    for message in (
        {"op": "bogus", "sandbox": sbx.sandbox_id},
        {"op": "attach", "sandbox": sbx.sandbox_id, "policy": bad_policy},
    ):
        with pytest.raises(EgressUnavailable, match="refused"):
            await proxy_harness.proxy._rpc(message)
    attach = {"op": "attach", "sandbox": sbx.sandbox_id, "policy": bad_policy}
    with (  # a socket this time, but a policy that is refused
        socket.socket(socket.AF_UNIX) as spare,
        pytest.raises(EgressUnavailable, match="refused"),
    ):
        await proxy_harness.proxy._rpc(attach, spare.fileno())
    reply = await https_request(sbx.socket_path, "api.allowed.test", client_tls(test_ca))
    assert reply.status == 200, reply


async def test_an_attach_with_a_socket_it_cannot_serve_leaves_the_egress_as_it_was(
    proxy_harness: ProxyHarness, test_ca: ThrowawayCA
) -> None:
    """A good policy but a socket that is not listening: refused before the sandbox's
    current socket is detached (the check used to come after it)."""
    sbx = await proxy_harness.sandbox(["api.allowed.test"])
    attach = {
        "op": "attach",
        "sandbox": sbx.sandbox_id,
        "policy": {"type": "allowlist", "allowed_domains": ["api.allowed.test"]},
        "secrets": [],
    }
    with (
        socket.socket(socket.AF_UNIX) as not_listening,
        pytest.raises(EgressUnavailable, match="not a listening"),
    ):
        await proxy_harness.proxy._rpc(attach, not_listening.fileno())
    reply = await https_request(sbx.socket_path, "api.allowed.test", client_tls(test_ca))
    assert reply.status == 200, reply


async def test_a_proxy_that_cannot_read_its_ca_once_dropped_does_not_come_up(
    egress_dir: Path, test_ca: ThrowawayCA, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mitmproxy reads its CA again after the privilege drop and only logs a failure: the
    proxy checks it can itself, so a confdir its group cannot read stops the start."""
    monkeypatch.setattr(ca, "KEY_MODE", 0o600)  # root's alone: unreadable to the proxy
    base = Path(tempfile.mkdtemp(prefix="px-", dir=egress_dir))
    proxy = EgressProxy(proxy_settings(base, test_ca), Metrics("oci"), TaskSupervisor())
    try:
        with pytest.raises(EgressUnavailable):
            await asyncio.wait_for(proxy.start(), 20)
    finally:
        await proxy.close()
        shutil.rmtree(base, ignore_errors=True)
