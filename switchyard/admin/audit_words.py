"""What a change to a client key changed, in words for its audit entry (API, web app, CLI
alike). Never a secret nor a key's hash."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def update_words(fields: Mapping[str, Any]) -> str:
    """The fields an update set, by name; ``disabled`` as what it did: ``enabled`` (a revoked
    key let in again) or ``disabled``, never the same word for both."""
    said = []
    for field in sorted(fields):
        if field == "disabled":
            said.append("disabled" if fields[field] else "enabled")
        else:
            said.append(field)
    return ", ".join(said)
