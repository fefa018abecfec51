"""Client key records that do not decode: what is known of them, and how one is mended.

A record can stop decoding when it is written by hand, or by an older version that let a
number JSON cannot carry through (``inf`` is written as ``null``). Readers never fail on one:
the admin names it (its key id when the bytes still say it) and can revoke it, which rewrites
it from every field that still reads on its own, revoked (:func:`mended`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from switchyard.errors import SwitchyardError
from switchyard.schemas.keys import (
    KEY_DECODER,
    KEY_READ_ERRORS,
    RECORD_PREFIX,
    ClientKey,
    new_key_id,
    unreadable_key_id,
)


class KeyRecordDamaged(SwitchyardError):
    """The stored record of this key does not decode: it can be revoked or deleted only."""

    def __init__(self, key_id: str, reason: str) -> None:
        self.key_id = key_id
        self.problem = (
            f"the stored record of key `{key_id}` cannot be read ({reason}); revoke it to "
            "rewrite it as a readable, revoked record (then check its settings), or delete it"
        )
        super().__init__(f"{self.problem}\n  revoke it with `switchyard keys revoke {key_id}`")


@dataclass(frozen=True)
class DamagedRecord:
    """A key record that does not decode: its KV key, the key id it names (``""`` when it
    names none), its revision, why it does not decode, and its bytes (a hash and limits, no
    secret)."""

    name: str
    key_id: str
    revision: int
    reason: str
    raw: bytes

    @property
    def handle(self) -> str:
        """How commands refer to it: its key id, else its record name."""
        return self.key_id or self.name


def read_record(
    name: str, raw: bytes, revision: int, key_id: str = ""
) -> ClientKey | DamagedRecord:
    """The record stored under ``name``, or what is known of it when it does not decode
    (``key_id``: the id the caller knows it by, when the record names none)."""
    try:
        return KEY_DECODER.decode(raw)
    except KEY_READ_ERRORS as exc:
        reason = str(exc).split("\n", 1)[0][:200] or type(exc).__name__
        return DamagedRecord(name, unreadable_key_id(raw) or key_id, revision, reason, raw)


def mended(damaged: DamagedRecord) -> tuple[ClientKey, list[str]]:
    """A revoked record with every field of ``damaged`` that still reads on its own, and the
    names of the fields that took their defaults instead."""
    try:
        doc = msgspec.json.decode(damaged.raw)
    except (msgspec.DecodeError, RecursionError):
        doc = None
    doc = doc if isinstance(doc, dict) else {}
    kept: dict[str, Any] = {
        "id": damaged.key_id or new_key_id(),
        "hash": damaged.name.removeprefix(RECORD_PREFIX),
        "name": "unreadable record",
        "disabled": True,
    }
    defaulted = []
    for field in ClientKey.__struct_fields__:
        if field in ("id", "hash", "disabled", "kind"):
            continue
        if field not in doc:
            defaulted.append(field)
            continue
        try:
            msgspec.convert({**kept, field: doc[field]}, ClientKey)
        except msgspec.ValidationError:
            defaulted.append(field)
        else:
            kept[field] = doc[field]
    return msgspec.convert(kept, ClientKey), defaulted
