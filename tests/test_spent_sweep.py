"""The sweep of spent marks other writers left, with two writers (two gateway replicas) on a
real nats-server: a replica that starts deletes only marks nobody keeps, by each mark's own
``written_at`` and a compare-and-delete on the revision it read, and writes nothing for a key
that has no mark.

A plain nats-server: the admin identity's read import is played by a relay
(``tests.support.relay_spent_reads``); the zoned stack's own import is exercised by
tests/test_budget_watch.py and tests/test_zones.py.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import msgspec
import nats
import pytest
from nats.aio.msg import Msg
from nats.js.errors import KeyDeletedError, KeyNotFoundError, NoKeysError
from nats.js.kv import KeyValue

from switchyard.admin.spent_writer import (
    LONGEST_KEEP_S,
    READ_PAUSE_S,
    READ_TIMEOUT_S,
    SpentWriter,
    kept_s,
    rewrite_period,
)
from switchyard.bus import subjects
from switchyard.limits import spent_marks
from switchyard.limits.spent_marks import SpentMark
from tests.support import SPENT_BUCKET, jetstream_server, relay_spent_reads

pytestmark = pytest.mark.integration

INTERVAL_S = 30.0
KEPT_S = kept_s(rewrite_period(INTERVAL_S))  # 12 minutes


def _mark(n: int) -> SpentMark:
    return SpentMark(f"key_{n:016x}", "daily", "d20270115", 10**9, time.time() + 3600)


async def _stored(kv: KeyValue, key_id: str) -> SpentMark | None:
    try:
        entry = await kv.get(spent_marks.entry_name(key_id))
    except (KeyNotFoundError, KeyDeletedError):
        return None
    return spent_marks.decode(entry.value) if entry.value else None


async def _messages(kv: KeyValue, key_id: str) -> int:
    """How many messages the bucket holds for the key (marks and delete markers)."""
    try:
        return len(await kv.history(spent_marks.entry_name(key_id)))
    except NoKeysError:
        return 0


async def test_a_fresh_mark_of_another_writer_survives_a_start_and_a_stale_one_goes(
    tmp_path: Path,
) -> None:
    async with jetstream_server(tmp_path / "js") as (nc, _):
        kv = await nc.jetstream(timeout=2).create_key_value(SPENT_BUCKET)
        await relay_spent_reads(nc)
        fresh, stale, none = _mark(1), _mark(2), _mark(3)
        # Writer 2 (a running replica) keeps a fresh mark; one left by a replica that stopped
        # long ago is stale.
        writer2 = SpentWriter(nc, interval=INTERVAL_S)
        await writer2.sync([fresh])
        long_ago = time.time() - KEPT_S - 60
        await SpentWriter(nc, clock=lambda: long_ago).sync([stale])

        # Writer 1 starts and sees all three keys not spent (its scan a moment before
        # writer 2's, or its key records behind): only the stale mark goes.
        wall = [time.time()]
        writer1 = SpentWriter(nc, clock=lambda: wall[0], interval=INTERVAL_S)
        unspent = [fresh.key_id, stale.key_id, none.key_id]
        assert await writer1.sync([], unspent, now=0.0)
        assert await _stored(kv, fresh.key_id) is not None  # writer 2 keeps it
        assert await _stored(kv, stale.key_id) is None
        assert await _messages(kv, none.key_id) == 0  # no delete marker for no mark

        # Later scans: the fresh mark is not read again before it could be stale...
        await writer1.sync([], unspent, now=60.0)
        assert await _stored(kv, fresh.key_id) is not None
        assert await _messages(kv, none.key_id) == 0
        # ...and goes once writer 2 stopped keeping it (not rewritten for kept_s).
        wall[0] += KEPT_S + 1
        await writer1.sync([], unspent, now=KEPT_S + 1)
        assert await _stored(kv, fresh.key_id) is None


async def test_a_mark_rewritten_between_the_read_and_the_delete_survives(tmp_path: Path) -> None:
    async with jetstream_server(tmp_path / "js") as (nc, _):
        kv = await nc.jetstream(timeout=2).create_key_value(SPENT_BUCKET)
        mark = _mark(4)
        long_ago = time.time() - KEPT_S - 60
        await SpentWriter(nc, clock=lambda: long_ago).sync([mark])
        writer2 = SpentWriter(nc, interval=INTERVAL_S)

        async def rewrite() -> None:  # writer 2 marks the key again after writer 1's read
            await writer2.sync([mark])

        await relay_spent_reads(nc, before=rewrite)
        writer1 = SpentWriter(nc, interval=INTERVAL_S)
        assert await writer1.sync([], [mark.key_id], now=0.0)
        kept = await _stored(kv, mark.key_id)
        assert kept is not None  # the delete expected the stale revision: refused
        assert abs(kept.written_at - time.time()) < 60


async def test_reads_without_an_answer_cost_a_scan_one_timeout_then_pause(tmp_path: Path) -> None:
    """The older NATS config drops the admin's read (no permission): one read's timeout, then
    no sweep for READ_PAUSE_S, and nothing deleted meanwhile."""
    async with jetstream_server(tmp_path / "js") as (nc, _):
        kv = await nc.jetstream(timeout=2).create_key_value(SPENT_BUCKET)
        heard: list[str] = []

        async def silent(msg: Msg) -> None:
            heard.append(msg.subject)

        await nc.subscribe(f"{subjects.KEY_SPENT_DIRECT_GET_PREFIX}.>", cb=silent)
        long_ago = time.time() - KEPT_S - 60
        marks = [_mark(n) for n in range(5, 9)]
        await SpentWriter(nc, clock=lambda: long_ago).sync(marks)
        writer = SpentWriter(nc, interval=INTERVAL_S)
        unspent = [m.key_id for m in marks]
        began = time.monotonic()
        assert await writer.sync([], unspent, now=0.0)
        assert time.monotonic() - began < 2 * READ_TIMEOUT_S  # one timeout, not four
        assert len(heard) == 1
        await writer.sync([], unspent, now=READ_PAUSE_S - 1)
        assert len(heard) == 1  # paused
        for mark in marks:
            assert await _stored(kv, mark.key_id) is not None


async def test_at_a_500_s_interval_a_kept_mark_is_rewritten_before_another_writer_sweeps_it(
    tmp_path: Path,
) -> None:
    """At admin.budget_watch_s = 500 on both replicas, writer 2 used to rewrite its mark at
    its first scan 600 s after the last write (at 1,000 s), while writer 1 deleted a mark
    older than 500 + 120 s: at 750 s the kept mark went. Now writer 2 rewrites at 500 s (its
    last scan before 600 s pass) and says so on the mark (keep_s)."""
    async with jetstream_server(tmp_path / "js") as (nc, _):
        kv = await nc.jetstream(timeout=2).create_key_value(SPENT_BUCKET)
        await relay_spent_reads(nc)
        mark = _mark(10)
        wall = [time.time()]
        writer2 = SpentWriter(nc, clock=lambda: wall[0], interval=500.0)
        assert await writer2.sync([mark], now=0.0)
        wall[0] += 500
        assert await writer2.sync([mark], now=500.0)
        stored = await _stored(kv, mark.key_id)
        assert stored is not None
        assert stored.written_at == wall[0]  # rewritten at 500 s, not 1,000 s
        assert stored.keep_s == 500.0

        wall[0] += 250  # 750 s after the first write
        writer1 = SpentWriter(nc, clock=lambda: wall[0], interval=500.0)
        assert await writer1.sync([], [mark.key_id], now=0.0)
        assert await _stored(kv, mark.key_id) is not None


async def test_the_sweep_waits_out_the_writers_period_not_its_own(tmp_path: Path) -> None:
    """Mixed intervals: writer 2 scans every 1,200 s (a mark of its is up to 1,200 s old while
    kept), writer 1 every 30 s; a mark from before keep_s is taken as kept that long too."""
    async with jetstream_server(tmp_path / "js") as (nc, _):
        kv = await nc.jetstream(timeout=2).create_key_value(SPENT_BUCKET)
        await relay_spent_reads(nc)
        slow, older = _mark(11), _mark(12)
        wall = [time.time()]
        assert await SpentWriter(nc, clock=lambda: wall[0], interval=1200.0).sync([slow])
        legacy = msgspec.json.encode(
            {f: v for f, v in msgspec.structs.asdict(older).items() if f != "keep_s"}
            | {"written_at": wall[0]}
        )
        await kv.put(spent_marks.entry_name(older.key_id), legacy)

        wall[0] += 1000  # both kept by a writer scanning every 1,200 s
        writer1 = SpentWriter(nc, clock=lambda: wall[0], interval=INTERVAL_S)
        unspent = [slow.key_id, older.key_id]
        assert await writer1.sync([], unspent, now=0.0)
        assert await _stored(kv, slow.key_id) is not None
        assert await _stored(kv, older.key_id) is not None

        wall[0] += LONGEST_KEEP_S + 121 - 1000  # neither rewritten since: nobody keeps them
        assert await writer1.sync([], unspent, now=LONGEST_KEEP_S + 121 - 1000)
        assert await _stored(kv, slow.key_id) is None
        assert await _stored(kv, older.key_id) is None


async def test_a_read_on_a_closed_connection_is_no_answer_not_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Any NATS error on a read (here ConnectionClosedError; also a full outbound buffer, a
    draining connection) used to escape the sweep, and with it the scan: now it is a read
    without an answer (warned, the sweep paused), and the scan's writes count as done."""
    async with jetstream_server(tmp_path / "js") as (nc, _):
        kv = await nc.jetstream(timeout=2).create_key_value(SPENT_BUCKET)
        mark = _mark(13)
        long_ago = time.time() - KEPT_S - 60
        await SpentWriter(nc, clock=lambda: long_ago).sync([mark])
        other = await nats.connect(nc.connected_url.geturl())  # type: ignore[union-attr]
        writer = SpentWriter(other, interval=INTERVAL_S)
        await other.close()
        with caplog.at_level(logging.WARNING, logger="switchyard.admin.budget"):
            assert await writer.sync([], [mark.key_id], now=0.0)
        assert "could not read the spent mark" in caplog.text
        assert "ConnectionClosedError" in caplog.text
        assert await _stored(kv, mark.key_id) is not None


