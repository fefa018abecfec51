"""The budget watch's spent marks writer on a plain nats-server: when the bucket gives no
answer, one scan waits one timeout, not one per spent key, and the marks are written at a
later scan; a mark still true is written again with its time every REWRITE_S; an unspent
key's stale mark is deleted whoever wrote it.

A plain nats-server: the bucket's subjects are taken by a subscriber that never answers (as a
publish the server drops for want of permission goes unanswered), then by a real bucket.
"""

from __future__ import annotations

import time
from pathlib import Path

import msgspec
import pytest
from nats.aio.msg import Msg
from nats.js.errors import KeyDeletedError, KeyNotFoundError

from switchyard.admin.spent_writer import SpentWriter
from switchyard.bus import subjects
from switchyard.limits import spent_marks
from switchyard.limits.spent_marks import SpentMark
from tests.support import SPENT_BUCKET, jetstream_server, relay_spent_reads

pytestmark = pytest.mark.integration

TIMEOUT_S = 0.5


def _marks(n: int) -> list[SpentMark]:
    return [
        SpentMark(f"key_{i:016x}", "daily", "d20270115", 10**9, time.time() + 3600)
        for i in range(n)
    ]


async def test_a_scan_waits_one_timeout_not_one_per_key(tmp_path: Path) -> None:
    async with jetstream_server(tmp_path / "js") as (nc, _):
        heard: list[str] = []

        async def silent(msg: Msg) -> None:
            heard.append(msg.subject)

        sub = await nc.subscribe(f"$KV.{subjects.KEY_SPENT_BUCKET}.>", cb=silent)
        writer = SpentWriter(nc, timeout=TIMEOUT_S)
        marks = _marks(6)
        began = time.monotonic()
        assert await writer.sync(marks) is False  # not complete: the watch's scan is not
        took = time.monotonic() - began
        assert took < 2 * TIMEOUT_S, took  # one timeout (six, 3 s, before)
        assert len(heard) == 1
        assert writer.written == {}

        # The bucket answers again: the next scan writes every mark.
        await sub.unsubscribe()
        kv = await nc.jetstream().create_key_value(SPENT_BUCKET)
        assert await writer.sync(marks) is True
        assert set(writer.written) == {m.key_id for m in marks}
        for mark in marks:
            entry = await kv.get(spent_marks.entry_name(mark.key_id))
            assert entry.value is not None
            stored = spent_marks.decode(entry.value)
            assert msgspec.structs.replace(stored, written_at=0.0, keep_s=0.0) == mark


async def test_a_mark_is_rewritten_with_its_time_and_an_unspent_keys_mark_deleted(
    tmp_path: Path,
) -> None:
    async with jetstream_server(tmp_path / "js") as (nc, _):
        js = nc.jetstream(timeout=2)
        kv = await js.create_key_value(SPENT_BUCKET)
        wall = [1_900_000_000.0]
        await relay_spent_reads(nc)
        writer = SpentWriter(nc, clock=lambda: wall[0])
        spent, unspent = _marks(2)

        async def stored(key_id: str) -> SpentMark | None:
            try:
                entry = await kv.get(spent_marks.entry_name(key_id))
            except (KeyNotFoundError, KeyDeletedError):
                return None
            return spent_marks.decode(entry.value) if entry.value else None

        # Another writer's mark (another gateway, or this one before a restart), stale by
        # this writer's clock (written now, read in 2030): nobody keeps it.
        await SpentWriter(nc).sync([unspent])
        assert await stored(unspent.key_id) is not None

        await writer.sync([spent], [unspent.key_id], now=0.0)
        first = await stored(spent.key_id)
        assert first is not None
        assert first.written_at == wall[0]
        assert await stored(unspent.key_id) is None  # deleted, though not written here

        wall[0] += 60
        await writer.sync([spent], [unspent.key_id], now=60.0)  # fresh: not written again
        again = await stored(spent.key_id)
        assert again is not None
        assert again.written_at == first.written_at

        wall[0] += spent_marks.REWRITE_S
        await writer.sync([spent], [unspent.key_id], now=60.0 + spent_marks.REWRITE_S)
        rewritten = await stored(spent.key_id)
        assert rewritten is not None
        assert rewritten.written_at == wall[0]  # stamped anew: heads keep trusting it
