"""The proxy's resolver: vetting, pinning, and a dial path that knows only pinned names."""

from __future__ import annotations

import socket

import pytest

from proxy.resolver import ResolveError, Resolver


async def test_only_vetted_addresses_are_pinned_and_dialled() -> None:
    r = Resolver(
        hosts={"a.example.com": ["10.0.0.1", "8.8.8.8", "127.0.0.1"], "b.example.com": ["::1"]},
        allow_upstreams=frozenset({("127.0.0.1", 443)}),
    )
    assert await r.resolve("a.example.com", 443) == ["8.8.8.8", "127.0.0.1"]
    infos = await r.dial_getaddrinfo("A.Example.COM.", 443)
    assert [i[4][0] for i in infos] == ["8.8.8.8", "127.0.0.1"]
    with pytest.raises(ResolveError) as err:
        await r.resolve("b.example.com", 443)
    assert err.value.reason == "non_global_address"


async def test_dial_of_an_unvetted_name_or_port_fails() -> None:
    r = Resolver(hosts={"a.example.com": ["8.8.8.8"]})
    with pytest.raises(socket.gaierror):
        await r.dial_getaddrinfo("a.example.com", 443)  # never resolved
    await r.resolve("a.example.com", 443)
    with pytest.raises(socket.gaierror):
        await r.dial_getaddrinfo("a.example.com", 8443)
    with pytest.raises(socket.gaierror):
        await r.dial_getaddrinfo("evil.example.com", 443)


def test_allow_upstreams_needs_the_exact_port() -> None:
    r = Resolver(allow_upstreams=frozenset({("127.0.0.2", 443)}))
    assert r.may_dial("127.0.0.2", 443)
    assert not r.may_dial("127.0.0.2", 8443)
    assert not r.may_dial("127.0.0.3", 443)
    assert not r.may_dial("not-an-ip", 443)
