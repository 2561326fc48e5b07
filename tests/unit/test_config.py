"""Configuration parsing: strict keys and types, documented defaults, CLI overrides."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from daemon import config as config_mod
from daemon.config import Config, ConfigError, load

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "sandboxd.example.toml"


def _flat(obj: object, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out.update(_flat(value, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = value
    return out


def test_example_documents_every_key_with_its_default() -> None:
    assert _flat(load(EXAMPLE)) == _flat(Config())


def test_unknown_key_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "c.toml"
    bad.write_text("[server]\nsokcet = '/x'\n")
    with pytest.raises(ConfigError, match=r"unknown key server\.sokcet"):
        load(bad)


@pytest.mark.parametrize(
    "text",
    [
        "log_level = 'loud'",
        "[containers]\npids = 'many'",
        "[containers]\npids = true",
        "[containers]\ndefault_minutes = 0",
        "[server]\ntcp = '127.0.0.1:9'",
        "[runtime]\nbackend = 'lxc'",
        "[runtime]\ndefault_image = '../etc'",
        "[runtime]\nimage = 'debian'",
        "[docker]\nengine_url = 'ftp://x'",
        "[docker]\nthreads = 0",
        "[server]\napi_keys = { a = 1 }",
        "[exec]\nmax_total_output = 0",
        "[agent]\nconnections = 0",
        "[agent]\nconnections = 16",  # streams, attachments and relays would take them all
        "[agent]\nqueue = -1",
        "[agent]\nreply_timeout_s = 0",
        "[processes]\nmax_terminals = 0",
        "[processes]\nmax_terminals = 9",
        "[processes]\nmax_attachments = 16",
        "[processes]\nmax_attachments = 0",
        "[processes]\nmax_frame_bytes = 0",
        "[processes]\nmax_frame_bytes = 65537",
        "[server]\napi_keys = { a = 'sk-plain-key-not-a-hash' }",
        "not toml at all [",
    ],
)
def test_bad_values_are_refused(tmp_path: Path, text: str) -> None:
    bad = tmp_path / "c.toml"
    bad.write_text(text)
    with pytest.raises(ConfigError):
        load(bad)


def test_docker_backend() -> None:
    cfg = load(None, {"runtime.backend": "docker", "docker.engine_url": "unix:///x.sock"})
    assert (cfg.runtime.backend, cfg.docker.engine_url) == ("docker", "unix:///x.sock")
    assert cfg.docker.threads == 8 and cfg.runtime.default_image == "host"


def test_overrides_win() -> None:
    cfg = load(None, {"state_dir": "/srv/x", "server.socket": "/tmp/s.sock"})
    assert cfg.state_dir == "/srv/x"
    assert cfg.server.socket == "/tmp/s.sock"


def test_default_socket() -> None:
    assert config_mod.default_socket(0, {}) == "/run/sandboxd/sandboxd.sock"
    assert config_mod.default_socket(1000, {"XDG_RUNTIME_DIR": "/run/user/1000"}) == (
        "/run/user/1000/sandboxd.sock"
    )


def test_bad_config_exits_78(tmp_path: Path) -> None:
    import logging

    from daemon.cli import main

    bad = tmp_path / "c.toml"
    bad.write_text("bogus = 1\n")
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        assert main(["serve", "--config", str(bad)]) == config_mod.EX_CONFIG
    finally:
        root.handlers[:], root.level = saved[0], saved[1]


def test_api_keys_are_stored_hashed(tmp_path: Path) -> None:
    from daemon import keys

    key = keys.new_key()
    good = tmp_path / "c.toml"
    good.write_text(f"[server]\ntcp = '127.0.0.1:9'\napi_keys = {{ a = '{keys.hash_key(key)}' }}\n")
    stored = load(good).server.api_keys["a"]
    assert keys.matches(key, stored)
    assert not keys.matches(key + "x", stored)
    assert key not in good.read_text()


def test_key_new_prints_a_key_and_its_config_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from daemon import keys
    from daemon.cli import main

    assert main(["key", "new", "alice"]) == 0
    out = capsys.readouterr().out
    key = out.split("key: ", 1)[1].split()[0]
    line = next(x for x in out.splitlines() if x.startswith("api_keys"))
    config = tmp_path / "c.toml"
    config.write_text(f"[server]\ntcp = '127.0.0.1:9'\n{line}\n")
    assert keys.matches(key, load(config).server.api_keys["alice"])
    assert main(["key", "new", "bad owner!"]) == 2
