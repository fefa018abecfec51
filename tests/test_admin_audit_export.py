"""The audit log as a file: ``GET /admin/v1/audit/export`` (the admin token) and the Audit
page's Download (the web app's session) give every entry the list's filters match, oldest
first, one JSON object per line with the list's fields. The session stack's gateway."""

from __future__ import annotations

import asyncio
import html
import json
import re
import secrets
from typing import Any

import httpx
import pytest

from tests.stacks import Stack

pytestmark = pytest.mark.integration


def _lines(answer: httpx.Response) -> list[dict[str, Any]]:
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/jsonl")
    assert answer.headers["content-disposition"].startswith('attachment; filename="audit-')
    assert answer.text.endswith("\n")
    return [json.loads(line) for line in answer.text.splitlines()]


async def _listed(stack: Stack, query: str, count: int) -> list[dict[str, Any]]:
    """The list endpoint's entries for ``query``, newest first, once ``count`` are there."""
    async with asyncio.timeout(10):
        while True:
            entries = (await stack.admin("GET", f"/audit?{query}&limit=500")).json()["entries"]
            if len(entries) >= count:
                return list(entries)
            await asyncio.sleep(0.1)


async def test_the_export_gives_every_match_oldest_first_with_the_lists_fields(
    stack: Stack, signed_in: tuple[httpx.AsyncClient, str]
) -> None:
    mark = f"export-{secrets.token_hex(4)}"
    ids = []
    for i in range(3):
        made = await stack.admin("POST", "/keys", {"name": f"{mark}-{i}"})
        assert made.status_code == 201, made.text
        ids.append(made.json()["record"]["id"])
    revoked = await stack.admin("POST", f"/keys/{ids[0]}/revoke")
    assert revoked.status_code == 200
    query = f"q={mark}&kind=key&via=api"
    listed = await _listed(stack, query, 4)
    exported = _lines(await stack.admin("GET", f"/audit/export?{query}"))
    assert exported == listed[::-1]  # the same entries and fields, oldest first
    assert [e["action"] for e in exported] == ["key.create"] * 3 + ["key.revoke"]
    assert [e["seq"] for e in exported] == sorted(e["seq"] for e in exported)
    # Paging is the list's: the export takes every match, and refuses offset/limit (400).
    paged = await stack.admin("GET", f"/audit/export?{query}&limit=1")
    assert paged.status_code == 400
    assert paged.json()["error"]["param"] == "limit"
    # Admin-token protected like the rest of /admin/v1: an OpenAI-shaped 401.
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as http:
        anonymous = await http.get(f"/admin/v1/audit/export?{query}")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "missing_admin_token"

    # The Audit page's Download carries the page's filters and gives the same file.
    web, _ = signed_in
    page = await web.get(f"/ui/audit?{query}")
    assert page.status_code == 200
    found = re.search(r'href="(/ui/audit/export[^"]*)" download', page.text)
    assert found is not None, "no Download link"
    link = html.unescape(found.group(1))
    assert link == f"/ui/audit/export?{query}"
    assert _lines(await web.get(link)) == exported
