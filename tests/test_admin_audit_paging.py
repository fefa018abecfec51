"""``GET /admin/v1/audit`` pages with a cursor: ``after`` (the ``last_seq`` of the page
before) names a place in the log that entries written while a script pages do not move, as
they move ``offset`` (the next page repeated entries of the one before). The session stack."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import pytest

from switchyard.admin.audit import AuditLog, AuditQuery
from switchyard.bus import identities
from tests.stacks import Stack

pytestmark = pytest.mark.integration


async def _made(stack: Stack, name: str) -> None:
    made = await stack.admin("POST", "/keys", {"name": name})
    assert made.status_code == 201, made.text


async def _page(stack: Stack, query: str) -> dict[str, Any]:
    answer = await stack.admin("GET", f"/audit?{query}")
    assert answer.status_code == 200, answer.text
    doc: dict[str, Any] = answer.json()
    return doc


async def _settled(stack: Stack, query: str, count: int) -> None:
    async with asyncio.timeout(10):
        while (await _page(stack, f"{query}&limit=500"))["total"] < count:
            await asyncio.sleep(0.1)


async def test_a_cursor_page_is_not_shifted_by_entries_written_while_paging(
    stack: Stack,
) -> None:
    mark = f"auditpage-{secrets.token_hex(4)}"
    query = f"q={mark}&kind=key"
    for i in range(3):
        await _made(stack, f"{mark}-{i}")
    await _settled(stack, query, 3)
    first = await _page(stack, f"{query}&limit=2")
    assert len(first["entries"]) == 2
    assert first["has_more"] is True
    assert first["last_seq"] == first["entries"][-1]["seq"]

    await _made(stack, f"{mark}-3")  # written while the script pages
    await _settled(stack, query, 4)

    after = await _page(stack, f"{query}&limit=2&after={first['last_seq']}")
    assert len(after["entries"]) == 1  # the oldest, and nothing of the first page again
    assert after["entries"][0]["seq"] < first["last_seq"]
    assert after["has_more"] is False
    assert after["total"] == 4  # every match, as before: the cursor only places the page
    assert f"{mark}-0" in after["entries"][0]["detail"]

    # offset still works for older callers (and shows why the cursor is needed).
    shifted = await _page(stack, f"{query}&limit=2&offset=2")
    assert shifted["entries"][0]["seq"] == first["entries"][-1]["seq"]  # a repeat

    # Nothing after the last entry: an empty page, no cursor.
    end = await _page(stack, f"{query}&after={after['last_seq']}")
    assert end["entries"] == []
    assert end["last_seq"] is None
    assert end["has_more"] is False
    assert end["truncated"] is False  # the session's log is all held
    assert end["oldest_seq"] is not None
    assert end["oldest_seq"] <= after["last_seq"]

    for bad in ("0", "x", "-3"):
        refused = await stack.admin("GET", f"/audit?{query}&after={bad}")
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["param"] == "after"


async def test_a_page_says_when_the_stream_holds_entries_older_than_the_gateway(
    stack: Stack,
) -> None:
    """The gateway holds the newest entries only; the stream keeps more. Paging to
    ``has_more: false`` there must not read as "everything": the page says ``truncated``
    and the oldest sequence held (here a follower that holds 2 of the stack's entries)."""
    for i in range(3):
        await _made(stack, f"audittrunc-{i}")
    nc = await stack.connect(identities.ADMIN.name)
    log = AuditLog(nc, keep=2)
    try:
        await log.start()
        page = log.query(AuditQuery(limit=500))
        assert len(page.entries) == 2
        assert page.more is False  # the end of what is held...
        assert page.truncated is True  # ...which is not the stream's
        assert page.oldest_seq == page.entries[-1].seq
        await _made(stack, "audittrunc-3")  # the follower drops its oldest to take it
        async with asyncio.timeout(10):
            while log.query(AuditQuery(limit=500)).entries[0].seq == page.entries[0].seq:
                await asyncio.sleep(0.05)
        later = log.query(AuditQuery(limit=500))
        assert later.truncated is True
        assert later.oldest_seq == page.entries[0].seq
    finally:
        await log.stop()
        await nc.close()
