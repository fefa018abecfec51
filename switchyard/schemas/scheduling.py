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


INTERACTIVE: Priority = "interactive"
# The one tier a provider charges more for (OpenAI's "priority" processing).
PREMIUM_TIER = "priority"


def lowered_tier(body: bytes) -> bytes:
    """``body`` with ``service_tier: "priority"`` replaced by ``"default"``: for a request that
    runs below ``interactive``, which may not ask for faster processing, nor have its provider
    charge it (Switchyard bills the deployment's one price). A body that is not a JSON object
    is returned as it is (the probe already read it as one)."""
    doc = msgspec.json.decode(body)
    if not isinstance(doc, dict) or doc.get("service_tier") != PREMIUM_TIER:
        return body
    doc["service_tier"] = "default"
    return msgspec.json.encode(doc)


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


# A record's ``full`` mark: the highest class heads refuse to hold for the deployment (that
# class and every lower one), or none. The feeder sets it (``switchyard.control.holdbound``).
FullMark = Literal["", "default", "interactive"]
NOT_FULL: FullMark = ""


def refuses(full: str, priority: str) -> bool:
    """Whether a record's ``full`` mark refuses to hold a request of class ``priority``. A
    mark this version does not know refuses nothing (a newer feeder's, during an upgrade)."""
    rank = RANK.get(full) if full else None
    return rank is not None and RANK.get(priority, RANK[DEFAULT]) >= rank


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
        full: the deployment holds ``streams.hold_total_limit`` requests or more: heads
            answer 503 ``queue_full`` instead of holding a request of this class or a lower
            one ("" none, ``default``: default and batch, ``interactive``: every class).
            A plain string with a default, so a record without it (an older feeder) reads as
            not full, an older head ignores it, and an unknown value refuses nothing.
    """

    held: bool = False
    heads: int = 1
    window_s: float = 1.0
    at: float = 0.0
    full: str = NOT_FULL


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
