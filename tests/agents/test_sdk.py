"""sandboxd_client.agents driven by the real Agents SDK `Runner` with a scripted model, against
a real daemon (runc sandboxes): what each tool did reaches the model's next turn in the shape
the SDK gives it (`shell_call_output`, `apply_patch_call_output`, `function_call_output`)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import pytest
import sandboxd_client as sc
from agents import Agent, RunConfig, Runner
from sandboxd_client.agents import sandbox_tools

from tests.agents.scripted import ScriptedModel, function, patch, say, shell
from tests.api.conftest import DaemonHandle

# On runc only (tests/conftest.py): the adapter only calls the client, which tests/client runs.
pytestmark = pytest.mark.root

# No trace export: the runs must not reach for any network service.
QUIET = RunConfig(tracing_disabled=True)


@pytest.fixture
async def asbx(daemon: DaemonHandle) -> AsyncIterator[sc.AsyncClient]:
    async with sc.AsyncClient(socket=daemon.socket, env={}) as client:
        yield client


@pytest.fixture
def sbx(daemon: DaemonHandle) -> Iterator[sc.Client]:
    with sc.Client(socket=daemon.socket, env={}) as client:
        yield client


async def test_shell_apply_patch_and_python_reach_the_model(asbx: sc.AsyncClient) -> None:
    box = await asbx.containers.create("agents-sdk")
    try:
        model = ScriptedModel(
            [
                [
                    shell("s1", "echo hello", "echo oops >&2; exit 3"),
                    shell("s2", "echo started; sleep 5", timeout_ms=300),
                    shell("s3", "yes | head -c 5000", max_output_length=100),
                ],
                [patch("p1", "create_file", "notes/todo.txt", "+one\n+two\n")],
                [patch("p2", "update_file", "notes/todo.txt", "@@\n one\n-two\n+three\n")],
                [
                    shell("s4", "cat /mnt/data/notes/todo.txt"),
                    patch("p3", "update_file", "notes/todo.txt", "@@\n nope\n-two\n+x\n"),
                    patch("p4", "delete_file", "gone.txt"),
                    patch("p5", "create_file", "../etc/passwd", "+x\n"),
                    patch("p6", "create_file", "/mnt/data/notes/todo.txt", "+again\n"),
                ],
                [
                    patch("p7", "delete_file", "notes/todo.txt"),
                    function("f1", "run_python", code="x = 6 * 7\nprint('set')"),
                ],
                [function("f2", "run_python", code="open('out.csv', 'w').write('a\\n')\nx")],
                [function("f3", "run_python", code="1 / 0")],
                [say("done")],
            ]
        )
        agent = Agent(name="coder", model=model, tools=sandbox_tools(asbx, box.id))
        result = await Runner.run(agent, "work in the sandbox", run_config=QUIET)
        assert result.final_output == "done"

        # The shell: each command's stdout, stderr and outcome, as exec gave them.
        shells = model.outputs(1)
        assert shells["s1"]["type"] == "shell_call_output"
        assert shells["s1"]["output"] == [
            {"stdout": "hello\n", "stderr": "", "outcome": {"type": "exit", "exit_code": 0}},
            {"stdout": "", "stderr": "oops\n", "outcome": {"type": "exit", "exit_code": 3}},
        ]
        (timed_out,) = shells["s2"]["output"]  # the call's timeout_ms reached exec
        assert timed_out["outcome"] == {"type": "timeout"}
        assert timed_out["stdout"] == "started\n"  # what it wrote before the timeout
        (capped,) = shells["s3"]["output"]  # and so did its max_output_length
        assert capped["stdout"] == "y\n" * 50 and shells["s3"]["max_output_length"] == 100

        # apply_patch: create (folders made), update (the SDK's V4A diff), then the refusals.
        assert model.outputs(2)["p1"] == {
            "type": "apply_patch_call_output",
            "call_id": "p1",
            "status": "completed",
            "output": "Created /mnt/data/notes/todo.txt",
        }
        assert model.outputs(3)["p2"]["status"] == "completed"
        after = model.outputs(4)
        assert after["s4"]["output"][0]["stdout"] == "one\nthree"
        refused = {key: after[key] for key in ("p3", "p4", "p5", "p6")}
        assert {key: out["status"] for key, out in refused.items()} == dict.fromkeys(
            refused, "failed"
        )
        assert refused["p3"]["output"].startswith(
            "the diff does not apply to /mnt/data/notes/todo.txt: Invalid Context"
        )
        assert "No such file or directory" in refused["p4"]["output"]
        assert refused["p5"]["output"] == "'../etc/passwd' is not a file under /mnt/data"
        assert "already exists" in refused["p6"]["output"]
        assert model.outputs(5)["p7"] == {
            "type": "apply_patch_call_output",
            "call_id": "p7",
            "status": "completed",
            "output": "Deleted /mnt/data/notes/todo.txt",
        }

        # run_python: one session (x survives), the files a cell wrote, an error's traceback.
        assert model.outputs(5)["f1"]["type"] == "function_call_output"
        assert json.loads(model.outputs(5)["f1"]["output"]) == {"outcome": "ok", "stdout": "set\n"}
        assert json.loads(model.outputs(6)["f2"]["output"]) == {
            "outcome": "ok",
            "result": "42",
            "files": ["/mnt/data/out.csv"],
        }
        failed = json.loads(model.outputs(7)["f3"]["output"])
        assert failed["outcome"] == "error"
        assert failed["error"] == "ZeroDivisionError: division by zero"
        assert "1 / 0" in failed["traceback"]

        # And the sandbox holds what the tools left, no more.
        left = await asbx.exec(box.id, ["ls -A notes", "cat out.csv"])
        assert [(o.stdout, o.exit_code) for o in left.output] == [("", 0), ("a\n", 0)]
    finally:
        await asbx.containers.delete(box.id)


def test_the_blocking_client_under_run_sync(sbx: sc.Client) -> None:
    box = sbx.containers.create("agents-sdk-sync")
    try:
        sbx.exec(box.id, "printf 'héllo\\r\\nworld\\r\\n' > crlf.txt; printf '\\377' > bin.dat")
        moved = patch("p2", "update_file", "crlf.txt", "@@\n-héllo\n+hi\n world\n")
        moved_call = moved.model_dump()
        moved_call["operation"]["move_to"] = "sub/moved.txt"  # not in openai's type, the SDK's
        model = ScriptedModel(
            [
                [
                    shell("s1", "echo $((6 * 7))"),
                    function("f1", "run_python", code="import os\nos.getcwd()"),
                    patch("p1", "update_file", "bin.dat", "@@\n-x\n+y\n"),
                ],
                [moved_call],
                [say("done")],
            ]
        )
        agent = Agent(name="coder", model=model, tools=sandbox_tools(sbx, box.id))
        assert Runner.run_sync(agent, "go", run_config=QUIET).final_output == "done"

        first = model.outputs(1)
        assert first["s1"]["output"] == [
            {"stdout": "42\n", "stderr": "", "outcome": {"type": "exit", "exit_code": 0}}
        ]
        assert json.loads(first["f1"]["output"]) == {"outcome": "ok", "result": "'/mnt/data'"}
        assert first["p1"]["status"] == "failed"
        assert first["p1"]["output"] == "/mnt/data/bin.dat is not UTF-8 text"
        assert model.outputs(2)["p2"]["output"] == (
            "Updated /mnt/data/crlf.txt and moved it to /mnt/data/sub/moved.txt"
        )
        # The file's CRLF line ends and its UTF-8 survive the patch; the old path is gone.
        check = sbx.exec(box.id, ["od -c sub/moved.txt | head -1", "test -e crlf.txt"])
        assert check.output[0].stdout.split()[1:] == [
            "h",
            "i",
            "\\r",
            "\\n",
            "w",
            "o",
            "r",
            "l",
            "d",
            "\\r",
            "\\n",
        ]
        assert check.output[1].exit_code == 1
    finally:
        sbx.containers.delete(box.id)
