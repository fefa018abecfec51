"""Run a set of processes as one stack: start in phases, wait for health, restart, stop cleanly.

Phases start in order (infrastructure, then components); processes inside a phase start together,
which is what keeps ``switchyard up`` fast. Each step may run a hook once its process is up
(provisioning NATS, initialising OpenBao). A component that exits is restarted with backoff; one
that keeps crashing marks the stack failed. Stopping goes in reverse phase order. The supervisor
records what runs in ``run/state.json`` for ``switchyard status`` and ``down``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from switchyard.errors import StackError
from switchyard.stack.process import HealthCheck, ManagedProcess, ProcessSpec

log = logging.getLogger("switchyard.stack")

Hook = Callable[[], Awaitable[None]]
MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0


@dataclass(slots=True)
class Step:
    """A process plus what to do around its start.

    Attributes:
        spec: the process.
        started: passes once the process accepts connections (default: ``spec.health``);
            the hook runs after it, and health is awaited after the hook.
        after_start: a one-off hook (provisioning, initialisation).
    """

    spec: ProcessSpec
    started: HealthCheck | None = None
    after_start: Hook | None = None


@dataclass(slots=True)
class StackState:
    """What ``run/state.json`` holds."""

    status: str = "starting"  # starting | healthy | stopping | stopped | failed
    error: str | None = None
    supervisor_pid: int = field(default_factory=os.getpid)
    started_at: float = field(default_factory=time.time)
    processes: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


def write_state(path: Path, state: StackState) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(
        json.dumps(
            {
                "status": state.status,
                "error": state.error,
                "supervisor_pid": state.supervisor_pid,
                "started_at": state.started_at,
                "processes": state.processes,
                "info": state.info,
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    os.replace(tmp, path)


def read_state(path: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data


class Supervisor:
    """Owns every child process of the stack."""

    def __init__(
        self,
        phases: list[list[Step]],
        *,
        log_dir: Path,
        state_file: Path,
        start_timeout: float,
        stop_timeout: float,
        info: dict[str, Any] | None = None,
    ) -> None:
        self.phases = phases
        self.log_dir = log_dir
        self.state_file = state_file
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.state = StackState(info=dict(info or {}))
        self.procs: list[list[ManagedProcess]] = []
        self._failed = asyncio.Event()
        self._stopped = False

    def _record(self) -> None:
        self.state.processes = [
            {
                "name": p.spec.name,
                "kind": p.spec.kind,
                "pid": p.pid,
                "endpoint": p.spec.endpoint,
                "health_url": p.spec.health_url,
                "log": str(p.log_path),
                "restarts": p.restarts,
            }
            for phase in self.procs
            for p in phase
        ]
        write_state(self.state_file, self.state)

    async def start(self) -> None:
        """Start every phase and wait until all are healthy.

        Raises:
            StackError: a process exited or stayed unhealthy past the start timeout, or a hook
                failed. Everything already started is stopped first.
        """
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._record()
        try:
            for steps in self.phases:
                phase = [ManagedProcess(step.spec, self.log_dir) for step in steps]
                self.procs.append(phase)
                for proc in phase:
                    await proc.start()
                self._record()
                await asyncio.gather(
                    *(self._bring_up(step, proc) for step, proc in zip(steps, phase, strict=True))
                )
        except BaseException as exc:
            self.state.status = "failed"
            self.state.error = str(exc)
            await self.stop(final_status="failed")
            raise
        self.state.status = "healthy"
        self._record()

    async def _bring_up(self, step: Step, proc: ManagedProcess) -> None:
        name = step.spec.name
        deadline = time.monotonic() + self.start_timeout
        if not await proc.wait_healthy(self.start_timeout, step.started):
            raise self._start_failure(proc, "did not start")
        if step.after_start is not None:
            await step.after_start()
        remaining = max(1.0, deadline - time.monotonic())
        if not await proc.wait_healthy(remaining):
            raise self._start_failure(proc, "did not become healthy")
        log.info("%s is up (pid %s)", name, proc.pid)

    def _start_failure(self, proc: ManagedProcess, what: str) -> StackError:
        code = proc.proc.returncode if proc.proc else None
        why = (
            f"exited with code {code}"
            if code is not None
            else f"{what} in {self.start_timeout:.0f}s"
        )
        tail = proc.tail_log()
        detail = f"\n--- last lines of {proc.log_path} ---\n{tail}" if tail else ""
        return StackError(proc.spec.name, f"{why}{detail}")

    async def watch(self, stop: asyncio.Event) -> None:
        """Restart processes that exit until ``stop`` is set; raise if one keeps crashing.

        Raises:
            StackError: a process exited more than MAX_RESTARTS times within RESTART_WINDOW_S,
                or exited and is not restartable.
        """
        history: dict[str, list[float]] = {}
        while not stop.is_set():
            for phase in self.procs:
                for proc in phase:
                    if proc.running or self._stopped:
                        continue
                    code = proc.proc.returncode if proc.proc else None
                    recent = [
                        t
                        for t in history.get(proc.spec.name, [])
                        if time.monotonic() - t < RESTART_WINDOW_S
                    ]
                    if not proc.spec.restart or len(recent) >= MAX_RESTARTS:
                        self.state.status = "failed"
                        self.state.error = (
                            f"{proc.spec.name} exited (code {code}) and was not restarted"
                        )
                        self._record()
                        raise StackError(
                            proc.spec.name, f"exited with code {code}\n{proc.tail_log()}"
                        )
                    log.warning("%s exited with code %s; restarting", proc.spec.name, code)
                    recent.append(time.monotonic())
                    history[proc.spec.name] = recent
                    proc.restarts += 1
                    await proc.start()
                    self._record()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)

    async def stop(self, final_status: str = "stopped") -> None:
        """Stop every process, last phase first. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self.state.status = "stopping"
        self._record()
        for phase in reversed(self.procs):
            await asyncio.gather(*(p.stop(self.stop_timeout) for p in phase))
        self.state.status = final_status
        self._record()
