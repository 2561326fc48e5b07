"""The in-sandbox agent (stdlib only, its own module) and the daemon each state the caps of
the protocol between them: they must agree, or one side refuses what the other sends."""

from __future__ import annotations

import ast
from pathlib import Path

from daemon import config
from sandbox import agent_client

AGENT = Path(__file__).resolve().parents[2] / "sandbox" / "agent" / "agent.py"


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


def _agent_constants() -> dict[str, int]:
    """The agent's module-level integer constants, read without importing it."""
    found: dict[str, int] = {}
    for node in ast.parse(AGENT.read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], _int(node.value)
            if isinstance(target, ast.Name) and value is not None:
                found[target.id] = value
    return found


def test_the_daemon_and_the_agent_agree_on_the_protocol_caps() -> None:
    agent = _agent_constants()
    pairs = {
        "MAX_FRAME": agent_client.MAX_FRAME,
        "MAX_JSON": agent_client.MAX_JSON,
        "MAX_LIST_BYTES": agent_client.MAX_LIST_JSON,
        "MAX_SESSIONS": agent_client.MAX_SESSIONS,
        "MAX_CHANGED": agent_client.MAX_CHANGED_FILES,
        "MAX_STDIN": config.MAX_AGENT_STDIN,
        "MAX_CODE": config.MAX_AGENT_CODE,
        "MAX_LIST": config.MAX_AGENT_LISTED,
    }
    assert {name: agent[name] for name in pairs} == pairs
    assert config.MAX_AGENT_SESSIONS == agent_client.MAX_SESSIONS
    assert agent["MAX_FRAME"] - 256 >= agent_client.LIST_PAGE  # the agent's own page bound
