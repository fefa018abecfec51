"""Each tenant's share of the ``sy_response_items`` bucket: past it, its own oldest items go.

The bucket is bounded for all tenants together (``streams.response_items_max_bytes``, the
oldest going first), so without a share one tenant storing large answers pushes everyone
else's items out. Each tenant (as :mod:`.response_items` owns items: a key's team, else the
key) may keep ``streams.response_items_tenant_max_bytes`` of items (their encoded bytes): a
write that takes it past that deletes the tenant's own oldest items, down to nine tenths of
its share, and never another tenant's. Nothing is refused: a reference to an item deleted
this way is OpenAI's 404, as for one that expired.

The bytes a tenant keeps are counted in the bucket itself, under ``u<tenant digest>`` (a
number and where in the stream its oldest items begin), changed with compare-and-set so any
number of model-proxies count together. The oldest items are found in the stream's order
(``next_by_subj`` from that point, one message get each), and each is deleted only if it is
still the version met (so two model-proxies deleting at once free it once). The count runs
high when items leave by age or by the whole bucket's bound (nothing counts them out): the
tenant's own oldest then go a little early, and once none is left the count starts again from
zero. Items written before shares existed are not counted, and are the first to go.
"""

from __future__ import annotations

import hashlib

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import APIError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.errors import NotFoundError as NoMessage
from nats.js.kv import KeyValue

KEEP = 0.9  # an eviction brings the tenant down to this part of its share
WALK = 2000  # the most messages one eviction reads (its write has WRITE_S in all)
CAS_ATTEMPTS = 8
_WRONG_LAST = (10071, 10164)  # the server's "wrong last sequence" error codes


class Usage(msgspec.Struct):
    """What a tenant keeps: ``bytes`` of items counted in, and the stream sequence from
    which its oldest items are looked for (every one of its items before it is gone)."""

    bytes: int = 0
    floor: int = 1


_USAGE = msgspec.json.Decoder(Usage)


def digest(tenant: str) -> str:
    """The tenant as it appears in bucket keys (any text, as 32 hex digits)."""
    return hashlib.sha256(tenant.encode()).hexdigest()[:32]


def usage_key(tenant: str) -> str:
    return f"u{digest(tenant)}"


class Shares:
    """The per-tenant bound of one bucket (``share`` bytes of items per tenant)."""

    def __init__(self, js: JetStreamContext, bucket: str, share: int) -> None:
        self._js = js
        self._bucket = bucket
        self._stream = f"KV_{bucket}"
        self.share = share
        self.evicted = 0  # items deleted to keep tenants within their share

    async def charge(self, kv: KeyValue, tenant: str, added: int) -> None:
        """Count ``added`` bytes of items just written for ``tenant``; past its share, delete
        its oldest items (never another tenant's)."""
        usage = await self._change(kv, tenant, added, 0)
        if usage.bytes > self.share:
            freed, floor, emptied = await self._evict(kv, tenant, usage)
            await self._change(kv, tenant, -freed, floor, emptied=emptied)

    async def _change(
        self, kv: KeyValue, tenant: str, delta: int, floor: int, *, emptied: bool = False
    ) -> Usage:
        """The tenant's usage with ``delta`` bytes added and its floor raised to ``floor``
        (compare-and-set; ``emptied``: none of its items is left, the count restarts)."""
        key = usage_key(tenant)
        for _ in range(CAS_ATTEMPTS):
            try:
                entry = await kv.get(key)
                usage, revision = _USAGE.decode(entry.value or b"{}"), entry.revision or 0
            except KeyNotFoundError:
                usage, revision = Usage(), 0
            except msgspec.DecodeError:
                usage, revision = Usage(), entry.revision or 0
            changed = Usage(
                bytes=0 if emptied else max(0, usage.bytes + delta),
                floor=max(usage.floor, floor),
            )
            try:
                await kv.update(key, msgspec.json.encode(changed), last=revision)
            except KeyWrongLastSequenceError:
                continue  # another model-proxy counted first: read again
            return changed
        raise TimeoutError("the usage of a tenant's items kept changing")

    async def _evict(self, kv: KeyValue, tenant: str, usage: Usage) -> tuple[int, int, bool]:
        """Delete ``tenant``'s oldest items until it is within :data:`KEEP` of its share.

        Returns:
            The bytes freed, the sequence its oldest items now begin at, and whether it has
            no item left (its count is then restarted).
        """
        subject = f"$KV.{self._bucket}.t{digest(tenant)}.>"
        prefix = f"$KV.{self._bucket}."
        target = int(self.share * KEEP)
        freed, seq = 0, max(usage.floor, 1)
        for _ in range(WALK):
            if usage.bytes - freed <= target:
                return freed, seq, False
            try:
                msg = await self._js.get_msg(self._stream, seq=seq, subject=subject, next=True)
            except NoMessage:
                return freed, seq, True  # none of its items is left
            seq = (msg.seq or seq) + 1
            if msg.headers and msg.headers.get("KV-Operation"):
                continue  # a delete marker, not an item
            key = (msg.subject or "").removeprefix(prefix)
            try:
                await kv.delete(key, last=msg.seq)
            except APIError as exc:
                if exc.err_code in _WRONG_LAST:
                    continue  # written again, or deleted by another model-proxy
                raise
            freed += len(msg.data or b"")
            self.evicted += 1
        return freed, seq, False
