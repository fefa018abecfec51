"""Client of the secrets admin API, for the CLI and the admin app (admin identity, CLIENT zone).

Values go in (put, rotate) and never come back: every answer is metadata.
"""

from __future__ import annotations

from nats.aio.client import Client as NATS

from switchyard.bus import subjects
from switchyard.bus.admin_call import call
from switchyard.schemas import secrets as wire


class SecretsAdmin:
    def __init__(self, nc: NATS, *, actor: str = "", timeout: float = 10.0) -> None:
        self._nc = nc
        self._actor = actor
        self._timeout = timeout

    def acting_for(self, actor: str) -> SecretsAdmin:
        """The same client, naming ``actor`` to the service (its audit log, Vault metadata)."""
        return SecretsAdmin(self._nc, actor=actor, timeout=self._timeout)

    async def _call(self, op: str, body: bytes) -> bytes:
        return await call(
            self._nc,
            subjects.secrets_admin(op),
            body,
            service="secrets",
            actor=self._actor,
            timeout=self._timeout,
        )

    async def list(self) -> list[wire.SecretInfo]:
        return wire.LIST_DECODER.decode(await self._call("list", b"{}")).secrets

    async def info(self, name: str) -> wire.SecretInfo:
        body = wire.ENCODER.encode(wire.SecretRef(name=name))
        return wire.INFO_DECODER.decode(await self._call("info", body))

    async def put(self, name: str, value: str, provider: str = "") -> wire.SecretWritten:
        """The stored secret's metadata; ``changed`` false when it held that value already
        (no new version)."""
        # A plain mapping: the service validates (one place, answering 400 naming the field).
        body = wire.ENCODER.encode({"name": name, "value": value, "provider": provider})
        return wire.WRITTEN_DECODER.decode(await self._call("put", body))

    async def rotate(self, name: str, value: str) -> wire.SecretWritten:
        # As put: a mapping the service validates (building a PutSecret here would raise its
        # checks as a bare ValueError, a 500 instead of the 400 naming the field).
        body = wire.ENCODER.encode({"name": name, "value": value})
        return wire.WRITTEN_DECODER.decode(await self._call("rotate", body))

    async def delete(self, name: str) -> None:
        await self._call("delete", wire.ENCODER.encode(wire.SecretRef(name=name)))
