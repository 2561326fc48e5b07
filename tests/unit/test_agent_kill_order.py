"""A terminal process's kill (DELETE, or SIGKILL) takes its session leader's group first: a
shell that saw its job die before its own kill would exit 137 itself, and the process would
report an exit code instead of its signal. Run under the sandbox's Python, as the agent is."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from sandbox.host.agent import AGENT_SCRIPT, SANDBOX_PYTHON

pytestmark = pytest.mark.skipif(not Path(SANDBOX_PYTHON).exists(), reason="no /usr/bin/python3")

KILL = """
import json, sys
sys.path.insert(0, {agent_dir!r})
import processes
leader, others = {leader}, {others}
killed = []
processes.kill_group = killed.append
processes.tasks = lambda: [(g, leader, 1) for g in [leader, *others]] + [(1, 1, 1)]
proc = processes.Proc("proc_1", "sleep 60", 4096, (80, 24))
proc.pid = leader
proc.kill()
print(json.dumps(killed))
"""


# Leaders whose job groups a set of ints would iterate first (1008 % 8 < 1007 % 8), and not.
@pytest.mark.parametrize(("leader", "others"), [(1007, [1008]), (1000, [1001, 1002]), (9, [16])])
def test_the_leader_is_killed_first_then_each_other_group_once(
    leader: int, others: list[int]
) -> None:
    code = KILL.format(agent_dir=str(AGENT_SCRIPT.parent), leader=leader, others=others)
    proc = subprocess.run(
        [SANDBOX_PYTHON, "-I", "-S", "-B", "-c", code],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    killed = json.loads(proc.stdout)
    assert killed[0] == leader
    assert sorted(killed[1:]) == sorted(others)
