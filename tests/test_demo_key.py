"""The demo client key: made once per home, for the demo model only, found by its id.

`switchyard up` re-created an all-models demo key after the operator deleted it (no audit
entry), and after `keys rotate <demo>` the next `up` minted a second one: two live demo keys.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from switchyard.admin.keys import KeyAdmin
from switchyard.config import Settings
from switchyard.stack.demo_key import (
    DEMO_KEY_NAME,
    demo_key_file,
    demo_marker_file,
    ensure_demo_key,
)
from tests.stacks import Stack

pytestmark = pytest.mark.integration


async def _status(stack: Stack, key: str, model: str) -> int:
    async with httpx.AsyncClient(timeout=30) as http:
        resp = await http.post(
            f"{stack.tail_url}/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": f"Bearer {key}"},
        )
        return resp.status_code


async def _until(stack: Stack, key: str, model: str, status: int) -> None:
    deadline = time.monotonic() + 5  # a key change reaches the edges' key ring through KV
    while (seen := await _status(stack, key, model)) != status:
        assert time.monotonic() < deadline, f"{model}: {seen}, expected {status}"
        await asyncio.sleep(0.1)


def _fresh_home(settings: Settings) -> None:
    demo_key_file(settings).unlink(missing_ok=True)
    demo_marker_file(settings).unlink(missing_ok=True)


async def _demo_ids(stack: Stack) -> set[str]:
    nc = await stack.connect("admin")
    try:
        keys = await KeyAdmin(nc.jetstream(timeout=10)).list()
    finally:
        await nc.close()
    return {k.id for k in keys if k.name == DEMO_KEY_NAME}


def _marked_id(settings: Settings) -> str:
    return str(json.loads(demo_marker_file(settings).read_text(encoding="utf-8"))["id"])


async def test_the_demo_key_is_made_once_for_the_demo_model_and_not_again_once_deleted(
    stack: Stack,
) -> None:
    settings = stack.settings
    _fresh_home(settings)
    before = await _demo_ids(stack)
    key = await ensure_demo_key(settings)
    assert key is not None
    key_id = _marked_id(settings)
    await _until(stack, key, "demo", 200)
    assert await _status(stack, key, "gpt-4o-mini") == 403  # not a key to real providers
    audit = (await stack.admin("GET", f"/audit?q={key_id}&kind=key")).json()["entries"]
    assert [e["action"] for e in audit] == ["key.create"]
    assert audit[0]["via"] == "cli"
    assert await ensure_demo_key(settings) == key  # the next start: the same key
    assert "narrowed" not in json.loads(demo_marker_file(settings).read_text(encoding="utf-8"))

    # An admin widens it on purpose (audited): no later start narrows it back behind them.
    widened = await stack.admin("PATCH", f"/keys/{key_id}", {"models": ["*"]})
    assert widened.status_code == 200, widened.text
    assert await ensure_demo_key(settings) == key
    assert await ensure_demo_key(settings) == key
    await _until(stack, key, "gpt-4o-mini", 200)
    audit = (await stack.admin("GET", f"/audit?q={key_id}&kind=key")).json()["entries"]
    assert sorted(e["action"] for e in audit) == ["key.create", "key.update"]

    deleted = await stack.admin("DELETE", f"/keys/{key_id}")
    assert deleted.status_code == 200, deleted.text
    assert await ensure_demo_key(settings) is None
    assert await ensure_demo_key(settings) is None
    assert not demo_key_file(settings).exists()  # its dead secret is not shown any more
    assert await _demo_ids(stack) == before  # and no other demo key was made


async def test_a_rotated_demo_key_is_not_replaced_by_a_second_one(stack: Stack) -> None:
    settings = stack.settings
    _fresh_home(settings)
    key = await ensure_demo_key(settings)
    assert key is not None
    key_id = _marked_id(settings)
    ids = await _demo_ids(stack)
    rotated = await stack.admin("POST", f"/keys/{key_id}/rotate")
    assert rotated.status_code == 200, rotated.text
    assert await ensure_demo_key(settings) is None
    assert not demo_key_file(settings).exists()
    assert await _demo_ids(stack) == ids  # one demo key, the rotated one
    assert (await stack.admin("DELETE", f"/keys/{key_id}")).status_code == 200


async def test_a_home_from_before_keeps_its_demo_key_narrowed(stack: Stack) -> None:
    """A home made before the marker: its all-models key is kept (found by its secret's
    hash once) and narrowed to the demo model; a new key store gets a new demo key."""
    settings = stack.settings
    _fresh_home(settings)
    old_key, old = await stack.new_key(DEMO_KEY_NAME, owner="local", team="demo")
    demo_key_file(settings).write_text(old_key + "\n", encoding="utf-8")
    await _until(stack, old_key, "gpt-4o-mini", 200)
    assert await ensure_demo_key(settings) == old_key
    assert _marked_id(settings) == old.id
    await _until(stack, old_key, "gpt-4o-mini", 403)
    assert await _status(stack, old_key, "demo") == 200
    assert await ensure_demo_key(settings) == old_key  # narrowed once, not on each start
    audit = (await stack.admin("GET", f"/audit?q={old.id}&kind=key")).json()["entries"]
    assert [(e["action"], e["via"]) for e in audit] == [("key.update", "cli")]
    assert "models * -> demo" in audit[0]["detail"], audit[0]
    marker = json.loads(demo_marker_file(settings).read_text(encoding="utf-8"))
    assert marker["narrowed"] is True

    assert marker["store"].startswith("20")  # when the key bucket was created
    marker["store"] = "another key store"  # as if the NATS data had been moved away
    demo_marker_file(settings).write_text(json.dumps(marker), encoding="utf-8")
    fresh = await ensure_demo_key(settings)
    assert fresh is not None
    assert fresh != old_key
    for key_id in (old.id, _marked_id(settings)):
        assert (await stack.admin("DELETE", f"/keys/{key_id}")).status_code == 200
    _fresh_home(settings)
