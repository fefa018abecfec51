"""The admin's key list on a real nats-server (``admin.keys``): one read of the bucket that
leaves nothing behind on the server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from switchyard.admin.key_index import KeyIndex
from switchyard.admin.keys import KeyAdmin, namesake_warning
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


async def test_a_second_key_of_the_same_name_is_made_and_its_namesakes_are_named(
    tmp_path: Path,
) -> None:
    """Names are labels: a second `keys create my-app` is allowed, but later `keys show my-app`
    asks for the id, so creating it says which keys share the name (the CLI reads the bucket,
    the gateway its live index)."""
    async with jetstream_server(tmp_path) as (nc, _):
        js = nc.jetstream(timeout=10)
        await js.create_key_value(bucket=subjects.KEYS_BUCKET)
        cli = KeyAdmin(js, names=True)
        index = KeyIndex(js)
        await index.start()
        try:
            gateway = KeyAdmin(js, locator=index)
            _, first = await cli.create("my-app")
            _, other = await cli.create("other-app")
            assert await cli.namesakes(first) == []
            _, second = await cli.create("my-app")
            assert await cli.namesakes(second) == [first.id]
            for _ in range(200):  # until the index has followed the bucket
                if index.get(second.id) is not None:
                    break
                await asyncio.sleep(0.02)
            _, third = await gateway.create("my-app")
            assert await gateway.namesakes(third) == [first.id, second.id]
            assert await gateway.namesakes(other) == []
        finally:
            await index.stop()
    said = namesake_warning("my-app", [first.id, second.id])
    assert f"2 other keys are named `my-app` too ({first.id}, {second.id})" in said
    assert "ask for the id" in said
    assert namesake_warning("my-app", [first.id]).startswith("another key is named `my-app`")
