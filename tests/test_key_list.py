"""The admin's key list on a real nats-server (``admin.keys``): one read of the bucket that
leaves nothing behind on the server."""

from __future__ import annotations

from pathlib import Path

import pytest

from switchyard.admin.keys import KeyAdmin
from switchyard.bus import subjects
from tests.support import jetstream_server

pytestmark = pytest.mark.integration


async def test_listing_keys_leaves_no_reader_behind_and_sees_every_change(tmp_path: Path) -> None:
    """nats-py's ``keys()`` left a consumer on the server for five minutes per list; an
    admin page refreshing every few seconds piled them up towards the account's limit."""
    async with jetstream_server(tmp_path) as (nc, _):
        js = nc.jetstream(timeout=10)
        await js.create_key_value(bucket=subjects.KEYS_BUCKET)
        admin = KeyAdmin(js, names=True)
        assert await admin.list() == []
        made = [(await admin.create(f"team-{n}"))[1] for n in range(3)]
        await admin.revoke(made[1].id)
        await admin.delete(made[2].id)
        for _ in range(5):
            listed = await admin.list()
            assert [(k.id, k.disabled) for k in listed] == [(made[0].id, False), (made[1].id, True)]
        # Found by name in the same read, and changed at the revision that read saw.
        assert (await admin.update("team-0", name="renamed")).name == "renamed"
        info = await js.stream_info(f"KV_{subjects.KEYS_BUCKET}")
        assert info.state.consumer_count == 0
