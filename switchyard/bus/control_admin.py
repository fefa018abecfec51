"""Client of the control API (admin identity): read and change the route table, see deployments.

Edits are read-modify-write with compare-and-set: :meth:`ControlClient.edit` re-reads and
re-applies the change when another admin won the race, so concurrent edits never overwrite
each other silently. Edits made through one client (and the clients :meth:`acting_for` makes
from it) take turns, so one process never races itself; races between processes back off
for a random, growing pause before trying again.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import msgspec
from nats.aio.client import Client as NATS

from switchyard.bus import subjects
from switchyard.bus.admin_call import call
from switchyard.errors import Conflict
from switchyard.schemas import control as wire
from switchyard.schemas.monitor import HISTORY, OVERVIEW, DeploymentState, History, Overview
from switchyard.schemas.routing import RouteTable

EDIT_ATTEMPTS = 10
EDIT_PAUSE_S = 0.02  # the longest pause after the first lost race; doubles after each
EDIT_PAUSE_MAX_S = 0.5


class ControlClient:
    def __init__(
        self,
        nc: NATS,
        *,
        actor: str = "",
        timeout: float = 15.0,
        edits: asyncio.Lock | None = None,
    ) -> None:
        self._nc = nc
        self._actor = actor
        self._timeout = timeout
        self._edits = edits or asyncio.Lock()

    def acting_for(self, actor: str) -> ControlClient:
        """The same client, naming ``actor`` to the service (its audit log, Vault metadata)."""
        return ControlClient(self._nc, actor=actor, timeout=self._timeout, edits=self._edits)

    async def _call(self, op: str, body: bytes) -> bytes:
        return await call(
            self._nc,
            subjects.control_admin(op),
            body,
            service="control",
            actor=self._actor,
            timeout=self._timeout,
        )

    async def table(self) -> wire.TableState:
        return wire.TABLE_STATE.decode(await self._call("routes.get", b"{}"))

    async def put_table(self, table: RouteTable, expected_revision: int | None) -> wire.TableState:
        return (await self.put_table_said(table, expected_revision))[0]

    async def put_table_said(
        self, table: RouteTable, expected_revision: int | None
    ) -> tuple[wire.TableState, str | None]:
        """:meth:`put_table`, also returning the audit words of what the write changed
        against the table it replaced (None: nothing written, or a control service older
        than the field: then the caller says it from the table it read)."""
        body = wire.ENCODER.encode(wire.PutTable(table=table, expected_revision=expected_revision))
        state = wire.TABLE_STATE.decode(await self._call("routes.put", body))
        return msgspec.structs.replace(state, change_words=None), state.change_words

    async def edit(self, change: Callable[[RouteTable], RouteTable]) -> wire.TableState:
        """Apply ``change`` to the current table with compare-and-set, retrying lost races.

        Raises:
            ApiError: from ``change`` (e.g. 404, 409) or from validation (400).
            Conflict: still losing races after several attempts.
        """
        async with self._edits:
            for attempt in range(EDIT_ATTEMPTS):
                if attempt:
                    # Random, so racing processes spread out instead of colliding again.
                    ceiling = min(EDIT_PAUSE_MAX_S, EDIT_PAUSE_S * 2 ** (attempt - 1))
                    await asyncio.sleep(random.uniform(0, ceiling))  # noqa: S311 (not a secret)
                state = await self.table()
                table = change(state.table)  # its own refusals (404, 409) are final
                try:
                    return await self.put_table(table, state.revision)
                except Conflict:
                    continue
        raise Conflict("the route table is changing too fast; try again")

    async def deployments(self) -> list[DeploymentState]:
        """Every deployment with its queue, recent traffic and cooldown."""
        return wire.DEPLOYMENTS.decode(await self._call("deployments", b"{}")).deployments

    async def overview(self) -> Overview:
        """Deployments, processes and totals, as the control service collected them."""
        return OVERVIEW.decode(await self._call("overview", b"{}"))

    async def history(self, seconds: int = 900) -> History:
        """Per-second queue and traffic points of every deployment (the UI's charts)."""
        body = wire.ENCODER.encode(wire.HistoryRequest(seconds=seconds))
        return HISTORY.decode(await self._call("history", body))

    async def clear_cooldown(self, deployment: str) -> None:
        await self._call(
            "cooldowns.clear", wire.ENCODER.encode(wire.DeploymentRef(deployment=deployment))
        )
