"""How a rotation's new record is settled: kept as the key's, or removed, whatever stops it.

A rotation writes the new secret's record N first, then retires the key's record L to point
at N with a compare-and-set. When that loses (another admin changed L), N is purged: the edge
keyring ends a key's requests on a deletion only when no other live record holds the key, so
this ends none, and a change an admin made through N meanwhile was made on every live record
of the key (``KeyAdmin`` writes them all), so purging N loses nothing.

Whatever else stops the rotation between N's creation and the compare-and-set's answer (an
error, a timeout, the caller gone: a cancellation) N is removed too, unless L names it (the
compare-and-set landed though its answer was lost), in a task the cancellation does not stop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

import msgspec
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from switchyard.schemas.keys import KEY_DECODER, KEY_READ_ERRORS, RECORD_PREFIX, ClientKey

log = logging.getLogger("switchyard.admin.keys")


def newer(a: ClientKey, b: ClientKey) -> bool:
    """Whether live record ``a`` is the key's newer secret than ``b`` (a total order: of two
    live records of one key each rotation retires only the older, never both)."""
    return (a.rotated_at or a.created_at, a.hash) > (b.rotated_at or b.created_at, b.hash)


def retired_to(new: ClientKey, ends: float, other: object) -> ClientKey | None:
    """Live record ``other`` retired to ``new`` (ending at ``ends``, or at its own expiry if
    sooner) when ``new`` is the newer; None: left as it is."""
    if not isinstance(other, ClientKey) or not newer(new, other):
        return None
    ended = min(ends, other.expires_at or ends)
    return msgspec.structs.replace(other, successor=new.hash, expires_at=ended)


async def shielded(work: Awaitable[object]) -> None:
    """Run ``work`` to its end even when the caller is cancelled meanwhile."""
    task = asyncio.ensure_future(work)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        raise
    except Exception:  # (cleanup: the caller's own error is the one to raise)
        log.warning("a rotation's unused record could not be removed", exc_info=True)


async def _names(kv: KeyValue, old: str, digest: str) -> bool:
    """Whether record ``old`` is retired to ``digest``'s (the rotation's write landed)."""
    try:
        entry = await kv.get(old)
        return KEY_DECODER.decode(entry.value or b"").successor == digest
    except (KeyNotFoundError, *KEY_READ_ERRORS):
        return False


async def _settle(kv: KeyValue, old: str, retired: bytes, revision: int, new: str) -> bool:
    digest = new[len(RECORD_PREFIX) :]
    try:
        await kv.update(old, retired, last=revision)
    except KeyWrongLastSequenceError:
        await kv.purge(new)  # lost: N goes (see the module's docstring)
        return False
    except BaseException:
        if not await _names(kv, old, digest):  # (an answer lost: look before removing)
            await kv.purge(new)
        raise
    return True


async def retire_or_drop(kv: KeyValue, old: str, retired: bytes, revision: int, new: str) -> bool:
    """Retire record ``old`` (at ``revision``) as ``retired`` naming record ``new``; True when
    that won. When it lost, or anything stopped it, ``new`` is purged (unless ``old`` names
    it), in a task a cancellation of the caller does not stop."""
    task = asyncio.ensure_future(_settle(kv, old, retired, revision, new))
    return await asyncio.shield(task)
