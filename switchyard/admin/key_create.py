"""``POST /admin/v1/keys``: a new client key, its secret shown once; with an ``Idempotency-Key``
header, a create sent again gets the first answer back (:mod:`.key_once`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from switchyard.admin.audit_words import created_words
from switchyard.admin.bodies import KeyFields, decode
from switchyard.admin.bodies import key_call as _keys
from switchyard.admin.context import AdminContext
from switchyard.admin.key_idempotency import body_digest, idempotency_key
from switchyard.admin.key_once import create_once, creates_of
from switchyard.admin.keys import namesake_warning, public_record
from switchyard.errors import InvalidRequest
from switchyard.runtime.http import JSON

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

    async def make(key_id: str, reserve: Callable[[], Awaitable[bool]]) -> dict[str, Any]:
        return await _make(c, request, name, fields, key_id=key_id, audit=audit, reserve=reserve)

    body = body_digest({"name": name, **fields})
    once = await create_once(creates_of(c), c.keys, value, body, make)
    return _answer(once.answer, replay=once.replay)


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


def _answer(doc: dict[str, Any], *, replay: bool = False) -> Response:
    if replay:
        doc = {"key": None, **doc, "idempotent_replay": True, "key_note": KEY_NOTE}
    response = Response(_ENCODE.encode(doc), status_code=201, media_type=JSON)
    response.headers["Cache-Control"] = "no-store"  # a first answer holds the only plaintext
    if replay:
        response.headers["Idempotent-Replayed"] = "true"
    return response
