"""A head's kept key record does not outlive a change it never heard, on the session stack.

The head hears key changes as plain NATS messages (the CLIENT account's change stream): one
published while the head reconnects (a NATS node loss) never reaches it, and the record it kept
served on forever, so a revoked key's internal client (NATS requests, which no edge checks)
kept working until the head restarted. A lost change is made here by hearing none while the key
is revoked; the head's view reads a key in use again once its record is ``revalidate_s`` old.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from switchyard.admin.keys import KeyAdmin
from switchyard.workers.head.keys import KeyPolicies
from tests.stacks import Stack

pytestmark = pytest.mark.integration


async def _until(check: Any, timeout: float = 10.0) -> Any:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not (value := await check()):
        assert loop.time() < end, "not seen in time"
        await asyncio.sleep(0.1)
    return value


async def test_a_revocation_the_head_did_not_hear_reaches_it(stack: Stack) -> None:
    head = await stack.connect("head")
    admin = await stack.connect("admin")
    view = KeyPolicies(head, revalidate_s=1.0)
    await view.start()
    try:
        keys = KeyAdmin(admin.jetstream(timeout=10))
        _, record = await keys.create("head-view")
        kept = await view.get(record.hash)
        assert kept is not None
        assert not kept.disabled

        assert view._sub is not None
        await view._sub.unsubscribe()  # the head hears no change: its reconnect
        view._sub = None
        await keys.revoke(record.id)
        await asyncio.sleep(0.3)
        assert (await view.get(record.hash)) == kept  # read less than 1 s ago: kept

        async def revoked() -> bool:
            current = await view.get(record.hash)
            return current is not None and current.disabled

        await _until(revoked)

        await keys.delete(record.id)  # a deletion it did not hear either

        async def gone() -> bool:
            return await view.get(record.hash) is None

        await _until(gone)
    finally:
        await view.stop()
        await head.close()
        await admin.close()