async def test_a_sweep_delete_that_fails_is_logged_and_does_not_fail_the_scan(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The bucket goes between the read and the compare-and-delete: the delete fails. The
    sweep is best effort: the scan's writes all went through, so sync says so (the last-scan
    gauge moves, SwitchyardBudgetWatchStalled stays quiet), and the failure is warned."""
    async with jetstream_server(tmp_path / "js") as (nc, _):
        js = nc.jetstream(timeout=2)
        await js.create_key_value(SPENT_BUCKET)
        mark = _mark(14)
        long_ago = time.time() - KEPT_S - 60
        await SpentWriter(nc, clock=lambda: long_ago).sync([mark])

        async def bucket_gone() -> None:
            await js.delete_key_value(subjects.KEY_SPENT_BUCKET)

        await relay_spent_reads(nc, before=bucket_gone)
        writer = SpentWriter(nc, timeout=1, interval=INTERVAL_S)
        with caplog.at_level(logging.WARNING, logger="switchyard.admin.budget"):
            assert await writer.sync([], [mark.key_id], now=0.0)
        assert "could not delete the stale spent mark of key" in caplog.text


async def test_a_read_answered_with_an_error_status_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A direct get answered with a status other than 404 pauses the sweep READ_PAUSE_S: said
    in the log (it was silent)."""
    async with jetstream_server(tmp_path / "js") as (nc, _):
        await nc.jetstream(timeout=2).create_key_value(SPENT_BUCKET)

        async def refuse(msg: Msg) -> None:
            await nc.publish(msg.reply, b"", headers={"Status": "500", "Description": "busy"})

        await nc.subscribe(f"{subjects.KEY_SPENT_DIRECT_GET_PREFIX}.>", cb=refuse)
        writer = SpentWriter(nc, interval=INTERVAL_S)
        with caplog.at_level(logging.WARNING, logger="switchyard.admin.budget"):
            assert await writer.sync([], [_mark(15).key_id], now=0.0)
        assert "answered with status 500 (busy)" in caplog.text


