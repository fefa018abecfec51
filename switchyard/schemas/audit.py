"""Audit entries: who changed what, when, through which door (web UI, API, CLI).

One message per admin action on ``audit.v1.<kind>.<verb>`` in the CLIENT account's ``AUDIT``
stream. An entry names its target (a key id, a secret or route name) and says what changed in
words; it never carries a secret value or a client key.
"""

from __future__ import annotations

from typing import Literal

import msgspec

Via = Literal["ui", "api", "cli"]


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One admin action.

    Attributes:
        ts: unix seconds.
        actor: who, as the caller named themselves (UI sign-in name, CLI user@host; ``admin
            token`` for the API); the admin credential is shared, so this is a claim recorded
            with the address it came from, not an identity.
        via: ``ui``, ``api`` or ``cli``.
        action: ``<kind>.<verb>``, e.g. ``key.create``, ``secret.rotate``, ``route.put``.
        target: what it acted on (key id, secret name, route alias, deployment id).
        detail: what changed, in words (never a value of a secret).
        ok: False for refused attempts worth keeping (a failed sign-in).
        source: the client address, when there is one.
    """

    ts: float
    actor: str
    via: Via
    action: str
    target: str = ""
    detail: str = ""
    ok: bool = True
    source: str = ""

    @property
    def kind(self) -> str:
        return self.action.partition(".")[0]


ENCODER = msgspec.json.Encoder()
DECODER = msgspec.json.Decoder(AuditEntry)
