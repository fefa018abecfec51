"""The Batch API's records under owner keys, and the records written before them, on a real
nats-server (``runtime.batchstore``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import NamedTuple

import msgspec
import pytest
import pytest_asyncio
from nats.js import JetStreamContext
from nats.js.errors import NoKeysError
from nats.js.kv import KeyValue

from switchyard.bus import subjects
from switchyard.errors import BusError
from switchyard.runtime.batchrecords import BatchRecords
from switchyard.runtime.batchstore import BatchStore
from switchyard.schemas import batches as b
from tests.support import jetstream_server

pytestmark = pytest.mark.integration


class Stored(NamedTuple):
    store: BatchStore
    kv: KeyValue
    js: JetStreamContext


@pytest_asyncio.fixture
async def stored(tmp_path: Path) -> AsyncIterator[Stored]:
    async with jetstream_server(tmp_path) as (nc, _):
        js = nc.jetstream(timeout=10)
        kv = await js.create_key_value(bucket=subjects.BATCHES_BUCKET)  # history 1, as deployed
        await js.create_object_store(subjects.FILES_BUCKET)
        yield Stored(BatchStore(nc), kv, js)


def _file(file_id: str, owner: str, created: int = 1_700_000_000) -> b.FileRecord:
    file = b.FileObject(
        id=file_id, bytes=3, created_at=created, filename="in.jsonl", purpose="batch"
    )
    return b.FileRecord(file=file, owner=owner)


def _batch(batch_id: str, owner: str, status: b.BatchStatus = "completed") -> b.BatchRecord:
    batch = b.Batch(
        id=batch_id,
        endpoint="/v1/chat/completions",
        input_file_id="file-in",
        completion_window="24h",
        status=status,
        created_at=1_700_000_000,
        completed_at=1_700_000_100 if status == "completed" else None,
    )
    return b.BatchRecord(batch=batch, owner=owner, key_id="key_1", key_hash="h")


async def _keys(kv: KeyValue) -> set[str]:
    try:
        return set(await kv.keys())
    except Exception:  # nats-py raises when the bucket holds no live key
        return set()


async def test_records_live_under_their_owner_and_lists_read_only_those(
    stored: Stored,
) -> None:
    store, kv, _ = stored
    await store.put_file(_file("file-a1", "team-a"), b"{}\n")
    await store.put_file(_file("file-b1", "team-b"), b"{}\n")
    await store.create(_batch("batch_a1", "team-a"))
    await store.create(_batch("batch_b1", "team-b"))
    a, b_ = b.owner_token("team-a"), b.owner_token("team-b")
    assert await _keys(kv) == {
        f"f.{a}.file-a1",
        f"f.{b_}.file-b1",
        f"b.{a}.batch_a1",
        f"b.{b_}.batch_b1",
    }
    assert [r.file.id for r in await store.files("team-a")] == ["file-a1"]
    assert [r.batch.id for r in await store.records("team-b")] == ["batch_b1"]
    # Another tenant's id is no such object, and so is an owner who has nothing.
    assert await store.file("file-a1", "team-b") is None
    assert await store.get("batch_a1", "team-b") is None
    assert await store.update("batch_a1", "team-b", lambda r: r) is None
    assert await store.records("team-c") == []
    await store.delete_file("file-a1", "team-a")
    assert await store.file("file-a1", "team-a") is None
    assert await store.content("file-a1") is None


async def test_records_written_before_owner_keys_work_and_move_once_they_cannot_change(
    stored: Stored,
) -> None:
    """A platform upgraded with batches and files in the bucket: the old ``f.<id>`` and
    ``b.<id>`` records are found, listed and changed where they are, and the runner's sweep
    moves the ones that can no longer change to their owner keys."""
    store, kv, _ = stored
    old_file, ended = _file("file-old", "team-a"), _batch("batch_old", "team-a")
    running = _batch("batch_run", "team-a", status="in_progress")
    await kv.put("f.file-old", b.ENCODER.encode(old_file))
    await kv.put("b.batch_old", b.ENCODER.encode(ended))
    await kv.put("b.batch_run", b.ENCODER.encode(running))
    assert await store.file("file-old", "team-a") == old_file
    assert await store.file("file-old", "team-b") is None
    assert [r.file.id for r in await store.files("team-a")] == ["file-old"]
    assert await store.files("team-b") == []
    assert {r.batch.id for r in await store.records("team-a")} == {"batch_old", "batch_run"}
    counts = b.RequestCounts(total=3, completed=1)

    def progress(r: b.BatchRecord) -> b.BatchRecord:
        batch = msgspec.structs.replace(r.batch, request_counts=counts)
        return msgspec.structs.replace(r, batch=batch)

    updated = await store.update("batch_run", "team-a", progress)
    assert updated is not None
    assert updated.batch.request_counts == counts
    assert b.BATCH_RECORD.decode((await kv.get("b.batch_run")).value or b"") == updated

    contents = await store.contents()
    assert {key for key, _, _ in contents.legacy} == {"f.file-old", "b.batch_old", "b.batch_run"}
    assert await store.move_legacy(contents.legacy) == 2  # the running batch stays
    a = b.owner_token("team-a")
    assert await _keys(kv) == {f"f.{a}.file-old", f"b.{a}.batch_old", "b.batch_run"}
    for old in ("f.file-old", "b.batch_old"):  # purged, not left as a delete marker
        with pytest.raises(NoKeysError):
            await kv.history(old)
    assert await store.file("file-old", "team-a") == old_file
    found = await store.get("batch_old", "team-a")
    assert found is not None
    assert found[0] == ended
    still = await kv.get("b.batch_run")
    assert (await store.contents()).legacy == [("b.batch_run", *_entry(still))]


async def test_a_record_deleted_while_it_moves_stays_deleted(
    stored: Stored,
) -> None:
    """The sweep read an old record, then its owner deleted it before the move: the copy the
    move made is removed again, so the deleted file does not come back."""
    store, kv, _ = stored
    await kv.put("f.file-gone", b.ENCODER.encode(_file("file-gone", "team-a")))
    legacy = (await store.contents()).legacy
    await store.delete_file("file-gone", "team-a")
    assert await store.move_legacy(legacy) == 0
    assert await store.file("file-gone", "team-a") is None
    assert await store.files("team-a") == []
    # A move that was cut short after its copy (the old record still there) just completes.
    await kv.put("f.file-twice", b.ENCODER.encode(_file("file-twice", "team-a")))
    await store.put_file(_file("file-twice", "team-a"), b"{}\n")
    assert await store.move_legacy((await store.contents()).legacy) == 1
    assert [r.file.id for r in await store.files("team-a")] == ["file-twice"]


async def test_a_move_cut_short_leaves_one_record_that_one_delete_removes(
    stored: Stored,
) -> None:
    """A sweep that stopped after copying leaves a record under both keys: it is listed once,
    one delete removes both copies, and a later sweep does not bring it back."""
    store, kv, _ = stored
    record = b.ENCODER.encode(_file("file-both", "team-a"))
    await kv.put("f.file-both", record)
    stale = (await store.contents()).legacy  # the sweep's read, before the owner's delete
    await kv.create(b.owned_key(b.FILE_PREFIX, "team-a", "file-both"), record)
    assert [r.file.id for r in await store.files("team-a")] == ["file-both"]
    await store.delete_file("file-both", "team-a")
    assert await store.file("file-both", "team-a") is None
    assert await store.files("team-a") == []
    assert await store.move_legacy(stale) == 0  # the old copy is gone: nothing to move
    assert await store.move_legacy((await store.contents()).legacy) == 0
    assert await store.file("file-both", "team-a") is None
    assert await store.files("team-a") == []
    # Both keys hold only markers now, which the sweep's next read finds and purges.
    markers = (await store.contents()).markers
    assert markers == {"f.file-both", b.owned_key(b.FILE_PREFIX, "team-a", "file-both")}
    await store.purge_markers(markers)
    assert await _keys(kv) == set()


async def test_the_sweep_leaves_the_runner_lease_s_marker_alone(stored: Stored) -> None:
    """A clean stop deletes the runner lease; a sweep that purged that marker could purge a
    lease another runner wrote just after its read (a purge removes every entry of the key)."""
    store, kv, _ = stored
    await kv.put(b.RUNNER_LEASE_KEY, b'{"owner":"batch-1","until":1}')
    await kv.delete(b.RUNNER_LEASE_KEY)
    await kv.put("f.file-gone", b.ENCODER.encode(_file("file-gone", "team-a")))
    await kv.delete("f.file-gone")
    assert (await store.contents()).markers == {"f.file-gone"}


async def test_everyones_batches_are_followed_live_and_a_move_is_not_a_delete(
    stored: Stored, tmp_path: Path
) -> None:
    """The admin views and the runner keep every batch in memory (``BatchRecords``): newest
    first, changes within moments, and a record the sweep moves stays (the old key's removal
    is not the batch's)."""
    store, kv, _ = stored
    await kv.put("b.batch_old", b.ENCODER.encode(_batch("batch_old", "team-a")))
    await store.create(_batch("batch_new", "team-b", status="in_progress"))
    seen: list[tuple[str, bool]] = []
    follower = BatchRecords(stored.js, lambda i, r: seen.append((i, r is not None)))
    await follower.start()
    try:
        assert [r.batch.id for r in follower.newest_first()] == ["batch_old", "batch_new"]
        later = _batch("batch_later", "team-a")
        later = msgspec.structs.replace(
            later, batch=msgspec.structs.replace(later.batch, created_at=1_800_000_000)
        )
        await store.create(later)
        assert await store.move_legacy((await store.contents()).legacy) == 1
        await store.delete("batch_new", "team-b")
        await _until(lambda: follower.get("batch_new") is None)
        assert [r.batch.id for r in follower.newest_first()] == ["batch_later", "batch_old"]
        moved = follower.get("batch_old")
        assert moved is not None
        assert moved.owner == "team-a"
        assert ("batch_new", False) in seen
        assert ("batch_old", False) not in seen  # moved, not deleted
        # A long-finished batch the sweep forgets is gone here too (a purge alone would not
        # reach a follower).
        await store.forget("batch_old", "team-a")
        await _until(lambda: follower.get("batch_old") is None)
        assert ("batch_old", False) in seen
        assert [r.batch.id for r in follower.newest_first()] == ["batch_later"]
    finally:
        await follower.stop()


async def _until(done: Callable[[], bool]) -> None:
    for _ in range(200):
        if done():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("not seen in 4 s")


def _entry(entry: KeyValue.Entry) -> tuple[bytes, int]:
    return entry.value or b"", entry.revision or 0


async def test_line_results_come_a_page_at_a_time_in_the_order_recorded(stored: Stored) -> None:
    store, js = stored.store, stored.js
    await js.create_key_value(bucket=subjects.BATCH_LINES_BUCKET)
    order = [*range(700, 0, -2), *range(1, 700, 2)]  # finished out of order; > 2 reads
    for index in order:
        assert await store.record_line("batch_a", index, f"result {index}".encode())
    assert not await store.record_line("batch_a", 3, b"a second result")  # kept as it was
    await store.record_line("batch_b", 1, b"someone else's")
    got = [pair async for pair in store.line_results("batch_a")]
    assert got == [(i, f"result {i}".encode()) for i in order]
    assert [pair async for pair in store.line_results("batch_none")] == []
    # The reads leave no consumer behind.
    assert (await js.stream_info(f"KV_{subjects.BATCH_LINES_BUCKET}")).state.consumer_count == 0
    await store.forget_lines("batch_a")
    assert [pair async for pair in store.line_results("batch_a")] == []
    assert [pair async for pair in store.line_results("batch_b")] == [(1, b"someone else's")]


async def test_lists_leave_no_reader_behind_on_the_server(stored: Stored) -> None:
    """Each list reads ``sy_batches`` through a consumer; one left on the server after the
    read (nats-py's watch only unsubscribes) fills the consumer limit for every tenant."""
    store, _, js = stored
    await store.put_file(_file("file-a1", "team-a"), b"{}\n")
    await store.create(_batch("batch_a1", "team-a"))
    for _ in range(5):
        assert [r.batch.id for r in await store.records("team-a")] == ["batch_a1"]
        assert [f.file.id for f in await store.files("team-a")] == ["file-a1"]
        assert [r.batch.id for r in (await store.contents()).records] == ["batch_a1"]
    info = await js.stream_info(f"KV_{subjects.BATCHES_BUCKET}")
    assert info.state.consumer_count == 0


async def test_a_full_consumer_limit_is_the_store_unavailable_not_a_crash(tmp_path: Path) -> None:
    """With no room for another consumer, a list fails as "store unavailable" (the edges
    answer 503 and the runner tries again), not as an unexpected error (a 500)."""
    async with jetstream_server(tmp_path) as (nc, _):
        js = nc.jetstream(timeout=10)
        await js.add_stream(
            name=f"KV_{subjects.BATCHES_BUCKET}",
            subjects=[f"$KV.{subjects.BATCHES_BUCKET}.>"],
            max_msgs_per_subject=1,
            allow_direct=True,
            allow_rollup_hdrs=True,
            deny_delete=True,
            max_consumers=1,
        )
        await js.create_object_store(subjects.FILES_BUCKET)
        await js.add_consumer(f"KV_{subjects.BATCHES_BUCKET}", durable_name="squatter")
        store = BatchStore(nc)
        with pytest.raises(BusError, match="too many readers"):
            await store.records("team-a")
        with pytest.raises(BusError, match="too many readers"):
            await store.contents()
