"""The budget watch's spent marks writer, when the bucket gives no answer: one scan waits one
timeout, not one per spent key, and the marks are written at a later scan.

A plain nats-server: the bucket's subjects are taken by a subscriber that never answers (as a
publish the server drops for want of permission goes unanswered), then by a real bucket.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from nats.aio.msg import Msg

from switchyard.admin.spent_writer import SpentWriter
from switchyard.bus import subjects
from switchyard.limits import spent_marks
from switchyard.limits.spent_marks import SpentMark
from tests.support import jetstream_server

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
        writer = SpentWriter(nc.jetstream(timeout=TIMEOUT_S))
        marks = _marks(6)
        began = time.monotonic()
        await writer.sync(marks)
        took = time.monotonic() - began
        assert took < 2 * TIMEOUT_S, took  # one timeout (six, 3 s, before)
        assert len(heard) == 1
        assert writer.written == {}

        # The bucket answers again: the next scan writes every mark.
        await sub.unsubscribe()
        kv = await nc.jetstream().create_key_value(bucket=subjects.KEY_SPENT_BUCKET)
        await writer.sync(marks)
        assert set(writer.written) == {m.key_id for m in marks}
        for mark in marks:
            entry = await kv.get(spent_marks.entry_name(mark.key_id))
            assert entry.value is not None
            assert spent_marks.decode(entry.value) == mark
