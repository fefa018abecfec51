"""A key create done once per idempotency value, whoever sends it: ``POST /admin/v1/keys``
with an ``Idempotency-Key`` header (:mod:`.key_create`), the web app's New key form (its
one-time token, :mod:`.ui.pages.keys`) and ``switchyard keys create --idempotency-key``.

One path over one bucket (:class:`~.key_idempotency.IdempotentCreates`): the value is
reserved with the key id about to be written, the first answer (without its secret) stored
once the key exists, and a create sent again answered with it (:attr:`Once.replay`). Each
caller names its values apart (the web app's and the CLI's have a prefix of their own, ended
by a space, which no value a caller gives may hold: :func:`~.key_idempotency.valid_value`), so
one's value never answers another's create.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from nats.errors import Error as NatsError

from switchyard.admin.bodies import key_call
from switchyard.admin.context import AdminContext
from switchyard.admin.key_damage import KeyRecordDamaged
from switchyard.admin.key_idempotency import API, HEADER, Caller, Claim, IdempotentCreates, Replay
from switchyard.admin.keys import KeyAdmin, KeyIdTaken, KeyNotFound, public_record
from switchyard.errors import ApiError, ConfigError, Conflict, ServiceUnavailable

log = logging.getLogger("switchyard.admin.keys")

# Makes the key with this id, calling the reservation (``reserve``) just before its write,
# and returns the first answer: ``key`` (the secret) and ``record``, maybe ``warning``.
Make = Callable[[str, Callable[[], Awaitable[bool]]], Awaitable[dict[str, Any]]]


def creates_of(c: AdminContext) -> IdempotentCreates:
    """The gateway's bucket of creates done once (a 503 while the admin API starts)."""
    if c.idempotency is None:
        raise ServiceUnavailable("the management API is starting", code="starting")
    return c.idempotency


@dataclass
class Once:
    """A create's answer: the key made now (``answer["key"]``, its secret), or (``replay``)
    the first answer to this value again, without its secret (``record`` as first answered,
    maybe ``warning``)."""

    answer: dict[str, Any]
    replay: bool = False


async def create_once(
    store: IdempotentCreates,
    keys: KeyAdmin,
    value: str,
    body: str,
    make: Make,
    *,
    caller: Caller = API,
) -> Once:
    """The key for ``value`` and ``body`` (a :func:`~.key_idempotency.body_digest`): made by
    ``make`` the first time, the first answer after. The store's refusals name the value as
    ``caller`` does (the header, the New key form, ``--idempotency-key``).

    Raises:
        Conflict: another body under ``value`` (``idempotency_key_reused``), or its first
            create still in progress (``idempotency_key_in_use``).
        ServiceUnavailable: the bucket is missing or refused (an older NATS config).
    """

    async def made(key_id: str) -> bool:
        try:
            await keys.find(key_id)
        except KeyNotFound:
            return False
        except KeyRecordDamaged:  # there, if unreadable
            pass
        return True

    claim = await store.claim(value, body, made, caller)
    if isinstance(claim, Replay):
        return Once(claim.answer, replay=True)
    if claim.made:  # made by the first request, which never stored its answer
        return await _from_key(keys, store, claim)
    try:
        doc = await make(claim.key_id, store.writer(claim, made))
    except KeyIdTaken:  # another replica took this create over (or it was ours, stalled)
        if await made(claim.key_id):
            return await _from_key(keys, store, claim)
        raise Conflict(
            f"a create with this {HEADER} is still in progress; try again in a moment",
            code="idempotency_key_in_use",
            param=HEADER,
            retry_after=1,
        ) from None
    except ConfigError:  # a bad field (the CLI's, not put in API terms): nothing written
        await _release(store, claim)
        raise
    except ApiError as exc:
        if exc.status < 500:  # refused before the key was written: the value is free again
            await _release(store, claim)
        # Else kept: the key may have been written; a retry finds out (key_idempotency.py).
        raise
    await _remember(store, claim, {k: v for k, v in doc.items() if k != "key"})
    return Once(doc)


async def _from_key(keys: KeyAdmin, store: IdempotentCreates, claim: Claim) -> Once:
    """The replay of a create whose key another request made (its answer not stored)."""
    answer = {"record": public_record(await key_call(keys.find(claim.key_id)))}
    await _remember(store, claim, answer)
    return Once(answer, replay=True)


async def _remember(store: IdempotentCreates, claim: Claim, answer: dict[str, Any]) -> None:
    """Store the answer; when that fails the key is made all the same (a retry is then
    answered from the key)."""
    try:
        await store.answered(claim, answer)
    except (NatsError, TimeoutError, ApiError) as exc:  # (the secret must reach the caller)
        log.warning("the answer to an idempotent key create was not stored: %s", exc)


async def _release(store: IdempotentCreates, claim: Claim) -> None:
    """Free the value of a create refused (4xx); failing that, the refusal still reaches the
    caller, and the value frees itself after ``PENDING_S`` (its key was never written)."""
    try:
        await store.release(claim)
    except (NatsError, TimeoutError, ApiError) as exc:
        log.warning("the Idempotency-Key of a refused key create was not freed: %s", exc)
