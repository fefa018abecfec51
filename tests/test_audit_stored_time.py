"""Audit entries on the session stack are shown by the time the stream stored them, and one
whose own ``ts`` is more than a minute from that is flagged: anyone holding the admin
certificate may append an entry with any actor, source and time."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from switchyard.bus import identities, subjects
from tests.stacks import Stack

pytestmark = pytest.mark.integration


async def test_a_back_dated_entry_is_shown_at_its_stored_time_and_flagged(
    stack: Stack, signed_in: tuple[httpx.AsyncClient, str]
) -> None:
    """An entry published to audit.v1.secret.delete with `ts` three days back was stored and
    shown as an ordinary entry of three days ago."""
    three_days_ago = time.time() - 3 * 86400
    forged = {
        "ts": three_days_ago,
        "actor": "alice@laptop",
        "via": "cli",
        "action": "secret.delete",
        "target": "forged-audit-target",
        "source": "10.9.9.9",
    }
    nc = await stack.connect(identities.ADMIN.name)
    try:
        js = nc.jetstream(timeout=10)
        await js.publish(
            subjects.audit("secret.delete"),
            json.dumps(forged).encode(),
            stream=subjects.AUDIT_STREAM,
        )
    finally:
        await nc.close()
    honest = await stack.admin("POST", "/keys", {"name": "audit-stored-time", "models": ["*"]})
    assert honest.status_code == 201, honest.text
    entries: list[dict[str, object]] = []
    for _ in range(50):
        entries = (await stack.admin("GET", "/audit?q=forged-audit-target")).json()["entries"]
        if entries:
            break
        await asyncio.sleep(0.1)
    [entry] = entries
    assert entry["ts"] == pytest.approx(three_days_ago)  # as written
    assert isinstance(entry["stored"], float)
    assert abs(entry["stored"] - time.time()) < 60  # the server's time, not the writer's
    assert entry["ts_mismatch"] is True
    # An entry the gateway wrote itself is not flagged.
    ours = (await stack.admin("GET", "/audit?q=audit-stored-time&via=api")).json()["entries"]
    assert ours
    assert ours[0]["ts_mismatch"] is False
    assert abs(ours[0]["stored"] - ours[0]["ts"]) < 60
    # The Audit page shows the stored time, and says what the entry claims.
    web, _ = signed_in
    page = (await web.get("/ui/audit", params={"q": "forged-audit-target"})).text
    claimed = time.strftime("%Y-%m-%d", time.gmtime(three_days_ago))
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert f"says {claimed}" in page
    cell = page.split("<tbody>")[1].split("</td>")[0]
    assert today in cell.split("says")[0]
