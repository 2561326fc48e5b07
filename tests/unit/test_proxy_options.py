"""The proxy's options (proxy/options.py): one schema, defaults stated once, validated before
the proxy runs on them."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest

from daemon.config import ProxyConfig, load
from daemon.egress import ProxySettings
from proxy.options import Limits, OptionsError, ProxyOptions

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"

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
