"""How much one tenant may keep in the Batch API's files, checked before an upload is stored.

A tenant's files are counted from their records (``f.<owner>.<id>`` in ``sy_batches``, each
carrying its size): no second count to drift from them. Files deleted or expired no longer
count; batch outputs count but are never refused (the runner writes them, not the tenant).

Uploads an edge is storing and has not recorded yet are held here and count too, so two
uploads at once from one tenant through one edge cannot both take the same room: an upload
holds its size before it reads what is stored, and lets go only once its record is stored
(or it failed). Through different edges they can, for a moment: with E edges a tenant's
files reach at most E times its quota. The files store's own cap (``batch.files_max_bytes``)
bounds every tenant together.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator

from switchyard.errors import InvalidRequest
from switchyard.runtime.batchstore import BatchStore, Usage, store_full

_FREE = (
    "Delete files you no longer need (DELETE /v1/files/{file_id}; a message batch's go with "
    "DELETE /v1/messages/batches/{id}), or wait for them to expire."
)


class FileQuota:
    """One edge's check of tenants' files against ``max_bytes`` and ``max_files``."""

    def __init__(self, max_bytes: int, max_files: int) -> None:
        self.max_bytes = max_bytes
        self.max_files = max_files
        self._held: dict[str, Usage] = {}  # per tenant: uploads under way on this edge

    async def precheck(self, owner: str, store: BatchStore, at_least: int) -> None:
        """Refuse an upload before its body is read when it cannot fit: the tenant has no
        room for a file of ``at_least`` bytes (what the request announced, less anything
        else it may hold; 0 when it announced nothing).

        Raises:
            InvalidRequest: 400 ``storage_quota_exceeded``.
        """
        held = self._held.get(owner, Usage(0, 0))
        stored = await store.usage(owner, time.time())
        used = Usage(stored.size + held.size, stored.files + held.files)
        self._check(used, at_least, exact=False)

    @contextlib.asynccontextmanager
    async def holding(self, owner: str, size: int, store: BatchStore) -> AsyncIterator[None]:
        """Hold room for a file of ``size`` bytes while it is stored (store it and its record
        inside); refused when the tenant's files would pass its quota, or the files store has
        no room for it.

        Raises:
            InvalidRequest: 400 ``storage_quota_exceeded``.
            ServiceUnavailable: 503 ``file_storage_full``.
        """
        self._add(owner, Usage(size, 1))
        try:
            # Taken before the records are read: an upload that lets go after this was
            # recorded before the read, so it is counted, at worst twice (never missed).
            held = self._held[owner]
            stored = await store.usage(owner, time.time())
            others = Usage(held.size - size, held.files - 1)
            self._check(Usage(stored.size + others.size, stored.files + others.files), size)
            room = await store.room()
            if room is not None and size > room:
                raise store_full()
            yield
        finally:
            self._add(owner, Usage(-size, -1))

    def _add(self, owner: str, change: Usage) -> None:
        now = self._held.get(owner, Usage(0, 0))
        total = Usage(now.size + change.size, now.files + change.files)
        if total.files:
            self._held[owner] = total
        else:
            self._held.pop(owner, None)

    def _check(self, used: Usage, size: int, *, exact: bool = True) -> None:
        """Refuse a file of ``size`` bytes (``exact``: its size; else the least it can be)
        that would take a tenant's files, ``used`` so far, past either limit."""
        if used.files + 1 > self.max_files:
            raise InvalidRequest(
                f"You have exceeded your file storage quota: you may keep at most "
                f"{self.max_files} files, and you have {used.files}. {_FREE}",
                code="storage_quota_exceeded",
            )
        if used.size + size > self.max_bytes:
            this = f"{size} bytes" if exact else f"at least {size} bytes"
            raise InvalidRequest(
                f"You have exceeded your file storage quota: your files may take at most "
                f"{self.max_bytes} bytes, they take {used.size}, and this one is {this}. "
                f"{_FREE}",
                code="storage_quota_exceeded",
            )
