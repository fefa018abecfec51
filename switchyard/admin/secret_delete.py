"""Deleting a stored provider key through the API: refused while a provider uses it unless
forced (``?force=true``), and audited with what a forced delete left without a key."""

from __future__ import annotations

from switchyard.bus.control_admin import ControlClient
from switchyard.errors import ApiError, Conflict
from switchyard.schemas.routing import SecretUsers


async def users_of(control: ControlClient, name: str, *, forced: bool) -> SecretUsers | None:
    """Who uses secret ``name``. A forced delete goes ahead when the route table cannot be
    read (None: its audit entry says so); any other needs it (the error is raised)."""
    try:
        return (await control.table()).table.secret_users(name)
    except ApiError:
        if forced:
            return None
        raise


def refuse_in_use(name: str, users: SecretUsers | None) -> None:
    """Raises:
    Conflict: ``secret_in_use``, naming what deleting it would break.
    """
    if users is None or not users.providers:
        return
    stranded = f"; routes left with nothing to answer: {', '.join(users.stranded)}"
    notes = ", ".join(users.fallback_notes())
    fallen = f"; routes that lose all their own deployments: {notes}"
    raise Conflict(
        f"secret {name} is the key of provider(s) {', '.join(users.providers)}"
        + (stranded if users.stranded else "")
        + (fallen if users.fallback_only else "")
        + "; delete it with ?force=true if that is meant",
        code="secret_in_use",
    )
