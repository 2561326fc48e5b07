"""`sandboxd shell` and `sandboxd attach` run for real against a real daemon (runc
sandboxes; docker too), on a real terminal: each in a tmux pane of a private tmux server,
driven with send-keys and read with capture-pane. The shell takes typed commands, follows
the pane's size, ends with the remote exit code, leaves the terminal as it found it and
deletes its process; piped, it reads a script. `attach` watches read-only, and detaches with
Ctrl-P Ctrl-Q leaving the process running."""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sandboxd_client as sc

from tests.api.conftest import DaemonHandle

pytestmark = pytest.mark.root
SANDBOXD = str(Path(sys.executable).parent / "sandboxd")


@pytest.fixture
def sbx(daemon: DaemonHandle) -> Iterator[sc.Client]:
    with sc.Client(socket=daemon.socket, env={}) as client:
        yield client


@pytest.fixture
def cid(sbx: sc.Client) -> Iterator[str]:
    made = sbx.containers.create("terminal-cli").id
    try:
        yield made
    finally:
        sbx.containers.delete(made)


def wait_for(what: str, check: Callable[[], object], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


class Tmux:
    """A private tmux server (its own socket) running one command in a 100x30 pane; what
    the command exits with lands in `status`, the pane's terminal settings after it in
    `stty`."""

    def __init__(self, tmp: Path, daemon: DaemonHandle, command: str) -> None:
        if shutil.which("tmux") is None:
            pytest.fail("tmux is missing: scripts/setup --test installs it")
        self.name = f"sbx-{secrets.token_hex(4)}"
        self.status = tmp / "status"
        self.stty = tmp / "stty"
        wrapped = (
            f"SANDBOXD_SOCKET={shlex.quote(daemon.socket)} {command}; "
            f"code=$?; stty -a > {self.stty}; echo $code > {self.status}; sleep 600"
        )
        self.tmux("new-session", "-d", "-x", "100", "-y", "30", "-s", "t", wrapped)

    def tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.name, "-f", "/dev/null", *args],
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        return done.stdout

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "t", *keys)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "t")

    def shows(self, text: str) -> None:
        try:
            wait_for(f"{text!r} on the pane", lambda: text in self.screen())
        except AssertionError:
            raise AssertionError(f"no {text!r} on the pane:\n{self.screen()}") from None

    def exit_status(self) -> int:
        wait_for("the command's end", lambda: self.status.exists() and self.status.read_text())
        return int(self.status.read_text())

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.name, "kill-server"], capture_output=True, check=False)


@pytest.fixture
def tmux(tmp_path: Path, daemon: DaemonHandle) -> Iterator[Callable[[str], Tmux]]:
    made: list[Tmux] = []

    def start(command: str) -> Tmux:
        made.append(Tmux(tmp_path, daemon, command))
        return made[-1]

    yield start
    for t in made:
        t.close()


def test_shell_in_tmux(sbx: sc.Client, cid: str, tmux: Callable[[str], Tmux]) -> None:
    pane = tmux(f"{SANDBOXD} shell {cid} -e GREETING=hello")
    wait_for("the shell's process", lambda: any(p.running for p in sbx.processes.list(cid)))
    [proc] = list(sbx.processes.list(cid))
    assert proc.tty and (proc.cols, proc.rows) == (100, 30)
    pane.keys("echo hi-$((6*7)) $GREETING", "Enter")
    pane.shows("hi-42 hello")
    pane.keys("stty size; echo shell=$0", "Enter")
    pane.shows("30 100")
    pane.shows("shell=/bin/bash")  # the container has bash: a login bash
    pane.tmux("resize-window", "-t", "t", "-x", "90", "-y", "20")  # SIGWINCH -> resize
    pane.keys("clear; stty size", "Enter")
    pane.shows("20 90")
    pane.keys("sleep 100", "Enter")
    time.sleep(0.5)
    pane.keys("C-c")  # the remote terminal's: it interrupts the sleep, not us
    pane.keys("echo still-$((1+1))", "Enter")
    pane.shows("still-2")
    pane.keys("exit 3", "Enter")
    assert pane.exit_status() == 3
    settings = pane.stty.read_text()  # the pane's terminal is cooked again
    assert " icanon" in settings and " echo " in settings, settings
    wait_for("the process's deletion", lambda: not list(sbx.processes.list(cid)))


