"""What the batch runner's sweep deletes: expired files (not while a batch uses them) and the
records of batches that ended long enough ago. Pure decisions; the real runner's sweep is
tested in ``tests/test_batches.py``."""

from __future__ import annotations

from typing import Any

from switchyard.schemas import batches as b
from switchyard.workers.batch.expiry import GRACE_S, due

NOW = 1_800_000_000
DAY = 86400


def _file(file_id: str, expires_at: int | None) -> b.FileRecord:
    file = b.FileObject(
        id=file_id,
        bytes=1,
        created_at=NOW - DAY,
        filename="x",
        purpose="batch",
        expires_at=expires_at,
    )
    return b.FileRecord(file=file, owner="t")


def _batch(
    batch_id: str, status: b.BatchStatus, input_id: str = "in", **stamps: Any
) -> b.BatchRecord:
    batch = b.Batch(
        id=batch_id,
        endpoint="/v1/chat/completions",
        input_file_id=input_id,
        completion_window="24h",
        status=status,
        created_at=NOW - 40 * DAY,
        **stamps,
    )
    return b.BatchRecord(batch=batch, owner="t", key_id="k", key_hash="h")


def test_a_file_goes_once_it_expired_and_the_grace_passed() -> None:
    files = [
        _file("never", None),
        _file("later", NOW + 10),
        _file("just", NOW - int(GRACE_S) + 1),  # expired, but an edge may still be using it
        _file("long", NOW - int(GRACE_S) - 1),
    ]
    assert due(files, [], NOW, 30 * DAY) == (["long"], [])


def test_a_file_that_a_running_batch_uses_stays_until_the_batch_ends() -> None:
    files = [_file("in-run", NOW - DAY), _file("in-done", NOW - DAY), _file("out", NOW - DAY)]
    records = [
        _batch("b1", "in_progress", input_id="in-run"),
        _batch("b2", "completed", input_id="in-done", completed_at=NOW - 1),
        _batch("b3", "finalizing", input_id="x", output_file_id="out"),
    ]
    assert due(files, records, NOW, 30 * DAY)[0] == ["in-done"]
    for status in ("validating", "cancelling"):
        assert due(files[:1], [_batch("b", status, input_id="in-run")], NOW, DAY)[0] == []


def test_a_batch_record_goes_its_ttl_after_the_batch_ended_whatever_the_ending() -> None:
    ttl = 30 * DAY
    old, young = NOW - ttl, NOW - ttl + 1
    records = [
        _batch("done", "completed", completed_at=old),
        _batch("failed", "failed", failed_at=old),
        _batch("expired", "expired", expired_at=old),
        _batch("cancelled", "cancelled", cancelled_at=old),
        _batch("recent", "completed", completed_at=young),
        _batch("running", "in_progress"),  # no end stamp: never
        _batch("stuck", "cancelling", cancelling_at=old),
    ]
    assert due([], records, NOW, ttl)[1] == ["done", "failed", "expired", "cancelled"]
    assert due([], records, NOW, 0)[1] == []  # 0 keeps every record
