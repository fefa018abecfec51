"""Priority classes, fair-share tenants and the saturation record heads follow.

A request runs in one of three classes, highest first: ``interactive``, ``default``, ``batch``.
When a deployment is saturated, held requests start in strict class order, and within a class
by weighted deficit round robin across tenants (see ``docs/routing.md``, "How fair queueing
works"). A tenant is the key's team, or the key itself when it has no team.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

Priority = Literal["interactive", "default", "batch"]
PRIORITIES: tuple[Priority, ...] = ("interactive", "default", "batch")  # highest first
RANK: dict[str, int] = {p: i for i, p in enumerate(PRIORITIES)}
DEFAULT: Priority = "default"
Weight = Annotated[float, msgspec.Meta(gt=0, le=1000)]

# OpenAI's ``service_tier`` (chat, responses) mapped onto the classes: ``priority`` asks for
# faster processing, ``flex`` accepts slower, cheaper processing; ``auto`` and ``default``
# leave the choice to the platform.
SERVICE_TIERS: dict[str, Priority] = {
    "priority": "interactive",
    "flex": "batch",
    "auto": "default",
    "default": "default",
    "scale": "default",
}


def of_service_tier(tier: str | None) -> Priority | None:
    """The class a body's ``service_tier`` asks for (None when absent or unknown)."""
    return SERVICE_TIERS.get(tier) if tier else None


def capped(wanted: str, ceiling: str) -> Priority:
    """``wanted``, lowered to ``ceiling`` when it asks for more."""
    rank = max(RANK.get(wanted, RANK[DEFAULT]), RANK.get(ceiling, 0))
    return PRIORITIES[rank]


def fair_tenant(team: str, key_id: str) -> str:
    """Whose share a request counts against: the team, else the key itself."""
    return team or key_id


class SchedState(msgspec.Struct, frozen=True, kw_only=True):
    """``sy_sched`` / ``dep.<deployment>``: what heads need to decide hold-or-dispatch.

    Written by the feeder (control service); heads follow it live.

    Attributes:
        held: requests of this deployment are waiting in HOLD: every new one goes there too,
            so none jumps the fair order.
        heads: head processes alive; each may send ``ceil(concurrency / heads)`` requests
            straight to dispatch per ``window_s`` before parking the rest in HOLD.
        window_s: the deployment's recent mean time per request (Little's law: what one
            head sent within that window is about what it still has in flight).
        at: unix seconds of the write.
    """

    held: bool = False
    heads: int = 1
    window_s: float = 1.0
    at: float = 0.0


SCHED_ENCODER = msgspec.json.Encoder()
SCHED_DECODER = msgspec.json.Decoder(SchedState)

# ``sy_sched`` / ``feeder.leader``: the control replica that runs the feeder, and until when
# (renewed every third of its length). Heads read it as the feeder's heartbeat.
FEEDER_LEASE_KEY = "feeder.leader"


class FeederLease(msgspec.Struct, frozen=True):
    owner: str
    until: float  # unix seconds


LEASE_ENCODER = msgspec.json.Encoder()
LEASE_DECODER = msgspec.json.Decoder(FeederLease)
