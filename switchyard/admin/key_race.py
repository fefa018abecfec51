"""What a rotation does with the record it created when its compare-and-set lost a race.

A rotation writes the new secret's record N first, then retires the key's record with a
compare-and-set. When that loses (another admin changed or rotated the key meanwhile), N must
go, without two harms an unconditional purge did (a review):

* Every edge follows the bucket; a live record deleted there is a deleted key, and the edge
  ended every request of the key in flight (``This API key has been deleted``), though the
  key was live. So N is first rewritten as a retired record naming the key's live record as
  its successor: the deletion of a retired record refuses nothing.
* Between N's creation and its removal the gateway's index may map the key id to N, and a
  revoke or an edit by id lands on N (200, audited). Purging N undid it: the key stayed live.
  So N is rewritten only if nobody wrote it since its creation (compare-and-set); when someone
  did, what they changed is written onto the key's live record first.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from switchyard.admin.key_damage import DamagedRecord
from switchyard.errors import Conflict
from switchyard.schemas.keys import (
    KEY_DECODER,
    KEY_ENCODER,
    KEY_READ_ERRORS,
    RECORD_PREFIX,
    ClientKey,
    record_name,
)

log = logging.getLogger("switchyard.admin.keys")

ATTEMPTS = 5
# Not settings: what makes a record the one of its secret, or a retired one.
_NOT_CHANGES = frozenset({"hash", "hint", "rotated_at", "successor"})

Found = tuple[ClientKey | DamagedRecord, int]


def changes_made(written: ClientKey, now: ClientKey) -> dict[str, Any]:
    """The settings of ``now`` that differ from ``written`` (another admin's change)."""
    before, after = msgspec.to_builtins(written), msgspec.to_builtins(now)
    return {f: v for f, v in after.items() if f not in _NOT_CHANGES and before.get(f) != v}


def _name(found: ClientKey | DamagedRecord) -> str:
    return found.name if isinstance(found, DamagedRecord) else record_name(found.hash)


async def withdraw(
    kv: KeyValue,
    name: str,
    revision: int,
    written: ClientKey,
    live: Callable[[], Awaitable[Found | None]],
) -> None:
    """Remove record ``name`` (``written`` at ``revision`` by a rotation that then lost),
    keeping what others wrote on it, and refusing nobody's requests. ``live`` reads the key's
    live record (not ``name``).

    Raises:
        Conflict: still losing races after several attempts (``name`` stays: a retired or
            live record of the key, never a change lost).
    """
    for _ in range(ATTEMPTS):
        found = await live()
        if found is None:  # the key was deleted meanwhile: so is its new record
            await kv.purge(name)
            return
        target, target_revision = found
        target_name = _name(target)
        retired = msgspec.structs.replace(
            written,
            successor=target_name[len(RECORD_PREFIX) :],
            expires_at=min(time.time(), written.expires_at or math.inf),  # handed to nobody
        )
        try:
            await kv.update(name, KEY_ENCODER.encode(retired), last=revision)
        except KeyWrongLastSequenceError:  # someone wrote N, taking it for the key's record
            try:
                entry = await kv.get(name)
            except KeyNotFoundError:  # a delete by id found N: the key is deleted
                log.warning("a key deleted during a rotation: its live record is deleted too")
                await kv.purge(target_name)
                await kv.purge(name)
                return
            try:
                now = KEY_DECODER.decode(entry.value or b"")
            except KEY_READ_ERRORS:
                now = None
            if now is None or isinstance(target, DamagedRecord):
                await kv.purge(name)  # (nothing readable to carry over, or nowhere to)
                return
            changes = changes_made(written, now)
            if changes:
                carried = msgspec.convert({**msgspec.to_builtins(target), **changes}, ClientKey)
                try:
                    await kv.update(target_name, KEY_ENCODER.encode(carried), last=target_revision)
                except KeyWrongLastSequenceError:
                    continue  # the live record changed too: read both again
            written, revision = now, entry.revision or 0
            continue
        await kv.purge(name)  # a retired record's deletion refuses nothing at the edges
        return
    raise Conflict(f"key `{written.id}` is changing too fast; try again")
