"""Runtime contract: the agent lists a workspace in byte order of the paths, paged below its
frame cap, with names that are not UTF-8 kept byte for byte (in API form)."""

from __future__ import annotations

import pytest

from sandbox import pathnames
from tests.runtime.conftest import Harness, check

pytestmark = pytest.mark.root


async def test_listing_is_in_byte_order_of_the_paths(backend: Harness, sid: str) -> None:
    rt = backend.runtime
    await check(
        rt, sid,
        "mkdir -p a a-b z && touch a/x a-b/y a- a0 'a b' z/1 \"$(printf 'n\\377')\" "
        "\"$(printf '\\303\\251')\" 'p%41'",
    )  # fmt: skip
    listing = await rt.agent(sid).list_files("/mnt/data", 100)
    assert (listing.truncated, listing.ordered) == (False, True)
    paths = [f.path for f in listing.files]
    assert paths == sorted(paths, key=pathnames.raw)
    assert {"/mnt/data/n%FF", "/mnt/data/\u00e9", "/mnt/data/p%2541"} <= set(paths)
    # a-/, a-b/y ("-" < "/") before a/x: a walk that lists whole folders first would not
    assert paths.index("/mnt/data/a-b/y") < paths.index("/mnt/data/a/x")
    cut = await rt.agent(sid).list_files("/mnt/data", 4)
    assert cut.truncated and [f.path for f in cut.files] == paths[:4]


async def test_a_listing_larger_than_a_frame_is_paged(backend: Harness, sid: str) -> None:
    """10,000 files of 120-byte paths: ~1.6 MB of listing, past the agent's 1 MiB frame."""
    rt = backend.runtime
    await check(
        rt, sid,
        "mkdir -p t && cd t && seq -f 'x%05g' 10500 | sed 's/$/_" + "n" * 96 + "/' | xargs touch",
        timeout_ms=120_000,
    )  # fmt: skip
    listing = await rt.agent(sid).list_files("/mnt/data", 10000)
    assert (len(listing.files), listing.truncated, listing.ordered) == (10000, True, True)
    assert listing.files[-1].path.startswith("/mnt/data/t/x10000_")


async def test_a_daemon_that_does_not_page_still_gets_one_frame(backend: Harness, sid: str) -> None:
    await check(backend.runtime, sid, "touch one two")
    async with backend.runtime.agent(sid).connection() as conn:
        await conn.send_json({"op": "list", "root": "/mnt/data", "max_entries": 10})
        msg = await conn.recv_json()
    assert sorted(f["path"] for f in msg["files"]) == ["/mnt/data/one", "/mnt/data/two"]
    assert msg["truncated"] is False and "more" not in msg
