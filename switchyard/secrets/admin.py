"""Client of the secrets admin API, for the CLI and the admin app (admin identity, CLIENT zone).

Values go in (put, rotate) and never come back: every answer is metadata.
"""

from __future__ import annotations

import nats.errors
from nats.aio.client import Client as NATS

from switchyard.bus import headers as h
from switchyard.bus import subjects
from switchyard.client import Reply, error_from_reply
from switchyard.errors import ServiceUnavailable
from switchyard.schemas import secrets as wire
from switchyard.secrets.service import ACTOR


class SecretsAdmin:
    def __init__(self, nc: NATS, *, actor: str = "", timeout: float = 10.0) -> None:
        self._nc = nc
        self._actor = actor
        self._timeout = timeout

    async def _call(self, op: str, body: bytes) -> bytes:
        headers = {ACTOR: self._actor} if self._actor else None
        try:
            msg = await self._nc.request(
                subjects.secrets_admin(op), body, timeout=self._timeout, headers=headers
            )
        except nats.errors.NoRespondersError:
            raise ServiceUnavailable(
                "the secrets service is not running (is the stack up?)", code="secrets_down"
            ) from None
        except nats.errors.TimeoutError:
            raise ServiceUnavailable(
                "the secrets service did not answer", code="secrets_down"
            ) from None
        status = h.int_header(msg.headers, h.STATUS, 200)
        if status != 200:
            raise error_from_reply(Reply(h.KIND_ERROR, msg.data, dict(msg.headers or {})))
        return msg.data

    async def list(self) -> list[wire.SecretInfo]:
        return wire.LIST_DECODER.decode(await self._call("list", b"{}")).secrets

    async def info(self, name: str) -> wire.SecretInfo:
        return wire.INFO_DECODER.decode(
            await self._call("info", wire.ENCODER.encode(wire.SecretRef(name=name)))
        )

    async def put(self, name: str, value: str, provider: str = "") -> wire.SecretInfo:
        body = wire.ENCODER.encode(wire.PutSecret(name=name, value=value, provider=provider))
        return wire.INFO_DECODER.decode(await self._call("put", body))

    async def rotate(self, name: str, value: str) -> wire.SecretInfo:
        body = wire.ENCODER.encode(wire.PutSecret(name=name, value=value))
        return wire.INFO_DECODER.decode(await self._call("rotate", body))

    async def delete(self, name: str) -> None:
        await self._call("delete", wire.ENCODER.encode(wire.SecretRef(name=name)))
