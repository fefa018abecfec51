"""Pages of the Batch API's lists go on past a cursor that is no longer listed."""

from __future__ import annotations

import pytest

from switchyard.errors import InvalidRequest
from switchyard.ingress import pages
from switchyard.schemas import batches as b


def _batch(created_at: int, nuid: str) -> b.Batch:
    return b.Batch(
        id=pages.stamped_id("batch_", nuid, created_at),
        endpoint="/v1/chat/completions",
        input_file_id="file-x",
        completion_window="24h",
        status="completed",
        created_at=created_at,
    )


def test_an_id_carries_its_time_and_an_older_one_none() -> None:
    made = pages.stamped_id("batch_", "A" * pages.NUID_CHARS, 1_796_000_000)
    assert pages.id_time(made, "batch_") == 1_796_000_000
    assert pages.id_time(made, "file-") is None
    assert pages.id_time("batch_" + "A" * pages.NUID_CHARS, "batch_") is None  # (older ids)
    assert pages.id_time("batch_zzzzzzzz" + "A" * pages.NUID_CHARS, "batch_") is None


def test_a_gone_cursor_continues_where_it_was() -> None:
    nuids = [f"{i:022d}" for i in range(6)]
    everything = [_batch(100 + i // 2, n) for i, n in enumerate(nuids)]
    newest_first = sorted(everything, key=lambda x: (x.created_at, x.id), reverse=True)
    gone = newest_first.pop(2)  # listed on the first page of 2, then forgotten
    first = pages.page(newest_first, None, 2)
    assert [x.id for x in first["data"]] == [x.id for x in newest_first[:2]]
    at = pages.id_time(gone.id, "batch_")
    rest = pages.page(newest_first, gone.id, 2, cursor_at=at)
    assert rest["data"] == newest_first[2:4]
    assert rest["has_more"] is True
    oldest_first = newest_first[::-1]
    after = pages.page(oldest_first, gone.id, 10, cursor_at=at, newest_first=False)
    assert after["data"] == [x for x in oldest_first if (x.created_at, x.id) > (at, gone.id)]
    assert len(after["data"]) == 2


def test_a_cursor_that_cannot_be_placed_is_refused_naming_after() -> None:
    with pytest.raises(InvalidRequest) as refused:
        pages.page([_batch(100, "0" * 22)], "batch_older", 10)
    assert refused.value.param == "after"


def test_a_batchs_files_are_placed_by_its_record() -> None:
    assert pages.batch_of_file("file-batch_abc123-output") == "batch_abc123"
    assert pages.batch_of_file("file-batch_abc123-errors") == "batch_abc123"
    assert pages.batch_of_file("file-0000abcd" + "A" * 22) is None
    cancelled = b.Batch(
        id="batch_abc123",
        endpoint="/v1/chat/completions",
        input_file_id="file-x",
        completion_window="24h",
        status="cancelled",
        created_at=100,
        cancelled_at=150,
    )
    assert pages.files_time(cancelled) == 150
    completed = b.Batch(
        id="batch_abc123",
        endpoint="/v1/chat/completions",
        input_file_id="file-x",
        completion_window="24h",
        status="completed",
        created_at=100,
        finalizing_at=140,
        completed_at=141,
    )
    assert pages.files_time(completed) == 140
