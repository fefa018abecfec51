"""Every process reports in: a heartbeat on NATS every few seconds (alive, ready, CPU, memory,
its version and wire-protocol level).

The control service collects them into the process table that the admin UI and ``switchyard
top`` show, in every deployment shape (local stack, compose, Kubernetes) and without anyone
scraping each process. A heartbeat is one small core-NATS message; nothing is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import socket
import time
from collections.abc import Callable

from nats.aio.client import Client as NATS

from switchyard import __version__
from switchyard.bus import subjects
from switchyard.runtime.tasks import TaskSupervisor
from switchyard.schemas.monitor import ENCODER, CallAges, Heartbeat
from switchyard.schemas.protocol import PROTOCOL_LEVEL

log = logging.getLogger("switchyard.reporting")

HEARTBEAT_S = 5.0  # every process wakes for it: often enough for "healthy", rare enough to idle
# The pauses between a process's first beats (so it beats 0, 0.5, 1.5 and 3.5 s after it
# starts, then every HEARTBEAT_S). A whole stack starts at once, and control may
# subscribe a moment after the others sent their first beat: without these, the process table
# missed them (and control counted no heads) until the next beat, 5 s later.
STARTUP_BEATS_S = (0.5, 1.0, 2.0)
# An edge whose request counts moved since its last beat beats again this soon: the totals of
# `switchyard top` and the admin overview come from these counts, and at 5 s they trailed the
# per-deployment rows by seconds. An idle edge keeps the slow beat.
BUSY_BEAT_S = 1.0
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


# A process's name must fit one NATS subject token (``subjects.token`` keeps 64 characters):
# cut there, two long names differing only at the end (the pid) would report as one.
MAX_INSTANCE = 64
_NOT_IN_TOKEN = re.compile(r"[^A-Za-z0-9_-]+")


def instance_name(component: str, *, host: str | None = None, pid: int | None = None) -> str:
    """The name a process reports under when it was given none (``serve`` without
    ``--instance``): ``<component>-<host>-<pid>``, unique per replica with no deployment
    config. In a container the host name is the container id (compose) or the pod name
    (Kubernetes); the pid tells apart processes sharing a host. A host name that already
    starts with the component (a pod ``head-7d9f...`` of Deployment ``head``) is not prefixed
    again. Dots (``web1.example.com``) and anything else a subject token may not hold become
    ``-``; a name longer than :data:`MAX_INSTANCE` keeps its start and ends with a digest of
    the whole, so it stays unique.
    """
    host = _NOT_IN_TOKEN.sub("-", socket.gethostname() if host is None else host).strip("-")
    base = (
        host
        if host == component or host.startswith(f"{component}-")
        else (f"{component}-{host}" if host else component)
    )
    name = f"{base}-{os.getpid() if pid is None else pid}"
    if len(name) <= MAX_INSTANCE:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{name[: MAX_INSTANCE - len(digest) - 1]}-{digest}"


def rss_bytes() -> int:
    """Resident memory of this process (0 where /proc is not available)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


class Reporter:
    """Publishes this process's :class:`Heartbeat` every ``interval`` seconds while running.

    Args:
        ready: whether the process is serving right now.
        requests: for edges, answered requests by status class so far.
        calls: for model-proxies, their calls in flight per deployment (oldest, longest
            silent): ``switchyard top``'s age of the oldest call in flight. A process with
            calls in flight beats every :data:`BUSY_BEAT_S`, so the ages it shows are at most
            that old.
    """

    def __init__(
        self,
        nc: NATS,
        component: str,
        instance: str,
        ready: Callable[[], bool],
        *,
        requests: Callable[[], dict[str, int]] | None = None,
        calls: Callable[[], dict[str, CallAges]] | None = None,
        interval: float = HEARTBEAT_S,
    ) -> None:
        self._nc = nc
        self._subject = subjects.process_stats(component, instance)
        self._component = component
        self._instance = instance
        self._ready = ready
        self._requests = requests
        self._calls = calls
        self._interval = interval
        self._started = time.time()
        self._counted = -1  # requests answered at the last beat (-1: none sent yet)
        self._host = socket.gethostname()
        self._loops = TaskSupervisor(f"heartbeat-{component}")

    def heartbeat(self, *, stopping: bool = False) -> Heartbeat:
        return Heartbeat(
            stopping=stopping,
            component=self._component,
            instance=self._instance,
            host=self._host,
            pid=os.getpid(),
            ready=self._ready(),
            started_at=self._started,
            cpu_seconds=round(cpu_seconds(), 3),
            rss_bytes=rss_bytes(),
            requests=self._requests() if self._requests is not None else {},
            calls=self._calls() if self._calls is not None else {},
            # What the control service needs to see a rolling upgrade done out of order.
            version=__version__,
            protocol=PROTOCOL_LEVEL,
        )

    def start(self) -> None:
        self._loops.spawn(self._beat())

    async def stop(self) -> None:
        """Stop beating and say goodbye (the process stops on purpose: it leaves the process
        table now rather than turning silent, which is what a crash looks like). Idempotent."""
        beating = bool(self._loops)
        await self._loops.cancel_all()
        if beating and self._nc.is_connected:
            with contextlib.suppress(Exception):  # unsent, it ages out as before
                await self._nc.publish(self._subject, ENCODER.encode(self.heartbeat(stopping=True)))

    async def _beat(self) -> None:
        for pause in STARTUP_BEATS_S:
            await self._send()
            await asyncio.sleep(min(pause, self._interval))
        while True:
            busy = await self._send()
            await self._pause(busy)

    async def _pause(self, busy: bool) -> None:
        """Until the next beat: :data:`BUSY_BEAT_S` when busy, else the interval; a
        model-proxy's idle pause ends early when a call begins (its age is wanted at once)."""
        short = min(BUSY_BEAT_S, self._interval)
        if busy:
            await asyncio.sleep(short)
            return
        if self._calls is None:
            await asyncio.sleep(self._interval)
            return
        waited = 0.0
        while waited < self._interval and not self._calls():
            await asyncio.sleep(short)
            waited += short

    async def _send(self) -> bool:
        """Send a beat; True when the request counts moved since the previous one, or calls
        are in flight (their ages go stale at the slow beat)."""
        beat = self.heartbeat()
        counted = sum(beat.requests.values())
        busy = (self._counted >= 0 and counted != self._counted) or bool(beat.calls)
        self._counted = counted
        if self._nc.is_connected:
            with contextlib.suppress(Exception):  # a dropped heartbeat is just late
                await self._nc.publish(self._subject, ENCODER.encode(beat))
        return busy
