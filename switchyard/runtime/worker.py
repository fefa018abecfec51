"""What every server-zone process shares: connect as its identity, serve, stop in order.

:func:`serve_worker` is the whole life of a worker process: connect to NATS as the component's
identity, build the service, start it and its health endpoint, wait for SIGTERM, then stop in
order (stop taking work and finish what is in hand, stop the health endpoint, drain the
connection so replies in the buffer still go out).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from nats.aio.client import Client as NATS

from switchyard.bus.connect import connect
from switchyard.config import Settings
from switchyard.runtime.cert_expiry import export_certificate_expiry
from switchyard.runtime.health import HealthServer
from switchyard.runtime.metrics import Metrics, count_reconnects
from switchyard.runtime.reporting import Reporter
from switchyard.runtime.shutdown import disconnect
from switchyard.runtime.trace_export import count_trace_exports
from switchyard.runtime.tracing import OFF, Tracing, setup_tracing

log = logging.getLogger("switchyard.worker")


class Service(Protocol):
    """A worker's service: ready while serving; ``stop`` finishes work in hand."""

    @property
    def ready(self) -> bool: ...

    async def start(self) -> None: ...

    async def stop(self, grace: float) -> None: ...


S = TypeVar("S", bound=Service)


@dataclass(frozen=True, slots=True)
class Process:
    """What a service gets from the process it runs in: its name, metrics and tracer."""

    instance: str
    metrics: Metrics
    tracing: Tracing = OFF


async def serve_worker(
    settings: Settings,
    *,
    identity: str,
    instance: str,
    health_port: int | None,
    stop: asyncio.Event,
    build: Callable[[NATS, Process], S],
    on_reconnect: Callable[[S], None] | None = None,
    component: str | None = None,
) -> None:
    """Run one worker until ``stop`` is set.

    Args:
        identity: the NATS identity (certificate) to connect as.
        build: makes the service from the connection and the process's metrics and tracer.
        on_reconnect: told when NATS reconnected (e.g. to re-issue pull requests).
        component: the name in metrics and heartbeats (default: the identity).
    """
    service: S | None = None

    async def reconnected() -> None:
        if service is not None and on_reconnect is not None:
            on_reconnect(service)

    nc = await connect(
        settings.nats_servers,
        settings.certs_dir,
        identity,
        name=instance,
        connect_timeout=settings.nats.connect_timeout_s,
        reconnect_wait=settings.nats.reconnect_wait_s,
        reconnected_cb=reconnected,
    )
    metrics = Metrics(component or identity)
    count_reconnects(metrics, nc)
    export_certificate_expiry(metrics, settings.certs_dir, identity)
    tracing = setup_tracing(settings.telemetry, component or identity, instance)
    count_trace_exports(metrics, tracing.exports)
    service = build(nc, Process(instance, metrics, tracing))
    running = service
    health = HealthServer(
        health_port, lambda: running.ready and nc.is_connected, host=settings.health.host
    )
    health.metrics = metrics.render
    # A model-proxy reports its calls in flight in its heartbeat (``call_ages``).
    calls = getattr(service, "call_ages", None)
    reporter = Reporter(nc, component or identity, instance, lambda: running.ready, calls=calls)
    try:
        await running.start()
        await health.start()
        reporter.start()
        log.info("%s %s serving", identity, instance)
        await stop.wait()
    finally:
        await reporter.stop()
        await running.stop(settings.stack.stop_timeout_s / 2)
        await health.stop()
        tracing.shutdown()
        await disconnect(nc)
