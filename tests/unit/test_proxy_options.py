"""The proxy's options (proxy/options.py), its control requests (proxy/control.py) and its
mitmproxy version check (proxy/version.py): one schema, defaults stated once, everything
validated before the proxy acts on it."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.config import ProxyConfig, load
from daemon.egress_proxy import ProxySettings
from proxy import control, version
from proxy.options import Limits, OptionsError, ProxyOptions
from sandbox.policy import PolicyError

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
PLACEHOLDER = "sbxd_ph_" + "a" * 32

# --------------------------------------------------------------------------- options


def _options_json(**changes: Any) -> str:
    raw: dict[str, Any] = json.loads(ProxyOptions(confdir="/var/lib/x/proxy").to_json())
    for key, value in changes.items():
        if key.startswith("limits."):
            raw["limits"][key.removeprefix("limits.")] = value
        else:
            raw[key] = value
    return json.dumps(raw)


def test_options_round_trip() -> None:
    options = ProxyOptions(
        confdir="/srv/p",
        intercept_all=True,
        hosts={"a.test": ("127.0.0.2", "::1")},
        allow_upstreams=(("127.0.0.2", 443), ("::1", 8443)),
        upstream_ca_bundle="/etc/ca.pem",
        limits=Limits(max_connections=3, header_timeout_s=0.5, max_redact_bytes=10),
    )
    assert ProxyOptions.from_json(options.to_json()) == options
    assert ProxyOptions.from_json('{"confdir": "/x"}') == ProxyOptions(confdir="/x")


def test_options_take_whole_seconds() -> None:
    """TOML and JSON write 10 for 10.0: a timeout may be an integer."""
    limits = ProxyOptions.from_json(_options_json(**{"limits.idle_timeout_s": 60})).limits
    assert limits.idle_timeout_s == 60


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("not json", "not JSON"),
        ("[]", "must be an object"),
        ("{}", "confdir is missing"),
        (_options_json(extra=1), "unknown key extra"),
        (_options_json(**{"limits.max_things": 1}), "unknown key limits.max_things"),
        (_options_json(limits=[]), "limits must be an object"),
        (_options_json(confdir="relative"), "confdir"),
        (_options_json(confdir=5), "confdir"),
        (_options_json(intercept_all="yes"), "intercept_all"),
        (_options_json(intercept_all=1), "intercept_all"),
        (_options_json(hosts=[]), "hosts"),
        (_options_json(hosts={"a.test": "127.0.0.2"}), "hosts.a.test"),
        (_options_json(hosts={"a.test": []}), "hosts.a.test"),
        (_options_json(hosts={"a.test": ["a.example"]}), "not an IP address"),
        (_options_json(hosts={"a.test": [2130706433]}), "not an IP address"),
        (_options_json(allow_upstreams={}), "allow_upstreams"),
        (_options_json(allow_upstreams=[["127.0.0.2"]]), "allow_upstreams"),
        (_options_json(allow_upstreams=["127.0.0.2:443"]), "allow_upstreams"),
        (_options_json(allow_upstreams=[["127.0.0.2", "443"]]), "port must be an integer"),
        (_options_json(allow_upstreams=[["127.0.0.2", True]]), "port must be an integer"),
        (_options_json(allow_upstreams=[["127.0.0.2", 0]]), "1..65535"),
        (_options_json(allow_upstreams=[["127.0.0.2", 65536]]), "1..65535"),
        (_options_json(allow_upstreams=[["a.test", 443]]), "not an IP address"),
        (_options_json(upstream_ca_bundle=None), "upstream_ca_bundle"),
        (_options_json(**{"limits.max_connections": 0}), "limits.max_connections"),
        (_options_json(**{"limits.max_connections": "64"}), "limits.max_connections"),
        (_options_json(**{"limits.max_connections": 1.5}), "limits.max_connections"),
        (_options_json(**{"limits.max_connections": True}), "limits.max_connections"),
        (_options_json(**{"limits.max_head_bytes": -1}), "limits.max_head_bytes"),
        (_options_json(**{"limits.max_redact_bytes": 0}), "limits.max_redact_bytes"),
        (_options_json(**{"limits.max_buffered_bytes": 1024}), "limits.max_buffered_bytes"),
        (_options_json(**{"limits.header_timeout_s": 0.09}), "limits.header_timeout_s"),
        (_options_json(**{"limits.header_timeout_s": "10"}), "limits.header_timeout_s"),
        (_options_json(**{"limits.idle_timeout_s": 3600.5}), "limits.idle_timeout_s"),
        (_options_json(**{"limits.idle_timeout_s": float("nan")}), "limits.idle_timeout_s"),
        (_options_json(**{"limits.idle_timeout_s": float("inf")}), "limits.idle_timeout_s"),
    ],
)
def test_options_refuse_what_the_daemon_never_sends(text: str, error: str) -> None:
    with pytest.raises(OptionsError, match=re.escape(error)):
        ProxyOptions.from_json(text)


def test_limits_cannot_be_made_out_of_bounds() -> None:
    with pytest.raises(OptionsError, match="max_buffered_bytes"):
        Limits(max_body_bytes=2, max_buffered_bytes=1)
    with pytest.raises(OptionsError, match="header_timeout_s"):
        Limits(header_timeout_s=0)


# --------------------------------------------------------------------------- defaults, once


def _proxy_limit_keys() -> list[str]:
    config_keys = {f.name for f in dataclasses.fields(ProxyConfig)}
    return [f.name for f in dataclasses.fields(Limits) if f.name in config_keys]


def test_config_defaults_are_the_proxys() -> None:
    assert _proxy_limit_keys(), "[proxy] configures some of the proxy's limits"
    config = ProxyConfig()
    for key in _proxy_limit_keys():
        assert getattr(config, key) == getattr(Limits(), key), key
    assert config.limits() == Limits()


def test_default_config_gives_default_options(tmp_path: Path) -> None:
    settings = ProxySettings.from_config(load(None).proxy, tmp_path, "info")
    assert settings.options() == ProxyOptions(confdir=str(tmp_path))
    assert settings == ProxySettings(state_dir=tmp_path)


def test_every_proxy_key_reaches_the_proxy(tmp_path: Path) -> None:
    """Each configured value lands where it is used, and the proxy reads back what the
    daemon wrote."""
    values: dict[str, Any] = {
        "intercept": "all",
        "hosts": {"a.test": "127.0.0.2, ::1"},
        "allow_upstreams": ["127.0.0.2:443", "[::1]:8443"],
        "upstream_ca_bundle": "/etc/ca.pem",
        "max_connections": 3,
        "max_head_bytes": 1000,
        "header_timeout_s": 0.5,
        "idle_timeout_s": 30.0,
        "max_body_bytes": 2000,
        "max_buffered_bytes": 3000,
        "user": "px",
        "memory_bytes": 1 << 30,
        "nofile": 100,
        "health_interval_s": 0.25,
    }
    cfg = load(None, {f"proxy.{k}": v for k, v in values.items()}).proxy
    settings = ProxySettings.from_config(cfg, tmp_path, "debug")
    assert (settings.user, settings.memory_bytes, settings.nofile) == ("px", 1 << 30, 100)
    assert (settings.health_interval_s, settings.log_level) == (0.25, "debug")
    options = settings.options()
    assert options == ProxyOptions(
        confdir=str(tmp_path),
        intercept_all=True,
        hosts={"a.test": ("127.0.0.2", "::1")},
        allow_upstreams=(("127.0.0.2", 443), ("::1", 8443)),
        upstream_ca_bundle="/etc/ca.pem",
        limits=Limits(
            max_connections=3,
            max_head_bytes=1000,
            header_timeout_s=0.5,
            idle_timeout_s=30.0,
            max_body_bytes=2000,
            max_buffered_bytes=3000,
        ),
    )
    assert ProxyOptions.from_json(options.to_json()) == options
    for key in _proxy_limit_keys():
        assert getattr(options.limits, key) == values[key], key


# --------------------------------------------------------------------------- control ops


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[int]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(tmp_path / "s"))
        sock.listen(1)
        yield sock.fileno()


def _attach(**changes: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "id": 7,
        "op": "attach",
        "sandbox": "cntr_x",
        "policy": {"type": "allowlist", "allowed_domains": ["api.example.com", "*.example.org"]},
        "secrets": [
            {"name": "K", "domain": "api.example.com", "placeholder": PLACEHOLDER, "value": "v"}
        ],
    }
    message.update(changes)
    return message


def test_control_ops() -> None:
    assert control.parse({"id": 1, "op": "ping"}, None) == control.Ping()
    detach = {"id": 2, "op": "detach", "sandbox": "cntr_x"}
    assert control.parse(detach, None) == control.Detach("cntr_x")


def test_control_attach(listener: int) -> None:
    op = control.parse(_attach(), listener)
    assert isinstance(op, control.Attach)
    assert (op.sandbox_id, op.fd) == ("cntr_x", listener)
    assert op.policy.allowed_domains == ("api.example.com", "*.example.org")
    assert op.policy.secrets == ()  # kept apart, by placeholder
    [secret] = op.secrets
    assert (secret.name, secret.domain, secret.placeholder, secret.value) == (
        "K",
        "api.example.com",
        PLACEHOLDER,
        "v",
    )
    assert "'v'" not in repr(op)
    assert control.parse(_attach(secrets=[]), listener) == control.Attach(
        "cntr_x", op.policy, (), listener
    )


def _secret(**changes: Any) -> list[dict[str, Any]]:
    secret = {"name": "K", "domain": "api.example.com", "placeholder": PLACEHOLDER, "value": "v"}
    return [{**secret, **changes}]


@pytest.mark.parametrize(
    "message",
    [
        {"id": 1},
        {"id": 1, "op": "bogus"},
        {"id": 1, "op": ["ping"]},
        {"id": 1, "op": "ping", "sandbox": "cntr_x"},
        {"op": "ping"},
        {"id": "1", "op": "ping"},
        {"id": True, "op": "ping"},
        {"id": 1, "op": "detach"},
        {"id": 1, "op": "detach", "sandbox": ""},
        {"id": 1, "op": "detach", "sandbox": 5},
        {"id": 1, "op": "detach", "sandbox": "cntr_x", "policy": {}},
        _attach(sandbox=None),
        _attach(extra=1),
        _attach(policy=None),
        _attach(policy={"type": "disabled"}),
        _attach(policy={"type": "allowlist", "allowed_domains": ["*"]}),
        _attach(policy={"type": "allowlist", "allowed_domains": []}),
        _attach(
            policy={
                "type": "allowlist",
                "allowed_domains": ["api.example.com"],
                "domain_secrets": [],
            }
        ),
        {k: v for k, v in _attach().items() if k != "secrets"},
        _attach(secrets={}),
        _attach(secrets=["K"]),
        _attach(secrets=[{"name": "K", "domain": "api.example.com", "value": "v"}]),
        _attach(secrets=[{**_secret()[0], "extra": 1}]),
        _attach(secrets=_secret(placeholder="sbxd_ph_short")),
        _attach(secrets=_secret(placeholder=None)),
        _attach(secrets=_secret() + _secret(name="L")),  # one placeholder twice
        _attach(secrets=_secret(name=5)),
        _attach(secrets=_secret(name="PATH")),  # reserved
        _attach(secrets=_secret(name="K-1")),
        _attach(secrets=_secret(domain="other.example.net")),  # not allowed
        _attach(secrets=_secret(domain=None)),
        _attach(secrets=_secret(value="")),
        _attach(secrets=_secret(value=5)),
        _attach(secrets=_secret(value="a\r\nb")),
        _attach(secrets=_secret(value="v" * 9000)),
        _attach(secrets=_secret() + _secret(placeholder="sbxd_ph_" + "b" * 32)),  # name twice
    ],
)
def test_control_refuses_a_bad_request_whole(message: dict[str, Any], listener: int) -> None:
    fd = listener if message.get("op") == "attach" else None
    with pytest.raises((control.ControlError, PolicyError)) as caught:
        control.parse(message, fd)
    assert "a\r\nb" not in str(caught.value) and "vvvv" not in str(caught.value)


def test_control_socket_only_with_attach(listener: int, tmp_path: Path) -> None:
    with pytest.raises(control.ControlError, match="takes no socket"):
        control.parse({"id": 1, "op": "ping"}, listener)
    with pytest.raises(control.ControlError, match="takes no socket"):
        control.parse({"id": 1, "op": "detach", "sandbox": "cntr_x"}, listener)
    with pytest.raises(control.ControlError, match="socket is missing"):
        control.parse(_attach(), None)
    with (
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as unbound,
        pytest.raises(control.ControlError, match="not a listening"),
    ):
        control.parse(_attach(), unbound.fileno())
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as datagram:
        datagram.bind(str(tmp_path / "d"))
        with pytest.raises(control.ControlError, match="not a listening"):
            control.parse(_attach(), datagram.fileno())
    with open(PYPROJECT, "rb") as not_a_socket:
        with pytest.raises(control.ControlError, match="not a listening"):
            control.parse(_attach(), not_a_socket.fileno())
        assert not_a_socket.read(1)  # the fd is still the caller's, open
    control.parse(_attach(), listener)
    os.fstat(listener)  # still open: the check left it alone


# --------------------------------------------------------------------------- mitmproxy version


def test_version_range_is_pyprojects() -> None:
    with open(PYPROJECT, "rb") as f:
        deps = tomllib.load(f)["project"]["dependencies"]
    [pin] = [d for d in deps if re.match(r"mitmproxy\b", d)]
    low = ".".join(map(str, version.MITMPROXY_MIN))
    high = ".".join(map(str, version.MITMPROXY_BELOW))
    assert sorted(pin.removeprefix("mitmproxy").split(",")) == sorted([f">={low}", f"<{high}"])


def test_installed_mitmproxy_is_in_range() -> None:
    assert version.check_mitmproxy() == version.metadata.version("mitmproxy")


@pytest.mark.parametrize("installed", ["12", "12.0.0", "12.3.1", "12.99.0rc1", "12.1.dev3"])
def test_version_accepted(installed: str) -> None:
    assert version.check_mitmproxy(installed) == installed


@pytest.mark.parametrize("installed", ["11.1.3", "13.0.0", "13.0.0rc1", "13", "0.1", "x", ""])
def test_version_refused(installed: str) -> None:
    with pytest.raises(SystemExit, match=r"needs mitmproxy>=12,<13"):
        version.check_mitmproxy(installed)


def test_version_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> str:
        raise version.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(version.metadata, "version", missing)
    with pytest.raises(SystemExit, match=r"mitmproxy>=12,<13 is not installed"):
        version.check_mitmproxy()
