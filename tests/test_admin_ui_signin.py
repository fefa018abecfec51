"""Wrong admin tokens at the web app's sign-in, on the session stack: from many addresses at
once they get a bounded number of audit entries (the rest are summed up in one entry when the
hour is over, see tests/unit/test_admin_ui_logic.py), so they cannot push real entries out."""

from __future__ import annotations

import httpx
import pytest

from switchyard.admin.ui.signin_guard import RECORDED
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
        transport = httpx.AsyncHTTPTransport(local_address=f"127.0.0.{10 + i}")
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
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.10")
    async with httpx.AsyncClient(base_url=stack.gateway_url, transport=transport) as web:
        token = stack.settings.admin_token_file.read_text(encoding="utf-8").strip()
        form = {"name": "after-the-flood", "token": token}
        answer = await web.post("/ui/signin", data=form, headers={"Origin": stack.gateway_url})
        assert answer.status_code == 303
