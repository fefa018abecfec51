"""Who made an admin change, as the audit logs of the admin services (secrets, control) name it."""

from __future__ import annotations

from nats.micro.request import Request

from switchyard.bus.admin_call import ACTOR
from switchyard.bus.request_info import caller_identity


def request_actor(req: Request) -> str:
    """``"<person> via <identity>"``: the person the caller named (``Sy-Actor``, unverified) and
    the identity nats-server vouches for; the identity alone when no person was named."""
    who = caller_identity(dict(req.headers or {})) or "unknown"
    human = (req.headers or {}).get(ACTOR, "")
    return f"{human} via {who}" if human else who
