"""``POST /admin/v1/batches/{id}/cancel``: an admin stops a tenant's batch, as its owner's cancel
(``POST /v1/batches/{id}/cancel``, or ``/v1/messages/batches/{id}/cancel`` for Anthropic's)
does: the record becomes ``cancelling`` (compare-and-set, so the runner's progress is never
overwritten), the runner stops sending its lines, withdraws those still queued and ends it
``cancelled``. Before, an admin could see a runaway batch (spending a key's budget, flooding
a deployment) but only stop it by revoking the key, which stopped everything else the key did.

The write goes through the gateway's own connection (``AdminContext.batch_store``), as a
tenant's cancel does: the admin identity, which every CLI operator holds, only reads batch
records (:mod:`switchyard.admin.plugin`).
"""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from switchyard.admin.api_audit import api_audit
from switchyard.admin.batch_view import batch_records, batch_view
from switchyard.admin.context import AdminContext
from switchyard.errors import Conflict, NotFound, ServiceUnavailable
from switchyard.runtime.http import JSON
from switchyard.schemas import batches as b

_ENCODE = msgspec.json.Encoder()


async def cancel_batch(request: Request, c: AdminContext) -> Response:
    batch_id = request.path_params["batch_id"]
    # Whose it is (the record is kept by owner); one created a moment ago is read from the
    # bucket when the gateway's copy has not seen it yet.
    found = await batch_records(c).find(batch_id)
    if found is None:
        raise NotFound(f"no batch `{batch_id}`", param="batch_id")
    _refuse_unstoppable(found.batch.status)
    if c.batch_store is None:
        raise ServiceUnavailable("the management API is starting", code="starting")
    applied = False

    def change(record: b.BatchRecord) -> b.BatchRecord | None:
        nonlocal applied
        updated = b.cancelling(record)
        applied = updated is not None  # (the last try's answer is the one stored)
        return updated

    updated = await c.batch_store.update(batch_id, found.owner, change)
    if updated is None:  # deleted (an ended message batch) since the list was read
        raise NotFound(f"no batch `{batch_id}`", param="batch_id")
    if not applied:  # it ended, or began stopping, between the two reads: nothing was done
        _refuse_unstoppable(updated.batch.status)
    batches = batch_records(c)
    batches.note(updated)  # (its follower may not have seen the write yet)
    was = found.batch.status
    detail = f"owner {updated.owner!r}, key {updated.key_id or '-'}, was {was}"
    await api_audit(c, request, "batch.cancel", batch_id, detail)
    return Response(_ENCODE.encode(batch_view(updated)), media_type=JSON)


def _refuse_unstoppable(status: str) -> None:
    """A 409 for a batch an admin's cancel cannot change: ended, or already stopping
    (``cancelling``) or writing its results (``finalizing``). Answering 200 there would say
    (and audit) a cancel that did nothing."""
    if status in b.ENDED:
        raise Conflict(f"the batch is already {status}", param="batch_id")
    if status not in b.CANCELLABLE:
        raise Conflict(
            f"the batch is {status}: "
            + ("already being cancelled" if status == "cancelling" else "past cancelling"),
            param="batch_id",
        )


ENDPOINT = (
    "/batches/{batch_id}/cancel",
    "POST",
    "Cancel a tenant's batch, as its owner's cancel does (audited)",
    cancel_batch,
)
