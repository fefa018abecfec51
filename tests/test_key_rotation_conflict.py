"""A rotation that loses its compare-and-set leaves the key where the gateway's index finds it.

The rotation creates the new secret's record first, and purges it when the old record changed
meanwhile. The index mapped the key id to the new record as it arrived, and the purge dropped
the mapping, though the key's record was still there: after the Keys page's rotation stopped
on a key changed by another admin, the key's page and every change by id answered 404 until
its record was written again (a review).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from nats.js import JetStreamContext

from switchyard.admin.key_index import KeyIndex
from switchyard.admin.keys import KeyAdmin
from switchyard.bus import subjects
from switchyard.schemas.keys import ClientKey, record_name
from tests.support import jetstream_server

pytestmark = pytest.mark.integration


class _Changed(Exception):
    """The web form's refusal: the key changed since the form was shown."""


async def _caught_up(index: KeyIndex, js: JetStreamContext) -> None:
    info = await js.stream_info(f"KV_{subjects.KEYS_BUCKET}")
    for _ in range(500):
        if index.revision >= info.state.last_seq:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the index did not follow the bucket")


async def test_a_rotation_stopped_by_a_change_meanwhile_keeps_the_key_found(
    tmp_path: Path,
) -> None:
    async with jetstream_server(tmp_path) as (nc, _):
        js = nc.jetstream(timeout=10)
        await js.create_key_value(bucket=subjects.KEYS_BUCKET)
        other_admin = KeyAdmin(js, names=True)
        index = KeyIndex(js)
        await index.start()
        try:
            gateway = KeyAdmin(js, locator=index)
            _, key = await gateway.create("rotated")
            await _caught_up(index, js)
            seen: list[ClientKey] = []

            def unchanged(current: ClientKey) -> None:  # as the Keys page's rotate checks
                seen.append(current)
                if current != seen[0]:
                    raise _Changed

            # Another admin saves the key between the rotation's read and its write: the real
            # bucket's create, preceded by that save once, so the compare-and-set fails.
            bucket = await gateway._bucket()
            real_create = bucket.create

            async def create_after_a_save(name: str, value: bytes) -> int:
                if len(seen) == 1:
                    await other_admin.update(key.id, rpm=7)
                    await _caught_up(index, js)
                return await real_create(name, value)

            bucket.create = create_after_a_save  # type: ignore[method-assign,assignment]
            with pytest.raises(_Changed):
                await gateway.rotate(key.id, check=unchanged)
            await _caught_up(index, js)
            assert index.record_name(key.id) == record_name(key.hash)
            bucket.create = real_create  # type: ignore[method-assign]
            found = index.get(key.id)
            assert found is not None
            assert found.rpm == 7  # the other admin's save
            assert (await gateway.update(key.id, rpm=8)).rpm == 8  # no 404
        finally:
            await index.stop()


async def test_the_retry_finds_the_key_while_the_index_still_maps_the_purged_record(
    tmp_path: Path,
) -> None:
    """The retry looked the key up through the index, which may not have followed the purge
    yet: it mapped the id to the record just purged, and the rotation answered 404 for a live
    key. It now reads the record it raced on (or its successor) from the bucket."""
    async with jetstream_server(tmp_path) as (nc, _):
        js = nc.jetstream(timeout=10)
        await js.create_key_value(bucket=subjects.KEYS_BUCKET)
        other_admin = KeyAdmin(js, names=True)
        index = KeyIndex(js)
        await index.start()
        gateway = KeyAdmin(js, locator=index)
        _, key = await gateway.create("raced")
        await _caught_up(index, js)
        seen: list[ClientKey] = []

        def unchanged(current: ClientKey) -> None:
            seen.append(current)
            if current != seen[0]:
                raise _Changed

        bucket = await gateway._bucket()
        real_create = bucket.create

        async def create_then_lag(name: str, value: bytes) -> int:
            if len(seen) == 1:
                await other_admin.update(key.id, rpm=7)
            revision = await real_create(name, value)
            if len(seen) == 1:  # the index applies this create, and nothing after it
                await _caught_up(index, js)
                await index.stop()
            return revision

        bucket.create = create_then_lag  # type: ignore[method-assign,assignment]
        with pytest.raises(_Changed):  # the other admin's save, seen: not a 404
            await gateway.rotate(key.id, check=unchanged)
        assert len(seen) == 2
        assert seen[1].rpm == 7


async def test_rotations_at_once_all_end_with_the_key_at_the_last_ones_record(
    tmp_path: Path,
) -> None:
    """Concurrent rotations of one key: each loser retries from the winner's record; the
    index ends with the id at the record of the last secret handed out."""
    async with jetstream_server(tmp_path) as (nc, _):
        js = nc.jetstream(timeout=10)
        await js.create_key_value(bucket=subjects.KEYS_BUCKET)
        index = KeyIndex(js)
        await index.start()
        try:
            gateway = KeyAdmin(js, locator=index)
            _, key = await gateway.create("busy")
            await _caught_up(index, js)
            done = await asyncio.gather(*(gateway.rotate(key.id) for _ in range(4)))
            await _caught_up(index, js)
            live = [r for _, r in done if index.record_name(key.id) == record_name(r.hash)]
            assert len(live) == 1
            assert max(r.rotated_at for _, r in done) == live[0].rotated_at
            assert index.retired(key.id)  # every other secret's record is a retired one
            assert (await gateway.update(key.id, rpm=3)).rpm == 3
        finally:
            await index.stop()
