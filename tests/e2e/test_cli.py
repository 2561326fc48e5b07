"""The `sandboxd` console script, run for real against a real daemon (and `check`, `config
show`, which need none)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import DaemonProcess

pytestmark = [pytest.mark.root, pytest.mark.e2e]
SANDBOXD = str(Path(sys.executable).parent / "sandboxd")


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    d = DaemonProcess()
    try:
        d.start()
        yield d
        d.stop()
    finally:
        d.cleanup()


def sbx(
    *args: str, socket: str = "", stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
    if socket:
        env["SANDBOXD_SOCKET"] = socket
    return subprocess.run(
        [SANDBOXD, *args], env=env, input=stdin, capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip


def test_a_container_from_create_to_rm(daemon: DaemonProcess, tmp_path: Path) -> None:
    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return sbx(*args, socket=daemon.socket, stdin=stdin)

    created = run("create", "cli-demo", "--minutes", "5", "--image", "host")
    assert created.returncode == 0, created.stderr
    cid = created.stdout.strip()
    assert cid.startswith("cntr_")

    table = run("ls")
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].split() == [
        "ID", "NAME", "STATUS", "MEMORY", "CREATED", "LAST", "ACTIVE",
    ]  # fmt: skip
    assert any(cid in line and "cli-demo" in line for line in table.stdout.splitlines())
    listed = json.loads(run("ls", "--json").stdout)
    assert [(c["id"], c["image"]) for c in listed if c["name"] == "cli-demo"] == [(cid, "host")]
    unbuilt = run("create", "cli-demo", "--image", "not-built")
    assert unbuilt.returncode != 0 and "available images are host" in unbuilt.stderr

    one = run("exec", cid, "--", "python3", "-c", "print(1)")
    assert (one.returncode, one.stdout) == (0, "1\n"), one.stderr
    assert run("exec", cid, "--", "sh", "-c", "exit 3").returncode == 3
    split = run("exec", "cli-demo", "--", "sh", "-c", "echo out; echo err >&2")  # by name
    assert (split.stdout, split.stderr) == ("out\n", "err\n")
    piped = run("exec", "-i", "-e", "GREETING=hi", cid, "--", "sh", "-c", 'echo $GREETING; wc -l',
                stdin="a\nb\n")  # fmt: skip
    assert piped.stdout.split() == ["hi", "2"]
    timed_out = run("exec", "--timeout", "0.5", cid, "--", "sleep", "10")
    assert timed_out.returncode == 124
    assert "timed out" in timed_out.stderr

    local = tmp_path / "data.bin"
    local.write_bytes(os.urandom(300_000) + "é\n".encode())
    up = run("cp", str(local), f"{cid}:/mnt/data/")
    assert (up.returncode, up.stdout) == (0, "/mnt/data/data.bin\n"), up.stderr
    back = tmp_path / "back.bin"
    down = run("cp", f"{cid}:data.bin", str(back))
    assert down.returncode == 0, down.stderr
    assert back.read_bytes() == local.read_bytes()
    renamed = run("cp", str(local), f"{cid}:/etc/x.bin")
    assert renamed.stdout == "/mnt/data/x.bin\n"
    assert "only the file name" in renamed.stderr
    assert run("cp", f"{cid}:/mnt/data/missing", str(back)).returncode == 1

    logs = run("logs", cid)
    assert logs.returncode == 0, logs.stderr
    assert any(line.split()[2:3] == ["created"] for line in logs.stdout.splitlines()[1:])

    gone = run("rm", cid)
    assert (gone.returncode, gone.stdout) == (0, f"{cid}\n"), gone.stderr
    assert cid not in run("ls", "--all").stdout
    missing = run("exec", cid, "--", "true")
    assert missing.returncode == 1
    assert missing.stderr.startswith("sandboxd: No container found")


def test_exec_streams_output_as_it_happens(daemon: DaemonProcess) -> None:
    cid = sbx("create", "cli-stream", socket=daemon.socket).stdout.strip()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SANDBOXD_SOCKET": daemon.socket}
    started = time.monotonic()
    with subprocess.Popen(
        [SANDBOXD, "exec", cid, "--", "sh", "-c", "echo first; sleep 2; echo second"],
        env=env, stdout=subprocess.PIPE, text=True,
    ) as proc:  # fmt: skip
        assert proc.stdout is not None
        assert proc.stdout.readline() == "first\n"
        first_after = time.monotonic() - started
        assert proc.stdout.read() == "second\n"
        assert proc.wait(timeout=30) == 0
    assert first_after < 1.5


def test_background_processes(daemon: DaemonProcess) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return sbx(*args, socket=daemon.socket)

    cid = run("create", "cli-procs").stdout.strip()
    script = "echo first; sleep 2; echo second; echo oops >&2"
    started = run("exec", "-d", cid, "--", "sh", "-c", script)
    assert started.returncode == 0, started.stderr
    pid = started.stdout.strip()
    assert pid.startswith("proc_")
    table = run("ps", cid)
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].split() == ["ID", "STATUS", "STARTED", "OUTPUT", "COMMAND"]
    assert any(line.split()[:2] == [pid, "running"] for line in table.stdout.splitlines())
    followed = run("output", cid, pid, "-f")  # until it ends
    assert (followed.returncode, followed.stdout, followed.stderr) == (
        0,
        "first\nsecond\n",
        "oops\n",
    )
    assert run("output", cid, pid[:10]).stdout == "first\nsecond\n"  # by a prefix
    assert run("output", "--offset", "6", cid, pid).stdout == "second\n"
    (listed,) = json.loads(run("ps", "--json", cid).stdout)
    assert (listed["id"], listed["status"], listed["exit_code"]) == (pid, "exited", 0)

    long = run("exec", "-d", cid, "--", "sleep", "60").stdout.strip()
    killed = run("kill", cid, long)
    assert (killed.returncode, killed.stdout) == (0, f"{long}\n"), killed.stderr
    deadline = time.monotonic() + 10
    while (found := json.loads(run("ps", "--json", cid).stdout)[-1])["status"] == "running":
        assert time.monotonic() < deadline, found
        time.sleep(0.1)
    assert found["exit_code"] == 128 + 15
    again = run("kill", "-s", "KILL", cid, long)  # it has ended: the API's 409
    assert again.returncode == 1 and again.stderr.startswith("sandboxd: ")
    assert run("exec", "-d", "-i", cid, "--", "cat").returncode == 2
    assert "forget" in run("kill", "--help").stdout
    assert run("rm", cid).returncode == 0


def test_top_once_lists_running_containers(daemon: DaemonProcess) -> None:
    cid = sbx("create", "cli-top", socket=daemon.socket).stdout.strip()
    top = sbx("top", "--once", socket=daemon.socket)
    assert top.returncode == 0, top.stderr
    assert "running" in top.stdout.splitlines()[0]
    assert any(line.startswith(cid) for line in top.stdout.splitlines())


def test_unreachable_daemon_exits_69(tmp_path: Path) -> None:
    result = sbx("ls", socket=str(tmp_path / "nothing.sock"))
    assert result.returncode == 69
    assert "is sandboxd running?" in result.stderr
    assert str(tmp_path / "nothing.sock") in result.stderr


def _check_traces() -> set[Path]:
    return {*Path("/tmp").glob("sbxd-check-*"), *Path("/sys/fs/cgroup").glob("*/sandboxd-check-*")}


def test_check_json_reports_a_working_runtime() -> None:
    before = _check_traces()
    result = sbx("check", "--json", timeout=120)
    report = json.loads(result.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["runtime"]["status"] == "OK", checks["runtime"]
    assert "started and removed a sandbox" in checks["runtime"]["detail"]
    assert {c["status"] for c in report["checks"]} <= {"OK", "WARN", "FAIL"}
    assert result.returncode == (0 if report["ok"] else 1)
    assert _check_traces() - before == set()  # temp dirs, cgroups


def test_config_show_redacts_keys(tmp_path: Path) -> None:
    stored = "sha256:" + hashlib.sha256(b"sk-test-secret").hexdigest()
    config = tmp_path / "config.toml"
    config.write_text(
        f'[server]\ntcp = "127.0.0.1:18080"\napi_keys = {{ alice = "{stored}" }}\n'
        "[containers]\npids = 77\n"
    )
    result = sbx("config", "show", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert stored not in result.stdout
    shown = tomllib.loads(result.stdout)
    assert shown["server"]["api_keys"] == {"alice": "***"}
    assert shown["containers"]["pids"] == 77
    assert shown["exec"]["default_timeout_ms"] == 60000  # defaults are shown too

    config.write_text("no_such_key = 1\n")
    bad = sbx("config", "show", "--config", str(config))
    assert bad.returncode == 78
    assert bad.stderr.strip() == "sandboxd: bad configuration: unknown key no_such_key"
