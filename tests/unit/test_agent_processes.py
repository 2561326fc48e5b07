"""The agent's process table (sandbox/agent/processes.py), in the sandbox's Python as the agent
runs: a terminal's kill takes its session leader's group first (a shell that saw its job die
before its own kill would exit 137 itself, and report no signal), and a process deleted while
it ran is described as it was then, whenever the kill's status arrives."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from sandbox.host.agent import AGENT_SCRIPT, SANDBOX_PYTHON

pytestmark = pytest.mark.skipif(not Path(SANDBOX_PYTHON).exists(), reason="no /usr/bin/python3")
AGENT_DIR = str(AGENT_SCRIPT.parent)


def _run(code: str) -> Any:
    """What `code` prints as JSON, run as the agent's modules run."""
    proc = subprocess.run(
        [SANDBOX_PYTHON, "-I", "-S", "-B", "-c", code],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return json.loads(proc.stdout)


PRELUDE = """
import json, signal, sys
sys.path.insert(0, {agent_dir!r})
import processes
"""
KILL = (
    PRELUDE
    + """
leader, others = {leader}, {others}
killed = []
processes.kill_group = killed.append
processes.tasks = lambda: [(g, leader, 1) for g in [leader, *others]] + [(1, 1, 1)]
proc = processes.Proc("proc_1", "sleep 60", 4096, (80, 24))
proc.pid = leader
proc.kill()
print(json.dumps(killed))
"""
)


# Leaders whose job groups a set of ints would iterate first (1008 % 8 < 1007 % 8), and not.
@pytest.mark.parametrize(("leader", "others"), [(1007, [1008]), (1000, [1001, 1002]), (9, [16])])
def test_the_leader_is_killed_first_then_each_other_group_once(
    leader: int, others: list[int]
) -> None:
    killed = _run(KILL.format(agent_dir=AGENT_DIR, leader=leader, others=others))
    assert killed[0] == leader
    assert sorted(killed[1:]) == sorted(others)


DELETE = (
    PRELUDE
    + """
table = processes.Processes.__new__(processes.Processes)
table.table, table.notify, table.wake = {{}}, lambda bump=False: None, lambda p: None
processes.kill_group = lambda group: None
proc = processes.Proc("proc_1", "sleep 60", 4096, None)
proc.pid = 4242
table.table[proc.id] = proc
table.forget(proc)
before = proc.describe()
proc.status = signal.SIGKILL  # the kill's wait status, arriving after the delete
print(json.dumps([before, proc.describe()]))
"""
)


def test_a_deleted_process_is_described_alike_before_and_after_its_status() -> None:
    before, after = _run(DELETE.format(agent_dir=AGENT_DIR))
    assert before == after
    assert (after["status"], after["exit_code"], after["signal"]) == ("running", None, None)
