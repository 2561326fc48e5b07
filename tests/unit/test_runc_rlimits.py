"""A sandbox's rlimits are in place before runc's first instruction, so its init (forked by
runc whenever runc gets to it) inherits them, however late the daemon's create thread runs
again after starting runc (a busy interpreter, a loaded host: seen as 500s on concurrent
creates when the limits were set on runc from outside once it had started)."""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from sandbox.oci.runc import OciCli

FAKE_RUNC = """#!/bin/sh
while [ "$1" != "--bundle" ]; do shift; done
cat /proc/self/limits > "$2/limits"
"""


def test_runc_starts_under_the_sandbox_limits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "runc"
    fake.write_text(FAKE_RUNC)
    fake.chmod(0o755)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert soft > 64, "the test process must run with more than the sandbox's files"
    spawn: Callable[..., int] = os.posix_spawn

    def late(*args: Any, **kwargs: Any) -> int:  # the create thread runs again 200 ms later
        pid = spawn(*args, **kwargs)
        time.sleep(0.2)
        return pid

    monkeypatch.setattr(os, "posix_spawn", late)
    read, write = os.pipe()
    try:
        with ThreadPoolExecutor(1) as executor:
            bundle = tmp_path / "bundle"
            bundle.mkdir()
            limits = [("nofile", 64), ("fsize", 1 << 20), ("core", 0)]
            OciCli(str(fake), tmp_path / "root", executor).run_detached("c", bundle, read, limits)
    finally:
        os.close(read)
        os.close(write)
    table = (bundle / "limits").read_text().splitlines()
    row = {ln[:26].strip(): ln[26:].split()[:2] for ln in table[1:]}
    assert row["Max open files"] == ["64", "64"]
    assert row["Max file size"] == [str(1 << 20)] * 2
    assert row["Max core file size"] == ["0", "0"]
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (soft, hard)  # the daemon's own
