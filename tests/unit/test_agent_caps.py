"""The in-sandbox agent (stdlib only, its own module) and the daemon each state the caps of
the protocol between them: they must agree, or one side refuses what the other sends."""

from __future__ import annotations

import ast
from pathlib import Path

from daemon import config
from sandbox import agent_client
from sandbox.host import agent as host_agent
from sandbox.spec import AGENT_LAZY_MODULES

AGENT_DIR = Path(__file__).resolve().parents[2] / "sandbox" / "agent"
# agent.py and the modules it imports on first use (interpreter.py is its own process).
AGENT_MODULES = ("agent.py", *AGENT_LAZY_MODULES)
# (the agent's name, the daemon module, the daemon's name) of each cap both sides state.
SAME_CAPS = [
    ("PROTOCOL_VERSION", agent_client, "PROTOCOL_VERSION"),
    ("MAX_FRAME", agent_client, "MAX_FRAME"),
    ("MAX_JSON", agent_client, "MAX_JSON"),
    ("MAX_LIST_BYTES", agent_client, "MAX_LIST_JSON"),
    ("MAX_SESSIONS", agent_client, "MAX_SESSIONS"),
    ("MAX_CHANGED", agent_client, "MAX_CHANGED_FILES"),
    ("MAX_STDIN", config, "MAX_AGENT_STDIN"),
    ("MAX_CODE", config, "MAX_AGENT_CODE"),
    ("MAX_LIST", config, "MAX_AGENT_LISTED"),
    ("MAX_SESSIONS", config, "MAX_AGENT_SESSIONS"),
    ("MAX_PROCESSES", agent_client, "MAX_PROCESSES"),
    ("MAX_PROCESS_INPUT", agent_client, "MAX_PROCESS_INPUT"),
    ("MAX_WAIT_MS", agent_client, "MAX_WAIT_MS"),
    ("MAX_TERM_SIZE", agent_client, "MAX_TERM_SIZE"),
    ("MAX_PROCESSES", config, "MAX_AGENT_PROCESSES"),
    ("MAX_RING", config, "MAX_AGENT_RING"),
    ("MAX_RING_TOTAL", config, "MAX_AGENT_RING_TOTAL"),
    ("MAX_PROCESS_INPUT", config, "MAX_AGENT_PROCESS_INPUT"),
    ("MAX_PROCESS_COMMAND", config, "MAX_AGENT_PROCESS_COMMAND"),
    ("MAX_CONNECT_MS", config, "MAX_AGENT_PORT_CONNECT_MS"),
    ("IMAGE_ENV_PREFIX", host_agent, "IMAGE_ENV_PREFIX"),
]


_OPS = {ast.LShift: int.__lshift__, ast.Mult: int.__mul__, ast.Add: int.__add__}


def _int(node: ast.expr) -> int | None:
    """An integer literal or `a << b`, `a * b`, `a + b` of them; None for anything else."""
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        left, right = _int(node.left), _int(node.right)
        if left is not None and right is not None:
            return _OPS[type(node.op)](left, right)
    return None


def _module_constants(path: Path) -> dict[str, int | str]:
    """A module's module-level integer (and string) constants, read without importing it."""
    found: dict[str, int | str] = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            value: int | str | None = _int(node.value)
            if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                value = node.value.value
            if isinstance(target, ast.Name) and value is not None:
                found[target.id] = value
    return found


def _agent_constants() -> dict[str, int | str]:
    """The agent's constants, from all its modules (a name two of them state must agree)."""
    found: dict[str, int | str] = {}
    for name in AGENT_MODULES:
        for key, value in _module_constants(AGENT_DIR / name).items():
            assert found.setdefault(key, value) == value, (name, key)
    return found


def test_the_daemon_and_the_agent_agree_on_the_protocol_caps() -> None:
    agent = _agent_constants()
    daemon = {(name, module.__name__): getattr(module, name) for _, module, name in SAME_CAPS}
    assert {(name, m.__name__): agent[ours] for ours, m, name in SAME_CAPS} == daemon
    assert agent["MAX_FRAME"] - 256 >= agent_client.LIST_PAGE  # the agent's own page bound


def test_every_cap_the_daemon_states_for_the_agent_is_checked() -> None:
    """A cap added on the daemon's side (a MAX_* of agent_client, a MAX_AGENT_* of the
    config) must be added to SAME_CAPS, against the agent's own."""
    for module, stated in (
        (agent_client, lambda name: name.startswith("MAX_") or name == "PROTOCOL_VERSION"),
        (config, lambda name: name.startswith("MAX_AGENT_")),
    ):
        names = {name for name in _module_constants(Path(str(module.__file__))) if stated(name)}
        checked = {name for _, m, name in SAME_CAPS if m is module}
        assert names == checked, (module.__name__, names ^ checked)
