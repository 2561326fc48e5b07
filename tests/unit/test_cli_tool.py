"""Pure parts of the command line: tables, redaction, TOML rendering, argument shapes, the
attach detach keys and its stdin reads, port-forward specs."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import io
import os
import termios
import tomllib
from pathlib import Path

import pytest
from sandboxd_client import Target

from daemon import config as config_mod
from daemon.cli import build_parser, client_target
from daemon.clitool import config_show, output
from daemon.clitool.containers import CommandError, Console
from daemon.clitool.forward import is_loopback, parse_spec
from daemon.clitool.processes import signal_name, size
from daemon.clitool.run import command_line, exit_status, split_remote, upload_name
from daemon.clitool.terminal import READ, STDIN_AHEAD, DetachKeys, Relay


def test_table_aligns_columns_and_cuts_long_cells() -> None:
    text = output.table(["ID", "NAME"], [["a", "x" * 100], ["bbb", "y\nz"]])
    lines = text.splitlines()
    assert lines[0] == "ID   NAME"
    assert lines[1].startswith("a    x") and lines[1].endswith("…")
    assert len(lines[1]) == 5 + output.MAX_CELL
    assert lines[2] == "bbb  y?z"  # no control characters reach the terminal


def test_durations_and_relative_times() -> None:
    assert [output.duration(s) for s in (0, 59, 60, 7200, 90000)] == ["0s", "59s", "1m", "2h", "1d"]
    assert output.ago(100, now=160) == "1m ago"
    assert output.ago(None) == "-"
    assert output.detail({"reason": "idle", "ms": 3, "text": "two words"}) == (
        'reason=idle ms=3 text="two words"'
    )


@pytest.mark.parametrize(
    ("name", "secret"),
    [("api_keys", True), ("api_key", True), ("client_secret", True), ("tokens", True),
     ("max_json_bytes", False), ("keepalive_s", False), ("socket", False)],
)  # fmt: skip
def test_secret_key_names(name: str, secret: bool) -> None:
    assert config_show.is_secret(name) is secret


def test_rendered_defaults_load_back_to_the_same_config(tmp_path: Path) -> None:
    text = config_show.render(config_mod.Config())
    path = tmp_path / "shown.toml"
    path.write_text(text)
    assert config_mod.load(path) == config_mod.Config()
    assert "socket_mode = 0o660" in text


def test_render_redacts_and_quotes() -> None:
    stored = "sha256:" + "ab" * 32
    server = config_mod.ServerConfig(api_keys={"alice": stored, "bob smith": stored})
    cfg = config_mod.Config(server=server)
    text = config_show.render(cfg, {"server.socket": "default: /run/x.sock"})
    assert stored not in text
    shown = tomllib.loads(text)
    assert shown["server"]["api_keys"] == {"alice": "***", "bob smith": "***"}
    assert 'socket = ""  # default: /run/x.sock' in text


def test_exec_exit_codes() -> None:
    con = Console(io.StringIO(), io.StringIO())
    exit_event = {"outcome": {"type": "exit", "exit_code": 3}, "truncated": False}
    assert exit_status(exit_event, con) == 3
    assert exit_status({"outcome": {"type": "exit", "exit_code": -9}}, con) == 137
    assert exit_status({"outcome": {"type": "timeout"}}, con) == 124
    oom = {"outcome": {"type": "exit", "exit_code": 137}, "killed": "oom"}
    assert exit_status(oom, con) == 137
    assert "out of memory" in con.err.getvalue()


def test_exec_command_lines() -> None:
    assert command_line(["python3", "-c", "print(1)"], shell=False) == "python3 -c 'print(1)'"
    assert command_line(["echo", "a", "|", "wc"], shell=True) == "echo a | wc"
    args = build_parser().parse_args(["exec", "--timeout", "2", "ID", "--", "ls", "--", "-l"])
    assert (args.id, args.argv, args.timeout) == ("ID", ["ls", "--", "-l"], 2.0)


def test_cp_sides_and_upload_names() -> None:
    assert split_remote("cntr_1:/mnt/data/a.csv") == ("cntr_1", "/mnt/data/a.csv")
    assert split_remote("./a:b") is None
    assert split_remote("/tmp/x") is None
    local = Path("/tmp/report.csv")
    assert upload_name(local, "") == ("report.csv", False)
    assert upload_name(local, "/mnt/data/") == ("report.csv", False)
    assert upload_name(local, "/mnt/data/new.csv") == ("new.csv", False)
    assert upload_name(local, "/etc/new.csv") == ("new.csv", True)
    assert upload_name(local, "/srv/") == ("report.csv", True)


def test_client_target_precedence() -> None:
    parser = build_parser()
    env = {"SANDBOXD_SOCKET": "/env.sock", "SANDBOXD_API_KEY": "k"}
    assert client_target(parser.parse_args(["ls"]), env, 0).socket == "/env.sock"
    flag = parser.parse_args(["ls", "--socket", "/flag.sock"])
    assert client_target(flag, env, 0).socket == "/flag.sock"
    glob = parser.parse_args(["--socket", "/global.sock", "ls"])
    assert client_target(glob, env, 0).socket == "/global.sock"
    tcp = client_target(parser.parse_args(["ls", "--url", "http://127.0.0.1:9"]), env, 0)
    assert (tcp.url, tcp.api_key) == ("http://127.0.0.1:9", "k")
    both = parser.parse_args(["ls", "--url", "http://h:1", "--socket", "/s"])
    assert client_target(both, env, 0) is None
    assert client_target(parser.parse_args(["ls"]), {}, 0).socket == "/run/sandboxd/sandboxd.sock"


def test_process_commands_parse() -> None:
    parser = build_parser()
    detached = parser.parse_args(["exec", "-d", "ID", "--", "sleep", "9"])
    assert (detached.detach, detached.argv) == (True, ["sleep", "9"])
    assert parser.parse_args(["output", "-f", "ID", "proc_1"]).follow
    assert parser.parse_args(["kill", "ID", "PID"]).signal == "TERM"
    assert [signal_name(s) for s in ("KILL", "sigint", "SIGHUP", "15")] == [
        "KILL", "INT", "HUP", "TERM",
    ]  # fmt: skip
    with pytest.raises(CommandError):
        signal_name("99")
    assert [size(n) for n in (12, 2048, 3 << 20)] == ["12B", "2.0K", "3.0M"]


def test_detach_keys_across_reads() -> None:
    keys = DetachKeys()
    assert keys.feed(b"ls\r") == (b"ls\r", False)
    assert keys.feed(b"ab\x10") == (b"ab", False)  # a lone Ctrl-P waits
    assert keys.feed(b"x") == (b"\x10x", False)  # not followed by Ctrl-Q: sent on
    assert keys.feed(b"q\x10") == (b"q", False)
    assert keys.feed(b"\x11rest") == (b"", True)


def test_port_forward_specs() -> None:
    assert parse_spec("8000") == (8000, 8000)
    assert parse_spec("0:8000") == (0, 8000)
    assert parse_spec("9000:80") == (9000, 80)
    for bad in ("x", "1:2:3", "0", "70000", "-1:80"):
        with pytest.raises(CommandError, match=r"PORT|1\.\.65535"):
            parse_spec(bad)
    assert is_loopback("127.0.0.2") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.1")


def test_the_relay_reads_stdin_no_faster_than_it_sends() -> None:
    r, w = os.pipe()
    open_fds = {r, w}
    try:
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 1 << 20)
        os.set_blocking(w, False)
        written = 0
        with contextlib.suppress(BlockingIOError):
            while True:
                written += os.write(w, b"x" * READ)
        relay = Relay(
            Target(socket="/nonexistent"), r, 1, Console(io.StringIO(), io.StringIO()),
            raw=False, detach_keys=False,
        )  # fmt: skip

        async def scenario() -> int:
            reads = relay._stdin()
            got = len(await anext(reads))
            await asyncio.sleep(0.1)  # a slow sender: the rest stays in the pipe
            left = int.from_bytes(fcntl.ioctl(r, termios.FIONREAD, b"\0\0\0\0"), "little")
            assert left >= written - (1 + STDIN_AHEAD) * READ, (left, written)
            os.close(w)
            open_fds.discard(w)
            async for data in reads:  # then all of it, and the end
                got += len(data)
            return got

        assert asyncio.run(scenario()) == written
    finally:
        for fd in open_fds:
            os.close(fd)
