"""Batches: every OpenAI batch and Anthropic message batch, with its progress, newest first.

Read from the batch records the runner keeps up to date (``request_counts`` every
``batch.progress_s``), which the gateway follows live (no bucket read per page); the page
reloads itself every few seconds while a batch is running.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from switchyard.admin.ui.context import Route, Ui
from switchyard.schemas import batches as b

# What the status filter offers: running (not ended yet), ended, or every batch.
FILTERS = {"": "any", "running": "running", "ended": "ended"}
REFRESH_S = 5
_TONE = {
    "completed": "ok",
    "failed": "bad",
    "expired": "bad",
    "cancelled": "muted",
    "cancelling": "warn",
}


def _row(record: b.BatchRecord, key_names: dict[str, str]) -> dict[str, Any]:
    batch = record.batch
    counts = batch.request_counts
    done = counts.completed + counts.failed
    anthropic = b.is_message_batch(batch)
    return {
        "id": batch.id,
        "api": "Anthropic messages" if anthropic else f"OpenAI {batch.endpoint}",
        "status": batch.status,
        "tone": _TONE.get(batch.status, "live"),
        "total": counts.total,
        "done": done,
        "completed": counts.completed,
        "failed": counts.failed,
        "percent": round(100 * done / counts.total) if counts.total else 0,
        "key_id": record.key_id,
        "key_name": key_names.get(record.key_id, record.key_id),
        "owner": record.owner,
        "restarts": max(0, record.generation - 1),
        "created_at": batch.created_at,
        "ended_at": b.ended_at(batch),
    }


async def batches_page(ui: Ui) -> Response:
    status = ui.query("status")
    if status not in FILTERS:
        status = ""
    offset, limit = ui.int_query("offset", 0), ui.int_query("limit", 50, 1, 500)
    store = ui.admin.batches
    records = store.newest_first() if store is not None else []
    running = [r for r in records if r.batch.status in b.ACTIVE]
    if status == "running":
        shown = running
    elif status == "ended":
        shown = [r for r in records if r.batch.status not in b.ACTIVE]
    else:
        shown = records
    page = shown[offset : offset + limit]
    names = {}
    for record in page:
        key = ui.admin.index.get(record.key_id)
        if key is not None:
            names[record.key_id] = key.name
    to_go = sum(
        max(
            0,
            r.batch.request_counts.total
            - r.batch.request_counts.completed
            - r.batch.request_counts.failed,
        )
        for r in running
    )
    return ui.page(
        "batches.html",
        "batches",
        "Batches",
        available=store is not None,
        rows=[_row(r, names) for r in page],
        chosen=status,  # not `status`: ui.page takes that as the HTTP status
        filters=FILTERS,
        running=len(running),
        to_go=to_go,
        failed=sum(r.batch.request_counts.failed for r in running),
        total=len(shown),
        offset=offset,
        limit=limit,
        refresh=REFRESH_S if running else None,
        base=ui.root + (f"/ui/batches?status={status}&" if status else "/ui/batches?"),
    )


ROUTES: list[Route] = [("/batches", "GET", batches_page)]
