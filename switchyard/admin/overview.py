"""The platform overview as the admin side shows it: the control service's, plus spend today."""

from __future__ import annotations

import msgspec

from switchyard.admin.context import AdminContext
from switchyard.admin.spend import SpendUnavailable
from switchyard.schemas.monitor import DeploymentState, Overview


async def overview(c: AdminContext) -> Overview:
    """The control service's overview, plus spend today and the deployments without a stored
    provider key (which only the admin side reads)."""
    overview = await c.control.overview()
    marked = _mark_key_missing(overview.deployments, await c.key_presence.missing())
    if marked is not overview.deployments:
        overview = msgspec.structs.replace(overview, deployments=marked)
    try:  # every alias spent on today, deleted routes' too (as the Spend page counts)
        spend: float | None = await c.spend.today_usd()
    except SpendUnavailable:  # the rest of the overview is worth showing without it
        spend = None
    return msgspec.structs.replace(overview, spend_today_usd=spend)


async def deployments(c: AdminContext) -> list[DeploymentState]:
    """The control service's deployments, marked like the overview's (``key_missing``), so
    ``GET /deployments`` and ``GET /overview`` never disagree about the same deployment."""
    return _mark_key_missing(await c.control.deployments(), await c.key_presence.missing())


def _mark_key_missing(
    found: list[DeploymentState], missing: frozenset[str]
) -> list[DeploymentState]:
    """``found`` with ``key_missing`` set on the ids in ``missing`` (``found`` itself if none)."""
    if not missing:
        return found
    return [msgspec.structs.replace(d, key_missing=True) if d.id in missing else d for d in found]
