"""A Redis/Valkey client for one role (its ACL user), built to fail fast, never to hang."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from switchyard.config import Settings
from switchyard.limits.credentials import read_password

# A worker no client waits on (accounting) gives a connection this long, name lookup
# included: a container's DNS has been seen taking 10 s (two 5 s resolver timeouts) on a
# loaded machine, and a 0.5 s bound then fails every attempt for as long as that lasts.
PATIENT_CONNECT_S = 15.0
PATIENT_CALL_S = 5.0


def connect_redis(settings: Settings, role: str, *, patient: bool = False) -> Redis:
    """A pooled client logging in as ``role`` (``ingress``, ``accounting``, ``admin``...).

    One immediate retry covers a pooled connection that went stale when the server restarted;
    beyond that, calls fail within the configured timeout (``patient``: within
    :data:`PATIENT_CONNECT_S` to connect and :data:`PATIENT_CALL_S` per call, if longer).
    """
    timeout = settings.redis.timeout_s
    call = max(timeout, PATIENT_CALL_S) if patient else timeout
    connect = max(timeout, PATIENT_CONNECT_S) if patient else timeout
    return Redis.from_url(
        settings.redis_url,
        username=role,
        password=read_password(settings.redis_password_dir, role) or None,
        socket_timeout=call,
        socket_connect_timeout=connect,
        retry=Retry(NoBackoff(), 1),
        health_check_interval=30,
        client_name=f"switchyard-{role}",
    )
