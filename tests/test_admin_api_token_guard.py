"""Wrong admin tokens on ``/admin/v1`` on the session stack: counted per address with the
sign-in's guard (429 with ``Retry-After`` past its limit, one warning line in the gateway's
log, never the token); the right token still works from that address."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from switchyard.admin.ui.signin_guard import LIMIT
from tests.stacks import Stack

pytestmark = pytest.mark.integration

ADDRESS = "127.0.211.1"  # this test's own: the guard's counts are per address


async def test_wrong_api_tokens_get_429_and_a_warning_and_count_with_the_signin(
    stack: Stack,
) -> None:
    """243 wrong bearer tokens from one curl loop all got 401: no 429, no line in any log."""
    guess = "sy-admin-guess-0123456789"
    transport = httpx.AsyncHTTPTransport(local_address=ADDRESS)
    async with httpx.AsyncClient(
        base_url=stack.gateway_url, transport=transport, timeout=30
    ) as web:
        answers = [
            await web.get("/admin/v1/routes", headers={"Authorization": f"Bearer {guess}{i}"})
            for i in range(LIMIT + 3)
        ]
        assert [a.status_code for a in answers] == [401] * LIMIT + [429] * 3
        refused = answers[-1]
        assert refused.json()["error"]["code"] == "too_many_failed_authentications"
        assert int(refused.headers["retry-after"]) > 0
        # The right token still works from the blocked address (many clients share one).
        right = await web.get("/admin/v1/routes", headers=stack.admin_headers())
        assert right.status_code == 200, right.text
        # One count for the API and the sign-in form: the address waits there too.
        form = {"name": "api-guesser", "token": guess}
        signin = await web.post("/ui/signin", data=form, headers={"Origin": stack.gateway_url})
        assert signin.status_code == 429
    log = ""
    for _ in range(50):  # the gateway's log file is written by its process
        log = (stack.home.logs / "gateway.log").read_text(encoding="utf-8")
        if ADDRESS in log:
            break
        await asyncio.sleep(0.1)
    lines = [line for line in log.splitlines() if ADDRESS in line]
    assert len(lines) == 1, lines
    assert "wrong admin tokens" in lines[0]
    assert guess not in log


async def test_wrong_api_tokens_are_audited_as_the_signins_are_once_a_minute(stack: Stack) -> None:
    """Wrong bearer tokens on /admin/v1 were counted and logged but never reached the audit
    log (the sign-in's did). The first one from an address is an entry at once, naming the
    address; the minute's rest are said together later (tests/unit: the counts)."""
    address = "127.0.212.1"
    guess = "sy-admin-audit-guess-0123456789"
    transport = httpx.AsyncHTTPTransport(local_address=address)
    async with httpx.AsyncClient(
        base_url=stack.gateway_url, transport=transport, timeout=30
    ) as web:
        for i in range(3):
            wrong = await web.get("/admin/v1/keys", headers={"Authorization": f"Bearer {guess}{i}"})
            assert wrong.status_code == 401
        # No token at all is not a guess: not audited.
        assert (await web.get("/admin/v1/keys")).status_code == 401

    async def from_address() -> list[dict[str, Any]]:
        page = await stack.admin("GET", "/audit?kind=token&limit=500")
        return [e for e in page.json()["entries"] if e["source"] == address]

    async with asyncio.timeout(10):
        while not await from_address():
            await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)  # no second entry follows within the minute
    entries = await from_address()
    assert len(entries) == 1, entries
    entry = entries[0]
    assert entry["action"] == "token.refused"
    assert entry["actor"] == "(wrong admin token)"
    assert (entry["via"], entry["ok"], entry["source"]) == ("api", False, address)
    assert entry["detail"] == "wrong admin token"
    assert "guess" not in str(entry)
