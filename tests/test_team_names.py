"""A key's team may not be spelled like a key id, through the admin API and the web app.

A key without a team is its own tenant under its id (``fair_tenant``): the owner of its Batch
API files and batches. A second key given ``team: <that id>`` was the same tenant, so it could
list, read and use the first key's files and batches. The rule is checked where a team is set;
a record written before it keeps its team through other changes (files are stored under it).
"""

from __future__ import annotations

import re

import httpx
import msgspec
import pytest

from switchyard.bus import subjects
from switchyard.schemas.keys import KEY_ENCODER, record_name
from tests.stacks import Stack

pytestmark = pytest.mark.integration


async def test_a_team_shaped_like_a_key_id_is_refused(stack: Stack) -> None:
    _, victim = await stack.new_key("team-names-victim")
    for team in (victim.id, victim.id.upper(), f" {victim.id} "):
        refused = await stack.admin("POST", "/keys", {"name": "team-names-thief", "team": team})
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert error["param"] == "team"
        assert "shape of a key id" in error["message"]
    found = await stack.admin("GET", "/keys?q=team-names-thief")
    assert found.json()["total"] == 0

    _, other = await stack.new_key("team-names-other")
    changed = await stack.admin("PATCH", f"/keys/{other.id}", {"team": victim.id})
    assert changed.status_code == 400, changed.text
    assert changed.json()["error"]["param"] == "team"
    assert (await stack.admin("GET", f"/keys/{other.id}")).json()["team"] == ""

    # Names that only start like one are ordinary teams.
    for team in ("key_accounts", "key-84649fd7e28478b5", "key_84649fd7e28478b"):
        ok = await stack.admin("POST", "/keys", {"name": "team-names-ok", "team": team})
        assert ok.status_code == 201, (team, ok.text)


async def test_the_web_form_refuses_it_too(stack: Stack) -> None:
    _, victim = await stack.new_key("team-names-form-victim")
    token = stack.settings.admin_token_file.read_text(encoding="utf-8").strip()
    origin = {"Origin": stack.gateway_url}
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30, headers=origin) as web:
        signin = await web.post("/ui/signin", data={"name": "team-names", "token": token})
        assert signin.status_code == 303, signin.text
        page = (await web.get("/ui/keys/new")).text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page)
        assert csrf is not None
        form = await web.post(
            "/ui/keys",
            data={"csrf": csrf.group(1), "name": "team-names-form", "team": victim.id},
        )
    assert form.status_code == 400
    assert "shape of a key id" in form.text


async def test_a_record_that_has_one_keeps_it_through_other_changes(stack: Stack) -> None:
    """Written before the rule: its team stays (its files are stored under it), and an admin
    can still change its other settings; a new team is checked."""
    _, victim = await stack.new_key("team-names-old-victim")
    _, old = await stack.new_key("team-names-old")
    nc = await stack.connect("admin")
    try:
        kv = await nc.jetstream(timeout=10).key_value(subjects.KEYS_BUCKET)
        legacy = msgspec.structs.replace(old, team=victim.id)
        await kv.put(record_name(old.hash), KEY_ENCODER.encode(legacy))
    finally:
        await nc.close()
    changed = await stack.admin("PATCH", f"/keys/{old.id}", {"rpm": 7, "team": victim.id})
    assert changed.status_code == 200, changed.text
    assert changed.json()["team"] == victim.id
    assert changed.json()["rpm"] == 7
    refused = await stack.admin("PATCH", f"/keys/{old.id}", {"team": victim.id.upper()})
    assert refused.status_code == 400, refused.text
    moved = await stack.admin("PATCH", f"/keys/{old.id}", {"team": "accounts"})
    assert moved.status_code == 200, moved.text


async def test_a_team_named_like_the_no_team_placeholder_is_refused(stack: Stack) -> None:
    """Spend counts keys without a team under ``(none)`` and metrics under ``_no_team``: a team
    literally so named was merged with them."""
    for team in ("(none)", " (none) ", "(NONE)", "_no_team", "_No_Team"):
        refused = await stack.admin("POST", "/keys", {"name": "team-names-none", "team": team})
        assert refused.status_code == 400, (team, refused.text)
        error = refused.json()["error"]
        assert error["param"] == "team"
        assert "keys without a team" in error["message"]
    _, other = await stack.new_key("team-names-none-other")
    changed = await stack.admin("PATCH", f"/keys/{other.id}", {"team": "(none)"})
    assert changed.status_code == 400, changed.text
    assert changed.json()["error"]["param"] == "team"
    for team in ("none", "(none)x", "no_team"):  # only the placeholders themselves
        ok = await stack.admin("POST", "/keys", {"name": "team-names-none-ok", "team": team})
        assert ok.status_code == 201, (team, ok.text)
