"""The agent's lean start: it imports no pure-Python module that costs start-up time, nor its
own modules for code sessions and the egress relay until they are first used, and its JSON
(built on the _json accelerator) answers exactly as the json module would.

Run under /usr/bin/python3, the sandbox's own Python on the host root, as the agent is."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from sandbox.host.agent import AGENT_SCRIPT, SANDBOX_PYTHON
from sandbox.spec import AGENT_LAZY_MODULES

pytestmark = pytest.mark.skipif(not Path(SANDBOX_PYTHON).exists(), reason="no /usr/bin/python3")

# Imported by the modules the agent avoided; any of them back means ~5-20 ms per sandbox.
HEAVY = {
    "socket",
    "selectors",
    "threading",
    "json",
    "re",
    "enum",
    "functools",
    "collections",
    "signal",
}


def _run(code: str, without_json_accelerator: bool = False) -> str:
    prelude = f"import sys; sys.path.insert(0, {str(AGENT_SCRIPT.parent)!r}); import agent\n"
    if without_json_accelerator:  # as on a Python without _json: the json module's fallback
        prelude = "import sys; sys.modules['_json'] = None\n" + prelude
    proc = subprocess.run(
        [SANDBOX_PYTHON, "-I", "-S", "-B", "-c", prelude + code],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return proc.stdout


LAZY = {name.removesuffix(".py") for name in AGENT_LAZY_MODULES}


def test_importing_the_agent_loads_none_of_the_heavy_modules() -> None:
    loaded = set(_run("print('\\n'.join(sorted(sys.modules)))").split())
    assert "agent" in loaded
    assert not (loaded & HEAVY), loaded & HEAVY
    assert not (loaded & LAZY), loaded & LAZY


def test_the_agent_loads_its_other_modules_on_first_use_and_still_none_of_the_heavy() -> None:
    code = "".join(f"agent.load_module({name!r})\n" for name in sorted(LAZY))
    loaded = set(_run(code + "print('\\n'.join(sorted(sys.modules)))").split())
    assert loaded >= LAZY | {"agent"}
    assert not (loaded & HEAVY), loaded & HEAVY


def test_the_lazy_modules_share_the_agent_even_when_it_runs_as_a_script() -> None:
    """Run under another name (as __main__), the agent is still what its modules import as
    "agent": one module, one CONFIG_ENV, not a second copy."""
    code = (
        f"import sys, types; sys.path.insert(0, {str(AGENT_SCRIPT.parent)!r})\n"
        "script = sys.modules['script'] = types.ModuleType('script')\n"
        f"script.__file__ = {str(AGENT_SCRIPT)!r}\n"
        "exec(compile(open(script.__file__).read(), script.__file__, 'exec'), script.__dict__)\n"
        "sessions = script.load_module('sessions')\n"
        "print(sessions.CONFIG_ENV is script.CONFIG_ENV, sys.modules['agent'] is script)\n"
    )
    proc = subprocess.run(
        [SANDBOX_PYTHON, "-I", "-S", "-B", "-c", code],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert proc.stdout.split() == ["True", "True"]


CASES = [
    {"op": "exec", "cmd": "echo 'hi' \u00e9 \U0001f600 \\ \"q\"", "env": {"A": "1"}, "n": -3},
    {"nested": [1, 2.5, None, True, False, {"k": []}], "big": 2**70, "e": "", "ctl": "\t\n\x01"},
    [],
    "plain",
]


@pytest.mark.parametrize("fallback", [False, True])
@pytest.mark.parametrize("ascii_only", [True, False])
def test_encoding_matches_the_json_module(ascii_only: bool, fallback: bool) -> None:
    for case in CASES:
        code = (
            "import json as j\n"
            f"obj = j.loads({json.dumps(json.dumps(case))})\n"
            f"print(agent.json_dumps(obj, ensure_ascii={ascii_only}) == "
            f"j.dumps(obj, separators=(',', ':'), ensure_ascii={ascii_only}))"
        )
        assert _run(code, fallback).strip() == "True", case


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ('{"a": [1, 2, {"b": null}]}', True),
        ('  {"a": "\\u00e9\\ud83d\\ude00"}\n', True),
        ("[1, 2.5e3, -0, true, false]", True),
        ('{"a": 1} x', False),  # trailing data
        ("", False),
        ("NaN", False),  # not JSON, whatever Python's json allows
        ('{"a": "\x01"}', False),  # control character in a string
        ("{'a': 1}", False),
        ('{"a": 1', False),
    ],
)
@pytest.mark.parametrize("fallback", [False, True])
def test_decoding_matches_the_json_module_or_refuses(text: str, ok: bool, fallback: bool) -> None:
    code = (
        "import json as j\n"
        f"text = {text!r}\n"
        "try:\n"
        "    got = agent.json_loads(text)\n"
        "except ValueError:\n"
        "    print('refused')\n"
        "else:\n"
        "    print('same' if got == j.loads(text) else 'different')\n"
    )
    assert _run(code, fallback).strip() == ("same" if ok else "refused")
