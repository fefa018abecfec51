"""``switchyard serve <component>``: run one component until SIGTERM/SIGINT.

Components are imported lazily by name, so a tail process never imports litellm and a worker
never imports FastAPI. Each exposes ``async def run(settings, *, instance, health_port, stop)``
and returns when ``stop`` is set and its in-flight work is finished.
"""

from __future__ import annotations

import asyncio
import importlib
import signal
from collections.abc import Awaitable, Callable
from typing import Protocol

from switchyard.config import Settings
from switchyard.errors import InputError
from switchyard.runtime.reporting import instance_name
from switchyard.runtime.shutdown import ExitDeadline, cancel_remaining

COMPONENTS: dict[str, str] = {
    "tail": "switchyard.ingress.tail",
    "gateway": "switchyard.apps.gateway",
    "head": "switchyard.workers.head.service",
    "modelproxy": "switchyard.workers.modelproxy.service",
    "secrets": "switchyard.secrets.service",
    "accounting": "switchyard.workers.accounting.service",
    "control": "switchyard.control.service",
    "batch": "switchyard.workers.batch.service",
}


class Runner(Protocol):
    def __call__(
        self, settings: Settings, *, instance: str, health_port: int | None, stop: asyncio.Event
    ) -> Awaitable[None]: ...


def _runner(component: str) -> Runner:
    module_name = COMPONENTS.get(component)
    if module_name is None:
        raise InputError(
            "component", f"unknown component `{component}`", f"use one of: {', '.join(COMPONENTS)}"
        )
    run: Runner = importlib.import_module(module_name).run
    return run


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop  # noqa: PLC0415  (optional speed-up; shipped with uvicorn[standard])
    except ImportError:
        return asyncio.new_event_loop
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def serve(
    component: str, settings: Settings, *, instance: str | None, health_port: int | None
) -> int:
    """Run ``component`` until SIGTERM/SIGINT.

    Args:
        instance: the name in heartbeats, logs, metrics and traces; None gives each replica a
            name of its own (:func:`~switchyard.runtime.reporting.instance_name`), so replicas
            a compose file or a Deployment starts alike never report as one.
    """
    run = _runner(component)
    name = instance or instance_name(component)

    # The supervisor's SIGKILL comes at stop_timeout_s; this covers a child whose supervisor
    # is gone (runtime.shutdown).
    deadline = ExitDeadline(settings.stack.stop_timeout_s + 1.0)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def asked_to_stop() -> None:
            deadline.arm()
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, asked_to_stop)
        try:
            await run(settings, instance=name, health_port=health_port, stop=stop)
        finally:
            await cancel_remaining()  # what the stop left running (a reconnect loop...)

    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(main())
    return 0
