"""Runtime contract: persistent Python sessions through the agent (sandbox.execution.run_code).

Each test gets its own sandbox: sessions live in the sandbox's agent, so state would leak
between tests otherwise.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from sandbox.agent_client import ExecChunk
from sandbox.errors import AgentError
from sandbox.execution import CodeOutcome, CodeRequest, run_code
from tests.runtime.conftest import Harness, check, read_all, sandbox_uid

pytestmark = pytest.mark.root

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


async def cell(
    backend: Harness,
    sid: str,
    code: str,
    *,
    session: str = "default",
    timeout_ms: int = 30_000,
    max_output: int = 1 << 20,
    max_sessions: int = 8,
    stop: asyncio.Event | None = None,
) -> tuple[str, str, CodeOutcome]:
    """Run one cell; (stdout, stderr, outcome)."""
    out, err = bytearray(), bytearray()

    async def sink(chunk: ExecChunk) -> None:
        (out if chunk.stream == "stdout" else err).extend(chunk.data)

    rt = backend.runtime
    req = CodeRequest(session, code, timeout_ms, max_output, max_sessions)
    async with rt.agent(sid).connection() as conn:
        done = await run_code(conn, lambda: rt.kill_counters(sid), req, sink, stop)
    return out.decode(), err.decode(), done


async def value(backend: Harness, sid: str, code: str, **kw: object) -> str | None:
    """The result of a cell that must succeed."""
    out, err, done = await cell(backend, sid, code, **kw)  # type: ignore[arg-type]
    assert done.result.status == "ok", (code, out, err, done)
    return done.result.result


async def test_state_persists_between_calls(backend: Harness, sid: str) -> None:
    out, err, done = await cell(backend, sid, "x = 41\nprint('hello')")
    assert (out, err, done.result.status, done.result.result) == ("hello\n", "", "ok", None)
    assert done.result.restarted is False and done.killed is None
    assert await value(backend, sid, "x + 1") == "42"
    # Only a trailing expression has a value; None has none; the repr is what is shown.
    assert await value(backend, sid, "y = x\ny") == "41"
    assert await value(backend, sid, "None") is None
    assert await value(backend, sid, "'a' * 3") == "'aaa'"
    assert await value(backend, sid, "def f():\n    return {'k': [1, 2]}\nf()") == "{'k': [1, 2]}"


async def test_error_has_traceback_and_state_survives(backend: Harness, sid: str) -> None:
    await value(backend, sid, "x = 41")
    out, _, done = await cell(backend, sid, "print('before')\ndef g():\n    return 1 / 0\ng()")
    res = done.result
    assert out == "before\n"
    assert res.status == "error" and res.result is None
    assert res.error is not None
    assert (res.error.name, res.error.value) == ("ZeroDivisionError", "division by zero")
    tb = res.error.traceback
    assert tb.startswith("Traceback (most recent call last):")
    assert 'File "<cell-2>", line 4, in <module>' in tb
    assert 'File "<cell-2>", line 3, in g' in tb and "return 1 / 0" in tb
    assert tb.rstrip().endswith("ZeroDivisionError: division by zero")
    assert "interpreter.py" not in tb
    assert await value(backend, sid, "x + 1") == "42"
    # A syntax error, SystemExit: errors too, and the session goes on.
    _, _, done = await cell(backend, sid, "def (:")
    assert done.result.error is not None and done.result.error.name == "SyntaxError"
    _, _, done = await cell(backend, sid, "raise SystemExit(3)")
    assert done.result.error is not None and done.result.error.name == "SystemExit"
    assert await value(backend, sid, "x") == "41"


async def test_timeout_interrupts_and_keeps_variables(backend: Harness, sid: str) -> None:
    await value(backend, sid, "x = 41")
    started = time.monotonic()
    _, _, done = await cell(backend, sid, "n = 0\nwhile True:\n    n += 1", timeout_ms=1000)
    elapsed = time.monotonic() - started
    res = done.result
    assert 0.9 < elapsed < 2.0, elapsed
    assert (res.status, res.stop) == ("interrupted", "timeout")
    assert res.error is not None and res.error.name == "KeyboardInterrupt"
    assert "<cell-2>" in res.error.traceback and "interpreter.py" not in res.error.traceback
    assert await value(backend, sid, "x + 1") == "42"
    assert int(await value(backend, sid, "n") or 0) > 0  # the loop ran, its effects stay
    _, _, done = await cell(backend, sid, "x")
    assert done.result.restarted is False


async def test_ignored_interrupt_is_killed_and_reported_next_call(
    backend: Harness, sid: str
) -> None:
    await value(backend, sid, "x = 41")
    # (A bare `while True: pass` would not do: CPython 3.11 raises the interrupt of such a
    # loop outside its `try`.)
    code = (
        "while True:\n"
        "    try:\n"
        "        while True:\n"
        "            n = 1\n"
        "    except KeyboardInterrupt:\n"
        "        pass\n"
    )
    started = time.monotonic()
    _, _, done = await cell(backend, sid, code, timeout_ms=500)
    assert time.monotonic() - started < 5
    assert (done.result.status, done.result.stop) == ("died", "timeout")
    _, _, done = await cell(backend, sid, "'x' in globals()")
    assert done.result.restarted is True and done.result.restart_reason == "timeout"
    assert done.result.result == "False"


async def test_oom_is_reported_and_the_next_call_restarts(backend: Harness, sid: str) -> None:
    await value(backend, sid, "x = 41")
    _, _, done = await cell(backend, sid, "b = bytearray(2 * 1024**3)", timeout_ms=60_000)
    assert done.result.status == "died"
    assert done.killed == "oom"
    assert done.result.signal == 9
    _, _, done = await cell(backend, sid, "'x' in globals()")
    assert done.result.restarted is True and done.result.result == "False"
    # The agent only saw a SIGKILL; the daemon (daemon/code.py) names it "oom".
    assert done.result.restart_reason == "killed"
    assert await check(backend.runtime, sid, "echo alive") == "alive\n"


async def test_interpreter_killed_from_outside(backend: Harness, sid: str) -> None:
    await value(backend, sid, "x = 41")
    # [i] keeps the pattern from matching the shell that runs pkill.
    await check(backend.runtime, sid, "pkill -KILL -f '[i]nterpreter.py'")
    # SIGKILL is asynchronous: wait until the process is gone (a zombie does not match -f).
    await check(
        backend.runtime, sid, "while pgrep -f '[i]nterpreter.py' >/dev/null; do sleep 0.01; done"
    )
    _, _, done = await cell(backend, sid, "globals().get('x')")
    assert (done.result.restarted, done.result.restart_reason) == (True, "killed")
    assert done.result.result is None
    assert await value(backend, sid, "x = 1\nx") == "1"
    _, _, done = await cell(backend, sid, "import os\nos._exit(3)")
    assert (done.result.status, done.result.exit_code) == ("died", 3)
    _, _, done = await cell(backend, sid, "1")
    assert (done.result.restarted, done.result.restart_reason) == (True, "exited")


async def test_named_sessions_are_independent_and_capped(backend: Harness, sid: str) -> None:
    await value(backend, sid, "x = 'a'", session="a")
    await value(backend, sid, "x = 'b'", session="b")
    assert await value(backend, sid, "x", session="a") == "'a'"
    assert await value(backend, sid, "x", session="b") == "'b'"
    assert await value(backend, sid, "'x' in globals()") == "False"  # "default"
    agent = backend.runtime.agent(sid)
    assert sorted(s.id for s in await agent.sessions()) == ["a", "b", "default"]
    with pytest.raises(AgentError) as exc:
        await cell(backend, sid, "1", session="d", max_sessions=3)
    assert exc.value.code == "too_many_sessions"
    with pytest.raises(AgentError) as exc:
        await cell(backend, sid, "1", session="bad/id")
    assert exc.value.code == "bad_session"

    await agent.delete_session("a")
    assert sorted(s.id for s in await agent.sessions()) == ["b", "default"]
    with pytest.raises(AgentError) as exc:
        await agent.delete_session("a")
    assert exc.value.code == "session_not_found"
    _, _, done = await cell(backend, sid, "'x' in globals()", session="a", max_sessions=3)
    assert (done.result.result, done.result.restarted) == ("False", False)  # a new session
    out = await check(backend.runtime, sid, "pgrep -fc '[i]nterpreter.py'")
    assert out == "3\n"


async def test_busy_session_and_listing(backend: Harness, sid: str) -> None:
    slow = asyncio.ensure_future(cell(backend, sid, "import time\ntime.sleep(1)\n'done'"))
    await asyncio.sleep(0.4)
    agent = backend.runtime.agent(sid)
    (listed,) = await agent.sessions()
    assert (listed.id, listed.status) == ("default", "busy")
    with pytest.raises(AgentError) as exc:
        await cell(backend, sid, "1")
    assert exc.value.code == "session_busy"
    assert await value(backend, sid, "2", session="other") == "2"  # others are not blocked
    _, _, done = await slow
    assert done.result.result == "'done'"
    statuses = {s.id: s.status for s in await agent.sessions()}
    assert statuses == {"default": "idle", "other": "idle"}


async def test_output_streams_is_capped_and_includes_subprocesses(
    backend: Harness, sid: str
) -> None:
    code = (
        "import sys, subprocess\n"
        "print('out')\n"
        "print('err', file=sys.stderr)\n"
        "subprocess.run(['echo', 'child'])\n"
        "import os; os.system('echo shell >&2')\n"
    )
    out, err, done = await cell(backend, sid, code)
    assert (out, err, done.result.truncated) == ("out\nchild\n", "err\nshell\n", False)
    out, _, done = await cell(backend, sid, "print('x' * 100000)", max_output=1000)
    assert out == "x" * 1000 and done.result.truncated is True
    long_repr = await value(backend, sid, "'y' * 50000")
    assert long_repr is not None and len(long_repr) == 10 << 10


async def test_environment_user_cwd_and_files(backend: Harness, sid: str) -> None:
    code = "import os, sys\n(os.getuid(), os.getcwd(), sys.executable, os.environ['MPLBACKEND'])"
    uid = sandbox_uid(backend, sid)
    assert await value(backend, sid, code) == f"({uid}, '/mnt/data', '/usr/bin/python3', 'Agg')"
    _, _, done = await cell(backend, sid, "open('a.txt', 'w').write('hello')\nos.mkdir('d')")
    assert [(f.path, f.bytes) for f in done.result.files] == [("/mnt/data/a.txt", 5)]
    _, _, done = await cell(backend, sid, "open('d/b.txt', 'w').write('1')\nopen('a.txt').read()")
    assert [f.path for f in done.result.files] == ["/mnt/data/d/b.txt"]  # a.txt only read
    # A module in the working directory imports, as in an interactive interpreter.
    await value(backend, sid, "open('helper.py', 'w').write('ANSWER = 42\\n')")
    assert await value(backend, sid, "import helper\nhelper.ANSWER") == "42"


async def test_matplotlib_figures_become_png_files(backend: Harness, sid: str) -> None:
    code = (
        "import matplotlib.pyplot as plt\n"
        "plt.plot([1, 2, 3], [1, 4, 9])\n"
        "plt.show()\n"
        "plt.figure()\n"
        "plt.bar(['a', 'b'], [3, 5])\n"
        "plt.savefig('bars.png')\n"
    )
    _, err, done = await cell(backend, sid, code, timeout_ms=60_000)
    assert done.result.status == "ok", done.result.error
    assert err == ""  # no "non-GUI backend" warning: show() is ours
    paths = sorted(f.path for f in done.result.files)
    # show() saved the first figure; the second was saved by the code and, still open at the
    # end of the cell, by the interpreter too.
    assert paths == ["/mnt/data/bars.png", "/mnt/data/figure-1.png", "/mnt/data/figure-2.png"]
    agent = backend.runtime.agent(sid)
    for path in paths:
        assert (await read_all(agent, path)).startswith(PNG_SIGNATURE)
    assert await value(backend, sid, "plt.get_fignums()") == "[]"
    _, _, done = await cell(backend, sid, "plt.plot([0, 1])\nNone")
    assert [f.path for f in done.result.files] == ["/mnt/data/figure-3.png"]


async def test_shutdown_interrupts_the_cell_and_keeps_the_session(
    backend: Harness, sid: str
) -> None:
    await value(backend, sid, "x = 41")
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.3, stop.set)
    started = time.monotonic()
    _, _, done = await cell(backend, sid, "import time\ntime.sleep(30)", stop=stop)
    assert time.monotonic() - started < 2
    assert (done.killed, done.result.status, done.result.stop) == (
        "shutdown",
        "interrupted",
        "shutdown",
    )
    assert await value(backend, sid, "x + 1") == "42"


async def test_deleting_a_busy_session_ends_its_call(backend: Harness, sid: str) -> None:
    running = asyncio.ensure_future(cell(backend, sid, "import time\ntime.sleep(30)"))
    await asyncio.sleep(0.3)
    await backend.runtime.agent(sid).delete_session("default")
    _, _, done = await asyncio.wait_for(running, 5)
    assert (done.result.status, done.result.stop) == ("died", "deleted")
    assert await backend.runtime.agent(sid).sessions() == []
    out = await check(backend.runtime, sid, "pgrep -c -f '[i]nterpreter.py' || true")
    assert out == "0\n"
