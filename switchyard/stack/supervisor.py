"""Run a set of processes as one stack: start in phases, wait for health, restart, stop cleanly.

Phases start in order (infrastructure, then components); processes inside a phase start together,
which is what keeps ``switchyard up`` fast. Each step may run a hook once its process is up
(provisioning NATS, initialising OpenBao). A process that exits is restarted: the first time at
once, then after a delay that doubles up to a cap (``RestartPolicy``), counted from zero again once
it has run long enough. A process that keeps crashing is retried at the capped delay for as long as
the stack runs, alone: stopping the rest would turn one bad replica into a full outage, and even a
crash-looping server (NATS, Valkey, OpenBao) is better retried than given up, because the
components keep what they have not yet delivered (usage events) until it answers again. Stopping
goes in reverse phase order. The supervisor records what runs, and every process's crashes, in
``run/state.json`` for ``switchyard status`` and ``down``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from switchyard.errors import StackError
from switchyard.stack.logrotate import rotate_all
from switchyard.stack.process import HealthCheck, ManagedProcess, ProcessSpec

log = logging.getLogger("switchyard.stack")

Hook = Callable[[], Awaitable[None]]
_MAX_DOUBLINGS = 30  # 2**30 s is far past any cap; without a bound the float overflows
# Exits that are a stop someone asked for, not a crash: killed by SIGTERM or SIGINT (what an
# operator, a process manager or the supervisor sends to stop a process), as the kernel says it
# (a negative code) or as a shell or runtime reports it (128 + the signal). Restarted at once
# and not counted as crashes, unless the process ran less than _MIN_RUN_S (one that ends right
# after each start is failing) or was stopped more than ``crash_loop`` times within
# ``stable_after_s`` (then the crash back-off applies). A Switchyard component (kind
# ``component``) exits 0 only once told to stop (its ``serve`` returns 0 after SIGTERM or
# SIGINT), so its exit 0 is a stop too; a server's is not: it may exit 0 on its own (Valkey
# after SHUTDOWN), and one doing so every second was restarted forever, at once, while
# ``status`` said healthy.
_STOP_CODES = frozenset(
    {-signal.SIGTERM, -signal.SIGINT, 128 + signal.SIGTERM, 128 + signal.SIGINT}
)
_MIN_RUN_S = 1.0


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """When a process that exited is started again.

    Attributes:
        first_delay_s: the wait before the second restart of a run of crashes (the first is
            immediate: a one-off crash should cost nothing).
        max_delay_s: the cap the wait doubles up to; a crash loop is retried at this interval.
        stable_after_s: a process that has run this long counts its crashes from zero again.
        crash_loop: this many crashes in a row make it "crash-looping" (logged as an error and
            shown by ``switchyard status``).
    """

    first_delay_s: float = 1.0
    max_delay_s: float = 30.0
    stable_after_s: float = 60.0
    crash_loop: int = 3

    def delay(self, crashes: int) -> float:
        """The wait before restarting a process after its ``crashes``-th crash in a row."""
        if crashes <= 1:
            return 0.0
        return min(self.first_delay_s * 2.0 ** min(crashes - 2, _MAX_DOUBLINGS), self.max_delay_s)


@dataclass(slots=True)
class Crashes:
    """One process's run of crashes, as the supervisor tracks it.

    Attributes:
        count: exits in a row without a stable run between them (0: it runs fine).
        last_exit: the last exit code, of a crash or a stop (negative: killed by that signal).
        last_exit_at: when (wall clock).
        restart_at: while it waits to be started again, when (monotonic), else None.
        stops: exits that were a stop on request (SIGTERM, SIGINT), not crashes.
        stopped_at: when the recent stops were (monotonic, within ``stable_after_s``).
    """

    count: int = 0
    last_exit: int | None = None
    last_exit_at: float | None = None
    restart_at: float | None = None
    stops: int = 0
    stopped_at: list[float] = field(default_factory=list)


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

    # starting | healthy | stopping | stopped | failed. "healthy": everything came up and is
    # supervised; whether each process serves now is what ``switchyard status`` probes (other
    # commands look for these values to find a running stack, so a crash loop does not change it).
    status: str = "starting"
    error: str | None = None  # why it failed
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
        restart_policy: RestartPolicy | None = None,
        poll_s: float = 0.5,
        log_max_bytes: int = 50 * 1024 * 1024,
        log_keep: int = 3,
        rotate_every_s: float = 30.0,
        other_logs: tuple[Path, ...] = (),
    ) -> None:
        self.phases = phases
        self.other_logs = other_logs  # files a child writes itself (OpenBao's audit log)
        self.log_max_bytes = log_max_bytes
        self.log_keep = log_keep
        self.rotate_every_s = rotate_every_s
        self._rotate_at = 0.0  # monotonic: when the log files are next checked (logrotate)
        self.restart_policy = restart_policy or RestartPolicy()
        self.poll_s = poll_s
        self.crashes: dict[str, Crashes] = {}
        self.log_dir = log_dir
        self.state_file = state_file
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.state = StackState(info=dict(info or {}))
        self.procs: list[list[ManagedProcess]] = []
        self._failed = asyncio.Event()
        self._stopped = False

    def _record(self) -> None:
        self.state.processes = [self._describe(p) for phase in self.procs for p in phase]
        write_state(self.state_file, self.state)

    def _describe(self, proc: ManagedProcess) -> dict[str, Any]:
        crashes = self.crashes.get(proc.spec.name) or Crashes()
        waiting = crashes.restart_at
        return {
            "name": proc.spec.name,
            "kind": proc.spec.kind,
            "pid": proc.pid if proc.running else None,  # a dead one's pid may be reused
            "endpoint": proc.spec.endpoint,
            "health_url": proc.spec.health_url,
            "log": str(proc.log_path),
            "restarts": proc.restarts,
            "crashes": crashes.count,
            "stops": crashes.stops,
            "crash_looping": crashes.count >= self.restart_policy.crash_loop,
            "last_exit": crashes.last_exit,
            "last_exit_at": crashes.last_exit_at,
            # Wall clock, for `status` in another process: "next try in 12s".
            "restart_at": None
            if waiting is None
            else time.time() + max(0.0, waiting - time.monotonic()),
        }

    async def start(self, ready_info: Callable[[], dict[str, Any]] | None = None) -> None:
        """Start every phase and wait until all are healthy.

        Args:
            ready_info: called once everything is healthy; what it returns joins ``info`` in
                the same write that records ``healthy`` (the start-up time, the endpoints).
                Written after, a detached ``up`` that read the state in between printed "up
                in 0.0s" and URLs with unresolved ports.

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
        if ready_info is not None:
            self.state.info.update(ready_info())
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
        """Restart processes that exit, with backoff, until ``stop`` is set.

        Raises:
            StackError: a process that is not restartable (``spec.restart`` False) exited.
        """
        while not stop.is_set() and not self._stopped:
            await self._rotate_logs()
            for phase in self.procs:
                for proc in phase:
                    if stop.is_set() or self._stopped:
                        return
                    await self._tend(proc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._next_wake())

    async def _rotate_logs(self) -> None:
        """Every ``rotate_every_s``, rotate the log files past ``log_max_bytes``: every
        child's, the detached supervisor's own and ``other_logs`` (:mod:`.logrotate`). In a
        thread: copying 50 MB files must not stop the loop that notices exits."""
        now = time.monotonic()
        if now < self._rotate_at:
            return
        self._rotate_at = now + self.rotate_every_s
        paths = [p.log_path for phase in self.procs for p in phase]
        paths.append(self.log_dir / "supervisor.log")
        paths.extend(self.other_logs)
        rotated = await asyncio.to_thread(rotate_all, paths, self.log_max_bytes, self.log_keep)
        for path in rotated:
            log.info("%s reached %d bytes: rotated to %s.1", path, self.log_max_bytes, path.name)

    def _next_wake(self) -> float:
        """Poll for exits every ``poll_s``, sooner when a restart falls due before that."""
        now = time.monotonic()
        due = [c.restart_at - now for c in self.crashes.values() if c.restart_at is not None]
        return max(0.0, min([self.poll_s, *due]))

    async def _tend(self, proc: ManagedProcess) -> None:
        """Note an exit, schedule its restart, start it when due, forget crashes once stable."""
        name = proc.spec.name
        crashes = self.crashes.setdefault(name, Crashes())
        now = time.monotonic()
        if proc.running:
            if crashes.count and now - proc.started_at >= self.restart_policy.stable_after_s:
                log.info(
                    "%s has run %.0fs since its last restart; counting its crashes from zero",
                    name,
                    now - proc.started_at,
                )
                crashes.count = 0
                self._record()
            return
        if crashes.restart_at is None:  # an exit not seen before
            code = proc.proc.returncode if proc.proc else None
            if not proc.spec.restart:
                self.state.status = "failed"
                self.state.error = f"{name} exited (code {code}) and is not restartable"
                self._record()
                raise StackError(name, f"exited with code {code}\n{proc.tail_log()}")
            if self._stopped_on_request(crashes, code, now - proc.started_at, now, proc.spec.kind):
                log.info("%s stopped (exit code %s: not a crash); starting it again", name, code)
                crashes.stops += 1
                crashes.last_exit, crashes.last_exit_at = code, time.time()
                crashes.restart_at = now
                self._record()
            else:
                self._crashed(proc, crashes, code, now)
        if crashes.restart_at is None or now < crashes.restart_at:
            return
        crashes.restart_at = None
        proc.restarts += 1
        try:
            await proc.start()
        except OSError as exc:  # e.g. its binary is gone: the next round counts it as a crash
            log.error("%s could not be started again: %s", name, exc)
        self._record()

    def _stopped_on_request(
        self, crashes: Crashes, code: int | None, ran_s: float, now: float, kind: str = ""
    ) -> bool:
        """Whether an exit with ``code`` after ``ran_s`` is a stop, not a crash: a SIGTERM or
        SIGINT (or a component's exit 0), after running at least _MIN_RUN_S, and no more than
        ``crash_loop`` such stops within ``stable_after_s`` (stopped that often: the crash
        back-off)."""
        asked = code in _STOP_CODES or (code == 0 and kind == "component")
        if not asked or ran_s < _MIN_RUN_S:
            return False
        window = self.restart_policy.stable_after_s
        crashes.stopped_at = [t for t in crashes.stopped_at if now - t < window]
        crashes.stopped_at.append(now)
        return len(crashes.stopped_at) <= self.restart_policy.crash_loop

    def _crashed(
        self, proc: ManagedProcess, crashes: Crashes, code: int | None, now: float
    ) -> None:
        """Note a crash and schedule the restart after the policy's wait."""
        name = proc.spec.name
        crashes.count += 1
        crashes.last_exit, crashes.last_exit_at = code, time.time()
        delay = self.restart_policy.delay(crashes.count)
        crashes.restart_at = now + delay
        looping = crashes.count >= self.restart_policy.crash_loop
        log.log(
            logging.ERROR if looping else logging.WARNING,
            "%s exited with code %s (%d time(s) in a row%s); restarting it %s (log: %s)",
            name,
            code,
            crashes.count,
            ", crash-looping" if looping else "",
            "now" if delay == 0 else f"in {delay:.0f}s",
            proc.log_path,
        )
        self._record()

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
