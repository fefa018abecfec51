"""Commands that talk to a running local stack: what to say when none answers."""

from __future__ import annotations

from switchyard.config import Settings
from switchyard.errors import BusUnreachable


def unreachable_message(settings: Settings, exc: BusUnreachable) -> str:
    """One line: what was tried, and what to do."""
    where = ", ".join(exc.servers)
    if settings.nats.servers:
        return (
            f"no NATS server answering at {where} ({exc.reason}): check that it runs and that "
            "nats.servers in your config names it"
        )
    return (
        f"no Switchyard stack answering at {where} ({exc.reason}; home {settings.home_dir}): "
        "start it with `switchyard up`, or pass --config/--home"
    )
