"""``POST /admin/v1/keys``: a new client key, its secret shown once; with an ``Idempotency-Key``
header, a create sent again gets the first answer back (:mod:`.key_idempotency`)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from nats.errors import Error as NatsError
from starlette.requests import Request
from starlette.responses import Response

from switchyard.admin.audit_words import created_words
from switchyard.admin.bodies import KeyFields, decode
from switchyard.admin.bodies import key_call as _keys
from switchyard.admin.context import AdminContext
from switchyard.admin.key_damage import KeyRecordDamaged
from switchyard.admin.key_idempotency import (
    Claim,
    IdempotentCreates,
    Replay,
    body_digest,
    idempotency_key,
)
from switchyard.admin.keys import KeyIdTaken, KeyNotFound, namesake_warning, public_record
from switchyard.errors import ApiError, Conflict, InvalidRequest, ServiceUnavailable
from switchyard.runtime.http import JSON

log = logging.getLogger("switchyard.admin.keys")

_ENCODE = msgspec.json.Encoder()
# Records an API change (the API module's ``_audit``): context, request, action, target, detail.
Audit = Callable[[AdminContext, Request, str, str, str], Awaitable[None]]
KEY_NOTE = (
    "the key's secret was shown in the first answer only and is not kept; if it was lost, "
    "rotate the key (POST /admin/v1/keys/{id}/rotate: the same id and settings, a new secret)"
)

# The header as the OpenAPI document describes it.
IDEMPOTENCY_PARAMETER: dict[str, Any] = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "A create sent again with the same value and body within 24 h answers the "
    "first key (its secret left out); another body under the value is a 409",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}


async def create_key(c: AdminContext, request: Request, raw: bytes, audit: Audit) -> Response:
    fields = decode(raw, KeyFields, "key").changes()
    name = fields.pop("name", None)
    if not name:
        raise InvalidRequest("a key needs a name", param="name")
    value = idempotency_key(request.headers)
    if value is None:
        return _answer(await _make(c, request, name, fields, key_id=None, audit=audit))
    store = _store(c)

    async def made(key_id: str) -> bool:
        try:
            await c.keys.find(key_id)
        except KeyNotFound:
            return False
        except KeyRecordDamaged:  # there, if unreadable
            pass
        return True

    claim = await store.claim(value, body_digest({"name": name, **fields}), made)
    if isinstance(claim, Replay):
        return _answer(claim.answer, replay=True)
    if claim.made:  # made by the first request, which never stored its answer
        return await _from_key(c, store, claim)
    try:
        doc = await _make(
            c,
            request,
            name,
            fields,
            key_id=claim.key_id,
            audit=audit,
            reserve=store.writer(claim, made),
        )
    except KeyIdTaken:  # another replica took this create over (or it was ours, stalled)
        if await made(claim.key_id):
            return await _from_key(c, store, claim)
        raise Conflict(
            "a create with this Idempotency-Key is still in progress; try again in a moment",
            code="idempotency_key_in_use",
            param="Idempotency-Key",
            retry_after=1,
        ) from None
    except ApiError as exc:
        if exc.status < 500:  # refused before the key was written: the value is free again
            await _release(store, claim)
        # Else kept: the key may have been written; a retry finds out (key_idempotency.py).
        raise
    await _remember(store, claim, {k: v for k, v in doc.items() if k != "key"})
    return _answer(doc)


async def _from_key(c: AdminContext, store: IdempotentCreates, claim: Claim) -> Response:
    """The replay of a create whose key another request made (its answer not stored)."""
    answer = {"record": public_record(await _keys(c.keys.find(claim.key_id)))}
    await _remember(store, claim, answer)
    return _answer(answer, replay=True)


def _store(c: AdminContext) -> IdempotentCreates:
    if c.idempotency is None:
        raise ServiceUnavailable("the management API is starting", code="starting")
    return c.idempotency


async def _make(
    c: AdminContext,
    request: Request,
    name: str,
    fields: dict[str, Any],
    *,
    key_id: str | None,
    audit: Audit,
    reserve: Callable[[], Awaitable[bool]] | None = None,
) -> dict[str, Any]:
    """Raises:
    KeyIdTaken: ``reserve`` said the key id is another create's to write."""
    api_key, record = await _keys(c.keys.create(name, key_id=key_id, reserve=reserve, **fields))
    await audit(c, request, "key.create", record.id, created_words(record))
    doc: dict[str, Any] = {"key": api_key, "record": public_record(record)}
    others = await c.keys.namesakes(record)
    if others:  # allowed (names are labels), but the CLI's `keys show NAME` needs the id
        doc["warning"] = namesake_warning(record.name, others)
    return doc


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


def _answer(doc: dict[str, Any], *, replay: bool = False) -> Response:
    if replay:
        doc = {"key": None, **doc, "idempotent_replay": True, "key_note": KEY_NOTE}
    response = Response(_ENCODE.encode(doc), status_code=201, media_type=JSON)
    response.headers["Cache-Control"] = "no-store"  # a first answer holds the only plaintext
    if replay:
        response.headers["Idempotent-Replayed"] = "true"
    return response
