"""What the batch runner deletes when it sweeps: expired files and long-finished batches.

Pure decisions on the records read in one pass; the runner does the deleting.
"""

from __future__ import annotations

from collections.abc import Iterable

from switchyard.schemas import batches as b

# A file is deleted only this long after it expired. An edge that checked the file just
# before its expiry may still be writing a batch that uses it; that write is long done by then.
GRACE_S = 60.0


def due(
    files: Iterable[b.FileRecord],
    records: Iterable[b.BatchRecord],
    now: float,
    finished_ttl_s: float,
) -> tuple[list[str], list[str]]:
    """The ids of the files and of the batch records to delete at ``now``.

    A file goes once it expired (plus :data:`GRACE_S`), unless a batch that has not ended
    reads or writes it: the runner reads a batch's input again after a restart, so that file
    waits for the batch to end. A batch record goes ``finished_ttl_s`` after the batch ended
    (never while it runs; never when ``finished_ttl_s`` is 0).
    """
    records = list(records)
    in_use = {
        file_id
        for r in records
        if r.batch.status in b.ACTIVE
        for file_id in (r.batch.input_file_id, r.batch.output_file_id, r.batch.error_file_id)
        if file_id
    }
    gone_files = [
        f.file.id for f in files if b.file_gone(f.file, now - GRACE_S) and f.file.id not in in_use
    ]
    gone_batches: list[str] = []
    if finished_ttl_s > 0:
        for r in records:
            ended = b.ended_at(r.batch)
            if ended is not None and now >= ended + finished_ttl_s:
                gone_batches.append(r.batch.id)
    return gone_files, gone_batches
