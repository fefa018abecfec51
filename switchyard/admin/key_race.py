"""How a rotation's new record is settled: kept as the key's, or removed, whatever stops it.

A rotation writes the new secret's record N first, then retires the key's record L to point
at N with a compare-and-set. When that loses (another admin changed L), N is purged: the edge
keyring ends a key's requests on a deletion only when no other live record holds the key, so
this ends none, and a change an admin made through N meanwhile was made on every live record
of the key (``KeyAdmin`` writes them all), so purging N loses nothing.

Whatever else stops the rotation once the compare-and-set may have been sent (an error, a
timeout, the caller gone: a cancellation) leaves N as it is: the outcome is unknown, and a
compare-and-set whose answer was lost may still land, a moment later or on a replica a read
does not reach yet; purging N then retired L to a record that was gone (the key lost: 404,
its secret refused). A stray N is harmless: its secret was never shown, a change to the key
is made on it too, the key's next rotation retires it, and a delete removes it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

import msgspec
from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from switchyard.schemas.keys import ClientKey

log = logging.getLogger("switchyard.admin.keys")


def newer(a: ClientKey, b: ClientKey) -> bool:
    """Whether live record ``a`` is the key's newer secret than ``b`` (a total order: of two
    live records of one key each rotation retires only the older, never both)."""
    return (a.rotated_at or a.created_at, a.hash) > (b.rotated_at or b.created_at, b.hash)


def retired_to(new: ClientKey, ends: float, revoked: list[bool], other: object) -> ClientKey | None:
    """Live record ``other`` retired to ``new`` (ending at ``ends``, or at its own expiry if
    sooner) when ``new`` is the newer; None: left as it is. ``revoked`` hears whether it was
    revoked (the caller then revokes ``new``: a revoke never undone by a rotation)."""
    if not isinstance(other, ClientKey) or not newer(new, other):
        return None
    revoked.append(other.disabled)
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


async def _settle(kv: KeyValue, old: str, retired: bytes, revision: int, new: str) -> bool:
    try:
        await kv.update(old, retired, last=revision)
    except KeyWrongLastSequenceError:
        await kv.purge(new)  # lost: N goes (see the module's docstring)
        return False
    return True  # (anything else: the outcome is unknown, N stays; raised to the caller)


async def retire_or_drop(kv: KeyValue, old: str, retired: bytes, revision: int, new: str) -> bool:
    """Retire record ``old`` (at ``revision``) as ``retired`` naming record ``new``; True when
    that won. When it definitely lost, ``new`` is purged, in a task a cancellation of the
    caller does not stop; any other failure is raised and leaves ``new`` (see above)."""
    task = asyncio.ensure_future(_settle(kv, old, retired, revision, new))
    return await asyncio.shield(task)
