"""Which deployments have no provider key stored: shown on the overview beside "ready".

A deployment whose provider names a secret the secrets service does not hold answers nothing
until someone stores it (its requests go to the route's other candidates, or fail with 503
``secret_unavailable``). The control service that builds the overview never sees secrets, so
the admin side adds this from two reads it caches for a few seconds: the live route table
(which secret each provider names) and the secrets list (names only, never values). When
either read fails, nothing is marked: unknown is not missing.
"""

from __future__ import annotations

import logging
import time

from switchyard.bus.control_admin import ControlClient
from switchyard.bus.secrets_admin import SecretsAdmin
from switchyard.errors import ApiError, BusError

log = logging.getLogger("switchyard.admin.key_presence")

FRESH_S = 5.0


class KeyPresence:
    def __init__(self, control: ControlClient, secrets: SecretsAdmin) -> None:
        self._control = control
        self._secrets = secrets
        self._read_at = -FRESH_S
        self._missing: frozenset[str] = frozenset()

    async def missing(self) -> frozenset[str]:
        """Ids of the deployments whose provider's secret is not stored (cached ``FRESH_S``)."""
        now = time.monotonic()
        if now - self._read_at < FRESH_S:
            return self._missing
        self._read_at = now
        try:
            state = await self._control.table()
            stored = {s.name for s in await self._secrets.list()}
        except (ApiError, BusError, TimeoutError) as exc:
            log.debug("cannot tell which provider keys are stored: %s", exc)
            self._missing = frozenset()
            return self._missing
        table = state.table
        self._missing = frozenset(
            dep_id
            for dep_id, (provider, _) in table.deployments().items()
            if provider.secret and provider.secret not in stored
        )
        return self._missing
