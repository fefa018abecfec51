"""``switchyard serve gateway``: the edge plus the management API (``/admin/v1``) and admin UI."""

from __future__ import annotations

import asyncio

from switchyard.admin.plugin import AdminPlugin
from switchyard.config import Settings
from switchyard.control.litellm_import import convert_text
from switchyard.ingress.server import run_edge


async def run(
    settings: Settings, *, instance: str, health_port: int | None, stop: asyncio.Event
) -> None:
    admin = AdminPlugin(settings, convert_litellm=convert_text, instance=instance)
    await run_edge(settings, "gateway", stop, plugins=[admin], instance=instance)
