"""The management side of the gateway process: mounted on its edge app, with its own connection.

The gateway serves ``/admin/v1`` and the admin web app (``/ui/``) from the CLIENT zone.
Management reaches the server zone only through the admin-only exports, on a second NATS
connection made with the ``admin`` identity, never through the edge's own connection (see
:mod:`switchyard.apps.gateway`). It also keeps the key index, the batch records, the audit
log and the web app's sign-in sessions in memory, following their buckets and stream.

One write goes through the edge's connection: an admin's cancel of a batch, which rewrites
the batch's record (a CLIENT bucket the edge writes for its tenants' cancels). The admin
identity only reads that bucket: a right to publish a record's subject is also a right to
delete or purge it, or to roll the whole bucket up, and every CLI operator holds the admin
identity. The API's code is what limits the edge's write to a cancel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

from fastapi import APIRouter
from nats.aio.client import Client as NATS

from switchyard.admin.api import AdminApi
from switchyard.admin.audit import AuditLog
from switchyard.admin.budget_watch import BudgetWatch
from switchyard.admin.context import AdminContext, LiteLLMConverter
from switchyard.admin.file_table import FileTable
from switchyard.admin.key_idempotency import IdempotentCreates
from switchyard.admin.key_index import KeyIndex
from switchyard.admin.key_presence import KeyPresence
from switchyard.admin.keys import KeyAdmin
from switchyard.admin.spend import SpendReader
from switchyard.admin.token import AdminAuth
from switchyard.admin.token_audit import STOP_WRITE_S, RefusalAudit, RefusalCounts
from switchyard.admin.ui import AdminUi
from switchyard.admin.ui.session_share import SessionShare
from switchyard.admin.ui.signin_guard import counted_as
from switchyard.bus import identities
from switchyard.bus.audit import AuditWriter
from switchyard.bus.connect import connect
from switchyard.bus.control_admin import ControlClient
from switchyard.bus.secrets_admin import SecretsAdmin
from switchyard.client import LLMClient
from switchyard.config import Settings
from switchyard.runtime.batchrecords import BatchRecords
from switchyard.runtime.batchstore import BatchStore
from switchyard.runtime.client_address import TrustedProxies
from switchyard.runtime.metrics import Metrics
from switchyard.runtime.shutdown import disconnect

log = logging.getLogger("switchyard.admin")


class AdminPlugin:
    """Mounts the management API and web app on an edge app and owns their connection."""

    def __init__(
        self,
        settings: Settings,
        convert_litellm: LiteLLMConverter | None = None,
        *,
        instance: str = "",
    ) -> None:
        """``instance``: this gateway replica's name (its sessions' list names it)."""
        self._settings = settings
        self._instance = instance
        self._convert = convert_litellm
        self.context: AdminContext | None = None
        self._nc: NATS | None = None
        # The token file `switchyard up` writes in its home (the sign-in page names it); one
        # set in admin.token_file is the deployment's (a container's path), left unsaid.
        made = None if settings.admin.token_file else settings.admin_token_file
        self._ui = AdminUi(lambda: self.context, token_file=made)
        # Read here: a token too short to keep stops the gateway before it starts (ConfigError).
        # Wrong tokens on /admin/v1 count with the sign-in's, per address; the read-only
        # token's file is read by the same rules (and refused when it is the admin token).
        self._auth = AdminAuth(
            settings.admin_token_file,
            guard=self._ui.guard,
            read_only=settings.admin_readonly_token_file,
        )
        # A web session is good only with the token it signed in with (a replaced one ends it).
        self._ui.sessions.use_tokens(self._auth.token_digest)
        self._budgets: BudgetWatch | None = None
        self._shared: SessionShare | None = None

    def routers(self) -> list[APIRouter]:
        return [AdminApi(lambda: self.context).router(), *self._ui.routers()]

    async def start(
        self, llm: LLMClient, metrics: Metrics, *, batches: BatchStore | None = None
    ) -> None:
        """``batches``: the edge's Batch API store (its own connection), which writes an
        admin's cancel (None: that cancel is a 503)."""
        settings = self._settings
        self._nc = nc = await connect(
            settings.nats_servers,
            settings.certs_dir,
            identities.ADMIN.name,
            name="gateway-admin",
            connect_timeout=settings.nats.connect_timeout_s,
            reconnect_wait=settings.nats.reconnect_wait_s,
        )
        js = nc.jetstream(timeout=10)
        index = KeyIndex(js)
        audit_log = AuditLog(nc)
        records = BatchRecords(js)
        # The web app's sessions, shared with every other gateway replica through their bucket.
        shared = SessionShare(js, self._ui.sessions, self._ui.guard)
        try:
            await index.start()
            await audit_log.start()
            await records.start()
            await shared.start()
        except BaseException:  # a follower that did not start: stop the ones that did
            for follower in (shared, records, audit_log, index):
                with contextlib.suppress(Exception):
                    await follower.stop()
            raise
        control = ControlClient(nc, actor="gateway-api")
        secrets = SecretsAdmin(nc, actor="gateway-api")
        audit = AuditWriter(nc, "api")
        self.context = AdminContext(
            auth=self._auth,
            control=control,
            secrets=secrets,
            key_presence=KeyPresence(control, secrets),
            llm=llm,
            keys=KeyAdmin(js, locator=index),
            spend=SpendReader(settings),
            index=index,
            audit=audit,
            audit_log=audit_log,
            files=FileTable(settings, Path(settings.source_file) if settings.source_file else None),
            convert_litellm=self._convert,
            batches=records,
            batch_store=batches,  # the edge's connection: the admin identity cannot write it
            proxies=TrustedProxies(
                settings.ingress.trusted_proxies, settings.ingress.forwarded_header
            ),
            refusals=RefusalAudit(audit, RefusalCounts(counted_as=counted_as)),
            sessions=self._ui.sessions,
            instance=self._instance,
            idempotency=IdempotentCreates(js, nc=nc),
        )
        self._shared = shared
        self._budgets = BudgetWatch(nc, self.context.spend, metrics, settings.admin.budget_watch_s)
        await self._budgets.start()

    async def stop(self) -> None:
        """Idempotent. The audit writes of the counts not said yet (wrong sign-ins, wrong API
        tokens) share one :data:`STOP_WRITE_S`: the stop must fit in the stack's stop timeout
        while NATS is away."""
        began = time.monotonic()
        try:
            async with asyncio.timeout(STOP_WRITE_S):
                await self._ui.stop()
        except TimeoutError:
            log.error("the wrong sign-ins counted were not written to the audit log at the stop")
        left = max(0.5, STOP_WRITE_S - (time.monotonic() - began))
        budgets, self._budgets = self._budgets, None
        if budgets is not None:
            await budgets.stop()
        shared, self._shared = self._shared, None
        if shared is not None:
            await shared.stop()
        context, self.context = self.context, None
        if context is not None:
            if context.refusals is not None:
                await context.refusals.stop(within=left)
            await context.audit_log.stop()
            await context.index.stop()
            if context.batches is not None:
                await context.batches.stop()
            await context.spend.close()
        if self._nc is not None:
            nc, self._nc = self._nc, None
            await disconnect(nc)
