"""Deployment health shared through the ``sy_health`` KV bucket: cooldown entries.

Heads write them, every head and the control service follow them; the admin API shows them.
"""

from __future__ import annotations

import msgspec

PREFIX = "cd."  # key of a deployment's cooldown: ``cd.<deployment id>``
MAX_COOLDOWN_S = 300.0


class Cooldown(msgspec.Struct, frozen=True, kw_only=True):
    deployment: str
    until: float  # unix seconds
    status: int = 0
    reason: str = ""
    since: float = 0.0
    # The provider asked for this wait (a ``Retry-After`` it sent; a 429 or 529 counts as
    # asked whatever this says): the cooldown then refuses what only this deployment could
    # serve, where one Switchyard chose after an error (a 5xx, a timeout) only steers requests
    # elsewhere (the head's "last resort", workers/head/decide.py).
    asked: bool = False
