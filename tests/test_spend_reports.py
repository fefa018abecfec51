"""Spend reports hold what was spent: a billing explorer reconciled them by hand.

The daily aggregates are written here as accounting writes them (day counters and each day's
rankings, in the session stack's real Valkey), under names no other test uses, and removed
afterwards; the reports are read through the admin API and the web app.
"""

from __future__ import annotations

import httpx
import pytest

from tests.stacks import Stack

pytestmark = pytest.mark.integration


async def test_a_period_longer_than_what_is_kept_is_refused_naming_the_limit(
    stack: Stack, signed_in: tuple[httpx.AsyncClient, str]
) -> None:
    for path in ("/spend?days=365", "/spend/ranking?by=key&days=91"):
        refused = await stack.admin("GET", path)
        assert refused.status_code == 400, (path, refused.text)
        error = refused.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert error["param"] == "days"
        assert "at most 90" in error["message"], error
    for path in ("/spend?days=90", "/spend/ranking?by=key&days=90"):
        assert (await stack.admin("GET", path)).status_code == 200, path
    web, _ = signed_in
    page = await web.get("/ui/spend?by=model&days=365")
    assert page.status_code == 200
    assert "kept 90 days" in page.text
    assert "not the 365 asked for" in page.text
    exported = await web.get("/ui/spend.csv?by=model&days=365")
    assert exported.status_code == 400
    assert "kept 90 days" in exported.text
    assert "kept 90 days" not in (await web.get("/ui/spend?by=model&days=90")).text
