"""``switchyard serve tail``: the thin OpenAI-compatible edge."""

from __future__ import annotations

import asyncio

from switchyard.config import Settings
from switchyard.ingress.server import run_edge


async def run(
    settings: Settings, *, instance: str, health_port: int | None, stop: asyncio.Event
) -> None:
    await run_edge(settings, "tail", stop, instance=instance)
