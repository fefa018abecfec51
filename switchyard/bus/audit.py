"""Append admin actions to the ``AUDIT`` stream (admin identity; API, web UI and CLI alike).

An entry is written after the change it describes succeeded (or for a refused sign-in). A
failure to write it is logged and does not undo the change: the services' own audit logs
(secrets, control) still record who changed what.
"""

from __future__ import annotations

import logging
import time

from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError

from switchyard.bus import subjects
from switchyard.schemas.audit import ENCODER, AuditEntry, Via

log = logging.getLogger("switchyard.audit")


class AuditWriter:
    """Records entries for one door (``via``); ``actor`` is given per entry."""

    def __init__(self, nc: NATS, via: Via, *, timeout: float = 5.0) -> None:
        self._js = nc.jetstream(timeout=timeout)
        self._via: Via = via

    async def record(
        self,
        actor: str,
        action: str,
        target: str = "",
        detail: str = "",
        *,
        ok: bool = True,
        source: str = "",
        via: Via | None = None,
    ) -> bool:
        """Publish one entry; False (and an error logged) when it could not be stored."""
        entry = AuditEntry(
            ts=time.time(),
            actor=actor,
            via=via or self._via,
            action=action,
            target=target,
            detail=detail,
            ok=ok,
            source=source,
        )
        try:
            await self._js.publish(
                subjects.audit(action), ENCODER.encode(entry), stream=subjects.AUDIT_STREAM
            )
        except (NatsError, TimeoutError) as exc:
            log.error("audit entry %s %s by %s not recorded: %s", action, target, actor, exc)
            return False
        return True
