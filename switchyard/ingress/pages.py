"""Pages of ``GET /v1/files`` and ``GET /v1/batches``, OpenAI's cursor way, that go on past a
cursor deleted meanwhile.

A list is sorted by ``(created_at, id)``, newest first (files may ask for oldest first), and a
page is the items after the one whose id ``after`` names. The usual clean-up loop deletes as it
pages (``for f in client.files.list(limit=10): client.files.delete(f.id)``), so the next
page's ``after`` names a file that is gone: looking it up in the list found nothing, and the
page came back empty with ``has_more: false``, the loop ending after 10 of 25 files. So a
cursor not in the list is placed by its time: the ids the edges give (:func:`stamped_id`)
start with their ``created_at``; a batch's output or error file's time is kept in its batch's
record (the caller looks it up). A cursor that cannot be placed (an id of an older version,
or no id of ours) is a 400 naming ``after``: continuing from nowhere would skip or repeat.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from typing import Any

from switchyard.errors import InvalidRequest
from switchyard.schemas import batches as b

# An id's body: created_at in 8 hex digits (until 2106), then a NUID's 22 characters.
TIME_DIGITS = 8
NUID_CHARS = 22
_HEX = frozenset(string.hexdigits.lower())
# The output and error files of a batch (see ``workers/batch/output.py``).
_BATCH_FILE = re.compile(r"file-(batch_[A-Za-z0-9]+)-(output|errors)")


def stamped_id(prefix: str, nuid: str, created_at: int) -> str:
    """A new object's id: ``prefix``, its ``created_at``, then a NUID (unique)."""
    return f"{prefix}{created_at:0{TIME_DIGITS}x}{nuid}"


def id_time(object_id: str, prefix: str) -> int | None:
    """The ``created_at`` an id made by :func:`stamped_id` starts with; None for another."""
    if not object_id.startswith(prefix):
        return None
    body = object_id[len(prefix) :]
    stamp = body[:TIME_DIGITS]
    if len(body) != TIME_DIGITS + NUID_CHARS or not set(stamp) <= _HEX:
        return None
    return int(stamp, 16)


def batch_of_file(file_id: str) -> str | None:
    """The batch whose output or error file ``file_id`` is, if it is one."""
    found = _BATCH_FILE.fullmatch(file_id)
    return found.group(1) if found else None


def files_time(batch: b.Batch) -> int | None:
    """The ``created_at`` of a batch's output and error files: its ``finalizing_at``, or the
    stamp of its final status (None while it has no files)."""
    if batch.finalizing_at is not None:
        return batch.finalizing_at
    stamp = b.ENDED_AT.get(batch.status)
    value = getattr(batch, stamp, None) if stamp else None
    return value if isinstance(value, int) else None


def page(
    items: Sequence[b.FileObject | b.Batch],
    after: str | None,
    limit: int,
    *,
    cursor_at: int | None = None,
    newest_first: bool = True,
) -> dict[str, Any]:
    """One page: the items after the one with id ``after``, or, when none has it, after where
    an item created at ``cursor_at`` with that id would be (``items`` sorted by ``(created_at,
    id)``, descending when ``newest_first``).

    Raises:
        InvalidRequest: ``after`` is not in ``items`` and ``cursor_at`` is None.
    """
    if after:
        ids = [x.id for x in items]
        if after in ids:
            items = items[ids.index(after) + 1 :]
        elif cursor_at is None:
            raise InvalidRequest(
                f"after: {after!r} is no id of yours that a list can continue from",
                param="after",
            )
        else:
            mark = (cursor_at, after)
            items = [
                x
                for x in items
                if ((x.created_at, x.id) < mark if newest_first else (x.created_at, x.id) > mark)
            ]
    shown = items[:limit]
    return {
        "object": "list",
        "data": shown,
        "first_id": shown[0].id if shown else None,
        "last_id": shown[-1].id if shown else None,
        "has_more": len(items) > limit,
    }
