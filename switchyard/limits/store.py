"""A Redis/Valkey client for one role (its ACL user), built to fail fast, never to hang."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import Connection, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from switchyard.config import Settings
from switchyard.limits.addresses import HostAddresses, RedisUnavailable, Resolve, look_up
from switchyard.limits.credentials import read_password

# A worker no client waits on (accounting) gives a connection this long, name lookup
# included: a container's DNS has been seen taking 10 s (two 5 s resolver timeouts) on a
# loaded machine, and a 0.5 s bound then fails every attempt for as long as that lasts.
PATIENT_CONNECT_S = 15.0
PATIENT_CALL_S = 5.0


class _KeptAddressConnection(Connection):
    """redis-py's TCP connection, connecting to addresses looked up outside its bound.

    redis-py looks the host name up inside ``socket_connect_timeout``; a slow resolver then
    fails every connection (see :mod:`switchyard.limits.addresses`). This one waits for the
    pool's shared lookup at most that long, then connects to each address in turn.
    """

    def __init__(self, *, addresses: HostAddresses, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._addresses = addresses
        self._address = str(self.host)

    def _connection_arguments(self) -> Mapping[str, Any]:
        return {**super()._connection_arguments(), "host": self._address}

    async def _connect(self) -> None:
        try:
            async with asyncio.timeout(self.socket_connect_timeout):
                addresses = await self._addresses.get()
        except RedisUnavailable as exc:
            raise OSError(str(exc)) from None
        except TimeoutError:
            raise OSError(f"looking up {self._addresses.host!r} takes long") from None
        failure: OSError = OSError("no address to connect to")
        for address in addresses:
            self._address = address
            try:
                await super()._connect()  # type: ignore[no-untyped-call]
            except OSError as exc:  # TimeoutError included
                failure = exc
                continue
            return
        self._addresses.connection_failed()  # the server may have moved
        raise failure


def connect_redis(
    settings: Settings, role: str, *, patient: bool = False, resolve: Resolve = look_up
) -> Redis:
    """A pooled client logging in as ``role`` (``ingress``, ``accounting``, ``admin``...).

    One immediate retry covers a pooled connection that went stale when the server restarted;
    beyond that, calls fail within the configured timeout (``patient``: within
    :data:`PATIENT_CONNECT_S` to connect and :data:`PATIENT_CALL_S` per call, if longer).
    The host name is looked up outside the connection bound and its addresses kept
    (``resolve``: the system resolver unless a test gives its own).
    """
    timeout = settings.redis.timeout_s
    call = max(timeout, PATIENT_CALL_S) if patient else timeout
    connect = max(timeout, PATIENT_CONNECT_S) if patient else timeout
    parts = urlsplit(settings.redis_url)
    kept: dict[str, Any] = {}
    if parts.scheme == "redis" and parts.hostname:  # TCP (not TLS or a Unix socket)
        addresses = HostAddresses(parts.hostname, parts.port or 6379, resolve)
        kept = {"connection_class": _KeptAddressConnection, "addresses": addresses}
    return Redis.from_url(
        settings.redis_url,
        username=role,
        password=read_password(settings.redis_password_dir, role) or None,
        socket_timeout=call,
        socket_connect_timeout=connect,
        retry=Retry(NoBackoff(), 1),
        health_check_interval=30,
        client_name=f"switchyard-{role}",
        **kept,
    )
