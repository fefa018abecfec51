"""What a change to a client key changed, in words for its audit entry (API, web app, CLI
alike): a created key's settings, an update's fields old -> new, a deleted key's name.

Never a secret nor a key's hash (nor its last four characters); text values are quoted and
cut, and the whole is bounded (``MAX_CHARS``), so an entry stays small.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping
from typing import Any

from switchyard.admin.key_damage import KeyRecordDamaged
from switchyard.admin.keys import KeyAdmin
from switchyard.runtime.provider_changes import bounded
from switchyard.schemas.keys import ClientKey

MAX_CHARS = 1000
_TEXT_CHARS = 64
_MODELS_CHARS = 200
# The settings a created key's entry names when they are not the default.
_SETTINGS = (
    "owner",
    "team",
    "rpm",
    "tpm",
    "max_parallel",
    "budget_usd",
    "budget_period",
    "expires_at",
    "weight",
    "priority",
    "max_priority",
)
_DEFAULT = ClientKey(id="", hash="", name="")


def shown(field: str, value: Any) -> str:
    """One setting's value as an entry shows it."""
    if field == "expires_at":
        if not value:
            return "never"
        when = datetime.datetime.fromtimestamp(value, datetime.UTC)
        return when.strftime("%Y-%m-%dT%H:%M:%SZ")
    if field == "models":
        text = ",".join(value)
        return text if len(text) <= _MODELS_CHARS else text[: _MODELS_CHARS - 1] + "…"
    if isinstance(value, str):
        return repr(value if len(value) <= _TEXT_CHARS else value[: _TEXT_CHARS - 1] + "…")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def created_words(record: ClientKey) -> str:
    """``name 'k2', models gpt-*, budget_usd 10, team 'ml'``: its name, models and every
    setting not at its default."""
    phrases = [f"name {shown('name', record.name)}", f"models {shown('models', record.models)}"]
    for field in _SETTINGS:
        value = getattr(record, field)
        if value != getattr(_DEFAULT, field):
            phrases.append(f"{field} {shown(field, value)}")
    return bounded(phrases, MAX_CHARS, ", ")


def update_words(before: ClientKey | None, after: ClientKey, fields: Mapping[str, Any]) -> str:
    """The fields an update set, old -> new (``rpm 0 -> 60``; ``(unchanged)`` when it set
    what was there); ``disabled`` as what it did: ``enabled`` (a revoked key let in again)
    or ``disabled``. ``before`` None: the new values only."""
    phrases = []
    for field in sorted(fields):
        new = getattr(after, field, None)
        old = getattr(before, field, None) if before is not None else None
        if field == "disabled":
            phrase = "disabled" if new else "enabled"
            phrases.append(phrase + (" (already)" if old == new else ""))
        elif before is None:
            phrases.append(f"{field} {shown(field, new)}")
        elif old == new:
            phrases.append(f"{field} {shown(field, new)} (unchanged)")
        else:
            phrases.append(f"{field} {shown(field, old)} -> {shown(field, new)}")
    return bounded(phrases, MAX_CHARS, ", ")


async def update_seen(
    keys: KeyAdmin,
    key_id: str,
    fields: dict[str, Any],
    check: Callable[[ClientKey], None] | None = None,
) -> tuple[ClientKey, ClientKey | None]:
    """:meth:`KeyAdmin.update_checked` (``check`` optional), also returning the record the
    write replaced (the last one the compare-and-set read)."""
    seen: list[ClientKey] = []

    def watched(current: ClientKey) -> None:
        seen.append(current)
        if check is not None:
            check(current)

    record = await keys.update_checked(key_id, watched, fields)
    return record, seen[-1] if seen else None


async def delete_said(keys: KeyAdmin, key_id: str) -> str:
    """Delete the key, returning its audit words: its name (``record unreadable`` for a
    record that does not decode, which is deleted all the same)."""
    try:
        record: ClientKey | None = await keys.find(key_id)
    except KeyRecordDamaged:
        record = None
    await keys.delete(key_id)
    return f"name {shown('name', record.name)}" if record is not None else "record unreadable"
