"""The secrets service: the only process holding Vault/OpenBao credentials.

A NATS micro service in CORE (queue group ``secrets``, so replicas share the load):

* ``secrets.v1.get.<name>``: the value, for the model-proxy identity only (NATS permissions);
* ``secrets.v1.admin.{list,info,put,rotate,delete}``: metadata only, for the admin identity
  (exported to CLIENT); every change publishes ``secrets.v1.changed.<name>`` (no value) so each
  model-proxy drops its cached copy, and is audit-logged with who made it, never the value.

Handlers hand work to tasks: Vault calls take milliseconds and micro endpoints run their
handlers one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import msgspec
from nats.aio.client import Client as NATS
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import Service

from switchyard.bus import headers as h
from switchyard.bus import identities, subjects
from switchyard.bus.envelope import Deadline, MalformedHeader
from switchyard.config import Settings
from switchyard.errors import (
    ApiError,
    DeadlineExceeded,
    InvalidRequest,
    NotFound,
    SecretsError,
    ServiceUnavailable,
    VaultUnavailable,
)
from switchyard.runtime import semconv as sc
from switchyard.runtime.audit import request_actor
from switchyard.runtime.endpoints import Endpoints, reply_ok
from switchyard.runtime.shutdown import STOP_STEP_S, within
from switchyard.runtime.worker import Process, serve_worker
from switchyard.schemas import secrets as wire
from switchyard.schemas.events import SecretChanged
from switchyard.schemas.secrets import SecretPayload
from switchyard.secrets.vault import SecretMeta, SecretMissing, Vault

log = logging.getLogger("switchyard.secrets")
audit = logging.getLogger("switchyard.secrets.audit")

T = TypeVar("T")
_OPS = frozenset({"get", "list", "info", "put", "rotate", "delete"})
# The results of switchyard_vault_requests_total created at 0 for every op.
_ZEROED_RESULTS = ("ok", "vault_unavailable", "secret_not_found")
_VALUE = msgspec.json.Encoder()
_NAME_RULE = (
    "`name` is not one the secrets service can store: a lowercase letter or digit, then "
    "lowercase letters, digits, _ and -, 63 characters at most, and no line break"
)


def _info(meta: SecretMeta) -> wire.SecretInfo:
    return wire.SecretInfo(
        name=meta.name,
        version=meta.version,
        provider=meta.provider,
        last4=meta.last4,
        created_at=meta.created_at,
        updated_at=meta.updated_at,
        updated_by=meta.updated_by,
    )


class SecretNotFound(NotFound):
    code = "secret_not_found"
    type = "invalid_request_error"


class SecretsService:
    def __init__(self, nc: NATS, vault: Vault, proc: Process) -> None:
        metrics = proc.metrics
        self.nc = nc
        self.vault = vault
        self._service: Service | None = None
        requests = metrics.counter(
            sc.VAULT_REQUESTS,
            "Secrets service requests by operation and result (ok, missing, vault_error...).",
            [sc.OP, sc.RESULT],
        )
        # At 0 from the start: a label set's first scraped value is Prometheus's start for it,
        # so failures that first appear during a Vault outage were missing from the
        # SwitchyardVaultUnavailable alert's increase(). Bounded: the ops times these results.
        for op in _OPS:
            for result in _ZEROED_RESULTS:
                requests.labels(op, result)

        def observe(subject: str, failure: ApiError | None) -> None:
            op = (
                "get"
                if subject.startswith(subjects.SECRETS_GET_PREFIX)
                else subject.rsplit(".", 1)[-1]
            )
            result = "ok" if failure is None else (failure.code or "error")
            requests.labels(op if op in _OPS else sc.OTHER, result).inc()

        self._endpoints = Endpoints("secrets", _translate, observe=observe)
        self.ready = False

    async def start(self) -> None:
        with contextlib.suppress(VaultUnavailable):
            await self.vault.run(lambda: None)  # log in early; an outage is reported per request
        svc = await add_service(
            self.nc,
            name="secrets",
            version="1.0.0",
            description="provider keys from Vault/OpenBao",
            queue_group=subjects.SECRETS_QUEUE,
        )
        await svc.add_endpoint(
            name="get",
            subject=f"{subjects.SECRETS_GET_PREFIX}.*",
            handler=self._endpoints.wrap(self._get),
        )
        admin: dict[str, Callable[[Request], Awaitable[None]]] = {
            "list": self._list,
            "info": self._show,
            "put": self._put,
            "rotate": self._rotate,
            "delete": self._delete,
        }
        for op, handler in admin.items():
            await svc.add_endpoint(
                name=f"admin-{op}",
                subject=subjects.secrets_admin(op),
                handler=self._endpoints.wrap(handler),
            )
        self._service = svc
        self.ready = True

    async def stop(self, grace: float) -> None:
        self.ready = False
        if self._service is not None:  # a server gone meanwhile must not hold the stop
            await within(STOP_STEP_S, self._service.stop(), "stopping the NATS service")
            self._service = None
        await self._endpoints.drain(grace)

    # ---- endpoints ----

    async def _get(self, req: Request) -> None:
        name = req.subject.rsplit(".", 1)[-1]
        stored = await self.vault.read(name)
        await reply_ok(req, _VALUE.encode(SecretPayload(stored.name, stored.version, stored.value)))

    async def _list(self, req: Request) -> None:
        metas = await self.vault.list()
        await reply_ok(req, wire.ENCODER.encode(wire.SecretList([_info(m) for m in metas])))

    async def _show(self, req: Request) -> None:
        ref = _decode(wire.REF_DECODER, req.data)
        await reply_ok(req, wire.ENCODER.encode(_info(await self.vault.metadata(ref.name))))

    async def _put(self, req: Request) -> None:
        await self._write(req, must_exist=False, action="put")

    async def _rotate(self, req: Request) -> None:
        await self._write(req, must_exist=True, action="rotate")

    async def _write(self, req: Request, *, must_exist: bool, action: str) -> None:
        _still_awaited(req)
        put = _decode(wire.PUT_DECODER, req.data)
        actor = request_actor(req)
        meta, written = await self.vault.write(
            put.name, put.value, provider=put.provider, actor=actor, must_exist=must_exist
        )
        if written == "stored":  # a new key: caches dropped, its deployments' cooldowns end
            await self._changed(put.name, meta.version, action, actor)
        else:  # the same key: nothing to drop or end (never the value in these words)
            audit.info(
                "secret %s: %s by %s kept version %d, the value it holds (%s)",
                put.name,
                action,
                actor,
                meta.version,
                "provider label changed" if written == "labelled" else "unchanged",
            )
        fields = msgspec.structs.asdict(_info(meta))
        answer = wire.SecretWritten(**fields, changed=written != "unchanged")
        await reply_ok(req, wire.ENCODER.encode(answer))

    async def _delete(self, req: Request) -> None:
        _still_awaited(req)
        ref = _decode(wire.REF_DECODER, req.data)
        actor = request_actor(req)
        await self.vault.delete(ref.name)
        await self._changed(ref.name, 0, "delete", actor)
        await reply_ok(req, wire.ENCODER.encode({"name": ref.name, "deleted": True}))

    async def _changed(self, name: str, version: int, action: str, actor: str) -> None:
        event = SecretChanged(name=name, version=version, action=action, ts=time.time())
        await self.nc.publish(subjects.secrets_changed(name), _VALUE.encode(event))
        audit.info("secret %s: %s to version %d by %s", name, action, version, actor)


def _decode(decoder: msgspec.json.Decoder[T], data: bytes) -> T:
    try:
        return decoder.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError) as exc:
        # msgspec messages name fields and types, never the offending value.
        if str(exc).endswith("- at `$.name`"):  # its words quote the pattern: say the rule
            raise InvalidRequest(f"invalid secrets request: {_NAME_RULE}", param="name") from None
        raise InvalidRequest(f"invalid secrets request: {exc}") from None


def _translate(exc: Exception) -> ApiError | None:
    """Secrets failures as the errors callers see (never with a value in them)."""
    if isinstance(exc, SecretMissing):
        return SecretNotFound(f"no secret named `{exc.name}`", param="name")
    if isinstance(exc, VaultUnavailable):
        return ServiceUnavailable(str(exc), code="vault_unavailable")
    if isinstance(exc, SecretsError):
        return ServiceUnavailable(str(exc), code="secrets_error")
    return None


async def run(
    settings: Settings, *, instance: str, health_port: int | None, stop: asyncio.Event
) -> None:
    await serve_worker(
        settings,
        identity=identities.SECRETS.name,
        instance=instance,
        health_port=health_port,
        stop=stop,
        build=lambda nc, proc: SecretsService(nc, Vault(settings), proc),
    )


def _still_awaited(req: Request) -> None:
    """Refuse a change its caller no longer waits for (its ``Sy-Deadline`` passed while it
    queued here: a paused service). Applied anyway, a rotation the CLI had reported failed
    went live seconds later, and an operator may roll it back at the provider.

    Raises:
        DeadlineExceeded: the caller's deadline passed; nothing was changed.
    """
    value = (req.headers or {}).get(h.DEADLINE)
    if not value:
        return
    try:
        passed = Deadline.parse(value).passed()
    except MalformedHeader:
        return  # not ours to judge: the change is the caller's as sent
    if passed:
        raise DeadlineExceeded(
            "the request reached the secrets service after its caller stopped waiting; "
            "nothing was changed"
        )
