"""The platform overview as the admin side shows it: the control service's, plus spend today."""

from __future__ import annotations

import msgspec
from redis.exceptions import RedisError

from switchyard.admin.context import AdminContext
from switchyard.schemas.monitor import Overview


async def overview(c: AdminContext) -> Overview:
    """The control service's overview, plus spend today and the deployments without a stored
    provider key (which only the admin side reads)."""
    overview = await c.control.overview()
    missing = await c.key_presence.missing()
    if missing:
        marked = [
            msgspec.structs.replace(d, key_missing=True) if d.id in missing else d
            for d in overview.deployments
        ]
        overview = msgspec.structs.replace(overview, deployments=marked)
    aliases = sorted({a for d in overview.deployments for a in d.aliases})
    try:
        spend: float | None = await c.spend.today_usd(aliases)
    except (RedisError, OSError):
        spend = None
    return msgspec.structs.replace(overview, spend_today_usd=spend)
