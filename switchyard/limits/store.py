"""A Redis/Valkey client for one role (its ACL user), built to fail fast, never to hang."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from switchyard.config import Settings
from switchyard.limits.credentials import read_password


def connect_redis(settings: Settings, role: str) -> Redis:
    """A pooled client logging in as ``role`` (``ingress``, ``accounting``, ``admin``...).

    One immediate retry covers a pooled connection that went stale when the server restarted;
    beyond that, calls fail within the configured timeout.
    """
    timeout = settings.redis.timeout_s
    return Redis.from_url(
        settings.redis_url,
        username=role,
        password=read_password(settings.redis_password_dir, role) or None,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 1),
        health_check_interval=30,
        client_name=f"switchyard-{role}",
    )
