"""Rotating a client key (``POST /admin/v1/keys/{id}/rotate``): its body and its answers.

The key keeps its id, settings, spend and budget; it gets a new secret, shown once, and the
old one stops working at once or after a grace period (see :meth:`KeyAdmin.rotate`).
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from switchyard.admin.keys import MAX_GRACE_S, public_record
from switchyard.schemas.keys import ClientKey


class RotateBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``grace_seconds``: how long the old secret keeps working (0, the default: refused at
    once, as a leaked secret should be; at most a day)."""

    grace_seconds: Annotated[int, msgspec.Meta(ge=0, le=MAX_GRACE_S)] = 0


def grace_words(grace_s: float) -> str:
    """What happens to the old secret, for audit entries and the command line."""
    if not grace_s:
        return "the old secret is refused from now on"
    return f"the old secret works for {int(grace_s)} more seconds"


def rotated_doc(api_key: str, record: ClientKey, grace_s: float) -> dict[str, Any]:
    """The answer to a rotation: the new secret (its only plaintext) and the record."""
    return {"key": api_key, "record": public_record(record), "grace_seconds": int(grace_s)}
