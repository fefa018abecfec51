"""The web app's sign-in and sessions on the session stack. Wrong admin tokens from many
addresses at once get a bounded number of audit entries (the rest are summed up in one entry
when the hour is over, see tests/unit/test_admin_ui_logic.py), so they cannot push real entries
out; a change is audited with the address that made it."""

from __future__ import annotations

import re

import httpx
import pytest

from switchyard.admin.ui.signin_guard import RECORDED
from switchyard.admin.ui.signin_rate import PER_ADDRESS
from tests.stacks import Stack

pytestmark = pytest.mark.integration


async def test_wrong_tokens_from_many_addresses_get_a_bounded_number_of_entries(
    stack: Stack,
) -> None:
    """200 entries per five minutes from every address together was 57,600 junk entries a
    day: the Audit page's 100,000 lost real entries within two days."""
    sent = 25
    statuses = []
    for i in range(sent):  # one wrong token from each of `sent` loopback addresses
        transport = httpx.AsyncHTTPTransport(local_address=f"127.0.{10 + i}.1")
        async with httpx.AsyncClient(
            base_url=stack.gateway_url, transport=transport, timeout=30
        ) as web:
            form = {"name": f"signin-flood-{i}", "token": "sy-admin-wrong"}
            answer = await web.post("/ui/signin", data=form, headers={"Origin": stack.gateway_url})
            statuses.append(answer.status_code)
    assert statuses == [401] * sent
    audit = (await stack.admin("GET", "/audit?kind=session&q=signin-flood-&limit=500")).json()
    assert audit["total"] == RECORDED < sent, audit["total"]
    last = audit["entries"][0]  # newest first
    assert "counted, not recorded" in last["detail"], last
    # The right token still signs in, from an address the flood used.
    transport = httpx.AsyncHTTPTransport(local_address="127.0.10.1")
    async with httpx.AsyncClient(base_url=stack.gateway_url, transport=transport) as web:
        token = stack.settings.admin_token_file.read_text(encoding="utf-8").strip()
        form = {"name": "after-the-flood", "token": token}
        answer = await web.post("/ui/signin", data=form, headers={"Origin": stack.gateway_url})
        assert answer.status_code == 303


async def test_a_change_is_audited_with_the_address_that_made_it(stack: Stack) -> None:
    """The entry said the sign-in's address: a cookie used from elsewhere left no trace."""
    token = stack.settings.admin_token_file.read_text(encoding="utf-8").strip()
    origin = {"Origin": stack.gateway_url}
    signed_in = httpx.AsyncHTTPTransport(local_address="127.0.0.1")
    async with httpx.AsyncClient(
        base_url=stack.gateway_url, transport=signed_in, headers=origin, timeout=30
    ) as web:
        signin = await web.post("/ui/signin", data={"name": "moved", "token": token})
        assert signin.status_code == 303
        # The browser keeps the cookie while the server keeps the session (8 hours idle, 24
        # after sign-in): a Max-Age of 8 hours set at sign-in signed a busy admin out.
        cookie_attrs = signin.headers["set-cookie"].lower()
        assert "max-age" not in cookie_attrs
        assert "expires" not in cookie_attrs
        found = re.search(r'name="csrf" value="([^"]+)"', (await web.get("/ui/keys/new")).text)
        assert found is not None
        cookie = web.cookies["sy_session"]
    elsewhere = httpx.AsyncHTTPTransport(local_address="127.0.77.1")
    async with httpx.AsyncClient(
        base_url=stack.gateway_url,
        transport=elsewhere,
        headers=origin,
        cookies={"sy_session": cookie},
        timeout=30,
    ) as other:
        form = {"csrf": found.group(1), "name": "audited-source-key", "models": "*"}
        created = await other.post("/ui/keys", data=form)
        assert created.status_code == 200, created.text
        forwarded = {"X-Forwarded-For": "192.0.2.9"}  # not trusted: anyone can send it
        signout = await other.post("/ui/signout", data={"csrf": found.group(1)}, headers=forwarded)
        assert signout.status_code == 303
    audit = (await stack.admin("GET", "/audit?q=moved&limit=10")).json()["entries"]
    sources = {e["action"]: e["source"] for e in audit if e["actor"] == "moved"}
    assert sources == {
        "session.signin": "127.0.0.1",
        "key.create": "127.0.77.1",
        "session.signout": "127.0.77.1",
    }, audit


async def test_right_tokens_past_the_minutes_bound_get_429_no_session_and_no_entry(
    stack: Stack,
) -> None:
    """A right token always signed in, each sign-in a session and an audit entry: a script
    with the read-only token at 1,000 a second signed every idle admin out (one session cap)
    and pushed every real entry out of the audit log. Now 429 with Retry-After past the
    minute's bound for the address and role, and nothing made or written for it; the admin
    token from the same address (one NAT) still signs in: the count is per role."""
    token = stack.settings.admin_readonly_token_file.read_text(encoding="utf-8").strip()
    transport = httpx.AsyncHTTPTransport(local_address="127.0.215.1")  # this test's own
    statuses = []
    async with httpx.AsyncClient(
        base_url=stack.gateway_url,
        transport=transport,
        timeout=30,
        headers={"Origin": stack.gateway_url},
    ) as web:
        for _ in range(PER_ADDRESS + 2):
            web.cookies.clear()  # a script: a new session each time
            answer = await web.post("/ui/signin", data={"name": "ro-flood", "token": token})
            statuses.append(answer.status_code)
        assert statuses == [303] * PER_ADDRESS + [429] * 2, statuses
        assert 0 < int(answer.headers["retry-after"]) <= 60
        assert "Too many sign-ins" in answer.text
        assert "set-cookie" not in answer.headers
        web.cookies.clear()
        admin_token = stack.settings.admin_token_file.read_text(encoding="utf-8").strip()
        admin = await web.post("/ui/signin", data={"name": "ro-flood-admin", "token": admin_token})
        assert admin.status_code == 303, admin.text[:300]
    audit = (await stack.admin("GET", "/audit?kind=session&q=ro-flood&limit=500")).json()
    assert audit["total"] == PER_ADDRESS + 1, audit["total"]  # (and the admin's)
