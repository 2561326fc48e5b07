"""scripts/install into a staging root: everything lands, twice is a no-op, config loads."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from daemon.config import ServerConfig, load

REPO = Path(__file__).resolve().parents[2]


def _install(destdir: Path) -> str:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "DESTDIR": str(destdir),
        "PREFIX": "/opt/sbx",
        "SANDBOXD_SKIP_VENV": "1",
        # git's safe.directory for a checkout another user owns (scripts/as-nobody sets it)
        **{k: v for k, v in os.environ.items() if k.startswith("GIT_CONFIG_")},
    }
    proc = subprocess.run(
        [str(REPO / "scripts" / "install")], env=env, capture_output=True, text=True, check=True
    )
    return proc.stderr


def test_install_is_complete_and_idempotent(tmp_path: Path) -> None:
    first = _install(tmp_path)
    for path in (
        "etc/systemd/system/sandboxd.service",
        "etc/systemd/system/sandboxd.socket",
        "usr/lib/sysusers.d/sandboxd.conf",
        "usr/lib/tmpfiles.d/sandboxd.conf",
        "etc/sandboxd/config.toml",
        "opt/sbx/daemon/cli.py",
        "opt/sbx/sandbox/seccomp.json",
        "opt/sbx/config/images/minimal.toml",  # where `sandboxd image build` finds recipes
        "opt/sbx/config/images/python-data.toml",
    ):
        assert (tmp_path / path).is_file(), path
    unit = (tmp_path / "etc/systemd/system/sandboxd.service").read_text()
    assert "ExecStart=/opt/sbx/.venv/bin/sandboxd serve --config /etc/sandboxd/config.toml" in unit
    assert "KillMode=process" in unit and "Delegate=yes" in unit
    assert "wrote /etc/sandboxd/config.toml" in first
    config = tmp_path / "etc/sandboxd/config.toml"
    assert load(config).server.socket_group == "sandboxd"
    config.write_text(config.read_text() + "\n# edited by the admin\n")
    second = _install(tmp_path)
    assert "wrote" not in second  # nothing changed, and the admin's config is kept
    assert config.read_text().endswith("# edited by the admin\n")


def test_the_default_shutdown_fits_in_the_units_stop_timeout() -> None:
    """systemd SIGKILLs a daemon still stopping after TimeoutStopSec: the staged shutdown
    (drain, kill grace, cancel, tasks) plus what follows it unbounded by a stage (pool drain,
    proxy, runtime and store close) must end before that."""
    after_stages_s = 8.0
    unit = (REPO / "systemd" / "sandboxd.service").read_text()
    (line,) = [x for x in unit.splitlines() if x.startswith("TimeoutStopSec=")]
    stop_timeout_s = float(line.removeprefix("TimeoutStopSec=").removesuffix("s"))
    assert ServerConfig().shutdown_budget_s() + after_stages_s <= stop_timeout_s
