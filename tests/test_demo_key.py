"""The demo client key: every model on a local stack, only the demo model in containers.

A container deployment keeps the demo key's plaintext on a volume; once real providers are
added it must not be a key to them (``switchyard deploy init`` passes ``DEMO_ONLY``).
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from switchyard.admin.keys import KeyAdmin
from switchyard.bus import subjects
from switchyard.schemas.keys import KEY_DECODER, hash_key, record_name
from switchyard.stack.demo_key import DEMO_ONLY, demo_key_file, ensure_demo_key
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


async def test_a_deployments_demo_key_may_use_only_the_demo_model(stack: Stack) -> None:
    settings = stack.settings
    demo_key_file(settings).unlink(missing_ok=True)
    key = await ensure_demo_key(settings)  # the local stack's: every model
    try:
        await _until(stack, key, "gpt-4o-mini", 200)

        # A deployment's first start, or one made before keys were narrowed: the same key,
        # now refused every model but the demo one.
        assert await ensure_demo_key(settings, models=DEMO_ONLY) == key
        await _until(stack, key, "gpt-4o-mini", 403)
        assert await _status(stack, key, "demo") == 200

        # A fresh deployment's key is born narrowed.
        demo_key_file(settings).unlink()
        fresh = await ensure_demo_key(settings, models=DEMO_ONLY)
        assert fresh != key
        await _until(stack, fresh, "demo", 200)
        assert await _status(stack, fresh, "gpt-4o-mini") == 403
    finally:
        nc = await stack.connect("admin")
        try:
            kv = await nc.jetstream().key_value(subjects.KEYS_BUCKET)
            admin = KeyAdmin(nc.jetstream(timeout=10))
            for made in {key, demo_key_file(settings).read_text(encoding="utf-8").strip()}:
                entry = await kv.get(record_name(hash_key(made)))
                await admin.delete(KEY_DECODER.decode(entry.value or b"").id)
        finally:
            await nc.close()
        demo_key_file(settings).unlink(missing_ok=True)


async def test_a_rotated_demo_key_is_replaced_not_shown_dead(stack: Stack) -> None:
    """The file keeps the secret the demo key had; once the key is rotated that secret is
    refused, and `up` kept showing it as the demo key."""
    settings = stack.settings
    demo_key_file(settings).unlink(missing_ok=True)
    key = await ensure_demo_key(settings)
    nc = await stack.connect("admin")
    try:
        kv = await nc.jetstream().key_value(subjects.KEYS_BUCKET)
        old = KEY_DECODER.decode((await kv.get(record_name(hash_key(key)))).value or b"")
        rotated = await stack.admin("POST", f"/keys/{old.id}/rotate")
        assert rotated.status_code == 200, rotated.text
        fresh = await ensure_demo_key(settings)
        assert fresh not in (key, rotated.json()["key"])
        await _until(stack, fresh, "gpt-4o-mini", 200)
        made = KEY_DECODER.decode((await kv.get(record_name(hash_key(fresh)))).value or b"")
        for key_id in (old.id, made.id):
            await KeyAdmin(nc.jetstream(timeout=10)).delete(key_id)
    finally:
        await nc.close()
        demo_key_file(settings).unlink(missing_ok=True)