async def test_a_sweep_read_warning_does_not_hide_a_delete_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The sweep's reads and deletes shared one throttle: a read answered with an error
    status silenced, for a minute, the warning of a delete that failed after it. Each kind
    has its own throttle now."""
    async with jetstream_server(tmp_path / "js") as (nc, _):
        js = nc.jetstream(timeout=2)
        await js.create_key_value(SPENT_BUCKET)
        mark = _mark(16)
        long_ago = time.time() - KEPT_S - 60
        await SpentWriter(nc, clock=lambda: long_ago).sync([mark])
        refused = True

        async def answer(msg: Msg) -> None:
            nonlocal refused
            if refused:  # the first read: an error status
                refused = False
                await nc.publish(msg.reply, b"", headers={"Status": "500", "Description": "busy"})
                return
            real = msg.subject.replace(
                subjects.KEY_SPENT_DIRECT_GET_PREFIX,
                f"$JS.API.DIRECT.GET.KV_{subjects.KEY_SPENT_BUCKET}",
            )
            got = await nc.request(real, b"", timeout=2)
            await js.delete_key_value(subjects.KEY_SPENT_BUCKET)  # the delete will fail
            await nc.publish(msg.reply, got.data, headers=got.headers)

        await nc.subscribe(f"{subjects.KEY_SPENT_DIRECT_GET_PREFIX}.>", cb=answer)
        writer = SpentWriter(nc, timeout=1, interval=INTERVAL_S)
        with caplog.at_level(logging.WARNING, logger="switchyard.admin.budget"):
            assert await writer.sync([], [mark.key_id], now=0.0)  # read refused: paused
            assert await writer.sync([], [mark.key_id], now=READ_PAUSE_S + 1)
        assert "answered with status 500 (busy)" in caplog.text
        assert "could not delete the stale spent mark of key" in caplog.text
