"""Batch API jobs as the management API shows them."""

from __future__ import annotations

from typing import Any

import msgspec

from switchyard.admin.context import AdminContext
from switchyard.errors import ServiceUnavailable
from switchyard.runtime.batchrecords import BatchRecords
from switchyard.schemas.batches import BatchRecord


def batch_records(c: AdminContext) -> BatchRecords:
    if c.batches is None:
        raise ServiceUnavailable("batch records are not available", code="starting")
    return c.batches


def batch_view(record: BatchRecord) -> dict[str, Any]:
    """A batch for admins: OpenAI's object plus whose it is (never the key's hash)."""
    doc: dict[str, Any] = msgspec.to_builtins(record.batch)
    counts = record.batch.request_counts
    done = counts.completed + counts.failed
    doc.update(
        owner=record.owner,
        key_id=record.key_id,
        restarts=max(0, record.generation - 1),
        progress=round(done / counts.total, 4) if counts.total else 0.0,
    )
    return doc
