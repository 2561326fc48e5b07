"""sandboxd_client.agents without a daemon: which paths the editor takes, what a cell's reply
tells the model."""

from __future__ import annotations

import importlib
import sys

import pytest
from sandboxd_client.agents import code_report, workspace_path
from sandboxd_client.models import CodeResult


@pytest.mark.parametrize(
    ("given", "path"),
    [
        ("a.txt", "/mnt/data/a.txt"),
        ("src/./pkg/../app.py", "/mnt/data/src/app.py"),
        ("/mnt/data/notes/x.md", "/mnt/data/notes/x.md"),
        ("/mnt/data//x", "/mnt/data/x"),
    ],
)
def test_paths_under_the_workspace(given: str, path: str) -> None:
    assert workspace_path(given) == path


@pytest.mark.parametrize(
    "given", ["", ".", "/mnt/data", "..", "../x", "a/../../x", "/etc/passwd", "/mnt/database/x"]
)
def test_paths_that_leave_it_are_refused(given: str) -> None:
    with pytest.raises(ValueError, match="is not a file under /mnt/data"):
        workspace_path(given)


def test_a_cell_report_keeps_only_what_there_is_to_say() -> None:
    quiet = CodeResult.parse(
        {
            "container_id": "cntr_1",
            "session_id": "default",
            "outcome": {"type": "ok", "state_lost": False},
            "truncated": False,
            "duration_ms": 3,
            "stdout": "",
            "stderr": "",
            "result": None,
        }
    )
    assert code_report(quiet) == {"outcome": "ok"}
    died = CodeResult.parse(
        {
            "container_id": "cntr_1",
            "session_id": "default",
            "outcome": {"type": "killed", "state_lost": True},
            "truncated": True,
            "duration_ms": 9,
            "stdout": "partial",
            "killed": "oom",
            "restarted": True,
            "restart_reason": "oom",
        }
    )
    assert code_report(died) == {
        "outcome": "killed",
        "stdout": "partial",
        "output_truncated": True,
        "state_lost": True,
        "session_restarted": "oom",
        "killed": "oom",
    }


def test_without_the_sdk_the_import_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "agents", None)  # what an absent package looks like
    monkeypatch.delitem(sys.modules, "sandboxd_client.agents")
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'sandboxd-client\[agents\]'"):
        importlib.import_module("sandboxd_client.agents")
