"""Client API keys as stored in NATS KV (CLIENT account): hashes and limits, never the key.

The KV key of a record is ``k.<sha256 hex of the API key>``, so an ingress authenticates with
one hash and one dict lookup, and nothing in the bucket can be turned back into a usable key.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Literal

import msgspec

from switchyard.errors import AuthenticationFailed
from switchyard.schemas.numbers import Finite, NonNegative
from switchyard.schemas.scheduling import DEFAULT, Priority, Weight

KEY_PREFIX = "sk-sy-"
RECORD_PREFIX = "k."
Limit = Annotated[int, msgspec.Meta(ge=0)]
# Bounds on what an admin writes into a key (name, owner, team, each ``models`` pattern, in
# characters; the number of patterns). Checked where keys are written
# (:mod:`switchyard.admin.keys`), not when a record is read: a record written before the
# bounds existed still loads everywhere.
MAX_TEXT_CHARS = 256
MAX_MODELS = 1000
# Bounds on the numbers an admin writes, checked where keys are written too (a record only
# needs finite numbers to load). Spend is counted in nano-dollars in a 64-bit integer
# (~9.2e9 dollars), so a budget above a billion dollars could never be reached; an expiry
# past the last second of year 9999 has no calendar date to show.
MAX_BUDGET_USD = 1_000_000_000
MAX_EXPIRES_AT = 253_402_300_799
MAX_LIMIT = 2**63 - 1  # rpm, tpm and max_parallel: a 64-bit integer, as Valkey counts them


class ClientKey(msgspec.Struct, frozen=True, kw_only=True):
    """One client key's identity and limits (0 means unlimited).

    Attributes:
        id: public identifier (``key_...``), safe for logs, headers and metrics.
        name / owner / team: who it belongs to; ``team`` is the tenant for accounting. At most
            :data:`MAX_TEXT_CHARS` characters each.
        models: aliases it may use; ``*`` and trailing wildcards (``gpt-*``) allowed (at most
            :data:`MAX_MODELS` patterns of :data:`MAX_TEXT_CHARS` characters).
        rpm / tpm / max_parallel: requests and tokens per minute, and concurrent requests.
        budget_usd / budget_period: spend allowed per period (``daily``, ``weekly``,
            ``monthly``, ``total``, or a number of seconds as a string).
        expires_at: unix seconds, 0 for never.
        disabled: refused everywhere while true.
        hint: last four characters, shown in listings.
        weight: the tenant's share of a saturated deployment relative to other tenants
            (give every key of a team the same weight; the latest request's counts).
        priority: the class of a request that asks for none (header or ``service_tier``).
        max_priority: the highest class this key may ask for; higher wishes are lowered.
        rotated_at: when the key last got a new secret (0: never rotated).
        successor: set only on a *retired* record: the one left at an old secret's hash when
            the key was rotated. It names the hash of the record that replaced it (a chain of
            them after several rotations ends at the key's current record, whose id, limits
            and state are the ones that apply); its own ``expires_at`` is when the old secret
            stops working (the grace period, or the moment of rotation). Readers of an older
            version see a copy of the key that expires then.
    """

    id: str
    hash: str
    name: str
    owner: str = ""
    team: str = ""
    models: tuple[str, ...] = ("*",)
    rpm: Limit = 0
    tpm: Limit = 0
    max_parallel: Limit = 0
    budget_usd: NonNegative = 0.0
    budget_period: str = "monthly"
    expires_at: Finite = 0.0
    created_at: Finite = 0.0
    disabled: bool = False
    hint: str = ""
    weight: Weight = 1.0
    priority: Priority = DEFAULT
    max_priority: Priority = "interactive"
    rotated_at: Finite = 0.0
    successor: str = ""
    kind: Literal["client"] = "client"

    def allows(self, model: str) -> bool:
        return model_allowed(self.models, model)

    def expired(self, now: float | None = None) -> bool:
        return bool(self.expires_at) and (now or time.time()) >= self.expires_at

    def refusal(self, now: float | None = None) -> AuthenticationFailed | None:
        """Why this key may not be used right now (revoked or expired), or None when it may."""
        if self.successor and self.expired(now):
            return AuthenticationFailed(
                "This API key was replaced by a new one (rotated); use the new key."
            )
        if self.disabled:
            return AuthenticationFailed("This API key has been revoked.", code="api_key_revoked")
        if self.expired(now):
            return AuthenticationFailed("This API key has expired.", code="api_key_expired")
        return None


# How many retired records a lookup follows to the key's current one (one per rotation made
# while an older secret's record is still read: batches made before the rotations).
MAX_SUCCESSORS = 16


def current_key(
    record: ClientKey, get: Callable[[str], ClientKey | None], *, grace: bool = True
) -> ClientKey | None:
    """The key's current record, following ``successor`` from a retired ``record``; None when
    the chain ends at nothing (the key was deleted). With ``grace``, a retired record past
    its own expiry (the old secret's grace ended) is refused first.

    Raises:
        AuthenticationFailed: ``grace`` and the old secret no longer works.
    """
    _check_grace(record, grace=grace)
    for _ in range(MAX_SUCCESSORS):
        if not record.successor:
            return record
        found = get(record.successor)
        if found is None:
            return None
        record = found
    return None


def _check_grace(record: ClientKey, *, grace: bool) -> None:
    """Raise the refusal of a retired ``record`` whose grace ended (with ``grace``)."""
    if grace and record.successor:
        refused = record.refusal()
        if refused is not None:
            raise refused


async def current_key_read(
    record: ClientKey, get: Callable[[str], Awaitable[ClientKey | None]], *, grace: bool = True
) -> ClientKey | None:
    """:func:`current_key` with records read by an awaitable ``get`` (heads, batch runners)."""
    _check_grace(record, grace=grace)
    for _ in range(MAX_SUCCESSORS):
        if not record.successor:
            return record
        found = await get(record.successor)
        if found is None:
            return None
        record = found
    return None


def model_allowed(patterns: tuple[str, ...], model: str) -> bool:
    for pattern in patterns:
        if pattern in ("*", model):
            return True
        if pattern.endswith("*") and model.startswith(pattern[:-1]):
            return True
    return False


def hash_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


# ``\Z``, not ``$`` (which also matches before a final line break): every caller's ``.match``
# is then a whole-id check ("key_...\n" is no key id).
KEY_ID = re.compile(r"^key_[0-9a-f]{16}\Z")


def new_key_id() -> str:
    return "key_" + secrets.token_hex(8)


def record_name(key_hash: str) -> str:
    return RECORD_PREFIX + key_hash


KEY_ENCODER = msgspec.json.Encoder()
KEY_DECODER = msgspec.json.Decoder(ClientKey)
KEY_READ_ERRORS = (msgspec.ValidationError, msgspec.DecodeError, RecursionError)


def unreadable_key_id(raw: bytes) -> str:
    """The key id a record that :data:`KEY_DECODER` refuses names, or ``""`` (not JSON, no
    object, or no id of the right shape): readers name it when they skip the record."""
    try:
        doc = msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return ""
    key_id = doc.get("id") if isinstance(doc, dict) else None
    return key_id if isinstance(key_id, str) and KEY_ID.match(key_id) else ""
