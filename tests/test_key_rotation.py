"""Rotating a client key on the session stack: a new secret for the same key (id, settings,
budget period, spend), the old one refused within the second revocations take, or after a
grace period that ends on its own; revocation and deletion still reach every secret; the
admin API, the CLI and the web app each show the new secret once, and audit the rotation."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from switchyard.limits import keys as rk
from switchyard.limits import periods
from switchyard.schemas.keys import RECORD_PREFIX, hash_key
from tests.stacks import Stack
from tests.test_admin_ui_stale_forms import form_of

pytestmark = pytest.mark.integration

PROPAGATION_S = 1.0  # what docs/keys-and-limits.md promises for a revocation
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


async def _chat(stack: Stack, secret: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(
            f"{stack.tail_url}/v1/chat/completions",
            json=CHAT,
            headers={"Authorization": f"Bearer {secret}"},
        )


async def _settles(
    stack: Stack, secret: str, status: int, within: float = PROPAGATION_S
) -> httpx.Response:
    """The first answer with ``status`` to ``secret``, asserted to come within ``within``."""
    began = time.monotonic()
    while True:
        resp = await _chat(stack, secret)
        if resp.status_code == status:
            return resp
        waited = time.monotonic() - began
        assert waited < within, f"still {resp.status_code} after {waited:.2f}s: {resp.text}"
        await asyncio.sleep(0.05)


async def _audited(stack: Stack, key_id: str, action: str) -> list[dict[str, Any]]:
    for _ in range(50):
        entries = (await stack.admin("GET", f"/audit?q={key_id}")).json()["entries"]
        found = [e for e in entries if e["action"] == action]
        if found:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"no {action} entry for {key_id}")


async def _records_of(stack: Stack, key_id: str) -> list[str]:
    """The bucket's record names holding ``key_id`` (current and retired)."""
    nc = await stack.connect("admin")
    try:
        kv = await nc.jetstream(timeout=10).key_value("sy_keys")
        names = []
        for name in await kv.keys():
            if not name.startswith(RECORD_PREFIX):
                continue
            entry = await kv.get(name)
            if entry.value and key_id.encode() in entry.value:
                names.append(name)
        return names
    finally:
        await nc.close()


async def test_a_rotated_key_keeps_its_id_spend_and_spent_budget(
    stack: Stack, counters: Redis
) -> None:
    """The reported bug: a new key with the same settings started from no spend. A rotated
    key is the same key: at its budget before, refused for it after, with the new secret."""
    old, record = await stack.new_key("rot-budget", budget_usd=0.10, budget_period="monthly")
    counter = rk.budget(record.id, periods.current("monthly", time.time())[0])
    await counters.set(counter, int(0.10 * rk.NANO))
    try:
        spent = await _settles(stack, old, 429, within=10)
        assert spent.json()["error"]["code"] == "budget_exceeded"

        rotated = await stack.admin("POST", f"/keys/{record.id}/rotate")
        assert rotated.status_code == 200, rotated.text
        assert rotated.headers["cache-control"] == "no-store"
        doc = rotated.json()
        new = doc["key"]
        assert new.startswith("sk-sy-")
        assert len(new) == len(old)
        assert new != old
        assert doc["grace_seconds"] == 0
        assert doc["record"]["id"] == record.id
        assert doc["record"]["hint"] == new[-4:]
        assert "hash" not in doc["record"]
        assert "successor" not in doc["record"]
        assert doc["record"]["rotated_at"] > 0
        assert new not in str(doc["record"])
        for field in ("name", "budget_usd", "budget_period", "created_at"):
            assert doc["record"][field] == getattr(record, field)

        refused = await _settles(stack, old, 401)
        assert "rotated" in refused.json()["error"]["message"]
        assert old not in refused.text
        still = await _settles(stack, new, 429)  # the spent budget carries over
        assert still.json()["error"]["code"] == "budget_exceeded"
        shown = (await stack.admin("GET", f"/keys/{record.id}")).json()
        assert shown["spend"]["period_spend_usd"] == pytest.approx(0.10)

        await counters.delete(counter)  # a new period: the new secret works
        assert (await _settles(stack, new, 200, within=10)).status_code == 200
        assert (await _chat(stack, old)).status_code == 401
    finally:
        await counters.delete(counter)

    listed = await stack.listed_keys(f"q={record.id}", lambda keys: len(keys) == 1)
    assert [k["hint"] for k in listed] == [new[-4:]]  # one key, not one per secret
    entry = (await _audited(stack, record.id, "key.rotate"))[0]
    assert entry["via"] == "api"
    assert "refused from now on" in entry["detail"]
    assert new not in str(entry)
    assert old not in str(entry)


