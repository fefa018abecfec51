"""The platform overview as the admin side shows it: the control service's, plus spend today."""

from __future__ import annotations

import msgspec
from redis.exceptions import RedisError

from switchyard.admin.context import AdminContext
from switchyard.schemas.monitor import Overview


async def overview(c: AdminContext) -> Overview:
    """The control service's overview, plus spend today (which only the admin side reads)."""
    overview = await c.control.overview()
    aliases = sorted({a for d in overview.deployments for a in d.aliases})
    try:
        spend: float | None = await c.spend.today_usd(aliases)
    except (RedisError, OSError):
        spend = None
    return msgspec.structs.replace(overview, spend_today_usd=spend)