def test_shell_reads_a_piped_script(sbx: sc.Client, cid: str, daemon: DaemonHandle) -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SANDBOXD_SOCKET": daemon.socket}
    done = subprocess.run(
        [SANDBOXD, "shell", cid, "--cmd", "exec sh"], env=env, capture_output=True, text=True,
        input="echo piped-$((2+3)); test -t 0 || echo no-tty; exit 4\n", timeout=60, check=False,
    )  # fmt: skip
    assert (done.returncode, done.stdout) == (4, "piped-5\nno-tty\n"), done.stderr
    assert not list(sbx.processes.list(cid))


def test_shell_passes_all_of_a_big_pipe(sbx: sc.Client, cid: str, daemon: DaemonHandle) -> None:
    # More than the agent holds for a process that reads later: the rest waits in the
    # daemon, in TCP and in our pipe, none of it dropped.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SANDBOXD_SOCKET": daemon.socket}
    size = 5 << 20
    began = time.monotonic()
    done = subprocess.run(
        [SANDBOXD, "shell", cid, "--cmd", "sleep 1; wc -c"], env=env, capture_output=True,
        input=os.urandom(size), timeout=60, check=False,
    )  # fmt: skip
    assert (done.returncode, done.stdout.split()) == (0, [str(size).encode()]), done.stderr
    assert done.stderr == b""
    assert time.monotonic() - began < 15


def test_attach_watches_and_detaches(
    sbx: sc.Client, cid: str, daemon: DaemonHandle, tmux: Callable[[str], Tmux]
) -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SANDBOXD_SOCKET": daemon.socket}
    ticker = sbx.processes.start(cid, "for i in $(seq 1 30); do echo tick-$i; sleep 0.05; done")
    watched = subprocess.run(
        [SANDBOXD, "attach", "--ro", "--offset", "0", cid, ticker.id], env=env,
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    lines = watched.stdout.split()
    assert (watched.returncode, lines[0], lines[-1]) == (0, "tick-1", "tick-30"), watched
    failing = sbx.processes.start(cid, "sleep 1; exit 5")
    ro = subprocess.run(
        [SANDBOXD, "attach", "--ro", cid, failing.id], env=env, stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert ro.returncode == 5, ro.stderr

    shell = sbx.processes.start(cid, "exec sh", tty=True)
    pane = tmux(f"{SANDBOXD} attach {cid} {shell.id}")
    pane.keys("echo att-$((2*4))", "Enter")  # typed ahead of the attachment: kept for it
    pane.shows("att-8")
    pane.keys("C-p", "C-q")
    assert pane.exit_status() == 0, pane.screen()
    assert sbx.processes.retrieve(cid, shell.id).running  # detached, not ended


def test_a_signal_ends_the_shell_and_restores_the_terminal(
    sbx: sc.Client, cid: str, tmux: Callable[[str], Tmux]
) -> None:
    pane = tmux(f"{SANDBOXD} shell {cid}")
    pane.keys("echo ready-$((3*3))", "Enter")
    pane.shows("ready-9")
    wrapper = pane.tmux("display-message", "-p", "-t", "t", "#{pane_pid}").strip()
    children = subprocess.run(
        ["pgrep", "-P", wrapper], capture_output=True, text=True, check=True
    ).stdout.split()
    [cli] = [int(pid) for pid in children if "sandboxd" in Path(f"/proc/{pid}/cmdline").read_text()]
    os.kill(cli, signal.SIGTERM)
    assert pane.exit_status() == 128 + signal.SIGTERM, pane.screen()
    settings = pane.stty.read_text()
    assert " icanon" in settings and " echo " in settings, settings
    wait_for("the process's deletion", lambda: not list(sbx.processes.list(cid)))


def test_attach_to_a_process_without_a_terminal_reads_lines(
    sbx: sc.Client, cid: str, tmux: Callable[[str], Tmux]
) -> None:
    cat = sbx.processes.start(cid, "exec sed -u s/^/got-/")
    pane = tmux(f"{SANDBOXD} attach {cid} {cat.id}")
    pane.keys("line-one", "Enter")  # cooked: our terminal echoes it, sed answers
    pane.shows("got-line-one")
    pane.keys("C-d")  # the end of our input closes its stdin: sed ends, and so do we
    assert pane.exit_status() == 0, pane.screen()
    assert not sbx.processes.retrieve(cid, cat.id).running