async def test_a_grace_keeps_the_old_secret_for_its_time_then_revoke_and_delete_reach_both(
    stack: Stack,
) -> None:
    old, record = await stack.new_key("rot-grace")
    rotated = await stack.admin("POST", f"/keys/{record.id}/rotate", {"grace_seconds": 3})
    assert rotated.status_code == 200, rotated.text
    ends = time.time() + 3
    new = rotated.json()["key"]
    assert (await _settles(stack, new, 200)).status_code == 200
    assert (await _chat(stack, old)).status_code == 200  # within its grace

    changed = await stack.admin("PATCH", f"/keys/{record.id}", {"models": ["paced"]})
    assert changed.status_code == 200, changed.text  # a change by id reaches the new record
    for secret in (old, new):  # and applies to the old secret too (it is the same key)
        assert (await _settles(stack, secret, 403)).json()["error"]["code"] == ("model_not_allowed")
    await stack.admin("PATCH", f"/keys/{record.id}", {"models": ["*"]})
    await _settles(stack, old, 200)

    await asyncio.sleep(max(0.0, ends - time.time()))  # the grace ends on its own
    assert (await _settles(stack, old, 401)).status_code == 401
    assert (await _chat(stack, new)).status_code == 200

    revoked = await stack.admin("POST", f"/keys/{record.id}/revoke")
    assert revoked.status_code == 200, revoked.text
    gone = await _settles(stack, new, 401)
    assert gone.json()["error"]["code"] == "api_key_revoked"
    assert len(await _records_of(stack, record.id)) == 2  # the new secret's and the old's

    deleted = await stack.admin("DELETE", f"/keys/{record.id}")
    assert deleted.status_code == 200, deleted.text
    assert await _records_of(stack, record.id) == []  # the old secret's record too


async def test_rotation_refusals_are_openai_shaped(stack: Stack) -> None:
    _, record = await stack.new_key("rot-refusals")
    for body, param in (({"grace_seconds": 86401}, "grace_seconds"), ({"grace": 5}, "grace")):
        resp = await stack.admin("POST", f"/keys/{record.id}/rotate", body)
        assert resp.status_code == 400, resp.text
        assert resp.json()["error"]["type"] == "invalid_request_error"
        assert param in resp.json()["error"]["message"] + str(resp.json()["error"]["param"])
    missing = await stack.admin("POST", "/keys/key_0000000000000000/rotate")
    assert missing.status_code == 404, missing.text
    assert missing.json()["error"]["param"] == "key_id"


async def test_the_cli_prints_the_new_secret_once(stack: Stack) -> None:
    old, record = await stack.new_key("rot-cli")
    done = stack.cli("keys", "rotate", record.id, "--grace", "1h")
    assert done.returncode == 0, done.stderr
    found = re.findall(r"sk-sy-[A-Za-z0-9_-]+", done.stdout + done.stderr)
    assert len(found) == 1, done.stdout
    assert "works for 3600 more seconds" in done.stdout
    assert "shown only once" in done.stdout
    new = found[0]
    assert (await _settles(stack, new, 200)).status_code == 200
    assert (await _chat(stack, old)).status_code == 200  # its hour of grace
    listed = stack.cli("keys", "list")
    assert listed.stdout.count(record.id) == 1, listed.stdout  # not once per secret
    shown = stack.cli("keys", "show", record.id)
    assert new not in shown.stdout
    assert f"...{new[-4:]}" in shown.stdout
    assert "  rotated    20" in shown.stdout
    too_long = stack.cli("keys", "rotate", record.id, "--grace", "2d")
    assert too_long.returncode != 0
    assert "grace" in too_long.stderr
    assert "Traceback" not in too_long.stderr
    entry = (await _audited(stack, record.id, "key.rotate"))[0]
    assert entry["via"] == "cli"
    assert hash_key(new) not in str(entry)


async def test_the_web_app_rotates_once_and_a_reload_does_not_rotate_again(
    stack: Stack, signed_in: tuple[httpx.AsyncClient, str]
) -> None:
    web, _ = signed_in
    old, record = await stack.new_key("rot-ui")
    path = f"/ui/keys/{record.id}"
    page = ""
    for _ in range(50):  # the index follows the bucket a moment behind
        answer = await web.get(path)
        if answer.status_code == 200:
            page = answer.text
            break
        await asyncio.sleep(0.1)
    form = {**form_of(page, f"{path}/rotate"), "grace": "0"}  # (the parser reads no select)
    assert {"csrf", "digest"} <= set(form), form
    assert '<select id="rotate-grace" name="grace">' in page
    assert "data-confirm" in page.split(f'action="{path}/rotate"', 1)[1].split(">", 1)[0]

    without_csrf = await web.post(f"{path}/rotate", data={**form, "csrf": "x"})
    assert without_csrf.status_code == 403

    shown = await web.post(f"{path}/rotate", data=form)
    assert shown.status_code == 200, shown.text
    found = re.findall(r"sk-sy-[A-Za-z0-9_-]+", shown.text)
    assert len(set(found)) == 1, found
    new = found[0]
    assert "no-store" in shown.headers.get("cache-control", "")
    assert "refused at once" in shown.text or "refused from now on" in shown.text
    assert (await _settles(stack, new, 200)).status_code == 200
    assert (await _settles(stack, old, 401)).status_code == 401

    again = await web.post(f"{path}/rotate", data=form)  # the result page reloaded
    assert again.status_code == 303
    after = (await web.get(again.headers["location"])).text
    assert "No new secret was made" in after
    assert (await _chat(stack, new)).status_code == 200  # still the secret shown
    assert (await stack.admin("GET", f"/keys/{record.id}")).json()["hint"] == new[-4:]
    assert (await _audited(stack, record.id, "key.rotate"))[0]["via"] == "ui"
