"""The management side of the gateway process: mounted on its edge app, with its own connection.

The gateway serves ``/admin/v1`` (and the admin web app) from the CLIENT zone. Management reaches
the server zone only through the admin-only exports, on a second NATS connection made with the
``admin`` identity, never through the edge's own connection (see :mod:`switchyard.apps.gateway`).
"""

from __future__ import annotations

import contextlib

from fastapi import APIRouter
from nats.aio.client import Client as NATS

from switchyard.admin.api import AdminApi
from switchyard.admin.budget_watch import BudgetWatch
from switchyard.admin.context import AdminContext
from switchyard.admin.keys import KeyAdmin
from switchyard.admin.spend import SpendReader
from switchyard.admin.token import AdminAuth
from switchyard.bus import identities
from switchyard.bus.connect import connect
from switchyard.bus.control_admin import ControlClient
from switchyard.bus.secrets_admin import SecretsAdmin
from switchyard.client import LLMClient
from switchyard.config import Settings
from switchyard.runtime.metrics import Metrics


class AdminPlugin:
    """Mounts the management API on an edge app and owns its connection while it runs."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.context: AdminContext | None = None
        self._nc: NATS | None = None
        self._budgets: BudgetWatch | None = None

    def routers(self) -> list[APIRouter]:
        return [AdminApi(lambda: self.context).router()]

    async def start(self, llm: LLMClient, metrics: Metrics) -> None:
        settings = self._settings
        self._nc = await connect(
            settings.nats_servers,
            settings.certs_dir,
            identities.ADMIN.name,
            name="gateway-admin",
            connect_timeout=settings.nats.connect_timeout_s,
            reconnect_wait=settings.nats.reconnect_wait_s,
        )
        self.context = AdminContext(
            auth=AdminAuth(settings.admin_token_file),
            control=ControlClient(self._nc, actor="gateway-api"),
            secrets=SecretsAdmin(self._nc, actor="gateway-api"),
            llm=llm,
            keys=KeyAdmin(self._nc.jetstream(timeout=10)),
            spend=SpendReader(settings),
        )
        self._budgets = BudgetWatch(
            self._nc.jetstream(timeout=5),
            self.context.spend,
            metrics,
            settings.admin.budget_watch_s,
        )
        await self._budgets.start()

    async def stop(self) -> None:
        """Idempotent."""
        budgets, self._budgets = self._budgets, None
        if budgets is not None:
            await budgets.stop()
        context, self.context = self.context, None
        if context is not None:
            await context.spend.close()
        if self._nc is not None:
            nc, self._nc = self._nc, None
            with contextlib.suppress(Exception):  # already closed or the server is gone
                await nc.drain()
